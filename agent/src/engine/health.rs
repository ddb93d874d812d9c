//! Container health checks (issue 9): for each running container with a `healthCheck`, a tokio
//! task in the agent (no helper process) runs the check in the container through containerd
//! exec every `interval`, bounded by `timeout`, and tells the task's actor the container's health
//! ([`Event::Health`]).
//!
//! Semantics are Docker's, which ECS uses (Docker's HEALTHCHECK reference and daemon/health.go;
//! ECS's HealthCheck API reference):
//! - `["CMD", exe, args…]` runs `exe` directly; `["CMD-SHELL", line]` runs `/bin/sh -c line`.
//! - The first check runs `interval` after the container started, then `interval` after each
//!   check ends. Exit code 0 is a success, anything else (or a failure to start it) a failure.
//! - UNKNOWN (Docker's "starting") until decided; HEALTHY after one success; UNHEALTHY after
//!   `retries` consecutive failures. While the container is still UNKNOWN and inside
//!   `startPeriod` (measured from the container's start to the check's start), a failure does
//!   not count; a success inside it counts (the container is HEALTHY and later failures count).
//! - A check still running at `timeout` fails with Docker's output "Health check exceeded
//!   timeout (Ns)"; it is SIGKILLed together with every process it started, including those
//!   that left its process tree (found by [`CHECK_ENV`] in their environment), so it leaves no
//!   process behind.
//! - The output kept is stdout and stderr together, at most [`MAX_OUTPUT`] bytes (Docker's
//!   limit), "..." marking a cut.
//! - An UNHEALTHY container is not stopped by the agent (ECS: a standalone task keeps running;
//!   a service replaces unhealthy tasks).

use super::Event;
use crate::runtime::{ExecSpec, Runtime, RuntimeError};
use async_trait::async_trait;
use berth_proto::status::HealthStatus;
use berth_proto::v1::HealthCheck;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, warn, Instrument};

/// ECS's default interval between checks.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// ECS's default check timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// ECS's default number of consecutive failures that make a container UNHEALTHY.
pub const DEFAULT_RETRIES: u32 = 3;
/// The most output kept of a check (Docker's maxOutputLen).
pub const MAX_OUTPUT: usize = 4096;
/// The environment variable set in every check process (its value the exec ID): how the
/// processes a timed-out check started are found, even those re-parented out of its tree.
pub const CHECK_ENV: &str = "BERTH_HEALTH_CHECK";
/// After a check's process exits, how long its output streams may stay open (held by a
/// background process it left) before the check is decided on its exit code alone.
const DRAIN_GRACE: Duration = Duration::from_millis(500);
/// Rounds of "find the check's processes, SIGKILL them" at a timeout (a process forking while
/// the first round kills gets caught by the next).
const KILL_ROUNDS: usize = 5;

/// A container's health check, with ECS's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthCheckConfig {
    /// The command run in the container.
    pub args: Vec<String>,
    /// Between the end of a check and the start of the next (and from the start to the first).
    pub interval: Duration,
    /// How long a check may run.
    pub timeout: Duration,
    /// Consecutive failures that make the container UNHEALTHY.
    pub retries: u32,
    /// From the container's start: failures inside it don't count while still UNKNOWN.
    pub start_period: Duration,
}

impl HealthCheckConfig {
    /// The check of a container definition's `healthCheck` (ranges are validated at
    /// registration); an error names what is wrong with the command.
    pub fn of(h: &HealthCheck) -> Result<Self, String> {
        let args = match h.command.split_first() {
            Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
            Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
                vec!["/bin/sh".into(), "-c".into(), rest.join(" ")]
            }
            _ => {
                return Err(
                    "healthCheck.command must start with \"CMD\" or \"CMD-SHELL\" followed by the command"
                        .into(),
                )
            }
        };
        let secs = |v: Option<i32>, default: Duration| {
            v.filter(|v| *v > 0)
                .map(|v| Duration::from_secs(v as u64))
                .unwrap_or(default)
        };
        Ok(Self {
            args,
            interval: secs(h.interval, DEFAULT_INTERVAL),
            timeout: secs(h.timeout, DEFAULT_TIMEOUT),
            retries: h
                .retries
                .filter(|r| *r > 0)
                .map(|r| r as u32)
                .unwrap_or(DEFAULT_RETRIES),
            start_period: Duration::from_secs(h.start_period.unwrap_or(0).max(0) as u64),
        })
    }
}

/// The health state machine of one container.
#[derive(Debug, Clone)]
pub struct Tracker {
    retries: u32,
    start_period: Duration,
    status: HealthStatus,
    failing: u32,
}

impl Tracker {
    /// A tracker starting from `status` (UNKNOWN for a fresh container; the recorded one after
    /// an agent restart).
    pub fn new(cfg: &HealthCheckConfig, status: HealthStatus) -> Self {
        Self {
            retries: cfg.retries.max(1),
            start_period: cfg.start_period,
            status,
            failing: 0,
        }
    }

    /// The health after a check that started `since_start` after the container.
    pub fn record(&mut self, success: bool, since_start: Duration) -> HealthStatus {
        if success {
            self.failing = 0;
            self.status = HealthStatus::Healthy;
        } else if self.status == HealthStatus::Unknown && since_start < self.start_period {
            // Docker: a failure inside the start period does not count while still starting.
        } else {
            self.failing += 1;
            if self.failing >= self.retries {
                self.status = HealthStatus::Unhealthy;
            }
        }
        self.status
    }

    /// The health now.
    pub fn status(&self) -> HealthStatus {
        self.status
    }
}

/// What one check came to.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckOutcome {
    /// Exit code 0.
    pub success: bool,
    /// Its output, at most [`MAX_OUTPUT`] bytes (and "...").
    pub output: String,
}

/// Runs one check (a trait so the checker's timing is unit-tested with a fake).
#[async_trait]
pub trait Probe: Send + Sync + 'static {
    /// Runs the check once, bounded by `timeout`.
    async fn check(&self, timeout: Duration) -> CheckOutcome;
    /// Removes what checks of an earlier agent process left (before the first check).
    async fn sweep(&self) {}
}

/// A check that runs in the container through containerd exec.
pub struct ExecProbe<R> {
    /// The runtime.
    pub runtime: Arc<R>,
    /// The containerd container ID.
    pub cid: String,
    /// The command.
    pub args: Vec<String>,
    /// The bound on each containerd call (exec, kill, delete, pids).
    pub call_timeout: Duration,
}

/// Output capped at [`MAX_OUTPUT`] bytes.
#[derive(Default)]
struct Limited {
    buf: Vec<u8>,
    cut: bool,
}

impl Limited {
    fn push(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT.saturating_sub(self.buf.len());
        if data.len() > room {
            self.cut = true;
        }
        self.buf.extend_from_slice(&data[..data.len().min(room)]);
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.cut {
            s.push_str("...");
        }
        s
    }
}

/// Reads `stdout` and `stderr` (when given) into `out` until both end.
async fn read_output(
    stdout: std::pin::Pin<Box<dyn AsyncRead + Send>>,
    stderr: Option<std::pin::Pin<Box<dyn AsyncRead + Send>>>,
    out: &std::sync::Mutex<Limited>,
) {
    let pump = |mut r: std::pin::Pin<Box<dyn AsyncRead + Send>>| async move {
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if let Ok(mut o) = out.lock() {
                        o.push(&buf[..n]);
                    }
                }
            }
        }
    };
    match stderr {
        Some(err) => {
            tokio::join!(pump(stdout), pump(err));
        }
        None => pump(stdout).await,
    }
}

async fn bounded<T>(
    op: &'static str,
    id: &str,
    after: Duration,
    call: impl std::future::Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::time::timeout(after, call).await.unwrap_or_else(|_| {
        Err(RuntimeError::Timeout {
            op,
            id: id.to_string(),
            after,
        })
    })
}

/// Docker's format of a timeout in its output ("5s").
fn seconds(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.3}s", d.as_secs_f64())
    }
}

#[async_trait]
impl<R: Runtime> Probe for ExecProbe<R> {
    /// Processes of checks an earlier agent process started and did not see end (it stopped
    /// mid-check): none of this checker's own runs yet.
    async fn sweep(&self) {
        self.kill_marked(format!("{CHECK_ENV}=")).await;
    }

    async fn check(&self, timeout: Duration) -> CheckOutcome {
        let exec_id = format!("health-{}", uuid::Uuid::new_v4().simple());
        let spec = ExecSpec {
            exec_id: exec_id.clone(),
            args: self.args.clone(),
            env: vec![format!("{CHECK_ENV}={exec_id}")],
            terminal: false,
            stdin: false,
        };
        let deadline = Instant::now() + timeout;
        let rt = &self.runtime;
        let started = bounded(
            "exec",
            &self.cid,
            self.call_timeout.min(timeout),
            rt.exec(&self.cid, &spec),
        )
        .await;
        let io = match started {
            Ok(io) => io,
            Err(e) => {
                // Docker counts a check that cannot be started as failed, with the error.
                let _ = bounded(
                    "exec delete",
                    &self.cid,
                    self.call_timeout,
                    rt.exec_delete(&self.cid, &exec_id),
                )
                .await;
                let mut out = Limited::default();
                out.push(e.message().as_bytes());
                return CheckOutcome {
                    success: false,
                    output: out.text(),
                };
            }
        };
        let out = std::sync::Mutex::new(Limited::default());
        let reading = read_output(io.stdout, io.stderr, &out);
        tokio::pin!(reading);
        let waited = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                status = rt.exec_wait(&self.cid, &exec_id) => {
                    // Exited: what it wrote is read, unless a process it left holds the
                    // streams open.
                    let grace = DRAIN_GRACE.min(deadline.saturating_duration_since(Instant::now()));
                    let _ = tokio::time::timeout(grace, &mut reading).await;
                    status
                }
                // Both streams ended first: the exit follows.
                _ = &mut reading => rt.exec_wait(&self.cid, &exec_id).await,
            }
        })
        .await;
        let outcome = match waited {
            Ok(Ok(status)) => CheckOutcome {
                success: status == 0,
                output: out.lock().map(|o| o.text()).unwrap_or_default(),
            },
            Ok(Err(e)) => CheckOutcome {
                success: false,
                output: e.message(),
            },
            Err(_) => {
                debug!(container = %self.cid, exec = %exec_id, "health check timed out; killing it");
                self.kill_check(&exec_id).await;
                CheckOutcome {
                    success: false,
                    output: format!("Health check exceeded timeout ({})", seconds(timeout)),
                }
            }
        };
        if let Err(e) = bounded(
            "exec delete",
            &self.cid,
            self.call_timeout,
            rt.exec_delete(&self.cid, &exec_id),
        )
        .await
        {
            warn!(container = %self.cid, exec = %exec_id, error = %e, "cannot remove a health check's process record");
        }
        outcome
    }
}

impl<R: Runtime> ExecProbe<R> {
    /// SIGKILLs a timed-out check and every process it started, then waits for its exit.
    async fn kill_check(&self, exec_id: &str) {
        self.kill_marked(format!("{CHECK_ENV}={exec_id}")).await;
        let rt = &self.runtime;
        if let Err(e) = bounded(
            "exec kill",
            &self.cid,
            self.call_timeout,
            rt.exec_kill(
                &self.cid,
                exec_id,
                nix::sys::signal::Signal::SIGKILL as i32 as u32,
            ),
        )
        .await
        {
            warn!(container = %self.cid, exec = %exec_id, error = %e, "cannot kill a timed-out health check");
        }
        if let Err(e) = bounded(
            "exec wait",
            &self.cid,
            self.call_timeout,
            rt.exec_wait(&self.cid, exec_id),
        )
        .await
        {
            warn!(container = %self.cid, exec = %exec_id, error = %e, "a killed health check did not exit");
        }
    }

    /// SIGKILLs every process of the container whose environment holds `marker` (an exact
    /// entry; ending in '=': any value), and their descendants, until none is left (at most
    /// [`KILL_ROUNDS`] rounds).
    async fn kill_marked(&self, marker: String) {
        let rt = &self.runtime;
        for round in 0..KILL_ROUNDS {
            let pids = match bounded("pids", &self.cid, self.call_timeout, rt.pids(&self.cid)).await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!(container = %self.cid, error = %e, "cannot list the container's processes");
                    break;
                }
            };
            let marker = marker.clone();
            let job = tokio::task::spawn_blocking(move || {
                let procs: Vec<ProcInfo> =
                    pids.iter().filter_map(|p| proc_info(*p, &marker)).collect();
                let victims = victims(&procs);
                for pid in &victims {
                    // ESRCH: gone meanwhile.
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(*pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                victims.len()
            });
            match tokio::time::timeout(self.call_timeout, job).await {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => {
                    debug!(container = %self.cid, round, killed = n, "killed a health check's processes")
                }
                Ok(Err(e)) => {
                    warn!(container = %self.cid, error = %e, "cannot kill a health check's processes");
                    break;
                }
                Err(_) => {
                    warn!(container = %self.cid, "killing a health check's processes did not finish in time");
                    break;
                }
            }
        }
    }
}

/// One process of the container, as far as killing a check goes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProcInfo {
    /// Host PID.
    pub pid: u32,
    /// Parent's host PID.
    pub ppid: u32,
    /// It carries the check's [`CHECK_ENV`] entry.
    pub marked: bool,
}

/// Reads a process's parent and whether its environment holds `marker` (an exact entry; one
/// ending in '=' matches any value) (None when gone).
fn proc_info(pid: u32, marker: &str) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ppid = parse_ppid(&stat)?;
    let m = marker.as_bytes();
    let any_value = marker.ends_with('=');
    let marked = std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| {
            env.split(|b| *b == 0)
                .any(|e| e == m || (any_value && e.starts_with(m)))
        })
        .unwrap_or(false);
    Some(ProcInfo { pid, ppid, marked })
}

/// The parent PID in a /proc/PID/stat line (after the command, which may hold spaces and ')').
pub fn parse_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// The processes to kill: every marked process and all its descendants.
pub fn victims(procs: &[ProcInfo]) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for p in procs {
        children.entry(p.ppid).or_default().push(p.pid);
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut stack: Vec<u32> = procs.iter().filter(|p| p.marked).map(|p| p.pid).collect();
    while let Some(pid) = stack.pop() {
        if !seen.insert(pid) {
            continue;
        }
        out.push(pid);
        if let Some(c) = children.get(&pid) {
            stack.extend(c);
        }
    }
    out
}

/// Runs the checks of one container until aborted (or the actor is gone), telling the actor
/// each result. `since_start` is how long the container has been running.
pub fn spawn<P: Probe>(
    probe: P,
    cfg: HealthCheckConfig,
    status: HealthStatus,
    since_start: Duration,
    name: String,
    run: u64,
    tx: mpsc::UnboundedSender<Event>,
) -> JoinHandle<()> {
    let started = Instant::now()
        .checked_sub(since_start)
        .unwrap_or_else(Instant::now);
    let span = tracing::info_span!("health", container = %name);
    tokio::spawn(
        async move {
            probe.sweep().await;
            let mut tracker = Tracker::new(&cfg, status);
            loop {
                tokio::time::sleep(cfg.interval).await;
                let at = Instant::now();
                let outcome = probe.check(cfg.timeout).await;
                let before = tracker.status();
                let status = tracker.record(outcome.success, at.duration_since(started));
                if status != before {
                    tracing::info!(health = %String::from(status), output = %outcome.output, "container health changed");
                }
                let sent = tx.send(Event::Health {
                    name: name.clone(),
                    run,
                    status,
                    output: outcome.output,
                });
                if sent.is_err() {
                    return;
                }
            }
        }
        .instrument(span),
    )
}

/// The running checkers of a task's containers; aborted when dropped. Each checker started
/// gets a run number its results carry, so a result of a checker already replaced or stopped
/// (sent while the container died, taken off the channel after a restart) is told apart and
/// dropped instead of overwriting the new process's health.
#[derive(Default)]
pub struct Checkers {
    handles: HashMap<String, (u64, JoinHandle<()>)>,
    last_run: u64,
}

impl Checkers {
    /// Whether the container's checker runs.
    pub fn running(&self, name: &str) -> bool {
        self.handles
            .get(name)
            .is_some_and(|(_, h)| !h.is_finished())
    }

    /// The run number for the next checker.
    pub fn next_run(&mut self) -> u64 {
        self.last_run += 1;
        self.last_run
    }

    /// Whether `run` is the container's current checker (its results count).
    pub fn is_current(&self, name: &str, run: u64) -> bool {
        self.handles.get(name).is_some_and(|(r, _)| *r == run)
    }

    /// Keeps the container's checker of run `run` (replacing an older one).
    pub fn insert(&mut self, name: &str, run: u64, h: JoinHandle<()>) {
        if let Some((_, old)) = self.handles.insert(name.to_string(), (run, h)) {
            old.abort();
        }
    }

    /// Stops the container's checker.
    pub fn stop(&mut self, name: &str) {
        if let Some((_, h)) = self.handles.remove(name) {
            h.abort();
        }
    }

    /// Stops every checker.
    pub fn stop_all(&mut self) {
        for (_, (_, h)) in self.handles.drain() {
            h.abort();
        }
    }
}

impl Drop for Checkers {
    fn drop(&mut self) {
        self.stop_all();
    }
}

/// A task's healthStatus from its essential containers' (`None` for those without a check):
/// UNHEALTHY if one is, HEALTHY if every one with a check is, else UNKNOWN; `None` when no
/// essential container has a check.
pub fn task_health(
    essential: impl IntoIterator<Item = Option<HealthStatus>>,
) -> Option<HealthStatus> {
    let checked: Vec<HealthStatus> = essential.into_iter().flatten().collect();
    if checked.is_empty() {
        None
    } else if checked.contains(&HealthStatus::Unhealthy) {
        Some(HealthStatus::Unhealthy)
    } else if checked.iter().all(|s| *s == HealthStatus::Healthy) {
        Some(HealthStatus::Healthy)
    } else {
        Some(HealthStatus::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    fn cfg(retries: u32, start_period: u64) -> HealthCheckConfig {
        HealthCheckConfig {
            args: vec!["true".into()],
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            retries,
            start_period: Duration::from_secs(start_period),
        }
    }

    #[test]
    fn commands_and_defaults() {
        let h = HealthCheck {
            command: vec!["CMD-SHELL".into(), "test -f /tmp/ok".into()],
            ..Default::default()
        };
        let c = HealthCheckConfig::of(&h).unwrap();
        assert_eq!(c.args, ["/bin/sh", "-c", "test -f /tmp/ok"]);
        assert_eq!(
            (c.interval, c.timeout, c.retries, c.start_period),
            (DEFAULT_INTERVAL, DEFAULT_TIMEOUT, 3, Duration::ZERO)
        );
        let h = HealthCheck {
            command: vec!["CMD".into(), "test".into(), "-f".into(), "/x".into()],
            interval: Some(5),
            timeout: Some(2),
            retries: Some(1),
            start_period: Some(10),
        };
        let c = HealthCheckConfig::of(&h).unwrap();
        assert_eq!(c.args, ["test", "-f", "/x"]);
        assert_eq!(c.interval, Duration::from_secs(5));
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.retries, 1);
        assert_eq!(c.start_period, Duration::from_secs(10));
        for bad in [
            vec![],
            vec!["CMD".to_string()],
            vec!["NONE".into(), "x".into()],
        ] {
            let h = HealthCheck {
                command: bad,
                ..Default::default()
            };
            assert!(HealthCheckConfig::of(&h).is_err());
        }
    }

    #[test]
    fn healthy_after_one_success_unhealthy_after_retries_failures() {
        let mut t = Tracker::new(&cfg(3, 0), HealthStatus::Unknown);
        let s = Duration::from_secs(100);
        assert_eq!(t.record(false, s), HealthStatus::Unknown);
        assert_eq!(t.record(true, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Unhealthy);
        // Recovers with one success; the failure count starts over.
        assert_eq!(t.record(true, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Healthy);
        assert_eq!(t.record(true, s), HealthStatus::Healthy);
        assert_eq!(t.record(false, s), HealthStatus::Healthy);
    }

    #[test]
    fn start_period_failures_do_not_count_until_a_success() {
        let mut t = Tracker::new(&cfg(1, 30), HealthStatus::Unknown);
        for at in [5, 10, 29] {
            assert_eq!(
                t.record(false, Duration::from_secs(at)),
                HealthStatus::Unknown
            );
        }
        assert_eq!(
            t.record(false, Duration::from_secs(30)),
            HealthStatus::Unhealthy
        );
        // A success inside the start period counts, and failures after it count too.
        let mut t = Tracker::new(&cfg(1, 30), HealthStatus::Unknown);
        assert_eq!(
            t.record(true, Duration::from_secs(5)),
            HealthStatus::Healthy
        );
        assert_eq!(
            t.record(false, Duration::from_secs(10)),
            HealthStatus::Unhealthy
        );
    }

    #[test]
    fn task_health_from_essential_containers_with_checks() {
        use HealthStatus::*;
        assert_eq!(task_health([None, None]), None);
        assert_eq!(task_health([Some(Healthy), None]), Some(Healthy));
        assert_eq!(task_health([Some(Healthy), Some(Unknown)]), Some(Unknown));
        assert_eq!(
            task_health([Some(Healthy), Some(Unhealthy), Some(Unknown)]),
            Some(Unhealthy)
        );
    }

    #[test]
    fn output_is_capped() {
        let mut l = Limited::default();
        l.push(&[b'a'; 4000]);
        l.push(&[b'b'; 200]);
        let t = l.text();
        assert_eq!(t.len(), MAX_OUTPUT + 3);
        assert!(t.ends_with("bbb..."));
        let mut l = Limited::default();
        l.push(b"ok\n");
        assert_eq!(l.text(), "ok\n");
    }

    #[test]
    fn the_kill_reaches_marked_processes_and_their_descendants_only() {
        let p = |pid, ppid, marked| ProcInfo { pid, ppid, marked };
        // 10: the container's init; 20: the check (its parent the shim, 5); 21, 22: its child
        // and grandchild; 30: a process it left, re-parented to init and still marked; 40: the
        // application's own child of init.
        let procs = [
            p(10, 5, false),
            p(20, 5, true),
            p(21, 20, false),
            p(22, 21, false),
            p(30, 10, true),
            p(31, 30, false),
            p(40, 10, false),
        ];
        let mut v = victims(&procs);
        v.sort();
        assert_eq!(v, [20, 21, 22, 30, 31]);
        assert_eq!(
            parse_ppid("123 (a b) c) S 77 123 123 0 -1"),
            Some(77),
            "a command with spaces and ')'"
        );
    }

    /// A probe answering from a script, recording when each check ran.
    struct Scripted {
        results: Mutex<std::collections::VecDeque<bool>>,
        at: Arc<Mutex<Vec<Instant>>>,
    }

    #[async_trait]
    impl Probe for Scripted {
        async fn check(&self, _timeout: Duration) -> CheckOutcome {
            if let Ok(mut at) = self.at.lock() {
                at.push(Instant::now());
            }
            let success = self
                .results
                .lock()
                .ok()
                .and_then(|mut r| r.pop_front())
                .unwrap_or(true);
            CheckOutcome {
                success,
                output: format!("{success}"),
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn checker_runs_every_interval_and_reports_each_result() {
        let at = Arc::new(Mutex::new(Vec::new()));
        let probe = Scripted {
            // Two failures inside the 12 s start period (at 5 s and 10 s) do not count; the one
            // at 15 s does, as do those after: UNHEALTHY at 25 s (retries 3); HEALTHY at 30 s.
            results: Mutex::new([false, false, false, false, false, true].into()),
            at: at.clone(),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        let t0 = Instant::now();
        let h = spawn(
            probe,
            cfg(3, 12),
            HealthStatus::Unknown,
            Duration::ZERO,
            "app".into(),
            1,
            tx,
        );
        let mut seen = Vec::new();
        for _ in 0..6 {
            match rx.recv().await {
                Some(Event::Health { status, output, .. }) => {
                    seen.push((t0.elapsed().as_secs(), status, output))
                }
                other => panic!("{other:?}"),
            }
        }
        h.abort();
        use HealthStatus::*;
        let want: Vec<(u64, HealthStatus, String)> = [
            (5, Unknown, "false"),
            (10, Unknown, "false"),
            (15, Unknown, "false"),
            (20, Unknown, "false"),
            (25, Unhealthy, "false"),
            (30, Healthy, "true"),
        ]
        .into_iter()
        .map(|(t, s, o)| (t, s, o.to_string()))
        .collect();
        assert_eq!(seen, want);
    }

    #[tokio::test(start_paused = true)]
    async fn a_recovered_checker_keeps_the_recorded_health_and_the_elapsed_start_period() {
        let probe = Scripted {
            results: Mutex::new([false].into()),
            at: Arc::new(Mutex::new(Vec::new())),
        };
        let (tx, mut rx) = mpsc::unbounded_channel();
        // Running 100 s already, start period 12 s: the first failure counts (retries 1).
        let h = spawn(
            probe,
            cfg(1, 12),
            HealthStatus::Healthy,
            Duration::from_secs(100),
            "app".into(),
            1,
            tx,
        );
        match rx.recv().await {
            Some(Event::Health { status, .. }) => assert_eq!(status, HealthStatus::Unhealthy),
            other => panic!("{other:?}"),
        }
        h.abort();
        // The actor gone: the checker ends by itself.
        let probe = Scripted {
            results: Mutex::new(Default::default()),
            at: Arc::new(Mutex::new(Vec::new())),
        };
        let (tx, rx) = mpsc::unbounded_channel();
        drop(rx);
        let h = spawn(
            probe,
            cfg(1, 0),
            HealthStatus::Unknown,
            Duration::ZERO,
            "app".into(),
            1,
            tx,
        );
        tokio::time::timeout(Duration::from_secs(60), h)
            .await
            .expect("checker ends once the actor is gone")
            .expect("no panic");
    }
}
