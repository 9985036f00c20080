//! ContainerStats and ListContainerStats: CPU and memory from the container's cgroup,
//! and the size of its writable layer.

use std::path::Path;

use super::api::{
    ContainerAttributes, ContainerMetadata, ContainerStats, ContainerStatsRequest,
    ContainerStatsResponse, CpuUsage, FilesystemIdentifier, FilesystemUsage,
    ListContainerStatsRequest, ListContainerStatsResponse, MemoryUsage, UInt64Value,
};
use super::{now_ns, Cri, CriError};
use crate::cgroups::Cgroup;
use crate::store::ContainerRecord;

impl Cri {
    pub(super) fn container_stats(
        &self,
        request: &ContainerStatsRequest,
    ) -> Result<ContainerStatsResponse, CriError> {
        tracing::Span::current().record("id", request.container_id.as_str());
        let container = self.container(&request.container_id)?;
        Ok(ContainerStatsResponse {
            stats: Some(self.stats_of(&container)),
        })
    }

    pub(super) fn list_container_stats(
        &self,
        request: &ListContainerStatsRequest,
    ) -> ListContainerStatsResponse {
        let filter = request.filter.clone().unwrap_or_default();
        let stats = self
            .containers
            .list()
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|c| {
                filter
                    .label_selector
                    .iter()
                    .all(|(key, value)| c.labels.get(key) == Some(value))
            })
            .map(|c| self.stats_of(&c))
            .collect();
        ListContainerStatsResponse { stats }
    }

    fn stats_of(&self, container: &ContainerRecord) -> ContainerStats {
        let timestamp = now_ns();
        let usage = Cgroup::new(&container.cgroup).usage();
        let value = |value: Option<u64>| value.map(|value| UInt64Value { value });
        let upper = self.layer_dir(&container.id).join("upper");
        let (bytes, inodes) = disk_usage(&upper);
        ContainerStats {
            attributes: Some(ContainerAttributes {
                id: container.id.clone(),
                metadata: Some(ContainerMetadata {
                    name: container.name.clone(),
                    attempt: container.attempt,
                }),
                labels: container.labels.clone().into_iter().collect(),
                annotations: container.annotations.clone().into_iter().collect(),
            }),
            cpu: Some(CpuUsage {
                timestamp,
                usage_core_nano_seconds: value(usage.cpu_nanoseconds),
                ..CpuUsage::default()
            }),
            memory: Some(MemoryUsage {
                timestamp,
                working_set_bytes: value(usage.working_set_bytes),
                usage_bytes: value(usage.memory_bytes),
                rss_bytes: value(usage.rss_bytes),
                ..MemoryUsage::default()
            }),
            writable_layer: Some(FilesystemUsage {
                timestamp,
                fs_id: Some(FilesystemIdentifier {
                    mountpoint: upper.display().to_string(),
                }),
                used_bytes: Some(UInt64Value { value: bytes }),
                inodes_used: Some(UInt64Value { value: inodes }),
            }),
            ..ContainerStats::default()
        }
    }
}

/// Bytes and inodes under `dir` (a container's writable layer: usually small).
fn disk_usage(dir: &Path) -> (u64, u64) {
    let mut bytes = 0;
    let mut inodes = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(next) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&next) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(metadata) = entry.metadata() else {
                continue;
            };
            inodes += 1;
            if metadata.is_dir() {
                pending.push(entry.path());
            } else {
                bytes += metadata.len();
            }
        }
    }
    (bytes, inodes)
}
