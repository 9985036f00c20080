//! This process's stdio and terminal during `crius exec` and `crius attach`: raw mode
//! while a session with a terminal runs, so that keys reach the command as typed (^C
//! included), and the window's size, passed on to the command's terminal as it changes.

use nix::libc;
use nix::sys::termios::{cfmakeraw, tcgetattr, tcsetattr, SetArg, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::streaming::client::ExecIo;
use crate::streaming::TerminalSize;

nix::ioctl_read_bad!(window_size, libc::TIOCGWINSZ, libc::winsize);

/// This process's stdio for an exec or attach session: its stdin passed on when `stdin`,
/// its stdout, and its stderr unless with a terminal (`tty`), whose size changes are
/// passed on.
pub fn session_io(stdin: bool, tty: bool) -> ExecIo {
    ExecIo {
        stdin: stdin.then(|| Box::new(tokio::io::stdin()) as _),
        stdout: Some(Box::new(tokio::io::stdout())),
        stderr: (!tty).then(|| Box::new(tokio::io::stderr()) as _),
        tty,
        resizes: tty.then(window_sizes).flatten(),
    }
}

/// Raw mode on stdin, undone when dropped.
pub struct RawMode {
    original: Termios,
}

impl RawMode {
    /// Puts stdin in raw mode; `None` when stdin is not a terminal (or refuses).
    pub fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let original = tcgetattr(&stdin).ok()?;
        let mut raw = original.clone();
        cfmakeraw(&mut raw);
        tcsetattr(&stdin, SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { original })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), SetArg::TCSANOW, &self.original);
    }
}

/// The sizes of the terminal on stdout: the current one, then one per change
/// (SIGWINCH); `None` when stdout is not a terminal.
pub fn window_sizes() -> Option<mpsc::Receiver<TerminalSize>> {
    let size = current_size()?;
    let mut changes = signal(SignalKind::window_change()).ok()?;
    let (sizes, receiver) = mpsc::channel(4);
    tokio::spawn(async move {
        if sizes.send(size).await.is_err() {
            return;
        }
        while changes.recv().await.is_some() {
            if let Some(size) = current_size() {
                if sizes.send(size).await.is_err() {
                    return;
                }
            }
        }
    });
    Some(receiver)
}

fn current_size() -> Option<TerminalSize> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer, which outlives the call.
    unsafe { window_size(libc::STDOUT_FILENO, &mut size) }.ok()?;
    Some(TerminalSize {
        width: size.ws_col,
        height: size.ws_row,
    })
}
