//! Image pull progress (issue 11, a Berth extension): what each agent last reported of its
//! tasks' image pulls (about once a second while one runs), in memory only like task stats
//! (`stats.rs`): a report replaces the last, a lost one is replaced by the next, nothing
//! survives a restart. Answered by DescribePullProgress and followed by `berth ecs run-task
//! --wait`.

use super::tasks::{missing, task_id};
use super::{cluster_name, Controller, SessionInfo};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::*;

impl Controller {
    /// Keeps a task's pull progress: only for a task assigned to the session's instance and not
    /// STOPPED (another instance's word, or an unknown task's, is dropped). The progress of
    /// tasks that stopped or are gone is forgotten here too.
    pub async fn apply_pull_progress(&self, session: &SessionInfo, report: TaskPullProgress) {
        let st = self.state.lock().await;
        let Some(instance_arn) = st
            .instances
            .get(&session.instance_id)
            .and_then(|r| r.container_instance.as_ref())
            .map(|ci| ci.container_instance_arn.clone())
        else {
            return;
        };
        let running = |id: &str| {
            st.tasks
                .get(id)
                .filter(|t| TaskStatus::parse(&t.last_status) != Ok(TaskStatus::Stopped))
        };
        let Ok(mut progress) = self.pull_progress.lock() else {
            return;
        };
        if let Some(id) = task_id(&report.task_arn).map(str::to_string) {
            let own = running(&id)
                .is_some_and(|t| t.container_instance_arn.as_deref() == Some(&instance_arn));
            if own {
                progress.insert(id, report);
            }
        }
        progress.retain(|id, _| running(id).is_some());
    }

    /// DescribePullProgress: the latest pull progress of each task; MISSING for an unknown
    /// task, PROGRESS_UNAVAILABLE for one with none (STOPPED, or no report since the controller
    /// started: its images were not pulled yet, or were pulled before).
    pub async fn describe_pull_progress(
        &self,
        req: DescribePullProgressRequest,
    ) -> Result<DescribePullProgressResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        super::tasks::check_task_list(&req.tasks)?;
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let progress = self
            .pull_progress
            .lock()
            .map_err(|_| EcsError::invalid("pull progress unavailable"))?;
        let mut out = DescribePullProgressResponse::default();
        for given in req.tasks {
            let Some(t) = st.cluster_task(&cluster_arn, &given) else {
                out.failures
                    .push(missing(&given, |id| arn::task(&name, id)));
                continue;
            };
            let stopped = TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Stopped);
            match task_id(&t.task_arn)
                .and_then(|id| progress.get(id))
                .filter(|_| !stopped)
            {
                Some(p) => out.progress.push(TaskPullProgress {
                    task_arn: t.task_arn.clone(),
                    containers: p.containers.clone(),
                }),
                None => out.failures.push(Failure {
                    arn: t.task_arn.clone(),
                    reason: "PROGRESS_UNAVAILABLE".into(),
                    detail: Some(
                        "no pull progress: the task is STOPPED, or its agent has reported no pull since the controller started"
                            .into(),
                    ),
                }),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{controller, instance_with, register_td};
    use super::*;

    fn report(arn: &str, bytes_done: u64) -> TaskPullProgress {
        TaskPullProgress {
            task_arn: arn.into(),
            containers: vec![ContainerPullProgress {
                container_name: "a".into(),
                image: "reg.example/app:1".into(),
                phase: "DOWNLOADING".into(),
                layers_done: 1,
                layers_total: 3,
                bytes_done,
                bytes_total: 1000,
            }],
        }
    }

    /// The latest report of the instance's own task is shown; another instance's word about
    /// it is dropped; an unknown task is MISSING, one without a report PROGRESS_UNAVAILABLE;
    /// once the task is STOPPED its progress is forgotten.
    #[tokio::test]
    async fn the_latest_progress_of_the_instances_own_task_is_shown_until_it_stops() {
        let c = controller();
        let (arn, _s) = instance_with(&c, 4096, 4096, vec![]).await;
        let (other_arn, _o) = instance_with(&c, 4096, 4096, vec![]).await;
        register_td(
            &c,
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        )
        .await;
        let start = || StartTaskRequest {
            task_definition: "f".into(),
            container_instances: vec![arn.clone()],
            ..Default::default()
        };
        let task = c.start_task(start()).await.unwrap().tasks[0]
            .task_arn
            .clone();
        let second = c.start_task(start()).await.unwrap().tasks[0]
            .task_arn
            .clone();
        let session = |ci: &str| SessionInfo {
            instance_id: arn::short_id("container-instance", ci).unwrap().to_string(),
            epoch: String::new(),
            own_tasks_only: true,
        };
        let ask = || DescribePullProgressRequest {
            cluster: None,
            tasks: vec![task.clone(), "0123456789abcdef0123456789abcdef".into()],
        };
        let r = c.describe_pull_progress(ask()).await.unwrap();
        assert!(r.progress.is_empty());
        assert_eq!(r.failures[0].reason, "PROGRESS_UNAVAILABLE");
        assert_eq!(r.failures[0].arn, task);
        assert_eq!(r.failures[1].reason, "MISSING");

        c.apply_pull_progress(&session(&other_arn), report(&task, 7))
            .await;
        let r = c.describe_pull_progress(ask()).await.unwrap();
        assert!(r.progress.is_empty(), "another instance's word is dropped");

        for done in [5, 600] {
            c.apply_pull_progress(&session(&arn), report(&task, done))
                .await;
        }
        let r = c.describe_pull_progress(ask()).await.unwrap();
        assert_eq!(r.progress.len(), 1);
        assert_eq!(r.progress[0].task_arn, task);
        assert_eq!(r.progress[0].containers[0].bytes_done, 600, "the latest");
        assert_eq!(r.failures.len(), 1);

        c.stop_task(StopTaskRequest {
            task: task.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
        c.apply_state_change(
            &session(&arn),
            TaskStateChange {
                task_arn: task.clone(),
                last_status: "STOPPED".into(),
                seq: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let r = c.describe_pull_progress(ask()).await.unwrap();
        assert!(r.progress.is_empty(), "a STOPPED task has none");
        assert_eq!(r.failures[0].reason, "PROGRESS_UNAVAILABLE");
        // The next report (of another task) forgets the stopped task's entry.
        c.apply_pull_progress(&session(&arn), report(&second, 1))
            .await;
        let ids: Vec<String> = c.pull_progress.lock().unwrap().keys().cloned().collect();
        assert_eq!(ids, vec![task_id(&second).unwrap().to_string()]);

        assert!(c
            .describe_pull_progress(DescribePullProgressRequest::default())
            .await
            .is_err());
    }
}
