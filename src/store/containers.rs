//! Container records.
//!
//! ```text
//!   CreateContainer ──▶ CREATED ──StartContainer──▶ RUNNING ──(exit, Stop)──▶ EXITED
//!         │                │                                                   │
//!         └────────────────┴──────────── RemoveContainer ◀────────────────────┘
//! ```
//! A container whose shim is lost is EXITED with reason `ShimLost`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::records::Record;
use crate::runtime::MountPropagation;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountRecord {
    pub container_path: String,
    pub host_path: String,
    pub readonly: bool,
    #[serde(default)]
    pub propagation: MountPropagation,
    /// For an image volume: the image as requested, and its id.
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub image_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    /// The image as the request named it, and its id.
    pub image: String,
    pub image_id: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// Full path of the CRI log file (empty: no log).
    pub log_path: String,
    pub mounts: Vec<MountRecord>,
    /// The container's cgroup path (the spec's `cgroupsPath`).
    #[serde(default)]
    pub cgroup: String,
    /// Signal StopContainer sends first (from the image's StopSignal), as a number.
    pub stop_signal: i32,
    pub state: ContainerState,
    pub pid: u32,
    /// Nanoseconds since the epoch; 0 until it happens.
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
    pub exit_code: i32,
    /// `Completed`, `Error`, `OOMKilled` or `ShimLost` once exited.
    pub reason: String,
    pub message: String,
    /// Its stdin is kept open for attach sessions (CRI `stdin`); `stdin_once` closes it
    /// when the first one ends. Records from before these fields read as none.
    #[serde(default)]
    pub stdin: bool,
    #[serde(default)]
    pub stdin_once: bool,
    /// It runs with a terminal, whose output is all on stdout.
    #[serde(default)]
    pub tty: bool,
}

impl Record for ContainerRecord {
    fn id(&self) -> &str {
        &self.id
    }
}

impl ContainerRecord {
    pub fn can_start(&self) -> bool {
        self.state == ContainerState::Created
    }

    pub fn is_running(&self) -> bool {
        self.state == ContainerState::Running
    }
}
