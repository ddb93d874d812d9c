//! The `Agent` gRPC service: registration and the long-lived session of each agent.
//!
//! A session sends the instance's desired tasks whenever they change (and once at start), and
//! acknowledges each state change after the service layer has stored it.

use crate::service::Controller;
use berth_proto::arn;
use berth_proto::v1::agent_message::Message as FromAgent;
use berth_proto::v1::agent_server::Agent;
use berth_proto::v1::controller_message::Message as ToAgent;
use berth_proto::v1::*;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn, Instrument};

/// Serves the agent link.
pub struct AgentApi(pub Arc<Controller>);

/// Desired-task sequence numbers rise across controller restarts without being stored: each
/// session starts from the wall clock in microseconds.
fn seq_base() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(1)
}

#[tonic::async_trait]
impl Agent for AgentApi {
    async fn register_container_instance(
        &self,
        r: Request<RegisterContainerInstanceRequest>,
    ) -> Result<Response<RegisterContainerInstanceResponse>, Status> {
        let ci = self.0.register_container_instance(r.into_inner()).await?;
        info!(instance = %ci.container_instance_arn, "container instance registered");
        Ok(Response::new(RegisterContainerInstanceResponse {
            container_instance: Some(ci),
        }))
    }

    type SessionStream = ReceiverStream<Result<ControllerMessage, Status>>;

    async fn session(
        &self,
        r: Request<Streaming<AgentMessage>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let mut inbound = r.into_inner();
        let hello = match inbound.next().await {
            Some(Ok(AgentMessage {
                message: Some(FromAgent::Hello(h)),
            })) => h,
            _ => return Err(Status::invalid_argument("a session starts with AgentHello")),
        };
        let instance_id = arn::short_id("container-instance", &hello.container_instance_arn)
            .unwrap_or_default()
            .to_string();
        if !self.0.instance_exists(&instance_id).await {
            return Err(Status::not_found(format!(
                "container instance {} is not registered; register first",
                hello.container_instance_arn
            )));
        }
        let controller = self.0.clone();
        let (tx, rx) = mpsc::channel(64);
        let span = tracing::info_span!("session", instance = %instance_id);
        tokio::spawn(
            async move {
                info!("agent connected");
                let attached = controller.fleet().attach(&instance_id);
                let mut seq = seq_base();
                let send_desired = |seq: u64| {
                    let controller = controller.clone();
                    let instance_id = instance_id.clone();
                    let tx = tx.clone();
                    async move {
                        let view = controller.desired_view(&instance_id).await;
                        tracing::debug!(seq, tasks = view.tasks.len(), "sending desired tasks");
                        let msg = ControllerMessage {
                            message: Some(ToAgent::DesiredTasks(DesiredTasks {
                                seq,
                                tasks: view.tasks,
                            })),
                        };
                        tx.send(Ok(msg)).await.is_ok()
                    }
                };
                if !send_desired(seq).await {
                    return;
                }
                loop {
                    tokio::select! {
                        _ = attached.changed.notified() => {
                            if !controller.fleet().is_current(&attached) {
                                info!("session replaced by a newer one");
                                break;
                            }
                            seq += 1;
                            if !send_desired(seq).await { break; }
                        }
                        msg = inbound.next() => match msg {
                            Some(Ok(AgentMessage { message: Some(FromAgent::TaskStateChange(c)) })) => {
                                let seq_in = c.seq;
                                tracing::debug!(task = %c.task_arn, status = %c.last_status, seq = seq_in, "state change received");
                                match controller.apply_state_change(&instance_id, c).await {
                                    Ok(changed) => {
                                        let ack = ControllerMessage { message: Some(ToAgent::StateChangeAck(seq_in)) };
                                        if tx.send(Ok(ack)).await.is_err() { break; }
                                        if changed {
                                            seq += 1;
                                            if !send_desired(seq).await { break; }
                                        }
                                    }
                                    // Not acknowledged: ending the session makes the agent
                                    // reconnect and send it again.
                                    Err(e) => { warn!(error = %e, "state change not applied; closing the session"); break; }
                                }
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => { warn!(error = %e, "session stream failed"); break; }
                            None => break,
                        }
                    }
                }
                info!("agent disconnected");
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
