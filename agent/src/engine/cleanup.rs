//! The cleanup wait (ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION, `--task-cleanup-wait`): when a task
//! is STOPPED its processes, cgroups and network go at once (the actor's `finish`), while its
//! containerd containers, their snapshots, the task's own files (volumes, /etc files) and its
//! local log files stay until the wait has passed, so they can be inspected.
//!
//! Each stopped task's removal is persisted as `cleanup/<task-id>.json` with its due time
//! (wall clock) before the task is reported STOPPED, independent of the task record (which
//! goes when the controller has recorded the task stopped): an agent start removes what is
//! overdue at once and schedules the rest. A removal that keeps failing stays on disk for the
//! next agent start.

use super::task::CLEANUP_ATTEMPTS;
use super::Shared;
use crate::cgroups::Cgroups;
use crate::runtime::Runtime;
use crate::state::{read_json, remove, write_json, DataDir, StateError, TaskRecord};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::{info, warn, Instrument};

/// ECS's default cleanup wait (3 h).
pub const DEFAULT_WAIT: Duration = Duration::from_secs(3 * 3600);

/// A stopped task's pending removal, as persisted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Cleanup {
    /// The task's ARN.
    pub task_arn: String,
    /// The task's short id.
    pub task_id: String,
    /// When to remove, in milliseconds since the Unix epoch.
    pub due_unix_ms: u64,
    /// Its containerd container IDs.
    pub containers: Vec<String>,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Cleanup {
    /// The removal of a task stopping now, due after `wait`.
    pub fn new(rec: &TaskRecord, id: &str, wait: Duration) -> Self {
        Self {
            task_arn: rec.task.task_arn.clone(),
            task_id: id.to_string(),
            due_unix_ms: unix_ms(SystemTime::now() + wait),
            containers: rec
                .state
                .containers
                .iter()
                .filter_map(|c| c.runtime_id.clone())
                .collect(),
        }
    }

    /// How long until it is due (zero when overdue).
    fn remaining(&self) -> Duration {
        let now = unix_ms(SystemTime::now());
        Duration::from_millis(self.due_unix_ms.saturating_sub(now))
    }
}

/// `cleanup/<id>.json`.
pub fn path(dir: &DataDir, id: &str) -> PathBuf {
    dir.0.join("cleanup").join(format!("{id}.json"))
}

/// How often a cleanup held back by undelivered output says so in the agent's log.
const LOG_WAIT_REPORT: Duration = Duration::from_secs(600);

/// `logs/<id>/`: the task's log files.
pub fn log_dir(dir: &DataDir, id: &str) -> PathBuf {
    dir.0.join("logs").join(id)
}

/// Every pending removal on disk (an unreadable file is logged and left).
pub fn load(dir: &DataDir) -> Vec<Cleanup> {
    let d = dir.0.join("cleanup");
    let Ok(entries) = std::fs::read_dir(&d) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        match read_json::<Cleanup>(&p) {
            Ok(Some(c)) => out.push(c),
            Ok(None) => {}
            Err(e) => warn!(error = %e, "unreadable cleanup entry; left in place"),
        }
    }
    out
}

/// Tasks whose removal is pending, by ARN: their containers are no orphans.
#[derive(Debug, Default)]
pub struct Pending(Mutex<HashSet<String>>);

impl Pending {
    /// Whether the task's removal is pending.
    pub fn contains(&self, arn: &str) -> bool {
        self.0.lock().map(|s| s.contains(arn)).unwrap_or(false)
    }
    fn insert(&self, arn: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.insert(arn.to_string());
        }
    }
    fn remove(&self, arn: &str) {
        if let Ok(mut s) = self.0.lock() {
            s.remove(arn);
        }
    }
}

/// Parses a duration as `3h`, `90s`, `1h30m`, `500ms`, `2d` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(n) = s.parse::<u64>() {
        return Ok(Duration::from_secs(n));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("{s:?}: expected a number before {rest:?}"));
        }
        let n: u64 = rest[..digits].parse().map_err(|e| format!("{s:?}: {e}"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let one = match unit {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86400),
            "" => return Err(format!("{s:?}: a unit (ms, s, m, h, d) must follow {n}")),
            other => {
                return Err(format!(
                    "{s:?}: unknown unit {other:?} (use ms, s, m, h or d)"
                ))
            }
        };
        total = u32::try_from(n)
            .ok()
            .and_then(|n| one.checked_mul(n))
            .and_then(|d| total.checked_add(d))
            .ok_or_else(|| format!("{s:?}: too long"))?;
    }
    Ok(total)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StateError> + Send + 'static,
) -> Result<T, String> {
    match tokio::time::timeout(Duration::from_secs(10), tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r.map_err(|e| e.to_string()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("did not finish within 10s".into()),
    }
}

fn remove_dir(p: PathBuf) -> Result<(), StateError> {
    match std::fs::remove_dir_all(&p) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io {
            path: p.display().to_string(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Persists a stopped task's removal (bounded; a failure is logged: it is then kept in memory
/// only) and schedules it.
pub(crate) async fn schedule<R: Runtime, C: Cgroups>(shared: &Arc<Shared<R, C>>, c: Cleanup) {
    let file = path(&shared.config.data_dir, &c.task_id);
    let entry = c.clone();
    if let Err(e) = blocking(move || write_json(&file, &entry)).await {
        warn!(error = %e, "cannot persist the task's cleanup; an agent restart before it is due leaves its containers");
    }
    start(shared, c);
}

/// Runs a removal at its due time (at once when overdue), in the background.
pub(crate) fn start<R: Runtime, C: Cgroups>(shared: &Arc<Shared<R, C>>, c: Cleanup) {
    shared.cleanup.insert(&c.task_arn);
    let shared = shared.clone();
    let span = tracing::info_span!("cleanup", task = %c.task_id);
    tokio::spawn(
        async move {
            tokio::time::sleep(c.remaining()).await;
            // Never before the log driver has the containers' output: a controller outage
            // longer than the cleanup wait must not take the undelivered lines with the spool
            // (`logs_e2e::a_stopped_tasks_undelivered_output_holds_its_cleanup_across_an_agent_restart`).
            if let Some(logs) = shared.config.logs.clone() {
                let dir = log_dir(&shared.config.data_dir, &c.task_id);
                while !logs.wait_delivered(&dir, LOG_WAIT_REPORT).await {
                    warn!(
                        "task cleanup waits for its containers' output to reach their log driver"
                    );
                }
            }
            for attempt in 0..CLEANUP_ATTEMPTS {
                match remove_now(&shared, &c).await {
                    Ok(()) => {
                        info!("task cleaned up: containers, snapshots, files and logs removed");
                        shared.cleanup.remove(&c.task_arn);
                        return;
                    }
                    Err(e) => warn!(error = %e, attempt, "task cleanup failed"),
                }
                tokio::time::sleep(Duration::from_secs(1) * (1 << attempt.min(5))).await;
            }
            warn!("task cleanup keeps failing; the next agent start tries again");
        }
        .instrument(span),
    );
}

/// Removes the task's containers (with their snapshots), its files and logs, then the entry.
async fn remove_now<R: Runtime, C: Cgroups>(
    shared: &Arc<Shared<R, C>>,
    c: &Cleanup,
) -> Result<(), String> {
    let after = shared.config.timeouts.call;
    for cid in &c.containers {
        match tokio::time::timeout(after, shared.runtime.delete(cid)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err(format!("delete {cid}: no answer within {after:?}")),
        }
    }
    // Task volumes (NFS ones unmounted first; a volume still mounted is never removed).
    crate::volumes::cleanup(&shared.config.data_dir.0, &c.task_id)
        .await
        .map_err(|e| e.to_string())?;
    let dir = shared.config.data_dir.clone();
    let id = c.task_id.clone();
    blocking(move || {
        // Never remove through a mount: ipcMode task's /dev/shm is normally gone at STOPPED.
        let shm = dir.task_files(&id).join("shm");
        crate::runtime::options::unmount_task_shm(&shm).map_err(|e| StateError::Io {
            path: shm.display().to_string(),
            source: e,
        })?;
        remove_dir(dir.task_files(&id))?;
        remove_dir(log_dir(&dir, &id))?;
        remove(&path(&dir, &id))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_as_the_agent_config_writes_them() {
        assert_eq!(parse_duration("3h"), Ok(Duration::from_secs(10800)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("45"), Ok(Duration::from_secs(45)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("3x").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("10").is_ok());
        assert!(parse_duration("5 m").is_err());
    }
}
