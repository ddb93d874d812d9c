//! An in-memory [`Store`] for unit tests of the service layer.

use super::{Store, StoreError, Write};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Keeps everything in a map; loses it all on drop.
#[derive(Default)]
pub struct MemoryStore {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Store for MemoryStore {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let map = self.map.lock().map_err(|_| StoreError::Backend {
            op: "scan",
            message: "poisoned".into(),
        })?;
        Ok(map
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        let mut map = self.map.lock().map_err(|_| StoreError::Backend {
            op: "commit",
            message: "poisoned".into(),
        })?;
        for w in writes {
            match w {
                Write::Put(k, v) => {
                    map.insert(k, v);
                }
                Write::Delete(k) => {
                    map.remove(&k);
                }
            }
        }
        Ok(())
    }
}
