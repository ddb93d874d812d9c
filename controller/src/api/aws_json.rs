//! The AWS JSON 1.1 adapter (issue 13): the real aws CLI and the AWS SDKs talk to the
//! controller as they talk to ECS, on the controller's one port.
//!
//! `POST /` over HTTP/1.1 with `X-Amz-Target: AmazonEC2ContainerServiceV20141113.RunTask`
//! (`Logs_20140328.*`, `AmazonSSM.*`, `secretsmanager.*`) is verified as AWS verifies it (SigV4
//! over the HTTP request as the client signed it, [`Authenticator::verify_request`]), then handed
//! to the very gRPC service `berth` calls (`/berth.v1.Ecs/RunTask`), whose answer is turned back
//! into ECS's JSON. The request and response bodies go through the operation table the CLI uses
//! (`cli::table`: the proto's serde mapping) and the contract's model (`cli::model`), so no
//! operation has code of its own here and nothing of the service layer is repeated: a call
//! behaves exactly as over gRPC (`aws_json::tests::…` and `controller/tests/aws_json.rs`).
//!
//! What differs on the wire, and only here:
//! - timestamps are epoch seconds (numbers), as AWS JSON 1.1 writes them, both ways;
//! - 64-bit integers are JSON numbers (proto3's JSON writes them as strings);
//! - a member the model does not know is refused with `SerializationException` naming it;
//! - errors are HTTP 400 (500 for `ServerException`) with `{"__type", "message"}` and the
//!   `x-amzn-ErrorType` and `x-amzn-RequestId` headers.
//!
//! gRPC requests (content type `application/grpc…`) pass through untouched. Every other request
//! is AWS JSON 1.1's, over HTTP/1.1 or HTTP/2 (an SDK may negotiate either over TLS); one that
//! is not `POST /` with a known `X-Amz-Target` is refused by name (UnknownOperationException),
//! and an IAM or EC2 query-protocol call gets an XML refusal its client can print.

use crate::cli::model::{self, Kind, Msg};
use crate::cli::table::{self, Operation};
use crate::security::auth::{Authenticator, Verified, INCOMPLETE_SIGNATURE, MISSING_TOKEN};
use berth_proto::exceptions::{self as x, METADATA_KEY};
use bytes::Bytes;
use http_body_util::BodyExt as _;
use serde_json::{Map, Value};
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tonic::body::Body;

/// The `X-Amz-Target` prefixes Berth answers, the SigV4 signing name of each and the gRPC
/// service behind it. IAM and EC2 speak AWS's query protocol (form-encoded requests, XML
/// answers), not JSON: they are not served here.
pub const TARGETS: &[(&str, &str, &str)] = &[
    ("AmazonEC2ContainerServiceV20141113", "ecs", "berth.v1.Ecs"),
    ("Logs_20140328", "logs", "berth.v1.Logs"),
    ("AmazonSSM", "ssm", "berth.v1.Ssm"),
    (
        "secretsmanager",
        "secretsmanager",
        "berth.v1.SecretsManager",
    ),
];

/// The content type of AWS JSON 1.1.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// Refused: the body or a member does not fit the model.
pub const SERIALIZATION: &str = "SerializationException";
/// Refused: no such operation.
pub const UNKNOWN_OPERATION: &str = "UnknownOperationException";

/// An unsigned call's message: AWS's words, then where an AWS client finds a key.
pub const MISSING_TOKEN_AWS_MESSAGE: &str = "Missing Authentication Token: this controller requires signed calls; give the aws CLI or SDK an access key (a profile in ~/.aws/credentials or AWS_SHARED_CREDENTIALS_FILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY; the first admin key is in the controller's DATA_DIR/admin.credentials, in that file's format)";

/// The largest request body taken: AWS's own limits are smaller (PutLogEvents 1 MiB, a task
/// definition 64 KiB).
pub const MAX_BODY: usize = 4 * 1024 * 1024;

/// The operations served as streams (CloudWatch Logs' StartLiveTail): not AWS JSON 1.1.
const STREAMS: &[&str] = &["StartLiveTail"];

/// A refusal as AWS JSON 1.1 writes it.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsError {
    /// The exception name (`ClusterNotFoundException`).
    pub kind: String,
    /// Its message.
    pub message: String,
}

impl AwsError {
    fn new(kind: &str, message: impl Into<String>) -> Self {
        AwsError {
            kind: kind.to_string(),
            message: message.into(),
        }
    }

    /// 500 for a fault of the server, 400 for everything the caller can change.
    pub fn http_status(&self) -> http::StatusCode {
        if self.kind == x::SERVER {
            http::StatusCode::INTERNAL_SERVER_ERROR
        } else {
            http::StatusCode::BAD_REQUEST
        }
    }

    /// The exception a gRPC status carries: Berth names it in `x-berth-exception`; a status
    /// without one (the transport's own) is named by its code.
    pub fn from_status(code: tonic::Code, exception: Option<&str>, message: String) -> Self {
        let kind = match exception {
            Some(e) => e.to_string(),
            None => match code {
                tonic::Code::InvalidArgument
                | tonic::Code::FailedPrecondition
                | tonic::Code::OutOfRange
                | tonic::Code::AlreadyExists => x::CLIENT.into(),
                tonic::Code::NotFound => x::RESOURCE_NOT_FOUND.into(),
                tonic::Code::PermissionDenied => x::ACCESS_DENIED.into(),
                tonic::Code::Unauthenticated => crate::security::auth::MISSING_TOKEN.into(),
                tonic::Code::ResourceExhausted => x::LIMIT_EXCEEDED.into(),
                tonic::Code::Unimplemented => UNKNOWN_OPERATION.into(),
                _ => x::SERVER.into(),
            },
        };
        AwsError { kind, message }
    }
}

/// The operation an `X-Amz-Target` names: its signing name and row.
pub fn operation(target: &str) -> Result<(&'static str, &'static Operation), AwsError> {
    let unknown = || {
        AwsError::new(
            UNKNOWN_OPERATION,
            format!("Berth does not serve the operation {target:?} over AWS JSON 1.1"),
        )
    };
    let (prefix, api) = target.split_once('.').ok_or_else(unknown)?;
    let (_, signing, grpc) = TARGETS
        .iter()
        .find(|(p, _, _)| *p == prefix)
        .ok_or_else(unknown)?;
    if STREAMS.contains(&api) {
        return Err(AwsError::new(
            UNKNOWN_OPERATION,
            format!(
                "{api} is a stream, served over gRPC only (`berth logs tail --follow`), not AWS JSON 1.1"
            ),
        ));
    }
    let op = table::all_operations()
        .find(|o| o.service.grpc == *grpc && o.api == api)
        .ok_or_else(unknown)?;
    Ok((signing, op))
}

fn input_of(op: &Operation) -> Option<&'static Msg> {
    let m = model::model();
    m.rpc(op.api).and_then(|r| m.message(&r.input))
}

fn output_of(op: &Operation) -> Option<&'static Msg> {
    let m = model::model();
    m.rpc(op.api).and_then(|r| m.message(&r.output))
}

/// The request body as the operation's encoded request message: the members checked against
/// the model (an unknown one refused by name), timestamps from epoch seconds.
pub fn decode_request(op: &Operation, body: &[u8]) -> Result<Vec<u8>, AwsError> {
    let short = |m: &str| m.rsplit('.').next().unwrap_or(m).to_string();
    let mut v: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            AwsError::new(SERIALIZATION, format!("the request body is not JSON: {e}"))
        })?
    };
    let msg = input_of(op)
        .ok_or_else(|| AwsError::new(x::SERVER, format!("no model of {}'s request", op.api)))?;
    request_value(&mut v, msg, &short(&msg.name))?;
    (op.decode)(v).map_err(|e| AwsError::new(SERIALIZATION, format!("{}: {e}", short(&msg.name))))
}

fn request_value(v: &mut Value, msg: &Msg, at: &str) -> Result<(), AwsError> {
    let Value::Object(members) = v else {
        return Err(AwsError::new(
            SERIALIZATION,
            format!("{at} must be a JSON object, not {}", shown(v)),
        ));
    };
    for (key, value) in members.iter_mut() {
        let Some(field) = msg.field(key) else {
            return Err(AwsError::new(
                SERIALIZATION,
                format!(
                    "Unknown member {key:?} in {at}: the model has no such member (members: {})",
                    msg.fields
                        .iter()
                        .map(|f| f.json.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        };
        let inner = format!("{at}.{key}");
        if value.is_null() {
            continue;
        }
        if field.list {
            let Value::Array(items) = value else {
                return Err(AwsError::new(
                    SERIALIZATION,
                    format!("{inner} must be a list, not {}", shown(value)),
                ));
            };
            for (i, item) in items.iter_mut().enumerate() {
                request_item(item, &field.kind, &format!("{inner}[{i}]"))?;
            }
        } else {
            request_item(value, &field.kind, &inner)?;
        }
    }
    // JSON's null is "not given": the proto mapping takes it so for messages but not for every
    // scalar, so it is dropped here.
    members.retain(|_, v| !v.is_null());
    Ok(())
}

fn request_item(v: &mut Value, kind: &Kind, at: &str) -> Result<(), AwsError> {
    match kind {
        Kind::Message(name) => {
            if let Some(m) = model::model().message(name) {
                request_value(v, m, at)?;
            }
        }
        Kind::Map(value_kind) => {
            if let Value::Object(m) = v {
                for (k, item) in m.iter_mut() {
                    request_item(item, value_kind, &format!("{at}.{k}"))?;
                }
            }
        }
        Kind::Timestamp => {
            if let Some(secs) = v.as_f64() {
                *v = Value::String(rfc3339(secs).ok_or_else(|| {
                    AwsError::new(SERIALIZATION, format!("{at}: {secs} is not a timestamp"))
                })?);
            }
        }
        Kind::Str | Kind::Int | Kind::Float | Kind::Bool => {}
    }
    Ok(())
}

/// A value as a refusal shows it: at most 100 characters of its JSON.
fn shown(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(100) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text,
    }
}

/// Epoch seconds as proto3 JSON's RFC 3339 timestamp.
fn rfc3339(secs: f64) -> Option<String> {
    if !secs.is_finite() {
        return None;
    }
    let nanos = (secs * 1e9).round() as i128;
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

/// An encoded response message as ECS's JSON: members ECS leaves out left out, timestamps as
/// epoch seconds, 64-bit integers as numbers.
pub fn encode_response(op: &Operation, message: &[u8]) -> Result<Value, AwsError> {
    let mut v = (op.render)(message).map_err(|e| {
        AwsError::new(
            x::SERVER,
            format!("the {} response does not decode: {e}", op.api),
        )
    })?;
    berth_proto::ecs_json::omit_unset_lists(&mut v, op.api);
    if let Some(msg) = output_of(op) {
        response_value(&mut v, msg);
    }
    Ok(v)
}

fn response_value(v: &mut Value, msg: &Msg) {
    let Value::Object(members) = v else { return };
    for (key, value) in members.iter_mut() {
        let Some(field) = msg.field(key) else {
            continue;
        };
        match value {
            Value::Array(items) if field.list => {
                items.iter_mut().for_each(|i| response_item(i, &field.kind))
            }
            _ => response_item(value, &field.kind),
        }
    }
}

fn response_item(v: &mut Value, kind: &Kind) {
    match kind {
        Kind::Message(name) => {
            if let Some(m) = model::model().message(name) {
                response_value(v, m);
            }
        }
        Kind::Map(value_kind) => {
            if let Value::Object(m) = v {
                m.values_mut().for_each(|i| response_item(i, value_kind));
            }
        }
        Kind::Timestamp => {
            if let Some(secs) = v.as_str().and_then(epoch_seconds) {
                *v = secs;
            }
        }
        Kind::Int => {
            if let Some(s) = v.as_str() {
                if let Ok(n) = s.parse::<i64>() {
                    *v = Value::from(n);
                } else if let Ok(n) = s.parse::<u64>() {
                    *v = Value::from(n);
                }
            }
        }
        Kind::Str | Kind::Float | Kind::Bool => {}
    }
}

/// An RFC 3339 timestamp as epoch seconds, to the millisecond as ECS writes them
/// (`1700000000.123`; whole seconds as an integer).
fn epoch_seconds(s: &str) -> Option<Value> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let millis = t.unix_timestamp_nanos() / 1_000_000;
    if millis % 1000 == 0 {
        Some(Value::from((millis / 1000) as i64))
    } else {
        serde_json::Number::from_f64(millis as f64 / 1000.0).map(Value::Number)
    }
}

/// A fresh request id, as AWS writes them (a UUID).
fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn respond(status: http::StatusCode, request_id: &str, body: Vec<u8>) -> http::Response<Body> {
    let mut r = http::Response::new(Body::new(http_body_util::Full::new(Bytes::from(body))));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE),
    );
    if let Ok(v) = http::HeaderValue::from_str(request_id) {
        h.insert("x-amzn-requestid", v);
    }
    r
}

/// The HTTP response of a refusal.
pub fn error_response(e: &AwsError, request_id: &str) -> http::Response<Body> {
    let body = serde_json::json!({"__type": e.kind, "message": e.message});
    let mut r = respond(e.http_status(), request_id, body.to_string().into_bytes());
    if let Ok(v) = http::HeaderValue::from_str(&e.kind) {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}

/// Whether a request is gRPC's (`application/grpc…`, as every gRPC client sends it): the one
/// kind that passes through. Everything else is answered here as AWS JSON 1.1, over HTTP/1.1
/// or HTTP/2 alike (an SDK may negotiate either), and refused by name when it is not.
pub fn is_grpc(req: &http::Request<Body>) -> bool {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// Whether a request is of AWS's query protocol (IAM, EC2: a form-encoded body naming the
/// `Action`), which Berth does not serve.
fn is_query_protocol(req: &http::Request<Body>) -> bool {
    !req.headers().contains_key("x-amz-target")
        && req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The refusal of a query-protocol call, in the XML its client reads (EC2's shape for EC2's
/// API version, IAM's otherwise), so `aws iam …` prints the reason instead of failing to parse
/// JSON.
async fn query_protocol_refusal(req: http::Request<Body>) -> http::Response<Body> {
    let id = request_id();
    let form = http_body_util::Limited::new(req.into_body(), 64 * 1024)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let field = |name: &str| {
        form.split(|b| *b == b'&').find_map(|kv| {
            let kv = std::str::from_utf8(kv).ok()?;
            let (k, v) = kv.split_once('=')?;
            (k == name).then(|| {
                percent_encoding::percent_decode_str(&v.replace('+', " "))
                    .decode_utf8_lossy()
                    .into_owned()
            })
        })
    };
    let action = field("Action").unwrap_or_default();
    let ec2 = field("Version").as_deref() == Some("2016-11-15");
    let (service, berth) = if ec2 { ("EC2", "ec2") } else { ("IAM", "iam") };
    let message = xml_escape(&format!(
        "Berth does not serve AWS's query protocol ({service}'s {action}); use `berth {berth} …`, which calls the same API over gRPC"
    ));
    let xml = if ec2 {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>{UNKNOWN_OPERATION}</Code><Message>{message}</Message></Error></Errors><RequestID>{id}</RequestID></Response>"
        )
    } else {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{UNKNOWN_OPERATION}</Code><Message>{message}</Message></Error><RequestId>{id}</RequestId></ErrorResponse>"
        )
    };
    let mut r = respond(http::StatusCode::BAD_REQUEST, &id, xml.into_bytes());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    r
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Puts [`AwsJson`] in front of the gRPC services.
#[derive(Clone)]
pub struct AwsJsonLayer(Arc<Authenticator>);

impl AwsJsonLayer {
    /// Verifies calls with `auth`, as the gRPC services' own layer does.
    pub fn new(auth: Arc<Authenticator>) -> Self {
        AwsJsonLayer(auth)
    }
}

impl<S> tower::Layer<S> for AwsJsonLayer {
    type Service = AwsJson<S>;
    fn layer(&self, inner: S) -> AwsJson<S> {
        AwsJson {
            inner,
            auth: self.0.clone(),
        }
    }
}

/// The gRPC services, also answering AWS JSON 1.1.
#[derive(Clone)]
pub struct AwsJson<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S> tower::Service<http::Request<Body>> for AwsJson<S>
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
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // A web page must reach no service on this port, gRPC's included (over HTTP/1.1, a
        // page's fetch could carry a gRPC frame to a loopback controller without signatures).
        if from_a_browser(req.headers()) {
            let e = AwsError::new(
                x::ACCESS_DENIED,
                "requests from web browsers (an Origin or Sec-Fetch-Site header) are refused: the API is for the aws CLI, the SDKs and berth",
            );
            return Box::pin(async move { Ok(error_response(&e, &request_id())) });
        }
        if is_grpc(&req) {
            if req.version() != http::Version::HTTP_2 {
                let e = AwsError::new(UNKNOWN_OPERATION, "gRPC is served over HTTP/2 only");
                return Box::pin(async move { Ok(error_response(&e, &request_id())) });
            }
            return Box::pin(inner.call(req));
        }
        let auth = self.auth.clone();
        if is_query_protocol(&req) {
            return Box::pin(async move { Ok(query_protocol_refusal(req).await) });
        }
        Box::pin(async move {
            let id = request_id();
            Ok(match serve(&mut inner, &auth, req).await {
                Ok(r) => respond(http::StatusCode::OK, &id, r),
                Err(e) => {
                    if e.http_status().is_server_error() {
                        tracing::error!(request_id = %id, exception = %e.kind, message = %e.message,
                            "an AWS JSON call failed on the controller's side");
                    } else {
                        tracing::debug!(request_id = %id, exception = %e.kind, message = %e.message,
                            "an AWS JSON call refused");
                    }
                    error_response(&e, &id)
                }
            })
        })
    }
}

/// Whether the signature covers `X-Amz-Target`.
fn target_signed(headers: &http::HeaderMap) -> bool {
    headers
        .get(berth_proto::sigv4::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| berth_proto::sigv4::Authorization::parse(v).ok())
        .is_some_and(|a| a.signed_headers.iter().any(|h| h == "x-amz-target"))
}

/// Whether a request comes from a web browser: browsers send `Origin` with every POST (and
/// `Sec-Fetch-Site`); the aws CLI, the SDKs, curl and gRPC clients never do. A page must not
/// reach the controller, not even through DNS rebinding to a loopback controller without
/// signing, by AWS JSON or by a gRPC frame over HTTP/1.1 (gRPC is taken over HTTP/2 only).
fn from_a_browser(headers: &http::HeaderMap) -> bool {
    headers.contains_key(http::header::ORIGIN) || headers.contains_key("sec-fetch-site")
}

/// One AWS JSON 1.1 call: verified, handed to the gRPC service, its answer as ECS's JSON.
async fn serve<S>(
    inner: &mut S,
    auth: &Authenticator,
    req: http::Request<Body>,
) -> Result<Vec<u8>, AwsError>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
{
    let (parts, body) = req.into_parts();
    if parts.method != http::Method::POST || parts.uri.path() != "/" {
        return Err(AwsError::new(
            UNKNOWN_OPERATION,
            format!(
                "AWS JSON 1.1 is POST / with an X-Amz-Target header, not {} {}",
                parts.method,
                parts.uri.path()
            ),
        ));
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            AwsError::new(
                UNKNOWN_OPERATION,
                "no X-Amz-Target header: it names the operation (AmazonEC2ContainerServiceV20141113.RunTask)",
            )
        })?
        .to_string();
    let (signing, op) = operation(&target)?;
    let refused = |s: tonic::Status| {
        let exception = s.metadata().get(METADATA_KEY).and_then(|v| v.to_str().ok());
        // The gRPC message tells `berth` where keys come from; this caller is an AWS client.
        let message = if exception == Some(MISSING_TOKEN) {
            MISSING_TOKEN_AWS_MESSAGE.to_string()
        } else {
            s.message().to_string()
        };
        AwsError::from_status(s.code(), exception, message)
    };
    // An unsigned call is refused before its body is read (where signing is required), and a
    // body is read only up to `MAX_BODY`.
    if !parts
        .headers
        .contains_key(berth_proto::sigv4::AUTHORIZATION)
    {
        auth.verify_request(&parts, b"", signing, op.api)
            .map_err(refused)?;
    }
    let limit = MAX_BODY;
    let bytes = http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map_err(|e| {
            AwsError::new(
                SERIALIZATION,
                format!("the request body could not be read (at most {limit} bytes): {e}"),
            )
        })?
        .to_bytes();
    let caller = auth
        .verify_request(&parts, &bytes, signing, op.api)
        .map_err(refused)?;
    // Over gRPC the operation is in the signed path; here it is in X-Amz-Target, which must be
    // signed too, or a captured call could be replayed as another operation (botocore and the
    // SDKs sign it).
    if caller.is_some() && !target_signed(&parts.headers) {
        auth.audit_refusal(
            &parts,
            caller.as_ref(),
            signing,
            op.api,
            INCOMPLETE_SIGNATURE,
        );
        return Err(AwsError::new(
            INCOMPLETE_SIGNATURE,
            "SignedHeaders must include 'x-amz-target': it names the operation",
        ));
    }
    // Refused here, after verification: audited as the gRPC side audits its refusals.
    let message = decode_request(op, &bytes).inspect_err(|e| {
        auth.audit_refusal(&parts, caller.as_ref(), signing, op.api, &e.kind);
    })?;
    let frame = berth_proto::sigv4::grpc_frame(&message);
    let mut grpc = http::Request::new(Body::new(http_body_util::Full::new(Bytes::from(frame))));
    *grpc.method_mut() = http::Method::POST;
    *grpc.version_mut() = http::Version::HTTP_2;
    *grpc.uri_mut() = op
        .path()
        .parse()
        .map_err(|e| AwsError::new(x::SERVER, format!("{}: {e}", op.path())))?;
    // The connection's info (the caller's address for the audit log) goes along.
    *grpc.extensions_mut() = parts.extensions;
    grpc.extensions_mut().insert(Verified(caller));
    let h = grpc.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    h.insert("te", http::HeaderValue::from_static("trailers"));
    let resp = match inner.call(grpc).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    let (head, body) = resp.into_parts();
    let collected = body
        .collect()
        .await
        .map_err(|e| AwsError::new(x::SERVER, format!("the {} answer broke off: {e}", op.api)))?;
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let data = collected.to_bytes();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.headers.get(name))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let code = field("grpc-status")
        .and_then(|c| c.parse::<i32>().ok())
        .map(tonic::Code::from_i32)
        .unwrap_or(tonic::Code::Unknown);
    if code != tonic::Code::Ok {
        let message = field("grpc-message")
            .map(|m| {
                percent_encoding::percent_decode_str(&m)
                    .decode_utf8_lossy()
                    .into_owned()
            })
            .unwrap_or_default();
        return Err(AwsError::from_status(
            code,
            field(METADATA_KEY).as_deref(),
            message,
        ));
    }
    // One gRPC frame: a flag byte (0: not compressed), a 4-byte length, the message.
    let message = match (data.first(), data.get(1..5)) {
        (Some(0), Some(len)) => {
            let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
            data.get(5..5 + len)
        }
        _ => None,
    }
    .ok_or_else(|| AwsError::new(x::SERVER, format!("the {} answer has no message", op.api)))?;
    let v = encode_response(op, message)?;
    serde_json::to_vec(&v).map_err(|e| AwsError::new(x::SERVER, e.to_string()))
}

#[cfg(test)]
mod tests;
