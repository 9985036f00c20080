//! Terminals. A process with `terminal: true` gets a pseudo-terminal from its OCI runtime,
//! which hands the pty master to the shim over a unix socket: runc's `--console-socket`
//! protocol, which youki's libcontainer (the embedded runtime) speaks too. The runtime
//! connects to the socket and sends one message whose SCM_RIGHTS carry the master (its
//! payload, the pty's name, is not needed). The shim then holds the master for as long as
//! it holds the process: it copies the terminal's output to the process's stdout
//! destination, feeds its stdin into it ([`super::stdin`]) and sets its window size
//! (ResizePty).
//!
//! The runtime has sent the master by the time it exits successfully (runc and
//! libcontainer send it while setting the process up, before they report it created), so
//! the shim receives it after the runtime command, with a bounded wait, and never blocks
//! on a runtime that failed. The socket lives in a private directory under the temporary
//! directory (a socket path may not exceed 107 bytes, and bundle paths can be deeper),
//! `crius-pty-<shim pid>-<random>`, removed as soon as the master is received or the
//! runtime failed.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::libc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};

use super::cri_log::OpenStreams;
use super::ShimError;

/// How the console sockets' directories begin, followed by the shim's pid (whose they
/// are) and a random part.
pub const DIR_PREFIX: &str = "crius-pty-";

/// How long after a successful runtime command its master may take to arrive.
const RECEIVE_TIMEOUT_MS: u16 = 10_000;

nix::ioctl_write_ptr_bad!(set_window_size, libc::TIOCSWINSZ, libc::winsize);

/// The socket a runtime sends one process's pty master to.
pub struct ConsoleSocket {
    /// The private directory holding the socket; removed on drop.
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    /// Binds a fresh socket in a new private directory under the temporary directory.
    pub fn new() -> Result<ConsoleSocket, ShimError> {
        let template = format!("{}{}-XXXXXX", DIR_PREFIX, std::process::id());
        let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join(template)).map_err(|source| {
            ShimError::Sys {
                what: "create the console socket's directory",
                source,
            }
        })?;
        let path = dir.join("pty.sock");
        let listener = UnixListener::bind(&path).and_then(|listener| {
            listener.set_nonblocking(true)?;
            Ok(listener)
        });
        match listener {
            Ok(listener) => Ok(ConsoleSocket {
                dir,
                path,
                listener,
            }),
            Err(source) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(ShimError::Io {
                    what: "bind the console socket",
                    source,
                })
            }
        }
    }

    /// What the runtime's `--console-socket` names.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The pty master the runtime sent; call it once the runtime command succeeded.
    pub fn receive(self) -> Result<Console, ShimError> {
        let failed = |what, source| ShimError::Io { what, source };
        let waited = {
            let mut fds = [PollFd::new(self.listener.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(RECEIVE_TIMEOUT_MS))
        };
        match waited {
            Ok(0) => {
                return Err(failed(
                    "receive the terminal from the OCI runtime",
                    std::io::ErrorKind::TimedOut.into(),
                ))
            }
            Ok(_) => {}
            Err(source) => {
                return Err(ShimError::Sys {
                    what: "wait for the OCI runtime's terminal",
                    source,
                })
            }
        }
        let (stream, _) = self
            .listener
            .accept()
            .map_err(|source| failed("accept the OCI runtime's console connection", source))?;
        stream
            .set_nonblocking(false)
            .and_then(|()| {
                stream.set_read_timeout(Some(Duration::from_millis(RECEIVE_TIMEOUT_MS.into())))
            })
            .map_err(|source| failed("set up the console connection", source))?;
        let mut name = [0u8; 4096];
        let mut iov = [IoSliceMut::new(&mut name)];
        let mut space = nix::cmsg_space!([RawFd; 4]);
        let message = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            // Never inherited by the runtimes the shim runs later.
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|source| ShimError::Sys {
            what: "receive the terminal from the OCI runtime",
            source,
        })?;
        let mut received = Vec::new();
        for control in message.cmsgs().map_err(|source| ShimError::Sys {
            what: "read the OCI runtime's console message",
            source,
        })? {
            if let ControlMessageOwned::ScmRights(fds) = control {
                // SAFETY: SCM_RIGHTS installed these descriptors in this process just now,
                // and nothing else owns them.
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        // Any other descriptor sent along is closed here.
        let master = received
            .into_iter()
            .next()
            .ok_or_else(|| ShimError::Runtime {
                command: "create",
                message: "the console message carried no terminal".into(),
            })?;
        Ok(Console { master })
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The pty master of a process's terminal.
pub struct Console {
    master: OwnedFd,
}

impl Console {
    /// Sets the terminal's window size (the process gets SIGWINCH).
    pub fn resize(&self, width: u32, height: u32) -> Result<(), ShimError> {
        let dimension = |value: u32, name: &str| {
            u16::try_from(value).map_err(|_| {
                ShimError::InvalidArgument(format!(
                    "terminal {name} {value} is more than {}",
                    u16::MAX
                ))
            })
        };
        let size = libc::winsize {
            ws_row: dimension(height, "height")?,
            ws_col: dimension(width, "width")?,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call.
        unsafe { set_window_size(self.master.as_raw_fd(), &size) }
            .map(drop)
            .map_err(|source| ShimError::Sys {
                what: "set the terminal's window size",
                source,
            })
    }

    /// Another descriptor of the master, for a copier that owns its own.
    pub fn master(&self) -> Result<File, ShimError> {
        self.master
            .try_clone()
            .map(File::from)
            .map_err(|source| ShimError::Io {
                what: "duplicate the terminal's master",
                source,
            })
    }
}

/// Copies a terminal's output from `master` into `into` as it comes, on a thread of its
/// own, until the terminal hangs up (its last process closed it: reads fail with EIO).
pub fn copy_output(
    mut master: File,
    mut into: File,
    open: Arc<OpenStreams>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("tty-output".into())
        .spawn(move || {
            let mut buffer = [0u8; 8192];
            loop {
                match master.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => {
                        // A full disk must not stop the process: output is dropped.
                        let _ = into.write_all(&buffer[..read]);
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            open.close_one();
        })
}
