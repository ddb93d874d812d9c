//! Root tests of containerd exec through the agent's runtime (issue 9): a private containerd
//! (its own root, state and socket in a temporary directory), a busybox image built on the spot
//! with scripts/busybox-image.sh, one long-running container, and processes exec'd into it:
//! output and exit status, a terminal and its resize, the container's process list.
//!
//! Under CI=true a missing prerequisite (root, containerd, runc, busybox-static) fails; otherwise
//! the test is skipped with a printed reason.

use berth_agent::runtime::containerd::Containerd;
use berth_agent::runtime::spec::{self, SpecContext};
use berth_agent::runtime::{CreateContainer, ExecSpec, Runtime};
use berth_proto::v1::ContainerDefinition;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const IMAGE: &str = "localhost/busybox:latest";
const NAMESPACE: &str = "berth-exec-test";
const WAIT: Duration = Duration::from_secs(30);

fn prerequisites() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let mut missing = Vec::new();
    if !nix::unistd::geteuid().is_root() {
        missing.push("root");
    }
    for bin in ["containerd", "runc"] {
        let ok = Command::new(bin)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            missing.push(bin);
        }
    }
    if !Path::new("/bin/busybox").exists() {
        missing.push("busybox-static");
    }
    if missing.is_empty() {
        return true;
    }
    assert!(!ci, "CI=true and missing prerequisites: {missing:?}");
    eprintln!("skipping: missing {missing:?}");
    false
}

/// A private containerd in a temporary directory; killed and removed on drop.
struct Daemon {
    dir: PathBuf,
    child: Child,
}

impl Daemon {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("berth-exec-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("test dir");
        let config = dir.join("containerd.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{0}/containerd.sock\"\n[ttrpc]\n  address = \"{0}/containerd.sock.ttrpc\"\n[debug]\n  address = \"{0}/debug.sock\"\n",
                dir.display()
            ),
        )
        .expect("containerd config");
        let log = std::fs::File::create(dir.join("containerd.log")).expect("log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawning containerd");
        Daemon { dir, child }
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Overlay mounts of a container left running (a failed test) keep the root busy.
        if let Ok(mounts) = std::fs::read_to_string("/proc/self/mounts") {
            for m in mounts.lines().filter_map(|l| l.split(' ').nth(1)) {
                if m.starts_with(self.dir.to_string_lossy().as_ref()) {
                    let _ = nix::mount::umount2(m, nix::mount::MntFlags::MNT_DETACH);
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The container: removed (with its shim and cgroup) on drop, also when the test fails.
struct Container {
    rt: std::sync::Arc<Containerd>,
    id: String,
    cgroup: String,
}

impl Drop for Container {
    fn drop(&mut self) {
        let (rt, id, cgroup) = (self.rt.clone(), self.id.clone(), self.cgroup.clone());
        let t = std::thread::spawn(move || {
            let Ok(r) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            r.block_on(async {
                let _ = rt.kill(&id, 9).await;
                let _ = tokio::time::timeout(WAIT, rt.wait(&id)).await;
                if let Err(e) = rt.delete(&id).await {
                    eprintln!("guard: delete {id}: {e}");
                }
            });
        });
        let _ = t.join();
        for root in cgroup_roots() {
            let _ = std::fs::remove_dir(root.join(cgroup.trim_start_matches('/')));
        }
    }
}

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

async fn connect(d: &Daemon) -> Containerd {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if d.socket().exists() {
            if let Ok((c, _)) = Containerd::connect(&d.socket(), NAMESPACE).await {
                return c.with_exec_dir(d.dir.join("exec"));
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "containerd did not answer within {WAIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn load_image(rt: &Containerd, dir: &Path) {
    let archive = dir.join("busybox.tar");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let status = Command::new(root.join("scripts/busybox-image.sh"))
        .arg(&archive)
        .arg(IMAGE)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("running scripts/busybox-image.sh");
    assert!(status.success(), "building the busybox image failed");
    let archive = berth_agent::runtime::image::read_archive(&archive).expect("archive");
    rt.import(&archive).await.expect("import");
}

async fn start_container(rt: std::sync::Arc<Containerd>, dir: &Path) -> Container {
    let image = rt.image(IMAGE).await.expect("image");
    let def = ContainerDefinition {
        name: "app".into(),
        image: IMAGE.into(),
        command: vec!["sleep".into(), "3600".into()],
        environment: vec![berth_proto::v1::KeyValuePair {
            name: "FROM_CONTAINER".into(),
            value: "yes".into(),
        }],
        ..Default::default()
    };
    let security = spec::SecurityOptions {
        default_nofile: spec::grantable_nofile().min(spec::DEFAULT_NOFILE),
        ..Default::default()
    };
    let id = format!("exec-test-{}", std::process::id());
    let cgroup = format!("/berth-exec-test-{}/{id}", std::process::id());
    let ctx = SpecContext {
        network_mode: "none",
        cgroups_path: cgroup.clone(),
        hostname: "exec-test".into(),
        security: &security,
        netns_path: None,
        etc_files: None,
        pid: Default::default(),
        ipc: Default::default(),
        users: None,
        task_shm: None,
    };
    let c = CreateContainer {
        id: id.clone(),
        image: image.clone(),
        spec: spec::build(&def, &image, &ctx).expect("spec"),
        labels: HashMap::new(),
        log_path: dir.join("logs/app.log"),
        open_stdin: false,
    };
    let guard = Container {
        rt: rt.clone(),
        id,
        cgroup: format!("/berth-exec-test-{}", std::process::id()),
    };
    rt.create(&c).await.expect("create");
    rt.start(&c).await.expect("start");
    guard
}

/// Runs `args` in the container; returns (stdout, stderr, exit status).
async fn run(rt: &Containerd, id: &str, exec_id: &str, args: &[&str]) -> (String, String, u32) {
    let spec = ExecSpec {
        exec_id: exec_id.into(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec!["FROM_EXEC=1".into()],
        ..Default::default()
    };
    let mut io = rt.exec(id, &spec).await.expect("exec");
    let mut stderr_pipe = io.stderr.take().expect("stderr without a terminal");
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b, status) = tokio::time::timeout(WAIT, async {
        tokio::join!(
            io.stdout.read_to_string(&mut out),
            stderr_pipe.read_to_string(&mut err),
            rt.exec_wait(id, exec_id)
        )
    })
    .await
    .expect("exec finished in time");
    a.expect("stdout");
    b.expect("stderr");
    let status = status.expect("exec wait");
    rt.exec_delete(id, exec_id).await.expect("exec delete");
    (out, err, status)
}

/// Reads from `r` until `want` has appeared in what was read; returns all of it.
async fn read_until(r: &mut (impl tokio::io::AsyncRead + Unpin), seen: &mut String, want: &str) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while !seen.contains(want) {
            let n = r.read(&mut buf).await.expect("read");
            assert!(n > 0, "end of output before {want:?}; got {seen:?}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {want:?} within {WAIT:?}; got {seen:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_runs_commands_with_output_status_terminal_and_resize() {
    if !prerequisites() {
        return;
    }
    let d = Daemon::start();
    let rt = std::sync::Arc::new(connect(&d).await);
    load_image(&rt, &d.dir).await;
    let c = start_container(rt.clone(), &d.dir).await;
    let id = c.id.as_str();

    let (out, err, status) = run(&rt, id, "echo", &["echo", "hi"]).await;
    assert_eq!((out.as_str(), err.as_str(), status), ("hi\n", "", 0));

    let (_, _, status) = run(&rt, id, "exit3", &["sh", "-c", "exit 3"]).await;
    assert_eq!(status, 3);

    // stderr apart from stdout; the container's environment plus the exec's.
    let (out, err, status) = run(
        &rt,
        id,
        "env",
        &["sh", "-c", "echo $FROM_CONTAINER $FROM_EXEC; echo oops >&2"],
    )
    .await;
    assert_eq!(
        (out.as_str(), err.as_str(), status),
        ("yes 1\n", "oops\n", 0)
    );

    // The container's processes: its init (sleep) and a running exec.
    let before = rt.pids(id).await.expect("pids");
    assert_eq!(before.len(), 1, "{before:?}");
    let spec = ExecSpec {
        exec_id: "sleeper".into(),
        args: vec!["sleep".into(), "1000".into()],
        ..Default::default()
    };
    let _io = rt.exec(id, &spec).await.expect("exec sleep");
    let during = rt.pids(id).await.expect("pids");
    assert_eq!(during.len(), 2, "{during:?}");
    rt.exec_kill(id, "sleeper", 9).await.expect("exec kill");
    let status = tokio::time::timeout(WAIT, rt.exec_wait(id, "sleeper"))
        .await
        .expect("killed exec exits")
        .expect("exec wait");
    assert_eq!(status, 137);
    rt.exec_delete(id, "sleeper").await.expect("exec delete");
    // Deleting again, and killing what is gone, succeed.
    rt.exec_delete(id, "sleeper")
        .await
        .expect("exec delete again");
    assert_eq!(rt.pids(id).await.expect("pids"), before);

    // A terminal, driven through stdin; its size follows resizes.
    let spec = ExecSpec {
        exec_id: "tty".into(),
        args: vec!["sh".into()],
        terminal: true,
        stdin: true,
        ..Default::default()
    };
    let mut io = rt.exec(id, &spec).await.expect("exec with a terminal");
    assert!(io.stderr.is_none());
    let mut stdin = io.stdin.take().expect("stdin");
    let mut seen = String::new();
    stdin
        .write_all(b"tty; echo TTY-DONE\n")
        .await
        .expect("write");
    read_until(&mut io.stdout, &mut seen, "/dev/pts/").await;
    read_until(&mut io.stdout, &mut seen, "TTY-DONE\r\n").await;
    rt.exec_resize(id, "tty", 123, 45).await.expect("resize");
    stdin.write_all(b"stty size\n").await.expect("write");
    read_until(&mut io.stdout, &mut seen, "45 123").await;
    stdin.write_all(b"exit 5\n").await.expect("write");
    let status = tokio::time::timeout(WAIT, rt.exec_wait(id, "tty"))
        .await
        .expect("shell exits")
        .expect("exec wait");
    assert_eq!(status, 5);
    rt.exec_delete(id, "tty").await.expect("exec delete");

    // Dropping stdin closes the process's stdin: cat sees its end and exits.
    let spec = ExecSpec {
        exec_id: "cat".into(),
        args: vec!["cat".into()],
        stdin: true,
        ..Default::default()
    };
    let mut io = rt.exec(id, &spec).await.expect("exec cat");
    let mut stdin = io.stdin.take().expect("stdin");
    stdin.write_all(b"through cat\n").await.expect("write");
    drop(stdin);
    let mut out = String::new();
    tokio::time::timeout(WAIT, io.stdout.read_to_string(&mut out))
        .await
        .expect("cat's output ends once its stdin is closed")
        .expect("read");
    assert_eq!(out, "through cat\n");
    let status = tokio::time::timeout(WAIT, rt.exec_wait(id, "cat"))
        .await
        .expect("cat exits")
        .expect("exec wait");
    assert_eq!(status, 0);
    rt.exec_delete(id, "cat").await.expect("exec delete");

    // An exec in a container that does not exist names it.
    let e = rt
        .exec("no-such-container", &ExecSpec::default())
        .await
        .expect_err("no container");
    assert!(e.is_not_found(), "{e}");
    // No FIFO directories are left behind.
    let left: Vec<_> = std::fs::read_dir(d.dir.join("exec"))
        .map(|r| r.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    drop(c);
}
