//! RunTask's overrides against the registration rules, StartTask through the fields table,
//! ListTasks' startedBy alone, MISSING failures (review of issue 6).

use super::super::test_support::{controller, instance_with, register_td as register};
use super::super::*;
use berth_proto::v1::*;

/// A cluster "default" with one instance of 4096 cpu and 4096 MiB whose agent is in step;
/// returns the instance's ARN and the session that keeps it a candidate.
async fn with_instance(c: &Controller) -> (String, crate::fleet::Attached) {
    let subnet = Attribute {
        name: "berth.subnet.s".into(),
        value: Some("bridge:10.9.0.0/24".into()),
        ..Default::default()
    };
    instance_with(c, 4096, 4096, vec![subnet]).await
}

fn overrides(json: &str) -> TaskOverride {
    serde_json::from_str(json).unwrap()
}

/// RunTask's overrides follow RegisterTaskDefinition's rules on what they make: task cpu within
/// 128-196608, each container's memory and memoryReservation within the task memory and each
/// other, the containers' cpu within the task cpu. Refused with InvalidParameterException
/// naming the override, and nothing runs.
#[tokio::test]
async fn run_task_overrides_follow_the_registration_rules() {
    let c = controller();
    let _s = with_instance(&c).await;
    register(
        &c,
        r#"{"family":"web","containerDefinitions":[
            {"name":"a","image":"x","cpu":256,"memory":512,"memoryReservation":256},
            {"name":"b","image":"x","cpu":256,"memory":64}]}"#,
    )
    .await;
    let run = |o: &str| RunTaskRequest {
        task_definition: "web".into(),
        overrides: Some(overrides(o)),
        ..Default::default()
    };
    for (o, field, words) in [
        (r#"{"cpu":"1"}"#, "overrides.cpu:", "128-196608"),
        (r#"{"cpu":"999999"}"#, "overrides.cpu:", "128-196608"),
        (r#"{"cpu":"200 vCPU"}"#, "overrides.cpu:", "128-196608"),
        // The containers' 512 cpu do not fit in 256; one container's 256 not in 128.
        (
            r#"{"cpu":"256"}"#,
            "overrides:",
            "adds up to 512, more than overrides.cpu 256",
        ),
        (
            r#"{"cpu":"128"}"#,
            "containerDefinitions[0].cpu:",
            "overrides.cpu 128",
        ),
        (
            r#"{"cpu":"512","containerOverrides":[{"name":"b","cpu":300}]}"#,
            "overrides:",
            "adds up to 556, more than overrides.cpu 512",
        ),
        // A 64 MiB task memory under a 512 MiB container limit.
        (
            r#"{"memory":"64"}"#,
            "containerDefinitions[0].memory:",
            "overrides.memory 64",
        ),
        (
            r#"{"memory":"300","containerOverrides":[{"name":"a","memory":400}]}"#,
            "overrides.containerOverrides[a].memory:",
            "overrides.memory 300",
        ),
        // Memory lowered under the definition's memoryReservation.
        (
            r#"{"containerOverrides":[{"name":"a","memory":128}]}"#,
            "containerDefinitions[0].memoryReservation:",
            "its memory limit 128",
        ),
        (
            r#"{"containerOverrides":[{"name":"b","memoryReservation":100}]}"#,
            "overrides.containerOverrides[b].memoryReservation:",
            "its memory limit 64",
        ),
        (
            r#"{"containerOverrides":[{"name":"b","memory":5}]}"#,
            "overrides.containerOverrides[b].memory:",
            "minimum of 6",
        ),
        (
            r#"{"containerOverrides":[{"name":"b","cpu":-1}]}"#,
            "overrides.containerOverrides[b].cpu:",
            "negative",
        ),
    ] {
        let e = c.run_task(run(o)).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException", "{o}");
        let msg = e.to_string();
        assert!(msg.starts_with(field) && msg.contains(words), "{o}: {msg}");
    }
    let all = c.list_tasks(ListTasksRequest::default()).await.unwrap();
    assert!(all.items.is_empty(), "{:?}", all.items);
    // The same changes, made consistently, run.
    for o in [
        r#"{"cpu":"0.5 vCPU","memory":"1 GB"}"#,
        r#"{"memory":"300","containerOverrides":[{"name":"a","memory":200,"memoryReservation":100}]}"#,
        r#"{"cpu":"1024","containerOverrides":[{"name":"b","cpu":768}]}"#,
    ] {
        let r = c.run_task(run(o)).await.unwrap();
        assert_eq!(r.tasks.len(), 1, "{o}: {:?}", r.failures);
    }
    // FARGATE: overridden sizes must still be one of Fargate's cpu/memory pairs.
    register(
        &c,
        r#"{"family":"fg","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],
            "cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"x"}]}"#,
    )
    .await;
    let fargate = |o: &str| RunTaskRequest {
        task_definition: "fg".into(),
        launch_type: Some("FARGATE".into()),
        overrides: Some(overrides(o)),
        network_configuration: Some(
            serde_json::from_str(r#"{"awsvpcConfiguration":{"subnets":["s"]}}"#).unwrap(),
        ),
        ..Default::default()
    };
    let e = c
        .run_task(fargate(r#"{"memory":"8192"}"#))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("not a FARGATE combination"), "{e}");
    let r = c.run_task(fargate(r#"{"memory":"1024"}"#)).await.unwrap();
    assert_eq!(r.tasks.len(), 1, "{:?}", r.failures);
}

/// StartTask goes through the fields table as RunTask does: networkConfiguration is accepted
/// as RunTask accepts it, enableExecuteCommand is shown on the task, and unsupported members
/// (referenceId included) are refused together by name, its overrides' included.
#[tokio::test]
async fn start_task_follows_the_fields_table() {
    let c = controller();
    let (instance, _s) = with_instance(&c).await;
    register(
        &c,
        r#"{"family":"web","networkMode":"awsvpc","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    let req: StartTaskRequest = serde_json::from_str(&format!(
        r#"{{"taskDefinition":"web","containerInstances":["{instance}"],"enableExecuteCommand":true,
            "networkConfiguration":{{"awsvpcConfiguration":{{"subnets":["s"]}}}},"propagateTags":"NONE"}}"#
    ))
    .unwrap();
    let r = c.start_task(req).await.unwrap();
    assert_eq!(r.tasks.len(), 1, "{:?}", r.failures);
    assert_eq!(r.tasks[0].enable_execute_command, Some(true));

    let req: StartTaskRequest = serde_json::from_str(&format!(
        r#"{{"taskDefinition":"web","containerInstances":["{instance}"],"referenceId":"r1",
            "enableECSManagedTags":true,"propagateTags":"TASK_DEFINITION",
            "overrides":{{"inferenceAcceleratorOverrides":[{{"deviceName":"d","deviceType":"t"}}]}}}}"#
    ))
    .unwrap();
    let e = c.start_task(req).await.unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    let msg = e.to_string();
    for field in [
        "referenceId:",
        "enableECSManagedTags:",
        "propagateTags:",
        "overrides.inferenceAcceleratorOverrides:",
    ] {
        assert!(msg.contains(field), "{field} in {msg}");
    }
    // RunTask refuses referenceId the same way.
    let e = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            reference_id: Some("r1".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().starts_with("referenceId:"), "{e}");
}

/// ListTasks: "When you specify startedBy as the filter, it must be the only filter that you
/// use": refused naming both, as family with serviceName is; with desiredStatus it filters.
#[tokio::test]
async fn started_by_is_the_only_filter() {
    let c = controller();
    let (instance, _s) = with_instance(&c).await;
    register(
        &c,
        r#"{"family":"web","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    c.run_task(RunTaskRequest {
        task_definition: "web".into(),
        started_by: Some("me".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let by_me = |f: fn(&mut ListTasksRequest)| {
        let mut r = ListTasksRequest {
            started_by: Some("me".into()),
            ..Default::default()
        };
        f(&mut r);
        r
    };
    for (req, other) in [
        (by_me(|r| r.family = Some("web".into())), "family"),
        (by_me(|r| r.launch_type = Some("EC2".into())), "launchType"),
        (by_me(|r| r.service_name = Some("s".into())), "serviceName"),
    ] {
        let e = c.list_tasks(req).await.unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        let msg = e.to_string();
        assert!(msg.contains("startedBy") && msg.contains(other), "{msg}");
    }
    let e = c
        .list_tasks(ListTasksRequest {
            launch_type: Some("MOON".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("launchType: 'MOON'"), "{e}");
    let mut req = by_me(|_| {});
    req.container_instance = Some(instance);
    let e = c.list_tasks(req).await.unwrap_err();
    assert!(e.to_string().contains("containerInstance"), "{e}");
    let listed = c
        .list_tasks(by_me(|r| r.desired_status = Some("RUNNING".into())))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
}

/// An unknown id is a MISSING failure with the full ARN, in DescribeContainerInstances as in
/// DescribeTasks and StartTask; a given ARN is kept as given.
#[tokio::test]
async fn missing_failures_name_full_arns() {
    let c = controller();
    let _s = with_instance(&c).await;
    let r = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![
                "feedface".into(),
                "arn:aws:ecs:x:1:container-instance/default/beef".into(),
            ],
            ..Default::default()
        })
        .await
        .unwrap();
    let failures: Vec<(&str, &str)> = r
        .failures
        .iter()
        .map(|f| (f.arn.as_str(), f.reason.as_str()))
        .collect();
    let want = berth_proto::arn::container_instance("default", "feedface");
    assert_eq!(
        failures,
        [
            (want.as_str(), "MISSING"),
            ("arn:aws:ecs:x:1:container-instance/default/beef", "MISSING")
        ]
    );
    let r = c
        .describe_tasks(DescribeTasksRequest {
            tasks: vec!["feedface".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        r.failures[0].arn,
        berth_proto::arn::task("default", "feedface")
    );
    assert_eq!(r.failures[0].reason, "MISSING");
}

/// Tag keys follow one rule wherever they are given: creating, tagging, untagging.
#[tokio::test]
async fn tag_keys_follow_one_rule() {
    let c = controller();
    let _s = with_instance(&c).await;
    let cluster = c
        .describe_clusters(DescribeClustersRequest::default())
        .await
        .unwrap()
        .clusters[0]
        .cluster_arn
        .clone();
    for key in ["", "aws:x", &"k".repeat(129)] {
        let e = c
            .tag_resource(TagResourceRequest {
                resource_arn: cluster.clone(),
                tags: vec![Tag {
                    key: key.into(),
                    value: "v".into(),
                }],
            })
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("tags[0].key:"), "{key}: {e}");
        let e = c
            .untag_resource(UntagResourceRequest {
                resource_arn: cluster.clone(),
                tag_keys: vec![key.into()],
            })
            .await
            .unwrap_err();
        assert!(e.to_string().starts_with("tagKeys[0]:"), "{key}: {e}");
    }
}

/// Task cpu and memory share one parser: plain numbers, or vCPU / GB counted in 1024s.
#[test]
fn task_sizes_parse_alike() {
    use super::super::validation::{parse_task_cpu, parse_task_memory};
    assert_eq!(parse_task_cpu("0.5 vCPU"), Some(512));
    assert_eq!(parse_task_cpu("2vcpu"), Some(2048));
    assert_eq!(parse_task_cpu("512"), Some(512));
    assert_eq!(parse_task_cpu("1 GB"), None);
    assert_eq!(parse_task_memory("2 GB"), Some(2048));
    assert_eq!(parse_task_memory("0.5gb"), Some(512));
    assert_eq!(parse_task_memory("300"), Some(300));
    assert_eq!(parse_task_memory("1 vCPU"), None);
}

/// GetTaskSecrets' view of a task: the instance it is assigned to, whether it is STOPPED, and
/// each container's secret references (never values); an unknown task has none.
#[tokio::test]
async fn task_secret_refs_name_the_instance_and_the_references() {
    let c = controller();
    let (instance, _s) = with_instance(&c).await;
    register(
        &c,
        r#"{"family":"sec","containerDefinitions":[
            {"name":"a","image":"x","memory":64,"secrets":[{"name":"DB","valueFrom":"arn:aws:ssm:r:1:parameter/db"}]},
            {"name":"b","image":"x","memory":64,"repositoryCredentials":{"credentialsParameter":"reg/creds"}}]}"#,
    )
    .await;
    let run = c
        .run_task(RunTaskRequest {
            task_definition: "sec".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let arn = run.tasks[0].task_arn.clone();
    let refs = c.task_secret_refs(&arn).await.unwrap();
    assert_eq!(refs.container_instance_arn, instance);
    assert!(!refs.stopped);
    assert_eq!(refs.secrets.len(), 1);
    assert_eq!(refs.secrets[0].0, "a");
    assert_eq!(refs.secrets[0].1.value_from, "arn:aws:ssm:r:1:parameter/db");
    assert_eq!(
        refs.registry,
        vec![("b".to_string(), "reg/creds".to_string())]
    );
    let unknown = berth_proto::arn::task("default", "00000000000000000000000000000000");
    assert!(c.task_secret_refs(&unknown).await.is_none());
}

/// Issue 9: a task with an EFS volume or a docker volume of another driver than local is placed
/// only where an agent maps it to NFS (the attribute `berth.nfs.<key>` its --nfs-volume
/// advertises); local and task-scoped volumes need nothing.
#[test]
fn nfs_volumes_require_the_agents_mapping_attribute() {
    let td: TaskDefinition = serde_json::from_str(
        r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i"}],"volumes":[
          {"name":"scratch"},
          {"name":"local","dockerVolumeConfiguration":{"driver":"local","scope":"task"}},
          {"name":"shared","efsVolumeConfiguration":{"fileSystemId":"fs-0123abcd"}},
          {"name":"data","dockerVolumeConfiguration":{"driver":"rexray/ebs","scope":"shared"}}]}"#,
    )
    .unwrap();
    let got = crate::service::tasks::required_attributes(&td, &td.container_definitions).unwrap();
    assert_eq!(
        got,
        vec![
            ("berth.nfs.fs-0123abcd".to_string(), None),
            ("berth.nfs.data".to_string(), None)
        ]
    );
}
