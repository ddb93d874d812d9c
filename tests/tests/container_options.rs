//! Container options (issue 9) on real containers: what a process inside sees of user,
//! readonlyRootFilesystem, workingDirectory, ulimits, linuxParameters, pidMode, systemControls,
//! links, disableNetworking, interactive and pseudoTerminal; initProcessEnabled's fast stop;
//! options that cannot be applied stop the task with CannotCreateContainerError.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(90);

/// A container that runs `script` under sh, then prints `END` (the test waits for it).
fn probe(name: &str, script: &str, extra: &str) -> String {
    let cmd = serde_json::to_string(&format!("{script}; echo END")).unwrap();
    format!(
        r#"{{"name":"{name}","image":"{IMAGE}","essential":false,"memory":64,"command":["sh","-c",{cmd}]{extra}}}"#
    )
}

fn td(family: &str, task_extra: &str, containers: &[String]) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"bridge"{task_extra},"containerDefinitions":[{}]}}"#,
        containers.join(",")
    )
}

/// The log of a probe once it printed END.
fn output(c: &Cluster, task: &str, name: &str) -> String {
    wait_for(&format!("container {name} to finish its probe"), T, || {
        let log = c.container_log(task, name);
        if log.contains("END") {
            return Some(log);
        }
        let t = c.task(task);
        assert_ne!(
            t["lastStatus"],
            "STOPPED",
            "the task stopped before {name} finished: {t}\n{}",
            c.agent_log()
        );
        None
    })
}

fn stop(c: &Cluster, task: &str) {
    c.ok(&["stop-task", "--cluster", &c.name, "--task", task]);
    c.wait_status(task, "STOPPED", T);
}

#[test]
fn options_show_inside_the_containers() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("opts");
    let a = c.register(&td(
        "opts-a",
        "",
        &[
            probe("user", "id -u; id -g; id -G", r#","user":"app""#),
            probe("nobody", "id -u; id -g", r#","user":"nobody:root""#),
            probe(
                "ro",
                "touch /x 2>&1; echo rc=$?; touch /tmp/y && echo tmp-ok",
                r#","readonlyRootFilesystem":true,"linuxParameters":{"tmpfs":[{"containerPath":"/tmp","size":8}]}"#,
            ),
            probe("wd", "pwd", r#","workingDirectory":"/www""#),
            probe(
                "ul",
                "ulimit -n",
                r#","ulimits":[{"name":"nofile","softLimit":1234,"hardLimit":1234}]"#,
            ),
            probe(
                "caps",
                "touch /f; chown 65534 /f 2>&1; echo rc=$?",
                r#","linuxParameters":{"capabilities":{"drop":["CHOWN"]}}"#,
            ),
            probe(
                "init",
                "tr '\\0' ' ' < /proc/1/cmdline",
                r#","linuxParameters":{"initProcessEnabled":true}"#,
            ),
            probe(
                "shm",
                "df -k /dev/shm | tail -1; df -k /scratch | tail -1; grep ' /scratch ' /proc/mounts",
                r#","linuxParameters":{"sharedMemorySize":128,"tmpfs":[{"containerPath":"/scratch","size":16,"mountOptions":["noatime"]}]}"#,
            ),
            probe(
                "sysctl",
                "cat /proc/sys/net/ipv4/ip_unprivileged_port_start",
                r#","systemControls":[{"namespace":"net.ipv4.ip_unprivileged_port_start","value":"100"}]"#,
            ),
            // interactive: `sh` with no command reads stdin; kept open, it never exits. It is
            // the task's essential container: if its stdin closed, the task would stop.
            format!(
                r#"{{"name":"inter","image":"{IMAGE}","essential":true,"memory":64,"interactive":true,"command":["sh"],"dockerLabels":{{"team":"blue","com.amazonaws.ecs.cluster":"spoofed"}}}}"#
            ),
        ],
    ));
    let task = c.run_task(&a);
    c.wait_status(&task, "RUNNING", T);

    let user = output(&c, &task, "user");
    let lines: Vec<&str> = user.lines().collect();
    assert_eq!(&lines[..2], ["1000", "1000"], "{user}");
    assert!(
        lines[2].split_whitespace().any(|g| g == "50"),
        "staff (50) is app's supplementary group: {user}"
    );
    assert!(output(&c, &task, "nobody").starts_with("65534\n0\n"));
    let ro = output(&c, &task, "ro");
    assert!(
        ro.contains("Read-only file system") && ro.contains("rc=1"),
        "{ro}"
    );
    assert!(ro.contains("tmp-ok"), "{ro}");
    assert!(output(&c, &task, "wd").starts_with("/www\n"));
    assert!(output(&c, &task, "ul").starts_with("1234\n"));
    let caps = output(&c, &task, "caps");
    assert!(
        caps.contains("Operation not permitted") && caps.contains("rc=1"),
        "{caps}"
    );
    let init = output(&c, &task, "init");
    assert!(init.starts_with("/sbin/docker-init -- sh -c"), "{init}");
    let shm = output(&c, &task, "shm");
    let sizes: Vec<&str> = shm
        .lines()
        .take(2)
        .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
        .collect();
    assert_eq!(sizes, ["131072", "16384"], "{shm}");
    assert!(shm.contains("noatime") && shm.contains("noexec"), "{shm}");
    assert!(output(&c, &task, "sysctl").starts_with("100\n"));

    // interactive kept `sh` running; dockerLabels are containerd labels, Berth's own win.
    let t = c.task(&task);
    let inter = t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "inter")
        .unwrap()
        .clone();
    assert_eq!(inter["lastStatus"], "RUNNING", "{t}");
    let id = inter["runtimeId"].as_str().unwrap().to_string();
    let info = std::process::Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .args(["-n", "berth", "containers", "info", &id])
        .output()
        .unwrap();
    let info: Value = serde_json::from_slice(&info.stdout).unwrap();
    assert_eq!(info["Labels"]["team"], "blue", "{info}");
    assert_eq!(info["Labels"]["com.amazonaws.ecs.cluster"], c.name.as_str());
    stop(&c, &task);

    // Task B: links, pidMode task, disableNetworking, a pseudo-terminal.
    let b = c.register(&td(
        "opts-b",
        r#","pidMode":"task","ipcMode":"task""#,
        &[
            format!(
                r#"{{"name":"db","image":"{IMAGE}","essential":true,"memory":64,"command":["sh","-c","touch /dev/shm/from-db; exec sleep 3600"]}}"#
            ),
            probe(
                "web",
                "grep database /etc/hosts; ps -o args | grep -c '^sleep 3600'; ls /dev/shm",
                r#","links":["db:database"]"#,
            ),
            probe(
                "nonet",
                "ls /sys/class/net | tr '\\n' ' '; echo",
                r#","disableNetworking":true"#,
            ),
            probe("tty", "tty", r#","pseudoTerminal":true"#),
        ],
    ));
    let task = c.run_task(&b);
    c.wait_status(&task, "RUNNING", T);
    let t = c.task(&task);
    let db_ip = t["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "db")
        .and_then(|x| x["networkInterfaces"][0]["privateIpv4Address"].as_str())
        .map(str::to_string);
    let web = output(&c, &task, "web");
    let hosts_line = web.lines().next().unwrap_or("");
    assert!(
        hosts_line.ends_with("\tdatabase db"),
        "the link's /etc/hosts entry: {web}"
    );
    if let Some(ip) = db_ip {
        assert!(hosts_line.starts_with(&format!("{ip}\t")), "{web} vs {ip}");
    }
    assert_eq!(
        web.lines().nth(1),
        Some("1"),
        "pidMode task: web sees db's sleep: {web}"
    );
    assert_eq!(
        web.lines().nth(2),
        Some("from-db"),
        "ipcMode task: one /dev/shm for the task: {web}"
    );
    assert_eq!(output(&c, &task, "nonet").lines().next(), Some("lo "));
    let tty = output(&c, &task, "tty");
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    stop(&c, &task);
    let id = task.rsplit('/').next().unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(
        !mounts.lines().any(|l| l.contains(id)),
        "the task's /dev/shm is unmounted with the task"
    );
}

#[test]
fn init_stops_at_once_and_options_that_cannot_apply_are_refused() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("optsinit");
    // busybox httpd as PID 1 ignores SIGTERM; under the init it gets it and exits.
    let port = berth_tests::free_port();
    let web = c.register(&format!(
        r#"{{"family":"opts-init","networkMode":"host","containerDefinitions":[{{"name":"web","image":"{IMAGE}","memory":64,"stopTimeout":60,"command":["httpd","-f","-p","{port}","-h","/www"],"linuxParameters":{{"initProcessEnabled":true}}}}]}}"#
    ));
    let task = c.run_task(&web);
    c.wait_status(&task, "RUNNING", T);
    let started = Instant::now();
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    let t = c.wait_status(&task, "STOPPED", T);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "the init passed SIGTERM on: stopped after {took:?}, not the 60 s stopTimeout"
    );
    assert_eq!(t["containers"][0]["exitCode"], 143, "{t}");

    for (extra, needle) in [
        (
            r#","user":"ghost""#,
            "CannotCreateContainerError: container x: unable to find user ghost: no matching entries in passwd file",
        ),
        (
            r#","linuxParameters":{"devices":[{"hostPath":"/dev/berth-no-such-device"}]}"#,
            "/dev/berth-no-such-device",
        ),
    ] {
        let mode = "bridge";
        let d = c.register(&format!(
            r#"{{"family":"opts-bad","networkMode":"{mode}","containerDefinitions":[{{"name":"x","image":"{IMAGE}","memory":64,"command":["true"]{extra}}}]}}"#
        ));
        let task = c.run_task(&d);
        let t = c.wait_status(&task, "STOPPED", T);
        let reason = t["stoppedReason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("CannotCreateContainerError: ") && reason.contains(needle),
            "{reason}"
        );
    }
    // A net.* sysctl with the host's network never reaches the agent: registration refuses it,
    // naming the field (the agent refuses it too: spec::tests).
    let err = c.register_refused(&format!(
        r#"{{"family":"opts-bad","networkMode":"host","containerDefinitions":[{{"name":"x","image":"{IMAGE}","memory":64,"command":["true"],"systemControls":[{{"namespace":"net.core.somaxconn","value":"10"}}]}}]}}"#
    ));
    assert!(
        err.contains("ClientException")
            && err.contains("systemControls")
            && err.contains("net.core.somaxconn"),
        "{err}"
    );
}
