//! The JSON shapes of ECS's task metadata endpoint v4 (field names as ECS's agent writes them,
//! agent/handlers/v4 and the "Task metadata endpoint version 4" page), built from a task
//! record.

use crate::network::Mode;
use crate::state::TaskRecord;
use berth_proto::v1::{ContainerDefinition, ContainerStateChange};
use serde::Serialize;
use std::collections::BTreeMap;

/// `Limits`: task level in vCPUs and MiB; container level in cpu units and MiB.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Limits {
    /// CPU.
    #[serde(rename = "CPU", skip_serializing_if = "Option::is_none")]
    pub cpu: Option<f64>,
    /// Memory, MiB.
    #[serde(rename = "Memory", skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
}

/// One entry of `Networks`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Network {
    /// awsvpc, bridge, host or none.
    #[serde(rename = "NetworkMode")]
    pub network_mode: String,
    /// The container's addresses.
    #[serde(rename = "IPv4Addresses", skip_serializing_if = "Vec::is_empty")]
    pub ipv4_addresses: Vec<String>,
    /// awsvpc: the attachment's index (0).
    #[serde(rename = "AttachmentIndex", skip_serializing_if = "Option::is_none")]
    pub attachment_index: Option<u32>,
    /// awsvpc: the interface's MAC.
    #[serde(rename = "MACAddress", skip_serializing_if = "Option::is_none")]
    pub mac_address: Option<String>,
    /// awsvpc: the subnet.
    #[serde(
        rename = "IPv4SubnetCIDRBlock",
        skip_serializing_if = "Option::is_none"
    )]
    pub ipv4_subnet_cidr_block: Option<String>,
    /// awsvpc: the gateway, `a.b.c.d/n` as ECS writes it.
    #[serde(
        rename = "SubnetGatewayIpv4Address",
        skip_serializing_if = "Option::is_none"
    )]
    pub subnet_gateway_ipv4_address: Option<String>,
}

/// One entry of `Ports` (published ports).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Port {
    /// containerPort.
    #[serde(rename = "ContainerPort")]
    pub container_port: u16,
    /// tcp or udp.
    #[serde(rename = "Protocol")]
    pub protocol: String,
    /// hostPort.
    #[serde(rename = "HostPort")]
    pub host_port: u16,
    /// The address bound.
    #[serde(rename = "HostIp")]
    pub host_ip: String,
}

/// `Health` (lower-case keys, as ECS writes them).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// HEALTHY, UNHEALTHY or UNKNOWN.
    pub status: String,
    /// When the status last changed (ECS).
    #[serde(rename = "statusSince", skip_serializing_if = "Option::is_none")]
    pub status_since: Option<String>,
    /// The last check's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A container's metadata (`${ECS_CONTAINER_METADATA_URI_V4}` and `/task`'s `Containers`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Container {
    /// The runtime's id.
    #[serde(rename = "DockerId")]
    pub docker_id: String,
    /// The name in the task definition.
    #[serde(rename = "Name")]
    pub name: String,
    /// The runtime's name.
    #[serde(rename = "DockerName")]
    pub docker_name: String,
    /// The image reference.
    #[serde(rename = "Image")]
    pub image: String,
    /// The image's digest.
    #[serde(rename = "ImageID")]
    pub image_id: String,
    /// Published ports.
    #[serde(rename = "Ports", skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<Port>,
    /// The container's labels.
    #[serde(rename = "Labels", skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The task's desired status.
    #[serde(rename = "DesiredStatus")]
    pub desired_status: String,
    /// The container's known status.
    #[serde(rename = "KnownStatus")]
    pub known_status: String,
    /// Its exit code, once exited.
    #[serde(rename = "ExitCode", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Its cpu units and memory.
    #[serde(rename = "Limits")]
    pub limits: Limits,
    /// When it was created (not kept by Berth: absent).
    #[serde(rename = "CreatedAt", skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// When its process started.
    #[serde(rename = "StartedAt", skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// When it exited.
    #[serde(rename = "FinishedAt", skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// NORMAL.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The log driver.
    #[serde(rename = "LogDriver", skip_serializing_if = "Option::is_none")]
    pub log_driver: Option<String>,
    /// Its options.
    #[serde(rename = "LogOptions", skip_serializing_if = "Option::is_none")]
    pub log_options: Option<BTreeMap<String, String>>,
    /// The container's ARN.
    #[serde(rename = "ContainerARN", skip_serializing_if = "String::is_empty")]
    pub container_arn: String,
    /// Its networks.
    #[serde(rename = "Networks", skip_serializing_if = "Vec::is_empty")]
    pub networks: Vec<Network>,
    /// Its health (with a healthCheck).
    #[serde(rename = "Health", skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Restarts (with a restartPolicy).
    #[serde(rename = "RestartCount", skip_serializing_if = "Option::is_none")]
    pub restart_count: Option<u32>,
}

/// The task's metadata (`/task`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Task {
    /// The cluster's short name.
    #[serde(rename = "Cluster")]
    pub cluster: String,
    /// The task's ARN.
    #[serde(rename = "TaskARN")]
    pub task_arn: String,
    /// Its family.
    #[serde(rename = "Family")]
    pub family: String,
    /// Its revision, a string as ECS writes it.
    #[serde(rename = "Revision")]
    pub revision: String,
    /// Desired status.
    #[serde(rename = "DesiredStatus")]
    pub desired_status: String,
    /// Known status.
    #[serde(rename = "KnownStatus")]
    pub known_status: String,
    /// Task-level limits; absent when the definition sets none.
    #[serde(rename = "Limits", skip_serializing_if = "Option::is_none")]
    pub limits: Option<Limits>,
    /// When the first image lookup began.
    #[serde(rename = "PullStartedAt", skip_serializing_if = "Option::is_none")]
    pub pull_started_at: Option<String>,
    /// When the last one ended.
    #[serde(rename = "PullStoppedAt", skip_serializing_if = "Option::is_none")]
    pub pull_stopped_at: Option<String>,
    /// When the task's execution stopped.
    #[serde(rename = "ExecutionStoppedAt", skip_serializing_if = "Option::is_none")]
    pub execution_stopped_at: Option<String>,
    /// The instance's availability zone, when configured.
    #[serde(rename = "AvailabilityZone", skip_serializing_if = "Option::is_none")]
    pub availability_zone: Option<String>,
    /// EC2 (or EXTERNAL).
    #[serde(rename = "LaunchType")]
    pub launch_type: String,
    /// The containers.
    #[serde(rename = "Containers")]
    pub containers: Vec<Container>,
}

fn rfc3339(t: &Option<pbjson_types::Timestamp>) -> Option<String> {
    let t = t.as_ref()?;
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()?
        .format(&time::format_description::well_known::Rfc3339)
        .ok()
}

fn mode_of(rec: &TaskRecord) -> Option<Mode> {
    Mode::parse(&rec.definition.network_mode)
}

fn networks(rec: &TaskRecord, name: &str) -> Vec<Network> {
    let Some(mode) = mode_of(rec) else {
        return Vec::new();
    };
    let mut n = Network {
        network_mode: mode.as_str().into(),
        ..Default::default()
    };
    let net = rec.network.as_ref();
    if let Some(i) = net
        .and_then(|n| n.namespace_of(name))
        .and_then(|ns| ns.interface.as_ref())
    {
        n.ipv4_addresses = vec![i.address.to_string()];
        if mode == Mode::Awsvpc {
            let mask = u32::MAX.checked_shl(32 - u32::from(i.prefix)).unwrap_or(0);
            let cidr = std::net::Ipv4Addr::from(u32::from(i.address) & mask);
            n.attachment_index = Some(0);
            n.mac_address = i.mac.clone();
            n.ipv4_subnet_cidr_block = Some(format!("{cidr}/{}", i.prefix));
            n.subnet_gateway_ipv4_address = i.gateway.map(|g| format!("{g}/{}", i.prefix));
        }
    }
    vec![n]
}

fn labels(
    rec: &TaskRecord,
    cluster: &str,
    d: Option<&ContainerDefinition>,
    name: &str,
) -> BTreeMap<String, String> {
    let mut l: BTreeMap<String, String> = d
        .map(|d| {
            d.docker_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        })
        .unwrap_or_default();
    l.insert(crate::runtime::CLUSTER_LABEL.into(), cluster.into());
    l.insert(
        crate::runtime::TASK_ARN_LABEL.into(),
        rec.task.task_arn.clone(),
    );
    l.insert(crate::runtime::CONTAINER_NAME_LABEL.into(), name.into());
    l.insert(
        crate::runtime::FAMILY_LABEL.into(),
        rec.definition.family.clone(),
    );
    l.insert(
        crate::runtime::REVISION_LABEL.into(),
        rec.definition.revision.to_string(),
    );
    l
}

/// A container's metadata from the task record.
pub fn container(rec: &TaskRecord, cluster: &str, c: &ContainerStateChange) -> Container {
    let d = rec
        .definition
        .container_definitions
        .iter()
        .find(|d| d.name == c.name);
    let runtime_id = c.runtime_id.clone().unwrap_or_default();
    let ports = rec
        .network
        .as_ref()
        .map(|n| {
            n.bindings
                .iter()
                .filter(|b| b.container == c.name)
                .map(|b| Port {
                    container_port: b.container_port,
                    protocol: b.protocol.as_str().into(),
                    host_port: b.host_port,
                    host_ip: b.bind_ip.to_string(),
                })
                .collect()
        })
        .unwrap_or_default();
    let restart_enabled = d
        .and_then(|d| d.restart_policy.as_ref())
        .is_some_and(|p| p.enabled);
    Container {
        docker_id: runtime_id.clone(),
        name: c.name.clone(),
        docker_name: runtime_id,
        image: d
            .map(|d| d.image.clone())
            .or_else(|| c.image.clone())
            .unwrap_or_default(),
        image_id: c.image_digest.clone().unwrap_or_default(),
        ports,
        labels: labels(rec, cluster, d, &c.name),
        desired_status: rec.desired_status.clone(),
        known_status: c.last_status.clone(),
        exit_code: c.exit_code,
        limits: Limits {
            cpu: Some(d.and_then(|d| d.cpu).unwrap_or(0) as f64),
            memory: Some(d.and_then(|d| d.memory).map(i64::from).unwrap_or(0)),
        },
        created_at: None,
        started_at: rfc3339(&c.started_at),
        finished_at: rfc3339(&c.finished_at),
        kind: "NORMAL".into(),
        log_driver: d
            .and_then(|d| d.log_configuration.as_ref())
            .map(|l| l.log_driver.clone()),
        log_options: d.and_then(|d| d.log_configuration.as_ref()).map(|l| {
            l.options
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        }),
        container_arn: rec
            .task
            .containers
            .iter()
            .find(|x| x.name == c.name)
            .map(|x| x.container_arn.clone())
            .unwrap_or_default(),
        networks: networks(rec, &c.name),
        health: c.health_status.clone().map(|status| Health {
            status,
            status_since: rfc3339(&c.health_checked_at),
            output: c.health_output.clone(),
        }),
        restart_count: restart_enabled.then_some(c.restart_count),
    }
}

/// The task's metadata, with every container.
pub fn task(rec: &TaskRecord, cluster: &str, availability_zone: Option<&str>) -> Task {
    let def = &rec.definition;
    let cpu = def
        .cpu
        .as_deref()
        .and_then(|c| c.trim().parse::<f64>().ok())
        .map(|units| units / 1024.0);
    let memory = def.memory.as_deref().and_then(|m| m.trim().parse().ok());
    Task {
        cluster: berth_proto::arn::short_id("cluster", cluster)
            .unwrap_or(cluster)
            .to_string(),
        task_arn: rec.task.task_arn.clone(),
        family: def.family.clone(),
        revision: def.revision.to_string(),
        desired_status: rec.desired_status.clone(),
        known_status: rec.state.last_status.clone(),
        limits: (cpu.is_some() || memory.is_some()).then_some(Limits { cpu, memory }),
        pull_started_at: rfc3339(&rec.state.pull_started_at),
        pull_stopped_at: rfc3339(&rec.state.pull_stopped_at),
        execution_stopped_at: rfc3339(&rec.state.execution_stopped_at),
        availability_zone: availability_zone.map(str::to_string),
        launch_type: if rec.task.launch_type.is_empty() {
            "EC2".into()
        } else {
            rec.task.launch_type.clone()
        },
        containers: rec
            .state
            .containers
            .iter()
            .map(|c| container(rec, cluster, c))
            .collect(),
    }
}
