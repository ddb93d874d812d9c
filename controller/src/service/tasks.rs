//! RunTask, StopTask, ListTasks, DescribeTasks. The agent link's half (desired tasks, state
//! changes, adoption) is in `agent_link.rs`.

use super::pagination::{paginate, Page};
use super::validation::{
    container_resources, containers_cpu_fit, lifecycle, parse_task_cpu, parse_task_memory,
    task_cpu_value, task_memory_value, task_needs,
};
use super::{cluster_name, new_id, now, put, Controller, State, TASK_PREFIX};
use crate::error::EcsError;
use crate::scheduler;
use berth_proto::arn;
use berth_proto::status::{ContainerInstanceStatus, ContainerStatus, TaskStatus};
use berth_proto::v1::*;

pub(crate) fn task_id(name_or_arn: &str) -> Option<&str> {
    arn::short_id("task", name_or_arn)
}

impl State {
    pub(crate) fn cluster_task(&self, cluster_arn: &str, given: &str) -> Option<&Task> {
        task_id(given)
            .and_then(|id| self.tasks.get(id))
            .filter(|t| t.cluster_arn == cluster_arn)
    }
}

/// A task's secret references, for the agent link's GetTaskSecrets.
#[derive(Debug, Clone)]
pub struct TaskSecretRefs {
    /// The container instance the task is assigned to.
    pub container_instance_arn: String,
    /// Whether the task is STOPPED (its secrets are no longer given out).
    pub stopped: bool,
    /// (container name, secret) for every container's `secrets`.
    pub secrets: Vec<(String, Secret)>,
    /// (container name, `repositoryCredentials.credentialsParameter`) for every container
    /// that has repository credentials (issue 11).
    pub registry: Vec<(String, String)>,
}

/// The failure a Describe*/StartTask call reports for an id or ARN the cluster does not hold:
/// reason MISSING, arn the given ARN, or the full ARN `arn_of` builds from a given id.
pub(crate) fn missing(given: &str, arn_of: impl FnOnce(&str) -> String) -> Failure {
    Failure {
        arn: if given.starts_with("arn:") {
            given.to_string()
        } else {
            arn_of(given)
        },
        reason: "MISSING".into(),
        detail: None,
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
        // ECS: the override's files are used "instead of the value from the container
        // definition".
        if !o.environment_files.is_empty() {
            c.environment_files = o.environment_files.clone();
        }
        for kv in &o.environment {
            match c.environment.iter_mut().find(|e| e.name == kv.name) {
                Some(e) => e.value = kv.value.clone(),
                None => c.environment.push(kv.clone()),
            }
        }
        if let Some(v) = o.cpu {
            c.cpu = Some(v);
        }
        if let Some(v) = o.memory {
            c.memory = Some(v);
        }
        if let Some(v) = o.memory_reservation {
            c.memory_reservation = Some(v);
        }
    }
    Ok(containers)
}

/// The registration rules on what the overrides make: task cpu and memory ("1 vCPU" / "2 GB"
/// forms included, cpu within 128-196608), each container's cpu, memory and memoryReservation
/// against each other and the task's, the containers' cpu sum within the task cpu. A failure
/// names the override that breaks the rule (`overrides.memory`,
/// `overrides.containerOverrides[web].memoryReservation`), or the definition's field it
/// conflicts with; InvalidParameterException, as RunTask answers.
fn check_effective(
    td: &TaskDefinition,
    overrides: &TaskOverride,
    containers: &[ContainerDefinition],
) -> Result<(), EcsError> {
    let as_invalid = |e: EcsError| EcsError::invalid(e.to_string());
    let task_cpu = match &overrides.cpu {
        Some(c) => Some((
            task_cpu_value("overrides.cpu", c).map_err(as_invalid)?,
            "overrides.cpu",
        )),
        None => td
            .cpu
            .as_deref()
            .and_then(parse_task_cpu)
            .map(|c| (c, "the task cpu")),
    };
    let task_memory = match &overrides.memory {
        Some(m) => Some((
            task_memory_value("overrides.memory", m).map_err(as_invalid)?,
            "overrides.memory",
        )),
        None => td
            .memory
            .as_deref()
            .and_then(parse_task_memory)
            .map(|m| (m, "the task memory")),
    };
    for (i, c) in containers.iter().enumerate() {
        let o = overrides
            .container_overrides
            .iter()
            .find(|o| o.name == c.name);
        let field = |member: &str| {
            let overridden = o.is_some_and(|o| match member {
                "cpu" => o.cpu.is_some(),
                "memory" => o.memory.is_some(),
                "memoryReservation" => o.memory_reservation.is_some(),
                _ => false,
            });
            if overridden {
                format!("overrides.containerOverrides[{}].{member}", c.name)
            } else {
                format!("containerDefinitions[{i}].{member}")
            }
        };
        container_resources(&field, c, task_cpu, task_memory).map_err(as_invalid)?;
    }
    containers_cpu_fit("overrides", containers, task_cpu).map_err(as_invalid)
}

/// The capability an instance needs for a container with `privileged: true` (ECS's name).
pub(crate) const PRIVILEGED_CAPABILITY: &str = "com.amazonaws.ecs.capability.privileged-container";

/// The attributes an instance needs to run a task (ECS's requiresAttributes): those the
/// definition names, the privileged-container capability for a privileged container, and the
/// runtimePlatform's CPU architecture and OS family as the agent advertises them
/// (`ecs.cpu-architecture` x86_64/arm64, `ecs.os-family` LINUX...). So a task never lands on a
/// host that must refuse it.
pub(crate) fn required_attributes(
    td: &TaskDefinition,
    containers: &[ContainerDefinition],
) -> Result<Vec<(String, Option<String>)>, EcsError> {
    let mut out: Vec<(String, Option<String>)> = td
        .requires_attributes
        .iter()
        .map(|a| (a.name.clone(), a.value.clone()))
        .collect();
    if containers.iter().any(|c| c.privileged == Some(true)) {
        out.push((PRIVILEGED_CAPABILITY.to_string(), None));
    }
    if let Some(p) = &td.runtime_platform {
        if let Some(arch) = p.cpu_architecture.as_deref().filter(|a| !a.is_empty()) {
            let value = match arch {
                "X86_64" => "x86_64",
                "ARM64" => "arm64",
                other => {
                    return Err(EcsError::invalid(format!(
                        "runtimePlatform.cpuArchitecture: '{other}' is not X86_64 or ARM64"
                    )))
                }
            };
            out.push(("ecs.cpu-architecture".into(), Some(value.into())));
        }
        if let Some(family) = p
            .operating_system_family
            .as_deref()
            .filter(|f| !f.is_empty())
        {
            if family != "LINUX" && !family.starts_with("WINDOWS_SERVER_") {
                return Err(EcsError::invalid(format!(
                    "runtimePlatform.operatingSystemFamily: '{family}' is not LINUX or a WINDOWS_SERVER_* family"
                )));
            }
            out.push(("ecs.os-family".into(), Some(family.into())));
        }
    }
    // Issue 9: a volume the agent mounts as NFS needs an agent that maps it (--nfs-volume
    // advertises berth.nfs.<key>): the EFS fileSystemId, or a docker volume's name when its
    // driver is not local.
    for v in &td.volumes {
        if let Some(e) = &v.efs_volume_configuration {
            out.push((format!("{NFS_ATTRIBUTE_PREFIX}{}", e.file_system_id), None));
        } else if let Some(d) = &v.docker_volume_configuration {
            if d.driver
                .as_deref()
                .is_some_and(|d| !d.is_empty() && d != "local")
            {
                out.push((format!("{NFS_ATTRIBUTE_PREFIX}{}", v.name), None));
            }
        }
    }
    out.dedup();
    Ok(out)
}

/// The attribute an agent advertises for each NFS export it maps (`--nfs-volume KEY=…`).
pub(crate) const NFS_ATTRIBUTE_PREFIX: &str = "berth.nfs.";

/// The `tasks` of DescribeTasks (and Berth's DescribeTaskStats): 1-100 ids or ARNs.
pub(crate) fn check_task_list(tasks: &[String]) -> Result<(), EcsError> {
    if tasks.is_empty() {
        return Err(EcsError::invalid("tasks: give at least one task id or ARN"));
    }
    if tasks.len() > 100 {
        return Err(EcsError::invalid("tasks: at most 100 tasks per call"));
    }
    Ok(())
}

/// Issue 12: the group `service:NAME` marks a service's tasks (its scheduler manages every task
/// of the group), so RunTask and StartTask refuse it rather than hand a standalone task to a
/// service.
fn refuse_service_group(group: Option<&str>) -> Result<(), EcsError> {
    match group {
        Some(g) if g.starts_with("service:") => Err(EcsError::invalid(format!(
            "group: '{g}': the prefix service: is kept for the tasks a service starts"
        ))),
        _ => Ok(()),
    }
}

/// A placement refusal as a RunTask/StartTask failure.
fn failure(r: scheduler::Refusal) -> Failure {
    Failure {
        arn: r.arn,
        reason: r.reason.as_str().into(),
        detail: r.detail,
    }
}

/// What RunTask and StartTask share once a request is checked: the definition, the containers
/// with overrides applied, what each task needs of an instance, and what each new task carries.
pub(crate) struct Launch {
    cluster: String,
    cluster_arn: String,
    td: TaskDefinition,
    overrides: TaskOverride,
    containers: Vec<ContainerDefinition>,
    /// What placement checks.
    pub(crate) needs: scheduler::Needs,
    launch_type: String,
    started_by: Option<String>,
    tags: Vec<Tag>,
    enable_execute_command: bool,
    platform_version: Option<String>,
    /// awsvpc: the checked awsvpcConfiguration.
    pub(crate) awsvpc: Option<super::networking::AwsVpc>,
}

/// The request fields [`State::launch`] takes.
pub(crate) struct LaunchRequest<'a> {
    pub(crate) cluster: Option<&'a str>,
    pub(crate) task_definition: &'a str,
    pub(crate) overrides: Option<TaskOverride>,
    pub(crate) launch_type: String,
    pub(crate) group: Option<String>,
    pub(crate) started_by: Option<String>,
    pub(crate) tags: Vec<Tag>,
    pub(crate) placement_constraints: &'a [PlacementConstraint],
    pub(crate) placement_strategy: &'a [PlacementStrategy],
    /// Whether the task definition's placement constraints apply (RunTask; StartTask names
    /// its instances itself).
    pub(crate) definition_constraints: bool,
    /// Recorded on the task as ECS shows it (execute command is not acted on yet).
    pub(crate) enable_execute_command: bool,
    /// Recorded on the task (Fargate's platform version has no effect here).
    pub(crate) platform_version: Option<String>,
    /// networkConfiguration: required for awsvpc task definitions, refused for the others.
    pub(crate) network_configuration: Option<&'a NetworkConfiguration>,
}

impl State {
    /// Checks a RunTask/StartTask request against the cluster and the task definition.
    pub(crate) fn launch(&self, req: LaunchRequest<'_>) -> Result<Launch, EcsError> {
        let name = cluster_name(req.cluster)?;
        if req.task_definition.is_empty() {
            return Err(EcsError::invalid("taskDefinition: is required"));
        }
        if let Some(s) = &req.started_by {
            if s.len() > 128 {
                return Err(EcsError::invalid("startedBy: at most 128 characters"));
            }
        }
        super::clusters::validate_tags(&req.tags)?;
        let overrides = req.overrides.unwrap_or_default();
        let cluster_arn = self.active_cluster(&name)?.cluster_arn.clone();
        let td = self
            .find_task_definition(req.task_definition)?
            .task_definition
            .clone()
            .unwrap_or_default();
        if td.status != "ACTIVE" {
            return Err(EcsError::client(format!(
                "TaskDefinition is inactive: {} was deregistered and cannot run new tasks",
                td.task_definition_arn
            )));
        }
        if req.launch_type == "FARGATE" {
            if !td.requires_compatibilities.iter().any(|c| c == "FARGATE") {
                return Err(EcsError::invalid(
                    "Task definition does not support launch_type FARGATE.",
                ));
            }
            if td.network_mode != "awsvpc" {
                return Err(EcsError::invalid(
                    "launchType: FARGATE tasks need a task definition with networkMode awsvpc",
                ));
            }
            if !req.placement_constraints.is_empty() || !req.placement_strategy.is_empty() {
                return Err(EcsError::invalid(
                    "placementConstraints/placementStrategy: not supported for launchType FARGATE",
                ));
            }
            // Registration refuses these for FARGATE definitions; a revision stored before
            // that rule existed is caught here.
            for (i, c) in td.container_definitions.iter().enumerate() {
                for (name, v) in [
                    ("startTimeout", c.start_timeout),
                    ("stopTimeout", c.stop_timeout),
                ] {
                    if let Some(v) = v.filter(|v| !(2..=120).contains(v)) {
                        return Err(EcsError::invalid(format!(
                            "containerDefinitions[{i}].{name}: {v} for container '{}' is outside 2-120 seconds, FARGATE's range (launchType FARGATE)",
                            c.name
                        )));
                    }
                }
            }
        }
        let awsvpc = self.check_network_configuration(
            &name,
            &cluster_arn,
            &td.network_mode,
            req.network_configuration,
        )?;
        for o in &overrides.container_overrides {
            lifecycle::environment_files(
                &format!("overrides.containerOverrides[{}].environmentFiles", o.name),
                &o.environment_files,
            )
            .map_err(EcsError::invalid)?;
        }
        let containers = apply_overrides(&td, &overrides)?;
        check_effective(&td, &overrides, &containers)?;
        let task_cpu = overrides.cpu.clone().or(td.cpu.clone());
        let task_memory = overrides.memory.clone().or(td.memory.clone());
        if req.launch_type == "FARGATE" && (overrides.cpu.is_some() || overrides.memory.is_some()) {
            let pair = (
                task_cpu.as_deref().and_then(parse_task_cpu),
                task_memory.as_deref().and_then(parse_task_memory),
            );
            if let (Some(c), Some(m)) = pair {
                if !super::validation::fargate_pair_ok(c, m) {
                    return Err(EcsError::invalid(format!(
                        "overrides: task cpu {c} and memory {m} MiB are not a FARGATE combination"
                    )));
                }
            }
        }
        let (cpu, memory) = task_needs(task_cpu.as_deref(), task_memory.as_deref(), &containers);
        let placement = |e: scheduler::PlacementError| EcsError::invalid(e.0);
        let definition_constraints: &[PlacementConstraint] = if req.definition_constraints {
            &td.placement_constraints
        } else {
            &[]
        };
        let constraints = scheduler::parse_constraints(
            "placementConstraints",
            definition_constraints
                .iter()
                .chain(req.placement_constraints.iter()),
        )
        .map_err(placement)?;
        let strategies = scheduler::parse_strategies("placementStrategy", req.placement_strategy)
            .map_err(placement)?;
        let needs = scheduler::Needs {
            cpu,
            memory,
            attributes: required_attributes(&td, &containers)?,
            constraints,
            strategies,
            group: req
                .group
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| format!("family:{}", td.family)),
            subnets: awsvpc
                .as_ref()
                .map(|v| v.subnets.clone())
                .unwrap_or_default(),
            host_ports: super::networking::static_host_ports(&td.network_mode, &containers),
        };
        Ok(Launch {
            cluster: name,
            cluster_arn,
            td,
            overrides,
            containers,
            needs,
            launch_type: req.launch_type,
            started_by: req.started_by,
            tags: req.tags,
            enable_execute_command: req.enable_execute_command,
            platform_version: req.platform_version,
            awsvpc,
        })
    }
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

/// A cluster's instances as placement sees them, reserved as tasks are placed: one RunTask's,
/// or a whole group commit's so later requests see earlier reservations.
#[derive(Clone)]
pub(crate) struct PlacementPool {
    candidates: scheduler::Pool,
    /// ACTIVE instances with no agent in step: named as failures (ECS's AGENT) when nothing
    /// else takes a task, never silently skipped.
    disconnected: Vec<String>,
}

/// Places up to `count` tasks in `pool`, each reserving what it needs. An instance that could
/// not take a task is named once in the failures, with ECS's reason; instances whose agent is
/// not in step are named AGENT when something could not be placed.
fn place_in(
    pool: &mut PlacementPool,
    launch: &Launch,
    count: i32,
) -> Result<(Vec<String>, Vec<Failure>), EcsError> {
    if pool.candidates.candidates().is_empty() && pool.disconnected.is_empty() {
        return Err(EcsError::invalid(
            "No Container Instances were found in your cluster.",
        ));
    }
    let mut placed = Vec::new();
    let mut failures: Vec<Failure> = Vec::new();
    for _ in 0..count {
        match pool.candidates.place(&launch.needs) {
            Ok(i) => placed.push(pool.candidates.candidates()[i].arn.clone()),
            Err(refusals) => {
                let agent = pool.disconnected.iter().map(|arn| Failure {
                    arn: arn.clone(),
                    reason: "AGENT".into(),
                    detail: None,
                });
                for f in refusals.into_iter().map(failure).chain(agent) {
                    if !failures.iter().any(|x| x.arn == f.arn) {
                        failures.push(f);
                    }
                }
            }
        }
    }
    Ok((placed, failures))
}

/// New tasks, built but not yet committed: their writes (with the clientToken's record) and
/// what applying them changes in memory.
pub(crate) struct NewTasks {
    pub(crate) writes: Vec<crate::store::Write>,
    cluster_arn: String,
    /// (task id, instance id, task, awsvpc network).
    placed: Vec<(String, String, Task, Option<TaskNetworkRecord>)>,
    token: Option<RunTaskTokenRecord>,
}

/// What a RunTask of a group commit comes to before the commit.
pub(crate) enum PlannedRun {
    /// A retried clientToken: the first call's answer, nothing to write.
    Replayed(RunTaskResponse),
    /// Tasks to commit, and the placement failures to answer with them.
    New(Box<NewTasks>, Vec<Failure>),
}

impl Controller {
    /// RunTask: places `count` tasks on the cluster's instances.
    pub async fn run_task(&self, req: RunTaskRequest) -> Result<RunTaskResponse, EcsError> {
        super::fields::refuse_unsupported_run_task(&req)?;
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
        refuse_service_group(req.group.as_deref())?;
        self.run_grouped(req, launch_type).await
    }

    /// One RunTask of a group commit (`run_batch.rs`): checks it against the state, places its
    /// tasks in `pools` (the batch's candidates, so it sees the reservations of the requests
    /// before it) and builds its writes, changing nothing. A replayed clientToken is answered
    /// at once.
    pub(crate) fn plan_run_task(
        &self,
        st: &State,
        pools: &mut std::collections::HashMap<String, PlacementPool>,
        lan_taken: &mut std::collections::BTreeSet<std::net::Ipv4Addr>,
        req: &RunTaskRequest,
        launch_type: String,
    ) -> Result<PlannedRun, EcsError> {
        if let Some(first) = st.replay_run_task(req)? {
            return Ok(PlannedRun::Replayed(first));
        }
        let launch = st.launch(LaunchRequest {
            cluster: req.cluster.as_deref(),
            task_definition: &req.task_definition,
            overrides: req.overrides.clone(),
            launch_type,
            group: req.group.clone(),
            started_by: req.started_by.clone(),
            tags: req.tags.clone(),
            placement_constraints: &req.placement_constraints,
            placement_strategy: &req.placement_strategy,
            definition_constraints: true,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            platform_version: req.platform_version.clone(),
            network_configuration: req.network_configuration.as_ref(),
        })?;
        let pool = pools
            .entry(launch.cluster_arn.clone())
            .or_insert_with(|| self.placement_pool(st, &launch.cluster_arn));
        // Only an awsvpc task can fail after placement (no free LAN address): keep what to
        // restore so a refused request reserves nothing for the rest of the batch.
        let saved = launch
            .awsvpc
            .is_some()
            .then(|| (pool.clone(), lan_taken.clone()));
        let (placed, failures) = place_in(pool, &launch, req.count.unwrap_or(1))?;
        match st.new_tasks(&launch, placed, Some((req, &failures)), lan_taken) {
            Ok(new) => Ok(PlannedRun::New(Box::new(new), failures)),
            Err(e) => {
                if let Some((p, l)) = saved {
                    *pool = p;
                    *lan_taken = l;
                }
                Err(e)
            }
        }
    }

    /// The cluster's instances as placement sees them now: ACTIVE ones with an agent in step
    /// (candidates), and the ARNs of ACTIVE ones without.
    pub(crate) fn placement_pool(&self, st: &State, cluster_arn: &str) -> PlacementPool {
        let fleet = self.fleet.clone();
        PlacementPool {
            candidates: scheduler::Pool::new(st.candidates(cluster_arn, |id| fleet.connected(id))),
            disconnected: st
                .candidates(cluster_arn, |id| !fleet.connected(id))
                .into_iter()
                .map(|c| c.arn)
                .collect(),
        }
    }

    /// RunTask's placement, apart so the services scheduler can call it: up to `count` tasks on
    /// the cluster's ACTIVE instances with an agent in step, each reserving what it needs. An
    /// instance that could not take a task is named once in the failures, with ECS's reason;
    /// instances whose agent is not in step are named AGENT when something could not be placed.
    pub(crate) fn place_tasks(
        &self,
        st: &State,
        launch: &Launch,
        count: i32,
    ) -> Result<(Vec<String>, Vec<Failure>), EcsError> {
        place_in(
            &mut self.placement_pool(st, &launch.cluster_arn),
            launch,
            count,
        )
    }

    /// Creates one task per placement (a container instance ARN), commits them together, and
    /// wakes each instance's agent. StartTask and the services scheduler end here; RunTask
    /// commits its [`NewTasks`] with the others of its batch (`run_batch.rs`).
    pub(crate) fn create_tasks(
        &self,
        st: &mut State,
        launch: &Launch,
        placements: Vec<String>,
        run_token: Option<(&RunTaskRequest, &[Failure])>,
    ) -> Result<Vec<Task>, EcsError> {
        let mut new = st.new_tasks(launch, placements, run_token, &mut Default::default())?;
        self.commit(std::mem::take(&mut new.writes))?;
        Ok(self.apply_new_tasks(st, new))
    }

    /// Puts committed [`NewTasks`] in memory and wakes each instance's agent (and, when a LAN
    /// address was taken, the agents of the instances its security groups' members concern).
    pub(crate) fn apply_new_tasks(&self, st: &mut State, new: NewTasks) -> Vec<Task> {
        let mut out = Vec::new();
        if let Some(record) = new.token {
            st.remember_run_token(record);
        }
        // A LAN address is known from the start: the security groups' members changed.
        let mut members_changed = false;
        for (id, instance_id, task, network) in new.placed {
            if let Some(net) = network {
                members_changed |= net.private_ipv4_address.is_some();
                st.task_networks.insert(id.clone(), net);
            }
            st.put_task(id, task.clone());
            self.fleet.notify(&instance_id);
            out.push(task);
        }
        if members_changed {
            for instance in st.security_group_dependents(&new.cluster_arn) {
                self.fleet.notify(&instance);
            }
        }
        out
    }
}

impl State {
    /// Builds one task per placement (a container instance ARN) and the writes that store them,
    /// changing nothing. `lan_taken`: LAN addresses taken by tasks built but not yet applied.
    pub(crate) fn new_tasks(
        &self,
        launch: &Launch,
        placements: Vec<String>,
        run_token: Option<(&RunTaskRequest, &[Failure])>,
        lan_taken: &mut std::collections::BTreeSet<std::net::Ipv4Addr>,
    ) -> Result<NewTasks, EcsError> {
        let st = self;
        let name = &launch.cluster;
        let mut writes = Vec::new();
        let mut placed = Vec::new();
        for instance_arn in placements {
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
            let task_arn = arn::task(name, &id);
            let network = match &launch.awsvpc {
                Some(vpc) => {
                    Some(st.task_network_record(&instance_id, &task_arn, vpc, lan_taken)?)
                }
                None => None,
            };
            let mut task = Task {
                task_arn: task_arn.clone(),
                cluster_arn: launch.cluster_arn.clone(),
                task_definition_arn: launch.td.task_definition_arn.clone(),
                container_instance_arn: Some(instance_arn),
                overrides: Some(launch.overrides.clone()),
                last_status: TaskStatus::Provisioning.as_str().into(),
                desired_status: TaskStatus::Running.as_str().into(),
                cpu: Some(launch.needs.cpu.to_string()),
                memory: Some(launch.needs.memory.to_string()),
                containers: launch
                    .containers
                    .iter()
                    .map(|c| Container {
                        container_arn: arn::container(name, &id, &new_id()),
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
                started_by: launch.started_by.clone(),
                version: 1,
                group: Some(launch.needs.group.clone()),
                launch_type: launch.launch_type.clone(),
                health_status: "UNKNOWN".into(),
                tags: launch.tags.clone(),
                availability_zone: az,
                enable_execute_command: Some(launch.enable_execute_command),
                platform_version: launch.platform_version.clone(),
                created_at: Some(now()),
                ..Default::default()
            };
            if let Some(net) = &network {
                task.attachments.push(super::networking::eni_attachment(
                    &net.subnet,
                    net.private_ipv4_address.as_deref(),
                ));
                writes.push(put(
                    format!("{}{id}", super::networking::TASK_NETWORK_PREFIX),
                    net,
                ));
            }
            writes.push(put(format!("{TASK_PREFIX}{id}"), &task));
            placed.push((id, instance_id, task, network));
        }
        let token = run_token
            .and_then(|(req, failures)| {
                let answered = RunTaskResponse {
                    tasks: Vec::new(),
                    failures: failures.to_vec(),
                };
                State::run_token_record(
                    req,
                    &answered,
                    placed.iter().map(|(_, _, t, _)| t.task_arn.clone()),
                )
            })
            .map(|(write, record)| {
                writes.push(write);
                record
            });
        Ok(NewTasks {
            writes,
            cluster_arn: launch.cluster_arn.clone(),
            placed,
            token,
        })
    }
}

impl Controller {
    /// StartTask: one task on each given container instance (up to 10, ids or ARNs), each
    /// checked for the attributes and resources the task needs. Unknown instances are MISSING,
    /// deregistered ones INACTIVE, ones without an agent in step AGENT; the task definition's
    /// placement constraints do not apply (the caller chose the instances).
    pub async fn start_task(&self, req: StartTaskRequest) -> Result<StartTaskResponse, EcsError> {
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(EcsError::invalid(format!(
                "containerInstances: give 1 to 10 container instances ({} given)",
                req.container_instances.len()
            )));
        }
        // The fields table decides every member, as for RunTask: nothing is dropped unnamed.
        super::fields::refuse_unsupported_start_task(&req)?;
        refuse_service_group(req.group.as_deref())?;
        let mut st = self.state.lock().await;
        let launch = st.launch(LaunchRequest {
            cluster: req.cluster.as_deref(),
            task_definition: &req.task_definition,
            overrides: req.overrides.clone(),
            launch_type: "EC2".into(),
            group: req.group.clone(),
            started_by: req.started_by.clone(),
            tags: req.tags.clone(),
            placement_constraints: &[],
            placement_strategy: &[],
            definition_constraints: false,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            platform_version: None,
            network_configuration: req.network_configuration.as_ref(),
        })?;
        let mut candidates: std::collections::BTreeMap<String, scheduler::Candidate> =
            Default::default();
        let mut placed = Vec::new();
        let mut failures = Vec::new();
        for given in &req.container_instances {
            let fail = |arn: String, reason: &str| Failure {
                arn,
                reason: reason.into(),
                detail: None,
            };
            let Some((id, r)) = st.cluster_instance(&launch.cluster_arn, given) else {
                failures.push(missing(given, |id| {
                    arn::container_instance(&launch.cluster, id)
                }));
                continue;
            };
            let ci = r.container_instance.clone().unwrap_or_default();
            if super::instances::status(&ci) != Some(ContainerInstanceStatus::Active) {
                failures.push(fail(ci.container_instance_arn, &ci.status));
                continue;
            }
            if !self.fleet.connected(&id) {
                failures.push(fail(ci.container_instance_arn, "AGENT"));
                continue;
            }
            let c = candidates
                .entry(id)
                .or_insert_with(|| st.candidate(r, true));
            match scheduler::place(std::slice::from_mut(c), &launch.needs) {
                Ok(_) => placed.push(c.arn.clone()),
                Err(refusals) => failures.extend(refusals.into_iter().map(failure)),
            }
        }
        let tasks = self.create_tasks(&mut st, &launch, placed, None)?;
        Ok(StartTaskResponse { tasks, failures })
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
        // Refused as ListServices refuses it, not answered with an empty list.
        if let Some(l) = &req.launch_type {
            if !["EC2", "EXTERNAL", "FARGATE"].contains(&l.as_str()) {
                return Err(EcsError::invalid(format!(
                    "launchType: '{l}' is not one of EC2, EXTERNAL, FARGATE"
                )));
            }
        }
        // ECS: "When you specify startedBy as the filter, it must be the only filter that you
        // use." desiredStatus still applies (it always has a value, RUNNING by default).
        if req.started_by.is_some() {
            let others: Vec<&str> = [
                ("containerInstance", req.container_instance.is_some()),
                ("family", req.family.is_some()),
                ("serviceName", req.service_name.is_some()),
                ("launchType", req.launch_type.is_some()),
                ("daemonName", req.daemon_name.is_some()),
            ]
            .into_iter()
            .filter_map(|(field, given)| given.then_some(field))
            .collect();
            if !others.is_empty() {
                return Err(EcsError::invalid(format!(
                    "startedBy and {} cannot both be given; startedBy must be the only filter",
                    others.join(", ")
                )));
            }
        }
        if let Some(daemon) = &req.daemon_name {
            return Err(EcsError::invalid(format!(
                "daemonName: '{daemon}': daemons are not supported by Berth"
            )));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        // Issue 12: a service's tasks carry its group (`service:NAME`).
        let service_group = match &req.service_name {
            Some(service) => Some(super::services::service_group(
                &st.find_service(&name, service)
                    .and_then(|r| r.service.as_ref())
                    .map(|s| s.service_name.clone())
                    .ok_or_else(|| EcsError::ServiceNotFound(service.clone()))?,
            )),
            None => None,
        };
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
                    arn::family_revision(&t.task_definition_arn).is_some_and(|(fam, _)| fam == f)
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
            .filter(|(_, t)| {
                service_group
                    .as_deref()
                    .is_none_or(|g| t.group.as_deref() == Some(g))
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
        check_task_list(&req.tasks)?;
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
                None => out
                    .failures
                    .push(missing(&given, |id| arn::task(&name, id))),
            }
        }
        Ok(out)
    }

    /// What GetTaskSecrets needs of a task: the instance it is assigned to, whether it is
    /// STOPPED, each container's `secrets` and `repositoryCredentials` (references only). `None` for an unknown task.
    pub async fn task_secret_refs(&self, task_arn: &str) -> Option<TaskSecretRefs> {
        let st = self.state.lock().await;
        let t = task_id(task_arn).and_then(|id| st.tasks.get(id))?;
        let (family, revision) = arn::family_revision(&t.task_definition_arn)?;
        let def = st
            .task_definitions
            .get(family)
            .and_then(|revs| revs.get(&revision))
            .and_then(|r| r.task_definition.as_ref())?;
        Some(TaskSecretRefs {
            container_instance_arn: t.container_instance_arn.clone().unwrap_or_default(),
            stopped: TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Stopped),
            secrets: def
                .container_definitions
                .iter()
                .flat_map(|c| c.secrets.iter().map(|s| (c.name.clone(), s.clone())))
                .collect(),
            registry: def
                .container_definitions
                .iter()
                .filter_map(|c| {
                    let r = c.repository_credentials.as_ref()?;
                    Some((c.name.clone(), r.credentials_parameter.clone()))
                })
                .collect(),
        })
    }

    /// Whether a container instance exists (an agent may open a session for it).
    pub async fn instance_exists(&self, instance_id: &str) -> bool {
        self.state.lock().await.instances.contains_key(instance_id)
    }
}

#[cfg(test)]
#[path = "task_tests.rs"]
mod tests;
