//! The controller's certificate authority (rcgen, ECDSA P-256): made on first start under the
//! data dir (ca.pem, ca.key 0600) or given by the operator; the server certificate issued from it
//! at every start; the agents' client certificates, each bound to one container instance and
//! recorded as `cert/<sha256 of its DER, hex>`. The link accepts a client certificate only while
//! its record exists: revocation deletes the records of an instance.

use crate::store::{Store, StoreError, Write};
use berth_proto::v1::CertificateRecord;
use prost::Message as _;
use rand::Rng as _;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use sha2::{Digest, Sha256};
use std::io::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The store prefix of client certificate records.
pub const CERT_PREFIX: &str = "cert/";
/// How long a client certificate is valid unless the operator says otherwise (24 h).
pub const DEFAULT_CERTIFICATE_LIFETIME: Duration = Duration::from_secs(86_400);
/// How long after its certificate expired an agent may still get a new one with the same key
/// (Reenroll): an agent host powered off for a while comes back without a new activation.
pub const EXPIRED_RENEWAL_GRACE: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long the generated CA is valid.
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 86_400);
/// How long the server certificate is valid: it is issued anew at every start.
const SERVER_LIFETIME: Duration = Duration::from_secs(2 * 365 * 86_400);
/// A client certificate is valid from this long before it was issued (clock skew).
const BACKDATE: Duration = Duration::from_secs(300);

/// Why a CA, certificate or identity operation failed.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A CA file could not be read or written.
    #[error("CA file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The CA files are missing, half present or do not belong together.
    #[error("CA: {0}")]
    Ca(String),
    /// A CA file does not parse.
    #[error("CA file {path}: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The agent's certificate request is not a valid, signed PKCS#10 request.
    #[error("the certificate request (csr_pem) is not a valid signed PKCS#10 request: {0}")]
    BadCsr(#[source] rcgen::Error),
    /// Making a certificate failed.
    #[error("issuing the {what} certificate: {source}")]
    Issue {
        /// Which certificate.
        what: &'static str,
        /// The cause.
        #[source]
        source: rcgen::Error,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// `sha256:<hex>` of a certificate's DER: the form agents pin (`--ca-fingerprint`).
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// The store key of a client certificate's record.
pub fn cert_key(der: &[u8]) -> String {
    format!("{CERT_PREFIX}{}", hex::encode(Sha256::digest(der)))
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(t)
}

pub(crate) use berth_proto::timestamp;

/// The time a store timestamp names (before 1970 counts as 1970).
pub(crate) fn system_time(t: &berth_proto::Timestamp) -> SystemTime {
    SystemTime::UNIX_EPOCH
        + Duration::from_secs(t.seconds.max(0) as u64)
        + Duration::from_nanos(t.nanos.max(0) as u64)
}

fn random_serial() -> SerialNumber {
    let mut b = [0u8; 16];
    rand::rng().fill(&mut b);
    b[0] &= 0x7f; // positive
    SerialNumber::from_slice(&b)
}

/// A certificate the CA issued to an agent.
#[derive(Debug, Clone)]
pub struct Issued {
    /// PEM.
    pub pem: String,
    /// DER.
    pub der: Vec<u8>,
    /// End of validity.
    pub not_after: SystemTime,
}

/// The server certificate and its key (PEM), for the gRPC port.
pub struct ServerIdentity {
    /// Certificate chain (PEM): the server's, then the CA's.
    pub cert_pem: String,
    /// Private key (PEM, PKCS#8).
    pub key_pem: String,
}

impl std::fmt::Debug for ServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServerIdentity(<key>)")
    }
}

/// The CA: its certificate and signing key.
pub struct Ca {
    cert_pem: String,
    cert_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ca({})", self.fingerprint())
    }
}

fn read(path: &Path) -> Result<String, PkiError> {
    std::fs::read_to_string(path).map_err(|source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn write_new(path: &Path, text: &str, mode: u32) -> Result<(), PkiError> {
    let io = |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

impl Ca {
    /// Loads the CA from `cert` and `key`; when both are absent and `create` is set, makes one
    /// and writes them (the key 0600). One present without the other is an error.
    pub fn load_or_create(cert: &Path, key: &Path, create: bool) -> Result<Self, PkiError> {
        match (cert.exists(), key.exists()) {
            (true, true) => Self::load(cert, key),
            (false, false) if create => {
                let ca = Self::generate()?;
                write_new(key, &ca.issuer.key().serialize_pem(), 0o600)?;
                write_new(cert, &ca.cert_pem, 0o644)?;
                tracing::info!(cert = %cert.display(), fingerprint = %ca.fingerprint(), "created the controller's CA");
                Ok(ca)
            }
            (c, k) => Err(PkiError::Ca(format!(
                "{} is {} and {} is {}: give both (--ca-cert and --ca-key) or, at the default place, neither (one is then made)",
                cert.display(),
                if c { "present" } else { "missing" },
                key.display(),
                if k { "present" } else { "missing" },
            ))),
        }
    }

    /// Loads the CA certificate and its key, checking they belong together.
    pub fn load(cert: &Path, key: &Path) -> Result<Self, PkiError> {
        use std::os::unix::fs::PermissionsExt as _;
        // The CA key signs every identity: one others can read is refused, as the master key.
        if let Ok(m) = std::fs::metadata(key) {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(PkiError::Ca(format!(
                    "{}: mode {mode:o} lets others read the CA key; chmod 600",
                    key.display()
                )));
            }
        }
        let cert_pem = read(cert)?;
        let key_pem = read(key)?;
        let bad = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PkiError::BadCa { path, source }
        };
        let key_pair = KeyPair::from_pem(&key_pem).map_err(bad(key))?;
        let cert_der = pem_der(&cert_pem)
            .ok_or_else(|| PkiError::Ca(format!("{} holds no PEM certificate", cert.display())))?;
        let (_, x509) = x509_parser::parse_x509_certificate(&cert_der).map_err(|e| {
            PkiError::Ca(format!("{}: not an X.509 certificate: {e}", cert.display()))
        })?;
        use rcgen::PublicKeyData as _;
        if x509.public_key().raw != key_pair.subject_public_key_info().as_slice() {
            return Err(PkiError::Ca(format!(
                "{} is not the key of {}",
                key.display(),
                cert.display()
            )));
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(bad(cert))?;
        Ok(Self {
            cert_pem,
            cert_der,
            issuer,
        })
    }

    /// A new self-signed CA (ECDSA P-256).
    pub fn generate() -> Result<Self, PkiError> {
        let issue = |source| PkiError::Issue { what: "CA", source };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "Berth controller CA");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + CA_LIFETIME);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(issue)?;
        Ok(Self {
            cert_pem: cert.pem(),
            cert_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// `sha256:<hex>` of the CA certificate's DER.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert_der)
    }

    /// A server certificate for `names` (each a DNS name or an IP address) with a fresh key.
    pub fn server_identity(&self, names: &[String]) -> Result<ServerIdentity, PkiError> {
        let issue = |source| PkiError::Issue {
            what: "server",
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(issue)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, "berth-controller");
        params.distinguished_name = dn;
        let mut sans = Vec::new();
        for n in names {
            let san = match n.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(n.as_str().try_into().map_err(issue)?),
            };
            if !sans.contains(&san) {
                sans.push(san);
            }
        }
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(now + SERVER_LIFETIME);
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer).map_err(issue)?;
        Ok(ServerIdentity {
            // The chain includes the CA: an agent pinning its fingerprint finds it there.
            cert_pem: format!("{}{}", cert.pem(), self.cert_pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs an agent's certificate request into a client certificate for `instance_arn`
    /// (CN and URI SAN), valid from 5 minutes ago for `lifetime`. Only the request's public key
    /// is taken from it: every name and extension is the CA's choice.
    pub fn sign_client(
        &self,
        csr_pem: &str,
        instance_arn: &str,
        lifetime: Duration,
    ) -> Result<Issued, PkiError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        let issue = |source| PkiError::Issue {
            what: "client",
            source,
        };
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, instance_arn);
        params.distinguished_name = dn;
        params.subject_alt_names = vec![SanType::URI(instance_arn.try_into().map_err(issue)?)];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let now = SystemTime::now();
        let not_after = now + lifetime;
        params.not_before = offset(now - BACKDATE);
        params.not_after = offset(not_after);
        params.serial_number = Some(random_serial());
        let cert = CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&self.issuer)
        .map_err(issue)?;
        Ok(Issued {
            pem: cert.pem(),
            der: cert.der().to_vec(),
            not_after,
        })
    }
}

/// The DER of the first certificate in a PEM text.
pub fn pem_der(pem: &str) -> Option<Vec<u8>> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    CertificateDer::from_pem_slice(pem.as_bytes())
        .ok()
        .map(|c| c.to_vec())
}

/// The CA with the store of the certificates it issued to agents.
pub struct Pki {
    ca: Ca,
    store: Arc<dyn Store>,
    lifetime: Duration,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pki({:?}, lifetime {:?})", self.ca, self.lifetime)
    }
}

fn decode_record(key: &str, bytes: &[u8]) -> Result<CertificateRecord, StoreError> {
    CertificateRecord::decode(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

impl Pki {
    /// The CA `ca` issuing client certificates valid for `lifetime`, recorded in `store`.
    pub fn new(ca: Ca, store: Arc<dyn Store>, lifetime: Duration) -> Self {
        Self {
            ca,
            store,
            lifetime,
        }
    }

    /// The CA.
    pub fn ca(&self) -> &Ca {
        &self.ca
    }

    /// The SHA-256 (hex) of the public key `csr_pem` asks a certificate for: which key pair is
    /// enrolling.
    pub fn csr_key(csr_pem: &str) -> Result<String, PkiError> {
        use rcgen::PublicKeyData as _;
        let csr = CertificateSigningRequestParams::from_pem(csr_pem).map_err(PkiError::BadCsr)?;
        Ok(hex::encode(Sha256::digest(csr.public_key.der_bytes())))
    }

    /// Signs `csr_pem` for the instance; returns the certificate and the write of its record
    /// (for the caller to commit with the rest of its change).
    pub fn issue(
        &self,
        csr_pem: &str,
        instance_arn: &str,
        cluster_arn: &str,
        activation_id: &str,
    ) -> Result<(Issued, Write), PkiError> {
        let public_key_sha256 = Self::csr_key(csr_pem)?;
        let issued = self.ca.sign_client(csr_pem, instance_arn, self.lifetime)?;
        let record = CertificateRecord {
            container_instance_arn: instance_arn.to_string(),
            cluster_arn: cluster_arn.to_string(),
            not_after: Some(timestamp(issued.not_after)),
            activation_id: activation_id.to_string(),
            public_key_sha256,
        };
        let write = Write::Put(cert_key(&issued.der), record.encode_to_vec());
        Ok((issued, write))
    }

    /// The record of a presented client certificate (its DER); `None` when the CA never issued
    /// it, it was revoked, or it has expired.
    pub fn identify(&self, der: &[u8]) -> Result<Option<CertificateRecord>, PkiError> {
        let key = cert_key(der);
        let now = SystemTime::now();
        for (k, v) in crate::store::blocking(|| self.store.scan(&key))? {
            if k == key {
                let r = decode_record(&k, &v)?;
                let live = r.not_after.as_ref().is_some_and(|t| system_time(t) > now);
                return Ok(live.then_some(r));
            }
        }
        Ok(None)
    }

    /// The writes that delete the records of every certificate of `instance_arn` (revocation),
    /// or only of those expired when `expired_only`.
    pub fn revocation_writes(
        store: &dyn Store,
        instance_arn: &str,
        expired_only: bool,
    ) -> Result<Vec<Write>, StoreError> {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for (k, v) in store.scan(CERT_PREFIX)? {
            let r = decode_record(&k, &v)?;
            if r.container_instance_arn != instance_arn {
                continue;
            }
            let expired = r.not_after.as_ref().is_none_or(|t| system_time(t) <= now);
            if !expired_only || expired {
                out.push(Write::Delete(k));
            }
        }
        Ok(out)
    }

    /// Records a renewed certificate (`write`, from [`Pki::issue`]) and drops the records of the
    /// instance's expired ones; the current one stays valid until it expires.
    pub fn record_renewal(&self, instance_arn: &str, write: Write) -> Result<(), PkiError> {
        let mut writes = crate::store::blocking(|| {
            Self::revocation_writes(self.store.as_ref(), instance_arn, true)
        })?;
        writes.push(write);
        Ok(crate::store::blocking(|| self.store.commit(writes))?)
    }

    /// The record of a certificate of `instance_arn` for the key `csr_pem` is signed with (the
    /// request's signature proves the key is held), expired (by `now`) less than `grace` ago:
    /// what Reenroll needs to issue a new certificate. None: no such certificate (never issued
    /// for that key, revoked, or expired too long ago).
    pub fn expired_record_for_key(
        &self,
        csr_pem: &str,
        instance_arn: &str,
        grace: Duration,
        now: SystemTime,
    ) -> Result<Option<CertificateRecord>, PkiError> {
        let key = Self::csr_key(csr_pem)?;
        for (k, v) in crate::store::blocking(|| self.store.scan(CERT_PREFIX))? {
            let r = decode_record(&k, &v)?;
            let not_after = r.not_after.as_ref().map_or(UNIX_EPOCH, system_time);
            if r.container_instance_arn == instance_arn
                && !r.public_key_sha256.is_empty()
                && r.public_key_sha256 == key
                && not_after <= now
                && not_after + grace > now
            {
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    /// Revokes every certificate of `instance_arn`; returns how many.
    pub fn revoke(&self, instance_arn: &str) -> Result<usize, PkiError> {
        let writes = crate::store::blocking(|| {
            Self::revocation_writes(self.store.as_ref(), instance_arn, false)
        })?;
        let n = writes.len();
        if n > 0 {
            crate::store::blocking(|| self.store.commit(writes))?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn csr() -> (KeyPair, String) {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut p = CertificateParams::default();
        // What the agent asks for is ignored: the CA names the certificate.
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, "I am someone else");
        let pem = p.serialize_request(&key).unwrap().pem().unwrap();
        (key, pem)
    }

    fn pki() -> Pki {
        Pki::new(
            Ca::generate().unwrap(),
            Arc::new(MemoryStore::default()),
            Duration::from_secs(60),
        )
    }

    const ARN: &str = "arn:aws:ecs:on-prem:000000000000:container-instance/c/abc";

    #[test]
    fn a_csr_is_signed_for_the_instance_with_the_cas_names_only() {
        let pki = pki();
        let (key, pem) = csr();
        let (issued, _) = pki.issue(&pem, ARN, "cluster", "act").unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&issued.der).unwrap();
        let cn = x.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), ARN);
        use rcgen::PublicKeyData as _;
        assert_eq!(x.public_key().raw, key.subject_public_key_info().as_slice());
        let ca_der = pem_der(pki.ca().cert_pem()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(&ca_der).unwrap();
        assert_eq!(x.issuer(), ca.subject());
        x.verify_signature(Some(ca.public_key())).unwrap();
        let life = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(life, 60 + 300);
        assert!(
            x.tbs_certificate
                .extended_key_usage()
                .unwrap()
                .unwrap()
                .value
                .client_auth
        );
    }

    #[test]
    fn a_bad_csr_is_refused() {
        let pki = pki();
        let e = pki.issue("not a csr", ARN, "c", "a").unwrap_err();
        assert!(matches!(e, PkiError::BadCsr(_)), "{e}");
        // A certificate is not a request.
        let e = pki.issue(pki.ca().cert_pem(), ARN, "c", "a").unwrap_err();
        assert!(matches!(e, PkiError::BadCsr(_)), "{e}");
    }

    #[test]
    fn the_fingerprint_is_sha256_of_the_der() {
        let ca = Ca::generate().unwrap();
        let der = pem_der(ca.cert_pem()).unwrap();
        let f = ca.fingerprint();
        assert_eq!(f, format!("sha256:{}", hex::encode(Sha256::digest(&der))));
        assert_eq!(f.len(), "sha256:".len() + 64);
    }

    /// A store and a CA issuing 60 s certificates over it.
    fn rig() -> (Arc<dyn Store>, Pki) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let pki = Pki::new(
            Ca::generate().unwrap(),
            store.clone(),
            Duration::from_secs(60),
        );
        (store, pki)
    }

    #[test]
    fn an_expired_certificates_key_gets_a_new_one_within_the_grace_only() {
        let (store, pki) = rig();
        let (_, pem) = csr();
        let (issued, write) = pki.issue(&pem, ARN, "c", "a").unwrap();
        store.commit(vec![write]).unwrap();
        let grace = Duration::from_secs(3600);
        let later = issued.not_after + Duration::from_secs(600);
        // The same key (a new request signed with it), for its instance, within the grace.
        let r = pki
            .expired_record_for_key(&pem, ARN, grace, later)
            .unwrap()
            .unwrap();
        assert_eq!(r.container_instance_arn, ARN);
        // Another key, another instance, or past the grace: nothing.
        let (_, other_key) = csr();
        assert!(pki
            .expired_record_for_key(&other_key, ARN, grace, later)
            .unwrap()
            .is_none());
        assert!(pki
            .expired_record_for_key(&pem, "arn:other", grace, later)
            .unwrap()
            .is_none());
        // A certificate still valid is renewed with RenewCertificate, not this.
        let before = issued.not_after - Duration::from_secs(1);
        assert!(pki
            .expired_record_for_key(&pem, ARN, grace, before)
            .unwrap()
            .is_none());
        let too_late = issued.not_after + grace + Duration::from_secs(1);
        assert!(pki
            .expired_record_for_key(&pem, ARN, grace, too_late)
            .unwrap()
            .is_none());
        // Revoked (deregistered): nothing.
        pki.revoke(ARN).unwrap();
        assert!(pki
            .expired_record_for_key(&pem, ARN, grace, later)
            .unwrap()
            .is_none());
    }

    #[test]
    fn identity_is_found_only_for_a_recorded_certificate_until_revoked() {
        let (store, pki) = rig();
        let (_, pem) = csr();
        let (issued, write) = pki.issue(&pem, ARN, "c", "a").unwrap();
        // Signed but not recorded: unknown.
        assert!(pki.identify(&issued.der).unwrap().is_none());
        store.commit(vec![write]).unwrap();
        let r = pki.identify(&issued.der).unwrap().unwrap();
        assert_eq!(r.container_instance_arn, ARN);
        // Another instance's certificate is another record.
        let (other, w) = pki.issue(&pem, "arn:other", "c", "a").unwrap();
        store.commit(vec![w]).unwrap();
        assert_eq!(pki.revoke(ARN).unwrap(), 1);
        assert!(pki.identify(&issued.der).unwrap().is_none());
        assert_eq!(
            pki.identify(&other.der)
                .unwrap()
                .unwrap()
                .container_instance_arn,
            "arn:other"
        );
    }

    #[test]
    fn an_expired_record_identifies_nobody() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let pki = Pki::new(Ca::generate().unwrap(), store.clone(), Duration::ZERO);
        let (_, pem) = csr();
        let (issued, write) = pki.issue(&pem, ARN, "c", "a").unwrap();
        store.commit(vec![write]).unwrap();
        assert!(pki.identify(&issued.der).unwrap().is_none());
        let w = Pki::revocation_writes(store.as_ref(), ARN, true).unwrap();
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_ca_is_made_once_with_a_private_key_and_loaded_after() {
        let dir = std::env::temp_dir().join(format!("berth-pki-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let (c, k) = (dir.join("ca.pem"), dir.join("ca.key"));
        let e = Ca::load_or_create(&c, &k, false).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let made = Ca::load_or_create(&c, &k, true).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&k).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = Ca::load_or_create(&c, &k, true).unwrap();
        assert_eq!(made.fingerprint(), loaded.fingerprint());
        // A CA key others can read is refused.
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = Ca::load(&c, &k).unwrap_err();
        assert!(e.to_string().contains("chmod 600"), "{e}");
        std::fs::set_permissions(&k, std::fs::Permissions::from_mode(0o600)).unwrap();
        // A key that is not the certificate's is refused.
        let other = Ca::generate().unwrap();
        std::fs::write(&k, other.issuer.key().serialize_pem()).unwrap();
        let e = Ca::load(&c, &k).unwrap_err();
        assert!(e.to_string().contains("is not the key of"), "{e}");
        std::fs::remove_file(&k).unwrap();
        let e = Ca::load_or_create(&c, &k, true).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_server_certificate_names_every_address() {
        let ca = Ca::generate().unwrap();
        let id = ca
            .server_identity(&[
                "localhost".into(),
                "127.0.0.1".into(),
                "::1".into(),
                "ctl.lab".into(),
            ])
            .unwrap();
        let der = pem_der(&id.cert_pem).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = format!("{:?}", x.subject_alternative_name().unwrap().unwrap().value);
        for n in ["localhost", "ctl.lab", "127.0.0.1"] {
            assert!(
                sans.contains(n) || sans.contains("[127, 0, 0, 1]"),
                "{n}: {sans}"
            );
        }
    }
}
