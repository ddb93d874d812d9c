//! Image import and unpack, done client-side since containerd 1.6 has no transfer service:
//! blobs go into the content store under a lease with containerd's gc labels, each layer is
//! applied onto a snapshot named by its chain ID, and the image record points at the target.

use super::containerd::{rpc, rpc_for, Containerd, SNAPSHOTTER, TRANSFER_TIMEOUT};
use super::image::{chain_ids, digest_of, normalize, pick_manifest, Archive, INDEX_TYPES};
use super::{ImageConfig, RuntimeError};
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, PrepareSnapshotRequest, StatSnapshotRequest,
};
use containerd_client::services::v1::*;
use containerd_client::types::Descriptor;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;

fn image_err(image: &str, message: impl Into<String>) -> RuntimeError {
    RuntimeError::Image {
        image: image.to_string(),
        message: message.into(),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// `Ok(true)` when a lookup found its object, `Ok(false)` on NotFound, the error otherwise.
fn found<T>(r: Result<T, RuntimeError>) -> Result<bool, RuntimeError> {
    match r {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

impl Containerd {
    /// Resolves an image from the local store (unpacking it if its snapshots are missing).
    pub(super) async fn resolve_image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        let name = normalize(reference);
        let image = match rpc(
            "get image",
            &name,
            self.client
                .images()
                .get(self.req(GetImageRequest { name: name.clone() })),
        )
        .await
        {
            Ok(r) => r.into_inner().image.unwrap_or_default(),
            Err(e) if e.is_not_found() => return Err(RuntimeError::ImageNotFound(name)),
            Err(e) => return Err(e),
        };
        let target = image.target.unwrap_or_default();
        let target_digest = target.digest.clone();
        let mut manifest_digest = target.digest.clone();
        if INDEX_TYPES.contains(&target.media_type.as_str()) {
            let index: Value = serde_json::from_slice(&self.read_blob(&target.digest).await?)
                .map_err(|e| image_err(&name, format!("index: {e}")))?;
            let m = pick_manifest(&index)
                .ok_or_else(|| image_err(&name, "no manifest for this platform"))?;
            manifest_digest = m["digest"].as_str().unwrap_or_default().to_string();
        }
        let manifest: Value = serde_json::from_slice(&self.read_blob(&manifest_digest).await?)
            .map_err(|e| image_err(&name, format!("manifest: {e}")))?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let config_bytes = self.read_blob(&config_digest).await?;
        if digest_of(&config_bytes) != config_digest {
            return Err(image_err(&name, "config blob does not match its digest"));
        }
        let config: Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| image_err(&name, format!("config: {e}")))?;
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        let chain_id = chain_ids(&diff_ids)
            .last()
            .cloned()
            .ok_or_else(|| image_err(&name, "image has no layers"))?;
        if !self.snapshot_exists(&chain_id).await? {
            self.with_lease(|lease| async move { self.unpack(&manifest, &diff_ids, &lease).await })
                .await?;
        }
        let c = &config["config"];
        Ok(ImageConfig {
            name,
            digest: target_digest,
            chain_id,
            env: strings(&c["Env"]),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: c["User"].as_str().unwrap_or_default().to_string(),
            stop_signal: c["StopSignal"].as_str().unwrap_or_default().to_string(),
        })
    }

    /// The bytes an image's record brings with it: its manifest's config and layers (the
    /// host's platform's manifest for an index), compressed sizes as the registry served them.
    pub async fn image_size(&self, name: &str) -> Result<u64, RuntimeError> {
        let image = rpc(
            "get image",
            name,
            self.client.images().get(self.req(GetImageRequest {
                name: name.to_string(),
            })),
        )
        .await?
        .into_inner()
        .image
        .unwrap_or_default();
        let target = image.target.unwrap_or_default();
        let mut digest = target.digest.clone();
        if INDEX_TYPES.contains(&target.media_type.as_str()) {
            let index: Value = serde_json::from_slice(&self.read_blob(&digest).await?)
                .map_err(|e| image_err(name, format!("index: {e}")))?;
            digest = pick_manifest(&index)
                .and_then(|m| m["digest"].as_str().map(String::from))
                .ok_or_else(|| image_err(name, "no manifest for this platform"))?;
        }
        let manifest: Value = serde_json::from_slice(&self.read_blob(&digest).await?)
            .map_err(|e| image_err(name, format!("manifest: {e}")))?;
        let layers: u64 = manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum();
        Ok(layers + manifest["config"]["size"].as_u64().unwrap_or(0))
    }

    /// Reads a whole blob from the content store.
    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        use tokio_stream::StreamExt;
        let read = async {
            let mut stream = self
                .client
                .content()
                .read(self.req(ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                }))
                .await?
                .into_inner();
            let mut out = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend(chunk?.data);
            }
            Ok(out)
        };
        rpc_for("read content", digest, TRANSFER_TIMEOUT, read).await
    }

    pub(super) async fn blob_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        found(
            rpc(
                "content info",
                digest,
                self.client.content().info(self.req(InfoRequest {
                    digest: digest.to_string(),
                })),
            )
            .await,
        )
    }

    /// Writes a blob (with labels) unless it is there; sets the labels when it is.
    pub(super) async fn write_blob(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        if self.blob_exists(digest).await? {
            // Held by this lease too, so nothing frees it before the image that needs it is
            // recorded (another image's removal, another pull's lease ending).
            self.lease_resource(lease, digest, "content").await?;
            if !labels.is_empty() {
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                rpc(
                    "content update",
                    digest,
                    self.client.content().update(self.req(UpdateRequest {
                        info: Some(Info {
                            digest: digest.to_string(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    })),
                )
                .await?;
            }
            return Ok(());
        }
        let reference = format!("berth-import-{digest}");
        let total = data.len() as i64;
        let mut msgs = Vec::new();
        let mut offset = 0usize;
        for chunk in data.chunks(1 << 20) {
            msgs.push(WriteContentRequest {
                action: WriteAction::Write as i32,
                r#ref: reference.clone(),
                total,
                expected: digest.to_string(),
                offset: offset as i64,
                data: chunk.to_vec(),
                labels: HashMap::new(),
            });
            offset += chunk.len();
        }
        msgs.push(WriteContentRequest {
            action: WriteAction::Commit as i32,
            r#ref: reference,
            total,
            expected: digest.to_string(),
            offset: total,
            data: Vec::new(),
            labels,
        });
        use tokio_stream::StreamExt;
        let write = async {
            let mut responses = self
                .client
                .content()
                .write(self.req_lease(tokio_stream::iter(msgs), Some(lease)))
                .await?
                .into_inner();
            while let Some(r) = responses.next().await {
                r?;
            }
            Ok(())
        };
        rpc_for("write content", digest, TRANSFER_TIMEOUT, write).await
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        found(
            rpc(
                "stat snapshot",
                key,
                self.client.snapshots().stat(self.req(StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                })),
            )
            .await,
        )
    }

    /// Unpacks the layers of a manifest into committed snapshots named by chain ID.
    pub(super) async fn unpack(
        &self,
        manifest: &Value,
        diff_ids: &[String],
        lease: &str,
    ) -> Result<(), RuntimeError> {
        let layers = manifest["layers"].as_array().cloned().unwrap_or_default();
        let chains = chain_ids(diff_ids);
        if layers.len() != chains.len() {
            return Err(image_err(
                "manifest",
                "layer count does not match the config's diff_ids",
            ));
        }
        for (i, (layer, chain)) in layers.iter().zip(&chains).enumerate() {
            if self.snapshot_exists(chain).await? {
                self.lease_resource(lease, chain, &format!("snapshots/{SNAPSHOTTER}"))
                    .await?;
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("berth-unpack-{}-{}", chain, uuid::Uuid::new_v4().simple());
            let mounts = rpc(
                "prepare snapshot",
                &key,
                self.client.snapshots().prepare(self.req_lease(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    Some(lease),
                )),
            )
            .await?
            .into_inner()
            .mounts;
            let applied = rpc_for(
                "apply layer",
                &key,
                TRANSFER_TIMEOUT,
                self.client.diff().apply(self.req_lease(
                    ApplyRequest {
                        diff: Some(Descriptor {
                            media_type: layer["mediaType"].as_str().unwrap_or_default().into(),
                            digest: layer["digest"].as_str().unwrap_or_default().into(),
                            size: layer["size"].as_i64().unwrap_or(0),
                            annotations: HashMap::new(),
                        }),
                        mounts,
                        payloads: HashMap::new(),
                        sync_fs: false,
                    },
                    Some(lease),
                )),
            )
            .await;
            if let Err(e) = applied {
                let _ = self.remove_snapshot(&key).await;
                return Err(e);
            }
            let committed = rpc(
                "commit snapshot",
                chain,
                self.client.snapshots().commit(self.req_lease(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                )),
            )
            .await;
            match committed {
                Ok(_) => {}
                // Another pull or unpack committed the same chain first: the same content, so
                // this one's prepared snapshot goes and theirs serves (as containerd's own
                // unpacker does).
                Err(e) if e.code() == Some(tonic::Code::AlreadyExists) => {
                    if let Err(e) = self.remove_snapshot(&key).await {
                        tracing::warn!(snapshot = %key, error = %e, "cannot remove a prepared snapshot another unpack made unneeded; the lease's expiry frees it");
                    }
                    self.lease_resource(lease, chain, &format!("snapshots/{SNAPSHOTTER}"))
                        .await?;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Puts an existing resource (`content`, `snapshots/overlayfs`) under `lease`.
    pub(super) async fn lease_resource(
        &self,
        lease: &str,
        id: &str,
        kind: &str,
    ) -> Result<(), RuntimeError> {
        rpc(
            "lease resource",
            id,
            self.client
                .leases()
                .add_resource(self.req(AddResourceRequest {
                    id: lease.to_string(),
                    resource: Some(containerd_client::services::v1::Resource {
                        id: id.to_string(),
                        r#type: kind.to_string(),
                    }),
                })),
        )
        .await
        .map(|_| ())
    }

    /// Runs `f` under a fresh lease (expiring in an hour should the agent die meanwhile).
    pub(super) async fn with_lease<T, F, Fut>(&self, f: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        self.with_lease_for(Duration::from_secs(3600), f).await
    }

    /// Runs `f` under a fresh lease that expires after `ttl` should the agent die meanwhile
    /// (a pull's must outlast the pull timeout).
    pub(super) async fn with_lease_for<T, F, Fut>(
        &self,
        ttl: Duration,
        f: F,
    ) -> Result<T, RuntimeError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let id = format!("berth-{}", uuid::Uuid::new_v4().simple());
        let expire = rfc3339(std::time::SystemTime::now() + ttl);
        rpc(
            "create lease",
            &id,
            self.client
                .leases()
                .create(self.req(leases_create(&id, expire))),
        )
        .await?;
        let out = f(id.clone()).await;
        if let Err(e) = rpc(
            "delete lease",
            &id,
            self.client.leases().delete(self.req(DeleteRequest {
                id: id.clone(),
                sync: false,
            })),
        )
        .await
        {
            tracing::warn!(lease = %id, error = %e, "cannot delete a lease; it expires on its own");
        }
        out
    }

    /// Imports every image of an OCI image-layout archive and unpacks it. Returns the names.
    pub async fn import(&self, archive: &Archive) -> Result<Vec<String>, RuntimeError> {
        self.with_lease(|lease| async move {
            let mut names = Vec::new();
            for (name, desc) in &archive.images {
                self.import_one(archive, name, desc, &lease).await?;
                names.push(name.clone());
            }
            Ok(names)
        })
        .await
    }

    async fn import_one(
        &self,
        archive: &Archive,
        name: &str,
        desc: &Value,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        let blob = |d: &str| {
            archive
                .blobs
                .get(d)
                .ok_or_else(|| image_err(name, format!("archive lacks blob {d}")))
        };
        let target_digest = desc["digest"].as_str().unwrap_or_default().to_string();
        let target_type = desc["mediaType"].as_str().unwrap_or_default().to_string();
        let mut index_label = HashMap::new();
        let manifest_desc = if INDEX_TYPES.contains(&target_type.as_str()) {
            let index: Value = serde_json::from_slice(blob(&target_digest)?)
                .map_err(|e| image_err(name, format!("index: {e}")))?;
            for (i, m) in index["manifests"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
            {
                if let Some(d) = m["digest"].as_str() {
                    if archive.blobs.contains_key(d) {
                        index_label
                            .insert(format!("containerd.io/gc.ref.content.m.{i}"), d.to_string());
                    }
                }
            }
            pick_manifest(&index).ok_or_else(|| image_err(name, "no manifest for this platform"))?
        } else {
            desc.clone()
        };
        let manifest_digest = manifest_desc["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let manifest: Value = serde_json::from_slice(blob(&manifest_digest)?)
            .map_err(|e| image_err(name, format!("manifest: {e}")))?;
        let config_digest = manifest["config"]["digest"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let config: Value = serde_json::from_slice(blob(&config_digest)?)
            .map_err(|e| image_err(name, format!("config: {e}")))?;
        let diff_ids = strings(&config["rootfs"]["diff_ids"]);
        let top = chain_ids(&diff_ids).last().cloned().unwrap_or_default();
        // Layers first, then config and manifest with the gc labels that keep them alive.
        let mut manifest_labels = HashMap::new();
        manifest_labels.insert(
            "containerd.io/gc.ref.content.config".to_string(),
            config_digest.clone(),
        );
        for (i, l) in manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let d = l["digest"].as_str().unwrap_or_default();
            self.write_blob(d, blob(d)?, HashMap::new(), lease).await?;
            manifest_labels.insert(format!("containerd.io/gc.ref.content.l.{i}"), d.to_string());
        }
        let mut config_labels = HashMap::new();
        config_labels.insert(format!("containerd.io/gc.ref.snapshot.{SNAPSHOTTER}"), top);
        self.write_blob(&config_digest, blob(&config_digest)?, config_labels, lease)
            .await?;
        self.write_blob(
            &manifest_digest,
            blob(&manifest_digest)?,
            manifest_labels,
            lease,
        )
        .await?;
        if INDEX_TYPES.contains(&target_type.as_str()) {
            self.write_blob(&target_digest, blob(&target_digest)?, index_label, lease)
                .await?;
        }
        self.unpack(&manifest, &diff_ids, lease).await?;
        let mut labels = HashMap::new();
        labels.insert(
            super::pull::SOURCE_LABEL.to_string(),
            super::ImageSource::Load.as_str().to_string(),
        );
        self.set_image_record(
            name,
            Descriptor {
                media_type: target_type,
                digest: target_digest,
                size: desc["size"].as_i64().unwrap_or(0),
                annotations: HashMap::new(),
            },
            labels,
        )
        .await
    }
}

fn leases_create(id: &str, expire: String) -> containerd_client::services::v1::CreateRequest {
    let mut labels = HashMap::new();
    labels.insert("containerd.io/gc.expire".to_string(), expire);
    containerd_client::services::v1::CreateRequest {
        id: id.to_string(),
        labels,
    }
}

use super::pull::rfc3339;

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::rfc3339(t), "2023-11-14T22:13:20+00:00");
    }
}
