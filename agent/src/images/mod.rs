//! Images (issue 11): pulling from OCI registries ([`registry`]), ECS's pull behaviours, one
//! pull for many tasks, progress, and image cleanup ([`cleanup`]).
//!
//! [`Images::ensure`] is what a task's start asks for each container: it decides from the pull
//! behaviour and what the local store holds whether to pull, joins a pull of the same image
//! already under way rather than starting a second, falls back to the cached image where the
//! behaviour allows it, and resolves the image's config. The pull itself is the runtime's
//! ([`crate::runtime::Runtime::pull`]: containerd's content, snapshot and diff services).

pub mod auth;
pub mod cleanup;
mod http;
pub mod reference;
pub mod registry;

use crate::runtime::{ImageConfig, ImageSource, LocalImage, Runtime, RuntimeError};
use async_trait::async_trait;
use registry::Credentials;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tracing::{info, warn};

/// ECS_IMAGE_PULL_BEHAVIOR.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullBehavior {
    /// Pull; when the pull fails, run the cached image if there is one.
    #[default]
    Default,
    /// Pull; a failed pull fails the task.
    Always,
    /// Pull only if this agent never pulled the image (or it was loaded by hand).
    Once,
    /// Pull only if the image is absent.
    PreferCached,
}

impl std::str::FromStr for PullBehavior {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "default" => Ok(Self::Default),
            "always" => Ok(Self::Always),
            "once" => Ok(Self::Once),
            "prefer-cached" => Ok(Self::PreferCached),
            other => Err(format!(
                "'{other}' is not a pull behaviour (default, always, once, prefer-cached)"
            )),
        }
    }
}

/// Where a pull stands (ContainerPullProgress's phases).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPhase {
    /// Reading the manifest.
    #[default]
    Resolving,
    /// Fetching layers.
    Downloading,
    /// Applying layers to snapshots.
    Unpacking,
    /// Pulled.
    Done,
    /// Not pulled: the local image is used.
    Cached,
    /// The pull failed.
    Failed,
}

impl PullPhase {
    /// The wire form.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPhase::Resolving => "RESOLVING",
            PullPhase::Downloading => "DOWNLOADING",
            PullPhase::Unpacking => "UNPACKING",
            PullPhase::Done => "DONE",
            PullPhase::Cached => "CACHED",
            PullPhase::Failed => "FAILED",
        }
    }
}

/// How far a pull got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullState {
    pub phase: PullPhase,
    pub layers_done: u32,
    pub layers_total: u32,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What [`Images::ensure`] needs of the runtime: the narrow part of [`Runtime`] about images.
#[async_trait]
pub trait ImageStore: Send + Sync + 'static {
    /// See [`Runtime::local_image`].
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError>;
    /// See [`Runtime::pull`].
    async fn pull(
        &self,
        reference: &str,
        creds: Option<&Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<String, RuntimeError>;
    /// See [`Runtime::image`].
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError>;
    /// See [`Runtime::mark_image_used`].
    async fn mark_image_used(&self, name: &str) -> Result<(), RuntimeError>;
}

#[async_trait]
impl<R: Runtime + ?Sized> ImageStore for R {
    async fn local_image(&self, reference: &str) -> Result<Option<LocalImage>, RuntimeError> {
        Runtime::local_image(self, reference).await
    }
    async fn pull(
        &self,
        reference: &str,
        creds: Option<&Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<String, RuntimeError> {
        Runtime::pull(self, reference, creds, progress).await
    }
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        Runtime::image(self, reference).await
    }
    async fn mark_image_used(&self, name: &str) -> Result<(), RuntimeError> {
        Runtime::mark_image_used(self, name).await
    }
}

/// What [`Images::ensure`] gives back.
#[derive(Debug, Clone)]
pub struct Ensured {
    /// The resolved image.
    pub image: ImageConfig,
    /// True when a pull ran for it (this task's or one it joined).
    pub pulled: bool,
    /// Why the cached image was used after a failed pull (behaviour `default`).
    pub fell_back: Option<String>,
}

/// A pull shared by every task that wants the same image meanwhile.
type SharedPull =
    futures::future::Shared<futures::future::BoxFuture<'static, Result<String, Arc<RuntimeError>>>>;

/// Pull policy and the pulls under way.
#[derive(Debug)]
pub struct Images {
    behavior: PullBehavior,
    pull_timeout: Duration,
    /// Registries pulls may reach (`HOST` for any port, or `HOST:PORT`); empty: any.
    allowed: Vec<String>,
    inflight: Arc<Mutex<HashMap<String, Inflight>>>,
}

struct Inflight {
    pull: SharedPull,
    progress: watch::Receiver<PullState>,
}

impl std::fmt::Debug for Inflight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Inflight({:?})", *self.progress.borrow())
    }
}

impl Default for Images {
    fn default() -> Self {
        Self::new(PullBehavior::Default, Duration::from_secs(7200))
    }
}

impl Images {
    /// Pulls by `behavior`, each pull bounded by `pull_timeout` (ECS_IMAGE_PULL_TIMEOUT).
    pub fn new(behavior: PullBehavior, pull_timeout: Duration) -> Self {
        Self {
            behavior,
            pull_timeout,
            allowed: Vec::new(),
            inflight: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Pulls reach only these registries (`HOST` for any port, or `HOST:PORT`; empty: any):
    /// a host that must never reach out (air-gapped, or a test) says where it may.
    pub fn with_allowed_registries(mut self, allowed: Vec<String>) -> Self {
        self.allowed = allowed;
        self
    }

    /// Why `reference` may not be pulled, if it may not.
    fn refused(&self, reference: &str) -> Option<String> {
        if self.allowed.is_empty() {
            return None;
        }
        let registry = match registry::Reference::parse(reference) {
            Ok(r) => r.registry,
            Err(e) => return Some(e.to_string()),
        };
        let host = registry
            .rsplit_once(':')
            .map_or(registry.as_str(), |(h, _)| h);
        let ok = self
            .allowed
            .iter()
            .any(|a| *a == registry || (!a.contains(':') && a == host));
        (!ok).then(|| {
            format!(
                "pull {reference}: registry {registry} is not one this agent may pull from (--allowed-registry {})",
                self.allowed.join(",")
            )
        })
    }

    /// The behaviour in force.
    pub fn behavior(&self) -> PullBehavior {
        self.behavior
    }

    /// The pull timeout.
    pub fn pull_timeout(&self) -> Duration {
        self.pull_timeout
    }

    /// The image `reference` names, pulled first if the behaviour says so. `progress` is told
    /// how the pull goes (a joined pull's progress too). A failed pull is
    /// `RuntimeError::Pull` (or the runtime's own error) unless the cached image may be used.
    pub async fn ensure<R: ImageStore + ?Sized>(
        &self,
        runtime: Arc<R>,
        reference: &str,
        creds: Option<Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<Ensured, RuntimeError> {
        let local = runtime.local_image(reference).await?;
        let pull = match (&local, self.behavior) {
            (_, PullBehavior::Always) => true,
            (None, _) => true,
            // Loaded by hand: present for every behaviour but `always`.
            (Some(l), _) if l.source == ImageSource::Load => false,
            (Some(_), PullBehavior::PreferCached) => false,
            (Some(l), PullBehavior::Once) => l.source != ImageSource::Pull,
            (Some(_), PullBehavior::Default) => true,
        };
        let mut fell_back = None;
        if pull {
            let pulled = match self.refused(reference) {
                Some(why) => Err(Arc::new(RuntimeError::Pull {
                    image: reference.to_string(),
                    message: why,
                })),
                None => {
                    self.join_or_pull(runtime.clone(), reference, creds, progress)
                        .await
                }
            };
            match pulled {
                Ok(_) => {}
                Err(e) => {
                    let may_fall_back = self.behavior != PullBehavior::Always && local.is_some();
                    if !may_fall_back {
                        progress.send_modify(|p| p.phase = PullPhase::Failed);
                        return Err(unshare(e));
                    }
                    warn!(image = %reference, error = %e, "pull failed; using the cached image");
                    fell_back = Some(e.to_string());
                    progress.send_modify(|p| p.phase = PullPhase::Cached);
                }
            }
        } else {
            progress.send_modify(|p| p.phase = PullPhase::Cached);
        }
        let image = runtime.image(reference).await?;
        // Off the start path: a metadata write in containerd the task need not wait for.
        let (rt, name) = (runtime.clone(), image.name.clone());
        tokio::spawn(async move {
            if let Err(e) = rt.mark_image_used(&name).await {
                warn!(image = %name, error = %e, "cannot note the image's use");
            }
        });
        Ok(Ensured {
            image,
            pulled: pull && fell_back.is_none(),
            fell_back,
        })
    }

    /// Joins the pull of `reference` under way, or starts one. The pull runs on its own task:
    /// it finishes (and its content is kept) even if every task that wanted it stops meanwhile.
    async fn join_or_pull<R: ImageStore + ?Sized>(
        &self,
        runtime: Arc<R>,
        reference: &str,
        creds: Option<Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<String, Arc<RuntimeError>> {
        let key = crate::runtime::image::normalize(reference);
        let (pull, mut rx) = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&key) {
                Some(f) => {
                    info!(image = %key, "joining the pull under way");
                    (f.pull.clone(), f.progress.clone())
                }
                None => {
                    let (tx, rx) = watch::channel(PullState::default());
                    let reference = reference.to_string();
                    let after = self.pull_timeout;
                    let rt = runtime.clone();
                    let (inflight, done_key) = (self.inflight.clone(), key.clone());
                    let handle = tokio::spawn(async move {
                        let out = match tokio::time::timeout(
                            after,
                            rt.pull(&reference, creds.as_ref(), &tx),
                        )
                        .await
                        {
                            Ok(r) => r,
                            Err(_) => Err(RuntimeError::Pull {
                                image: reference.clone(),
                                message: format!(
                                    "pull {reference}: not done within the pull timeout ({} s)",
                                    after.as_secs()
                                ),
                            }),
                        };
                        // The next task to want the image starts a new pull.
                        let mut map = inflight.lock().unwrap_or_else(|p| p.into_inner());
                        if map
                            .get(&done_key)
                            .is_some_and(|f| f.progress.same_channel(&tx.subscribe()))
                        {
                            map.remove(&done_key);
                        }
                        out
                    });
                    let fut: futures::future::BoxFuture<'static, _> = Box::pin(async move {
                        match handle.await {
                            Ok(r) => r.map_err(Arc::new),
                            Err(e) => Err(Arc::new(RuntimeError::Pull {
                                image: String::new(),
                                message: format!("the pull ended abnormally: {e}"),
                            })),
                        }
                    });
                    use futures::FutureExt;
                    let shared = fut.shared();
                    map.insert(
                        key.clone(),
                        Inflight {
                            pull: shared.clone(),
                            progress: rx.clone(),
                        },
                    );
                    (shared, rx)
                }
            }
        };
        // Relay the shared pull's progress to this task's until it ends.
        let relay = async {
            loop {
                let now = *rx.borrow_and_update();
                progress.send_replace(now);
                if rx.changed().await.is_err() {
                    // The pull's task is gone: its result is ready.
                    std::future::pending::<()>().await;
                }
            }
        };
        let out = tokio::select! {
            r = pull => r,
            _ = relay => unreachable!("the relay never ends"),
        };
        progress.send_replace(*rx.borrow());
        out
    }
}

/// The error of a shared pull as the task's own.
fn unshare(e: Arc<RuntimeError>) -> RuntimeError {
    match Arc::try_unwrap(e) {
        Ok(e) => e,
        Err(shared) => match &*shared {
            RuntimeError::Pull { image, message } => RuntimeError::Pull {
                image: image.clone(),
                message: message.clone(),
            },
            other => RuntimeError::Pull {
                image: String::new(),
                message: other.to_string(),
            },
        },
    }
}

#[cfg(test)]
mod tests;
