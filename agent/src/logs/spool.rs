//! A stream's spool (its raw bytes, exactly as the container wrote them) and the spool's index:
//! fixed 16-byte records `(end offset, read time ms)`, little-endian, appended after each
//! splice, saying that the spool's bytes up to `end` were read at that time. The bytes stay
//! raw so that a splice moves them untouched and the spool is also the container's plain
//! output file; the index is what stamps events. A record is written after its splice: a kill
//! between the two leaves bytes past the last record, stamped with the time the next agent
//! reopens the spool (never lost, at worst stamped late). A torn record (a kill inside its
//! write) is cut off on reopening.
//!
//! [`EventReader`] turns a spool into events: split at newlines (the newline is not part of
//! the message), a line longer than [`MAX_EVENT`] bytes split into parts as Docker does, each
//! stamped with the read time of its last byte; only indexed bytes are read, so an event's
//! stamp never changes once read.

use super::{io_err, LogsError};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The size of one index record.
pub const RECORD: u64 = 16;
/// The longest event: a longer line is split into parts of this size (Docker's 16 KiB).
pub const MAX_EVENT: usize = 16 * 1024;
/// How much of a spool a reader reads at once.
const READ_AHEAD: u64 = 256 * 1024;

/// One index record: the spool's bytes up to `end` were read at `read_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexRecord {
    /// The spool offset just past the bytes read.
    pub end: u64,
    /// When they were read, ms since the Unix epoch.
    pub read_ms: u64,
}

impl IndexRecord {
    fn encode(&self) -> [u8; RECORD as usize] {
        let mut b = [0u8; RECORD as usize];
        b[..8].copy_from_slice(&self.end.to_le_bytes());
        b[8..].copy_from_slice(&self.read_ms.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Self {
        let mut end = [0u8; 8];
        let mut ms = [0u8; 8];
        end.copy_from_slice(&b[..8]);
        ms.copy_from_slice(&b[8..16]);
        Self {
            end: u64::from_le_bytes(end),
            read_ms: u64::from_le_bytes(ms),
        }
    }
}

/// Appends records to a spool's index (the capture side).
#[derive(Debug)]
pub struct IndexWriter {
    file: File,
    path: PathBuf,
    last: IndexRecord,
}

impl IndexWriter {
    /// Opens (or creates) the index of a spool now `spool_len` bytes long: cuts a torn last
    /// record and stamps bytes the index does not cover yet with now.
    pub fn open(path: &Path, spool_len: u64) -> Result<Self, LogsError> {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .read(true)
            .append(true)
            .open(path)
            .map_err(|e| io_err(path, "open index", e))?;
        let len = file
            .metadata()
            .map_err(|e| io_err(path, "stat index", e))?
            .len();
        let whole = len - len % RECORD;
        if whole != len {
            file.set_len(whole)
                .map_err(|e| io_err(path, "cut torn index record", e))?;
        }
        let mut last = IndexRecord { end: 0, read_ms: 0 };
        if whole >= RECORD {
            let mut b = [0u8; RECORD as usize];
            file.read_exact_at(&mut b, whole - RECORD)
                .map_err(|e| io_err(path, "read index", e))?;
            last = IndexRecord::decode(&b);
        }
        file.seek(SeekFrom::End(0))
            .map_err(|e| io_err(path, "seek index", e))?;
        let mut w = Self {
            file,
            path: path.to_path_buf(),
            last,
        };
        if spool_len > w.last.end {
            w.append(spool_len)?;
        }
        Ok(w)
    }

    /// Records that the spool's bytes up to `end` were read now (times never go backwards
    /// within one index).
    pub fn append(&mut self, end: u64) -> Result<(), LogsError> {
        let rec = IndexRecord {
            end,
            read_ms: super::now_ms().max(self.last.read_ms),
        };
        self.file
            .write_all(&rec.encode())
            .map_err(|e| io_err(&self.path, "append index", e))?;
        self.last = rec;
        Ok(())
    }

    /// The spool offset the index covers.
    pub fn covered(&self) -> u64 {
        self.last.end
    }
}

/// One event read from a spool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The spool offset of its first byte.
    pub start: u64,
    /// The spool offset just past it (past its newline, when it has one).
    pub end: u64,
    /// The read time of its last byte, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its bytes, without the newline.
    pub message: Vec<u8>,
    /// A part of a line longer than [`MAX_EVENT`] (not its last part).
    pub partial: bool,
}

/// Where an [`EventReader`] stands: a spool offset at an event boundary and the index record
/// position covering it. Persisted by the drivers as their cursor.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Position {
    /// Spool offset (the start of the next event).
    pub offset: u64,
    /// Byte offset in the index of the first record whose `end` is past `offset`, or of
    /// the record to read next.
    pub index_pos: u64,
}

/// Reads a spool's events in order from a [`Position`].
#[derive(Debug)]
pub struct EventReader {
    spool: File,
    spool_path: PathBuf,
    index: File,
    index_path: PathBuf,
    pos: Position,
    /// Index records read ahead of `pos` (`end` ascending).
    records: std::collections::VecDeque<IndexRecord>,
    /// Bytes of the spool read ahead: `buf[head..]` starts at `pos.offset`.
    buf: Vec<u8>,
    head: usize,
}

impl EventReader {
    /// Opens the spool and its index, reading from `pos`. A missing spool (its container never
    /// wrote) reads as empty once it appears.
    pub fn open(spool: &Path, index: &Path, pos: Position) -> Result<Self, LogsError> {
        let open = |p: &Path, op| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(|e| io_err(p, op, e))
        };
        Ok(Self {
            spool: open(spool, "open spool")?,
            spool_path: spool.to_path_buf(),
            index: open(index, "open index")?,
            index_path: index.to_path_buf(),
            pos,
            records: Default::default(),
            buf: Vec::new(),
            head: 0,
        })
    }

    /// Where the next event starts.
    pub fn position(&self) -> Position {
        self.pos
    }

    /// The spool offset the index covers now (what may be read).
    pub fn covered(&mut self) -> Result<u64, LogsError> {
        self.read_records()?;
        Ok(self
            .records
            .back()
            .map(|r| r.end)
            .unwrap_or(self.pos.offset)
            .max(self.pos.offset))
    }

    fn read_records(&mut self) -> Result<(), LogsError> {
        let len = self
            .index
            .metadata()
            .map_err(|e| io_err(&self.index_path, "stat index", e))?
            .len();
        let have = self.pos.index_pos + self.records.len() as u64 * RECORD;
        let whole = len - len % RECORD;
        if whole <= have {
            return Ok(());
        }
        let mut b = vec![0u8; (whole - have) as usize];
        self.index
            .read_exact_at(&mut b, have)
            .map_err(|e| io_err(&self.index_path, "read index", e))?;
        for c in b.chunks_exact(RECORD as usize) {
            self.records.push_back(IndexRecord::decode(c));
        }
        Ok(())
    }

    /// The read time of the spool byte at `offset` (which the index covers).
    fn stamp(&self, offset: u64) -> u64 {
        self.records
            .iter()
            .find(|r| r.end > offset)
            .or(self.records.back())
            .map(|r| r.read_ms)
            .unwrap_or(0)
    }

    /// Moves past an event ending at `end`: drops the records wholly before it.
    fn advance(&mut self, end: u64) {
        self.head += (end - self.pos.offset) as usize;
        self.pos.offset = end;
        while self.records.front().is_some_and(|r| r.end <= end) {
            self.records.pop_front();
            self.pos.index_pos += RECORD;
        }
    }

    /// The next event, when a whole one is indexed: a line (or a [`MAX_EVENT`] part of one).
    /// With `closed` (the stream ended: its container exited and the capture drained), a last
    /// line without a newline is an event too.
    pub fn next_event(&mut self, closed: bool) -> Result<Option<Event>, LogsError> {
        let covered = self.covered()?;
        let avail = ((covered - self.pos.offset) as usize).min(MAX_EVENT + 1);
        let buffered = self.buf.len() - self.head;
        if buffered < avail {
            // Read ahead in large runs; move what is left to the front first.
            self.buf.drain(..self.head);
            self.head = 0;
            let from = self.pos.offset + buffered as u64;
            let upto = covered
                .min(from + READ_AHEAD)
                .max(self.pos.offset + avail as u64);
            let mut more = vec![0u8; (upto - from) as usize];
            let n = read_at_most(&self.spool, &mut more, from)
                .map_err(|e| io_err(&self.spool_path, "read spool", e))?;
            more.truncate(n);
            self.buf.extend_from_slice(&more);
        }
        let avail = avail.min(self.buf.len() - self.head);
        let window = &self.buf[self.head..self.head + avail];
        let (len, used, partial) = match window.iter().position(|&b| b == b'\n') {
            Some(nl) => (nl, nl + 1, false),
            None if avail > MAX_EVENT => (MAX_EVENT, MAX_EVENT, true),
            None if closed && avail > 0 => (avail, avail, false),
            None => return Ok(None),
        };
        let start = self.pos.offset;
        let end = start + used as u64;
        let message = self.buf[self.head..self.head + len].to_vec();
        let timestamp_ms = self.stamp(end - 1);
        self.advance(end);
        Ok(Some(Event {
            start,
            end,
            timestamp_ms,
            message,
            partial,
        }))
    }

    /// Skips to `pos` (a position an earlier reader returned).
    pub fn seek(&mut self, pos: Position) {
        self.pos = pos;
        self.records.clear();
        self.buf.clear();
        self.head = 0;
    }
}

/// Reads up to `buf.len()` bytes at `offset` (fewer at the end of the file).
fn read_at_most(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Reads a whole spool file as text (what the container wrote to the stream).
pub fn read_all(path: &Path) -> Result<Vec<u8>, LogsError> {
    let mut out = Vec::new();
    match File::open(path) {
        Ok(mut f) => f
            .read_to_end(&mut out)
            .map_err(|e| io_err(path, "read spool", e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_err(path, "open spool", e)),
    };
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        let d = std::env::temp_dir().join(format!("berth-spool-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }

    /// Appends `bytes` to the spool and indexes them, as the capture does after a splice.
    fn write(d: &Path, bytes: &[u8]) {
        let spool = d.join("s.log");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spool)
            .unwrap();
        let before = f.metadata().unwrap().len();
        let mut w = IndexWriter::open(&d.join("s.idx"), before).unwrap();
        f.write_all(bytes).unwrap();
        w.append(before + bytes.len() as u64).unwrap();
    }

    fn all(r: &mut EventReader, closed: bool) -> Vec<Event> {
        let mut out = Vec::new();
        while let Some(e) = r.next_event(closed).unwrap() {
            out.push(e);
        }
        out
    }

    fn reader(d: &Path, pos: Position) -> EventReader {
        EventReader::open(&d.join("s.log"), &d.join("s.idx"), pos).unwrap()
    }

    #[test]
    fn lines_split_at_newlines_and_a_partial_line_waits_for_its_end() {
        let d = dir();
        write(&d.0, b"one\ntwo\nthr");
        let mut r = reader(&d.0, Position::default());
        let got = all(&mut r, false);
        assert_eq!(
            got.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        assert_eq!((got[1].start, got[1].end), (4, 8));
        write(&d.0, b"ee\n\nlast");
        let got = all(&mut r, false);
        assert_eq!(
            got.iter().map(|e| e.message.clone()).collect::<Vec<_>>(),
            vec![b"three".to_vec(), b"".to_vec()]
        );
        // The stream ended: its last line without a newline is an event too.
        let got = all(&mut r, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, b"last");
    }

    #[test]
    fn a_line_over_16_kib_is_split_into_parts_as_docker_does() {
        let d = dir();
        let mut line = vec![b'a'; MAX_EVENT];
        line.extend(vec![b'b'; MAX_EVENT]);
        line.extend(vec![b'c'; 10]);
        line.push(b'\n');
        line.extend(b"next\n");
        write(&d.0, &line);
        let mut r = reader(&d.0, Position::default());
        let got = all(&mut r, false);
        assert_eq!(got.len(), 4);
        assert!(got[0].partial && got[1].partial && !got[2].partial);
        assert_eq!(got[0].message, vec![b'a'; MAX_EVENT]);
        assert_eq!(got[1].message, vec![b'b'; MAX_EVENT]);
        assert_eq!(got[2].message, vec![b'c'; 10]);
        assert_eq!(got[3].message, b"next");
        // A line of exactly 16 KiB is one event.
        let d = dir();
        let mut line = vec![b'x'; MAX_EVENT];
        line.push(b'\n');
        write(&d.0, &line);
        let got = all(&mut reader(&d.0, Position::default()), false);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message.len(), MAX_EVENT);
    }

    #[test]
    fn only_indexed_bytes_are_read_and_a_reopened_index_stamps_the_rest() {
        let d = dir();
        write(&d.0, b"a\n");
        // Bytes spliced but not indexed (the agent killed between the two).
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(d.0.join("s.log"))
            .unwrap();
        f.write_all(b"b\n").unwrap();
        let mut r = reader(&d.0, Position::default());
        assert_eq!(all(&mut r, true).len(), 1, "b is not indexed yet");
        // A torn record is cut; the next agent stamps the uncovered bytes.
        let mut idx = std::fs::OpenOptions::new()
            .append(true)
            .open(d.0.join("s.idx"))
            .unwrap();
        idx.write_all(&[1, 2, 3]).unwrap();
        let w = IndexWriter::open(&d.0.join("s.idx"), 4).unwrap();
        assert_eq!(w.covered(), 4);
        assert_eq!(
            std::fs::metadata(d.0.join("s.idx")).unwrap().len(),
            2 * RECORD
        );
        let got = all(&mut r, true);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].message, b"b");
    }

    #[test]
    fn a_reader_resumed_from_a_position_reads_the_same_events_with_the_same_stamps() {
        let d = dir();
        for i in 0..50 {
            write(&d.0, format!("line {i}\nmore {i}\n").as_bytes());
        }
        let mut r = reader(&d.0, Position::default());
        let first = all(&mut r, false);
        assert_eq!(first.len(), 100);
        let mut r2 = reader(&d.0, Position::default());
        let mut again = Vec::new();
        for _ in 0..37 {
            again.push(r2.next_event(false).unwrap().unwrap());
        }
        let pos = r2.position();
        let mut r3 = reader(&d.0, pos);
        again.extend(all(&mut r3, false));
        assert_eq!(first, again);
        assert!(first
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
    }
}
