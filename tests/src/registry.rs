//! Issue 11: a real image registry on loopback for pull tests and the pull benchmark.
//!
//! [`Registry`] runs Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 and a free port,
//! with its storage in a directory it owns, optionally behind htpasswd basic auth. It can be
//! stopped and started again on the same port and storage (a registry going away mid-test), and
//! its access log (one line per request) tells what clients asked for. Images go in with
//! `skopeo copy` ([`Registry::push`]). Everything is removed on drop.

use crate::{free_port, COUNTER};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// How long a push may take (a ~100 MB image over loopback takes a few seconds).
pub const PUSH_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the registry may take to answer `GET /v2/` after it is started.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether this host can run the registry tests: [`crate::prerequisites`] plus docker-registry,
/// skopeo, htpasswd (apache2-utils) and gzip. Under CI=true a missing one panics instead of
/// skipping, as [`crate::prerequisites`] does.
pub fn registry_prerequisites() -> bool {
    if !crate::prerequisites() {
        return false;
    }
    let missing: Vec<&str> = [
        ("docker-registry", "docker-registry"),
        ("skopeo", "skopeo"),
        ("htpasswd", "apache2-utils"),
        ("gzip", "gzip"),
    ]
    .into_iter()
    .filter(|(tool, _)| !has_command(tool))
    .map(|(_, package)| package)
    .collect();
    if missing.is_empty() {
        return true;
    }
    let msg = format!(
        "registry test prerequisites missing: {} (scripts/install-deps.sh installs them)",
        missing.join(", ")
    );
    if std::env::var("CI").map(|v| v == "true").unwrap_or(false) {
        panic!("{msg} (CI=true: failing instead of skipping)");
    }
    eprintln!("SKIPPED: {msg}");
    false
}

fn has_command(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Runs `cmd` to completion within `timeout`, collecting its stdout and stderr; on timeout it
/// is killed and an error of kind `TimedOut` names it.
pub fn output_within(cmd: &mut Command, timeout: Duration) -> std::io::Result<Output> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let err = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let start = Instant::now();
    let mut delay = Duration::from_millis(5);
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("{cmd:?} did not finish within {timeout:?}"),
            ));
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(100));
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    })
}

/// One request of the registry's access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// GET, HEAD, PUT…
    pub method: String,
    /// The request URI (`/v2/REPO/manifests/TAG`).
    pub path: String,
    /// The HTTP status the registry answered.
    pub status: u16,
    /// The client's User-Agent.
    pub user_agent: String,
}

/// Parses an access-log line in the combined log format distribution writes:
/// `127.0.0.1 - - [date] "GET /v2/ HTTP/1.1" 401 87 "" "curl/7.88.1"`.
pub fn parse_access_line(line: &str) -> Option<Request> {
    let (_, rest) = line.split_once("] \"")?;
    let (request, rest) = rest.split_once('"')?;
    let mut parts = request.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let status = rest.split_whitespace().next()?.parse().ok()?;
    let user_agent = rest
        .rsplit_once("\"")
        .and_then(|(before, _)| before.rsplit_once('"'))
        .map(|(_, ua)| ua.to_string())
        .unwrap_or_default();
    Some(Request {
        method,
        path,
        status,
        user_agent,
    })
}

/// A private docker-registry on 127.0.0.1, removed (process and storage) on drop.
pub struct Registry {
    /// Its directory: config.yml, htpasswd, storage/ and registry.log.
    pub dir: PathBuf,
    /// Its port on 127.0.0.1.
    pub port: u16,
    credentials: Option<(String, String)>,
    child: Option<Child>,
}

impl Registry {
    /// A registry without authentication, started and answering.
    pub fn launch() -> Self {
        Self::launch_with(None)
    }

    /// A registry that requires basic auth with this user and password (htpasswd, bcrypt),
    /// started and answering.
    pub fn launch_with_auth(user: &str, password: &str) -> Self {
        Self::launch_with(Some((user, password)))
    }

    fn launch_with(credentials: Option<(&str, &str)>) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("berth-reg-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("storage")).expect("registry dir");
        let port = free_port();
        let mut auth = String::new();
        if let Some((user, password)) = credentials {
            let out = output_within(
                Command::new("htpasswd").args(["-Bbn", user, password]),
                Duration::from_secs(30),
            )
            .expect("running htpasswd");
            assert!(
                out.status.success(),
                "htpasswd failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::write(dir.join("htpasswd"), &out.stdout).expect("writing htpasswd");
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                dir.join("htpasswd").display()
            );
        }
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n  secret: berth-test-{n}\n{auth}",
            dir.join("storage").display()
        );
        std::fs::write(dir.join("config.yml"), config).expect("writing registry config");
        let mut r = Registry {
            dir,
            port,
            credentials: credentials.map(|(u, p)| (u.to_string(), p.to_string())),
            child: None,
        };
        r.start();
        r
    }

    /// `127.0.0.1:PORT`, the registry's host as references and --insecure-registry name it.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `127.0.0.1:PORT/REPO_TAG`.
    pub fn reference(&self, repo_tag: &str) -> String {
        format!("{}/{repo_tag}", self.host())
    }

    /// The user and password it requires, if any.
    pub fn credentials(&self) -> Option<(&str, &str)> {
        self.credentials
            .as_ref()
            .map(|(u, p)| (u.as_str(), p.as_str()))
    }

    /// The registry's log (its own messages and the access log), across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("registry.log")
    }

    /// Whether it is running (started and not stopped).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts it (again: same port, same storage) and waits until `GET /v2/` answers.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the registry is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("registry log");
        let log2 = log.try_clone().expect("registry log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(self.dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .expect("spawning docker-registry");
        self.child = Some(child);
        let start = Instant::now();
        let mut delay = Duration::from_millis(10);
        loop {
            if let Some(status) = self.ping() {
                assert!(
                    status == 200 || status == 401,
                    "the registry answered GET /v2/ with {status}"
                );
                return;
            }
            if let Some(Ok(Some(exit))) = self.child.as_mut().map(|c| c.try_wait()) {
                self.child = None;
                panic!(
                    "docker-registry exited ({exit}) before answering: {}",
                    self.log_tail(30)
                );
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "docker-registry did not answer GET /v2/ within {READY_TIMEOUT:?}: {}",
                    self.log_tail(30)
                );
            }
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_millis(200));
        }
    }

    /// Stops it (SIGTERM, then SIGKILL after 10 s); its port then refuses connections. Its
    /// storage and log stay for [`Registry::start`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if start.elapsed() > Duration::from_secs(10) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                Ok(None) => {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(100));
                }
            }
        }
    }

    /// The status of `GET /v2/` (200, or 401 with auth), or `None` when nothing answers.
    pub fn ping(&self) -> Option<u16> {
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        s.write_all(b"GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: berth-test-ping\r\n\r\n")
            .ok()?;
        let mut head = [0u8; 64];
        let n = s.read(&mut head).ok()?;
        let line = String::from_utf8_lossy(&head[..n]);
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// The last `n` lines of its log, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Every request it has answered so far (all runs), oldest first; the harness's own
    /// readiness probes are left out.
    pub fn requests(&self) -> Vec<Request> {
        std::fs::read_to_string(self.log_path())
            .unwrap_or_default()
            .lines()
            .filter_map(parse_access_line)
            .filter(|r| r.user_agent != "berth-test-ping")
            .collect()
    }

    /// How many `GET`s of `REPO`'s manifests (by tag or digest) it has answered.
    pub fn manifest_gets(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/manifests/");
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.starts_with(&prefix))
            .count()
    }

    /// How many requests for `REPO` (manifests or blobs, any method) it has answered, pushes
    /// included.
    pub fn repo_requests(&self, repo: &str) -> usize {
        let prefix = format!("/v2/{repo}/");
        self.requests()
            .iter()
            .filter(|r| r.path.starts_with(&prefix))
            .count()
    }

    /// Pushes the single image of an OCI archive as `REPO:TAG`; returns the manifest digest
    /// the registry now holds (`sha256:…`).
    pub fn push(&self, archive: &Path, repo_tag: &str) -> String {
        self.copy(archive, repo_tag, false)
    }

    /// Pushes an OCI archive whose image is an index, with every platform's manifest
    /// (`skopeo copy --all`); returns the index's digest.
    pub fn push_all(&self, archive: &Path, repo_tag: &str) -> String {
        self.copy(archive, repo_tag, true)
    }

    fn copy(&self, archive: &Path, repo_tag: &str, all: bool) -> String {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let digest_file = self.dir.join(format!("push-{n}.digest"));
        let mut cmd = Command::new("skopeo");
        // The archives are built on the spot: no signature policy applies to them.
        cmd.args(["--insecure-policy", "copy", "--dest-tls-verify=false"])
            .arg("--digestfile")
            .arg(&digest_file);
        if let Some((u, p)) = self.credentials() {
            cmd.arg("--dest-creds").arg(format!("{u}:{p}"));
        }
        if all {
            cmd.arg("--all");
        }
        cmd.arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}", self.reference(repo_tag)));
        // skopeo unpacks oci-archive: sources under TMPDIR; keep that beside the storage.
        cmd.env("TMPDIR", &self.dir);
        let out = output_within(&mut cmd, PUSH_TIMEOUT)
            .unwrap_or_else(|e| panic!("pushing {} as {repo_tag}: {e}", archive.display()));
        assert!(
            out.status.success(),
            "skopeo copy of {} to {} failed: {}",
            archive.display(),
            self.reference(repo_tag),
            String::from_utf8_lossy(&out.stderr)
        );
        let digest = std::fs::read_to_string(&digest_file)
            .expect("skopeo's digest file")
            .trim()
            .to_string();
        let _ = std::fs::remove_file(&digest_file);
        assert!(
            digest.starts_with("sha256:"),
            "skopeo wrote no digest: {digest:?}"
        );
        digest
    }

    /// Writes a Docker config.json (`{"auths": {"127.0.0.1:PORT": {"auth": base64(U:P)}}}`)
    /// holding this registry's credentials, or `user`/`password` when given, for the agent's
    /// --registry-auth-file.
    pub fn write_auth_file(&self, path: &Path, user: &str, password: &str) {
        let v = serde_json::json!({
            "auths": { self.host(): { "auth": base64(format!("{user}:{password}").as_bytes()) } }
        });
        std::fs::write(path, serde_json::to_vec_pretty(&v).expect("JSON"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "registry on port {} (its log, last lines):\n{}",
                self.port,
                self.log_tail(40)
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Standard base64 with padding (what Docker's config.json `auth` holds).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_known_answers() {
        // From RFC 4648, section 10.
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded);
        }
    }

    #[test]
    fn parses_access_lines() {
        let r = parse_access_line(
            r#"127.0.0.1 - - [29/Nov/2026:09:04:05 +0000] "GET /v2/bb/manifests/1 HTTP/1.1" 200 528 "" "containerd/1.6.20""#,
        )
        .expect("an access line");
        assert_eq!(r.method, "GET");
        assert_eq!(r.path, "/v2/bb/manifests/1");
        assert_eq!(r.status, 200);
        assert_eq!(r.user_agent, "containerd/1.6.20");
        assert!(parse_access_line(r#"time="2026" level=info msg="listening""#).is_none());
    }
}
