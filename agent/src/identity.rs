//! The agent's identity on a TLS link (issue 7): the controller's CA it pins, and the client
//! certificate bound to its container instance.
//!
//! Files (DATA_DIR/tls): `ca.pem` (the pinned CA), `client.key` (0600, made here, never sent),
//! `client.pem` (issued by the controller). The first certificate comes from Enroll with an SSM
//! activation; it is renewed at half its life with the same key (RenewCertificate), the new
//! `client.pem` replacing the old one atomically: open sessions and tasks are not touched, the
//! next connection presents the new certificate.

use berth_proto::v1::{
    EnrollRequest, ReenrollRequest, RegisterContainerInstanceRequest, RenewCertificateRequest,
};
use rcgen::{CertificateParams, KeyPair};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{pem::PemObject as _, CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use tracing::{error, info, warn};

/// How long a call to the controller (or the pinning handshake) may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the identity could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// A file of DATA_DIR/tls could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{path}: {why}")]
    BadFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// No client certificate and no activation to get one: terminal.
    #[error("no client certificate in {dir} and no activation: pass --activation-id and --activation-code (from berth ssm create-activation)")]
    NoActivation {
        /// DATA_DIR/tls.
        dir: String,
    },
    /// Nothing to pin the controller's CA with: terminal.
    #[error("no CA to trust for {url}: pass --ca-fingerprint (printed by berth ssm create-activation) or --ca-file (the controller's ca.pem)")]
    NoCa {
        /// The controller URL.
        url: String,
    },
    /// A fingerprint that is not `sha256:<64 hex>`.
    #[error("--ca-fingerprint {0:?}: expected sha256:<64 hex digits>")]
    BadFingerprint(String),
    /// The controller presented no certificate with the pinned fingerprint: terminal.
    #[error("the controller at {url} presented no certificate with fingerprint {fingerprint}: check --ca-fingerprint and --controller")]
    NotPinned {
        /// The controller URL.
        url: String,
        /// The pinned fingerprint.
        fingerprint: String,
    },
    /// The controller refused the activation or the request: terminal.
    #[error("enrollment refused by the controller: {0}")]
    Refused(String),
    /// Making the key or the certificate request failed.
    #[error("making the key pair or certificate request: {0}")]
    Key(#[source] rcgen::Error),
    /// The controller could not be reached or failed: retried.
    #[error("{0}")]
    Transient(String),
}

impl IdentityError {
    /// Whether retrying cannot help (the operator must change something).
    pub fn is_terminal(&self) -> bool {
        !matches!(self, IdentityError::Transient(_))
    }
}

/// What the agent enrolls with (flags / agent.conf). The code is never printed.
#[derive(Clone, Default)]
pub struct Enrollment {
    /// --activation-id.
    pub activation_id: Option<String>,
    /// --activation-code.
    pub activation_code: Option<String>,
    /// --ca-fingerprint.
    pub ca_fingerprint: Option<String>,
    /// --ca-file.
    pub ca_file: Option<PathBuf>,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("activation_id", &self.activation_id)
            .field(
                "activation_code",
                &self.activation_code.as_ref().map(|_| "<redacted>"),
            )
            .field("ca_fingerprint", &self.ca_fingerprint)
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

/// `sha256:<hex>` of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// A fingerprint in the canonical form: `sha256:` and 64 lowercase hex digits; colons and case
/// tolerated, the `sha256:` prefix optional.
pub fn normalize_fingerprint(f: &str) -> Result<String, IdentityError> {
    let t = f.trim();
    let body = t
        .strip_prefix("sha256:")
        .or_else(|| t.strip_prefix("SHA256:"))
        .unwrap_or(t);
    let hexes: String = body
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_lowercase();
    if hexes.len() != 64 || !hexes.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(IdentityError::BadFingerprint(f.to_string()));
    }
    Ok(format!("sha256:{hexes}"))
}

/// DATA_DIR/tls and what it holds.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    dir: PathBuf,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IdentityError + '_ {
    move |source| IdentityError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename (readers see the old or the
/// new content, never a mix), with `mode`.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), IdentityError> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

fn certs_of(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

impl TlsFiles {
    /// The files under `data_dir/tls`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            dir: data_dir.join("tls"),
        }
    }
    /// The pinned CA.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    /// The client certificate.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    /// The client key (0600).
    pub fn key(&self) -> PathBuf {
        self.dir.join("client.key")
    }

    fn read(&self, path: &Path) -> Result<String, IdentityError> {
        std::fs::read_to_string(path).map_err(io(path))
    }

    /// Whether a client certificate and its key are there.
    pub fn has_identity(&self) -> bool {
        self.cert().exists() && self.key().exists()
    }

    /// Removes the client certificate and key (the instance was deregistered: they are revoked).
    pub fn forget_identity(&self) -> Result<(), IdentityError> {
        for p in [self.cert(), self.key()] {
            match std::fs::remove_file(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(&p)(e)),
                _ => {}
            }
        }
        Ok(())
    }

    /// The TLS configuration of a connection: the pinned CA, and the client certificate when
    /// there is one.
    pub fn client_config(&self) -> Result<ClientTlsConfig, IdentityError> {
        self.tls_config(true)
    }

    /// The TLS configuration, presenting the client certificate only when `present` (and
    /// there is one).
    fn tls_config(&self, present: bool) -> Result<ClientTlsConfig, IdentityError> {
        let ca = self.read(&self.ca())?;
        let mut cfg = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
        if present && self.has_identity() {
            cfg = cfg.identity(Identity::from_pem(
                self.read(&self.cert())?,
                self.read(&self.key())?,
            ));
        }
        Ok(cfg)
    }

    /// The validity (not_before, not_after) of the client certificate.
    pub fn validity(&self) -> Result<(SystemTime, SystemTime), IdentityError> {
        self.with_cert(|x| {
            let at = |t: i64| SystemTime::UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
            Ok((
                at(x.validity().not_before.timestamp()),
                at(x.validity().not_after.timestamp()),
            ))
        })
    }

    /// `f` of the parsed client certificate.
    fn with_cert<T>(
        &self,
        f: impl FnOnce(&x509_parser::certificate::X509Certificate<'_>) -> Result<T, String>,
    ) -> Result<T, IdentityError> {
        let path = self.cert();
        let pem = self.read(&path)?;
        let bad = |why: String| IdentityError::BadFile {
            path: path.clone(),
            why,
        };
        let der = certs_of(&pem)
            .into_iter()
            .next()
            .ok_or_else(|| bad("no PEM certificate".into()))?;
        let (_, x) = x509_parser::parse_x509_certificate(&der)
            .map_err(|e| bad(format!("not an X.509 certificate: {e}")))?;
        f(&x).map_err(bad)
    }

    /// Makes sure the CA to trust is in `ca.pem`: from --ca-file, the saved one, or fetched
    /// from the controller and checked against --ca-fingerprint.
    pub async fn ensure_ca(&self, e: &Enrollment, url: &str) -> Result<(), IdentityError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))?;
        let pinned = e
            .ca_fingerprint
            .as_deref()
            .map(normalize_fingerprint)
            .transpose()?;
        if let Some(file) = &e.ca_file {
            let pem = self.read(file)?;
            if certs_of(&pem).is_empty() {
                return Err(IdentityError::BadFile {
                    path: file.clone(),
                    why: "no PEM certificate".into(),
                });
            }
            return write_atomically(&self.ca(), pem.as_bytes(), 0o644);
        }
        if self.ca().exists() {
            if let Some(f) = &pinned {
                let pem = self.read(&self.ca())?;
                if !certs_of(&pem).iter().any(|c| &fingerprint(c) == f) {
                    return Err(IdentityError::BadFile {
                        path: self.ca(),
                        why: format!("holds no certificate with fingerprint {f} (--ca-fingerprint); remove it to pin again"),
                    });
                }
            }
            return Ok(());
        }
        let Some(f) = pinned else {
            return Err(IdentityError::NoCa {
                url: url.to_string(),
            });
        };
        let der = fetch_pinned(url, &f).await?;
        let pem = pem_of(&der);
        write_atomically(&self.ca(), pem.as_bytes(), 0o644)?;
        info!(fingerprint = %f, "pinned the controller's CA");
        Ok(())
    }

    /// Enrolls when there is no client certificate yet: makes the key pair (0600), sends the
    /// certificate request with the activation, saves the certificate; returns the container
    /// instance ARN Enroll registered (`None` when a certificate was already there).
    pub async fn ensure_identity(
        &self,
        e: &Enrollment,
        url: &str,
        cluster: &str,
        registration: RegisterContainerInstanceRequest,
    ) -> Result<Option<String>, IdentityError> {
        if self.has_identity() {
            return Ok(None);
        }
        let (Some(id), Some(code)) = (&e.activation_id, &e.activation_code) else {
            return Err(IdentityError::NoActivation {
                dir: self.dir.display().to_string(),
            });
        };
        // The key is saved before enrolling, and one left by an enrollment whose answer was
        // lost is used again: the controller then answers with the same instance.
        let key = if self.key().exists() {
            KeyPair::from_pem(&self.read(&self.key())?).map_err(IdentityError::Key)?
        } else {
            let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .map_err(IdentityError::Key)?;
            write_atomically(&self.key(), key.serialize_pem().as_bytes(), 0o600)?;
            key
        };
        let csr = csr_of(&key)?;
        let hostname = nix::unistd::gethostname()
            .ok()
            .and_then(|h| h.into_string().ok());
        let mut client = self.client(url).await?;
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            client.enroll(EnrollRequest {
                activation_id: id.clone(),
                activation_code: code.clone(),
                csr_pem: csr,
                cluster: cluster.to_string(),
                hostname,
                registration: Some(registration),
            }),
        )
        .await
        .map_err(|_| IdentityError::Transient("enroll: no answer from the controller".into()))?
        .map_err(classify)?
        .into_inner();
        write_atomically(&self.cert(), resp.certificate_pem.as_bytes(), 0o644)?;
        info!(instance = %resp.container_instance_arn, "enrolled: client certificate saved");
        Ok(Some(resp.container_instance_arn))
    }

    async fn client(
        &self,
        url: &str,
    ) -> Result<berth_proto::v1::agent_client::AgentClient<tonic::transport::Channel>, IdentityError>
    {
        self.client_with(url, true).await
    }

    async fn client_with(
        &self,
        url: &str,
        present: bool,
    ) -> Result<berth_proto::v1::agent_client::AgentClient<tonic::transport::Channel>, IdentityError>
    {
        let channel = Endpoint::from_shared(url.to_string())
            .map_err(|e| IdentityError::Transient(format!("bad controller URL {url}: {e}")))?
            .tls_config(self.tls_config(present)?)
            .map_err(|e| IdentityError::Transient(format!("TLS configuration: {e}")))?
            .connect_timeout(Duration::from_secs(5));
        // connect_timeout bounds the TCP connect only: the TLS handshake and HTTP/2 set-up are
        // bounded here, so a peer that stalls mid-handshake cannot hang enrollment or renewal.
        let channel = tokio::time::timeout(crate::session::CONNECT_TIMEOUT, channel.connect())
            .await
            .map_err(|_| {
                IdentityError::Transient(format!(
                    "connect to {url}: no TLS session within {} s",
                    crate::session::CONNECT_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| IdentityError::Transient(format!("connect to {url}: {e:?}")))?;
        Ok(berth_proto::link::client(channel))
    }

    /// Renews the client certificate (same key), replacing `client.pem` atomically.
    pub async fn renew(&self, url: &str) -> Result<SystemTime, IdentityError> {
        let key = KeyPair::from_pem(&self.read(&self.key())?).map_err(IdentityError::Key)?;
        let csr = csr_of(&key)?;
        let mut client = self.client(url).await?;
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            client.renew_certificate(RenewCertificateRequest { csr_pem: csr }),
        )
        .await
        .map_err(|_| IdentityError::Transient("renew: no answer from the controller".into()))?
        .map_err(|s| IdentityError::Transient(format!("renew: {}", s.message())))?
        .into_inner();
        write_atomically(&self.cert(), resp.certificate_pem.as_bytes(), 0o644)?;
        Ok(self.validity()?.1)
    }

    /// The container instance the client certificate names (its CN).
    fn certified_instance(&self) -> Result<String, IdentityError> {
        self.with_cert(|x| {
            x.subject()
                .iter_common_name()
                .next()
                .and_then(|cn| cn.as_str().ok())
                .map(str::to_string)
                .ok_or_else(|| "no common name (the instance ARN)".to_string())
        })
    }

    /// After the certificate expired: asks for a new one for the same instance, proving with a
    /// request signed by the same key (Reenroll; no client certificate is presented).
    pub async fn reenroll(&self, url: &str) -> Result<SystemTime, IdentityError> {
        let key = KeyPair::from_pem(&self.read(&self.key())?).map_err(IdentityError::Key)?;
        let csr = csr_of(&key)?;
        let arn = self.certified_instance()?;
        let mut client = self.client_with(url, false).await?;
        let resp = tokio::time::timeout(
            CALL_TIMEOUT,
            client.reenroll(ReenrollRequest {
                container_instance_arn: arn,
                csr_pem: csr,
            }),
        )
        .await
        .map_err(|_| IdentityError::Transient("reenroll: no answer from the controller".into()))?
        .map_err(|s| IdentityError::Transient(format!("reenroll: {}", s.message())))?
        .into_inner();
        write_atomically(&self.cert(), resp.certificate_pem.as_bytes(), 0o644)?;
        Ok(self.validity()?.1)
    }

    /// Renews the client certificate at half its life (counted from when it was saved), forever;
    /// a failed renewal is retried
    /// (every tenth of the remaining life, at least 1 s, at most 5 min) while the certificate
    /// is still valid.
    pub async fn renew_forever(self, url: String) {
        loop {
            let wait = match self.validity() {
                Ok((nb, na)) => {
                    // Certificates are backdated (clock skew): their life counts from when the
                    // file was written, if that is later.
                    let got = std::fs::metadata(self.cert())
                        .and_then(|m| m.modified())
                        .map_or(nb, |m| m.max(nb));
                    let half = got + na.duration_since(got).unwrap_or_default() / 2;
                    half.duration_since(SystemTime::now()).unwrap_or_default()
                }
                Err(e) => {
                    warn!(error = %e, "cannot read the client certificate; retrying in 60 s");
                    tokio::time::sleep(Duration::from_secs(60)).await;
                    continue;
                }
            };
            tokio::time::sleep(wait).await;
            let expired = self.validity().is_ok_and(|(_, na)| na <= SystemTime::now());
            let renewed = if expired {
                // The controller refuses an expired certificate in the handshake: prove the
                // key instead (within the controller's grace after expiry).
                self.reenroll(&url).await
            } else {
                self.renew(&url).await
            };
            match renewed {
                Ok(not_after) => {
                    let left = not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or_default();
                    info!(valid_for_s = left.as_secs(), "client certificate renewed");
                }
                Err(e) => {
                    let left = self
                        .validity()
                        .ok()
                        .and_then(|(_, na)| na.duration_since(SystemTime::now()).ok())
                        .unwrap_or_default();
                    if left.is_zero() {
                        // Reenroll failed: the controller is still away, or the expiry is past
                        // its grace (or the instance was deregistered). Retried every minute.
                        error!(error = %e, dir = %self.dir.display(),
                            "the client certificate has expired and no new one could be had with its key yet (retrying every 60 s); if the controller refuses it for good (expired more than 30 days ago), remove tls/client.pem and tls/client.key from the data dir and start berth-agent with a new activation (berth ssm create-activation)");
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        continue;
                    }
                    let retry = (left / 10).clamp(Duration::from_secs(1), Duration::from_secs(300));
                    warn!(error = %e, retry_s = retry.as_secs(), "certificate renewal failed");
                    tokio::time::sleep(retry).await;
                }
            }
        }
    }
}

fn csr_of(key: &KeyPair) -> Result<String, IdentityError> {
    CertificateParams::default()
        .serialize_request(key)
        .and_then(|c| c.pem())
        .map_err(IdentityError::Key)
}

fn pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// Maps an Enroll failure: a refusal (bad activation, bad request) is terminal, the rest is
/// retried.
fn classify(s: tonic::Status) -> IdentityError {
    use tonic::Code::*;
    match s.code() {
        PermissionDenied | FailedPrecondition | InvalidArgument | Unimplemented
        | Unauthenticated => IdentityError::Refused(s.message().to_string()),
        _ => IdentityError::Transient(format!("enroll: {}", s.message())),
    }
}

/// Accepts the server's chain only when one of its certificates has the pinned fingerprint,
/// and keeps that certificate. Used for one handshake that sends nothing: every later
/// connection verifies the server against the certificate kept.
#[derive(Debug)]
struct PinVerifier {
    fingerprint: String,
    found: Mutex<Option<Vec<u8>>>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        for c in std::iter::once(end_entity).chain(intermediates) {
            if fingerprint(c) == self.fingerprint {
                if let Ok(mut f) = self.found.lock() {
                    *f = Some(c.to_vec());
                }
                return Ok(ServerCertVerified::assertion());
            }
        }
        Err(rustls::Error::General(
            "no certificate with the pinned fingerprint".into(),
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The host and port of an https URL.
fn host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split('/').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6.split_once(']')?;
        let port = port
            .strip_prefix(':')
            .map_or(Some(443), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 443)),
    }
}

/// One TLS handshake with the controller, keeping the certificate of its chain that has the
/// pinned fingerprint.
async fn fetch_pinned(url: &str, pinned: &str) -> Result<Vec<u8>, IdentityError> {
    let (host, port) = host_port(url).ok_or_else(|| {
        IdentityError::Transient(format!("controller URL {url}: expected https://HOST:PORT"))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinVerifier {
        fingerprint: pinned.to_string(),
        found: Mutex::new(None),
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| IdentityError::Transient(format!("TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let name = ServerName::try_from(host.clone())
        .map_err(|e| IdentityError::Transient(format!("controller host {host}: {e}")))?;
    let handshake = async {
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
    };
    let result = tokio::time::timeout(CALL_TIMEOUT, handshake)
        .await
        .map_err(|_| IdentityError::Transient(format!("TLS handshake with {url}: no answer")))?;
    let found = verifier.found.lock().ok().and_then(|mut f| f.take());
    match (result, found) {
        (_, Some(der)) => Ok(der),
        (Err(e), None) if e.kind() == std::io::ErrorKind::InvalidData => {
            Err(IdentityError::NotPinned {
                url: url.to_string(),
                fingerprint: pinned.to_string(),
            })
        }
        (Err(e), None) => Err(IdentityError::Transient(format!(
            "TLS handshake with {url}: {e}"
        ))),
        (Ok(_), None) => Err(IdentityError::NotPinned {
            url: url.to_string(),
            fingerprint: pinned.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tolerate_colons_and_case() {
        let hex64 = "AB".repeat(32);
        let colons = hex64
            .as_bytes()
            .chunks(2)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(":");
        let want = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(
            normalize_fingerprint(&format!("SHA256:{colons}")).unwrap(),
            want
        );
        assert_eq!(normalize_fingerprint(&hex64).unwrap(), want);
        assert!(normalize_fingerprint("sha256:abc").is_err());
    }

    #[test]
    fn pem_encoding_round_trips() {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = CertificateParams::new(vec!["x".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(
            pem_of(cert.der()).replace("\r\n", "\n"),
            cert.pem().replace("\r\n", "\n")
        );
        assert_eq!(
            certs_of(&pem_of(cert.der()))[0].as_ref(),
            cert.der().as_ref()
        );
    }

    #[test]
    fn urls_give_host_and_port() {
        assert_eq!(
            host_port("https://127.0.0.1:7480"),
            Some(("127.0.0.1".into(), 7480))
        );
        assert_eq!(host_port("https://[::1]:9/"), Some(("::1".into(), 9)));
        assert_eq!(host_port("https://ctl"), Some(("ctl".into(), 443)));
        assert_eq!(host_port("http://x:1"), None);
    }
}
