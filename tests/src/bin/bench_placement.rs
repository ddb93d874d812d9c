//! Benchmark (issue 12): the controller's placement throughput.
//!
//! In this process: the real `Controller` over the real redb store (a temp dir), serving the
//! agent link and the ECS API with tonic on 127.0.0.1:0, and `--agents` simulated agents, each
//! registering over gRPC and holding a Session (its own connection) that speaks the real agent
//! protocol: AgentHello, a DesiredTasksAck for every desired set, a Heartbeat for every
//! heartbeat. They run nothing and report nothing. Then `--clients` concurrent clients call
//! RunTask over gRPC (`--count` tasks per call) until `--tasks` tasks are placed.
//!
//! Printed: placements/s, RunTask p50/p99 (as the client sees it), how many store transactions
//! the placements took (RunTasks per transaction: the group commit's size), the process's RSS
//! (VmRSS/VmHWM of this process: controller AND simulated agents and clients), and the floor:
//! fsync'd commits/s of a `RedbStore` in the same temp dir, each commit as large as one
//! RunTask's writes (`--count` task records of the real size), through the same `Store` trait,
//! measured in rounds interleaved with the placement rounds after a warm-up; then the ratio
//! placements/s ÷ commits/s.
//!
//!   cargo build --release -p berth-tests --bin bench-placement &&
//!   target/release/bench-placement --agents 1000 --tasks 100000

use anyhow::{bail, Context, Result};
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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;
use tonic::transport::{Channel, Endpoint};

/// Every call to the in-process controller is bounded by this.
const CALL: Duration = Duration::from_secs(60);
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

async fn channel(addr: std::net::SocketAddr) -> Result<Channel> {
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
    addr: std::net::SocketAddr,
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

/// Per-call latencies (seconds) and tasks placed by one placement round.
async fn place(
    addr: std::net::SocketAddr,
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

fn proc_status_mib(field: &str) -> Result<f64> {
    let s = std::fs::read_to_string("/proc/self/status")?;
    let line = s
        .lines()
        .find(|l| l.starts_with(field))
        .with_context(|| format!("no {field} in /proc/self/status"))?;
    let kb: f64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?;
    Ok(kb / 1024.0)
}

/// Removes the temp dir on every exit path.
struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let placed = run(args(std::env::args().skip(1))?).await?;
    println!("(all {placed} tasks placed)");
    Ok(())
}

/// Runs the bench and prints its figures; returns how many tasks were placed in the measured
/// rounds.
async fn run(a: Args) -> Result<usize> {
    let dir = TempDir(std::env::temp_dir().join(format!(
        "berth-bench-placement-{}",
        uuid::Uuid::new_v4().simple()
    )));
    std::fs::create_dir_all(&dir.0)?;
    let store = Arc::new(Counting {
        inner: RedbStore::open(&dir.0.join("controller.redb"))?,
        commits: AtomicU64::new(0),
    });
    let floor_store = Arc::new(RedbStore::open(&dir.0.join("floor.redb"))?);
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

    let t = Instant::now();
    let desired_sets = Arc::new(AtomicU64::new(0));
    let desired_bytes = Arc::new(AtomicU64::new(0));
    // Registration and session opening, at most 100 at a time.
    let mut started = 0;
    let mut ids = Vec::new();
    while started < a.agents {
        let n = (a.agents - started).min(100);
        let mut batch = Vec::new();
        for _ in 0..n {
            batch.push(tokio::spawn(agent(
                addr,
                desired_sets.clone(),
                desired_bytes.clone(),
            )));
        }
        for h in batch {
            ids.push(h.await??);
        }
        started += n;
    }
    println!(
        "{} agents registered with sessions in {:.1} s",
        a.agents,
        t.elapsed().as_secs_f64()
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
    place(addr, a.clients, a.count, warm).await?;
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
    let value = Arc::new(one.encode_to_vec());
    floor(
        floor_store.clone(),
        a.floor_commits / 4 + 1,
        a.count,
        value.clone(),
    )
    .await?;

    let (mut lat, mut placed, mut place_secs) = (Vec::new(), 0usize, 0.0);
    let (mut floor_commits, mut floor_secs) = (0usize, 0.0);
    let commits_before = store.commits.load(Ordering::Relaxed);
    let sets_before = desired_sets.load(Ordering::Relaxed);
    let bytes_before = desired_bytes.load(Ordering::Relaxed);
    for round in 0..ROUNDS {
        floor_secs += floor(floor_store.clone(), a.floor_commits, a.count, value.clone()).await?;
        floor_commits += a.floor_commits;
        let share = (a.tasks - placed).div_ceil(ROUNDS - round);
        let t = Instant::now();
        let (l, p) = place(addr, a.clients, a.count, share).await?;
        place_secs += t.elapsed().as_secs_f64();
        lat.extend(l);
        placed += p;
    }
    let commits = store.commits.load(Ordering::Relaxed) - commits_before;
    let sets = desired_sets.load(Ordering::Relaxed) - sets_before;
    let set_bytes = desired_bytes.load(Ordering::Relaxed) - bytes_before;
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
    println!(
        "RSS of this process (controller + {} simulated agents + clients, in-process): \
         VmRSS {:.0} MiB, peak VmHWM {:.0} MiB",
        a.agents,
        proc_status_mib("VmRSS:")?,
        proc_status_mib("VmHWM:")?
    );
    server.abort();
    if placed < a.tasks {
        bail!("placed {placed} of {} tasks", a.tasks);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    /// CI's count: the whole bench path with 50 agents and 2,000 tasks (a few seconds in a
    /// debug build). It checks every task is placed, never a rate.
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
        assert_eq!(super::run(a).await.unwrap(), 2000);
    }
}
