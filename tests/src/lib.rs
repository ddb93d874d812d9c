//! Harness for Berth's integration tests: a private containerd, the real `berth-controller`,
//! `berth-agent` and `berth` binaries, and a busybox image built on the spot. Everything a test
//! starts or creates is removed when its [`Cluster`] is dropped.
//!
//! Tests on real containers need root, containerd, runc and busybox-static ([`prerequisites`]):
//! without them such a test is skipped with a message, except under `CI=true`, where it fails.
//! Tests that need only the binaries (operator errors, CLI parsing, bad input that never reaches
//! containerd) use [`Cluster::controller_only`]: no containerd, no agent, no root, never skipped.

pub mod aws;
pub mod images;
pub mod lab;
pub mod registry;

use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The image every test runs.
pub const IMAGE: &str = "localhost/busybox:latest";

pub(crate) static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The directory holding the workspace's binaries (target/debug or target/release).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // target/<profile>/deps/<test-binary>, or target/<profile>/<bench-binary>
    let dir = exe.parent().expect("executable dir");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target dir").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// The path of a workspace binary.
pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// Whether this host can run the integration tests; under CI=true a missing prerequisite
/// panics instead of skipping.
pub fn prerequisites() -> bool {
    let mut missing = Vec::new();
    if !nix::unistd::Uid::effective().is_root() {
        missing.push("root".to_string());
    }
    for tool in ["containerd", "runc", "ctr"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            missing.push(tool.to_string());
        }
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("busybox-static".to_string());
    }
    if missing.is_empty() {
        return true;
    }
    let msg = format!("integration prerequisites missing: {}", missing.join(", "));
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// `GET /` on `addr` from inside the network namespace `/run/netns/NS` (a thread that setns'es
/// there; busybox's static wget crashes on glibc hosts, so no process is used). The response,
/// or `None` when the connection fails or times out.
pub fn http_get_in_netns(ns: &str, addr: std::net::SocketAddr) -> Option<String> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        let f = std::fs::File::open(&path).ok()?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut body = String::new();
        s.read_to_string(&mut body).ok()?;
        Some(body)
    })
    .join()
    .ok()
    .flatten()
}

/// A free loopback TCP port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `f` until it returns Some or `timeout` passes (panicking with `what`).
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// The test image's archive, built once by scripts/busybox-image.sh and kept under the
/// workspace's target/ (a build artifact, like the binaries), named after what it is built from:
/// the script, the image name and the busybox binary it copies. Test processes reuse it instead
/// of each leaving an archive in /tmp.
pub(crate) fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        use std::hash::{Hash, Hasher};
        let script = workspace_root().join("scripts/busybox-image.sh");
        let mut h = std::collections::hash_map::DefaultHasher::new();
        std::fs::read(&script)
            .expect("reading scripts/busybox-image.sh")
            .hash(&mut h);
        IMAGE.hash(&mut h);
        if let Ok(m) = std::fs::metadata("/bin/busybox") {
            m.len().hash(&mut h);
            m.modified().ok().hash(&mut h);
        }
        let dir = workspace_root().join("target/berth-it-image");
        std::fs::create_dir_all(&dir).expect("image dir");
        let out = dir.join(format!("busybox-{:016x}.tar", h.finish()));
        if out.is_file() {
            return out;
        }
        // Built under a name of this process, then renamed: a concurrent test process never
        // reads a half-written archive.
        let part = dir.join(format!(".busybox-{}.tar", std::process::id()));
        let status = Command::new(&script)
            .arg(&part)
            .arg(IMAGE)
            .stdout(Stdio::null())
            .status()
            .expect("running scripts/busybox-image.sh");
        assert!(status.success(), "building the busybox image failed");
        std::fs::rename(&part, &out).expect("moving the image archive into place");
        out
    })
}

/// /sys/fs/cgroup (v2's root) and each hierarchy below it (v1's controllers, hybrid's unified).
fn cgroup_roots() -> Vec<PathBuf> {
    let mut out = vec![PathBuf::from("/sys/fs/cgroup")];
    if let Ok(entries) = std::fs::read_dir("/sys/fs/cgroup") {
        out.extend(
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir() && !p.is_symlink()),
        );
    }
    out
}

/// A private containerd's command: its root, state and sockets under DIR/cd, its config written
/// to DIR/containerd.toml (its socket: DIR/cd/containerd.sock). Not started.
pub(crate) fn containerd_command(dir: &Path) -> Command {
    let cd = dir.join("cd");
    let config = dir.join("containerd.toml");
    std::fs::write(
        &config,
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n[debug]\n  address = \"{0}/debug.sock\"\n",
            cd.display()
        ),
    )
    .expect("containerd config");
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(&config);
    cmd
}

/// Waits for the socket of the containerd of [`containerd_command`]`(dir)`.
pub(crate) fn wait_containerd(dir: &Path) {
    let sock = dir.join("cd/containerd.sock");
    wait_for("containerd's socket", Duration::from_secs(20), || {
        sock.exists().then_some(())
    });
}

/// Loads the test image into the containerd at `socket`.
pub(crate) fn load_image_into(socket: &Path) {
    let out = registry::output_within(
        Command::new(bin("berth-agent"))
            .args(["--containerd-socket"])
            .arg(socket)
            .args(["image", "load"])
            .arg(image_archive()),
        Duration::from_secs(120),
    )
    .expect("berth-agent image load");
    assert!(
        out.status.success(),
        "image load failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Kills the containers of the containerd at `socket` (namespace `berth`), deletes them, then
/// kills containerd itself.
pub(crate) fn stop_containerd(mut containerd: Child, socket: &Path) {
    let ctr = |args: &[&str]| {
        registry::output_within(
            Command::new("ctr")
                .arg("-a")
                .arg(socket)
                .args(["-n", "berth"])
                .args(args),
            Duration::from_secs(30),
        )
    };
    if let Ok(out) = ctr(&["tasks", "ls", "-q"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
            let _ = ctr(&["tasks", "delete", "-f", id]);
        }
    }
    if let Ok(out) = ctr(&["containers", "ls", "-q"]) {
        for id in String::from_utf8_lossy(&out.stdout).lines() {
            let _ = ctr(&["containers", "delete", id]);
        }
    }
    let _ = containerd.kill();
    let _ = containerd.wait();
}

/// Shims, mounts and cgroups that the private containerd under `dir` (see
/// [`containerd_command`]) and its tasks under `cgroup_parent` leave behind.
pub(crate) fn remove_containerd_leftovers(dir: &Path, cgroup_parent: &str) {
    // Shims outlive containerd: end the ones serving this containerd (their command lines
    // name its socket, under `dir`).
    let _ = Command::new("pkill")
        .arg("-9")
        .arg("-f")
        .arg(format!("containerd-shim.*{}", dir.display()))
        .status();
    // Every mount below DIR/cd, deepest first: the snapshots' and the tasks' root filesystems
    // (a task's stays mounted when its shim is killed instead of deleting it).
    let cd = dir.join("cd");
    let mut mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape_mount_path(m)))
        .filter(|m| m.starts_with(&cd))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in mounts {
        let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
    }
    // Task cgroups (deepest first), then the parent, in every hierarchy.
    for root in cgroup_roots() {
        let parent = root.join(cgroup_parent);
        if let Ok(tasks) = std::fs::read_dir(&parent) {
            for t in tasks.flatten().filter(|t| t.path().is_dir()) {
                if let Ok(cs) = std::fs::read_dir(t.path()) {
                    for c in cs.flatten().filter(|c| c.path().is_dir()) {
                        let _ = std::fs::remove_dir(c.path());
                    }
                }
                let _ = std::fs::remove_dir(t.path());
            }
        }
        let _ = std::fs::remove_dir(&parent);
    }
}

/// A mount point as /proc/self/mountinfo writes it (space, tab, newline and backslash as
/// octal escapes), unescaped.
fn unescape_mount_path(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(d)) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Cgroup directories named `cgroup_parent` in any hierarchy.
pub(crate) fn cgroup_parent_leftovers(cgroup_parent: &str) -> Vec<PathBuf> {
    cgroup_roots()
        .into_iter()
        .map(|r| r.join(cgroup_parent))
        .filter(|p| p.exists())
        .collect()
}

fn spawn(cmd: &mut Command, log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    let f2 = f.try_clone().expect("log file");
    cmd.stdout(f)
        .stderr(f2)
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"))
}

/// `msg` as a gRPC request to `path` on `endpoint` (`/berth.v1.Ecs/RunTask`), signed with SigV4 by
/// `creds` as of `at`: what a client other than the `berth` CLI sends.
pub fn signed_request<M: prost::Message>(
    endpoint: &str,
    msg: M,
    path: &str,
    creds: &berth_proto::sigv4::Credentials,
    at: std::time::SystemTime,
) -> tonic::Request<M> {
    use berth_proto::sigv4;
    let host = endpoint
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .to_string();
    let date = sigv4::amz_date(at);
    let input = sigv4::CanonicalInput {
        method: "POST",
        path,
        query: "",
        headers: vec![("host".into(), host), ("x-amz-date".into(), date.clone())],
        payload_sha256: sigv4::hex_sha256(&sigv4::grpc_frame(&msg.encode_to_vec())),
    };
    let service = sigv4::scope_service(path).expect("a /berth.v1.SERVICE/ path");
    let authz = sigv4::authorization(creds, &input, &date, berth_proto::arn::REGION, service);
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert(sigv4::AUTHORIZATION, authz.parse().expect("ASCII"));
    req.metadata_mut()
        .insert(sigv4::X_AMZ_DATE, date.parse().expect("ASCII"));
    req
}

/// The `[default]` key of an aws credentials file (the controller's admin.credentials).
pub fn read_credentials(path: &Path) -> berth_proto::sigv4::Credentials {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.split_once('=').filter(|(n, _)| n.trim() == k))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {k} in {}", path.display()))
    };
    berth_proto::sigv4::Credentials {
        access_key_id: get("aws_access_key_id"),
        secret_access_key: get("aws_secret_access_key"),
    }
}

/// A private containerd, a controller and an agent (one cluster), torn down on drop.
pub struct Cluster {
    /// The test's scratch directory.
    pub dir: PathBuf,
    /// The cluster name.
    pub name: String,
    /// The controller's URL.
    pub endpoint: String,
    /// The agent's cgroup parent.
    pub cgroup_parent: String,
    containerd: Option<Child>,
    controller: Option<Child>,
    agent: Option<Child>,
    controller_port: u16,
    /// The address the controller listens on (127.0.0.1; a lab's bridge address).
    pub(crate) controller_ip: std::net::IpAddr,
    /// Extra environment of the agent (its BERTH_* options).
    agent_env: Vec<(String, String)>,
    /// Whether the controller serves TLS (`--tls on`, an https endpoint): the default;
    /// BERTH_TEST_TLS=off runs the suite without.
    pub tls: bool,
    /// Extra arguments of the controller.
    pub controller_args: Vec<String>,
    /// Whether the controller requires signed calls (`--auth required`): the default.
    pub auth: bool,
    /// The agent's own bridges, subnets and dynamic ports, so tests running side by side never
    /// share a bridge, an address or a published port.
    pub net: NetScope,
}

/// A test agent's networks: names and ranges no other test agent uses.
#[derive(Debug, Clone)]
pub struct NetScope {
    /// The bridge-mode bridge (BERTH_BRIDGE); also the prefix of the agent's namespaces and
    /// the name of its nftables table.
    pub bridge: String,
    /// Its subnet (BERTH_BRIDGE_CIDR).
    pub bridge_cidr: String,
    /// The awsvpc subnet's name (`subnet-it`) …
    pub subnet: String,
    /// … its bridge …
    pub vpc_bridge: String,
    /// … and its CIDR.
    pub vpc_cidr: String,
    /// The first and last dynamic host port (BERTH_DYNAMIC_PORTS).
    pub ports: (u16, u16),
}

impl NetScope {
    fn new(n: u32) -> Self {
        let pid = std::process::id();
        // 10.(128..191).(n).0/24 for bridge mode and 10.(192..255).(n).0/24 for awsvpc: one /24
        // per cluster of this test process; another process (another test binary, run after
        // this one) most likely takes another second octet.
        let second = pid % 64;
        let third = n % 256;
        let base = 20000 + (n % 150) * 200;
        NetScope {
            bridge: format!("bb{:x}x{n}", pid & 0xffff),
            bridge_cidr: format!("10.{}.{third}.0/24", 128 + second),
            subnet: "subnet-it".into(),
            vpc_bridge: format!("bw{:x}x{n}", pid & 0xffff),
            vpc_cidr: format!("10.{}.{third}.0/24", 192 + second),
            ports: (base as u16, (base + 199) as u16),
        }
    }

    /// The agent's environment for these networks.
    pub fn agent_env(&self) -> Vec<(String, String)> {
        vec![
            ("BERTH_BRIDGE".into(), self.bridge.clone()),
            ("BERTH_BRIDGE_CIDR".into(), self.bridge_cidr.clone()),
            (
                "BERTH_SUBNETS".into(),
                format!(
                    "name={},cidr={},bridge={}",
                    self.subnet, self.vpc_cidr, self.vpc_bridge
                ),
            ),
            (
                "BERTH_DYNAMIC_PORTS".into(),
                format!("{}-{}", self.ports.0, self.ports.1),
            ),
            // Issue 9: agents side by side cannot all have the metadata endpoint's default
            // port; a free one is taken at each start (a restarted agent's differs, so a
            // host-mode task started before a restart has a stale URI: tests don't rely on it).
            ("BERTH_METADATA_ADDRESS".into(), "127.0.0.1:0".into()),
        ]
    }

    /// Namespaces, links and nftables tables of this scope still on the host.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(d) = std::fs::read_dir("/run/netns") {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{}-", self.bridge)) {
                    out.push(format!("netns {name}"));
                }
            }
        }
        for link in [&self.bridge, &self.vpc_bridge] {
            if Path::new("/sys/class/net").join(link).exists() {
                out.push(format!("link {link}"));
            }
        }
        let tables = Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default();
        for l in tables.lines() {
            if l.split_whitespace().last() == Some(self.bridge.as_str()) {
                out.push(l.to_string());
            }
        }
        out
    }

    /// Removes whatever of this scope is left (after the agent and containerd are gone).
    pub fn remove_leftovers(&self) {
        if let Ok(d) = std::fs::read_dir("/run/netns") {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&format!("{}-", self.bridge)) {
                    let _ = Command::new("ip").args(["netns", "delete", &name]).status();
                }
            }
        }
        for link in [&self.bridge, &self.vpc_bridge] {
            if Path::new("/sys/class/net").join(link).exists() {
                let _ = Command::new("ip").args(["link", "delete", link]).status();
            }
        }
        let _ = Command::new("nft")
            .args(["delete", "table", "ip", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}

impl Cluster {
    /// Starts containerd, loads the image, starts the controller, creates the cluster and
    /// starts an agent in it, waiting until the instance is connected.
    pub fn start(test: &str) -> Self {
        Self::start_with_agent_env(test, &[])
    }

    /// [`Cluster::start`], the agent having these extra environment variables (BERTH_* options).
    pub fn start_with_agent_env(test: &str, agent_env: &[(&str, &str)]) -> Self {
        let c = Self::new(test, agent_env);
        c.launch()
    }

    /// [`Cluster::start`], the controller having these extra arguments.
    pub fn start_with_controller_args(test: &str, args: &[&str]) -> Self {
        let mut c = Self::new(test, &[]);
        c.controller_args = args.iter().map(|a| a.to_string()).collect();
        c.launch()
    }

    /// [`Cluster::start`] as the single-host demo runs: no TLS (an http endpoint, agents without
    /// certificates) and no signed calls (`--auth off`). The bench compares it with the default.
    pub fn start_plain(test: &str) -> Self {
        let mut c = Self::new(test, &[]);
        c.tls = false;
        c.auth = false;
        c.endpoint = c.endpoint.replacen("https://", "http://", 1);
        c.launch()
    }

    /// Starts containerd, loads the image, starts the controller, creates the cluster and
    /// starts the agent, waiting until it is connected.
    fn launch(mut self) -> Self {
        self.start_containerd();
        self.load_image();
        self.start_controller();
        self.ok(&["create-cluster", "--cluster-name", &self.name.clone()]);
        self.start_agent();
        self.wait_agent_connected();
        self
    }

    /// Starts only the controller and creates the cluster: no containerd, no agent, so the
    /// cluster has no container instances. Needs neither root nor containerd.
    pub fn controller_only(test: &str) -> Self {
        let mut c = Self::new(test, &[]);
        c.start_controller();
        c.ok(&["create-cluster", "--cluster-name", &c.name.clone()]);
        c
    }

    /// [`Cluster::controller_only`] as the single-host demo runs it: no TLS and no signed calls
    /// (`--auth off`).
    pub fn controller_only_plain(test: &str) -> Self {
        let mut c = Self::new(test, &[]);
        c.tls = false;
        c.auth = false;
        c.endpoint = c.endpoint.replacen("https://", "http://", 1);
        c.start_controller();
        c.ok(&["create-cluster", "--cluster-name", &c.name.clone()]);
        c
    }

    fn new(test: &str, agent_env: &[(&str, &str)]) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}-{}", std::process::id(), n);
        let dir = std::env::temp_dir().join(format!("berth-it-{test}-{tag}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let port = free_port();
        let tls = std::env::var("BERTH_TEST_TLS").map_or(true, |v| v != "off");
        Cluster {
            name: format!("it-{test}").replace('_', "-"),
            endpoint: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            tls,
            controller_args: Vec::new(),
            auth: true,
            cgroup_parent: format!("berth-it-{tag}"),
            containerd: None,
            controller: None,
            agent: None,
            controller_port: port,
            controller_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            agent_env: NetScope::new(n)
                .agent_env()
                .into_iter()
                // A stopped task's containers go at once unless a test sets a cleanup wait
                // (its own value comes later and wins).
                .chain([("BERTH_TASK_CLEANUP_WAIT".to_string(), "0s".to_string())])
                .chain(
                    agent_env
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string())),
                )
                .collect(),
            net: NetScope::new(n),
            dir,
        }
    }

    /// containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cd/containerd.sock")
    }

    fn start_containerd(&mut self) {
        let child = spawn(
            &mut containerd_command(&self.dir),
            &self.dir.join("containerd.log"),
        );
        self.containerd = Some(child);
        wait_containerd(&self.dir);
    }

    fn load_image(&self) {
        load_image_into(&self.socket());
    }

    /// Starts (or restarts) the controller on the same port and data dir.
    pub fn start_controller(&mut self) {
        let child = spawn(
            Command::new(bin("berth-controller"))
                .arg("--listen")
                .arg(
                    std::net::SocketAddr::new(self.controller_ip, self.controller_port).to_string(),
                )
                .arg("--data-dir")
                .arg(self.dir.join("controller"))
                .arg("--config")
                .arg(self.dir.join("none.conf"))
                // Signed calls even on loopback: the suite runs as a network deployment does.
                .args(["--auth", if self.auth { "required" } else { "off" }])
                .args(["--tls", if self.tls { "on" } else { "off" }])
                .args(&self.controller_args),
            &self.dir.join(format!(
                "controller-{}.log",
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
        );
        self.controller = Some(child);
        let addr = std::net::SocketAddr::new(self.controller_ip, self.controller_port);
        wait_for("the controller to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(addr).ok()
        });
    }

    /// The controller's CA certificate (made on its first start).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("controller/ca.pem")
    }

    /// A gRPC channel to the controller (trusting its CA with TLS on).
    pub async fn channel(&self) -> anyhow::Result<tonic::transport::Channel> {
        let mut e = tonic::transport::Endpoint::from_shared(self.endpoint.clone())?;
        if self.tls {
            let ca = std::fs::read_to_string(self.ca_file())?;
            e = e.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
            )?;
        }
        Ok(e.connect().await?)
    }

    /// The agent's data dir (its TLS files are in `tls/`).
    pub fn agent_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// The agent's record of a task (`<agent dir>/tasks/<id>.json`: what it reports), by the
    /// task's ARN or ID; `None` while it holds none (or it is half-written).
    pub fn task_record(&self, task: &str) -> Option<Value> {
        let id = task.rsplit('/').next().unwrap_or(task);
        let path = self.agent_dir().join("tasks").join(format!("{id}.json"));
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Creates an SSM activation (`berth ssm create-activation --iam-role berth-test ARGS`);
    /// returns its ActivationId, ActivationCode and CaFingerprint.
    pub fn create_activation(&self, args: &[&str]) -> (String, String, String) {
        let mut all = vec!["create-activation", "--iam-role", "berth-test"];
        all.extend_from_slice(args);
        let out = self.berth_service("ssm", &all);
        assert!(
            out.status.success(),
            "berth ssm create-activation failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("create-activation JSON");
        let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
        (s("ActivationId"), s("ActivationCode"), s("CaFingerprint"))
    }

    /// The agent's enrollment environment: with TLS and no client certificate yet, a new
    /// activation and the CA fingerprint to pin.
    fn enrollment_env(&self) -> Vec<(String, String)> {
        self.enrollment_env_for(&self.agent_dir())
    }

    /// [`Cluster::enrollment_env`] of the agent with data dir `agent_dir`.
    pub(crate) fn enrollment_env_for(&self, agent_dir: &Path) -> Vec<(String, String)> {
        if !self.tls || agent_dir.join("tls/client.pem").exists() {
            return Vec::new();
        }
        let (id, code, fingerprint) = self.create_activation(&[]);
        vec![
            ("BERTH_ACTIVATION_ID".into(), id),
            ("BERTH_ACTIVATION_CODE".into(), code),
            ("BERTH_CA_FINGERPRINT".into(), fingerprint),
        ]
    }

    /// A `berth-agent` command for this cluster with data dir `data_dir` (not started).
    pub fn agent_command(&self, data_dir: &Path) -> Command {
        self.agent_command_with(
            data_dir,
            &self.socket(),
            &self.cgroup_parent,
            &self.agent_env,
        )
    }

    /// A `berth-agent` command for this cluster's controller with data dir `data_dir`, its
    /// containerd at `socket`, its cgroups under `cgroup_parent` and the environment `env`
    /// (BERTH_* options) (not started).
    pub(crate) fn agent_command_with(
        &self,
        data_dir: &Path,
        socket: &Path,
        cgroup_parent: &str,
        env: &[(String, String)],
    ) -> Command {
        let mut cmd = Command::new(bin("berth-agent"));
        cmd.arg("--controller")
            .arg(&self.endpoint)
            .arg("--cluster")
            .arg(&self.name)
            .arg("--data-dir")
            .arg(data_dir)
            .arg("--containerd-socket")
            .arg(socket)
            .arg("--cgroup-parent")
            .arg(cgroup_parent)
            .arg("--config")
            .arg(self.dir.join("none.conf"))
            .env("RUST_LOG", "info")
            // Tests never reach beyond loopback: a pull of another registry fails unsent.
            .env("BERTH_ALLOWED_REGISTRIES", "127.0.0.1,localhost")
            .envs(env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Starts (or restarts) the agent with the same data dir.
    pub fn start_agent(&mut self) {
        let env: Vec<(String, String)> = self
            .enrollment_env()
            .into_iter()
            .chain(self.agent_env.iter().cloned())
            .collect();
        let child = spawn(
            self.agent_command_with(&self.agent_dir(), &self.socket(), &self.cgroup_parent, &env)
                .arg("--availability-zone")
                .arg("lab-1a"),
            &self.dir.join(format!(
                "agent-{}.log",
                COUNTER.fetch_add(1, Ordering::Relaxed)
            )),
        );
        self.agent = Some(child);
    }

    /// Waits until the cluster shows a connected container instance.
    pub fn wait_agent_connected(&self) {
        wait_for("the agent to connect", Duration::from_secs(30), || {
            let arns = self.json(&["list-container-instances", "--cluster", &self.name]);
            let arn = arns["containerInstanceArns"][0].as_str()?.to_string();
            let d = self.json(&[
                "describe-container-instances",
                "--cluster",
                &self.name,
                "--container-instances",
                &arn,
            ]);
            (d["containerInstances"][0]["agentConnected"] == true).then_some(())
        });
    }

    /// The agent's process id.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(|c| c.id())
    }

    /// kill -9 the controller.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Deletes the controller's store (a controller restored from nothing); kill it first.
    /// With TLS its CA is kept (an operator restores it with the keys), but the records of the
    /// agents' certificates are gone: the agent's client certificate is removed too, so the
    /// next [`Cluster::start_agent`] enrolls anew.
    pub fn wipe_controller_store(&self) {
        if self.tls {
            let _ = std::fs::remove_file(self.dir.join("controller/state.redb"));
            let _ = std::fs::remove_file(self.agent_dir().join("tls/client.pem"));
            let _ = std::fs::remove_file(self.agent_dir().join("tls/client.key"));
        } else {
            let _ = std::fs::remove_dir_all(self.dir.join("controller"));
        }
    }

    /// kill -9 the agent.
    pub fn kill_agent(&mut self) {
        if let Some(mut c) = self.agent.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs `berth ecs ARGS...` against this controller, signed with the admin key.
    pub fn berth(&self, args: &[&str]) -> Output {
        let mut all = vec!["ecs"];
        all.extend_from_slice(args);
        self.berth_with(&[], &all)
    }

    /// The admin key the controller wrote on its first start (aws credentials-file format).
    pub fn admin_credentials(&self) -> PathBuf {
        self.dir.join("controller").join("admin.credentials")
    }

    /// Runs `berth ARGS...` (ARGS naming the service) against this controller, with the admin
    /// key's credentials file and these extra environment variables.
    pub fn berth_with(&self, env: &[(&str, &str)], args: &[&str]) -> Output {
        self.berth_command()
            .envs(env.iter().copied())
            .args(args)
            .current_dir(&self.dir)
            .output()
            .expect("running berth")
    }

    /// RegisterTaskDefinition of `json` that the controller must refuse: its error output.
    pub fn register_refused(&self, json: &str) -> String {
        let file = self.dir.join(format!(
            "td-{}.json",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, json).expect("writing task definition");
        let arg = format!("file://{}", file.display());
        let out = self.berth(&["register-task-definition", "--cli-input-json", &arg]);
        assert!(!out.status.success(), "registered: {json}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `berth SERVICE ARGS...` (ssm, secretsmanager, iam…) against this controller.
    pub fn berth_service(&self, service: &str, args: &[&str]) -> Output {
        let mut all = vec![service];
        all.extend_from_slice(args);
        self.berth_with(&[], &all)
    }

    /// Runs `berth SERVICE ARGS...`, asserting success, and parses its JSON output.
    pub fn service_json(&self, service: &str, args: &[&str]) -> Value {
        let out = self.berth_service(service, args);
        assert!(
            out.status.success(),
            "berth {service} {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("berth {service} {args:?}: not JSON ({e}): {text}"))
    }

    /// `msg` as a gRPC request to `path`, signed by `creds` as of `at` ([`signed_request`]).
    pub fn signed<M: prost::Message>(
        &self,
        msg: M,
        path: &str,
        creds: &berth_proto::sigv4::Credentials,
        at: std::time::SystemTime,
    ) -> tonic::Request<M> {
        signed_request(&self.endpoint, msg, path, creds, at)
    }

    /// [`Cluster::signed`] by the admin key, now.
    pub fn admin_signed<M: prost::Message>(&self, msg: M, path: &str) -> tonic::Request<M> {
        let creds = read_credentials(&self.admin_credentials());
        self.signed(msg, path, &creds, std::time::SystemTime::now())
    }

    /// Runs `berth SERVICE ARGS...` with the admin key, asserting success; returns stdout.
    pub fn ok_in(&self, service: &str, args: &[&str]) -> String {
        let mut all = vec![service];
        all.extend_from_slice(args);
        let out = self.berth_with(&[], &all);
        assert!(
            out.status.success(),
            "berth {all:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `berth ecs ARGS...`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.berth(args);
        assert!(
            out.status.success(),
            "berth ecs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `berth ecs ARGS...` and parses its JSON output.
    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("berth ecs {args:?}: not JSON ({e}): {text}"))
    }

    /// Registers a task definition given as JSON text; returns `family:revision`.
    pub fn register(&self, json: &str) -> String {
        let file = self.dir.join(format!(
            "td-{}.json",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, json).expect("writing task definition");
        let arg = format!("file://{}", file.display());
        let v = self.json(&["register-task-definition", "--cli-input-json", &arg]);
        let td = &v["taskDefinition"];
        format!("{}:{}", td["family"].as_str().unwrap_or(""), td["revision"])
    }

    /// Runs one task; returns its ARN.
    pub fn run_task(&self, td: &str) -> String {
        let v = self.json(&["run-task", "--cluster", &self.name, "--task-definition", td]);
        v["tasks"][0]["taskArn"]
            .as_str()
            .unwrap_or_else(|| panic!("run-task placed no task: {v}"))
            .to_string()
    }

    /// The task as describe-tasks shows it.
    pub fn task(&self, arn: &str) -> Value {
        let v = self.json(&["describe-tasks", "--cluster", &self.name, "--tasks", arn]);
        v["tasks"][0].clone()
    }

    /// Waits until the task's lastStatus is `status`; returns the task.
    pub fn wait_status(&self, arn: &str, status: &str, timeout: Duration) -> Value {
        wait_for(&format!("task {arn} to be {status}"), timeout, || {
            let t = self.task(arn);
            (t["lastStatus"] == status).then_some(t)
        })
    }

    /// The cgroup directory of a task (or one of its containers) in a v1 controller.
    pub fn cgroup_dir(&self, controller: &str, task_arn: &str, container: Option<&str>) -> PathBuf {
        let id = task_arn.rsplit('/').next().unwrap_or_default();
        let mut p = PathBuf::from("/sys/fs/cgroup")
            .join(controller)
            .join(&self.cgroup_parent)
            .join(id);
        if let Some(c) = container {
            p = p.join(c);
        }
        p
    }

    /// What a container of a task wrote to stdout and stderr so far: its stdout spool, then
    /// its stderr spool (issue 10: the agent keeps them apart).
    pub fn container_log(&self, task_arn: &str, container: &str) -> String {
        let mut out = String::new();
        for stream in ["stdout", "stderr"] {
            out.push_str(
                &std::fs::read_to_string(self.container_spool(task_arn, container, stream))
                    .unwrap_or_default(),
            );
        }
        out
    }

    /// The spool file of one of a container's streams (`stdout`, `stderr`): the bytes it
    /// wrote, as it wrote them.
    pub fn container_spool(&self, task_arn: &str, container: &str, stream: &str) -> PathBuf {
        let id = task_arn.rsplit('/').next().unwrap_or_default();
        self.dir
            .join("agent/logs")
            .join(id)
            .join(format!("{container}.{stream}.log"))
    }

    /// Every cgroup directory left for a task, in any hierarchy.
    pub fn cgroup_leftovers(&self, task_arn: &str) -> Vec<PathBuf> {
        let id = task_arn.rsplit('/').next().unwrap_or_default();
        cgroup_roots()
            .into_iter()
            .map(|r| r.join(&self.cgroup_parent).join(id))
            .filter(|p| p.exists())
            .collect()
    }

    /// containerd containers in the agent's namespace.
    pub fn containerd_containers(&self) -> Vec<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "berth", "containers", "ls", "-q"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect()
    }

    /// The status containerd gives a container's task (`RUNNING`, `STOPPED`, …), read with
    /// `ctr tasks ls`; `None` when it has no task.
    pub fn containerd_task_status(&self, container_id: &str) -> Option<String> {
        let out = Command::new("ctr")
            .arg("-a")
            .arg(self.socket())
            .args(["-n", "berth", "tasks", "ls"])
            .output()
            .expect("ctr");
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(container_id)).then(|| cols.nth(1).unwrap_or_default().to_string())
        })
    }

    /// The agent's log so far (for failure messages).
    pub fn agent_log(&self) -> String {
        let mut logs = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("agent-") {
                    logs.push_str(&std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        logs
    }
}

/// Runs `berth ecs ARGS...` and asserts it fails with exit `code` and `needle` on stderr.
pub fn assert_fails(c: &Cluster, args: &[&str], code: i32, needle: &str) {
    let out = c.berth(args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "berth ecs {args:?}: {err}");
    assert!(
        err.contains(needle),
        "berth ecs {args:?}: expected '{needle}' in: {err}"
    );
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.kill_agent();
        self.kill_controller();
        // Stop whatever containers are left, then containerd and its shims.
        if let Some(cd) = self.containerd.take() {
            stop_containerd(cd, &self.socket());
            remove_containerd_leftovers(&self.dir, &self.cgroup_parent);
            self.net.remove_leftovers();
        }
        if std::thread::panicking() {
            eprintln!("test files kept for inspection in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cluster {
    /// `berth --endpoint-url …` with the admin key's credentials (and the CA with TLS on), to
    /// be given its arguments and stdio by the caller (`berth_with` runs it to completion; a
    /// test driving it through a pseudo-terminal spawns it instead).
    pub fn berth_command(&self) -> Command {
        let mut cmd = Command::new(bin("berth"));
        for v in [
            "BERTH_ACCESS_KEY_ID",
            "BERTH_SECRET_ACCESS_KEY",
            "BERTH_SESSION_TOKEN",
            "BERTH_PROFILE",
        ] {
            cmd.env_remove(v);
        }
        if self.tls {
            cmd.env("BERTH_CA_BUNDLE", self.ca_file());
        }
        cmd.env("BERTH_SHARED_CREDENTIALS_FILE", self.admin_credentials())
            .arg("--endpoint-url")
            .arg(&self.endpoint)
            .current_dir(&self.dir);
        cmd
    }

    /// The controller's audit log (DATA_DIR/audit.log), one JSON value per line.
    pub fn audit_log(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("controller").join("audit.log"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Cluster {
    /// Issue 10: the bytes a container wrote to `stream` (`stdout`, `stderr`) that wait in its
    /// pipe, not yet in its spool (while no agent reads, its output waits there). Read with
    /// FIONREAD on a read end of the FIFO, consuming nothing.
    pub fn container_pending_output(&self, task_arn: &str, container: &str, stream: &str) -> usize {
        pending_in_fifo(
            &self
                .container_spool(task_arn, container, stream)
                .with_extension("fifo"),
        )
    }
}

/// Issue 10: the bytes waiting in a FIFO (FIONREAD on a read end of it, consuming nothing); 0
/// when it cannot be opened.
pub fn pending_in_fifo(fifo: &Path) -> usize {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(fifo)
    else {
        return 0;
    };
    let mut n: nix::libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer, which outlives the call.
    let r = unsafe { nix::libc::ioctl(f.as_raw_fd(), nix::libc::FIONREAD, &mut n) };
    if r < 0 {
        0
    } else {
        n as usize
    }
}

impl Cluster {
    /// Issue 11: only a private containerd (no image loaded, no controller, no agent), for
    /// `berth-agent image …` and `ctr` against it (the pull benchmark, pull tests that need no
    /// task). Removed on drop like a whole cluster.
    pub fn containerd_only(test: &str) -> Self {
        let mut c = Self::new(test, &[]);
        c.start_containerd();
        c
    }

    /// Issue 11: `ctr -a SOCKET -n NAMESPACE ARGS...` against this cluster's containerd,
    /// within `timeout`.
    pub fn ctr(&self, namespace: &str, args: &[&str], timeout: Duration) -> Output {
        registry::output_within(
            Command::new("ctr")
                .arg("-a")
                .arg(self.socket())
                .args(["-n", namespace])
                .args(args),
            timeout,
        )
        .unwrap_or_else(|e| panic!("ctr {args:?}: {e}"))
    }

    /// Issue 11: the digests `ctr content ls -q` lists in `namespace` (the content its images
    /// and leases keep).
    pub fn content_digests(&self, namespace: &str) -> Vec<String> {
        let out = self.ctr(namespace, &["content", "ls", "-q"], Duration::from_secs(60));
        assert!(
            out.status.success(),
            "ctr content ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.trim().to_string())
            .filter(|l| !l.is_empty())
            .collect()
    }

    /// Issue 11: `berth-agent --containerd-socket … --containerd-namespace NAMESPACE ARGS...`
    /// (its `image` subcommands) with these environment variables (BERTH_INSECURE_REGISTRIES,
    /// BERTH_REGISTRY_AUTH_FILE…), within `timeout`.
    pub fn agent_image_command(
        &self,
        namespace: &str,
        env: &[(&str, &str)],
        args: &[&str],
        timeout: Duration,
    ) -> Output {
        registry::output_within(
            Command::new(bin("berth-agent"))
                .envs(env.iter().copied())
                .arg("--containerd-socket")
                .arg(self.socket())
                .args(["--containerd-namespace", namespace])
                .args(args),
            timeout,
        )
        .unwrap_or_else(|e| panic!("berth-agent {args:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn mount_points_are_unescaped_as_mountinfo_escapes_them() {
        assert_eq!(
            super::unescape_mount_path(r"/tmp/a\040b\011c\134d\0"),
            "/tmp/a b\tc\\d\\0"
        );
    }
}

/// What [`Cluster::sample_service`] saw.
#[derive(Debug, Clone, Copy)]
pub struct ServiceSamples {
    /// How many samples were taken.
    pub samples: usize,
    /// The fewest of the service's tasks RUNNING (and desired RUNNING) in one sample.
    pub fewest_running: usize,
    /// The fewest of them RUNNING and HEALTHY in one sample.
    pub fewest_healthy: usize,
    /// The most of the service's tasks desired RUNNING in one sample.
    pub most_live: usize,
    /// How long until `done` held.
    pub took: Duration,
    /// Samples lost to a failed or timed-out call (shown, so a gap is never unseen).
    pub failed: usize,
}

impl Cluster {
    /// Samples the service's tasks every `every` over the API (ListTasks --service-name and
    /// DescribeTasks on one signed gRPC connection, so the interval is what it says) until
    /// `done` holds for a sample, at most `timeout` (then panics).
    pub fn sample_service(
        &self,
        service: &str,
        every: Duration,
        timeout: Duration,
        mut done: impl FnMut(&[berth_proto::v1::Task]) -> bool,
    ) -> ServiceSamples {
        use berth_proto::v1::ecs_client::EcsClient;
        use berth_proto::v1::{DescribeTasksRequest, ListTasksRequest};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let mut ecs = EcsClient::new(self.channel().await.expect("a channel"));
            let started = Instant::now();
            let mut out = ServiceSamples {
                samples: 0,
                fewest_running: usize::MAX,
                fewest_healthy: usize::MAX,
                most_live: 0,
                took: Duration::ZERO,
                failed: 0,
            };
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                assert!(
                    started.elapsed() < timeout,
                    "{service}: not done after {timeout:?}: {out:?}"
                );
                let list = ListTasksRequest {
                    cluster: Some(self.name.clone()),
                    service_name: Some(service.to_string()),
                    ..Default::default()
                };
                let req = self.admin_signed(list, "/berth.v1.Ecs/ListTasks");
                let Ok(Ok(arns)) =
                    tokio::time::timeout(Duration::from_secs(10), ecs.list_tasks(req)).await
                else {
                    out.failed += 1;
                    continue;
                };
                let arns = arns.into_inner().task_arns;
                let tasks = if arns.is_empty() {
                    Vec::new()
                } else {
                    let d = DescribeTasksRequest {
                        cluster: Some(self.name.clone()),
                        tasks: arns,
                        ..Default::default()
                    };
                    let req = self.admin_signed(d, "/berth.v1.Ecs/DescribeTasks");
                    let Ok(Ok(d)) =
                        tokio::time::timeout(Duration::from_secs(10), ecs.describe_tasks(req))
                            .await
                    else {
                        out.failed += 1;
                        continue;
                    };
                    d.into_inner().tasks
                };
                let live: Vec<&berth_proto::v1::Task> = tasks
                    .iter()
                    .filter(|t| t.desired_status == "RUNNING")
                    .collect();
                let running = live.iter().filter(|t| t.last_status == "RUNNING").count();
                let healthy = live
                    .iter()
                    .filter(|t| t.last_status == "RUNNING" && t.health_status == "HEALTHY")
                    .count();
                out.samples += 1;
                out.fewest_running = out.fewest_running.min(running);
                out.fewest_healthy = out.fewest_healthy.min(healthy);
                out.most_live = out.most_live.max(live.len());
                if done(&tasks) {
                    out.took = started.elapsed();
                    return out;
                }
            }
        })
    }
}

/// The messages of a service's events (DescribeServices JSON), newest first.
pub fn service_events(service: &Value) -> Vec<String> {
    service["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|e| e["message"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What a [`RunningCountWatch`] saw.
#[derive(Debug, Clone, Copy)]
pub struct RunningCounts {
    /// How many samples were taken.
    pub samples: usize,
    /// Samples lost to a failed or timed-out call (shown, so a gap is never unseen).
    pub failed: usize,
    /// The highest runningCount in one sample.
    pub most: i32,
}

/// A service's runningCount sampled in the background (DescribeServices every `every` on one
/// signed gRPC connection, its own thread), from [`Cluster::watch_running_count`] until
/// [`RunningCountWatch::stop`]. It holds no borrow of the cluster, so a lab can restart or
/// reconnect hosts while it runs.
pub struct RunningCountWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<RunningCounts>,
}

impl RunningCountWatch {
    /// Stops sampling; what was seen.
    pub fn stop(self) -> RunningCounts {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the runningCount sampler")
    }
}

impl Cluster {
    /// Starts sampling `service`'s runningCount every `every`: see [`RunningCountWatch`].
    pub fn watch_running_count(&self, service: &str, every: Duration) -> RunningCountWatch {
        use berth_proto::v1::ecs_client::EcsClient;
        use berth_proto::v1::DescribeServicesRequest;
        let endpoint = self.endpoint.clone();
        let ca = self
            .tls
            .then(|| std::fs::read_to_string(self.ca_file()).expect("reading the controller's CA"));
        let creds = read_credentials(&self.admin_credentials());
        let (cluster, service) = (self.name.clone(), service.to_string());
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a tokio runtime");
            rt.block_on(async move {
                let mut e = tonic::transport::Endpoint::from_shared(endpoint.clone())
                    .expect("the controller's endpoint");
                if let Some(ca) = ca {
                    e = e
                        .tls_config(
                            tonic::transport::ClientTlsConfig::new()
                                .ca_certificate(tonic::transport::Certificate::from_pem(ca)),
                        )
                        .expect("a TLS config");
                }
                let mut ecs = EcsClient::new(e.connect_lazy());
                let mut out = RunningCounts {
                    samples: 0,
                    failed: 0,
                    most: 0,
                };
                let mut tick = tokio::time::interval(every);
                while !stopped.load(Ordering::Relaxed) {
                    tick.tick().await;
                    let req = DescribeServicesRequest {
                        cluster: Some(cluster.clone()),
                        services: vec![service.clone()],
                        ..Default::default()
                    };
                    let req = signed_request(
                        &endpoint,
                        req,
                        "/berth.v1.Ecs/DescribeServices",
                        &creds,
                        std::time::SystemTime::now(),
                    );
                    match tokio::time::timeout(Duration::from_secs(10), ecs.describe_services(req))
                        .await
                    {
                        Ok(Ok(r)) => match r.into_inner().services.first() {
                            Some(s) => {
                                out.samples += 1;
                                out.most = out.most.max(s.running_count);
                            }
                            None => out.failed += 1,
                        },
                        _ => out.failed += 1,
                    }
                }
                out
            })
        });
        RunningCountWatch { stop, thread }
    }
}
