//! Benchmark of issue 10's logs, end to end: containers -> agent (FIFOs, splice spools,
//! numbering) -> link (LogBatch / LogAck) -> the controller's store (logs.redb) -> its API.
//!
//! Every writer container waits for SIGUSR1 (`sleep & wait` under a trap, so it starts at once),
//! which the bench sends from the host to all of a run's containers together: t0. Then each
//! writes its share of `--lines` numbered ~100-byte lines with `seq | sed` and a last line
//! `end`.
//!
//! - throughput: awslogs from 1 and from 10 containers (one task), t0 until the last `end` is
//!   stored (its ingestionTime, stamped by the controller on the same host clock; the bench
//!   polls each stream's newest event with one persistent gRPC client every 100 ms, which does
//!   not move the figure). The floor, interleaved after a warm-up: the same containers writing
//!   the same lines to /dev/null (their `end` still goes to the stream), t0 until the last
//!   container process has exited (its /proc entry gone or a zombie, polled every 2 ms).
//!   The agent's CPU time (utime + stime from /proc/PID/stat) over each run, per 10,000 lines,
//!   minus that of the floor run (task start and stop, the polls).
//! - controller down: a container writing `--outage-mb` MB with the controller killed -9 before
//!   t0: its wall time to exit, beside the same container with logDriver none; then the time
//!   from the controller's start to the last line stored.
//! - tail latency: a StartLiveTail client (what `berth logs tail --follow` runs) on the group;
//!   a container writes `--tail-lines` lines at 5 a second: arrival at the client minus the
//!   event's timestamp (its read time, stamped by the agent). And put-log-events -> live tail.
//!
//! Everything runs in a private containerd, controller (TLS, signed calls: the default
//! deployment) and agent, removed at the end, on failure too. Prints figures; exits non-zero
//! only when something fails, never on a missed target.
//!
//!   CARGO_INCREMENTAL=0 cargo build --release -p berth-agent -p berth-controller -p berth-tests --bins
//!   target/release/bench-logs [--lines N] [--runs N] [--warmup N] [--outage-mb N] [--outage-runs N] [--tail-lines N]

use anyhow::{bail, ensure, Context, Result};
use berth_proto::status::TaskStatus;
use berth_proto::v1::ecs_client::EcsClient;
use berth_proto::v1::logs_client::LogsClient;
use berth_proto::v1::*;
use berth_tests::{prerequisites, Cluster, IMAGE};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tonic::transport::Channel;

/// The lines/s target (issue 10, on this 2-core machine).
const TARGET_LINES_PER_S: f64 = 100_000.0;
/// What pads each numbered line to about 100 bytes.
const PAD: &str =
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
const GROUP: &str = "/bench/logs";
const TAIL_GROUP: &str = "/bench/tail";

struct Args {
    lines: usize,
    runs: usize,
    warmup: usize,
    outage_mb: usize,
    outage_runs: usize,
    tail_lines: usize,
}

const USAGE: &str = "usage: bench-logs [--lines N (default 200000, split across the containers)] [--runs N (default 5)] [--warmup N (default 1)] [--outage-mb N (default 50; 0 skips it)] [--outage-runs N (default 3)] [--tail-lines N (default 50; 0 skips it)]";

fn args() -> Result<Args> {
    let mut out = Args {
        lines: 200_000,
        runs: 5,
        warmup: 1,
        outage_mb: 50,
        outage_runs: 3,
        tail_lines: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "-h" || a == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let v = it
            .next()
            .with_context(|| format!("{a} needs a number; {USAGE}"))?;
        let n: usize = v
            .parse()
            .with_context(|| format!("{a} {v}: not a number; {USAGE}"))?;
        match a.as_str() {
            "--lines" => out.lines = n,
            "--runs" => out.runs = n,
            "--warmup" => out.warmup = n,
            "--outage-mb" => out.outage_mb = n,
            "--outage-runs" => out.outage_runs = n,
            "--tail-lines" => out.tail_lines = n,
            _ => bail!("unknown argument {a}; {USAGE}"),
        }
    }
    ensure!(
        out.lines >= 10 && out.runs > 0,
        "--lines must be at least 10 and --runs at least 1; {USAGE}"
    );
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// n, p50 and p99 (the maximum below 100 samples).
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        if v.is_empty() {
            return Stats {
                n: 0,
                p50: f64::NAN,
                p99: f64::NAN,
            };
        }
        Stats {
            n: v.len(),
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
        }
    }
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// The agent's CPU time so far (utime + stime), in milliseconds.
fn cpu_ms(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command field"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {}", i + 3))
    };
    // SAFETY: sysconf reads a constant of the system; no pointers.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((tick(11)? + tick(12)?) * 1000.0 / hz)
}

/// Whether a process has exited (gone, or a zombie not yet reaped by its shim).
fn exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
        Err(_) => true,
    }
}

/// A writer container: waits for SIGUSR1, writes `lines` numbered padded lines (to `sink`:
/// "" for its stdout, " >/dev/null" for the floor), then `end` on stdout, and exits.
fn writer(name: &str, lines: usize, sink: &str, log: &str) -> String {
    let cmd = format!(
        "go=; trap 'go=1' USR1; touch /tmp/ready; while [ -z \"$go\" ]; do sleep 1 & wait $!; done; seq 1 {lines} | sed 's/.*/line-& {PAD}/'{sink}; echo end"
    );
    format!(
        r#"{{"name":"{name}","image":"{IMAGE}","memory":32,"command":["sh","-c",{cmd:?}],"logConfiguration":{log}}}"#
    )
}

fn awslogs(group: &str) -> String {
    format!(
        r#"{{"logDriver":"awslogs","options":{{"awslogs-group":"{group}","awslogs-region":"us-east-1","awslogs-stream-prefix":"b"}}}}"#
    )
}

const NONE: &str = r#"{"logDriver":"none"}"#;

/// A task definition of `k` writer containers sharing `lines` lines.
fn writers(c: &Cluster, family: &str, k: usize, lines: usize, sink: &str, log: &str) -> String {
    let defs: Vec<String> = (0..k)
        .map(|i| writer(&format!("w{i}"), lines / k, sink, log))
        .collect();
    c.register(&format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[{}]}}"#,
        defs.join(",")
    ))
}

struct Client {
    ecs: EcsClient<Channel>,
    logs: LogsClient<Channel>,
    endpoint: String,
    creds: Option<berth_proto::sigv4::Credentials>,
    cluster: String,
}

impl Client {
    async fn of(c: &Cluster) -> Result<Client> {
        let ch = c.channel().await.context("connecting to the controller")?;
        Ok(Client {
            ecs: EcsClient::new(ch.clone()),
            logs: LogsClient::new(ch),
            endpoint: c.endpoint.clone(),
            creds: c
                .auth
                .then(|| berth_tests::read_credentials(&c.admin_credentials())),
            cluster: c.name.clone(),
        })
    }

    fn signed<M: prost::Message>(&self, msg: M, path: &str) -> tonic::Request<M> {
        match &self.creds {
            Some(creds) => {
                berth_tests::signed_request(&self.endpoint, msg, path, creds, SystemTime::now())
            }
            None => tonic::Request::new(msg),
        }
    }

    async fn run_task(&mut self, td: &str) -> Result<String> {
        let req = self.signed(
            RunTaskRequest {
                cluster: Some(self.cluster.clone()),
                task_definition: td.to_string(),
                count: Some(1),
                ..Default::default()
            },
            "/berth.v1.Ecs/RunTask",
        );
        let r = self
            .ecs
            .run_task(req)
            .await
            .context("run-task")?
            .into_inner();
        if let Some(f) = r.failures.first() {
            bail!(
                "run-task: {} {}",
                f.reason,
                f.detail.as_deref().unwrap_or("")
            );
        }
        r.tasks
            .into_iter()
            .next()
            .map(|t| t.task_arn)
            .context("run-task placed no task")
    }

    async fn wait_task(&mut self, arn: &str, status: TaskStatus) -> Result<Task> {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let req = self.signed(
                DescribeTasksRequest {
                    cluster: Some(self.cluster.clone()),
                    tasks: vec![arn.to_string()],
                    include: vec![],
                },
                "/berth.v1.Ecs/DescribeTasks",
            );
            let r = self
                .ecs
                .describe_tasks(req)
                .await
                .context("describe-tasks")?
                .into_inner();
            if let Some(t) = r.tasks.into_iter().next() {
                if status == t.last_status {
                    return Ok(t);
                }
                if TaskStatus::Stopped == t.last_status {
                    bail!(
                        "task {arn} stopped: {}",
                        t.stopped_reason.as_deref().unwrap_or("")
                    );
                }
            }
            ensure!(
                Instant::now() < deadline,
                "task {arn} not {status} within 300 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn create_group(&mut self, group: &str) -> Result<()> {
        let req = self.signed(
            CreateLogGroupRequest {
                log_group_name: group.to_string(),
                tags: Default::default(),
            },
            "/berth.v1.Logs/CreateLogGroup",
        );
        self.logs
            .create_log_group(req)
            .await
            .with_context(|| format!("create-log-group {group}"))?;
        Ok(())
    }

    /// The newest event of a stream, if it has one.
    async fn last_event(&mut self, group: &str, stream: &str) -> Result<Option<OutputLogEvent>> {
        let req = self.signed(
            GetLogEventsRequest {
                log_group_name: group.to_string(),
                log_stream_name: stream.to_string(),
                limit: Some(1),
                ..Default::default()
            },
            "/berth.v1.Logs/GetLogEvents",
        );
        match self.logs.get_log_events(req).await {
            Ok(r) => Ok(r.into_inner().events.pop()),
            // The stream is made with its first batch.
            Err(s) if s.code() == tonic::Code::NotFound => Ok(None),
            Err(s) => Err(s).with_context(|| format!("get-log-events {stream}")),
        }
    }

    /// Waits until every stream's newest event is `end`; returns the latest of their
    /// ingestion times (ms since the epoch).
    async fn wait_ends(
        &mut self,
        group: &str,
        streams: &[String],
        timeout: Duration,
    ) -> Result<f64> {
        let deadline = Instant::now() + timeout;
        let mut left: Vec<String> = streams.to_vec();
        let mut last = 0i64;
        while !left.is_empty() {
            let mut still = Vec::new();
            for s in left {
                match self.last_event(group, &s).await? {
                    Some(e) if e.message == "end" => last = last.max(e.ingestion_time),
                    _ => still.push(s),
                }
            }
            left = still;
            if left.is_empty() {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "{} of {} streams without their last line within {timeout:?}: {left:?}",
                left.len(),
                streams.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(last as f64)
    }
}

/// The containerd task of each container of a task (`<task-id>-<name>`): their init PIDs,
/// once each has made /tmp/ready (its trap is set).
fn ready_pids(c: &Cluster, task_arn: &str, k: usize) -> Result<Vec<u32>> {
    let id = task_arn.rsplit('/').next().unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(c.socket())
            .args(["-n", "berth", "tasks", "ls"])
            .output()
            .context("ctr tasks ls")?;
        let pids: Vec<u32> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with(&format!("{id}-")))
            .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
            .filter(|pid| std::path::Path::new(&format!("/proc/{pid}/root/tmp/ready")).exists())
            .collect();
        if pids.len() == k {
            return Ok(pids);
        }
        ensure!(
            Instant::now() < deadline,
            "{} of {k} containers of {task_arn} ready within 60 s",
            pids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends SIGUSR1 to every writer: t0.
fn go(pids: &[u32]) -> Result<()> {
    for pid in pids {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .with_context(|| format!("SIGUSR1 to {pid}"))?;
    }
    Ok(())
}

/// Waits (polling every 2 ms) until every process has exited; returns when, in ms since t0.
async fn wait_exits(pids: &[u32], t0: Instant, timeout: Duration) -> Result<f64> {
    while !pids.iter().all(|p| exited(*p)) {
        ensure!(
            t0.elapsed() < timeout,
            "the writers did not exit within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(t0.elapsed().as_secs_f64() * 1000.0)
}

fn streams_of(arn: &str, k: usize) -> Vec<String> {
    let id = arn.rsplit('/').next().unwrap_or_default();
    (0..k).map(|i| format!("b/w{i}/{id}")).collect()
}

/// One throughput run.
struct Run {
    /// t0 -> the last line stored (awslogs) or the last writer exited (floor), ms.
    ms: f64,
    /// t0 -> the last writer exited, ms.
    producer_ms: f64,
    /// The agent's CPU time over the run, ms.
    cpu_ms: f64,
}

async fn throughput_once(
    c: &Cluster,
    cl: &mut Client,
    td: &str,
    k: usize,
    floor: bool,
) -> Result<Run> {
    let agent = c.agent_pid().context("the agent's pid")?;
    let cpu0 = cpu_ms(agent)?;
    let arn = cl.run_task(td).await?;
    cl.wait_task(&arn, TaskStatus::Running).await?;
    let pids = ready_pids(c, &arn, k)?;
    let (t0, t0_ms) = (Instant::now(), now_ms());
    go(&pids)?;
    let producer_ms = wait_exits(&pids, t0, Duration::from_secs(600)).await?;
    let stored = cl
        .wait_ends(GROUP, &streams_of(&arn, k), Duration::from_secs(600))
        .await?;
    let cpu = cpu_ms(agent)? - cpu0;
    cl.wait_task(&arn, TaskStatus::Stopped).await?;
    Ok(Run {
        ms: if floor {
            producer_ms
        } else {
            (stored - t0_ms).max(producer_ms)
        },
        producer_ms,
        cpu_ms: cpu,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-logs: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !prerequisites() {
        eprintln!("bench-logs: needs root, containerd, runc, ctr and busybox-static");
        return ExitCode::FAILURE;
    }
    // The cluster (containerd, controller, agent, temp dir, cgroups) goes when `c` drops, on
    // failure too.
    // Stopped tasks are kept: the agent's cleanup removes a task's log spool with it, delivered
    // or not (the harness's default cleanup wait is 0 s).
    let mut c = Cluster::start_with_agent_env("bench-logs", &[("BERTH_TASK_CLEANUP_WAIT", "1h")]);
    let result = phases(&mut c, &args).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-logs: FAILED: {e:#}");
            let log = c.agent_log();
            eprintln!("the agent's last log lines:");
            for l in log
                .lines()
                .rev()
                .take(20)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
            {
                eprintln!("  {l}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn phases(c: &mut Cluster, args: &Args) -> Result<()> {
    let mut cl = Client::of(c).await?;
    cl.create_group(GROUP).await?;
    println!(
        "host: {} cores; {} lines of ~100 bytes per run, {} runs after {} warm-up",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.lines,
        args.runs,
        args.warmup
    );
    println!();
    println!(
        "{:<44} {:>4} {:>9} {:>9} {:>12} {:>10} {:>12}",
        "throughput (t0 = all writers signalled)",
        "n",
        "p50 ms",
        "max ms",
        "p50 lines/s",
        "vs floor",
        "agent CPU/10k"
    );
    for k in [1usize, 10] {
        let logged = writers(
            c,
            &format!("bench-logs-{k}"),
            k,
            args.lines,
            "",
            &awslogs(GROUP),
        );
        let floor = writers(
            c,
            &format!("bench-floor-{k}"),
            k,
            args.lines,
            " >/dev/null",
            &awslogs(GROUP),
        );
        for _ in 0..args.warmup {
            throughput_once(c, &mut cl, &floor, k, true).await?;
            throughput_once(c, &mut cl, &logged, k, false).await?;
        }
        let (mut f, mut b) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            f.push(throughput_once(c, &mut cl, &floor, k, true).await?);
            b.push(throughput_once(c, &mut cl, &logged, k, false).await?);
        }
        let lines = (args.lines / k * k) as f64;
        let fs = Stats::of(f.iter().map(|r| r.ms).collect());
        let bs = Stats::of(b.iter().map(|r| r.ms).collect());
        let ps = Stats::of(b.iter().map(|r| r.producer_ms).collect());
        let floor_cpu = Stats::of(f.iter().map(|r| r.cpu_ms).collect()).p50;
        let cpu = Stats::of(b.iter().map(|r| r.cpu_ms).collect()).p50;
        let per10k = (cpu - floor_cpu) * 10_000.0 / lines;
        println!(
            "{:<44} {:>4} {:>9.0} {:>9.0} {:>12.0} {:>10} {:>12}",
            format!("floor  {k:>2} container(s) to /dev/null"),
            fs.n,
            fs.p50,
            fs.p99,
            lines / fs.p50 * 1000.0,
            "",
            ""
        );
        println!(
            "{:<44} {:>4} {:>9.0} {:>9.0} {:>12.0} {:>10} {:>12}",
            format!("berth  {k:>2} container(s) awslogs -> stored"),
            bs.n,
            bs.p50,
            bs.p99,
            lines / bs.p50 * 1000.0,
            format!("{:.2}x", bs.p50 / fs.p50),
            format!("{per10k:.1} ms")
        );
        println!(
            "{:<44} {:>4} {:>9.0} {:>9.0} {:>12.0} {:>10} {:>12}",
            "         the writers' own exit under awslogs",
            ps.n,
            ps.p50,
            ps.p99,
            lines / ps.p50 * 1000.0,
            format!("{:.2}x", ps.p50 / fs.p50),
            ""
        );
        let rate = lines / bs.p50 * 1000.0;
        println!(
            "  target >= {TARGET_LINES_PER_S:.0} lines/s from {k} container(s): {rate:.0}, {}; agent CPU {cpu:.0} ms per run (floor run {floor_cpu:.0} ms)",
            if rate >= TARGET_LINES_PER_S {
                "met"
            } else {
                "MISSED (a figure, not a failure)"
            }
        );
    }
    if args.outage_mb > 0 && args.outage_runs > 0 {
        outage(c, &mut cl, args).await?;
        cl = Client::of(c).await?;
    }
    if args.tail_lines > 0 {
        tail(c, &mut cl, args.tail_lines).await?;
    }
    Ok(())
}

/// The 50 MB writer with the controller down, beside its unlogged run.
async fn outage(c: &mut Cluster, cl: &mut Client, args: &Args) -> Result<()> {
    let line = format!("line-1 {PAD}").len() + 1;
    let n = args.outage_mb * 1_000_000 / line;
    let logged = writers(c, "bench-outage", 1, n, "", &awslogs(GROUP));
    let unlogged = writers(c, "bench-outage-none", 1, n, "", NONE);
    let (mut down, mut none, mut catch_up) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.outage_runs {
        // Unlogged.
        let arn = cl.run_task(&unlogged).await?;
        cl.wait_task(&arn, TaskStatus::Running).await?;
        let pids = ready_pids(c, &arn, 1)?;
        let t0 = Instant::now();
        go(&pids)?;
        none.push(wait_exits(&pids, t0, Duration::from_secs(600)).await?);
        cl.wait_task(&arn, TaskStatus::Stopped).await?;
        // awslogs with the controller down.
        let arn = cl.run_task(&logged).await?;
        cl.wait_task(&arn, TaskStatus::Running).await?;
        let pids = ready_pids(c, &arn, 1)?;
        c.kill_controller();
        let t0 = Instant::now();
        go(&pids)?;
        down.push(wait_exits(&pids, t0, Duration::from_secs(600)).await?);
        let back = now_ms();
        c.start_controller();
        *cl = Client::of(c).await?;
        let stored = cl
            .wait_ends(GROUP, &streams_of(&arn, 1), Duration::from_secs(900))
            .await?;
        catch_up.push(stored - back);
        c.wait_agent_connected();
        cl.wait_task(&arn, TaskStatus::Stopped).await?;
    }
    let (d, u, a) = (Stats::of(down), Stats::of(none), Stats::of(catch_up));
    println!();
    println!(
        "controller down: one container writing {} MB ({n} lines), {} interleaved runs",
        args.outage_mb, args.outage_runs
    );
    println!("{:<58} {:>4} {:>9} {:>9}", "", "n", "p50 ms", "max ms");
    for (label, s) in [
        ("unlogged (logDriver none): signal -> exit", &u),
        ("awslogs, controller down: signal -> exit", &d),
        ("controller started -> every line stored", &a),
    ] {
        println!("{label:<58} {:>4} {:>9.0} {:>9.0}", s.n, s.p50, s.p99);
    }
    println!(
        "  the logged run takes {:.2}x the unlogged one; {:.0} lines/s stored after the outage",
        d.p50 / u.p50,
        n as f64 / a.p50 * 1000.0
    );
    Ok(())
}

/// Live-tail latency: a container's lines, and put-log-events.
async fn tail(c: &Cluster, cl: &mut Client, lines: usize) -> Result<()> {
    cl.create_group(TAIL_GROUP).await?;
    let req = cl.signed(
        StartLiveTailRequest {
            log_group_name: TAIL_GROUP.into(),
            ..Default::default()
        },
        "/berth.v1.Logs/StartLiveTail",
    );
    let mut stream = cl
        .logs
        .start_live_tail(req)
        .await
        .context("start-live-tail")?
        .into_inner();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, f64)>();
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = stream.message().await {
            let at = now_ms();
            for e in m.events {
                if tx.send((e.message, at - e.timestamp as f64)).is_err() {
                    return;
                }
            }
        }
    });
    let cmd = format!(
        "i=1; while [ $i -le {lines} ]; do echo tail-$i; usleep 200000; i=$((i + 1)); done"
    );
    let td = c.register(&format!(
        r#"{{"family":"bench-tail","networkMode":"none","containerDefinitions":[{{"name":"t","image":"{IMAGE}","memory":16,"command":["sh","-c",{cmd:?}],"logConfiguration":{}}}]}}"#,
        awslogs(TAIL_GROUP)
    ));
    let arn = cl.run_task(&td).await?;
    let mut container = Vec::new();
    let deadline =
        Instant::now() + Duration::from_secs(120) + Duration::from_millis(400) * lines as u32;
    while container.len() < lines {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((m, lat))) = tokio::time::timeout(left, rx.recv()).await else {
            bail!("{} of {lines} lines reached the live tail", container.len());
        };
        if m.starts_with("tail-") {
            container.push(lat);
        }
    }
    cl.wait_task(&arn, TaskStatus::Stopped).await?;
    // put-log-events -> live tail: send time to arrival.
    let req = cl.signed(
        CreateLogStreamRequest {
            log_group_name: TAIL_GROUP.into(),
            log_stream_name: "put".into(),
        },
        "/berth.v1.Logs/CreateLogStream",
    );
    cl.logs
        .create_log_stream(req)
        .await
        .context("create-log-stream")?;
    let mut put = Vec::new();
    for i in 0..lines {
        let msg = format!("put-{i}");
        let sent = now_ms();
        let req = cl.signed(
            PutLogEventsRequest {
                log_group_name: TAIL_GROUP.into(),
                log_stream_name: "put".into(),
                log_events: vec![InputLogEvent {
                    timestamp: sent as i64,
                    message: msg.clone(),
                }],
                sequence_token: None,
            },
            "/berth.v1.Logs/PutLogEvents",
        );
        cl.logs
            .put_log_events(req)
            .await
            .context("put-log-events")?;
        loop {
            let Ok(Some((m, _))) = tokio::time::timeout(Duration::from_secs(10), rx.recv()).await
            else {
                bail!("put-log-events' {msg} did not reach the live tail within 10 s");
            };
            if m == msg {
                put.push(now_ms() - sent);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let (a, p) = (Stats::of(container), Stats::of(put));
    println!();
    println!("live tail (StartLiveTail, what `berth logs tail --follow` reads)");
    println!("{:<58} {:>4} {:>9} {:>9}", "", "n", "p50 ms", "p99 ms");
    println!(
        "{:<58} {:>4} {:>9.1} {:>9.1}",
        "container line read by the agent -> at the tail client", a.n, a.p50, a.p99
    );
    println!(
        "{:<58} {:>4} {:>9.1} {:>9.1}",
        "put-log-events sent -> at the tail client", p.n, p.p50, p.p99
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writers_lines_are_about_100_bytes() {
        let l = format!("line-123456 {PAD}").len() + 1;
        assert!((95..=105).contains(&l), "{l}");
    }

    #[test]
    fn a_missing_process_has_exited() {
        assert!(exited(u32::MAX / 2));
        assert!(!exited(std::process::id()));
    }
}
