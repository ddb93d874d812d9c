//! What the service-layer test modules share: a controller on an in-memory store, instances
//! whose agent is in step, task definitions from JSON.

use super::*;
use crate::fleet::Attached;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;

/// A controller on a fresh in-memory store, with no cluster.
pub(super) fn controller() -> Controller {
    Controller::load(Arc::new(MemoryStore::default()), Arc::new(Fleet::default())).unwrap()
}

/// An INTEGER resource, as agents register CPU and MEMORY.
pub(super) fn resource(name: &str, v: i32) -> Resource {
    Resource {
        name: name.into(),
        r#type: "INTEGER".into(),
        integer_value: v,
        ..Default::default()
    }
}

/// Creates cluster "default" if it is not there yet.
pub(super) async fn default_cluster(c: &Controller) {
    if c.state
        .lock()
        .await
        .active_cluster(DEFAULT_CLUSTER)
        .is_err()
    {
        c.create_cluster(CreateClusterRequest {
            cluster_name: DEFAULT_CLUSTER.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

/// Registers an instance of `cpu` units and `memory` MiB with `attributes` in cluster
/// "default" (made if missing) whose agent has taken in a desired set: a placement candidate
/// while the returned session lives. Returns its ARN and that session.
pub(super) async fn instance_with(
    c: &Controller,
    cpu: i32,
    memory: i32,
    attributes: Vec<Attribute>,
) -> (String, Attached) {
    default_cluster(c).await;
    let ci = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: DEFAULT_CLUSTER.into(),
            total_resources: vec![resource("CPU", cpu), resource("MEMORY", memory)],
            attributes,
            ..Default::default()
        })
        .await
        .unwrap();
    let arn = ci.container_instance_arn;
    let id = berth_proto::arn::short_id("container-instance", &arn)
        .unwrap()
        .to_string();
    let session = c.fleet().attach(&id);
    c.fleet().desired_acked(&session, 1);
    (arn, session)
}

/// Registers a task definition given as ECS JSON.
pub(super) async fn register_td(c: &Controller, json: &str) {
    c.register_task_definition(serde_json::from_str(json).unwrap())
        .await
        .unwrap();
}
