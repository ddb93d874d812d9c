//! Task networking on the controller: networkConfiguration as ECS checks it, subnets and host
//! ports in placement, LAN addresses, the network record's life, and agents' reports merged.

use super::super::agent_link::{SessionInfo, SessionSent};
use super::super::test_support::{controller, default_cluster, register_td, resource};
use super::super::*;
use crate::fleet::Attached;
use crate::test_rng::Lcg;
use berth_proto::v1::*;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

fn attr(name: &str, value: &str) -> Attribute {
    Attribute {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn ports(name: &str, ports: &[&str]) -> Resource {
    Resource {
        name: name.into(),
        r#type: "STRINGSET".into(),
        string_set_value: ports.iter().map(|p| p.to_string()).collect(),
        ..Default::default()
    }
}

/// An instance in `cluster` (made if missing) with `memory` MiB, the given attributes and
/// extra resources, whose agent is in step.
async fn instance(
    c: &Controller,
    cluster: &str,
    memory: i32,
    attributes: Vec<Attribute>,
    extra: Vec<Resource>,
) -> (String, Attached) {
    if cluster == DEFAULT_CLUSTER {
        default_cluster(c).await;
    } else if c.state.lock().await.active_cluster(cluster).is_err() {
        c.create_cluster(CreateClusterRequest {
            cluster_name: cluster.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut total = vec![resource("CPU", 4096), resource("MEMORY", memory)];
    total.extend(extra);
    let ci = c
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: cluster.into(),
            total_resources: total,
            attributes,
            ..Default::default()
        })
        .await
        .unwrap();
    let arn = ci.container_instance_arn;
    let session = c.fleet().attach(&id_of(&arn));
    c.fleet().desired_acked(&session, 1);
    (arn, session)
}

fn id_of(instance_arn: &str) -> String {
    berth_proto::arn::short_id("container-instance", instance_arn)
        .unwrap()
        .to_string()
}

const AWSVPC_TD: &str = r#"{"family":"vpc","networkMode":"awsvpc","requiresCompatibilities":["FARGATE"],
    "cpu":"256","memory":"512","containerDefinitions":[{"name":"web","image":"x","portMappings":[{"containerPort":80}]}]}"#;

fn vpc(subnets: &[&str], groups: &[&str], public: Option<&str>) -> NetworkConfiguration {
    NetworkConfiguration {
        awsvpc_configuration: Some(AwsVpcConfiguration {
            subnets: subnets.iter().map(|s| s.to_string()).collect(),
            security_groups: groups.iter().map(|s| s.to_string()).collect(),
            assign_public_ip: public.map(str::to_string),
        }),
    }
}

fn run(td: &str, count: i32, cluster: &str, net: Option<NetworkConfiguration>) -> RunTaskRequest {
    RunTaskRequest {
        cluster: Some(cluster.into()),
        task_definition: td.into(),
        count: Some(count),
        network_configuration: net,
        ..Default::default()
    }
}

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

async fn described(c: &Controller, cluster: &str, task_arn: &str) -> Task {
    c.describe_tasks(DescribeTasksRequest {
        cluster: Some(cluster.into()),
        tasks: vec![task_arn.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .tasks
    .remove(0)
}

fn report(seq: u64, task_arn: &str, status: &str) -> TaskStateChange {
    TaskStateChange {
        seq,
        task_arn: task_arn.into(),
        last_status: status.into(),
        ..Default::default()
    }
}

fn detail<'a>(a: &'a Attachment, name: &str) -> Option<&'a str> {
    a.details
        .iter()
        .find(|d| d.name == name)
        .map(|d| d.value.as_str())
}

/// networkConfiguration as ECS checks it: required for awsvpc, refused for the other modes,
/// subnets 1-16 and each configured on an instance of the cluster (an unknown one is named),
/// at most 5 security groups, assignPublicIp ENABLED or DISABLED; launchType FARGATE needs a
/// FARGATE-compatible definition. Every refusal is an InvalidParameterException and runs
/// nothing.
#[tokio::test]
async fn network_configuration_is_checked_as_ecs_does() {
    let c = controller();
    let (_a, _s) = instance(
        &c,
        "default",
        4096,
        vec![attr("berth.subnet.s1", "bridge:10.9.0.0/24")],
        vec![],
    )
    .await;
    register_td(&c, AWSVPC_TD).await;
    register_td(
        &c,
        r#"{"family":"br","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    let many: Vec<String> = (0..17).map(|i| format!("s{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let cases: Vec<(RunTaskRequest, &str)> =
        vec![
        (
            run("vpc", 1, "default", None),
            "Network Configuration must be provided when networkMode 'awsvpc' is specified.",
        ),
        (
            run("br", 1, "default", Some(vpc(&["s1"], &[], None))),
            "Network Configuration is not valid for the given networkMode of this task definition.",
        ),
        (run("vpc", 1, "default", Some(vpc(&[], &[], None))), "subnets can not be empty."),
        (
            run("vpc", 1, "default", Some(vpc(&many, &[], None))),
            "at most 16 subnets",
        ),
        (
            run(
                "vpc",
                1,
                "default",
                Some(vpc(&["s1"], &["sg-1", "sg-2", "sg-3", "sg-4", "sg-5", "sg-6"], None)),
            ),
            "at most 5 security groups",
        ),
        (
            run("vpc", 1, "default", Some(vpc(&["s1"], &[], Some("YES")))),
            "assignPublicIp: 'YES' is not ENABLED or DISABLED",
        ),
        (
            run("vpc", 1, "default", Some(vpc(&["s1", "subnet-nowhere"], &[], None))),
            "subnet 'subnet-nowhere' is not configured",
        ),
        (
            RunTaskRequest {
                launch_type: Some("FARGATE".into()),
                ..run("br", 1, "default", None)
            },
            "Task definition does not support launch_type FARGATE.",
        ),
    ];
    for (req, want) in cases {
        let e = c.run_task(req).await.unwrap_err();
        assert!(
            matches!(e, crate::error::EcsError::InvalidParameter(_))
                && e.to_string().contains(want),
            "want {want}: {e:?}"
        );
    }
    // StartTask checks the same.
    let e = c
        .start_task(StartTaskRequest {
            task_definition: "vpc".into(),
            container_instances: vec![_a.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("Network Configuration must be provided"),
        "{e}"
    );
    assert!(c.state.lock().await.tasks.is_empty(), "nothing ran");
    // The same request with a valid configuration runs, on FARGATE too.
    let r = c
        .run_task(RunTaskRequest {
            launch_type: Some("FARGATE".into()),
            ..run(
                "vpc",
                1,
                "default",
                Some(vpc(&["s1"], &[], Some("ENABLED"))),
            )
        })
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 1, "{:?}", r.failures);
}

/// hostname and extraHosts are refused in awsvpc task definitions (ECS: not supported in the
/// awsvpc network mode), and accepted in the other modes.
#[tokio::test]
async fn hostname_and_extra_hosts_are_refused_in_awsvpc() {
    let c = controller();
    for (mode, extra, ok) in [
        ("awsvpc", r#","hostname":"h""#, false),
        (
            "awsvpc",
            r#","extraHosts":[{"hostname":"db","ipAddress":"10.0.0.1"}]"#,
            false,
        ),
        ("bridge", r#","hostname":"h""#, true),
        (
            "host",
            r#","extraHosts":[{"hostname":"db","ipAddress":"10.0.0.1"}]"#,
            true,
        ),
        (
            "awsvpc",
            r#","dnsServers":["10.0.0.2"],"dnsSearchDomains":["x.internal"]"#,
            true,
        ),
    ] {
        let r = c
            .register_task_definition(
                serde_json::from_str(&format!(
                    r#"{{"family":"f","networkMode":"{mode}","containerDefinitions":[{{"name":"a","image":"x","memory":64{extra}}}]}}"#
                ))
                .unwrap(),
            )
            .await;
        assert_eq!(r.is_ok(), ok, "{mode} {extra}: {r:?}");
        if let Err(e) = r {
            assert!(e.to_string().contains("containerDefinitions[0]."), "{e}");
            assert!(e.to_string().contains("awsvpc network mode"), "{e}");
        }
    }
}

/// An awsvpc task goes only to instances that report one of its subnets; the others are
/// refused with ATTRIBUTE naming berth.subnet.NAME. The subnet taken is the first of the
/// request's list the instance has; the task carries a PRECREATED ENI attachment on it, the
/// record is stored with the task, and the agent is told the network in its desired tasks.
#[tokio::test]
async fn awsvpc_tasks_go_only_to_instances_with_one_of_their_subnets() {
    let c = controller();
    let (a, _sa) = instance(
        &c,
        "default",
        4096,
        vec![
            attr("berth.subnet.s1", "bridge:10.9.0.0/24"),
            attr("berth.subnet.s2", "bridge:10.9.1.0/24"),
        ],
        vec![],
    )
    .await;
    let (b, _sb) = instance(&c, "default", 8192, vec![], vec![]).await;
    register_td(&c, AWSVPC_TD).await;
    let sg = c
        .create_security_group(berth_proto::v1::CreateSecurityGroupRequest {
            group_name: "web".into(),
            description: "web".into(),
            vpc_id: None,
        })
        .await
        .unwrap()
        .group_id;
    let r = c
        .run_task(run(
            "vpc",
            3,
            "default",
            Some(vpc(&["s3x", "s2", "s1"], &[&sg], Some("ENABLED"))),
        ))
        .await;
    // s3x is on no instance: named.
    assert!(r.unwrap_err().to_string().contains("'s3x'"));
    let r = c
        .run_task(run(
            "vpc",
            3,
            "default",
            Some(vpc(&["s2", "s1"], &[&sg], Some("ENABLED"))),
        ))
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 3, "{:?}", r.failures);
    for t in &r.tasks {
        assert_eq!(
            t.container_instance_arn.as_deref(),
            Some(a.as_str()),
            "B has no subnet"
        );
        let eni = &t.attachments[0];
        assert_eq!(
            (eni.r#type.as_str(), eni.status.as_str()),
            ("ElasticNetworkInterface", "PRECREATED")
        );
        assert_eq!(detail(eni, "subnetId"), Some("s2"));
        assert_eq!(
            detail(eni, "privateIPv4Address"),
            None,
            "a bridge subnet's agent allocates"
        );
        assert!(!eni.id.is_empty());
    }
    let st = c.state.lock().await;
    let id = tasks::task_id(&r.tasks[0].task_arn).unwrap().to_string();
    let rec = st.task_networks.get(&id).cloned().unwrap();
    assert_eq!(
        (
            rec.subnet.as_str(),
            rec.assign_public_ip,
            rec.security_groups.clone()
        ),
        ("s2", true, vec![sg.clone()])
    );
    let stored = c.store.scan(networking::TASK_NETWORK_PREFIX).unwrap();
    assert_eq!(stored.len(), 3, "committed with the tasks");
    drop(st);
    let desired = c
        .desired_tasks(&id_of(&a), 2, &mut SessionSent::default())
        .await;
    let net = desired
        .tasks
        .iter()
        .find(|t| t.task.as_ref().unwrap().task_arn == r.tasks[0].task_arn)
        .and_then(|t| t.network.clone())
        .expect("awsvpc task carries its network");
    assert_eq!((net.subnet.as_str(), net.assign_public_ip), ("s2", true));
    assert_eq!(net.security_groups, vec![sg.clone()]);
    // An instance with the subnet but no memory left: both refused, each with its reason.
    let r = c
        .run_task(run("vpc", 1, "default", Some(vpc(&["s1"], &[], None))))
        .await
        .unwrap();
    assert_eq!(r.tasks.len(), 1);
    register_td(
        &c,
        r#"{"family":"big","networkMode":"awsvpc","containerDefinitions":[{"name":"a","image":"x","memory":3000}]}"#,
    )
    .await;
    let r = c
        .run_task(run("big", 1, "default", Some(vpc(&["s1"], &[], None))))
        .await
        .unwrap();
    assert!(r.tasks.is_empty());
    let of = |arn: &str| r.failures.iter().find(|f| f.arn == arn).cloned().unwrap();
    assert_eq!(of(&a).reason, "RESOURCE:MEMORY");
    assert_eq!(of(&b).reason, "ATTRIBUTE");
    assert!(of(&b).detail.unwrap().contains("berth.subnet.s1"));
    // A bridge task has no network in its assignment and no attachment.
    register_td(
        &c,
        r#"{"family":"br","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    let r = c.run_task(run("br", 1, "default", None)).await.unwrap();
    assert!(r.tasks[0].attachments.is_empty());
}

/// Static host ports against what an instance holds: its reserved PORTS / PORTS_UDP, the
/// static ports of its tasks (host: containerPort; bridge: nonzero hostPort), the dynamic ports
/// their agents reported, and the tasks of the same RunTask; a collision is RESOURCE:PORTS.
/// remainingResources shows the ports in use.
#[tokio::test]
async fn host_ports_collide_with_reserved_used_and_reported_ports() {
    let c = controller();
    let (a, _s) = instance(
        &c,
        "default",
        8192,
        vec![],
        vec![ports("PORTS", &["22", "8080"]), ports("PORTS_UDP", &["53"])],
    )
    .await;
    let td = |family: &str, mode: &str, mapping: &str| {
        format!(
            r#"{{"family":"{family}","networkMode":"{mode}","containerDefinitions":[{{"name":"a","image":"x","memory":64,"portMappings":[{mapping}]}}]}}"#
        )
    };
    register_td(&c, &td("h8080", "host", r#"{"containerPort":8080}"#)).await;
    register_td(
        &c,
        &td("hudp", "host", r#"{"containerPort":53,"protocol":"udp"}"#),
    )
    .await;
    register_td(&c, &td("htcp53", "host", r#"{"containerPort":53}"#)).await;
    register_td(
        &c,
        &td("b9000", "bridge", r#"{"containerPort":80,"hostPort":9000}"#),
    )
    .await;
    register_td(&c, &td("bdyn", "bridge", r#"{"containerPort":80}"#)).await;
    register_td(&c, &td("h9000", "host", r#"{"containerPort":9000}"#)).await;
    register_td(&c, &td("h49153", "host", r#"{"containerPort":49153}"#)).await;
    let refused = |r: &RunTaskResponse| {
        r.failures
            .iter()
            .any(|f| f.arn == a && f.reason == "RESOURCE:PORTS")
    };
    // Reserved ports, by protocol.
    let r = c.run_task(run("h8080", 1, "default", None)).await.unwrap();
    assert!(r.tasks.is_empty() && refused(&r), "{r:?}");
    let r = c.run_task(run("hudp", 1, "default", None)).await.unwrap();
    assert!(r.tasks.is_empty() && refused(&r), "{r:?}");
    let r = c.run_task(run("htcp53", 1, "default", None)).await.unwrap();
    assert_eq!(r.tasks.len(), 1, "53/udp reserved, 53/tcp free: {r:?}");
    // Two tasks of one RunTask on one instance: the second collides.
    let r = c.run_task(run("b9000", 2, "default", None)).await.unwrap();
    assert_eq!(r.tasks.len(), 1);
    assert!(refused(&r), "{r:?}");
    // A running bridge task's static hostPort holds it for a host task too.
    let r = c.run_task(run("h9000", 1, "default", None)).await.unwrap();
    assert!(r.tasks.is_empty() && refused(&r), "{r:?}");
    // Dynamic ports never collide at placement; a reported one is held.
    let r = c.run_task(run("bdyn", 2, "default", None)).await.unwrap();
    assert_eq!(r.tasks.len(), 2);
    let s = session(&c, &a).await;
    c.apply_state_change(
        &s,
        TaskStateChange {
            containers: vec![ContainerStateChange {
                name: "a".into(),
                last_status: "RUNNING".into(),
                network_bindings: vec![NetworkBinding {
                    bind_ip: Some("0.0.0.0".into()),
                    container_port: Some(80),
                    host_port: Some(49153),
                    protocol: Some("tcp".into()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..report(1, &r.tasks[0].task_arn, "RUNNING")
        },
    )
    .await
    .unwrap();
    let r = c.run_task(run("h49153", 1, "default", None)).await.unwrap();
    assert!(r.tasks.is_empty() && refused(&r), "{r:?}");
    let ci = c
        .describe_container_instances(DescribeContainerInstancesRequest {
            container_instances: vec![a.clone()],
            ..Default::default()
        })
        .await
        .unwrap()
        .container_instances
        .remove(0);
    let remaining = |name: &str| {
        ci.remaining_resources
            .iter()
            .find(|r| r.name == name)
            .unwrap()
            .string_set_value
            .clone()
    };
    assert_eq!(
        remaining("PORTS"),
        vec!["22", "53", "8080", "9000", "49153"]
    );
    assert_eq!(remaining("PORTS_UDP"), vec!["53"]);
}

/// LAN subnets: the controller hands out the lowest free address of the range, unique across
/// instances and clusters; a full range refuses RunTask naming the subnet; the address is free
/// again the moment its task is STOPPED.
#[tokio::test]
async fn lan_addresses_are_unique_cluster_wide_and_freed_at_stopped() {
    let c = controller();
    let lan = || {
        vec![
            attr(
                "berth.subnet.lan1",
                "lan:192.168.5.0/24:192.168.5.10-192.168.5.11",
            ),
            attr(
                "berth.subnet.lan2",
                "lan:192.168.6.0/24:192.168.6.20-192.168.6.29",
            ),
        ]
    };
    let (a, _sa) = instance(&c, "default", 4096, lan(), vec![]).await;
    let (_b, _sb) = instance(&c, "default", 4096, lan(), vec![]).await;
    let (_o, _so) = instance(&c, "other", 4096, lan(), vec![]).await;
    register_td(&c, AWSVPC_TD).await;
    let net = || Some(vpc(&["lan1"], &[], None));
    let r = c.run_task(run("vpc", 1, "default", net())).await.unwrap();
    let first = r.tasks[0].clone();
    let addr = |t: &Task| detail(&t.attachments[0], "privateIPv4Address").map(str::to_string);
    assert_eq!(addr(&first).as_deref(), Some("192.168.5.10"));
    let r = c.run_task(run("vpc", 1, "other", net())).await.unwrap();
    assert_eq!(
        addr(&r.tasks[0]).as_deref(),
        Some("192.168.5.11"),
        "another cluster, same subnet"
    );
    let e = c
        .run_task(run("vpc", 1, "default", net()))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'lan1' has no free address"), "{e}");
    // Two in one RunTask get two addresses: free .10 by stopping the first task.
    let on = first.container_instance_arn.clone().unwrap();
    let s = session(&c, &on).await;
    c.apply_state_change(&s, report(1, &first.task_arn, "STOPPED"))
        .await
        .unwrap();
    let r = c.run_task(run("vpc", 1, "default", net())).await.unwrap();
    assert_eq!(
        addr(&r.tasks[0]).as_deref(),
        Some("192.168.5.10"),
        "freed at STOPPED"
    );
    // Tasks of one RunTask, on one instance or two, get distinct addresses.
    let r = c
        .run_task(run("vpc", 3, "default", Some(vpc(&["lan2"], &[], None))))
        .await
        .unwrap();
    let mut got: Vec<String> = r.tasks.iter().filter_map(addr).collect();
    got.sort();
    assert_eq!(got, vec!["192.168.6.20", "192.168.6.21", "192.168.6.22"]);
    // The agent is told the address in its desired tasks.
    let on = r.tasks[0].container_instance_arn.clone().unwrap();
    let desired = c
        .desired_tasks(&id_of(&on), 9, &mut SessionSent::default())
        .await;
    let told = desired
        .tasks
        .iter()
        .find(|t| t.task.as_ref().unwrap().task_arn == r.tasks[0].task_arn)
        .and_then(|t| t.network.clone())
        .unwrap();
    assert_eq!(told.private_ipv4_address, addr(&r.tasks[0]));
    assert_eq!(told.subnet, "lan2");
    let _ = a;
}

/// The network record leaves the store and the state with its task's record.
#[tokio::test]
async fn the_network_record_leaves_with_its_task() {
    let c = controller();
    let (a, _s) = instance(
        &c,
        "default",
        4096,
        vec![attr("berth.subnet.s1", "bridge:10.9.0.0/24")],
        vec![],
    )
    .await;
    register_td(&c, AWSVPC_TD).await;
    let r = c
        .run_task(run("vpc", 2, "default", Some(vpc(&["s1"], &[], None))))
        .await
        .unwrap();
    let s = session(&c, &a).await;
    c.apply_state_change(&s, report(1, &r.tasks[0].task_arn, "STOPPED"))
        .await
        .unwrap();
    let p = c
        .purge_stopped(
            SystemTime::now() + Duration::from_secs(7200),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(p.tasks, 1);
    let stored = c.store.scan(networking::TASK_NETWORK_PREFIX).unwrap();
    let kept = tasks::task_id(&r.tasks[1].task_arn).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].0, format!("tasknet/{kept}"));
    let st = c.state.lock().await;
    assert_eq!(st.task_networks.keys().collect::<Vec<_>>(), vec![kept]);
}

/// What agents report reaches DescribeTasks: containers' networkBindings and
/// networkInterfaces, the ENI attachment's status and details (the controller's id and the
/// details it knew kept); a later report without them loses nothing.
#[tokio::test]
async fn reports_are_merged_into_describe_tasks() {
    let c = controller();
    let (a, _s) = instance(
        &c,
        "default",
        4096,
        vec![attr("berth.subnet.s1", "bridge:10.9.0.0/24")],
        vec![],
    )
    .await;
    register_td(&c, AWSVPC_TD).await;
    let r = c
        .run_task(run("vpc", 1, "default", Some(vpc(&["s1"], &[], None))))
        .await
        .unwrap();
    let task = r.tasks[0].clone();
    let eni_id = task.attachments[0].id.clone();
    let s = session(&c, &a).await;
    let iface = NetworkInterface {
        attachment_id: Some(eni_id.clone()),
        private_ipv4_address: Some("10.9.0.7".into()),
        ipv6_address: None,
    };
    let binding = NetworkBinding {
        bind_ip: Some("10.9.0.7".into()),
        container_port: Some(80),
        host_port: Some(80),
        protocol: Some("tcp".into()),
        ..Default::default()
    };
    c.apply_state_change(
        &s,
        TaskStateChange {
            containers: vec![ContainerStateChange {
                name: "web".into(),
                last_status: "RUNNING".into(),
                network_bindings: vec![binding.clone()],
                network_interfaces: vec![iface.clone()],
                ..Default::default()
            }],
            attachments: vec![Attachment {
                id: "agent-side-id".into(),
                r#type: "ElasticNetworkInterface".into(),
                status: "ATTACHED".into(),
                details: vec![
                    KeyValuePair {
                        name: "privateIPv4Address".into(),
                        value: "10.9.0.7".into(),
                    },
                    KeyValuePair {
                        name: "macAddress".into(),
                        value: "02:00:0a:09:00:07".into(),
                    },
                ],
            }],
            ..report(1, &task.task_arn, "RUNNING")
        },
    )
    .await
    .unwrap();
    c.apply_state_change(&s, report(2, &task.task_arn, "RUNNING"))
        .await
        .unwrap();
    let t = described(&c, "default", &task.task_arn).await;
    assert_eq!(t.containers[0].network_bindings, vec![binding]);
    assert_eq!(t.containers[0].network_interfaces, vec![iface]);
    assert_eq!(t.attachments.len(), 1);
    let eni = &t.attachments[0];
    assert_eq!(
        (eni.id.as_str(), eni.status.as_str()),
        (eni_id.as_str(), "ATTACHED")
    );
    assert_eq!(detail(eni, "subnetId"), Some("s1"));
    assert_eq!(detail(eni, "privateIPv4Address"), Some("10.9.0.7"));
    assert_eq!(detail(eni, "macAddress"), Some("02:00:0a:09:00:07"));
    let id = tasks::task_id(&task.task_arn).unwrap();
    assert_eq!(
        c.state.lock().await.task_private_ipv4(id).as_deref(),
        Some("10.9.0.7")
    );
}

/// The instances whose tasks' ingress follows group membership are woken when an awsvpc
/// task's address first becomes known or the task STOPS, and not on other reports.
#[test]
fn membership_changes_when_the_address_is_first_known_or_the_task_stops() {
    let eni = |address: Option<&str>| networking::eni_attachment("s1", address);
    let task = |status: &str, address: Option<&str>| Task {
        last_status: status.into(),
        attachments: vec![eni(address)],
        ..Default::default()
    };
    use networking::membership_changed as changed;
    assert!(
        changed(None, &task("RUNNING", Some("10.9.0.7"))),
        "first known"
    );
    assert!(
        !changed(Some("10.9.0.7"), &task("RUNNING", Some("10.9.0.7"))),
        "already known"
    );
    assert!(!changed(None, &task("PENDING", None)), "still unknown");
    assert!(
        changed(Some("10.9.0.7"), &task("STOPPED", Some("10.9.0.7"))),
        "stopped"
    );
    assert!(
        changed(None, &task("STOPPED", None)),
        "stopped before its address was known"
    );
}

/// Link protocol 2: a partial set names a task again when its ingress changes (a rule of its
/// group, not the task, changed), and nothing when nothing changed; a task whose STOPPED is
/// recorded leaves through `removed`.
#[tokio::test]
async fn a_partial_set_carries_changed_ingress_and_removes_what_stopped() {
    let c = controller();
    let (a, _s) = instance(
        &c,
        "default",
        4096,
        vec![attr("berth.subnet.s1", "bridge:10.9.0.0/24")],
        vec![],
    )
    .await;
    register_td(&c, AWSVPC_TD).await;
    let web = c
        .create_security_group(CreateSecurityGroupRequest {
            group_name: "web".into(),
            description: "web".into(),
            vpc_id: None,
        })
        .await
        .unwrap()
        .group_id;
    let r = c
        .run_task(run("vpc", 2, "default", Some(vpc(&["s1"], &[&web], None))))
        .await
        .unwrap();
    let mut sent = SessionSent::new(2);
    let first = c.desired_tasks(&id_of(&a), 1, &mut sent).await;
    assert!(!first.partial);
    assert_eq!(first.tasks.len(), 2);
    let nothing = c.desired_tasks(&id_of(&a), 2, &mut sent).await;
    assert!(nothing.partial && nothing.tasks.is_empty() && nothing.removed.is_empty());
    c.authorize_security_group_ingress(SecurityGroupIngressRequest {
        group_id: Some(web.clone()),
        ip_protocol: Some("tcp".into()),
        from_port: Some(80),
        to_port: Some(80),
        cidr_ip: Some("10.0.0.0/8".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let ingress = c.desired_tasks(&id_of(&a), 3, &mut sent).await;
    assert_eq!(ingress.tasks.len(), 2, "both tasks' ingress changed");
    for t in &ingress.tasks {
        let net = t.network.as_ref().unwrap();
        assert!(
            net.ingress.iter().any(|i| i.cidr == "10.0.0.0/8"),
            "{net:?}"
        );
        assert!(t.task_definition.is_none(), "the definition went once");
    }
    let s = session(&c, &a).await;
    c.apply_state_change(&s, report(1, &r.tasks[0].task_arn, "STOPPED"))
        .await
        .unwrap();
    let stopped = c.desired_tasks(&id_of(&a), 4, &mut sent).await;
    assert_eq!(stopped.removed, vec![r.tasks[0].task_arn.clone()]);
    assert!(
        stopped
            .tasks
            .iter()
            .all(|t| t.task.as_ref().unwrap().task_arn != r.tasks[0].task_arn),
        "{stopped:?}"
    );
}

/// Link protocol 2 against protocol 1 over random changes: after every RunTask, StopTask,
/// report (RUNNING, STOPPED, RUNNING again for a task recorded STOPPED: an orphan) and
/// security-group rule change, each instance's partial sets, folded as the agent folds them,
/// equal a whole set built afresh (the same ARNs, task records, desired statuses and networks),
/// and no set names an ARN it also removes.
#[tokio::test]
async fn folded_partial_sets_equal_a_whole_set_after_random_changes() {
    let c = controller();
    let subnet = || vec![attr("berth.subnet.s1", "bridge:10.9.0.0/24")];
    let mut hosts = Vec::new();
    for _ in 0..3 {
        let (arn, attached) = instance(&c, "default", 1 << 20, subnet(), vec![]).await;
        let s = session(&c, &arn).await;
        hosts.push((arn, attached, s, SessionSent::new(2), BTreeMap::new(), 0u64));
    }
    register_td(&c, AWSVPC_TD).await;
    register_td(
        &c,
        r#"{"family":"plain","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    let web = c
        .create_security_group(CreateSecurityGroupRequest {
            group_name: "web".into(),
            description: "web".into(),
            vpc_id: None,
        })
        .await
        .unwrap()
        .group_id;
    let mut rng = Lcg(3);
    let mut tasks: Vec<Task> = Vec::new();
    let (mut partial_sets, mut removed_seen, mut orphans, mut purged) = (0, 0, 0, 0);
    for step in 0..300 {
        match rng.next(10) {
            0..=2 => {
                let n = 1 + rng.next(3) as i32;
                let req = if rng.next(2) == 0 {
                    run("vpc", n, "default", Some(vpc(&["s1"], &[&web], None)))
                } else {
                    run("plain", n, "default", None)
                };
                tasks.extend(c.run_task(req).await.unwrap().tasks);
            }
            3 if !tasks.is_empty() => {
                let t = &tasks[rng.next(tasks.len() as u64) as usize];
                let _ = c
                    .stop_task(StopTaskRequest {
                        task: t.task_arn.clone(),
                        reason: Some(format!("step {step}")),
                        ..Default::default()
                    })
                    .await;
            }
            4..=8 if !tasks.is_empty() => {
                let t = tasks[rng.next(tasks.len() as u64) as usize].clone();
                let on = t.container_instance_arn.clone().unwrap();
                let h = hosts.iter_mut().find(|h| h.0 == on).unwrap();
                let was_stopped =
                    described(&c, "default", &t.task_arn).await.last_status == "STOPPED";
                let status = if was_stopped || rng.next(3) == 0 {
                    // A task recorded STOPPED reported running again is an orphan.
                    orphans += usize::from(was_stopped);
                    ["RUNNING", "STOPPED"][rng.next(2) as usize]
                } else {
                    "RUNNING"
                };
                h.5 += 1;
                let _ = c
                    .apply_state_change(&h.2, report(h.5, &t.task_arn, status))
                    .await;
            }
            9 if !tasks.is_empty() && rng.next(2) == 0 => {
                // A task stops and the retention sweep purges its record before any set
                // carried its removal.
                let at = rng.next(tasks.len() as u64) as usize;
                let t = tasks[at].clone();
                let on = t.container_instance_arn.clone().unwrap();
                let h = hosts.iter_mut().find(|h| h.0 == on).unwrap();
                h.5 += 1;
                let _ = c
                    .apply_state_change(&h.2, report(h.5, &t.task_arn, "STOPPED"))
                    .await;
                let id = tasks::task_id(&t.task_arn).unwrap().to_string();
                let mut st = c.state.lock().await;
                if st
                    .tasks
                    .get(&id)
                    .is_some_and(|t| t.last_status == "STOPPED")
                {
                    st.remove_task(&id);
                    purged += 1;
                    drop(st);
                    tasks.remove(at);
                }
            }
            _ => {
                let _ = c
                    .authorize_security_group_ingress(SecurityGroupIngressRequest {
                        group_id: Some(web.clone()),
                        ip_protocol: Some("tcp".into()),
                        from_port: Some(1000 + step),
                        to_port: Some(1000 + step),
                        cidr_ip: Some("10.0.0.0/8".into()),
                        ..Default::default()
                    })
                    .await;
            }
        }
        for (arn, _, _, sent, folded, _) in hosts.iter_mut() {
            let id = id_of(arn);
            let d = c.desired_tasks(&id, step as u64 + 2, sent).await;
            if d.partial {
                partial_sets += 1;
            } else {
                folded.clear();
            }
            let named: BTreeSet<String> = d
                .tasks
                .iter()
                .map(|a| a.task.as_ref().unwrap().task_arn.clone())
                .collect();
            for r in &d.removed {
                assert!(!named.contains(r), "step {step}: {r} named and removed");
                assert!(
                    folded.remove(r).is_some(),
                    "step {step}: {r} removed, never named"
                );
                removed_seen += 1;
            }
            for a in d.tasks {
                folded.insert(a.task.as_ref().unwrap().task_arn.clone(), a);
            }
            let whole = c.desired_tasks(&id, 1, &mut SessionSent::new(2)).await;
            assert!(!whole.partial);
            let view = |a: &TaskAssignment| {
                (
                    a.task.clone(),
                    a.desired_status.clone(),
                    a.stopped_reason.clone(),
                    a.network.clone(),
                )
            };
            let want: BTreeMap<String, _> = whole
                .tasks
                .iter()
                .map(|a| (a.task.as_ref().unwrap().task_arn.clone(), view(a)))
                .collect();
            let got: BTreeMap<String, _> =
                folded.iter().map(|(k, a)| (k.clone(), view(a))).collect();
            assert_eq!(got, want, "step {step}, instance {id}");
        }
    }
    assert!(
        partial_sets > 500 && removed_seen > 10 && orphans > 0 && purged > 0,
        "the replay must exercise partial sets ({partial_sets}), removals ({removed_seen}), orphans ({orphans}) and purges ({purged})"
    );
}
