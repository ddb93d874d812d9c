//! Operator errors, CLI parsing and bad input that never reaches containerd: the real binaries
//! with a controller only (no containerd, no agent). These need neither root nor containerd and
//! are never skipped; they fail when the binaries are not built.

use berth_tests::{assert_fails, Cluster, IMAGE};

#[test]
fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let c = Cluster::controller_only("badinput");
    let n = c.name.clone();
    std::fs::write(c.dir.join("broken.json"), "{\"family\": \"x\",").unwrap();
    let broken = format!("file://{}", c.dir.join("broken.json").display());
    assert_fails(
        &c,
        &["register-task-definition", "--cli-input-json", &broken],
        252,
        "Invalid JSON",
    );
    let unknown_key = r#"{"family": "x", "containerDefinitionz": []}"#;
    assert_fails(
        &c,
        &["register-task-definition", "--cli-input-json", unknown_key],
        252,
        "containerDefinitionz",
    );
    let rules = [
        (
            r#"{"containerDefinitions":[{"name":"a","image":"i","memory":8}]}"#,
            "family",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"image":"i","memory":8}]}"#,
            "containerDefinitions[0].name",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","memory":8}]}"#,
            "containerDefinitions[0].image",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":8},{"name":"a","image":"i","memory":8}]}"#,
            "unique",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":8,"essential":false}]}"#,
            "essential",
        ),
        (
            r#"{"family":"f","memory":"64","containerDefinitions":[{"name":"a","image":"i","memory":128}]}"#,
            "more than the task memory",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":8,"memoryReservation":16}]}"#,
            "memoryReservation",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":-1}]}"#,
            "containerDefinitions[0].memory",
        ),
        (
            r#"{"family":"f","containerDefinitions":[{"name":"a","image":"i","memory":8,"cpu":-5}]}"#,
            "containerDefinitions[0].cpu",
        ),
        (
            r#"{"family":"f","cpu":"0","containerDefinitions":[{"name":"a","image":"i","memory":8}]}"#,
            "cpu",
        ),
        (
            r#"{"family":"f","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"512","containerDefinitions":[{"name":"a","image":"i"}]}"#,
            "awsvpc",
        ),
        (
            r#"{"family":"f","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],"cpu":"256","memory":"3072","containerDefinitions":[{"name":"a","image":"i"}]}"#,
            "FARGATE combination",
        ),
        (
            r#"{"family":"f","networkMode":"overlay","containerDefinitions":[{"name":"a","image":"i","memory":8}]}"#,
            "networkMode",
        ),
    ];
    for (json, needle) in rules {
        assert_fails(
            &c,
            &["register-task-definition", "--cli-input-json", json],
            254,
            needle,
        );
    }
    let eleven: Vec<String> = (0..11)
        .map(|i| format!(r#"{{"name":"c{i}","image":"i","memory":8}}"#))
        .collect();
    let json = format!(
        r#"{{"family":"f","containerDefinitions":[{}]}}"#,
        eleven.join(",")
    );
    assert_fails(
        &c,
        &["register-task-definition", "--cli-input-json", &json],
        254,
        "at most 10",
    );
    // Nothing was registered.
    let all = c.json(&["list-task-definitions", "--status", "ALL"]);
    assert!(
        all["taskDefinitionArns"].as_array().unwrap().is_empty(),
        "{all}"
    );

    // Unknown names.
    assert_fails(
        &c,
        &[
            "describe-tasks",
            "--cluster",
            "no-such-cluster",
            "--tasks",
            "x",
        ],
        254,
        "ClusterNotFoundException",
    );
    assert_fails(
        &c,
        &["run-task", "--cluster", &n, "--task-definition", "nope:1"],
        254,
        "Unable to describe task definition",
    );
    assert_fails(
        &c,
        &[
            "stop-task",
            "--cluster",
            &n,
            "--task",
            "0123456789abcdef0123456789abcdef",
        ],
        254,
        "InvalidParameterException",
    );
    let missing = c.json(&[
        "describe-tasks",
        "--cluster",
        &n,
        "--tasks",
        "0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(missing["failures"][0]["reason"], "MISSING");
    assert_fails(
        &c,
        &["describe-task-definition", "--task-definition", "nope"],
        254,
        "ClientException",
    );

    // Placement with no container instance, and RunTask's own limits (placement failures on an
    // instance are in ecs.rs: they need an agent).
    let mem_hog = c.register(&format!(
        r#"{{"family":"big-mem","networkMode":"none","memory":"16777216","containerDefinitions":[{{"name":"a","image":"{IMAGE}"}}]}}"#
    ));
    assert_fails(
        &c,
        &["run-task", "--cluster", &n, "--task-definition", &mem_hog],
        254,
        "(InvalidParameterException) when calling the RunTask operation: No Container Instances were found in your cluster.",
    );
    assert_fails(
        &c,
        &[
            "run-task",
            "--cluster",
            &n,
            "--task-definition",
            &mem_hog,
            "--count",
            "11",
        ],
        254,
        "count",
    );
    c.ok(&["create-cluster", "--cluster-name", "empty"]);
    assert_fails(
        &c,
        &[
            "run-task",
            "--cluster",
            "empty",
            "--task-definition",
            &mem_hog,
        ],
        254,
        "No Container Instances were found in your cluster.",
    );
    let listed = c.json(&["list-tasks", "--cluster", &n]);
    assert!(listed["taskArns"].as_array().unwrap().is_empty());
    assert_fails(
        &c,
        &["create-cluster", "--cluster-name", "bad name!"],
        254,
        "clusterName",
    );
    assert_fails(&c, &["list-clusters", "--output", "yaml"], 252, "--output");
}

#[test]
fn operator_errors_are_one_clear_line() {
    let dir = std::env::temp_dir().join(format!("berth-it-operator-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let run = |bin: &str, args: &[&str]| {
        std::process::Command::new(berth_tests::bin(bin))
            .args(args)
            .arg("--config")
            .arg(dir.join("none.conf"))
            .output()
            .unwrap()
    };
    let sock = dir.join("no-containerd.sock");
    let out = run(
        "berth-agent",
        &[
            "--containerd-socket",
            sock.to_str().unwrap(),
            "--data-dir",
            dir.join("a").to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("cannot reach containerd") && err.contains("no-containerd.sock"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    let out = run("berth-agent", &["--no-such-flag"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
    let out = run("berth-controller", &["--listen", "not-an-address"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
    let help = run("berth-agent", &["--help"]);
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--controller",
        "--cluster",
        "--data-dir",
        "--containerd-socket",
        "--containerd-namespace",
        "--cgroup-parent",
        "BERTH_CLUSTER",
        "[default: berth]",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 6: every argument is checked before anything is sent, so a typo in `--query` leaves the
/// controller as it was (it used to register, or run, and then fail with the result lost).
#[test]
fn a_bad_query_is_refused_before_anything_is_sent() {
    let c = Cluster::controller_only("badquery");
    let td = format!(
        r#"{{"family": "q", "containerDefinitions": [{{"name": "a", "image": "{IMAGE}", "memory": 8}}]}}"#
    );
    assert_fails(
        &c,
        &[
            "register-task-definition",
            "--cli-input-json",
            &td,
            "--query",
            "taskDefinition.[",
        ],
        252,
        "Bad value for --query",
    );
    let families = c.json(&["list-task-definitions"]);
    assert_eq!(
        families["taskDefinitionArns"].as_array().map(Vec::len),
        Some(0),
        "{families}"
    );
}

/// Issue 6: a failure with nothing to add has no `detail` key, as ECS answers it.
#[test]
fn failures_omit_an_empty_detail() {
    let c = Cluster::controller_only("nodetail");
    let v = c.json(&[
        "describe-tasks",
        "--cluster",
        &c.name,
        "--tasks",
        "0123456789abcdef0123456789abcdef",
    ]);
    assert_eq!(v["failures"][0]["reason"], "MISSING", "{v}");
    assert!(v["failures"][0].get("detail").is_none(), "{v}");
    let v = c.json(&["describe-clusters", "--clusters", "nowhere"]);
    assert!(v["failures"][0].get("detail").is_none(), "{v}");
}

/// The unsupported fields tests/fixtures/every-field-task-definition.json sets, as the error
/// names them (the table in controller/src/service/fields.rs).
const EVERY_FIELD_REFUSED: [&str; 9] = [
    "proxyConfiguration",
    "inferenceAccelerators",
    "enableFaultInjection",
    "containerDefinitions[0].resourceRequirements",
    "containerDefinitions[0].firelensConfiguration",
    "containerDefinitions[0].credentialSpecs",
    "volumes[3].s3filesVolumeConfiguration",
    "volumes[4].fsxWindowsFileServerVolumeConfiguration",
    "volumes[5].configuredAtLaunch",
];

/// Whether `big` holds everything `small` does (objects may have more members: ECS's defaults).
fn json_contains(
    big: &serde_json::Value,
    small: &serde_json::Value,
    at: &str,
) -> Result<(), String> {
    use serde_json::Value;
    match (big, small) {
        (Value::Object(b), Value::Object(s)) => s.iter().try_for_each(|(k, sv)| {
            let bv = b.get(k).ok_or(format!("{at}.{k} is missing"))?;
            json_contains(bv, sv, &format!("{at}.{k}"))
        }),
        (Value::Array(b), Value::Array(s)) if b.len() == s.len() => b
            .iter()
            .zip(s)
            .enumerate()
            .try_for_each(|(i, (bv, sv))| json_contains(bv, sv, &format!("{at}[{i}]"))),
        _ if big == small => Ok(()),
        _ => Err(format!("{at}: {big} instead of {small}")),
    }
}

/// Issue 6: a real task definition with every ECS field set, given to
/// `register-task-definition --cli-input-json file://…`, is refused (ClientException, exit 254)
/// naming every unsupported field in one message and registering nothing; without those fields
/// it registers, and describe-task-definition shows every field given.
#[test]
fn every_field_task_definition_registers_but_for_the_unsupported() {
    let c = Cluster::controller_only("everyfield");
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/every-field-task-definition.json");
    let arg = format!("file://{}", fixture.display());
    let out = c.berth(&["register-task-definition", "--cli-input-json", &arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(err.contains("(ClientException)"), "{err}");
    for field in EVERY_FIELD_REFUSED {
        assert!(
            err.contains(&format!("{field}:")),
            "{field} is not named in: {err}"
        );
    }
    assert!(
        err.contains(
            "resourceRequirements: types GPU, InferenceAccelerator are not supported by Berth"
        ),
        "{err}"
    );
    let all = c.json(&["list-task-definitions", "--status", "ALL"]);
    assert_eq!(all["taskDefinitionArns"], serde_json::json!([]), "{all}");

    let mut td: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&fixture).unwrap()).unwrap();
    for path in EVERY_FIELD_REFUSED {
        let (parent, key) = path.rsplit_once('.').unwrap_or(("", path));
        let mut at = &mut td;
        for seg in parent.split('.').filter(|s| !s.is_empty()) {
            let (name, index) = seg.split_once('[').unwrap();
            at = &mut at[name][index.trim_end_matches(']').parse::<usize>().unwrap()];
        }
        at.as_object_mut().unwrap().remove(key).unwrap();
    }
    let registered = c.register(&td.to_string());
    assert_eq!(registered, "every-field:1");
    let described = c.json(&[
        "describe-task-definition",
        "--task-definition",
        "every-field:1",
    ]);
    td.as_object_mut().unwrap().remove("tags");
    if let Err(e) = json_contains(&described["taskDefinition"], &td, "taskDefinition") {
        panic!("{e}\n{described:#}");
    }
}
