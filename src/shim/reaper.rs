//! The shim's child reaper.
//!
//! The shim is a child subreaper (`PR_SET_CHILD_SUBREAPER`): container processes that runc
//! leaves behind are re-parented to it, and it must collect every exit — of a container's
//! init, of an exec'd process, and of the runc commands themselves — exactly once. One
//! thread waits for SIGCHLD and reaps with `waitpid(-1)`; every exit is broadcast to the
//! subscribers. Whoever starts a process subscribes *before* spawning it, so an exit that
//! happens immediately is never lost (containerd's rust-extensions do the same).

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::prctl::set_child_subreaper;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::ShimError;

/// A reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + the signal number for a process killed by a signal (the
    /// shell's and kubelet's convention: SIGKILL is 137).
    pub status: i32,
    pub at: SystemTime,
}

/// Broadcasts every reaped exit to its subscribers.
pub struct Reaper {
    /// Senders of live subscriptions; a dropped receiver is pruned at the next exit.
    subscribers: Mutex<Vec<Sender<Exit>>>,
}

impl Reaper {
    /// Becomes a subreaper and starts the reaping thread. Call it before any other thread
    /// exists: SIGCHLD is blocked here so that every later thread inherits the mask and
    /// only the reaper thread, through `sigwait`, ever sees the signal.
    pub fn start() -> Result<Arc<Reaper>, ShimError> {
        set_child_subreaper(true).map_err(|source| ShimError::Sys {
            what: "become a child subreaper",
            source,
        })?;
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        mask.thread_block().map_err(|source| ShimError::Sys {
            what: "block SIGCHLD",
            source,
        })?;
        let reaper = Arc::new(Reaper {
            subscribers: Mutex::new(Vec::new()),
        });
        let reaping = reaper.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .spawn(move || loop {
                if mask.wait().is_ok() {
                    reaping.reap_all();
                }
            })
            .map_err(|source| ShimError::Io {
                what: "start the reaper thread",
                source,
            })?;
        Ok(reaper)
    }

    /// Receives every exit reaped from now on.
    pub fn subscribe(&self) -> Receiver<Exit> {
        let (sender, receiver) = mpsc::channel();
        self.lock().push(sender);
        receiver
    }

    /// Reaps every child that has exited (several SIGCHLDs may have merged into one).
    fn reap_all(&self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            };
            let exit = Exit {
                pid: status.0.as_raw(),
                status: status.1,
                at: SystemTime::now(),
            };
            self.lock()
                .retain(|subscriber| subscriber.send(exit).is_ok());
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<Exit>>> {
        self.subscribers
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Waits on `exits` for the exit of `pid`; exits of other processes are skipped.
pub fn wait_for(exits: &Receiver<Exit>, pid: i32) -> Option<Exit> {
    exits.iter().find(|exit| exit.pid == pid)
}
