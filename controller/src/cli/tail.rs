//! `berth logs tail GROUP`: a log group's events as `aws logs tail` prints them (detailed:
//! ISO time to the microsecond, stream, message; short: time to the second and message; json:
//! detailed with JSON messages pretty-printed), from `--since` (10m, or an ISO time). With
//! `--follow` it then shows each new event as the controller stores it: it opens
//! StartLiveTail's stream first, pages the history with FilterLogEvents, and leaves out the
//! stream's events the history already showed (by eventId), so nothing is missed or doubled
//! and no polling is needed. When the controller goes away (a restart), it reconnects every
//! second and reads on from the newest event it printed, as `aws logs tail` resumes from it.

use std::collections::HashSet;
use std::io::Write as _;

use clap::{Arg, ArgAction, ArgMatches, Command};
use prost::Message as _;
use serde_json::Value;
use tonic::codegen::http::uri::PathAndQuery;

use super::run::{service_error, Connection, Raw};
use super::table;
use super::CliError;

/// The subcommand.
pub const CLI_NAME: &str = "tail";

/// How events are printed (`--format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TailFormat {
    /// Time (microseconds, +00:00), stream, message.
    Detailed,
    /// Time (seconds), message.
    Short,
    /// As detailed, a message that is JSON pretty-printed on the lines below.
    Json,
}

/// The checked arguments of `logs tail`.
#[derive(Debug, Clone, PartialEq)]
pub struct TailArgs {
    /// The log group.
    pub group: String,
    /// From when (ms since the epoch).
    pub since: i64,
    /// Keep showing new events.
    pub follow: bool,
    /// How to print.
    pub format: TailFormat,
    /// `--filter-pattern`.
    pub filter_pattern: Option<String>,
    /// `--log-stream-names`.
    pub log_stream_names: Vec<String>,
    /// `--log-stream-name-prefix`.
    pub log_stream_name_prefix: Option<String>,
}

/// The clap command.
pub fn command() -> Command {
    Command::new(CLI_NAME)
        .about("Show a log group's events, as `aws logs tail` (with --follow, new events as they are stored)")
        .arg(Arg::new("group_name").required(true).help("The log group"))
        .arg(
            Arg::new("since")
                .long("since")
                .default_value("10m")
                .help("From when: a relative time (30s, 10m, 2h, 1d, 1w) or an ISO 8601 time (2025-01-02T03:04:05Z)"),
        )
        .arg(
            Arg::new("follow")
                .long("follow")
                .action(ArgAction::SetTrue)
                .help("Keep showing new events until interrupted"),
        )
        .arg(
            Arg::new("format")
                .long("format")
                .default_value("detailed")
                .value_parser(["detailed", "short", "json"])
                .help("detailed (time, stream, message), short (time, message) or json"),
        )
        .arg(
            Arg::new("filter-pattern")
                .long("filter-pattern")
                // A pattern may start with an exclusion (-DEBUG).
                .allow_hyphen_values(true)
                .help("Only events matching: terms (all), \"quoted phrases\", -exclusions, ?alternatives"),
        )
        .arg(
            Arg::new("log-stream-names")
                .long("log-stream-names")
                .num_args(1..)
                .conflicts_with("log-stream-name-prefix")
                .help("Only these streams"),
        )
        .arg(
            Arg::new("log-stream-name-prefix")
                .long("log-stream-name-prefix")
                .help("Only the streams whose name starts so"),
        )
}

/// Checks the arguments (the time of `--since` is resolved now).
pub fn args(m: &ArgMatches) -> Result<TailArgs, CliError> {
    let since = m.get_one::<String>("since").map_or("10m", |s| s.as_str());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let since = parse_since(since, now).ok_or_else(|| {
        CliError::Usage(format!(
            "argument --since: '{since}' is neither a relative time (a number and one of s, m, h, d, w: 10m) nor an ISO 8601 time (2025-01-02T03:04:05Z)"
        ))
    })?;
    let format = match m.get_one::<String>("format").map(|s| s.as_str()) {
        Some("short") => TailFormat::Short,
        Some("json") => TailFormat::Json,
        _ => TailFormat::Detailed,
    };
    Ok(TailArgs {
        group: m
            .get_one::<String>("group_name")
            .cloned()
            .unwrap_or_default(),
        since,
        follow: m.get_flag("follow"),
        format,
        filter_pattern: m.get_one::<String>("filter-pattern").cloned(),
        log_stream_names: m
            .get_many::<String>("log-stream-names")
            .map(|v| v.cloned().collect())
            .unwrap_or_default(),
        log_stream_name_prefix: m.get_one::<String>("log-stream-name-prefix").cloned(),
    })
}

/// `--since`: `N` and a unit (s, m, h, d, w) before `now`, or an ISO 8601 time (UTC unless it
/// names an offset), or seconds since the epoch, as botocore parses timestamps.
pub fn parse_since(s: &str, now: i64) -> Option<i64> {
    let s = s.trim();
    if let Some(unit) = s.chars().last().filter(|c| "smhdw".contains(*c)) {
        let amount = &s[..s.len() - 1];
        if !amount.is_empty() && amount.bytes().all(|b| b.is_ascii_digit()) {
            let n: i64 = amount.parse().ok()?;
            let secs = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                _ => 7 * 86_400,
            };
            return Some(now - n.checked_mul(secs)?.checked_mul(1000)?);
        }
    }
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<i64>().ok()?.checked_mul(1000);
    }
    parse_iso(s)
}

fn parse_iso(s: &str) -> Option<i64> {
    let num = |t: &str| -> Option<i64> {
        (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (date, rest) = match s.find(['T', ' ']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let mut d = date.split('-');
    let (y, mo, da) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if d.next().is_some() || !(1..=12).contains(&mo) || !(1..=31).contains(&da) {
        return None;
    }
    // The offset: Z, +HH:MM, -HH:MM (or none: UTC).
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let mut hm = off[1..].split(':');
        let h = num(hm.next()?)?;
        let m = hm.next().map_or(Some(0), num)?;
        (t, sign * (h * 60 + m))
    } else {
        (rest, 0)
    };
    let (mut h, mut mi, mut sec, mut ms) = (0, 0, 0, 0);
    if !time.is_empty() {
        let mut parts = time.split(':');
        h = num(parts.next()?)?;
        mi = num(parts.next()?)?;
        if let Some(sf) = parts.next() {
            let (whole, frac) = sf.split_once('.').unwrap_or((sf, ""));
            sec = num(whole)?;
            if !frac.is_empty() {
                let f: String = frac.chars().chain("000".chars()).take(3).collect();
                ms = num(&f)?;
            }
        }
        if parts.next().is_some() || h > 23 || mi > 59 || sec > 60 {
            return None;
        }
    }
    let days = days_from_civil(y, mo, da);
    Some((((days * 24 + h) * 60 + mi - offset_min) * 60 + sec) * 1000 + ms)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `ms` as `aws logs tail` prints it: `2025-01-02T03:04:05.678000+00:00` (detailed) or
/// `2025-01-02T03:04:05` (short).
pub fn format_time(ms: i64, short: bool) -> String {
    let (days, rem) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (y, mo, d) = civil_from_days(days);
    let (h, mi, s, milli) = (
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000,
    );
    if short {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}000+00:00")
    }
}

/// One event as `aws logs tail` prints it, ending in one newline.
pub fn format_event(format: TailFormat, timestamp: i64, stream: &str, message: &str) -> String {
    let message = message.trim_end();
    match format {
        TailFormat::Short => format!("{} {message}\n", format_time(timestamp, true)),
        TailFormat::Detailed => format!("{} {stream} {message}\n", format_time(timestamp, false)),
        TailFormat::Json => {
            let pretty = serde_json::from_str::<Value>(message).ok().and_then(|v| {
                let mut out = Vec::new();
                let f = serde_json::ser::PrettyFormatter::with_indent(b"    ");
                let mut ser = serde_json::Serializer::with_formatter(&mut out, f);
                serde::Serialize::serialize(&v, &mut ser).ok()?;
                String::from_utf8(out).ok()
            });
            let body = pretty.map_or_else(|| message.to_string(), |p| format!("\n{p}"));
            format!(
                "{} {stream} {}\n",
                format_time(timestamp, false),
                body.trim_end()
            )
        }
    }
}

fn print(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .map_err(|e| CliError::Other(format!("writing to stdout: {e}")))
}

/// What `--follow` has printed: the newest timestamp and the events at it, so a history read
/// again after a reconnect starts there and prints none of them twice (aws logs tail's rule).
struct Printed {
    format: TailFormat,
    newest: i64,
    at_newest: HashSet<String>,
}

impl Printed {
    /// Prints an event unless it was printed at the newest timestamp already.
    fn event(&mut self, ts: i64, id: &str, stream: &str, msg: &str) -> Result<bool, CliError> {
        if ts == self.newest && self.at_newest.contains(id) {
            return Ok(false);
        }
        print(&format_event(self.format, ts, stream, msg))?;
        if ts > self.newest {
            self.newest = ts;
            self.at_newest.clear();
        }
        if ts == self.newest {
            self.at_newest.insert(id.to_string());
        }
        Ok(true)
    }
}

/// Pages FilterLogEvents from `since`, calling `each` on every event.
async fn history(
    conn: &mut Connection,
    a: &TailArgs,
    since: i64,
    mut each: impl FnMut(&Value) -> Result<(), CliError>,
) -> Result<(), CliError> {
    let filter = table::by_api("FilterLogEvents")
        .ok_or_else(|| CliError::Other("FilterLogEvents has no row".into()))?;
    let mut request = serde_json::json!({
        "logGroupName": a.group,
        "startTime": since,
        "interleaved": true,
    });
    if let Some(obj) = request.as_object_mut() {
        if let Some(p) = &a.filter_pattern {
            obj.insert("filterPattern".into(), Value::from(p.clone()));
        }
        if !a.log_stream_names.is_empty() {
            obj.insert(
                "logStreamNames".into(),
                Value::from(a.log_stream_names.clone()),
            );
        }
        if let Some(p) = &a.log_stream_name_prefix {
            obj.insert("logStreamNamePrefix".into(), Value::from(p.clone()));
        }
    }
    loop {
        let page = conn.call(filter, request.clone()).await?;
        for e in page
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            each(e)?;
        }
        match page.get("nextToken").and_then(Value::as_str) {
            Some(t) => {
                if let Some(obj) = request.as_object_mut() {
                    obj.insert("nextToken".into(), Value::from(t));
                }
            }
            None => return Ok(()),
        }
    }
}

fn fields(e: &Value) -> (i64, &str, &str, &str) {
    (
        e.get("timestamp").and_then(Value::as_i64).unwrap_or(0),
        e.get("eventId").and_then(Value::as_str).unwrap_or(""),
        e.get("logStreamName").and_then(Value::as_str).unwrap_or(""),
        e.get("message").and_then(Value::as_str).unwrap_or(""),
    )
}

/// How long `--follow` waits between two attempts to reach a controller that went away.
const RECONNECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs `logs tail`.
pub async fn run(mut conn: Connection, a: TailArgs) -> Result<(), CliError> {
    if !a.follow {
        return history(&mut conn, &a, a.since, |e| {
            let (ts, _, stream, msg) = fields(e);
            print(&format_event(a.format, ts, stream, msg))
        })
        .await;
    }
    let mut printed = Printed {
        format: a.format,
        newest: i64::MIN,
        at_newest: HashSet::new(),
    };
    let mut since = a.since;
    let mut told = false;
    loop {
        // Subscribed before the history is read, so an event stored in between is in one or
        // the other (or both: then shown once).
        let attempt = async {
            let live = open_live_tail(&conn, &a).await?;
            let mut seen: HashSet<String> = HashSet::new();
            history(&mut conn, &a, since, |e| {
                let (ts, id, stream, msg) = fields(e);
                if printed.event(ts, id, stream, msg)? {
                    seen.insert(id.to_string());
                }
                Ok(())
            })
            .await?;
            Ok::<_, CliError>((live, seen))
        };
        let (mut live, mut seen) = match attempt.await {
            Ok(x) => x,
            // The controller is restarting or unreachable: try again, as long as it takes.
            Err(CliError::Connect(endpoint)) => {
                if !told {
                    eprintln!("Could not connect to the endpoint URL: \"{endpoint}\"; retrying every second");
                    told = true;
                }
                tokio::time::sleep(RECONNECT_EVERY).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        told = false;
        loop {
            let msg = match live.message().await {
                Ok(Some(m)) => m,
                // The controller stopped (or restarted): reconnect and read on from the newest
                // event printed.
                Ok(None) => break,
                Err(s)
                    if matches!(
                        s.code(),
                        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                    ) =>
                {
                    break
                }
                Err(s) => return Err(service_error("StartLiveTail", s, &conn.endpoint)),
            };
            let resp =
                berth_proto::v1::StartLiveTailResponse::decode(msg.as_slice()).map_err(|e| {
                    CliError::Other(format!("the StartLiveTail stream does not decode: {e}"))
                })?;
            for e in resp.events {
                if seen.remove(&e.event_id) {
                    continue;
                }
                printed.event(e.timestamp, &e.event_id, &e.log_stream_name, &e.message)?;
            }
        }
        if printed.newest > since {
            since = printed.newest;
        }
    }
}

/// Opens StartLiveTail's stream (signed as every call).
async fn open_live_tail(
    conn: &Connection,
    a: &TailArgs,
) -> Result<tonic::Streaming<Vec<u8>>, CliError> {
    let req = berth_proto::v1::StartLiveTailRequest {
        log_group_name: a.group.clone(),
        log_stream_names: a.log_stream_names.clone(),
        log_stream_name_prefix: a.log_stream_name_prefix.clone(),
        filter_pattern: a.filter_pattern.clone(),
    };
    let bytes = req.encode_to_vec();
    let path_text = format!("/{}/StartLiveTail", table::LOGS.grpc);
    let path = PathAndQuery::from_maybe_shared(path_text.clone())
        .map_err(|e| CliError::Other(format!("{path_text}: {e}")))?;
    let signed = conn
        .signing
        .sign(&conn.host, &path_text, &bytes, std::time::SystemTime::now());
    let mut request = tonic::Request::new(bytes);
    if let Some((authorization, date)) = signed {
        let md = request.metadata_mut();
        for (k, v) in [
            (berth_proto::sigv4::AUTHORIZATION, authorization),
            (berth_proto::sigv4::X_AMZ_DATE, date),
        ] {
            let v = v
                .parse()
                .map_err(|_| CliError::Other(format!("the {k} of the signature is not ASCII")))?;
            md.insert(k, v);
        }
    }
    let mut grpc = tonic::client::Grpc::new(conn.channel.clone())
        .max_decoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE);
    grpc.ready()
        .await
        .map_err(|_| CliError::Connect(conn.endpoint.clone()))?;
    grpc.server_streaming(request, path, Raw)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| service_error("StartLiveTail", s, &conn.endpoint))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_aws_logs_tail_prints_them() {
        let t = 1_735_787_045_678; // 2025-01-02T03:04:05.678Z
        assert_eq!(format_time(t, false), "2025-01-02T03:04:05.678000+00:00");
        assert_eq!(format_time(t, true), "2025-01-02T03:04:05");
        assert_eq!(
            format_event(TailFormat::Detailed, t, "web/app/1", "hello\n"),
            "2025-01-02T03:04:05.678000+00:00 web/app/1 hello\n"
        );
        assert_eq!(
            format_event(TailFormat::Short, t, "s", "hi"),
            "2025-01-02T03:04:05 hi\n"
        );
        assert_eq!(
            format_event(TailFormat::Json, t, "s", r#"{"a":1}"#),
            "2025-01-02T03:04:05.678000+00:00 s \n{\n    \"a\": 1\n}\n"
        );
    }

    #[test]
    fn since_takes_relative_and_iso_times() {
        let now = 1_735_787_045_678;
        assert_eq!(parse_since("10m", now), Some(now - 600_000));
        assert_eq!(parse_since("2h", now), Some(now - 7_200_000));
        assert_eq!(parse_since("1w", now), Some(now - 604_800_000));
        assert_eq!(
            parse_since("2025-01-02T03:04:05Z", now),
            Some(1_735_787_045_000)
        );
        assert_eq!(
            parse_since("2025-01-02T03:04:05.678+00:00", now),
            Some(1_735_787_045_678)
        );
        assert_eq!(
            parse_since("2025-01-02T05:04:05+02:00", now),
            Some(1_735_787_045_000)
        );
        assert_eq!(parse_since("2025-01-02", now), Some(1_735_776_000_000));
        assert_eq!(parse_since("1735787045", now), Some(1_735_787_045_000));
        for bad in ["", "5h30m", "10x", "2025-13-01", "yesterday"] {
            assert_eq!(parse_since(bad, now), None, "{bad}");
        }
    }
}
