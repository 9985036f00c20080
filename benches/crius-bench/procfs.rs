//! What the kernel says about a daemon: its memory (from /proc) and the bytes under
//! its root dir.
//!
//! RSS (`VmRSS` in /proc/PID/status) counts every resident page, shared libraries
//! included, as `ps` and `top` show it; PSS (`Pss` in /proc/PID/smaps_rollup) divides
//! each shared page among the processes mapping it, so PSS summed over a node's
//! processes is what they really cost. Both are reported because both are quoted.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use crate::error::BenchError;

/// Resident and proportional set size of `pid`, in KiB.
pub struct Memory {
    pub rss_kib: u64,
    pub pss_kib: u64,
}

pub fn memory(pid: u32) -> Result<Memory, BenchError> {
    let proc = PathBuf::from(format!("/proc/{pid}"));
    Ok(Memory {
        rss_kib: kib_field(&proc.join("status"), "VmRSS:")?,
        pss_kib: kib_field(&proc.join("smaps_rollup"), "Pss:")?,
    })
}

/// The value of a `Name:   1234 kB` line.
fn kib_field(path: &Path, field: &'static str) -> Result<u64, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    text.lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|number| number.parse().ok())
        .ok_or_else(|| BenchError::ProcField {
            path: path.to_path_buf(),
            field,
        })
}

/// Apparent size of the regular files under `dir`, symlinks not followed. Files that
/// vanish during the walk (a daemon's temp files) count as nothing.
pub fn dir_bytes(dir: &Path) -> Result<u64, BenchError> {
    let io = |source| BenchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut total = 0;
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(io(err)),
    };
    for entry in entries {
        let entry = entry.map_err(io)?;
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == ErrorKind::NotFound => continue,
            Err(err) => return Err(io(err)),
        };
        if metadata.is_dir() {
            total += dir_bytes(&entry.path())?;
        } else if metadata.is_file() {
            total += metadata.len();
        }
    }
    Ok(total)
}

/// The parent of `pid` (field 4 of /proc/PID/stat).
pub fn parent(pid: u32) -> Result<u32, BenchError> {
    let path = PathBuf::from(format!("/proc/{pid}/stat"));
    let stat = std::fs::read_to_string(&path).map_err(|source| BenchError::Io {
        path: path.clone(),
        source,
    })?;
    // `pid (comm) state ppid …`; comm may hold spaces, so split after its last ')'.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1))
        .and_then(|ppid| ppid.parse().ok())
        .ok_or(BenchError::ProcField {
            path,
            field: "ppid",
        })
}
