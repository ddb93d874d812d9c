//! Registry credentials: a task's, the agent's Docker config.json, and the `WWW-Authenticate`
//! challenges (Basic, Bearer) a registry answers with. Nothing here Displays or logs a secret.

use super::registry::RegistryError;
use base64::Engine;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

/// A user name and password (basic auth, or to get a bearer token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, <redacted>)", self.username)
    }
}

impl Credentials {
    /// The `Authorization: Basic …` value.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
    /// A one-way fingerprint keying cached tokens, so a token one set of credentials earned is
    /// never used for a pull with other (or no) credentials.
    pub(crate) fn fingerprint(c: Option<&Credentials>) -> String {
        match c {
            None => "anonymous".into(),
            Some(c) => {
                let mut h = Sha256::new();
                h.update(c.username.as_bytes());
                h.update([0]);
                h.update(c.password.as_bytes());
                hex::encode(&h.finalize()[..16])
            }
        }
    }
}

/// Agent-wide registry credentials in Docker's config.json format (`auths`).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// By registry as references name it (`docker.io`, `host:5000`).
    auths: BTreeMap<String, Credentials>,
}

/// The registry a config.json `auths` key means: `https://index.docker.io/v1/` → docker.io,
/// `https://host:5000/v2/` → host:5000, `host:5000` stays.
pub(crate) fn registry_of_key(key: &str) -> String {
    let rest = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = rest.split('/').next().unwrap_or("").to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".into()
        }
        _ => host,
    }
}

impl DockerConfig {
    /// Reads a config.json; errors name the file and what is wrong (never a secret).
    pub fn load(path: &Path) -> Result<Self, RegistryError> {
        let err = |message: String| RegistryError::Config {
            path: path.display().to_string(),
            message,
        };
        let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
        // serde_json's message names a line and column, never the text around it.
        let json: Value =
            serde_json::from_slice(&text).map_err(|e| err(format!("not JSON: {e}")))?;
        Self::from_json(&json).map_err(err)
    }

    /// Builds from config.json's JSON; the error names the key that is wrong.
    pub fn from_json(json: &Value) -> Result<Self, String> {
        if !json.is_object() {
            return Err("not a JSON object".into());
        }
        for helper in ["credsStore", "credHelpers"] {
            if json.get(helper).is_some() {
                return Err(format!(
                    "\"{helper}\" is not supported (credential helpers are not run by the agent): \
                     put the credentials in \"auths\" as {{\"auth\": base64(user:password)}}"
                ));
            }
        }
        let mut auths = BTreeMap::new();
        let Some(map) = json.get("auths") else {
            return Ok(Self { auths });
        };
        let map = map
            .as_object()
            .ok_or_else(|| "\"auths\" is not a JSON object".to_string())?;
        for (key, entry) in map {
            let registry = registry_of_key(key);
            if registry.is_empty() {
                return Err(format!("auths key {key:?} names no registry"));
            }
            let creds = entry_credentials(entry).map_err(|why| format!("auths[{key:?}]: {why}"))?;
            if auths.insert(registry.clone(), creds).is_some() {
                return Err(format!(
                    "auths[{key:?}]: a second entry for registry {registry}"
                ));
            }
        }
        Ok(Self { auths })
    }

    /// The credentials for a registry as a reference names it (docker.io matches Docker's
    /// `https://index.docker.io/v1/` key too).
    pub fn credentials_for(&self, registry: &str) -> Option<Credentials> {
        self.auths.get(&registry_of_key(registry)).cloned()
    }
}

fn entry_credentials(entry: &Value) -> Result<Credentials, String> {
    let obj = entry.as_object().ok_or("not a JSON object")?;
    if obj.get("identitytoken").is_some() || obj.get("registrytoken").is_some() {
        return Err("identity and registry tokens are not supported; give \"auth\"".into());
    }
    if let Some(auth) = obj.get("auth") {
        let auth = auth.as_str().ok_or("\"auth\" is not a string")?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .map_err(|_| "\"auth\" is not base64")?;
        let raw = String::from_utf8(raw).map_err(|_| "\"auth\" does not decode to UTF-8 text")?;
        let (user, pass) = raw
            .split_once(':')
            .ok_or("\"auth\" does not decode to user:password")?;
        if user.is_empty() {
            return Err("\"auth\" has an empty user name".into());
        }
        return Ok(Credentials {
            username: user.to_string(),
            password: pass.to_string(),
        });
    }
    match (obj.get("username"), obj.get("password")) {
        (Some(Value::String(u)), Some(Value::String(p))) if !u.is_empty() => Ok(Credentials {
            username: u.clone(),
            password: p.clone(),
        }),
        (None, None) => Err("neither \"auth\" nor \"username\" and \"password\"".into()),
        _ => Err("\"username\" and \"password\" must both be non-empty strings".into()),
    }
}

/// A `WWW-Authenticate` challenge this client answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// The challenge to answer among a 401's `WWW-Authenticate` headers (Bearer before Basic).
pub fn pick_challenge<'a>(headers: impl Iterator<Item = &'a str>) -> Option<Challenge> {
    let mut basic = false;
    for h in headers {
        let (scheme, params) = h.trim().split_once(' ').unwrap_or((h.trim(), ""));
        if scheme.eq_ignore_ascii_case("bearer") {
            let p = parse_params(params);
            if let Some(realm) = p.get("realm") {
                return Some(Challenge::Bearer {
                    realm: realm.clone(),
                    service: p.get("service").cloned(),
                });
            }
        } else if scheme.eq_ignore_ascii_case("basic") {
            basic = true;
        }
    }
    basic.then_some(Challenge::Basic)
}

/// `realm="https://a/token",service="reg",scope="repository:x:pull"` → a map (keys lowercase).
fn parse_params(s: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = s.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, tail) = if let Some(q) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = q.char_indices();
            let mut end = q.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &q[end.min(q.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        out.insert(key, value);
        rest = tail.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
pub fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn docker_config_key_forms() {
        let c = DockerConfig::from_json(&json!({
            "auths": {
                "https://index.docker.io/v1/": {"auth": b64("hub:p1")},
                "127.0.0.1:5000": {"auth": b64("local:p:with:colons")},
                "https://reg.example.com/v2/": {"username": "u", "password": "p3"},
            },
            "psFormat": "table",
        }))
        .expect("valid");
        let hub = c.credentials_for("docker.io").expect("hub");
        assert_eq!(
            (hub.username.as_str(), hub.password.as_str()),
            ("hub", "p1")
        );
        let local = c.credentials_for("127.0.0.1:5000").expect("local");
        assert_eq!(local.password, "p:with:colons");
        assert_eq!(
            c.credentials_for("reg.example.com").expect("reg").password,
            "p3"
        );
        assert!(c.credentials_for("127.0.0.1:5001").is_none());
        assert!(c.credentials_for("other.io").is_none());
        assert!(DockerConfig::from_json(&json!({}))
            .expect("empty")
            .auths
            .is_empty());
    }

    #[test]
    fn docker_config_errors_name_the_key_never_the_secret() {
        for (cfg, want) in [
            (
                json!({"credsStore": "desktop"}),
                "\"credsStore\" is not supported",
            ),
            (
                json!({"credHelpers": {"x": "ecr-login"}}),
                "\"credHelpers\" is not supported",
            ),
            (
                json!({"auths": {"h:1": {"auth": "!!secret!!"}}}),
                "auths[\"h:1\"]: \"auth\" is not base64",
            ),
            (
                json!({"auths": {"h:1": {"auth": b64("nocolonsecret")}}}),
                "auths[\"h:1\"]: \"auth\" does not decode to user:password",
            ),
            (
                json!({"auths": {"h:1": {"username": "u"}}}),
                "auths[\"h:1\"]: \"username\" and \"password\"",
            ),
            (json!({"auths": {"h:1": {}}}), "auths[\"h:1\"]: neither"),
            (
                json!({"auths": {"h:1": {"identitytoken": "secret"}}}),
                "identity and registry tokens",
            ),
            (json!({"auths": []}), "\"auths\" is not a JSON object"),
        ] {
            let e = DockerConfig::from_json(&cfg).expect_err(&cfg.to_string());
            assert!(e.contains(want), "{e} should say {want}");
            assert!(!e.contains("secret"), "{e} must not carry the secret");
        }
        let dir = std::env::temp_dir().join(format!("berth-dockercfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("config.json");
        std::fs::write(&file, r#"{"auths":{"h:1":{"auth":"secret"}}}"#).expect("write");
        let e = DockerConfig::load(&file).expect_err("bad").to_string();
        assert!(
            e.contains(&file.display().to_string()) && e.contains("h:1"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let e = DockerConfig::load(&dir.join("missing.json"))
            .expect_err("missing")
            .to_string();
        assert!(e.contains("missing.json"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn challenges() {
        assert_eq!(
            pick_challenge(
                [r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull""#]
                    .into_iter()
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into())
            })
        );
        assert_eq!(
            pick_challenge([r#"Basic realm="Registry Realm""#].into_iter()),
            Some(Challenge::Basic)
        );
        assert_eq!(
            pick_challenge(["Basic realm=x", "Bearer realm=http://h/t, service=s"].into_iter()),
            Some(Challenge::Bearer {
                realm: "http://h/t".into(),
                service: Some("s".into())
            })
        );
        assert_eq!(pick_challenge(["Negotiate"].into_iter()), None);
        assert_eq!(
            query_escape("repository:a/b:pull"),
            "repository%3Aa%2Fb%3Apull"
        );
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let c = Credentials {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{c:?}").contains("hunter2"));
        assert_ne!(
            Credentials::fingerprint(Some(&c)),
            Credentials::fingerprint(None)
        );
    }
}
