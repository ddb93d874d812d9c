//! Containers the agent has no task record of (a lost or restored data dir): found at start-up
//! by Berth's containerd labels, reported to the controller at every session start
//! (`unknown_to_controller`) and never stopped unconfirmed. A task the controller then names is
//! taken over by inspecting its containers (the actor's recovery), not started anew; so is a
//! task the controller says was already past PROVISIONING.

use super::{task::container_id, task_id, Engine};
use crate::cgroups::Cgroups;
use crate::runtime::{
    ContainerState, LabelledContainer, Runtime, RuntimeError, CONTAINER_NAME_LABEL, FAMILY_LABEL,
    REVISION_LABEL, TASK_ARN_LABEL,
};
use crate::state::TaskRecord;
use berth_proto::status::{ContainerStatus, TaskStatus};
use berth_proto::v1::{ContainerStateChange, Task, TaskDefinition, TaskStateChange};
use std::collections::HashMap;
use tracing::warn;

/// A task known only from its labelled containers.
#[derive(Debug, Clone)]
pub(crate) struct UnrecordedTask {
    pub containers: Vec<LabelledContainer>,
    /// What is reported of it.
    pub report: TaskStateChange,
    /// Whether this session has reported it.
    pub reported: bool,
}

fn status_of(s: ContainerState) -> ContainerStatus {
    match s {
        // UNKNOWN: containerd cannot tell, so the process may still run.
        ContainerState::Running | ContainerState::Created | ContainerState::Unknown => {
            ContainerStatus::Running
        }
        ContainerState::Stopped(_) | ContainerState::Missing => ContainerStatus::Stopped,
    }
}

fn report_of(arn: &str, containers: &[LabelledContainer]) -> TaskStateChange {
    let running = containers
        .iter()
        .any(|c| status_of(c.state) == ContainerStatus::Running);
    let label = |c: &LabelledContainer, k: &str| c.labels.get(k).cloned();
    let td_arn = containers.first().and_then(|c| {
        let family = label(c, FAMILY_LABEL)?;
        let revision = label(c, REVISION_LABEL)?.parse().ok()?;
        Some(berth_proto::arn::task_definition(&family, revision))
    });
    TaskStateChange {
        task_arn: arn.to_string(),
        last_status: if running {
            TaskStatus::Running
        } else {
            TaskStatus::Stopped
        }
        .as_str()
        .into(),
        containers: containers
            .iter()
            .map(|c| ContainerStateChange {
                name: label(c, CONTAINER_NAME_LABEL).unwrap_or_else(|| c.id.clone()),
                runtime_id: Some(c.id.clone()),
                last_status: status_of(c.state).as_str().into(),
                exit_code: match c.state {
                    ContainerState::Stopped(code) => Some(code as i32),
                    _ => None,
                },
                ..Default::default()
            })
            .collect(),
        unknown_to_controller: true,
        task_definition_arn: td_arn,
        ..Default::default()
    }
}

/// A record that makes the actor inspect the task's containers (recovery) instead of starting
/// them: from the listed containers if any, else from the controller's view of the task.
pub(crate) fn inspect_first(
    task: &Task,
    definition: Option<&TaskDefinition>,
    listed: Option<Vec<LabelledContainer>>,
) -> TaskRecord {
    let id = task_id(&task.task_arn);
    let state = match listed {
        Some(cs) => TaskStateChange {
            unknown_to_controller: false,
            ..report_of(&task.task_arn, &cs)
        },
        None => TaskStateChange {
            task_arn: task.task_arn.clone(),
            last_status: task.last_status.clone(),
            containers: task
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| ContainerStateChange {
                    name: c.name.clone(),
                    runtime_id: Some(
                        c.runtime_id
                            .clone()
                            .unwrap_or_else(|| container_id(&id, i, &c.name)),
                    ),
                    last_status: c.last_status.clone(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
    };
    TaskRecord {
        task: task.clone(),
        definition: definition.cloned().unwrap_or_default(),
        desired_status: TaskStatus::Running.as_str().into(),
        state,
        stop_signals: Default::default(),
        oom_kills_before: Default::default(),
        namespace_holders: Default::default(),
        // When its containers ran is unknown: a gone one counts as vanished, not rebooted.
        boot_id: None,
        // Its network, if any, is unknown without the record (recovery at start removed what
        // no record names); the caller adds the assignment's TaskNetwork.
        task_network: None,
        network: None,
        network_set_up: false,
        network_released: false,
    }
}

impl<R: Runtime, C: Cgroups> Engine<R, C> {
    /// At start-up: lists the containers carrying this cluster's labels and reports each task
    /// they belong to that no task record holds. Returns how many such tasks there are.
    pub async fn report_unrecorded(&self) -> Result<usize, RuntimeError> {
        let listed = self
            .shared
            .runtime
            .list(&self.shared.config.cluster)
            .await?;
        let mut by_task: HashMap<String, Vec<LabelledContainer>> = HashMap::new();
        for c in listed {
            if let Some(arn) = c.labels.get(TASK_ARN_LABEL).cloned() {
                by_task.entry(arn).or_default().push(c);
            }
        }
        let held: Vec<String> = match self.shared.entries.lock() {
            Ok(e) => e.keys().cloned().collect(),
            Err(_) => Vec::new(),
        };
        // A stopped task awaiting its cleanup wait is known, not an orphan.
        by_task
            .retain(|arn, _| !held.contains(&task_id(arn)) && !self.shared.cleanup.contains(arn));
        let mut found = self
            .shared
            .unrecorded
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        for (arn, containers) in by_task {
            warn!(task = %arn, containers = containers.len(), "containers with no task record; reporting them to the controller, not stopping them");
            let report = report_of(&arn, &containers);
            self.shared.reporter.report(report.clone());
            found.insert(
                arn,
                UnrecordedTask {
                    containers,
                    report,
                    reported: true,
                },
            );
        }
        Ok(found.len())
    }
}
