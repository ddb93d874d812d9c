//! A client of the OCI distribution API (Docker registry v2), written by the registry part of
//! issue 11. CONTRACT (the puller codes against exactly these signatures):
//! - `Reference::parse` / `name()` / `api_host()`; `RegistryClient::new`, `manifest`, `blob`;
//! - `Credentials` (Debug redacted), `DockerConfig` (agent-wide credentials), `RegistryConfig`;
//! - `RegistryError` whose Display carries the registry's own message.
//!
//! References live in [`super::reference`], credentials and challenges in [`super::auth`], the
//! transport (TLS, the inactivity bound) in [`super::http`]; this file is the API calls: anonymous
//! first, then Basic or a Bearer token (cached per registry, repository and credentials) on 401;
//! plain HTTP only for the registries configured as insecure.

use super::auth::{pick_challenge, query_escape, Challenge};
pub use super::auth::{Credentials, DockerConfig};
use super::http::{chain, find_no_progress, next_chunk, ChunkError, Connector, NoProgress};
pub use super::reference::Reference;
use bytes::{Bytes, BytesMut};
use futures::stream::{BoxStream, StreamExt};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, LOCATION,
    RANGE, USER_AGENT, WWW_AUTHENTICATE,
};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::Value;
use sha2::Digest;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pull-inactivity timeout when none is configured (ECS's default).
pub const DEFAULT_INACTIVITY_TIMEOUT: Duration = Duration::from_secs(60);
/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker image manifest v2, schema 2.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker manifest list.
pub const DOCKER_MANIFEST_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// The manifest media types this client accepts.
pub const MANIFEST_TYPES: [&str; 4] = [
    OCI_INDEX,
    OCI_MANIFEST,
    DOCKER_MANIFEST_LIST,
    DOCKER_MANIFEST,
];
const SCHEMA1_TYPES: [&str; 2] = [
    "application/vnd.docker.distribution.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v1+prettyjws",
];
/// Manifests larger than this are refused (Docker's and containerd's limit).
const MANIFEST_LIMIT: usize = 4 << 20;
/// How much of an error or token response is read.
const SMALL_BODY_LIMIT: usize = 1 << 20;
const MAX_REDIRECTS: usize = 5;
/// Docker's minimum bearer-token lifetime when a token server gives none or less.
const MIN_TOKEN_LIFETIME: Duration = Duration::from_secs(60);
const USER_AGENT_VALUE: &str = concat!("berth-agent/", env!("CARGO_PKG_VERSION"));

/// How the agent reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `host[:port]` of registries that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Agent-wide credentials (used when a task brings none).
    pub auth: DockerConfig,
    /// Extra CA certificates (PEM) besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A connect/read with no progress for this long fails (the pull-inactivity timeout);
    /// zero means [`DEFAULT_INACTIVITY_TIMEOUT`].
    pub inactivity_timeout: Duration,
}

/// A fetched manifest or index.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub media_type: String,
    /// The digest of `bytes` (checked against the one asked for, when a digest was asked).
    pub digest: String,
    pub bytes: Bytes,
}

/// An open blob download.
pub struct Blob {
    /// True when the registry honoured the Range request (206): the stream starts at `offset`.
    /// False: it starts at 0.
    pub resumed: bool,
    /// Content-Length of what the stream will carry, when the registry said.
    pub length: Option<u64>,
    pub stream: BoxStream<'static, Result<Bytes, RegistryError>>,
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("resumed", &self.resumed)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// Why a registry call failed; Display carries the registry's message (for
/// "CannotPullContainerError: …") and never a credential. `context` is what was asked:
/// `pull 127.0.0.1:5000/app:1: GET http://127.0.0.1:5000/v2/app/manifests/1`.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid reference format: {reference}: {why}")]
    BadReference { reference: String, why: String },
    /// The registry answered with an error status; `message` is its own (`unauthorized:
    /// authentication required`), `code` its first error code (`UNAUTHORIZED`) when it gave one.
    #[error("{context}: {message}")]
    Status {
        context: String,
        status: u16,
        code: Option<String>,
        message: String,
    },
    /// The registry could not be reached or the connection broke.
    #[error("{context}: {message}")]
    Transport {
        context: String,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// Nothing came for the pull-inactivity timeout.
    #[error("{context}: {source}")]
    NoProgress {
        context: String,
        #[source]
        source: NoProgress,
    },
    #[error("{context}: manifest digest mismatch: asked for {expected}, the registry sent content with digest {actual}")]
    DigestMismatch {
        context: String,
        expected: String,
        actual: String,
    },
    /// The registry answered with something this client does not take (a schema 1 manifest, a
    /// redirect to plain HTTP, a response without a token).
    #[error("{context}: {message}")]
    Unsupported { context: String, message: String },
    /// The agent-wide credentials file is wrong.
    #[error("registry credentials file {path}: {message}")]
    Config { path: String, message: String },
    #[error("registry client: {0}")]
    Setup(String),
    #[error("{0}")]
    Other(String),
}

impl RegistryError {
    /// The HTTP status the registry answered with, if it did.
    pub fn status(&self) -> Option<u16> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// `http` for registries listed as insecure (`host[:port]` exactly as references name them),
/// `https` for every other.
pub fn scheme_for(registry: &str, insecure: &[String]) -> &'static str {
    if insecure.iter().any(|i| i.eq_ignore_ascii_case(registry)) {
        "http"
    } else {
        "https"
    }
}

/// `scheme://host` of the API a reference's registry has.
pub fn api_base(r: &Reference, insecure: &[String]) -> String {
    format!("{}://{}", scheme_for(&r.registry, insecure), r.api_host())
}

/// A URL as errors show it: without its query (a redirect's may be a presigned credential).
fn shown(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    format!("{scheme}://{authority}{}", uri.path())
}

/// Renders a registry's error body as Docker does: `{"errors":[{"code":"UNAUTHORIZED",
/// "message":"authentication required"}]}` → `unauthorized: authentication required`.
pub fn render_error(status: StatusCode, body: &[u8]) -> (Option<String>, String) {
    if let Ok(json) = serde_json::from_slice::<Value>(body) {
        if let Some(errors) = json["errors"].as_array().filter(|e| !e.is_empty()) {
            let code = errors[0]["code"].as_str().map(String::from);
            let parts: Vec<String> = errors
                .iter()
                .map(|e| {
                    let code = e["code"]
                        .as_str()
                        .unwrap_or("unknown")
                        .replace('_', " ")
                        .to_lowercase();
                    match e["message"].as_str().filter(|m| !m.is_empty()) {
                        Some(m) => format!("{code}: {m}"),
                        None => code,
                    }
                })
                .collect();
            return (code, parts.join("; "));
        }
        for key in ["details", "message", "error"] {
            if let Some(m) = json[key].as_str().filter(|m| !m.is_empty()) {
                if status == StatusCode::UNAUTHORIZED {
                    return (None, format!("unauthorized: {m}"));
                }
                return (None, m.to_string());
            }
        }
    }
    let what = format!(
        "unexpected status {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let text = String::from_utf8_lossy(body);
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    if line.is_empty() || line.starts_with('<') {
        (None, what.trim_end().to_string())
    } else {
        let line: String = line.chars().take(200).collect();
        (None, format!("{}: {line}", what.trim_end()))
    }
}

/// A manifest's media type from the response's Content-Type or, failing that, its body; schema 1
/// and anything not a manifest or index are refused.
fn media_type_of(content_type: &str, body: &[u8]) -> Result<String, String> {
    let schema1 = |t: &str| {
        format!(
            "unsupported manifest format: Docker Image manifest version 2, schema 1 ({t}) is \
             not supported; push the image again with a current client"
        )
    };
    if SCHEMA1_TYPES.contains(&content_type) {
        return Err(schema1(content_type));
    }
    let json: Value =
        serde_json::from_slice(body).map_err(|e| format!("the manifest is not JSON ({e})"))?;
    if json["schemaVersion"] == 1 {
        return Err(schema1("schemaVersion 1"));
    }
    if MANIFEST_TYPES.contains(&content_type) {
        return Ok(content_type.to_string());
    }
    if let Some(t) = json["mediaType"].as_str() {
        if SCHEMA1_TYPES.contains(&t) {
            return Err(schema1(t));
        }
        if MANIFEST_TYPES.contains(&t) {
            return Ok(t.to_string());
        }
        return Err(format!("unsupported manifest media type {t}"));
    }
    if json["manifests"].is_array() {
        return Ok(OCI_INDEX.to_string());
    }
    if json["config"].is_object() && json["layers"].is_array() {
        return Ok(OCI_MANIFEST.to_string());
    }
    Err(format!(
        "unsupported manifest media type {content_type:?} (the body names none)"
    ))
}

/// The digest of some bytes with the algorithm another digest names.
fn digest_like(like: &str, bytes: &[u8]) -> String {
    match like.split_once(':').map(|(a, _)| a) {
        Some("sha512") => format!("sha512:{:x}", sha2::Sha512::digest(bytes)),
        Some("sha384") => format!("sha384:{:x}", sha2::Sha384::digest(bytes)),
        _ => format!("sha256:{:x}", sha2::Sha256::digest(bytes)),
    }
}

type TokenKey = (String, String, String);

struct Inner {
    insecure: Vec<String>,
    auth: DockerConfig,
    timeout: Duration,
    http: Client<Connector, Empty<Bytes>>,
    /// Bearer tokens by (API host, repository, credentials fingerprint), until they expire.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
    /// (API host, credentials fingerprint) known to want Basic auth: sent without asking again.
    basic: Mutex<HashSet<(String, String)>>,
}

/// The client: one per agent, shared by every pull (connections pooled, tokens cached).
#[derive(Clone)]
pub struct RegistryClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient")
            .field("insecure", &self.inner.insecure)
            .field("inactivity_timeout", &self.inner.timeout)
            .finish_non_exhaustive()
    }
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let timeout = if config.inactivity_timeout.is_zero() {
            DEFAULT_INACTIVITY_TIMEOUT
        } else {
            config.inactivity_timeout
        };
        let tls =
            super::http::tls_config(config.ca_file.as_deref()).map_err(RegistryError::Setup)?;
        let connector = Connector {
            tls: Arc::new(tls),
            timeout,
        };
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Ok(Self {
            inner: Arc::new(Inner {
                insecure: config.insecure,
                auth: config.auth,
                timeout,
                http,
                tokens: Mutex::new(HashMap::new()),
                basic: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// The manifest or index `r` names (by its digest if it has one, else its tag), with
    /// `Accept` for OCI and Docker v2 manifests and indexes. `creds` (a task's
    /// repositoryCredentials) win over the agent-wide ones.
    pub async fn manifest(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<Fetched, RegistryError> {
        self.fetch_manifest(r, r.manifest_reference(), r.digest.as_deref(), creds)
            .await
    }

    /// The manifest with this digest in `r`'s repository (a platform's manifest of an index).
    pub async fn manifest_by_digest(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<Fetched, RegistryError> {
        self.check_digest(r, digest)?;
        self.fetch_manifest(r, digest, Some(digest), creds).await
    }

    /// A blob of `r`'s repository from byte `offset` (Range), following redirects.
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &str,
        offset: u64,
        creds: Option<&Credentials>,
    ) -> Result<Blob, RegistryError> {
        self.check_digest(r, digest)?;
        let url = format!(
            "{}/v2/{}/blobs/{digest}",
            api_base(r, &self.inner.insecure),
            r.repository
        );
        let range = (offset > 0).then_some(offset);
        let (resp, context) = self.get(r, creds, &url, None, range).await?;
        let resumed = offset > 0 && resp.status() == StatusCode::PARTIAL_CONTENT;
        if resumed {
            // `bytes START-END/TOTAL` must start where we asked.
            let start = resp
                .headers()
                .get(CONTENT_RANGE)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split('-').next())
                .and_then(|v| v.trim().parse::<u64>().ok());
            if start != Some(offset) {
                return Err(RegistryError::Unsupported {
                    context,
                    message: format!(
                        "asked for bytes from {offset}, the registry's Content-Range says {:?}",
                        resp.headers().get(CONTENT_RANGE)
                    ),
                });
            }
        }
        let length = resp
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let timeout = self.inner.timeout;
        let stream = futures::stream::try_unfold(
            (resp.into_body(), context),
            move |(mut body, context)| async move {
                match next_chunk(&mut body, timeout).await {
                    Ok(Some(b)) => Ok(Some((b, (body, context)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(chunk_error(context, e)),
                }
            },
        )
        .boxed();
        Ok(Blob {
            resumed,
            length,
            stream,
        })
    }

    fn check_digest(&self, r: &Reference, digest: &str) -> Result<(), RegistryError> {
        super::reference::validate_digest(digest).map_err(|why| RegistryError::Unsupported {
            context: format!("pull {}", r.name()),
            message: why,
        })
    }

    async fn fetch_manifest(
        &self,
        r: &Reference,
        reference: &str,
        expect: Option<&str>,
        creds: Option<&Credentials>,
    ) -> Result<Fetched, RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            api_base(r, &self.inner.insecure),
            r.repository
        );
        let accept = MANIFEST_TYPES.join(", ");
        let (resp, context) = match self.get(r, creds, &url, Some(&accept), None).await {
            Ok(answer) => answer,
            // A registry that says 404 without the API's JSON still means the manifest is unknown.
            Err(RegistryError::Status {
                context,
                status: 404,
                code: None,
                message,
            }) => {
                return Err(RegistryError::Status {
                    context,
                    status: 404,
                    code: None,
                    message: format!("manifest unknown: {message}"),
                })
            }
            Err(e) => return Err(e),
        };
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let bytes = self.read_limited(resp, MANIFEST_LIMIT, &context).await?;
        let media_type =
            media_type_of(&content_type, &bytes).map_err(|message| RegistryError::Unsupported {
                context: context.clone(),
                message,
            })?;
        let digest = digest_like(expect.unwrap_or("sha256:"), &bytes);
        if let Some(expected) = expect {
            if expected != digest {
                return Err(RegistryError::DigestMismatch {
                    context,
                    expected: expected.to_string(),
                    actual: digest,
                });
            }
        }
        Ok(Fetched {
            media_type,
            digest,
            bytes,
        })
    }

    /// A GET against `r`'s registry: anonymous (or with what was learnt earlier), then answering
    /// one 401 challenge; redirects followed, Authorization only to the registry itself.
    async fn get(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
    ) -> Result<(Response<Incoming>, String), RegistryError> {
        let agent_creds;
        let creds = match creds {
            Some(c) => Some(c),
            None => {
                agent_creds = self.inner.auth.credentials_for(&r.registry);
                agent_creds.as_ref()
            }
        };
        let host = r.api_host().to_string();
        let fp = Credentials::fingerprint(creds);
        let mut auth = self.cached_auth(&host, &r.repository, &fp, creds);
        let mut answered = false;
        let mut redirects = 0;
        let mut uri: Uri = url
            .parse()
            .map_err(|e| RegistryError::Other(format!("pull {}: bad URL {url}: {e}", r.name())))?;
        let origin = uri.authority().map(|a| a.as_str().to_ascii_lowercase());
        loop {
            let context = format!("pull {}: GET {}", r.name(), shown(&uri));
            let same_host = uri.authority().map(|a| a.as_str().to_ascii_lowercase()) == origin;
            let send_auth = if same_host { auth.as_deref() } else { None };
            let resp = self.send(&uri, send_auth, accept, range, &context).await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !answered {
                answered = true;
                let challenge = pick_challenge(
                    resp.headers()
                        .get_all(WWW_AUTHENTICATE)
                        .iter()
                        .filter_map(|v| v.to_str().ok()),
                );
                match (challenge, creds) {
                    (Some(Challenge::Basic), Some(c)) => {
                        auth = Some(c.basic_header());
                        if let Ok(mut b) = self.inner.basic.lock() {
                            b.insert((host.clone(), fp.clone()));
                        }
                        continue;
                    }
                    (Some(Challenge::Bearer { realm, service }), _) => {
                        let token = self
                            .fetch_token(r, &realm, service.as_deref(), creds, &fp)
                            .await?;
                        auth = Some(format!("Bearer {token}"));
                        continue;
                    }
                    _ => {}
                }
            }
            if matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308) {
                redirects += 1;
                if redirects > MAX_REDIRECTS {
                    return Err(RegistryError::Unsupported {
                        context,
                        message: format!("more than {MAX_REDIRECTS} redirects"),
                    });
                }
                uri = self.redirect_target(&uri, &resp, &context)?;
                continue;
            }
            if !status.is_success() {
                return Err(self.status_error(resp, context).await);
            }
            return Ok((resp, context));
        }
    }

    /// Where a redirect goes; plain HTTP only to an insecure registry.
    fn redirect_target(
        &self,
        from: &Uri,
        resp: &Response<Incoming>,
        context: &str,
    ) -> Result<Uri, RegistryError> {
        let refuse = |message: String| RegistryError::Unsupported {
            context: context.to_string(),
            message,
        };
        let location = resp
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| refuse(format!("redirect ({}) without a Location", resp.status())))?;
        let target = if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else if location.starts_with('/') {
            format!(
                "{}://{}{location}",
                from.scheme_str().unwrap_or("https"),
                from.authority().map(|a| a.as_str()).unwrap_or("")
            )
        } else {
            let path = from.path();
            let dir = &path[..path.rfind('/').map(|i| i + 1).unwrap_or(0)];
            format!(
                "{}://{}{dir}{location}",
                from.scheme_str().unwrap_or("https"),
                from.authority().map(|a| a.as_str()).unwrap_or("")
            )
        };
        let uri: Uri = target
            .parse()
            .map_err(|e| refuse(format!("redirect to a bad URL: {e}")))?;
        if uri.scheme_str() == Some("http") {
            let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
            if scheme_for(authority, &self.inner.insecure) != "http" {
                return Err(refuse(format!(
                    "redirect to plain HTTP {} refused ({authority} is not an insecure registry)",
                    shown(&uri)
                )));
            }
        }
        Ok(uri)
    }

    fn cached_auth(
        &self,
        host: &str,
        repository: &str,
        fp: &str,
        creds: Option<&Credentials>,
    ) -> Option<String> {
        let key = (host.to_string(), repository.to_string(), fp.to_string());
        if let Ok(mut tokens) = self.inner.tokens.lock() {
            match tokens.get(&key) {
                Some((t, until)) if *until > Instant::now() => return Some(format!("Bearer {t}")),
                Some(_) => {
                    tokens.remove(&key);
                }
                None => {}
            }
        }
        let basic = self
            .inner
            .basic
            .lock()
            .map(|b| b.contains(&(host.to_string(), fp.to_string())))
            .unwrap_or(false);
        match creds {
            Some(c) if basic => Some(c.basic_header()),
            _ => None,
        }
    }

    /// A bearer token from the challenge's realm for pulling `r`'s repository (with the
    /// credentials as basic auth, if any), cached until it expires.
    async fn fetch_token(
        &self,
        r: &Reference,
        realm: &str,
        service: Option<&str>,
        creds: Option<&Credentials>,
        fp: &str,
    ) -> Result<String, RegistryError> {
        let mut url = realm.to_string();
        url.push(if url.contains('?') { '&' } else { '?' });
        if let Some(s) = service {
            url.push_str(&format!("service={}&", query_escape(s)));
        }
        url.push_str(&format!(
            "scope={}",
            query_escape(&format!("repository:{}:pull", r.repository))
        ));
        let context = format!("pull {}: GET token {realm}", r.name());
        let uri: Uri = url.parse().map_err(|e| RegistryError::Unsupported {
            context: context.clone(),
            message: format!("bad token realm: {e}"),
        })?;
        match uri.scheme_str() {
            Some("https") => {}
            Some("http") if scheme_for(&r.registry, &self.inner.insecure) == "http" => {}
            _ => {
                return Err(RegistryError::Unsupported {
                    context,
                    message: "the token realm must be https for a registry reached over https"
                        .into(),
                })
            }
        }
        let basic = creds.map(Credentials::basic_header);
        let resp = self
            .send(&uri, basic.as_deref(), None, None, &context)
            .await?;
        if !resp.status().is_success() {
            return Err(self.status_error(resp, context).await);
        }
        let body = self.read_limited(resp, SMALL_BODY_LIMIT, &context).await?;
        let json: Value =
            serde_json::from_slice(&body).map_err(|e| RegistryError::Unsupported {
                context: context.clone(),
                message: format!("the token response is not JSON ({e})"),
            })?;
        let token = ["token", "access_token"]
            .iter()
            .find_map(|k| json[*k].as_str().filter(|t| !t.is_empty()))
            .ok_or_else(|| RegistryError::Unsupported {
                context: context.clone(),
                message: "the token response has no \"token\" or \"access_token\"".into(),
            })?
            .to_string();
        let lifetime = json["expires_in"]
            .as_u64()
            .map(Duration::from_secs)
            .unwrap_or(MIN_TOKEN_LIFETIME)
            .max(MIN_TOKEN_LIFETIME);
        // Refreshed a little early so a token does not expire between check and use.
        let until = Instant::now() + lifetime - Duration::from_secs(10);
        if let Ok(mut tokens) = self.inner.tokens.lock() {
            // Expired tokens go here, so the cache holds only live ones however many pulls ran.
            let now = Instant::now();
            tokens.retain(|_, (_, until)| *until > now);
            tokens.insert(
                (
                    r.api_host().to_string(),
                    r.repository.clone(),
                    fp.to_string(),
                ),
                (token.clone(), until),
            );
        }
        Ok(token)
    }

    /// One request, its headers bounded by the inactivity timeout.
    async fn send(
        &self,
        uri: &Uri,
        auth: Option<&str>,
        accept: Option<&str>,
        range: Option<u64>,
        context: &str,
    ) -> Result<Response<Incoming>, RegistryError> {
        let mut builder = Request::get(uri.clone()).header(USER_AGENT, USER_AGENT_VALUE);
        if let Some(a) = auth {
            let mut v = HeaderValue::from_str(a).map_err(|_| {
                RegistryError::Other(format!(
                    "{context}: the credentials hold characters a header cannot carry"
                ))
            })?;
            v.set_sensitive(true);
            builder = builder.header(AUTHORIZATION, v);
        }
        if let Some(a) = accept {
            builder = builder.header(ACCEPT, a);
        }
        if let Some(offset) = range {
            builder = builder.header(RANGE, format!("bytes={offset}-"));
        }
        let req = builder
            .body(Empty::new())
            .map_err(|e| RegistryError::Other(format!("{context}: {e}")))?;
        match tokio::time::timeout(self.inner.timeout, self.inner.http.request(req)).await {
            Err(_) => Err(RegistryError::NoProgress {
                context: context.to_string(),
                source: NoProgress(self.inner.timeout),
            }),
            Ok(Err(e)) => Err(match find_no_progress(&e) {
                Some(n) => RegistryError::NoProgress {
                    context: context.to_string(),
                    source: n,
                },
                None => RegistryError::Transport {
                    context: context.to_string(),
                    message: with_hint(uri, chain(&e)),
                    source: Some(Box::new(e)),
                },
            }),
            Ok(Ok(resp)) => {
                // The URL without its query, and never a header: no credential reaches the log.
                tracing::debug!(url = %shown(uri), status = resp.status().as_u16(), "registry answered");
                Ok(resp)
            }
        }
    }

    /// A body of at most `limit` bytes, each read bounded by the inactivity timeout.
    async fn read_limited(
        &self,
        resp: Response<Incoming>,
        limit: usize,
        context: &str,
    ) -> Result<Bytes, RegistryError> {
        let mut body = resp.into_body();
        let mut out = BytesMut::new();
        while let Some(chunk) = next_chunk(&mut body, self.inner.timeout)
            .await
            .map_err(|e| chunk_error(context.to_string(), e))?
        {
            if out.len() + chunk.len() > limit {
                return Err(RegistryError::Unsupported {
                    context: context.to_string(),
                    message: format!("the response is larger than {limit} bytes"),
                });
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out.freeze())
    }

    /// The error an unsuccessful answer means, with the registry's own message.
    async fn status_error(&self, resp: Response<Incoming>, context: String) -> RegistryError {
        let status = resp.status();
        // A body that cannot be read still leaves the status to report.
        let body = self
            .read_limited(resp, SMALL_BODY_LIMIT, &context)
            .await
            .unwrap_or_default();
        let (code, message) = render_error(status, &body);
        RegistryError::Status {
            context,
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// What an operator can do about a TLS failure, after rustls's own words.
fn with_hint(uri: &Uri, message: String) -> String {
    if uri.scheme_str() != Some("https") {
        return message;
    }
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("");
    if message.contains("corrupt message") || message.contains("InvalidContentType") {
        format!("{message} (the server may speak plain HTTP: if it should, list {authority} with --insecure-registry)")
    } else if message.contains("invalid peer certificate") {
        format!("{message} (if the registry's CA is private, give it with --registry-ca-file)")
    } else {
        message
    }
}

fn chunk_error(context: String, e: ChunkError) -> RegistryError {
    match e {
        ChunkError::NoProgress(n) => RegistryError::NoProgress { context, source: n },
        ChunkError::Http(e) => RegistryError::Transport {
            context,
            message: chain(&e),
            source: Some(Box::new(e)),
        },
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
