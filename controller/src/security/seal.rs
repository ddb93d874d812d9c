//! Sealing secrets at rest: ChaCha20-Poly1305 (RustCrypto's `chacha20poly1305`) under the
//! controller's 32-byte master key, a fresh random nonce per seal, and the record's store key as
//! associated data, so a sealed value moved to another key does not open.
//!
//! The master key lives in a file (0600; created with random bytes on first start) or is given
//! by the operator (`--master-key-file`). Losing it loses every sealed value.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
/// The first byte of every sealed value: the format, so another one can follow.
const VERSION: u8 = 1;

/// Why sealing or unsealing failed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("master key {path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file does not hold a key.
    #[error("master key {path}: {why}")]
    BadKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// A sealed value did not open: wrong key, wrong record or tampered.
    #[error("a sealed value of {0} does not open with this master key (another key, or tampered)")]
    Open(String),
}

/// Seals and opens values under the master key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<master key>)")
    }
}

impl Sealer {
    /// A sealer with this key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
        }
    }

    /// Loads the key in `path`, creating it (random, mode 0600) when `create` and it is absent.
    /// The file holds the key as 64 hex digits (a trailing newline allowed); a file readable by
    /// others than its owner is refused.
    pub fn from_file(path: &Path, create: bool) -> Result<Self, SealError> {
        let io = |source| SealError::Io {
            path: path.to_path_buf(),
            source,
        };
        if create && !path.exists() {
            let mut key = [0u8; KEY_LEN];
            rand::fill(&mut key);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            f.write_all(format!("{}\n", hex::encode(key)).as_bytes())
                .map_err(io)?;
            f.sync_all().map_err(io)?;
            return Ok(Self::new(&key));
        }
        let meta = std::fs::metadata(path).map_err(io)?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(SealError::BadKey {
                path: path.to_path_buf(),
                why: format!(
                    "mode {:o} lets others read it; chmod 600",
                    meta.permissions().mode() & 0o777
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(io)?;
        let bytes = hex::decode(text.trim()).map_err(|e| SealError::BadKey {
            path: path.to_path_buf(),
            why: format!("not 64 hex digits: {e}"),
        })?;
        let key: [u8; KEY_LEN] = bytes.try_into().map_err(|b: Vec<u8>| SealError::BadKey {
            path: path.to_path_buf(),
            why: format!("{} bytes, a key is {KEY_LEN}", b.len()),
        })?;
        Ok(Self::new(&key))
    }

    /// Seals `plain` for the record stored under `record_key`.
    pub fn seal(&self, record_key: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::fill(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: record_key.as_bytes(),
                },
            )
            // Only a plaintext beyond ChaCha20's 256 GiB limit fails.
            .unwrap_or_default();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// Opens what [`Sealer::seal`] sealed for `record_key`.
    pub fn open(&self, record_key: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let fail = || SealError::Open(record_key.to_string());
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != VERSION {
            return Err(fail());
        }
        let (nonce, body) = sealed[1..].split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: record_key.as_bytes(),
                },
            )
            .map_err(|_| fail())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_only_for_its_record_and_key_and_hides_its_plaintext() {
        let s = Sealer::new(&[7u8; 32]);
        let sealed = s.seal("secret/db", b"hunter2-plaintext");
        assert!(!sealed.windows(b"hunter2".len()).any(|w| w == b"hunter2"));
        assert_eq!(s.open("secret/db", &sealed).unwrap(), b"hunter2-plaintext");
        assert!(s.open("secret/other", &sealed).is_err());
        assert!(Sealer::new(&[8u8; 32]).open("secret/db", &sealed).is_err());
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        assert!(s.open("secret/db", &tampered).is_err());
        // Two seals of the same value differ (fresh nonces).
        assert_ne!(sealed, s.seal("secret/db", b"hunter2-plaintext"));
    }

    #[test]
    fn the_key_file_is_made_0600_reloaded_and_refused_when_others_can_read_it() {
        let dir = std::env::temp_dir().join(format!("berth-seal-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("master.key");
        let a = Sealer::from_file(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Sealer::from_file(&path, false).unwrap();
        assert_eq!(b.open("k", &a.seal("k", b"v")).unwrap(), b"v");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Sealer::from_file(&path, false).unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
