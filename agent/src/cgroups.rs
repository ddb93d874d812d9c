//! Task cgroups behind a narrow trait. A task gets `<parent>/<task-id>` with the task's CFS
//! quota and memory limit; runc creates each container's leaf inside it from the spec's
//! `linux.cgroupsPath` and resources. Works on cgroup v1 (hybrid hosts) and v2.

use cgroups_rs::fs::{cpu::CpuController, hierarchies, memory::MemController, Cgroup};
use std::path::{Path, PathBuf};

/// CFS period, as ECS uses it.
pub const CFS_PERIOD_US: u64 = 100_000;

/// A cgroup failure, with the cgroup it concerns.
#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {message}")]
pub struct CgroupError {
    path: String,
    message: String,
}

#[cfg(test)]
impl CgroupError {
    /// An injected failure, for the engine's fakes.
    pub(crate) fn test(op: &str) -> Self {
        Self {
            path: "test".into(),
            message: format!("{op}: injected"),
        }
    }
}

/// What the engine needs from cgroups.
pub trait Cgroups: Send + Sync + 'static {
    /// Creates the task cgroup with its limits (task cpu units, task memory MiB).
    fn create_task(
        &self,
        task_id: &str,
        cpu_units: Option<i64>,
        memory_mib: Option<i64>,
    ) -> Result<(), CgroupError>;
    /// The `linux.cgroupsPath` for a container of the task.
    fn container_path(&self, task_id: &str, container: &str) -> String;
    /// Whether the kernel OOM-killed a process in the container (or its task) cgroup.
    fn oom_killed(&self, task_id: &str, container: &str) -> bool;
    /// Removes whatever is left of the task's cgroups, in every hierarchy.
    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError>;
}

/// The host's cgroups (cgroupfs).
pub struct HostCgroups {
    parent: String,
}

impl HostCgroups {
    /// Task cgroups go under `parent` (e.g. `berth`).
    pub fn new(parent: &str) -> Self {
        Self {
            parent: parent.trim_matches('/').to_string(),
        }
    }

    fn task_rel(&self, task_id: &str) -> String {
        format!("{}/{task_id}", self.parent)
    }
}

/// CFS quota for task cpu units: units/1024 of a period.
pub fn cfs_quota(cpu_units: i64) -> i64 {
    (cpu_units * CFS_PERIOD_US as i64 / 1024).max(1000)
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fstype = right.split_whitespace().next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        if let Some(mp) = left.split_whitespace().nth(4) {
            let p = PathBuf::from(mp);
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

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

impl Cgroups for HostCgroups {
    fn create_task(
        &self,
        task_id: &str,
        cpu_units: Option<i64>,
        memory_mib: Option<i64>,
    ) -> Result<(), CgroupError> {
        let rel = self.task_rel(task_id);
        let err = |m: String| CgroupError {
            path: rel.clone(),
            message: m,
        };
        let cg = Cgroup::new_with_specified_controllers(
            hierarchies::auto(),
            &rel,
            Some(vec!["cpu".to_string(), "memory".to_string()]),
        )
        .map_err(|e| err(format!("create: {e}")))?;
        if let Some(units) = cpu_units {
            let cpu: &CpuController = cg
                .controller_of()
                .ok_or_else(|| err("no cpu controller".into()))?;
            cpu.set_cfs_quota_and_period(Some(cfs_quota(units)), Some(CFS_PERIOD_US))
                .map_err(|e| err(format!("cpu quota: {e}")))?;
        }
        if let Some(mib) = memory_mib {
            let mem: &MemController = cg
                .controller_of()
                .ok_or_else(|| err("no memory controller".into()))?;
            mem.set_limit(mib * 1024 * 1024)
                .map_err(|e| err(format!("memory limit: {e}")))?;
        }
        Ok(())
    }

    fn container_path(&self, task_id: &str, container: &str) -> String {
        format!("/{}/{container}", self.task_rel(task_id))
    }

    fn oom_killed(&self, task_id: &str, container: &str) -> bool {
        let rel = self.task_rel(task_id);
        if hierarchies::is_cgroup2_unified_mode() {
            let base = Path::new("/sys/fs/cgroup").join(&rel);
            return read_counter(&base.join(container).join("memory.events"), "oom_kill") > 0;
        }
        let base = Path::new("/sys/fs/cgroup/memory").join(&rel);
        read_counter(&base.join(container).join("memory.oom_control"), "oom_kill") > 0
    }

    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError> {
        let rel = self.task_rel(task_id);
        let mut failures = Vec::new();
        for mount in cgroup_mounts() {
            let dir = mount.join(&rel);
            if !dir.exists() {
                continue;
            }
            // Leaves runc left (it removes its own, but not after a crash), then the task's.
            if let Ok(children) = std::fs::read_dir(&dir) {
                for c in children.flatten() {
                    if c.path().is_dir() {
                        if let Err(e) = std::fs::remove_dir(c.path()) {
                            failures.push(format!("{}: {e}", c.path().display()));
                        }
                    }
                }
            }
            if let Err(e) = std::fs::remove_dir(&dir) {
                failures.push(format!("{}: {e}", dir.display()));
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(CgroupError {
                path: rel,
                message: failures.join("; "),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn quota_is_units_over_1024_of_the_period() {
        assert_eq!(super::cfs_quota(512), 50_000);
        assert_eq!(super::cfs_quota(2048), 200_000);
    }
}
