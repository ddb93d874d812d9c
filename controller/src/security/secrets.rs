//! Secrets Manager secrets and SSM parameters, sealed at rest, and their resolution for tasks.
//!
//! Every value is sealed with the [`Sealer`] under its record's key (`secret/NAME`,
//! `parameter/NAME`) before it reaches the store: the store never holds a plaintext. Values are
//! opened only for GetParameter with WithDecryption and for [`Secrets::resolve`] (the agent
//! link's GetTaskSecrets). Nothing here logs a value, and no error message carries one.
//!
//! Differences from AWS, on purpose: DeleteSecret deletes at once (Berth keeps no recovery
//! window), a secret keeps only its current version (AWSCURRENT), and a parameter named `/a`
//! and one named `a` are the same parameter (their ARNs are the same, so a task could not tell
//! them apart).

use super::seal::{SealError, Sealer};
use crate::store::{blocking, Store, StoreError, Write};
use base64::Engine as _;
use berth_proto::v1::*;
use prost::Message;
use std::sync::{Arc, Mutex};

/// Store key prefix of Secrets Manager secrets.
pub const SECRET_PREFIX: &str = "secret/";
/// Store key prefix of SSM parameters.
pub const PARAMETER_PREFIX: &str = "parameter/";

/// A Secrets Manager secret string holds at most this many bytes (AWS: 65,536).
const MAX_SECRET_BYTES: usize = 65_536;
/// A Standard-tier parameter value holds at most this many characters (AWS: 4 KB).
const MAX_PARAMETER_VALUE: usize = 4096;
/// The version stage Berth keeps: a secret's current value.
pub const AWSCURRENT: &str = "AWSCURRENT";

/// What a secrets or parameters call did wrong, named as AWS names it. The doc comment of each
/// variant is its exception name; no message ever holds a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// ResourceExistsException
    #[error("The operation failed because the secret {0} already exists.")]
    ResourceExists(String),
    /// ResourceNotFoundException
    #[error("Secrets Manager can't find the specified secret: {0}")]
    ResourceNotFound(String),
    /// InvalidParameterException (Secrets Manager)
    #[error("{0}")]
    InvalidParameter(String),
    /// InvalidRequestException (Secrets Manager)
    #[error("{0}")]
    InvalidRequest(String),
    /// ParameterAlreadyExists
    #[error("The parameter {0} already exists. To overwrite this value, set the overwrite option in the request to true.")]
    ParameterAlreadyExists(String),
    /// ParameterNotFound
    #[error("Parameter {0} not found.")]
    ParameterNotFound(String),
    /// UnsupportedParameterType
    #[error("{0}")]
    UnsupportedParameterType(String),
    /// ValidationException (SSM)
    #[error("{0}")]
    Validation(String),
    /// InternalServiceError: the store failed; nothing was changed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// InternalServiceError: a sealed value does not open (another master key, or tampered).
    #[error("{0}")]
    Seal(#[from] SealError),
}

impl SecretsError {
    /// The AWS exception name.
    pub fn exception_name(&self) -> &'static str {
        match self {
            SecretsError::ResourceExists(_) => "ResourceExistsException",
            SecretsError::ResourceNotFound(_) => "ResourceNotFoundException",
            SecretsError::InvalidParameter(_) => "InvalidParameterException",
            SecretsError::InvalidRequest(_) => "InvalidRequestException",
            SecretsError::ParameterAlreadyExists(_) => "ParameterAlreadyExists",
            SecretsError::ParameterNotFound(_) => "ParameterNotFound",
            SecretsError::UnsupportedParameterType(_) => "UnsupportedParameterType",
            SecretsError::Validation(_) => "ValidationException",
            SecretsError::Store(_) | SecretsError::Seal(_) => "InternalServiceError",
        }
    }
}

/// Maps a secrets error to a gRPC status carrying its exception name.
impl From<SecretsError> for tonic::Status {
    fn from(e: SecretsError) -> Self {
        use tonic::Code;
        let code = match &e {
            SecretsError::ResourceExists(_) | SecretsError::ParameterAlreadyExists(_) => {
                Code::AlreadyExists
            }
            SecretsError::ResourceNotFound(_) | SecretsError::ParameterNotFound(_) => {
                Code::NotFound
            }
            SecretsError::InvalidParameter(_)
            | SecretsError::InvalidRequest(_)
            | SecretsError::UnsupportedParameterType(_)
            | SecretsError::Validation(_) => Code::InvalidArgument,
            SecretsError::Store(_) | SecretsError::Seal(_) => Code::Internal,
        };
        let mut status = tonic::Status::new(code, e.to_string());
        if let Ok(v) = e.exception_name().parse() {
            status
                .metadata_mut()
                .insert(berth_proto::exceptions::METADATA_KEY, v);
        }
        status
    }
}

/// Why a `valueFrom` does not resolve (at task start). Names the reference, never a value.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The reference is not a form Berth reads.
    #[error("{0}")]
    Malformed(String),
    /// No such secret or parameter.
    #[error("{0} does not exist")]
    NotFound(String),
    /// The reference asks for something Berth does not keep or cannot give.
    #[error("{0}")]
    Unusable(String),
    /// The store failed or a value does not open.
    #[error("{0}")]
    Secrets(#[from] SecretsError),
}

/// What a `valueFrom` (or `credentialsParameter`, `secretOptions[].valueFrom`) names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// A Secrets Manager secret: `arn:aws:secretsmanager:R:A:secret:NAME[-XXXXXX][:json-key:version-stage:version-id]`.
    Secret {
        /// The name as written (possibly with AWS's 6-character suffix).
        name: String,
        /// A key of the JSON secret string, or none for the whole string.
        json_key: Option<String>,
        /// A version id, or none for the current one.
        version_id: Option<String>,
    },
    /// An SSM parameter (`arn:aws:ssm:R:A:parameter/NAME`, or a bare name); without a leading '/'.
    Parameter(String),
}

impl SecretRef {
    /// Parses a reference. Region and account are not checked: secrets are matched by name,
    /// so ARNs from the ECS guide paste.
    pub fn parse(value_from: &str) -> Result<Self, String> {
        let v = value_from.trim();
        if v.is_empty() {
            return Err("valueFrom is empty".into());
        }
        if !v.starts_with("arn:") {
            let name = v.trim_start_matches('/');
            check_parameter_name(v)
                .map_err(|e| format!("'{value_from}' is not a parameter name or an ARN: {e}"))?;
            return Ok(SecretRef::Parameter(name.to_string()));
        }
        let parts: Vec<&str> = v.splitn(6, ':').collect();
        let bad = |why: &str| {
            format!(
                "'{value_from}' is not a Secrets Manager secret ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME) or an SSM parameter ARN (arn:aws:ssm:REGION:ACCOUNT:parameter/NAME): {why}"
            )
        };
        if parts.len() < 6 {
            return Err(bad("too few ':'-separated parts"));
        }
        let (service, resource) = (parts[2], parts[5]);
        match service {
            "secretsmanager" => {
                let Some(rest) = resource.strip_prefix("secret:") else {
                    return Err(bad("the resource does not start with 'secret:'"));
                };
                let fields: Vec<&str> = rest.split(':').collect();
                if fields.len() > 4 {
                    return Err(bad(
                        "more than name:json-key:version-stage:version-id after 'secret:'",
                    ));
                }
                let name = fields[0];
                check_secret_name(name).map_err(|e| bad(&e))?;
                let field = |i: usize| {
                    fields
                        .get(i)
                        .map(|s| s.to_string())
                        .filter(|s| !s.is_empty())
                };
                if let Some(stage) = field(2) {
                    if stage != AWSCURRENT {
                        return Err(format!(
                            "'{value_from}': version stage '{stage}' is not supported; Berth keeps only each secret's current value (AWSCURRENT, or leave the stage empty)"
                        ));
                    }
                }
                Ok(SecretRef::Secret {
                    name: name.to_string(),
                    json_key: field(1),
                    version_id: field(3),
                })
            }
            "ssm" => {
                let Some(name) = resource.strip_prefix("parameter") else {
                    return Err(bad("the resource does not start with 'parameter/'"));
                };
                if !name.starts_with('/') {
                    return Err(bad("the resource does not start with 'parameter/'"));
                }
                check_parameter_name(name).map_err(|e| bad(&e))?;
                Ok(SecretRef::Parameter(
                    name.trim_start_matches('/').to_string(),
                ))
            }
            other => Err(bad(&format!(
                "service '{other}' holds no secrets (secretsmanager or ssm)"
            ))),
        }
    }
}

/// What a container's `repositoryCredentials.credentialsParameter` names: a Secrets Manager
/// secret, by its full ARN or (as ECS allows for a secret in the task's region) its name, whose
/// whole SecretString is `{"username": ..., "password": ...}`. The ARN is read as a `valueFrom`
/// is; an SSM parameter or a json-key/version suffix is refused, as ECS reads the secret whole.
pub fn parse_credentials_parameter(parameter: &str) -> Result<SecretRef, String> {
    let p = parameter.trim();
    if p.is_empty() {
        return Err("credentialsParameter is empty".into());
    }
    if !p.starts_with("arn:") {
        check_secret_name(p)
            .map_err(|e| format!("'{parameter}' is not a secret name or a secret ARN: {e}"))?;
        return Ok(SecretRef::Secret {
            name: p.to_string(),
            json_key: None,
            version_id: None,
        });
    }
    match SecretRef::parse(p)? {
        SecretRef::Parameter(_) => Err(format!(
            "'{parameter}' is an SSM parameter; registry credentials come from a Secrets Manager secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME, or the secret's name)"
        )),
        SecretRef::Secret {
            json_key: Some(_), ..
        }
        | SecretRef::Secret {
            version_id: Some(_),
            ..
        } => Err(format!(
            "'{parameter}' names a JSON key or version of a secret; registry credentials are the whole secret (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)"
        )),
        whole => Ok(whole),
    }
}

/// Secrets Manager's rule for names: 1-512 of ASCII letters, digits and `/_+=.@-`.
fn check_secret_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 512 {
        return Err(format!(
            "secret name '{name}' must be 1 to 512 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "/_+=.@-".contains(*c)))
    {
        return Err(format!(
            "secret name '{name}' contains '{c}'; a name holds ASCII letters, numbers and /_+=.@-"
        ));
    }
    Ok(())
}

/// SSM's rule for names: 1-1011 of letters, digits and `_.-/`, at most 15 levels, not starting
/// with aws or ssm.
fn check_parameter_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 1011 {
        return Err(format!(
            "parameter name '{name}' must be 1 to 1011 characters long"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || "_.-/".contains(*c)))
    {
        return Err(format!(
            "parameter name '{name}' contains '{c}'; a name holds letters, numbers and _.-/"
        ));
    }
    let bare = name.trim_start_matches('/').to_ascii_lowercase();
    if bare.is_empty() {
        return Err(format!("parameter name '{name}' has no name after '/'"));
    }
    if bare.starts_with("aws") || bare.starts_with("ssm") {
        return Err(format!(
            "parameter name '{name}': names beginning with aws or ssm (case-insensitive) are reserved"
        ));
    }
    if name.matches('/').count() > 15 || (name.starts_with('/') && name.contains("//")) {
        return Err(format!(
            "parameter name '{name}': at most 15 levels, and no empty level"
        ));
    }
    Ok(())
}

/// Whether `s` ends like AWS's random suffix of a secret ARN: `-` and six letters or digits.
fn strip_suffix(name: &str) -> Option<&str> {
    let (head, tail) = name.rsplit_once('-')?;
    (tail.len() == 6 && tail.chars().all(|c| c.is_ascii_alphanumeric()) && !head.is_empty())
        .then_some(head)
}

/// A value to seal: a secret string or binary, exactly one.
fn one_value(
    string: Option<String>,
    binary: Option<Vec<u8>>,
    required: bool,
) -> Result<Option<(Vec<u8>, bool)>, SecretsError> {
    match (string, binary) {
        (Some(_), Some(_)) => Err(SecretsError::InvalidParameter(
            "You can't specify both a binary secret value and a string secret value in the same secret.".into(),
        )),
        (Some(s), None) => Ok(Some((s.into_bytes(), false))),
        (None, Some(b)) => Ok(Some((b, true))),
        (None, None) if required => Err(SecretsError::InvalidRequest(
            "You must provide either SecretString or SecretBinary.".into(),
        )),
        (None, None) => Ok(None),
    }
    .and_then(|v| match v {
        Some((bytes, _)) if bytes.len() > MAX_SECRET_BYTES => Err(SecretsError::InvalidParameter(
            format!("the secret value is {} bytes; at most {MAX_SECRET_BYTES}", bytes.len()),
        )),
        other => Ok(other),
    })
}

/// Secrets and parameters over the store, sealed with the master key.
pub struct Secrets {
    store: Arc<dyn Store>,
    sealer: Sealer,
    /// Serialises read-modify-write calls (the store has no compare-and-set).
    writes: Mutex<()>,
}

impl Secrets {
    /// Secrets kept in `store`, sealed by `sealer`.
    pub fn new(store: Arc<dyn Store>, sealer: Sealer) -> Self {
        Self {
            store,
            sealer,
            writes: Mutex::new(()),
        }
    }

    fn get<M: Message + Default>(&self, key: &str) -> Result<Option<M>, SecretsError> {
        let found = blocking(|| self.store.scan(key))?
            .into_iter()
            .find(|(k, _)| k == key);
        match found {
            None => Ok(None),
            Some((k, v)) => M::decode(v.as_slice())
                .map(Some)
                .map_err(|source| StoreError::Decode { key: k, source }.into()),
        }
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), SecretsError> {
        blocking(|| self.store.commit(writes)).map_err(SecretsError::from)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The secret a SecretId (name, full ARN or ARN without the suffix) names.
    fn find_secret(&self, id: &str) -> Result<Option<SecretRecord>, SecretsError> {
        let name = match id.split_once(":secret:") {
            Some((_, rest)) if id.starts_with("arn:") => rest,
            _ => id,
        };
        if let Some(r) = self.get::<SecretRecord>(&format!("{SECRET_PREFIX}{name}"))? {
            return Ok(Some(r));
        }
        // A full ARN carries AWS's random suffix; the name is what precedes it, and the suffix
        // must be this secret's (another one is a deleted and re-created secret's).
        match strip_suffix(name) {
            Some(base) => Ok(self
                .get::<SecretRecord>(&format!("{SECRET_PREFIX}{base}"))?
                .filter(|r| r.arn.ends_with(&format!(":secret:{name}")))),
            None => Ok(None),
        }
    }

    /// CreateSecret.
    pub fn create_secret(
        &self,
        req: CreateSecretRequest,
    ) -> Result<CreateSecretResponse, SecretsError> {
        check_secret_name(&req.name).map_err(SecretsError::InvalidParameter)?;
        let value = one_value(req.secret_string, req.secret_binary, false)?;
        let _w = self.lock();
        let key = format!("{SECRET_PREFIX}{}", req.name);
        if self.get::<SecretRecord>(&key)?.is_some() {
            return Err(SecretsError::ResourceExists(req.name));
        }
        let suffix: String = {
            use rand::Rng as _;
            const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
            let mut rng = rand::rng();
            (0..6)
                .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
                .collect()
        };
        let arn = format!(
            "arn:aws:secretsmanager:{}:{}:secret:{}-{suffix}",
            berth_proto::arn::REGION,
            berth_proto::arn::ACCOUNT,
            req.name
        );
        let now = berth_proto::now();
        // A secret created without a value has no version, as in AWS.
        let version_id = value.as_ref().map(|_| version_id(req.client_request_token));
        let (sealed_value, binary) = match value {
            Some((bytes, binary)) => (self.sealer.seal(&key, &bytes), binary),
            None => (Vec::new(), false),
        };
        let rec = SecretRecord {
            name: req.name.clone(),
            arn: arn.clone(),
            description: req.description,
            version_id: version_id.clone().unwrap_or_default(),
            sealed_value,
            binary,
            created_date: Some(now),
            last_changed_date: Some(now),
        };
        self.commit(vec![Write::Put(key, rec.encode_to_vec())])?;
        Ok(CreateSecretResponse {
            arn,
            name: req.name,
            version_id,
        })
    }

    /// PutSecretValue: a new current version.
    pub fn put_secret_value(
        &self,
        req: PutSecretValueRequest,
    ) -> Result<PutSecretValueResponse, SecretsError> {
        let (bytes, binary) = one_value(req.secret_string, req.secret_binary, true)?
            .ok_or_else(|| SecretsError::InvalidRequest("no secret value".into()))?;
        if let Some(s) = req.version_stages.iter().find(|s| *s != AWSCURRENT) {
            return Err(SecretsError::InvalidParameter(format!(
                "version stage '{s}' is not supported; Berth keeps only each secret's current value (AWSCURRENT)"
            )));
        }
        let _w = self.lock();
        let mut rec = self
            .find_secret(&req.secret_id)?
            .ok_or_else(|| SecretsError::ResourceNotFound(req.secret_id.clone()))?;
        let key = format!("{SECRET_PREFIX}{}", rec.name);
        rec.sealed_value = self.sealer.seal(&key, &bytes);
        rec.binary = binary;
        rec.version_id = version_id(req.client_request_token);
        rec.last_changed_date = Some(berth_proto::now());
        self.commit(vec![Write::Put(key, rec.encode_to_vec())])?;
        Ok(PutSecretValueResponse {
            arn: rec.arn,
            name: rec.name,
            version_id: rec.version_id,
            version_stages: vec![AWSCURRENT.into()],
        })
    }

    /// DeleteSecret. Berth deletes at once, whatever recovery window is asked for (it keeps no
    /// deleted secrets to restore): DeletionDate is now.
    pub fn delete_secret(
        &self,
        req: DeleteSecretRequest,
    ) -> Result<DeleteSecretResponse, SecretsError> {
        if req.force_delete_without_recovery == Some(true) && req.recovery_window_in_days.is_some()
        {
            return Err(SecretsError::InvalidParameter(
                "You can't use ForceDeleteWithoutRecovery in conjunction with RecoveryWindowInDays."
                    .into(),
            ));
        }
        if let Some(d) = req.recovery_window_in_days {
            if !(7..=30).contains(&d) {
                return Err(SecretsError::InvalidParameter(format!(
                    "RecoveryWindowInDays {d}: must be 7 to 30 (Berth deletes at once whatever the window)"
                )));
            }
        }
        let _w = self.lock();
        let rec = self
            .find_secret(&req.secret_id)?
            .ok_or_else(|| SecretsError::ResourceNotFound(req.secret_id.clone()))?;
        self.commit(vec![Write::Delete(format!("{SECRET_PREFIX}{}", rec.name))])?;
        Ok(DeleteSecretResponse {
            arn: rec.arn,
            name: rec.name,
            deletion_date: Some(berth_proto::now()),
        })
    }

    /// PutParameter.
    pub fn put_parameter(
        &self,
        req: PutParameterRequest,
    ) -> Result<PutParameterResponse, SecretsError> {
        check_parameter_name(&req.name).map_err(SecretsError::Validation)?;
        if let Some(t) = req.tier.as_deref().filter(|t| *t != "Standard") {
            return Err(SecretsError::Validation(format!(
                "Tier '{t}' is not supported; Berth keeps Standard parameters"
            )));
        }
        if req.value.chars().count() > MAX_PARAMETER_VALUE {
            return Err(SecretsError::Validation(format!(
                "the value is longer than {MAX_PARAMETER_VALUE} characters (the Standard tier's limit)"
            )));
        }
        if req.value.is_empty() {
            return Err(SecretsError::Validation(
                "1 validation error detected: Value must have length greater than or equal to 1"
                    .into(),
            ));
        }
        if let Some(t) = req.r#type.as_deref() {
            if !["String", "StringList", "SecureString"].contains(&t) {
                return Err(SecretsError::UnsupportedParameterType(format!(
                    "Type '{t}': must be String, StringList or SecureString"
                )));
            }
        }
        if let Some(d) = req.data_type.as_deref().filter(|d| *d != "text") {
            return Err(SecretsError::Validation(format!(
                "DataType '{d}' is not supported; Berth keeps text parameters"
            )));
        }
        let _w = self.lock();
        let key = parameter_key(&req.name);
        let old = self.get::<ParameterRecord>(&key)?;
        if old.is_some() && req.overwrite != Some(true) {
            return Err(SecretsError::ParameterAlreadyExists(req.name));
        }
        let r#type = match (&req.r#type, &old) {
            (Some(t), _) => t.clone(),
            (None, Some(o)) => o.r#type.clone(),
            (None, None) => "String".into(),
        };
        let rec = ParameterRecord {
            name: req.name.clone(),
            r#type,
            description: req
                .description
                .or_else(|| old.as_ref().and_then(|o| o.description.clone())),
            version: old.as_ref().map_or(0, |o| o.version) + 1,
            sealed_value: self.sealer.seal(&key, req.value.as_bytes()),
            last_modified_date: Some(berth_proto::now()),
            data_type: "text".into(),
        };
        self.commit(vec![Write::Put(key, rec.encode_to_vec())])?;
        Ok(PutParameterResponse {
            version: rec.version,
            tier: "Standard".into(),
        })
    }

    /// GetParameter. A SecureString's value is opened only WithDecryption; without it, as AWS
    /// returns the KMS ciphertext (base64), Berth returns its sealed form, base64.
    pub fn get_parameter(
        &self,
        req: GetParameterRequest,
    ) -> Result<GetParameterResponse, SecretsError> {
        let key = parameter_key(&req.name);
        let rec = self
            .get::<ParameterRecord>(&key)?
            .ok_or_else(|| SecretsError::ParameterNotFound(req.name.clone()))?;
        let value = if rec.r#type == "SecureString" && req.with_decryption != Some(true) {
            base64::engine::general_purpose::STANDARD.encode(&rec.sealed_value)
        } else {
            String::from_utf8_lossy(&self.sealer.open(&key, &rec.sealed_value)?).into_owned()
        };
        Ok(GetParameterResponse {
            parameter: Some(Parameter {
                arn: parameter_arn(&rec.name),
                name: rec.name,
                r#type: rec.r#type,
                value,
                version: rec.version,
                last_modified_date: rec.last_modified_date,
                data_type: rec.data_type,
            }),
        })
    }

    /// DeleteParameter.
    pub fn delete_parameter(&self, req: DeleteParameterRequest) -> Result<(), SecretsError> {
        let _w = self.lock();
        let key = parameter_key(&req.name);
        if self.get::<ParameterRecord>(&key)?.is_none() {
            return Err(SecretsError::ParameterNotFound(req.name));
        }
        self.commit(vec![Write::Delete(key)])
    }

    /// The value a `valueFrom` names, opened: for the agent running the task only. The secret
    /// is matched by name whatever region and account its ARN names.
    pub fn resolve(&self, value_from: &str) -> Result<String, ResolveError> {
        self.resolve_ref(SecretRef::parse(value_from).map_err(ResolveError::Malformed)?)
    }

    /// The username and password a `repositoryCredentials.credentialsParameter` names: the
    /// secret resolved as a `valueFrom` is, its string read as ECS reads it (a JSON object with
    /// string members `username` and `password`). Errors name what is wrong, never a value.
    pub fn resolve_registry_credentials(
        &self,
        parameter: &str,
    ) -> Result<(String, String), ResolveError> {
        let r = parse_credentials_parameter(parameter).map_err(ResolveError::Malformed)?;
        let name = match &r {
            SecretRef::Secret { name, .. } => name.clone(),
            SecretRef::Parameter(name) => name.clone(),
        };
        let text = self.resolve_ref(r)?;
        registry_credentials_of(&name, &text)
    }

    fn resolve_ref(&self, r: SecretRef) -> Result<String, ResolveError> {
        match r {
            SecretRef::Parameter(name) => {
                let key = parameter_key(&name);
                let rec = self
                    .get::<ParameterRecord>(&key)?
                    .ok_or_else(|| ResolveError::NotFound(format!("parameter {name}")))?;
                let plain = self
                    .sealer
                    .open(&key, &rec.sealed_value)
                    .map_err(SecretsError::from)?;
                String::from_utf8(plain).map_err(|_| {
                    ResolveError::Unusable(format!("parameter {name} is not UTF-8 text"))
                })
            }
            SecretRef::Secret {
                name,
                json_key,
                version_id,
            } => {
                let rec = self
                    .find_secret(&name)?
                    .ok_or_else(|| ResolveError::NotFound(format!("secret {name}")))?;
                if let Some(v) = version_id.filter(|v| *v != rec.version_id) {
                    return Err(ResolveError::Unusable(format!(
                        "secret {name}: version {v} is not its current version; Berth keeps only the current one"
                    )));
                }
                if rec.sealed_value.is_empty() {
                    return Err(ResolveError::Unusable(format!(
                        "secret {name} has no value yet (put-secret-value)"
                    )));
                }
                if rec.binary {
                    return Err(ResolveError::Unusable(format!(
                        "secret {name} is binary; only a SecretString can go into an environment variable"
                    )));
                }
                let key = format!("{SECRET_PREFIX}{}", rec.name);
                let plain = self
                    .sealer
                    .open(&key, &rec.sealed_value)
                    .map_err(SecretsError::from)?;
                let text = String::from_utf8(plain).map_err(|_| {
                    ResolveError::Unusable(format!("secret {name} is not UTF-8 text"))
                })?;
                let Some(k) = json_key else { return Ok(text) };
                let Ok(serde_json::Value::Object(mut map)) =
                    serde_json::from_str::<serde_json::Value>(&text)
                else {
                    return Err(ResolveError::Unusable(format!(
                        "secret {name}: json-key {k} is given but the secret string is not a JSON object"
                    )));
                };
                match map.remove(&k) {
                    Some(serde_json::Value::String(s)) => Ok(s),
                    Some(other) => Ok(other.to_string()),
                    None => Err(ResolveError::Unusable(format!(
                        "secret {name} has no JSON key {k}"
                    ))),
                }
            }
        }
    }
}

/// ECS's form of registry credentials in the secret `name`'s string `text`: a JSON object with
/// the strings `username` and `password` (other members are ignored, as ECS does).
fn registry_credentials_of(name: &str, text: &str) -> Result<(String, String), ResolveError> {
    let unusable = |why: &str| {
        ResolveError::Unusable(format!(
            "secret {name} {why}; registry credentials are a JSON object {{\"username\": \"...\", \"password\": \"...\"}}"
        ))
    };
    // serde_json's message is not shown: it can quote the text around the error.
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(text) else {
        return Err(unusable("is not a JSON object"));
    };
    let member = |key: &str| match map.get(key) {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(serde_json::Value::String(_)) => Err(unusable(&format!("has an empty \"{key}\""))),
        Some(_) => Err(unusable(&format!("has a \"{key}\" that is not a string"))),
        None => Err(unusable(&format!("has no \"{key}\""))),
    };
    Ok((member("username")?, member("password")?))
}

/// A new VersionId: the caller's ClientRequestToken, or a UUID.
fn version_id(token: Option<String>) -> String {
    token
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn parameter_key(name: &str) -> String {
    format!("{PARAMETER_PREFIX}{}", name.trim_start_matches('/'))
}

/// `arn:aws:ssm:REGION:ACCOUNT:parameter/NAME` (a leading '/' of the name is not doubled).
pub fn parameter_arn(name: &str) -> String {
    format!(
        "arn:aws:ssm:{}:{}:parameter/{}",
        berth_proto::arn::REGION,
        berth_proto::arn::ACCOUNT,
        name.trim_start_matches('/')
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    const PLAIN: &str = "s3cr3t-plaintext-7f3a";

    fn rig() -> (Secrets, Arc<MemoryStore>) {
        let store = Arc::new(MemoryStore::default());
        (Secrets::new(store.clone(), Sealer::new(&[3u8; 32])), store)
    }

    fn leaks(store: &MemoryStore, plain: &str) -> bool {
        store
            .scan("")
            .unwrap()
            .iter()
            .any(|(_, v)| v.windows(plain.len()).any(|w| w == plain.as_bytes()))
    }

    fn create(s: &Secrets, name: &str, value: &str) -> CreateSecretResponse {
        s.create_secret(CreateSecretRequest {
            name: name.into(),
            secret_string: Some(value.into()),
            ..Default::default()
        })
        .unwrap()
    }

    fn put(s: &Secrets, name: &str, value: &str, ty: Option<&str>, overwrite: bool) -> i32 {
        s.put_parameter(PutParameterRequest {
            name: name.into(),
            value: value.into(),
            r#type: ty.map(Into::into),
            overwrite: Some(overwrite),
            ..Default::default()
        })
        .unwrap()
        .version
    }

    #[test]
    fn a_secret_gets_an_aws_arn_and_version_and_is_sealed_in_its_record() {
        let (s, store) = rig();
        let r = create(&s, "prod/db", PLAIN);
        let prefix = format!(
            "arn:aws:secretsmanager:{}:{}:secret:prod/db-",
            berth_proto::arn::REGION,
            berth_proto::arn::ACCOUNT
        );
        assert!(r.arn.starts_with(&prefix), "{}", r.arn);
        let suffix = &r.arn[prefix.len()..];
        assert!(
            suffix.len() == 6 && suffix.chars().all(|c| c.is_ascii_alphanumeric()),
            "{suffix}"
        );
        assert!(uuid::Uuid::parse_str(r.version_id.as_deref().unwrap()).is_ok());
        assert!(!leaks(&store, PLAIN), "the store holds the plaintext");
        assert_eq!(s.resolve(&r.arn).unwrap(), PLAIN);

        let e = s
            .create_secret(CreateSecretRequest {
                name: "prod/db".into(),
                secret_string: Some("x".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ResourceExistsException");
        let e = s
            .create_secret(CreateSecretRequest {
                name: "both".into(),
                secret_string: Some("x".into()),
                secret_binary: Some(b"y".to_vec()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        let e = s
            .create_secret(CreateSecretRequest {
                name: "bad name!".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
    }

    #[test]
    fn put_secret_value_makes_a_new_version_by_name_or_arn_and_delete_is_immediate() {
        let (s, store) = rig();
        let r = create(&s, "api", "one");
        let p = s
            .put_secret_value(PutSecretValueRequest {
                secret_id: r.arn.clone(),
                secret_string: Some(PLAIN.into()),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(Some(p.version_id.clone()), r.version_id);
        assert_eq!(p.version_stages, vec![AWSCURRENT.to_string()]);
        assert!(!leaks(&store, PLAIN));
        assert_eq!(
            s.resolve("arn:aws:secretsmanager:us-east-1:1:secret:api")
                .unwrap(),
            PLAIN
        );
        let p2 = s
            .put_secret_value(PutSecretValueRequest {
                secret_id: "api".into(),
                secret_string: Some("three".into()),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(p2.version_id, p.version_id);
        let e = s
            .put_secret_value(PutSecretValueRequest {
                secret_id: "nope".into(),
                secret_string: Some("x".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ResourceNotFoundException");

        let d = s
            .delete_secret(DeleteSecretRequest {
                secret_id: r.arn.clone(),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(d.name, "api");
        assert!(d.deletion_date.is_some());
        assert!(store.scan(SECRET_PREFIX).unwrap().is_empty());
        let e = s
            .delete_secret(DeleteSecretRequest {
                secret_id: "api".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ResourceNotFoundException");
    }

    #[test]
    fn parameters_version_up_refuse_overwrite_and_hide_secure_strings_without_decryption() {
        let (s, store) = rig();
        assert_eq!(
            put(&s, "/app/db-password", PLAIN, Some("SecureString"), false),
            1
        );
        assert!(!leaks(&store, PLAIN));
        let e = s
            .put_parameter(PutParameterRequest {
                name: "/app/db-password".into(),
                value: "x".into(),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ParameterAlreadyExists");
        // Overwrite keeps the type when none is given.
        assert_eq!(put(&s, "/app/db-password", PLAIN, None, true), 2);
        let get = |decrypt| {
            s.get_parameter(GetParameterRequest {
                name: "/app/db-password".into(),
                with_decryption: Some(decrypt),
            })
            .unwrap()
            .parameter
            .unwrap()
        };
        let hidden = get(false);
        assert_eq!(hidden.r#type, "SecureString");
        assert!(!hidden.value.contains(PLAIN) && !hidden.value.is_empty());
        assert_eq!(hidden.version, 2);
        assert_eq!(hidden.arn, parameter_arn("app/db-password"));
        assert_eq!(get(true).value, PLAIN);

        put(&s, "plain", "visible", None, false);
        let p = s
            .get_parameter(GetParameterRequest {
                name: "plain".into(),
                with_decryption: None,
            })
            .unwrap()
            .parameter
            .unwrap();
        assert_eq!((p.r#type.as_str(), p.value.as_str()), ("String", "visible"));
        assert!(!leaks(&store, "visible"), "every type is sealed");

        let e = s
            .put_parameter(PutParameterRequest {
                name: "t".into(),
                value: "v".into(),
                r#type: Some("Secret".into()),
                ..Default::default()
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "UnsupportedParameterType");
        let e = s
            .get_parameter(GetParameterRequest {
                name: "nope".into(),
                with_decryption: None,
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ParameterNotFound");
        s.delete_parameter(DeleteParameterRequest {
            name: "plain".into(),
        })
        .unwrap();
        let e = s
            .delete_parameter(DeleteParameterRequest {
                name: "plain".into(),
            })
            .unwrap_err();
        assert_eq!(e.exception_name(), "ParameterNotFound");
    }

    #[test]
    fn references_match_by_name_whatever_region_account_or_suffix() {
        let (s, _) = rig();
        let r = create(
            &s,
            "db",
            r#"{"user":"admin","password":"pw-123","port":5432}"#,
        );
        let suffix = r.arn.rsplit('-').next().unwrap().to_string();
        for arn in [
            r.arn.clone(),
            "arn:aws:secretsmanager:us-west-2:111122223333:secret:db".into(),
            format!("arn:aws:secretsmanager:eu-west-1:999:secret:db-{suffix}"),
            format!("arn:aws:secretsmanager:eu-west-1:999:secret:db-{suffix}::"),
            "arn:aws:secretsmanager:eu-west-1:999:secret:db::AWSCURRENT:".into(),
        ] {
            assert!(s.resolve(&arn).unwrap().contains("pw-123"), "{arn}");
        }
        assert_eq!(
            s.resolve("arn:aws:secretsmanager:r:a:secret:db:password::")
                .unwrap(),
            "pw-123"
        );
        assert_eq!(
            s.resolve(&format!(
                "arn:aws:secretsmanager:r:a:secret:db-{suffix}:port::"
            ))
            .unwrap(),
            "5432"
        );
        let v = r.version_id.clone().unwrap();
        assert_eq!(
            s.resolve(&format!("arn:aws:secretsmanager:r:a:secret:db:user::{v}"))
                .unwrap(),
            "admin"
        );
        // Errors name the reference, never the value.
        for (bad, want) in [
            (
                "arn:aws:secretsmanager:r:a:secret:db:nokey::",
                "no JSON key nokey",
            ),
            (
                "arn:aws:secretsmanager:r:a:secret:missing",
                "secret missing does not exist",
            ),
            (
                "arn:aws:secretsmanager:r:a:secret:db-ZZZZZZ",
                "does not exist",
            ),
            (
                "arn:aws:secretsmanager:r:a:secret:db::AWSPREVIOUS:",
                "AWSPREVIOUS",
            ),
            (
                "arn:aws:secretsmanager:r:a:secret:db:::other-version",
                "not its current version",
            ),
        ] {
            let e = s.resolve(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
            assert!(!e.contains("pw-123"), "{e}");
        }

        put(&s, "/prod/api-key", "k1", Some("SecureString"), false);
        put(&s, "flat", "k2", None, false);
        for (r, want) in [
            (
                "arn:aws:ssm:us-east-1:123456789012:parameter/prod/api-key",
                "k1",
            ),
            ("/prod/api-key", "k1"),
            ("prod/api-key", "k1"),
            ("arn:aws:ssm:eu-west-1:1:parameter/flat", "k2"),
            ("flat", "k2"),
        ] {
            assert_eq!(s.resolve(r).unwrap(), want, "{r}");
        }
        assert!(matches!(
            s.resolve("arn:aws:ssm:r:a:parameter/nope"),
            Err(ResolveError::NotFound(_))
        ));
    }

    #[test]
    fn malformed_references_are_refused_by_form() {
        for bad in [
            "",
            "arn:aws:s3:::bucket/key",
            "arn:aws:secretsmanager:r:a:db",
            "arn:aws:secretsmanager:r:a:secret:",
            "arn:aws:secretsmanager:r:a:secret:db:k:AWSPENDING:",
            "arn:aws:secretsmanager:r:a:secret:a:b:c:d:e",
            "arn:aws:ssm:r:a:parameterx",
            "arn:aws:ssm:r:a:parameter/",
            "has space",
            "aws-reserved",
        ] {
            assert!(SecretRef::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(
            SecretRef::parse("arn:aws:secretsmanager:r:a:secret:db-AbCdEf:k::").unwrap(),
            SecretRef::Secret {
                name: "db-AbCdEf".into(),
                json_key: Some("k".into()),
                version_id: None
            }
        );
    }

    /// Issue 11: a credentialsParameter names a Secrets Manager secret by name or ARN; its
    /// string must be ECS's {"username","password"}; what is wrong is named, never a value.
    #[test]
    fn registry_credentials_resolve_by_name_or_arn_and_name_what_is_wrong() {
        let (s, _) = rig();
        let r = create(
            &s,
            "reg/creds",
            &format!(r#"{{"username":"robot","password":"{PLAIN}","extra":1}}"#),
        );
        let want = ("robot".to_string(), PLAIN.to_string());
        assert_eq!(s.resolve_registry_credentials("reg/creds").unwrap(), want);
        assert_eq!(s.resolve_registry_credentials(&r.arn).unwrap(), want);
        let other_region = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:reg/creds";
        assert_eq!(s.resolve_registry_credentials(other_region).unwrap(), want);

        let e = s.resolve_registry_credentials("nope").unwrap_err();
        assert_eq!(e.to_string(), "secret nope does not exist");
        for (value, why) in [
            (format!("user:{PLAIN}"), "is not a JSON object"),
            (format!(r#"["{PLAIN}"]"#), "is not a JSON object"),
            (
                format!(r#"{{"password":"{PLAIN}"}}"#),
                "has no \"username\"",
            ),
            (r#"{"username":"u"}"#.to_string(), "has no \"password\""),
            (
                r#"{"username":"u","password":7}"#.to_string(),
                "not a string",
            ),
            (
                r#"{"username":"","password":"p"}"#.to_string(),
                "empty \"username\"",
            ),
        ] {
            s.put_secret_value(PutSecretValueRequest {
                secret_id: "reg/creds".into(),
                secret_string: Some(value.clone()),
                ..Default::default()
            })
            .unwrap();
            let e = s
                .resolve_registry_credentials("reg/creds")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("secret reg/creds") && e.contains(why),
                "{value}: {e}"
            );
            assert!(!e.contains(PLAIN), "the value leaks: {e}");
        }

        for (bad, why) in [
            ("", "empty"),
            ("has space", "is not a secret name"),
            ("arn:aws:ssm:us-east-1:1:parameter/reg", "SSM parameter"),
            (
                "arn:aws:secretsmanager:r:a:secret:reg:password::",
                "JSON key",
            ),
            ("arn:aws:s3:::bucket/key", "holds no secrets"),
        ] {
            let e = parse_credentials_parameter(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(s.resolve_registry_credentials(bad).is_err());
        }
    }
}
