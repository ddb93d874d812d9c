//! Live agent sessions: which container instances have a connected agent, and a wake-up for
//! each session when what its instance should run changes.

pub mod exec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

struct Session {
    id: u64,
    changed: Arc<Notify>,
    /// The highest DesiredTasks seq the agent has acknowledged taking in.
    desired_acked: Option<u64>,
}

/// The agent sessions of this controller.
#[derive(Default)]
pub struct Fleet {
    sessions: Mutex<HashMap<String, Session>>,
    next_id: AtomicU64,
    /// ExecuteCommand sessions on the agents' links (issue 9).
    exec: Arc<exec::ExecRoutes>,
    /// Issue 12: since when each instance has had no session in step, for those that had one
    /// and lost it (instances never seen count from `started`).
    disconnected: Mutex<HashMap<String, Instant>>,
    /// When this fleet (the controller) started.
    started: Mutex<Option<Instant>>,
    /// Issue 12: wakes the services scheduler (a session came, went or took in a set, a task
    /// changed, a service or an instance changed).
    services: Notify,
}

/// A session's handle: detaches itself when dropped.
pub struct Attached {
    fleet: Arc<Fleet>,
    instance: String,
    id: u64,
    /// Notified whenever the instance's desired tasks change.
    pub changed: Arc<Notify>,
}

impl Drop for Attached {
    fn drop(&mut self) {
        let mut gone = false;
        if let Ok(mut s) = self.fleet.sessions.lock() {
            if s.get(&self.instance).is_some_and(|x| x.id == self.id) {
                s.remove(&self.instance);
                gone = true;
            }
        }
        if gone {
            if let Ok(mut d) = self.fleet.disconnected.lock() {
                d.insert(self.instance.clone(), Instant::now());
            }
            self.fleet.services.notify_one();
        }
    }
}

impl Fleet {
    /// The ExecuteCommand sessions routed over the agents' links.
    pub fn exec(&self) -> &Arc<exec::ExecRoutes> {
        &self.exec
    }

    /// Wakes the services scheduler.
    pub fn wake_services(&self) {
        self.services.notify_one();
    }

    /// Waits until [`Fleet::wake_services`] is called or `timeout` passes.
    pub async fn services_woken(&self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.services.notified()).await;
    }

    /// How long `instance` has been without an agent in step; `None` while it has one. An
    /// instance not seen since this controller started counts from the start.
    pub fn disconnected_for(&self, instance: &str) -> Option<Duration> {
        if self.connected(instance) {
            return None;
        }
        let since = self
            .disconnected
            .lock()
            .ok()
            .and_then(|d| d.get(instance).copied());
        let since = since.or_else(|| {
            self.started
                .lock()
                .ok()
                .map(|mut s| *s.get_or_insert_with(Instant::now))
        })?;
        Some(since.elapsed())
    }

    /// Attaches a session for `instance`, replacing any older one (an agent that reconnected).
    pub fn attach(self: &Arc<Self>, instance: &str) -> Attached {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let changed = Arc::new(Notify::new());
        if let Ok(mut s) = self.sessions.lock() {
            if let Some(old) = s.insert(
                instance.to_string(),
                Session {
                    id,
                    changed: changed.clone(),
                    desired_acked: None,
                },
            ) {
                // Wake the replaced session so it notices and ends.
                old.changed.notify_one();
            }
        }
        Attached {
            fleet: self.clone(),
            instance: instance.to_string(),
            id,
            changed,
        }
    }

    /// Whether `attached` is still the instance's current session.
    pub fn is_current(&self, attached: &Attached) -> bool {
        self.sessions
            .lock()
            .map(|s| {
                s.get(&attached.instance)
                    .is_some_and(|x| x.id == attached.id)
            })
            .unwrap_or(false)
    }

    /// Whether an agent is connected for `instance` and in step: its current session has taken
    /// in a desired set (DesiredTasksAck). Only then is the instance a placement candidate and
    /// shown `agentConnected`: an agent that connected but cannot (or does not yet) take in what
    /// it should run is not handed new tasks
    /// (`link::an_instance_takes_tasks_only_once_its_agent_has_taken_in_a_desired_set`).
    pub fn connected(&self, instance: &str) -> bool {
        self.sessions
            .lock()
            .map(|s| s.get(instance).is_some_and(|x| x.desired_acked.is_some()))
            .unwrap_or(false)
    }

    /// Records that the agent of `attached` took in DesiredTasks up to `seq`.
    pub fn desired_acked(&self, attached: &Attached, seq: u64) {
        if let Ok(mut s) = self.sessions.lock() {
            if let Some(x) = s
                .get_mut(&attached.instance)
                .filter(|x| x.id == attached.id)
            {
                let first = x.desired_acked.is_none();
                x.desired_acked = x.desired_acked.max(Some(seq));
                if first {
                    if let Ok(mut d) = self.disconnected.lock() {
                        d.remove(&attached.instance);
                    }
                    self.services.notify_one();
                }
            }
        }
    }

    /// The highest DesiredTasks seq the instance's current agent session has taken in.
    pub fn taken_in(&self, instance: &str) -> Option<u64> {
        self.sessions
            .lock()
            .ok()
            .and_then(|s| s.get(instance).and_then(|x| x.desired_acked))
    }

    /// Tells the instance's session that its desired tasks changed.
    pub fn notify(&self, instance: &str) {
        if let Ok(s) = self.sessions.lock() {
            if let Some(x) = s.get(instance) {
                x.changed.notify_one();
            }
        }
    }
}
