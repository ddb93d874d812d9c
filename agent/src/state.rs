//! What the agent persists in its data dir, so a restart (or kill -9) loses nothing:
//! `agent.json` (its container instance ARN, the next report sequence number and the reports
//! not yet acknowledged) and `tasks/<id>.json` (each task it holds, with what it knows of it).
//! Every file is replaced atomically (write, fsync, rename).

use berth_proto::v1::{Task, TaskDefinition, TaskStateChange};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A persistence failure, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct StateError {
    path: String,
    message: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError {
        path: path.display().to_string(),
        message: e.to_string(),
    }
}

/// Runs blocking file I/O (fsync) without stalling other tasks on a multi-threaded runtime.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// Writes `value` as JSON to `path` atomically.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec(value).map_err(|e| err(path, e))?;
    blocking(|| write_atomically(path, &bytes))
}

fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| err(&tmp, e))?;
    f.write_all(bytes).map_err(|e| err(&tmp, e))?;
    f.sync_all().map_err(|e| err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| err(path, e))
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| err(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(path, e)),
    }
}

/// The agent's own state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    /// The container instance this host registered as.
    pub container_instance_arn: Option<String>,
    /// The cluster it registered in.
    pub cluster: Option<String>,
    /// The sequence number of the next report.
    pub next_seq: u64,
    /// Reports the controller has not acknowledged, in order.
    pub outbox: Vec<TaskStateChange>,
}

/// A task the agent holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskRecord {
    /// The task as the controller assigned it.
    pub task: Task,
    /// Its task definition with overrides applied.
    pub definition: TaskDefinition,
    /// RUNNING or STOPPED.
    pub desired_status: String,
    /// What the agent knows of it (the last report's content).
    pub state: TaskStateChange,
    /// Stop signals of the containers' images, by container name.
    #[serde(default)]
    pub stop_signals: std::collections::BTreeMap<String, String>,
}

/// Paths in the data dir.
#[derive(Debug, Clone)]
pub struct DataDir(pub PathBuf);

impl DataDir {
    /// `agent.json`.
    pub fn agent(&self) -> PathBuf {
        self.0.join("agent.json")
    }
    /// `tasks/<id>.json`.
    pub fn task(&self, id: &str) -> PathBuf {
        self.0.join("tasks").join(format!("{id}.json"))
    }
    /// `logs/<task>/<container>.log`.
    pub fn log(&self, task_id: &str, container: &str) -> PathBuf {
        self.0
            .join("logs")
            .join(task_id)
            .join(format!("{container}.log"))
    }
    /// Every task record on disk.
    pub fn load_tasks(&self) -> Result<Vec<TaskRecord>, StateError> {
        let dir = self.0.join("tasks");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(err(&dir, e)),
        };
        let mut out = Vec::new();
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "json") {
                if let Some(r) = read_json::<TaskRecord>(&p)? {
                    out.push(r);
                }
            }
        }
        Ok(out)
    }
}
