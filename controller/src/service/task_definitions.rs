//! RegisterTaskDefinition, ListTaskDefinitions, DescribeTaskDefinition,
//! DeregisterTaskDefinition.

use super::validation::{fargate_pair_ok, validate};
use super::{now, put, taskdef_key, Controller, State};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::v1::*;

fn unable() -> EcsError {
    EcsError::client("Unable to describe task definition.")
}

impl State {
    /// The task definition a request names: `family` (latest ACTIVE revision),
    /// `family:revision` or an ARN.
    pub(crate) fn find_task_definition(
        &self,
        name: &str,
    ) -> Result<&RegisterTaskDefinitionResponse, EcsError> {
        let r = arn::resource("task-definition", name).ok_or_else(|| {
            EcsError::client(format!(
                "taskDefinition: '{name}' is not a task definition ARN"
            ))
        })?;
        let (family, revision) = match r.rsplit_once(':') {
            Some((f, rev)) => {
                let rev: i32 = rev.parse().map_err(|_| {
                    EcsError::client(format!(
                        "taskDefinition: revision '{rev}' in '{name}' is not a number"
                    ))
                })?;
                (f, Some(rev))
            }
            None => (r, None),
        };
        let revisions = self.task_definitions.get(family).ok_or_else(unable)?;
        match revision {
            Some(rev) => revisions.get(&rev).ok_or_else(unable),
            None => revisions
                .values()
                .rev()
                .find(|r| {
                    r.task_definition
                        .as_ref()
                        .is_some_and(|t| t.status == "ACTIVE")
                })
                .ok_or_else(unable),
        }
    }
}

impl Controller {
    /// RegisterTaskDefinition: validates, then stores the next revision of the family.
    pub async fn register_task_definition(
        &self,
        req: RegisterTaskDefinitionRequest,
    ) -> Result<RegisterTaskDefinitionResponse, EcsError> {
        // Every unsupported field at once, before the rules that assume a supported shape.
        super::fields::refuse_unsupported_registration(&req)?;
        let (cpu, memory) = validate(&req)?;
        super::clusters::validate_tags(&req.tags)?;
        // Every member named, so a field added to the model cannot be dropped here unseen.
        let RegisterTaskDefinitionRequest {
            family,
            task_role_arn,
            execution_role_arn,
            network_mode,
            container_definitions,
            volumes,
            placement_constraints,
            requires_compatibilities,
            cpu: _,
            memory: _,
            tags,
            pid_mode,
            ipc_mode,
            runtime_platform,
            ephemeral_storage,
            proxy_configuration,
            inference_accelerators,
            enable_fault_injection,
        } = req;
        let network_mode = network_mode.unwrap_or_else(|| "bridge".into());
        let mut compatibilities = vec!["EC2".to_string(), "EXTERNAL".to_string()];
        if network_mode == "awsvpc"
            && matches!((cpu, memory), (Some(c), Some(m)) if fargate_pair_ok(c, m))
        {
            compatibilities.push("FARGATE".into());
        }
        let containers = container_definitions
            .into_iter()
            .map(|mut c| {
                // ECS shows the defaults it applied.
                c.essential.get_or_insert(true);
                c.cpu.get_or_insert(0);
                for p in &mut c.port_mappings {
                    p.protocol.get_or_insert_with(|| "tcp".into());
                    if network_mode == "awsvpc" || network_mode == "host" {
                        p.host_port = p.container_port;
                    }
                }
                c
            })
            .collect();
        let mut st = self.state.lock().await;
        let revision = st
            .task_definitions
            .get(&family)
            .and_then(|r| r.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let td = TaskDefinition {
            task_definition_arn: arn::task_definition(&family, revision),
            container_definitions: containers,
            family: family.clone(),
            task_role_arn,
            execution_role_arn,
            network_mode,
            revision,
            volumes,
            status: "ACTIVE".into(),
            placement_constraints,
            compatibilities,
            requires_compatibilities,
            // Task cpu and memory as ECS shows them: units and MiB ("1 vCPU" → "1024").
            cpu: cpu.map(|c| c.to_string()),
            memory: memory.map(|m| m.to_string()),
            pid_mode,
            ipc_mode,
            runtime_platform,
            ephemeral_storage,
            proxy_configuration,
            inference_accelerators,
            enable_fault_injection,
            registered_at: Some(now()),
            registered_by: Some("berth".into()),
            // Set later in a revision's life (deregisteredAt, deleteRequestedAt) or by the
            // controller's record (requiresAttributes).
            ..Default::default()
        };
        let record = RegisterTaskDefinitionResponse {
            task_definition: Some(td),
            tags,
        };
        self.commit(vec![put(taskdef_key(&family, revision), &record)])?;
        st.task_definitions
            .entry(family)
            .or_default()
            .insert(revision, record.clone());
        Ok(record)
    }

    /// ListTaskDefinitions: ARNs by family and revision, filtered by prefix and status.
    pub async fn list_task_definitions(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<Vec<String>, EcsError> {
        let status = req
            .status
            .as_deref()
            .unwrap_or("ACTIVE")
            .to_ascii_uppercase();
        if !["ACTIVE", "INACTIVE", "ALL"].contains(&status.as_str()) {
            return Err(EcsError::invalid(format!(
                "status: '{status}' is not ACTIVE, INACTIVE or ALL"
            )));
        }
        let sort = req.sort.as_deref().unwrap_or("ASC").to_ascii_uppercase();
        if sort != "ASC" && sort != "DESC" {
            return Err(EcsError::invalid(format!(
                "sort: '{sort}' is not ASC or DESC"
            )));
        }
        let prefix = req.family_prefix.unwrap_or_default();
        let st = self.state.lock().await;
        let mut arns: Vec<String> = st
            .task_definitions
            .iter()
            // ECS's familyPrefix is a whole family name (`web` does not list `web-app`).
            .filter(|(f, _)| prefix.is_empty() || **f == prefix)
            .flat_map(|(_, revs)| revs.values())
            .filter_map(|r| r.task_definition.as_ref())
            .filter(|t| status == "ALL" || t.status == status)
            .map(|t| t.task_definition_arn.clone())
            .collect();
        if sort == "DESC" {
            arns.reverse();
        }
        Ok(arns)
    }

    /// DescribeTaskDefinition.
    pub async fn describe_task_definition(
        &self,
        name: &str,
    ) -> Result<RegisterTaskDefinitionResponse, EcsError> {
        let st = self.state.lock().await;
        st.find_task_definition(name).cloned()
    }

    /// DeregisterTaskDefinition: marks one revision INACTIVE; running tasks are unaffected.
    pub async fn deregister_task_definition(&self, name: &str) -> Result<TaskDefinition, EcsError> {
        let r = arn::resource("task-definition", name).unwrap_or(name);
        if !r.contains(':') {
            return Err(EcsError::client(format!(
                "taskDefinition: '{name}' names no revision; give family:revision or the full ARN"
            )));
        }
        let mut st = self.state.lock().await;
        let mut record = st.find_task_definition(name)?.clone();
        let Some(td) = record.task_definition.as_mut() else {
            return Err(unable());
        };
        if td.status == "ACTIVE" {
            td.status = "INACTIVE".into();
            td.deregistered_at = Some(now());
            let (family, revision) = (td.family.clone(), td.revision);
            self.commit(vec![put(taskdef_key(&family, revision), &record)])?;
            st.task_definitions
                .entry(family)
                .or_default()
                .insert(revision, record.clone());
        }
        Ok(record.task_definition.unwrap_or_default())
    }
}
