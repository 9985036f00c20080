//! The `runc` command line, as the shim drives it: one private `--root` per shim (never
//! the host's shared `/run/runc`), errors taken from runc's own log file.
//!
//! The runtime behind the command line is a runtime handler's [`OciRuntime`]: an OCI
//! runtime binary, or crius's own (`crius-oci`, see [`super::embedded`]), which speaks
//! the same subset of runc's command line so that both run as child processes whose
//! exits the shim's reaper collects.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc::Receiver;

use serde::{Deserialize, Serialize};

use super::reaper::{wait_for, Exit, Reaper};
use super::ShimError;

/// How [`OciRuntime::Embedded`] is written in the config and on the shim's command line.
pub const EMBEDDED_NAME: &str = "embedded";

/// The binary of [`OciRuntime::Embedded`], installed beside `crius-shim`. It is not
/// part of the shim so that the shim, one per pod, does not map libcontainer and
/// libseccomp for its whole life.
pub const EMBEDDED_BINARY: &str = "crius-oci";

/// The OCI runtime of a runtime handler. Written as a path: `"embedded"` is the built-in
/// one, anything else a binary (a path, or a name looked up in PATH).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PathBuf", into = "PathBuf")]
pub enum OciRuntime {
    /// crius's own (`crius-oci`, libcontainer): nothing to install besides crius.
    Embedded,
    /// A binary with runc's command line (runc, crun, youki).
    Binary(PathBuf),
}

impl OciRuntime {
    /// The program that runs this runtime: the binary, or for the embedded runtime
    /// `crius-oci` beside the running executable (looked up in PATH when that cannot
    /// be found out).
    pub fn program(&self) -> PathBuf {
        match self {
            OciRuntime::Embedded => std::env::current_exe()
                .ok()
                .and_then(|exe| exe.parent().map(|dir| dir.join(EMBEDDED_BINARY)))
                .unwrap_or_else(|| PathBuf::from(EMBEDDED_BINARY)),
            OciRuntime::Binary(binary) => binary.clone(),
        }
    }
}

impl From<PathBuf> for OciRuntime {
    fn from(path: PathBuf) -> OciRuntime {
        if path.as_os_str() == EMBEDDED_NAME {
            OciRuntime::Embedded
        } else {
            OciRuntime::Binary(path)
        }
    }
}

impl From<OciRuntime> for PathBuf {
    fn from(runtime: OciRuntime) -> PathBuf {
        match runtime {
            OciRuntime::Embedded => PathBuf::from(EMBEDDED_NAME),
            OciRuntime::Binary(binary) => binary,
        }
    }
}

/// An OCI runtime with the runc command line, run for one shim's containers.
pub struct Runc {
    /// The runtime's program ([`OciRuntime::program`]), found once when the shim starts.
    program: PathBuf,
    /// runc's state directory for this shim's containers.
    root: PathBuf,
}

/// Where a container's (or an exec'd process's) stdio goes while runc creates it: runc
/// passes these descriptors to the process.
pub struct ProcessStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
    /// For a process with a terminal: the socket runc sends the terminal's master to
    /// (`--console-socket`). The process's stdio is then the terminal, and the three
    /// above are runc's own.
    pub console_socket: Option<PathBuf>,
}

impl Runc {
    pub fn new(runtime: &OciRuntime, root: &Path) -> Runc {
        Runc {
            program: runtime.program(),
            root: root.to_path_buf(),
        }
    }

    /// `runc create`: sets the container up and leaves its init waiting for `start`.
    /// Returns the init's pid.
    pub fn create(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        stdio: ProcessStdio,
    ) -> Result<i32, ShimError> {
        let pid_file = bundle.join("init.pid");
        let mut command = self.command(bundle, id);
        command
            .arg("create")
            .arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&pid_file);
        console_socket(&mut command, &stdio);
        command
            .arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        self.run(reaper, command, bundle, "create")?;
        read_pid(&pid_file, "create")
    }

    /// `runc exec --detach`: starts `process` (the JSON of an OCI runtime-spec Process)
    /// in the running container `id`, with `stdio`, and returns its pid. runc exits once
    /// the process runs; the process, re-parented to the shim (the subreaper), is then
    /// the shim's child and its exit comes through the reaper. `exec_id` must be a safe
    /// file name: it names the request's files in the bundle.
    pub fn exec(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        exec_id: &str,
        process: &[u8],
        stdio: ProcessStdio,
    ) -> Result<i32, ShimError> {
        let process_file = bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = bundle.join(format!("exec-{exec_id}.pid"));
        std::fs::write(&process_file, process).map_err(|source| ShimError::Io {
            what: "write the exec's process file",
            source,
        })?;
        let mut command = self.command(bundle, id);
        command
            .arg("exec")
            .arg("--detach")
            .arg("--process")
            .arg(&process_file)
            .arg("--pid-file")
            .arg(&pid_file);
        console_socket(&mut command, &stdio);
        command
            .arg(id)
            .stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let pid = self
            .run(reaper, command, bundle, "exec")
            .and_then(|()| read_pid(&pid_file, "exec"));
        // The files only carry the request to runc and its answer back.
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        pid
    }

    /// `runc start`: lets the created container's init run its process.
    pub fn start(&self, reaper: &Reaper, id: &str, bundle: &Path) -> Result<(), ShimError> {
        let mut command = self.command(bundle, id);
        command.arg("start").arg(id);
        self.quiet(&mut command);
        self.run(reaper, command, bundle, "start")
    }

    /// `runc kill [--all] ID SIGNAL`.
    pub fn kill(
        &self,
        reaper: &Reaper,
        id: &str,
        bundle: &Path,
        signal: u32,
        all: bool,
    ) -> Result<(), ShimError> {
        let mut command = self.command(bundle, id);
        command.arg("kill");
        if all {
            command.arg("--all");
        }
        command.arg(id).arg(signal.to_string());
        self.quiet(&mut command);
        self.run(reaper, command, bundle, "kill")
    }

    /// `runc delete --force ID`: removes the container's runc state and cgroup.
    pub fn delete(&self, reaper: &Reaper, id: &str, bundle: &Path) -> Result<(), ShimError> {
        let mut command = self.command(bundle, id);
        command.arg("delete").arg("--force").arg(id);
        self.quiet(&mut command);
        self.run(reaper, command, bundle, "delete")
    }

    fn command(&self, bundle: &Path, id: &str) -> Command {
        let mut command = Command::new(&self.program);
        command
            .arg("--root")
            .arg(&self.root)
            .arg("--log")
            .arg(bundle.join(format!("runc-{id}.log")))
            .arg("--log-format")
            .arg("json");
        command
    }

    fn quiet(&self, command: &mut Command) {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
    }

    /// Spawns `command` and waits for it through the reaper (the shim reaps every
    /// child, so `Child::wait` would race it); a non-zero exit is an error carrying the
    /// last message of runc's log.
    fn run(
        &self,
        reaper: &Reaper,
        mut command: Command,
        bundle: &Path,
        name: &'static str,
    ) -> Result<(), ShimError> {
        let exits: Receiver<Exit> = reaper.subscribe();
        let child = command.spawn().map_err(|source| ShimError::Io {
            what: "run the OCI runtime",
            source,
        })?;
        let pid = child.id() as i32;
        // Dropping the handle neither kills nor waits for the process.
        drop(child);
        let exit = wait_for(&exits, pid).ok_or(ShimError::ReaperGone)?;
        if exit.status == 0 {
            return Ok(());
        }
        Err(ShimError::Runtime {
            command: name,
            message: last_log_message(bundle)
                .unwrap_or_else(|| format!("exited with status {}", exit.status)),
        })
    }
}

/// `--console-socket PATH` when `stdio` has a terminal.
fn console_socket(command: &mut Command, stdio: &ProcessStdio) {
    if let Some(socket) = &stdio.console_socket {
        command.arg("--console-socket").arg(socket);
    }
}

/// The pid runc wrote to `pid_file` after `command`.
fn read_pid(pid_file: &Path, command: &'static str) -> Result<i32, ShimError> {
    let pid = std::fs::read_to_string(pid_file).map_err(|source| ShimError::Io {
        what: "read runc's pid file",
        source,
    })?;
    pid.trim().parse().map_err(|_| ShimError::Runtime {
        command,
        message: format!("pid file holds {pid:?}"),
    })
}

/// The last `msg` in runc's JSON log of this bundle.
fn last_log_message(bundle: &Path) -> Option<String> {
    let entries = std::fs::read_dir(bundle).ok()?;
    let mut last = None;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("runc-") && name.ends_with(".log")) {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).ok()?;
        for line in text.lines().rev() {
            let record: serde_json::Value = match serde_json::from_str(line) {
                Ok(record) => record,
                Err(_) => continue,
            };
            if record["level"] == "error" {
                last = record["msg"].as_str().map(str::to_string);
                break;
            }
        }
    }
    last
}

/// `/dev/null`, for stdio a container does not use.
pub fn dev_null() -> Result<File, ShimError> {
    File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|source| ShimError::Io {
            what: "open /dev/null",
            source,
        })
}
