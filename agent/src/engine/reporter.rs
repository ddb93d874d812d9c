//! The outbox of task state changes: the latest state of each task, numbered within the
//! agent's state epoch, reported only once it is on disk, resent until acknowledged.
//!
//! A task's latest state lives in its own `tasks/<id>.json` (written atomically by one writer
//! task, each write on a blocking thread), so the outbox is "every task whose latest seq is not
//! acknowledged": no log grows while the controller is away. A failed write is retried (with
//! back-off, logged) and its report waits: the controller never hears a state that is not on
//! disk. Sequence numbers restart at every agent start under a new epoch (a random id in the
//! session's hello), so the controller never mistakes a restarted numbering for resends; after
//! a start every task's state is resent, which the controller's forward-only merge makes harmless.

use crate::state::{to_json, write_atomically, AgentState, DataDir, StateError, TaskRecord};
use berth_proto::v1::TaskStateChange;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tracing::error;

/// The latest unacknowledged state of each task, by task ARN.
#[derive(Default)]
struct Outbox {
    next_seq: u64,
    pending: HashMap<String, TaskStateChange>,
    /// Every report queued, in order (tests check the order statuses took).
    #[cfg(test)]
    history: Vec<TaskStateChange>,
}

struct Queue {
    outbox: Mutex<Outbox>,
    /// The highest sequence number queued; the session watches it.
    latest: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        // Every critical section is a few map operations: the data stays consistent.
        Err(p) => p.into_inner(),
    }
}

impl Queue {
    fn push(&self, mut change: TaskStateChange) -> u64 {
        let seq = {
            let mut o = lock(&self.outbox);
            o.next_seq += 1;
            change.seq = o.next_seq;
            #[cfg(test)]
            o.history.push(change.clone());
            o.pending.insert(change.task_arn.clone(), change);
            o.next_seq
        };
        self.latest.send_replace(seq);
        seq
    }
}

/// A write for the writer task.
enum Op {
    Put {
        path: PathBuf,
        bytes: Arc<Vec<u8>>,
        /// Queued once the bytes are on disk.
        report: Option<Box<TaskStateChange>>,
    },
    Delete {
        path: PathBuf,
    },
    /// Answered once every earlier op is done.
    Flush(Option<tokio::sync::oneshot::Sender<()>>),
    /// A report of a state already handed to the writer: queued once every earlier op is done,
    /// so it never gets ahead of the write of that state.
    Report(Box<TaskStateChange>),
}

impl Op {
    fn path(&self) -> Option<&PathBuf> {
        match self {
            Op::Put { path, .. } | Op::Delete { path } => Some(path),
            Op::Flush(_) | Op::Report(_) => None,
        }
    }

    async fn run(&mut self) -> Result<(), StateError> {
        let path = match self {
            Op::Put { path, .. } | Op::Delete { path } => path.clone(),
            Op::Flush(done) => {
                if let Some(done) = done.take() {
                    let _ = done.send(());
                }
                return Ok(());
            }
            Op::Report(_) => return Ok(()),
        };
        let job = match self {
            Op::Put { bytes, .. } => {
                let bytes = bytes.clone();
                let p = path.clone();
                tokio::task::spawn_blocking(move || write_atomically(&p, &bytes))
            }
            _ => {
                let p = path.clone();
                tokio::task::spawn_blocking(move || crate::state::remove(&p))
            }
        };
        job.await.map_err(|source| StateError::Thread {
            path: path.display().to_string(),
            source,
        })?
    }
}

/// Writes in order, the latest op per file winning; retries a failed write until it succeeds
/// or a newer op for the same file replaces it.
async fn write_loop(mut rx: mpsc::UnboundedReceiver<Op>, queue: Arc<Queue>) {
    const FIRST_RETRY: Duration = Duration::from_millis(50);
    const MAX_RETRY: Duration = Duration::from_secs(5);
    let mut backlog: VecDeque<Op> = VecDeque::new();
    loop {
        if backlog.is_empty() {
            match rx.recv().await {
                Some(op) => backlog.push_back(op),
                None => return,
            }
        }
        while let Ok(op) = rx.try_recv() {
            backlog.push_back(op);
        }
        let Some(mut op) = backlog.pop_front() else {
            continue;
        };
        let mut delay = FIRST_RETRY;
        loop {
            // Only writes asked for before the next flush may replace this one.
            if let Some(newer) = backlog
                .iter_mut()
                .take_while(|o| o.path().is_some())
                .find(|o| o.path() == op.path())
            {
                // Superseded: a report it carried goes with the newer write of the same file.
                if let (
                    Op::Put {
                        report: old @ Some(_),
                        ..
                    },
                    Op::Put { report: new, .. },
                ) = (&mut op, newer)
                {
                    if new.is_none() {
                        *new = old.take();
                    }
                }
                break;
            }
            match op.run().await {
                Ok(()) => {
                    match op {
                        Op::Put {
                            report: Some(r), ..
                        }
                        | Op::Report(r) => {
                            queue.push(*r);
                        }
                        _ => {}
                    }
                    break;
                }
                Err(e) => {
                    error!(error = %e, retry_ms = delay.as_millis() as u64,
                        "cannot persist task state; its report waits until it is on disk");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RETRY);
                    while let Ok(n) = rx.try_recv() {
                        backlog.push_back(n);
                    }
                }
            }
        }
    }
}

/// Numbers, persists and queues reports for the controller.
pub struct Reporter {
    queue: Arc<Queue>,
    epoch: String,
    dir: DataDir,
    identity: Mutex<AgentState>,
    writes: mpsc::UnboundedSender<Op>,
    /// Issue 9: the latest stats sample for the link (not persisted, not resent: a lost one is
    /// replaced by the next).
    stats: watch::Sender<Option<berth_proto::v1::TaskStatsReport>>,
    /// Issue 11: the latest pull progress of each task not yet sent, and a nudge when it
    /// changes. Like stats: never numbered, persisted or resent.
    pull_progress: Mutex<HashMap<String, berth_proto::v1::TaskPullProgress>>,
    pull_progress_changed: watch::Sender<()>,
}

impl Reporter {
    /// Starts from the persisted agent identity, under a new state epoch, with its writer task
    /// (which ends when the reporter is dropped). Call within the tokio runtime.
    pub fn new(dir: DataDir, state: AgentState) -> Self {
        let queue = Arc::new(Queue {
            outbox: Mutex::new(Outbox::default()),
            latest: watch::channel(0).0,
        });
        let (writes, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_loop(rx, queue.clone()));
        Self {
            queue,
            epoch: uuid::Uuid::new_v4().simple().to_string(),
            dir,
            identity: Mutex::new(state),
            writes,
            stats: watch::channel(None).0,
            pull_progress: Mutex::new(HashMap::new()),
            pull_progress_changed: watch::channel(()).0,
        }
    }

    /// Hands the link the latest stats sample (it replaces one not yet sent).
    pub fn publish_stats(&self, report: berth_proto::v1::TaskStatsReport) {
        self.stats.send_replace(Some(report));
    }

    /// Issue 11: where a task's pulls stand; replaces what was not sent yet.
    pub fn publish_pull_progress(&self, progress: berth_proto::v1::TaskPullProgress) {
        if let Ok(mut m) = self.pull_progress.lock() {
            m.insert(progress.task_arn.clone(), progress);
        }
        self.pull_progress_changed.send_replace(());
    }

    /// Nudged when pull progress waits to be sent.
    pub fn subscribe_pull_progress(&self) -> watch::Receiver<()> {
        self.pull_progress_changed.subscribe()
    }

    /// The pull progress waiting to be sent, taken.
    pub fn take_pull_progress(&self) -> Vec<berth_proto::v1::TaskPullProgress> {
        self.pull_progress
            .lock()
            .map(|mut m| m.drain().map(|(_, v)| v).collect())
            .unwrap_or_default()
    }

    /// The latest stats samples, as they come.
    pub fn subscribe_stats(&self) -> watch::Receiver<Option<berth_proto::v1::TaskStatsReport>> {
        self.stats.subscribe()
    }

    /// This process's state epoch: report numbers restart under it.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Persists a task's record; once it is on disk, queues `report` (if any).
    pub fn persist(&self, id: &str, rec: &TaskRecord, report: Option<TaskStateChange>) {
        let path = self.dir.task(id);
        match to_json(&path, rec) {
            Ok(bytes) => {
                let _ = self.writes.send(Op::Put {
                    path,
                    bytes: Arc::new(bytes),
                    report: report.map(Box::new),
                });
            }
            // Cannot happen for these plain types; if it did, nothing could be written.
            Err(e) => error!(task = %id, error = %e, "cannot encode task state"),
        }
    }

    /// Removes a task's record (after any earlier write of it).
    pub fn forget(&self, id: &str) {
        let _ = self.writes.send(Op::Delete {
            path: self.dir.task(id),
        });
    }

    /// Returns once every write asked for before the call is done.
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.writes.send(Op::Flush(Some(tx))).is_ok() {
            let _ = rx.await;
        }
    }

    /// Queues a report whose content is on disk (or derived again when needed: a task's state
    /// at start-up, a task missing from the desired set, a stop of a task the agent never held)
    /// once every write asked for before it is done, so a re-report of a state never gets ahead
    /// of that state's write (`a_report_waits_for_the_writes_before_it`).
    pub fn report(&self, change: TaskStateChange) {
        // The writer gone (the runtime is shutting down): queue it as it is.
        if let Err(mpsc::error::SendError(Op::Report(r))) =
            self.writes.send(Op::Report(Box::new(change)))
        {
            self.queue.push(*r);
        }
    }

    /// Drops every report up to `seq`: the controller has stored them.
    pub fn ack(&self, seq: u64) {
        lock(&self.queue.outbox).pending.retain(|_, c| c.seq > seq);
    }

    /// Unacknowledged reports queued after `seq`, in order.
    pub fn pending_after(&self, seq: u64) -> Vec<TaskStateChange> {
        let mut out: Vec<_> = lock(&self.queue.outbox)
            .pending
            .values()
            .filter(|c| c.seq > seq)
            .cloned()
            .collect();
        out.sort_by_key(|c| c.seq);
        out
    }

    /// Every report queued so far, in order.
    #[cfg(test)]
    pub(crate) fn history(&self) -> Vec<TaskStateChange> {
        lock(&self.queue.outbox).history.clone()
    }

    /// A receiver that changes whenever a report is queued.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.queue.latest.subscribe()
    }

    /// Records the container instance identity in `agent.json`.
    pub async fn set_identity(&self, arn: &str, cluster: &str) -> Result<(), StateError> {
        self.write_identity(AgentState {
            container_instance_arn: Some(arn.to_string()),
            cluster: Some(cluster.to_string()),
        })
        .await
    }

    /// Forgets the container instance identity (it was deregistered): the next start
    /// registers a new instance.
    pub async fn forget_identity(&self) -> Result<(), StateError> {
        self.write_identity(AgentState::default()).await
    }

    async fn write_identity(&self, state: AgentState) -> Result<(), StateError> {
        let path = self.dir.agent();
        let bytes = to_json(&path, &state)?;
        let p = path.clone();
        tokio::task::spawn_blocking(move || write_atomically(&p, &bytes))
            .await
            .map_err(|source| StateError::Thread {
                path: path.display().to_string(),
                source,
            })??;
        *lock(&self.identity) = state;
        Ok(())
    }

    /// The persisted container instance ARN, if this host registered before in `cluster`.
    pub fn identity(&self, cluster: &str) -> Option<String> {
        let st = lock(&self.identity);
        if st.cluster.as_deref() == Some(cluster) {
            st.container_instance_arn.clone()
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::{Task, TaskDefinition};

    fn record(arn: &str, status: &str) -> TaskRecord {
        TaskRecord {
            task: Task {
                task_arn: arn.into(),
                ..Default::default()
            },
            definition: TaskDefinition::default(),
            desired_status: "RUNNING".into(),
            state: TaskStateChange {
                task_arn: arn.into(),
                last_status: status.into(),
                ..Default::default()
            },
            stop_signals: Default::default(),
            oom_kills_before: Default::default(),
            namespace_holders: Default::default(),
            boot_id: None,
            task_network: None,
            network: None,
            network_set_up: false,
            network_released: false,
        }
    }

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn temp() -> Dir {
        Dir(std::env::temp_dir().join(format!("berth-outbox-{}", uuid::Uuid::new_v4().simple())))
    }

    async fn wait_for(
        r: &Reporter,
        f: impl Fn(&[TaskStateChange]) -> bool,
    ) -> Vec<TaskStateChange> {
        let mut rx = r.subscribe();
        loop {
            let p = r.pending_after(0);
            if f(&p) {
                return p;
            }
            tokio::time::timeout(Duration::from_secs(10), rx.changed())
                .await
                .expect("no report")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn one_latest_state_per_task_on_disk_before_it_is_reported_and_resent_until_acked() {
        let d = temp();
        let dir = DataDir(d.0.clone());
        let r = Reporter::new(dir.clone(), AgentState::default());
        for s in ["PENDING", "RUNNING"] {
            let rec = record("arn:t/a", s);
            r.persist("a", &rec, Some(rec.state.clone()));
        }
        let rec = record("arn:t/b", "RUNNING");
        r.persist("b", &rec, Some(rec.state.clone()));
        let p = wait_for(&r, |p| {
            p.len() == 2
                && p.iter()
                    .any(|c| c.task_arn == "arn:t/a" && c.last_status == "RUNNING")
        })
        .await;
        // On disk: each task's own file holds its latest state (no growing log).
        let on_disk: TaskRecord = crate::state::read_json(&dir.task("a")).unwrap().unwrap();
        assert_eq!(on_disk.state.last_status, "RUNNING");
        assert!(!dir.0.join("agent.json").exists());
        // Acknowledged reports leave the outbox; newer ones stay.
        let a = p.iter().find(|c| c.task_arn == "arn:t/a").unwrap().seq;
        let b = p.iter().find(|c| c.task_arn == "arn:t/b").unwrap().seq;
        r.ack(a.min(b));
        assert_eq!(r.pending_after(0).len(), 1);
        r.ack(a.max(b));
        assert!(r.pending_after(0).is_empty());
        // A restart (a new reporter on the same dir) has a new epoch and numbers from 1 again.
        let r2 = Reporter::new(dir.clone(), AgentState::default());
        assert_ne!(r2.epoch(), r.epoch());
        r2.report(on_disk.state.clone());
        r2.flush().await;
        assert_eq!(r2.pending_after(0)[0].seq, 1);
    }

    #[tokio::test]
    async fn a_report_waits_for_the_writes_before_it() {
        let d = temp();
        let dir = DataDir(d.0.clone());
        std::fs::create_dir_all(&dir.0).unwrap();
        // `tasks` is a file: the write of the STOPPED state fails until it is removed.
        std::fs::write(dir.0.join("tasks"), b"in the way").unwrap();
        let r = Reporter::new(dir.clone(), AgentState::default());
        let mut rx = r.subscribe();
        let rec = record("arn:t/a", "STOPPED");
        r.persist("a", &rec, None);
        // The engine re-reports the STOPPED state it holds in memory.
        r.report(rec.state.clone());
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.changed())
                .await
                .is_err(),
            "reported before its state was on disk"
        );
        std::fs::remove_file(dir.0.join("tasks")).unwrap();
        tokio::time::timeout(Duration::from_secs(30), rx.changed())
            .await
            .expect("reported once on disk")
            .unwrap();
        let on_disk: TaskRecord = crate::state::read_json(&dir.task("a")).unwrap().unwrap();
        assert_eq!(on_disk.state.last_status, "STOPPED");
        assert_eq!(r.pending_after(0)[0].last_status, "STOPPED");
    }

    #[tokio::test]
    async fn a_failed_write_is_retried_and_its_report_waits_for_the_disk() {
        let d = temp();
        let dir = DataDir(d.0.clone());
        std::fs::create_dir_all(&dir.0).unwrap();
        // `tasks` is a file: every write under it fails until it is removed.
        std::fs::write(dir.0.join("tasks"), b"in the way").unwrap();
        let r = Reporter::new(dir.clone(), AgentState::default());
        let rec = record("arn:t/a", "RUNNING");
        r.persist("a", &rec, Some(rec.state.clone()));
        let mut rx = r.subscribe();
        assert!(
            tokio::time::timeout(Duration::from_millis(300), rx.changed())
                .await
                .is_err(),
            "reported before it was on disk"
        );
        assert!(r.pending_after(0).is_empty());
        std::fs::remove_file(dir.0.join("tasks")).unwrap();
        let p = wait_for(&r, |p| !p.is_empty()).await;
        assert_eq!(p[0].last_status, "RUNNING");
        let on_disk: TaskRecord = crate::state::read_json(&dir.task("a")).unwrap().unwrap();
        assert_eq!(on_disk.state.last_status, "RUNNING");
    }
}
