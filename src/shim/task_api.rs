//! The two names of containerd's shim Task service, and a client for either.
//!
//! containerd 2.0 renamed the service `containerd.task.v2.Task` to `containerd.task.v3.Task`
//! with identical messages. Shims of containerd 1.6 and 1.7 (Debian's
//! containerd-shim-runc-v2 among them) serve only v2; containerd-shim-protos 0.12
//! generates v3 only. Which one a shim serves is what its `start` answered: a bare
//! address means v2, the JSON bootstrap's `version` says 2 or 3 (containerd 2.0
//! `core/runtime/v2/shim.go` `parseStartResponse`, `bridge.go` `NewTaskClient`).
//!
//! [`TaskApi`] has the generated `TaskClient`'s methods with the service name chosen at
//! connection time, and adds the `containerd-namespace-ttrpc` metadata that containerd's
//! shims read the namespace from (containerd-shim-runc-v2 refuses a Create without one).
//! [`serve_both`] registers one Task implementation under both names, so that any
//! containerd (and this client) can drive `crius-shim`.

use std::collections::HashMap;

use containerd_shim_protos::api::{
    CheckpointTaskRequest, CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest,
    CreateTaskResponse, DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest,
    PauseRequest, PidsRequest, PidsResponse, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc::{self, context::Context, MethodHandler};

use super::events::NAMESPACE_HEADER;

/// The Task service's name in containerd 1.x (shim API "version 2").
pub const TASK_V2: &str = "containerd.task.v2.Task";
/// The Task service's name since containerd 2.0 (shim API "version 3").
pub const TASK_V3: &str = "containerd.task.v3.Task";

/// Which name a shim serves the Task service under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskApiVersion {
    V2,
    V3,
}

impl TaskApiVersion {
    /// The version a shim's bootstrap reports; None for one this client does not speak.
    pub fn from_bootstrap(version: i64) -> Option<TaskApiVersion> {
        match version {
            2 => Some(TaskApiVersion::V2),
            3 => Some(TaskApiVersion::V3),
            _ => None,
        }
    }

    pub fn number(self) -> i64 {
        match self {
            TaskApiVersion::V2 => 2,
            TaskApiVersion::V3 => 3,
        }
    }

    pub fn service(self) -> &'static str {
        match self {
            TaskApiVersion::V2 => TASK_V2,
            TaskApiVersion::V3 => TASK_V3,
        }
    }
}

/// A Task service client for one shim, speaking the version it serves.
pub struct TaskApi {
    client: ttrpc::Client,
    version: TaskApiVersion,
    /// The containerd namespace sent with every request.
    namespace: String,
}

macro_rules! task_methods {
    ($($name:ident: $method:literal, $request:ty => $response:ty;)*) => {
        impl TaskApi {
            $(
                pub fn $name(&self, ctx: Context, request: &$request) -> ttrpc::Result<$response> {
                    self.call($method, ctx, request)
                }
            )*
        }
    };
}

task_methods! {
    state: "State", StateRequest => StateResponse;
    create: "Create", CreateTaskRequest => CreateTaskResponse;
    start: "Start", StartRequest => StartResponse;
    delete: "Delete", DeleteRequest => DeleteResponse;
    pids: "Pids", PidsRequest => PidsResponse;
    pause: "Pause", PauseRequest => Empty;
    resume: "Resume", ResumeRequest => Empty;
    checkpoint: "Checkpoint", CheckpointTaskRequest => Empty;
    kill: "Kill", KillRequest => Empty;
    exec: "Exec", ExecProcessRequest => Empty;
    resize_pty: "ResizePty", ResizePtyRequest => Empty;
    close_io: "CloseIO", CloseIORequest => Empty;
    update: "Update", UpdateTaskRequest => Empty;
    wait: "Wait", WaitRequest => WaitResponse;
    stats: "Stats", StatsRequest => StatsResponse;
    connect: "Connect", ConnectRequest => ConnectResponse;
    shutdown: "Shutdown", ShutdownRequest => Empty;
}

impl TaskApi {
    pub fn new(client: ttrpc::Client, version: TaskApiVersion, namespace: &str) -> TaskApi {
        TaskApi {
            client,
            version,
            namespace: namespace.to_string(),
        }
    }

    pub fn version(&self) -> TaskApiVersion {
        self.version
    }

    fn call<Request: Message, Response: Message>(
        &self,
        method: &str,
        mut ctx: Context,
        request: &Request,
    ) -> ttrpc::Result<Response> {
        if !self.namespace.is_empty() {
            ctx.add(NAMESPACE_HEADER.to_string(), self.namespace.clone());
        }
        let payload = request
            .write_to_bytes()
            .map_err(|err| ttrpc::Error::Others(format!("encoding a {method} request: {err}")))?;
        let request = ttrpc::Request {
            service: self.version.service().to_string(),
            method: method.to_string(),
            payload,
            timeout_nano: ctx.timeout_nano,
            metadata: ttrpc::context::to_pb(ctx.metadata),
            ..ttrpc::Request::default()
        };
        let response = self.client.request(request)?;
        Response::parse_from_bytes(&response.payload)
            .map_err(|err| ttrpc::Error::Others(format!("decoding a {method} response: {err}")))
    }
}

/// The methods of a Task service generated under its v3 name (`create_task`), registered
/// under both v2 and v3 names.
pub fn serve_both(
    create: impl Fn() -> HashMap<String, Box<dyn MethodHandler + Send + Sync>>,
) -> HashMap<String, Box<dyn MethodHandler + Send + Sync>> {
    let v3_prefix = format!("/{TASK_V3}/");
    let mut methods = create();
    let v2: Vec<_> = create()
        .into_iter()
        .filter_map(|(path, handler)| {
            let method = path.strip_prefix(&v3_prefix)?;
            Some((format!("/{TASK_V2}/{method}"), handler))
        })
        .collect();
    methods.extend(v2);
    methods
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use containerd_shim_protos::{create_task, Task};

    use super::*;

    struct Nothing;
    impl Task for Nothing {}

    #[test]
    fn both_service_names_are_served() {
        let methods = serve_both(|| create_task(Arc::new(Nothing)));
        assert!(methods.contains_key("/containerd.task.v2.Task/Create"));
        assert!(methods.contains_key("/containerd.task.v3.Task/Create"));
        assert_eq!(methods.len(), 2 * create_task(Arc::new(Nothing)).len());
    }
}
