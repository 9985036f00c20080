//! Giving back the shim's resident code pages while it idles.
//!
//! A shim spends nearly all of its life waiting, but the code that started it and ran
//! its containers' first RPCs stays mapped into it: pages of its own binary and of libc,
//! shared with every other shim through the page cache, yet counted whole in each
//! shim's RSS (about 3 of its 4 MiB; see BENCHMARKS.md). Once the shim has been idle for
//! a while, it drops its mappings of those pages (`madvise(MADV_DONTNEED)`), as the
//! kernel would under memory pressure: the page cache keeps them, and the next RPC maps
//! the ones it needs again with minor faults (well under a millisecond).
//!
//! Only read-only, file-backed mappings without a single private page are dropped:
//! their content is the file's, so dropping loses nothing. Writable mappings, and
//! read-only ones the loader wrote to first (relocations), are never touched.

use std::time::Duration;

use nix::sys::mman::{madvise, MmapAdvise};
use nix::time::{clock_gettime, ClockId};

/// How long the shim must have done nothing before its code pages go.
pub const IDLE_INTERVAL: Duration = Duration::from_secs(10);

/// Watches the shim's CPU time: once it stayed the same for a whole interval after
/// having changed, the shim is idle and its code pages may go.
pub struct IdleTrimmer {
    /// CPU time at the last check.
    last_cpu: Duration,
    /// Whether the shim ran since its pages were last dropped.
    ran_since_trim: bool,
}

impl Default for IdleTrimmer {
    fn default() -> Self {
        IdleTrimmer {
            last_cpu: own_cpu_time(),
            // Starting up is running: its code goes at the first idle interval.
            ran_since_trim: true,
        }
    }
}

impl IdleTrimmer {
    /// Called every [`IDLE_INTERVAL`]: drops the code pages when the shim did nothing
    /// since the last call but did something since the last drop.
    pub fn tick(&mut self) {
        let cpu = own_cpu_time();
        // Waking up to look costs a few microseconds: not a sign of work.
        if cpu.saturating_sub(self.last_cpu) > IDLE_CPU_ALLOWANCE {
            self.last_cpu = cpu;
            self.ran_since_trim = true;
            return;
        }
        if self.ran_since_trim {
            drop_clean_code_pages();
            self.ran_since_trim = false;
        }
        // Dropping costs CPU as well, and is not work either.
        self.last_cpu = own_cpu_time();
    }
}

/// CPU time an idle shim may use in an interval (its own checks) and still count as idle.
const IDLE_CPU_ALLOWANCE: Duration = Duration::from_millis(1);

/// The CPU time of this process, all threads, as the kernel accounts it (nanoseconds).
fn own_cpu_time() -> Duration {
    clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

/// Drops the mappings of the read-only, file-backed mappings that hold no private page.
fn drop_clean_code_pages() {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return;
    };
    for (start, end) in clean_read_only_file_mappings(&smaps) {
        let Some(length) = end.checked_sub(start).filter(|length| *length > 0) else {
            continue;
        };
        let Some(address) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) else {
            continue;
        };
        // SAFETY: the range is a whole mapping of this process that is read-only and
        // file-backed with no private (anonymous) page: after MADV_DONTNEED its pages
        // read back as the file's, which is what they held.
        let _ = unsafe { madvise(address, length, MmapAdvise::MADV_DONTNEED) };
    }
}

/// The address ranges of the mappings in `smaps` (`/proc/<pid>/smaps` form) that are
/// read-only (`r--p` or `r-xp`), backed by a file, and have no anonymous page.
fn clean_read_only_file_mappings(smaps: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut current: Option<(usize, usize)> = None;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-').and_then(|(start, end)| {
            Some((
                usize::from_str_radix(start, 16).ok()?,
                usize::from_str_radix(end, 16).ok()?,
            ))
        }) {
            // address perms offset dev inode path
            let perms = fields.next().unwrap_or("");
            let path = fields.nth(3).unwrap_or("");
            let candidate = matches!(perms, "r--p" | "r-xp") && path.starts_with('/');
            current = candidate.then_some((start, end));
            continue;
        }
        if first == "Anonymous:" {
            if let Some(range) = current.take() {
                if fields.next() == Some("0") {
                    found.push(range);
                }
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_clean_read_only_file_mappings_are_chosen() {
        let smaps = "\
55aa00000000-55aa00001000 r--p 00000000 fe:00 12 /usr/bin/crius-shim
Rss:                   4 kB
Anonymous:             0 kB
55aa00001000-55aa00009000 r-xp 00001000 fe:00 12 /usr/bin/crius-shim
Anonymous:             0 kB
55aa00009000-55aa0000a000 r--p 00009000 fe:00 12 /usr/bin/crius-shim
Anonymous:             4 kB
55aa0000a000-55aa0000b000 rw-p 0000a000 fe:00 12 /usr/bin/crius-shim
Anonymous:             0 kB
7f0000000000-7f0000001000 r--p 00000000 00:00 0
Anonymous:             0 kB
7fff00000000-7fff00001000 r-xp 00000000 00:00 0 [vdso]
Anonymous:             0 kB
";
        assert_eq!(
            clean_read_only_file_mappings(smaps),
            [
                (0x55aa00000000, 0x55aa00001000),
                (0x55aa00001000, 0x55aa00009000)
            ]
        );
    }

    #[test]
    fn dropping_this_processs_clean_code_pages_leaves_it_working() {
        let before = own_cpu_time();
        drop_clean_code_pages();
        // Code and read-only data come back as they were.
        assert_eq!(format!("{:?}", vec![1, 2, 3]), "[1, 2, 3]");
        assert!(own_cpu_time() > before);
    }

    #[test]
    fn the_pages_go_once_after_work_when_a_whole_interval_passed_idle() {
        let mut trimmer = IdleTrimmer::default();
        assert!(trimmer.ran_since_trim, "start-up counts as work");
        trimmer.tick();
        assert!(!trimmer.ran_since_trim, "dropped at the first idle tick");
        // Work: more CPU than the allowance.
        let busy_until = own_cpu_time() + IDLE_CPU_ALLOWANCE * 5;
        while own_cpu_time() < busy_until {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        trimmer.tick();
        assert!(trimmer.ran_since_trim);
    }
}
