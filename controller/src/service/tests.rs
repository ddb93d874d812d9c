//! Service-layer unit tests against the in-memory store.

use super::*;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;

fn controller() -> Controller {
    Controller::load(Arc::new(MemoryStore::default()), Arc::new(Fleet::default())).unwrap()
}

fn td(json: &str) -> RegisterTaskDefinitionRequest {
    serde_json::from_str(json).unwrap()
}

#[tokio::test]
async fn revisions_count_up_and_describe_finds_latest_active() {
    let c = controller();
    let req =
        td(r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#);
    let r1 = c.register_task_definition(req.clone()).await.unwrap();
    let r2 = c.register_task_definition(req).await.unwrap();
    assert_eq!(r1.task_definition.unwrap().revision, 1);
    let t2 = r2.task_definition.unwrap();
    assert_eq!(t2.revision, 2);
    assert_eq!(t2.container_definitions[0].essential, Some(true));
    c.deregister_task_definition("web:2").await.unwrap();
    let latest = c.describe_task_definition("web").await.unwrap();
    assert_eq!(latest.task_definition.unwrap().revision, 1);
    assert!(c.deregister_task_definition("web").await.is_err());
}

#[tokio::test]
async fn validation_names_the_field() {
    let c = controller();
    let cases = [
        (
            r#"{"containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
            "family",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"image":"x","memory":64}]}"#,
            "name",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","memory":64}]}"#,
            "image",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":64},{"name":"a","image":"x","memory":64}]}"#,
            "unique",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":64,"essential":false}]}"#,
            "essential",
        ),
        (
            r#"{"family":"f","memory":"128","containerDefinitions":[{"name":"a","image":"x","memory":256}]}"#,
            "task memory",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":64,"memoryReservation":128}]}"#,
            "memoryReservation",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"x","memory":0}]}"#,
            "memory",
        ),
        (
            r#"{"family":"f","cpu":"0","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
            "cpu",
        ),
        (
            r#"{"family":"f","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"x"}]}"#,
            "awsvpc",
        ),
        (
            r#"{"family":"f","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"4096","containerDefinitions":[{"name":"a","image":"x"}]}"#,
            "FARGATE combination",
        ),
        (
            r#"{"family":"f","networkMode":"vpc","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
            "networkMode",
        ),
    ];
    for (json, needle) in cases {
        let err = c
            .register_task_definition(td(json))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(needle), "{json}: {err}");
    }
    let eleven: Vec<String> = (0..11)
        .map(|i| format!(r#"{{"name":"c{i}","image":"x","memory":8}}"#))
        .collect();
    let err = c
        .register_task_definition(td(&format!(
            r#"{{"family":"f","containerDefinitions":[{}]}}"#,
            eleven.join(",")
        )))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("at most 10"));
    assert!(c
        .list_task_definitions(Default::default())
        .await
        .unwrap()
        .items
        .is_empty());
}

#[tokio::test]
async fn run_task_without_instances_is_an_invalid_parameter() {
    let c = controller();
    c.create_cluster(CreateClusterRequest {
        cluster_name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let e = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    // As ECS answers it (issue 6).
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert_eq!(
        e.to_string(),
        "No Container Instances were found in your cluster."
    );
    // An instance whose agent is not connected is named (AGENT), not skipped.
    let ci = register_instance(&c).await;
    let r = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.tasks.is_empty());
    assert_eq!(r.failures.len(), 1, "{:?}", r.failures);
    assert_eq!(
        (r.failures[0].arn.as_str(), r.failures[0].reason.as_str()),
        (ci.container_instance_arn.as_str(), "AGENT")
    );
}

#[tokio::test]
async fn state_changes_apply_once_and_move_forward_only() {
    let c = controller();
    c.create_cluster(CreateClusterRequest {
        cluster_name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ci = register_instance(&c).await;
    let id = berth_proto::arn::short_id("container-instance", &ci.container_instance_arn)
        .unwrap()
        .to_string();
    let session = c.fleet().attach(&id);
    // The agent has taken in its first desired set: a placement candidate.
    c.fleet().desired_acked(&session, 1);
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":600}]}"#,
    ))
    .await
    .unwrap();
    let r = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            count: Some(2),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 1);
    assert_eq!(r.failures[0].reason, "RESOURCE:MEMORY");
    let task_arn = r.tasks[0].task_arn.clone();
    let session = c
        .open_session(&AgentHello {
            container_instance_arn: ci.container_instance_arn.clone(),
            protocol_version: berth_proto::link::PROTOCOL_VERSION,
            state_epoch: "e1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let change = |seq, status: &str| TaskStateChange {
        seq,
        task_arn: task_arn.clone(),
        last_status: status.into(),
        ..Default::default()
    };
    c.apply_state_change(&session, change(1, "RUNNING"))
        .await
        .unwrap();
    c.apply_state_change(&session, change(2, "PENDING"))
        .await
        .unwrap();
    // A resend of an applied seq changes nothing.
    c.apply_state_change(&session, change(2, "STOPPED"))
        .await
        .unwrap();
    let t = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![task_arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(t.tasks[0].last_status, "RUNNING");
    assert_eq!(desired(&c, &id).await.len(), 1);
    c.apply_state_change(&session, change(3, "STOPPED"))
        .await
        .unwrap();
    assert!(desired(&c, &id).await.is_empty());
    // Recorded STOPPED but reported running again: its stop is confirmed until reported
    // stopped.
    c.apply_state_change(&session, change(4, "RUNNING"))
        .await
        .unwrap();
    let v = desired(&c, &id).await;
    assert_eq!((v.len(), v[0].desired_status.as_str()), (1, "STOPPED"));
    c.apply_state_change(&session, change(5, "STOPPED"))
        .await
        .unwrap();
    assert!(desired(&c, &id).await.is_empty());
    // A newer agent epoch supersedes the old one: its session cannot apply reports.
    let newer = c
        .open_session(&AgentHello {
            state_epoch: "e2".into(),
            container_instance_arn: ci.container_instance_arn.clone(),
            protocol_version: berth_proto::link::PROTOCOL_VERSION,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(matches!(
        c.apply_state_change(&session, change(6, "RUNNING")).await,
        Err(LinkError::Superseded(_))
    ));
    assert!(c
        .apply_state_change(&newer, change(1, "STOPPED"))
        .await
        .is_ok());
}

async fn desired(c: &Controller, id: &str) -> Vec<TaskAssignment> {
    c.desired_tasks(id, 1, &mut SentDefinitions::default())
        .await
        .tasks
}

/// The agent takes task cpu and memory as plain units and MiB: ECS's "1 vCPU" / "2 GB" forms,
/// registered or given as overrides, reach it converted (it would otherwise set no limit while
/// the controller reserved one).
#[test]
fn the_agent_gets_task_cpu_and_memory_in_units_and_mib() {
    let registered: TaskDefinition = serde_json::from_str(
        r#"{"family":"f","cpu":"1 vCPU","memory":"2 GB","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .unwrap();
    let plain = super::tasks::effective_definition(&registered, &Task::default());
    assert_eq!(
        (plain.cpu.as_deref(), plain.memory.as_deref()),
        (Some("1024"), Some("2048"))
    );
    let overridden = Task {
        overrides: Some(TaskOverride {
            cpu: Some(".5 vcpu".into()),
            memory: Some("1GB".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let eff = super::tasks::effective_definition(&registered, &overridden);
    assert_eq!(
        (eff.cpu.as_deref(), eff.memory.as_deref()),
        (Some("512"), Some("1024"))
    );
}

/// Registers an instance of 2048 cpu and 1024 MiB in the existing cluster "default".
async fn register_instance(c: &Controller) -> ContainerInstance {
    let resource = |name: &str, v: i32| Resource {
        name: name.into(),
        r#type: "INTEGER".into(),
        integer_value: v,
        ..Default::default()
    };
    c.register_container_instance(RegisterContainerInstanceRequest {
        cluster: "default".into(),
        total_resources: vec![resource("CPU", 2048), resource("MEMORY", 1024)],
        ..Default::default()
    })
    .await
    .unwrap()
}

/// A cluster "default" with one instance of 2048 cpu and 1024 MiB whose agent has taken in a
/// desired set (a placement candidate while the returned session lives).
async fn with_instance(c: &Controller) -> crate::fleet::Attached {
    c.create_cluster(CreateClusterRequest {
        cluster_name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let ci = register_instance(c).await;
    let id = berth_proto::arn::short_id("container-instance", &ci.container_instance_arn)
        .unwrap()
        .to_string();
    let session = c.fleet().attach(&id);
    c.fleet().desired_acked(&session, 1);
    session
}

/// Issue 6, "wrong today": filters are never silently ignored, overrides follow the
/// registration rules, ECS reserves memoryReservation, familyPrefix is a whole family name,
/// and desiredStatus PENDING lists nothing.
#[tokio::test]
async fn filters_overrides_and_reservations_follow_ecs() {
    let c = controller();
    let _session = with_instance(&c).await;
    // memory 2000 > the instance's 1024 MiB, but ECS reserves the 512 of memoryReservation.
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":2000,"memoryReservation":512}]}"#,
    ))
    .await
    .unwrap();
    c.register_task_definition(td(
        r#"{"family":"web-app","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let run = |overrides: Option<TaskOverride>| RunTaskRequest {
        task_definition: "web".into(),
        overrides,
        ..Default::default()
    };
    let placed = c.run_task(run(None)).await.unwrap();
    assert_eq!(placed.tasks.len(), 1, "{:?}", placed.failures);

    for (cpu, memory, field) in [
        (Some("banana"), None, "overrides.cpu"),
        (None, Some("-5"), "overrides.memory"),
    ] {
        let e = c
            .run_task(run(Some(TaskOverride {
                cpu: cpu.map(String::from),
                memory: memory.map(String::from),
                ..Default::default()
            })))
            .await
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let ok = c
        .run_task(run(Some(TaskOverride {
            cpu: Some("0.25 vCPU".into()),
            memory: Some("256".into()),
            ..Default::default()
        })))
        .await
        .unwrap();
    assert_eq!(ok.tasks.len(), 1, "{:?}", ok.failures);

    let e = c
        .list_tasks(ListTasksRequest {
            service_name: Some("ghost".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ServiceNotFoundException");
    let e = c
        .list_container_instances(ListContainerInstancesRequest {
            filter: Some("attribute:ecs.os-type == linux".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("filter:"), "{e}");
    let pending = c
        .list_tasks(ListTasksRequest {
            desired_status: Some("PENDING".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert!(pending.is_empty(), "{pending:?}");
    assert_eq!(
        c.list_tasks(ListTasksRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );

    let tds = c
        .list_task_definitions(ListTaskDefinitionsRequest {
            family_prefix: Some("web".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(tds.len(), 1, "{tds:?}");
    assert!(tds[0].ends_with("task-definition/web:1"));
}

/// Tag keys with the prefix `aws:` are AWS's: refused, naming the tag, and nothing is created.
#[tokio::test]
async fn reserved_tag_keys_are_refused() {
    let c = controller();
    let e = c
        .create_cluster(CreateClusterRequest {
            cluster_name: "tagged".into(),
            tags: vec![Tag {
                key: "AWS:owner".into(),
                value: "me".into(),
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("tags[0].key"), "{e}");
    let listed = c.list_clusters(Default::default()).await.unwrap().items;
    assert!(listed.is_empty(), "{listed:?}");
}

// ---------------------------------------------------------------------------------------------
// Issue 6: pagination, retention, tags, families, DeleteTaskDefinitions, cluster updates and
// RunTask's clientToken.
// ---------------------------------------------------------------------------------------------

/// A cluster "default" with one connected instance of `cpu` units and `memory` MiB.
async fn with_instance_of(c: &Controller, cpu: i32, memory: i32) -> crate::fleet::Attached {
    c.create_cluster(CreateClusterRequest {
        cluster_name: "default".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let resource = |name: &str, v: i32| Resource {
        name: name.into(),
        r#type: "INTEGER".into(),
        integer_value: v,
        ..Default::default()
    };
    let ci = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            total_resources: vec![resource("CPU", cpu), resource("MEMORY", memory)],
            ..Default::default()
        })
        .await
        .unwrap();
    let id = berth_proto::arn::short_id("container-instance", &ci.container_instance_arn)
        .unwrap()
        .to_string();
    let session = c.fleet().attach(&id);
    c.fleet().desired_acked(&session, 1);
    session
}

/// Follows nextToken from the first page to the last, `size` items a page.
async fn all_pages<F, Fut>(size: i32, mut list: F) -> Vec<String>
where
    F: FnMut(Option<String>, Option<i32>) -> Fut,
    Fut: std::future::Future<Output = Result<pagination::Page<String>, EcsError>>,
{
    let mut out = Vec::new();
    let mut token = None;
    loop {
        let page = list(token, Some(size)).await.unwrap();
        assert!(page.items.len() <= size as usize);
        out.extend(page.items);
        match page.next_token {
            Some(t) => token = Some(t),
            None => return out,
        }
    }
}

/// Issue 6: 250 task definitions and 250 tasks, listed 7 a page, each exactly once and in the
/// list's order (ascending and descending); bad sizes and tokens are refused by name.
#[tokio::test]
async fn lists_page_through_250_task_definitions_and_250_tasks_once_each() {
    let c = controller();
    let _session = with_instance_of(&c, 1 << 20, 1 << 20).await;
    // Families that are prefixes of each other, and revisions past 9, so a key that sorted
    // otherwise than the list would skip or repeat.
    let mut registered = Vec::new();
    for (family, n) in [("web", 12), ("web-app", 120), ("web_x", 118)] {
        for _ in 0..n {
            let r = c
                .register_task_definition(td(&format!(
                    r#"{{"family":"{family}","containerDefinitions":[{{"name":"a","image":"x","memory":8}}]}}"#
                )))
                .await
                .unwrap();
            registered.push(r.task_definition.unwrap().task_definition_arn);
        }
    }
    let asc = all_pages(7, |next_token, max_results| {
        c.list_task_definitions(ListTaskDefinitionsRequest {
            next_token,
            max_results,
            ..Default::default()
        })
    })
    .await;
    assert_eq!(asc, registered);
    let desc = all_pages(7, |next_token, max_results| {
        c.list_task_definitions(ListTaskDefinitionsRequest {
            sort: Some("DESC".into()),
            next_token,
            max_results,
            ..Default::default()
        })
    })
    .await;
    assert_eq!(desc, registered.iter().rev().cloned().collect::<Vec<_>>());

    let mut started = Vec::new();
    for _ in 0..25 {
        let r = c
            .run_task(RunTaskRequest {
                task_definition: "web".into(),
                count: Some(10),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        started.extend(r.tasks.into_iter().map(|t| t.task_arn));
    }
    let mut listed = all_pages(7, |next_token, max_results| {
        c.list_tasks(ListTasksRequest {
            next_token,
            max_results,
            ..Default::default()
        })
    })
    .await;
    assert_eq!(listed.len(), 250);
    listed.sort();
    started.sort();
    assert_eq!(listed, started);

    let clusters = all_pages(1, |next_token, max_results| {
        c.list_clusters(ListClustersRequest {
            next_token,
            max_results,
        })
    })
    .await;
    assert_eq!(clusters, [berth_proto::arn::cluster("default")]);

    for n in [0, 101, -1] {
        let e = c
            .list_tasks(ListTasksRequest {
                max_results: Some(n),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(e.to_string().starts_with("maxResults"), "{e}");
        let e = c
            .list_task_definitions(ListTaskDefinitionsRequest {
                max_results: Some(n),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("maxResults"), "{e}");
    }
    let e = c
        .list_clusters(ListClustersRequest {
            next_token: Some("not-a-token".into()),
            max_results: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(e.to_string().starts_with("nextToken"), "{e}");
}
