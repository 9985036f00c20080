//! PodSandboxStatus and ListPodSandbox.

use std::collections::HashMap;

use super::api::{
    LinuxPodSandboxStatus, ListPodSandboxRequest, ListPodSandboxResponse, Namespace, NamespaceMode,
    NamespaceOption, PodIp, PodSandbox, PodSandboxMetadata, PodSandboxNetworkStatus,
    PodSandboxState, PodSandboxStatus, PodSandboxStatusRequest, PodSandboxStatusResponse,
};
use super::{Cri, CriError};
use crate::store::{SandboxRecord, SandboxState};

impl Cri {
    pub(super) fn pod_sandbox_status(
        &self,
        request: &PodSandboxStatusRequest,
    ) -> Result<PodSandboxStatusResponse, CriError> {
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        let sandbox = self.sandbox(&request.pod_sandbox_id)?;
        let mut info = HashMap::new();
        if request.verbose {
            let details = serde_json::json!({
                "pid": sandbox.shim_pid,
                "runtimeHandler": sandbox.runtime_handler,
                "cgroupParent": sandbox.cgroup_parent,
                "sysctls": sandbox.sysctls,
                // The CRI's status has no field for them, and `crius port` and operators
                // need to see which node ports reach the pod.
                "portMappings": sandbox
                    .port_mappings
                    .iter()
                    .map(|mapping| serde_json::json!({
                        "protocol": mapping.protocol,
                        "hostIp": mapping.host_ip,
                        "hostPort": mapping.host_port,
                        "containerPort": mapping.container_port,
                    }))
                    .collect::<Vec<_>>(),
            });
            info.insert("info".to_string(), details.to_string());
        }
        let node = |host: bool| if host { NamespaceMode::Node } else { NamespaceMode::Pod } as i32;
        Ok(PodSandboxStatusResponse {
            status: Some(PodSandboxStatus {
                id: sandbox.id.clone(),
                metadata: Some(metadata(&sandbox)),
                state: state(&sandbox) as i32,
                created_at: sandbox.created_at,
                network: Some(PodSandboxNetworkStatus {
                    ip: sandbox.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                    additional_ips: sandbox
                        .ip6
                        .map(|ip| PodIp { ip: ip.to_string() })
                        .into_iter()
                        .collect(),
                }),
                linux: Some(LinuxPodSandboxStatus {
                    namespaces: Some(Namespace {
                        options: Some(NamespaceOption {
                            network: node(sandbox.host_network),
                            pid: if sandbox.host_pid {
                                NamespaceMode::Node
                            } else if sandbox.pid_namespace_init.is_some() {
                                NamespaceMode::Pod
                            } else {
                                NamespaceMode::Container
                            } as i32,
                            ipc: node(sandbox.host_ipc),
                            ..NamespaceOption::default()
                        }),
                    }),
                }),
                labels: sandbox.labels.clone().into_iter().collect(),
                annotations: sandbox.annotations.clone().into_iter().collect(),
                runtime_handler: sandbox.runtime_handler.clone(),
            }),
            info,
            containers_statuses: Vec::new(),
            timestamp: super::now_ns(),
        })
    }

    pub(super) fn list_pod_sandbox(
        &self,
        request: &ListPodSandboxRequest,
    ) -> ListPodSandboxResponse {
        let filter = request.filter.clone().unwrap_or_default();
        let items = self
            .sandboxes
            .list()
            .into_iter()
            .filter(|sandbox| filter.id.is_empty() || sandbox.id.starts_with(&filter.id))
            .filter(|sandbox| {
                filter
                    .state
                    .is_none_or(|wanted| wanted.state == state(sandbox) as i32)
            })
            .filter(|sandbox| {
                filter
                    .label_selector
                    .iter()
                    .all(|(key, value)| sandbox.labels.get(key) == Some(value))
            })
            .map(|sandbox| PodSandbox {
                id: sandbox.id.clone(),
                metadata: Some(metadata(&sandbox)),
                state: state(&sandbox) as i32,
                created_at: sandbox.created_at,
                labels: sandbox.labels.clone().into_iter().collect(),
                annotations: sandbox.annotations.clone().into_iter().collect(),
                runtime_handler: sandbox.runtime_handler.clone(),
            })
            .collect();
        ListPodSandboxResponse { items }
    }

    /// The sandbox `id` (or unique id prefix) names, or NOT_FOUND.
    pub(super) fn sandbox(&self, id: &str) -> Result<SandboxRecord, CriError> {
        self.sandboxes.find(id)?.ok_or_else(|| CriError::NotFound {
            kind: "pod sandbox",
            id: id.to_string(),
        })
    }
}

fn metadata(sandbox: &SandboxRecord) -> PodSandboxMetadata {
    PodSandboxMetadata {
        name: sandbox.name.clone(),
        uid: sandbox.uid.clone(),
        namespace: sandbox.namespace.clone(),
        attempt: sandbox.attempt,
    }
}

/// The record's state: the exit watchers mark a pod whose shim died NOTREADY, so listing
/// never has to look at the processes.
fn state(sandbox: &SandboxRecord) -> PodSandboxState {
    match sandbox.state {
        SandboxState::Ready => PodSandboxState::SandboxReady,
        SandboxState::NotReady => PodSandboxState::SandboxNotready,
    }
}
