//! The lab (issue 12): several hosts on one machine, each a network namespace with its own
//! containerd and agent, joined to one controller over the lab's bridge with TLS and signed
//! calls. Placement spreads over them, a host cut off or killed -9 comes back with its task,
//! a host joins later, and dropping the lab leaves nothing behind. As root, on real containerd.

use berth_tests::lab::{Cut, Lab};
use berth_tests::{prerequisites, wait_for, IMAGE};
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// A bridge-mode web server publishing port 80 on a dynamic host port.
fn web_td() -> String {
    format!(
        r#"{{"family":"lab-web","networkMode":"bridge","containerDefinitions":[{{"name":"web",
        "image":"{IMAGE}","memory":32,"stopTimeout":2,"command":["httpd","-f","-p","80","-h","/www"],
        "portMappings":[{{"containerPort":80,"hostPort":0,"protocol":"tcp"}}]}}]}}"#
    )
}

fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains("Hello from Berth").then_some(body)
}

/// Runs `count` web tasks spread over the instances; returns their ARNs.
fn run_spread(lab: &Lab, td: &str, count: usize) -> Vec<String> {
    let n = count.to_string();
    let v = lab.json(&[
        "run-task",
        "--cluster",
        &lab.cluster.name,
        "--task-definition",
        td,
        "--count",
        &n,
        "--placement-strategy",
        "type=spread,field=instanceId",
    ]);
    assert_eq!(v["failures"].as_array().map_or(0, Vec::len), 0, "{v}");
    let arns: Vec<String> = v["tasks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["taskArn"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(arns.len(), count, "{v}");
    arns
}

/// The task's container's runtimeId (its containerd ID).
fn runtime_id(t: &Value) -> String {
    t["containers"][0]["runtimeId"]
        .as_str()
        .unwrap_or_else(|| panic!("no runtimeId: {t}"))
        .to_string()
}

/// Waits until each task is RUNNING; returns, per task, its host and its task.
fn running_on_hosts(lab: &Lab, arns: &[String]) -> Vec<(usize, Value)> {
    arns.iter()
        .map(|arn| {
            let t = lab.wait_status(arn, "RUNNING", T);
            let host = lab
                .host_of_task(&t)
                .unwrap_or_else(|| panic!("task on an instance of no host: {t}"));
            (host, t)
        })
        .collect()
}

#[test]
fn three_hosts_take_one_spread_task_each_in_their_own_containerd_across_a_controller_restart() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("lab-spread", 3);
    eprintln!("3 hosts joined in {:?}", started.elapsed());
    let instances = lab.instances();
    assert_eq!(instances.len(), 3, "{instances:?}");
    for (i, h) in lab.hosts().iter().enumerate() {
        let ci = lab.instance(i);
        assert_eq!(ci["status"], "ACTIVE", "host {i}: {ci}");
        assert_eq!(ci["agentConnected"], true, "host {i}: {ci}");
        // Each host is its own machine to the controller: its hostname, its zone.
        assert_eq!(ci["ec2InstanceId"], h.name.as_str(), "host {i}: {ci}");
        let zone = ci["attributes"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == "ecs.availability-zone"))
            .map(|x| x["value"].clone());
        assert_eq!(
            zone,
            Some(Value::from(h.availability_zone.as_str())),
            "{ci}"
        );
    }

    let td = lab.register(&web_td());
    let arns = run_spread(&lab, &td, 3);
    let placed = running_on_hosts(&lab, &arns);
    let hosts: BTreeSet<usize> = placed.iter().map(|(h, _)| *h).collect();
    assert_eq!(hosts, BTreeSet::from([0, 1, 2]), "one task per host");
    for (h, t) in &placed {
        let id = runtime_id(t);
        // The container runs in that host's containerd, and in no other's.
        for other in 0..3 {
            let status = lab.host_task_status(other, &id);
            if other == *h {
                assert_eq!(status.as_deref(), Some("RUNNING"), "host {h}: {t}");
            } else {
                assert_eq!(
                    status, None,
                    "task of host {h} in host {other}'s containerd"
                );
            }
        }
        // Bridge mode inside a host: its published port answers on the host's lab address.
        let port = t["containers"][0]["networkBindings"][0]["hostPort"]
            .as_u64()
            .unwrap_or_else(|| panic!("no host port: {t}")) as u16;
        let addr = SocketAddr::from((lab.host(*h).address, port));
        wait_for(&format!("the web page on host {h} at {addr}"), T, || {
            http_get(addr)
        });
    }
    // A controller restart on the same store: every host comes back to its instance, every
    // task is still RUNNING.
    let t0 = Instant::now();
    lab.kill_controller();
    lab.start_controller();
    for i in 0..3 {
        lab.wait_agent_connected(i, true, T);
    }
    eprintln!(
        "controller restarted: 3 hosts connected again {:?} after",
        t0.elapsed()
    );
    assert_eq!(
        lab.instances().len(),
        3,
        "an instance more or less after the restart"
    );
    for (h, t) in &placed {
        let arn = t["taskArn"].as_str().unwrap_or_default();
        assert_eq!(lab.task(arn)["lastStatus"], "RUNNING", "host {h}'s task");
    }
    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn a_host_cut_off_frozen_or_killed_comes_back_with_its_task() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("lab-cut", 4);
    let td = lab.register(&web_td());
    let arns = run_spread(&lab, &td, 4);
    let placed = running_on_hosts(&lab, &arns);
    let task_of = |h: usize| -> Value {
        placed
            .iter()
            .find(|(x, _)| *x == h)
            .map(|(_, t)| t.clone())
            .unwrap_or_else(|| panic!("no task on host {h}: {placed:?}"))
    };

    // Host 0 loses its link, host 1 is firewalled, host 2 freezes: each shows disconnected.
    let t0 = Instant::now();
    lab.cut_off(0, Cut::Link);
    lab.cut_off(1, Cut::Firewall);
    lab.freeze(2);
    for (i, how) in [(0, "link down"), (1, "firewall"), (2, "frozen")] {
        lab.wait_agent_connected(i, false, Duration::from_secs(60));
        eprintln!(
            "host {i} ({how}): agentConnected=false {:?} after the cut",
            t0.elapsed()
        );
    }
    // The other host is unaffected.
    assert_eq!(lab.instance(3)["agentConnected"], true);

    let t1 = Instant::now();
    lab.reconnect(0);
    lab.reconnect(1);
    lab.thaw(2);
    for i in [0, 1, 2] {
        lab.wait_agent_connected(i, true, T);
        eprintln!("host {i}: connected again {:?} after", t1.elapsed());
    }
    for i in [0, 1, 2] {
        let t = task_of(i);
        let arn = t["taskArn"].as_str().unwrap_or_default();
        assert_eq!(
            lab.task(arn)["lastStatus"],
            "RUNNING",
            "host {i}'s task was lost"
        );
        assert_eq!(
            lab.host_task_status(i, &runtime_id(&t)).as_deref(),
            Some("RUNNING"),
            "host {i}'s container"
        );
    }

    // Host 3: agent and containerd killed -9, then started again.
    let t = task_of(3);
    let arn = t["taskArn"].as_str().unwrap_or_default().to_string();
    let t2 = Instant::now();
    lab.kill9(3);
    let d = lab.wait_agent_connected(3, false, Duration::from_secs(60));
    eprintln!("host 3 killed -9: agentConnected=false after {d:?}");
    lab.restart(3);
    lab.wait_agent_connected(3, true, T);
    eprintln!(
        "host 3 restarted: connected again {:?} after the kill",
        t2.elapsed()
    );
    let after = lab.task(&arn);
    match after["lastStatus"].as_str() {
        Some("RUNNING") => {
            eprintln!("host 3's task: RUNNING (re-adopted)");
            assert_eq!(
                lab.host_task_status(3, &runtime_id(&t)).as_deref(),
                Some("RUNNING"),
                "RUNNING in the controller but not in host 3's containerd"
            );
            // The restarted agent manages it: stop-task reaches the container.
            lab.ok(&["stop-task", "--cluster", &lab.cluster.name, "--task", &arn]);
            lab.wait_status(&arn, "STOPPED", T);
            wait_for("host 3's container to go", T, || {
                lab.host_task_status(3, &runtime_id(&t))
                    .is_none()
                    .then_some(())
            });
        }
        Some("STOPPED") => eprintln!(
            "host 3's task: STOPPED ({})",
            after["stoppedReason"].as_str().unwrap_or_default()
        ),
        other => panic!("host 3's task after its restart: {other:?}: {after}"),
    }
    eprintln!("test done in {:?}", started.elapsed());
}

#[test]
fn a_host_joins_later_runs_awsvpc_and_the_lab_leaves_nothing_behind() {
    if !prerequisites() {
        return;
    }
    let started = Instant::now();
    let mut lab = Lab::start("lab-join", 3);
    let i = lab.add_host();
    assert_eq!(i, 3);
    let ci = lab.instance(i);
    assert_eq!(ci["status"], "ACTIVE", "{ci}");
    assert_eq!(ci["agentConnected"], true, "{ci}");
    assert_eq!(lab.instances().len(), 4);
    // An agent stopped as its service manager stops it is seen gone at once, and comes back.
    lab.stop_agent(1);
    let d = lab.wait_agent_connected(1, false, Duration::from_secs(60));
    eprintln!("host 1's agent stopped (SIGTERM): agentConnected=false after {d:?}");
    lab.start_agent(1);
    lab.wait_agent_connected(1, true, T);

    // An awsvpc task on the new host: its namespace and bridge are made inside the host.
    let td = lab.register(&format!(
        r#"{{"family":"lab-vpc","networkMode":"awsvpc","containerDefinitions":[{{"name":"web",
        "image":"{IMAGE}","memory":32,"stopTimeout":2,"command":["httpd","-f","-p","80","-h","/www"],
        "portMappings":[{{"containerPort":80}}]}}]}}"#
    ));
    let subnet = &lab.host(i).net.subnet;
    let arn_i = lab.host_instance_arn(i);
    let v = lab.json(&[
        "start-task",
        "--cluster",
        &lab.cluster.name,
        "--task-definition",
        &td,
        "--container-instances",
        &arn_i,
        "--network-configuration",
        &format!("awsvpcConfiguration={{subnets=[{subnet}]}}"),
    ]);
    let arn = v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("start-task placed nothing: {v}"))
        .to_string();
    let t = lab.wait_status(&arn, "RUNNING", T);
    assert_eq!(lab.host_of_task(&t), Some(i));
    assert_eq!(
        lab.host_task_status(i, &runtime_id(&t)).as_deref(),
        Some("RUNNING")
    );
    let eni = t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"]
        .as_str()
        .unwrap_or_else(|| panic!("no ENI address: {t}"))
        .to_string();
    let addr: SocketAddr = format!("{eni}:80").parse().expect("ENI address");
    // Its address is in the host's awsvpc subnet, and the server answers on it (asked from
    // the task's own namespace: no security group lets the host in).
    let net = &lab.host(i).net;
    let prefix = net.vpc_cidr.trim_end_matches("0/24");
    assert!(eni.starts_with(prefix), "{eni} outside {}", net.vpc_cidr);
    let task_ns = format!(
        "{}-{}",
        net.bridge,
        arn.rsplit('/').next().unwrap_or_default()
    );
    wait_for("the awsvpc task's page on its ENI address", T, || {
        berth_tests::http_get_in_netns(&task_ns, addr).filter(|b| b.contains("Hello from Berth"))
    });

    // A bridge task on host 0 too; then host 3 crashes (agent and containerd killed -9, its
    // task left running under its shim) and the lab is dropped with both tasks running:
    // nothing of it stays.
    let web = lab.register(&web_td());
    let arn_0 = lab.host_instance_arn(0);
    let v = lab.json(&[
        "start-task",
        "--cluster",
        &lab.cluster.name,
        "--task-definition",
        &web,
        "--container-instances",
        &arn_0,
    ]);
    let web_arn = v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("start-task placed nothing: {v}"))
        .to_string();
    lab.wait_status(&web_arn, "RUNNING", T);
    lab.kill9(i);
    let traces = lab.traces();
    assert!(
        !traces.leftovers().is_empty(),
        "the traces see nothing of a running lab"
    );
    let t0 = Instant::now();
    drop(lab);
    eprintln!("lab removed in {:?}", t0.elapsed());
    assert_eq!(traces.leftovers(), Vec::<String>::new(), "left behind");
    eprintln!("test done in {:?}", started.elapsed());
}
