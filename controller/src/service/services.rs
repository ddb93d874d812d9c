//! Services (issue 12): CreateService, UpdateService, DeleteService, ListServices,
//! DescribeServices and UpdateContainerInstancesState. What runs is decided by the scheduler
//! (`service_scheduler.rs`), which these calls wake.
//!
//! A service is one record (`service/CLUSTER/NAME`, [`ServiceRecord`]): the ECS shape, its
//! deployments and its latest events, plus what the scheduler keeps beside them. Its tasks carry
//! the group `service:NAME` and, in `startedBy`, the id of the deployment that started them
//! (`ecs-svc/…`), as in ECS.

use super::pagination::{paginate, Page};
use super::{cluster_name, now, put, Controller, State};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::v1::{
    ContainerInstance, ContainerInstanceRecord, CreateServiceRequest, DeleteServiceRequest,
    Deployment, DeploymentConfiguration, DescribeServicesRequest, DescribeServicesResponse,
    Failure, ListServicesRequest, Service, ServiceEvent, ServiceRecord,
    UpdateContainerInstancesStateRequest, UpdateContainerInstancesStateResponse,
    UpdateServiceRequest,
};
use rand::Rng;

/// Store key prefix of services.
pub(crate) const SERVICE_PREFIX: &str = "service/";
/// How many events a service keeps (ECS shows the latest 100).
pub(crate) const MAX_EVENTS: usize = 100;

/// The store key of a service.
pub(crate) fn service_key(cluster: &str, name: &str) -> String {
    format!("{SERVICE_PREFIX}{cluster}/{name}")
}

/// The task group of a service's tasks, as ECS sets it.
pub(crate) fn service_group(name: &str) -> String {
    format!("service:{name}")
}

/// `…:service/CLUSTER/NAME`, ECS's long ARN format.
pub(crate) fn service_arn(cluster: &str, name: &str) -> String {
    arn::cluster(cluster).replacen(":cluster/", ":service/", 1) + "/" + name
}

/// How a service decides how many tasks to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scheduling {
    /// Keep desiredCount tasks.
    Replica,
    /// One task on every instance that meets the constraints.
    Daemon,
}

impl Scheduling {
    pub(crate) fn parse(s: &str) -> Result<Self, EcsError> {
        match s {
            "" | "REPLICA" => Ok(Scheduling::Replica),
            "DAEMON" => Ok(Scheduling::Daemon),
            other => Err(EcsError::invalid(format!(
                "schedulingStrategy: '{other}' is not REPLICA or DAEMON"
            ))),
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scheduling::Replica => "REPLICA",
            Scheduling::Daemon => "DAEMON",
        }
    }
}

/// A service's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ServiceStatus {
    /// Running its tasks.
    Active,
    /// Deleted; its tasks are stopping.
    Draining,
    /// Deleted, no task left.
    Inactive,
}

impl ServiceStatus {
    pub(crate) fn of(s: &Service) -> Self {
        match s.status.as_str() {
            "DRAINING" => ServiceStatus::Draining,
            "INACTIVE" => ServiceStatus::Inactive,
            _ => ServiceStatus::Active,
        }
    }
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ServiceStatus::Active => "ACTIVE",
            ServiceStatus::Draining => "DRAINING",
            ServiceStatus::Inactive => "INACTIVE",
        }
    }
}

/// A new deployment id: `ecs-svc/` and 19 digits, as ECS writes them.
pub(crate) fn new_deployment_id() -> String {
    let mut rng = rand::rng();
    let n: u64 = rng.random_range(1_000_000_000_000_000_000..10_000_000_000_000_000_000);
    format!("ecs-svc/{n}")
}

/// minimumHealthyPercent and maximumPercent with ECS's defaults for the strategy.
pub(crate) fn percents(c: Option<&DeploymentConfiguration>, s: Scheduling) -> (i32, i32) {
    let (min, max) = match s {
        Scheduling::Replica => (100, 200),
        Scheduling::Daemon => (0, 100),
    };
    (
        c.and_then(|c| c.minimum_healthy_percent).unwrap_or(min),
        c.and_then(|c| c.maximum_percent).unwrap_or(max),
    )
}

/// The fewest healthy tasks and the most tasks a deployment of `desired` tasks allows:
/// minimumHealthyPercent rounded up, maximumPercent rounded down (ECS).
pub(crate) fn limits(desired: i32, min_pct: i32, max_pct: i32) -> (i32, i32) {
    let d = desired.max(0) as i64;
    let min = (d * min_pct as i64 + 99) / 100;
    let max = (d * max_pct as i64) / 100;
    (min as i32, max as i32)
}

/// The circuit breaker's failure threshold (ECS): half the desired count, at least 3, at most
/// 200.
pub(crate) fn failure_threshold(desired: i32) -> i32 {
    ((desired.max(0) + 1) / 2).clamp(3, 200)
}

fn check_name(name: &str) -> Result<(), EcsError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(EcsError::invalid(format!(
            "serviceName: '{name}' must be 1-255 letters, digits, hyphens and underscores"
        )))
    }
}

/// Members Berth models but does not build yet, refused by name (every one the request sets).
fn refuse_not_built(
    load_balancers: usize,
    service_registries: usize,
    capacity_provider_strategy: usize,
    config: Option<&DeploymentConfiguration>,
    controller: Option<&str>,
    propagate_tags: Option<&str>,
    managed_tags: Option<bool>,
) -> Result<(), EcsError> {
    let mut found = Vec::new();
    if load_balancers > 0 {
        found.push("loadBalancers: load balancers are not supported yet");
    }
    if service_registries > 0 {
        found.push("serviceRegistries: service discovery is not supported yet");
    }
    if capacity_provider_strategy > 0 {
        found.push("capacityProviderStrategy: capacity providers are not supported yet");
    }
    if let Some(c) = config {
        if c.alarms.as_ref().is_some_and(|a| a.enable) {
            found.push("deploymentConfiguration.alarms: CloudWatch alarms are not supported");
        }
        if c.strategy.as_deref().is_some_and(|s| s != "ROLLING") {
            found.push("deploymentConfiguration.strategy: only ROLLING is supported");
        }
        if c.bake_time_in_minutes.is_some_and(|b| b != 0) {
            found.push("deploymentConfiguration.bakeTimeInMinutes: only with BLUE_GREEN, which is not supported");
        }
    }
    if controller.is_some_and(|t| t != "ECS") {
        found.push("deploymentController.type: only ECS (rolling update) is supported");
    }
    if propagate_tags.is_some_and(|p| p != "NONE") {
        found.push("propagateTags: tag propagation is not supported (NONE is accepted)");
    }
    if managed_tags == Some(true) {
        found.push("enableECSManagedTags: ECS-managed tags are not supported");
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(EcsError::invalid(found.join("; ")))
    }
}

fn check_percents(
    c: Option<&DeploymentConfiguration>,
    s: Scheduling,
    desired: i32,
) -> Result<(), EcsError> {
    let (min, max) = percents(c, s);
    if s == Scheduling::Daemon {
        if c.and_then(|c| c.deployment_circuit_breaker)
            .is_some_and(|b| b.enable)
        {
            return Err(EcsError::invalid(
                "deploymentConfiguration.deploymentCircuitBreaker: not supported for DAEMON services by Berth yet",
            ));
        }
        if min != 0 {
            return Err(EcsError::invalid(format!(
                "deploymentConfiguration.minimumHealthyPercent: {min}; Berth's DAEMON deployments replace each instance's task in place (stop, then start), so only 0 is accepted"
            )));
        }
    }
    if !(0..=100).contains(&min) {
        return Err(EcsError::invalid(format!(
            "deploymentConfiguration.minimumHealthyPercent: {min} is outside 0-100"
        )));
    }
    match s {
        Scheduling::Replica if !(100..=200).contains(&max) => Err(EcsError::invalid(format!(
            "deploymentConfiguration.maximumPercent: {max} is outside 100-200"
        ))),
        Scheduling::Replica if min == 100 && max == 100 => Err(EcsError::invalid(
            "deploymentConfiguration: with minimumHealthyPercent 100 and maximumPercent 100 a rolling deployment can neither start a new task nor stop an old one",
        )),
        Scheduling::Daemon if max != 100 => Err(EcsError::invalid(format!(
            "deploymentConfiguration.maximumPercent: {max}; a DAEMON service takes only 100"
        ))),
        Scheduling::Replica => {
            // After rounding, a deployment must be able to start a task or stop one.
            let (lo, hi) = limits(desired, min, max);
            if desired > 0 && hi <= desired && lo >= desired {
                return Err(EcsError::invalid(format!(
                    "deploymentConfiguration: for desiredCount {desired}, minimumHealthyPercent {min} (rounded up: {lo} tasks) and maximumPercent {max} (rounded down: {hi} tasks) leave a rolling deployment no room to start a new task or stop an old one"
                )));
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// availabilityZoneRebalancing: DISABLED is what Berth does; ENABLED is refused by name.
fn check_az_rebalancing(v: Option<&str>) -> Result<(), EcsError> {
    match v {
        None | Some("DISABLED") => Ok(()),
        Some("ENABLED") => Err(EcsError::invalid(
            "availabilityZoneRebalancing: ENABLED is not supported yet (DISABLED is accepted)",
        )),
        Some(other) => Err(EcsError::invalid(format!(
            "availabilityZoneRebalancing: '{other}' is not ENABLED or DISABLED"
        ))),
    }
}

/// Appends an event (newest first, at most [`MAX_EVENTS`]); an event whose message is the
/// newest one's is not repeated.
pub(crate) fn push_event(s: &mut Service, message: String) {
    if s.events.first().is_some_and(|e| e.message == message) {
        return;
    }
    s.events.insert(
        0,
        ServiceEvent {
            id: uuid::Uuid::new_v4().to_string(),
            created_at: Some(now()),
            message,
        },
    );
    s.events.truncate(MAX_EVENTS);
}

impl State {
    /// A service of the cluster by name or ARN (any status).
    pub(crate) fn find_service(&self, cluster: &str, given: &str) -> Option<&ServiceRecord> {
        // `…:service/CLUSTER/NAME` must name this cluster; the old short ARN form has none.
        let r = arn::resource("service", given)?;
        let name = match r.split_once('/') {
            Some((c, n)) if c == cluster => n,
            Some(_) => return None,
            None => r,
        };
        self.services.get(&service_key(cluster, name))
    }

    /// Checks a task definition for a service: it exists and is ACTIVE; its ARN.
    fn service_task_definition(&self, given: &str) -> Result<String, EcsError> {
        let td = self
            .find_task_definition(given)?
            .task_definition
            .clone()
            .unwrap_or_default();
        if td.status != "ACTIVE" {
            return Err(EcsError::client(format!(
                "TaskDefinition is inactive: {} was deregistered",
                td.task_definition_arn
            )));
        }
        Ok(td.task_definition_arn)
    }

    /// Whether the cluster has a service not yet INACTIVE.
    pub(crate) fn has_live_services(&self, cluster: &str) -> bool {
        self.services
            .range(service_key(cluster, "")..)
            .take_while(|(k, _)| k.starts_with(&service_key(cluster, "")))
            .any(|(_, r)| {
                r.service
                    .as_ref()
                    .is_some_and(|s| ServiceStatus::of(s) != ServiceStatus::Inactive)
            })
    }

    /// How many ACTIVE services the cluster has.
    pub(crate) fn active_services(&self, cluster: &str) -> i32 {
        self.services
            .range(service_key(cluster, "")..)
            .take_while(|(k, _)| k.starts_with(&service_key(cluster, "")))
            .filter(|(_, r)| {
                r.service
                    .as_ref()
                    .is_some_and(|s| ServiceStatus::of(s) == ServiceStatus::Active)
            })
            .count() as i32
    }
}

fn view(r: &ServiceRecord, tags: bool) -> Service {
    let mut s = r.service.clone().unwrap_or_default();
    if !tags {
        s.tags.clear();
    }
    s
}

impl Controller {
    /// Commits a service's record, then shows it in the view and wakes the scheduler; answers
    /// the service as the API shows it.
    fn store_service(
        &self,
        mut st: tokio::sync::MutexGuard<'_, State>,
        key: String,
        record: ServiceRecord,
    ) -> Result<Service, EcsError> {
        self.commit(vec![put(key.clone(), &record)])?;
        let out = view(&record, true);
        st.services.insert(key, record);
        drop(st);
        self.fleet.wake_services();
        Ok(out)
    }

    /// CreateService: records the service with its first deployment (PRIMARY, IN_PROGRESS);
    /// the scheduler starts its tasks.
    pub async fn create_service(&self, req: CreateServiceRequest) -> Result<Service, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        check_name(&req.service_name)?;
        refuse_not_built(
            req.load_balancers.len(),
            req.service_registries.len(),
            req.capacity_provider_strategy.len(),
            req.deployment_configuration.as_ref(),
            req.deployment_controller
                .as_ref()
                .map(|c| c.r#type.as_str()),
            req.propagate_tags.as_deref(),
            req.enable_ecs_managed_tags,
        )?;
        let scheduling = Scheduling::parse(req.scheduling_strategy.as_deref().unwrap_or(""))?;
        let desired = match (scheduling, req.desired_count) {
            (Scheduling::Replica, None) => {
                return Err(EcsError::invalid(
                    "desiredCount: is required for the REPLICA scheduling strategy",
                ))
            }
            (Scheduling::Replica, Some(n)) if n < 0 => {
                return Err(EcsError::invalid(format!("desiredCount: {n} is negative")))
            }
            (Scheduling::Replica, Some(n)) => n,
            (Scheduling::Daemon, Some(n)) if n != 0 => {
                return Err(EcsError::invalid(
                    "desiredCount: a DAEMON service places one task per instance; do not give a desiredCount",
                ))
            }
            (Scheduling::Daemon, _) => 0,
        };
        if scheduling == Scheduling::Daemon && !req.placement_strategy.is_empty() {
            return Err(EcsError::invalid(
                "placementStrategy: a DAEMON service takes none (it places one task on every instance)",
            ));
        }
        check_percents(req.deployment_configuration.as_ref(), scheduling, desired)?;
        check_az_rebalancing(req.availability_zone_rebalancing.as_deref())?;
        if let Some(g) = req.health_check_grace_period_seconds {
            if !(0..=2_147_483_647).contains(&g) {
                return Err(EcsError::invalid(
                    "healthCheckGracePeriodSeconds: must not be negative",
                ));
            }
        }
        if let Some(t) = &req.client_token {
            if t.len() > 36 {
                return Err(EcsError::invalid("clientToken: at most 36 characters"));
            }
        }
        let launch_type = req.launch_type.clone().unwrap_or_else(|| "EC2".into());
        if !["EC2", "EXTERNAL", "FARGATE"].contains(&launch_type.as_str()) {
            return Err(EcsError::invalid(format!(
                "launchType: '{launch_type}' is not one of EC2, EXTERNAL, FARGATE"
            )));
        }
        super::clusters::validate_tags(&req.tags)?;
        let task_definition = req
            .task_definition
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| EcsError::invalid("taskDefinition: is required"))?;
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let key = service_key(&name, &req.service_name);
        if let Some(existing) = st.services.get(&key) {
            let s = existing.service.clone().unwrap_or_default();
            if ServiceStatus::of(&s) != ServiceStatus::Inactive {
                let same_token = req.client_token.is_some()
                    && existing.client_token == req.client_token
                    && existing.create_request.as_ref() == Some(&req);
                if same_token {
                    return Ok(view(existing, true));
                }
                return Err(EcsError::invalid("Creation of service was not idempotent."));
            }
        }
        let td_arn = st.service_task_definition(task_definition)?;
        // Everything RunTask would check of these tasks, checked now (network configuration,
        // placement, launch type), so a service that could never start a task is refused.
        let launch = st.launch(super::tasks::LaunchRequest {
            cluster: Some(&name),
            task_definition: &td_arn,
            overrides: None,
            launch_type: launch_type.clone(),
            group: Some(service_group(&req.service_name)),
            started_by: None,
            tags: Vec::new(),
            placement_constraints: &req.placement_constraints,
            placement_strategy: &req.placement_strategy,
            definition_constraints: true,
            enable_execute_command: req.enable_execute_command.unwrap_or(false),
            platform_version: req.platform_version.clone(),
            network_configuration: req.network_configuration.as_ref(),
        })?;
        drop(launch);
        let created = now();
        let deployment = Deployment {
            id: new_deployment_id(),
            status: "PRIMARY".into(),
            task_definition: td_arn.clone(),
            desired_count: desired,
            created_at: Some(created),
            updated_at: Some(created),
            launch_type: Some(launch_type.clone()),
            platform_version: req.platform_version.clone(),
            network_configuration: req.network_configuration.clone(),
            rollout_state: Some("IN_PROGRESS".into()),
            rollout_state_reason: Some("ECS deployment ecs-svc in progress.".into()),
            ..Default::default()
        };
        let mut deployment = deployment;
        deployment.rollout_state_reason =
            Some(format!("ECS deployment {} in progress.", deployment.id));
        let (min, max) = percents(req.deployment_configuration.as_ref(), scheduling);
        let mut config = req.deployment_configuration.clone().unwrap_or_default();
        config.minimum_healthy_percent = Some(min);
        config.maximum_percent = Some(max);
        if config.deployment_circuit_breaker.is_none() {
            config.deployment_circuit_breaker = Some(Default::default());
        }
        let service = Service {
            service_arn: service_arn(&name, &req.service_name),
            service_name: req.service_name.clone(),
            cluster_arn,
            status: ServiceStatus::Active.as_str().into(),
            desired_count: desired,
            launch_type: Some(launch_type),
            platform_version: req.platform_version.clone(),
            task_definition: td_arn,
            deployment_configuration: Some(config),
            deployments: vec![deployment],
            created_at: Some(created),
            placement_constraints: req.placement_constraints.clone(),
            placement_strategy: req.placement_strategy.clone(),
            network_configuration: req.network_configuration.clone(),
            health_check_grace_period_seconds: req.health_check_grace_period_seconds,
            scheduling_strategy: scheduling.as_str().into(),
            deployment_controller: Some(berth_proto::v1::DeploymentController {
                r#type: "ECS".into(),
            }),
            tags: req.tags.clone(),
            created_by: Some("berth".into()),
            enable_ecs_managed_tags: Some(false),
            propagate_tags: Some("NONE".into()),
            enable_execute_command: Some(req.enable_execute_command.unwrap_or(false)),
            // Recorded (no IAM on premises), as for task definitions' roles.
            role_arn: req.role.clone(),
            availability_zone_rebalancing: Some("DISABLED".into()),
            ..Default::default()
        };
        let record = ServiceRecord {
            service: Some(service),
            client_token: req.client_token.clone(),
            create_request: Some(req),
            ..Default::default()
        };
        self.store_service(st, key, record)
    }

    /// UpdateService: a new desiredCount takes effect in the current deployment; a new task
    /// definition, network configuration, placement or forceNewDeployment starts a new
    /// deployment (the old one turns ACTIVE and its tasks are replaced within the limits).
    pub async fn update_service(&self, req: UpdateServiceRequest) -> Result<Service, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        refuse_not_built(
            req.load_balancers.len(),
            req.service_registries.len(),
            req.capacity_provider_strategy.len(),
            req.deployment_configuration.as_ref(),
            req.deployment_controller
                .as_ref()
                .map(|c| c.r#type.as_str()),
            req.propagate_tags.as_deref(),
            req.enable_ecs_managed_tags,
        )?;
        if req.service.is_empty() {
            return Err(EcsError::invalid("service: is required"));
        }
        if let Some(n) = req.desired_count {
            if n < 0 {
                return Err(EcsError::invalid(format!("desiredCount: {n} is negative")));
            }
        }
        let st = self.state.lock().await;
        st.active_cluster(&name)?;
        let record = st
            .find_service(&name, &req.service)
            .cloned()
            .ok_or_else(|| EcsError::ServiceNotFound(req.service.clone()))?;
        let key = service_key(
            &name,
            &record
                .service
                .as_ref()
                .map(|s| s.service_name.clone())
                .unwrap_or_default(),
        );
        let mut svc = record.service.clone().unwrap_or_default();
        if ServiceStatus::of(&svc) != ServiceStatus::Active {
            return Err(EcsError::ServiceNotActive);
        }
        let scheduling = Scheduling::parse(&svc.scheduling_strategy)?;
        if scheduling == Scheduling::Daemon && req.desired_count.is_some_and(|n| n != 0) {
            return Err(EcsError::invalid(
                "desiredCount: a DAEMON service places one task per instance",
            ));
        }
        if scheduling == Scheduling::Daemon && !req.placement_strategy.is_empty() {
            return Err(EcsError::invalid(
                "placementStrategy: a DAEMON service takes none",
            ));
        }
        // The new configuration: the old one with what the request gives.
        let mut config = svc.deployment_configuration.clone().unwrap_or_default();
        if let Some(c) = &req.deployment_configuration {
            if c.minimum_healthy_percent.is_some() {
                config.minimum_healthy_percent = c.minimum_healthy_percent;
            }
            if c.maximum_percent.is_some() {
                config.maximum_percent = c.maximum_percent;
            }
            if c.deployment_circuit_breaker.is_some() {
                config.deployment_circuit_breaker = c.deployment_circuit_breaker;
            }
        }
        let desired_after = req.desired_count.unwrap_or(svc.desired_count);
        // The rounding check (below) only where a deployment is to roll.
        check_percents(Some(&config), scheduling, 0)?;
        check_az_rebalancing(req.availability_zone_rebalancing.as_deref())?;
        let mut new_deployment = req.force_new_deployment.unwrap_or(false);
        let mut td_arn = svc.task_definition.clone();
        if let Some(td) = req.task_definition.as_deref().filter(|t| !t.is_empty()) {
            let arn = st.service_task_definition(td)?;
            new_deployment |= arn != svc.task_definition;
            td_arn = arn;
        }
        let network = req
            .network_configuration
            .clone()
            .or(svc.network_configuration.clone());
        if req.network_configuration.is_some() && network != svc.network_configuration {
            new_deployment = true;
        }
        let constraints = if req.placement_constraints.is_empty() {
            svc.placement_constraints.clone()
        } else {
            req.placement_constraints.clone()
        };
        let strategy = if req.placement_strategy.is_empty() {
            svc.placement_strategy.clone()
        } else {
            req.placement_strategy.clone()
        };
        // Given placement replaces the service's (an empty list cannot be told from an absent
        // one in this model, so placement is changed only by giving another); a change
        // starts a new deployment, as in ECS. So does another platformVersion.
        new_deployment |=
            constraints != svc.placement_constraints || strategy != svc.placement_strategy;
        if let Some(p) = req.platform_version.as_ref().filter(|p| !p.is_empty()) {
            new_deployment |= svc.platform_version.as_ref() != Some(p);
            svc.platform_version = Some(p.clone());
        }
        // Checked as RunTask checks them.
        st.launch(super::tasks::LaunchRequest {
            cluster: Some(&name),
            task_definition: &td_arn,
            overrides: None,
            launch_type: svc.launch_type.clone().unwrap_or_else(|| "EC2".into()),
            group: Some(service_group(&svc.service_name)),
            started_by: None,
            tags: Vec::new(),
            placement_constraints: &constraints,
            placement_strategy: &strategy,
            definition_constraints: true,
            enable_execute_command: req
                .enable_execute_command
                .or(svc.enable_execute_command)
                .unwrap_or(false),
            platform_version: svc.platform_version.clone(),
            network_configuration: network.as_ref(),
        })?;
        if new_deployment || req.deployment_configuration.is_some() {
            check_percents(Some(&config), scheduling, desired_after)?;
        }
        if let Some(g) = req.health_check_grace_period_seconds {
            if g < 0 {
                return Err(EcsError::invalid(
                    "healthCheckGracePeriodSeconds: must not be negative",
                ));
            }
            svc.health_check_grace_period_seconds = Some(g);
        }
        if let Some(n) = req.desired_count {
            svc.desired_count = n;
        }
        if req.enable_execute_command.is_some() {
            svc.enable_execute_command = req.enable_execute_command;
        }
        svc.deployment_configuration = Some(config);
        svc.placement_constraints = constraints;
        svc.placement_strategy = strategy;
        svc.network_configuration = network.clone();
        svc.task_definition = td_arn.clone();
        let at = now();
        if new_deployment {
            for d in svc.deployments.iter_mut() {
                d.status = "ACTIVE".into();
                d.desired_count = 0;
                d.updated_at = Some(at);
            }
            let id = new_deployment_id();
            svc.deployments.insert(
                0,
                Deployment {
                    rollout_state_reason: Some(format!("ECS deployment {id} in progress.")),
                    id,
                    status: "PRIMARY".into(),
                    task_definition: td_arn,
                    desired_count: svc.desired_count,
                    created_at: Some(at),
                    updated_at: Some(at),
                    launch_type: svc.launch_type.clone(),
                    platform_version: svc.platform_version.clone(),
                    network_configuration: network,
                    rollout_state: Some("IN_PROGRESS".into()),
                    ..Default::default()
                },
            );
        } else if let Some(p) = svc.deployments.iter_mut().find(|d| d.status == "PRIMARY") {
            p.desired_count = svc.desired_count;
            p.updated_at = Some(at);
        }
        let record = ServiceRecord {
            service: Some(svc),
            // A new deployment starts with a clean slate of failures.
            consecutive_failures: if new_deployment {
                0
            } else {
                record.consecutive_failures
            },
            next_launch_at: if new_deployment {
                None
            } else {
                record.next_launch_at
            },
            steady: false,
            ..record
        };
        self.store_service(st, key, record)
    }

    /// DeleteService: refused while desiredCount > 0 unless `force`; the service turns DRAINING
    /// with desiredCount 0 (the scheduler stops its tasks), then INACTIVE once none is left.
    pub async fn delete_service(&self, req: DeleteServiceRequest) -> Result<Service, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if req.service.is_empty() {
            return Err(EcsError::invalid("service: is required"));
        }
        let st = self.state.lock().await;
        st.active_cluster(&name)?;
        let record = st
            .find_service(&name, &req.service)
            .cloned()
            .ok_or_else(|| EcsError::ServiceNotFound(req.service.clone()))?;
        let mut svc = record.service.clone().unwrap_or_default();
        if ServiceStatus::of(&svc) != ServiceStatus::Active {
            return Err(EcsError::ServiceNotActive);
        }
        let daemon = svc.scheduling_strategy == Scheduling::Daemon.as_str();
        if svc.desired_count > 0 && !daemon && !req.force.unwrap_or(false) {
            return Err(EcsError::invalid(format!(
                "The service cannot be stopped while it is scaled above 0 (desiredCount {}); set it to 0 with update-service, or delete with --force",
                svc.desired_count
            )));
        }
        svc.status = ServiceStatus::Draining.as_str().into();
        svc.desired_count = 0;
        for d in svc.deployments.iter_mut() {
            d.desired_count = 0;
        }
        let key = service_key(&name, &svc.service_name);
        let record = ServiceRecord {
            service: Some(svc),
            ..record
        };
        self.store_service(st, key, record)
    }

    /// ListServices: the cluster's services not INACTIVE, by ARN, filtered by launchType and
    /// schedulingStrategy, paged.
    pub async fn list_services(&self, req: ListServicesRequest) -> Result<Page<String>, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let scheduling = req
            .scheduling_strategy
            .as_deref()
            .map(Scheduling::parse)
            .transpose()?;
        if let Some(l) = &req.launch_type {
            if !["EC2", "EXTERNAL", "FARGATE"].contains(&l.as_str()) {
                return Err(EcsError::invalid(format!(
                    "launchType: '{l}' is not one of EC2, EXTERNAL, FARGATE"
                )));
            }
        }
        if let Some(r) = &req.resource_management_type {
            return Err(EcsError::invalid(format!(
                "resourceManagementType: '{r}': ECS-managed daemons are not supported by Berth"
            )));
        }
        let st = self.state.lock().await;
        st.active_cluster(&name)?;
        let prefix = service_key(&name, "");
        let items: Vec<(String, String)> = st
            .services
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter_map(|(_, r)| r.service.as_ref())
            .filter(|s| ServiceStatus::of(s) != ServiceStatus::Inactive)
            .filter(|s| {
                scheduling.is_none_or(|x| x.as_str() == s.scheduling_strategy)
                    && req
                        .launch_type
                        .as_ref()
                        .is_none_or(|l| s.launch_type.as_ref() == Some(l))
            })
            .map(|s| (s.service_arn.clone(), s.service_arn.clone()))
            .collect();
        let mut items = items;
        items.sort();
        paginate(items, false, req.next_token.as_deref(), req.max_results)
    }

    /// DescribeServices: up to 10 services by name or ARN; unknown ones are MISSING failures.
    pub async fn describe_services(
        &self,
        req: DescribeServicesRequest,
    ) -> Result<DescribeServicesResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        if req.services.is_empty() || req.services.len() > 10 {
            return Err(EcsError::invalid(format!(
                "services: give 1 to 10 services ({} given)",
                req.services.len()
            )));
        }
        for i in &req.include {
            if i != "TAGS" {
                return Err(EcsError::invalid(format!("include: '{i}' is not TAGS")));
            }
        }
        let tags = req.include.iter().any(|i| i == "TAGS");
        let st = self.state.lock().await;
        st.active_cluster(&name)?;
        let mut out = DescribeServicesResponse::default();
        for given in &req.services {
            match st.find_service(&name, given) {
                Some(r) => out.services.push(view(r, tags)),
                None => out.failures.push(Failure {
                    arn: if given.starts_with("arn:") {
                        given.clone()
                    } else {
                        service_arn(&name, given)
                    },
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }

    /// UpdateContainerInstancesState: ACTIVE or DRAINING. A DRAINING instance takes no new
    /// task; the scheduler moves its service tasks off within each service's deployment limits
    /// and leaves its standalone tasks alone.
    pub async fn update_container_instances_state(
        &self,
        req: UpdateContainerInstancesStateRequest,
    ) -> Result<UpdateContainerInstancesStateResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        let status = match req.status.as_str() {
            "ACTIVE" | "DRAINING" => req.status.clone(),
            other => {
                return Err(EcsError::invalid(format!(
                    "status: '{other}' is not ACTIVE or DRAINING"
                )))
            }
        };
        if req.container_instances.is_empty() || req.container_instances.len() > 10 {
            return Err(EcsError::invalid(format!(
                "containerInstances: give 1 to 10 container instances ({} given)",
                req.container_instances.len()
            )));
        }
        let mut st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let mut out = UpdateContainerInstancesStateResponse::default();
        let mut changed: Vec<(String, ContainerInstanceRecord)> = Vec::new();
        for given in &req.container_instances {
            let Some((id, r)) = st.cluster_instance(&cluster_arn, given) else {
                out.failures.push(super::tasks::missing(given, |id| {
                    arn::container_instance(&name, id)
                }));
                continue;
            };
            let mut r: ContainerInstanceRecord = r.clone();
            let mut ci: ContainerInstance = r.container_instance.clone().unwrap_or_default();
            if super::instances::is_inactive(&ci) {
                out.failures.push(Failure {
                    arn: ci.container_instance_arn.clone(),
                    reason: "INACTIVE".into(),
                    detail: Some("the container instance was deregistered".into()),
                });
                continue;
            }
            if ci.status != status {
                ci.status = status.clone();
                ci.version += 1;
            }
            r.container_instance = Some(ci);
            changed.push((id, r));
        }
        self.commit(
            changed
                .iter()
                .map(|(id, r)| put(format!("{}{id}", super::INSTANCE_PREFIX), r))
                .collect(),
        )?;
        for (id, r) in changed {
            let connected = self.fleet.connected(&id);
            out.container_instances
                .push(st.instance_view(&r, connected));
            st.instances.insert(id, r);
        }
        drop(st);
        self.fleet.wake_services();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_round_as_ecs_does() {
        // minimumHealthyPercent rounds up, maximumPercent down.
        assert_eq!(limits(3, 50, 200), (2, 6));
        assert_eq!(limits(3, 100, 150), (3, 4));
        assert_eq!(limits(1, 0, 100), (0, 1));
        assert_eq!(limits(0, 100, 200), (0, 0));
    }

    #[test]
    fn the_breaker_threshold_is_half_the_desired_count_within_3_and_200() {
        assert_eq!(failure_threshold(1), 3);
        assert_eq!(failure_threshold(6), 3);
        assert_eq!(failure_threshold(10), 5);
        assert_eq!(failure_threshold(11), 6);
        assert_eq!(failure_threshold(1000), 200);
    }

    #[test]
    fn service_arns_are_ecs_long_format() {
        assert!(service_arn("c", "web").ends_with(":service/c/web"));
        assert!(new_deployment_id().starts_with("ecs-svc/"));
        assert_eq!(new_deployment_id().len(), "ecs-svc/".len() + 19);
    }
}
