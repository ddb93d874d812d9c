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
use std::sync::Arc;
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

// ---- The log drivers on real containers, through the agent's own runtime and log delivery
// (in this process: the controller's side of awslogs is played by the test, and registration
// of logConfiguration is the controller's part of issue 10). ----

mod direct {
    use berth_agent::logs::capture::Capture;
    use berth_agent::logs::service::{ContainerLog, LogService};
    use berth_agent::runtime::containerd::Containerd;
    use berth_agent::runtime::spec::{self, SpecContext};
    use berth_agent::runtime::{CreateContainer, ImageConfig, Runtime};
    use berth_proto::v1::{ContainerDefinition, LogConfiguration};
    use berth_tests::{Cluster, IMAGE};
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::Duration;

    /// The agent's runtime and log delivery against the cluster's containerd.
    pub struct Direct {
        pub runtime: Containerd,
        pub image: ImageConfig,
        pub cgroup_parent: String,
        pub log_dir: PathBuf,
        pub logs: LogService,
    }

    pub async fn direct(c: &Cluster, spool_max: u64) -> Direct {
        direct_with_pipe(c, spool_max, None).await
    }

    /// [`direct`] with pipes of `pipe` bytes.
    pub async fn direct_with_pipe(c: &Cluster, spool_max: u64, pipe: Option<usize>) -> Direct {
        let (runtime, _) = Containerd::connect(&c.socket(), "berth")
            .await
            .expect("containerd");
        let logs = LogService::start(spool_max);
        let (events, gate) = logs.capture_listeners();
        let runtime =
            runtime.with_capture(Arc::new(Capture::new(pipe).with_listeners(events, gate)));
        let image = runtime.image(IMAGE).await.expect("image");
        Direct {
            runtime,
            image,
            cgroup_parent: c.cgroup_parent.clone(),
            log_dir: c.dir.join("direct-logs"),
            logs,
        }
    }

    impl Direct {
        /// Runs `script` in a container with this logConfiguration until it exits; returns
        /// its log path.
        pub async fn run(
            &self,
            id: &str,
            script: &str,
            log_configuration: Option<LogConfiguration>,
        ) -> PathBuf {
            let log_path = self.start(id, script, log_configuration).await;
            self.wait_exit(id).await;
            log_path
        }

        /// Waits for the container to exit 0, then removes it.
        pub async fn wait_exit(&self, id: &str) {
            let status = tokio::time::timeout(Duration::from_secs(120), self.runtime.wait(id))
                .await
                .expect("the container to exit")
                .expect("wait");
            assert_eq!(status, 0, "{id} exit status");
            self.runtime.delete(id).await.expect("delete");
        }

        /// Starts `script` in a container with this logConfiguration; returns its log path.
        pub async fn start(
            &self,
            id: &str,
            script: &str,
            log_configuration: Option<LogConfiguration>,
        ) -> PathBuf {
            let def: ContainerDefinition = serde_json::from_value(serde_json::json!({
                "name": "main", "image": IMAGE, "memory": 64,
                "command": ["sh", "-c", script],
            }))
            .expect("definition");
            let security = spec::SecurityOptions {
                default_nofile: spec::grantable_nofile().min(spec::DEFAULT_NOFILE),
                ..Default::default()
            };
            let ctx = SpecContext {
                network_mode: "none",
                cgroups_path: format!("/{}/logs-direct/{id}", self.cgroup_parent),
                hostname: id.chars().take(12).collect(),
                security: &security,
                netns_path: None,
                etc_files: None,
                pid: Default::default(),
                ipc: Default::default(),
                users: None,
                task_shm: None,
            };
            let log_path = self.log_dir.join(id).join("main.log");
            let c = CreateContainer {
                id: id.to_string(),
                image: self.image.clone(),
                spec: spec::build(&def, &self.image, &ctx).expect("spec"),
                labels: HashMap::new(),
                log_path: log_path.clone(),
                open_stdin: false,
            };
            // As the engine does: the driver is known before the first byte is copied.
            self.logs.watch(ContainerLog {
                task_arn: format!("arn:aws:ecs:on-prem:000000000000:task/logs/{id}"),
                container_name: "main".into(),
                runtime_id: id.to_string(),
                log_path: log_path.clone(),
                log_configuration,
                task_containers: 1,
            });
            self.runtime.create(&c).await.expect("create");
            self.runtime.start(&c).await.expect("start");
            log_path
        }
    }

    pub fn lc(driver: &str, opts: &[(&str, &str)]) -> Option<LogConfiguration> {
        Some(LogConfiguration {
            log_driver: driver.into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret_options: vec![],
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_file_rotates_as_configured_in_dockers_format() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-json");
    let d = direct::direct(&c, 1 << 30).await;
    // 2,000 lines of ~80 bytes in Docker's format: ~160 KB, rotated at 16 KiB, 3 files kept.
    let log = d
        .run(
            "json1",
            "seq 1 2000",
            direct::lc("json-file", &[("max-size", "16k"), ("max-file", "3")]),
        )
        .await;
    let json = log.with_file_name("main-json.log");
    let rotated = |n: u32| log.with_file_name(format!("main-json.log.{n}"));
    let last_line = wait_for("the last line in the json-file log", T, || {
        let text = std::fs::read_to_string(&json).ok()?;
        let last = text.lines().last()?.to_string();
        last.contains("\"log\":\"2000\\n\"").then_some(last)
    });
    let v: serde_json::Value = serde_json::from_str(&last_line).expect("a JSON line");
    assert_eq!(v["stream"], "stdout");
    assert!(v["time"].as_str().unwrap().ends_with('Z'), "{v}");
    assert!(rotated(1).exists() && rotated(2).exists(), "rotated files");
    assert!(!rotated(3).exists(), "max-file 3 keeps three files");
    let mut numbers = Vec::new();
    for p in [rotated(2), rotated(1), json.clone()] {
        assert!(size(&p) <= 16 * 1024, "{} over max-size", p.display());
        for l in std::fs::read_to_string(&p).unwrap().lines() {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            numbers.push(
                v["log"]
                    .as_str()
                    .unwrap()
                    .trim_end()
                    .parse::<u32>()
                    .unwrap(),
            );
        }
    }
    // The newest lines, consecutive, in order.
    assert_eq!(*numbers.last().unwrap(), 2000);
    assert!(
        numbers.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, none missing"
    );
    assert!(
        numbers.len() > 300 && numbers[0] > 1,
        "older files rotated away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_delivers_rfc_5424_to_a_unix_socket() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-syslog");
    let d = direct::direct(&c, 1 << 30).await;
    let sock = c.dir.join("syslog.sock");
    let server = std::os::unix::net::UnixDatagram::bind(&sock).expect("bind");
    server
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let addr = format!("unix://{}", sock.display());
    d.run(
        "syslog1",
        "seq 1 500; echo oops >&2",
        direct::lc(
            "syslog",
            &[
                ("syslog-address", &addr),
                ("syslog-facility", "local0"),
                ("tag", "web"),
            ],
        ),
    )
    .await;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    while got.len() < 501 {
        let n = server.recv(&mut buf).expect("a syslog message in time");
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    // local0 (16): info (6) for stdout, err (3) for stderr.
    let outs: Vec<&String> = got.iter().filter(|m| m.starts_with("<134>1 ")).collect();
    assert_eq!(outs.len(), 500, "{:?}", &got[..3]);
    for (i, m) in outs.iter().enumerate() {
        assert!(m.ends_with(&format!(" web - {}", i + 1)), "{m}");
        assert!(m.contains(" web "), "{m}");
    }
    assert!(got
        .iter()
        .any(|m| m.starts_with("<131>1 ") && m.ends_with(" - oops")));
}

/// The next LogBatch the delivery sends on the link.
async fn next(
    rx: &mut tokio::sync::mpsc::Receiver<berth_proto::v1::AgentMessage>,
) -> berth_proto::v1::LogBatch {
    use berth_proto::v1::agent_message::Message;
    match tokio::time::timeout(T, rx.recv()).await {
        Ok(Some(berth_proto::v1::AgentMessage {
            message: Some(Message::LogBatch(b)),
        })) => b,
        other => panic!("no batch: {other:?}"),
    }
}

/// The next LogBatch with events (past the streams' announcements).
async fn next_events(
    rx: &mut tokio::sync::mpsc::Receiver<berth_proto::v1::AgentMessage>,
) -> berth_proto::v1::LogBatch {
    loop {
        let b = next(rx).await;
        if !b.events.is_empty() {
            return b;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslogs_batches_are_numbered_resent_after_a_reconnect_and_an_error_stops_the_task() {
    use berth_proto::v1::LogAck;
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-aws");
    let d = direct::direct(&c, 1 << 30).await;
    let stopped = Arc::new(std::sync::Mutex::new(None));
    let s = stopped.clone();
    d.logs
        .set_stopper(Arc::new(move |arn: &str, reason: String| {
            *s.lock().unwrap() = Some((arn.to_string(), reason));
        }));
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    d.logs.connected(tx);
    let n = 30_000u64;
    d.run(
        "aws1",
        &format!("seq 1 {n}"),
        direct::lc(
            "awslogs",
            &[
                ("awslogs-group", "/ecs/web"),
                ("awslogs-stream-prefix", "web"),
            ],
        ),
    )
    .await;
    // First the stream is announced (an empty batch), as Docker's driver makes its stream at
    // the container's start.
    let hello = next(&mut rx).await;
    assert_eq!(hello.log_stream_name, "web/main/aws1");
    assert!(hello.events.is_empty() && hello.first_sequence == 0);
    // The first batches, not acknowledged but the first.
    let b1 = next(&mut rx).await;
    assert_eq!(b1.log_group_name, "/ecs/web");
    assert_eq!(b1.log_stream_name, "web/main/aws1");
    assert_eq!(b1.first_sequence, 1);
    assert_eq!(b1.events[0].message, "1");
    // The controller's store fails for a moment: the task goes on and the same events come
    // again from the last acknowledged one (none yet).
    d.logs.ack(LogAck {
        log_group_name: b1.log_group_name.clone(),
        log_stream_name: b1.log_stream_name.clone(),
        stored_through: 0,
        error: "ServiceUnavailableException: the log store failed".into(),
    });
    let b1 = loop {
        let b = next(&mut rx).await;
        if b.first_sequence == 1 && !b.events.is_empty() {
            break b;
        }
    };
    assert_eq!(b1.events[0].message, "1");
    assert!(
        stopped.lock().unwrap().is_none(),
        "a store failure must not stop the task"
    );
    let acked = b1.events.len() as u64;
    d.logs.ack(LogAck {
        log_group_name: b1.log_group_name.clone(),
        log_stream_name: b1.log_stream_name.clone(),
        stored_through: acked,
        error: String::new(),
    });
    // A reconnect: everything after the acknowledged events comes again, in order.
    d.logs.disconnected();
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    d.logs.connected(tx);
    let mut want = acked + 1;
    let mut first_after_reconnect = None;
    while want <= n {
        let b = next(&mut rx).await;
        if b.events.is_empty() {
            // The stream announced again on the new link.
            continue;
        }
        first_after_reconnect.get_or_insert(b.first_sequence);
        // A batch may repeat events already stored (the controller keeps each number
        // once); none may be missing.
        assert!(
            b.first_sequence <= want,
            "a gap before {}",
            b.first_sequence
        );
        for (i, e) in b.events.iter().enumerate() {
            let seq = b.first_sequence + i as u64;
            if seq < want {
                continue;
            }
            assert_eq!(e.message, seq.to_string());
            assert!(e.timestamp > 0);
            want += 1;
        }
        d.logs.ack(LogAck {
            log_group_name: b.log_group_name.clone(),
            log_stream_name: b.log_stream_name.clone(),
            stored_through: want - 1,
            error: String::new(),
        });
    }
    assert_eq!(
        first_after_reconnect,
        Some(acked + 1),
        "sent again from the first unacknowledged event"
    );
    // A missing group stops the task with a reason built from the error, even when the
    // container writes nothing: the stream's announcement is refused.
    d.run(
        "aws2",
        "true",
        direct::lc("awslogs", &[("awslogs-group", "/ecs/missing")]),
    )
    .await;
    let b = loop {
        let b = next(&mut rx).await;
        if b.log_stream_name == "aws2" {
            break b;
        }
    };
    assert!(b.events.is_empty(), "the announcement, before any output");
    d.logs.ack(LogAck {
        log_group_name: b.log_group_name,
        log_stream_name: b.log_stream_name,
        stored_through: 0,
        error: "ResourceNotFoundException: The specified log group does not exist.".into(),
    });
    let (arn, reason) = wait_for("the task to be stopped", T, || {
        stopped.lock().unwrap().clone()
    });
    assert!(arn.ends_with("/aws2"), "{arn}");
    assert!(
        reason.starts_with("CannotStartContainerError: ")
            && reason
                .contains("ResourceNotFoundException: The specified log group does not exist."),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_spool_bound_the_oldest_events_are_dropped_and_counted_in_the_stream() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-bound");
    // 64 KiB of spool; the container writes ~590 KB while no controller is connected.
    let d = direct::direct(&c, 64 * 1024).await;
    d.run(
        "bound1",
        "seq 1 100000",
        direct::lc("awslogs", &[("awslogs-group", "g")]),
    )
    .await;
    wait_for("the drop to be counted", T, || {
        (d.logs.dropped_total() > 0).then_some(())
    });
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    d.logs.connected(tx);
    let mut events = Vec::new();
    while !events
        .iter()
        .any(|e: &berth_proto::v1::LogEvent| e.message == "100000")
    {
        let b = next_events(&mut rx).await;
        assert_eq!(
            b.first_sequence,
            events.len() as u64 + 1,
            "numbered without gaps"
        );
        events.extend(b.events);
    }
    let marker = events
        .iter()
        .position(|e| e.message.contains("log events dropped"))
        .expect("a marker event in the stream");
    let dropped: u64 = events[marker]
        .message
        .trim_start_matches("[berth] ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(dropped, d.logs.dropped_total());
    // Every line is either delivered or counted as dropped, and what is delivered is in order.
    let lines: Vec<u64> = events
        .iter()
        .filter_map(|e| e.message.parse().ok())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(lines.len() as u64 + dropped, 100_000);
    assert_eq!(*lines.last().unwrap(), 100_000, "the newest are kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awslogs_blocking_mode_holds_the_container_back_instead_of_dropping() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-blocking");
    let (bound, pipe) = (64 * 1024u64, 64 * 1024usize);
    let d = direct::direct_with_pipe(&c, bound, Some(pipe)).await;
    // ~2 MB of lines, no controller connected: past the bound the agent stops draining.
    let n = 300_000u64;
    let log = d
        .start(
            "block1",
            &format!("seq 1 {n}"),
            direct::lc("awslogs", &[("awslogs-group", "g"), ("mode", "blocking")]),
        )
        .await;
    let fifo = log.with_file_name("main.stdout.fifo");
    let spool = log.with_file_name("main.stdout.log");
    // The pipe fills while the spool stays within the bound (half of it per stream).
    wait_for("the container's pipe to fill", T, || {
        (berth_tests::pending_in_fifo(&fifo) >= pipe).then_some(())
    });
    assert!(
        size(&spool) <= bound / 2,
        "the spool grew past its bound: {}",
        size(&spool)
    );
    // The controller comes: everything arrives, nothing dropped, and the container finishes.
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    d.logs.connected(tx);
    let mut want = 1u64;
    while want <= n {
        let b = next_events(&mut rx).await;
        assert_eq!(b.first_sequence, want, "no gap");
        for e in &b.events {
            assert_eq!(e.message, want.to_string());
            want += 1;
        }
        d.logs.ack(berth_proto::v1::LogAck {
            log_group_name: b.log_group_name,
            log_stream_name: b.log_stream_name,
            stored_through: want - 1,
            error: String::new(),
        });
    }
    d.wait_exit("block1").await;
    assert_eq!(d.logs.dropped_total(), 0, "blocking mode drops nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destination_slower_than_the_container_does_not_let_the_spool_pass_its_bound() {
    use berth_proto::v1::agent_message::Message;
    use berth_proto::v1::{AgentMessage, LogAck};
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("logs-slow");
    let d = direct::direct(&c, 64 * 1024).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel(64);
    d.logs.connected(tx);
    // ~590 KB of lines, nine times the bound, with a controller connected all along.
    let n = 100_000u64;
    d.start(
        "slow1",
        &format!("seq 1 {n}"),
        direct::lc("awslogs", &[("awslogs-group", "g")]),
    )
    .await;
    // The destination acknowledges one batch at a time, only once no new batch has come for a
    // moment: slower than the container, and never without a batch in flight while output
    // waits. The bound must hold all the same: the oldest are dropped and counted.
    let mut unacked = std::collections::VecDeque::new();
    let mut events: Vec<berth_proto::v1::LogEvent> = Vec::new();
    let mut stored = 0u64;
    let deadline = Instant::now() + T;
    loop {
        assert!(Instant::now() < deadline, "the stream did not end");
        match tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
            Ok(Some(AgentMessage {
                message: Some(Message::LogBatch(b)),
            })) => {
                if !b.events.is_empty() {
                    assert_eq!(
                        b.first_sequence,
                        events.len() as u64 + 1,
                        "numbered without gaps"
                    );
                    events.extend(b.events.iter().cloned());
                }
                unacked.push_back(b);
            }
            Ok(other) => panic!("not a batch: {other:?}"),
            Err(_) => match unacked.pop_front() {
                Some(b) => {
                    if let Some(len) = std::num::NonZeroU64::new(b.events.len() as u64) {
                        stored = b.first_sequence + len.get() - 1;
                    }
                    d.logs.ack(LogAck {
                        log_group_name: b.log_group_name,
                        log_stream_name: b.log_stream_name,
                        stored_through: stored,
                        error: String::new(),
                    });
                }
                None if events.iter().any(|e| e.message == n.to_string()) => break,
                None => {}
            },
        }
    }
    d.wait_exit("slow1").await;
    let marker = events
        .iter()
        .find(|e| e.message.contains("log events dropped"))
        .expect("a marker event: the spool was kept within its bound");
    let dropped: u64 = marker.message["[berth] ".len()..]
        .split(' ')
        .next()
        .and_then(|c| c.parse().ok())
        .expect("the marker's count");
    let lines: Vec<u64> = events
        .iter()
        .filter_map(|e| e.message.parse().ok())
        .collect();
    assert!(lines.windows(2).all(|w| w[0] < w[1]), "in order");
    assert_eq!(
        lines.len() as u64 + dropped,
        n,
        "each line delivered or counted"
    );
    assert_eq!(d.logs.dropped_total(), dropped);
}
