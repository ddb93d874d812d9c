//! Moving a container's output from its FIFOs to its spool files.
//!
//! Before containerd creates the task, [`Capture::prepare`] makes a FIFO per stream, opens its
//! read end (non-blocking, so no writer is needed yet) and enlarges its pipe (F_SETPIPE_SZ).
//! containerd's runc shim opens each FIFO for writing *and* for reading and holds both for the
//! process's life: its reader keeps the container's writes from ever failing with EPIPE while
//! no agent reads, and the pipe's bytes live as long as the shim does. [`Capture::attach`]
//! starts one thread per stream that splices from the FIFO into the spool (a blocking splice:
//! it waits in the kernel for bytes and returns 0 when the shim closes its end, i.e. the
//! container's output ended) and appends an index record after each splice
//! ([`super::spool`]). A restarted agent calls [`Capture::reattach`] for the containers it
//! recovers: the same FIFOs, opened again, continue where the spool ends.

use super::spool::IndexWriter;
use super::{io_err, ContainerLogPaths, LogsError, Stream};
use nix::fcntl::{fcntl, FcntlArg, OFlag, SpliceFFlags};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// The pipe size used when /proc/sys/fs/pipe-max-size cannot be read.
const FALLBACK_PIPE_SIZE: usize = 1 << 20;

/// A container's FIFOs, made and opened for reading, before its task exists.
#[derive(Debug)]
pub struct Prepared {
    paths: ContainerLogPaths,
    fifos: Vec<(Stream, OwnedFd)>,
}

impl Prepared {
    /// The FIFO path to give containerd for `s` (empty for stderr with a terminal).
    pub fn stdio(&self, s: Stream) -> String {
        if self.fifos.iter().any(|(x, _)| *x == s) {
            self.paths.fifo(s).display().to_string()
        } else {
            String::new()
        }
    }
}

/// What a copy thread tells the rest of the agent.
pub trait CaptureEvents: Send + Sync + 'static {
    /// A copy of `paths`' stream `s` starts (a new process, or an agent restarted): the
    /// stream is open again.
    fn opened(&self, paths: &ContainerLogPaths, s: Stream) {
        let _ = (paths, s);
    }
    /// New bytes are in the spool of `paths`' stream `s`.
    fn spooled(&self, paths: &ContainerLogPaths, s: Stream);
    /// The stream ended (its writer closed): everything it wrote is in the spool.
    fn closed(&self, paths: &ContainerLogPaths, s: Stream);
}

/// Nobody listens.
#[derive(Debug, Default)]
pub struct NoEvents;
impl CaptureEvents for NoEvents {
    fn spooled(&self, _: &ContainerLogPaths, _: Stream) {}
    fn closed(&self, _: &ContainerLogPaths, _: Stream) {}
}

/// How far a copy thread may fill a spool now (awslogs `mode: blocking` stops draining the
/// container's pipe while its undelivered output is at its bound).
pub trait Gate: Send + Sync + 'static {
    /// How many more bytes the copy of `paths`' stream `s`, now at spool offset `offset`, may
    /// move; blocks while it is none.
    fn room(&self, paths: &ContainerLogPaths, s: Stream, offset: u64) -> usize;
}

/// Never holds back.
#[derive(Debug, Default)]
pub struct Open;
impl Gate for Open {
    fn room(&self, _: &ContainerLogPaths, _: Stream, _: u64) -> usize {
        usize::MAX
    }
}

/// The capture of every container's output on this host.
pub struct Capture {
    pipe_size: usize,
    events: Arc<dyn CaptureEvents>,
    gate: Arc<dyn Gate>,
    /// The copy thread of each spool (the last started), so that a restarted process's
    /// thread starts after the previous one has drained.
    threads: Mutex<HashMap<std::path::PathBuf, JoinHandle<()>>>,
}

impl std::fmt::Debug for Capture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Capture")
            .field("pipe_size", &self.pipe_size)
            .finish()
    }
}

/// The largest pipe an unprivileged pipe may be given (/proc/sys/fs/pipe-max-size).
pub fn pipe_max_size() -> usize {
    std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(FALLBACK_PIPE_SIZE)
}

impl Capture {
    /// Captures with pipes of `pipe_size` bytes (`None`: /proc/sys/fs/pipe-max-size).
    pub fn new(pipe_size: Option<usize>) -> Self {
        Self {
            pipe_size: pipe_size.unwrap_or_else(pipe_max_size),
            events: Arc::new(NoEvents),
            gate: Arc::new(Open),
            threads: Mutex::new(HashMap::new()),
        }
    }

    /// Tells `events` of new bytes and ended streams, and asks `gate` before each splice.
    pub fn with_listeners(mut self, events: Arc<dyn CaptureEvents>, gate: Arc<dyn Gate>) -> Self {
        self.events = events;
        self.gate = gate;
        self
    }

    /// The size pipes are given.
    pub fn pipe_size(&self) -> usize {
        self.pipe_size
    }

    /// Makes the container's FIFOs (stdout; stderr too without a terminal, whose console
    /// the shim copies to stdout), opens their read ends and enlarges their pipes.
    pub fn prepare(&self, log_path: &Path, terminal: bool) -> Result<Prepared, LogsError> {
        let paths = ContainerLogPaths::new(log_path);
        if let Some(dir) = paths.dir() {
            std::fs::create_dir_all(dir).map_err(|e| io_err(dir, "create log dir", e))?;
        }
        let streams: &[Stream] = if terminal {
            &[Stream::Stdout]
        } else {
            &[Stream::Stdout, Stream::Stderr]
        };
        let mut fifos = Vec::new();
        for &s in streams {
            let path = paths.fifo(s);
            match nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
                Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                Err(e) => return Err(io_err(&path, "mkfifo", e)),
            }
            fifos.push((s, self.open_fifo(&path)?));
        }
        Ok(Prepared { paths, fifos })
    }

    fn open_fifo(&self, path: &Path) -> Result<OwnedFd, LogsError> {
        // Non-blocking: opening a FIFO's read end does not wait for a writer then.
        let fd = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| io_err(path, "open fifo", e))?;
        let size = i32::try_from(self.pipe_size).unwrap_or(i32::MAX);
        if let Err(e) = fcntl(&fd, FcntlArg::F_SETPIPE_SZ(size)) {
            // A smaller pipe still works; the container blocks sooner while no agent reads.
            tracing::warn!(fifo = %path.display(), size, error = %e, "cannot enlarge the pipe");
        }
        Ok(fd)
    }

    /// Starts moving the prepared streams into their spools (once the task exists: the shim
    /// has opened its write ends).
    pub fn attach(&self, p: Prepared) {
        for (s, fd) in p.fifos {
            self.spawn(p.paths.clone(), s, fd);
        }
    }

    /// For a container recovered after the agent restarted: opens its FIFOs again and
    /// continues each spool from its end. A stream already being copied is left alone.
    pub fn reattach(&self, log_path: &Path) -> Result<(), LogsError> {
        let paths = ContainerLogPaths::new(log_path);
        for s in [Stream::Stdout, Stream::Stderr] {
            let fifo = paths.fifo(s);
            if !fifo.exists() {
                continue;
            }
            let running = self
                .threads
                .lock()
                .map(|t| t.get(&paths.spool(s)).is_some_and(|h| !h.is_finished()))
                .unwrap_or(false);
            if running {
                continue;
            }
            let fd = self.open_fifo(&fifo)?;
            self.spawn(paths.clone(), s, fd);
        }
        Ok(())
    }

    fn spawn(&self, paths: ContainerLogPaths, s: Stream, fd: OwnedFd) {
        let key = paths.spool(s);
        let Ok(mut threads) = self.threads.lock() else {
            return;
        };
        let previous = threads.remove(&key);
        // Ended copies of other containers are forgotten (their threads are gone).
        threads.retain(|_, h| !h.is_finished());
        let (events, gate, chunk) = (self.events.clone(), self.gate.clone(), self.pipe_size);
        let name = format!(
            "log-{}",
            key.file_name().unwrap_or_default().to_string_lossy()
        );
        let thread_paths = paths.clone();
        let spawned = std::thread::Builder::new().name(name).spawn(move || {
            if let Some(p) = previous {
                let _ = p.join();
            }
            let paths = thread_paths;
            // After the previous copy's end: its `closed` comes before this `opened`.
            events.opened(&paths, s);
            match copy(&paths, s, fd, chunk, &*events, &*gate) {
                Ok(bytes) => {
                    tracing::debug!(spool = %paths.spool(s).display(), bytes, "stream ended")
                }
                Err(e) => tracing::error!(error = %e, "log capture stopped"),
            }
            events.closed(&paths, s);
        });
        match spawned {
            Ok(h) => {
                threads.insert(key, h);
            }
            Err(e) => {
                tracing::error!(spool = %key.display(), error = %e, "cannot start log capture")
            }
        }
    }

    /// Waits for the copy threads of a container's streams to end (its process is gone and
    /// they drained). For tests and cleanup.
    pub fn join(&self, log_path: &Path) {
        let paths = ContainerLogPaths::new(log_path);
        for s in [Stream::Stdout, Stream::Stderr] {
            let h = self
                .threads
                .lock()
                .ok()
                .and_then(|mut t| t.remove(&paths.spool(s)));
            if let Some(h) = h {
                let _ = h.join();
            }
        }
    }
}

/// Splices from the FIFO into the spool until the writer closes; returns the bytes moved.
fn copy(
    paths: &ContainerLogPaths,
    s: Stream,
    fifo: OwnedFd,
    chunk: usize,
    events: &dyn CaptureEvents,
    gate: &dyn Gate,
) -> Result<u64, LogsError> {
    let spool_path = paths.spool(s);
    // Not O_APPEND: splice refuses an append-mode target. Written at its end by offset.
    let spool = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&spool_path)
        .map_err(|e| io_err(&spool_path, "open spool", e))?;
    let mut offset = spool
        .metadata()
        .map_err(|e| io_err(&spool_path, "stat spool", e))?
        .len();
    let index_path = paths.index(s);
    let mut index = IndexWriter::open(&index_path, offset)?;
    // Blocking from here on: a splice waits in the kernel for bytes.
    let fifo_path = paths.fifo(s);
    let flags = fcntl(&fifo, FcntlArg::F_GETFL).map_err(|e| io_err(&fifo_path, "fcntl", e))?;
    let flags = OFlag::from_bits_truncate(flags) & !OFlag::O_NONBLOCK;
    fcntl(&fifo, FcntlArg::F_SETFL(flags)).map_err(|e| io_err(&fifo_path, "fcntl", e))?;
    let start = offset;
    loop {
        let room = gate.room(paths, s, offset);
        let mut off = offset as nix::libc::loff_t;
        match nix::fcntl::splice(
            fifo.as_fd(),
            None,
            spool.as_fd(),
            Some(&mut off),
            chunk.min(room),
            SpliceFFlags::SPLICE_F_MOVE,
        ) {
            Ok(0) => return Ok(offset - start),
            Ok(n) => {
                offset += n as u64;
                index.append(offset)?;
                events.spooled(paths, s);
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => {}
            Err(e) => return Err(io_err(&spool_path, "splice", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn bytes_written_to_the_fifo_reach_the_spool_in_order_and_indexed() {
        let dir = std::env::temp_dir().join(format!("berth-cap-{}", uuid::Uuid::new_v4().simple()));
        let log = dir.join("main.log");
        let c = Capture::new(Some(1 << 16));
        let p = c.prepare(&log, false).unwrap();
        let paths = ContainerLogPaths::new(&log);
        // The shim's side: a writer on each FIFO.
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .open(paths.fifo(Stream::Stdout))
            .unwrap();
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(paths.fifo(Stream::Stderr))
            .unwrap();
        c.attach(p);
        let mut want = Vec::new();
        for i in 0..20_000 {
            let l = format!("line {i}\n");
            out.write_all(l.as_bytes()).unwrap();
            want.extend_from_slice(l.as_bytes());
        }
        drop(out);
        drop(err);
        c.join(&log);
        assert_eq!(
            super::super::spool::read_all(&paths.spool(Stream::Stdout)).unwrap(),
            want
        );
        assert_eq!(
            super::super::spool::read_all(&paths.spool(Stream::Stderr)).unwrap(),
            b""
        );
        let mut r = super::super::spool::EventReader::open(
            &paths.spool(Stream::Stdout),
            &paths.index(Stream::Stdout),
            Default::default(),
        )
        .unwrap();
        let mut n = 0;
        while let Some(e) = r.next_event(true).unwrap() {
            assert_eq!(e.message, format!("line {n}").as_bytes());
            n += 1;
        }
        assert_eq!(n, 20_000);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
