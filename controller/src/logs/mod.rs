//! CloudWatch Logs, kept by the controller (issue 10): log groups, streams and events in their
//! own embedded store ([`store`]), with CloudWatch Logs' semantics ([`LogService`]): the API
//! (`api::logs`), the agent link's batches (`api::agent`) and the retention sweep all go through
//! it. Every operation is a plain method; the gRPC adapter only unpacks and maps errors.

pub mod filter;
pub mod store;
#[cfg(test)]
mod tests;

use berth_proto::arn::{ACCOUNT, REGION};
use berth_proto::v1::*;
use filter::FilterPattern;
use std::sync::Arc;
use store::{Append, Cursor, LogStore, LogStoreError, NewEvent, Query, StoredEvent};
use tokio::sync::broadcast;

/// A CloudWatch Logs error; the doc comment of each variant is its exception name.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// ResourceNotFoundException
    #[error("{0}")]
    ResourceNotFound(String),
    /// ResourceAlreadyExistsException
    #[error("{0}")]
    ResourceAlreadyExists(String),
    /// InvalidParameterException
    #[error("{0}")]
    InvalidParameter(String),
    /// ServiceUnavailableException: the store failed; nothing was changed.
    #[error("{0}")]
    Store(#[source] LogStoreError),
}

impl LogsError {
    /// CloudWatch Logs' exception name.
    pub fn exception_name(&self) -> &'static str {
        match self {
            LogsError::ResourceNotFound(_) => "ResourceNotFoundException",
            LogsError::ResourceAlreadyExists(_) => "ResourceAlreadyExistsException",
            LogsError::InvalidParameter(_) => "InvalidParameterException",
            LogsError::Store(_) => "ServiceUnavailableException",
        }
    }

    /// The agent link's form: the exception name, then the message.
    pub fn link_error(&self) -> String {
        format!("{}: {self}", self.exception_name())
    }
}

impl From<LogStoreError> for LogsError {
    fn from(e: LogStoreError) -> Self {
        match e {
            LogStoreError::GroupNotFound | LogStoreError::StreamNotFound => {
                LogsError::ResourceNotFound(e.to_string())
            }
            LogStoreError::GroupExists | LogStoreError::StreamExists => {
                LogsError::ResourceAlreadyExists(e.to_string())
            }
            e => LogsError::Store(e),
        }
    }
}

fn invalid(msg: impl Into<String>) -> LogsError {
    LogsError::InvalidParameter(msg.into())
}

/// The retention periods CloudWatch Logs accepts (days).
pub const RETENTION_DAYS: &[i32] = &[
    1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
    3288, 3653,
];

const DAY_MS: i64 = 86_400_000;
/// PutLogEvents refuses events more than 2 hours ahead...
const TOO_NEW_MS: i64 = 2 * 3_600_000;
/// ... or more than 14 days old ...
const TOO_OLD_MS: i64 = 14 * DAY_MS;
/// ... and a batch spanning more than 24 hours.
const MAX_SPAN_MS: i64 = DAY_MS;
/// A PutLogEvents batch: at most 10,000 events and 1,048,576 bytes (message bytes + 26 each).
const MAX_BATCH_EVENTS: usize = 10_000;
const MAX_BATCH_BYTES: i64 = 1_048_576;
/// Events returned by one GetLogEvents / FilterLogEvents call at most (and by default).
const MAX_EVENTS: i32 = 10_000;
/// Groups or streams per Describe call at most (and by default).
const MAX_DESCRIBE: i32 = 50;
/// Events the retention sweep deletes per transaction at most.
const EXPIRE_BATCH: u64 = 50_000;
/// Newly stored batches kept for live tails that have not read them yet.
const LIVE_BACKLOG: usize = 1024;

/// Events newly stored in a group, for live tails.
#[derive(Debug)]
pub struct LiveBatch {
    /// The group.
    pub group: String,
    /// The events, in stored order.
    pub events: Vec<StoredEvent>,
}

/// What a live tail follows.
pub struct LiveTail {
    /// Newly stored batches (of every group: [`LiveTail::select`] keeps this tail's).
    pub batches: broadcast::Receiver<Arc<LiveBatch>>,
    group: String,
    streams: Vec<String>,
    prefix: Option<String>,
    pattern: FilterPattern,
}

impl LiveTail {
    /// The events of `batch` this tail shows.
    pub fn select(&self, batch: &LiveBatch) -> Vec<FilteredLogEvent> {
        if batch.group != self.group {
            return Vec::new();
        }
        batch
            .events
            .iter()
            .filter(|e| self.streams.is_empty() || self.streams.contains(&e.stream))
            .filter(|e| {
                self.prefix
                    .as_deref()
                    .is_none_or(|p| e.stream.starts_with(p))
            })
            .filter(|e| self.pattern.matches(&e.message))
            .map(filtered)
            .collect()
    }
}

/// The wall clock in milliseconds (injectable: tests move it).
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
    })
}

/// CloudWatch Logs over a [`LogStore`].
pub struct LogService {
    store: Arc<dyn LogStore>,
    clock: Clock,
    live: broadcast::Sender<Arc<LiveBatch>>,
}

fn group_arn(name: &str) -> String {
    format!("arn:aws:logs:{REGION}:{ACCOUNT}:log-group:{name}")
}

/// CloudWatch's rule for a log group name (also awslogs-group's, at registration).
pub fn check_log_group_name(name: &str) -> Result<(), LogsError> {
    check_group_name(name)
}

/// [`check_log_group_name`].
fn check_group_name(name: &str) -> Result<(), LogsError> {
    let ok = (1..=512).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/' | '#'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'logGroupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+ (1 to 512 characters)"
        )))
    }
}

fn check_stream_name(name: &str) -> Result<(), LogsError> {
    if (1..=512).contains(&name.len()) && !name.contains([':', '*']) {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{name}' at 'logStreamName' failed to satisfy constraint: Member must satisfy regular expression pattern: [^:*]* (1 to 512 characters)"
        )))
    }
}

fn limit(value: Option<i32>, max: i32, member: &str) -> Result<usize, LogsError> {
    match value {
        None => Ok(max as usize),
        Some(n) if (1..=max).contains(&n) => Ok(n as usize),
        Some(n) => Err(invalid(format!(
            "1 validation error detected: Value '{n}' at '{member}' failed to satisfy constraint: Member must have value between 1 and {max}"
        ))),
    }
}

fn filtered(e: &StoredEvent) -> FilteredLogEvent {
    FilteredLogEvent {
        log_stream_name: e.stream.clone(),
        timestamp: e.timestamp,
        message: e.message.clone(),
        ingestion_time: e.ingestion_time,
        event_id: event_id(e.key()),
    }
}

/// An event's id: its merged-order position in digits (CloudWatch's ids are digits too).
pub fn event_id(c: Cursor) -> String {
    format!(
        "{:020}{:020}{:020}",
        (c.timestamp as u64) ^ (1 << 63),
        c.stream_id,
        c.sequence
    )
}

fn parse_event_id(s: &str) -> Option<Cursor> {
    if s.len() != 60 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ts: u64 = s[..20].parse().ok()?;
    Some(Cursor {
        timestamp: (ts ^ (1 << 63)) as i64,
        stream_id: s[20..40].parse().ok()?,
        sequence: s[40..].parse().ok()?,
    })
}

/// GetLogEvents' tokens: `f/` (forward) or `b/` (backward), a position in the stream, `/s`.
fn stream_token(forward: bool, c: Cursor) -> String {
    let ts = (c.timestamp as u64) ^ (1 << 63);
    format!(
        "{}/{ts:020}{:020}/s",
        if forward { 'f' } else { 'b' },
        c.sequence
    )
}

fn parse_stream_token(token: &str, stream_id: u64) -> Result<(bool, Cursor), LogsError> {
    let bad = || invalid(format!("The specified nextToken is invalid: {token}"));
    let (forward, rest) = match token.split_at_checked(2) {
        Some(("f/", r)) => (true, r),
        Some(("b/", r)) => (false, r),
        _ => return Err(bad()),
    };
    let digits = rest.strip_suffix("/s").ok_or_else(bad)?;
    if digits.len() != 40 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let ts: u64 = digits[..20].parse().map_err(|_| bad())?;
    let sequence: u64 = digits[20..].parse().map_err(|_| bad())?;
    Ok((
        forward,
        Cursor {
            timestamp: (ts ^ (1 << 63)) as i64,
            stream_id,
            sequence,
        },
    ))
}

/// Describe calls' tokens: the hex of the last item's sort key.
fn key_token(key: &str) -> String {
    let mut s = String::from("d1.");
    for b in key.as_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn parse_key_token(token: &str) -> Result<String, LogsError> {
    let bad = || invalid(format!("The specified nextToken is invalid: {token}"));
    let hex = token.strip_prefix("d1.").ok_or_else(bad)?;
    if hex.len() % 2 != 0 {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    String::from_utf8(bytes).map_err(|_| bad())
}

impl LogService {
    /// The service over `store`, with `clock`.
    pub fn new(store: Arc<dyn LogStore>, clock: Clock) -> Self {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        Self { store, clock, live }
    }

    /// Now (ms), by the service's clock.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// Runs a store call off the async runtime's threads.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn LogStore) -> Result<T, LogStoreError> + Send + 'static,
    ) -> Result<T, LogsError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(store.as_ref()))
            .await
            .map_err(|e| {
                LogsError::Store(LogStoreError::Backend {
                    op: "task",
                    message: e.to_string(),
                })
            })?
            .map_err(LogsError::from)
    }

    async fn group(&self, name: &str) -> Result<StoredLogGroup, LogsError> {
        check_group_name(name)?;
        let n = name.to_string();
        self.run(move |s| s.group(&n))
            .await?
            .ok_or(LogStoreError::GroupNotFound.into())
    }

    /// CreateLogGroup.
    pub async fn create_log_group(&self, r: CreateLogGroupRequest) -> Result<(), LogsError> {
        check_group_name(&r.log_group_name)?;
        let g = StoredLogGroup {
            log_group_name: r.log_group_name,
            creation_time: self.now(),
            retention_in_days: None,
            tags: r.tags,
        };
        self.run(move |s| s.create_group(g)).await
    }

    /// DeleteLogGroup.
    pub async fn delete_log_group(&self, r: DeleteLogGroupRequest) -> Result<(), LogsError> {
        check_group_name(&r.log_group_name)?;
        self.run(move |s| s.delete_group(&r.log_group_name)).await
    }

    /// DescribeLogGroups: by name, `logGroupNamePrefix`, pages of `limit` (≤ 50).
    pub async fn describe_log_groups(
        &self,
        r: DescribeLogGroupsRequest,
    ) -> Result<DescribeLogGroupsResponse, LogsError> {
        if let Some(p) = &r.log_group_name_prefix {
            check_group_name(p).map_err(|_| {
                invalid(format!("1 validation error detected: Value '{p}' at 'logGroupNamePrefix' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\.\\-_/#A-Za-z0-9]+"))
            })?;
        }
        let n = limit(r.limit, MAX_DESCRIBE, "limit")?;
        let after = r.next_token.as_deref().map(parse_key_token).transpose()?;
        let groups = self.run(|s| s.groups()).await?;
        let prefix = r.log_group_name_prefix.unwrap_or_default();
        let mut selected: Vec<StoredLogGroup> = groups
            .into_iter()
            .filter(|g| g.log_group_name.starts_with(&prefix))
            .filter(|g| {
                after
                    .as_deref()
                    .is_none_or(|a| g.log_group_name.as_str() > a)
            })
            .take(n + 1)
            .collect();
        let next_token = (selected.len() > n).then(|| {
            selected.truncate(n);
            key_token(&selected[n - 1].log_group_name)
        });
        let mut log_groups = Vec::with_capacity(selected.len());
        for g in selected {
            let name = g.log_group_name.clone();
            let stored_bytes = match self.run(move |s| s.streams(&name)).await {
                Ok(streams) => streams.iter().map(|s| s.stored_bytes).sum(),
                // Deleted since it was listed.
                Err(LogsError::ResourceNotFound(_)) => continue,
                Err(e) => return Err(e),
            };
            let arn = group_arn(&g.log_group_name);
            log_groups.push(LogGroup {
                arn: format!("{arn}:*"),
                log_group_arn: arn,
                log_group_name: g.log_group_name,
                creation_time: g.creation_time,
                retention_in_days: g.retention_in_days,
                metric_filter_count: 0,
                stored_bytes,
                log_group_class: "STANDARD".into(),
            });
        }
        Ok(DescribeLogGroupsResponse {
            log_groups,
            next_token,
        })
    }

    /// PutRetentionPolicy.
    pub async fn put_retention_policy(
        &self,
        r: PutRetentionPolicyRequest,
    ) -> Result<(), LogsError> {
        if !RETENTION_DAYS.contains(&r.retention_in_days) {
            let set: Vec<String> = RETENTION_DAYS.iter().map(|d| d.to_string()).collect();
            return Err(invalid(format!(
                "1 validation error detected: Value '{}' at 'retentionInDays' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                r.retention_in_days,
                set.join(", ")
            )));
        }
        let mut g = self.group(&r.log_group_name).await?;
        g.retention_in_days = Some(r.retention_in_days);
        self.run(move |s| s.update_group(g)).await
    }

    /// DeleteRetentionPolicy.
    pub async fn delete_retention_policy(
        &self,
        r: DeleteRetentionPolicyRequest,
    ) -> Result<(), LogsError> {
        let mut g = self.group(&r.log_group_name).await?;
        g.retention_in_days = None;
        self.run(move |s| s.update_group(g)).await
    }

    /// CreateLogStream.
    pub async fn create_log_stream(&self, r: CreateLogStreamRequest) -> Result<(), LogsError> {
        check_group_name(&r.log_group_name)?;
        check_stream_name(&r.log_stream_name)?;
        let now = self.now();
        self.run(move |s| s.create_stream(&r.log_group_name, &r.log_stream_name, now))
            .await
    }

    /// DescribeLogStreams: by name (with `logStreamNamePrefix`) or by last event time,
    /// ascending or `descending`, pages of `limit` (≤ 50).
    pub async fn describe_log_streams(
        &self,
        r: DescribeLogStreamsRequest,
    ) -> Result<DescribeLogStreamsResponse, LogsError> {
        check_group_name(&r.log_group_name)?;
        let by_time = match r.order_by.as_deref() {
            None | Some("LogStreamName") => false,
            Some("LastEventTime") => true,
            Some(o) => {
                return Err(invalid(format!(
                    "1 validation error detected: Value '{o}' at 'orderBy' failed to satisfy constraint: Member must satisfy enum value set: [LogStreamName, LastEventTime]"
                )))
            }
        };
        if by_time && r.log_stream_name_prefix.is_some() {
            return Err(invalid(
                "Cannot order by LastEventTime with a logStreamNamePrefix.",
            ));
        }
        let n = limit(r.limit, MAX_DESCRIBE, "limit")?;
        let after = r.next_token.as_deref().map(parse_key_token).transpose()?;
        let descending = r.descending.unwrap_or(false);
        let group = r.log_group_name.clone();
        let streams = self.run(move |s| s.streams(&group)).await?;
        let prefix = r.log_stream_name_prefix.unwrap_or_default();
        // The sort key, as text that sorts as the key does.
        let key = |s: &StoredLogStream| {
            if by_time {
                let t = s.last_event_timestamp.unwrap_or(i64::MIN) as u64 ^ (1 << 63);
                format!("{t:020}/{}", s.log_stream_name)
            } else {
                s.log_stream_name.clone()
            }
        };
        let mut list: Vec<(String, StoredLogStream)> = streams
            .into_iter()
            .filter(|s| s.log_stream_name.starts_with(&prefix))
            .map(|s| (key(&s), s))
            .collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        if descending {
            list.reverse();
        }
        let mut page: Vec<(String, StoredLogStream)> = list
            .into_iter()
            .filter(|(k, _)| match &after {
                None => true,
                Some(a) if descending => k < a,
                Some(a) => k > a,
            })
            .take(n + 1)
            .collect();
        let next_token = (page.len() > n).then(|| {
            page.truncate(n);
            key_token(&page[n - 1].0)
        });
        let arn = group_arn(&r.log_group_name);
        Ok(DescribeLogStreamsResponse {
            log_streams: page
                .into_iter()
                .map(|(_, s)| LogStream {
                    arn: format!("{arn}:log-stream:{}", s.log_stream_name),
                    log_stream_name: s.log_stream_name,
                    creation_time: s.creation_time,
                    first_event_timestamp: s.first_event_timestamp,
                    last_event_timestamp: s.last_event_timestamp,
                    last_ingestion_time: s.last_ingestion_time,
                    stored_bytes: 0,
                })
                .collect(),
            next_token,
        })
    }

    /// PutLogEvents: CloudWatch's checks (1..10,000 events, ≤ 1 MiB, chronological, a span of
    /// ≤ 24 h); events more than 2 h ahead, more than 14 days old or older than the group's
    /// retention are rejected (rejectedLogEventsInfo) and the others stored.
    pub async fn put_log_events(
        &self,
        r: PutLogEventsRequest,
    ) -> Result<PutLogEventsResponse, LogsError> {
        check_group_name(&r.log_group_name)?;
        check_stream_name(&r.log_stream_name)?;
        let events = r.log_events;
        if events.is_empty() || events.len() > MAX_BATCH_EVENTS {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'logEvents' failed to satisfy constraint: Member must have length between 1 and {MAX_BATCH_EVENTS} (it has {})",
                events.len()
            )));
        }
        let mut bytes = 0i64;
        for (i, e) in events.iter().enumerate() {
            if e.message.is_empty() {
                return Err(invalid(format!(
                    "1 validation error detected: Value '' at 'logEvents.{}.member.message' failed to satisfy constraint: Member must have length greater than or equal to 1",
                    i + 1
                )));
            }
            if e.timestamp < 0 {
                return Err(invalid(format!(
                    "1 validation error detected: Value '{}' at 'logEvents.{}.member.timestamp' failed to satisfy constraint: Member must have value greater than or equal to 0",
                    e.timestamp,
                    i + 1
                )));
            }
            bytes += e.message.len() as i64 + store::EVENT_OVERHEAD;
        }
        if bytes > MAX_BATCH_BYTES {
            return Err(invalid(format!(
                "Upload too large: {bytes} bytes exceeds the PutLogEvents limit of {MAX_BATCH_BYTES} bytes (messages in UTF-8 plus 26 bytes per event)"
            )));
        }
        if events.windows(2).any(|w| w[1].timestamp < w[0].timestamp) {
            return Err(invalid(
                "Log events in a single PutLogEvents request must be in chronological order.",
            ));
        }
        let group = self.group(&r.log_group_name).await?;
        let now = self.now();
        let too_old = now - TOO_OLD_MS;
        let expired = group
            .retention_in_days
            .map_or(i64::MIN, |d| now - i64::from(d) * DAY_MS);
        let too_new = now + TOO_NEW_MS;
        // Chronological, so the rejected are a prefix (old, expired) and a suffix (new).
        let old_end = events.iter().take_while(|e| e.timestamp < too_old).count();
        let expired_end = events.iter().take_while(|e| e.timestamp < expired).count();
        let new_start = events
            .iter()
            .position(|e| e.timestamp > too_new)
            .unwrap_or(events.len());
        let start = old_end.max(expired_end).min(new_start);
        let valid = &events[start..new_start];
        if let (Some(first), Some(last)) = (valid.first(), valid.last()) {
            if last.timestamp - first.timestamp > MAX_SPAN_MS {
                return Err(invalid(
                    "The batch of log events in a single PutLogEvents request cannot span more than 24 hours.",
                ));
            }
        }
        let rejected = (old_end > 0 || expired_end > 0 || new_start < events.len()).then(|| {
            RejectedLogEventsInfo {
                too_new_log_event_start_index: (new_start < events.len())
                    .then_some(new_start as i32),
                too_old_log_event_end_index: (old_end > 0).then_some(old_end as i32),
                expired_log_event_end_index: (expired_end > 0).then_some(expired_end as i32),
            }
        });
        // The stream must exist (CreateLogStream), even when every event is rejected.
        let append = Append {
            group: r.log_group_name.clone(),
            stream: r.log_stream_name.clone(),
            create_group: false,
            create_stream: false,
            first_sequence: None,
            events: valid
                .iter()
                .map(|e| NewEvent {
                    timestamp: e.timestamp,
                    message: e.message.clone(),
                })
                .collect(),
            ingestion_time: now,
            owner: None,
        };
        let stored_through = self.append(append).await?;
        Ok(PutLogEventsResponse {
            // Ignored by CloudWatch now, and by Berth; returned as CloudWatch still does.
            next_sequence_token: Some(format!("{stored_through:056}")),
            rejected_log_events_info: rejected,
        })
    }

    /// Stores events and tells live tails; returns the stream's highest sequence stored.
    async fn append(&self, a: Append) -> Result<u64, LogsError> {
        let group = a.group.clone();
        let done = self.run(move |s| s.append(a)).await?;
        if !done.events.is_empty() && self.live.receiver_count() > 0 {
            // No receiver is not an error: nobody is tailing.
            let _ = self.live.send(Arc::new(LiveBatch {
                group,
                events: done.events,
            }));
        }
        Ok(done.stored_through)
    }

    /// A batch from an agent's awslogs driver (agent.proto's LogBatch): stores the events not
    /// yet stored, creating the stream (and, with create_group, the group); returns the ack.
    pub async fn store_batch(&self, b: LogBatch) -> LogAck {
        let mut ack = LogAck {
            log_group_name: b.log_group_name.clone(),
            log_stream_name: b.log_stream_name.clone(),
            stored_through: 0,
            error: String::new(),
        };
        let checked = check_group_name(&b.log_group_name)
            .and_then(|_| check_stream_name(&b.log_stream_name))
            .and_then(|_| match b.first_sequence {
                0 if !b.events.is_empty() => {
                    Err(invalid("a log batch's firstSequence starts at 1"))
                }
                _ => Ok(()),
            });
        if let Err(e) = checked {
            ack.error = e.link_error();
            return ack;
        }
        let owner = (!b.task_arn.is_empty()).then_some((b.task_arn, b.container_name));
        let append = Append {
            group: b.log_group_name,
            stream: b.log_stream_name,
            create_group: b.create_group,
            create_stream: true,
            first_sequence: Some(b.first_sequence.max(1)),
            events: b
                .events
                .into_iter()
                .map(|e| NewEvent {
                    timestamp: e.timestamp,
                    message: e.message,
                })
                .collect(),
            ingestion_time: self.now(),
            owner,
        };
        match self.append(append).await {
            Ok(through) => ack.stored_through = through,
            Err(e) => ack.error = e.link_error(),
        }
        ack
    }

    async fn stream(&self, group: &str, stream: &str) -> Result<StoredLogStream, LogsError> {
        check_group_name(group)?;
        check_stream_name(stream)?;
        let g = group.to_string();
        let streams = self.run(move |s| s.streams(&g)).await?;
        streams
            .into_iter()
            .find(|s| s.log_stream_name == stream)
            .ok_or(LogStoreError::StreamNotFound.into())
    }

    /// GetLogEvents: a page of one stream's events in [startTime, endTime), the latest unless
    /// `startFromHead`, with CloudWatch's forward and backward tokens (a page with no events
    /// hands back the token it was given, which is how a reader knows it reached the end).
    pub async fn get_log_events(
        &self,
        r: GetLogEventsRequest,
    ) -> Result<GetLogEventsResponse, LogsError> {
        let n = limit(r.limit, MAX_EVENTS, "limit")?;
        let s = self.stream(&r.log_group_name, &r.log_stream_name).await?;
        let lo_time = Cursor {
            stream_id: s.id,
            ..Cursor::at(r.start_time.unwrap_or(i64::MIN))
        };
        let hi_time = Cursor {
            stream_id: s.id,
            ..Cursor::at(r.end_time.unwrap_or(i64::MAX))
        };
        let (forward, from) = match r.next_token.as_deref() {
            Some(t) => parse_stream_token(t, s.id)?,
            None if r.start_from_head.unwrap_or(false) => (true, lo_time),
            None => (false, hi_time),
        };
        let (lo, hi) = if forward {
            (from.max(lo_time), hi_time)
        } else {
            (lo_time, from.min(hi_time))
        };
        let streams = vec![(s.id, s.log_stream_name.clone())];
        let mut events = self
            .run(move |st| {
                st.query(&Query {
                    streams,
                    lo,
                    hi,
                    reverse: !forward,
                    limit: n,
                    keep: &|_| true,
                })
            })
            .await?;
        if !forward {
            events.reverse();
        }
        let at = if forward { lo } else { hi };
        let next_forward = events.last().map_or(at, |e| e.key().next());
        let next_backward = events.first().map_or(at, |e| e.key());
        Ok(GetLogEventsResponse {
            events: events
                .into_iter()
                .map(|e| OutputLogEvent {
                    timestamp: e.timestamp,
                    message: e.message,
                    ingestion_time: e.ingestion_time,
                })
                .collect(),
            next_forward_token: stream_token(true, next_forward),
            next_backward_token: stream_token(false, next_backward),
        })
    }

    fn select_streams(
        streams: Vec<StoredLogStream>,
        names: &[String],
        prefix: Option<&str>,
    ) -> Vec<(u64, String)> {
        streams
            .into_iter()
            .filter(|s| names.is_empty() || names.contains(&s.log_stream_name))
            .filter(|s| prefix.is_none_or(|p| s.log_stream_name.starts_with(p)))
            .map(|s| (s.id, s.log_stream_name))
            .collect()
    }

    fn check_stream_selection(names: &[String], prefix: Option<&str>) -> Result<(), LogsError> {
        if !names.is_empty() && prefix.is_some() {
            return Err(invalid(
                "logStreamNames and logStreamNamePrefix cannot both be specified",
            ));
        }
        if names.len() > 100 {
            return Err(invalid(format!(
                "1 validation error detected: Value at 'logStreamNames' failed to satisfy constraint: Member must have length less than or equal to 100 (it has {})",
                names.len()
            )));
        }
        for n in names {
            check_stream_name(n)?;
        }
        Ok(())
    }

    /// FilterLogEvents: the group's events (of `logStreamNames` or `logStreamNamePrefix`) in
    /// [startTime, endTime], oldest first, interleaved across streams, that match
    /// `filterPattern`; pages of `limit` with `nextToken`.
    pub async fn filter_log_events(
        &self,
        r: FilterLogEventsRequest,
    ) -> Result<FilterLogEventsResponse, LogsError> {
        check_group_name(&r.log_group_name)?;
        Self::check_stream_selection(&r.log_stream_names, r.log_stream_name_prefix.as_deref())?;
        let n = limit(r.limit, MAX_EVENTS, "limit")?;
        let pattern = FilterPattern::parse(r.filter_pattern.as_deref().unwrap_or(""))
            .map_err(|e| invalid(e.to_string()))?;
        let mut lo = Cursor::at(r.start_time.unwrap_or(i64::MIN));
        if let Some(t) = r.next_token.as_deref() {
            let c = parse_event_id(t.strip_prefix("n1.").unwrap_or(""))
                .ok_or_else(|| invalid(format!("The specified nextToken is invalid: {t}")))?;
            lo = lo.max(c);
        }
        let hi = match r.end_time {
            Some(t) => Cursor::at(t.saturating_add(1)),
            None => Cursor::at(i64::MAX),
        };
        let group = r.log_group_name.clone();
        let all = self.run(move |s| s.streams(&group)).await?;
        let streams = Self::select_streams(
            all,
            &r.log_stream_names,
            r.log_stream_name_prefix.as_deref(),
        );
        let searched: Vec<String> = streams.iter().map(|(_, n)| n.clone()).collect();
        let mut events = self
            .run(move |s| {
                s.query(&Query {
                    streams,
                    lo,
                    hi,
                    reverse: false,
                    limit: n + 1,
                    keep: &|m| pattern.matches(m),
                })
            })
            .await?;
        let next_token = (events.len() > n).then(|| {
            events.truncate(n);
            format!("n1.{}", event_id(events[n - 1].key().next()))
        });
        let complete = next_token.is_none();
        Ok(FilterLogEventsResponse {
            events: events.iter().map(filtered).collect(),
            searched_log_streams: searched
                .into_iter()
                .map(|log_stream_name| SearchedLogStream {
                    log_stream_name,
                    searched_completely: complete,
                })
                .collect(),
            next_token,
        })
    }

    /// StartLiveTail: checks the request and subscribes; the caller reads
    /// [`LiveTail::batches`] and keeps [`LiveTail::select`] of each.
    pub async fn start_live_tail(&self, r: StartLiveTailRequest) -> Result<LiveTail, LogsError> {
        Self::check_stream_selection(&r.log_stream_names, r.log_stream_name_prefix.as_deref())?;
        let pattern = FilterPattern::parse(r.filter_pattern.as_deref().unwrap_or(""))
            .map_err(|e| invalid(e.to_string()))?;
        // Subscribed before the group is checked, so nothing stored after a successful answer
        // is missed.
        let batches = self.live.subscribe();
        self.group(&r.log_group_name).await?;
        Ok(LiveTail {
            batches,
            group: r.log_group_name,
            streams: r.log_stream_names,
            prefix: r.log_stream_name_prefix,
            pattern,
        })
    }

    /// Deletes, in every group with a retention policy, the events older than it; returns how
    /// many. Run on a schedule (`berth-controller --log-retention-interval`).
    pub async fn enforce_retention(&self) -> Result<u64, LogsError> {
        let now = self.now();
        let groups = self.run(|s| s.groups()).await?;
        let mut removed = 0;
        for g in groups {
            let Some(days) = g.retention_in_days else {
                continue;
            };
            let before = now - i64::from(days) * DAY_MS;
            let name = g.log_group_name;
            // In transactions of at most EXPIRE_BATCH events, so appends interleave.
            loop {
                let name = name.clone();
                let n = self
                    .run(move |s| s.expire(&name, before, EXPIRE_BATCH))
                    .await?;
                removed += n;
                if n < EXPIRE_BATCH {
                    break;
                }
            }
        }
        Ok(removed)
    }

    /// The streams of a group as stored, with their owners (tests, diagnostics).
    pub async fn stored_streams(&self, group: &str) -> Result<Vec<StoredLogStream>, LogsError> {
        let g = group.to_string();
        self.run(move |s| s.streams(&g)).await
    }
}
