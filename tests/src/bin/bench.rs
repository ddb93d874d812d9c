//! Benchmark: RunTask → RUNNING latency as a client sees it (DescribeTasks every 5 ms), beside this machine's floor
//! (`ctr run --rm` of the same image in the same containerd), and the agent's memory.
//! Prints figures; asserts nothing.
//!
//!   cargo build --release --workspace && cargo run --release -p berth-tests --bin bench [-- N]

use berth_proto::v1::ecs_client::EcsClient;
use berth_proto::v1::*;
use berth_tests::{prerequisites, Cluster, IMAGE};
use std::process::Command;
use std::time::{Duration, Instant};

/// How often the client asks for the task's status: often enough to see RUNNING within 5 ms,
/// rarely enough not to take CPU from the containers being started (the host has 2 cores).
const POLL: Duration = Duration::from_millis(5);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn children(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .map(|s| s.split_whitespace().count())
        .unwrap_or(0)
}

async fn wait_status(
    client: &mut EcsClient<tonic::transport::Channel>,
    cluster: &str,
    arns: &[String],
    status: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client
            .describe_tasks(DescribeTasksRequest {
                cluster: Some(cluster.into()),
                tasks: arns.to_vec(),
                include: vec![],
            })
            .await
            .expect("describe-tasks")
            .into_inner();
        if r.tasks.iter().all(|t| t.last_status == status) && r.tasks.len() == arns.len() {
            return;
        }
        if let Some(t) = r
            .tasks
            .iter()
            .find(|t| t.last_status == "STOPPED" && status != "STOPPED")
        {
            panic!(
                "task {} stopped: {}",
                t.task_arn,
                t.stopped_reason.as_deref().unwrap_or("")
            );
        }
        assert!(Instant::now() < deadline, "tasks did not reach {status}");
        tokio::time::sleep(POLL).await;
    }
}

async fn stop_all(
    client: &mut EcsClient<tonic::transport::Channel>,
    cluster: &str,
    arns: &[String],
) {
    for arn in arns {
        client
            .stop_task(StopTaskRequest {
                cluster: Some(cluster.into()),
                task: arn.clone(),
                reason: None,
            })
            .await
            .expect("stop-task");
    }
    wait_status(client, cluster, arns, "STOPPED").await;
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if !prerequisites() {
        std::process::exit(1);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let c = Cluster::start("bench");
    let sock = c.socket();

    // The floor: a whole create/start/exit/delete cycle with ctr, same image, same containerd.
    let mut floor = Vec::new();
    for i in 0..n {
        let t = Instant::now();
        let ok = Command::new("ctr")
            .arg("-a")
            .arg(&sock)
            .args([
                "-n",
                "berth",
                "run",
                "--rm",
                IMAGE,
                &format!("floor-{i}"),
                "/bin/true",
            ])
            .status()
            .expect("ctr run")
            .success();
        assert!(ok, "ctr run failed");
        floor.push(t.elapsed().as_secs_f64() * 1000.0);
    }

    let mut client = EcsClient::connect(c.endpoint.clone())
        .await
        .expect("controller");
    let td = c.register(&format!(
        r#"{{"family": "bench", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16,
          "command": ["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"]}}]}}"#
    ));
    let agent = c.agent_pid().expect("agent pid");
    let idle_rss = rss_mib(agent);

    let run = |client: &mut EcsClient<tonic::transport::Channel>| {
        let mut client = client.clone();
        let (cluster, td) = (c.name.clone(), td.clone());
        async move {
            client
                .run_task(RunTaskRequest {
                    cluster: Some(cluster),
                    task_definition: td,
                    ..Default::default()
                })
                .await
                .expect("run-task")
                .into_inner()
                .tasks[0]
                .task_arn
                .clone()
        }
    };
    let mut latency = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let arn = run(&mut client).await;
        wait_status(&mut client, &c.name, std::slice::from_ref(&arn), "RUNNING").await;
        latency.push(t.elapsed().as_secs_f64() * 1000.0);
        stop_all(&mut client, &c.name, &[arn]).await;
    }

    let mut arns = Vec::new();
    for _ in 0..20 {
        arns.push(run(&mut client).await);
    }
    wait_status(&mut client, &c.name, &arns, "RUNNING").await;
    let busy_rss = rss_mib(agent);
    let agent_children = children(agent);
    stop_all(&mut client, &c.name, &arns).await;

    let (f50, f99) = summary(floor);
    let (l50, l99) = summary(latency);
    println!(
        "host: {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("floor  ctr run --rm {IMAGE} /bin/true   n={n}  p50 {f50:7.1} ms  p99 {f99:7.1} ms");
    println!("berth  RunTask -> RUNNING (client sees)  n={n}  p50 {l50:7.1} ms  p99 {l99:7.1} ms");
    println!(
        "ratio  p50 {:.2}x  p99 {:.2}x  (target: p50 within 1.5x)",
        l50 / f50,
        l99 / f99
    );
    println!("agent  RSS idle {idle_rss:.1} MiB, with 20 running tasks {busy_rss:.1} MiB (target: under 30 MiB)");
    println!("agent  child processes with 20 running tasks: {agent_children} (containers are children of containerd's shims)");
}
