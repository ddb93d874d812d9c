//! RunTask's group commit: concurrent RunTasks share one store transaction, so placement
//! throughput is not bounded by the store's fsyncs per second.
//!
//! A RunTask queues its request, then waits for either its answer or the state lock. Whoever
//! holds the lock drains the queue (up to [`MAX_BATCH`] requests, in arrival order), plans every
//! request against one placement snapshot per cluster that each placement reserves in (so later
//! requests see earlier reservations: no instance's cpu, memory or ports are booked twice),
//! commits all their writes in ONE [`crate::store::Store::commit`], and only then applies them
//! to memory and answers each request. If the commit fails, every request of the batch gets the
//! error and nothing changed, as for any mutation (see the module doc of `service`). A request
//! refused while planning (bad definition, no instances...) is answered at once and reserves
//! nothing. The lock holder repeats until its own request is answered, so every queued
//! request is served by its own caller at the latest.
//!
//! Two requests of one batch with the same clientToken: the second waits for the next batch,
//! where it is replayed (or refused as a conflict) against the first's committed record.

use super::tasks::PlannedRun;
use super::{Controller, State};
use crate::error::EcsError;
use crate::store::StoreError;
use berth_proto::v1::{RunTaskRequest, RunTaskResponse};
use std::collections::{BTreeSet, HashMap, HashSet};
use tokio::sync::oneshot;

/// At most this many RunTasks share a transaction (bounds the lock hold and the transaction).
pub(crate) const MAX_BATCH: usize = 256;

/// A RunTask waiting for its batch.
pub(crate) struct QueuedRun {
    req: RunTaskRequest,
    launch_type: String,
    reply: oneshot::Sender<Result<RunTaskResponse, EcsError>>,
}

/// The commit's error, once for each request of the batch.
fn store_error_copy(e: &EcsError) -> EcsError {
    match e {
        EcsError::Store(StoreError::Backend { op, message }) => {
            EcsError::Store(StoreError::Backend {
                op,
                message: message.clone(),
            })
        }
        other => EcsError::Store(StoreError::Backend {
            op: "commit",
            message: other.to_string(),
        }),
    }
}

impl Controller {
    fn queue(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<QueuedRun>> {
        // The queue is a plain list: a panic while holding it cannot leave it half-changed.
        self.run_queue
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues a checked RunTask and serves batches until it is answered.
    pub(crate) async fn run_grouped(
        &self,
        req: RunTaskRequest,
        launch_type: String,
    ) -> Result<RunTaskResponse, EcsError> {
        let (reply, mut answer) = oneshot::channel();
        self.queue().push_back(QueuedRun {
            req,
            launch_type,
            reply,
        });
        let mut st = tokio::select! {
            biased;
            r = &mut answer => return r.unwrap_or_else(|_| Err(dropped())),
            st = self.state.lock() => st,
        };
        loop {
            match answer.try_recv() {
                Ok(r) => return r,
                Err(oneshot::error::TryRecvError::Closed) => return Err(dropped()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<QueuedRun> = {
                let mut q = self.queue();
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                // Unreachable: our request is queued or answered while we hold the lock.
                return Err(dropped());
            }
            self.run_batch(&mut st, batch);
        }
    }

    /// Plans, commits (once) and applies a batch of RunTasks, answering each.
    fn run_batch(&self, st: &mut State, batch: Vec<QueuedRun>) {
        let mut pools = HashMap::new();
        let mut lan_taken = BTreeSet::new();
        let mut tokens = HashSet::new();
        let mut deferred = Vec::new();
        let mut planned = Vec::new();
        let mut writes = Vec::new();
        for q in batch {
            if q.reply.is_closed() {
                // The caller went away before its batch: nothing was done, nothing is.
                continue;
            }
            if let Some(t) = &q.req.client_token {
                if !tokens.insert(t.clone()) {
                    deferred.push(q);
                    continue;
                }
            }
            match self.plan_run_task(st, &mut pools, &mut lan_taken, &q.req, q.launch_type) {
                Ok(PlannedRun::Replayed(r)) => {
                    let _ = q.reply.send(Ok(r));
                }
                Ok(PlannedRun::New(mut new, failures)) => {
                    writes.append(&mut new.writes);
                    planned.push((q.reply, new, failures));
                }
                Err(e) => {
                    let _ = q.reply.send(Err(e));
                }
            }
        }
        if !planned.is_empty() {
            let committed = if writes.is_empty() {
                Ok(())
            } else {
                self.commit(writes)
            };
            match committed {
                Ok(()) => {
                    for (reply, new, failures) in planned {
                        let tasks = self.apply_new_tasks(st, *new);
                        let _ = reply.send(Ok(RunTaskResponse { tasks, failures }));
                    }
                }
                Err(e) => {
                    for (reply, _, _) in planned {
                        let _ = reply.send(Err(store_error_copy(&e)));
                    }
                }
            }
        }
        if !deferred.is_empty() {
            self.run_batch(st, deferred);
        }
    }
}

/// A request whose batch was abandoned (cannot happen while the controller lives).
fn dropped() -> EcsError {
    EcsError::Store(StoreError::Backend {
        op: "run task",
        message: "the request's batch ended without an answer".into(),
    })
}

#[cfg(test)]
#[path = "run_batch_tests.rs"]
mod tests;
