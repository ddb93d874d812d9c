//! The container runtime behind a narrow trait: what the task engine needs from containerd,
//! and nothing more, so the engine is unit-tested against a fake.

pub mod containerd;
pub mod image;
pub mod seccomp;
pub mod spec;

use async_trait::async_trait;

/// What the engine knows of an image once it is resolved and unpacked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageConfig {
    /// The normalised reference (`docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest digest.
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
    /// Where the shim appends the container's stdout and stderr.
    pub log_path: std::path::PathBuf,
}

/// A container's state as the runtime sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    /// No such container (or no task for it).
    Missing,
    /// Created, not started.
    Created,
    /// Running (or paused).
    Running,
    /// Exited with this status.
    Stopped(u32),
}

/// A runtime failure, with the container or image it concerns.
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
    /// A runtime call failed.
    #[error("{op} {id}: {message}")]
    Call {
        /// The operation.
        op: &'static str,
        /// The container ID (or image).
        id: String,
        /// containerd's message.
        message: String,
    },
    /// Reading an archive or file failed.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

impl RuntimeError {
    /// containerd's own message, without our context (what ECS shows after the error name).
    pub fn message(&self) -> String {
        match self {
            RuntimeError::Call { message, .. } => message.clone(),
            other => other.to_string(),
        }
    }
}

/// The container runtime.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Resolves an image from the local store, unpacking it if needed.
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError>;
    /// Creates the container and its rootfs snapshot (Docker's "create").
    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError>;
    /// Creates the container's task (runc create) and starts it (Docker's "start").
    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError>;
    /// Waits for the container to exit; returns its exit status.
    async fn wait(&self, id: &str) -> Result<u32, RuntimeError>;
    /// Sends a signal to the container's init process.
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError>;
    /// The container's current state.
    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError>;
    /// Removes the container's task, container and snapshot; succeeds when already gone.
    async fn delete(&self, id: &str) -> Result<(), RuntimeError>;
}
