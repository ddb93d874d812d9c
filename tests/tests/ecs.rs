//! The ECS guide's flow on real containerd + runc, through the `berth` binary.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

fn http_get(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

fn web_td(port: u16) -> String {
    format!(
        r#"{{
  "family": "web-app",
  "networkMode": "host",
  "cpu": "512",
  "memory": "1024",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "containerDefinitions": [
    {{
      "name": "nginx",
      "image": "{IMAGE}",
      "cpu": 256,
      "memory": 512,
      "memoryReservation": 256,
      "essential": true,
      "command": ["httpd", "-f", "-vv", "-p", "{port}", "-h", "/www"],
      "portMappings": [{{"containerPort": {port}, "protocol": "tcp"}}],
      "environment": [{{"name": "ENVIRONMENT", "value": "production"}}],
      "logConfiguration": {{"logDriver": "awslogs", "options": {{"awslogs-group": "/ecs/web-app", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "nginx"}}}}
    }}
  ]
}}"#
    )
}

fn read(path: std::path::PathBuf) -> String {
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[test]
fn guide_flow_end_to_end() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("flow");
    let name = c.name.clone();
    // Step 1 of the guide, with its shorthand flags; creating again returns the same cluster.
    let created = c.json(&[
        "create-cluster",
        "--cluster-name",
        "production-cluster",
        "--settings",
        "name=containerInsights,value=enabled",
        "--tags",
        "key=Environment,value=Production",
        "key=Team,value=DevOps",
        "--region",
        "us-east-1",
    ]);
    assert_eq!(created["cluster"]["status"], "ACTIVE");
    let arns = c.json(&["list-clusters"]);
    assert_eq!(arns["clusterArns"].as_array().unwrap().len(), 2);
    let d = c.json(&[
        "describe-clusters",
        "--cluster",
        "production-cluster",
        "--include",
        "STATISTICS,SETTINGS,CONFIGURATIONS,TAGS",
    ]);
    assert_eq!(d["clusters"][0]["settings"][0]["value"], "enabled");
    assert_eq!(d["clusters"][0]["tags"].as_array().unwrap().len(), 2);
    assert_eq!(d["failures"].as_array().unwrap().len(), 0);
    let deleted = c.json(&["delete-cluster", "--cluster", "production-cluster"]);
    assert_eq!(deleted["cluster"]["status"], "INACTIVE");

    // The guide's Fargate task definition registers verbatim.
    let guide = r#"{
      "family": "web-app", "networkMode": "awsvpc", "requiresCompatibilities": ["FARGATE"],
      "cpu": "256", "memory": "512",
      "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
      "containerDefinitions": [{"name": "nginx", "image": "nginx:alpine", "cpu": 256, "memory": 512, "essential": true,
        "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
        "logConfiguration": {"logDriver": "awslogs", "options": {"awslogs-group": "/ecs/web-app", "awslogs-region": "us-east-1", "awslogs-stream-prefix": "nginx"}}}]
    }"#;
    assert_eq!(c.register(guide), "web-app:1");
    let port = berth_tests::free_port();
    assert_eq!(c.register(&web_td(port)), "web-app:2");
    let tds = c.json(&["list-task-definitions", "--family-prefix", "web-app"]);
    assert_eq!(tds["taskDefinitionArns"].as_array().unwrap().len(), 2);
    let td = c.json(&["describe-task-definition", "--task-definition", "web-app:1"]);
    assert_eq!(td["taskDefinition"]["networkMode"], "awsvpc");
    assert_eq!(
        td["taskDefinition"]["containerDefinitions"][0]["essential"],
        true
    );

    // The guide's step 2: the log group its awslogs driver writes to (awslogs-create-group is
    // not set, so without it the task would stop with the group's absence as its reason).
    c.ok_in(
        "logs",
        &["create-log-group", "--log-group-name", "/ecs/web-app"],
    );
    c.ok_in(
        "logs",
        &[
            "put-retention-policy",
            "--log-group-name",
            "/ecs/web-app",
            "--retention-in-days",
            "7",
        ],
    );

    // Run it and see it RUNNING and answering.
    let task = c.run_task("web-app:2");
    let t = c.wait_status(&task, "RUNNING", T);
    assert_eq!(t["desiredStatus"], "RUNNING");
    assert_eq!(t["containers"][0]["lastStatus"], "RUNNING");
    assert!(t["startedAt"].is_string() && t["createdAt"].is_string());
    assert_eq!(t["availabilityZone"], "lab-1a");
    let body = wait_for("the web app to answer", T, || {
        http_get(port).filter(|b| b.contains("Hello from Berth"))
    });
    assert!(body.contains("200 OK"), "{body}");
    // The guide's "View logs": the stream prefix/container/task-id, newest first, and the
    // request the web app logged (httpd -vv writes it to stderr) in it.
    let stream = format!(
        "nginx/nginx/{}",
        task.rsplit('/').next().unwrap_or_default()
    );
    let streams: serde_json::Value = serde_json::from_str(&c.ok_in(
        "logs",
        &[
            "describe-log-streams",
            "--log-group-name",
            "/ecs/web-app",
            "--order-by",
            "LastEventTime",
            "--descending",
            "--output",
            "json",
        ],
    ))
    .expect("json");
    assert_eq!(streams["logStreams"][0]["logStreamName"], stream.as_str());
    wait_for("the request in the task's log stream", T, || {
        let page: serde_json::Value = serde_json::from_str(&c.ok_in(
            "logs",
            &[
                "get-log-events",
                "--log-group-name",
                "/ecs/web-app",
                "--log-stream-name",
                &stream,
                "--output",
                "json",
            ],
        ))
        .ok()?;
        page["events"]
            .as_array()?
            .iter()
            .any(|e| {
                e["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("response:200"))
            })
            .then_some(())
    });
    let text = c.ok(&[
        "describe-tasks",
        "--cluster",
        &name,
        "--tasks",
        &task,
        "--query",
        "tasks[0].lastStatus",
        "--output",
        "text",
    ]);
    assert_eq!(text.trim(), "RUNNING");
    let listed = c.json(&["list-tasks", "--cluster", &name, "--family", "web-app"]);
    assert_eq!(listed["taskArns"][0], task.as_str());

    // The cluster and the instance account for it.
    let d = c.json(&[
        "describe-clusters",
        "--cluster",
        &name,
        "--include",
        "STATISTICS,SETTINGS,CONFIGURATIONS,TAGS",
    ]);
    let cl = &d["clusters"][0];
    assert_eq!(cl["runningTasksCount"], 1);
    assert_eq!(cl["registeredContainerInstancesCount"], 1);
    assert!(cl["statistics"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["name"] == "runningEC2TasksCount" && s["value"] == "1"));
    let ci_arn = c.json(&["list-container-instances", "--cluster", &name])["containerInstanceArns"]
        [0]
    .as_str()
    .unwrap()
    .to_string();
    let ci = c.json(&[
        "describe-container-instances",
        "--cluster",
        &name,
        "--container-instances",
        &ci_arn,
    ]);
    let ci = &ci["containerInstances"][0];
    let res = |list: &str, n: &str| {
        ci[list]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == n)
            .unwrap()["integerValue"]
            .as_i64()
            .unwrap()
    };
    assert_eq!(
        res("registeredResources", "CPU") - res("remainingResources", "CPU"),
        512
    );
    assert_eq!(
        res("registeredResources", "MEMORY") - res("remainingResources", "MEMORY"),
        1024
    );
    assert_eq!(res("registeredResources", "CPU") % 1024, 0);
    assert_eq!(ci["agentConnected"], true);
    assert_eq!(ci["runningTasksCount"], 1);
    assert!(ci["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|a| a["name"] == "ecs.os-type" && a["value"] == "linux"));

    // A cluster with instances is not deleted.
    let out = c.berth(&["delete-cluster", "--cluster", &name]);
    assert_eq!(out.status.code(), Some(254));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ClusterContainsContainerInstancesException")
    );

    // Stop it (busybox httpd as PID 1 ignores SIGTERM: stopTimeout 30 s, as ECS).
    let stopped = c.json(&[
        "stop-task",
        "--cluster",
        &name,
        "--task",
        &task,
        "--reason",
        "Scaling down",
    ]);
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED");
    let t = c.wait_status(&task, "STOPPED", Duration::from_secs(90));
    assert_eq!(t["stopCode"], "UserInitiated");
    assert_eq!(t["stoppedReason"], "Scaling down");
    assert_eq!(t["containers"][0]["exitCode"], 137);
    assert!(t["stoppedAt"].is_string() && t["stoppingAt"].is_string());
    assert!(
        c.cgroup_leftovers(&task).is_empty(),
        "cgroups left: {:?}",
        c.cgroup_leftovers(&task)
    );
    wait_for("containerd's container to be removed", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
    let stopped_list = c.json(&[
        "list-tasks",
        "--cluster",
        &name,
        "--desired-status",
        "STOPPED",
    ]);
    assert_eq!(stopped_list["taskArns"][0], task.as_str());

    // The guide's Fargate run-task line, verbatim: its subnet and security group are the
    // guide's placeholders, which this cluster (like any AWS account) does not have: refused by
    // name, and nothing runs.
    let guide_line = [
        "run-task",
        "--cluster",
        &name,
        "--task-definition",
        "web-app:1",
        "--count",
        "1",
        "--launch-type",
        "FARGATE",
        "--network-configuration",
        "awsVpcConfiguration={subnets=[subnet-12345],securityGroups=[sg-12345678]}",
    ];
    let out = c.berth(&guide_line);
    assert_eq!(out.status.code(), Some(254));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidParameterException") && err.contains("subnet-12345"),
        "{err}"
    );
    // With this cluster's own subnet and a group made with `berth ec2`, the same line places a
    // FARGATE task with its ENI attachment; the guide's nginx:alpine is not in this host's image
    // store, so it then stops with CannotPullContainerError.
    let sg = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web tasks",
            "--vpc-id",
            &name,
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let own = format!(
        "awsVpcConfiguration={{subnets=[{}],securityGroups=[{sg}]}}",
        c.net.subnet
    );
    let mut line = guide_line.to_vec();
    *line.last_mut().unwrap() = &own;
    let r = c.json(&line);
    let fargate = r["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    assert_eq!(r["tasks"][0]["launchType"], "FARGATE");
    assert_eq!(
        r["tasks"][0]["attachments"][0]["type"],
        "ElasticNetworkInterface"
    );
    let t = c.wait_status(&fargate, "STOPPED", T);
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    assert!(
        t["stoppedReason"]
            .as_str()
            .unwrap()
            .starts_with("CannotPullContainerError"),
        "{t}"
    );

    let dereg = c.json(&[
        "deregister-task-definition",
        "--task-definition",
        "web-app:2",
    ]);
    assert_eq!(dereg["taskDefinition"]["status"], "INACTIVE");
    let out = c.berth(&[
        "run-task",
        "--cluster",
        &name,
        "--task-definition",
        "web-app:2",
    ]);
    assert_eq!(
        out.status.code(),
        Some(254),
        "an INACTIVE revision does not run"
    );
}

/// cgroup files of a task (or one of its containers), on a v1 (hybrid) or a v2 (unified) host.
struct CgroupFiles<'a> {
    c: &'a Cluster,
    task: &'a str,
    unified: bool,
}

impl CgroupFiles<'_> {
    fn new<'a>(c: &'a Cluster, task: &'a str) -> CgroupFiles<'a> {
        CgroupFiles {
            c,
            task,
            unified: std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
        }
    }

    /// A file: `v1` in the v1 `controller` hierarchy, or `v2` in the unified tree.
    fn read(&self, container: Option<&str>, controller: &str, v1: &str, v2: &str) -> String {
        if self.unified {
            let id = self.task.rsplit('/').next().unwrap_or_default();
            let mut p = std::path::PathBuf::from("/sys/fs/cgroup")
                .join(&self.c.cgroup_parent)
                .join(id);
            if let Some(c) = container {
                p = p.join(c);
            }
            read(p.join(v2))
        } else {
            read(self.c.cgroup_dir(controller, self.task, container).join(v1))
        }
    }

    fn cpu_shares(&self, container: Option<&str>) -> String {
        self.read(container, "cpu", "cpu.shares", "cpu.weight")
    }

    fn memory_limit(&self, container: Option<&str>) -> String {
        self.read(container, "memory", "memory.limit_in_bytes", "memory.max")
    }

    fn memory_soft_limit(&self, container: Option<&str>) -> String {
        self.read(
            container,
            "memory",
            "memory.soft_limit_in_bytes",
            "memory.low",
        )
    }
}

#[test]
fn cgroup_files_show_shares_quota_and_limits() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("cgroups");
    let td = c.register(&format!(
        r#"{{"family": "limits", "networkMode": "none", "cpu": "512", "memory": "256",
        "containerDefinitions": [
          {{"name": "app", "image": "{IMAGE}", "cpu": 100, "memory": 128, "memoryReservation": 64, "command": ["sleep", "1000"], "stopTimeout": 2}},
          {{"name": "side", "image": "{IMAGE}", "cpu": 1, "memoryReservation": 32, "essential": false, "command": ["sleep", "1000"], "stopTimeout": 2}}
        ]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    let f = CgroupFiles::new(&c, &task);
    // On v2, shares are cpu.weight by runc's conversion: 1 + (shares - 2) * 9999 / 262142.
    let (shares_100, shares_2) = if f.unified { ("4", "1") } else { ("100", "2") };
    if f.unified {
        assert_eq!(f.read(None, "cpu", "", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(f.read(None, "cpu", "cpu.cfs_quota_us", ""), "50000");
        assert_eq!(f.read(None, "cpu", "cpu.cfs_period_us", ""), "100000");
    }
    assert_eq!(f.memory_limit(None), (256u64 << 20).to_string());
    assert_eq!(f.cpu_shares(Some("app")), shares_100);
    assert_eq!(
        f.cpu_shares(Some("side")),
        shares_2,
        "cpu 1 is raised to the minimum of 2 shares"
    );
    assert_eq!(f.memory_limit(Some("app")), (128u64 << 20).to_string());
    assert_eq!(f.memory_soft_limit(Some("app")), (64u64 << 20).to_string());
    assert_eq!(f.memory_soft_limit(Some("side")), (32u64 << 20).to_string());

    // Without task-level cpu, the task cgroup's shares are the sum of its containers' cpu
    // (ECS's rule), so a big task outweighs a small one under contention.
    let shares_td = c.register(&format!(
        r#"{{"family": "shares", "networkMode": "none",
        "containerDefinitions": [
          {{"name": "big", "image": "{IMAGE}", "cpu": 700, "memory": 16, "command": ["sleep", "1000"], "stopTimeout": 2}},
          {{"name": "small", "image": "{IMAGE}", "cpu": 100, "memory": 16, "essential": false, "command": ["sleep", "1000"], "stopTimeout": 2}}
        ]}}"#
    ));
    let shares_task = c.run_task(&shares_td);
    c.wait_status(&shares_task, "RUNNING", T);
    let g = CgroupFiles::new(&c, &shares_task);
    assert_eq!(
        g.cpu_shares(None),
        if g.unified { "31" } else { "800" },
        "task shares = 700 + 100 (not the default 1024)"
    );

    for t in [&task, &shares_task] {
        c.ok(&["stop-task", "--cluster", &c.name, "--task", t]);
    }
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["stoppedReason"], "Task stopped by user");
    c.wait_status(&shares_task, "STOPPED", T);
    for t in [&task, &shares_task] {
        assert!(
            c.cgroup_leftovers(t).is_empty(),
            "cgroups left: {:?}",
            c.cgroup_leftovers(t)
        );
    }
}

#[test]
fn essential_exit_stops_the_sibling_and_oom_is_reported() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("essential");
    // The sibling obeys SIGTERM; the essential container exits 3 once the sibling is up.
    let td = c.register(&format!(
        r#"{{"family": "batch-job", "networkMode": "none",
        "containerDefinitions": [
          {{"name": "worker", "image": "{IMAGE}", "memory": 32, "command": ["sh", "-c", "echo working on $BATCH_ID; echo oops >&2; sleep 1; exit 3"],
           "environment": [{{"name": "BATCH_ID", "value": "2025-10-28"}}]}},
          {{"name": "sidecar", "image": "{IMAGE}", "memory": 32, "essential": false, "stopTimeout": 60,
            "command": ["sh", "-c", "trap 'exit 143' TERM; while true; do sleep 1; done"]}}
        ]}}"#
    ));
    let task = c.run_task(&td);
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["stopCode"], "EssentialContainerExited");
    assert_eq!(t["stoppedReason"], "Essential container in task exited");
    let exit = |t: &Value, n: &str| {
        t["containers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["exitCode"]
            .clone()
    };
    assert_eq!(exit(&t, "worker"), 3);
    assert_eq!(
        exit(&t, "sidecar"),
        143,
        "the sibling got SIGTERM and exited by itself"
    );
    let q = c.ok(&[
        "describe-tasks",
        "--cluster",
        &c.name,
        "--tasks",
        &task,
        "--query",
        "tasks[0].stoppedReason",
        "--output",
        "text",
    ]);
    assert_eq!(q.trim(), "Essential container in task exited");

    // A container that outgrows its memory limit is OOM-killed.
    let oom = c.register(&format!(
        r#"{{"family": "hog", "networkMode": "none",
        "containerDefinitions": [{{"name": "hog", "image": "{IMAGE}", "memory": 16,
          "command": ["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]}}]}}"#
    ));
    let task = c.run_task(&oom);
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["containers"][0]["exitCode"], 137);
    assert_eq!(
        t["containers"][0]["reason"],
        "OutOfMemoryError: Container killed due to memory usage"
    );
    assert_eq!(t["stopCode"], "EssentialContainerExited");

    // A command that does not exist cannot start.
    let bad = c.register(&format!(
        r#"{{"family": "typo", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16, "command": ["/bin/no-such-command"]}}]}}"#
    ));
    let task = c.run_task(&bad);
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    let reason = t["stoppedReason"].as_str().unwrap();
    assert!(
        reason.starts_with("CannotStartContainerError: ") && reason.contains("no-such-command"),
        "{reason}"
    );
    assert!(c.cgroup_leftovers(&task).is_empty());
}

#[test]
fn stop_task_waits_stop_timeout_only_for_containers_that_ignore_sigterm() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("stoptimeout");
    let td = c.register(&format!(
        r#"{{"family": "stubborn", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16, "stopTimeout": 3, "command": ["sleep", "1000"]}}]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    let start = Instant::now();
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    let t = c.wait_status(&task, "STOPPED", T);
    assert!(
        start.elapsed() >= Duration::from_secs(3),
        "SIGKILL came before stopTimeout"
    );
    assert_eq!(t["containers"][0]["exitCode"], 137, "killed by SIGKILL");

    let td = c.register(&format!(
        r#"{{"family": "polite", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16, "stopTimeout": 120,
          "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    // Well within the 120 s stopTimeout: it exits on SIGTERM, with its own exit code.
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["containers"][0]["exitCode"], 0);
}

#[test]
fn controller_restart_keeps_every_object() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start("ctlrestart");
    let td = c.register(&format!(
        r#"{{"family": "keeper", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16, "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    let before_td = c.json(&["describe-task-definition", "--task-definition", &td]);
    c.kill_controller();
    // An unreachable controller is retried with back-off, never fatal.
    wait_for("the agent to retry", T, || {
        (c.agent_log().matches("reconnecting").count() >= 2).then_some(())
    });
    c.start_controller();
    assert_eq!(
        c.json(&["describe-task-definition", "--task-definition", &td]),
        before_td
    );
    let d = c.json(&["describe-clusters", "--clusters", &c.name]);
    assert_eq!(d["clusters"][0]["status"], "ACTIVE");
    assert_eq!(c.task(&task)["lastStatus"], "RUNNING");
    c.wait_agent_connected();
    // The link works again: a stop flows down and STOPPED flows back.
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    c.wait_status(&task, "STOPPED", T);
}

#[test]
fn agent_restart_keeps_containers_and_status_flows() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start("agentrestart");
    c.ok_in(
        "logs",
        &["create-log-group", "--log-group-name", "/ecs/web-app"],
    );
    let port = berth_tests::free_port();
    let web = c.register(&web_td(port));
    let batch = c.register(&format!(
        r#"{{"family": "batch", "networkMode": "none",
        "containerDefinitions": [{{"name": "job", "image": "{IMAGE}", "memory": 16, "command": ["sh", "-c", "read x < /dev/stdin || true; sleep 5; exit 7"]}}]}}"#
    ));
    let web_task = c.run_task(&web);
    let t = c.wait_status(&web_task, "RUNNING", T);
    let runtime_id = t["containers"][0]["runtimeId"].clone();
    wait_for("the web app", T, || http_get(port));
    let batch_task = c.run_task(&batch);
    let b = c.wait_status(&batch_task, "RUNNING", T);
    let batch_id = b["containers"][0]["runtimeId"]
        .as_str()
        .expect("batch runtimeId")
        .to_string();

    c.kill_agent();
    // While the agent is down the web app still answers and the batch job finishes: the agent
    // stays down until containerd itself reports the exit, so the exit code can only come from
    // the restarted agent's recovery.
    assert!(
        http_get(port).is_some(),
        "the container died with the agent"
    );
    assert_eq!(
        c.containerd_task_status(&batch_id).as_deref(),
        Some("RUNNING"),
        "the batch job must still run when the agent goes down"
    );
    wait_for("containerd to report the batch job's exit", T, || {
        (c.containerd_task_status(&batch_id).as_deref() == Some("STOPPED")).then_some(())
    });
    assert_eq!(
        c.task(&batch_task)["lastStatus"],
        "RUNNING",
        "the controller heard nothing while the agent was down"
    );
    c.start_agent();
    c.wait_agent_connected();
    let t = c.wait_status(&batch_task, "STOPPED", T);
    assert_eq!(
        t["containers"][0]["exitCode"], 7,
        "an exit during the agent's absence is reported"
    );
    let t = c.task(&web_task);
    assert_eq!(t["lastStatus"], "RUNNING");
    assert_eq!(t["containers"][0]["runtimeId"], runtime_id, "not restarted");
    assert!(http_get(port).is_some());
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &web_task]);
    c.wait_status(&web_task, "STOPPED", Duration::from_secs(90));
    assert!(c.agent_log().contains("resuming task"));
}

#[test]
fn placement_failures_are_reported_and_place_nothing() {
    if !prerequisites() {
        return;
    }
    // The rest of the bad-input checks need no instance and live in cli.rs.
    let c = Cluster::start("placement");
    let n = c.name.clone();
    let cpu_hog = c.register(&format!(
        r#"{{"family":"big-cpu","networkMode":"none","cpu":"196608","containerDefinitions":[{{"name":"a","image":"{IMAGE}","memory":8}}]}}"#
    ));
    let r = c.json(&["run-task", "--cluster", &n, "--task-definition", &cpu_hog]);
    assert_eq!(r["failures"][0]["reason"], "RESOURCE:CPU", "{r}");
    assert!(r["tasks"].as_array().unwrap().is_empty());
    let mem_hog = c.register(&format!(
        r#"{{"family":"big-mem","networkMode":"none","memory":"16777216","containerDefinitions":[{{"name":"a","image":"{IMAGE}"}}]}}"#
    ));
    let r = c.json(&[
        "run-task",
        "--cluster",
        &n,
        "--task-definition",
        &mem_hog,
        "--count",
        "2",
    ]);
    assert_eq!(r["failures"][0]["reason"], "RESOURCE:MEMORY", "{r}");
    let listed = c.json(&["list-tasks", "--cluster", &n]);
    assert!(listed["taskArns"].as_array().unwrap().is_empty());
}

#[test]
fn churn_of_short_tasks_all_start_and_stop_cleanly() {
    if !prerequisites() {
        return;
    }
    // Tasks exiting (and being deleted) while others are created: containerd garbage-collects
    // after each deletion, which must never take a snapshot a new container is about to use.
    let c = Cluster::start("churn");
    let td = c.register(&format!(
        r#"{{"family": "blip", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 8, "command": ["true"]}}]}}"#
    ));
    let mut arns = Vec::new();
    for _ in 0..3 {
        let r = c.json(&[
            "run-task",
            "--cluster",
            &c.name,
            "--task-definition",
            &td,
            "--count",
            "10",
        ]);
        arns.extend(
            r["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["taskArn"].as_str().unwrap().to_string()),
        );
    }
    assert_eq!(arns.len(), 30);
    for arn in &arns {
        let t = c.wait_status(arn, "STOPPED", T);
        assert_eq!(t["stopCode"], "EssentialContainerExited", "{t}");
        assert_eq!(t["containers"][0]["exitCode"], 0, "{t}");
    }
    wait_for("every container to be removed", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
}

/// Issue 5, item 1: a three-container task stopped right after run-task reaches STOPPED, every
/// container STOPPED (those never started without an exit code), its cgroup and containerd
/// containers removed, and the host can place the next task (its cpu/memory were released).
#[test]
fn stop_right_after_run_task_stops_every_container_and_frees_the_host() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("stopwhilestart");
    // Half the 2-core host each: two leaked tasks would leave no room for a third.
    let td = c.register(&format!(
        r#"{{"family": "trio", "networkMode": "none", "cpu": "1024", "memory": "128",
        "containerDefinitions": [
          {{"name": "a", "image": "{IMAGE}", "memory": 16, "stopTimeout": 2, "command": ["sleep", "1000"]}},
          {{"name": "b", "image": "{IMAGE}", "memory": 16, "stopTimeout": 2, "essential": false, "command": ["sleep", "1000"]}},
          {{"name": "c", "image": "{IMAGE}", "memory": 16, "stopTimeout": 2, "essential": false, "command": ["sleep", "1000"]}}]}}"#
    ));
    for _ in 0..3 {
        let task = c.run_task(&td);
        c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
        let t = c.wait_status(&task, "STOPPED", T);
        for ct in t["containers"].as_array().expect("containers") {
            assert_eq!(ct["lastStatus"], "STOPPED", "{t}");
        }
        wait_for("the task's cgroups to be removed", T, || {
            c.cgroup_leftovers(&task).is_empty().then_some(())
        });
    }
    wait_for("every container to be removed", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
}

#[test]
fn a_task_the_controller_has_no_record_of_is_adopted_not_killed() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start("adopt");
    let td = c.register(&format!(
        r#"{{"family": "stray", "networkMode": "none",
        "containerDefinitions": [{{"name": "app", "image": "{IMAGE}", "memory": 16, "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]}}]}}"#
    ));
    let task = c.run_task(&td);
    let before = c.wait_status(&task, "RUNNING", T);
    // Both restart; the controller from an empty store (restored from nothing), so the agent
    // re-registers under a new instance ARN and its task is one the controller never assigned.
    c.kill_agent();
    c.kill_controller();
    c.wipe_controller_store();
    c.start_controller();
    c.ok(&["create-cluster", "--cluster-name", &c.name.clone()]);
    c.start_agent();
    c.wait_agent_connected();
    let listed = wait_for("the task to be adopted", T, || {
        let v = c.json(&["list-tasks", "--cluster", &c.name]);
        let arns = v["taskArns"].as_array()?.clone();
        (!arns.is_empty()).then_some(arns)
    });
    assert_eq!(listed, [Value::from(task.clone())]);
    let t = c.task(&task);
    assert_eq!(t["lastStatus"], "RUNNING", "{t}");
    assert_eq!(t["desiredStatus"], "RUNNING");
    assert_eq!(t["taskDefinitionArn"], before["taskDefinitionArn"]);
    assert_eq!(
        t["containers"][0]["image"],
        before["containers"][0]["image"]
    );
    assert_eq!(
        t["containers"][0]["runtimeId"], before["containers"][0]["runtimeId"],
        "not restarted"
    );
    // Only an explicit StopTask stops it.
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    c.wait_status(&task, "STOPPED", T);
    wait_for("the container to be removed", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
}
