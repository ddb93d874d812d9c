//! Issue 10 end to end: a real container's awslogs output reaches its stream in the
//! controller's log store, every line exactly once and in order, while the agent is killed -9
//! twice and the controller restarted once mid-stream; read back with `berth logs
//! get-log-events` as an `aws logs` user would. The count is BERTH_LOG_LINES (CI: 50,000;
//! scripts/soak.sh: 1,000,000).

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::time::Duration;

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
