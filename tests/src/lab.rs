//! The lab: N "hosts" on one machine, standing in for the fleet of lab VMs Berth's users run.
//!
//! Each host is a network namespace (also its name and hostname, so its instance's
//! `ec2InstanceId`) with its own address on the lab's bridge, running its own containerd (own
//! root, state, socket; its tasks' cgroups under its own parent) and its own `berth-agent`, in
//! an availability zone of its own (`lab-1a`, `lab-1b`, `lab-1c`, round robin). The controller
//! listens on the bridge's address with TLS and signed calls, as a networked deployment does;
//! each agent enrolls with its own activation. Any host can be stopped, killed -9, frozen or cut
//! off and brought back. Everything is removed when the [`Lab`] is dropped.
//!
//! Addresses: the lab's bridge has 10.62.X.1/24 (X free on this machine when the lab starts),
//! host `i` has 10.62.X.(10+i). Task networks (bridge mode, awsvpc) are made by each agent
//! inside its host's namespace, from a [`NetScope`] of its own.

use crate::{
    cgroup_parent_leftovers, containerd_command, load_image_into, registry::output_within,
    remove_containerd_leftovers, spawn, stop_containerd, wait_containerd, wait_for, Cluster,
    NetScope, COUNTER,
};
use serde_json::Value;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a host's agent may take to connect (enrollment included).
const CONNECT: Duration = Duration::from_secs(60);
/// How long a command of the lab's plumbing (`ip`, `nft`, `ctr`) may take.
const PLUMBING: Duration = Duration::from_secs(30);

/// How a host is cut off from the lab.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Its link goes down (the bridge side of its veth): as a pulled cable.
    Link,
    /// An nftables table in its namespace drops everything on its interface: as a firewall
    /// dropping silently (the link stays up).
    Firewall,
}

/// The nftables table a [`Cut::Firewall`] adds in a host's namespace.
const CUT_TABLE: &str = "berth_lab_cut";

/// One host of a [`Lab`].
#[derive(Debug)]
pub struct Host {
    /// Its network namespace (/run/netns/NAME), also its hostname (its instance's
    /// ec2InstanceId).
    pub name: String,
    /// The bridge side of its veth (its side is `eth0`).
    pub veth: String,
    /// Its address on the lab's bridge.
    pub address: Ipv4Addr,
    /// Its directory (containerd under `cd/`, the agent's data dir `agent/`, their logs).
    pub dir: PathBuf,
    /// The cgroup parent of its tasks.
    pub cgroup_parent: String,
    /// Its agent's availability zone.
    pub availability_zone: String,
    /// Its agent's task networks (bridges, subnets, ports), inside its namespace.
    pub net: NetScope,
    containerd: Option<Child>,
    agent: Option<Child>,
    instance_arn: Option<String>,
    cut: Option<Cut>,
}

impl Host {
    /// Its containerd's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("cd/containerd.sock")
    }

    /// Its agent's data dir.
    pub fn agent_dir(&self) -> PathBuf {
        self.dir.join("agent")
    }

    /// Its agent's process id, while it runs.
    pub fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().map(Child::id)
    }

    /// Its containerd's process id, while it runs.
    pub fn containerd_pid(&self) -> Option<u32> {
        self.containerd.as_ref().map(Child::id)
    }

    /// How it is cut off, if it is.
    pub fn cut(&self) -> Option<Cut> {
        self.cut
    }
}

/// A controller and a cluster with N hosts joined to it; removed on drop.
pub struct Lab {
    /// The controller (on the lab's bridge address) and the cluster: its CLI helpers
    /// (`json`, `ok`, `register`, `task`, `wait_status`, `service_json`…) work as in a
    /// one-host test. It has no containerd or agent of its own.
    pub cluster: Cluster,
    /// The prefix of every name the lab gives (its bridge, veths, namespaces).
    pub prefix: String,
    /// The lab's bridge (in the machine's namespace).
    pub bridge: String,
    /// The bridge's address: the controller's, as the hosts see it.
    pub gateway: Ipv4Addr,
    hosts: Vec<Host>,
    /// Extra environment of every host's agent (BERTH_* options), for hosts started after.
    pub agent_env: Vec<(String, String)>,
}

/// Runs a plumbing command to completion, panicking with its error output on failure.
fn run(cmd: &mut Command) -> Output {
    let out = output_within(cmd, PLUMBING).unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `ip ARGS...`
fn ip(args: &[&str]) -> Output {
    run(Command::new("ip").args(args))
}

/// `ip ARGS...`, its failure ignored (cleanup).
fn ip_quiet(args: &[&str]) {
    let _ = output_within(Command::new("ip").args(args), PLUMBING);
}

/// A third octet X whose 10.62.X.0/24 no interface of this machine uses, starting from one
/// derived from the process and `n` so two labs rarely even try the same.
fn free_lab_subnet(n: u32) -> u8 {
    let start = (std::process::id()
        .wrapping_mul(7)
        .wrapping_add(n.wrapping_mul(37)))
        % 256;
    for k in 0..256 {
        let x = ((start + k) % 256) as u8;
        let out = ip(&["-o", "-4", "addr", "show", "to", &format!("10.62.{x}.0/24")]);
        if out.stdout.iter().all(u8::is_ascii_whitespace) {
            return x;
        }
    }
    panic!("no free 10.62.X.0/24 for a lab");
}

/// Spawns `cmd` inside the network namespace `netns`, in a UTS namespace of its own with
/// hostname `netns`, in a process group of its own (a Ctrl-C of the lab binary reaches only
/// the lab, which then stops the hosts in order).
fn spawn_in(netns: &str, cmd: &mut Command, log: &Path) -> Child {
    let ns = std::fs::File::open(format!("/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("opening /run/netns/{netns}: {e}"));
    let fd = ns.as_raw_fd();
    let hostname = netns.as_bytes().to_vec();
    // SAFETY: between fork and exec the closure only makes system calls (setns, unshare,
    // sethostname) on a descriptor and bytes that exist before the fork; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if libc::setns(fd, libc::CLONE_NEWNET) != 0
                || libc::unshare(libc::CLONE_NEWUTS) != 0
                || libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.process_group(0);
    let child = spawn(cmd, log);
    drop(ns);
    child
}

/// Sends `signal` to `child`, ignoring a process already gone.
fn signal(child: &Child, signal: nix::sys::signal::Signal) {
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal);
}

/// SIGTERM, then waits up to `grace` for the exit (SIGKILL after it).
fn terminate(mut child: Child, grace: Duration) {
    signal(&child, nix::sys::signal::Signal::SIGCONT);
    signal(&child, nix::sys::signal::Signal::SIGTERM);
    let start = Instant::now();
    let mut delay = Duration::from_millis(10);
    while start.elapsed() < grace {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(200));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// SIGKILL and reap.
fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The inode of a network namespace file (/run/netns/NAME, /proc/PID/ns/net).
fn netns_inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Process ids in the network namespace whose file is `ns` (by inode), this process excluded.
fn pids_in_netns(ns: &Path) -> Vec<i32> {
    let Some(ino) = netns_inode(ns) else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter(|pid| {
                    netns_inode(&PathBuf::from(format!("/proc/{pid}/ns/net"))) == Some(ino)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Process ids in any cgroup below `cgroup_parent`, in any hierarchy.
fn pids_in_cgroups(cgroup_parent: &str) -> Vec<i32> {
    fn walk(dir: &Path, out: &mut Vec<i32>) {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(d) = std::fs::read_dir(dir) {
            for e in d.flatten().filter(|e| e.path().is_dir()) {
                walk(&e.path(), out);
            }
        }
    }
    let mut out = Vec::new();
    for p in cgroup_parent_leftovers(cgroup_parent) {
        walk(&p, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Processes whose command line names `dir`.
fn pids_naming(dir: &Path) -> Vec<(i32, String)> {
    let needle = dir.to_string_lossy().to_string();
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| pid != me)
                .filter_map(|pid| {
                    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
                    let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                    cmd.contains(&needle).then_some((pid, cmd))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Lab {
    /// Starts the controller on a new lab bridge, creates the cluster, and starts `n` hosts,
    /// waiting until each one's instance is ACTIVE with its agent connected.
    pub fn start(test: &str, n: usize) -> Self {
        Self::start_with_agent_env(test, n, &[])
    }

    /// [`Lab::start`], every agent having these extra environment variables (BERTH_* options).
    pub fn start_with_agent_env(test: &str, n: usize, agent_env: &[(&str, &str)]) -> Self {
        Self::start_with(test, n, &[], agent_env)
    }

    /// [`Lab::start`], the controller having these extra arguments and every agent these
    /// extra environment variables (BERTH_* options).
    pub fn start_with(
        test: &str,
        n: usize,
        controller_args: &[&str],
        agent_env: &[(&str, &str)],
    ) -> Self {
        let mut cluster = Cluster::new(test, &[]);
        cluster.controller_args = controller_args.iter().map(|a| a.to_string()).collect();
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("bl{:x}x{k}", std::process::id() & 0xffff);
        let x = free_lab_subnet(k);
        let gateway = Ipv4Addr::new(10, 62, x, 1);
        // The controller listens on the bridge's address: reachable from every host and from
        // this machine, not beyond it. TLS and signed calls as beyond loopback.
        cluster.controller_ip = gateway.into();
        cluster.tls = true;
        cluster.auth = true;
        cluster.endpoint = format!("https://{gateway}:{}", cluster.controller_port);
        let mut lab = Lab {
            cluster,
            bridge: prefix.clone(),
            prefix,
            gateway,
            hosts: Vec::new(),
            agent_env: agent_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        // From here on a panic drops `lab`, which removes what was made so far.
        ip(&["link", "add", &lab.bridge, "type", "bridge"]);
        ip(&["addr", "add", &format!("{gateway}/24"), "dev", &lab.bridge]);
        ip(&["link", "set", &lab.bridge, "up"]);
        lab.cluster.start_controller();
        let name = lab.cluster.name.clone();
        lab.cluster.ok(&["create-cluster", "--cluster-name", &name]);
        let new: Vec<usize> = (0..n).map(|_| lab.launch_host()).collect();
        for i in new {
            lab.wait_joined(i);
        }
        lab
    }

    /// A host joining later: started like the first ones, waited for until connected; returns
    /// its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.launch_host();
        self.wait_joined(i);
        i
    }

    /// Makes host `i`'s namespace and link, starts its containerd (with the test image) and
    /// its agent.
    fn launch_host(&mut self) -> usize {
        let i = self.hosts.len();
        let name = format!("{}-h{i}", self.prefix);
        let veth = format!("{}v{i}", self.prefix);
        let g = self.gateway.octets();
        let address = Ipv4Addr::new(g[0], g[1], g[2], 10 + u8::try_from(i).expect("< 245 hosts"));
        let dir = self.cluster.dir.join(format!("h{i}"));
        std::fs::create_dir_all(&dir).expect("host dir");
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        self.hosts.push(Host {
            name: name.clone(),
            veth: veth.clone(),
            address,
            dir,
            cgroup_parent: format!("{}-h{i}", self.cluster.cgroup_parent),
            availability_zone: format!("lab-1{}", ['a', 'b', 'c'][i % 3]),
            net: NetScope::new(n),
            containerd: None,
            agent: None,
            instance_arn: None,
            cut: None,
        });
        ip(&["netns", "add", &name]);
        ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &name,
        ]);
        ip(&["link", "set", &veth, "master", &self.bridge, "up"]);
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("{address}/24"),
            "dev",
            "eth0",
        ]);
        ip(&["-n", &name, "link", "set", "eth0", "up"]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        self.start_containerd(i);
        load_image_into(&self.hosts[i].socket());
        self.start_agent(i);
        i
    }

    /// Waits until host `i`'s instance is ACTIVE and connected; records its ARN.
    fn wait_joined(&mut self, i: usize) {
        let name = self.hosts[i].name.clone();
        let arn = wait_for(&format!("host {i} ({name}) to join"), CONNECT, || {
            self.instances().into_iter().find_map(|ci| {
                (ci["ec2InstanceId"] == name.as_str()
                    && ci["status"] == "ACTIVE"
                    && ci["agentConnected"] == true)
                    .then(|| ci["containerInstanceArn"].as_str().map(String::from))
                    .flatten()
            })
        });
        self.hosts[i].instance_arn = Some(arn);
    }

    /// The hosts, in the order they joined.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Host `i`.
    pub fn host(&self, i: usize) -> &Host {
        &self.hosts[i]
    }

    /// Host `i`'s container instance ARN.
    pub fn host_instance_arn(&self, i: usize) -> String {
        self.hosts[i]
            .instance_arn
            .clone()
            .unwrap_or_else(|| panic!("host {i} has not joined"))
    }

    /// The index of the host whose instance is `arn`.
    pub fn host_of_instance(&self, arn: &str) -> Option<usize> {
        self.hosts
            .iter()
            .position(|h| h.instance_arn.as_deref() == Some(arn))
    }

    /// The index of the host a task (as describe-tasks shows it) was placed on.
    pub fn host_of_task(&self, task: &Value) -> Option<usize> {
        self.host_of_instance(task["containerInstanceArn"].as_str()?)
    }

    /// Every container instance of the cluster (ACTIVE and DRAINING), as
    /// describe-container-instances shows them.
    pub fn instances(&self) -> Vec<Value> {
        let list = self.json(&["list-container-instances", "--cluster", &self.cluster.name]);
        let arns: Vec<&str> = list["containerInstanceArns"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if arns.is_empty() {
            return Vec::new();
        }
        let mut args = vec![
            "describe-container-instances",
            "--cluster",
            &self.cluster.name,
            "--container-instances",
        ];
        args.extend(arns);
        self.json(&args)["containerInstances"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// Host `i`'s instance, as describe-container-instances shows it.
    pub fn instance(&self, i: usize) -> Value {
        let arn = self.host_instance_arn(i);
        let v = self.json(&[
            "describe-container-instances",
            "--cluster",
            &self.cluster.name,
            "--container-instances",
            &arn,
        ]);
        v["containerInstances"][0].clone()
    }

    /// Waits until host `i`'s instance shows agentConnected = `connected`; returns how long
    /// that took.
    pub fn wait_agent_connected(&self, i: usize, connected: bool, timeout: Duration) -> Duration {
        let start = Instant::now();
        wait_for(
            &format!("host {i}'s agentConnected to be {connected}"),
            timeout,
            || (self.instance(i)["agentConnected"] == connected).then_some(()),
        );
        start.elapsed()
    }

    fn start_containerd(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        // A killed containerd leaves its socket: wait for the new one's.
        let _ = std::fs::remove_file(h.socket());
        let log = h.dir.join(format!(
            "containerd-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        h.containerd = Some(spawn_in(&h.name, &mut containerd_command(&h.dir), &log));
        wait_containerd(&h.dir);
    }

    /// Starts (or restarts) host `i`'s agent, with the same data dir (it enrolls on its first
    /// start); does not wait for it to connect.
    pub fn start_agent(&mut self, i: usize) {
        let h = &self.hosts[i];
        assert!(h.agent.is_none(), "host {i}'s agent already runs");
        let env: Vec<(String, String)> = self
            .cluster
            .enrollment_env_for(&h.agent_dir())
            .into_iter()
            .chain(h.net.agent_env())
            // A stopped task's containers go at once unless the lab's env says otherwise.
            .chain([("BERTH_TASK_CLEANUP_WAIT".to_string(), "0s".to_string())])
            .chain(self.agent_env.iter().cloned())
            .collect();
        let mut cmd =
            self.cluster
                .agent_command_with(&h.agent_dir(), &h.socket(), &h.cgroup_parent, &env);
        cmd.arg("--availability-zone").arg(&h.availability_zone);
        let log = h.dir.join(format!(
            "agent-{}.log",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let child = spawn_in(&h.name, &mut cmd, &log);
        self.hosts[i].agent = Some(child);
    }

    /// Stops host `i`'s agent as its service manager would: SIGTERM, waiting for it to exit
    /// (SIGKILL after 30 s).
    pub fn stop_agent(&mut self, i: usize) {
        if let Some(a) = self.hosts[i].agent.take() {
            terminate(a, Duration::from_secs(30));
        }
    }

    /// kill -9 host `i`'s agent and containerd (their shims and containers keep running, as
    /// when the daemons crash).
    pub fn kill9(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(a) = h.agent.take() {
            kill(a);
        }
        if let Some(c) = h.containerd.take() {
            kill(c);
        }
    }

    /// Starts host `i`'s containerd and agent again (whichever is not running), same dirs.
    pub fn restart(&mut self, i: usize) {
        if self.hosts[i].containerd.is_none() {
            self.start_containerd(i);
        }
        if self.hosts[i].agent.is_none() {
            self.start_agent(i);
        }
    }

    /// Freezes host `i`: SIGSTOP to its agent and containerd (its containers keep running;
    /// `ctr` against its containerd hangs until [`Lab::thaw`]).
    pub fn freeze(&self, i: usize) {
        let h = &self.hosts[i];
        for c in h.agent.iter().chain(h.containerd.iter()) {
            signal(c, nix::sys::signal::Signal::SIGSTOP);
        }
    }

    /// Thaws host `i`: SIGCONT to its agent and containerd.
    pub fn thaw(&self, i: usize) {
        let h = &self.hosts[i];
        for c in h.containerd.iter().chain(h.agent.iter()) {
            signal(c, nix::sys::signal::Signal::SIGCONT);
        }
    }

    /// Cuts host `i` off the lab (and so from the controller): see [`Cut`].
    pub fn cut_off(&mut self, i: usize, how: Cut) {
        self.reconnect(i);
        let h = &self.hosts[i];
        match how {
            Cut::Link => {
                ip(&["link", "set", &h.veth, "down"]);
            }
            Cut::Firewall => {
                let rules = format!(
                    "table inet {CUT_TABLE} {{\n\
                     chain input {{ type filter hook input priority -300; iifname \"eth0\" drop; }}\n\
                     chain output {{ type filter hook output priority -300; oifname \"eth0\" drop; }}\n\
                     }}\n"
                );
                let file = h.dir.join("cut.nft");
                std::fs::write(&file, rules).expect("writing cut.nft");
                run(Command::new("ip")
                    .args(["netns", "exec", &h.name, "nft", "-f"])
                    .arg(&file));
            }
        }
        self.hosts[i].cut = Some(how);
    }

    /// Undoes [`Lab::cut_off`] of host `i` (nothing when it is not cut off).
    pub fn reconnect(&mut self, i: usize) {
        let h = &self.hosts[i];
        match h.cut {
            None => {}
            Some(Cut::Link) => {
                ip(&["link", "set", &h.veth, "up"]);
            }
            Some(Cut::Firewall) => {
                ip(&[
                    "netns", "exec", &h.name, "nft", "delete", "table", "inet", CUT_TABLE,
                ]);
            }
        }
        self.hosts[i].cut = None;
    }

    /// kill -9 the controller.
    pub fn kill_controller(&mut self) {
        self.cluster.kill_controller();
    }

    /// Starts the controller again, on the same address and store.
    pub fn start_controller(&mut self) {
        self.cluster.start_controller();
    }

    /// Runs `berth ecs ARGS...` against the lab's controller, signed with the admin key.
    pub fn berth(&self, args: &[&str]) -> Output {
        self.cluster.berth(args)
    }

    /// Runs `berth ecs ARGS...`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.cluster.ok(args)
    }

    /// Runs `berth ecs ARGS...` and parses its JSON output.
    pub fn json(&self, args: &[&str]) -> Value {
        self.cluster.json(args)
    }

    /// Registers a task definition given as JSON text; returns `family:revision`.
    pub fn register(&self, json: &str) -> String {
        self.cluster.register(json)
    }

    /// The task as describe-tasks shows it.
    pub fn task(&self, arn: &str) -> Value {
        self.cluster.task(arn)
    }

    /// Waits until the task's lastStatus is `status`; returns the task.
    pub fn wait_status(&self, arn: &str, status: &str, timeout: Duration) -> Value {
        self.cluster.wait_status(arn, status, timeout)
    }

    /// The environment that points the `berth` CLI at the lab (endpoint, CA, admin key).
    pub fn cli_env(&self) -> Vec<(String, String)> {
        vec![
            ("BERTH_ENDPOINT".into(), self.cluster.endpoint.clone()),
            (
                "BERTH_CA_BUNDLE".into(),
                self.cluster.ca_file().display().to_string(),
            ),
            (
                "BERTH_SHARED_CREDENTIALS_FILE".into(),
                self.cluster.admin_credentials().display().to_string(),
            ),
        ]
    }

    /// `ctr -a SOCKET -n berth ARGS...` against host `i`'s containerd.
    pub fn host_ctr(&self, i: usize, args: &[&str]) -> Output {
        output_within(
            Command::new("ctr")
                .arg("-a")
                .arg(self.hosts[i].socket())
                .args(["-n", "berth"])
                .args(args),
            PLUMBING,
        )
        .unwrap_or_else(|e| panic!("ctr {args:?} on host {i}: {e}"))
    }

    /// The status host `i`'s containerd gives a container's task (`RUNNING`, `STOPPED`, …);
    /// `None` when it has none (or containerd does not answer).
    pub fn host_task_status(&self, i: usize, container_id: &str) -> Option<String> {
        let out = self.host_ctr(i, &["tasks", "ls"]);
        String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
            let mut cols = l.split_whitespace();
            (cols.next() == Some(container_id)).then(|| cols.nth(1).unwrap_or_default().to_string())
        })
    }

    /// Host `i`'s agent's log so far (every start's).
    pub fn agent_log(&self, i: usize) -> String {
        let mut logs = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.hosts[i].dir) {
            let mut names: Vec<_> = entries.flatten().map(|e| e.path()).collect();
            names.sort();
            for p in names {
                if p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("agent-"))
                {
                    logs.push_str(&std::fs::read_to_string(p).unwrap_or_default());
                }
            }
        }
        logs
    }

    /// What identifies the lab's traces on this machine, to look for leftovers after it is
    /// dropped.
    pub fn traces(&self) -> LabTraces {
        LabTraces {
            prefix: self.prefix.clone(),
            dir: self.cluster.dir.clone(),
            cgroup_parents: self.hosts.iter().map(|h| h.cgroup_parent.clone()).collect(),
            scopes: self.hosts.iter().map(|h| h.net.clone()).collect(),
        }
    }

    /// Stops host `i` for good and removes what it made: its processes (agent, containerd,
    /// shims, containers), mounts, cgroups, task namespaces, its namespace and link.
    fn remove_host(&mut self, i: usize) {
        let h = &mut self.hosts[i];
        if let Some(a) = h.agent.take() {
            kill(a);
        }
        if let Some(cd) = h.containerd.take() {
            signal(&cd, nix::sys::signal::Signal::SIGCONT);
            stop_containerd(cd, &h.dir.join("cd/containerd.sock"));
        }
        // Whatever is left (containers of a killed containerd, their shims): everything in the
        // host's namespace or its cgroups.
        let ns = PathBuf::from(format!("/run/netns/{}", h.name));
        let left = || {
            let mut p = pids_in_netns(&ns);
            p.extend(pids_in_cgroups(&h.cgroup_parent));
            p
        };
        for pid in left() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let start = Instant::now();
        while !left().is_empty() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
        remove_containerd_leftovers(&h.dir, &h.cgroup_parent);
        h.net.remove_leftovers();
        ip_quiet(&["netns", "delete", &h.name]);
        if Path::new("/sys/class/net").join(&h.veth).exists() {
            ip_quiet(&["link", "delete", &h.veth]);
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for i in 0..self.hosts.len() {
            self.remove_host(i);
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            ip_quiet(&["link", "delete", &self.bridge]);
        }
        // `cluster` is dropped next: the controller, then the lab's directory.
    }
}

/// What identifies a lab's traces on this machine ([`Lab::traces`]).
#[derive(Debug, Clone)]
pub struct LabTraces {
    prefix: String,
    dir: PathBuf,
    cgroup_parents: Vec<String>,
    scopes: Vec<NetScope>,
}

impl LabTraces {
    /// Namespaces, links, nftables tables, processes, mounts, cgroups and files of the lab
    /// still on this machine.
    pub fn leftovers(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Ok(d) = std::fs::read_dir("/run/netns") {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&self.prefix) {
                    out.push(format!("netns {name}"));
                }
            }
        }
        if let Ok(d) = std::fs::read_dir("/sys/class/net") {
            for e in d.flatten() {
                let name = e.file_name().to_string_lossy().to_string();
                if name.starts_with(&self.prefix) {
                    out.push(format!("link {name}"));
                }
            }
        }
        for s in &self.scopes {
            out.extend(s.leftovers());
        }
        for (pid, cmd) in pids_naming(&self.dir) {
            out.push(format!("process {pid}: {cmd}"));
        }
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let dir = self.dir.to_string_lossy().to_string();
        let netns = format!("/run/netns/{}", self.prefix);
        for l in mounts.lines() {
            if l.contains(&dir) || l.contains(&netns) {
                out.push(format!("mount {l}"));
            }
        }
        for p in &self.cgroup_parents {
            for c in cgroup_parent_leftovers(p) {
                out.push(format!("cgroup {}", c.display()));
            }
        }
        if self.dir.exists() {
            out.push(format!("dir {}", self.dir.display()));
        }
        out
    }
}
