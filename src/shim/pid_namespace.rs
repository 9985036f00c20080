//! The pod's shared PID namespace (CRI `NamespaceMode` POD for pid, the protobuf default),
//! pinned without a pause container.
//!
//! A PID namespace lives only as long as its pid 1: once that process exits, the kernel
//! kills every other process in it and no new one may enter. So the pod's namespace gets
//! an init of its own, cloned by the shim into a new PID namespace, that reaps the
//! orphans re-parented to it (processes of the pod's containers whose parent died) and
//! otherwise sleeps. Containers join `/proc/<init pid>/ns/pid` and see each other's
//! processes; pid 1 is this init, never a container's process, so one container's exit
//! leaves the namespace to the others.
//!
//! Invariants:
//! - The init exits when its lifeline, a pipe whose only write end the shim holds, reads
//!   end of file: when the shim stops it ([`PidNamespaceInit::stop`]) or when the shim
//!   dies, however it dies. Its exit ends every process left in the pod's namespace.
//! - It runs in a mount namespace of its own whose root is an empty read-only tmpfs, and
//!   keeps no descriptor but its lifeline and a signalfd: a container of the pod allowed
//!   to ptrace it (CAP_SYS_PTRACE) finds nothing of the host behind `/proc/1/root`,
//!   `/proc/1/cwd` or `/proc/1/fd`, as it would behind a pause container's.
//! - It is cloned while the shim is single-threaded (before the reaper thread), so the
//!   copy of the shim's memory it runs on is consistent.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::mpsc::RecvTimeoutError;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{clone, CloneFlags};
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{chdir, pipe2, pivot_root, Pid};

use super::reaper::Reaper;
use super::ShimError;

/// The init's stack: it runs a few small frames, never deep recursion. Untouched pages
/// cost nothing.
const STACK_SIZE: usize = 256 * 1024;

/// How long [`PidNamespaceInit::stop`] waits for the namespace to empty: the kernel kills
/// what is left at once, but the init's exit completes only once the shim has reaped
/// the containers' processes that are its children.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// The init the shim holds the pod's PID namespace with.
pub struct PidNamespaceInit {
    pid: Pid,
    /// The write end of the init's lifeline; dropping it ends the init.
    lifeline: OwnedFd,
}

impl PidNamespaceInit {
    /// Clones the init into a new PID namespace and waits until it is set up. Its empty
    /// root is mounted on `root_mount_point`, an existing directory, in the init's own
    /// mount namespace, where nothing else sees it.
    ///
    /// Call it only while the process is single-threaded.
    pub fn start(root_mount_point: &Path) -> Result<PidNamespaceInit, ShimError> {
        let (lifeline_reader, lifeline) =
            pipe2(OFlag::O_CLOEXEC).map_err(sys("create the pid namespace init's lifeline"))?;
        let (mut ready_reader, ready_writer) = std::io::pipe().map_err(|source| ShimError::Io {
            what: "create the pid namespace init's readiness pipe",
            source,
        })?;
        let keep = [lifeline_reader.as_raw_fd(), ready_writer.as_raw_fd()];
        let mut stack = vec![0u8; STACK_SIZE];
        let init = Box::new(|| {
            init_main(
                &lifeline_reader,
                ready_writer.as_raw_fd(),
                &keep,
                root_mount_point,
            )
        });
        // SAFETY: the process is single-threaded, so the child's copy of its memory is
        // consistent; the child runs `init_main` on `stack` and exits when it returns,
        // never returning into the shim's code.
        let pid = unsafe {
            clone(
                init,
                &mut stack,
                CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS,
                Some(Signal::SIGCHLD as i32),
            )
        }
        .map_err(sys("clone the pid namespace init"))?;
        // The child has its own copies; with ours closed, only the init's end of the
        // readiness pipe is left, so the read below ends when the init reports or dies.
        drop(lifeline_reader);
        drop(ready_writer);
        let mut answer = String::new();
        let _ = ready_reader.read_to_string(&mut answer);
        if answer != "ok" {
            // Gone, or on its way out: it exits after reporting a failure.
            return Err(ShimError::FailedPrecondition(format!(
                "the pod's pid namespace init did not start: {}",
                if answer.is_empty() {
                    "it exited"
                } else {
                    &answer
                }
            )));
        }
        Ok(PidNamespaceInit { pid, lifeline })
    }

    /// The init's pid, as the shim sees it: `/proc/<pid>/ns/pid` is the pod's namespace.
    pub fn pid(&self) -> u32 {
        self.pid.as_raw() as u32
    }

    /// Ends the init, and with it every process left in the pod's PID namespace, and
    /// waits (bounded) until `reaper` has collected it, so that a shim that has exited
    /// leaves no process of its pod behind.
    pub fn stop(self, reaper: &Reaper) {
        // Subscribed first: the exit cannot slip between the check and the wait.
        let exits = reaper.subscribe();
        drop(self.lifeline);
        if kill(self.pid, None) == Err(Errno::ESRCH) {
            // Already collected: it died before the shim stopped it.
            return;
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match exits.recv_timeout(left) {
                Ok(exit) if exit.pid == self.pid.as_raw() => return,
                Ok(_) => continue,
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    eprintln!(
                        "the pod's pid namespace init {} did not exit within {STOP_TIMEOUT:?}",
                        self.pid
                    );
                    return;
                }
            }
        }
    }
}

/// The init's life, in the cloned child: set up, report to the shim through `ready`, then
/// reap orphans until the lifeline ends. Returns the exit status.
fn init_main(lifeline: &OwnedFd, ready: RawFd, keep: &[RawFd], root_mount_point: &Path) -> isize {
    // SAFETY: the child's copy of the shim's write end, which nothing else in the child
    // owns: the shim's code that owns it never runs here.
    let mut ready = std::io::PipeWriter::from(unsafe { OwnedFd::from_raw_fd(ready) });
    let setup = close_inherited_descriptors(keep)
        .and_then(|()| enter_empty_root(root_mount_point))
        .and_then(|()| reaped_signals());
    let signals = match setup {
        Ok(signals) => signals,
        Err(err) => {
            let _ = write!(ready, "{err}");
            return 1;
        }
    };
    if ready.write_all(b"ok").is_err() {
        return 1;
    }
    drop(ready);
    loop {
        let mut fds = [
            PollFd::new(lifeline.as_fd(), PollFlags::POLLIN),
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(_) => return 1,
        }
        // Nothing is ever written to the lifeline: readable means its end.
        if fds[0].any().unwrap_or(true) {
            return 0;
        }
        if fds[1].any().unwrap_or(false) {
            // Merged SIGCHLDs: one read, then reap everything that has exited.
            let _ = signals.read_signal();
            reap_all();
        }
    }
}

/// Closes every descriptor the shim had open but `keep`: the start process's stdout and
/// stderr (criusd reads them to end of file), the shim's log and sockets.
fn close_inherited_descriptors(keep: &[RawFd]) -> Result<(), ShimError> {
    let listed: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map_err(|source| ShimError::Io {
            what: "list the pid namespace init's descriptors",
            source,
        })?
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .collect();
    for fd in listed.into_iter().filter(|fd| !keep.contains(fd)) {
        // The listing's own descriptor is closed already: EBADF.
        let _ = nix::unistd::close(fd);
    }
    Ok(())
}

/// Makes an empty read-only tmpfs the root of this (new) mount namespace and lets go of
/// the host's mounts.
fn enter_empty_root(mount_point: &Path) -> Result<(), ShimError> {
    // First, so that nothing below propagates to the host's mounts.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(sys("make the pid namespace init's mounts private"))?;
    mount(
        Some("none"),
        mount_point,
        Some("tmpfs"),
        MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some("size=4k,mode=0555"),
    )
    .map_err(sys("mount the pid namespace init's root"))?;
    chdir(mount_point).map_err(sys("enter the pid namespace init's root"))?;
    // The old root ends up stacked on "."; detaching it drops every host mount.
    pivot_root(".", ".").map_err(sys("pivot to the pid namespace init's root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach the host's mounts"))?;
    chdir("/").map_err(sys("enter the pid namespace init's root"))
}

/// SIGCHLD, blocked and readable from a signalfd, so that none is lost between a reap
/// and the next wait.
fn reaped_signals() -> Result<SignalFd, ShimError> {
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(sys("block SIGCHLD"))?;
    SignalFd::new(&mask).map_err(sys("open a signalfd for SIGCHLD"))
}

/// The error of a failed system call made to `what`.
fn sys(what: &'static str) -> impl Fn(Errno) -> ShimError {
    move |source| ShimError::Sys { what, source }
}

/// Reaps every child that has exited.
fn reap_all() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}
