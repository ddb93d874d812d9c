//! Service-layer tests of what the stopped-task retention keeps and removes: forced
//! deregistration's unconfirmed stops, a sweep right after a restart, reports from INACTIVE
//! instances, INACTIVE instances leaving, one transaction per sweep, huge retentions.

use super::test_support::{default_cluster, register_td, resource};
use super::*;
use crate::fleet::{Attached, Fleet};
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

const HOUR: Duration = DEFAULT_STOPPED_TASK_RETENTION;

/// A store that counts its commits.
#[derive(Default)]
struct Counting {
    inner: MemoryStore,
    commits: AtomicUsize,
}

impl Store for Counting {
    fn scan(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.inner.scan(prefix)
    }
    fn commit(&self, writes: Vec<Write>) -> Result<(), StoreError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(writes)
    }
}

/// A controller over `store` with cluster "default" and task definition "web".
async fn controller_on(store: Arc<dyn Store>) -> Controller {
    let c = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    if c.state.lock().await.active_cluster("default").is_err() {
        default_cluster(&c).await;
        register_td(
            &c,
            r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        )
        .await;
    }
    c
}

/// Registers an instance whose agent has taken in a desired set and opened a session.
async fn instance(c: &Controller, epoch: &str) -> (String, Attached, SessionInfo) {
    let arn = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            total_resources: vec![resource("CPU", 2048), resource("MEMORY", 1024)],
            ..Default::default()
        })
        .await
        .unwrap()
        .container_instance_arn;
    let session = hello(c, &arn, epoch).await;
    let attached = c.fleet().attach(&session.instance_id);
    c.fleet().desired_acked(&attached, 1);
    (arn, attached, session)
}

/// An agent's session on `arn` in state epoch `epoch`.
async fn hello(c: &Controller, arn: &str, epoch: &str) -> SessionInfo {
    c.open_session(&AgentHello {
        container_instance_arn: arn.into(),
        protocol_version: berth_proto::link::PROTOCOL_VERSION,
        state_epoch: epoch.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// The agent of `session` reports `task_arn` in `status`.
async fn report(
    c: &Controller,
    session: &SessionInfo,
    task_arn: &str,
    status: &str,
) -> Result<bool, LinkError> {
    let seq = c.state.lock().await.instances[&session.instance_id].last_state_change_seq + 1;
    c.apply_state_change(
        session,
        TaskStateChange {
            seq,
            task_arn: task_arn.into(),
            last_status: status.into(),
            task_definition_arn: Some(
                "arn:aws:ecs:local:000000000000:task-definition/web:1".into(),
            ),
            ..Default::default()
        },
    )
    .await
}

async fn run(c: &Controller) -> Task {
    c.run_task(RunTaskRequest {
        task_definition: "web".into(),
        ..Default::default()
    })
    .await
    .unwrap()
    .tasks
    .remove(0)
}

/// The task as described, or `None` when the controller has no record of it.
async fn described(c: &Controller, task_arn: &str) -> Option<Task> {
    c.describe_tasks(DescribeTasksRequest {
        tasks: vec![task_arn.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .tasks
    .pop()
}

async fn instance_described(c: &Controller, arn: &str) -> bool {
    !c.describe_container_instances(DescribeContainerInstancesRequest {
        container_instances: vec![arn.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .container_instances
    .is_empty()
}

async fn deregister(c: &Controller, arn: &str, force: bool) {
    c.deregister_container_instance(DeregisterContainerInstanceRequest {
        container_instance: arn.into(),
        force: Some(force),
        ..Default::default()
    })
    .await
    .unwrap();
}

/// Review item 1: a task recorded STOPPED by a forced deregistration (no agent confirmed it)
/// is a tombstone, across restarts and past any retention, until an agent reports it stopped:
/// an agent that still runs it is told to stop it, never has it adopted as RUNNING.
#[tokio::test]
async fn a_force_deregistered_task_stays_until_an_agent_confirms_its_stop() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = controller_on(store.clone()).await;
    let (old, _a, _s) = instance(&c, "e1").await;
    let task = run(&c).await;
    deregister(&c, &old, true).await;
    let later = SystemTime::now() + HOUR * 100;
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!((p.tasks, p.container_instances), (0, 0), "{p:?}");
    let c = controller_on(store.clone()).await;
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!((p.tasks, p.container_instances), (0, 0), "{p:?}");
    assert_eq!(
        described(&c, &task.task_arn).await.unwrap().last_status,
        "STOPPED"
    );
    // The host's agent comes back as a new instance, still running the task.
    let (_new, _b, session) = instance(&c, "e2").await;
    report(&c, &session, &task.task_arn, "RUNNING")
        .await
        .unwrap();
    let t = described(&c, &task.task_arn).await.unwrap();
    assert_eq!(
        (t.last_status.as_str(), t.desired_status.as_str()),
        ("STOPPED", "STOPPED")
    );
    let desired = c
        .desired_tasks(&session.instance_id, 1, &mut SessionSent::default())
        .await;
    assert!(
        desired
            .tasks
            .iter()
            .any(|a| a.task.as_ref().unwrap().task_arn == task.task_arn
                && a.desired_status == "STOPPED"),
        "{desired:?}"
    );
    // Its stop confirmed, the retention runs, and the old instance leaves with the task.
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    let p = c.purge_stopped(SystemTime::now(), HOUR).await.unwrap();
    assert_eq!(
        p.tasks, 0,
        "the retention runs from the confirmation: {p:?}"
    );
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!((p.tasks, p.container_instances), (1, 1), "{p:?}");
    assert!(described(&c, &task.task_arn).await.is_none());
    assert!(!instance_described(&c, &old).await);
    let c = controller_on(store).await;
    assert!(c.state.lock().await.unconfirmed.is_empty());
    assert!(described(&c, &task.task_arn).await.is_none());
}

/// Review item 1: a stop being confirmed to the instance's agent when it is deregistered
/// (the agent reported a task recorded STOPPED as running) becomes a tombstone too.
#[tokio::test]
async fn a_stop_being_confirmed_at_deregistration_stays_until_confirmed() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (arn, _a, session) = instance(&c, "e1").await;
    let task = run(&c).await;
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    report(&c, &session, &task.task_arn, "RUNNING")
        .await
        .unwrap();
    deregister(&c, &arn, false).await;
    let p = c
        .purge_stopped(SystemTime::now() + HOUR * 100, HOUR)
        .await
        .unwrap();
    assert_eq!((p.tasks, p.container_instances), (0, 0), "{p:?}");
    let (_new, _b, session) = instance(&c, "e2").await;
    report(&c, &session, &task.task_arn, "RUNNING")
        .await
        .unwrap();
    assert_eq!(
        described(&c, &task.task_arn).await.unwrap().last_status,
        "STOPPED"
    );
}

/// Review item 2: right after a restart the confirmations in flight are unknown (not
/// persisted); a sweep keeps the stopped tasks of an ACTIVE instance whose agent has not
/// opened a session since, so a task it still runs is not purged and then adopted.
#[tokio::test]
async fn a_sweep_after_a_restart_waits_for_the_instances_agent() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = controller_on(store.clone()).await;
    let (arn, _a, session) = instance(&c, "e1").await;
    let task = run(&c).await;
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    report(&c, &session, &task.task_arn, "RUNNING")
        .await
        .unwrap();
    let later = SystemTime::now() + HOUR * 100;
    let c = controller_on(store).await;
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!(p.tasks, 0, "{p:?}");
    // Its agent reconnects and re-reports the task running: its stop is being confirmed.
    let session = hello(&c, &arn, "e1b").await;
    report(&c, &session, &task.task_arn, "RUNNING")
        .await
        .unwrap();
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!(p.tasks, 0, "{p:?}");
    assert_eq!(
        described(&c, &task.task_arn).await.unwrap().last_status,
        "STOPPED"
    );
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    let p = c.purge_stopped(later, HOUR).await.unwrap();
    assert_eq!(p.tasks, 1, "{p:?}");
}

/// Review item 4: a report in flight when the instance is deregistered applies nothing: no
/// task is adopted on an INACTIVE instance, refused as a new session would be.
#[tokio::test]
async fn reports_from_a_deregistered_instance_are_refused() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (arn, _a, session) = instance(&c, "e1").await;
    deregister(&c, &arn, false).await;
    let unknown = "arn:aws:ecs:local:000000000000:task/default/0123456789abcdef0123456789abcdef";
    let e = report(&c, &session, unknown, "RUNNING").await.unwrap_err();
    assert!(e.to_string().contains(&arn), "{e}");
    assert!(described(&c, unknown).await.is_none());
    assert_eq!(
        c.state.lock().await.instances[&session.instance_id].last_state_change_seq,
        0
    );
}

/// Review item 5: an INACTIVE instance leaves the store once the retention has passed since
/// its deregistration and no retained task names it; no empty index entries are left.
#[tokio::test]
async fn inactive_instances_leave_after_the_retention_once_no_task_names_them() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = controller_on(store.clone()).await;
    let (bare, _a, _s) = instance(&c, "e1").await;
    deregister(&c, &bare, false).await;
    let (busy, _b, session) = instance(&c, "e2").await;
    let task = run(&c).await;
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    assert!(c.state.lock().await.active.is_empty(), "no empty sets");
    deregister(&c, &busy, false).await;
    let now = SystemTime::now();
    let p = c.purge_stopped(now, HOUR).await.unwrap();
    assert_eq!(p.container_instances, 0, "{p:?}");
    assert!(instance_described(&c, &bare).await);
    let c = controller_on(store).await;
    let p = c
        .purge_stopped(now + HOUR + Duration::from_secs(2), HOUR)
        .await
        .unwrap();
    assert_eq!((p.tasks, p.container_instances), (1, 2), "{p:?}");
    assert!(!instance_described(&c, &bare).await);
    assert!(!instance_described(&c, &busy).await);
    {
        let st = c.state.lock().await;
        assert!(st.instances.is_empty() && st.inactive.is_empty() && st.by_instance.is_empty());
    }
    // An agent still holding the old ARN now registers a new instance.
    let again = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            container_instance_arn: Some(bare.clone()),
            total_resources: vec![resource("CPU", 2048), resource("MEMORY", 1024)],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_ne!(again.container_instance_arn, bare);
    assert_eq!(again.status, "ACTIVE");
}

/// Review item 6: a sweep and a DeleteTaskDefinitions that finishes a deletion each commit
/// once, so a failure leaves nothing half done.
#[tokio::test]
async fn a_sweep_and_a_deletion_each_commit_once() {
    let store = Arc::new(Counting::default());
    let c = controller_on(store.clone()).await;
    let (_arn, _a, session) = instance(&c, "e1").await;
    let task = run(&c).await;
    c.deregister_task_definition("web:1").await.unwrap();
    let delete = |name: &str| DeleteTaskDefinitionsRequest {
        task_definitions: vec![name.into()],
    };
    c.delete_task_definitions(delete("web:1")).await.unwrap();
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    let before = store.commits.load(Ordering::SeqCst);
    let p = c
        .purge_stopped(SystemTime::now() + HOUR * 2, HOUR)
        .await
        .unwrap();
    assert_eq!((p.tasks, p.task_definitions), (1, 1), "{p:?}");
    assert_eq!(store.commits.load(Ordering::SeqCst) - before, 1);
    // A revision no task uses goes at once, in the call's one commit.
    c.register_task_definition(
        serde_json::from_str(
            r#"{"family":"db","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    c.deregister_task_definition("db:1").await.unwrap();
    let before = store.commits.load(Ordering::SeqCst);
    c.delete_task_definitions(delete("db:1")).await.unwrap();
    assert_eq!(store.commits.load(Ordering::SeqCst) - before, 1);
    assert!(c.describe_task_definition("db:1").await.is_err());
}

/// Review item 8: a retention longer than the clock can count keeps everything.
#[tokio::test]
async fn a_huge_retention_keeps_everything() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (_arn, _a, session) = instance(&c, "e1").await;
    let task = run(&c).await;
    report(&c, &session, &task.task_arn, "STOPPED")
        .await
        .unwrap();
    for retention in [Duration::MAX, Duration::from_secs(u64::MAX / 2 + 1)] {
        let p = c.purge_stopped(SystemTime::now(), retention).await.unwrap();
        assert_eq!(p, Purged::default());
    }
    assert!(described(&c, &task.task_arn).await.is_some());
}

/// Review item 15: a revision named twice in DeleteTaskDefinitions is answered once.
#[tokio::test]
async fn a_revision_named_twice_is_deleted_and_answered_once() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    c.deregister_task_definition("web:1").await.unwrap();
    let out = c
        .delete_task_definitions(DeleteTaskDefinitionsRequest {
            task_definitions: vec!["web:1".into(), "web:1".into()],
        })
        .await
        .unwrap();
    assert_eq!(out.task_definitions.len(), 1, "{out:?}");
    assert!(out.failures.is_empty(), "{out:?}");
}

/// Review item 15: ListTaskDefinitions and ListTaskDefinitionFamilies parse their status with
/// one rule: the call's statuses or ALL, any case; anything else is refused by name.
#[tokio::test]
async fn task_definition_status_filters_are_parsed_by_one_rule() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let defs = |status: &str| ListTaskDefinitionsRequest {
        status: Some(status.into()),
        ..Default::default()
    };
    let families = |status: &str| ListTaskDefinitionFamiliesRequest {
        status: Some(status.into()),
        ..Default::default()
    };
    assert_eq!(
        c.list_task_definitions(defs("all"))
            .await
            .unwrap()
            .items
            .len(),
        1
    );
    assert!(c
        .list_task_definitions(defs("DELETE_IN_PROGRESS"))
        .await
        .unwrap()
        .items
        .is_empty());
    assert_eq!(
        c.list_task_definition_families(families("active"))
            .await
            .unwrap()
            .items,
        vec!["web"]
    );
    let e = c.list_task_definitions(defs("GONE")).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "status: 'GONE' is not ACTIVE, INACTIVE, DELETE_IN_PROGRESS or ALL"
    );
    let e = c
        .list_task_definition_families(families("DELETE_IN_PROGRESS"))
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert_eq!(
        e.to_string(),
        "status: 'DELETE_IN_PROGRESS' is not ACTIVE, INACTIVE or ALL"
    );
}
