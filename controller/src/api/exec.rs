//! The `ExecuteCommand` gRPC service (exec.proto): `berth ecs execute-command`'s stream. A thin
//! adapter: the first message is verified as a signed ECS call (the authenticator's
//! [`StreamAuth`]), the target and refusals come from the service layer
//! (`service::exec`), the session rides the agent's link (`fleet::exec`). Every session is
//! logged (tracing and the audit log) when it opens, with who opened it, and when it ends,
//! with its exit code.

use crate::error::EcsError;
use crate::fleet::exec::{ExecEvent, ExecSession};
use crate::security::auth::{Caller, StreamAuth};
use crate::service::exec::{new_session_id, split_command, ExecTarget};
use crate::service::Controller;
use berth_proto::link::EXEC_CHUNK;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::execute_command_input::Input;
use berth_proto::v1::execute_command_output::Output;
use berth_proto::v1::execute_command_server::{ExecuteCommand, ExecuteCommandServer};
use berth_proto::v1::*;
use prost::Message as _;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

/// The action name sessions are verified, authorised and audited as.
pub const ACTION: &str = "ExecuteCommand";
/// How long the client may take to send its start.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to start the process (containerd exec create and start).
const STARTED_TIMEOUT: Duration = Duration::from_secs(60);
/// Output messages passed on to the client before the agent is granted as many again.
const CREDIT_BATCH: u32 = 16;

/// Serves ExecuteCommand sessions.
pub struct ExecApi(pub Arc<Controller>);

impl ExecApi {
    /// The gRPC service (to be put behind the authenticator's layer).
    pub fn into_server(self) -> ExecuteCommandServer<Self> {
        ExecuteCommandServer::new(self)
            .max_decoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE)
    }
}

/// One audit line of a session.
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct SessionLine<'a> {
    time: String,
    access_key_id: Option<&'a str>,
    user_name: Option<&'a str>,
    service: &'static str,
    action: &'static str,
    source_address: Option<&'a str>,
    /// `OK`, or the exception name of a refusal.
    outcome: &'a str,
    /// SessionStarted, SessionEnded or Refused.
    event: &'static str,
    session_id: Option<&'a str>,
    cluster: &'a str,
    task: &'a str,
    container: Option<&'a str>,
    command: &'a str,
    interactive: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit_code: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

/// Who opened a session and what it runs: written to the audit log and traced.
struct SessionAudit {
    stream: StreamAuth,
    caller: Option<Caller>,
    start: ExecuteCommandStart,
    session_id: Option<String>,
}

impl SessionAudit {
    fn line(&self, event: &'static str, outcome: &str, exit: Option<i32>, error: Option<&str>) {
        let target = self.start.container.as_deref();
        let line = SessionLine {
            time: crate::security::audit::AuditEntry::at(SystemTime::now()),
            access_key_id: self.caller.as_ref().map(|c| c.access_key_id.as_str()),
            user_name: self.caller.as_ref().map(|c| c.user_name.as_str()),
            service: "ecs",
            action: ACTION,
            source_address: self.stream.source_address.as_deref(),
            outcome,
            event,
            session_id: self.session_id.as_deref(),
            cluster: &self.start.cluster,
            task: &self.start.task,
            container: target,
            command: &self.start.command,
            interactive: self.start.interactive,
            exit_code: exit,
            error,
        };
        info!(
            event,
            outcome,
            session = ?line.session_id,
            access_key_id = ?line.access_key_id,
            user = ?line.user_name,
            cluster = %line.cluster,
            task = %line.task,
            container = ?target,
            command = %line.command,
            exit_code = ?exit,
            error = ?error,
            "ExecuteCommand session"
        );
        if let Some(log) = self.stream.audit_log() {
            log.record_json(&line, ACTION);
        }
    }

    fn refused(&self, status: &Status) {
        let outcome = status
            .metadata()
            .get(berth_proto::exceptions::METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .unwrap_or_else(|| format!("{:?}", status.code()));
        self.line("Refused", &outcome, None, Some(status.message()));
    }
}

fn output(o: Output) -> ExecuteCommandOutput {
    ExecuteCommandOutput { output: Some(o) }
}

#[tonic::async_trait]
impl ExecuteCommand for ExecApi {
    type SessionStream = ReceiverStream<Result<ExecuteCommandOutput, Status>>;

    async fn session(
        &self,
        r: Request<Streaming<ExecuteCommandInput>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        // Fail closed: without the authenticator in front there is no way to verify.
        let Some(stream) = r.extensions().get::<StreamAuth>().cloned() else {
            return Err(Status::internal(
                "ExecuteCommand is served only behind the authenticator",
            ));
        };
        let mut inbound = r.into_inner();
        let first = tokio::time::timeout(START_TIMEOUT, inbound.next()).await;
        let Ok(Some(Ok(ExecuteCommandInput {
            input: Some(Input::Start(bytes)),
        }))) = first
        else {
            return Err(Status::invalid_argument(
                "an ExecuteCommand stream starts with its signed start message",
            ));
        };
        let caller = stream.verify(&bytes, ACTION)?;
        let start = ExecuteCommandStart::decode(bytes.as_slice())
            .map_err(|e| Status::invalid_argument(format!("the start message: {e}")))?;
        let mut audit = SessionAudit {
            stream,
            caller,
            start,
            session_id: None,
        };
        let (session, target) = match self.open(&mut audit).await {
            Ok(s) => s,
            Err(status) => {
                audit.refused(&status);
                return Err(status);
            }
        };
        audit.line("SessionStarted", "OK", None, None);
        let (tx, rx) = mpsc::channel(16);
        let started = ExecuteCommandSession {
            cluster_arn: target.cluster_arn,
            task_arn: target.task_arn,
            container_name: target.container_name,
            container_arn: target.container_arn,
            interactive: audit.start.interactive,
            session_id: session.id.clone(),
        };
        // Room for one message: this cannot wait.
        let _ = tx.try_send(Ok(output(Output::Started(started))));
        let span = tracing::info_span!("exec", session = %session.id);
        tokio::spawn(tracing::Instrument::instrument(
            pump(session, inbound, tx, audit),
            span,
        ));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

impl ExecApi {
    /// Finds the target, starts the process on its agent and waits until it runs.
    async fn open(&self, audit: &mut SessionAudit) -> Result<(ExecSession, ExecTarget), Status> {
        let s = &audit.start;
        let target = self
            .0
            .exec_target(&s.cluster, &s.task, s.container.as_deref())
            .await?;
        let args = split_command(&s.command).map_err(|e| EcsError::invalid(e.to_string()))?;
        let id = new_session_id();
        audit.session_id = Some(id.clone());
        let start = ExecStart {
            session_id: id,
            task_arn: target.task_arn.clone(),
            container_name: target.container_name.clone(),
            args,
            terminal: s.interactive,
            window: s.window,
        };
        let not_connected = || {
            Status::from(EcsError::TargetNotConnected(
                "The execute command failed due to an internal error. Try again later.".into(),
            ))
        };
        let mut session = self
            .0
            .fleet()
            .exec()
            .open(&target.instance_id, start)
            .await
            .map_err(|e| {
                warn!(error = %e, "ExecuteCommand: the task's agent is not connected");
                not_connected()
            })?;
        match tokio::time::timeout(STARTED_TIMEOUT, session.events.recv()).await {
            Ok(Some(ExecEvent::Started)) => Ok((session, target)),
            Ok(Some(ExecEvent::Exit { error, code })) => {
                session.finished();
                let why = error.unwrap_or_else(|| format!("it exited ({code:?}) at once"));
                Err(EcsError::client(format!(
                    "The command could not be started in container {}: {why}",
                    target.container_name
                ))
                .into())
            }
            Ok(Some(ExecEvent::Output { .. })) => Err(Status::internal(
                "the agent sent output before the process started",
            )),
            Ok(None) => Err(not_connected()),
            Err(_) => Err(Status::deadline_exceeded(format!(
                "the agent did not start the command within {} s",
                STARTED_TIMEOUT.as_secs()
            ))),
        }
    }
}

/// Carries one session until the process exits, the client goes away or the link ends. The
/// client's slowness holds back only this session's output: the agent may run ahead by its
/// window and is granted more only as output reaches the client.
async fn pump(
    mut session: ExecSession,
    mut inbound: Streaming<ExecuteCommandInput>,
    tx: mpsc::Sender<Result<ExecuteCommandOutput, Status>>,
    audit: SessionAudit,
) {
    let id = session.id.clone();
    let mut passed = 0u32;
    loop {
        tokio::select! {
            ev = session.events.recv() => match ev {
                Some(ExecEvent::Output { data, stderr }) => {
                    let o = if stderr { Output::Stderr(data) } else { Output::Stdout(data) };
                    if tx.send(Ok(output(o))).await.is_err() {
                        audit.line("SessionEnded", "OK", None, Some("the client closed the session"));
                        return;
                    }
                    passed += 1;
                    if passed >= CREDIT_BATCH {
                        let credit = ExecInput { session_id: id.clone(), credit: passed, ..Default::default() };
                        passed = 0;
                        if !session.send(ToAgent::ExecInput(credit)).await {
                            break;
                        }
                    }
                }
                Some(ExecEvent::Started) => {}
                Some(ExecEvent::Exit { code, error }) => {
                    session.finished();
                    match code {
                        Some(c) => {
                            audit.line("SessionEnded", "OK", Some(c), error.as_deref());
                            let _ = tx.send(Ok(output(Output::ExitCode(c)))).await;
                        }
                        None => {
                            let why = error.unwrap_or_else(|| "no exit status".into());
                            audit.line("SessionEnded", "OK", None, Some(&why));
                            let _ = tx.send(Err(Status::aborted(format!("the session ended: {why}")))).await;
                        }
                    }
                    return;
                }
                None => break,
            },
            m = inbound.next() => {
                let m = match m {
                    Some(Ok(ExecuteCommandInput { input: Some(i) })) => i,
                    Some(Ok(_)) => continue,
                    // The client went away: dropping the session kills the process.
                    None | Some(Err(_)) => {
                        audit.line("SessionEnded", "OK", None, Some("the client closed the session"));
                        return;
                    }
                };
                let sent = match m {
                    Input::Stdin(data) => {
                        let mut ok = true;
                        for chunk in data.chunks(EXEC_CHUNK) {
                            let input = ExecInput { session_id: id.clone(), data: chunk.to_vec(), ..Default::default() };
                            ok = ok && session.send(ToAgent::ExecInput(input)).await;
                        }
                        ok
                    }
                    Input::Resize(window) => {
                        session.send(ToAgent::ExecResize(ExecResize { session_id: id.clone(), window: Some(window) })).await
                    }
                    Input::StdinClosed(_) => {
                        session.send(ToAgent::ExecInput(ExecInput { session_id: id.clone(), eof: true, ..Default::default() })).await
                    }
                    Input::Start(_) => {
                        let _ = tx.send(Err(Status::invalid_argument("a session has one start message"))).await;
                        audit.line("SessionEnded", "OK", None, Some("a second start message"));
                        return;
                    }
                };
                if !sent {
                    break;
                }
            }
        }
    }
    // The link ended under the session (or the agent overran its window).
    let why = "the agent's link ended; the session is over";
    audit.line("SessionEnded", "OK", None, Some(why));
    let _ = tx.send(Err(Status::unavailable(why))).await;
}
