//! Benchmark: how long 1,000 agents take to get their sessions back when the controller restarts.
//!
//! A private controller (TLS on, as beyond loopback; API auth off: this measures the agent link)
//! and N fake agents in this process. Each agent enrolls with an activation (its own key pair and
//! certificate, as `berth-agent` does), registers and opens its session over mutual TLS. Then the
//! controller is killed (-9) and started again on the same data dir, and every agent reconnects
//! with the real agent's back-off (`berth_agent::session::Backoff`): register, open the session,
//! wait for the controller's hello. Printed: the time from the restart until all N sessions are
//! established (and p50/p99 per agent), beside the floor measured the same way in the same run:
//! N plain TCP connections + TLS handshakes to the restarted controller (no Berth work).
//!
//!   cargo build --release --workspace && target/release/bench-reconnect [AGENTS (default 1000)]

use anyhow::{bail, Context, Result};
use berth_agent::session::Backoff;
use berth_proto::v1::agent_message::Message as FromAgent;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::ssm_client::SsmClient;
use berth_proto::v1::*;
use berth_tests::{bin, free_port, wait_for};
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const CLUSTER: &str = "reconnect";
/// How long all agents may take to reconnect before the bench fails.
const DEADLINE: Duration = Duration::from_secs(600);

struct Controller {
    dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl Controller {
    fn start(&mut self) -> Result<Instant> {
        let log = std::fs::File::create(self.dir.join(format!(
            "controller-{}.log",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis())
                .unwrap_or(0)
        )))?;
        let t = Instant::now();
        let child = Command::new(bin("berth-controller"))
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .arg("--data-dir")
            .arg(self.dir.join("controller"))
            .arg("--config")
            .arg(self.dir.join("none.conf"))
            .args(["--tls", "on", "--auth", "off"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting berth-controller")?;
        self.child = Some(child);
        Ok(t)
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    fn ca(&self) -> Result<Vec<u8>> {
        std::fs::read(self.dir.join("controller/ca.pem")).context("the controller's ca.pem")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What each fake agent registers with.
fn resources() -> Vec<Resource> {
    vec![
        Resource {
            name: "CPU".into(),
            r#type: "INTEGER".into(),
            integer_value: 2048,
            ..Default::default()
        },
        Resource {
            name: "MEMORY".into(),
            r#type: "INTEGER".into(),
            integer_value: 4096,
            ..Default::default()
        },
    ]
}

/// One fake agent's identity after enrollment.
struct Agent {
    arn: String,
    identity: Identity,
}

async fn channel(url: &str, ca: &[u8], identity: Option<Identity>) -> Result<Channel> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    Ok(Endpoint::from_shared(url.to_string())?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(10))
        .connect()
        .await?)
}

async fn enroll(url: &str, ca: &[u8], id: &str, code: &str, n: usize) -> Result<Agent> {
    let key = rcgen::KeyPair::generate().context("key pair")?;
    let params = rcgen::CertificateParams::new(Vec::<String>::new()).context("csr params")?;
    let csr = params.serialize_request(&key).context("csr")?.pem()?;
    let mut client = berth_proto::link::client(channel(url, ca, None).await?);
    let r = client
        .enroll(EnrollRequest {
            activation_id: id.to_string(),
            activation_code: code.to_string(),
            csr_pem: csr,
            cluster: CLUSTER.to_string(),
            hostname: Some(format!("fake-{n}")),
            registration: Some(RegisterContainerInstanceRequest {
                total_resources: resources(),
                ..Default::default()
            }),
        })
        .await
        .context("enroll")?
        .into_inner();
    Ok(Agent {
        arn: r.container_instance_arn,
        identity: Identity::from_pem(r.certificate_pem, key.serialize_pem()),
    })
}

/// Registers and opens the session; returns once the controller's hello arrived, with the
/// channels that keep the session open.
async fn session(
    url: &str,
    ca: &[u8],
    agent: &Agent,
) -> Result<(
    mpsc::Sender<AgentMessage>,
    tonic::Streaming<ControllerMessage>,
)> {
    let mut client =
        berth_proto::link::client(channel(url, ca, Some(agent.identity.clone())).await?);
    client
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: CLUSTER.to_string(),
            container_instance_arn: Some(agent.arn.clone()),
            total_resources: resources(),
            ..Default::default()
        })
        .await
        .context("register")?;
    let (tx, rx) = mpsc::channel(8);
    tx.send(AgentMessage {
        message: Some(FromAgent::Hello(AgentHello {
            container_instance_arn: agent.arn.clone(),
            cluster: CLUSTER.to_string(),
            protocol_version: berth_proto::link::PROTOCOL_VERSION,
            agent_version: "bench".into(),
            state_epoch: uuid::Uuid::new_v4().simple().to_string(),
        })),
    })
    .await?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .context("session")?
        .into_inner();
    loop {
        match inbound.next().await {
            Some(Ok(ControllerMessage {
                message: Some(ToAgent::Hello(_)),
            })) => return Ok((tx, inbound)),
            Some(Ok(_)) => continue,
            Some(Err(s)) => bail!("session: {}", s.message()),
            None => bail!("session closed before the hello"),
        }
    }
}

/// Keeps an agent connected: reconnects with the agent's back-off whenever its session ends,
/// reporting each (re)establishment on `up`.
async fn run_agent(
    url: String,
    ca: Arc<Vec<u8>>,
    agent: Agent,
    up: mpsc::UnboundedSender<Instant>,
) {
    let mut backoff = Backoff::default();
    loop {
        match session(&url, &ca, &agent).await {
            Ok((_tx, mut inbound)) => {
                backoff.reset();
                let _ = up.send(Instant::now());
                // Held until the controller goes away.
                while let Some(Ok(_)) = inbound.next().await {}
            }
            Err(_) => tokio::time::sleep(backoff.next_delay()).await,
        }
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn raise_nofile() -> Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

async fn floor(url: &str, ca: &[u8], n: usize) -> Result<f64> {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (url, ca) = (url.to_string(), ca.to_vec());
        set.spawn(async move { channel(&url, &ca, None).await.map(drop) });
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

async fn bench(n: usize) -> Result<()> {
    let nofile = raise_nofile()?;
    anyhow::ensure!(
        nofile as usize > 2 * n + 100,
        "RLIMIT_NOFILE {nofile} is too low for {n} agents"
    );
    let dir = std::env::temp_dir().join(format!("berth-bench-reconnect-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut ctl = Controller {
        dir,
        port: free_port(),
        child: None,
    };
    ctl.start()?;
    wait_for_listen(ctl.port)?;
    let ca = Arc::new(ctl.ca()?);
    let url = ctl.url();
    let mut ssm = SsmClient::new(channel(&url, &ca, None).await?);
    let act = ssm
        .create_activation(CreateActivationRequest {
            iam_role: "bench".into(),
            registration_limit: Some(n as i32),
            ..Default::default()
        })
        .await
        .context("create-activation")?
        .into_inner();
    let mut ecs = berth_proto::v1::ecs_client::EcsClient::new(channel(&url, &ca, None).await?);
    ecs.create_cluster(CreateClusterRequest {
        cluster_name: CLUSTER.into(),
        ..Default::default()
    })
    .await
    .context("create-cluster")?;
    let t = Instant::now();
    let mut agents = Vec::with_capacity(n);
    for i in 0..n {
        agents.push(enroll(&url, &ca, &act.activation_id, &act.activation_code, i).await?);
    }
    println!(
        "{n} agents enrolled (one after another) in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let (up_tx, mut up_rx) = mpsc::unbounded_channel();
    let t = Instant::now();
    for a in agents {
        tokio::spawn(run_agent(url.clone(), ca.clone(), a, up_tx.clone()));
    }
    let mut first = 0;
    while first < n {
        tokio::time::timeout(DEADLINE, up_rx.recv())
            .await
            .context("agents connecting")?
            .context("agents gone")?;
        first += 1;
    }
    println!(
        "{n} agents connected at once (cold start) in {:.1} s",
        t.elapsed().as_secs_f64()
    );

    ctl.kill();
    let restarted = ctl.start()?;
    let port = ctl.port;
    let listening = tokio::task::spawn_blocking(move || {
        wait_for("the restarted controller to listen", DEADLINE, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        restarted.elapsed()
    });
    let mut times = Vec::with_capacity(n);
    while times.len() < n {
        let at = tokio::time::timeout(DEADLINE, up_rx.recv())
            .await
            .with_context(|| {
                format!(
                    "{} of {n} agents reconnected within {DEADLINE:?}",
                    times.len()
                )
            })?
            .context("agents gone")?;
        times.push(at.duration_since(restarted).as_secs_f64() * 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let listening = listening.await.context("timing the restart")?;
    let floor_ms = floor(&url, &ca, n).await?;
    println!(
        "controller restart (kill -9, start) -> all {n} sessions re-established: {:.0} ms (per agent p50 {:.0} ms, p99 {:.0} ms)",
        times[n - 1],
        percentile(&times, 50.0),
        percentile(&times, 99.0)
    );
    println!(
        "  (the restarted controller listened after {:.0} ms; the agents retry with the agent's back-off: 250 ms growing x1.5, +0-20% jitter)",
        listening.as_secs_f64() * 1000.0
    );
    println!(
        "floor, same run: {n} concurrent TCP + TLS handshakes to the running controller: {floor_ms:.0} ms"
    );
    Ok(())
}

fn wait_for_listen(port: u16) -> Result<()> {
    wait_for("the controller to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let n = match std::env::args().nth(1).map(|a| a.parse::<usize>()) {
        None => 1000,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: bench-reconnect [AGENTS (default 1000)]");
            return ExitCode::from(2);
        }
    };
    match bench(n).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-reconnect: FAILED: {e:#}");
            ExitCode::FAILURE
        }
    }
}
