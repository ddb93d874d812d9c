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
    /// Whether the kernel OOM-killed a process in the container's cgroup.
    fn oom_killed(&self, task_id: &str, container: &str) -> bool;
    /// Removes whatever is left of the task's cgroups, in every hierarchy.
    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError>;
}

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

    fn oom_killed(&self, task_id: &str, container: &str) -> bool {
        let rel = self.task_rel(task_id);
        match self.layout {
            Layout::Unified => {
                let file = self.root.join(&rel).join(container).join("memory.events");
                read_counter(&file, "oom_kill") > 0
            }
            Layout::V1 => {
                let file = self
                    .root
                    .join("memory")
                    .join(&rel)
                    .join(container)
                    .join("memory.oom_control");
                read_counter(&file, "oom_kill") > 0
            }
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
        assert!(!cg.oom_killed("t", "app"));
        std::fs::write(
            leaf.join("memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n",
        )
        .unwrap();
        assert!(cg.oom_killed("t", "app"));
        assert!(!cg.oom_killed("t", "other"), "no file: not OOM-killed");

        let f = v2_root();
        let cg = HostCgroups::with_root(&f.0, "berth");
        let leaf = f.0.join("berth/t/app");
        std::fs::create_dir_all(&leaf).unwrap();
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 0\n",
        )
        .unwrap();
        assert!(
            !cg.oom_killed("t", "app"),
            "oom without a kill is not a kill"
        );
        std::fs::write(
            leaf.join("memory.events"),
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        )
        .unwrap();
        assert!(cg.oom_killed("t", "app"));
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
