//! Task cgroups behind a narrow trait. A task gets `<parent>/<task-id>` with the task's limits
//! (CFS quota or cpu shares, memory limit); runc creates each container's leaf inside it from the
//! spec's `linux.cgroupsPath` and resources. The task cgroup is written as plain files under a
//! root (default `/sys/fs/cgroup`), so the same code is tested against temp-dir fixtures of a
//! cgroup v1 (or hybrid) and a cgroup v2 (unified) layout.

use berth_proto::v1::TaskDefinition;
use std::path::{Path, PathBuf};

/// CFS period, as ECS uses it.
pub const CFS_PERIOD_US: u64 = 100_000;
/// The least cpu shares the kernel takes (ECS raises smaller values to it).
pub const MIN_CPU_SHARES: u64 = 2;
/// The most cpu shares the kernel takes.
pub const MAX_CPU_SHARES: u64 = 262_144;
/// Where the cgroup filesystems are mounted.
pub const DEFAULT_ROOT: &str = "/sys/fs/cgroup";

/// A cgroup failure, with the cgroup file or directory it concerns and the kernel's error.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Creating a cgroup directory failed.
    #[error("creating cgroup {}: {source}", dir.display())]
    Create {
        /// The directory.
        dir: PathBuf,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// Writing a cgroup file failed.
    #[error("writing '{value}' to {}: {source}", file.display())]
    Write {
        /// The file.
        file: PathBuf,
        /// What was written.
        value: String,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// Reading a cgroup file failed (a stats sample of a cgroup that is gone, or unreadable).
    #[error("reading {}: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
    /// This implementation keeps no stats.
    #[error("cgroup stats are not available")]
    NoStats,
    /// Removing cgroup directories failed (the first failure; `more` others).
    #[error("removing cgroup {}: {source}{}", dir.display(), if *more > 0 { format!(" (and {more} more)") } else { String::new() })]
    Remove {
        /// The first directory that could not be removed.
        dir: PathBuf,
        /// How many other removals failed.
        more: usize,
        /// The kernel's error.
        #[source]
        source: std::io::Error,
    },
}

/// What a task cgroup is given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskLimits {
    /// Task-level cpu units: a CFS quota of units/1024 of a period.
    pub cpu_units: Option<i64>,
    /// cpu shares, when there is no task-level cpu: the sum of the containers' cpu (ECS's rule).
    pub cpu_shares: Option<u64>,
    /// Task-level memory limit in MiB.
    pub memory_mib: Option<i64>,
}

impl TaskLimits {
    /// The limits ECS gives a task: task cpu → CFS quota; no task cpu → cpu shares equal to the
    /// sum of the containers' cpu (at least 2), so a big task is not equal to a small one under
    /// contention; task memory → memory limit.
    pub fn of(def: &TaskDefinition) -> Self {
        let cpu_units: Option<i64> = def.cpu.as_deref().and_then(|c| c.trim().parse().ok());
        let memory_mib = def.memory.as_deref().and_then(|m| m.trim().parse().ok());
        let cpu_shares = match cpu_units {
            Some(_) => None,
            None => {
                let sum: u64 = def
                    .container_definitions
                    .iter()
                    .map(|c| c.cpu.unwrap_or(0).max(0) as u64)
                    .sum();
                Some(sum.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES))
            }
        };
        Self {
            cpu_units,
            cpu_shares,
            memory_mib,
        }
    }
}

#[cfg(test)]
impl CgroupError {
    /// An injected failure, for the engine's fakes.
    pub(crate) fn test(op: &str) -> Self {
        Self::Write {
            file: PathBuf::from("test"),
            value: op.to_string(),
            source: std::io::Error::other("injected"),
        }
    }
}

/// What the engine needs from cgroups.
pub trait Cgroups: Send + Sync + 'static {
    /// Creates the task cgroup with its limits.
    fn create_task(&self, task_id: &str, limits: &TaskLimits) -> Result<(), CgroupError>;
    /// The `linux.cgroupsPath` for a container of the task.
    fn container_path(&self, task_id: &str, container: &str) -> String;
    /// How many processes the kernel OOM-killed in the container's cgroup so far (a counter
    /// over the cgroup's life: a container restarted in place keeps its cgroup, so a run was
    /// OOM-killed only when the count grew during it).
    fn oom_kills(&self, task_id: &str, container: &str) -> u64;
    /// Removes whatever is left of the task's cgroups, in every hierarchy.
    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError>;
    /// What the task's cgroup (`container` `None`) or one container's cgroup used so far
    /// (issue 9: stats). The default keeps none.
    fn stats(&self, task_id: &str, container: Option<&str>) -> Result<CgroupStats, CgroupError> {
        let _ = (task_id, container);
        Err(CgroupError::NoStats)
    }
}

/// One line of blkio's io_service_bytes_recursive (v2: io.stat's rbytes/wbytes), as Docker's
/// stats show it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BlkioEntry {
    /// The device's major number.
    pub major: u64,
    /// Its minor number.
    pub minor: u64,
    /// `Read`, `Write` (v1 also `Sync`, `Async`, `Discard`, `Total`).
    pub op: String,
    /// Bytes.
    pub value: u64,
}

/// What a cgroup used, read from its files (cgroup v1 or v2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CgroupStats {
    /// Cumulative CPU time, ns.
    pub cpu_total_ns: u64,
    /// Of which in user mode, ns.
    pub cpu_user_ns: u64,
    /// Of which in kernel mode, ns.
    pub cpu_system_ns: u64,
    /// Per CPU, ns (v1 only; empty on v2, as Docker shows it).
    pub percpu_ns: Vec<u64>,
    /// CFS periods, throttled periods and throttled time (ns).
    pub throttling: (u64, u64, u64),
    /// Memory in use, bytes.
    pub memory_usage: u64,
    /// The most it used, when the kernel tells it.
    pub memory_max_usage: Option<u64>,
    /// The memory limit; `None` when unlimited.
    pub memory_limit: Option<u64>,
    /// memory.stat, as the kernel lists it.
    pub memory_stat: std::collections::BTreeMap<String, u64>,
    /// Block I/O bytes per device and operation.
    pub blkio: Vec<BlkioEntry>,
    /// Processes (pids.current), when known.
    pub pids: Option<u64>,
}

impl CgroupStats {
    /// Bytes of block I/O of operation `op` (`Read`, `Write`) over all devices.
    pub fn blkio_bytes(&self, op: &str) -> u64 {
        self.blkio
            .iter()
            .filter(|e| e.op.eq_ignore_ascii_case(op))
            .map(|e| e.value)
            .sum()
    }
}

/// A limit the kernel writes for "unlimited" (v1: a page-rounded i64::MAX).
const UNLIMITED: u64 = 1 << 62;

fn read_file(file: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(file).map_err(|source| CgroupError::Read {
        file: file.to_path_buf(),
        source,
    })
}

fn read_u64(file: &Path) -> Result<u64, CgroupError> {
    let text = read_file(file)?;
    text.trim().parse().map_err(|_| CgroupError::Read {
        file: file.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not a number: {:?}", text.trim()),
        ),
    })
}

/// A flat-keyed file (`key value` per line) as a map; unparsable lines are left out.
fn flat_keyed(text: &str) -> std::collections::BTreeMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

/// blkio's `MAJ:MIN Op value` lines (the `Total` summary lines without a device are left out).
fn parse_blkio_v1(text: &str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, op, value) = (f.next()?, f.next()?, f.next()?);
            let (major, minor) = dev.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                op: op.to_string(),
                value: value.parse().ok()?,
            })
        })
        .collect()
}

/// io.stat's `MAJ:MIN rbytes=… wbytes=… …` lines as Read and Write entries.
fn parse_io_stat_v2(text: &str) -> Vec<BlkioEntry> {
    let mut out = Vec::new();
    for l in text.lines() {
        let mut f = l.split_whitespace();
        let Some((major, minor)) = f.next().and_then(|d| d.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for kv in f {
            let Some((k, v)) = kv.split_once('=') else {
                continue;
            };
            let op = match k {
                "rbytes" => "Read",
                "wbytes" => "Write",
                _ => continue,
            };
            if let Ok(value) = v.parse() {
                out.push(BlkioEntry {
                    major,
                    minor,
                    op: op.into(),
                    value,
                });
            }
        }
    }
    out
}

/// USER_HZ: the unit of cpuacct.stat (100 on every Linux ABI the agent runs on).
const USER_HZ: u64 = 100;

/// How the cgroup filesystems are mounted under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// One directory per v1 controller (`cpu/`, `memory/`, …), possibly with a `unified/` v2
    /// mount beside them (a "hybrid" host).
    V1,
    /// One cgroup v2 hierarchy at the root.
    Unified,
}

impl Layout {
    /// The layout of the cgroup filesystems under `root`: unified when the root itself is a v2
    /// cgroup (it has `cgroup.controllers`).
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").exists() {
            Layout::Unified
        } else {
            Layout::V1
        }
    }
}

/// The host's cgroups (cgroupfs), written as files under a root.
pub struct HostCgroups {
    root: PathBuf,
    layout: Layout,
    parent: String,
}

/// cgroup v2's cpu.weight for v1 cpu shares (runc's conversion: [2, 262144] → [1, 10000]).
pub fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(MIN_CPU_SHARES, MAX_CPU_SHARES);
    1 + ((shares - 2) * 9999) / 262_142
}

/// CFS quota for task cpu units: units/1024 of a period.
pub fn cfs_quota(cpu_units: i64) -> i64 {
    (cpu_units * CFS_PERIOD_US as i64 / 1024).max(1000)
}

fn write(file: PathBuf, value: String) -> Result<(), CgroupError> {
    match std::fs::write(&file, &value) {
        Ok(()) => Ok(()),
        Err(source) => Err(CgroupError::Write {
            file,
            value,
            source,
        }),
    }
}

fn create(dir: &Path) -> Result<(), CgroupError> {
    std::fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
        dir: dir.to_path_buf(),
        source,
    })
}

/// A `key value` counter of a flat-keyed cgroup file (memory.events, memory.oom_control).
fn read_counter(file: &Path, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == key).then(|| v.trim().parse().ok()).flatten()
            })
        })
        .unwrap_or(0)
}

impl HostCgroups {
    /// Task cgroups go under `parent` (e.g. `berth`) of the host's cgroup root.
    pub fn new(parent: &str) -> Self {
        Self::with_root(Path::new(DEFAULT_ROOT), parent)
    }

    /// Task cgroups go under `parent` of the cgroup filesystems mounted at `root`.
    pub fn with_root(root: &Path, parent: &str) -> Self {
        Self {
            root: root.to_path_buf(),
            layout: Layout::detect(root),
            parent: parent.trim_matches('/').to_string(),
        }
    }

    /// The layout found under the root.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    fn task_rel(&self, task_id: &str) -> String {
        format!("{}/{task_id}", self.parent)
    }

    /// v2: lets the task cgroup (and runc's leaves in it) use the cpu, memory and pids
    /// controllers, by enabling them in the root's and the parent's subtree_control.
    fn enable_controllers(&self) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        let mut levels = vec![dir.clone()];
        for part in self.parent.split('/').filter(|p| !p.is_empty()) {
            dir = dir.join(part);
            create(&dir)?;
            levels.push(dir.clone());
        }
        for level in levels {
            let available =
                std::fs::read_to_string(level.join("cgroup.controllers")).unwrap_or_default();
            let wanted: Vec<String> = ["cpu", "memory", "pids"]
                .iter()
                .filter(|c| available.split_whitespace().any(|a| a == **c))
                .map(|c| format!("+{c}"))
                .collect();
            if !wanted.is_empty() {
                write(level.join("cgroup.subtree_control"), wanted.join(" "))?;
            }
        }
        Ok(())
    }

    fn create_v1(&self, rel: &str, limits: &TaskLimits) -> Result<(), CgroupError> {
        let cpu = self.root.join("cpu").join(rel);
        let memory = self.root.join("memory").join(rel);
        create(&cpu)?;
        create(&memory)?;
        if let Some(units) = limits.cpu_units {
            write(cpu.join("cpu.cfs_period_us"), CFS_PERIOD_US.to_string())?;
            write(cpu.join("cpu.cfs_quota_us"), cfs_quota(units).to_string())?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(cpu.join("cpu.shares"), shares.to_string())?;
        }
        if let Some(mib) = limits.memory_mib {
            write(
                memory.join("memory.limit_in_bytes"),
                (mib * 1024 * 1024).to_string(),
            )?;
        }
        Ok(())
    }

    fn create_v2(&self, rel: &str, limits: &TaskLimits) -> Result<(), CgroupError> {
        self.enable_controllers()?;
        let dir = self.root.join(rel);
        create(&dir)?;
        if let Some(units) = limits.cpu_units {
            write(
                dir.join("cpu.max"),
                format!("{} {CFS_PERIOD_US}", cfs_quota(units)),
            )?;
        }
        if let Some(shares) = limits.cpu_shares {
            write(dir.join("cpu.weight"), shares_to_weight(shares).to_string())?;
        }
        if let Some(mib) = limits.memory_mib {
            write(dir.join("memory.max"), (mib * 1024 * 1024).to_string())?;
        }
        Ok(())
    }

    /// Stats from the v1 hierarchies: cpuacct, cpu (throttling), memory, blkio, pids. The
    /// memory cgroup must be there (it is the one every task has); the others are optional.
    fn stats_v1(&self, rel: &str) -> Result<CgroupStats, CgroupError> {
        let memory = self.root.join("memory").join(rel);
        let cpuacct = self.root.join("cpuacct").join(rel);
        let mut st = CgroupStats {
            memory_usage: read_u64(&memory.join("memory.usage_in_bytes"))?,
            memory_max_usage: read_u64(&memory.join("memory.max_usage_in_bytes")).ok(),
            memory_limit: read_u64(&memory.join("memory.limit_in_bytes"))
                .ok()
                .filter(|l| *l < UNLIMITED),
            memory_stat: read_file(&memory.join("memory.stat"))
                .map(|t| flat_keyed(&t))
                .unwrap_or_default(),
            ..Default::default()
        };
        if let Ok(total) = read_u64(&cpuacct.join("cpuacct.usage")) {
            st.cpu_total_ns = total;
        }
        if let Ok(t) = read_file(&cpuacct.join("cpuacct.stat")) {
            let m = flat_keyed(&t);
            let ns = |ticks: u64| ticks.saturating_mul(1_000_000_000 / USER_HZ);
            st.cpu_user_ns = ns(m.get("user").copied().unwrap_or(0));
            st.cpu_system_ns = ns(m.get("system").copied().unwrap_or(0));
        }
        if let Ok(t) = read_file(&cpuacct.join("cpuacct.usage_percpu")) {
            st.percpu_ns = t
                .split_whitespace()
                .filter_map(|v| v.parse().ok())
                .collect();
        }
        if let Ok(t) = read_file(&self.root.join("cpu").join(rel).join("cpu.stat")) {
            let m = flat_keyed(&t);
            let g = |k: &str| m.get(k).copied().unwrap_or(0);
            st.throttling = (g("nr_periods"), g("nr_throttled"), g("throttled_time"));
        }
        let blkio = self.root.join("blkio").join(rel);
        // The CFQ/BFQ file is empty with other schedulers; the throttle one counts every I/O
        // (Docker reads them the same way).
        for f in [
            "blkio.io_service_bytes_recursive",
            "blkio.throttle.io_service_bytes_recursive",
        ] {
            let entries = read_file(&blkio.join(f))
                .map(|t| parse_blkio_v1(&t))
                .unwrap_or_default();
            if !entries.is_empty() {
                st.blkio = entries;
                break;
            }
        }
        st.pids = read_u64(&self.root.join("pids").join(rel).join("pids.current")).ok();
        Ok(st)
    }

    /// Stats from the v2 cgroup's files: cpu.stat, memory.current/peak/max/stat, io.stat.
    fn stats_v2(&self, rel: &str) -> Result<CgroupStats, CgroupError> {
        let dir = self.root.join(rel);
        let mut st = CgroupStats {
            memory_usage: read_u64(&dir.join("memory.current"))?,
            memory_max_usage: read_u64(&dir.join("memory.peak")).ok(),
            memory_limit: read_u64(&dir.join("memory.max")).ok(),
            memory_stat: read_file(&dir.join("memory.stat"))
                .map(|t| flat_keyed(&t))
                .unwrap_or_default(),
            ..Default::default()
        };
        if let Ok(t) = read_file(&dir.join("cpu.stat")) {
            let m = flat_keyed(&t);
            let us = |k: &str| m.get(k).copied().unwrap_or(0).saturating_mul(1000);
            st.cpu_total_ns = us("usage_usec");
            st.cpu_user_ns = us("user_usec");
            st.cpu_system_ns = us("system_usec");
            st.throttling = (
                m.get("nr_periods").copied().unwrap_or(0),
                m.get("nr_throttled").copied().unwrap_or(0),
                us("throttled_usec"),
            );
        }
        st.blkio = read_file(&dir.join("io.stat"))
            .map(|t| parse_io_stat_v2(&t))
            .unwrap_or_default();
        st.pids = read_u64(&dir.join("pids.current")).ok();
        Ok(st)
    }

    /// Every directory the task may have a cgroup in: one per v1 hierarchy (hybrid's unified
    /// mount included), or the one v2 hierarchy.
    fn task_dirs(&self, rel: &str) -> Vec<PathBuf> {
        match self.layout {
            Layout::Unified => vec![self.root.join(rel)],
            Layout::V1 => std::fs::read_dir(&self.root)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir() && !p.is_symlink())
                        .map(|p| p.join(rel))
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

impl Cgroups for HostCgroups {
    fn create_task(&self, task_id: &str, limits: &TaskLimits) -> Result<(), CgroupError> {
        let rel = self.task_rel(task_id);
        match self.layout {
            Layout::V1 => self.create_v1(&rel, limits),
            Layout::Unified => self.create_v2(&rel, limits),
        }
    }

    fn container_path(&self, task_id: &str, container: &str) -> String {
        format!("/{}/{container}", self.task_rel(task_id))
    }

    fn oom_kills(&self, task_id: &str, container: &str) -> u64 {
        let rel = self.task_rel(task_id);
        match self.layout {
            Layout::Unified => {
                let file = self.root.join(&rel).join(container).join("memory.events");
                read_counter(&file, "oom_kill")
            }
            Layout::V1 => {
                let file = self
                    .root
                    .join("memory")
                    .join(&rel)
                    .join(container)
                    .join("memory.oom_control");
                read_counter(&file, "oom_kill")
            }
        }
    }

    fn stats(&self, task_id: &str, container: Option<&str>) -> Result<CgroupStats, CgroupError> {
        let mut rel = self.task_rel(task_id);
        if let Some(c) = container {
            rel = format!("{rel}/{c}");
        }
        match self.layout {
            Layout::V1 => self.stats_v1(&rel),
            Layout::Unified => self.stats_v2(&rel),
        }
    }

    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError> {
        let rel = self.task_rel(task_id);
        let mut failures: Vec<(PathBuf, std::io::Error)> = Vec::new();
        for dir in self.task_dirs(&rel) {
            if !dir.exists() {
                continue;
            }
            // Leaves runc left (it removes its own, but not after a crash), then the task's.
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        if let Err(e) = std::fs::remove_dir(c.path()) {
                            failures.push((c.path(), e));
                        }
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                failures.push((dir, e));
            }
        }
        let more = failures.len().saturating_sub(1);
        match failures.into_iter().next() {
            None => Ok(()),
            Some((dir, source)) => Err(CgroupError::Remove { dir, more, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A temp dir removed on drop.
    struct Fixture(PathBuf);

    impl Drop for Fixture {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A v1 (hybrid) layout: one directory per controller, and a unified mount beside them.
    fn v1_root() -> Fixture {
        let root = std::env::temp_dir().join(format!("berth-cg-v1-{}", uuid::Uuid::new_v4()));
        for c in ["cpu", "cpuacct", "memory", "pids", "unified"] {
            std::fs::create_dir_all(root.join(c)).unwrap();
        }
        std::fs::write(root.join("unified/cgroup.controllers"), "").unwrap();
        Fixture(root)
    }

    /// A v2 layout: the root is a cgroup with its controllers listed.
    fn v2_root() -> Fixture {
        let root = std::env::temp_dir().join(format!("berth-cg-v2-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(
            root.join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        Fixture(root)
    }

    fn read(p: PathBuf) -> String {
        std::fs::read_to_string(&p)
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
            .trim()
            .to_string()
    }

    fn task_def(json: &str) -> TaskDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn quota_is_units_over_1024_of_the_period() {
        assert_eq!(cfs_quota(512), 50_000);
        assert_eq!(cfs_quota(2048), 200_000);
    }

    #[test]
    fn weight_follows_runcs_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1, "below the minimum is the minimum");
    }

    #[test]
    fn task_without_cpu_gets_the_sum_of_its_containers_cpu_as_shares() {
        let l = TaskLimits::of(&task_def(
            r#"{"family":"f","containerDefinitions":[{"name":"a","cpu":300},{"name":"b","cpu":212},{"name":"c"}]}"#,
        ));
        assert_eq!(
            l,
            TaskLimits {
                cpu_units: None,
                cpu_shares: Some(512),
                memory_mib: None
            }
        );
        let none = TaskLimits::of(&task_def(
            r#"{"family":"f","containerDefinitions":[{"name":"a"}]}"#,
        ));
        assert_eq!(none.cpu_shares, Some(2), "no cpu at all is the minimum");
        let with_task_cpu = TaskLimits::of(&task_def(
            r#"{"family":"f","cpu":"512","memory":"256","containerDefinitions":[{"name":"a","cpu":100}]}"#,
        ));
        assert_eq!(
            with_task_cpu,
            TaskLimits {
                cpu_units: Some(512),
                cpu_shares: None,
                memory_mib: Some(256)
            }
        );
    }

    #[test]
    fn v1_files_get_quota_shares_and_limit() {
        let f = v1_root();
        let cg = HostCgroups::with_root(&f.0, "/berth/");
        assert_eq!(
            cg.layout(),
            Layout::V1,
            "a unified mount beside v1 is hybrid"
        );
        cg.create_task(
            "t1",
            &TaskLimits {
                cpu_units: Some(512),
                cpu_shares: None,
                memory_mib: Some(256),
            },
        )
        .unwrap();
        assert_eq!(read(f.0.join("cpu/berth/t1/cpu.cfs_quota_us")), "50000");
        assert_eq!(read(f.0.join("cpu/berth/t1/cpu.cfs_period_us")), "100000");
        assert!(!f.0.join("cpu/berth/t1/cpu.shares").exists());
        assert_eq!(
            read(f.0.join("memory/berth/t1/memory.limit_in_bytes")),
            (256u64 << 20).to_string()
        );
        cg.create_task(
            "t2",
            &TaskLimits {
                cpu_shares: Some(512),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(f.0.join("cpu/berth/t2/cpu.shares")), "512");
        assert!(!f.0.join("cpu/berth/t2/cpu.cfs_quota_us").exists());
        assert!(!f.0.join("memory/berth/t2/memory.limit_in_bytes").exists());
        assert_eq!(cg.container_path("t1", "app"), "/berth/t1/app");
    }

    #[test]
    fn v2_files_get_cpu_max_weight_and_memory_max() {
        let f = v2_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        assert_eq!(cg.layout(), Layout::Unified);
        std::fs::create_dir_all(f.0.join("berth")).unwrap();
        std::fs::write(f.0.join("berth/cgroup.controllers"), "cpu memory pids\n").unwrap();
        cg.create_task(
            "t1",
            &TaskLimits {
                cpu_units: Some(512),
                cpu_shares: None,
                memory_mib: Some(256),
            },
        )
        .unwrap();
        assert_eq!(read(f.0.join("berth/t1/cpu.max")), "50000 100000");
        assert_eq!(
            read(f.0.join("berth/t1/memory.max")),
            (256u64 << 20).to_string()
        );
        assert!(!f.0.join("berth/t1/cpu.weight").exists());
        // The task cgroup and runc's leaves can use cpu, memory and pids.
        assert_eq!(
            read(f.0.join("cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        assert_eq!(
            read(f.0.join("berth/cgroup.subtree_control")),
            "+cpu +memory +pids"
        );
        cg.create_task(
            "t2",
            &TaskLimits {
                cpu_shares: Some(1024),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read(f.0.join("berth/t2/cpu.weight")), "39");
        assert!(!f.0.join("berth/t2/cpu.max").exists());
    }

    #[test]
    fn oom_kill_is_read_from_oom_control_on_v1_and_memory_events_on_v2() {
        let f = v1_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        let leaf = f.0.join("memory/berth/t/app");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(
            leaf.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("t", "app"), 0);
        std::fs::write(
            leaf.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("t", "app"), 1);
        assert_eq!(cg.oom_kills("t", "other"), 0, "no file: not OOM-killed");

        let f = v2_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        let leaf = f.0.join("berth/t/app");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert_eq!(
            cg.oom_kills("t", "app"),
            0,
            "oom without a kill is not a kill"
        );
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\noom_group_kill 0\n",
        )
        .unwrap();
        assert_eq!(cg.oom_kills("t", "app"), 2);
    }

    #[test]
    fn a_failed_write_names_the_file_and_keeps_the_kernels_error() {
        let f = v1_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        // A file where the task's directory should be: creating it fails.
        std::fs::create_dir_all(f.0.join("cpu/berth")).unwrap();
        std::fs::write(f.0.join("cpu/berth/t"), "").unwrap();
        let e = cg
            .create_task(
                "t",
                &TaskLimits {
                    cpu_shares: Some(2),
                    ..Default::default()
                },
            )
            .unwrap_err();
        assert!(matches!(e, CgroupError::Create { .. }), "{e:?}");
        assert!(e.to_string().contains("cpu/berth/t"), "{e}");
        assert!(std::error::Error::source(&e).is_some());
    }

    fn put(dir: &Path, files: &[(&str, &str)]) {
        std::fs::create_dir_all(dir).unwrap();
        for (f, text) in files {
            std::fs::write(dir.join(f), text).unwrap();
        }
    }

    #[test]
    fn v1_stats_come_from_cpuacct_memory_blkio_and_pids() {
        let f = v1_root();
        std::fs::create_dir_all(f.0.join("blkio")).unwrap();
        let cg = HostCgroups::with_root(&f.0, "berth");
        put(
            &f.0.join("memory/berth/t/app"),
            &[
                ("memory.usage_in_bytes", "67108864\n"),
                ("memory.max_usage_in_bytes", "70000000\n"),
                ("memory.limit_in_bytes", "9223372036854771712\n"),
                ("memory.stat", "cache 1024\nrss 4096\nshmem 67108864\n"),
            ],
        );
        put(
            &f.0.join("cpuacct/berth/t/app"),
            &[
                ("cpuacct.usage", "1500000000\n"),
                ("cpuacct.stat", "user 100\nsystem 50\n"),
                ("cpuacct.usage_percpu", "1000000000 500000000 \n"),
            ],
        );
        put(
            &f.0.join("cpu/berth/t/app"),
            &[(
                "cpu.stat",
                "nr_periods 10\nnr_throttled 2\nthrottled_time 3000\n",
            )],
        );
        put(
            &f.0.join("blkio/berth/t/app"),
            &[
                ("blkio.io_service_bytes_recursive", "Total 0\n"),
                (
                    "blkio.throttle.io_service_bytes_recursive",
                    "8:0 Read 4096\n8:0 Write 8192\n8:16 Read 100\n8:0 Total 12288\nTotal 12388\n",
                ),
            ],
        );
        put(&f.0.join("pids/berth/t/app"), &[("pids.current", "3\n")]);
        let st = cg.stats("t", Some("app")).unwrap();
        assert_eq!(st.memory_usage, 64 << 20);
        assert_eq!(st.memory_max_usage, Some(70_000_000));
        assert_eq!(
            st.memory_limit, None,
            "the kernel's 'unlimited' is no limit"
        );
        assert_eq!(st.memory_stat.get("shmem"), Some(&(64 << 20)));
        assert_eq!(st.cpu_total_ns, 1_500_000_000);
        assert_eq!(st.cpu_user_ns, 1_000_000_000, "100 ticks of USER_HZ 100");
        assert_eq!(st.cpu_system_ns, 500_000_000);
        assert_eq!(st.percpu_ns, vec![1_000_000_000, 500_000_000]);
        assert_eq!(st.throttling, (10, 2, 3000));
        assert_eq!(st.blkio_bytes("Read"), 4196);
        assert_eq!(st.blkio_bytes("Write"), 8192);
        assert_eq!(st.pids, Some(3));

        // The task's own cgroup, with a limit.
        put(
            &f.0.join("memory/berth/t"),
            &[
                ("memory.usage_in_bytes", "100\n"),
                ("memory.limit_in_bytes", "268435456\n"),
            ],
        );
        let task = cg.stats("t", None).unwrap();
        assert_eq!(task.memory_usage, 100);
        assert_eq!(task.memory_limit, Some(256 << 20));
        assert_eq!(task.cpu_total_ns, 0, "no cpuacct file: zero, not an error");

        let gone = cg.stats("t", Some("other")).unwrap_err();
        assert!(matches!(gone, CgroupError::Read { .. }), "{gone:?}");
        assert!(gone.to_string().contains("memory/berth/t/other"), "{gone}");
    }

    #[test]
    fn v2_stats_come_from_cpu_stat_memory_and_io_stat() {
        let f = v2_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        put(
            &f.0.join("berth/t/app"),
            &[
                ("memory.current", "67108864\n"),
                ("memory.peak", "70000000\n"),
                ("memory.max", "max\n"),
                ("memory.stat", "anon 4096\nshmem 67108864\n"),
                (
                    "cpu.stat",
                    "usage_usec 1500000\nuser_usec 1000000\nsystem_usec 500000\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n",
                ),
                (
                    "io.stat",
                    "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n259:0 rbytes=1 wbytes=0\n",
                ),
                ("pids.current", "2\n"),
            ],
        );
        let st = cg.stats("t", Some("app")).unwrap();
        assert_eq!(st.memory_usage, 64 << 20);
        assert_eq!(st.memory_max_usage, Some(70_000_000));
        assert_eq!(st.memory_limit, None, "'max' is no limit");
        assert_eq!(st.cpu_total_ns, 1_500_000_000);
        assert_eq!(st.cpu_user_ns, 1_000_000_000);
        assert_eq!(st.cpu_system_ns, 500_000_000);
        assert_eq!(st.throttling, (4, 1, 7000));
        assert_eq!(st.blkio_bytes("Read"), 4097);
        assert_eq!(st.blkio_bytes("Write"), 8192);
        assert_eq!(
            st.blkio[0],
            BlkioEntry {
                major: 8,
                minor: 0,
                op: "Read".into(),
                value: 4096
            }
        );
        assert_eq!(st.pids, Some(2));
        put(
            &f.0.join("berth/t"),
            &[("memory.current", "5\n"), ("memory.max", "1048576\n")],
        );
        let task = cg.stats("t", None).unwrap();
        assert_eq!((task.memory_usage, task.memory_limit), (5, Some(1 << 20)));
    }

    #[test]
    fn remove_takes_leaves_then_the_task_in_every_hierarchy() {
        let f = v1_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        for h in ["cpu", "pids", "unified"] {
            std::fs::create_dir_all(f.0.join(h).join("berth/t/app")).unwrap();
        }
        cg.remove_task("t").unwrap();
        for h in ["cpu", "pids", "unified"] {
            assert!(!f.0.join(h).join("berth/t").exists(), "{h}");
        }
    }
}
