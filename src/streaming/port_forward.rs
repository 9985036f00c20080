//! Port-forward sessions, Kubernetes' `portforward.k8s.io` protocol over SPDY, as
//! kubelet's streaming server serves it (`k8s.io/kubelet/pkg/cri/streaming/portforward`).
//!
//! For each connection it forwards, the client opens two streams with the same
//! `requestID` and `port` headers: `streamType: error` and `streamType: data`. The data
//! stream is joined to a new TCP connection to that port on the loopback of the pod's
//! network namespace; what goes wrong is written to the error stream as text. One
//! session carries any number of such pairs, until the client closes it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::spdy::Stream;
use super::{Backend, PortForwardSession, SpdySession};

/// The protocols spoken.
pub const PROTOCOLS: &[&str] = &["portforward.k8s.io"];

/// How long one direction of a forwarded connection may go on after the other ended.
const HALF_CLOSED_GRACE: Duration = Duration::from_secs(1);

/// The two streams of one forwarded connection, as they arrive.
#[derive(Default)]
struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
}

/// Serves a port-forward session for the pod of `request` until the client closes it.
pub async fn serve<B: Backend>(
    mut session: SpdySession,
    request: PortForwardSession,
    backend: Arc<B>,
) {
    let pod = request.pod_sandbox_id;
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    while let Some(stream) = session.streams.recv().await {
        let request_id = stream.header("requestid").unwrap_or("").to_string();
        let pair = pairs.entry(request_id.clone()).or_default();
        let slot = match stream.header("streamtype") {
            Some("error") => &mut pair.error,
            Some("data") => &mut pair.data,
            other => {
                tracing::info!("port-forward session: unexpected stream type {other:?}");
                stream.reset();
                continue;
            }
        };
        if slot.replace(stream).is_some() {
            tracing::info!("port-forward session: request {request_id:?} opened a stream twice");
        }
        if pair.error.is_some() && pair.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
            }) = pairs.remove(&request_id)
            {
                tokio::spawn(forward(pod.clone(), error, data, backend.clone()));
            }
        }
    }
    session.connection.close().await;
}

/// Joins `data` to a connection to the port it names in pod `pod`; failures go to `error`.
async fn forward<B: Backend>(pod: String, error: Stream, data: Stream, backend: Arc<B>) {
    let port = data.header("port").unwrap_or("").to_string();
    let mut error_writer = error.into_writer();
    let connected = match port.parse::<u16>() {
        Ok(number) if number > 0 => backend
            .connect_to_pod(&pod, number)
            .await
            .map_err(|err| format!("error forwarding port {port} to pod {pod}: {err}")),
        _ => Err(format!("invalid port {port:?}: not a port number")),
    };
    match connected {
        Ok(connection) => {
            let (from_pod, to_pod) = connection.into_split();
            let (from_client, to_client) = data.split();
            let upstream = copy_then_close(from_client, to_pod);
            let downstream = copy_then_close(from_pod, to_client);
            tokio::pin!(upstream, downstream);
            // Once one direction ends, the other gets a moment to finish (a server that
            // answers and closes; a client done sending), then both go, as containerd
            // forwards: a client that never closes its side must not hold the stream.
            tokio::select! {
                () = &mut upstream => {
                    let _ = tokio::time::timeout(HALF_CLOSED_GRACE, downstream).await;
                }
                () = &mut downstream => {
                    let _ = tokio::time::timeout(HALF_CLOSED_GRACE, upstream).await;
                }
            }
        }
        Err(message) => {
            tracing::info!("{message}");
            let _ = error_writer.write_all(message.as_bytes()).await;
            data.reset();
        }
    }
    let _ = error_writer.shutdown().await;
}

/// Copies `from` into `to` until `from` ends or either fails, then ends `to` as well.
async fn copy_then_close(mut from: impl AsyncRead + Unpin, mut to: impl AsyncWrite + Unpin) {
    let _ = tokio::io::copy(&mut from, &mut to).await;
    let _ = to.shutdown().await;
}
