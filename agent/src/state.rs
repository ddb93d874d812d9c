//! What the agent persists in its data dir, so a restart (or kill -9) loses nothing:
//! `agent.json` (its container instance ARN and cluster) and `tasks/<id>.json` (each task it
//! holds, with the latest state it knows of it: the outbox is the set of those states the
//! controller has not acknowledged). Every file is replaced atomically (write, fsync, rename),
//! always on a blocking thread, never on an async worker.

use berth_proto::v1::{Task, TaskDefinition, TaskStateChange};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A persistence failure, naming the file and keeping the cause.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is not what the agent wrote.
    #[error("{path}: {source}")]
    Json {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The blocking thread doing the write did not finish.
    #[error("{path}: the writing thread failed: {source}")]
    Thread {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: tokio::task::JoinError,
    },
}

fn io(path: &Path, source: std::io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn json(path: &Path, source: serde_json::Error) -> StateError {
    StateError::Json {
        path: path.display().to_string(),
        source,
    }
}

/// Serialises `value` as the JSON bytes written for `path`.
pub fn to_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StateError> {
    serde_json::to_vec(value).map_err(|e| json(path, e))
}

/// Writes `value` as JSON to `path` atomically. Blocking: call it on a blocking thread.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    write_atomically(path, &to_json(path, value)?)
}

/// Writes `bytes` to `path` atomically (write, fsync, rename). Blocking.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(bytes).map_err(|e| io(&tmp, e))?;
    f.sync_all().map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))
}

/// Removes `path`; succeeds when it is already gone. Blocking.
pub fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(path, e)),
        _ => Ok(()),
    }
}

/// Reads JSON from `path`; `None` when the file does not exist.
pub fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>, StateError> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| json(path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(path, e)),
    }
}

/// The agent's own state. (Files written by older agents also hold `next_seq` and `outbox`:
/// ignored, since every task's latest state is in its own file and is resent after a start.)
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    /// The container instance this host registered as.
    pub container_instance_arn: Option<String>,
    /// The cluster it registered in.
    pub cluster: Option<String>,
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
    /// The OOM-kill count of each container's cgroup when its current run began (a restart
    /// in place keeps the cgroup and its counter); absent: 0, a new cgroup.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub oom_kills_before: std::collections::BTreeMap<String, u64>,
    /// pidMode/ipcMode task: the host PID whose namespaces each joining container joined (the
    /// holder's init), by container name; a restart in place rejoins only that process.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub namespace_holders: std::collections::BTreeMap<String, u32>,
    /// The host's boot id (`/proc/sys/kernel/random/boot_id`) when the agent last ran the
    /// task's containers. A different one at recovery means the host rebooted since, so
    /// containers that are gone did not survive the reboot (none in records written before it
    /// was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The controller's part of an awsvpc task's network, as last assigned (a later
    /// DesiredTasks may bring new ingress rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task_network: Option<berth_proto::v1::TaskNetwork>,
    /// The task's network as allocated (written before anything of it is created, so a
    /// restarted agent can finish or remove it); `None` until allocated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::network::TaskNetworkState>,
    /// Whether `network` was set up (its interface is attached).
    #[serde(default)]
    pub network_set_up: bool,
    /// Whether `network` was torn down and released (it stays for the reports).
    #[serde(default)]
    pub network_released: bool,
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
    /// `logs/<task>/<container>.log`: the name a container's output files are derived from
    /// (`<container>.stdout.log`, `.stderr.log`, their FIFOs and indexes: [`crate::logs::ContainerLogPaths`]).
    pub fn log(&self, task_id: &str, container: &str) -> PathBuf {
        self.0
            .join("logs")
            .join(task_id)
            .join(format!("{container}.log"))
    }
    /// `tasks/<id>/`: the task's own files (its containers' /etc files), removed at cleanup.
    pub fn task_files(&self, id: &str) -> PathBuf {
        self.0.join("tasks").join(id)
    }
    /// `tasks/<id>/etc/<container>/`: a container's hosts, hostname and resolv.conf.
    pub fn etc(&self, id: &str, container: &str) -> PathBuf {
        self.task_files(id).join("etc").join(container)
    }
    /// Every task record on disk.
    pub fn load_tasks(&self) -> Result<Vec<TaskRecord>, StateError> {
        let dir = self.0.join("tasks");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(&dir, e)),
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
