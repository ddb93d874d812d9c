//! Issue 12: services on one host with real containerd + runc, through the `berth` binary:
//! desired count kept, self-healing, rolling deployments within minimumHealthyPercent,
//! scale-in, the circuit breaker's rollback, draining, deletion, and the API's refusals. The
//! multi-host behaviours (spread, binpack, DAEMON following hosts, cut-off hosts) are in
//! `lab_services.rs`.

use berth_tests::{prerequisites, service_events as events, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

fn td(family: &str, command: &str) -> String {
    format!(
        r#"{{
  "family": "{family}",
  "containerDefinitions": [
    {{
      "name": "app",
      "image": "{IMAGE}",
      "memory": 32,
      "essential": true,
      "command": ["sh", "-c", "{command}"]
    }}
  ]
}}"#
    )
}

fn service(c: &Cluster, name: &str) -> Value {
    let v = c.json(&[
        "describe-services",
        "--cluster",
        &c.name,
        "--services",
        name,
    ]);
    v["services"][0].clone()
}

fn service_tasks(c: &Cluster, name: &str) -> Vec<Value> {
    let arns = c.json(&["list-tasks", "--cluster", &c.name, "--service-name", name]);
    let arns: Vec<String> = arns["taskArns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if arns.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["describe-tasks", "--cluster", &c.name, "--tasks"];
    args.extend(arns.iter().map(String::as_str));
    c.json(&args)["tasks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn running(tasks: &[Value]) -> Vec<&Value> {
    tasks
        .iter()
        .filter(|t| t["lastStatus"] == "RUNNING")
        .collect()
}

fn wait_stable(c: &Cluster, name: &str) {
    let out = c.berth(&[
        "wait",
        "services-stable",
        "--cluster",
        &c.name,
        "--services",
        name,
    ]);
    assert!(
        out.status.success(),
        "wait services-stable: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        serde_json::to_string_pretty(&service(c, name)).unwrap_or_default()
    );
}

#[test]
fn a_service_keeps_its_count_heals_rolls_within_its_limits_scales_in_and_is_deleted() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("svc-roll");
    let v1 = c.register(&td("svc-web", "sleep 3600"));
    let created = c.json(&[
        "create-service",
        "--cluster",
        &c.name,
        "--service-name",
        "web",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
    ]);
    let s = &created["service"];
    assert_eq!(s["status"], "ACTIVE");
    assert_eq!(s["desiredCount"], 2);
    assert_eq!(s["schedulingStrategy"], "REPLICA");
    assert_eq!(s["deploymentConfiguration"]["minimumHealthyPercent"], 100);
    assert_eq!(s["deploymentConfiguration"]["maximumPercent"], 200);
    assert_eq!(s["deployments"][0]["status"], "PRIMARY");
    assert_eq!(s["deployments"][0]["rolloutState"], "IN_PROGRESS");
    let started = Instant::now();
    wait_stable(&c, "web");
    println!(
        "CreateService → stable (2 tasks RUNNING): {:?}",
        started.elapsed()
    );
    let s = service(&c, "web");
    assert_eq!(s["runningCount"], 2, "{s}");
    assert_eq!(s["deployments"].as_array().map(Vec::len), Some(1));
    assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED", "{s}");
    let ev = events(&s);
    assert!(
        ev.iter()
            .any(|e| e.starts_with("(service web) has started 2 tasks: (task ")),
        "{ev:?}"
    );
    assert!(
        ev.contains(&"(service web) has reached a steady state.".to_string()),
        "{ev:?}"
    );
    let tasks = service_tasks(&c, "web");
    assert_eq!(running(&tasks).len(), 2);
    for t in &tasks {
        assert_eq!(t["group"], "service:web");
        assert_eq!(
            t["startedBy"], s["deployments"][0]["id"],
            "a service's task names its deployment"
        );
    }
    // The cluster counts it.
    let cl = c.json(&["describe-clusters", "--clusters", &c.name]);
    assert_eq!(cl["clusters"][0]["activeServicesCount"], 1);

    // Self-healing: a task stopped by hand is replaced.
    let victim = tasks[0]["taskArn"].as_str().unwrap_or_default().to_string();
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &victim]);
    let healed = Instant::now();
    wait_for("a replacement task RUNNING", T, || {
        let ts = service_tasks(&c, "web");
        let r = running(&ts);
        (r.len() == 2 && r.iter().all(|t| t["taskArn"] != victim.as_str())).then_some(())
    });
    println!(
        "a stopped task replaced and RUNNING after {:?}",
        healed.elapsed()
    );

    // A rolling update at 100/200: never fewer than 2 RUNNING tasks, sampled every 100 ms.
    let v2 = c.register(&td("svc-web", "sleep 3601"));
    c.json(&[
        "update-service",
        "--cluster",
        &c.name,
        "--service",
        "web",
        "--task-definition",
        &v2,
    ]);
    let v2_arn = v2.clone();
    let seen = c.sample_service("web", Duration::from_millis(100), T, |ts| {
        ts.len() == 2
            && ts
                .iter()
                .all(|t| t.last_status == "RUNNING" && t.task_definition_arn.ends_with(&v2_arn))
    });
    println!("rolling update 100/200: {seen:?}");
    assert!(
        seen.fewest_running >= 2,
        "fewer than desiredCount tasks RUNNING during the update: {seen:?}"
    );
    assert!(
        seen.most_live <= 4,
        "more than maximumPercent (200%) tasks: {seen:?}"
    );
    wait_stable(&c, "web");
    let s = service(&c, "web");
    assert_eq!(
        s["taskDefinition"].as_str().map(|a| a.ends_with(&v2)),
        Some(true)
    );
    let ev = events(&s);
    assert!(
        ev.iter().any(|e| e.contains("deployment completed.")),
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.starts_with("(service web) has stopped 2 running tasks: "))
            || ev
                .iter()
                .filter(|e| e.starts_with("(service web) has stopped 1 running tasks: "))
                .count()
                >= 2,
        "{ev:?}"
    );

    // Scale-in to 1, then delete: refused while desiredCount > 0, then with --force.
    c.json(&[
        "update-service",
        "--cluster",
        &c.name,
        "--service",
        "web",
        "--desired-count",
        "1",
    ]);
    wait_stable(&c, "web");
    assert_eq!(running(&service_tasks(&c, "web")).len(), 1);
    let out = c.berth(&["delete-service", "--cluster", &c.name, "--service", "web"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("InvalidParameterException") && err.contains("--force"),
        "{err}"
    );
    // The cluster cannot go while it has a service.
    let out = c.berth(&["delete-cluster", "--cluster", &c.name]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ClusterContainsServicesException")
            || err.contains("ClusterContainsContainerInstancesException"),
        "{err}"
    );
    let d = c.json(&[
        "delete-service",
        "--cluster",
        &c.name,
        "--service",
        "web",
        "--force",
    ]);
    assert_eq!(d["service"]["status"], "DRAINING");
    let out = c.berth(&[
        "wait",
        "services-inactive",
        "--cluster",
        &c.name,
        "--services",
        "web",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the service's tasks STOPPED", T, || {
        service_tasks(&c, "web").is_empty().then_some(())
    });
    let listed = c.json(&["list-services", "--cluster", &c.name]);
    assert_eq!(listed["serviceArns"].as_array().map(Vec::len), Some(0));
    // A deleted service refuses updates as ECS does.
    let out = c.berth(&[
        "update-service",
        "--cluster",
        &c.name,
        "--service",
        "web",
        "--desired-count",
        "1",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("ServiceNotActiveException"));
}

#[test]
fn failing_tasks_trip_the_circuit_breaker_which_rolls_back() {
    if !prerequisites() {
        return;
    }
    // A short restart delay so the failures come quickly.
    let c = Cluster::start_with_controller_args("svc-breaker", &["--service-restart-delay", "1"]);
    let good = c.register(&td("svc-cb", "sleep 3600"));
    c.json(&[
        "create-service",
        "--cluster",
        &c.name,
        "--service-name",
        "cb",
        "--task-definition",
        &good,
        "--desired-count",
        "2",
        "--deployment-configuration",
        "deploymentCircuitBreaker={enable=true,rollback=true},minimumHealthyPercent=50,maximumPercent=200",
    ]);
    wait_stable(&c, "cb");
    // Tasks that never reach RUNNING (the command does not exist, so the container cannot
    // start): a task that exits at once may be seen RUNNING first, and a deployment whose tasks
    // all ran at one moment completes before its breaker trips (and resets the failures in a
    // row: see the note on issue 12).
    let bad = c.register(&format!(
        r#"{{"family": "svc-cb", "containerDefinitions": [{{"name": "app", "image": "{IMAGE}",
        "memory": 32, "essential": true, "command": ["/no/such/binary"]}}]}}"#
    ));
    c.json(&[
        "update-service",
        "--cluster",
        &c.name,
        "--service",
        "cb",
        "--task-definition",
        &bad,
    ]);
    let t0 = Instant::now();
    // The failed deployment shows FAILED while its tasks are still there (it leaves with
    // them), so it is sampled until the rollback is seen.
    let mut seen_failed: Option<Value> = None;
    let s = wait_for(
        "the breaker to trip and roll back",
        Duration::from_secs(180),
        || {
            let s = service(&c, "cb");
            if let Some(d) = s["deployments"]
                .as_array()?
                .iter()
                .find(|d| d["rolloutState"] == "FAILED")
            {
                seen_failed = Some(d.clone());
            }
            let ev = events(&s);
            (ev.iter().any(|e| e.contains("rolling back to"))
                && s["taskDefinition"]
                    .as_str()
                    .is_some_and(|a| a.ends_with(&good)))
            .then_some(s)
        },
    );
    println!("breaker tripped and rolled back after {:?}", t0.elapsed());
    let ev = events(&s);
    assert!(
        ev.iter()
            .any(|e| e.contains("deployment failed: tasks failed to start.")),
        "{ev:?}"
    );
    if let Some(failed) = &seen_failed {
        assert!(failed["failedTasks"].as_i64().unwrap_or(0) >= 3, "{failed}");
        assert_eq!(failed["status"], "ACTIVE", "{failed}");
    }
    wait_stable(&c, "cb");
    let s = service(&c, "cb");
    assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED");
    assert!(s["deployments"][0]["taskDefinition"]
        .as_str()
        .is_some_and(|a| a.ends_with(&good)));
    let ts = service_tasks(&c, "cb");
    assert_eq!(running(&ts).len(), 2);
    // The failed tasks' stops say why, as ECS does.
    let stopped = c.json(&[
        "list-tasks",
        "--cluster",
        &c.name,
        "--desired-status",
        "STOPPED",
        "--family",
        "svc-cb",
    ]);
    assert!(stopped["taskArns"].as_array().is_some_and(|a| a.len() >= 3));
}

#[test]
fn draining_the_only_instance_stops_service_tasks_and_leaves_standalone_ones() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("svc-drain");
    let v1 = c.register(&td("svc-dr", "sleep 3600"));
    let standalone = c.run_task(&v1);
    c.wait_status(&standalone, "RUNNING", T);
    c.json(&[
        "create-service",
        "--cluster",
        &c.name,
        "--service-name",
        "dr",
        "--task-definition",
        &v1,
        "--desired-count",
        "2",
        "--deployment-configuration",
        "minimumHealthyPercent=0,maximumPercent=100",
    ]);
    wait_stable(&c, "dr");
    let ci = c.json(&["list-container-instances", "--cluster", &c.name]);
    let ci = ci["containerInstanceArns"][0]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let d = c.json(&[
        "update-container-instances-state",
        "--cluster",
        &c.name,
        "--container-instances",
        &ci,
        "--status",
        "DRAINING",
    ]);
    assert_eq!(d["containerInstances"][0]["status"], "DRAINING");
    // With no other instance, the service's tasks stop and cannot be placed again.
    wait_for("the service's tasks stopped", T, || {
        running(&service_tasks(&c, "dr")).is_empty().then_some(())
    });
    let s = wait_for("an event saying the task could not be placed", T, || {
        let s = service(&c, "dr");
        events(&s)
            .iter()
            .any(|e| e.starts_with("(service dr) was unable to place a task because no container instance met all of its requirements."))
            .then_some(s)
    });
    println!(
        "events while draining: {:?}",
        &events(&s)[..3.min(events(&s).len())]
    );
    // The standalone task was left alone.
    assert_eq!(c.task(&standalone)["lastStatus"], "RUNNING");
    // ACTIVE again: the service comes back.
    c.json(&[
        "update-container-instances-state",
        "--cluster",
        &c.name,
        "--container-instances",
        &ci,
        "--status",
        "ACTIVE",
    ]);
    wait_stable(&c, "dr");
    assert_eq!(running(&service_tasks(&c, "dr")).len(), 2);
}

/// The API's refusals and answers, needing only the binaries (no root, no containerd).
#[test]
fn the_service_api_refuses_bad_requests_by_name_and_reports_placement_failures() {
    let c = Cluster::controller_only("svc-api");
    let td_arn = c.register(&td("svc-api", "sleep 1"));
    let fails = |args: &[&str], needle: &str| {
        let out = c.berth(args);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(needle), "{args:?}: {err}");
    };
    let base = [
        "create-service",
        "--cluster",
        c.name.as_str(),
        "--service-name",
        "s1",
        "--task-definition",
        td_arn.as_str(),
    ];
    let with = |extra: &[&'static str]| -> Vec<String> {
        base.iter()
            .map(|s| s.to_string())
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    let run = |v: Vec<String>, needle: &str| {
        let a: Vec<&str> = v.iter().map(String::as_str).collect();
        fails(&a, needle);
    };
    run(with(&[]), "desiredCount: is required");
    run(
        with(&[
            "--desired-count",
            "1",
            "--load-balancers",
            "targetGroupArn=arn:x,containerName=app,containerPort=80",
        ]),
        "loadBalancers: load balancers are not supported yet",
    );
    run(
        with(&[
            "--desired-count",
            "1",
            "--service-registries",
            "registryArn=arn:x",
        ]),
        "serviceRegistries: service discovery is not supported yet",
    );
    run(
        with(&[
            "--desired-count",
            "1",
            "--capacity-provider-strategy",
            "capacityProvider=x",
        ]),
        "capacityProviderStrategy: capacity providers are not supported yet",
    );
    run(
        with(&[
            "--desired-count",
            "1",
            "--deployment-configuration",
            "maximumPercent=300",
        ]),
        "maximumPercent: 300 is outside 100-200",
    );
    run(
        with(&[
            "--desired-count",
            "1",
            "--placement-strategy",
            "type=binpack,field=disk",
        ]),
        "binpack field 'disk' is not cpu or memory",
    );
    run(
        with(&[
            "--desired-count",
            "1",
            "--placement-constraints",
            "type=memberOf,expression=attribute:x ==",
        ]),
        "placementConstraints[0].expression",
    );
    fails(
        &[
            "create-service",
            "--cluster",
            &c.name,
            "--service-name",
            "bad name",
            "--task-definition",
            &td_arn,
            "--desired-count",
            "1",
        ],
        "serviceName: 'bad name'",
    );
    // Nothing was created by any of those.
    let listed = c.json(&["list-services", "--cluster", &c.name]);
    assert_eq!(listed["serviceArns"].as_array().map(Vec::len), Some(0));

    // No instance: the service exists and says why nothing runs.
    let s = c.json(&[
        "create-service",
        "--cluster",
        &c.name,
        "--service-name",
        "s1",
        "--task-definition",
        &td_arn,
        "--desired-count",
        "1",
    ]);
    assert!(s["service"]["serviceArn"]
        .as_str()
        .is_some_and(|a| a.ends_with(&format!(":service/{}/s1", c.name))));
    wait_for("the placement failure event", T, || {
        let s = service(&c, "s1");
        events(&s)
            .iter()
            .any(|e| e == "(service s1) was unable to place a task because no container instance met all of its requirements. Reason: No Container Instances were found in your cluster.")
            .then_some(())
    });
    fails(
        &[
            "create-service",
            "--cluster",
            &c.name,
            "--service-name",
            "s1",
            "--task-definition",
            &td_arn,
            "--desired-count",
            "2",
        ],
        "Creation of service was not idempotent.",
    );
    let d = c.json(&[
        "describe-services",
        "--cluster",
        &c.name,
        "--services",
        "s1",
        "nope",
    ]);
    assert_eq!(d["services"].as_array().map(Vec::len), Some(1));
    assert_eq!(d["failures"][0]["reason"], "MISSING");
    fails(
        &[
            "update-service",
            "--cluster",
            &c.name,
            "--service",
            "nope",
            "--desired-count",
            "1",
        ],
        "ServiceNotFoundException",
    );
    fails(
        &["delete-service", "--cluster", &c.name, "--service", "s1"],
        "--force",
    );
    fails(
        &["delete-cluster", "--cluster", &c.name],
        "ClusterContainsServicesException",
    );
    fails(
        &["list-tasks", "--cluster", &c.name, "--service-name", "nope"],
        "ServiceNotFoundException",
    );
    // Paging over services.
    for i in 0..3 {
        c.json(&[
            "create-service",
            "--cluster",
            &c.name,
            "--service-name",
            &format!("p{i}"),
            "--task-definition",
            &td_arn,
            "--desired-count",
            "0",
        ]);
    }
    let page = c.json(&["list-services", "--cluster", &c.name, "--max-items", "2"]);
    assert_eq!(page["serviceArns"].as_array().map(Vec::len), Some(2));
    assert!(page["NextToken"].is_string(), "{page}");
    let all = c.json(&["list-services", "--cluster", &c.name]);
    assert_eq!(all["serviceArns"].as_array().map(Vec::len), Some(4));
    // A service of 0 tasks is stable at once.
    let out = c.berth(&[
        "wait",
        "services-stable",
        "--cluster",
        &c.name,
        "--services",
        "p0",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A missing service fails the waiter as botocore's does.
    let out = c.berth(&[
        "wait",
        "services-stable",
        "--cluster",
        &c.name,
        "--services",
        "nope",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MISSING"));
}

#[test]
fn new_tasks_failing_their_health_checks_trip_the_breaker_which_rolls_back() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start_with_controller_args("svc-health", &["--service-restart-delay", "1"]);
    let with_check = |family: &str, check: &str| {
        format!(
            r#"{{
  "family": "{family}",
  "containerDefinitions": [
    {{
      "name": "app",
      "image": "{IMAGE}",
      "memory": 32,
      "essential": true,
      "command": ["sleep", "3600"],
      "healthCheck": {{"command": ["CMD-SHELL", "{check}"], "interval": 5, "timeout": 2, "retries": 1}}
    }}
  ]
}}"#
        )
    };
    let good = c.register(&with_check("svc-hc", "true"));
    c.json(&[
        "create-service",
        "--cluster",
        &c.name,
        "--service-name",
        "hc",
        "--task-definition",
        &good,
        "--desired-count",
        "2",
        "--health-check-grace-period-seconds",
        "0",
        "--deployment-configuration",
        "deploymentCircuitBreaker={enable=true,rollback=true}",
    ]);
    wait_stable(&c, "hc");
    // services-stable (botocore's) looks at runningCount only; health comes with the checks.
    wait_for("both tasks HEALTHY", T, || {
        let ts = service_tasks(&c, "hc");
        (ts.len() == 2 && ts.iter().all(|t| t["healthStatus"] == "HEALTHY")).then_some(())
    });
    let s = service(&c, "hc");
    assert_eq!(s["deployments"][0]["rolloutState"], "COMPLETED", "{s}");
    let bad = c.register(&with_check("svc-hc", "false"));
    c.json(&[
        "update-service",
        "--cluster",
        &c.name,
        "--service",
        "hc",
        "--task-definition",
        &bad,
    ]);
    let t0 = Instant::now();
    // At 100/200 the two healthy tasks stay while the new ones fail their checks.
    let mut fewest_healthy = usize::MAX;
    let s = wait_for(
        "the breaker to trip on health checks and roll back",
        Duration::from_secs(240),
        || {
            let ts = service_tasks(&c, "hc");
            fewest_healthy = fewest_healthy.min(
                ts.iter()
                    .filter(|t| t["lastStatus"] == "RUNNING" && t["healthStatus"] == "HEALTHY")
                    .count(),
            );
            let s = service(&c, "hc");
            (events(&s).iter().any(|e| e.contains("rolling back to"))).then_some(s)
        },
    );
    println!("breaker tripped on health checks after {:?}", t0.elapsed());
    let ev = events(&s);
    assert!(
        ev.iter()
            .filter(|e| e.contains("failed container health checks."))
            .count()
            >= 3,
        "{ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.contains("deployment failed: tasks failed to start.")),
        "{ev:?}"
    );
    assert!(
        fewest_healthy >= 2,
        "the old healthy tasks were kept: fewest {fewest_healthy}"
    );
    wait_stable(&c, "hc");
    let s = service(&c, "hc");
    assert!(s["taskDefinition"]
        .as_str()
        .is_some_and(|a| a.ends_with(&good)));
    let stopped = c.json(&[
        "list-tasks",
        "--cluster",
        &c.name,
        "--desired-status",
        "STOPPED",
    ]);
    let arns: Vec<&str> = stopped["taskArns"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    let mut args = vec!["describe-tasks", "--cluster", c.name.as_str(), "--tasks"];
    args.extend(arns.iter().take(10));
    let d = c.json(&args);
    assert!(
        d["tasks"].as_array().is_some_and(|ts| ts
            .iter()
            .any(|t| t["stoppedReason"] == "Task failed container health checks")),
        "{d}"
    );
}
