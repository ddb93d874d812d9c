//! RegisterTaskDefinition, ListTaskDefinitions, DescribeTaskDefinition,
//! DeregisterTaskDefinition.

use super::pagination::{paginate, Page};
use super::validation::{fargate_pair_ok, validate};
use super::{now, put, taskdef_key, Controller, State};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::arn;
use berth_proto::v1::*;

/// A revision's pagination key: it sorts as the list does, by family name (a family before the
/// longer names it is a prefix of, as the NUL separator sorts below every name character) and
/// then by revision number.
fn list_key(family: &str, revision: i32) -> String {
    format!("{family}\u{0}{revision:010}")
}

/// A status filter: `given` (or `default`) must be one of `allowed` or ALL (`None` here).
/// ListTaskDefinitions takes ECS's TaskDefinitionStatus (ACTIVE by default; Berth also takes
/// ALL), ListTaskDefinitionFamilies ACTIVE, INACTIVE or ALL (the default).
fn status_filter(
    given: Option<&str>,
    default: &str,
    allowed: &[&'static str],
) -> Result<Option<&'static str>, EcsError> {
    let status = given.unwrap_or(default).to_ascii_uppercase();
    if status == "ALL" {
        return Ok(None);
    }
    allowed
        .iter()
        .find(|a| **a == status)
        .map(|a| Some(*a))
        .ok_or_else(|| {
            EcsError::invalid(format!(
                "status: '{status}' is not {} or ALL",
                allowed.join(", ")
            ))
        })
}

const ACTIVE: &str = "ACTIVE";
const INACTIVE: &str = "INACTIVE";
const DELETE_IN_PROGRESS: &str = "DELETE_IN_PROGRESS";
/// The status of what is left of a deleted revision: its family's highest revision is kept
/// under it so the family's numbering goes on (ECS: "the revision is incremented the next
/// time"). Internal: never listed, described or run.
const DELETED: &str = "DELETED";

/// A revision whose deletion finished: family, revision, and the bare record kept in its place
/// (its family's highest revision) or `None` when it goes entirely.
pub(crate) type FinishedDeletion = (String, i32, Option<RegisterTaskDefinitionResponse>);

fn is_deleted(r: &RegisterTaskDefinitionResponse) -> bool {
    r.task_definition
        .as_ref()
        .is_none_or(|t| t.status == DELETED)
}

impl State {
    /// Finishes the deletion of every DELETE_IN_PROGRESS revision no task not yet STOPPED
    /// uses (from the per-instance index of such tasks, not a scan of every task): each is
    /// removed, its family's highest revision kept as a bare DELETED record. Returns the writes
    /// and applies them to the view only through `apply_deletions` once committed.
    pub(crate) fn finished_deletions(&self) -> Vec<FinishedDeletion> {
        let in_use: std::collections::HashSet<&str> = self
            .active
            .values()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
            .map(|t| t.task_definition_arn.as_str())
            .collect();
        let mut out = Vec::new();
        for (family, revisions) in &self.task_definitions {
            let highest = revisions.keys().next_back().copied();
            for (rev, r) in revisions {
                let Some(td) = r.task_definition.as_ref() else {
                    continue;
                };
                if td.status == DELETE_IN_PROGRESS
                    && !in_use.contains(td.task_definition_arn.as_str())
                {
                    let keep = (Some(*rev) == highest).then(|| RegisterTaskDefinitionResponse {
                        task_definition: Some(TaskDefinition {
                            task_definition_arn: td.task_definition_arn.clone(),
                            family: family.clone(),
                            revision: *rev,
                            status: DELETED.into(),
                            ..Default::default()
                        }),
                        tags: Vec::new(),
                    });
                    out.push((family.clone(), *rev, keep));
                } else if td.status == DELETED && Some(*rev) != highest {
                    // A bare record below a newer revision numbers nothing any more.
                    out.push((family.clone(), *rev, None));
                }
            }
        }
        out
    }

    /// How many of `done` are revisions whose deletion finishes, not the bare records tidied
    /// away with them.
    pub(crate) fn deletions_finishing(&self, done: &[FinishedDeletion]) -> usize {
        done.iter()
            .filter(|(family, rev, _)| {
                self.task_definitions
                    .get(family)
                    .and_then(|revs| revs.get(rev))
                    .is_some_and(|r| !is_deleted(r))
            })
            .count()
    }

    /// Applies committed `finished_deletions` to the view.
    pub(crate) fn apply_deletions(&mut self, done: Vec<FinishedDeletion>) {
        for (family, rev, keep) in done {
            let Some(revisions) = self.task_definitions.get_mut(&family) else {
                continue;
            };
            match keep {
                Some(r) => {
                    revisions.insert(rev, r);
                }
                None => {
                    revisions.remove(&rev);
                }
            }
            if revisions.is_empty() {
                self.task_definitions.remove(&family);
            }
        }
    }
}

/// The store writes of `finished_deletions`.
pub(crate) fn deletion_writes(done: &[FinishedDeletion]) -> Vec<Write> {
    done.iter()
        .map(|(family, rev, keep)| match keep {
            Some(r) => put(taskdef_key(family, *rev), r),
            None => Write::Delete(taskdef_key(family, *rev)),
        })
        .collect()
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
            Some(rev) => revisions
                .get(&rev)
                .filter(|r| !is_deleted(r))
                .ok_or_else(unable),
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
        // ECS Anywhere (EXTERNAL) has no awsvpc mode, so ECS leaves it out for awsvpc.
        let mut compatibilities = vec!["EC2".to_string()];
        if network_mode != "awsvpc" {
            compatibilities.push("EXTERNAL".into());
        }
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
                super::validation::lifecycle::fill_defaults(&mut c);
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

    /// ListTaskDefinitions: ARNs by family (lexicographic) and revision (numeric), ascending or
    /// descending, filtered by family and status, a page at a time.
    pub async fn list_task_definitions(
        &self,
        req: ListTaskDefinitionsRequest,
    ) -> Result<Page<String>, EcsError> {
        let status = status_filter(
            req.status.as_deref(),
            ACTIVE,
            &[ACTIVE, INACTIVE, DELETE_IN_PROGRESS],
        )?;
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
            .filter(|t| t.status != DELETED && status.is_none_or(|s| t.status == s))
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

    /// ListTaskDefinitionFamilies: family names starting with `familyPrefix`, in name order, a
    /// page at a time. By default (ALL) every family with a revision left; ACTIVE: families with
    /// an ACTIVE revision; INACTIVE: families with none.
    pub async fn list_task_definition_families(
        &self,
        req: ListTaskDefinitionFamiliesRequest,
    ) -> Result<Page<String>, EcsError> {
        let wants_active =
            status_filter(req.status.as_deref(), "ALL", &[ACTIVE, INACTIVE])?.map(|s| s == ACTIVE);
        let prefix = req.family_prefix.unwrap_or_default();
        let st = self.state.lock().await;
        let listed = st
            .task_definitions
            .range(prefix.clone()..)
            .take_while(|(f, _)| f.starts_with(&prefix))
            .filter(|(_, revs)| revs.values().any(|r| !is_deleted(r)))
            .filter(|(_, revs)| {
                let active = revs.values().any(|r| {
                    r.task_definition
                        .as_ref()
                        .is_some_and(|t| t.status == ACTIVE)
                });
                wants_active.is_none_or(|w| w == active)
            })
            .map(|(f, _)| (f.clone(), f.clone()));
        paginate(listed, false, req.next_token.as_deref(), req.max_results)
    }

    /// DeleteTaskDefinitions: up to 10 INACTIVE revisions go DELETE_IN_PROGRESS, and are gone
    /// once no task not yet STOPPED uses them (at once when none does). Revisions that are not
    /// INACTIVE, or not found, are failures; the others are deleted.
    pub async fn delete_task_definitions(
        &self,
        req: DeleteTaskDefinitionsRequest,
    ) -> Result<DeleteTaskDefinitionsResponse, EcsError> {
        if req.task_definitions.is_empty() {
            return Err(EcsError::invalid(
                "taskDefinitions: give at least one family:revision or ARN",
            ));
        }
        if req.task_definitions.len() > 10 {
            return Err(EcsError::invalid(
                "taskDefinitions: at most 10 task definitions per call",
            ));
        }
        let mut st = self.state.lock().await;
        let mut out = DeleteTaskDefinitionsResponse::default();
        let mut changed = Vec::new();
        // Each revision once, however often it is named.
        let mut named_already = std::collections::HashSet::new();
        for given in &req.task_definitions {
            let failure = |reason: &str| Failure {
                arn: given.clone(),
                reason: reason.into(),
                detail: None,
            };
            let named = arn::resource("task-definition", given).unwrap_or(given);
            if !named.contains(':') {
                out.failures.push(failure(
                    "The specified task definition does not name a revision; give family:revision or the full ARN.",
                ));
                continue;
            }
            let Ok(record) = st.find_task_definition(given) else {
                // Named by its full ARN, as the other failures are.
                let full = arn::family_revision(given)
                    .map(|(family, rev)| arn::task_definition(family, rev))
                    .unwrap_or_else(|| given.clone());
                out.failures.push(Failure {
                    arn: full,
                    ..failure("The specified task definition does not exist.")
                });
                continue;
            };
            let mut record = record.clone();
            let Some(td) = record.task_definition.as_mut() else {
                continue;
            };
            match td.status.as_str() {
                ACTIVE => {
                    out.failures.push(Failure {
                        arn: td.task_definition_arn.clone(),
                        ..failure("The specified task definition is still in ACTIVE status. Please deregister the target and try again.")
                    });
                    continue;
                }
                DELETE_IN_PROGRESS => {}
                _ => {
                    td.status = DELETE_IN_PROGRESS.into();
                    td.delete_requested_at = Some(now());
                }
            }
            if !named_already.insert((td.family.clone(), td.revision)) {
                continue;
            }
            out.task_definitions.push(td.clone());
            changed.push(record);
        }
        let mut writes: Vec<Write> = changed
            .iter()
            .filter_map(|r| r.task_definition.as_ref().map(|t| (t, r)))
            .map(|(t, r)| put(taskdef_key(&t.family, t.revision), r))
            .collect();
        // The view takes the change first so the deletions it finishes at once are known; both
        // go in one transaction, and the view is put back if it fails.
        let mut previous = Vec::new();
        for r in changed {
            if let Some(t) = &r.task_definition {
                let (family, revision) = (t.family.clone(), t.revision);
                let old = st
                    .task_definitions
                    .entry(family.clone())
                    .or_default()
                    .insert(revision, r);
                previous.push((family, revision, old));
            }
        }
        let done = st.finished_deletions();
        writes.extend(deletion_writes(&done));
        if let Err(e) = self.commit(writes) {
            for (family, revision, old) in previous {
                if let (Some(revs), Some(old)) = (st.task_definitions.get_mut(&family), old) {
                    revs.insert(revision, old);
                }
            }
            return Err(e);
        }
        st.apply_deletions(done);
        Ok(out)
    }

    /// Removes the DELETE_IN_PROGRESS revisions no task not yet STOPPED uses any more (the
    /// retention sweep calls it); returns how many went.
    pub async fn purge_deleted_task_definitions(&self) -> Result<usize, EcsError> {
        let mut st = self.state.lock().await;
        self.finish_deletions(&mut st)
    }

    /// Removes the DELETE_IN_PROGRESS revisions no task uses any more.
    pub(crate) fn finish_deletions(&self, st: &mut State) -> Result<usize, EcsError> {
        let done = st.finished_deletions();
        if done.is_empty() {
            return Ok(0);
        }
        self.commit(deletion_writes(&done))?;
        let n = st.deletions_finishing(&done);
        st.apply_deletions(done);
        Ok(n)
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
