//! Running a checked command line: one generic unary call per row of the table (the request
//! encoded by the row, sent on `/berth.v1.Ecs/<Api>`), pages followed as the aws CLI follows
//! them, waiters polled, and the result printed in the chosen format.

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use prost::bytes::{Buf as _, BufMut as _};
use serde_json::{Map, Value};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::Channel;

use super::decoding::{self, Action, Call, Globals, Paging, ResumeToken, SkeletonKind};
use super::model::model;
use super::output::{self, Format};
use super::signing::Signing;
use super::table::{
    self, Matcher, Operation, WaitState, Waiter, INPUT_TOKEN, LIMIT_KEY, OUTPUT_TOKEN,
};
use super::CliError;

/// Runs the CLI with `args`; returns what to print on stdout.
pub async fn run(args: Vec<String>) -> Result<String, CliError> {
    let inv = decoding::parse(args)?;
    let g = &inv.globals;
    match inv.action {
        Action::Print(text) => Ok(text),
        Action::Skeleton { op, kind } => skeleton(op, kind, g),
        Action::Call(call) => {
            let mut conn = Connection::open(g).await?;
            let result = match (call.op.pages, call.paging.paginate) {
                (Some(p), true) => paginate(&mut conn, &call, p.result_key, p.also).await?,
                _ => Paged::whole(conn.call(call.op, call.request.clone()).await?),
            };
            print(&result, call.op, g)
        }
        Action::ExecuteCommand(args) => {
            let conn = Connection::open(g).await?;
            match super::exec::run(conn, args).await? {
                0 => Ok(String::new()),
                code => Err(CliError::Exit(code)),
            }
        }
        Action::Tail(args) => {
            let conn = Connection::open(g).await?;
            super::tail::run(conn, args).await?;
            Ok(String::new())
        }
        Action::RunTaskWait { request, timeout } => {
            let mut conn = Connection::open(g).await?;
            let op = table::by_api("RunTask")
                .ok_or_else(|| CliError::Other("no operation RunTask".into()))?;
            let (json, end) = super::follow::run_task_and_wait(
                &mut conn,
                request,
                timeout,
                super::follow::POLL,
                &mut |line| eprintln!("{line}"),
            )
            .await?;
            let out = print(&Paged::whole(json), op, g)?;
            match end {
                Ok(()) => Ok(out),
                // The tasks were started: their JSON is printed whatever the wait came to.
                Err(e) => {
                    match out.ends_with('\n') {
                        true => print!("{out}"),
                        false => println!("{out}"),
                    }
                    Err(e)
                }
            }
        }
        Action::Wait { waiter, request } => {
            let mut conn = Connection::open(g).await?;
            wait(&mut conn, waiter, request).await?;
            Ok(String::new())
        }
    }
}

/// A connection to the controller's `Ecs` service.
pub struct Connection {
    grpc: tonic::client::Grpc<Channel>,
    /// The channel, for the streaming calls (`cli::exec`).
    pub(super) channel: Channel,
    pub(super) endpoint: String,
    pub(super) debug: bool,
    /// The credentials and region every call is signed with.
    pub(super) signing: Signing,
    /// The URI authority the channel connects to: the `host` that is signed.
    pub(super) host: String,
}

/// Passes encoded messages through: the table's rows encode and decode them (also the
/// adapter comparison test's gRPC client).
#[derive(Debug, Clone, Copy, Default)]
pub struct Raw;

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let n = buf.remaining();
        Ok(Some(buf.copy_to_bytes(n).to_vec()))
    }
}

impl Connection {
    /// Connects to the endpoint of `g`.
    pub async fn open(g: &Globals) -> Result<Connection, CliError> {
        let signing = Signing::resolve(&g.signing, &|k| std::env::var(k).ok())?;
        Connection::open_with(&g.endpoint, g.debug, g.ca_bundle.as_deref(), signing).await
    }

    /// Connects to `endpoint` (plain http), calls unsigned.
    pub async fn open_at(endpoint: &str, debug: bool) -> Result<Connection, CliError> {
        let unsigned = Signing {
            credentials: None,
            region: berth_proto::arn::REGION.to_string(),
        };
        Connection::open_with(endpoint, debug, None, unsigned).await
    }

    /// Connects to `endpoint`; an https endpoint's certificate is checked against the CA in
    /// `ca_bundle` (the controller's CA: Berth's certificates are its own, no public root signs
    /// them). Calls are signed as `signing` says.
    pub async fn open_with(
        endpoint: &str,
        debug: bool,
        ca_bundle: Option<&std::path::Path>,
        signing: Signing,
    ) -> Result<Connection, CliError> {
        let mut builder = Channel::from_shared(endpoint.to_string()).map_err(|e| {
            CliError::Usage(format!("--endpoint-url: '{endpoint}' is not a URL: {e}"))
        })?;
        // The URI authority the channel connects to: the `host` that is signed.
        let host = builder
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        if endpoint.starts_with("https://") {
            let Some(path) = ca_bundle else {
                return Err(CliError::Usage(format!(
                    "{endpoint} is https: give the controller's CA with --ca-bundle FILE or BERTH_CA_BUNDLE (the controller's DATA_DIR/ca.pem)"
                )));
            };
            let pem = std::fs::read(path)
                .map_err(|e| CliError::Usage(format!("--ca-bundle {}: {e}", path.display())))?;
            builder = builder
                .tls_config(
                    tonic::transport::ClientTlsConfig::new()
                        .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
                )
                .map_err(|e| CliError::Usage(format!("--ca-bundle {}: {e}", path.display())))?;
        }
        let channel = builder.connect().await.map_err(|e| {
            let chain = error_chain(&e);
            if endpoint.starts_with("https://")
                && ["certificate", "tls", "TLS", "handshake", "UnknownIssuer"]
                    .iter()
                    .any(|w| chain.contains(w))
            {
                // The aws CLI's wording for a certificate it does not trust.
                CliError::Other(format!("SSL validation failed for {endpoint} {chain}"))
            } else {
                CliError::Connect(endpoint.to_string())
            }
        })?;
        Ok(Connection {
            channel: channel.clone(),
            grpc: tonic::client::Grpc::new(channel)
                .max_decoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE),
            endpoint: endpoint.to_string(),
            debug,
            signing,
            host,
        })
    }

    /// Calls `op` with a request JSON (checked by decoding); returns the response JSON.
    pub async fn call(
        &mut self,
        op: &'static Operation,
        request: Value,
    ) -> Result<Value, CliError> {
        if self.debug {
            // Never the secret nor the signature: the key id and scope are enough to debug.
            match &self.signing.credentials {
                Some(c) => eprintln!(
                    "DEBUG {} signing with access key {} (region {})",
                    op.api, c.access_key_id, self.signing.region
                ),
                None => eprintln!("DEBUG {} unsigned", op.api),
            }
            eprintln!(
                "DEBUG {} {}{} request: {}",
                op.api,
                self.endpoint,
                op.path(),
                redacted(&request)
            );
        }
        let bytes = (op.decode)(request).map_err(|e| {
            CliError::Usage(format!("Parameter validation failed for {}: {e}", op.api))
        })?;
        let path = PathAndQuery::from_maybe_shared(op.path())
            .map_err(|e| CliError::Other(format!("{}: {e}", op.path())))?;
        self.grpc
            .ready()
            .await
            .map_err(|_| CliError::Connect(self.endpoint.clone()))?;
        // Signed afresh for every call (pages and waiter polls too): its own x-amz-date.
        let signed =
            self.signing
                .sign(&self.host, &op.path(), &bytes, std::time::SystemTime::now());
        let mut request = tonic::Request::new(bytes);
        if let Some((authorization, date)) = signed {
            let md = request.metadata_mut();
            for (k, v) in [
                (berth_proto::sigv4::AUTHORIZATION, authorization),
                (berth_proto::sigv4::X_AMZ_DATE, date),
            ] {
                let v = v.parse().map_err(|_| {
                    CliError::Other(format!("the {k} of the signature is not ASCII"))
                })?;
                md.insert(k, v);
            }
        }
        let answer = self.grpc.unary(request, path, Raw).await;
        match answer {
            Ok(resp) => {
                let mut v = (op.render)(&resp.into_inner()).map_err(|e| {
                    CliError::Other(format!("the {} response does not decode: {e}", op.api))
                })?;
                berth_proto::ecs_json::omit_unset_lists(&mut v, op.api);
                if self.debug {
                    eprintln!("DEBUG {} response: {}", op.api, redacted(&v));
                }
                Ok(v)
            }
            Err(s) => {
                if self.debug {
                    eprintln!("DEBUG {} error: {:?} {}", op.api, s.code(), s.message());
                }
                Err(service_error(op.api, s, &self.endpoint))
            }
        }
    }
}

/// The members whose values are secrets: `--debug` shows them as `***` (the output of the call
/// itself still shows what the call returns, as aws does).
const SECRET_MEMBERS: &[&str] = &[
    "SecretString",
    "SecretBinary",
    "SecretAccessKey",
    "ActivationCode",
    "Value",
];

/// `v` with every secret member's value replaced by `***`, at any depth.
pub fn redacted(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, x)| {
                    let x = if SECRET_MEMBERS.contains(&k.as_str()) {
                        Value::String("***".into())
                    } else {
                        redacted(x)
                    };
                    (k.clone(), x)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(redacted).collect()),
        other => other.clone(),
    }
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

pub(super) fn service_error(api: &'static str, s: tonic::Status, endpoint: &str) -> CliError {
    if s.code() == tonic::Code::Unavailable {
        return CliError::Connect(endpoint.to_string());
    }
    CliError::Service {
        exception: berth_proto::exceptions::of(&s).to_string(),
        api,
        message: s.message().replace('\n', " "),
    }
}

/// A result to print: the merged pages (or the one response), each page as received (for
/// yaml-stream) and where to resume when `--max-items` truncated it.
pub struct Paged {
    /// The whole result (the result key merged over the pages).
    pub merged: Value,
    /// The pages, the last truncated.
    pub pages: Vec<Value>,
    /// The `NextToken` to print.
    pub resume: Option<String>,
}

impl Paged {
    fn whole(v: Value) -> Paged {
        Paged {
            merged: v.clone(),
            pages: vec![v],
            resume: None,
        }
    }
}

/// Follows `nextToken` as botocore's PageIterator does: `--page-size` is each request's
/// `maxResults`, `--max-items` truncates (the resume token then names the page and how many of
/// its items were printed), `--starting-token` resumes, the same token twice is an error.
pub async fn paginate(
    conn: &mut Connection,
    call: &Call,
    result_key: &str,
    also: &[&str],
) -> Result<Paged, CliError> {
    let Paging {
        max_items,
        starting,
        page_size,
        ..
    } = &call.paging;
    let start = starting.clone().unwrap_or_default();
    let mut next = start.next_token.clone();
    let mut skip = start.truncate;
    let mut items: Vec<Value> = Vec::new();
    let mut pages = Vec::new();
    let mut resume = None;
    let mut previous: Option<String> = None;
    let mut first = true;
    let mut also_items: Vec<Vec<Value>> = vec![Vec::new(); also.len()];
    loop {
        let mut req = call.request.clone();
        if let Some(obj) = req.as_object_mut() {
            if let Some(t) = &next {
                obj.insert(INPUT_TOKEN.into(), Value::String(t.clone()));
            }
            if let Some(n) = page_size {
                let key = call.op.pages.map_or(LIMIT_KEY, |p| p.limit_key);
                obj.insert(key.into(), Value::from(*n));
            }
        }
        let mut page = conn.call(call.op, req).await?;
        for (k, items) in also.iter().zip(also_items.iter_mut()) {
            if let Some(a) = page.get(*k).and_then(Value::as_array) {
                items.extend(a.iter().cloned());
            }
        }
        let mut got: Vec<Value> = page
            .get(result_key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let starting_truncation = if first { skip } else { 0 };
        if first && skip > 0 {
            got = got.into_iter().skip(skip).collect();
        }
        first = false;
        skip = 0;
        let output_token = page
            .get(OUTPUT_TOKEN)
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(String::from);
        if let Some(obj) = page.as_object_mut() {
            obj.remove(OUTPUT_TOKEN);
        }
        if let Some(max) = max_items {
            if items.len() + got.len() > *max {
                let keep = max - items.len();
                got.truncate(keep);
                set(&mut page, result_key, got.clone());
                items.extend(got);
                pages.push(page);
                resume = Some(ResumeToken {
                    next_token: next.clone(),
                    truncate: keep + starting_truncation,
                });
                break;
            }
        }
        set(&mut page, result_key, got.clone());
        items.extend(got);
        pages.push(page);
        let Some(t) = output_token else {
            break;
        };
        if max_items.is_some_and(|m| m == items.len()) {
            resume = Some(ResumeToken {
                next_token: Some(t),
                truncate: 0,
            });
            break;
        }
        if previous.as_deref() == Some(t.as_str()) {
            return Err(CliError::Other(format!(
                "The same next token was received twice: {t}"
            )));
        }
        previous = Some(t.clone());
        next = Some(t);
    }
    let mut merged = Map::new();
    merged.insert(result_key.to_string(), Value::Array(items));
    for (k, items) in also.iter().zip(also_items) {
        merged.insert(k.to_string(), Value::Array(items));
    }
    Ok(Paged {
        merged: Value::Object(merged),
        pages,
        resume: resume.map(|r| r.encode()),
    })
}

fn set(page: &mut Value, key: &str, items: Vec<Value>) {
    if let Some(obj) = page.as_object_mut() {
        obj.insert(key.to_string(), Value::Array(items));
    }
}

fn query(v: &Value, g: &Globals) -> Result<Value, CliError> {
    match &g.query {
        Some(q) => output::apply_query(v, q).map_err(CliError::Other),
        None => Ok(v.clone()),
    }
}

/// Prints a result as the aws CLI's formatters do: the whole result for json, table and yaml
/// (with `NextToken` when truncated), page by page for text (then `NEXTTOKEN\t...`) and
/// yaml-stream.
fn print(result: &Paged, op: &Operation, g: &Globals) -> Result<String, CliError> {
    match g.output {
        Format::Text => {
            let mut out = String::new();
            for page in &result.pages {
                out.push_str(&output::text(&query(page, g)?));
            }
            if let Some(t) = &result.resume {
                let mut inner = Map::new();
                inner.insert("NextToken".into(), Value::String(t.clone()));
                let mut outer = Map::new();
                outer.insert("NextToken".into(), Value::Object(inner));
                out.push_str(&output::text(&query(&Value::Object(outer), g)?));
            }
            Ok(out)
        }
        Format::YamlStream => {
            let mut out = String::new();
            for page in &result.pages {
                out.push_str(&output::render(
                    &query(page, g)?,
                    Format::YamlStream,
                    op.api,
                ));
            }
            Ok(out)
        }
        format => {
            let mut whole = result.merged.clone();
            if let (Some(t), Some(obj)) = (&result.resume, whole.as_object_mut()) {
                obj.insert("NextToken".into(), Value::String(t.clone()));
            }
            Ok(output::render(&query(&whole, g)?, format, op.api))
        }
    }
}

fn skeleton(op: &'static Operation, kind: SkeletonKind, g: &Globals) -> Result<String, CliError> {
    let rpc = model()
        .rpc(op.api)
        .ok_or_else(|| CliError::Other(format!("{} is not in the model", op.api)))?;
    Ok(match kind {
        SkeletonKind::Input => output::json(&decoding::skeleton(&rpc.input, false)),
        SkeletonKind::YamlInput => output::yaml(&decoding::skeleton(&rpc.input, false)),
        SkeletonKind::Output => print(&Paged::whole(decoding::skeleton(&rpc.output, true)), op, g)?,
    })
}

/// How often Berth polls a waiter's operation (aws waits `delay`, 6 s for ECS's task waiters).
pub const POLL: Duration = Duration::from_secs(1);

/// Evaluates a waiter's acceptors on one response, in order: the first match decides.
pub fn accept(waiter: &Waiter, response: &Value) -> Option<(WaitState, String)> {
    for a in waiter.acceptors {
        let Ok(found) = output::query(response, a.argument) else {
            continue;
        };
        if a.matcher == Matcher::Path {
            let expected: Value = serde_json::from_str(a.expected)
                .unwrap_or_else(|_| Value::String(a.expected.to_string()));
            if found == expected {
                return Some((a.state, a.explanation()));
            }
            continue;
        }
        // botocore: the expression must give a non-empty list.
        let Some(list) = found.as_array().filter(|l| !l.is_empty()) else {
            continue;
        };
        let hit = |v: &Value| v.as_str() == Some(a.expected);
        let matched = match a.matcher {
            Matcher::PathAll => list.iter().all(hit),
            Matcher::PathAny => list.iter().any(hit),
            Matcher::Path => false,
        };
        if matched {
            return Some((a.state, a.explanation()));
        }
    }
    None
}

/// Polls until the waiter succeeds (Ok), fails, or has waited as long as the aws CLI would
/// (`delay × max_attempts`), as botocore's Waiter.wait decides each attempt.
pub async fn wait(
    conn: &mut Connection,
    waiter: &'static Waiter,
    request: Value,
) -> Result<(), CliError> {
    let limit = Duration::from_secs(waiter.delay_secs * waiter.max_attempts);
    let attempts = limit.as_millis() / POLL.as_millis().max(1);
    wait_every(conn, waiter, request, POLL, attempts).await
}

/// [`wait`], polling every `poll` at most `attempts` times.
pub async fn wait_every(
    conn: &mut Connection,
    waiter: &'static Waiter,
    request: Value,
    poll: Duration,
    attempts: u128,
) -> Result<(), CliError> {
    let op = table::by_api(waiter.operation)
        .ok_or_else(|| CliError::Other(format!("no operation {}", waiter.operation)))?;
    let tty = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut n: u128 = 0;
    let result = loop {
        n += 1;
        let response = match conn.call(op, request.clone()).await {
            Ok(v) => v,
            Err(CliError::Service {
                exception, message, ..
            }) => {
                break Err(CliError::Waiter {
                    name: waiter.name,
                    reason: format!("An error occurred ({exception}): {message}"),
                })
            }
            Err(e) => break Err(e),
        };
        match accept(waiter, &response) {
            Some((WaitState::Success, _)) => break Ok(()),
            Some((WaitState::Failure, why)) => {
                break Err(CliError::Waiter {
                    name: waiter.name,
                    reason: format!("Waiter encountered a terminal failure state: {why}"),
                })
            }
            None => {}
        }
        if n >= attempts {
            // Every acceptor of ECS's task waiters ends the wait, so none was "previously
            // accepted": botocore's reason is then this.
            break Err(CliError::Waiter {
                name: waiter.name,
                reason: "Max attempts exceeded".to_string(),
            });
        }
        if tty {
            eprint!(
                "\rWaiting for {}: attempt {n}, {} s elapsed ",
                waiter.name,
                started.elapsed().as_secs()
            );
        }
        tokio::time::sleep(poll).await;
    };
    if tty && n > 1 {
        eprint!("\r\x1b[2K");
    }
    result
}

#[cfg(test)]
mod tests;
