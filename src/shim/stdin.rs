//! A process's stdin, fed by the shim from the path its Create or Exec request names
//! (containerd passes a FIFO that its client writes to; a regular file works too), so
//! that the shim can close it on request (CloseIO) whatever the writer does.
//!
//! A container's FIFO is held open for writing by the shim as well (see [`open_source`]),
//! so that only CloseIO ends its stdin; an exec's ends when its writer goes.
//!
//! The source is opened without blocking: a FIFO nobody has opened for writing yet
//! neither blocks the request nor reads as ended (the kernel reports no hang-up on a
//! FIFO until a writer has come and gone). A thread copies it into the process's stdin:
//! a pipe the process reads, or its terminal. The process's stdin closes when the source
//! ends (every writer closed the FIFO) or when the shim closes it ([`StdinFeed::close`],
//! or dropping the feed with its process's record), whichever comes first: the pipe's
//! write end is closed so that the process reads EOF; a terminal, which outlives its
//! input, is sent its end-of-file character instead (after a newline's worth of input,
//! once; in the middle of a line twice, the first ending the line).

use std::fs::File;
use std::io::{PipeReader, PipeWriter, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::termios::{tcgetattr, SpecialCharacterIndices};

use super::ShimError;

/// End-of-file on a terminal whose settings cannot be read: `^D`, everyone's default.
const DEFAULT_EOF: u8 = 4;

/// Where a process reads its stdin from.
pub enum StdinTarget {
    /// The write end of the pipe that is the process's stdin.
    Pipe(PipeWriter),
    /// The master of the process's terminal.
    Terminal(File),
}

/// A process's stdin being fed; dropping it closes the stdin as [`StdinFeed::close`]
/// does.
pub struct StdinFeed {
    /// Closing it (dropping the write end) tells the feeding thread to stop.
    stop: Option<PipeWriter>,
}

/// Opens the stdin source at `path` for [`StdinFeed::start`], without blocking. With
/// `held_open`, a FIFO is opened for writing as well, so that it never ends by its
/// writers going: only [`StdinFeed::close`] (CloseIO) ends it. A container's stdin is
/// held so, for the attach sessions that come and go (kubelet closes it itself for
/// `stdin_once`); an exec's ends with its one writer.
pub fn open_source(path: &Path, held_open: bool) -> Result<File, ShimError> {
    let fifo = held_open
        && std::fs::metadata(path).is_ok_and(|metadata| {
            use std::os::unix::fs::FileTypeExt;
            metadata.file_type().is_fifo()
        });
    File::options()
        .read(true)
        .write(fifo)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(|source| ShimError::Io {
            what: "open the process's stdin",
            source,
        })
}

impl StdinFeed {
    /// Starts copying `input` (from [`open_source`]) into `target`.
    pub fn start(input: File, target: StdinTarget) -> Result<StdinFeed, ShimError> {
        let (stopped, stop) = std::io::pipe().map_err(|source| ShimError::Io {
            what: "create a pipe",
            source,
        })?;
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || feed(input, stopped, target))
            .map_err(|source| ShimError::Io {
                what: "start the stdin copier",
                source,
            })?;
        Ok(StdinFeed { stop: Some(stop) })
    }

    /// Closes the process's stdin: it reads what was passed on to it already, then EOF;
    /// what is still in the source is not.
    pub fn close(&mut self) {
        self.stop = None;
    }
}

/// Copies `input` into `target` until `input` ends or `stopped` hangs up, then closes
/// the process's stdin (see the module header).
fn feed(mut input: File, stopped: PipeReader, mut target: StdinTarget) {
    let mut buffer = [0u8; 8192];
    let mut at_line_start = true;
    loop {
        let mut fds = [
            PollFd::new(input.as_fd(), PollFlags::POLLIN),
            PollFd::new(stopped.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(Errno::EINTR) => continue,
            Err(_) => break,
        }
        if fds[1].any() != Some(false) {
            break;
        }
        let read = match input.read(&mut buffer) {
            // Every writer has gone (or a file ended).
            Ok(0) => break,
            Ok(read) => read,
            Err(err)
                if matches!(
                    err.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        let written = match &mut target {
            StdinTarget::Pipe(pipe) => pipe.write_all(&buffer[..read]),
            StdinTarget::Terminal(master) => master.write_all(&buffer[..read]),
        };
        if written.is_err() {
            // The process is gone or closed its stdin.
            return;
        }
        at_line_start = buffer[read - 1] == b'\n';
    }
    if let StdinTarget::Terminal(mut master) = target {
        let eof = tcgetattr(&master)
            .map(|settings| settings.control_chars[SpecialCharacterIndices::VEOF as usize])
            .unwrap_or(DEFAULT_EOF);
        let times = if at_line_start { 1 } else { 2 };
        let _ = master.write_all(&vec![eof; times]);
    }
    // A pipe's write end closes here.
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Reads `pipe` to its end on a thread; the receiver gets what it read.
    fn read_to_end(mut pipe: PipeReader) -> std::sync::mpsc::Receiver<Vec<u8>> {
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send(bytes);
        });
        receiver
    }

    #[test]
    fn a_fifo_feeds_the_pipe_until_its_writer_closes() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let _feed = StdinFeed::start(
            open_source(&fifo, false).unwrap(),
            StdinTarget::Pipe(writer),
        )
        .unwrap();
        let output = read_to_end(reader);
        // Nobody writes yet: the process's stdin stays open.
        assert!(output.recv_timeout(Duration::from_millis(200)).is_err());
        let mut client = File::options().write(true).open(&fifo).unwrap();
        client.write_all(b"hello\n").unwrap();
        drop(client);
        let got = output.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"hello\n");
    }

    #[test]
    fn close_ends_stdin_while_the_writer_stays() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (mut reader, writer) = std::io::pipe().unwrap();
        let mut feed = StdinFeed::start(
            open_source(&fifo, false).unwrap(),
            StdinTarget::Pipe(writer),
        )
        .unwrap();
        let mut client = File::options().write(true).open(&fifo).unwrap();
        client.write_all(b"before close\n").unwrap();
        let mut line = [0u8; 13];
        reader.read_exact(&mut line).unwrap();
        assert_eq!(&line, b"before close\n");
        feed.close();
        let rest = read_to_end(reader);
        assert_eq!(rest.recv_timeout(Duration::from_secs(10)).unwrap(), b"");
        drop(client);
    }

    #[test]
    fn a_held_open_fifo_outlives_its_writers_until_close() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("stdin");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let (reader, writer) = std::io::pipe().unwrap();
        let mut feed =
            StdinFeed::start(open_source(&fifo, true).unwrap(), StdinTarget::Pipe(writer)).unwrap();
        let output = read_to_end(reader);
        for session in ["first\n", "second\n"] {
            let mut client = File::options().write(true).open(&fifo).unwrap();
            client.write_all(session.as_bytes()).unwrap();
        }
        // Both writers are gone, and the process's stdin is still open.
        assert!(output.recv_timeout(Duration::from_millis(300)).is_err());
        feed.close();
        let got = output.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(got, b"first\nsecond\n");
    }
}
