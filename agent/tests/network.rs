//! Root tests of `LinuxNetwork` against the real kernel (issue 8): namespaces, veths, bridges,
//! macvlans, nft. Each test uses its own bridges (`tb<N>`), subnets (10.231.<N>.0/24), port
//! range and task ids, and a guard removes what it made, also on failure. A `LinuxNetwork` is
//! scoped by its bridge-mode bridge (`tb<N>`): its nftables table is `ip tb<N>` and its
//! namespaces are `tb<N>-<task id>[-<index>]`, so the guard removes the test's whole table. The
//! tests still take one lock: the cycle test compares host-wide counts (namespaces, links,
//! addresses, nft rules), and the traffic tests' timeouts are tight on a busy host.
//!
//! Under CI=true a missing prerequisite (not root, no nft/ip) fails; otherwise the test is
//! skipped with a printed reason.

use berth_agent::network::linux::{veth_name, LinuxNetwork};
use berth_agent::network::*;
use nix::sched::{setns, CloneFlags};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;

static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const WAIT: Duration = Duration::from_secs(3);
/// How long a connection that should be refused by a filter is given.
const BLOCKED_WAIT: Duration = Duration::from_millis(700);

fn prerequisites() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    for bin in ["nft", "ip"] {
        let ok = std::process::Command::new(bin)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing.push(bin);
        }
    }
    if missing.is_empty() {
        return true;
    }
    assert!(!ci, "CI=true and missing prerequisites: {missing:?}");
    eprintln!("skipping: missing {missing:?}");
    false
}

/// Runs a command under a timeout; panics with its stderr on failure unless `ok_fail`.
async fn run(args: &[&str], ok_fail: bool) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::process::Command::new(args[0])
            .args(&args[1..])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap_or_else(|_| panic!("{args:?} timed out"))
    .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if !out.status.success() && !ok_fail {
        panic!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or(Value::Null)
}

/// Everything a test made; removed on drop (tasks via teardown, the rest with ip/nft). The
/// network's own table (`ip <scope>`) belongs to the test alone and is deleted whole.
struct Guard {
    net: Arc<LinuxNetwork>,
    states: Vec<TaskNetworkState>,
    namespaces: Vec<String>,
    links: Vec<String>,
    bridges: Vec<String>,
    /// nftables tables of family ip.
    tables: Vec<String>,
}

impl Guard {
    fn new(net: Arc<LinuxNetwork>) -> Self {
        let table = net.scope().to_string();
        Guard {
            net,
            states: Vec::new(),
            namespaces: Vec::new(),
            links: Vec::new(),
            bridges: Vec::new(),
            tables: vec![table],
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let net = self.net.clone();
        let states = std::mem::take(&mut self.states);
        let namespaces = std::mem::take(&mut self.namespaces);
        let mut links = std::mem::take(&mut self.links);
        links.extend(std::mem::take(&mut self.bridges));
        let tables = std::mem::take(&mut self.tables);
        let t = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                for s in &states {
                    if let Err(e) = net.teardown(s).await {
                        eprintln!("guard: teardown {}: {e}", s.task_id);
                    }
                    net.release(s);
                }
                for n in &namespaces {
                    run(&["ip", "netns", "del", n], true).await;
                }
                for l in &links {
                    run(&["ip", "link", "del", l], true).await;
                }
                for t in &tables {
                    run(&["nft", "delete", "table", "ip", t], true).await;
                }
            });
        });
        let _ = t.join();
    }
}

fn config(n: u8, ports: (u16, u16)) -> NetworkConfig {
    NetworkConfig {
        reserved_tcp_ports: vec![],
        bridge: format!("tb{n}"),
        bridge_cidr: Ipv4Addr::new(10, 231, n, 0),
        bridge_prefix: 24,
        dynamic_ports: ports,
        subnets: vec![SubnetConfig {
            name: format!("subnet-t{n}"),
            cidr: Ipv4Addr::new(10, 231, 100 + n, 0),
            prefix: 24,
            backend: SubnetBackend::Bridge {
                bridge: format!("tbv{n}"),
            },
        }],
        fallback_dns: vec![],
    }
}

/// Fails if the host already routes any of these subnets (someone else uses them).
async fn assert_unused(subnets: &[&str]) {
    let routes = run(&["ip", "-4", "route"], false).await;
    for s in subnets {
        let prefix = s.trim_end_matches(".0/24");
        assert!(
            !routes.contains(&format!("{prefix}.")),
            "subnet {s} is in use on this host: {routes}"
        );
    }
}

fn plan(id: &str, mode: Mode, containers: &[&str], ports: Vec<PortRequest>) -> NetworkPlan {
    NetworkPlan {
        task_id: id.to_string(),
        mode,
        containers: containers.iter().map(|c| c.to_string()).collect(),
        ports,
        awsvpc: None,
    }
}

fn port(container: &str, cport: u16, host: Option<u16>, protocol: Protocol) -> PortRequest {
    PortRequest {
        container: container.into(),
        container_port: cport,
        host_port: host,
        protocol,
    }
}

fn awsvpc(
    subnet: &str,
    address: Option<Ipv4Addr>,
    public: bool,
    ingress: Vec<IngressRule>,
) -> AwsvpcPlan {
    AwsvpcPlan {
        subnet: subnet.into(),
        address,
        assign_public_ip: public,
        security_groups: vec!["sg-1".into()],
        ingress,
    }
}

fn tcp_rule(source: [u8; 4], prefix: u8, from: u16, to: u16) -> IngressRule {
    IngressRule {
        protocol: RuleProtocol::Tcp,
        from_port: from,
        to_port: to,
        source: Ipv4Addr::from(source),
        prefix,
    }
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/run/netns/{ns}")).expect("namespace file");
    setns(&f, CloneFlags::CLONE_NEWNET).expect("setns");
}

/// A TCP echo server in namespace `ns` on `port`, for `conns` connections.
fn tcp_server(ns: &str, port: u16, conns: usize) {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns);
        let l = TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind");
        tx.send(()).expect("ready");
        for _ in 0..conns {
            let Ok((mut s, _)) = l.accept() else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone"));
                let mut line = String::new();
                while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if s.write_all(line.as_bytes()).is_err() {
                        return;
                    }
                    line.clear();
                }
            });
        }
    });
    rx.recv_timeout(WAIT).expect("server ready");
}

/// A UDP echo server in namespace `ns` for `packets` datagrams.
fn udp_server(ns: &str, port: u16, packets: usize) {
    let ns = ns.to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        enter(&ns);
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).expect("bind");
        tx.send(()).expect("ready");
        let mut buf = [0u8; 512];
        for _ in 0..packets {
            let Ok((n, from)) = s.recv_from(&mut buf) else {
                return;
            };
            let _ = s.send_to(&buf[..n], from);
        }
    });
    rx.recv_timeout(WAIT).expect("server ready");
}

/// Runs `f` in namespace `ns` (the host's when `None`) on its own thread.
fn in_ns<T: Send + 'static>(ns: Option<&str>, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = ns.map(str::to_string);
    std::thread::spawn(move || {
        if let Some(ns) = ns {
            enter(&ns);
        }
        f()
    })
    .join()
    .expect("client thread")
}

/// Connects and echoes a line; Err when it cannot.
fn tcp_echo(ns: Option<&str>, to: SocketAddr, wait: Duration) -> Result<(), String> {
    in_ns(ns, move || {
        let mut s =
            TcpStream::connect_timeout(&to, wait).map_err(|e| format!("connect {to}: {e}"))?;
        echo(&mut s)
    })
}

fn echo(s: &mut TcpStream) -> Result<(), String> {
    s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
    s.write_all(b"ping\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf)
        .map_err(|e| format!("reading echo: {e}"))?;
    (&buf == b"ping\n").then_some(()).ok_or("wrong echo".into())
}

fn udp_echo(ns: Option<&str>, to: SocketAddr) -> Result<(), String> {
    in_ns(ns, move || {
        let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        s.send_to(b"ping", to).map_err(|e| e.to_string())?;
        let mut buf = [0u8; 16];
        let (n, _) = s
            .recv_from(&mut buf)
            .map_err(|e| format!("udp {to}: {e}"))?;
        (&buf[..n] == b"ping")
            .then_some(())
            .ok_or("wrong echo".into())
    })
}

/// `ip -n NS -j addr`: interface name → (addresses "a/p", flags).
async fn ns_addrs(ns: &str) -> BTreeMap<String, (Vec<String>, Vec<String>)> {
    let v = json(&run(&["ip", "-n", ns, "-j", "addr"], false).await);
    let mut out = BTreeMap::new();
    for i in v.as_array().into_iter().flatten() {
        let addrs = i["addr_info"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect();
        let flags = i["flags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| f.as_str().map(str::to_string))
            .collect();
        out.insert(
            i["ifname"].as_str().unwrap_or("").to_string(),
            (addrs, flags),
        );
    }
    out
}

async fn default_gateway(ns: &str) -> Option<String> {
    let v = json(&run(&["ip", "-n", ns, "-j", "route"], false).await);
    v.as_array()
        .into_iter()
        .flatten()
        .find(|r| r["dst"] == "default")
        .and_then(|r| r["gateway"].as_str().map(str::to_string))
}

/// A namespace standing in for another host, joined to the host namespace by a veth:
/// host end `host_link` with `host_addr`, far end `remote_addr`.
async fn remote_host(g: &mut Guard, ns: &str, host_link: &str, host_addr: &str, remote_addr: &str) {
    run(&["ip", "netns", "add", ns], false).await;
    g.namespaces.push(ns.into());
    run(
        &[
            "ip", "link", "add", host_link, "type", "veth", "peer", "name", "r0", "netns", ns,
        ],
        false,
    )
    .await;
    g.links.push(host_link.into());
    run(&["ip", "addr", "add", host_addr, "dev", host_link], false).await;
    run(&["ip", "link", "set", host_link, "up"], false).await;
    run(
        &["ip", "-n", ns, "addr", "add", remote_addr, "dev", "r0"],
        false,
    )
    .await;
    run(&["ip", "-n", ns, "link", "set", "r0", "up"], false).await;
    run(&["ip", "-n", ns, "link", "set", "lo", "up"], false).await;
}

fn sa(a: [u8; 4], p: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::from(a), p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bridge_mode_publishes_tcp_and_udp_ports() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.1.0/24", "10.231.201.0/24"]).await;
    let net = Arc::new(LinuxNetwork::new(config(1, (40100, 40199))).expect("config"));
    let mut g = Guard::new(net.clone());
    g.bridges.push("tb1".into());
    remote_host(
        &mut g,
        "bt-remote1",
        "btr1",
        "10.231.201.1/24",
        "10.231.201.2/24",
    )
    .await;

    let p = plan(
        "nt-bridge-1",
        Mode::Bridge,
        &["web", "dns"],
        vec![
            port("web", 8080, None, Protocol::Tcp),
            port("dns", 5353, Some(40250), Protocol::Udp),
        ],
    );
    let mut s = net.allocate(&p).expect("allocate");
    g.states.push(s.clone());
    net.setup(&mut s).await.expect("setup");
    // Idempotent: a second run changes nothing and does not fail.
    // After a "crash" that lost a veth, setup again completes what is missing.
    run(&["ip", "link", "del", &veth_name("nt-bridge-1", 0)], false).await;
    net.setup(&mut s).await.expect("setup again");

    let web = s.namespaces["web"].clone();
    let dns = s.namespaces["dns"].clone();
    assert_eq!(net.scope(), "tb1");
    assert_eq!(web.name, "tb1-nt-bridge-1-0");
    assert_eq!(dns.name, "tb1-nt-bridge-1-1");
    let a = ns_addrs(&web.name).await;
    assert_eq!(a["eth0"].0, vec!["10.231.1.2/24"]);
    assert!(a["eth0"].1.contains(&"UP".to_string()));
    assert!(a["lo"].1.contains(&"UP".to_string()));
    assert_eq!(ns_addrs(&dns.name).await["eth0"].0, vec!["10.231.1.3/24"]);
    assert_eq!(
        default_gateway(&web.name).await.as_deref(),
        Some("10.231.1.1")
    );
    let wi = web.interface.clone().expect("interface");
    assert!(wi.mac.as_deref().is_some_and(|m| m.len() == 17));
    assert_eq!(
        wi.host_link.as_deref(),
        Some(veth_name("nt-bridge-1", 0).as_str())
    );
    let master = json(&run(&["ip", "-j", "link", "show", "master", "tb1"], false).await);
    assert_eq!(master.as_array().map(Vec::len), Some(2), "{master}");

    let tcp = s
        .bindings
        .iter()
        .find(|b| b.container == "web")
        .expect("tcp binding")
        .host_port;
    assert!((40100..=40199).contains(&tcp));
    let udp = s
        .bindings
        .iter()
        .find(|b| b.container == "dns")
        .expect("udp binding")
        .host_port;
    assert_eq!(udp, 40250);

    tcp_server(&web.name, 8080, 5);
    udp_server(&dns.name, 5353, 5);
    for (from, to) in [
        (None, [127, 0, 0, 1]),
        (None, [10, 231, 201, 1]),
        (Some("bt-remote1"), [10, 231, 201, 1]),
        // Hairpin: a container on the bridge through a host address.
        (Some(dns.name.as_str()), [10, 231, 201, 1]),
        (Some(web.name.as_str()), [10, 231, 201, 1]),
    ] {
        tcp_echo(from, sa(to, tcp), WAIT).unwrap_or_else(|e| panic!("tcp from {from:?}: {e}"));
        udp_echo(from, sa(to, udp)).unwrap_or_else(|e| panic!("udp from {from:?}: {e}"));
    }

    net.teardown(&s).await.expect("teardown");
    net.teardown(&s).await.expect("teardown again");
    assert!(!std::path::Path::new("/run/netns/tb1-nt-bridge-1-0").exists());
    let rules = run(&["nft", "list", "table", "ip", "tb1"], false).await;
    assert!(!rules.contains("nt-bridge-1"), "{rules}");
    net.release(&s);
    assert_eq!(net.held_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn awsvpc_none_and_host_namespaces_and_public_ip() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.102.0/24", "10.231.202.0/24"]).await;
    let net = Arc::new(LinuxNetwork::new(config(2, (40200, 40249))).expect("config"));
    let mut g = Guard::new(net.clone());
    g.bridges.push("tbv2".into());
    remote_host(
        &mut g,
        "bt-remote2",
        "btr2",
        "10.231.202.1/24",
        "10.231.202.2/24",
    )
    .await;

    // awsvpc with a public IP: its outbound traffic is masqueraded, so the "other host" (which
    // has no route to the subnet) answers; without it, it cannot.
    let mut p = plan("nt-vpc-pub", Mode::Awsvpc, &["app"], vec![]);
    p.awsvpc = Some(awsvpc("subnet-t2", None, true, vec![]));
    let mut public = net.allocate(&p).expect("allocate");
    g.states.push(public.clone());
    net.setup(&mut public).await.expect("setup");
    let mut p = plan("nt-vpc-priv", Mode::Awsvpc, &["app"], vec![]);
    p.awsvpc = Some(awsvpc("subnet-t2", None, false, vec![]));
    let mut private = net.allocate(&p).expect("allocate");
    g.states.push(private.clone());
    net.setup(&mut private).await.expect("setup");

    let ns = public.namespaces[""].name.clone();
    assert_eq!(ns, "tb2-nt-vpc-pub");
    let a = ns_addrs(&ns).await;
    assert_eq!(a["eth0"].0, vec!["10.231.102.2/24"]);
    assert_eq!(a.len(), 2, "{a:?}");
    assert_eq!(default_gateway(&ns).await.as_deref(), Some("10.231.102.1"));
    let sg = run(
        &[
            "ip", "netns", "exec", &ns, "nft", "list", "table", "inet", "berth_sg",
        ],
        false,
    )
    .await;
    assert!(sg.contains("policy drop"), "{sg}");
    assert_eq!(
        ns_addrs(&private.namespaces[""].name).await["eth0"].0,
        vec!["10.231.102.3/24"]
    );

    // Two containers of the task share its namespace and talk over localhost (the security
    // group lets loopback through).
    let (tx, rx) = std::sync::mpsc::channel();
    let ns2 = ns.clone();
    std::thread::spawn(move || {
        enter(&ns2);
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 7100)).expect("bind");
        tx.send(()).expect("ready");
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(b"ping\n");
        }
    });
    rx.recv_timeout(WAIT).expect("ready");
    let got = in_ns(Some(&ns), || {
        let mut c = TcpStream::connect_timeout(&sa([127, 0, 0, 1], 7100), WAIT)
            .map_err(|e| e.to_string())?;
        c.set_read_timeout(Some(WAIT)).map_err(|e| e.to_string())?;
        let mut b = [0u8; 5];
        c.read_exact(&mut b).map_err(|e| e.to_string())?;
        Ok::<_, String>(b)
    });
    assert_eq!(
        got.as_ref().map(|b| &b[..]),
        Ok(&b"ping\n"[..]),
        "localhost inside the task"
    );

    tcp_server("bt-remote2", 7000, 1);
    tcp_echo(Some(&ns), sa([10, 231, 202, 2], 7000), WAIT)
        .expect("public task reaches the other host");
    assert!(tcp_echo(
        Some(&private.namespaces[""].name),
        sa([10, 231, 202, 2], 7000),
        BLOCKED_WAIT
    )
    .is_err());

    // none: a namespace with only lo, up.
    let mut none = net
        .allocate(&plan("nt-none", Mode::None, &["a", "b"], vec![]))
        .expect("allocate");
    g.states.push(none.clone());
    net.setup(&mut none).await.expect("setup");
    let a = ns_addrs("tb2-nt-none").await;
    assert_eq!(a.keys().collect::<Vec<_>>(), vec!["lo"]);
    assert!(a["lo"].1.contains(&"UP".to_string()));
    assert_eq!(
        none.netns_path("b").as_deref(),
        Some("/run/netns/tb2-nt-none")
    );

    // host: nothing created; containerPort held as the binding.
    let mut host = net
        .allocate(&plan(
            "nt-host",
            Mode::Host,
            &["a"],
            vec![port("a", 40260, None, Protocol::Tcp)],
        ))
        .expect("allocate");
    g.states.push(host.clone());
    net.setup(&mut host).await.expect("setup");
    assert!(host.namespaces.is_empty());
    assert_eq!(host.bindings[0].host_port, 40260);
    assert!(matches!(
        net.allocate(&plan(
            "nt-host2",
            Mode::Host,
            &["a"],
            vec![port("a", 40260, None, Protocol::Tcp)]
        )),
        Err(NetworkError::PortInUse { port: 40260, .. })
    ));

    for s in [&public, &private, &none, &host] {
        net.teardown(s).await.expect("teardown");
        net.release(s);
    }
    let rules = run(&["nft", "list", "table", "ip", "tb2"], false).await;
    assert!(!rules.contains("nt-vpc-pub"), "{rules}");
    assert_eq!(net.held_counts(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamic_ports_never_collide_and_static_conflicts_are_refused() {
    // Allocation only binds test sockets: no root needed.
    let _l = LOCK.lock().await;
    let net = Arc::new(LinuxNetwork::new(config(3, (40300, 40399))).expect("config"));
    // A port bound by some process on the host is skipped.
    let busy = TcpListener::bind((Ipv4Addr::UNSPECIFIED, 40300)).expect("bind 40300");
    let handles: Vec<_> = (0..20)
        .map(|i| {
            let net = net.clone();
            std::thread::spawn(move || {
                net.allocate(&plan(
                    &format!("nt-dyn-{i}"),
                    Mode::Bridge,
                    &["a"],
                    vec![
                        port("a", 80, None, Protocol::Tcp),
                        port("a", 53, None, Protocol::Udp),
                    ],
                ))
                .expect("allocate")
            })
        })
        .collect();
    let states: Vec<_> = handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect();
    let mut tcp: Vec<u16> = states.iter().map(|s| s.bindings[0].host_port).collect();
    tcp.sort_unstable();
    tcp.dedup();
    assert_eq!(tcp.len(), 20, "tcp ports collided: {tcp:?}");
    assert!(
        !tcp.contains(&40300),
        "a port bound on the host was handed out"
    );
    let mut addrs: Vec<_> = states
        .iter()
        .map(|s| s.namespaces["a"].interface.as_ref().map(|i| i.address))
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 20);

    // Static: held by another task → refused, and nothing is held by the refused task.
    let held = states[0].bindings[0].host_port;
    let before = net.held_counts();
    assert!(matches!(
        net.allocate(&plan("nt-static", Mode::Bridge, &["a"], vec![port("a", 80, Some(held), Protocol::Tcp)])),
        Err(NetworkError::PortInUse { port, protocol: "tcp" }) if port == held
    ));
    assert!(matches!(
        net.allocate(&plan(
            "nt-static",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, Some(40300), Protocol::Tcp)]
        )),
        Err(NetworkError::PortInUse { port: 40300, .. })
    ));
    assert_eq!(net.held_counts(), before);

    // Released ports come back, but not immediately (next-fit).
    net.release(&states[0]);
    let next = net
        .allocate(&plan(
            "nt-dyn-next",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, None, Protocol::Tcp)],
        ))
        .expect("allocate");
    assert_ne!(next.bindings[0].host_port, held);
    let again = net
        .allocate(&plan(
            "nt-static",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, Some(held), Protocol::Tcp)],
        ))
        .expect("the released port is free again");
    for s in states.iter().skip(1).chain([&next, &again]) {
        net.release(s);
    }
    assert_eq!(net.held_counts(), (0, 0));
    drop(busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_groups_default_deny_rules_and_live_changes() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.104.0/24"]).await;
    let net = Arc::new(LinuxNetwork::new(config(4, (40400, 40449))).expect("config"));
    let mut g = Guard::new(net.clone());
    g.bridges.push("tbv4".into());

    let mut p = plan("nt-sg", Mode::Awsvpc, &["app"], vec![]);
    p.awsvpc = Some(awsvpc("subnet-t4", None, false, vec![]));
    let mut s = net.allocate(&p).expect("allocate");
    g.states.push(s.clone());
    net.setup(&mut s).await.expect("setup");
    let ns = s.namespaces[""].name.clone();
    let addr = s.namespaces[""]
        .interface
        .as_ref()
        .expect("iface")
        .address
        .octets();
    tcp_server(&ns, 9000, 10);
    tcp_server(&ns, 9001, 10);

    // No rules: nothing new gets in.
    assert!(
        tcp_echo(None, sa(addr, 9000), BLOCKED_WAIT).is_err(),
        "default deny"
    );
    // A rule for the host's bridge address and port 9000.
    net.set_ingress(&s, &[tcp_rule([10, 231, 104, 1], 32, 9000, 9000)])
        .await
        .expect("set_ingress");
    tcp_echo(None, sa(addr, 9000), WAIT).expect("allowed by the rule");
    assert!(
        tcp_echo(None, sa(addr, 9001), BLOCKED_WAIT).is_err(),
        "9001 not allowed"
    );
    let mut open = TcpStream::connect_timeout(&sa(addr, 9000), WAIT).expect("connect");
    echo(&mut open).expect("echo");
    // Change on the running namespace: now only 9001 (a range) from the subnet.
    net.set_ingress(&s, &[tcp_rule([10, 231, 104, 0], 24, 9001, 9002)])
        .await
        .expect("set_ingress");
    tcp_echo(None, sa(addr, 9001), WAIT).expect("allowed after the change");
    assert!(
        tcp_echo(None, sa(addr, 9000), BLOCKED_WAIT).is_err(),
        "9000 no longer allowed"
    );
    // The connection opened before still works (established).
    echo(&mut open).expect("established connection passes");
    // A source outside the rule's CIDR is refused.
    net.set_ingress(&s, &[tcp_rule([10, 9, 9, 0], 24, 9001, 9001)])
        .await
        .expect("set_ingress");
    assert!(
        tcp_echo(None, sa(addr, 9001), BLOCKED_WAIT).is_err(),
        "other source"
    );
    // A rule for all protocols.
    net.set_ingress(
        &s,
        &[IngressRule {
            protocol: RuleProtocol::All,
            from_port: 0,
            to_port: 0,
            source: Ipv4Addr::UNSPECIFIED,
            prefix: 0,
        }],
    )
    .await
    .expect("set_ingress");
    tcp_echo(None, sa(addr, 9000), WAIT).expect("all allowed");
    // Rules from the plan apply at setup.
    net.teardown(&s).await.expect("teardown");
    net.release(&s);
    let mut p = plan("nt-sg2", Mode::Awsvpc, &["app"], vec![]);
    p.awsvpc = Some(awsvpc(
        "subnet-t4",
        None,
        false,
        vec![tcp_rule([10, 231, 104, 1], 32, 9005, 9005)],
    ));
    let mut s2 = net.allocate(&p).expect("allocate");
    g.states.push(s2.clone());
    net.setup(&mut s2).await.expect("setup");
    let addr2 = s2.namespaces[""]
        .interface
        .as_ref()
        .expect("iface")
        .address
        .octets();
    tcp_server(&s2.namespaces[""].name, 9005, 1);
    tcp_echo(None, sa(addr2, 9005), WAIT).expect("plan's rule applies");
    drop(open);
}

/// What a cycle test compares: namespaces, links, bridge ports, addresses, nft rules.
async fn host_counts(bridges: &[&str]) -> Vec<(String, usize)> {
    let mut out = Vec::new();
    let ns = std::fs::read_dir("/run/netns")
        .map(|d| d.count())
        .unwrap_or(0);
    out.push(("namespaces".into(), ns));
    let links = json(&run(&["ip", "-j", "link"], false).await);
    let links = links.as_array().cloned().unwrap_or_default();
    out.push(("links".into(), links.len()));
    out.push((
        "bv links".into(),
        links
            .iter()
            .filter(|l| l["ifname"].as_str().is_some_and(|n| n.starts_with("bv")))
            .count(),
    ));
    for b in bridges {
        let m = json(&run(&["ip", "-j", "link", "show", "master", b], false).await);
        out.push((format!("ports of {b}"), m.as_array().map_or(0, Vec::len)));
    }
    let addrs = json(&run(&["ip", "-j", "-4", "addr"], false).await);
    let n: usize = addrs
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| i["addr_info"].as_array().map_or(0, Vec::len))
        .sum();
    out.push(("addresses".into(), n));
    let rules = json(&run(&["nft", "-j", "list", "ruleset"], false).await);
    let items = rules["nftables"].as_array().cloned().unwrap_or_default();
    out.push((
        "nft rules".into(),
        items.iter().filter(|i| i.get("rule").is_some()).count(),
    ));
    out.push((
        "nft chains".into(),
        items.iter().filter(|i| i.get("chain").is_some()).count(),
    ));
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_setup_teardown_cycles_leave_nothing() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.5.0/24", "10.231.105.0/24", "10.231.205.0/24"]).await;
    let mut cfg = config(5, (40500, 40599));
    cfg.subnets.push(SubnetConfig {
        name: "lan-t5".into(),
        cidr: Ipv4Addr::new(10, 231, 205, 0),
        prefix: 24,
        backend: SubnetBackend::Lan {
            parent: "tdum5".into(),
            gateway: Some(Ipv4Addr::new(10, 231, 205, 1)),
            first: Ipv4Addr::new(10, 231, 205, 100),
            last: Ipv4Addr::new(10, 231, 205, 199),
        },
    });
    let net = Arc::new(LinuxNetwork::new(cfg).expect("config"));
    let mut g = Guard::new(net.clone());
    g.bridges.extend(["tb5".to_string(), "tbv5".to_string()]);
    // The LAN parent: a veth (no dummy driver on every kernel).
    run(
        &[
            "ip", "link", "add", "tdum5", "type", "veth", "peer", "name", "tdum5p",
        ],
        false,
    )
    .await;
    g.links.push("tdum5".into());
    run(&["ip", "link", "set", "tdum5", "up"], false).await;
    run(&["ip", "link", "set", "tdum5p", "up"], false).await;

    let plans = |i: usize| -> NetworkPlan {
        let id = format!("nt-cyc-{i}");
        match i % 5 {
            0 => plan(
                &id,
                Mode::Bridge,
                &["a", "b"],
                vec![
                    port("a", 80, None, Protocol::Tcp),
                    port("b", 53, None, Protocol::Udp),
                ],
            ),
            1 => {
                let mut p = plan(&id, Mode::Awsvpc, &["a"], vec![]);
                p.awsvpc = Some(awsvpc(
                    "subnet-t5",
                    None,
                    true,
                    vec![tcp_rule([0, 0, 0, 0], 0, 80, 80)],
                ));
                p
            }
            2 => plan(&id, Mode::None, &["a"], vec![]),
            3 => plan(
                &id,
                Mode::Host,
                &["a"],
                vec![port("a", 40600, None, Protocol::Tcp)],
            ),
            _ => {
                let mut p = plan(&id, Mode::Awsvpc, &["a"], vec![]);
                p.awsvpc = Some(awsvpc(
                    "lan-t5",
                    Some(Ipv4Addr::new(10, 231, 205, 100 + (i % 50) as u8)),
                    false,
                    vec![],
                ));
                p
            }
        }
    };
    // The bridges are made on first use and stay: make them before counting.
    for i in 0..2 {
        let mut s = net.allocate(&plans(i)).expect("allocate");
        net.setup(&mut s).await.expect("setup");
        net.teardown(&s).await.expect("teardown");
        net.release(&s);
    }
    let before = host_counts(&["tb5", "tbv5"]).await;
    let mut took: BTreeMap<usize, Vec<Duration>> = BTreeMap::new();
    for i in 0..100 {
        let mut s = net
            .allocate(&plans(i))
            .unwrap_or_else(|e| panic!("allocate {i}: {e}"));
        g.states.push(s.clone());
        let t0 = std::time::Instant::now();
        net.setup(&mut s)
            .await
            .unwrap_or_else(|e| panic!("setup {i}: {e}"));
        took.entry(i % 5).or_default().push(t0.elapsed());
        if i % 7 == 0 {
            net.setup(&mut s)
                .await
                .unwrap_or_else(|e| panic!("setup again {i}: {e}"));
        }
        net.teardown(&s)
            .await
            .unwrap_or_else(|e| panic!("teardown {i}: {e}"));
        net.release(&s);
        g.states.pop();
    }
    let after = host_counts(&["tb5", "tbv5"]).await;
    for (k, mut v) in took {
        v.sort();
        eprintln!(
            "setup of {}: p50 {:?}, max {:?}",
            [
                "bridge (2 containers, 2 ports)",
                "awsvpc bridge + public IP + SG",
                "none",
                "host",
                "awsvpc LAN"
            ][k],
            v[v.len() / 2],
            v[v.len() - 1]
        );
    }
    assert_eq!(before, after);
    assert_eq!(net.held_counts(), (0, 0));
}

/// Waits (up to `WAIT`) until the host has no link `name`; false if it still has.
async fn link_gone(name: &str) -> bool {
    let path = format!("/sys/class/net/{name}");
    let deadline = tokio::time::Instant::now() + WAIT;
    while std::path::Path::new(&path).exists() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recover_removes_orphans_of_its_scope_only() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.6.0/24", "10.231.106.0/24"]).await;
    let cfg = config(6, (40600, 40649));
    let first = Arc::new(LinuxNetwork::new(cfg.clone()).expect("config"));
    let mut g = Guard::new(first.clone());
    g.bridges.extend(["tb6".to_string(), "tbv6".to_string()]);

    let mut kept = first
        .allocate(&plan(
            "nt-keep",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, Some(40640), Protocol::Tcp)],
        ))
        .expect("allocate");
    g.states.push(kept.clone());
    first.setup(&mut kept).await.expect("setup");
    let mut p = plan("nt-orphan", Mode::Awsvpc, &["a"], vec![]);
    p.awsvpc = Some(awsvpc("subnet-t6", None, true, vec![]));
    let mut orphan = first.allocate(&p).expect("allocate");
    g.states.push(orphan.clone());
    first.setup(&mut orphan).await.expect("setup");
    let mut orphan2 = first
        .allocate(&plan(
            "nt-orphan2",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, None, Protocol::Tcp)],
        ))
        .expect("allocate");
    g.states.push(orphan2.clone());
    first.setup(&mut orphan2).await.expect("setup");
    // A stray veth of ours: a port of our bridge that no task names.
    let stray = veth_name("nt-stray", 0);
    run(
        &[
            "ip", "link", "add", &stray, "type", "veth", "peer", "name", "tstray6",
        ],
        false,
    )
    .await;
    g.links.push(stray.clone());
    run(&["ip", "link", "set", &stray, "master", "tb6"], false).await;
    // A half-made task: a namespace of our scope nothing names, its veth made but not yet on
    // the bridge (it goes with the namespace).
    let half = veth_name("nt-half", 0);
    run(&["ip", "netns", "add", "tb6-nt-half"], false).await;
    g.namespaces.push("tb6-nt-half".into());
    run(
        &[
            "ip",
            "link",
            "add",
            &half,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            "tb6-nt-half",
        ],
        false,
    )
    .await;
    g.links.push(half.clone());

    // Another agent's scope (bridge `tb60`): a namespace, a veth on its bridge and a chain
    // named like our orphan's, none of which this agent holds. Recover must leave them alone.
    // (`tb60-…` also starts with our bridge's name, but not with our prefix `tb6-`.)
    let other = veth_name("nt-other", 0);
    run(&["ip", "link", "add", "tb60", "type", "bridge"], false).await;
    g.bridges.push("tb60".into());
    run(&["ip", "netns", "add", "tb60-orphan"], false).await;
    g.namespaces.push("tb60-orphan".into());
    run(
        &[
            "ip", "link", "add", &other, "type", "veth", "peer", "name", "tother6",
        ],
        false,
    )
    .await;
    g.links.push(other.clone());
    run(&["ip", "link", "set", &other, "master", "tb60"], false).await;
    g.tables.push("tb60".into());
    run(&["nft", "add", "table", "ip", "tb60"], false).await;
    run(&["nft", "add", "chain", "ip", "tb60", "m-nt-orphan"], false).await;

    tcp_server(&kept.namespaces["a"].name, 80, 2);
    tcp_echo(None, sa([127, 0, 0, 1], 40640), WAIT).expect("before the crash");

    // The agent "crashes" and comes back with only nt-keep in its records.
    let second = LinuxNetwork::new(cfg).expect("config");
    let held = vec![kept.clone()];
    let removed = second.recover(&held).await.expect("recover");
    let text = removed.join("\n");
    for want in [
        "namespace tb6-nt-orphan".to_string(),
        "namespace tb6-nt-orphan2-0".to_string(),
        "namespace tb6-nt-half".to_string(),
        format!("link {}", veth_name("nt-orphan", 0)),
        format!("link {}", veth_name("nt-orphan2", 0)),
        format!("link {stray}"),
        "nft chain m-nt-orphan".to_string(),
        "nft chain t-nt-orphan2".to_string(),
    ] {
        assert!(text.contains(&want), "{want} not removed: {text}");
    }
    assert!(!text.contains("nt-keep"), "{text}");
    assert!(!text.contains(&veth_name("nt-keep", 0)), "{text}");
    // The half-made task's veth goes when the kernel frees its namespace, which it does
    // asynchronously after the last reference is dropped.
    for gone in [veth_name("nt-orphan", 0), stray.clone(), half.clone()] {
        assert!(link_gone(&gone).await, "{gone} is still there");
    }
    let links = run(&["ip", "-br", "link"], false).await;
    assert!(links.contains(&veth_name("nt-keep", 0)), "{links}");
    for ns in ["tb6-nt-orphan", "tb6-nt-orphan2-0", "tb6-nt-half"] {
        assert!(
            !std::path::Path::new(&format!("/run/netns/{ns}")).exists(),
            "{ns} is still there"
        );
    }
    let rules = run(&["nft", "list", "table", "ip", "tb6"], false).await;
    assert!(!rules.contains("nt-orphan"), "{rules}");
    assert!(rules.contains("t-nt-keep"), "{rules}");
    // The other scope is untouched.
    assert!(!text.contains("tb60") && !text.contains(&other), "{text}");
    assert!(
        std::path::Path::new("/run/netns/tb60-orphan").exists(),
        "another scope's namespace was removed: {text}"
    );
    let on_other = json(&run(&["ip", "-j", "link", "show", "master", "tb60"], false).await);
    assert_eq!(
        on_other[0]["ifname"].as_str(),
        Some(other.as_str()),
        "another scope's veth was removed: {text}"
    );
    let other_rules = run(&["nft", "list", "table", "ip", "tb60"], false).await;
    assert!(other_rules.contains("m-nt-orphan"), "{other_rules}");
    // The kept task still answers, and its port is held by the new agent.
    tcp_echo(None, sa([127, 0, 0, 1], 40640), WAIT).expect("after recover");
    assert!(matches!(
        second.allocate(&plan(
            "nt-new",
            Mode::Bridge,
            &["a"],
            vec![port("a", 80, Some(40640), Protocol::Tcp)]
        )),
        Err(NetworkError::PortInUse { port: 40640, .. })
    ));
    let fresh = second
        .allocate(&plan("nt-new", Mode::Bridge, &["a"], vec![]))
        .expect("allocate");
    assert_ne!(
        fresh.namespaces["a"].interface.as_ref().map(|i| i.address),
        kept.namespaces["a"].interface.as_ref().map(|i| i.address),
        "the kept address was handed out again"
    );
    // Recover again: nothing more to remove.
    let again = second.recover(&held).await.expect("recover");
    assert!(again.is_empty(), "{again:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lan_backend_macvlan_is_reachable_from_the_lan() {
    if !prerequisites() {
        return;
    }
    let _l = LOCK.lock().await;
    assert_unused(&["10.231.7.0/24"]).await;
    let mut cfg = config(7, (40700, 40749));
    cfg.subnets = vec![SubnetConfig {
        name: "lan-t7".into(),
        cidr: Ipv4Addr::new(10, 231, 7, 0),
        prefix: 24,
        backend: SubnetBackend::Lan {
            parent: "tlan7".into(),
            gateway: Some(Ipv4Addr::new(10, 231, 7, 50)),
            first: Ipv4Addr::new(10, 231, 7, 100),
            last: Ipv4Addr::new(10, 231, 7, 150),
        },
    }];
    let net = Arc::new(LinuxNetwork::new(cfg).expect("config"));
    let mut g = Guard::new(net.clone());
    // The LAN: a veth whose host end is the macvlan parent, the other end a "LAN host".
    run(&["ip", "netns", "add", "bt-lanhost7"], false).await;
    g.namespaces.push("bt-lanhost7".into());
    run(
        &[
            "ip",
            "link",
            "add",
            "tlan7",
            "type",
            "veth",
            "peer",
            "name",
            "l0",
            "netns",
            "bt-lanhost7",
        ],
        false,
    )
    .await;
    g.links.push("tlan7".into());
    run(&["ip", "link", "set", "tlan7", "up"], false).await;
    run(
        &[
            "ip",
            "-n",
            "bt-lanhost7",
            "addr",
            "add",
            "10.231.7.50/24",
            "dev",
            "l0",
        ],
        false,
    )
    .await;
    run(
        &["ip", "-n", "bt-lanhost7", "link", "set", "l0", "up"],
        false,
    )
    .await;

    let mut p = plan("nt-lan", Mode::Awsvpc, &["a"], vec![]);
    p.awsvpc = Some(awsvpc(
        "lan-t7",
        Some(Ipv4Addr::new(10, 231, 7, 120)),
        false,
        vec![tcp_rule([10, 231, 7, 0], 24, 8000, 8000)],
    ));
    let mut s = net.allocate(&p).expect("allocate");
    g.states.push(s.clone());
    net.setup(&mut s).await.expect("setup");
    let ns = s.namespaces[""].name.clone();
    let a = ns_addrs(&ns).await;
    assert_eq!(a["eth0"].0, vec!["10.231.7.120/24"]);
    assert_eq!(default_gateway(&ns).await.as_deref(), Some("10.231.7.50"));
    let i = s.namespaces[""].interface.clone().expect("iface");
    assert_eq!(i.host_link.as_deref(), Some("tlan7"));
    let link = json(
        &run(
            &["ip", "-n", &ns, "-j", "-d", "link", "show", "eth0"],
            false,
        )
        .await,
    );
    assert_eq!(link[0]["linkinfo"]["info_kind"], "macvlan", "{link}");
    assert_eq!(link[0]["address"].as_str(), i.mac.as_deref());

    tcp_server(&ns, 8000, 1);
    tcp_echo(Some("bt-lanhost7"), sa([10, 231, 7, 120], 8000), WAIT)
        .expect("the LAN host reaches the task");
    // The task reaches the LAN host too (egress open).
    tcp_server("bt-lanhost7", 8001, 1);
    tcp_echo(Some(&ns), sa([10, 231, 7, 50], 8001), WAIT).expect("the task reaches the LAN host");
    // Outside the range: refused.
    let mut p = plan("nt-lan2", Mode::Awsvpc, &["a"], vec![]);
    p.awsvpc = Some(awsvpc(
        "lan-t7",
        Some(Ipv4Addr::new(10, 231, 7, 151)),
        false,
        vec![],
    ));
    assert!(matches!(net.allocate(&p), Err(NetworkError::Invalid(_))));
    net.teardown(&s).await.expect("teardown");
    assert!(!std::path::Path::new(&format!("/run/netns/{ns}")).exists());
}
