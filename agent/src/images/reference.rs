//! Image references as Docker parses them (github.com/distribution/reference:
//! `ParseNormalizedNamed` then `TagNameOnly`): `nginx:alpine` → docker.io/library/nginx:alpine.

use super::registry::RegistryError;
use regex::Regex;
use std::sync::LazyLock;

/// Docker Hub as references name it.
pub const DOCKER_HUB: &str = "docker.io";
/// Where Docker Hub's API is.
pub const DOCKER_HUB_API: &str = "registry-1.docker.io";
/// The longest repository name (domain included) Docker accepts.
const NAME_TOTAL_LENGTH_MAX: usize = 255;

// The grammar of distribution/reference's regexp.go, spelled out with ASCII classes (Go's `\w`
// is ASCII; Rust's is Unicode).
const ALPHANUMERIC: &str = "[a-z0-9]+";
const SEPARATOR: &str = "(?:[._]|__|[-]+)";
const DOMAIN_COMPONENT: &str = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const IPV6: &str = r"\[(?:[a-fA-F0-9:]+)\]";
const TAG: &str = "[0-9A-Za-z_][0-9A-Za-z_.-]{0,127}";
const DIGEST: &str = "[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][0-9a-fA-F]{32,}";

fn path_component() -> String {
    format!("{ALPHANUMERIC}(?:{SEPARATOR}{ALPHANUMERIC})*")
}

fn domain_and_port() -> String {
    let domain_name = format!("{DOMAIN_COMPONENT}(?:[.]{DOMAIN_COMPONENT})*");
    format!("(?:{domain_name}|{IPV6})(?::[0-9]+)?")
}

/// `name[:tag][@digest]` with the name, tag and digest captured.
static REFERENCE: LazyLock<Regex> = LazyLock::new(|| {
    let pc = path_component();
    let name = format!("(?:{}/)?{pc}(?:/{pc})*", domain_and_port());
    Regex::new(&format!("^({name})(?::({TAG}))?(?:@({DIGEST}))?$")).expect("a valid regex")
});
/// A name split into its domain and remote name.
static NAME: LazyLock<Regex> = LazyLock::new(|| {
    let pc = path_component();
    Regex::new(&format!("^(?:({})/)?({pc}(?:/{pc})*)$", domain_and_port())).expect("a valid regex")
});
static ANCHORED_TAG: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{TAG}$")).expect("a valid regex"));
static ANCHORED_COMPONENT: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(&format!("^{}$", path_component())).expect("a valid regex"));
static IDENTIFIER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new("^[a-f0-9]{64}$").expect("a valid regex"));

/// A parsed image reference, as Docker resolves one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The registry as named: `docker.io`, `localhost:5000`, `reg.example.com`.
    pub registry: String,
    /// `library/nginx`, `team/app`.
    pub repository: String,
    /// The tag (`latest` when neither tag nor digest is given).
    pub tag: Option<String>,
    /// `sha256:…` when the reference pins a digest.
    pub digest: Option<String>,
}

fn bad(reference: &str, why: impl Into<String>) -> RegistryError {
    RegistryError::BadReference {
        reference: reference.to_string(),
        why: why.into(),
    }
}

/// Docker's `splitDockerDomain`: the first component is a domain when it is `localhost`, has a
/// `.` or `:`, or has an uppercase letter (namespaces are lowercase); `index.docker.io` is
/// docker.io; a one-component name on docker.io is in `library/`.
pub(crate) fn split_docker_domain(name: &str) -> (String, String) {
    let (domain, remote) = match name.split_once('/') {
        None => return (DOCKER_HUB.to_string(), format!("library/{name}")),
        Some((d, rest)) if d == "localhost" || d.contains(['.', ':']) || d.to_lowercase() != d => {
            let d = if d == "index.docker.io" {
                DOCKER_HUB
            } else {
                d
            };
            (d.to_string(), rest.to_string())
        }
        Some(_) => (DOCKER_HUB.to_string(), name.to_string()),
    };
    if domain == DOCKER_HUB && !remote.contains('/') {
        return (domain, format!("library/{remote}"));
    }
    (domain, remote)
}

/// Checks a digest as go-digest does: a known algorithm and the right number of lowercase hex
/// digits.
pub(crate) fn validate_digest(digest: &str) -> Result<(), String> {
    let Some((alg, hex)) = digest.split_once(':') else {
        return Err(format!("digest {digest:?} has no algorithm (sha256:…)"));
    };
    let len = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        other => return Err(format!("unsupported digest algorithm {other:?}")),
    };
    if hex.len() != len || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(format!(
            "invalid digest {digest:?}: {alg} needs {len} lowercase hex digits"
        ));
    }
    Ok(())
}

/// Why a reference the grammar refuses is wrong, as precisely as we can tell.
fn diagnose(s: &str) -> String {
    if s.is_empty() {
        return "repository name must have at least one component".into();
    }
    if s.chars().any(char::is_whitespace) {
        return "it contains whitespace".into();
    }
    let (rest, digest) = match s.split_once('@') {
        Some((r, d)) => (r, Some(d)),
        None => (s, None),
    };
    if let Some(d) = digest {
        if let Err(e) = validate_digest(d) {
            return e;
        }
    }
    let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
    let (name, tag) = match rest[last_slash..].rfind(':') {
        Some(i) => (&rest[..last_slash + i], Some(&rest[last_slash + i + 1..])),
        None => (rest, None),
    };
    if let Some(t) = tag {
        if !ANCHORED_TAG.is_match(t) {
            return format!(
                "tag {t:?} is not valid (letters, digits, _ . - up to 128, not starting with . or -)"
            );
        }
    }
    for c in name.split('/').skip(1) {
        if !ANCHORED_COMPONENT.is_match(c) {
            return format!(
                "path component {c:?} is not valid (lowercase letters and digits, separated by . _ __ or -)"
            );
        }
    }
    "it does not match Docker's reference grammar (name[:tag][@digest])".into()
}

impl Reference {
    /// Parses and normalises (`nginx:alpine` → docker.io/library/nginx:alpine); a bad reference
    /// is an error naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        if IDENTIFIER.is_match(s) {
            return Err(bad(
                s,
                "cannot specify 64-byte hexadecimal strings as a repository name",
            ));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote_name = remainder.split(':').next().unwrap_or("");
        let remote_name = remote_name.split('@').next().unwrap_or("");
        if remote_name.to_lowercase() != remote_name {
            return Err(bad(
                s,
                format!("repository name ({remote_name}) must be lowercase"),
            ));
        }
        let full = format!("{domain}/{remainder}");
        let Some(caps) = REFERENCE.captures(&full) else {
            if REFERENCE.is_match(&full.to_lowercase()) {
                return Err(bad(s, "repository name must be lowercase"));
            }
            return Err(bad(s, diagnose(s)));
        };
        let name = caps.get(1).map(|m| m.as_str()).unwrap_or("");
        if name.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(bad(
                s,
                format!("repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"),
            ));
        }
        let tag = caps.get(2).map(|m| m.as_str().to_string());
        let digest = caps.get(3).map(|m| m.as_str().to_string());
        if let Some(d) = &digest {
            validate_digest(d).map_err(|e| bad(s, e))?;
        }
        let parts = NAME.captures(name).ok_or_else(|| bad(s, diagnose(s)))?;
        let registry = parts.get(1).map(|m| m.as_str()).unwrap_or(DOCKER_HUB);
        let repository = parts.get(2).map(|m| m.as_str()).unwrap_or("");
        let tag = match (tag, &digest) {
            (None, None) => Some("latest".to_string()),
            (t, _) => t,
        };
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The full normalised name containerd's image record has: `docker.io/library/nginx:alpine`,
    /// `host:5000/app@sha256:…` (the same text as `runtime::image::normalize`).
    pub fn name(&self) -> String {
        let mut s = format!("{}/{}", self.registry, self.repository);
        if let Some(t) = &self.tag {
            s.push(':');
            s.push_str(t);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(d);
        }
        s
    }

    /// The host the API is at: `registry-1.docker.io` for docker.io, else the registry.
    pub fn api_host(&self) -> &str {
        if self.registry == DOCKER_HUB {
            DOCKER_HUB_API
        } else {
            &self.registry
        }
    }

    /// What a manifest request names: the digest when pinned (it wins over the tag), else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::image::normalize;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn parts(s: &str) -> (String, String, Option<String>, Option<String>) {
        let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (r.registry, r.repository, r.tag, r.digest)
    }

    fn ok(s: &str, reg: &str, repo: &str, tag: Option<&str>, digest: Option<&str>) {
        assert_eq!(
            parts(s),
            (
                reg.to_string(),
                repo.to_string(),
                tag.map(String::from),
                digest.map(String::from)
            ),
            "{s}"
        );
    }

    #[test]
    fn parses_like_docker() {
        ok(
            "busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        );
        ok(
            "nginx:alpine",
            "docker.io",
            "library/nginx",
            Some("alpine"),
            None,
        );
        ok("team/app:1", "docker.io", "team/app", Some("1"), None);
        ok(
            "docker.io/busybox",
            "docker.io",
            "library/busybox",
            Some("latest"),
            None,
        );
        ok(
            "index.docker.io/team/app",
            "docker.io",
            "team/app",
            Some("latest"),
            None,
        );
        ok("localhost/web:1", "localhost", "web", Some("1"), None);
        ok(
            "localhost:5000/a/b",
            "localhost:5000",
            "a/b",
            Some("latest"),
            None,
        );
        ok(
            "127.0.0.1:5000/app:1",
            "127.0.0.1:5000",
            "app",
            Some("1"),
            None,
        );
        ok("[::1]:5000/app", "[::1]:5000", "app", Some("latest"), None);
        ok(
            "Example.COM/app",
            "Example.COM",
            "app",
            Some("latest"),
            None,
        );
        ok(
            "reg.example.com/a_b/c-d/e.f:v1.2-3_x",
            "reg.example.com",
            "a_b/c-d/e.f",
            Some("v1.2-3_x"),
            None,
        );
        ok(
            &format!("busybox@{D}"),
            "docker.io",
            "library/busybox",
            None,
            Some(D),
        );
        ok(
            &format!("host:5000/app:1@{D}"),
            "host:5000",
            "app",
            Some("1"),
            Some(D),
        );
        // A bare "host:port" is a familiar name with a tag, as in Docker.
        ok(
            "localhost:5000",
            "docker.io",
            "library/localhost",
            Some("5000"),
            None,
        );
        let r = Reference::parse(&format!("host:5000/app:1@{D}")).expect("valid");
        assert_eq!(r.manifest_reference(), D, "the digest wins for fetching");
        assert_eq!(
            r.name(),
            format!("host:5000/app:1@{D}"),
            "the name keeps both"
        );
        assert_eq!(
            Reference::parse("busybox").expect("valid").api_host(),
            "registry-1.docker.io"
        );
        assert_eq!(Reference::parse("h:5/a").expect("valid").api_host(), "h:5");
    }

    #[test]
    fn refuses_bad_references_naming_why() {
        for (s, why) in [
            ("", "at least one component"),
            (
                "Busybox",
                "repository name (library/Busybox) must be lowercase",
            ),
            (
                "reg.io/Team/app",
                "repository name (Team/app) must be lowercase",
            ),
            ("busybox:", "tag \"\""),
            ("busybox:-x", "tag \"-x\""),
            ("a b", "whitespace"),
            ("reg.io/a//b", "path component \"\""),
            ("reg.io/a-/b", "path component \"a-\""),
            ("busybox@sha256:abc", "64 lowercase hex"),
            (
                "busybox@sha256:0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef",
                "64 lowercase hex",
            ),
            (
                "busybox@md5:0123456789abcdef0123456789abcdef",
                "unsupported digest algorithm",
            ),
            (
                "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "64-byte hexadecimal",
            ),
        ] {
            let e = Reference::parse(s).expect_err(s).to_string();
            assert!(e.starts_with("invalid reference format: "), "{s}: {e}");
            assert!(e.contains(why), "{s}: {e} should say {why}");
        }
        let long = format!("reg.io/{}", "a".repeat(250));
        let e = Reference::parse(&long).expect_err("too long").to_string();
        assert!(e.contains("not be more than 255"), "{e}");
    }

    /// The registry client and `berth-agent image load` must name an image identically, or a
    /// pulled image and a loaded one would be two records.
    #[test]
    fn name_matches_runtime_normalize() {
        let refs = [
            "busybox",
            "busybox:1.36",
            "nginx:alpine",
            "library/nginx",
            "docker.io/busybox",
            "docker.io/library/busybox:1",
            "index.docker.io/busybox",
            "index.docker.io/team/app:2",
            "team/app",
            "team/sub/app:v1",
            "localhost",
            "localhost:5000",
            "localhost/web",
            "localhost/web:1",
            "localhost:5000/a/b",
            "127.0.0.1:5000/app:1",
            "[::1]:5000/app",
            "reg.example.com/app",
            "reg.example.com:443/ns/app:x_y.z-1",
            "Example.COM/app:1",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
            "public.ecr.aws/docker/library/busybox:stable",
            "ghcr.io/org/repo/img:tag",
            "a__b/c--d:e",
            "host/app@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "busybox:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "h:5000/app:1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
        ];
        for s in refs {
            let r = Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(r.name(), normalize(s), "{s}");
        }
    }
}
