//! Issue 9 on real containerd + runc, where the engine's fake runtime alone proved it before:
//! dependsOn HEALTHY waits for the dependency's health check (and an UNHEALTHY dependency is
//! given up on at its startTimeout), a dependency's startTimeout stops the task with
//! TaskDependencyError, a container turns UNHEALTHY after exactly `retries` failing checks (not a
//! timed assertion: the checks run in lockstep with the test), and the task metadata endpoint
//! shows RestartCount and Health.
//!
//! Containers are sampled where the agent reports them from, its task record
//! (`agent/tasks/<task id>.json`), as in lifecycle.rs and health.rs.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or_default().to_string()
}

/// A container of a task record (Null when absent).
fn rec_container<'a>(rec: &'a Value, name: &str) -> &'a Value {
    rec["state"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

/// The container of a described task.
fn described<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {task}"))
}

/// An RFC 3339 UTC timestamp ("Z" or "+00:00") as a key that sorts as time does (fraction
/// padded to 9 digits).
fn ts(v: &Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let s = s.strip_suffix("+00:00").unwrap_or(s).trim_end_matches('Z');
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    format!("{whole}.{frac:0<9}")
}

/// A task-scoped volume's directory on the host (the agent's data dir).
fn task_volume(c: &Cluster, arn: &str, volume: &str) -> PathBuf {
    c.agent_dir()
        .join("volumes")
        .join(task_id(arn))
        .join(volume)
}

/// Asserts the task stopped with TaskDependencyError naming `needles`, `target` never having
/// been created, and returns the reason.
fn assert_dependency_error(c: &Cluster, arn: &str, task: &Value, target: &str, needles: &[&str]) {
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task}");
    let reason = task["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("TaskDependencyError: "),
        "stoppedReason: {reason}"
    );
    for n in needles {
        assert!(
            reason.contains(n),
            "{n:?} not in the stoppedReason: {reason}"
        );
    }
    let t = described(task, target);
    assert_eq!(t["lastStatus"], "STOPPED", "{task}");
    assert!(t["exitCode"].is_null(), "{target} never started: {t}");
    assert_eq!(t["reason"].as_str(), Some(reason), "{t}");
    let cid = format!("{}-{target}", task_id(arn));
    assert!(
        !c.containerd_containers().contains(&cid),
        "{target} was created"
    );
}

/// dependsOn HEALTHY on real containers: `web`'s check fails its first run and succeeds from the
/// second (the success also leaves a marker in a task volume); `app`, depending on web HEALTHY,
/// starts only then: it finds the marker at its start, its startedAt is not before the moment web
/// turned HEALTHY, and it was never started while web was UNKNOWN.
#[test]
fn healthy_dependency_starts_the_dependent_only_once_healthy() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("real-healthy");
    let check =
        "if [ ! -e /tmp/failed-once ]; then touch /tmp/failed-once; echo not yet; exit 1; fi; \
                 touch /shared/healthy; echo ready";
    let td = c.register(&format!(
        r#"{{"family":"real-healthy","networkMode":"none","memory":"256",
  "volumes":[{{"name":"shared"}}],
  "containerDefinitions":[
  {{"name":"app","image":"{IMAGE}","stopTimeout":2,
    "mountPoints":[{{"sourceVolume":"shared","containerPath":"/shared"}}],
    "command":["sh","-c","if [ -e /shared/healthy ]; then echo saw-healthy; else echo too-early; fi; exec sleep 3600"],
    "dependsOn":[{{"containerName":"web","condition":"HEALTHY"}}]}},
  {{"name":"web","image":"{IMAGE}","stopTimeout":2,"command":["sleep","3600"],
    "mountPoints":[{{"sourceVolume":"shared","containerPath":"/shared"}}],
    "healthCheck":{{"command":["CMD-SHELL",{}],"interval":5,"timeout":5,"retries":3}}}}]}}"#,
        serde_json::to_string(check).unwrap()
    ));
    let arn = c.run_task(&td);

    // Every (web health, app started) pair the record shows, until app runs.
    let mut seen: Vec<(String, bool)> = Vec::new();
    let rec = wait_for("app to start", T, || {
        let r = c.task_record(&arn)?;
        let web = rec_container(&r, "web")["healthStatus"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let app_started = rec_container(&r, "app")["startedAt"].is_string();
        if seen.last() != Some(&(web.clone(), app_started)) {
            seen.push((web, app_started));
        }
        app_started.then_some(r)
    });
    assert!(
        seen.contains(&("UNKNOWN".to_string(), false)),
        "web seen UNKNOWN (its first check fails) before app started: {seen:?}"
    );
    assert!(
        !seen.iter().any(|(h, started)| *started && h != "HEALTHY"),
        "app started while web was not HEALTHY: {seen:?}"
    );
    let (web, app) = (rec_container(&rec, "web"), rec_container(&rec, "app"));
    assert_eq!(web["healthStatus"], "HEALTHY", "{rec}");
    assert_eq!(web["healthOutput"], "ready\n", "{rec}");
    // healthCheckedAt is when web's health (and output) last changed: its turn to HEALTHY.
    assert!(
        ts(&app["startedAt"]) >= ts(&web["healthCheckedAt"]),
        "app started before web turned HEALTHY: {rec}"
    );
    assert!(ts(&app["startedAt"]) > ts(&web["startedAt"]), "{rec}");
    wait_for("app's first line", T, || {
        let l = c.container_log(&arn, "app");
        (!l.is_empty()).then_some(())
    });
    assert_eq!(
        c.container_log(&arn, "app"),
        "saw-healthy\n",
        "app ran before web's first successful check"
    );
    let task = c.wait_status(&arn, "RUNNING", T);
    assert_eq!(described(&task, "web")["healthStatus"], "HEALTHY", "{task}");
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &arn]);
    c.wait_status(&arn, "STOPPED", T);
}

/// A HEALTHY dependency whose check keeps failing turns UNHEALTHY, which ECS does not give up on
/// by itself (its health may still recover): the dependency's startTimeout ends the wait, with
/// TaskDependencyError naming it, and the dependent never starts. The dependent's own
/// startTimeout (1 s) bounds nothing here: ECS counts the dependency's, from its start.
#[test]
fn an_unhealthy_dependency_is_given_up_on_at_its_start_timeout() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("real-unhealthy");
    let td = c.register(&format!(
        r#"{{"family":"real-unhealthy","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"app","image":"{IMAGE}","command":["sleep","3600"],"startTimeout":1,
    "dependsOn":[{{"containerName":"web","condition":"HEALTHY"}}]}},
  {{"name":"web","image":"{IMAGE}","stopTimeout":2,"command":["sleep","3600"],"startTimeout":15,
    "healthCheck":{{"command":["CMD-SHELL","echo broken; exit 1"],"interval":5,"timeout":2,"retries":1}}}}]}}"#
    ));
    let arn = c.run_task(&td);
    // web is UNHEALTHY after its first check (5 s), well inside its startTimeout (15 s); app
    // waits.
    let rec = wait_for("web UNHEALTHY", T, || {
        let r = c.task_record(&arn)?;
        assert!(
            r["state"]["stoppedReason"].is_null(),
            "stopped before web was UNHEALTHY: {r}"
        );
        (rec_container(&r, "web")["healthStatus"] == "UNHEALTHY").then_some(r)
    });
    assert_eq!(rec_container(&rec, "web")["healthOutput"], "broken\n");
    assert!(
        rec_container(&rec, "app")["startedAt"].is_null(),
        "app started with web UNHEALTHY: {rec}"
    );
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_dependency_error(
        &c,
        &arn,
        &task,
        "app",
        &["[web: HEALTHY]", "[app]", "timed out", "startTimeout 15s"],
    );
    let web = described(&task, "web");
    assert!(web["exitCode"].is_number(), "web was stopped: {web}");
}

/// startTimeout with COMPLETE: `init` never exits; its startTimeout (3 s) gives up on it, the task
/// stops with TaskDependencyError naming the timeout, `app` never starts and init is stopped.
#[test]
fn a_dependency_that_never_completes_times_out() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("real-timeout");
    let td = c.register(&format!(
        r#"{{"family":"real-timeout","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"app","image":"{IMAGE}","command":["sleep","3600"],
    "dependsOn":[{{"containerName":"init","condition":"COMPLETE"}}]}},
  {{"name":"init","image":"{IMAGE}","essential":false,"stopTimeout":2,"startTimeout":3,
    "command":["sleep","3600"]}}]}}"#
    ));
    let arn = c.run_task(&td);
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_dependency_error(
        &c,
        &arn,
        &task,
        "app",
        &["[init: COMPLETE]", "[app]", "timed out", "startTimeout 3s"],
    );
    let init = described(&task, "init");
    assert!(
        init["exitCode"].is_number(),
        "init ran and was stopped: {init}"
    );
}

/// Health decided by count: the check takes its run number from a file in a task volume and,
/// before deciding, waits for the test to open its gate, so the test reads the agent's record
/// between every two checks. Runs fail or succeed by number; after each the record must show
/// what Docker's rules give (retries 3): the failure before the first success leaves it UNKNOWN,
/// the first success makes it HEALTHY, two failures don't, a success resets the count, and the
/// third consecutive failure (run 8, exactly) makes it UNHEALTHY; a success heals it.
#[test]
fn unhealthy_after_exactly_retries_consecutive_failures() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("real-retries");
    const FAILING: [u32; 6] = [1, 3, 4, 6, 7, 8];
    let expected = [
        "UNKNOWN",   // 1 fails: one failure, not three
        "HEALTHY",   // 2 succeeds
        "HEALTHY",   // 3 fails
        "HEALTHY",   // 4 fails: two in a row
        "HEALTHY",   // 5 succeeds: the count starts over
        "HEALTHY",   // 6 fails
        "HEALTHY",   // 7 fails
        "UNHEALTHY", // 8 fails: three in a row
        "HEALTHY",   // 9 succeeds
    ];
    let fails = FAILING.map(|n| n.to_string()).join(" ");
    let check = format!(
        "n=$(( $(cat /ctl/n 2>/dev/null || echo 0) + 1 )); echo $n > /ctl/n; \
         while [ ! -e /ctl/go$n ]; do sleep 0.1; done; echo run $n; \
         case ' {fails} ' in *' '$n' '*) exit 1;; esac; exit 0"
    );
    let td = c.register(&format!(
        r#"{{"family":"real-retries","networkMode":"none","memory":"256",
  "volumes":[{{"name":"ctl"}}],
  "containerDefinitions":[
  {{"name":"main","image":"{IMAGE}","stopTimeout":2,"command":["sleep","3600"],
    "mountPoints":[{{"sourceVolume":"ctl","containerPath":"/ctl"}}],
    "healthCheck":{{"command":["CMD-SHELL",{}],"interval":5,"timeout":30,"retries":3}}}}]}}"#,
        serde_json::to_string(&check).unwrap()
    ));
    let arn = c.run_task(&td);
    c.wait_status(&arn, "RUNNING", T);
    let ctl = task_volume(&c, &arn, "ctl");
    let run_waiting = || -> Option<u32> {
        std::fs::read_to_string(ctl.join("n"))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut statuses = Vec::new();
    // healthCheckedAt after each run: ECS's statusSince, when the status last changed.
    let mut since = Vec::new();
    for n in 1..=expected.len() as u32 {
        // Run n waits at its gate: run n-1's result is the last the agent can have.
        wait_for(&format!("check run {n} to start"), T, || {
            (run_waiting() == Some(n)).then_some(())
        });
        if n > 1 {
            let rec = wait_for(&format!("run {}'s result in the record", n - 1), T, || {
                let r = c.task_record(&arn)?;
                (rec_container(&r, "main")["healthOutput"] == format!("run {}\n", n - 1))
                    .then_some(r)
            });
            let main = rec_container(&rec, "main");
            statuses.push(main["healthStatus"].as_str().unwrap_or("").to_string());
            since.push(main["healthCheckedAt"].clone());
        } else {
            let rec = c.task_record(&arn).expect("the task record");
            assert_eq!(
                rec_container(&rec, "main")["healthStatus"],
                "UNKNOWN",
                "before the first check: {rec}"
            );
        }
        std::fs::write(ctl.join(format!("go{n}")), b"").expect("open the gate");
    }
    // The last run's result.
    let last = expected.len();
    let rec = wait_for(&format!("run {last}'s result in the record"), T, || {
        let r = c.task_record(&arn)?;
        (rec_container(&r, "main")["healthOutput"] == format!("run {last}\n")).then_some(r)
    });
    let main = rec_container(&rec, "main");
    statuses.push(main["healthStatus"].as_str().unwrap_or("").to_string());
    since.push(main["healthCheckedAt"].clone());
    assert_eq!(statuses, expected, "health after each check run");
    // The status changes at runs 2, 8 and 9 only (the output at every run): statusSince with it.
    for (run, pair) in since.windows(2).enumerate() {
        let (before, after) = (&pair[0], &pair[1]);
        let changed = expected[run] != expected[run + 1];
        assert_eq!(
            before != after,
            changed,
            "healthCheckedAt from run {} to {}: {before} → {after} ({since:?})",
            run + 1,
            run + 2
        );
    }
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &arn]);
    c.wait_status(&arn, "STOPPED", T);
}

/// RestartCount and Health in the task metadata endpoint: `main` (restartPolicy, a check that
/// always succeeds) exits 1 after its first run outlasts restartAttemptPeriod (60 s) and is
/// restarted; its second run reads ${ECS_CONTAINER_METADATA_URI_V4} at once (RestartCount 1
/// already, Health UNKNOWN again), then until Health is HEALTHY, and prints it. The JSON shows RestartCount 1 (what the agent's record holds) and Health with
/// status, statusSince and output; `/task` shows the same for main.
#[test]
fn metadata_shows_restart_count_and_health() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("real-metadata");
    let second = "echo second run; echo @FIRST; wget -qO- $ECS_CONTAINER_METADATA_URI_V4; echo; \
        while true; do wget -qO- $ECS_CONTAINER_METADATA_URI_V4 > /tmp/m 2>/dev/null; \
        if grep -q '\"status\":\"HEALTHY\"' /tmp/m; then break; fi; sleep 1; done; \
        echo @CONTAINER; cat /tmp/m; echo; echo @TASK; \
        wget -qO- $ECS_CONTAINER_METADATA_URI_V4/task; echo; echo @END; exec sleep 3600";
    let cmd =
        format!("if [ -e /ran ]; then {second}; fi; touch /ran; echo first run; sleep 61; exit 1");
    let td = c.register(&format!(
        r#"{{"family":"real-metadata","networkMode":"bridge","memory":"256","containerDefinitions":[
  {{"name":"main","image":"{IMAGE}","stopTimeout":2,"command":["sh","-c",{}],
    "restartPolicy":{{"enabled":true,"restartAttemptPeriod":60}},
    "healthCheck":{{"command":["CMD-SHELL","echo all good"],"interval":10,"timeout":2,"retries":1}}}}]}}"#,
        serde_json::to_string(&cmd).unwrap()
    ));
    let arn = c.run_task(&td);
    c.wait_status(&arn, "RUNNING", T);
    let log = wait_for(
        "main's second run to print its metadata",
        Duration::from_secs(180),
        || {
            let l = c.container_log(&arn, "main");
            l.contains("@END").then_some(l)
        },
    );
    assert!(log.starts_with("first run\nsecond run\n"), "{log}");
    let section = |start: &str, end: &str| -> Value {
        let from = log
            .find(start)
            .unwrap_or_else(|| panic!("no {start}: {log}"))
            + start.len();
        let to = log[from..].find(end).map_or(log.len(), |i| from + i);
        serde_json::from_str(log[from..to].trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {log}"))
    };
    // Read the moment it restarted: the restart is already counted and the health of the run
    // before is gone (its first check is 10 s away).
    let first = section("@FIRST", "@CONTAINER");
    assert_eq!(first["RestartCount"], 1, "{first}");
    assert_eq!(first["Health"]["status"], "UNKNOWN", "{first}");
    let own = section("@CONTAINER", "@TASK");
    let task = section("@TASK", "@END");
    let rec = c.task_record(&arn).expect("the task record");
    let main = rec_container(&rec, "main");
    assert_eq!(main["restartCount"], 1, "{rec}");
    assert_eq!(own["RestartCount"], main["restartCount"], "{own}");
    assert_eq!(own["Health"]["status"], "HEALTHY", "{own}");
    assert_eq!(own["Health"]["output"], "all good\n", "{own}");
    assert!(
        own["Health"]["statusSince"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z') && s.contains('T')),
        "{own}"
    );
    // Health decided after the restart (UNKNOWN again at the restart).
    assert!(
        ts(&own["Health"]["statusSince"]) > ts(&own["StartedAt"]),
        "health from before the restart: {own}"
    );
    let in_task = task["Containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|x| x["Name"] == "main"))
        .unwrap_or_else(|| panic!("no main in {task}"));
    assert_eq!(in_task["RestartCount"], 1, "{task}");
    assert_eq!(in_task["Health"]["status"], "HEALTHY", "{task}");
    let shown = c.task(&arn);
    assert_eq!(
        described(&shown, "main")["healthStatus"],
        "HEALTHY",
        "{shown}"
    );
    c.ok(&["stop-task", "--cluster", &c.name, "--task", &arn]);
    c.wait_status(&arn, "STOPPED", T);
}
