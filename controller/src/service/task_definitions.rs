//! RegisterTaskDefinition, ListTaskDefinitions, DescribeTaskDefinition,
//! DeregisterTaskDefinition.

use super::pagination::{paginate, Page};
use super::validation::{fargate_pair_ok, validate};
use super::{now, put, taskdef_key, Controller, State};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::v1::*;

/// A revision's pagination key: it sorts as the list does, by family name (a family before the
/// longer names it is a prefix of, as the NUL separator sorts below every name character) and
/// then by revision number.
fn list_key(family: &str, revision: i32) -> String {
    format!("{family}\u{0}{revision:010}")
}

/// The status filter of ListTaskDefinitions and ListTaskDefinitionFamilies: `None` for ALL.
fn definition_status(given: Option<&str>) -> Result<Option<&'static str>, EcsError> {
    match given.unwrap_or("ACTIVE").to_ascii_uppercase().as_str() {
        "ACTIVE" => Ok(Some("ACTIVE")),
        "INACTIVE" => Ok(Some("INACTIVE")),
        "ALL" => Ok(None),
        other => Err(EcsError::invalid(format!(
            "status: '{other}' is not ACTIVE, INACTIVE or ALL"
        ))),
    }
}

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
        let (cpu, memory) = validate(&req)?;
        super::clusters::validate_tags(&req.tags)?;
        let network_mode = req.network_mode.clone().unwrap_or_else(|| "bridge".into());
        let mut compatibilities = vec!["EC2".to_string(), "EXTERNAL".to_string()];
        if network_mode == "awsvpc"
            && matches!((cpu, memory), (Some(c), Some(m)) if fargate_pair_ok(c, m))
        {
            compatibilities.push("FARGATE".into());
        }
        let containers = req
            .container_definitions
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
            .get(&req.family)
            .and_then(|r| r.keys().next_back().copied())
            .unwrap_or(0)
            + 1;
        let td = TaskDefinition {
            task_definition_arn: arn::task_definition(&req.family, revision),
            container_definitions: containers,
            family: req.family.clone(),
            task_role_arn: req.task_role_arn,
            execution_role_arn: req.execution_role_arn,
            network_mode,
            revision,
            volumes: req.volumes,
            status: "ACTIVE".into(),
            placement_constraints: req.placement_constraints,
            compatibilities,
            requires_compatibilities: req.requires_compatibilities,
            cpu: cpu.map(|c| c.to_string()),
            memory: memory.map(|m| m.to_string()),
            pid_mode: req.pid_mode,
            ipc_mode: req.ipc_mode,
            runtime_platform: req.runtime_platform,
            ephemeral_storage: req.ephemeral_storage,
            registered_at: Some(now()),
            registered_by: Some("berth".into()),
            ..Default::default()
        };
        let record = RegisterTaskDefinitionResponse {
            task_definition: Some(td),
            tags: req.tags,
        };
        self.commit(vec![put(taskdef_key(&req.family, revision), &record)])?;
        st.task_definitions
            .entry(req.family)
            .or_default()
            .insert(revision, record.clone());
        Ok(record)
    }

    /// ListTaskDefinitions: ARNs by family (lexicographic) and revision (numeric), ascending or
    /// descending, filtered by family and status, a page at a time.
    pub async fn list_task_definitions(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<Page<String>, EcsError> {
        let status = definition_status(req.status.as_deref())?;
        let sort = req.sort.as_deref().unwrap_or("ASC").to_ascii_uppercase();
        let descending = match sort.as_str() {
            "ASC" => false,
            "DESC" => true,
            _ => {
                return Err(EcsError::invalid(format!(
                    "sort: '{sort}' is not ASC or DESC"
                )))
            }
        };
        let family = req.family_prefix.unwrap_or_default();
        let st = self.state.lock().await;
        let listed = st
            .task_definitions
            .iter()
            // ECS's familyPrefix is a whole family name (`web` does not list `web-app`).
            .filter(|(f, _)| family.is_empty() || **f == family)
            .flat_map(|(_, revs)| revs.values())
            .filter_map(|r| r.task_definition.as_ref())
            .filter(|t| status.is_none_or(|s| t.status == s))
            .map(|t| {
                (
                    list_key(&t.family, t.revision),
                    t.task_definition_arn.clone(),
                )
            });
        if descending {
            paginate(
                listed.collect::<Vec<_>>().into_iter().rev(),
                true,
                req.next_token.as_deref(),
                req.max_results,
            )
        } else {
            paginate(listed, false, req.next_token.as_deref(), req.max_results)
        }
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
