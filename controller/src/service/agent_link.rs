//! The controller's half of the agent link, apart from RunTask: opening a session (protocol
//! window, registration, the agent's state epoch), the desired tasks of an instance, and the
//! state changes its agent reports, including adoption of tasks the controller has no record of.
//!
//! The rule (docs/ARCHITECTURE.md, "orphans"): every task the controller assigned keeps its
//! persisted record until its agent confirms it STOPPED; the controller confirms a stop only for
//! a task it holds a record of; a task an agent runs that the controller has no record of at all
//! is adopted (a Task visible in ListTasks/DescribeTasks) and stopped only by StopTask.

use super::instances::is_inactive;
use super::retention::stopped_since;
use super::tasks::{effective_definition, task_id};
use super::validation::task_needs;
use super::{
    new_id, now, put, Controller, State, INSTANCE_PREFIX, TASK_PREFIX, UNCONFIRMED_PREFIX,
};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::arn;
use berth_proto::link;
use berth_proto::status::{ContainerStatus, HealthStatus, TaskStatus};
use berth_proto::v1::*;
use std::collections::{HashMap, HashSet};
use tracing::{info, warn};

/// Why a session is refused.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The agent speaks a protocol outside this controller's window.
    #[error("{0}")]
    Protocol(String),
    /// The hello names no registered container instance.
    #[error("container instance {0} is not registered; register first")]
    NotRegistered(String),
    /// A report came from a session whose epoch is no longer the instance's (a newer agent
    /// process has connected since).
    #[error("session of epoch {0} was superseded by a newer agent epoch")]
    Superseded(String),
    /// Storing failed, or a report was malformed.
    #[error(transparent)]
    Ecs(#[from] EcsError),
}

/// An open session: which instance, and the agent state epoch its reports are numbered in.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    /// The container instance id.
    pub instance_id: String,
    /// The agent's state epoch.
    pub epoch: String,
    /// The session's peer proved its identity (a client certificate): its reports may name
    /// only tasks of its own instance; a task of another instance is not moved to it.
    pub own_tasks_only: bool,
}

/// What a session has sent so far: each task's definition goes once per session; to an agent
/// speaking link protocol 2 (issue 12), the last task revision it read, and per ARN whether it
/// named a task (with the network sent) or a stop confirmation, so later sets carry only the
/// changes (`DesiredTasks.partial`). `Default` is a protocol 1 session: whole sets only.
#[derive(Debug, Default)]
pub struct SessionSent {
    /// The agent takes partial sets (its hello said protocol 2 or more).
    partial: bool,
    /// The session's first (whole) set went out.
    started: bool,
    /// Ids of the tasks whose definition this session sent.
    defined: HashSet<String>,
    /// Protocol 2: by task ARN, what the last set naming it held.
    named: HashMap<String, Named>,
    /// Protocol 2: bumped each set; `named` entries the set names carry it.
    mark: u64,
    /// Protocol 2: the state's last task revision when the last set was built; the next
    /// partial set reads the instance's journal after it.
    seen_rev: u64,
    /// Protocol 2: the state's count of purged task records when the last set was built: when
    /// it moved, a task named here may have been purged (retention) before its removal was
    /// sent, and the next partial set looks for such ARNs.
    seen_purges: u64,
}

/// What a partial-set session last sent for one ARN.
#[derive(Debug)]
struct Named {
    what: Sent,
    /// `SessionSent::mark` of the last set that still held it.
    mark: u64,
}

#[derive(Debug, PartialEq)]
enum Sent {
    /// A task the controller holds active: its network as sent.
    Task { network: Option<TaskNetwork> },
    /// The stop confirmation of a task recorded STOPPED that the agent still reports.
    Orphan,
}

impl SessionSent {
    /// A session with an agent speaking link protocol `protocol_version`: partial sets from 2.
    pub fn new(protocol_version: u32) -> Self {
        Self {
            partial: protocol_version >= 2,
            ..Default::default()
        }
    }

    /// Records that the set being built names `arn` as `what`.
    fn name(&mut self, arn: &str, what: Sent) {
        let mark = self.mark;
        self.named.insert(arn.to_string(), Named { what, mark });
    }

    /// Whether `d` is a partial set with nothing in it (not worth sending).
    pub fn is_empty_partial(d: &DesiredTasks) -> bool {
        d.partial && d.tasks.is_empty() && d.removed.is_empty()
    }
}

fn is_stopped(t: &Task) -> bool {
    TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Stopped)
}

/// The stop confirmation of a task recorded STOPPED that the agent still reports.
fn orphan_assignment(arn: &str) -> TaskAssignment {
    TaskAssignment {
        task: Some(Task {
            task_arn: arn.to_string(),
            ..Default::default()
        }),
        task_definition: None,
        desired_status: TaskStatus::Stopped.as_str().into(),
        stopped_reason: Some("Task is recorded as stopped by the controller".into()),
        stop_code: Some("ServiceSchedulerInitiated".into()),
        network: None,
    }
}

impl State {
    /// Records a change of task `id` (now on `instance`, if any) in the journal of every
    /// instance it has been on, under a new revision: a session of protocol 2 reads its
    /// instance's journal from the last revision it saw instead of walking the instance's
    /// tasks. One entry per task and instance; retention removes them with the task.
    fn journal_change(&mut self, id: &str, instance: Option<&str>) {
        self.next_rev += 1;
        let rev = self.next_rev;
        let (old, mut on) = self.task_revs.remove(id).unwrap_or_default();
        if let Some(i) = instance {
            if !on.iter().any(|x| x == i) {
                on.push(i.to_string());
            }
        }
        for i in &on {
            let j = self.journal.entry(i.clone()).or_default();
            j.remove(&old);
            j.insert(rev, id.to_string());
        }
        self.task_revs.insert(id.to_string(), (rev, on));
    }

    /// Forgets task `id`'s journal entries (its record is being removed).
    pub(crate) fn forget_journal(&mut self, id: &str) {
        self.purges += 1;
        let Some((rev, on)) = self.task_revs.remove(id) else {
            return;
        };
        for i in on {
            if let Some(j) = self.journal.get_mut(&i) {
                j.remove(&rev);
                if j.is_empty() {
                    self.journal.remove(&i);
                }
            }
        }
    }

    /// The assignment of active task `id`, with its definition the first time the session
    /// names it wanting RUNNING.
    fn assignment(&self, id: &str, t: &Task, sent: &mut SessionSent) -> TaskAssignment {
        let wants_running = t.desired_status == TaskStatus::Running.as_str();
        let td = if wants_running && sent.defined.insert(id.to_string()) {
            self.find_task_definition(&t.task_definition_arn)
                .ok()
                .and_then(|r| r.task_definition.as_ref())
                .map(|td| effective_definition(td, t))
        } else {
            None
        };
        TaskAssignment {
            task: Some(t.clone()),
            task_definition: td,
            desired_status: t.desired_status.clone(),
            stopped_reason: t.stopped_reason.clone(),
            stop_code: t.stop_code.clone(),
            network: self.task_network(id),
        }
    }

    /// A whole set: every active task of instance `arn`, and the stop confirmations of its
    /// orphans (an ARN that is both is named once, as the task).
    fn whole_set(
        &self,
        arn: &str,
        instance_id: &str,
        sent: &mut SessionSent,
        out: &mut DesiredTasks,
    ) {
        sent.named.clear();
        for (id, t) in self.active_tasks(arn) {
            let a = self.assignment(id, t, sent);
            if sent.partial {
                let network = a.network.clone();
                sent.name(&t.task_arn, Sent::Task { network });
            }
            out.tasks.push(a);
        }
        for o in self.orphans.get(instance_id).into_iter().flatten() {
            if sent.named.contains_key(o) {
                continue;
            }
            if sent.partial {
                sent.name(o, Sent::Orphan);
            }
            out.tasks.push(orphan_assignment(o));
        }
        // Only the definitions of tasks still here are worth remembering.
        let active = self.active.get(arn);
        sent.defined
            .retain(|id| active.is_some_and(|a| a.contains(id)));
    }

    /// A partial set: what changed on instance `arn` since the session's last set, from the
    /// instance's journal (no walk of its tasks), the networks of the awsvpc tasks named
    /// (security-group rules and members change them without a change of the task), and the
    /// orphans' stop confirmations that came or went.
    fn changed_set(
        &self,
        arn: &str,
        instance_id: &str,
        sent: &mut SessionSent,
        out: &mut DesiredTasks,
    ) {
        let mark = sent.mark;
        let active = self.active.get(arn);
        let after = sent.seen_rev + 1;
        let journal = self.journal.get(arn).into_iter();
        for (_, id) in journal.flat_map(|j| j.range(after..)) {
            let Some(t) = self.tasks.get(id) else {
                continue;
            };
            if active.is_some_and(|a| a.contains(id)) {
                let a = self.assignment(id, t, sent);
                let network = a.network.clone();
                sent.name(&t.task_arn, Sent::Task { network });
                out.tasks.push(a);
            } else if matches!(
                sent.named.get(&t.task_arn),
                Some(Named {
                    what: Sent::Task { .. },
                    ..
                })
            ) {
                // Recorded STOPPED and confirmed, or moved to another instance; still
                // reported running here, it is an orphan whose stop is confirmed instead.
                sent.defined.remove(id);
                if self
                    .orphans
                    .get(instance_id)
                    .is_some_and(|o| o.contains(&t.task_arn))
                {
                    sent.name(&t.task_arn, Sent::Orphan);
                    out.tasks.push(orphan_assignment(&t.task_arn));
                } else {
                    sent.named.remove(&t.task_arn);
                    out.removed.push(t.task_arn.clone());
                }
            }
        }
        // A task purged (retention) before this set is removed here: its journal entry went
        // with its record.
        if sent.seen_purges != self.purges {
            let purged: Vec<String> = sent
                .named
                .iter()
                .filter(|(a, n)| {
                    matches!(n.what, Sent::Task { .. })
                        && task_id(a).is_none_or(|id| !self.tasks.contains_key(id))
                })
                .map(|(a, _)| a.clone())
                .collect();
            for a in purged {
                sent.named.remove(&a);
                if let Some(id) = task_id(&a) {
                    sent.defined.remove(id);
                }
                if !self
                    .orphans
                    .get(instance_id)
                    .is_some_and(|o| o.contains(&a))
                {
                    out.removed.push(a);
                }
            }
        }
        // Networks change without a change of the task: compare what was sent.
        let mut renamed = Vec::new();
        for (task_arn, n) in sent.named.iter_mut() {
            let Sent::Task {
                network: Some(was), ..
            } = &n.what
            else {
                continue;
            };
            if n.mark == mark {
                continue;
            }
            let Some(id) = task_id(task_arn) else {
                continue;
            };
            let now = self.task_network(id);
            if now.as_ref() != Some(was) {
                if let Sent::Task { network, .. } = &mut n.what {
                    *network = now;
                }
                n.mark = mark;
                renamed.push(id.to_string());
            }
        }
        for id in renamed {
            if let Some(t) = self.tasks.get(&id) {
                let a = self.assignment(&id, t, sent);
                out.tasks.push(a);
            }
        }
        // Orphans: new confirmations, and those no longer needed.
        let orphans = self.orphans.get(instance_id);
        for o in orphans.into_iter().flatten() {
            if sent.named.contains_key(o) {
                continue;
            }
            sent.name(o, Sent::Orphan);
            out.tasks.push(orphan_assignment(o));
        }
        let gone: Vec<String> = sent
            .named
            .iter()
            .filter(|(a, n)| n.what == Sent::Orphan && !orphans.is_some_and(|o| o.contains(*a)))
            .map(|(a, _)| a.clone())
            .collect();
        for a in gone {
            sent.named.remove(&a);
            out.removed.push(a);
        }
    }
}

impl State {
    /// Stores `task` in the view, keeping the per-instance index of tasks not yet STOPPED, the
    /// index of confirmed stops by time and the per-instance task counts.
    pub(crate) fn put_task(&mut self, id: String, task: Task) {
        // Issue 12: a service's task that reached RUNNING or STOPPED is news for its scheduler
        // (failures in a row, the circuit breaker).
        if task
            .group
            .as_deref()
            .is_some_and(|g| g.starts_with("service:"))
        {
            let before = self.tasks.get(&id).map(|t| t.last_status.as_str());
            if before != Some(task.last_status.as_str()) {
                match TaskStatus::parse(&task.last_status) {
                    Ok(TaskStatus::Running) | Ok(TaskStatus::Stopped) if before.is_some() => {
                        self.service_task_news.push(id.clone());
                    }
                    _ => {}
                }
            }
        }
        self.unindex_task(&id);
        if let Some(g) = task.group.as_deref().filter(|g| g.starts_with("service:")) {
            if !is_stopped(&task) {
                self.service_tasks
                    .entry((task.cluster_arn.clone(), g.to_string()))
                    .or_default()
                    .insert(id.clone());
            }
        }
        if let Some(i) = &task.container_instance_arn {
            *self.by_instance.entry(i.clone()).or_default() += 1;
        }
        match stopped_since(&task) {
            // A stop no agent confirmed starts no retention.
            Some(_) if self.unconfirmed.contains(&id) => {}
            Some(since) => {
                self.stopped.insert((since, id.clone()));
            }
            None => {
                if let Some(i) = &task.container_instance_arn {
                    self.active.entry(i.clone()).or_default().insert(id.clone());
                    self.hold(&id, &task);
                }
            }
        }
        self.journal_change(&id, task.container_instance_arn.as_deref());
        self.tasks.insert(id, task);
    }

    /// Removes the task `id` (still in `tasks`) from every index `put_task` keeps.
    pub(crate) fn unindex_task(&mut self, id: &str) {
        self.release(id);
        let Some(old) = self.tasks.get(id) else {
            return;
        };
        if let Some(g) = old.group.as_deref().filter(|g| g.starts_with("service:")) {
            let key = (old.cluster_arn.clone(), g.to_string());
            if let Some(set) = self.service_tasks.get_mut(&key) {
                set.remove(id);
                if set.is_empty() {
                    self.service_tasks.remove(&key);
                }
            }
        }
        if let Some(i) = &old.container_instance_arn {
            if let Some(set) = self.active.get_mut(i) {
                set.remove(id);
                if set.is_empty() {
                    self.active.remove(i);
                }
            }
            if let Some(n) = self.by_instance.get_mut(i) {
                *n -= 1;
                if *n == 0 {
                    self.by_instance.remove(i);
                }
            }
        }
        if let Some(since) = stopped_since(old) {
            self.stopped.remove(&(since, id.to_string()));
        }
    }

    /// The tasks on an instance not yet STOPPED, from the index (no scan of every task).
    pub(crate) fn active_tasks<'a>(
        &'a self,
        instance_arn: &str,
    ) -> impl Iterator<Item = (&'a String, &'a Task)> + 'a {
        self.active
            .get(instance_arn)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get_key_value(id))
    }
}

impl Controller {
    /// Opens a session for an agent's hello: refuses a protocol outside the window or an
    /// unregistered instance; on a new state epoch, resets the instance's last applied report
    /// seq (the agent's numbering restarted) and persists the epoch.
    pub async fn open_session(&self, hello: &AgentHello) -> Result<SessionInfo, LinkError> {
        if !link::speaks(hello.protocol_version) {
            return Err(LinkError::Protocol(link::refusal(
                &format!("agent {}", hello.agent_version),
                hello.protocol_version,
            )));
        }
        let instance_id = arn::short_id("container-instance", &hello.container_instance_arn)
            .unwrap_or_default()
            .to_string();
        let mut st = self.state.lock().await;
        let Some(mut record) = st.instances.get(&instance_id).cloned() else {
            return Err(LinkError::NotRegistered(
                hello.container_instance_arn.clone(),
            ));
        };
        if record.container_instance.as_ref().is_some_and(is_inactive) {
            return Err(EcsError::InactiveInstance(hello.container_instance_arn.clone()).into());
        }
        if record.state_epoch != hello.state_epoch {
            info!(instance = %instance_id, epoch = %hello.state_epoch, previous = %record.state_epoch,
                last_seq = record.last_state_change_seq, "new agent state epoch; report numbering restarts");
            record.state_epoch = hello.state_epoch.clone();
            record.last_state_change_seq = 0;
            self.commit(vec![put(
                format!("{INSTANCE_PREFIX}{instance_id}"),
                &record,
            )])?;
            st.instances.insert(instance_id.clone(), record);
        }
        st.seen.insert(instance_id.clone());
        Ok(SessionInfo {
            instance_id,
            epoch: hello.state_epoch.clone(),
            own_tasks_only: false,
        })
    }

    /// The tasks the agent of `instance_id` should converge on: every task on the instance not
    /// yet STOPPED, and the confirmed stops of tasks recorded STOPPED that it still reports.
    /// A task's definition is included only the first time this session names it. To a
    /// session of protocol 2, after its first set, only what changed since the last set
    /// (`DesiredTasks.partial`): possibly nothing, which the caller does not send.
    pub async fn desired_tasks(
        &self,
        instance_id: &str,
        seq: u64,
        sent: &mut SessionSent,
    ) -> DesiredTasks {
        let st = self.state.lock().await;
        let partial = sent.partial && sent.started;
        sent.started = true;
        sent.mark += 1;
        let mut out = DesiredTasks {
            seq,
            partial,
            ..Default::default()
        };
        let Some(arn) = st
            .instances
            .get(instance_id)
            .and_then(|r| r.container_instance.as_ref())
            .map(|ci| ci.container_instance_arn.clone())
        else {
            return out;
        };
        if partial {
            st.changed_set(&arn, instance_id, sent, &mut out);
        } else {
            st.whole_set(&arn, instance_id, sent, &mut out);
        }
        sent.seen_rev = st.next_rev;
        sent.seen_purges = st.purges;
        out
    }

    /// Applies a state change reported in `session`, once: a sequence number at or below the
    /// last applied one of the same epoch is a resend and changes nothing. Statuses only move
    /// forward. Returns whether the desired tasks of the instance changed.
    pub async fn apply_state_change(
        &self,
        session: &SessionInfo,
        change: TaskStateChange,
    ) -> Result<bool, LinkError> {
        let instance_id = session.instance_id.as_str();
        let mut st = self.state.lock().await;
        let Some(mut record) = st.instances.get(instance_id).cloned() else {
            return Err(LinkError::NotRegistered(instance_id.to_string()));
        };
        if record.state_epoch != session.epoch {
            return Err(LinkError::Superseded(session.epoch.clone()));
        }
        // Deregistered while this report was in flight: nothing from it applies (it could
        // adopt a task on an instance that can never confirm its stop), as a new session would
        // be refused.
        if let Some(ci) = record
            .container_instance
            .as_ref()
            .filter(|ci| is_inactive(ci))
        {
            return Err(EcsError::InactiveInstance(ci.container_instance_arn.clone()).into());
        }
        if change.seq <= record.last_state_change_seq {
            return Ok(false);
        }
        let bad = |e: berth_proto::status::UnknownStatus| {
            EcsError::invalid(format!("task state change for {}: {e}", change.task_arn))
        };
        let reported = TaskStatus::parse(&change.last_status).map_err(bad)?;
        record.last_state_change_seq = change.seq;
        let mut writes = vec![put(format!("{INSTANCE_PREFIX}{instance_id}"), &record)];
        let id = task_id(&change.task_arn).unwrap_or_default().to_string();
        let instance_arn = record
            .container_instance
            .as_ref()
            .map(|c| c.container_instance_arn.clone())
            .unwrap_or_default();
        let mut view_changed = false;
        // An awsvpc task whose address became known or that STOPPED changes the members of its
        // security groups: the instances whose tasks' ingress follows them are woken.
        let mut membership_changed = None;
        let mut orphan: Option<bool> = None;
        let mut updated = None;
        let mut confirmed = false;
        match st.tasks.get(&id).cloned() {
            Some(task)
                if session.own_tasks_only
                    && task.container_instance_arn.as_deref() != Some(instance_arn.as_str()) =>
            {
                // An authenticated agent reports only for its own instance: the report is
                // counted (so it is not resent) and changes nothing else.
                warn!(task = %change.task_arn, instance = %instance_arn, owner = ?task.container_instance_arn,
                    "refusing a state change for a task of another container instance");
            }
            Some(mut task) if !is_stopped(&task) => {
                if task.container_instance_arn.as_deref() != Some(instance_arn.as_str()) {
                    // Its agent now runs under another instance ARN (re-registered): the task
                    // follows the agent that reports it.
                    info!(task = %change.task_arn, instance = %instance_arn, "task reported by another instance; moving it there");
                    task.container_instance_arn = Some(instance_arn.clone());
                    view_changed = true;
                }
                let address_before = st.task_private_ipv4(&id);
                merge(&mut task, &change)?;
                view_changed |= is_stopped(&task);
                if st.task_networks.contains_key(&id)
                    && super::networking::membership_changed(address_before.as_deref(), &task)
                {
                    membership_changed = Some(task.cluster_arn.clone());
                }
                writes.push(put(format!("{TASK_PREFIX}{id}"), &task));
                updated = Some(task);
            }
            Some(mut task) => {
                // Recorded STOPPED: confirm the stop while the agent still reports it running;
                // forget it once reported stopped.
                orphan = Some(reported != TaskStatus::Stopped);
                if reported == TaskStatus::Stopped && st.unconfirmed.contains(&id) {
                    // Recorded STOPPED without its agent (forced deregistration): this report
                    // is the confirmation, and the retention runs from it.
                    task.stopped_at = Some(now());
                    task.version += 1;
                    writes.push(put(format!("{TASK_PREFIX}{id}"), &task));
                    writes.push(Write::Delete(format!("{UNCONFIRMED_PREFIX}{id}")));
                    confirmed = true;
                    updated = Some(task);
                }
            }
            None if reported == TaskStatus::Stopped => {}
            None => {
                let task = adopt(&st, &record, &instance_arn, &change)?;
                info!(task = %change.task_arn, instance = %instance_arn, "adopted a task the controller had no record of");
                writes.push(put(format!("{TASK_PREFIX}{id}"), &task));
                updated = Some(task);
                view_changed = true;
            }
        }
        self.commit(writes)?;
        st.instances.insert(instance_id.to_string(), record);
        if confirmed {
            st.unconfirmed.remove(&id);
        }
        if let Some(task) = updated {
            st.put_task(id, task);
        }
        if let Some(cluster_arn) = membership_changed {
            for instance in st.security_group_dependents(&cluster_arn) {
                self.fleet.notify(&instance);
            }
        }
        // Issue 12: the services' scheduler looks at every change of a task.
        self.fleet.wake_services();
        match orphan {
            Some(true) => {
                view_changed |= st
                    .orphans
                    .entry(instance_id.to_string())
                    .or_default()
                    .insert(change.task_arn.clone());
            }
            Some(false) => {
                if let Some(o) = st.orphans.get_mut(instance_id) {
                    view_changed |= o.remove(&change.task_arn);
                }
            }
            None => {}
        }
        Ok(view_changed)
    }
}

/// A Task for a report of a task the controller has no record of: what the agent knows of it,
/// desired RUNNING (only StopTask stops it), holding what its definition reserves if known.
fn adopt(
    st: &State,
    record: &ContainerInstanceRecord,
    instance_arn: &str,
    change: &TaskStateChange,
) -> Result<Task, EcsError> {
    let id = task_id(&change.task_arn).unwrap_or_default().to_string();
    let cluster = arn::resource("cluster", &record.cluster_arn)
        .unwrap_or_default()
        .to_string();
    let td_arn = change.task_definition_arn.clone().unwrap_or_default();
    let td = st
        .find_task_definition(&td_arn)
        .ok()
        .and_then(|r| r.task_definition.clone());
    let (cpu, memory) = match &td {
        Some(td) => task_needs(
            td.cpu.as_deref(),
            td.memory.as_deref(),
            &td.container_definitions,
        ),
        None => (0, 0),
    };
    let family = arn::family_revision(&td_arn).map(|(f, _)| f.to_string());
    let mut task = Task {
        task_arn: change.task_arn.clone(),
        cluster_arn: record.cluster_arn.clone(),
        task_definition_arn: td_arn,
        container_instance_arn: Some(instance_arn.to_string()),
        last_status: TaskStatus::Provisioning.as_str().into(),
        desired_status: TaskStatus::Running.as_str().into(),
        cpu: Some(cpu.to_string()),
        memory: Some(memory.to_string()),
        containers: change
            .containers
            .iter()
            .map(|c| Container {
                container_arn: arn::container(&cluster, &id, &new_id()),
                task_arn: change.task_arn.clone(),
                name: c.name.clone(),
                image: c.image.clone().unwrap_or_default(),
                last_status: ContainerStatus::Pending.as_str().into(),
                health_status: "UNKNOWN".into(),
                ..Default::default()
            })
            .collect(),
        started_by: Some("berth:adopted".into()),
        group: family.map(|f| format!("family:{f}")),
        launch_type: "EXTERNAL".into(),
        health_status: "UNKNOWN".into(),
        created_at: Some(now()),
        ..Default::default()
    };
    if td.is_none() {
        warn!(task = %change.task_arn, "adopted task's definition is unknown here; it reserves nothing");
    }
    merge(&mut task, change)?;
    Ok(task)
}

/// Merges an agent's report into the controller's task, forward only. A status the contract
/// does not define is refused (and the report not acknowledged), never ranked.
fn merge(task: &mut Task, c: &TaskStateChange) -> Result<(), EcsError> {
    let bad = |e: berth_proto::status::UnknownStatus| {
        EcsError::invalid(format!("task state change for {}: {e}", c.task_arn))
    };
    let reported = TaskStatus::parse(&c.last_status).map_err(bad)?;
    let current = TaskStatus::parse(&task.last_status).map_err(bad)?;
    if reported > current {
        task.last_status = reported.into();
    }
    for cc in &c.containers {
        let reported = ContainerStatus::parse(&cc.last_status).map_err(bad)?;
        if let Some(ct) = task.containers.iter_mut().find(|x| x.name == cc.name) {
            let current = ContainerStatus::parse(&ct.last_status).map_err(bad)?;
            if reported > current {
                ct.last_status = reported.into();
            }
            if ct.exit_code.is_none() {
                ct.exit_code = cc.exit_code;
            }
            if ct.reason.is_none() {
                ct.reason = cc.reason.clone();
            }
            if ct.runtime_id.is_none() {
                ct.runtime_id = cc.runtime_id.clone();
            }
            if ct.image_digest.is_none() {
                ct.image_digest = cc.image_digest.clone();
            }
            // What the agent published and attached; a report without them keeps what is known.
            if !cc.network_bindings.is_empty() {
                ct.network_bindings = cc.network_bindings.clone();
            }
            if !cc.network_interfaces.is_empty() {
                ct.network_interfaces = cc.network_interfaces.clone();
            }
            // Health moves both ways; a report without it (no healthCheck, or none run yet)
            // keeps what is shown, UNKNOWN from the start, as ECS shows it.
            if let Some(h) = &cc.health_status {
                ct.health_status = HealthStatus::parse(h).map_err(bad)?.into();
            }
        }
    }
    if let Some(h) = &c.health_status {
        task.health_status = HealthStatus::parse(h).map_err(bad)?.into();
    }
    super::networking::merge_attachments(task, &c.attachments);
    super::exec::set_managed_agents(task);
    if c.stop_code.is_some() && task.stop_code.is_none() {
        task.stop_code = c.stop_code.clone();
        task.stopped_reason = c.stopped_reason.clone();
    }
    if TaskStatus::parse(&task.last_status).is_ok_and(|s| s >= TaskStatus::Stopping) {
        task.desired_status = TaskStatus::Stopped.as_str().into();
    }
    let set = |dst: &mut Option<pbjson_types::Timestamp>, src: &Option<pbjson_types::Timestamp>| {
        if dst.is_none() {
            *dst = *src;
        }
    };
    set(&mut task.pull_started_at, &c.pull_started_at);
    set(&mut task.pull_stopped_at, &c.pull_stopped_at);
    set(&mut task.started_at, &c.started_at);
    set(&mut task.stopping_at, &c.stopping_at);
    set(&mut task.stopped_at, &c.stopped_at);
    set(&mut task.execution_stopped_at, &c.execution_stopped_at);
    if TaskStatus::parse(&task.last_status) == Ok(TaskStatus::Stopped) && task.stopped_at.is_none()
    {
        // The stopped-task retention runs from stoppedAt: the controller's clock when the
        // agent's report has none.
        task.stopped_at = Some(now());
    }
    if TaskStatus::parse(&task.last_status) == Ok(TaskStatus::Running) {
        task.connectivity = Some("CONNECTED".into());
        set(&mut task.connectivity_at, &c.started_at);
    }
    task.version += 1;
    Ok(())
}
