//! Benchmark: how long Berth takes to start a task, against this machine's floor, and what the
//! agent costs in memory.
//!
//! - floor: containerd create + start of the bench's container through one persistent gRPC client
//!   running the agent's own runtime code (`Containerd::create` + `start`, the spec built by
//!   `spec::build`), in the same private containerd, same image. Timed from before create to
//!   start returning: the least that RunTask -> RUNNING has to do on the agent's side.
//!   kill/wait/delete happen outside the timed part.
//! - berth: RunTask -> RUNNING as a client sees it (DescribeTasks every 5 ms), and the task's own
//!   createdAt -> startedAt (server-side, from the same DescribeTasks answer), split at
//!   pullStartedAt and pullStoppedAt to show where the time goes.
//!
//! - plain: the same RunTask -> RUNNING against a second cluster run as the single-host demo runs
//!   (no TLS, agents without certificates, unsigned calls), to show what TLS, client certificates
//!   and SigV4 signing cost (issue 7's target: p50 within 5 ms).
//!
//! The three are measured interleaved (floor, plain, berth, floor, ...) after warm-up runs of
//! each.
//! - networks (issue 8): RunTask -> RUNNING of the same task in networkMode none, bridge with one
//!   published port (a dynamic host port: namespace, veth, address, DNAT) and awsvpc (namespace,
//!   veth on the subnet's bridge, address, security-group rules), interleaved after warm-up runs
//!   of each; the figures are what bridge and awsvpc add over none (target: at most 20 ms at
//!   p50). `--network-runs N` (default COUNT; 0 skips it).
//!
//! Then `--tasks N` long-running tasks are started and the agent's VmRSS read with all of them
//! RUNNING; then they are stopped (a failure if they do not all reach STOPPED). Everything runs in a private containerd, controller and agent that are removed at
//! the end. Prints figures; exits non-zero only when something fails, never on a missed target.
//!
//!   cargo build --release --workspace && target/release/bench [COUNT] [--tasks N] [--warmup N]

use anyhow::{bail, ensure, Context, Result};
use berth_agent::runtime::containerd::Containerd;
use berth_agent::runtime::spec::{self, SpecContext};
use berth_agent::runtime::{CreateContainer, ImageConfig, Runtime};
use berth_proto::status::TaskStatus;
use berth_proto::v1::ecs_client::EcsClient;
use berth_proto::v1::*;
use berth_proto::Timestamp;
use berth_tests::{prerequisites, Cluster, IMAGE};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};
use tonic::transport::Channel;

/// How often the client asks for the task's status while timing it: often enough to see RUNNING
/// within 5 ms, rarely enough not to take CPU from the container being started (2 cores here).
const POLL: Duration = Duration::from_millis(5);
/// How often to poll outside the timed part (stops, the many-tasks run).
const POLL_SLOW: Duration = Duration::from_millis(50);
/// A wait for many tasks fails when none of them has changed for this long.
const STALL: Duration = Duration::from_secs(60);
/// The RSS target with `--tasks` running tasks.
const RSS_TARGET_MIB: f64 = 60.0;
/// The start-latency target: Berth's client-observed p50 against the floor's p50.
const RATIO_TARGET: f64 = 1.25;
/// What a network mode may add to RunTask -> RUNNING's p50 over none (issue 8).
const NETWORK_TARGET_MS: f64 = 20.0;
/// What TLS and signed calls may add to RunTask -> RUNNING's p50 (issue 7).
const SECURITY_TARGET_MS: f64 = 5.0;
/// containerd's namespace: the agent's default, so the floor uses the same image and snapshots.
const NAMESPACE: &str = "berth";
const SIGKILL: u32 = 9;

/// The bench's one container: long-running, exits at once on SIGTERM. Memory 16 MiB so that
/// `--tasks 200` fits any instance with 3.2 GiB; no cpu, so placement never runs out of CPU.
/// stopTimeout 2 s: a stop that arrives before sh has set its trap is ignored (sh is the PID
/// namespace's init), and the bench stops each task right after it is RUNNING.
fn app_definition() -> String {
    app_definition_with("[]")
}

/// [`app_definition`] with these portMappings.
fn app_definition_with(port_mappings: &str) -> String {
    format!(
        r#"{{"name": "app", "image": "{IMAGE}", "memory": 16, "stopTimeout": 2,
          "portMappings": {port_mappings},
          "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}}"#
    )
}

struct Args {
    count: usize,
    tasks: usize,
    warmup: usize,
    network_runs: Option<usize>,
}

const USAGE: &str =
    "usage: bench [COUNT (default 50)] [--tasks N (default 200; 0 skips it)] [--warmup N (default 3)] [--network-runs N (default COUNT; 0 skips it)]";

fn args() -> Result<Args> {
    let mut out = Args {
        count: 50,
        tasks: 200,
        warmup: 3,
        network_runs: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<usize> {
        let v = v.with_context(|| format!("{flag} needs a number; {USAGE}"))?;
        v.parse()
            .with_context(|| format!("{flag} {v}: not a number; {USAGE}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--tasks" => out.tasks = num("--tasks", it.next())?,
            "--warmup" => out.warmup = num("--warmup", it.next())?,
            "--network-runs" => out.network_runs = Some(num("--network-runs", it.next())?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => out.count = num("COUNT", Some(a))?,
        }
    }
    ensure!(out.count > 0, "COUNT must be at least 1; {USAGE}");
    Ok(out)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// n, p50 and p99 (the maximum when n < 100, and labelled so).
struct Stats {
    n: usize,
    p50: f64,
    p99: f64,
}

impl Stats {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        Stats {
            n: v.len(),
            p50: percentile(&v, 0.5),
            p99: percentile(&v, 0.99),
        }
    }
}

/// The kB value of a line of /proc/PID/status, in MiB.
fn proc_status_mib(pid: u32, key: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let kb: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {key} in {path}"))?;
    Ok(kb / 1024.0)
}

/// A log line without its terminal colour codes (ESC [ ... m).
fn without_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ts_ms(from: Option<&Timestamp>, to: Option<&Timestamp>) -> Option<f64> {
    let (a, b) = (from?, to?);
    Some((b.seconds - a.seconds) as f64 * 1000.0 + (b.nanos - a.nanos) as f64 / 1e6)
}

/// The floor's container: the spec the agent builds for the bench's container definition, with
/// the agent's own `spec::build`. The one place that knows `spec::build`'s signature.
fn floor_container(
    def: &ContainerDefinition,
    image: &ImageConfig,
    id: &str,
    cgroup_parent: &str,
    log_dir: &Path,
) -> Result<CreateContainer> {
    // The agent's defaults, with the RLIMIT_NOFILE it would grant on this host.
    let security = spec::SecurityOptions {
        default_nofile: spec::grantable_nofile().min(spec::DEFAULT_NOFILE),
        ..Default::default()
    };
    let ctx = SpecContext {
        network_mode: "none",
        cgroups_path: format!("/{cgroup_parent}/bench-floor/{id}"),
        hostname: id.chars().take(12).collect(),
        security: &security,
        // runc makes the container a fresh network namespace: the floor does no network work.
        netns_path: None,
        etc_files: None,
        pid: Default::default(),
        ipc: Default::default(),
        users: None,
        task_shm: None,
    };
    Ok(CreateContainer {
        id: id.to_string(),
        image: image.clone(),
        spec: spec::build(def, image, &ctx)?,
        labels: HashMap::new(),
        log_path: log_dir.join(format!("{id}.log")),
        open_stdin: false,
    })
}

/// containerd create + start through one persistent client, with the agent's runtime code.
struct Floor {
    runtime: Containerd,
    image: ImageConfig,
    def: ContainerDefinition,
    cgroup_parent: String,
    log_dir: PathBuf,
    runs: usize,
}

impl Floor {
    /// One create + start (timed), then kill, wait and delete (not timed). Milliseconds.
    async fn once(&mut self) -> Result<f64> {
        let id = format!("bench-floor-{}", self.runs);
        self.runs += 1;
        let c = floor_container(
            &self.def,
            &self.image,
            &id,
            &self.cgroup_parent,
            &self.log_dir,
        )?;
        let t = Instant::now();
        let started = async {
            self.runtime.create(&c).await?;
            self.runtime.start(&c).await
        }
        .await;
        let elapsed = ms(t.elapsed());
        let removed = self.remove(&id).await;
        started.with_context(|| format!("floor: starting {id}"))?;
        removed?;
        Ok(elapsed)
    }

    async fn remove(&self, id: &str) -> Result<()> {
        let rt = &self.runtime;
        rt.kill(id, SIGKILL)
            .await
            .with_context(|| format!("floor: killing {id}"))?;
        tokio::time::timeout(Duration::from_secs(30), rt.wait(id))
            .await
            .with_context(|| format!("floor: {id} did not exit within 30 s of SIGKILL"))?
            .with_context(|| format!("floor: waiting for {id}"))?;
        rt.delete(id)
            .await
            .with_context(|| format!("floor: deleting {id}"))
    }
}

/// One RunTask -> RUNNING, in milliseconds.
#[derive(Default)]
struct Sample {
    /// RunTask sent -> DescribeTasks shows RUNNING.
    client: f64,
    /// The task's createdAt -> startedAt.
    server: f64,
    /// createdAt -> pullStartedAt: the controller stores and sends it, the agent takes it in.
    intake: f64,
    /// pullStartedAt -> pullStoppedAt: the agent resolves the image.
    image: f64,
    /// pullStoppedAt -> startedAt: task cgroup, containerd create + start, records.
    start: f64,
}

struct Berth {
    client: EcsClient<Channel>,
    /// The controller's URL and admin key: every call is signed when the controller requires
    /// it (none: the plain run, as the single-host demo).
    endpoint: String,
    creds: Option<berth_proto::sigv4::Credentials>,
    cluster: String,
    task_definition: String,
    /// awsvpcConfiguration for an awsvpc task definition.
    network: Option<NetworkConfiguration>,
}

impl Berth {
    fn signed<M: prost::Message>(&self, msg: M, path: &str) -> tonic::Request<M> {
        match &self.creds {
            Some(creds) => berth_tests::signed_request(
                &self.endpoint,
                msg,
                path,
                creds,
                std::time::SystemTime::now(),
            ),
            None => tonic::Request::new(msg),
        }
    }

    /// A client of `c`'s controller, signing when it requires signed calls.
    async fn of(c: &Cluster, task_definition: String) -> Result<Berth> {
        Ok(Berth {
            client: EcsClient::new(c.channel().await.context("connecting to the controller")?),
            endpoint: c.endpoint.clone(),
            creds: c
                .auth
                .then(|| berth_tests::read_credentials(&c.admin_credentials())),
            cluster: c.name.clone(),
            task_definition,
            network: None,
        })
    }

    async fn run(&mut self, count: usize) -> Result<Vec<String>> {
        let r = self
            .client
            .run_task(self.signed(
                RunTaskRequest {
                    cluster: Some(self.cluster.clone()),
                    task_definition: self.task_definition.clone(),
                    count: Some(count as i32),
                    network_configuration: self.network.clone(),
                    ..Default::default()
                },
                "/berth.v1.Ecs/RunTask",
            ))
            .await
            .context("run-task")?
            .into_inner();
        if let Some(f) = r.failures.first() {
            bail!(
                "run-task placed no task: {} {}",
                f.reason,
                f.detail.as_deref().unwrap_or("")
            );
        }
        ensure!(
            r.tasks.len() == count,
            "run-task placed {} of {count} tasks",
            r.tasks.len()
        );
        Ok(r.tasks.into_iter().map(|t| t.task_arn).collect())
    }

    async fn describe(&mut self, arns: &[String]) -> Result<Vec<Task>> {
        let mut out = Vec::with_capacity(arns.len());
        // DescribeTasks takes at most 100 tasks per call.
        for chunk in arns.chunks(100) {
            let r = self
                .client
                .describe_tasks(self.signed(
                    DescribeTasksRequest {
                        cluster: Some(self.cluster.clone()),
                        tasks: chunk.to_vec(),
                        include: vec![],
                    },
                    "/berth.v1.Ecs/DescribeTasks",
                ))
                .await
                .context("describe-tasks")?
                .into_inner();
            if let Some(f) = r.failures.first() {
                bail!(
                    "describe-tasks: {} {}",
                    f.reason,
                    f.detail.as_deref().unwrap_or("")
                );
            }
            out.extend(r.tasks);
        }
        Ok(out)
    }

    /// Polls until every task is `status`; fails on a task that stopped instead of running, after
    /// `timeout`, or when no task has reached `status` for [`STALL`].
    async fn wait_all(
        &mut self,
        arns: &[String],
        status: TaskStatus,
        poll: Duration,
        timeout: Duration,
    ) -> Result<Vec<Task>> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut last_note = started;
        let (mut last_done, mut last_progress) = (0, started);
        loop {
            let tasks = self.describe(arns).await?;
            let done = tasks.iter().filter(|t| status == t.last_status).count();
            if done == arns.len() {
                return Ok(tasks);
            }
            if done > last_done {
                (last_done, last_progress) = (done, Instant::now());
            } else if last_progress.elapsed() >= STALL {
                bail!(
                    "stalled: {done} of {} tasks {status} and none more for {} s",
                    arns.len(),
                    STALL.as_secs()
                );
            }
            if status != TaskStatus::Stopped {
                if let Some(t) = tasks.iter().find(|t| TaskStatus::Stopped == t.last_status) {
                    bail!(
                        "task {} stopped: {} {}",
                        t.task_arn,
                        t.stop_code.as_deref().unwrap_or(""),
                        t.stopped_reason.as_deref().unwrap_or("")
                    );
                }
            }
            if poll >= POLL_SLOW && last_note.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "  {done} of {} tasks {status} after {:.0} s",
                    arns.len(),
                    started.elapsed().as_secs_f64()
                );
                last_note = Instant::now();
            }
            if Instant::now() >= deadline {
                bail!(
                    "{done} of {} tasks reached {status} within {timeout:?}",
                    arns.len()
                );
            }
            tokio::time::sleep(poll).await;
        }
    }

    async fn stop(&mut self, arns: &[String], timeout: Duration) -> Result<()> {
        for arn in arns {
            let req = self.signed(
                StopTaskRequest {
                    cluster: Some(self.cluster.clone()),
                    task: arn.clone(),
                    reason: Some("bench".into()),
                },
                "/berth.v1.Ecs/StopTask",
            );
            self.client.stop_task(req).await.context("stop-task")?;
        }
        self.wait_all(arns, TaskStatus::Stopped, POLL_SLOW, timeout)
            .await
            .map(|_| ())
    }

    /// One RunTask -> RUNNING, then stops the task (not timed).
    async fn once(&mut self) -> Result<Sample> {
        let t = Instant::now();
        let arns = self.run(1).await?;
        let tasks = self
            .wait_all(&arns, TaskStatus::Running, POLL, Duration::from_secs(60))
            .await?;
        let client = ms(t.elapsed());
        let task = tasks.first().context("describe-tasks returned no task")?;
        let span = |from: &Option<Timestamp>, to: &Option<Timestamp>, what: &str| {
            ts_ms(from.as_ref(), to.as_ref())
                .with_context(|| format!("task {} lacks {what}", task.task_arn))
        };
        let sample = Sample {
            client,
            server: span(&task.created_at, &task.started_at, "createdAt or startedAt")?,
            intake: span(&task.created_at, &task.pull_started_at, "pullStartedAt")?,
            image: span(
                &task.pull_started_at,
                &task.pull_stopped_at,
                "pullStartedAt or pullStoppedAt",
            )?,
            start: span(&task.pull_stopped_at, &task.started_at, "pullStoppedAt")?,
        };
        self.stop(&arns, Duration::from_secs(60)).await?;
        Ok(sample)
    }
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "MISSED (a figure, not a failure: timings on shared machines are noisy)"
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !prerequisites() {
        eprintln!("bench: needs root, containerd, runc, ctr and busybox-static");
        return ExitCode::FAILURE;
    }
    let result = bench(&args).await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the bench and prints its report. Its cluster (containerd, controller, agent, temp dir,
/// cgroups) is removed when it returns, on failure too.
async fn bench(args: &Args) -> Result<()> {
    // The default deployment (TLS, agents with certificates, signed calls) and the plain one
    // (the single-host demo's: none of them), side by side on this host.
    let c = Cluster::start("bench");
    let plain = Cluster::start_plain("bench-plain");
    let result = phases(&c, &plain, args).await;
    if result.is_err() {
        for (which, c) in [("secure", &c), ("plain", &plain)] {
            let log = c.agent_log();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            eprintln!("the {which} agent's last log lines:");
            for l in tail.into_iter().rev() {
                eprintln!("  {}", without_ansi(l));
            }
        }
    }
    result
}

async fn phases(c: &Cluster, plain: &Cluster, args: &Args) -> Result<()> {
    let (runtime, containerd_version) = Containerd::connect(&c.socket(), NAMESPACE)
        .await
        .context("connecting to the bench's containerd")?;
    let image = runtime.image(IMAGE).await.context("resolving the image")?;
    let def: ContainerDefinition =
        serde_json::from_str(&app_definition()).context("the bench's container definition")?;
    let mut floor = Floor {
        runtime,
        image,
        def,
        cgroup_parent: c.cgroup_parent.clone(),
        log_dir: c.dir.join("bench-floor"),
        runs: 0,
    };

    let task_definition = c.register(&format!(
        r#"{{"family": "bench", "networkMode": "none", "containerDefinitions": [{}]}}"#,
        app_definition()
    ));
    let mut berth = Berth::of(c, task_definition).await?;
    let plain_definition = plain.register(&format!(
        r#"{{"family": "bench", "networkMode": "none", "containerDefinitions": [{}]}}"#,
        app_definition()
    ));
    let mut unsecured = Berth::of(plain, plain_definition).await?;
    let agent = c.agent_pid().context("agent pid")?;
    let idle_rss = proc_status_mib(agent, "VmRSS:")?;

    // Start latency, interleaved.
    for _ in 0..args.warmup {
        floor.once().await?;
        unsecured.once().await?;
        berth.once().await?;
    }
    let (mut floor_ms, mut samples, mut plain_samples) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.count {
        floor_ms.push(floor.once().await?);
        plain_samples.push(unsecured.once().await?);
        samples.push(berth.once().await?);
    }
    println!(
        "host: {} cores, containerd {containerd_version}, image {IMAGE}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    print_latency(args, Stats::of(floor_ms), &samples, &plain_samples);
    let network_runs = args.network_runs.unwrap_or(args.count);
    if network_runs > 0 {
        networks(c, args.warmup, network_runs).await?;
    }

    // Memory with many running tasks.
    println!();
    println!("agent RSS idle (connected, no task yet): {idle_rss:.1} MiB");
    if args.tasks == 0 {
        return Ok(());
    }
    let t = Instant::now();
    let mut arns = Vec::with_capacity(args.tasks);
    while arns.len() < args.tasks {
        let batch = (args.tasks - arns.len()).min(10);
        arns.extend(berth.run(batch).await?);
    }
    let many_timeout = Duration::from_secs(60) + Duration::from_secs(2) * args.tasks as u32;
    berth
        .wait_all(&arns, TaskStatus::Running, POLL_SLOW, many_timeout)
        .await?;
    let all_running = t.elapsed();
    let busy_rss = proc_status_mib(agent, "VmRSS:")?;
    let peak_rss = proc_status_mib(agent, "VmHWM:")?;
    println!(
        "agent RSS with {} running tasks: {busy_rss:.1} MiB (target < {RSS_TARGET_MIB:.0} MiB: {}); peak so far (VmHWM) {peak_rss:.1} MiB",
        args.tasks,
        met(busy_rss < RSS_TARGET_MIB)
    );
    println!(
        "{} tasks: all RUNNING {:.1} s after the first RunTask",
        args.tasks,
        all_running.as_secs_f64()
    );
    let t = Instant::now();
    berth.stop(&arns, many_timeout).await?;
    println!(
        "{} tasks: all STOPPED {:.1} s after the first StopTask",
        args.tasks,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// RunTask -> RUNNING in none, bridge (one published port) and awsvpc, interleaved.
async fn networks(c: &Cluster, warmup: usize, runs: usize) -> Result<()> {
    let of_mode = |mode: &str, ports: &str| {
        c.register(&format!(
            r#"{{"family": "bench-{mode}", "networkMode": "{mode}", "containerDefinitions": [{}]}}"#,
            app_definition_with(ports)
        ))
    };
    let mut none = Berth::of(c, of_mode("none", "[]")).await?;
    let mut bridge = Berth::of(c, of_mode("bridge", r#"[{"containerPort": 80}]"#)).await?;
    let mut awsvpc = Berth::of(c, of_mode("awsvpc", r#"[{"containerPort": 80}]"#)).await?;
    awsvpc.network = Some(NetworkConfiguration {
        awsvpc_configuration: Some(AwsVpcConfiguration {
            subnets: vec![c.net.subnet.clone()],
            ..Default::default()
        }),
    });
    for _ in 0..warmup {
        none.once().await?;
        bridge.once().await?;
        awsvpc.once().await?;
    }
    let (mut n, mut b, mut a) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        n.push(none.once().await?.client);
        b.push(bridge.once().await?.client);
        a.push(awsvpc.once().await?.client);
    }
    let high = if runs >= 100 { "p99" } else { "max" };
    let (n, b, a) = (Stats::of(n), Stats::of(b), Stats::of(a));
    println!();
    println!(
        "network modes: RunTask -> RUNNING, client-observed, {runs} interleaved runs each after {warmup} warm-up runs each"
    );
    println!(
        "{:<44} {:>4} {:>9} {:>9} {:>12} {:>12}",
        "",
        "n",
        "p50 ms",
        format!("{high} ms"),
        "p50 added",
        format!("{high} added")
    );
    for (label, s) in [
        ("none   (own namespace, loopback)", &n),
        ("bridge (veth on the bridge, 1 published port)", &b),
        ("awsvpc (veth on the subnet, security groups)", &a),
    ] {
        println!(
            "{label:<44} {:>4} {:>9.1} {:>9.1} {:>+12.1} {:>+12.1}",
            s.n,
            s.p50,
            s.p99,
            s.p50 - n.p50,
            s.p99 - n.p99
        );
    }
    for (mode, s) in [("bridge", &b), ("awsvpc", &a)] {
        let added = s.p50 - n.p50;
        println!(
            "target: {mode} adds at most {NETWORK_TARGET_MS:.0} ms at p50 over none: {added:+.1} ms, {}",
            met(added <= NETWORK_TARGET_MS)
        );
    }
    Ok(())
}

fn print_latency(args: &Args, floor: Stats, samples: &[Sample], plain: &[Sample]) {
    let of = |f: fn(&Sample) -> f64| Stats::of(samples.iter().map(f).collect());
    let high = if args.count >= 100 { "p99" } else { "max" };
    println!(
        "start latency: {} interleaved runs each (floor, berth, ...) after {} warm-up runs each; client polls every {} ms",
        args.count,
        args.warmup,
        POLL.as_millis()
    );
    println!();
    println!(
        "{:<52} {:>4} {:>9} {:>9} {:>10} {:>10}",
        "",
        "n",
        "p50 ms",
        format!("{high} ms"),
        "p50/floor",
        format!("{high}/floor")
    );
    let row = |label: &str, s: &Stats, ratio: bool| {
        let r = |a: f64, b: f64| {
            if ratio {
                format!("{:.2}x", a / b)
            } else {
                String::new()
            }
        };
        println!(
            "{label:<52} {:>4} {:>9.1} {:>9.1} {:>10} {:>10}",
            s.n,
            s.p50,
            s.p99,
            r(s.p50, floor.p50),
            r(s.p99, floor.p99)
        );
    };
    row(
        "floor  containerd create+start (gRPC, agent's code)",
        &floor,
        false,
    );
    let client = of(|s| s.client);
    row("berth  RunTask -> RUNNING, client-observed", &client, true);
    row(
        "berth  createdAt -> startedAt, server-side",
        &of(|s| s.server),
        true,
    );
    row(
        "         createdAt -> pullStartedAt (link, intake)",
        &of(|s| s.intake),
        false,
    );
    row(
        "         pullStartedAt -> pullStoppedAt (image)",
        &of(|s| s.image),
        false,
    );
    row(
        "         pullStoppedAt -> startedAt (cgroup, run)",
        &of(|s| s.start),
        false,
    );
    let plain_client = Stats::of(plain.iter().map(|s| s.client).collect());
    row(
        "plain  RunTask -> RUNNING, no TLS, unsigned (demo)",
        &plain_client,
        true,
    );
    let cost = client.p50 - plain_client.p50;
    println!(
        "TLS + signed calls + client certificates: p50 {:.1} ms vs {:.1} ms without, {cost:+.1} ms (target within {SECURITY_TARGET_MS:.0} ms: {})",
        client.p50,
        plain_client.p50,
        met(cost <= SECURITY_TARGET_MS)
    );
    let ratio = client.p50 / floor.p50;
    println!(
        "target: client-observed p50 <= {RATIO_TARGET:.2}x floor p50: {ratio:.2}x, {}",
        met(ratio <= RATIO_TARGET)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p99_is_the_maximum_below_100_samples() {
        let s = Stats::of((1..=50).rev().map(f64::from).collect());
        assert_eq!((s.n, s.p50, s.p99), (50, 25.0, 50.0));
        let s = Stats::of((1..=200).map(f64::from).collect());
        assert_eq!((s.p50, s.p99), (100.0, 198.0));
    }

    #[test]
    fn log_lines_lose_their_colour_codes() {
        assert_eq!(
            without_ansi("\x1b[2m2026\x1b[0m \x1b[32m INFO\x1b[0m task stopped"),
            "2026  INFO task stopped"
        );
    }

    #[test]
    fn timestamps_subtract_to_milliseconds() {
        let a = Timestamp {
            seconds: 10,
            nanos: 900_000_000,
        };
        let b = Timestamp {
            seconds: 11,
            nanos: 150_000_000,
        };
        assert_eq!(ts_ms(Some(&a), Some(&b)), Some(250.0));
        assert_eq!(ts_ms(Some(&a), None), None);
    }
}
