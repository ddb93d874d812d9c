//! Issue 11: test images beyond the busybox archive, built on the spot from it: a multi-layer
//! image of incompressible data (the pull benchmark's ~100 MB image), a multi-platform OCI
//! index whose platforms differ by a marker file, and a `docker save` archive.
//!
//! Every layer is a gzip'd tar (`application/vnd.oci.image.layer.v1.tar+gzip`), as registries
//! serve them, so `skopeo copy` pushes the blobs as they are and the digests in an archive are
//! the digests the registry holds.

use crate::registry::output_within;
use crate::{image_archive, COUNTER};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// The architecture name OCI uses for this host: the agent's own rule.
pub fn host_architecture() -> &'static str {
    berth_agent::runtime::image::host_architecture()
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// A layer: its uncompressed tar's digest (the diff ID) and its gzip'd blob.
pub struct Layer {
    /// sha256 of the uncompressed tar.
    pub diff_id: String,
    /// The gzip'd tar, as pushed.
    pub blob: Vec<u8>,
}

impl Layer {
    /// A layer from an uncompressed tar, gzip'd with the system's gzip (`-n`: no name or time,
    /// so the same tar gives the same blob).
    pub fn from_tar(tar: &[u8], work: &Path) -> Layer {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let file = work.join(format!("layer-{n}.tar"));
        std::fs::write(&file, tar).expect("writing a layer tar");
        let out = output_within(
            Command::new("gzip").args(["-1", "-n", "-c"]).arg(&file),
            Duration::from_secs(120),
        )
        .expect("running gzip");
        let _ = std::fs::remove_file(&file);
        assert!(
            out.status.success(),
            "gzip failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Layer {
            diff_id: sha256(tar),
            blob: out.stdout,
        }
    }

    /// The descriptor of its blob.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": LAYER_GZIP, "digest": sha256(&self.blob), "size": self.blob.len()})
    }
}

/// A tar of regular files (path, contents), owned by root, mode 0644 (0755 for directories),
/// mtime 0; parent directories get entries of their own.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (path, data) in files {
        let mut parent = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
            chain.push(p.to_path_buf());
            parent = p.parent();
        }
        for d in chain.into_iter().rev() {
            if dirs.insert(d.clone()) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                h.set_mtime(0);
                b.append_data(&mut h, format!("{}/", d.display()), std::io::empty())
                    .expect("tar");
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, *data).expect("tar");
    }
    b.into_inner().expect("tar")
}

/// `len` bytes no compressor can shrink (xorshift64*), different for each `seed`.
pub fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The busybox image's OCI archive ([`crate::IMAGE`]: what every cluster loads), to push.
pub fn busybox_archive() -> &'static Path {
    image_archive()
}

/// The digests of the blobs of an OCI archive (`blobs/sha256/HEX` → `sha256:HEX`).
pub fn archive_blobs(archive: &Path) -> std::io::Result<Vec<String>> {
    let f = std::fs::File::open(archive)?;
    let mut t = tar::Archive::new(f);
    let mut out = Vec::new();
    for e in t.entries()? {
        let e = e?;
        let p = e.path()?.display().to_string();
        if let Some(hex) = p.trim_start_matches("./").strip_prefix("blobs/sha256/") {
            if !hex.is_empty() {
                out.push(format!("sha256:{hex}"));
            }
        }
    }
    Ok(out)
}

/// The busybox image of [`crate::IMAGE`]: its config (JSON) and its single layer's
/// uncompressed tar.
pub fn busybox_parts() -> (Value, Vec<u8>) {
    let archive = berth_agent::runtime::image::read_archive(image_archive())
        .expect("reading the busybox archive");
    let (_, desc) = archive.images.first().expect("the busybox image");
    let blob = |d: &Value| -> &Vec<u8> {
        let digest = d["digest"].as_str().expect("a digest");
        archive.blobs.get(digest).expect("a blob of the archive")
    };
    let manifest: Value = serde_json::from_slice(blob(desc)).expect("the manifest");
    let config: Value = serde_json::from_slice(blob(&manifest["config"])).expect("the config");
    let layer = blob(&manifest["layers"][0]).clone();
    (config, layer)
}

/// An OCI image layout being built in a directory, then written as an archive.
pub struct OciLayout {
    dir: PathBuf,
}

impl OciLayout {
    /// An empty layout in a new directory `work/layout-N`.
    pub fn new(work: &Path) -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = work.join(format!("layout-{n}"));
        std::fs::create_dir_all(dir.join("blobs/sha256")).expect("layout dir");
        OciLayout { dir }
    }

    /// Stores a blob; returns its descriptor (with this media type).
    pub fn blob(&self, media_type: &str, bytes: &[u8]) -> Value {
        let digest = sha256(bytes);
        let hex = digest.trim_start_matches("sha256:");
        std::fs::write(self.dir.join("blobs/sha256").join(hex), bytes).expect("writing a blob");
        json!({"mediaType": media_type, "digest": digest, "size": bytes.len()})
    }

    /// Stores an image (`base_config` with these layers' diff IDs and this architecture);
    /// returns its manifest's descriptor.
    pub fn image(&self, base_config: &Value, layers: &[Layer], architecture: &str) -> Value {
        let mut config = base_config.clone();
        config["architecture"] = json!(architecture);
        config["os"] = json!("linux");
        config["rootfs"] = json!({
            "type": "layers",
            "diff_ids": layers.iter().map(|l| l.diff_id.clone()).collect::<Vec<_>>(),
        });
        config["history"] = json!(layers
            .iter()
            .map(|_| json!({"created_by": "berth-tests"}))
            .collect::<Vec<_>>());
        let config_desc = self.blob(CONFIG, &serde_json::to_vec(&config).expect("config JSON"));
        let mut layer_descs = Vec::new();
        for l in layers {
            layer_descs.push(self.blob(LAYER_GZIP, &l.blob));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST,
            "config": config_desc,
            "layers": layer_descs,
        });
        self.blob(
            MANIFEST,
            &serde_json::to_vec(&manifest).expect("manifest JSON"),
        )
    }

    /// Stores an index of these (manifest descriptor, architecture) pairs; returns its
    /// descriptor.
    pub fn index(&self, manifests: &[(Value, &str)]) -> Value {
        let entries: Vec<Value> = manifests
            .iter()
            .map(|(d, arch)| {
                let mut d = d.clone();
                d["platform"] = json!({"architecture": arch, "os": "linux"});
                d
            })
            .collect();
        let index = json!({"schemaVersion": 2, "mediaType": INDEX, "manifests": entries});
        self.blob(INDEX, &serde_json::to_vec(&index).expect("index JSON"))
    }

    /// Writes the layout as an archive whose index.json names `top` as `name`, and removes
    /// the layout's directory.
    pub fn write(self, top: &Value, name: &str, out: &Path) {
        let mut d = top.clone();
        d["annotations"] = json!({
            "io.containerd.image.name": name,
            "org.opencontainers.image.ref.name": name,
        });
        let index = json!({"schemaVersion": 2, "manifests": [d]});
        std::fs::write(
            self.dir.join("index.json"),
            serde_json::to_vec(&index).expect("JSON"),
        )
        .expect("index.json");
        std::fs::write(
            self.dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )
        .expect("oci-layout");
        let file = std::fs::File::create(out)
            .unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
        let mut b = tar::Builder::new(file);
        b.append_path_with_name(self.dir.join("oci-layout"), "oci-layout")
            .expect("tar");
        b.append_path_with_name(self.dir.join("index.json"), "index.json")
            .expect("tar");
        b.append_dir_all("blobs", self.dir.join("blobs"))
            .expect("tar");
        b.into_inner().expect("tar");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Builds `out`, an OCI archive of `name`: busybox plus one layer per entry of `layer_sizes`,
/// layer i holding `/data/layer-i.bin` of that many incompressible bytes (different for each
/// `seed`). For the pull benchmark: 5 layers of 20 MB make a ~100 MB image.
pub fn multi_layer_image(out: &Path, name: &str, layer_sizes: &[usize], seed: u64) {
    let work = out.with_extension("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let (config, base) = busybox_parts();
    let mut layers = vec![Layer::from_tar(&base, &work)];
    for (i, size) in layer_sizes.iter().enumerate() {
        let data = incompressible(*size, seed.wrapping_add(i as u64 + 1));
        let path = format!("data/layer-{i}.bin");
        layers.push(Layer::from_tar(&tar_of(&[(&path, &data)]), &work));
    }
    let layout = OciLayout::new(&work);
    let top = layout.image(&config, &layers, host_architecture());
    layout.write(&top, name, out);
    let _ = std::fs::remove_dir_all(&work);
}

/// The architectures of [`multi_platform_image`]: the host's first, then two others.
pub fn platforms() -> Vec<&'static str> {
    let host = host_architecture();
    let mut out = vec![host];
    out.extend(
        ["arm64", "s390x", "amd64"]
            .into_iter()
            .filter(|a| *a != host),
    );
    out.truncate(3);
    out
}

/// Builds `out`, an OCI archive of `name` whose image is an index of [`platforms`]: each
/// platform's image is busybox (the host's binary: the others never run) plus a layer with
/// `/platform` holding the architecture's name and a newline. Push it with
/// [`crate::registry::Registry::push_all`].
pub fn multi_platform_image(out: &Path, name: &str) {
    let work = out.with_extension("work");
    std::fs::create_dir_all(&work).expect("work dir");
    let (config, base) = busybox_parts();
    let base = Layer::from_tar(&base, &work);
    let layout = OciLayout::new(&work);
    let mut manifests = Vec::new();
    for arch in platforms() {
        let marker = Layer::from_tar(
            &tar_of(&[("platform", format!("{arch}\n").as_bytes())]),
            &work,
        );
        let base = Layer {
            diff_id: base.diff_id.clone(),
            blob: base.blob.clone(),
        };
        let desc = layout.image(&config, &[base, marker], arch);
        manifests.push((desc, arch));
    }
    let top = layout.index(&manifests);
    layout.write(&top, name, out);
    let _ = std::fs::remove_dir_all(&work);
}

/// Builds `out`, a `docker save` archive of the busybox image tagged `repo_tag` (for
/// `berth-agent image load`): manifest.json (Config, RepoTags, Layers), the config as
/// `<hex>.json`, the layer uncompressed as `<id>/layer.tar`, and `repositories`.
pub fn docker_save_archive(out: &Path, repo_tag: &str) {
    let (mut config, layer) = busybox_parts();
    let diff_id = sha256(&layer);
    config["rootfs"] = json!({"type": "layers", "diff_ids": [diff_id]});
    let config_bytes = serde_json::to_vec(&config).expect("config JSON");
    let config_name = format!(
        "{}.json",
        sha256(&config_bytes).trim_start_matches("sha256:")
    );
    let layer_id = diff_id.trim_start_matches("sha256:").to_string();
    let manifest = json!([{
        "Config": config_name,
        "RepoTags": [repo_tag],
        "Layers": [format!("{layer_id}/layer.tar")],
    }]);
    let (repo, tag) = repo_tag.rsplit_once(':').unwrap_or((repo_tag, "latest"));
    let repositories = json!({ repo: { tag: layer_id } });
    let file =
        std::fs::File::create(out).unwrap_or_else(|e| panic!("creating {}: {e}", out.display()));
    let mut b = tar::Builder::new(file);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        b.append_data(&mut h, path, data).expect("tar");
    };
    add(&config_name, &config_bytes);
    add(&format!("{layer_id}/VERSION"), b"1.0");
    add(
        &format!("{layer_id}/json"),
        format!("{{\"id\":\"{layer_id}\"}}").as_bytes(),
    );
    add(&format!("{layer_id}/layer.tar"), &layer);
    add(
        "manifest.json",
        &serde_json::to_vec(&manifest).expect("JSON"),
    );
    add(
        "repositories",
        &serde_json::to_vec(&repositories).expect("JSON"),
    );
    b.into_inner().expect("tar");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incompressible_data_differs_by_seed_and_has_its_length() {
        let a = incompressible(1000, 1);
        assert_eq!(a.len(), 1000);
        assert_ne!(a, incompressible(1000, 2));
        assert_eq!(a, incompressible(1000, 1));
    }

    #[test]
    fn platforms_start_with_the_host_and_are_distinct() {
        let p = platforms();
        assert_eq!(p[0], host_architecture());
        assert_eq!(p.len(), 3);
        let set: std::collections::BTreeSet<_> = p.iter().collect();
        assert_eq!(set.len(), 3);
    }
}
