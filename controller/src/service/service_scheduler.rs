//! The services scheduler (issue 12): one pass over every service keeps its tasks where its
//! deployments want them. Woken by every change that matters (a task's report, a session coming
//! or going, a service or an instance changing: [`crate::fleet::Fleet::wake_services`]) and, while
//! a service is not steady, at least every second.
//!
//! A pass, per service:
//! 1. news: a task of the service that STOPPED on its own (not asked by a user or by this
//!    scheduler) counts as a failure of its deployment (the circuit breaker) and of the service
//!    (failures in a row throttle new starts with a growing delay); one that reached RUNNING
//!    resets the run of failures.
//! 2. tasks whose instance's agent has been disconnected longer than the grace, or that are
//!    UNHEALTHY after healthCheckGracePeriodSeconds, are stopped (and so replaced).
//! 3. REPLICA: start tasks of the PRIMARY deployment up to desiredCount, never beyond
//!    maximumPercent of it in all; stop old deployments' tasks, tasks on DRAINING instances and
//!    the surplus, never going below minimumHealthyPercent healthy tasks. DAEMON: one task of the
//!    PRIMARY deployment on every ACTIVE instance that meets the constraints.
//! 4. rollout: COMPLETED once only the PRIMARY's desiredCount healthy tasks are left; FAILED
//!    when the circuit breaker trips (rolling back to the last COMPLETED deployment when asked).
//! 5. counts and events are written with the service record.

use super::services::{
    failure_threshold, limits, percents, push_event, service_group, Scheduling, ServiceStatus,
};
use super::tasks::LaunchRequest;
use super::{now, put, Controller, State, TASK_PREFIX};
use crate::error::EcsError;
use crate::scheduler;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::{Deployment, Failure, ServiceRecord, Task};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tracing::{debug, warn};

/// The services scheduler's settings.
#[derive(Debug, Clone)]
pub struct ServiceSchedulerConfig {
    /// How long an instance's agent may be disconnected before its service tasks are replaced
    /// elsewhere (default 30 s).
    pub disconnect_grace: Duration,
    /// The first delay after tasks failed to start twice in a row; it doubles with each further
    /// failure (default 10 s).
    pub restart_delay: Duration,
    /// The longest such delay (default 15 min, as ECS).
    pub restart_delay_max: Duration,
}

impl Default for ServiceSchedulerConfig {
    fn default() -> Self {
        Self {
            disconnect_grace: Duration::from_secs(30),
            restart_delay: Duration::from_secs(10),
            restart_delay_max: Duration::from_secs(15 * 60),
        }
    }
}

/// How often a service that is not steady is looked at even without news.
const BUSY: Duration = Duration::from_secs(1);
/// How long the scheduler waits for news when every service is steady.
const IDLE: Duration = Duration::from_secs(30);

/// How long a task must stay RUNNING to end a run of failures.
const STABLE_RUN: Duration = Duration::from_secs(10);

const HEALTH_REASON: &str = "Task failed container health checks";

/// A task this pass stops, and why.
struct Stop {
    id: String,
    reason: String,
}

/// Whether a task STOPPED on its own: not by a user or this scheduler.
fn failed(t: &Task) -> bool {
    !matches!(
        t.stop_code.as_deref(),
        Some("UserInitiated") | Some("ServiceSchedulerInitiated")
    )
}

fn is_running(t: &Task) -> bool {
    TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Running)
}

fn short(t: &Task) -> &str {
    arn::short_id("task", &t.task_arn).unwrap_or(&t.task_arn)
}

fn cluster_of(key: &str) -> &str {
    key.strip_prefix(super::services::SERVICE_PREFIX)
        .and_then(|r| r.split_once('/'))
        .map_or("", |(c, _)| c)
}

/// The event for tasks that could not be placed: the closest matching instance and why, in
/// ECS's words.
fn placement_event(service: &str, failures: &[Failure], none: bool) -> String {
    let head = format!(
        "(service {service}) was unable to place a task because no container instance met all of its requirements."
    );
    if none || failures.is_empty() {
        return format!("{head} Reason: No Container Instances were found in your cluster.");
    }
    // The later a check refused it, the closer the instance came.
    let rank = |r: &str| match r {
        "DistinctInstance placement constraint unsatisfied." => 6,
        "MemberOf placement constraint unsatisfied." => 5,
        "RESOURCE:PORTS" => 4,
        "RESOURCE:MEMORY" => 3,
        "RESOURCE:CPU" => 2,
        "ATTRIBUTE" => 1,
        _ => 0,
    };
    let Some(best) = failures.iter().max_by_key(|f| rank(&f.reason)) else {
        return head;
    };
    let id = arn::short_id("container-instance", &best.arn).unwrap_or(&best.arn);
    let what = match best.reason.as_str() {
        "RESOURCE:MEMORY" => "has insufficient memory available.".to_string(),
        "RESOURCE:CPU" => "has insufficient CPU units available.".to_string(),
        "RESOURCE:PORTS" => "is already using a port required by your task.".to_string(),
        "ATTRIBUTE" => "is missing an attribute required by your task.".to_string(),
        "AGENT" => "has no connected agent.".to_string(),
        other => format!("encountered error \"{other}\""),
    };
    format!("{head} The closest matching (container-instance {id}) {what}")
}

fn list(tasks: &[Task]) -> String {
    tasks
        .iter()
        .map(|t| format!("(task {})", short(t)))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Controller {
    /// Runs the services scheduler until the process ends.
    pub async fn run_service_scheduler(self: std::sync::Arc<Self>) {
        loop {
            let next = match self.reconcile_services().await {
                Ok(n) => n,
                Err(e) => {
                    warn!("services scheduler: {e}");
                    BUSY
                }
            };
            self.fleet.services_woken(next).await;
        }
    }

    /// One pass over every service; answers how soon the next pass is due without news.
    pub async fn reconcile_services(&self) -> Result<Duration, EcsError> {
        let mut st = self.state.lock().await;
        let news = std::mem::take(&mut st.service_task_news);
        let mut by_service: HashMap<String, Vec<Task>> = HashMap::new();
        // A task named twice (it reached RUNNING and then STOPPED since the last pass) is read
        // once, as it is now: one failure, not two.
        let mut seen = HashSet::new();
        for id in news.into_iter().filter(|id| seen.insert(id.clone())) {
            let Some(t) = st.tasks.get(&id) else { continue };
            let (Some(cluster), Some(name)) = (
                arn::resource("cluster", &t.cluster_arn),
                t.group.as_deref().and_then(|g| g.strip_prefix("service:")),
            ) else {
                continue;
            };
            by_service
                .entry(super::services::service_key(cluster, name))
                .or_default()
                .push(t.clone());
        }
        let keys: Vec<String> = st
            .services
            .iter()
            .filter(|(_, r)| {
                r.service
                    .as_ref()
                    .is_some_and(|s| ServiceStatus::of(s) != ServiceStatus::Inactive)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let mut next = IDLE;
        for key in keys {
            let news = by_service.remove(&key).unwrap_or_default();
            let span = tracing::info_span!("service", service = %key);
            let _e = span.enter();
            match self.reconcile_service(&mut st, &key, &news) {
                Ok(d) => next = next.min(d),
                Err(e) => {
                    warn!("{e}");
                    next = BUSY;
                }
            }
        }
        Ok(next)
    }

    fn reconcile_service(
        &self,
        st: &mut State,
        key: &str,
        news: &[Task],
    ) -> Result<Duration, EcsError> {
        let Some(mut rec) = st.services.get(key).cloned() else {
            return Ok(IDLE);
        };
        let before = rec.clone();
        let mut svc = rec.service.clone().unwrap_or_default();
        let cluster = cluster_of(key).to_string();
        let name = svc.service_name.clone();
        let status = ServiceStatus::of(&svc);
        let scheduling = Scheduling::parse(&svc.scheduling_strategy).unwrap_or(Scheduling::Replica);
        let group = service_group(&name);
        let at = now();
        let cfg = self.service_config.clone();
        let mut next = IDLE;
        let Some(primary_id) = svc
            .deployments
            .iter()
            .find(|d| d.status == "PRIMARY")
            .map(|d| d.id.clone())
        else {
            return Ok(IDLE);
        };

        // 1. News: failures and starts.
        let mut failed_now = 0;
        for t in news {
            // (Reaching RUNNING is not enough to end a run of failures: see below.)
            if !is_running(t) && failed(t) {
                failed_now += 1;
                if let Some(d) = svc
                    .deployments
                    .iter_mut()
                    .find(|d| Some(d.id.as_str()) == t.started_by.as_deref())
                {
                    d.failed_tasks += 1;
                }
            }
        }

        // The live tasks: not STOPPED, desired RUNNING. Tasks desired STOPPED but still
        // stopping are kept apart (a DAEMON waits for them before starting on their instance).
        let ids: Vec<String> = st
            .service_tasks
            .get(&(svc.cluster_arn.clone(), group.clone()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        let mut live: Vec<Task> = Vec::new();
        let mut stopping_on: HashSet<String> = HashSet::new();
        for id in &ids {
            let Some(t) = st.tasks.get(id) else { continue };
            if t.desired_status == TaskStatus::Stopped.as_str() {
                if let Some(i) = &t.container_instance_arn {
                    stopping_on.insert(i.clone());
                }
            } else {
                live.push(t.clone());
            }
        }
        let mut stops: Vec<Stop> = Vec::new();
        let mut events: Vec<String> = Vec::new();

        // 2. Lost and unhealthy tasks.
        let grace_hc =
            Duration::from_secs(svc.health_check_grace_period_seconds.unwrap_or(0).max(0) as u64);
        let mut has_hc_cache: HashMap<String, bool> = HashMap::new();
        let mut has_hc = |st: &State, td: &str| -> bool {
            *has_hc_cache.entry(td.to_string()).or_insert_with(|| {
                st.find_task_definition(td)
                    .ok()
                    .and_then(|r| r.task_definition.as_ref())
                    .is_some_and(|td| {
                        td.container_definitions
                            .iter()
                            .any(|c| c.health_check.is_some())
                    })
            })
        };
        let instance_status = |st: &State, arn_: &str| -> Option<String> {
            let id = arn::short_id("container-instance", arn_)?;
            st.instances
                .get(id)
                .and_then(|r| r.container_instance.as_ref())
                .map(|ci| ci.status.clone())
        };
        let mut kept: Vec<Task> = Vec::new();
        for t in live {
            let inst = t.container_instance_arn.clone().unwrap_or_default();
            let inst_id = arn::short_id("container-instance", &inst)
                .unwrap_or("")
                .to_string();
            let inst_status = instance_status(st, &inst);
            let lost_for = self.fleet.disconnected_for(&inst_id);
            if inst_status.as_deref().is_none_or(|s| s == "INACTIVE") {
                stops.push(Stop {
                    id: short(&t).to_string(),
                    reason: "Task replaced: its container instance was deregistered".into(),
                });
                continue;
            }
            if let Some(d) = lost_for {
                if d >= cfg.disconnect_grace {
                    stops.push(Stop {
                        id: short(&t).to_string(),
                        reason: format!(
                            "Task replaced: the agent of its container instance has been disconnected for more than {}s",
                            cfg.disconnect_grace.as_secs()
                        ),
                    });
                    continue;
                }
                next = next.min(cfg.disconnect_grace - d + Duration::from_millis(100));
            }
            let started = t.started_at.map(|s| s.seconds).unwrap_or(at.seconds);
            if t.health_status == "UNHEALTHY" && is_running(&t) {
                if at.seconds - started >= grace_hc.as_secs() as i64 {
                    events.push(format!(
                        "(service {name}) (task {}) failed container health checks.",
                        short(&t)
                    ));
                    failed_now += 1;
                    if let Some(d) = svc
                        .deployments
                        .iter_mut()
                        .find(|d| Some(d.id.as_str()) == t.started_by.as_deref())
                    {
                        d.failed_tasks += 1;
                    }
                    stops.push(Stop {
                        id: short(&t).to_string(),
                        reason: HEALTH_REASON.into(),
                    });
                    continue;
                }
                next = next.min(BUSY);
            }
            kept.push(t);
        }
        let live = kept;
        // A run of failures ends once a task of the PRIMARY has stayed RUNNING for
        // STABLE_RUN: a task that starts and crashes at once must not reset it (a crash loop
        // is throttled like tasks that never start).
        if rec.consecutive_failures > 0 {
            let mut reset = false;
            for t in live
                .iter()
                .filter(|t| t.started_by.as_deref() == Some(primary_id.as_str()) && is_running(t))
            {
                let ran = at.seconds - t.started_at.map_or(at.seconds, |s| s.seconds);
                if ran >= STABLE_RUN.as_secs() as i64 {
                    reset = true;
                } else {
                    next = next.min(STABLE_RUN - Duration::from_secs(ran.max(0) as u64));
                }
            }
            if reset {
                rec.consecutive_failures = 0;
                rec.next_launch_at = None;
            }
        }
        rec.consecutive_failures += failed_now;
        if failed_now > 0 && rec.consecutive_failures >= 2 {
            let n = (rec.consecutive_failures - 2).min(16) as u32;
            let delay = cfg
                .restart_delay
                .saturating_mul(1 << n)
                .min(cfg.restart_delay_max);
            let until = std::time::SystemTime::now() + delay;
            rec.next_launch_at = Some(berth_proto::timestamp(until));
            events.push(format!(
                "(service {name}) is unable to consistently start tasks successfully: {} failed in a row; the next start waits {}s.",
                rec.consecutive_failures,
                delay.as_secs()
            ));
        }

        // The circuit breaker.
        let breaker = svc
            .deployment_configuration
            .as_ref()
            .and_then(|c| c.deployment_circuit_breaker)
            .unwrap_or_default();
        let desired = if status == ServiceStatus::Active {
            svc.desired_count
        } else {
            0
        };
        if breaker.enable && scheduling == Scheduling::Replica {
            let tripped = svc.deployments.iter().any(|d| {
                d.id == primary_id
                    && d.rollout_state.as_deref() == Some("IN_PROGRESS")
                    && d.failed_tasks >= failure_threshold(desired)
            });
            if tripped {
                self.trip_breaker(
                    &mut svc,
                    &mut rec,
                    &primary_id,
                    breaker.rollback,
                    &mut events,
                );
            }
        }
        let Some(primary) = svc
            .deployments
            .iter()
            .find(|d| d.status == "PRIMARY")
            .cloned()
        else {
            return Ok(IDLE);
        };
        let primary_failed = primary.rollout_state.as_deref() == Some("FAILED");

        let throttled = rec
            .next_launch_at
            .is_some_and(|t| (t.seconds, t.nanos) > (at.seconds, at.nanos));
        if throttled {
            if let Some(t) = rec.next_launch_at {
                let left = (t.seconds - at.seconds).max(0) as u64;
                next = next.min(Duration::from_secs(left) + Duration::from_millis(200));
            }
        }
        let healthy = |st: &State, t: &Task, has: &mut dyn FnMut(&State, &str) -> bool| {
            is_running(t) && (!has(st, &t.task_definition_arn) || t.health_status == "HEALTHY")
        };
        let draining = |st: &State, t: &Task| {
            t.container_instance_arn
                .as_deref()
                .and_then(|a| instance_status(st, a))
                .as_deref()
                == Some("DRAINING")
        };
        let mut to_place: Vec<String> = Vec::new();
        let mut place_failures: Vec<Failure> = Vec::new();
        let mut no_instances = false;
        let launch = st.launch(LaunchRequest {
            cluster: Some(&cluster),
            task_definition: &primary.task_definition,
            overrides: None,
            launch_type: svc.launch_type.clone().unwrap_or_else(|| "EC2".into()),
            group: Some(group.clone()),
            started_by: Some(primary.id.clone()),
            tags: Vec::new(),
            placement_constraints: &svc.placement_constraints,
            placement_strategy: &svc.placement_strategy,
            definition_constraints: true,
            enable_execute_command: svc.enable_execute_command.unwrap_or(false),
            platform_version: svc.platform_version.clone(),
            network_configuration: primary.network_configuration.as_ref(),
        });
        let launch = match launch {
            Ok(l) => Some(l),
            Err(e) => {
                events.push(format!("(service {name}) cannot start tasks: {e}"));
                None
            }
        };
        let can_start = !primary_failed && !throttled && status == ServiceStatus::Active;
        let mut desired_now = desired;
        match scheduling {
            Scheduling::Replica => {
                let (min_pct, max_pct) =
                    percents(svc.deployment_configuration.as_ref(), scheduling);
                let (min_healthy, max_total) = limits(desired, min_pct, max_pct);
                let (prim, others): (Vec<&Task>, Vec<&Task>) = live.iter().partition(|t| {
                    t.started_by.as_deref() == Some(primary.id.as_str()) && !draining(st, t)
                });
                let total = live.len() as i32;
                let want = desired - prim.len() as i32;
                let room = max_total - total;
                let n = if can_start { want.min(room).max(0) } else { 0 };
                if n > 0 {
                    if let Some(l) = &launch {
                        match self.place_tasks(st, l, n) {
                            Ok((placed, failures)) => {
                                to_place = placed;
                                place_failures = failures;
                            }
                            Err(_) => no_instances = true,
                        }
                    }
                }
                // Stops: the surplus of the primary first (scale-in), then old deployments'
                // tasks and tasks on draining instances, the unhealthy first, the healthy only
                // while minimumHealthyPercent holds.
                // A task that is not the PRIMARY's, RUNNING with its health not yet known
                // (checks that have not reported), is kept like a healthy one: only a task
                // that failed, is UNHEALTHY or is not yet RUNNING goes regardless of the
                // minimum. A new task must prove its health to count.
                //
                // Three kinds of task to stop: gone (not RUNNING, or UNHEALTHY) go regardless;
                // an old task RUNNING whose health checks have not reported yet goes only while
                // the healthy ones left still make the minimum without it; a healthy one only
                // while the healthy ones left after it make the minimum.
                let is_new = |t: &Task| prim.iter().any(|p| p.task_arn == t.task_arn);
                let mut kind = |st: &State, t: &Task| -> u8 {
                    if healthy(st, t, &mut has_hc) {
                        2
                    } else if !is_new(t) && is_running(t) && t.health_status == "UNKNOWN" {
                        1
                    } else {
                        0
                    }
                };
                let healthy_total = live.iter().filter(|t| kind(st, t) == 2).count() as i32;
                let mut allowance = healthy_total - min_healthy;
                let surplus = prim.len() as i32 - desired;
                if surplus > 0 {
                    for t in self
                        .scale_in_order(st, &prim, &svc.placement_strategy)
                        .into_iter()
                        .take(surplus as usize)
                    {
                        if kind(st, t) == 2 {
                            allowance -= 1;
                        }
                        stops.push(Stop {
                            id: short(t).to_string(),
                            reason: format!(
                                "Scaling activity initiated by (deployment {})",
                                primary.id
                            ),
                        });
                    }
                }
                let mut others: Vec<&Task> = others;
                others.sort_by_key(|t| kind(st, t));
                for t in others {
                    match kind(st, t) {
                        2 if allowance <= 0 => continue,
                        2 => allowance -= 1,
                        1 if allowance < 0 => continue,
                        _ => {}
                    }
                    let reason = if draining(st, t) {
                        format!(
                            "Container instance is DRAINING: task moved by (deployment {})",
                            primary.id
                        )
                    } else {
                        format!("Scaling activity initiated by (deployment {})", primary.id)
                    };
                    stops.push(Stop {
                        id: short(t).to_string(),
                        reason,
                    });
                }
            }
            Scheduling::Daemon => {
                // Every ACTIVE instance of the cluster whose agent is connected (or within the
                // grace) and that meets the constraints.
                let mut eligible: BTreeMap<String, scheduler::Candidate> = BTreeMap::new();
                if status == ServiceStatus::Active {
                    if let Some(l) = &launch {
                        for (id, r) in st.instances.iter() {
                            if r.cluster_arn != svc.cluster_arn {
                                continue;
                            }
                            let Some(ci) = r.container_instance.as_ref() else {
                                continue;
                            };
                            if ci.status != "ACTIVE" {
                                continue;
                            }
                            let connected = self.fleet.connected(id);
                            if !connected
                                && self
                                    .fleet
                                    .disconnected_for(id)
                                    .is_some_and(|d| d >= cfg.disconnect_grace)
                            {
                                continue;
                            }
                            let mut c = st.candidate(r, connected);
                            // Constraints and attributes decide eligibility; resources
                            // decide only whether it fits now.
                            let mut probe = l.needs.clone();
                            probe.cpu = 0;
                            probe.memory = 0;
                            probe.host_ports.clear();
                            probe
                                .constraints
                                .retain(|k| !matches!(k, scheduler::Constraint::DistinctInstance));
                            c.active_tasks = 0;
                            if scheduler::place(std::slice::from_mut(&mut c.clone()), &probe)
                                .is_ok()
                            {
                                eligible.insert(
                                    ci.container_instance_arn.clone(),
                                    st.candidate(r, connected),
                                );
                            }
                        }
                    }
                }
                desired_now = eligible.len() as i32;
                let mut on: HashMap<String, Vec<&Task>> = HashMap::new();
                for t in &live {
                    let inst = t.container_instance_arn.clone().unwrap_or_default();
                    if !eligible.contains_key(&inst) {
                        stops.push(Stop {
                            id: short(t).to_string(),
                            reason: if draining(st, t) {
                                "Container instance is DRAINING".into()
                            } else {
                                format!("Scaling activity initiated by (deployment {})", primary.id)
                            },
                        });
                        continue;
                    }
                    on.entry(inst).or_default().push(t);
                }
                for (inst, cand) in eligible.iter_mut() {
                    let here = on.remove(inst).unwrap_or_default();
                    let (prim, old): (Vec<&Task>, Vec<&Task>) = here
                        .into_iter()
                        .partition(|t| t.started_by.as_deref() == Some(primary.id.as_str()));
                    for t in old.iter().chain(prim.iter().skip(1)) {
                        stops.push(Stop {
                            id: short(t).to_string(),
                            reason: format!(
                                "Scaling activity initiated by (deployment {})",
                                primary.id
                            ),
                        });
                    }
                    if prim.is_empty() && old.is_empty() && can_start && !stopping_on.contains(inst)
                    {
                        if let Some(l) = &launch {
                            match scheduler::place(std::slice::from_mut(cand), &l.needs) {
                                Ok(_) => to_place.push(inst.clone()),
                                Err(r) => place_failures.extend(r.into_iter().map(|r| Failure {
                                    arn: r.arn,
                                    reason: r.reason.as_str().into(),
                                    detail: r.detail,
                                })),
                            }
                        }
                    }
                }
            }
        }

        // Start.
        let mut started: Vec<Task> = Vec::new();
        if !to_place.is_empty() {
            if let Some(l) = &launch {
                started = self.create_tasks(st, l, to_place, None)?;
            }
        }
        if !started.is_empty() {
            events.push(format!(
                "(service {name}) has started {} tasks: {}.",
                started.len(),
                list(&started)
            ));
        }
        if (!place_failures.is_empty() || no_instances) && can_start {
            events.push(placement_event(&name, &place_failures, no_instances));
            next = next.min(BUSY);
        }

        // Stop.
        let mut writes = Vec::new();
        let mut stopped: Vec<Task> = Vec::new();
        for s in &stops {
            let Some(mut t) = st.tasks.get(&s.id).cloned() else {
                continue;
            };
            if t.desired_status == TaskStatus::Stopped.as_str() {
                continue;
            }
            t.desired_status = TaskStatus::Stopped.as_str().into();
            t.stop_code = Some("ServiceSchedulerInitiated".into());
            t.stopped_reason = Some(s.reason.clone());
            t.stopping_at = Some(at);
            t.version += 1;
            writes.push(put(format!("{TASK_PREFIX}{}", s.id), &t));
            stopped.push(t);
        }
        if !stopped.is_empty() {
            events.push(format!(
                "(service {name}) has stopped {} running tasks: {}.",
                stopped.len(),
                list(&stopped)
            ));
        }

        // Counts, rollout, steady state.
        let stopped_set: HashSet<&str> = stopped.iter().map(|t| t.task_arn.as_str()).collect();
        let remaining: Vec<&Task> = live
            .iter()
            .filter(|t| !stopped_set.contains(t.task_arn.as_str()))
            .chain(started.iter())
            .collect();
        let mut running_total = 0;
        let mut pending_total = 0;
        for d in svc.deployments.iter_mut() {
            let mine: Vec<&&Task> = remaining
                .iter()
                .filter(|t| t.started_by.as_deref() == Some(d.id.as_str()))
                .collect();
            let running = mine.iter().filter(|t| is_running(t)).count() as i32;
            let pending = mine.len() as i32 - running;
            if d.running_count != running || d.pending_count != pending {
                d.running_count = running;
                d.pending_count = pending;
                d.updated_at = Some(at);
            }
            running_total += running;
            pending_total += pending;
            if d.status == "PRIMARY" {
                d.desired_count = desired_now;
            }
        }
        svc.running_count = running_total;
        svc.pending_count = pending_total;
        if scheduling == Scheduling::Daemon && status == ServiceStatus::Active {
            svc.desired_count = desired_now;
        }
        // Old deployments leave once none of their tasks is left.
        let with_tasks: HashSet<String> = remaining
            .iter()
            .filter_map(|t| t.started_by.clone())
            .collect();
        svc.deployments
            .retain(|d| d.status == "PRIMARY" || with_tasks.contains(&d.id));
        let primary_healthy = remaining
            .iter()
            .filter(|t| t.started_by.as_deref() == Some(primary.id.as_str()))
            .filter(|t| !draining(st, t))
            .filter(|t| healthy(st, t, &mut has_hc))
            .count() as i32;
        let settled = svc.deployments.len() == 1
            && pending_total == 0
            && primary_healthy == desired_now
            && running_total == desired_now
            && stops.is_empty()
            && started.is_empty();
        if let Some(p) = svc.deployments.iter_mut().find(|d| d.status == "PRIMARY") {
            if settled && p.rollout_state.as_deref() == Some("IN_PROGRESS") {
                p.rollout_state = Some("COMPLETED".into());
                p.rollout_state_reason = Some(format!("ECS deployment {} completed.", p.id));
                p.updated_at = Some(at);
                rec.last_completed = Some(p.clone());
                events.push(format!(
                    "(service {name}) (deployment {}) deployment completed.",
                    p.id
                ));
            }
        }
        let steady = settled && status == ServiceStatus::Active;
        if steady && !rec.steady {
            events.push(format!("(service {name}) has reached a steady state."));
        }
        rec.steady = steady;
        if !steady {
            next = next.min(BUSY);
        }
        if status == ServiceStatus::Draining && remaining.is_empty() && stopping_on.is_empty() {
            svc.status = ServiceStatus::Inactive.as_str().into();
            svc.deployments.clear();
        }
        for e in events {
            debug!(event = %e);
            push_event(&mut svc, e);
        }
        rec.service = Some(svc);
        if rec != before {
            writes.push(put(key.to_string(), &rec));
        }
        if !writes.is_empty() {
            self.commit(writes)?;
        }
        for t in stopped {
            let id = short(&t).to_string();
            let instance = t
                .container_instance_arn
                .as_deref()
                .and_then(|a| arn::short_id("container-instance", a))
                .map(str::to_string);
            st.put_task(id, t);
            if let Some(i) = instance {
                self.fleet.notify(&i);
            }
        }
        st.services.insert(key.to_string(), rec);
        Ok(next)
    }

    /// The circuit breaker tripped on the PRIMARY deployment: it turns FAILED; with rollback,
    /// a new PRIMARY deployment of the last COMPLETED task definition starts.
    fn trip_breaker(
        &self,
        svc: &mut berth_proto::v1::Service,
        rec: &mut ServiceRecord,
        primary_id: &str,
        rollback: bool,
        events: &mut Vec<String>,
    ) {
        let name = svc.service_name.clone();
        let at = now();
        if let Some(p) = svc.deployments.iter_mut().find(|d| d.id == primary_id) {
            p.rollout_state = Some("FAILED".into());
            p.rollout_state_reason =
                Some("ECS deployment circuit breaker: tasks failed to start.".into());
            p.updated_at = Some(at);
        }
        events.push(format!(
            "(service {name}) (deployment {primary_id}) deployment failed: tasks failed to start."
        ));
        // Back to the last COMPLETED deployment's task definition and network.
        let Some(done) = rec.last_completed.as_ref().filter(|_| rollback) else {
            return;
        };
        let (td, network) = (
            done.task_definition.clone(),
            done.network_configuration.clone(),
        );
        for d in svc.deployments.iter_mut() {
            d.status = "ACTIVE".into();
            d.desired_count = 0;
        }
        let id = super::services::new_deployment_id();
        svc.deployments.insert(
            0,
            Deployment {
                rollout_state_reason: Some(format!(
                    "ECS deployment circuit breaker: rolling back to the task definition of the last completed deployment, {td}."
                )),
                id: id.clone(),
                status: "PRIMARY".into(),
                task_definition: td.clone(),
                desired_count: svc.desired_count,
                created_at: Some(at),
                updated_at: Some(at),
                launch_type: svc.launch_type.clone(),
                platform_version: svc.platform_version.clone(),
                network_configuration: network.clone(),
                rollout_state: Some("IN_PROGRESS".into()),
                ..Default::default()
            },
        );
        svc.task_definition = td.clone();
        svc.network_configuration = network;
        // The failures in a row and their delay carry on: a rollback that fails too does not
        // start tasks faster.
        events.push(format!(
            "(service {name}) (deployment {id}) rolling back to {td}, the task definition of the last completed deployment."
        ));
    }

    /// The order in which scale-in stops a service's tasks: pending ones first, then as the
    /// placement strategy would free instances (spread and the default: from the instance with
    /// the most tasks of the service; binpack: from the instance with the most of the field
    /// left; random: any).
    fn scale_in_order<'a>(
        &self,
        st: &State,
        tasks: &[&'a Task],
        strategy: &[berth_proto::v1::PlacementStrategy],
    ) -> Vec<&'a Task> {
        let mut per_instance: HashMap<String, i64> = HashMap::new();
        for t in tasks {
            *per_instance
                .entry(t.container_instance_arn.clone().unwrap_or_default())
                .or_default() += 1;
        }
        let free = |arn_: &str, field: &str| -> i64 {
            arn::short_id("container-instance", arn_)
                .and_then(|id| st.instances.get(id))
                .and_then(|r| r.container_instance.as_ref())
                .map(|ci| {
                    let (cpu, mem) = st.remaining(ci);
                    if field.eq_ignore_ascii_case("cpu") {
                        cpu
                    } else {
                        mem
                    }
                })
                .unwrap_or(0)
        };
        let binpack = strategy
            .iter()
            .find(|s| s.r#type == "binpack")
            .map(|s| s.field.clone().unwrap_or_default());
        let mut out: Vec<&Task> = Vec::new();
        let mut left: Vec<&Task> = tasks.to_vec();
        while !left.is_empty() {
            let pick = left
                .iter()
                .enumerate()
                .max_by_key(|(_, t)| {
                    let inst = t.container_instance_arn.clone().unwrap_or_default();
                    let pending = !is_running(t);
                    let key = match &binpack {
                        Some(f) => free(&inst, f),
                        None => per_instance.get(&inst).copied().unwrap_or(0),
                    };
                    (pending, key)
                })
                .map(|(i, _)| i)
                .unwrap_or(0);
            let t = left.remove(pick);
            if let Some(n) = per_instance.get_mut(t.container_instance_arn.as_deref().unwrap_or(""))
            {
                *n -= 1;
            }
            out.push(t);
        }
        out
    }
}
