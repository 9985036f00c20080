//! `crius logs`, and the log following of a foreground `crius run`: reading a container's
//! CRI log file (`<RFC3339Nano time> <stdout|stderr> <P|F> <content>`, the format the
//! shims write and kubelet reads), joining `P` (partial) records of a stream until its `F`
//! record into one line, and printing each line to the stream it came from.
//!
//! Following polls the file and ContainerStatus. The daemon reports a container's exit
//! only once its output is in the log, so the file read after the exit is seen is the
//! whole of it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::containers::container_status;
use super::{resolve, CliError};
use crate::cri::api::{ContainerState, ContainerStatus};
use crate::cri::client::CriClient;
use crate::shim::cri_log::{LogTail, Record, Stream};

/// How often a followed log and its container's state are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A complete line of output.
#[derive(Debug, PartialEq, Eq)]
struct Line {
    stream: Stream,
    text: Vec<u8>,
}

/// Joins partial records into lines. The two streams' records interleave in the file, so
/// each stream has its own unfinished line.
#[derive(Default)]
struct LineJoiner {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl LineJoiner {
    /// Adds a record; returns the line it completes, if it is a full (`F`) record.
    fn push(&mut self, record: Record) -> Option<Line> {
        let pending = match record.stream {
            Stream::Stdout => &mut self.stdout,
            Stream::Stderr => &mut self.stderr,
        };
        pending.extend_from_slice(&record.content);
        (!record.partial).then(|| Line {
            stream: record.stream,
            text: std::mem::take(pending),
        })
    }
}

/// A log file that may still be growing, read line by line: each read returns the lines
/// completed since the last one.
struct LogReader {
    path: PathBuf,
    records: LogTail,
    joiner: LineJoiner,
}

impl LogReader {
    fn new(path: &Path) -> LogReader {
        LogReader {
            path: path.to_path_buf(),
            records: LogTail::from_start(path),
            joiner: LineJoiner::default(),
        }
    }

    /// The lines completed since the last read. A file not there (yet) has none.
    fn read_lines(&mut self) -> Result<Vec<Line>, CliError> {
        let records = self
            .records
            .read_records()
            .map_err(|source| CliError::File {
                path: self.path.display().to_string(),
                source,
            })?;
        Ok(records
            .into_iter()
            .filter_map(|record| self.joiner.push(record))
            .collect())
    }
}

/// Writes each line to the stream it came from.
fn print(lines: &[Line]) -> Result<(), CliError> {
    let output_error = |source| CliError::File {
        path: "output".to_string(),
        source,
    };
    let (mut stdout, mut stderr) = (std::io::stdout().lock(), std::io::stderr().lock());
    for line in lines {
        let sink: &mut dyn Write = match line.stream {
            Stream::Stdout => &mut stdout,
            Stream::Stderr => &mut stderr,
        };
        sink.write_all(&line.text).map_err(output_error)?;
        sink.write_all(b"\n").map_err(output_error)?;
    }
    stdout.flush().map_err(output_error)?;
    stderr.flush().map_err(output_error)
}

/// The last `count` lines.
fn tail(lines: Vec<Line>, count: Option<usize>) -> Vec<Line> {
    match count {
        Some(count) if count < lines.len() => {
            let skip = lines.len() - count;
            lines.into_iter().skip(skip).collect()
        }
        _ => lines,
    }
}

/// `crius logs [-f] [--tail N] CONTAINER`: prints the log; `follow` keeps printing what
/// the container writes until it exits.
pub async fn logs(
    address: &str,
    key: &str,
    follow: bool,
    lines: Option<usize>,
) -> Result<String, CliError> {
    let mut client = CriClient::connect(address).await?;
    let container = resolve::container(&mut client, key).await?;
    let (status, _) = container_status(&mut client, &container.id, false).await?;
    if status.log_path.is_empty() {
        return Err(CliError::NoLog(key.to_string()));
    }
    let mut reader = LogReader::new(Path::new(&status.log_path));
    print(&tail(reader.read_lines()?, lines))?;
    if follow {
        follow_log(&mut client, &container.id, &mut reader).await?;
    }
    Ok(String::new())
}

/// Prints the log of container `id` from its start until the container exits; returns
/// its final status, or `None` when it was removed meanwhile.
pub(super) async fn follow_from_start(
    client: &mut CriClient,
    id: &str,
    log_path: &Path,
) -> Result<Option<ContainerStatus>, CliError> {
    follow_log(client, id, &mut LogReader::new(log_path)).await
}

async fn follow_log(
    client: &mut CriClient,
    id: &str,
    reader: &mut LogReader,
) -> Result<Option<ContainerStatus>, CliError> {
    loop {
        print(&reader.read_lines()?)?;
        match container_status(client, id, false)
            .await
            .map(|(status, _)| status)
        {
            Ok(status) if status.state != ContainerState::ContainerExited as i32 => {}
            Ok(status) => {
                print(&reader.read_lines()?)?;
                return Ok(Some(status));
            }
            Err(err) if err.is_not_found() => {
                print(&reader.read_lines()?)?;
                return Ok(None);
            }
            Err(err) => return Err(err),
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(stream: Stream, text: &str) -> Line {
        Line {
            stream,
            text: text.as_bytes().to_vec(),
        }
    }

    #[test]
    fn partial_records_join_per_stream() {
        let mut joiner = LineJoiner::default();
        let record = |stream, partial, content: &'static str| Record {
            stream,
            partial,
            content: content.as_bytes().to_vec(),
        };
        assert_eq!(joiner.push(record(Stream::Stdout, true, "long ")), None);
        assert_eq!(
            joiner.push(record(Stream::Stderr, false, "err")),
            Some(line(Stream::Stderr, "err"))
        );
        assert_eq!(joiner.push(record(Stream::Stdout, true, "line ")), None);
        assert_eq!(
            joiner.push(record(Stream::Stdout, false, "ends")),
            Some(line(Stream::Stdout, "long line ends"))
        );
        assert_eq!(
            joiner.push(record(Stream::Stdout, false, "next")),
            Some(line(Stream::Stdout, "next"))
        );
    }

    #[test]
    fn a_growing_file_is_read_record_by_record() {
        use std::fs::File;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut reader = LogReader::new(&path);
        assert!(reader.read_lines().unwrap().is_empty(), "no file yet");
        let mut file = File::create(&path).unwrap();
        file.write_all(b"t stdout F one\nt stdout P tw").unwrap();
        assert_eq!(
            reader.read_lines().unwrap(),
            vec![line(Stream::Stdout, "one")]
        );
        // The rest of a half-written record, then the end of its partial line.
        file.write_all(b"o-\nt stderr F e\nt stdout F three\n")
            .unwrap();
        assert_eq!(
            reader.read_lines().unwrap(),
            vec![line(Stream::Stderr, "e"), line(Stream::Stdout, "two-three")]
        );
        assert!(reader.read_lines().unwrap().is_empty());
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let lines = || {
            vec![
                line(Stream::Stdout, "a"),
                line(Stream::Stderr, "b"),
                line(Stream::Stdout, "c"),
            ]
        };
        assert_eq!(
            tail(lines(), Some(2)),
            vec![line(Stream::Stderr, "b"), line(Stream::Stdout, "c")]
        );
        assert_eq!(tail(lines(), Some(0)), vec![]);
        assert_eq!(tail(lines(), Some(5)).len(), 3);
        assert_eq!(tail(lines(), None).len(), 3);
    }
}
