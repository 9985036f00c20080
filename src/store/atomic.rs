//! Atomic file replacement: readers see the old content or the new, never a mix, and a
//! crash at any moment leaves one of the two (plus at most a `.tmp-` file that the next
//! writer of the same name overwrites).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use super::StoreError;

/// Writes `bytes` to `path` atomically and durably: temp file in the same directory,
/// fsync, rename over `path`, fsync the directory so the rename itself survives a crash.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let io_error = |action, source| StoreError::Io {
        action,
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".tmp-{name}"));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|source| io_error("create", source))?;
    file.write_all(bytes)
        .map_err(|source| io_error("write", source))?;
    file.sync_all()
        .map_err(|source| io_error("fsync", source))?;
    drop(file);
    std::fs::rename(&temp, path).map_err(|source| io_error("rename into", source))?;
    sync_dir(dir).map_err(|source| io_error("fsync the directory of", source))
}

/// Makes renames and unlinks in `dir` durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Removes `path`; a file that is already gone is not an error.
pub fn remove_file(path: &Path) -> Result<(), StoreError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StoreError::Io {
            action: "remove",
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("record.json");
        write_file(&path, b"one").unwrap();
        write_file(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("record.json")]);
        remove_file(&path).unwrap();
        remove_file(&path).unwrap();
    }
}
