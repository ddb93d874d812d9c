//! The log store: one redb file (`<data dir>/logs.redb`) apart from the state store, since log
//! volume dwarfs state. Tables:
//!
//! - `log_groups`: group name → `StoredLogGroup`;
//! - `log_streams`: (group, stream) → `StoredLogStream` (its numeric id, first/last times,
//!   the highest sequence number stored, bytes, the owning task and container);
//! - `log_events`: (stream id, timestamp, sequence) → (ingestion time, message). One key orders a
//!   stream's events by time (GetLogEvents' ranges); FilterLogEvents merges the ranges of the
//!   group's streams by (timestamp, stream id, sequence).
//!
//! Exactly-once: every event of an agent's batch carries the agent's sequence number for the
//! stream; an append stores only the events numbered above the stream's `stored_through` and
//! raises it, in the same transaction, so a resent or overlapping batch is stored once.
//! PutLogEvents' events are numbered apart, from [`PUT_SEQUENCE_BASE`] on (`put_through`), so a
//! caller putting into an agent's stream never takes a number the agent's next batch carries.
//! Each append is one durable transaction.

use berth_proto::v1::{StoredLogGroup, StoredLogStream};
use prost::Message as _;
use redb::{Database, ReadableTable, ReadableTableMetadata as _, TableDefinition};
use std::collections::BinaryHeap;
use std::path::Path;

const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("log_groups");
const STREAMS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("log_streams");
const EVENTS: TableDefinition<(u64, i64, u64), (i64, &str)> = TableDefinition::new("log_events");
const META: TableDefinition<&str, u64> = TableDefinition::new("log_meta");
const NEXT_STREAM_ID: &str = "next_stream_id";

/// Where PutLogEvents' numbers start in a stream: above any number an agent gives.
pub const PUT_SEQUENCE_BASE: u64 = 1 << 62;

/// CloudWatch's size of an event: its message's UTF-8 bytes plus 26.
pub const EVENT_OVERHEAD: i64 = 26;

/// What went wrong in the log store.
#[derive(Debug, thiserror::Error)]
pub enum LogStoreError {
    /// The log group does not exist.
    #[error("The specified log group does not exist.")]
    GroupNotFound,
    /// The log stream does not exist.
    #[error("The specified log stream does not exist.")]
    StreamNotFound,
    /// The log group exists already.
    #[error("The specified log group already exists")]
    GroupExists,
    /// The log stream exists already.
    #[error("The specified log stream already exists")]
    StreamExists,
    /// The database failed.
    #[error("log store {op}: {message}")]
    Backend {
        /// The operation.
        op: &'static str,
        /// redb's message.
        message: String,
    },
    /// A stored record does not decode.
    #[error("log store record {key}: {source}")]
    Decode {
        /// The record's key.
        key: String,
        /// prost's error.
        #[source]
        source: prost::DecodeError,
    },
}

fn backend(op: &'static str) -> impl Fn(&dyn std::fmt::Display) -> LogStoreError {
    move |e| LogStoreError::Backend {
        op,
        message: e.to_string(),
    }
}

/// One event to append: its timestamp (ms) and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The text.
    pub message: String,
}

/// An append to one stream.
#[derive(Debug, Clone)]
pub struct Append {
    /// The log group.
    pub group: String,
    /// The log stream.
    pub stream: String,
    /// Create the group when it does not exist (awslogs-create-group).
    pub create_group: bool,
    /// Create the stream when it does not exist (the agent's streams); PutLogEvents needs it.
    pub create_stream: bool,
    /// The sequence number of `events[0]` (the others follow); none: number on from the
    /// stream's highest.
    pub first_sequence: Option<u64>,
    /// The events.
    pub events: Vec<NewEvent>,
    /// When they are stored (ms).
    pub ingestion_time: i64,
    /// The task and container writing the stream, recorded on it.
    pub owner: Option<(String, String)>,
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Its stream's name.
    pub stream: String,
    /// Its stream's id.
    pub stream_id: u64,
    /// Its sequence number in the stream.
    pub sequence: u64,
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// When it was stored (ms).
    pub ingestion_time: i64,
    /// The text.
    pub message: String,
}

impl StoredEvent {
    /// Its position in a group's merged order.
    pub fn key(&self) -> Cursor {
        Cursor {
            timestamp: self.timestamp,
            stream_id: self.stream_id,
            sequence: self.sequence,
        }
    }
}

/// What an append stored.
#[derive(Debug, Clone, Default)]
pub struct Appended {
    /// The stream's highest sequence number stored: the agent's (its ack) for an agent's
    /// batch, PutLogEvents' own for a put.
    pub stored_through: u64,
    /// The events newly stored (those of a resent batch already stored are not).
    pub events: Vec<StoredEvent>,
}

/// A position in a group's merged event order (timestamp, stream id, sequence): a query takes
/// the events at or after `lo` and before `hi`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Cursor {
    /// Milliseconds since the epoch.
    pub timestamp: i64,
    /// The stream id.
    pub stream_id: u64,
    /// The sequence number.
    pub sequence: u64,
}

impl Cursor {
    /// The first position at time `t`.
    pub fn at(timestamp: i64) -> Self {
        Cursor {
            timestamp,
            stream_id: 0,
            sequence: 0,
        }
    }
    /// The position just after this one.
    pub fn next(self) -> Self {
        match self.sequence.checked_add(1) {
            Some(sequence) => Cursor { sequence, ..self },
            None => Cursor {
                stream_id: self.stream_id.saturating_add(1),
                sequence: 0,
                ..self
            },
        }
    }
    /// The first (timestamp, sequence) of stream `id` at or after this position.
    fn in_stream(self, id: u64) -> (i64, u64) {
        use std::cmp::Ordering::*;
        match id.cmp(&self.stream_id) {
            Equal => (self.timestamp, self.sequence),
            Greater => (self.timestamp, 0),
            Less => match self.timestamp.checked_add(1) {
                Some(t) => (t, 0),
                None => (i64::MAX, u64::MAX),
            },
        }
    }
}

/// A read of events: from the streams `streams` (ids), those in [lo, hi) in merged order,
/// newest first when `reverse`, at most `limit` that `keep` accepts.
pub struct Query<'a> {
    /// The streams (id and name).
    pub streams: Vec<(u64, String)>,
    /// Inclusive.
    pub lo: Cursor,
    /// Exclusive.
    pub hi: Cursor,
    /// Newest first.
    pub reverse: bool,
    /// At most this many.
    pub limit: usize,
    /// Which messages to return (a filter pattern).
    pub keep: &'a dyn Fn(&str) -> bool,
}

/// The store of log groups, streams and events.
pub trait LogStore: Send + Sync {
    /// Creates a group (GroupExists when it does).
    fn create_group(&self, group: StoredLogGroup) -> Result<(), LogStoreError>;
    /// A group, if it exists.
    fn group(&self, name: &str) -> Result<Option<StoredLogGroup>, LogStoreError>;
    /// Every group, by name.
    fn groups(&self) -> Result<Vec<StoredLogGroup>, LogStoreError>;
    /// Replaces an existing group's record (retention).
    fn update_group(&self, group: StoredLogGroup) -> Result<(), LogStoreError>;
    /// Deletes a group with its streams and events.
    fn delete_group(&self, name: &str) -> Result<(), LogStoreError>;
    /// Creates a stream (StreamExists, GroupNotFound).
    fn create_stream(&self, group: &str, stream: &str, now: i64) -> Result<(), LogStoreError>;
    /// The streams of a group, by name (GroupNotFound).
    fn streams(&self, group: &str) -> Result<Vec<StoredLogStream>, LogStoreError>;
    /// Appends events to a stream, each once, in one durable transaction.
    fn append(&self, append: Append) -> Result<Appended, LogStoreError>;
    /// Reads events.
    fn query(&self, query: &Query<'_>) -> Result<Vec<StoredEvent>, LogStoreError>;
    /// Deletes the group's events older than `before` (ms), at most `budget` of them in this
    /// one transaction (so a sweep never holds the writer for long); returns how many. Fewer
    /// than `budget`: none older is left.
    fn expire(&self, group: &str, before: i64, budget: u64) -> Result<u64, LogStoreError>;
}

/// The [`LogStore`] in a redb database (a file, or memory for tests).
pub struct RedbLogStore {
    db: Database,
}

fn decode<M: prost::Message + Default>(key: &str, bytes: &[u8]) -> Result<M, LogStoreError> {
    M::decode(bytes).map_err(|source| LogStoreError::Decode {
        key: key.to_string(),
        source,
    })
}

impl RedbLogStore {
    /// Opens (or creates) the log store at `path`.
    pub fn open(path: &Path) -> Result<Self, LogStoreError> {
        let db = Database::create(path).map_err(|e| LogStoreError::Backend {
            op: "open",
            message: format!("{}: {e}", path.display()),
        })?;
        Self::init(db)
    }

    /// A log store in memory (tests).
    pub fn in_memory() -> Result<Self, LogStoreError> {
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| backend("open")(&e))?;
        Self::init(db)
    }

    fn init(db: Database) -> Result<Self, LogStoreError> {
        let err = backend("open");
        let txn = db.begin_write().map_err(|e| err(&e))?;
        txn.open_table(GROUPS).map_err(|e| err(&e))?;
        txn.open_table(STREAMS).map_err(|e| err(&e))?;
        txn.open_table(EVENTS).map_err(|e| err(&e))?;
        txn.open_table(META).map_err(|e| err(&e))?;
        txn.commit().map_err(|e| err(&e))?;
        Ok(Self { db })
    }

    /// How many events are stored in all (tests, the bench).
    pub fn event_count(&self) -> Result<u64, LogStoreError> {
        let err = backend("count");
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let t = txn.open_table(EVENTS).map_err(|e| err(&e))?;
        t.len().map_err(|e| err(&e))
    }
}

fn stream_record(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    group: &str,
    stream: &str,
) -> Result<Option<StoredLogStream>, LogStoreError> {
    let got = table
        .get((group, stream))
        .map_err(|e| backend("read stream")(&e))?;
    got.map(|v| decode(&format!("{group}/{stream}"), v.value()))
        .transpose()
}

/// Recomputes a stream's first event time after events were deleted.
fn refresh_first(
    events: &impl ReadableTable<(u64, i64, u64), (i64, &'static str)>,
    s: &mut StoredLogStream,
) -> Result<(), LogStoreError> {
    let err = backend("expire");
    let first = events
        .range((s.id, i64::MIN, 0)..=(s.id, i64::MAX, u64::MAX))
        .map_err(|e| err(&e))?
        .next()
        .transpose()
        .map_err(|e| err(&e))?
        .map(|(k, _)| k.value().1);
    s.first_event_timestamp = first;
    if first.is_none() {
        s.last_event_timestamp = None;
    }
    Ok(())
}

impl LogStore for RedbLogStore {
    fn create_group(&self, group: StoredLogGroup) -> Result<(), LogStoreError> {
        let err = backend("create group");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = txn.open_table(GROUPS).map_err(|e| err(&e))?;
            if t.get(group.log_group_name.as_str())
                .map_err(|e| err(&e))?
                .is_some()
            {
                return Err(LogStoreError::GroupExists);
            }
            t.insert(
                group.log_group_name.as_str(),
                group.encode_to_vec().as_slice(),
            )
            .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn group(&self, name: &str) -> Result<Option<StoredLogGroup>, LogStoreError> {
        let err = backend("read group");
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let t = txn.open_table(GROUPS).map_err(|e| err(&e))?;
        let got = t.get(name).map_err(|e| err(&e))?;
        got.map(|v| decode(name, v.value())).transpose()
    }

    fn groups(&self) -> Result<Vec<StoredLogGroup>, LogStoreError> {
        let err = backend("list groups");
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let t = txn.open_table(GROUPS).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| err(&e))? {
            let (k, v) = item.map_err(|e| err(&e))?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    fn update_group(&self, group: StoredLogGroup) -> Result<(), LogStoreError> {
        let err = backend("update group");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut t = txn.open_table(GROUPS).map_err(|e| err(&e))?;
            if t.get(group.log_group_name.as_str())
                .map_err(|e| err(&e))?
                .is_none()
            {
                return Err(LogStoreError::GroupNotFound);
            }
            t.insert(
                group.log_group_name.as_str(),
                group.encode_to_vec().as_slice(),
            )
            .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn delete_group(&self, name: &str) -> Result<(), LogStoreError> {
        let err = backend("delete group");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let mut groups = txn.open_table(GROUPS).map_err(|e| err(&e))?;
            if groups.remove(name).map_err(|e| err(&e))?.is_none() {
                return Err(LogStoreError::GroupNotFound);
            }
            let mut streams = txn.open_table(STREAMS).map_err(|e| err(&e))?;
            let mut events = txn.open_table(EVENTS).map_err(|e| err(&e))?;
            let removed = streams
                .extract_from_if((name, "")..=(name, "\u{10ffff}"), |k, _| k.0 == name)
                .map_err(|e| err(&e))?;
            let mut ids = Vec::new();
            for item in removed {
                let (k, v) = item.map_err(|e| err(&e))?;
                let s: StoredLogStream = decode(k.value().1, v.value())?;
                ids.push(s.id);
            }
            for id in ids {
                events
                    .retain_in((id, i64::MIN, 0)..=(id, i64::MAX, u64::MAX), |_, _| false)
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn create_stream(&self, group: &str, stream: &str, now: i64) -> Result<(), LogStoreError> {
        let err = backend("create stream");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        {
            let groups = txn.open_table(GROUPS).map_err(|e| err(&e))?;
            if groups.get(group).map_err(|e| err(&e))?.is_none() {
                return Err(LogStoreError::GroupNotFound);
            }
            let mut streams = txn.open_table(STREAMS).map_err(|e| err(&e))?;
            if stream_record(&streams, group, stream)?.is_some() {
                return Err(LogStoreError::StreamExists);
            }
            let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
            let id = new_stream_id(&mut meta)?;
            let s = StoredLogStream {
                log_stream_name: stream.into(),
                id,
                creation_time: now,
                ..Default::default()
            };
            streams
                .insert((group, stream), s.encode_to_vec().as_slice())
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))
    }

    fn streams(&self, group: &str) -> Result<Vec<StoredLogStream>, LogStoreError> {
        let err = backend("list streams");
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let groups = txn.open_table(GROUPS).map_err(|e| err(&e))?;
        if groups.get(group).map_err(|e| err(&e))?.is_none() {
            return Err(LogStoreError::GroupNotFound);
        }
        let t = txn.open_table(STREAMS).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        for item in t
            .range((group, "")..=(group, "\u{10ffff}"))
            .map_err(|e| err(&e))?
        {
            let (k, v) = item.map_err(|e| err(&e))?;
            if k.value().0 != group {
                break;
            }
            out.push(decode(k.value().1, v.value())?);
        }
        Ok(out)
    }

    fn append(&self, a: Append) -> Result<Appended, LogStoreError> {
        let err = backend("append");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        let mut out = Appended::default();
        {
            let mut groups = txn.open_table(GROUPS).map_err(|e| err(&e))?;
            let exists = groups.get(a.group.as_str()).map_err(|e| err(&e))?.is_some();
            if !exists {
                if !a.create_group {
                    return Err(LogStoreError::GroupNotFound);
                }
                let g = StoredLogGroup {
                    log_group_name: a.group.clone(),
                    creation_time: a.ingestion_time,
                    ..Default::default()
                };
                groups
                    .insert(a.group.as_str(), g.encode_to_vec().as_slice())
                    .map_err(|e| err(&e))?;
            }
            let mut streams = txn.open_table(STREAMS).map_err(|e| err(&e))?;
            let mut s = match stream_record(&streams, &a.group, &a.stream)? {
                Some(s) => s,
                None if a.create_stream => {
                    let mut meta = txn.open_table(META).map_err(|e| err(&e))?;
                    StoredLogStream {
                        log_stream_name: a.stream.clone(),
                        id: new_stream_id(&mut meta)?,
                        creation_time: a.ingestion_time,
                        ..Default::default()
                    }
                }
                None => return Err(LogStoreError::StreamNotFound),
            };
            if let Some((task, container)) = &a.owner {
                s.task_arn.clone_from(task);
                s.container_name.clone_from(container);
            }
            let mut events = txn.open_table(EVENTS).map_err(|e| err(&e))?;
            for (i, e) in a.events.into_iter().enumerate() {
                let seq = match a.first_sequence {
                    Some(first) => {
                        let seq = first + i as u64;
                        if seq <= s.stored_through {
                            continue;
                        }
                        s.stored_through = seq;
                        seq
                    }
                    None => {
                        s.put_through += 1;
                        PUT_SEQUENCE_BASE + s.put_through
                    }
                };
                events
                    .insert(
                        (s.id, e.timestamp, seq),
                        (a.ingestion_time, e.message.as_str()),
                    )
                    .map_err(|e| err(&e))?;
                s.stored_bytes += e.message.len() as i64 + EVENT_OVERHEAD;
                s.first_event_timestamp = Some(
                    s.first_event_timestamp
                        .map_or(e.timestamp, |t| t.min(e.timestamp)),
                );
                s.last_event_timestamp = Some(
                    s.last_event_timestamp
                        .map_or(e.timestamp, |t| t.max(e.timestamp)),
                );
                s.last_ingestion_time = Some(a.ingestion_time);
                out.events.push(StoredEvent {
                    stream: a.stream.clone(),
                    stream_id: s.id,
                    sequence: seq,
                    timestamp: e.timestamp,
                    ingestion_time: a.ingestion_time,
                    message: e.message,
                });
            }
            out.stored_through = match a.first_sequence {
                Some(_) => s.stored_through,
                None => s.put_through,
            };
            streams
                .insert(
                    (a.group.as_str(), a.stream.as_str()),
                    s.encode_to_vec().as_slice(),
                )
                .map_err(|e| err(&e))?;
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(out)
    }

    fn query(&self, q: &Query<'_>) -> Result<Vec<StoredEvent>, LogStoreError> {
        let err = backend("query");
        let txn = self.db.begin_read().map_err(|e| err(&e))?;
        let t = txn.open_table(EVENTS).map_err(|e| err(&e))?;
        let mut out = Vec::new();
        if q.limit == 0 || q.lo >= q.hi {
            return Ok(out);
        }
        // One range per stream, merged by (timestamp, stream id, sequence).
        let mut ranges = Vec::with_capacity(q.streams.len());
        for (id, _) in &q.streams {
            let (lt, ls) = q.lo.in_stream(*id);
            let (ht, hs) = q.hi.in_stream(*id);
            if (lt, ls) >= (ht, hs) {
                ranges.push(None);
                continue;
            }
            ranges.push(Some(
                t.range((*id, lt, ls)..(*id, ht, hs)).map_err(|e| err(&e))?,
            ));
        }
        type Item = (Cursor, i64, String);
        let mut pull = |i: usize| -> Result<Option<Item>, LogStoreError> {
            let Some(r) = ranges[i].as_mut() else {
                return Ok(None);
            };
            let next = if q.reverse { r.next_back() } else { r.next() };
            let Some(item) = next.transpose().map_err(|e| err(&e))? else {
                return Ok(None);
            };
            let (k, v) = item;
            let (id, ts, seq) = k.value();
            let (ingested, msg) = v.value();
            Ok(Some((
                Cursor {
                    timestamp: ts,
                    stream_id: id,
                    sequence: seq,
                },
                ingested,
                msg.to_string(),
            )))
        };
        // A max-heap: forward reads pop the smallest key (Reverse), backward the largest.
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Head(std::cmp::Reverse<Cursor>, usize, i64, String);
        #[derive(PartialEq, Eq, PartialOrd, Ord)]
        struct Tail(Cursor, usize, i64, String);
        let mut fwd: BinaryHeap<Head> = BinaryHeap::new();
        let mut back: BinaryHeap<Tail> = BinaryHeap::new();
        for i in 0..q.streams.len() {
            if let Some((c, ing, m)) = pull(i)? {
                if q.reverse {
                    back.push(Tail(c, i, ing, m));
                } else {
                    fwd.push(Head(std::cmp::Reverse(c), i, ing, m));
                }
            }
        }
        loop {
            let (c, i, ing, m) = if q.reverse {
                match back.pop() {
                    Some(Tail(c, i, ing, m)) => (c, i, ing, m),
                    None => break,
                }
            } else {
                match fwd.pop() {
                    Some(Head(std::cmp::Reverse(c), i, ing, m)) => (c, i, ing, m),
                    None => break,
                }
            };
            if let Some((c2, ing2, m2)) = pull(i)? {
                if q.reverse {
                    back.push(Tail(c2, i, ing2, m2));
                } else {
                    fwd.push(Head(std::cmp::Reverse(c2), i, ing2, m2));
                }
            }
            if !(q.keep)(&m) {
                continue;
            }
            out.push(StoredEvent {
                stream: q.streams[i].1.clone(),
                stream_id: c.stream_id,
                sequence: c.sequence,
                timestamp: c.timestamp,
                ingestion_time: ing,
                message: m,
            });
            if out.len() >= q.limit {
                break;
            }
        }
        Ok(out)
    }

    fn expire(&self, group: &str, before: i64, budget: u64) -> Result<u64, LogStoreError> {
        let err = backend("expire");
        let txn = self.db.begin_write().map_err(|e| err(&e))?;
        let mut removed = 0u64;
        {
            let mut streams = txn.open_table(STREAMS).map_err(|e| err(&e))?;
            let mut events = txn.open_table(EVENTS).map_err(|e| err(&e))?;
            let mut list = Vec::new();
            for item in streams
                .range((group, "")..=(group, "\u{10ffff}"))
                .map_err(|e| err(&e))?
            {
                let (k, v) = item.map_err(|e| err(&e))?;
                if k.value().0 != group {
                    break;
                }
                list.push(decode::<StoredLogStream>(k.value().1, v.value())?);
            }
            for mut s in list {
                if removed >= budget {
                    break;
                }
                let mut bytes = 0i64;
                let mut keys = Vec::new();
                for item in events
                    .range((s.id, i64::MIN, 0)..(s.id, before, 0))
                    .map_err(|e| err(&e))?
                    .take((budget - removed) as usize)
                {
                    let (k, v) = item.map_err(|e| err(&e))?;
                    bytes += v.value().1.len() as i64 + EVENT_OVERHEAD;
                    keys.push(k.value());
                }
                let n = keys.len() as u64;
                if n == 0 {
                    continue;
                }
                for k in keys {
                    events.remove(k).map_err(|e| err(&e))?;
                }
                removed += n;
                s.stored_bytes = (s.stored_bytes - bytes).max(0);
                refresh_first(&events, &mut s)?;
                streams
                    .insert(
                        (group, s.log_stream_name.as_str()),
                        s.encode_to_vec().as_slice(),
                    )
                    .map_err(|e| err(&e))?;
            }
        }
        txn.commit().map_err(|e| err(&e))?;
        Ok(removed)
    }
}

fn new_stream_id(meta: &mut redb::Table<&str, u64>) -> Result<u64, LogStoreError> {
    let err = backend("stream id");
    let id = meta
        .get(NEXT_STREAM_ID)
        .map_err(|e| err(&e))?
        .map_or(1, |v| v.value());
    meta.insert(NEXT_STREAM_ID, id + 1).map_err(|e| err(&e))?;
    Ok(id)
}
