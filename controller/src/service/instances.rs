//! Container instances: registration by agents, ListContainerInstances (with the cluster query
//! language), DescribeContainerInstances, DeregisterContainerInstance, custom attributes
//! (PutAttributes, DeleteAttributes, ListAttributes), and the resources they have left.
//!
//! An instance is ACTIVE from registration until DeregisterContainerInstance makes it INACTIVE
//! for good: its agent is told over the link and exits, registration and sessions under its ARN
//! are refused, and it stays describable (and listed with `--status INACTIVE`).

use super::pagination::{paginate, Page};
use super::tasks::task_id;
use super::validation::{parse_task_cpu, parse_task_memory};
use super::{
    cluster_name, new_id, now, put, Controller, State, DEFAULT_CLUSTER, INSTANCE_PREFIX,
    TASK_PREFIX, UNCONFIRMED_PREFIX,
};
use crate::error::EcsError;
use crate::query::{self, Target};
use crate::scheduler::Candidate;
use crate::store::Write;
use berth_proto::arn;
use berth_proto::status::{ContainerInstanceStatus, ContainerStatus, TaskStatus};
use berth_proto::v1::*;

/// The only attribute target type ECS has.
pub(crate) const TARGET_TYPE: &str = "container-instance";
/// At most this many custom attributes per instance, and per call (ECS).
pub(crate) const MAX_ATTRIBUTES: usize = 10;
/// Attribute name prefixes the agent owns: PutAttributes and DeleteAttributes refuse them, so a
/// user cannot fake (or remove) a capability the host's agent must vouch for.
const AGENT_PREFIXES: [&str; 2] = ["ecs.", "com.amazonaws.ecs."];

/// Registration time in seconds, for the query language.
fn seconds(t: &Option<pbjson_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds)
}

fn check_attribute(i: usize, a: &Attribute) -> Result<(), EcsError> {
    let name_ok = |c: char| c.is_ascii_alphanumeric() || "-_/\\.".contains(c);
    if a.name.is_empty() || a.name.len() > 128 || !a.name.chars().all(name_ok) {
        return Err(EcsError::invalid(format!(
            "attributes[{i}].name: '{}' must be 1-128 letters, numbers, hyphens, underscores, slashes, back slashes or periods",
            a.name
        )));
    }
    if AGENT_PREFIXES.iter().any(|p| a.name.starts_with(p)) {
        return Err(EcsError::invalid(format!(
            "attributes[{i}].name: '{}' is an agent-provided attribute (ecs.* and com.amazonaws.ecs.* are set by the agent at registration)",
            a.name
        )));
    }
    if let Some(v) = &a.value {
        let value_ok = |c: char| c.is_ascii_alphanumeric() || "-_.@/\\: ".contains(c);
        if v.is_empty()
            || v.len() > 128
            || !v.chars().all(value_ok)
            || v.starts_with(' ')
            || v.ends_with(' ')
        {
            return Err(EcsError::invalid(format!(
                "attributes[{i}].value: '{v}' must be 1-128 letters, numbers, spaces (not first or last), hyphens, underscores, periods, at signs, slashes, back slashes or colons"
            )));
        }
    }
    Ok(())
}

/// An instance's status; `None` for one this controller never writes.
pub(crate) fn status(ci: &ContainerInstance) -> Option<ContainerInstanceStatus> {
    ContainerInstanceStatus::parse(&ci.status).ok()
}

/// Whether DeregisterContainerInstance made the instance INACTIVE.
pub(crate) fn is_inactive(ci: &ContainerInstance) -> bool {
    status(ci) == Some(ContainerInstanceStatus::Inactive)
}

/// A resource's integer value from a list of resources.
pub(crate) fn resource_int(resources: &[Resource], name: &str) -> i64 {
    resources
        .iter()
        .find(|r| r.name == name)
        .map(|r| r.integer_value as i64)
        .unwrap_or(0)
}

/// The CPU units and MiB a task holds on its instance until it is STOPPED.
pub(crate) fn task_reservation(t: &Task) -> (i64, i64) {
    let cpu = t.cpu.as_deref().and_then(parse_task_cpu).unwrap_or(0);
    let mem = t.memory.as_deref().and_then(parse_task_memory).unwrap_or(0);
    (cpu, mem)
}

impl State {
    /// CPU units and MiB left on an instance.
    pub(crate) fn remaining(&self, ci: &ContainerInstance) -> (i64, i64) {
        let load = self.loads.get(&ci.container_instance_arn);
        (
            resource_int(&ci.registered_resources, "CPU") - load.map_or(0, |l| l.cpu),
            resource_int(&ci.registered_resources, "MEMORY") - load.map_or(0, |l| l.memory),
        )
    }

    /// Instances of a cluster that can take tasks now: ACTIVE with a connected agent.
    pub(crate) fn candidates(
        &self,
        cluster_arn: &str,
        connected: impl Fn(&str) -> bool,
    ) -> Vec<Candidate> {
        self.instances
            .iter()
            .filter(|(id, r)| r.cluster_arn == cluster_arn && connected(id))
            .filter(|(_, r)| {
                r.container_instance
                    .as_ref()
                    .is_some_and(|ci| status(ci) == Some(ContainerInstanceStatus::Active))
            })
            .map(|(id, r)| self.candidate(r, connected(id)))
            .collect()
    }

    /// An instance as placement sees it.
    pub(crate) fn candidate(&self, r: &ContainerInstanceRecord, connected: bool) -> Candidate {
        let none = ContainerInstance::default();
        let ci = r.container_instance.as_ref().unwrap_or(&none);
        let (cpu, memory) = self.remaining(ci);
        let active_tasks = self
            .loads
            .get(&ci.container_instance_arn)
            .map_or(0, |l| l.wanted);
        Candidate {
            arn: ci.container_instance_arn.clone(),
            cpu,
            memory,
            target: self.target(r, connected),
            active_tasks,
            ports_in_use: self.ports_in_use(ci),
        }
    }

    /// What the cluster query language sees of an instance.
    pub(crate) fn target(&self, r: &ContainerInstanceRecord, connected: bool) -> Target {
        let none = ContainerInstance::default();
        let ci = r.container_instance.as_ref().unwrap_or(&none);
        let mut t = Target {
            // The agent's attributes, then the custom ones (as `attributes`), not copied twice.
            attributes: ci
                .attributes
                .iter()
                .chain(r.custom_attributes.iter())
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            ec2_instance_id: ci.ec2_instance_id.clone(),
            registered_at: seconds(&ci.registered_at),
            agent_connected: connected,
            agent_version: ci
                .version_info
                .as_ref()
                .and_then(|v| v.agent_version.clone()),
            ..Default::default()
        };
        if let Some(l) = self.loads.get(&ci.container_instance_arn) {
            t.running_tasks_count = l.running;
            t.task_groups = l.groups.clone();
        }
        t
    }

    /// The cluster's instance `given` (id or ARN), with its id.
    pub(crate) fn cluster_instance(
        &self,
        cluster_arn: &str,
        given: &str,
    ) -> Option<(String, &ContainerInstanceRecord)> {
        arn::short_id("container-instance", given)
            .and_then(|id| self.instances.get(id).map(|r| (id.to_string(), r)))
            .filter(|(_, r)| r.cluster_arn == cluster_arn)
    }

    pub(crate) fn instance_view(
        &self,
        r: &ContainerInstanceRecord,
        connected: bool,
    ) -> ContainerInstance {
        let mut ci = r.container_instance.clone().unwrap_or_default();
        let (cpu, mem) = self.remaining(&ci);
        let used = self.ports_in_use(&ci);
        ci.remaining_resources = ci
            .registered_resources
            .iter()
            .map(|res| match res.name.as_str() {
                "CPU" => Resource {
                    integer_value: cpu as i32,
                    ..res.clone()
                },
                "MEMORY" => Resource {
                    integer_value: mem as i32,
                    ..res.clone()
                },
                // ECS shows the ports in use (reserved ones included) under remainingResources.
                "PORTS" | "PORTS_UDP" => {
                    let proto = if res.name == "PORTS" { "tcp" } else { "udp" };
                    Resource {
                        string_set_value: used
                            .iter()
                            .filter(|(p, _)| p == proto)
                            .map(|(_, port)| port.to_string())
                            .collect(),
                        ..res.clone()
                    }
                }
                _ => res.clone(),
            })
            .collect();
        // A deregistered instance's session may still be ending: it is not connected.
        ci.agent_connected = connected && !is_inactive(&ci);
        ci.attributes = attributes(r);
        let (tasks, running) = self
            .loads
            .get(&ci.container_instance_arn)
            .map_or((0, 0), |l| (l.tasks, l.running));
        ci.running_tasks_count = running as i32;
        ci.pending_tasks_count = (tasks - running) as i32;
        ci
    }
}

/// An instance's attributes: the agent's, then the custom ones.
pub(crate) fn attributes(r: &ContainerInstanceRecord) -> Vec<Attribute> {
    let agent = r
        .container_instance
        .as_ref()
        .map(|ci| ci.attributes.clone())
        .unwrap_or_default();
    agent
        .into_iter()
        .chain(r.custom_attributes.iter().map(|a| Attribute {
            name: a.name.clone(),
            value: a.value.clone(),
            ..Default::default()
        }))
        .collect()
}

impl Controller {
    /// Registers (or re-registers, keeping its identity) an agent's host as a container instance.
    pub async fn register_container_instance(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, EcsError> {
        self.register_container_instance_with(req, |_, _| Ok::<_, EcsError>(Vec::new()))
            .await
    }

    /// [`Controller::register_container_instance`], committing with the registration the
    /// writes `extra` makes from the instance and its cluster ARN (enrollment: the activation's
    /// count and the certificate's record); an error from `extra` changes nothing.
    pub async fn register_container_instance_with<E: From<EcsError>>(
        &self,
        req: RegisterContainerInstanceRequest,
        extra: impl FnOnce(&ContainerInstance, &str) -> Result<Vec<Write>, E>,
    ) -> Result<ContainerInstance, E> {
        let name = cluster_name(Some(&req.cluster))?;
        if name == DEFAULT_CLUSTER {
            // Like the ECS agent, an agent with no cluster configured creates "default".
            let exists = self.state.lock().await.active_cluster(&name).is_ok();
            if !exists {
                self.create_cluster(CreateClusterRequest {
                    cluster_name: name.clone(),
                    ..Default::default()
                })
                .await?;
            }
        }
        let mut st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        for r in ["CPU", "MEMORY"] {
            if resource_int(&req.total_resources, r) <= 0 {
                return Err(EcsError::invalid(format!(
                    "totalResources: {r} must be a positive integer"
                ))
                .into());
            }
        }
        let known = req
            .container_instance_arn
            .as_deref()
            .and_then(|a| arn::short_id("container-instance", a))
            .filter(|id| {
                st.instances
                    .get(*id)
                    .is_some_and(|r| r.cluster_arn == cluster_arn)
            })
            .map(str::to_string);
        if let Some(r) = known.as_ref().and_then(|id| st.instances.get(id)) {
            if r.container_instance.as_ref().is_some_and(is_inactive) {
                return Err(EcsError::InactiveInstance(
                    req.container_instance_arn.clone().unwrap_or_default(),
                )
                .into());
            }
        }
        let id = known.unwrap_or_else(new_id);
        let previous = st.instances.get(&id).cloned();
        let mut ci = previous
            .as_ref()
            .and_then(|r| r.container_instance.clone())
            .unwrap_or_else(|| ContainerInstance {
                container_instance_arn: arn::container_instance(&name, &id),
                registered_at: Some(now()),
                ..Default::default()
            });
        ci.registered_resources = req.total_resources;
        ci.attributes = req.attributes;
        ci.version_info = req.version_info;
        ci.ec2_instance_id = req.hostname;
        // A DRAINING instance stays DRAINING when its agent registers again (a restart).
        if status(&ci) != Some(ContainerInstanceStatus::Draining) {
            ci.status = ContainerInstanceStatus::Active.into();
        }
        ci.version += 1;
        let mut writes = extra(&ci, &cluster_arn)?;
        let record = ContainerInstanceRecord {
            container_instance: Some(ci),
            cluster_arn,
            ..previous.unwrap_or_default()
        };
        writes.push(put(format!("{INSTANCE_PREFIX}{id}"), &record));
        self.commit(writes)?;
        st.instances.insert(id.clone(), record.clone());
        Ok(st.instance_view(&record, self.fleet.connected(&id)))
    }

    /// ListContainerInstances: the cluster's instances (ARN order), ACTIVE and DRAINING unless a
    /// status is given (INACTIVE ones only with status INACTIVE, a Berth extension: ECS keeps
    /// them describable for about an hour), filtered with the cluster query language, paged.
    pub async fn list_container_instances(
        &self,
        req: ListContainerInstancesRequest,
    ) -> Result<Page<String>, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let filter = req
            .filter
            .as_deref()
            .filter(|f| !f.is_empty())
            .map(|f| query::parse(f).map_err(|e| EcsError::invalid(format!("filter: {e}"))))
            .transpose()?;
        let wanted = req
            .status
            .as_deref()
            .map(|s| {
                ContainerInstanceStatus::parse(s).map_err(|_| {
                    EcsError::invalid(format!("status: '{s}' is not a container instance status"))
                })
            })
            .transpose()?;
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut items: Vec<(String, String)> = st
            .instances
            .iter()
            .filter(|(_, r)| r.cluster_arn == cluster_arn)
            .filter(|(_, r)| {
                r.container_instance
                    .as_ref()
                    .is_some_and(|ci| match wanted {
                        Some(s) => status(ci) == Some(s),
                        None => !is_inactive(ci),
                    })
            })
            .filter(|(id, r)| {
                filter
                    .as_ref()
                    .is_none_or(|f| f.matches(&st.target(r, self.fleet.connected(id))))
            })
            .filter_map(|(_, r)| r.container_instance.as_ref())
            .map(|ci| {
                (
                    ci.container_instance_arn.clone(),
                    ci.container_instance_arn.clone(),
                )
            })
            .collect();
        items.sort();
        paginate(items, false, req.next_token.as_deref(), req.max_results)
    }

    /// DeregisterContainerInstance: the instance becomes INACTIVE and takes no more tasks; its
    /// agent is told and exits. With tasks not yet STOPPED it is refused unless `force`; forced,
    /// those tasks are recorded STOPPED (the host keeps running them, unmanaged, as ECS leaves
    /// them orphaned) with a stoppedReason that says so.
    pub async fn deregister_container_instance(
        &self,
        req: DeregisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if req.container_instance.is_empty() {
            return Err(EcsError::invalid("containerInstance: is required"));
        }
        let mut st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let (id, record) = st
            .cluster_instance(&cluster_arn, &req.container_instance)
            .map(|(id, r)| (id, r.clone()))
            .ok_or_else(|| {
                EcsError::invalid(format!(
                    "containerInstance: '{}' is not a container instance of cluster {name}",
                    req.container_instance
                ))
            })?;
        let mut ci = record.container_instance.clone().unwrap_or_default();
        if is_inactive(&ci) {
            // Already deregistered: nothing changes, as a repeated call should see.
            return Ok(st.instance_view(&record, false));
        }
        let remaining: Vec<(String, Task)> = st
            .active_tasks(&ci.container_instance_arn)
            .map(|(id, t)| (id.clone(), t.clone()))
            .collect();
        if !remaining.is_empty() && req.force != Some(true) {
            return Err(EcsError::invalid(format!(
                "Found running tasks on the instance. ({} task(s) not yet STOPPED on {}; stop them first or deregister with force)",
                remaining.len(),
                ci.container_instance_arn
            )));
        }
        let at = now();
        let mut writes = Vec::new();
        let mut orphaned = Vec::new();
        for (tid, mut t) in remaining {
            t.last_status = TaskStatus::Stopped.as_str().into();
            t.desired_status = TaskStatus::Stopped.as_str().into();
            t.stop_code.get_or_insert_with(|| "UserInitiated".into());
            t.stopped_reason = Some(format!(
                "Container instance {} was deregistered with force: the task was left running on the host, no longer managed by the cluster",
                ci.container_instance_arn
            ));
            t.stopping_at.get_or_insert(at);
            t.stopped_at = Some(at);
            for c in &mut t.containers {
                c.last_status = ContainerStatus::Stopped.as_str().into();
            }
            t.version += 1;
            writes.push(put(format!("{TASK_PREFIX}{tid}"), &t));
            orphaned.push((tid, t));
        }
        // No agent confirmed these stops, nor those still being confirmed to this instance's
        // agent (its `orphans`, which leave with it): each record stays, a persisted
        // tombstone, until an agent reports the task stopped, so a host that still runs it
        // later is told to stop it rather than having it adopted as RUNNING.
        let unconfirmed: Vec<String> = orphaned
            .iter()
            .map(|(tid, _)| tid.clone())
            .chain(
                st.orphans
                    .get(&id)
                    .into_iter()
                    .flatten()
                    .filter_map(|arn| task_id(arn))
                    .filter(|t| st.tasks.contains_key(*t))
                    .map(str::to_string),
            )
            .collect();
        writes.extend(
            unconfirmed
                .iter()
                .map(|t| Write::Put(format!("{UNCONFIRMED_PREFIX}{t}"), Vec::new())),
        );
        ci.status = ContainerInstanceStatus::Inactive.into();
        ci.version += 1;
        let record = ContainerInstanceRecord {
            container_instance: Some(ci),
            deregistered_at: Some(at),
            ..record
        };
        writes.push(put(format!("{INSTANCE_PREFIX}{id}"), &record));
        // Revocation: the instance's client certificates open no more sessions.
        let arn = record
            .container_instance
            .as_ref()
            .map(|c| c.container_instance_arn.clone())
            .unwrap_or_default();
        writes.extend(crate::store::blocking(|| {
            crate::security::pki::Pki::revocation_writes(self.store.as_ref(), &arn, false)
        })?);
        self.commit(writes)?;
        st.unconfirmed.extend(unconfirmed.iter().cloned());
        for (tid, t) in orphaned {
            st.put_task(tid, t);
        }
        // Those already recorded STOPPED leave the retention's index.
        for t in unconfirmed {
            if let Some(task) = st.tasks.get(&t).cloned() {
                st.put_task(t, task);
            }
        }
        st.instances.insert(id.clone(), record.clone());
        st.inactive.insert((at.seconds, id.clone()));
        st.orphans.remove(&id);
        // Its session (if any) sees the instance INACTIVE, tells the agent and ends.
        self.fleet.notify(&id);
        Ok(st.instance_view(&record, false))
    }

    /// Whether the instance `id` is registered and not deregistered.
    pub async fn instance_active(&self, id: &str) -> bool {
        self.state
            .lock()
            .await
            .instances
            .get(id)
            .and_then(|r| r.container_instance.as_ref())
            .is_some_and(|ci| !is_inactive(ci))
    }

    /// The ARN of the instance `id` if it was deregistered.
    pub async fn instance_inactive(&self, id: &str) -> Option<String> {
        self.state
            .lock()
            .await
            .instances
            .get(id)
            .and_then(|r| r.container_instance.as_ref())
            .filter(|ci| is_inactive(ci))
            .map(|ci| ci.container_instance_arn.clone())
    }

    /// Resolves an attribute's target in the cluster: an instance ARN, or an id with targetType
    /// container-instance. Unknown and INACTIVE instances are TargetNotFoundException.
    fn attribute_target(
        st: &State,
        cluster_arn: &str,
        i: usize,
        a: &Attribute,
    ) -> Result<String, EcsError> {
        let target_type = a.target_type.as_deref().unwrap_or_default();
        let target_id = a.target_id.as_deref().unwrap_or_default();
        if !target_type.is_empty() && target_type != TARGET_TYPE {
            return Err(EcsError::invalid(format!(
                "attributes[{i}].targetType: '{target_type}' is not {TARGET_TYPE}"
            )));
        }
        if target_id.is_empty() {
            return Err(EcsError::invalid(format!(
                "attributes[{i}].targetId: is required"
            )));
        }
        if !target_id.starts_with("arn:") && target_type.is_empty() {
            return Err(EcsError::invalid(format!(
                "attributes[{i}].targetType: is required when targetId is a short id ('{target_id}')"
            )));
        }
        st.cluster_instance(cluster_arn, target_id)
            .filter(|(_, r)| {
                r.container_instance
                    .as_ref()
                    .is_some_and(|ci| !is_inactive(ci))
            })
            .map(|(id, _)| id)
            .ok_or_else(|| {
                EcsError::TargetNotFound(format!(
                    "Could not find {target_id}. (attributes[{i}].targetId is not an active container instance of this cluster)"
                ))
            })
    }

    /// PutAttributes: creates or replaces custom attributes of container instances, at most 10
    /// per call and per instance. All or nothing.
    pub async fn put_attributes(
        &self,
        req: PutAttributesRequest,
    ) -> Result<Vec<Attribute>, EcsError> {
        self.change_attributes(req.cluster, req.attributes, true)
            .await
    }

    /// DeleteAttributes: removes custom attributes (a value, if given, must be the stored one).
    pub async fn delete_attributes(
        &self,
        req: DeleteAttributesRequest,
    ) -> Result<Vec<Attribute>, EcsError> {
        self.change_attributes(req.cluster, req.attributes, false)
            .await
    }

    async fn change_attributes(
        &self,
        cluster: Option<String>,
        given: Vec<Attribute>,
        put_them: bool,
    ) -> Result<Vec<Attribute>, EcsError> {
        let name = cluster_name(cluster.as_deref())?;
        if given.is_empty() {
            return Err(EcsError::invalid("attributes: give at least one attribute"));
        }
        if given.len() > MAX_ATTRIBUTES {
            return Err(EcsError::invalid(format!(
                "attributes: at most {MAX_ATTRIBUTES} attributes per call, {} given",
                given.len()
            )));
        }
        for (i, a) in given.iter().enumerate() {
            check_attribute(i, a)?;
        }
        let mut st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut changed: std::collections::BTreeMap<String, ContainerInstanceRecord> =
            Default::default();
        let mut out = Vec::new();
        for (i, a) in given.iter().enumerate() {
            let id = Self::attribute_target(&st, &cluster_arn, i, a)?;
            let record = changed
                .entry(id.clone())
                .or_insert_with(|| st.instances.get(&id).cloned().unwrap_or_default());
            let arn = record
                .container_instance
                .as_ref()
                .map(|ci| ci.container_instance_arn.clone())
                .unwrap_or_default();
            let stored = Attribute {
                name: a.name.clone(),
                value: a.value.clone(),
                target_type: Some(TARGET_TYPE.into()),
                target_id: Some(arn.clone()),
            };
            let existing = record
                .custom_attributes
                .iter()
                .position(|x| x.name == a.name);
            if put_them {
                let kept = Attribute {
                    name: a.name.clone(),
                    value: a.value.clone(),
                    ..Default::default()
                };
                match existing {
                    Some(p) => record.custom_attributes[p] = kept,
                    None => record.custom_attributes.push(kept),
                }
                if record.custom_attributes.len() > MAX_ATTRIBUTES {
                    return Err(EcsError::AttributeLimitExceeded(format!(
                        "attributes[{i}]: container instance {} would have more than {MAX_ATTRIBUTES} custom attributes",
                        arn
                    )));
                }
            } else if let Some(p) = existing {
                let have = &record.custom_attributes[p];
                if a.value.is_some() && have.value != a.value {
                    return Err(EcsError::invalid(format!(
                        "attributes[{i}].value: '{}' is not the value of {} on {} (omit the value to delete the attribute)",
                        a.value.as_deref().unwrap_or_default(),
                        a.name,
                        arn
                    )));
                }
                record.custom_attributes.remove(p);
            }
            out.push(stored);
        }
        let writes = changed
            .iter()
            .map(|(id, r)| put(format!("{INSTANCE_PREFIX}{id}"), r))
            .collect();
        self.commit(writes)?;
        st.instances.extend(changed);
        // Issue 12: a DAEMON service's constraints may now match another set of instances.
        self.fleet.wake_services();
        Ok(out)
    }

    /// ListAttributes: every attribute (the agent's and custom ones) of the cluster's instances
    /// not INACTIVE, optionally only those of a name (and value), paged.
    pub async fn list_attributes(
        &self,
        req: ListAttributesRequest,
    ) -> Result<Page<Attribute>, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if req.target_type != TARGET_TYPE {
            return Err(EcsError::invalid(format!(
                "targetType: '{}' is not {TARGET_TYPE}",
                req.target_type
            )));
        }
        if req.attribute_value.is_some() && req.attribute_name.is_none() {
            return Err(EcsError::invalid(
                "attributeValue: can only be given with attributeName",
            ));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut items: Vec<(String, Attribute)> = st
            .instances
            .values()
            .filter(|r| r.cluster_arn == cluster_arn)
            .filter_map(|r| {
                let ci = r.container_instance.as_ref()?;
                (!is_inactive(ci)).then(|| (ci.container_instance_arn.clone(), attributes(r)))
            })
            .flat_map(|(arn, attrs)| {
                attrs.into_iter().map(move |a| Attribute {
                    target_type: Some(TARGET_TYPE.into()),
                    target_id: Some(arn.clone()),
                    ..a
                })
            })
            .filter(|a| req.attribute_name.as_ref().is_none_or(|n| &a.name == n))
            .filter(|a| req.attribute_value.is_none() || a.value == req.attribute_value)
            .map(|a| {
                let key = format!(
                    "{}\u{0}{}",
                    a.target_id.as_deref().unwrap_or_default(),
                    a.name
                );
                (key, a)
            })
            .collect();
        items.sort_by(|a, b| a.0.cmp(&b.0));
        paginate(items, false, req.next_token.as_deref(), req.max_results)
    }

    /// DescribeContainerInstances.
    pub async fn describe_container_instances(
        &self,
        req: DescribeContainerInstancesRequest,
    ) -> Result<DescribeContainerInstancesResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        if req.container_instances.is_empty() {
            return Err(EcsError::invalid(
                "containerInstances: give at least one container instance id or ARN",
            ));
        }
        let mut out = DescribeContainerInstancesResponse::default();
        for given in req.container_instances {
            let found = arn::short_id("container-instance", &given)
                .and_then(|id| st.instances.get(id).map(|r| (id, r)))
                .filter(|(_, r)| r.cluster_arn == cluster_arn);
            match found {
                Some((id, r)) => {
                    let mut ci = st.instance_view(r, self.fleet.connected(id));
                    // Tags are shown only when asked for, as ECS does.
                    if !req.include.iter().any(|i| i == "TAGS") {
                        ci.tags.clear();
                    }
                    out.container_instances.push(ci)
                }
                None => out.failures.push(super::tasks::missing(&given, |id| {
                    arn::container_instance(&name, id)
                })),
            }
        }
        Ok(out)
    }
}
