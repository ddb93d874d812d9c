//! Benchmark (issue 13): what the AWS JSON 1.1 endpoint costs over gRPC, measured in one run
//! against the real `berth-controller` binary (TLS on and `--auth required`, as deployed beyond
//! loopback; BERTH_TEST_TLS=off runs it without TLS).
//!
//! - RunTask latency: one signed call at a time, on one persistent connection per side: a
//!   keep-alive HTTP/1.1 connection (this file's own small client over tokio-rustls, ALPN
//!   `http/1.1`) sending `POST /` with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.RunTask`
//!   and ECS's JSON, SigV4-signed as botocore signs it (service `ecs`, signed headers
//!   content-type;host;x-amz-date;x-amz-target, the payload hash of the JSON body), and one tonic
//!   Channel sending the gRPC call signed as the `berth` CLI signs it. The calls alternate
//!   (HTTP, gRPC, then gRPC, HTTP, ...) after warm-up calls of each. Printed: p50/p99 per side,
//!   the p50 difference (target: HTTP adds at most 1 ms) and the ratio.
//! - DescribeTasks throughput: `--callers` concurrent callers, each on its own persistent
//!   connection (an HTTP/1.1 connection or a Channel, so both sides have as many), calling
//!   signed DescribeTasks of the same `--describe-tasks` tasks for `--round-ms` per round;
//!   rounds of the two sides alternate (HTTP, gRPC, gRPC, HTTP, ...) after a warm-up round of
//!   each. Printed: calls/s per side (and the slowest and fastest round), the ratio.
//!
//! Each call's time includes signing it and decoding its answer (the JSON parsed, the protobuf
//! decoded), as a client sees it. The container instance is one simulated agent in this process
//! that enrolls with an activation (as berth-agent does with TLS on) and speaks the real link
//! protocol (hello, an ack for every desired set, a heartbeat for every heartbeat) but runs
//! nothing: the tasks placed stay PENDING, and the run leaves 2 × (warm-up + calls) of them in
//! the controller, which is removed at the end with its data dir.
//!
//!   cargo build --release -p berth-controller &&
//!   cargo build --release -p berth-tests --bin bench-http && target/release/bench-http
//!
//! Exits non-zero when a call fails (printing the request and the answer), never on a missed
//! target.

use anyhow::{bail, ensure, Context, Result};
use berth_agent::identity::{Enrollment, TlsFiles};
use berth_proto::link;
use berth_proto::sigv4::{self, Credentials};
use berth_proto::v1::agent_message::Message as FromAgent;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::ecs_client::EcsClient;
use berth_proto::v1::*;
use berth_tests::{read_credentials, signed_request, Cluster};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

/// Every call to the controller (and every connection) is bounded by this.
const CALL: Duration = Duration::from_secs(30);
/// How long the simulated agent may take to show as connected.
const CONNECTED: Duration = Duration::from_secs(30);
/// What the HTTP endpoint may add to a signed RunTask's p50.
const TARGET_MS: f64 = 1.0;
/// ECS's JSON 1.1 target prefix.
const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113.";
const JSON_1_1: &str = "application/x-amz-json-1.1";
/// A header line or a chunk-size line longer than this is refused (a broken answer).
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone)]
struct Args {
    /// Measured RunTask calls per side.
    calls: usize,
    /// Warm-up RunTask calls per side.
    warmup: usize,
    /// Concurrent DescribeTasks callers per side.
    callers: usize,
    /// DescribeTasks rounds per side.
    rounds: usize,
    /// Length of a DescribeTasks round.
    round: Duration,
    /// Tasks named in each DescribeTasks call.
    describe_tasks: usize,
    /// The region of the HTTP side's credential scope (any region is accepted).
    region: String,
}

const USAGE: &str = "--calls N --warmup N --callers N --rounds N --round-ms MS \
                     --describe-tasks 1-100 --region NAME";

fn args(given: impl Iterator<Item = String>) -> Result<Args> {
    let mut a = Args {
        calls: 300,
        warmup: 30,
        callers: 8,
        rounds: 4,
        round: Duration::from_millis(1500),
        describe_tasks: 10,
        region: "us-east-1".into(),
    };
    let mut it = given;
    while let Some(flag) = it.next() {
        let mut value =
            || -> Result<String> { it.next().with_context(|| format!("{flag} needs a value")) };
        let number = |v: String| -> Result<usize> {
            v.parse()
                .with_context(|| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--calls" => a.calls = number(value()?)?,
            "--warmup" => a.warmup = number(value()?)?,
            "--callers" => a.callers = number(value()?)?,
            "--rounds" => a.rounds = number(value()?)?,
            "--round-ms" => a.round = Duration::from_millis(number(value()?)? as u64),
            "--describe-tasks" => a.describe_tasks = number(value()?)?,
            "--region" => a.region = value()?,
            other => bail!("unknown argument {other} ({USAGE})"),
        }
    }
    ensure!(
        a.calls > 0 && a.callers > 0 && a.rounds > 0 && !a.round.is_zero(),
        "--calls, --callers, --rounds, --round-ms at least 1 ({USAGE})"
    );
    ensure!(
        (1..=100).contains(&a.describe_tasks),
        "--describe-tasks is 1-100, as in ECS"
    );
    Ok(a)
}

// ------------------------------------------------------------------------------------------
// The HTTP/1.1 side: a keep-alive client, signing as botocore does.
// ------------------------------------------------------------------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how the HTTP side connects and signs.
struct HttpTarget {
    addr: SocketAddr,
    /// The Host header and the signed `host`: the URL's authority, as botocore takes it.
    host: String,
    tls: Option<(tokio_rustls::TlsConnector, ServerName<'static>)>,
    creds: Credentials,
    region: String,
}

/// An answer: its status and body.
struct HttpAnswer {
    status: u16,
    body: Vec<u8>,
}

/// One persistent HTTP/1.1 connection (opened on first use, again only if the server said
/// `Connection: close`).
struct HttpConn {
    target: Arc<HttpTarget>,
    io: Option<BufReader<Box<dyn Io>>>,
    /// Connections opened, the first included.
    connects: usize,
}

impl HttpTarget {
    fn new(endpoint: &str, ca_pem: Option<&str>, creds: Credentials, region: &str) -> Result<Self> {
        let (tls, host) = match endpoint.split_once("://") {
            Some(("https", h)) => (true, h),
            Some(("http", h)) => (false, h),
            _ => bail!("endpoint {endpoint}: not http:// or https://"),
        };
        let host = host.trim_end_matches('/').to_string();
        let addr: SocketAddr = host
            .parse()
            .with_context(|| format!("endpoint {endpoint}: not IP:PORT"))?;
        let tls = match (tls, ca_pem) {
            (false, _) => None,
            (true, None) => bail!("TLS without the controller's CA"),
            (true, Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
                    roots.add(cert.context("the controller's CA")?)?;
                }
                let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth();
                cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
                let name = ServerName::try_from(addr.ip().to_string())?;
                Some((tokio_rustls::TlsConnector::from(Arc::new(cfg)), name))
            }
        };
        Ok(Self {
            addr,
            host,
            tls,
            creds,
            region: region.to_string(),
        })
    }

    /// The whole request, signed now: what botocore sends for `op` (its own
    /// amz-sdk-* headers, unsigned, left out).
    fn request(&self, op: &str, body: &[u8]) -> Vec<u8> {
        let date = sigv4::amz_date(SystemTime::now());
        let target = format!("{ECS_TARGET}{op}");
        let input = sigv4::CanonicalInput {
            method: "POST",
            path: "/",
            query: "",
            headers: vec![
                ("content-type".into(), JSON_1_1.into()),
                ("host".into(), self.host.clone()),
                ("x-amz-date".into(), date.clone()),
                ("x-amz-target".into(), target.clone()),
            ],
            payload_sha256: sigv4::hex_sha256(body),
        };
        let authz = sigv4::authorization(&self.creds, &input, &date, &self.region, "ecs");
        let mut out = format!(
            "POST / HTTP/1.1\r\nHost: {}\r\nAccept-Encoding: identity\r\n\
             User-Agent: berth-bench-http\r\nX-Amz-Target: {target}\r\n\
             Content-Type: {JSON_1_1}\r\nX-Amz-Date: {date}\r\nAuthorization: {authz}\r\n\
             Content-Length: {}\r\n\r\n",
            self.host,
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(body);
        out
    }

    async fn connect(&self) -> Result<BufReader<Box<dyn Io>>> {
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let io: Box<dyn Io> = match &self.tls {
            None => Box::new(tcp),
            Some((connector, name)) => {
                let tls = connector.connect(name.clone(), tcp).await?;
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                ensure!(
                    alpn.as_deref() == Some(b"http/1.1".as_slice()),
                    "offered ALPN http/1.1 only; the controller chose {:?}",
                    alpn.map(|p| String::from_utf8_lossy(&p).into_owned())
                );
                Box::new(tls)
            }
        };
        Ok(BufReader::new(io))
    }
}

impl HttpConn {
    fn new(target: Arc<HttpTarget>) -> Self {
        Self {
            target,
            io: None,
            connects: 0,
        }
    }

    /// Sends `op` with `body` and reads the answer, within [`CALL`].
    async fn call(&mut self, op: &str, body: &[u8]) -> Result<HttpAnswer> {
        let request = self.target.request(op, body);
        let reused = self.io.is_some();
        let exchange = async {
            if self.io.is_none() {
                self.io = Some(self.target.connect().await.context("connecting")?);
                self.connects += 1;
            }
            let io = self.io.as_mut().context("no connection")?;
            io.get_mut().write_all(&request).await?;
            io.get_mut().flush().await?;
            read_answer(io).await
        };
        let answer = tokio::time::timeout(CALL, exchange).await;
        let why = match answer {
            Ok(Ok((answer, keep))) => {
                if !keep {
                    self.io = None;
                }
                return Ok(answer);
            }
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("no answer within {CALL:?}"),
        };
        self.io = None;
        bail!(
            "HTTP {op} on a {} connection: {why}; the request was:\n{}",
            if reused { "reused" } else { "new" },
            String::from_utf8_lossy(&request)
        )
    }

    /// `op` answered 200 with a JSON body: the body parsed. Anything else is an error showing
    /// the request body and the whole answer.
    async fn json(&mut self, op: &str, body: &Value) -> Result<Value> {
        let bytes = serde_json::to_vec(body)?;
        let a = self.call(op, &bytes).await?;
        let text = || String::from_utf8_lossy(&a.body).into_owned();
        ensure!(
            a.status == 200,
            "HTTP {op} {body} answered {}: {}",
            a.status,
            text()
        );
        serde_json::from_slice(&a.body)
            .with_context(|| format!("HTTP {op} {body} answered 200, not JSON: {}", text()))
    }
}

/// One line of the head (CRLF stripped); an error at EOF.
async fn line(io: &mut BufReader<Box<dyn Io>>, what: &str) -> Result<String> {
    let mut buf = Vec::new();
    let n = (&mut *io)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        bail!("the controller closed the connection before the {what}");
    }
    ensure!(buf.ends_with(b"\n"), "{what}: longer than {MAX_LINE} bytes");
    let s = String::from_utf8(buf).with_context(|| format!("{what}: not UTF-8"))?;
    Ok(s.trim_end_matches(['\r', '\n']).to_string())
}

/// Reads one response: the answer and whether the connection stays open.
async fn read_answer(io: &mut BufReader<Box<dyn Io>>) -> Result<(HttpAnswer, bool)> {
    let status_line = line(io, "status line").await?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    ensure!(
        version == "HTTP/1.1",
        "status line {status_line:?}: not HTTP/1.1"
    );
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("status line {status_line:?}: no status"))?;
    let (mut length, mut chunked, mut keep) = (None, false, true);
    loop {
        let h = line(io, "headers").await?;
        if h.is_empty() {
            break;
        }
        let (name, value) = h
            .split_once(':')
            .with_context(|| format!("header line {h:?}"))?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => {
                length = Some(
                    value
                        .parse::<usize>()
                        .with_context(|| format!("content-length {value:?}"))?,
                )
            }
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => keep = !value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let size_line = line(io, "chunk size").await?;
            let hex = size_line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(hex, 16)
                .with_context(|| format!("chunk size {size_line:?}"))?;
            if size == 0 {
                while !line(io, "trailers").await?.is_empty() {}
                break;
            }
            let at = body.len();
            body.resize(at + size, 0);
            io.read_exact(&mut body[at..]).await?;
            ensure!(
                line(io, "chunk end").await?.is_empty(),
                "a chunk longer than its size"
            );
        }
    } else if let Some(n) = length {
        body.resize(n, 0);
        io.read_exact(&mut body).await?;
    } else {
        bail!(
            "status {status}: neither content-length nor chunked (a keep-alive answer needs one)"
        );
    }
    Ok((HttpAnswer { status, body }, keep))
}

// ------------------------------------------------------------------------------------------
// The gRPC side: signed as the berth CLI signs.
// ------------------------------------------------------------------------------------------

/// One persistent gRPC connection.
#[derive(Clone)]
struct Grpc {
    ecs: EcsClient<Channel>,
    endpoint: String,
    creds: Credentials,
}

async fn channel(endpoint: &str, tls: Option<ClientTlsConfig>) -> Result<Channel> {
    let mut e = Endpoint::from_shared(endpoint.to_string())?
        .connect_timeout(CALL)
        .timeout(CALL)
        .tcp_nodelay(true);
    if let Some(t) = tls {
        e = e.tls_config(t)?;
    }
    tokio::time::timeout(CALL, e.connect())
        .await
        .with_context(|| format!("no connection to {endpoint} within {CALL:?}"))?
        .with_context(|| format!("connecting to {endpoint}"))
}

impl Grpc {
    async fn connect(endpoint: &str, ca_pem: Option<&str>, creds: Credentials) -> Result<Self> {
        let tls =
            ca_pem.map(|pem| ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)));
        Ok(Self {
            ecs: EcsClient::new(channel(endpoint, tls).await?),
            endpoint: endpoint.to_string(),
            creds,
        })
    }

    fn signed<M: prost::Message>(&self, msg: M, op: &str) -> tonic::Request<M> {
        signed_request(
            &self.endpoint,
            msg,
            &format!("/berth.v1.Ecs/{op}"),
            &self.creds,
            SystemTime::now(),
        )
    }

    async fn run_task(&mut self, r: RunTaskRequest) -> Result<RunTaskResponse> {
        let req = self.signed(r, "RunTask");
        Ok(tokio::time::timeout(CALL, self.ecs.run_task(req))
            .await
            .context("gRPC RunTask: no answer")?
            .context("gRPC RunTask")?
            .into_inner())
    }

    async fn describe_tasks(&mut self, r: DescribeTasksRequest) -> Result<DescribeTasksResponse> {
        let req = self.signed(r, "DescribeTasks");
        Ok(tokio::time::timeout(CALL, self.ecs.describe_tasks(req))
            .await
            .context("gRPC DescribeTasks: no answer")?
            .context("gRPC DescribeTasks")?
            .into_inner())
    }
}

// ------------------------------------------------------------------------------------------
// The simulated agent.
// ------------------------------------------------------------------------------------------

fn msg(m: FromAgent) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

/// How the simulated agent gets its instance: enrolled with an activation (TLS on), or
/// registered over the link (TLS off).
enum Join {
    Enroll {
        activation_id: String,
        activation_code: String,
        dir: std::path::PathBuf,
        ca_file: std::path::PathBuf,
    },
    Register,
}

/// Registers (or enrolls) one instance with ample resources, opens its session and answers it
/// until the stream ends. Returns the instance ARN once the first desired set is acked, and
/// the task answering the session (the caller aborts it).
async fn simulated_agent(
    endpoint: &str,
    cluster: &str,
    join: Join,
) -> Result<(String, tokio::task::JoinHandle<()>)> {
    let registration = RegisterContainerInstanceRequest {
        cluster: cluster.to_string(),
        total_resources: ["CPU", "MEMORY"]
            .iter()
            .map(|n| Resource {
                name: n.to_string(),
                r#type: "INTEGER".into(),
                integer_value: 1 << 30,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let (arn, ch) = match join {
        Join::Enroll {
            activation_id,
            activation_code,
            dir,
            ca_file,
        } => {
            let files = TlsFiles::new(&dir);
            let e = Enrollment {
                activation_id: Some(activation_id),
                activation_code: Some(activation_code),
                ca_fingerprint: None,
                ca_file: Some(ca_file),
            };
            files.ensure_ca(&e, endpoint).await?;
            let arn = files
                .ensure_identity(&e, endpoint, cluster, registration)
                .await?
                .context("enrolled, yet no instance ARN")?;
            (arn, channel(endpoint, Some(files.client_config()?)).await?)
        }
        Join::Register => {
            let ch = channel(endpoint, None).await?;
            let arn = tokio::time::timeout(
                CALL,
                link::client(ch.clone()).register_container_instance(registration),
            )
            .await
            .context("RegisterContainerInstance: no answer")??
            .into_inner()
            .container_instance
            .context("no container instance")?
            .container_instance_arn;
            (arn, ch)
        }
    };
    let (tx, rx) = mpsc::channel(64);
    tx.send(msg(FromAgent::Hello(AgentHello {
        container_instance_arn: arn.clone(),
        cluster: cluster.to_string(),
        protocol_version: link::PROTOCOL_VERSION,
        agent_version: "bench-http".into(),
        state_epoch: "bench-http".into(),
    })))
    .await?;
    let mut stream = tokio::time::timeout(CALL, link::client(ch).session(ReceiverStream::new(rx)))
        .await
        .context("Session: no answer")??
        .into_inner();
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    let session = tokio::spawn(async move {
        let mut ready_tx = Some(ready_tx);
        while let Some(Ok(m)) = stream.next().await {
            let answer = match m.message {
                Some(ToAgent::DesiredTasks(d)) => FromAgent::DesiredTasksAck(d.seq),
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
        .context("the simulated agent got no desired set within the call timeout")?
        .context("the session ended before its first desired set")?;
    Ok((arn, session))
}

// ------------------------------------------------------------------------------------------
// Measuring.
// ------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Debug)]
enum Side {
    Http,
    Grpc,
}

/// Side order of pair or round `i`: HTTP first on even, gRPC first on odd.
fn order(i: usize) -> [Side; 2] {
    if i.is_multiple_of(2) {
        [Side::Http, Side::Grpc]
    } else {
        [Side::Grpc, Side::Http]
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Latencies (seconds), sorted, with their p50 and p99 in ms.
#[derive(Debug, Default)]
struct Latencies(Vec<f64>);

impl Latencies {
    fn sorted(mut v: Vec<f64>) -> Self {
        v.sort_by(|x, y| x.total_cmp(y));
        Self(v)
    }
    fn p50_ms(&self) -> f64 {
        percentile(&self.0, 0.5) * 1e3
    }
    fn p99_ms(&self) -> f64 {
        percentile(&self.0, 0.99) * 1e3
    }
}

/// DescribeTasks rounds of one side.
#[derive(Debug, Default)]
struct Throughput {
    calls: usize,
    secs: f64,
    /// calls/s of each round.
    rounds: Vec<f64>,
    latencies: Vec<f64>,
    /// CPU seconds the controller's process used during the rounds.
    controller_cpu: f64,
    /// CPU seconds this process (the callers) used during the rounds.
    client_cpu: f64,
}

impl Throughput {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.secs.max(f64::MIN_POSITIVE)
    }
    /// CPU microseconds per call of the controller and of the callers.
    fn cpu_per_call_us(&self) -> (f64, f64) {
        let per = |cpu: f64| cpu * 1e6 / self.calls.max(1) as f64;
        (per(self.controller_cpu), per(self.client_cpu))
    }
    fn range(&self) -> (f64, f64) {
        let min = self.rounds.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self.rounds.iter().copied().fold(0.0, f64::max);
        (min, max)
    }
}

/// What a run measured.
#[derive(Debug)]
struct Report {
    endpoint: String,
    tls: bool,
    run_http: Latencies,
    run_grpc: Latencies,
    describe_http: Throughput,
    describe_grpc: Throughput,
    http_connects: usize,
    http_conns: usize,
}

/// One RunTask through `side`: its latency and the task's ARN.
async fn run_one(
    side: Side,
    http: &mut HttpConn,
    grpc: &mut Grpc,
    cluster: &str,
    td: &str,
) -> Result<(f64, String)> {
    let t = Instant::now();
    let arn = match side {
        Side::Http => {
            let body = json!({"cluster": cluster, "taskDefinition": td, "count": 1});
            let v = http.json("RunTask", &body).await?;
            let arn = v["tasks"][0]["taskArn"].as_str().map(str::to_string);
            match (arn, v["failures"].as_array().map(Vec::len)) {
                (Some(arn), None | Some(0)) => arn,
                _ => bail!("HTTP RunTask {body} placed no task: {v}"),
            }
        }
        Side::Grpc => {
            let r = grpc
                .run_task(RunTaskRequest {
                    cluster: Some(cluster.to_string()),
                    task_definition: td.to_string(),
                    count: Some(1),
                    ..Default::default()
                })
                .await?;
            ensure!(
                r.failures.is_empty(),
                "gRPC RunTask failures: {:?}",
                r.failures
            );
            r.tasks
                .into_iter()
                .next()
                .context("gRPC RunTask placed no task")?
                .task_arn
        }
    };
    Ok((t.elapsed().as_secs_f64(), arn))
}

/// One DescribeTasks through `side`: checks every task is described.
async fn describe_one(
    side: Side,
    http: &mut HttpConn,
    grpc: &mut Grpc,
    cluster: &str,
    tasks: &[String],
) -> Result<()> {
    let described = match side {
        Side::Http => {
            let body = json!({"cluster": cluster, "tasks": tasks});
            let v = http.json("DescribeTasks", &body).await?;
            v["tasks"].as_array().map_or(0, Vec::len)
        }
        Side::Grpc => grpc
            .describe_tasks(DescribeTasksRequest {
                cluster: Some(cluster.to_string()),
                tasks: tasks.to_vec(),
                ..Default::default()
            })
            .await?
            .tasks
            .len(),
    };
    ensure!(
        described == tasks.len(),
        "{side:?} DescribeTasks described {described} of {} tasks",
        tasks.len()
    );
    Ok(())
}

/// A caller of the throughput part: its two connections, kept across rounds.
struct Caller {
    http: HttpConn,
    grpc: Grpc,
}

/// One DescribeTasks round of `side`: every caller calls until `length` has passed. Returns
/// the callers, the calls made, the seconds until the last answer, and the latencies.
async fn describe_round(
    side: Side,
    callers: Vec<Caller>,
    cluster: &Arc<str>,
    tasks: &Arc<Vec<String>>,
    length: Duration,
) -> Result<(Vec<Caller>, usize, f64, Vec<f64>)> {
    let start = Instant::now();
    let deadline = start + length;
    let handles: Vec<_> = callers
        .into_iter()
        .map(|mut c| {
            let (cluster, tasks) = (cluster.clone(), tasks.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < deadline {
                    let t = Instant::now();
                    describe_one(side, &mut c.http, &mut c.grpc, &cluster, &tasks).await?;
                    lat.push(t.elapsed().as_secs_f64());
                }
                Ok::<_, anyhow::Error>((c, lat))
            })
        })
        .collect();
    let (mut back, mut calls, mut lat) = (Vec::new(), 0, Vec::new());
    for h in handles {
        let (c, l) = h.await??;
        back.push(c);
        calls += l.len();
        lat.extend(l);
    }
    Ok((back, calls, start.elapsed().as_secs_f64(), lat))
}

/// The CPU seconds (user + system, its exited threads included) process `pid` used so far,
/// from /proc/PID/stat (`pid` a number or "self").
fn cpu_secs(pid: &str) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // After the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(')')
        .with_context(|| format!("{path}: no command"))?
        .1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .with_context(|| format!("{path}: field {}", i + 3))
    };
    // SAFETY: sysconf reads a configuration value; it takes and returns plain integers.
    let hz = unsafe { nix::libc::sysconf(nix::libc::_SC_CLK_TCK) };
    ensure!(hz > 0, "sysconf(_SC_CLK_TCK) failed");
    Ok((ticks(11)? + ticks(12)?) / hz as f64)
}

/// The pid of the berth-controller process whose data dir is `data_dir` (the Cluster keeps its
/// child to itself): found by its command line.
fn controller_pid(data_dir: &std::path::Path) -> Result<String> {
    let want = data_dir.as_os_str().as_encoded_bytes();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let ours = args
            .first()
            .is_some_and(|a| a.ends_with(b"berth-controller"))
            && args
                .windows(2)
                .any(|w| w[0] == b"--data-dir".as_slice() && w[1] == want);
        if ours {
            return Ok(name);
        }
    }
    bail!(
        "no berth-controller process with --data-dir {}",
        data_dir.display()
    )
}

/// What the measuring needs of the cluster, read before the runtime starts.
struct Setup {
    endpoint: String,
    cluster: String,
    td: String,
    ca_pem: Option<String>,
    creds: Credentials,
    join: Join,
    /// The controller's pid, for its CPU time.
    controller_pid: String,
}

async fn measure(a: &Args, s: Setup) -> Result<Report> {
    let tls = s.ca_pem.is_some();
    let (instance, session) = simulated_agent(&s.endpoint, &s.cluster, s.join)
        .await
        .context("the simulated agent")?;
    // Aborted on every exit path.
    struct Abort(tokio::task::JoinHandle<()>);
    impl Drop for Abort {
        fn drop(&mut self) {
            self.0.abort();
        }
    }
    let _session = Abort(session);

    let target = Arc::new(HttpTarget::new(
        &s.endpoint,
        s.ca_pem.as_deref(),
        s.creds.clone(),
        &a.region,
    )?);
    let mut grpc = Grpc::connect(&s.endpoint, s.ca_pem.as_deref(), s.creds.clone()).await?;
    let mut http = HttpConn::new(target.clone());

    // The instance is a placement candidate once the controller shows it connected.
    let deadline = Instant::now() + CONNECTED;
    let mut delay = Duration::from_millis(10);
    loop {
        let d = grpc
            .ecs
            .describe_container_instances(grpc.signed(
                DescribeContainerInstancesRequest {
                    cluster: Some(s.cluster.clone()),
                    container_instances: vec![instance.clone()],
                    ..Default::default()
                },
                "DescribeContainerInstances",
            ))
            .await
            .context("DescribeContainerInstances")?
            .into_inner();
        if d.container_instances
            .first()
            .is_some_and(|i| i.agent_connected)
        {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the simulated agent not connected after {CONNECTED:?}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }

    // The HTTP side's signatures are checked, not merely accepted: a wrong secret is refused.
    let forged = Arc::new(HttpTarget::new(
        &s.endpoint,
        s.ca_pem.as_deref(),
        Credentials {
            access_key_id: s.creds.access_key_id.clone(),
            secret_access_key: format!("{}x", s.creds.secret_access_key),
        },
        &a.region,
    )?);
    let refused = HttpConn::new(forged).call("ListClusters", b"{}").await?;
    let refusal = String::from_utf8_lossy(&refused.body);
    ensure!(
        refused.status == 400 && refusal.contains("InvalidSignatureException"),
        "HTTP ListClusters signed with a wrong secret answered {}: {refusal}",
        refused.status
    );

    // (a) RunTask latency, alternating the sides, after the warm-up.
    let mut arns = Vec::new();
    for i in 0..a.warmup {
        for side in order(i) {
            arns.push(
                run_one(side, &mut http, &mut grpc, &s.cluster, &s.td)
                    .await?
                    .1,
            );
        }
    }
    let (mut run_http, mut run_grpc) = (Vec::new(), Vec::new());
    for i in 0..a.calls {
        for side in order(i) {
            let (secs, arn) = run_one(side, &mut http, &mut grpc, &s.cluster, &s.td).await?;
            match side {
                Side::Http => run_http.push(secs),
                Side::Grpc => run_grpc.push(secs),
            }
            arns.push(arn);
        }
    }

    // (b) DescribeTasks throughput: the same tasks every call, rounds alternating.
    let tasks: Arc<Vec<String>> = Arc::new(arns.iter().take(a.describe_tasks).cloned().collect());
    ensure!(
        tasks.len() == a.describe_tasks,
        "{} tasks placed, {} to describe",
        tasks.len(),
        a.describe_tasks
    );
    let cluster: Arc<str> = s.cluster.clone().into();
    let mut callers = Vec::new();
    for _ in 0..a.callers {
        callers.push(Caller {
            http: HttpConn::new(target.clone()),
            grpc: Grpc::connect(&s.endpoint, s.ca_pem.as_deref(), s.creds.clone()).await?,
        });
    }
    for side in order(0) {
        callers = describe_round(side, callers, &cluster, &tasks, a.round / 2)
            .await?
            .0;
    }
    let (mut describe_http, mut describe_grpc) = (Throughput::default(), Throughput::default());
    for r in 0..a.rounds {
        for side in order(r) {
            let cpu_before = (cpu_secs(&s.controller_pid)?, cpu_secs("self")?);
            let (back, calls, secs, lat) =
                describe_round(side, callers, &cluster, &tasks, a.round).await?;
            let cpu_after = (cpu_secs(&s.controller_pid)?, cpu_secs("self")?);
            callers = back;
            let t = match side {
                Side::Http => &mut describe_http,
                Side::Grpc => &mut describe_grpc,
            };
            t.calls += calls;
            t.secs += secs;
            t.rounds.push(calls as f64 / secs);
            t.latencies.extend(lat);
            t.controller_cpu += cpu_after.0 - cpu_before.0;
            t.client_cpu += cpu_after.1 - cpu_before.1;
        }
    }
    Ok(Report {
        endpoint: s.endpoint,
        tls,
        run_http: Latencies::sorted(run_http),
        run_grpc: Latencies::sorted(run_grpc),
        describe_http,
        describe_grpc,
        http_connects: http.connects + callers.iter().map(|c| c.http.connects).sum::<usize>(),
        http_conns: 1 + callers.len(),
    })
}

/// Starts the controller, runs the bench, stops everything it started.
fn bench(a: &Args) -> Result<Report> {
    // The real binaries (berth-controller; berth for the set-up calls), removed on drop.
    let c = Cluster::controller_only("bench-http");
    let td = c.register(
        r#"{"family":"bench-http","cpu":"128","memory":"128",
            "containerDefinitions":[{"name":"app","image":"busybox","command":["sleep","1d"]}]}"#,
    );
    let ca_pem = if c.tls {
        Some(std::fs::read_to_string(c.ca_file()).context("the controller's CA")?)
    } else {
        None
    };
    let join = if c.tls {
        let (activation_id, activation_code, _) = c.create_activation(&[]);
        Join::Enroll {
            activation_id,
            activation_code,
            dir: c.dir.join("simulated-agent"),
            ca_file: c.ca_file(),
        }
    } else {
        Join::Register
    };
    let setup = Setup {
        endpoint: c.endpoint.clone(),
        cluster: c.name.clone(),
        td,
        ca_pem,
        creds: read_credentials(&c.admin_credentials()),
        join,
        controller_pid: controller_pid(&c.dir.join("controller"))?,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(measure(a, setup));
    rt.shutdown_timeout(Duration::from_secs(5));
    report
}

fn print(a: &Args, r: &Report) {
    println!(
        "bench-http: the berth-controller binary at {} (TLS {}, --auth required), one simulated \
         agent; every call signed (HTTP: SigV4 service ecs, region {}; gRPC: as the berth CLI)",
        r.endpoint,
        if r.tls { "on" } else { "off" },
        a.region
    );
    println!(
        "RunTask latency, one call at a time on one persistent connection per side, \
         {} calls per side alternating after {} warm-up calls per side:",
        a.calls, a.warmup
    );
    for (name, l) in [("HTTP/1.1 JSON", &r.run_http), ("gRPC", &r.run_grpc)] {
        println!(
            "  {name:<13}  p50 {:6.2} ms  p99 {:6.2} ms",
            l.p50_ms(),
            l.p99_ms()
        );
    }
    let delta = r.run_http.p50_ms() - r.run_grpc.p50_ms();
    println!(
        "  HTTP - gRPC at p50: {delta:+.2} ms (target: at most +{TARGET_MS} ms: {}); \
         ratio HTTP/gRPC at p50: {:.2}",
        if delta <= TARGET_MS { "met" } else { "MISSED" },
        r.run_http.p50_ms() / r.run_grpc.p50_ms().max(f64::MIN_POSITIVE)
    );
    println!(
        "DescribeTasks of {} tasks, {} concurrent callers each on its own persistent connection, \
         {} rounds of {} ms per side alternating after a warm-up round of each:",
        a.describe_tasks,
        a.callers,
        a.rounds,
        a.round.as_millis()
    );
    for (name, t) in [
        ("HTTP/1.1 JSON", &r.describe_http),
        ("gRPC", &r.describe_grpc),
    ] {
        let (min, max) = t.range();
        let lat = Latencies::sorted(t.latencies.clone());
        println!(
            "  {name:<13}  {:7.0} calls/s (rounds {min:.0}-{max:.0}; {} calls; \
             p50 {:.2} ms, p99 {:.2} ms)",
            t.rate(),
            t.calls,
            lat.p50_ms(),
            lat.p99_ms()
        );
    }
    for (name, t) in [
        ("HTTP/1.1 JSON", &r.describe_http),
        ("gRPC", &r.describe_grpc),
    ] {
        let (controller, client) = t.cpu_per_call_us();
        println!(
            "  {name:<13}  CPU per call: controller {controller:.0} us, callers {client:.0} us \
             (controller {:.1} s, callers {:.1} s over {:.1} s)",
            t.controller_cpu, t.client_cpu, t.secs
        );
    }
    println!(
        "  ratio HTTP/gRPC calls/s: {:.2}",
        r.describe_http.rate() / r.describe_grpc.rate().max(f64::MIN_POSITIVE)
    );
    println!(
        "HTTP connections opened: {} for {} kept-alive connections",
        r.http_connects, r.http_conns
    );
}

fn main() -> Result<()> {
    let a = args(std::env::args().skip(1))?;
    let report = bench(&a)?;
    print(&a, &report);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CI's count: the whole bench against the debug binaries with a handful of calls (a few
    /// seconds): both sides answer, every HTTP call on its kept-alive connection. Never a rate.
    #[test]
    fn a_tiny_run_measures_both_sides() {
        let a = args(
            [
                "--calls",
                "5",
                "--warmup",
                "2",
                "--callers",
                "2",
                "--rounds",
                "1",
                "--round-ms",
                "200",
                "--describe-tasks",
                "3",
            ]
            .into_iter()
            .map(String::from),
        )
        .unwrap();
        let r = bench(&a).unwrap();
        print(&a, &r);
        assert_eq!((r.run_http.0.len(), r.run_grpc.0.len()), (5, 5));
        assert!(r.describe_http.calls > 0 && r.describe_grpc.calls > 0);
        assert_eq!(
            r.http_connects, r.http_conns,
            "a connection was not kept alive"
        );
    }

    #[test]
    fn requests_are_signed_as_botocore_signs_them() {
        let creds = Credentials {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".into(),
        };
        let t = HttpTarget::new("http://127.0.0.1:4000", None, creds, "us-east-1").unwrap();
        let req = String::from_utf8(t.request("ListClusters", b"{}")).unwrap();
        let (head, body) = req.split_once("\r\n\r\n").unwrap();
        assert_eq!(body, "{}");
        assert!(head.starts_with("POST / HTTP/1.1\r\nHost: 127.0.0.1:4000\r\n"));
        assert!(head.contains("\r\nX-Amz-Target: AmazonEC2ContainerServiceV20141113.ListClusters"));
        assert!(head.contains("\r\nContent-Length: 2"));
        let authz = head
            .lines()
            .find_map(|l| l.strip_prefix("Authorization: "))
            .unwrap();
        assert!(authz.starts_with("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/"));
        assert!(authz.contains("/us-east-1/ecs/aws4_request, "));
        assert!(authz.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-target, "));
    }
}
