//! cgroup limits (`linux.resources`) from CRI `LinuxContainerResources`.
//!
//! Rules (CRI: "0 / \"\" / empty means not specified"; containerd's
//! `WithResources`):
//! - cpu shares, quota, period, cpuset cpus and mems, memory limit, hugepage limits and
//!   `unified` are copied when set; a negative value where the kernel takes an unsigned
//!   one is an error naming the field (a quota of -1 means "no limit" and is kept).
//! - Swap: the CRI's swap limit when set, else the memory limit (memory+swap = memory,
//!   i.e. no swap, as Docker and containerd do). Left out entirely when the host does not
//!   account swap, where runc would fail writing `memory.memsw.limit_in_bytes`.
//! - The pids limit comes from the daemon (the CRI has none).
//! - `oom_score_adj` is not a cgroup setting: [`oom_score_adj`] gives it to the process.

use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceCgroup, LinuxHugepageLimitBuilder, LinuxMemoryBuilder,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use super::input::LinuxContainerResources;
use super::SpecError;

/// What the node decides about limits.
pub(super) struct ResourcePolicy {
    pub swap_accounting: bool,
    pub pids_limit: i64,
}

pub(super) fn container_resources(
    requested: &LinuxContainerResources,
    policy: &ResourcePolicy,
    device_rules: Vec<LinuxDeviceCgroup>,
) -> Result<LinuxResources, SpecError> {
    let mut resources = LinuxResourcesBuilder::default().devices(device_rules);

    let mut cpu = LinuxCpuBuilder::default();
    let mut has_cpu = false;
    if requested.cpu_shares != 0 {
        cpu = cpu.shares(unsigned("cpu_shares", requested.cpu_shares)?);
        has_cpu = true;
    }
    if requested.cpu_quota != 0 {
        cpu = cpu.quota(requested.cpu_quota);
        has_cpu = true;
    }
    if requested.cpu_period != 0 {
        cpu = cpu.period(unsigned("cpu_period", requested.cpu_period)?);
        has_cpu = true;
    }
    if !requested.cpuset_cpus.is_empty() {
        cpu = cpu.cpus(requested.cpuset_cpus.clone());
        has_cpu = true;
    }
    if !requested.cpuset_mems.is_empty() {
        cpu = cpu.mems(requested.cpuset_mems.clone());
        has_cpu = true;
    }
    if has_cpu {
        resources = resources.cpu(cpu.build().map_err(assemble_error)?);
    }

    let limit = positive("memory_limit_in_bytes", requested.memory_limit_in_bytes)?;
    let swap = positive(
        "memory_swap_limit_in_bytes",
        requested.memory_swap_limit_in_bytes,
    )?
    .or(limit)
    .filter(|_| policy.swap_accounting);
    if limit.is_some() || swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = limit {
            memory = memory.limit(limit);
        }
        if let Some(swap) = swap {
            memory = memory.swap(swap);
        }
        resources = resources.memory(memory.build().map_err(assemble_error)?);
    }

    if policy.pids_limit > 0 {
        let pids = LinuxPidsBuilder::default()
            .limit(policy.pids_limit)
            .build()
            .map_err(assemble_error)?;
        resources = resources.pids(pids);
    }

    if !requested.hugepage_limits.is_empty() {
        let limits = requested
            .hugepage_limits
            .iter()
            .map(|h| {
                let limit = i64::try_from(h.limit).map_err(|_| SpecError::InvalidResource {
                    field: "hugepage_limits.limit",
                    value: h.limit.to_string(),
                })?;
                LinuxHugepageLimitBuilder::default()
                    .page_size(h.page_size.clone())
                    .limit(limit)
                    .build()
                    .map_err(assemble_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        resources = resources.hugepage_limits(limits);
    }

    if !requested.unified.is_empty() {
        resources = resources.unified(requested.unified.clone());
    }

    resources.build().map_err(assemble_error)
}

/// `process.oomScoreAdj`: `None` when unset (0), an error outside the kernel's range.
pub(super) fn oom_score_adj(requested: &LinuxContainerResources) -> Result<Option<i32>, SpecError> {
    match requested.oom_score_adj {
        0 => Ok(None),
        value @ -1000..=1000 => Ok(i32::try_from(value).ok()),
        value => Err(SpecError::InvalidResource {
            field: "oom_score_adj",
            value: value.to_string(),
        }),
    }
}

fn unsigned(field: &'static str, value: i64) -> Result<u64, SpecError> {
    u64::try_from(value).map_err(|_| SpecError::InvalidResource {
        field,
        value: value.to_string(),
    })
}

/// A byte count where 0 means unset and negative is invalid.
fn positive(field: &'static str, value: i64) -> Result<Option<i64>, SpecError> {
    match value {
        0 => Ok(None),
        v if v > 0 => Ok(Some(v)),
        v => Err(SpecError::InvalidResource {
            field,
            value: v.to_string(),
        }),
    }
}

fn assemble_error(source: oci_spec::OciSpecError) -> SpecError {
    SpecError::Assemble {
        part: "linux.resources",
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::input::HugepageLimit;

    fn policy(swap_accounting: bool, pids_limit: i64) -> ResourcePolicy {
        ResourcePolicy {
            swap_accounting,
            pids_limit,
        }
    }

    #[test]
    fn unset_fields_leave_everything_out() {
        let got = container_resources(
            &LinuxContainerResources::default(),
            &policy(true, 0),
            Vec::new(),
        )
        .unwrap();
        assert!(got.cpu().is_none());
        assert!(got.memory().is_none());
        assert!(got.pids().is_none());
        assert!(got.hugepage_limits().is_none());
        assert!(got.unified().is_none());
    }

    #[test]
    fn every_field_is_copied() {
        let requested = LinuxContainerResources {
            cpu_period: 100_000,
            cpu_quota: 50_000,
            cpu_shares: 512,
            memory_limit_in_bytes: 1 << 30,
            cpuset_cpus: "0-1".into(),
            cpuset_mems: "0".into(),
            hugepage_limits: vec![HugepageLimit {
                page_size: "2MB".into(),
                limit: 4 << 20,
            }],
            unified: [("memory.high".to_string(), "1000".to_string())].into(),
            ..Default::default()
        };
        let got = container_resources(&requested, &policy(true, 1024), Vec::new()).unwrap();
        let cpu = got.cpu().as_ref().unwrap();
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.period(), Some(100_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0-1"));
        assert_eq!(cpu.mems().as_deref(), Some("0"));
        let memory = got.memory().unwrap();
        assert_eq!(memory.limit(), Some(1 << 30));
        assert_eq!(
            memory.swap(),
            Some(1 << 30),
            "no swap: memory+swap = memory"
        );
        assert_eq!(got.pids().unwrap().limit(), 1024);
        let huge = &got.hugepage_limits().as_ref().unwrap()[0];
        assert_eq!((huge.page_size().as_str(), huge.limit()), ("2MB", 4 << 20));
        assert_eq!(
            got.unified()
                .as_ref()
                .unwrap()
                .get("memory.high")
                .map(String::as_str),
            Some("1000")
        );
    }

    #[test]
    fn explicit_swap_limit_wins_and_no_accounting_drops_it() {
        let requested = LinuxContainerResources {
            memory_limit_in_bytes: 100,
            memory_swap_limit_in_bytes: 300,
            ..Default::default()
        };
        let got = container_resources(&requested, &policy(true, 0), Vec::new()).unwrap();
        assert_eq!(got.memory().unwrap().swap(), Some(300));
        let got = container_resources(&requested, &policy(false, 0), Vec::new()).unwrap();
        assert_eq!(got.memory().unwrap().limit(), Some(100));
        assert_eq!(got.memory().unwrap().swap(), None);
    }

    #[test]
    fn negative_values_name_the_field() {
        let requested = LinuxContainerResources {
            cpu_shares: -2,
            ..Default::default()
        };
        let err = container_resources(&requested, &policy(true, 0), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("cpu_shares"), "{err}");
        let requested = LinuxContainerResources {
            memory_limit_in_bytes: -5,
            ..Default::default()
        };
        let err = container_resources(&requested, &policy(true, 0), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("memory_limit_in_bytes"), "{err}");
    }

    #[test]
    fn unlimited_quota_is_kept() {
        let requested = LinuxContainerResources {
            cpu_quota: -1,
            ..Default::default()
        };
        let got = container_resources(&requested, &policy(true, 0), Vec::new()).unwrap();
        assert_eq!(got.cpu().as_ref().unwrap().quota(), Some(-1));
    }

    #[test]
    fn oom_score_adj_zero_is_unset_and_range_is_checked() {
        let with = |v| LinuxContainerResources {
            oom_score_adj: v,
            ..Default::default()
        };
        assert_eq!(oom_score_adj(&with(0)).unwrap(), None);
        assert_eq!(oom_score_adj(&with(-997)).unwrap(), Some(-997));
        assert_eq!(oom_score_adj(&with(1000)).unwrap(), Some(1000));
        assert!(oom_score_adj(&with(1001)).is_err());
    }
}
