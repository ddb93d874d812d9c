//! Image references and OCI image-layout archives, independent of containerd.

use super::RuntimeError;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

/// OCI and Docker media types this agent understands.
pub const INDEX_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Normalises a reference as Docker does: `busybox` → `docker.io/library/busybox:latest`,
/// `docker.io/busybox` → `docker.io/library/busybox:latest` (Docker's `splitDockerDomain`; the
/// registry client's `Reference::name` gives the same text, which a test checks).
pub fn normalize(reference: &str) -> String {
    let (name, digest) = match reference.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (reference, None),
    };
    let (domain, remote) = match name.split_once('/') {
        None => ("docker.io", format!("library/{name}")),
        Some((d, rest)) if d == "localhost" || d.contains(['.', ':']) || d.to_lowercase() != d => {
            let d = if d == "index.docker.io" {
                "docker.io"
            } else {
                d
            };
            (d, rest.to_string())
        }
        Some(_) => ("docker.io", name.to_string()),
    };
    let remote = if domain == "docker.io" && !remote.contains('/') {
        format!("library/{remote}")
    } else {
        remote
    };
    let mut full = format!("{domain}/{remote}");
    let last = full.rsplit('/').next().unwrap_or("");
    if digest.is_none() && !last.contains(':') {
        full.push_str(":latest");
    }
    match digest {
        Some(d) => format!("{full}@{d}"),
        None => full,
    }
}

/// `sha256:<hex>` of some bytes.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The chain IDs of a layer stack from its diff IDs (OCI image spec).
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => digest_of(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The architecture name OCI uses for this host.
pub fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// Picks this host's manifest from an index.
pub fn pick_manifest(index: &Value) -> Option<Value> {
    let manifests = index["manifests"].as_array()?;
    manifests
        .iter()
        .find(|m| {
            m["platform"]["os"] == "linux" && m["platform"]["architecture"] == host_architecture()
        })
        .or_else(|| (manifests.len() == 1).then(|| &manifests[0]))
        .cloned()
}

/// An OCI image-layout archive read into memory: its blobs and the images its index names.
pub struct Archive {
    /// Blobs by digest.
    pub blobs: HashMap<String, Vec<u8>>,
    /// (normalised name, descriptor) for each named image.
    pub images: Vec<(String, Value)>,
}

fn io_err(path: &Path, e: std::io::Error) -> RuntimeError {
    RuntimeError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

fn archive_err(path: &Path, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Archive {
        path: path.display().to_string(),
        message: message.to_string(),
    }
}

/// Docker image manifest v2, schema 2 (what a `docker save` archive's images become).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// How many symbolic links a file name may go through (`docker save` links repeated layers).
const MAX_LINKS: usize = 8;

/// Reads an image archive: an OCI image layout (what `ctr images import` takes; Docker 25+'s
/// `docker save` writes one too, with a manifest.json beside its index.json), or the older
/// `docker save` format (a manifest.json and no index.json).
pub fn read_archive(path: &Path) -> Result<Archive, RuntimeError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut tar = tar::Archive::new(file);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    let mut links: HashMap<String, String> = HashMap::new();
    for entry in tar.entries().map_err(|e| io_err(path, e))? {
        let mut entry = entry.map_err(|e| io_err(path, e))?;
        let name = clean(&entry.path().map_err(|e| io_err(path, e))?.to_string_lossy());
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().map_err(|e| io_err(path, e))? {
                let target = target.to_string_lossy().to_string();
                // A symlink is relative to its directory; a hard link names a path in the archive.
                let resolved = if kind.is_symlink() && !target.starts_with('/') {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    join(dir, &target)
                } else {
                    clean(&target)
                };
                links.insert(name, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
        files.insert(name, buf);
    }
    let archive = if files.contains_key("index.json") {
        read_oci_layout(path, files)?
    } else if files.contains_key("manifest.json") {
        read_docker_save(path, &files, &links)?
    } else {
        return Err(archive_err(
            path,
            "neither an OCI image layout (no index.json) nor a docker save archive (no manifest.json)",
        ));
    };
    for (digest, bytes) in &archive.blobs {
        if digest.starts_with("sha256:") && &digest_of(bytes) != digest {
            return Err(archive_err(
                path,
                format!("blob {digest} does not match its digest"),
            ));
        }
    }
    Ok(archive)
}

/// `./a//b/../c` → `a/c` (names inside an archive, never above its root).
fn clean(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

fn join(dir: &str, rel: &str) -> String {
    clean(&format!("{dir}/{rel}"))
}

fn read_oci_layout(path: &Path, files: HashMap<String, Vec<u8>>) -> Result<Archive, RuntimeError> {
    let index_bytes = files
        .get("index.json")
        .ok_or_else(|| archive_err(path, "not an OCI image layout: no index.json"))?;
    let index: Value = serde_json::from_slice(index_bytes)
        .map_err(|e| archive_err(path, format!("index.json: {e}")))?;
    let mut blobs = HashMap::new();
    for (name, bytes) in files {
        if let Some(rest) = name.strip_prefix("blobs/") {
            if let Some((alg, hex)) = rest.split_once('/') {
                blobs.insert(format!("{alg}:{hex}"), bytes);
            }
        }
    }
    let mut images = Vec::new();
    for m in index["manifests"].as_array().into_iter().flatten() {
        let ann = &m["annotations"];
        let name = ann["io.containerd.image.name"].as_str().or_else(|| {
            ann["org.opencontainers.image.ref.name"]
                .as_str()
                .filter(|n| n.contains('/') || n.contains(':'))
        });
        if let Some(n) = name {
            images.push((normalize(n), m.clone()));
        }
    }
    if images.is_empty() {
        return Err(archive_err(
            path,
            "index.json names no image (annotation io.containerd.image.name or org.opencontainers.image.ref.name)",
        ));
    }
    Ok(Archive { blobs, images })
}

/// A `docker save` archive (manifest.json: `[{"Config": "<hex>.json", "RepoTags": ["app:1"],
/// "Layers": ["<hex>/layer.tar", …]}]`): each entry becomes a Docker v2 schema 2 manifest over
/// blobs keyed by their sha256, named by its RepoTags.
fn read_docker_save(
    path: &Path,
    files: &HashMap<String, Vec<u8>>,
    links: &HashMap<String, String>,
) -> Result<Archive, RuntimeError> {
    let file = |name: &str| -> Result<&Vec<u8>, RuntimeError> {
        let mut name = clean(name);
        for _ in 0..MAX_LINKS {
            if let Some(bytes) = files.get(&name) {
                return Ok(bytes);
            }
            match links.get(&name) {
                Some(target) => name = target.clone(),
                None => break,
            }
        }
        Err(archive_err(
            path,
            format!("manifest.json names {name}, which the archive does not hold"),
        ))
    };
    let entries: Value = serde_json::from_slice(file("manifest.json")?)
        .map_err(|e| archive_err(path, format!("manifest.json: {e}")))?;
    let entries = entries
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| archive_err(path, "manifest.json is not a non-empty JSON array"))?;
    let mut blobs: HashMap<String, Vec<u8>> = HashMap::new();
    let mut images = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let what = |m: String| archive_err(path, format!("manifest.json entry {i}: {m}"));
        let config_name = entry["Config"]
            .as_str()
            .ok_or_else(|| what("no \"Config\"".into()))?;
        let config_bytes = file(config_name)?;
        let config: Value = serde_json::from_slice(config_bytes)
            .map_err(|e| what(format!("config {config_name}: {e}")))?;
        let diff_ids: Vec<&str> = config["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let layer_names: Vec<&str> = entry["Layers"]
            .as_array()
            .ok_or_else(|| what("no \"Layers\"".into()))?
            .iter()
            .map(|l| {
                l.as_str()
                    .ok_or_else(|| what("a layer name is not a string".into()))
            })
            .collect::<Result<_, _>>()?;
        if layer_names.len() != diff_ids.len() {
            return Err(what(format!(
                "{} layers but its config lists {} diff_ids",
                layer_names.len(),
                diff_ids.len()
            )));
        }
        let tags: Vec<&str> = entry["RepoTags"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if tags.is_empty() {
            return Err(what(format!(
                "image {config_name} has no RepoTags (save it by name: docker save NAME:TAG)"
            )));
        }
        let mut layers = Vec::new();
        for (name, diff_id) in layer_names.iter().zip(&diff_ids) {
            let bytes = file(name)?;
            let digest = digest_of(bytes);
            let media_type = match bytes.get(..4) {
                Some([0x1f, 0x8b, _, _]) => DOCKER_LAYER_GZIP,
                Some([0x28, 0xb5, 0x2f, 0xfd]) => {
                    return Err(what(format!(
                    "layer {name} is zstd-compressed, which Docker's v2 manifest cannot describe"
                )))
                }
                _ => {
                    if digest != *diff_id {
                        return Err(what(format!(
                            "layer {name} ({digest}) is not the config's diff_id {diff_id}"
                        )));
                    }
                    DOCKER_LAYER
                }
            };
            layers.push(serde_json::json!({
                "mediaType": media_type, "digest": digest, "size": bytes.len(),
            }));
            blobs.entry(digest).or_insert_with(|| bytes.clone());
        }
        let config_digest = digest_of(config_bytes);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "digest": config_digest, "size": config_bytes.len()},
            "layers": layers,
        });
        let manifest = serde_json::to_vec(&manifest)
            .map_err(|e| what(format!("writing its manifest: {e}")))?;
        let manifest_digest = digest_of(&manifest);
        let descriptor = serde_json::json!({
            "mediaType": DOCKER_MANIFEST, "digest": manifest_digest, "size": manifest.len(),
        });
        blobs
            .entry(config_digest)
            .or_insert_with(|| config_bytes.clone());
        blobs.entry(manifest_digest).or_insert(manifest);
        for tag in tags {
            images.push((normalize(tag), descriptor.clone()));
        }
    }
    Ok(Archive { blobs, images })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_docker() {
        assert_eq!(normalize("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(normalize("nginx:alpine"), "docker.io/library/nginx:alpine");
        assert_eq!(normalize("localhost/web:1"), "localhost/web:1");
        assert_eq!(
            normalize("123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest"),
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest"
        );
        assert_eq!(normalize("localhost:5000/a/b"), "localhost:5000/a/b:latest");
    }

    #[test]
    fn chain_ids_follow_the_spec() {
        // Known answers computed outside this code, with coreutils:
        //   printf 'sha256:a3ed… sha256:5f70…' | sha256sum
        //   printf 'sha256:71de… sha256:e1e7…' | sha256sum
        let d: Vec<String> = [
            "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
            "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef",
            "sha256:e1e7c5e1b6e2b7f3f8e3a9b2c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7",
        ]
        .map(String::from)
        .into();
        assert_eq!(
            chain_ids(&d),
            [
                "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
                "sha256:71dec89dc33c1a1cd5f73cd1e0885ec74b73b03fb9d5a98fddb6486563565072",
                "sha256:f82d095bb593d71ea65f026c67f307998d0ebd33a681756c5e9e72043a73a225",
            ]
        );
        assert!(chain_ids(&[]).is_empty());
    }

    /// Writes a tar of (name, contents) entries, and symlinks as (name, None, target).
    fn tar_file(tag: &str, entries: &[(&str, Option<&[u8]>, &str)]) -> std::path::PathBuf {
        let mut b = tar::Builder::new(Vec::new());
        for (name, data, target) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o644);
            match data {
                Some(d) => {
                    h.set_size(d.len() as u64);
                    h.set_cksum();
                    b.append_data(&mut h, name, *d).expect("append");
                }
                None => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    b.append_link(&mut h, name, target).expect("link");
                }
            }
        }
        let bytes = b.into_inner().expect("tar");
        let path = std::env::temp_dir().join(format!(
            "berth-archive-{tag}-{}-{}.tar",
            std::process::id(),
            uuid::Uuid::new_v4()
        ));
        std::fs::write(&path, bytes).expect("write");
        path
    }

    struct Removed(std::path::PathBuf);
    impl Drop for Removed {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn config_with(diff_ids: &[String]) -> Vec<u8> {
        serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {"Cmd": ["sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn reads_docker_save_archives() {
        let plain: &[u8] = b"a plain tar layer";
        let gzip: &[u8] = &[0x1f, 0x8b, 8, 0, 1, 2, 3];
        let gzip_diff = format!("sha256:{}", "2".repeat(64));
        let config = config_with(&[digest_of(plain), gzip_diff]);
        let config2 = config_with(&[digest_of(plain)]);
        let chex = digest_of(&config).trim_start_matches("sha256:").to_string();
        let chex2 = digest_of(&config2)
            .trim_start_matches("sha256:")
            .to_string();
        let manifest = serde_json::json!([
            {"Config": format!("{chex}.json"), "RepoTags": ["app:1", "localhost:5000/x/y:2"],
             "Layers": ["l1/layer.tar", "l2/layer.tar"]},
            // docker save links a layer it already wrote.
            {"Config": format!("{chex2}.json"), "RepoTags": ["docker.io/other"],
             "Layers": ["l3/layer.tar"]},
        ])
        .to_string();
        let cfg_name = format!("{chex}.json");
        let cfg_name2 = format!("{chex2}.json");
        let f = Removed(tar_file(
            "save",
            &[
                ("manifest.json", Some(manifest.as_bytes()), ""),
                ("repositories", Some(b"{}"), ""),
                (&cfg_name, Some(&config), ""),
                (&cfg_name2, Some(&config2), ""),
                ("l1/layer.tar", Some(plain), ""),
                ("l1/VERSION", Some(b"1.0"), ""),
                ("l2/layer.tar", Some(gzip), ""),
                ("l3/layer.tar", None, "../l1/layer.tar"),
            ],
        ));
        let a = read_archive(&f.0).expect("docker save archive");
        let names: Vec<&str> = a.images.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "docker.io/library/app:1",
                "localhost:5000/x/y:2",
                "docker.io/library/other:latest"
            ]
        );
        let desc = &a.images[0].1;
        assert_eq!(desc["mediaType"], DOCKER_MANIFEST);
        let digest = desc["digest"].as_str().expect("digest");
        let m: Value = serde_json::from_slice(&a.blobs[digest]).expect("manifest");
        assert_eq!(desc["size"], a.blobs[digest].len());
        assert_eq!(m["schemaVersion"], 2);
        assert_eq!(m["mediaType"], DOCKER_MANIFEST);
        assert_eq!(
            m["config"]["mediaType"],
            "application/vnd.docker.container.image.v1+json"
        );
        assert_eq!(m["config"]["digest"], digest_of(&config));
        assert_eq!(
            m["layers"][0]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar"
        );
        assert_eq!(m["layers"][0]["digest"], digest_of(plain));
        assert_eq!(m["layers"][0]["size"], plain.len());
        assert_eq!(
            m["layers"][1]["mediaType"],
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert_eq!(a.blobs[&digest_of(gzip)], gzip);
        assert_eq!(a.images[1].1, a.images[0].1, "two tags of one image");
        let m2: Value =
            serde_json::from_slice(&a.blobs[a.images[2].1["digest"].as_str().expect("d")])
                .expect("manifest");
        assert_eq!(
            m2["layers"][0]["digest"],
            digest_of(plain),
            "the linked layer"
        );
        // Layers, configs and two manifests, each once.
        assert_eq!(a.blobs.len(), 6);
    }

    #[test]
    fn docker_25_archives_keep_the_oci_layout() {
        let layer: &[u8] = b"layer";
        let config = config_with(&[digest_of(layer)]);
        let manifest = serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest_of(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest_of(layer), "size": layer.len()}],
        })
        .to_string();
        let md = digest_of(manifest.as_bytes());
        let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len(),
            "annotations": {"io.containerd.image.name": "docker.io/library/app:1"}}]})
        .to_string();
        let blob = |d: &str| format!("blobs/sha256/{}", d.trim_start_matches("sha256:"));
        let save = serde_json::json!([{"Config": blob(&digest_of(&config)), "RepoTags": ["app:1"],
            "Layers": [blob(&digest_of(layer))]}])
        .to_string();
        let (bl, bc, bm) = (
            blob(&digest_of(layer)),
            blob(&digest_of(&config)),
            blob(&md),
        );
        let f = Removed(tar_file(
            "docker25",
            &[
                ("index.json", Some(index.as_bytes()), ""),
                ("manifest.json", Some(save.as_bytes()), ""),
                ("oci-layout", Some(b"{}"), ""),
                (&bl, Some(layer), ""),
                (&bc, Some(&config), ""),
                (&bm, Some(manifest.as_bytes()), ""),
            ],
        ));
        let a = read_archive(&f.0).expect("OCI layout");
        assert_eq!(a.images.len(), 1);
        assert_eq!(a.images[0].0, "docker.io/library/app:1");
        assert_eq!(
            a.images[0].1["digest"],
            md.as_str(),
            "the OCI manifest, not a synthesised one"
        );
        assert_eq!(a.blobs.len(), 3);
    }

    #[test]
    fn bad_docker_save_archives_say_what_is_wrong() {
        let layer: &[u8] = b"layer";
        let config = config_with(&[digest_of(layer)]);
        let wrong = config_with(&[format!("sha256:{}", "3".repeat(64))]);
        for (manifest, cfg, layer_file, want) in [
            (
                r#"[{"Config":"c.json","RepoTags":null,"Layers":["l/layer.tar"]}]"#,
                &config,
                true,
                "has no RepoTags",
            ),
            (
                r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l/layer.tar"]}]"#,
                &config,
                false,
                "names l/layer.tar, which the archive does not hold",
            ),
            (
                r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":["l/layer.tar"]}]"#,
                &wrong,
                true,
                "is not the config's diff_id",
            ),
            (
                r#"[{"Config":"c.json","RepoTags":["a:1"],"Layers":[]}]"#,
                &config,
                true,
                "0 layers but its config lists 1 diff_ids",
            ),
            (r#"[]"#, &config, true, "not a non-empty JSON array"),
            (r#"{"#, &config, true, "manifest.json: "),
        ] {
            let mut entries: Vec<(&str, Option<&[u8]>, &str)> = vec![
                ("manifest.json", Some(manifest.as_bytes()), ""),
                ("c.json", Some(cfg), ""),
            ];
            if layer_file {
                entries.push(("l/layer.tar", Some(layer), ""));
            }
            let f = Removed(tar_file("bad", &entries));
            let e = read_archive(&f.0).err().expect(manifest).to_string();
            assert!(e.contains(want), "{manifest}: {e} should say {want}");
        }
        let f = Removed(tar_file("neither", &[("x", Some(b"x"), "")]));
        let e = read_archive(&f.0).err().expect("neither").to_string();
        assert!(e.contains("neither an OCI image layout"), "{e}");
    }
}
