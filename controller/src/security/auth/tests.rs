use super::*;
use crate::store::memory::MemoryStore;
use std::sync::Mutex;
use std::time::Duration;
use tower::{Layer as _, Service as _};

const HOST: &str = "127.0.0.1:7480";
/// The fixed time of the verifier's clock.
fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000)
}

/// What reached the inner service: the body and the verified caller.
type Seen = Vec<(Vec<u8>, Option<Caller>)>;

/// An inner service that records what reached it and answers OK.
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Seen>>);

impl tower::Service<http::Request<Body>> for Recorder {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let seen = self.0.clone();
        Box::pin(async move {
            use http_body_util::BodyExt as _;
            let caller = req.extensions().get::<Caller>().cloned();
            let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
            seen.lock().unwrap().push((body, caller));
            Ok(http::Response::new(Body::empty()))
        })
    }
}

struct Rig {
    keys: Arc<AccessKeys>,
    full: sigv4::Credentials,
    reader: sigv4::Credentials,
    audit_path: std::path::PathBuf,
    seen: Recorder,
    svc: Authenticated<Recorder>,
    auth: Arc<Authenticator>,
}

fn creds(k: crate::security::access_keys::KeyWithSecret) -> sigv4::Credentials {
    sigv4::Credentials {
        access_key_id: k.record.access_key_id,
        secret_access_key: k.secret,
    }
}

fn rig(mode: Mode) -> Rig {
    let store = Arc::new(MemoryStore::default());
    let keys = Arc::new(AccessKeys::new(
        store,
        crate::security::seal::Sealer::new(&[1; 32]),
    ));
    let full = creds(keys.create("admin", Permissions::Full).unwrap());
    let reader = creds(keys.create("reader", Permissions::ReadOnly).unwrap());
    let dir = std::env::temp_dir().join(format!("berth-auth-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let audit_path = dir.join("audit.log");
    let audit = Arc::new(AuditLog::open(&audit_path).unwrap());
    let auth =
        Arc::new(Authenticator::new(keys.clone(), mode, Some(audit)).with_clock(Arc::new(now)));
    let seen = Recorder::default();
    let svc = auth.layer().layer(seen.clone());
    Rig {
        keys,
        full,
        reader,
        audit_path,
        seen,
        svc,
        auth,
    }
}

/// A POST of `message` on `path`, signed by `creds` at `at` (unsigned when None).
fn request(
    path: &str,
    message: &[u8],
    creds: Option<&sigv4::Credentials>,
    at: SystemTime,
) -> http::Request<Body> {
    let frame = sigv4::grpc_frame(message);
    let date = sigv4::amz_date(at);
    let mut b = http::Request::builder()
        .method("POST")
        .uri(format!("http://{HOST}{path}"))
        .header("content-type", "application/grpc")
        .header(sigv4::X_AMZ_DATE, &date);
    if let Some(c) = creds {
        let input = sigv4::CanonicalInput {
            method: "POST",
            path,
            query: "",
            headers: vec![
                ("host".into(), HOST.into()),
                ("x-amz-date".into(), date.clone()),
            ],
            payload_sha256: sigv4::hex_sha256(&frame),
        };
        let service = sigv4::scope_service(path).unwrap();
        b = b.header(
            sigv4::AUTHORIZATION,
            sigv4::authorization(c, &input, &date, "on-prem", service),
        );
    }
    b.body(Body::new(http_body_util::Full::new(bytes::Bytes::from(
        frame,
    ))))
    .unwrap()
}

impl Rig {
    /// Calls the layer; returns the exception name and message of a refusal, None when passed.
    async fn call(&mut self, req: http::Request<Body>) -> Option<(String, String)> {
        let resp = self.svc.call(req).await.unwrap();
        tonic::Status::from_header_map(resp.headers())
            .map(|s| (exception_of(&s), s.message().to_string()))
    }

    fn audit_lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit_path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

const RUN: &str = "/berth.v1.Ecs/RunTask";
const DESCRIBE: &str = "/berth.v1.Ecs/DescribeTasks";

#[tokio::test]
async fn a_well_signed_call_passes_its_exact_body_and_caller_on() {
    let mut r = rig(Mode::Required);
    let full = r.full.clone();
    assert_eq!(
        r.call(request(RUN, b"\x0a\x02hi", Some(&full), now()))
            .await,
        None
    );
    let seen = r.seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, sigv4::grpc_frame(b"\x0a\x02hi"));
    let caller = seen[0].1.clone().unwrap();
    assert_eq!(caller.access_key_id, full.access_key_id);
    assert_eq!(caller.user_name, "admin");
    // Within five minutes either way is accepted.
    for skew in [-299i64, 299] {
        let at = if skew < 0 {
            now() - Duration::from_secs(299)
        } else {
            now() + Duration::from_secs(299)
        };
        assert_eq!(
            r.call(request(RUN, b"", Some(&full), at)).await,
            None,
            "{skew}"
        );
    }
}

#[tokio::test]
async fn unsigned_unknown_badly_signed_and_skewed_calls_get_awss_errors() {
    let mut r = rig(Mode::Required);
    let (e, m) = r.call(request(RUN, b"x", None, now())).await.unwrap();
    assert_eq!(e, MISSING_TOKEN);
    assert!(
        m.starts_with("Missing Authentication Token") && m.contains("BERTH_ACCESS_KEY_ID"),
        "{m}"
    );

    let unknown = sigv4::Credentials {
        access_key_id: "AKIAUNKNOWNKEY000000".into(),
        secret_access_key: r.full.secret_access_key.clone(),
    };
    let (e, m) = r
        .call(request(RUN, b"x", Some(&unknown), now()))
        .await
        .unwrap();
    assert_eq!(
        (e.as_str(), m.as_str()),
        (UNRECOGNIZED_CLIENT, UNRECOGNIZED_MESSAGE)
    );

    let wrong = sigv4::Credentials {
        secret_access_key: "wrong".repeat(8),
        ..r.full.clone()
    };
    let (e, m) = r
        .call(request(RUN, b"x", Some(&wrong), now()))
        .await
        .unwrap();
    assert_eq!(
        (e.as_str(), m.as_str()),
        (INVALID_SIGNATURE, SIGNATURE_MISMATCH_MESSAGE)
    );

    // The body is changed after signing.
    let full = r.full.clone();
    let signed = request(RUN, b"x", Some(&full), now());
    let (parts, _) = signed.into_parts();
    let tampered = http::Request::from_parts(
        parts,
        Body::new(http_body_util::Full::new(bytes::Bytes::from(
            sigv4::grpc_frame(b"y"),
        ))),
    );
    let (e, _) = r.call(tampered).await.unwrap();
    assert_eq!(e, INVALID_SIGNATURE);

    // The path is changed after signing (same service).
    let signed = request(RUN, b"x", Some(&full), now());
    let (mut parts, body) = signed.into_parts();
    parts.uri = format!("http://{HOST}/berth.v1.Ecs/StopTask")
        .parse()
        .unwrap();
    let (e, _) = r
        .call(http::Request::from_parts(parts, body))
        .await
        .unwrap();
    assert_eq!(e, INVALID_SIGNATURE);

    let (e, m) = r
        .call(request(
            RUN,
            b"x",
            Some(&full),
            now() - Duration::from_secs(301),
        ))
        .await
        .unwrap();
    assert_eq!(e, INVALID_SIGNATURE);
    assert!(
        m.starts_with("Signature expired: ") && m.contains(" is now earlier than "),
        "{m}"
    );
    let (e, m) = r
        .call(request(
            RUN,
            b"x",
            Some(&full),
            now() + Duration::from_secs(301),
        ))
        .await
        .unwrap();
    assert_eq!(e, INVALID_SIGNATURE);
    assert!(m.starts_with("Signature not yet current: "), "{m}");
    assert!(
        r.seen.0.lock().unwrap().is_empty(),
        "nothing refused reached the service"
    );
}

#[tokio::test]
async fn a_read_only_key_reads_but_never_writes_or_manages_keys() {
    let mut r = rig(Mode::Required);
    let reader = r.reader.clone();
    assert_eq!(
        r.call(request(DESCRIBE, b"", Some(&reader), now())).await,
        None
    );
    let (e, m) = r
        .call(request(RUN, b"", Some(&reader), now()))
        .await
        .unwrap();
    assert_eq!(e, ACCESS_DENIED);
    assert!(
        m.starts_with(
            "User: arn:aws:iam::000000000000:user/reader is not authorized to perform: ecs:RunTask"
        ),
        "{m}"
    );
    let (e, _) = r
        .call(request(
            "/berth.v1.Iam/ListAccessKeys",
            b"",
            Some(&reader),
            now(),
        ))
        .await
        .unwrap();
    assert_eq!(e, ACCESS_DENIED);
    // Security groups (issue 8): ec2:Describe* reads; the rest writes.
    assert_eq!(
        r.call(request(
            "/berth.v1.Ec2/DescribeSecurityGroups",
            b"",
            Some(&reader),
            now()
        ))
        .await,
        None
    );
    let (e, m) = r
        .call(request(
            "/berth.v1.Ec2/AuthorizeSecurityGroupIngress",
            b"",
            Some(&reader),
            now(),
        ))
        .await
        .unwrap();
    assert_eq!(e, ACCESS_DENIED);
    assert!(
        m.contains("not authorized to perform: ec2:AuthorizeSecurityGroupIngress"),
        "{m}"
    );
    // CloudWatch Logs (issue 10): FilterLogEvents and StartLiveTail read; PutLogEvents writes.
    for read in [
        "/berth.v1.Logs/FilterLogEvents",
        "/berth.v1.Logs/StartLiveTail",
        "/berth.v1.Logs/GetLogEvents",
    ] {
        assert_eq!(
            r.call(request(read, b"", Some(&reader), now())).await,
            None,
            "{read}"
        );
    }
    let (e, m) = r
        .call(request(
            "/berth.v1.Logs/PutLogEvents",
            b"",
            Some(&reader),
            now(),
        ))
        .await
        .unwrap();
    assert_eq!(e, ACCESS_DENIED);
    assert!(
        m.contains("not authorized to perform: logs:PutLogEvents"),
        "{m}"
    );
    let full = r.full.clone();
    assert_eq!(
        r.call(request(
            "/berth.v1.Iam/ListAccessKeys",
            b"",
            Some(&full),
            now()
        ))
        .await,
        None
    );
    // What the SSM adapter asks for GetParameter WithDecryption.
    let mut req = tonic::Request::new(());
    req.extensions_mut().insert(Caller {
        access_key_id: reader.access_key_id.clone(),
        user_name: "reader".into(),
        permissions: Permissions::ReadOnly,
    });
    assert!(require_full(&req, "ssm", "GetParameter").is_err());
    assert!(require_full(&tonic::Request::new(()), "ssm", "GetParameter").is_ok());
}

#[tokio::test]
async fn with_auth_off_any_signature_or_none_passes() {
    let mut r = rig(Mode::Off);
    let wrong = sigv4::Credentials {
        secret_access_key: "nope".into(),
        ..r.full.clone()
    };
    assert_eq!(r.call(request(RUN, b"", None, now())).await, None);
    assert_eq!(
        r.call(request(
            RUN,
            b"",
            Some(&wrong),
            now() - Duration::from_secs(3600)
        ))
        .await,
        None
    );
    assert_eq!(r.seen.0.lock().unwrap().len(), 2);
}

#[tokio::test]
async fn state_changing_calls_are_audited_allowed_or_refused_reads_are_not() {
    let mut r = rig(Mode::Required);
    let (full, reader) = (r.full.clone(), r.reader.clone());
    r.call(request(RUN, b"secret-bearing-body", Some(&full), now()))
        .await;
    r.call(request(RUN, b"", Some(&reader), now())).await;
    r.call(request(RUN, b"", None, now())).await;
    r.call(request(DESCRIBE, b"", Some(&full), now())).await;
    let lines = r.audit_lines();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(lines[0]["accessKeyId"], full.access_key_id.as_str());
    assert_eq!(lines[0]["service"], "ecs");
    assert_eq!(lines[0]["action"], "RunTask");
    assert_eq!(lines[0]["outcome"], "OK");
    assert_eq!(lines[1]["accessKeyId"], reader.access_key_id.as_str());
    assert_eq!(lines[1]["outcome"], ACCESS_DENIED);
    assert_eq!(lines[2]["accessKeyId"], serde_json::Value::Null);
    assert_eq!(lines[2]["outcome"], MISSING_TOKEN);
    let text = std::fs::read_to_string(&r.audit_path).unwrap();
    assert!(!text.contains("secret-bearing-body"));
    assert!(!text.contains(&full.secret_access_key));
    let _ = r.keys;
}

/// An inner service whose calls never answer (a call the client gives up on).
#[derive(Clone)]
struct Hang;

impl tower::Service<http::Request<Body>> for Hang {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: http::Request<Body>) -> Self::Future {
        Box::pin(std::future::pending())
    }
}

#[tokio::test]
async fn a_call_dropped_mid_way_is_audited_as_cancelled() {
    use futures::FutureExt as _;
    let r = rig(Mode::Required);
    let mut svc = r.auth.layer().layer(Hang);
    let call = svc.call(request(RUN, b"", Some(&r.full), now()));
    // Polled once: verified and handed to the service, which has not answered; then dropped,
    // as hyper drops a call whose client went away.
    assert!(call.now_or_never().is_none());
    let lines = r.audit_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["action"], "RunTask");
    assert_eq!(lines[0]["accessKeyId"], r.full.access_key_id.as_str());
    assert_eq!(lines[0]["outcome"], "CANCELLED");
}
