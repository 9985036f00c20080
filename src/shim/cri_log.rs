//! Container output in the CRI log format that kubelet reads and rotates:
//! `<RFC3339Nano time> <stdout|stderr> <P|F> <content>\n`, `F` for a full line and `P`
//! for a partial one (a line longer than [`MAX_LINE`] is split into `P` pieces ending
//! with an `F`). A container with a terminal has one output stream, logged as `stdout`,
//! its lines ended by the terminal's `\r\n` (both dropped, as containerd drops them).
//!
//! The shim writes it ([`CriLog`]); criusd (attach) and the CLI (`crius logs`) read it
//! back ([`LogTail`]). While a container runs, the same output also goes, raw and as it
//! comes, to the attach clients the shim hands its log ([`CriLog::attach`]): framed as
//! one byte for the stream (1 stdout, 2 stderr), a big-endian u32 length, the bytes.
//! They are told the end by the connection closing once the output has ended.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest line written as one record; longer lines are split, as containerd does.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One record of a CRI log file, its content without the newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub stream: Stream,
    /// `P`: the line goes on in the stream's next record.
    pub partial: bool,
    pub content: Vec<u8>,
}

/// Parses one record (without its newline); `None` for a line that is not one, which
/// is skipped as kubelet skips it.
pub fn parse_record(line: &[u8]) -> Option<Record> {
    let mut fields = line.splitn(4, |&byte| byte == b' ');
    let time = fields.next()?;
    let stream = match fields.next()? {
        b"stdout" => Stream::Stdout,
        b"stderr" => Stream::Stderr,
        _ => return None,
    };
    let partial = match fields.next()? {
        b"P" => true,
        b"F" => false,
        _ => return None,
    };
    if time.is_empty() {
        return None;
    }
    Some(Record {
        stream,
        partial,
        content: fields.next().unwrap_or_default().to_vec(),
    })
}

/// A log file that may still be growing, read record by record: each read returns the
/// records completed since the last one (one being written waits for the next read).
/// When the file at the path is replaced (kubelet rotated the log and had it reopened),
/// the rest of the old file is read, then the new one from its start.
pub struct LogTail {
    path: PathBuf,
    file: Option<File>,
    /// Where the next read starts in `file`, or in the file at `path` once opened.
    offset: u64,
    unfinished: Vec<u8>,
}

impl LogTail {
    /// Reads the log at `path` from its start (a file not there yet: from when it is).
    pub fn from_start(path: &Path) -> LogTail {
        LogTail {
            path: path.to_path_buf(),
            file: None,
            offset: 0,
            unfinished: Vec::new(),
        }
    }

    /// Reads only what is added to the log at `path` from now on.
    pub fn from_end(path: &Path) -> LogTail {
        let mut tail = LogTail::from_start(path);
        if let Ok(file) = File::open(path) {
            tail.offset = file.metadata().map_or(0, |metadata| metadata.len());
            tail.file = Some(file);
        }
        tail
    }

    /// The records completed since the last read.
    pub fn read_records(&mut self) -> std::io::Result<Vec<Record>> {
        let mut data = std::mem::take(&mut self.unfinished);
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(file) => self.file = Some(file),
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(err) => return Err(err),
            }
        }
        if let Some(file) = &mut self.file {
            file.seek(SeekFrom::Start(self.offset))?;
            self.offset += file.read_to_end(&mut data)? as u64;
            let replaced = match (std::fs::metadata(&self.path), file.metadata()) {
                (Ok(current), Ok(ours)) => {
                    (current.dev(), current.ino()) != (ours.dev(), ours.ino())
                }
                (Err(_), _) | (_, Err(_)) => false,
            };
            if replaced {
                // The old file is read to its end: go on with the new one.
                self.file = None;
                self.offset = 0;
            }
        }
        let complete = data
            .iter()
            .rposition(|&byte| byte == b'\n')
            .map_or(0, |newline| newline + 1);
        self.unfinished = data.split_off(complete);
        Ok(data
            .split(|&byte| byte == b'\n')
            .filter_map(parse_record)
            .collect())
    }
}

/// One container's log file, shared by its stdout and stderr copiers.
pub struct CriLog {
    path: PathBuf,
    file: Mutex<File>,
    attached: Mutex<Attached>,
}

/// The attach clients of a container's output.
#[derive(Default)]
struct Attached {
    clients: Vec<UnixStream>,
    /// The output has ended: no more clients.
    ended: bool,
}

/// How long a write to an attach client may block the output before the client is
/// dropped: a stalled client must not stall the container.
const ATTACH_WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Attach frames' stream bytes.
pub const ATTACH_STDOUT: u8 = 1;
pub const ATTACH_STDERR: u8 = 2;

impl CriLog {
    /// Opens (creating, appending) the log file at `path`.
    pub fn open(path: &Path) -> std::io::Result<Arc<CriLog>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Arc::new(CriLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
            attached: Mutex::new(Attached::default()),
        }))
    }

    /// Passes the output on to `client` from now on, until it ends (then the connection
    /// is closed); a client of output that has ended is closed at once.
    pub fn attach(&self, client: UnixStream) {
        let mut attached = self.attached();
        if !attached.ended && client.set_write_timeout(Some(ATTACH_WRITE_TIMEOUT)).is_ok() {
            attached.clients.push(client);
        }
    }

    /// Sends a chunk of raw output to the attach clients, dropping those that fail.
    fn fan_out(&self, stream: Stream, data: &[u8]) {
        let mut attached = self.attached();
        if attached.clients.is_empty() || data.is_empty() {
            return;
        }
        let mut frame = Vec::with_capacity(5 + data.len());
        frame.push(match stream {
            Stream::Stdout => ATTACH_STDOUT,
            Stream::Stderr => ATTACH_STDERR,
        });
        frame.extend_from_slice(&(data.len() as u32).to_be_bytes());
        frame.extend_from_slice(data);
        attached
            .clients
            .retain_mut(|client| client.write_all(&frame).is_ok());
    }

    /// The output has ended: closes the attach clients' connections.
    fn end_attached(&self) {
        let mut attached = self.attached();
        attached.ended = true;
        attached.clients.clear();
    }

    fn attached(&self) -> std::sync::MutexGuard<'_, Attached> {
        self.attached
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reopens the file at the same path: after kubelet renamed it for rotation, new
    /// output goes to a fresh file.
    pub fn reopen(&self) -> std::io::Result<()> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        *self.lock() = file;
        Ok(())
    }

    /// Writes one complete line: as `P` pieces of [`MAX_LINE`] bytes and a final `F`.
    fn write_line(&self, stream: Stream, line: &[u8]) {
        let mut rest = line;
        while rest.len() > MAX_LINE {
            self.write_record(stream, true, &rest[..MAX_LINE]);
            rest = &rest[MAX_LINE..];
        }
        self.write_record(stream, false, rest);
    }

    fn write_record(&self, stream: Stream, partial: bool, content: &[u8]) {
        let tag = if partial { "P" } else { "F" };
        let mut record = format!(
            "{} {} {tag} ",
            rfc3339_nano(SystemTime::now()),
            stream.name()
        )
        .into_bytes();
        record.extend_from_slice(content);
        record.push(b'\n');
        // A full disk or a removed log must not stop the container: output is dropped.
        let _ = self.lock().write_all(&record);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, File> {
        self.file
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Copies `source` (a pipe from the container) into `log` line by line until EOF, on a
/// thread of its own. Returns when every writer of the pipe has closed it.
pub fn copy_stream(
    source: File,
    stream: Stream,
    log: Arc<CriLog>,
    open: Arc<OpenStreams>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    copy_lines(source, stream, false, log, open)
}

/// Copies the output of a container's terminal (its pty master) into `log` as `stdout`
/// lines, without the terminal's carriage returns, on a thread of its own, until the
/// terminal hangs up (its last process closed it).
pub fn copy_terminal(
    master: File,
    log: Arc<CriLog>,
    open: Arc<OpenStreams>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    copy_lines(master, Stream::Stdout, true, log, open)
}

/// Copies `source` into `log` as lines of `stream`; with `terminal`, a `\r` ending a
/// line is dropped with its `\n`. A read error ends the copy as EOF does: a terminal's
/// master reports its hang-up so.
fn copy_lines(
    mut source: File,
    stream: Stream,
    terminal: bool,
    log: Arc<CriLog>,
    open: Arc<OpenStreams>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let line_of = move |line: &[u8]| -> usize {
        match line.last() {
            Some(b'\r') if terminal => line.len() - 1,
            _ => line.len(),
        }
    };
    std::thread::Builder::new()
        .name(format!("log-{}", stream.name()))
        .spawn(move || {
            let mut pending: Vec<u8> = Vec::new();
            let mut buffer = [0u8; 8192];
            loop {
                let read = match source.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(read) => read,
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                };
                log.fan_out(stream, &buffer[..read]);
                pending.extend_from_slice(&buffer[..read]);
                let mut start = 0;
                while let Some(newline) = pending[start..].iter().position(|&b| b == b'\n') {
                    let line = &pending[start..start + newline];
                    log.write_line(stream, &line[..line_of(line)]);
                    start += newline + 1;
                }
                pending.drain(..start);
                while pending.len() >= MAX_LINE {
                    log.write_record(stream, true, &pending[..MAX_LINE]);
                    pending.drain(..MAX_LINE);
                }
            }
            if !pending.is_empty() {
                log.write_line(stream, &pending[..line_of(&pending)]);
            }
            if open.close_one() {
                log.end_attached();
            }
        })
}

/// Counts a container's output streams that are still being copied, so that its exit
/// is reported only once its output is in the log (or a bounded time has passed: a
/// background process may hold the pipes open for ever).
pub struct OpenStreams {
    open: Mutex<usize>,
    closed: Condvar,
}

impl OpenStreams {
    pub fn new(count: usize) -> Arc<OpenStreams> {
        Arc::new(OpenStreams {
            open: Mutex::new(count),
            closed: Condvar::new(),
        })
    }

    /// Marks one stream as having reached its end; whether it was the last one.
    pub fn close_one(&self) -> bool {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        *open = open.saturating_sub(1);
        self.closed.notify_all();
        *open == 0
    }

    /// Waits until every stream reached its end, at most `timeout`.
    pub fn wait(&self, timeout: Duration) {
        let open = self
            .open
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        let _ = self
            .closed
            .wait_timeout_while(open, timeout, |open| *open > 0);
    }
}

/// `2026-11-23T08:00:00.123456789Z`: RFC 3339 in UTC with nanoseconds, as kubelet parses it.
pub fn rfc3339_nano(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (days, second_of_day) = (seconds / 86_400, seconds % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
        since_epoch.subsec_nanos()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian (year, month, day) — Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(stream: Stream, partial: bool, content: &str) -> Record {
        Record {
            stream,
            partial,
            content: content.as_bytes().to_vec(),
        }
    }

    #[test]
    fn records_parse_with_any_content() {
        assert_eq!(
            parse_record(b"2026-01-02T03:04:05.123456789Z stdout F hello  world "),
            Some(record(Stream::Stdout, false, "hello  world "))
        );
        assert_eq!(
            parse_record(b"2026-01-02T03:04:05.1Z stderr P part"),
            Some(record(Stream::Stderr, true, "part"))
        );
        // An empty line is written as a record with empty content.
        assert_eq!(
            parse_record(b"2026-01-02T03:04:05.1Z stdout F "),
            Some(record(Stream::Stdout, false, ""))
        );
        assert_eq!(parse_record(b""), None);
        assert_eq!(parse_record(b"garbage"), None);
        assert_eq!(parse_record(b"t stdin F x"), None);
        assert_eq!(parse_record(b"t stdout X x"), None);
    }

    #[test]
    fn a_tail_from_the_end_reads_what_comes_and_follows_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        std::fs::write(&path, "t stdout F before\n").unwrap();
        let mut tail = LogTail::from_end(&path);
        assert!(tail.read_records().unwrap().is_empty());
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"t stdout P hal").unwrap();
        assert!(tail.read_records().unwrap().is_empty(), "half a record");
        file.write_all(b"f\nt stderr F err\n").unwrap();
        assert_eq!(
            tail.read_records().unwrap(),
            [
                record(Stream::Stdout, true, "half"),
                record(Stream::Stderr, false, "err")
            ]
        );
        // Rotated: the old file's last records, then the new file from its start.
        file.write_all(b"t stdout F last old\n").unwrap();
        std::fs::rename(&path, dir.path().join("c.log.1")).unwrap();
        std::fs::write(&path, "t stdout F first new\n").unwrap();
        assert_eq!(
            tail.read_records().unwrap(),
            [record(Stream::Stdout, false, "last old")]
        );
        assert_eq!(
            tail.read_records().unwrap(),
            [record(Stream::Stdout, false, "first new")]
        );
    }
    use std::time::Duration;

    #[test]
    fn timestamps_are_rfc3339_nano_utc() {
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap_day = UNIX_EPOCH + Duration::new(951_782_400 + 3_723, 5);
        assert_eq!(rfc3339_nano(leap_day), "2000-02-29T01:02:03.000000005Z");
        let later = UNIX_EPOCH + Duration::from_secs(1_795_392_000);
        assert_eq!(rfc3339_nano(later), "2026-11-23T00:00:00.000000000Z");
    }

    #[test]
    fn lines_partials_and_a_trailing_fragment() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c/0.log");
        let log = CriLog::open(&path).unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let open = OpenStreams::new(1);
        let copier = copy_stream(
            File::from(std::os::fd::OwnedFd::from(reader)),
            Stream::Stderr,
            log,
            open.clone(),
        )
        .unwrap();
        writer.write_all(b"one\ntwo\n").unwrap();
        writer.write_all(&vec![b'x'; MAX_LINE + 10]).unwrap();
        writer.write_all(b"\ntail").unwrap();
        drop(writer);
        copier.join().unwrap();
        open.wait(std::time::Duration::ZERO);
        assert_eq!(
            *open.open.lock().unwrap(),
            0,
            "the copier reports its stream closed"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let records: Vec<(&str, &str, &str)> = text
            .lines()
            .map(|line| {
                let mut parts = line.splitn(4, ' ');
                let time = parts.next().unwrap();
                assert!(time.ends_with('Z') && time.len() == 30, "{time}");
                (
                    parts.next().unwrap(),
                    parts.next().unwrap(),
                    parts.next().unwrap_or(""),
                )
            })
            .collect();
        assert_eq!(records[0], ("stderr", "F", "one"));
        assert_eq!(records[1], ("stderr", "F", "two"));
        assert_eq!(records[2].1, "P");
        assert_eq!(records[2].2.len(), MAX_LINE);
        assert_eq!(records[3], ("stderr", "F", "xxxxxxxxxx"));
        assert_eq!(records[4], ("stderr", "F", "tail"));
        assert_eq!(records.len(), 5);
    }

    #[test]
    fn terminal_lines_lose_their_carriage_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tty.log");
        let log = CriLog::open(&path).unwrap();
        let (reader, mut writer) = std::io::pipe().unwrap();
        let open = OpenStreams::new(1);
        let copier =
            copy_terminal(File::from(std::os::fd::OwnedFd::from(reader)), log, open).unwrap();
        writer
            .write_all(b"one\r\ntwo\rstill two\r\nlast\r")
            .unwrap();
        drop(writer);
        copier.join().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let contents: Vec<&str> = text
            .lines()
            .map(|line| line.splitn(4, ' ').nth(3).unwrap())
            .collect();
        assert_eq!(contents, ["one", "two\rstill two", "last"]);
        assert!(
            text.lines().all(|line| line.contains(" stdout F ")),
            "{text}"
        );
    }
}
