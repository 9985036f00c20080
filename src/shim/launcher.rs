//! Running a shim v2 binary the way containerd does, whichever shim it is
//! (containerd-shim-runc-v2, crius-shim): containerd's side of the start protocol.
//!
//! What containerd 1.6/1.7 does (`runtime/v2/binary.go` `Start`/`Delete`,
//! `runtime/v2/shim/util.go` `Command`, the runtime v2 README), and so this module:
//! - argv `-namespace NS -address ADDR -publish-binary BIN -id ID [shim flags] start`
//!   (`… -id ID -bundle DIR delete` for a dead shim), Go flag syntax;
//! - working directory: the shim's: for containerd's shims the bundle holding
//!   `config.json`, whose annotations (`io.kubernetes.cri.sandbox-id`) group a pod's
//!   containers into one shim;
//! - environment: `TTRPC_ADDRESS` (where shims publish events), `GRPC_ADDRESS` (1.7),
//!   `NAMESPACE` (1.7), `MAX_SHIM_VERSION=2` (1.7; 2.0 sends 2 too), `GOMAXPROCS=2`;
//! - stdin: the runtime options `Any`, protobuf-encoded, when there are any
//!   (containerd-shim-runc-v2 reads it whole, for `shim_cgroup`); otherwise nothing;
//! - a `log` FIFO in the working directory, made and opened for reading *before* the
//!   shim starts: containerd's shims open it for writing at start-up and block until it
//!   has a reader (runtime/v2 `openShimLog`; the shim's `openLog`). [`ShimLog`] drains it
//!   into criusd's log until the shim is gone.
//! - stdout of `start`: the address, bare (Task API v2) or containerd 2.0's JSON
//!   `{"version":2|3,"address":…,"protocol":"ttrpc"}`; stdout of `delete`: a
//!   protobuf DeleteResponse.
//!
//! The answer is kept in the working directory as `bootstrap.json` (containerd 2.0 keeps
//! the same file), so that a restarted criusd reconnects with the right Task API version.
//! Not done: containerd 2.2's bootstrap protocol (BootstrapParams on stdin), and gRPC
//! shims.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use serde::{Deserialize, Serialize};

use super::events::ttrpc_address;
use super::task_api::{TaskApi, TaskApiVersion};
use super::ShimError;

pub const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";
pub const GRPC_ADDRESS_ENV: &str = "GRPC_ADDRESS";
pub const NAMESPACE_ENV: &str = "NAMESPACE";
pub const MAX_SHIM_VERSION_ENV: &str = "MAX_SHIM_VERSION";

/// The file in a shim's working directory that keeps its start answer.
pub const BOOTSTRAP_FILE: &str = "bootstrap.json";

/// The FIFO in a shim's working directory that the shim writes its log to.
pub const LOG_FIFO: &str = "log";

/// How often the log drain checks that a shim that never wrote is still there.
const LOG_LIVENESS_CHECK: Duration = Duration::from_secs(10);

/// One shim to run: what containerd passes every shim, and this shim's own flags.
#[derive(Debug, Clone)]
pub struct ShimCommand {
    /// The shim v2 binary.
    pub binary: PathBuf,
    /// The task the shim is started for (a container; for crius's pod shims, the pod).
    pub id: String,
    /// The shim's working directory (see the module header); must exist.
    pub work_dir: PathBuf,
    /// Flags of this shim alone, given before the action.
    pub extra_args: Vec<OsString>,
    /// Runtime options (e.g. containerd-shim-runc-v2's `containerd.runc.v1.Options`):
    /// written to `start`'s stdin and sent with every Create.
    pub options: Option<Any>,
}

/// Where a shim serves, as its `start` answered (containerd 2.0's BootstrapParams).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bootstrap {
    pub version: i64,
    pub address: String,
    pub protocol: String,
}

impl Bootstrap {
    /// Reads `start`'s stdout: JSON with a version of 2 or more, else a bare address
    /// (containerd's `parseStartResponse`).
    pub fn parse(output: &str) -> Result<Bootstrap, ShimError> {
        let output = output.trim();
        let bootstrap = match serde_json::from_str::<Bootstrap>(output) {
            Ok(bootstrap) if bootstrap.version >= 2 => bootstrap,
            _ => Bootstrap {
                version: 2,
                address: output.to_string(),
                protocol: "ttrpc".to_string(),
            },
        };
        if bootstrap.address.is_empty() {
            return Err(ShimError::FailedPrecondition(
                "the shim's start printed no address".into(),
            ));
        }
        if !bootstrap.protocol.eq_ignore_ascii_case("ttrpc") {
            return Err(ShimError::InvalidArgument(format!(
                "the shim serves {}: only ttrpc is supported",
                bootstrap.protocol
            )));
        }
        bootstrap.api_version()?;
        Ok(bootstrap)
    }

    pub fn api_version(&self) -> Result<TaskApiVersion, ShimError> {
        TaskApiVersion::from_bootstrap(self.version).ok_or_else(|| {
            ShimError::InvalidArgument(format!(
                "the shim speaks Task API version {}: only 2 and 3 are supported",
                self.version
            ))
        })
    }

    /// Connects a Task API client, sending `namespace` with every request.
    pub fn connect(&self, namespace: &str) -> Result<TaskApi, ShimError> {
        let address = ttrpc_address(&self.address);
        let client = ttrpc::Client::connect(&address).map_err(|source| ShimError::Rpc {
            socket: address.clone(),
            source,
        })?;
        Ok(TaskApi::new(client, self.api_version()?, namespace))
    }

    /// Keeps the answer in `dir` (write to a temporary file, then rename).
    pub fn save(&self, dir: &Path) -> Result<(), ShimError> {
        let io = |source| ShimError::Io {
            what: "save the shim's bootstrap",
            source,
        };
        let json = serde_json::to_vec(self).map_err(|err| io(err.into()))?;
        let temporary = dir.join(format!(".{BOOTSTRAP_FILE}"));
        std::fs::write(&temporary, json).map_err(io)?;
        std::fs::rename(&temporary, dir.join(BOOTSTRAP_FILE)).map_err(io)
    }

    /// The answer kept in `dir`; none if there is none.
    pub fn load(dir: &Path) -> Result<Option<Bootstrap>, ShimError> {
        match std::fs::read(dir.join(BOOTSTRAP_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|err| {
                ShimError::InvalidArgument(format!("{}: {err}", dir.join(BOOTSTRAP_FILE).display()))
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ShimError::Io {
                what: "read the shim's bootstrap",
                source,
            }),
        }
    }
}

/// containerd's side of the protocol: what every shim it starts is told.
#[derive(Debug, Clone)]
pub struct Launcher {
    /// containerd's namespace of the tasks.
    pub namespace: String,
    /// The ttrpc address shims publish events to, a bare socket path as containerd
    /// gives its own; also `-address`.
    pub address: String,
    /// `-publish-binary`: containerd passes itself.
    pub publish_binary: PathBuf,
}

impl Launcher {
    /// Runs `command`'s `start` and returns its answer and the drain of its log, which
    /// the caller starts once it knows the shim's pid.
    pub fn start(&self, command: &ShimCommand) -> Result<(Bootstrap, ShimLog), ShimError> {
        let log = ShimLog::open(&command.work_dir)?;
        let mut process = self.command(command, "start");
        let stdin = match &command.options {
            Some(options) => Some(options.write_to_bytes().map_err(|err| {
                ShimError::InvalidArgument(format!("cannot encode the shim options: {err}"))
            })?),
            None => None,
        };
        process.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let output = self.run(process, stdin.as_deref(), "start", command)?;
        let bootstrap = Bootstrap::parse(&String::from_utf8_lossy(&output))?;
        bootstrap.save(&command.work_dir)?;
        Ok((bootstrap, log))
    }

    /// Runs `command`'s `delete` for `bundle`, after its shim died: the shim cleans up
    /// what the task left and reports its exit.
    pub fn delete(
        &self,
        command: &ShimCommand,
        bundle: &Path,
    ) -> Result<DeleteResponse, ShimError> {
        let bundle_flag = [OsString::from("-bundle"), bundle.into()];
        let mut process = self.command_with(command, &bundle_flag, "delete");
        process.stdin(Stdio::null());
        let output = self.run(process, None, "delete", command)?;
        DeleteResponse::parse_from_bytes(&output).map_err(|err| {
            ShimError::FailedPrecondition(format!(
                "{} delete answered no DeleteResponse: {err}",
                command.binary.display()
            ))
        })
    }

    fn command(&self, command: &ShimCommand, action: &str) -> Command {
        self.command_with(command, &[], action)
    }

    /// The shim's command line for `action`, with `flags` after the shim's own: all
    /// before the action, where Go's flag parsing stops.
    fn command_with(&self, command: &ShimCommand, flags: &[OsString], action: &str) -> Command {
        let mut process = Command::new(&command.binary);
        process
            .arg("-namespace")
            .arg(&self.namespace)
            .arg("-address")
            .arg(&self.address)
            .arg("-publish-binary")
            .arg(&self.publish_binary)
            .arg("-id")
            .arg(&command.id)
            .args(&command.extra_args)
            .args(flags)
            .arg(action)
            .current_dir(&command.work_dir)
            .envs(self.environment());
        process
    }

    fn environment(&self) -> [(&'static str, String); 5] {
        [
            (TTRPC_ADDRESS_ENV, self.address.clone()),
            (GRPC_ADDRESS_ENV, self.address.clone()),
            (NAMESPACE_ENV, self.namespace.clone()),
            (MAX_SHIM_VERSION_ENV, "2".to_string()),
            // Go shims: fewer threads and stacks (containerd sets it too).
            ("GOMAXPROCS", "2".to_string()),
        ]
    }

    /// Runs a shim action to its end, feeding it `stdin`; its stdout if it succeeded.
    fn run(
        &self,
        mut process: Command,
        stdin: Option<&[u8]>,
        action: &str,
        command: &ShimCommand,
    ) -> Result<Vec<u8>, ShimError> {
        let mut child = process
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ShimError::Io {
                what: "run the shim binary",
                source,
            })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Small (a few hundred bytes): fits the pipe, even if the shim never reads it.
            let _ = pipe.write_all(bytes);
        }
        let output = child.wait_with_output().map_err(|source| ShimError::Io {
            what: "wait for the shim binary",
            source,
        })?;
        if !output.status.success() {
            return Err(ShimError::FailedPrecondition(format!(
                "{} {action} for {} failed ({}): {}",
                command.binary.display(),
                command.id,
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        Ok(output.stdout)
    }
}

/// The read end of a shim's `log` FIFO.
pub struct ShimLog {
    fifo: File,
}

impl ShimLog {
    /// Makes the FIFO in `dir` if missing and opens it for reading without blocking, so
    /// that the shim's open for writing does not block either.
    pub fn open(dir: &Path) -> Result<ShimLog, ShimError> {
        use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
        let path = dir.join(LOG_FIFO);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_fifo() => {}
            Ok(_) => {
                return Err(ShimError::FailedPrecondition(format!(
                    "{} is not a FIFO",
                    path.display()
                )))
            }
            Err(_) => nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o700))
                .map_err(|source| ShimError::Sys {
                what: "make the shim's log FIFO",
                source,
            })?,
        }
        let fifo = File::options()
            .read(true)
            .custom_flags(nix::libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| ShimError::Io {
                what: "open the shim's log FIFO",
                source,
            })?;
        Ok(ShimLog { fifo })
    }

    /// Copies the shim's log lines into criusd's log, on a thread of its own, until the
    /// shim closes the FIFO or (when `pid` is known) is gone without ever opening it.
    pub fn drain(self, shim: &str, pid: Option<u32>) {
        let shim = shim.to_string();
        let spawned = std::thread::Builder::new()
            .name("shim-log".into())
            .spawn(move || self.copy_lines(&shim, pid));
        if let Err(err) = spawned {
            tracing::warn!("cannot read the shim's log: {err}");
        }
    }

    fn copy_lines(mut self, shim: &str, pid: Option<u32>) {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let timeout = PollTimeout::try_from(LOG_LIVENESS_CHECK).unwrap_or(PollTimeout::MAX);
        let mut pending = Vec::new();
        loop {
            let mut fds = [PollFd::new(self.fifo.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    if pid.is_some_and(|pid| !process_running(pid)) {
                        break;
                    }
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            let events = fds[0].revents().unwrap_or(PollFlags::empty());
            let mut buffer = [0u8; 4096];
            let closed = loop {
                match self.fifo.read(&mut buffer) {
                    Ok(0) => break true,
                    Ok(read) => pending.extend_from_slice(&buffer[..read]),
                    Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break false,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break true,
                }
            };
            while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                log_line(shim, &String::from_utf8_lossy(&line));
            }
            if closed || events.contains(PollFlags::POLLHUP) {
                break;
            }
        }
        if !pending.is_empty() {
            log_line(shim, &String::from_utf8_lossy(&pending));
        }
    }
}

/// Whether process `pid` still runs (a zombie holds no file any more).
fn process_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z") | Some("X"))
    })
}

/// One line of a shim's log, at a level its text suggests (containerd's shims log
/// logrus text: `level=info msg=…`).
fn log_line(shim: &str, line: &str) {
    let line = line.trim_end();
    if line.is_empty() {
        return;
    }
    let level = line
        .split_whitespace()
        .find_map(|field| field.strip_prefix("level="))
        .unwrap_or("info");
    match level {
        "error" | "fatal" | "panic" | "warning" | "warn" => {
            tracing::warn!(%shim, "shim: {line}")
        }
        _ => tracing::debug!(%shim, "shim: {line}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_answers_bare_and_json() {
        let bare = Bootstrap::parse("unix:///run/containerd/s/abc\n").unwrap();
        assert_eq!(bare.address, "unix:///run/containerd/s/abc");
        assert_eq!(bare.api_version().unwrap(), TaskApiVersion::V2);
        let json = Bootstrap::parse(r#"{"version":3,"address":"unix:///s/x","protocol":"ttrpc"}"#)
            .unwrap();
        assert_eq!(json.api_version().unwrap(), TaskApiVersion::V3);
        assert_eq!(json.address, "unix:///s/x");
        assert!(Bootstrap::parse(r#"{"version":2,"address":"/s","protocol":"grpc"}"#).is_err());
        assert!(Bootstrap::parse(r#"{"version":4,"address":"/s","protocol":"ttrpc"}"#).is_err());
        assert!(Bootstrap::parse("  ").is_err());
    }

    #[test]
    fn the_bootstrap_is_kept_in_the_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Bootstrap::load(dir.path()).unwrap(), None);
        let bootstrap = Bootstrap::parse("unix:///s/a").unwrap();
        bootstrap.save(dir.path()).unwrap();
        assert_eq!(Bootstrap::load(dir.path()).unwrap(), Some(bootstrap));
    }

    #[test]
    fn the_argv_is_containerds() {
        let launcher = Launcher {
            namespace: "ns".into(),
            address: "/run/e.sock".into(),
            publish_binary: "/usr/bin/criusd".into(),
        };
        let command = ShimCommand {
            binary: "/usr/bin/containerd-shim-runc-v2".into(),
            id: "c1".into(),
            work_dir: "/b".into(),
            extra_args: vec!["-debug".into()],
            options: None,
        };
        let process = launcher.command(&command, "start");
        let args: Vec<_> = process.get_args().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "-namespace",
                "ns",
                "-address",
                "/run/e.sock",
                "-publish-binary",
                "/usr/bin/criusd",
                "-id",
                "c1",
                "-debug",
                "start"
            ]
        );
        assert_eq!(process.get_current_dir(), Some(Path::new("/b")));
        let env: Vec<_> = process
            .get_envs()
            .map(|(k, v)| format!("{}={}", k.to_str().unwrap(), v.unwrap().to_str().unwrap()))
            .collect();
        assert!(env.contains(&"TTRPC_ADDRESS=/run/e.sock".to_string()));
        assert!(env.contains(&"NAMESPACE=ns".to_string()));
        assert!(env.contains(&"MAX_SHIM_VERSION=2".to_string()));
    }
}
