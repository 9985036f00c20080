//! The client side of streaming sessions, as kubectl, crictl and kubelet's Go client
//! speak it: an HTTP/1.1 upgrade to SPDY/3.1 on the URL an Exec or PortForward RPC
//! answered with, then the session's streams. crius's CLI and the tests use it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use super::spdy::{self, Connection, Stream};
use super::{port_forward, remote_command, TerminalSize, PROTOCOL_HEADER, SPDY_UPGRADE};

/// The most an upgrade answer's head may take.
const MAX_RESPONSE_HEAD: usize = 16 * 1024;

/// Why a session could not be run.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("not a streaming URL: {0:?}")]
    Url(String),
    #[error("cannot reach the streaming server at {url}: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("the streaming server refused the session: {0}")]
    Refused(String),
    #[error("streaming session: {0}")]
    Spdy(#[from] spdy::SpdyError),
    #[error("streaming session: {0}")]
    Io(#[from] std::io::Error),
    /// What the server reported on the error stream.
    #[error("{0}")]
    Remote(String),
}

/// The local side of an exec session's stdio; `None` for a stream not asked for (the
/// Exec RPC must have asked for the same ones).
#[derive(Default)]
pub struct ExecIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Ignored with a terminal, whose output is all on stdout.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub tty: bool,
    /// Terminal size changes to pass on (with a terminal).
    pub resizes: Option<mpsc::Receiver<TerminalSize>>,
}

/// Runs the exec session at `url`; returns the command's exit code.
pub async fn exec(url: &str, io: ExecIo) -> Result<i32, ClientError> {
    let (connection, protocol) = upgrade(url, remote_command::PROTOCOLS).await?;
    let open =
        |kind: &'static str| connection.open_stream(vec![("streamtype".into(), kind.into())]);
    let error = open("error").await?;
    let stdin = match io.stdin {
        Some(source) => Some((source, open("stdin").await?)),
        None => None,
    };
    let stdout = match io.stdout {
        Some(sink) => Some((open("stdout").await?, sink)),
        None => None,
    };
    let stderr = match io.stderr.filter(|_| !io.tty) {
        Some(sink) => Some((open("stderr").await?, sink)),
        None => None,
    };
    // With a terminal the server waits for a resize stream, sizes or not (Go's client
    // always opens one).
    let resizes = if io.tty {
        Some((io.resizes, open("resize").await?))
    } else {
        None
    };
    // The user's stdin may never end: it is fed on the side and dropped at the end.
    let feeding = stdin.map(|(mut source, stream)| {
        tokio::spawn(async move {
            let mut writer = stream.into_writer();
            let _ = tokio::io::copy(&mut source, &mut writer).await;
            let _ = writer.shutdown().await;
        })
    });
    let resizing = resizes.map(|(sizes, stream)| {
        tokio::spawn(async move {
            let mut writer = stream.into_writer();
            let Some(mut sizes) = sizes else {
                return;
            };
            while let Some(size) = sizes.recv().await {
                let message = serde_json::json!({"Width": size.width, "Height": size.height});
                if writer
                    .write_all(message.to_string().as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
    });
    let copy_out = |pair: Option<(Stream, Box<dyn AsyncWrite + Send + Unpin>)>| async move {
        if let Some((stream, mut sink)) = pair {
            let mut reader = stream.into_reader();
            let _ = tokio::io::copy(&mut reader, &mut sink).await;
            let _ = sink.flush().await;
        }
    };
    let mut report = Vec::new();
    let mut error = error.into_reader();
    let (read, (), ()) = tokio::join!(
        error.read_to_end(&mut report),
        copy_out(stdout),
        copy_out(stderr),
    );
    for task in [feeding, resizing].into_iter().flatten() {
        task.abort();
    }
    connection.close().await;
    read?;
    exit_code(&protocol, &report)
}

/// Runs the attach session at `url` until the container exits or the server ends it.
/// The protocol is exec's; only the status differs (always success but for errors).
pub async fn attach(url: &str, io: ExecIo) -> Result<(), ClientError> {
    exec(url, io).await.map(drop)
}

/// The exit code an exec session's error stream reports (see [`remote_command`]).
fn exit_code(protocol: &str, report: &[u8]) -> Result<i32, ClientError> {
    let text = String::from_utf8_lossy(report).trim().to_string();
    if protocol != remote_command::PROTOCOLS[0] {
        return if text.is_empty() {
            Ok(0)
        } else {
            Err(ClientError::Remote(text))
        };
    }
    if text.is_empty() {
        return Err(ClientError::Remote(
            "the session ended without a status".to_string(),
        ));
    }
    let status: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| ClientError::Remote(format!("unreadable status {text:?}: {err}")))?;
    if status["status"] == "Success" {
        return Ok(0);
    }
    let code = (status["reason"] == "NonZeroExitCode")
        .then(|| status["details"]["causes"].as_array())
        .flatten()
        .and_then(|causes| {
            causes
                .iter()
                .find(|cause| cause["reason"] == "ExitCode")
                .and_then(|cause| cause["message"].as_str()?.parse().ok())
        });
    code.ok_or_else(|| {
        ClientError::Remote(
            status["message"]
                .as_str()
                .unwrap_or("the command failed")
                .to_string(),
        )
    })
}

/// An open port-forward session, in which each [`PortForward::connect`] is a new
/// connection to a port of the pod.
pub struct PortForward {
    connection: Connection,
    next_request: std::sync::atomic::AtomicU32,
}

/// One forwarded connection: its data stream, and its error stream, which carries the
/// server's complaint if the port could not be reached.
pub struct ForwardedConnection {
    pub data: Stream,
    pub error: Stream,
}

impl PortForward {
    /// Opens the port-forward session at `url`.
    pub async fn open(url: &str) -> Result<PortForward, ClientError> {
        let (connection, _) = upgrade(url, port_forward::PROTOCOLS).await?;
        Ok(PortForward {
            connection,
            next_request: std::sync::atomic::AtomicU32::new(0),
        })
    }

    /// A new connection to `port` on the pod's loopback.
    pub async fn connect(&self, port: u16) -> Result<ForwardedConnection, ClientError> {
        let request = self
            .next_request
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .to_string();
        let headers = |kind: &str| {
            vec![
                ("streamtype".to_string(), kind.to_string()),
                ("port".to_string(), port.to_string()),
                ("requestid".to_string(), request.clone()),
            ]
        };
        let error = self.connection.open_stream(headers("error")).await?;
        let data = self.connection.open_stream(headers("data")).await?;
        Ok(ForwardedConnection { data, error })
    }

    pub async fn close(self) {
        self.connection.close().await;
    }
}

/// Opens `url` and upgrades it to SPDY, offering `protocols`; the connection and the
/// protocol the server picked.
async fn upgrade(url: &str, protocols: &[&str]) -> Result<(Connection, String), ClientError> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let (authority, path) = rest
        .split_once('/')
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let mut connection =
        TcpStream::connect(authority)
            .await
            .map_err(|source| ClientError::Connect {
                url: url.to_string(),
                source,
            })?;
    let mut request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {authority}\r\nConnection: Upgrade\r\nUpgrade: {SPDY_UPGRADE}\r\nContent-Length: 0\r\n"
    );
    for protocol in protocols {
        request.push_str(&format!("{PROTOCOL_HEADER}: {protocol}\r\n"));
    }
    request.push_str("\r\n");
    connection.write_all(request.as_bytes()).await?;
    let head = read_response_head(&mut connection).await?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    if status_line.split(' ').nth(1) != Some("101") {
        // The body says why; it is short, and the server closes after it.
        let mut body = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            (&mut connection).take(4096).read_to_end(&mut body),
        )
        .await;
        return Err(ClientError::Refused(format!(
            "{status_line}: {}",
            String::from_utf8_lossy(&body).trim()
        )));
    }
    let protocol = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case(PROTOCOL_HEADER))
        .map(|(_, value)| value.trim().to_string())
        .ok_or_else(|| ClientError::Refused("no stream protocol was agreed".to_string()))?;
    Ok((Connection::client(connection), protocol))
}

/// The head of an HTTP response, read a byte at a time so that nothing of what follows
/// it (the SPDY session) is taken.
async fn read_response_head(connection: &mut TcpStream) -> Result<String, ClientError> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(ClientError::Refused(
                "the answer's head is too long".to_string(),
            ));
        }
        head.push(connection.read_u8().await?);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_come_from_the_v4_status() {
        let v4 = remote_command::PROTOCOLS[0];
        assert_eq!(
            exit_code(v4, br#"{"metadata":{},"status":"Success"}"#).unwrap(),
            0
        );
        let failed = br#"{"status":"Failure","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"7"}]}}"#;
        assert_eq!(exit_code(v4, failed).unwrap(), 7);
        let broken = br#"{"status":"Failure","message":"container gone","reason":"InternalError"}"#;
        assert_eq!(
            exit_code(v4, broken).unwrap_err().to_string(),
            "container gone"
        );
        assert!(exit_code(v4, b"").is_err());
        assert_eq!(exit_code("v2.channel.k8s.io", b"").unwrap(), 0);
        assert!(exit_code("v2.channel.k8s.io", b"boom").is_err());
    }
}
