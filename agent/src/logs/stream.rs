//! One destination stream of a container (an awslogs log stream): its stdout and stderr
//! events merged in read-time order and numbered 1, 2, 3..., from a [`Cursor`] the driver
//! persists once the destination has them. Reading again from a persisted cursor gives the
//! same events with the same numbers (events are read from indexed bytes only, and one
//! stream's event is taken before the other's only when the other cannot later produce an
//! earlier one), so a restarted agent resends exactly what was not yet acknowledged and the
//! destination deduplicates by number.
//!
//! The spool is bounded ([`StreamReader::drop_over`]): past the bound the oldest unsent events
//! are skipped, counted, and replaced by one marker event saying how many, which takes the next
//! number and is persisted in the cursor until delivered.

use super::spool::{Event, EventReader, Position};
use super::{io_err, ContainerLogPaths, LogsError, Stream};
use std::path::Path;

/// Where a destination stream stands; persisted as JSON.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cursor {
    /// The next stdout event.
    pub stdout: Position,
    /// The next stderr event.
    pub stderr: Position,
    /// The number the next event gets (the first is 1).
    pub next_sequence: u64,
    /// Events dropped past the bound, in all.
    #[serde(default)]
    pub dropped: u64,
    /// A drop marker not yet delivered: it comes before the next event.
    #[serde(default)]
    pub marker: Option<Marker>,
}

impl Default for Cursor {
    fn default() -> Self {
        Self {
            stdout: Position::default(),
            stderr: Position::default(),
            next_sequence: 1,
            dropped: 0,
            marker: None,
        }
    }
}

impl Cursor {
    /// Reads a persisted cursor (`None` when there is none yet).
    pub fn load(path: &Path) -> Result<Option<Self>, LogsError> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| io_err(path, "parse cursor", std::io::Error::other(e))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(path, "read cursor", e)),
        }
    }

    /// Persists the cursor (written aside and renamed: never torn).
    pub fn save(&self, path: &Path) -> Result<(), LogsError> {
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(self)
            .map_err(|e| io_err(path, "encode cursor", std::io::Error::other(e)))?;
        std::fs::write(&tmp, body).map_err(|e| io_err(&tmp, "write cursor", e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_err(path, "rename cursor", e))
    }
}

/// An event saying how many events were dropped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Marker {
    /// Its number in the stream.
    pub sequence: u64,
    /// How many events it stands for.
    pub count: u64,
    /// The read time of the last of them (so it sorts where they were).
    pub timestamp_ms: u64,
    /// The bound that was exceeded, in bytes.
    pub bound: u64,
}

impl Marker {
    /// The marker's text, as it appears in the stream.
    pub fn message(&self) -> String {
        format!(
            "[berth] {} log events dropped: the task's log spool exceeded its bound of {} bytes",
            self.count, self.bound
        )
    }
}

/// A numbered event of a destination stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedEvent {
    /// Its number (1, 2, 3...).
    pub sequence: u64,
    /// When it was read, ms since the Unix epoch.
    pub timestamp_ms: u64,
    /// Its text (invalid UTF-8 replaced).
    pub message: String,
    /// Which stream it came from; `None` for a drop marker.
    pub stream: Option<Stream>,
    /// A part of a line over 16 KiB, not its last.
    pub partial: bool,
}

/// How long a multiline event waits for more lines (Docker's awslogs flush interval): a line
/// read later than this after the previous one starts a new event, and an event whose last
/// line is older than this goes without waiting for the next.
pub const MULTILINE_FLUSH_MS: u64 = 5_000;
/// CloudWatch's largest event (256 KiB less its 26 bytes of overhead): a joined event ends
/// before it would grow past this.
pub const MAX_JOINED: usize = 262_144 - 26;

/// An event with the position just past it.
type Read = (Event, Position);

/// Reads a container's stdout and stderr spools as one numbered stream.
#[derive(Debug)]
pub struct StreamReader {
    readers: [EventReader; 2],
    /// The next event of each stream, with the position past it.
    peek: [Option<Read>; 2],
    /// awslogs-multiline-pattern / awslogs-datetime-format: a line matching it starts an
    /// event; the lines up to the next such line are joined into one.
    start: Option<regex::Regex>,
    /// A multiline event being gathered, and the read time of its last line.
    group: [Option<(Read, u64)>; 2],
    /// A line read past a gathered event (it starts the next).
    look: [Option<Read>; 2],
    /// Empty events are passed over (not numbered): awslogs, as Docker's driver sends none.
    skip_empty: bool,
    cursor: Cursor,
}

impl StreamReader {
    /// Reads the container's spools from `cursor`.
    pub fn open(paths: &ContainerLogPaths, cursor: Cursor) -> Result<Self, LogsError> {
        Ok(Self {
            readers: [
                EventReader::open(
                    &paths.spool(Stream::Stdout),
                    &paths.index(Stream::Stdout),
                    cursor.stdout,
                )?,
                EventReader::open(
                    &paths.spool(Stream::Stderr),
                    &paths.index(Stream::Stderr),
                    cursor.stderr,
                )?,
            ],
            peek: [None, None],
            start: None,
            group: [None, None],
            look: [None, None],
            skip_empty: false,
            cursor,
        })
    }

    /// Joins lines into events: a line matching `start` begins one (awslogs-multiline-pattern,
    /// awslogs-datetime-format).
    pub fn with_event_start(mut self, start: Option<regex::Regex>) -> Self {
        self.start = start;
        self
    }

    /// Passes over empty events (an empty line) without numbering them.
    pub fn with_skip_empty(mut self, skip: bool) -> Self {
        self.skip_empty = skip;
        self
    }

    /// Where the stream stands: just past the last event [`StreamReader::next`] returned.
    pub fn cursor(&self) -> &Cursor {
        &self.cursor
    }

    /// Reads again from `cursor` (after a reconnect: from what was acknowledged).
    pub fn rewind(&mut self, cursor: Cursor) {
        self.readers[0].seek(cursor.stdout);
        self.readers[1].seek(cursor.stderr);
        self.peek = [None, None];
        self.group = [None, None];
        self.look = [None, None];
        self.cursor = cursor;
    }

    fn read(&mut self, i: usize, closed: bool) -> Result<Option<Read>, LogsError> {
        if let Some(r) = self.look[i].take() {
            return Ok(Some(r));
        }
        let r = &mut self.readers[i];
        Ok(r.next_event(closed)?.map(|e| (e, r.position())))
    }

    fn fill_one(&mut self, i: usize, closed: bool, now_ms: u64) -> Result<(), LogsError> {
        if self.peek[i].is_some() {
            return Ok(());
        }
        let Some(start) = self.start.clone() else {
            self.peek[i] = self.read(i, closed)?;
            return Ok(());
        };
        // Multiline: where an event ends depends only on the lines and their read times
        // (never on when they are looked at), so it is the same when read again.
        loop {
            if self.group[i].is_none() {
                match self.read(i, closed)? {
                    Some(first) => {
                        let t = first.0.timestamp_ms;
                        self.group[i] = Some((first, t));
                    }
                    None => return Ok(()),
                }
            }
            let next = self.read(i, closed)?;
            let Some((g, last)) = self.group[i].as_mut() else {
                return Ok(());
            };
            match next {
                None => {
                    if closed || now_ms.saturating_sub(*last) > MULTILINE_FLUSH_MS {
                        self.peek[i] = self.group[i].take().map(|(g, _)| g);
                    }
                    return Ok(());
                }
                Some((line, pos)) => {
                    let starts = start.is_match(&String::from_utf8_lossy(&line.message))
                        || line.timestamp_ms.saturating_sub(*last) > MULTILINE_FLUSH_MS
                        || g.0.message.len() + 1 + line.message.len() > MAX_JOINED;
                    if starts {
                        self.look[i] = Some((line, pos));
                        self.peek[i] = self.group[i].take().map(|(g, _)| g);
                        return Ok(());
                    }
                    g.0.message.push(b'\n');
                    g.0.message.extend_from_slice(&line.message);
                    g.0.end = line.end;
                    g.0.partial = false;
                    g.1 = pos;
                    *last = line.timestamp_ms;
                }
            }
        }
    }

    fn fill(&mut self, closed: [bool; 2], now_ms: u64) -> Result<(), LogsError> {
        self.fill_one(0, closed[0], now_ms)?;
        self.fill_one(1, closed[1], now_ms)
    }

    /// Which stream's peeked event comes next, if one may be taken now: the earlier of two
    /// (stdout on a tie); a lone one only when the other stream is closed or the event was
    /// read before `now_ms` (the other stream's next event, not read yet, will be stamped
    /// `now_ms` or later).
    fn pick(&self, closed: [bool; 2], now_ms: u64) -> Option<usize> {
        match (&self.peek[0], &self.peek[1]) {
            (Some((a, _)), Some((b, _))) => Some(if a.timestamp_ms <= b.timestamp_ms {
                0
            } else {
                1
            }),
            (Some((a, _)), None) if closed[1] || a.timestamp_ms < now_ms => Some(0),
            (None, Some((b, _))) if closed[0] || b.timestamp_ms < now_ms => Some(1),
            _ => None,
        }
    }

    fn take(&mut self, i: usize) -> Option<Event> {
        let (e, pos) = self.peek[i].take()?;
        if i == 0 {
            self.cursor.stdout = pos;
        } else {
            self.cursor.stderr = pos;
        }
        Some(e)
    }

    /// The next event, if one may be taken now. `closed`: whether stdout and stderr ended
    /// (their capture drained after the process exited).
    pub fn next(
        &mut self,
        closed: [bool; 2],
        now_ms: u64,
    ) -> Result<Option<NumberedEvent>, LogsError> {
        if let Some(m) = self.cursor.marker.take() {
            self.cursor.next_sequence = self.cursor.next_sequence.max(m.sequence + 1);
            return Ok(Some(NumberedEvent {
                sequence: m.sequence,
                timestamp_ms: m.timestamp_ms,
                message: m.message(),
                stream: None,
                partial: false,
            }));
        }
        let (i, e) = loop {
            self.fill(closed, now_ms)?;
            let Some(i) = self.pick(closed, now_ms) else {
                return Ok(None);
            };
            let Some(e) = self.take(i) else {
                return Ok(None);
            };
            if !(self.skip_empty && e.message.is_empty()) {
                break (i, e);
            }
        };
        let sequence = self.cursor.next_sequence;
        self.cursor.next_sequence += 1;
        Ok(Some(NumberedEvent {
            sequence,
            timestamp_ms: e.timestamp_ms,
            message: String::from_utf8_lossy(&e.message).into_owned(),
            stream: Some(if i == 0 {
                Stream::Stdout
            } else {
                Stream::Stderr
            }),
            partial: e.partial,
        }))
    }

    /// Whether an event has been read but is held back (by the clock, or a multiline event
    /// waiting for its end): a later call may return it without new bytes.
    pub fn holding(&self) -> bool {
        self.peek.iter().any(Option::is_some) || self.group.iter().any(Option::is_some)
    }

    /// The spooled bytes not yet read past the cursor, in both streams.
    pub fn backlog(&mut self) -> Result<u64, LogsError> {
        let out = self.readers[0].covered()? - self.cursor.stdout.offset;
        let err = self.readers[1].covered()? - self.cursor.stderr.offset;
        Ok(out + err)
    }

    /// Past `bound` bytes of backlog, skips the oldest events until the backlog is at most
    /// three quarters of it, and puts a marker (numbered next) in their place, or adds them to
    /// the marker still waiting. Returns how many it skipped.
    pub fn drop_over(&mut self, bound: u64, now_ms: u64) -> Result<u64, LogsError> {
        if self.backlog()? <= bound {
            return Ok(0);
        }
        let target = bound / 4 * 3;
        let mut count = 0;
        // The marker takes the place of the dropped events, so it carries the time of the last
        // of them: it sorts before the events kept after the gap (its drop time would not).
        let mut last_ms = now_ms;
        while self.backlog()? > target {
            // Oldest first, by the same order `next` uses, without waiting for the clock.
            self.fill([false, false], now_ms)?;
            let i = match (&self.peek[0], &self.peek[1]) {
                (Some((a, _)), Some((b, _))) => {
                    if a.timestamp_ms <= b.timestamp_ms {
                        0
                    } else {
                        1
                    }
                }
                (Some(_), None) => 0,
                (None, Some(_)) => 1,
                (None, None) => break,
            };
            if let Some(e) = self.take(i) {
                count += 1;
                last_ms = e.timestamp_ms;
            }
        }
        if count > 0 {
            self.cursor.dropped += count;
            let marker = match self.cursor.marker.take() {
                Some(mut m) => {
                    m.count += count;
                    m.timestamp_ms = m.timestamp_ms.max(last_ms);
                    m
                }
                None => {
                    let m = Marker {
                        sequence: self.cursor.next_sequence,
                        count,
                        timestamp_ms: last_ms,
                        bound,
                    };
                    self.cursor.next_sequence += 1;
                    m
                }
            };
            self.cursor.marker = Some(marker);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::super::spool::IndexWriter;
    use super::*;
    use std::io::Write;
    use std::path::PathBuf;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> (Dir, ContainerLogPaths) {
        let d =
            std::env::temp_dir().join(format!("berth-stream-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&d).unwrap();
        let p = ContainerLogPaths::new(&d.join("main.log"));
        (Dir(d), p)
    }

    fn write(p: &ContainerLogPaths, s: Stream, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(p.spool(s))
            .unwrap();
        let before = f.metadata().unwrap().len();
        let mut w = IndexWriter::open(&p.index(s), before).unwrap();
        f.write_all(bytes).unwrap();
        w.append(before + bytes.len() as u64).unwrap();
    }

    const LATER: u64 = u64::MAX;

    fn drain(r: &mut StreamReader) -> Vec<NumberedEvent> {
        let mut out = Vec::new();
        while let Some(e) = r.next([false, false], LATER).unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn events_are_numbered_from_one_and_the_numbering_survives_a_reopen() {
        let (_d, p) = dir();
        for i in 0..10 {
            write(&p, Stream::Stdout, format!("out {i}\n").as_bytes());
            write(&p, Stream::Stderr, format!("err {i}\n").as_bytes());
        }
        let mut r = StreamReader::open(&p, Cursor::default()).unwrap();
        let first: Vec<NumberedEvent> = (0..7)
            .map(|_| r.next([false; 2], LATER).unwrap().unwrap())
            .collect();
        assert_eq!(
            first.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            (1..=7).collect::<Vec<_>>()
        );
        // The cursor after 7 events, persisted and read back by a "restarted agent".
        let file = _d.0.join("main.awslogs.json");
        r.cursor().save(&file).unwrap();
        let rest = drain(&mut r);
        let mut again = StreamReader::open(&p, Cursor::load(&file).unwrap().unwrap()).unwrap();
        assert_eq!(drain(&mut again), rest);
        assert_eq!(rest.last().unwrap().sequence, 20);
        // Both streams in it, each in its own order.
        let all: Vec<NumberedEvent> = first.into_iter().chain(rest).collect();
        let outs: Vec<&str> = all
            .iter()
            .filter(|e| e.stream == Some(Stream::Stdout))
            .map(|e| e.message.as_str())
            .collect();
        assert_eq!(
            outs,
            (0..10).map(|i| format!("out {i}")).collect::<Vec<_>>()
        );
        assert!(all
            .windows(2)
            .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms));
    }

    #[test]
    fn a_lone_event_waits_until_the_other_stream_cannot_precede_it() {
        let (_d, p) = dir();
        write(&p, Stream::Stdout, b"only\n");
        let mut r = StreamReader::open(&p, Cursor::default()).unwrap();
        let now = crate::logs::now_ms();
        // Read within the same millisecond: stderr may still produce an event stamped now.
        let stamp = r.next([false, true], LATER).unwrap().unwrap().timestamp_ms;
        assert!(stamp <= now + 1000);
        write(&p, Stream::Stdout, b"next\n");
        let mut r = StreamReader::open(&p, r.cursor().clone()).unwrap();
        assert_eq!(r.next([false, false], 0).unwrap(), None);
        assert!(r.next([false, true], 0).unwrap().is_some(), "stderr closed");
    }

    #[test]
    fn lines_are_joined_into_events_where_the_pattern_matches_and_read_again_the_same() {
        let (_d, p) = dir();
        write(
            &p,
            Stream::Stdout,
            b"[1] first\n  at a\n  at b\n[2] second\n[3] third\n  more\n",
        );
        let re = regex::Regex::new(r"^\[\d+\]").unwrap();
        let mut r = StreamReader::open(&p, Cursor::default())
            .unwrap()
            .with_event_start(Some(re.clone()));
        let first = r.next([false, true], LATER).unwrap().unwrap();
        assert_eq!(first.message, "[1] first\n  at a\n  at b");
        let cursor = r.cursor().clone();
        let rest = drain(&mut r);
        // The last event waits for its end (a next event, the stream's end, or 5 s).
        assert_eq!(
            rest.len(),
            1 + 1,
            "the last one goes: LATER is past its flush time"
        );
        assert_eq!(rest[0].message, "[2] second");
        assert_eq!(rest[1].message, "[3] third\n  more");
        let mut r2 = StreamReader::open(&p, cursor)
            .unwrap()
            .with_event_start(Some(re.clone()));
        assert_eq!(
            drain(&mut r2),
            rest,
            "the same events with the same numbers"
        );
        let mut r3 = StreamReader::open(&p, Cursor::default())
            .unwrap()
            .with_event_start(Some(re));
        let now = crate::logs::now_ms();
        let mut got = Vec::new();
        while let Some(e) = r3.next([false, true], now).unwrap() {
            got.push(e.message);
        }
        assert_eq!(got.len(), 2, "the open event is held: {got:?}");
        assert_eq!(
            r3.next([true, true], now).unwrap().unwrap().message,
            "[3] third\n  more"
        );
    }

    #[test]
    fn past_the_bound_the_oldest_events_are_dropped_and_a_marker_counts_them() {
        let (_d, p) = dir();
        for i in 0..100 {
            write(&p, Stream::Stdout, format!("line {i:04}\n").as_bytes()); // 10 bytes
        }
        let mut r = StreamReader::open(&p, Cursor::default()).unwrap();
        let first = r.next([false; 2], LATER).unwrap().unwrap();
        assert_eq!((first.sequence, first.message.as_str()), (1, "line 0000"));
        // 990 bytes unread, bound 400: drop down to 300.
        assert_eq!(r.drop_over(400, 42).unwrap(), 69);
        assert_eq!(r.drop_over(400, 43).unwrap(), 0, "under the bound now");
        assert_eq!(r.cursor().dropped, 69);
        let file = _d.0.join("c.json");
        r.cursor().save(&file).unwrap();
        // The marker survives a restart and comes first, numbered next.
        let mut r = StreamReader::open(&p, Cursor::load(&file).unwrap().unwrap()).unwrap();
        let rest = drain(&mut r);
        assert_eq!(rest[0].sequence, 2);
        assert_eq!(rest[0].stream, None);
        assert_eq!(
            rest[0].message,
            "[berth] 69 log events dropped: the task's log spool exceeded its bound of 400 bytes"
        );
        assert_eq!(
            (rest[1].sequence, rest[1].message.as_str()),
            (3, "line 0070")
        );
        assert_eq!(rest.len(), 31);
        assert_eq!(rest.last().unwrap().sequence, 32);
        // The marker stands where the dropped events were: the read time of the last of them,
        // not the drop's (42), so it sorts before the events kept after the gap.
        assert_ne!(rest[0].timestamp_ms, 42);
        assert!(rest[0].timestamp_ms <= rest[1].timestamp_ms);
    }

    #[test]
    fn empty_lines_are_passed_over_unnumbered_when_asked() {
        let (_d, p) = dir();
        write(&p, Stream::Stdout, b"a\n\nb\n\n");
        let mut r = StreamReader::open(&p, Cursor::default())
            .unwrap()
            .with_skip_empty(true);
        let got: Vec<_> = drain(&mut r)
            .into_iter()
            .map(|e| (e.sequence, e.message))
            .collect();
        assert_eq!(got, vec![(1, "a".to_string()), (2, "b".to_string())]);
        let mut r = StreamReader::open(&p, Cursor::default()).unwrap();
        let got: Vec<_> = drain(&mut r).into_iter().map(|e| e.message).collect();
        assert_eq!(got, vec!["a", "", "b", ""]);
    }
}
