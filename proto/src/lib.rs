//! Berth's gRPC contract: the ECS-shaped model (clusters, task definitions, tasks, container
//! instances), the user-facing `Ecs` service and the agent link, generated from `berth/v1/*.proto`.
//! Every message also has serde (de)serialisation with ECS's camelCase JSON names.
//! Beyond the generated code it holds only ARN helpers and the config-file convention both
//! daemons share.

#![allow(clippy::all, missing_docs)]

/// Version 1 of the contract.
pub mod v1 {
    tonic::include_proto!("berth.v1");
    include!(concat!(env!("OUT_DIR"), "/berth.v1.serde.rs"));
}

pub mod log_config;
pub mod sigv4;

pub use pbjson_types::Timestamp;
/// The descriptor types, to decode [`FILE_DESCRIPTOR_SET`].
pub use prost_types;

/// The encoded `FileDescriptorSet` of every `.proto` of the contract: the model a client walks
/// to name its flags, check request keys and type values (decode with
/// `prost_types::FileDescriptorSet`).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/berth_descriptor.bin"));

/// The ECS exception names a `Status` of the `Ecs` service carries, beside the model so a client
/// (the `berth` CLI) reads them without the controller's error module.
pub mod exceptions {
    /// The gRPC metadata key holding the exception name of a failed `Ecs` call.
    pub const METADATA_KEY: &str = "x-berth-exception";

    /// ClientException: a bad request the caller must change.
    pub const CLIENT: &str = "ClientException";
    /// InvalidParameterException: a parameter is missing or has a wrong value.
    pub const INVALID_PARAMETER: &str = "InvalidParameterException";
    /// ServerException: the server failed; nothing was changed.
    pub const SERVER: &str = "ServerException";
    /// ClusterNotFoundException
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFoundException";
    /// ServiceNotFoundException
    pub const SERVICE_NOT_FOUND: &str = "ServiceNotFoundException";
    /// ServiceNotActiveException
    pub const SERVICE_NOT_ACTIVE: &str = "ServiceNotActiveException";
    /// ClusterContainsContainerInstancesException
    pub const CLUSTER_CONTAINS_CONTAINER_INSTANCES: &str =
        "ClusterContainsContainerInstancesException";
    /// ClusterContainsServicesException
    pub const CLUSTER_CONTAINS_SERVICES: &str = "ClusterContainsServicesException";
    /// ClusterContainsTasksException
    pub const CLUSTER_CONTAINS_TASKS: &str = "ClusterContainsTasksException";
    /// ResourceNotFoundException
    pub const RESOURCE_NOT_FOUND: &str = "ResourceNotFoundException";
    /// ResourceInUseException
    pub const RESOURCE_IN_USE: &str = "ResourceInUseException";
    /// TargetNotFoundException
    pub const TARGET_NOT_FOUND: &str = "TargetNotFoundException";
    /// AttributeLimitExceededException
    pub const ATTRIBUTE_LIMIT_EXCEEDED: &str = "AttributeLimitExceededException";
    /// LimitExceededException
    pub const LIMIT_EXCEEDED: &str = "LimitExceededException";
    /// UnsupportedFeatureException
    pub const UNSUPPORTED_FEATURE: &str = "UnsupportedFeatureException";
    /// AccessDeniedException
    pub const ACCESS_DENIED: &str = "AccessDeniedException";
    /// ConflictException
    pub const CONFLICT: &str = "ConflictException";
    /// TargetNotConnectedException: ExecuteCommand cannot reach the task's agent.
    pub const TARGET_NOT_CONNECTED: &str = "TargetNotConnectedException";

    /// Every name above: the exceptions of ECS's API that Berth raises or may raise.
    pub const ALL: &[&str] = &[
        CLIENT,
        INVALID_PARAMETER,
        SERVER,
        CLUSTER_NOT_FOUND,
        SERVICE_NOT_FOUND,
        SERVICE_NOT_ACTIVE,
        CLUSTER_CONTAINS_CONTAINER_INSTANCES,
        CLUSTER_CONTAINS_SERVICES,
        CLUSTER_CONTAINS_TASKS,
        RESOURCE_NOT_FOUND,
        RESOURCE_IN_USE,
        TARGET_NOT_FOUND,
        ATTRIBUTE_LIMIT_EXCEEDED,
        LIMIT_EXCEEDED,
        UNSUPPORTED_FEATURE,
        ACCESS_DENIED,
        CONFLICT,
    ];

    /// The exception a failed call carries; ServerException when it names none (the aws CLI's
    /// fallback for an error without a code).
    pub fn of(status: &tonic::Status) -> &str {
        status
            .metadata()
            .get(METADATA_KEY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or(SERVER)
    }
}

/// Now, as a protobuf timestamp, to the microsecond: the JSON then reads
/// `2025-10-28T14:30:45.123456+00:00`, as the aws CLI prints ECS timestamps.
pub fn now() -> Timestamp {
    timestamp(std::time::SystemTime::now())
}

/// `t` as a protobuf timestamp, to the microsecond as [`now`] (before 1970 counts as 1970).
pub fn timestamp(t: std::time::SystemTime) -> Timestamp {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: (d.subsec_micros() * 1000) as i32,
    }
}

/// ECS's task and container statuses as enums, ordered by lifecycle: statuses only move forward,
/// so `a < b` means `a` comes first. Strings exist only on the wire (`as_str` / `parse`); an
/// unknown status is an error, never "the lowest".
pub mod status {
    use std::fmt;
    use std::str::FromStr;

    /// A status string that is not one ECS defines.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct UnknownStatus {
        /// "task" or "container".
        pub kind: &'static str,
        /// What was given.
        pub value: String,
    }

    impl fmt::Display for UnknownStatus {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "'{}' is not a {} status", self.value, self.kind)
        }
    }

    impl std::error::Error for UnknownStatus {}

    macro_rules! status_enum {
        ($(#[$doc:meta])* $name:ident, $kind:literal, [$($variant:ident = $text:literal),+ $(,)?]) => {
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
            pub enum $name {
                $(
                    #[doc = $text]
                    $variant,
                )+
            }

            impl $name {
                /// Every status, in lifecycle order.
                pub const ALL: &'static [$name] = &[$($name::$variant),+];

                /// The wire form (`"RUNNING"`).
                pub fn as_str(self) -> &'static str {
                    match self {
                        $($name::$variant => $text,)+
                    }
                }

                /// Parses the wire form; anything else is an error.
                pub fn parse(s: &str) -> Result<Self, UnknownStatus> {
                    match s {
                        $($text => Ok($name::$variant),)+
                        _ => Err(UnknownStatus { kind: $kind, value: s.to_string() }),
                    }
                }
            }

            impl FromStr for $name {
                type Err = UnknownStatus;
                fn from_str(s: &str) -> Result<Self, Self::Err> {
                    Self::parse(s)
                }
            }

            impl fmt::Display for $name {
                fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str(self.as_str())
                }
            }

            impl From<$name> for String {
                fn from(s: $name) -> String {
                    s.as_str().to_string()
                }
            }

            impl PartialEq<str> for $name {
                fn eq(&self, other: &str) -> bool {
                    self.as_str() == other
                }
            }

            impl PartialEq<&str> for $name {
                fn eq(&self, other: &&str) -> bool {
                    self.as_str() == *other
                }
            }

            impl PartialEq<String> for $name {
                fn eq(&self, other: &String) -> bool {
                    self.as_str() == other
                }
            }
        };
    }

    status_enum!(
        /// A task's lastStatus / desiredStatus.
        TaskStatus, "task", [
        Provisioning = "PROVISIONING",
        Pending = "PENDING",
        Activating = "ACTIVATING",
        Running = "RUNNING",
        Deactivating = "DEACTIVATING",
        Stopping = "STOPPING",
        Deprovisioning = "DEPROVISIONING",
        Stopped = "STOPPED",
    ]);

    status_enum!(
        /// A container's lastStatus.
        ContainerStatus, "container", [
        Pending = "PENDING",
        Running = "RUNNING",
        Stopped = "STOPPED",
    ]);

    status_enum!(
        /// A container's or a task's healthStatus (issue 9): UNKNOWN until its health check
        /// decides; a task's from its essential containers only.
        HealthStatus, "health", [
        Unknown = "UNKNOWN",
        Healthy = "HEALTHY",
        Unhealthy = "UNHEALTHY",
    ]);

    status_enum!(
        /// A container instance's status (ECS's ContainerInstanceStatus, and INACTIVE, which
        /// DeregisterContainerInstance leaves).
        ContainerInstanceStatus, "container instance", [
        Registering = "REGISTERING",
        RegistrationFailed = "REGISTRATION_FAILED",
        Active = "ACTIVE",
        Draining = "DRAINING",
        Deregistering = "DEREGISTERING",
        Inactive = "INACTIVE",
    ]);

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn statuses_round_trip_in_lifecycle_order() {
            for s in ContainerInstanceStatus::ALL {
                assert_eq!(ContainerInstanceStatus::parse(s.as_str()), Ok(*s));
            }
            for pair in TaskStatus::ALL.windows(2) {
                assert!(pair[0] < pair[1], "{} before {}", pair[0], pair[1]);
            }
            for s in TaskStatus::ALL {
                assert_eq!(TaskStatus::parse(s.as_str()), Ok(*s));
            }
            for s in ContainerStatus::ALL {
                assert_eq!(s.as_str().parse::<ContainerStatus>(), Ok(*s));
            }
            assert_eq!(TaskStatus::Stopping, "STOPPING");
        }

        #[test]
        fn an_unknown_status_is_an_error() {
            let e = TaskStatus::parse("RUNING").unwrap_err();
            assert_eq!(e.to_string(), "'RUNING' is not a task status");
            assert!(ContainerStatus::parse("PROVISIONING").is_err());
            assert!(TaskStatus::parse("running").is_err());
        }
    }
}

/// ECS-style ARNs: `arn:aws:ecs:REGION:ACCOUNT:RESOURCE`. Berth keeps ECS's shape so scripts that
/// split ARNs keep working; region and account are fixed placeholders for an on-premises fleet.
pub mod arn {
    /// The region written into ARNs.
    pub const REGION: &str = "on-prem";
    /// The account written into ARNs.
    pub const ACCOUNT: &str = "000000000000";

    fn prefix() -> String {
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:")
    }

    /// `…:cluster/NAME`
    pub fn cluster(name: &str) -> String {
        format!("{}cluster/{name}", prefix())
    }
    /// `…:task-definition/FAMILY:REVISION`
    pub fn task_definition(family: &str, revision: i32) -> String {
        format!("{}task-definition/{family}:{revision}", prefix())
    }
    /// `…:task/CLUSTER/ID`
    pub fn task(cluster: &str, id: &str) -> String {
        format!("{}task/{cluster}/{id}", prefix())
    }
    /// `…:container-instance/CLUSTER/ID`
    pub fn container_instance(cluster: &str, id: &str) -> String {
        format!("{}container-instance/{cluster}/{id}", prefix())
    }
    /// `…:container/CLUSTER/TASK/ID`
    pub fn container(cluster: &str, task: &str, id: &str) -> String {
        format!("{}container/{cluster}/{task}/{id}", prefix())
    }

    /// The resource part of an ARN of the given kind (`cluster`, `task`, ...), or the input
    /// itself when it is not an ARN. `None` when it is an ARN of another kind.
    pub fn resource<'a>(kind: &str, name_or_arn: &'a str) -> Option<&'a str> {
        if !name_or_arn.starts_with("arn:") {
            return Some(name_or_arn);
        }
        // arn:partition:service:region:account:resource
        let resource = name_or_arn.splitn(6, ':').nth(5)?;
        let rest = resource.strip_prefix(kind)?.strip_prefix('/')?;
        Some(rest)
    }

    /// The family and revision of a task definition named `FAMILY:REVISION` or by its ARN;
    /// `None` for a bare family, an ARN of another kind or a revision that is not a number.
    pub fn family_revision(name_or_arn: &str) -> Option<(&str, i32)> {
        let (family, revision) = resource("task-definition", name_or_arn)?.rsplit_once(':')?;
        Some((family, revision.parse().ok()?))
    }

    /// The last path segment of an ARN's resource (a task or instance id), or the input itself.
    pub fn short_id<'a>(kind: &str, name_or_arn: &'a str) -> Option<&'a str> {
        resource(kind, name_or_arn).map(|r| r.rsplit('/').next().unwrap_or(r))
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_short_names_and_arns() {
            assert_eq!(family_revision("web:3"), Some(("web", 3)));
            assert_eq!(
                family_revision(&task_definition("web", 12)),
                Some(("web", 12))
            );
            assert_eq!(family_revision("web"), None);
            assert_eq!(family_revision("web:x"), None);
            assert_eq!(resource("cluster", "prod"), Some("prod"));
            assert_eq!(resource("cluster", &cluster("prod")), Some("prod"));
            assert_eq!(short_id("task", &task("prod", "abc")), Some("abc"));
            assert_eq!(short_id("task", "abc"), Some("abc"));
            assert_eq!(resource("task", &cluster("prod")), None);
            assert_eq!(
                resource("task-definition", &task_definition("web", 3)),
                Some("web:3")
            );
        }
    }
}

/// The configuration-file convention both daemons share, like the ECS agent's
/// `/etc/ecs/ecs.config`: `KEY=VALUE` lines (`#` comments) whose keys are the daemons'
/// environment variables. A variable already set in the environment wins over the file, and a
/// flag wins over both.
pub mod config {
    use std::path::Path;

    /// The `KEY=VALUE` pairs of a config file. A missing file is empty; a malformed line is an
    /// error naming the file and line.
    pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("{}: {e}", path.display())),
        };
        let mut out = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line.split_once('=').ok_or_else(|| {
                format!(
                    "{}:{}: expected KEY=VALUE, got '{line}'",
                    path.display(),
                    n + 1
                )
            })?;
            out.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
        Ok(out)
    }

    /// The config file a daemon reads: `--config PATH` (or `--config=PATH`) on its command line,
    /// else the `env` variable, else `default`. Found before flag parsing, since the file's
    /// values become environment variables that the flags fall back to.
    pub fn path_from_args(env: &str, default: &str) -> std::path::PathBuf {
        let mut args = std::env::args();
        while let Some(a) = args.next() {
            if a == "--config" {
                if let Some(p) = args.next() {
                    return p.into();
                }
            } else if let Some(p) = a.strip_prefix("--config=") {
                return p.into();
            }
        }
        std::env::var_os(env)
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| default.into())
    }

    /// Sets each pair of the file as an environment variable unless the environment has it.
    /// Call before spawning threads.
    pub fn apply_env_file(path: &Path) -> Result<(), String> {
        for (k, v) in read_env_file(path)? {
            if std::env::var_os(&k).is_none() {
                // SAFETY: called at start-up, before the runtime or any other thread exists.
                unsafe { std::env::set_var(k, v) };
            }
        }
        Ok(())
    }
}

/// Constants of the agent link both sides share: its protocol version window and limits.
pub mod link {
    use std::time::Duration;

    /// The link protocol this build speaks. 1 is the first versioned protocol (agent epochs,
    /// hellos both ways, heartbeats, definitions once per session). 2 (issue 12) adds partial
    /// desired sets: after a session's first (whole) DesiredTasks, the controller sends an agent
    /// speaking 2 only the assignments that changed and the ARNs removed from the set
    /// (`DesiredTasks.partial`, `.removed`); an agent speaking 1 keeps getting whole sets, and
    /// an agent speaking 2 takes whole sets from a controller speaking 1.
    pub const PROTOCOL_VERSION: u32 = 2;
    /// The oldest protocol this build still speaks. The window is N and N-1 once there is an
    /// N-1: a fleet upgrades one side at a time within it.
    pub const MIN_PROTOCOL_VERSION: u32 = 1;
    /// The largest message either side sends or accepts (tonic's default is 4 MiB).
    pub const MAX_MESSAGE_SIZE: usize = 64 * 1024 * 1024;
    /// How often a side with nothing else to send sends a heartbeat.
    pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(4);
    /// Heartbeat intervals without any message after which a session is dead.
    pub const MISSED_HEARTBEATS: u32 = 3;

    /// ExecuteCommand flow control (exec.proto): the output messages an agent may send for one
    /// session beyond what the controller has granted back (`ExecInput.credit`).
    pub const EXEC_OUTPUT_WINDOW: u32 = 64;
    /// The most bytes of one `ExecOutput` (and of one `ExecInput`'s data).
    pub const EXEC_CHUNK: usize = 32 * 1024;

    #[cfg(test)]
    mod heartbeat_tests {
        /// Issue 12: an instance whose agent is cut off shows agentConnected=false within
        /// 15 s: a session silent for MISSED_HEARTBEATS intervals is ended, and the
        /// controller's check runs each interval. (The lab measures it on real hosts:
        /// `lab::a_host_cut_off_frozen_or_killed…` prints the time.)
        #[test]
        fn a_silent_peer_is_noticed_within_15_s() {
            let worst = super::HEARTBEAT_INTERVAL * (super::MISSED_HEARTBEATS + 1);
            assert!(
                worst <= std::time::Duration::from_secs(16)
                    && super::HEARTBEAT_INTERVAL * super::MISSED_HEARTBEATS
                        <= std::time::Duration::from_secs(15),
                "{worst:?}"
            );
        }
    }

    /// The agent's exit status when its instance was deregistered, as the ECS agent's
    /// `ExitTerminal`: its supervisor must not restart it (`RestartPreventExitStatus=5`).
    pub const EXIT_TERMINAL: i32 = 5;
    /// The metadata key naming why the controller refused a registration or session.
    pub const REFUSAL_METADATA: &str = "x-berth-link-refusal";
    /// The refusal of an instance that was deregistered (INACTIVE), the ECS name for it.
    pub const INACTIVE_INSTANCE: &str = "InactiveInstanceException";

    /// The controller's refusal of a registration or session under an INACTIVE instance.
    pub fn inactive_refusal(instance_arn: &str) -> tonic::Status {
        let mut s = tonic::Status::failed_precondition(format!(
            "container instance {instance_arn} was deregistered (INACTIVE); start the agent without its saved identity to register a new instance"
        ));
        s.metadata_mut().insert(
            REFUSAL_METADATA,
            tonic::metadata::MetadataValue::from_static(INACTIVE_INSTANCE),
        );
        s
    }

    /// Whether `status` is [`inactive_refusal`].
    pub fn is_inactive_refusal(status: &tonic::Status) -> bool {
        status
            .metadata()
            .get(REFUSAL_METADATA)
            .is_some_and(|v| v == INACTIVE_INSTANCE)
    }

    /// Whether this build speaks protocol `v`.
    pub fn speaks(v: u32) -> bool {
        (MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v)
    }

    /// The one line each side logs (and the controller returns) when it refuses a peer.
    pub fn refusal(peer: &str, v: u32) -> String {
        format!(
            "{peer} speaks link protocol {v}; this build speaks {MIN_PROTOCOL_VERSION}..={PROTOCOL_VERSION}: upgrade the older side"
        )
    }

    /// An agent-link client with the link's message limits.
    pub fn client(
        channel: tonic::transport::Channel,
    ) -> crate::v1::agent_client::AgentClient<tonic::transport::Channel> {
        crate::v1::agent_client::AgentClient::new(channel)
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }
}

/// ECS's JSON for empty lists. The generated serde mapping writes every list, empty or not;
/// ECS writes an empty list only for the members it always fills (`"failures": []`,
/// `"portMappings": []`, `"attachments": []`, ...) and leaves the others out
/// (`credentialSpecs`, `dependsOn`, `gpuIds`, a container override's `environment`, ...).
/// Responses rendered for users go through [`ecs_json::omit_unset_lists`].
pub mod ecs_json {
    use serde_json::Value;

    /// `(holders, members)`: the empty lists ECS shows. A holder is the member holding the
    /// object (a list's items are held by the list's member; `""` is the response itself, an
    /// operation's name its response only).
    const SHOWN_EMPTY: &[(&[&str], &[&str])] = &[
        (
            &[""],
            &[
                "failures",
                "tasks",
                "clusters",
                "containerInstances",
                "taskDefinitions",
                "taskArns",
                "clusterArns",
                "containerInstanceArns",
                "taskDefinitionArns",
                "families",
                "attributes",
                "services",
                "serviceArns",
            ],
        ),
        // Issue 12: a service shows these lists empty or not.
        (
            &["service", "services"],
            &[
                "loadBalancers",
                "serviceRegistries",
                "deployments",
                "events",
                "placementConstraints",
                "placementStrategy",
            ],
        ),
        // Tags show, empty or not, where they are what was asked for; elsewhere (describe
        // without `--include TAGS`, register) ECS leaves the member out.
        (&["ListTagsForResource"], &["tags"]),
        (
            &["taskDefinition", "taskDefinitions"],
            &[
                "containerDefinitions",
                "volumes",
                "placementConstraints",
                "compatibilities",
            ],
        ),
        (
            &["containerDefinitions"],
            &[
                "portMappings",
                "environment",
                "mountPoints",
                "volumesFrom",
                "systemControls",
            ],
        ),
        (
            &["task", "tasks"],
            &["attachments", "attributes", "containers", "tags"],
        ),
        (&["containers"], &["networkBindings", "networkInterfaces"]),
        (
            &["overrides"],
            &["containerOverrides", "inferenceAcceleratorOverrides"],
        ),
        (
            &["cluster", "clusters"],
            &[
                "statistics",
                "tags",
                "settings",
                "capacityProviders",
                "defaultCapacityProviderStrategy",
            ],
        ),
        (
            &["containerInstance", "containerInstances"],
            &[
                "remainingResources",
                "registeredResources",
                "attributes",
                "attachments",
                "tags",
            ],
        ),
        (&["attachments"], &["details"]),
        // EC2 (`berth ec2`): the empty lists EC2 answers.
        (&["DescribeSecurityGroups"], &["SecurityGroups"]),
        (
            &["SecurityGroups"],
            &["IpPermissions", "IpPermissionsEgress"],
        ),
        (
            &["IpPermissions", "IpPermissionsEgress"],
            &["IpRanges", "UserIdGroupPairs"],
        ),
        // CloudWatch Logs (`berth logs`, issue 10): the empty lists it answers.
        (
            &[
                "DescribeLogGroups",
                "DescribeLogStreams",
                "GetLogEvents",
                "FilterLogEvents",
            ],
            &["logGroups", "logStreams", "events", "searchedLogStreams"],
        ),
    ];

    fn shown(holder: &str, member: &str) -> bool {
        SHOWN_EMPTY
            .iter()
            .any(|(holders, members)| holders.contains(&holder) && members.contains(&member))
    }

    /// Removes, from the JSON of `api`'s response (`DescribeTasks`), the empty lists ECS leaves
    /// out, and the empty maps and structures (`"dockerLabels": {}`), which ECS never writes.
    pub fn omit_unset_lists(v: &mut Value, api: &str) {
        if let Value::Object(map) = v {
            for (k, x) in map.iter_mut() {
                walk(x, k);
            }
            map.retain(|k, x| keep(x, "", k) || shown(api, k));
        }
    }

    fn keep(x: &Value, holder: &str, member: &str) -> bool {
        match x {
            Value::Array(a) => !a.is_empty() || shown(holder, member),
            Value::Object(o) => !o.is_empty(),
            _ => true,
        }
    }

    fn walk(v: &mut Value, holder: &str) {
        match v {
            Value::Object(map) => {
                for (k, x) in map.iter_mut() {
                    walk(x, k);
                }
                map.retain(|k, x| keep(x, holder, k));
            }
            Value::Array(items) => {
                for x in items {
                    walk(x, holder);
                }
            }
            _ => {}
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        use serde_json::json;

        #[test]
        fn empty_lists_ecs_fills_stay_and_the_others_go() {
            let mut v = json!({
                "failures": [],
                "tasks": [{
                    "attachments": [],
                    "containers": [{"networkBindings": [], "gpuIds": [], "managedAgents": []}],
                    "overrides": {
                        "containerOverrides": [{"name": "a", "environment": [], "command": []}],
                        "inferenceAcceleratorOverrides": []
                    }
                }]
            });
            omit_unset_lists(&mut v, "DescribeTasks");
            assert_eq!(
                v,
                json!({
                    "failures": [],
                    "tasks": [{
                        "attachments": [],
                        "containers": [{"networkBindings": []}],
                        "overrides": {
                            "containerOverrides": [{"name": "a"}],
                            "inferenceAcceleratorOverrides": []
                        }
                    }]
                })
            );
            let mut td = json!({"taskDefinition": {"volumes": [], "requiresCompatibilities": [],
                "containerDefinitions": [{"environment": [], "links": [], "dependsOn": [],
                  "credentialSpecs": [], "logConfiguration": {"secretOptions": []}}]}});
            omit_unset_lists(&mut td, "DescribeTaskDefinition");
            assert_eq!(
                td,
                json!({"taskDefinition": {"volumes": [],
                    "containerDefinitions": [{"environment": []}]}})
            );
            // Unset maps and structures go too; tags go unless they were asked for.
            let mut td = json!({"taskDefinition": {"containerDefinitions": [{"dockerLabels": {},
                "logConfiguration": {"logDriver": "json-file", "options": {}}}]}, "tags": []});
            omit_unset_lists(&mut td, "DescribeTaskDefinition");
            assert_eq!(
                td,
                json!({"taskDefinition": {"containerDefinitions": [
                    {"logConfiguration": {"logDriver": "json-file"}}]}})
            );
            let mut tags = json!({"tags": []});
            omit_unset_lists(&mut tags, "ListTagsForResource");
            assert_eq!(tags, json!({"tags": []}));
        }
    }
}
