//! Decoding without a server: the guide's commands, the model's spellings and types, user maps
//! left alone, and the bad-input matrix (each refused in one line, exit 252).

use super::*;
use serde_json::json;

fn parse_args(args: &[&str]) -> Result<Invocation, CliError> {
    let mut all = vec!["berth", "ecs"];
    all.extend_from_slice(args);
    parse(all.into_iter().map(String::from).collect())
}

fn req(args: &[&str]) -> Value {
    match parse_args(args) {
        Ok(Invocation {
            action: Action::Call(c),
            ..
        }) => c.request,
        Ok(_) => panic!("{args:?}: not a call"),
        Err(e) => panic!("{args:?}: {e}"),
    }
}

fn refused(args: &[&str]) -> String {
    match parse_args(args) {
        Ok(_) => panic!("{args:?} was accepted"),
        Err(e) => {
            assert_eq!(e.exit_code(), 252, "{args:?}: {e}");
            let text = e.to_string();
            assert_eq!(text.lines().count(), 1, "{args:?}: not one line: {text}");
            text
        }
    }
}

fn tmp(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("berth-cli-decoding-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    format!("file://{}", p.display())
}

#[test]
fn guide_commands_build_ecs_requests() {
    assert_eq!(
        req(&[
            "create-cluster",
            "--cluster-name",
            "production-cluster",
            "--tags",
            "key=Environment,value=Production",
            "key=Team,value=DevOps",
            "--region",
            "us-east-1"
        ]),
        json!({"clusterName": "production-cluster", "tags": [
            {"key": "Environment", "value": "Production"}, {"key": "Team", "value": "DevOps"}]})
    );
    // A unique prefix of a flag, and a comma-separated list.
    assert_eq!(
        req(&[
            "describe-clusters",
            "--cluster",
            "production-cluster",
            "--include",
            "STATISTICS,SETTINGS,CONFIGURATIONS"
        ]),
        json!({"clusters": ["production-cluster"], "include": ["STATISTICS", "SETTINGS", "CONFIGURATIONS"]})
    );
    let r = req(&[
        "run-task",
        "--cluster",
        "c",
        "--task-definition",
        "batch-job:1",
        "--count",
        "2",
        "--overrides",
        r#"{"containerOverrides":[{"name":"b","environment":[{"name":"BATCH_ID","value":"2025-10-28"}]}]}"#,
    ]);
    assert_eq!(r["count"], 2);
    let decoded: berth_proto::v1::RunTaskRequest = serde_json::from_value(r).unwrap();
    assert_eq!(
        decoded.overrides.unwrap().container_overrides[0].environment[0].value,
        "2025-10-28"
    );
}

#[test]
fn keys_in_another_letter_case_take_the_models_spelling() {
    // The guide writes awsVpcConfiguration; the model says awsvpcConfiguration.
    let r = req(&[
        "run-task",
        "--task-definition",
        "batch-job:1",
        "--network-configuration",
        "awsVpcConfiguration={subnets=[subnet-12345],securityGroups=[sg-12345678]}",
    ]);
    assert_eq!(
        r["networkConfiguration"],
        json!({"awsvpcConfiguration": {"subnets": ["subnet-12345"], "securityGroups": ["sg-12345678"]}})
    );
    let r = req(&[
        "register-task-definition",
        "--cli-input-json",
        r#"{"Family": "f", "containerDefinitions": [{"NAME": "a", "image": "i"}]}"#,
    ]);
    assert_eq!(
        r,
        json!({"family": "f", "containerDefinitions": [{"name": "a", "image": "i"}]})
    );
    let e = refused(&[
        "register-task-definition",
        "--cli-input-json",
        r#"{"family": "f", "Family": "g"}"#,
    ]);
    assert!(
        e.contains("\"Family\" and \"family\" are both the parameter family"),
        "{e}"
    );
}

/// The old decoder renamed a key everywhere once it matched a model key in another case, so a
/// docker label or a log option spelled like a model key (here `Image`, fixed to `image` for
/// the container) was rewritten too. Keys of user maps are the user's: never touched.
#[test]
fn keys_inside_user_maps_are_never_touched() {
    let td = r#"{
      "family": "f",
      "containerDefinitions": [{
        "name": "a", "Image": "nginx",
        "dockerLabels": {"Image": "label-value", "com.example.Name": "x", "awsVpcConfiguration": "y"},
        "logConfiguration": {"logDriver": "json-file", "options": {"Max-Size": "10m", "NAME": "n"}},
        "environment": [{"name": "Image", "value": "v"}]
      }],
      "volumes": [{"name": "v", "dockerVolumeConfiguration": {"driverOpts": {"Type": "nfs"}, "labels": {"Name": "l"}}}],
      "tags": [{"key": "Name", "value": "Image"}]
    }"#;
    let r = req(&["register-task-definition", "--cli-input-json", td]);
    let cd = &r["containerDefinitions"][0];
    assert_eq!(cd["image"], "nginx");
    assert_eq!(
        cd["dockerLabels"],
        json!({"Image": "label-value", "com.example.Name": "x", "awsVpcConfiguration": "y"})
    );
    assert_eq!(
        cd["logConfiguration"]["options"],
        json!({"Max-Size": "10m", "NAME": "n"})
    );
    assert_eq!(cd["environment"][0]["name"], "Image");
    assert_eq!(
        r["volumes"][0]["dockerVolumeConfiguration"],
        json!({"driverOpts": {"Type": "nfs"}, "labels": {"Name": "l"}})
    );
    let decoded: berth_proto::v1::RegisterTaskDefinitionRequest =
        serde_json::from_value(r).unwrap();
    assert_eq!(
        decoded.container_definitions[0]
            .docker_labels
            .get("Image")
            .map(String::as_str),
        Some("label-value")
    );
}

#[test]
fn an_unknown_key_is_named_once_with_its_path() {
    let e = refused(&[
        "register-task-definition",
        "--cli-input-json",
        r#"{"family": "x", "containerDefinitions": [{"name": "a", "imagez": "i"}]}"#,
    ]);
    assert!(
        e.starts_with(
            "Parameter validation failed: Unknown parameter in containerDefinitions[0]: \"imagez\", must be one of: name, image,"
        ),
        "{e}"
    );
    assert_eq!(e.matches("imagez").count(), 1, "{e}");
    let e = refused(&[
        "register-task-definition",
        "--cli-input-json",
        r#"{"family": "x", "containerDefinitionz": []}"#,
    ]);
    assert!(
        e.contains("Unknown parameter in input: \"containerDefinitionz\""),
        "{e}"
    );
    assert_eq!(e.matches("containerDefinitionz").count(), 1, "{e}");
    assert_eq!(e.matches("container_definitions").count(), 0, "{e}");
    let e = refused(&[
        "run-task",
        "--task-definition",
        "t",
        "--overrides",
        "containerOverrides=[{name=a,cpux=1}]",
    ]);
    assert!(
        e.contains("Unknown parameter in overrides.containerOverrides[0]: \"cpux\""),
        "{e}"
    );
}

#[test]
fn shorthand_values_are_typed_by_the_model() {
    let r = req(&[
        "register-task-definition",
        "--family",
        "f",
        "--container-definitions",
        "name=app,image=busybox,essential=false,memory=128,command=sleep,60",
        "name=side,image=busybox,readonlyRootFilesystem=TRUE,entryPoint=sh",
    ]);
    assert_eq!(
        r["containerDefinitions"],
        json!([
            {"name": "app", "image": "busybox", "essential": false, "memory": 128, "command": ["sleep", "60"]},
            // A single value where the model has a list.
            {"name": "side", "image": "busybox", "readonlyRootFilesystem": true, "entryPoint": ["sh"]}
        ])
    );
    // A docker label that reads like a boolean stays text: the map's values are strings.
    let r = req(&[
        "register-task-definition",
        "--family",
        "f",
        "--container-definitions",
        "name=a,image=i,dockerLabels={enabled=true,port=80}",
    ]);
    assert_eq!(
        r["containerDefinitions"][0]["dockerLabels"],
        json!({"enabled": "true", "port": "80"})
    );
    let r = req(&[
        "run-task",
        "--task-definition",
        "t",
        "--network-configuration",
        "awsvpcConfiguration={subnets=subnet-1,assignPublicIp=ENABLED}",
        "--overrides",
        r"containerOverrides=[{name=a,environment=[{name=LIST,value=a\,b}]}]",
    ]);
    assert_eq!(
        r["networkConfiguration"]["awsvpcConfiguration"]["subnets"],
        json!(["subnet-1"])
    );
    assert_eq!(
        r["overrides"]["containerOverrides"][0]["environment"][0]["value"],
        "a,b"
    );
    // JSON stays JSON: no text is turned into a boolean there.
    let e = refused(&[
        "register-task-definition",
        "--cli-input-json",
        r#"{"family": "f", "containerDefinitions": [{"name": "a", "image": "i", "essential": "false"}]}"#,
    ]);
    assert!(
        e.contains("Invalid type for parameter containerDefinitions[0].essential, value: false, type: string, valid types: boolean"),
        "{e}"
    );
}

#[test]
fn list_flags_take_words_commas_and_json_lists() {
    let want = json!({"cluster": "c", "tasks": ["a", "b"]});
    assert_eq!(
        req(&["describe-tasks", "--cluster", "c", "--tasks", "a", "b"]),
        want
    );
    assert_eq!(
        req(&["describe-tasks", "--cluster", "c", "--tasks", "a,b"]),
        want
    );
    assert_eq!(
        req(&[
            "describe-tasks",
            "--cluster",
            "c",
            "--tasks",
            r#"["a","b"]"#
        ]),
        want
    );
    assert_eq!(
        req(&["describe-tasks", "--tasks", r"a\,b"]),
        json!({"tasks": ["a,b"]})
    );
}

#[test]
fn booleans_are_flags_as_in_the_aws_cli() {
    assert_eq!(
        req(&[
            "deregister-container-instance",
            "--container-instance",
            "i",
            "--force"
        ]),
        json!({"containerInstance": "i", "force": true})
    );
    assert_eq!(
        req(&[
            "deregister-container-instance",
            "--container-instance",
            "i",
            "--no-force"
        ]),
        json!({"containerInstance": "i", "force": false})
    );
    assert_eq!(
        req(&[
            "start-task",
            "--task-definition",
            "t",
            "--container-instances",
            "i1",
            "i2",
            "--enable-ecs-managed-tags",
        ]),
        json!({"taskDefinition": "t", "containerInstances": ["i1", "i2"], "enableECSManagedTags": true})
    );
    refused(&[
        "deregister-container-instance",
        "--container-instance",
        "i",
        "--force",
        "--no-force",
    ]);
}

#[test]
fn every_operation_has_its_flags_and_the_new_ones_use_aws_names() {
    for (op, flags) in [
        ("put-attributes", &["--cluster", "--attributes"][..]),
        ("delete-attributes", &["--cluster", "--attributes"]),
        (
            "list-attributes",
            &["--target-type", "--attribute-name", "--attribute-value"],
        ),
        ("tag-resource", &["--resource-arn", "--tags"]),
        ("untag-resource", &["--resource-arn", "--tag-keys"]),
        ("list-tags-for-resource", &["--resource-arn"]),
        (
            "list-task-definition-families",
            &["--family-prefix", "--status"],
        ),
        ("delete-task-definitions", &["--task-definitions"]),
        (
            "update-cluster",
            &[
                "--cluster",
                "--settings",
                "--configuration",
                "--service-connect-defaults",
            ],
        ),
        ("update-cluster-settings", &["--cluster", "--settings"]),
        (
            "start-task",
            &[
                "--reference-id",
                "--propagate-tags",
                "--enable-execute-command",
            ],
        ),
    ] {
        let cmd = command();
        let ecs = cmd.find_subcommand("ecs").unwrap();
        let sub = ecs.find_subcommand(op).unwrap_or_else(|| panic!("no {op}"));
        for f in flags {
            let name = f.trim_start_matches("--");
            assert!(
                sub.get_arguments().any(|a| a.get_long() == Some(name)),
                "{op} lacks {f}"
            );
        }
    }
    assert_eq!(
        req(&[
            "untag-resource",
            "--resource-arn",
            "arn",
            "--tag-keys",
            "a",
            "b"
        ]),
        json!({"resourceArn": "arn", "tagKeys": ["a", "b"]})
    );
    assert_eq!(
        req(&[
            "update-cluster",
            "--cluster",
            "c",
            "--settings",
            "name=containerInsights,value=enabled"
        ]),
        json!({"cluster": "c", "settings": [{"name": "containerInsights", "value": "enabled"}]})
    );
}

#[test]
fn cli_input_json_and_yaml_with_flags_overriding() {
    let yaml = tmp(
        "td.yaml",
        "family: web\ncontainerDefinitions:\n- name: a\n  image: nginx\n  memory: 64\n  dockerLabels:\n    Owner: me\n",
    );
    let r = req(&[
        "register-task-definition",
        "--cli-input-yaml",
        &yaml,
        "--family",
        "other",
    ]);
    assert_eq!(
        r,
        json!({"family": "other", "containerDefinitions": [{"name": "a", "image": "nginx", "memory": 64, "dockerLabels": {"Owner": "me"}}]})
    );
    let json = tmp("run.json", r#"{"cluster": "c", "taskDefinition": "t"}"#);
    assert_eq!(
        req(&["run-task", "--cli-input-json", &json, "--count", "3"]),
        json!({"cluster": "c", "taskDefinition": "t", "count": 3})
    );
}

#[test]
fn skeletons_come_from_the_model() {
    let s = skeleton(".berth.v1.RunTaskRequest", false);
    assert_eq!(s["taskDefinition"], "");
    assert_eq!(s["count"], 0);
    assert_eq!(s["tags"], json!([{"key": "", "value": ""}]));
    assert_eq!(
        s["overrides"]["containerOverrides"][0]["environment"][0]["name"],
        ""
    );
    let s = skeleton(".berth.v1.ContainerDefinition", false);
    assert_eq!(s["dockerLabels"], json!({"KeyName": ""}));
    assert_eq!(s["essential"], true);
    let s = skeleton(".berth.v1.ListTasksResponse", true);
    assert_eq!(
        s,
        json!({"taskArns": ["taskArns"], "nextToken": "nextToken"})
    );
    for (arg, want) in [
        (None, SkeletonKind::Input),
        (Some("yaml-input"), SkeletonKind::YamlInput),
        (Some("output"), SkeletonKind::Output),
    ] {
        let mut args = vec![
            "run-task",
            "--task-definition",
            "t",
            "--generate-cli-skeleton",
        ];
        args.extend(arg);
        match parse_args(&args).unwrap().action {
            Action::Skeleton { op, kind } => {
                assert_eq!(op.api, "RunTask");
                assert_eq!(kind, want);
            }
            _ => panic!("{args:?}"),
        }
    }
}

#[test]
fn resume_tokens_are_botocores() {
    let t = ResumeToken {
        next_token: Some("abc".into()),
        truncate: 2,
    };
    // base64 of Python's json.dumps of the token dict.
    assert_eq!(
        t.encode(),
        "eyJuZXh0VG9rZW4iOiAiYWJjIiwgImJvdG9fdHJ1bmNhdGVfYW1vdW50IjogMn0="
    );
    assert_eq!(ResumeToken::decode(&t.encode()).unwrap(), t);
    let first = ResumeToken {
        next_token: None,
        truncate: 5,
    };
    assert_eq!(ResumeToken::decode(&first.encode()).unwrap(), first);
}

#[test]
fn paging_flags_exist_only_where_aws_pages_and_conflict_with_one_call() {
    let p = match parse_args(&[
        "list-tasks",
        "--cluster",
        "c",
        "--page-size",
        "7",
        "--max-items",
        "3",
    ])
    .unwrap()
    .action
    {
        Action::Call(c) => c.paging,
        _ => panic!(),
    };
    assert_eq!(
        p,
        Paging {
            paginate: true,
            max_items: Some(3),
            starting: None,
            page_size: Some(7)
        }
    );
    refused(&["describe-tasks", "--tasks", "a", "--max-items", "3"]);
    refused(&["list-tasks", "--max-items", "3", "--no-paginate"]);
    refused(&["list-tasks", "--page-size", "3", "--max-results", "5"]);
}

/// The bad-input matrix: every flag kind with a malformed value, and each global; refused before
/// anything is sent, in one line, exit 252.
#[test]
fn bad_input_is_refused_in_one_line() {
    let missing = "file:///nonexistent/berth/td.json";
    let not_object = tmp("list.json", "[1, 2]");
    let cases: &[(&[&str], &str)] = &[
        // an integer flag
        (
            &["run-task", "--task-definition", "t", "--count", "two"],
            "Invalid type for parameter count, value: two",
        ),
        // a boolean inside shorthand
        (
            &[
                "register-task-definition",
                "--family",
                "f",
                "--container-definitions",
                "name=a,essential=maybe",
            ],
            "containerDefinitions[0].essential, value: maybe",
        ),
        // a structure flag: broken shorthand, broken JSON
        (
            &[
                "run-task",
                "--task-definition",
                "t",
                "--overrides",
                "containerOverrides=[{name=a",
            ],
            "Error parsing parameter '--overrides': Expected: ',', received: 'EOF' at position 27",
        ),
        (
            &[
                "run-task",
                "--task-definition",
                "t",
                "--overrides",
                "{\"cpu\": ",
            ],
            "Error parsing parameter '--overrides': Invalid JSON",
        ),
        // a structure given where a list is expected, and vice versa
        (
            &[
                "run-task",
                "--task-definition",
                "t",
                "--overrides",
                "{\"containerOverrides\": {}}",
            ],
            "overrides.containerOverrides",
        ),
        // a list flag: broken JSON list
        (
            &["describe-tasks", "--tasks", "[\"a\","],
            "Error parsing parameter '--tasks': Invalid JSON",
        ),
        // a list of structures: not shorthand
        (
            &["create-cluster", "--tags", "key"],
            "Error parsing parameter '--tags': Expected: '='",
        ),
        // an integer out of the model's range
        (
            &[
                "run-task",
                "--task-definition",
                "t",
                "--count",
                "99999999999",
            ],
            "Parameter validation failed for RunTask",
        ),
        // file:// that does not exist
        (
            &["register-task-definition", "--cli-input-json", missing],
            "Unable to load paramfile file:///nonexistent/berth/td.json",
        ),
        (
            &["run-task", "--task-definition", missing],
            "Unable to load paramfile",
        ),
        // --cli-input-json that is no object
        (
            &["register-task-definition", "--cli-input-json", &not_object],
            "the input must be an object",
        ),
        (
            &["register-task-definition", "--cli-input-json", "\"x\""],
            "the input must be an object",
        ),
        (
            &["register-task-definition", "--cli-input-yaml", "family: [a"],
            "Invalid YAML",
        ),
        // an unknown key
        (
            &[
                "run-task",
                "--cli-input-json",
                "{\"taskDefinitionz\": \"x\"}",
            ],
            "Unknown parameter in input: \"taskDefinitionz\"",
        ),
        // globals
        (
            &["list-clusters", "--query", "clusterArns["],
            "Bad value for --query clusterArns[",
        ),
        (
            &["list-clusters", "--output", "xml"],
            "argument --output: Invalid choice 'xml'",
        ),
        (
            &["list-clusters", "--starting-token", "not-base64!"],
            "Bad value for --starting-token",
        ),
        (&["list-clusters", "--max-items", "0"], "--max-items"),
        (&["list-clusters", "--page-size", "x"], "--page-size"),
        // unknown flag, unknown operation
        (&["list-clusters", "--no-such-flag", "x"], "--no-such-flag"),
        (&["list-clusterz"], "list-clusterz"),
        (
            &["wait", "services-stable", "--cluster", "c"],
            "the following arguments are required: --services",
        ),
    ];
    for (args, needle) in cases {
        let e = refused(args);
        assert!(e.contains(needle), "{args:?}: expected '{needle}' in: {e}");
    }
}

#[test]
fn timestamps_are_taken_as_the_aws_cli_takes_them() {
    let ts = |s: &str| super::timestamp(s).map(|v| v.as_str().unwrap_or_default().to_string());
    assert_eq!(
        ts("2026-11-29T12:00:00Z").unwrap(),
        "2026-11-29T12:00:00+00:00"
    );
    assert_eq!(
        ts("2026-11-29T12:00:00").unwrap(),
        "2026-11-29T12:00:00+00:00"
    );
    assert_eq!(
        ts("2026-11-29T13:30:00+01:30").unwrap(),
        "2026-11-29T12:00:00+00:00"
    );
    assert_eq!(ts("2026-11-29").unwrap(), "2026-11-29T00:00:00+00:00");
    assert_eq!(ts("1795953600").unwrap(), "2026-11-29T12:00:00+00:00");
    for bad in [
        "tomorrow",
        "2026-13-01",
        "2026-11-29T25:00:00",
        "2026-11-29T12:00:00+1",
    ] {
        assert!(ts(bad).is_none(), "{bad}");
    }
}

#[test]
fn every_service_has_its_operations_under_its_own_name() {
    let call = |args: &[&str]| match parse(args.iter().map(|s| s.to_string()).collect()) {
        Ok(Invocation {
            action: Action::Call(c),
            ..
        }) => c,
        Ok(_) => panic!("{args:?}: not a call"),
        Err(e) => panic!("{args:?}: {e}"),
    };
    let c = call(&[
        "berth",
        "ssm",
        "create-activation",
        "--iam-role",
        "ecsAnywhereRole",
        "--registration-limit",
        "3",
        "--expiration-date",
        "2026-11-30T00:00:00",
    ]);
    assert_eq!(c.op.path(), "/berth.v1.Ssm/CreateActivation");
    assert_eq!(
        c.request,
        json!({"IamRole": "ecsAnywhereRole", "RegistrationLimit": 3,
               "ExpirationDate": "2026-11-30T00:00:00+00:00"})
    );
    let c = call(&[
        "berth",
        "secretsmanager",
        "create-secret",
        "--name",
        "db",
        "--secret-string",
        "x",
    ]);
    assert_eq!(c.op.path(), "/berth.v1.SecretsManager/CreateSecret");
    let c = call(&["berth", "iam", "list-access-keys"]);
    assert_eq!(c.op.path(), "/berth.v1.Iam/ListAccessKeys");
    // AWS's PascalCase members are flags in kebab case, and required ones are named so.
    let e = parse(
        ["berth", "ssm", "delete-activation"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("--activation-id"), "{e}");
    // An operation is found only under its own service.
    assert!(parse(
        ["berth", "ecs", "create-activation", "--iam-role", "r"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    )
    .is_err());
}
