//! Reading a container's cgroup: resource usage for the stats RPCs (CRI's, and the
//! fuller [`Metrics`] behind the shim's Task API Stats), its processes, and OOM kills
//! for the exit reason. runc creates and removes the cgroups (from the spec's
//! `cgroupsPath`, cgroupfs driver); this module only reads them, on cgroup v1 (one
//! hierarchy per controller) and v2 (one unified hierarchy) alike. Paths are relative to
//! a root so tests can point it at a directory of their own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup, as runc placed it.
pub struct Cgroup {
    root: PathBuf,
    /// `cgroupsPath` of the OCI spec, e.g. `/kubepods/pod1/crius-<id>`.
    path: String,
    /// On v1, paths that differ by controller: a process's, whose cgroup a runtime placed
    /// relative to its own (which differs by controller).
    controller_paths: HashMap<String, String>,
    unified: bool,
}

/// Usage read from a cgroup; `None` where the kernel does not report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Total CPU time consumed, in nanoseconds.
    pub cpu_nanoseconds: Option<u64>,
    pub memory_bytes: Option<u64>,
    /// Usage minus inactive file pages: what kubelet evicts on.
    pub working_set_bytes: Option<u64>,
    pub rss_bytes: Option<u64>,
}

/// What a cgroup's files say of its CPU, memory and processes, in bytes and nanoseconds
/// (a counter the kernel does not keep reads 0): what containerd's cgroups metrics carry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metrics {
    pub cpu: CpuMetrics,
    pub memory: MemoryMetrics,
    pub pids: PidsMetrics,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuMetrics {
    /// CPU time consumed: in all, in user mode, in kernel mode.
    pub total_ns: u64,
    pub user_ns: u64,
    pub kernel_ns: u64,
    /// CPU time by CPU (cgroup v1 only).
    pub per_cpu_ns: Vec<u64>,
    /// CFS bandwidth periods, those in which the quota ran out, and the time throttled.
    pub periods: u64,
    pub throttled_periods: u64,
    pub throttled_ns: u64,
}

/// One memory counter of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryCounter {
    pub usage: u64,
    /// `u64::MAX` where cgroup v2 says `max`; v1 writes its own large number.
    pub limit: u64,
    /// The highest usage seen (0 where the kernel does not record it).
    pub max_usage: u64,
    /// How many times usage hit the limit.
    pub failcnt: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryMetrics {
    pub usage: MemoryCounter,
    /// v1: memory and swap together (`memory.memsw.*`); v2: swap alone.
    pub swap: MemoryCounter,
    /// v1 only: kernel memory, and its TCP buffers.
    pub kernel: MemoryCounter,
    pub kernel_tcp: MemoryCounter,
    /// `memory.stat`, keyed as the kernel names them (v1 and v2 name them differently).
    pub stat: BTreeMap<String, u64>,
    /// v1 `memory.oom_control`, v2 `memory.events`.
    pub events: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PidsMetrics {
    pub current: u64,
    /// 0: no limit.
    pub limit: u64,
}

/// The v1 hierarchies a cgroup's process list is read from, in order of preference.
const V1_PROCESS_CONTROLLERS: [&str; 4] = ["pids", "memory", "cpuacct", "cpu"];

/// `cpuacct.stat` counts in USER_HZ ticks, 100 a second on every Linux architecture
/// (containerd hard-codes it too).
const NANOS_PER_TICK: u64 = 10_000_000;

impl Cgroup {
    /// The cgroup `path` under the host's hierarchies.
    pub fn new(path: &str) -> Cgroup {
        Cgroup::under(Path::new(CGROUP_ROOT), path)
    }

    /// The cgroup `path` under `root` (v2 when `root` has `cgroup.controllers`).
    pub fn under(root: &Path, path: &str) -> Cgroup {
        Cgroup {
            root: root.to_path_buf(),
            path: path.trim_start_matches('/').to_string(),
            controller_paths: HashMap::new(),
            unified: root.join("cgroup.controllers").exists(),
        }
    }

    /// The cgroup process `pid` is in, from `/proc/<pid>/cgroup` (as seen from this
    /// process's cgroup namespace); `None` when the process is gone.
    pub fn of_process(pid: i32) -> Option<Cgroup> {
        let membership = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        Cgroup::from_membership(Path::new(CGROUP_ROOT), &membership)
    }

    /// The cgroup under `root` that a `/proc/<pid>/cgroup` text names: on v2 the unified
    /// line (`0::/path`), on v1 each controller's line (`3:cpu,cpuacct:/path`); `None`
    /// without one for the memory or pids controller.
    fn from_membership(root: &Path, membership: &str) -> Option<Cgroup> {
        let unified = root.join("cgroup.controllers").exists();
        let lines: Vec<(&str, &str, &str)> = membership
            .lines()
            .filter_map(|line| {
                let mut fields = line.splitn(3, ':');
                Some((fields.next()?, fields.next()?, fields.next()?))
            })
            .collect();
        if unified {
            let (_, _, path) = lines
                .iter()
                .find(|(id, controllers, _)| *id == "0" && controllers.is_empty())?;
            return Some(Cgroup::under(root, path));
        }
        let controller_paths: HashMap<String, String> = lines
            .iter()
            .filter(|(id, _, _)| *id != "0")
            .flat_map(|(_, controllers, path)| {
                controllers.split(',').map(|controller| {
                    let path = path.trim_start_matches('/').to_string();
                    (controller.to_string(), path)
                })
            })
            .collect();
        let path = ["memory", "pids"]
            .iter()
            .find_map(|controller| controller_paths.get(*controller))?
            .clone();
        Some(Cgroup {
            root: root.to_path_buf(),
            path,
            controller_paths,
            unified,
        })
    }

    /// Whether this is a cgroup v2 (unified) cgroup.
    pub fn is_unified(&self) -> bool {
        self.unified
    }

    /// The pids of the processes in the cgroup (`cgroup.procs`); empty when it is gone.
    pub fn processes(&self) -> Vec<i32> {
        let procs = if self.unified {
            self.read("", "cgroup.procs")
        } else {
            V1_PROCESS_CONTROLLERS
                .iter()
                .find_map(|controller| self.read(controller, "cgroup.procs"))
        };
        procs
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// Everything [`Metrics`] holds, read now.
    pub fn metrics(&self) -> Metrics {
        if self.unified {
            self.metrics_v2()
        } else {
            self.metrics_v1()
        }
    }

    fn metrics_v1(&self) -> Metrics {
        let cpuacct = self.keyed_file("cpuacct", "cpuacct.stat");
        let throttling = self.keyed_file("cpu", "cpu.stat");
        let counter = |prefix: &str| MemoryCounter {
            usage: self.number("memory", &format!("{prefix}.usage_in_bytes")),
            limit: self.number("memory", &format!("{prefix}.limit_in_bytes")),
            max_usage: self.number("memory", &format!("{prefix}.max_usage_in_bytes")),
            failcnt: self.number("memory", &format!("{prefix}.failcnt")),
        };
        Metrics {
            cpu: CpuMetrics {
                total_ns: self.number("cpuacct", "cpuacct.usage"),
                user_ns: value(&cpuacct, "user").saturating_mul(NANOS_PER_TICK),
                kernel_ns: value(&cpuacct, "system").saturating_mul(NANOS_PER_TICK),
                per_cpu_ns: self
                    .read("cpuacct", "cpuacct.usage_percpu")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|ns| ns.parse().ok())
                    .collect(),
                periods: value(&throttling, "nr_periods"),
                throttled_periods: value(&throttling, "nr_throttled"),
                throttled_ns: value(&throttling, "throttled_time"),
            },
            memory: MemoryMetrics {
                usage: counter("memory"),
                swap: counter("memory.memsw"),
                kernel: counter("memory.kmem"),
                kernel_tcp: counter("memory.kmem.tcp"),
                stat: self.keyed_file("memory", "memory.stat"),
                events: self.keyed_file("memory", "memory.oom_control"),
            },
            pids: self.pids("pids"),
        }
    }

    fn metrics_v2(&self) -> Metrics {
        let cpu = self.keyed_file("", "cpu.stat");
        let micros = |key: &str| value(&cpu, key).saturating_mul(1000);
        let events = self.keyed_file("", "memory.events");
        Metrics {
            cpu: CpuMetrics {
                total_ns: micros("usage_usec"),
                user_ns: micros("user_usec"),
                kernel_ns: micros("system_usec"),
                per_cpu_ns: Vec::new(),
                periods: value(&cpu, "nr_periods"),
                throttled_periods: value(&cpu, "nr_throttled"),
                throttled_ns: micros("throttled_usec"),
            },
            memory: MemoryMetrics {
                usage: MemoryCounter {
                    usage: self.number("", "memory.current"),
                    limit: self.number("", "memory.max"),
                    max_usage: self.number("", "memory.peak"),
                    failcnt: value(&events, "max"),
                },
                swap: MemoryCounter {
                    usage: self.number("", "memory.swap.current"),
                    limit: self.number("", "memory.swap.max"),
                    max_usage: self.number("", "memory.swap.peak"),
                    failcnt: value(&self.keyed_file("", "memory.swap.events"), "fail"),
                },
                kernel: MemoryCounter::default(),
                kernel_tcp: MemoryCounter::default(),
                stat: self.keyed_file("", "memory.stat"),
                events,
            },
            pids: self.pids(""),
        }
    }

    fn pids(&self, controller: &str) -> PidsMetrics {
        let limit = self.number(controller, "pids.max");
        PidsMetrics {
            current: self.number(controller, "pids.current"),
            limit: if limit == u64::MAX { 0 } else { limit },
        }
    }

    /// A file holding one number; `max` is `u64::MAX`, and a missing file 0.
    fn number(&self, controller: &str, file: &str) -> u64 {
        match self.read(controller, file).as_deref().map(str::trim) {
            Some("max") => u64::MAX,
            Some(text) => text.parse().unwrap_or(0),
            None => 0,
        }
    }

    /// A `key value` per line file; empty when missing.
    fn keyed_file(&self, controller: &str, file: &str) -> BTreeMap<String, u64> {
        self.read(controller, file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let (key, number) = line.split_once(' ')?;
                Some((key.to_string(), number.trim().parse().ok()?))
            })
            .collect()
    }

    /// True when the kernel's OOM killer killed a process of this cgroup.
    pub fn oom_killed(&self) -> bool {
        let (controller, file) = if self.unified {
            ("", "memory.events")
        } else {
            ("memory", "memory.oom_control")
        };
        self.read(controller, file)
            .and_then(|text| keyed(&text, "oom_kill"))
            .is_some_and(|kills| kills > 0)
    }

    pub fn usage(&self) -> Usage {
        if self.unified {
            let stat = self.read("", "memory.stat").unwrap_or_default();
            let memory = self
                .read("", "memory.current")
                .and_then(|text| text.trim().parse().ok());
            Usage {
                cpu_nanoseconds: self
                    .read("", "cpu.stat")
                    .and_then(|text| keyed(&text, "usage_usec"))
                    .map(|micros| micros * 1000),
                memory_bytes: memory,
                working_set_bytes: memory
                    .map(|usage| usage.saturating_sub(keyed(&stat, "inactive_file").unwrap_or(0))),
                rss_bytes: keyed(&stat, "anon"),
            }
        } else {
            let stat = self.read("memory", "memory.stat").unwrap_or_default();
            let memory = self
                .read("memory", "memory.usage_in_bytes")
                .and_then(|text| text.trim().parse().ok());
            Usage {
                cpu_nanoseconds: self
                    .read("cpuacct", "cpuacct.usage")
                    .and_then(|text| text.trim().parse().ok()),
                memory_bytes: memory,
                working_set_bytes: memory.map(|usage| {
                    usage.saturating_sub(keyed(&stat, "total_inactive_file").unwrap_or(0))
                }),
                rss_bytes: keyed(&stat, "total_rss"),
            }
        }
    }

    fn read(&self, controller: &str, file: &str) -> Option<String> {
        let path = self.controller_paths.get(controller).unwrap_or(&self.path);
        std::fs::read_to_string(self.root.join(controller).join(path).join(file)).ok()
    }
}

/// `key`'s number in a parsed `key value` file; 0 when absent.
fn value(file: &BTreeMap<String, u64>, key: &str) -> u64 {
    file.get(key).copied().unwrap_or(0)
}

/// The number after `key` in a `key value` per line file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok()).flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, relative: &str, text: &str) {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn v1_usage_and_oom() {
        let root = tempfile::tempdir().unwrap();
        write(
            root.path(),
            "memory/pod/c/memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        );
        write(root.path(), "memory/pod/c/memory.usage_in_bytes", "1000\n");
        write(
            root.path(),
            "memory/pod/c/memory.stat",
            "total_rss 600\ntotal_inactive_file 300\n",
        );
        write(root.path(), "cpuacct/pod/c/cpuacct.usage", "123456\n");
        let cgroup = Cgroup::under(root.path(), "/pod/c");
        assert!(cgroup.oom_killed());
        assert_eq!(
            cgroup.usage(),
            Usage {
                cpu_nanoseconds: Some(123456),
                memory_bytes: Some(1000),
                working_set_bytes: Some(700),
                rss_bytes: Some(600),
            }
        );
        assert!(!Cgroup::under(root.path(), "/pod/other").oom_killed());
    }

    #[test]
    fn v2_usage_and_oom() {
        let root = tempfile::tempdir().unwrap();
        write(root.path(), "cgroup.controllers", "cpu memory\n");
        write(
            root.path(),
            "pod/c/memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        );
        write(root.path(), "pod/c/memory.current", "2000\n");
        write(
            root.path(),
            "pod/c/memory.stat",
            "anon 1500\ninactive_file 500\n",
        );
        write(root.path(), "pod/c/cpu.stat", "usage_usec 7\nuser_usec 5\n");
        let cgroup = Cgroup::under(root.path(), "pod/c");
        assert!(!cgroup.oom_killed(), "oom without oom_kill is not a kill");
        let usage = cgroup.usage();
        assert_eq!(usage.cpu_nanoseconds, Some(7000));
        assert_eq!(usage.working_set_bytes, Some(1500));
        assert_eq!(usage.rss_bytes, Some(1500));
    }

    #[test]
    fn v1_metrics_processes_and_membership() {
        let root = tempfile::tempdir().unwrap();
        let files = [
            ("cpuacct/pod/c/cpuacct.usage", "5000000000\n"),
            ("cpuacct/pod/c/cpuacct.stat", "user 300\nsystem 200\n"),
            (
                "cpuacct/pod/c/cpuacct.usage_percpu",
                "3000000000 2000000000 \n",
            ),
            (
                "cpu/pod/c/cpu.stat",
                "nr_periods 10\nnr_throttled 2\nthrottled_time 99\n",
            ),
            ("memory/pod/c/memory.usage_in_bytes", "1000\n"),
            ("memory/pod/c/memory.limit_in_bytes", "4096\n"),
            ("memory/pod/c/memory.max_usage_in_bytes", "2000\n"),
            ("memory/pod/c/memory.failcnt", "1\n"),
            (
                "memory/pod/c/memory.stat",
                "cache 10\ntotal_inactive_file 300\n",
            ),
            (
                "memory/pod/c/memory.oom_control",
                "oom_kill_disable 0\noom_kill 2\n",
            ),
            ("pids/pod/c/pids.current", "3\n"),
            ("pids/pod/c/pids.max", "max\n"),
            ("pids/pod/c/cgroup.procs", "7\n8\n9\n"),
        ];
        // Where a runtime put the container relative to its own cgroups, which differ.
        for (path, text) in files {
            let path = path.replacen("cpuacct/pod", "cpuacct/x/pod", 1).replacen(
                "cpu/pod",
                "cpu/x/pod",
                1,
            );
            write(root.path(), &path, text);
        }
        let membership =
            "12:pids:/pod/c\n7:memory:/pod/c\n4:cpu,cpuacct:/x/pod/c\n1:name=systemd:/y\n0::/\n";
        let cgroup = Cgroup::from_membership(root.path(), membership).unwrap();
        assert!(!cgroup.is_unified());
        assert_eq!(cgroup.processes(), vec![7, 8, 9]);
        let metrics = cgroup.metrics();
        assert_eq!(
            metrics.cpu,
            CpuMetrics {
                total_ns: 5_000_000_000,
                user_ns: 3_000_000_000,
                kernel_ns: 2_000_000_000,
                per_cpu_ns: vec![3_000_000_000, 2_000_000_000],
                periods: 10,
                throttled_periods: 2,
                throttled_ns: 99,
            }
        );
        assert_eq!(
            metrics.memory.usage,
            MemoryCounter {
                usage: 1000,
                limit: 4096,
                max_usage: 2000,
                failcnt: 1,
            }
        );
        assert_eq!(metrics.memory.swap, MemoryCounter::default());
        assert_eq!(metrics.memory.stat["total_inactive_file"], 300);
        assert_eq!(metrics.memory.events["oom_kill"], 2);
        assert_eq!(
            metrics.pids,
            PidsMetrics {
                current: 3,
                limit: 0
            }
        );
    }

    #[test]
    fn v2_metrics_processes_and_membership() {
        let root = tempfile::tempdir().unwrap();
        let files = [
            ("cgroup.controllers", "cpu memory pids\n"),
            (
                "pod/c/cpu.stat",
                "usage_usec 7\nuser_usec 5\nsystem_usec 2\nnr_periods 4\n",
            ),
            ("pod/c/memory.current", "2000\n"),
            ("pod/c/memory.max", "max\n"),
            ("pod/c/memory.events", "max 3\noom_kill 1\n"),
            ("pod/c/memory.swap.current", "0\n"),
            ("pod/c/memory.stat", "anon 1500\ninactive_file 500\n"),
            ("pod/c/pids.current", "2\n"),
            ("pod/c/pids.max", "100\n"),
            ("pod/c/cgroup.procs", "11\n12\n"),
        ];
        for (path, text) in files {
            write(root.path(), path, text);
        }
        let cgroup = Cgroup::from_membership(root.path(), "0::/pod/c\n").unwrap();
        assert!(cgroup.is_unified());
        assert_eq!(cgroup.processes(), vec![11, 12]);
        let metrics = cgroup.metrics();
        assert_eq!(
            (
                metrics.cpu.total_ns,
                metrics.cpu.user_ns,
                metrics.cpu.kernel_ns
            ),
            (7000, 5000, 2000)
        );
        assert_eq!(metrics.cpu.periods, 4);
        assert_eq!(
            metrics.memory.usage,
            MemoryCounter {
                usage: 2000,
                limit: u64::MAX,
                max_usage: 0,
                failcnt: 3,
            }
        );
        assert_eq!(metrics.memory.stat["inactive_file"], 500);
        assert_eq!(
            metrics.pids,
            PidsMetrics {
                current: 2,
                limit: 100
            }
        );
        assert!(Cgroup::from_membership(root.path(), "3:memory:/x\n").is_none());
    }
}
