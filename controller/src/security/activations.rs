//! SSM-style activations (the ECS Anywhere registration) and the enrollment they allow: an
//! operator creates one (`berth ssm create-activation`), gets its id and code once, and gives
//! them to an agent, which enrolls: the controller checks the activation, registers the
//! container instance and signs the agent's certificate request for it.
//!
//! The code is kept only as its SHA-256 (`activation/ID`, [`ActivationRecord`]); neither the
//! code nor its hash is ever shown or logged.

use crate::error::EcsError;
use crate::security::pki::{system_time, timestamp, Pki, PkiError};
use crate::service::Controller;
use crate::store::{Store, StoreError, Write};
use berth_proto::v1::*;
use prost::Message as _;
use rand::Rng as _;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// The store prefix of activation records.
pub const ACTIVATION_PREFIX: &str = "activation/";
/// aws' default RegistrationLimit.
pub const DEFAULT_REGISTRATION_LIMIT: i32 = 1;
/// aws' largest RegistrationLimit.
pub const MAX_REGISTRATION_LIMIT: i32 = 1000;
/// aws' default validity of an activation (24 h).
pub const DEFAULT_EXPIRATION: Duration = Duration::from_secs(86_400);
/// aws' furthest ExpirationDate (30 days ahead).
pub const MAX_EXPIRATION: Duration = Duration::from_secs(30 * 86_400);
/// Characters of a generated activation code.
const CODE_LEN: usize = 24;

/// SSM's exception names (botocore ssm 2014-11-06).
pub mod exceptions {
    /// A CreateActivation parameter is wrong.
    pub const INVALID_PARAMETERS: &str = "InvalidParameters";
    /// The activation is not valid (deleted, code mismatch, expired, limit reached).
    pub const INVALID_ACTIVATION: &str = "InvalidActivation";
    /// The activation id names no activation.
    pub const INVALID_ACTIVATION_ID: &str = "InvalidActivationId";
    /// A DescribeActivations filter key is not one SSM knows.
    pub const INVALID_FILTER: &str = "InvalidFilter";
    /// A NextToken this service did not give.
    pub const INVALID_NEXT_TOKEN: &str = "InvalidNextToken";
    /// The server failed.
    pub const INTERNAL_SERVER_ERROR: &str = "InternalServerError";
}

/// Why an activation call or an enrollment failed; each variant names SSM's exception.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// InvalidParameters
    #[error("{0}")]
    InvalidParameters(String),
    /// InvalidActivationId
    #[error("{0}")]
    InvalidActivationId(String),
    /// InvalidActivation: the id is unknown or the code does not match (the refusal does not
    /// say which).
    #[error(
        "activation refused: the ActivationId is unknown or the ActivationCode does not match it"
    )]
    Refused,
    /// InvalidActivation: expired.
    #[error("activation {0} has expired; create a new one (berth ssm create-activation)")]
    Expired(String),
    /// InvalidActivation: every registration it allows was used.
    #[error("activation {id} has reached its registration limit ({limit}); create a new one (berth ssm create-activation)")]
    LimitReached {
        /// The activation.
        id: String,
        /// Its RegistrationLimit.
        limit: i32,
    },
    /// InvalidFilter
    #[error("{0}")]
    InvalidFilter(String),
    /// InvalidNextToken
    #[error("the NextToken {0:?} was not given by DescribeActivations")]
    InvalidNextToken(String),
    /// The certificate request could not be signed.
    #[error(transparent)]
    Pki(#[from] PkiError),
    /// Registering the container instance failed (an ECS error: cluster not found, ...).
    #[error(transparent)]
    Ecs(#[from] EcsError),
    /// InternalServerError: the store failed; nothing was changed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
}

impl ActivationError {
    /// The exception name the caller sees.
    pub fn exception_name(&self) -> &'static str {
        use exceptions as x;
        match self {
            Self::InvalidParameters(_) => x::INVALID_PARAMETERS,
            Self::InvalidActivationId(_) => x::INVALID_ACTIVATION_ID,
            Self::Refused | Self::Expired(_) | Self::LimitReached { .. } => x::INVALID_ACTIVATION,
            Self::InvalidFilter(_) => x::INVALID_FILTER,
            Self::InvalidNextToken(_) => x::INVALID_NEXT_TOKEN,
            Self::Pki(PkiError::BadCsr(_)) => x::INVALID_PARAMETERS,
            Self::Pki(_) | Self::Store(_) => x::INTERNAL_SERVER_ERROR,
            Self::Ecs(e) => e.exception_name(),
        }
    }
}

impl From<ActivationError> for tonic::Status {
    fn from(e: ActivationError) -> Self {
        use tonic::Code;
        let code = match &e {
            ActivationError::Ecs(_) => {
                if let ActivationError::Ecs(e) = e {
                    return e.into();
                }
                Code::Internal
            }
            ActivationError::Refused => Code::PermissionDenied,
            ActivationError::Expired(_) | ActivationError::LimitReached { .. } => {
                Code::FailedPrecondition
            }
            ActivationError::InvalidActivationId(_) => Code::NotFound,
            ActivationError::InvalidParameters(_)
            | ActivationError::InvalidFilter(_)
            | ActivationError::InvalidNextToken(_)
            | ActivationError::Pki(PkiError::BadCsr(_)) => Code::InvalidArgument,
            ActivationError::Pki(_) | ActivationError::Store(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        status.metadata_mut().insert(
            berth_proto::exceptions::METADATA_KEY,
            tonic::metadata::MetadataValue::from_static(e.exception_name()),
        );
        status
    }
}

fn code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(code.as_bytes()).to_vec()
}

fn new_code() -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

fn valid_id(id: &str) -> bool {
    uuid::Uuid::parse_str(id).is_ok_and(|u| u.hyphenated().to_string() == id)
}

/// A new activation: its id and its code (shown once).
pub struct Created {
    /// ActivationId.
    pub activation_id: String,
    /// ActivationCode.
    pub activation_code: String,
}

impl std::fmt::Debug for Created {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Created({}, <code>)", self.activation_id)
    }
}

/// The activations and enrollment service.
pub struct Activations {
    store: Arc<dyn Store>,
    /// Serialises every change of an activation, so concurrent enrollments cannot exceed a
    /// registration limit.
    lock: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Activations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Activations")
    }
}

fn expired(a: &Activation, now: SystemTime) -> bool {
    a.expiration_date
        .as_ref()
        .is_none_or(|t| system_time(t) <= now)
}

impl Activations {
    /// The activations kept in `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    fn get(&self, id: &str) -> Result<Option<ActivationRecord>, ActivationError> {
        let key = format!("{ACTIVATION_PREFIX}{id}");
        for (k, v) in crate::store::blocking(|| self.store.scan(&key))? {
            if k == key {
                return Ok(Some(
                    ActivationRecord::decode(v.as_slice())
                        .map_err(|source| StoreError::Decode { key: k, source })?,
                ));
            }
        }
        Ok(None)
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), ActivationError> {
        Ok(crate::store::blocking(|| self.store.commit(writes))?)
    }

    /// CreateActivation, with aws' defaults and limits.
    pub async fn create(
        &self,
        req: CreateActivationRequest,
        now: SystemTime,
    ) -> Result<Created, ActivationError> {
        let bad = |m: String| Err(ActivationError::InvalidParameters(m));
        if req.iam_role.trim().is_empty() {
            return bad("IamRole: is required".into());
        }
        if req.iam_role.len() > 64 {
            return bad("IamRole: at most 64 characters".into());
        }
        if req.description.as_ref().is_some_and(|d| d.len() > 256) {
            return bad("Description: at most 256 characters".into());
        }
        if let Some(n) = &req.default_instance_name {
            if n.is_empty()
                || n.len() > 256
                || !n
                    .chars()
                    .all(|c| c.is_alphanumeric() || " _.:/=+-@".contains(c))
            {
                return bad(format!(
                    "DefaultInstanceName: {n:?} must be 1 to 256 letters, digits, spaces or _.:/=+-@"
                ));
            }
        }
        let limit = req.registration_limit.unwrap_or(DEFAULT_REGISTRATION_LIMIT);
        if !(1..=MAX_REGISTRATION_LIMIT).contains(&limit) {
            return bad(format!(
                "RegistrationLimit: {limit} is not between 1 and {MAX_REGISTRATION_LIMIT}"
            ));
        }
        let expires = match &req.expiration_date {
            None => now + DEFAULT_EXPIRATION,
            Some(t) => {
                let at = system_time(t);
                if at <= now {
                    return bad("ExpirationDate: must be in the future".into());
                }
                if at > now + MAX_EXPIRATION {
                    return bad("ExpirationDate: at most 30 days ahead".into());
                }
                at
            }
        };
        if !req.registration_metadata.is_empty() {
            return bad("RegistrationMetadata: not supported by Berth".into());
        }
        let id = uuid::Uuid::new_v4().hyphenated().to_string();
        let code = new_code();
        let record = ActivationRecord {
            activation: Some(Activation {
                activation_id: id.clone(),
                description: req.description,
                default_instance_name: req.default_instance_name,
                iam_role: req.iam_role,
                registration_limit: limit,
                registrations_count: 0,
                expiration_date: Some(timestamp(expires)),
                expired: false,
                created_date: Some(timestamp(now)),
                tags: req.tags,
            }),
            code_sha256: code_hash(&code),
            enrolled_keys: Default::default(),
        };
        let _g = self.lock.lock().await;
        self.commit(vec![Write::Put(
            format!("{ACTIVATION_PREFIX}{id}"),
            record.encode_to_vec(),
        )])?;
        tracing::info!(activation = %id, limit, "activation created");
        Ok(Created {
            activation_id: id,
            activation_code: code,
        })
    }

    /// DescribeActivations: filtered by ActivationIds, DefaultInstanceName or IamRole, in id
    /// order, paged; Expired as of `now`; never the code.
    pub async fn describe(
        &self,
        req: DescribeActivationsRequest,
        now: SystemTime,
    ) -> Result<DescribeActivationsResponse, ActivationError> {
        for f in &req.filters {
            if !["ActivationIds", "DefaultInstanceName", "IamRole"].contains(&f.filter_key.as_str())
            {
                return Err(ActivationError::InvalidFilter(format!(
                    "FilterKey {:?}: expected ActivationIds, DefaultInstanceName or IamRole",
                    f.filter_key
                )));
            }
        }
        let size = match req.max_results {
            None => 50,
            Some(n) if (1..=50).contains(&n) => n as usize,
            Some(n) => {
                return Err(ActivationError::InvalidParameters(format!(
                    "MaxResults: {n} is not between 1 and 50"
                )))
            }
        };
        let rows = crate::store::blocking(|| self.store.scan(ACTIVATION_PREFIX))?;
        let mut all = Vec::new();
        for (k, v) in rows {
            let r = ActivationRecord::decode(v.as_slice())
                .map_err(|source| StoreError::Decode { key: k, source })?;
            let Some(mut a) = r.activation else { continue };
            let keep = req.filters.iter().all(|f| {
                let v = match f.filter_key.as_str() {
                    "ActivationIds" => Some(a.activation_id.as_str()),
                    "DefaultInstanceName" => a.default_instance_name.as_deref(),
                    _ => Some(a.iam_role.as_str()),
                };
                v.is_some_and(|v| f.filter_values.iter().any(|x| x == v))
            });
            if keep {
                a.expired = expired(&a, now);
                all.push(a);
            }
        }
        let start = match &req.next_token {
            None => 0,
            Some(t) => all
                .iter()
                .position(|a| &a.activation_id == t)
                .ok_or_else(|| ActivationError::InvalidNextToken(t.clone()))?,
        };
        let next_token = all.get(start + size).map(|a| a.activation_id.clone());
        let activation_list = all.into_iter().skip(start).take(size).collect();
        Ok(DescribeActivationsResponse {
            activation_list,
            next_token,
        })
    }

    /// DeleteActivation: no further registration with it (instances registered stay).
    pub async fn delete(&self, id: &str) -> Result<(), ActivationError> {
        let _g = self.lock.lock().await;
        if !valid_id(id) || self.get(id)?.is_none() {
            return Err(ActivationError::InvalidActivationId(format!(
                "ActivationId {id:?} names no activation"
            )));
        }
        self.commit(vec![Write::Delete(format!("{ACTIVATION_PREFIX}{id}"))])?;
        tracing::info!(activation = %id, "activation deleted");
        Ok(())
    }

    /// Checks an activation's code and expiry; returns its record.
    fn check(
        &self,
        id: &str,
        code: &str,
        now: SystemTime,
    ) -> Result<ActivationRecord, ActivationError> {
        let record = match valid_id(id).then(|| self.get(id)).transpose()? {
            Some(Some(r)) => r,
            _ => return Err(ActivationError::Refused),
        };
        // Comparing digests: timing tells nothing about the code itself.
        if record.code_sha256 != code_hash(code) {
            return Err(ActivationError::Refused);
        }
        let a = record.activation.clone().unwrap_or_default();
        if expired(&a, now) {
            return Err(ActivationError::Expired(id.to_string()));
        }
        Ok(record)
    }

    /// Refuses one more registration past the activation's limit.
    fn check_limit(id: &str, record: &ActivationRecord) -> Result<(), ActivationError> {
        let a = record.activation.clone().unwrap_or_default();
        if a.registrations_count >= a.registration_limit {
            return Err(ActivationError::LimitReached {
                id: id.to_string(),
                limit: a.registration_limit,
            });
        }
        Ok(())
    }

    /// Enroll: checks the activation, registers the container instance in the named cluster,
    /// counts the registration and signs the certificate request for the instance; the
    /// registration, the count and the certificate's record are one commit.
    pub async fn enroll(
        &self,
        controller: &Controller,
        pki: &Pki,
        req: EnrollRequest,
        now: SystemTime,
    ) -> Result<EnrollResponse, ActivationError> {
        let _g = self.lock.lock().await;
        let mut record = self.check(&req.activation_id, &req.activation_code, now)?;
        let key = Pki::csr_key(&req.csr_pem)?;
        // A key whose instance was deregistered since (or has left the store) gets no
        // shortcut: it enrolls as a new instance, like any other.
        let enrolled = match record.enrolled_keys.get(&key).cloned() {
            Some(arn) => {
                let id = berth_proto::arn::short_id("container-instance", &arn).unwrap_or_default();
                controller.instance_active(id).await.then_some(arn)
            }
            None => None,
        };
        if let Some(arn) = enrolled {
            // The same key pair again: its agent lost our answer. The same instance, a fresh
            // certificate, no registration counted.
            let cluster = arn
                .split_once(":container-instance/")
                .and_then(|(_, rest)| rest.split_once('/'))
                .map(|(cluster, _)| berth_proto::arn::cluster(cluster))
                .unwrap_or_default();
            let (cert, write) = pki.issue(&req.csr_pem, &arn, &cluster, &req.activation_id)?;
            self.commit(vec![write])?;
            // A deregistration between the check and the commit would have missed this record.
            let id = berth_proto::arn::short_id("container-instance", &arn).unwrap_or_default();
            if !controller.instance_active(id).await {
                pki.revoke(&arn)?;
                return Err(ActivationError::Refused);
            }
            tracing::info!(activation = %req.activation_id, instance = %arn,
                "agent enrolled again with the same key (its first answer was lost)");
            return Ok(EnrollResponse {
                container_instance_arn: arn,
                certificate_pem: cert.pem,
                ca_pem: pki.ca().cert_pem().to_string(),
                not_after: Some(timestamp(cert.not_after)),
            });
        }
        Self::check_limit(&req.activation_id, &record)?;
        let mut registration = req.registration.unwrap_or_default();
        registration.cluster = req.cluster;
        registration.container_instance_arn = None;
        registration.hostname = req.hostname.or(registration.hostname);
        let mut issued = None;
        let id = req.activation_id.clone();
        let ci = controller
            .register_container_instance_with(registration, |ci, cluster_arn| {
                let arn = &ci.container_instance_arn;
                let (cert, cert_write) = pki.issue(&req.csr_pem, arn, cluster_arn, &id)?;
                issued = Some(cert);
                if let Some(a) = record.activation.as_mut() {
                    a.registrations_count += 1;
                }
                record.enrolled_keys.insert(key.clone(), arn.clone());
                Ok::<_, ActivationError>(vec![
                    cert_write,
                    Write::Put(format!("{ACTIVATION_PREFIX}{id}"), record.encode_to_vec()),
                ])
            })
            .await?;
        let Some(cert) = issued else {
            return Err(ActivationError::Pki(PkiError::Ca(
                "no certificate was issued".into(),
            )));
        };
        tracing::info!(activation = %id, instance = %ci.container_instance_arn, "agent enrolled");
        Ok(EnrollResponse {
            container_instance_arn: ci.container_instance_arn,
            certificate_pem: cert.pem,
            ca_pem: pki.ca().cert_pem().to_string(),
            not_after: Some(timestamp(cert.not_after)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::Fleet;
    use crate::security::pki::Ca;
    use crate::store::memory::MemoryStore;

    fn ts(t: SystemTime) -> Option<berth_proto::Timestamp> {
        Some(timestamp(t))
    }

    fn req(role: &str) -> CreateActivationRequest {
        CreateActivationRequest {
            iam_role: role.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn defaults_and_limits_are_aws() {
        let now = SystemTime::now();
        let s = Activations::new(Arc::new(MemoryStore::default()));
        let c = s.create(req("ecsAnywhereRole"), now).await.unwrap();
        assert!(c.activation_code.len() >= 20);
        let d = s.describe(Default::default(), now).await.unwrap();
        let a = &d.activation_list[0];
        assert_eq!(a.registration_limit, 1);
        assert_eq!(a.registrations_count, 0);
        assert!(!a.expired);
        assert_eq!(
            system_time(a.expiration_date.as_ref().unwrap()),
            SystemTime::UNIX_EPOCH
                + Duration::from_secs(timestamp(now + DEFAULT_EXPIRATION).seconds as u64)
                + Duration::from_nanos(timestamp(now).nanos as u64)
        );
        for (r, what) in [
            (req(""), "IamRole"),
            (
                CreateActivationRequest {
                    registration_limit: Some(1001),
                    ..req("r")
                },
                "RegistrationLimit",
            ),
            (
                CreateActivationRequest {
                    registration_limit: Some(0),
                    ..req("r")
                },
                "RegistrationLimit",
            ),
            (
                CreateActivationRequest {
                    expiration_date: ts(now - Duration::from_secs(1)),
                    ..req("r")
                },
                "in the future",
            ),
            (
                CreateActivationRequest {
                    expiration_date: ts(now + MAX_EXPIRATION + Duration::from_secs(60)),
                    ..req("r")
                },
                "30 days",
            ),
        ] {
            let e = s.create(r, now).await.unwrap_err();
            assert_eq!(e.exception_name(), "InvalidParameters");
            assert!(e.to_string().contains(what), "{e}");
        }
        assert_eq!(
            s.describe(Default::default(), now)
                .await
                .unwrap()
                .activation_list
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn only_the_hash_of_the_code_is_stored_and_never_shown() {
        let store = Arc::new(MemoryStore::default());
        let s = Activations::new(store.clone());
        let now = SystemTime::now();
        let c = s.create(req("r"), now).await.unwrap();
        for (_, v) in store.scan("").unwrap() {
            let text = String::from_utf8_lossy(&v);
            assert!(!text.contains(&c.activation_code));
        }
        let d = s.describe(Default::default(), now).await.unwrap();
        let shown = serde_json::to_string(&d).unwrap();
        assert!(!shown.contains(&c.activation_code), "{shown}");
        let r = s.get(&c.activation_id).unwrap().unwrap();
        assert_eq!(
            r.code_sha256,
            Sha256::digest(c.activation_code.as_bytes()).to_vec()
        );
    }

    #[tokio::test]
    async fn describe_filters_and_computes_expired_and_delete_needs_a_known_id() {
        let s = Activations::new(Arc::new(MemoryStore::default()));
        let now = SystemTime::now();
        let a = s.create(req("a"), now).await.unwrap();
        let soon = CreateActivationRequest {
            expiration_date: ts(now + Duration::from_secs(5)),
            ..req("b")
        };
        let b = s.create(soon, now).await.unwrap();
        let f = |k: &str, v: &str| DescribeActivationsRequest {
            filters: vec![DescribeActivationsFilter {
                filter_key: k.into(),
                filter_values: vec![v.into()],
            }],
            ..Default::default()
        };
        let d = s.describe(f("IamRole", "b"), now).await.unwrap();
        assert_eq!(d.activation_list.len(), 1);
        assert_eq!(d.activation_list[0].activation_id, b.activation_id);
        let later = now + Duration::from_secs(10);
        let d = s
            .describe(f("ActivationIds", &b.activation_id), later)
            .await
            .unwrap();
        assert!(d.activation_list[0].expired);
        let e = s.describe(f("Color", "x"), now).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidFilter");
        let page = s
            .describe(
                DescribeActivationsRequest {
                    max_results: Some(1),
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(page.activation_list.len(), 1);
        let rest = s
            .describe(
                DescribeActivationsRequest {
                    next_token: page.next_token,
                    ..Default::default()
                },
                now,
            )
            .await
            .unwrap();
        assert_eq!(rest.activation_list.len(), 1);
        assert_ne!(
            rest.activation_list[0].activation_id,
            page.activation_list[0].activation_id
        );
        let e = s
            .delete("00000000-0000-4000-8000-000000000000")
            .await
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidActivationId");
        s.delete(&a.activation_id).await.unwrap();
        assert_eq!(
            s.describe(Default::default(), now)
                .await
                .unwrap()
                .activation_list
                .len(),
            1
        );
    }

    fn csr() -> String {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        rcgen::CertificateParams::default()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap()
    }

    /// A store, a controller, a CA and activations over it.
    fn rig() -> (Arc<dyn Store>, Controller, Pki, Activations) {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
        let controller = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
        let pki = Pki::new(
            Ca::generate().unwrap(),
            store.clone(),
            Duration::from_secs(60),
        );
        let s = Activations::new(store.clone());
        (store, controller, pki, s)
    }

    fn enroll_req(id: &str, code: &str) -> EnrollRequest {
        let int = |name: &str, v: i32| Resource {
            name: name.into(),
            r#type: "INTEGER".into(),
            integer_value: v,
            ..Default::default()
        };
        EnrollRequest {
            activation_id: id.into(),
            activation_code: code.into(),
            csr_pem: csr(),
            cluster: "default".into(),
            hostname: Some("h".into()),
            registration: Some(RegisterContainerInstanceRequest {
                total_resources: vec![int("CPU", 1024), int("MEMORY", 512)],
                ..Default::default()
            }),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn enrollment_checks_code_expiry_and_limit_and_counts_once_per_instance() {
        let (store, controller, pki, s) = rig();
        let now = SystemTime::now();
        let c = s
            .create(
                CreateActivationRequest {
                    registration_limit: Some(2),
                    expiration_date: ts(now + Duration::from_secs(60)),
                    ..req("r")
                },
                now,
            )
            .await
            .unwrap();
        let id = c.activation_id.as_str();
        let wrong = s
            .enroll(&controller, &pki, enroll_req(id, "wrong"), now)
            .await
            .unwrap_err();
        let unknown = s
            .enroll(
                &controller,
                &pki,
                enroll_req("nope", &c.activation_code),
                now,
            )
            .await
            .unwrap_err();
        // One refusal that does not tell which was wrong.
        assert_eq!(wrong.to_string(), unknown.to_string());
        assert_eq!(wrong.exception_name(), "InvalidActivation");
        let e = s
            .enroll(
                &controller,
                &pki,
                enroll_req(id, &c.activation_code),
                now + Duration::from_secs(61),
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("expired"), "{e}");
        let mut arns = Vec::new();
        for _ in 0..2 {
            let r = s
                .enroll(&controller, &pki, enroll_req(id, &c.activation_code), now)
                .await
                .unwrap();
            let der = crate::security::pki::pem_der(&r.certificate_pem).unwrap();
            let rec = pki.identify(&der).unwrap().unwrap();
            assert_eq!(rec.container_instance_arn, r.container_instance_arn);
            assert_eq!(rec.activation_id, id);
            arns.push(r.container_instance_arn);
        }
        assert_ne!(arns[0], arns[1]);
        let e = s
            .enroll(&controller, &pki, enroll_req(id, &c.activation_code), now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("registration limit (2)"), "{e}");
        let d = s.describe(Default::default(), now).await.unwrap();
        assert_eq!(d.activation_list[0].registrations_count, 2);
        // A refused request changes nothing: still two instances.
        assert_eq!(store.scan("instance/").unwrap().len(), 2);
        // A bad CSR registers nothing and uses no registration.
        let c2 = s.create(req("r"), now).await.unwrap();
        let mut bad = enroll_req(&c2.activation_id, &c2.activation_code);
        bad.csr_pem = "junk".into();
        let e = s.enroll(&controller, &pki, bad, now).await.unwrap_err();
        assert!(
            matches!(e, ActivationError::Pki(PkiError::BadCsr(_))),
            "{e}"
        );
        assert_eq!(store.scan("instance/").unwrap().len(), 2);
        s.enroll(
            &controller,
            &pki,
            enroll_req(&c2.activation_id, &c2.activation_code),
            now,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn the_same_key_enrolling_again_gets_its_instance_back_without_a_registration() {
        let (store, controller, pki, s) = rig();
        let now = SystemTime::now();
        // The default limit: one registration.
        let c = s.create(req("r"), now).await.unwrap();
        let first = enroll_req(&c.activation_id, &c.activation_code);
        let a = s
            .enroll(&controller, &pki, first.clone(), now)
            .await
            .unwrap();
        // Its answer was lost: the agent asks again with the same key pair.
        let b = s
            .enroll(&controller, &pki, first.clone(), now)
            .await
            .unwrap();
        assert_eq!(a.container_instance_arn, b.container_instance_arn);
        assert_ne!(a.certificate_pem, b.certificate_pem);
        let der = crate::security::pki::pem_der(&b.certificate_pem).unwrap();
        let rec = pki.identify(&der).unwrap().unwrap();
        assert_eq!(rec.container_instance_arn, a.container_instance_arn);
        assert_eq!(store.scan("instance/").unwrap().len(), 1);
        let d = s.describe(Default::default(), now).await.unwrap();
        assert_eq!(d.activation_list[0].registrations_count, 1);
        // Another key pair is another registration: past the limit.
        let e = s
            .enroll(
                &controller,
                &pki,
                enroll_req(&c.activation_id, &c.activation_code),
                now,
            )
            .await
            .unwrap_err();
        assert!(e.to_string().contains("registration limit (1)"), "{e}");
        // A known key with the wrong code, or after expiry, is refused like any other.
        let mut wrong = first.clone();
        wrong.activation_code = "wrong".into();
        assert!(s.enroll(&controller, &pki, wrong, now).await.is_err());
        let late = now + Duration::from_secs(25 * 3600);
        assert!(s.enroll(&controller, &pki, first, late).await.is_err());

        // A key whose instance was deregistered since gets no shortcut: with registrations
        // left it enrolls as a new instance.
        let c2 = s
            .create(
                CreateActivationRequest {
                    registration_limit: Some(2),
                    ..req("r")
                },
                now,
            )
            .await
            .unwrap();
        let k = enroll_req(&c2.activation_id, &c2.activation_code);
        let one = s.enroll(&controller, &pki, k.clone(), now).await.unwrap();
        controller
            .deregister_container_instance(DeregisterContainerInstanceRequest {
                container_instance: one.container_instance_arn.clone(),
                force: Some(true),
                ..Default::default()
            })
            .await
            .unwrap();
        let two = s.enroll(&controller, &pki, k, now).await.unwrap();
        assert_ne!(one.container_instance_arn, two.container_instance_arn);
    }
}
