//! Issue 9's task-definition rules, as ECS applies them at registration: health checks,
//! dependsOn (and the links and volumesFrom that order starts as well), start and stop
//! timeouts, restart policies, volumes and mount points, Linux parameters, PID and IPC
//! namespaces, system controls and environment files. Each refusal is a ClientException that
//! names the field (`containerDefinitions[1].dependsOn[0].condition`) and the rule; nothing is
//! stored. RunTask and StartTask check their environmentFiles overrides with
//! [`environment_files`].

use crate::error::EcsError;
use berth_proto::v1::{
    ContainerDefinition, EnvironmentFile, LinuxParameters, RegisterTaskDefinitionRequest, Volume,
};
use std::collections::{BTreeMap, HashSet};

fn refuse(field: impl std::fmt::Display, rule: impl std::fmt::Display) -> EcsError {
    EcsError::Client(format!("{field}: {rule}"))
}

/// ECS's healthCheck defaults, which DescribeTaskDefinition shows once registered (startPeriod
/// stays absent: off).
pub const HEALTH_CHECK_INTERVAL: i32 = 30;
/// See [`HEALTH_CHECK_INTERVAL`].
pub const HEALTH_CHECK_TIMEOUT: i32 = 5;
/// See [`HEALTH_CHECK_INTERVAL`].
pub const HEALTH_CHECK_RETRIES: i32 = 3;

/// The Linux capabilities ECS names in KernelCapabilities.add and .drop (without `CAP_`).
pub const CAPABILITIES: &[&str] = &[
    "ALL",
    "AUDIT_CONTROL",
    "AUDIT_WRITE",
    "BLOCK_SUSPEND",
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "IPC_LOCK",
    "IPC_OWNER",
    "KILL",
    "LEASE",
    "LINUX_IMMUTABLE",
    "MAC_ADMIN",
    "MAC_OVERRIDE",
    "MKNOD",
    "NET_ADMIN",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_RAW",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_CHROOT",
    "SYS_MODULE",
    "SYS_NICE",
    "SYS_PACCT",
    "SYS_PTRACE",
    "SYS_RAWIO",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "SYSLOG",
    "WAKE_ALARM",
];

/// The tmpfs mount options ECS accepts (Tmpfs.mountOptions).
pub const TMPFS_MOUNT_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "unbindable",
    "runbindable",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// The IPC-namespace kernel parameters ECS accepts in systemControls (and `fs.mqueue.*`).
const IPC_SYSCTLS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which namespace a systemControls parameter lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SysctlNamespace {
    /// `kernel.msg*`, `kernel.sem`, `kernel.shm*`, `fs.mqueue.*`.
    Ipc,
    /// `net.*`.
    Network,
}

/// The namespace of a kernel parameter ECS lets a container set, or `None` for one it does not
/// (not namespaced: it would change the host).
pub fn sysctl_namespace(name: &str) -> Option<SysctlNamespace> {
    if IPC_SYSCTLS.contains(&name)
        || name
            .strip_prefix("fs.mqueue.")
            .is_some_and(|r| !r.is_empty())
    {
        Some(SysctlNamespace::Ipc)
    } else if name.strip_prefix("net.").is_some_and(|r| !r.is_empty()) {
        Some(SysctlNamespace::Network)
    } else {
        None
    }
}

/// The task-level settings the container rules depend on.
struct TaskShape<'a> {
    network_mode: &'a str,
    fargate: bool,
    ipc_mode: Option<&'a str>,
    volumes: HashSet<&'a str>,
}

/// ECS's name rule for volumes (and link aliases): up to 255 letters, numbers, underscores and
/// hyphens.
fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 255
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// An absolute path with no `..` component (a host path checked against the agent's allow-list
/// by prefix must not climb out of it).
fn absolute_path(p: &str) -> Result<(), &'static str> {
    if !p.starts_with('/') {
        return Err("must be an absolute path (starting with /)");
    }
    if p.split('/').any(|s| s == "..") {
        return Err("must not contain '..' components");
    }
    Ok(())
}

/// The issue-9 rules of a RegisterTaskDefinition request whose basic shape (names, network
/// mode, compatibilities, resources) `validate` has already checked.
pub(super) fn check(
    req: &RegisterTaskDefinitionRequest,
    network_mode: &str,
    fargate: bool,
) -> Result<(), EcsError> {
    namespaces(req, fargate)?;
    let volumes = volumes(&req.volumes, fargate)?;
    let shape = TaskShape {
        network_mode,
        fargate,
        ipc_mode: req.ipc_mode.as_deref(),
        volumes,
    };
    for (i, c) in req.container_definitions.iter().enumerate() {
        container(i, c, &shape)?;
    }
    between_containers(&req.container_definitions, network_mode)
}

/// pidMode and ipcMode beyond their enums: Fargate takes pidMode task only and no ipcMode.
fn namespaces(req: &RegisterTaskDefinitionRequest, fargate: bool) -> Result<(), EcsError> {
    if !fargate {
        return Ok(());
    }
    if let Some(p) = req.pid_mode.as_deref().filter(|p| *p != "task") {
        return Err(refuse(
            "pidMode",
            format!(
                "'{p}' is not supported for task definitions that require FARGATE; only task is"
            ),
        ));
    }
    if let Some(i) = &req.ipc_mode {
        return Err(refuse(
            "ipcMode",
            format!("'{i}' is set, but ipcMode is not supported for task definitions that require FARGATE"),
        ));
    }
    Ok(())
}

/// The task's volumes: names valid and unique, at most one kind each, each kind's own rules.
/// Returns their names.
fn volumes(volumes: &[Volume], fargate: bool) -> Result<HashSet<&str>, EcsError> {
    let mut names = HashSet::new();
    for (k, v) in volumes.iter().enumerate() {
        let field = |f: &str| format!("volumes[{k}].{f}");
        if !valid_name(&v.name) {
            return Err(refuse(
                field("name"),
                format!(
                    "'{}' is not valid; up to 255 letters, numbers, hyphens, and underscores are allowed",
                    v.name
                ),
            ));
        }
        if !names.insert(v.name.as_str()) {
            return Err(refuse(
                field("name"),
                format!("'{}' is used by another volume; volume names must be unique within a task definition", v.name),
            ));
        }
        let kinds: Vec<&str> = [
            ("host", v.host.is_some()),
            (
                "dockerVolumeConfiguration",
                v.docker_volume_configuration.is_some(),
            ),
            (
                "efsVolumeConfiguration",
                v.efs_volume_configuration.is_some(),
            ),
        ]
        .into_iter()
        .filter_map(|(n, set)| set.then_some(n))
        .collect();
        if kinds.len() > 1 {
            return Err(refuse(
                format!("volumes[{k}]"),
                format!(
                    "volume '{}' sets {}; give at most one of host, dockerVolumeConfiguration and efsVolumeConfiguration (none makes a task-scoped volume)",
                    v.name,
                    kinds.join(" and ")
                ),
            ));
        }
        if let Some(p) = v.host.as_ref().and_then(|h| h.source_path.as_deref()) {
            if !p.is_empty() {
                if fargate {
                    return Err(refuse(
                        field("host.sourcePath"),
                        "is not supported for task definitions that require FARGATE",
                    ));
                }
                absolute_path(p)
                    .map_err(|rule| refuse(field("host.sourcePath"), format!("'{p}' {rule}")))?;
            }
        }
        if let Some(d) = &v.docker_volume_configuration {
            if fargate {
                return Err(refuse(
                    field("dockerVolumeConfiguration"),
                    "Docker volumes are not supported for task definitions that require FARGATE",
                ));
            }
            super::one_of(
                &field("dockerVolumeConfiguration.scope"),
                d.scope.as_deref(),
                &["task", "shared"],
            )?;
            if d.autoprovision == Some(true) && d.scope.as_deref() != Some("shared") {
                return Err(refuse(
                    field("dockerVolumeConfiguration.autoprovision"),
                    "applies only to volumes with scope shared",
                ));
            }
            if d.driver.as_deref().is_some_and(|s| s.trim().is_empty()) {
                return Err(refuse(
                    field("dockerVolumeConfiguration.driver"),
                    "is empty; name the volume driver (\"local\") or leave it out",
                ));
            }
        }
        if let Some(e) = &v.efs_volume_configuration {
            efs(&field, e)?;
        }
    }
    Ok(names)
}

fn efs(
    field: &dyn Fn(&str) -> String,
    e: &berth_proto::v1::EfsVolumeConfiguration,
) -> Result<(), EcsError> {
    if e.file_system_id.trim().is_empty() {
        return Err(refuse(
            field("efsVolumeConfiguration.fileSystemId"),
            "is required",
        ));
    }
    super::one_of(
        &field("efsVolumeConfiguration.transitEncryption"),
        e.transit_encryption.as_deref(),
        &["ENABLED", "DISABLED"],
    )?;
    if let Some(p) = e
        .transit_encryption_port
        .filter(|p| !(1..=65535).contains(p))
    {
        return Err(refuse(
            field("efsVolumeConfiguration.transitEncryptionPort"),
            format!("{p} is not a port (1-65535)"),
        ));
    }
    let encrypted = e.transit_encryption.as_deref() == Some("ENABLED");
    if let Some(a) = &e.authorization_config {
        super::one_of(
            &field("efsVolumeConfiguration.authorizationConfig.iam"),
            a.iam.as_deref(),
            &["ENABLED", "DISABLED"],
        )?;
        if a.iam.as_deref() == Some("ENABLED") && !encrypted {
            return Err(refuse(
                field("efsVolumeConfiguration.authorizationConfig.iam"),
                "ENABLED needs transitEncryption ENABLED",
            ));
        }
        if a.access_point_id.as_deref().is_some_and(|s| !s.is_empty()) {
            if !encrypted {
                return Err(refuse(
                    field("efsVolumeConfiguration.authorizationConfig.accessPointId"),
                    "an access point needs transitEncryption ENABLED",
                ));
            }
            if e.root_directory.as_deref().is_some_and(|r| r != "/") {
                return Err(refuse(
                    field("efsVolumeConfiguration.rootDirectory"),
                    "must be omitted or \"/\" when an access point is given (the access point's path applies)",
                ));
            }
        }
    }
    Ok(())
}

/// One container's issue-9 fields.
fn container(i: usize, c: &ContainerDefinition, t: &TaskShape<'_>) -> Result<(), EcsError> {
    let field = |f: &str| format!("containerDefinitions[{i}].{f}");
    let who = format!("container '{}'", c.name);
    health_check(&field, c)?;
    for (name, value) in [
        ("startTimeout", c.start_timeout),
        ("stopTimeout", c.stop_timeout),
    ] {
        match value {
            // ECS: "The valid values for Fargate are 2-120 seconds"; elsewhere only the agent's
            // own limits apply.
            Some(v) if t.fargate && !(2..=120).contains(&v) => {
                return Err(refuse(
                    field(name),
                    format!("{v} for {who} is outside 2-120 seconds, FARGATE's range (the task definition requires FARGATE)"),
                ))
            }
            Some(v) if v < 0 => {
                return Err(refuse(
                    field(name),
                    format!("{v} for {who} must not be negative"),
                ))
            }
            _ => {}
        }
    }
    if let Some(r) = &c.restart_policy {
        if r.ignored_exit_codes.len() > 50 {
            return Err(refuse(
                field("restartPolicy.ignoredExitCodes"),
                format!(
                    "{} exit codes given for {who}; at most 50 are allowed",
                    r.ignored_exit_codes.len()
                ),
            ));
        }
        if let Some(p) = r
            .restart_attempt_period
            .filter(|p| !(60..=1800).contains(p))
        {
            return Err(refuse(
                field("restartPolicy.restartAttemptPeriod"),
                format!("{p} for {who} is outside 60-1800 seconds"),
            ));
        }
    }
    let mut paths = HashSet::new();
    for (j, m) in c.mount_points.iter().enumerate() {
        let mf = |f: &str| field(&format!("mountPoints[{j}].{f}"));
        if !t.volumes.contains(m.source_volume.as_str()) {
            return Err(refuse(
                mf("sourceVolume"),
                format!(
                    "'{}' is not a volume of this task definition",
                    m.source_volume
                ),
            ));
        }
        absolute_path(&m.container_path).map_err(|rule| {
            refuse(
                mf("containerPath"),
                format!("'{}' {rule}", m.container_path),
            )
        })?;
        if !paths.insert(m.container_path.trim_end_matches('/')) {
            return Err(refuse(
                mf("containerPath"),
                format!("'{}' is mounted twice in {who}", m.container_path),
            ));
        }
    }
    if let Some(lp) = &c.linux_parameters {
        linux_parameters(&field, &who, lp, t.fargate)?;
    }
    for (j, s) in c.system_controls.iter().enumerate() {
        let sf = |f: &str| field(&format!("systemControls[{j}].{f}"));
        if s.namespace.trim().is_empty() {
            return Err(refuse(sf("namespace"), "is required"));
        }
        if s.value.is_empty() {
            return Err(refuse(
                sf("value"),
                format!("is required for '{}'", s.namespace),
            ));
        }
        match sysctl_namespace(&s.namespace) {
            None => {
                return Err(refuse(
                    sf("namespace"),
                    format!(
                        "'{}' is not a namespaced kernel parameter a container may set; ECS accepts the IPC ones ({}, fs.mqueue.*) and the network ones (net.*)",
                        s.namespace,
                        IPC_SYSCTLS.join(", ")
                    ),
                ))
            }
            Some(SysctlNamespace::Network) if t.network_mode == "host" => {
                return Err(refuse(
                    sf("namespace"),
                    format!("'{}': network namespace systemControls are not supported in the host network mode", s.namespace),
                ))
            }
            Some(SysctlNamespace::Ipc) if t.ipc_mode == Some("host") => {
                return Err(refuse(
                    sf("namespace"),
                    format!("'{}': IPC namespace systemControls are not supported with ipcMode host", s.namespace),
                ))
            }
            Some(_) => {}
        }
    }
    environment_files(&field("environmentFiles"), &c.environment_files)
        .map_err(EcsError::Client)?;
    Ok(())
}

fn health_check(field: &dyn Fn(&str) -> String, c: &ContainerDefinition) -> Result<(), EcsError> {
    let Some(h) = &c.health_check else {
        return Ok(());
    };
    let hf = |f: &str| field(&format!("healthCheck.{f}"));
    let rest = h.command.get(1..).unwrap_or_default();
    match h.command.first().map(String::as_str) {
        Some("CMD") if rest.first().is_some_and(|e| !e.trim().is_empty()) => {}
        Some("CMD") => {
            return Err(refuse(
                hf("command"),
                "\"CMD\" must be followed by the executable and its arguments ([\"CMD\", \"/bin/check\", \"--arg\"])",
            ))
        }
        // Docker (which ECS hands the check to) joins the elements after CMD-SHELL with
        // spaces into one command line; so does the agent.
        Some("CMD-SHELL") if rest.iter().any(|e| !e.trim().is_empty()) => {}
        Some("CMD-SHELL") => {
            return Err(refuse(
                hf("command"),
                "\"CMD-SHELL\" must be followed by the shell command line ([\"CMD-SHELL\", \"curl -f http://localhost/ || exit 1\"])",
            ))
        }
        Some(other) => {
            return Err(refuse(
                hf("command"),
                format!("starts with '{other}'; it must start with \"CMD\" or \"CMD-SHELL\""),
            ))
        }
        None => {
            return Err(refuse(
                hf("command"),
                "is required: [\"CMD\", exe, args...] or [\"CMD-SHELL\", \"command line\"]",
            ))
        }
    }
    for (name, value, lo, hi) in [
        ("interval", h.interval, 5, 300),
        ("timeout", h.timeout, 2, 60),
        ("retries", h.retries, 1, 10),
        ("startPeriod", h.start_period, 0, 300),
    ] {
        if let Some(v) = value.filter(|v| !(lo..=hi).contains(v)) {
            return Err(refuse(hf(name), format!("{v} is outside {lo}-{hi}")));
        }
    }
    Ok(())
}

fn linux_parameters(
    field: &dyn Fn(&str) -> String,
    who: &str,
    lp: &LinuxParameters,
    fargate: bool,
) -> Result<(), EcsError> {
    let lf = |f: &str| field(&format!("linuxParameters.{f}"));
    let not_on_fargate = |f: &str| {
        refuse(
            lf(f),
            format!("is not supported for task definitions that require FARGATE ({who})"),
        )
    };
    if let Some(caps) = &lp.capabilities {
        for (list, names) in [("add", &caps.add), ("drop", &caps.drop)] {
            for (j, cap) in names.iter().enumerate() {
                let at = lf(&format!("capabilities.{list}[{j}]"));
                if !CAPABILITIES.contains(&cap.as_str()) {
                    let hint = match cap.strip_prefix("CAP_") {
                        Some(bare) if CAPABILITIES.contains(&bare) => {
                            format!("; ECS names capabilities without the CAP_ prefix: '{bare}'")
                        }
                        _ => String::new(),
                    };
                    return Err(refuse(
                        at,
                        format!("'{cap}' is not a Linux capability ECS names{hint}"),
                    ));
                }
                if fargate && list == "add" && cap != "SYS_PTRACE" {
                    return Err(refuse(
                        at,
                        format!("'{cap}' cannot be added for task definitions that require FARGATE; only SYS_PTRACE can"),
                    ));
                }
            }
        }
    }
    if fargate {
        if !lp.devices.is_empty() {
            return Err(not_on_fargate("devices"));
        }
        if lp.shared_memory_size.is_some() {
            return Err(not_on_fargate("sharedMemorySize"));
        }
        if !lp.tmpfs.is_empty() {
            return Err(not_on_fargate("tmpfs"));
        }
        if lp.max_swap.is_some() {
            return Err(not_on_fargate("maxSwap"));
        }
        if lp.swappiness.is_some() {
            return Err(not_on_fargate("swappiness"));
        }
    }
    for (j, d) in lp.devices.iter().enumerate() {
        let df = |f: &str| lf(&format!("devices[{j}].{f}"));
        if d.host_path.is_empty() {
            return Err(refuse(df("hostPath"), "is required"));
        }
        absolute_path(&d.host_path)
            .map_err(|rule| refuse(df("hostPath"), format!("'{}' {rule}", d.host_path)))?;
        if let Some(p) = d.container_path.as_deref().filter(|p| !p.is_empty()) {
            absolute_path(p)
                .map_err(|rule| refuse(df("containerPath"), format!("'{p}' {rule}")))?;
        }
        for p in &d.permissions {
            super::one_of(&df("permissions"), Some(p), &["read", "write", "mknod"])?;
        }
    }
    let mut tmpfs_paths = HashSet::new();
    for (j, t) in lp.tmpfs.iter().enumerate() {
        let tf = |f: &str| lf(&format!("tmpfs[{j}].{f}"));
        if t.container_path.is_empty() {
            return Err(refuse(tf("containerPath"), "is required"));
        }
        absolute_path(&t.container_path).map_err(|rule| {
            refuse(
                tf("containerPath"),
                format!("'{}' {rule}", t.container_path),
            )
        })?;
        if !tmpfs_paths.insert(t.container_path.trim_end_matches('/')) {
            return Err(refuse(
                tf("containerPath"),
                format!("'{}' is given twice", t.container_path),
            ));
        }
        if t.size <= 0 {
            return Err(refuse(
                tf("size"),
                format!("{} is not a positive number of MiB", t.size),
            ));
        }
        for o in &t.mount_options {
            // Options with values (mode=1777, uid=1000) are named by what precedes the '='.
            let name = o.split_once('=').map_or(o.as_str(), |(n, _)| n);
            if !TMPFS_MOUNT_OPTIONS.contains(&name) {
                return Err(refuse(
                    tf("mountOptions"),
                    format!("'{o}' is not a tmpfs mount option ECS accepts"),
                ));
            }
        }
    }
    if let Some(s) = lp.shared_memory_size.filter(|s| *s <= 0) {
        return Err(refuse(
            lf("sharedMemorySize"),
            format!("{s} is not a positive number of MiB"),
        ));
    }
    if let Some(s) = lp.max_swap.filter(|s| *s < 0) {
        return Err(refuse(lf("maxSwap"), format!("{s} must not be negative")));
    }
    if let Some(s) = lp.swappiness.filter(|s| !(0..=100).contains(s)) {
        return Err(refuse(lf("swappiness"), format!("{s} is outside 0-100")));
    }
    Ok(())
}

/// A container's environmentFiles, or a container override's (`list` names the list:
/// `containerDefinitions[0].environmentFiles`): at most ten, each of Berth's type `file` with
/// an absolute host path (the agent reads it, under its --allowed-host-paths). ECS's type `s3`
/// is refused by name. The error is the whole message; the caller makes it a ClientException
/// or an InvalidParameterException.
pub fn environment_files(list: &str, files: &[EnvironmentFile]) -> Result<(), String> {
    if files.len() > 10 {
        return Err(format!(
            "{list}: {} environment files given; at most 10 are allowed",
            files.len()
        ));
    }
    for (j, f) in files.iter().enumerate() {
        match f.r#type.as_str() {
            "file" => {
                absolute_path(&f.value)
                    .map_err(|rule| format!("{list}[{j}].value: '{}' {rule}", f.value))?;
            }
            "s3" => {
                return Err(format!(
                    "{list}[{j}].type: s3 is not supported by Berth: ECS reads these files from Amazon S3, which is not there on premises; put the file on the host and give type \"file\" with its absolute path (under the agent's --allowed-host-paths)"
                ))
            }
            other => {
                return Err(format!(
                    "{list}[{j}].type: '{other}' is not a type Berth reads; use \"file\" with an absolute host path"
                ))
            }
        }
    }
    Ok(())
}

/// Why one container waits for another: its dependsOn, links and volumesFrom.
#[derive(Clone, Copy)]
enum Edge {
    DependsOn,
    Link,
    VolumesFrom,
}

impl Edge {
    fn name(self) -> &'static str {
        match self {
            Edge::DependsOn => "dependsOn",
            Edge::Link => "links",
            Edge::VolumesFrom => "volumesFrom",
        }
    }
}

/// The rules that look at several containers: dependsOn targets and conditions, links,
/// volumesFrom, and no cycle among them (each orders starts: the agent could start none of a
/// cycle).
fn between_containers(
    containers: &[ContainerDefinition],
    network_mode: &str,
) -> Result<(), EcsError> {
    let index: BTreeMap<&str, usize> = containers
        .iter()
        .enumerate()
        .map(|(i, c)| (c.name.as_str(), i))
        .collect();
    let other = |i: usize, name: &str| index.get(name).copied().filter(|&j| j != i);
    // edges[i]: (target, why).
    let mut edges: Vec<Vec<(usize, Edge)>> = vec![Vec::new(); containers.len()];
    for (i, c) in containers.iter().enumerate() {
        let field = |f: &str| format!("containerDefinitions[{i}].{f}");
        for (j, d) in c.depends_on.iter().enumerate() {
            let df = |f: &str| field(&format!("dependsOn[{j}].{f}"));
            let Some(target) = other(i, &d.container_name) else {
                return Err(refuse(
                    df("containerName"),
                    format!(
                        "'{}' is not another container of this task definition",
                        d.container_name
                    ),
                ));
            };
            let t = &containers[target];
            match d.condition.as_str() {
                "START" => {}
                "HEALTHY" if t.health_check.is_none() => {
                    return Err(refuse(
                        df("condition"),
                        format!("HEALTHY needs container '{}' to have a healthCheck", t.name),
                    ))
                }
                "HEALTHY" => {}
                "COMPLETE" | "SUCCESS" if t.essential.unwrap_or(true) => {
                    return Err(refuse(
                        df("condition"),
                        format!(
                            "{} cannot be set on an essential container; container '{}' is essential (its exit would stop the task)",
                            d.condition, t.name
                        ),
                    ))
                }
                "COMPLETE" | "SUCCESS" => {}
                other => {
                    return Err(refuse(
                        df("condition"),
                        format!("'{other}' is not one of START, COMPLETE, SUCCESS, HEALTHY"),
                    ))
                }
            }
            edges[i].push((target, Edge::DependsOn));
        }
        if !c.links.is_empty() && network_mode != "bridge" {
            return Err(refuse(
                field("links"),
                format!("links are supported only in the bridge network mode, not {network_mode}"),
            ));
        }
        for (j, l) in c.links.iter().enumerate() {
            let (name, alias) = l.split_once(':').unwrap_or((l.as_str(), l.as_str()));
            let Some(target) = other(i, name) else {
                return Err(refuse(
                    field(&format!("links[{j}]")),
                    format!("'{name}' is not another container of this task definition"),
                ));
            };
            if !valid_name(alias) {
                return Err(refuse(
                    field(&format!("links[{j}]")),
                    format!("alias '{alias}' is not valid; up to 255 letters, numbers, hyphens, and underscores are allowed"),
                ));
            }
            edges[i].push((target, Edge::Link));
        }
        for (j, v) in c.volumes_from.iter().enumerate() {
            let Some(target) = other(i, &v.source_container) else {
                return Err(refuse(
                    field(&format!("volumesFrom[{j}].sourceContainer")),
                    format!(
                        "'{}' is not another container of this task definition",
                        v.source_container
                    ),
                ));
            };
            edges[i].push((target, Edge::VolumesFrom));
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        let first = cycle[0].0;
        let path: Vec<String> = cycle
            .iter()
            .map(|(i, e)| format!("'{}' ({} →)", containers[*i].name, e.name()))
            .chain(std::iter::once(format!("'{}'", containers[first].name)))
            .collect();
        return Err(refuse(
            format!("containerDefinitions[{first}]"),
            format!(
                "the containers wait for each other in a cycle, so none of them could start: {}",
                path.join(" ")
            ),
        ));
    }
    Ok(())
}

/// A cycle in `edges`, as (container, the edge it leaves by), rotated to start at its
/// lowest-numbered container.
fn find_cycle(edges: &[Vec<(usize, Edge)>]) -> Option<Vec<(usize, Edge)>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(
        n: usize,
        edges: &[Vec<(usize, Edge)>],
        marks: &mut [Mark],
        stack: &mut Vec<(usize, Edge)>,
    ) -> Option<Vec<(usize, Edge)>> {
        marks[n] = Mark::Open;
        for &(m, e) in &edges[n] {
            stack.push((n, e));
            match marks[m] {
                Mark::Open => {
                    let start = stack.iter().position(|(k, _)| *k == m).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    let lowest = (0..cycle.len()).min_by_key(|&k| cycle[k].0).unwrap_or(0);
                    cycle.rotate_left(lowest);
                    return Some(cycle);
                }
                Mark::New => {
                    if let Some(c) = visit(m, edges, marks, stack) {
                        return Some(c);
                    }
                }
                Mark::Done => {}
            }
            stack.pop();
        }
        marks[n] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; edges.len()];
    for n in 0..edges.len() {
        if marks[n] == Mark::New {
            if let Some(c) = visit(n, edges, &mut marks, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}

/// The defaults ECS fills in and DescribeTaskDefinition shows: a healthCheck's interval,
/// timeout and retries.
pub(crate) fn fill_defaults(c: &mut ContainerDefinition) {
    if let Some(h) = &mut c.health_check {
        h.interval.get_or_insert(HEALTH_CHECK_INTERVAL);
        h.timeout.get_or_insert(HEALTH_CHECK_TIMEOUT);
        h.retries.get_or_insert(HEALTH_CHECK_RETRIES);
    }
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
