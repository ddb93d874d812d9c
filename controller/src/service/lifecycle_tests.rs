//! Issue 9 on the service layer: health reports shown in DescribeTasks, the healthCheck
//! defaults DescribeTaskDefinition shows, RunTask's environmentFiles overrides and FARGATE's
//! timeout range at RunTask.

use super::test_support::{controller, instance_with, register_td};
use super::*;
use berth_proto::v1::*;

async fn session(c: &Controller, instance_arn: &str) -> SessionInfo {
    c.open_session(&AgentHello {
        container_instance_arn: instance_arn.into(),
        protocol_version: berth_proto::link::PROTOCOL_VERSION,
        state_epoch: "e1".into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

async fn described(c: &Controller, task_arn: &str) -> Task {
    c.describe_tasks(DescribeTasksRequest {
        tasks: vec![task_arn.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .tasks
    .remove(0)
}

fn health(t: &Task) -> (String, Vec<(String, String)>) {
    (
        t.health_status.clone(),
        t.containers
            .iter()
            .map(|c| (c.name.clone(), c.health_status.clone()))
            .collect(),
    )
}

fn pairs(task: &str, containers: &[(&str, &str)]) -> (String, Vec<(String, String)>) {
    (
        task.to_string(),
        containers
            .iter()
            .map(|(n, h)| (n.to_string(), h.to_string()))
            .collect(),
    )
}

#[tokio::test]
async fn health_reports_show_in_describe_tasks_and_unknown_until_reported() {
    let c = controller();
    let (instance, _attached) = instance_with(&c, 1024, 1024, vec![]).await;
    register_td(
        &c,
        r#"{"family":"web","containerDefinitions":[
            {"name":"app","image":"x","memory":64,"healthCheck":{"command":["CMD-SHELL","true"]}},
            {"name":"side","image":"x","memory":64,"essential":false}]}"#,
    )
    .await;
    let r = c
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let arn = r.tasks[0].task_arn.clone();
    // ECS shows UNKNOWN before any check, and for a container without one.
    assert_eq!(
        health(&described(&c, &arn).await),
        pairs("UNKNOWN", &[("app", "UNKNOWN"), ("side", "UNKNOWN")])
    );
    let s = session(&c, &instance).await;
    let report = |seq, app: Option<&str>, task: Option<&str>| TaskStateChange {
        seq,
        task_arn: arn.clone(),
        last_status: "RUNNING".into(),
        containers: vec![
            ContainerStateChange {
                name: "app".into(),
                last_status: "RUNNING".into(),
                health_status: app.map(str::to_string),
                ..Default::default()
            },
            ContainerStateChange {
                name: "side".into(),
                last_status: "RUNNING".into(),
                ..Default::default()
            },
        ],
        health_status: task.map(str::to_string),
        ..Default::default()
    };
    c.apply_state_change(&s, report(1, Some("HEALTHY"), Some("HEALTHY")))
        .await
        .unwrap();
    assert_eq!(
        health(&described(&c, &arn).await),
        pairs("HEALTHY", &[("app", "HEALTHY"), ("side", "UNKNOWN")])
    );
    // Health moves both ways.
    c.apply_state_change(&s, report(2, Some("UNHEALTHY"), Some("UNHEALTHY")))
        .await
        .unwrap();
    assert_eq!(
        health(&described(&c, &arn).await),
        pairs("UNHEALTHY", &[("app", "UNHEALTHY"), ("side", "UNKNOWN")])
    );
    // A report without health keeps what is shown.
    c.apply_state_change(&s, report(3, None, None))
        .await
        .unwrap();
    assert_eq!(
        health(&described(&c, &arn).await).0,
        "UNHEALTHY".to_string()
    );
    // A health status the contract does not define is refused, never shown.
    assert!(c
        .apply_state_change(&s, report(4, Some("SICK"), None))
        .await
        .is_err());
    assert_eq!(
        health(&described(&c, &arn).await),
        pairs("UNHEALTHY", &[("app", "UNHEALTHY"), ("side", "UNKNOWN")])
    );
}

#[tokio::test]
async fn describe_task_definition_shows_the_health_check_defaults() {
    let c = controller();
    register_td(
        &c,
        r#"{"family":"hc","containerDefinitions":[
            {"name":"a","image":"x","memory":64,"healthCheck":{"command":["CMD","/bin/true"],"timeout":9}}]}"#,
    )
    .await;
    let td = c.describe_task_definition("hc").await.unwrap();
    let h = td.task_definition.unwrap().container_definitions[0]
        .health_check
        .clone()
        .unwrap();
    assert_eq!(
        (h.interval, h.timeout, h.retries, h.start_period),
        (Some(30), Some(9), Some(3), None)
    );
    // A refused registration stores nothing.
    let e = c
        .register_task_definition(
            serde_json::from_str(
                r#"{"family":"hc","containerDefinitions":[{"name":"a","image":"x","memory":64,
                "healthCheck":{"command":["CMD","/bin/true"],"interval":1}}]}"#,
            )
            .unwrap(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "ClientException");
    assert!(
        e.to_string()
            .contains("containerDefinitions[0].healthCheck.interval: 1"),
        "{e}"
    );
    assert_eq!(
        c.describe_task_definition("hc")
            .await
            .unwrap()
            .task_definition
            .unwrap()
            .revision,
        1
    );
}

#[tokio::test]
async fn run_task_environment_file_overrides_are_files_and_replace_the_definitions() {
    let c = controller();
    let (instance, _attached) = instance_with(&c, 1024, 1024, vec![]).await;
    register_td(
        &c,
        r#"{"family":"env","containerDefinitions":[{"name":"a","image":"x","memory":64,
            "environmentFiles":[{"value":"/etc/berth/a.env","type":"file"}]}]}"#,
    )
    .await;
    let run = |files: &str| {
        let req: RunTaskRequest = serde_json::from_str(&format!(
            r#"{{"taskDefinition":"env","overrides":{{"containerOverrides":[{{"name":"a","environmentFiles":{files}}}]}}}}"#
        ))
        .unwrap();
        c.run_task(req)
    };
    let e = run(r#"[{"value":"arn:aws:s3:::b/k.env","type":"s3"}]"#)
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(
        e.to_string()
            .contains("overrides.containerOverrides[a].environmentFiles[0].type: s3 is not supported by Berth"),
        "{e}"
    );
    let e = run(r#"[{"value":"b.env","type":"file"}]"#)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("overrides.containerOverrides[a].environmentFiles[0].value: 'b.env' must be an absolute path"),
        "{e}"
    );
    let r = run(r#"[{"value":"/srv/b.env","type":"file"}]"#)
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 1, "{r:?}");
    // The agent is sent the override's files instead of the definition's.
    let id = berth_proto::arn::short_id("container-instance", &instance).unwrap();
    let desired = c.desired_tasks(id, 1, &mut SessionSent::default()).await;
    let files = &desired.tasks[0]
        .task_definition
        .as_ref()
        .unwrap()
        .container_definitions[0]
        .environment_files;
    assert_eq!(
        files.iter().map(|f| f.value.as_str()).collect::<Vec<_>>(),
        ["/srv/b.env"]
    );
}

#[tokio::test]
async fn fargate_run_task_refuses_timeouts_beyond_120_seconds() {
    let c = controller();
    let (_instance, _attached) = instance_with(&c, 4096, 4096, vec![]).await;
    register_td(
        &c,
        r#"{"family":"fg","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512",
            "containerDefinitions":[{"name":"a","image":"x","stopTimeout":120}]}"#,
    )
    .await;
    // A revision stored before registration checked the range.
    {
        let mut st = c.state.lock().await;
        let r = st
            .task_definitions
            .get_mut("fg")
            .and_then(|revs| revs.get_mut(&1))
            .and_then(|r| r.task_definition.as_mut())
            .unwrap();
        r.container_definitions[0].stop_timeout = Some(300);
    }
    let e = c
        .run_task(RunTaskRequest {
            task_definition: "fg".into(),
            launch_type: Some("FARGATE".into()),
            network_configuration: Some(NetworkConfiguration {
                awsvpc_configuration: Some(AwsVpcConfiguration {
                    subnets: vec!["s".into()],
                    ..Default::default()
                }),
            }),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(
        e.to_string().contains(
            "containerDefinitions[0].stopTimeout: 300 for container 'a' is outside 2-120 seconds"
        ),
        "{e}"
    );
}
