//! The audit log: one JSON line per state-changing API call that reached the controller,
//! allowed or refused, appended to DATA_DIR/audit.log (`--audit-log`) before the response
//! leaves. It names the caller's key id, never a request body (bodies may hold secrets).

use serde::Serialize;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// One audited call.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// When, RFC 3339 UTC.
    pub time: String,
    /// The signing key, or None for an unsigned call (or auth off).
    pub access_key_id: Option<String>,
    /// `ecs`, `ssm`, `iam` or `secretsmanager`.
    pub service: String,
    /// The operation, e.g. `RunTask`.
    pub action: String,
    /// The caller's address, when known.
    pub source_address: Option<String>,
    /// `OK`, or the AWS exception name (else the gRPC code) of a refusal or failure.
    pub outcome: String,
}

impl AuditEntry {
    /// An entry stamped `at`.
    pub fn at(t: SystemTime) -> String {
        prost_types::Timestamp::from(t).to_string()
    }
}

/// Why the audit log could not be written.
#[derive(Debug, thiserror::Error)]
#[error("audit log {path}: {source}")]
pub struct AuditError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    #[source]
    pub source: std::io::Error,
}

/// The open audit log.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl AuditLog {
    /// Opens (creating, mode 0600) `path` for appending.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|source| AuditError {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(AuditLog {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// Appends `entry` as one line and flushes it to the file.
    pub fn append(&self, entry: &AuditEntry) -> Result<(), AuditError> {
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(entry).map_err(|e| err(e.into()))?;
        line.push(b'\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::store::blocking(|| f.write_all(&line).and_then(|_| f.flush())).map_err(err)
    }

    /// Appends any JSON-serialisable entry as one line (ExecuteCommand's session lines);
    /// a failure is logged loudly.
    pub fn record_json<T: Serialize>(&self, entry: &T, action: &str) {
        let err = |source| AuditError {
            path: self.path.clone(),
            source,
        };
        let written = serde_json::to_vec(entry)
            .map_err(|e| err(e.into()))
            .and_then(|mut line| {
                line.push(b'\n');
                let mut f = self
                    .file
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                crate::store::blocking(|| f.write_all(&line).and_then(|_| f.flush())).map_err(err)
            });
        if let Err(e) = written {
            tracing::error!(error = %e, %action, "AUDIT LOG WRITE FAILED: a session is not recorded");
        }
    }

    /// Appends `entry`; a failure is logged loudly (the call itself is not failed for it).
    pub fn record(&self, entry: &AuditEntry) {
        if let Err(e) = self.append(entry) {
            tracing::error!(error = %e, action = %entry.action, access_key_id = ?entry.access_key_id,
                "AUDIT LOG WRITE FAILED: a state-changing call is not recorded");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn entries_are_json_lines_with_awss_names() {
        let dir = std::env::temp_dir().join(format!("berth-audit-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("audit.log");
        let log = AuditLog::open(&path).unwrap();
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160);
        let e = AuditEntry {
            time: AuditEntry::at(t),
            access_key_id: Some("AKIAEXAMPLE".into()),
            service: "ecs".into(),
            action: "RunTask".into(),
            source_address: Some("127.0.0.1:5000".into()),
            outcome: "OK".into(),
        };
        log.append(&e).unwrap();
        log.append(&AuditEntry {
            access_key_id: None,
            outcome: "MissingAuthenticationTokenException".into(),
            ..e.clone()
        })
        .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0],
            serde_json::json!({"time": "2015-08-30T12:36:00Z", "accessKeyId": "AKIAEXAMPLE",
                "service": "ecs", "action": "RunTask", "sourceAddress": "127.0.0.1:5000", "outcome": "OK"})
        );
        assert_eq!(lines[1]["accessKeyId"], serde_json::Value::Null);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
