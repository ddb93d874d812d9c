//! Registry pulls into containerd (issue 11). containerd 1.6 has no transfer service, so the
//! agent does what `ctr images pull` does on the client side: it reads the manifest (an
//! index resolved to this host's platform), streams each blob from the registry into the
//! content store under a lease (three at a time), writes the config, manifest and index with
//! the gc labels that keep the image's content and snapshots alive, unpacks the layers into
//! snapshots named by chain ID, and only then creates or updates the image record.
//!
//! Guarantees, with the tests that prove them:
//! - a blob is written under the ingest ref `berth-pull-<digest>` and committed with its
//!   expected digest and size: containerd refuses content that does not match, and such an
//!   ingest is aborted so the next pull starts it again (the digest checks of
//!   `images::registry::tests::manifest_digest_is_checked`; every pull in
//!   `tests/tests/images.rs` commits through it);
//! - an interrupted pull (an agent killed mid-layer) leaves no image record and no committed
//!   half blob, and the next pull succeeds, continuing the ingest where containerd has it (a
//!   Range request) or restarting it; the lease that held the pull's content expires
//!   (`images::an_agent_killed_mid_pull_leaves_containerd_consistent`; that bytes of the
//!   ingest are reused is not proven by a test).

use super::containerd::{rpc, rpc_for, Containerd, CALL_TIMEOUT, TRANSFER_TIMEOUT};
use super::image::{chain_ids, pick_manifest, INDEX_TYPES};
use super::{ImageSource, LocalImage, RuntimeError};
use crate::images::registry::{Credentials, Reference, RegistryClient};
use crate::images::{PullPhase, PullState};
use containerd_client::services::v1::*;
use containerd_client::types::Descriptor;
use futures::StreamExt;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tracing::{debug, info, warn};

/// Blobs fetched at once (Docker's and ctr's default).
const CONCURRENT_DOWNLOADS: usize = 3;
/// Bytes per content write message.
const WRITE_CHUNK: usize = 1 << 20;
/// How often a pull under way logs where its layers stand.
const LOG_EVERY: Duration = Duration::from_secs(5);

pub(super) const SOURCE_LABEL: &str = "berth.io/source";
pub(super) const PULLED_AT_LABEL: &str = "berth.io/pulled-at";
pub(super) const LAST_USED_LABEL: &str = "berth.io/last-used";

fn pull_err(image: &str, message: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Pull {
        image: image.to_string(),
        message: message.to_string(),
    }
}

/// How long a pull's lease lasts should the agent die meanwhile: past any pull timeout one
/// would set, so content is never collected under a pull still running; a dead pull's content
/// waits that long for the next pull to resume it.
const PULL_LEASE: Duration = Duration::from_secs(24 * 3600);

/// Per-digest locks (see `Containerd::blob_locks`).
pub type BlobLocks = Arc<std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// A blob to fetch: its descriptor as the manifest gives it.
#[derive(Debug, Clone)]
struct Blob {
    media_type: String,
    digest: String,
    size: u64,
}

impl Blob {
    fn of(v: &Value) -> Option<Self> {
        Some(Self {
            media_type: v["mediaType"].as_str().unwrap_or_default().to_string(),
            digest: v["digest"].as_str()?.to_string(),
            size: v["size"].as_u64()?,
        })
    }
}

/// A layer's bytes so far, for the progress and the log.
struct LayerProgress {
    digest: String,
    size: u64,
    done: AtomicU64,
}

impl Containerd {
    /// Pulls `reference` (see the module's doc). Returns the image's name.
    pub(super) async fn pull_image(
        &self,
        reference: &str,
        creds: Option<&Credentials>,
        progress: &watch::Sender<PullState>,
    ) -> Result<String, RuntimeError> {
        let registry = self.registry.as_ref().ok_or_else(|| {
            pull_err(
                reference,
                format!("pull {reference}: this agent is not set up to pull from registries"),
            )
        })?;
        let r = Reference::parse(reference).map_err(|e| pull_err(reference, e))?;
        let name = r.name();
        progress.send_replace(PullState::default());
        info!(image = %name, "pulling");
        let top = registry
            .manifest(&r, creds)
            .await
            .map_err(|e| pull_err(&name, e))?;
        let mut index = None;
        let manifest_fetched = if INDEX_TYPES.contains(&top.media_type.as_str()) {
            let idx: Value = serde_json::from_slice(&top.bytes)
                .map_err(|e| pull_err(&name, format!("pull {name}: index: {e}")))?;
            let picked = pick_manifest(&idx).ok_or_else(|| {
                pull_err(
                    &name,
                    format!(
                        "pull {name}: no matching manifest for linux/{} in the manifest list entries",
                        super::image::host_architecture()
                    ),
                )
            })?;
            let digest = picked["digest"].as_str().unwrap_or_default().to_string();
            let m = registry
                .manifest_by_digest(&r, &digest, creds)
                .await
                .map_err(|e| pull_err(&name, e))?;
            index = Some((top.clone(), digest));
            m
        } else {
            top.clone()
        };
        let manifest: Value = serde_json::from_slice(&manifest_fetched.bytes)
            .map_err(|e| pull_err(&name, format!("pull {name}: manifest: {e}")))?;
        let config = Blob::of(&manifest["config"])
            .ok_or_else(|| pull_err(&name, format!("pull {name}: the manifest has no config")))?;
        let layers: Vec<Blob> = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| {
                Blob::of(l).ok_or_else(|| {
                    pull_err(&name, format!("pull {name}: a layer has no digest or size"))
                })
            })
            .collect::<Result<_, _>>()?;
        if layers.is_empty() {
            return Err(pull_err(
                &name,
                format!("pull {name}: the image has no layers"),
            ));
        }
        let layer_progress: Vec<Arc<LayerProgress>> = layers
            .iter()
            .map(|l| {
                Arc::new(LayerProgress {
                    digest: l.digest.clone(),
                    size: l.size,
                    done: AtomicU64::new(0),
                })
            })
            .collect();
        progress.send_replace(PullState {
            phase: PullPhase::Downloading,
            layers_done: 0,
            layers_total: layers.len() as u32,
            bytes_done: 0,
            bytes_total: layers.iter().map(|l| l.size).sum(),
        });
        let name_ref = &name;
        let r_ref = &r;
        let top_ref = &top;
        let fetched = self
            .with_lease_for(PULL_LEASE, |lease| async move {
                // The config first (small): its diff_ids name the snapshots.
                let config_bytes = self
                    .fetch_small(registry, r_ref, &config, creds, name_ref)
                    .await?;
                let config_json: Value = serde_json::from_slice(&config_bytes)
                    .map_err(|e| pull_err(name_ref, format!("pull {name_ref}: config: {e}")))?;
                let diff_ids: Vec<String> = config_json["rootfs"]["diff_ids"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_str().map(String::from))
                    .collect();
                if diff_ids.len() != layers.len() {
                    return Err(pull_err(
                        name_ref,
                        format!(
                            "pull {name_ref}: the config names {} layers and the manifest {}",
                            diff_ids.len(),
                            layers.len()
                        ),
                    ));
                }
                let downloads = self.download_layers(
                    registry,
                    r_ref,
                    &layers,
                    &layer_progress,
                    creds,
                    &lease,
                    progress,
                    name_ref,
                );
                downloads.await?;
                let top_chain = chain_ids(&diff_ids).last().cloned().unwrap_or_default();
                let mut config_labels = HashMap::new();
                config_labels.insert(
                    format!(
                        "containerd.io/gc.ref.snapshot.{}",
                        super::containerd::SNAPSHOTTER
                    ),
                    top_chain,
                );
                self.put_blob(&config, &config_bytes, config_labels, &lease)
                    .await?;
                let mut manifest_labels = HashMap::new();
                manifest_labels.insert(
                    "containerd.io/gc.ref.content.config".to_string(),
                    config.digest.clone(),
                );
                for (i, l) in layers.iter().enumerate() {
                    manifest_labels.insert(
                        format!("containerd.io/gc.ref.content.l.{i}"),
                        l.digest.clone(),
                    );
                }
                let manifest_blob = Blob {
                    media_type: manifest_fetched.media_type.clone(),
                    digest: manifest_fetched.digest.clone(),
                    size: manifest_fetched.bytes.len() as u64,
                };
                self.put_blob(
                    &manifest_blob,
                    &manifest_fetched.bytes,
                    manifest_labels,
                    &lease,
                )
                .await?;
                if let Some((idx, picked)) = &index {
                    let mut labels = HashMap::new();
                    labels.insert(
                        "containerd.io/gc.ref.content.m.0".to_string(),
                        picked.clone(),
                    );
                    let idx_blob = Blob {
                        media_type: idx.media_type.clone(),
                        digest: idx.digest.clone(),
                        size: idx.bytes.len() as u64,
                    };
                    self.put_blob(&idx_blob, &idx.bytes, labels, &lease).await?;
                }
                progress.send_modify(|p| p.phase = PullPhase::Unpacking);
                debug!(image = %name_ref, "unpacking");
                self.unpack(&manifest, &diff_ids, &lease).await?;
                self.put_image_record(name_ref, top_ref, ImageSource::Pull)
                    .await
            })
            .await;
        match fetched {
            Ok(()) => {
                progress.send_modify(|p| {
                    p.phase = PullPhase::Done;
                    p.layers_done = p.layers_total;
                    p.bytes_done = p.bytes_total;
                });
                info!(image = %name, digest = %top.digest, "pulled");
                Ok(name)
            }
            Err(e) => {
                progress.send_modify(|p| p.phase = PullPhase::Failed);
                Err(e)
            }
        }
    }

    /// Fetches every layer into the content store, [`CONCURRENT_DOWNLOADS`] at a time, and
    /// logs where they stand every [`LOG_EVERY`] while they come.
    #[allow(clippy::too_many_arguments)]
    async fn download_layers(
        &self,
        registry: &RegistryClient,
        r: &Reference,
        layers: &[Blob],
        layer_progress: &[Arc<LayerProgress>],
        creds: Option<&Credentials>,
        lease: &str,
        progress: &watch::Sender<PullState>,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let fetches = futures::stream::iter(0..layers.len())
            .map(|i| async move {
                let (l, lp) = (&layers[i], &layer_progress[i]);
                self.fetch_blob(registry, r, l, lp, creds, lease, progress, name)
                    .await?;
                progress.send_modify(|p| p.layers_done += 1);
                info!(image = %name, layer = %l.digest, bytes = l.size, "layer fetched");
                Ok::<(), RuntimeError>(())
            })
            .buffer_unordered(CONCURRENT_DOWNLOADS);
        let mut fetches = std::pin::pin!(fetches);
        let mut tick = tokio::time::interval(LOG_EVERY);
        tick.tick().await;
        loop {
            tokio::select! {
                next = fetches.next() => match next {
                    Some(r) => r?,
                    None => return Ok(()),
                },
                _ = tick.tick() => {
                    for lp in layer_progress {
                        let done = lp.done.load(Ordering::Relaxed);
                        if done > 0 && done < lp.size {
                            info!(
                                image = %name,
                                layer = %lp.digest,
                                "downloading: {:.1} of {:.1} MB",
                                done as f64 / 1e6,
                                lp.size as f64 / 1e6
                            );
                        }
                    }
                }
            }
        }
    }

    /// A small blob (a config) from the registry, whole, checked against its digest.
    async fn fetch_small(
        &self,
        registry: &RegistryClient,
        r: &Reference,
        blob: &Blob,
        creds: Option<&Credentials>,
        name: &str,
    ) -> Result<Vec<u8>, RuntimeError> {
        let mut b = registry
            .blob(r, &blob.digest, 0, creds)
            .await
            .map_err(|e| pull_err(name, e))?;
        // The size is the registry's word: the buffer grows as bytes come, from at most 1 MiB.
        let mut out = Vec::with_capacity(blob.size.min(1 << 20) as usize);
        while let Some(chunk) = b.stream.next().await {
            out.extend_from_slice(&chunk.map_err(|e| pull_err(name, e))?);
            if out.len() as u64 > blob.size {
                break;
            }
        }
        let got = super::image::digest_of(&out);
        if got != blob.digest || out.len() as u64 != blob.size {
            return Err(pull_err(
                name,
                format!(
                    "pull {name}: blob {} arrived as {got} ({} bytes of {})",
                    blob.digest,
                    out.len(),
                    blob.size
                ),
            ));
        }
        Ok(out)
    }

    /// Streams one blob from the registry into the content store, resuming the ingest
    /// containerd has for it.
    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob(
        &self,
        registry: &RegistryClient,
        r: &Reference,
        blob: &Blob,
        lp: &LayerProgress,
        creds: Option<&Credentials>,
        lease: &str,
        progress: &watch::Sender<PullState>,
        name: &str,
    ) -> Result<(), RuntimeError> {
        let credit = |n: u64| {
            lp.done.fetch_add(n, Ordering::Relaxed);
            progress.send_modify(|p| p.bytes_done += n);
        };
        let lock = {
            let mut locks = self.blob_locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(blob.digest.clone()).or_default().clone()
        };
        let held = lock.lock().await;
        let out = self
            .fetch_blob_locked(registry, r, blob, &credit, creds, lease, name)
            .await;
        drop(held);
        {
            let mut locks = self.blob_locks.lock().unwrap_or_else(|p| p.into_inner());
            // The map's own reference and ours: no one else waits for this digest.
            if Arc::strong_count(&lock) <= 2 {
                locks.remove(&blob.digest);
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    async fn fetch_blob_locked(
        &self,
        registry: &RegistryClient,
        r: &Reference,
        blob: &Blob,
        credit: &(dyn Fn(u64) + Sync),
        creds: Option<&Credentials>,
        lease: &str,
        name: &str,
    ) -> Result<(), RuntimeError> {
        if self.blob_exists(&blob.digest).await? {
            // Held by this pull's lease until its image is recorded.
            self.lease_resource(lease, &blob.digest, "content").await?;
            credit(blob.size);
            return Ok(());
        }
        let ingest = format!("berth-pull-{}", blob.digest);
        let (tx, rx) = tokio::sync::mpsc::channel::<WriteContentRequest>(4);
        let msg = |action: WriteAction, offset: u64, data: Vec<u8>| WriteContentRequest {
            action: action as i32,
            r#ref: ingest.clone(),
            total: blob.size as i64,
            expected: blob.digest.clone(),
            offset: offset as i64,
            data,
            labels: HashMap::new(),
        };
        // The first message opens the writer (or finds the content there) and says how much
        // of the ingest containerd already has.
        tx.send(msg(WriteAction::Stat, 0, Vec::new()))
            .await
            .map_err(|_| pull_err(name, "content writer closed"))?;
        // containerd re-hashes an ingest it reopens: a transfer's time.
        let opened = rpc_for(
            "write content",
            &blob.digest,
            TRANSFER_TIMEOUT,
            self.client.content().write(
                self.req_lease(tokio_stream::wrappers::ReceiverStream::new(rx), Some(lease)),
            ),
        )
        .await;
        let mut responses = match opened {
            Ok(r) => r.into_inner(),
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                credit(blob.size);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let have = match next_response(&mut responses, &blob.digest, TRANSFER_TIMEOUT).await {
            Ok(s) => s.offset.max(0) as u64,
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                credit(blob.size);
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let have = have.min(blob.size);
        // All of it is there already (a pull that died before its commit): commit it.
        let (resumed, mut stream) = if have == blob.size && have > 0 {
            (true, futures::stream::empty().boxed())
        } else {
            let d = registry
                .blob(r, &blob.digest, have, creds)
                .await
                .map_err(|e| pull_err(name, e))?;
            (d.resumed, d.stream)
        };
        let mut offset = if resumed { have } else { 0 };
        if offset > 0 {
            debug!(layer = %blob.digest, offset, "resuming the ingest");
        }
        credit(offset);
        let mut pending: Vec<u8> = Vec::with_capacity(WRITE_CHUNK);
        // Writes go out as the registry's bytes come; containerd answers each, read as we go.
        let mut sent = 0usize;
        let mut answered = 0usize;
        // When each unanswered write went: containerd must answer each within CALL_TIMEOUT.
        let mut sent_at: std::collections::VecDeque<tokio::time::Instant> = Default::default();
        let mut first_write = true;
        loop {
            if sent_at.front().is_some_and(|t| t.elapsed() > CALL_TIMEOUT) {
                return Err(RuntimeError::Timeout {
                    op: "write content",
                    id: blob.digest.clone(),
                    after: CALL_TIMEOUT,
                });
            }
            // containerd's answers first: read as they come, they never pile up behind the
            // writes (which would stall containerd and then the writes).
            let chunk = tokio::select! {
                biased;
                r = next_response(&mut responses, &blob.digest, CALL_TIMEOUT), if answered < sent => {
                    r?;
                    answered += 1;
                    sent_at.pop_front();
                    continue;
                }
                c = stream.next() => c,
            };
            let end = match chunk {
                Some(Ok(bytes)) => {
                    pending.extend_from_slice(&bytes);
                    false
                }
                Some(Err(e)) => return Err(pull_err(name, e)),
                None => true,
            };
            if pending.len() >= WRITE_CHUNK || (end && !pending.is_empty()) {
                let data = std::mem::take(&mut pending);
                let n = data.len() as u64;
                if offset + n > blob.size {
                    self.abort_ingest(&ingest).await;
                    return Err(pull_err(
                        name,
                        format!(
                            "pull {name}: blob {} is longer than its {} bytes",
                            blob.digest, blob.size
                        ),
                    ));
                }
                // Offset 0 on a non-empty ingest truncates it: a registry that ignored the
                // Range request sends the blob from its start.
                let at = if first_write && offset == 0 {
                    0
                } else {
                    offset
                };
                first_write = false;
                send_bounded(&tx, msg(WriteAction::Write, at, data), &blob.digest, name).await?;
                sent += 1;
                sent_at.push_back(tokio::time::Instant::now());
                offset += n;
                credit(n);
                pending.reserve(WRITE_CHUNK);
            }
            if end {
                break;
            }
        }
        if offset != blob.size {
            return Err(pull_err(
                name,
                format!(
                    "pull {name}: blob {} ended after {offset} of {} bytes",
                    blob.digest, blob.size
                ),
            ));
        }
        send_bounded(
            &tx,
            msg(WriteAction::Commit, offset, Vec::new()),
            &blob.digest,
            name,
        )
        .await?;
        sent += 1;
        while answered < sent {
            // The commit verifies the whole blob: a transfer's time.
            match next_response(&mut responses, &blob.digest, TRANSFER_TIMEOUT).await {
                Ok(_) => answered += 1,
                Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => return Ok(()),
                Err(e) => {
                    // Content that does not match its digest is thrown away: the next pull
                    // fetches it again from the start.
                    if e.code() == Some(tonic::Code::FailedPrecondition) {
                        warn!(layer = %blob.digest, error = %e, "blob does not match its digest; dropping the ingest");
                        self.abort_ingest(&ingest).await;
                        return Err(pull_err(
                            name,
                            format!(
                                "pull {name}: blob {} does not match its digest: {e}",
                                blob.digest
                            ),
                        ));
                    }
                    return Err(e);
                }
            }
        }
        drop(tx);
        Ok(())
    }

    /// Drops an ingest so the next pull starts the blob again (a failure is logged: the
    /// next pull then truncates it instead).
    async fn abort_ingest(&self, ingest: &str) {
        if let Err(e) = rpc(
            "abort content",
            ingest,
            self.client.content().abort(self.req(AbortRequest {
                r#ref: ingest.to_string(),
            })),
        )
        .await
        {
            warn!(ingest, error = %e, "cannot abort an ingest; the next pull rewrites it from the start");
        }
    }

    /// Writes a small blob we hold whole (config, manifest, index) with its gc labels.
    async fn put_blob(
        &self,
        blob: &Blob,
        data: &[u8],
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        let _ = &blob.media_type;
        self.write_blob(&blob.digest, data, labels, lease).await
    }

    /// Creates the image record (or points it at the new target), labelled with its source.
    pub(super) async fn put_image_record(
        &self,
        name: &str,
        target: &crate::images::registry::Fetched,
        source: ImageSource,
    ) -> Result<(), RuntimeError> {
        let mut labels = HashMap::new();
        labels.insert(SOURCE_LABEL.to_string(), source.as_str().to_string());
        if source == ImageSource::Pull {
            labels.insert(PULLED_AT_LABEL.to_string(), rfc3339(SystemTime::now()));
        }
        self.set_image_record(
            name,
            Descriptor {
                media_type: target.media_type.clone(),
                digest: target.digest.clone(),
                size: target.bytes.len() as i64,
                annotations: HashMap::new(),
            },
            labels,
        )
        .await
    }

    /// Creates an image record, or updates its target and the given labels (others are kept).
    pub(super) async fn set_image_record(
        &self,
        name: &str,
        target: Descriptor,
        labels: HashMap<String, String>,
    ) -> Result<(), RuntimeError> {
        let mut paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        paths.push("target".into());
        let image = Image {
            name: name.to_string(),
            target: Some(target),
            labels,
            ..Default::default()
        };
        let created = rpc(
            "create image",
            name,
            self.client.images().create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            })),
        )
        .await;
        match created {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => rpc(
                "update image",
                name,
                self.client.images().update(self.req(UpdateImageRequest {
                    image: Some(image),
                    update_mask: Some(prost_types::FieldMask { paths }),
                    source_date_epoch: None,
                })),
            )
            .await
            .map(|_| ()),
            Err(e) => Err(e),
        }
    }

    /// The record of an image, if the store has one.
    pub(super) async fn local_image_record(
        &self,
        reference: &str,
    ) -> Result<Option<LocalImage>, RuntimeError> {
        let name = super::image::normalize(reference);
        match rpc(
            "get image",
            &name,
            self.client
                .images()
                .get(self.req(GetImageRequest { name: name.clone() })),
        )
        .await
        {
            Ok(r) => Ok(r.into_inner().image.map(|i| local_image_of(&i))),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every image record of the namespace.
    pub(super) async fn list_image_records(&self) -> Result<Vec<LocalImage>, RuntimeError> {
        let r = rpc(
            "list images",
            "",
            self.client
                .images()
                .list(self.req(ListImagesRequest { filters: vec![] })),
        )
        .await?;
        Ok(r.into_inner().images.iter().map(local_image_of).collect())
    }

    /// Removes an image record; containerd's GC (run before this returns) frees its content
    /// and snapshots unless something else holds them.
    pub(super) async fn delete_image_record(&self, name: &str) -> Result<(), RuntimeError> {
        rpc_for(
            "delete image",
            name,
            TRANSFER_TIMEOUT,
            self.client.images().delete(self.req(DeleteImageRequest {
                name: name.to_string(),
                sync: true,
                target: None,
            })),
        )
        .await
        .map(|_| ())
    }

    /// Sets the image's last-used label to now.
    pub(super) async fn touch_image(&self, name: &str) -> Result<(), RuntimeError> {
        let mut labels = HashMap::new();
        labels.insert(LAST_USED_LABEL.to_string(), rfc3339(SystemTime::now()));
        rpc(
            "update image",
            name,
            self.client.images().update(self.req(UpdateImageRequest {
                image: Some(Image {
                    name: name.to_string(),
                    labels,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask {
                    paths: vec![format!("labels.{LAST_USED_LABEL}")],
                }),
                source_date_epoch: None,
            })),
        )
        .await
        .map(|_| ())
    }
}

/// Hands a content write message to the stream, within [`CALL_TIMEOUT`].
async fn send_bounded(
    tx: &tokio::sync::mpsc::Sender<WriteContentRequest>,
    m: WriteContentRequest,
    digest: &str,
    name: &str,
) -> Result<(), RuntimeError> {
    match tokio::time::timeout(CALL_TIMEOUT, tx.send(m)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(pull_err(name, "containerd closed the content writer")),
        Err(_) => Err(RuntimeError::Timeout {
            op: "write content",
            id: digest.to_string(),
            after: CALL_TIMEOUT,
        }),
    }
}

/// containerd's answer to a content write message, within `after`.
async fn next_response(
    responses: &mut tonic::Streaming<WriteContentResponse>,
    digest: &str,
    after: Duration,
) -> Result<WriteContentResponse, RuntimeError> {
    let op = "write content";
    let id = digest.to_string();
    match tokio::time::timeout(after, responses.message()).await {
        Ok(Ok(Some(r))) => Ok(r),
        Ok(Ok(None)) => Err(RuntimeError::Image {
            image: id,
            message: "containerd ended the write".into(),
        }),
        Ok(Err(source)) => Err(RuntimeError::Call { op, id, source }),
        Err(_) => Err(RuntimeError::Timeout { op, id, after }),
    }
}

fn local_image_of(i: &Image) -> LocalImage {
    let label = |k: &str| i.labels.get(k).and_then(|v| parse_rfc3339(v));
    let source = match i.labels.get(SOURCE_LABEL).map(String::as_str) {
        Some("pull") => ImageSource::Pull,
        Some("load") => ImageSource::Load,
        _ => ImageSource::Other,
    };
    let target = i.target.clone().unwrap_or_default();
    LocalImage {
        name: i.name.clone(),
        digest: target.digest,
        source,
        pulled_at: label(PULLED_AT_LABEL),
        last_used: label(LAST_USED_LABEL),
        created_at: i.created_at.as_ref().and_then(|t| {
            (t.seconds >= 0).then(|| {
                std::time::UNIX_EPOCH + Duration::new(t.seconds as u64, t.nanos.max(0) as u32)
            })
        }),
        size: target.size,
    }
}

/// RFC 3339 (UTC, seconds) of a time, for labels and containerd's `containerd.io/gc.expire`
/// (the JSON form of a protobuf Timestamp is the quoted RFC 3339 string).
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ts = pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    };
    serde_json::to_string(&ts)
        .map(|q| q.trim_matches('"').to_string())
        .unwrap_or_default()
}

/// The time of an RFC 3339 label (what [`rfc3339`] writes).
pub(super) fn parse_rfc3339(s: &str) -> Option<SystemTime> {
    let ts: pbjson_types::Timestamp = serde_json::from_str(&format!("\"{s}\"")).ok()?;
    (ts.seconds >= 0).then(|| std::time::UNIX_EPOCH + Duration::from_secs(ts.seconds as u64))
}

#[cfg(test)]
mod tests {
    #[test]
    fn label_times_read_back() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::parse_rfc3339(&super::rfc3339(t)), Some(t));
        assert_eq!(super::parse_rfc3339("yesterday"), None);
    }
}
