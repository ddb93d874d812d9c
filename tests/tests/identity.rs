//! Agent identity with TLS on (issue 7): activations refuse what they should with one clear line,
//! the link takes only an instance's own certificate, deregistration revokes, and a certificate
//! renewal, an agent restart and a controller restart leave running tasks untouched.

use berth_agent::identity::{Enrollment, TlsFiles};
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::controller_message::Message as FromController;
use berth_proto::v1::*;
use berth_tests::{prerequisites, wait_for, Cluster};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, SystemTime};
use tokio_stream::wrappers::ReceiverStream;

/// Runs an agent with data dir `dir` and `env` until it exits (it must, within 60 s); returns
/// its exit status and log.
fn run_agent_to_exit(c: &Cluster, dir: &Path, env: &[(&str, &str)]) -> (i32, String) {
    let log = c.dir.join(format!(
        "refused-{}.log",
        dir.file_name().unwrap().to_string_lossy()
    ));
    let f = std::fs::File::create(&log).unwrap();
    let mut child: Child = c
        .agent_command(dir)
        .envs(env.iter().copied())
        .stdout(f.try_clone().unwrap())
        .stderr(f)
        .spawn()
        .unwrap();
    let status = wait_for("the agent to exit", Duration::from_secs(60), || {
        child.try_wait().ok().flatten()
    });
    (
        status.code().unwrap_or(-1),
        std::fs::read_to_string(&log).unwrap_or_default(),
    )
}

fn ca_env(c: &Cluster) -> String {
    c.ca_file().display().to_string()
}

#[test]
fn activations_refuse_a_missing_wrong_expired_or_used_up_activation() {
    if !prerequisites() {
        return;
    }
    let c = Cluster::start("refusals");
    if !c.tls {
        eprintln!("SKIPPED: BERTH_TEST_TLS=off");
        return;
    }
    let ca = ca_env(&c);
    // No activation and no certificate.
    let (code, log) = run_agent_to_exit(&c, &c.dir.join("a-none"), &[("BERTH_CA_FILE", &ca)]);
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("no activation: pass --activation-id and --activation-code"),
        "{log}"
    );
    // No CA to pin.
    let (id, good_code, _) = c.create_activation(&["--registration-limit", "1"]);
    let (code, log) = run_agent_to_exit(
        &c,
        &c.dir.join("a-noca"),
        &[
            ("BERTH_ACTIVATION_ID", &id),
            ("BERTH_ACTIVATION_CODE", &good_code),
        ],
    );
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("pass --ca-fingerprint"), "{log}");
    // A wrong code, and an unknown id: the same refusal.
    let (code, wrong) = run_agent_to_exit(
        &c,
        &c.dir.join("a-wrong"),
        &[
            ("BERTH_ACTIVATION_ID", &id),
            ("BERTH_ACTIVATION_CODE", "not-the-code-at-all-00"),
            ("BERTH_CA_FILE", &ca),
        ],
    );
    assert_ne!(code, 0, "{wrong}");
    assert!(
        wrong.contains("enrollment refused by the controller: activation refused"),
        "{wrong}"
    );
    assert!(!wrong.contains(&good_code));
    // Used up: the limit is 1.
    let first = c.dir.join("a-first");
    let mut agent = c
        .agent_command(&first)
        .envs([
            ("BERTH_ACTIVATION_ID", id.as_str()),
            ("BERTH_ACTIVATION_CODE", good_code.as_str()),
            ("BERTH_CA_FILE", ca.as_str()),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the first agent to enroll", Duration::from_secs(30), || {
        first.join("tls/client.pem").exists().then_some(())
    });
    let _ = agent.kill();
    let _ = agent.wait();
    let (code, log) = run_agent_to_exit(
        &c,
        &c.dir.join("a-second"),
        &[
            ("BERTH_ACTIVATION_ID", &id),
            ("BERTH_ACTIVATION_CODE", &good_code),
            ("BERTH_CA_FILE", &ca),
        ],
    );
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("has reached its registration limit (1)"),
        "{log}"
    );
    // Expired: created to expire in 2 s; Expired shows when it has.
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 2;
    let (soon, soon_code, _) = c.create_activation(&["--expiration-date", &at.to_string()]);
    wait_for("the activation to expire", Duration::from_secs(20), || {
        let out = c.berth_service(
            "ssm",
            &[
                "describe-activations",
                "--filters",
                &format!("FilterKey=ActivationIds,FilterValues={soon}"),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (v["ActivationList"][0]["Expired"] == true).then_some(())
    });
    let (code, log) = run_agent_to_exit(
        &c,
        &c.dir.join("a-expired"),
        &[
            ("BERTH_ACTIVATION_ID", &soon),
            ("BERTH_ACTIVATION_CODE", &soon_code),
            (
                "BERTH_CA_FINGERPRINT",
                "sha256:0000000000000000000000000000000000000000000000000000000000000000",
            ),
        ],
    );
    // A fingerprint the controller does not have is refused before anything is sent.
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains("presented no certificate with fingerprint"),
        "{log}"
    );
    let (code, log) = run_agent_to_exit(
        &c,
        &c.dir.join("a-expired"),
        &[
            ("BERTH_ACTIVATION_ID", &soon),
            ("BERTH_ACTIVATION_CODE", &soon_code),
            ("BERTH_CA_FILE", &ca),
        ],
    );
    assert_ne!(code, 0, "{log}");
    assert!(
        log.contains(&format!("activation {soon} has expired")),
        "{log}"
    );
    // Only the first enrollment registered an instance (beside the harness' agent).
    let v = c.json(&["list-container-instances", "--cluster", &c.name]);
    assert_eq!(
        v["containerInstanceArns"].as_array().map(Vec::len),
        Some(2),
        "{v}"
    );
}

fn registration(cluster: &str) -> RegisterContainerInstanceRequest {
    let int = |name: &str, v: i32| Resource {
        name: name.into(),
        r#type: "INTEGER".into(),
        integer_value: v,
        ..Default::default()
    };
    RegisterContainerInstanceRequest {
        cluster: cluster.into(),
        total_resources: vec![int("CPU", 2048), int("MEMORY", 1024)],
        ..Default::default()
    }
}

/// Enrolls a scripted agent with data dir `dir` (a new activation); returns its files and ARN.
async fn enroll(c: &Cluster, dir: &Path) -> (TlsFiles, String) {
    let (id, code, _) = c.create_activation(&[]);
    let files = TlsFiles::new(dir);
    let e = Enrollment {
        activation_id: Some(id),
        activation_code: Some(code),
        ca_fingerprint: None,
        ca_file: Some(c.ca_file()),
    };
    files.ensure_ca(&e, &c.endpoint).await.unwrap();
    let arn = files
        .ensure_identity(&e, &c.endpoint, &c.name, registration(&c.name))
        .await
        .unwrap()
        .unwrap();
    (files, arn)
}

/// A link client presenting `files`' certificate (none when it has none).
async fn client(
    c: &Cluster,
    files: &TlsFiles,
) -> agent_client::AgentClient<tonic::transport::Channel> {
    let ch = tonic::transport::Endpoint::from_shared(c.endpoint.clone())
        .unwrap()
        .tls_config(files.client_config().unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    berth_proto::link::client(ch)
}

struct Session {
    tx: tokio::sync::mpsc::Sender<AgentMessage>,
    inbound: tonic::Streaming<ControllerMessage>,
}

async fn open(c: &Cluster, files: &TlsFiles, arn: &str) -> Result<Session, tonic::Status> {
    let mut cl = client(c, files).await;
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tx.send(AgentMessage {
        message: Some(ToController::Hello(AgentHello {
            container_instance_arn: arn.into(),
            cluster: c.name.clone(),
            protocol_version: berth_proto::link::PROTOCOL_VERSION,
            agent_version: "scripted".into(),
            state_epoch: "e1".into(),
        })),
    })
    .await
    .unwrap();
    let inbound = cl.session(ReceiverStream::new(rx)).await?.into_inner();
    Ok(Session { tx, inbound })
}

fn task_view(c: &Cluster, arn: &str) -> (String, String) {
    let t = c.task(arn);
    (
        t["lastStatus"].as_str().unwrap_or_default().to_string(),
        t["containerInstanceArn"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_link_takes_only_the_instances_own_certificate_and_deregistration_revokes() {
    let c = Cluster::controller_only("own-cert");
    if !c.tls {
        eprintln!("SKIPPED: BERTH_TEST_TLS=off");
        return;
    }
    let (a, a_arn) = enroll(&c, &c.dir.join("agent-a")).await;
    let (b, b_arn) = enroll(&c, &c.dir.join("agent-b")).await;
    let nobody = TlsFiles::new(&c.dir.join("agent-none"));
    nobody
        .ensure_ca(
            &Enrollment {
                ca_file: Some(c.ca_file()),
                ..Default::default()
            },
            &c.endpoint,
        )
        .await
        .unwrap();

    // B's session is up (a scripted agent that acknowledges desired tasks): a task is placed
    // on B.
    let b_session = open(&c, &b, &b_arn).await.unwrap();
    let (told_tx, told) = tokio::sync::oneshot::channel::<()>();
    let b_agent = tokio::spawn(async move {
        let Session { tx, mut inbound } = b_session;
        while let Ok(Some(m)) = inbound.message().await {
            match m.message {
                Some(FromController::DesiredTasks(d)) => {
                    let ack = ToController::DesiredTasksAck(d.seq);
                    let _ = tx.send(AgentMessage { message: Some(ack) }).await;
                }
                Some(FromController::Deregistered(_)) => {
                    let _ = told_tx.send(());
                    return;
                }
                _ => {}
            }
        }
    });
    let td = c.register(&format!(
        r#"{{"family":"own-cert","containerDefinitions":[{{"name":"app","image":"{}","memory":64,"command":["sleep","3600"]}}]}}"#,
        berth_tests::IMAGE
    ));
    wait_for("B to be connected", Duration::from_secs(10), || {
        let d = c.json(&[
            "describe-container-instances",
            "--cluster",
            &c.name,
            "--container-instances",
            &b_arn,
        ]);
        (d["containerInstances"][0]["agentConnected"] == true).then_some(())
    });
    let task = c.run_task(&td);
    let before = task_view(&c, &task);
    assert_eq!(before.1, b_arn);

    // A's certificate cannot open a session or register as B.
    let e = open(&c, &a, &b_arn)
        .await
        .err()
        .expect("A opening B's session");
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = client(&c, &a)
        .await
        .register_container_instance(RegisterContainerInstanceRequest {
            container_instance_arn: Some(b_arn.clone()),
            ..registration(&c.name)
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    // No certificate: no session, no registration, no renewal.
    let e = open(&c, &nobody, &b_arn)
        .await
        .err()
        .expect("a session without a certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("client certificate"), "{e:?}");
    let e = client(&c, &nobody)
        .await
        .register_container_instance(registration(&c.name))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");

    // A's own session cannot report for B's task.
    let mut a_session = open(&c, &a, &a_arn).await.unwrap();
    a_session
        .tx
        .send(AgentMessage {
            message: Some(ToController::TaskStateChange(TaskStateChange {
                seq: 1,
                task_arn: task.clone(),
                last_status: "STOPPED".into(),
                stopped_reason: Some("forged".into()),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(m)) = a_session.inbound.message().await.transpose() {
            if let Some(FromController::StateChangeAck(1)) = m.message {
                return;
            }
        }
        panic!("A's session ended before its report was acknowledged");
    })
    .await
    .expect("the report's ack");
    assert_eq!(
        task_view(&c, &task),
        before,
        "a forged report changed B's task"
    );

    // A task's secrets go only to the instance running it: not to A, not to a caller without
    // a certificate; B gets them (this task has none).
    let e = client(&c, &a)
        .await
        .get_task_secrets(GetTaskSecretsRequest {
            task_arn: task.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
    let e = client(&c, &nobody)
        .await
        .get_task_secrets(GetTaskSecretsRequest {
            task_arn: task.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let own = client(&c, &b)
        .await
        .get_task_secrets(GetTaskSecretsRequest {
            task_arn: task.clone(),
        })
        .await
        .expect("B asking for its own task's secrets");
    assert!(own.into_inner().secrets.is_empty());

    // The ECS API works without a client certificate (the CLI has none).
    c.ok(&["list-clusters"]);

    // Deregistration revokes B's certificate.
    c.ok(&[
        "deregister-container-instance",
        "--cluster",
        &c.name,
        "--container-instance",
        &b_arn,
        "--force",
    ]);
    let told = tokio::time::timeout(Duration::from_secs(10), told).await;
    assert!(
        matches!(told, Ok(Ok(()))),
        "B's session was not told it was deregistered"
    );
    b_agent.abort();
    let e = open(&c, &b, &b_arn)
        .await
        .err()
        .expect("a revoked certificate");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    let e = client(&c, &b)
        .await
        .renew_certificate(RenewCertificateRequest {
            csr_pem: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e:?}");
    // A is untouched; a second session with A's certificate replaces the first, which ends.
    let _a_again = open(&c, &a, &a_arn).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Ok(Some(_)) = a_session.inbound.message().await {}
    })
    .await
    .expect("A's first session to end once replaced");
}

#[test]
fn renewal_and_restarts_leave_a_running_task_untouched() {
    if !prerequisites() {
        return;
    }
    let mut c = Cluster::start_with_controller_args("renewal", &["--certificate-lifetime", "20"]);
    if !c.tls {
        eprintln!("SKIPPED: BERTH_TEST_TLS=off");
        return;
    }
    let td = c.register(&format!(
        r#"{{"family":"renewal","networkMode":"host","containerDefinitions":[{{"name":"app","image":"{}","memory":64,"command":["sleep","3600"]}}]}}"#,
        berth_tests::IMAGE
    ));
    let task = c.run_task(&td);
    let t = c.wait_status(&task, "RUNNING", Duration::from_secs(60));
    let runtime = t["containers"][0]["runtimeId"]
        .as_str()
        .unwrap()
        .to_string();
    let cert = c.agent_dir().join("tls/client.pem");
    let first = std::fs::read(&cert).unwrap();
    let same_task = |c: &Cluster| {
        let t = c.task(&task);
        assert_eq!(t["lastStatus"], "RUNNING", "{t}");
        assert_eq!(t["containers"][0]["runtimeId"], runtime.as_str(), "{t}");
        assert_eq!(
            c.containerd_task_status(&runtime).as_deref(),
            Some("RUNNING")
        );
    };
    // Renewed at half of its 20 s life.
    wait_for(
        "the client certificate to be renewed",
        Duration::from_secs(40),
        || {
            std::fs::read(&cert)
                .ok()
                .filter(|now| *now != first)
                .map(|_| ())
        },
    );
    same_task(&c);
    c.wait_agent_connected();
    assert!(
        c.agent_log().contains("client certificate renewed"),
        "{}",
        c.agent_log()
    );
    // An agent restart connects with the renewed certificate (no new activation).
    c.kill_agent();
    c.start_agent();
    c.wait_agent_connected();
    same_task(&c);
    // A controller restart: same CA, the agent reconnects.
    c.kill_controller();
    c.start_controller();
    c.wait_agent_connected();
    same_task(&c);
    // An agent away for longer than its certificate's life: the controller refuses the expired
    // certificate in the handshake, so the agent proves its key (Reenroll) and comes back as
    // the same instance, its task untouched, with no new activation.
    c.kill_agent();
    let files = TlsFiles::new(&c.agent_dir());
    let (_, not_after) = files.validity().unwrap();
    wait_for(
        "the agent's client certificate to expire",
        Duration::from_secs(60),
        || (SystemTime::now() > not_after + Duration::from_secs(1)).then_some(()),
    );
    let expired = std::fs::read(&cert).unwrap();
    c.start_agent();
    wait_for(
        "a new certificate for the expired one",
        Duration::from_secs(60),
        || {
            std::fs::read(&cert)
                .ok()
                .filter(|now| *now != expired)
                .map(|_| ())
        },
    );
    let (_, renewed) = files.validity().unwrap();
    assert!(renewed > SystemTime::now());
    c.wait_agent_connected();
    same_task(&c);
    let v = c.json(&["list-container-instances", "--cluster", &c.name]);
    assert_eq!(
        v["containerInstanceArns"].as_array().map(Vec::len),
        Some(1),
        "{v}"
    );
}
