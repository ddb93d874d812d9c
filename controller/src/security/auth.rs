//! Authentication of API calls: a tower layer on the `Ecs`, `Ec2`, `Ssm`, `SecretsManager` and `Iam`
//! services (the `Agent` link authenticates by mutual TLS instead) that buffers the unary
//! request body, verifies its SigV4 signature ([`berth_proto::sigv4`]) against the caller's
//! access key, checks the key's permissions, writes the audit log for state-changing calls and
//! passes the same bytes on. The verified [`Caller`] rides in the request's extensions, so an
//! adapter can ask for more ([`require_full`]).
//!
//! Refusals carry AWS's exception names in `x-berth-exception`, as the aws CLI prints them.

use crate::security::access_keys::{AccessKeys, Permissions};
use crate::security::audit::{AuditEntry, AuditLog};
use berth_proto::exceptions::METADATA_KEY;
use berth_proto::sigv4;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tonic::body::Body;
use tonic::server::NamedService;

/// MissingAuthenticationTokenException
pub const MISSING_TOKEN: &str = "MissingAuthenticationTokenException";
/// UnrecognizedClientException
pub const UNRECOGNIZED_CLIENT: &str = "UnrecognizedClientException";
/// InvalidSignatureException
pub const INVALID_SIGNATURE: &str = "InvalidSignatureException";
/// IncompleteSignatureException
pub const INCOMPLETE_SIGNATURE: &str = "IncompleteSignatureException";
/// AccessDeniedException
pub const ACCESS_DENIED: &str = berth_proto::exceptions::ACCESS_DENIED;

/// The message of an unsigned call: AWS's words, then how to sign.
pub const MISSING_TOKEN_MESSAGE: &str = "Missing Authentication Token: this controller requires signed calls; give the berth CLI an access key (BERTH_ACCESS_KEY_ID and BERTH_SECRET_ACCESS_KEY, or a profile in ~/.berth/credentials or BERTH_SHARED_CREDENTIALS_FILE; the first admin key is in the controller's DATA_DIR/admin.credentials)";
/// AWS's message for a signature that does not match.
pub const SIGNATURE_MISMATCH_MESSAGE: &str = "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.";
/// AWS's message for an unknown key id.
pub const UNRECOGNIZED_MESSAGE: &str = "The security token included in the request is invalid.";

/// Whether API calls must be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every call is verified.
    Required,
    /// Any signature or none is accepted (loopback only).
    Off,
}

/// The verified caller of a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The signing key.
    pub access_key_id: String,
    /// Its user.
    pub user_name: String,
    /// What it may call.
    pub permissions: Permissions,
}

/// Put in a request's extensions by an adapter that has verified the call itself (the AWS JSON
/// adapter verifies the HTTP/1.1 request the aws CLI signed, then hands the service the call as
/// gRPC): the layer takes its caller as verified and audits the call as usual. Extensions are
/// the server's own, so no client can set this.
#[derive(Debug, Clone)]
pub struct Verified(pub(crate) Option<Caller>);

/// Whether `action` only reads (Describe*, List*, Get*, and CloudWatch Logs' FilterLogEvents
/// and StartLiveTail, which IAM's ReadOnlyAccess grants too): what a read-only key may call
/// and what the audit log leaves out.
pub fn is_read_action(action: &str) -> bool {
    ["Describe", "List", "Get"]
        .iter()
        .any(|p| action.starts_with(p))
        || matches!(action, "FilterLogEvents" | "StartLiveTail")
}

fn status(code: tonic::Code, exception: &'static str, message: String) -> tonic::Status {
    let mut s = tonic::Status::new(code, message);
    s.metadata_mut().insert(
        METADATA_KEY,
        tonic::metadata::MetadataValue::from_static(exception),
    );
    s
}

fn access_denied(caller: &Caller, service: &str, action: &str, why: &str) -> tonic::Status {
    status(
        tonic::Code::PermissionDenied,
        ACCESS_DENIED,
        format!(
            "User: arn:aws:iam::{}:user/{} is not authorized to perform: {service}:{action} on resource: * because {why}",
            berth_proto::arn::ACCOUNT,
            caller.user_name
        ),
    )
}

/// Whether `caller` may call `service:action`: a read-only key only reads, and IAM (managing
/// keys) needs a full key. None (auth off) may call anything.
pub fn authorize(
    caller: Option<&Caller>,
    service: &str,
    action: &str,
) -> Result<(), tonic::Status> {
    let Some(c) = caller else { return Ok(()) };
    if c.permissions == Permissions::Full {
        return Ok(());
    }
    if service == "iam" {
        return Err(access_denied(
            c,
            service,
            action,
            &format!(
                "access key {} is read-only and IAM calls need a full key",
                c.access_key_id
            ),
        ));
    }
    if !is_read_action(action) {
        return Err(access_denied(
            c,
            service,
            action,
            &format!(
                "access key {} is read-only (Describe*, List* and Get* calls only)",
                c.access_key_id
            ),
        ));
    }
    Ok(())
}

/// For an adapter whose read needs more than a read-only key (GetParameter WithDecryption of a
/// SecureString): refuses a read-only caller of `request`.
pub fn require_full<T>(
    request: &tonic::Request<T>,
    service: &str,
    action: &str,
) -> Result<(), tonic::Status> {
    match request.extensions().get::<Caller>() {
        Some(c) if c.permissions != Permissions::Full => Err(access_denied(
            c,
            service,
            action,
            &format!(
                "access key {} is read-only and this call reveals a secret",
                c.access_key_id
            ),
        )),
        _ => Ok(()),
    }
}

/// A clock (the real one but in tests).
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Verifies calls and writes the audit log.
pub struct Authenticator {
    keys: Arc<AccessKeys>,
    mode: Mode,
    audit: Option<Arc<AuditLog>>,
    clock: Clock,
}

/// A refusal, with the key id the caller claimed (for the audit log).
struct Refusal {
    status: tonic::Status,
    claimed: Option<String>,
}

impl Authenticator {
    /// Verifies with `keys` in `mode`, auditing to `audit`.
    pub fn new(keys: Arc<AccessKeys>, mode: Mode, audit: Option<Arc<AuditLog>>) -> Self {
        Authenticator {
            keys,
            mode,
            audit,
            clock: Arc::new(SystemTime::now),
        }
    }

    /// The same, reading time from `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// The layer to put on a service.
    pub fn layer(self: &Arc<Self>) -> AuthLayer {
        AuthLayer(self.clone())
    }

    /// Verifies one call: its head and its exact body.
    fn verify(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
        action: &str,
    ) -> Result<Option<Caller>, Refusal> {
        if self.mode == Mode::Off {
            return Ok(None);
        }
        let refuse = |code, exception, message: String, claimed: Option<&str>| Refusal {
            status: status(code, exception, message),
            claimed: claimed.map(str::to_string),
        };
        let unauth = tonic::Code::Unauthenticated;
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let Some(value) = parts.headers.get(sigv4::AUTHORIZATION) else {
            return Err(refuse(
                unauth,
                MISSING_TOKEN,
                MISSING_TOKEN_MESSAGE.into(),
                None,
            ));
        };
        let value = value.to_str().map_err(|_| {
            refuse(
                unauth,
                INCOMPLETE_SIGNATURE,
                "Authorization header is not ASCII".into(),
                None,
            )
        })?;
        let auth = sigv4::Authorization::parse(value)
            .map_err(|e| refuse(unauth, INCOMPLETE_SIGNATURE, e.to_string(), None))?;
        let claimed = Some(auth.access_key_id.as_str());
        if parts.headers.contains_key(sigv4::X_AMZ_SECURITY_TOKEN) {
            return Err(refuse(
                unauth,
                UNRECOGNIZED_CLIENT,
                UNRECOGNIZED_MESSAGE.into(),
                claimed,
            ));
        }
        let Some(amz_date) = header(sigv4::X_AMZ_DATE) else {
            return Err(refuse(
                unauth,
                INCOMPLETE_SIGNATURE,
                "Authorization header requires existence of a 'X-Amz-Date' header.".into(),
                claimed,
            ));
        };
        if sigv4::parse_amz_date(amz_date).is_err() {
            return Err(refuse(
                unauth,
                INCOMPLETE_SIGNATURE,
                sigv4::ParseError::Date(amz_date.into()).to_string(),
                claimed,
            ));
        }
        for needed in ["host", sigv4::X_AMZ_DATE] {
            if !auth.signed_headers.iter().any(|h| h == needed) {
                return Err(refuse(
                    unauth,
                    INCOMPLETE_SIGNATURE,
                    format!(
                        "SignedHeaders must include '{needed}': '{}'",
                        auth.signed_headers.join(";")
                    ),
                    claimed,
                ));
            }
        }
        if let Some(why) = sigv4::skew_error(amz_date, (self.clock)()) {
            return Err(refuse(unauth, INVALID_SIGNATURE, why, claimed));
        }
        if amz_date.get(..8) != Some(auth.date.as_str()) {
            return Err(refuse(
                unauth,
                INVALID_SIGNATURE,
                format!(
                    "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}', from '{amz_date}'.",
                    auth.date,
                    amz_date.get(..8).unwrap_or(amz_date)
                ),
                claimed,
            ));
        }
        if auth.service != service {
            return Err(refuse(
                unauth,
                INVALID_SIGNATURE,
                format!("Credential should be scoped to correct service: '{service}'. "),
                claimed,
            ));
        }
        let key = match self.keys.lookup(&auth.access_key_id) {
            Ok(Some(k)) => k,
            Ok(None) => {
                return Err(refuse(
                    unauth,
                    UNRECOGNIZED_CLIENT,
                    UNRECOGNIZED_MESSAGE.into(),
                    claimed,
                ))
            }
            Err(e) => {
                tracing::error!(error = %e, "looking up an access key");
                return Err(Refusal {
                    status: tonic::Status::internal(e.to_string()),
                    claimed: claimed.map(str::to_string),
                });
            }
        };
        let mut headers = Vec::with_capacity(auth.signed_headers.len());
        for name in &auth.signed_headers {
            let v = if name == "host" {
                parts
                    .uri
                    .authority()
                    .map(|a| a.as_str())
                    .or_else(|| header("host"))
            } else {
                header(name)
            };
            let Some(v) = v else {
                return Err(refuse(
                    unauth,
                    INVALID_SIGNATURE,
                    SIGNATURE_MISMATCH_MESSAGE.into(),
                    claimed,
                ));
            };
            headers.push((name.clone(), v.to_string()));
        }
        let input = sigv4::CanonicalInput {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            headers,
            payload_sha256: sigv4::hex_sha256(body),
        };
        if !auth.verify(&key.secret, &input, amz_date) {
            return Err(refuse(
                unauth,
                INVALID_SIGNATURE,
                SIGNATURE_MISMATCH_MESSAGE.into(),
                claimed,
            ));
        }
        let permissions =
            Permissions::parse(&key.record.permissions).unwrap_or(Permissions::ReadOnly);
        let caller = Caller {
            access_key_id: key.record.access_key_id,
            user_name: key.record.user_name,
            permissions,
        };
        authorize(Some(&caller), service, action).map_err(|status| Refusal {
            status,
            claimed: claimed.map(str::to_string),
        })?;
        Ok(Some(caller))
    }

    /// Verifies a call another adapter received (the AWS JSON 1.1 adapter: `parts` and `body`
    /// are the HTTP request exactly as its client signed it), writing the audit line of a
    /// refused state-changing call. The verified caller goes on in [`Verified`].
    pub fn verify_request(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
        action: &str,
    ) -> Result<Option<Caller>, tonic::Status> {
        self.verify(parts, body, service, action).map_err(|r| {
            if !is_read_action(action) {
                self.audit(AuditEntry {
                    time: AuditEntry::at(SystemTime::now()),
                    access_key_id: r.claimed,
                    service: service.to_string(),
                    action: action.to_string(),
                    source_address: source_address(&parts.extensions),
                    outcome: exception_of(&r.status),
                });
            }
            r.status
        })
    }

    /// Audits a state-changing call that `caller` made and an adapter refused after
    /// verification (the AWS JSON adapter's SerializationException), as the layer audits the
    /// refusals of the services behind it. A read is not audited.
    pub fn audit_refusal(
        &self,
        parts: &http::request::Parts,
        caller: Option<&Caller>,
        service: &str,
        action: &str,
        outcome: &str,
    ) {
        if !is_read_action(action) {
            self.audit(AuditEntry {
                time: AuditEntry::at(SystemTime::now()),
                access_key_id: caller.map(|c| c.access_key_id.clone()),
                service: service.to_string(),
                action: action.to_string(),
                source_address: source_address(&parts.extensions),
                outcome: outcome.to_string(),
            });
        }
    }

    fn audit(&self, entry: AuditEntry) {
        if let Some(log) = &self.audit {
            log.record(&entry);
        }
    }
}

/// The gRPC path of ExecuteCommand's stream (exec.proto): the one call whose body is not
/// buffered and verified by the layer, since a stream has no end to wait for. Its first
/// message carries the signed payload; the handler verifies it with [`StreamAuth`] before
/// anything runs.
pub const EXECUTE_COMMAND_PATH: &str = "/berth.v1.ExecuteCommand/Session";

/// What a streaming call needs to verify its signature and write the audit log, put in the
/// call's extensions by the layer. A handler that finds none refuses the call: it is not
/// served behind the authenticator.
#[derive(Clone)]
pub struct StreamAuth {
    auth: Arc<Authenticator>,
    method: http::Method,
    uri: http::Uri,
    headers: http::HeaderMap,
    /// The caller's address, when known.
    pub source_address: Option<String>,
}

impl StreamAuth {
    /// Verifies the call's signature over `payload` (the signed first message) as `ecs:action`,
    /// with the caller's permissions; a refusal is audited and returned.
    pub fn verify(&self, payload: &[u8], action: &str) -> Result<Option<Caller>, tonic::Status> {
        let mut req = http::Request::new(());
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        let (parts, ()) = req.into_parts();
        self.auth
            .verify(&parts, &sigv4::grpc_frame(payload), "ecs", action)
            .map_err(|r| {
                self.auth.audit(AuditEntry {
                    time: AuditEntry::at(SystemTime::now()),
                    access_key_id: r.claimed,
                    service: "ecs".into(),
                    action: action.into(),
                    source_address: self.source_address.clone(),
                    outcome: exception_of(&r.status),
                });
                r.status
            })
    }

    /// The audit log, if the controller keeps one.
    pub fn audit_log(&self) -> Option<&Arc<AuditLog>> {
        self.auth.audit.as_ref()
    }
}

/// Puts [`Authenticated`] on a service.
#[derive(Clone)]
pub struct AuthLayer(Arc<Authenticator>);

impl<S> tower::Layer<S> for AuthLayer {
    type Service = Authenticated<S>;
    fn layer(&self, inner: S) -> Authenticated<S> {
        Authenticated {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// A gRPC service whose calls are verified first.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

/// The caller's address from the connection info tonic puts in the extensions.
fn source_address(ext: &http::Extensions) -> Option<String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    ext.get::<TcpConnectInfo>()
        .or_else(|| {
            ext.get::<TlsConnectInfo<TcpConnectInfo>>()
                .map(|t| t.get_ref())
        })
        .and_then(|c| c.remote_addr())
        .map(|a| a.to_string())
}

/// The outcome of a response for the audit log: its exception name, else its gRPC code.
fn outcome(headers: &http::HeaderMap) -> String {
    if let Some(e) = headers.get(METADATA_KEY).and_then(|v| v.to_str().ok()) {
        return e.to_string();
    }
    match headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
    {
        Some(c) if c != 0 => format!("{:?}", tonic::Code::from_i32(c)),
        _ => "OK".into(),
    }
}

/// The audit entry of a call under way; dropped unanswered (the client cancelled), it is written
/// with the outcome `CANCELLED`, so no change that may have been made goes unaudited.
struct PendingAudit {
    auth: Arc<Authenticator>,
    entry: Option<AuditEntry>,
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.outcome = "CANCELLED".into();
            self.auth.audit(e);
        }
    }
}

fn exception_of(s: &tonic::Status) -> String {
    s.metadata()
        .get(METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("{:?}", s.code()))
}

impl<S> tower::Service<http::Request<Body>> for Authenticated<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready serves this call; the fresh one waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let auth = self.auth.clone();
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let (mut parts, body) = req.into_parts();
            let path = parts.uri.path().to_string();
            let service = sigv4::scope_service(&path).unwrap_or("unknown").to_string();
            let action = path.rsplit('/').next().unwrap_or_default().to_string();
            let audited = !is_read_action(&action);
            let source = source_address(&parts.extensions);
            if path == EXECUTE_COMMAND_PATH {
                let stream = StreamAuth {
                    auth: auth.clone(),
                    method: parts.method.clone(),
                    uri: parts.uri.clone(),
                    headers: parts.headers.clone(),
                    source_address: source,
                };
                parts.extensions.insert(stream);
                return inner.call(http::Request::from_parts(parts, body)).await;
            }
            let entry = |key: Option<String>, outcome: String| AuditEntry {
                time: AuditEntry::at(SystemTime::now()),
                access_key_id: key,
                service: service.clone(),
                action: action.clone(),
                source_address: source.clone(),
                outcome,
            };
            let limit = berth_proto::link::MAX_MESSAGE_SIZE + 5;
            let bytes = match http_body_util::Limited::new(body, limit).collect().await {
                Ok(c) => c.to_bytes(),
                Err(e) => {
                    let s = tonic::Status::resource_exhausted(format!(
                        "the request body could not be read (at most {limit} bytes): {e}"
                    ));
                    if audited {
                        auth.audit(entry(None, format!("{:?}", s.code())));
                    }
                    return Ok(s.into_http());
                }
            };
            let verified = match parts.extensions.remove::<Verified>() {
                Some(Verified(caller)) => Ok(caller),
                None => auth.verify(&parts, &bytes, &service, &action),
            };
            match verified {
                Err(r) => {
                    if audited {
                        auth.audit(entry(r.claimed, exception_of(&r.status)));
                    }
                    Ok(r.status.into_http())
                }
                Ok(caller) => {
                    let key = caller.as_ref().map(|c| c.access_key_id.clone());
                    if let Some(c) = caller {
                        parts.extensions.insert(c);
                    }
                    // Written when the call answers, or — should the client go away and the
                    // call be dropped mid-way, its change possibly made — when it is dropped.
                    let mut pending = PendingAudit {
                        auth: auth.clone(),
                        entry: audited.then(|| entry(key, String::new())),
                    };
                    let req = http::Request::from_parts(
                        parts,
                        Body::new(http_body_util::Full::new(bytes)),
                    );
                    let resp = inner.call(req).await?;
                    if let Some(mut e) = pending.entry.take() {
                        e.outcome = outcome(resp.headers());
                        auth.audit(e);
                    }
                    Ok(resp)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests;
