//! The task engine: one actor per task (see [`task`]), converging on the controller's desired
//! tasks and reporting every state change through the [`reporter::Reporter`].

pub mod reporter;
pub mod task;

use crate::cgroups::Cgroups;
use crate::runtime::Runtime;
use crate::state::{write_json, DataDir, TaskRecord};
use berth_proto::v1::{ContainerStateChange, DesiredTasks, TaskStateChange};
use reporter::Reporter;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::{error, info, warn};

/// Settings of the engine.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The data dir.
    pub data_dir: DataDir,
    /// The cluster (for container labels).
    pub cluster: String,
    /// Default time between the stop signal and SIGKILL (ECS_CONTAINER_STOP_TIMEOUT).
    pub stop_timeout: Duration,
    /// Privileged containers, pids limit, no_new_privs: applied to every container.
    pub security: crate::runtime::spec::SecurityOptions,
}

/// What an actor is told.
#[derive(Debug)]
pub enum Event {
    /// The controller wants the task stopped.
    Stop {
        /// stoppedReason to show.
        reason: String,
        /// stopCode to show.
        code: String,
    },
    /// A container's process exited.
    Exited {
        /// Container name.
        name: String,
        /// Exit status.
        status: u32,
    },
}

struct Entry {
    tx: Option<mpsc::UnboundedSender<Event>>,
    /// The last state reported.
    state: TaskStateChange,
    /// Whether the controller has been told it did not list this task.
    reported_unknown: bool,
}

pub(crate) struct Shared<R, C> {
    pub runtime: Arc<R>,
    pub cgroups: Arc<C>,
    pub reporter: Arc<Reporter>,
    pub config: EngineConfig,
    entries: Mutex<HashMap<String, Entry>>,
}

/// The engine.
pub struct Engine<R, C> {
    shared: Arc<Shared<R, C>>,
}

impl<R, C> Clone for Engine<R, C> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
        }
    }
}

/// The short task id of a task ARN.
pub fn task_id(arn: &str) -> String {
    berth_proto::arn::short_id("task", arn)
        .unwrap_or(arn)
        .to_string()
}

impl<R: Runtime, C: Cgroups> Shared<R, C> {
    /// Persists the record, reports its state and remembers it.
    pub(crate) fn publish(&self, rec: &TaskRecord) {
        let id = task_id(&rec.task.task_arn);
        if let Err(e) = write_json(&self.config.data_dir.task(&id), rec) {
            error!(task = %id, error = %e, "cannot persist task state");
        }
        if let Err(e) = self.reporter.report(rec.state.clone()) {
            error!(task = %id, error = %e, "cannot persist report");
        }
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(e) = entries.get_mut(&id) {
                e.state = rec.state.clone();
                if rec.state.last_status == "STOPPED" {
                    e.tx = None;
                }
            }
        }
    }
}

impl<R: Runtime, C: Cgroups> Engine<R, C> {
    /// Creates the engine and resumes every task persisted in the data dir.
    pub fn start(
        runtime: Arc<R>,
        cgroups: Arc<C>,
        reporter: Arc<Reporter>,
        config: EngineConfig,
    ) -> Result<Self, crate::state::StateError> {
        let records = config.data_dir.load_tasks()?;
        let engine = Self {
            shared: Arc::new(Shared {
                runtime,
                cgroups,
                reporter,
                config,
                entries: Mutex::new(HashMap::new()),
            }),
        };
        for rec in records {
            info!(task = %rec.task.task_arn, status = %rec.state.last_status, "resuming task");
            engine.spawn(rec, true);
        }
        Ok(engine)
    }

    fn spawn(&self, rec: TaskRecord, recovering: bool) {
        let id = task_id(&rec.task.task_arn);
        let stopped = rec.state.last_status == "STOPPED";
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut entries) = self.shared.entries.lock() {
            entries.insert(
                id,
                Entry {
                    tx: (!stopped).then(|| tx.clone()),
                    state: rec.state.clone(),
                    reported_unknown: false,
                },
            );
        }
        if stopped {
            return;
        }
        let actor = task::TaskActor::new(self.shared.clone(), rec, tx, rx);
        tokio::spawn(actor.run(recovering));
    }

    /// Converges on the controller's desired tasks. Never stops a task the controller did not
    /// name as STOPPED: a task missing from `desired` is reported so the controller can confirm.
    pub fn apply_desired(&self, desired: &DesiredTasks) {
        let mut wanted = std::collections::HashSet::new();
        let mut to_spawn = Vec::new();
        let mut to_report = Vec::new();
        {
            let Ok(mut entries) = self.shared.entries.lock() else {
                return;
            };
            for a in &desired.tasks {
                let Some(task) = &a.task else { continue };
                let id = task_id(&task.task_arn);
                wanted.insert(id.clone());
                match entries.get_mut(&id) {
                    Some(e) => {
                        if a.desired_status == "STOPPED" {
                            if let Some(tx) = &e.tx {
                                let _ = tx.send(Event::Stop {
                                    reason: a
                                        .stopped_reason
                                        .clone()
                                        .unwrap_or_else(|| "Task stopped by user".into()),
                                    code: a
                                        .stop_code
                                        .clone()
                                        .unwrap_or_else(|| "UserInitiated".into()),
                                });
                            } else if e.state.last_status == "STOPPED" {
                                // Stopped here; make sure the controller hears it again.
                                to_report.push(e.state.clone());
                            }
                        }
                    }
                    None => match (&a.task_definition, a.desired_status.as_str()) {
                        (Some(td), "RUNNING") => {
                            let state = TaskStateChange {
                                task_arn: task.task_arn.clone(),
                                last_status: task.last_status.clone(),
                                containers: task
                                    .containers
                                    .iter()
                                    .map(|c| ContainerStateChange {
                                        name: c.name.clone(),
                                        last_status: c.last_status.clone(),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            };
                            to_spawn.push(TaskRecord {
                                task: task.clone(),
                                definition: td.clone(),
                                desired_status: "RUNNING".into(),
                                state,
                                stop_signals: Default::default(),
                            });
                        }
                        _ => {
                            // Wanted stopped and not here (never started, or long cleaned up).
                            to_report.push(TaskStateChange {
                                task_arn: task.task_arn.clone(),
                                last_status: "STOPPED".into(),
                                stop_code: a.stop_code.clone(),
                                stopped_reason: a.stopped_reason.clone(),
                                containers: task
                                    .containers
                                    .iter()
                                    .map(|c| ContainerStateChange {
                                        name: c.name.clone(),
                                        last_status: "STOPPED".into(),
                                        ..Default::default()
                                    })
                                    .collect(),
                                ..Default::default()
                            });
                        }
                    },
                }
            }
            let mut forget = Vec::new();
            for (id, e) in entries.iter_mut() {
                if wanted.contains(id) {
                    e.reported_unknown = false;
                    continue;
                }
                if e.state.last_status == "STOPPED" {
                    // The controller has recorded it stopped: nothing left to keep.
                    forget.push(id.clone());
                } else if !e.reported_unknown {
                    e.reported_unknown = true;
                    let mut s = e.state.clone();
                    s.unknown_to_controller = true;
                    warn!(task = %id, "running task not in the controller's desired set; asking it to confirm");
                    to_report.push(s);
                }
            }
            for id in forget {
                entries.remove(&id);
                let _ = std::fs::remove_file(self.shared.config.data_dir.task(&id));
            }
        }
        for s in to_report {
            if let Err(e) = self.shared.reporter.report(s) {
                error!(error = %e, "cannot persist report");
            }
        }
        for rec in to_spawn {
            tracing::debug!(task = %rec.task.task_arn, "task assigned");
            let id = task_id(&rec.task.task_arn);
            if let Err(e) = write_json(&self.shared.config.data_dir.task(&id), &rec) {
                error!(task = %id, error = %e, "cannot persist new task; not starting it");
                continue;
            }
            self.spawn(rec, false);
        }
    }

    /// Number of tasks held (running or not yet forgotten).
    pub fn task_count(&self) -> usize {
        self.shared.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests;
