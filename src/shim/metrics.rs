//! A container's cgroup metrics as containerd's runc shim answers Stats: an `Any` holding
//! `io.containerd.cgroups.v1.Metrics` on cgroup v1 and `io.containerd.cgroups.v2.Metrics`
//! on v2, its type URL the message's full name, as containerd's `typeurl` writes it
//! (no `type.googleapis.com/` prefix; [`pack`] also packs the ProcessDetails of Pids).
//! The shim builds them from what [`crate::cgroups`] reads; the client side decodes them
//! again ([`TaskMetrics`]).
//!
//! Fields the cgroup does not keep are 0 (v1's `memory.stat` keys on v1, v2's on v2,
//! containerd's own mapping of them); block I/O, RDMA, hugetlb and network statistics
//! are not reported.

use containerd_shim_protos::cgroups::metrics as v1;
use containerd_shim_protos::cgroups_v2::metrics as v2;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{MessageField, MessageFull};

use super::ShimError;
use crate::cgroups::{Cgroup, MemoryCounter, Metrics};

/// Stats of a container, decoded.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskMetrics {
    V1(Box<v1::Metrics>),
    V2(Box<v2::Metrics>),
}

/// The metrics of `cgroup`, read now, packed as containerd's runc shim packs them.
pub fn read_packed(cgroup: &Cgroup) -> Result<Any, ShimError> {
    let metrics = cgroup.metrics();
    if cgroup.is_unified() {
        pack(&metrics_v2(&metrics))
    } else {
        pack(&metrics_v1(&metrics))
    }
}

/// `message` in an `Any`, its type URL as containerd's `typeurl` writes it.
pub fn pack<M: MessageFull>(message: &M) -> Result<Any, ShimError> {
    let value = message
        .write_to_bytes()
        .map_err(|source| ShimError::Protobuf {
            what: M::NAME,
            source,
        })?;
    Ok(Any {
        type_url: M::descriptor().full_name().to_string(),
        value,
        ..Any::default()
    })
}

/// `any` as the message `M` when it holds one (by its type URL).
pub fn unpack<M: MessageFull>(any: &Any) -> Result<Option<M>, ShimError> {
    if any.type_url != M::descriptor().full_name() {
        return Ok(None);
    }
    M::parse_from_bytes(&any.value)
        .map(Some)
        .map_err(|source| ShimError::Protobuf {
            what: M::NAME,
            source,
        })
}

impl TaskMetrics {
    /// Decodes a Stats answer; another type than containerd's cgroup metrics is an error.
    pub fn unpack(any: &Any) -> Result<TaskMetrics, ShimError> {
        if let Some(metrics) = unpack::<v1::Metrics>(any)? {
            return Ok(TaskMetrics::V1(Box::new(metrics)));
        }
        if let Some(metrics) = unpack::<v2::Metrics>(any)? {
            return Ok(TaskMetrics::V2(Box::new(metrics)));
        }
        Err(ShimError::InvalidArgument(format!(
            "stats of type {:?}: want containerd's cgroup metrics",
            any.type_url
        )))
    }
}

fn metrics_v1(metrics: &Metrics) -> v1::Metrics {
    let stat = |key: &str| metrics.memory.stat.get(key).copied().unwrap_or(0);
    let event = |key: &str| metrics.memory.events.get(key).copied().unwrap_or(0);
    let entry = |counter: &MemoryCounter| {
        MessageField::some(v1::MemoryEntry {
            limit: counter.limit,
            usage: counter.usage,
            max: counter.max_usage,
            failcnt: counter.failcnt,
            ..v1::MemoryEntry::default()
        })
    };
    let cpu = &metrics.cpu;
    v1::Metrics {
        pids: MessageField::some(v1::PidsStat {
            current: metrics.pids.current,
            limit: metrics.pids.limit,
            ..v1::PidsStat::default()
        }),
        cpu: MessageField::some(v1::CPUStat {
            usage: MessageField::some(v1::CPUUsage {
                total: cpu.total_ns,
                kernel: cpu.kernel_ns,
                user: cpu.user_ns,
                per_cpu: cpu.per_cpu_ns.clone(),
                ..v1::CPUUsage::default()
            }),
            throttling: MessageField::some(v1::Throttle {
                periods: cpu.periods,
                throttled_periods: cpu.throttled_periods,
                throttled_time: cpu.throttled_ns,
                ..v1::Throttle::default()
            }),
            ..v1::CPUStat::default()
        }),
        memory: MessageField::some(v1::MemoryStat {
            cache: stat("cache"),
            rss: stat("rss"),
            rss_huge: stat("rss_huge"),
            mapped_file: stat("mapped_file"),
            dirty: stat("dirty"),
            writeback: stat("writeback"),
            pg_pg_in: stat("pgpgin"),
            pg_pg_out: stat("pgpgout"),
            pg_fault: stat("pgfault"),
            pg_maj_fault: stat("pgmajfault"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            hierarchical_memory_limit: stat("hierarchical_memory_limit"),
            hierarchical_swap_limit: stat("hierarchical_memsw_limit"),
            total_cache: stat("total_cache"),
            total_rss: stat("total_rss"),
            total_rss_huge: stat("total_rss_huge"),
            total_mapped_file: stat("total_mapped_file"),
            total_dirty: stat("total_dirty"),
            total_writeback: stat("total_writeback"),
            total_pg_pg_in: stat("total_pgpgin"),
            total_pg_pg_out: stat("total_pgpgout"),
            total_pg_fault: stat("total_pgfault"),
            total_pg_maj_fault: stat("total_pgmajfault"),
            total_inactive_anon: stat("total_inactive_anon"),
            total_active_anon: stat("total_active_anon"),
            total_inactive_file: stat("total_inactive_file"),
            total_active_file: stat("total_active_file"),
            total_unevictable: stat("total_unevictable"),
            usage: entry(&metrics.memory.usage),
            swap: entry(&metrics.memory.swap),
            kernel: entry(&metrics.memory.kernel),
            kernel_tcp: entry(&metrics.memory.kernel_tcp),
            ..v1::MemoryStat::default()
        }),
        memory_oom_control: MessageField::some(v1::MemoryOomControl {
            oom_kill_disable: event("oom_kill_disable"),
            under_oom: event("under_oom"),
            oom_kill: event("oom_kill"),
            ..v1::MemoryOomControl::default()
        }),
        ..v1::Metrics::default()
    }
}

fn metrics_v2(metrics: &Metrics) -> v2::Metrics {
    let stat = |key: &str| metrics.memory.stat.get(key).copied().unwrap_or(0);
    // Split by kind of page since Linux 5.9.
    let either =
        |key: &str| stat(key) + stat(&format!("{key}_anon")) + stat(&format!("{key}_file"));
    let event = |key: &str| metrics.memory.events.get(key).copied().unwrap_or(0);
    let cpu = &metrics.cpu;
    let memory = &metrics.memory;
    v2::Metrics {
        pids: MessageField::some(v2::PidsStat {
            current: metrics.pids.current,
            limit: metrics.pids.limit,
            ..v2::PidsStat::default()
        }),
        cpu: MessageField::some(v2::CPUStat {
            usage_usec: cpu.total_ns / 1000,
            user_usec: cpu.user_ns / 1000,
            system_usec: cpu.kernel_ns / 1000,
            nr_periods: cpu.periods,
            nr_throttled: cpu.throttled_periods,
            throttled_usec: cpu.throttled_ns / 1000,
            ..v2::CPUStat::default()
        }),
        memory: MessageField::some(v2::MemoryStat {
            anon: stat("anon"),
            file: stat("file"),
            kernel_stack: stat("kernel_stack"),
            slab: stat("slab"),
            sock: stat("sock"),
            shmem: stat("shmem"),
            file_mapped: stat("file_mapped"),
            file_dirty: stat("file_dirty"),
            file_writeback: stat("file_writeback"),
            anon_thp: stat("anon_thp"),
            inactive_anon: stat("inactive_anon"),
            active_anon: stat("active_anon"),
            inactive_file: stat("inactive_file"),
            active_file: stat("active_file"),
            unevictable: stat("unevictable"),
            slab_reclaimable: stat("slab_reclaimable"),
            slab_unreclaimable: stat("slab_unreclaimable"),
            pgfault: stat("pgfault"),
            pgmajfault: stat("pgmajfault"),
            workingset_refault: either("workingset_refault"),
            workingset_activate: either("workingset_activate"),
            workingset_nodereclaim: stat("workingset_nodereclaim"),
            pgrefill: stat("pgrefill"),
            pgscan: stat("pgscan"),
            pgsteal: stat("pgsteal"),
            pgactivate: stat("pgactivate"),
            pgdeactivate: stat("pgdeactivate"),
            pglazyfree: stat("pglazyfree"),
            pglazyfreed: stat("pglazyfreed"),
            thp_fault_alloc: stat("thp_fault_alloc"),
            thp_collapse_alloc: stat("thp_collapse_alloc"),
            usage: memory.usage.usage,
            usage_limit: memory.usage.limit,
            swap_usage: memory.swap.usage,
            swap_limit: memory.swap.limit,
            max_usage: memory.usage.max_usage,
            swap_max_usage: memory.swap.max_usage,
            ..v2::MemoryStat::default()
        }),
        memory_events: MessageField::some(v2::MemoryEvents {
            low: event("low"),
            high: event("high"),
            max: event("max"),
            oom: event("oom"),
            oom_kill: event("oom_kill"),
            oom_group_kill: event("oom_group_kill"),
            ..v2::MemoryEvents::default()
        }),
        ..v2::Metrics::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::{CpuMetrics, MemoryMetrics, PidsMetrics};

    fn sample(stat: &[(&str, u64)]) -> Metrics {
        Metrics {
            cpu: CpuMetrics {
                total_ns: 9_000,
                user_ns: 6_000,
                kernel_ns: 3_000,
                ..CpuMetrics::default()
            },
            memory: MemoryMetrics {
                usage: MemoryCounter {
                    usage: 4096,
                    limit: 8192,
                    max_usage: 5000,
                    failcnt: 0,
                },
                stat: stat.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                ..MemoryMetrics::default()
            },
            pids: PidsMetrics {
                current: 2,
                limit: 10,
            },
        }
    }

    #[test]
    fn v1_metrics_pack_and_unpack_under_containerds_type() {
        let metrics = metrics_v1(&sample(&[("total_inactive_file", 100), ("pgpgin", 7)]));
        let any = pack(&metrics).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
        let TaskMetrics::V1(back) = TaskMetrics::unpack(&any).unwrap() else {
            panic!("not v1");
        };
        assert_eq!(back.cpu.usage.total, 9_000);
        assert_eq!(back.cpu.usage.user, 6_000);
        assert_eq!(back.memory.usage.usage, 4096);
        assert_eq!(back.memory.usage.limit, 8192);
        assert_eq!(back.memory.total_inactive_file, 100);
        assert_eq!(back.memory.pg_pg_in, 7);
        assert_eq!((back.pids.current, back.pids.limit), (2, 10));
    }

    #[test]
    fn v2_metrics_pack_and_unpack_under_containerds_type() {
        let metrics = metrics_v2(&sample(&[
            ("inactive_file", 100),
            ("workingset_refault_anon", 1),
            ("workingset_refault_file", 2),
        ]));
        let any = pack(&metrics).unwrap();
        assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
        let TaskMetrics::V2(back) = TaskMetrics::unpack(&any).unwrap() else {
            panic!("not v2");
        };
        assert_eq!(
            (
                back.cpu.usage_usec,
                back.cpu.user_usec,
                back.cpu.system_usec
            ),
            (9, 6, 3)
        );
        assert_eq!((back.memory.usage, back.memory.usage_limit), (4096, 8192));
        assert_eq!(back.memory.inactive_file, 100);
        assert_eq!(back.memory.workingset_refault, 3);
        let other = Any {
            type_url: "something.Else".into(),
            ..Any::default()
        };
        assert!(matches!(
            TaskMetrics::unpack(&other),
            Err(ShimError::InvalidArgument(_))
        ));
    }
}
