//! Builds the OCI runtime spec of a container (typed, with the `oci-spec` crate): containerd's
//! defaults, the image config and the ECS container definition merged as Docker and the ECS
//! agent merge them, with Docker's security baseline: its default capabilities, seccomp profile,
//! masked and read-only paths for unprivileged containers; everything for privileged ones, which
//! the agent refuses unless it was started to allow them.

use super::seccomp;
use super::ImageConfig;
use berth_proto::v1::ContainerDefinition;
use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice,
    LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxMemoryBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder, LinuxResourcesBuilder, Mount,
    MountBuilder, PosixRlimit, PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder,
    Spec, SpecBuilder, UserBuilder,
};

pub use oci_spec::OciSpecError;

/// Why a spec cannot be built (shown as CannotCreateContainerError).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// Neither the definition nor the image gives a command.
    #[error("container {0}: no command specified (the image has no Entrypoint or Cmd and the container definition gives none)")]
    NoCommand(String),
    /// The user field is not one this agent can resolve.
    #[error(
        "container {container}: user '{user}' is not supported; give a numeric uid[:gid] or root"
    )]
    User {
        /// The container.
        container: String,
        /// The user given.
        user: String,
    },
    /// A privileged container on an agent that does not allow them.
    #[error("container {0}: privileged containers are not allowed on this container instance (start the agent with --allow-privileged or BERTH_ALLOW_PRIVILEGED=true to allow them)")]
    PrivilegedNotAllowed(String),
    /// A ulimit the agent cannot apply.
    #[error("container {container}: ulimit '{name}': {problem}")]
    Ulimit {
        /// The container.
        container: String,
        /// The ulimit's name.
        name: String,
        /// What is wrong.
        problem: String,
    },
    /// A dockerSecurityOptions entry this agent does not apply.
    #[error("container {container}: dockerSecurityOptions entry '{option}' is not supported (supported: no-new-privileges)")]
    SecurityOption {
        /// The container.
        container: String,
        /// The option.
        option: String,
    },
    /// The embedded seccomp profile cannot be read.
    #[error(transparent)]
    Seccomp(#[from] seccomp::ProfileError),
    /// A spec structure was refused by oci-spec's builder.
    #[error("building the OCI spec: {0}")]
    Build(#[from] OciSpecError),
}

/// The agent's security settings, applied to every container it creates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOptions {
    /// Whether `privileged: true` containers may run (off by default).
    pub allow_privileged: bool,
    /// Maximum processes per container (`pids.max`); None: no limit.
    pub pids_limit: Option<i64>,
    /// Sets no_new_privs on every container, whatever its definition says.
    pub force_no_new_privileges: bool,
    /// RLIMIT_NOFILE (soft and hard) of a container whose definition sets no nofile ulimit.
    pub default_nofile: u64,
    /// The capabilities of a privileged container: every one the agent may hand on.
    pub privileged_caps: Vec<Capability>,
    /// The host's device nodes, created in a privileged container's /dev (as Docker does).
    pub privileged_devices: Vec<LinuxDevice>,
}

/// The default pids limit per container: a fork bomb stops there, while the busiest ordinary
/// services (thread-per-connection servers, JVMs) stay well below it.
pub const DEFAULT_PIDS_LIMIT: i64 = 4096;

impl Default for SecurityOptions {
    fn default() -> Self {
        Self {
            allow_privileged: false,
            pids_limit: Some(DEFAULT_PIDS_LIMIT),
            force_no_new_privileges: false,
            default_nofile: DEFAULT_NOFILE,
            privileged_caps: ALL_CAPS.to_vec(),
            privileged_devices: Vec::new(),
        }
    }
}

/// Where and how a container runs, beyond its definition.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    /// The task's network mode: host, none, bridge or awsvpc.
    pub network_mode: &'a str,
    /// The network namespace the container joins (`/run/netns/…`, made by the task's network);
    /// `None` with host (the host's) and when the runtime should make a fresh one.
    pub netns_path: Option<String>,
    /// The container's /etc/hosts, /etc/hostname and /etc/resolv.conf (bind-mounted
    /// read-write, as Docker does); `None`: with host the host's own are mounted read-only.
    pub etc_files: Option<crate::network::files::EtcPaths>,
    /// The cgroup path (`/berth/<task>/<container>`).
    pub cgroups_path: String,
    /// The container's hostname when it has its own UTS namespace.
    pub hostname: String,
    /// The agent's security settings.
    pub security: &'a SecurityOptions,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Docker's (and containerd's) default capability set.
pub const DEFAULT_CAPS: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Every Linux capability, in the kernel's numbering (index = capability number).
pub const ALL_CAPS: [Capability; 41] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::DacReadSearch,
    Capability::Fowner,
    Capability::Fsetid,
    Capability::Kill,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setpcap,
    Capability::LinuxImmutable,
    Capability::NetBindService,
    Capability::NetBroadcast,
    Capability::NetAdmin,
    Capability::NetRaw,
    Capability::IpcLock,
    Capability::IpcOwner,
    Capability::SysModule,
    Capability::SysRawio,
    Capability::SysChroot,
    Capability::SysPtrace,
    Capability::SysPacct,
    Capability::SysAdmin,
    Capability::SysBoot,
    Capability::SysNice,
    Capability::SysResource,
    Capability::SysTime,
    Capability::SysTtyConfig,
    Capability::Mknod,
    Capability::Lease,
    Capability::AuditWrite,
    Capability::AuditControl,
    Capability::Setfcap,
    Capability::MacOverride,
    Capability::MacAdmin,
    Capability::Syslog,
    Capability::WakeAlarm,
    Capability::BlockSuspend,
    Capability::AuditRead,
    Capability::Perfmon,
    Capability::Bpf,
    Capability::CheckpointRestore,
];

/// RLIMIT_NOFILE when the definition sets none: what Docker's containers get from dockerd and
/// containerd's systemd units (LimitNOFILE=1048576, or infinity capped at fs.nr_open).
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// The capabilities in the agent's own bounding set: what a privileged container can be given
/// here (as containerd's WithAllCurrentCapabilities; runc cannot grant one outside its own
/// bounding set, so asking for all 41 inside a restricted sandbox would fail every start).
pub fn bounding_caps() -> Vec<Capability> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        });
    match bounding {
        Some(bits) => ALL_CAPS
            .iter()
            .enumerate()
            .filter(|(n, _)| bits & (1u64 << n) != 0)
            .map(|(_, c)| *c)
            .collect(),
        None => ALL_CAPS.to_vec(),
    }
}

/// The device nodes under `dir` (the host's /dev), as Docker gives them to a privileged
/// container: character and block devices, in subdirectories too, except the container's own
/// pts, shm, mqueue and fd, and the console. Unreadable entries are skipped.
pub fn host_devices(dir: &std::path::Path) -> Vec<LinuxDevice> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const SKIP: [&str; 7] = ["pts", "shm", "mqueue", "fd", ".lxc", ".lxd-mounts", ".udev"];
    let mut out = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            // symlink_metadata: links (/dev/stdin, /dev/core) are not devices of their own.
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                if !SKIP.iter().any(|s| e.file_name() == *s) {
                    dirs.push(path);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                LinuxDeviceType::C
            } else if ft.is_block_device() {
                LinuxDeviceType::B
            } else {
                continue;
            };
            if path == dir.join("console") {
                continue;
            }
            let rdev = meta.rdev();
            if let Ok(dev) = LinuxDeviceBuilder::default()
                .path(path)
                .typ(typ)
                .major(nix::sys::stat::major(rdev) as i64)
                .minor(nix::sys::stat::minor(rdev) as i64)
                .file_mode(meta.mode() & 0o7777)
                .uid(meta.uid())
                .gid(meta.gid())
                .build()
            {
                out.push(dev);
            }
        }
    }
    out.sort_by(|a, b| a.path().cmp(b.path()));
    out
}

/// The default RLIMIT_NOFILE this host can give: [`DEFAULT_NOFILE`], or the agent's own hard
/// limit when that is lower and the agent lacks CAP_SYS_RESOURCE (then no process here, runc
/// included, may raise a hard limit, and every container would fail to start).
pub fn grantable_nofile() -> u64 {
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 24) != 0);
    if has_sys_resource {
        return DEFAULT_NOFILE;
    }
    let own_hard = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Max open files"))
                .and_then(|v| v.split_whitespace().nth(1).and_then(|h| h.parse().ok()))
        });
    own_hard.map_or(DEFAULT_NOFILE, |h: u64| h.min(DEFAULT_NOFILE))
}

/// Paths masked in unprivileged containers (Docker's list).
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];

/// Paths read-only in unprivileged containers (Docker's list).
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn parse_user(container: &str, user: &str) -> Result<(u32, u32), SpecError> {
    let err = || SpecError::User {
        container: container.to_string(),
        user: user.to_string(),
    };
    if user.is_empty() || user == "root" || user == "0" {
        return Ok((0, 0));
    }
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid: u32 = if u == "root" {
        0
    } else {
        u.parse().map_err(|_| err())?
    };
    let gid: u32 = match g {
        Some("root") => 0,
        Some(g) => g.parse().map_err(|_| err())?,
        None => uid,
    };
    Ok((uid, gid))
}

/// The command: entryPoint overrides the image's Entrypoint and then drops its Cmd (Docker's
/// rule); command overrides Cmd.
pub fn args(def: &ContainerDefinition, image: &ImageConfig) -> Vec<String> {
    let entry = if def.entry_point.is_empty() {
        image.entrypoint.clone()
    } else {
        def.entry_point.clone()
    };
    let cmd = if !def.command.is_empty() {
        def.command.clone()
    } else if def.entry_point.is_empty() {
        image.cmd.clone()
    } else {
        Vec::new()
    };
    entry.into_iter().chain(cmd).collect()
}

/// The environment: the image's, then the definition's (which wins for the same name).
pub fn env(def: &ContainerDefinition, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = image.env.clone();
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    let mut set = |name: &str, value: &str| {
        let prefix = format!("{name}=");
        out.retain(|e| !e.starts_with(&prefix));
        out.push(format!("{name}={value}"));
    };
    set("HOSTNAME", hostname);
    for kv in &def.environment {
        set(&kv.name, &kv.value);
    }
    out
}

/// The CPU shares for an ECS cpu value: at least 2 (0 would mean 1024 to the runtime).
pub fn cpu_shares(cpu: Option<i32>) -> u64 {
    cpu.unwrap_or(0).max(2) as u64
}

/// The rlimits: the agent's default RLIMIT_NOFILE, then the definition's ulimits (which win).
fn rlimits(def: &ContainerDefinition, default_nofile: u64) -> Result<Vec<PosixRlimit>, SpecError> {
    let mut out = vec![PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(default_nofile)
        .hard(default_nofile)
        .build()?];
    for u in &def.ulimits {
        let err = |problem: &str| SpecError::Ulimit {
            container: def.name.clone(),
            name: u.name.clone(),
            problem: problem.to_string(),
        };
        let typ: PosixRlimitType = format!("RLIMIT_{}", u.name.to_ascii_uppercase())
            .parse()
            .map_err(|_| err("unknown name (Docker's names: core, cpu, data, fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio, rttime, sigpending, stack)"))?;
        if u.soft_limit < 0 || u.hard_limit < 0 {
            return Err(err("softLimit and hardLimit must not be negative"));
        }
        if u.soft_limit > u.hard_limit {
            return Err(err("softLimit is above hardLimit"));
        }
        out.retain(|r| r.typ() != typ);
        out.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(u.soft_limit as u64)
                .hard(u.hard_limit as u64)
                .build()?,
        );
    }
    Ok(out)
}

/// Whether the definition asks for no_new_privs (`dockerSecurityOptions`); other options are
/// refused rather than silently ignored.
fn no_new_privileges(def: &ContainerDefinition) -> Result<bool, SpecError> {
    let mut on = false;
    for option in &def.docker_security_options {
        match option.trim() {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => on = true,
            "no-new-privileges:false" | "no-new-privileges=false" => on = false,
            _ => {
                return Err(SpecError::SecurityOption {
                    container: def.name.clone(),
                    option: option.clone(),
                })
            }
        }
    }
    Ok(on)
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, SpecError> {
    Ok(MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| o.to_string()).collect::<Vec<_>>())
        .build()?)
}

fn mounts(
    host_network: bool,
    privileged: bool,
    etc: Option<&crate::network::files::EtcPaths>,
) -> Result<Vec<Mount>, SpecError> {
    // Docker mounts sysfs and the cgroup tree read-write only for privileged containers.
    let sys = if privileged { "rw" } else { "ro" };
    let mut out = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &[sys, "nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/run",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
    ];
    if let Some(etc) = etc {
        let mut files = vec![
            ("/etc/hosts", &etc.hosts),
            ("/etc/resolv.conf", &etc.resolv_conf),
        ];
        if let Some(h) = &etc.hostname {
            files.push(("/etc/hostname", h));
        }
        for (dest, source) in files {
            let source = source.to_string_lossy();
            out.push(mount(dest, "bind", &source, &["rbind", "rw"])?);
        }
    } else if host_network {
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            if std::path::Path::new(f).exists() {
                out.push(mount(f, "bind", f, &["rbind", "ro"])?);
            }
        }
    }
    Ok(out)
}

/// Builds the spec.
pub fn build(
    def: &ContainerDefinition,
    image: &ImageConfig,
    ctx: &SpecContext<'_>,
) -> Result<Spec, SpecError> {
    let privileged = def.privileged == Some(true);
    if privileged && !ctx.security.allow_privileged {
        return Err(SpecError::PrivilegedNotAllowed(def.name.clone()));
    }
    let args = args(def, image);
    if args.is_empty() {
        return Err(SpecError::NoCommand(def.name.clone()));
    }
    let user = def.user.clone().unwrap_or_else(|| image.user.clone());
    let (uid, gid) = parse_user(&def.name, &user)?;
    let cwd = def
        .working_directory
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let host_network = ctx.network_mode == "host";
    let hostname = if host_network {
        nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
    } else {
        def.hostname.clone().unwrap_or_else(|| ctx.hostname.clone())
    };

    let caps: Capabilities = if privileged {
        ctx.security.privileged_caps.iter().copied().collect()
    } else {
        DEFAULT_CAPS.into_iter().collect()
    };
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .build()?;
    // The builder starts from oci-spec's defaults: no inheritable or ambient capabilities
    // (inheritable ones would survive an execve of a file with inheritable file caps,
    // CVE-2022-24769).
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let process = ProcessBuilder::default()
        .terminal(false)
        .user(UserBuilder::default().uid(uid).gid(gid).build()?)
        .args(args)
        .env(env(def, image, &hostname))
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(rlimits(def, ctx.security.default_nofile)?)
        .no_new_privileges(ctx.security.force_no_new_privileges || no_new_privileges(def)?)
        .build()?;

    let mut namespaces = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Mount,
    ];
    if !host_network {
        namespaces.push(LinuxNamespaceType::Uts);
        namespaces.push(LinuxNamespaceType::Network);
    }
    let namespaces = namespaces
        .into_iter()
        .map(|t| match (&ctx.netns_path, t) {
            (Some(path), LinuxNamespaceType::Network) => LinuxNamespaceBuilder::default()
                .typ(t)
                .path(path.clone())
                .build(),
            _ => LinuxNamespaceBuilder::default().typ(t).build(),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut memory = LinuxMemoryBuilder::default();
    if let Some(m) = def.memory {
        memory = memory.limit(m as i64 * 1024 * 1024);
    }
    if let Some(r) = def.memory_reservation {
        memory = memory.reservation(r as i64 * 1024 * 1024);
    }
    // Privileged containers may use every device (Docker's rule); others only runc's defaults
    // (null, zero, full, random, urandom, tty, console, ptmx, pts), which runc always adds.
    let devices = LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?;
    let mut resources = LinuxResourcesBuilder::default()
        .devices(vec![devices])
        .cpu(
            LinuxCpuBuilder::default()
                .shares(cpu_shares(def.cpu))
                .build()?,
        )
        .memory(memory.build()?);
    if let Some(limit) = ctx.security.pids_limit.filter(|l| *l > 0) {
        resources = resources.pids(LinuxPidsBuilder::default().limit(limit).build()?);
    }

    let mut linux = LinuxBuilder::default()
        .resources(resources.build()?)
        .cgroups_path(ctx.cgroups_path.clone())
        .namespaces(namespaces)
        .build()?;
    if privileged {
        // As Docker: the host's devices, no seccomp filter, nothing masked or read-only.
        if !ctx.security.privileged_devices.is_empty() {
            linux.set_devices(Some(ctx.security.privileged_devices.clone()));
        }
        linux.set_seccomp(None);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        linux.set_seccomp(Some(seccomp::default_filter(
            &caps,
            &seccomp::Host::current(),
        )?));
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
    }

    let mut spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(def.readonly_root_filesystem == Some(true))
                .build()?,
        )
        .mounts(mounts(host_network, privileged, ctx.etc_files.as_ref())?)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    // With the host's network the container shares its UTS namespace too: no hostname to set.
    spec.set_hostname((!host_network).then_some(hostname));
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/entry".into()],
            cmd: vec!["serve".into()],
            env: vec!["PATH=/bin".into(), "A=image".into()],
            ..Default::default()
        }
    }

    fn def(json: &str) -> ContainerDefinition {
        serde_json::from_str(json).unwrap()
    }

    fn ctx(security: &SecurityOptions) -> SpecContext<'_> {
        SpecContext {
            network_mode: "none",
            netns_path: None,
            etc_files: None,
            cgroups_path: "/berth/t/a".into(),
            hostname: "h".into(),
            security,
        }
    }

    /// The spec as containerd receives it (JSON).
    fn json(spec: &Spec) -> Value {
        serde_json::to_value(spec).unwrap()
    }

    fn caps(v: &Value, set: &str) -> Vec<String> {
        let mut c: Vec<String> =
            serde_json::from_value(v["process"]["capabilities"][set].clone()).unwrap();
        c.sort();
        c
    }

    #[test]
    fn command_and_entrypoint_follow_dockers_rules() {
        assert_eq!(args(&def(r#"{"name":"a"}"#), &image()), ["/entry", "serve"]);
        assert_eq!(
            args(&def(r#"{"name":"a","command":["x"]}"#), &image()),
            ["/entry", "x"]
        );
        assert_eq!(
            args(&def(r#"{"name":"a","entryPoint":["/sh"]}"#), &image()),
            ["/sh"]
        );
    }

    #[test]
    fn environment_and_limits_merge() {
        let sec = SecurityOptions::default();
        let s = json(
            &build(
                &def(r#"{"name":"a","cpu":1,"memory":64,"memoryReservation":32,"environment":[{"name":"A","value":"def"}]}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(env.contains(&"A=def".to_string()) && !env.contains(&"A=image".to_string()));
        assert_eq!(s["ociVersion"], "1.0.2-dev");
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 2);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(
            s["linux"]["resources"]["memory"]["reservation"],
            32 * 1024 * 1024
        );
        assert_eq!(s["linux"]["cgroupsPath"], "/berth/t/a");
        assert_eq!(s["hostname"], "h");
        assert_eq!(s["root"]["path"], "rootfs");
    }

    #[test]
    fn bad_user_and_no_command_are_errors() {
        let sec = SecurityOptions::default();
        assert!(matches!(
            build(
                &def(r#"{"name":"a","user":"nobody"}"#),
                &image(),
                &ctx(&sec)
            ),
            Err(SpecError::User { .. })
        ));
        assert!(matches!(
            build(&def(r#"{"name":"a"}"#), &ImageConfig::default(), &ctx(&sec)),
            Err(SpecError::NoCommand(n)) if n == "a"
        ));
        assert_eq!(parse_user("a", "1000:50").unwrap(), (1000, 50));
    }

    #[test]
    fn unprivileged_gets_dockers_caps_seccomp_and_masked_paths() {
        let sec = SecurityOptions::default();
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&sec)).unwrap());
        let mut want: Vec<String> = DEFAULT_CAPS
            .iter()
            .map(|c| {
                serde_json::to_value(c)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        want.sort();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(caps(&s, set), want, "{set}");
        }
        assert!(s["process"]["capabilities"]["inheritable"].is_null());
        assert!(s["process"]["capabilities"]["ambient"].is_null());
        let seccomp = &s["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        assert_eq!(seccomp["defaultErrnoRet"], 1);
        assert!(seccomp["syscalls"].as_array().unwrap().len() > 10);
        assert_eq!(s["linux"]["maskedPaths"].as_array().unwrap().len(), 10);
        assert_eq!(s["linux"]["readonlyPaths"].as_array().unwrap().len(), 5);
        assert_eq!(
            s["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": false, "access": "rwm"}])
        );
        assert_eq!(s["process"]["noNewPrivileges"], false, "Docker's default");
        assert!(s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == "/sys" || m["destination"] == "/sys/fs/cgroup")
            .all(|m| m["options"].as_array().unwrap().contains(&"ro".into())));
    }

    #[test]
    fn privileged_is_refused_unless_the_agent_allows_it() {
        let d = def(r#"{"name":"admin","privileged":true}"#);
        let e = build(&d, &image(), &ctx(&SecurityOptions::default())).unwrap_err();
        assert!(matches!(e, SpecError::PrivilegedNotAllowed(_)));
        let msg = e.to_string();
        assert!(
            msg.contains("admin") && msg.contains("--allow-privileged"),
            "{msg}"
        );
    }

    #[test]
    fn privileged_when_allowed_gets_every_cap_every_device_and_no_seccomp() {
        let sec = SecurityOptions {
            allow_privileged: true,
            ..Default::default()
        };
        let s = json(
            &build(
                &def(r#"{"name":"admin","privileged":true}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        for set in ["bounding", "effective", "permitted"] {
            let c = caps(&s, set);
            assert_eq!(c.len(), 41, "{set}");
            assert!(c.contains(&"CAP_SYS_ADMIN".to_string()));
            assert!(c.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        }
        assert!(s["linux"]["seccomp"].is_null());
        assert!(s["linux"]["maskedPaths"].is_null());
        assert!(s["linux"]["readonlyPaths"].is_null());
        assert_eq!(
            s["linux"]["resources"]["devices"],
            serde_json::json!([{"allow": true, "access": "rwm"}])
        );
        assert_eq!(s["process"]["noNewPrivileges"], false);
        // Where the agent's own bounding set lacks some, those are left out.
        let restricted = SecurityOptions {
            allow_privileged: true,
            privileged_caps: ALL_CAPS
                .into_iter()
                .filter(|c| *c != Capability::SysResource)
                .collect(),
            ..Default::default()
        };
        let r = json(
            &build(
                &def(r#"{"name":"admin","privileged":true}"#),
                &image(),
                &ctx(&restricted),
            )
            .unwrap(),
        );
        assert_eq!(caps(&r, "effective").len(), 40);
        assert!(!caps(&r, "bounding").contains(&"CAP_SYS_RESOURCE".to_string()));
        assert_eq!(
            s["linux"]["resources"]["pids"]["limit"], DEFAULT_PIDS_LIMIT,
            "the pids limit holds for privileged containers too"
        );
    }

    #[test]
    fn nofile_comes_from_the_ulimits_or_dockers_default() {
        let sec = SecurityOptions::default();
        let nofile = |json_def: &str| {
            let s = json(&build(&def(json_def), &image(), &ctx(&sec)).unwrap());
            let r: Vec<Value> = serde_json::from_value(s["process"]["rlimits"].clone()).unwrap();
            r.into_iter()
                .filter(|r| r["type"] == "RLIMIT_NOFILE")
                .map(|r| (r["soft"].as_u64().unwrap(), r["hard"].as_u64().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            nofile(r#"{"name":"a"}"#),
            [(DEFAULT_NOFILE, DEFAULT_NOFILE)]
        );
        let lower = SecurityOptions {
            default_nofile: 20_000,
            ..Default::default()
        };
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&lower)).unwrap());
        assert_eq!(s["process"]["rlimits"][0]["hard"], 20_000);
        assert_eq!(
            nofile(
                r#"{"name":"a","ulimits":[{"name":"nofile","softLimit":4096,"hardLimit":8192}]}"#
            ),
            [(4096, 8192)]
        );
        let bad = |json_def: &str| build(&def(json_def), &image(), &ctx(&sec)).unwrap_err();
        let e = bad(r#"{"name":"a","ulimits":[{"name":"nofile","softLimit":10,"hardLimit":5}]}"#);
        assert!(matches!(e, SpecError::Ulimit { .. }), "{e}");
        assert!(e.to_string().contains("nofile"), "{e}");
        let e = bad(r#"{"name":"a","ulimits":[{"name":"files","softLimit":1,"hardLimit":1}]}"#);
        assert!(e.to_string().contains("'files'"), "{e}");
    }

    #[test]
    fn all_caps_are_in_kernel_order() {
        for (n, c) in ALL_CAPS.iter().enumerate() {
            let name = serde_json::to_value(c).unwrap();
            assert!(name.as_str().unwrap().starts_with("CAP_"), "{name}");
            assert_eq!(
                ALL_CAPS.iter().position(|x| x == c),
                Some(n),
                "{name} twice"
            );
        }
        assert_eq!(ALL_CAPS[0], Capability::Chown);
        assert_eq!(ALL_CAPS[21], Capability::SysAdmin);
        assert_eq!(ALL_CAPS[24], Capability::SysResource);
        assert_eq!(ALL_CAPS[40], Capability::CheckpointRestore);
        assert!(!bounding_caps().is_empty());
    }

    #[test]
    fn host_devices_are_the_device_nodes_of_dev() {
        let devs = host_devices(std::path::Path::new("/dev"));
        let null = devs
            .iter()
            .find(|d| d.path() == std::path::Path::new("/dev/null"))
            .expect("/dev/null is a host device");
        assert_eq!(null.typ(), LinuxDeviceType::C);
        assert_eq!((null.major(), null.minor()), (1, 3));
        assert!(devs.iter().all(|d| !d.path().starts_with("/dev/pts")
            && d.path() != std::path::Path::new("/dev/console")));
        let sec = SecurityOptions {
            allow_privileged: true,
            privileged_devices: devs.clone(),
            ..Default::default()
        };
        let s = json(
            &build(
                &def(r#"{"name":"a","privileged":true}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        assert_eq!(s["linux"]["devices"].as_array().unwrap().len(), devs.len());
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&sec)).unwrap());
        assert!(
            s["linux"]["devices"].is_null(),
            "unprivileged: runc's defaults only"
        );
    }

    #[test]
    fn pids_limit_is_the_agents_setting() {
        let s = json(
            &build(
                &def(r#"{"name":"a"}"#),
                &image(),
                &ctx(&SecurityOptions::default()),
            )
            .unwrap(),
        );
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 4096);
        let unlimited = SecurityOptions {
            pids_limit: None,
            ..Default::default()
        };
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&unlimited)).unwrap());
        assert!(s["linux"]["resources"]["pids"].is_null());
    }

    #[test]
    fn no_new_privileges_from_the_definition_or_forced_by_the_agent() {
        let sec = SecurityOptions::default();
        let nnp = |d: &str, sec: &SecurityOptions| {
            json(&build(&def(d), &image(), &ctx(sec)).unwrap())["process"]["noNewPrivileges"]
                .clone()
        };
        assert_eq!(nnp(r#"{"name":"a"}"#, &sec), false);
        assert_eq!(
            nnp(
                r#"{"name":"a","dockerSecurityOptions":["no-new-privileges"]}"#,
                &sec
            ),
            true
        );
        let forced = SecurityOptions {
            force_no_new_privileges: true,
            ..Default::default()
        };
        assert_eq!(nnp(r#"{"name":"a"}"#, &forced), true);
        let e = build(
            &def(r#"{"name":"a","dockerSecurityOptions":["apparmor:unconfined"]}"#),
            &image(),
            &ctx(&sec),
        )
        .unwrap_err();
        assert!(e.to_string().contains("apparmor:unconfined"), "{e}");
    }

    #[test]
    fn a_task_network_namespace_is_joined_and_its_etc_files_mounted_rw() {
        let sec = SecurityOptions::default();
        let etc = crate::network::files::EtcPaths {
            hosts: "/d/tasks/t/etc/a/hosts".into(),
            hostname: Some("/d/tasks/t/etc/a/hostname".into()),
            resolv_conf: "/d/tasks/t/etc/a/resolv.conf".into(),
        };
        let c = SpecContext {
            network_mode: "awsvpc",
            netns_path: Some("/run/netns/berth-t".into()),
            etc_files: Some(etc),
            ..ctx(&sec)
        };
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &c).unwrap());
        let net: Vec<&Value> = s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] == "network")
            .collect();
        assert_eq!(net.len(), 1);
        assert_eq!(net[0]["path"], "/run/netns/berth-t");
        let mounts = s["mounts"].as_array().unwrap();
        for (dest, src) in [
            ("/etc/hosts", "/d/tasks/t/etc/a/hosts"),
            ("/etc/hostname", "/d/tasks/t/etc/a/hostname"),
            ("/etc/resolv.conf", "/d/tasks/t/etc/a/resolv.conf"),
        ] {
            let m = mounts
                .iter()
                .find(|m| m["destination"] == dest)
                .unwrap_or_else(|| panic!("{dest} not mounted"));
            assert_eq!(m["source"], src);
            assert!(m["options"].as_array().unwrap().contains(&"rw".into()));
        }
        // Host: no network namespace of its own, the host's files.
        let h = SpecContext {
            network_mode: "host",
            ..ctx(&sec)
        };
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &h).unwrap());
        assert!(!s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["type"] == "network"));
    }
}
