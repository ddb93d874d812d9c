//! The link to the controller: register, then hold one bidirectional stream, read and written
//! concurrently, with heartbeats both ways. Reconnects with ECS's back-off (250 ms growing ×1.5
//! to 2 min, with jitter; reset only after a session has worked both ways) and never gives up.

use crate::cgroups::Cgroups;
use crate::engine::{reporter::Reporter, Engine};
use crate::runtime::Runtime;
use crate::state::StateError;
use berth_proto::link;
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::controller_message::Message as FromController;
use berth_proto::v1::*;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{error, info, warn};

/// What the agent registers with.
#[derive(Debug, Clone)]
pub struct Registration {
    /// The controller URL.
    pub controller: String,
    /// The cluster.
    pub cluster: String,
    /// CPU, MEMORY, PORTS, PORTS_UDP.
    pub resources: Vec<Resource>,
    /// ecs.* and user attributes.
    pub attributes: Vec<Attribute>,
    /// Agent and runtime versions.
    pub version_info: VersionInfo,
    /// How often to send a heartbeat when idle (`berth_proto::link::HEARTBEAT_INTERVAL`); the
    /// session is dead after `MISSED_HEARTBEATS` intervals without a message.
    pub heartbeat: Duration,
    /// The engine's secret source, told the channel of each session.
    pub secrets: Arc<crate::secrets::LinkSecrets>,
    /// With an https controller: the pinned CA and the client certificate, read at every
    /// connection (a renewed certificate is used from the next one on).
    pub tls: Option<crate::identity::TlsFiles>,
}

/// How long registering or opening the session may take before the attempt counts as failed
/// (and is retried with the back-off): the controller hung or a network path black-holed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a connection (TCP, TLS handshake, HTTP/2 set-up) to the controller may take.
pub const CONNECT_TIMEOUT: Duration = CALL_TIMEOUT;

/// The reconnect back-off.
pub struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { next: Self::MIN }
    }
}

impl Backoff {
    const MIN: Duration = Duration::from_millis(250);
    const MAX: Duration = Duration::from_secs(120);

    /// The next delay, with up to 20% jitter.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next.mul_f64(1.5)).min(Self::MAX);
        let jitter = rand::rng().random_range(0.0..0.2);
        base.mul_f64(1.0 + jitter)
    }

    /// Back to the shortest delay after a session that worked.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }

    /// Whether the next delay is the shortest one.
    pub fn is_reset(&self) -> bool {
        self.next == Self::MIN
    }
}

/// Why a session ended (or never started). Each keeps its cause.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The controller URL does not parse.
    #[error("bad controller URL {url}: {source}")]
    Url {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: tonic::transport::Error,
    },
    /// The TLS files (pinned CA, client certificate) cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
    /// The controller cannot be reached.
    #[error("connect: {0}")]
    Connect(#[source] tonic::transport::Error),
    /// RegisterContainerInstance failed.
    #[error("register: {}", .0.message())]
    Register(#[source] tonic::Status),
    /// A call to the controller got no answer in time.
    #[error("{0}: no answer from the controller within {secs} s", secs = CALL_TIMEOUT.as_secs())]
    Timeout(&'static str),
    /// The container instance identity could not be persisted.
    #[error("persisting the instance identity: {0}")]
    Identity(#[source] StateError),
    /// The controller refused the session or it failed.
    #[error("session: {}", .0.message())]
    Session(#[source] tonic::Status),
    /// The peers do not speak a common protocol.
    #[error("{0}")]
    Protocol(String),
    /// Nothing arrived from the controller for three heartbeat intervals.
    #[error("nothing from the controller for {} s", .0.as_secs())]
    Silent(Duration),
    /// The controller's first message was not its hello.
    #[error("the controller did not start the session with its hello")]
    NoHello,
    /// The request stream closed under us.
    #[error("session closed")]
    Closed,
    /// The controller deregistered this container instance (or refuses its ARN as INACTIVE):
    /// terminal, the agent forgets its ARN and exits.
    #[error("container instance deregistered: {0}")]
    Deregistered(String),
}

/// Why the link ended for good: the instance was deregistered. The agent has forgotten its
/// instance ARN (unless `forgotten` says otherwise) and should exit with
/// `link::EXIT_TERMINAL`, so its supervisor does not restart it; a later start registers anew.
#[derive(Debug)]
pub struct Terminal {
    /// The controller's reason.
    pub reason: String,
    /// Whether the saved instance ARN was removed from the data dir.
    pub forgotten: Result<(), StateError>,
}

/// Runs the link until the instance is deregistered (never otherwise); then forgets the saved
/// instance ARN and returns.
pub async fn run<R: Runtime, C: Cgroups>(
    reg: Registration,
    engine: Engine<R, C>,
    reporter: Arc<Reporter>,
) -> Terminal {
    let mut backoff = Backoff::default();
    loop {
        let ended = once(&reg, &engine, &reporter, &mut backoff).await;
        reg.secrets.disconnected();
        match ended {
            Err(LinkError::Deregistered(reason)) => {
                error!(%reason, "this container instance was deregistered; forgetting its ARN and stopping (tasks keep running, unmanaged)");
                let forgotten = reporter.forget_identity().await;
                return Terminal { reason, forgotten };
            }
            Ok(()) => info!("controller closed the session"),
            Err(LinkError::Protocol(line)) => error!("{line}"),
            Err(e) => warn!(controller = %reg.controller, error = %e, "controller link down"),
        }
        let delay = backoff.next_delay();
        info!(delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

fn send(m: ToController) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

async fn once<R: Runtime, C: Cgroups>(
    reg: &Registration,
    engine: &Engine<R, C>,
    reporter: &Arc<Reporter>,
    backoff: &mut Backoff,
) -> Result<(), LinkError> {
    let mut endpoint =
        tonic::transport::Endpoint::from_shared(reg.controller.clone()).map_err(|source| {
            LinkError::Url {
                url: reg.controller.clone(),
                source,
            }
        })?;
    if let Some(files) = &reg.tls {
        let config = files
            .client_config()
            .map_err(|e| LinkError::Tls(e.to_string()))?;
        endpoint = endpoint
            .tls_config(config)
            .map_err(|e| LinkError::Tls(e.to_string()))?;
    }
    let endpoint = endpoint
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10));
    let connecting = endpoint.connect();
    // connect_timeout bounds the TCP connect only; this bounds the TLS handshake too.
    let channel = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| LinkError::Timeout("connecting (TCP, TLS)"))?
        .map_err(LinkError::Connect)?;
    reg.secrets.connected(channel.clone());
    let mut client = berth_proto::link::client(channel);
    let registered = client.register_container_instance(RegisterContainerInstanceRequest {
        cluster: reg.cluster.clone(),
        container_instance_arn: reporter.identity(&reg.cluster),
        total_resources: reg.resources.clone(),
        attributes: reg.attributes.clone(),
        version_info: Some(reg.version_info.clone()),
        hostname: nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok()),
    });
    let ci = tokio::time::timeout(CALL_TIMEOUT, registered)
        .await
        .map_err(|_| LinkError::Timeout("register"))?
        .map_err(|s| {
            if link::is_inactive_refusal(&s) {
                LinkError::Deregistered(s.message().to_string())
            } else {
                LinkError::Register(s)
            }
        })?
        .into_inner()
        .container_instance
        .unwrap_or_default();
    let arn = ci.container_instance_arn.clone();
    reporter
        .set_identity(&arn, &reg.cluster)
        .await
        .map_err(LinkError::Identity)?;
    info!(instance = %arn, cluster = %reg.cluster, "registered");

    let (tx, rx) = mpsc::channel::<AgentMessage>(64);
    tx.send(send(ToController::Hello(AgentHello {
        container_instance_arn: arn.clone(),
        cluster: reg.cluster.clone(),
        protocol_version: link::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        state_epoch: reporter.epoch().to_string(),
    })))
    .await
    .map_err(|_| LinkError::Closed)?;
    let opened = tokio::time::timeout(CALL_TIMEOUT, client.session(ReceiverStream::new(rx)))
        .await
        .map_err(|_| LinkError::Timeout("opening the session"))?;
    let inbound = match opened {
        Ok(r) => r.into_inner(),
        Err(s) if link::is_inactive_refusal(&s) => {
            return Err(LinkError::Deregistered(s.message().to_string()))
        }
        Err(s) if s.code() == tonic::Code::FailedPrecondition => {
            return Err(LinkError::Protocol(s.message().to_string()))
        }
        Err(s) => return Err(LinkError::Session(s)),
    };
    exchange(inbound, tx, engine, reporter, backoff, reg.heartbeat).await
}

/// How many ExecuteCommand messages (output, exits) may wait for the link's writer.
const EXEC_OUTBOX: usize = 64;
/// How many awslogs batches may wait for the link's writer (issue 10).
const LOG_OUTBOX: usize = 16;

/// Tells the log delivery the session ended, however `exchange` returns.
struct LogsLink(crate::logs::service::LogService);

impl Drop for LogsLink {
    fn drop(&mut self) {
        self.0.disconnected();
    }
}

/// Checks the controller's hello: the protocol must be one this agent speaks.
pub fn check_controller(hello: &ControllerHello) -> Result<(), LinkError> {
    if link::speaks(hello.protocol_version) {
        Ok(())
    } else {
        Err(LinkError::Protocol(link::refusal(
            &format!("controller {}", hello.controller_version),
            hello.protocol_version,
        )))
    }
}

/// The controller's next message; `None` when the stream ended.
async fn next(
    inbound: &mut tonic::Streaming<ControllerMessage>,
    dead_after: Duration,
) -> Result<Option<FromController>, LinkError> {
    match tokio::time::timeout(dead_after, inbound.next()).await {
        Err(_) => Err(LinkError::Silent(dead_after)),
        Ok(None) => Ok(None),
        Ok(Some(Err(s))) => Err(LinkError::Session(s)),
        Ok(Some(Ok(m))) => Ok(m.message),
    }
}

/// One session's exchange, reading and writing concurrently: the reader applies desired sets
/// and acks (never waiting on a send), the writer sends reports, desired-set acks and
/// heartbeats. The back-off resets only once the session has worked both ways: a desired set
/// has arrived, and either nothing waits to be reported or the controller acknowledged a report
/// (a controller that keeps closing the session on a report gets the growing back-off).
async fn exchange<R: Runtime, C: Cgroups>(
    mut inbound: tonic::Streaming<ControllerMessage>,
    tx: mpsc::Sender<AgentMessage>,
    engine: &Engine<R, C>,
    reporter: &Arc<Reporter>,
    backoff: &mut Backoff,
    heartbeat: Duration,
) -> Result<(), LinkError> {
    let dead_after = heartbeat * link::MISSED_HEARTBEATS;
    match next(&mut inbound, dead_after).await? {
        Some(FromController::Hello(h)) => check_controller(&h)?,
        None => return Ok(()),
        Some(_) => return Err(LinkError::NoHello),
    }
    engine.new_session();
    let (desired_ack, mut desired_acks) = watch::channel(0u64);
    // ExecuteCommand sessions of this link session (issue 9): their output waits in an outbox
    // of its own that the writer drains only when no report is waiting; they end with it.
    let (exec_tx, mut exec_rx) = mpsc::channel::<AgentMessage>(EXEC_OUTBOX);
    let execs = crate::exec::ExecSessions::new(engine.clone(), exec_tx);
    // Issue 10: awslogs batches wait in an outbox of their own, sent after reports; the log
    // delivery sends again from the last acknowledged event when the session ends.
    let (log_tx, mut log_rx) = mpsc::channel::<AgentMessage>(LOG_OUTBOX);
    let _logs_link = engine.logs().map(|l| {
        l.connected(log_tx);
        LogsLink(l.clone())
    });
    let reader = async {
        let mut last_desired = 0u64;
        let mut worked = false;
        loop {
            match next(&mut inbound, dead_after).await? {
                Some(FromController::DesiredTasks(d)) => {
                    // Within a session sequence numbers rise; an older one is stale.
                    if d.seq > last_desired {
                        if last_desired == 0 && !worked && reporter.pending_after(0).is_empty() {
                            worked = true;
                            backoff.reset();
                        }
                        last_desired = d.seq;
                        engine.apply_desired(&d);
                    }
                    desired_ack.send_replace(d.seq);
                }
                Some(FromController::Deregistered(d)) => {
                    return Err(LinkError::Deregistered(format!(
                        "{}: {}",
                        d.container_instance_arn, d.reason
                    )));
                }
                Some(FromController::StateChangeAck(seq)) => {
                    reporter.ack(seq);
                    if last_desired > 0 && !worked {
                        worked = true;
                        backoff.reset();
                    }
                }
                Some(FromController::ExecStart(m)) => execs.start(m),
                Some(FromController::ExecInput(m)) => execs.input(m),
                Some(FromController::ExecResize(m)) => execs.resize(m),
                Some(FromController::ExecCancel(m)) => execs.cancel(m),
                Some(FromController::LogAck(a)) => {
                    if let Some(l) = engine.logs() {
                        l.ack(a);
                    }
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
    };
    let writer = async {
        let mut latest = reporter.subscribe();
        // Stats samples: sent as they come, never resent (the one thing the link drops by
        // design; a lost sample is replaced by the next). The one waiting is sent at once.
        let mut stats = reporter.subscribe_stats();
        stats.mark_changed();
        // Pull progress (issue 11): like stats, the latest per task, never resent.
        let mut pulls = reporter.subscribe_pull_progress();
        pulls.mark_changed();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Everything not yet acknowledged goes again: the controller applies each seq once.
        let mut sent = 0u64;
        loop {
            for change in reporter.pending_after(sent) {
                sent = change.seq;
                tx.send(send(ToController::TaskStateChange(change)))
                    .await
                    .map_err(|_| LinkError::Closed)?;
                tick.reset();
            }
            // Reports and acks first: a session's output never holds them up by more than
            // what already waits in the link's own buffer.
            let m = tokio::select! {
                biased;
                r = latest.changed() => {
                    r.map_err(|_| LinkError::Closed)?;
                    continue;
                }
                r = stats.changed() => {
                    r.map_err(|_| LinkError::Closed)?;
                    match stats.borrow_and_update().clone() {
                        Some(report) => ToController::TaskStats(report),
                        None => continue,
                    }
                }
                r = pulls.changed() => {
                    r.map_err(|_| LinkError::Closed)?;
                    for p in reporter.take_pull_progress() {
                        tx.send(send(ToController::PullProgress(p)))
                            .await
                            .map_err(|_| LinkError::Closed)?;
                    }
                    continue;
                }
                r = desired_acks.changed() => {
                    r.map_err(|_| LinkError::Closed)?;
                    ToController::DesiredTasksAck(*desired_acks.borrow_and_update())
                }
                _ = tick.tick() => ToController::Heartbeat(Heartbeat {}),
                Some(m) = exec_rx.recv() => match m.message {
                    Some(m) => m,
                    None => continue,
                },
                Some(m) = log_rx.recv() => match m.message {
                    Some(m) => m,
                    None => continue,
                },
            };
            tx.send(send(m)).await.map_err(|_| LinkError::Closed)?;
            tick.reset();
        }
    };
    tokio::select! {
        r = reader => r,
        r = writer => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupError;
    use crate::engine::EngineConfig;
    use crate::runtime::{
        ContainerState, CreateContainer, ImageConfig, LabelledContainer, RuntimeError,
    };
    use crate::state::{AgentState, DataDir};
    use async_trait::async_trait;
    use berth_proto::v1::agent_server::{Agent, AgentServer};
    use std::sync::Mutex;

    /// A runtime for sessions with no tasks: nothing may be called.
    struct NoRuntime;
    fn none<T>(op: &'static str) -> Result<T, RuntimeError> {
        Err(RuntimeError::Call {
            op,
            id: String::new(),
            source: tonic::Status::unimplemented("no runtime in this test"),
        })
    }
    #[async_trait]
    impl Runtime for NoRuntime {
        async fn image(&self, _: &str) -> Result<ImageConfig, RuntimeError> {
            none("image")
        }
        async fn create(&self, _: &CreateContainer) -> Result<(), RuntimeError> {
            none("create")
        }
        async fn start(&self, _: &CreateContainer) -> Result<(), RuntimeError> {
            none("start")
        }
        async fn wait(&self, _: &str) -> Result<u32, RuntimeError> {
            none("wait")
        }
        async fn kill(&self, _: &str, _: u32) -> Result<(), RuntimeError> {
            none("kill")
        }
        async fn state(&self, _: &str) -> Result<ContainerState, RuntimeError> {
            none("state")
        }
        async fn delete(&self, _: &str) -> Result<(), RuntimeError> {
            none("delete")
        }
        async fn list(&self, _: &str) -> Result<Vec<LabelledContainer>, RuntimeError> {
            Ok(Vec::new())
        }
    }
    /// A network that is never asked for anything (these tests start no task).
    struct NoNetwork;
    #[async_trait::async_trait]
    impl crate::network::Network for NoNetwork {
        fn subnets(&self) -> Vec<crate::network::SubnetConfig> {
            Vec::new()
        }
        fn allocate(
            &self,
            _: &crate::network::NetworkPlan,
        ) -> Result<crate::network::TaskNetworkState, crate::network::NetworkError> {
            Err(crate::network::NetworkError::Invalid(
                "no network in these tests".into(),
            ))
        }
        fn release(&self, _: &crate::network::TaskNetworkState) {}
        async fn setup(
            &self,
            _: &mut crate::network::TaskNetworkState,
        ) -> Result<(), crate::network::NetworkError> {
            Ok(())
        }
        async fn set_ingress(
            &self,
            _: &crate::network::TaskNetworkState,
            _: &[crate::network::IngressRule],
        ) -> Result<(), crate::network::NetworkError> {
            Ok(())
        }
        async fn teardown(
            &self,
            _: &crate::network::TaskNetworkState,
        ) -> Result<(), crate::network::NetworkError> {
            Ok(())
        }
        async fn recover(
            &self,
            _: &[crate::network::TaskNetworkState],
        ) -> Result<Vec<String>, crate::network::NetworkError> {
            Ok(Vec::new())
        }
    }

    struct NoCgroups;
    impl Cgroups for NoCgroups {
        fn create_task(&self, _: &str, _: &crate::cgroups::TaskLimits) -> Result<(), CgroupError> {
            Ok(())
        }
        fn container_path(&self, _: &str, _: &str) -> String {
            String::new()
        }
        fn oom_kills(&self, _: &str, _: &str) -> u64 {
            0
        }
        fn remove_task(&self, _: &str) -> Result<(), CgroupError> {
            Ok(())
        }
    }

    /// A controller that plays a script: its messages, then silence; records what it hears.
    #[derive(Clone, Default)]
    struct Scripted {
        script: Vec<ControllerMessage>,
        refuse: Option<String>,
        /// Refuse registration as the controller refuses a deregistered instance's ARN.
        refuse_inactive: bool,
        heard: Arc<Mutex<Vec<ToController>>>,
        registered_with: Arc<Mutex<Vec<Option<String>>>>,
    }

    #[tonic::async_trait]
    impl Agent for Scripted {
        async fn register_container_instance(
            &self,
            r: tonic::Request<RegisterContainerInstanceRequest>,
        ) -> Result<tonic::Response<RegisterContainerInstanceResponse>, tonic::Status> {
            let given = r.into_inner().container_instance_arn;
            self.registered_with.lock().unwrap().push(given.clone());
            if self.refuse_inactive {
                return Err(link::inactive_refusal(&given.unwrap_or_default()));
            }
            Ok(tonic::Response::new(RegisterContainerInstanceResponse {
                container_instance: Some(ContainerInstance {
                    container_instance_arn:
                        "arn:aws:ecs:on-prem:000000000000:container-instance/default/abc".into(),
                    ..Default::default()
                }),
            }))
        }
        async fn enroll(
            &self,
            _: tonic::Request<EnrollRequest>,
        ) -> Result<tonic::Response<EnrollResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("scripted"))
        }
        async fn renew_certificate(
            &self,
            _: tonic::Request<RenewCertificateRequest>,
        ) -> Result<tonic::Response<EnrollResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("scripted"))
        }
        async fn reenroll(
            &self,
            _: tonic::Request<ReenrollRequest>,
        ) -> Result<tonic::Response<EnrollResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("scripted"))
        }
        async fn get_task_secrets(
            &self,
            _: tonic::Request<GetTaskSecretsRequest>,
        ) -> Result<tonic::Response<GetTaskSecretsResponse>, tonic::Status> {
            Err(tonic::Status::unimplemented("scripted"))
        }
        type SessionStream = ReceiverStream<Result<ControllerMessage, tonic::Status>>;
        async fn session(
            &self,
            r: tonic::Request<tonic::Streaming<AgentMessage>>,
        ) -> Result<tonic::Response<Self::SessionStream>, tonic::Status> {
            if let Some(line) = &self.refuse {
                return Err(tonic::Status::failed_precondition(line.clone()));
            }
            let (tx, rx) = mpsc::channel(16);
            let (script, heard) = (self.script.clone(), self.heard.clone());
            let mut inbound = r.into_inner();
            tokio::spawn(async move {
                for m in script {
                    let _ = tx.send(Ok(m)).await;
                }
                while let Some(Ok(m)) = inbound.next().await {
                    if let Some(m) = m.message {
                        heard.lock().unwrap().push(m);
                    }
                }
            });
            Ok(tonic::Response::new(ReceiverStream::new(rx)))
        }
    }

    fn from(m: FromController) -> ControllerMessage {
        ControllerMessage { message: Some(m) }
    }

    fn controller_hello(v: u32) -> ControllerMessage {
        from(FromController::Hello(ControllerHello {
            protocol_version: v,
            controller_version: "test".into(),
        }))
    }

    /// Runs one session of a real agent session against `scripted`.
    async fn session(scripted: Scripted, backoff: &mut Backoff) -> Result<(), LinkError> {
        session_with(scripted, backoff, None).await
    }

    /// A scripted controller on a loopback port, and an agent (data dir, reporter, engine on
    /// fakes, registration) pointed at it.
    struct Rig {
        server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
        dir: std::path::PathBuf,
        data: DataDir,
        reporter: Arc<Reporter>,
        engine: Engine<NoRuntime, NoCgroups>,
        reg: Registration,
    }

    impl Rig {
        async fn start(scripted: Scripted) -> Rig {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(AgentServer::new(scripted))
                    .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
            );
            let dir = std::env::temp_dir()
                .join(format!("berth-session-{}", uuid::Uuid::new_v4().simple()));
            std::fs::create_dir_all(&dir).unwrap();
            let data = DataDir(dir.clone());
            let reporter = Arc::new(Reporter::new(data.clone(), AgentState::default()));
            let engine = Engine::start(
                Arc::new(NoRuntime),
                Arc::new(NoCgroups),
                Arc::new(NoNetwork),
                reporter.clone(),
                EngineConfig {
                    data_dir: data.clone(),
                    cluster: "default".into(),
                    stop_timeout: Duration::from_secs(30),
                    timeouts: Default::default(),
                    security: Default::default(),
                    secrets: Arc::new(crate::secrets::NoSecrets),
                    boot_id: None,
                    fallback_dns: Vec::new(),
                    task_cleanup_wait: Duration::from_secs(3 * 3600),
                    metadata: None,
                    logs: None,
                    images: Default::default(),
                    volumes: Default::default(),
                },
            )
            .unwrap();
            let reg = Registration {
                controller: format!("http://{addr}"),
                cluster: "default".into(),
                resources: Vec::new(),
                attributes: Vec::new(),
                version_info: VersionInfo::default(),
                heartbeat: Duration::from_millis(100),
                secrets: Arc::new(crate::secrets::LinkSecrets::new(Duration::from_secs(1))),
                tls: None,
            };
            Rig {
                server,
                dir,
                data,
                reporter,
                engine,
                reg,
            }
        }

        fn stop(self) {
            self.server.abort();
            let _ = std::fs::remove_dir_all(self.dir);
        }
    }

    /// [`session`], with a report waiting to be sent.
    async fn session_with(
        scripted: Scripted,
        backoff: &mut Backoff,
        pending: Option<TaskStateChange>,
    ) -> Result<(), LinkError> {
        let rig = Rig::start(scripted).await;
        if let Some(p) = pending {
            rig.reporter.report(p);
            rig.reporter.flush().await;
        }
        let r = once(&rig.reg, &rig.engine, &rig.reporter, backoff).await;
        rig.stop();
        r
    }

    /// Runs the agent's whole link (`run`, with its reconnects) against `scripted`, with a
    /// saved identity, until it ends; returns how it ended and the identity left on disk.
    async fn run_until_terminal(scripted: Scripted) -> (Terminal, AgentState) {
        let rig = Rig::start(scripted).await;
        rig.reporter
            .set_identity(
                "arn:aws:ecs:on-prem:000000000000:container-instance/default/abc",
                "default",
            )
            .await
            .unwrap();
        let terminal = tokio::time::timeout(
            Duration::from_secs(20),
            run(rig.reg.clone(), rig.engine.clone(), rig.reporter.clone()),
        )
        .await
        .expect("the link ends on deregistration");
        let saved: AgentState = crate::state::read_json(&rig.data.agent())
            .unwrap()
            .unwrap_or_default();
        rig.stop();
        (terminal, saved)
    }

    #[tokio::test]
    async fn a_deregistration_message_ends_the_link_for_good_and_forgets_the_arn() {
        let scripted = Scripted {
            script: vec![
                controller_hello(link::PROTOCOL_VERSION),
                from(FromController::DesiredTasks(DesiredTasks {
                    seq: 1,
                    tasks: vec![],
                    ..Default::default()
                })),
                from(FromController::Deregistered(Deregistered {
                    container_instance_arn:
                        "arn:aws:ecs:on-prem:000000000000:container-instance/default/abc".into(),
                    reason: "deregistered".into(),
                })),
            ],
            ..Default::default()
        };
        let (terminal, saved) = run_until_terminal(scripted.clone()).await;
        assert!(terminal.reason.contains("deregistered"), "{terminal:?}");
        assert!(terminal.forgotten.is_ok());
        assert_eq!(saved.container_instance_arn, None);
        // It registered once, under its saved ARN, and did not reconnect afterwards.
        assert_eq!(
            *scripted.registered_with.lock().unwrap(),
            vec![Some(
                "arn:aws:ecs:on-prem:000000000000:container-instance/default/abc".to_string()
            )]
        );
    }

    #[tokio::test]
    async fn a_registration_refused_as_inactive_is_terminal_too() {
        let scripted = Scripted {
            refuse_inactive: true,
            ..Default::default()
        };
        let (terminal, saved) = run_until_terminal(scripted.clone()).await;
        assert!(terminal.reason.contains("INACTIVE"), "{terminal:?}");
        assert_eq!(saved.container_instance_arn, None);
        assert_eq!(scripted.registered_with.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_controller_outside_the_protocol_window_is_refused_with_one_line() {
        let scripted = Scripted {
            script: vec![controller_hello(link::PROTOCOL_VERSION + 1)],
            ..Default::default()
        };
        match session(scripted, &mut Backoff::default()).await {
            Err(LinkError::Protocol(line)) => {
                assert!(line.contains(&format!("link protocol {}", link::PROTOCOL_VERSION + 1)));
                assert!(!line.contains('\n'));
            }
            other => panic!("expected a protocol refusal, got {other:?}"),
        }
        // And the controller's refusal of this agent is one line too.
        let scripted = Scripted {
            refuse: Some(link::refusal("agent 0.0.1", 0)),
            ..Default::default()
        };
        assert!(matches!(
            session(scripted, &mut Backoff::default()).await,
            Err(LinkError::Protocol(_))
        ));
    }

    /// Link protocol 2 (issue 12): this agent speaks 2 and takes a controller speaking 1 (it only
    /// ever sends whole sets), and acknowledges every set, whole or partial.
    #[tokio::test]
    async fn a_v1_controller_is_taken_and_every_set_whole_or_partial_is_acknowledged() {
        let scripted = Scripted {
            script: vec![
                controller_hello(1),
                from(FromController::DesiredTasks(DesiredTasks {
                    seq: 3,
                    ..Default::default()
                })),
                from(FromController::DesiredTasks(DesiredTasks {
                    seq: 4,
                    partial: true,
                    removed: vec!["arn:aws:ecs:on-prem:0:task/c/gone".into()],
                    ..Default::default()
                })),
            ],
            ..Default::default()
        };
        let r = session(scripted.clone(), &mut Backoff::default()).await;
        assert!(matches!(r, Err(LinkError::Silent(_))), "{r:?}");
        let heard = scripted.heard.lock().unwrap();
        assert!(
            matches!(heard.first(), Some(ToController::Hello(h)) if h.protocol_version == link::PROTOCOL_VERSION)
        );
        let acks: Vec<u64> = heard
            .iter()
            .filter_map(|m| match m {
                ToController::DesiredTasksAck(s) => Some(*s),
                _ => None,
            })
            .collect();
        assert_eq!(acks.last(), Some(&4), "{acks:?}");
    }

    #[tokio::test]
    async fn back_off_resets_only_after_a_desired_set_and_a_silent_controller_is_noticed() {
        let mut backoff = Backoff::default();
        for _ in 0..3 {
            backoff.next_delay();
        }
        // Connected, hello exchanged, but no desired set: not a working session.
        let scripted = Scripted {
            script: vec![controller_hello(link::PROTOCOL_VERSION)],
            ..Default::default()
        };
        let t0 = std::time::Instant::now();
        let r = session(scripted.clone(), &mut backoff).await;
        assert!(matches!(r, Err(LinkError::Silent(_))), "{r:?}");
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert!(!backoff.is_reset());
        // The agent sent heartbeats while it had nothing else to say.
        assert!(scripted
            .heard
            .lock()
            .unwrap()
            .iter()
            .any(|m| matches!(m, ToController::Heartbeat(_))));
        // A desired set makes it a session that worked.
        let scripted = Scripted {
            script: vec![
                controller_hello(link::PROTOCOL_VERSION),
                from(FromController::DesiredTasks(DesiredTasks {
                    seq: 7,
                    tasks: vec![],
                    ..Default::default()
                })),
            ],
            ..Default::default()
        };
        let r = session(scripted.clone(), &mut backoff).await;
        assert!(matches!(r, Err(LinkError::Silent(_))), "{r:?}");
        assert!(backoff.is_reset());
        let heard = scripted.heard.lock().unwrap();
        assert!(
            matches!(heard.first(), Some(ToController::Hello(h)) if !h.state_epoch.is_empty() && h.protocol_version == link::PROTOCOL_VERSION)
        );
        assert!(heard
            .iter()
            .any(|m| matches!(m, ToController::DesiredTasksAck(7))));
    }

    /// A controller that sends its desired set but never acknowledges the report the agent has
    /// waiting (e.g. it refuses it and closes the session) does not reset the back-off; one that
    /// acknowledges it does.
    #[tokio::test]
    async fn back_off_resets_only_once_a_waiting_report_is_acknowledged() {
        let waiting = TaskStateChange {
            task_arn: "arn:aws:ecs:on-prem:000000000000:task/default/t1".into(),
            last_status: "STOPPED".into(),
            ..Default::default()
        };
        let desired = from(FromController::DesiredTasks(DesiredTasks {
            seq: 7,
            tasks: vec![],
            ..Default::default()
        }));
        let mut backoff = Backoff::default();
        backoff.next_delay();
        let refusing = Scripted {
            script: vec![controller_hello(link::PROTOCOL_VERSION), desired.clone()],
            ..Default::default()
        };
        let _ = session_with(refusing.clone(), &mut backoff, Some(waiting.clone())).await;
        assert!(!backoff.is_reset());
        assert!(refusing.heard.lock().unwrap().iter().any(
            |m| matches!(m, ToController::TaskStateChange(c) if c.task_arn == waiting.task_arn)
        ));
        let acking = Scripted {
            script: vec![
                controller_hello(link::PROTOCOL_VERSION),
                desired,
                from(FromController::StateChangeAck(1)),
            ],
            ..Default::default()
        };
        let _ = session_with(acking, &mut backoff, Some(waiting)).await;
        assert!(backoff.is_reset());
    }

    #[test]
    fn backoff_grows_to_two_minutes_and_resets() {
        let mut b = Backoff::default();
        let first = b.next_delay();
        assert!(first >= Duration::from_millis(250) && first <= Duration::from_millis(300));
        for _ in 0..40 {
            b.next_delay();
        }
        let d = b.next_delay();
        assert!(d >= Duration::from_secs(120) && d <= Duration::from_secs(144));
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(300));
    }
}
