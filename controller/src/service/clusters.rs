//! CreateCluster, ListClusters, DescribeClusters, DeleteCluster.

use super::instances::is_inactive;
use super::pagination::{paginate, Page};
use super::{cluster_name, put, Controller, State, CLUSTER_PREFIX};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::*;

/// Cluster names: up to 255 letters, numbers, hyphens and underscores (ECS's rule).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

impl State {
    /// The ACTIVE cluster with this name.
    pub(crate) fn active_cluster(&self, name: &str) -> Result<&Cluster, EcsError> {
        self.clusters
            .get(name)
            .filter(|c| c.status == "ACTIVE")
            .ok_or(EcsError::ClusterNotFound)
    }

    /// The cluster's tasks not yet STOPPED, from the per-instance index of such tasks.
    pub(crate) fn active_in_cluster<'a>(
        &'a self,
        cluster_arn: &'a str,
    ) -> impl Iterator<Item = &'a Task> + 'a {
        self.active
            .values()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .filter(move |t| t.cluster_arn == cluster_arn)
    }

    /// The cluster with its counts filled in from tasks and instances.
    fn cluster_view(&self, c: &Cluster, include: &[String]) -> Cluster {
        let mut v = c.clone();
        let arn = &c.cluster_arn;
        let (mut running, mut pending) = (0, 0);
        // ECS's statistics split the counts by launch type: [EC2 and EXTERNAL, FARGATE].
        let (mut running_by, mut pending_by) = ([0, 0], [0, 0]);
        // Tasks not yet STOPPED, from the per-instance index: a cluster's view costs what runs,
        // not every task still retained.
        for t in self.active_in_cluster(arn) {
            let desired = TaskStatus::parse(&t.desired_status);
            let kind = usize::from(t.launch_type == "FARGATE");
            match TaskStatus::parse(&t.last_status) {
                Ok(TaskStatus::Running) => {
                    running += 1;
                    running_by[kind] += 1;
                }
                Ok(TaskStatus::Stopped) => {}
                _ if desired == Ok(TaskStatus::Running) => {
                    pending += 1;
                    pending_by[kind] += 1;
                }
                _ => {}
            }
        }
        v.running_tasks_count = running;
        v.pending_tasks_count = pending;
        v.active_services_count = self.active_services(&c.cluster_name);
        v.registered_container_instances_count = self
            .instances
            .values()
            .filter(|i| {
                &i.cluster_arn == arn
                    && i.container_instance
                        .as_ref()
                        .is_some_and(|ci| !is_inactive(ci))
            })
            .count() as i32;
        let has = |what: &str| include.iter().any(|i| i.eq_ignore_ascii_case(what));
        if has("STATISTICS") {
            let stat = |name: &str, value: i32| KeyValuePair {
                name: name.to_string(),
                value: value.to_string(),
            };
            v.statistics = vec![
                stat("runningEC2TasksCount", running_by[0]),
                stat("runningFargateTasksCount", running_by[1]),
                stat("pendingEC2TasksCount", pending_by[0]),
                stat("pendingFargateTasksCount", pending_by[1]),
                stat("activeEC2ServiceCount", 0),
                stat("activeFargateServiceCount", 0),
                stat("drainingEC2ServiceCount", 0),
                stat("drainingFargateServiceCount", 0),
            ];
        }
        if !has("SETTINGS") {
            v.settings.clear();
        }
        if !has("CONFIGURATIONS") {
            v.configuration = None;
        }
        if !has("TAGS") {
            v.tags.clear();
        }
        v
    }
}

impl Controller {
    /// CreateCluster: creates the cluster, or returns it when it exists (as ECS does).
    pub async fn create_cluster(&self, req: CreateClusterRequest) -> Result<Cluster, EcsError> {
        let name = if req.cluster_name.is_empty() {
            super::DEFAULT_CLUSTER.to_string()
        } else {
            req.cluster_name.clone()
        };
        if !valid_name(&name) {
            return Err(EcsError::invalid(format!(
                "clusterName: '{name}' is not valid; up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores are allowed"
            )));
        }
        validate_settings(&req.settings)?;
        validate_tags(&req.tags)?;
        if req.service_connect_defaults.is_some() {
            return Err(EcsError::invalid(
                "serviceConnectDefaults: Service Connect is not supported by Berth",
            ));
        }
        if !req.default_capacity_provider_strategy.is_empty() {
            return Err(EcsError::invalid(
                "defaultCapacityProviderStrategy: capacity provider strategies are not supported by Berth (tasks are placed on the cluster's registered instances)",
            ));
        }
        if let Some(c) = &req.configuration {
            validate_configuration(c)?;
        }
        let mut st = self.state.lock().await;
        if let Some(c) = st.clusters.get(&name).filter(|c| c.status == "ACTIVE") {
            return Ok(st.cluster_view(c, &["SETTINGS".into(), "TAGS".into()]));
        }
        let settings = if req.settings.is_empty() {
            vec![ClusterSetting {
                name: "containerInsights".into(),
                value: "disabled".into(),
            }]
        } else {
            req.settings
        };
        let c = Cluster {
            cluster_arn: arn::cluster(&name),
            cluster_name: name.clone(),
            status: "ACTIVE".into(),
            tags: req.tags,
            settings,
            capacity_providers: req.capacity_providers,
            configuration: req.configuration,
            ..Default::default()
        };
        // The cluster is a VPC: its `default` security group comes with it (a re-created
        // cluster keeps the one it had).
        let defaults = st.missing_default_groups([name.as_str()]);
        let mut writes = vec![put(format!("{CLUSTER_PREFIX}{name}"), &c)];
        writes.extend(defaults.iter().map(super::security_groups::group_write));
        self.commit(writes)?;
        st.clusters.insert(name, c.clone());
        for d in defaults {
            st.insert_group(d);
        }
        Ok(st.cluster_view(&c, &["SETTINGS".into(), "TAGS".into()]))
    }

    /// ListClusters: the ARNs of ACTIVE clusters, a page at a time (by name, the ARN's order).
    pub async fn list_clusters(&self, req: ListClustersRequest) -> Result<Page<String>, EcsError> {
        let st = self.state.lock().await;
        paginate(
            st.clusters
                .values()
                .filter(|c| c.status == "ACTIVE")
                .map(|c| (c.cluster_arn.clone(), c.cluster_arn.clone())),
            false,
            req.next_token.as_deref(),
            req.max_results,
        )
    }

    /// DescribeClusters: found clusters, and a MISSING failure for each unknown one.
    pub async fn describe_clusters(
        &self,
        req: DescribeClustersRequest,
    ) -> Result<DescribeClustersResponse, EcsError> {
        // The ECS guide writes `--include STATISTICS,SETTINGS,CONFIGURATIONS`, which the aws CLI
        // sends as one value: each value may name several, comma-separated.
        let include: Vec<String> = req
            .include
            .iter()
            .flat_map(|i| i.split(','))
            .map(|i| i.trim().to_string())
            .collect();
        for i in &include {
            if ![
                "STATISTICS",
                "SETTINGS",
                "TAGS",
                "CONFIGURATIONS",
                "ATTACHMENTS",
            ]
            .contains(&i.to_ascii_uppercase().as_str())
            {
                return Err(EcsError::invalid(format!(
                    "include: '{i}' is not one of STATISTICS, SETTINGS, TAGS, CONFIGURATIONS, ATTACHMENTS"
                )));
            }
        }
        let names = if req.clusters.is_empty() {
            vec![super::DEFAULT_CLUSTER.to_string()]
        } else {
            req.clusters
        };
        let st = self.state.lock().await;
        let mut out = DescribeClustersResponse::default();
        for n in names {
            let name = cluster_name(Some(&n))?;
            match st.clusters.get(&name) {
                Some(c) => out.clusters.push(st.cluster_view(c, &include)),
                None => out.failures.push(Failure {
                    arn: arn::cluster(&name),
                    reason: "MISSING".into(),
                    detail: None,
                }),
            }
        }
        Ok(out)
    }

    /// UpdateClusterSettings: sets containerInsights.
    pub async fn update_cluster_settings(
        &self,
        req: UpdateClusterSettingsRequest,
    ) -> Result<Cluster, EcsError> {
        if req.settings.is_empty() {
            return Err(EcsError::invalid("settings: give at least one setting"));
        }
        self.update_cluster(UpdateClusterRequest {
            cluster: req.cluster,
            settings: req.settings,
            ..Default::default()
        })
        .await
    }

    /// UpdateCluster: sets settings and the configuration (executeCommandConfiguration and
    /// managedStorageConfiguration are stored and shown). Service Connect is refused by name.
    pub async fn update_cluster(&self, req: UpdateClusterRequest) -> Result<Cluster, EcsError> {
        if req.cluster.is_empty() {
            return Err(EcsError::invalid("cluster: is required"));
        }
        if req.service_connect_defaults.is_some() {
            return Err(EcsError::invalid(
                "serviceConnectDefaults: Service Connect is not supported by Berth",
            ));
        }
        validate_settings(&req.settings)?;
        if let Some(c) = &req.configuration {
            validate_configuration(c)?;
        }
        let name = cluster_name(Some(&req.cluster))?;
        let mut st = self.state.lock().await;
        let mut c = st.active_cluster(&name)?.clone();
        merge_settings(&mut c.settings, req.settings);
        if let Some(given) = req.configuration {
            let have = c.configuration.get_or_insert_with(Default::default);
            if given.execute_command_configuration.is_some() {
                have.execute_command_configuration = given.execute_command_configuration;
            }
            if given.managed_storage_configuration.is_some() {
                have.managed_storage_configuration = given.managed_storage_configuration;
            }
        }
        self.commit(vec![put(format!("{CLUSTER_PREFIX}{name}"), &c)])?;
        st.clusters.insert(name, c.clone());
        Ok(st.cluster_view(&c, &["SETTINGS".into(), "CONFIGURATIONS".into()]))
    }

    /// DeleteCluster: refused while container instances or tasks remain; the cluster then shows
    /// INACTIVE.
    pub async fn delete_cluster(&self, cluster: &str) -> Result<Cluster, EcsError> {
        let name = cluster_name(Some(cluster))?;
        let mut st = self.state.lock().await;
        let c = st.active_cluster(&name)?.clone();
        if st.instances.values().any(|i| {
            i.cluster_arn == c.cluster_arn
                && i.container_instance
                    .as_ref()
                    .is_some_and(|ci| !is_inactive(ci))
        }) {
            return Err(EcsError::ClusterContainsContainerInstances);
        }
        if st.has_live_services(&name) {
            return Err(EcsError::ClusterContainsServices);
        }
        if st.active_in_cluster(&c.cluster_arn).next().is_some() {
            return Err(EcsError::ClusterContainsTasks);
        }
        let mut deleted = c;
        deleted.status = "INACTIVE".into();
        self.commit(vec![put(format!("{CLUSTER_PREFIX}{name}"), &deleted)])?;
        st.clusters.insert(name, deleted.clone());
        Ok(st.cluster_view(&deleted, &[]))
    }
}

/// Cluster settings: containerInsights only, enabled, disabled or enhanced (ECS's values).
fn validate_settings(settings: &[ClusterSetting]) -> Result<(), EcsError> {
    for (i, s) in settings.iter().enumerate() {
        if s.name != "containerInsights" {
            return Err(EcsError::invalid(format!(
                "settings[{i}].name: unknown setting name '{}'; the only cluster setting is containerInsights",
                s.name
            )));
        }
        if !["enabled", "disabled", "enhanced"].contains(&s.value.as_str()) {
            return Err(EcsError::invalid(format!(
                "settings[{i}].value: containerInsights must be enabled, disabled or enhanced, not '{}'",
                s.value
            )));
        }
    }
    Ok(())
}

/// executeCommandConfiguration.logging is NONE, DEFAULT or OVERRIDE, and OVERRIDE needs a
/// logConfiguration (ECS's rule). Berth stores and shows it; nothing runs execute-command yet.
fn validate_configuration(c: &ClusterConfiguration) -> Result<(), EcsError> {
    if let Some(e) = &c.execute_command_configuration {
        match e.logging.as_deref() {
            None | Some("NONE" | "DEFAULT") => {}
            Some("OVERRIDE") if e.log_configuration.is_some() => {}
            Some("OVERRIDE") => {
                return Err(EcsError::invalid(
                    "configuration.executeCommandConfiguration.logConfiguration: is required when logging is OVERRIDE",
                ))
            }
            Some(other) => {
                return Err(EcsError::invalid(format!(
                    "configuration.executeCommandConfiguration.logging: '{other}' is not NONE, DEFAULT or OVERRIDE"
                )))
            }
        }
    }
    Ok(())
}

/// Sets each of `given` by name over `settings`.
fn merge_settings(settings: &mut Vec<ClusterSetting>, given: Vec<ClusterSetting>) {
    for s in given {
        match settings.iter_mut().find(|have| have.name == s.name) {
            Some(have) => have.value = s.value,
            None => settings.push(s),
        }
    }
}

/// A tag key (TagResource's, UntagResource's, any create call's): 1–128 characters, not with
/// the reserved `aws:` prefix. `field` names it in the error.
pub(crate) fn validate_tag_key(field: &str, key: &str) -> Result<(), EcsError> {
    if key.is_empty() || key.chars().count() > 128 {
        return Err(EcsError::invalid(format!(
            "{field}: must be 1 to 128 characters"
        )));
    }
    if key.to_ascii_lowercase().starts_with("aws:") {
        return Err(EcsError::invalid(format!(
            "{field}: '{key}' uses the prefix aws:, which is reserved"
        )));
    }
    Ok(())
}

/// Tags: keys 1–128 characters and unique, values up to 256, at most 50 (ECS's limits).
pub(crate) fn validate_tags(tags: &[Tag]) -> Result<(), EcsError> {
    if tags.len() > 50 {
        return Err(EcsError::invalid("tags: at most 50 tags are allowed"));
    }
    for (i, t) in tags.iter().enumerate() {
        if tags[..i].iter().any(|earlier| earlier.key == t.key) {
            return Err(EcsError::invalid(format!(
                "tags[{i}].key: '{}' is given twice; each tag key must be unique",
                t.key
            )));
        }
        validate_tag_key(&format!("tags[{i}].key"), &t.key)?;
        if t.value.chars().count() > 256 {
            return Err(EcsError::invalid(format!(
                "tags[{i}].value: must be at most 256 characters"
            )));
        }
    }
    Ok(())
}
