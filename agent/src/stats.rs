//! Task and container stats (issue 9): cgroup counters ([`crate::cgroups::Cgroups::stats`]),
//! the network counters of the task's namespaces, and the host's CPU time, shaped two ways:
//! Docker's stats JSON for the metadata endpoint's `/stats` and `/task/stats` (as ECS serves
//! them), and the link's [`TaskStats`] the agent reports every `--stats-interval`.
//!
//! Samples are kept in memory only. The periodic sample is also the `precpu_stats` of the
//! endpoint's next answer, as in ECS, whose stats engine samples on its own schedule.

use crate::cgroups::{CgroupError, CgroupStats, Cgroups};
use crate::network::{Mode, TaskNetworkState, NETNS_DIR};
use crate::state::TaskRecord;
use berth_proto::status::ContainerStatus;
use berth_proto::v1::{ContainerStats, NetworkInterfaceStats, ResourceStats, TaskStats};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

/// USER_HZ, the unit of /proc/stat (100 on every Linux ABI the agent runs on).
const USER_HZ: u64 = 100;
/// How long reading a namespace's counters may take.
const NETNS_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a sample could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// A cgroup could not be read.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// A network namespace's counters could not be read.
    #[error("network counters of namespace {ns}: {source}")]
    Netns {
        /// The namespace.
        ns: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// The host's CPU time, ns (Docker's `system_cpu_usage`: the sum of /proc/stat's first line),
/// and the number of online CPUs.
pub fn host_cpu() -> (u64, u32) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    parse_proc_stat(&text)
}

fn parse_proc_stat(text: &str) -> (u64, u32) {
    let mut total = 0;
    let mut cpus = 0u32;
    for l in text.lines() {
        let mut f = l.split_whitespace();
        match f.next() {
            Some("cpu") => {
                // user nice system idle iowait irq softirq steal (guest time is in user).
                total = f
                    .take(8)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>()
                    .saturating_mul(1_000_000_000 / USER_HZ);
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus.max(1))
}

/// The host's MemTotal in bytes (Docker's memory limit of a container without one).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let rest = l.strip_prefix("MemTotal:")?;
                rest.split_whitespace().next()?.parse::<u64>().ok()
            })
        })
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The interfaces of /proc/net/dev's text, loopback left out (as Docker's stats).
pub fn parse_net_dev(text: &str) -> Vec<NetworkInterfaceStats> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if name == "lo" {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if v.len() < 12 {
                return None;
            }
            Some(NetworkInterfaceStats {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_packets: v[1],
                rx_errors: v[2],
                rx_dropped: v[3],
                tx_bytes: v[8],
                tx_packets: v[9],
                tx_errors: v[10],
                tx_dropped: v[11],
            })
        })
        .collect()
}

/// The counters of namespace `ns` (/run/netns/NAME): read on a thread of its own that enters
/// it (/proc/thread-self/net/dev shows the reading thread's namespace; /sys/class/net would
/// show the host's), which then ends.
pub async fn netns_counters(ns: &str) -> Result<Vec<NetworkInterfaceStats>, StatsError> {
    let path = format!("{NETNS_DIR}/{ns}");
    let err = |source| StatsError::Netns {
        ns: ns.to_string(),
        source,
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-netstats".into())
        .spawn(move || {
            let read = || -> std::io::Result<String> {
                let f = std::fs::File::open(&path)?;
                nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                std::fs::read_to_string("/proc/thread-self/net/dev")
            };
            let _ = tx.send(read());
        })
        .map_err(err)?;
    match tokio::time::timeout(NETNS_READ_TIMEOUT, rx).await {
        Ok(Ok(r)) => r.map(|t| parse_net_dev(&t)).map_err(err),
        Ok(Err(_)) => Err(err(std::io::Error::other("the reading thread failed"))),
        Err(_) => Err(err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer in time",
        ))),
    }
}

/// The namespace a container's counters come from: none in host mode (as ECS) or when the
/// task's network is not up.
fn namespace_of(net: Option<&TaskNetworkState>, container: &str) -> Option<String> {
    let net = net?;
    if net.mode == Mode::Host {
        return None;
    }
    net.namespace_of(container).map(|n| n.name.clone())
}

/// One container's raw sample.
#[derive(Debug, Clone)]
pub struct ContainerSample {
    /// Its name.
    pub name: String,
    /// Its runtime id.
    pub runtime_id: String,
    /// Its cgroup's counters.
    pub cgroup: CgroupStats,
    /// Its namespace's interfaces (`None`: host mode or no network).
    pub networks: Option<Vec<NetworkInterfaceStats>>,
}

/// One task's raw sample.
#[derive(Debug, Clone)]
pub struct TaskSample {
    /// The task.
    pub task_arn: String,
    /// When it was read.
    pub read_at: SystemTime,
    /// The host's CPU time then, ns.
    pub system_cpu_ns: u64,
    /// Online CPUs.
    pub online_cpus: u32,
    /// The task cgroup's counters (`None` when unreadable).
    pub task: Option<CgroupStats>,
    /// The running containers'.
    pub containers: Vec<ContainerSample>,
}

/// Samples tasks and remembers the last periodic sample of each (the `precpu` of the next).
pub struct Sampler {
    cgroups: Arc<dyn Cgroups>,
    last: Mutex<HashMap<String, Arc<TaskSample>>>,
}

/// Runs a cgroup read on the blocking pool, bounded.
async fn cgroup_stats(
    cgroups: &Arc<dyn Cgroups>,
    task_id: &str,
    container: Option<&str>,
) -> Result<CgroupStats, StatsError> {
    let (c, id, name) = (
        cgroups.clone(),
        task_id.to_string(),
        container.map(str::to_string),
    );
    let job = tokio::task::spawn_blocking(move || c.stats(&id, name.as_deref()));
    match tokio::time::timeout(NETNS_READ_TIMEOUT, job).await {
        Ok(Ok(r)) => r.map_err(StatsError::from),
        Ok(Err(e)) => Err(StatsError::Netns {
            ns: "-".into(),
            source: std::io::Error::other(e.to_string()),
        }),
        Err(_) => Err(StatsError::Cgroup(CgroupError::Read {
            file: task_id.into(),
            source: std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"),
        })),
    }
}

impl Sampler {
    /// A sampler reading through `cgroups`.
    pub fn new(cgroups: Arc<dyn Cgroups>) -> Self {
        Self {
            cgroups,
            last: Mutex::new(HashMap::new()),
        }
    }

    /// Reads the task's counters now (running containers only; a container whose cgroup is
    /// gone is left out).
    pub async fn sample(&self, rec: &TaskRecord) -> TaskSample {
        let task_id = crate::engine::task_id(&rec.task.task_arn);
        let (system_cpu_ns, online_cpus) = host_cpu();
        let read_at = SystemTime::now();
        let task = cgroup_stats(&self.cgroups, &task_id, None).await.ok();
        let net = rec.network.as_ref().filter(|_| !rec.network_released);
        let mut containers = Vec::new();
        let mut ns_cache: HashMap<String, Vec<NetworkInterfaceStats>> = HashMap::new();
        for c in &rec.state.containers {
            if ContainerStatus::parse(&c.last_status) != Ok(ContainerStatus::Running) {
                continue;
            }
            let Some(runtime_id) = c.runtime_id.clone() else {
                continue;
            };
            let cgroup = match cgroup_stats(&self.cgroups, &task_id, Some(&c.name)).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!(task = %task_id, container = %c.name, error = %e, "no stats");
                    continue;
                }
            };
            let networks = match namespace_of(net, &c.name) {
                None => None,
                Some(ns) => match ns_cache.get(&ns) {
                    Some(n) => Some(n.clone()),
                    None => match netns_counters(&ns).await {
                        Ok(n) => {
                            ns_cache.insert(ns, n.clone());
                            Some(n)
                        }
                        Err(e) => {
                            tracing::debug!(task = %task_id, error = %e, "no network stats");
                            None
                        }
                    },
                },
            };
            containers.push(ContainerSample {
                name: c.name.clone(),
                runtime_id,
                cgroup,
                networks,
            });
        }
        TaskSample {
            task_arn: rec.task.task_arn.clone(),
            read_at,
            system_cpu_ns,
            online_cpus,
            task,
            containers,
        }
    }

    /// The last periodic sample of a task.
    pub fn last(&self, task_arn: &str) -> Option<Arc<TaskSample>> {
        self.last.lock().ok()?.get(task_arn).cloned()
    }

    /// Samples every task in `recs` and keeps the samples (forgetting tasks not listed): the
    /// link's report.
    pub async fn sample_all(&self, recs: &[TaskRecord]) -> Vec<TaskStats> {
        let mut out = Vec::new();
        let mut kept = HashMap::new();
        for rec in recs {
            let s = Arc::new(self.sample(rec).await);
            out.push(report(&s));
            kept.insert(rec.task.task_arn.clone(), s);
        }
        if let Ok(mut last) = self.last.lock() {
            *last = kept;
        }
        out
    }
}

/// `--stats-interval`: `20s`, `500ms`, `2m` or plain seconds; at least 100 ms.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 20s, 500ms, 1m)"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (ms, s or m)")),
    };
    if d < Duration::from_millis(100) {
        return Err(format!("{s:?} is shorter than the least interval, 100ms"));
    }
    Ok(d)
}

/// Samples the tasks `records` gives every `interval` and hands each sample to the link
/// (not persisted; a sample the link loses is replaced by the next). Runs until aborted.
pub async fn report_forever<F>(
    sampler: Arc<Sampler>,
    interval: Duration,
    records: F,
    reporter: Arc<crate::engine::reporter::Reporter>,
) where
    F: Fn() -> Vec<TaskRecord> + Send + 'static,
{
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let recs = records();
        let tasks = sampler.sample_all(&recs).await;
        if !tasks.is_empty() {
            tracing::debug!(tasks = tasks.len(), "stats sampled");
            reporter.publish_stats(berth_proto::v1::TaskStatsReport { tasks });
        }
    }
}

fn resources(c: &CgroupStats) -> ResourceStats {
    ResourceStats {
        cpu_total_usage_ns: c.cpu_total_ns,
        cpu_user_usage_ns: c.cpu_user_ns,
        cpu_system_usage_ns: c.cpu_system_ns,
        memory_usage_bytes: c.memory_usage,
        memory_max_usage_bytes: c.memory_max_usage,
        memory_limit_bytes: c.memory_limit,
        block_read_bytes: c.blkio_bytes("Read"),
        block_write_bytes: c.blkio_bytes("Write"),
    }
}

fn timestamp(t: SystemTime) -> pbjson_types::Timestamp {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

/// A sample as the link reports it.
pub fn report(s: &TaskSample) -> TaskStats {
    TaskStats {
        task_arn: s.task_arn.clone(),
        read_at: Some(timestamp(s.read_at)),
        usage: s.task.as_ref().map(resources),
        containers: s
            .containers
            .iter()
            .map(|c| ContainerStats {
                name: c.name.clone(),
                runtime_id: c.runtime_id.clone(),
                usage: Some(resources(&c.cgroup)),
                networks: c.networks.clone().unwrap_or_default(),
            })
            .collect(),
        container_instance_arn: String::new(),
    }
}

// ---- Docker's stats JSON (the shape ECS's metadata endpoint serves) ----

/// Docker's `ContainerStats` (API v1.30), as ECS's `/stats` returns it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DockerStats {
    /// When read (RFC 3339).
    pub read: String,
    /// When the previous sample was read.
    pub preread: String,
    /// Processes.
    pub pids_stats: PidsStats,
    /// Block I/O.
    pub blkio_stats: BlkioStats,
    /// Always 0 on Linux.
    pub num_procs: u64,
    /// Empty on Linux.
    pub storage_stats: BTreeMap<String, u64>,
    /// CPU now.
    pub cpu_stats: CpuStats,
    /// CPU at the previous sample.
    pub precpu_stats: CpuStats,
    /// Memory.
    pub memory_stats: MemoryStats,
    /// `/` and the container's name.
    pub name: String,
    /// The container's id.
    pub id: String,
    /// Per interface; absent in host mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub networks: Option<BTreeMap<String, DockerNetwork>>,
    /// ECS's addition for awsvpc and bridge tasks: rates since the previous sample.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_rate_stats: Option<NetworkRate>,
}

/// `pids_stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct PidsStats {
    /// pids.current.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<u64>,
}

/// One `io_service_bytes_recursive` entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BlkioStatEntry {
    /// Device major.
    pub major: u64,
    /// Device minor.
    pub minor: u64,
    /// Read, Write, …
    pub op: String,
    /// Bytes.
    pub value: u64,
}

/// `blkio_stats`: Docker leaves the lists it does not fill null.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct BlkioStats {
    /// Bytes per device and operation.
    pub io_service_bytes_recursive: Vec<BlkioStatEntry>,
    /// Not kept (null).
    pub io_serviced_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub io_queue_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub io_service_time_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub io_wait_time_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub io_merged_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub io_time_recursive: Option<Vec<BlkioStatEntry>>,
    /// Not kept (null).
    pub sectors_recursive: Option<Vec<BlkioStatEntry>>,
}

/// `cpu_stats` / `precpu_stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CpuStats {
    /// The container's CPU time.
    pub cpu_usage: CpuUsage,
    /// The host's CPU time, ns.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub system_cpu_usage: Option<u64>,
    /// Online CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub online_cpus: Option<u32>,
    /// CFS throttling.
    pub throttling_data: Throttling,
}

/// `cpu_usage`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct CpuUsage {
    /// Total, ns.
    pub total_usage: u64,
    /// Per CPU, ns (v1 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub percpu_usage: Option<Vec<u64>>,
    /// Kernel mode, ns.
    pub usage_in_kernelmode: u64,
    /// User mode, ns.
    pub usage_in_usermode: u64,
}

/// `throttling_data`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Throttling {
    /// CFS periods.
    pub periods: u64,
    /// Periods throttled.
    pub throttled_periods: u64,
    /// Time throttled, ns.
    pub throttled_time: u64,
}

/// `memory_stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct MemoryStats {
    /// Bytes in use.
    pub usage: u64,
    /// The most used, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_usage: Option<u64>,
    /// memory.stat.
    pub stats: BTreeMap<String, u64>,
    /// The limit (the host's memory when there is none, as Docker shows it).
    pub limit: u64,
}

/// One interface of `networks`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct DockerNetwork {
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Received packets dropped.
    pub rx_dropped: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Send errors.
    pub tx_errors: u64,
    /// Sent packets dropped.
    pub tx_dropped: u64,
}

/// ECS's `network_rate_stats`.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct NetworkRate {
    /// Received bytes per second since the previous sample.
    pub rx_bytes_per_sec: f64,
    /// Sent bytes per second since the previous sample.
    pub tx_bytes_per_sec: f64,
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// The zero time Docker shows as `preread` without a previous sample.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

fn cpu_stats(c: &CgroupStats, system: u64, cpus: u32) -> CpuStats {
    CpuStats {
        cpu_usage: CpuUsage {
            total_usage: c.cpu_total_ns,
            percpu_usage: (!c.percpu_ns.is_empty()).then(|| c.percpu_ns.clone()),
            usage_in_kernelmode: c.cpu_system_ns,
            usage_in_usermode: c.cpu_user_ns,
        },
        system_cpu_usage: Some(system),
        online_cpus: Some(cpus),
        throttling_data: Throttling {
            periods: c.throttling.0,
            throttled_periods: c.throttling.1,
            throttled_time: c.throttling.2,
        },
    }
}

fn totals(n: &[NetworkInterfaceStats]) -> (u64, u64) {
    n.iter()
        .fold((0, 0), |(r, t), i| (r + i.rx_bytes, t + i.tx_bytes))
}

/// Bytes per second between two counters `secs` apart (0 when the counter went back or no
/// time passed).
pub fn rate(now: u64, before: u64, secs: f64) -> f64 {
    if secs <= 0.0 || now < before {
        0.0
    } else {
        (now - before) as f64 / secs
    }
}

/// Docker's CPU percentage of a stats answer: the container's share of the host's CPU time
/// between `precpu_stats` and `cpu_stats`, times the online CPUs (what `docker stats` shows).
pub fn cpu_percent(s: &DockerStats) -> f64 {
    // Without a previous sample there is no interval to measure over.
    if s.precpu_stats.system_cpu_usage.is_none() {
        return 0.0;
    }
    let cpu = s
        .cpu_stats
        .cpu_usage
        .total_usage
        .saturating_sub(s.precpu_stats.cpu_usage.total_usage) as f64;
    let system = s
        .cpu_stats
        .system_cpu_usage
        .unwrap_or(0)
        .saturating_sub(s.precpu_stats.system_cpu_usage.unwrap_or(0)) as f64;
    let cpus = s.cpu_stats.online_cpus.unwrap_or(1) as f64;
    if system > 0.0 && cpu > 0.0 {
        cpu / system * cpus * 100.0
    } else {
        0.0
    }
}

/// Docker's stats of container `name` in `now`, with `prev` (the previous sample) as precpu.
/// `docker_name` is the `name` Docker shows (without the leading `/`). `None` when the
/// container is not in the sample.
pub fn docker_stats(
    now: &TaskSample,
    prev: Option<&TaskSample>,
    name: &str,
    docker_name: &str,
) -> Option<DockerStats> {
    let c = now.containers.iter().find(|c| c.name == name)?;
    let before = prev.and_then(|p| p.containers.iter().find(|x| x.name == name).map(|x| (p, x)));
    let precpu = before
        .map(|(p, x)| cpu_stats(&x.cgroup, p.system_cpu_ns, p.online_cpus))
        .unwrap_or_default();
    let networks = c.networks.as_ref().map(|n| {
        n.iter()
            .map(|i| {
                (
                    i.name.clone(),
                    DockerNetwork {
                        rx_bytes: i.rx_bytes,
                        rx_packets: i.rx_packets,
                        rx_errors: i.rx_errors,
                        rx_dropped: i.rx_dropped,
                        tx_bytes: i.tx_bytes,
                        tx_packets: i.tx_packets,
                        tx_errors: i.tx_errors,
                        tx_dropped: i.tx_dropped,
                    },
                )
            })
            .collect()
    });
    let network_rate_stats = c.networks.as_ref().map(|n| {
        let (rx, tx) = totals(n);
        match before.and_then(|(p, x)| x.networks.as_ref().map(|bn| (p, totals(bn)))) {
            Some((p, (prx, ptx))) => {
                let secs = now
                    .read_at
                    .duration_since(p.read_at)
                    .unwrap_or_default()
                    .as_secs_f64();
                NetworkRate {
                    rx_bytes_per_sec: rate(rx, prx, secs),
                    tx_bytes_per_sec: rate(tx, ptx, secs),
                }
            }
            None => NetworkRate::default(),
        }
    });
    Some(DockerStats {
        read: rfc3339(now.read_at),
        preread: before
            .map(|(p, _)| rfc3339(p.read_at))
            .unwrap_or_else(|| ZERO_TIME.into()),
        pids_stats: PidsStats {
            current: c.cgroup.pids,
        },
        blkio_stats: BlkioStats {
            io_service_bytes_recursive: c
                .cgroup
                .blkio
                .iter()
                .map(|e| BlkioStatEntry {
                    major: e.major,
                    minor: e.minor,
                    op: e.op.clone(),
                    value: e.value,
                })
                .collect(),
            ..Default::default()
        },
        num_procs: 0,
        storage_stats: BTreeMap::new(),
        cpu_stats: cpu_stats(&c.cgroup, now.system_cpu_ns, now.online_cpus),
        precpu_stats: precpu,
        memory_stats: MemoryStats {
            usage: c.cgroup.memory_usage,
            max_usage: c.cgroup.memory_max_usage,
            stats: c.cgroup.memory_stat.clone(),
            limit: c.cgroup.memory_limit.unwrap_or_else(host_memory),
        },
        name: format!("/{docker_name}"),
        id: c.runtime_id.clone(),
        networks,
        network_rate_stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::BlkioEntry;

    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0
  eth0:    2048      10    1    2    0     0          0         0     1024       5    3    4    0     0       0          0
";

    #[test]
    fn intervals_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse_interval("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_interval("7"), Ok(Duration::from_secs(7)));
        assert!(parse_interval("10ms").unwrap_err().contains("100ms"));
        assert!(parse_interval("5h").unwrap_err().contains("unknown unit"));
        assert!(parse_interval("x").is_err());
    }

    #[test]
    fn net_dev_gives_rx_and_tx_counters_without_loopback() {
        let n = parse_net_dev(NET_DEV);
        assert_eq!(
            n,
            vec![NetworkInterfaceStats {
                name: "eth0".into(),
                rx_bytes: 2048,
                rx_packets: 10,
                rx_errors: 1,
                rx_dropped: 2,
                tx_bytes: 1024,
                tx_packets: 5,
                tx_errors: 3,
                tx_dropped: 4,
            }]
        );
    }

    #[test]
    fn proc_stat_gives_host_cpu_time_in_ns_and_cpu_count() {
        let text = "cpu  100 0 50 800 10 0 0 40 0 0\ncpu0 50 0 25 400 5 0 0 20 0 0\ncpu1 50 0 25 400 5 0 0 20 0 0\nintr 1\n";
        // (100+50+800+10+40) ticks of 10 ms.
        assert_eq!(parse_proc_stat(text), (1000 * 10_000_000, 2));
    }

    fn sample(at: u64, cpu: u64, system: u64, rx: u64, mem: u64) -> TaskSample {
        TaskSample {
            task_arn: "arn:aws:ecs:r:1:task/c/t".into(),
            read_at: SystemTime::UNIX_EPOCH + Duration::from_secs(at),
            system_cpu_ns: system,
            online_cpus: 2,
            task: None,
            containers: vec![ContainerSample {
                name: "app".into(),
                runtime_id: "t-app".into(),
                cgroup: CgroupStats {
                    cpu_total_ns: cpu,
                    cpu_user_ns: cpu / 2,
                    cpu_system_ns: cpu / 2,
                    memory_usage: mem,
                    memory_limit: Some(1 << 30),
                    blkio: vec![BlkioEntry {
                        major: 8,
                        minor: 0,
                        op: "Read".into(),
                        value: 512,
                    }],
                    pids: Some(1),
                    ..Default::default()
                },
                networks: Some(vec![NetworkInterfaceStats {
                    name: "eth0".into(),
                    rx_bytes: rx,
                    tx_bytes: rx / 2,
                    ..Default::default()
                }]),
            }],
        }
    }

    #[test]
    fn cpu_percent_and_network_rates_come_from_the_previous_sample() {
        let prev = sample(100, 1_000_000_000, 10_000_000_000, 1000, 10);
        // 0.5 s of the container's CPU over 2 s of host CPU time on 2 CPUs = 50 %.
        let now = sample(120, 1_500_000_000, 12_000_000_000, 21_000, 64 << 20);
        let s = docker_stats(&now, Some(&prev), "app", "ecs-f-1-app").unwrap();
        assert_eq!(s.precpu_stats.cpu_usage.total_usage, 1_000_000_000);
        assert_eq!(s.cpu_stats.system_cpu_usage, Some(12_000_000_000));
        assert_eq!(s.cpu_stats.online_cpus, Some(2));
        assert!((cpu_percent(&s) - 50.0).abs() < 1e-9, "{}", cpu_percent(&s));
        let rates = s.network_rate_stats.clone().unwrap();
        assert!((rates.rx_bytes_per_sec - 1000.0).abs() < 1e-9, "{rates:?}");
        assert!((rates.tx_bytes_per_sec - 500.0).abs() < 1e-9, "{rates:?}");
        assert_eq!(s.memory_stats.usage, 64 << 20);
        assert_eq!(s.memory_stats.limit, 1 << 30);
        assert_eq!(s.preread, "1970-01-01T00:01:40Z");
        assert_eq!(s.name, "/ecs-f-1-app");

        let first = docker_stats(&now, None, "app", "x").unwrap();
        assert_eq!(first.preread, ZERO_TIME);
        assert_eq!(
            cpu_percent(&first),
            0.0,
            "no previous sample: no percentage"
        );
        assert!(docker_stats(&now, None, "other", "x").is_none());
        assert_eq!(rate(5, 10, 1.0), 0.0, "a counter that went back is no rate");
    }

    #[test]
    fn the_json_has_dockers_field_names() {
        let s = docker_stats(&sample(1, 2, 3, 4, 5), None, "app", "n").unwrap();
        let v = serde_json::to_value(&s).unwrap();
        for key in [
            "read",
            "preread",
            "pids_stats",
            "blkio_stats",
            "num_procs",
            "storage_stats",
            "cpu_stats",
            "precpu_stats",
            "memory_stats",
            "name",
            "id",
            "networks",
            "network_rate_stats",
        ] {
            assert!(v.get(key).is_some(), "{key} missing: {v}");
        }
        assert_eq!(v["cpu_stats"]["cpu_usage"]["total_usage"], 2);
        assert!(v["cpu_stats"]["system_cpu_usage"].is_u64());
        assert!(v["cpu_stats"]["throttling_data"]["throttled_periods"].is_u64());
        assert_eq!(v["memory_stats"]["usage"], 5);
        assert!(v["memory_stats"]["stats"].is_object());
        assert_eq!(
            v["blkio_stats"]["io_service_bytes_recursive"][0],
            serde_json::json!({"major": 8, "minor": 0, "op": "Read", "value": 512})
        );
        assert!(v["blkio_stats"]["io_serviced_recursive"].is_null());
        assert_eq!(v["networks"]["eth0"]["rx_bytes"], 4);
        assert!(v["networks"]["eth0"]["tx_dropped"].is_u64());
        assert!(v["network_rate_stats"]["rx_bytes_per_sec"].is_f64());
    }

    #[test]
    fn the_link_report_sums_block_io_per_operation() {
        let r = report(&sample(1, 2, 3, 4, 5));
        let c = &r.containers[0];
        assert_eq!(c.runtime_id, "t-app");
        let u = c.usage.as_ref().unwrap();
        assert_eq!((u.memory_usage_bytes, u.block_read_bytes), (5, 512));
        assert_eq!(c.networks[0].rx_bytes, 4);
        assert!(r.usage.is_none(), "no task cgroup read: no task usage");
    }
}
