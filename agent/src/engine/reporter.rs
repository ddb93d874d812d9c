//! The outbox of task state changes: numbered, persisted, resent until acknowledged.

use crate::state::{write_json, AgentState, DataDir, StateError};
use berth_proto::v1::TaskStateChange;
use std::sync::Mutex;
use tokio::sync::watch;

/// Numbers, persists and queues reports for the controller.
pub struct Reporter {
    state: Mutex<AgentState>,
    dir: DataDir,
    /// The highest sequence number queued; the session watches it.
    latest: watch::Sender<u64>,
}

impl Reporter {
    /// Starts from the persisted agent state.
    pub fn new(dir: DataDir, state: AgentState) -> Self {
        let latest = state.next_seq.saturating_sub(1);
        Self {
            state: Mutex::new(state),
            dir,
            latest: watch::channel(latest).0,
        }
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut AgentState) -> T) -> Result<T, StateError> {
        let mut st = match self.state.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
        let out = f(&mut st);
        write_json(&self.dir.agent(), &*st)?;
        Ok(out)
    }

    /// Queues a report; it is on disk when this returns.
    pub fn report(&self, mut change: TaskStateChange) -> Result<u64, StateError> {
        let seq = self.with_state(|st| {
            st.next_seq = st.next_seq.max(1);
            change.seq = st.next_seq;
            st.next_seq += 1;
            st.outbox.push(change);
            st.next_seq - 1
        })?;
        self.latest.send_replace(seq);
        Ok(seq)
    }

    /// Drops every report up to `seq`: the controller has stored them.
    pub fn ack(&self, seq: u64) -> Result<(), StateError> {
        self.with_state(|st| st.outbox.retain(|c| c.seq > seq))
    }

    /// Reports queued after `seq`, in order.
    pub fn pending_after(&self, seq: u64) -> Vec<TaskStateChange> {
        match self.state.lock() {
            Ok(st) => st.outbox.iter().filter(|c| c.seq > seq).cloned().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// A receiver that changes whenever a report is queued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Records the container instance identity.
    pub fn set_identity(&self, arn: &str, cluster: &str) -> Result<(), StateError> {
        self.with_state(|st| {
            st.container_instance_arn = Some(arn.to_string());
            st.cluster = Some(cluster.to_string());
        })
    }

    /// The persisted container instance ARN, if this host registered before in `cluster`.
    pub fn identity(&self, cluster: &str) -> Option<String> {
        let st = self.state.lock().ok()?;
        if st.cluster.as_deref() == Some(cluster) {
            st.container_instance_arn.clone()
        } else {
            None
        }
    }
}
