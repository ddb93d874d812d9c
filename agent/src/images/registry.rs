//! A client of the OCI distribution API (Docker registry v2), written by the registry part of
//! issue 11. CONTRACT (the puller codes against exactly these signatures):
//! - `Reference::parse` / `name()` / `api_host()`; `RegistryClient::new`, `manifest`, `blob`;
//! - `Credentials` (Debug redacted), `DockerConfig` (agent-wide credentials), `RegistryConfig`;
//! - `RegistryError` whose Display carries the registry's own message.

use bytes::Bytes;
use futures::stream::BoxStream;
use std::path::PathBuf;
use std::time::Duration;

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

impl Reference {
    /// Parses and normalises (`nginx:alpine` → docker.io/library/nginx:alpine); a bad reference
    /// is an error naming what is wrong.
    pub fn parse(s: &str) -> Result<Self, RegistryError> {
        Err(RegistryError::BadReference {
            reference: s.to_string(),
            why: "not built yet".into(),
        })
    }
    /// The full normalised name containerd's image record has: `docker.io/library/nginx:alpine`,
    /// `host:5000/app@sha256:…` (the same text as `runtime::image::normalize`).
    pub fn name(&self) -> String {
        String::new()
    }
    /// The host the API is at: `registry-1.docker.io` for docker.io, else the registry.
    pub fn api_host(&self) -> &str {
        &self.registry
    }
}

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

/// Agent-wide registry credentials in Docker's config.json format (`auths`).
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {}

impl DockerConfig {
    /// Reads a config.json; errors name the file and what is wrong (never a secret).
    pub fn load(_path: &std::path::Path) -> Result<Self, RegistryError> {
        Ok(Self::default())
    }
    /// The credentials for a registry as a reference names it (docker.io matches Docker's
    /// `https://index.docker.io/v1/` key too).
    pub fn credentials_for(&self, _registry: &str) -> Option<Credentials> {
        None
    }
}

/// How the agent reaches registries.
#[derive(Debug, Clone, Default)]
pub struct RegistryConfig {
    /// `host[:port]` of registries that may be reached over plain HTTP.
    pub insecure: Vec<String>,
    /// Agent-wide credentials (used when a task brings none).
    pub auth: DockerConfig,
    /// Extra CA certificates (PEM) besides the system's.
    pub ca_file: Option<PathBuf>,
    /// A connect/read with no progress for this long fails (the pull-inactivity timeout).
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

/// Why a registry call failed; Display carries the registry's message (for
/// "CannotPullContainerError: …") and never a credential.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("invalid reference format: {reference}: {why}")]
    BadReference { reference: String, why: String },
    #[error("{0}")]
    Other(String),
}

/// The client: one per agent, shared by every pull (connections pooled, tokens cached).
#[derive(Debug, Clone)]
pub struct RegistryClient {}

impl RegistryClient {
    pub fn new(_config: RegistryConfig) -> Result<Self, RegistryError> {
        Ok(Self {})
    }
    /// The manifest or index `r` names (by its digest if it has one, else its tag), with
    /// `Accept` for OCI and Docker v2 manifests and indexes. `creds` (a task's
    /// repositoryCredentials) win over the agent-wide ones.
    pub async fn manifest(
        &self,
        r: &Reference,
        creds: Option<&Credentials>,
    ) -> Result<Fetched, RegistryError> {
        let _ = (r, creds);
        Err(RegistryError::Other("not built yet".into()))
    }
    /// The manifest with this digest in `r`'s repository (a platform's manifest of an index).
    pub async fn manifest_by_digest(
        &self,
        r: &Reference,
        digest: &str,
        creds: Option<&Credentials>,
    ) -> Result<Fetched, RegistryError> {
        let _ = (r, digest, creds);
        Err(RegistryError::Other("not built yet".into()))
    }
    /// A blob of `r`'s repository from byte `offset` (Range), following redirects.
    pub async fn blob(
        &self,
        r: &Reference,
        digest: &str,
        offset: u64,
        creds: Option<&Credentials>,
    ) -> Result<Blob, RegistryError> {
        let _ = (r, digest, offset, creds);
        Err(RegistryError::Other("not built yet".into()))
    }
}
