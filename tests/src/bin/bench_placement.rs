//! Benchmark (issue 12): the controller's placement throughput.
//!
//! Two processes, so that the RSS printed is the controller's own. The controller's process
//! (the one you start): the real `Controller` over the real redb store (a temp dir), serving the
//! agent link and the ECS API with tonic on 127.0.0.1:0, and nothing else. The load process (the
//! same binary, re-executed with the hidden `--role load --addr ADDR --dir DIR`): `--agents`
//! simulated agents, each registering over gRPC and holding a Session (its own connection) that
//! speaks the real agent protocol: AgentHello, a DesiredTasksAck for every desired set, a
//! Heartbeat for every heartbeat. They run nothing and report nothing. Then `--clients`
//! concurrent clients call RunTask over gRPC (`--count` tasks per call) until `--tasks` tasks are
//! placed. The load process also runs the floor (below), so that its redb store is not counted
//! in the controller's RSS.
//!
//! The controller's process drives the load process over its stdin/stdout, one line per request
//! and one per answer (`agents N`, `place TASKS CLIENTS COUNT`, `value HEX`, `floor N COUNT`,
//! `counters`), each answer awaited with a timeout; the load process is killed on any error, and
//! ends when its stdin closes.
//!
//! Printed: placements/s, RunTask p50/p99 (as the clients see them, timed in the load process),
//! how many store transactions the placements took (RunTasks per transaction: the group commit's
//! size), the RSS (VmRSS/VmHWM) of the controller's process alone and, beside it, of the load
//! process, and the floor: fsync'd commits/s of a `RedbStore` in the same temp dir, each commit
//! as large as one RunTask's writes (`--count` task records of the real size), through the same
//! `Store` trait, measured in rounds interleaved with the placement rounds after a warm-up; then
//! the ratio placements/s ÷ commits/s.
//!
//! The unit test runs the same requests and answers with the load as a task in its own process
//! (an in-memory pipe instead of stdin/stdout), so its RSS is of both together.
//!
//!   cargo build --release -p berth-tests --bin bench-placement &&
//!   target/release/bench-placement --agents 1000 --tasks 100000

use anyhow::{anyhow, bail, Context, Result};
use berth_controller::api::agent::AgentApi;
use berth_controller::api::ecs::EcsApi;
use berth_controller::fleet::Fleet;
use berth_controller::service::Controller;
use berth_controller::store::redb_store::RedbStore;
use berth_controller::store::{Store, StoreError, Write};
use berth_proto::link;
use berth_proto::v1::agent_message::Message as FromAgent;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::*;
use prost::Message;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// Every call to the controller is bounded by this.
const CALL: Duration = Duration::from_secs(60);
/// Every answer of the load process (the longest: registering every agent, or a placement
/// round), and every request it waits for, is bounded by this.
const ANSWER: Duration = Duration::from_secs(300);
/// Interleaved rounds: floor, placements, floor, placements...
const ROUNDS: usize = 5;

struct Args {
    agents: usize,
    tasks: usize,
    clients: usize,
    count: i32,
    floor_commits: usize,
}

fn args(given: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        agents: 1000,
        tasks: 100_000,
        clients: 128,
        count: 10,
        floor_commits: 200,
    };
    let mut it = given;
    while let Some(flag) = it.next() {
        let mut value = || -> Result<usize> {
            it.next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--agents" => a.agents = value()?,
            "--tasks" => a.tasks = value()?,
            "--clients" => a.clients = value()?,
            "--count" => a.count = value()? as i32,
            "--floor-commits" => a.floor_commits = value()?,
            other => bail!(
                "unknown argument {other} (--agents N --tasks N --clients N --count 1-10 --floor-commits N)"
            ),
        }
    }
    if !(1..=10).contains(&a.count) || a.agents == 0 || a.clients == 0 || a.tasks == 0 {
        bail!("--count is 1-10; --agents, --clients, --tasks at least 1");
    }
    Ok(a)
}

/// The controller's store, counting its transactions.
struct Counting {
    inner: RedbStore,
    commits: AtomicU64,
}

impl Store for Counting {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(prefix)
    }
    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.inner.commit(writes)
    }
}

async fn channel(addr: SocketAddr) -> Result<Channel> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CALL)
        .timeout(CALL)
        .connect()
        .await?)
}

fn msg(m: FromAgent) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// One simulated agent: registers, opens its session, then acks every desired set and answers
/// every heartbeat until the stream ends. Returns its instance id once its first desired set
/// is acked.
async fn agent(
    addr: SocketAddr,
    desired_sets: Arc<AtomicU64>,
    desired_bytes: Arc<AtomicU64>,
) -> Result<String> {
    let ch = channel(addr).await?;
    let arn = link::client(ch.clone())
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            total_resources: ["CPU", "MEMORY"]
                .iter()
                .map(|n| Resource {
                    name: n.to_string(),
                    r#type: "INTEGER".into(),
                    integer_value: 1 << 20,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner()
        .container_instance
        .context("no container instance")?
        .container_instance_arn;
    let id = berth_proto::arn::short_id("container-instance", &arn)
        .context("not a container instance ARN")?
        .to_string();
    let (tx, rx) = mpsc::channel(64);
    tx.send(msg(FromAgent::Hello(AgentHello {
        container_instance_arn: arn,
        cluster: "default".into(),
        protocol_version: link::PROTOCOL_VERSION,
        agent_version: "bench".into(),
        state_epoch: "bench".into(),
    })))
    .await?;
    let mut stream = link::client(ch)
        .session(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        while let Some(Ok(m)) = stream.next().await {
            let answer = match m.message {
                Some(ToAgent::DesiredTasks(d)) => {
                    desired_sets.fetch_add(1, Ordering::Relaxed);
                    desired_bytes.fetch_add(d.encoded_len() as u64, Ordering::Relaxed);
                    FromAgent::DesiredTasksAck(d.seq)
                }
                Some(ToAgent::Heartbeat(_)) => FromAgent::Heartbeat(Heartbeat {}),
                _ => continue,
            };
            let acked = matches!(answer, FromAgent::DesiredTasksAck(_));
            if tx.send(msg(answer)).await.is_err() {
                break;
            }
            if acked {
                if let Some(r) = ready_tx.take() {
                    let _ = r.send(());
                }
            }
        }
    });
    tokio::time::timeout(CALL, ready)
        .await
        .context("no desired set within the call timeout")?
        .context("session ended before its first desired set")?;
    Ok(id)
}

/// Registers `n` agents with their sessions, at most 100 at a time: their ids.
async fn agents(
    addr: SocketAddr,
    n: usize,
    desired_sets: &Arc<AtomicU64>,
    desired_bytes: &Arc<AtomicU64>,
) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let mut batch = Vec::new();
        for _ in 0..(n - ids.len()).min(100) {
            batch.push(tokio::spawn(agent(
                addr,
                desired_sets.clone(),
                desired_bytes.clone(),
            )));
        }
        for h in batch {
            ids.push(h.await??);
        }
    }
    Ok(ids)
}

/// Per-call latencies (seconds) and tasks placed by one placement round.
async fn place(
    addr: SocketAddr,
    clients: usize,
    count: i32,
    tasks: usize,
) -> Result<(Vec<f64>, usize)> {
    let calls = tasks.div_ceil(count as usize);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..clients {
        let ch = channel(addr).await?;
        let next = next.clone();
        handles.push(tokio::spawn(async move {
            let mut ecs = ecs_client::EcsClient::new(ch);
            let mut lat = Vec::new();
            let mut placed = 0usize;
            while next.fetch_add(1, Ordering::Relaxed) < calls as u64 {
                let t = Instant::now();
                let r = ecs
                    .run_task(RunTaskRequest {
                        task_definition: "bench".into(),
                        count: Some(count),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                lat.push(t.elapsed().as_secs_f64());
                if !r.failures.is_empty() {
                    bail!("RunTask failures: {:?}", r.failures);
                }
                placed += r.tasks.len();
            }
            Ok::<_, anyhow::Error>((lat, placed))
        }));
    }
    let mut lat = Vec::new();
    let mut placed = 0;
    for h in handles {
        let (l, p) = h.await??;
        lat.extend(l);
        placed += p;
    }
    Ok((lat, placed))
}

/// `n` serial commits of `count` task-sized puts each: the seconds they took.
async fn floor(store: Arc<RedbStore>, n: usize, count: i32, value: Arc<Vec<u8>>) -> Result<f64> {
    let base = NEXT_FLOOR_KEY.fetch_add(n as u64, Ordering::Relaxed);
    tokio::task::spawn_blocking(move || -> Result<f64> {
        let t = Instant::now();
        for i in 0..n as u64 {
            let writes = (0..count)
                .map(|j| Write::Put(format!("task/floor{:012}-{j}", base + i), value.to_vec()))
                .collect();
            store.commit(writes)?;
        }
        Ok(t.elapsed().as_secs_f64())
    })
    .await?
}

static NEXT_FLOOR_KEY: AtomicU64 = AtomicU64::new(0);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A field of /proc/`pid`/status in MiB (`pid` is a number or "self").
fn proc_status_mib(pid: &str, field: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/status");
    let s = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in {path}"))?;
    let kb: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// "VmRSS X MiB, peak VmHWM Y MiB" of a process.
fn rss(pid: &str) -> Result<String> {
    Ok(format!(
        "VmRSS {:.0} MiB, peak VmHWM {:.0} MiB",
        proc_status_mib(pid, "VmRSS:")?,
        proc_status_mib(pid, "VmHWM:")?
    ))
}

/// Removes the temp dir on every exit path.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The next whitespace-separated word of a request or an answer, parsed.
fn word<T: FromStr>(words: &mut std::str::SplitWhitespace<'_>, what: &str) -> Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    words
        .next()
        .with_context(|| format!("no {what}"))?
        .parse()
        .with_context(|| format!("{what}: not a number"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd hex length {}", s.len());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| {
            let pair = s.get(i..i + 2).context("not ASCII hex")?;
            u8::from_str_radix(pair, 16).with_context(|| format!("not hex: {pair}"))
        })
        .collect()
}

/// The load process's side: answers the controller's process's requests, one line each, until
/// its input ends. Nothing else is written to `output`.
async fn serve_load(
    addr: SocketAddr,
    dir: &Path,
    input: impl AsyncBufRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
) -> Result<()> {
    let floor_store = Arc::new(RedbStore::open(&dir.join("floor.redb"))?);
    let mut value = Arc::new(Vec::new());
    let desired_sets = Arc::new(AtomicU64::new(0));
    let desired_bytes = Arc::new(AtomicU64::new(0));
    let mut requests = input.lines();
    loop {
        let Some(request) = tokio::time::timeout(ANSWER, requests.next_line())
            .await
            .context("no request from the controller's process within the timeout")??
        else {
            return Ok(());
        };
        let mut w = request.split_whitespace();
        let answer = match w.next() {
            Some("agents") => {
                let n: usize = word(&mut w, "agent count")?;
                let t = Instant::now();
                let ids = agents(addr, n, &desired_sets, &desired_bytes).await?;
                format!("agents {} {}", t.elapsed().as_secs_f64(), ids.join(" "))
            }
            Some("place") => {
                let tasks = word(&mut w, "tasks")?;
                let clients = word(&mut w, "clients")?;
                let count = word(&mut w, "count")?;
                let t = Instant::now();
                let (lat, placed) = place(addr, clients, count, tasks).await?;
                let secs = t.elapsed().as_secs_f64();
                let lat: Vec<String> = lat.iter().map(f64::to_string).collect();
                format!("placed {placed} {secs} {}", lat.join(" "))
            }
            Some("value") => {
                value = Arc::new(unhex(w.next().context("no value")?)?);
                "value".to_string()
            }
            Some("floor") => {
                let n = word(&mut w, "commits")?;
                let count = word(&mut w, "count")?;
                let secs = floor(floor_store.clone(), n, count, value.clone()).await?;
                format!("floor {secs}")
            }
            Some("counters") => format!(
                "counters {} {}",
                desired_sets.load(Ordering::Relaxed),
                desired_bytes.load(Ordering::Relaxed)
            ),
            _ => bail!("unknown request {request:?}"),
        };
        output.write_all(answer.as_bytes()).await?;
        output.write_all(b"\n").await?;
        output.flush().await?;
    }
}

/// Where the load runs: its own process (the bench), or a task of this process (the test).
enum Launch {
    Process,
    /// Only the unit test's.
    #[cfg_attr(not(test), allow(dead_code))]
    Task,
}

/// The controller's process's handle on the load: requests out, answers in.
struct Load {
    answers: Lines<Box<dyn AsyncBufRead + Unpin + Send>>,
    requests: Option<Box<dyn AsyncWrite + Unpin + Send>>,
    end: LoadEnd,
}

enum LoadEnd {
    /// Killed when dropped (kill_on_drop).
    Process(tokio::process::Child),
    /// Aborted when dropped.
    Task(tokio::task::JoinHandle<Result<()>>),
}

impl Drop for Load {
    fn drop(&mut self) {
        if let LoadEnd::Task(t) = &self.end {
            t.abort();
        }
    }
}

impl Load {
    fn start(launch: Launch, addr: SocketAddr, dir: &Path) -> Result<Self> {
        Ok(match launch {
            Launch::Process => {
                let mut child = tokio::process::Command::new(std::env::current_exe()?)
                    .arg("--role")
                    .arg("load")
                    .arg("--addr")
                    .arg(addr.to_string())
                    .arg("--dir")
                    .arg(dir)
                    .stdin(std::process::Stdio::piped())
                    .stdout(std::process::Stdio::piped())
                    .kill_on_drop(true)
                    .spawn()
                    .context("starting the load process")?;
                let stdin = child.stdin.take().context("no stdin")?;
                let stdout = child.stdout.take().context("no stdout")?;
                Load {
                    answers: (Box::new(BufReader::new(stdout))
                        as Box<dyn AsyncBufRead + Unpin + Send>)
                        .lines(),
                    requests: Some(Box::new(stdin)),
                    end: LoadEnd::Process(child),
                }
            }
            Launch::Task => {
                let (ours, theirs) = tokio::io::duplex(1 << 16);
                let (our_in, our_out) = tokio::io::split(ours);
                let (their_in, their_out) = tokio::io::split(theirs);
                let dir = dir.to_path_buf();
                let task = tokio::spawn(async move {
                    serve_load(addr, &dir, BufReader::new(their_in), their_out).await
                });
                Load {
                    answers: (Box::new(BufReader::new(our_in))
                        as Box<dyn AsyncBufRead + Unpin + Send>)
                        .lines(),
                    requests: Some(Box::new(our_out)),
                    end: LoadEnd::Task(task),
                }
            }
        })
    }

    /// The load process's pid, when it is one.
    fn pid(&self) -> Option<u32> {
        match &self.end {
            LoadEnd::Process(c) => c.id(),
            LoadEnd::Task(_) => None,
        }
    }

    /// Sends `request` and returns the words of its answer after the first, which must be
    /// `kind`.
    async fn ask(&mut self, request: &str, kind: &str) -> Result<String> {
        let requests = self.requests.as_mut().context("the load is finished")?;
        let exchange = async {
            requests.write_all(request.as_bytes()).await?;
            requests.write_all(b"\n").await?;
            requests.flush().await?;
            self.answers.next_line().await
        };
        let answer = match tokio::time::timeout(ANSWER, exchange).await {
            Err(_) => bail!("no answer to {request:?} from the load within {ANSWER:?}"),
            Ok(Ok(Some(answer))) => answer,
            Ok(Ok(None)) | Ok(Err(_)) => return Err(self.gone(request).await),
        };
        match answer.split_once(' ').unwrap_or((&answer, "")) {
            (k, rest) if k == kind => Ok(rest.to_string()),
            _ => bail!("answer to {request:?} is not {kind:?}: {answer:.80}"),
        }
    }

    /// Why the load ended before answering `request`.
    async fn gone(&mut self, request: &str) -> anyhow::Error {
        let why = match &mut self.end {
            LoadEnd::Process(c) => match tokio::time::timeout(CALL, c.wait()).await {
                Ok(Ok(status)) => format!("it exited with {status} (its errors are above)"),
                Ok(Err(e)) => format!("waiting for it: {e}"),
                Err(_) => "its output closed, yet it did not exit".to_string(),
            },
            LoadEnd::Task(t) => match tokio::time::timeout(CALL, t).await {
                Ok(Ok(Err(e))) => format!("{e:#}"),
                Ok(Ok(Ok(()))) => "it returned".to_string(),
                Ok(Err(e)) => format!("{e}"),
                Err(_) => "its output closed, yet it did not return".to_string(),
            },
        };
        anyhow!("the load ended before answering {request:?}: {why}")
    }

    /// Closes the load's input, which ends it, and waits for it to end well.
    async fn finish(mut self) -> Result<()> {
        // Shut down, not only dropped: a half of an in-memory pipe closes it only that way.
        if let Some(mut requests) = self.requests.take() {
            tokio::time::timeout(CALL, requests.shutdown())
                .await
                .context("closing the load's input")??;
        }
        match &mut self.end {
            LoadEnd::Process(c) => {
                let status = tokio::time::timeout(CALL, c.wait())
                    .await
                    .context("the load process did not exit")??;
                if !status.success() {
                    bail!("the load process exited with {status}");
                }
            }
            LoadEnd::Task(t) => tokio::time::timeout(CALL, t)
                .await
                .context("the load did not return")???,
        }
        Ok(())
    }
}

/// The load's desired-set counters: sets and their bytes.
async fn counters(load: &mut Load) -> Result<(u64, u64)> {
    let answer = load.ask("counters", "counters").await?;
    let mut w = answer.split_whitespace();
    Ok((word(&mut w, "sets")?, word(&mut w, "bytes")?))
}

/// A placement round in the load: latencies, tasks placed, seconds.
async fn place_in(load: &mut Load, a: &Args, tasks: usize) -> Result<(Vec<f64>, usize, f64)> {
    let answer = load
        .ask(
            &format!("place {tasks} {} {}", a.clients, a.count),
            "placed",
        )
        .await?;
    let mut w = answer.split_whitespace();
    let placed = word(&mut w, "placed")?;
    let secs = word(&mut w, "seconds")?;
    let lat = w
        .map(|l| l.parse().with_context(|| format!("latency {l}")))
        .collect::<Result<_>>()?;
    Ok((lat, placed, secs))
}

/// A floor round in the load: the seconds it took.
async fn floor_in(load: &mut Load, n: usize, count: i32) -> Result<f64> {
    let answer = load.ask(&format!("floor {n} {count}"), "floor").await?;
    word(&mut answer.split_whitespace(), "seconds")
}

#[tokio::main]
async fn main() -> Result<()> {
    let given: Vec<String> = std::env::args().skip(1).collect();
    if let ["--role", "load", "--addr", addr, "--dir", dir] =
        given.iter().map(String::as_str).collect::<Vec<_>>()[..]
    {
        let addr = addr.parse().context("--addr")?;
        // tokio's io-std is not among the workspace's features: its fs::File over dups of the
        // standard descriptors does the same.
        let fd = |f: std::os::fd::BorrowedFd<'_>| -> Result<tokio::fs::File> {
            Ok(tokio::fs::File::from_std(f.try_clone_to_owned()?.into()))
        };
        let input = BufReader::new(fd(std::io::stdin().as_fd())?);
        let output = fd(std::io::stdout().as_fd())?;
        return serve_load(addr, Path::new(dir), input, output).await;
    }
    let placed = run(args(given.into_iter())?, Launch::Process).await?;
    println!("(all {placed} tasks placed)");
    Ok(())
}

/// Runs the bench and prints its figures; returns how many tasks were placed in the measured
/// rounds.
async fn run(a: Args, launch: Launch) -> Result<usize> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "berth-bench-placement-{}",
        uuid::Uuid::new_v4().simple()
    )));
    std::fs::create_dir_all(&dir.0)?;
    let store = Arc::new(Counting {
        inner: RedbStore::open(&dir.0.join("controller.redb"))?,
        commits: AtomicU64::new(0),
    });
    let controller = Arc::new(Controller::load(store.clone(), Arc::new(Fleet::default()))?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let api = AgentApi::new(controller.clone());
    let ecs = controller.clone();
    let server = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(api.into_server())
            .add_service(ecs_server::EcsServer::new(EcsApi(ecs)))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
    });
    let mut load = Load::start(launch, addr, &dir.0)?;

    let answer = load.ask(&format!("agents {}", a.agents), "agents").await?;
    let mut w = answer.split_whitespace();
    let secs: f64 = word(&mut w, "seconds")?;
    let ids: Vec<String> = w.map(String::from).collect();
    if ids.len() != a.agents {
        bail!("{} agent ids for {} agents", ids.len(), a.agents);
    }
    println!(
        "{} agents registered with sessions in {secs:.1} s",
        a.agents
    );
    controller
        .register_task_definition(serde_json::from_str(
            r#"{"family":"bench","cpu":"128","memory":"128",
                "containerDefinitions":[{"name":"app","image":"busybox","command":["sleep","1d"]}]}"#,
        )?)
        .await?;
    // Agents are candidates once their ack is taken in; wait for all of them.
    let fleet = controller.fleet().clone();
    tokio::task::block_in_place(|| {
        berth_tests::wait_for("every agent in step", CALL, || {
            ids.iter().all(|id| fleet.connected(id)).then_some(())
        })
    });

    // Warm-up: 2% of the tasks, and a round of the floor with values the size of a real task.
    let warm = (a.tasks / 50).max(a.count as usize);
    place_in(&mut load, &a, warm).await?;
    let sample = controller
        .list_tasks(ListTasksRequest {
            max_results: Some(1),
            ..Default::default()
        })
        .await?
        .items;
    let one = controller
        .describe_tasks(DescribeTasksRequest {
            tasks: sample,
            ..Default::default()
        })
        .await?
        .tasks
        .into_iter()
        .next()
        .context("no task after the warm-up")?;
    let value = one.encode_to_vec();
    load.ask(&format!("value {}", hex(&value)), "value").await?;
    floor_in(&mut load, a.floor_commits / 4 + 1, a.count).await?;

    let (mut lat, mut placed, mut place_secs) = (Vec::new(), 0usize, 0.0);
    let (mut floor_commits, mut floor_secs) = (0usize, 0.0);
    let commits_before = store.commits.load(Ordering::Relaxed);
    let (sets_before, bytes_before) = counters(&mut load).await?;
    for round in 0..ROUNDS {
        floor_secs += floor_in(&mut load, a.floor_commits, a.count).await?;
        floor_commits += a.floor_commits;
        let share = (a.tasks - placed).div_ceil(ROUNDS - round);
        let (l, p, secs) = place_in(&mut load, &a, share).await?;
        place_secs += secs;
        lat.extend(l);
        placed += p;
    }
    let commits = store.commits.load(Ordering::Relaxed) - commits_before;
    let (sets_after, bytes_after) = counters(&mut load).await?;
    let sets = sets_after - sets_before;
    let set_bytes = bytes_after - bytes_before;
    lat.sort_by(|x, y| x.total_cmp(y));
    let rate = placed as f64 / place_secs;
    let floor_rate = floor_commits as f64 / floor_secs;
    println!(
        "placed {placed} tasks ({} warm-up) on {} agents: {rate:.0} placements/s \
         ({} RunTask calls of count {}, {} concurrent clients, {:.1} s)",
        warm,
        a.agents,
        lat.len(),
        a.count,
        a.clients,
        place_secs
    );
    println!(
        "RunTask latency: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5) * 1e3,
        percentile(&lat, 0.99) * 1e3
    );
    println!(
        "store transactions during placement: {commits} ({:.1} RunTask calls per transaction)",
        lat.len() as f64 / commits.max(1) as f64
    );
    println!(
        "desired sets sent to agents during placement: {sets} ({:.1} MiB, {:.1} per RunTask)",
        set_bytes as f64 / (1024.0 * 1024.0),
        sets as f64 / lat.len().max(1) as f64
    );
    println!(
        "floor: {floor_rate:.0} fsync'd redb commits/s of {} task records ({} bytes each), \
         {floor_commits} commits in {ROUNDS} rounds interleaved",
        a.count,
        value.len()
    );
    println!(
        "ratio: placements/s / commits/s = {:.1} (RunTask calls/s / commits/s = {:.1})",
        rate / floor_rate,
        lat.len() as f64 / place_secs / floor_rate
    );
    match load.pid() {
        Some(pid) => {
            println!(
                "RSS of the controller's process (controller, its redb store and gRPC server \
                 alone): {}",
                rss("self")?
            );
            println!(
                "RSS of the load process ({} simulated agents + {} clients + the floor's store): {}",
                a.agents,
                a.clients,
                rss(&pid.to_string())?
            );
        }
        None => println!(
            "RSS of this process (controller + {} simulated agents + clients + the floor's \
             store, in-process): {}",
            a.agents,
            rss("self")?
        ),
    }
    load.finish().await?;
    server.abort();
    if placed < a.tasks {
        bail!("placed {placed} of {} tasks", a.tasks);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    /// CI's count: the whole bench path with 50 agents and 2,000 tasks (a few seconds in a
    /// debug build), the load as a task of the test's process over an in-memory pipe speaking
    /// the same requests and answers as the load process. It checks every task is placed, never
    /// a rate.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_run_places_every_task() {
        let a = super::args(
            [
                "--agents",
                "50",
                "--tasks",
                "2000",
                "--clients",
                "8",
                "--floor-commits",
                "20",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        assert_eq!(super::run(a, super::Launch::Task).await.unwrap(), 2000);
    }

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(super::unhex(&super::hex(&bytes)).unwrap(), bytes);
        assert!(super::unhex("abc").is_err());
        assert!(super::unhex("zz").is_err());
    }
}
