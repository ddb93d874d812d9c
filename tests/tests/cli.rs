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
    // A required member is missing: the CLI refuses it, as aws does, before sending.
    assert_fails(
        &c,
        &[
            "register-task-definition",
            "--cli-input-json",
            r#"{"containerDefinitions":[{"name":"a","image":"i","memory":8}]}"#,
        ],
        252,
        "Missing required parameter in input: \"family\"",
    );
    let rules = [
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
    assert_fails(&c, &["list-clusters", "--output", "xml"], 252, "--output");
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
    // Beyond loopback without TLS or signed calls: refused, before anything listens or is
    // stored.
    let exposed = dir.join("exposed");
    let child = std::process::Command::new(berth_tests::bin("berth-controller"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--data-dir",
            exposed.to_str().unwrap(),
            "--tls",
            "off",
            "--auth",
            "off",
        ])
        .arg("--config")
        .arg(dir.join("none.conf"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A controller that serves instead of refusing would never exit: wait for its exit with a
    // generous deadline, then kill it and fail rather than hang.
    let pid = child.id().to_string();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let out = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid])
                .status();
            panic!("berth-controller served on 0.0.0.0 without --insecure");
        }
    };
    let status = out.status;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!status.success());
    assert!(
        err.contains(
            "refusing to listen on 0.0.0.0:0 without TLS (--tls off) and signed calls (--auth off)"
        ) && err.contains("--insecure"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!exposed.exists(), "a refused start must create nothing");
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
const EVERY_FIELD_REFUSED: [&str; 16] = [
    "proxyConfiguration",
    "inferenceAccelerators",
    "enableFaultInjection",
    "containerDefinitions[0].resourceRequirements",
    "containerDefinitions[0].firelensConfiguration",
    "containerDefinitions[0].credentialSpecs",
    "containerDefinitions[0].logConfiguration.secretOptions",
    "volumes[3].s3filesVolumeConfiguration",
    "volumes[1].dockerVolumeConfiguration.driverOpts",
    "volumes[1].dockerVolumeConfiguration.labels",
    "volumes[2].efsVolumeConfiguration.transitEncryption",
    "volumes[2].efsVolumeConfiguration.transitEncryptionPort",
    "volumes[2].efsVolumeConfiguration.authorizationConfig.accessPointId",
    "volumes[2].efsVolumeConfiguration.authorizationConfig.iam",
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
            at = match seg.split_once('[') {
                Some((name, index)) => {
                    &mut at[name][index.trim_end_matches(']').parse::<usize>().unwrap()]
                }
                None => &mut at[seg],
            };
        }
        at.as_object_mut().unwrap().remove(key).unwrap();
    }
    // authorizationConfig held only refused members: nothing of it is left to register.
    td["volumes"][2]["efsVolumeConfiguration"]
        .as_object_mut()
        .unwrap()
        .remove("authorizationConfig");
    // The fixture is awsvpc, where ECS refuses a container's hostname, extraHosts (the task
    // has one namespace) and links (bridge mode only): refused by name, then registered
    // without them.
    let file = c.dir.join("every-field-awsvpc.json");
    std::fs::write(&file, td.to_string()).unwrap();
    let out = c.berth(&[
        "register-task-definition",
        "--cli-input-json",
        &format!("file://{}", file.display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(
        err.contains(
            "containerDefinitions[0].hostname: is not supported in the awsvpc network mode"
        ),
        "{err}"
    );
    for key in ["hostname", "extraHosts", "links"] {
        td["containerDefinitions"][0]
            .as_object_mut()
            .unwrap()
            .remove(key)
            .unwrap();
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

/// What the controller holds, as the list calls show it: equal before and after a refused
/// command means the command changed nothing.
fn snapshot(c: &Cluster) -> Vec<serde_json::Value> {
    vec![
        c.json(&["list-clusters"]),
        c.json(&["list-task-definitions", "--status", "ALL"]),
        c.json(&["list-tasks", "--cluster", &c.name]),
        c.json(&[
            "list-tasks",
            "--cluster",
            &c.name,
            "--desired-status",
            "STOPPED",
        ]),
        c.json(&["list-container-instances", "--cluster", &c.name]),
        c.json(&["describe-clusters", "--clusters", &c.name]),
    ]
}

/// Issue 6: the bad-input matrix through the `berth` binary. Every kind of flag with a
/// malformed value, a missing file://, a non-object --cli-input-json, a bad --query, an unknown
/// key, a bad --output, an unreachable endpoint: each gets ONE clear line on stderr, nothing on
/// stdout, the aws CLI's exit code (252 usage, 254 service, 255 connection) and the controller
/// is as it was.
#[test]
fn bad_input_matrix_gets_one_line_and_changes_nothing() {
    let c = Cluster::controller_only("matrix");
    let n = c.name.clone();
    c.register(&format!(
        r#"{{"family": "keep", "containerDefinitions": [{{"name": "a", "image": "{IMAGE}", "memory": 8}}]}}"#
    ));
    let before = snapshot(&c);
    let missing = format!("file://{}", c.dir.join("no-such.json").display());
    let list = c.dir.join("list.json");
    std::fs::write(&list, "[{\"family\": \"x\"}]").unwrap();
    let list = format!("file://{}", list.display());
    let td = format!(
        r#"{{"family": "new", "containerDefinitions": [{{"name": "a", "image": "{IMAGE}", "memory": 8}}]}}"#
    );
    let cases: Vec<(Vec<&str>, i32, &str)> = vec![
        // A member the model requires is missing: refused before anything is sent.
        (
            vec!["run-task", "--cluster", &n],
            252,
            "the following arguments are required: --task-definition",
        ),
        (
            vec!["describe-tasks", "--cluster", &n],
            252,
            "the following arguments are required: --tasks",
        ),
        (
            vec!["wait", "tasks-running", "--cluster", &n],
            252,
            "the following arguments are required: --tasks",
        ),
        // A string flag whose file:// is missing.
        (
            vec!["run-task", "--cluster", &n, "--task-definition", &missing],
            252,
            "Unable to load paramfile",
        ),
        // An integer flag.
        (
            vec![
                "run-task",
                "--cluster",
                &n,
                "--task-definition",
                "keep:1",
                "--count",
                "two",
            ],
            252,
            "Invalid type for parameter count, value: two",
        ),
        (
            vec![
                "run-task",
                "--cluster",
                &n,
                "--task-definition",
                "keep:1",
                "--count",
                "99999999999",
            ],
            252,
            "Parameter validation failed for RunTask",
        ),
        // A boolean flag given a value.
        (
            vec![
                "deregister-container-instance",
                "--cluster",
                &n,
                "--container-instance",
                "i",
                "--force",
                "yes",
            ],
            252,
            "yes",
        ),
        // A structure flag: shorthand, JSON, a boolean inside, an unknown key inside.
        (
            vec![
                "run-task",
                "--cluster",
                &n,
                "--task-definition",
                "keep:1",
                "--overrides",
                "containerOverrides=[{name=a",
            ],
            252,
            "Error parsing parameter '--overrides': Expected: ','",
        ),
        (
            vec![
                "run-task",
                "--cluster",
                &n,
                "--task-definition",
                "keep:1",
                "--overrides",
                "{\"cpu\": ",
            ],
            252,
            "Error parsing parameter '--overrides': Invalid JSON",
        ),
        (
            vec![
                "run-task",
                "--cluster",
                &n,
                "--task-definition",
                "keep:1",
                "--overrides",
                "containerOverrides=[{name=a,cpux=1}]",
            ],
            252,
            "Unknown parameter in overrides.containerOverrides[0]: \"cpux\"",
        ),
        (
            vec![
                "register-task-definition",
                "--family",
                "new",
                "--container-definitions",
                "name=a,image=i,essential=maybe",
            ],
            252,
            "containerDefinitions[0].essential, value: maybe",
        ),
        // A list flag: a broken JSON list.
        (
            vec!["describe-tasks", "--cluster", &n, "--tasks", "[\"a\","],
            252,
            "Error parsing parameter '--tasks': Invalid JSON",
        ),
        // A list of structures.
        (
            vec!["create-cluster", "--cluster-name", "other", "--tags", "key"],
            252,
            "Error parsing parameter '--tags': Expected: '='",
        ),
        // --cli-input-json: missing file, not an object, broken, unknown key; --cli-input-yaml.
        (
            vec!["register-task-definition", "--cli-input-json", &missing],
            252,
            "Unable to load paramfile",
        ),
        (
            vec!["register-task-definition", "--cli-input-json", &list],
            252,
            "must be an object",
        ),
        (
            vec![
                "register-task-definition",
                "--cli-input-json",
                "{\"family\": \"x\",",
            ],
            252,
            "Invalid JSON",
        ),
        (
            vec![
                "register-task-definition",
                "--cli-input-json",
                "{\"family\": \"x\", \"containerDefinitionz\": []}",
            ],
            252,
            "Unknown parameter in input: \"containerDefinitionz\"",
        ),
        (
            vec!["register-task-definition", "--cli-input-yaml", "family: [x"],
            252,
            "Invalid YAML",
        ),
        // Globals and paging.
        (
            vec![
                "register-task-definition",
                "--cli-input-json",
                &td,
                "--query",
                "taskDefinition.[",
            ],
            252,
            "Bad value for --query",
        ),
        (
            vec![
                "register-task-definition",
                "--cli-input-json",
                &td,
                "--output",
                "xml",
            ],
            252,
            "argument --output: Invalid choice 'xml'",
        ),
        (
            vec!["list-task-definitions", "--starting-token", "bm90IGpzb24="],
            252,
            "Bad value for --starting-token",
        ),
        (
            vec!["list-task-definitions", "--max-items", "0"],
            252,
            "--max-items",
        ),
        (
            vec!["list-task-definitions", "--max-items", "2", "--no-paginate"],
            252,
            "--no-paginate",
        ),
        // Flags and operations that do not exist, a value forgotten.
        (
            vec![
                "create-cluster",
                "--cluster-name",
                "other",
                "--no-such-flag",
                "x",
            ],
            252,
            "--no-such-flag",
        ),
        (
            vec!["create-clusterz", "--cluster-name", "other"],
            252,
            "create-clusterz",
        ),
        (
            vec!["run-task", "--cluster", &n, "--task-definition"],
            252,
            "--task-definition",
        ),
        (
            vec![
                "wait",
                "services-stable",
                "--cluster",
                &n,
                "--services",
                "s",
            ],
            // Issue 12: a missing service ends the wait as botocore's ServicesStable does.
            255,
            "Waiter ServicesStable failed: Waiter encountered a terminal failure state: For expression \"failures[].reason\" we matched expected path: \"MISSING\" at least once",
        ),
        // The service refuses (254).
        (
            vec![
                "describe-tasks",
                "--cluster",
                "no-such-cluster",
                "--tasks",
                "x",
            ],
            254,
            "An error occurred (ClusterNotFoundException) when calling the DescribeTasks operation",
        ),
        (
            vec![
                "register-task-definition",
                "--family",
                "new",
                "--container-definitions",
                "name=a,image=i,memory=-1",
            ],
            254,
            "An error occurred (ClientException) when calling the RegisterTaskDefinition operation",
        ),
    ];
    for (args, code, needle) in &cases {
        let out = c.berth(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(*code), "berth ecs {args:?}: {err}");
        assert!(
            err.contains(needle),
            "berth ecs {args:?}: expected '{needle}' in: {err}"
        );
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "berth ecs {args:?}: not one line: {err}"
        );
        assert!(
            out.stdout.is_empty(),
            "berth ecs {args:?}: printed {}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(
        snapshot(&c),
        before,
        "a refused command changed the controller"
    );

    // An unreachable endpoint: 255, one line naming it.
    let port = berth_tests::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = std::process::Command::new(berth_tests::bin("berth"))
        .args(["--endpoint-url", &url, "ecs", "list-clusters"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err.trim_end(),
        format!("Could not connect to the endpoint URL: \"{url}\"")
    );
}

/// Issue 6: `--output` text, table and yaml as the aws CLI prints them, `--debug` on stderr
/// only, and `--generate-cli-skeleton` printing the model's request without calling.
#[test]
fn outputs_skeletons_and_debug_as_the_aws_cli() {
    let c = Cluster::controller_only("outputs");
    let n = c.name.clone();
    let arn = berth_proto::arn::cluster(&n);
    assert_eq!(
        c.ok(&["list-clusters", "--output", "text"]),
        format!("CLUSTERARNS\t{arn}\n")
    );
    assert_eq!(
        c.ok(&["list-clusters", "--output", "yaml"]),
        format!("clusterArns:\n- {arn}\n")
    );
    let table = c.ok(&["describe-clusters", "--clusters", &n, "--output", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].chars().all(|ch| ch == '-'), "{table}");
    assert!(
        lines[1].starts_with('|')
            && lines[1].trim_matches(|ch| ch == '|' || ch == ' ') == "DescribeClusters",
        "{table}"
    );
    assert!(table.contains("||") && table.contains(&n), "{table}");
    // Nothing for empty lists in text: describe-clusters' empty failures print no line.
    let text = c.ok(&["describe-clusters", "--clusters", &n, "--output", "text"]);
    assert!(text.starts_with("CLUSTERS\t"), "{text}");
    assert!(!text.contains("FAILURES"), "{text}");

    let out = c.berth(&["list-clusters", "--debug"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("DEBUG ListClusters") && err.contains("/berth.v1.Ecs/ListClusters"),
        "{err}"
    );
    assert!(err.contains(&arn), "the response is shown: {err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["clusterArns"][0], arn.as_str());

    // An operation with an empty response prints nothing, as aws does.
    let tagged = c.berth(&[
        "tag-resource",
        "--resource-arn",
        &arn,
        "--tags",
        "key=team,value=a b",
    ]);
    assert!(
        tagged.status.success(),
        "{}",
        String::from_utf8_lossy(&tagged.stderr)
    );
    assert!(tagged.stdout.is_empty());
    assert_eq!(
        c.ok(&[
            "list-tags-for-resource",
            "--resource-arn",
            &arn,
            "--output",
            "text"
        ]),
        "TAGS\tteam\ta b\n"
    );

    let skeleton = c.json(&["register-task-definition", "--generate-cli-skeleton"]);
    assert_eq!(skeleton["family"], "");
    assert!(
        skeleton["containerDefinitions"][0]["dockerLabels"].is_object(),
        "{skeleton}"
    );
    let yaml = c.ok(&["run-task", "--generate-cli-skeleton", "yaml-input"]);
    assert!(yaml.contains("taskDefinition: ''"), "{yaml}");
    let sample = c.json(&[
        "run-task",
        "--task-definition",
        "t",
        "--generate-cli-skeleton",
        "output",
    ]);
    assert_eq!(sample["tasks"][0]["taskArn"], "taskArn");
    // No call was made: nothing registered, nothing run.
    let tds = c.json(&["list-task-definitions", "--status", "ALL"]);
    assert_eq!(tds["taskDefinitionArns"], serde_json::json!([]));
}

/// Issue 6: `berth ecs wait tasks-running` fails as aws's waiter does when a task is MISSING
/// (exit 255, botocore's message), without waiting out the clock.
#[test]
fn wait_tasks_running_fails_on_a_missing_task() {
    let c = Cluster::controller_only("waitmissing");
    let started = std::time::Instant::now();
    let out = c.berth(&[
        "wait",
        "tasks-running",
        "--cluster",
        &c.name,
        "--tasks",
        "0123456789abcdef0123456789abcdef",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert_eq!(
        err.trim_end(),
        "Waiter TasksRunning failed: Waiter encountered a terminal failure state: For expression \"failures[].reason\" we matched expected path: \"MISSING\" at least once"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    assert!(out.stdout.is_empty());
}

/// Issue 6: 250 task definitions (unique families) listed through the CLI's automatic paging
/// with `--page-size 7`, and by hand with `--max-items` / `--starting-token`, each exactly once.
/// Needs the controller's paging (maxResults, nextToken).
#[test]
fn listing_250_task_definitions_pages_each_exactly_once() {
    let c = Cluster::controller_only("paging250");
    let mut want = Vec::new();
    for i in 0..250 {
        let family = format!("page-{i:03}");
        let v = c.json(&[
            "register-task-definition",
            "--family",
            &family,
            "--container-definitions",
            &format!("name=a,image={IMAGE},memory=8"),
            "--query",
            "taskDefinition.taskDefinitionArn",
        ]);
        want.push(v.as_str().unwrap().to_string());
    }
    want.sort();
    let arns = |v: &serde_json::Value| -> Vec<String> {
        v["taskDefinitionArns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_string())
            .collect()
    };
    // The service pages: one call with maxResults 7 answers 7 and a token.
    let one = c.json(&["list-task-definitions", "--max-results", "7"]);
    assert_eq!(arns(&one).len(), 7, "the controller does not page");
    assert!(one["nextToken"].is_string(), "no nextToken");
    let all = c.json(&["list-task-definitions", "--page-size", "7"]);
    let mut got = arns(&all);
    assert!(all.get("NextToken").is_none(), "{all}");
    assert_eq!(got.len(), 250);
    got.sort();
    assert_eq!(got, want);

    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut calls = 0;
    loop {
        let mut args = vec![
            "list-task-definitions",
            "--page-size",
            "7",
            "--max-items",
            "40",
        ];
        if let Some(t) = &token {
            args.extend(["--starting-token", t.as_str()]);
        }
        let v = c.json(&args);
        let page = arns(&v);
        assert!(page.len() <= 40, "{v}");
        seen.extend(page);
        calls += 1;
        match v.get("NextToken").and_then(|t| t.as_str()) {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
        assert!(calls < 20, "paging does not end");
    }
    assert_eq!(calls, 7);
    seen.sort();
    assert_eq!(seen, want, "each exactly once");

    // ListTaskDefinitionFamilies pages the same way.
    let families = c.json(&[
        "list-task-definition-families",
        "--family-prefix",
        "page-",
        "--page-size",
        "9",
    ]);
    let families: Vec<&str> = families["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    let expected: Vec<String> = (0..250).map(|i| format!("page-{i:03}")).collect();
    assert_eq!(families, expected);
}

/// Issue 11 through the real binaries, no agent: repositoryCredentials registers by a secret's
/// name and is shown as given (the reference only, as ECS); an SSM parameter is refused naming
/// the field; describe-pull-progress answers MISSING for an unknown task; run-task --wait
/// passes RunTask's own error on, and its flags are refused by name before anything is sent.
#[test]
fn repository_credentials_pull_progress_and_run_task_wait_through_the_cli() {
    let c = Cluster::controller_only("pullcli");
    let n = c.name.clone();
    c.register(
        r#"{"family":"priv","containerDefinitions":[{"name":"web","image":"reg.example/app:1","memory":16,
        "repositoryCredentials":{"credentialsParameter":"reg/creds"}}]}"#,
    );
    let td = c.json(&["describe-task-definition", "--task-definition", "priv"]);
    assert_eq!(
        td["taskDefinition"]["containerDefinitions"][0]["repositoryCredentials"],
        serde_json::json!({"credentialsParameter": "reg/creds"})
    );
    let refused = c.register_refused(
        r#"{"family":"priv","containerDefinitions":[{"name":"web","image":"i","memory":16,
        "repositoryCredentials":{"credentialsParameter":"arn:aws:ssm:us-east-1:1:parameter/reg"}}]}"#,
    );
    assert!(
        refused.contains("containerDefinitions[0].repositoryCredentials.credentialsParameter")
            && refused.contains("SSM parameter"),
        "{refused}"
    );
    let p = c.json(&[
        "describe-pull-progress",
        "--cluster",
        &n,
        "--tasks",
        "0123456789abcdef0123456789abcdef",
    ]);
    // As describe-task-stats: an empty result list is left out, the failures stay.
    assert!(p.get("progress").is_none(), "{p}");
    assert_eq!(p["failures"][0]["reason"], "MISSING");
    assert_fails(
        &c,
        &[
            "run-task",
            "--cluster",
            &n,
            "--task-definition",
            "priv",
            "--wait",
        ],
        254,
        "No Container Instances were found in your cluster.",
    );
    assert_fails(
        &c,
        &[
            "run-task",
            "--cluster",
            &n,
            "--task-definition",
            "priv",
            "--wait-timeout",
            "5",
        ],
        252,
        "argument --wait-timeout: only with --wait",
    );
    assert_fails(
        &c,
        &["describe-tasks", "--cluster", &n, "--tasks", "t", "--wait"],
        252,
        "'--wait'",
    );
}
