//! Task networks (issue 8): the agent realises each task's network itself, with rtnetlink, nix
//! and nftables (no CNI plugins, no Docker), behind the narrow [`Network`] trait the engine uses.
//!
//! The life of a task's network, as the engine drives it:
//! 1. [`Network::allocate`] picks what must be unique on this host (addresses from the agent's
//!    slice of a bridge subnet, dynamic host ports) in memory and returns the whole
//!    [`TaskNetworkState`]. The engine writes it into the task record **before** anything is
//!    created, so after a crash the record names everything that may exist.
//! 2. [`Network::setup`] creates it: namespaces, veths, bridge ports, addresses, routes, the
//!    nftables rules for published ports, NAT and security groups. Idempotent: run again after
//!    a crash it finishes what is missing.
//! 3. Containers join `TaskNetworkState::netns_path(container)`; their /etc/hosts, /etc/hostname
//!    and /etc/resolv.conf come from [`files`].
//! 4. [`Network::set_ingress`] replaces a running awsvpc task's security-group rules.
//! 5. The moment the task is STOPPED, [`Network::teardown`] removes all of it and
//!    [`Network::release`] frees its addresses and ports (not after the cleanup wait).
//! 6. At agent start, [`Network::recover`] takes back the allocations of the records still held
//!    and removes every Berth-made namespace, link and rule that no record names (tasks that
//!    stopped, or were half set up, while the agent was down).

pub mod files;
pub mod linux;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// ECS's network modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Own namespace, loopback only.
    None,
    /// The host's namespace.
    Host,
    /// One namespace + veth per container on the agent's bridge; published ports.
    Bridge,
    /// One namespace per task on a subnet (bridge or LAN backend).
    Awsvpc,
}

impl Mode {
    /// From the task definition's networkMode ("" means bridge, ECS's default).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "" | "bridge" => Some(Mode::Bridge),
            "host" => Some(Mode::Host),
            "none" => Some(Mode::None),
            "awsvpc" => Some(Mode::Awsvpc),
            _ => None,
        }
    }

    /// The name ECS uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::None => "none",
            Mode::Host => "host",
            Mode::Bridge => "bridge",
            Mode::Awsvpc => "awsvpc",
        }
    }
}

/// tcp or udp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// The portMappings value ("tcp" when absent).
    pub fn parse(s: Option<&str>) -> Option<Self> {
        match s.unwrap_or("tcp") {
            "tcp" => Some(Protocol::Tcp),
            "udp" => Some(Protocol::Udp),
            _ => None,
        }
    }

    /// "tcp" or "udp".
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One portMapping of a container, as the definition gives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortRequest {
    /// The container.
    pub container: String,
    /// containerPort.
    pub container_port: u16,
    /// hostPort; `None` (absent or 0) takes a dynamic port in bridge mode.
    pub host_port: Option<u16>,
    /// tcp or udp.
    pub protocol: Protocol,
}

/// A security-group ingress rule as the agent enforces it (agent.proto's IngressRule, parsed).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IngressRule {
    /// tcp, udp, icmp or all.
    pub protocol: RuleProtocol,
    /// First port (inclusive); ignored for icmp and all.
    pub from_port: u16,
    /// Last port (inclusive).
    pub to_port: u16,
    /// Source address.
    pub source: Ipv4Addr,
    /// Source prefix length (0–32).
    pub prefix: u8,
}

/// The protocols a rule may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuleProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// ICMP.
    Icmp,
    /// Every protocol (EC2's -1).
    All,
}

/// What the engine asks for a task: its mode, its containers and their port mappings, and for
/// awsvpc what the controller decided (TaskAssignment.network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The task id (names are derived from it).
    pub task_id: String,
    /// The mode.
    pub mode: Mode,
    /// The containers, in definition order.
    pub containers: Vec<String>,
    /// Every portMapping of every container.
    pub ports: Vec<PortRequest>,
    /// awsvpc only.
    pub awsvpc: Option<AwsvpcPlan>,
}

/// The controller's part of an awsvpc task's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AwsvpcPlan {
    /// The subnet: a network configured on this agent ([`SubnetConfig::name`]).
    pub subnet: String,
    /// For a LAN subnet: the address the controller allocated.
    pub address: Option<Ipv4Addr>,
    /// assignPublicIp ENABLED: outbound traffic is masqueraded.
    pub assign_public_ip: bool,
    /// Security groups (for logs).
    pub security_groups: Vec<String>,
    /// The ingress allowed; everything else that is new is dropped.
    pub ingress: Vec<IngressRule>,
}

/// One network namespace the agent made, and the interface it put in it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Its name under /run/netns (`<scope>-<task id>` or `<scope>-<task id>-<n>`, the scope being the
    /// agent's bridge-mode bridge: see `linux::LinuxNetwork::scope`).
    pub name: String,
    /// The interface inside (eth0), when the mode gives one (not for none).
    pub interface: Option<Interface>,
}

/// A task or container interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The address.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default gateway.
    pub gateway: Option<Ipv4Addr>,
    /// The MAC address, once known (after setup).
    pub mac: Option<String>,
    /// The host-side link (the veth peer on the bridge, or the macvlan's parent), named so
    /// recovery can find it.
    pub host_link: Option<String>,
}

/// A published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    /// The container.
    pub container: String,
    /// containerPort.
    pub container_port: u16,
    /// hostPort (the dynamic one when the definition gave none).
    pub host_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
    /// The address it is bound on ("0.0.0.0").
    pub bind_ip: Ipv4Addr,
}

/// Everything the agent allocated and (after setup) created for a task's network; written in
/// the task record before setup, so a restarted agent can finish or remove it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskNetworkState {
    /// The task id.
    pub task_id: String,
    /// The mode.
    pub mode: Mode,
    /// Namespaces by container name; awsvpc and none have one for the whole task under the
    /// key "" (every container joins it). Empty for host.
    pub namespaces: BTreeMap<String, Namespace>,
    /// Published ports: bridge's (hostPort → containerPort) and host's (hostPort =
    /// containerPort, held so no other task of this agent takes them); reported as the
    /// containers' networkBindings.
    pub bindings: Vec<Binding>,
    /// awsvpc: the controller's part, as last applied.
    pub awsvpc: Option<AwsvpcPlan>,
    /// The bridge or subnet network the interfaces are on (its name in the agent's config).
    pub network: Option<String>,
}

impl TaskNetworkState {
    /// The namespace a container joins: its own (bridge), the task's (awsvpc, none), or `None`
    /// for the host's.
    pub fn namespace_of(&self, container: &str) -> Option<&Namespace> {
        self.namespaces
            .get(container)
            .or_else(|| self.namespaces.get(""))
    }

    /// `/run/netns/<name>` of the container's namespace, for the OCI spec.
    pub fn netns_path(&self, container: &str) -> Option<String> {
        self.namespace_of(container)
            .map(|n| format!("{NETNS_DIR}/{}", n.name))
    }
}

/// Where named namespaces are bound (as `ip netns` does).
pub const NETNS_DIR: &str = "/run/netns";

/// A subnet awsvpc tasks can be placed on, from the agent's config; reported to the controller
/// as attribute `berth.subnet.<name>` with the value [`SubnetConfig::attribute_value`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetConfig {
    /// Its name (what awsvpcConfiguration.subnets names, e.g. subnet-local).
    pub name: String,
    /// The subnet's network address.
    pub cidr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// How tasks reach it.
    pub backend: SubnetBackend,
}

/// The awsvpc backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SubnetBackend {
    /// A bridge on this host (created by the agent); the agent allocates from the whole subnet
    /// (minus the gateway, the bridge's own address), so addresses are unique per host and
    /// reachable from it.
    Bridge {
        /// The bridge's name.
        bridge: String,
    },
    /// The host's LAN: a macvlan (bridge mode) on `parent`; the controller allocates from
    /// `first..=last` cluster-wide.
    Lan {
        /// The parent interface.
        parent: String,
        /// The LAN's gateway (the task's default route), if any.
        gateway: Option<Ipv4Addr>,
        /// First address tasks may take.
        first: Ipv4Addr,
        /// Last address tasks may take.
        last: Ipv4Addr,
    },
}

impl SubnetConfig {
    /// The attribute value the agent reports: `bridge:<cidr>` or `lan:<cidr>:<first>-<last>`,
    /// which the controller reads to allocate LAN addresses.
    pub fn attribute_value(&self) -> String {
        match &self.backend {
            SubnetBackend::Bridge { .. } => format!("bridge:{}/{}", self.cidr, self.prefix),
            SubnetBackend::Lan { first, last, .. } => {
                format!("lan:{}/{}:{first}-{last}", self.cidr, self.prefix)
            }
        }
    }
}

/// The attribute name a subnet is reported under.
pub fn subnet_attribute(name: &str) -> String {
    format!("berth.subnet.{name}")
}

/// The agent's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The bridge of bridge-mode tasks (default `berth0`).
    pub bridge: String,
    /// Its subnet (default 172.31.0.0/16 — pick one the host does not use); the bridge takes
    /// the first address, containers the rest.
    pub bridge_cidr: Ipv4Addr,
    /// Its prefix length.
    pub bridge_prefix: u8,
    /// The dynamic host port range (default 49153–65535, ECS's).
    pub dynamic_ports: (u16, u16),
    /// TCP host ports never handed out as dynamic ports (the agent's `--reserved-ports`, which
    /// it also registers as its PORTS resource).
    pub reserved_tcp_ports: Vec<u16>,
    /// awsvpc subnets (default: one bridge subnet `subnet-local`, 172.30.0.0/16 on
    /// `berth-vpc0`).
    pub subnets: Vec<SubnetConfig>,
    /// The nameservers a container gets when neither the definition nor the host gives a usable
    /// one (host's /etc/resolv.conf lists only loopback resolvers).
    pub fallback_dns: Vec<Ipv4Addr>,
}

/// Why a task's network could not be made; shown as "ContainerNetworkingError: <this>".
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    /// The task names a subnet this agent does not have.
    #[error("subnet {0} is not configured on this container instance")]
    UnknownSubnet(String),
    /// Nothing left to allocate.
    #[error("{what}: none left")]
    Exhausted {
        /// What ran out ("addresses of subnet X", "dynamic host ports 49153-65535").
        what: String,
    },
    /// A static host port is already held by another task or process on this host.
    #[error("host port {port}/{protocol} is already in use on this container instance")]
    PortInUse {
        /// The port.
        port: u16,
        /// tcp or udp.
        protocol: &'static str,
    },
    /// A kernel call failed: names the step and the object.
    #[error("{step} {object}: {source}")]
    Kernel {
        /// What was being done ("creating veth", "moving link into namespace").
        step: &'static str,
        /// On what.
        object: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// nft failed or timed out: its message.
    #[error("nft ({what}): {message}")]
    Nft {
        /// Which rule set.
        what: String,
        /// nft's stderr, or the timeout.
        message: String,
    },
    /// The task definition or plan is not something this mode can do.
    #[error("{0}")]
    Invalid(String),
    /// A network operation did not finish in time (the engine's bound on every call).
    #[error("{step} did not finish within {after:?}")]
    Timeout {
        /// What was being done ("setting up the task's network").
        step: &'static str,
        /// How long it was given.
        after: std::time::Duration,
    },
}

/// What the agent needs of the host's networking. The Linux implementation lives in
/// [`linux`]; unit tests use a fake.
#[async_trait]
pub trait Network: Send + Sync + 'static {
    /// The subnets this agent offers (reported as attributes at registration).
    fn subnets(&self) -> Vec<SubnetConfig>;
    /// Allocates addresses and dynamic ports for `plan` (in memory; nothing is created). Static
    /// host ports held by another task of this agent are refused with
    /// [`NetworkError::PortInUse`]; dynamic ports are never handed out twice while held.
    fn allocate(&self, plan: &NetworkPlan) -> Result<TaskNetworkState, NetworkError>;
    /// Frees what [`Network::allocate`] or [`Network::recover`] holds for the task.
    fn release(&self, state: &TaskNetworkState);
    /// Creates the network (idempotent).
    async fn setup(&self, state: &mut TaskNetworkState) -> Result<(), NetworkError>;
    /// Replaces a running awsvpc task's ingress rules.
    async fn set_ingress(
        &self,
        state: &TaskNetworkState,
        rules: &[IngressRule],
    ) -> Result<(), NetworkError>;
    /// Removes everything of the task's network (idempotent; what is already gone is fine).
    async fn teardown(&self, state: &TaskNetworkState) -> Result<(), NetworkError>;
    /// At agent start: holds the allocations of `held` again and removes every Berth-made
    /// namespace, link and rule that none of them names. Returns what it removed (for logs and
    /// tests).
    async fn recover(&self, held: &[TaskNetworkState]) -> Result<Vec<String>, NetworkError>;
}
