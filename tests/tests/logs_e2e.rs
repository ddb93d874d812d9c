//! Issue 10 end to end: a real container's awslogs output reaches its stream in the
//! controller's log store, every line exactly once and in order, while the agent is killed -9
//! twice and the controller restarted once mid-stream; read back with `berth logs
//! get-log-events` as an `aws logs` user would. The count is BERTH_LOG_LINES (CI: 50,000;
//! scripts/soak.sh: 1,000,000).

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use std::time::Instant;

fn lines() -> usize {
    std::env::var("BERTH_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000)
}

/// Every event of the stream, oldest first, through get-log-events' forward tokens.
fn stream_messages(c: &Cluster, group: &str, stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec![
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--start-from-head",
            "--limit",
            "10000",
            "--output",
            "json",
        ];
        let t;
        if let Some(tok) = &token {
            t = tok.clone();
            args.extend(["--next-token", t.as_str()]);
        }
        let page: Value = serde_json::from_str(&c.ok_in("logs", &args)).expect("json");
        let events = page["events"].as_array().cloned().unwrap_or_default();
        let n = events.len();
        out.extend(
            events
                .iter()
                .map(|e| e["message"].as_str().unwrap_or_default().to_string()),
        );
        let next = page["nextForwardToken"].as_str().map(String::from);
        // CloudWatch hands back the same token at the end.
        if n == 0 || next.is_none() || next == token {
            return out;
        }
        token = next;
    }
}

#[test]
fn awslogs_lines_reach_the_stream_exactly_once_across_agent_kills_and_a_controller_restart() {
    if !prerequisites() {
        return;
    }
    let n = lines();
    let mut c = Cluster::start("logs-e2e");
    c.ok_in(
        "logs",
        &["create-log-group", "--log-group-name", "/ecs/e2e"],
    );
    // Lines written in bursts with pauses, so the kills and the restart land mid-stream.
    let cmd = format!(
        "i=1; while [ $i -le {n} ]; do j=$((i + {burst})); while [ $i -lt $j ] && [ $i -le {n} ]; do echo line-$i; i=$((i + 1)); done; usleep 200000; done; echo done >&2; exec sleep 600",
        burst = (n / 100).max(1)
    );
    let td = c.register(&format!(
        r#"{{"family":"logs-e2e","networkMode":"none","containerDefinitions":[{{"name":"app","image":"{IMAGE}","memory":64,
  "command":["sh","-c",{cmd:?}],
  "logConfiguration":{{"logDriver":"awslogs","options":{{"awslogs-group":"/ecs/e2e","awslogs-region":"us-east-1","awslogs-stream-prefix":"web"}}}}}}]}}"#
    ));
    let arn = c.run_task(&td);
    let task_id = arn.rsplit('/').next().unwrap_or_default().to_string();
    let stream = format!("web/app/{task_id}");
    c.wait_status(&arn, "RUNNING", Duration::from_secs(120));
    let stored = |c: &Cluster| -> usize {
        let v: Value = serde_json::from_str(&c.ok_in(
            "logs",
            &[
                "describe-log-streams",
                "--log-group-name",
                "/ecs/e2e",
                "--output",
                "json",
            ],
        ))
        .unwrap_or(Value::Null);
        v["logStreams"]
            .as_array()
            .map(|s| {
                s.iter()
                    .filter(|s| s["logStreamName"] == stream.as_str())
                    .count()
            })
            .unwrap_or(0)
    };
    wait_for("the stream to appear", Duration::from_secs(120), || {
        (stored(&c) == 1).then_some(())
    });
    // kill -9 the agent twice and restart the controller once while the container writes.
    for _ in 0..2 {
        c.kill_agent();
        c.start_agent();
        c.wait_agent_connected();
    }
    c.kill_controller();
    c.start_controller();
    c.wait_agent_connected();
    let want: Vec<String> = (1..=n).map(|i| format!("line-{i}")).collect();
    let got = wait_for("every line in the stream", Duration::from_secs(600), || {
        let got = stream_messages(&c, "/ecs/e2e", &stream);
        let stdout: Vec<String> = got.into_iter().filter(|m| m.starts_with("line-")).collect();
        (stdout.len() >= n).then_some(stdout)
    });
    assert_eq!(got.len(), n, "nothing doubled");
    let first_bad = got.iter().zip(&want).position(|(a, b)| a != b);
    assert_eq!(first_bad, None, "in order, nothing missing");
    // stderr's line is in the same stream (as the awslogs driver sends both).
    let all = stream_messages(&c, "/ecs/e2e", &stream);
    assert!(all.iter().any(|m| m == "done"), "stderr's line");
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &arn]);
    c.wait_status(&arn, "STOPPED", Duration::from_secs(120));
}

// ---- Issue 10: the controller down while a container writes ----

/// What pads each numbered line to about 100 bytes.
const PAD: &str =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

/// The megabytes the outage test's container writes: BERTH_LOG_OUTAGE_MB. CI: 20 (a debug
/// build stores 6,000 to 13,000 lines/s on the 2-core CI machine, so the issue's 50 MB take one
/// to three minutes there, beside the rest of the suite); scripts/soak.sh: 50, the issue's figure.
fn outage_mb() -> usize {
    std::env::var("BERTH_LOG_OUTAGE_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// Line `i` as the gated container writes it: `line-I PAD`, about 100 bytes with its newline.
fn padded(i: usize) -> String {
    format!("line-{i} {PAD}")
}

/// A container that says "ready", then waits for SIGUSR1 (the test sends it once the
/// controller is down), writes `n` padded numbered lines as fast as it can, says "done" on
/// stderr and exits 0.
fn gated_writer(c: &Cluster, family: &str, group: &str, n: usize) -> String {
    let cmd = format!(
        "go=; trap 'go=1' USR1; echo ready; while [ -z \"$go\" ]; do usleep 20000; done; seq 1 {n} | sed 's/.*/line-& {PAD}/'; echo done >&2"
    );
    c.register(&format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[{{"name":"app","image":"{IMAGE}","memory":64,
  "command":["sh","-c",{cmd:?}],
  "logConfiguration":{{"logDriver":"awslogs","options":{{"awslogs-group":"{group}","awslogs-region":"us-east-1","awslogs-stream-prefix":"web"}}}}}}]}}"#
    ))
}

/// Whether a gated writer's output is all in the stream: its last stdout line (`padded(n)`)
/// and its stderr "done". Their order is not fixed: each event is stamped when the agent reads
/// its stream, and stdout's backlog (100,000 lines through one pipe) can be read after stderr's
/// "done", so "done" may come a few milliseconds before stdout's last lines. The stream's
/// newest event is one of the two; "done" is found by a filter.
fn all_written(c: &Cluster, group: &str, stream: &str, n: usize) -> bool {
    let last = last_message(c, group, stream);
    if last.as_deref() != Some("done") && last.as_deref() != Some(padded(n).as_str()) {
        return false;
    }
    let out = c.berth_with(
        &[],
        &[
            "logs",
            "filter-log-events",
            "--log-group-name",
            group,
            "--log-stream-names",
            stream,
            "--filter-pattern",
            "done",
            "--output",
            "json",
        ],
    );
    out.status.success()
        && serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|v| {
            v["events"]
                .as_array()
                .is_some_and(|e| e.iter().any(|e| e["message"] == "done"))
        })
}

/// The newest event of a stream (get-log-events from the tail, limit 1), if any.
fn last_message(c: &Cluster, group: &str, stream: &str) -> Option<String> {
    let out = c.berth_with(
        &[],
        &[
            "logs",
            "get-log-events",
            "--log-group-name",
            group,
            "--log-stream-name",
            stream,
            "--limit",
            "1",
            "--output",
            "json",
        ],
    );
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    v["events"][0]["message"].as_str().map(String::from)
}

/// Runs the gated writer's task, waits until its "ready" is in the stream, kills the controller
/// and lets the container write; returns the task's ARN and stream once the container has
/// exited, seen through the agent's record of the task (the controller is down throughout).
fn write_while_the_controller_is_down(
    c: &mut Cluster,
    family: &str,
    group: &str,
    n: usize,
) -> (String, String) {
    c.ok_in("logs", &["create-log-group", "--log-group-name", group]);
    let td = gated_writer(c, family, group, n);
    let arn = c.run_task(&td);
    let task_id = arn.rsplit('/').next().unwrap_or_default().to_string();
    let stream = format!("web/app/{task_id}");
    c.wait_status(&arn, "RUNNING", Duration::from_secs(120));
    // "ready" is stored: the trap is set and the stream exists before the controller goes.
    wait_for(
        "the container's ready line",
        Duration::from_secs(120),
        || (last_message(c, group, &stream).as_deref() == Some("ready")).then_some(()),
    );
    let containers = c.containerd_containers();
    assert_eq!(containers.len(), 1, "one container: {containers:?}");
    c.kill_controller();
    let signal = Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .args([
            "-n",
            "berth",
            "tasks",
            "kill",
            "-s",
            "SIGUSR1",
            &containers[0],
        ])
        .output()
        .expect("ctr tasks kill");
    assert!(
        signal.status.success(),
        "ctr tasks kill -s SIGUSR1: {}",
        String::from_utf8_lossy(&signal.stderr)
    );
    let started = Instant::now();
    // Exited while the controller is down: the container was never held back by it.
    let exit = wait_for(
        "the container to exit with the controller down",
        Duration::from_secs(120 + 2 * (n as u64 / 10_000)),
        || {
            let r = c.task_record(&arn)?;
            let app = r["state"]["containers"]
                .as_array()?
                .iter()
                .find(|c| c["name"] == "app")?
                .clone();
            app["exitCode"].as_i64()
        },
    );
    assert_eq!(exit, 0, "the writer's exit code");
    eprintln!(
        "{n} lines written and the container exited in {:.1} s with the controller down",
        started.elapsed().as_secs_f64()
    );
    (arn, stream)
}

/// A line of the agent's log without its terminal colour codes.
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(ch) = chars.next() {
        if ch == '\x1b' {
            for ch in chars.by_ref() {
                if ch == 'm' {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[test]
fn a_container_writing_50_mb_while_the_controller_is_down_finishes_and_every_line_arrives() {
    if !prerequisites() {
        return;
    }
    let n = outage_mb() * 1_000_000 / (padded(1).len() + 1);
    // The exited task is kept for inspection (a 1 h cleanup wait); its undelivered spool would
    // be kept at the harness's 0 s too (a_stopped_tasks_undelivered_output_holds_its_cleanup…).
    let mut c = Cluster::start_with_agent_env("logs-outage", &[("BERTH_TASK_CLEANUP_WAIT", "1h")]);
    let (arn, stream) = write_while_the_controller_is_down(&mut c, "logs-outage", "/ecs/outage", n);
    let back = Instant::now();
    c.start_controller();
    c.wait_agent_connected();
    wait_for(
        "the last line in the stream",
        Duration::from_secs(900),
        || all_written(&c, "/ecs/outage", &stream, n).then_some(()),
    );
    eprintln!(
        "every line stored {:.1} s after the controller's start",
        back.elapsed().as_secs_f64()
    );
    let all = stream_messages(&c, "/ecs/outage", &stream);
    let got: Vec<&String> = all.iter().filter(|m| m.starts_with("line-")).collect();
    assert_eq!(got.len(), n, "every line once");
    let first_bad = (1..=n).position(|i| *got[i - 1] != padded(i));
    assert_eq!(first_bad, None, "in order, nothing missing");
    assert_eq!(
        all.iter()
            .filter(|m| m.contains("log events dropped"))
            .count(),
        0,
        "nothing dropped under the default bound"
    );
    c.wait_status(&arn, "STOPPED", Duration::from_secs(120));
}

#[test]
fn with_a_small_spool_bound_the_drop_is_counted_and_the_marker_reaches_the_stream() {
    if !prerequisites() {
        return;
    }
    // 10 MB written against a 1 MiB bound.
    let n = 100_000;
    let mut c = Cluster::start_with_agent_env(
        "logs-drop",
        &[
            ("BERTH_TASK_CLEANUP_WAIT", "1h"),
            ("BERTH_LOG_SPOOL_MAX", "1m"),
        ],
    );
    let (_arn, stream) = write_while_the_controller_is_down(&mut c, "logs-drop", "/ecs/drop", n);
    c.start_controller();
    c.wait_agent_connected();
    wait_for(
        "the last line in the stream",
        Duration::from_secs(600),
        || all_written(&c, "/ecs/drop", &stream, n).then_some(()),
    );
    let mut all = stream_messages(&c, "/ecs/drop", &stream);
    assert_eq!(
        all.first().map(String::as_str),
        Some("ready"),
        "the line before the outage"
    );
    // stderr's "done" once, wherever its read time put it (see `all_written`).
    assert_eq!(
        all.iter().filter(|m| *m == "done").count(),
        1,
        "stderr's line"
    );
    all.retain(|m| m != "done");
    all.push("done".into());
    // Walk the stream: each marker accounts for the lines missing where it stands.
    let mut next = 1;
    let mut dropped = 0;
    let mut markers = 0;
    for m in &all[1..all.len() - 1] {
        if let Some(rest) = m.strip_prefix("[berth] ") {
            let count: usize = rest
                .split_whitespace()
                .next()
                .and_then(|w| w.parse().ok())
                .unwrap_or_else(|| panic!("a marker with its count: {m}"));
            assert!(
                rest.contains(
                    "log events dropped: the task's log spool exceeded its bound of 1048576 bytes"
                ),
                "the marker names the bound: {m}"
            );
            markers += 1;
            dropped += count;
            next += count;
        } else {
            assert_eq!(
                *m,
                padded(next),
                "the lines around the drop, intact and in order"
            );
            next += 1;
        }
    }
    assert_eq!(all.last().map(String::as_str), Some("done"));
    eprintln!(
        "{dropped} of {n} lines dropped in {markers} marker(s), {} delivered",
        n - dropped
    );
    assert!(
        markers >= 1 && dropped > 0,
        "a drop was marked: {markers} markers"
    );
    assert_eq!(next, n + 1, "delivered + dropped = written");
    // The operator's counter: the agent's warning, with the running total.
    let log = c.agent_log();
    let total: usize = log
        .lines()
        .map(without_ansi)
        .filter(|l| l.contains("log spool over its bound"))
        .filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("dropped_total="))
                .and_then(|v| v.parse().ok())
        })
        .next_back()
        .unwrap_or_else(|| panic!("the agent's drop warning in its log:\n{log}"));
    assert_eq!(
        total, dropped,
        "the agent's running total is what the markers say"
    );
}

#[test]
fn a_stopped_tasks_undelivered_output_holds_its_cleanup_across_an_agent_restart() {
    if !prerequisites() {
        return;
    }
    // The harness's cleanup wait is 0 s: a stopped task is cleaned up at once, unless its
    // output has not reached the log driver yet.
    let n = 20_000;
    let mut c = Cluster::start("logs-held");
    let (arn, stream) = write_while_the_controller_is_down(&mut c, "logs-held", "/ecs/held", n);
    let task_id = arn.rsplit('/').next().unwrap_or_default().to_string();
    let log_dir = c.agent_dir().join("logs").join(&task_id);
    // The agent is killed and started again, still without a controller: the stopped task's
    // spool is kept and its delivery resumed from the persisted cursor.
    c.kill_agent();
    c.start_agent();
    wait_for(
        "the restarted agent to resume",
        Duration::from_secs(60),
        // Both agents' logs: the first one's line and the restarted one's.
        || (c.agent_log().matches("delivering container output").count() >= 2).then_some(()),
    );
    // The task's removal is due at once (it is on disk before STOPPED is), yet it waits: its
    // container and spool stay while the controller is away. (Without the wait they go within
    // a second; ten are given.)
    let due = c
        .agent_dir()
        .join("cleanup")
        .join(format!("{task_id}.json"));
    wait_for(
        "the task's cleanup to be due (and not yet done)",
        Duration::from_secs(60),
        || due.exists().then_some(()),
    );
    let container = format!("{task_id}-app");
    let gone = Instant::now() + Duration::from_secs(10);
    while Instant::now() < gone {
        assert!(
            c.containerd_containers().contains(&container),
            "the task was cleaned up with its output undelivered"
        );
        assert!(
            log_dir.join("app.stdout.idx").exists(),
            "the undelivered spool is kept"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.start_controller();
    c.wait_agent_connected();
    wait_for(
        "the last line in the stream",
        Duration::from_secs(300),
        || all_written(&c, "/ecs/held", &stream, n).then_some(()),
    );
    let all = stream_messages(&c, "/ecs/held", &stream);
    let got: Vec<&String> = all.iter().filter(|m| m.starts_with("line-")).collect();
    assert_eq!(got.len(), n, "every line once");
    let first_bad = (1..=n).position(|i| *got[i - 1] != padded(i));
    assert_eq!(first_bad, None, "in order, nothing missing");
    // Delivered: now the cleanup goes ahead.
    wait_for(
        "the task to be cleaned up",
        Duration::from_secs(120),
        || (!log_dir.exists() && !c.containerd_containers().contains(&container)).then_some(()),
    );
}
