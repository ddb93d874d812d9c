//! Issue 11: images from a registry, on real containerd + runc, against a private
//! docker-registry on loopback (the harness's [`Registry`]): pull and run, credentials
//! (repositoryCredentials and the agent-wide auth file), a wrong password, multi-platform
//! indexes, the four ECS pull behaviours with the registry stopped mid-test, coalesced pulls,
//! image cleanup, an agent killed mid-pull, and `docker save` archives loaded by hand.

use berth_tests::images::{self, host_architecture};
use berth_tests::registry::{registry_prerequisites, Registry};
use berth_tests::{wait_for, Cluster, IMAGE};
use serde_json::Value;
use std::time::Duration;

const T: Duration = Duration::from_secs(120);
/// The agent's containerd namespace.
const NS: &str = "berth";

/// A cluster whose agent may use plain HTTP to `reg`, with these extra BERTH_* settings.
fn cluster(test: &str, reg: &Registry, env: &[(&str, &str)]) -> Cluster {
    let host = reg.host();
    let mut all = vec![("BERTH_INSECURE_REGISTRIES", host.as_str())];
    all.extend_from_slice(env);
    Cluster::start_with_agent_env(test, &all)
}

/// Registers a one-container task definition (container `main`, this image, a shell command,
/// and `extra` JSON members of the container definition, each followed by a comma).
fn register(c: &Cluster, family: &str, image: &str, command: &str, extra: &str) -> String {
    let command = serde_json::to_string(command).expect("JSON");
    c.register(&format!(
        r#"{{"family": "{family}", "networkMode": "none",
            "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
            "containerDefinitions": [{{"name": "main", "image": "{image}", "memory": 32,
              "essential": true, {extra}
              "command": ["sh", "-c", {command}]}}]}}"#
    ))
}

/// Waits until the task is RUNNING, failing at once (with its reason) if it stops instead.
fn wait_running(c: &Cluster, arn: &str) -> Value {
    let t = wait_settled(c, arn);
    assert_eq!(
        t["lastStatus"],
        "RUNNING",
        "the task stopped: {}\nagent log: {}",
        t["stoppedReason"],
        c.agent_log()
            .lines()
            .rev()
            .take(15)
            .collect::<Vec<_>>()
            .join("\n")
    );
    t
}

/// Waits until the task is RUNNING or STOPPED; returns it.
fn wait_settled(c: &Cluster, arn: &str) -> Value {
    wait_for(&format!("task {arn} to be RUNNING or STOPPED"), T, || {
        let t = c.task(arn);
        (t["lastStatus"] == "RUNNING" || t["lastStatus"] == "STOPPED").then_some(t)
    })
}

fn stop(c: &Cluster, arn: &str) {
    c.ok(&["stop-task", "--cluster", &c.name, "--task", arn]);
    c.wait_status(arn, "STOPPED", T);
}

/// A timestamp of describe output, comparable as a string (nanoseconds, no zone).
fn ts(v: &Value) -> String {
    let s = v.as_str().unwrap_or_else(|| panic!("not a timestamp: {v}"));
    let s = s.trim_end_matches('Z').trim_end_matches("+00:00");
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    format!("{whole}.{frac:0<9}")
}

/// The image names in the agent's containerd namespace.
fn image_names(c: &Cluster) -> Vec<String> {
    let out = c.ctr(NS, &["images", "ls", "-q"], T);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .collect()
}

/// The image record's line of `ctr images ls` (name, type, digest, size, platforms, labels).
fn image_line(c: &Cluster, name: &str) -> Option<String> {
    let out = c.ctr(NS, &["images", "ls"], T);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .map(String::from)
}

/// Asserts the task stopped because its image could not be pulled, with ECS's reason carrying
/// `message` (the registry's words), on the task and its container.
fn assert_cannot_pull(t: &Value, message: &str) {
    let reason = t["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CannotPullContainerError: "),
        "stoppedReason: {t}"
    );
    assert!(
        reason.to_lowercase().contains(&message.to_lowercase()),
        "stoppedReason without the registry's message {message:?}: {reason}"
    );
    assert_eq!(t["containers"][0]["reason"].as_str(), Some(reason), "{t}");
}

/// 16 random bytes as hex.
fn random_hex() -> String {
    let mut b = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::Read::read_exact(&mut f, &mut b).expect("random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The harness itself: a pushed image is served with the digest skopeo reported; the registry
/// stopped refuses, started again serves the same content on the same port; with auth it
/// answers 401 without credentials; ctr pulls and unpacks each image kind (multi-layer, and a
/// multi-platform index unpacked for the host's platform).
#[test]
fn registry_fixture_serves_pushed_images() {
    if !registry_prerequisites() {
        return;
    }
    let c = Cluster::containerd_only("img-fixture");
    let mut reg = Registry::launch_with_auth("tester", "s3cret");
    assert_eq!(reg.ping(), Some(401));

    let multi = c.dir.join("multi.tar");
    images::multi_layer_image(&multi, "localhost/multi:1", &[100_000, 200_000], 7);
    let digest = reg.push(&multi, "multi:1");

    let index = c.dir.join("index.tar");
    images::multi_platform_image(&index, "localhost/plat:1");
    let index_digest = reg.push_all(&index, "plat:1");

    let pull = |reference: &str| {
        c.ctr(
            "fixture",
            &[
                "images",
                "pull",
                "--plain-http",
                "--user",
                "tester:s3cret",
                reference,
            ],
            T,
        )
    };
    let out = pull(&reg.reference("multi:1"));
    assert!(
        out.status.success(),
        "ctr pull: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains(&digest), "{digest} not in: {ls}");

    // Stopped: nothing answers; started again: same port, same content.
    reg.stop();
    assert_eq!(reg.ping(), None);
    let out = pull(&reg.reference("plat:1"));
    assert!(!out.status.success(), "pulled from a stopped registry");
    reg.start();
    let out = pull(&reg.reference("plat:1"));
    assert!(
        out.status.success(),
        "ctr pull after restart: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains(&index_digest), "{index_digest} not in: {ls}");
    assert!(reg.manifest_gets("plat") >= 1, "{:?}", reg.requests());

    // The host's platform was unpacked: its marker layer says so.
    let mount = c.dir.join("mnt");
    std::fs::create_dir_all(&mount).expect("mount dir");
    let mount_arg = mount.display().to_string();
    let out = c.ctr(
        "fixture",
        &["images", "mount", &reg.reference("plat:1"), &mount_arg],
        T,
    );
    assert!(
        out.status.success(),
        "ctr images mount: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let platform = std::fs::read_to_string(mount.join("platform"));
    let _ = c.ctr("fixture", &["images", "unmount", &mount_arg], T);
    assert_eq!(
        platform.expect("/platform in the image"),
        format!("{}\n", host_architecture())
    );
}

/// Pull and run: a task of an image only the registry has runs; the task shows when the pull
/// started and stopped, and the container the digest the registry holds; the image record is
/// labelled as pulled.
#[test]
fn pulls_and_runs_an_image_from_a_registry() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let digest = reg.push(images::busybox_archive(), "app/busybox:1");
    let c = cluster("img-pull", &reg, &[]);
    let image = reg.reference("app/busybox:1");
    assert!(!image_names(&c).contains(&image), "present before the pull");

    let td = register(
        &c,
        "pulled",
        &image,
        "echo hello-from-the-registry; sleep 3600",
        "",
    );
    let arn = c.run_task(&td);
    let t = wait_running(&c, &arn);
    wait_for("the container's output", T, || {
        c.container_log(&arn, "main")
            .contains("hello-from-the-registry")
            .then_some(())
    });
    assert_eq!(
        t["containers"][0]["imageDigest"].as_str(),
        Some(digest.as_str()),
        "{t}"
    );
    let (started, stopped) = (ts(&t["pullStartedAt"]), ts(&t["pullStoppedAt"]));
    assert!(started <= stopped, "{t}");
    assert!(ts(&t["createdAt"]) <= started, "{t}");
    assert!(stopped <= ts(&t["startedAt"]), "{t}");
    assert!(
        reg.manifest_gets("app/busybox") >= 1,
        "{:?}",
        reg.requests()
    );

    let line = image_line(&c, &image).expect("the pulled image's record");
    assert!(line.contains(&digest), "{line}");
    assert!(line.contains("berth.io/source=pull"), "{line}");
    assert!(line.contains("berth.io/pulled-at="), "{line}");
    stop(&c, &arn);
}

/// htpasswd auth with repositoryCredentials: without credentials and with a wrong password the
/// task stops with CannotPullContainerError and the registry's message; with the right secret
/// it runs. The password appears in no describe output, agent log or agent file.
#[test]
fn pulls_with_repository_credentials_and_refuses_a_wrong_password() {
    if !registry_prerequisites() {
        return;
    }
    let password = format!("pw-{}", random_hex());
    let wrong = format!("wrong-{}", random_hex());
    let reg = Registry::launch_with_auth("deployer", &password);
    let digest = reg.push(images::busybox_archive(), "private/app:1");
    let c = cluster("img-auth", &reg, &[]);
    let image = reg.reference("private/app:1");
    let secret = |name: &str, pw: &str| {
        let v = c.service_json(
            "secretsmanager",
            &[
                "create-secret",
                "--name",
                name,
                "--secret-string",
                &format!(r#"{{"username":"deployer","password":"{pw}"}}"#),
            ],
        );
        v["ARN"].as_str().expect("ARN").to_string()
    };
    let right_arn = secret("it/registry", &password);
    let wrong_arn = secret("it/registry-wrong", &wrong);

    // No credentials at all.
    let td = register(&c, "anonymous", &image, "sleep 3600", "");
    let arn = c.run_task(&td);
    let t = wait_settled(&c, &arn);
    assert_cannot_pull(&t, "authentication required");

    // A wrong password.
    let td = register(
        &c,
        "wrong-password",
        &image,
        "sleep 3600",
        &format!(r#""repositoryCredentials": {{"credentialsParameter": "{wrong_arn}"}},"#),
    );
    let arn = c.run_task(&td);
    let t = wait_settled(&c, &arn);
    assert_cannot_pull(&t, "authentication required");
    assert_eq!(t["containers"][0]["lastStatus"], "STOPPED", "{t}");

    // The right one.
    let td = register(
        &c,
        "private",
        &image,
        "echo private-image-runs; sleep 3600",
        &format!(r#""repositoryCredentials": {{"credentialsParameter": "{right_arn}"}},"#),
    );
    let arn = c.run_task(&td);
    let t = wait_running(&c, &arn);
    assert_eq!(
        t["containers"][0]["imageDigest"].as_str(),
        Some(digest.as_str())
    );
    wait_for("the container's output", T, || {
        c.container_log(&arn, "main")
            .contains("private-image-runs")
            .then_some(())
    });
    let described = c.ok(&["describe-tasks", "--cluster", &c.name, "--tasks", &arn]);
    let defs = c.ok(&["describe-task-definition", "--task-definition", &td]);
    let log = c.agent_log();
    for (what, text) in [
        ("describe-tasks", described),
        ("describe-task-definition", defs),
        ("the agent's log", log),
    ] {
        assert!(!text.contains(&password), "{what} holds the password");
        assert!(!text.contains(&wrong), "{what} holds the wrong password");
    }
    for f in files_under(&c.agent_dir()) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        assert!(
            !bytes
                .windows(password.len())
                .any(|w| w == password.as_bytes()),
            "{} holds the password",
            f.display()
        );
    }
    stop(&c, &arn);
}

/// Every file under `dir`, recursively.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

/// Agent-wide credentials (--registry-auth-file, a Docker config.json): a task without
/// repositoryCredentials pulls from a registry that requires auth.
#[test]
fn pulls_with_the_agents_registry_auth_file() {
    if !registry_prerequisites() {
        return;
    }
    let password = format!("pw-{}", random_hex());
    let reg = Registry::launch_with_auth("agent", &password);
    let digest = reg.push(images::busybox_archive(), "fleet/app:1");
    let auth_dir = std::env::temp_dir().join(format!("berth-it-auth-{}", std::process::id()));
    std::fs::create_dir_all(&auth_dir).expect("auth dir");
    let auth_file = auth_dir.join("config.json");
    reg.write_auth_file(&auth_file, "agent", &password);
    let auth_path = auth_file.display().to_string();
    let c = cluster(
        "img-authfile",
        &reg,
        &[("BERTH_REGISTRY_AUTH_FILE", auth_path.as_str())],
    );
    let _ = std::fs::remove_dir_all(&auth_dir);
    let td = register(&c, "fleet", &reg.reference("fleet/app:1"), "sleep 3600", "");
    let arn = c.run_task(&td);
    let t = wait_running(&c, &arn);
    assert_eq!(
        t["containers"][0]["imageDigest"].as_str(),
        Some(digest.as_str())
    );
    assert!(
        !c.agent_log().contains(&password),
        "the agent's log holds the password"
    );
    stop(&c, &arn);
}

/// A multi-platform index runs the host's platform (its /platform file says so), and the
/// container's imageDigest is the index's digest, as Docker's RepoDigests (what ECS reports)
/// give for a tag that names an index.
#[test]
fn a_multi_platform_index_runs_the_hosts_platform() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let archive = std::env::temp_dir().join(format!("berth-it-index-{}.tar", std::process::id()));
    images::multi_platform_image(&archive, "localhost/multi-arch:1");
    let digest = reg.push_all(&archive, "multi/arch:1");
    let _ = std::fs::remove_file(&archive);
    let c = cluster("img-platform", &reg, &[]);
    let td = register(
        &c,
        "multi-arch",
        &reg.reference("multi/arch:1"),
        "echo platform=$(cat /platform); sleep 3600",
        "",
    );
    let arn = c.run_task(&td);
    let t = wait_running(&c, &arn);
    let want = format!("platform={}", host_architecture());
    wait_for("the container's output", T, || {
        c.container_log(&arn, "main").contains(&want).then_some(())
    });
    assert_eq!(
        t["containers"][0]["imageDigest"].as_str(),
        Some(digest.as_str()),
        "{t}"
    );
    stop(&c, &arn);
}

/// A task of `image` run to RUNNING then stopped.
fn run_once(c: &Cluster, td: &str) -> Value {
    let arn = c.run_task(td);
    let t = wait_running(c, &arn);
    stop(c, &arn);
    t
}

/// default: every task pulls; when the pull fails (registry stopped) the cached image is used.
#[test]
fn pull_behavior_default_falls_back_to_the_cached_image() {
    if !registry_prerequisites() {
        return;
    }
    let mut reg = Registry::launch();
    reg.push(images::busybox_archive(), "beh/default:1");
    let c = cluster(
        "img-default",
        &reg,
        &[("BERTH_IMAGE_PULL_BEHAVIOR", "default")],
    );
    let td = register(
        &c,
        "default",
        &reg.reference("beh/default:1"),
        "sleep 3600",
        "",
    );
    run_once(&c, &td);
    let before = reg.repo_requests("beh/default");
    run_once(&c, &td);
    assert!(
        reg.repo_requests("beh/default") > before,
        "default pulls again for each task: {:?}",
        reg.requests()
    );
    reg.stop();
    run_once(&c, &td);
}

/// always: a failed pull fails the task even with the image cached.
#[test]
fn pull_behavior_always_fails_the_task_when_the_pull_fails() {
    if !registry_prerequisites() {
        return;
    }
    let mut reg = Registry::launch();
    reg.push(images::busybox_archive(), "beh/always:1");
    let c = cluster(
        "img-always",
        &reg,
        &[("BERTH_IMAGE_PULL_BEHAVIOR", "always")],
    );
    let image = reg.reference("beh/always:1");
    let td = register(&c, "always", &image, "sleep 3600", "");
    run_once(&c, &td);
    reg.stop();
    assert!(image_names(&c).contains(&image), "the image is cached");
    let arn = c.run_task(&td);
    let t = wait_settled(&c, &arn);
    let reason = t["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("CannotPullContainerError: "),
        "stoppedReason: {t}"
    );
    assert_eq!(t["containers"][0]["reason"].as_str(), Some(reason), "{t}");
}

/// once: after this agent pulled the image, a second task does not contact the registry (its
/// access log shows nothing new) and runs with the registry stopped.
#[test]
fn pull_behavior_once_pulls_only_the_first_time() {
    if !registry_prerequisites() {
        return;
    }
    let mut reg = Registry::launch();
    reg.push(images::busybox_archive(), "beh/once:1");
    let c = cluster("img-once", &reg, &[("BERTH_IMAGE_PULL_BEHAVIOR", "once")]);
    let td = register(&c, "once", &reg.reference("beh/once:1"), "sleep 3600", "");
    let before = reg.repo_requests("beh/once");
    run_once(&c, &td);
    let after_first = reg.repo_requests("beh/once");
    assert!(after_first > before, "the first task pulls");
    run_once(&c, &td);
    assert_eq!(
        reg.repo_requests("beh/once"),
        after_first,
        "the second task contacted the registry: {:?}",
        reg.requests()
    );
    reg.stop();
    run_once(&c, &td);
}

/// prefer-cached: an image present (loaded by hand, under the registry's name) is never
/// pulled; an absent one is pulled once, then used with the registry stopped.
#[test]
fn pull_behavior_prefer_cached_never_pulls_a_present_image() {
    if !registry_prerequisites() {
        return;
    }
    let mut reg = Registry::launch();
    reg.push(images::busybox_archive(), "beh/cached:1");
    let c = cluster(
        "img-cached",
        &reg,
        &[("BERTH_IMAGE_PULL_BEHAVIOR", "prefer-cached")],
    );
    // Loaded by hand; the registry has no such repository (a pull would fail and show).
    let loaded = reg.reference("beh/loaded:1");
    let archive = c.dir.join("loaded.tar");
    images::multi_layer_image(&archive, &loaded, &[1000], 3);
    load(&c, &archive, &loaded);
    let td = register(&c, "loaded", &loaded, "sleep 3600", "");
    run_once(&c, &td);
    assert_eq!(reg.repo_requests("beh/loaded"), 0, "{:?}", reg.requests());

    let td = register(
        &c,
        "cached",
        &reg.reference("beh/cached:1"),
        "sleep 3600",
        "",
    );
    run_once(&c, &td);
    assert_eq!(reg.manifest_gets("beh/cached"), 1, "{:?}", reg.requests());
    run_once(&c, &td);
    assert_eq!(reg.manifest_gets("beh/cached"), 1, "{:?}", reg.requests());
    reg.stop();
    run_once(&c, &td);
}

/// `berth-agent image load FILE` into the agent's namespace, checking its report.
fn load(c: &Cluster, archive: &std::path::Path, name: &str) {
    let out = c.agent_image_command(
        NS,
        &[],
        &["image", "load", &archive.display().to_string()],
        T,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "image load: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("unpacked image: {name}")),
        "image load printed: {stdout}"
    );
}

/// 10 tasks of one new image at once: one pull (one manifest GET, each blob fetched once).
#[test]
fn ten_tasks_of_one_new_image_pull_it_once() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let archive = std::env::temp_dir().join(format!("berth-it-ten-{}.tar", std::process::id()));
    images::multi_layer_image(&archive, "localhost/ten:1", &[4 << 20, 4 << 20], 10);
    reg.push(&archive, "app/ten:1");
    let _ = std::fs::remove_file(&archive);
    // prefer-cached: a task that starts after the shared pull ended finds the image and pulls
    // nothing (under `default` it would pull again, as ECS does), so the count depends only on
    // the ten that start together sharing one pull.
    let c = cluster(
        "img-ten",
        &reg,
        &[("BERTH_IMAGE_PULL_BEHAVIOR", "prefer-cached")],
    );
    let td = register(&c, "ten", &reg.reference("app/ten:1"), "sleep 3600", "");
    let v = c.json(&[
        "run-task",
        "--cluster",
        &c.name,
        "--task-definition",
        &td,
        "--count",
        "10",
    ]);
    let arns: Vec<String> = v["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .filter_map(|t| t["taskArn"].as_str().map(String::from))
        .collect();
    assert_eq!(arns.len(), 10, "{v}");
    for arn in &arns {
        wait_running(&c, arn);
    }
    assert_eq!(reg.manifest_gets("app/ten"), 1, "{:?}", reg.requests());
    let blob_gets: Vec<String> = reg
        .requests()
        .into_iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/v2/app/ten/blobs/"))
        .map(|r| r.path)
        .collect();
    let unique: std::collections::BTreeSet<&String> = blob_gets.iter().collect();
    assert_eq!(
        unique.len(),
        blob_gets.len(),
        "a blob fetched twice: {blob_gets:?}"
    );
    for arn in &arns {
        c.ok(&["stop-task", "--cluster", &c.name, "--task", arn]);
    }
    for arn in &arns {
        c.wait_status(arn, "STOPPED", T);
    }
}

/// Image cleanup (every 2 s, no minimum age): an image no task uses is removed, with its
/// content; the image of a running task and the image loaded by hand are never removed.
#[test]
fn image_cleanup_removes_only_unused_images() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let work = std::env::temp_dir().join(format!("berth-it-cleanup-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let mut layers = Vec::new();
    for (i, repo) in ["gc/used:1", "gc/unused:1", "gc/later:1"]
        .iter()
        .enumerate()
    {
        let archive = work.join(format!("{i}.tar"));
        images::multi_layer_image(&archive, "localhost/gc:1", &[50_000], 100 + i as u64);
        reg.push(&archive, repo);
        // The image's own layer (the last blob pushed that only it has): the data layer.
        let blobs = images::archive_blobs(&archive).expect("archive blobs");
        layers.push(blobs);
    }
    let _ = std::fs::remove_dir_all(&work);
    let c = cluster(
        "img-cleanup",
        &reg,
        &[
            ("BERTH_IMAGE_CLEANUP_INTERVAL", "2"),
            ("BERTH_IMAGE_MINIMUM_CLEANUP_AGE", "0"),
        ],
    );
    let (used, unused, later) = (
        reg.reference("gc/used:1"),
        reg.reference("gc/unused:1"),
        reg.reference("gc/later:1"),
    );
    let td_used = register(&c, "used", &used, "sleep 3600", "");
    let running = c.run_task(&td_used);
    wait_running(&c, &running);
    let td_unused = register(&c, "unused", &unused, "sleep 3600", "");
    run_once(&c, &td_unused);
    wait_for("the unused image to be removed", T, || {
        (!image_names(&c).contains(&unused)).then_some(())
    });
    // Its content goes with it (containerd's GC): blobs only it had.
    let only_unused: Vec<&String> = layers[1]
        .iter()
        .filter(|b| !layers[0].contains(b) && !layers[2].contains(b))
        .collect();
    assert!(!only_unused.is_empty());
    wait_for("the unused image's blobs to be freed", T, || {
        let content = c.content_digests(NS);
        only_unused
            .iter()
            .all(|b| !content.contains(b))
            .then_some(())
    });
    // Another image used and stopped: removed too, so at least one more cycle ran after the
    // first removal; the running task's image and the loaded one stayed through all.
    let td_later = register(&c, "later", &later, "sleep 3600", "");
    run_once(&c, &td_later);
    wait_for("the later image to be removed", T, || {
        (!image_names(&c).contains(&later)).then_some(())
    });
    let names = image_names(&c);
    assert!(
        names.contains(&used),
        "the running task's image was removed: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == IMAGE),
        "the image loaded by hand was removed: {names:?}"
    );
    assert_eq!(c.task(&running)["lastStatus"], "RUNNING");
    stop(&c, &running);
}

/// kill -9 of the agent halfway through a big pull: containerd holds no image record, no lease
/// without an expiry outlives the agent's restart, and the next pull succeeds (the task runs,
/// with the pushed digest and every blob).
#[test]
fn an_agent_killed_mid_pull_leaves_containerd_consistent() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let archive = std::env::temp_dir().join(format!("berth-it-kill-{}.tar", std::process::id()));
    images::multi_layer_image(&archive, "localhost/big:1", &[20 << 20; 5], 42);
    let digest = reg.push(&archive, "big/app:1");
    let blobs = images::archive_blobs(&archive).expect("archive blobs");
    let _ = std::fs::remove_file(&archive);
    let mut c = cluster("img-kill", &reg, &[]);
    let image = reg.reference("big/app:1");
    let td = register(&c, "big", &image, "sleep 3600", "");
    let first = c.run_task(&td);
    // Halfway: the first layer blob is being fetched.
    wait_for("the pull to fetch a layer", T, || {
        reg.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path.starts_with("/v2/big/app/blobs/"))
            .then_some(())
    });
    c.kill_agent();
    assert!(
        image_line(&c, &image).is_none(),
        "the pull finished before the kill (the test needs a slower pull or a bigger image)"
    );
    let leases = leases(&c);
    c.start_agent();
    c.wait_agent_connected();
    // Leases the killed pull left either expire (containerd.io/gc.expire) or are released by
    // the restarted agent.
    wait_for("leases without an expiry to be released", T, || {
        let now = leases_ids(&c);
        leases
            .iter()
            .filter(|l| !l.contains("containerd.io/gc.expire="))
            .all(|l| !now.contains(&l.split_whitespace().next().unwrap_or("").to_string()))
            .then_some(())
    });
    // The first task runs or stops (its pull interrupted); either way a new one pulls.
    wait_for("the first task to settle", T, || {
        let t = c.task(&first);
        (t["lastStatus"] == "RUNNING" || t["lastStatus"] == "STOPPED").then_some(())
    });
    let arn = c.run_task(&td);
    let t = wait_running(&c, &arn);
    assert_eq!(
        t["containers"][0]["imageDigest"].as_str(),
        Some(digest.as_str())
    );
    let line = image_line(&c, &image).expect("the image record");
    assert!(line.contains(&digest), "{line}");
    let content = c.content_digests(NS);
    for b in &blobs {
        assert!(content.contains(b), "blob {b} missing after the pull");
    }
    let active = c.ctr(NS, &["content", "active"], T);
    let active = String::from_utf8_lossy(&active.stdout);
    assert!(
        active.lines().skip(1).all(|l| l.trim().is_empty()),
        "half-written content left: {active}"
    );
    for a in [&first, &arn] {
        if c.task(a)["lastStatus"] == "RUNNING" {
            stop(&c, a);
        }
    }
}

/// `ctr leases ls` lines (ID, created, labels).
fn leases(c: &Cluster) -> Vec<String> {
    let out = c.ctr(NS, &["leases", "ls"], T);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

fn leases_ids(c: &Cluster) -> Vec<String> {
    leases(c)
        .iter()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

/// `berth-agent image load` of a `docker save` archive, then a task runs it; the registry its
/// name points at is never contacted (an image loaded by hand counts as present).
#[test]
fn a_docker_save_archive_loads_and_runs_without_a_registry() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let c = cluster("img-save", &reg, &[]);
    let name = reg.reference("saved/app:1");
    let archive = c.dir.join("saved.tar");
    images::docker_save_archive(&archive, &name);
    load(&c, &archive, &name);
    let line = image_line(&c, &name).expect("the loaded image");
    assert!(line.contains("berth.io/source=load"), "{line}");
    let td = register(&c, "saved", &name, "echo loaded-image-runs; sleep 3600", "");
    let arn = c.run_task(&td);
    wait_running(&c, &arn);
    wait_for("the container's output", T, || {
        c.container_log(&arn, "main")
            .contains("loaded-image-runs")
            .then_some(())
    });
    assert_eq!(reg.repo_requests("saved/app"), 0, "{:?}", reg.requests());
    stop(&c, &arn);
}

/// The harness's `docker save` archive is what Docker writes: containerd's own importer takes
/// it (a reference for `berth-agent image load`).
#[test]
fn docker_save_archive_fixture_imports_with_ctr() {
    if !registry_prerequisites() {
        return;
    }
    let c = Cluster::containerd_only("img-save-fixture");
    let archive = c.dir.join("save.tar");
    images::docker_save_archive(&archive, "localhost/saved:1");
    let out = c.ctr(
        "fixture",
        &["images", "import", &archive.display().to_string()],
        T,
    );
    assert!(
        out.status.success(),
        "ctr import: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ls = c.ctr("fixture", &["images", "ls", "-q"], T);
    let ls = String::from_utf8_lossy(&ls.stdout).to_string();
    assert!(ls.contains("localhost/saved:1"), "{ls}");
}

/// `run-task --wait` follows a real pull until the task is RUNNING; DescribePullProgress then
/// shows the finished pull (every layer, every byte); `berth-agent image ls` lists the pulled
/// image with its size and source, and `image rm` removes it (and a missing one is named).
#[test]
fn run_task_wait_follows_a_real_pull_and_image_ls_and_rm_show_and_remove_it() {
    if !registry_prerequisites() {
        return;
    }
    let reg = Registry::launch();
    let archive = std::env::temp_dir().join(format!("berth-it-wait-{}.tar", std::process::id()));
    images::multi_layer_image(&archive, "localhost/wait:1", &[8 << 20, 8 << 20], 11);
    reg.push(&archive, "app/wait:1");
    let _ = std::fs::remove_file(&archive);
    let c = cluster("img-wait", &reg, &[]);
    let image = reg.reference("app/wait:1");
    let td = register(&c, "waited", &image, "sleep 3600", "");
    let out = c.berth(&[
        "run-task",
        "--cluster",
        &c.name,
        "--task-definition",
        &td,
        "--wait",
        "--wait-timeout",
        "600",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "run-task --wait: {err}");
    assert!(err.contains("RUNNING"), "{err}");
    let v: Value = serde_json::from_slice(&out.stdout).expect("run-task JSON");
    assert_eq!(v["tasks"][0]["lastStatus"], "RUNNING", "{v}");
    let arn = v["tasks"][0]["taskArn"]
        .as_str()
        .expect("taskArn")
        .to_string();

    let p = c.json(&[
        "describe-pull-progress",
        "--cluster",
        &c.name,
        "--tasks",
        &arn,
    ]);
    let main = &p["progress"][0]["containers"][0];
    assert_eq!(main["containerName"], "main", "{p}");
    assert_eq!(main["phase"], "DONE", "{p}");
    assert_eq!(main["layersTotal"], 3, "{p}");
    assert_eq!(main["layersDone"], main["layersTotal"], "{p}");
    assert_eq!(main["bytesDone"], main["bytesTotal"], "{p}");

    let ls = c.agent_image_command(NS, &[], &["image", "ls"], T);
    let text = String::from_utf8_lossy(&ls.stdout);
    assert!(
        ls.status.success(),
        "{}",
        String::from_utf8_lossy(&ls.stderr)
    );
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with(&format!("{image}\t")))
        .unwrap_or_else(|| panic!("{image} not in image ls:\n{text}"))
        .split('\t')
        .collect();
    assert_eq!(row[3], "pull", "{text}");
    let size: u64 = row[2].parse().expect("a size");
    assert!(
        size > 16 << 20,
        "the image's layers, not its manifest: {text}"
    );
    stop(&c, &arn);

    let rm = c.agent_image_command(NS, &[], &["image", "rm", &image], T);
    assert!(
        rm.status.success(),
        "{}",
        String::from_utf8_lossy(&rm.stderr)
    );
    let ls = c.agent_image_command(NS, &[], &["image", "ls"], T);
    assert!(
        !String::from_utf8_lossy(&ls.stdout).contains(&image),
        "removed image still listed"
    );
    let again = c.agent_image_command(NS, &[], &["image", "rm", &image], T);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
}
