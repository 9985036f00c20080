//! Exec and attach sessions, Kubernetes' "remote command" protocol over SPDY, as
//! kubelet's streaming server serves it (`k8s.io/kubelet/pkg/cri/streaming/remotecommand`).
//!
//! The client opens one stream per part of the process's stdio it asked for, each named
//! by its `streamType` header: `error` (always), `stdin`, `stdout`, `stderr` (not with a
//! terminal, whose output is all on stdout) and, with a terminal from protocol v3 on,
//! `resize`, a sequence of JSON `{"Width":…,"Height":…}` objects. The server waits for
//! all of them (30 s at most), runs the work, then reports on the error stream: from v4
//! a JSON `metav1.Status` (`Success`, or `Failure` with reason `NonZeroExitCode` and the
//! exit code as a cause), before v4 an error's text and nothing on success. Then it
//! ends the streams and the connection.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::spdy::Stream;
use super::{
    AttachSession, Backend, BackendError, ExecSession, ProcessStreams, SessionStdio, SpdySession,
    TerminalSize,
};

/// The protocols spoken, most preferred first (the client's order decides).
pub const PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

/// The protocol whose error stream carries a JSON status.
const STATUS_PROTOCOL: &str = "v4.channel.k8s.io";

/// How long the client has to open its streams (kubelet's default).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// Resize events that may wait for the backend before the client is slowed down.
const RESIZE_BACKLOG: usize = 16;

/// The parts of the process's stdio a session has asked for.
#[derive(Debug, Clone, Copy)]
struct Wanted {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

impl Wanted {
    fn new(protocol: &str, stdio: SessionStdio) -> Wanted {
        let resizes_supported = matches!(protocol, "v4.channel.k8s.io" | "v3.channel.k8s.io");
        Wanted {
            stdin: stdio.stdin,
            stdout: stdio.stdout,
            stderr: stdio.stderr && !stdio.tty,
            resize: stdio.tty && resizes_supported,
        }
    }
}

/// The streams a client opened for a session.
#[derive(Default)]
struct SessionStreams {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl SessionStreams {
    fn complete(&self, wanted: Wanted) -> bool {
        self.error.is_some()
            && self.stdin.is_some() == wanted.stdin
            && self.stdout.is_some() == wanted.stdout
            && self.stderr.is_some() == wanted.stderr
            && self.resize.is_some() == wanted.resize
    }
}

/// Serves an exec session: runs the command with the client's streams as its stdio.
pub async fn serve_exec<B: Backend>(
    session: SpdySession,
    protocol: &str,
    request: ExecSession,
    backend: &B,
) {
    let wanted = Wanted::new(protocol, request.stdio);
    let command = request.cmd.clone();
    serve(session, protocol, wanted, |streams| async move {
        backend
            .run_exec(request, streams)
            .await
            .map(|code| (code != 0).then_some(code))
    })
    .await;
    tracing::debug!(?command, "exec session ended");
}

/// Serves an attach session: joins the client's streams to the container's stdio.
pub async fn serve_attach<B: Backend>(
    session: SpdySession,
    protocol: &str,
    request: AttachSession,
    backend: &B,
) {
    let wanted = Wanted::new(protocol, request.stdio);
    let connection = session.connection.clone();
    serve(session, protocol, wanted, |streams| async move {
        // An attach lasts as long as its container: a client that leaves ends it (an
        // exec instead runs to its end, its output going nowhere).
        tokio::select! {
            attached = backend.run_attach(request, streams) => attached.map(|()| None),
            () = connection.closed() => Ok(None),
        }
    })
    .await;
}

/// The session's course: streams, work (`Some(code)`: a non-zero exit), status, end.
async fn serve<F, W>(mut session: SpdySession, protocol: &str, wanted: Wanted, work: W)
where
    W: FnOnce(ProcessStreams) -> F,
    F: std::future::Future<Output = Result<Option<i32>, BackendError>>,
{
    let streams = match collect_streams(&mut session, wanted).await {
        Ok(streams) => streams,
        Err(why) => {
            tracing::info!("streaming session abandoned: {why}");
            session.connection.close().await;
            return;
        }
    };
    let SessionStreams {
        error,
        stdin,
        stdout,
        stderr,
        resize,
    } = streams;
    let resizes = resize.map(|stream| {
        let (sender, receiver) = mpsc::channel(RESIZE_BACKLOG);
        tokio::spawn(forward_resizes(stream, sender));
        receiver
    });
    let process_streams = ProcessStreams {
        stdin: stdin.map(|stream| Box::new(stream.into_reader()) as _),
        stdout: stdout.map(|stream| Box::new(stream.into_writer()) as _),
        stderr: stderr.map(|stream| Box::new(stream.into_writer()) as _),
        resizes,
    };
    let outcome = work(process_streams).await;
    if let Some(error) = error {
        let mut writer = error.into_writer();
        if let Some(report) = status_report(protocol, &outcome) {
            let _ = writer.write_all(report.as_bytes()).await;
        }
        let _ = writer.shutdown().await;
    }
    if let Err(err) = &outcome {
        tracing::info!("streaming session failed: {err}");
    }
    session.connection.close().await;
}

/// Waits until the client has opened every stream `wanted` names, and the error stream.
async fn collect_streams(
    session: &mut SpdySession,
    wanted: Wanted,
) -> Result<SessionStreams, String> {
    let mut streams = SessionStreams::default();
    let deadline = tokio::time::Instant::now() + STREAM_CREATION_TIMEOUT;
    while !streams.complete(wanted) {
        let stream = match tokio::time::timeout_at(deadline, session.streams.recv()).await {
            Ok(Some(stream)) => stream,
            Ok(None) => return Err("the client closed the connection early".to_string()),
            Err(_) => {
                return Err(format!(
                    "the client did not open its streams within {STREAM_CREATION_TIMEOUT:?}"
                ))
            }
        };
        let kind = stream.header("streamtype").unwrap_or("").to_string();
        let slot = match kind.as_str() {
            "error" => &mut streams.error,
            "stdin" if wanted.stdin => &mut streams.stdin,
            "stdout" if wanted.stdout => &mut streams.stdout,
            "stderr" if wanted.stderr => &mut streams.stderr,
            "resize" if wanted.resize => &mut streams.resize,
            _ => {
                stream.reset();
                return Err(format!("unexpected stream type {kind:?}"));
            }
        };
        if slot.is_some() {
            stream.reset();
            return Err(format!("a second {kind} stream"));
        }
        *slot = Some(stream);
    }
    Ok(streams)
}

/// Passes the terminal sizes the client sends on its resize stream on to `sizes`.
async fn forward_resizes(stream: Stream, sizes: mpsc::Sender<TerminalSize>) {
    let mut reader = stream.into_reader();
    let mut pending = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        match reader.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(read) => pending.extend_from_slice(&chunk[..read]),
        }
        let mut decoded = serde_json::Deserializer::from_slice(&pending).into_iter();
        let mut consumed = 0;
        loop {
            match decoded.next() {
                Some(Ok(size)) => {
                    consumed = decoded.byte_offset();
                    if sizes.send(size).await.is_err() {
                        return;
                    }
                }
                // An object cut off by the end of the chunk: wait for the rest.
                Some(Err(err)) if err.is_eof() => break,
                Some(Err(err)) => {
                    tracing::info!("streaming session: bad resize message: {err}");
                    return;
                }
                None => break,
            }
        }
        pending.drain(..consumed);
    }
}

/// What goes on the error stream once the work is done; `None`: nothing.
fn status_report(protocol: &str, outcome: &Result<Option<i32>, BackendError>) -> Option<String> {
    if protocol != STATUS_PROTOCOL {
        return match outcome {
            Ok(None) => None,
            Ok(Some(code)) => Some(format!(
                "command terminated with non-zero exit code: exit status {code}"
            )),
            Err(err) => Some(err.to_string()),
        };
    }
    let status = match outcome {
        Ok(None) => serde_json::json!({"metadata": {}, "status": "Success"}),
        Ok(Some(code)) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: exit status {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(err) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": err.to_string(),
            "reason": "InternalError",
            "details": {"causes": [{"message": err.to_string()}]},
            "code": 500,
        }),
    };
    Some(status.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_streams_wanted_follow_the_request_and_the_protocol() {
        let stdio = |stdin, stdout, stderr, tty| SessionStdio {
            tty,
            stdin,
            stdout,
            stderr,
        };
        let tty = Wanted::new("v4.channel.k8s.io", stdio(true, true, true, true));
        assert!(tty.stdin && tty.stdout && !tty.stderr && tty.resize);
        let old = Wanted::new("v2.channel.k8s.io", stdio(false, true, true, true));
        assert!(!old.stdin && old.stdout && !old.stderr && !old.resize);
        let plain = Wanted::new("v4.channel.k8s.io", stdio(false, true, true, false));
        assert!(plain.stdout && plain.stderr && !plain.resize);
    }

    #[test]
    fn v4_reports_a_json_status_with_the_exit_code() {
        assert_eq!(
            status_report(STATUS_PROTOCOL, &Ok(None)).unwrap(),
            r#"{"metadata":{},"status":"Success"}"#
        );
        let failed: serde_json::Value =
            serde_json::from_str(&status_report(STATUS_PROTOCOL, &Ok(Some(7))).unwrap()).unwrap();
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "7");
        let broken: serde_json::Value = serde_json::from_str(
            &status_report(STATUS_PROTOCOL, &Err("no such container".into())).unwrap(),
        )
        .unwrap();
        assert_eq!(broken["status"], "Failure");
        assert_eq!(broken["message"], "no such container");
    }

    #[test]
    fn older_protocols_report_errors_as_text_and_success_as_nothing() {
        assert_eq!(status_report("v3.channel.k8s.io", &Ok(None)), None);
        assert!(status_report("v3.channel.k8s.io", &Ok(Some(2)))
            .unwrap()
            .contains("exit status 2"));
    }
}
