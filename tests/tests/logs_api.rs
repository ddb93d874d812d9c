//! Issue 10's CloudWatch Logs API through the real controller and `berth logs` CLI, as an
//! `aws logs` user drives it: groups, streams, put-log-events with the caller's timestamps,
//! get/filter/describe, retention deleting old events, `tail --follow` showing a new event,
//! a controller restart keeping the events, and bad input refused by name with nothing
//! changed. No agent or containerd: the store and the API are the controller's.

use berth_tests::{wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::io::BufRead as _;
use std::process::{Child, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as i64
}

fn logs(c: &Cluster, args: &[&str]) -> Value {
    let out = c.ok_in("logs", args);
    if out.trim().is_empty() {
        return Value::Null;
    }
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("berth logs {args:?}: {e}: {out}"))
}

/// `berth logs ARGS` must fail with exit 254 (the service refused) naming `exception` and
/// `needle`.
fn refused(c: &Cluster, args: &[&str], exception: &str, needle: &str) {
    let out = c.berth_service("logs", args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "berth logs {args:?}: {err}");
    assert!(
        err.contains(&format!("({exception})")) && err.contains(needle),
        "berth logs {args:?}: expected {exception} and '{needle}' in: {err}"
    );
}

fn messages(v: &Value) -> Vec<String> {
    v["events"]
        .as_array()
        .unwrap_or_else(|| panic!("no events in {v}"))
        .iter()
        .map(|e| e["message"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn put(c: &Cluster, group: &str, stream: &str, events: &[(i64, &str)]) -> Value {
    let json: Vec<Value> = events
        .iter()
        .map(|(t, m)| serde_json::json!({"timestamp": t, "message": m}))
        .collect();
    let arg = Value::Array(json).to_string();
    logs(
        c,
        &[
            "put-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--log-events",
            &arg,
        ],
    )
}

#[test]
fn groups_streams_and_events_as_aws_logs_shows_them() {
    let c = Cluster::controller_only("logs-api");
    logs(&c, &["create-log-group", "--log-group-name", "/berth/app"]);
    logs(&c, &["create-log-group", "--log-group-name", "/other"]);
    for s in ["web/app/1", "web/app/2"] {
        logs(
            &c,
            &[
                "create-log-stream",
                "--log-group-name",
                "/berth/app",
                "--log-stream-name",
                s,
            ],
        );
    }
    let t = now_ms();
    // Shorthand and JSON, with the caller's timestamps.
    let shorthand = format!("timestamp={},message=ERROR first", t - 3000);
    logs(
        &c,
        &[
            "put-log-events",
            "--log-group-name",
            "/berth/app",
            "--log-stream-name",
            "web/app/1",
            "--log-events",
            &shorthand,
        ],
    );
    put(&c, "/berth/app", "web/app/2", &[(t - 2000, "INFO second")]);
    let r = put(
        &c,
        "/berth/app",
        "web/app/1",
        &[
            (t - 1000, "ERROR \"third\" retry"),
            (t + 3 * 3_600_000, "too new"),
        ],
    );
    assert_eq!(
        r["rejectedLogEventsInfo"]["tooNewLogEventStartIndex"], 1,
        "{r}"
    );

    let groups = logs(
        &c,
        &["describe-log-groups", "--log-group-name-prefix", "/berth"],
    );
    let g = &groups["logGroups"];
    assert_eq!(g.as_array().map(Vec::len), Some(1), "{groups}");
    assert_eq!(g[0]["logGroupName"], "/berth/app");
    assert!(g[0]["creationTime"].is_i64(), "times are numbers: {groups}");
    assert!(g[0]["storedBytes"].as_i64().unwrap_or(0) > 0, "{groups}");
    assert!(g[0].get("retentionInDays").is_none(), "{groups}");

    let streams = logs(
        &c,
        &[
            "describe-log-streams",
            "--log-group-name",
            "/berth/app",
            "--order-by",
            "LastEventTime",
            "--descending",
        ],
    );
    let names: Vec<&str> = streams["logStreams"]
        .as_array()
        .expect("logStreams")
        .iter()
        .map(|s| s["logStreamName"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(names, ["web/app/1", "web/app/2"], "{streams}");
    assert_eq!(streams["logStreams"][0]["lastEventTimestamp"], t - 1000);
    assert_eq!(streams["logStreams"][0]["firstEventTimestamp"], t - 3000);

    let got = logs(
        &c,
        &[
            "get-log-events",
            "--log-group-name",
            "/berth/app",
            "--log-stream-name",
            "web/app/1",
            "--start-from-head",
        ],
    );
    assert_eq!(messages(&got), ["ERROR first", "ERROR \"third\" retry"]);
    assert_eq!(got["events"][0]["timestamp"], t - 3000);
    let forward = got["nextForwardToken"].as_str().expect("nextForwardToken");
    assert!(forward.starts_with("f/"), "{got}");
    // At the end, the forward token comes back unchanged.
    let again = logs(
        &c,
        &[
            "get-log-events",
            "--log-group-name",
            "/berth/app",
            "--log-stream-name",
            "web/app/1",
            "--next-token",
            forward,
            "--start-from-head",
        ],
    );
    assert_eq!(messages(&again), Vec::<String>::new());
    assert_eq!(again["nextForwardToken"], forward);
    let ranged = logs(
        &c,
        &[
            "get-log-events",
            "--log-group-name",
            "/berth/app",
            "--log-stream-name",
            "web/app/1",
            "--start-time",
            &(t - 2000).to_string(),
            "--end-time",
            &t.to_string(),
        ],
    );
    assert_eq!(messages(&ranged), ["ERROR \"third\" retry"]);

    let all = logs(&c, &["filter-log-events", "--log-group-name", "/berth/app"]);
    assert_eq!(
        messages(&all),
        ["ERROR first", "INFO second", "ERROR \"third\" retry"]
    );
    assert_eq!(all["events"][1]["logStreamName"], "web/app/2");
    let filtered = logs(
        &c,
        &[
            "filter-log-events",
            "--log-group-name",
            "/berth/app",
            "--filter-pattern",
            "ERROR -retry",
        ],
    );
    assert_eq!(messages(&filtered), ["ERROR first"]);
    let by_stream = logs(
        &c,
        &[
            "filter-log-events",
            "--log-group-name",
            "/berth/app",
            "--log-stream-names",
            "web/app/2",
            "--start-time",
            &(t - 2500).to_string(),
        ],
    );
    assert_eq!(messages(&by_stream), ["INFO second"]);
    // Paged by --page-size (the limit member), merged as aws merges pages.
    let paged = logs(
        &c,
        &[
            "filter-log-events",
            "--log-group-name",
            "/berth/app",
            "--page-size",
            "1",
        ],
    );
    assert_eq!(messages(&paged).len(), 3, "{paged}");
    // botocore merges both of FilterLogEvents' lists.
    assert!(
        paged["searchedLogStreams"]
            .as_array()
            .is_some_and(|a| a.len() >= 2),
        "{paged}"
    );
    let text = c.ok_in(
        "logs",
        &[
            "describe-log-groups",
            "--query",
            "logGroups[].logGroupName",
            "--output",
            "text",
        ],
    );
    assert_eq!(
        text.split_whitespace().collect::<Vec<_>>(),
        ["/berth/app", "/other"]
    );

    // `tail` prints as aws logs tail: detailed (time, stream, message) and short.
    let tail = c.ok_in("logs", &["tail", "/berth/app", "--since", "1h"]);
    let lines: Vec<&str> = tail.lines().collect();
    assert_eq!(lines.len(), 3, "{tail}");
    assert!(
        lines[1].ends_with(" web/app/2 INFO second") && lines[1].contains("+00:00"),
        "{tail}"
    );
    let short = c.ok_in(
        "logs",
        &[
            "tail",
            "/berth/app",
            "--format",
            "short",
            "--filter-pattern",
            "INFO",
        ],
    );
    let line = short.trim_end();
    assert!(
        line.ends_with(" INFO second") && line.len() == "2025-01-02T03:04:05 INFO second".len(),
        "{short}"
    );

    logs(&c, &["delete-log-group", "--log-group-name", "/other"]);
    let groups = logs(&c, &["describe-log-groups"]);
    assert_eq!(groups["logGroups"].as_array().map(Vec::len), Some(1));
}

#[test]
fn bad_input_is_refused_by_name_and_changes_nothing() {
    let c = Cluster::controller_only("logs-bad");
    logs(&c, &["create-log-group", "--log-group-name", "g"]);
    logs(
        &c,
        &[
            "create-log-stream",
            "--log-group-name",
            "g",
            "--log-stream-name",
            "s",
        ],
    );
    let t = now_ms();
    refused(
        &c,
        &["create-log-group", "--log-group-name", "g"],
        "ResourceAlreadyExistsException",
        "already exists",
    );
    refused(
        &c,
        &["create-log-group", "--log-group-name", "bad name"],
        "InvalidParameterException",
        "logGroupName",
    );
    refused(
        &c,
        &[
            "put-retention-policy",
            "--log-group-name",
            "g",
            "--retention-in-days",
            "2",
        ],
        "InvalidParameterException",
        "retentionInDays",
    );
    refused(
        &c,
        &[
            "put-retention-policy",
            "--log-group-name",
            "nope",
            "--retention-in-days",
            "1",
        ],
        "ResourceNotFoundException",
        "The specified log group does not exist.",
    );
    let unordered = serde_json::json!([
        {"timestamp": t, "message": "b"},
        {"timestamp": t - 1, "message": "a"}
    ])
    .to_string();
    refused(
        &c,
        &[
            "put-log-events",
            "--log-group-name",
            "g",
            "--log-stream-name",
            "s",
            "--log-events",
            &unordered,
        ],
        "InvalidParameterException",
        "chronological order",
    );
    let one = serde_json::json!([{"timestamp": t, "message": "x"}]).to_string();
    refused(
        &c,
        &[
            "put-log-events",
            "--log-group-name",
            "g",
            "--log-stream-name",
            "missing",
            "--log-events",
            &one,
        ],
        "ResourceNotFoundException",
        "The specified log stream does not exist.",
    );
    refused(
        &c,
        &[
            "filter-log-events",
            "--log-group-name",
            "g",
            "--filter-pattern",
            "{ $.level = \"x\" }",
        ],
        "InvalidParameterException",
        "JSON filter patterns",
    );
    refused(
        &c,
        &[
            "describe-log-streams",
            "--log-group-name",
            "g",
            "--order-by",
            "LastEventTime",
            "--log-stream-name-prefix",
            "s",
        ],
        "InvalidParameterException",
        "LastEventTime",
    );
    // The CLI refuses before sending: a required member missing, a bad --since.
    let out = c.berth_service("logs", &["create-log-group"]);
    assert_eq!(out.status.code(), Some(252), "{out:?}");
    let out = c.berth_service("logs", &["tail", "g", "--since", "5h30m"]);
    assert_eq!(out.status.code(), Some(252), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--since"));
    // A task definition's logConfiguration through the real controller: another driver, and
    // Docker options the agent does not apply, are refused by name and nothing registers.
    let err = c.register_refused(&format!(
        r#"{{"family":"bad-logs","containerDefinitions":[{{"name":"app","image":"{IMAGE}","memory":16,
          "logConfiguration":{{"logDriver":"splunk","options":{{"splunk-token":"t"}}}}}}]}}"#
    ));
    assert!(err.contains("'splunk'"), "{err}");
    let err = c.register_refused(&format!(
        r#"{{"family":"bad-logs","containerDefinitions":[{{"name":"app","image":"{IMAGE}","memory":16,
          "logConfiguration":{{"logDriver":"json-file","options":{{"max-size":"10m","compress":"true"}}}}}}]}}"#
    ));
    assert!(
        err.contains("'compress'") && err.contains("json-file"),
        "{err}"
    );
    let err = c.register_refused(&format!(
        r#"{{"family":"bad-logs","containerDefinitions":[{{"name":"app","image":"{IMAGE}","memory":16,
          "logConfiguration":{{"logDriver":"awslogs","options":{{"awslogs-group":"g","awslogs-datetime-format":"%Y["}}}}}}]}}"#
    ));
    assert!(err.contains("awslogs-datetime-format"), "{err}");
    let out = c.berth(&["list-task-definitions", "--family-prefix", "bad-logs"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("[]"),
        "nothing registered: {out:?}"
    );
    // Nothing changed.
    let g = logs(&c, &["describe-log-groups"]);
    assert_eq!(g["logGroups"].as_array().map(Vec::len), Some(1), "{g}");
    assert!(g["logGroups"][0].get("retentionInDays").is_none(), "{g}");
    let events = logs(&c, &["filter-log-events", "--log-group-name", "g"]);
    assert_eq!(messages(&events), Vec::<String>::new());
}

#[test]
fn retention_deletes_old_events_and_a_restart_keeps_the_rest() {
    let mut c = Cluster::controller_only("logs-retention");
    c.kill_controller();
    c.controller_args = vec!["--log-retention-interval".into(), "1".into()];
    c.start_controller();
    logs(&c, &["create-log-group", "--log-group-name", "ret"]);
    logs(
        &c,
        &[
            "create-log-stream",
            "--log-group-name",
            "ret",
            "--log-stream-name",
            "s",
        ],
    );
    let t = now_ms();
    let day = 86_400_000;
    put(&c, "ret", "s", &[(t - 3 * day, "three days old")]);
    put(&c, "ret", "s", &[(t - 1000, "fresh")]);
    logs(
        &c,
        &[
            "put-retention-policy",
            "--log-group-name",
            "ret",
            "--retention-in-days",
            "1",
        ],
    );
    let g = logs(&c, &["describe-log-groups"]);
    assert_eq!(g["logGroups"][0]["retentionInDays"], 1, "{g}");
    let all = |c: &Cluster| messages(&logs(c, &["filter-log-events", "--log-group-name", "ret"]));
    wait_for(
        "the retention sweep to delete the old event",
        Duration::from_secs(60),
        || (all(&c) == ["fresh"]).then_some(()),
    );
    // Restarted, the controller still has the event (logs.redb under its data dir).
    c.kill_controller();
    c.start_controller();
    assert_eq!(all(&c), ["fresh"]);
    let s = logs(&c, &["describe-log-streams", "--log-group-name", "ret"]);
    assert_eq!(s["logStreams"][0]["firstEventTimestamp"], t - 1000, "{s}");
    // get-log-events' --limit, then delete-retention-policy: the group keeps its events again.
    put(&c, "ret", "s", &[(now_ms(), "newest")]);
    let page = logs(
        &c,
        &[
            "get-log-events",
            "--log-group-name",
            "ret",
            "--log-stream-name",
            "s",
            "--start-from-head",
            "--limit",
            "1",
        ],
    );
    assert_eq!(messages(&page), ["fresh"], "{page}");
    logs(&c, &["delete-retention-policy", "--log-group-name", "ret"]);
    let g = logs(&c, &["describe-log-groups"]);
    assert!(g["logGroups"][0].get("retentionInDays").is_none(), "{g}");
}

/// Kills the tail it holds when dropped (also when the test fails).
struct Tail(Child);

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn tail_follow_shows_a_new_event_and_follows_across_a_controller_restart() {
    let mut c = Cluster::controller_only("logs-tail");
    logs(&c, &["create-log-group", "--log-group-name", "live"]);
    logs(
        &c,
        &[
            "create-log-stream",
            "--log-group-name",
            "live",
            "--log-stream-name",
            "s",
        ],
    );
    put(&c, "live", "s", &[(now_ms(), "before the tail")]);
    let mut child = c.berth_command();
    child
        .args([
            "logs",
            "tail",
            "live",
            "--follow",
            "--filter-pattern",
            "-skip",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::from(
            std::fs::File::create(c.dir.join("tail.err")).expect("tail's stderr file"),
        ));
    let mut tail = Tail(child.spawn().expect("spawning berth logs tail"));
    let stdout = tail.0.stdout.take().expect("tail's stdout");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let err_file = c.dir.join("tail.err");
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| {
                let err = std::fs::read_to_string(&err_file).unwrap_or_default();
                panic!("tail --follow showed no line ({what}) within 30 s; its stderr: {err}")
            })
    };
    let first = next("the history");
    assert!(first.ends_with(" s before the tail"), "{first}");
    put(&c, "live", "s", &[(now_ms(), "skip me")]);
    put(&c, "live", "s", &[(now_ms(), "after the tail")]);
    let second = next("the new event");
    assert!(second.ends_with(" s after the tail"), "{second}");
    // The controller restarts: the tail reconnects and shows what is stored next, and nothing
    // it showed before again.
    c.kill_controller();
    c.start_controller();
    put(&c, "live", "s", &[(now_ms(), "after the restart")]);
    let third = next("the event after the restart");
    assert!(third.ends_with(" s after the restart"), "{third}");
    assert!(
        tail.0.try_wait().ok().flatten().is_none(),
        "tail --follow ended"
    );
}
