//! Issue 13: the real aws CLI (version 1: PyPI's `awscli`) and boto3 against a [`Cluster`].
//!
//! They are installed from PyPI once into a virtual environment under the workspace's target/
//! (`target/aws-venv`, kept between runs like the test image; remade when [`REQUIREMENTS`]
//! change), under a file lock so test processes side by side never race. Every command runs in
//! an environment of its own: no variable of the host, a private HOME (no ~/.aws), an empty
//! config file, the cluster's admin key as the shared credentials file, its CA as the bundle,
//! and no instance metadata lookups (nothing leaves loopback). Without python3 and its venv
//! module (Debian: python3-venv) the tests are skipped, except under `CI=true`, where they fail,
//! as [`crate::prerequisites`] does.

use crate::registry::output_within;
use crate::{Cluster, COUNTER};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::time::Duration;

/// What pip installs: the CLI's version 1 (the only one on PyPI) and boto3.
pub const REQUIREMENTS: &[&str] = &["awscli>=1.30,<2", "boto3>=1.30"];

/// How long making the virtual environment and installing into it may take.
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);

/// How long one `aws` call or python script may take unless told otherwise.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

fn ci() -> bool {
    std::env::var("CI").map(|v| v == "true").unwrap_or(false)
}

/// A missing prerequisite: a panic under CI=true, else a skip message and `None`.
fn missing(msg: String) -> Option<PathBuf> {
    let msg = format!("aws CLI prerequisites missing: {msg}");
    if ci() {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    None
}

/// The virtual environment holding `aws` and boto3, made on first use in this process (and
/// kept for the next); `None` (the test skips) when python3 or its venv module is missing or
/// PyPI cannot be reached, a panic instead under CI=true.
pub fn venv() -> Option<&'static Path> {
    static VENV: OnceLock<Option<PathBuf>> = OnceLock::new();
    VENV.get_or_init(make_venv).as_deref()
}

/// Whether this host can run the aws CLI tests on real containers: [`crate::prerequisites`]
/// and [`venv`].
pub fn prerequisites() -> bool {
    crate::prerequisites() && venv().is_some()
}

fn stderr_of(out: &std::io::Result<Output>) -> String {
    match out {
        Ok(o) => format!(
            "{} {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim_end()
        ),
        Err(e) => e.to_string(),
    }
}

fn make_venv() -> Option<PathBuf> {
    // Debian's python3 has no ensurepip without python3-venv, and `python3 -m venv` then fails.
    let check = output_within(
        Command::new("python3").args(["-c", "import venv, ensurepip"]),
        Duration::from_secs(30),
    );
    if !check.as_ref().is_ok_and(|o| o.status.success()) {
        return missing(format!(
            "python3 with its venv module (scripts/install-deps.sh installs python3-venv): {}",
            stderr_of(&check)
        ));
    }
    let target = crate::workspace_root().join("target");
    std::fs::create_dir_all(&target).expect("creating target/");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(target.join("aws-venv.lock"))
        .expect("opening target/aws-venv.lock");
    // Held until this function returns: another test process waits here while one installs.
    let _lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("locking target/aws-venv.lock");
    let dir = target.join("aws-venv");
    let marker = dir.join(".berth-requirements");
    let want = REQUIREMENTS.join("\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(want.as_str())
        && dir.join("bin/aws").is_file()
        && dir.join("bin/python").exists()
    {
        return Some(dir);
    }
    // Half made (an install killed midway) or made for other requirements: made anew.
    let _ = std::fs::remove_dir_all(&dir);
    let made = output_within(
        Command::new("python3").args(["-m", "venv"]).arg(&dir),
        Duration::from_secs(120),
    );
    if !made.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = std::fs::remove_dir_all(&dir);
        return missing(format!("python3 -m venv: {}", stderr_of(&made)));
    }
    let installed = output_within(
        Command::new(dir.join("bin/python"))
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--timeout",
                "60",
                "--retries",
                "3",
            ])
            .args(REQUIREMENTS),
        INSTALL_TIMEOUT,
    );
    if !installed.as_ref().is_ok_and(|o| o.status.success()) {
        let _ = std::fs::remove_dir_all(&dir);
        return missing(format!(
            "pip install {} (PyPI reachable?): {}",
            REQUIREMENTS.join(" "),
            stderr_of(&installed)
        ));
    }
    std::fs::write(&marker, want).expect("writing the venv's marker");
    Some(dir)
}

/// The aws CLI and boto3 pointed at one controller: its endpoint, its CA (with TLS on), a
/// credentials file (the admin key unless [`Aws::with_credentials`]) and a region.
#[derive(Debug, Clone)]
pub struct Aws {
    venv: PathBuf,
    home: PathBuf,
    /// The `--endpoint-url` every call is given.
    pub endpoint: String,
    ca: Option<PathBuf>,
    credentials: PathBuf,
    region: String,
}

impl Aws {
    /// The aws CLI against `c` as its admin, in region us-east-1. Panics when [`venv`] is
    /// missing: a test checks [`prerequisites`] (or [`venv`]) first.
    pub fn new(c: &Cluster) -> Self {
        let venv = venv()
            .expect("the aws venv: check berth_tests::aws::prerequisites() first")
            .to_path_buf();
        let home = c.dir.join(format!(
            "aws-home-{}",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&home).expect("the aws CLI's HOME");
        std::fs::write(home.join("config"), "").expect("the aws CLI's empty config file");
        Aws {
            venv,
            home,
            endpoint: c.endpoint.clone(),
            ca: c.tls.then(|| c.ca_file()),
            credentials: c.admin_credentials(),
            region: "us-east-1".into(),
        }
    }

    /// The same, signing with the `[default]` key of another credentials file.
    pub fn with_credentials(mut self, file: &Path) -> Self {
        self.credentials = file.to_path_buf();
        self
    }

    /// The same, in another region (the controller accepts any).
    pub fn with_region(mut self, region: &str) -> Self {
        self.region = region.to_string();
        self
    }

    /// The scratch directory of these calls (their HOME): where a test writes input files.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The isolated environment: nothing of the host's, only what points at the cluster.
    fn isolate(&self, cmd: &mut Command) {
        cmd.env_clear()
            .env(
                "PATH",
                format!(
                    "{}:/usr/local/bin:/usr/bin:/bin",
                    self.venv.join("bin").display()
                ),
            )
            .env("HOME", &self.home)
            .env("LC_ALL", "C.UTF-8")
            .env("AWS_CONFIG_FILE", self.home.join("config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", &self.credentials)
            .env("AWS_DEFAULT_REGION", &self.region)
            // No 169.254.169.254 lookups when a key is missing: loopback only.
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("BERTH_ENDPOINT_URL", &self.endpoint)
            .current_dir(&self.home);
        if let Some(ca) = &self.ca {
            cmd.env("AWS_CA_BUNDLE", ca);
        }
    }

    /// `aws --endpoint-url ENDPOINT ARGS...`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.venv.join("bin/aws"));
        self.isolate(&mut cmd);
        cmd.arg("--endpoint-url").arg(&self.endpoint).args(args);
        cmd
    }

    /// Runs `aws --endpoint-url ENDPOINT ARGS...` within `timeout`.
    pub fn run_within(&self, args: &[&str], timeout: Duration) -> Output {
        output_within(&mut self.command(args), timeout)
            .unwrap_or_else(|e| panic!("aws {args:?}: {e}"))
    }

    /// Runs `aws --endpoint-url ENDPOINT ARGS...` within [`CALL_TIMEOUT`].
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_within(args, CALL_TIMEOUT)
    }

    /// Runs `aws ARGS...`, asserting success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "aws {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `aws ARGS...`, asserting success, and parses its JSON output.
    pub fn json(&self, args: &[&str]) -> Value {
        let text = self.ok(args);
        serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("aws {args:?}: not JSON ({e}): {text}"))
    }

    /// Runs `aws ARGS...`, asserting it exits with `code` and `needle` on stderr; returns stderr.
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> String {
        let out = self.run(args);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(
            out.status.code(),
            Some(code),
            "aws {args:?}: stdout {} stderr {err}",
            String::from_utf8_lossy(&out.stdout)
        );
        assert!(
            err.contains(needle),
            "aws {args:?}: expected '{needle}' in: {err}"
        );
        err
    }

    /// Runs the python `script` (boto3 importable; the endpoint in `BERTH_ENDPOINT_URL`, the
    /// credentials, CA and region in the usual AWS_* variables) with `args`, within `timeout`.
    pub fn python(&self, script: &str, args: &[&str], timeout: Duration) -> Output {
        let file = self.home.join(format!(
            "script-{}.py",
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&file, script).expect("writing the python script");
        let mut cmd = Command::new(self.venv.join("bin/python"));
        self.isolate(&mut cmd);
        cmd.arg(&file).args(args);
        output_within(&mut cmd, timeout).unwrap_or_else(|e| panic!("python {script}: {e}"))
    }
}
