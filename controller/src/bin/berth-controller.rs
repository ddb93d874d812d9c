//! `berth-controller`: serves the ECS API and the agent link from one gRPC port.

use anyhow::Context;
use berth_controller::api::aws_json::AwsJsonLayer;
use berth_controller::api::logs::LogsApi;
use berth_controller::api::{
    agent::{AgentApi, LinkIdentity},
    ec2::Ec2Api,
    ecs::EcsApi,
    exec::ExecApi,
    iam::IamApi,
    secrets_manager::SecretsManagerApi,
    ssm::SsmApi,
};
use berth_controller::fleet::Fleet;
use berth_controller::logs::store::RedbLogStore;
use berth_controller::logs::LogService;
use berth_controller::security::access_keys::AccessKeys;
use berth_controller::security::activations::Activations;
use berth_controller::security::audit::AuditLog;
use berth_controller::security::auth::{Authenticator, Mode};
use berth_controller::security::pki::{Ca, Pki};
use berth_controller::service::Controller;
use berth_controller::store::redb_store::RedbStore;
use berth_proto::v1::ec2_server::Ec2Server;
use berth_proto::v1::ecs_server::EcsServer;
use berth_proto::v1::iam_server::IamServer;
use berth_proto::v1::logs_server::LogsServer;
use berth_proto::v1::secrets_manager_server::SecretsManagerServer;
use berth_proto::v1::ssm_server::SsmServer;
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tower::Layer as _;

/// Berth's controller: clusters, task definitions, tasks and container instances.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to serve the API and the agent link on (loopback by default).
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
    /// Directory for the embedded stores (state.redb, and logs.redb for log events).
    #[arg(
        long,
        env = "BERTH_DATA_DIR",
        default_value = "/var/lib/berth/controller"
    )]
    data_dir: PathBuf,
    /// KEY=VALUE file read before flags and environment (keys are the BERTH_* variables).
    #[arg(
        long,
        env = "BERTH_CONTROLLER_CONFIG",
        default_value = "/etc/berth/controller.conf"
    )]
    config: PathBuf,
    /// Seconds a stopped task stays visible (ListTasks, DescribeTasks) after its agent
    /// confirmed it STOPPED, before it leaves the store (ECS keeps them about an hour).
    #[arg(
        long,
        env = "BERTH_STOPPED_TASK_RETENTION",
        default_value_t = berth_controller::service::DEFAULT_STOPPED_TASK_RETENTION.as_secs(),
        value_name = "SECONDS"
    )]
    stopped_task_retention: u64,
    /// Issue 12: seconds an instance's agent may be disconnected before its service tasks are
    /// replaced on other instances (when it comes back, the surplus is stopped).
    #[arg(
        long,
        env = "BERTH_SERVICE_DISCONNECT_GRACE",
        default_value_t = 30,
        value_name = "SECONDS"
    )]
    service_disconnect_grace: u64,
    /// Issue 12: seconds before a service starts a task again after two failed to start in a
    /// row; doubles with each further failure, up to 15 minutes.
    #[arg(
        long,
        env = "BERTH_SERVICE_RESTART_DELAY",
        default_value_t = 10,
        value_name = "SECONDS"
    )]
    service_restart_delay: u64,
    /// Serve beyond loopback even without TLS or signed calls (`--tls off`, `--auth off`):
    /// anyone who can reach the port could then run any image as root on every host. Without
    /// this flag the controller refuses to start that way; with it, it logs so loudly.
    #[arg(long, env = "BERTH_INSECURE")]
    insecure: bool,
    /// Signed API calls (SigV4 with access keys): auto = required unless the listen address is
    /// loopback; off accepts any signature or none.
    #[arg(long, env = "BERTH_AUTH", value_enum, default_value_t = Auth::Auto)]
    auth: Auth,
    /// The audit log of state-changing calls (JSON lines). Default: DATA_DIR/audit.log.
    #[arg(long, env = "BERTH_AUDIT_LOG")]
    audit_log: Option<PathBuf>,
    /// The master key sealing secrets, secret access keys and parameters at rest (64 hex
    /// digits, mode 0600); created on first start when absent. Default: DATA_DIR/master.key.
    #[arg(long, env = "BERTH_MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,
    /// TLS on the gRPC port (the API and the agent link): auto is on unless the listen address
    /// is loopback. With TLS on, agents must present the client certificate they enrolled for.
    #[arg(long, env = "BERTH_TLS", value_enum, default_value_t = Tls::Auto)]
    tls: Tls,
    /// More names or addresses for the server certificate (beside localhost, 127.0.0.1, ::1,
    /// the hostname and the listen address).
    #[arg(long = "tls-san", env = "BERTH_TLS_SANS", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// The CA certificate (PEM) issuing the server's and the agents' certificates. Default:
    /// DATA_DIR/ca.pem, made on first start with DATA_DIR/ca.key.
    #[arg(long, env = "BERTH_CA_CERT", requires = "ca_key")]
    ca_cert: Option<PathBuf>,
    /// The CA's private key (PEM). Default: DATA_DIR/ca.key (0600).
    #[arg(long, env = "BERTH_CA_KEY", requires = "ca_cert")]
    ca_key: Option<PathBuf>,
    /// Seconds an agent's client certificate is valid (agents renew at half of it).
    #[arg(
        long,
        env = "BERTH_CERTIFICATE_LIFETIME",
        default_value_t = berth_controller::security::pki::DEFAULT_CERTIFICATE_LIFETIME.as_secs(),
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECONDS"
    )]
    certificate_lifetime: u64,
    /// Seconds between two sweeps of the log store that delete the events older than their
    /// group's retention (PutRetentionPolicy).
    #[arg(
        long,
        env = "BERTH_LOG_RETENTION_INTERVAL",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..),
        value_name = "SECONDS"
    )]
    log_retention_interval: u64,
}

/// This host's interface addresses (IPv4, and IPv6 when `v6`), but link-local ones.
fn host_addresses(v6: bool) -> Vec<String> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        tracing::warn!("cannot list this host's addresses; name them with --tls-san");
        return Vec::new();
    };
    let mut out: Vec<String> = addrs
        .filter_map(|a| a.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else if v6 {
                a.as_sockaddr_in6()
                    .map(|s| std::net::IpAddr::V6(s.ip()))
                    .filter(|ip| !matches!(ip, std::net::IpAddr::V6(v) if (v.segments()[0] & 0xffc0) == 0xfe80))
            } else {
                None
            }
        })
        .map(|ip| ip.to_string())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The names and addresses the server certificate is issued for.
fn server_names(listen: SocketAddr, extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            names.push(h.to_string());
        }
    }
    if listen.ip().is_unspecified() {
        // Listening on every address: agents may dial any of them, so each is named.
        names.extend(host_addresses(listen.is_ipv6()));
    } else {
        names.push(listen.ip().to_string());
    }
    names.extend(
        extra
            .iter()
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty()),
    );
    names
}

/// `--tls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Tls {
    /// On unless the listen address is loopback.
    Auto,
    /// Always.
    On,
    /// Never (loopback only, or --insecure).
    Off,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Auth {
    /// Required unless the listen address is loopback.
    Auto,
    /// Every API call must be signed with a known access key.
    Required,
    /// Any signature or none (loopback only, or --insecure).
    Off,
}

impl Tls {
    fn on(self, addr: SocketAddr) -> bool {
        match self {
            Tls::Auto => !addr.ip().is_loopback(),
            Tls::On => true,
            Tls::Off => false,
        }
    }
}

impl Auth {
    fn mode(self, addr: SocketAddr) -> Mode {
        match self {
            Auth::Auto if addr.ip().is_loopback() => Mode::Off,
            Auth::Auto | Auth::Required => Mode::Required,
            Auth::Off => Mode::Off,
        }
    }
}

/// What a non-loopback listen lacks (TLS, signed calls), in one line; None when nothing.
fn exposure_gaps(addr: SocketAddr, tls: bool, auth: Mode) -> Option<String> {
    if addr.ip().is_loopback() {
        return None;
    }
    let mut missing = Vec::new();
    if !tls {
        missing.push("TLS (--tls off)");
    }
    if auth != Mode::Required {
        missing.push("signed calls (--auth off)");
    }
    (!missing.is_empty()).then(|| missing.join(" and "))
}

/// Why serving on `addr` is refused: beyond loopback, the port needs TLS and signed calls, else
/// anyone who can reach it could run any image as root on every host; `--insecure` overrides.
fn exposure_refused(addr: SocketAddr, tls: bool, auth: Mode, insecure: bool) -> Option<String> {
    let missing = exposure_gaps(addr, tls, auth)?;
    if insecure {
        return None;
    }
    Some(format!(
        "refusing to listen on {addr} without {missing}: anyone who can reach this address could run any image as root on every host; use --tls auto|on and --auth auto|required (the defaults), listen on loopback (127.0.0.1), or pass --insecure (BERTH_INSECURE=true) to accept that on a network you trust"
    ))
}

fn main() {
    if let Err(e) = berth_proto::config::apply_env_file(&berth_proto::config::path_from_args(
        "BERTH_CONTROLLER_CONFIG",
        "/etc/berth/controller.conf",
    )) {
        eprintln!("berth-controller: config: {e}");
        std::process::exit(2);
    }
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("berth-controller: cannot start the runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(args)) {
        eprintln!("berth-controller: {e:#}");
        std::process::exit(1);
    }
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let tls = args.tls.on(args.listen);
    let auth_mode = args.auth.mode(args.listen);
    if let Some(why) = exposure_refused(args.listen, tls, auth_mode, args.insecure) {
        anyhow::bail!(why);
    }
    if let Some(missing) = exposure_gaps(args.listen, tls, auth_mode) {
        tracing::warn!(listen = %args.listen,
            "INSECURE: serving beyond loopback without {missing} (--insecure): anyone who can reach this port can run any image as root on every host");
    }
    if !tls && auth_mode == Mode::Required {
        // Signed calls guard the API; agents are identified by their TLS client certificates.
        tracing::warn!(listen = %args.listen,
            "TLS is off (--tls off): API calls are signed, but the agent link authenticates nobody: any process that reaches this port can register as an agent, receive tasks and their secrets; use --tls on");
    }
    {
        use std::os::unix::fs::DirBuilderExt as _;
        // The store holds task definitions' environments: the data dir is the owner's alone
        // when the controller makes it.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&args.data_dir)
            .with_context(|| format!("creating data dir {}", args.data_dir.display()))?;
    }
    let master_key = args
        .master_key_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("master.key"));
    // Created only at its default place: an operator-given key that is missing is an error.
    let sealer = berth_controller::security::seal::Sealer::from_file(
        &master_key,
        args.master_key_file.is_none(),
    )?;
    // Made at its default place only: an operator-given CA that is missing is an error.
    let ca = Ca::load_or_create(
        &args
            .ca_cert
            .clone()
            .unwrap_or_else(|| args.data_dir.join("ca.pem")),
        &args
            .ca_key
            .clone()
            .unwrap_or_else(|| args.data_dir.join("ca.key")),
        args.ca_cert.is_none(),
    )?;
    let store: Arc<dyn berth_controller::store::Store> =
        Arc::new(RedbStore::open(&args.data_dir.join("state.redb"))?);
    // Log events in their own file: their volume dwarfs the state's (issue 10).
    let logs = Arc::new(LogService::new(
        Arc::new(RedbLogStore::open(&args.data_dir.join("logs.redb"))?),
        berth_controller::logs::system_clock(),
    ));
    let secrets = Arc::new(berth_controller::security::secrets::Secrets::new(
        store.clone(),
        sealer.clone(),
    ));
    let access_keys = Arc::new(AccessKeys::new(store.clone(), sealer.clone()));
    let admin_file = args.data_dir.join("admin.credentials");
    if let Some(id) = access_keys.bootstrap_admin(&admin_file)? {
        tracing::info!(access_key_id = %id, file = %admin_file.display(),
            "first start: an admin access key (full) was created; its secret is only in that file");
    }
    let audit_path = args
        .audit_log
        .clone()
        .unwrap_or_else(|| args.data_dir.join("audit.log"));
    let audit = Arc::new(AuditLog::open(&audit_path)?);
    let authenticator = Arc::new(Authenticator::new(
        access_keys.clone(),
        auth_mode,
        Some(audit),
    ));
    let controller = Arc::new(
        Controller::load(store.clone(), Arc::new(Fleet::default()))?.with_service_config(
            berth_controller::service::ServiceSchedulerConfig {
                disconnect_grace: std::time::Duration::from_secs(args.service_disconnect_grace),
                restart_delay: std::time::Duration::from_secs(args.service_restart_delay),
                ..Default::default()
            },
        ),
    );
    // TLS is terminated by `security::tls`, offering HTTP/2 and HTTP/1.1 (issue 13).
    let server_tls = if tls {
        let id = ca.server_identity(&server_names(args.listen, &args.tls_sans))?;
        Some(Arc::new(berth_controller::security::tls::server_config(
            &id.cert_pem,
            &id.key_pem,
            ca.cert_pem(),
        )?))
    } else {
        None
    };
    let ca_fingerprint = ca.fingerprint();
    let pki = Arc::new(Pki::new(
        ca,
        store.clone(),
        std::time::Duration::from_secs(args.certificate_lifetime),
    ));
    let activations = Arc::new(Activations::new(store.clone()));
    let retention = std::time::Duration::from_secs(args.stopped_task_retention);
    // Aborted when `serve` returns, which stops the sweeps.
    let sweeps = AbortOnDrop(controller.spawn_retention(retention, std::time::SystemTime::now));
    // Issue 12: the services scheduler, for as long as the server runs.
    let _services = AbortOnDrop(tokio::spawn(controller.clone().run_service_scheduler()));
    let log_sweeps = AbortOnDrop(spawn_log_retention(
        logs.clone(),
        std::time::Duration::from_secs(args.log_retention_interval),
    ));
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    tracing::info!(listen = %args.listen, data_dir = %args.data_dir.display(), tls,
        ca_fingerprint = %ca_fingerprint,
        stopped_task_retention_s = retention.as_secs(), auth = ?auth_mode,
        audit_log = %audit_path.display(), "berth-controller serving");
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
    };
    let signed = authenticator.layer();
    let server = tonic::transport::Server::builder()
        // One port for both: gRPC is HTTP/2, AWS JSON 1.1 (the aws CLI, the SDKs) HTTP/1.1,
        // told apart per connection; `AwsJsonLayer` answers the latter (issue 13).
        .accept_http1(true)
        .layer(AwsJsonLayer::new(authenticator.clone()))
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        // Signed calls on the user-facing services; the agent link authenticates by its
        // client certificate instead.
        .add_service(signed.layer(EcsServer::new(EcsApi(controller.clone()))))
        // ExecuteCommand's stream: the layer hands it the means to verify its first message.
        .add_service(signed.layer(ExecApi(controller.clone()).into_server()))
        .add_service(signed.layer(Ec2Server::new(Ec2Api(controller.clone()))))
        .add_service(signed.layer(SsmServer::new(SsmApi {
            secrets: secrets.clone(),
            activations: activations.clone(),
            ca_fingerprint,
        })))
        .add_service(signed.layer(SecretsManagerServer::new(SecretsManagerApi {
            secrets: secrets.clone(),
        })))
        .add_service(signed.layer(IamServer::new(IamApi {
            keys: access_keys.clone(),
        })))
        .add_service(
            signed.layer(
                LogsServer::new(LogsApi(logs.clone()))
                    .max_decoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(berth_proto::link::MAX_MESSAGE_SIZE),
            ),
        )
        .add_service(
            AgentApi::new(controller)
                .with_secrets(secrets)
                .with_logs(logs)
                .with_identity(LinkIdentity {
                    pki,
                    activations,
                    required: tls,
                })
                .into_server(),
        );
    let server = async move {
        match server_tls {
            Some(config) => {
                server
                    .serve_with_incoming(berth_controller::security::tls::incoming(
                        listener, config,
                    ))
                    .await
            }
            // Small request/response messages: Nagle's algorithm would hold them back for the
            // peer's delayed ACK (tens of milliseconds on every RunTask and state change).
            None => {
                server
                    .serve_with_incoming(
                        tonic::transport::server::TcpIncoming::from(listener)
                            .with_nodelay(Some(true)),
                    )
                    .await
            }
        }
    };
    // Every change is committed before it is acknowledged, so stopping drops the agents'
    // long-lived sessions at once instead of waiting for them to end (they never do).
    tokio::select! {
        r = server => r?,
        _ = shutdown => tracing::info!("berth-controller stopping"),
    }
    drop(sweeps);
    drop(log_sweeps);
    Ok(())
}

/// Deletes the log events older than their group's retention every `interval`.
fn spawn_log_retention(
    logs: Arc<LogService>,
    interval: std::time::Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match logs.enforce_retention().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "log retention: expired events deleted"),
                Err(e) => {
                    tracing::warn!(error = %e, "log retention sweep failed; retrying at the next interval")
                }
            }
        }
    })
}

/// Aborts a spawned task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_served_without_insecure() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        for a in ["127.0.0.1:7480", "[::1]:7480"] {
            assert!(exposure_refused(at(a), false, Mode::Off, false).is_none());
            // The defaults on loopback: no TLS, no signing.
            assert!(!Tls::Auto.on(at(a)));
            assert_eq!(Auth::Auto.mode(at(a)), Mode::Off);
        }
        for a in ["0.0.0.0:7480", "[::]:7480", "192.0.2.10:7480"] {
            // The defaults beyond loopback: TLS and signed calls, served.
            let (tls, auth) = (Tls::Auto.on(at(a)), Auth::Auto.mode(at(a)));
            assert!(tls && auth == Mode::Required);
            assert!(exposure_refused(at(a), tls, auth, false).is_none());
            let why = exposure_refused(at(a), false, Mode::Required, false).unwrap();
            assert!(
                why.contains(a) && why.contains("TLS") && !why.contains("signed"),
                "{why}"
            );
            assert!(why.contains("--insecure"), "{why}");
            let why = exposure_refused(at(a), true, Mode::Off, false).unwrap();
            assert!(
                why.contains("signed calls (--auth off)") && !why.contains("TLS"),
                "{why}"
            );
            let why = exposure_refused(at(a), false, Auth::Off.mode(at(a)), false).unwrap();
            assert!(
                why.contains("TLS (--tls off) and signed calls (--auth off)"),
                "{why}"
            );
            assert!(exposure_refused(at(a), false, Mode::Off, true).is_none());
        }
    }

    #[test]
    fn listening_everywhere_names_every_host_address_in_the_certificate() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        let all = server_names(at("0.0.0.0:7480"), &["berth.example".into()]);
        for n in ["localhost", "127.0.0.1", "::1", "berth.example"] {
            assert!(all.iter().any(|x| x == n), "{n} in {all:?}");
        }
        // Every IPv4 address of this host (loopback at least) is named.
        for a in host_addresses(false) {
            assert!(all.contains(&a), "{a} in {all:?}");
        }
        assert!(!host_addresses(false).is_empty());
        let one = server_names(at("192.0.2.10:7480"), &[]);
        assert!(one.iter().any(|x| x == "192.0.2.10"), "{one:?}");
        assert!(!one.iter().any(|x| x == "0.0.0.0"), "{one:?}");
    }

    #[test]
    fn tls_auto_is_on_beyond_loopback() {
        let at = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(!Tls::Auto.on(at("127.0.0.1:1")));
        assert!(Tls::Auto.on(at("0.0.0.0:1")));
        assert!(Tls::On.on(at("127.0.0.1:1")));
        assert!(!Tls::Off.on(at("0.0.0.0:1")));
    }
}
