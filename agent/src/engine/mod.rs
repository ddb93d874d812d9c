//! The task engine: one actor per task (see [`task`]), converging on the controller's desired
//! tasks and reporting every state change through the [`reporter::Reporter`].

pub mod cleanup;
pub mod deps;
pub mod health;
mod net;
pub mod reporter;
pub mod task;
mod unrecorded;

use crate::cgroups::Cgroups;
use crate::network::Network;
use crate::runtime::Runtime;
use crate::state::{DataDir, TaskRecord};
use berth_proto::status::{ContainerStatus, TaskStatus};
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
    /// Bounds on the runtime and cgroup calls the engine makes.
    pub timeouts: Timeouts,
    /// Privileged containers, pids limit, no_new_privs: applied to every container.
    pub security: crate::runtime::spec::SecurityOptions,
    /// Where a task's secrets come from (the link's GetTaskSecrets).
    pub secrets: Arc<dyn crate::secrets::SecretSource>,
    /// This boot's id (see [`crate::state::TaskRecord::boot_id`]); `None` when the kernel did
    /// not tell it.
    pub boot_id: Option<String>,
    /// The nameservers of a container's resolv.conf when neither its definition nor the host
    /// gives a usable one ([`crate::network::NetworkConfig::fallback_dns`]).
    pub fallback_dns: Vec<std::net::Ipv4Addr>,
    /// How long a stopped task's containers, snapshots, files and logs stay (issue 9;
    /// ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION, [`cleanup::DEFAULT_WAIT`]).
    pub task_cleanup_wait: Duration,
    /// Issue 9: the task metadata endpoint (its variables in each container, its listeners in
    /// the task's namespaces); `None`: no endpoint.
    pub metadata: Option<Arc<crate::metadata::Endpoint>>,
    /// Host paths and NFS exports tasks' volumes and environment files may use (issue 9).
    pub volumes: crate::volumes::VolumeConfig,
    /// Issue 10: delivers containers' output to their log drivers; `None`: output stays in
    /// the spool files.
    pub logs: Option<crate::logs::service::LogService>,
    /// Issue 11: the pull behaviour, the pull timeout and the pulls under way.
    pub images: Arc<crate::images::Images>,
}

/// How long the engine gives each kind of call before it counts as failed. `wait` has none: it
/// is a long poll the engine cancels and retries.
#[derive(Debug, Clone)]
pub struct Timeouts {
    /// A containerd call: create, start, kill, state, delete.
    pub call: Duration,
    /// Resolving an image (which may unpack its layers).
    pub image: Duration,
    /// A cgroup file-system operation (create, OOM check, remove).
    pub cgroup: Duration,
    /// A task network operation (setup, set_ingress, teardown, recover): kernel calls and nft.
    pub network: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            call: Duration::from_secs(60),
            image: Duration::from_secs(900),
            cgroup: Duration::from_secs(10),
            network: Duration::from_secs(60),
        }
    }
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
    /// A container's process exited, or its container vanished.
    Exited {
        /// Container name.
        name: String,
        /// The exit status containerd reported; `None` when the container is gone from
        /// containerd and no status can be known (never invented).
        status: Option<u32>,
    },
    /// The controller's part of the task's network as a DesiredTasks carries it (new ingress
    /// rules are applied to a running awsvpc task).
    Network(berth_proto::v1::TaskNetwork),
    /// Issue 9: a container's health check decided (or changed) its health.
    Health {
        /// Container name.
        name: String,
        /// The checker's run number ([`health::Checkers`]): results of a checker no longer
        /// current are dropped.
        run: u64,
        /// Its health now.
        status: berth_proto::status::HealthStatus,
        /// The last check's output, truncated.
        output: String,
    },
    /// Issue 9: containerd did not deliver a stop signal or SIGKILL to a container.
    StopFailed {
        /// Container name.
        name: String,
        /// containerd's message.
        message: String,
    },
}

struct Entry {
    tx: Option<mpsc::UnboundedSender<Event>>,
    /// The last state reported.
    state: TaskStateChange,
    /// Whether the controller has been told it did not list this task.
    reported_unknown: bool,
    /// The task's record as last published (read by the metadata endpoint and the stats).
    record: Arc<TaskRecord>,
    /// The task was run with enableExecuteCommand (issue 9).
    exec_enabled: bool,
}

pub(crate) struct Shared<R, C> {
    pub runtime: Arc<R>,
    pub cgroups: Arc<C>,
    pub network: Arc<dyn Network>,
    pub reporter: Arc<Reporter>,
    pub config: EngineConfig,
    entries: Mutex<HashMap<String, Entry>>,
    /// Tasks known only from their labelled containers, by task ARN.
    unrecorded: Mutex<HashMap<String, unrecorded::UnrecordedTask>>,
    /// True once the network recovery at start is done: no actor touches the network before
    /// (recovery removes what no record names, so a task allocating meanwhile could lose its
    /// namespace).
    network_ready: tokio::sync::watch::Receiver<bool>,
    /// Stopped tasks whose removal after the cleanup wait is pending (issue 9).
    pub(crate) cleanup: cleanup::Pending,
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

/// The stop the controller asks for in an assignment, with ECS's defaults for what it leaves out.
fn stop_event(a: &berth_proto::v1::TaskAssignment) -> Event {
    Event::Stop {
        reason: a
            .stopped_reason
            .clone()
            .unwrap_or_else(|| "Task stopped by user".into()),
        code: a
            .stop_code
            .clone()
            .unwrap_or_else(|| "UserInitiated".into()),
    }
}

/// Whether a task's known state is STOPPED (a state this agent wrote always parses).
fn is_stopped(state: &TaskStateChange) -> bool {
    TaskStatus::parse(&state.last_status) == Ok(TaskStatus::Stopped)
}

/// The short task id of a task ARN.
pub fn task_id(arn: &str) -> String {
    berth_proto::arn::short_id("task", arn)
        .unwrap_or(arn)
        .to_string()
}

/// A record's state as reported: with what a controller that has no record of the task needs
/// to adopt it (its task definition ARN and container images).
fn report_of(rec: &TaskRecord) -> TaskStateChange {
    let mut s = rec.state.clone();
    if s.task_definition_arn.is_none() {
        let arn = if rec.task.task_definition_arn.is_empty() {
            &rec.definition.task_definition_arn
        } else {
            &rec.task.task_definition_arn
        };
        s.task_definition_arn = Some(arn.clone()).filter(|a| !a.is_empty());
    }
    net::decorate(rec, &mut s);
    for c in &mut s.containers {
        if c.image.is_none() {
            c.image = rec
                .definition
                .container_definitions
                .iter()
                .find(|d| d.name == c.name)
                .map(|d| d.image.clone());
        }
    }
    s
}

impl<R: Runtime, C: Cgroups> Shared<R, C> {
    /// Persists the record (off the async workers) and reports its state once it is on disk;
    /// remembers it.
    pub(crate) fn publish(&self, rec: &TaskRecord) {
        let id = task_id(&rec.task.task_arn);
        let report = report_of(rec);
        self.reporter.persist(&id, rec, Some(report.clone()));
        if let Ok(mut entries) = self.entries.lock() {
            if let Some(e) = entries.get_mut(&id) {
                if is_stopped(&rec.state) {
                    e.tx = None;
                }
                e.state = report;
                e.record = Arc::new(rec.clone());
            }
        }
    }

    /// [`Shared::publish`], unless the engine no longer holds the task (the controller has
    /// recorded it stopped and its record is gone: writing it would bring it back).
    pub(crate) fn publish_if_held(&self, rec: &TaskRecord) {
        let id = task_id(&rec.task.task_arn);
        let held = self
            .entries
            .lock()
            .map(|e| e.contains_key(&id))
            .unwrap_or(false);
        if held {
            self.publish(rec);
        }
    }
}

impl<R: Runtime, C: Cgroups> Engine<R, C> {
    /// Creates the engine and resumes every task persisted in the data dir.
    ///
    /// Before any actor touches the network, a background step gives the network the states of
    /// the records still held ([`Network::recover`]: it holds their allocations again and
    /// removes what no record names) and tears down and releases the network of tasks that
    /// were STOPPED with theirs still up (the agent stopped in between).
    pub fn start(
        runtime: Arc<R>,
        cgroups: Arc<C>,
        network: Arc<dyn Network>,
        reporter: Arc<Reporter>,
        config: EngineConfig,
    ) -> Result<Self, crate::state::StateError> {
        let records = config.data_dir.load_tasks()?;
        let (ready_tx, network_ready) = tokio::sync::watch::channel(false);
        let engine = Self {
            shared: Arc::new(Shared {
                runtime,
                cgroups,
                network,
                reporter,
                config,
                entries: Mutex::new(HashMap::new()),
                unrecorded: Mutex::new(HashMap::new()),
                network_ready,
                cleanup: Default::default(),
            }),
        };
        // Stopped tasks' removals: the overdue ones at once, the rest when due.
        for c in cleanup::load(&engine.shared.config.data_dir) {
            // A stopped task's output not yet delivered before the restart goes first.
            if let Some(logs) = &engine.shared.config.logs {
                logs.resume(&cleanup::log_dir(
                    &engine.shared.config.data_dir,
                    &c.task_id,
                ));
            }
            cleanup::start(&engine.shared, c);
        }
        let held: Vec<_> = records
            .iter()
            .filter(|r| !r.network_released)
            .filter_map(|r| r.network.clone())
            .collect();
        let mut stopped_with_network = Vec::new();
        for rec in records {
            info!(task = %rec.task.task_arn, status = %rec.state.last_status, "resuming task");
            // Resent under this process's epoch: the controller may not have stored it.
            engine.shared.reporter.report(report_of(&rec));
            if is_stopped(&rec.state) && rec.network.is_some() && !rec.network_released {
                stopped_with_network.push(rec.clone());
            }
            engine.spawn(rec, true);
        }
        let shared = engine.shared.clone();
        tokio::spawn(async move {
            net::recover(&shared, &held, stopped_with_network).await;
            let _ = ready_tx.send(true);
        });
        Ok(engine)
    }

    /// The log delivery (issue 10), when there is one.
    pub fn logs(&self) -> Option<&crate::logs::service::LogService> {
        self.shared.config.logs.as_ref()
    }

    /// Stops a task for a reason of the agent's own (issue 10: its log destination refused
    /// its events), as a stop the controller asked for would.
    pub fn stop_task(&self, task_arn: &str, reason: String, code: &str) {
        let tx = self
            .shared
            .entries
            .lock()
            .ok()
            .and_then(|e| e.get(&task_id(task_arn)).and_then(|e| e.tx.clone()));
        if let Some(tx) = tx {
            let _ = tx.send(Event::Stop {
                reason,
                code: code.to_string(),
            });
        }
    }

    /// The runtime (ExecuteCommand sessions run their processes through it: `crate::exec`).
    pub fn runtime(&self) -> Arc<R> {
        self.shared.runtime.clone()
    }

    /// The bound on one runtime call.
    pub fn call_timeout(&self) -> Duration {
        self.shared.config.timeouts.call
    }

    /// The containerd id of `container` of task `task_arn`, if an ExecuteCommand session may
    /// run in it: the task was run with enableExecuteCommand and is not stopping, and the
    /// container is RUNNING. Otherwise why not.
    pub fn exec_target(&self, task_arn: &str, container: &str) -> Result<String, String> {
        let entries = self
            .shared
            .entries
            .lock()
            .map_err(|_| "the engine's task table is poisoned".to_string())?;
        let e = entries
            .get(&task_id(task_arn))
            .ok_or_else(|| format!("task {task_arn} is not on this instance"))?;
        if !e.exec_enabled {
            return Err(format!(
                "task {task_arn} was not run with enableExecuteCommand"
            ));
        }
        if e.tx.is_none() || TaskStatus::parse(&e.state.last_status) != Ok(TaskStatus::Running) {
            return Err(format!("task {task_arn} is not RUNNING"));
        }
        let c = e
            .state
            .containers
            .iter()
            .find(|c| c.name == container)
            .ok_or_else(|| format!("task {task_arn} has no container {container}"))?;
        match (&c.runtime_id, ContainerStatus::parse(&c.last_status)) {
            (Some(id), Ok(ContainerStatus::Running)) => Ok(id.clone()),
            _ => Err(format!("container {container} is not RUNNING")),
        }
    }

    fn spawn(&self, rec: TaskRecord, recovering: bool) {
        let id = task_id(&rec.task.task_arn);
        let stopped = is_stopped(&rec.state);
        let (tx, rx) = mpsc::unbounded_channel();
        if let Ok(mut entries) = self.shared.entries.lock() {
            entries.insert(
                id,
                Entry {
                    tx: (!stopped).then(|| tx.clone()),
                    state: report_of(&rec),
                    reported_unknown: false,
                    record: Arc::new(rec.clone()),
                    exec_enabled: rec.task.enable_execute_command == Some(true),
                },
            );
        }
        if stopped {
            return;
        }
        let actor = task::TaskActor::new(self.shared.clone(), rec, tx, rx);
        tokio::spawn(actor.run(recovering));
    }

    /// A new session with the controller has started: its first desired set re-reports every
    /// task the set does not name (the controller may have restarted and lost nothing only if
    /// it hears them again).
    pub fn new_session(&self) {
        if let Ok(mut entries) = self.shared.entries.lock() {
            for e in entries.values_mut() {
                e.reported_unknown = false;
            }
        }
        if let Ok(mut u) = self.shared.unrecorded.lock() {
            for t in u.values_mut() {
                t.reported = false;
            }
        }
    }

    /// Converges on the controller's desired tasks. Never stops a task the controller did not
    /// name as STOPPED: a task missing from `desired` is reported so the controller can confirm.
    /// A partial set (link protocol 2) changes only what it names: a task it does not name
    /// keeps its assignment, and only the tasks in its `removed` are missing from the set.
    pub fn apply_desired(&self, desired: &DesiredTasks) {
        let mut wanted = std::collections::HashSet::new();
        // Partial: the ids the set let go of; whole: every id it does not name.
        let removed: Option<std::collections::HashSet<String>> = desired
            .partial
            .then(|| desired.removed.iter().map(|a| task_id(a)).collect());
        let missing = |id: &String, wanted: &std::collections::HashSet<String>| {
            !wanted.contains(id) && removed.as_ref().is_none_or(|r| r.contains(id))
        };
        let mut to_spawn = Vec::new();
        let mut to_report = Vec::new();
        {
            // A poisoned map is still a map of the tasks held: applying the set to it beats
            // acknowledging a set never applied (a partial set is not sent again).
            let mut entries = self
                .shared
                .entries
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let mut listed = self
                .shared
                .unrecorded
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            for a in &desired.tasks {
                let Some(task) = &a.task else { continue };
                let id = task_id(&task.task_arn);
                wanted.insert(id.clone());
                let desired = match TaskStatus::parse(&a.desired_status) {
                    Ok(s @ (TaskStatus::Running | TaskStatus::Stopped)) => s,
                    _ => {
                        // The contract has only these two: a newer controller's word this agent
                        // does not understand changes nothing here (and stops nothing).
                        error!(task = %task.task_arn, desired_status = %a.desired_status,
                            "desired status is neither RUNNING nor STOPPED; assignment not acted on");
                        continue;
                    }
                };
                match entries.get_mut(&id) {
                    Some(e) => {
                        if let (Some(n), Some(tx), TaskStatus::Running) =
                            (&a.network, &e.tx, desired)
                        {
                            // The actor acts only on a change.
                            let _ = tx.send(Event::Network(n.clone()));
                        }
                        if desired == TaskStatus::Stopped {
                            if let Some(tx) = &e.tx {
                                let _ = tx.send(stop_event(a));
                            } else if is_stopped(&e.state) {
                                // Stopped here; make sure the controller hears it again.
                                to_report.push(e.state.clone());
                            }
                        }
                    }
                    None if listed.contains_key(&task.task_arn)
                        || (desired == TaskStatus::Running
                            && a.task_definition.is_some()
                            && TaskStatus::parse(&task.last_status)
                                .is_ok_and(|s| s > TaskStatus::Provisioning)) =>
                    {
                        // Containers of it may exist: inspect them, never start anew.
                        let mut rec = unrecorded::inspect_first(
                            task,
                            a.task_definition.as_ref(),
                            listed.remove(&task.task_arn).map(|t| t.containers),
                        );
                        // A container still to create needs it (awsvpc).
                        rec.task_network = a.network.clone();
                        let stop = (desired == TaskStatus::Stopped).then(|| stop_event(a));
                        to_spawn.push((rec, true, stop));
                    }
                    None => match (&a.task_definition, desired) {
                        (None, TaskStatus::Running) => {
                            // The controller sends a definition in the first set of a session
                            // naming the task; without one there is nothing to start from.
                            warn!(task = %task.task_arn, "assigned without a task definition; waiting for the next session's full set");
                        }
                        (Some(td), TaskStatus::Running) => {
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
                                task_definition_arn: Some(task.task_definition_arn.clone())
                                    .filter(|a| !a.is_empty()),
                                ..Default::default()
                            };
                            to_spawn.push((
                                TaskRecord {
                                    task: task.clone(),
                                    definition: td.clone(),
                                    desired_status: TaskStatus::Running.into(),
                                    state,
                                    stop_signals: Default::default(),
                                    oom_kills_before: Default::default(),
                                    namespace_holders: Default::default(),
                                    // Stamped by start(), which starts the containers.
                                    boot_id: None,
                                    task_network: a.network.clone(),
                                    network: None,
                                    network_set_up: false,
                                    network_released: false,
                                },
                                false,
                                None,
                            ));
                        }
                        _ => {
                            // Wanted stopped and not here (never started, or long cleaned up).
                            to_report.push(TaskStateChange {
                                task_arn: task.task_arn.clone(),
                                last_status: TaskStatus::Stopped.into(),
                                stop_code: a.stop_code.clone(),
                                stopped_reason: a.stopped_reason.clone(),
                                containers: task
                                    .containers
                                    .iter()
                                    .map(|c| ContainerStateChange {
                                        name: c.name.clone(),
                                        last_status: ContainerStatus::Stopped.into(),
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
                if !missing(id, &wanted) {
                    continue;
                }
                if is_stopped(&e.state) {
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
                self.shared.reporter.forget(&id);
            }
            for (arn, t) in listed.iter_mut() {
                if missing(&task_id(arn), &wanted) && !t.reported {
                    t.reported = true;
                    to_report.push(t.report.clone());
                }
            }
        }
        for s in to_report {
            self.shared.reporter.report(s);
        }
        for (rec, recovering, stop) in to_spawn {
            tracing::debug!(task = %rec.task.task_arn, recovering, "task assigned");
            let id = task_id(&rec.task.task_arn);
            // Written before any state the actor publishes (one writer, in order).
            self.shared.reporter.persist(&id, &rec, None);
            self.spawn(rec, recovering);
            if let Some(ev) = stop {
                if let Some(tx) = self
                    .shared
                    .entries
                    .lock()
                    .ok()
                    .and_then(|e| e.get(&id).and_then(|e| e.tx.clone()))
                {
                    let _ = tx.send(ev);
                }
            }
        }
    }

    /// The records of the tasks held whose containers may run (not STOPPED): what stats are
    /// sampled of.
    pub fn running_records(&self) -> Vec<TaskRecord> {
        self.shared
            .entries
            .lock()
            .map(|e| {
                e.values()
                    .filter(|e| !is_stopped(&e.state))
                    .map(|e| (*e.record).clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Issue 11: the images (normalised names) of every task held, stopped ones included
    /// until they are cleaned up: image cleanup keeps them.
    pub fn images_in_use(&self) -> std::collections::HashSet<String> {
        self.shared
            .entries
            .lock()
            .map(|e| {
                e.values()
                    .flat_map(|e| {
                        e.record
                            .definition
                            .container_definitions
                            .iter()
                            .map(|d| crate::runtime::image::normalize(&d.image))
                            .collect::<Vec<_>>()
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Number of tasks held (running or not yet forgotten).
    pub fn task_count(&self) -> usize {
        self.shared.entries.lock().map(|e| e.len()).unwrap_or(0)
    }
}

/// The metadata endpoint reads the engine's records (read-only).
impl<R: Runtime, C: Cgroups> crate::metadata::TaskSource for Engine<R, C> {
    fn task(&self, task_arn: &str) -> Option<TaskRecord> {
        let entries = self.shared.entries.lock().ok()?;
        entries.get(&task_id(task_arn)).map(|e| (*e.record).clone())
    }

    fn tasks(&self) -> Vec<TaskRecord> {
        self.shared
            .entries
            .lock()
            .map(|e| e.values().map(|e| (*e.record).clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
