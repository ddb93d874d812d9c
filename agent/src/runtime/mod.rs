//! The container runtime behind a narrow trait: what the task engine needs from containerd,
//! and nothing more, so the engine is unit-tested against a fake.

pub mod containerd;
pub mod exec;
pub mod image;
pub mod import;
pub mod options;
pub mod pull;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod user;

use async_trait::async_trait;

/// What the engine knows of an image once it is resolved and unpacked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The digest the reference resolves to: the index's for a multi-platform image, as
    /// Docker's RepoDigests and ECS's imageDigest show it.
    pub digest: String,
    /// The chain ID of the top layer: the snapshot containers are prepared from.
    pub chain_id: String,
    /// `Env` of the image config.
    pub env: Vec<String>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `WorkingDir`.
    pub working_dir: String,
    /// `User`.
    pub user: String,
    /// `StopSignal`.
    pub stop_signal: String,
}

/// How an image came into the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageSource {
    /// Pulled from a registry by this agent.
    Pull,
    /// Loaded by hand (`berth-agent image load`).
    Load,
    /// Put there by something else (`ctr images pull`, an older agent).
    #[default]
    Other,
}

impl ImageSource {
    /// The `berth.io/source` label's value.
    pub fn as_str(self) -> &'static str {
        match self {
            ImageSource::Pull => "pull",
            ImageSource::Load => "load",
            ImageSource::Other => "other",
        }
    }
}

/// An image record of the local store.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalImage {
    /// The normalised name.
    pub name: String,
    /// The digest its name points at (an index's for a multi-platform image).
    pub digest: String,
    /// Where it came from (label `berth.io/source`).
    pub source: ImageSource,
    /// This agent's last pull of it (label `berth.io/pulled-at`).
    pub pulled_at: Option<std::time::SystemTime>,
    /// The last time a task used it (label `berth.io/last-used`).
    pub last_used: Option<std::time::SystemTime>,
    /// When the record was made.
    pub created_at: Option<std::time::SystemTime>,
    /// The size of its target (what the record points at), bytes.
    pub size: i64,
}

/// Everything needed to create one container.
#[derive(Debug, Clone)]
pub struct CreateContainer {
    /// The containerd container ID.
    pub id: String,
    /// The resolved image.
    pub image: ImageConfig,
    /// The OCI runtime spec.
    pub spec: oci_spec::runtime::Spec,
    /// containerd labels identifying cluster, task and container.
    pub labels: std::collections::HashMap<String, String>,
    /// The container's log path (`logs/<task>/<container>.log`): its output FIFOs and spool
    /// files are named from it ([`crate::logs::ContainerLogPaths`]).
    pub log_path: std::path::PathBuf,
    /// interactive: the process's stdin is kept open (a FIFO beside the log nobody writes to,
    /// so it never reads end-of-file), as Docker's OpenStdin.
    pub open_stdin: bool,
}

/// A container's state as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// No such container (or no task for it): containerd answered NotFound.
    Missing,
    /// Created, not started.
    Created,
    /// Running (or paused).
    Running,
    /// Exited with this status, as containerd reported it.
    Stopped(u32),
    /// containerd answered but does not know the process's state (its UNKNOWN status, e.g. the
    /// shim is not answering): the process may still run, so this is never taken as gone.
    Unknown,
}

/// The containerd label naming a container's cluster.
pub const CLUSTER_LABEL: &str = "com.amazonaws.ecs.cluster";
/// The containerd label naming a container's task ARN.
pub const TASK_ARN_LABEL: &str = "com.amazonaws.ecs.task-arn";
/// The containerd label naming a container within its task.
pub const CONTAINER_NAME_LABEL: &str = "com.amazonaws.ecs.container-name";
/// The containerd label naming a container's task definition family.
pub const FAMILY_LABEL: &str = "com.amazonaws.ecs.task-definition-family";
/// The containerd label naming a container's task definition revision.
pub const REVISION_LABEL: &str = "com.amazonaws.ecs.task-definition-version";

/// A container found in the runtime carrying Berth's labels.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledContainer {
    /// The containerd container ID.
    pub id: String,
    /// Its labels (cluster, task ARN, container name, ...).
    pub labels: std::collections::HashMap<String, String>,
    /// Its state now.
    pub state: ContainerState,
}

/// A process to run in a running container (containerd exec): a health check or an
/// ExecuteCommand session (issue 9). It runs with the container's own process settings (user,
/// environment, working directory, capabilities) and `args` in place of its command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ExecSpec {
    /// The exec ID, unique within the container.
    pub exec_id: String,
    /// The command and its arguments.
    pub args: Vec<String>,
    /// `NAME=value` entries added to (or replacing in) the container's environment.
    pub env: Vec<String>,
    /// Run it on a pseudo-terminal (stdout and stderr then arrive together on `stdout`).
    pub terminal: bool,
    /// Give it a stdin to write to.
    pub stdin: bool,
}

/// The streams of a started exec process. Dropping `stdin` closes the process's stdin.
pub struct ExecIo {
    /// Its stdin, when asked for.
    pub stdin: Option<std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>>,
    /// Its stdout (with a terminal: everything it writes).
    pub stdout: std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>,
    /// Its stderr; `None` with a terminal.
    pub stderr: Option<std::pin::Pin<Box<dyn tokio::io::AsyncRead + Send>>>,
}

impl std::fmt::Debug for ExecIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecIo")
            .field("stdin", &self.stdin.is_some())
            .field("stderr", &self.stderr.is_some())
            .finish()
    }
}

/// A runtime failure, with the container or image it concerns and its source.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The image is not in the local store.
    #[error("image {0} not found")]
    ImageNotFound(String),
    /// The image exists but cannot be used.
    #[error("image {image}: {message}")]
    Image {
        /// The reference.
        image: String,
        /// What is wrong.
        message: String,
    },
    /// containerd answered a call with an error.
    #[error("{op} {id}: {}", .source.message())]
    Call {
        /// The operation.
        op: &'static str,
        /// The container ID (or image, digest, snapshot).
        id: String,
        /// containerd's answer, with its code (NotFound, Unavailable, …).
        #[source]
        source: tonic::Status,
    },
    /// containerd did not answer a call in time.
    #[error("{op} {id}: no answer within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// The container ID (or image).
        id: String,
        /// How long the call was given.
        after: std::time::Duration,
    },
    /// Connecting to containerd's socket failed.
    #[error("connect {socket}: {source}")]
    Connect {
        /// The socket.
        socket: String,
        /// The transport's error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The runtime spec could not be encoded.
    #[error("encode spec {id}: {source}")]
    Spec {
        /// The container ID.
        id: String,
        /// The encoder's error.
        #[source]
        source: serde_json::Error,
    },
    /// Reading or creating a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A registry pull failed (issue 11): the message carries the registry's own words.
    #[error("{message}")]
    Pull {
        /// The image.
        image: String,
        /// What failed, as the registry said it.
        message: String,
    },
    /// This runtime does not do the operation.
    #[error("{op}: not supported by this runtime")]
    Unsupported {
        /// The operation.
        op: &'static str,
    },
    /// An image archive is not what it should be.
    #[error("{path}: {message}")]
    Archive {
        /// The archive.
        path: String,
        /// What is wrong.
        message: String,
    },
}

impl RuntimeError {
    /// containerd's own message, without our context (what ECS shows after the error name).
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Call { source, .. } => source.message().to_string(),
            other => other.to_string(),
        }
    }

    /// containerd's gRPC code, when it answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            RuntimeError::Call { source, .. } => Some(source.code()),
            _ => None,
        }
    }

    /// containerd answered that the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(tonic::Code::NotFound)
    }

    /// The call may succeed if repeated: containerd unreachable, restarting or slow.
    pub fn is_transient(&self) -> bool {
        use tonic::Code::*;
        match self {
            RuntimeError::Timeout { .. } | RuntimeError::Connect { .. } => true,
            RuntimeError::Call { source, .. } => matches!(
                source.code(),
                Unavailable | DeadlineExceeded | Aborted | Cancelled | ResourceExhausted | Unknown
            ),
            _ => false,
        }
    }
}

/// The container runtime.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Resolves an image from the local store, unpacking it if needed.
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError>;
    /// What the local store has of an image: None when it has no record of it. By default an
    /// image that resolves counts as loaded by hand.
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError> {
        match self.image(reference).await {
            Ok(c) => Ok(Some(LocalImage {
                name: c.name,
                digest: c.digest,
                source: ImageSource::Load,
                ..Default::default()
            })),
            Err(RuntimeError::ImageNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Pulls an image from its registry into the local store and unpacks it (issue 11),
    /// reporting how far it got in `progress`. Returns the image's name.
    async fn pull(
        &self,
        reference: &str,
        creds: Option<&crate::images::registry::Credentials>,
        progress: &tokio::sync::watch::Sender<crate::images::PullState>,
    ) -> Result<String, RuntimeError> {
        let _ = (reference, creds, progress);
        Err(RuntimeError::Unsupported { op: "pull" })
    }
    /// Notes that a task used the image now (the cleanup's least-recently-used order).
    async fn mark_image_used(&self, name: &str) -> Result<(), RuntimeError> {
        let _ = name;
        Ok(())
    }
    /// Every image of the store.
    async fn list_images(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        Err(RuntimeError::Unsupported { op: "list images" })
    }
    /// Removes an image record (containerd's GC frees what nothing else holds).
    async fn remove_image(&self, name: &str) -> Result<(), RuntimeError> {
        let _ = name;
        Err(RuntimeError::Unsupported { op: "remove image" })
    }
    /// Creates the container and its rootfs snapshot (Docker's "create").
    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError>;
    /// Creates the container's task (runc create) and starts it (Docker's "start").
    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError>;
    /// Waits for the container to exit; returns its exit status. A long poll (no timeout): the
    /// caller cancels it by dropping the future and retries it after an error.
    async fn wait(&self, id: &str) -> Result<u32, RuntimeError>;
    /// Sends a signal to the container's init process.
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError>;
    /// The container's current state.
    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError>;
    /// Removes the container's task, container and snapshot; succeeds when already gone.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;
    /// Every container labelled with `cluster` (and a task ARN), with its state.
    async fn list(&self, cluster: &str) -> Result<Vec<LabelledContainer>, RuntimeError>;

    // ---- Issue 9 ----

    /// Starts a process in the running container `id` (containerd exec: create and start);
    /// returns its streams. The caller waits for it with [`Runtime::exec_wait`] and removes it
    /// with [`Runtime::exec_delete`].
    async fn exec(&self, id: &str, spec: &ExecSpec) -> Result<ExecIo, RuntimeError> {
        let _ = (id, spec);
        Err(RuntimeError::Unsupported { op: "exec" })
    }
    /// Waits for an exec process to exit; returns its exit status. A long poll, as `wait`.
    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32, RuntimeError> {
        let _ = (id, exec_id);
        Err(RuntimeError::Unsupported { op: "exec wait" })
    }
    /// Sends a signal to an exec process.
    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<(), RuntimeError> {
        let _ = (id, exec_id, signal);
        Err(RuntimeError::Unsupported { op: "exec kill" })
    }
    /// Resizes an exec process's terminal.
    async fn exec_resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<(), RuntimeError> {
        let _ = (id, exec_id, width, height);
        Err(RuntimeError::Unsupported { op: "exec resize" })
    }
    /// Removes an exited exec process; succeeds when already gone.
    async fn exec_delete(&self, id: &str, exec_id: &str) -> Result<(), RuntimeError> {
        let _ = (id, exec_id);
        Err(RuntimeError::Unsupported { op: "exec delete" })
    }
    /// The host PIDs of every process in the container (init, execs and their children).
    async fn pids(&self, id: &str) -> Result<Vec<u32>, RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported { op: "pids" })
    }
    /// Starts an exited container again in place (restartPolicy): its exited process is
    /// removed and a new one started from the same container and rootfs.
    async fn restart(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        let _ = c;
        Err(RuntimeError::Unsupported { op: "restart" })
    }
    /// Removes an exited container's process (containerd task, its shim) and keeps the
    /// container and its snapshot, for the removal after the cleanup wait.
    async fn delete_process(&self, id: &str) -> Result<(), RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported {
            op: "delete process",
        })
    }
    /// The host PID of the container's init process (pidMode/ipcMode task: later containers
    /// join its namespaces).
    async fn init_pid(&self, id: &str) -> Result<u32, RuntimeError> {
        let _ = id;
        Err(RuntimeError::Unsupported { op: "init pid" })
    }
    /// Captures the output of a container found running (or exited, its shim still holding
    /// unread output) after the agent restarted: its FIFOs are read again from where its
    /// spool files end (issue 10).
    async fn attach_logs(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        let _ = c;
        Ok(())
    }
    /// The image's /etc/passwd and /etc/group, for user names.
    async fn image_users(&self, image: &ImageConfig) -> Result<user::ImageUsers, RuntimeError> {
        let _ = image;
        Err(RuntimeError::Unsupported { op: "image users" })
    }
}
