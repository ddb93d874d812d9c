//! Task stats (issue 9, a Berth extension): the latest sample each agent reported for its
//! tasks, in memory only (samples are replaced every --stats-interval and lost at a restart,
//! as a sample may be on the link), answered by DescribeTaskStats.

use super::tasks::{missing, task_id};
use super::{cluster_name, Controller, SessionInfo};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::status::TaskStatus;
use berth_proto::v1::*;

impl Controller {
    /// Keeps the samples of a stats report: only of tasks assigned to the session's instance
    /// and not STOPPED (a sample of another instance's task, or of an unknown one, is dropped).
    /// Samples of tasks that stopped or are gone are forgotten here too.
    pub async fn apply_task_stats(&self, session: &SessionInfo, report: TaskStatsReport) {
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
        let Ok(mut stats) = self.stats.lock() else {
            return;
        };
        for mut s in report.tasks {
            let Some(id) = task_id(&s.task_arn).map(str::to_string) else {
                continue;
            };
            let own = running(&id)
                .is_some_and(|t| t.container_instance_arn.as_deref() == Some(&instance_arn));
            if own {
                s.container_instance_arn = instance_arn.clone();
                stats.insert(id, s);
            }
        }
        stats.retain(|id, _| running(id).is_some());
    }

    /// DescribeTaskStats: the latest sample of each task; MISSING for an unknown task,
    /// STATS_UNAVAILABLE for a task with none (not running, or no report since the controller
    /// started).
    pub async fn describe_task_stats(
        &self,
        req: DescribeTaskStatsRequest,
    ) -> Result<DescribeTaskStatsResponse, EcsError> {
        let name = cluster_name(req.cluster.as_deref())?;
        super::tasks::check_task_list(&req.tasks)?;
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let stats = self
            .stats
            .lock()
            .map_err(|_| EcsError::invalid("stats unavailable"))?;
        let mut out = DescribeTaskStatsResponse::default();
        for given in req.tasks {
            let Some(t) = st.cluster_task(&cluster_arn, &given) else {
                out.failures
                    .push(missing(&given, |id| arn::task(&name, id)));
                continue;
            };
            let stopped = TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Stopped);
            match task_id(&t.task_arn)
                .and_then(|id| stats.get(id))
                .filter(|_| !stopped)
            {
                Some(s) => out.task_stats.push(s.clone()),
                None => out.failures.push(Failure {
                    arn: t.task_arn.clone(),
                    reason: "STATS_UNAVAILABLE".into(),
                    detail: Some(
                        "no stats sample yet: the task is not running, or its agent has not reported since the controller started"
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

    fn sample(arn: &str, mem: u64) -> TaskStats {
        TaskStats {
            task_arn: arn.into(),
            usage: Some(ResourceStats {
                memory_usage_bytes: mem,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The latest sample of a task of the reporting instance is shown; another instance's
    /// report about it is dropped; an unknown task is MISSING, one without a sample
    /// STATS_UNAVAILABLE.
    #[tokio::test]
    async fn the_latest_sample_of_the_instances_own_task_is_shown() {
        let c = controller();
        let (arn, _s) = instance_with(&c, 4096, 4096, vec![]).await;
        let (other_arn, _o) = instance_with(&c, 4096, 4096, vec![]).await;
        register_td(
            &c,
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        )
        .await;
        let run = c
            .start_task(StartTaskRequest {
                task_definition: "f".into(),
                container_instances: vec![arn.clone()],
                ..Default::default()
            })
            .await
            .unwrap();
        let task = run.tasks[0].task_arn.clone();
        let session = |ci: &str| SessionInfo {
            instance_id: arn::short_id("container-instance", ci).unwrap().to_string(),
            epoch: String::new(),
            own_tasks_only: true,
        };
        let ask = || DescribeTaskStatsRequest {
            cluster: None,
            tasks: vec![task.clone(), "0123456789abcdef0123456789abcdef".into()],
        };
        let r = c.describe_task_stats(ask()).await.unwrap();
        assert!(r.task_stats.is_empty());
        assert_eq!(r.failures[0].reason, "STATS_UNAVAILABLE");
        assert_eq!(r.failures[1].reason, "MISSING");

        c.apply_task_stats(
            &session(&other_arn),
            TaskStatsReport {
                tasks: vec![sample(&task, 7)],
            },
        )
        .await;
        let r = c.describe_task_stats(ask()).await.unwrap();
        assert!(
            r.task_stats.is_empty(),
            "another instance's word is dropped"
        );

        for mem in [5, 6] {
            c.apply_task_stats(
                &session(&arn),
                TaskStatsReport {
                    tasks: vec![sample(&task, mem)],
                },
            )
            .await;
        }
        let r = c.describe_task_stats(ask()).await.unwrap();
        assert_eq!(r.task_stats.len(), 1);
        let s = &r.task_stats[0];
        assert_eq!(
            s.usage.as_ref().unwrap().memory_usage_bytes,
            6,
            "the latest"
        );
        assert_eq!(s.container_instance_arn, arn);
        assert_eq!(r.failures.len(), 1);
        assert!(c
            .describe_task_stats(DescribeTaskStatsRequest::default())
            .await
            .is_err());
    }
}
