//! What Berth does with every field of a task definition, of RunTask and of StartTask: the one
//! table.
//!
//! Each field is one of four [`Kind`]s: applied today, recorded (stored and shown, no effect on
//! premises), coming (accepted now, acted on once the named issue lands) or unsupported (no
//! issue builds it: refused by name, every such field in one error). The README's section
//! "Task-definition fields: applied, recorded, coming, unsupported" is generated from this table
//! (`fields::tests::readme_section_is_the_table`), and the table covers every field of the model
//! (`fields::tests::every_field_of_the_model_is_in_the_table`).

use crate::error::EcsError;
use berth_proto::v1::{
    RegisterTaskDefinitionRequest, RunTaskRequest, StartTaskRequest, TaskOverride,
};
use serde_json::Value;

/// What Berth does with a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Acted on today.
    Applied,
    /// No local effect on premises: stored and shown, nothing else.
    Recorded,
    /// Accepted, stored and shown, not yet acted on: the open issue that builds it.
    Coming(u32),
    /// No issue builds it: refused by name when set.
    Unsupported,
}

/// The request a field belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// RegisterTaskDefinition (an ECS task-definition.json).
    RegisterTaskDefinition,
    /// RunTask, its overrides included.
    RunTask,
    /// StartTask; its overrides are RunTask's (the `overrides.` rows of [`Op::RunTask`]).
    StartTask,
}

impl Op {
    /// The ECS operation name.
    pub fn name(self) -> &'static str {
        match self {
            Op::RegisterTaskDefinition => "RegisterTaskDefinition",
            Op::RunTask => "RunTask",
            Op::StartTask => "StartTask",
        }
    }
}

/// One field and what Berth does with it.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// The request it belongs to.
    pub op: Op,
    /// Its JSON path from the request, members joined by dots, lists not indexed
    /// (`containerDefinitions.linuxParameters`). An entry covers the members below it that have
    /// no entry of their own.
    pub path: &'static str,
    /// What Berth does with it.
    pub kind: Kind,
    /// How, or why not.
    pub note: &'static str,
    /// For an unsupported field: a value that means "off" and is accepted (ECS's default,
    /// e.g. propagateTags NONE); `false`, empty strings and empty lists are always accepted.
    pub off: Option<&'static str>,
}

const fn f(op: Op, path: &'static str, kind: Kind, note: &'static str) -> Field {
    Field {
        op,
        path,
        kind,
        note,
        off: None,
    }
}

use Kind::{Applied, Coming, Recorded, Unsupported};
use Op::{RegisterTaskDefinition as Reg, RunTask as Run, StartTask as Start};

/// Every field of RegisterTaskDefinition, RunTask and StartTask.
pub const FIELDS: &[Field] = &[
    // RegisterTaskDefinition: the task.
    f(Reg, "family", Applied, "revisions count up per family"),
    f(Reg, "taskRoleArn", Recorded, "no IAM on premises"),
    f(Reg, "executionRoleArn", Recorded, "no IAM on premises"),
    f(Reg, "networkMode", Applied, "bridge (the default), host, awsvpc and none, each in its own namespaces as ECS defines them"),
    f(Reg, "containerDefinitions", Applied, "at most 10, names unique, one essential"),
    f(Reg, "volumes", Applied, "names unique, one kind each (host, dockerVolumeConfiguration, efsVolumeConfiguration, or none: a task-scoped volume made per task and removed with it)"),
    f(Reg, "placementConstraints", Applied, "memberOf, with the cluster query language, at RunTask"),
    f(Reg, "requiresCompatibilities", Applied, "FARGATE's rules (awsvpc, cpu/memory pairs) are checked; launchType FARGATE needs FARGATE here"),
    f(Reg, "cpu", Applied, "the task cgroup's CPU quota; \"1 vCPU\" forms accepted"),
    f(Reg, "memory", Applied, "the task cgroup's memory limit; \"2 GB\" forms accepted"),
    f(Reg, "tags", Recorded, "stored with the task definition"),
    f(Reg, "pidMode", Applied, "task: one PID namespace for the task's containers, held by the first started (no pause container: when it exits, the others' processes end); host: the host's; FARGATE takes task only"),
    f(Reg, "ipcMode", Applied, "task: one IPC namespace for the task's containers; host: the host's; none: private to each container; not with FARGATE"),
    f(Reg, "proxyConfiguration", Unsupported, "App Mesh proxies"),
    f(Reg, "inferenceAccelerators", Unsupported, "Elastic Inference accelerators"),
    f(Reg, "ephemeralStorage", Recorded, "Fargate's task storage size; tasks use the host's disk"),
    f(Reg, "runtimePlatform", Applied, "placed only on instances advertising that ecs.cpu-architecture and ecs.os-family"),
    f(Reg, "enableFaultInjection", Unsupported, "ECS fault-injection endpoints"),
    // RegisterTaskDefinition: each container.
    f(Reg, "containerDefinitions.name", Applied, ""),
    f(Reg, "containerDefinitions.image", Applied, "pulled from its registry as the agent's pull behaviour says, or loaded by hand (`berth-agent image load`)"),
    f(Reg, "containerDefinitions.repositoryCredentials", Applied, "a Secrets Manager secret (name or ARN) holding {username,password}; form checked at registration, resolved over GetTaskSecrets for the pull, never stored by the agent"),
    f(Reg, "containerDefinitions.cpu", Applied, "CPU shares"),
    f(Reg, "containerDefinitions.memory", Applied, "hard memory limit"),
    f(Reg, "containerDefinitions.memoryReservation", Applied, "soft memory limit; what placement reserves"),
    f(Reg, "containerDefinitions.links", Applied, "bridge mode only, each naming another container of the task (name or name:alias): it starts first, and the name or alias resolves to it in the linking container"),
    f(Reg, "containerDefinitions.portMappings", Applied, "published (bridge: hostPort or a dynamic port), host ports accounted per instance (RESOURCE:PORTS); networkBindings in DescribeTasks"),
    f(Reg, "containerDefinitions.essential", Applied, "an essential container's exit stops the task"),
    f(Reg, "containerDefinitions.restartPolicy", Applied, "the container restarts in place (restartCount reported) unless its exit code is ignored or it ran less than restartAttemptPeriod (60-1800 s, default 300); at most 50 ignoredExitCodes"),
    f(Reg, "containerDefinitions.entryPoint", Applied, ""),
    f(Reg, "containerDefinitions.command", Applied, ""),
    f(Reg, "containerDefinitions.environment", Applied, ""),
    f(Reg, "containerDefinitions.environmentFiles", Applied, "Berth's type file: an absolute host path under the agent's --allowed-host-paths, read when the container starts (environment wins); ECS's type s3 is refused; at most 10"),
    f(Reg, "containerDefinitions.mountPoints", Applied, "sourceVolume names a volume of the task, containerPath absolute; readOnly enforced"),
    f(Reg, "containerDefinitions.volumesFrom", Applied, "the named container's mount points, readOnly honoured (no start order: add a dependsOn where one is needed)"),
    f(Reg, "containerDefinitions.linuxParameters", Applied, "capabilities add/drop (ECS's names, no CAP_ prefix), devices, initProcessEnabled (the agent's init as PID 1), sharedMemorySize, tmpfs, maxSwap (absent: the host's setting) and swappiness (with maxSwap); what FARGATE refuses is refused for FARGATE definitions"),
    f(Reg, "containerDefinitions.secrets", Applied, "valueFrom's form checked at registration; resolved when the task starts (Secrets Manager and SSM ARNs matched by name) and injected into the environment"),
    f(Reg, "containerDefinitions.dependsOn", Applied, "START, COMPLETE, SUCCESS (not on essential containers), HEALTHY (needs a healthCheck) order the starts, shutdown in reverse; a condition that can no longer be met stops the task with TaskDependencyError; cycles (with links and volumesFrom) refused at registration"),
    f(Reg, "containerDefinitions.startTimeout", Applied, "how long containers that depend on this one wait for its condition (then TaskDependencyError); 2-120 s for FARGATE"),
    f(Reg, "containerDefinitions.stopTimeout", Applied, "SIGKILL this long after SIGTERM (or the image's STOPSIGNAL); absent: the agent's --container-stop-timeout (30 s); 2-120 s for FARGATE"),
    f(Reg, "containerDefinitions.versionConsistency", Recorded, "ECS pins a service's image tag to a digest; Berth runs the image its store holds"),
    f(Reg, "containerDefinitions.hostname", Applied, "refused in awsvpc network mode, as ECS does"),
    f(Reg, "containerDefinitions.user", Applied, "uid, uid:gid, user or user:group; names resolved from the image's /etc/passwd and /etc/group"),
    f(Reg, "containerDefinitions.workingDirectory", Applied, ""),
    f(Reg, "containerDefinitions.disableNetworking", Applied, "the container gets a network namespace of its own with loopback only"),
    f(Reg, "containerDefinitions.privileged", Applied, "only on agents started with --allow-privileged"),
    f(Reg, "containerDefinitions.readonlyRootFilesystem", Applied, ""),
    f(Reg, "containerDefinitions.dnsServers", Applied, "written to the container's /etc/resolv.conf"),
    f(Reg, "containerDefinitions.dnsSearchDomains", Applied, "written to the container's /etc/resolv.conf"),
    f(Reg, "containerDefinitions.extraHosts", Applied, "appended to the container's /etc/hosts; refused in awsvpc network mode, as ECS does"),
    f(Reg, "containerDefinitions.dockerSecurityOptions", Applied, "no-new-privileges; any other option is refused at registration"),
    f(Reg, "containerDefinitions.interactive", Applied, "the container's stdin is kept open"),
    f(Reg, "containerDefinitions.pseudoTerminal", Applied, "the process runs on a pseudo-terminal"),
    f(Reg, "containerDefinitions.dockerLabels", Applied, "labels of the containerd container; the metadata endpoint's Labels"),
    f(Reg, "containerDefinitions.ulimits", Applied, "rlimits of the container's process"),
    f(Reg, "containerDefinitions.logConfiguration", Applied, "drivers awslogs (to the controller's log store), json-file, syslog and none, their options checked at registration"),
    f(Reg, "containerDefinitions.logConfiguration.secretOptions", Unsupported, "no option of the awslogs, json-file, syslog or none drivers is a credential"),
    f(Reg, "containerDefinitions.logConfiguration.options.awslogs-region", Recorded, "there is one region on premises"),
    f(Reg, "containerDefinitions.healthCheck", Applied, "run inside the container (containerd exec); healthStatus in DescribeTasks (the task's from its essential containers) and the metadata endpoint; interval 30, timeout 5, retries 3 filled in as ECS shows them"),
    f(Reg, "containerDefinitions.systemControls", Applied, "set in the container's namespaces: net.* (not with the host network mode) and the IPC ones (not with ipcMode host); others refused"),
    f(Reg, "containerDefinitions.resourceRequirements", Unsupported, "GPUs, inference accelerators and Neuron devices"),
    f(Reg, "containerDefinitions.firelensConfiguration", Unsupported, "FireLens log routing"),
    f(Reg, "containerDefinitions.credentialSpecs", Unsupported, "Active Directory gMSA credential specs"),
    // RegisterTaskDefinition: each volume.
    f(Reg, "volumes.name", Applied, "what mountPoints.sourceVolume names"),
    f(Reg, "volumes.host", Applied, "sourcePath: a bind mount of that host path, only under the agent's --allowed-host-paths; no sourcePath: a task-scoped volume"),
    f(Reg, "volumes.dockerVolumeConfiguration", Applied, "driver local: a volume the agent makes (scope task: removed with the task; shared: kept, autoprovision); another driver only where the agent's --nfs-volume maps the volume (RunTask places the task only there)"),
    f(Reg, "volumes.efsVolumeConfiguration", Applied, "mounted as NFS where the agent's --nfs-volume maps the fileSystemId (RunTask places the task only there)"),
    f(Reg, "volumes.dockerVolumeConfiguration.driverOpts", Unsupported, "driver options: a volume is a directory the agent makes or the NFS export its --nfs-volume maps"),
    f(Reg, "volumes.dockerVolumeConfiguration.labels", Unsupported, "volume labels: Berth's volumes are directories"),
    Field {
        off: Some("DISABLED"),
        ..f(Reg, "volumes.efsVolumeConfiguration.transitEncryption", Unsupported, "EFS TLS: an EFS volume is a plain NFS mount, DISABLED is accepted")
    },
    f(Reg, "volumes.efsVolumeConfiguration.transitEncryptionPort", Unsupported, "EFS TLS: an EFS volume is a plain NFS mount"),
    f(Reg, "volumes.efsVolumeConfiguration.authorizationConfig.accessPointId", Unsupported, "EFS access points: an EFS volume is a plain NFS mount"),
    Field {
        off: Some("DISABLED"),
        ..f(Reg, "volumes.efsVolumeConfiguration.authorizationConfig.iam", Unsupported, "EFS IAM authorization: no IAM on premises, DISABLED is accepted")
    },
    f(Reg, "volumes.s3filesVolumeConfiguration", Unsupported, "S3 Files volumes"),
    f(Reg, "volumes.fsxWindowsFileServerVolumeConfiguration", Unsupported, "FSx for Windows File Server volumes"),
    f(Reg, "volumes.configuredAtLaunch", Unsupported, "EBS volumes configured at launch"),
    // RunTask.
    f(Run, "cluster", Applied, ""),
    f(Run, "taskDefinition", Applied, ""),
    f(Run, "count", Applied, "1-10"),
    f(Run, "overrides", Applied, "validated with the registration rules"),
    f(Run, "startedBy", Applied, "shown, and ListTasks filters on it (as its only filter, desiredStatus aside)"),
    f(Run, "launchType", Applied, "EC2, EXTERNAL, FARGATE (FARGATE runs on the cluster's own instances)"),
    f(Run, "networkConfiguration", Applied, "awsvpcConfiguration: subnets configured on the agents (attribute berth.subnet.NAME), security groups, assignPublicIp; required for awsvpc, refused for other modes"),
    f(Run, "group", Recorded, "shown on the task"),
    f(Run, "tags", Recorded, "shown on the task"),
    f(Run, "placementConstraints", Applied, "distinctInstance and memberOf"),
    f(Run, "placementStrategy", Applied, "binpack, spread, random, in order"),
    f(Run, "clientToken", Applied, "a retried RunTask with the same token answers the first call's tasks"),
    f(Run, "capacityProviderStrategy", Unsupported, "capacity providers"),
    f(Run, "enableECSManagedTags", Unsupported, "ECS-managed tags"),
    f(Run, "enableExecuteCommand", Applied, "ExecuteCommand (berth ecs execute-command) is served only for such tasks"),
    f(Run, "platformVersion", Recorded, "Fargate platform versions; shown on the task"),
    Field {
        off: Some("NONE"),
        ..f(Run, "propagateTags", Unsupported, "tag propagation (NONE is accepted)")
    },
    f(Run, "referenceId", Unsupported, "ECS shows a task's reference ID on no Task member; Berth has no use for it"),
    f(Run, "volumeConfigurations", Unsupported, "EBS volumes configured at launch"),
    // RunTask: overrides.
    f(Run, "overrides.containerOverrides", Applied, "each must name a container of the task definition"),
    f(Run, "overrides.cpu", Applied, "128-196608 units, \"1 vCPU\" forms accepted; the containers' cpu must fit in it"),
    f(Run, "overrides.memory", Applied, "\"2 GB\" forms accepted; each container's memory and memoryReservation must fit in it"),
    f(Run, "overrides.taskRoleArn", Recorded, "no IAM on premises"),
    f(Run, "overrides.executionRoleArn", Recorded, "no IAM on premises"),
    f(Run, "overrides.inferenceAcceleratorOverrides", Unsupported, "Elastic Inference accelerators"),
    f(Run, "overrides.ephemeralStorage", Recorded, "Fargate's task storage size"),
    f(Run, "overrides.containerOverrides.name", Applied, ""),
    f(Run, "overrides.containerOverrides.command", Applied, ""),
    f(Run, "overrides.containerOverrides.environment", Applied, ""),
    f(Run, "overrides.containerOverrides.environmentFiles", Applied, "used instead of the definition's; type file only, as at registration"),
    f(Run, "overrides.containerOverrides.cpu", Applied, ""),
    f(Run, "overrides.containerOverrides.memory", Applied, ""),
    f(Run, "overrides.containerOverrides.memoryReservation", Applied, ""),
    f(Run, "overrides.containerOverrides.resourceRequirements", Unsupported, "GPUs, inference accelerators and Neuron devices"),
    // StartTask: what it shares with RunTask is handled as RunTask handles it.
    f(Start, "cluster", Applied, ""),
    f(Start, "containerInstances", Applied, "1-10 ids or ARNs, each checked for the attributes and resources the task needs"),
    f(Start, "taskDefinition", Applied, ""),
    f(Start, "overrides", Applied, "as RunTask's overrides, row by row"),
    f(Start, "startedBy", Applied, "shown, and ListTasks filters on it (as its only filter, desiredStatus aside)"),
    f(Start, "networkConfiguration", Applied, "as RunTask's"),
    f(Start, "group", Recorded, "shown on the task"),
    f(Start, "tags", Recorded, "shown on the task"),
    f(Start, "enableECSManagedTags", Unsupported, "ECS-managed tags"),
    f(Start, "enableExecuteCommand", Applied, "ExecuteCommand (berth ecs execute-command) is served only for such tasks"),
    Field {
        off: Some("NONE"),
        ..f(Start, "propagateTags", Unsupported, "tag propagation (NONE is accepted)")
    },
    f(Start, "referenceId", Unsupported, "ECS shows a task's reference ID on no Task member; Berth has no use for it"),
    f(Start, "volumeConfigurations", Unsupported, "EBS volumes configured at launch"),
];

/// Where `path`'s members occur in `value`, with their indexed paths (`containerDefinitions[1].links`).
fn occurrences<'a>(
    value: &'a Value,
    segments: &[&str],
    at: &str,
    out: &mut Vec<(String, &'a Value)>,
) {
    let Some((first, rest)) = segments.split_first() else {
        out.push((at.to_string(), value));
        return;
    };
    match value {
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                occurrences(item, segments, &format!("{at}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            if let Some(v) = map.get(*first) {
                let at = if at.is_empty() {
                    first.to_string()
                } else {
                    format!("{at}.{first}")
                };
                occurrences(v, rest, &at, out);
            }
        }
        _ => {}
    }
}

/// Whether a value asks for something: `false`, empty lists, empty maps, empty strings and the
/// field's "off" value do not.
fn is_set(v: &Value, off: Option<&str>) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Array(a) => !a.is_empty(),
        Value::String(s) => !s.is_empty() && off != Some(s.as_str()),
        // Maps (driverOpts, labels) always encode, empty when not given.
        Value::Object(o) => !o.is_empty(),
        Value::Number(_) => true,
    }
}

/// One line per unsupported field that `request` (the JSON of an `op` request) sets.
fn unsupported(op: Op, request: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    for field in FIELDS
        .iter()
        .filter(|f| f.op == op && f.kind == Unsupported)
    {
        let Some(path) = field.path.strip_prefix(prefix) else {
            continue;
        };
        let segments: Vec<&str> = path.split('.').collect();
        let mut found = Vec::new();
        occurrences(request, &segments, "", &mut found);
        for (at, value) in found.into_iter().filter(|(_, v)| is_set(v, field.off)) {
            let at = format!("{prefix}{at}");
            // Lists of typed entries (resourceRequirements) name the types.
            let mut types: Vec<&str> = value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|e| e.get("type").and_then(Value::as_str))
                .collect();
            let mut seen = Vec::new();
            types.retain(|t| {
                let first = !seen.contains(t);
                seen.push(*t);
                first
            });
            let what = match types.as_slice() {
                [] => String::new(),
                [t] => format!(" type {t}"),
                ts => format!(" types {}", ts.join(", ")),
            };
            let verb = if types.len() > 1 { "are" } else { "is" };
            out.push(format!(
                "{at}:{what} {verb} not supported by Berth ({})",
                field.note
            ));
        }
    }
    out
}

fn to_json<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// RegisterTaskDefinition: a ClientException naming every unsupported field the request sets.
pub fn refuse_unsupported_registration(
    req: &RegisterTaskDefinitionRequest,
) -> Result<(), EcsError> {
    let found = unsupported(Reg, &to_json(req), "");
    if found.is_empty() {
        return Ok(());
    }
    Err(EcsError::client(found.join("; ")))
}

/// RunTask: an InvalidParameterException naming every unsupported field the request sets,
/// its overrides included.
pub fn refuse_unsupported_run_task(req: &RunTaskRequest) -> Result<(), EcsError> {
    let found = unsupported(Run, &to_json(req), "");
    if found.is_empty() {
        return Ok(());
    }
    Err(EcsError::invalid(found.join("; ")))
}

/// StartTask: an InvalidParameterException naming every unsupported field the request sets,
/// its overrides included (judged by RunTask's override rows).
pub fn refuse_unsupported_start_task(req: &StartTaskRequest) -> Result<(), EcsError> {
    let mut found = unsupported(Start, &to_json(req), "");
    if let Some(o) = &req.overrides {
        found.extend(unsupported(Run, &to_json(o), "overrides."));
    }
    if found.is_empty() {
        return Ok(());
    }
    Err(EcsError::invalid(found.join("; ")))
}

/// Task overrides alone (RunTask's and StartTask's `overrides`): an InvalidParameterException
/// naming every unsupported field they set.
pub fn refuse_unsupported_overrides(overrides: &TaskOverride) -> Result<(), EcsError> {
    let found = unsupported(Run, &to_json(overrides), "overrides.");
    if found.is_empty() {
        return Ok(());
    }
    Err(EcsError::invalid(found.join("; ")))
}

fn kind_text(kind: Kind) -> String {
    match kind {
        Applied => "applied".into(),
        Recorded => "recorded".into(),
        Coming(n) => format!("coming (#{n})"),
        Unsupported => "unsupported: refused".into(),
    }
}

/// The README section, generated from [`FIELDS`].
pub fn readme_section() -> String {
    let mut s = String::new();
    s.push_str(
        "Every field of ECS's RegisterTaskDefinition, RunTask and StartTask decodes. What Berth does with each \
(generated from `controller/src/service/fields.rs`; a member without a row of its own is covered \
by its parent's row):\n\n\
- **applied**: acted on today;\n\
- **recorded**: stored and shown, with no effect on premises;\n\
- **coming (#N)**: accepted, stored and shown, but not yet acted on until issue N lands;\n\
- **unsupported**: no issue builds it; a request that sets it is refused, naming every such \
field in one error (ClientException at registration, InvalidParameterException in RunTask \
and StartTask).\n",
    );
    for op in [Reg, Run, Start] {
        s.push_str(&format!(
            "\n### {}\n\n| Field | Kind | Note |\n|---|---|---|\n",
            op.name()
        ));
        for field in FIELDS.iter().filter(|f| f.op == op) {
            s.push_str(&format!(
                "| `{}` | {} | {} |\n",
                field.path,
                kind_text(field.kind),
                field.note
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests;
