//! The task metadata endpoint v4 (issue 9), served by the agent itself (no process per task):
//! `GET ${ECS_CONTAINER_METADATA_URI_V4}` (the container), `/task` (the task with its
//! containers), `/stats` (the container's Docker stats) and `/task/stats` (runtime id → stats),
//! in ECS's JSON shapes ([`json`], [`crate::stats`]). The v3 URI (`ECS_CONTAINER_METADATA_URI`)
//! is served the same way.
//!
//! Where a container reaches it, by network mode:
//! - bridge and awsvpc: `http://169.254.170.2:51679/v4/<token>`, ECS's address (the port is
//!   not ECS's 80: see [`METADATA_PORT`]), served inside the
//!   task's own namespace(s): the agent adds 169.254.170.2/32 to the namespace's `lo` and opens
//!   a listening socket there (bound on a thread that entered the namespace; the socket stays
//!   in it), accepted on by the agent's runtime. It exists from the moment the task's network is
//!   up (before any container starts), is made again for recovered tasks after an agent
//!   restart, and is closed when the task's network goes. It answers for its own task only.
//! - host: `http://<--metadata-address>/v4/<token>` (default 127.0.0.1:51679, the loopback port
//!   ECS's agent uses): the host's addresses are not the agent's to take, so the path carries an
//!   unguessable per-container token, and the listener answers only the token's own task.
//! - none: no endpoint (a namespace with only loopback has no way out to the agent, and
//!   opening a socket in it would be a channel the mode promises not to have); the variables
//!   are not set.
//!
//! Tokens are 128 bits of HMAC-SHA256 over the task ARN and container name under a random key
//! kept in the data dir (`metadata.key`, mode 0600): the same after an agent restart without
//! being written into the task record, and not derivable by a container.

pub mod json;

use crate::network::{Mode, TaskNetworkState, NETNS_DIR};
use crate::state::TaskRecord;
use crate::stats::Sampler;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use std::collections::{BTreeMap, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn, Instrument};

/// ECS's metadata address, served inside bridge and awsvpc namespaces.
pub const METADATA_IP: Ipv4Addr = Ipv4Addr::new(169, 254, 170, 2);
/// The port of the listener inside a task's namespace. Not ECS's 80: ECS reaches the agent
/// through a DNAT on the host and leaves the namespace's port 80 free, while a socket the agent
/// bound at 169.254.170.2:80 inside the namespace would make a container's own bind of
/// 0.0.0.0:80 (a web server's) fail. 51679 is the port ECS reserves for its agent's endpoint;
/// containers reach it through the variables, as ECS tells them to.
pub const METADATA_PORT: u16 = 51679;
/// The host-mode listener's default address (ECS's agent's loopback port).
pub const DEFAULT_HOST_ADDRESS: &str = "127.0.0.1:51679";
/// How long setting up a namespace's listener may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a connection may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A metadata endpoint failure.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The key file could not be read or written.
    #[error("metadata key {path}: {source}")]
    Key {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A listener could not be made.
    #[error("metadata endpoint {step} ({place}): {source}")]
    Listen {
        /// What was being done.
        step: &'static str,
        /// Where (a namespace or an address).
        place: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn listen_err(step: &'static str, place: &str) -> impl FnOnce(std::io::Error) -> MetadataError {
    let place = place.to_string();
    move |source| MetadataError::Listen {
        step,
        place,
        source,
    }
}

/// What the endpoint reads tasks from (the engine's records, read-only).
pub trait TaskSource: Send + Sync + 'static {
    /// The record of a task, by ARN.
    fn task(&self, task_arn: &str) -> Option<TaskRecord>;
    /// Every task held.
    fn tasks(&self) -> Vec<TaskRecord>;
}

/// Which tasks a listener answers for.
#[derive(Debug, Clone)]
enum Scope {
    /// A namespace's listener: its own task.
    Task(String),
    /// The host listener: host-mode tasks, by token.
    Host,
}

/// The endpoint: its key, its listeners and what it reads.
pub struct Endpoint {
    key: [u8; 32],
    host_address: SocketAddr,
    /// The host listener's address once bound (its port when configured as 0).
    bound: OnceLock<SocketAddr>,
    cluster: String,
    availability_zone: Option<String>,
    source: OnceLock<Arc<dyn TaskSource>>,
    sampler: Arc<Sampler>,
    /// Namespace listeners' accept loops, by task ARN.
    listeners: Mutex<HashMap<String, Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("Endpoint")
            .field("host_address", &self.host_address)
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        if let Ok(l) = self.listeners.lock() {
            for h in l.values().flatten() {
                h.abort();
            }
        }
    }
}

/// Reads the key in `dir/metadata.key`, making it (32 random bytes, mode 0600) the first time.
pub fn load_key(dir: &Path) -> Result<[u8; 32], MetadataError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("metadata.key");
    let err = |source| MetadataError::Key {
        path: path.display().to_string(),
        source,
    };
    match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&b);
            return Ok(k);
        }
        Ok(_) => {
            return Err(err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not 32 bytes: remove it to make a new one (running containers' URIs change)",
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let key: [u8; 32] = rand::random();
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(&key).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(key)
}

type Body = Full<Bytes>;

fn respond(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

fn not_found() -> Response<Body> {
    respond(
        StatusCode::NOT_FOUND,
        r#"{"error":"no such container metadata endpoint"}"#.into(),
    )
}

fn json<T: serde::Serialize>(v: &T) -> Response<Body> {
    match serde_json::to_string(v) {
        Ok(s) => respond(StatusCode::OK, s),
        Err(e) => respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            serde_json::json!({ "error": e.to_string() }).to_string(),
        ),
    }
}

/// What a request path asks for.
#[derive(Debug, PartialEq, Eq)]
enum Route<'a> {
    Container(&'a str),
    Task(&'a str),
    Stats(&'a str),
    TaskStats(&'a str),
}

/// `/v4/<token>[/task|/stats|/task/stats]` (and the same under `/v3`).
fn route(path: &str) -> Option<Route<'_>> {
    let rest = path
        .strip_prefix("/v4/")
        .or_else(|| path.strip_prefix("/v3/"))?;
    let rest = rest.trim_end_matches('/');
    let (token, sub) = rest.split_once('/').unwrap_or((rest, ""));
    if token.is_empty() {
        return None;
    }
    match sub {
        "" => Some(Route::Container(token)),
        "task" => Some(Route::Task(token)),
        "stats" => Some(Route::Stats(token)),
        "task/stats" => Some(Route::TaskStats(token)),
        _ => None,
    }
}

fn mode_of(rec: &TaskRecord) -> Option<Mode> {
    Mode::parse(&rec.definition.network_mode)
}

/// Compares two tokens in time independent of where they differ.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Endpoint {
    /// An endpoint with `key`, whose host-mode listener will be on `host_address`.
    pub fn new(
        key: [u8; 32],
        host_address: SocketAddr,
        cluster: &str,
        availability_zone: Option<String>,
        sampler: Arc<Sampler>,
    ) -> Self {
        Self {
            key,
            host_address,
            bound: OnceLock::new(),
            cluster: cluster.to_string(),
            availability_zone,
            source: OnceLock::new(),
            sampler,
            listeners: Mutex::new(HashMap::new()),
        }
    }

    /// Sets where tasks are read from (once, after the engine started).
    pub fn set_source(&self, source: Arc<dyn TaskSource>) {
        let _ = self.source.set(source);
    }

    /// A container's token: 128 bits of HMAC-SHA256(key, task ARN, name), hex.
    pub fn token(&self, task_arn: &str, container: &str) -> String {
        use hmac::{Mac, SimpleHmac};
        let mut mac = <SimpleHmac<sha2::Sha256> as Mac>::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
        mac.update(task_arn.as_bytes());
        mac.update(&[0]);
        mac.update(container.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }

    /// The variables a container gets: ECS_CONTAINER_METADATA_URI_V4 and
    /// ECS_CONTAINER_METADATA_URI (v3), none in none mode.
    pub fn environment(
        &self,
        task_arn: &str,
        container: &str,
        mode: Mode,
    ) -> Vec<(String, String)> {
        let base = match mode {
            Mode::None => return Vec::new(),
            Mode::Host => self.bound.get().unwrap_or(&self.host_address).to_string(),
            Mode::Bridge | Mode::Awsvpc => format!("{METADATA_IP}:{METADATA_PORT}"),
        };
        let token = self.token(task_arn, container);
        vec![
            (
                "ECS_CONTAINER_METADATA_URI_V4".into(),
                format!("http://{base}/v4/{token}"),
            ),
            (
                "ECS_CONTAINER_METADATA_URI".into(),
                format!("http://{base}/v3/{token}"),
            ),
        ]
    }

    /// Opens the host-mode listener and serves it until the endpoint is dropped.
    pub async fn serve_host(self: &Arc<Self>) -> Result<JoinHandle<()>, MetadataError> {
        let addr = self.host_address.to_string();
        let listener = tokio::net::TcpListener::bind(self.host_address)
            .await
            .map_err(listen_err("binding", &addr))?;
        let local = listener
            .local_addr()
            .map_err(listen_err("binding", &addr))?;
        let _ = self.bound.set(local);
        info!(address = %local, "metadata endpoint for host-mode tasks listening");
        Ok(tokio::spawn(accept_loop(
            Arc::downgrade(self),
            listener,
            Scope::Host,
        )))
    }

    /// The task's network is up: opens a listener in each of its namespaces (bridge, awsvpc;
    /// nothing for host and none). Idempotent.
    pub async fn attach(
        self: &Arc<Self>,
        task_arn: &str,
        net: &TaskNetworkState,
    ) -> Result<(), MetadataError> {
        if !matches!(net.mode, Mode::Bridge | Mode::Awsvpc) {
            return Ok(());
        }
        if self
            .listeners
            .lock()
            .map(|l| l.contains_key(task_arn))
            .unwrap_or(false)
        {
            return Ok(());
        }
        let mut handles = Vec::new();
        for ns in net.namespaces.values() {
            match listen_in(&ns.name).await {
                Ok(listener) => handles.push(tokio::spawn(
                    accept_loop(
                        Arc::downgrade(self),
                        listener,
                        Scope::Task(task_arn.to_string()),
                    )
                    .in_current_span(),
                )),
                Err(e) => {
                    for h in handles {
                        h.abort();
                    }
                    return Err(e);
                }
            }
        }
        debug!(
            namespaces = handles.len(),
            "metadata endpoint listening in the task's namespaces"
        );
        if let Ok(mut l) = self.listeners.lock() {
            if let Some(old) = l.insert(task_arn.to_string(), handles) {
                old.into_iter().for_each(|h| h.abort());
            }
        }
        Ok(())
    }

    /// The task's network goes: closes its listeners.
    pub fn detach(&self, task_arn: &str) {
        if let Some(handles) = self
            .listeners
            .lock()
            .ok()
            .and_then(|mut l| l.remove(task_arn))
        {
            for h in handles {
                h.abort();
            }
        }
    }

    /// Whether a task has namespace listeners (for tests).
    pub fn attached(&self, task_arn: &str) -> bool {
        self.listeners
            .lock()
            .map(|l| l.contains_key(task_arn))
            .unwrap_or(false)
    }

    /// Finds the container `token` names among the tasks `scope` may answer for.
    fn find(&self, scope: &Scope, token: &str) -> Option<(TaskRecord, String)> {
        let source = self.source.get()?;
        let candidates = match scope {
            Scope::Task(arn) => source.task(arn).into_iter().collect::<Vec<_>>(),
            Scope::Host => source
                .tasks()
                .into_iter()
                .filter(|r| mode_of(r) == Some(Mode::Host))
                .collect(),
        };
        for rec in candidates {
            let hit = rec
                .state
                .containers
                .iter()
                .find(|c| same(&self.token(&rec.task.task_arn, &c.name), token))
                .map(|c| c.name.clone());
            if let Some(name) = hit {
                return Some((rec, name));
            }
        }
        None
    }

    async fn handle(&self, scope: &Scope, req: Request<hyper::body::Incoming>) -> Response<Body> {
        if req.method() != hyper::Method::GET {
            return respond(
                StatusCode::METHOD_NOT_ALLOWED,
                r#"{"error":"only GET is served"}"#.into(),
            );
        }
        let Some(route) = route(req.uri().path()) else {
            return not_found();
        };
        let token = match route {
            Route::Container(t) | Route::Task(t) | Route::Stats(t) | Route::TaskStats(t) => t,
        };
        let Some((rec, name)) = self.find(scope, token) else {
            return not_found();
        };
        let cluster = self.cluster.as_str();
        match route {
            Route::Container(_) => {
                let Some(c) = rec.state.containers.iter().find(|c| c.name == name) else {
                    return not_found();
                };
                json(&json::container(&rec, cluster, c))
            }
            Route::Task(_) => json(&json::task(
                &rec,
                cluster,
                self.availability_zone.as_deref(),
            )),
            Route::Stats(_) | Route::TaskStats(_) => {
                let now = self.sampler.sample(&rec).await;
                let prev = self.sampler.last(&rec.task.task_arn);
                let stats_of = |c: &berth_proto::v1::ContainerStateChange| {
                    let id = c.runtime_id.clone().unwrap_or_default();
                    crate::stats::docker_stats(&now, prev.as_deref(), &c.name, &id)
                };
                if matches!(route, Route::Stats(_)) {
                    // A container that does not run has no stats: null, as ECS answers.
                    let s = rec
                        .state
                        .containers
                        .iter()
                        .find(|c| c.name == name)
                        .and_then(stats_of);
                    json(&s)
                } else {
                    let all: BTreeMap<String, Option<crate::stats::DockerStats>> = rec
                        .state
                        .containers
                        .iter()
                        .filter_map(|c| Some((c.runtime_id.clone()?, stats_of(c))))
                        .collect();
                    json(&all)
                }
            }
        }
    }
}

/// Accepts connections until the endpoint goes (or the task is detached: the loop is aborted,
/// which drops the socket).
async fn accept_loop(
    endpoint: std::sync::Weak<Endpoint>,
    listener: tokio::net::TcpListener,
    scope: Scope,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "metadata endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if endpoint.strong_count() == 0 {
            return;
        }
        let (endpoint, scope) = (endpoint.clone(), scope.clone());
        tokio::spawn(
            async move {
                let service = hyper::service::service_fn(move |req| {
                    let (endpoint, scope) = (endpoint.clone(), scope.clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(match endpoint.upgrade() {
                            Some(e) => e.handle(&scope, req).await,
                            None => not_found(),
                        })
                    }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                if let Err(e) = conn.await {
                    debug!(error = %e, "metadata endpoint: connection ended with an error");
                }
            }
            .in_current_span(),
        );
    }
}

/// Adds 169.254.170.2/32 to the namespace's `lo` (up) and binds [`METADATA_PORT`] on it, on a thread
/// that entered the namespace; the socket stays in the namespace.
async fn listen_in(ns: &str) -> Result<tokio::net::TcpListener, MetadataError> {
    let place = ns.to_string();
    let path = format!("{NETNS_DIR}/{ns}");
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("berth-metadata".into())
        .spawn({
            let place = place.clone();
            move || {
                let _ = tx.send(bind_in_namespace(&path, &place));
            }
        })
        .map_err(listen_err("starting a thread for", &place))?;
    let std_listener = match tokio::time::timeout(SETUP_TIMEOUT, rx).await {
        Ok(Ok(r)) => r?,
        Ok(Err(_)) => {
            return Err(listen_err("setting up", &place)(std::io::Error::other(
                "the setup thread failed",
            )))
        }
        Err(_) => {
            return Err(listen_err("setting up", &place)(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no answer in time",
            )))
        }
    };
    tokio::net::TcpListener::from_std(std_listener).map_err(listen_err("registering", &place))
}

fn bind_in_namespace(path: &str, place: &str) -> Result<std::net::TcpListener, MetadataError> {
    let f = std::fs::File::open(path).map_err(listen_err("opening namespace", place))?;
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| listen_err("entering namespace", place)(e.into()))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(listen_err("starting a runtime for", place))?;
    rt.block_on(add_to_lo(place))?;
    let l = std::net::TcpListener::bind((METADATA_IP, METADATA_PORT))
        .map_err(listen_err("binding 169.254.170.2:51679 in", place))?;
    l.set_nonblocking(true)
        .map_err(listen_err("setting up the socket in", place))?;
    Ok(l)
}

/// 169.254.170.2/32 on `lo` of the current thread's namespace, `lo` up (both idempotent).
async fn add_to_lo(place: &str) -> Result<(), MetadataError> {
    use futures::TryStreamExt;
    let err = |step| {
        let place = place.to_string();
        move |e: rtnetlink::Error| MetadataError::Listen {
            step,
            place,
            source: std::io::Error::other(e.to_string()),
        }
    };
    let (conn, h, _) =
        rtnetlink::new_connection().map_err(listen_err("opening netlink in", place))?;
    tokio::spawn(conn);
    let lo = h
        .link()
        .get()
        .match_name("lo".to_string())
        .execute()
        .try_next()
        .await
        .map_err(err("finding lo in"))?
        .ok_or_else(|| listen_err("finding lo in", place)(std::io::Error::other("no loopback")))?;
    let index = lo.header.index;
    h.link()
        .set(rtnetlink::LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(err("setting lo up in"))?;
    match h
        .address()
        .add(index, std::net::IpAddr::V4(METADATA_IP), 32)
        .execute()
        .await
    {
        Ok(()) => Ok(()),
        Err(rtnetlink::Error::NetlinkError(m)) if m.raw_code().abs() == nix::libc::EEXIST => Ok(()),
        Err(e) => Err(err("adding 169.254.170.2 to lo in")(e)),
    }
}

#[cfg(test)]
mod tests;
