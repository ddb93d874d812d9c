//! Stopped-task retention: a task whose STOPPED its agent confirmed stays visible (ListTasks
//! with desiredStatus STOPPED, DescribeTasks) for the retention (ECS: about an hour; Berth's
//! default 3600 s, `berth-controller --stopped-task-retention`), then leaves the store, so
//! history does not grow without bound.
//!
//! Only a confirmed stop (lastStatus STOPPED, which only an agent's report sets) starts the
//! clock: a task record is its tombstone until then (docs/ARCHITECTURE.md, "Orphans and
//! tombstones"), and a task whose stop is still being confirmed to an agent that reports it
//! running is kept too. A purged task an agent reports again is a task the controller has no
//! record of: forgotten when reported STOPPED, adopted when reported running (agent_link.rs).
//! RunTask clientTokens leave once the retention has passed and every task they started has
//! left; DELETE_IN_PROGRESS task definitions once no task not yet STOPPED uses them.

use super::idempotency::RUN_TOKEN_PREFIX;
use super::tasks::task_id;
use super::{Controller, State, TASK_PREFIX};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::status::TaskStatus;
use berth_proto::v1::Task;
use std::collections::HashSet;
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
}

/// When a task's retention starts, in seconds since the epoch: its stoppedAt (the agent's
/// report, or the controller's clock when the report had none), else its createdAt. `None`
/// while its stop is not confirmed.
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
    fn remove_task(&mut self, id: &str) {
        if let Some(old) = self.tasks.remove(id) {
            if let Some(set) = old
                .container_instance_arn
                .as_ref()
                .and_then(|i| self.active.get_mut(i))
            {
                set.remove(id);
            }
            if let Some(since) = stopped_since(&old) {
                self.stopped.remove(&(since, id.to_string()));
            }
        }
    }
}

impl Controller {
    /// Removes what has outlived `retention` at `now`: tasks whose STOPPED was confirmed before
    /// `now - retention` (from an index ordered by that time, not a scan of every task), the
    /// clientTokens of those runs, and the DELETE_IN_PROGRESS task definitions no task uses.
    pub async fn purge_stopped(
        &self,
        now: SystemTime,
        retention: Duration,
    ) -> Result<Purged, EcsError> {
        let cutoff = epoch_seconds(now) - retention.as_secs() as i64;
        let mut st = self.state.lock().await;
        // Stops still being confirmed to an agent that reports the task running.
        let confirming: HashSet<&str> = st.orphans.values().flatten().map(String::as_str).collect();
        let tasks: Vec<String> = st
            .stopped
            .iter()
            .take_while(|(since, _)| *since <= cutoff)
            .filter(|(_, id)| {
                st.tasks
                    .get(id)
                    .is_some_and(|t| !confirming.contains(t.task_arn.as_str()))
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
        let mut writes: Vec<Write> = tasks
            .iter()
            .map(|id| Write::Delete(format!("{TASK_PREFIX}{id}")))
            .collect();
        writes.extend(
            tokens
                .iter()
                .map(|t| Write::Delete(format!("{RUN_TOKEN_PREFIX}{t}"))),
        );
        if !writes.is_empty() {
            self.commit(writes)?;
        }
        for id in &tasks {
            st.remove_task(id);
        }
        for t in &tokens {
            st.run_tokens.remove(t);
        }
        let task_definitions = self.finish_deletions(&mut st)?;
        if !tasks.is_empty() || !tokens.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                client_tokens = tokens.len(),
                "stopped tasks past their retention left the store"
            );
        }
        Ok(Purged {
            tasks: tasks.len(),
            client_tokens: tokens.len(),
            task_definitions,
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
                    // Nothing was removed; the next sweep tries again.
                    tracing::warn!(error = %e, "stopped-task retention sweep failed");
                }
            }
        })
    }
}
