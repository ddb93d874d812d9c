//! Issue 12's services on the multi-host lab (`tests/src/lab.rs`): several hosts on one
//! machine, each a network namespace with its own containerd and agent. Spread, binpack and
//! distinctInstance with ECS's events; a health-checked rolling update sampled every 100 ms; a
//! controller restart in the middle of a deployment; new tasks failing their health checks
//! tripping the circuit breaker, which rolls back; DAEMON following a host joining and one
//! draining; draining moving a REPLICA service's tasks and leaving standalone ones; a host cut off, and
//! one killed -9, getting its tasks replaced after the grace, and the surplus stopped when it
//! returns. As root, on real containerd. Times are printed, never asserted tightly.

use berth_tests::lab::{Cut, Lab};
use berth_tests::{prerequisites, service_events as events, wait_for, IMAGE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

fn td(family: &str, extra: &str) -> String {
    format!(
        r#"{{"family": "{family}", "containerDefinitions": [{{"name": "app", "image": "{IMAGE}",
        "memory": 32, "stopTimeout": 2, "essential": true, "command": ["sleep", "3600"]{extra}}}]}}"#
    )
}

/// A container healthCheck running `check` (CMD-SHELL) every 5 s, UNHEALTHY at its first
/// failure: the `extra` of [`td`].
fn hc(check: &str) -> String {
    format!(
        r#", "healthCheck": {{"command": ["CMD-SHELL", "{check}"], "interval": 5, "timeout": 2, "retries": 1}}"#
    )
}

fn on(arn: &str, td: &str) -> bool {
    arn.ends_with(td)
}

fn service(lab: &Lab, name: &str) -> Value {
    lab.json(&[
        "describe-services",
        "--cluster",
        &lab.cluster.name,
        "--services",
        name,
    ])["services"][0]
        .clone()
}

/// The service's tasks (desired RUNNING unless `status` says otherwise).
fn tasks(lab: &Lab, name: &str) -> Vec<Value> {
    let v = lab.json(&[
        "list-tasks",
        "--cluster",
        &lab.cluster.name,
        "--service-name",
        name,
    ]);
    let arns: Vec<String> = v["taskArns"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for chunk in arns.chunks(100) {
        let mut args = vec!["describe-tasks", "--cluster", &lab.cluster.name, "--tasks"];
        args.extend(chunk.iter().map(String::as_str));
        out.extend(
            lab.json(&args)["tasks"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
    }
    out
}

/// Tasks per host index.
fn per_host(lab: &Lab, ts: &[Value]) -> BTreeMap<usize, usize> {
    let mut m = BTreeMap::new();
    for t in ts {
        let h = lab
            .host_of_task(t)
            .unwrap_or_else(|| panic!("a task on no host: {t}"));
        *m.entry(h).or_default() += 1;
    }
    m
}

fn wait_stable(lab: &Lab, name: &str) {
    let out = lab.berth(&[
        "wait",
        "services-stable",
        "--cluster",
        &lab.cluster.name,
        "--services",
        name,
    ]);
    assert!(
        out.status.success(),
        "wait services-stable {name}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        service(lab, name)
    );
}

fn create(lab: &Lab, name: &str, td: &str, desired: Option<u32>, extra: &[&str]) -> Value {
    let n = desired.map(|d| d.to_string());
    let mut args = vec![
        "create-service",
        "--cluster",
        &lab.cluster.name,
        "--service-name",
        name,
        "--task-definition",
        td,
    ];
    if let Some(n) = &n {
        args.extend(["--desired-count", n.as_str()]);
    }
    args.extend_from_slice(extra);
    lab.json(&args)["service"].clone()
}

fn delete(lab: &Lab, name: &str) {
    lab.json(&[
        "delete-service",
        "--cluster",
        &lab.cluster.name,
        "--service",
        name,
        "--force",
    ]);
    let out = lab.berth(&[
        "wait",
        "services-inactive",
        "--cluster",
        &lab.cluster.name,
        "--services",
        name,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the deleted service's tasks stopped", T, || {
        tasks(lab, name).is_empty().then_some(())
    });
}

fn registered_memory(lab: &Lab) -> i64 {
    lab.instances()
        .iter()
        .filter_map(|ci| {
            ci["registeredResources"]
                .as_array()?
                .iter()
                .find(|r| r["name"] == "MEMORY")?["integerValue"]
                .as_i64()
        })
        .min()
        .unwrap_or(0)
}

#[test]
fn placement_on_three_hosts_distinct_spread_binpack_a_rolling_update_and_a_controller_restart() {
    if !prerequisites() {
        return;
    }
    // (A short restart delay: the failing tasks of the breaker's deployment are not throttled
    // for long.)
    let mut lab = Lab::start_with("lab-place", 3, &["--service-restart-delay", "1"], &[]);
    let small = lab.register(&td("lab-svc", ""));

    // distinctInstance, 4 tasks on 3 hosts: 3 placed, the fourth named in an event.
    create(
        &lab,
        "distinct",
        &small,
        Some(4),
        &["--placement-constraints", "type=distinctInstance"],
    );
    let s = wait_for(
        "3 of 4 distinct tasks RUNNING and an event for the fourth",
        T,
        || {
            let ts = tasks(&lab, "distinct");
            let s = service(&lab, "distinct");
            let ev = events(&s);
            (ts.iter().filter(|t| t["lastStatus"] == "RUNNING").count() == 3
                && ev.iter().any(|e| e.contains("was unable to place a task")))
            .then_some(s)
        },
    );
    let ts = tasks(&lab, "distinct");
    assert_eq!(per_host(&lab, &ts).len(), 3, "one per host");
    let ev = events(&s);
    let e = ev
        .iter()
        .find(|e| e.contains("was unable to place a task"))
        .cloned()
        .unwrap_or_default();
    assert!(
        e.starts_with("(service distinct) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance ")
            && e.contains("DistinctInstance placement constraint unsatisfied."),
        "{e}"
    );
    assert_eq!(s["runningCount"], 3);
    delete(&lab, "distinct");

    // A service of 6 spread by instanceId, its tasks health-checked, with the circuit
    // breaker: 2 per host.
    let v1 = lab.register(&td("lab-roll", &hc("true")));
    create(
        &lab,
        "spread",
        &v1,
        Some(6),
        &[
            "--placement-strategy",
            "type=spread,field=instanceId",
            "--health-check-grace-period-seconds",
            "0",
            "--deployment-configuration",
            "deploymentCircuitBreaker={enable=true,rollback=true},maximumPercent=200,minimumHealthyPercent=100",
        ],
    );
    wait_stable(&lab, "spread");
    // (services-stable, botocore's, looks at runningCount only.)
    wait_for("6 tasks HEALTHY", T, || {
        let ts = tasks(&lab, "spread");
        (ts.len() == 6 && ts.iter().all(|t| t["healthStatus"] == "HEALTHY")).then_some(())
    });
    let ts = tasks(&lab, "spread");
    let m = per_host(&lab, &ts);
    assert!(m.len() == 3 && m.values().all(|&n| n == 2), "{m:?}");
    let s = service(&lab, "spread");
    assert!(events(&s)
        .iter()
        .any(|e| e.starts_with("(service spread) has started 6 tasks: (task ")));

    // binpack on memory: tasks reserving just under half a host's memory fill one host first.
    let half = registered_memory(&lab) / 2 - 64;
    let big = lab.register(&format!(
        r#"{{"family": "lab-big", "containerDefinitions": [{{"name": "app", "image": "{IMAGE}",
        "memoryReservation": {half}, "stopTimeout": 2, "command": ["sleep", "3600"]}}]}}"#
    ));
    create(
        &lab,
        "pack",
        &big,
        Some(3),
        &["--placement-strategy", "type=binpack,field=memory"],
    );
    wait_stable(&lab, "pack");
    let mut counts: Vec<usize> = per_host(&lab, &tasks(&lab, "pack")).into_values().collect();
    counts.sort();
    assert_eq!(
        counts,
        vec![1, 2],
        "two fill one host, the third goes to the next"
    );
    // A fourth fills that next host; a fifth finds no host with the memory: ECS's reason.
    lab.json(&[
        "update-service",
        "--cluster",
        &lab.cluster.name,
        "--service",
        "pack",
        "--desired-count",
        "7",
    ]);
    let s = wait_for("the insufficient-memory event", T, || {
        let s = service(&lab, "pack");
        events(&s)
            .iter()
            .any(|e| e.ends_with("has insufficient memory available."))
            .then_some(s)
    });
    let e = events(&s)
        .into_iter()
        .find(|e| e.ends_with("has insufficient memory available."))
        .unwrap_or_default();
    assert!(
        e.starts_with("(service pack) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance "),
        "{e}"
    );
    delete(&lab, "pack");

    // A rolling update of the spread service at 100/200, sampled every 100 ms: never fewer
    // than 6 RUNNING and HEALTHY, never more than 12 desired RUNNING.
    let v2 = lab.register(&td(
        "lab-roll",
        &format!(
            r#", "environment": [{{"name": "V", "value": "2"}}]{}"#,
            hc("true")
        ),
    ));
    update_td(&lab, "spread", &v2);
    let seen = lab
        .cluster
        .sample_service("spread", Duration::from_millis(100), T, |ts| {
            done_on(ts, &v2)
        });
    println!("lab rolling update of 6 at 100/200: {seen:?}");
    assert!(
        seen.fewest_healthy >= 6,
        "fewer than desiredCount (6) RUNNING and HEALTHY: {seen:?}"
    );
    assert!(
        seen.most_live <= 12,
        "more than maximumPercent (12): {seen:?}"
    );
    assert_eq!(seen.failed, 0, "samples lost: {seen:?}");
    // New tasks prove their health (a check every 5 s) before old ones go: seconds at least.
    assert!(seen.samples >= 20, "too few samples to tell: {seen:?}");
    wait_stable(&lab, "spread");
    // (Placed while the old tasks still counted, the new ones need not be 2 per host.)
    println!(
        "after the update, tasks per host: {:?}",
        per_host(&lab, &tasks(&lab, "spread"))
    );

    // A controller restart in the middle of a deployment carries it on: killed once the
    // deployment is visibly under way (a new task RUNNING beside old ones still live).
    let v3 = lab.register(&td(
        "lab-roll",
        &format!(
            r#", "environment": [{{"name": "V", "value": "3"}}]{}"#,
            hc("true")
        ),
    ));
    update_td(&lab, "spread", &v3);
    let (new, old) = wait_for("the v3 deployment under way", T, || {
        let s = service(&lab, "spread");
        let ts = tasks(&lab, "spread");
        let arn = |t: &Value| {
            t["taskDefinitionArn"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        };
        let new = ts
            .iter()
            .filter(|t| on(&arn(t), &v3) && t["lastStatus"] == "RUNNING")
            .count();
        let old = ts.iter().filter(|t| !on(&arn(t), &v3)).count();
        (s["deployments"].as_array().map(Vec::len) == Some(2) && new >= 1 && old >= 1)
            .then_some((new, old))
    });
    println!("controller killed with {new} new task(s) RUNNING and {old} old one(s) live");
    lab.kill_controller();
    lab.start_controller();
    for i in 0..3 {
        lab.wait_agent_connected(i, true, T);
    }
    let seen = lab
        .cluster
        .sample_service("spread", Duration::from_millis(100), T, |ts| {
            done_on(ts, &v3)
        });
    println!("deployment after the controller restart: {seen:?}");
    assert!(
        seen.fewest_running >= 6,
        "fewer than desiredCount (6) RUNNING after the restart: {seen:?}"
    );
    assert!(
        seen.most_live <= 12,
        "more than maximumPercent (12) after the restart: {seen:?}"
    );
    assert_eq!(seen.failed, 0, "samples lost: {seen:?}");
    wait_for("the deployment to finish after the restart", T, || {
        let s = service(&lab, "spread");
        (s["deployments"].as_array().map(Vec::len) == Some(1)
            && s["deployments"][0]["rolloutState"] == "COMPLETED"
            && s["taskDefinition"].as_str().is_some_and(|a| on(a, &v3)))
        .then_some(())
    });
    let ts = tasks(&lab, "spread");
    assert_eq!(ts.len(), 6);
    assert!(ts
        .iter()
        .all(|t| t["taskDefinitionArn"].as_str().is_some_and(|a| on(a, &v3))));

    // New tasks failing their health checks trip the breaker, which rolls back to v3 (the
    // deployment completed after the restart); at 100 % minimum healthy the 6 HEALTHY v3
    // tasks stay throughout.
    let v4 = lab.register(&td("lab-roll", &hc("false")));
    let s = update_td(&lab, "spread", &v4);
    let bad = s["deployments"]
        .as_array()
        .and_then(|ds| ds.iter().find(|d| d["status"] == "PRIMARY"))
        .and_then(|d| d["id"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(!bad.is_empty(), "the v4 deployment: {s}");
    let t0 = Instant::now();
    let (mut tried, mut rolling_back, mut polls, mut tripped) = (false, false, 0usize, None);
    let seen = lab
        .cluster
        .sample_service("spread", Duration::from_millis(100), T, |ts| {
            tried |= ts.iter().any(|t| on(&t.task_definition_arn, &v4));
            // Once the v4 tasks are gone (the breaker tripped), DescribeServices over the CLI
            // at once, then every 5th sample (so as not to slow the sampler) until the
            // rollback completes.
            if !(tried && done_on(ts, &v3)) {
                return false;
            }
            tripped.get_or_insert_with(|| t0.elapsed());
            polls += 1;
            if polls % 5 != 1 {
                return false;
            }
            let s = service(&lab, "spread");
            let ds = s["deployments"].as_array().cloned().unwrap_or_default();
            // (The FAILED v4 deployment leaves in the pass that trips the breaker, its tasks
            // stopped: its FAILED is seen in the events below. The rollback deployment says
            // why it is there until it completes.)
            rolling_back |= ds.iter().any(|d| {
                d["status"] == "PRIMARY"
                    && d["rolloutState"] == "IN_PROGRESS"
                    && d["taskDefinition"].as_str().is_some_and(|a| on(a, &v3))
                    && d["rolloutStateReason"].as_str().is_some_and(|r| {
                        r.starts_with("ECS deployment circuit breaker: rolling back to")
                    })
            });
            ds.len() == 1
                && ds[0]["rolloutState"] == "COMPLETED"
                && ds[0]["taskDefinition"].as_str().is_some_and(|a| on(a, &v3))
        });
    println!(
        "breaker: tripped after {tripped:?}, the rollback COMPLETED after {:?}; {seen:?}",
        t0.elapsed()
    );
    assert!(
        rolling_back,
        "no rollback deployment (PRIMARY, IN_PROGRESS, on v3, the breaker's reason) seen"
    );
    assert!(
        seen.fewest_healthy >= 6,
        "fewer than desiredCount (6) RUNNING and HEALTHY during the failed deployment and its rollback: {seen:?}"
    );
    assert!(
        seen.most_live <= 12,
        "more than maximumPercent (12): {seen:?}"
    );
    assert_eq!(seen.failed, 0, "samples lost: {seen:?}");
    let s = service(&lab, "spread");
    let ev = events(&s);
    assert!(
        ev.iter().any(|e| e.contains(&format!(
            "(deployment {bad}) deployment failed: tasks failed to start."
        ))),
        "no breaker event for deployment {bad}: {ev:?}"
    );
    assert!(
        ev.iter()
            .any(|e| e.contains("rolling back to") && e.contains(v3.as_str())),
        "no rolling-back event to {v3}: {ev:?}"
    );
    let failed_checks = ev
        .iter()
        .filter(|e| e.contains("failed container health checks."))
        .count();
    assert!(
        failed_checks >= 3,
        "{failed_checks} tasks failed their health checks (the threshold is 3): {ev:?}"
    );
    assert!(
        s["taskDefinition"].as_str().is_some_and(|a| on(a, &v3)),
        "{s}"
    );
    assert_eq!(
        s["deployments"][0]["taskDefinition"]
            .as_str()
            .map(|a| on(a, &v3)),
        Some(true),
        "{s}"
    );
    let ts = tasks(&lab, "spread");
    let m = per_host(&lab, &ts);
    assert!(
        ts.len() == 6
            && ts.iter().all(|t| t["healthStatus"] == "HEALTHY"
                && t["taskDefinitionArn"].as_str().is_some_and(|a| on(a, &v3))),
        "after the rollback: {:?}",
        ts.iter()
            .map(|t| (
                &t["taskDefinitionArn"],
                &t["lastStatus"],
                &t["healthStatus"]
            ))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        m.len(),
        3,
        "the rolled-back tasks spread over the 3 hosts: {m:?}"
    );
}

/// UpdateService to task definition `td`: the service.
fn update_td(lab: &Lab, name: &str, td: &str) -> Value {
    lab.json(&[
        "update-service",
        "--cluster",
        &lab.cluster.name,
        "--service",
        name,
        "--task-definition",
        td,
    ])["service"]
        .clone()
}

/// Whether a sample shows the service done on `td`: 6 tasks, all RUNNING and HEALTHY on it.
fn done_on(ts: &[berth_proto::v1::Task], td: &str) -> bool {
    ts.len() == 6
        && ts.iter().all(|t| {
            t.last_status == "RUNNING"
                && t.health_status == "HEALTHY"
                && on(&t.task_definition_arn, td)
        })
}

#[test]
fn a_daemon_follows_a_host_joining_and_one_draining_which_moves_replica_tasks_only() {
    if !prerequisites() {
        return;
    }
    let mut lab = Lab::start("lab-daemon", 3);
    let small = lab.register(&td("lab-dm", ""));
    let standalone = lab.json(&[
        "start-task",
        "--cluster",
        &lab.cluster.name,
        "--task-definition",
        &small,
        "--container-instances",
        &lab.host_instance_arn(0),
    ])["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    lab.wait_status(&standalone, "RUNNING", T);
    create(
        &lab,
        "dm",
        &small,
        None,
        &["--scheduling-strategy", "DAEMON"],
    );
    wait_stable(&lab, "dm");
    let m = per_host(&lab, &tasks(&lab, "dm"));
    assert!(m.len() == 3 && m.values().all(|&n| n == 1), "{m:?}");
    create(
        &lab,
        "rep",
        &small,
        Some(3),
        &["--placement-strategy", "type=spread,field=instanceId"],
    );
    wait_stable(&lab, "rep");
    // A fourth host joins: the daemon follows.
    let t0 = Instant::now();
    let h3 = lab.add_host();
    wait_for("a daemon task on the new host", T, || {
        let ts = tasks(&lab, "dm");
        (ts.len() == 4
            && ts.iter().all(|t| t["lastStatus"] == "RUNNING")
            && per_host(&lab, &ts).contains_key(&h3))
        .then_some(())
    });
    println!(
        "daemon task on a joining host RUNNING {:?} after it joined",
        t0.elapsed()
    );
    assert_eq!(service(&lab, "dm")["desiredCount"], 4);
    // Host 0 drains: its daemon task stops, the REPLICA task moves, the standalone one stays.
    lab.json(&[
        "update-container-instances-state",
        "--cluster",
        &lab.cluster.name,
        "--container-instances",
        &lab.host_instance_arn(0),
        "--status",
        "DRAINING",
    ]);
    let t0 = Instant::now();
    wait_for("host 0 drained of service tasks", T, || {
        let dm = tasks(&lab, "dm");
        let rep = tasks(&lab, "rep");
        let off = |ts: &[Value]| !per_host(&lab, ts).contains_key(&0);
        (off(&dm)
            && off(&rep)
            && dm.len() == 3
            && rep.len() == 3
            && rep.iter().all(|t| t["lastStatus"] == "RUNNING"))
        .then_some(())
    });
    println!("host 0 drained of service tasks in {:?}", t0.elapsed());
    wait_stable(&lab, "dm");
    wait_stable(&lab, "rep");
    assert_eq!(service(&lab, "dm")["desiredCount"], 3);
    assert_eq!(
        lab.task(&standalone)["lastStatus"],
        "RUNNING",
        "standalone tasks stay"
    );
    let ci = lab.instance(0);
    assert_eq!(ci["status"], "DRAINING");
}

#[test]
fn a_host_cut_off_or_killed_gets_its_tasks_replaced_after_the_grace_and_the_surplus_stops_when_it_returns(
) {
    if !prerequisites() {
        return;
    }
    let grace = 10;
    let g = grace.to_string();
    let mut lab = Lab::start_with("lab-heal", 3, &["--service-disconnect-grace", &g], &[]);
    let small = lab.register(&td("lab-heal", ""));
    create(
        &lab,
        "heal",
        &small,
        Some(3),
        &["--placement-strategy", "type=spread,field=instanceId"],
    );
    wait_stable(&lab, "heal");
    for (case, victim) in [
        ("cut off (link down)", 0usize),
        ("kill -9 of agent and containerd", 1),
    ] {
        let on_victim: Vec<Value> = tasks(&lab, "heal")
            .into_iter()
            .filter(|t| lab.host_of_task(t) == Some(victim))
            .collect();
        assert!(!on_victim.is_empty(), "{case}: a task on host {victim}");
        // (task ARN, containerd id) of each.
        let victims: Vec<(String, String)> = on_victim
            .iter()
            .map(|t| {
                (
                    t["taskArn"].as_str().unwrap_or_default().to_string(),
                    t["containers"][0]["runtimeId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                )
            })
            .collect();
        let t0 = Instant::now();
        if victim == 0 {
            lab.cut_off(victim, Cut::Link);
        } else {
            lab.kill9(victim);
        }
        let gone = lab.wait_agent_connected(victim, false, Duration::from_secs(60));
        println!("{case}: agentConnected=false after {gone:?}");
        let healed = wait_for("3 service tasks RUNNING on the other hosts", T, || {
            let ts = tasks(&lab, "heal");
            (ts.len() == 3
                && ts.iter().all(|t| t["lastStatus"] == "RUNNING")
                && !per_host(&lab, &ts).contains_key(&victim))
            .then_some(t0.elapsed())
        });
        println!("{case}: replaced and RUNNING {healed:?} after the cut (grace {grace} s)");
        assert!(
            healed >= Duration::from_secs(grace),
            "replaced before the grace"
        );
        for (arn, runtime) in &victims {
            let t = lab.task(arn);
            assert_eq!(t["desiredStatus"], "STOPPED");
            assert_eq!(t["stopCode"], "ServiceSchedulerInitiated");
            if victim == 0 {
                // Cut off, its container still runs beside its replacement.
                assert_eq!(
                    lab.host_task_status(victim, runtime).as_deref(),
                    Some("RUNNING")
                );
            }
        }
        // It returns: runningCount, sampled every 100 ms from before it returns until the
        // surplus has stopped, never exceeds maximumPercent (200 % of 3), and the surplus stops.
        let watch = lab
            .cluster
            .watch_running_count("heal", Duration::from_millis(100));
        let back = Instant::now();
        if victim == 0 {
            lab.reconnect(victim);
        } else {
            lab.restart(victim);
        }
        lab.wait_agent_connected(victim, true, T);
        let stopped = wait_for("the surplus task stopped on the returned host", T, || {
            let done = victims.iter().all(|(arn, runtime)| {
                lab.task(arn)["lastStatus"] == "STOPPED"
                    && lab.host_task_status(victim, runtime).as_deref() != Some("RUNNING")
            });
            done.then_some(back.elapsed())
        });
        // A little more of the window, so a count that rose late is seen too.
        wait_for("runningCount 3 after the surplus stopped", T, || {
            (service(&lab, "heal")["runningCount"] == 3).then_some(())
        });
        let seen = watch.stop();
        println!(
            "{case}: surplus stopped {stopped:?} after the host returned; runningCount {seen:?}"
        );
        assert!(
            seen.most <= 6,
            "runningCount above maximumPercent (6): {seen:?}"
        );
        assert_eq!(seen.failed, 0, "samples lost: {seen:?}");
        assert!(
            seen.samples >= 5,
            "too few samples over the host's return: {seen:?}"
        );
        wait_stable(&lab, "heal");
        assert_eq!(service(&lab, "heal")["runningCount"], 3);
    }
}
