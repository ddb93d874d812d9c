//! The registry client against the real Docker registry (Debian's docker-registry), started here
//! on loopback with a private storage directory, filled with skopeo: anonymous, then behind
//! htpasswd (no credentials, wrong ones, right ones), manifest by tag and by digest, blobs whole
//! and resumed.
//!
//! Under CI=true a missing prerequisite (docker-registry, skopeo, htpasswd) fails; otherwise the
//! test is skipped with a printed reason.

use berth_agent::images::registry::{
    Credentials, Reference, RegistryClient, RegistryConfig, OCI_MANIFEST,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TOOLS: [(&str, &str); 3] = [
    ("/usr/bin/docker-registry", "docker-registry"),
    ("/usr/bin/skopeo", "skopeo"),
    ("/usr/bin/htpasswd", "apache2-utils"),
];

fn prerequisites() -> bool {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let missing: Vec<&str> = TOOLS
        .iter()
        .filter(|(p, _)| !Path::new(p).exists())
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return true;
    }
    assert!(!ci, "CI=true and missing prerequisites: {missing:?}");
    eprintln!("skipping: missing {missing:?}");
    false
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

/// A temp directory removed on drop.
struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("berth-{tag}-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running docker-registry, killed on drop.
struct Registry {
    child: Child,
    addr: String,
}
impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn start_registry(dir: &Path, htpasswd: Option<&Path>) -> Registry {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut cfg = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
        dir.join("storage").display()
    );
    if let Some(h) = htpasswd {
        cfg.push_str(&format!(
            "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
            h.display()
        ));
    }
    let cfg_path = dir.join("config.yml");
    std::fs::write(&cfg_path, cfg).expect("registry config");
    let child = Command::new("/usr/bin/docker-registry")
        .arg("serve")
        .arg(&cfg_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting docker-registry");
    let reg = Registry { child, addr };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&reg.addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "docker-registry did not listen on {}",
            reg.addr
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    reg
}

/// An OCI image layout with one small layer, as `oci:DIR:1` for skopeo.
fn write_layout(dir: &Path) {
    let mut layer = tar::Builder::new(Vec::new());
    // Incompressible, so the gzip skopeo pushes is big enough to resume in the middle.
    let mut content = Vec::new();
    let mut block = Sha256::digest(b"berth").to_vec();
    while content.len() < 64 * 1024 {
        block = Sha256::digest(&block).to_vec();
        content.extend_from_slice(&block);
    }
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    layer
        .append_data(&mut h, "hello.txt", &content[..])
        .expect("layer");
    let layer = layer.into_inner().expect("layer");
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/hello"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256(&layer)]},
    })
    .to_string();
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    })
    .to_string();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": OCI_MANIFEST, "digest": sha256(manifest.as_bytes()), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "1"}}],
    })
    .to_string();
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).expect("blobs");
    for b in [&layer[..], config.as_bytes(), manifest.as_bytes()] {
        let d = sha256(b);
        std::fs::write(blobs.join(d.trim_start_matches("sha256:")), b).expect("blob");
    }
    std::fs::write(dir.join("index.json"), index).expect("index");
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).expect("layout");
}

fn push(layout: &Path, addr: &str, creds: Option<&str>) {
    let mut cmd = Command::new("/usr/bin/skopeo");
    cmd.args(["copy", "--insecure-policy", "--dest-tls-verify=false"]);
    if let Some(c) = creds {
        cmd.args(["--dest-creds", c]);
    }
    let out = cmd
        .arg(format!("oci:{}:1", layout.display()))
        .arg(format!("docker://{addr}/app:1"))
        .output()
        .expect("running skopeo");
    assert!(
        out.status.success(),
        "skopeo copy failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn fetch_all(c: &RegistryClient, r: &Reference, creds: Option<&Credentials>) {
    let m = c.manifest(r, creds).await.expect("manifest by tag");
    assert_eq!(m.media_type, OCI_MANIFEST);
    let by_digest = c
        .manifest_by_digest(r, &m.digest, creds)
        .await
        .expect("manifest by digest");
    assert_eq!(by_digest.bytes, m.bytes);
    let json: serde_json::Value = serde_json::from_slice(&m.bytes).expect("manifest JSON");
    let layer_digest = json["layers"][0]["digest"].as_str().expect("a layer");
    let mut got = Vec::new();
    let blob = c.blob(r, layer_digest, 0, creds).await.expect("blob");
    assert!(!blob.resumed);
    let mut s = blob.stream;
    while let Some(chunk) = s.next().await {
        got.extend_from_slice(&chunk.expect("chunk"));
    }
    // skopeo gzips the layer on the way in: what comes back is what the manifest names.
    assert_eq!(sha256(&got), layer_digest);
    let blob = c.blob(r, layer_digest, 1000, creds).await.expect("blob");
    assert!(blob.resumed, "docker-registry honours Range");
    let mut rest = Vec::new();
    let mut s = blob.stream;
    while let Some(chunk) = s.next().await {
        rest.extend_from_slice(&chunk.expect("chunk"));
    }
    assert_eq!(rest, &got[1000..]);
}

#[tokio::test]
async fn pulls_from_a_real_registry_anonymous_and_with_htpasswd() {
    if !prerequisites() {
        return;
    }
    let dir = TempDir::new("registry");
    let layout = dir.0.join("layout");
    write_layout(&layout);

    // Anonymous.
    let open = TempDir::new("registry-open");
    let reg = start_registry(&open.0, None);
    push(&layout, &reg.addr, None);
    let c = RegistryClient::new(RegistryConfig {
        insecure: vec![reg.addr.clone()],
        ..Default::default()
    })
    .expect("client");
    let r = Reference::parse(&format!("{}/app:1", reg.addr)).expect("reference");
    fetch_all(&c, &r, None).await;
    let e = c
        .manifest(
            &Reference::parse(&format!("{}/app:2", reg.addr)).expect("ref"),
            None,
        )
        .await
        .expect_err("no such tag")
        .to_string();
    assert_eq!(
        e,
        format!(
            "pull {0}/app:2: GET http://{0}/v2/app/manifests/2: manifest unknown: manifest unknown",
            reg.addr
        )
    );
    drop(reg);

    // htpasswd (Basic).
    let locked = TempDir::new("registry-auth");
    let out = Command::new("/usr/bin/htpasswd")
        .args(["-Bbn", "user", "pass"])
        .output()
        .expect("htpasswd");
    assert!(out.status.success());
    let htpasswd = locked.0.join("htpasswd");
    std::fs::write(&htpasswd, &out.stdout).expect("htpasswd file");
    let reg = start_registry(&locked.0, Some(&htpasswd));
    push(&layout, &reg.addr, Some("user:pass"));
    let c = RegistryClient::new(RegistryConfig {
        insecure: vec![reg.addr.clone()],
        ..Default::default()
    })
    .expect("client");
    let r = Reference::parse(&format!("{}/app:1", reg.addr)).expect("reference");
    let want = format!(
        "pull {0}/app:1: GET http://{0}/v2/app/manifests/1: unauthorized: authentication required",
        reg.addr
    );
    let e = c
        .manifest(&r, None)
        .await
        .expect_err("anonymous")
        .to_string();
    assert_eq!(e, want);
    let wrong = Credentials {
        username: "user".into(),
        password: "wrong".into(),
    };
    let e = c
        .manifest(&r, Some(&wrong))
        .await
        .expect_err("wrong")
        .to_string();
    assert_eq!(e, want);
    let right = Credentials {
        username: "user".into(),
        password: "pass".into(),
    };
    fetch_all(&c, &r, Some(&right)).await;
}
