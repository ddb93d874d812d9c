//! Builds the OCI runtime spec of a container (typed, with the `oci-spec` crate): containerd's
//! defaults, the image config and the ECS container definition merged as Docker and the ECS
//! agent merge them, with Docker's security baseline: its default capabilities, seccomp profile,
//! masked and read-only paths for unprivileged containers; everything for privileged ones, which
//! the agent refuses unless it was started to allow them.

use super::options::{self, OptionError};
use super::seccomp;
use super::user::{self, ImageUsers, UserError};
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
    /// The user cannot be resolved from the image's /etc/passwd and /etc/group.
    #[error("container {container}: {source}")]
    User {
        /// The container.
        container: String,
        /// Why (Docker's words).
        #[source]
        source: UserError,
    },
    /// A linuxParameters or systemControls value that cannot be applied.
    #[error(transparent)]
    Option(#[from] OptionError),
    /// Options that contradict each other or the task's modes.
    #[error("container {container}: {problem}")]
    Conflict {
        /// The container.
        container: String,
        /// What contradicts what.
        problem: String,
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
    /// The init binary of initProcessEnabled (the agent's `--init-path`).
    pub init_path: std::path::PathBuf,
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
            init_path: options::DEFAULT_INIT_PATH.into(),
        }
    }
}

/// How a container gets its PID or IPC namespace (the task definition's pidMode, ipcMode).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    /// One of its own (the default; pidMode/ipcMode task for the task's first container).
    #[default]
    Own,
    /// The host's (mode host): no namespace of its own; with IPC, the host's /dev/shm.
    Host,
    /// The one of the task container whose init has this host PID (mode task, later
    /// containers); with IPC, that container's /dev/shm.
    Join(u32),
    /// IPC only (ipcMode none): one of its own, and no /dev/shm.
    Private,
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
    /// The PID namespace (pidMode).
    pub pid: Share,
    /// The IPC namespace (ipcMode).
    pub ipc: Share,
    /// The image's /etc/passwd and /etc/group, read when the user is not root
    /// ([`user::needs_files`]); `None`: not read (numeric ids only).
    pub users: Option<ImageUsers>,
    /// ipcMode task: the task's /dev/shm (a tmpfs the agent mounted on the host), bound into
    /// each of its containers as Docker binds a shareable container's.
    pub task_shm: Option<std::path::PathBuf>,
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
    let exec_user = user::resolve(&user, ctx.users.as_ref().unwrap_or(&ImageUsers::default()))
        .map_err(|source| SpecError::User {
            container: def.name.clone(),
            source,
        })?;
    let (init_mount, args) = options::init(def, &ctx.security.init_path, args)?;
    let cwd = def
        .working_directory
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(image.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    let host_network = ctx.network_mode == "host";
    // disableNetworking: a network namespace of its own with only loopback, in every mode.
    let no_network = def.disable_networking == Some(true);
    let own_netns = !host_network || no_network;
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
        options::capabilities(def, &DEFAULT_CAPS, &ctx.security.privileged_caps)?
            .into_iter()
            .collect()
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
    let mut env = env(def, image, &hostname);
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        // Docker's: the user's home from the image's passwd, or /.
        env.push(format!("HOME={}", exec_user.home));
    }
    let mut process_user = UserBuilder::default()
        .uid(exec_user.uid)
        .gid(exec_user.gid)
        .build()?;
    if !exec_user.additional_gids.is_empty() {
        process_user.set_additional_gids(Some(exec_user.additional_gids.clone()));
    }
    let process = ProcessBuilder::default()
        .terminal(def.pseudo_terminal == Some(true))
        .user(process_user)
        .args(args)
        .env(env)
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(rlimits(def, ctx.security.default_nofile)?)
        .no_new_privileges(ctx.security.force_no_new_privileges || no_new_privileges(def)?)
        .build()?;

    let join =
        |typ: LinuxNamespaceType, share: Share| -> Option<(LinuxNamespaceType, Option<String>)> {
            let ns = if typ == LinuxNamespaceType::Pid {
                "pid"
            } else {
                "ipc"
            };
            match share {
                Share::Host => None,
                Share::Join(pid) => Some((typ, Some(format!("/proc/{pid}/ns/{ns}")))),
                Share::Own | Share::Private => Some((typ, None)),
            }
        };
    let mut namespaces: Vec<(LinuxNamespaceType, Option<String>)> = Vec::new();
    namespaces.extend(join(LinuxNamespaceType::Pid, ctx.pid));
    namespaces.extend(join(LinuxNamespaceType::Ipc, ctx.ipc));
    namespaces.push((LinuxNamespaceType::Mount, None));
    if !host_network {
        namespaces.push((LinuxNamespaceType::Uts, None));
    }
    if own_netns {
        let path = ctx.netns_path.clone().filter(|_| !no_network);
        namespaces.push((LinuxNamespaceType::Network, path));
    }
    let namespaces = namespaces
        .into_iter()
        .map(|(t, path)| match path {
            Some(path) => LinuxNamespaceBuilder::default().typ(t).path(path).build(),
            None => LinuxNamespaceBuilder::default().typ(t).build(),
        })
        .collect::<Result<Vec<_>, _>>()?;

    let mut memory = LinuxMemoryBuilder::default();
    if let Some(m) = def.memory {
        memory = memory.limit(m as i64 * 1024 * 1024);
    }
    if let Some(r) = def.memory_reservation {
        memory = memory.reservation(r as i64 * 1024 * 1024);
    }
    let (swap, swappiness) = options::swap(def, options::CgroupVersion::current())?;
    if let Some(s) = swap {
        memory = memory.swap(s);
    }
    if let Some(s) = swappiness {
        memory = memory.swappiness(s);
    }
    // Privileged containers may use every device (Docker's rule); others only runc's defaults
    // (null, zero, full, random, urandom, tty, console, ptmx, pts), which runc always adds,
    // and their linuxParameters.devices.
    let (extra_devices, device_rules) = options::devices(def)?;
    let mut devices = vec![LinuxDeviceCgroupBuilder::default()
        .allow(privileged)
        .access("rwm")
        .build()?];
    devices.extend(device_rules);
    let mut resources = LinuxResourcesBuilder::default()
        .devices(devices)
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
    let sysctl = options::sysctls(def, own_netns, ctx.ipc != Share::Host, !host_network)?;
    linux.set_sysctl((!sysctl.is_empty()).then_some(sysctl));
    if privileged {
        // As Docker: the host's devices, no seccomp filter, nothing masked or read-only.
        let mut all = ctx.security.privileged_devices.clone();
        all.extend(extra_devices);
        if !all.is_empty() {
            linux.set_devices(Some(all));
        }
        linux.set_seccomp(None);
        linux.set_masked_paths(None);
        linux.set_readonly_paths(None);
    } else {
        if !extra_devices.is_empty() {
            linux.set_devices(Some(extra_devices));
        }
        linux.set_seccomp(Some(seccomp::default_filter(
            &caps,
            &seccomp::Host::current(),
        )?));
        linux.set_masked_paths(Some(MASKED_PATHS.iter().map(|p| p.to_string()).collect()));
        linux.set_readonly_paths(Some(READONLY_PATHS.iter().map(|p| p.to_string()).collect()));
    }

    let mut all_mounts = mounts(
        host_network && !no_network,
        privileged,
        ctx.etc_files.as_ref(),
    )?;
    shm_mount(def, ctx.ipc, ctx.task_shm.as_deref(), &mut all_mounts)?;
    all_mounts.extend(options::tmpfs(def)?);
    all_mounts.extend(init_mount);
    let mut spec = SpecBuilder::default()
        .version("1.0.2-dev")
        .process(process)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .readonly(def.readonly_root_filesystem == Some(true))
                .build()?,
        )
        .mounts(all_mounts)
        .linux(linux)
        .build()?;
    spec.set_annotations(None);
    // With the host's network the container shares its UTS namespace too: no hostname to set.
    spec.set_hostname((!host_network).then_some(hostname));
    Ok(spec)
}

/// /dev/shm by the IPC mode: its own tmpfs of sharedMemorySize (Docker's 64 MiB by default);
/// the host's or the task's /dev/shm bound; none with ipcMode none.
fn shm_mount(
    def: &ContainerDefinition,
    ipc: Share,
    task_shm: Option<&std::path::Path>,
    mounts: &mut Vec<Mount>,
) -> Result<(), SpecError> {
    let sized = def
        .linux_parameters
        .as_ref()
        .and_then(|l| l.shared_memory_size)
        .is_some();
    let conflict = |problem: &str| SpecError::Conflict {
        container: def.name.clone(),
        problem: problem.to_string(),
    };
    let replacement = match ipc {
        // ipcMode task: the task's /dev/shm, sized by the largest sharedMemorySize of the task.
        Share::Own | Share::Join(_) if task_shm.is_some() => Some(mount(
            "/dev/shm",
            "bind",
            &task_shm
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default(),
            &["rbind", "rw"],
        )?),
        Share::Own => Some(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &options::shm_size(def)],
        )?),
        Share::Private if sized => {
            return Err(conflict(
                "linuxParameters.sharedMemorySize: ipcMode none gives the container no /dev/shm to size",
            ))
        }
        Share::Private => None,
        Share::Host if sized => {
            return Err(conflict(
                "linuxParameters.sharedMemorySize: with ipcMode host the container uses the host's /dev/shm",
            ))
        }
        Share::Host => Some(mount("/dev/shm", "bind", "/dev/shm", &["rbind", "rw"])?),
        // Joined without a task /dev/shm: one of its own.
        Share::Join(_) => Some(mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &options::shm_size(def)],
        )?),
    };
    let at = mounts
        .iter()
        .position(|m| m.destination() == std::path::Path::new("/dev/shm"));
    match (at, replacement) {
        (Some(i), Some(m)) => mounts[i] = m,
        (Some(i), None) => {
            mounts.remove(i);
        }
        (None, Some(m)) => mounts.push(m),
        (None, None) => {}
    }
    Ok(())
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
            pid: Share::Own,
            ipc: Share::Own,
            users: None,
            task_shm: None,
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
        let e = build(
            &def(r#"{"name":"a","user":"nobody"}"#),
            &image(),
            &ctx(&sec),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "container a: unable to find user nobody: no matching entries in passwd file"
        );
        assert!(matches!(
            build(&def(r#"{"name":"a"}"#), &ImageConfig::default(), &ctx(&sec)),
            Err(SpecError::NoCommand(n)) if n == "a"
        ));
        let s = json(
            &build(
                &def(r#"{"name":"a","user":"1000:50"}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        assert_eq!(s["process"]["user"]["uid"], 1000);
        assert_eq!(s["process"]["user"]["gid"], 50);
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

    fn mount_at<'v>(s: &'v Value, dest: &str) -> Option<&'v Value> {
        s["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == dest)
    }

    fn ns(s: &Value, typ: &str) -> Option<Value> {
        s["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["type"] == typ)
            .cloned()
    }

    #[test]
    fn a_user_name_resolves_from_the_images_files_with_groups_and_home() {
        let sec = SecurityOptions::default();
        let users = ImageUsers {
            passwd: Some("root:x:0:0::/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n".into()),
            group: Some("app:x:1000:\nstaff:x:50:app\n".into()),
        };
        let c = SpecContext {
            users: Some(users),
            ..ctx(&sec)
        };
        let s = json(&build(&def(r#"{"name":"a","user":"app"}"#), &image(), &c).unwrap());
        let u = &s["process"]["user"];
        assert_eq!(
            (u["uid"].as_u64(), u["gid"].as_u64()),
            (Some(1000), Some(1000))
        );
        assert_eq!(u["additionalGids"], serde_json::json!([50]));
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(env.contains(&"HOME=/home/app".to_string()), "{env:?}");
        // The image's User applies when the definition has none.
        let img = ImageConfig {
            user: "app:staff".into(),
            ..image()
        };
        let s = json(&build(&def(r#"{"name":"a"}"#), &img, &c).unwrap());
        assert_eq!(s["process"]["user"]["gid"], 50);
        let e = build(&def(r#"{"name":"web","user":"ghost"}"#), &image(), &c).unwrap_err();
        assert_eq!(
            e.to_string(),
            "container web: unable to find user ghost: no matching entries in passwd file"
        );
    }

    #[test]
    fn readonly_root_working_directory_and_terminal() {
        let sec = SecurityOptions::default();
        let s = json(
            &build(
                &def(r#"{"name":"a","readonlyRootFilesystem":true,"workingDirectory":"/srv","pseudoTerminal":true}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        assert_eq!(s["root"]["readonly"], true);
        assert_eq!(s["process"]["cwd"], "/srv");
        assert_eq!(s["process"]["terminal"], true);
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&sec)).unwrap());
        assert_eq!(s["root"]["readonly"], false);
        assert_eq!(s["process"]["terminal"], false);
    }

    #[test]
    fn capability_changes_reach_every_set_and_the_seccomp_filter() {
        let sec = SecurityOptions::default();
        let s = json(
            &build(
                &def(r#"{"name":"a","linuxParameters":{"capabilities":{"drop":["CHOWN"],"add":["SYS_ADMIN"]}}}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        for set in ["bounding", "effective", "permitted"] {
            let c = caps(&s, set);
            assert!(!c.contains(&"CAP_CHOWN".to_string()), "{set}");
            assert!(c.contains(&"CAP_SYS_ADMIN".to_string()), "{set}");
        }
        // Docker's profile opens mount(2) to CAP_SYS_ADMIN.
        let names: Vec<String> = s["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .filter_map(|n| n.as_str().map(str::to_string))
            .collect();
        assert!(names.contains(&"mount".to_string()));
    }

    #[test]
    fn devices_are_created_and_allowed() {
        let sec = SecurityOptions::default();
        let s = json(
            &build(
                &def(r#"{"name":"a","linuxParameters":{"devices":[{"hostPath":"/dev/null","containerPath":"/dev/xnull","permissions":["read"]}]}}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        assert_eq!(s["linux"]["devices"][0]["path"], "/dev/xnull");
        let rules = s["linux"]["resources"]["devices"].as_array().unwrap();
        assert_eq!(
            rules[0],
            serde_json::json!({"allow": false, "access": "rwm"})
        );
        assert_eq!(
            rules[1],
            serde_json::json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "r"})
        );
    }

    #[test]
    fn init_process_becomes_pid_1_from_a_read_only_bind() {
        let sec = SecurityOptions {
            init_path: std::env::current_exe().unwrap(),
            ..Default::default()
        };
        let s = json(
            &build(
                &def(r#"{"name":"a","linuxParameters":{"initProcessEnabled":true}}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        assert_eq!(
            s["process"]["args"],
            serde_json::json!(["/sbin/docker-init", "--", "/entry", "serve"])
        );
        let m = mount_at(&s, "/sbin/docker-init").expect("init mounted");
        assert!(m["options"].as_array().unwrap().contains(&"ro".into()));
        let missing = SecurityOptions {
            init_path: "/nonexistent/tini-static".into(),
            ..Default::default()
        };
        let e = build(
            &def(r#"{"name":"a","linuxParameters":{"initProcessEnabled":true}}"#),
            &image(),
            &ctx(&missing),
        )
        .unwrap_err();
        assert!(e.to_string().contains("--init-path"), "{e}");
    }

    #[test]
    fn shm_size_tmpfs_and_swap_reach_mounts_and_memory() {
        let sec = SecurityOptions::default();
        let s = json(
            &build(
                &def(r#"{"name":"a","memory":100,"linuxParameters":{"sharedMemorySize":256,"tmpfs":[{"containerPath":"/run/x","size":4}],"maxSwap":20,"swappiness":7}}"#),
                &image(),
                &ctx(&sec),
            )
            .unwrap(),
        );
        let shm = mount_at(&s, "/dev/shm").unwrap();
        assert!(shm["options"]
            .as_array()
            .unwrap()
            .contains(&"size=262144k".into()));
        let t = mount_at(&s, "/run/x").unwrap();
        assert_eq!(t["type"], "tmpfs");
        assert!(t["options"].as_array().unwrap().contains(&"size=4m".into()));
        let mem = &s["linux"]["resources"]["memory"];
        assert_eq!(mem["limit"], 100 << 20);
        if options::CgroupVersion::current()
            == (options::CgroupVersion::V1 {
                swap_accounting: true,
            })
        {
            assert_eq!(mem["swap"], 120 << 20);
            assert_eq!(mem["swappiness"], 7);
        }
        // maxSwap omitted: the host's setting (nothing in the spec).
        let s = json(&build(&def(r#"{"name":"a","memory":100}"#), &image(), &ctx(&sec)).unwrap());
        assert!(s["linux"]["resources"]["memory"]["swap"].is_null());
    }

    #[test]
    fn pid_and_ipc_modes_pick_namespaces_and_dev_shm() {
        let sec = SecurityOptions::default();
        let with = |pid: Share, ipc: Share| {
            json(
                &build(
                    &def(r#"{"name":"a"}"#),
                    &image(),
                    &SpecContext {
                        pid,
                        ipc,
                        ..ctx(&sec)
                    },
                )
                .unwrap(),
            )
        };
        let own = with(Share::Own, Share::Own);
        assert!(ns(&own, "pid").unwrap()["path"].is_null());
        assert_eq!(mount_at(&own, "/dev/shm").unwrap()["type"], "tmpfs");
        let host = with(Share::Host, Share::Host);
        assert!(ns(&host, "pid").is_none() && ns(&host, "ipc").is_none());
        assert_eq!(mount_at(&host, "/dev/shm").unwrap()["source"], "/dev/shm");
        let joined = with(Share::Join(42), Share::Join(42));
        assert_eq!(ns(&joined, "pid").unwrap()["path"], "/proc/42/ns/pid");
        assert_eq!(ns(&joined, "ipc").unwrap()["path"], "/proc/42/ns/ipc");
        for ipc in [Share::Own, Share::Join(42)] {
            let s = json(
                &build(
                    &def(r#"{"name":"a"}"#),
                    &image(),
                    &SpecContext {
                        ipc,
                        task_shm: Some("/d/tasks/t/shm".into()),
                        ..ctx(&sec)
                    },
                )
                .unwrap(),
            );
            let m = mount_at(&s, "/dev/shm").unwrap();
            assert_eq!(
                (m["type"].as_str(), m["source"].as_str()),
                (Some("bind"), Some("/d/tasks/t/shm"))
            );
        }
        let none = with(Share::Own, Share::Private);
        assert!(ns(&none, "ipc").unwrap()["path"].is_null());
        assert!(mount_at(&none, "/dev/shm").is_none());
        let e = build(
            &def(r#"{"name":"a","linuxParameters":{"sharedMemorySize":8}}"#),
            &image(),
            &SpecContext {
                ipc: Share::Private,
                ..ctx(&sec)
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("ipcMode none"), "{e}");
    }

    #[test]
    fn disable_networking_gets_a_fresh_namespace_in_every_mode() {
        let sec = SecurityOptions::default();
        for (mode, path) in [
            ("bridge", Some("/run/netns/berth-x")),
            ("awsvpc", Some("/run/netns/t")),
            ("host", None),
        ] {
            let c = SpecContext {
                network_mode: mode,
                netns_path: path.map(str::to_string),
                ..ctx(&sec)
            };
            let s = json(
                &build(
                    &def(r#"{"name":"a","disableNetworking":true}"#),
                    &image(),
                    &c,
                )
                .unwrap(),
            );
            let net = ns(&s, "network").unwrap_or_else(|| panic!("{mode}: no network namespace"));
            assert!(net["path"].is_null(), "{mode}: {net}");
        }
    }

    #[test]
    fn system_controls_become_linux_sysctl() {
        let sec = SecurityOptions::default();
        let d = def(
            r#"{"name":"a","systemControls":[{"namespace":"net.ipv4.tcp_syncookies","value":"0"},{"namespace":"kernel.msgmax","value":"9000"}]}"#,
        );
        let s = json(&build(&d, &image(), &ctx(&sec)).unwrap());
        assert_eq!(s["linux"]["sysctl"]["net.ipv4.tcp_syncookies"], "0");
        assert_eq!(s["linux"]["sysctl"]["kernel.msgmax"], "9000");
        let host = SpecContext {
            network_mode: "host",
            ..ctx(&sec)
        };
        let e = build(&d, &image(), &host).unwrap_err();
        assert!(e.to_string().contains("net.ipv4.tcp_syncookies"), "{e}");
        let host_ipc = SpecContext {
            ipc: Share::Host,
            ..ctx(&sec)
        };
        let e = build(
            &def(r#"{"name":"a","systemControls":[{"namespace":"kernel.msgmax","value":"1"}]}"#),
            &image(),
            &host_ipc,
        )
        .unwrap_err();
        assert!(e.to_string().contains("kernel.msgmax"), "{e}");
        let s = json(&build(&def(r#"{"name":"a"}"#), &image(), &ctx(&sec)).unwrap());
        assert!(s["linux"]["sysctl"].is_null());
    }
}
