//! [`Runtime`] over containerd's gRPC API (containerd 1.6+): containers, tasks, snapshots,
//! content, images, diff and leases. Image import and unpack are done here, client-side, since
//! containerd 1.6 has no transfer service.

use super::image::{chain_ids, digest_of, normalize, pick_manifest, Archive, INDEX_TYPES};
use super::{
    ContainerState, CreateContainer, ImageConfig, LabelledContainer, Runtime, RuntimeError,
    CLUSTER_LABEL, TASK_ARN_LABEL,
};
use async_trait::async_trait;
use containerd_client::services::v1::container::Runtime as ContainerRuntime;
use containerd_client::services::v1::snapshots::{
    CommitSnapshotRequest, MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    StatSnapshotRequest,
};
use containerd_client::services::v1::*;
use containerd_client::types::{Descriptor, Mount};
use containerd_client::Client;
use serde_json::Value;
use std::collections::HashMap;
use std::time::Duration;
use tonic::{Code, Request, Status};

const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
const RUNC_V2: &str = "io.containerd.runc.v2";
const SNAPSHOTTER: &str = "overlayfs";

/// The containerd runtime.
pub struct Containerd {
    client: Client,
    namespace: String,
}

fn call<'a>(op: &'static str, id: &'a str) -> impl Fn(Status) -> RuntimeError + 'a {
    move |s| RuntimeError::Call {
        op,
        id: id.to_string(),
        message: s.message().to_string(),
    }
}

/// `Ok(true)` when a lookup found its object, `Ok(false)` on NotFound, the error otherwise.
fn found<T>(r: Result<T, Status>, op: &'static str, id: &str) -> Result<bool, RuntimeError> {
    match r {
        Ok(_) => Ok(true),
        Err(s) if s.code() == Code::NotFound => Ok(false),
        Err(s) => Err(call(op, id)(s)),
    }
}

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

impl Containerd {
    /// Connects to containerd's socket and checks it answers (within 5 s).
    pub async fn connect(
        socket: &std::path::Path,
        namespace: &str,
    ) -> Result<(Self, String), RuntimeError> {
        let err = |m: String| RuntimeError::Call {
            op: "connect",
            id: socket.display().to_string(),
            message: m,
        };
        let channel =
            tokio::time::timeout(Duration::from_secs(5), containerd_client::connect(socket))
                .await
                .map_err(|_| err("timed out".into()))?
                .map_err(|e| err(format!("{e}")))?;
        let client = Client::from(channel);
        let version = tokio::time::timeout(Duration::from_secs(5), client.version().version(()))
            .await
            .map_err(|_| err("timed out asking for the version".into()))?
            .map_err(|s| err(s.message().to_string()))?
            .into_inner()
            .version;
        Ok((
            Self {
                client,
                namespace: namespace.to_string(),
            },
            version,
        ))
    }

    fn req<T>(&self, msg: T) -> Request<T> {
        self.req_lease(msg, None)
    }

    fn req_lease<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut r = Request::new(msg);
        if let Ok(ns) = self.namespace.parse() {
            r.metadata_mut().insert("containerd-namespace", ns);
        }
        if let Some(l) = lease.and_then(|l| l.parse().ok()) {
            r.metadata_mut().insert("containerd-lease", l);
        }
        r
    }

    /// Reads a whole blob from the content store.
    async fn read_blob(&self, digest: &str) -> Result<Vec<u8>, RuntimeError> {
        use tokio_stream::StreamExt;
        let mut stream = self
            .client
            .content()
            .read(self.req(ReadContentRequest {
                digest: digest.to_string(),
                offset: 0,
                size: 0,
            }))
            .await
            .map_err(call("read content", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend(chunk.map_err(call("read content", digest))?.data);
        }
        Ok(out)
    }

    async fn blob_exists(&self, digest: &str) -> Result<bool, RuntimeError> {
        let r = self
            .client
            .content()
            .info(self.req(InfoRequest {
                digest: digest.to_string(),
            }))
            .await;
        found(r, "content info", digest)
    }

    /// Writes a blob (with labels) unless it is there; sets the labels when it is.
    async fn write_blob(
        &self,
        digest: &str,
        data: &[u8],
        labels: HashMap<String, String>,
        lease: &str,
    ) -> Result<(), RuntimeError> {
        if self.blob_exists(digest).await? {
            if !labels.is_empty() {
                let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
                self.client
                    .content()
                    .update(self.req(UpdateRequest {
                        info: Some(Info {
                            digest: digest.to_string(),
                            labels,
                            ..Default::default()
                        }),
                        update_mask: Some(prost_types::FieldMask { paths }),
                    }))
                    .await
                    .map_err(call("content update", digest))?;
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
        let mut responses = self
            .client
            .content()
            .write(self.req_lease(tokio_stream::iter(msgs), Some(lease)))
            .await
            .map_err(call("write content", digest))?
            .into_inner();
        while let Some(r) = responses.next().await {
            r.map_err(call("write content", digest))?;
        }
        Ok(())
    }

    async fn snapshot_exists(&self, key: &str) -> Result<bool, RuntimeError> {
        let r = self
            .client
            .snapshots()
            .stat(self.req(StatSnapshotRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: key.to_string(),
            }))
            .await;
        found(r, "stat snapshot", key)
    }

    /// Unpacks the layers of a manifest into committed snapshots named by chain ID.
    async fn unpack(
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
                continue;
            }
            let parent = if i == 0 {
                String::new()
            } else {
                chains[i - 1].clone()
            };
            let key = format!("berth-unpack-{}-{}", chain, uuid::Uuid::new_v4().simple());
            let mounts = self
                .client
                .snapshots()
                .prepare(self.req_lease(
                    PrepareSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                        parent,
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
                .map_err(call("prepare snapshot", &key))?
                .into_inner()
                .mounts;
            let applied = self
                .client
                .diff()
                .apply(self.req_lease(
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
                ))
                .await;
            if let Err(s) = applied {
                let _ = self
                    .client
                    .snapshots()
                    .remove(self.req(RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.clone(),
                    }))
                    .await;
                return Err(call("apply layer", &key)(s));
            }
            self.client
                .snapshots()
                .commit(self.req_lease(
                    CommitSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: HashMap::new(),
                    },
                    Some(lease),
                ))
                .await
                .map_err(call("commit snapshot", chain))?;
        }
        Ok(())
    }

    async fn with_lease<T, F, Fut>(&self, f: F) -> Result<T, RuntimeError>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<T, RuntimeError>>,
    {
        let id = format!("berth-{}", uuid::Uuid::new_v4().simple());
        let expire = rfc3339(std::time::SystemTime::now() + Duration::from_secs(3600));
        self.client
            .leases()
            .create(self.req(leases_create(&id, expire)))
            .await
            .map_err(call("create lease", &id))?;
        let out = f(id.clone()).await;
        let _ = self
            .client
            .leases()
            .delete(self.req(DeleteRequest { id, sync: false }))
            .await;
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
        let image = Image {
            name: name.to_string(),
            target: Some(Descriptor {
                media_type: target_type,
                digest: target_digest,
                size: desc["size"].as_i64().unwrap_or(0),
                annotations: HashMap::new(),
            }),
            ..Default::default()
        };
        let created = self
            .client
            .images()
            .create(self.req(CreateImageRequest {
                image: Some(image.clone()),
                source_date_epoch: None,
            }))
            .await;
        match created {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                self.client
                    .images()
                    .update(self.req(UpdateImageRequest {
                        image: Some(image),
                        update_mask: Some(prost_types::FieldMask {
                            paths: vec!["target".into()],
                        }),
                        source_date_epoch: None,
                    }))
                    .await
                    .map_err(call("update image", name))?;
                Ok(())
            }
            Err(s) => Err(call("create image", name)(s)),
        }
    }
}

impl Containerd {
    /// Creates the snapshot and the container record while `lease` protects them.
    async fn create_leased(&self, c: &CreateContainer, lease: &str) -> Result<(), RuntimeError> {
        let id = c.id.as_str();
        match self
            .client
            .snapshots()
            .prepare(self.req_lease(
                PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.to_string(),
                    parent: c.image.chain_id.clone(),
                    labels: HashMap::new(),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(call("prepare snapshot", id)(s)),
        }
        let spec = serde_json::to_vec(&c.spec).map_err(|e| RuntimeError::Call {
            op: "encode spec",
            id: id.to_string(),
            message: e.to_string(),
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
        match self
            .client
            .containers()
            .create(self.req_lease(
                CreateContainerRequest {
                    container: Some(container),
                },
                Some(lease),
            ))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(call("create container", id)(s)),
        }
        Ok(())
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

/// RFC 3339 text of a time, as containerd's `containerd.io/gc.expire` label wants it.
fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let ts = pbjson_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: 0,
    };
    // The JSON form of a protobuf Timestamp is the quoted RFC 3339 string.
    serde_json::to_string(&ts)
        .map(|q| q.trim_matches('"').to_string())
        .unwrap_or_default()
}

#[async_trait]
impl Runtime for Containerd {
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        let name = normalize(reference);
        let image = match self
            .client
            .images()
            .get(self.req(GetImageRequest { name: name.clone() }))
            .await
        {
            Ok(r) => r.into_inner().image.unwrap_or_default(),
            Err(s) if s.code() == Code::NotFound => return Err(RuntimeError::ImageNotFound(name)),
            Err(s) => return Err(call("get image", &name)(s)),
        };
        let target = image.target.unwrap_or_default();
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
            digest: manifest_digest,
            chain_id,
            env: strings(&c["Env"]),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
            working_dir: c["WorkingDir"].as_str().unwrap_or_default().to_string(),
            user: c["User"].as_str().unwrap_or_default().to_string(),
            stop_signal: c["StopSignal"].as_str().unwrap_or_default().to_string(),
        })
    }

    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        // Under a lease: until the container record names the snapshot, nothing else keeps
        // containerd's garbage collector (run after any other deletion) from removing it.
        self.with_lease(|lease| async move { self.create_leased(c, &lease).await })
            .await
    }

    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        let id = c.id.as_str();
        let mounts: Vec<Mount> = self
            .client
            .snapshots()
            .mounts(self.req(MountsRequest {
                snapshotter: SNAPSHOTTER.into(),
                key: id.to_string(),
            }))
            .await
            .map_err(call("snapshot mounts", id))?
            .into_inner()
            .mounts;
        if let Some(dir) = c.log_path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| RuntimeError::Io {
                path: dir.display().to_string(),
                message: e.to_string(),
            })?;
        }
        let log = format!("file://{}", c.log_path.display());
        match self
            .client
            .tasks()
            .create(self.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: mounts,
                stdin: String::new(),
                stdout: log.clone(),
                stderr: log,
                terminal: false,
                ..Default::default()
            }))
            .await
        {
            Ok(_) => {}
            Err(s) if s.code() == Code::AlreadyExists => {}
            Err(s) => return Err(call("create task", id)(s)),
        }

        self.client
            .tasks()
            .start(self.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(call("start", id))?;
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
            .map_err(call("wait", id))?;
        Ok(r.into_inner().exit_status)
    }

    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        match self
            .client
            .tasks()
            .kill(self.req(KillRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
                signal,
                all: false,
            }))
            .await
        {
            Ok(_) => Ok(()),
            // Already exited: nothing to signal.
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(call("kill", id)(s)),
        }
    }

    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        match self
            .client
            .tasks()
            .get(self.req(GetRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
        {
            Ok(r) => {
                let p = r.into_inner().process.unwrap_or_default();
                Ok(match p.status {
                    1 => ContainerState::Created,
                    3 => ContainerState::Stopped(p.exit_status),
                    0 => ContainerState::Missing,
                    _ => ContainerState::Running,
                })
            }
            Err(s) if s.code() == Code::NotFound => Ok(ContainerState::Missing),
            Err(s) => Err(call("get task", id)(s)),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        let ignore_missing = |r: Result<(), Status>, op: &'static str| match r {
            Ok(()) => Ok(()),
            Err(s) if s.code() == Code::NotFound => Ok(()),
            Err(s) => Err(call(op, id)(s)),
        };
        ignore_missing(
            self.client
                .tasks()
                .delete(self.req(DeleteTaskRequest {
                    container_id: id.to_string(),
                }))
                .await
                .map(|_| ()),
            "delete task",
        )?;
        ignore_missing(
            self.client
                .containers()
                .delete(self.req(DeleteContainerRequest { id: id.to_string() }))
                .await
                .map(|_| ()),
            "delete container",
        )?;
        ignore_missing(
            self.client
                .snapshots()
                .remove(self.req(RemoveSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: id.to_string(),
                }))
                .await
                .map(|_| ()),
            "remove snapshot",
        )
    }

    async fn list(&self, cluster: &str) -> Result<Vec<LabelledContainer>, RuntimeError> {
        // containerd's filter syntax: label keys with dots are quoted, values too.
        let filter =
            format!("labels.\"{CLUSTER_LABEL}\"==\"{cluster}\",labels.\"{TASK_ARN_LABEL}\"");
        let containers = self
            .client
            .containers()
            .list(self.req(ListContainersRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(call("list containers", cluster))?
            .into_inner()
            .containers;
        let mut out = Vec::with_capacity(containers.len());
        for c in containers {
            let state = self.state(&c.id).await?;
            out.push(LabelledContainer {
                id: c.id,
                labels: c.labels,
                state,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_rfc3339() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000);
        assert_eq!(super::rfc3339(t), "2023-11-14T22:13:20+00:00");
    }
}
