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

/// Reads an OCI image-layout archive (what `ctr images import` takes).
pub fn read_archive(path: &Path) -> Result<Archive, RuntimeError> {
    let file = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut tar = tar::Archive::new(file);
    let mut files: HashMap<String, Vec<u8>> = HashMap::new();
    for entry in tar.entries().map_err(|e| io_err(path, e))? {
        let mut entry = entry.map_err(|e| io_err(path, e))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| io_err(path, e))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut buf = Vec::new();
        entry.read_to_end(&mut buf).map_err(|e| io_err(path, e))?;
        files.insert(name, buf);
    }
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
    for (digest, bytes) in &blobs {
        if digest.starts_with("sha256:") && &digest_of(bytes) != digest {
            return Err(archive_err(
                path,
                format!("blob {digest} does not match its digest"),
            ));
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
}
