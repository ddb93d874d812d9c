//! The container security baseline on real containerd + runc: what a process inside a container
//! sees of its capabilities, seccomp filter, no_new_privs flag, open-file limit and pids limit,
//! and how privileged containers are refused or given everything.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// What the probe prints: the status lines that matter, the open-file limits, and whether it
/// may make a user namespace (no capability needed: only a seccomp filter forbids it), and the
/// device nodes it sees.
const PROBE: &str = "grep -E '^(Seccomp|CapEff|NoNewPrivs):' /proc/self/status; echo nofile $(ulimit -n) $(ulimit -Hn); if unshare -U true 2>/dev/null; then echo unshare allowed; else echo unshare denied; fi; echo devs $(ls /dev); echo done; sleep 1000";

/// Docker's default capability set as CapEff shows it (chown, dac_override, fowner, fsetid,
/// kill, setgid, setuid, setpcap, net_bind_service, net_raw, sys_chroot, mknod, audit_write,
/// setfcap).
const DOCKER_DEFAULT_CAPS: &str = "00000000a80425fb";

fn field(log: &str, name: &str) -> String {
    log.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {name} in the container's output: {log}"))
}

/// Docker's default RLIMIT_NOFILE (1048576), or this process's hard limit when it is lower and
/// nothing here holds CAP_SYS_RESOURCE to raise it (the agent runs beside this test).
fn default_nofile() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let caps = u64::from_str_radix(&field(&status, "CapEff"), 16).unwrap_or(0);
    if caps & (1 << 24) != 0 {
        return 1_048_576;
    }
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))
        .and_then(|v| v.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(1_048_576, |h| h.min(1_048_576))
}

/// A block device of the host (top level of /dev), if it has one.
fn host_block_device() -> Option<String> {
    use std::os::unix::fs::FileTypeExt;
    std::fs::read_dir("/dev").ok()?.flatten().find_map(|e| {
        let ft = std::fs::symlink_metadata(e.path()).ok()?.file_type();
        ft.is_block_device()
            .then(|| e.file_name().to_string_lossy().into_owned())
    })
}

/// The device names the probe listed.
fn devs(out: &str) -> Vec<String> {
    out.lines()
        .find_map(|l| l.strip_prefix("devs "))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

fn probe_output(c: &Cluster, task: &str, container: &str) -> String {
    wait_for(&format!("{container}'s output"), T, || {
        let log = c.container_log(task, container);
        log.contains("done").then_some(log)
    })
}

#[test]
fn unprivileged_containers_get_seccomp_default_caps_nofile_and_a_pids_limit() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("baseline");
    let td = c.register(&format!(
        r#"{{"family": "baseline", "networkMode": "none",
        "containerDefinitions": [
          {{"name": "probe", "image": "{IMAGE}", "memory": 32, "command": ["sh", "-c", "{PROBE}"], "stopTimeout": 2,
            "ulimits": [{{"name": "nofile", "softLimit": 4096, "hardLimit": 8192}}]}},
          {{"name": "strict", "image": "{IMAGE}", "memory": 32, "command": ["sh", "-c", "{PROBE}"], "stopTimeout": 2,
            "essential": false, "dockerSecurityOptions": ["no-new-privileges"]}}
        ]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);

    let probe = probe_output(&c, &task, "probe");
    assert_eq!(field(&probe, "Seccomp"), "2", "a seccomp filter is on");
    assert_eq!(field(&probe, "CapEff"), DOCKER_DEFAULT_CAPS);
    assert_eq!(
        field(&probe, "NoNewPrivs"),
        "0",
        "off by default, as Docker"
    );
    if let Some(block) = host_block_device() {
        assert!(
            !devs(&probe).contains(&block),
            "no host device {block} in an unprivileged container: {probe}"
        );
    }
    assert!(
        probe.contains("unshare denied"),
        "the filter denies unshare without CAP_SYS_ADMIN: {probe}"
    );
    assert!(
        probe.contains("nofile 4096 8192"),
        "the nofile ulimit applies: {probe}"
    );

    let strict = probe_output(&c, &task, "strict");
    assert_eq!(field(&strict, "Seccomp"), "2");
    assert_eq!(
        field(&strict, "NoNewPrivs"),
        "1",
        "asked for by the definition"
    );
    let nofile = default_nofile();
    assert!(
        strict.contains(&format!("nofile {nofile} {nofile}")),
        "Docker's default open-file limit ({nofile} here): {strict}"
    );

    // The pids limit of each container's cgroup (v1 pids controller, or v2's unified tree).
    let id = task.rsplit('/').next().unwrap_or_default();
    let pids_max = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        std::path::PathBuf::from("/sys/fs/cgroup")
            .join(&c.cgroup_parent)
            .join(id)
            .join("probe/pids.max")
    } else {
        c.cgroup_dir("pids", &task, Some("probe")).join("pids.max")
    };
    assert_eq!(
        std::fs::read_to_string(&pids_max)
            .unwrap_or_else(|e| panic!("{}: {e}", pids_max.display()))
            .trim(),
        "4096",
        "the agent's default pids limit"
    );
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    c.wait_status(&task, "STOPPED", T);
}

fn attributes(c: &Cluster) -> Vec<String> {
    let arns = c.json(&["list-container-instances", "--cluster", &c.name]);
    let arn = arns["containerInstanceArns"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let d = c.json(&[
        "describe-container-instances",
        "--cluster",
        &c.name,
        "--container-instances",
        &arn,
    ]);
    d["containerInstances"][0]["attributes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x["name"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn privileged_td(c: &Cluster) -> String {
    c.register(&format!(
        r#"{{"family": "privileged", "networkMode": "none",
        "containerDefinitions": [
          {{"name": "admin", "image": "{IMAGE}", "memory": 32, "privileged": true, "stopTimeout": 2,
            "command": ["sh", "-c", "{PROBE}"]}}
        ]}}"#
    ))
}

#[test]
fn privileged_containers_are_refused_by_default() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("noprivileged");
    assert!(
        !attributes(&c).contains(&"ecs.capability.privileged-container".to_string()),
        "the agent does not advertise privileged containers: {:?}",
        attributes(&c)
    );
    // Placement avoids an instance that does not allow them (ECS's ATTRIBUTE failure); the
    // agent's own refusal (CannotCreateContainerError, for a task that reaches it anyway) is
    // spec::tests::privileged_is_refused_unless_the_agent_allows_it.
    let td = privileged_td(&c);
    let v = c.json(&["run-task", "--cluster", &c.name, "--task-definition", &td]);
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["failures"][0]["reason"], "ATTRIBUTE", "{v}");
    let detail = v["failures"][0]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("ecs.capability.privileged-container"),
        "{v}"
    );
    let listed = c.json(&["list-tasks", "--cluster", &c.name]);
    assert_eq!(
        listed["taskArns"].as_array().map(Vec::len),
        Some(0),
        "{listed}"
    );
    assert!(c.containerd_containers().is_empty());
}

#[test]
fn privileged_containers_get_every_capability_and_no_seccomp_when_allowed() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start_with_agent_env("privileged", &[("BERTH_ALLOW_PRIVILEGED", "true")]);
    assert!(
        attributes(&c).contains(&"ecs.capability.privileged-container".to_string()),
        "{:?}",
        attributes(&c)
    );
    let td = privileged_td(&c);
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    let out = probe_output(&c, &task, "admin");
    // Every capability this kernel has: the bounding set of this (root) test process.
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let host_bounding = field(&status, "CapBnd");
    assert_eq!(field(&out, "CapEff"), host_bounding, "{out}");
    assert_eq!(field(&out, "Seccomp"), "0", "no seccomp filter");
    assert_eq!(field(&out, "NoNewPrivs"), "0");
    assert!(out.contains("unshare allowed"), "{out}");
    if let Some(block) = host_block_device() {
        assert!(
            devs(&out).contains(&block),
            "the host's {block} is in a privileged container's /dev: {out}"
        );
    }
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    c.wait_status(&task, "STOPPED", T);
}

#[test]
fn a_bad_pids_limit_is_one_clear_line_without_root() {
    let out = std::process::Command::new(berth_tests::bin("berth-agent"))
        .args([
            "--pids-limit=-1",
            "--config",
            "/nonexistent/berth-agent.conf",
        ])
        .output()
        .expect("running berth-agent");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pids-limit") && err.contains("-1"), "{err}");
}
