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
      "command": ["httpd", "-f", "-p", "{port}", "-h", "/www"],
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
    let tds = c.json(&["list-task-definitions", "--family-prefix", "web"]);
    assert_eq!(tds["taskDefinitionArns"].as_array().unwrap().len(), 2);
    let td = c.json(&["describe-task-definition", "--task-definition", "web-app:1"]);
    assert_eq!(td["taskDefinition"]["networkMode"], "awsvpc");
    assert_eq!(
        td["taskDefinition"]["containerDefinitions"][0]["essential"],
        true
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

    // The guide's Fargate run-task pastes unchanged (awsVpcConfiguration as the guide spells
    // it); until networking lands, an awsvpc task stops with a reason that says so.
    let r = c.json(&[
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
    ]);
    let fargate = r["tasks"][0]["taskArn"].as_str().unwrap().to_string();
    assert_eq!(r["tasks"][0]["launchType"], "FARGATE");
    let t = c.wait_status(&fargate, "STOPPED", T);
    assert_eq!(t["stopCode"], "TaskFailedToStart");
    assert!(
        t["stoppedReason"]
            .as_str()
            .unwrap()
            .starts_with("ContainerNetworkingError: network mode awsvpc"),
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
    assert_eq!(
        read(c.cgroup_dir("cpu", &task, None).join("cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read(c.cgroup_dir("cpu", &task, None).join("cpu.cfs_period_us")),
        "100000"
    );
    assert_eq!(
        read(
            c.cgroup_dir("memory", &task, None)
                .join("memory.limit_in_bytes")
        ),
        (256u64 << 20).to_string()
    );
    assert_eq!(
        read(c.cgroup_dir("cpu", &task, Some("app")).join("cpu.shares")),
        "100"
    );
    assert_eq!(
        read(c.cgroup_dir("cpu", &task, Some("side")).join("cpu.shares")),
        "2",
        "cpu 1 is raised to the minimum of 2 shares"
    );
    assert_eq!(
        read(
            c.cgroup_dir("memory", &task, Some("app"))
                .join("memory.limit_in_bytes")
        ),
        (128u64 << 20).to_string()
    );
    assert_eq!(
        read(
            c.cgroup_dir("memory", &task, Some("app"))
                .join("memory.soft_limit_in_bytes")
        ),
        (64u64 << 20).to_string()
    );
    assert_eq!(
        read(
            c.cgroup_dir("memory", &task, Some("side"))
                .join("memory.soft_limit_in_bytes")
        ),
        (32u64 << 20).to_string()
    );
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    let t = c.wait_status(&task, "STOPPED", T);
    assert_eq!(t["stoppedReason"], "Task stopped by user");
    assert!(
        c.cgroup_leftovers(&task).is_empty(),
        "cgroups left: {:?}",
        c.cgroup_leftovers(&task)
    );
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
    let port = berth_tests::free_port();
    let web = c.register(&web_td(port));
    let batch = c.register(&format!(
        r#"{{"family": "batch", "networkMode": "none",
        "containerDefinitions": [{{"name": "job", "image": "{IMAGE}", "memory": 16, "command": ["sh", "-c", "read x < /dev/stdin || true; sleep 3; exit 7"]}}]}}"#
    ));
    let web_task = c.run_task(&web);
    let t = c.wait_status(&web_task, "RUNNING", T);
    let runtime_id = t["containers"][0]["runtimeId"].clone();
    wait_for("the web app", T, || http_get(port));
    let batch_task = c.run_task(&batch);
    c.wait_status(&batch_task, "RUNNING", T);

    c.kill_agent();
    // While the agent is down the web app still answers and the batch job finishes.
    assert!(
        http_get(port).is_some(),
        "the container died with the agent"
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
        r#"{{"family":"big-cpu","networkMode":"none","cpu":"1048576","containerDefinitions":[{{"name":"a","image":"{IMAGE}","memory":8}}]}}"#
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
