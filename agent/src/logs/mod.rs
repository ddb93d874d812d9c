//! Container output (issue 10). [`capture`] moves each container's stdout and stderr from the
//! FIFOs containerd's shim writes into per-stream spool files with splice(2) (no copy through
//! the agent, nothing held in memory: a byte is either in the pipe or in the spool, so a kill
//! -9 of the agent loses none); [`spool`] keeps beside each spool an index of when its bytes
//! were read and turns the spool into events (lines, lines over 16 KiB in parts), numbered per
//! destination stream with a cursor that survives restarts. See docs/ARCHITECTURE.md, "Logs
//! capture".

pub mod capture;
pub use berth_proto::log_config as config;
pub mod json_file;
pub mod service;
pub mod spool;
pub mod stream;
pub mod syslog;

use std::path::{Path, PathBuf};

/// One of a container's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stream {
    /// Its stdout (with a terminal: everything it writes).
    Stdout,
    /// Its stderr.
    Stderr,
}

impl Stream {
    /// `stdout` / `stderr`, as Docker's json-file names them.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Where one container's output lives, derived from its log path
/// (`logs/<task>/<container>.log`): `<container>.stdout.fifo` (the pipe the shim writes),
/// `<container>.stdout.log` (the spool: the bytes, as written), `<container>.stdout.idx` (when
/// they were read), and the same for stderr.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ContainerLogPaths {
    base: PathBuf,
}

impl ContainerLogPaths {
    /// The paths of the container whose log path (as the engine names it) is `log_path`.
    pub fn new(log_path: &Path) -> Self {
        Self {
            base: log_path.with_extension(""),
        }
    }

    fn with(&self, ext: String) -> PathBuf {
        self.base.with_extension(ext)
    }

    /// The FIFO the shim writes the stream into.
    pub fn fifo(&self, s: Stream) -> PathBuf {
        self.with(format!("{}.fifo", s.as_str()))
    }

    /// The spool file: the stream's bytes, as the container wrote them.
    pub fn spool(&self, s: Stream) -> PathBuf {
        self.with(format!("{}.log", s.as_str()))
    }

    /// The spool's index: when each run of its bytes was read ([`spool::IndexRecord`]).
    pub fn index(&self, s: Stream) -> PathBuf {
        self.with(format!("{}.idx", s.as_str()))
    }

    /// The delivery cursor of its log driver ([`stream::Cursor`]).
    pub fn cursor(&self) -> PathBuf {
        self.with("cursor.json".into())
    }

    /// The json-file driver's log (Docker's `<id>-json.log`).
    pub fn json_log(&self) -> PathBuf {
        let mut p = self.base.clone().into_os_string();
        p.push("-json.log");
        p.into()
    }

    /// The directory all of them are in.
    pub fn dir(&self) -> Option<&Path> {
        self.base.parent()
    }
}

/// A failure of log capture or of reading a spool, naming the file.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// A file or kernel operation on `path` failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The file (FIFO, spool, index).
        path: String,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

pub(crate) fn io_err(
    path: &Path,
    op: &'static str,
    source: impl Into<std::io::Error>,
) -> LogsError {
    LogsError::Io {
        path: path.display().to_string(),
        op,
        source: source.into(),
    }
}

/// Milliseconds since the Unix epoch now.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_sit_beside_the_log_path() {
        let p = ContainerLogPaths::new(Path::new("/d/logs/t1/main.log"));
        assert_eq!(
            p.fifo(Stream::Stdout),
            Path::new("/d/logs/t1/main.stdout.fifo")
        );
        assert_eq!(
            p.spool(Stream::Stderr),
            Path::new("/d/logs/t1/main.stderr.log")
        );
        assert_eq!(
            p.index(Stream::Stdout),
            Path::new("/d/logs/t1/main.stdout.idx")
        );
    }
}
