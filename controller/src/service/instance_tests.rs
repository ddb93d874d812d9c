//! Service-layer tests of instances leaving, attributes, the query-language filter, placement
//! constraints and strategies on RunTask, and StartTask.

use super::test_support::{default_cluster, instance_with, register_td, resource};
use super::*;
use crate::fleet::Attached;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;

fn attr(name: &str, value: &str) -> Attribute {
    Attribute {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn on(target: &str, a: Attribute) -> Attribute {
    Attribute {
        target_id: Some(target.into()),
        ..a
    }
}

/// A controller over `store` with cluster "default".
async fn controller_on(store: Arc<MemoryStore>) -> Controller {
    let c = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    default_cluster(&c).await;
    c
}

/// Registers an instance (2048 cpu, `memory` MiB, x86_64 linux) whose agent is in step while
/// the returned session lives.
async fn instance(c: &Controller, memory: i32, arch: &str) -> (String, Attached) {
    let attributes = vec![
        attr("ecs.os-type", "linux"),
        attr("ecs.os-family", "LINUX"),
        attr("ecs.cpu-architecture", arch),
    ];
    instance_with(c, 2048, memory, attributes).await
}

const WEB: &str =
    r#"{"family":"web","containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#;

fn run(td: &str) -> RunTaskRequest {
    RunTaskRequest {
        task_definition: td.into(),
        ..Default::default()
    }
}

async fn list(c: &Controller, status: Option<&str>, filter: Option<&str>) -> Vec<String> {
    c.list_container_instances(ListContainerInstancesRequest {
        status: status.map(str::to_string),
        filter: filter.map(str::to_string),
        ..Default::default()
    })
    .await
    .unwrap()
    .items
}

#[tokio::test]
async fn deregistration_is_refused_with_tasks_unless_forced_and_then_records_them_stopped() {
    let store = Arc::new(MemoryStore::default());
    let c = controller_on(store.clone()).await;
    let (arn, _s) = instance(&c, 1024, "x86_64").await;
    register_td(&c, WEB).await;
    let task = c.run_task(run("web")).await.unwrap().tasks.remove(0);
    let dereg = |force: Option<bool>| DeregisterContainerInstanceRequest {
        container_instance: berth_proto::arn::short_id("container-instance", &arn)
            .unwrap()
            .into(),
        force,
        ..Default::default()
    };
    let e = c
        .deregister_container_instance(dereg(None))
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(
        e.to_string()
            .starts_with("Found running tasks on the instance."),
        "{e}"
    );
    assert_eq!(
        list(&c, None, None).await,
        std::slice::from_ref(&arn),
        "nothing changed"
    );
    let e = c.delete_cluster("default").await.unwrap_err();
    assert_eq!(
        e.exception_name(),
        "ClusterContainsContainerInstancesException"
    );

    let ci = c
        .deregister_container_instance(dereg(Some(true)))
        .await
        .unwrap();
    assert_eq!(
        (ci.status.as_str(), ci.agent_connected),
        ("INACTIVE", false)
    );
    let t = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec![task.task_arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .tasks
        .remove(0);
    assert_eq!(t.last_status, "STOPPED");
    assert_eq!(t.desired_status, "STOPPED");
    assert!(t.stopped_at.is_some());
    assert!(t.containers.iter().all(|x| x.last_status == "STOPPED"));
    assert!(t.stopped_reason.unwrap().contains(&arn));
    // Listed only with status INACTIVE; still describable; takes no tasks.
    assert!(list(&c, None, None).await.is_empty());
    assert_eq!(
        list(&c, Some("INACTIVE"), None).await,
        std::slice::from_ref(&arn)
    );
    let d = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![arn.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(d.container_instances[0].status, "INACTIVE");
    let e = c.run_task(run("web")).await.unwrap_err();
    assert!(e.to_string().contains("No Container Instances"), "{e}");
    // A second deregistration answers the same INACTIVE instance.
    assert_eq!(
        c.deregister_container_instance(dereg(None))
            .await
            .unwrap()
            .status,
        "INACTIVE"
    );
    // It survives a restart, and the cluster, all of whose instances are INACTIVE, can go.
    let c = controller_on(store).await;
    assert_eq!(
        list(&c, Some("INACTIVE"), None).await,
        std::slice::from_ref(&arn)
    );
    let e = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            container_instance_arn: Some(arn.clone()),
            total_resources: vec![resource("CPU", 2048), resource("MEMORY", 1024)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(matches!(e, EcsError::InactiveInstance(_)), "{e}");
    assert_eq!(
        c.delete_cluster("default").await.unwrap().status,
        "INACTIVE"
    );
}

#[tokio::test]
async fn an_unknown_instance_cannot_be_deregistered() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let e = c
        .deregister_container_instance(DeregisterContainerInstanceRequest {
            container_instance: "0123".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("containerInstance: '0123'"), "{e}");
}

#[tokio::test]
async fn custom_attributes_are_kept_listed_filtered_and_deleted() {
    let store = Arc::new(MemoryStore::default());
    let c = controller_on(store.clone()).await;
    let (a, _sa) = instance(&c, 1024, "x86_64").await;
    let (b, _sb) = instance(&c, 1024, "arm64").await;
    let a_id = berth_proto::arn::short_id("container-instance", &a)
        .unwrap()
        .to_string();
    let put = |attrs: Vec<Attribute>| PutAttributesRequest {
        attributes: attrs,
        ..Default::default()
    };
    let out = c
        .put_attributes(put(vec![
            on(&a, attr("stack", "prod")),
            Attribute {
                target_type: Some("container-instance".into()),
                ..on(&a_id, attr("team", "blue"))
            },
            on(&b, attr("stack", "dev")),
        ]))
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    assert!(out
        .iter()
        .all(|x| x.target_type.as_deref() == Some("container-instance")));
    // Overwrite keeps one attribute of the name.
    c.put_attributes(put(vec![on(&a, attr("stack", "prod2"))]))
        .await
        .unwrap();

    let bad = [
        (on(&a, attr("bad name!", "x")), "attributes[0].name"),
        (on(&a, attr("stack", " lead")), "attributes[0].value"),
        (on(&a, attr("ecs.instance-type", "x")), "agent-provided"),
        (on(&a_id, attr("stack", "x")), "targetType"),
        (
            on(
                "nope",
                Attribute {
                    target_type: Some("container-instance".into()),
                    ..attr("s", "x")
                },
            ),
            "Could not find",
        ),
        (
            Attribute {
                target_type: Some("task".into()),
                ..on(&a, attr("s", "x"))
            },
            "targetType",
        ),
    ];
    for (x, want) in bad {
        let e = c.put_attributes(put(vec![x])).await.unwrap_err();
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    let e = c
        .put_attributes(put((0..11)
            .map(|i| on(&a, attr(&format!("k{i}"), "v")))
            .collect()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("at most 10"), "{e}");
    // 2 custom on a; 9 more would make 11: refused, and none of them is kept.
    let e = c
        .put_attributes(put((0..9)
            .map(|i| on(&a, attr(&format!("k{i}"), "v")))
            .collect()))
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "AttributeLimitExceededException");

    let list_attrs = |name: Option<&str>, value: Option<&str>| ListAttributesRequest {
        target_type: "container-instance".into(),
        attribute_name: name.map(str::to_string),
        attribute_value: value.map(str::to_string),
        ..Default::default()
    };
    let all = c
        .list_attributes(list_attrs(None, None))
        .await
        .unwrap()
        .items;
    // 3 agent attributes each, 2 custom on a, 1 on b.
    assert_eq!(all.len(), 9, "{all:?}");
    let stacks = c
        .list_attributes(list_attrs(Some("stack"), Some("prod2")))
        .await
        .unwrap()
        .items;
    assert_eq!(stacks.len(), 1);
    assert_eq!(stacks[0].target_id.as_deref(), Some(a.as_str()));
    let arm = c
        .list_attributes(list_attrs(Some("ecs.cpu-architecture"), Some("arm64")))
        .await
        .unwrap()
        .items;
    assert_eq!(
        arm.iter()
            .map(|x| x.target_id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        vec![b.clone()]
    );
    let e = c
        .list_attributes(list_attrs(None, Some("prod")))
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("attributeValue"), "{e}");
    let e = c
        .list_attributes(ListAttributesRequest::default())
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("targetType"), "{e}");
    // Paged: every attribute once.
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let p = c
            .list_attributes(ListAttributesRequest {
                max_results: Some(2),
                next_token: token.clone(),
                ..list_attrs(None, None)
            })
            .await
            .unwrap();
        seen.extend(p.items);
        match p.next_token {
            Some(t) => token = Some(t),
            None => break,
        }
    }
    assert_eq!(seen, all);

    // Shown by describe-container-instances, surviving a restart and a re-registration.
    let c = controller_on(store).await;
    c.register_container_instance(RegisterContainerInstanceRequest {
        cluster: "default".into(),
        container_instance_arn: Some(a.clone()),
        total_resources: vec![resource("CPU", 2048), resource("MEMORY", 1024)],
        ..Default::default()
    })
    .await
    .unwrap();
    let d = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let shown: Vec<_> = d.container_instances[0]
        .attributes
        .iter()
        .map(|x| {
            (
                x.name.as_str(),
                x.value.as_deref(),
                x.target_id.as_deref().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        [("stack", Some("prod2"), ""), ("team", Some("blue"), "")]
    );

    // Delete: a wrong value is refused; without a value it goes.
    let del = |x: Attribute| DeleteAttributesRequest {
        attributes: vec![x],
        ..Default::default()
    };
    let e = c
        .delete_attributes(del(on(&a, attr("stack", "prod"))))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("attributes[0].value"), "{e}");
    c.delete_attributes(del(on(
        &a,
        Attribute {
            name: "stack".into(),
            ..Default::default()
        },
    )))
    .await
    .unwrap();
    let left = c
        .list_attributes(list_attrs(Some("stack"), None))
        .await
        .unwrap()
        .items;
    assert_eq!(
        left.iter()
            .map(|x| x.target_id.clone().unwrap_or_default())
            .collect::<Vec<_>>(),
        [b]
    );
}

#[tokio::test]
async fn list_container_instances_filters_with_the_query_language_and_pages() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (a, _sa) = instance(&c, 1024, "x86_64").await;
    let (b, _sb) = instance(&c, 1024, "arm64").await;
    c.put_attributes(PutAttributesRequest {
        attributes: vec![on(&a, attr("stack", "prod"))],
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        list(&c, None, Some("attribute:stack == prod")).await,
        vec![a.clone()]
    );
    assert_eq!(
        list(&c, None, Some("attribute:stack !exists")).await,
        vec![b.clone()]
    );
    assert_eq!(
        list(
            &c,
            None,
            Some("attribute:ecs.cpu-architecture in [arm64, ppc]")
        )
        .await,
        vec![b.clone()]
    );
    assert_eq!(
        list(
            &c,
            None,
            Some("runningTasksCount == 0 and agentConnected == true")
        )
        .await
        .len(),
        2
    );
    assert!(list(&c, None, Some("registeredAt < 2000-01-01"))
        .await
        .is_empty());
    let e = c
        .list_container_instances(ListContainerInstancesRequest {
            filter: Some("attribute:stack ~= prod".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(e.to_string().starts_with("filter:"), "{e}");
    let p = c
        .list_container_instances(ListContainerInstancesRequest {
            max_results: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut both = p.items.clone();
    both.extend(
        c.list_container_instances(ListContainerInstancesRequest {
            max_results: Some(1),
            next_token: p.next_token,
            ..Default::default()
        })
        .await
        .unwrap()
        .items,
    );
    let mut want = vec![a, b];
    want.sort();
    assert_eq!(both, want);
}

#[tokio::test]
async fn run_task_honours_constraints_strategies_and_the_runtime_platform() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (x86, _sx) = instance(&c, 4096, "x86_64").await;
    let (arm, _sa) = instance(&c, 1024, "arm64").await;
    c.put_attributes(PutAttributesRequest {
        attributes: vec![on(&arm, attr("stack", "prod"))],
        ..Default::default()
    })
    .await
    .unwrap();
    register_td(&c, WEB).await;
    // Default: most free memory, the x86 one. memberOf steers it to the arm one.
    let t = c.run_task(run("web")).await.unwrap().tasks.remove(0);
    assert_eq!(t.container_instance_arn.as_deref(), Some(x86.as_str()));
    let r = c
        .run_task(RunTaskRequest {
            placement_constraints: vec![PlacementConstraint {
                r#type: "memberOf".into(),
                expression: Some("attribute:stack == prod".into()),
            }],
            ..run("web")
        })
        .await
        .unwrap();
    assert_eq!(
        r.tasks[0].container_instance_arn.as_deref(),
        Some(arm.as_str())
    );
    // distinctInstance: two more tasks, but both instances already run one.
    let r = c
        .run_task(RunTaskRequest {
            count: Some(2),
            placement_constraints: vec![PlacementConstraint {
                r#type: "distinctInstance".into(),
                expression: None,
            }],
            ..run("web")
        })
        .await
        .unwrap();
    assert!(r.tasks.is_empty());
    assert!(r
        .failures
        .iter()
        .all(|f| f.reason == "DistinctInstance placement constraint unsatisfied."));
    // binpack memory: the fuller arm instance.
    let r = c
        .run_task(RunTaskRequest {
            placement_strategy: vec![PlacementStrategy {
                r#type: "binpack".into(),
                field: Some("memory".into()),
            }],
            ..run("web")
        })
        .await
        .unwrap();
    assert_eq!(
        r.tasks[0].container_instance_arn.as_deref(),
        Some(arm.as_str())
    );
    // A task definition's own constraint, and its runtimePlatform.
    register_td(
        &c,
        r#"{"family":"armonly","runtimePlatform":{"cpuArchitecture":"ARM64","operatingSystemFamily":"LINUX"},
            "containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#,
    )
    .await;
    let r = c.run_task(run("armonly")).await.unwrap();
    assert_eq!(
        r.tasks[0].container_instance_arn.as_deref(),
        Some(arm.as_str())
    );
    register_td(
        &c,
        r#"{"family":"pinned","placementConstraints":[{"type":"memberOf","expression":"attribute:stack == dev"}],
            "containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#,
    )
    .await;
    let r = c.run_task(run("pinned")).await.unwrap();
    assert!(r.tasks.is_empty());
    assert!(
        r.failures
            .iter()
            .all(|f| f.reason == "MemberOf placement constraint unsatisfied."),
        "{:?}",
        r.failures
    );
    register_td(
        &c,
        r#"{"family":"win","runtimePlatform":{"operatingSystemFamily":"WINDOWS_SERVER_2022_CORE"},
            "containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#,
    )
    .await;
    let r = c.run_task(run("win")).await.unwrap();
    assert!(r.tasks.is_empty());
    assert!(r.failures.iter().all(|f| f.reason == "ATTRIBUTE"));
    assert!(r.failures[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("ecs.os-family=WINDOWS_SERVER_2022_CORE"));

    // Malformed placement is refused by name and creates nothing.
    let before = c
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .items
        .len();
    for (req, want) in [
        (
            RunTaskRequest {
                placement_strategy: vec![PlacementStrategy {
                    r#type: "binpack".into(),
                    field: Some("disk".into()),
                }],
                ..run("web")
            },
            "placementStrategy[0]",
        ),
        (
            RunTaskRequest {
                placement_constraints: vec![PlacementConstraint {
                    r#type: "memberOf".into(),
                    expression: Some("attribute:stack === prod".into()),
                }],
                ..run("web")
            },
            "placementConstraints[0].expression",
        ),
        (
            RunTaskRequest {
                placement_strategy: (0..6)
                    .map(|_| PlacementStrategy {
                        r#type: "random".into(),
                        field: None,
                    })
                    .collect(),
                ..run("web")
            },
            "at most 5",
        ),
    ] {
        let e = c.run_task(req).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(e.to_string().contains(want), "{want}: {e}");
    }
    assert_eq!(
        c.list_tasks(ListTasksRequest::default())
            .await
            .unwrap()
            .items
            .len(),
        before
    );
}

#[tokio::test]
async fn start_task_places_on_the_named_instances_or_says_why_not() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (a, _sa) = instance(&c, 1024, "x86_64").await;
    let (small, _ss) = instance(&c, 32, "x86_64").await;
    let (gone, sg) = instance(&c, 1024, "x86_64").await;
    drop(sg);
    register_td(&c, WEB).await;
    let a_id = berth_proto::arn::short_id("container-instance", &a)
        .unwrap()
        .to_string();
    let r = c
        .start_task(StartTaskRequest {
            task_definition: "web".into(),
            container_instances: vec![
                a_id.clone(),
                a.clone(),
                small.clone(),
                gone.clone(),
                "feedface".into(),
            ],
            started_by: Some("me".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 2, "{:?}", r.failures);
    assert!(r
        .tasks
        .iter()
        .all(|t| t.container_instance_arn.as_deref() == Some(a.as_str())
            && t.started_by.as_deref() == Some("me")
            && t.group.as_deref() == Some("family:web")));
    let reasons: Vec<(String, String)> = r
        .failures
        .iter()
        .map(|f| (f.arn.clone(), f.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (small, "RESOURCE:MEMORY".to_string()),
            (gone, "AGENT".to_string()),
            (
                berth_proto::arn::container_instance("default", "feedface"),
                "MISSING".to_string()
            ),
        ]
    );
    // The tasks are what the agent of `a` is told to run.
    assert_eq!(
        c.list_tasks(ListTasksRequest {
            container_instance: Some(a.clone()),
            ..Default::default()
        })
        .await
        .unwrap()
        .items
        .len(),
        2
    );
    for (req, want) in [
        (
            StartTaskRequest {
                task_definition: "web".into(),
                ..Default::default()
            },
            "containerInstances",
        ),
        (
            StartTaskRequest {
                task_definition: "web".into(),
                container_instances: (0..11).map(|i| format!("i{i}")).collect(),
                ..Default::default()
            },
            "containerInstances",
        ),
        (
            StartTaskRequest {
                task_definition: "web".into(),
                container_instances: vec![a.clone()],
                reference_id: Some("ref".into()),
                ..Default::default()
            },
            "referenceId",
        ),
    ] {
        let e = c.start_task(req).await.unwrap_err();
        assert!(e.to_string().starts_with(want), "{want}: {e}");
    }
    // A deregistered instance is INACTIVE.
    c.deregister_container_instance(DeregisterContainerInstanceRequest {
        container_instance: a.clone(),
        force: Some(true),
        ..Default::default()
    })
    .await
    .unwrap();
    let r = c
        .start_task(StartTaskRequest {
            task_definition: "web".into(),
            container_instances: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.failures[0].reason, "INACTIVE");
}

/// A privileged container needs ECS's privileged-container capability: an instance whose agent
/// does not advertise it is named ATTRIBUTE with the capability in the detail.
#[tokio::test]
async fn a_privileged_task_needs_the_capability() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (_plain, _s) = instance(&c, 1024, "x86_64").await;
    register_td(
        &c,
        r#"{"family":"priv","containerDefinitions":[{"name":"a","image":"busybox","memory":64,"privileged":true}]}"#,
    )
    .await;
    let r = c.run_task(run("priv")).await.unwrap();
    assert!(r.tasks.is_empty());
    assert_eq!(r.failures[0].reason, "ATTRIBUTE");
    assert!(r.failures[0]
        .detail
        .as_deref()
        .unwrap()
        .contains("com.amazonaws.ecs.capability.privileged-container"));
}

/// ListContainerInstances' status is one of ECS's container instance statuses (or INACTIVE),
/// parsed into ContainerInstanceStatus; anything else is refused by name.
#[tokio::test]
async fn list_container_instances_refuses_an_unknown_status() {
    let c = controller_on(Arc::new(MemoryStore::default())).await;
    let (arn, _s) = instance(&c, 1024, "x86_64").await;
    for bad in ["RUNNING", "active", ""] {
        let e = c
            .list_container_instances(ListContainerInstancesRequest {
                status: Some(bad.into()),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(
            e.to_string().contains(&format!(
                "status: '{bad}' is not a container instance status"
            )),
            "{e}"
        );
    }
    assert_eq!(list(&c, Some("ACTIVE"), None).await, vec![arn]);
    assert!(list(&c, Some("DRAINING"), None).await.is_empty());
}
