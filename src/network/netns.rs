//! Pod network namespaces, pinned by a bind mount at `state/netns/<sandbox id>` so that
//! they outlive any process (the shim joins them, CNI plugins get their path) and can be
//! found again after a criusd restart.
//!
//! Namespaces belong to threads: every function here that changes its namespace does it
//! on a thread of its own, never on a tokio worker, which would carry the namespace on to
//! unrelated tasks.

use std::fs::File;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use super::{bring_up_loopback, NetworkError};

/// Creates a network namespace with its loopback up and pins it at `path`.
pub fn create(path: &Path) -> Result<(), NetworkError> {
    let pinned = path.to_path_buf();
    on_own_thread(move || {
        if let Some(dir) = pinned.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|source| NetworkError::io("create", dir, source))?;
        }
        File::create(&pinned).map_err(|source| NetworkError::io("create", &pinned, source))?;
        let made = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetworkError::sys("create a network namespace", source))
            .and_then(|()| {
                mount(
                    Some(Path::new("/proc/thread-self/ns/net")),
                    &pinned,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(|source| NetworkError::sys("pin the network namespace", source))
            });
        if let Err(err) = made {
            let _ = std::fs::remove_file(&pinned);
            return Err(err);
        }
        bring_up_loopback().map_err(|source| {
            let _ = remove(&pinned);
            NetworkError::sys("bring up the pod's loopback", source)
        })
    })
}

/// Unpins and deletes the namespace at `path`; the kernel frees it once no process is
/// left in it. Removing what is already gone succeeds.
pub fn remove(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (pinning failed half-way); ENOENT: already gone.
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(source) => return Err(NetworkError::sys("unpin the network namespace", source)),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NetworkError::io("remove", path, source)),
    }
}

/// Whether a live network namespace is pinned at `path` (not a leftover file where one
/// was, not nothing).
pub fn is_pinned(path: &Path) -> bool {
    statfs(path).is_ok_and(|fs| fs.filesystem_type() == NSFS_MAGIC)
}

/// Moves the calling thread into the namespace pinned at `path`. Only for threads that
/// [`on_own_thread`] started.
pub(super) fn enter(path: &Path) -> Result<(), NetworkError> {
    let namespace = File::open(path).map_err(|source| NetworkError::io("open", path, source))?;
    setns(namespace, CloneFlags::CLONE_NEWNET)
        .map_err(|source| NetworkError::sys("enter the pod's network namespace", source))
}

/// Runs `work` on a new thread that ends with it, so a namespace change cannot leak into
/// any other work, and waits for its result.
pub(super) fn on_own_thread<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    std::thread::Builder::new()
        .name("crius-netns".to_string())
        .spawn(work)
        .map_err(|source| {
            NetworkError::io(
                "start a thread in",
                Path::new("a network namespace"),
                source,
            )
        })?
        .join()
        .unwrap_or_else(|_| Err(NetworkError::Panicked))
}
