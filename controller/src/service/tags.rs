//! TagResource, UntagResource, ListTagsForResource on clusters, task definitions, tasks and
//! container instances. Tags live in each object's own stored record, so they are written in the
//! same transaction as the object and leave with it.

use super::clusters::validate_tags;
use super::{put, taskdef_key, Controller, State, CLUSTER_PREFIX, INSTANCE_PREFIX, TASK_PREFIX};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::arn;
use berth_proto::v1::*;

/// The taggable object an ARN names.
enum Resource {
    Cluster(String),
    /// Family and revision.
    TaskDefinition(String, i32),
    /// Task id.
    Task(String),
    /// Container instance id.
    ContainerInstance(String),
}

/// A change to the in-memory view, applied once its write is committed.
type ApplyToView = Box<dyn FnOnce(&mut State) + Send>;

fn not_found() -> EcsError {
    EcsError::invalid("The specified resource is not found.")
}

fn invalid_arn(given: &str) -> EcsError {
    EcsError::invalid(format!(
        "resourceArn: The ARN provided is invalid ('{given}')."
    ))
}

impl State {
    /// Finds what `resource_arn` names: an unknown cluster (of the resource or the cluster
    /// itself) is ClusterNotFoundException, anything else unknown InvalidParameterException.
    fn tagged(&self, resource_arn: &str) -> Result<Resource, EcsError> {
        // arn:partition:ecs:region:account:KIND/REST
        let resource = resource_arn
            .strip_prefix("arn:")
            .and_then(|_| resource_arn.splitn(6, ':').nth(5))
            .ok_or_else(|| invalid_arn(resource_arn))?;
        let (kind, rest) = resource
            .split_once('/')
            .ok_or_else(|| invalid_arn(resource_arn))?;
        // Tasks and instances: `CLUSTER/ID` (or the old `ID`); the cluster must exist.
        let in_cluster = |rest: &str| -> Result<(Option<String>, String), EcsError> {
            match rest.split_once('/') {
                Some((cluster, id)) => {
                    let c = self.active_cluster(cluster)?;
                    Ok((Some(c.cluster_arn.clone()), id.to_string()))
                }
                None => Ok((None, rest.to_string())),
            }
        };
        match kind {
            "cluster" => {
                self.active_cluster(rest)?;
                Ok(Resource::Cluster(rest.to_string()))
            }
            "task-definition" => {
                let (family, revision) =
                    arn::family_revision(rest).ok_or_else(|| invalid_arn(resource_arn))?;
                self.find_task_definition(rest).map_err(|_| not_found())?;
                Ok(Resource::TaskDefinition(family.to_string(), revision))
            }
            "task" => {
                let (cluster_arn, id) = in_cluster(rest)?;
                match self.tasks.get(&id) {
                    Some(t) if cluster_arn.is_none_or(|c| c == t.cluster_arn) => {
                        Ok(Resource::Task(id))
                    }
                    _ => Err(not_found()),
                }
            }
            "container-instance" => {
                let (cluster_arn, id) = in_cluster(rest)?;
                match self.instances.get(&id) {
                    Some(r) if cluster_arn.is_none_or(|c| c == r.cluster_arn) => {
                        Ok(Resource::ContainerInstance(id))
                    }
                    _ => Err(not_found()),
                }
            }
            // Services, capacity providers and task sets do not exist in Berth (yet).
            "service" | "capacity-provider" | "task-set" => Err(not_found()),
            _ => Err(invalid_arn(resource_arn)),
        }
    }

    fn tags_of(&self, r: &Resource) -> Vec<Tag> {
        match r {
            Resource::Cluster(name) => self
                .clusters
                .get(name)
                .map(|c| c.tags.clone())
                .unwrap_or_default(),
            Resource::TaskDefinition(family, revision) => self
                .task_definitions
                .get(family)
                .and_then(|revs| revs.get(revision))
                .map(|r| r.tags.clone())
                .unwrap_or_default(),
            Resource::Task(id) => self
                .tasks
                .get(id)
                .map(|t| t.tags.clone())
                .unwrap_or_default(),
            Resource::ContainerInstance(id) => self
                .instances
                .get(id)
                .and_then(|r| r.container_instance.as_ref())
                .map(|ci| ci.tags.clone())
                .unwrap_or_default(),
        }
    }

    /// The write that stores `tags` on `r`, and the change to the view once it is committed.
    fn retag(&self, r: &Resource, tags: Vec<Tag>) -> (Write, ApplyToView) {
        match r {
            Resource::Cluster(name) => {
                let mut c = self.clusters.get(name).cloned().unwrap_or_default();
                c.tags = tags;
                let name = name.clone();
                (
                    put(format!("{CLUSTER_PREFIX}{name}"), &c),
                    Box::new(move |st: &mut State| {
                        st.clusters.insert(name, c);
                    }),
                )
            }
            Resource::TaskDefinition(family, revision) => {
                let mut record = self
                    .task_definitions
                    .get(family)
                    .and_then(|revs| revs.get(revision))
                    .cloned()
                    .unwrap_or_default();
                record.tags = tags;
                let (family, revision) = (family.clone(), *revision);
                (
                    put(taskdef_key(&family, revision), &record),
                    Box::new(move |st: &mut State| {
                        st.task_definitions
                            .entry(family)
                            .or_default()
                            .insert(revision, record);
                    }),
                )
            }
            Resource::Task(id) => {
                let mut t = self.tasks.get(id).cloned().unwrap_or_default();
                t.tags = tags;
                let id = id.clone();
                (
                    put(format!("{TASK_PREFIX}{id}"), &t),
                    Box::new(move |st: &mut State| st.put_task(id, t)),
                )
            }
            Resource::ContainerInstance(id) => {
                let mut record = self.instances.get(id).cloned().unwrap_or_default();
                if let Some(ci) = record.container_instance.as_mut() {
                    ci.tags = tags;
                }
                let id = id.clone();
                (
                    put(format!("{INSTANCE_PREFIX}{id}"), &record),
                    Box::new(move |st: &mut State| {
                        st.instances.insert(id, record);
                    }),
                )
            }
        }
    }
}

impl Controller {
    /// TagResource: adds the tags, replacing the values of keys the resource already has.
    pub async fn tag_resource(&self, req: TagResourceRequest) -> Result<(), EcsError> {
        validate_tags(&req.tags)?;
        let mut st = self.state.lock().await;
        let r = st.tagged(&req.resource_arn)?;
        let mut tags = st.tags_of(&r);
        for t in req.tags {
            match tags.iter_mut().find(|have| have.key == t.key) {
                Some(have) => have.value = t.value,
                None => tags.push(t),
            }
        }
        validate_tags(&tags)?;
        let (write, apply) = st.retag(&r, tags);
        self.commit(vec![write])?;
        apply(&mut st);
        Ok(())
    }

    /// UntagResource: removes the tags with these keys (keys the resource lacks change
    /// nothing); keys with the reserved `aws:` prefix are refused.
    pub async fn untag_resource(&self, req: UntagResourceRequest) -> Result<(), EcsError> {
        for (i, k) in req.tag_keys.iter().enumerate() {
            super::clusters::validate_tag_key(&format!("tagKeys[{i}]"), k)?;
        }
        let mut st = self.state.lock().await;
        let r = st.tagged(&req.resource_arn)?;
        let mut tags = st.tags_of(&r);
        tags.retain(|t| !req.tag_keys.contains(&t.key));
        let (write, apply) = st.retag(&r, tags);
        self.commit(vec![write])?;
        apply(&mut st);
        Ok(())
    }

    /// ListTagsForResource.
    pub async fn list_tags_for_resource(&self, resource_arn: &str) -> Result<Vec<Tag>, EcsError> {
        let st = self.state.lock().await;
        let r = st.tagged(resource_arn)?;
        Ok(st.tags_of(&r))
    }
}
