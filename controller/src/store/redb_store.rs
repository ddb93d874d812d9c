//! The embedded store: one redb file under the controller's data dir. Each commit is a durable
//! (fsync'd) transaction, so a controller killed at any point restarts with every acknowledged
//! change.

use super::{blocking, Store, StoreError, Write};
use redb::{Database, TableDefinition};
use std::path::Path;

const OBJECTS: TableDefinition<&str, &[u8]> = TableDefinition::new("objects");

/// A [`Store`] in a single redb database file.
pub struct RedbStore {
    db: Database,
}

fn backend(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> StoreError {
    move |e| StoreError::Backend {
        op,
        message: e.to_string(),
    }
}

impl RedbStore {
    /// Opens (or creates) the database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Backend {
            op: "open",
            message: format!("{}: {e}", path.display()),
        })?;
        // Make sure the table exists so reads of a fresh store find it.
        let txn = db.begin_write().map_err(|e| backend("open")(&e))?;
        txn.open_table(OBJECTS).map_err(|e| backend("open")(&e))?;
        txn.commit().map_err(|e| backend("open")(&e))?;
        Ok(Self { db })
    }
}

impl Store for RedbStore {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        blocking(|| {
            let err = backend("scan");
            let txn = self.db.begin_read().map_err(|e| err(&e))?;
            let table = txn.open_table(OBJECTS).map_err(|e| err(&e))?;
            let mut out = Vec::new();
            for item in table.range(prefix..).map_err(|e| err(&e))? {
                let (k, v) = item.map_err(|e| err(&e))?;
                if !k.value().starts_with(prefix) {
                    break;
                }
                out.push((k.value().to_string(), v.value().to_vec()));
            }
            Ok(out)
        })
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        blocking(|| {
            let err = backend("commit");
            let txn = self.db.begin_write().map_err(|e| err(&e))?;
            {
                let mut table = txn.open_table(OBJECTS).map_err(|e| err(&e))?;
                for w in &writes {
                    match w {
                        Write::Put(k, v) => {
                            table
                                .insert(k.as_str(), v.as_slice())
                                .map_err(|e| err(&e))?;
                        }
                        Write::Delete(k) => {
                            table.remove(k.as_str()).map_err(|e| err(&e))?;
                        }
                    }
                }
            }
            txn.commit().map_err(|e| err(&e))
        })
    }
}
