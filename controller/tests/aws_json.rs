//! The AWS JSON 1.1 adapter beside gRPC (issue 13), in process: a controller over an in-memory
//! store on 127.0.0.1:0 requiring signed calls, the adapter layered on the tonic server as the
//! binary layers it. The same calls go in as `berth` sends them (gRPC, the CLI's own SigV4 over
//! the frame) and as botocore sends them (HTTP/1.1 `POST /`, SigV4 over the JSON body), and must
//! come out the same: the gRPC answer turned into ECS's JSON by the adapter's `encode_response`,
//! a refusal by its exception name and message, and the audit line each call leaves. What only
//! HTTP has (status, headers, SerializationException, malformed requests) is asserted on its
//! own; so is one HTTP/2 cleartext connection carrying both protocols. Every list filter and
//! page of ListTasks, ListContainerInstances, ListServices and the Logs describes and filter is
//! walked through either adapter, each page's token handed to the other. No root, no containerd.

use berth_controller::api::aws_json::{self, AwsJsonLayer};
use berth_controller::api::ecs::EcsApi;
use berth_controller::api::logs::LogsApi;
use berth_controller::api::secrets_manager::SecretsManagerApi;
use berth_controller::api::ssm::SsmApi;
use berth_controller::cli::run::Raw;
use berth_controller::cli::signing::Signing;
use berth_controller::cli::table::{self, Operation};
use berth_controller::fleet::{Attached, Fleet};
use berth_controller::logs::{store::RedbLogStore, LogService};
use berth_controller::security::access_keys::{AccessKeys, KeyWithSecret, Permissions};
use berth_controller::security::activations::Activations;
use berth_controller::security::audit::AuditLog;
use berth_controller::security::auth::{Authenticator, Mode};
use berth_controller::security::seal::Sealer;
use berth_controller::security::secrets::Secrets;
use berth_controller::service::{Controller, SessionInfo};
use berth_controller::store::{memory::MemoryStore, Store};
use berth_proto::sigv4::{self, Credentials};
use berth_proto::v1::{
    ecs_server::EcsServer, logs_server::LogsServer, secrets_manager_server::SecretsManagerServer,
    ssm_server::SsmServer, CreateClusterRequest, RegisterContainerInstanceRequest, Resource,
    ResourceStats, TaskStats, TaskStatsReport,
};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::time::timeout;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;
use tower::Layer as _;

const WAIT: Duration = Duration::from_secs(10);

/// AWS's target prefixes, their SigV4 signing names (botocore's models) and Berth's services.
const AWS_TARGETS: &[(&str, &str, &str)] = &[
    ("AmazonEC2ContainerServiceV20141113", "ecs", "berth.v1.Ecs"),
    ("Logs_20140328", "logs", "berth.v1.Logs"),
    ("AmazonSSM", "ssm", "berth.v1.Ssm"),
    (
        "secretsmanager",
        "secretsmanager",
        "berth.v1.SecretsManager",
    ),
];

/// `{via}` in a request becomes one of these; answers are compared with both made `via_X`.
const GRPC_TAG: &str = "via_grpc";
const HTTP_TAG: &str = "via_json";

/// A region botocore might sign for: Berth takes any.
const HTTP_REGION: &str = "us-east-1";

/// The ECS guide's complete task definition (the web-app of "Method 2: AWS CLI").
const WEB_APP: &str = r#"{
  "family": "web-app-{via}",
  "networkMode": "awsvpc",
  "requiresCompatibilities": ["FARGATE"],
  "cpu": "512",
  "memory": "1024",
  "taskRoleArn": "arn:aws:iam::123456789012:role/ecsTaskRole",
  "executionRoleArn": "arn:aws:iam::123456789012:role/ecsTaskExecutionRole",
  "containerDefinitions": [
    {
      "name": "nginx",
      "image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/my-app:latest",
      "cpu": 256,
      "memory": 512,
      "essential": true,
      "portMappings": [{"containerPort": 80, "protocol": "tcp"}],
      "environment": [
        {"name": "ENVIRONMENT", "value": "production"},
        {"name": "LOG_LEVEL", "value": "info"}
      ],
      "secrets": [
        {
          "name": "DB_PASSWORD",
          "valueFrom": "arn:aws:secretsmanager:us-east-1:123456789012:secret:db-password"
        }
      ],
      "logConfiguration": {
        "logDriver": "awslogs",
        "options": {
          "awslogs-group": "/ecs/web-app",
          "awslogs-region": "us-east-1",
          "awslogs-stream-prefix": "nginx"
        }
      },
      "healthCheck": {
        "command": ["CMD-SHELL", "curl -f http://localhost/ || exit 1"],
        "interval": 30,
        "timeout": 5,
        "retries": 3,
        "startPeriod": 60
      }
    }
  ]
}"#;

/// Which adapter a call goes through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Grpc,
    Http,
}

/// Which adapter the page of an index goes through.
type Pick = fn(usize) -> Via;

/// An answer as the aws CLI sees it: ECS's JSON, or an exception and its message.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Ok(Value),
    Err { kind: String, message: String },
}

impl Answer {
    fn ok(self) -> Value {
        match self {
            Answer::Ok(v) => v,
            Answer::Err { kind, message } => panic!("expected an answer, got {kind}: {message}"),
        }
    }

    fn err(self) -> (String, String) {
        match self {
            Answer::Err { kind, message } => (kind, message),
            Answer::Ok(v) => panic!("expected an error, got {v}"),
        }
    }

    /// The same with both adapters' tags made one.
    fn untagged(&self) -> Answer {
        let untag = |s: &str| s.replace(GRPC_TAG, "via_X").replace(HTTP_TAG, "via_X");
        match self {
            Answer::Ok(v) => {
                Answer::Ok(serde_json::from_str(&untag(&v.to_string())).expect("JSON"))
            }
            Answer::Err { kind, message } => Answer::Err {
                kind: kind.clone(),
                message: untag(message),
            },
        }
    }

    /// The same with what differs between two resources made alike (times, task ids); a time
    /// must be a number, as AWS JSON 1.1 writes it.
    fn masked(&self) -> Answer {
        fn mask(key: Option<&str>, v: &mut Value, ids: &[regex::Regex; 3]) {
            match v {
                Value::Object(m) => m.iter_mut().for_each(|(k, v)| mask(Some(k), v, ids)),
                Value::Array(a) => a.iter_mut().for_each(|v| mask(key, v, ids)),
                Value::String(s) => {
                    *s = ids[0].replace_all(s, "<id>").into_owned();
                    *s = ids[1].replace_all(s, "${1}-<random>").into_owned();
                    *s = ids[2].replace_all(s, "ecs-svc/<id>").into_owned();
                }
                _ => {}
            }
            let time = |k: &str| {
                ["At", "Time", "Date", "Change", "Updated"]
                    .iter()
                    .any(|end| k.ends_with(end))
            };
            if key.is_some_and(time) {
                assert!(v.is_number(), "{key:?} is a time: a number, not {v}");
                *v = json!("<time>");
            }
        }
        // Task and container ids; the random suffix of a secret's ARN; a service's deployment
        // ids.
        let ids = [
            regex::Regex::new("[0-9a-f]{32}").expect("a regex"),
            regex::Regex::new("(:secret:.*)-[A-Za-z0-9]{6}$").expect("a regex"),
            regex::Regex::new("ecs-svc/[0-9]+").expect("a regex"),
        ];
        match self.untagged() {
            Answer::Ok(mut v) => {
                mask(None, &mut v, &ids);
                Answer::Ok(v)
            }
            // The one message that differs on purpose: each adapter tells its own kind of
            // client where keys come from (`berth`'s variables, the aws CLI's files).
            Answer::Err { kind, .. } if kind == "MissingAuthenticationTokenException" => {
                Answer::Err {
                    kind,
                    message: "<where keys come from>".into(),
                }
            }
            e => e,
        }
    }
}

/// `{via}` in the strings of `request` made `tag`.
fn tagged(request: &Value, tag: &str) -> Value {
    serde_json::from_str(&request.to_string().replace("{via}", tag)).expect("JSON")
}

/// The `X-Amz-Target` of a row and the name it is signed for, from AWS's own prefixes.
fn target_of(op: &Operation) -> (String, &'static str) {
    let (prefix, signing, _) = AWS_TARGETS
        .iter()
        .find(|(_, _, grpc)| *grpc == op.service.grpc)
        .unwrap_or_else(|| panic!("{} is not an AWS JSON 1.1 service", op.service.grpc));
    (format!("{prefix}.{}", op.api), signing)
}

fn row(api: &str) -> &'static Operation {
    table::by_api(api).unwrap_or_else(|| panic!("no operation {api}"))
}

/// An HTTP/1.1 response.
#[derive(Debug)]
struct HttpResponse {
    status: u16,
    /// Lower-cased names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl HttpResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(raw: &[u8]) -> HttpResponse {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8(raw[..split].to_vec()).expect("an ASCII head");
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let rest = &raw[split + 4..];
        let mut r = HttpResponse {
            status,
            headers,
            body: Vec::new(),
        };
        r.body = if r.header("transfer-encoding") == Some("chunked") {
            let mut body = Vec::new();
            let mut at = rest;
            loop {
                let eol = at
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .expect("a chunk size line");
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&at[..eol])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .expect("a hex chunk size");
                if size == 0 {
                    break body;
                }
                body.extend_from_slice(&at[eol + 2..eol + 2 + size]);
                at = &at[eol + 2 + size + 2..];
            }
        } else {
            let len = r
                .header("content-length")
                .map(|l| l.parse::<usize>().expect("a length"))
                .unwrap_or(rest.len());
            rest[..len].to_vec()
        };
        r
    }

    /// The answer as AWS JSON 1.1 gives it, its head checked: the content type and a request
    /// id always; an error is 400 (500 for ServerException) with `x-amzn-ErrorType` naming it.
    fn answer(&self) -> Answer {
        assert_eq!(
            self.header("content-type"),
            Some("application/x-amz-json-1.1"),
            "{self:?}"
        );
        let id = self
            .header("x-amzn-requestid")
            .unwrap_or_else(|| panic!("no x-amzn-RequestId: {self:?}"));
        uuid::Uuid::parse_str(id).unwrap_or_else(|e| panic!("request id {id:?}: {e}"));
        let v: Value = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)));
        if self.status == 200 {
            assert_eq!(self.header("x-amzn-errortype"), None, "{v}");
            return Answer::Ok(v);
        }
        let kind = v["__type"]
            .as_str()
            .unwrap_or_else(|| panic!("HTTP {} without __type: {v}", self.status))
            .to_string();
        let expected = if kind == "ServerException" { 500 } else { 400 };
        assert_eq!(self.status, expected, "{kind}: {v}");
        assert_eq!(self.header("x-amzn-errortype"), Some(kind.as_str()), "{v}");
        Answer::Err {
            kind,
            message: v["message"]
                .as_str()
                .unwrap_or_else(|| panic!("no message: {v}"))
                .to_string(),
        }
    }
}

/// One HTTP/1.1 request on `s` and its response: read to its length, the connection left open
/// (or to the end, when the server closes it).
async fn exchange_on(
    s: &mut tokio::net::TcpStream,
    method: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> HttpResponse {
    let mut head = format!("{method} / HTTP/1.1\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    // Whether `raw` holds a whole response of a known length.
    let whole = |raw: &[u8]| {
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))?
            .trim()
            .parse()
            .ok()?;
        (raw.len() >= end + 4 + len).then_some(())
    };
    let mut raw = Vec::new();
    timeout(WAIT, async {
        s.write_all(head.as_bytes()).await?;
        s.write_all(body).await?;
        let mut chunk = [0u8; 16 * 1024];
        while whole(&raw).is_none() {
            let n = s.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&chunk[..n]);
        }
        Ok::<_, std::io::Error>(())
    })
    .await
    .expect("an HTTP answer in time")
    .expect("an HTTP answer");
    HttpResponse::parse(&raw)
}

/// An in-process controller with both adapters on one port.
struct Rig {
    addr: SocketAddr,
    host: String,
    full: Credentials,
    reader: Credentials,
    controller: Arc<Controller>,
    grpc: tonic::client::Grpc<Channel>,
    audit: PathBuf,
    dir: PathBuf,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Rig {
    fn drop(&mut self) {
        self.server.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn credentials(k: KeyWithSecret) -> Credentials {
    Credentials {
        access_key_id: k.record.access_key_id,
        secret_access_key: k.secret,
    }
}

/// Serves a controller as `berth-controller` does (auth required, AWS JSON 1.1 on the gRPC
/// port), over a fresh in-memory store.
async fn rig() -> Rig {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let sealer = Sealer::new(&[7; 32]);
    let keys = Arc::new(AccessKeys::new(store.clone(), sealer.clone()));
    let secrets = Arc::new(Secrets::new(store.clone(), sealer));
    let activations = Arc::new(Activations::new(store.clone()));
    let full = credentials(keys.create("admin", Permissions::Full).expect("a full key"));
    let reader = credentials(
        keys.create("reader", Permissions::ReadOnly)
            .expect("a read-only key"),
    );
    let dir = std::env::temp_dir().join(format!("berth-aws-json-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a scratch dir");
    let audit = dir.join("audit.log");
    let auth = Arc::new(Authenticator::new(
        keys,
        Mode::Required,
        Some(Arc::new(AuditLog::open(&audit).expect("the audit log"))),
    ));
    let controller =
        Arc::new(Controller::load(store, Arc::new(Fleet::default())).expect("a controller"));
    let logs = Arc::new(LogService::new(
        Arc::new(RedbLogStore::in_memory().expect("a log store")),
        berth_controller::logs::system_clock(),
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let signed = auth.layer();
    let router = tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(AwsJsonLayer::new(auth.clone()))
        .add_service(signed.layer(EcsServer::new(EcsApi(controller.clone()))))
        .add_service(signed.layer(LogsServer::new(LogsApi(logs))))
        .add_service(signed.layer(SsmServer::new(SsmApi {
            secrets: secrets.clone(),
            activations,
            ca_fingerprint: "sha256:00".into(),
        })))
        .add_service(signed.layer(SecretsManagerServer::new(SecretsManagerApi { secrets })));
    let server = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            )
            .await;
    });
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .expect("a URL")
        .connect_timeout(WAIT)
        .timeout(WAIT)
        .connect()
        .await
        .expect("connected over gRPC");
    Rig {
        addr,
        host: addr.to_string(),
        full,
        reader,
        controller,
        grpc: tonic::client::Grpc::new(channel),
        audit,
        dir,
        server,
    }
}

impl Rig {
    /// `api` over gRPC as `berth` calls it: the request encoded by its row, signed by the CLI's
    /// signer; the answer as the adapter turns a gRPC answer into ECS's JSON.
    async fn grpc(&self, api: &str, request: &Value, creds: Option<&Credentials>) -> Answer {
        let op = row(api);
        let bytes = (op.decode)(request.clone()).unwrap_or_else(|e| panic!("{api} {request}: {e}"));
        let signing = Signing {
            credentials: creds.cloned(),
            region: berth_proto::arn::REGION.to_string(),
        };
        let mut req = tonic::Request::new(bytes.clone());
        if let Some((authorization, date)) =
            signing.sign(&self.host, &op.path(), &bytes, SystemTime::now())
        {
            let md = req.metadata_mut();
            md.insert(sigv4::AUTHORIZATION, authorization.parse().expect("ASCII"));
            md.insert(sigv4::X_AMZ_DATE, date.parse().expect("ASCII"));
        }
        let mut grpc = self.grpc.clone();
        timeout(WAIT, grpc.ready())
            .await
            .expect("the channel ready in time")
            .expect("the channel ready");
        let path = PathAndQuery::try_from(op.path()).expect("a gRPC path");
        match timeout(WAIT, grpc.unary(req, path, Raw))
            .await
            .expect("a gRPC answer in time")
        {
            Ok(r) => Answer::Ok(
                aws_json::encode_response(op, &r.into_inner()).expect("the answer encodes"),
            ),
            Err(s) => Answer::Err {
                kind: s
                    .metadata()
                    .get(berth_proto::exceptions::METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("(no exception, gRPC {:?})", s.code())),
                message: s.message().to_string(),
            },
        }
    }

    /// One HTTP/1.1 exchange on a fresh connection, closed after it.
    async fn exchange(
        &self,
        method: &str,
        headers: &[(String, String)],
        body: &[u8],
    ) -> HttpResponse {
        let mut s = self.connect().await;
        let mut headers = headers.to_vec();
        headers.push(("Connection".into(), "close".into()));
        exchange_on(&mut s, method, &headers, body).await
    }

    async fn connect(&self) -> tokio::net::TcpStream {
        timeout(WAIT, tokio::net::TcpStream::connect(self.addr))
            .await
            .expect("connected in time")
            .expect("connected")
    }

    /// The head of `POST /` as botocore sends it: host, x-amz-date, x-amz-target and
    /// content-type signed (SigV4 over the body) with `signing`'s key for its service;
    /// user-agent (and content-length, added on the way) not.
    fn botocore_headers(
        &self,
        target: &str,
        body: &[u8],
        signing: Option<(&Credentials, &str)>,
    ) -> Vec<(String, String)> {
        let date = sigv4::amz_date(SystemTime::now());
        let mut headers: Vec<(String, String)> = vec![
            ("Host".into(), self.host.clone()),
            ("X-Amz-Target".into(), target.into()),
            ("Content-Type".into(), "application/x-amz-json-1.1".into()),
            ("X-Amz-Date".into(), date.clone()),
        ];
        if let Some((creds, service)) = signing {
            let input = sigv4::CanonicalInput {
                method: "POST",
                path: "/",
                query: "",
                headers: headers.clone(),
                payload_sha256: sigv4::hex_sha256(body),
            };
            let authorization = sigv4::authorization(creds, &input, &date, HTTP_REGION, service);
            headers.push(("Authorization".into(), authorization));
        }
        headers.push(("User-Agent".into(), "aws-cli/1.36.0 berth-test".into()));
        headers
    }

    /// `POST /` as botocore sends it, on a fresh connection.
    async fn post(
        &self,
        target: &str,
        body: &[u8],
        signing: Option<(&Credentials, &str)>,
    ) -> HttpResponse {
        let headers = self.botocore_headers(target, body, signing);
        self.exchange("POST", &headers, body).await
    }

    /// `api` over AWS JSON 1.1, as the aws CLI calls it.
    async fn http(&self, api: &str, request: &Value, creds: Option<&Credentials>) -> Answer {
        let (target, service) = target_of(row(api));
        self.post(
            &target,
            request.to_string().as_bytes(),
            creds.map(|c| (c, service)),
        )
        .await
        .answer()
    }

    async fn call_as(
        &self,
        via: Via,
        creds: Option<&Credentials>,
        api: &str,
        request: &Value,
    ) -> Answer {
        match via {
            Via::Grpc => self.grpc(api, request, creds).await,
            Via::Http => self.http(api, request, creds).await,
        }
    }

    /// `api` through one adapter, signed with the full key.
    async fn call(&self, via: Via, api: &str, request: Value) -> Answer {
        self.call_as(via, Some(&self.full), api, &request).await
    }

    fn audit_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.audit)
            .expect("the audit log")
            .lines()
            .map(|l| serde_json::from_str(l).expect("an audit line is JSON"))
            .collect()
    }

    /// The audit lines a call left, without their time; the caller's address is loopback.
    async fn audited(
        &self,
        via: Via,
        creds: Option<&Credentials>,
        api: &str,
        req: &Value,
    ) -> (Answer, Vec<Value>) {
        let before = self.audit_lines().len();
        let answer = self.call_as(via, creds, api, req).await;
        let lines = self.audit_since(before, &format!("{api} via {via:?}"));
        (answer, lines)
    }

    /// The audit lines after the first `before`, without their time; the caller's address
    /// (checked) is loopback.
    fn audit_since(&self, before: usize, what: &str) -> Vec<Value> {
        self.audit_lines()[before..]
            .iter()
            .cloned()
            .map(|mut l| {
                let o = l.as_object_mut().expect("an audit object");
                o.remove("time");
                let from = o.remove("sourceAddress");
                assert!(
                    from.as_ref()
                        .and_then(Value::as_str)
                        .is_some_and(|a| a.starts_with("127.0.0.1:")),
                    "{what}: source address {from:?}"
                );
                l
            })
            .collect()
    }

    /// Every page of `api` from `request`, each through the adapter `pick` chooses for it (by
    /// its index), a page's `nextToken` going into the next request.
    async fn pages(&self, api: &str, request: &Value, pick: Pick) -> Vec<Value> {
        let mut pages = Vec::new();
        let mut token: Option<Value> = None;
        loop {
            let mut req = request.clone();
            if let Some(t) = &token {
                req["nextToken"] = t.clone();
            }
            let page = self.call(pick(pages.len()), api, req).await.ok();
            token = page.get("nextToken").cloned();
            pages.push(page);
            if token.is_none() {
                return pages;
            }
            assert!(pages.len() < 50, "{api} {request}: pages without end");
        }
    }

    /// `api`'s pages from `request` (`size` its page size, `items` the member listed): the very
    /// same through either adapter; the same items when each page's token goes to the other
    /// adapter; together the one list `request` without `size` gives. More than one page.
    /// Returns the items.
    async fn pages_agree(&self, api: &str, request: Value, size: &str, items: &str) -> Vec<Value> {
        let flat = |pages: &[Value]| -> Vec<Value> {
            pages
                .iter()
                .flat_map(|p| p[items].as_array().cloned().unwrap_or_default())
                .collect()
        };
        let grpc = self.pages(api, &request, |_| Via::Grpc).await;
        let http = self.pages(api, &request, |_| Via::Http).await;
        assert_eq!(http, grpc, "{api} {request}: pages, HTTP vs gRPC");
        assert!(grpc.len() > 1, "{api} {request}: one page only: {grpc:?}");
        let alternate: [(Pick, &str); 2] = [
            (
                |i| if i % 2 == 0 { Via::Grpc } else { Via::Http },
                "gRPC's tokens through HTTP",
            ),
            (
                |i| if i % 2 == 0 { Via::Http } else { Via::Grpc },
                "HTTP's tokens through gRPC",
            ),
        ];
        for (pick, what) in alternate {
            let mixed = self.pages(api, &request, pick).await;
            assert_eq!(flat(&mixed), flat(&grpc), "{api} {request}: {what}");
        }
        let mut whole = request.clone();
        whole
            .as_object_mut()
            .expect("a request object")
            .remove(size);
        let all = self.same(api, whole).await.ok();
        assert_eq!(
            all.get("nextToken"),
            None,
            "{api} {request}: the whole list in one page"
        );
        assert_eq!(
            Some(flat(&grpc)),
            all[items].as_array().cloned(),
            "{api} {request}: pages vs the whole list"
        );
        flat(&grpc)
    }

    /// `api` through both adapters as `creds` (`{via}` in `request` naming each one's own
    /// resources): the answers must be the same but for the tags, times and task ids, and so
    /// must the audit lines. Returns the HTTP answer.
    async fn both_as(&self, creds: Option<&Credentials>, api: &str, request: &Value) -> Answer {
        let (g, g_audit) = self
            .audited(Via::Grpc, creds, api, &tagged(request, GRPC_TAG))
            .await;
        let (h, h_audit) = self
            .audited(Via::Http, creds, api, &tagged(request, HTTP_TAG))
            .await;
        assert_eq!(
            h.masked(),
            g.masked(),
            "{api} {request}: HTTP (left) vs gRPC (right)"
        );
        assert_eq!(
            h_audit, g_audit,
            "{api} {request}: audit lines, HTTP vs gRPC"
        );
        h
    }

    async fn both(&self, api: &str, request: Value) -> Answer {
        self.both_as(Some(&self.full), api, &request).await
    }

    /// The very same request through both adapters, on the same resources: the answers must be
    /// identical. Returns the HTTP answer.
    async fn same(&self, api: &str, request: Value) -> Answer {
        let (g, g_audit) = self
            .audited(Via::Grpc, Some(&self.full), api, &request)
            .await;
        let (h, h_audit) = self
            .audited(Via::Http, Some(&self.full), api, &request)
            .await;
        assert_eq!(h, g, "{api} {request}: HTTP (left) vs gRPC (right)");
        assert_eq!(
            h_audit, g_audit,
            "{api} {request}: audit lines, HTTP vs gRPC"
        );
        h
    }

    /// A container instance in `default` whose agent is in step: a placement candidate; its id.
    async fn instance(&self) -> (Attached, String) {
        self.controller
            .create_cluster(CreateClusterRequest::default())
            .await
            .expect("the default cluster");
        let resource = |name: &str| Resource {
            name: name.into(),
            r#type: "INTEGER".into(),
            integer_value: 1 << 16,
            ..Default::default()
        };
        let ci = self
            .controller
            .register_container_instance(RegisterContainerInstanceRequest {
                cluster: "default".into(),
                total_resources: vec![resource("CPU"), resource("MEMORY")],
                ..Default::default()
            })
            .await
            .expect("an instance");
        let id = berth_proto::arn::short_id("container-instance", &ci.container_instance_arn)
            .expect("an instance id")
            .to_string();
        let session = self.controller.fleet().attach(&id);
        self.controller.fleet().desired_acked(&session, 1);
        (session, id)
    }
}

/// Clusters, task definitions, tasks and log groups answer alike through both adapters, errors
/// by the same exception and message, and the audit log cannot tell them apart.
#[tokio::test]
async fn the_same_calls_answer_alike_through_both_adapters() {
    let r = rig().await;
    let created = r
        .both(
            "CreateCluster",
            json!({
                "clusterName": "c-{via}",
                "tags": [{"key": "team", "value": "web"}, {"key": "env", "value": "prod"}],
                "settings": [{"name": "containerInsights", "value": "enabled"}]
            }),
        )
        .await
        .ok();
    let c = &created["cluster"];
    assert_eq!(c["clusterName"], "c-via_json");
    assert_eq!(c["tags"][1], json!({"key": "env", "value": "prod"}), "{c}");
    assert_eq!(c["settings"][0]["value"], "enabled", "{c}");

    let described = r
        .both(
            "DescribeClusters",
            json!({"clusters": ["c-{via}", "gone-{via}"], "include": ["TAGS", "SETTINGS", "STATISTICS"]}),
        )
        .await
        .ok();
    assert_eq!(
        described["clusters"][0]["tags"][0]["key"], "team",
        "{described}"
    );
    assert_eq!(described["failures"][0]["reason"], "MISSING", "{described}");

    let web_app: Value = serde_json::from_str(WEB_APP).expect("the guide's JSON");
    let td = r.both("RegisterTaskDefinition", web_app).await.ok();
    let td = &td["taskDefinition"];
    assert_eq!(
        (td["family"].clone(), td["revision"].clone()),
        (json!("web-app-via_json"), json!(1))
    );
    assert!(td["registeredAt"].is_number(), "{td}");
    assert_eq!(
        td["containerDefinitions"][0]["healthCheck"]["startPeriod"], 60,
        "{td}"
    );
    r.both(
        "DescribeTaskDefinition",
        json!({"taskDefinition": "web-app-{via}:1", "include": ["TAGS"]}),
    )
    .await
    .ok();

    let missing = r
        .both(
            "DescribeTasks",
            json!({"cluster": "c-{via}", "tasks": ["0123456789abcdef0123456789abcdef"]}),
        )
        .await
        .ok();
    assert_eq!(missing["failures"][0]["reason"], "MISSING", "{missing}");
    assert_eq!(missing["tasks"], json!([]), "{missing}");

    for (api, request) in [
        ("ListTasks", json!({"cluster": "nowhere-{via}"})),
        (
            "DescribeServices",
            json!({"cluster": "nowhere-{via}", "services": ["web"]}),
        ),
    ] {
        let (kind, message) = r.both(api, request).await.err();
        assert_eq!(kind, "ClusterNotFoundException", "{api}: {message}");
    }

    // The second service behind the adapter: 64-bit integers as numbers.
    r.both(
        "CreateLogGroup",
        json!({"logGroupName": "/ecs/web-app-{via}"}),
    )
    .await
    .ok();
    let groups = r
        .both(
            "DescribeLogGroups",
            json!({"logGroupNamePrefix": "/ecs/web-app-{via}"}),
        )
        .await
        .ok();
    assert!(groups["logGroups"][0]["creationTime"].is_i64(), "{groups}");
    r.call(
        Via::Grpc,
        "CreateLogStream",
        json!({"logGroupName": "/ecs/web-app-via_json", "logStreamName": "nginx/1"}),
    )
    .await
    .ok();
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({"timestamp": now_ms - 5_000 + i * 1_000, "message": format!("GET /{i} 200")}))
        .collect();
    r.call(
        Via::Http,
        "PutLogEvents",
        json!({"logGroupName": "/ecs/web-app-via_json", "logStreamName": "nginx/1", "logEvents": events}),
    )
    .await
    .ok();
    let got = r
        .same(
            "GetLogEvents",
            json!({"logGroupName": "/ecs/web-app-via_json", "logStreamName": "nginx/1",
                   "startTime": now_ms - 3_500, "startFromHead": true, "limit": 2}),
        )
        .await
        .ok();
    assert_eq!(got["events"][0]["message"], "GET /2 200", "{got}");
    assert_eq!(
        got["events"][0]["timestamp"],
        json!(now_ms - 3_000),
        "{got}"
    );
    assert!(got["events"][0]["ingestionTime"].is_i64(), "{got}");
    let token = got["nextForwardToken"].clone();
    r.same(
        "GetLogEvents",
        json!({"logGroupName": "/ecs/web-app-via_json", "logStreamName": "nginx/1", "nextToken": token}),
    )
    .await
    .ok();
    let filtered = r
        .same(
            "FilterLogEvents",
            json!({"logGroupName": "/ecs/web-app-via_json", "filterPattern": "\"/3\"", "endTime": now_ms}),
        )
        .await
        .ok();
    assert_eq!(
        filtered["events"].as_array().map(Vec::len),
        Some(1),
        "{filtered}"
    );

    // A message that is not ASCII (gRPC percent-encodes it) reads the same.
    let (kind, message) = r
        .both("CreateCluster", json!({"clusterName": "caf\u{e9} {via}"}))
        .await
        .err();
    assert_eq!(kind, "InvalidParameterException", "{message}");
    assert!(message.contains('\u{e9}'), "{message}");

    // Refusals of the caller, the same whichever way it came: read-only, unsigned, a wrong
    // secret, an unknown key.
    let (kind, _) = r
        .both_as(
            Some(&r.reader),
            "CreateCluster",
            &json!({"clusterName": "ro-{via}"}),
        )
        .await
        .err();
    assert_eq!(kind, "AccessDeniedException");
    let (kind, message) = r
        .both_as(None, "CreateCluster", &json!({"clusterName": "anon-{via}"}))
        .await
        .err();
    assert_eq!(kind, "MissingAuthenticationTokenException");
    assert_eq!(message, aws_json::MISSING_TOKEN_AWS_MESSAGE);
    let wrong = Credentials {
        access_key_id: r.full.access_key_id.clone(),
        secret_access_key: "not-the-secret".into(),
    };
    let (kind, _) = r
        .both_as(Some(&wrong), "ListClusters", &json!({}))
        .await
        .err();
    assert_eq!(kind, "InvalidSignatureException");
    let unknown = Credentials {
        access_key_id: "AKIAUNKNOWNUNKNOWN00".into(),
        secret_access_key: "x".into(),
    };
    let (kind, _) = r
        .both_as(
            Some(&unknown),
            "DeleteCluster",
            &json!({"cluster": "c-{via}"}),
        )
        .await
        .err();
    assert_eq!(kind, "UnrecognizedClientException");
    // None of them changed anything.
    let clusters = r.same("ListClusters", json!({})).await.ok();
    assert_eq!(
        clusters["clusterArns"].as_array().map(Vec::len),
        Some(2),
        "{clusters}"
    );
}

/// ListTaskDefinitions' pages and filters: the same through both adapters, and a nextToken from
/// one is taken by the other.
#[tokio::test]
async fn pages_and_filters_agree_and_tokens_cross_adapters() {
    let r = rig().await;
    let td = |family: &str| json!({"family": family, "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64}]});
    for i in 0..7 {
        let via = if i % 2 == 0 { Via::Http } else { Via::Grpc };
        r.call(via, "RegisterTaskDefinition", td("pages"))
            .await
            .ok();
    }
    r.call(Via::Grpc, "RegisterTaskDefinition", td("pages-more"))
        .await
        .ok();
    r.call(Via::Http, "RegisterTaskDefinition", td("other"))
        .await
        .ok();
    r.call(
        Via::Grpc,
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "pages:2"}),
    )
    .await
    .ok();
    r.call(
        Via::Http,
        "DeregisterTaskDefinition",
        json!({"taskDefinition": "pages:5"}),
    )
    .await
    .ok();

    // Every page, the adapter of each chosen by `pick`.
    let walk = |pick: fn(usize) -> Via, request: Value| {
        let r = &r;
        async move {
            let mut pages = Vec::new();
            let mut token: Option<Value> = None;
            loop {
                let mut req = request.clone();
                if let Some(t) = &token {
                    req["nextToken"] = t.clone();
                }
                let page = r
                    .call(pick(pages.len()), "ListTaskDefinitions", req)
                    .await
                    .ok();
                token = page.get("nextToken").cloned();
                pages.push(page);
                if token.is_none() || pages.len() > 10 {
                    return pages;
                }
            }
        }
    };
    let arns = |pages: &[Value]| -> Vec<String> {
        pages
            .iter()
            .flat_map(|p| {
                p["taskDefinitionArns"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|a| {
                a.as_str()
                    .unwrap_or_default()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect()
    };
    for request in [
        json!({"familyPrefix": "pages", "maxResults": 2}),
        json!({"status": "ALL", "sort": "DESC", "maxResults": 2}),
        json!({"familyPrefix": "pages", "status": "INACTIVE", "maxResults": 1}),
    ] {
        let grpc = walk(|_| Via::Grpc, request.clone()).await;
        let http = walk(|_| Via::Http, request.clone()).await;
        assert_eq!(http, grpc, "{request}: pages, HTTP vs gRPC");
        let mixed = walk(
            |i| if i % 2 == 0 { Via::Grpc } else { Via::Http },
            request.clone(),
        )
        .await;
        assert_eq!(
            arns(&mixed),
            arns(&grpc),
            "{request}: gRPC's tokens through HTTP"
        );
        let mixed = walk(
            |i| if i % 2 == 0 { Via::Http } else { Via::Grpc },
            request.clone(),
        )
        .await;
        assert_eq!(
            arns(&mixed),
            arns(&grpc),
            "{request}: HTTP's tokens through gRPC"
        );
    }
    let active = walk(
        |_| Via::Http,
        json!({"familyPrefix": "pages", "maxResults": 2}),
    )
    .await;
    assert_eq!(
        arns(&active),
        ["pages:1", "pages:3", "pages:4", "pages:6", "pages:7"],
        "{active:?}"
    );
    assert_eq!(active.len(), 3);
    let all = walk(
        |_| Via::Grpc,
        json!({"status": "ALL", "sort": "DESC", "maxResults": 2}),
    )
    .await;
    assert_eq!(arns(&all).len(), 9, "{all:?}");
    // By family, then revision: `pages-more` sorts after `pages`.
    assert_eq!(arns(&all)[..2], ["pages-more:1", "pages:7"], "{all:?}");

    // Whole lists and refusals, the very same request through both.
    for request in [
        json!({}),
        json!({"familyPrefix": "pages"}),
        json!({"familyPrefix": "pag"}),
        json!({"familyPrefix": "pages", "status": "INACTIVE"}),
        json!({"status": "ALL", "sort": "DESC"}),
        json!({"familyPrefix": "pages", "maxResults": 3}),
    ] {
        r.same("ListTaskDefinitions", request).await.ok();
    }
    for request in [
        json!({"status": "RETIRED"}),
        json!({"nextToken": "not-a-token"}),
        json!({"maxResults": 0}),
    ] {
        r.same("ListTaskDefinitions", request).await.err();
    }
    let families = r
        .same(
            "ListTaskDefinitionFamilies",
            json!({"familyPrefix": "pages", "status": "ALL"}),
        )
        .await
        .ok();
    assert_eq!(
        families["families"],
        json!(["pages", "pages-more"]),
        "{families}"
    );
}

/// RunTask's clientToken is one through both adapters: a retry through either answers the first
/// call's tasks, another request with it is the same ConflictException; tasks, their lists and
/// their filters read the same.
#[tokio::test]
async fn run_task_tokens_and_task_lists_are_one_through_both_adapters() {
    let r = rig().await;
    let (_session, instance_id) = r.instance().await;
    r.call(
        Via::Grpc,
        "RegisterTaskDefinition",
        json!({"family": "web", "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64}]}),
    )
    .await
    .ok();
    let run = json!({
        "taskDefinition": "web",
        "count": 2,
        "startedBy": "deploy-42",
        "clientToken": "tok-1",
        "overrides": {"containerOverrides": [{"name": "a", "environment": [{"name": "X", "value": "1"}]}]},
        "tags": [{"key": "team", "value": "web"}]
    });
    let first = r.call(Via::Http, "RunTask", run.clone()).await.ok();
    assert_eq!(first["tasks"].as_array().map(Vec::len), Some(2), "{first}");
    assert_eq!(first["failures"], json!([]), "{first}");
    assert!(first["tasks"][0]["createdAt"].is_number(), "{first}");
    assert_eq!(
        r.call(Via::Http, "RunTask", run.clone()).await.ok(),
        first,
        "a retry over HTTP"
    );
    assert_eq!(
        r.call(Via::Grpc, "RunTask", run.clone()).await.ok(),
        first,
        "a retry over gRPC"
    );
    // JSON's null is "not given": the same request, so the same tasks.
    let mut with_null = run.clone();
    with_null["group"] = Value::Null;
    with_null["overrides"]["cpu"] = Value::Null;
    with_null["placementConstraints"] = Value::Null;
    assert_eq!(
        r.call(Via::Http, "RunTask", with_null).await.ok(),
        first,
        "a retry with nulls"
    );
    let mut other = run.clone();
    other["count"] = json!(1);
    let (kind, _) = r.same("RunTask", other).await.err();
    assert_eq!(kind, "ConflictException");
    // A token of each adapter's own: alike but for the tasks' ids and times.
    let mut own = run.clone();
    own["clientToken"] = json!("tok-{via}");
    r.both("RunTask", own).await.ok();

    let arns: Vec<Value> = first["tasks"]
        .as_array()
        .expect("tasks")
        .iter()
        .map(|t| t["taskArn"].clone())
        .collect();
    let tasks = r
        .same("DescribeTasks", json!({"tasks": arns, "include": ["TAGS"]}))
        .await
        .ok();
    assert_eq!(tasks["tasks"][0]["tags"][0]["key"], "team", "{tasks}");
    for request in [
        json!({}),
        json!({"startedBy": "deploy-42"}),
        json!({"family": "web", "maxResults": 2}),
        json!({"desiredStatus": "STOPPED"}),
        json!({"containerInstance": "nope"}),
    ] {
        r.same("ListTasks", request).await;
    }
    // 64-bit counters (a Berth extension's) as JSON numbers, beyond 2^53 too.
    let big = u64::MAX - 1;
    r.controller
        .apply_task_stats(
            &SessionInfo {
                instance_id,
                epoch: "e1".into(),
                own_tasks_only: false,
            },
            TaskStatsReport {
                tasks: vec![TaskStats {
                    task_arn: arns[1].as_str().expect("an ARN").into(),
                    usage: Some(ResourceStats {
                        cpu_total_usage_ns: big,
                        memory_usage_bytes: 1 << 20,
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
            },
        )
        .await;
    let stats = r
        .same("DescribeTaskStats", json!({"tasks": [arns[1]]}))
        .await
        .ok();
    let usage = &stats["taskStats"][0]["usage"];
    assert_eq!(usage["cpuTotalUsageNs"].as_u64(), Some(big), "{stats}");
    assert_eq!(usage["memoryUsageBytes"], json!(1 << 20), "{stats}");
    let stopped = r
        .call(
            Via::Http,
            "StopTask",
            json!({"task": arns[0], "reason": "done"}),
        )
        .await
        .ok();
    assert_eq!(stopped["task"]["desiredStatus"], "STOPPED", "{stopped}");
    r.same("DescribeTasks", json!({"tasks": arns})).await.ok();
    let listed = r
        .same("ListTasks", json!({"desiredStatus": "STOPPED"}))
        .await
        .ok();
    assert_eq!(listed["taskArns"], json!([arns[0]]), "{listed}");
}

/// What only HTTP can get wrong: members the model lacks, bodies that are not JSON, signatures
/// over something else, targets Berth does not serve, requests that are not `POST /`.
#[tokio::test]
async fn malformed_aws_json_requests_are_refused_by_name() {
    let r = rig().await;
    let ecs = |api: &str| format!("AmazonEC2ContainerServiceV20141113.{api}");
    let signed = Some((&r.full, "ecs"));
    let refused = |resp: HttpResponse| resp.answer().err();
    // A signed call the adapter refuses after verifying it is audited as the gRPC side audits
    // its refusals: the key, the service, the action, the exception; a read is not.
    let audit_of = |before: usize, action: &str| {
        let lines = r.audit_since(before, action);
        let expected = json!({
            "accessKeyId": r.full.access_key_id,
            "service": "ecs",
            "action": action,
            "outcome": "SerializationException",
        });
        assert_eq!(lines, [expected], "{action}: the audit lines");
    };

    let before = r.audit_lines().len();
    let (kind, message) = refused(
        r.post(
            &ecs("CreateCluster"),
            br#"{"clusterName":"x","tagz":[]}"#,
            signed,
        )
        .await,
    );
    assert_eq!(kind, "SerializationException");
    assert!(message.contains("\"tagz\""), "{message}");
    audit_of(before, "CreateCluster");
    let before = r.audit_lines().len();
    let (kind, message) = refused(
        r.post(
            &ecs("RegisterTaskDefinition"),
            br#"{"family":"x","containerDefinitions":[{"name":"a","image":"i","memmory":64}]}"#,
            signed,
        )
        .await,
    );
    assert_eq!(kind, "SerializationException");
    assert!(message.contains("\"memmory\""), "{message}");
    audit_of(before, "RegisterTaskDefinition");
    let before = r.audit_lines().len();
    let (kind, _) = refused(
        r.post(&ecs("CreateCluster"), b"{\"clusterName\":", signed)
            .await,
    );
    assert_eq!(kind, "SerializationException");
    audit_of(before, "CreateCluster");
    let before = r.audit_lines().len();
    for (api, body) in [
        ("ListClusters", &br#"{"maxResult":1}"#[..]),
        ("DescribeClusters", &b"{\"clusters\":["[..]),
    ] {
        let (kind, _) = refused(r.post(&ecs(api), body, signed).await);
        assert_eq!(kind, "SerializationException", "{api}");
    }
    assert_eq!(
        r.audit_since(before, "reads"),
        Vec::<Value>::new(),
        "a refused read is not audited"
    );

    // Unsigned; signed over another body; signed for another service.
    let body = br#"{"clusterName":"x"}"#;
    let (kind, _) = refused(r.post(&ecs("CreateCluster"), body, None).await);
    assert_eq!(kind, "MissingAuthenticationTokenException");
    let date = sigv4::amz_date(SystemTime::now());
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), r.host.clone()),
        ("x-amz-target".into(), ecs("CreateCluster")),
        ("content-type".into(), "application/x-amz-json-1.1".into()),
        ("x-amz-date".into(), date.clone()),
    ];
    let input = sigv4::CanonicalInput {
        method: "POST",
        path: "/",
        query: "",
        headers: headers.clone(),
        payload_sha256: sigv4::hex_sha256(br#"{"clusterName":"y"}"#),
    };
    headers.push((
        "authorization".into(),
        sigv4::authorization(&r.full, &input, &date, HTTP_REGION, "ecs"),
    ));
    let (kind, _) = refused(r.exchange("POST", &headers, body).await);
    assert_eq!(kind, "InvalidSignatureException");
    // Signed without X-Amz-Target: a captured call must not be replayable as another operation.
    let before = r.audit_lines().len();
    let mut headers: Vec<(String, String)> = vec![
        ("host".into(), r.host.clone()),
        ("x-amz-date".into(), date.clone()),
    ];
    let input = sigv4::CanonicalInput {
        method: "POST",
        path: "/",
        query: "",
        headers: headers.clone(),
        payload_sha256: sigv4::hex_sha256(body),
    };
    headers.push((
        "authorization".into(),
        sigv4::authorization(&r.full, &input, &date, HTTP_REGION, "ecs"),
    ));
    headers.push(("x-amz-target".into(), ecs("CreateCluster")));
    let (kind, message) = refused(r.exchange("POST", &headers, body).await);
    assert_eq!(kind, "IncompleteSignatureException");
    assert!(message.contains("x-amz-target"), "{message}");
    let audited = r.audit_lines()[before..].to_vec();
    assert_eq!(audited.len(), 1, "{audited:?}");
    assert_eq!(audited[0]["outcome"], "IncompleteSignatureException");
    // A web page (DNS rebinding to a loopback controller) is refused, signed or not.
    let mut from_page = r.botocore_headers(&ecs("CreateCluster"), body, Some((&r.full, "ecs")));
    from_page.push(("Origin".into(), "http://rebound.example".into()));
    let (kind, _) = refused(r.exchange("POST", &from_page, body).await);
    assert_eq!(kind, "AccessDeniedException");
    // gRPC is HTTP/2 only: a gRPC frame over HTTP/1.1 (what a page's fetch could send) is
    // refused before any service sees it.
    let grpc_over_h1 = vec![
        ("Host".to_string(), r.host.clone()),
        ("Content-Type".to_string(), "application/grpc".to_string()),
    ];
    let (kind, message) = refused(
        r.exchange("POST", &grpc_over_h1, &sigv4::grpc_frame(b""))
            .await,
    );
    assert_eq!(kind, "UnknownOperationException");
    assert!(message.contains("HTTP/2 only"), "{message}");
    let (kind, message) = refused(
        r.post(&ecs("CreateCluster"), body, Some((&r.full, "logs")))
            .await,
    );
    assert_eq!(kind, "InvalidSignatureException");
    assert!(message.contains("'ecs'"), "{message}");

    // Targets Berth does not serve, or none.
    for target in [
        ecs("RunTasks"),
        "DynamoDB_20120810.GetItem".into(),
        "Logs_20140328.StartLiveTail".into(),
        "AmazonEC2ContainerServiceV20141113".into(),
    ] {
        let (kind, message) = refused(r.post(&target, b"{}", signed).await);
        assert_eq!(kind, "UnknownOperationException", "{target}: {message}");
    }
    let (kind, _) = refused(
        r.exchange("POST", &[("host".into(), r.host.clone())], b"{}")
            .await,
    );
    assert_eq!(kind, "UnknownOperationException");
    let get = r
        .exchange("GET", &[("host".into(), r.host.clone())], b"")
        .await;
    let (kind, _) = refused(get);
    assert_eq!(kind, "UnknownOperationException");

    // Nothing was created, and the port still serves both.
    let clusters = r.same("ListClusters", json!({})).await.ok();
    assert_eq!(clusters["clusterArns"], json!([]), "{clusters}");
}

/// botocore keeps its connections: calls follow each other on one, a refusal (of the body, of
/// the method) leaving it usable.
#[tokio::test]
async fn one_connection_carries_call_after_call() {
    let r = rig().await;
    let mut s = r.connect().await;
    let create = "AmazonEC2ContainerServiceV20141113.CreateCluster";
    let list = "AmazonEC2ContainerServiceV20141113.ListClusters";
    let signed = Some((&r.full, "ecs"));
    for (method, target, body, expected) in [
        (
            "POST",
            create,
            r#"{"clusterName":"a","bogus":1}"#,
            Err("SerializationException"),
        ),
        ("GET", list, "", Err("UnknownOperationException")),
        ("POST", create, r#"{"clusterName":"a"}"#, Ok(())),
        ("POST", create, r#"{"clusterName":"b"}"#, Ok(())),
        ("POST", list, "", Ok(())),
    ] {
        let headers = r.botocore_headers(target, body.as_bytes(), signed);
        let answer = exchange_on(&mut s, method, &headers, body.as_bytes())
            .await
            .answer();
        match (expected, answer) {
            (Ok(()), Answer::Ok(_)) => {}
            (Err(kind), Answer::Err { kind: got, .. }) if got == kind => {}
            (_, answer) => {
                panic!("{method} {target} {body}: expected {expected:?}, got {answer:?}")
            }
        }
    }
    let headers = r.botocore_headers(list, b"", signed);
    let clusters = exchange_on(&mut s, "POST", &headers, b"")
        .await
        .answer()
        .ok();
    assert_eq!(
        clusters["clusterArns"].as_array().map(Vec::len),
        Some(2),
        "{clusters}"
    );
}

/// Every unary ECS, Logs, SSM and Secrets Manager operation of the CLI's table is reachable by its
/// AWS target, signed for its service, and only by it.
#[test]
fn every_unary_operation_has_its_target() {
    let mut served = 0;
    for op in table::all_operations() {
        let Some((prefix, signing, _)) = AWS_TARGETS
            .iter()
            .find(|(_, _, grpc)| *grpc == op.service.grpc)
        else {
            continue;
        };
        let target = format!("{prefix}.{}", op.api);
        if op.api == "StartLiveTail" {
            assert!(aws_json::operation(&target).is_err(), "{target}: a stream");
            continue;
        }
        let (name, found) = aws_json::operation(&target)
            .unwrap_or_else(|e| panic!("{target}: {} {}", e.kind, e.message));
        assert_eq!((name, found.path()), (*signing, op.path()), "{target}");
        served += 1;
    }
    // An operation under another service's prefix (IAM's and EC2's under any) is unknown.
    for (prefix, _, grpc) in AWS_TARGETS {
        for op in table::all_operations().filter(|o| o.service.grpc != *grpc) {
            let target = format!("{prefix}.{}", op.api);
            let e = aws_json::operation(&target).err();
            assert_eq!(
                e.map(|e| e.kind).as_deref(),
                Some("UnknownOperationException"),
                "{target}"
            );
        }
    }
    assert!(served > 40, "only {served} operations");
}

/// The other services behind the adapter: a timestamp in a request (SSM's ExpirationDate, epoch
/// seconds over HTTP, RFC 3339 in `berth`'s JSON) lands as the same instant; parameters and
/// secrets (a SecretBinary blob is base64 both ways) answer alike.
#[tokio::test]
async fn ssm_and_secrets_manager_answer_alike_through_both_adapters() {
    let r = rig().await;
    // A day ahead, on a half second: the fraction must survive.
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 86_400;
    let rfc3339 = prost_types::Timestamp {
        seconds: secs as i64,
        nanos: 500_000_000,
    }
    .to_string();
    for (via, expiration) in [
        (Via::Grpc, json!(rfc3339)),
        (Via::Http, json!(secs as f64 + 0.5)),
    ] {
        r.call(
            via,
            "CreateActivation",
            json!({"IamRole": "ecsAnywhereRole", "Description": format!("{via:?}"), "ExpirationDate": expiration}),
        )
        .await
        .ok();
    }
    let listed = r.same("DescribeActivations", json!({})).await.ok();
    let list = listed["ActivationList"].as_array().expect("activations");
    assert_eq!(list.len(), 2, "{listed}");
    for a in list {
        assert_eq!(a["ExpirationDate"], json!(secs as f64 + 0.5), "{a}");
    }

    r.both(
        "PutParameter",
        json!({"Name": "/app/{via}/db", "Value": "s3cr3t", "Type": "SecureString"}),
    )
    .await
    .ok();
    let got = r
        .both(
            "GetParameter",
            json!({"Name": "/app/{via}/db", "WithDecryption": true}),
        )
        .await
        .ok();
    assert_eq!(got["Parameter"]["Value"], "s3cr3t", "{got}");
    assert!(got["Parameter"]["LastModifiedDate"].is_number(), "{got}");
    let (kind, _) = r
        .both("GetParameter", json!({"Name": "/app/{via}/none"}))
        .await
        .err();
    assert_eq!(kind, "ParameterNotFound");

    let created = r
        .both(
            "CreateSecret",
            json!({"Name": "blob-{via}", "SecretBinary": "AAEC/w==", "ClientRequestToken": "tok-{via}-0000000000000000000000000000"}),
        )
        .await
        .ok();
    assert_eq!(created["Name"], "blob-via_json", "{created}");
    let put = r
        .both(
            "PutSecretValue",
            json!({"SecretId": "blob-{via}", "SecretBinary": "/w==", "ClientRequestToken": "tok-{via}-1111111111111111111111111111"}),
        )
        .await
        .ok();
    assert_eq!(put["VersionStages"], json!(["AWSCURRENT"]), "{put}");
    let (kind, _) = r
        .both("DeleteSecret", json!({"SecretId": "none-{via}"}))
        .await
        .err();
    assert_eq!(kind, "ResourceNotFoundException");
}

/// How many items a list answer holds under `member`.
fn count(answer: &Value, member: &str) -> usize {
    answer[member]
        .as_array()
        .unwrap_or_else(|| panic!("no {member} in {answer}"))
        .len()
}

/// Every ListTasks filter (launchType, serviceName, desiredStatus, family, containerInstance,
/// startedBy) and its refusals answer the same through both adapters; pages too, their tokens
/// taken by either.
#[tokio::test]
async fn every_task_list_filter_and_page_agrees_through_both_adapters() {
    let r = rig().await;
    let (_a, a) = r.instance().await;
    let (_b, b) = r.instance().await;
    for family in ["web", "batch"] {
        r.call(
            Via::Grpc,
            "RegisterTaskDefinition",
            json!({"family": family, "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64}]}),
        )
        .await
        .ok();
    }
    let ci = r
        .call(
            Via::Http,
            "RunTask",
            json!({"taskDefinition": "web", "count": 3, "startedBy": "ci"}),
        )
        .await
        .ok();
    assert_eq!(count(&ci, "tasks"), 3, "{ci}");
    let external = r
        .call(
            Via::Grpc,
            "RunTask",
            json!({"taskDefinition": "batch", "count": 2, "launchType": "EXTERNAL"}),
        )
        .await
        .ok();
    assert_eq!(count(&external, "tasks"), 2, "{external}");
    r.call(
        Via::Http,
        "CreateService",
        json!({"serviceName": "svc", "taskDefinition": "web", "desiredCount": 2}),
    )
    .await
    .ok();
    r.controller
        .reconcile_services()
        .await
        .expect("a scheduler pass");
    r.call(
        Via::Http,
        "StopTask",
        json!({"task": ci["tasks"][0]["taskArn"], "reason": "done"}),
    )
    .await
    .ok();

    let listed = |request: Value| {
        let r = &r;
        async move { count(&r.same("ListTasks", request).await.ok(), "taskArns") }
    };
    assert_eq!(listed(json!({})).await, 6, "running: 2 ci, 2 batch, 2 svc");
    assert_eq!(listed(json!({"launchType": "EXTERNAL"})).await, 2);
    assert_eq!(listed(json!({"launchType": "EC2"})).await, 4);
    assert_eq!(listed(json!({"launchType": "FARGATE"})).await, 0);
    assert_eq!(listed(json!({"serviceName": "svc"})).await, 2);
    assert_eq!(
        listed(json!({"serviceName": "svc", "desiredStatus": "STOPPED"})).await,
        0
    );
    assert_eq!(listed(json!({"desiredStatus": "STOPPED"})).await, 1);
    assert_eq!(listed(json!({"desiredStatus": "PENDING"})).await, 0);
    assert_eq!(listed(json!({"desiredStatus": "running"})).await, 6);
    assert_eq!(listed(json!({"family": "batch"})).await, 2);
    assert_eq!(listed(json!({"family": "web"})).await, 4);
    assert_eq!(
        listed(json!({"family": "web", "launchType": "EXTERNAL"})).await,
        0
    );
    assert_eq!(listed(json!({"family": "nope"})).await, 0);
    assert_eq!(listed(json!({"startedBy": "ci"})).await, 2);
    assert_eq!(
        listed(json!({"startedBy": "ci", "desiredStatus": "STOPPED"})).await,
        1
    );
    let described = r
        .same(
            "DescribeContainerInstances",
            json!({"containerInstances": [a, b]}),
        )
        .await
        .ok();
    let instance_arn = |i: usize| {
        described["containerInstances"][i]["containerInstanceArn"]
            .as_str()
            .expect("an instance ARN")
            .to_string()
    };
    let on_a = listed(json!({"containerInstance": a})).await;
    let on_b = listed(json!({"containerInstance": instance_arn(1)})).await;
    assert_eq!(on_a + on_b, 6, "{a}: {on_a}, {b}: {on_b}");
    assert_eq!(
        listed(json!({"containerInstance": instance_arn(0), "family": "batch"})).await
            + listed(json!({"containerInstance": b, "family": "batch"})).await,
        2
    );
    assert_eq!(listed(json!({"containerInstance": "nope"})).await, 0);
    // Refused as ListServices refuses it, alike through both.
    let (kind, message) = r
        .same("ListTasks", json!({"launchType": "MOON"}))
        .await
        .err();
    assert_eq!(kind, "InvalidParameterException");
    assert!(message.contains("'MOON'"), "{message}");
    let busiest = if on_a >= on_b { &a } else { &b };
    for (request, kind) in [
        (json!({"serviceName": "nope"}), "ServiceNotFoundException"),
        (
            json!({"desiredStatus": "DONE"}),
            "InvalidParameterException",
        ),
        (
            json!({"startedBy": "ci", "family": "web"}),
            "InvalidParameterException",
        ),
        (
            json!({"startedBy": "ci", "containerInstance": a}),
            "InvalidParameterException",
        ),
        (
            json!({"family": "web", "serviceName": "svc"}),
            "InvalidParameterException",
        ),
        (
            json!({"nextToken": "not-a-token"}),
            "InvalidParameterException",
        ),
        (json!({"maxResults": 0}), "InvalidParameterException"),
        (json!({"maxResults": 101}), "InvalidParameterException"),
        (json!({"cluster": "nowhere"}), "ClusterNotFoundException"),
    ] {
        match r.same("ListTasks", request.clone()).await {
            Answer::Err { kind: got, message } => assert_eq!(got, kind, "{request}: {message}"),
            Answer::Ok(v) => panic!("{request}: expected {kind}, got {v}"),
        }
    }

    // Pages, whichever adapter issued the token.
    let all = r
        .pages_agree(
            "ListTasks",
            json!({"maxResults": 2}),
            "maxResults",
            "taskArns",
        )
        .await;
    assert_eq!(all.len(), 6);
    for request in [
        json!({"family": "web", "maxResults": 1}),
        json!({"launchType": "EC2", "maxResults": 3}),
        json!({"serviceName": "svc", "maxResults": 1}),
        json!({"startedBy": "ci", "desiredStatus": "RUNNING", "maxResults": 1}),
        json!({"desiredStatus": "RUNNING", "containerInstance": busiest, "maxResults": 1}),
    ] {
        r.pages_agree("ListTasks", request, "maxResults", "taskArns")
            .await;
    }
}

/// ListContainerInstances' `filter` (the cluster query language) and `status`, and their pages,
/// answer the same through both adapters.
#[tokio::test]
async fn container_instance_filters_and_pages_agree_through_both_adapters() {
    let r = rig().await;
    let (_a, a) = r.instance().await;
    let (_b, b) = r.instance().await;
    let (_c, c) = r.instance().await;
    let (_d, d) = r.instance().await;
    let (_e, e) = r.instance().await;
    let attribute = |id: &str| json!({"name": "stack", "value": "prod", "targetType": "container-instance", "targetId": id});
    r.call(
        Via::Http,
        "PutAttributes",
        json!({"attributes": [attribute(&a), attribute(&b), attribute(&c)]}),
    )
    .await
    .ok();
    r.call(
        Via::Grpc,
        "UpdateContainerInstancesState",
        json!({"containerInstances": [b, d], "status": "DRAINING"}),
    )
    .await
    .ok();
    r.call(
        Via::Http,
        "DeregisterContainerInstance",
        json!({"containerInstance": e}),
    )
    .await
    .ok();

    let listed = |request: Value| {
        let r = &r;
        async move {
            count(
                &r.same("ListContainerInstances", request).await.ok(),
                "containerInstanceArns",
            )
        }
    };
    assert_eq!(listed(json!({})).await, 4, "ACTIVE and DRAINING");
    assert_eq!(listed(json!({"status": "ACTIVE"})).await, 2);
    assert_eq!(listed(json!({"status": "DRAINING"})).await, 2);
    assert_eq!(listed(json!({"status": "INACTIVE"})).await, 1);
    assert_eq!(
        listed(json!({"filter": "attribute:stack == prod"})).await,
        3
    );
    assert_eq!(
        listed(json!({"filter": "attribute:stack == prod", "status": "DRAINING"})).await,
        1
    );
    assert_eq!(
        listed(json!({"filter": "attribute:stack !exists"})).await,
        1
    );
    assert_eq!(
        listed(json!({"filter": "attribute:stack in [prod, dev] and runningTasksCount == 0"}))
            .await,
        3
    );
    assert_eq!(listed(json!({"filter": "agentConnected == true"})).await, 4);
    assert_eq!(
        listed(json!({"filter": "registeredAt < 2000-01-01"})).await,
        0
    );
    assert_eq!(listed(json!({"filter": ""})).await, 4);
    for (request, kind) in [
        (
            json!({"filter": "attribute:stack ~= prod"}),
            "InvalidParameterException",
        ),
        (json!({"status": "GONE"}), "InvalidParameterException"),
        (
            json!({"nextToken": "not-a-token"}),
            "InvalidParameterException",
        ),
        (json!({"maxResults": 0}), "InvalidParameterException"),
        (json!({"cluster": "nowhere"}), "ClusterNotFoundException"),
    ] {
        match r.same("ListContainerInstances", request.clone()).await {
            Answer::Err { kind: got, message } => {
                assert_eq!(got, kind, "{request}: {message}");
                if request.get("filter").is_some() {
                    assert!(message.starts_with("filter:"), "{message}");
                }
            }
            Answer::Ok(v) => panic!("{request}: expected {kind}, got {v}"),
        }
    }

    let all = r
        .pages_agree(
            "ListContainerInstances",
            json!({"maxResults": 1}),
            "maxResults",
            "containerInstanceArns",
        )
        .await;
    assert_eq!(all.len(), 4);
    for request in [
        json!({"filter": "attribute:stack == prod", "maxResults": 2}),
        json!({"status": "DRAINING", "maxResults": 1}),
        json!({"filter": "agentConnected == true", "status": "ACTIVE", "maxResults": 1}),
    ] {
        r.pages_agree(
            "ListContainerInstances",
            request,
            "maxResults",
            "containerInstanceArns",
        )
        .await;
    }
}

/// Services through both adapters: CreateService's clientToken is one (a retry through either
/// answers the same service, another request with it the same refusal); UpdateService,
/// ListServices (filters, pages), DescribeServices (TAGS) and DeleteService answer alike.
#[tokio::test]
async fn services_answer_alike_and_their_tokens_are_one_through_both_adapters() {
    let r = rig().await;
    let (_session, _) = r.instance().await;
    for _ in 0..2 {
        r.call(
            Via::Grpc,
            "RegisterTaskDefinition",
            json!({"family": "web", "containerDefinitions": [{"name": "a", "image": "busybox", "memory": 64}]}),
        )
        .await
        .ok();
    }
    let create = json!({
        "serviceName": "api",
        "taskDefinition": "web:1",
        "desiredCount": 1,
        "clientToken": "svc-tok-1",
        "tags": [{"key": "team", "value": "web"}],
        "placementStrategy": [{"type": "spread", "field": "instanceId"}]
    });
    let first = r
        .call(Via::Http, "CreateService", create.clone())
        .await
        .ok();
    assert_eq!(first["service"]["status"], "ACTIVE", "{first}");
    assert!(first["service"]["createdAt"].is_number(), "{first}");
    assert_eq!(
        r.call(Via::Http, "CreateService", create.clone())
            .await
            .ok(),
        first,
        "a retry over HTTP"
    );
    assert_eq!(
        r.call(Via::Grpc, "CreateService", create.clone())
            .await
            .ok(),
        first,
        "a retry over gRPC"
    );
    let mut other = create.clone();
    other["desiredCount"] = json!(3);
    let (kind, message) = r.same("CreateService", other).await.err();
    assert_eq!(kind, "InvalidParameterException", "{message}");
    let mut untokened = create.clone();
    untokened
        .as_object_mut()
        .expect("an object")
        .remove("clientToken");
    r.same("CreateService", untokened).await.err();

    // Each adapter's own services: alike but for times and deployment ids.
    for request in [
        json!({"serviceName": "svc-{via}", "taskDefinition": "web:1", "desiredCount": 2,
               "clientToken": "tok-{via}", "tags": [{"key": "env", "value": "prod"}]}),
        json!({"serviceName": "ext-{via}", "taskDefinition": "web:1", "desiredCount": 0,
               "launchType": "EXTERNAL"}),
        json!({"serviceName": "dmn-{via}", "taskDefinition": "web:2", "schedulingStrategy": "DAEMON"}),
    ] {
        r.both("CreateService", request).await.ok();
    }
    for (request, kind) in [
        (
            json!({"serviceName": "x-{via}", "taskDefinition": "web"}),
            "InvalidParameterException",
        ),
        (
            json!({"serviceName": "x-{via}", "taskDefinition": "nope", "desiredCount": 1}),
            "ClientException",
        ),
        (
            json!({"cluster": "nowhere-{via}", "serviceName": "x", "taskDefinition": "web", "desiredCount": 1}),
            "ClusterNotFoundException",
        ),
    ] {
        match r.both("CreateService", request.clone()).await {
            Answer::Err { kind: got, message } => assert_eq!(got, kind, "{request}: {message}"),
            Answer::Ok(v) => panic!("{request}: expected {kind}, got {v}"),
        }
    }

    let updated = r
        .both(
            "UpdateService",
            json!({"service": "svc-{via}", "desiredCount": 3}),
        )
        .await
        .ok();
    assert_eq!(updated["service"]["desiredCount"], 3, "{updated}");
    let redeployed = r
        .both(
            "UpdateService",
            json!({"service": "svc-{via}", "taskDefinition": "web:2"}),
        )
        .await
        .ok();
    assert_eq!(
        count(&redeployed["service"], "deployments"),
        2,
        "{redeployed}"
    );
    for request in [
        json!({"service": "none-{via}", "desiredCount": 1}),
        json!({"service": "svc-{via}", "desiredCount": -1}),
        json!({"service": "dmn-{via}", "desiredCount": 2}),
    ] {
        r.both("UpdateService", request).await.err();
    }

    // The lists, the very same requests through both.
    let listed = |request: Value| {
        let r = &r;
        async move { count(&r.same("ListServices", request).await.ok(), "serviceArns") }
    };
    assert_eq!(listed(json!({})).await, 7);
    assert_eq!(listed(json!({"launchType": "EC2"})).await, 5);
    assert_eq!(listed(json!({"launchType": "EXTERNAL"})).await, 2);
    assert_eq!(listed(json!({"launchType": "FARGATE"})).await, 0);
    assert_eq!(listed(json!({"schedulingStrategy": "REPLICA"})).await, 5);
    assert_eq!(listed(json!({"schedulingStrategy": "DAEMON"})).await, 2);
    assert_eq!(
        listed(json!({"schedulingStrategy": "DAEMON", "launchType": "EXTERNAL"})).await,
        0
    );
    for request in [
        json!({"launchType": "MOON"}),
        json!({"schedulingStrategy": "SOMETIMES"}),
        json!({"nextToken": "not-a-token"}),
        json!({"maxResults": 0}),
        json!({"cluster": "nowhere"}),
    ] {
        r.same("ListServices", request).await.err();
    }
    let all = r
        .pages_agree(
            "ListServices",
            json!({"maxResults": 2}),
            "maxResults",
            "serviceArns",
        )
        .await;
    assert_eq!(all.len(), 7);
    for request in [
        json!({"launchType": "EC2", "maxResults": 2}),
        json!({"schedulingStrategy": "DAEMON", "maxResults": 1}),
    ] {
        r.pages_agree("ListServices", request, "maxResults", "serviceArns")
            .await;
    }

    let names = json!([
        "api",
        "svc-via_grpc",
        "svc-via_json",
        "ext-via_json",
        "gone"
    ]);
    let described = r
        .same(
            "DescribeServices",
            json!({"services": names, "include": ["TAGS"]}),
        )
        .await
        .ok();
    assert_eq!(
        described["services"][0]["tags"],
        json!([{"key": "team", "value": "web"}]),
        "{described}"
    );
    assert_eq!(
        described["services"][2]["tags"],
        json!([{"key": "env", "value": "prod"}]),
        "{described}"
    );
    assert_eq!(described["failures"][0]["reason"], "MISSING", "{described}");
    let untagged = r
        .same("DescribeServices", json!({"services": names}))
        .await
        .ok();
    assert_eq!(untagged["services"][0].get("tags"), None, "{untagged}");
    r.both(
        "DescribeServices",
        json!({"services": ["svc-{via}", "dmn-{via}"], "include": ["TAGS"]}),
    )
    .await
    .ok();
    for request in [
        json!({"services": names, "include": ["STATISTICS"]}),
        json!({"services": []}),
    ] {
        r.same("DescribeServices", request).await.err();
    }

    // Delete: refused while scaled up unless forced; then DRAINING, still listed.
    let (kind, _) = r
        .both("DeleteService", json!({"service": "svc-{via}"}))
        .await
        .err();
    assert_eq!(kind, "InvalidParameterException");
    let deleted = r
        .both(
            "DeleteService",
            json!({"service": "svc-{via}", "force": true}),
        )
        .await
        .ok();
    assert_eq!(deleted["service"]["status"], "DRAINING", "{deleted}");
    r.both("DeleteService", json!({"service": "ext-{via}"}))
        .await
        .ok();
    let (kind, _) = r
        .both(
            "DeleteService",
            json!({"service": "svc-{via}", "force": true}),
        )
        .await
        .err();
    assert_eq!(kind, "ServiceNotActiveException");
    let (kind, _) = r
        .both("DeleteService", json!({"service": "none-{via}"}))
        .await
        .err();
    assert_eq!(kind, "ServiceNotFoundException");
    let after = r
        .same("DescribeServices", json!({"services": names}))
        .await
        .ok();
    assert_eq!(after["services"][1]["status"], "DRAINING", "{after}");
    assert_eq!(listed(json!({})).await, 7);
}

/// CloudWatch Logs' pages through both adapters: DescribeLogGroups by prefix, DescribeLogStreams
/// by name or last event time either way, FilterLogEvents across streams; a token from either
/// adapter taken by the other.
#[tokio::test]
async fn log_pages_agree_and_tokens_cross_adapters() {
    let r = rig().await;
    for (i, group) in [
        "/pg/a-0", "/pg/a-1", "/pg/a-2", "/pg/a-3", "/pg/a-4", "/pg/b-0", "/other",
    ]
    .into_iter()
    .enumerate()
    {
        let via = if i % 2 == 0 { Via::Http } else { Via::Grpc };
        r.call(via, "CreateLogGroup", json!({"logGroupName": group}))
            .await
            .ok();
    }
    let groups = r
        .pages_agree(
            "DescribeLogGroups",
            json!({"logGroupNamePrefix": "/pg/a", "limit": 2}),
            "limit",
            "logGroups",
        )
        .await;
    let names: Vec<&str> = groups
        .iter()
        .filter_map(|g| g["logGroupName"].as_str())
        .collect();
    assert_eq!(
        names,
        ["/pg/a-0", "/pg/a-1", "/pg/a-2", "/pg/a-3", "/pg/a-4"]
    );
    let all = r
        .pages_agree(
            "DescribeLogGroups",
            json!({"limit": 3}),
            "limit",
            "logGroups",
        )
        .await;
    assert_eq!(all.len(), 7);
    for request in [
        json!({"limit": 0}),
        json!({"limit": 51}),
        json!({"nextToken": "not-a-token"}),
    ] {
        r.same("DescribeLogGroups", request).await.err();
    }

    // Five streams whose last events sort otherwise than their names.
    let group = "/pg/a-0";
    let now_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as i64;
    for (i, stream) in ["s-c", "s-a", "s-e", "t-b", "s-d"].into_iter().enumerate() {
        let via = if i % 2 == 0 { Via::Grpc } else { Via::Http };
        r.call(
            via,
            "CreateLogStream",
            json!({"logGroupName": group, "logStreamName": stream}),
        )
        .await
        .ok();
        let i = i as i64;
        let events: Vec<Value> = (0..3)
            .map(|j| json!({"timestamp": now_ms - 60_000 + j * 10_000 + i * 1_000, "message": format!("{stream} line {j}")}))
            .collect();
        r.call(
            via,
            "PutLogEvents",
            json!({"logGroupName": group, "logStreamName": stream, "logEvents": events}),
        )
        .await
        .ok();
    }
    let stream_names = |streams: &[Value]| -> Vec<String> {
        streams
            .iter()
            .filter_map(|s| s["logStreamName"].as_str().map(str::to_string))
            .collect()
    };
    for (request, expected) in [
        (json!({"limit": 2}), vec!["s-a", "s-c", "s-d", "s-e", "t-b"]),
        (
            json!({"orderBy": "LogStreamName", "descending": true, "limit": 2}),
            vec!["t-b", "s-e", "s-d", "s-c", "s-a"],
        ),
        (
            json!({"orderBy": "LastEventTime", "limit": 2}),
            vec!["s-c", "s-a", "s-e", "t-b", "s-d"],
        ),
        (
            json!({"orderBy": "LastEventTime", "descending": true, "limit": 3}),
            vec!["s-d", "t-b", "s-e", "s-a", "s-c"],
        ),
        (
            json!({"logStreamNamePrefix": "s-", "descending": true, "limit": 1}),
            vec!["s-e", "s-d", "s-c", "s-a"],
        ),
    ] {
        let mut request = request;
        request["logGroupName"] = json!(group);
        let streams = r
            .pages_agree("DescribeLogStreams", request.clone(), "limit", "logStreams")
            .await;
        assert_eq!(stream_names(&streams), expected, "{request}");
    }
    for request in [
        json!({"logGroupName": group, "orderBy": "Size"}),
        json!({"logGroupName": group, "orderBy": "LastEventTime", "logStreamNamePrefix": "s-"}),
        json!({"logGroupName": group, "limit": 0}),
        json!({"logGroupName": group, "nextToken": "not-a-token"}),
        json!({"logGroupName": "/none"}),
    ] {
        r.same("DescribeLogStreams", request).await.err();
    }

    // Fifteen events across the streams, oldest first.
    let events = r
        .pages_agree(
            "FilterLogEvents",
            json!({"logGroupName": group, "limit": 4}),
            "limit",
            "events",
        )
        .await;
    assert_eq!(events.len(), 15);
    let times: Vec<i64> = events
        .iter()
        .filter_map(|e| e["timestamp"].as_i64())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    for request in [
        json!({"logGroupName": group, "filterPattern": "line", "limit": 2}),
        json!({"logGroupName": group, "filterPattern": "\"line 1\"", "limit": 2}),
        json!({"logGroupName": group, "logStreamNames": ["s-a", "t-b"], "limit": 1}),
        json!({"logGroupName": group, "logStreamNamePrefix": "s-", "startTime": now_ms - 45_000, "limit": 3}),
    ] {
        r.pages_agree("FilterLogEvents", request, "limit", "events")
            .await;
    }
    for request in [
        json!({"logGroupName": group, "limit": 0}),
        json!({"logGroupName": group, "nextToken": "not-a-token"}),
        json!({"logGroupName": group, "logStreamNames": ["s-a"], "logStreamNamePrefix": "s-"}),
    ] {
        r.same("FilterLogEvents", request).await.err();
    }
}

/// AWS JSON 1.1 over HTTP/2 cleartext (prior knowledge), as an SDK speaking HTTP/2 sends it: a
/// request is gRPC only by its `application/grpc` content type, so ListClusters gets ECS's
/// JSON; a gRPC call on the same connection still reaches the service, with the same answer.
#[tokio::test]
async fn aws_json_and_grpc_share_an_http2_cleartext_connection() {
    use http_body_util::BodyExt as _;
    let r = rig().await;
    r.call(Via::Grpc, "CreateCluster", json!({"clusterName": "h2"}))
        .await
        .ok();
    let io = hyper_util::rt::TokioIo::new(r.connect().await);
    let (mut send, conn) = timeout(
        WAIT,
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io),
    )
    .await
    .expect("an HTTP/2 handshake in time")
    .expect("an HTTP/2 handshake");
    let driver = tokio::spawn(conn);
    // One request on the connection: the status, headers, body and trailers.
    let mut exchange = |req: http::Request<http_body_util::Full<bytes::Bytes>>| {
        let sent = send.send_request(req);
        async move {
            let resp = timeout(WAIT, sent)
                .await
                .expect("an HTTP/2 answer in time")
                .expect("an HTTP/2 answer");
            assert_eq!(resp.version(), http::Version::HTTP_2);
            let (head, body) = resp.into_parts();
            let collected = timeout(WAIT, body.collect())
                .await
                .expect("the body in time")
                .expect("the body");
            let trailers = collected.trailers().cloned().unwrap_or_default();
            let response = HttpResponse {
                status: head.status.as_u16(),
                headers: head
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_string(),
                            v.to_str().expect("an ASCII header").to_string(),
                        )
                    })
                    .collect(),
                body: collected.to_bytes().to_vec(),
            };
            (response, trailers)
        }
    };

    // AWS JSON 1.1, signed as botocore signs (host is the :authority in HTTP/2).
    let list = "AmazonEC2ContainerServiceV20141113.ListClusters";
    let body = b"{}";
    let mut req = http::Request::post(format!("http://{}/", r.host));
    for (k, v) in r.botocore_headers(list, body, Some((&r.full, "ecs"))) {
        if !k.eq_ignore_ascii_case("host") {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from_static(body)))
        .expect("a request");
    let (resp, _) = exchange(req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    let over_h2 = resp.answer().ok();
    assert_eq!(count(&over_h2, "clusterArns"), 1, "{over_h2}");
    assert_eq!(over_h2, r.same("ListClusters", json!({})).await.ok());

    // A refusal over HTTP/2 is AWS's too.
    let mut req = http::Request::post(format!("http://{}/", r.host));
    for (k, v) in r.botocore_headers(list, b"{\"bogus\":1}", Some((&r.full, "ecs"))) {
        if !k.eq_ignore_ascii_case("host") {
            req = req.header(k, v);
        }
    }
    let req = req
        .body(http_body_util::Full::new(bytes::Bytes::from_static(
            b"{\"bogus\":1}",
        )))
        .expect("a request");
    let (kind, message) = exchange(req).await.0.answer().err();
    assert_eq!(kind, "SerializationException", "{message}");

    // gRPC on the same connection, signed as `berth` signs.
    let op = row("ListClusters");
    let message = (op.decode)(json!({})).expect("the request encodes");
    let signing = Signing {
        credentials: Some(r.full.clone()),
        region: berth_proto::arn::REGION.to_string(),
    };
    let (authorization, date) = signing
        .sign(&r.host, &op.path(), &message, SystemTime::now())
        .expect("a signature");
    let req = http::Request::post(format!("http://{}{}", r.host, op.path()))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header(sigv4::AUTHORIZATION, authorization)
        .header(sigv4::X_AMZ_DATE, date)
        .body(http_body_util::Full::new(bytes::Bytes::from(
            sigv4::grpc_frame(&message),
        )))
        .expect("a request");
    let (resp, trailers) = exchange(req).await;
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(
        resp.header("content-type"),
        Some("application/grpc"),
        "{resp:?}"
    );
    let status = trailers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .or_else(|| resp.header("grpc-status"));
    assert_eq!(status, Some("0"), "{resp:?} {trailers:?}");
    // One frame: not compressed, its length, the message.
    let frame = &resp.body;
    assert!(frame.len() >= 5 && frame[0] == 0, "{frame:?}");
    let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]) as usize;
    let answer = aws_json::encode_response(op, &frame[5..5 + len]).expect("the answer encodes");
    assert_eq!(
        answer, over_h2,
        "gRPC vs AWS JSON over one HTTP/2 connection"
    );
    driver.abort();
}
