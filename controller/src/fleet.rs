//! Live agent sessions: which container instances have a connected agent, and a wake-up for
//! each session when what its instance should run changes.

pub mod exec;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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
        if let Ok(mut s) = self.fleet.sessions.lock() {
            if s.get(&self.instance).is_some_and(|x| x.id == self.id) {
                s.remove(&self.instance);
            }
        }
    }
}

impl Fleet {
    /// The ExecuteCommand sessions routed over the agents' links.
    pub fn exec(&self) -> &Arc<exec::ExecRoutes> {
        &self.exec
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
                x.desired_acked = x.desired_acked.max(Some(seq));
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
