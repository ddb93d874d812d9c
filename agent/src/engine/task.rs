//! One task's actor: starts its containers in dependency order ([`deps`]: dependsOn, links),
//! watches them exit (restarting those whose restartPolicy says so), stops them in reverse
//! dependency order (stop signal, then SIGKILL after stopTimeout) and cleans up: processes,
//! cgroup and network at once, containers, snapshots, files and logs after the cleanup wait
//! ([`cleanup`]). Statuses only move forward; every change is persisted and reported. Driven by
//! events only: container exits, health, the controller's stop, the SIGKILL deadlines and the
//! dependencies' startTimeouts.
//!
//! It never reports a container STOPPED while its process may still run: an exit code is only
//! ever one containerd reported; "containerd unreachable" (retried with back-off) is told apart
//! from "container gone" (NotFound); every runtime and cgroup call is bounded, signals are sent
//! from tasks of their own so a hung call delays no other container's deadline, and a task
//! whose processes cannot be killed or cleaned up is reported STOPPED with
//! [`TASK_STATE_ERROR`] only after bounded SIGKILL and cleanup retries.

use super::{cleanup, deps, net, task_id, Event, Shared};
use crate::cgroups::{CgroupError, Cgroups};
use crate::network::{files, Mode, NetworkError};
use crate::runtime::spec::{self, Share, SpecContext};
use crate::runtime::{ContainerState, CreateContainer, Runtime, RuntimeError};
use crate::state::TaskRecord;
use berth_proto::status::{ContainerStatus, TaskStatus};
use berth_proto::v1::{ContainerDefinition, ContainerStateChange};
use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, error, info, warn, Instrument};

/// The reason ECS gives for an OOM kill.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// The reason ECS gives when an essential container exits.
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";
/// The reason ECS gives a task the agent could not bring to a verified stop.
pub const TASK_STATE_ERROR: &str =
    "TaskStateError: Agent could not progress task's state to stopped";
/// The start of the reason ECS gives a task whose secrets could not be had.
pub const SECRETS_UNAVAILABLE: &str =
    "ResourceInitializationError: unable to pull secrets or registry auth";
/// The reason of a container containerd no longer has (it has no exit code).
pub const VANISHED: &str = "CannotInspectContainerError: container no longer exists";
/// The reason of a container that was running when its host rebooted (containerd keeps the
/// container, not its process; it has no exit code).
pub const REBOOTED: &str =
    "CannotInspectContainerError: container did not survive a reboot of its host";
/// The stopped reason of a task whose essential container did not survive a reboot.
pub const HOST_REBOOTED: &str =
    "Host rebooted: the task's containers did not survive a reboot of the container instance";

/// The start of the reason ECS gives a task one of whose containers' dependencies cannot be
/// met (dependsOn, links) or timed out; the rest names the containers and the condition.
pub const TASK_DEPENDENCY_ERROR: &str = "TaskDependencyError: ";
/// The start of the reason of a container the agent could not deliver a stop signal to.
pub const CANNOT_STOP: &str = "CannotStopContainerError: ";
/// ECS's default restartAttemptPeriod, in seconds.
pub const DEFAULT_RESTART_ATTEMPT_PERIOD: u64 = 300;

/// SIGKILLs sent to a container that does not exit before the agent gives up on it.
pub const MAX_SIGKILLS: u32 = 5;
/// Cleanup rounds (delete containers, remove the cgroup) before the agent gives up.
pub const CLEANUP_ATTEMPTS: u32 = 8;
/// How often a watcher re-checks a container's state while its `wait` long poll is quiet.
const WAIT_POLL: Duration = Duration::from_secs(60);
/// State queries made after a failed start before the container counts as possibly running.
const SETTLE_ATTEMPTS: u32 = 8;

/// `base × 2^attempt`, at most `cap`.
fn backoff(base: Duration, attempt: u32, cap: Duration) -> Duration {
    base.saturating_mul(1u32 << attempt.min(16)).min(cap)
}

/// A bounded runtime call.
async fn bounded<T>(
    op: &'static str,
    id: &str,
    after: Duration,
    call: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(after, call).await {
        Ok(r) => r,
        Err(_) => Err(RuntimeError::Timeout {
            op,
            id: id.to_string(),
            after,
        }),
    }
}

/// A cgroup operation that failed or did not finish in time.
#[derive(Debug, thiserror::Error)]
pub enum CgroupCallError {
    /// The operation failed.
    #[error(transparent)]
    Failed(#[from] CgroupError),
    /// The operation did not return in time (a hung file-system call).
    #[error("cgroup {op}: no answer within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long it was given.
        after: Duration,
    },
    /// The blocking pool could not run it (or it panicked).
    #[error("cgroup {op}: {source}")]
    Join {
        /// The operation.
        op: &'static str,
        /// The pool's error.
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Sleeps until `deadline`, or forever when there is none.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// What a start-phase call came to.
/// Why a task's images are not there (issue 11).
enum PullFail {
    /// A stop arrived meanwhile.
    Stop(String, String),
    /// The stoppedReason of a failed pull.
    Fail(String),
}

enum Step<T> {
    /// The call returned (or timed out).
    Done(Result<T, RuntimeError>),
    /// A stop arrived during the call (which was abandoned, or ran to its end if it could leave
    /// something behind in containerd).
    Stop(String, String),
}

/// Why a task's secrets were not had.
enum NoSecrets {
    /// A stop arrived meanwhile.
    Stop(String, String),
    /// They cannot be had: why (names the secret, never a value).
    Failed(String),
}

/// What [`TaskActor::container_options`] found for a container.
struct ContainerOptions {
    task_shm: Option<std::path::PathBuf>,
    users: Option<crate::runtime::user::ImageUsers>,
    pid: Share,
    ipc: Share,
    links: Vec<(std::net::Ipv4Addr, String)>,
}

/// What a stop arriving during a start-phase call does to that call.
#[derive(Clone, Copy, PartialEq)]
enum OnStop {
    /// Drop it: it leaves nothing that could run or outlive the task (an image lookup).
    Abandon,
    /// Let it end (it is bounded) before the container is settled and cleaned up: containerd
    /// goes on with a create or start whose caller went away, and would otherwise create the
    /// container, its runc process and its cgroup after the task's cleanup.
    Finish,
}

/// The instant on this agent's clock of a wall-clock time in the past (now when in the future).
fn instant_of(ts: &pbjson_types::Timestamp) -> Instant {
    let then = std::time::UNIX_EPOCH
        + Duration::from_secs(ts.seconds.max(0) as u64)
        + Duration::from_nanos(ts.nanos.max(0) as u64);
    let ago = std::time::SystemTime::now()
        .duration_since(then)
        .unwrap_or_default();
    Instant::now().checked_sub(ago).unwrap_or_else(Instant::now)
}

fn now() -> Option<pbjson_types::Timestamp> {
    Some(berth_proto::now())
}

/// Signal number of a signal name (`SIGQUIT`, `QUIT`) or number; SIGTERM when empty or unknown.
pub fn signal_number(name: &str) -> u32 {
    if let Ok(n) = name.parse::<u32>() {
        return n;
    }
    let upper = name.to_ascii_uppercase();
    let full = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    full.parse::<nix::sys::signal::Signal>()
        .unwrap_or(nix::sys::signal::Signal::SIGTERM) as i32 as u32
}

/// The containerd ID of a task's container: `<task-id>-<name>`, within containerd's 76 chars.
pub fn container_id(task_id: &str, index: usize, name: &str) -> String {
    let id = format!("{task_id}-{name}");
    if id.len() <= 76 {
        id
    } else {
        format!("{task_id}-{index}")
    }
}

pub(crate) struct TaskActor<R, C> {
    shared: Arc<Shared<R, C>>,
    rec: TaskRecord,
    id: String,
    tx: mpsc::UnboundedSender<Event>,
    rx: mpsc::UnboundedReceiver<Event>,
    /// Next SIGKILL of each container sent its stop signal and not yet exited.
    kill_at: HashMap<String, Instant>,
    /// SIGKILLs sent so far, per container.
    sigkills: HashMap<String, u32>,
    /// Each running container's exit watcher; aborted when the actor ends.
    watchers: HashMap<String, JoinHandle<()>>,
    /// Events taken off the channel while starting, for the main loop to handle in order.
    deferred: VecDeque<Event>,
    /// The agent gave up on a verified stop of some container (see [`TASK_STATE_ERROR`]).
    gave_up: bool,
    /// Containers recovery found without a process after a reboot of the host: they did not
    /// survive it. Only these get [`REBOOTED`]; one started in this boot that vanishes later is
    /// [`VANISHED`].
    gone_at_reboot: HashSet<String>,
    /// The health checkers of running containers with a healthCheck (issue 9).
    checkers: super::health::Checkers,
    /// When each container's process last started (first start or restart), on this agent's
    /// clock: dependency startTimeouts and the restartAttemptPeriod count from it. After an
    /// agent restart it is derived from the persisted `started_at`.
    started: HashMap<String, Instant>,
}

impl<R, C> Drop for TaskActor<R, C> {
    fn drop(&mut self) {
        for w in self.watchers.values() {
            w.abort();
        }
    }
}

impl<R: Runtime, C: Cgroups> TaskActor<R, C> {
    pub(crate) fn new(
        shared: Arc<Shared<R, C>>,
        mut rec: TaskRecord,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        let id = task_id(&rec.task.task_arn);
        for c in &mut rec.state.containers {
            if let Err(e) = ContainerStatus::parse(&c.last_status) {
                // Only the controller's assignment can carry one; the agent has not started it.
                error!(task = %id, container = %c.name, error = %e, "treating the container as PENDING");
                c.last_status = ContainerStatus::Pending.into();
            }
        }
        let started = rec
            .state
            .containers
            .iter()
            .filter_map(|c| Some((c.name.clone(), instant_of(c.started_at.as_ref()?))))
            .collect();
        Self {
            started,
            shared,
            rec,
            id,
            tx,
            rx,
            kill_at: HashMap::new(),
            sigkills: HashMap::new(),
            watchers: HashMap::new(),
            deferred: VecDeque::new(),
            gave_up: false,
            gone_at_reboot: HashSet::new(),
            checkers: Default::default(),
        }
    }

    fn def(&self, name: &str) -> Option<&ContainerDefinition> {
        self.rec
            .definition
            .container_definitions
            .iter()
            .find(|c| c.name == name)
    }

    fn container(&mut self, name: &str) -> Option<&mut ContainerStateChange> {
        self.rec
            .state
            .containers
            .iter_mut()
            .find(|c| c.name == name)
    }

    /// A container's known status (validated in [`TaskActor::new`]).
    fn container_status(c: &ContainerStateChange) -> ContainerStatus {
        ContainerStatus::parse(&c.last_status).unwrap_or(ContainerStatus::Pending)
    }

    /// Moves a container's status forward (never back).
    fn set_container_status(&mut self, name: &str, status: ContainerStatus) {
        if let Some(c) = self.container(name) {
            if status > Self::container_status(c) {
                c.last_status = status.into();
            }
        }
    }

    /// The task's known status; a record the agent wrote itself always parses.
    fn status(&self) -> Option<TaskStatus> {
        TaskStatus::parse(&self.rec.state.last_status).ok()
    }

    fn set_status(&mut self, status: TaskStatus) {
        if self.status().is_none_or(|s| status > s) {
            self.rec.state.last_status = status.into();
        }
    }

    fn publish(&self) {
        self.shared.publish(&self.rec);
    }

    fn stopping(&self) -> bool {
        self.status().is_some_and(|s| s >= TaskStatus::Stopping)
    }

    fn all_stopped(&self) -> bool {
        self.rec
            .state
            .containers
            .iter()
            .all(|c| Self::container_status(c) == ContainerStatus::Stopped)
    }

    fn timeouts(&self) -> &super::Timeouts {
        &self.shared.config.timeouts
    }

    /// Runs a cgroup operation on the blocking pool, bounded by the cgroup timeout.
    async fn cgroup<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&C, &str) -> Result<T, CgroupError> + Send + 'static,
    ) -> Result<T, CgroupCallError> {
        let cgroups = self.shared.cgroups.clone();
        let id = self.id.clone();
        let after = self.timeouts().cgroup;
        let job = tokio::task::spawn_blocking(move || f(&cgroups, &id));
        match tokio::time::timeout(after, job).await {
            Ok(Ok(r)) => r.map_err(CgroupCallError::from),
            Ok(Err(source)) => Err(CgroupCallError::Join { op, source }),
            Err(_) => Err(CgroupCallError::Timeout { op, after }),
        }
    }

    /// Runs to STOPPED.
    pub(crate) async fn run(mut self, recovering: bool) {
        let family = format!(
            "{}:{}",
            self.rec.definition.family, self.rec.definition.revision
        );
        let span = tracing::info_span!("task", task = %self.id, family = %family);
        async move {
            // Network recovery at start first (see Engine::start).
            let mut ready = self.shared.network_ready.clone();
            let _ = ready.wait_for(|r| *r).await;
            if recovering {
                self.recover().await;
            }
            if !self.stopping() && self.status().is_none_or(|s| s < TaskStatus::Running) {
                self.start().await;
            }
            loop {
                if self.all_stopped() {
                    if !self.stopping() {
                        // Every container exited by itself.
                        self.begin_stop(ESSENTIAL_EXITED.into(), "EssentialContainerExited".into())
                            .await;
                    }
                    self.finish().await;
                    return;
                }
                if let Some(ev) = self.deferred.pop_front() {
                    self.handle(ev).await;
                    continue;
                }
                let deadline = self.kill_at.values().min().copied();
                tokio::select! {
                    ev = self.rx.recv() => match ev {
                        Some(ev) => self.handle(ev).await,
                        None => return,
                    },
                    _ = until(deadline) => {
                        self.kill_overdue().await;
                    }
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn handle(&mut self, ev: Event) {
        match ev {
            Event::Stop { reason, code } => {
                self.rec.desired_status = TaskStatus::Stopped.into();
                self.begin_stop(reason, code).await;
            }
            Event::Exited { name, status } => self.on_exit(&name, status).await,
            Event::Network(n) => self.on_network(n).await,
            Event::Health {
                name,
                run,
                status,
                output,
            } => {
                if self.checkers.is_current(&name, run) {
                    self.on_health(&name, status, output)
                } else {
                    debug!(container = %name, run, "result of a replaced health checker dropped");
                }
            }
            Event::StopFailed { name, message } => self.on_stop_failed(&name, message),
        }
    }

    /// A stop signal (or SIGKILL) containerd did not deliver: the container shows ECS's
    /// CannotStopContainerError while it still runs (the SIGKILL retries go on).
    fn on_stop_failed(&mut self, name: &str, message: String) {
        let Some(c) = self.container(name) else {
            return;
        };
        if Self::container_status(c) == ContainerStatus::Stopped || c.reason.is_some() {
            return;
        }
        c.reason = Some(format!("{CANNOT_STOP}{message}"));
        self.publish();
    }

    /// A container's health as its health check decided it: recorded and reported, with the
    /// task's (issue 9; dependsOn HEALTHY and the stop of an unhealthy task build on it).
    fn on_health(&mut self, name: &str, status: berth_proto::status::HealthStatus, output: String) {
        let Some(c) = self.container(name) else {
            return;
        };
        let text: String = status.into();
        if c.health_status.as_deref() == Some(text.as_str())
            && c.health_output.as_deref() == Some(output.as_str())
        {
            return;
        }
        // ECS's Health.statusSince: when the status last changed (the output is the last
        // check's).
        if c.health_status.as_deref() != Some(text.as_str()) {
            c.health_checked_at = now();
        }
        c.health_status = Some(text);
        c.health_output = Some(output);
        self.update_task_health();
        self.publish();
    }

    /// The task's healthStatus from its essential containers' (ECS: containers without a health
    /// check, and non-essential ones, don't count).
    fn update_task_health(&mut self) {
        let defs = &self.rec.definition.container_definitions;
        let essential = self.rec.state.containers.iter().filter_map(|c| {
            let d = defs.iter().find(|d| d.name == c.name)?;
            if !d.essential.unwrap_or(true) || d.health_check.is_none() {
                return None;
            }
            Some(Some(
                c.health_status
                    .as_deref()
                    .and_then(|s| berth_proto::status::HealthStatus::parse(s).ok())
                    .unwrap_or(berth_proto::status::HealthStatus::Unknown),
            ))
        });
        self.rec.state.health_status = super::health::task_health(essential).map(String::from);
    }

    /// Starts the health checker of a running container with a healthCheck (once; not while
    /// the task stops). Its health is UNKNOWN until the checker decides, or the recorded one
    /// after an agent restart.
    fn start_health_check(&mut self, name: &str, cid: &str) {
        if self.stopping() || self.checkers.running(name) {
            return;
        }
        let Some(h) = self.def(name).and_then(|d| d.health_check.clone()) else {
            return;
        };
        let cfg = match super::health::HealthCheckConfig::of(&h) {
            Ok(c) => c,
            Err(e) => {
                warn!(container = %name, error = %e, "health check not run");
                return;
            }
        };
        let task_started = self.rec.state.started_at;
        let Some(c) = self.container(name) else {
            return;
        };
        let status = c
            .health_status
            .as_deref()
            .and_then(|s| berth_proto::status::HealthStatus::parse(s).ok())
            .unwrap_or(berth_proto::status::HealthStatus::Unknown);
        c.health_status = Some(String::from(status));
        let since_start = c
            .started_at
            .or(task_started)
            .and_then(|t| {
                let at = std::time::UNIX_EPOCH
                    + Duration::new(t.seconds.max(0) as u64, t.nanos.max(0) as u32);
                std::time::SystemTime::now().duration_since(at).ok()
            })
            .unwrap_or_default();
        self.update_task_health();
        let probe = super::health::ExecProbe {
            runtime: self.shared.runtime.clone(),
            cid: cid.to_string(),
            args: cfg.args.clone(),
            call_timeout: self.timeouts().call,
        };
        let run = self.checkers.next_run();
        let handle = super::health::spawn(
            probe,
            cfg,
            status,
            since_start,
            name.to_string(),
            run,
            self.tx.clone(),
        );
        self.checkers.insert(name, run, handle);
    }

    /// A DesiredTasks carrying the task's network: kept; ingress rules that differ from the
    /// ones applied are applied to the running awsvpc task (a failure is logged and tried again
    /// at the next DesiredTasks, whether or not the rules changed meanwhile; it does not stop
    /// the task).
    async fn on_network(&mut self, n: berth_proto::v1::TaskNetwork) {
        if self.rec.task_network.as_ref() != Some(&n) {
            self.rec.task_network = Some(n.clone());
            self.publish();
        }
        let Some(mut state) = self.rec.network.clone() else {
            // Not allocated yet: start() plans from the new one.
            return;
        };
        if state.mode != Mode::Awsvpc
            || !self.rec.network_set_up
            || self.rec.network_released
            || self.stopping()
        {
            return;
        }
        let rules = match net::ingress(&n.ingress) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "new ingress rules not applied");
                return;
            }
        };
        if state.awsvpc.as_ref().is_some_and(|a| a.ingress == rules) {
            return;
        }
        let after = self.timeouts().network;
        let network = self.shared.network.clone();
        let applied = match tokio::time::timeout(after, network.set_ingress(&state, &rules)).await {
            Ok(r) => r,
            Err(_) => Err(NetworkError::Timeout {
                step: "replacing the task's ingress rules",
                after,
            }),
        };
        match applied {
            Ok(()) => {
                info!(rules = rules.len(), security_groups = ?n.security_groups, "ingress rules replaced");
                if let Some(a) = &mut state.awsvpc {
                    a.ingress = rules;
                    a.security_groups = n.security_groups.clone();
                }
                self.rec.network = Some(state);
                self.publish();
            }
            Err(e) => {
                warn!(error = %e, "cannot replace the ingress rules; tried again at the next DesiredTasks")
            }
        }
    }

    /// Allocates the task's network (persisted before anything is created) and sets it up;
    /// after a restart, finishes the setup of the allocation the record holds.
    async fn network_up(&mut self, mode: Mode) -> Result<(), NetworkError> {
        if self.rec.network_set_up {
            return Ok(());
        }
        let mut state = match self.rec.network.clone() {
            // Held again by the recovery at start.
            Some(s) => s,
            None => {
                let plan = net::plan(&self.rec, mode)?;
                let s = self.shared.network.allocate(&plan)?;
                self.rec.network = Some(s.clone());
                self.publish();
                // On disk before anything is made, so a restarted agent knows what may exist.
                let after = self.timeouts().call;
                if tokio::time::timeout(after, self.shared.reporter.flush())
                    .await
                    .is_err()
                {
                    warn!("the task record is not on disk yet; setting up its network anyway (a restart removes what no record names)");
                }
                s
            }
        };
        let after = self.timeouts().network;
        let network = self.shared.network.clone();
        let r = match tokio::time::timeout(after, network.setup(&mut state)).await {
            Ok(r) => r,
            Err(_) => Err(NetworkError::Timeout {
                step: "setting up the task's network",
                after,
            }),
        };
        self.rec.network = Some(state);
        if r.is_ok() {
            self.rec.network_set_up = true;
            info!("task network set up");
            self.metadata_up().await;
        }
        self.publish();
        r
    }

    /// Issue 9: the metadata endpoint's listeners in the task's namespaces (bridge, awsvpc). A
    /// failure leaves the task without an endpoint (logged), not stopped.
    async fn metadata_up(&self) {
        let (Some(m), Some(net)) = (&self.shared.config.metadata, &self.rec.network) else {
            return;
        };
        if let Err(e) = m.attach(&self.rec.task.task_arn, net).await {
            error!(error = %e, "no task metadata endpoint for this task");
        }
    }

    /// Issue 9: a container's definition with the metadata endpoint's variables (they replace
    /// any of the same name); `None` without an endpoint or in none mode.
    fn with_metadata_env(
        &self,
        d: &ContainerDefinition,
        mode: Mode,
    ) -> Option<ContainerDefinition> {
        let m = self.shared.config.metadata.as_ref()?;
        let vars = m.environment(&self.rec.task.task_arn, &d.name, mode);
        if vars.is_empty() {
            return None;
        }
        let mut d = d.clone();
        d.environment
            .retain(|kv| !vars.iter().any(|(n, _)| *n == kv.name));
        for (name, value) in vars {
            d.environment
                .push(berth_proto::v1::KeyValuePair { name, value });
        }
        Some(d)
    }

    /// The moment every container has stopped: tears the task's network down and releases it
    /// (retried a few times; left to the next agent start if it keeps failing, holding its
    /// addresses and ports until then).
    async fn network_down(&mut self) {
        let Some(state) = self.rec.network.clone() else {
            return;
        };
        if self.rec.network_released {
            return;
        }
        if let Some(m) = &self.shared.config.metadata {
            m.detach(&self.rec.task.task_arn);
        }
        for attempt in 0..net::TEARDOWN_ATTEMPTS {
            match net::teardown(&self.shared, &state).await {
                Ok(()) => {
                    info!("task network removed");
                    self.rec.network_released = true;
                    self.publish();
                    return;
                }
                Err(e) => warn!(error = %e, attempt, "cannot remove the task's network"),
            }
            tokio::time::sleep(backoff(
                net::TEARDOWN_BACKOFF,
                attempt,
                Duration::from_secs(5),
            ))
            .await;
        }
        error!("the task's network could not be removed; the next agent start removes it");
    }

    /// Writes a container's /etc files (blocking thread); `None`: the host's are used.
    async fn etc_files(
        &self,
        d: &ContainerDefinition,
        mode: Mode,
        hostname: &str,
        links: Vec<(std::net::Ipv4Addr, String)>,
    ) -> Result<Option<files::EtcPaths>, String> {
        let address = self.address_of(&d.name).filter(|_| mode != Mode::None);
        let dir = self.shared.config.data_dir.etc(&self.id, &d.name);
        let fallback = self.shared.config.fallback_dns.clone();
        let (d, hostname) = (d.clone(), hostname.to_string());
        let job = tokio::task::spawn_blocking(move || {
            let host = files::HostFiles::read();
            match files::etc_files(&d, mode, &hostname, address, &links, &host, &fallback) {
                Some(f) => files::write(&dir, &f).map(Some).map_err(|e| e.to_string()),
                None => Ok(None),
            }
        });
        match tokio::time::timeout(self.timeouts().cgroup, job).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("writing /etc files did not finish in time".into()),
        }
    }

    /// A container's address on the task's network (bridge and awsvpc).
    fn address_of(&self, name: &str) -> Option<std::net::Ipv4Addr> {
        self.rec
            .network
            .as_ref()
            .and_then(|n| n.namespace_of(name))
            .and_then(|n| n.interface.as_ref())
            .map(|i| i.address)
    }

    /// The options of a container that need the runtime or the task's other containers: the
    /// image's users for a user name, the PID and IPC namespaces of pidMode/ipcMode, the
    /// /etc/hosts entries of links. `Err(Step::Done(Ok(why)))`: the container cannot be made.
    async fn container_options(
        &mut self,
        d: &ContainerDefinition,
        img: &crate::runtime::ImageConfig,
        mode: Mode,
    ) -> Result<ContainerOptions, Step<String>> {
        let refuse = |why: String| Step::Done(Ok(why));
        let user = d.user.clone().unwrap_or_else(|| img.user.clone());
        let users = if crate::runtime::user::needs_files(&user) {
            let (runtime, image) = (self.shared.runtime.clone(), img.clone());
            let after = self.timeouts().call;
            match self
                .start_call(
                    "image users",
                    &img.name,
                    after,
                    OnStop::Abandon,
                    async move { runtime.image_users(&image).await },
                )
                .await
            {
                Step::Done(Ok(u)) => Some(u),
                Step::Done(Err(e)) => {
                    return Err(refuse(format!(
                        "reading the image's /etc/passwd and /etc/group: {}",
                        e.message()
                    )))
                }
                Step::Stop(r, c) => return Err(Step::Stop(r, c)),
            }
        } else {
            None
        };
        let pid_mode = self.rec.definition.pid_mode.clone().unwrap_or_default();
        let ipc_mode = self.rec.definition.ipc_mode.clone().unwrap_or_default();
        let needs_holder = pid_mode == "task" || ipc_mode == "task";
        let holder = if needs_holder {
            self.namespace_holder(&d.name).await?
        } else {
            None
        };
        let share = |m: &str, field: &str, none_ok: bool| -> Result<Share, Step<String>> {
            Ok(match m {
                "" => Share::Own,
                "host" => Share::Host,
                "task" => holder.map_or(Share::Own, Share::Join),
                "none" if none_ok => Share::Private,
                other => {
                    return Err(refuse(format!(
                        "{field} '{other}' is not one of host, task{}",
                        if none_ok { ", none" } else { "" }
                    )))
                }
            })
        };
        let pid = share(&pid_mode, "pidMode", false)?;
        let ipc = share(&ipc_mode, "ipcMode", true)?;
        let links = if d.links.is_empty() {
            Vec::new()
        } else if mode != Mode::Bridge {
            return Err(refuse(format!(
                "links are supported only in bridge network mode (this task's is {})",
                mode.as_str()
            )));
        } else {
            let others: HashSet<&str> = self
                .rec
                .definition
                .container_definitions
                .iter()
                .filter(|c| c.name != d.name && c.disable_networking != Some(true))
                .map(|c| c.name.as_str())
                .collect();
            files::link_hosts(d, |n| {
                others.contains(n).then(|| self.address_of(n)).flatten()
            })
            .map_err(refuse)?
        };
        let task_shm = if ipc_mode == "task" {
            Some(self.task_shm().await.map_err(refuse)?)
        } else {
            None
        };
        Ok(ContainerOptions {
            task_shm,
            users,
            pid,
            ipc,
            links,
        })
    }

    /// ipcMode task: the task's /dev/shm, a tmpfs mounted on the host under the task's files
    /// (once; sized by the largest sharedMemorySize of its containers, or Docker's 64 MiB) and
    /// unmounted with them.
    async fn task_shm(&self) -> Result<std::path::PathBuf, String> {
        let path = self.shared.config.data_dir.task_files(&self.id).join("shm");
        let mib = self
            .rec
            .definition
            .container_definitions
            .iter()
            .filter_map(|c| {
                c.linux_parameters
                    .as_ref()
                    .and_then(|l| l.shared_memory_size)
            })
            .filter(|s| *s > 0)
            .max()
            .unwrap_or(64) as u64;
        let p = path.clone();
        let job =
            tokio::task::spawn_blocking(move || crate::runtime::options::mount_task_shm(&p, mib));
        match tokio::time::timeout(self.timeouts().cgroup, job).await {
            Ok(Ok(Ok(()))) => Ok(path),
            Ok(Ok(Err(e))) => Err(format!("the task's /dev/shm ({}): {e}", path.display())),
            Ok(Err(e)) => Err(format!("the task's /dev/shm: {e}")),
            Err(_) => Err("mounting the task's /dev/shm did not finish in time".into()),
        }
    }

    /// The containerd IDs of the task's running containers other than `name`.
    fn running_others(&self, name: &str) -> Vec<String> {
        self.rec
            .state
            .containers
            .iter()
            .filter(|c| c.name != name && Self::container_status(c) == ContainerStatus::Running)
            .filter_map(|c| c.runtime_id.clone())
            .collect()
    }

    /// pidMode/ipcMode task: the host PID of the init of a running container of the task other
    /// than `name` (the first started holds the namespaces, the others joined them); `None`
    /// when none runs yet (this container then holds them).
    async fn namespace_holder(&mut self, name: &str) -> Result<Option<u32>, Step<String>> {
        let running = self.running_others(name);
        let Some(cid) = running.into_iter().next() else {
            return Ok(None);
        };
        let runtime = self.shared.runtime.clone();
        let after = self.timeouts().call;
        let id = cid.clone();
        match self
            .start_call("init pid", &cid, after, OnStop::Abandon, async move {
                runtime.init_pid(&id).await
            })
            .await
        {
            Step::Done(Ok(pid)) if pid > 0 => Ok(Some(pid)),
            Step::Done(Ok(_)) => Err(Step::Done(Ok(format!(
                "the task's namespaces are held by container {cid}, which has no running process"
            )))),
            Step::Done(Err(e)) => Err(Step::Done(Ok(format!(
                "the task's PID/IPC namespaces (container {cid}): {}",
                e.message()
            )))),
            Step::Stop(r, c) => Err(Step::Stop(r, c)),
        }
    }

    /// Whether `pid` is the init of a running container of the task other than `name` (the
    /// namespaces a container joined by that process's /proc entry are still there); a
    /// container whose init cannot be had counts as not it; `None` when a stop arrived.
    async fn is_running_init(&mut self, name: &str, pid: u32) -> Option<bool> {
        let running = self.running_others(name);
        for cid in running {
            let runtime = self.shared.runtime.clone();
            let after = self.timeouts().call;
            let id = cid.clone();
            match self
                .start_call("init pid", &cid, after, OnStop::Abandon, async move {
                    runtime.init_pid(&id).await
                })
                .await
            {
                Step::Done(Ok(p)) if p == pid => return Some(true),
                Step::Done(_) => {}
                Step::Stop(reason, code) => {
                    // Taken off the channel by the call: kept for the main loop, never lost.
                    self.deferred.push_front(Event::Stop { reason, code });
                    return None;
                }
            }
        }
        Some(false)
    }

    /// While starting: whether a stop arrived, so a task stopped while starting stops at once.
    /// Other events (an early exit) are kept for the main loop, never dropped.
    fn stop_requested(&mut self) -> Option<(String, String)> {
        while let Ok(ev) = self.rx.try_recv() {
            match ev {
                Event::Stop { reason, code } => return Some((reason, code)),
                other => self.deferred.push_back(other),
            }
        }
        None
    }

    /// Runs a start-phase call bounded by `after`. A stop arriving meanwhile is acted on at once
    /// (the task goes STOPPING and its running containers get their stop signal), so a hung
    /// call never holds up a stop request; the call itself is abandoned or finished per
    /// `on_stop`.
    async fn start_call<T>(
        &mut self,
        op: &'static str,
        id: &str,
        after: Duration,
        on_stop: OnStop,
        call: impl Future<Output = Result<T, RuntimeError>>,
    ) -> Step<T> {
        let call = bounded(op, id, after, call);
        tokio::pin!(call);
        let mut stop: Option<(String, String)> = None;
        loop {
            let deadline = self.kill_at.values().min().copied();
            tokio::select! {
                // Another container's SIGKILL is never held up by this call.
                _ = until(deadline) => self.kill_overdue().await,
                r = &mut call => return match stop {
                    Some((reason, code)) => Step::Stop(reason, code),
                    None => Step::Done(r),
                },
                ev = self.rx.recv() => match ev {
                    // Already acted on: the first stop's reason stands.
                    Some(Event::Stop { .. }) if stop.is_some() => {}
                    Some(Event::Stop { reason, code }) if on_stop == OnStop::Abandon => {
                        return Step::Stop(reason, code)
                    }
                    Some(Event::Stop { reason, code }) => {
                        info!(op, "stop requested while starting; letting the call end first");
                        self.stop_running_siblings(&reason, &code);
                        stop = Some((reason, code));
                    }
                    Some(other) => self.take_while_busy(other).await,
                    // The engine is gone: nothing can stop us any more.
                    None => return Step::Done(call.await),
                },
            }
        }
    }

    /// A stop that arrived while a container's create or start is in flight: STOPPING now and
    /// the running containers signalled, without deciding yet what became of the one in flight
    /// (still PENDING, it may turn out to run).
    fn stop_running_siblings(&mut self, reason: &str, code: &str) {
        self.rec.desired_status = TaskStatus::Stopped.into();
        if self.rec.state.stop_code.is_none() {
            self.rec.state.stop_code = Some(code.to_string());
            self.rec.state.stopped_reason = Some(reason.to_string());
        }
        if !self.stopping() {
            self.set_status(TaskStatus::Stopping);
            self.rec.state.stopping_at = now();
        }
        self.publish();
        self.signal_running();
    }

    /// A stop that arrived while starting: stops at once.
    async fn stop_while_starting(&mut self, reason: String, code: String) {
        info!("stop requested while starting");
        self.rec.desired_status = TaskStatus::Stopped.into();
        self.begin_stop(reason, code).await;
    }

    /// Issue 11: the image of every container, pulled as the pull behaviour says. `Err` is
    /// the stop that came meanwhile, or the reason the task cannot start
    /// ("CannotPullContainerError: …" with the registry's words).
    async fn pull_images(
        &mut self,
        defs: &[ContainerDefinition],
        pulls: &[(
            String,
            String,
            tokio::sync::watch::Sender<crate::images::PullState>,
        )],
        creds_of: &(dyn Fn(&str) -> Option<crate::images::registry::Credentials> + Sync),
    ) -> Result<HashMap<String, crate::runtime::ImageConfig>, PullFail> {
        let mut images = HashMap::new();
        let policy = self.shared.config.images.clone();
        // The pull timeout bounds the pull itself; the call gets a little more for the
        // lookups and the unpack around it.
        let after = self
            .timeouts()
            .image
            .max(policy.pull_timeout() + Duration::from_secs(60));
        for (d, (_, _, tx)) in defs.iter().zip(pulls) {
            let runtime = self.shared.runtime.clone();
            let image = d.image.clone();
            let creds = creds_of(&d.name);
            let (policy, tx) = (policy.clone(), tx.clone());
            let got = match self
                .start_call("image", &d.image, after, OnStop::Abandon, async move {
                    policy.ensure(runtime, &image, creds, &tx).await
                })
                .await
            {
                Step::Done(r) => r,
                Step::Stop(reason, code) => return Err(PullFail::Stop(reason, code)),
            };
            match got {
                Ok(ensured) => {
                    if let Some(why) = &ensured.fell_back {
                        warn!(container = %d.name, image = %d.image, "the pull failed ({why}); running the cached image");
                    }
                    let img = ensured.image;
                    self.rec
                        .stop_signals
                        .insert(d.name.clone(), img.stop_signal.clone());
                    if let Some(c) = self.container(&d.name) {
                        c.image_digest = Some(img.digest.clone());
                    }
                    images.insert(d.name.clone(), img);
                }
                Err(RuntimeError::ImageNotFound(name)) => {
                    return Err(PullFail::Fail(format!(
                        "CannotPullContainerError: image {name} not found in this host's image store and not pulled"
                    )))
                }
                Err(e) => return Err(PullFail::Fail(format!("CannotPullContainerError: {e}"))),
            }
        }
        Ok(images)
    }

    async fn start(&mut self) {
        self.set_status(TaskStatus::Pending);
        // The containers started from here run in this boot.
        if let Some(boot) = &self.shared.config.boot_id {
            self.rec.boot_id = Some(boot.clone());
        }
        let net_mode = match net::mode_of(&self.rec.definition.network_mode) {
            Ok(m) => m,
            Err(e) => {
                return self
                    .fail_start(format!("ContainerNetworkingError: {e}"))
                    .await
            }
        };
        // Asked each time containers are created (after a restart too): only in memory.
        // `secrets.registry_for(container)`: its repositoryCredentials, for its image pull.
        let secrets = match self.fetch_secrets().await {
            Ok(s) => s,
            Err(NoSecrets::Stop(reason, code)) => {
                return self.stop_while_starting(reason, code).await
            }
            Err(NoSecrets::Failed(why)) => {
                return self
                    .fail_start(format!("{SECRETS_UNAVAILABLE}: {why}"))
                    .await
            }
        };
        self.rec.state.pull_started_at = now();
        self.publish();
        let defs = self.rec.definition.container_definitions.clone();
        // Issue 11: each container's pull reports into its own channel; the watch below sends
        // where they stand to the controller about once a second.
        let pulls: Vec<_> = defs
            .iter()
            .map(|d| {
                (
                    d.name.clone(),
                    d.image.clone(),
                    tokio::sync::watch::channel(crate::images::PullState::default()).0,
                )
            })
            .collect();
        let watch = pull_watch(
            self.shared.reporter.clone(),
            self.rec.task.task_arn.clone(),
            pulls
                .iter()
                .map(|(n, i, tx)| (n.clone(), i.clone(), tx.subscribe()))
                .collect(),
        );
        let creds_of = |container: &str| {
            secrets
                .registry_for(container)
                .map(|(u, p)| crate::images::registry::Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                })
        };
        let pulled = self.pull_images(&defs, &pulls, &creds_of).await;
        watch.abort();
        publish_pull_progress(
            &self.shared.reporter,
            &self.rec.task.task_arn,
            pulls
                .iter()
                .map(|(n, i, tx)| (n.as_str(), i.as_str(), *tx.borrow())),
        );
        let images = match pulled {
            Ok(got) => got,
            Err(PullFail::Stop(reason, code)) => {
                return self.stop_while_starting(reason, code).await
            }
            Err(PullFail::Fail(why)) => return self.fail_start(why).await,
        };
        self.rec.state.pull_stopped_at = now();
        debug!("images resolved");
        if let Some((reason, code)) = self.stop_requested() {
            return self.stop_while_starting(reason, code).await;
        }
        let limits = crate::cgroups::TaskLimits::of(&self.rec.definition);
        if let Err(e) = self
            .cgroup("create", move |c, id| c.create_task(id, &limits))
            .await
        {
            return self
                .fail_start(format!("ResourceInitializationError: {e}"))
                .await;
        }
        if let Err(e) = self.network_up(net_mode).await {
            return self
                .fail_start(format!("ContainerNetworkingError: {e}"))
                .await;
        }
        if let Some((reason, code)) = self.stop_requested() {
            return self.stop_while_starting(reason, code).await;
        }
        // Issue 9: every volume made (or refused) before any container is created.
        let config = &self.shared.config;
        let volumes = match crate::volumes::prepare(
            &config.volumes,
            &config.data_dir.0,
            &self.id,
            &self.rec.definition,
        )
        .await
        {
            Ok(v) => v,
            Err(e) => {
                return self
                    .fail_start(format!("ResourceInitializationError: {e}"))
                    .await
            }
        };
        // Containers start in dependency order (dependsOn, links): each as soon as all its
        // dependencies are met, never held up by unrelated ones. Meanwhile the actor waits on
        // events (exits, health, a stop, SIGKILL deadlines) and the dependencies' startTimeouts.
        loop {
            if let Some((reason, code)) = self.stop_requested() {
                return self.stop_while_starting(reason, code).await;
            }
            if self.stopping() {
                return;
            }
            // Exits and health taken in while busy decide dependencies: handled first.
            if let Some(ev) = self.deferred.pop_front() {
                self.handle(ev).await;
                continue;
            }
            let now = Instant::now();
            let mut waiting = false;
            let mut next: Option<Instant> = None;
            let mut ready = None;
            for (i, d) in defs.iter().enumerate() {
                let pending = self.rec.state.containers.iter().any(|c| {
                    c.name == d.name && Self::container_status(c) == ContainerStatus::Pending
                });
                if !pending {
                    continue;
                }
                let view = deps::View {
                    defs: &defs,
                    states: &self.rec.state.containers,
                    started: &self.started,
                    now,
                };
                match deps::verdict(d, &view) {
                    deps::Verdict::Met => {
                        ready = Some(i);
                        break;
                    }
                    deps::Verdict::Never(why) => {
                        return self.fail_dependency(&d.name, why).await;
                    }
                    deps::Verdict::Wait(due) => {
                        waiting = true;
                        if let Some(due) = due {
                            next = Some(next.map_or(due, |n| n.min(due)));
                        }
                    }
                }
            }
            if let Some(i) = ready {
                if !self
                    .start_container(i, &defs[i], &images, net_mode, &secrets.env, &volumes)
                    .await
                {
                    return;
                }
                continue;
            }
            if !waiting {
                break;
            }
            debug!("waiting for dependencies");
            let kill = self.kill_at.values().min().copied();
            tokio::select! {
                ev = self.rx.recv() => match ev {
                    Some(Event::Stop { reason, code }) => {
                        return self.stop_while_starting(reason, code).await
                    }
                    Some(ev) => self.handle(ev).await,
                    None => return,
                },
                // A dependency's startTimeout: the next round finds it timed out.
                _ = until(next) => {}
                _ = until(kill) => self.kill_overdue().await,
            }
        }
        if self.stopping() {
            return;
        }
        self.set_status(TaskStatus::Running);
        self.rec.state.started_at = now();
        self.publish();
    }

    /// A dependency of `target` can no longer be met (or timed out): the task stops with
    /// ECS's TaskDependencyError and `target` stays never started, with the reason.
    async fn fail_dependency(&mut self, target: &str, why: String) {
        let reason = format!("{TASK_DEPENDENCY_ERROR}{why}");
        if let Some(c) = self.container(target) {
            c.reason = Some(reason.clone());
        }
        self.fail_start(reason).await;
    }

    /// Creates and starts one container. `false`: the task failed to start or was stopped
    /// meanwhile (already acted on).
    async fn start_container(
        &mut self,
        i: usize,
        d: &ContainerDefinition,
        images: &HashMap<String, crate::runtime::ImageConfig>,
        net_mode: Mode,
        secrets: &[crate::secrets::TaskSecret],
        volumes: &crate::volumes::TaskVolumes,
    ) -> bool {
        let mode = net_mode.as_str();
        if let Some((reason, code)) = self.stop_requested() {
            self.stop_while_starting(reason, code).await;
            return false;
        }
        let already = self
            .rec
            .state
            .containers
            .iter()
            .any(|c| c.name == d.name && Self::container_status(c) != ContainerStatus::Pending);
        if already {
            return true;
        }
        let Some(img) = images.get(&d.name) else {
            return true;
        };
        let cid = container_id(&self.id, i, &d.name);
        let default_hostname: String = cid.chars().take(12).collect();
        let hostname = d
            .hostname
            .clone()
            .unwrap_or_else(|| default_hostname.clone());
        let opts = match self.container_options(d, img, net_mode).await {
            Ok(o) => o,
            Err(Step::Stop(reason, code)) => {
                self.stop_while_starting(reason, code).await;
                return false;
            }
            Err(Step::Done(e)) => {
                let e = match e {
                    Err(e) => e.message(),
                    Ok(why) => why,
                };
                self.fail_start(format!(
                    "CannotCreateContainerError: container {}: {e}",
                    d.name
                ))
                .await;
                return false;
            }
        };
        // pidMode/ipcMode task: whose namespaces it joins, for a restart in place to check
        // they are still there (its spec names them by that process's /proc entry).
        match (&opts.pid, &opts.ipc) {
            (Share::Join(p), _) | (_, Share::Join(p)) => {
                self.rec.namespace_holders.insert(d.name.clone(), *p);
            }
            _ => {
                self.rec.namespace_holders.remove(&d.name);
            }
        }
        let etc_mode = if d.disable_networking == Some(true) {
            Mode::None
        } else {
            net_mode
        };
        let etc_files = match self
            .etc_files(d, etc_mode, &hostname, opts.links.clone())
            .await
        {
            Ok(f) => f,
            Err(e) => {
                self.fail_start(format!(
                    "CannotCreateContainerError: container {}: /etc files: {e}",
                    d.name
                ))
                .await;
                return false;
            }
        };
        let ctx = SpecContext {
            network_mode: mode,
            netns_path: self
                .rec
                .network
                .as_ref()
                .and_then(|n| n.netns_path(&d.name)),
            etc_files,
            cgroups_path: self.shared.cgroups.container_path(&self.id, &d.name),
            hostname: default_hostname,
            security: &self.shared.config.security,
            pid: opts.pid,
            ipc: opts.ipc,
            users: opts.users,
            task_shm: opts.task_shm,
        };
        let with_files = match crate::volumes::with_env_files(&self.shared.config.volumes, d).await
        {
            Ok(f) => f,
            Err(e) => {
                self.fail_start(format!("ResourceInitializationError: {e}"))
                    .await;
                return false;
            }
        };
        let d = with_files.as_ref().unwrap_or(d);
        let with_secrets = with_secrets(d, secrets);
        // A container with networking disabled has no way to the endpoint: no variables.
        let with_env = self.with_metadata_env(with_secrets.as_ref().unwrap_or(d), etc_mode);
        let built = with_env.as_ref().or(with_secrets.as_ref()).unwrap_or(d);
        let spec = match spec::build(built, img, &ctx)
            .and_then(|s| Ok(volumes.with_mounts(s, &d.name)?))
        {
            Ok(s) => s,
            Err(e) => {
                self.fail_start(format!("CannotCreateContainerError: {e}"))
                    .await;
                return false;
            }
        };
        if let Some(c) = self.container(&d.name) {
            c.runtime_id = Some(cid.clone());
        }
        self.publish();
        let create = Arc::new(CreateContainer {
            id: cid.clone(),
            image: img.clone(),
            spec,
            labels: self.labels(d),
            log_path: self.shared.config.data_dir.log(&self.id, &d.name),
            open_stdin: d.interactive == Some(true),
        });
        let after = self.timeouts().call;
        let (runtime, c) = (self.shared.runtime.clone(), create.clone());
        // The create runs as a task of its own so that, abandoned for a stop or a timeout,
        // it still ends, and what it leaves (a container record and its snapshot; never a
        // process) is removed after it (`remove_after`).
        let cid_for_join = cid.clone();
        let mut job = tokio::spawn(async move { runtime.create(&c).await });
        let step = self
            .start_call("create", &cid, after, OnStop::Abandon, async {
                (&mut job).await.unwrap_or_else(|e| {
                    Err(RuntimeError::Call {
                        op: "create",
                        id: cid_for_join,
                        source: tonic::Status::internal(e.to_string()),
                    })
                })
            })
            .await;
        match step {
            Step::Done(Ok(())) => {}
            Step::Done(Err(e)) => {
                self.remove_after(job, &cid);
                self.fail_start(format!("CannotCreateContainerError: {}", e.message()))
                    .await;
                return false;
            }
            Step::Stop(reason, code) => {
                self.remove_after(job, &cid);
                self.stop_while_starting(reason, code).await;
                return false;
            }
        }
        // Its log driver first: a blocking-mode copy waits for the driver from its first byte.
        self.deliver_logs(&d.name, &cid);
        let (runtime, c) = (self.shared.runtime.clone(), create.clone());
        match self
            .start_call("start", &cid, after, OnStop::Finish, async move {
                runtime.start(&c).await
            })
            .await
        {
            Step::Done(Ok(())) => {}
            Step::Done(Err(e)) => {
                // The start may have happened anyway (a timeout, containerd restarting).
                self.settle_after_failed_start(&d.name, &cid).await;
                self.fail_start(format!("CannotStartContainerError: {}", e.message()))
                    .await;
                return false;
            }
            Step::Stop(reason, code) => {
                self.settle_after_failed_start(&d.name, &cid).await;
                self.stop_while_starting(reason, code).await;
                return false;
            }
        }
        info!(container = %d.name, id = %cid, "container started");
        self.set_container_status(&d.name, ContainerStatus::Running);
        self.watch(&d.name, &cid);
        self.started.insert(d.name.clone(), Instant::now());
        if let Some(c) = self.container(&d.name) {
            c.started_at = now();
        }
        self.publish();
        true
    }

    /// The values of the secrets and the registry credentials of the containers still to
    /// create, from the engine's [`crate::secrets::SecretSource`]; none asked when none has
    /// secrets or repositoryCredentials.
    async fn fetch_secrets(&mut self) -> Result<crate::secrets::TaskSecrets, NoSecrets> {
        let pending = |c: &ContainerDefinition| {
            (!c.secrets.is_empty() || c.repository_credentials.is_some())
                && self.rec.state.containers.iter().any(|s| {
                    s.name == c.name && Self::container_status(s) == ContainerStatus::Pending
                })
        };
        if !self
            .rec
            .definition
            .container_definitions
            .iter()
            .any(pending)
        {
            return Ok(Default::default());
        }
        let source = self.shared.config.secrets.clone();
        let arn = self.rec.task.task_arn.clone();
        // The source bounds its own wait; this bound only guards against one that does not.
        let after = self.timeouts().call.max(Duration::from_secs(120));
        let asked = self
            .start_call(
                "secrets",
                &self.id.clone(),
                after,
                OnStop::Abandon,
                async move { Ok(source.task_secrets(&arn).await) },
            )
            .await;
        match asked {
            Step::Stop(reason, code) => Err(NoSecrets::Stop(reason, code)),
            Step::Done(Err(e)) => Err(NoSecrets::Failed(e.message())),
            Step::Done(Ok(Err(e))) => Err(NoSecrets::Failed(e.to_string())),
            Step::Done(Ok(Ok(got))) => {
                debug!(
                    count = got.env.len(),
                    registry = got.registry.len(),
                    "task secrets received"
                );
                Ok(got)
            }
        }
    }

    /// Once an abandoned or failed create has ended (it is bounded by the call timeout), removes
    /// whatever it left in containerd, in the background: the task's own cleanup may already
    /// have run.
    fn remove_after(&self, job: tokio::task::JoinHandle<Result<(), RuntimeError>>, cid: &str) {
        let runtime = self.shared.runtime.clone();
        let after = self.timeouts().call;
        let cid = cid.to_string();
        tokio::spawn(
            async move {
                if tokio::time::timeout(after, job).await.is_err() {
                    warn!(container = %cid, "an abandoned create did not end; its record may be left");
                }
                if let Err(e) = bounded("delete", &cid, after, runtime.delete(&cid)).await {
                    warn!(container = %cid, error = %e, "cannot remove what an abandoned create left");
                }
            }
            .in_current_span(),
        );
    }

    /// After a start that failed or was abandoned: asks containerd whether the process runs
    /// after all. Running (or still unknown after a few tries) → RUNNING and watched, so the
    /// stop kills it; otherwise it stays PENDING and is stopped as never started.
    async fn settle_after_failed_start(&mut self, name: &str, cid: &str) {
        match self.settle(cid, Some(SETTLE_ATTEMPTS)).await {
            Some(ContainerState::Created | ContainerState::Missing) => {}
            Some(ContainerState::Stopped(code)) => {
                self.set_container_status(name, ContainerStatus::Running);
                self.deferred.push_back(Event::Exited {
                    name: name.to_string(),
                    status: Some(code),
                });
            }
            Some(ContainerState::Running | ContainerState::Unknown) | None => {
                warn!(container = %name, "the start may have happened; treating it as running");
                self.set_container_status(name, ContainerStatus::Running);
                self.watch(name, cid);
            }
        }
    }

    /// Asks containerd for a container's state until it gives a definite answer (not an error,
    /// not UNKNOWN), with back-off; `None` after `attempts` tries when bounded.
    async fn settle(&mut self, cid: &str, attempts: Option<u32>) -> Option<ContainerState> {
        let mut attempt = 0;
        loop {
            let runtime = self.shared.runtime.clone();
            let after = self.timeouts().call;
            let asked = bounded("state", cid, after, async move { runtime.state(cid).await });
            match self.keeping_deadlines(asked).await {
                Ok(ContainerState::Unknown) => {
                    warn!(container = %cid, "containerd does not know the process's state; asking again")
                }
                Ok(s) => return Some(s),
                Err(e) => {
                    warn!(container = %cid, error = %e, "cannot get the container's state; asking again")
                }
            }
            attempt += 1;
            if attempts.is_some_and(|max| attempt >= max) {
                return None;
            }
            let pause = backoff(Duration::from_millis(100), attempt, Duration::from_secs(5));
            self.keeping_deadlines(tokio::time::sleep(pause)).await;
        }
    }

    /// Awaits `fut` while sending the SIGKILLs that fall due meanwhile and taking in exits: a
    /// slow containerd call about one container never delays another container's SIGKILL
    /// deadline.
    async fn keeping_deadlines<T>(&mut self, fut: impl Future<Output = T>) -> T {
        tokio::pin!(fut);
        loop {
            let deadline = self.kill_at.values().min().copied();
            tokio::select! {
                r = &mut fut => return r,
                _ = until(deadline) => self.kill_overdue().await,
                ev = self.rx.recv() => match ev {
                    Some(ev) => self.take_while_busy(ev).await,
                    None => return fut.await,
                },
            }
        }
    }

    /// An event arriving while a start-phase call or a settle is in progress. Once the task is
    /// stopping, an exit is recorded at once, so the SIGKILL retries see it; anything else is
    /// kept, in order, for the main loop.
    async fn take_while_busy(&mut self, ev: Event) {
        match ev {
            // Boxed: an exit's restart waits here in turn.
            Event::Exited { name, status } if self.stopping() => {
                Box::pin(self.on_exit(&name, status)).await
            }
            other => self.deferred.push_back(other),
        }
    }

    fn labels(&self, d: &ContainerDefinition) -> HashMap<String, String> {
        let mut l = HashMap::new();
        l.insert(
            crate::runtime::CLUSTER_LABEL.into(),
            self.shared.config.cluster.clone(),
        );
        l.insert(
            crate::runtime::TASK_ARN_LABEL.into(),
            self.rec.task.task_arn.clone(),
        );
        l.insert(crate::runtime::CONTAINER_NAME_LABEL.into(), d.name.clone());
        l.insert(
            crate::runtime::FAMILY_LABEL.into(),
            self.rec.definition.family.clone(),
        );
        l.insert(
            crate::runtime::REVISION_LABEL.into(),
            self.rec.definition.revision.to_string(),
        );
        for (k, v) in &d.docker_labels {
            l.entry(k.clone()).or_insert_with(|| v.clone());
        }
        l
    }

    /// Watches a container's exit in the background and tells the actor. `wait` is a long poll:
    /// when it fails (containerd restarting) or stays quiet for [`WAIT_POLL`], the watcher asks
    /// for the state and waits again. It reports only an exit status containerd gave, or the
    /// container's disappearance (NotFound) without one.
    fn watch(&mut self, name: &str, cid: &str) {
        let runtime = self.shared.runtime.clone();
        let call = self.timeouts().call;
        let tx = self.tx.clone();
        let (name, cid) = (name.to_string(), cid.to_string());
        let key = name.clone();
        let cid_for_health = cid.clone();
        let handle = tokio::spawn(
            async move {
                let mut attempt = 0;
                loop {
                    let quiet = match tokio::time::timeout(WAIT_POLL, runtime.wait(&cid)).await {
                        Ok(Ok(status)) => {
                            let _ = tx.send(Event::Exited {
                                name,
                                status: Some(status),
                            });
                            return;
                        }
                        Ok(Err(e)) => {
                            warn!(container = %cid, error = %e, "wait failed; checking the state");
                            false
                        }
                        Err(_) => true,
                    };
                    match bounded("state", &cid, call, runtime.state(&cid)).await {
                        Ok(ContainerState::Stopped(status)) => {
                            let _ = tx.send(Event::Exited {
                                name,
                                status: Some(status),
                            });
                            return;
                        }
                        Ok(ContainerState::Missing) => {
                            warn!(container = %cid, "container gone from containerd; no exit code");
                            let _ = tx.send(Event::Exited { name, status: None });
                            return;
                        }
                        Ok(_) if quiet => {
                            attempt = 0;
                            continue;
                        }
                        Ok(s) => debug!(container = %cid, state = ?s, "still there; waiting again"),
                        Err(e) => {
                            warn!(container = %cid, error = %e, "cannot get the state; retrying")
                        }
                    }
                    if tx.is_closed() {
                        return;
                    }
                    attempt += 1;
                    tokio::time::sleep(backoff(
                        Duration::from_millis(100),
                        attempt,
                        Duration::from_secs(5),
                    ))
                    .await;
                }
            }
            .in_current_span(),
        );
        if let Some(old) = self.watchers.insert(key.clone(), handle) {
            old.abort();
        }
        self.start_health_check(&key, &cid_for_health);
    }

    async fn fail_start(&mut self, reason: String) {
        warn!(%reason, "task failed to start");
        for c in &mut self.rec.state.containers {
            if Self::container_status(c) == ContainerStatus::Pending && c.reason.is_none() {
                c.reason = Some(reason.clone());
            }
        }
        self.begin_stop(reason, "TaskFailedToStart".into()).await;
    }

    /// Moves the task to STOPPING (once): containers never started go straight to STOPPED (as
    /// ECS does), running ones get their stop signal.
    async fn begin_stop(&mut self, reason: String, code: String) {
        let mut changed = false;
        if self.rec.state.stop_code.is_none() {
            self.rec.state.stop_code = Some(code);
            self.rec.state.stopped_reason = Some(reason);
            changed = true;
        }
        self.enter_stopping(changed);
    }

    /// STOPPING: never-started containers to STOPPED, running ones signalled (idempotent).
    fn enter_stopping(&mut self, mut changed: bool) {
        self.checkers.stop_all();
        for c in &mut self.rec.state.containers {
            if Self::container_status(c) == ContainerStatus::Pending {
                c.last_status = ContainerStatus::Stopped.into();
                changed = true;
            }
        }
        if !self.stopping() {
            self.set_status(TaskStatus::Stopping);
            self.rec.state.stopping_at = now();
            changed = true;
        }
        if changed {
            self.publish();
        }
        self.signal_running();
    }

    /// Sends each running container not yet signalled its stop signal and arms its SIGKILL
    /// deadline, in reverse dependency order: a container is signalled only once every
    /// container depending on it (dependsOn, links) has stopped; called again at each exit.
    /// The signal goes out from a task of its own: the actor never waits on it.
    fn signal_running(&mut self) {
        let defs = &self.rec.definition.container_definitions;
        let states = &self.rec.state.containers;
        let unsignalled: Vec<(String, String)> = states
            .iter()
            .filter(|c| Self::container_status(c) == ContainerStatus::Running)
            .filter(|c| !self.kill_at.contains_key(&c.name))
            .filter_map(|c| c.runtime_id.clone().map(|id| (c.name.clone(), id)))
            .collect();
        let mut running: Vec<(String, String)> = unsignalled
            .iter()
            .filter(|(name, _)| deps::may_stop(name, defs, states))
            .cloned()
            .collect();
        if running.is_empty() && self.kill_at.is_empty() && !unsignalled.is_empty() {
            // Nothing stopping, yet nothing may stop: a dependency cycle (refused at
            // registration). Everything gets its signal rather than nothing ever stopping.
            warn!(containers = ?unsignalled, "no stop order among the running containers; signalling them all");
            running = unsignalled;
        }
        for (name, cid) in running {
            let timeout = self
                .def(&name)
                .and_then(|d| d.stop_timeout)
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.shared.config.stop_timeout);
            let sig = signal_number(
                self.rec
                    .stop_signals
                    .get(&name)
                    .map(String::as_str)
                    .unwrap_or(""),
            );
            self.kill_at.insert(name.clone(), Instant::now() + timeout);
            self.send_signal(&name, &cid, sig);
        }
    }

    /// Sends a signal from a task of its own, bounded by the call timeout; a failure is logged
    /// and told to the actor (the container's CannotStopContainerError; a failed SIGKILL is
    /// retried by the deadline re-armed in [`Self::kill_overdue`]).
    fn send_signal(&self, name: &str, cid: &str, sig: u32) {
        let runtime = self.shared.runtime.clone();
        let after = self.timeouts().call;
        let (name, cid) = (name.to_string(), cid.to_string());
        let tx = self.tx.clone();
        tokio::spawn(
            async move {
                if let Err(e) = bounded("kill", &cid, after, runtime.kill(&cid, sig)).await {
                    warn!(container = %name, signal = sig, error = %e, "signal failed");
                    let _ = tx.send(Event::StopFailed {
                        name,
                        message: e.message(),
                    });
                }
            }
            .in_current_span(),
        );
    }

    /// SIGKILLs each container past its deadline and re-arms the deadline with back-off, so a
    /// failed or ignored SIGKILL is sent again; after [`MAX_SIGKILLS`] the agent gives up on
    /// the container: it is reported STOPPED (no exit code) with [`TASK_STATE_ERROR`].
    async fn kill_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .kill_at
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in overdue {
            let sent = self.sigkills.get(&name).copied().unwrap_or(0);
            let cid = self
                .rec
                .state
                .containers
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.runtime_id.clone());
            let Some(cid) = cid.filter(|_| sent < MAX_SIGKILLS) else {
                error!(container = %name, sigkills = sent, "the container does not stop; giving up on it");
                self.give_up(&name);
                continue;
            };
            if sent == 0 {
                info!(container = %name, "stop timeout passed; sending SIGKILL");
            } else {
                warn!(container = %name, sigkills = sent, "still not stopped; sending SIGKILL again");
            }
            self.sigkills.insert(name.clone(), sent + 1);
            self.kill_at.insert(
                name.clone(),
                now + backoff(Duration::from_secs(1), sent, Duration::from_secs(30)),
            );
            self.send_signal(&name, &cid, nix::sys::signal::Signal::SIGKILL as i32 as u32);
        }
    }

    /// Reports a container that cannot be stopped as STOPPED with [`TASK_STATE_ERROR`].
    fn give_up(&mut self, name: &str) {
        self.kill_at.remove(name);
        if let Some(w) = self.watchers.remove(name) {
            w.abort();
        }
        self.gave_up = true;
        if let Some(c) = self.container(name) {
            c.last_status = ContainerStatus::Stopped.into();
            c.reason = Some(TASK_STATE_ERROR.into());
        }
        self.publish();
        // Given up on: what it depends on may get its stop signal now.
        self.signal_running();
    }

    async fn on_exit(&mut self, name: &str, status: Option<u32>) {
        self.kill_at.remove(name);
        self.watchers.remove(name);
        self.checkers.stop(name);
        let essential = self
            .def(name)
            .map(|d| d.essential.unwrap_or(true))
            .unwrap_or(true);
        let already = self
            .rec
            .state
            .containers
            .iter()
            .find(|c| c.name == name)
            .is_none_or(|c| Self::container_status(c) == ContainerStatus::Stopped);
        if already {
            return;
        }
        let container = name.to_string();
        // The counter covers the cgroup's life; this run's kills are what it grew by since the
        // run began (a container restarted in place keeps its cgroup).
        let before = self.rec.oom_kills_before.get(name).copied().unwrap_or(0);
        let kills = match self
            .cgroup("oom check", move |c, id| Ok(c.oom_kills(id, &container)))
            .await
        {
            Ok(n) => Some(n),
            Err(e) => {
                warn!(container = %name, error = %e, "cannot tell whether the kernel OOM-killed it");
                None
            }
        };
        let oom = kills.is_some_and(|n| n > before);
        let rebooted = status.is_none() && self.gone_at_reboot.remove(name);
        // As ECS's RestartTracker: the exit code and the time it ran decide, an OOM kill too.
        let mut restart_failed = None;
        if self.should_restart(name, status) {
            if let Some(n) = kills {
                self.rec.oom_kills_before.insert(name.to_string(), n);
            }
            match self.restart(name).await {
                Ok(true) => return,
                Ok(false) => {}
                Err(e) => restart_failed = Some(e),
            }
        }
        let Some(c) = self.container(name) else {
            return;
        };
        c.last_status = ContainerStatus::Stopped.into();
        c.exit_code = status.map(|s| s as i32);
        c.finished_at = now();
        if let Some(e) = restart_failed {
            // Its restart (restartPolicy) failed: that is why it is not running.
            c.reason = Some(format!("CannotStartContainerError: {e}"));
        } else if oom {
            c.reason = Some(OOM_REASON.into());
        } else if rebooted {
            c.reason = Some(REBOOTED.into());
        } else if status.is_none() {
            c.reason = Some(VANISHED.into());
        }
        info!(container = %name, exit_code = ?status, oom, rebooted, "container exited");
        if essential && !self.stopping() {
            let reason = if rebooted {
                HOST_REBOOTED
            } else {
                ESSENTIAL_EXITED
            };
            self.begin_stop(reason.into(), "EssentialContainerExited".into())
                .await;
        } else {
            self.publish();
            if self.stopping() {
                // The containers it depended on may get their stop signal now.
                self.signal_running();
            }
        }
    }

    /// ECS's restart rule (its RestartTracker): the container's restartPolicy is enabled, the
    /// task is not stopping, the exit code is known and not in ignoredExitCodes, and the
    /// container ran at least restartAttemptPeriod seconds since its last (re)start. A
    /// container that exits sooner is not restarted (then the essential-container rule applies).
    fn should_restart(&self, name: &str, status: Option<u32>) -> bool {
        let Some(policy) = self.def(name).and_then(|d| d.restart_policy.as_ref()) else {
            return false;
        };
        if !policy.enabled
            || self.stopping()
            || TaskStatus::parse(&self.rec.desired_status) == Ok(TaskStatus::Stopped)
        {
            return false;
        }
        let Some(code) = status else {
            return false;
        };
        if policy.ignored_exit_codes.contains(&(code as i32)) {
            info!(container = %name, exit_code = code, "exit code in ignoredExitCodes; not restarting");
            return false;
        }
        let period = policy
            .restart_attempt_period
            .filter(|p| *p > 0)
            .map_or(DEFAULT_RESTART_ATTEMPT_PERIOD, |p| p as u64);
        let ran = self
            .started
            .get(name)
            .map(|t| t.elapsed())
            .unwrap_or(Duration::ZERO);
        if ran < Duration::from_secs(period) {
            info!(container = %name, ran = ?ran, period, "exited before its restartAttemptPeriod; not restarting");
            return false;
        }
        true
    }

    /// Restarts an exited container in place (same container and rootfs, same log file);
    /// `Ok(true)` when it runs again, `Err` with the runtime's message when the restart failed
    /// and no process runs. A failed restart is settled as a failed start is: a process that
    /// may run is watched, never reported stopped.
    async fn restart(&mut self, name: &str) -> Result<bool, String> {
        let Some(cid) = self
            .rec
            .state
            .containers
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.runtime_id.clone())
        else {
            return Ok(false);
        };
        // pidMode/ipcMode task: the spec joins the namespaces of the process it joined at its
        // start (by its /proc entry); restarting is only right while that process is still the
        // init of a running container of the task. Once it exited, the PID namespace is gone
        // (and a reused PID would be some other process's namespaces).
        if let Some(joined) = self.rec.namespace_holders.get(name).copied() {
            match self.is_running_init(name, joined).await {
                Some(true) => {}
                Some(false) => {
                    return Err(format!(
                        "the task's PID/IPC namespaces it joined (process {joined}) are gone: the container that held them exited"
                    ))
                }
                // A stop arrived meanwhile: no restart.
                None => return Ok(false),
            }
        }
        // As ECS (RestartTracker.RecordRestart before the start): the restart is counted and
        // the old process's health dropped before the new process runs, so what it reads of
        // itself (the metadata endpoint's RestartCount and Health) is already its own.
        let count = if let Some(c) = self.container(name) {
            c.restart_count += 1;
            c.finished_at = now();
            // A new process: its health is undecided again, its startPeriod counts anew.
            if c.health_status.is_some() {
                c.health_status = Some(berth_proto::status::HealthStatus::Unknown.into());
                c.health_output = None;
                c.health_checked_at = now();
            }
            c.restart_count
        } else {
            0
        };
        self.update_task_health();
        self.publish();
        // containerd holds the container's spec (the runtime reads it): only its ID, its log file
        // and whether it keeps a stdin are needed.
        let create = CreateContainer {
            id: cid.clone(),
            image: Default::default(),
            spec: Default::default(),
            labels: HashMap::new(),
            log_path: self.shared.config.data_dir.log(&self.id, name),
            open_stdin: self.def(name).is_some_and(|d| d.interactive == Some(true)),
        };
        let runtime = self.shared.runtime.clone();
        let after = self.timeouts().call;
        let done = self
            .keeping_deadlines(bounded("restart", &cid, after, async move {
                runtime.restart(&create).await
            }))
            .await;
        if let Err(e) = done {
            warn!(container = %name, error = %e, "restart failed");
            let runs = matches!(
                self.settle(&cid, Some(SETTLE_ATTEMPTS)).await,
                Some(ContainerState::Running | ContainerState::Unknown) | None
            );
            if !runs {
                return Err(e.message());
            }
        }
        self.started.insert(name.to_string(), Instant::now());
        if let Some(c) = self.container(name) {
            c.started_at = now();
        }
        info!(container = %name, restart_count = count, "container restarted (restartPolicy)");
        self.publish();
        self.watch(name, &cid);
        Ok(true)
    }

    /// Removes the containers' exited processes (containerd tasks, shims) and the task cgroup,
    /// retrying with back-off, then schedules the removal of the containers, their snapshots,
    /// the task's files and its log files after the cleanup wait (persisted, see
    /// [`cleanup`]) and reports STOPPED. While cleanup fails the task stays STOPPING (its
    /// resources stay counted); a container whose process delete keeps failing is SIGKILLed
    /// again if it may still run, and after [`CLEANUP_ATTEMPTS`] rounds the task is reported
    /// STOPPED with [`TASK_STATE_ERROR`].
    async fn finish(&mut self) {
        for (_, w) in self.watchers.drain() {
            w.abort();
        }
        // Every container has stopped: the network goes now, not after the cleanup.
        self.network_down().await;
        let mut left: Vec<String> = self
            .rec
            .state
            .containers
            .iter()
            .filter_map(|c| c.runtime_id.clone())
            .collect();
        let mut cgroup_left = true;
        let mut round = 0;
        loop {
            let mut failed = Vec::new();
            for cid in left {
                let runtime = &self.shared.runtime;
                if let Err(e) = bounded(
                    "delete process",
                    &cid,
                    self.timeouts().call,
                    runtime.delete_process(&cid),
                )
                .await
                {
                    warn!(container = %cid, error = %e, "cleanup failed");
                    failed.push(cid);
                }
            }
            left = failed;
            // The cgroup goes last: it is only empty once the containers' processes are gone.
            if cgroup_left && left.is_empty() {
                match self.cgroup("remove", |c, id| c.remove_task(id)).await {
                    Ok(()) => cgroup_left = false,
                    Err(e) => warn!(error = %e, "cgroup cleanup failed"),
                }
            }
            if left.is_empty() && !cgroup_left {
                break;
            }
            round += 1;
            if round >= CLEANUP_ATTEMPTS {
                error!(containers = ?left, cgroup = cgroup_left, "cleanup keeps failing; giving up");
                self.gave_up = true;
                break;
            }
            for cid in &left {
                let state = bounded(
                    "state",
                    cid,
                    self.timeouts().call,
                    self.shared.runtime.state(cid),
                )
                .await;
                if !matches!(
                    state,
                    Ok(ContainerState::Stopped(_) | ContainerState::Missing)
                ) {
                    self.send_signal(cid, cid, nix::sys::signal::Signal::SIGKILL as i32 as u32);
                }
            }
            tokio::time::sleep(backoff(
                Duration::from_millis(500),
                round - 1,
                Duration::from_secs(30),
            ))
            .await;
        }
        if self.gave_up {
            self.rec.state.stopped_reason = Some(TASK_STATE_ERROR.into());
        }
        self.release_task_shm().await;
        // On disk before STOPPED is: a STOPPED record always has its cleanup scheduled.
        let due = cleanup::Cleanup::new(&self.rec, &self.id, self.shared.config.task_cleanup_wait);
        cleanup::schedule(&self.shared, due).await;
        self.rec.state.execution_stopped_at = now();
        self.rec.state.stopped_at = now();
        self.set_status(TaskStatus::Stopped);
        info!(reason = ?self.rec.state.stopped_reason, "task stopped");
        self.publish();
    }

    /// Once its containers are gone: unmounts ipcMode task's /dev/shm (memory is released at
    /// STOPPED; the task's files go after the cleanup wait, `cleanup::remove_now`, which
    /// unmounts it too in case this failed).
    async fn release_task_shm(&self) {
        let shm = self.shared.config.data_dir.task_files(&self.id).join("shm");
        let job =
            tokio::task::spawn_blocking(move || crate::runtime::options::unmount_task_shm(&shm));
        match tokio::time::timeout(self.timeouts().cgroup, job).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => warn!(error = %e, "cannot unmount the task's /dev/shm"),
            Ok(Err(e)) => warn!(error = %e, "cannot unmount the task's /dev/shm"),
            Err(_) => warn!("unmounting the task's /dev/shm did not finish in time"),
        }
    }

    /// After an agent restart: looks at each container as containerd has it now, retrying
    /// until containerd gives a definite answer (an error or UNKNOWN is never "gone").
    /// Reads a recovered container's output FIFOs again (issue 10): what it wrote while no
    /// agent read waits in its pipes and reaches its spool files now.
    async fn attach_logs(&mut self, name: &str, cid: &str) {
        self.deliver_logs(name, cid);
        let c = CreateContainer {
            id: cid.to_string(),
            image: Default::default(),
            spec: Default::default(),
            labels: HashMap::new(),
            log_path: self.shared.config.data_dir.log(&self.id, name),
            open_stdin: false,
        };
        let runtime = self.shared.runtime.clone();
        let after = self.timeouts().call;
        let done = bounded("attach logs", cid, after, async move {
            runtime.attach_logs(&c).await
        })
        .await;
        if let Err(e) = done {
            warn!(container = %name, error = %e, "cannot capture the output of a recovered container");
        }
    }

    /// Hands a started or recovered container's output to its log driver (issue 10).
    fn deliver_logs(&self, name: &str, cid: &str) {
        if let (Some(logs), Some(c)) = (&self.shared.config.logs, self.container_log(name, cid)) {
            logs.watch(c);
        }
    }

    /// [`Self::deliver_logs`] for a container found stopped at recovery: its output ended.
    fn deliver_logs_ended(&self, name: &str, cid: &str) {
        if let (Some(logs), Some(c)) = (&self.shared.config.logs, self.container_log(name, cid)) {
            logs.watch_ended(c);
        }
    }

    fn container_log(&self, name: &str, cid: &str) -> Option<crate::logs::service::ContainerLog> {
        self.shared.config.logs.as_ref()?;
        let defs = &self.rec.definition.container_definitions;
        Some(crate::logs::service::ContainerLog {
            task_arn: self.rec.task.task_arn.clone(),
            container_name: name.to_string(),
            runtime_id: cid.to_string(),
            log_path: self.shared.config.data_dir.log(&self.id, name),
            log_configuration: self.def(name).and_then(|d| d.log_configuration.clone()),
            task_containers: defs
                .iter()
                .filter(|d| d.log_configuration.is_some())
                .count()
                .max(1),
        })
    }

    async fn recover(&mut self) {
        let now = &self.shared.config.boot_id;
        let rebooted = matches!((&self.rec.boot_id, now), (Some(then), Some(now)) if then != now);
        if rebooted {
            info!("the host rebooted since the task's containers last ran");
        }
        let names: Vec<(String, Option<String>, ContainerStatus)> = self
            .rec
            .state
            .containers
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    c.runtime_id.clone(),
                    Self::container_status(c),
                )
            })
            .collect();
        for (name, cid, status) in names {
            if status == ContainerStatus::Stopped {
                // Its output ended before the restart; what is not delivered yet still goes.
                if let Some(cid) = &cid {
                    self.deliver_logs_ended(&name, cid);
                }
                continue;
            }
            let Some(cid) = cid else { continue };
            let Some(state) = self.settle(&cid, None).await else {
                continue;
            };
            info!(container = %name, state = ?state, "recovered");
            if matches!(
                state,
                ContainerState::Running | ContainerState::Unknown | ContainerState::Stopped(_)
            ) {
                self.attach_logs(&name, &cid).await;
            }
            match state {
                ContainerState::Running | ContainerState::Unknown => {
                    self.set_container_status(&name, ContainerStatus::Running);
                    self.watch(&name, &cid);
                }
                ContainerState::Stopped(code) => {
                    // Exited while the agent was down: handled in order by the main loop.
                    self.set_container_status(&name, ContainerStatus::Running);
                    self.deferred.push_back(Event::Exited {
                        name,
                        status: Some(code),
                    });
                }
                // Recorded started, yet containerd holds it created with no process: whatever
                // ran is gone with no exit status, as for a vanished container (and cleanup
                // deletes what is left).
                ContainerState::Created if status == ContainerStatus::Running => {
                    if rebooted {
                        self.gone_at_reboot.insert(name.clone());
                    }
                    self.deferred
                        .push_back(Event::Exited { name, status: None });
                }
                // Created, never started: start() starts it (or the stop stops it) by the
                // same rules as a fresh start.
                ContainerState::Created => {}
                ContainerState::Missing if status == ContainerStatus::Running => {
                    // Gone with no exit status to report: stopped without an exit code.
                    if rebooted {
                        self.gone_at_reboot.insert(name.clone());
                    }
                    self.deferred
                        .push_back(Event::Exited { name, status: None });
                }
                ContainerState::Missing => {
                    // Never created: start() creates it.
                    if let Some(c) = self.container(&name) {
                        c.runtime_id = None;
                    }
                }
            }
        }
        if self.rec.network_set_up && !self.rec.network_released {
            // The listeners died with the previous agent.
            self.metadata_up().await;
        }
        if self.stopping() {
            // Signals again: the SIGKILL deadlines died with the previous agent.
            self.enter_stopping(true);
        } else {
            self.publish();
        }
    }
}

/// A copy of `d` whose environment holds its secrets (a secret overrides an `environment`
/// entry of the same name, as in ECS); `None` when it has none. The copy is used to build the
/// container's spec and dropped: the task record keeps the definition with references only.
fn with_secrets(
    d: &ContainerDefinition,
    secrets: &[crate::secrets::TaskSecret],
) -> Option<ContainerDefinition> {
    let mine: Vec<_> = secrets.iter().filter(|s| s.container == d.name).collect();
    if mine.is_empty() {
        return None;
    }
    let mut d = d.clone();
    for s in mine {
        d.environment.retain(|kv| kv.name != s.name);
        d.environment.push(berth_proto::v1::KeyValuePair {
            name: s.name.clone(),
            value: s.value.clone(),
        });
    }
    Some(d)
}

/// Issue 11: sends where a task's pulls stand about once a second while any changes; ends
/// when aborted (the pulls are over).
fn pull_watch(
    reporter: Arc<super::reporter::Reporter>,
    task_arn: String,
    mut pulls: Vec<(
        String,
        String,
        tokio::sync::watch::Receiver<crate::images::PullState>,
    )>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if !pulls
                .iter()
                .any(|(_, _, rx)| rx.has_changed().unwrap_or(false))
            {
                // Wait for a change rather than ticking through an idle pull.
                let changes = pulls.iter_mut().map(|(_, _, rx)| Box::pin(rx.changed()));
                if futures::future::select_all(changes).await.0.is_err() {
                    return;
                }
            }
            let now: Vec<_> = pulls
                .iter_mut()
                .map(|(n, i, rx)| (n.clone(), i.clone(), *rx.borrow_and_update()))
                .collect();
            publish_pull_progress(
                &reporter,
                &task_arn,
                now.iter().map(|(n, i, p)| (n.as_str(), i.as_str(), *p)),
            );
        }
    })
}

fn publish_pull_progress<'a>(
    reporter: &super::reporter::Reporter,
    task_arn: &str,
    pulls: impl Iterator<Item = (&'a str, &'a str, crate::images::PullState)>,
) {
    reporter.publish_pull_progress(berth_proto::v1::TaskPullProgress {
        task_arn: task_arn.to_string(),
        containers: pulls
            .map(|(name, image, p)| berth_proto::v1::ContainerPullProgress {
                container_name: name.to_string(),
                image: image.to_string(),
                phase: p.phase.as_str().to_string(),
                layers_done: p.layers_done,
                layers_total: p.layers_total,
                bytes_done: p.bytes_done,
                bytes_total: p.bytes_total,
            })
            .collect(),
    });
}
