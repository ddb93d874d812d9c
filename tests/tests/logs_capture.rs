//! Issue 10, log capture on real containerd + runc: a container's stdout and stderr reach their
//! spool files (logs/<task>/<container>.{stdout,stderr}.log) through FIFOs the agent drains
//! with splice(2), every line once and in order, stdout and stderr apart, each line an event
//! stamped with its read time; and the same while the agent is killed -9 twice mid-stream (the
//! container blocks on its full pipe while no agent reads and continues when the restarted
//! agent opens its FIFOs again). The line count is small in CI; scripts/soak.sh raises it with
//! BERTH_LOG_LINES (1,000,000).

use berth_agent::logs::spool::{EventReader, Position};
use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use std::path::Path;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);
/// A stopped task's log files stay (the harness's default removes them at once).
const KEEP: &[(&str, &str)] = &[("BERTH_TASK_CLEANUP_WAIT", "10m")];

fn lines() -> usize {
    std::env::var("BERTH_LOG_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

fn size(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

/// Every event of a spool, read as the drivers read it (its index beside it).
fn events(spool: &Path) -> Vec<(u64, String)> {
    // main.stdout.log's index is main.stdout.idx.
    let index = spool.with_extension("idx");
    let mut r = EventReader::open(spool, &index, Position::default()).expect("spool");
    let mut out = Vec::new();
    while let Some(e) = r.next_event(true).expect("event") {
        out.push((
            e.timestamp_ms,
            String::from_utf8_lossy(&e.message).into_owned(),
        ));
    }
    out
}

/// Asserts the spool holds exactly `want`, in order, and its events carry them with read
/// times that never go back.
fn assert_spool(spool: &Path, want: &[String]) {
    let text = std::fs::read_to_string(spool).expect("spool");
    let got: Vec<&str> = text.lines().collect();
    assert_eq!(got.len(), want.len(), "line count in {}", spool.display());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g, w, "line {i} of {}", spool.display());
    }
    let evs = events(spool);
    assert_eq!(evs.len(), want.len(), "events of {}", spool.display());
    assert!(
        evs.windows(2).all(|w| w[0].0 <= w[1].0),
        "read times go back in {}",
        spool.display()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        evs.iter().all(|e| e.0 > 0 && e.0 <= now),
        "stamps are read times"
    );
}

#[test]
fn numbered_lines_reach_the_spools_in_order_with_stdout_and_stderr_apart() {
    if !prerequisites() {
        return;
    }
    let n = lines();
    let c = Cluster::start_with_agent_env("logs-order", KEEP);
    let td = c.register(&format!(
        r#"{{"family":"printer","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"main","image":"{IMAGE}","command":["sh","-c","echo err-first >&2; seq 1 {n}; echo err-last >&2"]}}]}}"#
    ));
    let arn = c.run_task(&td);
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(task["containers"][0]["exitCode"], 0, "{task}");
    let out = c.container_spool(&arn, "main", "stdout");
    let err = c.container_spool(&arn, "main", "stderr");
    let want: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    // The last bytes may reach the spool just after the process is reported gone.
    wait_for("every line in the stdout spool", T, || {
        std::fs::read_to_string(&out)
            .ok()?
            .ends_with(&format!("\n{n}\n"))
            .then_some(())
    });
    assert_spool(&out, &want);
    assert_spool(&err, &["err-first".to_string(), "err-last".to_string()]);
}

#[test]
fn the_agent_killed_twice_mid_stream_loses_and_doubles_nothing() {
    if !prerequisites() {
        return;
    }
    let n = lines();
    let mut c = Cluster::start_with_agent_env("logs-kill", KEEP);
    // ~100-byte lines from a shell loop: slow enough that the agent dies mid-stream, and ten
    // times the pipe's size so the container cannot finish while no agent reads.
    let pad = "x".repeat(88);
    let td = c.register(&format!(
        r#"{{"family":"printer","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"main","image":"{IMAGE}","command":["sh","-c","i=1; while [ $i -le {n} ]; do echo \"$i {pad}\"; i=$((i+1)); done"]}}]}}"#
    ));
    let arn = c.run_task(&td);
    let out = c.container_spool(&arn, "main", "stdout");
    let total = (1..=n)
        .map(|i| i.to_string().len() as u64 + 1 + pad.len() as u64 + 1)
        .sum::<u64>();
    for fraction in [10, 40] {
        let at = total * fraction / 100;
        // A tight poll of our own: the container writes fast.
        let deadline = Instant::now() + T;
        while size(&out) < at {
            assert!(
                Instant::now() < deadline,
                "the spool never reached {at} bytes"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let before = size(&out);
        assert!(
            before < total,
            "the stream ended before the kill at {fraction}%"
        );
        c.kill_agent();
        // Nobody reads now: the container's output waits in its pipe (the shim holds the FIFO
        // open, so no write fails). The spool does not move until an agent reads again.
        let held = size(&out);
        c.start_agent();
        wait_for("the restarted agent to read on", T, || {
            (size(&out) > held).then_some(())
        });
    }
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(
        task["containers"][0]["exitCode"], 0,
        "the container ran to its end (no SIGPIPE): {task}"
    );
    wait_for("every line in the spool", T, || {
        (size(&out) >= total).then_some(())
    });
    let want: Vec<String> = (1..=n).map(|i| format!("{i} {pad}")).collect();
    assert_spool(&out, &want);
    assert_eq!(size(&out), total, "nothing doubled");
}
