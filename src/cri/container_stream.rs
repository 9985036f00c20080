//! Exec, Attach and PortForward: the RPCs check the request and answer with a one-time
//! URL on the streaming server ([`crate::streaming`]); the session opened there then
//! comes back here, as the streaming [`Backend`], to run the process or reach the port.
//!
//! A streamed exec is an exec of the pod's shim like ExecSync's, with FIFOs in the
//! shim's directory as its stdin and output files: criusd opens their read ends before
//! the exec starts (so the shim's opening of the write ends never waits) and the stdin
//! FIFO's write end once it has started (the shim then holds its read end), and copies
//! between them and the session's streams. The session's stdin ending closes the
//! process's stdin; the process's exit, once its output has drained, ends the session.
//!
//! An attach joins the container's own stdio: its stdin FIFO (which the shim holds open
//! across sessions, and closes when the first session's stdin ends for `stdin_once`)
//! and its output, raw and as it comes, from the shim's attach socket (see
//! `crate::shim::cri_log`), until the output ends or the client goes. A shim without one
//! (started by an older crius) is followed through the container's CRI log instead,
//! line by line.

use std::future::Future;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;

use super::api::{
    AttachRequest, AttachResponse, ExecRequest, ExecResponse, PortForwardRequest,
    PortForwardResponse,
};
use super::container_exec::exec_process;
use super::pod_shims::blocking;
use super::sandbox_run::io_error;
use super::{new_id, Cri, CriError};
use crate::shim::cri_log::{LogTail, Stream};
use crate::shim::manager::{ExecOutputFiles, Shim, TaskIo};
use crate::store::ContainerRecord;
use crate::streaming::{
    AttachSession, Backend, BackendError, ExecSession, PortForwardSession, ProcessStreams,
    SessionStdio, StreamRequest, TerminalSize,
};

/// How often an attach session looks for new output and for the container's exit.
const ATTACH_POLL_INTERVAL: Duration = Duration::from_millis(50);

/// How long output may still drain from an exited process's FIFOs (held open by
/// something it left running) before the session ends without the rest.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The stdio streams a session request asks for: ExecRequest and AttachRequest carry the
/// same four fields.
macro_rules! requested_stdio {
    ($request:expr) => {
        SessionStdio {
            tty: $request.tty,
            stdin: $request.stdin,
            stdout: $request.stdout,
            stderr: $request.stderr,
        }
    };
}

impl Cri {
    pub(super) fn exec(&self, request: &ExecRequest) -> Result<ExecResponse, CriError> {
        let container = self.running_container(&request.container_id, "exec in it")?;
        tracing::Span::current().record("id", container.id.as_str());
        if request.cmd.is_empty() {
            return Err(CriError::invalid("cmd", "is empty"));
        }
        let stdio = requested_stdio!(request);
        check_streams(stdio)?;
        let url = self.stream_url(StreamRequest::Exec(ExecSession {
            container_id: container.id,
            cmd: request.cmd.clone(),
            stdio,
        }))?;
        Ok(ExecResponse { url })
    }

    pub(super) fn attach(&self, request: &AttachRequest) -> Result<AttachResponse, CriError> {
        let container = self.running_container(&request.container_id, "attach to it")?;
        tracing::Span::current().record("id", container.id.as_str());
        let stdio = requested_stdio!(request);
        check_streams(stdio)?;
        if request.stdin && !container.stdin {
            return Err(CriError::FailedPrecondition(format!(
                "container {} was created without stdin: there is none to attach to",
                container.id
            )));
        }
        let url = self.stream_url(StreamRequest::Attach(AttachSession {
            container_id: container.id,
            stdio,
        }))?;
        Ok(AttachResponse { url })
    }

    pub(super) fn port_forward(
        &self,
        request: &PortForwardRequest,
    ) -> Result<PortForwardResponse, CriError> {
        let sandbox = self.sandbox(&request.pod_sandbox_id)?;
        tracing::Span::current().record("id", sandbox.id.as_str());
        if !sandbox.can_create_containers() {
            return Err(CriError::FailedPrecondition(format!(
                "pod sandbox {} is not ready: cannot forward ports to it",
                sandbox.id
            )));
        }
        if let Some(port) = request
            .port
            .iter()
            .find(|port| !(1..=65535).contains(*port))
        {
            return Err(CriError::invalid(
                "port",
                format!("{port} is not a port number"),
            ));
        }
        let url = self.stream_url(StreamRequest::PortForward(PortForwardSession {
            pod_sandbox_id: sandbox.id,
        }))?;
        Ok(PortForwardResponse { url })
    }

    /// The record of container `id` (a unique prefix works) if it runs; else why it
    /// cannot `what`.
    fn running_container(&self, id: &str, what: &str) -> Result<ContainerRecord, CriError> {
        let container = self.container(id)?;
        if !container.is_running() {
            return Err(CriError::FailedPrecondition(format!(
                "container {} is not running: cannot {what}",
                container.id
            )));
        }
        Ok(container)
    }

    fn stream_url(&self, request: StreamRequest) -> Result<String, CriError> {
        self.streaming
            .url_for(request)
            .map_err(|err| CriError::Internal {
                what: "preparing a streaming session",
                reason: err.to_string(),
            })
    }

    /// Runs a streamed exec to its end; its exit code.
    async fn run_streamed_exec(
        &self,
        request: ExecSession,
        streams: ProcessStreams,
    ) -> Result<i32, CriError> {
        let record = self.running_container(&request.container_id, "exec in it")?;
        let container = record.id;
        let process = exec_process(
            &self.bundle_dir(&container),
            &request.cmd,
            request.stdio.tty,
        )?;
        let shim = self.shims.get(&record.sandbox_id)?;
        let exec_id = new_id()?[..32].to_string();
        let ProcessStreams {
            stdin,
            stdout,
            stderr,
            resizes,
        } = streams;
        let fifos = shim.exec_fifos(
            &exec_id,
            stdin.is_some(),
            stdout.is_some(),
            stderr.is_some(),
        )?;
        let open_output = |path: &Option<std::path::PathBuf>| {
            path.as_ref()
                .map(|path| {
                    pipe::OpenOptions::new()
                        .open_receiver(path)
                        .map_err(|err| io_error("open", path, err))
                })
                .transpose()
        };
        let (stdout_fifo, stderr_fifo) = (open_output(&fifos.stdout)?, open_output(&fifos.stderr)?);
        let io = TaskIo {
            terminal: request.stdio.tty,
            stdin: fifos.stdin.clone(),
        };
        let files = ExecOutputFiles {
            stdout: fifos.stdout.clone(),
            stderr: fifos.stderr.clone(),
        };
        let started = {
            let (shim, container, exec_id) = (shim.clone(), container.clone(), exec_id.clone());
            blocking(move || {
                shim.exec(&container, &exec_id, &process, &io, &files)?;
                let started = shim.start_process(&container, &exec_id);
                if started.is_err() {
                    let _ = shim.delete_process(&container, &exec_id);
                }
                started
            })
            .await
        };
        started?;
        let feeding = match (stdin, &fifos.stdin) {
            (Some(stdin), Some(path)) => {
                let fifo = pipe::OpenOptions::new()
                    .open_sender(path)
                    .map_err(|err| io_error("open", path, err));
                match fifo {
                    Ok(fifo) => Some(tokio::spawn(copy_then_close(stdin, fifo))),
                    Err(err) => {
                        tracing::warn!("streamed exec {exec_id}: no stdin: {err}");
                        None
                    }
                }
            }
            _ => None,
        };
        let resizing = resizes.map(|sizes| pass_resizes(sizes, &shim, &container, &exec_id));
        let output = tokio::spawn(async move {
            tokio::join!(
                copy_output(stdout_fifo, stdout),
                copy_output(stderr_fifo, stderr)
            );
        });
        let exit = {
            let (shim, container, exec_id) = (shim.clone(), container.clone(), exec_id.clone());
            blocking(move || shim.wait_process(&container, &exec_id, None)).await
        };
        let _ = tokio::time::timeout(OUTPUT_DRAIN_TIMEOUT, output).await;
        for task in [feeding, resizing].into_iter().flatten() {
            task.abort();
        }
        let deleted = blocking(move || shim.delete_process(&container, &exec_id)).await;
        drop(fifos);
        let exit = exit?.ok_or_else(|| CriError::Internal {
            what: "waiting for a streamed exec",
            reason: "the shim answered without an exit".to_string(),
        })?;
        deleted?;
        Ok(exit.code)
    }
}

impl Cri {
    /// Runs an attach session to its end (see the module header).
    async fn run_attach_session(
        &self,
        request: AttachSession,
        streams: ProcessStreams,
    ) -> Result<(), CriError> {
        let container = self.running_container(&request.container_id, "attach to it")?;
        let shim = self.shims.get(&container.sandbox_id)?;
        let ProcessStreams {
            stdin,
            mut stdout,
            mut stderr,
            resizes,
        } = streams;
        let resizing = resizes.map(|sizes| pass_resizes(sizes, &shim, &container.id, ""));
        let feeding = match stdin.filter(|_| container.stdin) {
            Some(stdin) => {
                let path = self.bundle_dir(&container.id).join("stdin");
                let fifo = pipe::OpenOptions::new()
                    .open_sender(&path)
                    .map_err(|err| io_error("open", &path, err))?;
                let (shim, id, once) = (shim.clone(), container.id.clone(), container.stdin_once);
                Some(tokio::spawn(async move {
                    copy_then_close(stdin, fifo).await;
                    if once {
                        let _ = blocking(move || shim.close_stdin(&id, "")).await;
                    }
                }))
            }
            None => None,
        };
        let outputs = AttachOutputs {
            stdout: stdout.as_mut(),
            stderr: stderr.as_mut(),
            tty: container.tty,
        };
        let socket = self.shims.attach_socket(&container.sandbox_id);
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(connection) => follow_attached_output(connection, &container.id, outputs).await,
            // A shim without attach (another shim v2 binary): output from the log.
            Err(_) => self.follow_log_output(&container, outputs).await?,
        }
        for sink in [stdout.as_mut(), stderr.as_mut()].into_iter().flatten() {
            let _ = sink.shutdown().await;
        }
        if let Some(resizing) = resizing {
            resizing.abort();
        }
        // Left to finish on its own: the client's stdin ending (with the session) closes
        // a `stdin_once` container's stdin.
        drop(feeding);
        Ok(())
    }
}

/// Where an attach session's output goes: with a terminal, all of it to stdout.
struct AttachOutputs<'a> {
    stdout: Option<&'a mut Box<dyn AsyncWrite + Send + Unpin>>,
    stderr: Option<&'a mut Box<dyn AsyncWrite + Send + Unpin>>,
    tty: bool,
}

impl AttachOutputs<'_> {
    /// Writes output of `stream`; an error means the client has gone.
    async fn write(&mut self, stream: Stream, data: &[u8]) -> std::io::Result<()> {
        let sink = match (stream, self.tty) {
            (Stream::Stdout, _) | (Stream::Stderr, true) => self.stdout.as_mut(),
            (Stream::Stderr, false) => self.stderr.as_mut(),
        };
        if let Some(sink) = sink {
            sink.write_all(data).await?;
            sink.flush().await?;
        }
        Ok(())
    }
}

/// Passes the output the shim hands out on `connection` for container `id` (see
/// `crate::shim::cri_log`: raw, as it comes) on, until it ends or the client goes.
async fn follow_attached_output(
    mut connection: tokio::net::UnixStream,
    id: &str,
    mut outputs: AttachOutputs<'_>,
) {
    use tokio::io::AsyncReadExt;
    if connection
        .write_all(format!("{id}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut header = [0u8; 5];
    let mut data = Vec::new();
    while connection.read_exact(&mut header).await.is_ok() {
        let stream = match header[0] {
            crate::shim::cri_log::ATTACH_STDERR => Stream::Stderr,
            _ => Stream::Stdout,
        };
        let length = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        data.resize(length, 0);
        if connection.read_exact(&mut data).await.is_err()
            || outputs.write(stream, &data).await.is_err()
        {
            return;
        }
    }
}

impl Cri {
    /// Passes container's output on from its CRI log, record by record (lines whole),
    /// until it exits or the client goes.
    async fn follow_log_output(
        &self,
        container: &crate::store::ContainerRecord,
        mut outputs: AttachOutputs<'_>,
    ) -> Result<(), CriError> {
        let log_path = std::path::PathBuf::from(&container.log_path);
        let mut log = LogTail::from_end(&log_path);
        loop {
            // The exit is recorded once the output is in the log: read after seeing it,
            // the log holds all of it.
            let running = self
                .container(&container.id)
                .is_ok_and(|record| record.is_running());
            let records = log
                .read_records()
                .map_err(|err| io_error("read", &log_path, err))?;
            for mut record in records {
                if !record.partial {
                    record.content.push(b'\n');
                }
                if outputs.write(record.stream, &record.content).await.is_err() {
                    return Ok(());
                }
            }
            if !running {
                return Ok(());
            }
            tokio::time::sleep(ATTACH_POLL_INTERVAL).await;
        }
    }
}

/// Passes terminal sizes on to the terminal of container `id`'s init, or of its exec
/// `exec_id` when not empty, until the session stops sending them.
fn pass_resizes(
    mut sizes: tokio::sync::mpsc::Receiver<TerminalSize>,
    shim: &std::sync::Arc<Shim>,
    id: &str,
    exec_id: &str,
) -> tokio::task::JoinHandle<()> {
    let (shim, id, exec_id) = (shim.clone(), id.to_string(), exec_id.to_string());
    tokio::spawn(async move {
        while let Some(size) = sizes.recv().await {
            let (shim, id, exec_id) = (shim.clone(), id.clone(), exec_id.clone());
            let _ = blocking(move || {
                shim.resize_pty(&id, &exec_id, size.width.into(), size.height.into())
            })
            .await;
        }
    })
}

/// kubelet's rules for a session's streams: at least one, and no stderr with a terminal
/// (whose output is all one stream).
fn check_streams(stdio: SessionStdio) -> Result<(), CriError> {
    if !(stdio.stdin || stdio.stdout || stdio.stderr) {
        return Err(CriError::invalid(
            "stdin",
            "one of stdin, stdout and stderr must be set",
        ));
    }
    if stdio.tty && stdio.stderr {
        return Err(CriError::invalid(
            "stderr",
            "cannot be set with tty: a terminal's output is all on stdout",
        ));
    }
    Ok(())
}

/// Copies `from` into `to` until `from` ends, then closes `to`.
async fn copy_then_close(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}

/// Copies an exec's output FIFO to its session stream, when both are there.
async fn copy_output(
    fifo: Option<pipe::Receiver>,
    stream: Option<Box<dyn AsyncWrite + Send + Unpin>>,
) {
    if let (Some(fifo), Some(stream)) = (fifo, stream) {
        copy_then_close(fifo, stream).await;
    }
}

impl Backend for Cri {
    async fn run_exec(
        &self,
        request: ExecSession,
        streams: ProcessStreams,
    ) -> Result<i32, BackendError> {
        Ok(self.run_streamed_exec(request, streams).await?)
    }

    async fn run_attach(
        &self,
        request: AttachSession,
        streams: ProcessStreams,
    ) -> Result<(), BackendError> {
        Ok(self.run_attach_session(request, streams).await?)
    }

    fn connect_to_pod(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<tokio::net::TcpStream, BackendError>> + Send {
        let sandbox = self.sandbox(pod_sandbox_id);
        let network = self.network.clone();
        async move {
            let sandbox = sandbox?;
            let connection = blocking(move || {
                if sandbox.host_network {
                    crate::network::connect_to_loopback(port)
                } else {
                    network.connect_in_pod(&sandbox.id, port)
                }
            })
            .await?;
            connection.set_nonblocking(true)?;
            Ok(tokio::net::TcpStream::from_std(connection)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_needs_a_stream_and_no_stderr_with_a_terminal() {
        let stdio = |stdin, stdout, stderr, tty| SessionStdio {
            tty,
            stdin,
            stdout,
            stderr,
        };
        assert!(check_streams(stdio(false, true, true, false)).is_ok());
        assert!(check_streams(stdio(true, true, false, true)).is_ok());
        let none = check_streams(stdio(false, false, false, false)).unwrap_err();
        assert!(none.to_string().contains("stdin"), "{none}");
        let both = check_streams(stdio(false, true, true, true)).unwrap_err();
        assert!(both.to_string().contains("stderr"), "{both}");
    }
}
