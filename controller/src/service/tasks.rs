//! RunTask, StopTask, ListTasks, DescribeTasks. The agent link's half (desired tasks, state
//! changes, adoption) is in `agent_link.rs`.

use super::pagination::{paginate, Page};
use super::validation::{
    parse_task_cpu, parse_task_memory, task_cpu_value, task_memory_value, task_needs,
};
use super::{cluster_name, new_id, now, put, Controller, State, TASK_PREFIX};
use crate::error::EcsError;
use crate::scheduler;
use berth_proto::arn;
use berth_proto::status::{ContainerStatus, TaskStatus};
use berth_proto::v1::*;

pub(crate) fn task_id(name_or_arn: &str) -> Option<&str> {
    arn::short_id("task", name_or_arn)
}

impl State {
    fn cluster_task(&self, cluster_arn: &str, given: &str) -> Option<&Task> {
        task_id(given)
            .and_then(|id| self.tasks.get(id))
            .filter(|t| t.cluster_arn == cluster_arn)
    }
}

/// Applies container overrides to a definition's containers.
fn apply_overrides(
    td: &TaskDefinition,
    overrides: &TaskOverride,
) -> Result<Vec<ContainerDefinition>, EcsError> {
    let mut containers = td.container_definitions.clone();
    for o in &overrides.container_overrides {
        let Some(c) = containers.iter_mut().find(|c| c.name == o.name) else {
            return Err(EcsError::invalid(format!(
                "overrides.containerOverrides: override for container named '{}' is not a container in the TaskDefinition",
                o.name
            )));
        };
        if !o.command.is_empty() {
            c.command = o.command.clone();
        }
        for kv in &o.environment {
            match c.environment.iter_mut().find(|e| e.name == kv.name) {
                Some(e) => e.value = kv.value.clone(),
                None => c.environment.push(kv.clone()),
            }
        }
        if let Some(v) = o.cpu {
            if v < 0 {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{}].cpu: {v} must not be negative",
                    o.name
                )));
            }
            c.cpu = Some(v);
        }
        if let Some(v) = o.memory {
            if v < 6 {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{}].memory: {v} is below the minimum of 6 MiB",
                    o.name
                )));
            }
            c.memory = Some(v);
        }
        if let Some(v) = o.memory_reservation {
            if v <= 0 || c.memory.is_some_and(|m| v > m) {
                return Err(EcsError::invalid(format!(
                    "overrides.containerOverrides[{}].memoryReservation: {v} must be positive and at most the container's memory",
                    o.name
                )));
            }
            c.memory_reservation = Some(v);
        }
    }
    Ok(containers)
}

/// The attributes an instance needs to run these containers (ECS's requiresAttributes): a
/// privileged container needs an agent that allows them.
fn required_attributes(containers: &[ContainerDefinition]) -> Vec<String> {
    let mut out = Vec::new();
    if containers.iter().any(|c| c.privileged == Some(true)) {
        out.push("ecs.capability.privileged-container".to_string());
    }
    out
}

/// The task definition an agent runs: the registered one with the task's overrides applied.
/// Task-level cpu and memory go as plain units and MiB ("1 vCPU" → "1024", "2 GB" → "2048"),
/// the form the agent's cgroup limits take.
pub(crate) fn effective_definition(td: &TaskDefinition, task: &Task) -> TaskDefinition {
    let mut out = td.clone();
    if let Some(o) = &task.overrides {
        if let Ok(c) = apply_overrides(td, o) {
            out.container_definitions = c;
        }
        if o.cpu.is_some() {
            out.cpu = o.cpu.clone();
        }
        if o.memory.is_some() {
            out.memory = o.memory.clone();
        }
    }
    out.cpu = out
        .cpu
        .map(|c| parse_task_cpu(&c).map_or(c, |units| units.to_string()));
    out.memory = out
        .memory
        .map(|m| parse_task_memory(&m).map_or(m, |mib| mib.to_string()));
    out
}

impl Controller {
    /// RunTask: places `count` tasks on the cluster's instances.
    pub async fn run_task(&self, req: RunTaskRequest) -> Result<RunTaskResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let count = req.count.unwrap_or(1);
        if !(1..=10).contains(&count) {
            return Err(EcsError::invalid(format!("count: {count} is outside 1-10")));
        }
        let launch_type = req.launch_type.clone().unwrap_or_else(|| "EC2".into());
        if !["EC2", "EXTERNAL", "FARGATE"].contains(&launch_type.as_str()) {
            return Err(EcsError::invalid(format!(
                "launchType: '{launch_type}' is not one of EC2, EXTERNAL, FARGATE"
            )));
        }
        if req.task_definition.is_empty() {
            return Err(EcsError::invalid("taskDefinition: is required"));
        }
        if let Some(s) = &req.started_by {
            if s.len() > 128 {
                return Err(EcsError::invalid("startedBy: at most 128 characters"));
            }
        }
        super::clusters::validate_tags(&req.tags)?;
        let overrides = req.overrides.clone().unwrap_or_default();
        let mut st = self.state.lock().await;
        if let Some(first) = st.replay_run_task(&req)? {
            return Ok(first);
        }
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let td = st
            .find_task_definition(&req.task_definition)?
            .task_definition
            .clone()
            .unwrap_or_default();
        if td.status != "ACTIVE" {
            return Err(EcsError::client(format!(
                "TaskDefinition is inactive: {} was deregistered and cannot run new tasks",
                td.task_definition_arn
            )));
        }
        if launch_type == "FARGATE" && td.network_mode != "awsvpc" {
            return Err(EcsError::invalid(
                "launchType: FARGATE tasks need a task definition with networkMode awsvpc",
            ));
        }
        let containers = apply_overrides(&td, &overrides)?;
        // The registration rules, ECS's "1 vCPU" / "2 GB" forms included.
        // RunTask answers InvalidParameterException where registration answers ClientException.
        let as_invalid = |e: EcsError| EcsError::invalid(e.to_string());
        if let Some(c) = &overrides.cpu {
            task_cpu_value("overrides.cpu", c).map_err(as_invalid)?;
        }
        if let Some(m) = &overrides.memory {
            task_memory_value("overrides.memory", m).map_err(as_invalid)?;
        }
        let task_cpu = overrides.cpu.clone().or(td.cpu.clone());
        let task_memory = overrides.memory.clone().or(td.memory.clone());
        let (cpu_need, mem_need) =
            task_needs(task_cpu.as_deref(), task_memory.as_deref(), &containers);
        let fleet = self.fleet.clone();
        let mut candidates = st.candidates(&cluster_arn, |id| fleet.connected(id));
        // Registered and ACTIVE but with no agent in step: named as failures (ECS's AGENT) when
        // nothing else takes the task, never silently skipped.
        let disconnected: Vec<String> = st
            .candidates(&cluster_arn, |id| !fleet.connected(id))
            .into_iter()
            .map(|c| c.arn)
            .collect();
        if candidates.is_empty() && disconnected.is_empty() {
            return Err(EcsError::invalid(
                "No Container Instances were found in your cluster.",
            ));
        }
        let mut out = RunTaskResponse::default();
        let needs = scheduler::Needs {
            cpu: cpu_need,
            memory: mem_need,
            attributes: required_attributes(&containers),
        };
        let mut writes = Vec::new();
        let mut placed = Vec::new();
        for _ in 0..count {
            let i = match scheduler::place(&mut candidates, &needs) {
                Ok(i) => i,
                Err(mut failures) => {
                    failures.extend(disconnected.iter().map(|arn| (arn.clone(), "AGENT")));
                    for (arn, reason) in failures {
                        if !out.failures.iter().any(|f| f.arn == arn) {
                            let detail = (reason == "ATTRIBUTE").then(|| {
                                format!(
                                    "the container instance lacks the attribute(s) the task requires: {}",
                                    needs.attributes.join(", ")
                                )
                            });
                            out.failures.push(Failure {
                                arn,
                                reason: reason.into(),
                                detail,
                            });
                        }
                    }
                    continue;
                }
            };
            let instance_arn = candidates[i].arn.clone();
            let instance_id = arn::short_id("container-instance", &instance_arn)
                .unwrap_or_default()
                .to_string();
            let az = st
                .instances
                .get(&instance_id)
                .and_then(|r| r.container_instance.as_ref())
                .and_then(|ci| {
                    ci.attributes
                        .iter()
                        .find(|a| a.name == "ecs.availability-zone")
                        .and_then(|a| a.value.clone())
                });
            let id = new_id();
            let task_arn = arn::task(&name, &id);
            let task = Task {
                task_arn: task_arn.clone(),
                cluster_arn: cluster_arn.clone(),
                task_definition_arn: td.task_definition_arn.clone(),
                container_instance_arn: Some(instance_arn),
                overrides: Some(overrides.clone()),
                last_status: TaskStatus::Provisioning.as_str().into(),
                desired_status: TaskStatus::Running.as_str().into(),
                cpu: Some(cpu_need.to_string()),
                memory: Some(mem_need.to_string()),
                containers: containers
                    .iter()
                    .map(|c| Container {
                        container_arn: arn::container(&name, &id, &new_id()),
                        task_arn: task_arn.clone(),
                        name: c.name.clone(),
                        image: c.image.clone(),
                        last_status: ContainerStatus::Pending.as_str().into(),
                        health_status: "UNKNOWN".into(),
                        cpu: c.cpu.map(|v| v.to_string()),
                        memory: c.memory.map(|v| v.to_string()),
                        memory_reservation: c.memory_reservation.map(|v| v.to_string()),
                        ..Default::default()
                    })
                    .collect(),
                started_by: req.started_by.clone(),
                version: 1,
                group: Some(
                    req.group
                        .clone()
                        .unwrap_or_else(|| format!("family:{}", td.family)),
                ),
                launch_type: launch_type.clone(),
                health_status: "UNKNOWN".into(),
                tags: req.tags.clone(),
                availability_zone: az,
                created_at: Some(now()),
                ..Default::default()
            };
            writes.push(put(format!("{TASK_PREFIX}{id}"), &task));
            placed.push((id, instance_id, task));
        }
        let token = State::run_token_record(
            &req,
            &out,
            placed.iter().map(|(_, _, t)| t.task_arn.clone()),
        )
        .map(|(write, record)| {
            writes.push(write);
            record
        });
        self.commit(writes)?;
        if let Some(record) = token {
            st.remember_run_token(record);
        }
        for (id, instance_id, task) in placed {
            st.put_task(id, task.clone());
            self.fleet.notify(&instance_id);
            out.tasks.push(task);
        }
        Ok(out)
    }

    /// StopTask: sets the task's desired status to STOPPED; its agent stops it.
    pub async fn stop_task(&self, req: StopTaskRequest) -> Result<Task, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if let Some(r) = &req.reason {
            if r.len() > 255 {
                return Err(EcsError::invalid("reason: at most 255 characters"));
            }
        }
        let mut st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut task = st
            .cluster_task(&cluster_arn, &req.task)
            .cloned()
            .ok_or_else(|| EcsError::invalid("The referenced task was not found."))?;
        if task.desired_status == TaskStatus::Stopped.as_str() {
            return Ok(task);
        }
        task.desired_status = TaskStatus::Stopped.as_str().into();
        task.stop_code = Some("UserInitiated".into());
        task.stopped_reason = Some(
            req.reason
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "Task stopped by user".into()),
        );
        task.stopping_at = Some(now());
        task.version += 1;
        let id = task_id(&task.task_arn).unwrap_or_default().to_string();
        self.commit(vec![put(format!("{TASK_PREFIX}{id}"), &task)])?;
        st.put_task(id, task.clone());
        if let Some(instance) = task
            .container_instance_arn
            .as_deref()
            .and_then(|a| arn::short_id("container-instance", a))
        {
            self.fleet.notify(instance);
        }
        Ok(task)
    }

    /// ListTasks: task ARNs filtered as ECS filters them (desiredStatus RUNNING by default), a
    /// page at a time, in task id order.
    pub async fn list_tasks(&self, req: ListTasksRequest) -> Result<Page<String>, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let given = req
            .desired_status
            .as_deref()
            .unwrap_or("RUNNING")
            .to_ascii_uppercase();
        let desired = match TaskStatus::parse(&given) {
            Ok(s @ (TaskStatus::Running | TaskStatus::Pending | TaskStatus::Stopped)) => s,
            _ => {
                return Err(EcsError::invalid(format!(
                    "desiredStatus: '{given}' is not RUNNING, PENDING or STOPPED"
                )))
            }
        };
        if req.family.is_some() && req.service_name.is_some() {
            return Err(EcsError::invalid(
                "family and serviceName cannot both be given",
            ));
        }
        // No services exist yet: a service filter never matches, and must not be ignored.
        if let Some(service) = &req.service_name {
            self.state.lock().await.active_cluster(&name)?;
            return Err(EcsError::ServiceNotFound(service.clone()));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let instance = req.container_instance.as_deref().map(|ci| {
            arn::short_id("container-instance", ci)
                .unwrap_or(ci)
                .to_string()
        });
        let listed = st
            .tasks
            .iter()
            .filter(|(_, t)| t.cluster_arn == cluster_arn)
            .filter(|(_, t)| {
                let wants = TaskStatus::parse(&t.desired_status);
                match desired {
                    // ECS accepts PENDING but no task is ever desired PENDING: nothing.
                    TaskStatus::Pending => false,
                    d => wants == Ok(d),
                }
            })
            .filter(|(_, t)| {
                req.family.as_deref().is_none_or(|f| {
                    arn::resource("task-definition", &t.task_definition_arn)
                        .and_then(|r| r.rsplit_once(':'))
                        .is_some_and(|(fam, _)| fam == f)
                })
            })
            .filter(|(_, t)| {
                req.started_by
                    .as_deref()
                    .is_none_or(|s| t.started_by.as_deref() == Some(s))
            })
            .filter(|(_, t)| {
                instance.as_deref().is_none_or(|i| {
                    t.container_instance_arn
                        .as_deref()
                        .and_then(|a| arn::short_id("container-instance", a))
                        == Some(i)
                })
            })
            .filter(|(_, t)| {
                req.launch_type
                    .as_deref()
                    .is_none_or(|l| t.launch_type == l)
            })
            .map(|(id, t)| (id.clone(), t.task_arn.clone()));
        paginate(listed, false, req.next_token.as_deref(), req.max_results)
    }

    /// DescribeTasks: found tasks, and a MISSING failure for each unknown one.
    pub async fn describe_tasks(
        &self,
        req: DescribeTasksRequest,
    ) -> Result<DescribeTasksResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if req.tasks.is_empty() {
            return Err(EcsError::invalid("tasks: give at least one task id or ARN"));
        }
        if req.tasks.len() > 100 {
            return Err(EcsError::invalid("tasks: at most 100 tasks per call"));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut out = DescribeTasksResponse::default();
        for given in req.tasks {
            match st.cluster_task(&cluster_arn, &given) {
                Some(t) => {
                    let mut t = t.clone();
                    if !req.include.iter().any(|i| i == "TAGS") {
                        t.tags.clear();
                    }
                    out.tasks.push(t)
                }
                None => out.failures.push(Failure {
                    arn: if given.starts_with("arn:") {
                        given
                    } else {
                        arn::task(&name, &given)
                    },
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }

    /// Whether a container instance exists (an agent may open a session for it).
    pub async fn instance_exists(&self, instance_id: &str) -> bool {
        self.state.lock().await.instances.contains_key(instance_id)
    }
}
