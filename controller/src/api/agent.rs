//! The `Agent` gRPC service: registration and the long-lived session of each agent. A thin
//! adapter: the link's logic is in `service/agent_link.rs`.
//!
//! A session reads and writes concurrently (a reader task applies reports; the writer sends the
//! hello, desired tasks, acks and heartbeats), so neither side can block the other on flow
//! control; a session that hears nothing for `MISSED_HEARTBEATS` intervals ends.

use crate::fleet::Attached;
use crate::security::activations::Activations;
use crate::security::pki::{Pki, PkiError};
use crate::service::{Controller, SessionInfo, SessionSent};
use berth_proto::arn;
use berth_proto::link;
use berth_proto::v1::agent_message::Message as FromAgent;
use berth_proto::v1::agent_server::{Agent, AgentServer};
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn, Instrument};

/// Serves the agent link.
pub struct AgentApi {
    controller: Arc<Controller>,
    heartbeat: Duration,
    /// Resolves task secrets for GetTaskSecrets; none: the call is refused.
    secrets: Option<Arc<crate::security::secrets::Secrets>>,
    identity: Option<LinkIdentity>,
    /// Stores the awslogs driver's batches (issue 10); none: batches are not acknowledged.
    logs: Option<Arc<crate::logs::LogService>>,
}

/// Log batches read but not yet stored, per session: past this the reader waits for the store
/// (the agent's spool holds the rest), so a slow disk costs no unbounded memory.
const LOG_BATCH_WINDOW: usize = 8;

/// What authenticates agents on the link: the CA and the activations, and whether the link
/// requires a client certificate (TLS on).
#[derive(Clone)]
pub struct LinkIdentity {
    /// The CA and the certificates it issued.
    pub pki: Arc<Pki>,
    /// The activations Enroll checks.
    pub activations: Arc<Activations>,
    /// Whether RegisterContainerInstance, Session, RenewCertificate (and GetTaskSecrets) need
    /// a known, unrevoked client certificate.
    pub required: bool,
}

fn unauthenticated(why: &str) -> Status {
    Status::unauthenticated(format!(
        "{why}: this controller's link needs the client certificate of an enrolled agent (start berth-agent with --activation-id and --activation-code)"
    ))
}

impl AgentApi {
    /// The agent link of `controller`, with the standard heartbeat interval.
    pub fn new(controller: Arc<Controller>) -> Self {
        Self {
            controller,
            heartbeat: link::HEARTBEAT_INTERVAL,
            secrets: None,
            identity: None,
            logs: None,
        }
    }

    /// Stores the agents' log batches in `logs` and acknowledges them.
    pub fn with_logs(mut self, logs: Arc<crate::logs::LogService>) -> Self {
        self.logs = Some(logs);
        self
    }

    /// Serves GetTaskSecrets from `secrets`.
    pub fn with_secrets(mut self, secrets: Arc<crate::security::secrets::Secrets>) -> Self {
        self.secrets = Some(secrets);
        self
    }

    /// Serves Enroll and RenewCertificate with `identity`, and requires client certificates on
    /// the link when `identity.required`.
    pub fn with_identity(mut self, identity: LinkIdentity) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The container instance the caller's client certificate is bound to: `Ok(None)` when the
    /// link requires no certificate (TLS off: the loopback demo has no identities),
    /// `Ok(Some(arn))` for a known, unrevoked certificate, `Unauthenticated` otherwise.
    pub(crate) fn caller_instance<T>(&self, r: &Request<T>) -> Result<Option<String>, Status> {
        let Some(id) = self.identity.as_ref().filter(|i| i.required) else {
            return Ok(None);
        };
        let certs = r.peer_certs();
        let Some(der) = certs.as_ref().and_then(|c| c.first()) else {
            return Err(unauthenticated("no client certificate"));
        };
        match id.pki.identify(der) {
            Ok(Some(record)) => Ok(Some(record.container_instance_arn)),
            Ok(None) => Err(unauthenticated(
                "the client certificate is unknown, expired or revoked",
            )),
            Err(e) => {
                warn!(error = %e, "cannot look up a client certificate");
                Err(Status::internal(format!(
                    "looking up the client certificate: {e}"
                )))
            }
        }
    }

    /// Refuses an instance that was deregistered (the link's INACTIVE refusal) or that the
    /// controller does not know (its record left the store): certificates name only live ones.
    async fn require_active(&self, id: &str, arn: &str) -> Result<(), Status> {
        if self.controller.instance_active(id).await {
            return Ok(());
        }
        if self.controller.instance_inactive(id).await.is_some() {
            return Err(link::inactive_refusal(arn));
        }
        Err(unauthenticated(&format!(
            "container instance {arn} is not registered"
        )))
    }

    /// A new certificate for the instance of `record` (RenewCertificate, Reenroll): refused for
    /// an INACTIVE instance; the instance's expired records go in the same commit.
    async fn reissue(
        &self,
        id: &LinkIdentity,
        csr_pem: &str,
        record: berth_proto::v1::CertificateRecord,
        done: &str,
    ) -> Result<Response<EnrollResponse>, Status> {
        let arn = record.container_instance_arn;
        let instance = arn::short_id("container-instance", &arn).unwrap_or_default();
        self.require_active(instance, &arn).await?;
        let (cert, write) = id
            .pki
            .issue(csr_pem, &arn, &record.cluster_arn, &record.activation_id)
            .map_err(|e| match e {
                PkiError::BadCsr(_) => Status::invalid_argument(e.to_string()),
                e => Status::internal(e.to_string()),
            })?;
        id.pki
            .record_renewal(&arn, write)
            .map_err(|e| Status::internal(e.to_string()))?;
        // A deregistration between the check and the commit would have missed this record:
        // checked again once it is stored, and revoked if the instance is gone.
        if let Err(refusal) = self.require_active(instance, &arn).await {
            id.pki
                .revoke(&arn)
                .map_err(|e| Status::internal(e.to_string()))?;
            return Err(refusal);
        }
        info!(instance = %arn, "{done}");
        Ok(Response::new(EnrollResponse {
            container_instance_arn: arn,
            certificate_pem: cert.pem,
            ca_pem: id.pki.ca().cert_pem().to_string(),
            not_after: Some(crate::security::pki::timestamp(cert.not_after)),
        }))
    }

    fn identity(&self, call: &str) -> Result<&LinkIdentity, Status> {
        self.identity.as_ref().ok_or_else(|| {
            Status::unimplemented(format!("{call} is not served: this controller has no CA"))
        })
    }

    /// Sets the heartbeat interval (tests use a short one).
    pub fn with_heartbeat(mut self, interval: Duration) -> Self {
        self.heartbeat = interval;
        self
    }

    /// The gRPC service, with the link's message size limits.
    pub fn into_server(self) -> AgentServer<Self> {
        AgentServer::new(self)
            .max_decoding_message_size(link::MAX_MESSAGE_SIZE)
            .max_encoding_message_size(link::MAX_MESSAGE_SIZE)
    }
}

/// Desired-task sequence numbers rise across controller restarts without being stored: each
/// session starts from the wall clock in microseconds.
fn seq_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

fn to_agent(m: ToAgent) -> Result<ControllerMessage, Status> {
    Ok(ControllerMessage { message: Some(m) })
}

#[tonic::async_trait]
impl Agent for AgentApi {
    async fn register_container_instance(
        &self,
        r: Request<RegisterContainerInstanceRequest>,
    ) -> Result<Response<RegisterContainerInstanceResponse>, Status> {
        let caller = self.caller_instance(&r)?;
        let mut req = r.into_inner();
        if let Some(own) = caller {
            let id = arn::short_id("container-instance", &own).unwrap_or_default();
            // A certificate whose instance left the store must not register a new one; an
            // INACTIVE one gets the link's refusal below.
            if !self.controller.instance_active(id).await
                && self.controller.instance_inactive(id).await.is_none()
            {
                return Err(unauthenticated(&format!(
                    "container instance {own} is not registered"
                )));
            }
            let named = req
                .container_instance_arn
                .get_or_insert_with(|| own.clone());
            let cluster = arn::resource("cluster", &req.cluster)
                .filter(|c| !c.is_empty())
                .unwrap_or("default");
            let id = arn::short_id("container-instance", &own).unwrap_or_default();
            if *named != own || arn::container_instance(cluster, id) != own {
                warn!(certificate = %own, named = %named, cluster = %req.cluster, "refusing a registration for another instance");
                return Err(Status::permission_denied(format!(
                    "this client certificate is for container instance {own}; it may register only that instance, in its cluster"
                )));
            }
        }
        let ci = self.controller.register_container_instance(req).await?;
        info!(instance = %ci.container_instance_arn, "container instance registered");
        Ok(Response::new(RegisterContainerInstanceResponse {
            container_instance: Some(ci),
        }))
    }

    async fn enroll(&self, r: Request<EnrollRequest>) -> Result<Response<EnrollResponse>, Status> {
        let id = self.identity("Enroll")?;
        let req = r.into_inner();
        let activation = req.activation_id.clone();
        match id
            .activations
            .enroll(&self.controller, &id.pki, req, std::time::SystemTime::now())
            .await
        {
            Ok(resp) => Ok(Response::new(resp)),
            Err(e) => {
                warn!(%activation, "enrollment refused: {e}");
                Err(e.into())
            }
        }
    }

    async fn reenroll(
        &self,
        r: Request<ReenrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let id = self.identity("Reenroll")?;
        let req = r.into_inner();
        let arn = req.container_instance_arn.clone();
        let refused = || {
            unauthenticated(
                "Reenroll needs a request signed with the key of the instance's certificate, expired less than 30 days ago and not revoked",
            )
        };
        let record = id
            .pki
            .expired_record_for_key(
                &req.csr_pem,
                &arn,
                crate::security::pki::EXPIRED_RENEWAL_GRACE,
                std::time::SystemTime::now(),
            )
            .map_err(|e| match e {
                PkiError::BadCsr(_) => Status::invalid_argument(e.to_string()),
                e => Status::internal(e.to_string()),
            })?
            .ok_or_else(refused)?;
        self.reissue(
            id,
            &req.csr_pem,
            record,
            "expired client certificate replaced (Reenroll with the instance's key)",
        )
        .await
    }

    async fn renew_certificate(
        &self,
        r: Request<RenewCertificateRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let id = self.identity("RenewCertificate")?;
        let certs = r.peer_certs();
        let record = match certs.as_ref().and_then(|c| c.first()) {
            None => None,
            Some(der) => id
                .pki
                .identify(der)
                .map_err(|e| Status::internal(format!("looking up the client certificate: {e}")))?,
        };
        let Some(record) = record else {
            return Err(unauthenticated(
                "RenewCertificate needs the current client certificate",
            ));
        };
        self.reissue(
            id,
            &r.get_ref().csr_pem,
            record,
            "client certificate renewed",
        )
        .await
    }

    /// The values of a task's secrets, only for the agent of the instance the task is assigned
    /// to and only while the task is not STOPPED. With TLS off (`caller_instance` is None: the
    /// loopback demo) there is no identity to check and the call is allowed. A secret that does
    /// not resolve fails the call (FailedPrecondition) naming it, never a value.
    async fn get_task_secrets(
        &self,
        r: Request<GetTaskSecretsRequest>,
    ) -> Result<Response<GetTaskSecretsResponse>, Status> {
        let caller = self.caller_instance(&r)?;
        let task_arn = r.into_inner().task_arn;
        let Some(secrets) = &self.secrets else {
            return Err(Status::unimplemented("task secrets are not served"));
        };
        let Some(refs) = self.controller.task_secret_refs(&task_arn).await else {
            return Err(Status::not_found(format!("task {task_arn} is not known")));
        };
        if let Some(caller) = caller {
            if caller != refs.container_instance_arn {
                warn!(task = %task_arn, %caller, "refusing task secrets to another instance");
                return Err(Status::permission_denied(format!(
                    "task {task_arn} is not assigned to container instance {caller}"
                )));
            }
        }
        if refs.stopped {
            return Err(Status::failed_precondition(format!(
                "task {task_arn} is STOPPED; its secrets are no longer given out"
            )));
        }
        let mut out = GetTaskSecretsResponse::default();
        for (container, s) in refs.secrets {
            let secrets = secrets.clone();
            let from = s.value_from.clone();
            let value = tokio::task::spawn_blocking(move || secrets.resolve(&from))
                .await
                .map_err(|e| Status::internal(format!("resolving secrets: {e}")))?
                .map_err(|e| {
                    Status::failed_precondition(format!(
                        "container {container}: secret {} ({}): {e}",
                        s.name, s.value_from
                    ))
                })?;
            out.secrets.push(SecretValue {
                container_name: container,
                name: s.name,
                value,
            });
        }
        // Issue 11: repositoryCredentials, resolved from the same store and read as ECS reads
        // them; what is wrong is named (container, parameter, why), never a value.
        for (container, parameter) in refs.registry {
            let secrets = secrets.clone();
            let from = parameter.clone();
            let (username, password) =
                tokio::task::spawn_blocking(move || secrets.resolve_registry_credentials(&from))
                    .await
                    .map_err(|e| Status::internal(format!("resolving registry credentials: {e}")))?
                    .map_err(|e| {
                        Status::failed_precondition(format!(
                            "container {container}: repositoryCredentials.credentialsParameter {parameter}: {e}"
                        ))
                    })?;
            out.registry_credentials.push(RegistryCredentials {
                container_name: container,
                username,
                password,
            });
        }
        debug!(
            task = %task_arn,
            count = out.secrets.len(),
            registry = out.registry_credentials.len(),
            "task secrets sent"
        );
        Ok(Response::new(out))
    }

    type SessionStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn session(
        &self,
        r: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let caller = self.caller_instance(&r)?;
        let mut inbound = r.into_inner();
        let dead_after = self.heartbeat * link::MISSED_HEARTBEATS;
        let hello = match tokio::time::timeout(dead_after, inbound.next()).await {
            Ok(Some(Ok(AgentMessage {
                message: Some(FromAgent::Hello(h)),
            }))) => h,
            _ => return Err(Status::invalid_argument("a session starts with AgentHello")),
        };
        if let Some(own) = &caller {
            if *own != hello.container_instance_arn {
                warn!(certificate = %own, named = %hello.container_instance_arn, "refusing a session for another instance");
                return Err(Status::permission_denied(format!(
                    "this client certificate is for container instance {own}; it may open a session only for that instance"
                )));
            }
        }
        let info = match self.controller.open_session(&hello).await {
            Ok(i) => SessionInfo {
                own_tasks_only: caller.is_some(),
                ..i
            },
            Err(e) => {
                warn!(instance = %hello.container_instance_arn, "refusing agent session: {e}");
                return Err(e.into());
            }
        };
        let (tx, rx) = mpsc::channel(16);
        let span = tracing::info_span!("session", instance = %info.instance_id);
        tokio::spawn(
            run(
                self.controller.clone(),
                info,
                hello,
                inbound,
                tx,
                self.heartbeat,
                self.logs.clone(),
            )
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// The writer half of a session; owns the reader task.
async fn run(
    controller: Arc<Controller>,
    info: SessionInfo,
    agent: AgentHello,
    inbound: Streaming<AgentMessage>,
    tx: mpsc::Sender<Result<ControllerMessage, Status>>,
    heartbeat: Duration,
    logs: Option<Arc<crate::logs::LogService>>,
) {
    info!(agent_version = %agent.agent_version, protocol_version = agent.protocol_version, epoch = %info.epoch, "agent connected");
    // Log batches (issue 10): the reader hands them to a writer of their own (bounded), whose
    // acks the session loop sends; a slow disk delays acks, not the session.
    let (log_ack_tx, mut log_ack_rx) = mpsc::channel::<LogAck>(LOG_BATCH_WINDOW);
    let (log_tx, log_writer) = match logs {
        Some(logs) => {
            let (batch_tx, batch_rx) = mpsc::channel(LOG_BATCH_WINDOW);
            let writer =
                tokio::spawn(store_log_batches(logs, batch_rx, log_ack_tx).in_current_span());
            (Some(batch_tx), Some(writer))
        }
        None => (None, None),
    };
    let attached = Arc::new(controller.fleet().attach(&info.instance_id));
    // ExecuteCommand sessions ride this link (issue 9): what they send to the agent waits in
    // a bounded outbox the writer drains; what the agent sends for them the reader hands on
    // without waiting (fleet::exec).
    let exec = controller.fleet().exec().clone();
    let (exec_link, mut exec_out) = exec.attach_link(&info.instance_id);
    let (ack_tx, mut ack_rx) = watch::channel(0u64);
    let (done_tx, mut done) = watch::channel(());
    let reader = tokio::spawn(
        read(
            controller.clone(),
            info.clone(),
            inbound,
            attached.clone(),
            heartbeat * link::MISSED_HEARTBEATS,
            ReaderOut {
                ack: ack_tx,
                _done: done_tx,
                exec: exec.clone(),
                exec_link,
                logs: log_tx,
            },
        )
        .in_current_span(),
    );
    let mut seq = seq_base();
    // Protocol 2 (issue 12): after the first set, only what changed.
    let mut sent = SessionSent::new(agent.protocol_version);
    let hello = ToAgent::Hello(ControllerHello {
        protocol_version: link::PROTOCOL_VERSION,
        controller_version: env!("CARGO_PKG_VERSION").into(),
    });
    let first = controller
        .desired_tasks(&info.instance_id, seq, &mut sent)
        .await;
    let mut queue = vec![hello, ToAgent::DesiredTasks(first)];
    // Deregistered between the session's opening and its attaching: tell the agent at once.
    let mut ending = deregistered(&controller, &info, &mut queue).await;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    'session: loop {
        for m in queue.drain(..) {
            if let ToAgent::DesiredTasks(d) = &m {
                debug!(
                    seq = d.seq,
                    tasks = d.tasks.len(),
                    removed = d.removed.len(),
                    partial = d.partial,
                    "sending desired tasks"
                );
            }
            tokio::select! {
                r = tx.send(to_agent(m)) => if r.is_err() { break 'session },
                _ = done.changed() => break 'session,
            }
            tick.reset();
        }
        if ending {
            info!("instance deregistered; agent told, ending the session");
            break;
        }
        tokio::select! {
            _ = done.changed() => break,
            _ = attached.changed.notified() => {
                if !controller.fleet().is_current(&attached) {
                    info!("session replaced by a newer one");
                    break;
                }
                if deregistered(&controller, &info, &mut queue).await {
                    ending = true;
                    continue;
                }
                let d = controller.desired_tasks(&info.instance_id, seq + 1, &mut sent).await;
                // A partial set with no change in it is not sent (and takes no seq).
                if !SessionSent::is_empty_partial(&d) {
                    seq += 1;
                    queue.push(ToAgent::DesiredTasks(d));
                }
            }
            r = ack_rx.changed() => {
                if r.is_err() { break; }
                let ack = *ack_rx.borrow_and_update();
                queue.push(ToAgent::StateChangeAck(ack));
            }
            _ = tick.tick() => queue.push(ToAgent::Heartbeat(Heartbeat {})),
            Some(m) = exec_out.recv() => queue.push(m),
            Some(a) = log_ack_rx.recv() => queue.push(ToAgent::LogAck(a)),
        }
    }
    exec.detach_link(&info.instance_id, exec_link);
    reader.abort();
    if let Some(w) = log_writer {
        w.abort();
    }
    info!("agent disconnected");
}

/// Whether the session's instance was deregistered; if so, queues the message that tells the
/// agent (it forgets its instance ARN and exits for good).
async fn deregistered(
    controller: &Controller,
    info: &SessionInfo,
    queue: &mut Vec<ToAgent>,
) -> bool {
    let Some(arn) = controller.instance_inactive(&info.instance_id).await else {
        return false;
    };
    queue.push(ToAgent::Deregistered(Deregistered {
        container_instance_arn: arn,
        reason: "the container instance was deregistered (DeregisterContainerInstance)".into(),
    }));
    true
}

/// Where the reader's results go: desired-set acks to the writer, its end (dropping `_done`),
/// and ExecuteCommand output to the sessions of this link (issue 9).
struct ReaderOut {
    ack: watch::Sender<u64>,
    _done: watch::Sender<()>,
    exec: Arc<crate::fleet::exec::ExecRoutes>,
    exec_link: u64,
    /// Where log batches go to be stored (issue 10); none: this controller keeps no logs.
    logs: Option<mpsc::Sender<LogBatch>>,
}

/// Stores a session's log batches in the order they came and queues each ack; ends when the
/// reader or the session ends.
async fn store_log_batches(
    logs: Arc<crate::logs::LogService>,
    mut batches: mpsc::Receiver<LogBatch>,
    acks: mpsc::Sender<LogAck>,
) {
    while let Some(b) = batches.recv().await {
        let (group, stream, n) = (
            b.log_group_name.clone(),
            b.log_stream_name.clone(),
            b.events.len(),
        );
        let ack = logs.store_batch(b).await;
        if ack.error.is_empty() {
            debug!(%group, %stream, events = n, stored_through = ack.stored_through, "log batch stored");
        } else {
            warn!(%group, %stream, error = %ack.error, "log batch not stored");
        }
        if acks.send(ack).await.is_err() {
            return;
        }
    }
}

/// The reader half: applies reports, records desired acks; ends (dropping `_done`) when the
/// stream ends, fails, a report cannot be stored, or nothing arrives for `dead_after`.
async fn read(
    controller: Arc<Controller>,
    info: SessionInfo,
    mut inbound: Streaming<AgentMessage>,
    attached: Arc<Attached>,
    dead_after: Duration,
    out: ReaderOut,
) {
    use crate::fleet::exec::ExecEvent;
    let ReaderOut {
        ack,
        _done,
        exec,
        exec_link,
        logs,
    } = out;
    let instance = info.instance_id.clone();
    loop {
        let msg = match tokio::time::timeout(dead_after, inbound.next()).await {
            Err(_) => {
                warn!(
                    "nothing from the agent for {} ms; ending the session",
                    dead_after.as_millis()
                );
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                warn!(error = %e, "session stream failed");
                return;
            }
            Ok(Some(Ok(m))) => m,
        };
        match msg.message {
            Some(FromAgent::TaskStateChange(c)) => {
                let seq = c.seq;
                debug!(task = %c.task_arn, status = %c.last_status, seq, "state change received");
                match controller.apply_state_change(&info, c).await {
                    Ok(changed) => {
                        ack.send_if_modified(|v| {
                            let newer = seq > *v;
                            *v = (*v).max(seq);
                            newer
                        });
                        if changed {
                            attached.changed.notify_one();
                        }
                    }
                    // Not acknowledged: ending the session makes the agent reconnect and send
                    // it again.
                    Err(e) => {
                        warn!(error = %e, "state change not applied; closing the session");
                        return;
                    }
                }
            }
            // Samples: kept as the latest, never acknowledged (the link drops them by design).
            Some(FromAgent::TaskStats(r)) => controller.apply_task_stats(&info, r).await,
            // Issue 11: kept as the latest, like stats; never acknowledged.
            Some(FromAgent::PullProgress(p)) => controller.apply_pull_progress(&info, p).await,
            Some(FromAgent::DesiredTasksAck(seq)) => {
                debug!(seq, "agent took in desired tasks");
                controller.fleet().desired_acked(&attached, seq);
            }
            // ExecuteCommand (issue 9): handed to the session, never waited on.
            Some(FromAgent::ExecStarted(m)) => {
                exec.deliver(&instance, exec_link, &m.session_id, ExecEvent::Started);
            }
            Some(FromAgent::ExecOutput(m)) => {
                let event = ExecEvent::Output {
                    data: m.data,
                    stderr: m.stderr,
                };
                exec.deliver(&instance, exec_link, &m.session_id, event);
            }
            Some(FromAgent::ExecExit(m)) => {
                let event = ExecEvent::Exit {
                    code: m.exit_code,
                    error: m.error,
                };
                exec.deliver(&instance, exec_link, &m.session_id, event);
            }
            // Issue 10: stored and acknowledged by the session's log writer; waiting here only
            // when LOG_BATCH_WINDOW batches are already waiting for the store.
            Some(FromAgent::LogBatch(b)) => match &logs {
                Some(to_store) => {
                    if to_store.send(b).await.is_err() {
                        warn!("the session's log writer ended; closing the session");
                        return;
                    }
                }
                None => {
                    warn!(group = %b.log_group_name, stream = %b.log_stream_name, "log batch received; this controller keeps no logs, not acknowledged");
                }
            },
            Some(FromAgent::Heartbeat(_)) | Some(FromAgent::Hello(_)) | None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::{seal::Sealer, secrets::Secrets};
    use crate::store::memory::MemoryStore;

    /// A controller with one task whose container names `value_from`, and the link serving it.
    async fn rig(value_from: &str) -> (AgentApi, Arc<Secrets>, String, crate::fleet::Attached) {
        let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::default());
        let secrets = Arc::new(Secrets::new(store.clone(), Sealer::new(&[1u8; 32])));
        let c =
            Arc::new(Controller::load(store, Arc::new(crate::fleet::Fleet::default())).unwrap());
        c.create_cluster(CreateClusterRequest::default())
            .await
            .unwrap();
        let res = |name: &str| Resource {
            name: name.into(),
            r#type: "INTEGER".into(),
            integer_value: 4096,
            ..Default::default()
        };
        let ci = c
            .register_container_instance(RegisterContainerInstanceRequest {
                total_resources: vec![res("CPU"), res("MEMORY")],
                ..Default::default()
            })
            .await
            .unwrap();
        let id = berth_proto::arn::short_id("container-instance", &ci.container_instance_arn)
            .unwrap()
            .to_string();
        let session = c.fleet().attach(&id);
        c.fleet().desired_acked(&session, 1);
        c.register_task_definition(
            serde_json::from_str(&format!(
                r#"{{"family":"s","containerDefinitions":[{{"name":"web","image":"x","memory":64,
                "secrets":[{{"name":"DB","valueFrom":"{value_from}"}}]}}]}}"#
            ))
            .unwrap(),
        )
        .await
        .unwrap();
        let run = c
            .run_task(RunTaskRequest {
                task_definition: "s".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let api = AgentApi::new(c).with_secrets(secrets.clone());
        (api, secrets, run.tasks[0].task_arn.clone(), session)
    }

    fn ask(task_arn: &str) -> Request<GetTaskSecretsRequest> {
        Request::new(GetTaskSecretsRequest {
            task_arn: task_arn.into(),
        })
    }

    #[tokio::test]
    async fn get_task_secrets_resolves_by_name_and_names_what_does_not_resolve() {
        let (api, secrets, task, _s) =
            rig("arn:aws:ssm:us-east-1:123456789012:parameter/app/db").await;
        let e = api.get_task_secrets(ask(&task)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert!(
            e.message().contains("container web: secret DB")
                && e.message().contains("parameter app/db does not exist"),
            "{e:?}"
        );
        secrets
            .put_parameter(PutParameterRequest {
                name: "/app/db".into(),
                value: "pw-value".into(),
                r#type: Some("SecureString".into()),
                ..Default::default()
            })
            .unwrap();
        let got = api.get_task_secrets(ask(&task)).await.unwrap().into_inner();
        assert_eq!(got.secrets.len(), 1);
        let s = &got.secrets[0];
        assert_eq!(
            (s.container_name.as_str(), s.name.as_str(), s.value.as_str()),
            ("web", "DB", "pw-value")
        );
        let unknown = berth_proto::arn::task("default", "00000000000000000000000000000000");
        let e = api.get_task_secrets(ask(&unknown)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }

    /// Issue 11: a container's repositoryCredentials come back beside its secrets; a secret
    /// that is missing or not ECS's JSON fails the call naming the container, the parameter
    /// and what is wrong, never the value.
    #[tokio::test]
    async fn get_task_secrets_returns_registry_credentials_and_names_what_is_wrong() {
        let (api, secrets, _, _s) = rig("/app/db").await;
        secrets
            .put_parameter(PutParameterRequest {
                name: "/app/db".into(),
                value: "db-pw".into(),
                r#type: Some("SecureString".into()),
                ..Default::default()
            })
            .unwrap();
        api.controller
            .register_task_definition(
                serde_json::from_str(
                    r#"{"family":"s","containerDefinitions":[{"name":"web","image":"reg.example/app","memory":64,
                    "repositoryCredentials":{"credentialsParameter":"arn:aws:secretsmanager:us-east-1:1:secret:reg/creds"},
                    "secrets":[{"name":"DB","valueFrom":"/app/db"}]},
                    {"name":"side","image":"x","memory":64}]}"#,
                )
                .unwrap(),
            )
            .await
            .unwrap();
        let run = api
            .controller
            .run_task(RunTaskRequest {
                task_definition: "s:2".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let task = run.tasks[0].task_arn.clone();
        let e = api.get_task_secrets(ask(&task)).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition);
        assert_eq!(
            e.message(),
            "container web: repositoryCredentials.credentialsParameter arn:aws:secretsmanager:us-east-1:1:secret:reg/creds: secret reg/creds does not exist"
        );
        secrets
            .create_secret(CreateSecretRequest {
                name: "reg/creds".into(),
                secret_string: Some("hunter2-not-json".into()),
                ..Default::default()
            })
            .unwrap();
        let e = api.get_task_secrets(ask(&task)).await.unwrap_err();
        assert!(
            e.message().starts_with("container web: repositoryCredentials.credentialsParameter arn:aws:secretsmanager:us-east-1:1:secret:reg/creds: secret reg/creds is not a JSON object"),
            "{e:?}"
        );
        assert!(!e.message().contains("hunter2"), "{e:?}");
        secrets
            .put_secret_value(PutSecretValueRequest {
                secret_id: "reg/creds".into(),
                secret_string: Some(r#"{"username":"robot","password":"hunter2"}"#.into()),
                ..Default::default()
            })
            .unwrap();
        let got = api.get_task_secrets(ask(&task)).await.unwrap().into_inner();
        assert_eq!(got.secrets.len(), 1);
        assert_eq!(got.secrets[0].value, "db-pw");
        assert_eq!(got.registry_credentials.len(), 1, "only web has some");
        let r = &got.registry_credentials[0];
        assert_eq!(
            (
                r.container_name.as_str(),
                r.username.as_str(),
                r.password.as_str()
            ),
            ("web", "robot", "hunter2")
        );
    }

    /// Issue 10 over the real link (in-process server, scripted agent): a batch is stored and
    /// acknowledged with the stream's highest number, a resent one is stored once, a batch for
    /// a group that does not exist (create_group false) is refused by name and not stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn log_batches_are_stored_once_and_acknowledged_over_the_session() {
        use berth_proto::v1::agent_client::AgentClient;
        let store: Arc<dyn crate::store::Store> = Arc::new(MemoryStore::default());
        let c =
            Arc::new(Controller::load(store, Arc::new(crate::fleet::Fleet::default())).unwrap());
        c.create_cluster(CreateClusterRequest::default())
            .await
            .unwrap();
        let res = |name: &str| Resource {
            name: name.into(),
            r#type: "INTEGER".into(),
            integer_value: 4096,
            ..Default::default()
        };
        let ci = c
            .register_container_instance(RegisterContainerInstanceRequest {
                total_resources: vec![res("CPU"), res("MEMORY")],
                ..Default::default()
            })
            .await
            .unwrap();
        let log_store = Arc::new(crate::logs::store::RedbLogStore::in_memory().unwrap());
        let logs = Arc::new(crate::logs::LogService::new(
            log_store.clone(),
            crate::logs::system_clock(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(
                    AgentApi::new(c.clone())
                        .with_logs(logs.clone())
                        .into_server(),
                )
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let mut client = AgentClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        let send = |m: FromAgent| {
            let tx = tx.clone();
            async move { tx.send(AgentMessage { message: Some(m) }).await.unwrap() }
        };
        send(FromAgent::Hello(AgentHello {
            container_instance_arn: ci.container_instance_arn.clone(),
            protocol_version: link::PROTOCOL_VERSION,
            state_epoch: "e1".into(),
            ..Default::default()
        }))
        .await;
        let mut inbound = client
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let batch = |group: &str, create: bool, first: u64, n: u64| {
            FromAgent::LogBatch(LogBatch {
                log_group_name: group.into(),
                log_stream_name: "web/app/t1".into(),
                create_group: create,
                task_arn: "arn:aws:ecs:on-prem:000000000000:task/default/t1".into(),
                container_name: "app".into(),
                first_sequence: first,
                events: (first..first + n)
                    .map(|i| LogEvent {
                        timestamp: 1_000 + i as i64,
                        message: format!("line {i}"),
                    })
                    .collect(),
            })
        };
        async fn next_ack(inbound: &mut Streaming<ControllerMessage>) -> LogAck {
            loop {
                let m = tokio::time::timeout(Duration::from_secs(30), inbound.next())
                    .await
                    .expect("an ack within 30 s")
                    .expect("the session is open")
                    .unwrap();
                if let Some(ToAgent::LogAck(a)) = m.message {
                    return a;
                }
            }
        }
        send(batch("/ecs/app", true, 1, 3)).await;
        let a = next_ack(&mut inbound).await;
        assert_eq!((a.stored_through, a.error.as_str()), (3, ""));
        send(batch("/ecs/app", true, 2, 4)).await;
        let a = next_ack(&mut inbound).await;
        assert_eq!(a.stored_through, 5);
        assert_eq!(log_store.event_count().unwrap(), 5);
        send(batch("/ecs/missing", false, 1, 2)).await;
        let a = next_ack(&mut inbound).await;
        assert_eq!(
            a.error,
            "ResourceNotFoundException: The specified log group does not exist."
        );
        assert_eq!(
            (a.stored_through, a.log_group_name.as_str()),
            (0, "/ecs/missing")
        );
        assert_eq!(log_store.event_count().unwrap(), 5);
        let streams = logs.stored_streams("/ecs/app").await.unwrap();
        assert_eq!(streams[0].container_name, "app");
        server.abort();
    }
}
