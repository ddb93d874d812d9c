//! Stopped-task retention: a task whose STOPPED its agent confirmed stays visible (ListTasks
//! with desiredStatus STOPPED, DescribeTasks) for the retention (ECS: about an hour; Berth's
//! default 3600 s, `berth-controller --stopped-task-retention`), then leaves the store, so
//! history does not grow without bound.
//!
//! Only an agent's confirmation starts the clock: a task record is its tombstone until then
//! (docs/ARCHITECTURE.md, "Orphans and tombstones"). A task recorded STOPPED without one (its
//! instance deregistered with force while it ran) is marked unconfirmed in the store and kept
//! until an agent reports it stopped. Kept as well: a task whose stop is still being confirmed
//! to an agent that reports it running, and, after a controller restart, the stopped tasks of
//! an ACTIVE instance whose agent has not opened a session since (those confirmations are
//! rebuilt from its reports). A purged task an agent reports again is a task the controller has
//! no record of: forgotten when reported STOPPED, adopted when reported running (agent_link.rs).
//! RunTask clientTokens leave once the retention has passed and every task they started has
//! left; DELETE_IN_PROGRESS task definitions once no task not yet STOPPED uses them; INACTIVE
//! container instances once the retention has passed since their deregistration and no
//! retained task names them.

use super::idempotency::RUN_TOKEN_PREFIX;
use super::instances::is_inactive;
use super::networking::TASK_NETWORK_PREFIX;
use super::task_definitions::deletion_writes;
use super::tasks::task_id;
use super::{Controller, State, INSTANCE_PREFIX, TASK_PREFIX};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::Task;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long stopped tasks stay visible by default: an hour, as in ECS.
pub const DEFAULT_STOPPED_TASK_RETENTION: Duration = Duration::from_secs(3600);

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    /// Stopped tasks.
    pub tasks: usize,
    /// RunTask clientTokens.
    pub client_tokens: usize,
    /// Task definition revisions whose deletion finished.
    pub task_definitions: usize,
    /// INACTIVE container instances.
    pub container_instances: usize,
}

/// When a task's retention starts, in seconds since the epoch: its stoppedAt (the agent's
/// report, or the controller's clock when the report had none), else its createdAt. `None`
/// while it is not STOPPED (a STOPPED no agent confirmed is kept out of the index by
/// `put_task`).
pub(crate) fn stopped_since(t: &Task) -> Option<i64> {
    if TaskStatus::parse(&t.last_status) != Ok(TaskStatus::Stopped) {
        return None;
    }
    Some(
        t.stopped_at
            .or(t.execution_stopped_at)
            .or(t.created_at)
            .map_or(0, |ts| ts.seconds),
    )
}

fn epoch_seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl State {
    /// Forgets a task (its store key is deleted by the caller).
    pub(crate) fn remove_task(&mut self, id: &str) {
        self.unindex_task(id);
        self.tasks.remove(id);
        self.task_networks.remove(id);
        self.forget_journal(id);
    }
}

impl Controller {
    /// Removes what has outlived `retention` at `now`: tasks whose STOPPED was confirmed before
    /// `now - retention` (from an index ordered by that time, not a scan of every task), the
    /// clientTokens of those runs, the DELETE_IN_PROGRESS task definitions no task uses, and
    /// the INACTIVE instances deregistered before then that no retained task names, all in one
    /// transaction: when it fails nothing was removed.
    pub async fn purge_stopped(
        &self,
        now: SystemTime,
        retention: Duration,
    ) -> Result<Purged, EcsError> {
        // A retention past what the clock can count keeps everything.
        let cutoff = epoch_seconds(now)
            .saturating_sub(i64::try_from(retention.as_secs()).unwrap_or(i64::MAX));
        let mut st = self.state.lock().await;
        // Stops still being confirmed to an agent that reports the task running.
        let confirming: HashSet<&str> = st.orphans.values().flatten().map(String::as_str).collect();
        // An ACTIVE instance whose agent has not opened a session since the store was loaded
        // may still report tasks recorded STOPPED as running (its `orphans` are rebuilt from
        // those reports): its stopped tasks wait for it.
        let unheard = |t: &Task| {
            t.container_instance_arn
                .as_deref()
                .and_then(|a| arn::short_id("container-instance", a))
                .is_some_and(|i| {
                    !st.seen.contains(i)
                        && st
                            .instances
                            .get(i)
                            .and_then(|r| r.container_instance.as_ref())
                            .is_some_and(|ci| !is_inactive(ci))
                })
        };
        let tasks: Vec<String> = st
            .stopped
            .iter()
            .take_while(|(since, _)| *since <= cutoff)
            .filter(|(_, id)| {
                st.tasks
                    .get(id)
                    .is_some_and(|t| !confirming.contains(t.task_arn.as_str()) && !unheard(t))
            })
            .map(|(_, id)| id.clone())
            .collect();
        let leaving: HashSet<&str> = tasks.iter().map(String::as_str).collect();
        let gone = |arn: &str| {
            task_id(arn).is_none_or(|id| !st.tasks.contains_key(id) || leaving.contains(id))
        };
        let tokens: Vec<String> = st
            .run_tokens
            .values()
            .filter(|r| r.created_at.map_or(0, |t| t.seconds) <= cutoff)
            .filter(|r| r.task_arns.iter().all(|a| gone(a)))
            .map(|r| r.client_token.clone())
            .collect();
        // Tasks leaving now count as gone for their instance.
        let mut leaving_from: HashMap<&str, usize> = HashMap::new();
        for id in &tasks {
            if let Some(i) = st
                .tasks
                .get(id)
                .and_then(|t| t.container_instance_arn.as_deref())
            {
                *leaving_from.entry(i).or_default() += 1;
            }
        }
        let instances: Vec<(i64, String)> = st
            .inactive
            .iter()
            .take_while(|(since, _)| *since <= cutoff)
            .filter(|(_, id)| {
                st.instances
                    .get(id)
                    .and_then(|r| r.container_instance.as_ref())
                    .is_some_and(|ci| {
                        let arn = ci.container_instance_arn.as_str();
                        st.by_instance.get(arn).copied().unwrap_or(0)
                            <= leaving_from.get(arn).copied().unwrap_or(0)
                    })
            })
            .cloned()
            .collect();
        let definitions = st.finished_deletions();
        let mut writes: Vec<Write> = tasks
            .iter()
            .map(|id| Write::Delete(format!("{TASK_PREFIX}{id}")))
            .collect();
        // An awsvpc task's network record leaves with it.
        writes.extend(
            tasks
                .iter()
                .filter(|id| st.task_networks.contains_key(*id))
                .map(|id| Write::Delete(format!("{TASK_NETWORK_PREFIX}{id}"))),
        );
        writes.extend(
            tokens
                .iter()
                .map(|t| Write::Delete(format!("{RUN_TOKEN_PREFIX}{t}"))),
        );
        writes.extend(
            instances
                .iter()
                .map(|(_, id)| Write::Delete(format!("{INSTANCE_PREFIX}{id}"))),
        );
        writes.extend(deletion_writes(&definitions));
        if !writes.is_empty() {
            self.commit(writes)?;
        }
        for id in &tasks {
            st.remove_task(id);
        }
        for t in &tokens {
            st.run_tokens.remove(t);
        }
        for (since, id) in &instances {
            st.inactive.remove(&(*since, id.clone()));
            st.instances.remove(id);
        }
        let task_definitions = st.deletions_finishing(&definitions);
        st.apply_deletions(definitions);
        if !tasks.is_empty() || !tokens.is_empty() || !instances.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                client_tokens = tokens.len(),
                container_instances = instances.len(),
                "stopped tasks and INACTIVE instances past their retention left the store"
            );
        }
        Ok(Purged {
            tasks: tasks.len(),
            client_tokens: tokens.len(),
            task_definitions,
            container_instances: instances.len(),
        })
    }

    /// Sweeps every `retention / 10` (between 1 s and 1 min) on a tokio interval, with `clock`
    /// as the time (`SystemTime::now` in the daemon; tests pass one driven by paused tokio
    /// time). The caller owns the returned task and aborts it to stop the sweeps.
    pub fn spawn_retention(
        self: &Arc<Self>,
        retention: Duration,
        clock: impl Fn() -> SystemTime + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let controller = self.clone();
        let every = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = controller.purge_stopped(clock(), retention).await {
                    // One transaction: nothing was removed; the next sweep tries again.
                    tracing::warn!(error = %e, "stopped-task retention sweep failed");
                }
            }
        })
    }
}
