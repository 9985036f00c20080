//! Pod sandbox records.
//!
//! ```text
//!   RunPodSandbox ──▶ READY ──StopPodSandbox──▶ NOTREADY ──RemovePodSandbox──▶ (gone)
//!                       │                           ▲
//!                       └──── shim lost ────────────┘
//! ```

use std::collections::BTreeMap;

use std::net::{Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Serialize};

use super::records::Record;
use crate::network::PortMapping;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SandboxState {
    Ready,
    NotReady,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub attempt: u32,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Nanoseconds since the epoch.
    pub created_at: i64,
    pub state: SandboxState,
    pub hostname: String,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    /// Pid 1 of the pod's shared PID namespace, a child of the shim that outlives criusd
    /// as the shim does: containers in POD pid mode join its `/proc/<pid>/ns/pid`. None
    /// when the pod's pid mode is NODE or CONTAINER.
    #[serde(default)]
    pub pid_namespace_init: Option<u32>,
    pub log_directory: String,
    pub runtime_handler: String,
    pub cgroup_parent: String,
    pub sysctls: BTreeMap<String, String>,
    /// The shim's pid when last seen: its `/proc/<pid>/ns/*` are the pod's namespaces.
    pub shim_pid: u32,
    /// The pod's address on the pod network; none for host-network pods, while the
    /// node's network mode is "none", and when its CNI network gave no IPv4 address.
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// Its IPv6 address on a dual-stack network.
    #[serde(default)]
    pub ip6: Option<Ipv6Addr>,
    /// Host ports relayed to the pod while it is ready.
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
}

impl Record for SandboxRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl SandboxRecord {
    /// Kubelet's identity of a pod attempt; a second RunPodSandbox with the same one is a
    /// retry, answered with the existing sandbox.
    pub fn same_pod_attempt(&self, name: &str, namespace: &str, uid: &str, attempt: u32) -> bool {
        self.name == name
            && self.namespace == namespace
            && self.uid == uid
            && self.attempt == attempt
    }

    /// Containers may only be created in a ready sandbox.
    pub fn can_create_containers(&self) -> bool {
        self.state == SandboxState::Ready
    }
}
