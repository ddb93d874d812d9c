//! The controller's service layer: ECS semantics over an in-memory view of the store.
//! The gRPC API and the agent link are thin adapters over [`Controller`].
//!
//! Every mutation is committed to the [`Store`] before the in-memory view changes, so a failed
//! commit changes nothing and a restart reloads exactly what was acknowledged.

mod agent_link;
mod clusters;
pub mod exec;
pub mod fields;
mod idempotency;
mod instances;
mod load;
mod networking;
pub mod pagination;
mod pull_progress;
mod retention;
mod run_batch;
mod security_groups;
mod service_scheduler;
mod services;
mod stats;
mod tags;
mod task_definitions;
mod tasks;
pub mod validation;

pub use agent_link::{LinkError, SessionInfo, SessionSent};
pub use retention::{Purged, DEFAULT_STOPPED_TASK_RETENTION};
pub use service_scheduler::ServiceSchedulerConfig;
pub use tasks::TaskSecretRefs;

use crate::error::EcsError;
use crate::fleet::Fleet;
use crate::store::{Store, StoreError, Write};
use berth_proto::v1::{
    Cluster, ContainerInstanceRecord, RegisterTaskDefinitionResponse, RunTaskTokenRecord,
    SecurityGroupRecord, ServiceRecord, Task, TaskNetworkRecord,
};
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

/// The name of the cluster used when a call names none, as in ECS.
pub const DEFAULT_CLUSTER: &str = "default";

pub(crate) const CLUSTER_PREFIX: &str = "cluster/";
pub(crate) const TASKDEF_PREFIX: &str = "taskdef/";
pub(crate) const TASK_PREFIX: &str = "task/";
pub(crate) const INSTANCE_PREFIX: &str = "instance/";
/// `unconfirmed/TASK_ID`: a task recorded STOPPED that no agent has confirmed stopped (its
/// instance was deregistered with force while it ran). Its record is a tombstone kept until an
/// agent reports it stopped, so an agent that still runs it is told to stop it, never adopts it.
pub(crate) const UNCONFIRMED_PREFIX: &str = "unconfirmed/";

/// Everything the controller knows, loaded from the store at start.
#[derive(Default)]
pub(crate) struct State {
    /// By cluster name.
    clusters: BTreeMap<String, Cluster>,
    /// By family, then revision; each with its tags.
    task_definitions: BTreeMap<String, BTreeMap<i32, RegisterTaskDefinitionResponse>>,
    /// By task id. A task's record is its tombstone until its agent confirms it STOPPED.
    tasks: BTreeMap<String, Task>,
    /// Ids of the tasks not yet STOPPED, by container instance ARN (kept by `put_task`; no
    /// empty sets).
    active: HashMap<String, BTreeSet<String>>,
    /// How many retained tasks (any status) name each container instance ARN (kept by
    /// `put_task`): an INACTIVE instance leaves only when none does.
    by_instance: HashMap<String, usize>,
    /// Ids of the tasks whose STOPPED is confirmed, by when (seconds since the epoch), oldest
    /// first (kept by `put_task`; the retention sweep walks it).
    stopped: BTreeSet<(i64, String)>,
    /// By container instance id.
    instances: BTreeMap<String, ContainerInstanceRecord>,
    /// The INACTIVE instances' ids, by when they were deregistered (seconds since the epoch),
    /// oldest first: the retention sweep walks it.
    inactive: BTreeSet<(i64, String)>,
    /// Ids of the tasks recorded STOPPED without an agent's confirmation (`UNCONFIRMED_PREFIX`,
    /// persisted): their retention has not started.
    unconfirmed: HashSet<String>,
    /// Ids of the instances whose agent opened a session since this controller loaded the
    /// store. Until then an instance's `orphans` are unknown (they are not persisted), so the
    /// retention sweep keeps its stopped tasks.
    seen: HashSet<String>,
    /// Tasks recorded STOPPED that an agent still reports running, by instance id: their stop
    /// is confirmed in its desired set until it reports them stopped. Derived from reports, not
    /// persisted: an agent re-reports every task the desired set does not name at every session
    /// start.
    orphans: HashMap<String, BTreeSet<String>>,
    /// What each RunTask clientToken answered, by token (`idempotency.rs`).
    run_tokens: HashMap<String, RunTaskTokenRecord>,
    /// awsvpc tasks' networks as RunTask decided them, by task id (`networking.rs`; key
    /// `tasknet/ID`, removed with the task's record).
    task_networks: BTreeMap<String, TaskNetworkRecord>,
    /// Security groups by id (`security_groups.rs`; key `sg/ID`).
    security_groups: BTreeMap<String, SecurityGroupRecord>,
    /// Issue 12: services by store key (`service/CLUSTER/NAME`, `services.rs`).
    services: BTreeMap<String, ServiceRecord>,
    /// Ids of the services' tasks not yet STOPPED, by (cluster ARN, group `service:NAME`)
    /// (kept by `put_task`).
    service_tasks: HashMap<(String, String), BTreeSet<String>>,
    /// Ids of services' tasks that reached RUNNING or STOPPED since the scheduler's last pass
    /// (kept by `put_task`, drained by the scheduler; memory only: a restart loses only what
    /// feeds the failure counts, never a task).
    service_task_news: Vec<String>,
    /// What the tasks not yet STOPPED hold, by container instance ARN (kept by `put_task`;
    /// `load.rs`).
    loads: HashMap<String, load::InstanceLoad>,
    /// What each task in `loads` added there, by task id.
    held: HashMap<String, load::Held>,
    /// Issue 12 (link protocol 2): each task's latest revision (set from `next_rev` by every
    /// `put_task`) and the instance ARNs whose journal holds it, by task id; removed with the
    /// task's record.
    task_revs: HashMap<String, (u64, Vec<String>)>,
    /// Per instance ARN: the tasks ever on it whose record is still kept, one entry each, by
    /// the revision of their latest change. A session of protocol 2 reads it from the last
    /// revision it saw (`agent_link.rs`).
    journal: HashMap<String, BTreeMap<u64, String>>,
    /// The last revision handed out (memory only: sessions compare revisions of this process).
    next_rev: u64,
    /// How many task records were purged (`forget_journal`): a session that saw another
    /// count looks for purged tasks it named.
    purges: u64,
}

/// The controller: clusters, task definitions, tasks and container instances.
pub struct Controller {
    state: tokio::sync::Mutex<State>,
    store: Arc<dyn Store>,
    fleet: Arc<Fleet>,
    /// Issue 9: the latest stats sample of each running task, by task id (memory only).
    stats: std::sync::Mutex<HashMap<String, berth_proto::v1::TaskStats>>,
    /// Issue 11: the latest image pull progress of each task, by task id (memory only).
    pull_progress: std::sync::Mutex<HashMap<String, berth_proto::v1::TaskPullProgress>>,
    /// Issue 12: the services scheduler's settings.
    service_config: ServiceSchedulerConfig,
    /// Issue 12: RunTasks waiting to share a store transaction (`run_batch.rs`).
    run_queue: std::sync::Mutex<std::collections::VecDeque<run_batch::QueuedRun>>,
}

fn decode<M: Message + Default>(key: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::decode(bytes).map_err(|source| StoreError::Decode {
        key: key.to_string(),
        source,
    })
}

pub(crate) fn put<M: Message>(key: String, m: &M) -> Write {
    Write::Put(key, m.encode_to_vec())
}

pub(crate) fn taskdef_key(family: &str, revision: i32) -> String {
    format!("{TASKDEF_PREFIX}{family}/{revision:010}")
}

pub(crate) use berth_proto::now;

/// A new ECS-style id: 32 lowercase hex digits.
pub(crate) fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Controller {
    /// Loads the controller's state from `store`.
    pub fn load(store: Arc<dyn Store>, fleet: Arc<Fleet>) -> Result<Self, StoreError> {
        let mut state = State::default();
        for (k, v) in store.scan(CLUSTER_PREFIX)? {
            let c: Cluster = decode(&k, &v)?;
            state.clusters.insert(c.cluster_name.clone(), c);
        }
        for (k, v) in store.scan(TASKDEF_PREFIX)? {
            let r: RegisterTaskDefinitionResponse = decode(&k, &v)?;
            if let Some(td) = &r.task_definition {
                state
                    .task_definitions
                    .entry(td.family.clone())
                    .or_default()
                    .insert(td.revision, r.clone());
            }
        }
        for (k, _) in store.scan(UNCONFIRMED_PREFIX)? {
            state
                .unconfirmed
                .insert(k[UNCONFIRMED_PREFIX.len()..].to_string());
        }
        for (k, v) in store.scan(TASK_PREFIX)? {
            let t: Task = decode(&k, &v)?;
            state.put_task(k[TASK_PREFIX.len()..].to_string(), t);
        }
        for (k, v) in store.scan(INSTANCE_PREFIX)? {
            let r: ContainerInstanceRecord = decode(&k, &v)?;
            let id = k[INSTANCE_PREFIX.len()..].to_string();
            if r.container_instance
                .as_ref()
                .is_some_and(instances::is_inactive)
            {
                state
                    .inactive
                    .insert((r.deregistered_at.map_or(0, |t| t.seconds), id.clone()));
            }
            state.instances.insert(id, r);
        }
        for (k, v) in store.scan(networking::TASK_NETWORK_PREFIX)? {
            let r: TaskNetworkRecord = decode(&k, &v)?;
            state
                .task_networks
                .insert(k[networking::TASK_NETWORK_PREFIX.len()..].to_string(), r);
        }
        for (k, v) in store.scan(security_groups::SECURITY_GROUP_PREFIX)? {
            let r: SecurityGroupRecord = decode(&k, &v)?;
            state.security_groups.insert(
                k[security_groups::SECURITY_GROUP_PREFIX.len()..].to_string(),
                r,
            );
        }
        // Every ACTIVE cluster has its `default` security group; clusters that predate them
        // get it now.
        let active: Vec<String> = state
            .clusters
            .values()
            .filter(|c| c.status == "ACTIVE")
            .map(|c| c.cluster_name.clone())
            .collect();
        let defaults = state.missing_default_groups(active.iter().map(String::as_str));
        if !defaults.is_empty() {
            store.commit(defaults.iter().map(security_groups::group_write).collect())?;
            for d in defaults {
                state.insert_group(d);
            }
        }
        for (k, v) in store.scan(services::SERVICE_PREFIX)? {
            let r: ServiceRecord = decode(&k, &v)?;
            state.services.insert(k, r);
        }
        for (k, v) in store.scan(idempotency::RUN_TOKEN_PREFIX)? {
            let r: RunTaskTokenRecord = decode(&k, &v)?;
            state.run_tokens.insert(r.client_token.clone(), r);
        }
        Ok(Self {
            state: tokio::sync::Mutex::new(state),
            store,
            fleet,
            stats: Default::default(),
            pull_progress: Default::default(),
            service_config: ServiceSchedulerConfig::default(),
            run_queue: Default::default(),
        })
    }

    /// Sets the services scheduler's settings (before the controller is shared).
    pub fn with_service_config(mut self, config: ServiceSchedulerConfig) -> Self {
        self.service_config = config;
        self
    }

    /// The agent sessions this controller serves.
    pub fn fleet(&self) -> &Arc<Fleet> {
        &self.fleet
    }

    fn commit(&self, writes: Vec<Write>) -> Result<(), EcsError> {
        self.store.commit(writes).map_err(EcsError::from)
    }
}

/// The cluster name a request means: its short name or ARN, or "default".
pub(crate) fn cluster_name(cluster: Option<&str>) -> Result<String, EcsError> {
    match cluster.filter(|c| !c.is_empty()) {
        None => Ok(DEFAULT_CLUSTER.to_string()),
        Some(c) => berth_proto::arn::resource("cluster", c)
            .map(str::to_string)
            .ok_or_else(|| EcsError::invalid(format!("cluster: '{c}' is not a cluster ARN"))),
    }
}

#[cfg(test)]
mod instance_tests;
#[cfg(test)]
mod lifecycle_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod service_tests;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;
