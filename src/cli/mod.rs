//! The verbs of the `crius` command line client. Each verb connects to the daemon's CRI
//! socket exactly as kubelet or crictl would and returns what the binary prints.
//!
//! - `runtime_info`: `crius version`, `crius info`.
//! - `images`: `crius pull`, `images`, `rmi`, `load`, `save` (and image `inspect`).
//! - `run`: `crius run`, and the re-creation `crius start` uses for exited containers.
//! - `containers`: `crius ps`, `pods`, `stop`, `start`, `rm`, `container prune`, `exec`,
//!   `attach`, `inspect` (container, then pod, then image).
//! - `logs`: `crius logs`, and the log following of a foreground `crius run`.
//! - `ports`: `crius run -p`, `crius port`, and the PORTS column of `crius ps`.
//! - `resolve`: which container or pod a user's id prefix or name means.
//! - `terminal`: this process's stdio for `crius exec` and `attach`: raw mode, window sizes.

mod containers;
mod images;
mod logs;
mod ports;
mod resolve;
mod run;
mod runtime_info;
mod terminal;

pub use containers::{attach, exec, inspect, pods, prune, ps, rm, start, stop};
pub use images::{images, load, pull, rmi, save};
pub use logs::logs;
pub use ports::{
    parse_private_port, parse_publish, port, PortProtocol, PrivatePort, PublishedPort,
};
pub use run::{
    parse_cpus, parse_memory, parse_user, parse_volume, run, RunOptions, RunOutcome, User, Volume,
    DEFAULT_LOG_DIR,
};
pub use runtime_info::{info, version};

use crate::cri::client::ClientError;

/// Why a verb failed; printed by the binary as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Streaming(#[from] crate::streaming::client::ClientError),
    #[error("{rpc} failed: {}: {}", .status.code(), .status.message())]
    Rpc {
        rpc: &'static str,
        status: tonic::Status,
    },
    #[error("{rpc}: unexpected answer: {detail}")]
    Protocol { rpc: &'static str, detail: String },
    #[error("no such {kind}: {key}")]
    NoSuch { kind: &'static str, key: String },
    #[error("{key:?} matches more than one {kind}: {candidates}; give more of the id")]
    Ambiguous {
        kind: &'static str,
        key: String,
        candidates: String,
    },
    #[error("container {0} is running: stop it first, or use rm -f")]
    Running(String),
    #[error("the container name {name:?} is already in use by container {id}: remove it or choose another name")]
    NameInUse { name: String, id: String },
    #[error("container {0} has exited and was not created by crius run: it cannot be restarted (CRI containers start once)")]
    NotRestartable(String),
    #[error("no public port {port} published for {container}")]
    NoPublicPort { port: String, container: String },
    #[error("cannot pick a free {protocol} host port on {ip}: {source}")]
    FreePort {
        protocol: PortProtocol,
        ip: std::net::IpAddr,
        source: std::io::Error,
    },
    #[error("container {0} has no log file")]
    NoLog(String),
    #[error("{path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<CliError>),
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// True for an RPC answered NOT_FOUND: the object went away between two calls.
    fn is_not_found(&self) -> bool {
        matches!(self, CliError::Rpc { status, .. } if status.code() == tonic::Code::NotFound)
    }
}

/// Attaches the RPC's name to a failed call.
fn rpc_error(rpc: &'static str) -> impl FnOnce(tonic::Status) -> CliError {
    move |status| CliError::Rpc { rpc, status }
}

/// The process exit status for a container's exit code: the code itself where it fits
/// (0–255, as a shell reports it), else 255 so that no failure reads as success.
pub fn exit_status(code: i32) -> u8 {
    u8::try_from(code).unwrap_or(u8::MAX)
}

/// Left-aligned columns separated by three spaces.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|column| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(column, cell)| format!("{cell:<width$}", width = widths[column]))
            .collect();
        out.push_str(cells.join("   ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let text = table(&[
            vec!["A".into(), "BB".into()],
            vec!["ccc".into(), "d".into()],
        ]);
        assert_eq!(text, "A     BB\nccc   d\n");
    }

    #[test]
    fn exit_codes_become_exit_statuses() {
        assert_eq!(exit_status(0), 0);
        assert_eq!(exit_status(3), 3);
        assert_eq!(exit_status(137), 137);
        assert_eq!(exit_status(256), 255);
        assert_eq!(exit_status(-1), 255);
    }
}
