//! The `berth` command line: `berth ecs OPERATION --flags`, the aws CLI's `aws ecs` with the
//! same subcommands, flags, shorthand syntax, output formats and exit codes.
//!
//! Each operation is a row of [`OPERATIONS`]: its flags map to keys of the request JSON, which
//! the proto's own serde mapping decodes, so the CLI keeps no second copy of the model.

pub mod output;
pub mod shorthand;

use berth_proto::v1::ecs_client::EcsClient;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Map, Value};
use tonic::transport::Channel;

/// How a flag's text becomes JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A string.
    Str,
    /// An integer.
    Int,
    /// A list of strings: space- or comma-separated.
    StrList,
    /// One structure: JSON or shorthand.
    Struct,
    /// A list of structures: JSON list, or one shorthand structure per word.
    StructList,
}

/// A flag of an operation.
pub struct Param {
    /// The flag, without `--`.
    pub flag: &'static str,
    /// The request's JSON key.
    pub key: &'static str,
    /// How it is parsed.
    pub kind: Kind,
}

/// A CLI operation.
pub struct Operation {
    /// The subcommand (`run-task`).
    pub name: &'static str,
    /// The API operation (`RunTask`), used in error messages.
    pub api: &'static str,
    /// Its flags.
    pub params: &'static [Param],
}

const fn p(flag: &'static str, key: &'static str, kind: Kind) -> Param {
    Param { flag, key, kind }
}

use Kind::*;

/// Every operation of `berth ecs`.
pub const OPERATIONS: &[Operation] = &[
    Operation {
        name: "create-cluster",
        api: "CreateCluster",
        params: &[
            p("cluster-name", "clusterName", Str),
            p("tags", "tags", StructList),
            p("settings", "settings", StructList),
            p("capacity-providers", "capacityProviders", StrList),
        ],
    },
    Operation {
        name: "list-clusters",
        api: "ListClusters",
        params: &[p("max-results", "maxResults", Int)],
    },
    Operation {
        name: "describe-clusters",
        api: "DescribeClusters",
        params: &[
            p("clusters", "clusters", StrList),
            p("include", "include", StrList),
        ],
    },
    Operation {
        name: "delete-cluster",
        api: "DeleteCluster",
        params: &[p("cluster", "cluster", Str)],
    },
    Operation {
        name: "register-task-definition",
        api: "RegisterTaskDefinition",
        params: &[
            p("family", "family", Str),
            p("task-role-arn", "taskRoleArn", Str),
            p("execution-role-arn", "executionRoleArn", Str),
            p("network-mode", "networkMode", Str),
            p("container-definitions", "containerDefinitions", StructList),
            p("volumes", "volumes", StructList),
            p("placement-constraints", "placementConstraints", StructList),
            p(
                "requires-compatibilities",
                "requiresCompatibilities",
                StrList,
            ),
            p("cpu", "cpu", Str),
            p("memory", "memory", Str),
            p("tags", "tags", StructList),
            p("pid-mode", "pidMode", Str),
            p("ipc-mode", "ipcMode", Str),
            p("runtime-platform", "runtimePlatform", Struct),
            p("ephemeral-storage", "ephemeralStorage", Struct),
        ],
    },
    Operation {
        name: "list-task-definitions",
        api: "ListTaskDefinitions",
        params: &[
            p("family-prefix", "familyPrefix", Str),
            p("status", "status", Str),
            p("sort", "sort", Str),
            p("max-results", "maxResults", Int),
        ],
    },
    Operation {
        name: "describe-task-definition",
        api: "DescribeTaskDefinition",
        params: &[
            p("task-definition", "taskDefinition", Str),
            p("include", "include", StrList),
        ],
    },
    Operation {
        name: "deregister-task-definition",
        api: "DeregisterTaskDefinition",
        params: &[p("task-definition", "taskDefinition", Str)],
    },
    Operation {
        name: "run-task",
        api: "RunTask",
        params: &[
            p("cluster", "cluster", Str),
            p("task-definition", "taskDefinition", Str),
            p("count", "count", Int),
            p("overrides", "overrides", Struct),
            p("started-by", "startedBy", Str),
            p("launch-type", "launchType", Str),
            p("network-configuration", "networkConfiguration", Struct),
            p("group", "group", Str),
            p("tags", "tags", StructList),
            p("placement-constraints", "placementConstraints", StructList),
        ],
    },
    Operation {
        name: "stop-task",
        api: "StopTask",
        params: &[
            p("cluster", "cluster", Str),
            p("task", "task", Str),
            p("reason", "reason", Str),
        ],
    },
    Operation {
        name: "list-tasks",
        api: "ListTasks",
        params: &[
            p("cluster", "cluster", Str),
            p("container-instance", "containerInstance", Str),
            p("family", "family", Str),
            p("started-by", "startedBy", Str),
            p("service-name", "serviceName", Str),
            p("desired-status", "desiredStatus", Str),
            p("launch-type", "launchType", Str),
            p("max-results", "maxResults", Int),
        ],
    },
    Operation {
        name: "describe-tasks",
        api: "DescribeTasks",
        params: &[
            p("cluster", "cluster", Str),
            p("tasks", "tasks", StrList),
            p("include", "include", StrList),
        ],
    },
    Operation {
        name: "list-container-instances",
        api: "ListContainerInstances",
        params: &[
            p("cluster", "cluster", Str),
            p("filter", "filter", Str),
            p("status", "status", Str),
            p("max-results", "maxResults", Int),
        ],
    },
    Operation {
        name: "describe-container-instances",
        api: "DescribeContainerInstances",
        params: &[
            p("cluster", "cluster", Str),
            p("container-instances", "containerInstances", StrList),
            p("include", "include", StrList),
        ],
    },
];

/// The endpoint used when neither --endpoint-url nor BERTH_ENDPOINT is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7480";

/// The clap command tree.
pub fn command() -> Command {
    let mut ecs = Command::new("ecs")
        .about("Amazon ECS-compatible operations")
        .subcommand_required(true)
        .infer_long_args(true);
    for op in OPERATIONS {
        let mut sub = Command::new(op.name).infer_long_args(true).arg(
            Arg::new("cli-input-json")
                .long("cli-input-json")
                .help("The whole request as JSON (or file://PATH), as the API takes it"),
        );
        for prm in op.params {
            let mut arg = Arg::new(prm.flag).long(prm.flag);
            arg = match prm.kind {
                Str | Int | Struct => arg.action(ArgAction::Set),
                StrList | StructList => arg.num_args(1..).action(ArgAction::Append),
            };
            sub = sub.arg(arg);
        }
        ecs = ecs.subcommand(sub);
    }
    Command::new("berth")
        .about("Berth's command line: `berth ecs ...` works as `aws ecs ...` does")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .infer_long_args(true)
        .arg(global(
            "endpoint-url",
            "The controller's URL [env: BERTH_ENDPOINT] [default: http://127.0.0.1:7480]",
        ))
        .arg(global("output", "json (default), text or table"))
        .arg(global("query", "A JMESPath query applied to the response"))
        .arg(global(
            "region",
            "Accepted for aws CLI compatibility; ignored",
        ))
        .arg(global(
            "profile",
            "Accepted for aws CLI compatibility; ignored",
        ))
        .arg(
            Arg::new("no-cli-pager")
                .long("no-cli-pager")
                .global(true)
                .action(ArgAction::SetTrue)
                .help("Accepted for aws CLI compatibility; berth never pages"),
        )
        .subcommand(ecs)
}

fn global(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .global(true)
        .action(ArgAction::Set)
        .help(help)
}

/// A CLI failure with the aws CLI's exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or parameter values (exit 252).
    #[error("{0}")]
    Usage(String),
    /// The service answered with an error (exit 254).
    #[error("An error occurred ({exception}) when calling the {api} operation: {message}")]
    Service {
        /// The ECS exception name.
        exception: String,
        /// The API operation.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The controller could not be reached (exit 255).
    #[error("Could not connect to the endpoint URL: \"{0}\"")]
    Connect(String),
}

impl CliError {
    /// The process exit code, as the aws CLI uses them.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 252,
            CliError::Service { .. } => 254,
            CliError::Connect(_) => 255,
        }
    }
}

fn read_value(text: &str) -> Result<String, CliError> {
    match text.strip_prefix("file://") {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "Error parsing parameter: Unable to load paramfile {text}: {e}"
            ))
        }),
        None => Ok(text.to_string()),
    }
}

fn parse_json(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "Error parsing parameter '--{flag}': Invalid JSON: {e}\nJSON received: {text}"
        ))
    })
}

fn parse_struct(flag: &str, text: &str) -> Result<Value, CliError> {
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        parse_json(flag, text)
    } else {
        shorthand::parse(text).map_err(|e| CliError::Usage(format!("--{flag}: {e}")))
    }
}

/// Builds the request JSON of `op` from the parsed flags.
pub fn request_json(op: &Operation, m: &ArgMatches) -> Result<Value, CliError> {
    let mut req = match m.get_one::<String>("cli-input-json") {
        Some(t) => match parse_json("cli-input-json", &read_value(t)?)? {
            Value::Object(map) => map,
            _ => {
                return Err(CliError::Usage(
                    "--cli-input-json must be a JSON object".into(),
                ))
            }
        },
        None => Map::new(),
    };
    for prm in op.params {
        let value = match prm.kind {
            Str => m
                .get_one::<String>(prm.flag)
                .map(|s| read_value(s).map(Value::String))
                .transpose()?,
            Int => match m.get_one::<String>(prm.flag) {
                Some(s) => Some(Value::from(s.trim().parse::<i64>().map_err(|_| {
                    CliError::Usage(format!("argument --{}: invalid int value: '{s}'", prm.flag))
                })?)),
                None => None,
            },
            Struct => match m.get_one::<String>(prm.flag) {
                Some(s) => Some(parse_struct(prm.flag, &read_value(s)?)?),
                None => None,
            },
            StrList => m.get_many::<String>(prm.flag).map(|vals| {
                let items = vals
                    .flat_map(|v| {
                        v.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect::<Vec<_>>()
                    })
                    .map(Value::String)
                    .collect();
                Value::Array(items)
            }),
            StructList => match m.get_many::<String>(prm.flag) {
                Some(vals) => {
                    let vals: Vec<String> =
                        vals.map(|v| read_value(v)).collect::<Result<_, _>>()?;
                    let mut items = Vec::new();
                    for v in &vals {
                        match parse_struct(prm.flag, v)? {
                            Value::Array(a) => items.extend(a),
                            other => items.push(other),
                        }
                    }
                    Some(Value::Array(items))
                }
                None => None,
            },
        };
        if let Some(v) = value {
            req.insert(prm.key.to_string(), v);
        }
    }
    Ok(Value::Object(req))
}

/// From serde's "unknown field `X`, expected one of `a`, `b`" error: the expected name that is
/// `X` in another letter case, if any.
fn case_variant(message: &str) -> Option<(String, String)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (given, expected) = rest.split_once('`')?;
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .find(|name| name.eq_ignore_ascii_case(given) && *name != given)
        .map(|name| (given.to_string(), name.to_string()))
}

/// Renames the key `from` to `to` in every object of `v`; whether any was renamed.
fn rename_key(v: &mut Value, from: &str, to: &str) -> bool {
    let mut renamed = false;
    match v {
        Value::Object(map) => {
            if let Some(x) = map.remove(from) {
                map.insert(to.to_string(), x);
                renamed = true;
            }
            for c in map.values_mut() {
                renamed |= rename_key(c, from, to);
            }
        }
        Value::Array(items) => {
            for c in items {
                renamed |= rename_key(c, from, to);
            }
        }
        _ => {}
    }
    renamed
}

/// Decodes a request. A key that differs from a known one only in letter case is taken as
/// that key (the ECS guide writes `awsVpcConfiguration`); any other unknown key is an error
/// naming it.
fn decode<T: serde::de::DeserializeOwned>(api: &str, mut v: Value) -> Result<T, CliError> {
    loop {
        match serde_json::from_value(v.clone()) {
            Ok(t) => return Ok(t),
            Err(e) => {
                let message = e.to_string();
                match case_variant(&message) {
                    Some((from, to)) if rename_key(&mut v, &from, &to) => continue,
                    _ => {
                        return Err(CliError::Usage(format!(
                            "Parameter validation failed for {api}: {message}"
                        )))
                    }
                }
            }
        }
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn service_error(api: &'static str, s: tonic::Status, endpoint: &str) -> CliError {
    if s.code() == tonic::Code::Unavailable {
        return CliError::Connect(endpoint.to_string());
    }
    let exception = s
        .metadata()
        .get(crate::error::EXCEPTION_METADATA)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("ServerException")
        .to_string();
    CliError::Service {
        exception,
        api,
        message: s.message().to_string(),
    }
}

macro_rules! call {
    ($client:expr, $method:ident, $ty:ident, $api:expr, $req:expr, $endpoint:expr) => {{
        let req: berth_proto::v1::$ty = decode($api, $req)?;
        let resp = $client
            .$method(req)
            .await
            .map_err(|s| service_error($api, s, $endpoint))?;
        encode(&resp.into_inner())
    }};
}

/// Sends `req` for `op` and returns the response JSON.
pub async fn invoke(op: &Operation, req: Value, endpoint: &str) -> Result<Value, CliError> {
    let channel = Channel::from_shared(endpoint.to_string())
        .map_err(|e| CliError::Usage(format!("--endpoint-url: '{endpoint}' is not a URL: {e}")))?
        .connect()
        .await
        .map_err(|_| CliError::Connect(endpoint.to_string()))?;
    let mut c = EcsClient::new(channel);
    let api = op.api;
    Ok(match op.name {
        "create-cluster" => call!(c, create_cluster, CreateClusterRequest, api, req, endpoint),
        "list-clusters" => call!(c, list_clusters, ListClustersRequest, api, req, endpoint),
        "describe-clusters" => call!(
            c,
            describe_clusters,
            DescribeClustersRequest,
            api,
            req,
            endpoint
        ),
        "delete-cluster" => call!(c, delete_cluster, DeleteClusterRequest, api, req, endpoint),
        "register-task-definition" => call!(
            c,
            register_task_definition,
            RegisterTaskDefinitionRequest,
            api,
            req,
            endpoint
        ),
        "list-task-definitions" => call!(
            c,
            list_task_definitions,
            ListTaskDefinitionsRequest,
            api,
            req,
            endpoint
        ),
        "describe-task-definition" => call!(
            c,
            describe_task_definition,
            DescribeTaskDefinitionRequest,
            api,
            req,
            endpoint
        ),
        "deregister-task-definition" => call!(
            c,
            deregister_task_definition,
            DeregisterTaskDefinitionRequest,
            api,
            req,
            endpoint
        ),
        "run-task" => call!(c, run_task, RunTaskRequest, api, req, endpoint),
        "stop-task" => call!(c, stop_task, StopTaskRequest, api, req, endpoint),
        "list-tasks" => call!(c, list_tasks, ListTasksRequest, api, req, endpoint),
        "describe-tasks" => call!(c, describe_tasks, DescribeTasksRequest, api, req, endpoint),
        "list-container-instances" => call!(
            c,
            list_container_instances,
            ListContainerInstancesRequest,
            api,
            req,
            endpoint
        ),
        "describe-container-instances" => call!(
            c,
            describe_container_instances,
            DescribeContainerInstancesRequest,
            api,
            req,
            endpoint
        ),
        other => return Err(CliError::Usage(format!("unknown operation {other}"))),
    })
}

/// Runs the CLI with `args`; returns what to print on stdout.
pub async fn run(args: Vec<String>) -> Result<String, CliError> {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => return Ok(e.render().to_string()),
        Err(e) => return Err(CliError::Usage(e.render().to_string())),
    };
    let format: output::Format = matches
        .get_one::<String>("output")
        .map(|s| s.parse())
        .transpose()
        .map_err(CliError::Usage)?
        .unwrap_or(output::Format::Json);
    let endpoint = matches
        .get_one::<String>("endpoint-url")
        .cloned()
        .or_else(|| std::env::var("BERTH_ENDPOINT").ok())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    // Every argument is checked before anything is sent (a bad query must not run a task).
    let query = matches
        .get_one::<String>("query")
        .map(|q| output::compile_query(q))
        .transpose()
        .map_err(CliError::Usage)?;
    let Some(("ecs", ecs)) = matches.subcommand() else {
        return Err(CliError::Usage(
            "usage: berth ecs OPERATION [--flags]".into(),
        ));
    };
    let Some((name, m)) = ecs.subcommand() else {
        return Err(CliError::Usage(
            "usage: berth ecs OPERATION [--flags]".into(),
        ));
    };
    let op = OPERATIONS
        .iter()
        .find(|o| o.name == name)
        .ok_or_else(|| CliError::Usage(format!("unknown operation {name}")))?;
    let req = request_json(op, m)?;
    let mut resp = invoke(op, req, &endpoint).await?;
    if let Some(q) = &query {
        resp = output::apply_query(&resp, q).map_err(CliError::Usage)?;
    }
    Ok(output::render(&resp, format, op.api))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(args: &[&str]) -> Value {
        let m = command().try_get_matches_from(args).unwrap();
        let (_, ecs) = m.subcommand().unwrap();
        let (name, sub) = ecs.subcommand().unwrap();
        let op = OPERATIONS.iter().find(|o| o.name == name).unwrap();
        request_json(op, sub).unwrap()
    }

    #[test]
    fn guide_commands_build_ecs_requests() {
        assert_eq!(
            req(&[
                "berth",
                "ecs",
                "create-cluster",
                "--cluster-name",
                "production-cluster",
                "--tags",
                "key=Environment,value=Production",
                "key=Team,value=DevOps",
                "--region",
                "us-east-1"
            ]),
            json!({"clusterName": "production-cluster", "tags": [
                {"key": "Environment", "value": "Production"}, {"key": "Team", "value": "DevOps"}]})
        );
        // A unique prefix of a flag, and a comma-separated list.
        assert_eq!(
            req(&[
                "berth",
                "ecs",
                "describe-clusters",
                "--cluster",
                "production-cluster",
                "--include",
                "STATISTICS,SETTINGS,CONFIGURATIONS"
            ]),
            json!({"clusters": ["production-cluster"], "include": ["STATISTICS", "SETTINGS", "CONFIGURATIONS"]})
        );
        let r = req(&[
            "berth",
            "ecs",
            "run-task",
            "--cluster",
            "c",
            "--task-definition",
            "batch-job:1",
            "--overrides",
            r#"{"containerOverrides":[{"name":"b","environment":[{"name":"BATCH_ID","value":"2025-10-28"}]}]}"#,
        ]);
        let decoded: berth_proto::v1::RunTaskRequest = serde_json::from_value(r).unwrap();
        assert_eq!(
            decoded.overrides.unwrap().container_overrides[0].environment[0].value,
            "2025-10-28"
        );
    }

    #[test]
    fn keys_in_another_letter_case_are_taken_as_the_known_key() {
        // The guide's run-task writes awsVpcConfiguration.
        let r = req(&[
            "berth",
            "ecs",
            "run-task",
            "--cluster",
            "production-cluster",
            "--task-definition",
            "batch-job:1",
            "--count",
            "1",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            "awsVpcConfiguration={subnets=[subnet-12345],securityGroups=[sg-12345678]}",
        ]);
        let decoded: berth_proto::v1::RunTaskRequest = decode("RunTask", r).unwrap();
        let vpc = decoded
            .network_configuration
            .unwrap()
            .awsvpc_configuration
            .unwrap();
        assert_eq!(vpc.subnets, ["subnet-12345"]);
        let bad = decode::<berth_proto::v1::RunTaskRequest>(
            "RunTask",
            serde_json::json!({"taskDefinitionz": "x"}),
        );
        assert!(bad.unwrap_err().to_string().contains("taskDefinitionz"));
    }

    #[test]
    fn the_guides_task_definition_decodes_verbatim() {
        let td = r#"{
          "family": "web-app", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
          "cpu": "512", "memory": "1024",
          "taskRoleArn": "arn:aws:iam::123456789012:role/ecsTaskRole",
          "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
          "containerDefinitions": [{
            "name": "nginx", "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
            "cpu": 256, "memory": 512, "essential": true,
            "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
            "environment": [{"name": "ENVIRONMENT", "value": "production"}, {"name": "LOG_LEVEL", "value": "info"}],
            "secrets": [{"name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password"}],
            "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web-app",
               "awslogs-region": "us-east-1", "awslogs-stream-prefix": "nginx"}},
            "healthCheck": {"command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
               "interval": 30, "timeout": 5, "retries": 3, "startPeriod": 60}
          }]
        }"#;
        let r: berth_proto::v1::RegisterTaskDefinitionRequest = serde_json::from_str(td).unwrap();
        assert_eq!(r.container_definitions[0].memory, Some(512));
        assert_eq!(r.cpu.as_deref(), Some("512"));
        let bad: Result<berth_proto::v1::RegisterTaskDefinitionRequest, _> =
            serde_json::from_str(r#"{"family": "x", "containerDefinitionz": []}"#);
        assert!(bad
            .unwrap_err()
            .to_string()
            .contains("containerDefinitionz"));
    }
}
