//! A process's stdio, as the shim wires it for the OCI runtime and holds it while the
//! process runs: pipes (a container's output copied into its CRI log, an exec'd
//! process's written straight to its files), or a terminal ([`super::console`]); and a
//! stdin fed from the request's path ([`super::stdin`]), or `/dev/null`.
//!
//! Two steps around the runtime command: [`setup`] before it gives what the runtime runs
//! with, [`PendingIo::attach`] after it succeeded takes the terminal's master (which only
//! exists then) and starts what copies to and from it. Dropping a [`PendingIo`] instead,
//! after a failed command, undoes the set-up: its copiers end, its console socket goes.

use std::fs::File;
use std::io::PipeWriter;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::thread::JoinHandle;

use super::console::{copy_output, Console, ConsoleSocket};
use super::cri_log::{copy_stream, copy_terminal, CriLog, OpenStreams, Stream};
use super::runc::{dev_null, ProcessStdio};
use super::stdin::{open_source, StdinFeed, StdinTarget};
use super::stdio_uri;
use super::ShimError;

/// Where a process's output goes.
pub enum Output {
    /// A container's CRI log: `stdout` and `stderr` lines (only `stdout` with a
    /// terminal, which has one output stream).
    Log(Arc<CriLog>),
    /// An exec'd process's files, appended to as raw bytes (ExecSync reads them back;
    /// both may name one file); an empty path is `/dev/null`. With a terminal, all of
    /// its output goes to `stdout`.
    Files { stdout: String, stderr: String },
}

/// A running process's stdio, as the shim holds it.
pub struct ProcessIo {
    /// The master of its terminal, if it has one.
    pub console: Option<Console>,
    /// Its stdin, when the request named one.
    pub stdin: Option<StdinFeed>,
    /// The threads copying its output; joined when a container is deleted, so that no
    /// output is lost.
    pub copiers: Vec<JoinHandle<()>>,
    /// Its output streams still being copied.
    pub streams: Arc<OpenStreams>,
}

/// A process's stdio while its runtime command runs.
pub struct PendingIo {
    terminal: Option<PendingTerminal>,
    stdin: Option<StdinFeed>,
    copiers: Vec<JoinHandle<()>>,
    streams: Arc<OpenStreams>,
}

/// A terminal the runtime is creating.
struct PendingTerminal {
    socket: ConsoleSocket,
    /// The stdin source, opened already so that a bad path fails before the process
    /// exists.
    stdin: Option<File>,
    output: TerminalOutput,
}

enum TerminalOutput {
    Log(Arc<CriLog>),
    File(File),
}

/// Opens what a process with (or without) a `terminal`, its stdin read from the path
/// `stdin` (none if empty) and its output going to `output`, needs; returns the stdio to
/// run the runtime with.
pub fn setup(
    terminal: bool,
    stdin: &str,
    output: Output,
) -> Result<(ProcessStdio, PendingIo), ShimError> {
    // A container's output goes to its log, an exec's to files: only a container's
    // stdin is held open.
    let held_open = matches!(output, Output::Log(_));
    let stdin = stdio_uri::parse(stdin)?
        .path()
        .map(|path| open_source(path, held_open))
        .transpose()?;
    if terminal {
        let output = match output {
            Output::Log(log) => TerminalOutput::Log(log),
            Output::Files { stdout, .. } => TerminalOutput::File(open_output(&stdout)?),
        };
        let socket = ConsoleSocket::new()?;
        let stdio = ProcessStdio {
            stdin: Stdio::from(dev_null()?),
            stdout: Stdio::from(dev_null()?),
            stderr: Stdio::from(dev_null()?),
            console_socket: Some(socket.path().to_path_buf()),
        };
        let pending = PendingIo {
            terminal: Some(PendingTerminal {
                socket,
                stdin,
                output,
            }),
            stdin: None,
            copiers: Vec::new(),
            streams: OpenStreams::new(1),
        };
        return Ok((stdio, pending));
    }
    let (stdin, feed) = match stdin {
        Some(input) => {
            let (reader, writer) = pipe()?;
            let feed = StdinFeed::start(input, StdinTarget::Pipe(writer))?;
            (Stdio::from(reader), Some(feed))
        }
        None => (Stdio::from(dev_null()?), None),
    };
    let (stdout, stderr, copiers, streams) = match output {
        Output::Log(log) => {
            let (stdout_reader, stdout_writer) = pipe()?;
            let (stderr_reader, stderr_writer) = pipe()?;
            let streams = OpenStreams::new(2);
            let copier = |reader, stream| {
                copy_stream(reader, stream, log.clone(), streams.clone()).map_err(|source| {
                    ShimError::Io {
                        what: "start an output copier",
                        source,
                    }
                })
            };
            let copiers = vec![
                copier(File::from(stdout_reader), Stream::Stdout)?,
                copier(File::from(stderr_reader), Stream::Stderr)?,
            ];
            (
                Stdio::from(stdout_writer),
                Stdio::from(stderr_writer),
                copiers,
                streams,
            )
        }
        Output::Files { stdout, stderr } => (
            Stdio::from(open_output(&stdout)?),
            Stdio::from(open_output(&stderr)?),
            Vec::new(),
            OpenStreams::new(0),
        ),
    };
    let stdio = ProcessStdio {
        stdin,
        stdout,
        stderr,
        console_socket: None,
    };
    let pending = PendingIo {
        terminal: None,
        stdin: feed,
        copiers,
        streams,
    };
    Ok((stdio, pending))
}

impl PendingIo {
    /// Completes the set-up once the runtime command succeeded.
    pub fn attach(self) -> Result<ProcessIo, ShimError> {
        let PendingIo {
            terminal,
            stdin,
            mut copiers,
            streams,
        } = self;
        let Some(terminal) = terminal else {
            return Ok(ProcessIo {
                console: None,
                stdin,
                copiers,
                streams,
            });
        };
        let console = terminal.socket.receive()?;
        let master = console.master()?;
        let copier = match terminal.output {
            TerminalOutput::Log(log) => copy_terminal(master, log, streams.clone()),
            TerminalOutput::File(file) => copy_output(master, file, streams.clone()),
        }
        .map_err(|source| ShimError::Io {
            what: "start the terminal's output copier",
            source,
        })?;
        copiers.push(copier);
        let stdin = match terminal.stdin {
            Some(input) => Some(StdinFeed::start(
                input,
                StdinTarget::Terminal(console.master()?),
            )?),
            None => None,
        };
        Ok(ProcessIo {
            console: Some(console),
            stdin,
            copiers,
            streams,
        })
    }
}

/// An exec'd process's output file named by `uri` (a path or `file://`, see
/// [`stdio_uri`]), created and appended to; `/dev/null` if empty.
fn open_output(uri: &str) -> Result<File, ShimError> {
    let Some(path) = stdio_uri::parse(uri)?.path().map(Path::to_path_buf) else {
        return dev_null();
    };
    File::options()
        .append(true)
        .create(true)
        .open(path)
        .map_err(|source| ShimError::Io {
            what: "open the exec's output file",
            source,
        })
}

fn pipe() -> Result<(OwnedFd, PipeWriter), ShimError> {
    let (reader, writer) = std::io::pipe().map_err(|source| ShimError::Io {
        what: "create a pipe",
        source,
    })?;
    Ok((OwnedFd::from(reader), writer))
}
