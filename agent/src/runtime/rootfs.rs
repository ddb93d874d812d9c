//! Files read from an image's unpacked layers without running or mounting anything: the
//! image's /etc/passwd and /etc/group, for the definition's `user`.
//!
//! Docker and containerd's `WithUser` mount the container's rootfs and read the files there.
//! Berth reads them straight from the overlayfs snapshotter's layer directories instead (the
//! lowerdirs of a read-only view of the image's top snapshot, topmost first), applying
//! overlayfs's own rules: a whiteout (a 0:0 character device) deletes a path, an opaque
//! directory (`trusted.overlay.opaque=y`) hides the layers below it. Nothing is mounted, so
//! nothing can be left mounted if the agent dies half-way, and it needs no privilege beyond
//! reading the snapshotter's directories. The view itself lives under a lease and is removed
//! at once (the lease's expiry removes it otherwise).

use super::containerd::{rpc, Containerd, SNAPSHOTTER};
use super::user::ImageUsers;
use super::{ImageConfig, RuntimeError};
use containerd_client::services::v1::snapshots::ViewSnapshotRequest;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest /etc/passwd or /etc/group read (a bigger one is refused, not truncated).
const MAX_FILE: u64 = 4 << 20;
/// How long reading the files from the layers may take.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The layer directories of a snapshot's mounts, topmost first: an overlay's upperdir then
/// lowerdirs, or a bind mount's source (a single-layer view).
pub fn layer_dirs(mounts: &[containerd_client::types::Mount]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for m in mounts {
        match m.r#type.as_str() {
            "overlay" => {
                for o in &m.options {
                    if let Some(u) = o.strip_prefix("upperdir=") {
                        out.insert(0, PathBuf::from(u));
                    }
                }
                for o in &m.options {
                    if let Some(l) = o.strip_prefix("lowerdir=") {
                        out.extend(l.split(':').map(PathBuf::from));
                    }
                }
            }
            _ => out.push(PathBuf::from(&m.source)),
        }
    }
    out
}

fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let name = c"trusted.overlay.opaque";
    let mut buf = [0u8; 4];
    // SAFETY: both strings are NUL-terminated and live across the call; the buffer's length
    // is passed with it.
    let n = unsafe {
        nix::libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

/// What a path is in the merged view of `layers` (topmost first): the layer file to read, or
/// `None` when no layer has it (or a whiteout deletes it). Symlinks are followed inside the
/// merged view (at most 8).
pub fn lookup(layers: &[PathBuf], path: &str) -> Option<PathBuf> {
    lookup_depth(layers, path, 0)
}

fn lookup_depth(layers: &[PathBuf], path: &str, depth: u32) -> Option<PathBuf> {
    if depth > 8 {
        return None;
    }
    let rel: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    if rel.is_empty() || rel.contains(&"..") {
        return None;
    }
    for layer in layers {
        let mut dir = layer.clone();
        let mut hidden_below = false;
        let mut missing_here = false;
        for (i, comp) in rel.iter().enumerate() {
            let p = dir.join(comp);
            let Ok(meta) = std::fs::symlink_metadata(&p) else {
                missing_here = true;
                break;
            };
            if is_whiteout(&meta) {
                return None;
            }
            let last = i + 1 == rel.len();
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&p).ok()?;
                let target = target.to_string_lossy();
                let base = rel[..i].join("/");
                let rest = rel[i + 1..].join("/");
                let joined = if target.starts_with('/') {
                    format!("{target}/{rest}")
                } else {
                    format!("{base}/{target}/{rest}")
                };
                return lookup_depth(layers, &normalise(&joined), depth + 1);
            }
            if last {
                return meta.is_file().then_some(p);
            }
            if !meta.is_dir() {
                return None;
            }
            if is_opaque(&p) {
                hidden_below = true;
            }
            dir = p;
        }
        if missing_here && hidden_below {
            return None;
        }
    }
    None
}

/// A path with `.` and `..` resolved (`..` stops at the root).
fn normalise(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn read_small(path: &Path) -> Result<String, std::io::Error> {
    let meta = std::fs::metadata(path)?;
    if meta.len() > MAX_FILE {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_FILE} bytes"
        )));
    }
    let bytes = std::fs::read(path)?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Reads /etc/passwd and /etc/group from `layers` (blocking).
pub fn read_users(layers: &[PathBuf]) -> Result<ImageUsers, RuntimeError> {
    let read = |p: &str| -> Result<Option<String>, RuntimeError> {
        match lookup(layers, p) {
            Some(file) => read_small(&file)
                .map(Some)
                .map_err(|source| RuntimeError::Io {
                    path: format!("{p} of the image ({})", file.display()),
                    source,
                }),
            None => Ok(None),
        }
    };
    Ok(ImageUsers {
        passwd: read("etc/passwd")?,
        group: read("etc/group")?,
    })
}

impl Containerd {
    /// The image's /etc/passwd and /etc/group, from a read-only view of its top snapshot.
    pub async fn read_image_users(&self, image: &ImageConfig) -> Result<ImageUsers, RuntimeError> {
        let parent = image.chain_id.clone();
        self.with_lease(|lease| async move {
            let key = format!("berth-users-{}", uuid::Uuid::new_v4().simple());
            let mounts = rpc(
                "view snapshot",
                &parent,
                self.client.snapshots().view(self.req_lease(
                    ViewSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: Default::default(),
                    },
                    Some(&lease),
                )),
            )
            .await?
            .into_inner()
            .mounts;
            let layers = layer_dirs(&mounts);
            let job = tokio::task::spawn_blocking(move || read_users(&layers));
            let read = match tokio::time::timeout(READ_TIMEOUT, job).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => Err(RuntimeError::Io {
                    path: "/etc/passwd of the image".into(),
                    source: std::io::Error::other(e.to_string()),
                }),
                Err(_) => Err(RuntimeError::Timeout {
                    op: "read /etc/passwd and /etc/group",
                    id: image.name.clone(),
                    after: READ_TIMEOUT,
                }),
            };
            if let Err(e) = self.remove_snapshot(&key).await {
                tracing::warn!(snapshot = %key, error = %e, "cannot remove a view; its lease's expiry removes it");
            }
            read
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn layer(root: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
        let l = root.join(name);
        for (p, content) in files {
            let f = l.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, content).unwrap();
        }
        std::fs::create_dir_all(&l).unwrap();
        l
    }

    #[test]
    fn the_topmost_layer_wins_and_whiteouts_delete() {
        let root =
            Dir(std::env::temp_dir()
                .join(format!("berth-rootfs-{}", uuid::Uuid::new_v4().simple())));
        let low = layer(
            &root.0,
            "low",
            &[("etc/passwd", "low\n"), ("etc/group", "g\n")],
        );
        let high = layer(&root.0, "high", &[("etc/passwd", "high\n")]);
        let users = read_users(&[high.clone(), low.clone()]).unwrap();
        assert_eq!(users.passwd.as_deref(), Some("high\n"));
        assert_eq!(users.group.as_deref(), Some("g\n"));
        // A whiteout (0:0 char device, as overlayfs makes them) in a higher layer.
        let wh = layer(&root.0, "wh", &[]);
        std::fs::create_dir_all(wh.join("etc")).unwrap();
        nix::sys::stat::mknod(
            &wh.join("etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        let users = read_users(&[wh.clone(), high.clone(), low.clone()]).unwrap();
        assert_eq!(users.group, None);
        assert_eq!(users.passwd.as_deref(), Some("high\n"));
        // A symlink inside the image is followed in the merged view.
        let ln = layer(&root.0, "ln", &[("real/passwd", "linked\n")]);
        std::fs::create_dir_all(ln.join("etc")).unwrap();
        std::os::unix::fs::symlink("../real/passwd", ln.join("etc/passwd")).unwrap();
        assert_eq!(
            read_users(&[ln, low]).unwrap().passwd.as_deref(),
            Some("linked\n")
        );
        assert_eq!(read_users(&[]).unwrap(), ImageUsers::default());
    }

    #[test]
    fn overlay_and_bind_mounts_give_their_layers() {
        let m = |t: &str, source: &str, options: &[&str]| containerd_client::types::Mount {
            r#type: t.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        assert_eq!(
            layer_dirs(&[m(
                "overlay",
                "overlay",
                &["index=off", "lowerdir=/s/2/fs:/s/1/fs"]
            )]),
            [PathBuf::from("/s/2/fs"), PathBuf::from("/s/1/fs")]
        );
        assert_eq!(
            layer_dirs(&[m("bind", "/s/1/fs", &["ro", "rbind"])]),
            [PathBuf::from("/s/1/fs")]
        );
    }
}
