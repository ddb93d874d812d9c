//! The container options of a definition's `linuxParameters` and `systemControls` in OCI
//! terms, as the ECS agent hands them to Docker and Docker to runc: capabilities add/drop
//! (Docker's `TweakCapabilities`), devices, the init process (Docker's `--init`),
//! sharedMemorySize, tmpfs (Docker's tmpfs option merge), maxSwap/swappiness (ECS's rules) and
//! sysctls (runc's namespace rules). Each refusal names the container and the field.

use berth_proto::v1::ContainerDefinition;
use oci_spec::runtime::{
    Capability, LinuxDevice, LinuxDeviceBuilder, LinuxDeviceCgroup, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, Mount, MountBuilder,
};
use std::collections::HashMap;
use std::path::Path;

/// Where Docker (and so ECS's initProcessEnabled) mounts the init binary in the container.
pub const INIT_DESTINATION: &str = "/sbin/docker-init";

/// The default `--init-path`: tini-static from Debian's `tini` package.
pub const DEFAULT_INIT_PATH: &str = "/usr/bin/tini-static";

/// ECS's swappiness when maxSwap is set and swappiness is not.
pub const DEFAULT_SWAPPINESS: u64 = 60;

/// Why an option cannot be applied (shown as CannotCreateContainerError).
#[derive(Debug, thiserror::Error)]
pub enum OptionError {
    /// A capability name that is not one.
    #[error("container {container}: linuxParameters.capabilities: unknown capability: '{name}'")]
    Capability {
        /// The container.
        container: String,
        /// The name given.
        name: String,
    },
    /// A device that cannot be given.
    #[error("container {container}: linuxParameters.devices: error gathering device information while adding custom device \"{host_path}\": {problem}")]
    Device {
        /// The container.
        container: String,
        /// The device's hostPath.
        host_path: String,
        /// What is wrong.
        problem: String,
    },
    /// initProcessEnabled without an init binary on this instance.
    #[error("container {container}: linuxParameters.initProcessEnabled: the init binary {path} is not on this container instance (install Debian's tini package, or set the agent's --init-path / BERTH_INIT_PATH)")]
    Init {
        /// The container.
        container: String,
        /// The agent's --init-path.
        path: String,
    },
    /// A tmpfs option Docker does not take.
    #[error(
        "container {container}: linuxParameters.tmpfs {path}: invalid tmpfs option '{option}'"
    )]
    Tmpfs {
        /// The container.
        container: String,
        /// The tmpfs's containerPath.
        path: String,
        /// The option.
        option: String,
    },
    /// A linuxParameters value that does not fit the rest of the definition or the host.
    #[error("container {container}: linuxParameters.{field}: {problem}")]
    Conflict {
        /// The container.
        container: String,
        /// The field.
        field: &'static str,
        /// What is wrong.
        problem: String,
    },
    /// A systemControls entry the container cannot have.
    #[error("container {container}: systemControls: sysctl '{name}' {problem}")]
    Sysctl {
        /// The container.
        container: String,
        /// The sysctl.
        name: String,
        /// What is wrong.
        problem: String,
    },
}

fn cap_name(c: &Capability) -> String {
    serde_json::to_value(c)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Parses a capability as Docker does: any case, with or without `CAP_`.
fn parse_cap(container: &str, name: &str) -> Result<Capability, OptionError> {
    let upper = name.trim().to_ascii_uppercase();
    let full = if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    };
    super::spec::ALL_CAPS
        .iter()
        .find(|c| cap_name(c) == full)
        .copied()
        .ok_or_else(|| OptionError::Capability {
            container: container.to_string(),
            name: name.to_string(),
        })
}

/// The capabilities of an unprivileged container: `basics` (Docker's defaults) with
/// linuxParameters.capabilities' drop and add applied by Docker's rules: add ALL → every
/// capability (`all`, the agent's own bounding set) but the dropped ones; drop ALL → only the
/// added ones; otherwise the basics minus drop plus add.
pub fn capabilities(
    def: &ContainerDefinition,
    basics: &[Capability],
    all: &[Capability],
) -> Result<Vec<Capability>, OptionError> {
    let Some(kc) = def
        .linux_parameters
        .as_ref()
        .and_then(|l| l.capabilities.as_ref())
    else {
        return Ok(basics.to_vec());
    };
    let is_all = |n: &String| n.trim().eq_ignore_ascii_case("ALL");
    let parse = |names: &[String]| -> Result<Vec<Capability>, OptionError> {
        names
            .iter()
            .filter(|n| !is_all(n))
            .map(|n| parse_cap(&def.name, n))
            .collect()
    };
    let (add, drop) = (parse(&kc.add)?, parse(&kc.drop)?);
    let mut out: Vec<Capability> = if kc.add.iter().any(is_all) {
        all.iter().filter(|c| !drop.contains(c)).copied().collect()
    } else if kc.drop.iter().any(is_all) {
        add
    } else {
        basics
            .iter()
            .filter(|c| !drop.contains(c))
            .copied()
            .chain(add)
            .collect()
    };
    let mut seen = Vec::new();
    out.retain(|c| {
        let new = !seen.contains(c);
        seen.push(*c);
        new
    });
    Ok(out)
}

/// The devices of linuxParameters.devices (each host device node stat'ed now) and their
/// device-cgroup allow rules; permissions read/write/mknod → r/w/m, none given → rwm.
pub fn devices(
    def: &ContainerDefinition,
) -> Result<(Vec<LinuxDevice>, Vec<LinuxDeviceCgroup>), OptionError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut devs = Vec::new();
    let mut rules = Vec::new();
    let Some(lp) = &def.linux_parameters else {
        return Ok((devs, rules));
    };
    for d in &lp.devices {
        let err = |problem: String| OptionError::Device {
            container: def.name.clone(),
            host_path: d.host_path.clone(),
            problem,
        };
        let meta = std::fs::metadata(&d.host_path).map_err(|e| err(e.to_string()))?;
        let ft = meta.file_type();
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            return Err(err("not a device node".into()));
        };
        let mut access = String::new();
        for p in &d.permissions {
            let c = match p.as_str() {
                "read" => 'r',
                "write" => 'w',
                "mknod" => 'm',
                other => {
                    return Err(err(format!(
                        "permission '{other}' is not read, write or mknod"
                    )))
                }
            };
            if !access.contains(c) {
                access.push(c);
            }
        }
        if access.is_empty() {
            access = "rwm".into();
        }
        let container_path = d
            .container_path
            .clone()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| d.host_path.clone());
        if !container_path.starts_with('/') {
            return Err(err(format!(
                "containerPath '{container_path}' is not an absolute path"
            )));
        }
        let rdev = meta.rdev();
        let (major, minor) = (
            nix::sys::stat::major(rdev) as i64,
            nix::sys::stat::minor(rdev) as i64,
        );
        let built = LinuxDeviceBuilder::default()
            .path(container_path)
            .typ(typ)
            .major(major)
            .minor(minor)
            .file_mode(meta.mode() & 0o7777)
            .uid(meta.uid())
            .gid(meta.gid())
            .build()
            .map_err(|e| err(e.to_string()))?;
        devs.push(built);
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(typ)
                .major(major)
                .minor(minor)
                .access(access)
                .build()
                .map_err(|e| err(e.to_string()))?,
        );
    }
    Ok((devs, rules))
}

fn mount(destination: &str, typ: &str, source: &str, options: Vec<String>) -> Option<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .ok()
}

/// With initProcessEnabled: the init binary's read-only bind mount and the process's new
/// argv (`/sbin/docker-init -- ARGS`), as Docker's `--init`.
pub fn init(
    def: &ContainerDefinition,
    init_path: &Path,
    args: Vec<String>,
) -> Result<(Option<Mount>, Vec<String>), OptionError> {
    let on = def
        .linux_parameters
        .as_ref()
        .and_then(|l| l.init_process_enabled)
        == Some(true);
    if !on {
        return Ok((None, args));
    }
    let err = || OptionError::Init {
        container: def.name.clone(),
        path: init_path.display().to_string(),
    };
    if !init_path.is_file() {
        return Err(err());
    }
    let m = mount(
        INIT_DESTINATION,
        "bind",
        &init_path.to_string_lossy(),
        vec!["bind".into(), "ro".into()],
    )
    .ok_or_else(err)?;
    let argv = [INIT_DESTINATION.to_string(), "--".to_string()]
        .into_iter()
        .chain(args)
        .collect();
    Ok((Some(m), argv))
}

/// The size option of /dev/shm: sharedMemorySize MiB, or Docker's 64 MiB.
pub fn shm_size(def: &ContainerDefinition) -> String {
    let mib = def
        .linux_parameters
        .as_ref()
        .and_then(|l| l.shared_memory_size)
        .filter(|s| *s > 0)
        .unwrap_or(64) as u64;
    format!("size={}k", mib * 1024)
}

/// The flag groups of mount options: options of one group replace each other (Docker's
/// `MergeTmpfsOptions`, keyed by mount flag).
fn flag_group(option: &str) -> Option<&'static str> {
    Some(match option {
        "ro" | "rw" => "ro",
        "suid" | "nosuid" => "nosuid",
        "dev" | "nodev" => "nodev",
        "exec" | "noexec" => "noexec",
        "sync" | "async" => "sync",
        "dirsync" => "dirsync",
        "remount" => "remount",
        "mand" | "nomand" => "mand",
        "atime" | "noatime" => "noatime",
        "diratime" | "nodiratime" => "nodiratime",
        "relatime" | "norelatime" => "relatime",
        "strictatime" | "nostrictatime" => "strictatime",
        "bind" | "rbind" => "bind",
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
        | "runbindable" => "propagation",
        _ => return None,
    })
}

/// The key=value tmpfs options Docker takes.
const TMPFS_DATA: [&str; 7] = [
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// The tmpfs mounts of linuxParameters.tmpfs: Docker's defaults (noexec, nosuid, nodev,
/// rprivate), the size (MiB), then the mountOptions, later options replacing earlier ones of
/// their kind.
pub fn tmpfs(def: &ContainerDefinition) -> Result<Vec<Mount>, OptionError> {
    let Some(lp) = &def.linux_parameters else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for t in &lp.tmpfs {
        let err = |option: &str| OptionError::Tmpfs {
            container: def.name.clone(),
            path: t.container_path.clone(),
            option: option.to_string(),
        };
        if !t.container_path.starts_with('/') {
            return Err(err("containerPath must be an absolute path"));
        }
        if t.size <= 0 {
            return Err(err("size must be a positive number of MiB"));
        }
        let all: Vec<String> = ["noexec", "nosuid", "nodev", "rprivate"]
            .iter()
            .map(|s| s.to_string())
            .chain(std::iter::once(format!("size={}m", t.size)))
            .chain(t.mount_options.iter().cloned())
            .collect();
        // From the end, so the last of each kind wins; kept in their order.
        let mut seen: Vec<String> = Vec::new();
        let mut merged: Vec<String> = Vec::new();
        for o in all.iter().rev() {
            let o = o.trim();
            if o == "defaults" {
                continue;
            }
            let key = match flag_group(o) {
                Some(k) => k.to_string(),
                None => match o.split_once('=') {
                    Some((k, _)) if TMPFS_DATA.contains(&k) => format!("{k}="),
                    _ => return Err(err(o)),
                },
            };
            if !seen.contains(&key) {
                seen.push(key);
                merged.insert(0, o.to_string());
            }
        }
        out.push(mount(&t.container_path, "tmpfs", "tmpfs", merged).ok_or_else(|| err("?"))?);
    }
    Ok(out)
}

fn is_mountpoint(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        path.parent().map(std::fs::metadata),
    ) {
        (Ok(m), Some(Ok(p))) => m.dev() != p.dev(),
        _ => false,
    }
}

/// Mounts ipcMode task's /dev/shm at `path` on the host (blocking): a tmpfs of `mib` MiB with
/// Docker's /dev/shm options; nothing when it is mounted already (an agent restart).
pub fn mount_task_shm(path: &Path, mib: u64) -> std::io::Result<()> {
    use nix::mount::MsFlags;
    std::fs::create_dir_all(path)?;
    if is_mountpoint(path) {
        return Ok(());
    }
    let data = format!("mode=1777,size={}k", mib * 1024);
    nix::mount::mount(
        Some("shm"),
        path,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Unmounts what [`mount_task_shm`] mounted (blocking); nothing when it is not mounted.
pub fn unmount_task_shm(path: &Path) -> std::io::Result<()> {
    if !is_mountpoint(path) {
        return Ok(());
    }
    // Detached: a container still holding it open (a stuck process) does not block cleanup.
    nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).map_err(std::io::Error::from)
}

/// The cgroup version of the host, for the memory knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// v1 (or hybrid): memory.memsw.limit_in_bytes and memory.swappiness.
    V1 {
        /// Whether swap accounting is on (memory.memsw.* exist).
        swap_accounting: bool,
    },
    /// v2: memory.swap.max; no per-cgroup swappiness.
    V2,
}

impl CgroupVersion {
    /// This host's.
    pub fn current() -> Self {
        static V: std::sync::OnceLock<CgroupVersion> = std::sync::OnceLock::new();
        *V.get_or_init(|| {
            if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                CgroupVersion::V2
            } else {
                CgroupVersion::V1 {
                    swap_accounting: Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes")
                        .exists(),
                }
            }
        })
    }
}

/// linux.resources.memory's swap (memory + swap, bytes) and swappiness, by ECS's rules:
/// maxSwap omitted → nothing (the host's setting; swappiness is then ignored, as ECS documents);
/// maxSwap 0 → no swap; otherwise memory + maxSwap MiB; swappiness defaults to 60. maxSwap needs
/// the container's memory (Docker's rule for --memory-swap). On cgroup v2 there is no
/// per-cgroup swappiness: a swappiness set there is refused rather than dropped.
pub fn swap(
    def: &ContainerDefinition,
    host: CgroupVersion,
) -> Result<(Option<i64>, Option<u64>), OptionError> {
    let Some(lp) = &def.linux_parameters else {
        return Ok((None, None));
    };
    let Some(max_swap) = lp.max_swap else {
        return Ok((None, None));
    };
    let conflict = |field: &'static str, problem: String| OptionError::Conflict {
        container: def.name.clone(),
        field,
        problem,
    };
    if max_swap < 0 {
        return Err(conflict(
            "maxSwap",
            format!("{max_swap} must not be negative"),
        ));
    }
    let Some(memory) = def.memory.filter(|m| *m > 0) else {
        return Err(conflict(
            "maxSwap",
            "needs the container's memory (the swap limit is memory + maxSwap)".into(),
        ));
    };
    if host
        == (CgroupVersion::V1 {
            swap_accounting: false,
        })
    {
        return Err(conflict(
            "maxSwap",
            "this container instance's kernel has no swap accounting (boot it with swapaccount=1)"
                .into(),
        ));
    }
    let mib = 1024 * 1024;
    let total = (memory as i64 + max_swap as i64) * mib;
    let swappiness = match (lp.swappiness, host) {
        (Some(s), _) if !(0..=100).contains(&s) => {
            return Err(conflict("swappiness", format!("{s} is outside 0-100")))
        }
        (Some(_), CgroupVersion::V2) => return Err(conflict(
            "swappiness",
            "cgroup v2 has no per-container swappiness (this container instance uses cgroup v2)"
                .into(),
        )),
        (None, CgroupVersion::V2) => None,
        (s, _) => Some(s.map_or(DEFAULT_SWAPPINESS, |s| s as u64)),
    };
    Ok((Some(total), swappiness))
}

/// The namespace a sysctl belongs to, by runc's rules; `None`: not namespaced.
fn sysctl_namespace(name: &str) -> Option<&'static str> {
    if name.starts_with("net.") {
        Some("network")
    } else if name.starts_with("kernel.shm")
        || name.starts_with("kernel.msg")
        || name == "kernel.sem"
        || name.starts_with("fs.mqueue.")
    {
        Some("ipc")
    } else if name == "kernel.hostname" || name == "kernel.domainname" {
        Some("uts")
    } else {
        None
    }
}

/// linux.sysctl from systemControls: only namespaced sysctls, each in a namespace of the
/// container's own (or its task's): net.* not with the host's network, kernel.shm*, msg*, sem
/// and fs.mqueue.* not with the host's IPC namespace.
pub fn sysctls(
    def: &ContainerDefinition,
    own_network: bool,
    own_ipc: bool,
    own_uts: bool,
) -> Result<HashMap<String, String>, OptionError> {
    let mut out = HashMap::new();
    for s in &def.system_controls {
        let name = s.namespace.trim();
        let err = |problem: &str| OptionError::Sysctl {
            container: def.name.clone(),
            name: name.to_string(),
            problem: problem.to_string(),
        };
        match sysctl_namespace(name) {
            None => return Err(err("is not namespaced (allowed: net.*, kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*)")),
            Some("network") if !own_network => {
                return Err(err("needs a network namespace of its own; it would change the host's (networkMode host)"))
            }
            Some("ipc") if !own_ipc => {
                return Err(err("needs an IPC namespace of its own; it would change the host's (ipcMode host)"))
            }
            Some("uts") if !own_uts => {
                return Err(err("needs a UTS namespace of its own; it would change the host's (networkMode host)"))
            }
            _ => {}
        }
        out.insert(name.to_string(), s.value.clone());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::spec::{ALL_CAPS, DEFAULT_CAPS};

    fn def(json: &str) -> ContainerDefinition {
        serde_json::from_str(json).unwrap()
    }

    fn names(caps: &[Capability]) -> Vec<String> {
        let mut v: Vec<String> = caps.iter().map(cap_name).collect();
        v.sort();
        v
    }

    #[test]
    fn capabilities_follow_dockers_tweak_rules() {
        let c = |j: &str| capabilities(&def(j), &DEFAULT_CAPS, &ALL_CAPS);
        let d = c(r#"{"name":"a","linuxParameters":{"capabilities":{"drop":["CHOWN","cap_kill"],"add":["NET_ADMIN"]}}}"#).unwrap();
        let n = names(&d);
        assert!(!n.contains(&"CAP_CHOWN".into()) && !n.contains(&"CAP_KILL".into()));
        assert!(n.contains(&"CAP_NET_ADMIN".into()) && n.contains(&"CAP_SETUID".into()));
        assert_eq!(d.len(), DEFAULT_CAPS.len() - 1);
        let all = c(r#"{"name":"a","linuxParameters":{"capabilities":{"add":["ALL"],"drop":["SYS_ADMIN"]}}}"#).unwrap();
        assert_eq!(all.len(), ALL_CAPS.len() - 1);
        assert!(!all.contains(&Capability::SysAdmin));
        let only = c(r#"{"name":"a","linuxParameters":{"capabilities":{"drop":["all"],"add":["NET_BIND_SERVICE"]}}}"#).unwrap();
        assert_eq!(only, [Capability::NetBindService]);
        assert_eq!(c(r#"{"name":"a"}"#).unwrap(), DEFAULT_CAPS);
        let e =
            c(r#"{"name":"a","linuxParameters":{"capabilities":{"add":["FLY"]}}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container a: linuxParameters.capabilities: unknown capability: 'FLY'"
        );
    }

    #[test]
    fn devices_become_oci_devices_and_allow_rules() {
        let (devs, rules) = devices(&def(
            r#"{"name":"a","linuxParameters":{"devices":[{"hostPath":"/dev/null","containerPath":"/dev/mynull","permissions":["read","write"]},{"hostPath":"/dev/zero"}]}}"#,
        ))
        .unwrap();
        assert_eq!(devs.len(), 2);
        assert_eq!(devs[0].path(), Path::new("/dev/mynull"));
        assert_eq!((devs[0].major(), devs[0].minor()), (1, 3));
        assert_eq!(devs[1].path(), Path::new("/dev/zero"));
        let r = serde_json::to_value(&rules).unwrap();
        assert_eq!(
            r[0],
            serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rw"})
        );
        assert_eq!(r[1]["access"], "rwm");
        let e = devices(&def(
            r#"{"name":"a","linuxParameters":{"devices":[{"hostPath":"/dev/berth-no-such"}]}}"#,
        ))
        .unwrap_err();
        assert!(
            e.to_string().contains("/dev/berth-no-such") && e.to_string().contains("No such file"),
            "{e}"
        );
        let e = devices(&def(
            r#"{"name":"a","linuxParameters":{"devices":[{"hostPath":"/etc/hostname"}]}}"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("not a device"), "{e}");
    }

    #[test]
    fn init_wraps_the_command_and_needs_the_binary() {
        let d = def(r#"{"name":"a","linuxParameters":{"initProcessEnabled":true}}"#);
        let bin = std::env::current_exe().unwrap();
        let (m, argv) = init(&d, &bin, vec!["httpd".into(), "-f".into()]).unwrap();
        assert_eq!(argv, [INIT_DESTINATION, "--", "httpd", "-f"]);
        let m = serde_json::to_value(m.unwrap()).unwrap();
        assert_eq!(m["destination"], INIT_DESTINATION);
        assert_eq!(m["source"], bin.to_string_lossy().as_ref());
        assert!(m["options"].as_array().unwrap().contains(&"ro".into()));
        let e = init(&d, Path::new("/nonexistent/tini"), vec!["x".into()]).unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/tini") && e.to_string().contains("--init-path"),
            "{e}"
        );
        let off = def(r#"{"name":"a"}"#);
        assert_eq!(
            init(&off, Path::new("/x"), vec!["x".into()]).unwrap(),
            (None, vec!["x".to_string()])
        );
    }

    #[test]
    fn tmpfs_merges_options_as_docker_does() {
        let m = tmpfs(&def(
            r#"{"name":"a","linuxParameters":{"tmpfs":[{"containerPath":"/scratch","size":16,"mountOptions":["exec","mode=0700","defaults"]}]}}"#,
        ))
        .unwrap();
        let v = serde_json::to_value(&m[0]).unwrap();
        assert_eq!(v["destination"], "/scratch");
        assert_eq!(v["type"], "tmpfs");
        assert_eq!(
            v["options"],
            serde_json::json!([
                "nosuid",
                "nodev",
                "rprivate",
                "size=16m",
                "exec",
                "mode=0700"
            ])
        );
        let e = tmpfs(&def(
            r#"{"name":"a","linuxParameters":{"tmpfs":[{"containerPath":"/s","size":1,"mountOptions":["bogus"]}]}}"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("'bogus'"), "{e}");
    }

    #[test]
    fn the_task_shm_is_mounted_once_and_unmounted() {
        if !nix::unistd::Uid::effective().is_root() {
            return;
        }
        let dir = std::env::temp_dir().join(format!("berth-shm-{}", uuid::Uuid::new_v4().simple()));
        let shm = dir.join("shm");
        mount_task_shm(&shm, 2).unwrap();
        assert!(is_mountpoint(&shm));
        mount_task_shm(&shm, 2).unwrap();
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let line = mounts
            .lines()
            .filter(|l| l.contains(shm.to_str().unwrap()))
            .collect::<Vec<_>>();
        assert_eq!(line.len(), 1, "mounted once: {line:?}");
        assert!(line[0].contains("size=2048k"), "{line:?}");
        unmount_task_shm(&shm).unwrap();
        assert!(!is_mountpoint(&shm));
        unmount_task_shm(&shm).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn shared_memory_size_is_in_mib() {
        assert_eq!(shm_size(&def(r#"{"name":"a"}"#)), "size=65536k");
        assert_eq!(
            shm_size(&def(
                r#"{"name":"a","linuxParameters":{"sharedMemorySize":128}}"#
            )),
            "size=131072k"
        );
    }

    #[test]
    fn swap_follows_ecs_rules() {
        let v1 = CgroupVersion::V1 {
            swap_accounting: true,
        };
        let s = |j: &str, h| swap(&def(j), h);
        assert_eq!(
            s(
                r#"{"name":"a","memory":100,"linuxParameters":{"swappiness":10}}"#,
                v1
            )
            .unwrap(),
            (None, None),
            "no maxSwap: the host's setting, swappiness ignored"
        );
        assert_eq!(
            s(
                r#"{"name":"a","memory":100,"linuxParameters":{"maxSwap":0}}"#,
                v1
            )
            .unwrap(),
            (Some(100 << 20), Some(60))
        );
        assert_eq!(
            s(
                r#"{"name":"a","memory":100,"linuxParameters":{"maxSwap":50,"swappiness":5}}"#,
                v1
            )
            .unwrap(),
            (Some(150 << 20), Some(5))
        );
        assert_eq!(
            s(
                r#"{"name":"a","memory":100,"linuxParameters":{"maxSwap":50}}"#,
                CgroupVersion::V2
            )
            .unwrap(),
            (Some(150 << 20), None)
        );
        for (j, h, needle) in [
            (
                r#"{"name":"a","linuxParameters":{"maxSwap":50}}"#,
                v1,
                "memory",
            ),
            (
                r#"{"name":"a","memory":10,"linuxParameters":{"maxSwap":5,"swappiness":5}}"#,
                CgroupVersion::V2,
                "cgroup v2",
            ),
            (
                r#"{"name":"a","memory":10,"linuxParameters":{"maxSwap":5}}"#,
                CgroupVersion::V1 {
                    swap_accounting: false,
                },
                "swapaccount",
            ),
        ] {
            let e = s(j, h).unwrap_err().to_string();
            assert!(e.contains(needle) && e.contains("container a"), "{e}");
        }
    }

    #[test]
    fn sysctls_must_be_namespaced_and_in_an_own_namespace() {
        let d = def(
            r#"{"name":"a","systemControls":[{"namespace":"net.ipv4.ip_unprivileged_port_start","value":"0"},{"namespace":"kernel.shmmax","value":"1000"}]}"#,
        );
        let s = sysctls(&d, true, true, true).unwrap();
        assert_eq!(s["net.ipv4.ip_unprivileged_port_start"], "0");
        assert_eq!(s["kernel.shmmax"], "1000");
        let e = sysctls(&d, false, true, true).unwrap_err().to_string();
        assert!(
            e.contains("net.ipv4.ip_unprivileged_port_start") && e.contains("host"),
            "{e}"
        );
        let e = sysctls(&d, true, false, true).unwrap_err().to_string();
        assert!(
            e.contains("kernel.shmmax") && e.contains("ipcMode host"),
            "{e}"
        );
        let e = sysctls(
            &def(r#"{"name":"a","systemControls":[{"namespace":"vm.swappiness","value":"1"}]}"#),
            true,
            true,
            true,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("not namespaced"), "{e}");
    }
}
