//! Start-up and shutdown of `criusd`.
//!
//! Order of start-up: state directories → the root lock (one criusd per root) → the unix
//! socket (a stale one is replaced, a live one is never stolen) → serve until the shutdown
//! future resolves. Shutdown stops accepting, lets in-flight RPCs finish, removes the
//! socket (and the shims' events socket) and releases the lock; it never touches
//! containers, whose shims outlive criusd.

use std::fs::{File, OpenOptions, Permissions};
use std::future::Future;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;
use crate::cri::service::CriService;
use crate::cri::Cri;
use crate::streaming::StreamingServer;

/// Name of the lock file inside `root`; it holds the pid of the criusd that owns the root.
pub const LOCK_FILE: &str = "criusd.lock";

/// How long in-flight RPCs may run on after a shutdown signal.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot create {what} directory {path}: {source}")]
    CreateDir {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open lock file {path}: {source}")]
    LockFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another criusd (pid {pid}) already uses root {root}: stop it, or give this one another `root`")]
    AlreadyRunning { root: PathBuf, pid: String },
    #[error("cannot lock {path}: {source}")]
    Lock { path: PathBuf, source: Errno },
    #[error("socket {path} is in use by another process: refusing to take it over")]
    SocketInUse { path: PathBuf },
    #[error("{path} exists and is not a socket: refusing to remove it")]
    NotASocket { path: PathBuf },
    #[error("cannot listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open crius's state: {0}")]
    State(#[from] crate::cri::CriError),
    #[error("gRPC server on {path} failed: {source}")]
    Serve {
        path: PathBuf,
        source: tonic::transport::Error,
    },
    #[error(transparent)]
    Streaming(#[from] crate::streaming::StreamingError),
}

/// Runs criusd with `config` until `shutdown` resolves.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), DaemonError> {
    create_dir(&config.root, "root")?;
    create_dir(&config.state, "state")?;
    let _lock = RootLock::acquire(&config.root)?;
    let socket = config.listen.clone();
    let listener = bind_socket(&socket)?;
    tracing::info!(
        socket = %socket.display(),
        root = %config.root.display(),
        state = %config.state.display(),
        version = env!("CARGO_PKG_VERSION"),
        "criusd serving the CRI"
    );
    let streaming = StreamingServer::bind(config.streaming.address).await?;
    let cri = Arc::new(Cri::open(config, streaming.requests()).await?);
    let sessions = tokio::spawn(streaming.serve(cri.clone()));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel();
    let server = serve(listener, cri.clone(), async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    // Graceful shutdown waits for clients to acknowledge it; a stuck client must not keep
    // criusd alive, so in-flight RPCs get a bounded grace period.
    let grace_expired = async move {
        if stopping_rx.await.is_ok() {
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let served = tokio::select! {
        served = server => served,
        () = grace_expired => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "in-flight RPCs did not finish in time; exiting anyway");
            Ok(())
        }
    };
    if let Err(err) = std::fs::remove_file(&socket) {
        tracing::warn!(socket = %socket.display(), "cannot remove socket: {err}");
    }
    sessions.abort();
    cri.stop();
    served.map_err(|source| DaemonError::Serve {
        path: socket,
        source,
    })?;
    tracing::info!("criusd stopped");
    Ok(())
}

/// Serves both CRI services on an already bound listener until `shutdown` resolves, then
/// waits for in-flight RPCs. Taking the listener lets tests bind their own.
pub async fn serve(
    listener: UnixListener,
    cri: Arc<Cri>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = CriService::new(cri);
    tonic::transport::Server::builder()
        .add_service(service.runtime_server())
        .add_service(service.image_server())
        .add_service(service.crius_images_server())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// Creates `path` (and parents) as a directory only root can list.
fn create_dir(path: &Path, what: &'static str) -> Result<(), DaemonError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(path)
        .map_err(|source| DaemonError::CreateDir {
            what,
            path: path.to_path_buf(),
            source,
        })
}

/// An exclusive `flock` on `root/criusd.lock`, held for the daemon's lifetime; the kernel
/// drops it when the process dies, so a crash never leaves a stale lock.
pub struct RootLock {
    _file: Flock<File>,
}

impl RootLock {
    pub fn acquire(root: &Path) -> Result<RootLock, DaemonError> {
        let path = root.join(LOCK_FILE);
        let lock_file_error = |source| DaemonError::LockFile {
            path: path.clone(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(lock_file_error)?;
        let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(locked) => locked,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                // Best effort: the pid only makes the message more helpful.
                let _ = file.read_to_string(&mut pid);
                return Err(DaemonError::AlreadyRunning {
                    root: root.to_path_buf(),
                    pid: pid.trim().to_string(),
                });
            }
            Err((_, source)) => return Err(DaemonError::Lock { path, source }),
        };
        file.set_len(0).map_err(lock_file_error)?;
        file.rewind().map_err(lock_file_error)?;
        writeln!(file, "{}", std::process::id()).map_err(lock_file_error)?;
        Ok(RootLock { _file: file })
    }
}

/// Binds the CRI socket with mode 0660. A socket left by a dead criusd is replaced; one
/// that still accepts connections belongs to a live process and is left alone.
fn bind_socket(path: &Path) -> Result<UnixListener, DaemonError> {
    let listen_error = |source| DaemonError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        create_dir(parent, "socket")?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(DaemonError::SocketInUse {
                    path: path.to_path_buf(),
                });
            }
            tracing::info!(socket = %path.display(), "removing stale socket");
            std::fs::remove_file(path).map_err(listen_error)?;
        }
        Ok(_) => {
            return Err(DaemonError::NotASocket {
                path: path.to_path_buf(),
            })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(listen_error(err)),
    }
    let listener = UnixListener::bind(path).map_err(listen_error)?;
    std::fs::set_permissions(path, Permissions::from_mode(0o660)).map_err(listen_error)?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_on_the_same_root_names_the_holder() {
        let root = tempfile::tempdir().unwrap();
        let _held = RootLock::acquire(root.path()).unwrap();
        let err = RootLock::acquire(root.path())
            .err()
            .expect("second lock must fail");
        let message = err.to_string();
        assert!(
            message.contains(&std::process::id().to_string()),
            "{message}"
        );
        assert!(
            message.contains(&root.path().display().to_string()),
            "{message}"
        );
    }

    #[test]
    fn lock_is_released_on_drop() {
        let root = tempfile::tempdir().unwrap();
        drop(RootLock::acquire(root.path()).unwrap());
        RootLock::acquire(root.path()).unwrap();
    }

    #[tokio::test]
    async fn stale_socket_is_replaced_but_live_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crius.sock");
        let live = bind_socket(&path).unwrap();
        assert!(matches!(
            bind_socket(&path),
            Err(DaemonError::SocketInUse { .. })
        ));
        drop(live);
        // The file is still there but nobody listens: a stale socket.
        assert!(path.exists());
        let _rebound = bind_socket(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
    }

    #[test]
    fn regular_file_at_the_socket_path_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crius.sock");
        std::fs::write(&path, b"precious").unwrap();
        assert!(matches!(
            bind_socket(&path),
            Err(DaemonError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"precious");
    }
}
