//! A task's volumes, mount points and environment files, as ECS defines them: prepared before
//! any of the task's containers is created, turned into bind mounts of each container's OCI
//! spec, and removed with the task.
//!
//! - `host` volumes with a `sourcePath`: bind mounts of that host path, only under the agent's
//!   `--allowed-host-paths` (created when missing, as ECS does).
//! - Volumes with no `sourcePath` and no configuration, and `dockerVolumeConfiguration` with
//!   the `local` driver and scope `task`: a directory per task, `volumes/<task-id>/<name>` in
//!   the data dir, shared by the task's containers and removed with the task.
//!   Scope `shared`: `volumes/shared/<name>`, which outlives tasks (made when missing only with
//!   `autoprovision`).
//! - `efsVolumeConfiguration` (keyed by fileSystemId) and `dockerVolumeConfiguration` with any
//!   other driver (keyed by the volume's name): NFS exports the agent maps with
//!   `--nfs-volume KEY=server:/export[,options]`, mounted per task and unmounted with it;
//!   refused when not mapped.
//! - `environmentFiles` of Berth's type `file`: host files under `--allowed-host-paths`, read
//!   when the container is created (`environment` wins over a file; the first file wins over a
//!   later one, as in ECS's agent).
//!
//! Every refusal is an error naming the volume (or file) and the cause; the engine shows it as
//! `ResourceInitializationError: …` and the task stops before any container is created.

use berth_proto::v1::{ContainerDefinition, KeyValuePair, TaskDefinition, Volume};
use oci_spec::runtime::{Mount, MountBuilder, Spec};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;
use tracing::{info, warn};

/// How long a mount, an unmount or a file-system step (mkdir, reading an environment file)
/// may take before it counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest environment file read (a process's whole environment must fit in the kernel's
/// ARG_MAX, 2 MiB on most hosts, so a bigger file could never start a container).
pub const MAX_ENV_FILE: u64 = 1024 * 1024;

/// The agent's volume settings.
#[derive(Debug, Clone, Default)]
pub struct VolumeConfig {
    /// Host directories under which `host` volumes and environment files may lie
    /// (`--allowed-host-paths`), canonical; empty: none allowed.
    pub allowed_host_paths: Vec<PathBuf>,
    /// NFS exports by key (`--nfs-volume`): an EFS fileSystemId or a docker volume's name.
    pub nfs: BTreeMap<String, NfsExport>,
}

/// An NFS export a volume is mounted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsExport {
    /// The server (host name or address).
    pub server: String,
    /// The exported path on it (absolute).
    pub export: String,
    /// `mount -o` options; none: mount.nfs's defaults.
    pub options: Option<String>,
}

impl VolumeConfig {
    /// Settings from the flags' values: `--allowed-host-paths` entries (absolute directories;
    /// empty entries skipped) and `--nfs-volume` entries (`KEY=server:/export[,options]`).
    pub fn from_flags(allowed: &[String], nfs: &[String]) -> Result<Self, String> {
        let mut out = VolumeConfig::default();
        for a in allowed.iter().map(|a| a.trim()).filter(|a| !a.is_empty()) {
            let p = Path::new(a);
            if !p.is_absolute() {
                return Err(format!(
                    "--allowed-host-paths: {a:?} is not an absolute path"
                ));
            }
            let p = normalize(p);
            // Compared with canonical paths: a symlinked allowed directory is its target.
            out.allowed_host_paths
                .push(std::fs::canonicalize(&p).unwrap_or(p));
        }
        for n in nfs.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            let (key, export) = NfsExport::parse(n)?;
            if out.nfs.insert(key.clone(), export).is_some() {
                return Err(format!("--nfs-volume: key {key:?} is mapped twice"));
            }
        }
        Ok(out)
    }

    /// The instance attributes telling which NFS keys this agent maps: `berth.nfs.<key>` =
    /// `server:/export`.
    pub fn attributes(&self) -> Vec<(String, String)> {
        self.nfs
            .iter()
            .map(|(k, e)| {
                (
                    format!("berth.nfs.{k}"),
                    format!("{}:{}", e.server, e.export),
                )
            })
            .collect()
    }

    /// The canonical form of `path` when it lies under an allowed directory (symlinks resolved
    /// as far as the path exists, `.` and `..` removed); `None` otherwise.
    pub fn allowed(&self, path: &Path) -> Option<PathBuf> {
        if !path.is_absolute() {
            return None;
        }
        let resolved = resolve(&normalize(path))?;
        self.allowed_host_paths
            .iter()
            .any(|a| resolved.starts_with(a))
            .then_some(resolved)
    }
}

impl NfsExport {
    /// Parses `KEY=server:/export[,options]`.
    pub fn parse(s: &str) -> Result<(String, NfsExport), String> {
        let bad = |why: &str| {
            format!("--nfs-volume {s:?}: {why} (expected KEY=server:/export[,options])")
        };
        let (key, rest) = s.split_once('=').ok_or_else(|| bad("no '='"))?;
        let key = key.trim();
        if key.is_empty()
            || !key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(bad("the key must be letters, digits, '-', '_' or '.'"));
        }
        let (source, options) = match rest.split_once(',') {
            Some((s, o)) => (
                s.trim(),
                Some(o.trim().to_string()).filter(|o| !o.is_empty()),
            ),
            None => (rest.trim(), None),
        };
        let at = source.find(":/").ok_or_else(|| bad("no server:/export"))?;
        let (server, export) = (&source[..at], &source[at + 1..]);
        if server.is_empty() || server.contains(char::is_whitespace) {
            return Err(bad("no server"));
        }
        if export.split('/').any(|c| c == "..") {
            return Err(bad("the export must not contain '..'"));
        }
        Ok((
            key.to_string(),
            NfsExport {
                server: server.to_string(),
                export: export.to_string(),
                options,
            },
        ))
    }

    /// `server:/export[/sub]`, what mount.nfs is given.
    pub fn source(&self, sub: Option<&str>) -> String {
        let sub = sub.map(|s| s.trim_matches('/')).filter(|s| !s.is_empty());
        match sub {
            Some(sub) => format!(
                "{}:{}/{sub}",
                self.server,
                self.export.trim_end_matches('/')
            ),
            None => format!("{}:{}", self.server, self.export),
        }
    }
}

/// `.` and `..` removed lexically (`..` never climbs above the root).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

/// `path` (absolute, normalised) with the symlinks of its longest existing ancestor resolved;
/// `None` when that ancestor cannot be resolved (a dangling link, no permission).
fn resolve(path: &Path) -> Option<PathBuf> {
    let mut rest = Vec::new();
    let mut cur = path.to_path_buf();
    loop {
        if std::fs::symlink_metadata(&cur).is_ok() {
            let mut out = std::fs::canonicalize(&cur).ok()?;
            for c in rest.iter().rev() {
                out.push(c);
            }
            return Some(out);
        }
        let name = cur.file_name()?.to_os_string();
        rest.push(name);
        if !cur.pop() {
            return None;
        }
    }
}

/// Why a task's volume (or a container's mount) cannot be made. Shown after
/// `ResourceInitializationError: `.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// A host path outside the allow-list.
    #[error("volume {volume}: host path {path} is not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)")]
    NotAllowed {
        /// The volume.
        volume: String,
        /// Its sourcePath as given.
        path: String,
    },
    /// An EFS file system the agent has no NFS mapping for.
    #[error("volume {volume}: efsVolumeConfiguration fileSystemId {fs} is not mapped to NFS on this agent (--nfs-volume)")]
    EfsNotMapped {
        /// The volume.
        volume: String,
        /// Its fileSystemId.
        fs: String,
    },
    /// A docker volume driver other than `local` with no NFS mapping for the volume.
    #[error("volume {volume}: dockerVolumeConfiguration driver {driver} is not mapped to NFS on this agent (--nfs-volume {volume}=server:/export)")]
    DriverNotMapped {
        /// The volume.
        volume: String,
        /// Its driver.
        driver: String,
    },
    /// A shared volume that does not exist and may not be made.
    #[error("volume {volume}: shared volume {path} does not exist and autoprovision is false")]
    SharedMissing {
        /// The volume.
        volume: String,
        /// Where it would be.
        path: String,
    },
    /// Something of the volume's configuration this agent does not do.
    #[error("volume {volume}: {what}")]
    Unsupported {
        /// The volume.
        volume: String,
        /// What, and why.
        what: String,
    },
    /// A container's mountPoints or volumesFrom that name nothing of the task.
    #[error("container {container}: {what}")]
    Mount {
        /// The container.
        container: String,
        /// What is wrong.
        what: String,
    },
    /// A file-system step failed.
    #[error("volume {volume}: {what} {path}: {source}")]
    Io {
        /// The volume.
        volume: String,
        /// The step.
        what: &'static str,
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// A mount or unmount failed or timed out.
    #[error("volume {volume}: {what}")]
    Command {
        /// The volume (or the directory when unmounting).
        volume: String,
        /// The command and its outcome.
        what: String,
    },
    /// A file-system step did not finish in time (a hung mount).
    #[error("volume {0}: the file-system step did not finish within {STEP_TIMEOUT:?}")]
    Timeout(String),
}

/// Where a volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// A host path (sourcePath as given).
    Host(String),
    /// A directory of the task.
    Task,
    /// A shared directory (autoprovision).
    Shared(bool),
    /// An NFS export.
    Nfs {
        /// The key looked up in the mappings.
        key: String,
        /// A directory below the export (EFS rootDirectory).
        sub: Option<String>,
    },
}

fn unsupported(v: &Volume, what: impl Into<String>) -> VolumeError {
    VolumeError::Unsupported {
        volume: v.name.clone(),
        what: what.into(),
    }
}

/// What a volume is, and whether this agent can make it (no file system touched).
fn classify(v: &Volume, config: &VolumeConfig) -> Result<Kind, VolumeError> {
    let valid_name = !v.name.is_empty()
        && v.name.len() <= 255
        && v.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid_name {
        return Err(unsupported(
            v,
            "the name must be 1-255 letters, digits, hyphens or underscores",
        ));
    }
    if v.s3files_volume_configuration.is_some() {
        return Err(unsupported(
            v,
            "s3filesVolumeConfiguration is not supported",
        ));
    }
    if v.fsx_windows_file_server_volume_configuration.is_some() {
        return Err(unsupported(
            v,
            "fsxWindowsFileServerVolumeConfiguration is not supported",
        ));
    }
    if v.configured_at_launch == Some(true) {
        return Err(unsupported(v, "configuredAtLaunch (EBS) is not supported"));
    }
    if let Some(efs) = &v.efs_volume_configuration {
        if efs
            .transit_encryption
            .as_deref()
            .is_some_and(|t| t.eq_ignore_ascii_case("ENABLED"))
        {
            return Err(unsupported(
                v,
                "efsVolumeConfiguration transitEncryption ENABLED is not supported (volumes are plain NFS mounts)",
            ));
        }
        if let Some(a) = &efs.authorization_config {
            if a.access_point_id.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(unsupported(
                    v,
                    "efsVolumeConfiguration authorizationConfig.accessPointId is not supported (volumes are plain NFS mounts)",
                ));
            }
            if a.iam
                .as_deref()
                .is_some_and(|s| s.eq_ignore_ascii_case("ENABLED"))
            {
                return Err(unsupported(
                    v,
                    "efsVolumeConfiguration authorizationConfig.iam ENABLED is not supported (no IAM on premises)",
                ));
            }
        }
        let sub = efs
            .root_directory
            .clone()
            .filter(|r| !r.trim_matches('/').is_empty());
        if sub
            .as_deref()
            .is_some_and(|r| r.split('/').any(|c| c == ".."))
        {
            return Err(unsupported(
                v,
                "efsVolumeConfiguration rootDirectory must not contain '..'",
            ));
        }
        if !config.nfs.contains_key(&efs.file_system_id) {
            return Err(VolumeError::EfsNotMapped {
                volume: v.name.clone(),
                fs: efs.file_system_id.clone(),
            });
        }
        return Ok(Kind::Nfs {
            key: efs.file_system_id.clone(),
            sub,
        });
    }
    if let Some(d) = &v.docker_volume_configuration {
        let driver = d
            .driver
            .as_deref()
            .filter(|d| !d.is_empty())
            .unwrap_or("local");
        if driver != "local" {
            if !config.nfs.contains_key(&v.name) {
                return Err(VolumeError::DriverNotMapped {
                    volume: v.name.clone(),
                    driver: driver.to_string(),
                });
            }
            if !d.driver_opts.is_empty() {
                return Err(unsupported(
                    v,
                    "dockerVolumeConfiguration driverOpts are not supported (the volume is the NFS export mapped with --nfs-volume)",
                ));
            }
            return Ok(Kind::Nfs {
                key: v.name.clone(),
                sub: None,
            });
        }
        if !d.driver_opts.is_empty() {
            return Err(unsupported(
                v,
                "dockerVolumeConfiguration driverOpts of the local driver (mounts) are not supported; map an NFS export with --nfs-volume and another driver name",
            ));
        }
        return match d.scope.as_deref().unwrap_or("task") {
            "task" => Ok(Kind::Task),
            "shared" => Ok(Kind::Shared(d.autoprovision == Some(true))),
            other => Err(unsupported(
                v,
                format!("dockerVolumeConfiguration scope {other:?} is not task or shared"),
            )),
        };
    }
    match v.host.as_ref().and_then(|h| h.source_path.clone()) {
        Some(p) if !p.is_empty() => Ok(Kind::Host(p)),
        _ => Ok(Kind::Task),
    }
}

/// A bind mount of a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindMount {
    /// The host path.
    pub source: PathBuf,
    /// The path in the container.
    pub destination: String,
    /// Mounted read-only.
    pub read_only: bool,
}

/// A task's volumes as made on this host, and each container's bind mounts.
#[derive(Debug, Clone, Default)]
pub struct TaskVolumes {
    /// Bind mounts by container name.
    mounts: HashMap<String, Vec<BindMount>>,
}

impl TaskVolumes {
    /// A container's bind mounts.
    pub fn of(&self, container: &str) -> &[BindMount] {
        self.mounts.get(container).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `spec` with the container's bind mounts appended (after the runtime's own mounts, so
    /// a volume mounted over one of them wins, as in Docker).
    pub fn with_mounts(
        &self,
        mut spec: Spec,
        container: &str,
    ) -> Result<Spec, oci_spec::OciSpecError> {
        let binds = self.of(container);
        if binds.is_empty() {
            return Ok(spec);
        }
        let mut all = spec.mounts().clone().unwrap_or_default();
        for b in binds {
            all.push(oci_mount(b)?);
        }
        spec.set_mounts(Some(all));
        Ok(spec)
    }
}

/// The OCI mount of a bind mount (Docker's options: rbind, rprivate, ro or rw).
pub fn oci_mount(b: &BindMount) -> Result<Mount, oci_spec::OciSpecError> {
    MountBuilder::default()
        .destination(b.destination.as_str())
        .typ("bind")
        .source(&b.source)
        .options(vec![
            "rbind".to_string(),
            "rprivate".to_string(),
            if b.read_only { "ro" } else { "rw" }.to_string(),
        ])
        .build()
}

/// Each container's bind mounts: its mountPoints, then those of each volumesFrom source (all
/// of them read-only when the volumesFrom entry says readOnly), from the volumes' host paths.
pub fn container_mounts(
    def: &TaskDefinition,
    sources: &HashMap<String, PathBuf>,
) -> Result<HashMap<String, Vec<BindMount>>, VolumeError> {
    fn gather(
        def: &TaskDefinition,
        sources: &HashMap<String, PathBuf>,
        c: &ContainerDefinition,
        seen: &mut HashSet<String>,
        out: &mut Vec<BindMount>,
    ) -> Result<(), VolumeError> {
        let err = |what: String| VolumeError::Mount {
            container: c.name.clone(),
            what,
        };
        if !seen.insert(c.name.clone()) {
            return Ok(());
        }
        for (j, m) in c.mount_points.iter().enumerate() {
            let source = sources.get(&m.source_volume).ok_or_else(|| {
                err(format!(
                    "mountPoints[{j}].sourceVolume {:?} is not a volume of the task",
                    m.source_volume
                ))
            })?;
            if !m.container_path.starts_with('/') {
                return Err(err(format!(
                    "mountPoints[{j}].containerPath {:?} is not an absolute path",
                    m.container_path
                )));
            }
            out.push(BindMount {
                source: source.clone(),
                destination: m.container_path.clone(),
                read_only: m.read_only == Some(true),
            });
        }
        for (j, f) in c.volumes_from.iter().enumerate() {
            let from = def
                .container_definitions
                .iter()
                .find(|d| d.name == f.source_container)
                .ok_or_else(|| {
                    err(format!(
                        "volumesFrom[{j}].sourceContainer {:?} is not a container of the task",
                        f.source_container
                    ))
                })?;
            let start = out.len();
            gather(def, sources, from, seen, out)?;
            if f.read_only == Some(true) {
                for b in &mut out[start..] {
                    b.read_only = true;
                }
            }
        }
        Ok(())
    }
    let mut all = HashMap::new();
    for c in &def.container_definitions {
        let mut out = Vec::new();
        gather(def, sources, c, &mut HashSet::new(), &mut out)?;
        // A later mount at the same path replaces an earlier one (the container's own
        // mountPoints come first and win over what volumesFrom brings).
        let mut kept: Vec<BindMount> = Vec::new();
        for b in out {
            if !kept.iter().any(|k| k.destination == b.destination) {
                kept.push(b);
            }
        }
        all.insert(c.name.clone(), kept);
    }
    Ok(all)
}

/// `volumes/<task-id>` in the data dir: the task's own volumes.
pub fn task_dir(data_dir: &Path, task_id: &str) -> PathBuf {
    data_dir.join("volumes").join(task_id)
}

/// `volumes/shared/<name>` in the data dir.
fn shared_dir(data_dir: &Path, name: &str) -> PathBuf {
    data_dir.join("volumes").join("shared").join(name)
}

/// Runs a file-system step on the blocking pool, bounded by [`STEP_TIMEOUT`].
async fn blocking<T: Send + 'static>(
    volume: &str,
    f: impl FnOnce() -> Result<T, VolumeError> + Send + 'static,
) -> Result<T, VolumeError> {
    match tokio::time::timeout(STEP_TIMEOUT, tokio::task::spawn_blocking(f)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(VolumeError::Command {
            volume: volume.to_string(),
            what: format!("file-system step failed: {e}"),
        }),
        Err(_) => Err(VolumeError::Timeout(volume.to_string())),
    }
}

fn mkdir(volume: &str, dir: &Path) -> Result<(), VolumeError> {
    std::fs::create_dir_all(dir).map_err(|source| VolumeError::Io {
        volume: volume.to_string(),
        what: "cannot create",
        path: dir.display().to_string(),
        source,
    })
}

/// A host path checked against the allow-list, created when missing (then checked again: a
/// symlink put there meanwhile is resolved too); its canonical path.
fn host_path(config: &VolumeConfig, volume: &str, given: &str) -> Result<PathBuf, VolumeError> {
    let refused = || VolumeError::NotAllowed {
        volume: volume.to_string(),
        path: given.to_string(),
    };
    let path = config.allowed(Path::new(given)).ok_or_else(refused)?;
    if std::fs::symlink_metadata(&path).is_err() {
        mkdir(volume, &path)?;
    }
    config.allowed(&path).ok_or_else(refused)
}

/// Pins a checked host path: opens it (`O_PATH`), checks that what was opened (the kernel's
/// path of the descriptor) is still under the allow-list, and bind-mounts that very file or
/// directory through the descriptor on `pin` (under the task's volumes directory, which no
/// container sees). The containers' mounts bind `pin`, so a symlink swapped into the host path
/// after the check (by a container writing to an allowed directory, say), at a later create
/// behind dependsOn or at a restart in place, cannot redirect them. Unmounted by [`cleanup`]
/// with the task's other mounts.
fn pin_host_path(
    config: &VolumeConfig,
    volume: &str,
    given: &str,
    path: &Path,
    pin: &Path,
) -> Result<(), VolumeError> {
    use nix::fcntl::{open, OFlag};
    use nix::mount::{mount, MsFlags};
    use nix::sys::stat::Mode;
    let io = |what: &'static str, p: &Path, e: nix::Error| VolumeError::Io {
        volume: volume.to_string(),
        what,
        path: p.display().to_string(),
        source: std::io::Error::from(e),
    };
    if !mounts_under(pin).is_empty() {
        return Ok(()); // pinned already (an agent restarted while starting the task)
    }
    let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(|e| io("cannot open", path, e))?;
    let magic = PathBuf::from(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&fd)
    ));
    let opened = std::fs::read_link(&magic).map_err(|source| VolumeError::Io {
        volume: volume.to_string(),
        what: "cannot resolve",
        path: path.display().to_string(),
        source,
    })?;
    if config.allowed(&opened).as_deref() != Some(opened.as_path()) {
        return Err(VolumeError::NotAllowed {
            volume: volume.to_string(),
            path: given.to_string(),
        });
    }
    let is_dir = nix::sys::stat::fstat(&fd)
        .map(|st| (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFDIR)
        .map_err(|e| io("cannot stat", path, e))?;
    if let Some(parent) = pin.parent() {
        mkdir(volume, parent)?;
    }
    if is_dir {
        mkdir(volume, pin)?;
    } else {
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(pin)
            .map_err(|source| VolumeError::Io {
                volume: volume.to_string(),
                what: "cannot create",
                path: pin.display().to_string(),
                source,
            })?;
    }
    mount(
        Some(magic.as_path()),
        pin,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|e| io("cannot bind-mount", pin, e))
}

/// The mount points under `dir` (itself included), deepest first, from /proc/self/mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|p| p.starts_with(dir))
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

/// mountinfo's octal escapes (`\040` for a space).
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(n) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `mount` command line of an NFS volume.
pub fn nfs_mount_args(export: &NfsExport, sub: Option<&str>, target: &Path) -> Vec<String> {
    let mut args = vec!["-t".to_string(), "nfs".to_string()];
    if let Some(o) = &export.options {
        args.push("-o".into());
        args.push(o.clone());
    }
    args.push(export.source(sub));
    args.push(target.display().to_string());
    args
}

/// Runs `program args`, bounded by [`STEP_TIMEOUT`] (killed past it).
async fn run(volume: &str, program: &str, args: &[String]) -> Result<(), VolumeError> {
    let fail = |what: String| VolumeError::Command {
        volume: volume.to_string(),
        what: format!("{program} {}: {what}", args.join(" ")),
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(STEP_TIMEOUT, child).await {
        Err(_) => Err(fail(format!("no answer within {STEP_TIMEOUT:?}"))),
        Ok(Err(e)) => Err(fail(e.to_string())),
        Ok(Ok(o)) if o.status.success() => Ok(()),
        Ok(Ok(o)) => Err(fail(format!(
            "{}: {}",
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ))),
    }
}

/// Makes each of the task's volumes (directories, NFS mounts) and works out each container's
/// bind mounts. What is made before a failure is removed by [`cleanup`].
pub async fn prepare(
    config: &VolumeConfig,
    data_dir: &Path,
    task_id: &str,
    def: &TaskDefinition,
) -> Result<TaskVolumes, VolumeError> {
    // Everything is checked before anything is made.
    let kinds = def
        .volumes
        .iter()
        .map(|v| classify(v, config).map(|k| (v.name.clone(), k)))
        .collect::<Result<Vec<_>, _>>()?;
    // mountPoints and volumesFrom checked against the volumes' names before anything is made.
    let names = kinds
        .iter()
        .map(|(n, _)| (n.clone(), PathBuf::new()))
        .collect();
    container_mounts(def, &names)?;
    let mut sources = HashMap::new();
    for (name, kind) in kinds {
        let path = match kind {
            Kind::Host(given) => {
                let config = config.clone();
                let volume = name.clone();
                let pin = task_dir(data_dir, task_id).join(format!("host-{name}"));
                blocking(&name, move || {
                    let path = host_path(&config, &volume, &given)?;
                    pin_host_path(&config, &volume, &given, &path, &pin)?;
                    Ok(pin)
                })
                .await?
            }
            Kind::Task => {
                let dir = task_dir(data_dir, task_id).join(&name);
                let (volume, d) = (name.clone(), dir.clone());
                blocking(&name, move || mkdir(&volume, &d)).await?;
                dir
            }
            Kind::Shared(autoprovision) => {
                let dir = shared_dir(data_dir, &name);
                let (volume, d) = (name.clone(), dir.clone());
                blocking(&name, move || {
                    if d.is_dir() {
                        Ok(())
                    } else if autoprovision {
                        mkdir(&volume, &d)
                    } else {
                        Err(VolumeError::SharedMissing {
                            volume,
                            path: d.display().to_string(),
                        })
                    }
                })
                .await?;
                dir
            }
            Kind::Nfs { key, sub } => {
                let dir = task_dir(data_dir, task_id).join(&name);
                let (volume, d) = (name.clone(), dir.clone());
                let mounted = blocking(&name, move || {
                    mkdir(&volume, &d)?;
                    Ok(!mounts_under(&d).is_empty())
                })
                .await?;
                let export = config.nfs.get(&key).ok_or_else(|| VolumeError::Command {
                    volume: name.clone(),
                    what: format!("NFS mapping {key} vanished"),
                })?;
                if !mounted {
                    run(
                        &name,
                        "mount",
                        &nfs_mount_args(export, sub.as_deref(), &dir),
                    )
                    .await?;
                    info!(volume = %name, source = %export.source(sub.as_deref()), "NFS volume mounted");
                }
                dir
            }
        };
        sources.insert(name, path);
    }
    Ok(TaskVolumes {
        mounts: container_mounts(def, &sources)?,
    })
}

/// Removes the task's own volumes: unmounts what is mounted under `volumes/<task-id>` (NFS
/// volumes), then removes the directory, never while anything is still mounted there (that
/// would delete the export's files). Shared volumes and host paths are left alone.
pub async fn cleanup(data_dir: &Path, task_id: &str) -> Result<(), VolumeError> {
    let dir = task_dir(data_dir, task_id);
    let d = dir.clone();
    let label = format!("of task {task_id}");
    let mounted = blocking(&label, move || Ok(mounts_under(&d))).await?;
    for m in &mounted {
        run(&label, "umount", &[m.display().to_string()]).await?;
    }
    let volume = label.clone();
    blocking(&label, move || {
        let label = volume;
        let left = mounts_under(&dir);
        if !left.is_empty() {
            return Err(VolumeError::Command {
                volume: label,
                what: format!(
                    "still mounted after umount, not removed: {}",
                    left.iter()
                        .map(|p| p.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(VolumeError::Io {
                volume: label,
                what: "cannot remove",
                path: dir.display().to_string(),
                source: e,
            }),
            _ => Ok(()),
        }
    })
    .await
}

/// Why a container's environment files cannot be had. Shown after
/// `ResourceInitializationError: `.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
    /// Not an absolute path under the allow-list.
    #[error("environment file {0}: not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)")]
    NotAllowed(String),
    /// A type other than `file`.
    #[error("environment file {value}: type {kind:?} is not supported on this agent (only type file: an absolute host path under --allowed-host-paths; S3 is not available on premises)")]
    Type {
        /// The value.
        value: String,
        /// The type given.
        kind: String,
    },
    /// Not named `*.env`, as ECS requires.
    #[error("environment file {0}: the file must have a .env file extension")]
    Extension(String),
    /// Cannot be read.
    #[error("environment file {path}: {why}")]
    Unreadable {
        /// The path.
        path: String,
        /// Why.
        why: String,
    },
}

/// The variables of an environment file's text, ECS's agent's rules: one `NAME=value` per
/// line, split at the first `=`, the value taken as it is (spaces and quotes included); lines
/// starting with `#`, lines without `=` and lines with an empty name are skipped; a later line
/// wins over an earlier one of the same name. Returns the variables in first-seen order and
/// the numbers of the lines skipped for having no `=` or no name.
pub fn parse_env_file(text: &str) -> (Vec<(String, String)>, Vec<usize>) {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut skipped = Vec::new();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((name, value)) if !name.is_empty() => {
                match out.iter_mut().find(|(n, _)| n == name) {
                    Some(e) => e.1 = value.to_string(),
                    None => out.push((name.to_string(), value.to_string())),
                }
            }
            _ => skipped.push(i + 1),
        }
    }
    (out, skipped)
}

/// Reads one environment file (blocking): checked against the allow-list, at most
/// [`MAX_ENV_FILE`] bytes, UTF-8.
fn read_env_file(
    config: &VolumeConfig,
    value: &str,
) -> Result<Vec<(String, String)>, EnvFileError> {
    use std::io::Read;
    let given = Path::new(value);
    if given.extension().is_none_or(|e| e != "env") {
        return Err(EnvFileError::Extension(value.to_string()));
    }
    let path = config
        .allowed(given)
        .ok_or_else(|| EnvFileError::NotAllowed(value.to_string()))?;
    let unreadable = |why: String| EnvFileError::Unreadable {
        path: value.to_string(),
        why,
    };
    let f = std::fs::File::open(&path).map_err(|e| unreadable(e.to_string()))?;
    let meta = f.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !meta.is_file() {
        return Err(unreadable("not a regular file".into()));
    }
    let mut bytes = Vec::new();
    f.take(MAX_ENV_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() as u64 > MAX_ENV_FILE {
        return Err(unreadable(format!("larger than {MAX_ENV_FILE} bytes")));
    }
    let text = String::from_utf8(bytes).map_err(|_| unreadable("not UTF-8 text".into()))?;
    let (vars, skipped) = parse_env_file(&text);
    if !skipped.is_empty() {
        // Line numbers only: the values are the user's.
        warn!(file = %value, lines = ?skipped, "environment file lines without NAME= skipped (as ECS does)");
    }
    Ok(vars)
}

/// A copy of `d` whose `environment` also holds the variables of its environment files
/// (read now, off the async workers, bounded by [`STEP_TIMEOUT`]); `None` when it has none.
/// `environment` wins over a file, an earlier file over a later one (ECS's agent's rules).
pub async fn with_env_files(
    config: &VolumeConfig,
    d: &ContainerDefinition,
) -> Result<Option<ContainerDefinition>, EnvFileError> {
    if d.environment_files.is_empty() {
        return Ok(None);
    }
    for f in &d.environment_files {
        if f.r#type != "file" {
            return Err(EnvFileError::Type {
                value: f.value.clone(),
                kind: f.r#type.clone(),
            });
        }
    }
    let (config, files) = (config.clone(), d.environment_files.clone());
    let job = tokio::task::spawn_blocking(move || {
        files
            .iter()
            .map(|f| read_env_file(&config, &f.value))
            .collect::<Result<Vec<_>, _>>()
    });
    let per_file = match tokio::time::timeout(STEP_TIMEOUT, job).await {
        Ok(Ok(r)) => r?,
        Ok(Err(e)) => {
            return Err(EnvFileError::Unreadable {
                path: d.environment_files[0].value.clone(),
                why: e.to_string(),
            })
        }
        Err(_) => {
            return Err(EnvFileError::Unreadable {
                path: d.environment_files[0].value.clone(),
                why: format!("reading did not finish within {STEP_TIMEOUT:?}"),
            })
        }
    };
    let mut d = d.clone();
    let mut from_files: Vec<KeyValuePair> = Vec::new();
    for (name, value) in per_file.into_iter().flatten() {
        let taken = d.environment.iter().any(|kv| kv.name == name)
            || from_files.iter().any(|kv| kv.name == name);
        if !taken {
            from_files.push(KeyValuePair { name, value });
        }
    }
    // First, so that `environment` (set after them) wins in the spec.
    from_files.append(&mut d.environment);
    d.environment = from_files;
    Ok(Some(d))
}

#[cfg(test)]
mod tests;
