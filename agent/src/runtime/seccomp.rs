//! Docker's default seccomp profile, kept as data (`seccomp_default.json`, the facts of moby's
//! `seccomp/default.json` (github.com/moby/profiles, 2026-06) for x86_64 and aarch64) and applied as Docker applies it: a
//! rule holds only when the container's bounding capabilities, the host's architecture and
//! kernel version meet its `includes` and miss its `excludes`.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSyscall,
};
use serde::Deserialize;
use std::collections::HashMap;

const PROFILE: &str = include_str!("seccomp_default.json");

/// The embedded profile cannot be read (a build defect, caught by the unit tests).
#[derive(Debug, thiserror::Error)]
#[error("the embedded default seccomp profile is invalid: {0}")]
pub struct ProfileError(#[source] serde_json::Error);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    /// Host architecture (Rust's name) → the architectures the filter covers.
    arch_map: HashMap<String, Vec<Arch>>,
    syscalls: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    #[serde(flatten)]
    syscall: LinuxSyscall,
    #[serde(default)]
    includes: Filter,
    #[serde(default)]
    excludes: Filter,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Filter {
    #[serde(default)]
    caps: Vec<Capability>,
    /// Go's architecture names, as in moby's profile (amd64, arm64, …).
    #[serde(default)]
    arches: Vec<String>,
    /// `major.minor`.
    min_kernel: Option<String>,
}

/// Where the filter is built.
#[derive(Debug, Clone, Copy)]
pub struct Host<'a> {
    /// Rust's name of the architecture (`std::env::consts::ARCH`).
    pub arch: &'a str,
    /// The kernel's (major, minor), when known.
    pub kernel: Option<(u32, u32)>,
}

impl Host<'static> {
    /// This host.
    pub fn current() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|r| parse_version(r.trim()));
        Host {
            arch: std::env::consts::ARCH,
            kernel,
        }
    }
}

fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Go's name of a Rust architecture name (moby's profile names arches as Go does).
fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

impl Rule {
    fn applies(&self, caps: &Capabilities, host: &Host<'_>) -> bool {
        let arch = go_arch(host.arch);
        let inc = &self.includes;
        let exc = &self.excludes;
        if !inc.caps.iter().all(|c| caps.contains(c)) {
            return false;
        }
        if !inc.arches.is_empty() && !inc.arches.iter().any(|a| a == arch) {
            return false;
        }
        if let (Some(min), Some(kernel)) = (&inc.min_kernel, host.kernel) {
            if parse_version(min).is_some_and(|min| kernel < min) {
                return false;
            }
        }
        if exc.caps.iter().any(|c| caps.contains(c)) {
            return false;
        }
        if exc.arches.iter().any(|a| a == arch) {
            return false;
        }
        true
    }
}

/// The embedded profile, parsed once (every container start needs it).
fn profile() -> Result<&'static Profile, ProfileError> {
    static PARSED: std::sync::OnceLock<Profile> = std::sync::OnceLock::new();
    if let Some(p) = PARSED.get() {
        return Ok(p);
    }
    let parsed: Profile = serde_json::from_str(PROFILE).map_err(ProfileError)?;
    Ok(PARSED.get_or_init(|| parsed))
}

/// Docker's default seccomp filter for a container with these bounding capabilities.
pub fn default_filter(caps: &Capabilities, host: &Host<'_>) -> Result<LinuxSeccomp, ProfileError> {
    let profile = profile()?;
    let syscalls: Vec<LinuxSyscall> = profile
        .syscalls
        .iter()
        .filter(|r| r.applies(caps, host))
        .map(|r| r.syscall.clone())
        .collect();
    let mut filter = LinuxSeccomp::default();
    filter.set_default_action(profile.default_action);
    filter.set_default_errno_ret(profile.default_errno_ret);
    filter.set_architectures(profile.arch_map.get(host.arch).cloned());
    filter.set_syscalls(Some(syscalls));
    Ok(filter)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> Capabilities {
        names.iter().map(|n| n.parse().unwrap()).collect()
    }

    fn allowed(f: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        f.syscalls()
            .as_ref()
            .unwrap()
            .iter()
            .filter(|s| s.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    const X86: Host<'static> = Host {
        arch: "x86_64",
        kernel: Some((6, 1)),
    };

    #[test]
    fn default_denies_with_eperm_on_the_hosts_architectures() {
        let f = default_filter(&caps(&["CHOWN"]), &X86).unwrap();
        assert_eq!(f.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(f.default_errno_ret(), Some(1), "EPERM");
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        let arm = Host {
            arch: "aarch64",
            kernel: None,
        };
        let f = default_filter(&caps(&[]), &arm).unwrap();
        assert_eq!(
            f.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        assert!(!allowed(&f, "set_tls").is_empty(), "arm-only calls on arm");
        assert!(allowed(&f, "arch_prctl").is_empty(), "x86-only calls not");
    }

    #[test]
    fn capability_conditional_rules_follow_the_bounding_set() {
        let default_caps = caps(&["CHOWN", "SYS_CHROOT", "KILL"]);
        let f = default_filter(&default_caps, &X86).unwrap();
        assert!(!allowed(&f, "read").is_empty());
        assert!(
            allowed(&f, "io_uring_setup").is_empty(),
            "io_uring is off, as in Docker"
        );
        // socket() is allowed for every family but AF_VSOCK (40).
        let socket = allowed(&f, "socket");
        assert!(!socket.is_empty() && socket.iter().all(|s| s.args().is_some()));
        assert!(!allowed(&f, "arch_prctl").is_empty());
        assert!(!allowed(&f, "chroot").is_empty(), "CAP_SYS_CHROOT is held");
        assert!(allowed(&f, "mount").is_empty(), "needs CAP_SYS_ADMIN");
        assert!(allowed(&f, "reboot").is_empty(), "needs CAP_SYS_BOOT");
        assert!(allowed(&f, "open_by_handle_at").is_empty());
        // Without CAP_SYS_ADMIN: clone only without namespace flags, clone3 says ENOSYS so
        // libc falls back to clone.
        let clone = allowed(&f, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().is_some());
        let clone3 = allowed(&f, "clone3");
        assert_eq!(clone3.len(), 1);
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38), "ENOSYS");
        // ptrace needs kernel 4.8 (or CAP_SYS_PTRACE).
        assert!(!allowed(&f, "ptrace").is_empty());
        let old = Host {
            arch: "x86_64",
            kernel: Some((4, 4)),
        };
        assert!(allowed(&default_filter(&default_caps, &old).unwrap(), "ptrace").is_empty());

        let admin = default_filter(&caps(&["SYS_ADMIN"]), &X86).unwrap();
        assert!(!allowed(&admin, "mount").is_empty());
        let clone = allowed(&admin, "clone");
        assert_eq!(clone.len(), 1);
        assert!(clone[0].args().is_none(), "any clone with CAP_SYS_ADMIN");
        assert!(allowed(&admin, "clone3")
            .iter()
            .all(|s| s.action() == LinuxSeccompAction::ScmpActAllow));
    }

    #[test]
    fn kernel_versions_parse() {
        assert_eq!(parse_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_version("4.8"), Some((4, 8)));
        assert_eq!(parse_version("x"), None);
    }
}
