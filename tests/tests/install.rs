//! Installing an agent host as ECS Anywhere does: `scripts/package.sh` makes the tarball,
//! `install.sh` from it installs into a `--root` tree (so nothing on this host changes), and the
//! systemd units pass `systemd-analyze verify`. The real scripts and the debug binaries; no root,
//! no containerd. A run under a real systemd as PID 1, on cgroup v2, is `scripts/test-vm.sh`.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

/// A fresh directory for one test, removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("berth-install-{test}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("spawn")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The tarball scripts/package.sh makes from the debug binaries (once per test binary), and
/// the directory it was unpacked into.
struct Package {
    tarball: PathBuf,
    dir: PathBuf,
}

fn package() -> &'static Package {
    static PKG: OnceLock<Package> = OnceLock::new();
    PKG.get_or_init(|| {
        for b in ["berth", "berth-agent", "berth-controller"] {
            berth_tests::bin(b);
        }
        remove_stale_packages();
        let out_dir =
            std::env::temp_dir().join(format!("berth-install-pkg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&out_dir);
        let out = run(Command::new("bash")
            .arg(repo().join("scripts/package.sh"))
            .arg("--bin-dir")
            .arg(berth_tests::bin_dir())
            .arg("--out")
            .arg(out_dir.join("dist")));
        assert!(
            out.status.success(),
            "package.sh failed: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        let tarball = PathBuf::from(text(&out.stdout).lines().last().expect("a path").trim());
        let unpacked = out_dir.join("unpacked");
        std::fs::create_dir_all(&unpacked).expect("unpack dir");
        let out = run(Command::new("tar")
            .arg("-C")
            .arg(&unpacked)
            .arg("-xzf")
            .arg(&tarball));
        assert!(out.status.success(), "tar -x: {}", text(&out.stderr));
        let name = tarball
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".tar.gz"))
            .expect("a .tar.gz")
            .to_string();
        Package {
            dir: unpacked.join(name),
            tarball,
        }
    })
}

/// A test binary has no teardown: the packages of earlier runs (whose process is gone) go here.
fn remove_stale_packages() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("berth-install-pkg-") {
            if !Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
}

fn install(args: &[&str]) -> Output {
    run(Command::new("bash")
        .arg(package().dir.join("install.sh"))
        .args(args)
        .env_remove("BERTH_CONTROLLER"))
}

/// Every file under `root` with its mode, inode and a hash of its bytes (symlinks as their
/// target), to show that a refused run or a rerun changed nothing.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).expect("metadata");
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("link");
                out.insert(p, format!("-> {}", target.display()));
            } else if meta.is_dir() {
                out.insert(p.clone(), format!("dir {:o}", meta.mode()));
                walk(&p, out);
            } else {
                let mut h = std::hash::DefaultHasher::new();
                std::fs::read(&p).expect("read").hash(&mut h);
                let line = format!(
                    "{:o} inode {} bytes {:x}",
                    meta.mode(),
                    meta.ino(),
                    h.finish()
                );
                out.insert(p, line);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, &mut out);
    out
}

/// Fails naming each path that differs between two snapshots.
fn assert_unchanged(
    before: &BTreeMap<PathBuf, String>,
    after: &BTreeMap<PathBuf, String>,
    what: &str,
) {
    let differing: Vec<String> = before
        .keys()
        .chain(after.keys())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .filter(|p| before.get(*p) != after.get(*p))
        .map(|p| format!("{}: {:?} -> {:?}", p.display(), before.get(p), after.get(p)))
        .collect();
    assert!(
        differing.is_empty(),
        "{what} changed the tree:\n{}",
        differing.join("\n")
    );
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

const FINGERPRINT_HEX: &str = "5f3a0c9e7d1b2a4c6e8f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f";

#[test]
fn the_package_holds_the_binaries_units_install_script_and_readme() {
    let pkg = package();
    let name = pkg
        .tarball
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(
        name,
        format!("berth-{}-{arch}.tar.gz", env!("CARGO_PKG_VERSION"))
    );
    let out = run(Command::new("tar").arg("-tzf").arg(&pkg.tarball));
    assert!(out.status.success());
    let top = name.trim_end_matches(".tar.gz");
    let entries: Vec<String> = text(&out.stdout).lines().map(str::to_string).collect();
    for want in [
        "bin/berth",
        "bin/berth-agent",
        "bin/berth-controller",
        "systemd/berth-agent.service",
        "systemd/berth-controller.service",
        "install.sh",
        "README",
    ] {
        let path = format!("{top}/{want}");
        assert!(entries.contains(&path), "{path} not in {entries:?}");
    }
    for exe in [
        "bin/berth",
        "bin/berth-agent",
        "bin/berth-controller",
        "install.sh",
    ] {
        assert_eq!(
            mode(&pkg.dir.join(exe)) & 0o111,
            0o111,
            "{exe} is not executable"
        );
    }
    // The packaged agent is the one that was built: it answers --version.
    let out = run(Command::new(pkg.dir.join("bin/berth-agent")).arg("--version"));
    assert!(text(&out.stdout).contains(env!("CARGO_PKG_VERSION")));
    let readme = std::fs::read_to_string(pkg.dir.join("README")).unwrap();
    assert!(readme.contains("install.sh --controller"), "{readme}");
    assert!(readme.contains("create-activation"), "{readme}");
    // Every unit in systemd/ ships.
    for unit in std::fs::read_dir(repo().join("systemd")).unwrap().flatten() {
        let name = unit.file_name().to_string_lossy().into_owned();
        assert!(
            entries.contains(&format!("{top}/systemd/{name}")),
            "{name} not packaged"
        );
    }
}

#[test]
fn install_into_a_root_writes_the_config_0600_the_units_and_binaries_and_a_rerun_is_harmless() {
    let s = Scratch::new("root");
    let root = s.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let ca = s.0.join("controller-ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    // An operator's own setting, and an agent that already enrolled: both must survive.
    std::fs::create_dir_all(root.join("etc/berth")).unwrap();
    std::fs::write(
        root.join("etc/berth/agent.conf"),
        "BERTH_RESERVED_MEMORY=256\nBERTH_CLUSTER=old\n",
    )
    .unwrap();
    let tls = root.join("var/lib/berth/agent/tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("client.pem"), "enrolled").unwrap();

    // The fingerprint as an operator may paste it: upper case, colons.
    let pasted = FINGERPRINT_HEX
        .to_uppercase()
        .as_bytes()
        .chunks(2)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(":");
    let args_owned = [
        "--root",
        root.to_str().unwrap(),
        "--controller",
        "https://controller.example:7480",
        "--cluster",
        "production-cluster",
        "--activation-id",
        "a1b2c3d4-1111-2222-3333-444455556666",
        "--activation-code",
        "Fjz3/sZfSU5vCpnG+W5k=",
        "--ca-fingerprint",
        &format!("SHA256:{pasted}"),
        "--ca-file",
        ca.to_str().unwrap(),
    ];
    let out = install(&args_owned);
    assert!(
        out.status.success(),
        "install.sh: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("Fjz3/sZfSU5vCpnG+W5k="),
        "the code was printed: {stdout}"
    );

    let conf = root.join("etc/berth/agent.conf");
    assert_eq!(mode(&conf), 0o600, "agent.conf holds the activation code");
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    let lines: Vec<&str> = conf_text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "BERTH_CONTROLLER=https://controller.example:7480",
            "BERTH_CLUSTER=production-cluster",
            "BERTH_ACTIVATION_ID=a1b2c3d4-1111-2222-3333-444455556666",
            "BERTH_ACTIVATION_CODE=Fjz3/sZfSU5vCpnG+W5k=",
            &format!("BERTH_CA_FINGERPRINT=sha256:{FINGERPRINT_HEX}"),
            "BERTH_CA_FILE=/etc/berth/ca.pem",
            "BERTH_RESERVED_MEMORY=256",
        ]
    );
    // The agent's own parser reads it back as written.
    let pairs = berth_proto::config::read_env_file(&conf).unwrap();
    assert!(pairs.contains(&(
        "BERTH_ACTIVATION_CODE".to_string(),
        "Fjz3/sZfSU5vCpnG+W5k=".to_string()
    )));
    assert_eq!(
        std::fs::read(root.join("etc/berth/ca.pem")).unwrap(),
        std::fs::read(&ca).unwrap()
    );
    for b in ["berth", "berth-agent", "berth-controller"] {
        let installed = root.join("usr/local/bin").join(b);
        assert_eq!(mode(&installed), 0o755, "{b}");
        assert_eq!(
            std::fs::read(&installed).unwrap(),
            std::fs::read(package().dir.join("bin").join(b)).unwrap(),
            "{b} differs from the package's"
        );
    }
    let unit = root.join("etc/systemd/system/berth-agent.service");
    assert_eq!(
        std::fs::read(&unit).unwrap(),
        std::fs::read(package().dir.join("systemd/berth-agent.service")).unwrap()
    );
    if command_exists("systemctl") {
        let wants = root.join("etc/systemd/system/multi-user.target.wants/berth-agent.service");
        assert!(
            std::fs::symlink_metadata(&wants).is_ok(),
            "berth-agent is not enabled in the root: {stdout}"
        );
    }
    assert!(stdout.contains("not starting anything"), "{stdout}");
    assert_eq!(
        std::fs::read_to_string(tls.join("client.pem")).unwrap(),
        "enrolled"
    );

    // Again, the same arguments: nothing is rewritten (same bytes, same inodes).
    let before = snapshot(&root);
    let out = install(&args_owned);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stdout).contains("wrote "),
        "a rerun rewrote files: {}",
        text(&out.stdout)
    );
    assert_unchanged(&before, &snapshot(&root), "a rerun");

    // A new cluster rewrites agent.conf alone, still 0600, keeping the operator's line.
    let mut moved = args_owned.to_vec();
    moved[5] = "other-cluster";
    let out = install(&moved);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let wrote: Vec<String> = text(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("wrote "))
        .map(str::to_string)
        .collect();
    assert_eq!(wrote, [conf.display().to_string()]);
    assert_eq!(mode(&conf), 0o600);
    let conf_text = std::fs::read_to_string(&conf).unwrap();
    assert!(
        conf_text.contains("BERTH_CLUSTER=other-cluster\n"),
        "{conf_text}"
    );
    assert!(!conf_text.contains("production-cluster"), "{conf_text}");
    assert_eq!(
        conf_text.matches("BERTH_RESERVED_MEMORY=256").count(),
        1,
        "{conf_text}"
    );
}

#[test]
fn install_refuses_bad_arguments_with_one_line_and_changes_nothing() {
    let s = Scratch::new("bad");
    let root = s.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let r = root.to_str().unwrap().to_string();
    // A host installed once: a refused run must leave it exactly so.
    let out = install(&["--root", &r, "--controller", "http://127.0.0.1:7480"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let before = snapshot(&root);
    let not_pem = s.0.join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    let fp = format!("sha256:{FINGERPRINT_HEX}");
    let https = [
        "--controller",
        "https://c:7480",
        "--activation-id",
        "id",
        "--activation-code",
        "code",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = vec!["--root".into(), r.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (with(&[]), "--controller is required"),
        (
            with(&["--controller", "ftp://c:1"]),
            "--controller must be http(s)://HOST[:PORT]",
        ),
        (
            with(&["--controller", "http://c:1", "--cluster", "bad name"]),
            "--cluster must be 1 to 255 letters",
        ),
        (
            with(&["--controller", "https://c:7480", "--ca-fingerprint", &fp]),
            "--activation-id and --activation-code are required with an https:// controller",
        ),
        (with(&https), "needs --ca-fingerprint or --ca-file"),
        (
            with(&[&https[..], &["--ca-fingerprint", "sha256:abc"]].concat()),
            "--ca-fingerprint must be sha256:<64 hex digits>",
        ),
        (
            with(&[&https[..], &["--ca-file", "/nonexistent/ca.pem"]].concat()),
            "is not a readable file",
        ),
        (
            with(&[&https[..], &["--ca-file", not_pem.to_str().unwrap()]].concat()),
            "holds no PEM certificate",
        ),
        (
            with(&[
                "--controller",
                "http://c:7480",
                "--activation-id",
                "id",
                "--activation-code",
                "code",
            ]),
            "must not cross the network in the clear",
        ),
        (
            with(&[
                "--controller",
                "https://c:1",
                "--activation-id",
                "id",
                "--ca-fingerprint",
                &fp,
            ]),
            "--activation-id needs --activation-code",
        ),
        (
            with(&[
                "--controller",
                "https://c:1",
                "--activation-id",
                "id",
                "--activation-code",
                "has space",
                "--ca-fingerprint",
                &fp,
            ]),
            "--activation-code holds blanks, quotes or control characters",
        ),
        (
            with(&["--controller", "http://c:1", "--cluster", "--no-start"]),
            "option --cluster was passed an invalid value",
        ),
        (
            with(&["--controller", "http://c:1", "--cluster"]),
            "option --cluster needs a value",
        ),
        (
            with(&["--controller", "http://c:1", "--timeout", "0"]),
            "--timeout must be a positive number of seconds",
        ),
        (
            with(&["--controller", "http://c:1", "--region", "x"]),
            "unknown option: --region",
        ),
        (
            vec![
                "--root".into(),
                s.0.join("missing").display().to_string(),
                "--controller".into(),
                "http://c:1".into(),
            ],
            "is not a directory",
        ),
    ];
    for (args, needle) in cases {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = install(&refs);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(
            stderr.lines().count(),
            1,
            "{args:?}: not one line: {stderr:?}"
        );
        assert!(stderr.starts_with("install.sh: "), "{args:?}: {stderr}");
        assert!(
            stderr.contains(needle),
            "{args:?}: {stderr:?} lacks {needle:?}"
        );
        assert_eq!(text(&out.stdout), "", "{args:?}");
        assert_unchanged(&before, &snapshot(&root), &format!("{args:?}"));
    }
}

#[test]
fn install_without_root_into_slash_is_refused_with_one_line() {
    // Only meaningful where the test runs as root and can drop to nobody.
    if !nix::unistd::Uid::effective().is_root() || !command_exists("setpriv") {
        eprintln!("SKIPPED: needs root and setpriv to run install.sh as nobody");
        return;
    }
    let pkg = package();
    let out = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "bash"])
        .arg(pkg.dir.join("install.sh"))
        .args(["--controller", "http://127.0.0.1:7480"]));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "install.sh: must be run as root (or with --root DIR)\n"
    );
    assert_eq!(text(&out.stdout), "");
}

fn command_exists(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Whether `systemd-analyze` is here; like [`berth_tests::prerequisites`], a missing tool skips
/// the test with a message, except under CI=true, where it fails.
fn systemd_analyze_available() -> bool {
    if command_exists("systemd-analyze") {
        return true;
    }
    let msg = "systemd-analyze is missing (apt-get install systemd)";
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

/// Copies a directory tree (regular files and symlinks).
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        let dest = to.join(e.file_name());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(e.path()).unwrap();
            let _ = std::os::unix::fs::symlink(target, &dest);
        } else if meta.is_dir() {
            copy_tree(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    if !systemd_analyze_available() {
        return;
    }
    // A root made by install.sh (the agent's unit and binaries where the units expect them),
    // the controller's unit beside it, and this host's systemd units (the targets they name).
    let s = Scratch::new("verify");
    let root = s.0.join("root");
    std::fs::create_dir_all(&root).unwrap();
    let out = install(&[
        "--root",
        root.to_str().unwrap(),
        "--controller",
        "http://127.0.0.1:7480",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let host_units = ["/usr/lib/systemd/system", "/lib/systemd/system"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.join("multi-user.target").exists())
        .expect("this host's systemd units (multi-user.target)");
    copy_tree(host_units, &root.join("usr/lib/systemd/system"));
    let units: Vec<PathBuf> = std::fs::read_dir(package().dir.join("systemd"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(units.len() >= 2, "{units:?}");
    for unit in &units {
        let name = unit.file_name().unwrap();
        let dest = root.join("etc/systemd/system").join(name);
        std::fs::copy(unit, &dest).unwrap();
        let out = run(Command::new("systemd-analyze")
            .arg("verify")
            .arg(format!("--root={}", root.display()))
            .arg(&dest)
            .env("SYSTEMD_LOG_COLOR", "0"));
        // verify only warns (exit 0) on an unknown key or a bad value: any output is a failure.
        assert!(
            out.status.success() && out.stderr.is_empty() && out.stdout.is_empty(),
            "systemd-analyze verify {}: {}{}",
            name.to_string_lossy(),
            text(&out.stdout),
            text(&out.stderr)
        );
    }

    // What the agent's unit must keep.
    let agent = std::fs::read_to_string(package().dir.join("systemd/berth-agent.service")).unwrap();
    let has = |line: &str| agent.lines().any(|l| l.trim() == line);
    for line in [
        "Wants=containerd.service network-online.target",
        "After=containerd.service network-online.target",
        "ExecStart=/usr/local/bin/berth-agent --config /etc/berth/agent.conf",
        "RestartPreventExitStatus=5",
        "KillMode=process",
        "Delegate=yes",
        "StateDirectoryMode=0700",
    ] {
        assert!(has(line), "berth-agent.service lacks {line}");
    }
    // Settings that would break containerd use must not creep in.
    for key in [
        "ProtectControlGroups=",
        "PrivateDevices=",
        "DeviceAllow=",
        "ProtectClock=",
        "RestrictNamespaces=",
        "PrivateTmp=",
    ] {
        assert!(
            !agent.lines().any(|l| l.trim().starts_with(key)),
            "berth-agent.service sets {key}"
        );
    }
    let controller =
        std::fs::read_to_string(package().dir.join("systemd/berth-controller.service")).unwrap();
    assert!(controller.lines().any(|l| l.trim()
        == "ExecStart=/usr/local/bin/berth-controller --config /etc/berth/controller.conf"));
}
