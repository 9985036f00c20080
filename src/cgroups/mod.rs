//! Reading a container's cgroup: resource usage for the stats RPCs and OOM kills for the
//! exit reason. runc creates and removes the cgroups (from the spec's `cgroupsPath`,
//! cgroupfs driver); this module only reads them, on cgroup v1 (one hierarchy per
//! controller) and v2 (one unified hierarchy) alike. Paths are relative to a root so
//! tests can point it at a directory of their own.

use std::path::{Path, PathBuf};

/// Where cgroup hierarchies are mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// A container's cgroup, as runc placed it.
pub struct Cgroup {
    root: PathBuf,
    /// `cgroupsPath` of the OCI spec, e.g. `/kubepods/pod1/crius-<id>`.
    path: String,
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
            unified: root.join("cgroup.controllers").exists(),
        }
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
        std::fs::read_to_string(self.root.join(controller).join(&self.path).join(file)).ok()
    }
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
}
