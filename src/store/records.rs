//! A persistent set of records of one kind (sandboxes, containers): an in-memory index in
//! front of one JSON file per record, each written atomically. Every change goes through
//! [`RecordStore::insert`], [`RecordStore::update`] or [`RecordStore::remove`], which write
//! the file before the index changes, so what the index says is on disk.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{atomic, StoreError};

/// A record with an id that names its file.
pub trait Record: Serialize + DeserializeOwned + Clone {
    fn id(&self) -> &str;
}

pub struct RecordStore<T> {
    dir: PathBuf,
    records: RwLock<BTreeMap<String, T>>,
}

/// An id prefix that matched more than one record.
#[derive(Debug, thiserror::Error)]
#[error("id prefix {0:?} is ambiguous")]
pub struct AmbiguousPrefix(pub String);

impl<T: Record> RecordStore<T> {
    /// Loads every record under `dir` (created if missing); unreadable files are skipped
    /// with a warning.
    pub fn open(dir: &Path) -> Result<RecordStore<T>, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io {
            action: "create",
            path: dir.to_path_buf(),
            source,
        })?;
        let entries = std::fs::read_dir(dir).map_err(|source| StoreError::Io {
            action: "list",
            path: dir.to_path_buf(),
            source,
        })?;
        let mut records = BTreeMap::new();
        for path in entries.flatten().map(|entry| entry.path()) {
            if path.extension().is_none_or(|ext| ext != "json") {
                continue;
            }
            let parsed = std::fs::read(&path)
                .map_err(|err| err.to_string())
                .and_then(|bytes| {
                    serde_json::from_slice::<T>(&bytes).map_err(|err| err.to_string())
                });
            match parsed {
                Ok(record) => {
                    records.insert(record.id().to_string(), record);
                }
                Err(err) => {
                    tracing::warn!(path = %path.display(), "skipping unreadable record: {err}")
                }
            }
        }
        Ok(RecordStore {
            dir: dir.to_path_buf(),
            records: RwLock::new(records),
        })
    }

    pub fn get(&self, id: &str) -> Option<T> {
        self.read().get(id).cloned()
    }

    pub fn list(&self) -> Vec<T> {
        self.read().values().cloned().collect()
    }

    /// The record whose id is `id` or starts with it (as `crictl` and Docker accept).
    pub fn find(&self, id_or_prefix: &str) -> Result<Option<T>, AmbiguousPrefix> {
        let records = self.read();
        if let Some(record) = records.get(id_or_prefix) {
            return Ok(Some(record.clone()));
        }
        if id_or_prefix.is_empty() {
            return Ok(None);
        }
        let mut matches = records
            .range(id_or_prefix.to_string()..)
            .take_while(|(id, _)| id.starts_with(id_or_prefix));
        match (matches.next(), matches.next()) {
            (Some((_, record)), None) => Ok(Some(record.clone())),
            (None, _) => Ok(None),
            (Some(_), Some(_)) => Err(AmbiguousPrefix(id_or_prefix.to_string())),
        }
    }

    pub fn insert(&self, record: T) -> Result<(), StoreError> {
        let mut records = self.write();
        self.persist(&record)?;
        records.insert(record.id().to_string(), record);
        Ok(())
    }

    /// Applies `change` to the record `id` and persists it; `None` when there is no such
    /// record. The one way a stored record changes.
    pub fn update(&self, id: &str, change: impl FnOnce(&mut T)) -> Result<Option<T>, StoreError> {
        let mut records = self.write();
        let Some(current) = records.get(id) else {
            return Ok(None);
        };
        let mut updated = current.clone();
        change(&mut updated);
        self.persist(&updated)?;
        records.insert(id.to_string(), updated.clone());
        Ok(Some(updated))
    }

    /// Forgets `id`; an unknown id is not an error.
    pub fn remove(&self, id: &str) -> Result<Option<T>, StoreError> {
        let mut records = self.write();
        if !records.contains_key(id) {
            return Ok(None);
        }
        atomic::remove_file(&self.path(id))?;
        Ok(records.remove(id))
    }

    fn persist(&self, record: &T) -> Result<(), StoreError> {
        let path = self.path(record.id());
        let bytes = serde_json::to_vec_pretty(record).map_err(|source| StoreError::Corrupt {
            path: path.clone(),
            source,
        })?;
        atomic::write_file(&path, &bytes)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn read(&self) -> RwLockReadGuard<'_, BTreeMap<String, T>> {
        self.records
            .read()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, BTreeMap<String, T>> {
        self.records
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Thing {
        id: String,
        value: u32,
    }

    impl Record for Thing {
        fn id(&self) -> &str {
            &self.id
        }
    }

    fn thing(id: &str, value: u32) -> Thing {
        Thing {
            id: id.into(),
            value,
        }
    }

    #[test]
    fn insert_update_remove_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = RecordStore::<Thing>::open(dir.path()).unwrap();
        store.insert(thing("abc1", 1)).unwrap();
        store.insert(thing("abd2", 2)).unwrap();
        assert_eq!(
            store
                .update("abc1", |t| t.value = 10)
                .unwrap()
                .unwrap()
                .value,
            10
        );
        assert!(store.update("zzz", |t| t.value = 0).unwrap().is_none());
        let reopened = RecordStore::<Thing>::open(dir.path()).unwrap();
        assert_eq!(reopened.get("abc1").unwrap().value, 10);
        assert_eq!(reopened.find("abd").unwrap().unwrap().id, "abd2");
        assert!(reopened.find("ab").is_err(), "ambiguous prefix");
        assert!(reopened.find("x").unwrap().is_none());
        assert!(reopened.remove("abc1").unwrap().is_some());
        assert!(reopened.remove("abc1").unwrap().is_none());
        assert_eq!(
            RecordStore::<Thing>::open(dir.path()).unwrap().list(),
            vec![thing("abd2", 2)]
        );
    }
}
