//! The operation table: one row per rpc of the `Ecs`, `Ssm`, `SecretsManager`, `Iam` and `Ec2` services. A row names the API operation and
//! carries the generic functions that turn its request JSON into the encoded message and the
//! encoded response back into JSON; flags, key spellings and types come from the model
//! ([`super::model`]), so adding an operation is adding its row.

use berth_proto::v1 as pb;
use serde_json::Value;

/// Turns a checked request JSON into the encoded request message.
pub type DecodeFn = fn(Value) -> Result<Vec<u8>, String>;
/// Turns an encoded response message into its JSON.
pub type RenderFn = fn(&[u8]) -> Result<Value, String>;

/// How the aws CLI pages a list operation (botocore's paginators-1.json: ECS's use
/// `nextToken` in and out and `maxResults` as the page size; CloudWatch Logs' `limit`).
#[derive(Debug, Clone, Copy)]
pub struct Paginator {
    /// The list the pages are merged on (`taskArns`).
    pub result_key: &'static str,
    /// The request member `--page-size` sets (`maxResults`, `limit`).
    pub limit_key: &'static str,
    /// Further lists botocore merges over the pages (FilterLogEvents' `searchedLogStreams`),
    /// concatenated; `--max-items` counts only `result_key`'s items.
    pub also: &'static [&'static str],
}

/// The request token of a paginated operation.
pub const INPUT_TOKEN: &str = "nextToken";
/// The response token of a paginated operation.
pub const OUTPUT_TOKEN: &str = "nextToken";
/// The request's page size (ECS's; a [`Paginator`] names its own).
pub const LIMIT_KEY: &str = "maxResults";

/// A service of the CLI: `berth ecs`, `berth ssm`, ... as `aws ecs`, `aws ssm`.
#[derive(Debug)]
pub struct Service {
    /// The subcommand (`ecs`) and, in SigV4 scopes, the signing name.
    pub cli: &'static str,
    /// The gRPC service (`berth.v1.Ecs`).
    pub grpc: &'static str,
    /// `--help`'s line.
    pub about: &'static str,
}

/// `berth ecs`.
pub const ECS: Service = Service {
    cli: "ecs",
    grpc: "berth.v1.Ecs",
    about: "Amazon ECS-compatible operations",
};
/// `berth ssm`: activations (agent registration) and Parameter Store.
pub const SSM: Service = Service {
    cli: "ssm",
    grpc: "berth.v1.Ssm",
    about: "AWS Systems Manager-compatible operations: activations and parameters",
};
/// `berth secretsmanager`.
pub const SECRETS_MANAGER: Service = Service {
    cli: "secretsmanager",
    grpc: "berth.v1.SecretsManager",
    about: "AWS Secrets Manager-compatible operations",
};
/// `berth iam`: the access keys API calls are signed with.
pub const IAM: Service = Service {
    cli: "iam",
    grpc: "berth.v1.Iam",
    about: "AWS IAM-compatible operations: access keys",
};
/// `berth ec2`: security groups (a cluster is the VPC).
pub const EC2: Service = Service {
    cli: "ec2",
    grpc: "berth.v1.Ec2",
    about: "Amazon EC2-compatible operations: security groups (a cluster is the VPC)",
};
/// `berth logs`: CloudWatch Logs (issue 10).
pub const LOGS: Service = Service {
    cli: "logs",
    grpc: "berth.v1.Logs",
    about:
        "Amazon CloudWatch Logs-compatible operations: log groups, streams and events, and `tail`",
};
/// Every service, in `--help` order.
pub const SERVICES: &[&Service] = &[&ECS, &SSM, &SECRETS_MANAGER, &IAM, &EC2, &LOGS];

/// A row: one API operation.
pub struct Operation {
    /// The service the operation belongs to.
    pub service: &'static Service,
    /// The API operation (`RunTask`): the rpc name and the `--output table` title.
    pub api: &'static str,
    /// Request JSON to encoded request.
    pub decode: DecodeFn,
    /// Encoded response to JSON.
    pub render: RenderFn,
    /// Set for the operations the aws CLI pages.
    pub pages: Option<Paginator>,
}

impl Operation {
    /// The subcommand (`run-task`): the API name in lower case with dashes, as botocore's
    /// `xform_name` makes it.
    pub fn cli_name(&self) -> String {
        let mut out = String::new();
        for (i, c) in self.api.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        }
        out
    }

    /// The gRPC path of the rpc.
    pub fn path(&self) -> String {
        format!("/{}/{}", self.service.grpc, self.api)
    }
}

/// Decodes the request JSON with the proto's serde mapping and encodes it.
pub fn decode<T: serde::de::DeserializeOwned + prost::Message>(
    v: Value,
) -> Result<Vec<u8>, String> {
    let req: T = serde_json::from_value(v).map_err(|e| e.to_string())?;
    Ok(req.encode_to_vec())
}

/// Decodes an encoded response and renders it with the proto's serde mapping (the caller
/// leaves out what ECS leaves out: `berth_proto::ecs_json`).
pub fn render<T: serde::Serialize + prost::Message + Default>(
    bytes: &[u8],
) -> Result<Value, String> {
    let resp = T::decode(bytes).map_err(|e| e.to_string())?;
    serde_json::to_value(&resp).map_err(|e| e.to_string())
}

const fn op<Req, Resp>(api: &'static str) -> Operation
where
    Req: serde::de::DeserializeOwned + prost::Message,
    Resp: serde::Serialize + prost::Message + Default,
{
    of::<Req, Resp>(&ECS, api)
}

const fn of<Req, Resp>(service: &'static Service, api: &'static str) -> Operation
where
    Req: serde::de::DeserializeOwned + prost::Message,
    Resp: serde::Serialize + prost::Message + Default,
{
    Operation {
        service,
        api,
        decode: decode::<Req>,
        render: render::<Resp>,
        pages: None,
    }
}

const fn paged<Req, Resp>(api: &'static str, result_key: &'static str) -> Operation
where
    Req: serde::de::DeserializeOwned + prost::Message,
    Resp: serde::Serialize + prost::Message + Default,
{
    Operation {
        pages: Some(Paginator {
            result_key,
            limit_key: LIMIT_KEY,
            also: &[],
        }),
        ..op::<Req, Resp>(api)
    }
}

/// The members each operation requires, from botocore's ECS model (`required` of each input
/// shape); operations not listed require none.
const REQUIRED: &[(&str, &[&str])] = &[
    ("DeleteCluster", &["cluster"]),
    ("UpdateCluster", &["cluster"]),
    ("UpdateClusterSettings", &["cluster", "settings"]),
    (
        "RegisterTaskDefinition",
        &["family", "containerDefinitions"],
    ),
    ("DescribeTaskDefinition", &["taskDefinition"]),
    ("DeregisterTaskDefinition", &["taskDefinition"]),
    ("DeleteTaskDefinitions", &["taskDefinitions"]),
    ("RunTask", &["taskDefinition"]),
    ("StartTask", &["containerInstances", "taskDefinition"]),
    ("StopTask", &["task"]),
    ("DescribeTasks", &["tasks"]),
    ("DescribeTaskStats", &["tasks"]),
    ("DescribePullProgress", &["tasks"]),
    ("DescribeContainerInstances", &["containerInstances"]),
    ("CreateService", &["serviceName"]),
    ("UpdateService", &["service"]),
    ("DeleteService", &["service"]),
    ("DescribeServices", &["services"]),
    (
        "UpdateContainerInstancesState",
        &["containerInstances", "status"],
    ),
    ("DeregisterContainerInstance", &["containerInstance"]),
    ("PutAttributes", &["attributes"]),
    ("DeleteAttributes", &["attributes"]),
    ("ListAttributes", &["targetType"]),
    ("TagResource", &["resourceArn", "tags"]),
    ("UntagResource", &["resourceArn", "tagKeys"]),
    ("ListTagsForResource", &["resourceArn"]),
    // botocore's ssm, secretsmanager and iam models.
    ("CreateActivation", &["IamRole"]),
    ("DeleteActivation", &["ActivationId"]),
    ("PutParameter", &["Name", "Value"]),
    ("GetParameter", &["Name"]),
    ("DeleteParameter", &["Name"]),
    ("CreateSecret", &["Name"]),
    ("PutSecretValue", &["SecretId"]),
    ("DeleteSecret", &["SecretId"]),
    ("DeleteAccessKey", &["AccessKeyId"]),
    // botocore's ec2 model.
    ("CreateSecurityGroup", &["GroupName", "Description"]),
    // botocore's logs model (Berth names the group by logGroupName only).
    ("CreateLogGroup", &["logGroupName"]),
    ("DeleteLogGroup", &["logGroupName"]),
    ("PutRetentionPolicy", &["logGroupName", "retentionInDays"]),
    ("DeleteRetentionPolicy", &["logGroupName"]),
    ("CreateLogStream", &["logGroupName", "logStreamName"]),
    ("DescribeLogStreams", &["logGroupName"]),
    (
        "PutLogEvents",
        &["logGroupName", "logStreamName", "logEvents"],
    ),
    ("GetLogEvents", &["logGroupName", "logStreamName"]),
    ("FilterLogEvents", &["logGroupName"]),
];

/// The request members `api` requires.
pub fn required(api: &str) -> &'static [&'static str] {
    REQUIRED
        .iter()
        .find(|(a, _)| *a == api)
        .map(|(_, r)| *r)
        .unwrap_or(&[])
}

/// Every operation of `berth ecs`, one per rpc of `berth.v1.Ecs`.
pub const OPERATIONS: &[Operation] = &[
    op::<pb::CreateClusterRequest, pb::CreateClusterResponse>("CreateCluster"),
    paged::<pb::ListClustersRequest, pb::ListClustersResponse>("ListClusters", "clusterArns"),
    op::<pb::DescribeClustersRequest, pb::DescribeClustersResponse>("DescribeClusters"),
    op::<pb::DeleteClusterRequest, pb::DeleteClusterResponse>("DeleteCluster"),
    op::<pb::UpdateClusterRequest, pb::UpdateClusterResponse>("UpdateCluster"),
    op::<pb::UpdateClusterSettingsRequest, pb::UpdateClusterSettingsResponse>(
        "UpdateClusterSettings",
    ),
    op::<pb::RegisterTaskDefinitionRequest, pb::RegisterTaskDefinitionResponse>(
        "RegisterTaskDefinition",
    ),
    paged::<pb::ListTaskDefinitionsRequest, pb::ListTaskDefinitionsResponse>(
        "ListTaskDefinitions",
        "taskDefinitionArns",
    ),
    paged::<pb::ListTaskDefinitionFamiliesRequest, pb::ListTaskDefinitionFamiliesResponse>(
        "ListTaskDefinitionFamilies",
        "families",
    ),
    op::<pb::DescribeTaskDefinitionRequest, pb::DescribeTaskDefinitionResponse>(
        "DescribeTaskDefinition",
    ),
    op::<pb::DeregisterTaskDefinitionRequest, pb::DeregisterTaskDefinitionResponse>(
        "DeregisterTaskDefinition",
    ),
    op::<pb::DeleteTaskDefinitionsRequest, pb::DeleteTaskDefinitionsResponse>(
        "DeleteTaskDefinitions",
    ),
    op::<pb::RunTaskRequest, pb::RunTaskResponse>("RunTask"),
    op::<pb::StartTaskRequest, pb::StartTaskResponse>("StartTask"),
    op::<pb::StopTaskRequest, pb::StopTaskResponse>("StopTask"),
    paged::<pb::ListTasksRequest, pb::ListTasksResponse>("ListTasks", "taskArns"),
    op::<pb::DescribeTasksRequest, pb::DescribeTasksResponse>("DescribeTasks"),
    paged::<pb::ListContainerInstancesRequest, pb::ListContainerInstancesResponse>(
        "ListContainerInstances",
        "containerInstanceArns",
    ),
    op::<pb::DescribeContainerInstancesRequest, pb::DescribeContainerInstancesResponse>(
        "DescribeContainerInstances",
    ),
    op::<pb::DeregisterContainerInstanceRequest, pb::DeregisterContainerInstanceResponse>(
        "DeregisterContainerInstance",
    ),
    op::<pb::PutAttributesRequest, pb::PutAttributesResponse>("PutAttributes"),
    op::<pb::DeleteAttributesRequest, pb::DeleteAttributesResponse>("DeleteAttributes"),
    paged::<pb::ListAttributesRequest, pb::ListAttributesResponse>("ListAttributes", "attributes"),
    op::<pb::TagResourceRequest, pb::TagResourceResponse>("TagResource"),
    op::<pb::UntagResourceRequest, pb::UntagResourceResponse>("UntagResource"),
    op::<pb::ListTagsForResourceRequest, pb::ListTagsForResourceResponse>("ListTagsForResource"),
    // Berth extension (issue 9): the latest stats sample of tasks.
    op::<pb::DescribeTaskStatsRequest, pb::DescribeTaskStatsResponse>("DescribeTaskStats"),
    // Berth extension (issue 11): the latest image pull progress of tasks.
    op::<pb::DescribePullProgressRequest, pb::DescribePullProgressResponse>("DescribePullProgress"),
    // Issue 12: services and draining.
    op::<pb::CreateServiceRequest, pb::CreateServiceResponse>("CreateService"),
    op::<pb::UpdateServiceRequest, pb::UpdateServiceResponse>("UpdateService"),
    op::<pb::DeleteServiceRequest, pb::DeleteServiceResponse>("DeleteService"),
    paged::<pb::ListServicesRequest, pb::ListServicesResponse>("ListServices", "serviceArns"),
    op::<pb::DescribeServicesRequest, pb::DescribeServicesResponse>("DescribeServices"),
    op::<pb::UpdateContainerInstancesStateRequest, pb::UpdateContainerInstancesStateResponse>(
        "UpdateContainerInstancesState",
    ),
];

/// The rows of `berth ssm`, `berth secretsmanager`, `berth iam` and `berth ec2` (their JSON keys
/// are AWS's PascalCase; the CLI pages none of them).
pub const OTHER_OPERATIONS: &[Operation] = &[
    of::<pb::CreateActivationRequest, pb::CreateActivationResponse>(&SSM, "CreateActivation"),
    of::<pb::DescribeActivationsRequest, pb::DescribeActivationsResponse>(
        &SSM,
        "DescribeActivations",
    ),
    of::<pb::DeleteActivationRequest, pb::DeleteActivationResponse>(&SSM, "DeleteActivation"),
    of::<pb::PutParameterRequest, pb::PutParameterResponse>(&SSM, "PutParameter"),
    of::<pb::GetParameterRequest, pb::GetParameterResponse>(&SSM, "GetParameter"),
    of::<pb::DeleteParameterRequest, pb::DeleteParameterResponse>(&SSM, "DeleteParameter"),
    of::<pb::CreateSecretRequest, pb::CreateSecretResponse>(&SECRETS_MANAGER, "CreateSecret"),
    of::<pb::PutSecretValueRequest, pb::PutSecretValueResponse>(&SECRETS_MANAGER, "PutSecretValue"),
    of::<pb::DeleteSecretRequest, pb::DeleteSecretResponse>(&SECRETS_MANAGER, "DeleteSecret"),
    of::<pb::CreateAccessKeyRequest, pb::CreateAccessKeyResponse>(&IAM, "CreateAccessKey"),
    of::<pb::ListAccessKeysRequest, pb::ListAccessKeysResponse>(&IAM, "ListAccessKeys"),
    of::<pb::DeleteAccessKeyRequest, pb::DeleteAccessKeyResponse>(&IAM, "DeleteAccessKey"),
    of::<pb::CreateSecurityGroupRequest, pb::CreateSecurityGroupResponse>(
        &EC2,
        "CreateSecurityGroup",
    ),
    Operation {
        render: super::ec2::render_security_groups,
        ..of::<pb::DescribeSecurityGroupsRequest, pb::DescribeSecurityGroupsResponse>(
            &EC2,
            "DescribeSecurityGroups",
        )
    },
    of::<pb::DeleteSecurityGroupRequest, pb::DeleteSecurityGroupResponse>(
        &EC2,
        "DeleteSecurityGroup",
    ),
    of::<pb::SecurityGroupIngressRequest, pb::AuthorizeSecurityGroupIngressResponse>(
        &EC2,
        "AuthorizeSecurityGroupIngress",
    ),
    of::<pb::SecurityGroupIngressRequest, pb::RevokeSecurityGroupIngressResponse>(
        &EC2,
        "RevokeSecurityGroupIngress",
    ),
];

/// The members of CloudWatch Logs' shapes that are longs (times in ms, byte counts): proto3's
/// JSON renders int64 as strings, the aws CLI prints numbers.
const LOGS_LONGS: &[&str] = &[
    "creationTime",
    "storedBytes",
    "firstEventTimestamp",
    "lastEventTimestamp",
    "lastIngestionTime",
    "timestamp",
    "ingestionTime",
];

fn longs_as_numbers(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if let (true, Value::String(s)) = (LOGS_LONGS.contains(&k.as_str()), &*x) {
                    if let Ok(n) = s.parse::<i64>() {
                        *x = Value::from(n);
                        continue;
                    }
                }
                longs_as_numbers(x);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(longs_as_numbers),
        _ => {}
    }
}

/// [`render`] with CloudWatch Logs' longs as JSON numbers.
pub fn render_logs<T: serde::Serialize + prost::Message + Default>(
    bytes: &[u8],
) -> Result<Value, String> {
    let mut v = render::<T>(bytes)?;
    longs_as_numbers(&mut v);
    Ok(v)
}

const fn logs_op<Req, Resp>(api: &'static str) -> Operation
where
    Req: serde::de::DeserializeOwned + prost::Message,
    Resp: serde::Serialize + prost::Message + Default,
{
    Operation {
        render: render_logs::<Resp>,
        ..of::<Req, Resp>(&LOGS, api)
    }
}

const fn logs_paged<Req, Resp>(
    api: &'static str,
    result_key: &'static str,
    also: &'static [&'static str],
) -> Operation
where
    Req: serde::de::DeserializeOwned + prost::Message,
    Resp: serde::Serialize + prost::Message + Default,
{
    Operation {
        pages: Some(Paginator {
            result_key,
            limit_key: "limit",
            also,
        }),
        ..logs_op::<Req, Resp>(api)
    }
}

/// The rows of `berth logs` (issue 10): botocore's paginators page DescribeLogGroups,
/// DescribeLogStreams and FilterLogEvents by `limit`; GetLogEvents is paged by hand
/// (--next-token), as with aws. StartLiveTail is `berth logs tail --follow`'s stream.
pub const LOGS_OPERATIONS: &[Operation] = &[
    logs_op::<pb::CreateLogGroupRequest, pb::CreateLogGroupResponse>("CreateLogGroup"),
    logs_op::<pb::DeleteLogGroupRequest, pb::DeleteLogGroupResponse>("DeleteLogGroup"),
    logs_paged::<pb::DescribeLogGroupsRequest, pb::DescribeLogGroupsResponse>(
        "DescribeLogGroups",
        "logGroups",
        &[],
    ),
    logs_op::<pb::PutRetentionPolicyRequest, pb::PutRetentionPolicyResponse>("PutRetentionPolicy"),
    logs_op::<pb::DeleteRetentionPolicyRequest, pb::DeleteRetentionPolicyResponse>(
        "DeleteRetentionPolicy",
    ),
    logs_op::<pb::CreateLogStreamRequest, pb::CreateLogStreamResponse>("CreateLogStream"),
    logs_paged::<pb::DescribeLogStreamsRequest, pb::DescribeLogStreamsResponse>(
        "DescribeLogStreams",
        "logStreams",
        &[],
    ),
    logs_op::<pb::PutLogEventsRequest, pb::PutLogEventsResponse>("PutLogEvents"),
    logs_op::<pb::GetLogEventsRequest, pb::GetLogEventsResponse>("GetLogEvents"),
    logs_paged::<pb::FilterLogEventsRequest, pb::FilterLogEventsResponse>(
        "FilterLogEvents",
        "events",
        &["searchedLogStreams"],
    ),
    logs_op::<pb::StartLiveTailRequest, pb::StartLiveTailResponse>("StartLiveTail"),
];

/// Every row of every service.
pub fn all_operations() -> impl Iterator<Item = &'static Operation> {
    OPERATIONS
        .iter()
        .chain(OTHER_OPERATIONS)
        .chain(LOGS_OPERATIONS)
}

/// The row of a subcommand (`run-task`) of a service (`ecs`).
pub fn by_cli_name(service: &str, name: &str) -> Option<&'static Operation> {
    all_operations().find(|o| o.service.cli == service && o.cli_name() == name)
}

/// The row of an API operation (`RunTask`); names are unique across services.
pub fn by_api(api: &str) -> Option<&'static Operation> {
    all_operations().find(|o| o.api == api)
}

/// What a waiter's acceptor compares (botocore's matchers; ECS's task waiters use these two).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    /// Every element of the (non-empty) list the expression yields equals `expected`.
    PathAll,
    /// Some element of the (non-empty) list the expression yields equals `expected`.
    PathAny,
    /// The expression yields `expected` (a JSON value: `true`, a number, or a string).
    Path,
}

/// What a matching acceptor ends the wait with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitState {
    /// The wait succeeded.
    Success,
    /// The wait failed.
    Failure,
}

/// One acceptor of a waiter.
#[derive(Debug, Clone, Copy)]
pub struct Acceptor {
    /// How the expression's result is compared.
    pub matcher: Matcher,
    /// A JMESPath expression over the response.
    pub argument: &'static str,
    /// The value compared with.
    pub expected: &'static str,
    /// The state a match ends in.
    pub state: WaitState,
}

impl Acceptor {
    /// botocore's explanation of a match, used in the failure message.
    pub fn explanation(&self) -> String {
        match self.matcher {
            Matcher::PathAll => format!(
                "For expression \"{}\" all members matched expected path: \"{}\"",
                self.argument, self.expected
            ),
            Matcher::PathAny => format!(
                "For expression \"{}\" we matched expected path: \"{}\" at least once",
                self.argument, self.expected
            ),
            Matcher::Path => format!(
                "For expression \"{}\" we matched expected path: {}",
                self.argument, self.expected
            ),
        }
    }
}

/// A waiter of `berth ecs wait` (botocore's waiters-2.json for ECS).
pub struct Waiter {
    /// The waiter's name (`TasksRunning`).
    pub name: &'static str,
    /// The subcommand (`tasks-running`).
    pub cli: &'static str,
    /// The operation polled.
    pub operation: &'static str,
    /// What it waits for, for `--help`.
    pub about: &'static str,
    /// aws polls every `delay` seconds at most `max_attempts` times: Berth polls every second
    /// for as long in all.
    pub delay_secs: u64,
    /// aws's attempt limit.
    pub max_attempts: u64,
    /// Tried in order; the first that matches decides.
    pub acceptors: &'static [Acceptor],
}

/// The waiters Berth has.
pub const WAITERS: &[Waiter] = &[
    // Issue 12: botocore's ServicesStable and ServicesInactive.
    Waiter {
        name: "ServicesStable",
        cli: "services-stable",
        operation: "DescribeServices",
        about: "Wait until every service has one deployment and runs its desiredCount; fails when one is MISSING, DRAINING or INACTIVE",
        delay_secs: 15,
        max_attempts: 40,
        acceptors: &[
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "failures[].reason",
                expected: "MISSING",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "services[].status",
                expected: "DRAINING",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "services[].status",
                expected: "INACTIVE",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::Path,
                argument: "length(services[?!(length(deployments) == `1` && runningCount == desiredCount)]) == `0`",
                expected: "true",
                state: WaitState::Success,
            },
        ],
    },
    Waiter {
        name: "ServicesInactive",
        cli: "services-inactive",
        operation: "DescribeServices",
        about: "Wait until every service is INACTIVE; fails when one is MISSING",
        delay_secs: 15,
        max_attempts: 40,
        acceptors: &[
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "failures[].reason",
                expected: "MISSING",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "services[].status",
                expected: "INACTIVE",
                state: WaitState::Success,
            },
        ],
    },
    Waiter {
        name: "TasksRunning",
        cli: "tasks-running",
        operation: "DescribeTasks",
        about: "Wait until every task is RUNNING; fails when one is STOPPED or MISSING",
        delay_secs: 6,
        max_attempts: 100,
        acceptors: &[
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "tasks[].lastStatus",
                expected: "STOPPED",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::PathAny,
                argument: "failures[].reason",
                expected: "MISSING",
                state: WaitState::Failure,
            },
            Acceptor {
                matcher: Matcher::PathAll,
                argument: "tasks[].lastStatus",
                expected: "RUNNING",
                state: WaitState::Success,
            },
        ],
    },
    Waiter {
        name: "TasksStopped",
        cli: "tasks-stopped",
        operation: "DescribeTasks",
        about: "Wait until every task is STOPPED",
        delay_secs: 6,
        max_attempts: 100,
        acceptors: &[Acceptor {
            matcher: Matcher::PathAll,
            argument: "tasks[].lastStatus",
            expected: "STOPPED",
            state: WaitState::Success,
        }],
    },
];

/// Waiters of aws's that wait on what Berth does not have yet: the subcommand answers why.
pub const WAITERS_NOT_BUILT: &[(&str, &str)] = &[];

#[cfg(test)]
mod tests {
    use super::super::model::{model, Kind, Model};
    use super::*;

    #[test]
    fn every_rpc_of_the_ecs_service_has_a_row() {
        let m = model();
        assert!(m.ecs.len() >= 26, "{}", m.ecs.len());
        for rpc in &m.ecs {
            assert!(
                by_api(&rpc.name).is_some(),
                "rpc {} of berth.v1.Ecs has no row in OPERATIONS",
                rpc.name
            );
        }
        for (service, rpcs) in &m.services {
            let s = SERVICES
                .iter()
                .find(|s| s.grpc == format!("berth.v1.{service}"))
                .unwrap_or_else(|| panic!("service {service} has no entry in SERVICES"));
            for rpc in rpcs {
                let op = by_api(&rpc.name)
                    .unwrap_or_else(|| panic!("rpc {} of {service} has no row", rpc.name));
                assert_eq!(op.service.grpc, s.grpc, "{}", rpc.name);
            }
        }
        let mut names: Vec<&str> = all_operations().map(|o| o.api).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "an rpc name is used by two services");
        for op in all_operations() {
            assert!(m.rpc(op.api).is_some(), "row {} is no rpc", op.api);
        }
    }

    /// Every required member names a field of its operation's request.
    #[test]
    fn required_members_are_fields_of_their_requests() {
        let m = model();
        for (api, keys) in REQUIRED {
            let rpc = m.rpc(api).unwrap_or_else(|| panic!("{api} is not an rpc"));
            let msg = m.message(&rpc.input).unwrap();
            for k in *keys {
                assert!(
                    msg.fields.iter().any(|f| f.json == *k),
                    "{api}: {k} is not a member"
                );
            }
        }
    }

    /// A row's types are the rpc's: the model's skeleton of the input decodes with the row's
    /// request type (unknown keys are refused), and every key of the row's rendered response is
    /// a field of the rpc's output.
    #[test]
    fn each_row_carries_its_rpcs_types() {
        let m: &Model = model();
        for op in all_operations() {
            let rpc = m.rpc(op.api).unwrap();
            let skeleton = super::super::decoding::skeleton(&rpc.input, false);
            (op.decode)(skeleton.clone())
                .unwrap_or_else(|e| panic!("{}: {skeleton} does not decode: {e}", op.api));
            let out = (op.render)(&[]).unwrap();
            let msg = m.message(&rpc.output).unwrap();
            for key in out.as_object().unwrap().keys() {
                assert!(msg.field(key).is_some(), "{}: {key}", op.api);
            }
            if let Some(p) = op.pages {
                let f = msg.field(p.result_key).unwrap();
                assert!(f.list, "{}", op.api);
                for k in p.also {
                    assert!(msg.field(k).is_some_and(|f| f.list), "{}: {k}", op.api);
                }
                assert!(msg.field(OUTPUT_TOKEN).is_some(), "{}", op.api);
                let input = m.message(&rpc.input).unwrap();
                assert_eq!(input.field(INPUT_TOKEN).unwrap().kind, Kind::Str);
                assert_eq!(input.field(p.limit_key).unwrap().kind, Kind::Int);
            }
        }
    }

    #[test]
    fn cli_names_are_botocores() {
        assert_eq!(by_api("RunTask").unwrap().cli_name(), "run-task");
        assert_eq!(
            by_api("UpdateClusterSettings").unwrap().cli_name(),
            "update-cluster-settings"
        );
        assert!(by_cli_name("ecs", "list-task-definition-families").is_some());
        assert_eq!(
            by_cli_name("ssm", "create-activation").unwrap().path(),
            "/berth.v1.Ssm/CreateActivation"
        );
        assert!(by_cli_name("ecs", "create-activation").is_none());
        assert_eq!(
            by_api("PutSecretValue").unwrap().path(),
            "/berth.v1.SecretsManager/PutSecretValue"
        );
    }
}
