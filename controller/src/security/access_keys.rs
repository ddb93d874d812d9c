//! IAM-style access keys: the id and secret API calls are signed with (SigV4). Each key is
//! `full` or `read-only`; its secret is sealed under the master key in `accesskey/ID` and shown
//! only once, by [`AccessKeys::create`]. On a store with no key, [`AccessKeys::bootstrap_admin`]
//! makes the first one and writes it to a 0600 credentials file, like k3s's token.

use crate::security::seal::{SealError, Sealer};
use crate::store::{self, Store, StoreError, Write};
use berth_proto::v1::AccessKeyRecord;
use prost::Message as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;
use std::sync::Arc;

/// Store key prefix of access keys.
pub const PREFIX: &str = "accesskey/";
/// The user of the first key.
pub const ADMIN_USER: &str = "admin";
/// IAM's quota of access keys per user.
pub const KEYS_PER_USER: usize = 2;

/// What a key may call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    /// Every call.
    Full,
    /// Describe*, List* and Get* calls only.
    ReadOnly,
}

impl Permissions {
    /// The stored and shown name: `full` or `read-only`.
    pub fn as_str(self) -> &'static str {
        match self {
            Permissions::Full => "full",
            Permissions::ReadOnly => "read-only",
        }
    }

    /// Parses `full` or `read-only`.
    pub fn parse(s: &str) -> Result<Permissions, AccessKeyError> {
        match s {
            "full" => Ok(Permissions::Full),
            "read-only" => Ok(Permissions::ReadOnly),
            other => Err(AccessKeyError::InvalidInput(format!(
                "Permissions '{other}' is not valid: use full or read-only"
            ))),
        }
    }
}

/// Why an access-key operation failed. The doc of each variant is IAM's exception name.
#[derive(Debug, thiserror::Error)]
pub enum AccessKeyError {
    /// NoSuchEntity
    #[error("The Access Key with id {0} cannot be found.")]
    NoSuchEntity(String),
    /// InvalidInput
    #[error("{0}")]
    InvalidInput(String),
    /// LimitExceeded
    #[error("Cannot exceed quota for AccessKeysPerUser: {KEYS_PER_USER}")]
    LimitExceeded,
    /// DeleteConflict
    #[error("Cannot delete access key {0}: it is the last full key, and without it nobody could manage keys; create another full key first")]
    LastFullKey(String),
    /// ServiceFailure: the store failed.
    #[error("access keys: {0}")]
    Store(#[from] StoreError),
    /// ServiceFailure: a sealed secret did not open.
    #[error("access keys: {0}")]
    Seal(#[from] SealError),
    /// ServiceFailure: the credentials file could not be written.
    #[error("writing {path}: {source}")]
    File {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

impl AccessKeyError {
    /// IAM's error code for this error (what the aws CLI prints in parentheses).
    pub fn exception_name(&self) -> &'static str {
        match self {
            AccessKeyError::NoSuchEntity(_) => "NoSuchEntity",
            AccessKeyError::InvalidInput(_) => "InvalidInput",
            AccessKeyError::LimitExceeded => "LimitExceeded",
            AccessKeyError::LastFullKey(_) => "DeleteConflict",
            AccessKeyError::Store(_) | AccessKeyError::Seal(_) | AccessKeyError::File { .. } => {
                "ServiceFailure"
            }
        }
    }
}

impl From<AccessKeyError> for tonic::Status {
    fn from(e: AccessKeyError) -> Self {
        let code = match &e {
            AccessKeyError::NoSuchEntity(_) => tonic::Code::NotFound,
            AccessKeyError::InvalidInput(_) => tonic::Code::InvalidArgument,
            AccessKeyError::LimitExceeded => tonic::Code::ResourceExhausted,
            AccessKeyError::LastFullKey(_) => tonic::Code::FailedPrecondition,
            _ => tonic::Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        status.metadata_mut().insert(
            berth_proto::exceptions::METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(e.exception_name()),
        );
        status
    }
}

/// A key with its secret, as verification needs it. Debug never shows the secret.
#[derive(Clone)]
pub struct KeyWithSecret {
    /// The record (its `sealed_secret` still sealed).
    pub record: AccessKeyRecord,
    /// The secret access key.
    pub secret: String,
}

impl std::fmt::Debug for KeyWithSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyWithSecret")
            .field("access_key_id", &self.record.access_key_id)
            .field("user_name", &self.record.user_name)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// The access keys, over the store.
pub struct AccessKeys {
    store: Arc<dyn Store>,
    sealer: Sealer,
    /// Held across each check-then-commit (the per-user quota, the last full key), so two
    /// concurrent deletes cannot both pass the last-full-key check.
    changes: std::sync::Mutex<()>,
    /// The keys found by [`AccessKeys::lookup`], so a signed call does not read the store and
    /// open the sealed secret each time (issue 13's bench: a store read per call on the blocking
    /// pool). Only keys that exist are kept; a delete drops its key and bumps the generation,
    /// so a lookup that read the store before the delete does not put the key back.
    found: std::sync::Mutex<Found>,
}

#[derive(Default)]
struct Found {
    generation: u64,
    keys: std::collections::HashMap<String, KeyWithSecret>,
}

fn random_from(alphabet: &[u8], n: usize) -> String {
    // Alphabets of 32 or 64 symbols divide 256: `byte % len` is uniform.
    debug_assert!(256 % alphabet.len() == 0);
    let mut bytes = vec![0u8; n];
    rand::fill(&mut bytes[..]);
    bytes
        .iter()
        .map(|b| alphabet[*b as usize % alphabet.len()] as char)
        .collect()
}

/// A new key id: `AKIA` and 16 base-32 characters, as AWS's.
fn new_key_id() -> String {
    format!(
        "AKIA{}",
        random_from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", 16)
    )
}

/// A new 40-character secret (240 random bits).
fn new_secret() -> String {
    random_from(
        b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/",
        40,
    )
}

impl AccessKeys {
    /// Keys over `store`, secrets sealed with `sealer`.
    pub fn new(store: Arc<dyn Store>, sealer: Sealer) -> AccessKeys {
        AccessKeys {
            store,
            sealer,
            changes: std::sync::Mutex::new(()),
            found: std::sync::Mutex::new(Found::default()),
        }
    }

    fn all(&self) -> Result<Vec<AccessKeyRecord>, AccessKeyError> {
        let rows = store::blocking(|| self.store.scan(PREFIX))?;
        rows.into_iter()
            .map(|(key, v)| {
                AccessKeyRecord::decode(v.as_slice())
                    .map_err(|source| StoreError::Decode { key, source }.into())
            })
            .collect()
    }

    /// Creates a key for `user_name`; returns its record and its secret (shown only now).
    pub fn create(
        &self,
        user_name: &str,
        permissions: Permissions,
    ) -> Result<KeyWithSecret, AccessKeyError> {
        validate_user_name(user_name)?;
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        if self
            .all()?
            .iter()
            .filter(|k| k.user_name == user_name)
            .count()
            >= KEYS_PER_USER
        {
            return Err(AccessKeyError::LimitExceeded);
        }
        let id = new_key_id();
        let secret = new_secret();
        let key = format!("{PREFIX}{id}");
        let record = AccessKeyRecord {
            user_name: user_name.to_string(),
            access_key_id: id,
            sealed_secret: self.sealer.seal(&key, secret.as_bytes()),
            create_date: Some(berth_proto::now()),
            permissions: permissions.as_str().to_string(),
        };
        store::blocking(|| {
            self.store
                .commit(vec![Write::Put(key, record.encode_to_vec())])
        })?;
        Ok(KeyWithSecret { record, secret })
    }

    /// Every key, sorted by id (their secrets stay sealed).
    pub fn list(&self) -> Result<Vec<AccessKeyRecord>, AccessKeyError> {
        self.all()
    }

    /// The key `id` with its secret; None when there is no such key.
    pub fn lookup(&self, id: &str) -> Result<Option<KeyWithSecret>, AccessKeyError> {
        let generation = {
            let found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(k) = found.keys.get(id) {
                return Ok(Some(k.clone()));
            }
            found.generation
        };
        let read = self.read(id)?;
        if let Some(k) = &read {
            let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
            if found.generation == generation {
                found.keys.insert(id.to_string(), k.clone());
            }
        }
        Ok(read)
    }

    fn read(&self, id: &str) -> Result<Option<KeyWithSecret>, AccessKeyError> {
        let key = format!("{PREFIX}{id}");
        let rows = store::blocking(|| self.store.scan(&key))?;
        let Some((k, v)) = rows.into_iter().find(|(k, _)| *k == key) else {
            return Ok(None);
        };
        let record = AccessKeyRecord::decode(v.as_slice())
            .map_err(|source| StoreError::Decode { key: k, source })?;
        let plain = self.sealer.open(&key, &record.sealed_secret)?;
        let secret =
            String::from_utf8(plain).map_err(|_| SealError::Open(format!("{key} (not UTF-8)")))?;
        Ok(Some(KeyWithSecret { record, secret }))
    }

    /// Deletes key `id` (of `user_name` when given). The last full key is never deleted, so
    /// the keys can always be managed.
    pub fn delete(&self, id: &str, user_name: Option<&str>) -> Result<(), AccessKeyError> {
        let _one_at_a_time = self.changes.lock().unwrap_or_else(|p| p.into_inner());
        let all = self.all()?;
        let Some(target) = all
            .iter()
            .find(|k| k.access_key_id == id && user_name.is_none_or(|u| u == k.user_name))
        else {
            return Err(AccessKeyError::NoSuchEntity(id.to_string()));
        };
        let full = Permissions::Full.as_str();
        if target.permissions == full && all.iter().filter(|k| k.permissions == full).count() == 1 {
            return Err(AccessKeyError::LastFullKey(id.to_string()));
        }
        store::blocking(|| {
            self.store
                .commit(vec![Write::Delete(format!("{PREFIX}{id}"))])
        })?;
        let mut found = self.found.lock().unwrap_or_else(|p| p.into_inner());
        found.generation += 1;
        found.keys.remove(id);
        Ok(())
    }

    /// On a store without any key: creates a full key for `admin` and writes it to
    /// `credentials` (mode 0600, aws credentials-file format, `[default]` profile). Returns the
    /// new key's id, or None when keys exist already. The file is written before the key is
    /// stored, so a failure never leaves a key nobody knows.
    pub fn bootstrap_admin(&self, credentials: &Path) -> Result<Option<String>, AccessKeyError> {
        if !self.all()?.is_empty() {
            return Ok(None);
        }
        let id = new_key_id();
        let secret = new_secret();
        let file_err = |source| AccessKeyError::File {
            path: credentials.display().to_string(),
            source,
        };
        let tmp = credentials.with_extension("credentials.tmp");
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(file_err)?;
        write!(
            f,
            "[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"
        )
        .and_then(|_| f.sync_all())
        .map_err(file_err)?;
        std::fs::rename(&tmp, credentials).map_err(file_err)?;
        let key = format!("{PREFIX}{id}");
        let record = AccessKeyRecord {
            user_name: ADMIN_USER.to_string(),
            access_key_id: id.clone(),
            sealed_secret: self.sealer.seal(&key, secret.as_bytes()),
            create_date: Some(berth_proto::now()),
            permissions: Permissions::Full.as_str().to_string(),
        };
        store::blocking(|| {
            self.store
                .commit(vec![Write::Put(key, record.encode_to_vec())])
        })?;
        Ok(Some(id))
    }
}

/// IAM's user-name rule: 1–64 of `[\w+=,.@-]`.
fn validate_user_name(name: &str) -> Result<(), AccessKeyError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AccessKeyError::InvalidInput(format!(
            "1 validation error detected: Value '{name}' at 'userName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have length 1 to 64"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use std::os::unix::fs::PermissionsExt as _;

    fn keys() -> (AccessKeys, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        (AccessKeys::new(store.clone(), Sealer::new(&[7; 32])), store)
    }

    #[test]
    fn a_created_key_looks_like_aws_and_its_secret_is_sealed() {
        let (keys, store) = keys();
        let k = keys.create("alice", Permissions::ReadOnly).unwrap();
        let id = &k.record.access_key_id;
        assert!(id.starts_with("AKIA") && id.len() == 20, "{id}");
        assert_eq!(k.secret.len(), 40);
        assert_eq!(k.record.permissions, "read-only");
        let stored = store.scan(PREFIX).unwrap();
        assert_eq!(stored.len(), 1);
        let raw = &stored[0].1;
        assert!(!raw
            .windows(k.secret.len())
            .any(|w| w == k.secret.as_bytes()));
        let back = keys.lookup(id).unwrap().unwrap();
        assert_eq!(back.secret, k.secret);
        assert!(!format!("{back:?}").contains(&k.secret));
        assert!(keys.lookup("AKIANOTAKEY000000000").unwrap().is_none());
    }

    #[test]
    fn bad_input_and_quota_are_refused_with_iams_names() {
        let (keys, _) = keys();
        assert_eq!(
            Permissions::parse("admin").unwrap_err().exception_name(),
            "InvalidInput"
        );
        let e = keys.create("bad/name", Permissions::Full).unwrap_err();
        assert_eq!(e.exception_name(), "InvalidInput");
        keys.create("bob", Permissions::Full).unwrap();
        keys.create("bob", Permissions::Full).unwrap();
        let e = keys.create("bob", Permissions::Full).unwrap_err();
        assert_eq!(e.exception_name(), "LimitExceeded");
        let status = tonic::Status::from(e);
        assert_eq!(
            status
                .metadata()
                .get(berth_proto::exceptions::METADATA_KEY)
                .unwrap(),
            "LimitExceeded"
        );
    }

    #[test]
    fn the_last_full_key_is_never_deleted() {
        let (keys, _) = keys();
        let full = keys.create("admin", Permissions::Full).unwrap();
        let ro = keys.create("reader", Permissions::ReadOnly).unwrap();
        let id = full.record.access_key_id.clone();
        let e = keys.delete(&id, None).unwrap_err();
        assert_eq!(e.exception_name(), "DeleteConflict");
        keys.delete(&ro.record.access_key_id, None).unwrap();
        let e = keys.delete(&ro.record.access_key_id, None).unwrap_err();
        assert_eq!(e.exception_name(), "NoSuchEntity");
        assert!(e.to_string().contains(&ro.record.access_key_id));
        let other = keys.create("ops", Permissions::Full).unwrap();
        // Another user's name does not find the key.
        let e = keys.delete(&id, Some("ops")).unwrap_err();
        assert_eq!(e.exception_name(), "NoSuchEntity");
        keys.delete(&id, Some("admin")).unwrap();
        assert_eq!(keys.list().unwrap(), vec![other.record]);
    }

    #[test]
    fn a_deleted_key_is_not_found_though_it_was_looked_up_before() {
        let (keys, _) = keys();
        keys.create("admin", Permissions::Full).unwrap();
        let ro = keys.create("reader", Permissions::ReadOnly).unwrap();
        let id = ro.record.access_key_id.clone();
        // Looked up twice: the second from memory, the same key and secret.
        let first = keys.lookup(&id).unwrap().unwrap();
        let second = keys.lookup(&id).unwrap().unwrap();
        assert_eq!(
            (first.record, first.secret),
            (second.record, second.secret.clone())
        );
        assert_eq!(second.secret, ro.secret);
        keys.delete(&id, None).unwrap();
        assert!(keys.lookup(&id).unwrap().is_none());
        assert!(keys.lookup("AKIANOSUCHKEY0000000").unwrap().is_none());
    }

    #[test]
    fn the_first_start_writes_an_admin_key_file_once() {
        let (keys, _) = keys();
        let dir = std::env::temp_dir().join(format!("berth-ak-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin.credentials");
        let id = keys.bootstrap_admin(&file).unwrap().unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k = keys.lookup(&id).unwrap().unwrap();
        assert_eq!(
            text,
            format!(
                "[default]\naws_access_key_id = {id}\naws_secret_access_key = {}\n",
                k.secret
            )
        );
        assert_eq!(k.record.user_name, "admin");
        assert_eq!(k.record.permissions, "full");
        assert_eq!(keys.bootstrap_admin(&file).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
