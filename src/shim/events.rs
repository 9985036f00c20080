//! containerd's task events, both ways: a shim publishes them, criusd receives them.
//!
//! The wire format is containerd's (`api/services/ttrpc/events/v1/events.proto`): a shim
//! calls `containerd.services.events.ttrpc.v1.Events/Forward` on the ttrpc address it was
//! given (`TTRPC_ADDRESS`) with an `Envelope{timestamp, namespace, topic, event}`, where
//! `event` is an `Any` whose type URL is the event's protobuf name without a prefix
//! (`containerd.events.TaskExit`: containerd's `typeurl` falls back to the message name,
//! and that is what containerd-shim-runc-v2 sends). The request carries the namespace in
//! the `containerd-namespace-ttrpc` metadata too, as containerd's publisher does.
//!
//! Publishing side ([`EventPublisher`], in `crius-shim`): never blocks or fails a Task
//! call. Events go into a bounded queue that one thread forwards, in order, retrying an
//! event a few times (1 s, 2 s, … apart, as containerd's shim publisher does) and then
//! dropping it with a log line; a full queue drops the new event with a log line. The
//! shim flushes the queue, for a bounded time, on its way out.
//!
//! Receiving side ([`EventServer`], in criusd): serves the Events service on a socket of
//! its own, keeps for every task (by container id) its last event and the topics of its
//! recent ones ([`TaskEvents`]), and hands each event to its subscribers.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use containerd_shim_protos::api::{Empty, ForwardRequest};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::{self, context, Server, TtrpcContext};
use containerd_shim_protos::{create_events, Events, EventsClient};

use super::{removed, ShimError};

/// The ttrpc metadata key that carries a request's containerd namespace.
pub const NAMESPACE_HEADER: &str = "containerd-namespace-ttrpc";

/// How many events wait for forwarding before new ones are dropped (containerd: 2048).
const QUEUE_SIZE: usize = 1024;

/// How many times an event is retried after its first forward failed (containerd: 5).
const MAX_RETRIES: u32 = 5;

/// Deadline of one Forward call (containerd: 5 s).
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the connection to the events address is kept after the last event: a burst
/// (create, start, exec…) shares one.
const CONNECTION_IDLE: Duration = Duration::from_secs(1);

/// How many recent topics [`TaskEvents`] keeps per task: ExecSync probes add three
/// events each, so the history must not grow with the container's age.
const TOPIC_HISTORY: usize = 32;

/// A task event, decoded: what a shim reports about a container (by `container_id`) and
/// its processes. Exit codes are as the Task API carries them (128 + signal for a
/// killed process).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Create {
        container_id: String,
        bundle: String,
        pid: u32,
        io: TaskIo,
    },
    Start {
        container_id: String,
        pid: u32,
    },
    /// A process exited: the container's init when `id` is the container's id, else its
    /// exec `id`.
    Exit {
        container_id: String,
        id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    Delete {
        container_id: String,
        pid: u32,
        exit_status: u32,
        exited_at: SystemTime,
    },
    ExecAdded {
        container_id: String,
        exec_id: String,
    },
    ExecStarted {
        container_id: String,
        exec_id: String,
        pid: u32,
    },
    /// The kernel's OOM killer killed a process of the container.
    Oom {
        container_id: String,
    },
    /// An event this crate does not decode (paused, resumed, checkpointed, …).
    Other {
        topic: String,
        type_url: String,
    },
}

/// A task's stdio as its TaskCreate event reports it: the URIs or paths it was created
/// with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskIo {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// An event as it arrived, with its envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedEvent {
    pub namespace: String,
    pub topic: String,
    pub timestamp: SystemTime,
    pub event: TaskEvent,
}

impl TaskEvent {
    /// The container the event is about; none for [`TaskEvent::Other`].
    pub fn container_id(&self) -> Option<&str> {
        match self {
            TaskEvent::Create { container_id, .. }
            | TaskEvent::Start { container_id, .. }
            | TaskEvent::Exit { container_id, .. }
            | TaskEvent::Delete { container_id, .. }
            | TaskEvent::ExecAdded { container_id, .. }
            | TaskEvent::ExecStarted { container_id, .. }
            | TaskEvent::Oom { container_id } => Some(container_id),
            TaskEvent::Other { .. } => None,
        }
    }

    /// The topic containerd publishes the event under.
    pub fn topic(&self) -> &str {
        match self {
            TaskEvent::Create { .. } => topics::TASK_CREATE_EVENT_TOPIC,
            TaskEvent::Start { .. } => topics::TASK_START_EVENT_TOPIC,
            TaskEvent::Exit { .. } => topics::TASK_EXIT_EVENT_TOPIC,
            TaskEvent::Delete { .. } => topics::TASK_DELETE_EVENT_TOPIC,
            TaskEvent::ExecAdded { .. } => topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskEvent::ExecStarted { .. } => topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            TaskEvent::Oom { .. } => topics::TASK_OOM_EVENT_TOPIC,
            TaskEvent::Other { topic, .. } => topic,
        }
    }

    /// Decodes `any` by its type URL (the message name, after a `…/` prefix if any).
    pub fn decode(topic: &str, any: &Any) -> Result<TaskEvent, ShimError> {
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        let invalid = |err: containerd_shim_protos::protobuf::Error| {
            ShimError::InvalidArgument(format!("event {name} on {topic}: {err}"))
        };
        Ok(match name {
            "containerd.events.TaskCreate" => {
                let event = TaskCreate::parse_from_bytes(&any.value).map_err(invalid)?;
                let io = event.io.into_option().unwrap_or_default();
                TaskEvent::Create {
                    container_id: event.container_id,
                    bundle: event.bundle,
                    pid: event.pid,
                    io: TaskIo {
                        stdin: io.stdin,
                        stdout: io.stdout,
                        stderr: io.stderr,
                        terminal: io.terminal,
                    },
                }
            }
            "containerd.events.TaskStart" => {
                let event = TaskStart::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::Start {
                    container_id: event.container_id,
                    pid: event.pid,
                }
            }
            "containerd.events.TaskExit" => {
                let event = TaskExit::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::Exit {
                    exited_at: time_of(event.exited_at.as_ref()),
                    container_id: event.container_id,
                    id: event.id,
                    pid: event.pid,
                    exit_status: event.exit_status,
                }
            }
            "containerd.events.TaskDelete" => {
                let event = TaskDelete::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::Delete {
                    exited_at: time_of(event.exited_at.as_ref()),
                    container_id: event.container_id,
                    pid: event.pid,
                    exit_status: event.exit_status,
                }
            }
            "containerd.events.TaskExecAdded" => {
                let event = TaskExecAdded::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::ExecAdded {
                    container_id: event.container_id,
                    exec_id: event.exec_id,
                }
            }
            "containerd.events.TaskExecStarted" => {
                let event = TaskExecStarted::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::ExecStarted {
                    container_id: event.container_id,
                    exec_id: event.exec_id,
                    pid: event.pid,
                }
            }
            "containerd.events.TaskOOM" => {
                let event = TaskOOM::parse_from_bytes(&any.value).map_err(invalid)?;
                TaskEvent::Oom {
                    container_id: event.container_id,
                }
            }
            _ => TaskEvent::Other {
                topic: topic.to_string(),
                type_url: any.type_url.clone(),
            },
        })
    }

    /// The event as containerd's message, packed as containerd packs it.
    fn encode(&self) -> Result<Any, containerd_shim_protos::protobuf::Error> {
        let (name, value) = match self.clone() {
            TaskEvent::Create {
                container_id,
                bundle,
                pid,
                io,
            } => (
                "TaskCreate",
                TaskCreate {
                    container_id,
                    bundle,
                    pid,
                    io: MessageField::some(TaskIO {
                        stdin: io.stdin,
                        stdout: io.stdout,
                        stderr: io.stderr,
                        terminal: io.terminal,
                        ..TaskIO::default()
                    }),
                    ..TaskCreate::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::Start { container_id, pid } => (
                "TaskStart",
                TaskStart {
                    container_id,
                    pid,
                    ..TaskStart::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::Exit {
                container_id,
                id,
                pid,
                exit_status,
                exited_at,
            } => (
                "TaskExit",
                TaskExit {
                    container_id,
                    id,
                    pid,
                    exit_status,
                    exited_at: MessageField::some(timestamp(exited_at)),
                    ..TaskExit::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::Delete {
                container_id,
                pid,
                exit_status,
                exited_at,
            } => (
                "TaskDelete",
                TaskDelete {
                    container_id,
                    pid,
                    exit_status,
                    exited_at: MessageField::some(timestamp(exited_at)),
                    ..TaskDelete::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::ExecAdded {
                container_id,
                exec_id,
            } => (
                "TaskExecAdded",
                TaskExecAdded {
                    container_id,
                    exec_id,
                    ..TaskExecAdded::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::ExecStarted {
                container_id,
                exec_id,
                pid,
            } => (
                "TaskExecStarted",
                TaskExecStarted {
                    container_id,
                    exec_id,
                    pid,
                    ..TaskExecStarted::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::Oom { container_id } => (
                "TaskOOM",
                TaskOOM {
                    container_id,
                    ..TaskOOM::default()
                }
                .write_to_bytes()?,
            ),
            TaskEvent::Other { type_url, .. } => {
                return Ok(Any {
                    type_url,
                    ..Any::default()
                })
            }
        };
        Ok(Any {
            type_url: format!("containerd.events.{name}"),
            value,
            ..Any::default()
        })
    }
}

/// One event waiting to be forwarded.
struct Queued {
    topic: String,
    envelope: Envelope,
}

/// The shim's side: publishes events to the ttrpc address it was given. Cheap to clone;
/// every clone feeds the same queue and thread.
#[derive(Clone)]
pub struct EventPublisher {
    /// None when the shim was given no address: events go nowhere.
    queue: Option<SyncSender<Work>>,
    namespace: String,
}

/// What the publisher thread is told.
enum Work {
    Event(Box<Queued>),
    /// Answer once what was queued before this is forwarded (or dropped).
    Flush(Sender<()>),
}

impl EventPublisher {
    /// A publisher that forwards to `address` (`unix:///path`, or a bare socket path as
    /// containerd gives it) with envelopes of `namespace`; with no address, a publisher
    /// that drops everything silently. Starts the forwarding thread: call it after the
    /// reaper, whose signal mask the thread must inherit.
    pub fn start(address: Option<&str>, namespace: &str) -> Result<EventPublisher, ShimError> {
        let Some(address) = address.filter(|address| !address.is_empty()) else {
            return Ok(EventPublisher::none());
        };
        let address = ttrpc_address(address);
        let (queue, received) = mpsc::sync_channel(QUEUE_SIZE);
        let forwarder = Forwarder {
            address,
            namespace: namespace.to_string(),
            client: None,
        };
        std::thread::Builder::new()
            .name("event-publisher".into())
            .spawn(move || forwarder.run(received))
            .map_err(|source| ShimError::Io {
                what: "start the event publisher",
                source,
            })?;
        Ok(EventPublisher {
            queue: Some(queue),
            namespace: namespace.to_string(),
        })
    }

    /// A publisher that drops every event (no address to publish to).
    pub fn none() -> EventPublisher {
        EventPublisher {
            queue: None,
            namespace: String::new(),
        }
    }

    /// Queues `event`; never blocks. A full queue drops it, with a log line.
    pub fn publish(&self, event: TaskEvent) {
        let topic = event.topic().to_string();
        match event.encode() {
            Ok(any) => self.publish_any(&topic, any),
            Err(err) => eprintln!("cannot encode event {topic}: {err}"),
        }
    }

    /// Queues an already packed event under `topic`; never blocks.
    pub fn publish_any(&self, topic: &str, event: Any) {
        let Some(queue) = &self.queue else {
            return;
        };
        let envelope = Envelope {
            timestamp: MessageField::some(timestamp(SystemTime::now())),
            namespace: self.namespace.clone(),
            topic: topic.to_string(),
            event: MessageField::some(event),
            ..Envelope::default()
        };
        let queued = Box::new(Queued {
            topic: topic.to_string(),
            envelope,
        });
        match queue.try_send(Work::Event(queued)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                eprintln!("dropping event {topic}: {QUEUE_SIZE} events wait for forwarding")
            }
            Err(TrySendError::Disconnected(_)) => {
                eprintln!("dropping event {topic}: the publisher thread is gone")
            }
        }
    }

    /// Waits until the events queued so far are forwarded (or dropped), for at most
    /// `timeout`: the shim calls it on its way out.
    pub fn flush(&self, timeout: Duration) {
        let Some(queue) = &self.queue else {
            return;
        };
        let deadline = Instant::now() + timeout;
        let (done, flushed) = mpsc::channel();
        let mut message = Work::Flush(done);
        // A full queue: wait for room, but not past the deadline.
        loop {
            match queue.try_send(message) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    message = back;
                    std::thread::sleep(Duration::from_millis(10));
                }
                Err(_) => return,
            }
        }
        let _ = flushed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }
}

/// The publisher thread's state: one connection, made again after a failure.
struct Forwarder {
    address: String,
    namespace: String,
    client: Option<EventsClient>,
}

impl Forwarder {
    /// Forwards events in order until every publisher is dropped.
    fn run(mut self, received: Receiver<Work>) {
        loop {
            let work = match received.recv_timeout(CONNECTION_IDLE) {
                Ok(work) => work,
                Err(RecvTimeoutError::Timeout) => {
                    // ttrpc's synchronous client polls its socket every 10 ms while it
                    // lives: an idle shim holds no connection.
                    self.client = None;
                    match received.recv() {
                        Ok(work) => work,
                        Err(_) => return,
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            match work {
                Work::Event(queued) => self.forward_with_retries(&queued),
                Work::Flush(done) => {
                    let _ = done.send(());
                }
            }
        }
    }

    fn forward_with_retries(&mut self, queued: &Queued) {
        let mut retries = 0;
        loop {
            let err = match self.forward(&queued.envelope) {
                Ok(()) => return,
                Err(err) => err,
            };
            // The connection may be what failed (criusd restarted): make a new one.
            self.client = None;
            retries += 1;
            if retries > MAX_RETRIES {
                eprintln!(
                    "dropping event {} after {retries} tries to forward it to {}: {err}",
                    queued.topic, self.address
                );
                return;
            }
            std::thread::sleep(Duration::from_secs(u64::from(retries)));
        }
    }

    fn forward(&mut self, envelope: &Envelope) -> Result<(), ttrpc::Error> {
        if self.client.is_none() {
            self.client = Some(EventsClient::new(ttrpc::Client::connect(&self.address)?));
        }
        let Some(client) = &self.client else {
            return Ok(());
        };
        let mut deadline = context::with_duration(FORWARD_TIMEOUT);
        deadline.add(NAMESPACE_HEADER.to_string(), self.namespace.clone());
        let request = ForwardRequest {
            envelope: MessageField::some(envelope.clone()),
            ..ForwardRequest::default()
        };
        client.forward(deadline, &request).map(|_| ())
    }
}

/// `address` as ttrpc-rust dials it: containerd hands shims bare socket paths.
pub fn ttrpc_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("unix://{address}")
    }
}

/// What criusd knows of one task from its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskHistory {
    /// The latest event.
    pub last: ReceivedEvent,
    /// The topics of the latest events, oldest first (at most a few dozen).
    pub topics: VecDeque<String>,
}

/// The events received from every shim, by task (container id), and the subscribers
/// that are handed each one.
#[derive(Default)]
pub struct TaskEvents {
    tasks: Mutex<HashMap<String, TaskHistory>>,
    /// Closed receivers are pruned as events are handed out.
    subscribers: Mutex<Vec<Sender<ReceivedEvent>>>,
}

impl TaskEvents {
    /// Records an event and hands it to the subscribers.
    pub fn record(&self, received: ReceivedEvent) {
        if let Some(container_id) = received.event.container_id() {
            let mut tasks = lock(&self.tasks);
            let history = tasks
                .entry(container_id.to_string())
                .or_insert_with(|| TaskHistory {
                    last: received.clone(),
                    topics: VecDeque::new(),
                });
            history.last = received.clone();
            if history.topics.len() == TOPIC_HISTORY {
                history.topics.pop_front();
            }
            history.topics.push_back(received.topic.clone());
        }
        lock(&self.subscribers).retain(|subscriber| subscriber.send(received.clone()).is_ok());
    }

    /// What is known of task `container_id`.
    pub fn task(&self, container_id: &str) -> Option<TaskHistory> {
        lock(&self.tasks).get(container_id).cloned()
    }

    /// Forgets task `container_id` (it was removed).
    pub fn forget(&self, container_id: &str) {
        lock(&self.tasks).remove(container_id);
    }

    /// A receiver of every event from now on, in arrival order.
    pub fn subscribe(&self) -> Receiver<ReceivedEvent> {
        let (sender, receiver) = mpsc::channel();
        lock(&self.subscribers).push(sender);
        receiver
    }

    /// Waits up to `timeout` for task `container_id` to have had an event on `topic`.
    pub fn wait_for(&self, container_id: &str, topic: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let seen = self
                .task(container_id)
                .is_some_and(|task| task.topics.iter().any(|seen| seen == topic));
            if seen {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// criusd's side: the Events service on a socket of its own, recording into
/// [`TaskEvents`]. Stops, removing its socket, when dropped.
pub struct EventServer {
    socket: PathBuf,
    /// None once stopped.
    server: Mutex<Option<Server>>,
    events: Arc<TaskEvents>,
}

impl EventServer {
    /// Serves the Events service on `socket`, replacing a socket left by a dead server
    /// (one that still accepts connections belongs to a live one and is an error).
    pub fn serve(socket: &Path) -> Result<EventServer, ShimError> {
        let address = format!("unix://{}", socket.display());
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(ShimError::AlreadyExists(format!(
                "events socket {} is served by another process",
                socket.display()
            )));
        }
        removed(std::fs::remove_file(socket), "remove a stale events socket")?;
        if let Some(parent) = socket.parent() {
            std::fs::create_dir_all(parent).map_err(|source| ShimError::Io {
                what: "create the events socket's directory",
                source,
            })?;
        }
        let events = Arc::new(TaskEvents::default());
        let service = Arc::new(EventsService {
            events: events.clone(),
        });
        let rpc = |source| ShimError::Rpc {
            socket: address.clone(),
            source,
        };
        let mut server = Server::new()
            .bind(&address)
            .map_err(rpc)?
            .register_service(create_events(service))
            .set_thread_count_default(2)
            .set_thread_count_min(1)
            .set_thread_count_max(16);
        server.start().map_err(rpc)?;
        Ok(EventServer {
            socket: socket.to_path_buf(),
            server: Mutex::new(Some(server)),
            events,
        })
    }

    /// The address shims are given, a bare socket path as containerd gives its own.
    pub fn address(&self) -> String {
        self.socket.display().to_string()
    }

    pub fn events(&self) -> &Arc<TaskEvents> {
        &self.events
    }

    /// Stops serving and removes the socket.
    pub fn stop(&self) {
        if let Some(server) = lock(&self.server).take() {
            server.shutdown();
            let _ = std::fs::remove_file(&self.socket);
        }
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct EventsService {
    events: Arc<TaskEvents>,
}

impl Events for EventsService {
    fn forward(&self, _: &TtrpcContext, request: ForwardRequest) -> ttrpc::Result<Empty> {
        let envelope = request
            .envelope
            .into_option()
            .ok_or_else(|| ShimError::InvalidArgument("forward: the envelope is missing".into()))?;
        let any = envelope.event.into_option().unwrap_or_default();
        let event = TaskEvent::decode(&envelope.topic, &any)?;
        tracing::debug!(
            namespace = %envelope.namespace,
            topic = %envelope.topic,
            ?event,
            "task event"
        );
        self.events.record(ReceivedEvent {
            namespace: envelope.namespace,
            topic: envelope.topic,
            timestamp: time_of(envelope.timestamp.as_ref()),
            event,
        });
        Ok(Empty::default())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

pub(super) fn timestamp(time: SystemTime) -> Timestamp {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Timestamp::default()
    }
}

pub(super) fn time_of(timestamp: Option<&Timestamp>) -> SystemTime {
    timestamp.map_or(UNIX_EPOCH, |t| {
        UNIX_EPOCH + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_with_containerd_type_urls() {
        let exit = TaskEvent::Exit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 42,
            exit_status: 137,
            exited_at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        };
        let any = exit.encode().unwrap();
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert_eq!(TaskEvent::decode("/tasks/exit", &any).unwrap(), exit);
        let oom = TaskEvent::Oom {
            container_id: "c1".into(),
        };
        assert_eq!(
            TaskEvent::decode("/tasks/oom", &oom.encode().unwrap()).unwrap(),
            oom
        );
    }

    #[test]
    fn unknown_events_are_kept_by_topic() {
        let any = Any {
            type_url: "containerd.events.TaskPaused".into(),
            ..Any::default()
        };
        assert_eq!(
            TaskEvent::decode("/tasks/paused", &any).unwrap().topic(),
            "/tasks/paused"
        );
    }

    #[test]
    fn task_history_keeps_the_last_event_and_recent_topics() {
        let events = TaskEvents::default();
        let receiver = events.subscribe();
        for n in 0..40 {
            events.record(ReceivedEvent {
                namespace: "ns".into(),
                topic: "/tasks/exec-added".into(),
                timestamp: UNIX_EPOCH,
                event: TaskEvent::ExecAdded {
                    container_id: "c1".into(),
                    exec_id: format!("e{n}"),
                },
            });
        }
        let task = events.task("c1").unwrap();
        assert_eq!(task.topics.len(), TOPIC_HISTORY);
        assert!(
            matches!(task.last.event, TaskEvent::ExecAdded { ref exec_id, .. } if exec_id == "e39")
        );
        assert_eq!(receiver.try_iter().count(), 40);
        events.forget("c1");
        assert!(events.task("c1").is_none());
    }

    #[test]
    fn a_publisher_without_a_listener_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let publisher =
            EventPublisher::start(Some(&dir.path().join("nobody").display().to_string()), "ns")
                .unwrap();
        let started = Instant::now();
        for _ in 0..(QUEUE_SIZE + 10) {
            publisher.publish(TaskEvent::Oom {
                container_id: "c1".into(),
            });
        }
        publisher.flush(Duration::from_millis(200));
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn published_events_reach_the_server_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let server = EventServer::serve(&dir.path().join("events.sock")).unwrap();
        let receiver = server.events().subscribe();
        let publisher = EventPublisher::start(Some(&server.address()), "ns").unwrap();
        for pid in 1..=3 {
            publisher.publish(TaskEvent::Start {
                container_id: "c1".into(),
                pid,
            });
        }
        publisher.flush(Duration::from_secs(5));
        let pids: Vec<u32> = receiver
            .try_iter()
            .map(|received| match received.event {
                TaskEvent::Start { pid, .. } => pid,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(pids, [1, 2, 3]);
        assert_eq!(server.events().task("c1").unwrap().last.namespace, "ns");
    }
}
