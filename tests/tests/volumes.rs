//! Volumes, mount points and environment files on real containerd + runc (issue 9): two
//! containers sharing a task volume, readOnly enforced, volumesFrom, host volumes under the
//! agent's --allowed-host-paths (and refused outside it), EFS volumes refused without an NFS
//! mapping, environment files, and a cleanup that leaves no task volume behind.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(90);

/// A scratch directory outside the cluster's, removed on drop (also when a test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!(
            "berth-it-vol-{tag}-{}-{}",
            std::process::id(),
            uuid_like()
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("scratch dir");
        Scratch(std::fs::canonicalize(&p).expect("scratch dir"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn uuid_like() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// A container definition: name, essential, shell command, extra JSON members.
fn container(name: &str, essential: bool, cmd: &str, extra: &str) -> String {
    format!(
        r#"{{"name":"{name}","image":"{IMAGE}","memory":32,"essential":{essential},"stopTimeout":2,
            "command":["sh","-c",{}]{extra}}}"#,
        serde_json::to_string(cmd).unwrap()
    )
}

fn td(family: &str, containers: &[String], volumes: &str) -> String {
    format!(
        r#"{{"family":"{family}","networkMode":"none","containerDefinitions":[{}],"volumes":{volumes}}}"#,
        containers.join(",")
    )
}

/// Waits up to 30 s for a file in the container, then runs `then`.
fn after_file(path: &str, then: &str) -> String {
    format!("i=0; while [ ! -f {path} ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; {then}")
}

fn run_and_stop(c: &Cluster, td_json: &str) -> (String, Value) {
    let td = c.register(td_json);
    let arn = c.run_task(&td);
    let t = c.wait_status(&arn, "STOPPED", T);
    (arn, t)
}

fn container_of<'a>(t: &'a Value, name: &str) -> &'a Value {
    t["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == name))
        .unwrap_or_else(|| panic!("no container {name} in {t}"))
}

fn task_id(arn: &str) -> &str {
    arn.rsplit('/').next().unwrap_or_default()
}

/// The task's own volume directory in the agent's data dir.
fn task_volumes(c: &Cluster, arn: &str) -> PathBuf {
    c.dir.join("agent/volumes").join(task_id(arn))
}

/// Asserts the task's volume directory is gone (removed with the task's cleanup).
fn assert_cleaned(c: &Cluster, arn: &str) {
    let dir = task_volumes(c, arn);
    wait_for(&format!("{} to be removed", dir.display()), T, || {
        (!dir.exists()).then_some(())
    });
}

fn start(tag: &str, allowed: &Path) -> Cluster {
    let allowed = allowed.display().to_string();
    Cluster::start_with_agent_env(
        tag,
        &[
            ("BERTH_ALLOWED_HOST_PATHS", allowed.as_str()),
            ("BERTH_NFS_VOLUMES", "fs-mapped=127.0.0.1:/srv/nfs,vers=4"),
            // Logs are read after a task stops; the volumes' removal is awaited (assert_cleaned).
            ("BERTH_TASK_CLEANUP_WAIT", "20s"),
        ],
    )
}

#[test]
fn task_volumes_are_shared_read_only_when_asked_and_removed_with_the_task() {
    if !prerequisites() {
        return;
    }
    let scratch = Scratch::new("task");
    let c = start("vol-task", &scratch.0);

    // Two containers share a task-scoped volume: one writes, the other reads.
    let (shared, t) = run_and_stop(
        &c,
        &td(
            "vol-share",
            &[
                container(
                    "writer",
                    false,
                    "echo hello-from-writer > /data/msg",
                    r#","mountPoints":[{"sourceVolume":"scratch","containerPath":"/data"}]"#,
                ),
                container(
                    "reader",
                    true,
                    &after_file("/data/msg", "cat /data/msg"),
                    r#","mountPoints":[{"sourceVolume":"scratch","containerPath":"/data"}]"#,
                ),
            ],
            r#"[{"name":"scratch"}]"#,
        ),
    );
    assert_eq!(container_of(&t, "writer")["exitCode"], 0, "{t}");
    assert_eq!(container_of(&t, "reader")["exitCode"], 0, "{t}");
    assert!(
        c.container_log(&shared, "reader")
            .contains("hello-from-writer"),
        "reader's log: {}\n{}",
        c.container_log(&shared, "reader"),
        c.agent_log()
    );
    assert_cleaned(&c, &shared);

    // readOnly: a write fails (busybox touch exits 1 on EROFS); the same volume is writable
    // through the other container's read-write mount point.
    let (ro, t) = run_and_stop(
        &c,
        &td(
            "vol-ro",
            &[
                container(
                    "rw",
                    false,
                    "touch /data/ok",
                    r#","mountPoints":[{"sourceVolume":"v","containerPath":"/data"}]"#,
                ),
                container(
                    "ro",
                    true,
                    &after_file("/data/ok", "touch /data/not-allowed"),
                    r#","mountPoints":[{"sourceVolume":"v","containerPath":"/data","readOnly":true}]"#,
                ),
            ],
            r#"[{"name":"v","dockerVolumeConfiguration":{"scope":"task","driver":"local"}}]"#,
        ),
    );
    assert_eq!(container_of(&t, "rw")["exitCode"], 0, "{t}");
    assert_eq!(container_of(&t, "ro")["exitCode"], 1, "{t}");
    assert!(
        c.container_log(&ro, "ro").contains("Read-only file system"),
        "{}",
        c.container_log(&ro, "ro")
    );
    assert_cleaned(&c, &ro);

    // volumesFrom: the source container's mount points, read-write unless readOnly.
    let (from, t) = run_and_stop(
        &c,
        &td(
            "vol-from",
            &[
                container(
                    "source",
                    false,
                    "echo from-source > /data/msg",
                    r#","mountPoints":[{"sourceVolume":"v","containerPath":"/data"}]"#,
                ),
                container(
                    "borrower",
                    false,
                    &after_file("/data/msg", "cat /data/msg && echo back > /data/back"),
                    r#","volumesFrom":[{"sourceContainer":"source"}]"#,
                ),
                container(
                    "viewer",
                    true,
                    &after_file("/data/back", "cat /data/back; touch /data/viewer"),
                    r#","volumesFrom":[{"sourceContainer":"source","readOnly":true}]"#,
                ),
            ],
            r#"[{"name":"v"}]"#,
        ),
    );
    assert_eq!(container_of(&t, "borrower")["exitCode"], 0, "{t}");
    assert!(c.container_log(&from, "borrower").contains("from-source"));
    assert_eq!(container_of(&t, "viewer")["exitCode"], 1, "{t}");
    let viewer = c.container_log(&from, "viewer");
    assert!(
        viewer.contains("back") && viewer.contains("Read-only file system"),
        "{viewer}"
    );
    assert_cleaned(&c, &from);
    assert!(
        c.containerd_containers().is_empty(),
        "{:?}",
        c.containerd_containers()
    );
}

#[test]
fn host_volumes_only_under_the_allowed_paths() {
    if !prerequisites() {
        return;
    }
    let scratch = Scratch::new("host");
    let allowed = scratch.0.join("allowed");
    let outside = scratch.0.join("outside");
    std::fs::create_dir_all(&allowed).unwrap();
    let c = start("vol-host", &allowed);

    // Under the allow-list: the missing directory is created and what the container writes
    // appears on the host (and stays after the task).
    let host_dir = allowed.join("app/data");
    let (arn, t) = run_and_stop(
        &c,
        &td(
            "vol-host",
            &[container(
                "app",
                true,
                "echo written-in-container > /host/out.txt",
                r#","mountPoints":[{"sourceVolume":"h","containerPath":"/host"}]"#,
            )],
            &format!(
                r#"[{{"name":"h","host":{{"sourcePath":"{}"}}}}]"#,
                host_dir.display()
            ),
        ),
    );
    assert_eq!(container_of(&t, "app")["exitCode"], 0, "{t}");
    assert_eq!(
        std::fs::read_to_string(host_dir.join("out.txt")).unwrap_or_default(),
        "written-in-container\n",
        "{}",
        c.agent_log()
    );
    assert_cleaned(&c, &arn);
    assert!(
        host_dir.join("out.txt").exists(),
        "a host volume is not removed"
    );

    // Outside it (directly, by `..`, through a symlink): refused before any container is
    // created, with the reason naming the option; nothing is created.
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, allowed.join("escape")).unwrap();
    // A `..` never reaches the agent: registration refuses it, naming the field.
    let dotdot = allowed.join("../outside/new");
    let err = c.register_refused(&td(
        "vol-refused",
        &[container(
            "app",
            true,
            "true",
            r#","mountPoints":[{"sourceVolume":"h","containerPath":"/host"}]"#,
        )],
        &format!(
            r#"[{{"name":"h","host":{{"sourcePath":"{}"}}}}]"#,
            dotdot.display()
        ),
    ));
    assert!(
        err.contains("ClientException") && err.contains("volumes[0].host.sourcePath"),
        "{err}"
    );
    for given in [outside.join("new"), allowed.join("escape/new")] {
        let (arn, t) = run_and_stop(
            &c,
            &td(
                "vol-refused",
                &[container(
                    "app",
                    true,
                    "true",
                    r#","mountPoints":[{"sourceVolume":"h","containerPath":"/host"}]"#,
                )],
                &format!(
                    r#"[{{"name":"h","host":{{"sourcePath":"{}"}}}}]"#,
                    given.display()
                ),
            ),
        );
        let reason = format!(
            "ResourceInitializationError: volume h: host path {} is not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)",
            given.display()
        );
        assert_eq!(t["stoppedReason"], reason.as_str(), "{t}");
        assert_eq!(t["stopCode"], "TaskFailedToStart", "{t}");
        assert_eq!(container_of(&t, "app")["reason"], reason.as_str(), "{t}");
        assert!(container_of(&t, "app")["exitCode"].is_null(), "{t}");
        assert!(
            !outside.join("new").exists(),
            "a refused path is not created"
        );
        assert_cleaned(&c, &arn);
    }

    // EFS without an NFS mapping for its file system: no agent can run it, so RunTask places
    // it nowhere and says why (the attribute --nfs-volume advertises); the agent's own refusal
    // by name, for a task that reaches it anyway, is volumes::tests.
    let td_arn = c.register(&td(
        "vol-efs",
        &[container(
            "app",
            true,
            "true",
            r#","mountPoints":[{"sourceVolume":"shared","containerPath":"/efs"}]"#,
        )],
        r#"[{"name":"shared","efsVolumeConfiguration":{"fileSystemId":"fs-0123abcd","rootDirectory":"/app"}}]"#,
    ));
    let v = c.json(&[
        "run-task",
        "--cluster",
        &c.name,
        "--task-definition",
        &td_arn,
    ]);
    assert_eq!(v["tasks"].as_array().map(Vec::len), Some(0), "{v}");
    assert_eq!(v["failures"][0]["reason"], "ATTRIBUTE", "{v}");
    assert!(
        v["failures"][0]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("berth.nfs.fs-0123abcd")),
        "{v}"
    );
    wait_for("the containers removed after the cleanup wait", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
}

#[test]
fn environment_files_reach_the_container() {
    if !prerequisites() {
        return;
    }
    let scratch = Scratch::new("env");
    let allowed = scratch.0.join("allowed");
    std::fs::create_dir_all(&allowed).unwrap();
    std::fs::write(
        allowed.join("app.env"),
        "# the app's settings\n\nFROM_FILE=file value with spaces\nOVERRIDDEN=from-file\nFIRST=one\n",
    )
    .unwrap();
    std::fs::write(allowed.join("more.env"), "FIRST=two\nSECOND=2\n").unwrap();
    std::fs::write(scratch.0.join("outside.env"), "X=1\n").unwrap();
    let c = start("vol-env", &allowed);

    let files = format!(
        r#","environment":[{{"name":"OVERRIDDEN","value":"from-environment"}}],
           "environmentFiles":[{{"value":"{}","type":"file"}},{{"value":"{}","type":"file"}}]"#,
        allowed.join("app.env").display(),
        allowed.join("more.env").display()
    );
    let (arn, t) = run_and_stop(
        &c,
        &td(
            "vol-env",
            &[container(
                "app",
                true,
                r#"echo "FROM_FILE=[$FROM_FILE] OVERRIDDEN=[$OVERRIDDEN] FIRST=[$FIRST] SECOND=[$SECOND]""#,
                &files,
            )],
            "[]",
        ),
    );
    assert_eq!(container_of(&t, "app")["exitCode"], 0, "{t}");
    let log = c.container_log(&arn, "app");
    assert!(
        log.contains(
            "FROM_FILE=[file value with spaces] OVERRIDDEN=[from-environment] FIRST=[one] SECOND=[2]"
        ),
        "{log}\n{}",
        c.agent_log()
    );
    assert!(
        !c.agent_log().contains("file value with spaces"),
        "environment file values are never logged"
    );

    // A file outside the allow-list stops the task before its container is created.
    let outside = scratch.0.join("outside.env");
    let (_, t) = run_and_stop(
        &c,
        &td(
            "vol-env-refused",
            &[container(
                "app",
                true,
                "true",
                &format!(
                    r#","environmentFiles":[{{"value":"{}","type":"file"}}]"#,
                    outside.display()
                ),
            )],
            "[]",
        ),
    );
    assert_eq!(
        t["stoppedReason"],
        format!(
            "ResourceInitializationError: environment file {}: not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)",
            outside.display()
        )
        .as_str(),
        "{t}"
    );
    wait_for("the containers removed after the cleanup wait", T, || {
        c.containerd_containers().is_empty().then_some(())
    });
}
