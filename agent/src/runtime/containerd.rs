//! [`Runtime`] over containerd's gRPC API (containerd 1.6+): containers, tasks and their
//! snapshots. Image import and unpack live in [`super::import`]. Every call but `wait` (a long
//! poll the engine cancels and retries) is bounded by a timeout, and every error keeps
//! containerd's status so callers can tell NotFound from Unavailable or a timeout.

use super::{
    ContainerState, CreateContainer, ExecIo, ExecSpec, ImageConfig, LabelledContainer, Runtime,
    RuntimeError, CLUSTER_LABEL, TASK_ARN_LABEL,
};
use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::*;
use containerd_client::types::Mount;
use containerd_client::Client;
use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;
use tonic::{Code, Request, Status};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_V2: &str = "io.containerd.runc.v2";
pub(super) const SNAPSHOTTER: &str = "overlayfs";

/// How long a containerd call may take before it counts as failed (containerd hung or gone).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Calls that move or unpack whole layers get longer.
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(600);

/// Runs one containerd call with [`CALL_TIMEOUT`].
pub(super) async fn rpc<T>(
    op: &'static str,
    id: &str,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, RuntimeError> {
    rpc_for(op, id, CALL_TIMEOUT, call).await
}

/// Runs one containerd call (or a streamed exchange) bounded by `after`.
pub(super) async fn rpc_for<T>(
    op: &'static str,
    id: &str,
    after: Duration,
    call: impl Future<Output = Result<T, Status>>,
) -> Result<T, RuntimeError> {
    match tokio::time::timeout(after, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(source)) => Err(RuntimeError::Call {
            op,
            id: id.to_string(),
            source,
        }),
        Err(_) => Err(RuntimeError::Timeout {
            op,
            id: id.to_string(),
            after,
        }),
    }
}

/// Ignores NotFound: what a cleanup step wants.
fn ignore_missing<T>(r: Result<T, RuntimeError>) -> Result<(), RuntimeError> {
    match r {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// The containerd runtime.
pub struct Containerd {
    pub(super) client: Client,
    namespace: String,
    /// Where exec processes' FIFOs are made (issue 9).
    pub(super) exec_dir: std::path::PathBuf,
    /// Moves containers' output from their FIFOs to their spool files (issue 10).
    capture: std::sync::Arc<crate::logs::capture::Capture>,
    /// Where images are pulled from (issue 11); none: pulls are refused.
    pub(super) registry: Option<crate::images::registry::RegistryClient>,
    /// One writer per blob digest in this process: pulls that share a layer take turns, and
    /// the second finds it written (containerd locks an ingest to one writer).
    pub(super) blob_locks: super::pull::BlobLocks,
}

impl Containerd {
    /// Connects to containerd's socket and checks it answers (within 5 s).
    pub async fn connect(
        socket: &std::path::Path,
        namespace: &str,
    ) -> Result<(Self, String), RuntimeError> {
        let name = socket.display().to_string();
        let after = Duration::from_secs(5);
        let channel = tokio::time::timeout(after, containerd_client::connect(socket))
            .await
            .map_err(|_| RuntimeError::Timeout {
                op: "connect",
                id: name.clone(),
                after,
            })?
            .map_err(|source| RuntimeError::Connect {
                socket: name.clone(),
                source,
            })?;
        let client = Client::from(channel);
        let version = rpc_for("version", &name, after, client.version().version(()))
            .await?
            .into_inner()
            .version;
        Ok((
            Self {
                client,
                namespace: namespace.to_string(),
                exec_dir: super::exec::DEFAULT_EXEC_DIR.into(),
                capture: std::sync::Arc::new(crate::logs::capture::Capture::new(None)),
                registry: None,
                blob_locks: Default::default(),
            },
            version,
        ))
    }

    /// Makes exec processes' FIFOs under `dir` instead of [`super::exec::DEFAULT_EXEC_DIR`].
    pub fn with_exec_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.exec_dir = dir.into();
        self
    }

    /// Removes a snapshot by key (a container's rootfs, an unpack's or a view's key).
    pub(super) async fn remove_snapshot(&self, key: &str) -> Result<(), RuntimeError> {
        rpc(
            "remove snapshot",
            key,
            self.client
                .snapshots()
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                })),
        )
        .await
        .map(|_| ())
    }

    /// Pulls images through `registry` (issue 11).
    pub fn with_registry(mut self, registry: crate::images::registry::RegistryClient) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Captures containers' output with `capture` (its pipe size, its listeners).
    pub fn with_capture(mut self, capture: std::sync::Arc<crate::logs::capture::Capture>) -> Self {
        self.capture = capture;
        self
    }

    pub(super) fn req<T>(&self, msg: T) -> Request<T> {
        self.req_lease(msg, None)
    }

    pub(super) fn req_lease<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(ns) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", ns);
        }
        if let Some(l) = lease.and_then(|l| l.parse().ok()) {
            r.metadata_mut().insert("containerd-lease", l);
        }
        r
    }

    /// Creates the snapshot and the container record while `lease` protects them.
    async fn create_leased(&self, c: &CreateContainer, lease: &str) -> Result<(), RuntimeError> {
        let id = c.id.as_str();
        let prepared = rpc(
            "prepare snapshot",
            id,
            self.client.snapshots().prepare(self.req_lease(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.to_string(),
                    parent: c.image.chain_id.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            )),
        )
        .await;
        match prepared {
            Ok(_) => {}
            Err(e) if e.code() == Some(Code::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        let spec = serde_json::to_vec(&c.spec).map_err(|source| RuntimeError::Spec {
            id: id.to_string(),
            source,
        })?;
        let container = Container {
            id: id.to_string(),
            labels: c.labels.clone(),
            image: c.image.name.clone(),
            runtime: Some(ContainerRuntime {
                name: RUNC_V2.into(),
                options: None,
            }),
            spec: Some(prost_types::Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: id.to_string(),
            ..Default::default()
        };
        let created = rpc(
            "create container",
            id,
            self.client.containers().create(self.req_lease(
                CreateContainerRequest {
                    container: Some(container),
                },
                Some(lease),
            )),
        )
        .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(Code::AlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// The stdin FIFO of an interactive container (made once, beside its log). The shim opens it
/// for reading; with no writer ever opening it the container's stdin stays open.
async fn stdin_fifo(log: &std::path::Path) -> Result<String, RuntimeError> {
    let path = log.with_extension("stdin");
    let p = path.clone();
    let made = tokio::task::spawn_blocking(move || {
        match nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
            Err(e) => Err(std::io::Error::from(e)),
        }
    })
    .await
    .map_err(|e| std::io::Error::other(e.to_string()))
    .and_then(|r| r);
    made.map_err(|source| RuntimeError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(path.display().to_string())
}

/// containerd's process status (containerd.v1.types.Status) as the engine needs it. UNKNOWN
/// (0: the shim did not answer) is not "gone": the process may still run.
fn container_state(status: i32, exit_status: u32) -> ContainerState {
    match status {
        1 => ContainerState::Created,
        2 | 4 | 5 => ContainerState::Running,
        3 => ContainerState::Stopped(exit_status),
        _ => ContainerState::Unknown,
    }
}

#[async_trait]
impl Runtime for Containerd {
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        self.resolve_image(reference).await
    }

    async fn local_image(
        &self,
        reference: &str,
    ) -> Result<Option<super::LocalImage>, RuntimeError> {
        self.local_image_record(reference).await
    }

    async fn pull(
        &self,
        reference: &str,
        creds: Option<&crate::images::registry::Credentials>,
        progress: &tokio::sync::watch::Sender<crate::images::PullState>,
    ) -> Result<String, RuntimeError> {
        self.pull_image(reference, creds, progress).await
    }

    async fn mark_image_used(&self, name: &str) -> Result<(), RuntimeError> {
        self.touch_image(name).await
    }

    async fn list_images(&self) -> Result<Vec<super::LocalImage>, RuntimeError> {
        self.list_image_records().await
    }

    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        self.delete_image_record(name).await
    }

    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        // Under a lease: until the container record names the snapshot, nothing else keeps
        // containerd's garbage collector (run after any other deletion) from removing it.
        self.with_lease(|lease| async move { self.create_leased(c, &lease).await })
            .await
    }

    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        let id = c.id.as_str();
        let mounts: Vec<Mount> = rpc(
            "snapshot mounts",
            id,
            self.client.snapshots().mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_string(),
            })),
        )
        .await?
        .into_inner()
        .mounts;
        let terminal = c
            .spec
            .process()
            .as_ref()
            .is_some_and(|p| p.terminal() == Some(true));
        // The container's output goes to FIFOs the agent drains into its spool files
        // (crate::logs::capture); with a terminal the shim copies the console to stdout's.
        let (capture, log_path) = (self.capture.clone(), c.log_path.clone());
        let prepared = tokio::task::spawn_blocking(move || capture.prepare(&log_path, terminal))
            .await
            .map_err(|e| RuntimeError::Io {
                path: c.log_path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|e| RuntimeError::Io {
                path: c.log_path.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?;
        let stdout = prepared.stdio(crate::logs::Stream::Stdout);
        let stderr = prepared.stdio(crate::logs::Stream::Stderr);
        let stdin = if c.open_stdin {
            stdin_fifo(&c.log_path).await?
        } else {
            String::new()
        };
        let created = rpc(
            "create task",
            id,
            self.client.tasks().create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin,
                stdout,
                stderr,
                terminal,
                ..Default::default()
            })),
        )
        .await;
        match created {
            Ok(_) => {}
            Err(e) if e.code() == Some(Code::AlreadyExists) => {}
            Err(e) => return Err(e),
        }
        // The shim holds the FIFOs' write ends now: copying can start.
        self.capture.attach(prepared);
        rpc(
            "start",
            id,
            self.client.tasks().start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })),
        )
        .await?;
        Ok(())
    }

    async fn wait(&self, id: &str) -> Result<u32, RuntimeError> {
        let r = self
            .client
            .tasks()
            .wait(self.req(WaitRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|source| RuntimeError::Call {
                op: "wait",
                id: id.to_string(),
                source,
            })?;
        Ok(r.into_inner().exit_status)
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        let killed = rpc(
            "kill",
            id,
            self.client.tasks().kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            })),
        )
        .await;
        // NotFound: already exited, nothing to signal.
        ignore_missing(killed)
    }

    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        let got = rpc(
            "get task",
            id,
            self.client.tasks().get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })),
        )
        .await;
        match got {
            Ok(r) => {
                let p = r.into_inner().process.unwrap_or_default();
                Ok(container_state(p.status, p.exit_status))
            }
            Err(e) if e.is_not_found() => Ok(ContainerState::Missing),
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.delete_process(id).await?;
        ignore_missing(
            rpc(
                "delete container",
                id,
                self.client
                    .containers()
                    .delete(self.req(DeleteContainerRequest { id: id.to_string() })),
            )
            .await,
        )?;
        ignore_missing(self.remove_snapshot(id).await)
    }

    async fn init_pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let r = rpc(
            "get task",
            id,
            self.client.tasks().get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            })),
        )
        .await?;
        Ok(r.into_inner().process.unwrap_or_default().pid)
    }

    async fn image_users(
        &self,
        image: &ImageConfig,
    ) -> Result<super::user::ImageUsers, RuntimeError> {
        self.read_image_users(image).await
    }

    async fn restart(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        // The exited process goes; a new one starts from the same container and snapshot,
        // its output appended to the same spool files (after the old process's last bytes).
        self.delete_process(&c.id).await?;
        // The new process is set up as the first was (a terminal, stdin): from the spec
        // containerd holds for the container.
        let spec = self.container_spec(&c.id).await?;
        let spec = serde_json::from_value(spec).map_err(|source| RuntimeError::Spec {
            id: c.id.clone(),
            source,
        })?;
        let c = CreateContainer { spec, ..c.clone() };
        self.start(&c).await
    }

    async fn delete_process(&self, id: &str) -> Result<(), RuntimeError> {
        ignore_missing(
            rpc(
                "delete task",
                id,
                self.client.tasks().delete(self.req(DeleteTaskRequest {
                    container_id: id.to_string(),
                })),
            )
            .await,
        )
    }

    async fn list(&self, cluster: &str) -> Result<Vec<LabelledContainer>, RuntimeError> {
        // containerd's filter syntax: label keys with dots are quoted, values too.
        let filter =
            format!("labels.\"{CLUSTER_LABEL}\"==\"{cluster}\",labels.\"{TASK_ARN_LABEL}\"");
        let containers = rpc(
            "list containers",
            cluster,
            self.client
                .containers()
                .list(self.req(ListContainersRequest {
                    filters: vec![filter],
                })),
        )
        .await?
        .into_inner()
        .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            // One container containerd cannot answer for does not hide the others: its process
            // may still run, which is what UNKNOWN says.
            let state = match self.state(&c.id).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(container = %c.id, error = %e, "cannot get the state of a listed container");
                    ContainerState::Unknown
                }
            };
            out.push(LabelledContainer {
                id: c.id,
                labels: c.labels,
                state,
            });
        }
        Ok(out)
    }

    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecIo, RuntimeError> {
        self.exec_start(id, spec).await
    }

    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32, RuntimeError> {
        self.exec_wait_exit(id, exec_id).await
    }

    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.exec_signal(id, exec_id, signal).await
    }

    async fn exec_resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), RuntimeError> {
        self.exec_resize_pty(id, exec_id, width, height).await
    }

    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        self.exec_remove(id, exec_id).await
    }

    async fn pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        self.list_pids(id).await
    }

    async fn attach_logs(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        let (capture, log_path) = (self.capture.clone(), c.log_path.clone());
        tokio::task::spawn_blocking(move || capture.reattach(&log_path))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r.map_err(|e| std::io::Error::other(e.to_string())))
            .map_err(|source| RuntimeError::Io {
                path: c.log_path.display().to_string(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_process_status_is_not_missing() {
        assert_eq!(container_state(0, 0), ContainerState::Unknown);
        assert_eq!(container_state(1, 0), ContainerState::Created);
        assert_eq!(container_state(2, 0), ContainerState::Running);
        assert_eq!(container_state(3, 7), ContainerState::Stopped(7));
        assert_eq!(container_state(4, 0), ContainerState::Running);
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_that_never_answers_times_out_and_keeps_its_source() {
        let hung = rpc("kill", "c1", std::future::pending::<Result<(), Status>>()).await;
        let e = hung.unwrap_err();
        assert!(matches!(e, RuntimeError::Timeout { after, .. } if after == CALL_TIMEOUT));
        assert!(e.is_transient());
        let gone = rpc("kill", "c1", async {
            Err::<(), _>(Status::not_found("no task"))
        })
        .await;
        let e = gone.unwrap_err();
        assert!(e.is_not_found() && !e.is_transient());
        assert_eq!(e.message(), "no task");
        assert!(std::error::Error::source(&e).is_some());
    }
}
