//! A task's stdio as the Task API carries it (CreateTaskRequest and ExecProcessRequest's
//! `stdin`, `stdout`, `stderr`), in containerd's forms (`pkg/process/io.go`, `createIO`):
//!
//! - empty: nothing (`/dev/null`);
//! - a bare path: containerd's shims open it as a FIFO if it is one and append to it if
//!   it is an existing regular file (`copyPipes`); crius-shim creates it if missing;
//! - `file:///path`: a file that *both* output streams are appended to (containerd takes
//!   the path from `stdout`), created with its directory if missing;
//! - `binary:///path?args`: a logging binary, which crius-shim does not run.
//!
//! The path of a `file://` URI is percent-encoded, as Go's `url.Parse` decodes it.

use std::path::{Path, PathBuf};

use super::ShimError;

/// Where one stdio stream of a task goes, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioTarget {
    Null,
    /// A bare path: a FIFO or a file.
    Path(PathBuf),
    /// A `file://` URI's path.
    File(PathBuf),
}

impl StdioTarget {
    /// The path it names, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            StdioTarget::Null => None,
            StdioTarget::Path(path) | StdioTarget::File(path) => Some(path),
        }
    }
}

/// Parses one stdio stream of a Task request.
pub fn parse(uri: &str) -> Result<StdioTarget, ShimError> {
    if uri.is_empty() {
        return Ok(StdioTarget::Null);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(StdioTarget::Path(PathBuf::from(uri)));
    };
    match scheme {
        "file" => {
            // `file:///p` and `file://localhost/p`; no other host is local.
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(ShimError::InvalidArgument(format!(
                    "stdio {uri:?}: a file URI needs an absolute path (file:///path)"
                )));
            }
            let path = path.split(['?', '#']).next().unwrap_or_default();
            Ok(StdioTarget::File(PathBuf::from(percent_decode(uri, path)?)))
        }
        "fifo" => Ok(StdioTarget::Path(PathBuf::from(rest))),
        _ => Err(ShimError::InvalidArgument(format!(
            "stdio {uri:?}: scheme {scheme}:// is not supported (use a path or file://)"
        ))),
    }
}

/// `path` as a `file://` URI; an empty path stays empty (no file: the shim's default,
/// as [`parse`] reads it back), since `file://` alone names nothing.
pub fn file_uri(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    if path.as_os_str().is_empty() {
        return String::new();
    }
    let mut uri = String::from("file://");
    for &byte in path.as_os_str().as_bytes() {
        if byte.is_ascii_alphanumeric() || b"/-._~".contains(&byte) {
            uri.push(byte as char);
        } else {
            uri.push_str(&format!("%{byte:02X}"));
        }
    }
    uri
}

fn percent_decode(uri: &str, encoded: &str) -> Result<String, ShimError> {
    use std::os::unix::ffi::OsStringExt;
    let invalid = || ShimError::InvalidArgument(format!("stdio {uri:?}: bad percent-encoding"));
    let bytes = encoded.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        if bytes[at] == b'%' {
            let hex = encoded.get(at + 1..at + 3).ok_or_else(invalid)?;
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
            at += 3;
        } else {
            decoded.push(bytes[at]);
            at += 1;
        }
    }
    std::ffi::OsString::from_vec(decoded)
        .into_string()
        .map_err(|_| invalid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_file_uris_and_nothing() {
        assert_eq!(parse("").unwrap(), StdioTarget::Null);
        assert_eq!(
            parse("/var/log/x.log").unwrap(),
            StdioTarget::Path("/var/log/x.log".into())
        );
        assert_eq!(
            parse("file:///var/log/x.log").unwrap(),
            StdioTarget::File("/var/log/x.log".into())
        );
        assert_eq!(
            parse("file://localhost/a%20b").unwrap(),
            StdioTarget::File("/a b".into())
        );
        assert!(parse("binary:///usr/bin/logger?x=1").is_err());
        assert!(parse("file://host/x").is_err());
    }

    #[test]
    fn file_uris_round_trip() {
        let path = Path::new("/var/log/pods/ns_name_uid/c/0 %.log");
        let uri = file_uri(path);
        assert_eq!(uri, "file:///var/log/pods/ns_name_uid/c/0%20%25.log");
        assert_eq!(parse(&uri).unwrap(), StdioTarget::File(path.to_path_buf()));
        // A container without a log path (CRI allows it): no file, not `file://`.
        assert_eq!(parse(&file_uri(Path::new(""))).unwrap(), StdioTarget::Null);
    }
}
