//! Service-layer tests of the services scheduler (issue 12): placement by strategy and
//! constraint, scale-in, rolling deployments within their limits, health, the circuit breaker,
//! lost instances, draining, DAEMON and a restart in the middle of a deployment. Agents are
//! simulated by writing the tasks' reported status into the view, as `apply_state_change` does.

use super::test_support::{default_cluster, instance_with, register_td};
use super::*;
use crate::fleet::Attached;
use crate::store::memory::MemoryStore;
use berth_proto::status::TaskStatus;
use berth_proto::v1::*;
use std::time::Duration;

fn td(family: &str, memory: i32, health: bool) -> String {
    let hc = if health {
        r#","healthCheck": {"command": ["CMD-SHELL", "true"]}"#
    } else {
        ""
    };
    format!(
        r#"{{"family": "{family}", "containerDefinitions": [{{"name": "app", "image": "busybox", "memory": {memory}{hc}}}]}}"#
    )
}

fn create_req(name: &str, td: &str, desired: i32) -> CreateServiceRequest {
    CreateServiceRequest {
        service_name: name.into(),
        task_definition: Some(td.into()),
        desired_count: Some(desired),
        ..Default::default()
    }
}

/// The service's tasks not STOPPED and desired RUNNING.
async fn live(c: &Controller, name: &str) -> Vec<Task> {
    let st = c.state.lock().await;
    let key = (
        berth_proto::arn::cluster(DEFAULT_CLUSTER),
        services::service_group(name),
    );
    st.service_tasks
        .get(&key)
        .into_iter()
        .flatten()
        .filter_map(|id| st.tasks.get(id))
        .filter(|t| t.desired_status == "RUNNING")
        .cloned()
        .collect()
}

/// What the agents would report: every task of the service not STOPPED becomes RUNNING (with
/// `health`), every one desired STOPPED becomes STOPPED.
async fn agents_report(c: &Controller, name: &str, health: &str) {
    let mut st = c.state.lock().await;
    let key = (
        berth_proto::arn::cluster(DEFAULT_CLUSTER),
        services::service_group(name),
    );
    let ids: Vec<String> = st
        .service_tasks
        .get(&key)
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    for id in ids {
        let Some(mut t) = st.tasks.get(&id).cloned() else {
            continue;
        };
        if t.desired_status == "STOPPED" {
            t.last_status = TaskStatus::Stopped.as_str().into();
            t.stopped_at = Some(now());
        } else if t.last_status != "RUNNING" || t.health_status != health {
            t.last_status = TaskStatus::Running.as_str().into();
            t.started_at.get_or_insert(now());
            t.health_status = health.into();
        } else {
            continue;
        }
        st.put_task(id, t);
    }
}

/// One task of the service stops on its own (its essential container exited).
async fn task_exits(c: &Controller, t: &Task) {
    let mut st = c.state.lock().await;
    let id = berth_proto::arn::short_id("task", &t.task_arn)
        .unwrap()
        .to_string();
    let mut t = st.tasks.get(&id).cloned().unwrap();
    t.last_status = "STOPPED".into();
    t.desired_status = "STOPPED".into();
    t.stop_code = Some("EssentialContainerExited".into());
    t.stopped_at = Some(now());
    st.put_task(id, t);
}

async fn pass(c: &Controller) {
    c.reconcile_services().await.unwrap();
}

/// Passes and agent reports until nothing changes (at most `n` rounds).
async fn settle(c: &Controller, name: &str, health: &str, n: usize) {
    for _ in 0..n {
        pass(c).await;
        agents_report(c, name, health).await;
    }
    pass(c).await;
}

async fn service(c: &Controller, name: &str) -> Service {
    c.describe_services(DescribeServicesRequest {
        services: vec![name.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .services
    .remove(0)
}

fn per_instance(tasks: &[Task]) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for t in tasks {
        *m.entry(t.container_instance_arn.clone().unwrap_or_default())
            .or_default() += 1;
    }
    m
}

async fn instances(c: &Controller, n: usize, memory: i32) -> Vec<(String, Attached)> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(instance_with(c, 4096, memory, vec![]).await);
    }
    v
}

#[tokio::test]
async fn spread_by_instance_places_two_per_instance_and_scale_in_keeps_the_spread() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 3, 2048).await;
    register_td(&c, &td("web", 64, false)).await;
    let mut req = create_req("web", "web", 6);
    req.placement_strategy = vec![PlacementStrategy {
        r#type: "spread".into(),
        field: Some("instanceId".into()),
    }];
    c.create_service(req).await.unwrap();
    settle(&c, "web", "UNKNOWN", 3).await;
    let tasks = live(&c, "web").await;
    assert_eq!(tasks.len(), 6);
    assert!(
        per_instance(&tasks).values().all(|&n| n == 2),
        "{:?}",
        per_instance(&tasks)
    );
    let s = service(&c, "web").await;
    assert_eq!(s.running_count, 6);
    assert_eq!(s.deployments[0].rollout_state.as_deref(), Some("COMPLETED"));
    assert!(s
        .events
        .iter()
        .any(|e| e.message == "(service web) has reached a steady state."));
    assert!(s.events.iter().any(|e| e
        .message
        .starts_with("(service web) has started 6 tasks: (task ")));
    // Scale-in to 3 stops one per instance: the spread holds.
    c.update_service(UpdateServiceRequest {
        service: "web".into(),
        desired_count: Some(3),
        ..Default::default()
    })
    .await
    .unwrap();
    settle(&c, "web", "UNKNOWN", 3).await;
    let tasks = live(&c, "web").await;
    assert_eq!(tasks.len(), 3);
    assert!(
        per_instance(&tasks).values().all(|&n| n == 1),
        "{:?}",
        per_instance(&tasks)
    );
}

#[tokio::test]
async fn binpack_on_memory_fills_one_instance_first() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 3, 1024).await;
    register_td(&c, &td("bp", 256, false)).await;
    let mut req = create_req("bp", "bp", 4);
    req.placement_strategy = vec![PlacementStrategy {
        r#type: "binpack".into(),
        field: Some("memory".into()),
    }];
    c.create_service(req).await.unwrap();
    settle(&c, "bp", "UNKNOWN", 2).await;
    let tasks = live(&c, "bp").await;
    assert_eq!(tasks.len(), 4);
    assert_eq!(
        per_instance(&tasks).len(),
        1,
        "4 × 256 MiB fill one 1024 MiB instance"
    );
    // A fifth goes to the next instance.
    c.update_service(UpdateServiceRequest {
        service: "bp".into(),
        desired_count: Some(5),
        ..Default::default()
    })
    .await
    .unwrap();
    settle(&c, "bp", "UNKNOWN", 2).await;
    let m = per_instance(&live(&c, "bp").await);
    let mut counts: Vec<usize> = m.values().copied().collect();
    counts.sort();
    assert_eq!(counts, vec![1, 4]);
}

#[tokio::test]
async fn distinct_instance_places_three_of_four_and_says_why_in_an_event() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 3, 2048).await;
    register_td(&c, &td("di", 64, false)).await;
    let mut req = create_req("di", "di", 4);
    req.placement_constraints = vec![PlacementConstraint {
        r#type: "distinctInstance".into(),
        expression: None,
    }];
    c.create_service(req).await.unwrap();
    settle(&c, "di", "UNKNOWN", 2).await;
    let tasks = live(&c, "di").await;
    assert_eq!(tasks.len(), 3);
    assert_eq!(per_instance(&tasks).len(), 3);
    let s = service(&c, "di").await;
    let e = s
        .events
        .iter()
        .find(|e| e.message.contains("was unable to place a task"))
        .expect("a placement event");
    assert!(
        e.message.starts_with("(service di) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance ")
            && e.message.contains("DistinctInstance placement constraint unsatisfied."),
        "{}",
        e.message
    );
    // Not steady: 3 of 4.
    assert_eq!(s.running_count, 3);
    assert_ne!(s.deployments[0].rollout_state.as_deref(), Some("COMPLETED"));
}

#[tokio::test]
async fn insufficient_memory_is_named_as_ecs_names_it() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let (arn, _s) = instance_with(&c, 1024, 512, vec![]).await;
    register_td(&c, &td("big", 1024, false)).await;
    c.create_service(create_req("big", "big", 1)).await.unwrap();
    pass(&c).await;
    let id = berth_proto::arn::short_id("container-instance", &arn).unwrap();
    let s = service(&c, "big").await;
    let want = format!("(service big) was unable to place a task because no container instance met all of its requirements. The closest matching (container-instance {id}) has insufficient memory available.");
    assert!(s.events.iter().any(|e| e.message == want), "{:?}", s.events);
    // Repeated passes do not repeat the event.
    pass(&c).await;
    pass(&c).await;
    let s = service(&c, "big").await;
    assert_eq!(s.events.iter().filter(|e| e.message == want).count(), 1);
}

#[tokio::test]
async fn a_rolling_update_with_health_checks_keeps_desired_count_healthy_and_within_max() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 2, 4096).await;
    register_td(&c, &td("hc", 64, true)).await;
    c.create_service(create_req("hc", "hc", 4)).await.unwrap();
    settle(&c, "hc", "HEALTHY", 3).await;
    assert_eq!(live(&c, "hc").await.len(), 4);
    register_td(&c, &td("hc", 65, true)).await; // revision 2
    c.update_service(UpdateServiceRequest {
        service: "hc".into(),
        task_definition: Some("hc:2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // New tasks start RUNNING but UNKNOWN (health not yet known) for a while: old ones must
    // stay until the new ones are HEALTHY.
    for round in 0..8 {
        pass(&c).await;
        let tasks = live(&c, "hc").await;
        let healthy = tasks
            .iter()
            .filter(|t| t.last_status == "RUNNING" && t.health_status == "HEALTHY")
            .count();
        assert!(healthy >= 4, "round {round}: {healthy} healthy");
        assert!(tasks.len() <= 8, "round {round}: {} tasks", tasks.len());
        // Agents: old tasks stay HEALTHY, new ones RUNNING and UNKNOWN for two rounds, then
        // HEALTHY.
        let mut st = c.state.lock().await;
        for t in tasks {
            let id = berth_proto::arn::short_id("task", &t.task_arn)
                .unwrap()
                .to_string();
            let mut t = t.clone();
            if t.last_status != "RUNNING" {
                t.last_status = "RUNNING".into();
                t.health_status = "UNKNOWN".into();
                t.started_at = Some(now());
            } else if round >= 3 {
                t.health_status = "HEALTHY".into();
            }
            st.put_task(id, t);
        }
        // Stopped ones stop.
        let ids: Vec<String> = st.tasks.keys().cloned().collect();
        for id in ids {
            let mut t = st.tasks[&id].clone();
            if t.desired_status == "STOPPED" && t.last_status != "STOPPED" {
                t.last_status = "STOPPED".into();
                st.put_task(id, t);
            }
        }
    }
    settle(&c, "hc", "HEALTHY", 2).await;
    let s = service(&c, "hc").await;
    assert_eq!(s.deployments.len(), 1);
    assert!(s.deployments[0].task_definition.ends_with("hc:2"));
    assert_eq!(s.deployments[0].rollout_state.as_deref(), Some("COMPLETED"));
    assert!(live(&c, "hc")
        .await
        .iter()
        .all(|t| t.task_definition_arn.ends_with("hc:2")));
}

#[tokio::test]
async fn unhealthy_tasks_are_replaced_after_the_grace_period_only() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("uh", 64, true)).await;
    let mut req = create_req("uh", "uh", 1);
    req.health_check_grace_period_seconds = Some(3600);
    c.create_service(req).await.unwrap();
    settle(&c, "uh", "UNHEALTHY", 3).await;
    // Within the grace: kept.
    let first = live(&c, "uh").await;
    assert_eq!(first.len(), 1);
    c.update_service(UpdateServiceRequest {
        service: "uh".into(),
        health_check_grace_period_seconds: Some(0),
        ..Default::default()
    })
    .await
    .unwrap();
    pass(&c).await;
    let s = service(&c, "uh").await;
    assert!(
        s.events.iter().any(|e| e.message
            == format!(
                "(service uh) (task {}) failed container health checks.",
                berth_proto::arn::short_id("task", &first[0].task_arn).unwrap()
            )),
        "{:?}",
        s.events
    );
    let st = c.state.lock().await;
    let id = berth_proto::arn::short_id("task", &first[0].task_arn).unwrap();
    assert_eq!(st.tasks[id].desired_status, "STOPPED");
    assert_eq!(
        st.tasks[id].stopped_reason.as_deref(),
        Some("Task failed container health checks")
    );
}

#[tokio::test]
async fn the_breaker_without_a_completed_deployment_fails_the_rollout_and_stops_launching() {
    let c = test_support::controller().with_service_config(ServiceSchedulerConfig {
        restart_delay: Duration::ZERO,
        ..Default::default()
    });
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("cb", 64, false)).await;
    let mut req = create_req("cb", "cb", 2);
    req.deployment_configuration = Some(DeploymentConfiguration {
        deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
            enable: true,
            rollback: true,
        }),
        ..Default::default()
    });
    c.create_service(req).await.unwrap();
    for _ in 0..6 {
        pass(&c).await;
        for t in live(&c, "cb").await {
            task_exits(&c, &t).await;
        }
    }
    pass(&c).await;
    let s = service(&c, "cb").await;
    assert_eq!(s.deployments.len(), 1);
    let d = &s.deployments[0];
    assert_eq!(d.rollout_state.as_deref(), Some("FAILED"), "{d:?}");
    assert!(d.failed_tasks >= 3);
    assert!(s.events.iter().any(|e| e
        .message
        .ends_with("deployment failed: tasks failed to start.")));
    // No rollback target: nothing new is launched.
    pass(&c).await;
    assert!(live(&c, "cb").await.is_empty());
}

#[tokio::test]
async fn failures_in_a_row_throttle_new_starts_with_an_event() {
    let c = test_support::controller().with_service_config(ServiceSchedulerConfig {
        restart_delay: Duration::from_secs(3600),
        ..Default::default()
    });
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("thr", 64, false)).await;
    c.create_service(create_req("thr", "thr", 2)).await.unwrap();
    pass(&c).await;
    for t in live(&c, "thr").await {
        task_exits(&c, &t).await;
    }
    pass(&c).await;
    // Two failed in a row: the next start waits (an hour here).
    assert!(live(&c, "thr").await.is_empty());
    let s = service(&c, "thr").await;
    assert!(s.events.iter().any(|e| e
        .message
        .starts_with("(service thr) is unable to consistently start tasks successfully")));
}

#[tokio::test]
async fn tasks_of_a_disconnected_instance_are_replaced_after_the_grace() {
    let c = test_support::controller().with_service_config(ServiceSchedulerConfig {
        disconnect_grace: Duration::ZERO,
        ..Default::default()
    });
    default_cluster(&c).await;
    let (a, session_a) = instance_with(&c, 4096, 4096, vec![]).await;
    register_td(&c, &td("dc", 64, false)).await;
    c.create_service(create_req("dc", "dc", 2)).await.unwrap();
    settle(&c, "dc", "UNKNOWN", 2).await;
    assert!(live(&c, "dc")
        .await
        .iter()
        .all(|t| t.container_instance_arn.as_deref() == Some(a.as_str())));
    // A second instance; the first's agent goes away.
    let (b, _session_b) = instance_with(&c, 4096, 4096, vec![]).await;
    drop(session_a);
    pass(&c).await;
    let now_live = live(&c, "dc").await;
    assert_eq!(now_live.len(), 2);
    assert!(now_live
        .iter()
        .all(|t| t.container_instance_arn.as_deref() == Some(b.as_str())));
    // The lost tasks are desired STOPPED (their agent stops them when it returns), with why.
    let st = c.state.lock().await;
    let lost: Vec<&Task> = st
        .tasks
        .values()
        .filter(|t| t.container_instance_arn.as_deref() == Some(a.as_str()))
        .collect();
    assert_eq!(lost.len(), 2);
    for t in lost {
        assert_eq!(t.desired_status, "STOPPED");
        assert_eq!(t.stop_code.as_deref(), Some("ServiceSchedulerInitiated"));
        assert!(t
            .stopped_reason
            .as_deref()
            .is_some_and(|r| r.contains("disconnected")));
    }
}

#[tokio::test]
async fn draining_moves_service_tasks_within_the_limits_and_leaves_standalone_tasks() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let (a, _sa) = instance_with(&c, 4096, 4096, vec![]).await;
    register_td(&c, &td("dr", 64, false)).await;
    let standalone = c
        .run_task(RunTaskRequest {
            task_definition: "dr".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .remove(0);
    c.create_service(create_req("dr", "dr", 2)).await.unwrap();
    settle(&c, "dr", "UNKNOWN", 2).await;
    let (b, _sb) = instance_with(&c, 4096, 4096, vec![]).await;
    c.update_container_instances_state(UpdateContainerInstancesStateRequest {
        container_instances: vec![a.clone()],
        status: "DRAINING".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    // Within 100/200: replacements start on b before the tasks on a stop.
    pass(&c).await;
    let l = live(&c, "dr").await;
    assert_eq!(
        l.len(),
        4,
        "two replacements started, the two on a kept until they run"
    );
    agents_report(&c, "dr", "UNKNOWN").await;
    settle(&c, "dr", "UNKNOWN", 2).await;
    let l = live(&c, "dr").await;
    assert_eq!(l.len(), 2);
    assert!(l
        .iter()
        .all(|t| t.container_instance_arn.as_deref() == Some(b.as_str())));
    let st = c.state.lock().await;
    let id = berth_proto::arn::short_id("task", &standalone.task_arn).unwrap();
    assert_eq!(
        st.tasks[id].desired_status, "RUNNING",
        "standalone tasks are left alone"
    );
}

#[tokio::test]
async fn a_daemon_follows_instances_joining_and_draining() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let mut sessions = instances(&c, 3, 2048).await;
    register_td(&c, &td("dm", 64, false)).await;
    let mut req = create_req("dm", "dm", 0);
    req.desired_count = None;
    req.scheduling_strategy = Some("DAEMON".into());
    c.create_service(req).await.unwrap();
    settle(&c, "dm", "UNKNOWN", 2).await;
    let l = live(&c, "dm").await;
    assert_eq!(l.len(), 3);
    assert_eq!(per_instance(&l).len(), 3);
    assert_eq!(service(&c, "dm").await.desired_count, 3);
    sessions.push(instance_with(&c, 4096, 2048, vec![]).await);
    settle(&c, "dm", "UNKNOWN", 2).await;
    assert_eq!(live(&c, "dm").await.len(), 4);
    assert_eq!(service(&c, "dm").await.desired_count, 4);
    c.update_container_instances_state(UpdateContainerInstancesStateRequest {
        container_instances: vec![sessions[0].0.clone()],
        status: "DRAINING".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    settle(&c, "dm", "UNKNOWN", 2).await;
    let l = live(&c, "dm").await;
    assert_eq!(l.len(), 3);
    assert!(l
        .iter()
        .all(|t| t.container_instance_arn.as_deref() != Some(sessions[0].0.as_str())));
    let s = service(&c, "dm").await;
    assert_eq!(s.desired_count, 3);
    assert_eq!(s.running_count, 3);
}

#[tokio::test]
async fn a_controller_restart_in_the_middle_of_a_deployment_carries_it_on() {
    let store = Arc::new(MemoryStore::default());
    let c = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
    default_cluster(&c).await;
    register_td(&c, &td("rs", 64, false)).await;
    register_td(&c, &td("rs", 65, false)).await;
    let fleet = c.fleet().clone();
    let (_a, sa) = instance_with(&c, 4096, 4096, vec![]).await;
    c.create_service(create_req("rs", "rs:1", 3)).await.unwrap();
    settle(&c, "rs", "UNKNOWN", 2).await;
    c.update_service(UpdateServiceRequest {
        service: "rs".into(),
        task_definition: Some("rs:2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    pass(&c).await; // the new deployment's tasks are started, nothing RUNNING yet
    let before = service(&c, "rs").await;
    assert_eq!(before.deployments.len(), 2);
    drop(c);
    drop(sa);
    drop(fleet);
    // The new controller, the same store; the agent connects again.
    let c = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    let id = berth_proto::arn::short_id("container-instance", &_a)
        .unwrap()
        .to_string();
    let session = c.fleet().attach(&id);
    c.fleet().desired_acked(&session, 1);
    let after = service(&c, "rs").await;
    assert_eq!(
        after.deployments, before.deployments,
        "the deployments survived"
    );
    settle(&c, "rs", "UNKNOWN", 4).await;
    let s = service(&c, "rs").await;
    assert_eq!(s.deployments.len(), 1);
    assert!(s.deployments[0].task_definition.ends_with("rs:2"));
    assert_eq!(s.deployments[0].rollout_state.as_deref(), Some("COMPLETED"));
    let l = live(&c, "rs").await;
    assert_eq!(l.len(), 3);
    assert!(l.iter().all(|t| t.task_definition_arn.ends_with("rs:2")));
}

#[tokio::test]
async fn deleting_with_force_drains_the_service_to_inactive() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("del", 64, false)).await;
    c.create_service(create_req("del", "del", 2)).await.unwrap();
    settle(&c, "del", "UNKNOWN", 2).await;
    let e = c
        .delete_service(DeleteServiceRequest {
            service: "del".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    let d = c
        .delete_service(DeleteServiceRequest {
            service: "del".into(),
            force: Some(true),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.status, "DRAINING");
    settle(&c, "del", "UNKNOWN", 2).await;
    assert_eq!(service(&c, "del").await.status, "INACTIVE");
    assert!(live(&c, "del").await.is_empty());
    // The name can be used again once INACTIVE.
    c.create_service(create_req("del", "del", 1)).await.unwrap();
}

#[tokio::test]
async fn old_tasks_whose_health_is_not_yet_known_are_kept_until_new_ones_are_healthy() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 1, 8192).await;
    register_td(&c, &td("unk", 64, true)).await;
    register_td(&c, &td("unk", 65, true)).await;
    c.create_service(create_req("unk", "unk:1", 2))
        .await
        .unwrap();
    // The checks have not reported yet: RUNNING, health UNKNOWN.
    settle(&c, "unk", "UNKNOWN", 2).await;
    assert_eq!(live(&c, "unk").await.len(), 2);
    c.update_service(UpdateServiceRequest {
        service: "unk".into(),
        task_definition: Some("unk:2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    // New tasks RUNNING but not yet HEALTHY: the old ones stay.
    settle(&c, "unk", "UNKNOWN", 3).await;
    let l = live(&c, "unk").await;
    assert_eq!(
        l.len(),
        4,
        "{:?}",
        l.iter().map(|t| &t.task_definition_arn).collect::<Vec<_>>()
    );
    // Once the new ones are HEALTHY the old ones go.
    settle(&c, "unk", "HEALTHY", 3).await;
    let l = live(&c, "unk").await;
    assert_eq!(l.len(), 2);
    assert!(l.iter().all(|t| t.task_definition_arn.ends_with("unk:2")));
}

#[tokio::test]
async fn a_daemon_with_member_of_follows_attributes_put_and_deleted() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let ins = instances(&c, 3, 2048).await;
    register_td(&c, &td("mo", 64, false)).await;
    let mut req = create_req("mo", "mo", 0);
    req.desired_count = None;
    req.scheduling_strategy = Some("DAEMON".into());
    req.placement_constraints = vec![PlacementConstraint {
        r#type: "memberOf".into(),
        expression: Some("attribute:role == edge".into()),
    }];
    c.create_service(req).await.unwrap();
    settle(&c, "mo", "UNKNOWN", 2).await;
    assert!(live(&c, "mo").await.is_empty());
    let put = |arn: &str| Attribute {
        name: "role".into(),
        value: Some("edge".into()),
        target_type: Some("container-instance".into()),
        target_id: Some(arn.into()),
    };
    c.put_attributes(PutAttributesRequest {
        attributes: vec![put(&ins[0].0), put(&ins[2].0)],
        ..Default::default()
    })
    .await
    .unwrap();
    settle(&c, "mo", "UNKNOWN", 2).await;
    let l = live(&c, "mo").await;
    assert_eq!(l.len(), 2);
    assert!(!per_instance(&l).contains_key(&ins[1].0));
    c.delete_attributes(DeleteAttributesRequest {
        attributes: vec![put(&ins[0].0)],
        ..Default::default()
    })
    .await
    .unwrap();
    settle(&c, "mo", "UNKNOWN", 2).await;
    let l = live(&c, "mo").await;
    assert_eq!(l.len(), 1);
    assert!(per_instance(&l).contains_key(&ins[2].0));
}

#[tokio::test]
async fn a_task_that_ran_and_stopped_between_two_passes_is_one_failure() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("once", 64, false)).await;
    c.create_service(create_req("once", "once", 1))
        .await
        .unwrap();
    pass(&c).await;
    let t = live(&c, "once").await.remove(0);
    agents_report(&c, "once", "UNKNOWN").await; // RUNNING
    task_exits(&c, &t).await; // then STOPPED, before the next pass
    pass(&c).await;
    let s = service(&c, "once").await;
    assert_eq!(s.deployments[0].failed_tasks, 1);
}

#[tokio::test]
async fn a_healthy_old_task_stays_while_the_minimum_needs_it_and_unknown_ones_go_first() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 1, 8192).await;
    register_td(&c, &td("mix", 64, true)).await;
    register_td(&c, &td("mix", 65, true)).await;
    c.create_service(create_req("mix", "mix:1", 2))
        .await
        .unwrap();
    settle(&c, "mix", "HEALTHY", 2).await;
    c.update_service(UpdateServiceRequest {
        service: "mix".into(),
        task_definition: Some("mix:2".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    pass(&c).await;
    // Old: one HEALTHY, one whose health is not known (say, restarted). New: one HEALTHY,
    // one RUNNING not yet known.
    {
        let mut st = c.state.lock().await;
        let ids: Vec<String> = st.tasks.keys().cloned().collect();
        let (mut old_n, mut new_n) = (0, 0);
        for id in ids {
            let mut t = st.tasks[&id].clone();
            if t.desired_status != "RUNNING" {
                continue;
            }
            let new = t.task_definition_arn.ends_with("mix:2");
            let n = if new { &mut new_n } else { &mut old_n };
            t.last_status = "RUNNING".into();
            t.health_status = if *n == 0 { "HEALTHY" } else { "UNKNOWN" }.into();
            *n += 1;
            st.put_task(id, t);
        }
    }
    pass(&c).await;
    let l = live(&c, "mix").await;
    let healthy = l
        .iter()
        .filter(|t| t.last_status == "RUNNING" && t.health_status == "HEALTHY")
        .count();
    assert!(healthy >= 2, "{healthy} healthy left");
    let old: Vec<&Task> = l
        .iter()
        .filter(|t| t.task_definition_arn.ends_with("mix:1"))
        .collect();
    assert_eq!(
        old.len(),
        1,
        "the old task of unknown health went, the healthy one stays"
    );
    assert_eq!(old[0].health_status, "HEALTHY");
}

#[tokio::test]
async fn update_service_starts_a_deployment_for_placement_and_refuses_what_cannot_roll() {
    let c = test_support::controller();
    default_cluster(&c).await;
    let _i = instances(&c, 2, 4096).await;
    register_td(&c, &td("up", 64, false)).await;
    c.create_service(create_req("up", "up", 3)).await.unwrap();
    settle(&c, "up", "UNKNOWN", 2).await;
    let s = c
        .update_service(UpdateServiceRequest {
            service: "up".into(),
            placement_strategy: vec![PlacementStrategy {
                r#type: "binpack".into(),
                field: Some("memory".into()),
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        s.deployments.len(),
        2,
        "a placement change is a new deployment"
    );
    settle(&c, "up", "UNKNOWN", 3).await;
    assert_eq!(
        per_instance(&live(&c, "up").await).len(),
        1,
        "binpacked now"
    );
    // 3 tasks at 100/120: rounded, 3 and 3: no room to roll.
    let e = c
        .update_service(UpdateServiceRequest {
            service: "up".into(),
            force_new_deployment: Some(true),
            deployment_configuration: Some(DeploymentConfiguration {
                maximum_percent: Some(120),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("no room to start a new task or stop an old one"),
        "{e}"
    );
    // Scaling alone is not a deployment: accepted at any count.
    c.update_service(UpdateServiceRequest {
        service: "up".into(),
        desired_count: Some(1),
        ..Default::default()
    })
    .await
    .unwrap();
    // A service ARN of another cluster is not this cluster's service.
    let e = c
        .update_service(UpdateServiceRequest {
            service: "arn:aws:ecs:on-prem:000000000000:service/other/up".into(),
            desired_count: Some(1),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ServiceNotFoundException");
    // RunTask may not put a task in a service's group.
    let e = c
        .run_task(RunTaskRequest {
            task_definition: "up".into(),
            group: Some("service:up".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("service: is kept"), "{e}");
    // DAEMON: no breaker, no minimum above 0 (refused by name).
    let mut req = create_req("dm", "up", 0);
    req.desired_count = None;
    req.scheduling_strategy = Some("DAEMON".into());
    req.deployment_configuration = Some(DeploymentConfiguration {
        deployment_circuit_breaker: Some(DeploymentCircuitBreaker {
            enable: true,
            rollback: false,
        }),
        ..Default::default()
    });
    let e = c.create_service(req).await.unwrap_err();
    assert!(e.to_string().contains("deploymentCircuitBreaker"), "{e}");
}

#[tokio::test]
async fn tasks_that_start_and_crash_at_once_are_throttled_too() {
    let c = test_support::controller().with_service_config(ServiceSchedulerConfig {
        restart_delay: Duration::from_secs(3600),
        ..Default::default()
    });
    default_cluster(&c).await;
    let _i = instances(&c, 1, 4096).await;
    register_td(&c, &td("crash", 64, false)).await;
    c.create_service(create_req("crash", "crash", 1))
        .await
        .unwrap();
    for _ in 0..2 {
        pass(&c).await;
        // RUNNING (the scheduler sees it), then it exits at once.
        agents_report(&c, "crash", "UNKNOWN").await;
        pass(&c).await;
        for t in live(&c, "crash").await {
            task_exits(&c, &t).await;
        }
    }
    pass(&c).await;
    // Two crashes in a row, though each reached RUNNING: the next start waits.
    assert!(live(&c, "crash").await.is_empty());
    let s = service(&c, "crash").await;
    assert!(s.events.iter().any(|e| e
        .message
        .starts_with("(service crash) is unable to consistently start tasks successfully")));
}
