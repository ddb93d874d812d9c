//! Container instances: registration by agents, ListContainerInstances,
//! DescribeContainerInstances, and the resources they have left.

use super::validation::{parse_task_cpu, parse_task_memory};
use super::{cluster_name, new_id, now, put, Controller, State, DEFAULT_CLUSTER, INSTANCE_PREFIX};
use crate::error::EcsError;
use crate::scheduler::Candidate;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::*;

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
    fn instance_tasks<'a>(&'a self, instance_arn: &'a str) -> impl Iterator<Item = &'a Task> + 'a {
        self.active_tasks(instance_arn).map(|(_, t)| t)
    }

    /// CPU units and MiB left on an instance.
    pub(crate) fn remaining(&self, ci: &ContainerInstance) -> (i64, i64) {
        let (mut cpu, mut mem) = (
            resource_int(&ci.registered_resources, "CPU"),
            resource_int(&ci.registered_resources, "MEMORY"),
        );
        for t in self.instance_tasks(&ci.container_instance_arn) {
            let (c, m) = task_reservation(t);
            cpu -= c;
            mem -= m;
        }
        (cpu, mem)
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
            .filter_map(|(_, r)| r.container_instance.as_ref())
            .filter(|ci| ci.status == "ACTIVE")
            .map(|ci| {
                let (cpu, memory) = self.remaining(ci);
                Candidate {
                    arn: ci.container_instance_arn.clone(),
                    cpu,
                    memory,
                    attributes: ci.attributes.iter().map(|a| a.name.clone()).collect(),
                }
            })
            .collect()
    }

    fn instance_view(&self, r: &ContainerInstanceRecord, connected: bool) -> ContainerInstance {
        let mut ci = r.container_instance.clone().unwrap_or_default();
        let (cpu, mem) = self.remaining(&ci);
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
                _ => res.clone(),
            })
            .collect();
        ci.agent_connected = connected;
        let (mut running, mut pending) = (0, 0);
        for t in self.instance_tasks(&ci.container_instance_arn) {
            if TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Running) {
                running += 1;
            } else {
                pending += 1;
            }
        }
        ci.running_tasks_count = running;
        ci.pending_tasks_count = pending;
        ci
    }
}

impl Controller {
    /// Registers (or re-registers, keeping its identity) an agent's host as a container instance.
    pub async fn register_container_instance(
        &self,
        req: RegisterContainerInstanceRequest,
    ) -> Result<ContainerInstance, EcsError> {
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
                )));
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
        ci.status = "ACTIVE".into();
        ci.version += 1;
        let record = ContainerInstanceRecord {
            container_instance: Some(ci),
            cluster_arn,
            ..previous.unwrap_or_default()
        };
        self.commit(vec![put(format!("{INSTANCE_PREFIX}{id}"), &record)])?;
        st.instances.insert(id.clone(), record.clone());
        Ok(st.instance_view(&record, self.fleet.connected(&id)))
    }

    /// ListContainerInstances.
    pub async fn list_container_instances(
        &self,
        req: ListContainerInstancesRequest,
    ) -> Result<Vec<String>, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if let Some(f) = req.filter.as_deref().filter(|f| !f.is_empty()) {
            // Refused by name rather than ignored: a script would act on every instance.
            return Err(EcsError::invalid(format!(
                "filter: the cluster query language is not supported by Berth yet ('{f}')"
            )));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        if let Some(s) = &req.status {
            if ![
                "ACTIVE",
                "DRAINING",
                "REGISTERING",
                "DEREGISTERING",
                "REGISTRATION_FAILED",
            ]
            .contains(&s.as_str())
            {
                return Err(EcsError::invalid(format!(
                    "status: '{s}' is not a container instance status"
                )));
            }
        }
        Ok(st
            .instances
            .values()
            .filter(|r| r.cluster_arn == cluster_arn)
            .filter_map(|r| r.container_instance.as_ref())
            .filter(|ci| match &req.status {
                Some(s) => &ci.status == s,
                None => ci.status != "INACTIVE",
            })
            .map(|ci| ci.container_instance_arn.clone())
            .collect())
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
                None => out.failures.push(Failure {
                    arn: given,
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }
}
