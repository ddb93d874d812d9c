//! Issue 13: the real aws CLI (version 1, from PyPI) and boto3 against a real controller, agent
//! and containerd, over the controller's AWS JSON 1.1 endpoint (its one port, https with its
//! CA, SigV4 with its admin key): the ECS guide's commands unchanged (clusters, task
//! definitions, EC2 and FARGATE tasks with security groups, container instances, EC2 and FARGATE
//! services and a revision rollout, log retention), the CLI's waiters, boto3's paginators,
//! waiters and modelled exceptions, CloudWatch Logs reads of a task's awslogs output, SSM
//! parameters and Secrets Manager, the refusals with AWS's names and shapes (IAM and EC2's query
//! protocol included), and AWS JSON over HTTP/2 as well as HTTP/1.1 (curl signing with SigV4).
//! The venv is made once and kept (berth_tests::aws). About a minute in all.

use berth_tests::aws::{self, Aws};
use berth_tests::{wait_for, Cluster, IMAGE};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// How long an `aws ecs wait …` may take: the CLI's waiters poll every 6 s (tasks) or 15 s
/// (services).
const WAIT: Duration = Duration::from_secs(240);
const T: Duration = Duration::from_secs(90);

/// Writes `v` to a file in the CLI's scratch directory; its `file://` URL.
fn input_file(a: &Aws, name: &str, v: &Value) -> String {
    let path = a.home().join(name);
    std::fs::write(&path, v.to_string()).expect("writing an input file");
    format!("file://{}", path.display())
}

fn s(v: &Value) -> String {
    v.as_str()
        .unwrap_or_else(|| panic!("not a string: {v}"))
        .to_string()
}

/// Strings of a JSON array, in order.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(s)
        .collect()
}

/// `aws ecs wait WHAT ARGS...`, asserting it succeeds; how long it took.
fn wait(a: &Aws, what: &str, args: &[&str]) -> Duration {
    let started = Instant::now();
    let mut all = vec!["ecs", "wait", what];
    all.extend_from_slice(args);
    let out = a.run_within(&all, WAIT);
    assert!(
        out.status.success(),
        "aws ecs wait {what} {args:?} ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    started.elapsed()
}

fn log_messages(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .map(|e| e.iter().map(|e| s(&e["message"])).collect())
        .unwrap_or_default()
}

#[test]
fn the_ecs_guides_commands_and_logs_work_unchanged_through_the_aws_cli() {
    if !aws::prerequisites() {
        return;
    }
    let started = Instant::now();
    let c = Cluster::start("aws-guide");
    let a = Aws::new(&c);
    let name = c.name.clone();
    let version = a.run(&["--version"]);
    let version = String::from_utf8_lossy(&version.stdout).to_string()
        + &String::from_utf8_lossy(&version.stderr);
    assert!(version.starts_with("aws-cli/1."), "{version}");

    // The guide's create-cluster with tags and settings: the same cluster berth sees.
    let created = a.json(&[
        "ecs",
        "create-cluster",
        "--cluster-name",
        "production-cluster",
        "--tags",
        "key=Environment,value=Production",
        "key=Team,value=DevOps",
        "--settings",
        "name=containerInsights,value=enabled",
        "--region",
        "us-east-1",
    ]);
    let cl = &created["cluster"];
    assert_eq!(cl["clusterName"], "production-cluster");
    assert_eq!(cl["status"], "ACTIVE");
    let prod_arn = s(&cl["clusterArn"]);
    assert!(
        prod_arn.starts_with("arn:aws:ecs:") && prod_arn.ends_with(":cluster/production-cluster"),
        "{prod_arn}"
    );
    let by_berth = c.json(&["describe-clusters", "--clusters", "production-cluster"]);
    assert_eq!(by_berth["clusters"][0]["clusterArn"], prod_arn.as_str());
    let mut listed = strings(&a.json(&["ecs", "list-clusters"])["clusterArns"]);
    listed.sort();
    let mut want = strings(&c.json(&["list-clusters"])["clusterArns"]);
    want.sort();
    assert_eq!(listed, want);
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(listed.contains(&prod_arn));

    // The guide's line exactly: `--cluster` (argparse takes it for --clusters) and the
    // comma-joined `--include STATISTICS,SETTINGS,CONFIGURATIONS`, which the v1 CLI sends as one
    // value (the controller splits it).
    let d = a.json(&[
        "ecs",
        "describe-clusters",
        "--cluster",
        "production-cluster",
        "--include",
        "STATISTICS,SETTINGS,CONFIGURATIONS",
    ]);
    let cl = &d["clusters"][0];
    assert!(
        cl["statistics"].as_array().is_some_and(|s| !s.is_empty()),
        "{d}"
    );
    assert_eq!(cl["clusterArn"], prod_arn.as_str());
    assert_eq!(
        cl["settings"],
        json!([{"name": "containerInsights", "value": "enabled"}])
    );
    assert_eq!(cl["registeredContainerInstancesCount"], 0);
    assert_eq!(d["failures"], json!([]));
    // STATISTICS,SETTINGS,CONFIGURATIONS names no TAGS: none come back. TAGS beside the guide's
    // value, as a second one, brings them.
    let tags = &cl["tags"];
    assert!(tags.is_null() || *tags == json!([]), "{d}");
    let d = a.json(&[
        "ecs",
        "describe-clusters",
        "--cluster",
        "production-cluster",
        "--include",
        "STATISTICS,SETTINGS,CONFIGURATIONS",
        "TAGS",
    ]);
    let cl = &d["clusters"][0];
    assert!(
        cl["statistics"].as_array().is_some_and(|s| !s.is_empty()),
        "{d}"
    );
    let mut tags = cl["tags"].as_array().cloned().unwrap_or_default();
    tags.sort_by_key(|t| t["key"].to_string());
    assert_eq!(
        Value::Array(tags),
        json!([{"key": "Environment", "value": "Production"}, {"key": "Team", "value": "DevOps"}])
    );
    // Without --include, no tags (ECS sends an empty list, as Berth does).
    let plain = a.json(&[
        "ecs",
        "describe-clusters",
        "--clusters",
        "production-cluster",
    ]);
    let tags = &plain["clusters"][0]["tags"];
    assert!(tags.is_null() || *tags == json!([]), "{plain}");
    let deleted = a.json(&["ecs", "delete-cluster", "--cluster", "production-cluster"]);
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");
    assert_eq!(deleted["cluster"]["clusterArn"], prod_arn.as_str());

    // register-task-definition --cli-input-json file://…, twice: revisions 1 and 2.
    let td = |greeting: &str| {
        json!({
            "family": "aws-web",
            "networkMode": "none",
            "cpu": "256",
            "memory": "128",
            "containerDefinitions": [{
                "name": "app",
                "image": IMAGE,
                "memory": 64,
                "essential": true,
                "stopTimeout": 2,
                "command": ["sh", "-c", "echo hello-from-$GREETING; echo to-stderr >&2; exec sleep 600"],
                "environment": [{"name": "GREETING", "value": greeting}],
                "logConfiguration": {"logDriver": "awslogs", "options": {
                    "awslogs-group": "/ecs/aws-cli", "awslogs-region": "us-east-1",
                    "awslogs-stream-prefix": "web"}}
            }]
        })
    };
    let r1 = a.json(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(&a, "td1.json", &td("first")),
    ]);
    let r1 = &r1["taskDefinition"];
    assert_eq!(r1["family"], "aws-web");
    assert_eq!(r1["revision"], 1);
    assert_eq!(r1["status"], "ACTIVE");
    let td1_arn = s(&r1["taskDefinitionArn"]);
    assert!(td1_arn.ends_with(":task-definition/aws-web:1"), "{td1_arn}");
    let r2 = a.json(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(&a, "td2.json", &td("default")),
    ]);
    let td2_arn = s(&r2["taskDefinition"]["taskDefinitionArn"]);
    assert_eq!(r2["taskDefinition"]["revision"], 2);
    let tds = a.json(&["ecs", "list-task-definitions", "--family-prefix", "aws-web"]);
    assert_eq!(
        strings(&tds["taskDefinitionArns"]),
        [td1_arn.as_str(), td2_arn.as_str()]
    );
    let families = a.json(&["ecs", "list-task-definition-families"]);
    assert_eq!(strings(&families["families"]), ["aws-web"]);
    let described = a.json(&[
        "ecs",
        "describe-task-definition",
        "--task-definition",
        "aws-web:1",
    ]);
    let described = &described["taskDefinition"];
    assert_eq!(described["taskDefinitionArn"], td1_arn.as_str());
    assert_eq!(described["cpu"], "256");
    let cd = &described["containerDefinitions"][0];
    assert_eq!(cd["image"], IMAGE);
    assert_eq!(
        cd["environment"],
        json!([{"name": "GREETING", "value": "first"}])
    );
    assert_eq!(
        cd["logConfiguration"]["options"]["awslogs-stream-prefix"],
        "web"
    );
    // registeredAt is epoch seconds on the wire, which the v1 CLI prints as it came (its
    // cli_timestamp_format defaults to `none`): a number, within a minute of now.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs_f64();
    let registered = described["registeredAt"].as_f64();
    assert!(
        registered.is_some_and(|t| (now - t).abs() < 60.0),
        "registeredAt {} at {now}",
        described["registeredAt"]
    );

    // The awslogs group the task writes to, made with `aws logs`.
    a.ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        "/ecs/aws-cli",
    ]);
    let groups = a.json(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/ecs/aws-",
    ]);
    assert_eq!(groups["logGroups"][0]["logGroupName"], "/ecs/aws-cli");
    assert_eq!(groups["logGroups"].as_array().map(Vec::len), Some(1));

    // run-task with --overrides (the container's environment) on the EC2 instance …
    let overrides = json!({"containerOverrides": [
        {"name": "app", "environment": [{"name": "GREETING", "value": "override"}]}
    ]});
    let run = a.json(&[
        "ecs",
        "run-task",
        "--cluster",
        &name,
        "--task-definition",
        "aws-web",
        "--overrides",
        &overrides.to_string(),
        "--started-by",
        "aws-cli-test",
    ]);
    assert_eq!(run["failures"], json!([]));
    let t = &run["tasks"][0];
    let ec2_task = s(&t["taskArn"]);
    assert_eq!(
        t["taskDefinitionArn"],
        td2_arn.as_str(),
        "the latest revision"
    );
    assert_eq!(t["launchType"], "EC2");
    assert_eq!(t["startedBy"], "aws-cli-test");
    assert_eq!(t["desiredStatus"], "RUNNING");
    assert_eq!(
        t["overrides"]["containerOverrides"][0]["environment"][0]["value"],
        "override"
    );
    assert!(
        t["clusterArn"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!(":cluster/{name}"))),
        "{t}"
    );

    let fargate_td = json!({
        "family": "aws-fargate",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{"name": "app", "image": IMAGE, "essential": true,
            "stopTimeout": 2, "command": ["sleep", "600"]}]
    });
    a.ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(&a, "fargate.json", &fargate_td),
    ]);
    // … and the guide's FARGATE line. As the guide writes it (`awsVpcConfiguration`), the CLI
    // itself refuses it before any request: the model's member is `awsvpcConfiguration`.
    a.fails(
        &[
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
        ],
        255,
        "Unknown parameter in networkConfiguration: \"awsVpcConfiguration\", must be one of: awsvpcConfiguration",
    );
    // Spelt as the model has it, with this agent's subnet and a security group made with
    // `berth ec2` in place of the guide's ids.
    let sg = s(&c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "batch",
            "--description",
            "batch jobs",
            "--vpc-id",
            &name,
        ],
    )["GroupId"]);
    assert!(sg.starts_with("sg-"), "{sg}");
    // The guide's own group is not this cluster's: refused by name, so the group is looked at.
    a.fails(
        &[
            "ecs",
            "run-task",
            "--cluster",
            &name,
            "--task-definition",
            "aws-fargate:1",
            "--launch-type",
            "FARGATE",
            "--network-configuration",
            &format!(
                "awsvpcConfiguration={{subnets=[{}],securityGroups=[sg-12345678]}}",
                c.net.subnet
            ),
        ],
        255,
        "An error occurred (InvalidParameterException) when calling the RunTask operation: Error retrieving security group information for [sg-12345678]",
    );
    let run = a.json(&[
        "ecs",
        "run-task",
        "--cluster",
        &name,
        "--task-definition",
        "aws-fargate:1",
        "--count",
        "1",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &format!(
            "awsvpcConfiguration={{subnets=[{}],securityGroups=[{sg}]}}",
            c.net.subnet
        ),
    ]);
    assert_eq!(run["failures"], json!([]));
    let t = &run["tasks"][0];
    let fargate_task = s(&t["taskArn"]);
    assert_eq!(t["launchType"], "FARGATE");
    assert_eq!(t["attachments"][0]["type"], "ElasticNetworkInterface");
    let subnet_id = t["attachments"][0]["details"]
        .as_array()
        .and_then(|d| d.iter().find(|d| d["name"] == "subnetId"))
        .map(|d| d["value"].clone());
    assert_eq!(subnet_id, Some(json!(c.net.subnet)), "{t}");

    // aws ecs wait tasks-running on both.
    let took = wait(
        &a,
        "tasks-running",
        &["--cluster", &name, "--tasks", &ec2_task, &fargate_task],
    );
    println!("aws ecs wait tasks-running: {took:?}");
    // describe-tasks with --query, as text and as JSON.
    let text = a.ok(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        &name,
        "--tasks",
        &ec2_task,
        &fargate_task,
        "--query",
        "tasks[].[lastStatus,launchType]",
        "--output",
        "text",
    ]);
    let mut rows: Vec<&str> = text.lines().collect();
    rows.sort();
    assert_eq!(rows, ["RUNNING\tEC2", "RUNNING\tFARGATE"], "{text}");
    let eni = a.json(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        &name,
        "--tasks",
        &fargate_task,
        "--query",
        "tasks[0].attachments[0].details[?name=='privateIPv4Address'].value | [0]",
    ]);
    let eni = s(&eni);
    let (net, bits) = c.net.vpc_cidr.split_once('/').expect("a CIDR");
    let prefix: Vec<&str> = net.split('.').take(3).collect();
    assert_eq!(bits, "24");
    assert!(
        eni.starts_with(&format!("{}.", prefix.join("."))),
        "{eni} in {}",
        c.net.vpc_cidr
    );
    let containers = a.json(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        &name,
        "--tasks",
        &ec2_task,
        "--query",
        "tasks[0].containers[0]",
    ]);
    assert_eq!(containers["name"], "app");
    assert_eq!(containers["lastStatus"], "RUNNING");
    assert_eq!(containers["image"], IMAGE);

    // list-container-instances / describe-container-instances: the one agent, as berth sees it.
    let cis = a.json(&["ecs", "list-container-instances", "--cluster", &name]);
    let ci_arns = strings(&cis["containerInstanceArns"]);
    assert_eq!(
        ci_arns,
        strings(
            &c.json(&["list-container-instances", "--cluster", &name])["containerInstanceArns"]
        )
    );
    assert_eq!(ci_arns.len(), 1);
    let ci = a.json(&[
        "ecs",
        "describe-container-instances",
        "--cluster",
        &name,
        "--container-instances",
        &ci_arns[0],
    ]);
    let ci = &ci["containerInstances"][0];
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["status"], "ACTIVE");
    assert_eq!(ci["runningTasksCount"], 2);
    let listed = a.json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        &name,
        "--started-by",
        "aws-cli-test",
    ]);
    assert_eq!(strings(&listed["taskArns"]), [ec2_task.as_str()]);

    // The task's awslogs output, read with `aws logs`: the override reached the container.
    let task_id = ec2_task.rsplit('/').next().unwrap_or_default().to_string();
    let stream = format!("web/app/{task_id}");
    let events = wait_for("both lines in the task's stream", T, || {
        let page = a.json(&[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/ecs/aws-cli",
            "--log-stream-name",
            &stream,
            "--start-from-head",
        ]);
        let m = log_messages(&page);
        (m.len() >= 2).then_some(page)
    });
    let mut messages = log_messages(&events);
    messages.sort();
    assert_eq!(messages, ["hello-from-override", "to-stderr"]);
    assert!(events["events"][0]["timestamp"]
        .as_i64()
        .is_some_and(|t| t > 1_600_000_000_000));
    assert!(s(&events["nextForwardToken"]).starts_with("f/"), "{events}");
    let streams = a.json(&[
        "logs",
        "describe-log-streams",
        "--log-group-name",
        "/ecs/aws-cli",
        "--order-by",
        "LastEventTime",
        "--descending",
    ]);
    assert_eq!(streams["logStreams"][0]["logStreamName"], stream.as_str());
    let filtered = a.json(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        "/ecs/aws-cli",
        "--log-stream-names",
        &stream,
        "--filter-pattern",
        "hello",
    ]);
    assert_eq!(log_messages(&filtered), ["hello-from-override"]);
    assert_eq!(filtered["events"][0]["logStreamName"], stream.as_str());
    let none = a.json(&[
        "logs",
        "filter-log-events",
        "--log-group-name",
        "/ecs/aws-cli",
        "--filter-pattern",
        "no-such-words",
    ]);
    assert_eq!(log_messages(&none), Vec::<String>::new());
    // The v1 CLI has no `logs tail` (it came with v2): the CLI refuses it before any request.
    a.fails(
        &["logs", "tail", "/ecs/aws-cli", "--follow"],
        2,
        "Invalid choice",
    );

    // stop-task, then aws ecs wait tasks-stopped.
    let stopped = a.json(&[
        "ecs",
        "stop-task",
        "--cluster",
        &name,
        "--task",
        &ec2_task,
        "--reason",
        "Scaling down",
    ]);
    assert_eq!(stopped["task"]["taskArn"], ec2_task.as_str());
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    a.ok(&[
        "ecs",
        "stop-task",
        "--cluster",
        &name,
        "--task",
        &fargate_task,
    ]);
    let took = wait(
        &a,
        "tasks-stopped",
        &["--cluster", &name, "--tasks", &ec2_task, &fargate_task],
    );
    println!("aws ecs wait tasks-stopped: {took:?}");
    // The waiter reads the real state: tasks-running on a STOPPED task is its failure.
    let out = a.run_within(
        &[
            "ecs",
            "wait",
            "tasks-running",
            "--cluster",
            &name,
            "--tasks",
            &ec2_task,
        ],
        WAIT,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(
        err.contains("Waiter TasksRunning failed: Waiter encountered a terminal failure state"),
        "{err}"
    );
    let d = a.json(&[
        "ecs",
        "describe-tasks",
        "--cluster",
        &name,
        "--tasks",
        &ec2_task,
    ]);
    let t = &d["tasks"][0];
    assert_eq!(t["lastStatus"], "STOPPED");
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["stoppedReason"], "Scaling down");
    assert_eq!(
        t["containers"][0]["exitCode"], 137,
        "SIGKILL after stopTimeout"
    );
    let stopped_list = a.json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        &name,
        "--desired-status",
        "STOPPED",
    ]);
    let mut got = strings(&stopped_list["taskArns"]);
    got.sort();
    let mut want = vec![ec2_task.clone(), fargate_task.clone()];
    want.sort();
    assert_eq!(got, want);
    println!("the guide through aws: {:?}", started.elapsed());
}

/// What the boto3 script does: the ECS paginators over 105 revisions, the tasks_running and
/// tasks_stopped waiters, and modelled exceptions for a missing cluster. It prints what it saw
/// as JSON; the test checks the values.
const BOTO3_SCRIPT: &str = r#"
import json, os, sys
import boto3
from botocore.exceptions import ClientError

cluster, image, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
ecs = boto3.client("ecs", endpoint_url=os.environ["BERTH_ENDPOINT_URL"])
out = {}
for i in range(n):
    ecs.register_task_definition(
        family="boto-page",
        networkMode="none",
        containerDefinitions=[{"name": "app", "image": image, "memory": 16,
                               "command": ["sleep", str(600 + i)], "stopTimeout": 2}],
    )
pages = ecs.get_paginator("list_task_definitions").paginate(familyPrefix="boto-page")
out["default_pages"] = [len(p["taskDefinitionArns"]) for p in pages]
pages = ecs.get_paginator("list_task_definitions").paginate(
    familyPrefix="boto-page", PaginationConfig={"PageSize": 40})
arns = []
sizes = []
for p in pages:
    sizes.append(len(p["taskDefinitionArns"]))
    arns.extend(p["taskDefinitionArns"])
out["pages_of_40"] = sizes
out["revisions"] = [int(a.rsplit(":", 1)[1]) for a in arns]
out["families"] = [f for p in ecs.get_paginator("list_task_definition_families").paginate()
                   for f in p["families"]]

task = ecs.run_task(cluster=cluster, taskDefinition="boto-page:105")["tasks"][0]["taskArn"]
out["task"] = task
ecs.get_waiter("tasks_running").wait(cluster=cluster, tasks=[task],
                                     WaiterConfig={"Delay": 1, "MaxAttempts": 90})
d = ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"][0]
out["running"] = d["lastStatus"]
out["created_at_type"] = type(d["createdAt"]).__name__
out["listed"] = [a for p in ecs.get_paginator("list_tasks").paginate(cluster=cluster)
                 for a in p["taskArns"]]
ecs.stop_task(cluster=cluster, task=task, reason="boto3 done")
ecs.get_waiter("tasks_stopped").wait(cluster=cluster, tasks=[task],
                                     WaiterConfig={"Delay": 1, "MaxAttempts": 90})
d = ecs.describe_tasks(cluster=cluster, tasks=[task])["tasks"][0]
out["stopped"] = [d["lastStatus"], d["stoppedReason"]]

try:
    ecs.list_tasks(cluster="no-such-cluster")
    out["missing"] = "no exception"
except ecs.exceptions.ClusterNotFoundException as e:
    out["missing"] = [e.response["Error"]["Code"], e.operation_name,
                      e.response["ResponseMetadata"]["HTTPStatusCode"],
                      bool(e.response["ResponseMetadata"].get("RequestId"))]
try:
    ecs.describe_tasks(cluster="no-such-cluster", tasks=["x"])
    out["missing_describe"] = "no exception"
except ClientError as e:
    out["missing_describe"] = [type(e).__name__, e.response["Error"]["Code"]]
print(json.dumps(out))
"#;

#[test]
fn services_via_the_cli_and_a_boto3_script_with_paginators_waiters_and_exceptions() {
    if !aws::prerequisites() {
        return;
    }
    let started = Instant::now();
    let c = Cluster::start("aws-svc");
    let a = Aws::new(&c);
    let name = c.name.clone();

    // boto3: 105 revisions registered, listed in pages, a task waited for, a missing cluster.
    let out = a.python(
        BOTO3_SCRIPT,
        &[&name, IMAGE, "105"],
        Duration::from_secs(300),
    );
    assert!(
        out.status.success(),
        "boto3 script ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    assert_eq!(
        v["default_pages"],
        json!([100, 5]),
        "ECS's default page of 100"
    );
    assert_eq!(v["pages_of_40"], json!([40, 40, 25]));
    assert_eq!(v["revisions"], json!((1..=105).collect::<Vec<u32>>()));
    assert_eq!(v["families"], json!(["boto-page"]));
    assert_eq!(v["running"], "RUNNING");
    assert_eq!(
        v["created_at_type"], "datetime",
        "epoch seconds parsed by boto3"
    );
    assert_eq!(v["listed"], json!([v["task"].clone()]));
    assert_eq!(v["stopped"], json!(["STOPPED", "boto3 done"]));
    assert_eq!(
        v["missing"],
        json!(["ClusterNotFoundException", "ListTasks", 400, true])
    );
    assert_eq!(
        v["missing_describe"],
        json!(["ClusterNotFoundException", "ClusterNotFoundException"])
    );
    println!("boto3 script: {:?}", started.elapsed());

    // Services through the CLI: create, wait stable, scale, wait stable, delete.
    let svc_td = json!({"family": "aws-svc", "networkMode": "none", "containerDefinitions": [
        {"name": "app", "image": IMAGE, "memory": 16, "stopTimeout": 2, "command": ["sleep", "3600"]}]});
    a.ok(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(&a, "svc.json", &svc_td),
    ]);
    let created = a.json(&[
        "ecs",
        "create-service",
        "--cluster",
        &name,
        "--service-name",
        "web",
        "--task-definition",
        "aws-svc:1",
        "--desired-count",
        "1",
        "--deployment-configuration",
        "maximumPercent=200,minimumHealthyPercent=50",
    ]);
    let svc = &created["service"];
    assert_eq!(svc["serviceName"], "web");
    assert_eq!(svc["status"], "ACTIVE");
    assert_eq!(svc["desiredCount"], 1);
    assert_eq!(svc["deploymentConfiguration"]["minimumHealthyPercent"], 50);
    assert_eq!(svc["deployments"][0]["status"], "PRIMARY");
    let svc_arn = s(&svc["serviceArn"]);
    assert!(
        svc_arn.ends_with(&format!(":service/{name}/web")),
        "{svc_arn}"
    );
    let took = wait(
        &a,
        "services-stable",
        &["--cluster", &name, "--services", "web"],
    );
    println!("aws ecs wait services-stable (1 task): {took:?}");
    let d = a.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        &name,
        "--services",
        "web",
    ]);
    let svc = &d["services"][0];
    assert_eq!(svc["serviceArn"], svc_arn.as_str());
    assert_eq!(svc["runningCount"], 1);
    assert_eq!(svc["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(
        strings(&a.json(&["ecs", "list-services", "--cluster", &name])["serviceArns"]),
        [svc_arn.as_str()]
    );

    let updated = a.json(&[
        "ecs",
        "update-service",
        "--cluster",
        &name,
        "--service",
        "web",
        "--desired-count",
        "2",
    ]);
    assert_eq!(updated["service"]["desiredCount"], 2);
    wait(
        &a,
        "services-stable",
        &["--cluster", &name, "--services", "web"],
    );
    let d = a.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        &name,
        "--services",
        "web",
        "--query",
        "services[0].[runningCount,desiredCount,pendingCount]",
    ]);
    assert_eq!(d, json!([2, 2, 0]));
    let tasks = a.json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        &name,
        "--service-name",
        "web",
    ]);
    assert_eq!(
        tasks["taskArns"].as_array().map(Vec::len),
        Some(2),
        "{tasks}"
    );

    // Deleting a service with tasks needs --force (InvalidParameterException otherwise).
    let err = a.fails(
        &[
            "ecs",
            "delete-service",
            "--cluster",
            &name,
            "--service",
            "web",
        ],
        255,
        "An error occurred (InvalidParameterException) when calling the DeleteService operation:",
    );
    assert!(err.contains("--force") || err.contains("force"), "{err}");
    let deleted = a.json(&[
        "ecs",
        "delete-service",
        "--cluster",
        &name,
        "--service",
        "web",
        "--force",
    ]);
    assert_eq!(deleted["service"]["status"], "DRAINING");
    wait(
        &a,
        "services-inactive",
        &["--cluster", &name, "--services", "web"],
    );
    let d = a.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        &name,
        "--services",
        "web",
    ]);
    assert_eq!(d["services"][0]["status"], "INACTIVE");
    println!("EC2 service through aws: {:?}", started.elapsed());

    // The guide's FARGATE service, its log group and a revision rollout.
    web_app_service(&c, &a);
    println!("services and boto3 through aws: {:?}", started.elapsed());
}

/// The guide's web-app task definition (revision `revision`), FARGATE in awsvpc, logging to
/// its /ecs/web-app group; the image and command are this host's (the guide's image is not here).
fn web_app_td(revision: u32) -> Value {
    json!({
        "family": "web-app",
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": "256",
        "memory": "512",
        "containerDefinitions": [{
            "name": "nginx",
            "image": IMAGE,
            "essential": true,
            "stopTimeout": 2,
            "command": ["sh", "-c", "echo web-app revision $REVISION; exec sleep 3600"],
            "environment": [
                {"name": "ENVIRONMENT", "value": "production"},
                {"name": "REVISION", "value": revision.to_string()}
            ],
            "logConfiguration": {"logDriver": "awslogs", "options": {
                "awslogs-group": "/ecs/web-app", "awslogs-region": "us-east-1",
                "awslogs-stream-prefix": "nginx"}}
        }]
    })
}

/// The web-app service's running tasks (desiredStatus RUNNING), described.
fn service_tasks(a: &Aws, cluster: &str, service: &str) -> Vec<Value> {
    let listed = a.json(&[
        "ecs",
        "list-tasks",
        "--cluster",
        cluster,
        "--service-name",
        service,
    ]);
    let arns = strings(&listed["taskArns"]);
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["ecs", "describe-tasks", "--cluster", cluster, "--tasks"];
    args.extend(arns.iter().map(String::as_str));
    a.json(&args)["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The guide's "Create Log Group First" (with its 7-day retention), its FARGATE create-service
/// with `--network-configuration "awsvpcConfiguration={…}"` as it writes it (over several lines),
/// this agent's subnet and a group made with `berth ec2` in place of the guide's ids, then its
/// update-service to `web-app:2` and `aws ecs wait services-stable`.
fn web_app_service(c: &Cluster, a: &Aws) {
    let name = c.name.as_str();
    a.ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        "/ecs/web-app",
    ]);
    a.ok(&[
        "logs",
        "put-retention-policy",
        "--log-group-name",
        "/ecs/web-app",
        "--retention-in-days",
        "7",
    ]);
    let groups = a.json(&[
        "logs",
        "describe-log-groups",
        "--log-group-name-prefix",
        "/ecs/web-app",
    ]);
    assert_eq!(groups["logGroups"][0]["logGroupName"], "/ecs/web-app");
    assert_eq!(groups["logGroups"][0]["retentionInDays"], 7, "{groups}");

    let sg = s(&c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "web-app",
            "--description",
            "web-app tasks",
            "--vpc-id",
            name,
        ],
    )["GroupId"]);
    let r1 = a.json(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(a, "web-app-1.json", &web_app_td(1)),
    ]);
    assert_eq!(r1["taskDefinition"]["revision"], 1);
    let network = format!(
        "awsvpcConfiguration={{\n    subnets=[{}],\n    securityGroups=[{sg}],\n    assignPublicIp=DISABLED\n  }}",
        c.net.subnet
    );
    let created = a.json(&[
        "ecs",
        "create-service",
        "--cluster",
        name,
        "--service-name",
        "web-app-service",
        "--task-definition",
        "web-app:1",
        "--desired-count",
        "3",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        &network,
    ]);
    let svc = &created["service"];
    assert_eq!(svc["launchType"], "FARGATE");
    assert_eq!(svc["desiredCount"], 3);
    assert_eq!(
        svc["networkConfiguration"],
        json!({"awsvpcConfiguration": {"subnets": [c.net.subnet], "securityGroups": [sg],
            "assignPublicIp": "DISABLED"}})
    );
    assert!(
        s(&svc["taskDefinition"]).ends_with(":task-definition/web-app:1"),
        "{svc}"
    );
    // Three tasks of revision 1 running (polled here: the CLI's waiter sleeps 15 s a round).
    let first = wait_for("web-app-service's 3 tasks of web-app:1", T, || {
        let tasks = service_tasks(a, name, "web-app-service");
        (tasks.len() == 3 && tasks.iter().all(|t| t["lastStatus"] == "RUNNING")).then_some(tasks)
    });
    for t in &first {
        assert!(
            s(&t["taskDefinitionArn"]).ends_with(":task-definition/web-app:1"),
            "{t}"
        );
        assert_eq!(t["launchType"], "FARGATE");
        assert_eq!(t["attachments"][0]["type"], "ElasticNetworkInterface");
    }

    // The guide's "Register updated task definition" and "Update service to use new revision".
    let r2 = a.json(&[
        "ecs",
        "register-task-definition",
        "--cli-input-json",
        &input_file(a, "web-app-2.json", &web_app_td(2)),
    ]);
    assert_eq!(r2["taskDefinition"]["revision"], 2);
    let updated = a.json(&[
        "ecs",
        "update-service",
        "--cluster",
        name,
        "--service",
        "web-app-service",
        "--task-definition",
        "web-app:2",
    ]);
    assert!(
        s(&updated["service"]["taskDefinition"]).ends_with(":task-definition/web-app:2"),
        "{updated}"
    );
    let took = wait(
        a,
        "services-stable",
        &["--cluster", name, "--services", "web-app-service"],
    );
    println!("aws ecs wait services-stable (web-app:1 to :2, 3 tasks): {took:?}");
    let d = a.json(&[
        "ecs",
        "describe-services",
        "--cluster",
        name,
        "--services",
        "web-app-service",
    ]);
    let svc = &d["services"][0];
    assert!(
        s(&svc["taskDefinition"]).ends_with(":task-definition/web-app:2"),
        "{svc}"
    );
    assert_eq!(svc["runningCount"], 3, "{svc}");
    assert_eq!(
        svc["deployments"].as_array().map(Vec::len),
        Some(1),
        "{svc}"
    );
    assert_eq!(svc["deployments"][0]["rolloutState"], "COMPLETED");
    assert_eq!(
        svc["deployments"][0]["taskDefinition"],
        svc["taskDefinition"]
    );
    let second = service_tasks(a, name, "web-app-service");
    assert_eq!(second.len(), 3, "{second:?}");
    for t in &second {
        assert!(
            s(&t["taskDefinitionArn"]).ends_with(":task-definition/web-app:2"),
            "{t}"
        );
        assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    }

    // Deleted with its tasks, every one of both revisions waited for STOPPED.
    let deleted = a.json(&[
        "ecs",
        "delete-service",
        "--cluster",
        name,
        "--service",
        "web-app-service",
        "--force",
    ]);
    assert_eq!(deleted["service"]["status"], "DRAINING");
    let mut args = vec!["--cluster", name, "--tasks"];
    args.extend(
        first
            .iter()
            .chain(&second)
            .map(|t| t["taskArn"].as_str().unwrap_or_default()),
    );
    wait(a, "tasks-stopped", &args);
}

/// A credentials file with `[default]` holding this key.
fn credentials_file(c: &Cluster, name: &str, id: &str, secret: &str) -> std::path::PathBuf {
    let path = c.dir.join(name);
    std::fs::write(
        &path,
        format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n"),
    )
    .expect("writing a credentials file");
    path
}

/// Refusals with AWS's names and the v1 CLI's exit status (255 for any error the service
/// returns), on a controller alone (no containerd, no agent, no root): a missing cluster, an
/// unsigned call, a wrong secret, an unknown key, a missing log group; any region signs.
#[test]
fn errors_come_back_with_awss_names_any_region_signs_and_ssm_and_secrets_answer() {
    if aws::venv().is_none() {
        return;
    }
    let c = Cluster::controller_only("aws-errors");
    let a = Aws::new(&c);
    let name = c.name.clone();

    a.fails(
        &["ecs", "list-tasks", "--cluster", "no-such-cluster"],
        255,
        "An error occurred (ClusterNotFoundException) when calling the ListTasks operation: ",
    );
    a.fails(
        &[
            "ecs",
            "describe-tasks",
            "--cluster",
            "no-such-cluster",
            "--tasks",
            "0123456789abcdef0123456789abcdef",
        ],
        255,
        "An error occurred (ClusterNotFoundException) when calling the DescribeTasks operation: ",
    );
    // DescribeClusters names a missing cluster in failures (as ECS does), as berth shows it.
    let d = a.json(&["ecs", "describe-clusters", "--clusters", "no-such-cluster"]);
    assert_eq!(d["clusters"], json!([]));
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    let by_berth = c.json(&["describe-clusters", "--clusters", "no-such-cluster"]);
    assert_eq!(d["failures"], by_berth["failures"]);

    // The wire shape under the CLI's --debug: 400, the error type and a request id header.
    let out = a.run(&[
        "ecs",
        "list-tasks",
        "--cluster",
        "no-such-cluster",
        "--debug",
    ]);
    let debug = String::from_utf8_lossy(&out.stderr);
    assert!(
        debug.contains("\"POST / HTTP/1.1\" 400 "),
        "not a 400: {debug}"
    );
    assert!(
        debug.contains("'x-amzn-errortype': 'ClusterNotFoundException'"),
        "no x-amzn-ErrorType header: {debug}"
    );
    assert!(
        debug.contains("'x-amzn-requestid': '"),
        "no x-amzn-RequestId header: {debug}"
    );

    // Unsigned: auth is required.
    a.fails(
        &["ecs", "list-clusters", "--no-sign-request"],
        255,
        "An error occurred (MissingAuthenticationTokenException) when calling the ListClusters operation",
    );
    // The admin key's id with a wrong secret.
    let admin = berth_tests::read_credentials(&c.admin_credentials());
    let wrong = credentials_file(
        &c,
        "wrong.credentials",
        &admin.access_key_id,
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    a.clone().with_credentials(&wrong).fails(
        &["ecs", "list-clusters"],
        255,
        "An error occurred (InvalidSignatureException) when calling the ListClusters operation",
    );
    // A key the controller never made.
    let unknown = credentials_file(
        &c,
        "unknown.credentials",
        "AKIAIOSFODNN7EXAMPLE",
        "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    );
    a.clone().with_credentials(&unknown).fails(
        &["ecs", "list-clusters"],
        255,
        "An error occurred (UnrecognizedClientException) when calling the ListClusters operation",
    );
    // Nothing refused changed anything: one cluster, and creating one unsigned did not.
    a.fails(
        &[
            "ecs",
            "create-cluster",
            "--cluster-name",
            "sneaky",
            "--no-sign-request",
        ],
        255,
        "MissingAuthenticationTokenException",
    );

    // Any region signs: berth's default (on-prem) and another.
    for region in ["on-prem", "eu-west-3"] {
        let listed = a
            .clone()
            .with_region(region)
            .json(&["ecs", "list-clusters"]);
        let arns = strings(&listed["clusterArns"]);
        assert_eq!(arns.len(), 1, "{region}: {arns:?}");
        assert!(arns[0].ends_with(&format!(":cluster/{name}")), "{arns:?}");
    }

    // CloudWatch Logs' own names.
    a.fails(
        &[
            "logs",
            "get-log-events",
            "--log-group-name",
            "/no/such/group",
            "--log-stream-name",
            "x",
        ],
        255,
        "An error occurred (ResourceNotFoundException) when calling the GetLogEvents operation",
    );
    a.ok(&[
        "logs",
        "create-log-group",
        "--log-group-name",
        "/aws/errors",
    ]);
    a.fails(
        &["logs", "create-log-group", "--log-group-name", "/aws/errors"],
        255,
        "An error occurred (ResourceAlreadyExistsException) when calling the CreateLogGroup operation",
    );

    // IAM and EC2 speak AWS's query protocol (form-encoded, XML back), which Berth does not
    // serve (`berth iam` / `berth ec2` reach those services): a refusal the CLI can print.
    for (args, operation) in [
        (["iam", "list-access-keys"], "ListAccessKeys"),
        (
            ["ec2", "describe-security-groups"],
            "DescribeSecurityGroups",
        ),
    ] {
        a.fails(
            &args,
            255,
            &format!("An error occurred (UnknownOperationException) when calling the {operation} operation: Berth does not serve AWS's query protocol"),
        );
    }

    // SSM parameters and Secrets Manager through their own targets.
    let put = a.json(&[
        "ssm",
        "put-parameter",
        "--name",
        "/app/db-password",
        "--value",
        "s3cret",
        "--type",
        "SecureString",
    ]);
    assert_eq!(put["Version"], 1);
    let got = a.json(&[
        "ssm",
        "get-parameter",
        "--name",
        "/app/db-password",
        "--with-decryption",
    ]);
    let p = &got["Parameter"];
    assert_eq!(p["Value"], "s3cret");
    assert_eq!(p["Type"], "SecureString");
    assert!(
        s(&p["ARN"]).ends_with(":parameter/app/db-password"),
        "{got}"
    );
    assert!(
        p["LastModifiedDate"].as_f64().is_some(),
        "epoch seconds: {got}"
    );
    a.fails(
        &["ssm", "get-parameter", "--name", "/app/none"],
        255,
        "An error occurred (ParameterNotFound) when calling the GetParameter operation",
    );
    let secret = a.json(&[
        "secretsmanager",
        "create-secret",
        "--name",
        "db-pass",
        "--secret-string",
        "hunter2",
    ]);
    assert_eq!(secret["Name"], "db-pass");
    assert!(s(&secret["ARN"]).contains(":secret:db-pass-"), "{secret}");
    let v2 = a.json(&[
        "secretsmanager",
        "put-secret-value",
        "--secret-id",
        "db-pass",
        "--secret-string",
        "hunter3",
    ]);
    assert_eq!(v2["ARN"], secret["ARN"]);
    assert_eq!(v2["VersionStages"], json!(["AWSCURRENT"]));
    assert_ne!(v2["VersionId"], secret["VersionId"]);
    a.fails(
        &[
            "secretsmanager",
            "create-secret",
            "--name",
            "db-pass",
            "--secret-string",
            "x",
        ],
        255,
        "An error occurred (ResourceExistsException) when calling the CreateSecret operation",
    );

    // Bodies no SDK sends (each SDK drops members its model lacks), signed by botocore itself:
    // a member the model does not know, an operation Berth lacks, a body that is not JSON.
    let cases = json!([
        [
            "AmazonEC2ContainerServiceV20141113.ListClusters",
            "{\"bogusMember\": 1}"
        ],
        ["AmazonEC2ContainerServiceV20141113.NoSuchOperation", "{}"],
        [
            "AmazonEC2ContainerServiceV20141113.ListClusters",
            "{not json"
        ],
        ["AmazonEC2ContainerServiceV20141113.ListClusters", ""],
    ]);
    let out = a.python(RAW_SCRIPT, &[&cases.to_string()], aws::CALL_TIMEOUT);
    assert!(
        out.status.success(),
        "raw requests: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("the script's JSON");
    let row = |i: usize| {
        (
            got[i]["status"].as_i64().unwrap_or_default(),
            got[i]["type"].as_str().unwrap_or_default().to_string(),
            got[i]["body"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        )
    };
    let (status, kind, message) = row(0);
    assert_eq!((status, kind.as_str()), (400, "SerializationException"));
    assert!(message.contains("bogusMember"), "{message}");
    assert_eq!(got[0]["body"]["__type"], "SerializationException");
    let (status, kind, message) = row(1);
    assert_eq!((status, kind.as_str()), (400, "UnknownOperationException"));
    assert!(message.contains("NoSuchOperation"), "{message}");
    let (status, kind, _) = row(2);
    assert_eq!((status, kind.as_str()), (400, "SerializationException"));
    // An empty body is an empty request (as AWS takes it).
    assert_eq!(got[3]["status"], 200);
    assert_eq!(
        got[3]["body"]["clusterArns"].as_array().map(Vec::len),
        Some(1)
    );
}

/// Sends each `[target, body]` of argv[1] (JSON) as an `ecs` request signed by botocore's
/// SigV4Auth with the configured key; prints status, x-amzn-ErrorType and body of each.
const RAW_SCRIPT: &str = r#"
import json, os, sys
import botocore.session
from botocore.awsrequest import AWSRequest
from botocore.auth import SigV4Auth
from botocore.httpsession import URLLib3Session

creds = botocore.session.get_session().get_credentials()
http = URLLib3Session(verify=os.environ.get("AWS_CA_BUNDLE", True), timeout=30)
out = []
for target, body in json.loads(sys.argv[1]):
    req = AWSRequest(method="POST", url=os.environ["BERTH_ENDPOINT_URL"] + "/", data=body,
                     headers={"Content-Type": "application/x-amz-json-1.1",
                              "X-Amz-Target": target})
    SigV4Auth(creds, "ecs", os.environ["AWS_DEFAULT_REGION"]).add_auth(req)
    resp = http.send(req.prepare())
    out.append({"status": resp.status_code, "type": resp.headers.get("x-amzn-ErrorType"),
                "body": json.loads(resp.content or b"null")})
print(json.dumps(out))
"#;

/// Where authentication is off (the single-host demo: loopback, `--auth off`), any signature or
/// none is taken: `aws --no-sign-request` and dummy credentials work.
#[test]
fn with_auth_off_unsigned_and_dummy_signed_calls_are_taken() {
    if aws::venv().is_none() {
        return;
    }
    let c = Cluster::controller_only_plain("aws-auth-off");
    let a = Aws::new(&c);
    let made = a.json(&[
        "--no-sign-request",
        "ecs",
        "create-cluster",
        "--cluster-name",
        "unsigned",
    ]);
    assert_eq!(made["cluster"]["clusterName"], "unsigned");
    let dummy = credentials_file(&c, "dummy", "AKIAIOSFODNN7EXAMPLE", "not-a-key-berth-knows");
    let a = a.with_credentials(&dummy);
    let listed = strings(&a.json(&["ecs", "list-clusters"])["clusterArns"]);
    assert!(
        listed.iter().any(|arn| arn.ends_with(":cluster/unsigned")),
        "{listed:?}"
    );
}

/// Whether curl can sign (--aws-sigv4, curl 7.75+) and speak HTTP/2; a skip without, a failure
/// under CI=true.
fn curl_with_sigv4_and_http2() -> bool {
    let out = berth_tests::registry::output_within(
        std::process::Command::new("curl").arg("--version"),
        Duration::from_secs(30),
    );
    let version = out
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let numbers: Vec<u32> = version
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    if numbers >= vec![7, 75] && version.contains("HTTP2") {
        return true;
    }
    let msg = format!("curl 7.75+ with HTTP2 missing: {version:?}");
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// What one curl call got: status code, HTTP version, the x-amzn-ErrorType header, the body.
struct CurlReply {
    status: u16,
    version: String,
    error_type: Option<String>,
    body: Value,
}

/// `curl` signed with SigV4 for service `ecs` (as `creds`), posting `body` to the endpoint with
/// `X-Amz-Target: AmazonEC2ContainerServiceV20141113.OPERATION`, over `protocol` (curl's flag).
fn curl_ecs(
    c: &Cluster,
    protocol: &str,
    creds: &berth_proto::sigv4::Credentials,
    operation: &str,
    body: &str,
) -> CurlReply {
    let headers = c.dir.join(format!(
        "curl-headers-{operation}-{}",
        protocol.trim_start_matches('-')
    ));
    let user = format!("{}:{}", creds.access_key_id, creds.secret_access_key);
    let target = format!("X-Amz-Target: AmazonEC2ContainerServiceV20141113.{operation}");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["--silent", "--show-error", "--max-time", "30", protocol]);
    if c.tls {
        cmd.arg("--cacert").arg(c.ca_file());
    }
    cmd.args(["--aws-sigv4", "aws:amz:us-east-1:ecs", "--user", &user])
        .args([
            "-H",
            &target,
            "-H",
            "Content-Type: application/x-amz-json-1.1",
        ])
        .args(["--data", body, "--dump-header"])
        .arg(&headers)
        .args(["-w", "\n%{http_code} %{http_version}"])
        .arg(format!("{}/", c.endpoint));
    let out = berth_tests::registry::output_within(&mut cmd, Duration::from_secs(40))
        .unwrap_or_else(|e| panic!("curl {protocol} {operation}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {protocol} {operation} ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, trailer) = stdout.rsplit_once('\n').unwrap_or_default();
    let (status, version) = trailer.split_once(' ').unwrap_or_default();
    let headers = std::fs::read_to_string(&headers).unwrap_or_default();
    let error_type = headers.lines().find_map(|l| {
        l.split_once(':')
            .filter(|(k, _)| k.eq_ignore_ascii_case("x-amzn-errortype"))
            .map(|(_, v)| v.trim().to_string())
    });
    CurlReply {
        status: status.parse().unwrap_or_default(),
        version: version.to_string(),
        error_type,
        body: serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("curl {protocol} {operation}: not JSON ({e}): {body}")),
    }
}

/// AWS JSON 1.1 over HTTP/2 as well as HTTP/1.1 (aws-sdk-go-v2 and others negotiate h2 over
/// TLS): curl signs with SigV4 as the SDKs do, on a controller alone (no root). With TLS off
/// (BERTH_TEST_TLS=off) HTTP/2 is spoken with prior knowledge (h2c).
#[test]
fn aws_json_answers_over_http2_and_http1_1_to_curl_signing_with_sigv4() {
    if !curl_with_sigv4_and_http2() {
        return;
    }
    let c = Cluster::controller_only("aws-h2");
    let creds = berth_tests::read_credentials(&c.admin_credentials());
    let h2 = if c.tls {
        "--http2"
    } else {
        "--http2-prior-knowledge"
    };
    for (protocol, version) in [(h2, "2"), ("--http1.1", "1.1")] {
        let r = curl_ecs(&c, protocol, &creds, "ListClusters", "{}");
        assert_eq!((r.status, r.version.as_str()), (200, version), "{protocol}");
        let arns = strings(&r.body["clusterArns"]);
        assert_eq!(arns.len(), 1, "{protocol}: {arns:?}");
        assert!(
            arns[0].ends_with(&format!(":cluster/{}", c.name)),
            "{arns:?}"
        );
        assert_eq!(r.error_type, None, "{protocol}");
        // An error the same way: 400, its type in the header and the body.
        let r = curl_ecs(
            &c,
            protocol,
            &creds,
            "ListTasks",
            r#"{"cluster": "no-such-cluster"}"#,
        );
        assert_eq!((r.status, r.version.as_str()), (400, version), "{protocol}");
        assert_eq!(r.error_type.as_deref(), Some("ClusterNotFoundException"));
        assert_eq!(r.body["__type"], "ClusterNotFoundException", "{protocol}");
        // A wrong secret is refused alike.
        let wrong = berth_proto::sigv4::Credentials {
            access_key_id: creds.access_key_id.clone(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
        };
        let r = curl_ecs(&c, protocol, &wrong, "ListClusters", "{}");
        assert_eq!((r.status, r.version.as_str()), (400, version), "{protocol}");
        assert_eq!(
            r.error_type.as_deref(),
            Some("InvalidSignatureException"),
            "{protocol}"
        );
    }
}
