//! Service-layer unit tests against the in-memory store.

use super::test_support::{controller, instance_with, resource};
use super::*;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;

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
    c.desired_tasks(id, 1, &mut SessionSent::default())
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
    with_instance_of(c, 2048, 1024).await
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
    // Lowering the task memory below the container's limits needs the container lowered too.
    let ok = c
        .run_task(run(Some(TaskOverride {
            cpu: Some("0.25 vCPU".into()),
            memory: Some("256".into()),
            container_overrides: vec![ContainerOverride {
                name: "a".into(),
                memory: Some(256),
                memory_reservation: Some(128),
                ..Default::default()
            }],
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
            filter: Some("instanceType == t2.micro".into()),
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
    // Subnet "s", for awsvpc tasks.
    let subnet = Attribute {
        name: "berth.subnet.s".into(),
        value: Some("bridge:10.9.0.0/24".into()),
        ..Default::default()
    };
    instance_with(c, cpu, memory, vec![subnet]).await.1
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

    for name in ["zeta", "alpha", "mid"] {
        c.create_cluster(CreateClusterRequest {
            cluster_name: name.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let clusters = all_pages(1, |next_token, max_results| {
        c.list_clusters(ListClustersRequest {
            next_token,
            max_results,
        })
    })
    .await;
    let names = ["alpha", "default", "mid", "zeta"];
    assert_eq!(clusters, names.map(berth_proto::arn::cluster));

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

fn tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        value: value.into(),
    }
}

/// Issue 6: TagResource, UntagResource and ListTagsForResource on clusters, task definitions,
/// tasks and container instances: stored with the object, shown by describe with include TAGS,
/// validated as ECS does, and unknown ARNs answered with ECS's exceptions.
#[tokio::test]
async fn tags_on_every_resource_kind_are_stored_listed_and_validated() {
    let c = controller();
    let _session = with_instance(&c).await;
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let task = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .remove(0);
    let instance = task.container_instance_arn.clone().unwrap();
    let arns = [
        berth_proto::arn::cluster("default"),
        berth_proto::arn::task_definition("web", 1),
        task.task_arn.clone(),
        instance.clone(),
    ];
    for arn in &arns {
        c.tag_resource(TagResourceRequest {
            resource_arn: arn.clone(),
            tags: vec![tag("team", "a"), tag("env", "dev")],
        })
        .await
        .unwrap();
        // A known key takes the new value; the others stay.
        c.tag_resource(TagResourceRequest {
            resource_arn: arn.clone(),
            tags: vec![tag("team", "b")],
        })
        .await
        .unwrap();
        c.untag_resource(UntagResourceRequest {
            resource_arn: arn.clone(),
            tag_keys: vec!["env".into(), "absent".into()],
        })
        .await
        .unwrap();
        assert_eq!(
            c.list_tags_for_resource(arn).await.unwrap(),
            [tag("team", "b")],
            "{arn}"
        );
    }
    // Describe shows them with include TAGS only.
    let tags = || vec!["TAGS".to_string()];
    let d = c
        .describe_clusters(DescribeClustersRequest {
            include: tags(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.clusters[0].tags, [tag("team", "b")]);
    let d = c.describe_clusters(Default::default()).await.unwrap();
    assert!(d.clusters[0].tags.is_empty());
    let d = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![task.task_arn.clone()],
            include: tags(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.tasks[0].tags, [tag("team", "b")]);
    let d = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![instance.clone()],
            include: tags(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.container_instances[0].tags, [tag("team", "b")]);
    let d = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![instance.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(d.container_instances[0].tags.is_empty());
    assert_eq!(
        c.describe_task_definition("web:1").await.unwrap().tags,
        [tag("team", "b")]
    );

    // Validation, with nothing changed.
    let cluster = &arns[0];
    let bad = [
        vec![tag("aws:owner", "x")],
        vec![tag("", "x")],
        vec![tag(&"k".repeat(129), "x")],
        vec![tag("k", &"v".repeat(257))],
        vec![tag("k", "1"), tag("k", "2")],
        (0..50).map(|i| tag(&format!("k{i}"), "")).collect(),
    ];
    for tags in bad {
        let e = c
            .tag_resource(TagResourceRequest {
                resource_arn: cluster.clone(),
                tags,
            })
            .await
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException", "{e}");
        assert!(e.to_string().starts_with("tags"), "{e}");
    }
    let e = c
        .untag_resource(UntagResourceRequest {
            resource_arn: cluster.clone(),
            tag_keys: vec!["AWS:x".into()],
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("tagKeys[0]"), "{e}");
    assert_eq!(
        c.list_tags_for_resource(cluster).await.unwrap(),
        [tag("team", "b")]
    );

    // Unknown resources.
    let unknown_cluster = [
        berth_proto::arn::cluster("ghost"),
        berth_proto::arn::task("ghost", "0123"),
    ];
    for arn in unknown_cluster {
        let e = c.list_tags_for_resource(&arn).await.unwrap_err();
        assert_eq!(e.exception_name(), "ClusterNotFoundException", "{arn}");
    }
    for arn in [
        berth_proto::arn::task("default", "0123"),
        berth_proto::arn::task_definition("web", 9),
        berth_proto::arn::container_instance("default", "0123"),
    ] {
        let e = c.list_tags_for_resource(&arn).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException", "{arn}");
        assert_eq!(e.to_string(), "The specified resource is not found.");
    }
    for arn in ["default", "arn:aws:ecs:r:a:bucket/x"] {
        let e = c.list_tags_for_resource(arn).await.unwrap_err();
        assert!(e.to_string().contains("The ARN provided is invalid"), "{e}");
    }
}

/// Issue 6: ListTaskDefinitionFamilies (a prefix, ACTIVE/INACTIVE/ALL over families) and
/// DeleteTaskDefinitions (INACTIVE revisions only, DELETE_IN_PROGRESS while a task uses them,
/// then gone; the family's numbering goes on).
#[tokio::test]
async fn families_list_by_prefix_and_deleted_revisions_go_once_unused() {
    let c = controller();
    let _session = with_instance(&c).await;
    for family in ["web", "web", "web-app", "worker"] {
        c.register_task_definition(td(&format!(
            r#"{{"family":"{family}","containerDefinitions":[{{"name":"a","image":"x","memory":64}}]}}"#
        )))
        .await
        .unwrap();
    }
    c.deregister_task_definition("worker:1").await.unwrap();
    let families = |prefix: Option<&str>, status: Option<&str>| {
        let req = ListTaskDefinitionFamiliesRequest {
            family_prefix: prefix.map(String::from),
            status: status.map(String::from),
            ..Default::default()
        };
        let c = &c;
        async move { c.list_task_definition_families(req).await.unwrap().items }
    };
    assert_eq!(families(None, None).await, ["web", "web-app", "worker"]);
    assert_eq!(families(Some("web"), None).await, ["web", "web-app"]);
    assert_eq!(families(Some("web-"), None).await, ["web-app"]);
    assert_eq!(families(None, Some("ACTIVE")).await, ["web", "web-app"]);
    assert_eq!(families(None, Some("INACTIVE")).await, ["worker"]);
    let e = c
        .list_task_definition_families(ListTaskDefinitionFamiliesRequest {
            status: Some("DELETED".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("status"), "{e}");
    let paged = all_pages(1, |next_token, max_results| {
        c.list_task_definition_families(ListTaskDefinitionFamiliesRequest {
            next_token,
            max_results,
            ..Default::default()
        })
    })
    .await;
    assert_eq!(paged, ["web", "web-app", "worker"]);

    // web:1 runs a task, then is deregistered and deleted: DELETE_IN_PROGRESS until the task
    // is STOPPED. worker:1 is unused: gone at once. web:2 is ACTIVE and web:9 unknown: failures.
    let run = c
        .run_task(RunTaskRequest {
            task_definition: "web:1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let task_arn = run.tasks[0].task_arn.clone();
    c.deregister_task_definition("web:1").await.unwrap();
    let r = c
        .delete_task_definitions(DeleteTaskDefinitionsRequest {
            task_definitions: vec![
                "web:1".into(),
                berth_proto::arn::task_definition("worker", 1),
                "web:2".into(),
                "web:9".into(),
                "web".into(),
            ],
        })
        .await
        .unwrap();
    let deleted: Vec<_> = r
        .task_definitions
        .iter()
        .map(|t| (t.family.as_str(), t.revision, t.status.as_str()))
        .collect();
    assert_eq!(
        deleted,
        [
            ("web", 1, "DELETE_IN_PROGRESS"),
            ("worker", 1, "DELETE_IN_PROGRESS")
        ]
    );
    assert!(
        r.task_definitions
            .iter()
            .all(|t| t.delete_requested_at.is_some()),
        "ECS shows when the deletion was asked for"
    );
    let failed: Vec<_> = r.failures.iter().map(|f| f.arn.as_str()).collect();
    assert_eq!(
        failed,
        [
            berth_proto::arn::task_definition("web", 2).as_str(),
            berth_proto::arn::task_definition("web", 9).as_str(),
            "web"
        ]
    );
    assert!(r.failures[0].reason.contains("ACTIVE"), "{:?}", r.failures);
    // worker is gone: no family, no revision; web:1 is still there while its task runs.
    assert_eq!(families(None, None).await, ["web", "web-app"]);
    assert!(c.describe_task_definition("worker:1").await.is_err());
    let listed = c
        .list_task_definitions(ListTaskDefinitionsRequest {
            status: Some("DELETE_IN_PROGRESS".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(listed, [berth_proto::arn::task_definition("web", 1)]);
    // A DELETE_IN_PROGRESS revision runs no new task.
    assert!(c
        .run_task(RunTaskRequest {
            task_definition: "web:1".into(),
            ..Default::default()
        })
        .await
        .is_err());
    // The numbering of a deleted family goes on.
    let next = c
        .register_task_definition(td(
            r#"{"family":"worker","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next.task_definition.unwrap().revision, 2);

    // Once its task is STOPPED, web:1 goes.
    stop_confirmed(&c, &task_arn).await;
    assert_eq!(c.purge_deleted_task_definitions().await.unwrap(), 1);
    assert!(c.describe_task_definition("web:1").await.is_err());
    let all = c
        .list_task_definitions(ListTaskDefinitionsRequest {
            status: Some("ALL".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert_eq!(
        all,
        [
            berth_proto::arn::task_definition("web", 2),
            berth_proto::arn::task_definition("web-app", 1),
            berth_proto::arn::task_definition("worker", 2),
        ]
    );

    // A family whose every revision is deleted is listed nowhere, and numbers on.
    c.deregister_task_definition("web-app:1").await.unwrap();
    c.delete_task_definitions(DeleteTaskDefinitionsRequest {
        task_definitions: vec!["web-app:1".into()],
    })
    .await
    .unwrap();
    assert_eq!(families(None, None).await, ["web", "worker"]);
    let all = c
        .list_task_definitions(ListTaskDefinitionsRequest {
            status: Some("ALL".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items;
    assert!(!all.iter().any(|a| a.contains("web-app")), "{all:?}");
    assert!(c.describe_task_definition("web-app:1").await.is_err());
    let tags = c
        .list_tags_for_resource(&berth_proto::arn::task_definition("web-app", 1))
        .await
        .unwrap_err();
    assert_eq!(tags.exception_name(), "InvalidParameterException");
    let next = c
        .register_task_definition(td(
            r#"{"family":"web-app","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
        ))
        .await
        .unwrap();
    assert_eq!(next.task_definition.unwrap().revision, 2);

    let eleven = DeleteTaskDefinitionsRequest {
        task_definitions: (1..=11).map(|i| format!("web:{i}")).collect(),
    };
    let e = c.delete_task_definitions(eleven).await.unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
}

/// Reports `task_arn` STOPPED from its instance's agent, as the link would.
async fn stop_confirmed(c: &Controller, task_arn: &str) {
    agent_reports(c, task_arn, "STOPPED").await
}

/// Reports `task_arn` in `status` from its instance's agent, as the link would.
async fn agent_reports(c: &Controller, task_arn: &str, status: &str) {
    let t = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![task_arn.into()],
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .remove(0);
    let session = c
        .open_session(&AgentHello {
            container_instance_arn: t.container_instance_arn.clone().unwrap(),
            protocol_version: berth_proto::link::PROTOCOL_VERSION,
            state_epoch: "stop-confirmed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let next_seq = c.state.lock().await.instances[&session.instance_id].last_state_change_seq + 1;
    c.apply_state_change(
        &session,
        TaskStateChange {
            seq: next_seq,
            task_arn: task_arn.into(),
            last_status: status.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
}

/// Issue 6: UpdateClusterSettings and UpdateCluster store and show containerInsights and the
/// execute-command configuration; bad values and Service Connect are refused by name.
#[tokio::test]
async fn cluster_settings_and_configuration_update_and_show() {
    let c = controller();
    c.create_cluster(CreateClusterRequest {
        cluster_name: "prod".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let insights = |v: &str| ClusterSetting {
        name: "containerInsights".into(),
        value: v.into(),
    };
    let u = c
        .update_cluster_settings(UpdateClusterSettingsRequest {
            cluster: "prod".into(),
            settings: vec![insights("enhanced")],
        })
        .await
        .unwrap();
    assert_eq!(u.settings, [insights("enhanced")]);
    let exec = ClusterConfiguration {
        execute_command_configuration: Some(ExecuteCommandConfiguration {
            logging: Some("OVERRIDE".into()),
            log_configuration: Some(ExecuteCommandLogConfiguration {
                s3_bucket_name: Some("logs".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let u = c
        .update_cluster(UpdateClusterRequest {
            cluster: berth_proto::arn::cluster("prod"),
            configuration: Some(exec.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(u.configuration.as_ref(), Some(&exec));
    let d = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["prod".into()],
            include: vec!["CONFIGURATIONS".into(), "SETTINGS".into()],
        })
        .await
        .unwrap();
    assert_eq!(d.clusters[0].configuration.as_ref(), Some(&exec));
    assert_eq!(d.clusters[0].settings, [insights("enhanced")]);
    let d = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["prod".into()],
            include: vec![],
        })
        .await
        .unwrap();
    assert!(d.clusters[0].configuration.is_none());
    // The guide's `--include STATISTICS,SETTINGS,CONFIGURATIONS` reaches the controller from the
    // aws CLI as one value.
    let d = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["prod".into()],
            include: vec!["STATISTICS,SETTINGS,CONFIGURATIONS".into()],
        })
        .await
        .unwrap();
    assert_eq!(d.clusters[0].configuration.as_ref(), Some(&exec));
    assert_eq!(d.clusters[0].settings, [insights("enhanced")]);
    let e = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["prod".into()],
            include: vec!["SETTINGS,STATS".into()],
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'STATS'"), "{e}");

    let refused = [
        (
            UpdateClusterRequest {
                cluster: "prod".into(),
                settings: vec![insights("on")],
                ..Default::default()
            },
            "settings[0].value",
        ),
        (
            UpdateClusterRequest {
                cluster: "prod".into(),
                configuration: Some(ClusterConfiguration {
                    execute_command_configuration: Some(ExecuteCommandConfiguration {
                        logging: Some("OVERRIDE".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            "configuration.executeCommandConfiguration.logConfiguration",
        ),
        (
            UpdateClusterRequest {
                cluster: "prod".into(),
                service_connect_defaults: Some(ClusterServiceConnectDefaultsRequest {
                    namespace: "ns".into(),
                }),
                ..Default::default()
            },
            "serviceConnectDefaults",
        ),
    ];
    for (req, field) in refused {
        let e = c.update_cluster(req).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(e.to_string().starts_with(field), "{e}");
    }
    let e = c
        .update_cluster_settings(UpdateClusterSettingsRequest {
            cluster: "ghost".into(),
            settings: vec![insights("enabled")],
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ClusterNotFoundException");
    // Nothing changed.
    let d = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["prod".into()],
            include: vec!["SETTINGS".into()],
        })
        .await
        .unwrap();
    assert_eq!(d.clusters[0].settings, [insights("enhanced")]);
}

/// Issue 6: a retried RunTask with the same clientToken and request answers the first call's
/// tasks and starts nothing; the same token with another request is ECS's ConflictException;
/// the token survives a controller restart; malformed tokens are refused.
#[tokio::test]
async fn run_task_client_tokens_make_retries_idempotent_across_restarts() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
    let _session = with_instance(&c).await;
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let req = RunTaskRequest {
        task_definition: "web".into(),
        count: Some(2),
        client_token: Some("3f1c-token".into()),
        ..Default::default()
    };
    let first = c.run_task(req.clone()).await.unwrap();
    let arns = |r: &RunTaskResponse| -> Vec<String> {
        r.tasks.iter().map(|t| t.task_arn.clone()).collect()
    };
    assert_eq!(first.tasks.len(), 2);
    let again = c.run_task(req.clone()).await.unwrap();
    assert_eq!(arns(&again), arns(&first));
    let running = || async { c.list_tasks(Default::default()).await.unwrap().items.len() };
    assert_eq!(running().await, 2);
    let e = c
        .run_task(RunTaskRequest {
            count: Some(1),
            ..req.clone()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ConflictException");
    assert!(e.to_string().contains(&first.tasks[0].task_arn), "{e}");
    assert_eq!(running().await, 2);
    // Without a token, or with another, a RunTask starts tasks.
    let other = c
        .run_task(RunTaskRequest {
            client_token: Some("another".into()),
            ..req.clone()
        })
        .await
        .unwrap();
    assert_eq!(other.tasks.len(), 2);
    for bad in ["", "has space", &"x".repeat(65), "é"] {
        let e = c
            .run_task(RunTaskRequest {
                client_token: Some(bad.to_string()),
                ..req.clone()
            })
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("clientToken"), "{bad:?}: {e}");
    }
    assert_eq!(running().await, 4);

    // The controller restarts on the same store: the token still answers the first tasks.
    drop(_session);
    let c = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    let replayed = c.run_task(req).await.unwrap();
    assert_eq!(arns(&replayed), arns(&first));
    assert_eq!(
        c.list_tasks(Default::default()).await.unwrap().items.len(),
        4
    );
}

fn seconds(t: &Option<berth_proto::Timestamp>) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(t.unwrap().seconds as u64)
}

use std::time::{Duration, SystemTime};

/// Issue 6: a task whose STOPPED its agent confirmed stays visible for the retention, then
/// leaves the store with its clientToken; a stop not yet confirmed by the agent keeps its
/// record (the tombstone), however old; cluster and instance counts come from what runs.
#[tokio::test]
async fn stopped_tasks_leave_after_the_retention_and_unconfirmed_stops_stay() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
    let _session = with_instance(&c).await;
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let run = |token: &str| RunTaskRequest {
        task_definition: "web".into(),
        client_token: Some(token.into()),
        ..Default::default()
    };
    let confirmed = c.run_task(run("a")).await.unwrap().tasks.remove(0);
    let unconfirmed = c.run_task(run("b")).await.unwrap().tasks.remove(0);
    let running = c.run_task(run("c")).await.unwrap().tasks.remove(0);
    stop_confirmed(&c, &confirmed.task_arn).await;
    c.stop_task(StopTaskRequest {
        task: unconfirmed.task_arn.clone(),
        ..Default::default()
    })
    .await
    .unwrap();
    let stopped_at = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![confirmed.task_arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks[0]
        .stopped_at;
    let t0 = seconds(&stopped_at);
    let hour = DEFAULT_STOPPED_TASK_RETENTION;
    let listed_stopped = || async {
        c.list_tasks(ListTasksRequest {
            desired_status: Some("STOPPED".into()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
    };
    // Within the hour: still listed and described.
    let p = c
        .purge_stopped(t0 + hour - Duration::from_secs(1), hour)
        .await
        .unwrap();
    assert_eq!(p, Purged::default());
    assert_eq!(listed_stopped().await.len(), 2);
    // Past it: the confirmed stop goes, with its token; the unconfirmed one and the running
    // task stay, however long after.
    let p = c.purge_stopped(t0 + hour * 100, hour).await.unwrap();
    assert_eq!((p.tasks, p.client_tokens), (1, 1), "{p:?}");
    assert_eq!(listed_stopped().await, vec![unconfirmed.task_arn.clone()]);
    let d = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![confirmed.task_arn.clone(), running.task_arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.failures.len(), 1);
    assert_eq!(d.failures[0].arn, confirmed.task_arn);
    assert_eq!(d.tasks[0].task_arn, running.task_arn);
    // Recorded STOPPED but reported running again: its stop is being confirmed to the agent,
    // so its record stays past the retention until the agent reports it stopped.
    let stale = c.run_task(run("d")).await.unwrap().tasks.remove(0);
    stop_confirmed(&c, &stale.task_arn).await;
    agent_reports(&c, &stale.task_arn, "RUNNING").await;
    let p = c.purge_stopped(t0 + hour * 100, hour).await.unwrap();
    assert_eq!(p.tasks, 0, "{p:?}");
    agent_reports(&c, &stale.task_arn, "STOPPED").await;
    let p = c.purge_stopped(t0 + hour * 100, hour).await.unwrap();
    assert_eq!((p.tasks, p.client_tokens), (1, 1), "{p:?}");
    // Gone from the store too: a restart does not bring it back; the other tokens stay.
    let c2 = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    assert!(c2.state.lock().await.tasks.len() == 2);
    assert_eq!(
        c2.state
            .lock()
            .await
            .run_tokens
            .keys()
            .collect::<BTreeSet<_>>(),
        BTreeSet::from([&"b".to_string(), &"c".to_string()])
    );

    // Counts: the cluster and the instance count what is not yet STOPPED.
    let cluster = c
        .describe_clusters(Default::default())
        .await
        .unwrap()
        .clusters
        .remove(0);
    // The task being stopped is neither running nor pending; the other one is pending.
    assert_eq!(
        (cluster.running_tasks_count, cluster.pending_tasks_count),
        (0, 1)
    );
    let ci = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![running.container_instance_arn.clone().unwrap()],
            ..Default::default()
        })
        .await
        .unwrap()
        .container_instances
        .remove(0);
    assert_eq!((ci.running_tasks_count, ci.pending_tasks_count), (0, 2));
    // Deleting the cluster is refused while they remain.
    assert_eq!(
        c.delete_cluster("default")
            .await
            .unwrap_err()
            .exception_name(),
        "ClusterContainsContainerInstancesException"
    );
}

/// Issue 6: the retention sweep runs by itself on a tokio interval (paused time drives it and
/// the injected clock; nothing waits in real time).
#[tokio::test(start_paused = true)]
async fn the_retention_sweep_removes_stopped_tasks_on_its_own() {
    let c = Arc::new(controller());
    let _session = with_instance(&c).await;
    c.register_task_definition(td(
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    ))
    .await
    .unwrap();
    let task = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .remove(0);
    stop_confirmed(&c, &task.task_arn).await;
    let described = || async {
        c.describe_tasks(DescribeTasksRequest {
            tasks: vec![task.task_arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .len()
    };
    let start = (SystemTime::now(), tokio::time::Instant::now());
    let clock = move || start.0 + start.1.elapsed();
    let retention = Duration::from_secs(600);
    let sweeps = c.spawn_retention(retention, clock);
    // Sweeps every minute: still there just before the retention ends...
    tokio::time::sleep(retention - Duration::from_secs(61)).await;
    assert_eq!(described().await, 1);
    // ...gone within a sweep interval after it.
    let deadline = tokio::time::Instant::now() + retention;
    while described().await == 1 {
        assert!(tokio::time::Instant::now() < deadline, "never swept");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(start.1.elapsed() >= retention);
    assert!(start.1.elapsed() <= retention + Duration::from_secs(62));
    sweeps.abort();
}

/// Every member of CreateCluster, ListTasks and StartTask is acted on or refused by name: the
/// configuration is stored and shown, what Berth has no counterpart for is refused and changes
/// nothing.
#[tokio::test]
async fn create_cluster_list_tasks_and_start_task_members_are_kept_or_refused_by_name() {
    let c = controller();
    let configuration = ClusterConfiguration {
        execute_command_configuration: Some(ExecuteCommandConfiguration {
            logging: Some("DEFAULT".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let made = c
        .create_cluster(CreateClusterRequest {
            cluster_name: "conf".into(),
            configuration: Some(configuration.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let shown = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec![made.cluster_arn.clone()],
            include: vec!["CONFIGURATIONS".into()],
        })
        .await
        .unwrap();
    assert_eq!(shown.clusters[0].configuration, Some(configuration));
    for (req, field) in [
        (
            CreateClusterRequest {
                cluster_name: "sc".into(),
                service_connect_defaults: Some(ClusterServiceConnectDefaultsRequest {
                    namespace: "ns".into(),
                }),
                ..Default::default()
            },
            "serviceConnectDefaults",
        ),
        (
            CreateClusterRequest {
                cluster_name: "cps".into(),
                default_capacity_provider_strategy: vec![CapacityProviderStrategyItem {
                    capacity_provider: "FARGATE".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            "defaultCapacityProviderStrategy",
        ),
    ] {
        let e = c.create_cluster(req).await.unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
    let listed = c
        .list_clusters(ListClustersRequest::default())
        .await
        .unwrap();
    assert_eq!(
        listed.items,
        std::slice::from_ref(&made.cluster_arn),
        "refused: nothing made"
    );
    let e = c
        .list_tasks(ListTasksRequest {
            cluster: Some("conf".into()),
            daemon_name: Some("d".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("daemonName"), "{e}");
    let e = c
        .start_task(StartTaskRequest {
            cluster: Some("conf".into()),
            container_instances: vec!["x".into()],
            task_definition: "web".into(),
            volume_configurations: vec![TaskVolumeConfiguration {
                name: "v".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("volumeConfigurations"), "{e}");
}

/// DescribeClusters' statistics split the task counts by launch type, as ECS's do: a task run
/// with launchType FARGATE counts as Fargate, EC2 and EXTERNAL ones as EC2.
#[tokio::test]
async fn cluster_statistics_count_tasks_by_launch_type() {
    let c = controller();
    let _s = with_instance_of(&c, 4096, 8192).await;
    c.register_task_definition(td(
        r#"{"family":"fg","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],
            "cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    ))
    .await
    .unwrap();
    for launch_type in ["FARGATE", "EC2", "EXTERNAL"] {
        let r = c
            .run_task(RunTaskRequest {
                task_definition: "fg".into(),
                launch_type: Some(launch_type.into()),
                network_configuration: Some(
                    serde_json::from_str(r#"{"awsvpcConfiguration":{"subnets":["s"]}}"#).unwrap(),
                ),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(r.tasks.len(), 1, "{launch_type}: {:?}", r.failures);
    }
    let d = c
        .describe_clusters(DescribeClustersRequest {
            clusters: vec!["default".into()],
            include: vec!["STATISTICS".into()],
        })
        .await
        .unwrap();
    let stat = |name: &str| {
        d.clusters[0]
            .statistics
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value.clone())
    };
    assert_eq!(stat("pendingFargateTasksCount").as_deref(), Some("1"));
    assert_eq!(stat("pendingEC2TasksCount").as_deref(), Some("2"));
    assert_eq!(d.clusters[0].pending_tasks_count, 3);
}
