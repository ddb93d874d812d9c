//! Where the controller's state lives. The service layer sees only [`Store`]: a small
//! transactional key-value interface that an embedded file ([`redb_store::RedbStore`]) implements
//! today and a distributed backend (etcd: keys, prefix ranges, multi-key transactions) can later.
//!
//! Keys are `KIND/ID` strings; values are the protobuf encoding of the object, so the stored form
//! is the one model defined in `proto/`.

pub mod memory;
pub mod redb_store;

/// A failure of the backing store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend failed (I/O, corruption, a lost lease...).
    #[error("{op} failed: {message}")]
    Backend {
        /// What was being done.
        op: &'static str,
        /// The backend's message.
        message: String,
    },
    /// A stored value did not decode.
    #[error("stored value {key} does not decode: {source}")]
    Decode {
        /// The key.
        key: String,
        /// The decoder's error.
        source: prost::DecodeError,
    },
}

/// One change in an atomic batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// Set `key` to `value`.
    Put(String, Vec<u8>),
    /// Remove `key`.
    Delete(String),
}

/// A transactional key-value store.
pub trait Store: Send + Sync + 'static {
    /// Every key with this prefix and its value, in key order.
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies all writes or none, durably, before returning.
    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError>;
}

/// Runs a blocking store call without stalling other tasks on a multi-threaded runtime.
pub(crate) fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}
