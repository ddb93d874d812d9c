//! Secrets on real containers: a Secrets Manager secret and an SSM SecureString, named in a task
//! definition by ARNs of another region and account (matched by name, so the ECS guide's ARNs
//! paste), reach the container's environment, and their plaintext appears nowhere else: not in
//! the controller's store file, the agent's data dir, any log, or any describe output. A secret
//! that does not exist stops its task with ECS's ResourceInitializationError.

use berth_tests::{prerequisites, wait_for, Cluster, IMAGE};
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

/// 16 random bytes as hex: a plaintext no other test or file could hold by chance.
fn random_hex() -> String {
    let mut b = [0u8; 16];
    let mut f = std::fs::File::open("/dev/urandom").expect("/dev/urandom");
    std::io::Read::read_exact(&mut f, &mut b).expect("random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => stack.push(p),
                Ok(m) if m.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Where the plaintexts were found, as "what: which".
fn leaks(places: &[(String, Vec<u8>)], plains: &[&str]) -> Vec<String> {
    places
        .iter()
        .flat_map(|(what, bytes)| {
            plains
                .iter()
                .filter(|p| holds(bytes, p))
                .map(move |p| format!("{what} holds {p}"))
        })
        .collect()
}

#[test]
fn secrets_reach_the_container_environment_and_appear_nowhere_else() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("secrets");
    let secret_plain = format!("sm-plain-{}", random_hex());
    let param_plain = format!("ssm-plain-{}", random_hex());
    let json_plain = format!("json-plain-{}", random_hex());
    let plains = [
        secret_plain.as_str(),
        param_plain.as_str(),
        json_plain.as_str(),
    ];

    let created = c.service_json(
        "secretsmanager",
        &[
            "create-secret",
            "--name",
            "it/db-password",
            "--secret-string",
            &secret_plain,
        ],
    );
    let arn = created["ARN"].as_str().expect("ARN").to_string();
    assert!(
        arn.starts_with("arn:aws:secretsmanager:") && arn.contains(":secret:it/db-password-"),
        "{created}"
    );
    let suffix = arn.rsplit('-').next().unwrap_or_default().to_string();
    c.service_json(
        "secretsmanager",
        &[
            "create-secret",
            "--name",
            "it/app",
            "--secret-string",
            &format!(r#"{{"user":"app","token":"{json_plain}"}}"#),
        ],
    );
    let put = c.service_json(
        "ssm",
        &[
            "put-parameter",
            "--name",
            "/it/api-key",
            "--type",
            "SecureString",
            "--value",
            &param_plain,
        ],
    );
    // A number, as aws prints it (the contract keeps such counts int32: proto3 JSON writes int64
    // as a string).
    assert_eq!(put["Version"], 1, "{put}");

    // ARNs of another region and account than Berth's: secrets match by name.
    let td = c.register(&format!(
        r#"{{"family": "secrets", "networkMode": "none",
            "containerDefinitions": [{{"name": "main", "image": "{IMAGE}", "memory": 64,
              "command": ["sh", "-c", "env; echo env-printed; sleep 3600"],
              "environment": [{{"name": "DB_PASSWORD", "value": "from-environment"}}],
              "secrets": [
                {{"name": "DB_PASSWORD", "valueFrom": "arn:aws:secretsmanager:us-west-2:111122223333:secret:it/db-password-{suffix}"}},
                {{"name": "APP_TOKEN", "valueFrom": "arn:aws:secretsmanager:eu-west-1:444455556666:secret:it/app:token::"}},
                {{"name": "API_KEY", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/it/api-key"}}
              ]}}]}}"#
    ));
    let task = c.run_task(&td);
    c.wait_status(&task, "RUNNING", T);
    let log = wait_for("the container to print its env", T, || {
        let l = c.container_log(&task, "main");
        l.contains("env-printed").then_some(l)
    });
    assert!(
        log.contains(&format!("DB_PASSWORD={secret_plain}\n")),
        "{log}"
    );
    assert!(!log.contains("DB_PASSWORD=from-environment"), "{log}");
    assert!(log.contains(&format!("APP_TOKEN={json_plain}\n")), "{log}");
    assert!(log.contains(&format!("API_KEY={param_plain}\n")), "{log}");

    // Outputs a user sees.
    let mut places: Vec<(String, Vec<u8>)> = Vec::new();
    for args in [
        vec!["describe-tasks", "--cluster", &c.name, "--tasks", &task],
        vec!["describe-task-definition", "--task-definition", &td],
        vec!["list-tasks", "--cluster", &c.name],
    ] {
        places.push((format!("berth ecs {args:?}"), c.ok(&args).into_bytes()));
    }
    let got = c.berth_service("ssm", &["get-parameter", "--name", "/it/api-key"]);
    assert!(got.status.success(), "{got:?}");
    places.push(("get-parameter without decryption".into(), got.stdout));
    // Deliberately shown: with --with-decryption the value is returned, as in AWS.
    let shown = c.service_json(
        "ssm",
        &[
            "get-parameter",
            "--name",
            "/it/api-key",
            "--with-decryption",
        ],
    );
    assert_eq!(shown["Parameter"]["Value"], param_plain.as_str());

    // The controller's store file (and anything else in its data dir).
    for f in files_under(&c.dir.join("controller")) {
        places.push((
            f.display().to_string(),
            std::fs::read(&f).unwrap_or_default(),
        ));
    }
    // The agent's data dir, except the container's own output: the container printed its
    // environment itself (that is what the test asked of it), so its log file holds the values
    // as the container's output, not as anything Berth wrote down (its spool files).
    let own_output = c.container_spool(&task, "main", "stdout");
    let own_errors = c.container_spool(&task, "main", "stderr");
    let agent_files = files_under(&c.dir.join("agent"));
    assert!(agent_files.contains(&own_output));
    for f in agent_files
        .into_iter()
        .filter(|f| *f != own_output && *f != own_errors)
    {
        places.push((
            f.display().to_string(),
            std::fs::read(&f).unwrap_or_default(),
        ));
    }
    // Every log of the controller and the agent (the harness writes them beside the dirs).
    for e in std::fs::read_dir(&c.dir).expect("test dir").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("controller-") || name.starts_with("agent-") {
            places.push((name, std::fs::read(e.path()).unwrap_or_default()));
        }
    }
    assert!(places.iter().any(|(w, _)| w.ends_with("state.redb")));
    let found = leaks(&places, &plains);
    assert!(found.is_empty(), "plaintext leaked: {found:?}");

    // A secret that does not exist: the task stops before any container starts.
    let td = c.register(&format!(
        r#"{{"family": "secrets-missing", "networkMode": "none",
            "containerDefinitions": [{{"name": "main", "image": "{IMAGE}", "memory": 64,
              "command": ["sleep", "3600"],
              "secrets": [{{"name": "NOPE", "valueFrom": "arn:aws:secretsmanager:us-west-2:111122223333:secret:it/absent"}}]}}]}}"#
    ));
    let missing = c.run_task(&td);
    let stopped = c.wait_status(&missing, "STOPPED", T);
    let reason = stopped["stoppedReason"].as_str().unwrap_or_default();
    assert!(
        reason
            .starts_with("ResourceInitializationError: unable to pull secrets or registry auth: ")
            && reason.contains("it/absent"),
        "{stopped}"
    );
    assert_eq!(stopped["stopCode"], "TaskFailedToStart", "{stopped}");

    c.ok(&["stop-task", "--cluster", &c.name, "--task", &task]);
    c.wait_status(&task, "STOPPED", T);
}

/// Runs `berth SERVICE ARGS` and asserts it fails as the aws CLI does: exit 254, AWS's
/// exception name and `needle` on stderr.
fn fails(c: &Cluster, service: &str, args: &[&str], exception: &str, needle: &str) {
    let out = c.berth_service(service, args);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(254),
        "berth {service} {args:?}: {err}"
    );
    assert!(
        err.contains(&format!("An error occurred ({exception})")) && err.contains(needle),
        "berth {service} {args:?}: {err}"
    );
}

/// The calls' errors as AWS names them, through the CLI; a malformed valueFrom is refused at
/// registration naming the container and the secret, an absent secret is not. No root needed.
#[test]
fn secrets_and_parameters_fail_with_aws_exceptions() {
    let c = Cluster::controller_only("secrets_errors");
    let create = ["create-secret", "--name", "dup", "--secret-string", "v1"];
    c.service_json("secretsmanager", &create);
    fails(
        &c,
        "secretsmanager",
        &create,
        "ResourceExistsException",
        "dup",
    );
    fails(
        &c,
        "secretsmanager",
        &[
            "put-secret-value",
            "--secret-id",
            "nope",
            "--secret-string",
            "x",
        ],
        "ResourceNotFoundException",
        "nope",
    );
    let put = c.service_json(
        "secretsmanager",
        &[
            "put-secret-value",
            "--secret-id",
            "dup",
            "--secret-string",
            "v2",
        ],
    );
    assert_eq!(put["VersionStages"][0], "AWSCURRENT", "{put}");
    let deleted = c.service_json("secretsmanager", &["delete-secret", "--secret-id", "dup"]);
    assert!(deleted["DeletionDate"].is_string(), "{deleted}");
    fails(
        &c,
        "secretsmanager",
        &["delete-secret", "--secret-id", "dup"],
        "ResourceNotFoundException",
        "dup",
    );

    let param = [
        "put-parameter",
        "--name",
        "p",
        "--value",
        "v",
        "--type",
        "SecureString",
    ];
    c.service_json("ssm", &param);
    fails(&c, "ssm", &param, "ParameterAlreadyExists", "p");
    let mut over = param.to_vec();
    over.push("--overwrite");
    let v2 = c.service_json("ssm", &over);
    assert_eq!(v2["Version"], 2, "{v2}");
    let hidden = c.service_json("ssm", &["get-parameter", "--name", "p"]);
    assert_eq!(hidden["Parameter"]["Type"], "SecureString", "{hidden}");
    assert_ne!(hidden["Parameter"]["Value"], "v", "{hidden}");
    let out = c.berth_service("ssm", &["delete-parameter", "--name", "p"]);
    assert!(out.status.success() && out.stdout.is_empty(), "{out:?}");
    for args in [
        ["get-parameter", "--name", "p"],
        ["delete-parameter", "--name", "p"],
    ] {
        fails(&c, "ssm", &args, "ParameterNotFound", "p");
    }

    let td = |value_from: &str| {
        format!(
            r#"{{"family": "f", "containerDefinitions": [{{"name": "web", "image": "{IMAGE}", "memory": 64,
              "secrets": [{{"name": "DB", "valueFrom": "{value_from}"}}]}}]}}"#
        )
    };
    let file = c.dir.join("bad.json");
    std::fs::write(&file, td("arn:aws:s3:::bucket/key")).expect("writing");
    let arg = format!("file://{}", file.display());
    let out = c.berth(&["register-task-definition", "--cli-input-json", &arg]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(254), "{err}");
    assert!(
        err.contains("(ClientException)") && err.contains("secret 'DB' of container 'web'"),
        "{err}"
    );
    // Not required to exist at registration, as in ECS.
    c.register(&td("arn:aws:secretsmanager:us-east-1:1:secret:later"));
}
