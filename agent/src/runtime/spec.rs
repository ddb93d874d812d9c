//! Builds the OCI runtime spec of a container: containerd's defaults, the image config and the
//! ECS container definition merged as Docker and the ECS agent merge them.

use super::ImageConfig;
use berth_proto::v1::ContainerDefinition;
use serde_json::{json, Value};

/// Why a spec cannot be built (shown as CannotCreateContainerError).
#[derive(Debug, thiserror::Error, PartialEq)]
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
}

/// Where and how a container runs, beyond its definition.
#[derive(Debug, Clone)]
pub struct SpecContext<'a> {
    /// The task's network mode: host or none (bridge and awsvpc arrive with networking).
    pub network_mode: &'a str,
    /// The cgroup path (`/berth/<task>/<container>`).
    pub cgroups_path: String,
    /// The container's hostname when it has its own UTS namespace.
    pub hostname: String,
}

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// containerd's default capability set.
const CAPS: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
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

/// Builds the spec.
pub fn build(
    def: &ContainerDefinition,
    image: &ImageConfig,
    ctx: &SpecContext<'_>,
) -> Result<Value, SpecError> {
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
    let mut namespaces = vec![
        json!({"type": "pid"}),
        json!({"type": "ipc"}),
        json!({"type": "mount"}),
    ];
    if !host_network {
        namespaces.push(json!({"type": "uts"}));
        namespaces.push(json!({"type": "network"}));
    }
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/run", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
    ];
    if host_network {
        for f in ["/etc/hosts", "/etc/resolv.conf"] {
            if std::path::Path::new(f).exists() {
                mounts.push(json!({"destination": f, "type": "bind", "source": f, "options": ["rbind", "ro"]}));
            }
        }
    }
    let mut memory = serde_json::Map::new();
    if let Some(m) = def.memory {
        memory.insert("limit".into(), json!(m as i64 * 1024 * 1024));
    }
    if let Some(r) = def.memory_reservation {
        memory.insert("reservation".into(), json!(r as i64 * 1024 * 1024));
    }
    let caps = if def.privileged == Some(true) {
        Value::Null
    } else {
        json!(CAPS)
    };
    let mut process = json!({
        "terminal": false,
        "user": {"uid": uid, "gid": gid},
        "args": args,
        "env": env(def, image, &hostname),
        "cwd": cwd,
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024u64, "soft": 1024u64}],
        "noNewPrivileges": def.privileged != Some(true),
    });
    if !caps.is_null() {
        process["capabilities"] = json!({"bounding": caps, "effective": caps, "permitted": caps});
    }
    let mut spec = json!({
        "ociVersion": "1.0.2-dev",
        "process": process,
        "root": {"path": "rootfs", "readonly": def.readonly_root_filesystem == Some(true)},
        "mounts": mounts,
        "linux": {
            "resources": {
                "devices": [{"allow": false, "access": "rwm"}],
                "cpu": {"shares": cpu_shares(def.cpu)},
                "memory": memory,
            },
            "cgroupsPath": ctx.cgroups_path,
            "namespaces": namespaces,
            "maskedPaths": ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
                "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        }
    });
    // With the host's network the container shares its UTS namespace too: no hostname to set.
    if !host_network {
        spec["hostname"] = json!(hostname);
    }
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let ctx = SpecContext {
            network_mode: "none",
            cgroups_path: "/berth/t/a".into(),
            hostname: "h".into(),
        };
        let s = build(
            &def(r#"{"name":"a","cpu":1,"memory":64,"memoryReservation":32,"environment":[{"name":"A","value":"def"}]}"#),
            &image(),
            &ctx,
        )
        .unwrap();
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(env.contains(&"A=def".to_string()) && !env.contains(&"A=image".to_string()));
        assert_eq!(s["linux"]["resources"]["cpu"]["shares"], 2);
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 64 * 1024 * 1024);
        assert_eq!(
            s["linux"]["resources"]["memory"]["reservation"],
            32 * 1024 * 1024
        );
        assert_eq!(s["linux"]["cgroupsPath"], "/berth/t/a");
    }

    #[test]
    fn bad_user_and_no_command_are_errors() {
        let ctx = SpecContext {
            network_mode: "none",
            cgroups_path: String::new(),
            hostname: String::new(),
        };
        assert!(matches!(
            build(&def(r#"{"name":"a","user":"nobody"}"#), &image(), &ctx),
            Err(SpecError::User { .. })
        ));
        assert_eq!(
            build(&def(r#"{"name":"a"}"#), &ImageConfig::default(), &ctx),
            Err(SpecError::NoCommand("a".into()))
        );
        assert_eq!(parse_user("a", "1000:50"), Ok((1000, 50)));
    }
}
