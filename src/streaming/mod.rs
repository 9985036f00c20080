//! The CRI streaming server. The Exec, Attach and PortForward RPCs do not carry their
//! sessions themselves: each answers with a one-time URL on this HTTP server, which the
//! caller (kubelet, proxying `kubectl exec`; crictl; `crius exec -it`) then opens and
//! upgrades to SPDY/3.1, the protocol kubelet and the Go clients speak. The sessions'
//! protocols on top of SPDY are Kubernetes' own:
//!
//! - [`remote_command`]: exec and attach (`v4.channel.k8s.io` down to `channel.k8s.io`):
//!   one SPDY stream each for the error/status, stdin, stdout, stderr and terminal
//!   resizes;
//! - [`port_forward`]: `portforward.k8s.io`, a data and an error stream per connection
//!   to a port of the pod.
//!
//! A URL holds a random token that stands for the request its RPC validated; it works
//! once, and only for a minute, as kubelet's own streaming server does. The work itself
//! (running the process, reaching the pod's port) is the [`Backend`]'s: criusd's CRI
//! implementation.
//!
//! [`client`] is the other end, for crius's CLI and the tests.

pub mod client;
pub mod port_forward;
pub mod remote_command;
pub mod spdy;

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};

/// How long a URL an RPC answered with stays valid (kubelet's streaming server: 1 min).
const REQUEST_TTL: Duration = Duration::from_secs(60);

/// At most this many URLs wait to be opened; the oldest give way (kubelet keeps 1000).
const MAX_PENDING: usize = 1000;

/// The `Upgrade` protocol the sessions speak.
const SPDY_UPGRADE: &str = "SPDY/3.1";

/// The header a client offers its session protocols in, and the server names its pick.
const PROTOCOL_HEADER: &str = "X-Stream-Protocol-Version";

/// The header a refusal lists the protocols the server speaks in.
const ACCEPTED_PROTOCOLS_HEADER: &str = "X-Accepted-Stream-Protocol-Versions";

/// Why the streaming server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("cannot listen for streaming sessions on {address}: {source}")]
    Listen {
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot read /dev/urandom for a streaming token: {0}")]
    Token(std::io::Error),
}

/// What a backend failure says to the client, on the session's error stream.
pub type BackendError = Box<dyn std::error::Error + Send + Sync>;

/// A validated streaming request, waiting for its URL to be opened.
#[derive(Debug, Clone)]
pub enum StreamRequest {
    Exec(ExecSession),
    Attach(AttachSession),
    PortForward(PortForwardSession),
}

/// An attach session's request: which of the container's stdio streams it joins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttachSession {
    pub container_id: String,
    pub stdio: SessionStdio,
}

/// Which stdio streams a session carries, and whether with a terminal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SessionStdio {
    pub tty: bool,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
}

/// An exec session's request: the command and its stdio.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecSession {
    pub container_id: String,
    pub cmd: Vec<String>,
    pub stdio: SessionStdio,
}

/// A port-forward session's request: the pod whose ports it reaches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortForwardSession {
    pub pod_sandbox_id: String,
}

impl StreamRequest {
    /// The URL path segment of its kind.
    fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec(_) => "exec",
            StreamRequest::Attach(_) => "attach",
            StreamRequest::PortForward(_) => "portforward",
        }
    }
}

/// A terminal's size, as a client's resize stream sends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TerminalSize {
    pub width: u16,
    pub height: u16,
}

/// The client's side of a process's stdio for one session: what the backend reads the
/// process's stdin from and writes its output to, and the terminal size changes. `None`
/// where the request did not ask for the stream.
pub struct ProcessStreams {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    /// Always `None` with a terminal: its output is all on stdout.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub resizes: Option<tokio::sync::mpsc::Receiver<TerminalSize>>,
}

/// What runs the sessions' work: criusd's CRI implementation.
pub trait Backend: Send + Sync + 'static {
    /// Runs `request.cmd` in its container with `streams` as its stdio, until it exits
    /// and its output has been passed on; returns its exit code.
    fn run_exec(
        &self,
        request: ExecSession,
        streams: ProcessStreams,
    ) -> impl Future<Output = Result<i32, BackendError>> + Send;

    /// Joins `streams` to the running container's own stdio until the container exits
    /// or the client goes: what it prints from now on, and its stdin.
    fn run_attach(
        &self,
        request: AttachSession,
        streams: ProcessStreams,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// A connection to `port` on the loopback of pod `pod_sandbox_id`'s network.
    fn connect_to_pod(
        &self,
        pod_sandbox_id: &str,
        port: u16,
    ) -> impl Future<Output = Result<TcpStream, BackendError>> + Send;
}

/// The requests waiting for their URLs to be opened, by token.
pub struct PendingRequests {
    base_url: String,
    pending: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl PendingRequests {
    fn new(address: SocketAddr) -> PendingRequests {
        PendingRequests {
            base_url: format!("http://{address}"),
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// Keeps `request` for its session and returns the URL that opens it.
    pub fn url_for(&self, request: StreamRequest) -> Result<String, StreamingError> {
        let token = random_token()?;
        let url = format!("{}/{}/{token}", self.base_url, request.kind());
        let mut pending = self.lock();
        let now = Instant::now();
        pending.retain(|_, (_, created)| now.duration_since(*created) < REQUEST_TTL);
        if pending.len() >= MAX_PENDING {
            let oldest = pending
                .iter()
                .min_by_key(|(_, (_, created))| *created)
                .map(|(token, _)| token.clone());
            if let Some(oldest) = oldest {
                pending.remove(&oldest);
            }
        }
        pending.insert(token, (request, now));
        Ok(url)
    }

    /// The request behind `token` of kind `kind`, which it uses up; `None` when there is
    /// none, it has expired, or it is of another kind.
    fn take(&self, kind: &str, token: &str) -> Option<StreamRequest> {
        let mut pending = self.lock();
        let (request, created) = pending.remove(token)?;
        (created.elapsed() < REQUEST_TTL && request.kind() == kind).then_some(request)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (StreamRequest, Instant)>> {
        self.pending
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// 16 random bytes, URL-safe: a token nobody can guess.
fn random_token() -> Result<String, StreamingError> {
    use base64::Engine;
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut random| random.read_exact(&mut bytes))
        .map_err(StreamingError::Token)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The streaming server: its listener and the requests waiting for it.
pub struct StreamingServer {
    listener: TcpListener,
    requests: Arc<PendingRequests>,
}

impl StreamingServer {
    /// Listens on `address` (port 0: a free one).
    pub async fn bind(address: SocketAddr) -> Result<StreamingServer, StreamingError> {
        let listen_error = |source| StreamingError::Listen { address, source };
        let listener = TcpListener::bind(address).await.map_err(listen_error)?;
        let bound = listener.local_addr().map_err(listen_error)?;
        Ok(StreamingServer {
            listener,
            requests: Arc::new(PendingRequests::new(bound)),
        })
    }

    /// Where the RPCs leave their requests and get their URLs.
    pub fn requests(&self) -> Arc<PendingRequests> {
        self.requests.clone()
    }

    /// Serves sessions with `backend` until the task is dropped.
    pub async fn serve<B: Backend>(self, backend: Arc<B>) {
        loop {
            let (connection, peer) = match self.listener.accept().await {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of descriptors or the like: later connections may do better.
                    tracing::warn!("streaming server: cannot accept a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let requests = self.requests.clone();
            let backend = backend.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |request| {
                    let response = route(request, &requests, &backend);
                    async move { Ok::<_, Infallible>(response) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(connection), service)
                    .with_upgrades()
                    .await;
                if let Err(err) = served {
                    tracing::debug!(%peer, "streaming connection ended: {err}");
                }
            });
        }
    }
}

/// Answers one HTTP request: the upgrade of a pending request's session, or an error.
fn route<B: Backend>(
    request: Request<Incoming>,
    requests: &PendingRequests,
    backend: &Arc<B>,
) -> Response<Full<Bytes>> {
    let mut segments = request.uri().path().trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (segments.next().unwrap_or(""), segments.next().unwrap_or(""));
    let Some(stream_request) = requests.take(kind, token) else {
        return plain(
            StatusCode::NOT_FOUND,
            "no such streaming session: its URL is used up, expired or wrong",
        );
    };
    let upgrading = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.eq_ignore_ascii_case(SPDY_UPGRADE));
    if !upgrading {
        return plain(
            StatusCode::BAD_REQUEST,
            "streaming sessions need Connection: Upgrade and Upgrade: SPDY/3.1",
        );
    }
    let offered: Vec<&str> = request
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(',').map(str::trim))
        .collect();
    let supported: &[&str] = match stream_request {
        StreamRequest::PortForward(_) => port_forward::PROTOCOLS,
        _ => remote_command::PROTOCOLS,
    };
    let Some(protocol) = offered
        .iter()
        .find(|offer| supported.contains(offer))
        .map(|offer| offer.to_string())
    else {
        let mut refused = plain(
            StatusCode::FORBIDDEN,
            &format!(
                "no common stream protocol: the client offers {offered:?}, crius speaks {supported:?}"
            ),
        );
        for protocol in supported {
            refused.headers_mut().append(
                ACCEPTED_PROTOCOLS_HEADER,
                HeaderValue::from_static(protocol),
            );
        }
        return refused;
    };
    let backend = backend.clone();
    let negotiated = protocol.clone();
    tokio::spawn(async move {
        let upgraded = match hyper::upgrade::on(request).await {
            Ok(upgraded) => upgraded,
            Err(err) => {
                tracing::debug!("streaming session upgrade failed: {err}");
                return;
            }
        };
        let (connection, streams) = spdy::Connection::server(TokioIo::new(upgraded));
        let session = SpdySession {
            connection,
            streams,
        };
        match stream_request {
            StreamRequest::Exec(request) => {
                remote_command::serve_exec(session, &negotiated, request, backend.as_ref()).await
            }
            StreamRequest::Attach(request) => {
                remote_command::serve_attach(session, &negotiated, request, backend.as_ref()).await
            }
            StreamRequest::PortForward(request) => {
                port_forward::serve(session, request, backend).await
            }
        }
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(SPDY_UPGRADE));
    if let Ok(value) = HeaderValue::from_str(&protocol) {
        headers.insert(PROTOCOL_HEADER, value);
    }
    response
}

/// An upgraded session: the SPDY connection and the streams its client opens.
pub struct SpdySession {
    pub connection: spdy::Connection,
    pub streams: tokio::sync::mpsc::Receiver<spdy::Stream>,
}

fn plain(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(format!("{message}\n"))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exec(container: &str) -> StreamRequest {
        StreamRequest::Exec(ExecSession {
            container_id: container.to_string(),
            ..ExecSession::default()
        })
    }

    #[test]
    fn a_url_opens_its_request_once_and_only_for_its_kind() {
        let requests = PendingRequests::new(SocketAddr::from(([127, 0, 0, 1], 4242)));
        let url = requests.url_for(exec("c1")).unwrap();
        let token = url.strip_prefix("http://127.0.0.1:4242/exec/").unwrap();
        assert_eq!(token.len(), 22, "{url}");
        assert!(requests.take("portforward", token).is_none());
        // A wrong kind uses the token up as well: nobody gets to try again.
        assert!(requests.take("exec", token).is_none());
        let url = requests.url_for(exec("c2")).unwrap();
        let token = url.rsplit('/').next().unwrap();
        match requests.take("exec", token) {
            Some(StreamRequest::Exec(request)) => assert_eq!(request.container_id, "c2"),
            other => panic!("{other:?}"),
        }
        assert!(requests.take("exec", token).is_none());
    }

    #[test]
    fn pending_requests_are_bounded() {
        let requests = PendingRequests::new(SocketAddr::from(([127, 0, 0, 1], 1)));
        let first = requests.url_for(exec("first")).unwrap();
        for n in 0..MAX_PENDING {
            requests.url_for(exec(&n.to_string())).unwrap();
        }
        assert_eq!(requests.lock().len(), MAX_PENDING);
        let token = first.rsplit('/').next().unwrap();
        assert!(
            requests.take("exec", token).is_none(),
            "the oldest gave way"
        );
    }
}
