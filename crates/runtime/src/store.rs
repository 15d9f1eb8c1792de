//! A small typed layer over redb for agent state.
//!
//! Each agent instance owns one redb file in its data dir. Tables map string keys to
//! MessagePack values and are declared as typed constants:
//!
//! ```
//! use agent_runtime::store::{Store, Table};
//! const VERSIONS: Table<String> = Table::new("versions");
//! # let dir = tempfile::tempdir().unwrap();
//! let store = Store::open(&dir.path().join("state.redb")).unwrap();
//! store.put(&VERSIONS, "prod/payments-api", &"1.15.0".to_owned()).unwrap();
//! assert_eq!(store.get(&VERSIONS, "prod/payments-api").unwrap().as_deref(), Some("1.15.0"));
//! ```
//!
//! Several changes that must land together go through [`Store::write`], one transaction.
//!
//! The file is a **snapshot**, not a log: writes are visible at once but reach the disk with the
//! next [`Store::snapshot`], which the runtime takes about once a second and at stop together
//! with the stream position it covers. A crash reopens the file as of the last snapshot (never
//! half-written), and the agent replays its inputs from that snapshot's position: JetStream is
//! the log. [`Store::write_durably`] is for the rare write that must be on disk before the agent
//! does something no replay can undo (the executor's claim before a real external action).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::RuntimeError;

/// A named table whose values are `V`.
#[derive(Debug)]
pub struct Table<V> {
    name: &'static str,
    _value: PhantomData<fn() -> V>,
}

impl<V> Table<V> {
    pub const fn new(name: &'static str) -> Self {
        Self { name, _value: PhantomData }
    }

    fn def(&self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

/// One agent instance's state file.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// Written since the last durable commit.
    unsaved: Arc<AtomicBool>,
}

impl Store {
    /// Opens (or creates) the file. A second process opening the same file gets a clear error.
    pub fn open(path: &Path) -> Result<Self, RuntimeError> {
        let db = Database::create(path).map_err(|e| {
            let message = match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    "already open in another process: is another instance with the same --instance and --data-dir running?".to_owned()
                }
                other => other.to_string(),
            };
            RuntimeError::Store { path: path.display().to_string(), message }
        })?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_owned(),
            unsaved: Arc::new(AtomicBool::new(false)),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Store { path: self.path.display().to_string(), message: e.to_string() }
    }

    pub fn get<V: DeserializeOwned>(
        &self,
        table: &Table<V>,
        key: &str,
    ) -> Result<Option<V>, RuntimeError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let t = match tx.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.fail(e)),
        };
        let Some(bytes) = t.get(key).map_err(|e| self.fail(e))? else { return Ok(None) };
        rmp_serde::from_slice(bytes.value())
            .map(Some)
            .map_err(|e| self.fail(format!("{}[{key}]: {e}", table.name)))
    }

    /// Every entry of a table, in key order (for rebuilding in-memory state at start).
    pub fn scan<V: DeserializeOwned>(
        &self,
        table: &Table<V>,
    ) -> Result<Vec<(String, V)>, RuntimeError> {
        let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
        let t = match tx.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.fail(e)),
        };
        let mut out =
            Vec::with_capacity(usize::try_from(t.len().map_err(|e| self.fail(e))?).unwrap_or(0));
        for entry in t.iter().map_err(|e| self.fail(e))? {
            let (k, v) = entry.map_err(|e| self.fail(e))?;
            let value = rmp_serde::from_slice(v.value())
                .map_err(|e| self.fail(format!("{}[{}]: {e}", table.name, k.value())))?;
            out.push((k.value().to_owned(), value));
        }
        Ok(out)
    }

    pub fn put<V: Serialize>(
        &self,
        table: &Table<V>,
        key: &str,
        value: &V,
    ) -> Result<(), RuntimeError> {
        self.write(|tx| tx.put(table, key, value))
    }

    pub fn remove<V>(&self, table: &Table<V>, key: &str) -> Result<(), RuntimeError> {
        self.write(|tx| tx.remove(table, key))
    }

    /// Runs `f` in one write transaction, applied only if it returns `Ok`. Readers see it at
    /// once; the disk gets it with the next [`Store::snapshot`], and a crash before that undoes
    /// it (with everything else written since the last snapshot).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let out = self.commit(redb::Durability::None, f)?;
        self.unsaved.store(true, Ordering::Release);
        Ok(out)
    }

    /// Like [`Store::write`], and on disk when it returns, together with every write before it.
    /// Only for a fact that must survive a crash before the next snapshot because no replay
    /// can redo it (a claim taken before acting on the world).
    pub fn write_durably<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let out = self.commit(redb::Durability::Immediate, f)?;
        self.unsaved.store(false, Ordering::Release);
        Ok(out)
    }

    /// Makes everything written so far durable, together with what `f` writes (the stream
    /// positions the snapshot covers), in one commit. Does nothing when nothing was written
    /// since the last one, unless `f` has news (`changed`). Returns whether it wrote.
    pub fn snapshot(
        &self,
        changed: bool,
        f: impl FnOnce(&mut Txn<'_>) -> Result<(), RuntimeError>,
    ) -> Result<bool, RuntimeError> {
        if !self.unsaved.swap(false, Ordering::AcqRel) && !changed {
            return Ok(false);
        }
        let written = self.commit(redb::Durability::Immediate, f);
        if written.is_err() {
            self.unsaved.store(true, Ordering::Release);
        }
        written.map(|()| true)
    }

    fn commit<T>(
        &self,
        durability: redb::Durability,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        tx.set_durability(durability).map_err(|e| self.fail(e))?;
        let out = {
            let mut txn = Txn { tx: &tx, store: self };
            f(&mut txn)?
        };
        tx.commit().map_err(|e| self.fail(e))?;
        Ok(out)
    }
}

/// A write transaction in progress.
#[allow(missing_debug_implementations)]
pub struct Txn<'a> {
    tx: &'a redb::WriteTransaction,
    store: &'a Store,
}

impl Txn<'_> {
    pub fn get<V: DeserializeOwned>(
        &mut self,
        table: &Table<V>,
        key: &str,
    ) -> Result<Option<V>, RuntimeError> {
        let t = self.tx.open_table(table.def()).map_err(|e| self.store.fail(e))?;
        let Some(bytes) = t.get(key).map_err(|e| self.store.fail(e))? else { return Ok(None) };
        rmp_serde::from_slice(bytes.value()).map(Some).map_err(|e| self.store.fail(e))
    }

    pub fn put<V: Serialize>(
        &mut self,
        table: &Table<V>,
        key: &str,
        value: &V,
    ) -> Result<(), RuntimeError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| self.store.fail(e))?;
        let mut t = self.tx.open_table(table.def()).map_err(|e| self.store.fail(e))?;
        t.insert(key, bytes.as_slice()).map_err(|e| self.store.fail(e))?;
        Ok(())
    }

    pub fn remove<V>(&mut self, table: &Table<V>, key: &str) -> Result<(), RuntimeError> {
        let mut t = self.tx.open_table(table.def()).map_err(|e| self.store.fail(e))?;
        t.remove(key).map_err(|e| self.store.fail(e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COUNTS: Table<u64> = Table::new("counts");

    #[test]
    fn values_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(&COUNTS, "a", &1).unwrap();
            store
                .write(|tx| {
                    let a = tx.get(&COUNTS, "a")?.unwrap_or(0);
                    tx.put(&COUNTS, "b", &(a + 1))
                })
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.scan(&COUNTS).unwrap(), vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
        store.remove(&COUNTS, "a").unwrap();
        assert_eq!(store.get(&COUNTS, "a").unwrap(), None);
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        let r: Result<(), _> = store.write(|tx| {
            tx.put(&COUNTS, "a", &1)?;
            Err(RuntimeError::ShuttingDown)
        });
        assert!(r.is_err());
        assert_eq!(store.get(&COUNTS, "a").unwrap(), None);
    }

    #[test]
    fn a_write_is_read_at_once_and_made_durable_by_the_next_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(&COUNTS, "lazy", &1).unwrap();
            assert_eq!(store.get(&COUNTS, "lazy").unwrap(), Some(1));
            assert!(store.snapshot(false, |tx| tx.put(&COUNTS, "position", &2)).unwrap());
            assert!(!store.snapshot(false, |_| Ok(())).unwrap(), "nothing written since");
            assert!(store.snapshot(true, |tx| tx.put(&COUNTS, "position", &3)).unwrap());
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get(&COUNTS, "lazy").unwrap(), Some(1));
        assert_eq!(store.get(&COUNTS, "position").unwrap(), Some(3));
    }

    #[test]
    fn missing_tables_read_as_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        assert_eq!(store.get(&COUNTS, "x").unwrap(), None);
        assert!(store.scan(&COUNTS).unwrap().is_empty());
    }

    #[test]
    fn a_second_open_in_this_process_is_refused_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        let _first = Store::open(&path).unwrap();
        let err = Store::open(&path).unwrap_err();
        assert!(err.to_string().contains("same --instance"), "{err}");
    }
}
