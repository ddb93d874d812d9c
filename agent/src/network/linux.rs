//! The Linux implementation of [`Network`]: rtnetlink (links, addresses, routes), nix (named
//! network namespaces) and the `nft` binary (port publishing, NAT, security groups).
//!
//! Netlink sockets belong to the namespace they were made in, so every netlink conversation runs
//! on a fresh thread that has setns'd into the namespace it configures, with its own
//! current-thread runtime ([`netlink`]). nft runs as a child process; inside a task namespace
//! the child setns'es there before exec.

use super::*;
use futures::TryStreamExt;
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkMessage, MacVlanMode,
};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMacVlan, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::io;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tracing::Instrument;

/// How long one nft run may take.
const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one netlink conversation or namespace creation may take.
const THREAD_TIMEOUT: Duration = Duration::from_secs(30);
// The host's NAT table (family ip) is named after the agent's bridge-mode bridge (`berth0` by
// default), and so are its namespaces (`<bridge>-<task id>`): that bridge name is the agent's
// scope on the host. Two agents on one host (the test suite runs many side by side) never share
// a table or a namespace prefix, and `recover` removes only what is in its own scope.
/// The security-group table inside an awsvpc task's namespace (family inet).
pub const SG_TABLE: &str = "berth_sg";
/// Prefix of host-side veth names.
pub const VETH_PREFIX: &str = "bv";
/// Prefix of a veth peer / macvlan before it is moved and renamed eth0.
const TEMP_PREFIXES: [&str; 2] = ["bp", "bm"];
/// Comment on the jump rules of a task's chains: this plus the task id.
const TASK_COMMENT: &str = "berth-task ";

/// Task networks on this host's kernel.
pub struct LinuxNetwork {
    config: NetworkConfig,
    ipam: Mutex<Ipam>,
    /// Bridges made (or found) by this process.
    bridges: tokio::sync::Mutex<BTreeSet<String>>,
    /// Serialises changes to the host table, and knows which jump rules (chain, comment) it
    /// has (listed once, then kept up to date: this process owns the table), so a setup costs
    /// one nft run, not a listing too.
    nft_host: tokio::sync::Mutex<Option<HashSet<(String, String)>>>,
    /// The host table and its base chains exist.
    host_table_ready: AtomicBool,
}

/// In-memory allocations: who holds what.
#[derive(Default)]
struct Ipam {
    /// Per network (bridge-mode bridge or subnet name): address → task id.
    addresses: HashMap<String, HashMap<Ipv4Addr, String>>,
    /// Next-fit cursor per network.
    next_address: HashMap<String, u32>,
    /// Host ports → task id.
    ports: HashMap<(Protocol, u16), String>,
    /// Next-fit cursor of the dynamic range.
    next_port: Option<u16>,
}

/// A network tasks' interfaces can be on.
#[derive(Debug, Clone)]
enum NetDef {
    /// A bridge on this host.
    Bridge {
        bridge: String,
        cidr: Ipv4Addr,
        prefix: u8,
    },
    /// A macvlan on the host's LAN.
    Lan {
        parent: String,
        cidr: Ipv4Addr,
        prefix: u8,
        gateway: Option<Ipv4Addr>,
        first: Ipv4Addr,
        last: Ipv4Addr,
    },
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// The first host of a subnet (the bridge's address, the gateway).
pub fn first_host(cidr: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(cidr) & mask(prefix)).wrapping_add(1))
}

fn in_subnet(addr: Ipv4Addr, cidr: Ipv4Addr, prefix: u8) -> bool {
    u32::from(addr) & mask(prefix) == u32::from(cidr) & mask(prefix)
}

/// `bv` + 12 hex chars of a hash of (task id, container index): the host-side veth.
pub fn veth_name(task_id: &str, index: usize) -> String {
    format!("{VETH_PREFIX}{}", short_hash(task_id, index))
}

fn temp_name(prefix: &str, task_id: &str, index: usize) -> String {
    format!("{prefix}{}", short_hash(task_id, index))
}

/// The prefix of the namespaces of the agent whose bridge-mode bridge is `scope`.
pub fn netns_prefix(scope: &str) -> String {
    format!("{scope}-")
}

fn short_hash(task_id: &str, index: usize) -> String {
    let mut h = Sha256::new();
    h.update(task_id.as_bytes());
    h.update([0]);
    h.update(index.to_string().as_bytes());
    hex::encode(h.finalize())[..12].to_string()
}

/// The namespace name of a task (awsvpc, none).
pub fn task_netns(scope: &str, task_id: &str) -> String {
    format!("{scope}-{task_id}")
}

/// The namespace name of a bridge-mode container.
pub fn container_netns(scope: &str, task_id: &str, index: usize) -> String {
    format!("{scope}-{task_id}-{index}")
}

fn netns_path(name: &str) -> String {
    format!("{NETNS_DIR}/{name}")
}

fn kernel(step: &'static str, object: impl Into<String>, source: io::Error) -> NetworkError {
    NetworkError::Kernel {
        step,
        object: object.into(),
        source,
    }
}

fn nl_io(e: &rtnetlink::Error) -> io::Error {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.to_io(),
        other => io::Error::other(other.to_string()),
    }
}

fn nl_errno(e: &rtnetlink::Error) -> Option<Errno> {
    match e {
        rtnetlink::Error::NetlinkError(m) => Some(Errno::from_raw(m.raw_code().abs())),
        _ => None,
    }
}

fn nl<'a>(
    step: &'static str,
    object: &'a str,
) -> impl FnOnce(rtnetlink::Error) -> NetworkError + 'a {
    move |e| kernel(step, object, nl_io(&e))
}

/// Whether a test bind of `port` on 0.0.0.0 succeeds (nothing on the host has it).
fn host_port_free(protocol: Protocol, port: u16) -> bool {
    match protocol {
        Protocol::Tcp => TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
        Protocol::Udp => UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok(),
    }
}

impl LinuxNetwork {
    /// The agent's scope on the host: its bridge-mode bridge's name, which names its nftables
    /// table and prefixes its namespaces.
    pub fn scope(&self) -> &str {
        &self.config.bridge
    }

    /// The bridges this agent makes: the bridge-mode one and those of its bridge subnets.
    fn own_bridges(&self) -> Vec<String> {
        std::iter::once(self.config.bridge.clone())
            .chain(self.config.subnets.iter().filter_map(|s| match &s.backend {
                SubnetBackend::Bridge { bridge } => Some(bridge.clone()),
                SubnetBackend::Lan { .. } => None,
            }))
            .collect()
    }

    /// Takes the agent's settings; creates nothing until a task needs it.
    pub fn new(config: NetworkConfig) -> Result<Self, NetworkError> {
        if config.dynamic_ports.0 == 0 || config.dynamic_ports.0 > config.dynamic_ports.1 {
            return Err(NetworkError::Invalid(format!(
                "dynamic host port range {}-{} is empty",
                config.dynamic_ports.0, config.dynamic_ports.1
            )));
        }
        if config.bridge_prefix > 30 {
            return Err(NetworkError::Invalid(format!(
                "bridge subnet {}/{} is too small",
                config.bridge_cidr, config.bridge_prefix
            )));
        }
        Ok(Self {
            config,
            ipam: Mutex::new(Ipam::default()),
            bridges: tokio::sync::Mutex::new(BTreeSet::new()),
            nft_host: tokio::sync::Mutex::new(None),
            host_table_ready: AtomicBool::new(false),
        })
    }

    /// The settings.
    pub fn config(&self) -> &NetworkConfig {
        &self.config
    }

    fn ipam(&self) -> std::sync::MutexGuard<'_, Ipam> {
        // A panic while holding the lock leaves consistent maps (each change is one insert).
        self.ipam.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The network named `name` (the bridge-mode bridge for bridge mode, else a subnet).
    fn net(&self, mode: Mode, name: &str) -> Option<NetDef> {
        if mode == Mode::Bridge {
            return (name == self.config.bridge).then(|| NetDef::Bridge {
                bridge: self.config.bridge.clone(),
                cidr: self.config.bridge_cidr,
                prefix: self.config.bridge_prefix,
            });
        }
        let s = self.config.subnets.iter().find(|s| s.name == name)?;
        Some(match &s.backend {
            SubnetBackend::Bridge { bridge } => NetDef::Bridge {
                bridge: bridge.clone(),
                cidr: s.cidr,
                prefix: s.prefix,
            },
            SubnetBackend::Lan {
                parent,
                gateway,
                first,
                last,
            } => NetDef::Lan {
                parent: parent.clone(),
                cidr: s.cidr,
                prefix: s.prefix,
                gateway: *gateway,
                first: *first,
                last: *last,
            },
        })
    }

    /// How many allocations are held (addresses, ports): for tests and logs.
    pub fn held_counts(&self) -> (usize, usize) {
        let ipam = self.ipam();
        (
            ipam.addresses.values().map(HashMap::len).sum(),
            ipam.ports.len(),
        )
    }

    /// Creates the bridge of `net` if it is missing (idempotent): address = first host, up,
    /// ip_forward and route_localnet; for the bridge-mode bridge also its masquerade rules
    /// (the subnet going out, 127.0.0.1 sources coming in, and hairpin: a container reaching a
    /// published port of a container on the same bridge through a host address).
    async fn ensure_bridge(
        &self,
        bridge: &str,
        cidr: Ipv4Addr,
        prefix: u8,
    ) -> Result<(), NetworkError> {
        let table = self.scope();
        let mut ready = self.bridges.lock().await;
        if ready.contains(bridge) {
            return Ok(());
        }
        let gw = first_host(cidr, prefix);
        let name = bridge.to_string();
        netlink(None, move |h| {
            Box::pin(async move {
                let idx = match link_by_name(&h, &name).await? {
                    Some(l) => l.header.index,
                    None => {
                        if let Err(e) = h.link().add(LinkBridge::new(&name).build()).execute().await
                        {
                            if nl_errno(&e) != Some(Errno::EEXIST) {
                                return Err(nl("creating bridge", &name)(e));
                            }
                        }
                        link_by_name(&h, &name)
                            .await?
                            .ok_or_else(|| {
                                kernel(
                                    "creating bridge",
                                    &name,
                                    io::Error::other("not found after creation"),
                                )
                            })?
                            .header
                            .index
                    }
                };
                add_address(&h, idx, gw, prefix, &name).await?;
                set_up(&h, idx, &name).await
            })
        })
        .await?;
        write_sysctl("/proc/sys/net/ipv4/ip_forward", "1")?;
        write_sysctl(
            &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
            "1",
        )?;
        if bridge == self.config.bridge {
            nft_name("bridge", bridge)?;
            self.ensure_host_table().await?;
            let chain = format!("b-{bridge}");
            let script = format!(
                "add chain ip {table} {chain}\n\
                 flush chain ip {table} {chain}\n\
                 add rule ip {table} {chain} ip saddr {cidr}/{prefix} oifname != \"{bridge}\" masquerade\n\
                 add rule ip {table} {chain} ip saddr 127.0.0.0/8 oifname \"{bridge}\" masquerade\n\
                 add rule ip {table} {chain} ip saddr {cidr}/{prefix} oifname \"{bridge}\" ct status dnat masquerade\n"
            );
            let mut known = self.nft_host.lock().await;
            let comment = format!("berth-bridge {bridge}");
            let script = script
                + &missing_jump(
                    table,
                    known_jumps(table, &mut known).await?,
                    "postrouting",
                    &chain,
                    &comment,
                    "",
                );
            nft_script(None, &format!("bridge {bridge}"), &script).await?;
            known_jumps(table, &mut known)
                .await?
                .insert(("postrouting".into(), comment));
        }
        ready.insert(bridge.to_string());
        Ok(())
    }

    /// The host table and its base chains (idempotent; done once per process).
    async fn ensure_host_table(&self) -> Result<(), NetworkError> {
        let table = self.scope();
        let mut known = self.nft_host.lock().await;
        if self.host_table_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let script = format!(
            "add table ip {table}\n\
             add chain ip {table} prerouting {{ type nat hook prerouting priority dstnat; }}\n\
             add chain ip {table} output {{ type nat hook output priority -100; }}\n\
             add chain ip {table} postrouting {{ type nat hook postrouting priority srcnat; }}\n\
             add chain ip {table} ports\n"
        );
        nft_script(None, "host table", &script).await?;
        let rules = known_jumps(table, &mut known).await?;
        let mut jumps = String::new();
        for base in ["prerouting", "output"] {
            jumps.push_str(&missing_jump(
                table,
                rules,
                base,
                "ports",
                "berth-ports",
                "fib daddr type local ",
            ));
        }
        if !jumps.is_empty() {
            nft_script(None, "host table", &jumps).await?;
        }
        for base in ["prerouting", "output"] {
            rules.insert((base.into(), "berth-ports".into()));
        }
        self.host_table_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// The task's host chains: `t-<id>` (port DNAT, jumped from `ports`) and `m-<id>`
    /// (masquerade, jumped from `postrouting`).
    async fn setup_host_rules(&self, state: &TaskNetworkState) -> Result<(), NetworkError> {
        let table = self.scope();
        let id = &state.task_id;
        nft_name("task id", id)?;
        let mut dnat = Vec::new();
        if state.mode == Mode::Bridge {
            for b in &state.bindings {
                let addr = state
                    .namespaces
                    .get(&b.container)
                    .and_then(|n| n.interface.as_ref())
                    .map(|i| i.address)
                    .ok_or_else(|| {
                        NetworkError::Invalid(format!(
                            "port mapping of unknown container {}",
                            b.container
                        ))
                    })?;
                dnat.push(format!(
                    "{} dport {} dnat to {addr}:{}",
                    b.protocol.as_str(),
                    b.host_port,
                    b.container_port
                ));
            }
        }
        let mut masq = Vec::new();
        if let (Mode::Awsvpc, Some(plan), Some(net)) = (state.mode, &state.awsvpc, &state.network) {
            if plan.assign_public_ip {
                if let Some(NetDef::Bridge { bridge, .. }) = self.net(Mode::Awsvpc, net) {
                    if let Some(i) = state.namespaces.get("").and_then(|n| n.interface.as_ref()) {
                        masq.push(format!(
                            "ip saddr {} oifname != \"{bridge}\" masquerade",
                            i.address
                        ));
                    }
                }
            }
        }
        if dnat.is_empty() && masq.is_empty() {
            return Ok(());
        }
        self.ensure_host_table().await?;
        let mut known = self.nft_host.lock().await;
        let existing = known_jumps(table, &mut known).await?;
        let comment = format!("{TASK_COMMENT}{id}");
        // One atomic script: chains (re)filled, missing jumps added.
        let mut script = String::new();
        let mut added = Vec::new();
        for (chain, base, rules) in [
            (format!("t-{id}"), "ports", dnat),
            (format!("m-{id}"), "postrouting", masq),
        ] {
            if rules.is_empty() {
                continue;
            }
            script.push_str(&format!(
                "add chain ip {table} {chain}\nflush chain ip {table} {chain}\n"
            ));
            for r in rules {
                script.push_str(&format!("add rule ip {table} {chain} {r}\n"));
            }
            script.push_str(&missing_jump(table, existing, base, &chain, &comment, ""));
            added.push((base.to_string(), comment.clone()));
        }
        nft_script(None, &format!("task {id}"), &script).await?;
        existing.extend(added);
        Ok(())
    }

    /// Removes the host chains and jump rules of the tasks `remove` says to remove; returns
    /// what it removed.
    async fn remove_host_rules(
        &self,
        remove: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, NetworkError> {
        let table = self.scope();
        let mut known = self.nft_host.lock().await;
        let (rules, chains) = match list_host_table(table).await? {
            Some(t) => t,
            None => {
                *known = Some(HashSet::new());
                self.host_table_ready.store(false, Ordering::Release);
                return Ok(Vec::new());
            }
        };
        let mut script = String::new();
        let mut removed = Vec::new();
        let mut left = HashSet::new();
        for r in &rules {
            let doomed = r
                .comment
                .as_deref()
                .and_then(|c| c.strip_prefix(TASK_COMMENT))
                .is_some_and(&remove);
            if let (false, Some(c)) = (doomed, &r.comment) {
                left.insert((r.chain.clone(), c.clone()));
            }
            if let Some(id) = r
                .comment
                .as_deref()
                .and_then(|c| c.strip_prefix(TASK_COMMENT))
            {
                if remove(id) {
                    script.push_str(&format!(
                        "delete rule ip {table} {} handle {}\n",
                        r.chain, r.handle
                    ));
                    removed.push(format!(
                        "nft rule {} ({})",
                        r.handle,
                        r.comment.as_deref().unwrap_or("")
                    ));
                }
            }
        }
        for c in &chains {
            let id = c.strip_prefix("t-").or_else(|| c.strip_prefix("m-"));
            if let Some(id) = id {
                if remove(id) {
                    script.push_str(&format!("delete chain ip {table} {c}\n"));
                    removed.push(format!("nft chain {c}"));
                }
            }
        }
        if !script.is_empty() {
            nft_script(None, "removing task rules", &script).await?;
        }
        *known = Some(left);
        Ok(removed)
    }

    async fn setup_namespace(
        &self,
        state: &TaskNetworkState,
        index: usize,
        ns: &mut Namespace,
    ) -> Result<(), NetworkError> {
        create_netns(&ns.name).await?;
        let Some(iface) = ns.interface.as_mut() else {
            return set_lo_up(&ns.name).await;
        };
        let net_name = state.network.clone().ok_or_else(|| {
            NetworkError::Invalid(format!("task {} has no network", state.task_id))
        })?;
        let net = self
            .net(state.mode, &net_name)
            .ok_or_else(|| NetworkError::UnknownSubnet(net_name.clone()))?;
        let mac = match net {
            NetDef::Bridge {
                bridge,
                cidr,
                prefix,
            } => {
                self.ensure_bridge(&bridge, cidr, prefix).await?;
                let host = veth_name(&state.task_id, index);
                let temp = temp_name(TEMP_PREFIXES[0], &state.task_id, index);
                attach_veth(&ns.name, &host, &temp, &bridge).await?;
                iface.host_link = Some(host);
                configure_eth0(&ns.name, &temp, iface.address, iface.prefix, iface.gateway).await?
            }
            NetDef::Lan { parent, .. } => {
                let temp = temp_name(TEMP_PREFIXES[1], &state.task_id, index);
                attach_macvlan(&ns.name, &temp, &parent).await?;
                iface.host_link = Some(parent);
                configure_eth0(&ns.name, &temp, iface.address, iface.prefix, iface.gateway).await?
            }
        };
        iface.mac = Some(mac);
        Ok(())
    }

    async fn setup_inner(&self, state: &mut TaskNetworkState) -> Result<(), NetworkError> {
        let snapshot = state.clone();
        let prefix = format!("{}{}-", netns_prefix(self.scope()), snapshot.task_id);
        // The containers' namespaces are independent: made concurrently.
        futures::future::try_join_all(state.namespaces.values_mut().map(|ns| {
            // Bridge-mode namespaces carry the container index in their name; the task's is 0.
            let index = ns
                .name
                .strip_prefix(&prefix)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            self.setup_namespace(&snapshot, index, ns)
        }))
        .await?;
        let state = &*state;
        let sg = async {
            if state.mode != Mode::Awsvpc {
                return Ok(());
            }
            let rules = state
                .awsvpc
                .as_ref()
                .map(|p| p.ingress.clone())
                .unwrap_or_default();
            self.set_ingress(state, &rules).await
        };
        futures::future::try_join(self.setup_host_rules(state), sg).await?;
        tracing::debug!("task network set up");
        Ok(())
    }

    fn hold_state(ipam: &mut Ipam, state: &TaskNetworkState) {
        if let Some(net) = &state.network {
            for ns in state.namespaces.values() {
                if let Some(i) = &ns.interface {
                    ipam.addresses
                        .entry(net.clone())
                        .or_default()
                        .insert(i.address, state.task_id.clone());
                }
            }
        }
        for b in &state.bindings {
            ipam.ports
                .insert((b.protocol, b.host_port), state.task_id.clone());
        }
    }

    /// Next free address of a bridge network (next-fit), not yet in `taken_now`.
    fn next_address(
        ipam: &mut Ipam,
        net: &str,
        cidr: Ipv4Addr,
        prefix: u8,
        taken_now: &HashSet<Ipv4Addr>,
    ) -> Result<Ipv4Addr, NetworkError> {
        let base = u32::from(cidr) & mask(prefix);
        // Hosts: base+2 ..= broadcast-1 (base+1 is the gateway).
        let size = (!mask(prefix)).saturating_sub(2);
        let held = ipam.addresses.get(net);
        let start = ipam.next_address.get(net).copied().unwrap_or(0);
        for k in 0..size {
            let off = (start + k) % size;
            let addr = Ipv4Addr::from(base + 2 + off);
            if held.is_some_and(|h| h.contains_key(&addr)) || taken_now.contains(&addr) {
                continue;
            }
            ipam.next_address.insert(net.to_string(), (off + 1) % size);
            return Ok(addr);
        }
        Err(NetworkError::Exhausted {
            what: format!("addresses of {net} {cidr}/{prefix}"),
        })
    }

    fn next_port(
        &self,
        ipam: &mut Ipam,
        protocol: Protocol,
        taken_now: &HashSet<(Protocol, u16)>,
    ) -> Result<u16, NetworkError> {
        let (first, last) = self.config.dynamic_ports;
        let size = u32::from(last - first) + 1;
        let start = ipam.next_port.unwrap_or(first);
        let start = if (first..=last).contains(&start) {
            start
        } else {
            first
        };
        for k in 0..size {
            let port = (u32::from(start - first) + k) % size + u32::from(first);
            let port = port as u16;
            if ipam.ports.contains_key(&(protocol, port))
                || taken_now.contains(&(protocol, port))
                || (protocol == Protocol::Tcp && self.config.reserved_tcp_ports.contains(&port))
                || !host_port_free(protocol, port)
            {
                continue;
            }
            ipam.next_port = Some(if port == last { first } else { port + 1 });
            return Ok(port);
        }
        Err(NetworkError::Exhausted {
            what: format!("dynamic host ports {first}-{last}"),
        })
    }
}

/// Checks that `name` can be part of an nft chain name unquoted (nft 1.0 does not take quoted
/// names after `jump`).
fn nft_name(what: &str, name: &str) -> Result<(), NetworkError> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        Ok(())
    } else {
        Err(NetworkError::Invalid(format!(
            "{what} {name:?} may contain only letters, digits, '-', '_' and '.'"
        )))
    }
}

fn write_sysctl(path: &str, value: &str) -> Result<(), NetworkError> {
    std::fs::write(path, value).map_err(|e| kernel("setting sysctl", path, e))
}

#[async_trait]
impl Network for LinuxNetwork {
    fn subnets(&self) -> Vec<SubnetConfig> {
        self.config.subnets.clone()
    }

    fn allocate(&self, plan: &NetworkPlan) -> Result<TaskNetworkState, NetworkError> {
        let id = &plan.task_id;
        let mut ipam = self.ipam();
        if ipam
            .ports
            .values()
            .chain(ipam.addresses.values().flat_map(|m| m.values()))
            .any(|t| t == id)
        {
            return Err(NetworkError::Invalid(format!(
                "the network of task {id} is already allocated"
            )));
        }
        let mut state = TaskNetworkState {
            task_id: id.clone(),
            mode: plan.mode,
            namespaces: BTreeMap::new(),
            bindings: Vec::new(),
            awsvpc: plan.awsvpc.clone(),
            network: None,
        };
        let mut addrs = HashSet::new();
        match plan.mode {
            Mode::Host => {}
            Mode::None => {
                state.namespaces.insert(
                    String::new(),
                    Namespace {
                        name: task_netns(self.scope(), id),
                        interface: None,
                    },
                );
            }
            Mode::Bridge => {
                let (net, cidr, prefix) = (
                    self.config.bridge.clone(),
                    self.config.bridge_cidr,
                    self.config.bridge_prefix,
                );
                let gw = first_host(cidr, prefix);
                for (i, c) in plan.containers.iter().enumerate() {
                    let a = Self::next_address(&mut ipam, &net, cidr, prefix, &addrs)?;
                    addrs.insert(a);
                    state.namespaces.insert(
                        c.clone(),
                        Namespace {
                            name: container_netns(self.scope(), id, i),
                            interface: Some(Interface {
                                address: a,
                                prefix,
                                gateway: Some(gw),
                                mac: None,
                                host_link: Some(veth_name(id, i)),
                            }),
                        },
                    );
                }
                state.network = Some(net);
            }
            Mode::Awsvpc => {
                let p = plan.awsvpc.as_ref().ok_or_else(|| {
                    NetworkError::Invalid(format!("awsvpc task {id} has no network configuration"))
                })?;
                let net = self
                    .net(Mode::Awsvpc, &p.subnet)
                    .ok_or_else(|| NetworkError::UnknownSubnet(p.subnet.clone()))?;
                let iface = match net {
                    NetDef::Bridge { cidr, prefix, .. } => {
                        let a = Self::next_address(&mut ipam, &p.subnet, cidr, prefix, &addrs)?;
                        Interface {
                            address: a,
                            prefix,
                            gateway: Some(first_host(cidr, prefix)),
                            mac: None,
                            host_link: Some(veth_name(id, 0)),
                        }
                    }
                    NetDef::Lan {
                        parent,
                        cidr,
                        prefix,
                        gateway,
                        first,
                        last,
                    } => {
                        let a = p.address.ok_or_else(|| {
                            NetworkError::Invalid(format!(
                                "awsvpc task {id} on LAN subnet {} has no address from the controller",
                                p.subnet
                            ))
                        })?;
                        if !(first..=last).contains(&a) || !in_subnet(a, cidr, prefix) {
                            return Err(NetworkError::Invalid(format!(
                                "address {a} is outside subnet {}'s range {first}-{last}",
                                p.subnet
                            )));
                        }
                        if let Some(t) = ipam.addresses.get(&p.subnet).and_then(|m| m.get(&a)) {
                            return Err(NetworkError::Invalid(format!(
                                "address {a} of subnet {} is held by task {t} on this container instance",
                                p.subnet
                            )));
                        }
                        Interface {
                            address: a,
                            prefix,
                            gateway,
                            mac: None,
                            host_link: Some(parent),
                        }
                    }
                };
                state.namespaces.insert(
                    String::new(),
                    Namespace {
                        name: task_netns(self.scope(), id),
                        interface: Some(iface),
                    },
                );
                state.network = Some(p.subnet.clone());
            }
        }
        // Ports: bridge publishes (static or dynamic), host binds containerPort itself.
        let mut ports = HashSet::new();
        if matches!(plan.mode, Mode::Bridge | Mode::Host) {
            for r in &plan.ports {
                if !plan.containers.contains(&r.container) {
                    return Err(NetworkError::Invalid(format!(
                        "port mapping of unknown container {}",
                        r.container
                    )));
                }
                let host_port = match (plan.mode, r.host_port) {
                    (Mode::Host, Some(h)) if h != r.container_port => {
                        return Err(NetworkError::Invalid(format!(
                            "container {}: hostPort {h} must equal containerPort {} in host mode",
                            r.container, r.container_port
                        )))
                    }
                    (Mode::Host, _) => Some(r.container_port),
                    (_, h) => h,
                };
                let port = match host_port {
                    Some(h) => {
                        if ipam.ports.contains_key(&(r.protocol, h))
                            || ports.contains(&(r.protocol, h))
                            || !host_port_free(r.protocol, h)
                        {
                            return Err(NetworkError::PortInUse {
                                port: h,
                                protocol: r.protocol.as_str(),
                            });
                        }
                        h
                    }
                    None => self.next_port(&mut ipam, r.protocol, &ports)?,
                };
                ports.insert((r.protocol, port));
                state.bindings.push(Binding {
                    container: r.container.clone(),
                    container_port: r.container_port,
                    host_port: port,
                    protocol: r.protocol,
                    bind_ip: Ipv4Addr::UNSPECIFIED,
                });
            }
        }
        Self::hold_state(&mut ipam, &state);
        Ok(state)
    }

    fn release(&self, state: &TaskNetworkState) {
        let mut ipam = self.ipam();
        for m in ipam.addresses.values_mut() {
            m.retain(|_, t| *t != state.task_id);
        }
        ipam.ports.retain(|_, t| *t != state.task_id);
    }

    async fn setup(&self, state: &mut TaskNetworkState) -> Result<(), NetworkError> {
        let span =
            tracing::info_span!("network_setup", task = %state.task_id, mode = state.mode.as_str());
        self.setup_inner(state).instrument(span).await
    }

    async fn set_ingress(
        &self,
        state: &TaskNetworkState,
        rules: &[IngressRule],
    ) -> Result<(), NetworkError> {
        let ns = match (state.mode, state.namespaces.get("")) {
            (Mode::Awsvpc, Some(ns)) => ns.name.clone(),
            _ => {
                return Err(NetworkError::Invalid(format!(
                    "task {} is not an awsvpc task",
                    state.task_id
                )))
            }
        };
        nft_script(Some(&ns), "security groups", &sg_script(rules)).await
    }

    async fn teardown(&self, state: &TaskNetworkState) -> Result<(), NetworkError> {
        let span = tracing::info_span!("network_teardown", task = %state.task_id);
        self.teardown_inner(state).instrument(span).await
    }

    async fn recover(&self, held: &[TaskNetworkState]) -> Result<Vec<String>, NetworkError> {
        let removed = self.recover_inner(held).await?;
        for r in &removed {
            tracing::info!(removed = %r, "removed an orphaned task network object");
        }
        Ok(removed)
    }
}

impl LinuxNetwork {
    async fn teardown_inner(&self, state: &TaskNetworkState) -> Result<(), NetworkError> {
        let id = state.task_id.clone();
        let public = state.awsvpc.as_ref().is_some_and(|p| p.assign_public_ip);
        if !state.bindings.is_empty() && state.mode == Mode::Bridge || public {
            self.remove_host_rules(|t| t == id).await?;
        }
        for ns in state.namespaces.values() {
            if let Some(i) = &ns.interface {
                if let Some(l) = &i.host_link {
                    if l.starts_with(VETH_PREFIX) {
                        delete_link(l).await?;
                    }
                }
            }
            remove_netns(&ns.name)?;
        }
        Ok(())
    }

    async fn recover_inner(&self, held: &[TaskNetworkState]) -> Result<Vec<String>, NetworkError> {
        let mut namespaces = HashSet::new();
        let mut links = HashSet::new();
        let mut ids = HashSet::new();
        {
            let mut ipam = self.ipam();
            for s in held {
                Self::hold_state(&mut ipam, s);
                ids.insert(s.task_id.clone());
                for (k, ns) in &s.namespaces {
                    namespaces.insert(ns.name.clone());
                    let index = if k.is_empty() {
                        0
                    } else {
                        ns.name
                            .rsplit('-')
                            .next()
                            .and_then(|n| n.parse().ok())
                            .unwrap_or(0)
                    };
                    for p in std::iter::once(VETH_PREFIX).chain(TEMP_PREFIXES) {
                        links.insert(temp_name(p, &s.task_id, index));
                    }
                    if let Some(l) = ns.interface.as_ref().and_then(|i| i.host_link.clone()) {
                        links.insert(l);
                    }
                }
            }
        }
        let mut removed = self.remove_host_rules(|t| !ids.contains(t)).await?;
        // Only ports of this agent's own bridges: another agent's veths (another scope) are
        // never touched. A veth whose namespace is removed below goes with it.
        let all = host_links().await?;
        let mine: HashSet<u32> = all
            .iter()
            .filter(|(n, _, _)| self.own_bridges().contains(n))
            .map(|(_, i, _)| *i)
            .collect();
        for (l, _, controller) in all {
            let ours = std::iter::once(VETH_PREFIX).chain(TEMP_PREFIXES).any(|p| {
                l.len() == p.len() + 12
                    && l.starts_with(p)
                    && l[p.len()..].bytes().all(|b| b.is_ascii_hexdigit())
            });
            if ours && controller.is_some_and(|c| mine.contains(&c)) && !links.contains(&l) {
                delete_link(&l).await?;
                removed.push(format!("link {l}"));
            }
        }
        let entries = match std::fs::read_dir(NETNS_DIR) {
            Ok(e) => e.filter_map(Result::ok).collect::<Vec<_>>(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(kernel("listing", NETNS_DIR, e)),
        };
        for e in entries {
            let name = e.file_name().to_string_lossy().to_string();
            if name.starts_with(&netns_prefix(self.scope())) && !namespaces.contains(&name) {
                remove_netns(&name)?;
                removed.push(format!("namespace {name}"));
            }
        }
        Ok(removed)
    }
}

/// The security-group script for a task namespace: table, chain (policy drop), then the
/// rules, replaced atomically.
fn sg_script(rules: &[IngressRule]) -> String {
    let mut s = format!(
        "add table inet {SG_TABLE}\n\
         add chain inet {SG_TABLE} input {{ type filter hook input priority 0; policy drop; }}\n\
         flush chain inet {SG_TABLE} input\n\
         add rule inet {SG_TABLE} input ct state established,related accept\n\
         add rule inet {SG_TABLE} input iif lo accept\n"
    );
    for r in rules {
        let src = format!(
            "ip saddr {}/{}",
            Ipv4Addr::from(u32::from(r.source) & mask(r.prefix)),
            r.prefix.min(32)
        );
        let m = match r.protocol {
            RuleProtocol::Tcp | RuleProtocol::Udp => {
                let p = if r.protocol == RuleProtocol::Tcp {
                    "tcp"
                } else {
                    "udp"
                };
                if r.from_port == r.to_port {
                    format!("{src} {p} dport {}", r.from_port)
                } else {
                    format!(
                        "{src} {p} dport {}-{}",
                        r.from_port.min(r.to_port),
                        r.to_port.max(r.from_port)
                    )
                }
            }
            RuleProtocol::Icmp => format!("{src} ip protocol icmp"),
            RuleProtocol::All => src,
        };
        s.push_str(&format!("add rule inet {SG_TABLE} input {m} accept\n"));
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Namespaces.

/// Runs `f` on a new thread (which may setns without affecting any other thread).
async fn on_thread<T, F>(what: &'static str, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetworkError> + Send + 'static,
{
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .map_err(|e| kernel("starting thread for", what, e))?;
    match tokio::time::timeout(THREAD_TIMEOUT, rx).await {
        Ok(Ok(r)) => r,
        Ok(Err(_)) => Err(kernel("thread for", what, io::Error::other("panicked"))),
        Err(_) => Err(kernel(
            "waiting for",
            what,
            io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer in {THREAD_TIMEOUT:?}"),
            ),
        )),
    }
}

fn enter_netns(name: &str) -> Result<(), NetworkError> {
    let f =
        std::fs::File::open(netns_path(name)).map_err(|e| kernel("opening namespace", name, e))?;
    setns(&f, CloneFlags::CLONE_NEWNET).map_err(|e| kernel("entering namespace", name, e.into()))
}

fn is_netns(path: &str) -> bool {
    nix::sys::statfs::statfs(path)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::NSFS_MAGIC)
}

/// Creates /run/netns/NAME unless it is already a namespace (idempotent).
async fn create_netns(name: &str) -> Result<(), NetworkError> {
    let path = netns_path(name);
    if is_netns(&path) {
        return Ok(());
    }
    std::fs::create_dir_all(NETNS_DIR).map_err(|e| kernel("creating", NETNS_DIR, e))?;
    let name = name.to_string();
    on_thread("creating namespace", move || {
        // A plain file left by a crash between create and mount.
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(kernel("removing stale", &path, e)),
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| kernel("creating namespace file", &path, e))?;
        let bind = || -> Result<(), NetworkError> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| kernel("creating namespace", &name, e.into()))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                path.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| kernel("binding namespace", &path, e.into()))
        };
        if let Err(e) = bind() {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(())
    })
    .await
}

/// Unmounts and unlinks /run/netns/NAME (gone is fine).
fn remove_netns(name: &str) -> Result<(), NetworkError> {
    let path = netns_path(name);
    match umount2(path.as_str(), MntFlags::MNT_DETACH) {
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(kernel("unmounting namespace", &path, e.into())),
    }
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(kernel("removing namespace", &path, e)),
    }
}

// ---------------------------------------------------------------------------------------------
// Netlink.

type NlFuture<T> = Pin<Box<dyn Future<Output = Result<T, NetworkError>>>>;

/// Runs `f` with a netlink handle of namespace `ns` (the host's when `None`), on a thread that
/// entered it.
async fn netlink<T, F>(ns: Option<String>, f: F) -> Result<T, NetworkError>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> NlFuture<T> + Send + 'static,
{
    on_thread("netlink", move || {
        if let Some(ns) = &ns {
            enter_netns(ns)?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| kernel("starting runtime for", "netlink", e))?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|e| kernel("opening", "netlink socket", e))?;
            tokio::spawn(conn);
            f(handle).await
        })
    })
    .await
}

async fn link_by_name(h: &Handle, name: &str) -> Result<Option<LinkMessage>, NetworkError> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(l) => Ok(l),
        Err(e) if nl_errno(&e) == Some(Errno::ENODEV) => Ok(None),
        Err(e) => Err(nl("looking up link", name)(e)),
    }
}

async fn add_address(
    h: &Handle,
    index: u32,
    addr: Ipv4Addr,
    prefix: u8,
    link: &str,
) -> Result<(), NetworkError> {
    match h
        .address()
        .add(index, IpAddr::V4(addr), prefix)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if nl_errno(&e) == Some(Errno::EEXIST) => Ok(()),
        Err(e) => Err(nl("adding address to", link)(e)),
    }
}

async fn set_up(h: &Handle, index: u32, link: &str) -> Result<(), NetworkError> {
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("setting up", link))
}

async fn set_lo_up(ns: &str) -> Result<(), NetworkError> {
    netlink(Some(ns.to_string()), |h| {
        Box::pin(async move {
            let lo = link_by_name(&h, "lo")
                .await?
                .ok_or_else(|| kernel("finding", "lo", io::Error::other("no loopback")))?;
            set_up(&h, lo.header.index, "lo").await
        })
    })
    .await
}

/// Deletes a host link (gone is fine).
async fn delete_link(name: &str) -> Result<(), NetworkError> {
    let name = name.to_string();
    netlink(None, move |h| {
        Box::pin(async move {
            let Some(l) = link_by_name(&h, &name).await? else {
                return Ok(());
            };
            match h.link().del(l.header.index).execute().await {
                Ok(()) => Ok(()),
                Err(e) if nl_errno(&e) == Some(Errno::ENODEV) => Ok(()),
                Err(e) => Err(nl("deleting link", &name)(e)),
            }
        })
    })
    .await
}

/// Names of the host namespace's links.
/// The host namespace's links: name, index and the index of the bridge it is a port of.
async fn host_links() -> Result<Vec<(String, u32, Option<u32>)>, NetworkError> {
    netlink(None, |h| {
        Box::pin(async move {
            let mut out = Vec::new();
            let mut s = h.link().get().execute();
            while let Some(l) = s.try_next().await.map_err(nl("listing", "links"))? {
                if let Some(n) = link_name(&l) {
                    let controller = l.attributes.iter().find_map(|a| match a {
                        LinkAttribute::Controller(i) => Some(*i),
                        _ => None,
                    });
                    out.push((n, l.header.index, controller));
                }
            }
            Ok(out)
        })
    })
    .await
}

fn link_name(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

fn link_mac(l: &LinkMessage) -> Option<String> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
        ),
        _ => None,
    })
}

/// Which of eth0 / `temp` the namespace has.
async fn ns_links(ns: &str, temp: &str) -> Result<(bool, bool), NetworkError> {
    let temp = temp.to_string();
    netlink(Some(ns.to_string()), move |h| {
        Box::pin(async move {
            Ok((
                link_by_name(&h, "eth0").await?.is_some(),
                link_by_name(&h, &temp).await?.is_some(),
            ))
        })
    })
    .await
}

/// Makes sure namespace `ns` has a veth whose host end `host` is on `bridge` (up); a new peer
/// is moved in as `temp` (renamed eth0 by [`configure_eth0`]).
async fn attach_veth(ns: &str, host: &str, temp: &str, bridge: &str) -> Result<(), NetworkError> {
    let (eth0, tmp) = ns_links(ns, temp).await?;
    let (ns, host, temp, bridge) = (
        ns.to_string(),
        host.to_string(),
        temp.to_string(),
        bridge.to_string(),
    );
    netlink(None, move |h| {
        Box::pin(async move {
            let br = link_by_name(&h, &bridge)
                .await?
                .ok_or_else(|| kernel("finding bridge", &bridge, io::Error::from_raw_os_error(19)))?
                .header
                .index;
            if !eth0 && !tmp {
                // Half made (or never): start over.
                if let Some(l) = link_by_name(&h, &host).await? {
                    h.link()
                        .del(l.header.index)
                        .execute()
                        .await
                        .map_err(nl("deleting stale veth", &host))?;
                }
                if let Some(l) = link_by_name(&h, &temp).await? {
                    h.link()
                        .del(l.header.index)
                        .execute()
                        .await
                        .map_err(nl("deleting stale veth", &temp))?;
                }
                // The peer is made in the namespace directly (moving a link is slow).
                let f = std::fs::File::open(netns_path(&ns))
                    .map_err(|e| kernel("opening namespace", &ns, e))?;
                use std::os::fd::AsRawFd;
                let peer = LinkUnspec::new_with_name(&temp)
                    .setns_by_fd(f.as_raw_fd())
                    .build();
                h.link()
                    .add(
                        LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                            .name(host.clone())
                            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl("creating veth", &host))?;
            }
            let l = link_by_name(&h, &host)
                .await?
                .ok_or_else(|| kernel("finding veth", &host, io::Error::from_raw_os_error(19)))?;
            h.link()
                .set(
                    LinkUnspec::new_with_index(l.header.index)
                        .controller(br)
                        .up()
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("attaching veth to bridge", &host))?;
            // Hairpin: a container reaching its own published port through a host address
            // gets its packets back out of the port they came in on.
            h.link()
                .set_port(LinkBridgePort::new(l.header.index).hairpin(true).build())
                .execute()
                .await
                .map_err(nl("setting hairpin on", &host))
        })
    })
    .await
}

/// Makes sure namespace `ns` has a macvlan (mode bridge) on `parent`, moved in as `temp`.
async fn attach_macvlan(ns: &str, temp: &str, parent: &str) -> Result<(), NetworkError> {
    let (eth0, tmp) = ns_links(ns, temp).await?;
    if eth0 || tmp {
        return Ok(());
    }
    let (ns, temp, parent) = (ns.to_string(), temp.to_string(), parent.to_string());
    netlink(None, move |h| {
        Box::pin(async move {
            let p = link_by_name(&h, &parent)
                .await?
                .ok_or_else(|| {
                    kernel(
                        "finding macvlan parent",
                        &parent,
                        io::Error::from_raw_os_error(19),
                    )
                })?
                .header
                .index;
            if let Some(l) = link_by_name(&h, &temp).await? {
                h.link()
                    .del(l.header.index)
                    .execute()
                    .await
                    .map_err(nl("deleting stale macvlan", &temp))?;
            }
            // Made in the namespace directly (moving a link is slow).
            let f = std::fs::File::open(netns_path(&ns))
                .map_err(|e| kernel("opening namespace", &ns, e))?;
            use std::os::fd::AsRawFd;
            h.link()
                .add(
                    LinkMacVlan::new(&temp, p, MacVlanMode::Bridge)
                        .setns_by_fd(f.as_raw_fd())
                        .build(),
                )
                .execute()
                .await
                .map_err(nl("creating macvlan on", &parent))
        })
    })
    .await
}

/// Inside `ns`: `temp` (if still there) renamed eth0, address, up, lo up, default route.
/// Returns eth0's MAC.
async fn configure_eth0(
    ns: &str,
    temp: &str,
    addr: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
) -> Result<String, NetworkError> {
    let temp = temp.to_string();
    netlink(Some(ns.to_string()), move |h| {
        Box::pin(async move {
            if let Some(t) = link_by_name(&h, &temp).await? {
                h.link()
                    .set(
                        LinkUnspec::new_with_index(t.header.index)
                            .name("eth0".to_string())
                            .build(),
                    )
                    .execute()
                    .await
                    .map_err(nl("renaming to eth0", &temp))?;
            }
            let eth0 = link_by_name(&h, "eth0")
                .await?
                .ok_or_else(|| kernel("finding", "eth0", io::Error::from_raw_os_error(19)))?;
            let idx = eth0.header.index;
            add_address(&h, idx, addr, prefix, "eth0").await?;
            set_up(&h, idx, "eth0").await?;
            if let Some(lo) = link_by_name(&h, "lo").await? {
                set_up(&h, lo.header.index, "lo").await?;
            }
            if let Some(gw) = gateway {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(idx)
                    .build();
                match h.route().add(route).execute().await {
                    Ok(()) => {}
                    Err(e) if nl_errno(&e) == Some(Errno::EEXIST) => {}
                    Err(e) => return Err(nl("adding default route via", &gw.to_string())(e)),
                }
            }
            link_mac(&eth0)
                .ok_or_else(|| kernel("reading MAC of", "eth0", io::Error::other("no address")))
        })
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// nft.

/// Runs `nft` with `args` (in namespace `ns` when given), `stdin` on its standard input, under
/// a timeout. Returns stdout.
async fn nft(
    ns: Option<&str>,
    what: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, NetworkError> {
    let fail = |message: String| NetworkError::Nft {
        what: what.to_string(),
        message,
    };
    let mut cmd = tokio::process::Command::new("nft");
    cmd.args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(ns) = ns {
        let f =
            std::fs::File::open(netns_path(ns)).map_err(|e| kernel("opening namespace", ns, e))?;
        // SAFETY: the closure only calls setns(2), which is async-signal-safe, on an fd opened
        // before the fork.
        unsafe {
            cmd.pre_exec(move || setns(&f, CloneFlags::CLONE_NEWNET).map_err(io::Error::from));
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("cannot run nft: {e}")))?;
    let run = async {
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input.as_bytes()).await?;
            drop(pipe);
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| fail(format!("timed out after {NFT_TIMEOUT:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn nft_script(ns: Option<&str>, what: &str, script: &str) -> Result<(), NetworkError> {
    nft(ns, what, &["-f", "-"], Some(script)).await.map(|_| ())
}

/// The jump rules the host table has (listed on first use).
async fn known_jumps<'a>(
    table: &str,
    known: &'a mut Option<HashSet<(String, String)>>,
) -> Result<&'a mut HashSet<(String, String)>, NetworkError> {
    if known.is_none() {
        let rules = list_host_rules(table).await?;
        *known = Some(
            rules
                .into_iter()
                .filter_map(|r| Some((r.chain, r.comment?)))
                .collect(),
        );
    }
    Ok(known.get_or_insert_with(HashSet::new))
}

/// `add rule … <matches>jump <target> comment "<comment>"` unless `rules` has a rule with that
/// comment in `chain`; else "".
fn missing_jump(
    table: &str,
    known: &HashSet<(String, String)>,
    chain: &str,
    target: &str,
    comment: &str,
    matches: &str,
) -> String {
    if known.contains(&(chain.to_string(), comment.to_string())) {
        return String::new();
    }
    format!("add rule ip {table} {chain} {matches}jump {target} comment \"{comment}\"\n")
}

/// A rule of the host table.
#[derive(Debug)]
struct NftRule {
    chain: String,
    handle: u64,
    comment: Option<String>,
}

async fn list_host_rules(table: &str) -> Result<Vec<NftRule>, NetworkError> {
    Ok(list_host_table(table)
        .await?
        .map(|t| t.0)
        .unwrap_or_default())
}

/// The host table's rules and chain names; `None` when there is no table.
async fn list_host_table(table: &str) -> Result<Option<(Vec<NftRule>, Vec<String>)>, NetworkError> {
    let out = match nft(
        None,
        "listing host table",
        &["-j", "list", "table", "ip", table],
        None,
    )
    .await
    {
        Ok(o) => o,
        Err(NetworkError::Nft { message, .. }) if message.contains("No such file or directory") => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    Ok(Some(parse_table(&out)))
}

fn parse_table(json: &str) -> (Vec<NftRule>, Vec<String>) {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let mut rules = Vec::new();
    let mut chains = Vec::new();
    for item in v["nftables"].as_array().into_iter().flatten() {
        if let Some(c) = item.get("chain") {
            if let Some(n) = c["name"].as_str() {
                chains.push(n.to_string());
            }
        }
        if let Some(r) = item.get("rule") {
            if let (Some(chain), Some(handle)) = (r["chain"].as_str(), r["handle"].as_u64()) {
                rules.push(NftRule {
                    chain: chain.to_string(),
                    handle,
                    comment: r["comment"].as_str().map(str::to_string),
                });
            }
        }
    }
    (rules, chains)
}

/// What an integration benchmark can time: one allocate + setup + teardown + release cycle.
pub async fn cycle(net: &LinuxNetwork, plan: &NetworkPlan) -> Result<(), NetworkError> {
    let mut state = net.allocate(plan)?;
    let r = net.setup(&mut state).await;
    let t = net.teardown(&state).await;
    net.release(&state);
    r.and(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> NetworkConfig {
        NetworkConfig {
            reserved_tcp_ports: vec![],
            bridge: "tbr0".into(),
            bridge_cidr: Ipv4Addr::new(10, 231, 250, 0),
            bridge_prefix: 29,
            dynamic_ports: (61000, 61003),
            subnets: vec![
                SubnetConfig {
                    name: "s-b".into(),
                    cidr: Ipv4Addr::new(10, 231, 251, 0),
                    prefix: 30,
                    backend: SubnetBackend::Bridge {
                        bridge: "tbr1".into(),
                    },
                },
                SubnetConfig {
                    name: "s-l".into(),
                    cidr: Ipv4Addr::new(10, 231, 252, 0),
                    prefix: 24,
                    backend: SubnetBackend::Lan {
                        parent: "tlan".into(),
                        gateway: None,
                        first: Ipv4Addr::new(10, 231, 252, 10),
                        last: Ipv4Addr::new(10, 231, 252, 20),
                    },
                },
            ],
            fallback_dns: vec![],
        }
    }

    fn plan(id: &str, mode: Mode, ports: Vec<(u16, Option<u16>)>) -> NetworkPlan {
        NetworkPlan {
            task_id: id.into(),
            mode,
            containers: vec!["a".into()],
            ports: ports
                .into_iter()
                .map(|(c, h)| PortRequest {
                    container: "a".into(),
                    container_port: c,
                    host_port: h,
                    protocol: Protocol::Udp,
                })
                .collect(),
            awsvpc: None,
        }
    }

    fn awsvpc(id: &str, subnet: &str, address: Option<Ipv4Addr>) -> NetworkPlan {
        NetworkPlan {
            awsvpc: Some(AwsvpcPlan {
                subnet: subnet.into(),
                address,
                assign_public_ip: false,
                security_groups: vec![],
                ingress: vec![],
            }),
            ..plan(id, Mode::Awsvpc, vec![])
        }
    }

    #[test]
    fn names_fit_the_kernel_limit() {
        let v = veth_name("0123456789abcdef0123456789abcdef", 7);
        assert_eq!(v.len(), 14);
        assert!(v.starts_with("bv"));
        assert_ne!(v, veth_name("0123456789abcdef0123456789abcdef", 8));
        assert_eq!(container_netns("berth0", "t", 2), "berth0-t-2");
    }

    #[test]
    fn bridge_addresses_skip_network_and_gateway_and_run_out() {
        let n = LinuxNetwork::new(cfg()).unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            let s = n
                .allocate(&plan(&format!("t{i}"), Mode::Bridge, vec![]))
                .unwrap();
            got.push(s.namespaces["a"].interface.as_ref().unwrap().address);
        }
        // /29: .2 .. .6 (.1 is the bridge, .7 broadcast).
        assert_eq!(
            got,
            (2..=6)
                .map(|i| Ipv4Addr::new(10, 231, 250, i))
                .collect::<Vec<_>>()
        );
        assert!(matches!(
            n.allocate(&plan("t9", Mode::Bridge, vec![])),
            Err(NetworkError::Exhausted { .. })
        ));
    }

    #[test]
    fn awsvpc_allocation_rules() {
        let n = LinuxNetwork::new(cfg()).unwrap();
        assert!(matches!(
            n.allocate(&awsvpc("x", "nope", None)),
            Err(NetworkError::UnknownSubnet(s)) if s == "nope"
        ));
        let s = n.allocate(&awsvpc("b1", "s-b", None)).unwrap();
        let i = s.namespaces[""].interface.clone().unwrap();
        assert_eq!(i.address, Ipv4Addr::new(10, 231, 251, 2));
        assert_eq!(i.gateway, Some(Ipv4Addr::new(10, 231, 251, 1)));
        assert!(matches!(
            n.allocate(&awsvpc("b2", "s-b", None)),
            Err(NetworkError::Exhausted { .. })
        ));
        assert!(matches!(
            n.allocate(&awsvpc("l1", "s-l", None)),
            Err(NetworkError::Invalid(_))
        ));
        assert!(matches!(
            n.allocate(&awsvpc("l1", "s-l", Some(Ipv4Addr::new(10, 231, 252, 21)))),
            Err(NetworkError::Invalid(_))
        ));
        let s = n
            .allocate(&awsvpc("l1", "s-l", Some(Ipv4Addr::new(10, 231, 252, 20))))
            .unwrap();
        assert_eq!(
            s.namespaces[""]
                .interface
                .as_ref()
                .unwrap()
                .host_link
                .as_deref(),
            Some("tlan")
        );
        assert!(n
            .allocate(&awsvpc("l2", "s-l", Some(Ipv4Addr::new(10, 231, 252, 20))))
            .is_err());
        n.release(&s);
        assert!(n
            .allocate(&awsvpc("l2", "s-l", Some(Ipv4Addr::new(10, 231, 252, 20))))
            .is_ok());
    }

    #[test]
    fn dynamic_ports_next_fit_and_conflicts() {
        let n = LinuxNetwork::new(cfg()).unwrap();
        let a = n
            .allocate(&plan("a", Mode::Bridge, vec![(80, None)]))
            .unwrap();
        let b = n
            .allocate(&plan("b", Mode::Bridge, vec![(80, None)]))
            .unwrap();
        assert_ne!(a.bindings[0].host_port, b.bindings[0].host_port);
        n.release(&a);
        let c = n
            .allocate(&plan("c", Mode::Bridge, vec![(80, None)]))
            .unwrap();
        // Next-fit: not the port just released.
        assert_ne!(c.bindings[0].host_port, a.bindings[0].host_port);
        let h = b.bindings[0].host_port;
        assert!(matches!(
            n.allocate(&plan("d", Mode::Bridge, vec![(80, Some(h))])),
            Err(NetworkError::PortInUse { port, .. }) if port == h
        ));
        assert!(matches!(
            n.allocate(&plan("e", Mode::Host, vec![(80, Some(81))])),
            Err(NetworkError::Invalid(_))
        ));
        let host = n
            .allocate(&plan("f", Mode::Host, vec![(61500, None)]))
            .unwrap();
        assert_eq!(host.bindings[0].host_port, 61500);
        assert!(host.namespaces.is_empty());
    }

    #[test]
    fn reserved_ports_are_never_dynamic() {
        let (first, _) = cfg().dynamic_ports;
        let n = LinuxNetwork::new(NetworkConfig {
            dynamic_ports: (first, first + 2),
            reserved_tcp_ports: vec![first, first + 1],
            ..cfg()
        })
        .unwrap();
        let tcp = |id: &str| {
            let mut p = plan(id, Mode::Bridge, vec![(80, None)]);
            p.ports[0].protocol = Protocol::Tcp;
            p
        };
        let a = n.allocate(&tcp("a")).unwrap();
        assert_eq!(
            a.bindings[0].host_port,
            first + 2,
            "the reserved ones skipped"
        );
        assert!(matches!(
            n.allocate(&tcp("b")),
            Err(NetworkError::Exhausted { .. })
        ));
    }

    #[test]
    fn sg_script_shapes() {
        let s = sg_script(&[
            IngressRule {
                protocol: RuleProtocol::Tcp,
                from_port: 80,
                to_port: 90,
                source: Ipv4Addr::new(10, 0, 0, 7),
                prefix: 8,
            },
            IngressRule {
                protocol: RuleProtocol::Icmp,
                from_port: 0,
                to_port: 0,
                source: Ipv4Addr::UNSPECIFIED,
                prefix: 0,
            },
        ]);
        assert!(s.contains("policy drop"));
        assert!(s.contains("flush chain inet berth_sg input"));
        assert!(s.contains("ip saddr 10.0.0.0/8 tcp dport 80-90 accept"));
        assert!(s.contains("ip saddr 0.0.0.0/0 ip protocol icmp accept"));
    }
}
