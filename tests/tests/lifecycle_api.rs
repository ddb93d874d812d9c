//! Issue 9's task-definition and RunTask rules through the real controller and `berth` CLI:
//! what `aws ecs register-task-definition` users see (ClientException naming the field, exit
//! 254, nothing stored), the defaults describe-task-definition shows, and RunTask's
//! environmentFiles overrides. No agent or containerd: the rules are the controller's.

use berth_tests::{assert_fails, Cluster};

/// Writes `json` to a file in the cluster's directory; returns its `file://` argument.
fn input(c: &Cluster, name: &str, json: &str) -> String {
    let file = c.dir.join(name);
    std::fs::write(&file, json).expect("writing input");
    format!("file://{}", file.display())
}

#[test]
fn refused_definitions_name_the_field_and_store_nothing() {
    let c = Cluster::controller_only("lifecycle-refused");
    let cases = [
        (
            "cycle",
            r#"{"family":"cyc","containerDefinitions":[
              {"name":"a","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"START"}]},
              {"name":"b","image":"i","memory":16,"essential":false,"volumesFrom":[{"sourceContainer":"a"}]}]}"#,
            "containerDefinitions[0]: the containers wait for each other in a cycle, so none of them could start: 'a' (dependsOn →) 'b' (volumesFrom →) 'a'",
        ),
        (
            "healthy-without-check",
            r#"{"family":"hc","containerDefinitions":[
              {"name":"a","image":"i","memory":16,"dependsOn":[{"containerName":"b","condition":"HEALTHY"}]},
              {"name":"b","image":"i","memory":16}]}"#,
            "containerDefinitions[0].dependsOn[0].condition: HEALTHY needs container 'b' to have a healthCheck",
        ),
        (
            "s3-env",
            r#"{"family":"env","containerDefinitions":[{"name":"a","image":"i","memory":16,
              "environmentFiles":[{"value":"arn:aws:s3:::bucket/a.env","type":"s3"}]}]}"#,
            "containerDefinitions[0].environmentFiles[0].type: s3 is not supported by Berth",
        ),
        (
            "fargate-stop",
            r#"{"family":"fg","requiresCompatibilities":["FARGATE"],"networkMode":"awsvpc","cpu":"256","memory":"512",
              "containerDefinitions":[{"name":"a","image":"i","stopTimeout":121}]}"#,
            "containerDefinitions[0].stopTimeout: 121 for container 'a' is outside 2-120 seconds",
        ),
        (
            "interval",
            r#"{"family":"iv","containerDefinitions":[{"name":"a","image":"i","memory":16,
              "healthCheck":{"command":["CMD-SHELL","true"],"interval":4}}]}"#,
            "containerDefinitions[0].healthCheck.interval: 4 is outside 5-300",
        ),
    ];
    for (name, json, needle) in cases {
        let arg = input(&c, &format!("{name}.json"), json);
        assert_fails(
            &c,
            &["register-task-definition", "--cli-input-json", &arg],
            254,
            needle,
        );
        assert_fails(
            &c,
            &["register-task-definition", "--cli-input-json", &arg],
            254,
            "(ClientException)",
        );
    }
    let all = c.json(&["list-task-definitions", "--status", "ALL"]);
    assert_eq!(all["taskDefinitionArns"], serde_json::json!([]), "{all}");
}

#[test]
fn describe_shows_health_check_defaults_and_run_task_checks_environment_file_overrides() {
    let c = Cluster::controller_only("lifecycle-defaults");
    let td = c.register(
        r#"{"family":"hc","containerDefinitions":[{"name":"a","image":"i","memory":16,
            "healthCheck":{"command":["CMD-SHELL","true"]},
            "environmentFiles":[{"value":"/etc/berth/a.env","type":"file"}]}]}"#,
    );
    let v = c.json(&["describe-task-definition", "--task-definition", &td]);
    let h = &v["taskDefinition"]["containerDefinitions"][0]["healthCheck"];
    assert_eq!(
        (
            &h["interval"],
            &h["timeout"],
            &h["retries"],
            h.get("startPeriod")
        ),
        (
            &serde_json::json!(30),
            &serde_json::json!(5),
            &serde_json::json!(3),
            None
        ),
        "{v}"
    );
    let run = input(
        &c,
        "run.json",
        &format!(
            r#"{{"cluster":"{}","taskDefinition":"hc","overrides":{{"containerOverrides":[
                {{"name":"a","environmentFiles":[{{"value":"arn:aws:s3:::b/a.env","type":"s3"}}]}}]}}}}"#,
            c.name
        ),
    );
    assert_fails(
        &c,
        &["run-task", "--cli-input-json", &run],
        254,
        "(InvalidParameterException)",
    );
    assert_fails(
        &c,
        &["run-task", "--cli-input-json", &run],
        254,
        "overrides.containerOverrides[a].environmentFiles[0].type: s3 is not supported by Berth",
    );
    let tasks = c.json(&["list-tasks", "--cluster", &c.name]);
    assert_eq!(tasks["taskArns"], serde_json::json!([]), "{tasks}");
}
