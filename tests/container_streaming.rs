//! Exec and PortForward sessions through the CRI and the streaming server, as kubelet
//! and crictl drive them: the RPC answers with a one-time URL, the client upgrades it to
//! SPDY and runs the session (crius's own client, `crius::streaming::client`; critest
//! runs Go's against the same server). Exec: output on stdout and stderr, stdin to the
//! end, exit codes, a terminal and its size; PortForward: an HTTP request to a server
//! listening only on the pod's loopback. Bad requests and used-up URLs are refused.
//! Once per runtime handler; the harness asserts that nothing is left.

mod common;

use std::time::Duration;

use common::pods::*;
use common::registry::Registry;
use crius::cri::api::*;
use crius::cri::client::CriClient;
use crius::streaming::client::{self, ClientError, ExecIo, PortForward};
use crius::streaming::TerminalSize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::Code;

on_each_handler!(
    exec_sessions_carry_stdio_exit_codes_and_terminals,
    attach_sessions_join_the_containers_own_stdio,
    port_forward_reaches_the_pods_loopback
);

/// Output of one stream of a session, collected in memory.
fn sink() -> (
    Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
    tokio::io::DuplexStream,
) {
    let (writer, reader) = tokio::io::duplex(1 << 20);
    (Box::new(writer), reader)
}

async fn read_all(mut reader: tokio::io::DuplexStream) -> String {
    let mut text = String::new();
    reader.read_to_string(&mut text).await.unwrap();
    text
}

async fn exec_url(client: &mut CriClient, request: ExecRequest) -> String {
    client.runtime.exec(request).await.unwrap().into_inner().url
}

fn request(container: &str, cmd: &[&str]) -> ExecRequest {
    ExecRequest {
        container_id: container.to_string(),
        cmd: cmd.iter().map(|arg| arg.to_string()).collect(),
        stdout: true,
        stderr: true,
        ..ExecRequest::default()
    }
}

async fn exec_sessions_carry_stdio_exit_codes_and_terminals(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("streams", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    let id = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("c", &image, &["sleep", "3600"]),
    )
    .await;

    // stdout and stderr apart, and the exit code.
    let url = exec_url(
        &mut client,
        request(&id, &["sh", "-c", "echo out; echo err >&2; exit 7"]),
    )
    .await;
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let ((stdout, out), (stderr, err)) = (sink(), sink());
    let code = client::exec(
        &url,
        ExecIo {
            stdout: Some(stdout),
            stderr: Some(stderr),
            ..ExecIo::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(code, 7);
    assert_eq!(read_all(out).await, "out\n");
    assert_eq!(read_all(err).await, "err\n");

    // A URL works once.
    let again = client::exec(&url, ExecIo::default()).await.unwrap_err();
    assert!(matches!(again, ClientError::Refused(_)), "{again}");
    assert!(again.to_string().contains("404"), "{again}");

    // stdin to its end, and more output than a pipe holds.
    let mut with_stdin = request(&id, &["sh", "-c", "cat; seq 1 20000"]);
    with_stdin.stdin = true;
    let url = exec_url(&mut client, with_stdin).await;
    let (mut typing, stdin) = tokio::io::duplex(1024);
    let (stdout, out) = sink();
    let (stderr, _err) = sink();
    let session = tokio::spawn(async move {
        let io = ExecIo {
            stdin: Some(Box::new(stdin)),
            stdout: Some(stdout),
            stderr: Some(stderr),
            ..ExecIo::default()
        };
        client::exec(&url, io).await
    });
    typing.write_all(b"typed line\n").await.unwrap();
    drop(typing);
    assert_eq!(session.await.unwrap().unwrap(), 0);
    let output = read_all(out).await;
    assert!(
        output.starts_with("typed line\n1\n2\n"),
        "{:?}",
        &output[..40.min(output.len())]
    );
    assert!(
        output.ends_with("\n19999\n20000\n"),
        "{} bytes",
        output.len()
    );

    // A terminal: one output stream, and the size the client sets.
    let mut tty = request(&id, &["sh", "-c", "sleep 0.5; [ -t 1 ] && stty size"]);
    (tty.tty, tty.stderr, tty.stdin) = (true, false, true);
    let url = exec_url(&mut client, tty).await;
    let (sizes, resizes) = tokio::sync::mpsc::channel(1);
    sizes
        .send(TerminalSize {
            width: 101,
            height: 42,
        })
        .await
        .unwrap();
    let (_typing, stdin) = tokio::io::duplex(64);
    let (stdout, out) = sink();
    let code = client::exec(
        &url,
        ExecIo {
            stdin: Some(Box::new(stdin)),
            stdout: Some(stdout),
            tty: true,
            resizes: Some(resizes),
            ..ExecIo::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(code, 0);
    assert_eq!(read_all(out).await.trim(), "42 101");

    // Bad requests never get a URL.
    let mut neither = request(&id, &["true"]);
    (neither.stdout, neither.stderr) = (false, false);
    let refused = client.runtime.exec(neither).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let mut tty_and_stderr = request(&id, &["true"]);
    tty_and_stderr.tty = true;
    let refused = client.runtime.exec(tty_and_stderr).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert!(
        refused.message().contains("stderr"),
        "{}",
        refused.message()
    );
    let refused = client
        .runtime
        .exec(request("no-such", &["true"]))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let refused = client.runtime.exec(request(&id, &[])).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    remove_pod(&mut client, &pod).await;
}

/// Reads `reader` until what was read ends with `ending`; all of it.
async fn read_until(reader: &mut tokio::io::DuplexStream, ending: &str) -> String {
    let mut text = Vec::new();
    let mut chunk = [0u8; 256];
    while !text.ends_with(ending.as_bytes()) {
        let read = tokio::time::timeout(Duration::from_secs(20), reader.read(&mut chunk))
            .await
            .unwrap_or_else(|_| panic!("no {ending:?} in {:?}", String::from_utf8_lossy(&text)))
            .unwrap();
        assert_ne!(
            read,
            0,
            "ended before {ending:?}: {:?}",
            String::from_utf8_lossy(&text)
        );
        text.extend_from_slice(&chunk[..read]);
    }
    String::from_utf8(text).unwrap()
}

async fn attach_url(client: &mut CriClient, container: &str, stdin: bool) -> String {
    let request = AttachRequest {
        container_id: container.to_string(),
        stdin,
        stdout: true,
        stderr: true,
        tty: false,
    };
    client
        .runtime
        .attach(request)
        .await
        .unwrap()
        .into_inner()
        .url
}

/// One attach session typing `input`, its output read until it ends with `ending`; the
/// session goes on in the returned task, its stdin open while `typing` is, its stdout
/// and stderr readable from the returned ends.
struct Attached {
    session: tokio::task::JoinHandle<Result<(), ClientError>>,
    typing: tokio::io::DuplexStream,
    out: tokio::io::DuplexStream,
    err: tokio::io::DuplexStream,
    seen: String,
}

async fn attach_and_type(
    client: &mut CriClient,
    container: &str,
    input: &str,
    ending: &str,
) -> Attached {
    let url = attach_url(client, container, true).await;
    let (mut typing, stdin) = tokio::io::duplex(1024);
    let ((stdout, mut out), (stderr, err)) = (sink(), sink());
    let session = tokio::spawn(async move {
        let io = ExecIo {
            stdin: Some(Box::new(stdin)),
            stdout: Some(stdout),
            stderr: Some(stderr),
            ..ExecIo::default()
        };
        client::attach(&url, io).await
    });
    // The session follows output from when it starts: type once it surely has.
    tokio::time::sleep(Duration::from_millis(300)).await;
    typing.write_all(input.as_bytes()).await.unwrap();
    let seen = read_until(&mut out, ending).await;
    Attached {
        session,
        typing,
        out,
        err,
        seen,
    }
}

async fn attach_sessions_join_the_containers_own_stdio(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("attached", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;

    // stdin without stdin_once: it stays open across sessions.
    let mut shell = container_config("shell", &image, &["sh"]);
    shell.stdin = true;
    let shell = run_in_pod(&mut client, &pod, &config, shell).await;
    let mut first = attach_and_type(&mut client, &shell, "echo one; echo two >&2\n", "one\n").await;
    assert_eq!(first.seen, "one\n");
    // Output arrives as printed, not line by line: a prompt shows before its newline.
    first
        .typing
        .write_all(b"printf 'no newline yet'\n")
        .await
        .unwrap();
    assert_eq!(
        read_until(&mut first.out, "no newline yet").await,
        "no newline yet"
    );
    assert_eq!(read_until(&mut first.err, "two\n").await, "two\n");
    drop(first.typing);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status(&mut client, &shell).await.state,
        ContainerState::ContainerRunning as i32,
        "the first session's stdin ending must not end the container's"
    );
    first.session.abort();
    let second = attach_and_type(&mut client, &shell, "echo three; exit 3\n", "three\n").await;
    assert_eq!(second.seen, "three\n", "only what comes after the attach");
    second.session.await.unwrap().unwrap();
    assert_eq!(wait_exited(&mut client, &shell).await.exit_code, 3);

    // stdin_once: the first session's stdin ending closes the container's.
    let mut once = container_config("once", &image, &["sh"]);
    (once.stdin, once.stdin_once) = (true, true);
    let once = run_in_pod(&mut client, &pod, &config, once).await;
    let once_attached = attach_and_type(&mut client, &once, "echo hello\n", "hello\n").await;
    assert_eq!(once_attached.seen, "hello\n");
    drop(once_attached.typing);
    tokio::time::timeout(Duration::from_secs(20), once_attached.session)
        .await
        .expect("the session ends with the container")
        .unwrap()
        .unwrap();
    assert_eq!(wait_exited(&mut client, &once).await.exit_code, 0);

    // No stdin to attach to, and nothing to attach to once exited.
    let plain = run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("plain", &image, &["sleep", "60"]),
    )
    .await;
    let refused = client
        .runtime
        .attach(AttachRequest {
            container_id: plain.clone(),
            stdin: true,
            stdout: true,
            ..AttachRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(refused.message().contains("stdin"), "{}", refused.message());
    let refused = client
        .runtime
        .attach(AttachRequest {
            container_id: once.clone(),
            stdout: true,
            ..AttachRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    remove_pod(&mut client, &pod).await;
}

async fn port_forward_reaches_the_pods_loopback(handler: &str) {
    let registry = Registry::start();
    let (_daemon, mut client, image) = daemon_with_busybox(&registry).await;
    let logs = tempfile::tempdir().unwrap();
    let config = pod_config("forwarded", logs.path());
    let pod = run_pod_on(&mut client, &config, handler).await;
    // Listening on the pod's loopback only: nothing but a port forward reaches it.
    let server = [
        "sh",
        "-c",
        "mkdir -p /www && echo forwarded > /www/index.html && exec httpd -f -p 127.0.0.1:8080 -h /www",
    ];
    run_in_pod(
        &mut client,
        &pod,
        &config,
        container_config("web", &image, &server),
    )
    .await;
    let url = client
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: pod.clone(),
            port: vec![8080],
        })
        .await
        .unwrap()
        .into_inner()
        .url;
    let session = PortForward::open(&url).await.unwrap();
    // The server may still be starting: a refused connection is retried.
    let mut attempts = 0;
    let answer = loop {
        let forwarded = session.connect(8080).await.unwrap();
        let (mut data_in, mut data_out) = forwarded.data.split();
        data_out
            .write_all(b"GET /index.html HTTP/1.0\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        let _ = data_in.read_to_string(&mut answer).await;
        let mut complaint = String::new();
        let _ = forwarded
            .error
            .into_reader()
            .read_to_string(&mut complaint)
            .await;
        if !answer.is_empty() {
            assert_eq!(complaint, "");
            break answer;
        }
        attempts += 1;
        assert!(attempts < 50, "no answer through the forward: {complaint}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("forwarded\n"), "{answer}");

    // A port nothing listens on: the error stream says so.
    let forwarded = session.connect(8081).await.unwrap();
    let mut complaint = String::new();
    forwarded
        .error
        .into_reader()
        .read_to_string(&mut complaint)
        .await
        .unwrap();
    assert!(complaint.contains("8081"), "{complaint}");
    session.close().await;

    let refused = client
        .runtime
        .port_forward(PortForwardRequest {
            pod_sandbox_id: "no-such-pod".into(),
            port: vec![8080],
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    remove_pod(&mut client, &pod).await;
}
