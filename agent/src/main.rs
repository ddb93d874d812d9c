//! `berth-agent`: run the agent, or `berth-agent image load FILE` to import an image archive.

use anyhow::Context;
use berth_agent::cgroups::HostCgroups;
use berth_agent::engine::{reporter::Reporter, Engine, EngineConfig};
use berth_agent::identity::{Enrollment, TlsFiles};
use berth_agent::network::{self, NetworkConfig, SubnetBackend, SubnetConfig};
use berth_agent::runtime::containerd::Containerd;
use berth_agent::runtime::spec::SecurityOptions;
use berth_agent::session::{self, Registration};
use berth_agent::state::{read_json, AgentState, DataDir};
use berth_proto::v1::{Attribute, RegisterContainerInstanceRequest, Resource, VersionInfo};
use clap::{Parser, Subcommand};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Berth's agent: runs the controller's tasks on this host with containerd + runc.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The controller's URL.
    #[arg(
        long,
        env = "BERTH_CONTROLLER",
        default_value = "http://127.0.0.1:7480",
        global = true
    )]
    controller: String,
    /// The cluster to join (like ECS_CLUSTER).
    #[arg(long, env = "BERTH_CLUSTER", default_value = "default", global = true)]
    cluster: String,
    /// Where the agent keeps its state and container logs.
    #[arg(
        long,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth/agent",
        global = true
    )]
    data_dir: PathBuf,
    /// containerd's socket.
    #[arg(
        long,
        env = "BERTH_CONTAINERD_SOCKET",
        default_value = "/run/containerd/containerd.sock",
        global = true
    )]
    containerd_socket: PathBuf,
    /// The containerd namespace for Berth's images and containers.
    #[arg(
        long,
        env = "BERTH_CONTAINERD_NAMESPACE",
        default_value = "berth",
        global = true
    )]
    containerd_namespace: String,
    /// The cgroup under which each task gets `<task-id>`.
    #[arg(
        long,
        env = "BERTH_CGROUP_PARENT",
        default_value = "berth",
        global = true
    )]
    cgroup_parent: String,
    /// MiB of memory kept back from tasks (like ECS_RESERVED_MEMORY).
    #[arg(
        long,
        env = "BERTH_RESERVED_MEMORY",
        default_value_t = 0,
        global = true
    )]
    reserved_memory: i64,
    /// Host ports tasks may not use (like ECS_RESERVED_PORTS).
    #[arg(
        long,
        env = "BERTH_RESERVED_PORTS",
        value_delimiter = ',',
        default_value = "22,2375,2376,51678,51679",
        global = true
    )]
    reserved_ports: Vec<u16>,
    /// ecs.availability-zone attribute of this instance.
    #[arg(long, env = "BERTH_AVAILABILITY_ZONE", global = true)]
    availability_zone: Option<String>,
    /// Extra instance attributes, NAME=VALUE (comma-separated; like ECS_INSTANCE_ATTRIBUTES).
    #[arg(
        long = "attribute",
        env = "BERTH_INSTANCE_ATTRIBUTES",
        value_delimiter = ',',
        global = true
    )]
    attributes: Vec<String>,
    /// Seconds between a container's stop signal and SIGKILL (like ECS_CONTAINER_STOP_TIMEOUT).
    #[arg(
        long,
        env = "BERTH_CONTAINER_STOP_TIMEOUT",
        default_value_t = 30,
        global = true
    )]
    container_stop_timeout: u64,
    /// How long a stopped task's containers, snapshots, volumes and log files are kept before
    /// they are removed (like ECS_ENGINE_TASK_CLEANUP_WAIT_DURATION): `3h`, `90s`, `1h30m`.
    #[arg(
        long,
        env = "BERTH_TASK_CLEANUP_WAIT",
        default_value = "3h",
        value_parser = berth_agent::engine::cleanup::parse_duration,
        global = true
    )]
    task_cleanup_wait: Duration,
    /// Allow containers with `privileged: true` (all capabilities, all devices, no seccomp).
    /// Off by default; when on, the instance advertises ecs.capability.privileged-container.
    #[arg(
        long,
        env = "BERTH_ALLOW_PRIVILEGED",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    allow_privileged: bool,
    /// Maximum processes per container (its cgroup's pids.max); 0 for no limit.
    #[arg(
        long,
        env = "BERTH_PIDS_LIMIT",
        default_value_t = berth_agent::runtime::spec::DEFAULT_PIDS_LIMIT,
        value_parser = clap::value_parser!(i64).range(0..),
        global = true
    )]
    pids_limit: i64,
    /// Set no_new_privs on every container, whatever its dockerSecurityOptions say.
    #[arg(
        long,
        env = "BERTH_NO_NEW_PRIVILEGES",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new(),
        global = true
    )]
    no_new_privileges: bool,
    /// The init binary of containers with linuxParameters.initProcessEnabled (bind-mounted at
    /// /sbin/docker-init, as Docker's --init); Debian's `tini` package installs the default.
    #[arg(
        long,
        env = "BERTH_INIT_PATH",
        default_value = berth_agent::runtime::options::DEFAULT_INIT_PATH,
        global = true
    )]
    init_path: PathBuf,
    /// KEY=VALUE file read first (keys are the BERTH_* variables), like /etc/ecs/ecs.config.
    #[arg(
        long,
        env = "BERTH_AGENT_CONFIG",
        default_value = "/etc/berth/agent.conf",
        global = true
    )]
    config: PathBuf,
    /// The SSM activation id to enroll with (from `berth ssm create-activation`); needed once,
    /// when DATA_DIR/tls holds no client certificate (https controllers only).
    #[arg(long, env = "BERTH_ACTIVATION_ID", global = true)]
    activation_id: Option<String>,
    /// The activation code that goes with --activation-id.
    #[arg(
        long,
        env = "BERTH_ACTIVATION_CODE",
        global = true,
        hide_env_values = true
    )]
    activation_code: Option<Redacted>,
    /// The controller CA's fingerprint to pin (sha256:<64 hex>, printed by create-activation);
    /// the CA is then saved as DATA_DIR/tls/ca.pem.
    #[arg(long, env = "BERTH_CA_FINGERPRINT", global = true)]
    ca_fingerprint: Option<String>,
    /// The controller's CA certificate (PEM) to trust, instead of --ca-fingerprint.
    #[arg(long, env = "BERTH_CA_FILE", global = true)]
    ca_file: Option<PathBuf>,
    /// The bridge of bridge-mode tasks.
    #[arg(long, env = "BERTH_BRIDGE", default_value = "berth0", global = true)]
    bridge: String,
    /// Its subnet (the bridge takes the first address, containers the rest); pick one the
    /// host does not use.
    #[arg(
        long,
        env = "BERTH_BRIDGE_CIDR",
        default_value = "172.31.0.0/16",
        global = true
    )]
    bridge_cidr: String,
    /// Host ports given to portMappings without a hostPort, FIRST-LAST (ECS's 49153-65535).
    #[arg(
        long,
        env = "BERTH_DYNAMIC_PORTS",
        default_value = "49153-65535",
        global = true
    )]
    dynamic_ports: String,
    /// An awsvpc subnet (repeatable): `name=subnet-x,cidr=10.9.0.0/24,bridge=NAME` (a bridge on
    /// this host) or `name=lan1,cidr=192.168.5.0/24,parent=eth0,gateway=192.168.5.1,
    /// range=192.168.5.100-192.168.5.150` (the host's LAN, macvlan on PARENT). Default: one
    /// bridge subnet `subnet-local`, 172.30.0.0/16 on berth-vpc0.
    #[arg(
        long = "subnet",
        env = "BERTH_SUBNETS",
        value_delimiter = ';',
        global = true
    )]
    subnets: Vec<String>,
    /// Nameservers a container gets when neither its definition nor the host gives a usable
    /// one (comma-separated).
    #[arg(
        long = "dns",
        env = "BERTH_FALLBACK_DNS",
        value_delimiter = ',',
        default_value = "8.8.8.8,8.8.4.4",
        global = true
    )]
    fallback_dns: Vec<String>,
    /// Issue 9: where host-mode containers reach the task metadata endpoint (the path carries
    /// a per-container token). Bridge and awsvpc tasks reach it at 169.254.170.2 in their own
    /// namespace.
    #[arg(
        long,
        env = "BERTH_METADATA_ADDRESS",
        default_value = berth_agent::metadata::DEFAULT_HOST_ADDRESS,
        global = true
    )]
    metadata_address: std::net::SocketAddr,
    /// Issue 9: how often task stats are sampled and reported to the controller ("20s",
    /// "500ms", "1m"; ECS's 20 s).
    #[arg(
        long,
        env = "BERTH_STATS_INTERVAL",
        default_value = "20s",
        value_parser = berth_agent::stats::parse_interval,
        global = true
    )]
    stats_interval: Duration,
    /// Host directories under which `host` volumes' sourcePath and environment files (type
    /// file) may lie (comma-separated, absolute); empty (the default): none.
    #[arg(
        long,
        env = "BERTH_ALLOWED_HOST_PATHS",
        value_delimiter = ',',
        global = true
    )]
    allowed_host_paths: Vec<String>,
    /// An NFS export for volumes (repeatable; `;`-separated in the variable):
    /// `KEY=server:/export[,mount options]`, KEY being an efsVolumeConfiguration's fileSystemId
    /// or the name of a volume with a dockerVolumeConfiguration driver other than local.
    #[arg(
        long = "nfs-volume",
        env = "BERTH_NFS_VOLUMES",
        value_delimiter = ';',
        global = true
    )]
    nfs_volumes: Vec<String>,
    /// Issue 10: the most bytes of a task's container output kept on disk undelivered (the
    /// spool of its log driver); past it the oldest events are dropped and counted (a marker
    /// event in the stream), or with awslogs `mode: blocking` the containers are slowed.
    /// Docker's sizes: `256m`, `1g`, `65536`.
    #[arg(
        long,
        env = "BERTH_LOG_SPOOL_MAX",
        default_value = "256m",
        value_parser = parse_size,
        global = true
    )]
    log_spool_max_bytes: u64,
    /// Issue 10: the size of each container output pipe (F_SETPIPE_SZ): what a container may
    /// write while no agent reads before it blocks. Default: /proc/sys/fs/pipe-max-size.
    #[arg(long, env = "BERTH_LOG_PIPE_SIZE", value_parser = parse_size, global = true)]
    log_pipe_size: Option<u64>,
    /// Issue 11: when to pull a task's images (ECS_IMAGE_PULL_BEHAVIOR): default (pull; on
    /// failure run the cached image), always (a failed pull fails the task), once (pull only if
    /// this agent never pulled it), prefer-cached (pull only if absent). Images loaded by hand
    /// are pulled only under `always`.
    #[arg(
        long,
        env = "BERTH_IMAGE_PULL_BEHAVIOR",
        default_value = "default",
        global = true
    )]
    image_pull_behavior: berth_agent::images::PullBehavior,
    /// A pull not done in this many seconds fails (ECS_IMAGE_PULL_TIMEOUT).
    #[arg(
        long,
        env = "BERTH_IMAGE_PULL_TIMEOUT",
        default_value_t = 7200,
        global = true
    )]
    image_pull_timeout: u64,
    /// A pull that receives nothing for this many seconds fails
    /// (ECS_IMAGE_PULL_INACTIVITY_TIMEOUT).
    #[arg(
        long,
        env = "BERTH_IMAGE_PULL_INACTIVITY_TIMEOUT",
        default_value_t = 60,
        global = true
    )]
    image_pull_inactivity_timeout: u64,
    /// A registry (HOST or HOST:PORT, as image references name it) reached over plain HTTP
    /// (repeatable; comma-separated in the variable). Every other registry is reached over
    /// HTTPS only.
    #[arg(
        long = "insecure-registry",
        env = "BERTH_INSECURE_REGISTRIES",
        value_delimiter = ',',
        global = true
    )]
    insecure_registries: Vec<String>,
    /// The only registries pulls may reach (repeatable; HOST for any port, or HOST:PORT;
    /// comma-separated in the variable). Default: any. A pull of another registry fails as
    /// CannotPullContainerError without a connection (or runs the cached image, as the pull
    /// behaviour says).
    #[arg(
        long = "allowed-registry",
        env = "BERTH_ALLOWED_REGISTRIES",
        value_delimiter = ',',
        global = true
    )]
    allowed_registries: Vec<String>,
    /// Agent-wide registry credentials, in Docker's config.json format ("auths"); a container's
    /// repositoryCredentials win over them.
    #[arg(long, env = "BERTH_REGISTRY_AUTH_FILE", global = true)]
    registry_auth_file: Option<PathBuf>,
    /// CA certificates (PEM) trusted for registries besides the system's.
    #[arg(long, env = "BERTH_REGISTRY_CA_FILE", global = true)]
    registry_ca_file: Option<PathBuf>,
    /// Seconds between image cleanup passes (ECS_IMAGE_CLEANUP_INTERVAL); 0: no cleanup. The
    /// prefer-cached pull behaviour turns cleanup off, as in ECS.
    #[arg(
        long,
        env = "BERTH_IMAGE_CLEANUP_INTERVAL",
        default_value_t = 1800,
        global = true
    )]
    image_cleanup_interval: u64,
    /// Images pulled less than this many seconds ago stay (ECS_IMAGE_MINIMUM_CLEANUP_AGE).
    #[arg(
        long,
        env = "BERTH_IMAGE_MINIMUM_CLEANUP_AGE",
        default_value_t = 3600,
        global = true
    )]
    image_minimum_cleanup_age: u64,
    /// At most this many images removed per pass (ECS_NUM_IMAGES_DELETE_PER_CYCLE).
    #[arg(
        long,
        env = "BERTH_NUM_IMAGES_DELETE_PER_CYCLE",
        default_value_t = 5,
        global = true
    )]
    images_per_cleanup: usize,
    /// Image cleanup may remove images loaded by hand too (by default they stay).
    #[arg(long, env = "BERTH_IMAGE_CLEANUP_LOADED", global = true)]
    image_cleanup_loaded: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A size as Docker writes it (`256m`, `1g`, `65536`).
fn parse_size(s: &str) -> Result<u64, String> {
    berth_agent::logs::config::parse_size(s)
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{s:?} is not a size such as 256m, 1g or 65536"))
}

/// `a.b.c.d/n`, a network address (no host bits set).
fn parse_cidr(what: &str, s: &str) -> Result<(Ipv4Addr, u8), String> {
    let bad = || format!("{what} {s:?} is not an IPv4 network a.b.c.d/n");
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: Ipv4Addr = a.trim().parse().map_err(|_| bad())?;
    let prefix: u8 = p.trim().parse().ok().filter(|p| *p <= 32).ok_or_else(bad)?;
    let mask = u32::MAX.checked_shl(32 - prefix as u32).unwrap_or(0);
    if u32::from(addr) & !mask != 0 {
        return Err(format!(
            "{what} {s:?} has host bits set: the network is {}/{prefix}",
            Ipv4Addr::from(u32::from(addr) & mask)
        ));
    }
    Ok((addr, prefix))
}

fn contains(net: (Ipv4Addr, u8), a: Ipv4Addr) -> bool {
    let mask = u32::MAX.checked_shl(32 - net.1 as u32).unwrap_or(0);
    u32::from(a) & mask == u32::from(net.0)
}

fn overlap(a: (Ipv4Addr, u8), b: (Ipv4Addr, u8)) -> bool {
    contains(a, b.0) || contains(b, a.0)
}

/// A Linux interface name (1-15 bytes, no '/', ':' or white space).
fn interface_name(what: &str, s: &str) -> Result<String, String> {
    if s.is_empty() || s.len() > 15 || s.contains(['/', ':']) || s.contains(char::is_whitespace) {
        return Err(format!(
            "{what} {s:?} is not an interface name (1-15 characters, no '/', ':' or spaces)"
        ));
    }
    Ok(s.to_string())
}

/// `FIRST-LAST` host ports.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("--dynamic-ports {s:?} is not FIRST-LAST (ports 1-65535, FIRST <= LAST)");
    let (a, b) = s.split_once('-').ok_or_else(bad)?;
    let a: u16 = a.trim().parse().ok().filter(|p| *p > 0).ok_or_else(bad)?;
    let b: u16 = b.trim().parse().ok().ok_or_else(bad)?;
    if a > b {
        return Err(bad());
    }
    Ok((a, b))
}

/// One `--subnet` value.
fn parse_subnet(s: &str) -> Result<SubnetConfig, String> {
    let mut kv = std::collections::BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("--subnet {s:?}: {part:?} is not KEY=VALUE"))?;
        let k = k.trim();
        if !["name", "cidr", "bridge", "parent", "gateway", "range"].contains(&k) {
            return Err(format!(
                "--subnet {s:?}: unknown key {k:?} (name, cidr, bridge, parent, gateway, range)"
            ));
        }
        if kv.insert(k, v.trim()).is_some() {
            return Err(format!("--subnet {s:?}: {k} given twice"));
        }
    }
    let name = kv
        .get("name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| format!("--subnet {s:?}: name is missing"))?
        .to_string();
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(format!(
            "--subnet {s:?}: name {name:?} may hold only letters, digits, '-', '_' and '.'"
        ));
    }
    let cidr_s = kv
        .get("cidr")
        .ok_or_else(|| format!("--subnet {s:?}: cidr is missing"))?;
    let net = parse_cidr(&format!("--subnet {name}: cidr"), cidr_s)?;
    let inside = |what: &str, a: &str| -> Result<Ipv4Addr, String> {
        let addr: Ipv4Addr = a
            .parse()
            .map_err(|_| format!("--subnet {name}: {what} {a:?} is not an IPv4 address"))?;
        if !contains(net, addr) {
            return Err(format!(
                "--subnet {name}: {what} {addr} is outside {cidr_s}"
            ));
        }
        Ok(addr)
    };
    let backend = match (kv.get("bridge"), kv.get("parent")) {
        (Some(_), Some(_)) => {
            return Err(format!(
                "--subnet {name}: give bridge (a bridge on this host) or parent (the LAN's interface), not both"
            ))
        }
        (None, None) => {
            return Err(format!(
                "--subnet {name}: needs bridge=NAME (a bridge on this host) or parent=INTERFACE with range=FIRST-LAST (the LAN)"
            ))
        }
        (Some(b), None) => {
            if let Some(k) = ["gateway", "range"].iter().find(|k| kv.contains_key(*k)) {
                return Err(format!(
                    "--subnet {name}: {k} is for LAN subnets (parent=); a bridge subnet's gateway is the bridge"
                ));
            }
            SubnetBackend::Bridge {
                bridge: interface_name(&format!("--subnet {name}: bridge"), b)?,
            }
        }
        (None, Some(p)) => {
            let range = kv.get("range").ok_or_else(|| {
                format!("--subnet {name}: a LAN subnet needs range=FIRST-LAST (the addresses tasks may take)")
            })?;
            let (a, b) = range.split_once('-').ok_or_else(|| {
                format!("--subnet {name}: range {range:?} is not FIRST-LAST")
            })?;
            let (first, last) = (inside("range start", a.trim())?, inside("range end", b.trim())?);
            if first > last {
                return Err(format!(
                    "--subnet {name}: range {range:?} starts after it ends"
                ));
            }
            let gateway = kv.get("gateway").map(|g| inside("gateway", g)).transpose()?;
            if gateway.is_some_and(|g| first <= g && g <= last) {
                return Err(format!(
                    "--subnet {name}: gateway is inside range {range}"
                ));
            }
            SubnetBackend::Lan {
                parent: interface_name(&format!("--subnet {name}: parent"), p)?,
                gateway,
                first,
                last,
            }
        }
    };
    Ok(SubnetConfig {
        name,
        cidr: net.0,
        prefix: net.1,
        backend,
    })
}

/// The agent's network settings from its flags; an error names the bad flag and part.
fn network_config(
    bridge: &str,
    bridge_cidr: &str,
    dynamic_ports: &str,
    subnets: &[String],
    fallback_dns: &[String],
) -> Result<NetworkConfig, String> {
    let bridge = interface_name("--bridge", bridge)?;
    let (bridge_net, bridge_prefix) = parse_cidr("--bridge-cidr", bridge_cidr)?;
    if bridge_prefix > 30 {
        return Err(format!(
            "--bridge-cidr {bridge_cidr:?} is too small for a bridge and its containers"
        ));
    }
    let dynamic_ports = parse_port_range(dynamic_ports)?;
    let mut parsed: Vec<SubnetConfig> = Vec::new();
    for s in subnets.iter().filter(|s| !s.trim().is_empty()) {
        let sub = parse_subnet(s)?;
        if parsed.iter().any(|p| p.name == sub.name) {
            return Err(format!("--subnet {}: the name is given twice", sub.name));
        }
        parsed.push(sub);
    }
    if parsed.is_empty() {
        parsed.push(SubnetConfig {
            name: "subnet-local".into(),
            cidr: Ipv4Addr::new(172, 30, 0, 0),
            prefix: 16,
            backend: SubnetBackend::Bridge {
                bridge: "berth-vpc0".into(),
            },
        });
    }
    for (i, a) in parsed.iter().enumerate() {
        if let SubnetBackend::Bridge { bridge: b } = &a.backend {
            if *b == bridge {
                return Err(format!(
                    "--subnet {}: bridge {b} is the bridge-mode bridge (--bridge)",
                    a.name
                ));
            }
            if overlap((a.cidr, a.prefix), (bridge_net, bridge_prefix)) {
                return Err(format!(
                    "--subnet {}: {}/{} overlaps --bridge-cidr {bridge_cidr}",
                    a.name, a.cidr, a.prefix
                ));
            }
        }
        for b in &parsed[i + 1..] {
            if overlap((a.cidr, a.prefix), (b.cidr, b.prefix)) {
                return Err(format!(
                    "--subnet {} and --subnet {}: their networks overlap",
                    a.name, b.name
                ));
            }
            if let (SubnetBackend::Bridge { bridge: x }, SubnetBackend::Bridge { bridge: y }) =
                (&a.backend, &b.backend)
            {
                if x == y {
                    return Err(format!(
                        "--subnet {} and --subnet {}: both on bridge {x}",
                        a.name, b.name
                    ));
                }
            }
        }
    }
    let fallback_dns = fallback_dns
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.parse::<Ipv4Addr>()
                .map_err(|_| format!("--dns {d:?} is not an IPv4 address"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(NetworkConfig {
        bridge,
        bridge_cidr: bridge_net,
        bridge_prefix,
        dynamic_ports,
        reserved_tcp_ports: Vec::new(),
        subnets: parsed,
        fallback_dns,
    })
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Images in containerd's store.
    Image {
        #[command(subcommand)]
        action: ImageCommand,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCommand {
    /// Imports an OCI image-layout archive (what `ctr images import` takes) or a `docker save`
    /// archive and unpacks it. Loaded images count as present: only the `always` pull
    /// behaviour pulls them again.
    Load {
        /// The archive.
        file: PathBuf,
    },
    /// Pulls an image as a task would (with the registry flags), showing per-layer progress.
    Pull {
        /// The image reference (`nginx:alpine`, `host:5000/app:1`, `app@sha256:…`).
        reference: String,
    },
    /// Lists the images of the namespace: name, digest, size, source, last use.
    Ls,
    /// Removes image records; containerd's GC frees what nothing else holds.
    Rm {
        /// The images.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn main() {
    if let Err(e) = berth_proto::config::apply_env_file(&berth_proto::config::path_from_args(
        "BERTH_AGENT_CONFIG",
        "/etc/berth/agent.conf",
    )) {
        eprintln!("berth-agent: config: {e}");
        std::process::exit(2);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-agent: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    let result = rt.block_on(async {
        match &args.command {
            Some(Command::Image {
                action: ImageCommand::Load { file },
            }) => load(&args, file).await.map(|()| 0),
            Some(Command::Image {
                action: ImageCommand::Pull { reference },
            }) => pull(&args, reference).await.map(|()| 0),
            Some(Command::Image {
                action: ImageCommand::Ls,
            }) => list_images(&args).await.map(|()| 0),
            Some(Command::Image {
                action: ImageCommand::Rm { names },
            }) => remove_images(&args, names).await,
            None => serve(args).await,
        }
    });
    match result {
        Ok(0) => {}
        Ok(code) => {
            // Leave the tasks' containers running: only this process ends.
            drop(rt);
            std::process::exit(code);
        }
        Err(e) => {
            eprintln!("berth-agent: {e:#}");
            std::process::exit(1);
        }
    }
}

async fn connect(args: &Args) -> anyhow::Result<(Containerd, String)> {
    Containerd::connect(&args.containerd_socket, &args.containerd_namespace)
        .await
        .with_context(|| {
            format!(
                "cannot reach containerd at {}",
                args.containerd_socket.display()
            )
        })
}

async fn load(args: &Args, file: &std::path::Path) -> anyhow::Result<()> {
    let (cd, _) = connect(args).await?;
    let path = file.to_path_buf();
    let archive =
        tokio::task::spawn_blocking(move || berth_agent::runtime::image::read_archive(&path))
            .await??;
    for name in cd.import(&archive).await? {
        println!("unpacked image: {name}");
    }
    Ok(())
}

/// The registry client the flags describe (issue 11).
fn registry_client(args: &Args) -> anyhow::Result<berth_agent::images::registry::RegistryClient> {
    use berth_agent::images::registry::{DockerConfig, RegistryClient, RegistryConfig};
    let auth = match &args.registry_auth_file {
        Some(p) => DockerConfig::load(p).context("--registry-auth-file")?,
        None => DockerConfig::default(),
    };
    let insecure = args
        .insecure_registries
        .iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect();
    RegistryClient::new(RegistryConfig {
        insecure,
        auth,
        ca_file: args.registry_ca_file.clone(),
        inactivity_timeout: Duration::from_secs(args.image_pull_inactivity_timeout),
    })
    .context("setting up the registry client")
}

fn images_policy(args: &Args) -> berth_agent::images::Images {
    berth_agent::images::Images::new(
        args.image_pull_behavior,
        Duration::from_secs(args.image_pull_timeout),
    )
    .with_allowed_registries(allowed_registries(args))
}

fn allowed_registries(args: &Args) -> Vec<String> {
    args.allowed_registries
        .iter()
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
        .collect()
}

async fn pull(args: &Args, reference: &str) -> anyhow::Result<()> {
    use berth_agent::images::{PullPhase, PullState};
    let (cd, _) = connect(args).await?;
    let cd = Arc::new(cd.with_registry(registry_client(args)?));
    // An operator's pull pulls, whatever the tasks' behaviour.
    let policy = berth_agent::images::Images::new(
        berth_agent::images::PullBehavior::Always,
        Duration::from_secs(args.image_pull_timeout),
    )
    .with_allowed_registries(allowed_registries(args));
    let (tx, mut rx) = tokio::sync::watch::channel(PullState::default());
    let show = async {
        let mut last = (PullPhase::Resolving, 0u32, 0u64);
        while rx.changed().await.is_ok() {
            let p = *rx.borrow_and_update();
            // A line per phase, per layer done, and per 10 MB.
            let now = (p.phase, p.layers_done, p.bytes_done / 10_000_000);
            if now != last {
                last = now;
                eprintln!(
                    "{}: {} layer {}/{}, {:.1} of {:.1} MB",
                    reference,
                    p.phase.as_str(),
                    p.layers_done,
                    p.layers_total,
                    p.bytes_done as f64 / 1e6,
                    p.bytes_total as f64 / 1e6
                );
            }
        }
        std::future::pending::<()>().await
    };
    let ensured = tokio::select! {
        r = policy.ensure(cd, reference, None, &tx) => r?,
        _ = show => unreachable!("the progress printer never ends"),
    };
    if let Some(why) = ensured.fell_back {
        eprintln!("{reference}: the pull failed ({why}); the cached image stays");
    }
    println!(
        "pulled image: {} {}",
        ensured.image.name, ensured.image.digest
    );
    Ok(())
}

async fn list_images(args: &Args) -> anyhow::Result<()> {
    use berth_agent::runtime::Runtime;
    let (cd, _) = connect(args).await?;
    let mut images = cd.list_images().await?;
    images.sort_by(|a, b| a.name.cmp(&b.name));
    println!("NAME\tDIGEST\tSIZE\tSOURCE\tLAST-USED");
    for i in images {
        let size = match cd.image_size(&i.name).await {
            Ok(n) => n.to_string(),
            Err(e) => {
                eprintln!("berth-agent: image {}: {e}", i.name);
                "?".into()
            }
        };
        let last = i
            .last_used
            .map(berth_agent::runtime::pull::rfc3339)
            .unwrap_or_else(|| "-".into());
        println!(
            "{}\t{}\t{}\t{}\t{}",
            i.name,
            i.digest,
            size,
            i.source.as_str(),
            last
        );
    }
    Ok(())
}

async fn remove_images(args: &Args, names: &[String]) -> anyhow::Result<i32> {
    use berth_agent::runtime::Runtime;
    let (cd, _) = connect(args).await?;
    let mut code = 0;
    for n in names {
        let name = berth_agent::runtime::image::normalize(n);
        match cd.remove_image(&name).await {
            Ok(()) => println!("removed image: {name}"),
            Err(e) if e.is_not_found() => {
                eprintln!("berth-agent: image {name}: not found");
                code = 1;
            }
            Err(e) => {
                eprintln!("berth-agent: image {name}: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn mem_total_mib() -> anyhow::Result<i64> {
    let text = std::fs::read_to_string("/proc/meminfo").context("reading /proc/meminfo")?;
    let kb: i64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no MemTotal in /proc/meminfo")?;
    Ok(kb / 1024)
}

fn int_resource(name: &str, v: i64) -> Resource {
    Resource {
        name: name.into(),
        r#type: "INTEGER".into(),
        integer_value: v as i32,
        ..Default::default()
    }
}

/// `berth.subnet.<name>` = `bridge:<cidr>` or `lan:<cidr>:<first>-<last>` for each subnet.
fn subnet_attributes(subnets: &[SubnetConfig]) -> Vec<Attribute> {
    subnets
        .iter()
        .map(|s| attr(&network::subnet_attribute(&s.name), &s.attribute_value()))
        .collect()
}

fn attr(name: &str, value: &str) -> Attribute {
    Attribute {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

/// The attributes ECS's agent advertises for the platform, under ECS's names, and the
/// capabilities this agent has: placement matches a task's runtimePlatform and
/// requiresAttributes against them, so a task never lands on a host that must refuse it.
fn platform_attributes(rust_arch: &str, allow_privileged: bool) -> Vec<Attribute> {
    let arch = match rust_arch {
        "aarch64" => "arm64",
        other => other,
    };
    let mut out = vec![
        attr("ecs.os-type", "linux"),
        attr("ecs.os-family", "LINUX"),
        attr("ecs.cpu-architecture", arch),
    ];
    let capability = |name: &str| Attribute {
        name: name.into(),
        ..Default::default()
    };
    // Task-level cpu and memory become the task cgroup's limits.
    out.push(capability("ecs.capability.task-cpu-mem-limit"));
    if allow_privileged {
        out.push(capability(
            "com.amazonaws.ecs.capability.privileged-container",
        ));
        // The name earlier Berth controllers require.
        out.push(capability("ecs.capability.privileged-container"));
    }
    out
}

/// Runs the agent; the exit status: 0, or `link::EXIT_TERMINAL` once the instance was
/// deregistered (the saved instance ARN is then forgotten).
async fn serve(args: Args) -> anyhow::Result<i32> {
    let (runtime, version) = connect(&args).await?;
    // Issue 10: containers' output through FIFOs into spool files, delivered per log driver.
    let logs = berth_agent::logs::service::LogService::start(args.log_spool_max_bytes);
    let (capture_events, capture_gate) = logs.capture_listeners();
    let capture = berth_agent::logs::capture::Capture::new(
        args.log_pipe_size
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
    )
    .with_listeners(capture_events, capture_gate);
    tracing::info!(
        pipe_size = capture.pipe_size(),
        spool_max = args.log_spool_max_bytes,
        "container output capture"
    );
    let runtime = runtime
        .with_capture(Arc::new(capture))
        .with_registry(registry_client(&args)?);
    let dir = DataDir(args.data_dir.clone());
    std::fs::create_dir_all(&dir.0).with_context(|| format!("creating {}", dir.0.display()))?;
    let state: AgentState = read_json(&dir.agent())?.unwrap_or_default();
    let reporter = Arc::new(Reporter::new(dir.clone(), state));
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as i64;
    let memory = mem_total_mib()? - args.reserved_memory;
    anyhow::ensure!(
        memory > 0,
        "--reserved-memory {} leaves no memory for tasks",
        args.reserved_memory
    );
    let ports: Vec<String> = args.reserved_ports.iter().map(|p| p.to_string()).collect();
    let resources = vec![
        int_resource("CPU", cores * 1024),
        int_resource("MEMORY", memory),
        Resource {
            name: "PORTS".into(),
            r#type: "STRINGSET".into(),
            string_set_value: ports,
            ..Default::default()
        },
        Resource {
            name: "PORTS_UDP".into(),
            r#type: "STRINGSET".into(),
            ..Default::default()
        },
    ];
    let mut attributes = platform_attributes(std::env::consts::ARCH, args.allow_privileged);
    attributes.push(attr("ecs.capability.containerd", &version));
    if let Some(az) = &args.availability_zone {
        attributes.push(attr("ecs.availability-zone", az));
    }
    for a in &args.attributes {
        let (k, v) = a
            .split_once('=')
            .with_context(|| format!("--attribute '{a}': expected NAME=VALUE"))?;
        attributes.push(attr(k.trim(), v.trim()));
    }
    let net_config = network_config(
        &args.bridge,
        &args.bridge_cidr,
        &args.dynamic_ports,
        &args.subnets,
        &args.fallback_dns,
    )
    .map_err(anyhow::Error::msg)?;
    let net_config = network::NetworkConfig {
        reserved_tcp_ports: args.reserved_ports.clone(),
        ..net_config
    };
    let fallback_dns = net_config.fallback_dns.clone();
    let task_network: Arc<dyn network::Network> = Arc::new(
        network::linux::LinuxNetwork::new(net_config).context("setting up task networking")?,
    );
    // Placement of awsvpc tasks picks instances that have the subnet.
    attributes.extend(subnet_attributes(&task_network.subnets()));
    let volumes =
        berth_agent::volumes::VolumeConfig::from_flags(&args.allowed_host_paths, &args.nfs_volumes)
            .map_err(anyhow::Error::msg)?;
    attributes.extend(volumes.attributes().iter().map(|(k, v)| attr(k, v)));
    let default_nofile = berth_agent::runtime::spec::grantable_nofile();
    if default_nofile < berth_agent::runtime::spec::DEFAULT_NOFILE {
        tracing::warn!(
            default_nofile,
            "the agent lacks CAP_SYS_RESOURCE: containers without a nofile ulimit get its own open-file limit instead of Docker's 1048576"
        );
    }
    // Past this without an answer a task's secrets count as unavailable (ECS's
    // ResourceInitializationError); the link reconnects meanwhile if it can.
    let link_secrets = Arc::new(berth_agent::secrets::LinkSecrets::new(Duration::from_secs(
        60,
    )));
    let cgroups = Arc::new(HostCgroups::new(&args.cgroup_parent));
    let sampler = Arc::new(berth_agent::stats::Sampler::new(cgroups.clone()));
    let metadata = Arc::new(berth_agent::metadata::Endpoint::new(
        berth_agent::metadata::load_key(&args.data_dir)?,
        args.metadata_address,
        &args.cluster,
        args.availability_zone.clone(),
        sampler.clone(),
    ));
    // Bound before any task starts, so their variables name the address it has.
    let _metadata_host = AbortOnDrop(
        metadata
            .serve_host()
            .await
            .context("the task metadata endpoint (--metadata-address)")?,
    );
    let runtime = Arc::new(runtime);
    let runtime_for_cleanup = runtime.clone();
    let images = Arc::new(images_policy(&args));
    let engine = Engine::start(
        runtime,
        cgroups,
        task_network,
        reporter.clone(),
        EngineConfig {
            data_dir: dir,
            cluster: args.cluster.clone(),
            stop_timeout: Duration::from_secs(args.container_stop_timeout),
            timeouts: Default::default(),
            security: SecurityOptions {
                allow_privileged: args.allow_privileged,
                pids_limit: (args.pids_limit > 0).then_some(args.pids_limit),
                force_no_new_privileges: args.no_new_privileges,
                default_nofile,
                privileged_caps: berth_agent::runtime::spec::bounding_caps(),
                // Devices present at start; a device plugged in later needs an agent restart.
                privileged_devices: if args.allow_privileged {
                    berth_agent::runtime::spec::host_devices(std::path::Path::new("/dev"))
                } else {
                    Vec::new()
                },
                init_path: args.init_path.clone(),
            },
            secrets: link_secrets.clone(),
            boot_id: boot_id(),
            fallback_dns,
            task_cleanup_wait: args.task_cleanup_wait,
            metadata: Some(metadata.clone()),
            volumes,
            logs: Some(logs.clone()),
            images: images.clone(),
        },
    )?;
    // As the ECS agent: prefer-cached turns image cleanup off, so the cached images it relies
    // on are never removed.
    let cleanup_interval =
        if args.image_pull_behavior == berth_agent::images::PullBehavior::PreferCached {
            if args.image_cleanup_interval > 0 {
                tracing::info!(
                    "image pull behaviour prefer-cached: image cleanup is off, as ECS has it"
                );
            }
            0
        } else {
            args.image_cleanup_interval
        };
    let _image_cleanup = AbortOnDrop(tokio::spawn({
        let engine = engine.clone();
        berth_agent::images::cleanup::run_forever(
            runtime_for_cleanup,
            images.clone(),
            berth_agent::images::cleanup::CleanupConfig {
                interval: Duration::from_secs(cleanup_interval),
                minimum_age: Duration::from_secs(args.image_minimum_cleanup_age),
                per_cycle: args.images_per_cleanup,
                include_loaded: args.image_cleanup_loaded,
            },
            move || engine.images_in_use(),
        )
    }));
    logs.set_stopper({
        let engine = engine.clone();
        Arc::new(move |task_arn: &str, reason: String| {
            engine.stop_task(task_arn, reason, "TaskFailedToStart")
        })
    });
    metadata.set_source(Arc::new(engine.clone()));
    let _stats = AbortOnDrop(tokio::spawn(berth_agent::stats::report_forever(
        sampler,
        args.stats_interval,
        {
            let engine = engine.clone();
            move || engine.running_records()
        },
        reporter.clone(),
    )));
    // Containers no task record holds are reported (never stopped unconfirmed).
    if let Err(e) = engine.report_unrecorded().await {
        tracing::warn!(error = %e, "cannot list Berth's containers; containers with no task record go unreported until the next start");
    }
    tracing::info!(cluster = %args.cluster, containerd = %version, "berth-agent started");
    let tls = if args.controller.starts_with("https://") {
        let files = TlsFiles::new(&args.data_dir);
        let registration = RegisterContainerInstanceRequest {
            cluster: args.cluster.clone(),
            total_resources: resources.clone(),
            attributes: attributes.clone(),
            version_info: Some(version_info(&version)),
            ..Default::default()
        };
        if let Some(arn) = enroll(&args, &files, registration).await? {
            reporter
                .set_identity(&arn, &args.cluster)
                .await
                .context("saving the instance ARN")?;
        }
        Some(files)
    } else {
        None
    };
    let renewal = tls
        .clone()
        .map(|files| AbortOnDrop(tokio::spawn(files.renew_forever(args.controller.clone()))));
    let reg = Registration {
        controller: args.controller.clone(),
        cluster: args.cluster.clone(),
        resources,
        attributes,
        version_info: version_info(&version),
        heartbeat: berth_proto::link::HEARTBEAT_INTERVAL,
        secrets: link_secrets.clone(),
        tls: tls.clone(),
    };
    tokio::select! {
        terminal = session::run(reg, engine, reporter) => {
            if let Err(e) = &terminal.forgotten {
                tracing::error!(error = %e, "cannot forget the instance ARN; remove agent.json from the data dir before starting again");
            }
            drop(renewal);
            // Revoked with the instance: a new start must enroll anew.
            if let Some(Err(e)) = tls.as_ref().map(TlsFiles::forget_identity) {
                tracing::error!(error = %e, "cannot remove the revoked client certificate");
            }
            tracing::error!(reason = %terminal.reason, exit = berth_proto::link::EXIT_TERMINAL,
                "container instance deregistered; berth-agent stops for good (a new start registers a new instance); tasks keep running");
            return Ok(berth_proto::link::EXIT_TERMINAL);
        }
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => { s.recv().await; }
                Err(_) => std::future::pending::<()>().await,
            }
        } => {}
    }
    // Containers keep running: a restarted agent picks them up from its data dir.
    tracing::info!("berth-agent exiting; tasks keep running");
    Ok(0)
}

/// A flag value that is a secret: its Debug form hides it.
#[derive(Clone)]
struct Redacted(String);

impl std::str::FromStr for Redacted {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Redacted(s.to_string()))
    }
}

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

fn version_info(containerd: &str) -> VersionInfo {
    VersionInfo {
        agent_version: Some(env!("CARGO_PKG_VERSION").into()),
        agent_hash: None,
        docker_version: Some(format!("containerd {containerd}")),
    }
}

/// Pins the controller's CA and, without a client certificate, enrolls with the activation;
/// returns the instance ARN Enroll registered. A refusal (or nothing to enroll or pin with)
/// ends the agent with the reason; an unreachable controller is retried.
async fn enroll(
    args: &Args,
    files: &TlsFiles,
    registration: RegisterContainerInstanceRequest,
) -> anyhow::Result<Option<String>> {
    let e = Enrollment {
        activation_id: args.activation_id.clone().filter(|s| !s.is_empty()),
        activation_code: args
            .activation_code
            .as_ref()
            .map(|c| c.0.clone())
            .filter(|s| !s.is_empty()),
        ca_fingerprint: args.ca_fingerprint.clone().filter(|s| !s.is_empty()),
        ca_file: args.ca_file.clone(),
    };
    let mut backoff = session::Backoff::default();
    loop {
        let step = async {
            files.ensure_ca(&e, &args.controller).await?;
            files
                .ensure_identity(&e, &args.controller, &args.cluster, registration.clone())
                .await
        };
        match step.await {
            Ok(arn) => return Ok(arn),
            Err(err) if err.is_terminal() => return Err(err.into()),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %err, delay_ms = delay.as_millis() as u64, "enrollment failed; retrying");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// This boot's id, which tells a task recovered after a reboot from one recovered after an agent
/// restart (see `TaskRecord::boot_id`).
fn boot_id() -> Option<String> {
    match std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        Ok(id) if !id.trim().is_empty() => Some(id.trim().to_string()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the boot id: tasks gone after a reboot will be reported as vanished containers");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &[Attribute]) -> Vec<(&str, Option<&str>)> {
        a.iter()
            .map(|a| (a.name.as_str(), a.value.as_deref()))
            .collect()
    }

    #[test]
    fn the_platform_is_advertised_under_ecs_names() {
        let a = platform_attributes("aarch64", false);
        let n = names(&a);
        assert!(n.contains(&("ecs.cpu-architecture", Some("arm64"))));
        assert!(n.contains(&("ecs.os-type", Some("linux"))));
        assert!(n.contains(&("ecs.os-family", Some("LINUX"))));
        assert!(!n.iter().any(|(k, _)| k.contains("privileged-container")));
        let a = platform_attributes("x86_64", true);
        let n = names(&a);
        assert!(n.contains(&("ecs.cpu-architecture", Some("x86_64"))));
        assert!(n.contains(&("com.amazonaws.ecs.capability.privileged-container", None)));
    }

    #[test]
    fn security_options_default_to_refusing_privileged_with_a_pids_limit() {
        let a = Args::try_parse_from(["berth-agent"]).unwrap();
        assert!(!a.allow_privileged && !a.no_new_privileges);
        assert_eq!(a.pids_limit, 4096);
        let a = Args::try_parse_from([
            "berth-agent",
            "--allow-privileged",
            "--no-new-privileges",
            "--pids-limit",
            "0",
        ])
        .unwrap();
        assert!(a.allow_privileged && a.no_new_privileges);
        assert_eq!(a.pids_limit, 0);
        assert!(Args::try_parse_from(["berth-agent", "--pids-limit=-5"]).is_err());
        let a = Args::try_parse_from(["berth-agent", "--activation-code", "s3cr3t-code"]).unwrap();
        assert!(!format!("{a:?}").contains("s3cr3t-code"));
    }

    fn cfg(subnets: &[&str]) -> Result<NetworkConfig, String> {
        let subnets: Vec<String> = subnets.iter().map(|s| s.to_string()).collect();
        network_config(
            "berth0",
            "172.31.0.0/16",
            "49153-65535",
            &subnets,
            &["8.8.8.8".into()],
        )
    }

    #[test]
    fn network_defaults_are_the_common_ones() {
        let a = Args::try_parse_from(["berth-agent"]).unwrap();
        let c = network_config(
            &a.bridge,
            &a.bridge_cidr,
            &a.dynamic_ports,
            &a.subnets,
            &a.fallback_dns,
        )
        .unwrap();
        assert_eq!(c.bridge, "berth0");
        assert_eq!(
            (c.bridge_cidr, c.bridge_prefix),
            (Ipv4Addr::new(172, 31, 0, 0), 16)
        );
        assert_eq!(c.dynamic_ports, (49153, 65535));
        assert_eq!(c.subnets.len(), 1);
        assert_eq!(c.subnets[0].name, "subnet-local");
        assert_eq!(c.subnets[0].attribute_value(), "bridge:172.30.0.0/16");
        assert_eq!(
            c.fallback_dns,
            vec![Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)]
        );
    }

    #[test]
    fn subnets_parse_and_are_reported_as_attributes() {
        let a = Args::try_parse_from([
            "berth-agent",
            "--subnet",
            "name=subnet-x,cidr=10.9.0.0/24,bridge=bx0",
            "--subnet",
            "name=lan1,cidr=192.168.5.0/24,parent=eth0,gateway=192.168.5.1,range=192.168.5.100-192.168.5.150",
        ])
        .unwrap();
        let c = network_config(
            &a.bridge,
            &a.bridge_cidr,
            &a.dynamic_ports,
            &a.subnets,
            &a.fallback_dns,
        )
        .unwrap();
        let attrs = subnet_attributes(&c.subnets);
        let n = names(&attrs);
        assert_eq!(
            n,
            vec![
                ("berth.subnet.subnet-x", Some("bridge:10.9.0.0/24")),
                (
                    "berth.subnet.lan1",
                    Some("lan:192.168.5.0/24:192.168.5.100-192.168.5.150")
                ),
            ]
        );
        assert_eq!(
            c.subnets[1].backend,
            SubnetBackend::Lan {
                parent: "eth0".into(),
                gateway: Some(Ipv4Addr::new(192, 168, 5, 1)),
                first: Ipv4Addr::new(192, 168, 5, 100),
                last: Ipv4Addr::new(192, 168, 5, 150),
            }
        );
    }

    #[test]
    fn bad_network_flags_name_the_bad_part() {
        for (subnets, word) in [
            (vec!["name=a,cidr=10.9.0.0/33,bridge=b"], "cidr"),
            (vec!["name=a,cidr=10.9.0.1/24,bridge=b"], "host bits"),
            (vec!["name=a,cidr=10.9.0.0/24"], "bridge=NAME"),
            (
                vec!["name=a,cidr=10.9.0.0/24,bridge=b,parent=eth0"],
                "not both",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,parent=eth0"],
                "range=FIRST-LAST",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,parent=eth0,range=10.9.0.50-10.9.0.10"],
                "starts after",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,parent=eth0,range=10.9.0.10-10.9.1.10"],
                "range end 10.9.1.10 is outside",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,bridge=b,range=10.9.0.1-10.9.0.2"],
                "range is for LAN",
            ),
            (
                vec![
                    "name=a,cidr=10.9.0.0/24,bridge=b",
                    "name=a,cidr=10.8.0.0/24,bridge=c",
                ],
                "name is given twice",
            ),
            (
                vec![
                    "name=a,cidr=10.9.0.0/16,bridge=b",
                    "name=c,cidr=10.9.1.0/24,bridge=c",
                ],
                "overlap",
            ),
            (
                vec!["name=a,cidr=172.31.5.0/24,bridge=b"],
                "overlaps --bridge-cidr",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,bridge=berth0"],
                "bridge-mode bridge",
            ),
            (
                vec!["name=a,cidr=10.9.0.0/24,bridge=b,colour=red"],
                "unknown key",
            ),
            (vec!["cidr=10.9.0.0/24,bridge=b"], "name is missing"),
            (
                vec!["name=a,cidr=10.9.0.0/24,bridge=waytoolongbridgename"],
                "interface name",
            ),
        ] {
            let e = cfg(&subnets).unwrap_err();
            assert!(e.contains(word), "{subnets:?}: {e}");
        }
        let e = network_config("berth0", "172.31.0.0/16", "60000-50000", &[], &[]).unwrap_err();
        assert!(e.contains("--dynamic-ports"), "{e}");
        let e = network_config(
            "berth0",
            "172.31.0.0/16",
            "49153-65535",
            &[],
            &["8.8.8".into()],
        )
        .unwrap_err();
        assert!(e.contains("--dns \"8.8.8\""), "{e}");
        let e = network_config("berth0", "172.31.0/16", "49153-65535", &[], &[]).unwrap_err();
        assert!(e.contains("--bridge-cidr"), "{e}");
    }
}
