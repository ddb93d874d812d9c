//! Delivery of the spooled output to each container's log driver, on one thread of its own
//! (file reads and socket writes never run on the async runtime).
//!
//! Per container with a logConfiguration the pump keeps a [`StreamReader`] and an acknowledged
//! [`Cursor`], persisted beside the spool (`<container>.cursor.json`) once the destination has
//! the events: for awslogs when the controller acks them (LogAck), for json-file and syslog
//! once written. Bytes before the acknowledged cursor are released from the disk (punched out
//! of the spool, whose offsets stay as they are). awslogs batches go on the agent link, several
//! in flight, in order; after a reconnect (or a restart) they are sent again from the
//! acknowledged cursor and the controller stores each number once. Past the spool bound the
//! oldest unsent events are dropped and counted (a marker in the stream, a warning in the
//! agent's log and [`LogService::dropped_total`]); with `mode: blocking` (awslogs, syslog) the copy
//! threads stop draining the container's pipes instead.

use super::capture::{CaptureEvents, Gate};
use super::config::{self, Driver, Mode};
use super::stream::{Cursor, NumberedEvent, StreamReader};
use super::{ContainerLogPaths, Stream};
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::{AgentMessage, LogAck, LogBatch, LogConfiguration, LogEvent};
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// The default bound on a task's unsent spool (--log-spool-max-bytes).
pub const DEFAULT_SPOOL_MAX: u64 = 256 << 20;
/// CloudWatch Logs' PutLogEvents bounds: events per batch, and bytes (each event counts 26
/// bytes more than its message).
const BATCH_EVENTS: usize = 10_000;
const BATCH_BYTES: usize = 1_048_576;
const EVENT_OVERHEAD: usize = 26;
/// Batches of one stream in flight on the link.
const WINDOW: usize = 4;
/// What a watched container's [`ContainerLog`] is kept in, beside its spool.
const WATCH_SUFFIX: &str = ".watch.json";

/// Acknowledged bytes released from the disk in runs of at least this.
const PUNCH_RUN: u64 = 1 << 20;

/// Stops a task whose log destination refused its events: (task ARN, stoppedReason).
pub type Stopper = Arc<dyn Fn(&str, String) + Send + Sync>;

/// A container whose output is to be delivered. Kept beside its spool
/// (`<container>.watch.json`) so a restarted agent resumes the delivery of a stopped task's
/// output ([`LogService::resume`]).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ContainerLog {
    /// Its task's ARN.
    pub task_arn: String,
    /// Its name in the task.
    pub container_name: String,
    /// Its containerd id (the awslogs stream name without a prefix).
    pub runtime_id: String,
    /// Its log path (see [`ContainerLogPaths`]).
    pub log_path: PathBuf,
    /// Its logConfiguration.
    pub log_configuration: Option<LogConfiguration>,
    /// How many containers of its task share the task's spool bound.
    pub task_containers: usize,
}

#[derive(Default)]
struct Inbox {
    watch: Vec<ContainerLog>,
    acks: Vec<LogAck>,
    link: Option<Option<mpsc::Sender<AgentMessage>>>,
    woken: bool,
}

struct Shared {
    spool_max: u64,
    inbox: Mutex<Inbox>,
    wake: Condvar,
    closed: Mutex<HashSet<(ContainerLogPaths, Stream)>>,
    /// For each stream of a blocking-mode container, the spool offset its copy may fill up to
    /// (`None` until the delivery has read its cursor): the copy waits there.
    limits: Mutex<HashMap<(ContainerLogPaths, Stream), Option<u64>>>,
    room: Condvar,
    stopper: Mutex<Option<Stopper>>,
    dropped: AtomicU64,
    /// Containers whose output is not all delivered yet (a task's cleanup waits for them).
    pending: Mutex<HashSet<ContainerLogPaths>>,
    /// Told whenever a container's output is all delivered.
    settled: tokio::sync::Notify,
}

/// The log delivery of this agent.
#[derive(Clone)]
pub struct LogService {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for LogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogService")
            .field("spool_max", &self.shared.spool_max)
            .finish()
    }
}

impl LogService {
    /// Starts the delivery thread; each task's unsent spool is bounded by `spool_max` bytes.
    pub fn start(spool_max: u64) -> Self {
        let shared = Arc::new(Shared {
            spool_max,
            inbox: Mutex::default(),
            wake: Condvar::new(),
            closed: Mutex::default(),
            limits: Mutex::default(),
            room: Condvar::new(),
            stopper: Mutex::default(),
            dropped: AtomicU64::new(0),
            pending: Mutex::default(),
            settled: tokio::sync::Notify::new(),
        });
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("log-delivery".into())
            .spawn(move || Pump::default().run(&s));
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start log delivery");
        }
        Self { shared }
    }

    /// Sets who stops a task whose destination refuses its events.
    pub fn set_stopper(&self, s: Stopper) {
        if let Ok(mut g) = self.shared.stopper.lock() {
            *g = Some(s);
        }
    }

    fn with_inbox(&self, f: impl FnOnce(&mut Inbox)) {
        if let Ok(mut i) = self.shared.inbox.lock() {
            f(&mut i);
            i.woken = true;
        }
        self.shared.wake.notify_all();
    }

    /// Delivers a started (or recovered) container's output per its logConfiguration. Called
    /// before its output is copied: a blocking-mode container's copy waits from the start
    /// until the delivery has set its limit.
    pub fn watch(&self, c: ContainerLog) {
        // Pending from now on (before the delivery thread has seen it): a cleanup asking
        // right after must wait.
        if !matches!(
            config::parse(c.log_configuration.as_ref()),
            Ok(Driver::Local) | Err(_)
        ) {
            if let Ok(mut p) = self.shared.pending.lock() {
                p.insert(ContainerLogPaths::new(&c.log_path));
            }
        }
        let blocking = c.log_configuration.as_ref().is_some_and(|l| {
            config::parse(Some(l)).is_ok()
                && config::delivery_of(l).is_ok_and(|d| d.mode == Mode::Blocking)
        });
        {
            if blocking {
                let paths = ContainerLogPaths::new(&c.log_path);
                if let Ok(mut l) = self.shared.limits.lock() {
                    for s in [Stream::Stdout, Stream::Stderr] {
                        l.entry((paths.clone(), s)).or_insert(None);
                    }
                }
            }
        }
        self.with_inbox(|i| i.watch.push(c));
    }

    /// The link is up: awslogs batches go to `tx`, from what was acknowledged.
    pub fn connected(&self, tx: mpsc::Sender<AgentMessage>) {
        self.with_inbox(|i| i.link = Some(Some(tx)));
    }

    /// The link is down: what was sent and not acknowledged is sent again on the next one.
    pub fn disconnected(&self) {
        self.with_inbox(|i| i.link = Some(None));
    }

    /// The controller's LogAck.
    pub fn ack(&self, a: LogAck) {
        self.with_inbox(|i| i.acks.push(a));
    }

    /// Whether some container's output in `dir` (a task's log directory) is not all delivered
    /// to its log driver yet.
    pub fn undelivered(&self, dir: &std::path::Path) -> bool {
        self.shared
            .pending
            .lock()
            .map(|p| p.iter().any(|c| c.dir() == Some(dir)))
            .unwrap_or(false)
    }

    /// Waits until every container's output in `dir` is delivered (true), or `timeout` passes
    /// first (false).
    pub async fn wait_delivered(&self, dir: &std::path::Path, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let settled = self.shared.settled.notified();
            if !self.undelivered(dir) {
                return true;
            }
            if tokio::time::timeout_at(deadline, settled).await.is_err() {
                return !self.undelivered(dir);
            }
        }
    }

    /// After an agent restart: delivers again what a stopped task's containers left in `dir`
    /// (their output ended; nothing more comes), from each one's persisted cursor.
    pub fn resume(&self, dir: &std::path::Path) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let path = e.path();
            if !path.to_string_lossy().ends_with(WATCH_SUFFIX) {
                continue;
            }
            let c: ContainerLog = match std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot resume a container's log delivery");
                    continue;
                }
            };
            tracing::info!(task = %c.task_arn, container = %c.container_name, "resuming the delivery of a stopped task's output");
            self.watch_ended(c);
        }
    }

    /// [`LogService::watch`] for a container whose output has ended (it stopped before this
    /// agent started): what its spool holds is delivered, nothing more is waited for.
    pub fn watch_ended(&self, c: ContainerLog) {
        let paths = ContainerLogPaths::new(&c.log_path);
        if let Ok(mut closed) = self.shared.closed.lock() {
            closed.insert((paths.clone(), Stream::Stdout));
            closed.insert((paths, Stream::Stderr));
        }
        self.watch(c);
    }

    /// Events dropped past the spool bound since the agent started.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// The listeners the capture reports to (new bytes, ended streams; blocking mode).
    pub fn capture_listeners(&self) -> (Arc<dyn CaptureEvents>, Arc<dyn Gate>) {
        (Arc::new(self.clone()), Arc::new(self.clone()))
    }
}

impl CaptureEvents for LogService {
    fn opened(&self, paths: &ContainerLogPaths, s: Stream) {
        if let Ok(mut c) = self.shared.closed.lock() {
            c.remove(&(paths.clone(), s));
        }
    }

    fn spooled(&self, _: &ContainerLogPaths, _: Stream) {
        // Cheap: a flag and a wake, no I/O on the copy thread.
        if let Ok(mut i) = self.shared.inbox.lock() {
            if i.woken {
                return;
            }
            i.woken = true;
        }
        self.shared.wake.notify_all();
    }

    fn closed(&self, paths: &ContainerLogPaths, s: Stream) {
        if let Ok(mut c) = self.shared.closed.lock() {
            c.insert((paths.clone(), s));
        }
        self.with_inbox(|_| {});
    }
}

impl Gate for LogService {
    fn room(&self, paths: &ContainerLogPaths, s: Stream, offset: u64) -> usize {
        let key = (paths.clone(), s);
        let Ok(mut limits) = self.shared.limits.lock() else {
            return usize::MAX;
        };
        loop {
            match limits.get(&key) {
                None => return usize::MAX,
                Some(Some(limit)) if *limit > offset => {
                    return usize::try_from(limit - offset).unwrap_or(usize::MAX)
                }
                Some(_) => {}
            }
            match self
                .shared
                .room
                .wait_timeout(limits, Duration::from_secs(1))
            {
                Ok((g, _)) => limits = g,
                Err(_) => return usize::MAX,
            }
        }
    }
}

/// Where a local driver's events go.
pub trait SinkImpl: Send {
    /// Delivers the events (in order); an error leaves them to be delivered again.
    fn deliver(&mut self, events: &[NumberedEvent]) -> Result<(), String>;
}

enum Target {
    Awslogs {
        group: String,
        stream: String,
        create_group: bool,
        in_flight: VecDeque<(u64, Cursor)>,
        failed: bool,
        /// Whether the stream was announced (an empty batch: the controller creates the
        /// stream, or answers that the group does not exist) on this link.
        announced: bool,
        /// After a refusal that may pass (the store failed), nothing is sent before this.
        retry_at: Option<std::time::Instant>,
    },
    Local(Box<dyn SinkImpl>),
    None,
}

struct Shipper {
    log: ContainerLog,
    paths: ContainerLogPaths,
    reader: StreamReader,
    acked: Cursor,
    cursor_file: PathBuf,
    punched: [u64; 2],
    target: Target,
    bound: u64,
    /// `mode: blocking`: the copy waits rather than the spool dropping.
    blocking: bool,
}

/// How long the delivery sleeps with nothing to do, and with events held back by the clock.
const IDLE_WAIT_MS: u64 = 500;
const HOLD_WAIT_MS: u64 = 2;

struct Pump {
    shippers: HashMap<ContainerLogPaths, Shipper>,
    link: Option<mpsc::Sender<AgentMessage>>,
    wait: Duration,
}

impl Default for Pump {
    fn default() -> Self {
        Self {
            shippers: HashMap::new(),
            link: None,
            wait: Duration::from_millis(IDLE_WAIT_MS),
        }
    }
}

impl Pump {
    fn run(mut self, shared: &Shared) {
        loop {
            let inbox = {
                let Ok(mut g) = shared.inbox.lock() else {
                    return;
                };
                if !g.woken {
                    g = match shared.wake.wait_timeout(g, self.wait) {
                        Ok((g, _)) => g,
                        Err(_) => return,
                    };
                }
                g.woken = false;
                std::mem::take(&mut *g)
            };
            for c in inbox.watch {
                self.add(c, shared);
            }
            // Acks first: they may be for batches of the link that just ended.
            for a in inbox.acks {
                self.on_ack(a, shared);
            }
            if let Some(link) = inbox.link {
                self.link = link;
                for s in self.shippers.values_mut() {
                    s.rewind();
                }
            }
            let closed = shared.closed.lock().map(|c| c.clone()).unwrap_or_default();
            let mut gone = Vec::new();
            let mut settled = Vec::new();
            let mut busy = false;
            let mut holding = false;
            for (k, s) in self.shippers.iter_mut() {
                if !s.paths.dir().is_some_and(|d| d.exists()) {
                    gone.push(k.clone());
                    continue;
                }
                let c = [
                    closed.contains(&(k.clone(), Stream::Stdout)),
                    closed.contains(&(k.clone(), Stream::Stderr)),
                ];
                let before = s.reader.cursor().next_sequence;
                s.pump(c, self.link.as_ref(), shared);
                // Progress: there may be more at once (a pass takes one batch).
                busy |= s.reader.cursor().next_sequence != before;
                holding |= s.reader.holding();
                if s.delivered(c) {
                    settled.push(k.clone());
                }
            }
            if !settled.is_empty() || !gone.is_empty() {
                if let Ok(mut p) = shared.pending.lock() {
                    for k in settled.iter().chain(gone.iter()) {
                        p.remove(k);
                    }
                }
                shared.settled.notify_waiters();
            }
            if busy {
                if let Ok(mut i) = shared.inbox.lock() {
                    i.woken = true;
                }
            }
            // Events held back by the clock (read in this millisecond) go on the next pass.
            self.wait = if holding {
                Duration::from_millis(HOLD_WAIT_MS)
            } else {
                Duration::from_millis(IDLE_WAIT_MS)
            };
            for k in gone {
                self.shippers.remove(&k);
                if let Ok(mut l) = shared.limits.lock() {
                    l.retain(|(p, _), _| *p != k);
                }
                shared.room.notify_all();
                if let Ok(mut c) = shared.closed.lock() {
                    c.retain(|(p, _)| *p != k);
                }
            }
        }
    }

    fn add(&mut self, c: ContainerLog, shared: &Shared) {
        let paths = ContainerLogPaths::new(&c.log_path);
        if self.shippers.contains_key(&paths) {
            return;
        }
        // Whatever returns early here delivers nothing: it holds no cleanup.
        let unpend = |paths: &ContainerLogPaths| {
            if let Ok(mut p) = shared.pending.lock() {
                p.remove(paths);
            }
            shared.settled.notify_waiters();
        };
        let driver = match config::parse(c.log_configuration.as_ref()) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(task = %c.task_arn, container = %c.container_name, error = %e, "output kept in the spool only");
                unpend(&paths);
                return;
            }
        };
        let task_id = crate::engine::task_id(&c.task_arn);
        let target = match &driver {
            Driver::Local => return,
            Driver::None => Target::None,
            Driver::Awslogs(a) => Target::Awslogs {
                group: a.group.clone(),
                stream: a.stream_name(&c.container_name, &task_id, &c.runtime_id),
                create_group: a.create_group,
                in_flight: VecDeque::new(),
                failed: false,
                announced: false,
                retry_at: None,
            },
            Driver::JsonFile(j) => {
                Target::Local(Box::new(super::json_file::JsonFile::new(&paths, j.clone())))
            }
            Driver::Syslog(s) => Target::Local(Box::new(super::syslog::Syslog::new(
                s.clone(),
                &c.runtime_id,
            ))),
        };
        let cursor_file = paths.cursor();
        let acked = match super::stream::Cursor::load(&cursor_file) {
            Ok(c) => c.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "unreadable log cursor: the stream starts again from the spool's start");
                Cursor::default()
            }
        };
        let start = match &driver {
            Driver::Awslogs(a) => config::event_start(a).unwrap_or_else(|e| {
                tracing::error!(error = %e, "lines not joined");
                None
            }),
            _ => None,
        };
        if let Some(dir) = paths.dir() {
            // Watched before its first start: the capture makes the same directory.
            let _ = std::fs::create_dir_all(dir);
        }
        let mut watch_file = c.log_path.clone().into_os_string();
        watch_file.push(WATCH_SUFFIX);
        if let Err(e) = serde_json::to_vec(&c)
            .map_err(std::io::Error::other)
            .and_then(|b| std::fs::write(&watch_file, b))
        {
            tracing::warn!(task = %c.task_arn, container = %c.container_name, error = %e, "cannot keep the container's log settings; a restarted agent will not resume its delivery once the task stopped");
        }
        // CloudWatch has no empty events: Docker's awslogs driver sends none for an empty line.
        let skip_empty = matches!(driver, Driver::Awslogs(_));
        let reader = match StreamReader::open(&paths, acked.clone()) {
            Ok(r) => r.with_event_start(start).with_skip_empty(skip_empty),
            Err(e) => {
                tracing::error!(error = %e, "cannot read the spool; its output is not held back");
                unpend(&paths);
                if let Ok(mut l) = shared.limits.lock() {
                    l.retain(|(p, _), _| *p != paths);
                }
                shared.room.notify_all();
                return;
            }
        };
        let delivery = c
            .log_configuration
            .as_ref()
            .and_then(|l| config::delivery_of(l).ok());
        let blocking = delivery.is_some_and(|d| d.mode == Mode::Blocking);
        // Docker's max-buffer-size bounds what waits undelivered; the task's share of the
        // spool bound applies in any case.
        let share = (shared.spool_max / c.task_containers.max(1) as u64).max(1);
        let bound = delivery
            .and_then(|d| d.max_buffer_size)
            .map_or(share, |m| m.min(share));
        tracing::info!(task = %c.task_arn, container = %c.container_name, driver = ?driver_name(&driver), next = acked.next_sequence, "delivering container output");
        self.shippers.insert(
            paths.clone(),
            Shipper {
                log: c,
                paths,
                reader,
                acked,
                cursor_file,
                punched: [0, 0],
                target,
                bound,
                blocking,
            },
        );
    }

    fn on_ack(&mut self, a: LogAck, shared: &Shared) {
        let Some(s) = self.shippers.values_mut().find(|s| {
            matches!(&s.target, Target::Awslogs { group, stream, .. }
                if *group == a.log_group_name && *stream == a.log_stream_name)
        }) else {
            return;
        };
        let mut newly_acked = None;
        if let Target::Awslogs {
            in_flight,
            failed,
            announced,
            retry_at,
            ..
        } = &mut s.target
        {
            if !a.error.is_empty() && !is_permanent(&a.error) {
                // The controller could not store them now (its store failed): nothing of the
                // batches in flight counts; they are sent again from the acknowledged cursor.
                if !in_flight.is_empty() || *announced {
                    tracing::warn!(task = %s.log.task_arn, container = %s.log.container_name, error = %a.error, "the controller could not store log events; sending them again");
                }
                in_flight.clear();
                *announced = false;
                *retry_at = Some(std::time::Instant::now() + RETRY_AFTER);
                let acked = s.acked.clone();
                s.reader.rewind(acked);
                return;
            }
            if !a.error.is_empty() {
                if !*failed {
                    *failed = true;
                    in_flight.clear();
                    let reason = format!(
                        "CannotStartContainerError: failed to initialize logging driver for container {}: {}",
                        s.log.container_name, a.error
                    );
                    tracing::error!(task = %s.log.task_arn, %reason, "the log destination refused the container's events: stopping the task");
                    let stopper = shared.stopper.lock().ok().and_then(|g| g.clone());
                    if let Some(stop) = stopper {
                        stop(&s.log.task_arn, reason);
                    }
                }
                return;
            }
            while in_flight
                .front()
                .is_some_and(|(last, _)| *last <= a.stored_through)
            {
                newly_acked = in_flight.pop_front().map(|(_, c)| c);
            }
        }
        if let Some(c) = newly_acked {
            s.set_acked(c);
        }
    }
}

/// How long the delivery waits before sending again after the controller's store failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Whether a LogAck's error stops the task: the group does not exist (and is not to be made) or
/// the names are refused. Anything else (ServiceUnavailableException: the store failed) may
/// pass, and the events are sent again.
fn is_permanent(error: &str) -> bool {
    ["ResourceNotFoundException", "InvalidParameterException"]
        .iter()
        .any(|e| error.starts_with(e))
}

fn driver_name(d: &Driver) -> &'static str {
    match d {
        Driver::Local => "local",
        Driver::None => "none",
        Driver::Awslogs(_) => "awslogs",
        Driver::JsonFile(_) => "json-file",
        Driver::Syslog(_) => "syslog",
    }
}

impl Shipper {
    /// Whether all the container's output is delivered (or its destination refused it for
    /// good): both streams ended and everything read was acknowledged.
    fn delivered(&mut self, closed: [bool; 2]) -> bool {
        if let Target::Awslogs { failed: true, .. } = self.target {
            return true;
        }
        let in_flight =
            matches!(&self.target, Target::Awslogs { in_flight, .. } if !in_flight.is_empty());
        closed[0]
            && closed[1]
            && !in_flight
            && !self.reader.holding()
            && self.reader.cursor().marker.is_none()
            && *self.reader.cursor() == self.acked
            && self.reader.backlog().is_ok_and(|b| b == 0)
    }

    fn rewind(&mut self) {
        if let Target::Awslogs {
            in_flight,
            announced,
            ..
        } = &mut self.target
        {
            in_flight.clear();
            *announced = false;
            self.reader.rewind(self.acked.clone());
        }
    }

    fn set_acked(&mut self, c: Cursor) {
        self.acked = c;
        if let Err(e) = self.acked.save(&self.cursor_file) {
            tracing::warn!(error = %e, "cannot persist the log cursor (events may be sent again)");
        }
        self.punch();
    }

    /// Releases the disk blocks of what the destination has.
    fn punch(&mut self) {
        for (i, (s, upto)) in [
            (Stream::Stdout, self.acked.stdout.offset),
            (Stream::Stderr, self.acked.stderr.offset),
        ]
        .into_iter()
        .enumerate()
        {
            let upto = upto & !4095;
            if upto < self.punched[i] + PUNCH_RUN {
                continue;
            }
            let path = self.paths.spool(s);
            let done = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .and_then(|f| {
                    nix::fcntl::fallocate(
                        &f,
                        nix::fcntl::FallocateFlags::FALLOC_FL_PUNCH_HOLE
                            | nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE,
                        0,
                        upto as i64,
                    )
                    .map_err(std::io::Error::from)
                });
            match done {
                Ok(()) => self.punched[i] = upto,
                Err(e) => {
                    tracing::debug!(spool = %path.display(), error = %e, "cannot release delivered spool bytes")
                }
            }
        }
    }

    fn pump(
        &mut self,
        closed: [bool; 2],
        link: Option<&mpsc::Sender<AgentMessage>>,
        shared: &Shared,
    ) {
        let now = super::now_ms();
        let blocking = self.blocking;
        let idle = match &mut self.target {
            Target::Awslogs {
                in_flight,
                failed,
                retry_at,
                ..
            } => {
                if *failed {
                    return;
                }
                if retry_at.is_some_and(|t| std::time::Instant::now() < t) {
                    return;
                }
                *retry_at = None;
                in_flight.is_empty()
            }
            _ => true,
        };
        if blocking {
            // Each stream may hold half the bound undelivered.
            let half = (self.bound / 2).max(1);
            if let Ok(mut l) = shared.limits.lock() {
                for (s, acked) in [
                    (Stream::Stdout, self.acked.stdout.offset),
                    (Stream::Stderr, self.acked.stderr.offset),
                ] {
                    l.insert((self.paths.clone(), s), Some(acked + half));
                }
            }
            shared.room.notify_all();
        } else if idle {
            // Dropped only with nothing in flight: the drop then moves the acknowledged cursor
            // itself (persisted with its marker) and the disk is released.
            match self.reader.drop_over(self.bound, now) {
                Ok(0) => {}
                Ok(n) => {
                    shared.dropped.fetch_add(n, Ordering::Relaxed);
                    tracing::warn!(
                        task = %self.log.task_arn,
                        container = %self.log.container_name,
                        dropped = n,
                        dropped_total = shared.dropped.load(Ordering::Relaxed),
                        bound = self.bound,
                        "log spool over its bound: the oldest undelivered events were dropped"
                    );
                    let c = self.reader.cursor().clone();
                    self.set_acked(c);
                }
                Err(e) => tracing::warn!(error = %e, "cannot apply the spool bound"),
            }
        } else if self.reader.backlog().is_ok_and(|b| b > self.bound) {
            // Batches in flight and the unsent backlog past the bound (a destination slower
            // than the container): nothing more is sent until what is in flight is
            // acknowledged, and then the drop above applies, so the spool stays bounded however
            // slowly the acks come.
            return;
        }
        match &mut self.target {
            Target::Awslogs {
                group,
                stream,
                create_group,
                in_flight,
                announced,
                ..
            } => {
                let Some(tx) = link else { return };
                if !*announced {
                    // As Docker's awslogs driver makes the stream when the container starts:
                    // an empty batch makes it (with its group when awslogs-create-group), or
                    // is answered that the group does not exist, which stops the task even if
                    // the container never writes.
                    let probe = LogBatch {
                        log_group_name: group.clone(),
                        log_stream_name: stream.clone(),
                        create_group: *create_group,
                        task_arn: self.log.task_arn.clone(),
                        container_name: self.log.container_name.clone(),
                        first_sequence: 0,
                        events: Vec::new(),
                    };
                    let m = AgentMessage {
                        message: Some(ToController::LogBatch(probe)),
                    };
                    if tx.try_send(m).is_err() {
                        return;
                    }
                    *announced = true;
                    in_flight.push_back((0, self.reader.cursor().clone()));
                }
                while in_flight.len() < WINDOW {
                    let before = self.reader.cursor().clone();
                    let events = match take_batch(&mut self.reader, closed, now) {
                        Ok(e) => e,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot read the spool");
                            return;
                        }
                    };
                    let Some(last) = events.last().map(|e| e.sequence) else {
                        break;
                    };
                    let first = events[0].sequence;
                    let batch = LogBatch {
                        log_group_name: group.clone(),
                        log_stream_name: stream.clone(),
                        create_group: *create_group,
                        task_arn: self.log.task_arn.clone(),
                        container_name: self.log.container_name.clone(),
                        first_sequence: first,
                        events: events
                            .into_iter()
                            .map(|e| LogEvent {
                                timestamp: e.timestamp_ms as i64,
                                message: e.message,
                            })
                            .collect(),
                    };
                    let m = AgentMessage {
                        message: Some(ToController::LogBatch(batch)),
                    };
                    match tx.try_send(m) {
                        Ok(()) => in_flight.push_back((last, self.reader.cursor().clone())),
                        Err(_) => {
                            // The link's outbox is full (or gone): the same events go later.
                            self.reader.rewind(before);
                            break;
                        }
                    }
                }
            }
            Target::Local(sink) => {
                let before = self.reader.cursor().clone();
                let events = match take_batch(&mut self.reader, closed, now) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot read the spool");
                        return;
                    }
                };
                if events.is_empty() {
                    return;
                }
                match sink.deliver(&events) {
                    Ok(()) => {
                        let c = self.reader.cursor().clone();
                        self.set_acked(c);
                    }
                    Err(e) => {
                        tracing::warn!(task = %self.log.task_arn, container = %self.log.container_name, error = %e, "log delivery failed; retrying");
                        self.reader.rewind(before);
                    }
                }
            }
            Target::None => {
                // Nothing kept: every whole event is released as it is read.
                while let Ok(Some(_)) = self.reader.next(closed, now) {}
                let c = self.reader.cursor().clone();
                if c != self.acked {
                    self.set_acked(c);
                }
            }
        }
    }
}

/// The next batch of events (within CloudWatch's bounds).
fn take_batch(
    r: &mut StreamReader,
    closed: [bool; 2],
    now: u64,
) -> Result<Vec<NumberedEvent>, super::LogsError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while out.len() < BATCH_EVENTS && bytes < BATCH_BYTES - 16 * 1024 - EVENT_OVERHEAD {
        match r.next(closed, now)? {
            Some(e) => {
                bytes += e.message.len() + EVENT_OVERHEAD;
                out.push(e);
            }
            None => break,
        }
    }
    Ok(out)
}
