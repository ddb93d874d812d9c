//! The registry client against in-process fake registries (hyper servers on 127.0.0.1:0).

use super::*;
use futures::StreamExt;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::HeaderMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};

type Body = BoxBody<Bytes, Infallible>;
type FrameSender = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// What a fake registry saw of a request.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    query: String,
    headers: HeaderMap,
}

type Handler = Arc<dyn Fn(Seen) -> Response<Body> + Send + Sync>;

/// Serves `handler` on 127.0.0.1:0 until the test's runtime ends.
async fn serve(handler: Handler) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Seen {
                        path: req.uri().path().to_string(),
                        query: req.uri().query().unwrap_or("").to_string(),
                        headers: req.headers().clone(),
                    };
                    let resp = handler(seen);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).boxed()
}

fn respond(status: u16, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response<Body> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full(body)).expect("response")
}

fn json_error(status: u16, code: &str, message: &str, challenge: Option<&str>) -> Response<Body> {
    let body = format!(r#"{{"errors":[{{"code":"{code}","message":"{message}","detail":null}}]}}"#);
    let mut h = vec![("content-type", "application/json")];
    if let Some(c) = challenge {
        h.push(("www-authenticate", c));
    }
    respond(status, &h, body)
}

const MANIFEST: &str = r#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:aa","size":2},"layers":[]}"#;
const BLOB: &[u8] = b"0123456789abcdefghij";

fn blob_digest() -> String {
    crate::runtime::image::digest_of(BLOB)
}

/// A registry with one image `app:1` and one blob; `auth` decides whether a request may pass.
fn registry(auth: impl Fn(&Seen) -> Option<Response<Body>> + Send + Sync + 'static) -> Handler {
    let blob_path = format!("/v2/app/blobs/{}", blob_digest());
    Arc::new(move |seen: Seen| {
        if let Some(refusal) = auth(&seen) {
            return refusal;
        }
        if seen.path == "/v2/app/manifests/1" {
            return respond(200, &[("content-type", OCI_MANIFEST)], MANIFEST);
        }
        if seen.path == blob_path {
            let start = seen
                .headers
                .get("range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes="))
                .and_then(|v| v.trim_end_matches('-').parse::<usize>().ok());
            return match start {
                Some(s) => respond(
                    206,
                    &[(
                        "content-range",
                        &format!("bytes {s}-{}/{}", BLOB.len() - 1, BLOB.len()),
                    )],
                    &BLOB[s..],
                ),
                None => respond(200, &[], BLOB),
            };
        }
        json_error(404, "MANIFEST_UNKNOWN", "manifest unknown", None)
    })
}

fn client(insecure: &[SocketAddr], auth: DockerConfig, timeout: Duration) -> RegistryClient {
    RegistryClient::new(RegistryConfig {
        insecure: insecure.iter().map(|a| a.to_string()).collect(),
        auth,
        ca_file: None,
        inactivity_timeout: timeout,
    })
    .expect("client")
}

fn reference(addr: SocketAddr, rest: &str) -> Reference {
    Reference::parse(&format!("{addr}/{rest}")).expect("reference")
}

async fn collect(blob: Blob) -> Result<Vec<u8>, RegistryError> {
    let mut out = Vec::new();
    let mut s = blob.stream;
    while let Some(chunk) = s.next().await {
        out.extend_from_slice(&chunk?);
    }
    Ok(out)
}

fn creds(u: &str, p: &str) -> Credentials {
    Credentials {
        username: u.into(),
        password: p.into(),
    }
}

fn auth_file(addr: SocketAddr, user: &str, pass: &str) -> DockerConfig {
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{pass}"),
    );
    DockerConfig::from_json(&serde_json::json!({"auths": {addr.to_string(): {"auth": auth}}}))
        .expect("config")
}

#[tokio::test]
async fn anonymous_manifest_and_blob() {
    let addr = serve(registry(|_| None)).await;
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let r = reference(addr, "app:1");
    let m = c.manifest(&r, None).await.expect("manifest");
    assert_eq!(m.media_type, OCI_MANIFEST);
    assert_eq!(
        m.digest,
        crate::runtime::image::digest_of(MANIFEST.as_bytes())
    );
    assert_eq!(&m.bytes[..], MANIFEST.as_bytes());
    // Fetching the same manifest by its digest checks the digest.
    let again = c.manifest_by_digest(&r, &m.digest, None).await;
    // The fake only answers by tag, so by digest it is unknown: the registry's message shows.
    let e = again.expect_err("not served by digest").to_string();
    assert!(e.ends_with(": manifest unknown: manifest unknown"), "{e}");
    let b = c.blob(&r, &blob_digest(), 0, None).await.expect("blob");
    assert!(!b.resumed);
    assert_eq!(b.length, Some(BLOB.len() as u64));
    assert_eq!(collect(b).await.expect("body"), BLOB);
}

#[tokio::test]
async fn manifest_digest_is_checked() {
    let served = MANIFEST.to_string();
    let addr = serve(Arc::new(move |_| {
        respond(200, &[("content-type", OCI_MANIFEST)], served.clone())
    }))
    .await;
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let asked = format!("sha256:{}", "1".repeat(64));
    let r = reference(addr, &format!("app@{asked}"));
    let actual = crate::runtime::image::digest_of(MANIFEST.as_bytes());
    for e in [
        c.manifest(&r, None).await.expect_err("mismatch"),
        c.manifest_by_digest(&reference(addr, "app:1"), &asked, None)
            .await
            .expect_err("mismatch"),
    ] {
        let e = e.to_string();
        assert!(e.contains(&asked) && e.contains(&actual), "{e}");
        assert!(e.contains("digest mismatch"), "{e}");
    }
    // The right digest passes.
    let ok = c
        .manifest(&reference(addr, &format!("app@{actual}")), None)
        .await
        .expect("matching digest");
    assert_eq!(ok.digest, actual);
}

#[tokio::test]
async fn media_types_and_schema1() {
    let addr = serve(Arc::new(|seen: Seen| match seen.path.as_str() {
        "/v2/s1/manifests/1" => respond(
            200,
            &[("content-type", "application/vnd.docker.distribution.manifest.v1+prettyjws")],
            r#"{"schemaVersion":1,"name":"s1"}"#,
        ),
        "/v2/s1b/manifests/1" => respond(
            200,
            &[("content-type", "application/json")],
            r#"{"schemaVersion":1,"name":"s1"}"#,
        ),
        // No Content-Type a client can use: the body's mediaType says.
        "/v2/list/manifests/1" => respond(
            200,
            &[("content-type", "application/octet-stream")],
            r#"{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}"#,
        ),
        _ => respond(404, &[], "nothing here"),
    }))
    .await;
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    for repo in ["s1", "s1b"] {
        let e = c
            .manifest(&reference(addr, &format!("{repo}:1")), None)
            .await
            .expect_err("schema 1")
            .to_string();
        assert!(e.contains("schema 1") && e.contains("not supported"), "{e}");
    }
    let m = c
        .manifest(&reference(addr, "list:1"), None)
        .await
        .expect("list");
    assert_eq!(m.media_type, DOCKER_MANIFEST_LIST);
    let e = c
        .manifest(&reference(addr, "none:1"), None)
        .await
        .expect_err("404")
        .to_string();
    assert!(
        e.ends_with("manifest unknown: unexpected status 404 Not Found: nothing here"),
        "{e}"
    );
}

#[tokio::test]
async fn basic_auth_with_agent_and_task_credentials() {
    let want = creds("user", "pass").basic_header();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    let addr = serve(registry(move |seen| {
        count.fetch_add(1, Ordering::SeqCst);
        let ok = seen
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some(&want);
        (!ok).then(|| {
            json_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                Some(r#"Basic realm="Registry Realm""#),
            )
        })
    }))
    .await;
    let r = reference(addr, "app:1");
    // No credentials at all: the registry's message, prefixed with what was asked.
    let anon = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let e = anon.manifest(&r, None).await.expect_err("401").to_string();
    assert_eq!(
        e,
        format!("pull {addr}/app:1: GET http://{addr}/v2/app/manifests/1: unauthorized: authentication required")
    );
    // Agent-wide credentials from a Docker config.
    let agent = client(&[addr], auth_file(addr, "user", "pass"), Duration::ZERO);
    agent.manifest(&r, None).await.expect("agent credentials");
    let b = agent.blob(&r, &blob_digest(), 0, None).await.expect("blob");
    assert_eq!(collect(b).await.expect("body"), BLOB);
    // A task's credentials win over the agent's: wrong ones fail although the agent's are right,
    // after one anonymous try and one with them (a generous deadline: a retry loop fails here).
    let before = requests.load(Ordering::SeqCst);
    let wrong = creds("user", "wrong-secret");
    let e = tokio::time::timeout(Duration::from_secs(30), agent.manifest(&r, Some(&wrong)))
        .await
        .expect("the client gives up after one answered challenge")
        .expect_err("task credentials win")
        .to_string();
    assert_eq!(requests.load(Ordering::SeqCst) - before, 2);
    assert!(e.ends_with("unauthorized: authentication required"), "{e}");
    assert!(!e.contains("wrong-secret"), "{e}");
    // ...and right ones pass although the agent's are wrong.
    let wrong_agent = client(&[addr], auth_file(addr, "user", "bad"), Duration::ZERO);
    wrong_agent
        .manifest(&r, Some(&creds("user", "pass")))
        .await
        .expect("task credentials");
    wrong_agent
        .manifest(&r, None)
        .await
        .expect_err("agent's are wrong");
}

#[tokio::test]
async fn bearer_token_with_scope_and_cache() {
    let token_requests = Arc::new(AtomicUsize::new(0));
    let counter = token_requests.clone();
    let addr_cell: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
    let cell = addr_cell.clone();
    let basic = creds("user", "pass").basic_header();
    let inner = registry(move |seen| {
        let ok = seen
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            == Some("Bearer tok-app");
        let addr = cell.lock().expect("lock").expect("addr set");
        (!ok).then(|| {
            json_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                Some(&format!(
                    r#"Bearer realm="http://{addr}/token",service="fake registry",scope="repository:app:pull""#
                )),
            )
        })
    });
    let addr = serve(Arc::new(move |seen: Seen| {
        if seen.path == "/token" {
            counter.fetch_add(1, Ordering::SeqCst);
            assert_eq!(
                seen.query,
                "service=fake%20registry&scope=repository%3Aapp%3Apull"
            );
            let auth = seen
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if auth != Some(basic.as_str()) {
                return respond(
                    401,
                    &[("content-type", "application/json")],
                    r#"{"details":"incorrect username or password"}"#,
                );
            }
            return respond(200, &[], r#"{"token":"tok-app","expires_in":300}"#);
        }
        inner(seen)
    }))
    .await;
    *addr_cell.lock().expect("lock") = Some(addr);
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let r = reference(addr, "app:1");
    let right = creds("user", "pass");
    c.manifest(&r, Some(&right)).await.expect("manifest");
    let b = c
        .blob(&r, &blob_digest(), 0, Some(&right))
        .await
        .expect("blob");
    assert_eq!(collect(b).await.expect("body"), BLOB);
    assert_eq!(
        token_requests.load(Ordering::SeqCst),
        1,
        "the token is cached"
    );
    // Other credentials do not get the cached token: they ask for their own, and are refused.
    let e = c
        .manifest(&r, Some(&creds("user", "nope")))
        .await
        .expect_err("wrong")
        .to_string();
    assert_eq!(
        e,
        format!("pull {addr}/app:1: GET token http://{addr}/token: unauthorized: incorrect username or password")
    );
    let e = c
        .manifest(&r, None)
        .await
        .expect_err("anonymous")
        .to_string();
    assert!(
        e.ends_with("unauthorized: incorrect username or password"),
        "{e}"
    );
    assert_eq!(token_requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn range_resume_and_registries_that_ignore_it() {
    let addr = serve(registry(|_| None)).await;
    let ignoring = serve(Arc::new(|_| respond(200, &[], BLOB))).await;
    let c = client(&[addr, ignoring], DockerConfig::default(), Duration::ZERO);
    let b = c
        .blob(&reference(addr, "app:1"), &blob_digest(), 5, None)
        .await
        .expect("resumed");
    assert!(b.resumed);
    assert_eq!(b.length, Some((BLOB.len() - 5) as u64));
    assert_eq!(collect(b).await.expect("body"), &BLOB[5..]);
    let b = c
        .blob(&reference(ignoring, "app:1"), &blob_digest(), 5, None)
        .await
        .expect("from 0");
    assert!(!b.resumed);
    assert_eq!(collect(b).await.expect("body"), BLOB);
}

#[tokio::test]
async fn redirect_to_another_host_drops_authorization() {
    let saw_auth: Arc<Mutex<Vec<bool>>> = Arc::new(Mutex::new(Vec::new()));
    let saw = saw_auth.clone();
    let storage = serve(Arc::new(move |seen: Seen| {
        saw.lock()
            .expect("lock")
            .push(seen.headers.contains_key("authorization"));
        assert_eq!(seen.query, "sig=presigned");
        respond(200, &[], BLOB)
    }))
    .await;
    let want = creds("user", "pass").basic_header();
    let addr = serve(Arc::new(move |seen: Seen| {
        if seen
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            != Some(&want)
        {
            return json_error(
                401,
                "UNAUTHORIZED",
                "authentication required",
                Some("Basic"),
            );
        }
        // A same-host hop first (keeps Authorization), then storage on another host.
        if seen.path.starts_with("/v2/app/blobs/") {
            return respond(307, &[("location", "/hop")], "");
        }
        respond(
            302,
            &[("location", &format!("http://{storage}/b?sig=presigned"))],
            "",
        )
    }))
    .await;
    let c = client(&[addr, storage], DockerConfig::default(), Duration::ZERO);
    let b = c
        .blob(
            &reference(addr, "app:1"),
            &blob_digest(),
            0,
            Some(&creds("user", "pass")),
        )
        .await
        .expect("redirected blob");
    assert_eq!(collect(b).await.expect("body"), BLOB);
    assert_eq!(*saw_auth.lock().expect("lock"), vec![false]);
    // Plain HTTP storage that is not listed as insecure is refused; the signature is not shown.
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let e = c
        .blob(
            &reference(addr, "app:1"),
            &blob_digest(),
            0,
            Some(&creds("user", "pass")),
        )
        .await
        .expect_err("http storage")
        .to_string();
    assert!(
        e.contains("redirect to plain HTTP") && !e.contains("presigned"),
        "{e}"
    );
}

#[tokio::test]
async fn redirect_loops_stop() {
    let addr = serve(Arc::new(|_| respond(307, &[("location", "/again")], ""))).await;
    let c = client(&[addr], DockerConfig::default(), Duration::ZERO);
    let e = c
        .blob(&reference(addr, "app:1"), &blob_digest(), 0, None)
        .await
        .expect_err("loop")
        .to_string();
    assert!(e.contains("more than 5 redirects"), "{e}");
}

#[tokio::test]
async fn inactivity_timeout_on_headers_and_on_chunks() {
    // Headers and one chunk, then nothing (the sender is kept, so the body never ends).
    let held: Arc<Mutex<Vec<FrameSender>>> = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    let addr = serve(Arc::new(move |seen: Seen| {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let _ = tx.try_send(Ok(Frame::data(Bytes::from_static(b"first"))));
        keep.lock().expect("lock").push(tx);
        if seen.path.contains("/manifests/") {
            // Headers promise more than ever comes.
            return Response::builder()
                .header("content-type", OCI_MANIFEST)
                .body(BodyExt::boxed(StreamBody::new(
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                )))
                .expect("response");
        }
        Response::builder()
            .body(BodyExt::boxed(StreamBody::new(
                tokio_stream::wrappers::ReceiverStream::new(rx),
            )))
            .expect("response")
    }))
    .await;
    // A server that accepts but never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let silent_addr = silent.local_addr().expect("addr");
    let accepted = tokio::spawn(async move {
        let mut conns = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            conns.push(s);
        }
    });
    let c = client(
        &[addr, silent_addr],
        DockerConfig::default(),
        Duration::from_millis(300),
    );
    let b = c
        .blob(&reference(addr, "app:1"), &blob_digest(), 0, None)
        .await
        .expect("headers come");
    let mut s = b.stream;
    assert_eq!(
        &s.next().await.expect("chunk").expect("first")[..],
        b"first"
    );
    let e = s
        .next()
        .await
        .expect("an error")
        .expect_err("stalls")
        .to_string();
    assert!(e.ends_with("no progress for 0.3 s"), "{e}");
    let e = c
        .manifest(&reference(addr, "app:1"), None)
        .await
        .expect_err("stalled manifest")
        .to_string();
    assert!(e.ends_with("no progress for 0.3 s"), "{e}");
    let e = c
        .manifest(&reference(silent_addr, "app:1"), None)
        .await
        .expect_err("no answer")
        .to_string();
    assert_eq!(
        e,
        format!("pull {silent_addr}/app:1: GET http://{silent_addr}/v2/app/manifests/1: no progress for 0.3 s")
    );
    // Over https the TLS handshake is what stalls: the connect is bounded too.
    let tls = client(&[], DockerConfig::default(), Duration::from_millis(300));
    let e = tls
        .manifest(&reference(silent_addr, "app:1"), None)
        .await
        .expect_err("no handshake")
        .to_string();
    assert_eq!(
        e,
        format!("pull {silent_addr}/app:1: GET https://{silent_addr}/v2/app/manifests/1: no progress for 0.3 s")
    );
    accepted.abort();
}

#[test]
fn plain_http_only_for_listed_registries() {
    let insecure = vec!["127.0.0.1:5000".to_string(), "Reg.Local".to_string()];
    assert_eq!(scheme_for("127.0.0.1:5000", &insecure), "http");
    assert_eq!(scheme_for("reg.local", &insecure), "http");
    assert_eq!(scheme_for("127.0.0.1:5001", &insecure), "https");
    assert_eq!(scheme_for("127.0.0.1", &insecure), "https");
    assert_eq!(scheme_for("reg.local:443", &insecure), "https");
    let hub = Reference::parse("busybox").expect("ref");
    assert_eq!(api_base(&hub, &insecure), "https://registry-1.docker.io");
    let local = Reference::parse("127.0.0.1:5000/app").expect("ref");
    assert_eq!(api_base(&local, &insecure), "http://127.0.0.1:5000");
    assert_eq!(api_base(&local, &[]), "https://127.0.0.1:5000");
}

#[tokio::test]
async fn unlisted_registry_is_reached_over_https_only() {
    // A plain-HTTP registry that is not listed: the client speaks TLS to it and fails.
    let addr = serve(registry(|_| None)).await;
    let c = client(&[], DockerConfig::default(), Duration::ZERO);
    let e = c
        .manifest(&reference(addr, "app:1"), None)
        .await
        .expect_err("https to a plain server")
        .to_string();
    assert!(
        e.starts_with(&format!(
            "pull {addr}/app:1: GET https://{addr}/v2/app/manifests/1: "
        )),
        "{e}"
    );
}

#[tokio::test]
async fn connection_refused_names_the_url() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let c = client(&[closed], DockerConfig::default(), Duration::ZERO);
    let e = c
        .manifest(&reference(closed, "app:1"), None)
        .await
        .expect_err("refused")
        .to_string();
    assert!(
        e.starts_with(&format!(
            "pull {closed}/app:1: GET http://{closed}/v2/app/manifests/1: "
        )),
        "{e}"
    );
    assert!(e.contains("Connection refused"), "{e}");
}

#[test]
fn registry_errors_render_like_docker() {
    let (code, m) = render_error(
        StatusCode::NOT_FOUND,
        br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"2"}}]}"#,
    );
    assert_eq!(
        (code.as_deref(), m.as_str()),
        (
            Some("MANIFEST_UNKNOWN"),
            "manifest unknown: manifest unknown"
        )
    );
    let (_, m) = render_error(
        StatusCode::FORBIDDEN,
        br#"{"errors":[{"code":"DENIED","message":"requested access to the resource is denied"},{"code":"NAME_UNKNOWN"}]}"#,
    );
    assert_eq!(
        m,
        "denied: requested access to the resource is denied; name unknown"
    );
    let (_, m) = render_error(StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
    assert_eq!(m, "unexpected status 502 Bad Gateway");
}

#[test]
fn errors_never_carry_credentials() {
    let c = RegistryClient::new(RegistryConfig {
        auth: DockerConfig::from_json(
            &serde_json::json!({"auths": {"h:1": {"username": "u", "password": "hunter2"}}}),
        )
        .expect("config"),
        ..Default::default()
    })
    .expect("client");
    assert!(!format!("{c:?}").contains("hunter2"));
}

/// A CA (PEM) and a rustls server configuration for 127.0.0.1 signed by it.
fn test_pki() -> (String, rustls::ServerConfig) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let mut params = CertificateParams::default();
    params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().expect("ip"))];
    let cert = params.signed_by(&key, &issuer).expect("server cert");
    let key_der = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).expect("key der");
    let server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key_der)
    .expect("server config");
    (ca.pem(), server)
}

/// Serves `handler` over TLS on 127.0.0.1:0.
async fn serve_tls(handler: Handler, config: rustls::ServerConfig) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (handler, acceptor) = (handler.clone(), acceptor.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Seen {
                        path: req.uri().path().to_string(),
                        query: req.uri().query().unwrap_or("").to_string(),
                        headers: req.headers().clone(),
                    };
                    let resp = handler(seen);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn https_with_the_configured_ca() {
    let (ca_pem, server) = test_pki();
    let addr = serve_tls(registry(|_| None), server).await;
    let dir = std::env::temp_dir().join(format!("berth-registry-ca-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, &ca_pem).expect("ca");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").expect("garbage");
    let r = reference(addr, "app:1");
    let trusting = RegistryClient::new(RegistryConfig {
        ca_file: Some(ca_file.clone()),
        ..Default::default()
    })
    .expect("client");
    let m = trusting
        .manifest(&r, None)
        .await
        .expect("manifest over https");
    assert_eq!(&m.bytes[..], MANIFEST.as_bytes());
    let b = trusting
        .blob(&r, &blob_digest(), 0, None)
        .await
        .expect("blob");
    assert_eq!(collect(b).await.expect("body"), BLOB);
    // Without the CA the server is not trusted.
    let e = client(&[], DockerConfig::default(), Duration::ZERO)
        .manifest(&r, None)
        .await
        .expect_err("untrusted")
        .to_string();
    assert!(
        e.contains(&format!("GET https://{addr}/v2/app/manifests/1: ")),
        "{e}"
    );
    assert!(
        e.contains("invalid peer certificate") && e.contains("--registry-ca-file"),
        "{e}"
    );
    let e = RegistryClient::new(RegistryConfig {
        ca_file: Some(garbage.clone()),
        ..Default::default()
    })
    .expect_err("no certificate")
    .to_string();
    assert!(
        e.contains("garbage.pem") && e.contains("no PEM certificate"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
