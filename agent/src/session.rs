//! The link to the controller: register, then hold one bidirectional stream. Reconnects with
//! ECS's back-off (250 ms growing ×1.5 to 2 min, with jitter) and never gives up.

use crate::cgroups::Cgroups;
use crate::engine::{reporter::Reporter, Engine};
use crate::runtime::Runtime;
use berth_proto::v1::agent_client::AgentClient;
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::controller_message::Message as FromController;
use berth_proto::v1::*;
use rand::Rng;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tracing::{info, warn};

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
}

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

    /// Back to the shortest delay after a good connection.
    pub fn reset(&mut self) {
        self.next = Self::MIN;
    }
}

/// Runs the link forever.
pub async fn run<R: Runtime, C: Cgroups>(
    reg: Registration,
    engine: Engine<R, C>,
    reporter: Arc<Reporter>,
) {
    let mut backoff = Backoff::default();
    loop {
        match once(&reg, &engine, &reporter, &mut backoff).await {
            Ok(()) => info!("controller closed the session"),
            Err(e) => warn!(controller = %reg.controller, error = %e, "controller link down"),
        }
        let delay = backoff.next_delay();
        info!(delay_ms = delay.as_millis() as u64, "reconnecting");
        tokio::time::sleep(delay).await;
    }
}

async fn once<R: Runtime, C: Cgroups>(
    reg: &Registration,
    engine: &Engine<R, C>,
    reporter: &Arc<Reporter>,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let channel = tonic::transport::Endpoint::from_shared(reg.controller.clone())
        .map_err(|e| format!("bad controller URL: {e}"))?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut client = AgentClient::new(channel);
    let ci = client
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: reg.cluster.clone(),
            container_instance_arn: reporter.identity(&reg.cluster),
            total_resources: reg.resources.clone(),
            attributes: reg.attributes.clone(),
            version_info: Some(reg.version_info.clone()),
            hostname: nix::unistd::gethostname()
                .ok()
                .and_then(|h| h.into_string().ok()),
        })
        .await
        .map_err(|s| format!("register: {}", s.message()))?
        .into_inner()
        .container_instance
        .unwrap_or_default();
    let arn = ci.container_instance_arn.clone();
    reporter
        .set_identity(&arn, &reg.cluster)
        .map_err(|e| format!("persisting identity: {e}"))?;
    info!(instance = %arn, cluster = %reg.cluster, "registered");

    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let send = |m: ToController| AgentMessage { message: Some(m) };
    tx.send(send(ToController::Hello(AgentHello {
        container_instance_arn: arn.clone(),
        cluster: reg.cluster.clone(),
        protocol_version: berth_proto::link::PROTOCOL_VERSION,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        state_epoch: String::new(),
    })))
    .await
    .map_err(|_| "session closed".to_string())?;
    let mut inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| format!("session: {}", s.message()))?
        .into_inner();
    backoff.reset();
    let mut latest = reporter.subscribe();
    // Everything not yet acknowledged goes again: the controller applies each seq once.
    let mut sent = 0u64;
    let mut last_desired = 0u64;
    loop {
        for change in reporter.pending_after(sent) {
            sent = change.seq;
            tx.send(send(ToController::TaskStateChange(change)))
                .await
                .map_err(|_| "session closed".to_string())?;
        }
        tokio::select! {
            changed = latest.changed() => {
                if changed.is_err() { return Err("reporter gone".into()); }
            }
            msg = inbound.next() => match msg {
                Some(Ok(ControllerMessage { message: Some(FromController::DesiredTasks(d)) })) => {
                    // Within a session sequence numbers rise; an older one is stale.
                    if d.seq > last_desired || last_desired == 0 {
                        last_desired = d.seq;
                        engine.apply_desired(&d);
                    }
                    tx.send(send(ToController::DesiredTasksAck(d.seq))).await.map_err(|_| "session closed".to_string())?;
                }
                Some(Ok(ControllerMessage { message: Some(FromController::StateChangeAck(seq)) })) => {
                    reporter.ack(seq).map_err(|e| format!("persisting ack: {e}"))?;
                }
                Some(Ok(_)) => {}
                Some(Err(s)) => return Err(format!("session: {}", s.message())),
                None => return Ok(()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
