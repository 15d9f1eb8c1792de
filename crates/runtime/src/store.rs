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
//! The file is a **snapshot**, not a log: writes are kept in memory, visible to reads at once,
//! and reach the file with the next [`Store::snapshot`], which the runtime takes about once a
//! second and at stop together with the stream position it covers — one synced commit, so
//! handling an input never waits for the file. A crash (or a drop without a snapshot) reopens
//! the file as of the last snapshot or durable write (never half-written), and the agent
//! replays its inputs from that snapshot's position: JetStream is the log. [`Store::write_durably`] is for the rare write that must be on disk before the agent
//! does something no replay can undo (the executor's claim before a real external action).
//! Between commits the file does not change, so reads share one read transaction until the
//! next commit.

use std::collections::BTreeMap;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
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
}

fn def(name: &'static str) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(name)
}

/// Changes by table and key, encoded; `None` is a removal.
type Changes = BTreeMap<(&'static str, String), Option<Vec<u8>>>;

/// One agent instance's state file.
#[derive(Debug, Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
    /// Written since the last snapshot and not in the file yet. Reads see these first, so a
    /// write costs a map insert rather than a transaction on the file.
    unsaved: Arc<Mutex<Changes>>,
    /// A read transaction on the file as of the last commit: the file changes only when the
    /// store commits, so reads share one until then instead of beginning one each.
    reader: Arc<Mutex<Option<redb::ReadTransaction>>>,
}

impl Store {
    /// Opens (or creates) the file. A second process opening the same file gets a clear error.
    pub fn open(path: &Path) -> Result<Self, RuntimeError> {
        let db = Database::create(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                RuntimeError::StoreInUse { path: path.display().to_string() }
            }
            other => {
                RuntimeError::Store { path: path.display().to_string(), message: other.to_string() }
            }
        })?;
        Ok(Self {
            db: Arc::new(db),
            path: path.to_owned(),
            unsaved: Arc::default(),
            reader: Arc::default(),
        })
    }

    fn fail(&self, e: impl std::fmt::Display) -> RuntimeError {
        RuntimeError::Store { path: self.path.display().to_string(), message: e.to_string() }
    }

    fn unsaved(&self) -> MutexGuard<'_, Changes> {
        self.unsaved.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn decode<V: DeserializeOwned>(
        &self,
        table: &Table<V>,
        key: &str,
        bytes: &[u8],
    ) -> Result<V, RuntimeError> {
        rmp_serde::from_slice(bytes).map_err(|e| self.fail(format!("{}[{key}]: {e}", table.name)))
    }

    /// The stored bytes: unsaved changes first, then the file.
    fn raw(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, RuntimeError> {
        if let Some(change) = self.unsaved().get(&(table, key.to_owned())) {
            return Ok(change.clone());
        }
        let mut reader = self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = match reader.take() {
            Some(tx) => tx,
            None => self.db.begin_read().map_err(|e| self.fail(e))?,
        };
        let found = match tx.open_table(def(table)) {
            Ok(t) => t.get(key).map_err(|e| self.fail(e))?.map(|b| b.value().to_vec()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(self.fail(e)),
        };
        *reader = Some(tx);
        Ok(found)
    }

    pub fn get<V: DeserializeOwned>(
        &self,
        table: &Table<V>,
        key: &str,
    ) -> Result<Option<V>, RuntimeError> {
        self.raw(table.name, key)?.map(|b| self.decode(table, key, &b)).transpose()
    }

    /// Every entry of a table, in key order (for rebuilding in-memory state at start).
    pub fn scan<V: DeserializeOwned>(
        &self,
        table: &Table<V>,
    ) -> Result<Vec<(String, V)>, RuntimeError> {
        let mut raw: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        {
            let tx = self.db.begin_read().map_err(|e| self.fail(e))?;
            match tx.open_table(def(table.name)) {
                Ok(t) => {
                    for entry in t.iter().map_err(|e| self.fail(e))? {
                        let (k, v) = entry.map_err(|e| self.fail(e))?;
                        raw.insert(k.value().to_owned(), v.value().to_vec());
                    }
                }
                Err(redb::TableError::TableDoesNotExist(_)) => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        for ((name, key), change) in self.unsaved().range((table.name, String::new())..) {
            if *name != table.name {
                break;
            }
            match change {
                Some(bytes) => raw.insert(key.clone(), bytes.clone()),
                None => raw.remove(key),
            };
        }
        raw.into_iter()
            .map(|(k, v)| {
                let value = self.decode(table, &k, &v)?;
                Ok((k, value))
            })
            .collect()
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

    /// Runs `f` as one transaction, applied only if it returns `Ok`. Readers see it at once;
    /// the file gets it with the next [`Store::snapshot`], and a crash before that undoes it
    /// (with everything else written since the last snapshot).
    pub fn write<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut txn = Txn { store: self, staged: Changes::new() };
        let out = f(&mut txn)?;
        // Insert one by one: `BTreeMap::append` rebuilds the whole map on every write.
        let mut unsaved = self.unsaved();
        for (key, change) in txn.staged {
            unsaved.insert(key, change);
        }
        Ok(out)
    }

    /// Like [`Store::write`], and on disk when it returns, together with every write before it.
    /// Only for a fact that must survive a crash before the next snapshot because no replay
    /// can redo it (a claim taken before acting on the world).
    pub fn write_durably<T>(
        &self,
        f: impl FnOnce(&mut Txn<'_>) -> Result<T, RuntimeError>,
    ) -> Result<T, RuntimeError> {
        let mut txn = Txn { store: self, staged: Changes::new() };
        let out = f(&mut txn)?;
        let mut staged = txn.staged;
        self.commit(&mut staged)?;
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
        if !changed && self.unsaved().is_empty() {
            return Ok(false);
        }
        let mut txn = Txn { store: self, staged: Changes::new() };
        f(&mut txn)?;
        let mut staged = txn.staged;
        self.commit(&mut staged)?;
        Ok(true)
    }

    /// Writes the unsaved changes and then `staged` to the file in one synced commit; on
    /// success nothing is unsaved any more.
    fn commit(&self, staged: &mut Changes) -> Result<(), RuntimeError> {
        let mut unsaved = self.unsaved();
        let mut tx = self.db.begin_write().map_err(|e| self.fail(e))?;
        tx.set_durability(redb::Durability::Immediate).map_err(|e| self.fail(e))?;
        for changes in [&*unsaved, &*staged] {
            let mut open: Option<(&'static str, redb::Table<'_, &'static str, &'static [u8]>)> =
                None;
            for ((name, key), change) in changes {
                if open.as_ref().is_none_or(|(n, _)| n != name) {
                    drop(open.take());
                    let t = tx.open_table(def(name)).map_err(|e| self.fail(e))?;
                    open = Some((name, t));
                }
                let Some((_, t)) = open.as_mut() else { continue };
                match change {
                    Some(bytes) => t.insert(key.as_str(), bytes.as_slice()).map(|_| ()),
                    None => t.remove(key.as_str()).map(|_| ()),
                }
                .map_err(|e| self.fail(e))?;
            }
        }
        tx.commit().map_err(|e| self.fail(e))?;
        // Reads from now on must see this commit (they see the unsaved changes until they are
        // cleared below); the old read transaction also kept freed pages from being reused.
        self.reader.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
        unsaved.clear();
        staged.clear();
        Ok(())
    }
}

/// A transaction in progress: its changes, applied together when it ends well.
#[allow(missing_debug_implementations)]
pub struct Txn<'a> {
    store: &'a Store,
    staged: Changes,
}

impl Txn<'_> {
    pub fn get<V: DeserializeOwned>(
        &mut self,
        table: &Table<V>,
        key: &str,
    ) -> Result<Option<V>, RuntimeError> {
        let raw = match self.staged.get(&(table.name, key.to_owned())) {
            Some(change) => change.clone(),
            None => self.store.raw(table.name, key)?,
        };
        raw.map(|b| self.store.decode(table, key, &b)).transpose()
    }

    pub fn put<V: Serialize>(
        &mut self,
        table: &Table<V>,
        key: &str,
        value: &V,
    ) -> Result<(), RuntimeError> {
        let bytes = rmp_serde::to_vec_named(value).map_err(|e| self.store.fail(e))?;
        self.staged.insert((table.name, key.to_owned()), Some(bytes));
        Ok(())
    }

    pub fn remove<V>(&mut self, table: &Table<V>, key: &str) -> Result<(), RuntimeError> {
        self.staged.insert((table.name, key.to_owned()), None);
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
            assert!(store.snapshot(false, |_| Ok(())).unwrap());
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
    fn what_no_snapshot_covered_is_gone_after_reopening_and_removals_shadow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.redb");
        {
            let store = Store::open(&path).unwrap();
            store.put(&COUNTS, "kept", &1).unwrap();
            store.put(&COUNTS, "removed", &2).unwrap();
            store.snapshot(false, |_| Ok(())).unwrap();
            store.remove(&COUNTS, "removed").unwrap();
            store.put(&COUNTS, "unsaved", &3).unwrap();
            assert_eq!(store.get(&COUNTS, "removed").unwrap(), None, "a removal is read at once");
            assert_eq!(
                store.scan(&COUNTS).unwrap(),
                vec![("kept".to_owned(), 1), ("unsaved".to_owned(), 3)],
                "scans merge the unsaved changes into the file"
            );
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.scan(&COUNTS).unwrap(),
            vec![("kept".to_owned(), 1), ("removed".to_owned(), 2)],
            "reopened as of the last snapshot"
        );
        store.write_durably(|tx| tx.put(&COUNTS, "claim", &4)).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(
            store.get(&COUNTS, "claim").unwrap(),
            Some(4),
            "a durable write needs no snapshot"
        );
    }

    #[test]
    fn reads_after_a_commit_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("s.redb")).unwrap();
        store.put(&COUNTS, "a", &1).unwrap();
        assert!(store.snapshot(false, |_| Ok(())).unwrap());
        // Read from the file (not the unsaved changes) before and after the next commit.
        assert_eq!(store.get(&COUNTS, "a").unwrap(), Some(1));
        assert_eq!(store.get(&COUNTS, "b").unwrap(), None);
        store.put(&COUNTS, "b", &2).unwrap();
        store.write_durably(|tx| tx.remove(&COUNTS, "a")).unwrap();
        assert_eq!(store.get(&COUNTS, "b").unwrap(), Some(2), "committed, no longer unsaved");
        assert_eq!(store.get(&COUNTS, "a").unwrap(), None, "removed by the commit");
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
