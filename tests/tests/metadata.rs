//! The task metadata endpoint v4 and task stats on real containerd + runc, as root (issue 9):
//! from inside a container in bridge, awsvpc and host modes, `wget $ECS_CONTAINER_METADATA_URI_V4`
//! answers with the container's own task; another task cannot read it (its namespace's
//! endpoint serves only itself; on the host listener a wrong token is 404); /stats and the
//! controller's describe-task-stats show memory a container holds.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A one-container task definition running `cmd` with busybox's sh.
fn td(family: &str, mode: &str, cmd: &str) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"{mode}","containerDefinitions":[
            {{"name":"main","image":"{IMAGE}","memory":256,"stopTimeout":2,
              "command":["sh","-c",{}]}}]}}"#,
        serde_json::to_string(cmd).unwrap()
    )
}

fn run(c: &Cluster, def: &str, mode: &str) -> String {
    let mut args = vec!["run-task", "--cluster", &c.name, "--task-definition", def];
    let net = format!("awsvpcConfiguration={{subnets=[{}]}}", c.net.subnet);
    if mode == "awsvpc" {
        args.extend(["--network-configuration", &net]);
    }
    let v = c.json(&args);
    v["tasks"][0]["taskArn"]
        .as_str()
        .unwrap_or_else(|| panic!("run-task placed no task: {v}"))
        .to_string()
}

/// Stops the tasks it holds when dropped (also when a test fails).
struct Tasks<'a>(&'a Cluster, Vec<String>);

impl Drop for Tasks<'_> {
    fn drop(&mut self) {
        for arn in &self.1 {
            let _ = self
                .0
                .berth(&["stop-task", "--cluster", &self.0.name, "--task", arn]);
        }
        for arn in &self.1 {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                self.0.wait_status(arn, "STOPPED", T)
            }));
        }
    }
}

/// The container's output once it printed END.
fn output(c: &Cluster, arn: &str) -> String {
    wait_for(&format!("{arn}'s output"), T, || {
        let l = c.container_log(arn, "main");
        l.contains("@END").then_some(l)
    })
}

/// The text between `start` and the next line starting with `end`.
fn section<'a>(log: &'a str, start: &str, end: &str) -> &'a str {
    let from = log
        .find(start)
        .unwrap_or_else(|| panic!("no {start} in {log}"))
        + start.len();
    let rest = &log[from..];
    rest.find(end).map_or(rest, |i| &rest[..i]).trim()
}

/// A number of the proto JSON mapping (64-bit integers are strings there).
fn num(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// Prints the URI, the task's and the container's metadata, then sleeps.
const SHOW: &str = "echo @URI=$ECS_CONTAINER_METADATA_URI_V4; echo @TASK; \
    wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task; echo; echo @CONTAINER; \
    wget -qO- $ECS_CONTAINER_METADATA_URI_V4; echo; echo @END; exec sleep 3600";

#[test]
fn each_network_mode_reads_its_own_task_and_no_other() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("metadata");
    let mut tasks = Tasks(&c, Vec::new());
    for mode in ["bridge", "awsvpc", "host"] {
        let def = c.register(&td(&format!("meta-{mode}"), mode, SHOW));
        let arn = run(&c, &def, mode);
        tasks.1.push(arn.clone());
        c.wait_status(&arn, "RUNNING", T);
        let log = output(&c, &arn);
        let uri = section(&log, "@URI=", "\n").to_string();
        match mode {
            "host" => assert!(uri.starts_with("http://127.0.0.1:"), "{mode}: {log}"),
            _ => assert!(
                uri.starts_with("http://169.254.170.2:51679/v4/"),
                "{mode}: {log}"
            ),
        }
        let task = json(section(&log, "@TASK", "@CONTAINER"));
        assert_eq!(task["TaskARN"], arn.as_str(), "{mode}: {task}");
        assert_eq!(task["Cluster"], c.name.as_str(), "{mode}: {task}");
        assert_eq!(task["Family"], format!("meta-{mode}"), "{mode}: {task}");
        // Read the moment the container starts: the agent may not have recorded it RUNNING yet.
        assert!(
            ["PENDING", "RUNNING"].contains(&task["KnownStatus"].as_str().unwrap_or("")),
            "{mode}: {task}"
        );
        assert_eq!(task["Containers"][0]["Name"], "main", "{mode}: {task}");
        assert_eq!(
            task["Containers"][0]["Networks"][0]["NetworkMode"], mode,
            "{task}"
        );
        let container = json(section(&log, "@CONTAINER", "@END"));
        assert_eq!(container["Name"], "main", "{mode}: {container}");
        assert_eq!(container["Type"], "NORMAL");
        assert_eq!(
            container["Labels"]["com.amazonaws.ecs.task-arn"],
            arn.as_str(),
            "{container}"
        );
        assert!(container["DockerId"]
            .as_str()
            .is_some_and(|d| !d.is_empty()));
        if mode != "host" {
            let ip = &container["Networks"][0]["IPv4Addresses"][0];
            assert!(ip.as_str().is_some_and(|a| !a.is_empty()), "{container}");
        }

        // Another task of the same mode tries this task's URI: its own namespace's endpoint
        // (bridge, awsvpc) knows only its own task; on the host listener a token that is not
        // its own container's (one letter changed) is unknown too.
        let probe_uri = if mode == "host" {
            let (base, token) = uri.rsplit_once('/').unwrap();
            let flipped: String = token
                .chars()
                .enumerate()
                .map(|(i, ch)| {
                    if i == 0 {
                        if ch == '0' {
                            '1'
                        } else {
                            '0'
                        }
                    } else {
                        ch
                    }
                })
                .collect();
            format!("{base}/{flipped}")
        } else {
            uri.clone()
        };
        let probe = format!(
            "echo @OWN; wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task >/dev/null && echo @OWN-OK; \
             echo @OTHER; wget -qO- {probe_uri}/task 2>&1; echo EXIT=$?; echo @END; exec sleep 3600"
        );
        let def = c.register(&td(&format!("probe-{mode}"), mode, &probe));
        let other = run(&c, &def, mode);
        tasks.1.push(other.clone());
        let log = output(&c, &other);
        assert!(
            log.contains("@OWN-OK"),
            "{mode}: the prober reads its own task: {log}"
        );
        let tried = section(&log, "@OTHER", "@END");
        assert!(
            tried.contains("404") && !tried.contains(&arn) && !tried.contains("EXIT=0"),
            "{mode}: another task's URI must not answer: {log}"
        );
    }
}

#[test]
fn stats_show_the_memory_a_container_holds_in_the_endpoint_and_the_controller() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start_with_agent_env("metastats", &[("BERTH_STATS_INTERVAL", "1s")]);
    let mut tasks = Tasks(&c, Vec::new());
    const MIB: u64 = 1 << 20;
    // 48 MiB written to /dev/shm (a tmpfs of 64 MiB) stay in RAM, charged to the container.
    let fill = "dd if=/dev/zero of=/dev/shm/fill bs=1M count=48 2>/dev/null; echo @STATS; \
        wget -qO- $ECS_CONTAINER_METADATA_URI_V4/stats; echo; echo @TASKSTATS; \
        wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task/stats; echo; echo @END; exec sleep 3600";
    let def = c.register(&td("meta-stats", "bridge", fill));
    let arn = run(&c, &def, "bridge");
    tasks.1.push(arn.clone());
    c.wait_status(&arn, "RUNNING", T);
    let log = output(&c, &arn);
    let stats = json(section(&log, "@STATS", "@TASKSTATS"));
    let usage = stats["memory_stats"]["usage"].as_u64().unwrap_or(0);
    assert!(
        usage >= 48 * MIB,
        "memory_stats.usage {usage} < 48 MiB: {stats}"
    );
    assert_eq!(
        stats["memory_stats"]["limit"].as_u64(),
        Some(256 * MIB),
        "{stats}"
    );
    // The high-water mark: v1's max_usage_in_bytes, v2's memory.peak (absent on kernels
    // without it, as Docker leaves it out).
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    match stats["memory_stats"]["max_usage"].as_u64() {
        Some(max) => assert!(max >= 48 * MIB, "max_usage {max} < 48 MiB: {stats}"),
        None => assert!(v2, "cgroup v1 always has max_usage_in_bytes: {stats}"),
    }
    assert!(
        stats["blkio_stats"].is_object(),
        "blkio_stats, as Docker shows it: {stats}"
    );
    assert!(
        stats["cpu_stats"]["cpu_usage"]["total_usage"]
            .as_u64()
            .unwrap_or(0)
            > 0,
        "{stats}"
    );
    assert!(
        stats["cpu_stats"]["system_cpu_usage"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
    assert!(
        stats["networks"]["eth0"]["rx_bytes"].is_u64(),
        "bridge: eth0's counters: {stats}"
    );
    let id = stats["id"].as_str().unwrap_or_default().to_string();
    let all = json(section(&log, "@TASKSTATS", "@END"));
    assert!(
        all[&id]["memory_stats"]["usage"].as_u64().unwrap_or(0) >= 48 * MIB,
        "/task/stats by DockerId {id}: {all}"
    );

    // The controller shows the agent's periodic sample (every second here).
    let sample = wait_for("the controller's stats sample", T, || {
        let v = c.json(&["describe-task-stats", "--cluster", &c.name, "--tasks", &arn]);
        let s = v["taskStats"][0].clone();
        let mem = num(&s["containers"][0]["usage"]["memoryUsageBytes"])?;
        (mem >= 48 * MIB).then_some(s)
    });
    assert_eq!(sample["taskArn"], arn.as_str(), "{sample}");
    assert_eq!(sample["containers"][0]["name"], "main", "{sample}");
    assert!(
        num(&sample["usage"]["memoryUsageBytes"]).unwrap_or(0) >= 48 * MIB,
        "the task cgroup holds its container's memory: {sample}"
    );
    assert!(
        sample["containers"][0]["networks"][0]["name"] == "eth0",
        "{sample}"
    );
    let ci = c.json(&["list-container-instances", "--cluster", &c.name]);
    assert_eq!(
        sample["containerInstanceArn"], ci["containerInstanceArns"][0],
        "{sample}"
    );

    // An unknown task is MISSING; a stopped one has no sample.
    let v = c.json(&[
        "describe-task-stats",
        "--cluster",
        &c.name,
        "--tasks",
        "0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(v["failures"][0]["reason"], "MISSING", "{v}");
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &arn]);
    c.wait_status(&arn, "STOPPED", T);
    let v = wait_for("the stopped task's sample to go", T, || {
        let v = c.json(&["describe-task-stats", "--cluster", &c.name, "--tasks", &arn]);
        (v["failures"][0]["reason"] == "STATS_UNAVAILABLE").then_some(v)
    });
    assert!(
        v["taskStats"].as_array().is_none_or(|a| a.is_empty()),
        "{v}"
    );
}

#[test]
fn a_restarted_agent_serves_its_running_tasks_namespaces_again() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start("metarestart");
    // Asks every second; prints OK or FAIL.
    let poll = "while true; do if wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task >/dev/null 2>&1; \
        then echo OK; else echo FAIL; fi; sleep 1; done";
    let def = c.register(&td("meta-restart", "awsvpc", poll));
    let arn = run(&c, &def, "awsvpc");
    // `Tasks` borrows the cluster, which the restart needs mutably: until then a failure stops
    // the task by hand.
    let before = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("the first answer", T, || {
            c.container_log(&arn, "main").contains("OK").then_some(())
        });
    }));
    if let Err(e) = before {
        drop(Tasks(&c, vec![arn.clone()]));
        std::panic::resume_unwind(e);
    }
    let seen = c.container_log(&arn, "main").len();
    c.kill_agent();
    // The listener died with the agent (its socket was the agent's). While no agent reads,
    // the container's output waits in its pipe (issue 10): two more lines there mean at
    // least one ask was made with the agent down (the first may have begun before).
    let down = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        wait_for("two asks while the agent is down", T, || {
            (c.container_pending_output(&arn, "main", "stdout") >= "FAIL\nFAIL\n".len())
                .then_some(())
        });
    }));
    c.start_agent();
    c.wait_agent_connected();
    if let Err(e) = down {
        drop(Tasks(&c, vec![arn.clone()]));
        std::panic::resume_unwind(e);
    }
    let _tasks = Tasks(&c, vec![arn.clone()]);
    // Once read again: a failed ask from while the agent was down, then an answer from the
    // restarted agent.
    wait_for(
        "a failed ask, then an answer from the restarted agent",
        T,
        || {
            let l = c.container_log(&arn, "main");
            let after = l.get(seen..)?;
            let fail = after.find("FAIL")?;
            after[fail..].contains("OK").then_some(())
        },
    );
}
