//! One task's actor: starts its containers, watches them exit, stops them (stop signal, then
//! SIGKILL after stopTimeout) and cleans up. Statuses only move forward; every change is
//! persisted and reported. Driven by events only: container exits, the controller's stop, and
//! the stop-timeout deadline.

use super::{task_id, Event, Shared};
use crate::cgroups::Cgroups;
use crate::runtime::spec::{self, SpecContext};
use crate::runtime::{ContainerState, CreateContainer, Runtime, RuntimeError};
use crate::state::TaskRecord;
use berth_proto::status::TaskStatus;
use berth_proto::v1::{ContainerDefinition, ContainerStateChange};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn, Instrument};

/// The reason ECS gives for an OOM kill.
pub const OOM_REASON: &str = "OutOfMemoryError: Container killed due to memory usage";
/// The reason ECS gives when an essential container exits.
pub const ESSENTIAL_EXITED: &str = "Essential container in task exited";

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
    /// SIGKILL deadlines of containers sent their stop signal.
    kill_at: HashMap<String, Instant>,
    /// Events taken off the channel while starting, for the main loop to handle in order.
    deferred: std::collections::VecDeque<Event>,
}

impl<R: Runtime, C: Cgroups> TaskActor<R, C> {
    pub(crate) fn new(
        shared: Arc<Shared<R, C>>,
        rec: TaskRecord,
        tx: mpsc::UnboundedSender<Event>,
        rx: mpsc::UnboundedReceiver<Event>,
    ) -> Self {
        let id = task_id(&rec.task.task_arn);
        Self {
            shared,
            rec,
            id,
            tx,
            rx,
            kill_at: HashMap::new(),
            deferred: Default::default(),
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
            .all(|c| c.last_status == "STOPPED")
    }

    /// Runs the task to STOPPED.
    pub(crate) async fn run(mut self, recovering: bool) {
        let family = format!(
            "{}:{}",
            self.rec.definition.family, self.rec.definition.revision
        );
        let span = tracing::info_span!("task", task = %self.id, family = %family);
        async move {
            if recovering {
                self.recover().await;
            }
            if self.status().is_none_or(|s| s < TaskStatus::Running) {
                self.start().await;
            }
            loop {
                if self.all_stopped() {
                    if !self.stopping() {
                        // Every container exited by itself.
                        self.begin_stop(ESSENTIAL_EXITED.into(), "EssentialContainerExited".into()).await;
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
                    _ = async { match deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
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
                self.rec.desired_status = "STOPPED".into();
                self.begin_stop(reason, code).await;
            }
            Event::Exited { name, status } => self.on_exit(&name, status).await,
        }
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

    async fn start(&mut self) {
        self.set_status(TaskStatus::Pending);
        let mode = self.rec.definition.network_mode.clone();
        if mode != "host" && mode != "none" {
            return self
                .fail_start(format!(
                    "ContainerNetworkingError: network mode {mode} is not supported by this agent yet; use host or none"
                ))
                .await;
        }
        self.rec.state.pull_started_at = now();
        self.publish();
        let mut images = HashMap::new();
        let defs = self.rec.definition.container_definitions.clone();
        for d in &defs {
            match self.shared.runtime.image(&d.image).await {
                Ok(img) => {
                    self.rec.stop_signals.insert(d.name.clone(), img.stop_signal.clone());
                    if let Some(c) = self.container(&d.name) {
                        c.image_digest = Some(img.digest.clone());
                    }
                    images.insert(d.name.clone(), img);
                }
                Err(RuntimeError::ImageNotFound(name)) => {
                    return self
                        .fail_start(format!(
                            "CannotPullContainerError: image {name} not found in this host's image store; load it with `berth-agent image load` (registry pulls are not supported yet)"
                        ))
                        .await
                }
                Err(e) => return self.fail_start(format!("CannotPullContainerError: {e}")).await,
            }
        }
        self.rec.state.pull_stopped_at = now();
        debug!("images resolved");
        let limits = crate::cgroups::TaskLimits::of(&self.rec.definition);
        if let Err(e) = self.shared.cgroups.create_task(&self.id, &limits) {
            return self
                .fail_start(format!("ResourceInitializationError: {e}"))
                .await;
        }
        for (i, d) in defs.iter().enumerate() {
            if let Some((reason, code)) = self.stop_requested() {
                self.rec.desired_status = "STOPPED".into();
                return self.begin_stop(reason, code).await;
            }
            let already = self
                .rec
                .state
                .containers
                .iter()
                .any(|c| c.name == d.name && c.last_status != "PENDING");
            if already {
                continue;
            }
            let Some(img) = images.get(&d.name) else {
                continue;
            };
            let cid = container_id(&self.id, i, &d.name);
            let ctx = SpecContext {
                network_mode: &mode,
                cgroups_path: self.shared.cgroups.container_path(&self.id, &d.name),
                hostname: cid.chars().take(12).collect(),
                security: &self.shared.config.security,
            };
            let spec = match spec::build(d, img, &ctx) {
                Ok(s) => s,
                Err(e) => {
                    return self
                        .fail_start(format!("CannotCreateContainerError: {e}"))
                        .await
                }
            };
            if let Some(c) = self.container(&d.name) {
                c.runtime_id = Some(cid.clone());
            }
            self.publish();
            let labels = self.labels(d);
            let create = CreateContainer {
                id: cid.clone(),
                image: img.clone(),
                spec,
                labels,
                log_path: self.shared.config.data_dir.log(&self.id, &d.name),
            };
            if let Err(e) = self.shared.runtime.create(&create).await {
                return self
                    .fail_start(format!("CannotCreateContainerError: {}", e.message()))
                    .await;
            }
            if let Err(e) = self.shared.runtime.start(&create).await {
                return self
                    .fail_start(format!("CannotStartContainerError: {}", e.message()))
                    .await;
            }
            info!(container = %d.name, id = %cid, "container started");
            if let Some(c) = self.container(&d.name) {
                c.last_status = "RUNNING".into();
            }
            self.watch(&d.name, &cid);
        }
        self.set_status(TaskStatus::Running);
        self.rec.state.started_at = now();
        self.publish();
    }

    fn labels(&self, d: &ContainerDefinition) -> HashMap<String, String> {
        let mut l = HashMap::new();
        l.insert(
            "com.amazonaws.ecs.cluster".into(),
            self.shared.config.cluster.clone(),
        );
        l.insert(
            "com.amazonaws.ecs.task-arn".into(),
            self.rec.task.task_arn.clone(),
        );
        l.insert("com.amazonaws.ecs.container-name".into(), d.name.clone());
        l.insert(
            "com.amazonaws.ecs.task-definition-family".into(),
            self.rec.definition.family.clone(),
        );
        l.insert(
            "com.amazonaws.ecs.task-definition-version".into(),
            self.rec.definition.revision.to_string(),
        );
        for (k, v) in &d.docker_labels {
            l.entry(k.clone()).or_insert_with(|| v.clone());
        }
        l
    }

    /// Waits for a container's exit in the background and tells the actor.
    fn watch(&self, name: &str, cid: &str) {
        let runtime = self.shared.runtime.clone();
        let tx = self.tx.clone();
        let (name, cid) = (name.to_string(), cid.to_string());
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            loop {
                match runtime.wait(&cid).await {
                    Ok(status) => {
                        let _ = tx.send(Event::Exited { name, status });
                        return;
                    }
                    Err(e) => {
                        // containerd restarting or the link failing: ask for the state, retry.
                        match runtime.state(&cid).await {
                            Ok(ContainerState::Stopped(status)) => {
                                let _ = tx.send(Event::Exited { name, status });
                                return;
                            }
                            Ok(ContainerState::Missing) => {
                                let _ = tx.send(Event::Exited { name, status: 255 });
                                return;
                            }
                            _ => {
                                warn!(container = %cid, error = %e, "wait failed; retrying");
                                if tx.is_closed() {
                                    return;
                                }
                                tokio::time::sleep(backoff).await;
                                backoff = (backoff * 2).min(Duration::from_secs(5));
                            }
                        }
                    }
                }
            }
        });
    }

    async fn fail_start(&mut self, reason: String) {
        warn!(%reason, "task failed to start");
        for c in &mut self.rec.state.containers {
            if c.last_status == "PENDING" {
                c.last_status = "STOPPED".into();
                if c.reason.is_none() {
                    c.reason = Some(reason.clone());
                }
            }
        }
        self.begin_stop(reason, "TaskFailedToStart".into()).await;
    }

    async fn begin_stop(&mut self, reason: String, code: String) {
        if self.rec.state.stop_code.is_none() {
            self.rec.state.stop_code = Some(code);
            self.rec.state.stopped_reason = Some(reason);
        }
        if self.stopping() {
            return;
        }
        self.set_status(TaskStatus::Stopping);
        self.rec.state.stopping_at = now();
        self.publish();
        self.signal_running().await;
    }

    /// Sends each running container its stop signal and arms its SIGKILL deadline.
    async fn signal_running(&mut self) {
        let running: Vec<(String, String)> = self
            .rec
            .state
            .containers
            .iter()
            .filter(|c| c.last_status == "RUNNING")
            .filter_map(|c| c.runtime_id.clone().map(|id| (c.name.clone(), id)))
            .collect();
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
            if let Err(e) = self.shared.runtime.kill(&cid, sig).await {
                warn!(container = %name, error = %e, "stop signal failed");
            }
            self.kill_at.insert(name, Instant::now() + timeout);
        }
    }

    async fn kill_overdue(&mut self) {
        let now = Instant::now();
        let overdue: Vec<String> = self
            .kill_at
            .iter()
            .filter(|(_, d)| **d <= now)
            .map(|(n, _)| n.clone())
            .collect();
        for name in overdue {
            self.kill_at.remove(&name);
            let cid = self
                .rec
                .state
                .containers
                .iter()
                .find(|c| c.name == name)
                .and_then(|c| c.runtime_id.clone());
            if let Some(cid) = cid {
                info!(container = %name, "stop timeout passed; sending SIGKILL");
                if let Err(e) = self
                    .shared
                    .runtime
                    .kill(&cid, nix::sys::signal::Signal::SIGKILL as i32 as u32)
                    .await
                {
                    warn!(container = %name, error = %e, "SIGKILL failed");
                }
            }
        }
    }

    async fn on_exit(&mut self, name: &str, status: u32) {
        self.kill_at.remove(name);
        let oom = self.shared.cgroups.oom_killed(&self.id, name);
        let essential = self
            .def(name)
            .map(|d| d.essential.unwrap_or(true))
            .unwrap_or(true);
        let Some(c) = self.container(name) else {
            return;
        };
        if c.last_status == "STOPPED" {
            return;
        }
        c.last_status = "STOPPED".into();
        c.exit_code = Some(status as i32);
        if oom {
            c.reason = Some(OOM_REASON.into());
        }
        info!(container = %name, exit_code = status, oom, "container exited");
        if essential && !self.stopping() {
            self.begin_stop(ESSENTIAL_EXITED.into(), "EssentialContainerExited".into())
                .await;
        } else {
            self.publish();
        }
    }

    /// Removes the containers and cgroups, then reports STOPPED.
    async fn finish(&mut self) {
        let ids: Vec<String> = self
            .rec
            .state
            .containers
            .iter()
            .filter_map(|c| c.runtime_id.clone())
            .collect();
        for cid in ids {
            if let Err(e) = self.shared.runtime.delete(&cid).await {
                warn!(container = %cid, error = %e, "cleanup failed");
            }
        }
        if let Err(e) = self.shared.cgroups.remove_task(&self.id) {
            warn!(error = %e, "cgroup cleanup incomplete");
        }
        self.rec.state.execution_stopped_at = now();
        self.rec.state.stopped_at = now();
        self.set_status(TaskStatus::Stopped);
        info!(reason = ?self.rec.state.stopped_reason, "task stopped");
        self.publish();
    }

    /// After an agent restart: looks at each container as containerd has it now.
    async fn recover(&mut self) {
        let names: Vec<(String, Option<String>, String)> = self
            .rec
            .state
            .containers
            .iter()
            .map(|c| (c.name.clone(), c.runtime_id.clone(), c.last_status.clone()))
            .collect();
        for (name, cid, status) in names {
            if status == "STOPPED" {
                continue;
            }
            let Some(cid) = cid else { continue };
            match self.shared.runtime.state(&cid).await {
                Ok(ContainerState::Running) => {
                    if let Some(c) = self.container(&name) {
                        c.last_status = "RUNNING".into();
                    }
                    self.watch(&name, &cid);
                }
                Ok(ContainerState::Stopped(code)) => {
                    let _ = self.tx.send(Event::Exited { name, status: code });
                }
                Ok(ContainerState::Created) => {
                    // Created but never started before the agent died: the start is lost.
                    let _ = self.shared.runtime.delete(&cid).await;
                    if let Some(c) = self.container(&name) {
                        c.last_status = "STOPPED".into();
                        c.reason = Some("CannotStartContainerError: the agent restarted before the container started".into());
                    }
                }
                Ok(ContainerState::Missing) | Err(_) => {
                    if let Some(c) = self.container(&name) {
                        if status == "RUNNING" {
                            c.last_status = "STOPPED".into();
                            c.reason = Some(
                                "CannotInspectContainerError: container no longer exists".into(),
                            );
                        } else {
                            // Never created: let start() create it.
                            c.runtime_id = None;
                        }
                    }
                }
            }
        }
        if self.stopping() {
            self.signal_running().await;
        }
        self.publish();
    }
}
