//! A container's /etc/hosts, /etc/hostname and /etc/resolv.conf, made to fit its network mode
//! and honouring the container definition's hostname, dnsServers, dnsSearchDomains and
//! extraHosts; written under the data dir (`tasks/<id>/etc/<container>/`) and bind-mounted
//! read-write, as Docker mounts them (applications may add entries to /etc/hosts).
//!
//! - none: localhost only.
//! - bridge: localhost and the container's own address → its hostname.
//! - awsvpc: localhost and the task's address → the container's hostname (the containers of a
//!   task share its namespace).
//! - host: the host's own files bind-mounted as they are, unless the definition sets
//!   extraHosts, dnsServers or dnsSearchDomains: then generated copies of the host's files
//!   with them.
//!
//! resolv.conf: the definition's dnsServers and dnsSearchDomains replace the host's
//! nameservers and search domains; outside host mode the host's loopback nameservers are left
//! out (a resolver on the host's 127.0.0.53 is not reachable from another namespace), and when
//! none is left the agent's fallback nameservers are used.

use super::Mode;
use berth_proto::v1::ContainerDefinition;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The host's files the generated ones start from.
#[derive(Debug, Clone, Default)]
pub struct HostFiles {
    /// The host's /etc/hosts.
    pub hosts: String,
    /// The host's /etc/resolv.conf.
    pub resolv_conf: String,
}

impl HostFiles {
    /// Reads the host's files (blocking); a missing or unreadable one counts as empty.
    pub fn read() -> Self {
        Self {
            hosts: std::fs::read_to_string("/etc/hosts").unwrap_or_default(),
            resolv_conf: std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
        }
    }
}

/// A container's files, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// /etc/hosts.
    pub hosts: String,
    /// /etc/hostname; `None` in host mode (the container has the host's).
    pub hostname: Option<String>,
    /// /etc/resolv.conf.
    pub resolv_conf: String,
}

/// Where a container's files were written, for the spec's bind mounts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcPaths {
    /// The hosts file.
    pub hosts: PathBuf,
    /// The hostname file (not in host mode).
    pub hostname: Option<PathBuf>,
    /// The resolv.conf file.
    pub resolv_conf: PathBuf,
}

const LOCALHOST: &str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n";

/// A container's `links` entry: `name` or `name:alias`.
pub fn parse_link(link: &str) -> (&str, &str) {
    match link.split_once(':') {
        Some((name, alias)) if !alias.is_empty() => (name, alias),
        Some((name, _)) => (name, name),
        None => (link, link),
    }
}

/// The /etc/hosts entries of a container's links: `address alias name` (Docker's legacy links;
/// the alias alone when it is the name), from each linked container's bridge address.
pub fn link_hosts(
    def: &ContainerDefinition,
    address_of: impl Fn(&str) -> Option<Ipv4Addr>,
) -> Result<Vec<(Ipv4Addr, String)>, String> {
    def.links
        .iter()
        .map(|l| {
            let (name, alias) = parse_link(l);
            let address = address_of(name).ok_or_else(|| {
                format!("links: '{name}' is not a container of this task with a bridge address")
            })?;
            let names = if alias == name {
                name.to_string()
            } else {
                format!("{alias} {name}")
            };
            Ok((address, names))
        })
        .collect()
}

/// The files of a container with `hostname` (and, in bridge and awsvpc modes, `address`), with
/// its `links` entries (address, names); `None` when it uses the host's own files as they are
/// (host mode without overrides).
pub fn etc_files(
    def: &ContainerDefinition,
    mode: Mode,
    hostname: &str,
    address: Option<Ipv4Addr>,
    links: &[(Ipv4Addr, String)],
    host: &HostFiles,
    fallback_dns: &[Ipv4Addr],
) -> Option<EtcFiles> {
    let host_mode = mode == Mode::Host;
    if host_mode
        && def.extra_hosts.is_empty()
        && def.dns_servers.is_empty()
        && def.dns_search_domains.is_empty()
    {
        return None;
    }
    let link_ips: Vec<String> = links.iter().map(|(a, _)| a.to_string()).collect();
    let extra: Vec<(&str, &str)> = link_ips
        .iter()
        .zip(links)
        .map(|(ip, (_, names))| (ip.as_str(), names.as_str()))
        .chain(
            def.extra_hosts
                .iter()
                .map(|h| (h.ip_address.as_str(), h.hostname.as_str())),
        )
        .collect();
    let hosts = if host_mode {
        hosts_file(Some(&host.hosts), None, &extra)
    } else {
        let own = match mode {
            Mode::Bridge | Mode::Awsvpc => address.map(|a| (a, hostname)),
            _ => None,
        };
        hosts_file(None, own, &extra)
    };
    Some(EtcFiles {
        hosts,
        hostname: (!host_mode).then(|| format!("{hostname}\n")),
        resolv_conf: resolv_conf(
            &host.resolv_conf,
            &def.dns_servers,
            &def.dns_search_domains,
            !host_mode,
            fallback_dns,
        ),
    })
}

/// An /etc/hosts: `base` (the host's file) or localhost, then the container's own address,
/// then the extra hosts (ip, name).
pub fn hosts_file(
    base: Option<&str>,
    own: Option<(Ipv4Addr, &str)>,
    extra: &[(&str, &str)],
) -> String {
    let mut out = match base {
        Some(b) if b.is_empty() || b.ends_with('\n') => b.to_string(),
        Some(b) => format!("{b}\n"),
        None => LOCALHOST.to_string(),
    };
    if let Some((address, hostname)) = own {
        out.push_str(&format!("{address}\t{hostname}\n"));
    }
    for (ip, name) in extra {
        out.push_str(&format!("{ip}\t{name}\n"));
    }
    out
}

/// Whether a nameserver address is a loopback one (127.0.0.0/8 or ::1).
fn is_loopback(server: &str) -> bool {
    server
        .parse::<std::net::IpAddr>()
        .is_ok_and(|a| a.is_loopback())
}

/// A resolv.conf from the host's: `servers` and `search` (the definition's) replace the host's
/// nameservers and search domains when given; `strip_loopback` leaves out the host's loopback
/// nameservers; `fallback` is used when no nameserver is left. Other lines (options) are kept.
pub fn resolv_conf(
    host: &str,
    servers: &[String],
    search: &[String],
    strip_loopback: bool,
    fallback: &[Ipv4Addr],
) -> String {
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut other: Vec<String> = Vec::new();
    for line in host.lines() {
        let trimmed = line.trim();
        let mut words = trimmed.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                if let Some(s) = words.next() {
                    if !(strip_loopback && is_loopback(s)) {
                        nameservers.push(s.to_string());
                    }
                }
            }
            Some("search") | Some("domain") => searches = words.map(str::to_string).collect(),
            Some("options") => other.push(trimmed.to_string()),
            _ => {}
        }
    }
    if !servers.is_empty() {
        nameservers = servers.to_vec();
    }
    if !search.is_empty() {
        searches = search.to_vec();
    }
    if nameservers.is_empty() {
        nameservers = fallback.iter().map(|a| a.to_string()).collect();
    }
    let mut out = String::new();
    for n in &nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !searches.is_empty() {
        out.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for o in &other {
        out.push_str(o);
        out.push('\n');
    }
    out
}

/// Writes `files` into `dir` (blocking; each file replaced atomically) and returns their paths.
pub fn write(dir: &Path, files: &EtcFiles) -> Result<EtcPaths, crate::state::StateError> {
    let hosts = dir.join("hosts");
    crate::state::write_atomically(&hosts, files.hosts.as_bytes())?;
    let resolv_conf = dir.join("resolv.conf");
    crate::state::write_atomically(&resolv_conf, files.resolv_conf.as_bytes())?;
    let hostname = match &files.hostname {
        Some(h) => {
            let p = dir.join("hostname");
            crate::state::write_atomically(&p, h.as_bytes())?;
            Some(p)
        }
        None => None,
    };
    Ok(EtcPaths {
        hosts,
        hostname,
        resolv_conf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> ContainerDefinition {
        serde_json::from_str(json).unwrap()
    }

    fn host() -> HostFiles {
        HostFiles {
            hosts: "127.0.0.1 localhost\n10.0.0.5 myhost\n".into(),
            resolv_conf: "# generated\nnameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n".into(),
        }
    }

    const FALLBACK: [Ipv4Addr; 1] = [Ipv4Addr::new(8, 8, 8, 8)];

    #[test]
    fn none_has_localhost_only() {
        let f = etc_files(
            &def(r#"{"name":"a","image":"i"}"#),
            Mode::None,
            "abc",
            None,
            &[],
            &host(),
            &FALLBACK,
        )
        .unwrap();
        assert_eq!(f.hosts, LOCALHOST);
        assert_eq!(f.hostname.as_deref(), Some("abc\n"));
        assert_eq!(
            f.resolv_conf,
            "nameserver 10.0.0.2\nsearch corp.example\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn bridge_and_awsvpc_map_the_own_address_to_the_hostname_then_extra_hosts() {
        let d = def(
            r#"{"name":"a","image":"i","hostname":"web","extraHosts":[{"hostname":"db","ipAddress":"10.1.1.1"}]}"#,
        );
        for mode in [Mode::Bridge, Mode::Awsvpc] {
            let f = etc_files(
                &d,
                mode,
                "web",
                Some(Ipv4Addr::new(172, 31, 0, 2)),
                &[],
                &host(),
                &FALLBACK,
            )
            .unwrap();
            assert_eq!(
                f.hosts,
                format!("{LOCALHOST}172.31.0.2\tweb\n10.1.1.1\tdb\n"),
                "{mode:?}"
            );
        }
    }

    #[test]
    fn links_add_hosts_entries() {
        let d = def(r#"{"name":"web","image":"i","links":["db:database","cache"]}"#);
        let addr = |n: &str| match n {
            "db" => Some(Ipv4Addr::new(172, 31, 0, 3)),
            "cache" => Some(Ipv4Addr::new(172, 31, 0, 4)),
            _ => None,
        };
        let links = link_hosts(&d, addr).unwrap();
        let f = etc_files(
            &d,
            Mode::Bridge,
            "web",
            Some(Ipv4Addr::new(172, 31, 0, 2)),
            &links,
            &host(),
            &FALLBACK,
        )
        .unwrap();
        assert_eq!(
            f.hosts,
            format!("{LOCALHOST}172.31.0.2\tweb\n172.31.0.3\tdatabase db\n172.31.0.4\tcache\n")
        );
        let e = link_hosts(
            &def(r#"{"name":"web","image":"i","links":["ghost"]}"#),
            addr,
        )
        .unwrap_err();
        assert!(e.contains("'ghost'"), "{e}");
    }

    #[test]
    fn host_mode_uses_the_hosts_files_unless_the_definition_overrides() {
        let plain = def(r#"{"name":"a","image":"i"}"#);
        assert_eq!(
            etc_files(&plain, Mode::Host, "h", None, &[], &host(), &FALLBACK),
            None
        );
        let d = def(
            r#"{"name":"a","image":"i","extraHosts":[{"hostname":"db","ipAddress":"10.1.1.1"}],"dnsSearchDomains":["a.example","b.example"]}"#,
        );
        let f = etc_files(&d, Mode::Host, "h", None, &[], &host(), &FALLBACK).unwrap();
        assert_eq!(
            f.hosts,
            "127.0.0.1 localhost\n10.0.0.5 myhost\n10.1.1.1\tdb\n"
        );
        assert_eq!(f.hostname, None);
        // The host's loopback resolver works in its own namespace: kept.
        assert_eq!(
            f.resolv_conf,
            "nameserver 127.0.0.53\nnameserver 10.0.0.2\nsearch a.example b.example\noptions edns0 trust-ad\n"
        );
    }

    #[test]
    fn dns_servers_replace_the_hosts_and_loopback_only_falls_back() {
        assert_eq!(
            resolv_conf(
                "nameserver 127.0.0.53\n",
                &["10.9.9.9".into()],
                &[],
                true,
                &FALLBACK
            ),
            "nameserver 10.9.9.9\n"
        );
        assert_eq!(
            resolv_conf(
                "nameserver 127.0.0.53\nnameserver ::1\nsearch x\n",
                &[],
                &[],
                true,
                &FALLBACK
            ),
            "nameserver 8.8.8.8\nsearch x\n"
        );
        assert_eq!(resolv_conf("", &[], &[], true, &[]), "");
    }

    #[test]
    fn files_are_written_where_the_spec_mounts_them() {
        let dir = std::env::temp_dir().join(format!("berth-etc-{}", uuid::Uuid::new_v4().simple()));
        let f = EtcFiles {
            hosts: "h\n".into(),
            hostname: Some("n\n".into()),
            resolv_conf: "r\n".into(),
        };
        let p = write(&dir, &f).unwrap();
        assert_eq!(std::fs::read_to_string(&p.hosts).unwrap(), "h\n");
        assert_eq!(
            std::fs::read_to_string(p.hostname.as_ref().unwrap()).unwrap(),
            "n\n"
        );
        assert_eq!(std::fs::read_to_string(&p.resolv_conf).unwrap(), "r\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
