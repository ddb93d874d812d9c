//! RegisterTaskDefinition's rules, as ECS applies them. Each failure names the field and the rule.

use crate::error::EcsError;
use berth_proto::v1::{ContainerDefinition, RegisterTaskDefinitionRequest};
use std::collections::HashSet;

pub mod lifecycle;
pub mod log_configuration;

/// Network modes a task definition may name.
pub const NETWORK_MODES: [&str; 4] = ["bridge", "host", "awsvpc", "none"];
/// Launch types a task definition may require.
pub const COMPATIBILITIES: [&str; 4] = ["EC2", "FARGATE", "EXTERNAL", "MANAGED_INSTANCES"];

fn invalid(msg: String) -> EcsError {
    EcsError::Client(msg)
}

/// A task-level size: a plain number (CPU units or MiB), or a number with `suffix` (any case,
/// spaces allowed) counted in 1024 units each ("0.5 vCPU" → 512, "2 GB" → 2048).
fn parse_task_size(s: &str, suffix: &str) -> Option<i64> {
    let t = s.trim();
    if let Ok(n) = t.parse::<i64>() {
        return Some(n);
    }
    let lower = t.to_ascii_lowercase();
    let num = lower.strip_suffix(suffix)?.trim();
    let v: f64 = num.parse().ok()?;
    Some((v * 1024.0).round() as i64)
}

/// Task-level cpu: "256" (units) or "0.25 vCPU" / "1 vcpu". Returns CPU units.
pub fn parse_task_cpu(s: &str) -> Option<i64> {
    parse_task_size(s, "vcpu")
}

/// Task-level memory: "512" (MiB) or "1 GB" / "2GB". Returns MiB.
pub fn parse_task_memory(s: &str) -> Option<i64> {
    parse_task_size(s, "gb")
}

/// What a task reserves on its instance, in cpu units and MiB: the task-level values when given,
/// else the sums of its containers' (memoryReservation when set, as ECS reserves, else memory).
pub(crate) fn task_needs(
    cpu: Option<&str>,
    memory: Option<&str>,
    containers: &[berth_proto::v1::ContainerDefinition],
) -> (i64, i64) {
    let cpu = cpu
        .and_then(parse_task_cpu)
        .unwrap_or_else(|| containers.iter().map(|c| c.cpu.unwrap_or(0) as i64).sum());
    let memory = memory.and_then(parse_task_memory).unwrap_or_else(|| {
        containers
            .iter()
            .map(|c| c.memory_reservation.or(c.memory).unwrap_or(0) as i64)
            .sum()
    });
    (cpu, memory)
}

/// A task-level cpu value (registration or RunTask overrides), in CPU units within ECS's
/// 128-196608 (0.125-192 vCPU); `field` names it.
pub(crate) fn task_cpu_value(field: &str, s: &str) -> Result<i64, EcsError> {
    match parse_task_cpu(s) {
        Some(n) if (128..=196_608).contains(&n) => Ok(n),
        Some(n) if n > 0 => Err(invalid(format!(
            "{field}: task cpu {n} is outside 128-196608 CPU units (0.125-192 vCPU)"
        ))),
        _ => Err(invalid(format!(
            "{field}: task cpu '{s}' is not valid; give a positive number of CPU units (\"512\") or vCPUs (\"0.5 vCPU\")"
        ))),
    }
}

/// A task-level memory value (registration or RunTask overrides), in MiB; `field` names it.
pub(crate) fn task_memory_value(field: &str, s: &str) -> Result<i64, EcsError> {
    match parse_task_memory(s) {
        Some(n) if n > 0 => Ok(n),
        _ => Err(invalid(format!(
            "{field}: task memory '{s}' is not valid; give a positive number of MiB (\"1024\") or GB (\"1 GB\")"
        ))),
    }
}

/// Whether a task cpu/memory pair is one Fargate offers (the guide's table).
pub fn fargate_pair_ok(cpu: i64, memory: i64) -> bool {
    let gib = |g: i64| g * 1024;
    match cpu {
        256 => [512, gib(1), gib(2)].contains(&memory),
        512 => (1..=4).map(gib).any(|m| m == memory),
        1024 => (2..=8).map(gib).any(|m| m == memory),
        2048 => (4..=16).map(gib).any(|m| m == memory),
        4096 => (8..=30).map(gib).any(|m| m == memory),
        8192 => (16..=60).step_by(4).map(gib).any(|m| m == memory),
        16384 => (32..=120).step_by(8).map(gib).any(|m| m == memory),
        _ => false,
    }
}

fn valid_family(f: &str) -> bool {
    !f.is_empty()
        && f.len() <= 255
        && f.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Docker's ulimit names (the agent applies them as RLIMIT_<NAME>).
const ULIMIT_NAMES: [&str; 15] = [
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "rttime",
    "sigpending",
    "stack",
];

/// The dockerSecurityOptions entries the agent applies.
const NO_NEW_PRIVILEGES: [&str; 5] = [
    "no-new-privileges",
    "no-new-privileges:true",
    "no-new-privileges=true",
    "no-new-privileges:false",
    "no-new-privileges=false",
];

/// Checks a RegisterTaskDefinition request. Returns the task cpu/memory normalised to numbers.
pub fn validate(
    req: &RegisterTaskDefinitionRequest,
) -> Result<(Option<i64>, Option<i64>), EcsError> {
    if req.family.is_empty() {
        return Err(invalid(
            "family: is required; name the task definition family".into(),
        ));
    }
    if !valid_family(&req.family) {
        return Err(invalid(format!(
            "family: '{}' is not valid; up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed",
            req.family
        )));
    }
    let network_mode = req.network_mode.as_deref().unwrap_or("bridge");
    if !NETWORK_MODES.contains(&network_mode) {
        return Err(invalid(format!(
            "networkMode: '{network_mode}' is not one of bridge, host, awsvpc, none"
        )));
    }
    for c in &req.requires_compatibilities {
        if !COMPATIBILITIES.contains(&c.as_str()) {
            return Err(invalid(format!(
                "requiresCompatibilities: '{c}' is not one of EC2, FARGATE, EXTERNAL, MANAGED_INSTANCES"
            )));
        }
    }
    let task_cpu = req
        .cpu
        .as_deref()
        .map(|s| task_cpu_value("cpu", s))
        .transpose()?;
    let task_memory = req
        .memory
        .as_deref()
        .map(|s| task_memory_value("memory", s))
        .transpose()?;
    let fargate = req.requires_compatibilities.iter().any(|c| c == "FARGATE");
    if fargate {
        if network_mode != "awsvpc" {
            return Err(invalid(format!(
                "networkMode: task definitions that require FARGATE must use awsvpc, not {network_mode}"
            )));
        }
        match (task_cpu, task_memory) {
            (Some(cpu), Some(mem)) if fargate_pair_ok(cpu, mem) => {}
            (Some(cpu), Some(mem)) => {
                return Err(invalid(format!(
                    "cpu/memory: task cpu {cpu} with memory {mem} is not a FARGATE combination; see the valid pairs (256: 512-2048, 512: 1024-4096, 1024: 2048-8192, 2048: 4096-16384, 4096: 8192-30720, 8192: 16384-61440 in 4096 steps, 16384: 32768-122880 in 8192 steps)"
                )))
            }
            _ => {
                return Err(invalid(
                    "cpu/memory: task definitions that require FARGATE must set task-level cpu and memory".into(),
                ))
            }
        }
    }
    let containers = &req.container_definitions;
    if containers.is_empty() {
        return Err(invalid(
            "containerDefinitions: at least one container definition is required".into(),
        ));
    }
    if containers.len() > 10 {
        return Err(invalid(format!(
            "containerDefinitions: {} containers given; a task definition holds at most 10",
            containers.len()
        )));
    }
    let mut names = HashSet::new();
    for (i, c) in containers.iter().enumerate() {
        validate_container(i, c, network_mode, task_cpu, task_memory)?;
        if !names.insert(c.name.as_str()) {
            return Err(invalid(format!(
                "containerDefinitions[{i}].name: '{}' is used by another container; container names must be unique within a task definition",
                c.name
            )));
        }
    }
    if !containers.iter().any(|c| c.essential.unwrap_or(true)) {
        return Err(invalid(
            "containerDefinitions: no container is essential; at least one container must have essential true".into(),
        ));
    }
    containers_cpu_fit(
        "containerDefinitions",
        containers,
        task_cpu.map(|c| (c, "the task cpu")),
    )?;
    one_of("pidMode", req.pid_mode.as_deref(), &["host", "task"])?;
    one_of(
        "ipcMode",
        req.ipc_mode.as_deref(),
        &["host", "task", "none"],
    )?;
    lifecycle::check(req, network_mode, fargate)?;
    if let Some(p) = &req.runtime_platform {
        one_of(
            "runtimePlatform.cpuArchitecture",
            p.cpu_architecture.as_deref(),
            &["X86_64", "ARM64"],
        )?;
        one_of(
            "runtimePlatform.operatingSystemFamily",
            p.operating_system_family.as_deref(),
            OS_FAMILIES,
        )?;
    }
    if let Some(e) = &req.ephemeral_storage {
        if !(21..=200).contains(&e.size_in_gi_b) {
            return Err(invalid(format!(
                "ephemeralStorage.sizeInGiB: {} is outside 21-200 GiB",
                e.size_in_gi_b
            )));
        }
    }
    for (i, p) in req.placement_constraints.iter().enumerate() {
        if p.r#type != "memberOf" {
            return Err(invalid(format!(
                "placementConstraints[{i}].type: '{}' is not memberOf, the only constraint a task definition takes",
                p.r#type
            )));
        }
    }
    Ok((task_cpu, task_memory))
}

/// The operating system families ECS names (runtimePlatform.operatingSystemFamily).
const OS_FAMILIES: &[&str] = &[
    "LINUX",
    "WINDOWS_SERVER_2019_FULL",
    "WINDOWS_SERVER_2019_CORE",
    "WINDOWS_SERVER_2016_FULL",
    "WINDOWS_SERVER_2004_CORE",
    "WINDOWS_SERVER_2022_CORE",
    "WINDOWS_SERVER_2022_FULL",
    "WINDOWS_SERVER_2025_CORE",
    "WINDOWS_SERVER_2025_FULL",
    "WINDOWS_SERVER_20H2_CORE",
];

/// An enum-valued field: absent, or one of ECS's spellings.
fn one_of(field: &str, value: Option<&str>, allowed: &[&str]) -> Result<(), EcsError> {
    match value {
        Some(v) if !allowed.contains(&v) => Err(invalid(format!(
            "{field}: '{v}' is not one of {}",
            allowed.join(", ")
        ))),
        _ => Ok(()),
    }
}

/// The container fields whose values ECS checks by enum or range and Berth does not act on yet:
/// checked now, so a definition that registers here registers on ECS too.
fn validate_container_shapes(i: usize, c: &ContainerDefinition) -> Result<(), EcsError> {
    let field = |f: &str| format!("containerDefinitions[{i}].{f}");
    one_of(
        &field("versionConsistency"),
        c.version_consistency.as_deref(),
        &["enabled", "disabled"],
    )?;
    if let Some(l) = &c.log_configuration {
        log_configuration::validate(i, &c.name, l)?;
    }
    for (j, p) in c.port_mappings.iter().enumerate() {
        one_of(
            &field(&format!("portMappings[{j}].appProtocol")),
            p.app_protocol.as_deref(),
            &["http", "http2", "grpc"],
        )?;
    }
    for (j, h) in c.extra_hosts.iter().enumerate() {
        if h.hostname.is_empty() || h.ip_address.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(format!(
                "{}: '{}' '{}' is not a hostname with an IP address",
                field(&format!("extraHosts[{j}]")),
                h.hostname,
                h.ip_address
            )));
        }
    }
    if let Some(r) = &c.repository_credentials {
        if r.credentials_parameter.is_empty() {
            return Err(invalid(format!(
                "{}: is required",
                field("repositoryCredentials.credentialsParameter")
            )));
        }
        // Its form, as a secret's valueFrom is checked; it resolves when the task starts.
        crate::security::secrets::parse_credentials_parameter(&r.credentials_parameter).map_err(
            |e| {
                invalid(format!(
                    "{}: container '{}': {e}",
                    field("repositoryCredentials.credentialsParameter"),
                    c.name
                ))
            },
        )?;
    }
    Ok(())
}

/// A container's cpu, memory and memoryReservation against each other and against the task's
/// cpu and memory (each with the words that name it: "the task cpu", "overrides.cpu"), as
/// registration checks them; RunTask checks the containers its overrides make the same way.
/// `field` names a member of the container ("containerDefinitions[0].memory").
pub(crate) fn container_resources(
    field: &dyn Fn(&str) -> String,
    c: &ContainerDefinition,
    task_cpu: Option<(i64, &str)>,
    task_memory: Option<(i64, &str)>,
) -> Result<(), EcsError> {
    let who = format!("container '{}'", c.name);
    if let Some(cpu) = c.cpu {
        if cpu < 0 {
            return Err(invalid(format!(
                "{}: {cpu} for {who} is not valid; cpu units must not be negative",
                field("cpu")
            )));
        }
        if let Some((tc, task)) = task_cpu {
            if cpu as i64 > tc {
                return Err(invalid(format!(
                    "{}: {cpu} for {who} is more than {task} {tc}",
                    field("cpu")
                )));
            }
        }
    }
    if let Some(m) = c.memory {
        if m <= 0 {
            return Err(invalid(format!(
                "{}: {m} for {who} is not valid; memory must be a positive number of MiB",
                field("memory")
            )));
        }
        if m < 6 {
            return Err(invalid(format!(
                "{}: {m} MiB for {who} is below the minimum of 6 MiB",
                field("memory")
            )));
        }
        if let Some((tm, task)) = task_memory {
            if m as i64 > tm {
                return Err(invalid(format!(
                    "{}: {m} MiB for {who} is more than {task} {tm} MiB",
                    field("memory")
                )));
            }
        }
    }
    if let Some(r) = c.memory_reservation {
        if r <= 0 {
            return Err(invalid(format!(
                "{}: {r} for {who} is not valid; memoryReservation must be a positive number of MiB",
                field("memoryReservation")
            )));
        }
        if let Some(m) = c.memory {
            if r > m {
                return Err(invalid(format!(
                    "{}: {r} MiB for {who} is more than its memory limit {m} MiB; the soft limit must not exceed the hard limit",
                    field("memoryReservation")
                )));
            }
        }
        if let Some((tm, task)) = task_memory {
            if r as i64 > tm {
                return Err(invalid(format!(
                    "{}: {r} MiB for {who} is more than {task} {tm} MiB",
                    field("memoryReservation")
                )));
            }
        }
    }
    if task_memory.is_none() && c.memory.is_none() && c.memory_reservation.is_none() {
        return Err(invalid(format!(
            "{}: {who} sets neither memory nor memoryReservation, and the task sets no memory; at least one is required",
            field("").trim_end_matches('.')
        )));
    }
    Ok(())
}

/// The containers' cpu adds up to at most the task's (`task_cpu` with the words that name it).
pub(crate) fn containers_cpu_fit(
    field: &str,
    containers: &[ContainerDefinition],
    task_cpu: Option<(i64, &str)>,
) -> Result<(), EcsError> {
    if let Some((task_cpu, task)) = task_cpu {
        let sum: i64 = containers.iter().map(|c| c.cpu.unwrap_or(0) as i64).sum();
        if sum > task_cpu {
            return Err(invalid(format!(
                "{field}: the containers' cpu adds up to {sum}, more than {task} {task_cpu}"
            )));
        }
    }
    Ok(())
}

/// The form of a container's secret references (`secrets`, `logConfiguration.secretOptions`):
/// a secret or parameter ARN, or a parameter name. Whether it exists is checked when a task
/// starts, as ECS does. A ClientException naming the container and the secret.
fn check_secrets(i: usize, c: &ContainerDefinition) -> Result<(), EcsError> {
    let log = c.log_configuration.iter().flat_map(|l| {
        l.secret_options
            .iter()
            .enumerate()
            .map(|(j, s)| (format!("logConfiguration.secretOptions[{j}]"), s))
    });
    let all = c
        .secrets
        .iter()
        .enumerate()
        .map(|(j, s)| (format!("secrets[{j}]"), s))
        .chain(log);
    let mut names = HashSet::new();
    for (at, s) in all {
        let field = format!("containerDefinitions[{i}].{at}");
        if s.name.is_empty() {
            return Err(EcsError::client(format!(
                "{field}.name: is required for container '{}'",
                c.name
            )));
        }
        if at.starts_with("secrets") && !names.insert(s.name.as_str()) {
            return Err(EcsError::client(format!(
                "{field}.name: secret '{}' of container '{}' is given twice",
                s.name, c.name
            )));
        }
        crate::security::secrets::SecretRef::parse(&s.value_from).map_err(|e| {
            EcsError::client(format!(
                "{field}.valueFrom: secret '{}' of container '{}': {e}",
                s.name, c.name
            ))
        })?;
    }
    Ok(())
}

fn validate_container(
    i: usize,
    c: &ContainerDefinition,
    network_mode: &str,
    task_cpu: Option<i64>,
    task_memory: Option<i64>,
) -> Result<(), EcsError> {
    let field = |f: &str| format!("containerDefinitions[{i}].{f}");
    if c.name.is_empty() {
        return Err(invalid(format!("{}: is required", field("name"))));
    }
    if c.name.len() > 255
        || !c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_')
    {
        return Err(invalid(format!(
            "{}: '{}' is not valid; up to 255 letters, numbers, hyphens, and underscores are allowed",
            field("name"),
            c.name
        )));
    }
    // ECS: "The hostname parameter is not supported if you're using the awsvpc network mode";
    // extraHosts "isn't supported for ... tasks that use the awsvpc network mode".
    if network_mode == "awsvpc" {
        if c.hostname.as_deref().is_some_and(|h| !h.is_empty()) {
            return Err(invalid(format!(
                "{}: is not supported in the awsvpc network mode",
                field("hostname")
            )));
        }
        if !c.extra_hosts.is_empty() {
            return Err(invalid(format!(
                "{}: is not supported in the awsvpc network mode",
                field("extraHosts")
            )));
        }
    }
    let who = format!("container '{}'", c.name);
    if c.image.trim().is_empty() {
        return Err(invalid(format!(
            "{}: is required for {who}",
            field("image")
        )));
    }
    container_resources(
        &|f: &str| field(f),
        c,
        task_cpu.map(|c| (c, "the task cpu")),
        task_memory.map(|m| (m, "the task memory")),
    )?;
    check_secrets(i, c)?;
    for (j, p) in c.port_mappings.iter().enumerate() {
        let pf = format!("containerDefinitions[{i}].portMappings[{j}]");
        let port = p.container_port.unwrap_or(0);
        if p.container_port_range.is_none() && !(1..=65535).contains(&port) {
            return Err(invalid(format!(
                "{pf}.containerPort: {port} is not a port (1-65535)"
            )));
        }
        if let Some(h) = p.host_port {
            if !(0..=65535).contains(&h) {
                return Err(invalid(format!(
                    "{pf}.hostPort: {h} is not a port (0-65535)"
                )));
            }
            if (network_mode == "awsvpc" || network_mode == "host") && h != 0 && h != port {
                return Err(invalid(format!(
                    "{pf}.hostPort: {h} must equal containerPort {port} in {network_mode} network mode"
                )));
            }
        }
        if let Some(proto) = &p.protocol {
            if proto != "tcp" && proto != "udp" {
                return Err(invalid(format!(
                    "{pf}.protocol: '{proto}' is not tcp or udp"
                )));
            }
        }
    }
    for (j, u) in c.ulimits.iter().enumerate() {
        let uf = format!("containerDefinitions[{i}].ulimits[{j}]");
        if !ULIMIT_NAMES.contains(&u.name.as_str()) {
            return Err(invalid(format!(
                "{uf}.name: '{}' for {who} is not a ulimit; use one of {}",
                u.name,
                ULIMIT_NAMES.join(", ")
            )));
        }
        if u.soft_limit < 0 || u.hard_limit < 0 || u.soft_limit > u.hard_limit {
            return Err(invalid(format!(
                "{uf}: {} soft {} hard {} for {who} is not valid; limits must not be negative and softLimit must not exceed hardLimit",
                u.name, u.soft_limit, u.hard_limit
            )));
        }
    }
    for (j, o) in c.docker_security_options.iter().enumerate() {
        if !NO_NEW_PRIVILEGES.contains(&o.trim()) {
            return Err(invalid(format!(
                "containerDefinitions[{i}].dockerSecurityOptions[{j}]: '{o}' for {who} is not supported; Berth applies only \"no-new-privileges\""
            )));
        }
    }
    validate_container_shapes(i, c)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(container_extra: &str) -> Result<(Option<i64>, Option<i64>), EcsError> {
        let req: RegisterTaskDefinitionRequest = serde_json::from_str(&format!(
            r#"{{"family":"f","containerDefinitions":[{{"name":"a","image":"i","memory":16{container_extra}}}]}}"#
        ))
        .unwrap();
        validate(&req)
    }

    fn register_td(json: &str) -> Result<(Option<i64>, Option<i64>), EcsError> {
        validate(&serde_json::from_str::<RegisterTaskDefinitionRequest>(json).unwrap())
    }

    #[test]
    fn secret_references_are_checked_by_form_at_registration_not_by_existence() {
        // Not stored anywhere: registration does not need the secret to exist (ECS doesn't).
        for ok in [
            r#""secrets":[{"name":"DB","valueFrom":"arn:aws:secretsmanager:us-east-1:123456789012:secret:db-AbCdEf:password::"}]"#,
            r#""secrets":[{"name":"K","valueFrom":"arn:aws:ssm:eu-west-1:1:parameter/prod/key"},{"name":"P","valueFrom":"plain"}]"#,
            r#""logConfiguration":{"logDriver":"awslogs","secretOptions":[{"name":"awslogs-group","valueFrom":"/log/group"}]}"#,
            // Issue 11: a Secrets Manager secret by name or ARN (any region, as ECS pastes).
            r#""repositoryCredentials":{"credentialsParameter":"reg/creds"}"#,
            r#""repositoryCredentials":{"credentialsParameter":"arn:aws:secretsmanager:us-east-1:123456789012:secret:reg/creds-AbCdEf"}"#,
        ] {
            assert!(register(&format!(",{ok}")).is_ok(), "{ok}");
        }
        for (bad, want) in [
            (
                r#""secrets":[{"name":"DB","valueFrom":"arn:aws:s3:::b/k"}]"#,
                "secrets[0].valueFrom: secret 'DB' of container 'a'",
            ),
            (
                r#""secrets":[{"name":"DB","valueFrom":"arn:aws:secretsmanager:r:a:secret:db::AWSPREVIOUS:"}]"#,
                "AWSPREVIOUS",
            ),
            (
                r#""secrets":[{"name":"","valueFrom":"x"}]"#,
                "secrets[0].name",
            ),
            (
                r#""secrets":[{"name":"A","valueFrom":"x"},{"name":"A","valueFrom":"y"}]"#,
                "given twice",
            ),
            (
                r#""logConfiguration":{"logDriver":"awslogs","secretOptions":[{"name":"awslogs-group","valueFrom":"has space"}]}"#,
                "secretOptions[0].valueFrom",
            ),
        ] {
            let e = register(&format!(",{bad}")).unwrap_err();
            assert_eq!(e.exception_name(), "ClientException", "{bad}");
            assert!(e.to_string().contains(want), "{bad}: {e}");
        }
    }

    /// Issue 6's validation items: Fargate's 8 and 16 vCPU sizes, EC2/EXTERNAL task cpu within
    /// 128-196608 units, and stopTimeout capped at 120 s for FARGATE tasks only.
    #[test]
    fn task_sizes_and_stop_timeouts_follow_ecs() {
        let fargate = |cpu: &str, memory: &str, stop: i64| {
            register_td(&format!(
                r#"{{"family":"f","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"{cpu}","memory":"{memory}",
                "containerDefinitions":[{{"name":"a","image":"i","stopTimeout":{stop}}}]}}"#
            ))
        };
        assert!(fargate("8192", "61440", 30).is_ok());
        assert!(fargate("16 vCPU", "120 GB", 30).is_ok());
        assert!(fargate("8192", "18432", 30).is_err(), "not a 4 GiB step");
        let e = fargate("1024", "2048", 121).unwrap_err().to_string();
        assert!(e.contains("stopTimeout") && e.contains("FARGATE"), "{e}");
        assert!(
            register(r#","stopTimeout":300"#).is_ok(),
            "EC2 has no 120 s cap"
        );
        assert!(register(r#","stopTimeout":-1"#).is_err());
        let e = register_td(
            r#"{"family":"f","cpu":"64","containerDefinitions":[{"name":"a","image":"i","memory":16}]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cpu:") && e.contains("128-196608"), "{e}");
        assert!(register_td(
            r#"{"family":"f","cpu":"128","containerDefinitions":[{"name":"a","image":"i","memory":16}]}"#
        )
        .is_ok());
    }

    /// The enums and ranges ECS checks on fields Berth records or has coming: a definition that
    /// registers here registers on ECS too, and each refusal names the field.
    #[test]
    fn enums_and_ranges_of_the_newer_fields_follow_ecs() {
        let td = |extra: &str, container_extra: &str| {
            register_td(&format!(
                r#"{{"family":"f"{extra},"containerDefinitions":[{{"name":"a","image":"i","memory":16{container_extra}}}]}}"#
            ))
        };
        let fine = [
            (r#","pidMode":"task","ipcMode":"none""#, ""),
            (
                r#","runtimePlatform":{"cpuArchitecture":"ARM64","operatingSystemFamily":"LINUX"}"#,
                "",
            ),
            (r#","ephemeralStorage":{"sizeInGiB":21}"#, ""),
            (
                r#","placementConstraints":[{"type":"memberOf","expression":"attribute:a == b"}]"#,
                "",
            ),
            (
                "",
                r#","versionConsistency":"disabled","extraHosts":[{"hostname":"db","ipAddress":"fd00::5"}]"#,
            ),
            (
                "",
                r#","linuxParameters":{"swappiness":0,"maxSwap":0,"sharedMemorySize":64,"tmpfs":[{"containerPath":"/t","size":1}],"devices":[{"hostPath":"/dev/fuse","permissions":["read"]}]}"#,
            ),
            (
                "",
                r#","logConfiguration":{"logDriver":"json-file"},"environmentFiles":[{"value":"/srv/f.env","type":"file"}]"#,
            ),
        ];
        for (extra, container_extra) in fine {
            assert!(
                td(extra, container_extra).is_ok(),
                "{extra}{container_extra}"
            );
        }
        let refused = [
            (r#","pidMode":"shared""#, "", "pidMode: 'shared'"),
            (r#","ipcMode":"private""#, "", "ipcMode: 'private'"),
            (
                r#","runtimePlatform":{"cpuArchitecture":"RISCV"}"#,
                "",
                "runtimePlatform.cpuArchitecture",
            ),
            (
                r#","runtimePlatform":{"operatingSystemFamily":"linux"}"#,
                "",
                "runtimePlatform.operatingSystemFamily",
            ),
            (
                r#","ephemeralStorage":{"sizeInGiB":20}"#,
                "",
                "ephemeralStorage.sizeInGiB",
            ),
            (
                r#","placementConstraints":[{"type":"distinctInstance"}]"#,
                "",
                "placementConstraints[0].type",
            ),
            (
                "",
                r#","versionConsistency":"on""#,
                "containerDefinitions[0].versionConsistency",
            ),
            (
                "",
                r#","environmentFiles":[{"value":"arn:aws:s3:::b/f.env","type":"s3"}]"#,
                "environmentFiles[0].type: s3",
            ),
            (
                "",
                r#","logConfiguration":{"logDriver":"loki"}"#,
                "logConfiguration.logDriver: 'loki'",
            ),
            (
                "",
                r#","portMappings":[{"containerPort":80,"appProtocol":"tcp"}]"#,
                "portMappings[0].appProtocol",
            ),
            (
                "",
                r#","linuxParameters":{"swappiness":101}"#,
                "linuxParameters.swappiness",
            ),
            (
                "",
                r#","linuxParameters":{"maxSwap":-1}"#,
                "linuxParameters.maxSwap",
            ),
            (
                "",
                r#","linuxParameters":{"sharedMemorySize":0}"#,
                "linuxParameters.sharedMemorySize",
            ),
            (
                "",
                r#","linuxParameters":{"tmpfs":[{"containerPath":"/t","size":0}]}"#,
                "linuxParameters.tmpfs[0]",
            ),
            (
                "",
                r#","linuxParameters":{"devices":[{"hostPath":"/dev/x","permissions":["rw"]}]}"#,
                "linuxParameters.devices[0].permissions",
            ),
            (
                "",
                r#","linuxParameters":{"devices":[{"containerPath":"/dev/x"}]}"#,
                "linuxParameters.devices[0].hostPath",
            ),
            (
                "",
                r#","extraHosts":[{"hostname":"db","ipAddress":"db.internal"}]"#,
                "extraHosts[0]",
            ),
            (
                "",
                r#","repositoryCredentials":{"credentialsParameter":""}"#,
                "repositoryCredentials.credentialsParameter",
            ),
            (
                "",
                r#","repositoryCredentials":{"credentialsParameter":"arn:aws:ssm:r:1:parameter/reg"}"#,
                "repositoryCredentials.credentialsParameter: container 'a': 'arn:aws:ssm:r:1:parameter/reg' is an SSM parameter",
            ),
            (
                "",
                r#","repositoryCredentials":{"credentialsParameter":"my creds"}"#,
                "is not a secret name or a secret ARN",
            ),
        ];
        for (extra, container_extra, needle) in refused {
            let e = td(extra, container_extra).unwrap_err().to_string();
            assert!(e.contains(needle), "{extra}{container_extra}: {e}");
        }
    }

    #[test]
    fn ulimits_and_security_options_are_checked_at_registration() {
        assert!(
            register(r#","ulimits":[{"name":"nofile","softLimit":10,"hardLimit":20}]"#).is_ok()
        );
        assert!(register(r#","dockerSecurityOptions":["no-new-privileges"]"#).is_ok());
        let e = register(r#","ulimits":[{"name":"files","softLimit":1,"hardLimit":1}]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("ulimits[0].name") && e.contains("'files'"),
            "{e}"
        );
        let e = register(r#","ulimits":[{"name":"nofile","softLimit":30,"hardLimit":20}]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("softLimit must not exceed hardLimit"), "{e}");
        let e = register(r#","dockerSecurityOptions":["apparmor:unconfined"]"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("dockerSecurityOptions[0]") && e.contains("apparmor"),
            "{e}"
        );
    }
}
