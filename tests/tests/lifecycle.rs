//! Issue 9, the task actor's lifecycle on real containerd + runc: dependsOn orders the starts
//! (compared on the containers' startedAt/finishedAt as the agent records them in its task
//! record, `agent/tasks/<id>.json`, which is what it reports), a dependency that can no longer
//! be met stops the task with TaskDependencyError, restartPolicy restarts in place within its
//! bounds, and a stopped task's containers, snapshots, files and logs go after the cleanup wait.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::process::Command;
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn task_id(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or_default().to_string()
}

/// A container of a task record.
fn rec_container<'a>(rec: &'a Value, name: &str) -> &'a Value {
    rec["state"]["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {rec}"))
}

/// An RFC 3339 UTC timestamp as a key that sorts as time does (fraction padded to 9 digits).
fn ts(v: &Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    // The agent's records end in +00:00, the API's in Z.
    let s = s.trim_end_matches('Z').trim_end_matches("+00:00");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    format!("{whole}.{frac:0<9}")
}

/// The container of a described task.
fn described<'a>(task: &'a Value, name: &str) -> &'a Value {
    task["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {task}"))
}

fn stop(c: &Cluster, arn: &str) {
    c.ok(&["stop-task", "--cluster", &c.name, "--task", arn]);
}

#[test]
fn depends_on_orders_the_starts_and_complete_waits_for_the_exit() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("life-order");
    let td = c.register(&format!(
        r#"{{"family":"ordered","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"app","image":"{IMAGE}","command":["sleep","600"],"stopTimeout":2,
    "dependsOn":[{{"containerName":"init","condition":"COMPLETE"}},{{"containerName":"db","condition":"START"}},
                 {{"containerName":"seed","condition":"SUCCESS"}}]}},
  {{"name":"init","image":"{IMAGE}","essential":false,"command":["sh","-c","sleep 2; exit 3"]}},
  {{"name":"seed","image":"{IMAGE}","essential":false,"command":["sh","-c","sleep 1; exit 0"]}},
  {{"name":"db","image":"{IMAGE}","command":["sleep","600"],"stopTimeout":2}}]}}"#
    ));
    let arn = c.run_task(&td);
    let task = c.wait_status(&arn, "RUNNING", T);
    assert_eq!(described(&task, "init")["exitCode"], 3, "{task}");
    let rec = wait_for("the record of the running task", T, || {
        let r = c.task_record(&arn)?;
        rec_container(&r, "app")["startedAt"]
            .is_string()
            .then_some(r)
    });
    let (app, init, db, seed) = (
        rec_container(&rec, "app"),
        rec_container(&rec, "init"),
        rec_container(&rec, "db"),
        rec_container(&rec, "seed"),
    );
    // SUCCESS is met by an exit 0, and only once it exited.
    assert_eq!(described(&task, "seed")["exitCode"], 0, "{task}");
    assert!(
        ts(&app["startedAt"]) >= ts(&seed["finishedAt"]),
        "app started before seed succeeded: {rec}"
    );
    assert!(
        ts(&app["startedAt"]) >= ts(&init["finishedAt"]),
        "app started before init completed: {rec}"
    );
    assert!(ts(&init["finishedAt"]) > ts(&init["startedAt"]));
    assert!(
        ts(&app["startedAt"]) > ts(&db["startedAt"]),
        "app started before db: {rec}"
    );
    stop(&c, &arn);
    let stopped = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(stopped["stopCode"], "UserInitiated");
}

#[test]
fn a_success_dependency_exiting_1_stops_the_task_with_task_dependency_error() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("life-success");
    let td = c.register(&format!(
        r#"{{"family":"success","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"app","image":"{IMAGE}","command":["sleep","600"],
    "dependsOn":[{{"containerName":"init","condition":"SUCCESS"}}]}},
  {{"name":"init","image":"{IMAGE}","essential":false,"command":["sh","-c","exit 1"]}}]}}"#
    ));
    let arn = c.run_task(&td);
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(task["stopCode"], "TaskFailedToStart", "{task}");
    let reason = task["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("TaskDependencyError: ")
            && reason.contains("[init: SUCCESS]")
            && reason.contains("[app]"),
        "{reason}"
    );
    let app = described(&task, "app");
    assert_eq!(app["lastStatus"], "STOPPED");
    assert!(app["exitCode"].is_null(), "app never started: {app}");
    assert_eq!(app["reason"].as_str(), Some(reason));
    assert_eq!(described(&task, "init")["exitCode"], 1);
    let id = task_id(&arn);
    assert!(
        !c.containerd_containers()
            .iter()
            .any(|x| x == &format!("{id}-app")),
        "app was created"
    );
}

#[test]
fn restart_policy_restarts_within_its_bounds_and_honours_ignored_exit_codes() {
    if !prerequisites() {
        return;
    }
    // Kept after the stop, to read main's log.
    let c = Cluster::start_with_agent_env("life-restart", &[("BERTH_TASK_CLEANUP_WAIT", "10m")]);
    // main: its first run lasts past restartAttemptPeriod and exits 1 (restarted); its second
    // (the rootfs keeps the marker) exits 1 after 5 s, too soon (not restarted: the task stops).
    // side: runs past the period and exits 2, an ignored code (not restarted).
    let td = c.register(&format!(
        r#"{{"family":"restarting","networkMode":"none","memory":"256","containerDefinitions":[
  {{"name":"main","image":"{IMAGE}",
    "command":["sh","-c","if [ -e /ran ]; then echo second run; sleep 5; exit 1; fi; touch /ran; echo first run; sleep 62; exit 1"],
    "restartPolicy":{{"enabled":true,"ignoredExitCodes":[2],"restartAttemptPeriod":60}}}},
  {{"name":"side","image":"{IMAGE}","essential":false,"command":["sh","-c","sleep 61; exit 2"],
    "restartPolicy":{{"enabled":true,"ignoredExitCodes":[2],"restartAttemptPeriod":60}}}}]}}"#
    ));
    let arn = c.run_task(&td);
    c.wait_status(&arn, "RUNNING", T);
    // The restart is counted before the new process runs (ECS), its start recorded once it runs.
    let rec = wait_for("main's restart", Duration::from_secs(120), || {
        let r = c.task_record(&arn)?;
        let main = rec_container(&r, "main");
        (main["restartCount"] == 1
            && main["finishedAt"].is_string()
            && ts(&main["startedAt"]) >= ts(&main["finishedAt"]))
        .then_some(r)
    });
    let main = rec_container(&rec, "main");
    assert_eq!(main["lastStatus"], "RUNNING", "{rec}");
    let task = c.wait_status(&arn, "STOPPED", T);
    assert_eq!(task["stopCode"], "EssentialContainerExited", "{task}");
    assert_eq!(described(&task, "main")["exitCode"], 1);
    assert_eq!(described(&task, "side")["exitCode"], 2);
    let log = c.container_log(&arn, "main");
    assert!(
        log.contains("first run") && log.contains("second run"),
        "one log file, appended: {log:?}"
    );
    let agent = c.agent_log();
    assert_eq!(
        agent.matches("container restarted (restartPolicy)").count(),
        1,
        "only main, once"
    );
}

fn ctr(c: &Cluster, args: &[&str]) -> String {
    let out = Command::new("ctr")
        .arg("-a")
        .arg(c.socket())
        .args(["-n", "berth"])
        .args(args)
        .output()
        .expect("ctr");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn mounts_naming(id: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(id))
        .map(String::from)
        .collect()
}

#[test]
fn cleanup_after_the_wait_leaves_nothing() {
    if !prerequisites() {
        return;
    }
    let mut c =
        Cluster::start_with_agent_env("life-cleanup", &[("BERTH_TASK_CLEANUP_WAIT", "15s")]);
    let td = c.register(&format!(
        r#"{{"family":"cleanup","networkMode":"bridge","memory":"256","containerDefinitions":[
  {{"name":"main","image":"{IMAGE}","command":["sh","-c","echo hello; sleep 600"],"stopTimeout":2}},
  {{"name":"side","image":"{IMAGE}","essential":false,"command":["sleep","600"],"stopTimeout":2}}]}}"#
    ));
    let arn = c.run_task(&td);
    let id = task_id(&arn);
    c.wait_status(&arn, "RUNNING", T);
    wait_for("main's output", T, || {
        c.container_log(&arn, "main")
            .contains("hello")
            .then_some(())
    });
    stop(&c, &arn);
    c.wait_status(&arn, "STOPPED", T);
    // At once: processes, cgroups and mounts are gone; containers, snapshots, files and logs
    // stay for the wait.
    let ours = |s: &str| s.lines().filter(|l| l.contains(&id)).count();
    assert_eq!(
        ours(&ctr(&c, &["containers", "ls", "-q"])),
        2,
        "kept during the wait"
    );
    assert_eq!(ours(&ctr(&c, &["tasks", "ls"])), 0, "no processes");
    assert_eq!(c.cgroup_leftovers(&arn), Vec::<std::path::PathBuf>::new());
    assert_eq!(mounts_naming(&id), Vec::<String>::new());
    assert!(ours(&ctr(&c, &["snapshots", "--snapshotter", "overlayfs", "ls"])) >= 2);
    let logs = c.dir.join("agent/logs").join(&id);
    let files = c.dir.join("agent/tasks").join(&id);
    assert!(logs.join("main.stdout.log").exists());
    assert!(files.exists(), "the task's files");
    // The schedule survives the agent: down when the wait ends, it removes all at its start.
    let entry = c.dir.join("agent/cleanup").join(format!("{id}.json"));
    let due: Value =
        serde_json::from_slice(&std::fs::read(&entry).expect("cleanup entry")).unwrap();
    let due = due["due_unix_ms"].as_u64().expect("due time");
    c.kill_agent();
    let now_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    wait_for("the cleanup wait to end", T, || {
        (now_ms() > due).then_some(())
    });
    assert_eq!(
        ours(&ctr(&c, &["containers", "ls", "-q"])),
        2,
        "nothing removes them while the agent is down"
    );
    c.start_agent();
    // After the wait: nothing.
    wait_for("the cleanup", T, || {
        (ours(&ctr(&c, &["containers", "ls", "-q"])) == 0 && !logs.exists()).then_some(())
    });
    assert_eq!(
        ours(&ctr(&c, &["snapshots", "--snapshotter", "overlayfs", "ls"])),
        0,
        "snapshots"
    );
    assert_eq!(mounts_naming(&id), Vec::<String>::new());
    assert_eq!(c.cgroup_leftovers(&arn), Vec::<std::path::PathBuf>::new());
    assert!(!files.exists(), "task files");
    assert!(!c
        .dir
        .join("agent/cleanup")
        .join(format!("{id}.json"))
        .exists());
    assert!(!c
        .dir
        .join("agent/tasks")
        .join(format!("{id}.json"))
        .exists());
}
