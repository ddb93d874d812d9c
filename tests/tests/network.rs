//! Task networks on real containerd + runc, as root (issue 8): what each mode shows inside a
//! container, published ports from the host and from another "host" (a namespace the test
//! makes), dynamic ports, host-port conflicts at placement, security groups on a running task,
//! start/stop cycles that leave nothing behind, an agent kill -9, and the LAN backend on a veth
//! standing in for the LAN. Traffic goes only to loopback and to addresses inside namespaces and
//! bridges the test (or its agent) made; every test removes what it made.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A task definition with one container per (name, command, port mappings JSON).
fn td(family: &str, mode: Option<&str>, containers: &[(&str, &str, &str)]) -> String {
    let defs: Vec<String> = containers
        .iter()
        .enumerate()
        .map(|(i, (name, cmd, ports))| {
            format!(
                r#"{{"name":"{name}","image":"{IMAGE}","memory":64,"essential":{},"stopTimeout":2,
                   "command":["sh","-c",{}],"portMappings":{ports}}}"#,
                i == 0,
                serde_json::to_string(cmd).unwrap()
            )
        })
        .collect();
    let mode = mode.map_or(String::new(), |m| format!(r#""networkMode":"{m}","#));
    format!(
        r#"{{"family":"{family}",{mode}"containerDefinitions":[{}]}}"#,
        defs.join(",")
    )
}

/// `awsvpcConfiguration={subnets=[…],securityGroups=[…]}` for the test agent's subnet.
fn awsvpc(c: &Cluster, groups: &[&str]) -> String {
    let sg = if groups.is_empty() {
        String::new()
    } else {
        format!(",securityGroups=[{}]", groups.join(","))
    };
    format!("awsvpcConfiguration={{subnets=[{}]{sg}}}", c.net.subnet)
}

fn run(c: &Cluster, td: &str, extra: &[&str]) -> Value {
    let mut args = vec!["run-task", "--cluster", &c.name, "--task-definition", td];
    args.extend_from_slice(extra);
    c.json(&args)
}

fn run_one(c: &Cluster, td: &str, extra: &[&str]) -> String {
    let v = run(c, td, extra);
    v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("run-task placed no task: {v}"))
        .to_string()
}

fn stop(c: &Cluster, arn: &str) {
    c.ok(&["stop-task", "--cluster", &c.name, "--task", arn]);
}

/// The task's awsvpc address from its ENI attachment.
fn eni_address(t: &Value) -> Option<String> {
    t["attachments"]
        .as_array()?
        .iter()
        .find(|a| a["type"] == "ElasticNetworkInterface")?["details"]
        .as_array()?
        .iter()
        .find(|d| d["name"] == "privateIPv4Address")?["value"]
        .as_str()
        .map(str::to_string)
}

fn http_get(addr: SocketAddr) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    body.contains("Hello from Berth").then_some(body)
}

/// The web page at ADDR (ip:port) as seen from inside the namespace NS.
fn get_in(ns: &str, addr: &str) -> Option<String> {
    berth_tests::http_get_in_netns(ns, addr.parse().ok()?)
        .filter(|b| b.contains("Hello from Berth"))
}

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A namespace standing in for another host, joined to this host by a veth pair on a /30 the
/// test owns; removed on drop.
struct OtherHost {
    ns: String,
    host_link: String,
    /// This host's address on the pair (what the other host connects to).
    host_addr: String,
}

impl OtherHost {
    fn new(tag: &str, third: u32) -> Self {
        let ns = format!("berth-it-peer-{tag}");
        let host_link = format!("bpeer{tag}");
        let second = 64 + std::process::id() % 64;
        let host_addr = format!("10.{second}.{third}.1");
        let peer_addr = format!("10.{second}.{third}.2");
        let script = format!(
            "set -e; ip netns add {ns}; ip link add {host_link} type veth peer name eth0 netns {ns}; \
             ip addr add {host_addr}/30 dev {host_link}; ip link set {host_link} up; \
             ip -n {ns} addr add {peer_addr}/30 dev eth0; ip -n {ns} link set eth0 up; \
             ip -n {ns} link set lo up; ip -n {ns} route add default via {host_addr}"
        );
        let st = Command::new("sh").arg("-c").arg(&script).status().unwrap();
        let me = OtherHost {
            ns,
            host_link,
            host_addr,
        };
        assert!(st.success(), "making the other host failed: {script}");
        me
    }

    /// GET http://ADDR/ from the other host.
    fn get(&self, addr: &str) -> Option<String> {
        get_in(&self.ns, addr)
    }
}

impl Drop for OtherHost {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "delete", &self.host_link])
            .status();
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.ns])
            .status();
    }
}

#[test]
fn each_mode_shows_its_own_interfaces_routes_and_etc_files() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netmodes");
    let show = "ip -4 -o addr; echo ROUTES; ip route; echo HOSTS; cat /etc/hosts; echo RESOLV; cat /etc/resolv.conf; echo HOSTNAME; cat /etc/hostname; echo END; exec sleep 3600";
    let mut tasks = Vec::new();
    for mode in ["none", "host", "bridge", "awsvpc"] {
        let def = c.register(&td(
            &format!("show-{mode}"),
            Some(mode),
            &[("main", show, "[]")],
        ));
        let extra: Vec<String> = if mode == "awsvpc" {
            vec!["--network-configuration".into(), awsvpc(&c, &[])]
        } else {
            Vec::new()
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        tasks.push((mode, run_one(&c, &def, &extra)));
    }
    for (mode, arn) in &tasks {
        let t = c.wait_status(arn, "RUNNING", T);
        let log = wait_for(&format!("{mode} container's output"), T, || {
            let l = c.container_log(arn, "main");
            l.contains("END").then_some(l)
        });
        let (addrs, rest) = log.split_once("ROUTES").unwrap();
        let (routes, _) = rest.split_once("HOSTS").unwrap();
        let eth0 = addrs
            .lines()
            .find(|l| l.contains(" eth0 "))
            .map(|l| l.to_string());
        match *mode {
            "none" => {
                assert!(addrs.contains("127.0.0.1"), "{log}");
                assert_eq!(addrs.lines().count(), 1, "none: loopback only: {log}");
                assert!(routes.trim().is_empty(), "none: no routes: {log}");
            }
            "host" => {
                // The host's own interfaces and routes: loopback, the address of the interface
                // of the host's default route, and that route (other tests add bridges while
                // this one runs: only these are stable).
                assert!(addrs.contains("inet 127.0.0.1/8"), "{log}");
                let default = sh("ip route show default");
                let words: Vec<&str> = default.split_whitespace().collect();
                let dev = words.iter().position(|w| *w == "dev").map(|i| words[i + 1]);
                if let Some(dev) = dev {
                    let own = sh(&format!("ip -4 -o addr show dev {dev}"));
                    let inet = own.split_whitespace().skip_while(|w| *w != "inet").nth(1);
                    if let Some(a) = inet {
                        assert!(addrs.contains(a), "host mode shows the host's {a}: {log}");
                    }
                    assert!(
                        routes
                            .lines()
                            .any(|l| l.starts_with("default") && l.contains(dev)),
                        "host mode has the host's default route: {log}"
                    );
                }
            }
            "bridge" => {
                let prefix = c.net.bridge_cidr.rsplit_once('.').unwrap().0;
                let eth0 = eth0.unwrap_or_else(|| panic!("bridge: no eth0: {log}"));
                assert!(eth0.contains(&format!("inet {prefix}.")), "{log}");
                assert!(routes.contains(&format!("default via {prefix}.1")), "{log}");
                let b = &t["containers"][0]["networkBindings"];
                assert!(
                    b.as_array().is_some_and(|a| a.is_empty()),
                    "no ports, no bindings: {t}"
                );
            }
            "awsvpc" => {
                let prefix = c.net.vpc_cidr.rsplit_once('.').unwrap().0;
                let eth0 = eth0.unwrap_or_else(|| panic!("awsvpc: no eth0: {log}"));
                assert!(eth0.contains(&format!("inet {prefix}.")), "{log}");
                assert!(routes.contains(&format!("default via {prefix}.1")), "{log}");
                let ip = eni_address(&t).unwrap_or_else(|| panic!("no ENI address: {t}"));
                assert!(eth0.contains(&format!("inet {ip}/")), "ENI {ip} vs {eth0}");
                let a = &t["attachments"][0];
                assert_eq!(a["type"], "ElasticNetworkInterface", "{t}");
                assert_eq!(a["status"], "ATTACHED", "{t}");
                assert_eq!(
                    t["containers"][0]["networkInterfaces"][0]["privateIpv4Address"], ip,
                    "{t}"
                );
                let hosts = log.split_once("HOSTS").unwrap().1;
                assert!(
                    hosts.contains(&ip),
                    "/etc/hosts names the task's address: {log}"
                );
            }
            _ => unreachable!(),
        }
        assert!(
            log.contains("localhost"),
            "{mode}: /etc/hosts has localhost: {log}"
        );
    }
    for (_, arn) in &tasks {
        stop(&c, arn);
    }
    for (_, arn) in &tasks {
        c.wait_status(arn, "STOPPED", T);
    }
}

#[test]
fn awsvpc_containers_reach_each_other_on_localhost() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netlocal");
    let def = c.register(&td(
        "pair",
        Some("awsvpc"),
        &[
            ("web", "exec httpd -f -p 8080 -h /www", "[]"),
            (
                "client",
                "until wget -q -O- http://127.0.0.1:8080/; do usleep 100000; done",
                "[]",
            ),
        ],
    ));
    let arn = run_one(&c, &def, &["--network-configuration", &awsvpc(&c, &[])]);
    wait_for("the client to fetch the page over localhost", T, || {
        let t = c.task(&arn);
        let client = t["containers"]
            .as_array()?
            .iter()
            .find(|x| x["name"] == "client")?
            .clone();
        (client["lastStatus"] == "STOPPED").then_some(())?;
        assert_eq!(client["exitCode"], 0, "{t}");
        Some(())
    });
    assert!(c.container_log(&arn, "client").contains("Hello from Berth"));
    stop(&c, &arn);
    c.wait_status(&arn, "STOPPED", T);
}

#[test]
fn a_bridge_tasks_published_port_answers_from_the_host_and_from_another_host() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netbridge");
    let peer = OtherHost::new(&format!("{:x}b", std::process::id() & 0xffff), 1);
    let def = c.register(&td(
        "published",
        None, // ECS's default: bridge
        &[(
            "web",
            "exec httpd -f -p 80 -h /www",
            r#"[{"containerPort":80,"protocol":"tcp"}]"#,
        )],
    ));
    let arn = run_one(&c, &def, &[]);
    let t = c.wait_status(&arn, "RUNNING", T);
    let b = &t["containers"][0]["networkBindings"][0];
    assert_eq!(b["containerPort"], 80, "{t}");
    assert_eq!(b["protocol"], "tcp", "{t}");
    assert_eq!(b["bindIP"], "0.0.0.0", "{t}");
    let port = b["hostPort"].as_u64().unwrap() as u16;
    assert!(
        (c.net.ports.0..=c.net.ports.1).contains(&port),
        "dynamic port {port} outside {:?}",
        c.net.ports
    );
    wait_for("the page on 127.0.0.1", T, || {
        http_get(SocketAddr::from(([127, 0, 0, 1], port)))
    });
    let host_addr: SocketAddr = format!("{}:{port}", peer.host_addr).parse().unwrap();
    wait_for("the page on the host's own address", T, || {
        http_get(host_addr)
    });
    wait_for("the page from the other host", T, || {
        peer.get(&format!("{}:{port}", peer.host_addr))
    });
    stop(&c, &arn);
    c.wait_status(&arn, "STOPPED", T);
    assert!(
        http_get(SocketAddr::from(([127, 0, 0, 1], port))).is_none(),
        "the port is unpublished once the task stopped"
    );
}

#[test]
fn dynamic_ports_never_collide_across_20_concurrent_tasks() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netdyn");
    let def = c.register(&td(
        "dyn",
        Some("bridge"),
        &[(
            "web",
            "exec httpd -f -p 80 -h /www",
            r#"[{"containerPort":80,"hostPort":0},{"containerPort":53,"protocol":"udp"}]"#,
        )],
    ));
    let mut arns = Vec::new();
    for _ in 0..2 {
        let v = run(&c, &def, &["--count", "10"]);
        for t in v["tasks"].as_array().unwrap() {
            arns.push(t["taskArn"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(arns.len(), 20);
    let mut seen = std::collections::BTreeSet::new();
    for arn in &arns {
        let t = c.wait_status(arn, "RUNNING", T);
        for b in t["containers"][0]["networkBindings"].as_array().unwrap() {
            let key = (
                b["hostPort"].as_u64().unwrap(),
                b["protocol"].as_str().unwrap().to_string(),
            );
            assert!(
                seen.insert(key.clone()),
                "host port {key:?} handed out twice"
            );
        }
    }
    assert_eq!(seen.len(), 40, "two bindings per task");
    for arn in &arns {
        stop(&c, arn);
    }
    for arn in &arns {
        c.wait_status(arn, "STOPPED", T);
    }
}

#[test]
fn host_port_conflicts_are_refused_at_placement() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netports");
    let port = berth_tests::free_port();
    let host = c.register(&td(
        "hostport",
        Some("host"),
        &[(
            "web",
            &format!("exec httpd -f -p {port} -h /www"),
            &format!(r#"[{{"containerPort":{port}}}]"#),
        )],
    ));
    let first = run_one(&c, &host, &[]);
    c.wait_status(&first, "RUNNING", T);
    let second = run(&c, &host, &[]);
    assert_eq!(
        second["tasks"].as_array().map(Vec::len),
        Some(0),
        "{second}"
    );
    assert_eq!(
        second["failures"][0]["reason"], "RESOURCE:PORTS",
        "{second}"
    );
    // The same host port published by a bridge task collides too.
    let bridge = c.register(&td(
        "bridgeport",
        Some("bridge"),
        &[(
            "web",
            "exec httpd -f -p 80 -h /www",
            &format!(r#"[{{"containerPort":80,"hostPort":{port}}}]"#),
        )],
    ));
    let third = run(&c, &bridge, &[]);
    assert_eq!(third["failures"][0]["reason"], "RESOURCE:PORTS", "{third}");
    // ECS's reserved ports: 22 is never handed to a task.
    let ssh = c.register(&td(
        "ssh",
        Some("host"),
        &[("web", "exec sleep 60", r#"[{"containerPort":22}]"#)],
    ));
    let fourth = run(&c, &ssh, &[]);
    assert_eq!(
        fourth["failures"][0]["reason"], "RESOURCE:PORTS",
        "{fourth}"
    );
    stop(&c, &first);
    c.wait_status(&first, "STOPPED", T);
    // Free again once the first task stopped.
    let fifth = run_one(&c, &bridge, &[]);
    c.wait_status(&fifth, "RUNNING", T);
    stop(&c, &fifth);
    c.wait_status(&fifth, "STOPPED", T);
}

fn can_connect(addr: SocketAddr) -> bool {
    TcpStream::connect_timeout(&addr, Duration::from_millis(700)).is_ok()
}

#[test]
fn security_groups_allow_deny_and_follow_rule_changes_on_a_running_task() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("netsg");
    let sg = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web tier",
            "--vpc-id",
            &c.name,
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let def = c.register(&td(
        "sgweb",
        Some("awsvpc"),
        &[(
            "web",
            "exec httpd -f -p 8080 -h /www",
            r#"[{"containerPort":8080}]"#,
        )],
    ));
    let arn = run_one(&c, &def, &["--network-configuration", &awsvpc(&c, &[&sg])]);
    let t = c.wait_status(&arn, "RUNNING", T);
    let ip = eni_address(&t).unwrap();
    let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
    // The server listens (its own namespace reaches it over loopback, which the group's
    // table always accepts), yet nothing comes in from outside.
    let own_ns = format!("{}-{}", c.net.bridge, arn.rsplit('/').next().unwrap());
    wait_for("the server to listen", T, || {
        get_in(&own_ns, &format!("{ip}:8080"))
    });
    assert!(!can_connect(addr), "a new group has no ingress rules");
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--protocol",
            "tcp",
            "--port",
            "8080",
            "--cidr",
            &c.net.vpc_cidr,
        ],
    );
    wait_for("the rule to reach the running task", T, || {
        can_connect(addr).then_some(())
    });
    assert!(http_get(addr).is_some());
    c.ok_in(
        "ec2",
        &[
            "revoke-security-group-ingress",
            "--group-id",
            &sg,
            "--protocol",
            "tcp",
            "--port",
            "8080",
            "--cidr",
            &c.net.vpc_cidr,
        ],
    );
    wait_for("the revoke to reach the running task", T, || {
        (!can_connect(addr)).then_some(())
    });

    // The default group: its members reach each other; the host (not a member) does not.
    let client_def = c.register(&td(
        "sgclient",
        Some("awsvpc"),
        &[("main", "exec sleep 3600", "[]")],
    ));
    let a = run_one(&c, &def, &["--network-configuration", &awsvpc(&c, &[])]);
    let b = run_one(
        &c,
        &client_def,
        &["--network-configuration", &awsvpc(&c, &[])],
    );
    let a_ip = eni_address(&c.wait_status(&a, "RUNNING", T)).unwrap();
    c.wait_status(&b, "RUNNING", T);
    let b_id = b.rsplit('/').next().unwrap();
    let ns = sh(&format!("ls /run/netns | grep -- '-{b_id}$'"));
    let ns = ns.trim();
    assert!(!ns.is_empty(), "task b's namespace");
    wait_for("a member of default to reach another", T, || {
        get_in(ns, &format!("{a_ip}:8080")).map(|_| ())
    });
    assert!(
        !can_connect(format!("{a_ip}:8080").parse().unwrap()),
        "the host is not a member of default"
    );
    for t in [&arn, &a, &b] {
        stop(&c, t);
    }
    for t in [&arn, &a, &b] {
        c.wait_status(t, "STOPPED", T);
    }
}

/// What the agent's networks hold on the host now: namespaces, links on its bridges, bridge
/// ports, addresses in its subnets, nftables rules in its table.
fn footprint(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/run/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let n = e.file_name().to_string_lossy().to_string();
        if n.starts_with(&format!("{}-", c.net.bridge)) {
            out.push(format!("netns {n}"));
        }
    }
    for br in [&c.net.bridge, &c.net.vpc_bridge] {
        for e in std::fs::read_dir(format!("/sys/class/net/{br}/brif"))
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(format!("port {} on {br}", e.file_name().to_string_lossy()));
        }
    }
    for l in sh("ip -o link show type veth").lines() {
        if l.contains(&format!("master {}", c.net.bridge))
            || l.contains(&format!("master {}", c.net.vpc_bridge))
        {
            out.push(format!("veth {l}"));
        }
    }
    let rules = sh(&format!(
        "nft -a list table ip {} 2>/dev/null",
        c.net.bridge
    ));
    for l in rules
        .lines()
        .filter(|l| l.contains("# handle") && !l.contains("chain "))
    {
        let l = l.trim();
        if !l.starts_with("type ") {
            out.push(format!("rule {l}"));
        }
    }
    out.sort();
    out
}

/// Addresses and ports the agent's records still hold (its IPAM leases).
fn leases(c: &Cluster) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(c.dir.join("agent/tasks"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        if v["network"].is_object() {
            out.push(format!("{}: {}", e.path().display(), v["network"]));
        }
    }
    out
}

#[test]
fn start_stop_cycles_across_all_modes_leave_nothing_behind() {
    if !prerequisites() {
        return;
    }
    // CI runs 2 cycles per mode; scripts/soak.sh runs the issue's 100 (BERTH_NET_CYCLES=100).
    let cycles: usize = std::env::var("BERTH_NET_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    let c = Cluster::start("netcycles");
    let web = "exec httpd -f -p 80 -h /www";
    let ports = r#"[{"containerPort":80},{"containerPort":81,"hostPort":0,"protocol":"udp"}]"#;
    let defs: Vec<(&str, String)> = ["none", "host", "bridge", "awsvpc"]
        .into_iter()
        .map(|m| {
            let p = if m == "bridge" || m == "awsvpc" {
                ports
            } else {
                "[]"
            };
            let cmd = if m == "host" { "exec sleep 3600" } else { web };
            (
                m,
                c.register(&td(
                    &format!("cyc-{m}"),
                    Some(m),
                    &[("web", cmd, p), ("side", "exec sleep 3600", "[]")],
                )),
            )
        })
        .collect();
    // The bridges exist after the first task of each kind; count from there.
    let warm: Vec<String> = defs
        .iter()
        .map(|(m, d)| {
            let extra: Vec<String> = if *m == "awsvpc" {
                vec!["--network-configuration".into(), awsvpc(&c, &[])]
            } else {
                Vec::new()
            };
            let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
            run_one(&c, d, &extra)
        })
        .collect();
    for a in &warm {
        c.wait_status(a, "RUNNING", T);
        stop(&c, a);
    }
    for a in &warm {
        c.wait_status(a, "STOPPED", T);
    }
    let before = footprint(&c);
    // Between tasks only the table's own rules (the bridges' NAT and the jumps to the ports
    // chain) remain: no namespace, veth or bridge port.
    assert!(
        before.iter().all(|l| l.starts_with("rule ")),
        "nothing of a task between tasks: {before:?}"
    );
    assert!(leases(&c).is_empty(), "{:?}", leases(&c));
    for i in 0..cycles {
        let (m, d) = &defs[i % defs.len()];
        let extra: Vec<String> = if *m == "awsvpc" {
            vec!["--network-configuration".into(), awsvpc(&c, &[])]
        } else {
            Vec::new()
        };
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        let arn = run_one(&c, d, &extra);
        c.wait_status(&arn, "RUNNING", T);
        assert!(
            !footprint(&c).is_empty() || *m == "host",
            "{m}: the task has a network"
        );
        stop(&c, &arn);
        c.wait_status(&arn, "STOPPED", T);
    }
    // Released the moment the tasks were STOPPED, not after the cleanup wait.
    assert_eq!(footprint(&c), before, "after {cycles} cycles");
    assert!(leases(&c).is_empty(), "leases left: {:?}", leases(&c));
}

#[test]
fn an_agent_killed_and_restarted_keeps_running_networks_and_cleans_up_stopped_ones() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start("netcrash");
    let bridge = c.register(&td(
        "keep",
        Some("bridge"),
        &[(
            "web",
            "exec httpd -f -p 80 -h /www",
            r#"[{"containerPort":80}]"#,
        )],
    ));
    let vpc = c.register(&td(
        "gone",
        Some("awsvpc"),
        &[("main", "exec sleep 3600", "[]")],
    ));
    let keep = run_one(&c, &bridge, &[]);
    let gone = run_one(&c, &vpc, &["--network-configuration", &awsvpc(&c, &[])]);
    let t = c.wait_status(&keep, "RUNNING", T);
    c.wait_status(&gone, "RUNNING", T);
    let port = t["containers"][0]["networkBindings"][0]["hostPort"]
        .as_u64()
        .unwrap() as u16;
    let page = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for("the page", T, || http_get(page));
    let gone_id = gone.rsplit('/').next().unwrap().to_string();
    let gone_ns = |_: ()| {
        std::fs::read_dir("/run/netns")
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().ends_with(&gone_id))
    };
    assert!(gone_ns(()), "the awsvpc task's namespace");

    c.kill_agent();
    // While the agent is down: the published port still answers; the other task's container
    // dies.
    assert!(http_get(page).is_some(), "networking outlives the agent");
    let container = c
        .containerd_containers()
        .into_iter()
        .find(|id| id.starts_with(&gone_id[..12]) || id.contains(&gone_id))
        .unwrap_or_else(|| {
            panic!(
                "no container of {gone_id} in {:?}",
                c.containerd_containers()
            )
        });
    let st = Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .args(["-n", "berth", "tasks", "kill", "-s", "SIGKILL", &container])
        .status()
        .unwrap();
    assert!(st.success());
    wait_for("the container to exit", T, || {
        (c.containerd_task_status(&container).as_deref() != Some("RUNNING")).then_some(())
    });

    c.start_agent();
    c.wait_agent_connected();
    c.wait_status(&gone, "STOPPED", T);
    wait_for("the stopped task's namespace to go", T, || {
        (!gone_ns(())).then_some(())
    });
    assert!(http_get(page).is_some(), "the kept task still answers");
    let t = c.task(&keep);
    assert_eq!(t["lastStatus"], "RUNNING");
    assert_eq!(t["containers"][0]["networkBindings"][0]["hostPort"], port);
    stop(&c, &keep);
    c.wait_status(&keep, "STOPPED", T);
}

#[test]
fn the_lan_backend_puts_a_task_on_the_lan_with_a_controller_allocated_address() {
    if !prerequisites() {
        return;
    }
    // A veth pair stands in for the LAN: one end (the parent) in this namespace, the other in
    // a namespace acting as another host on the LAN. Nothing leaves the machine.
    let tag = format!("{:x}", std::process::id() & 0xffff);
    let parent = format!("blan{tag}");
    let lan = format!("berth-it-lan-{tag}");
    let second = 64 + std::process::id() % 64;
    let subnet = format!("10.{second}.200.0/24");
    let script = format!(
        "set -e; ip netns add {lan}; ip link add {parent} type veth peer name eth0 netns {lan}; \
         ip link set {parent} up; ip -n {lan} addr add 10.{second}.200.2/24 dev eth0; \
         ip -n {lan} link set eth0 up; ip -n {lan} link set lo up"
    );
    struct Lan(String, String);
    impl Drop for Lan {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["link", "delete", &self.0])
                .status();
            let _ = Command::new("ip")
                .args(["netns", "delete", &self.1])
                .status();
        }
    }
    let _lan = Lan(parent.clone(), lan.clone());
    assert!(Command::new("sh")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap()
        .success());
    let subnets = format!(
        "name=subnet-it,cidr={},bridge={};name=subnet-lan,cidr={subnet},parent={parent},gateway=10.{second}.200.2,range=10.{second}.200.100-10.{second}.200.101",
        "10.255.254.0/24", "bwl{tag}"
    );
    let c = Cluster::start_with_agent_env("netlan", &[("BERTH_SUBNETS", &subnets)]);
    let def = c.register(&td(
        "lanweb",
        Some("awsvpc"),
        &[("web", "exec httpd -f -p 80 -h /www", "[]")],
    ));
    // A group that lets the LAN in on port 80 (the cluster's default admits only its members).
    let sg = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "lan-web",
            "--description",
            "lan",
            "--vpc-id",
            &c.name,
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &sg,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            &subnet,
        ],
    );
    let conf = format!("awsvpcConfiguration={{subnets=[subnet-lan],securityGroups=[{sg}]}}");
    let conf = conf.as_str();
    let first = run_one(&c, &def, &["--network-configuration", conf]);
    let second_task = run_one(&c, &def, &["--network-configuration", conf]);
    let a = eni_address(&c.wait_status(&first, "RUNNING", T)).unwrap();
    let b = eni_address(&c.wait_status(&second_task, "RUNNING", T)).unwrap();
    assert_ne!(a, b);
    for ip in [&a, &b] {
        assert!(
            ip.starts_with(&format!("10.{second}.200.10")),
            "{ip} from the range"
        );
    }
    wait_for("the LAN host to reach the task", T, || {
        get_in(&lan, &format!("{a}:80")).map(|_| ())
    });
    stop(&c, &first);
    c.wait_status(&first, "STOPPED", T);
    let third = run_one(&c, &def, &["--network-configuration", conf]);
    let c3 = eni_address(&c.wait_status(&third, "RUNNING", T)).unwrap();
    assert_eq!(c3, a, "the stopped task's address is free again");
    for t in [&second_task, &third] {
        stop(&c, t);
    }
    for t in [&second_task, &third] {
        c.wait_status(t, "STOPPED", T);
    }
}
