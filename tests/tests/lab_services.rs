//! Issue 12's services on the multi-host lab (`tests/src/lab.rs`): several hosts on one
//! machine, each a network namespace with its own containerd and agent. Spread, binpack and
//! distinctInstance with ECS's events; a rolling update sampled every 100 ms; a controller
//! restart in the middle of a deployment; DAEMON following a host joining and one draining;
//! draining moving a REPLICA service's tasks and leaving standalone ones; a host cut off, and
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
    let mut lab = Lab::start("lab-place", 3);
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

    // A service of 6 spread by instanceId: 2 per host.
    create(
        &lab,
        "spread",
        &small,
        Some(6),
        &["--placement-strategy", "type=spread,field=instanceId"],
    );
    wait_stable(&lab, "spread");
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
    // than 6 RUNNING, never more than 12 desired RUNNING.
    let v2 = lab.register(&td(
        "lab-svc",
        r#", "environment": [{"name": "V", "value": "2"}]"#,
    ));
    lab.json(&[
        "update-service",
        "--cluster",
        &lab.cluster.name,
        "--service",
        "spread",
        "--task-definition",
        &v2,
    ]);
    let v2_arn = v2.clone();
    let seen = lab
        .cluster
        .sample_service("spread", Duration::from_millis(100), T, |ts| {
            ts.len() == 6
                && ts
                    .iter()
                    .all(|t| t.last_status == "RUNNING" && t.task_definition_arn.ends_with(&v2_arn))
        });
    println!("lab rolling update of 6 at 100/200: {seen:?}");
    assert!(
        seen.fewest_running >= 6,
        "fewer than desiredCount RUNNING: {seen:?}"
    );
    assert!(seen.most_live <= 12, "more than maximumPercent: {seen:?}");
    wait_stable(&lab, "spread");
    // (Placed while the old tasks still counted, the new ones need not be 2 per host.)
    println!(
        "after the update, tasks per host: {:?}",
        per_host(&lab, &tasks(&lab, "spread"))
    );

    // A controller restart in the middle of a deployment carries it on.
    let v3 = lab.register(&td(
        "lab-svc",
        r#", "environment": [{"name": "V", "value": "3"}]"#,
    ));
    lab.json(&[
        "update-service",
        "--cluster",
        &lab.cluster.name,
        "--service",
        "spread",
        "--task-definition",
        &v3,
    ]);
    lab.kill_controller();
    lab.start_controller();
    for i in 0..3 {
        lab.wait_agent_connected(i, true, T);
    }
    wait_for("the deployment to finish after the restart", T, || {
        let s = service(&lab, "spread");
        (s["deployments"].as_array().map(Vec::len) == Some(1)
            && s["deployments"][0]["rolloutState"] == "COMPLETED"
            && s["taskDefinition"]
                .as_str()
                .is_some_and(|a| a.ends_with(&v3)))
        .then_some(())
    });
    let ts = tasks(&lab, "spread");
    assert_eq!(ts.len(), 6);
    assert!(ts.iter().all(|t| t["taskDefinitionArn"]
        .as_str()
        .is_some_and(|a| a.ends_with(&v3))));
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
        // It returns: runningCount never exceeds maximumPercent (sampled) and the surplus stops.
        let back = Instant::now();
        if victim == 0 {
            lab.reconnect(victim);
        } else {
            lab.restart(victim);
        }
        lab.wait_agent_connected(victim, true, T);
        let mut most = 0;
        let stopped = wait_for("the surplus task stopped on the returned host", T, || {
            let s = service(&lab, "heal");
            most = most.max(s["runningCount"].as_i64().unwrap_or(0));
            let done = victims.iter().all(|(arn, runtime)| {
                lab.task(arn)["lastStatus"] == "STOPPED"
                    && lab.host_task_status(victim, runtime).as_deref() != Some("RUNNING")
            });
            done.then_some(back.elapsed())
        });
        println!("{case}: surplus stopped {stopped:?} after the host returned; runningCount at most {most}");
        assert!(most <= 6, "runningCount above maximumPercent: {most}");
        wait_stable(&lab, "heal");
        assert_eq!(service(&lab, "heal")["runningCount"], 3);
    }
}
