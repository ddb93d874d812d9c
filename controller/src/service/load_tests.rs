use super::super::test_support::*;
use super::*;
use crate::service::retention::stopped_since;
use crate::test_rng::Lcg;
use berth_proto::v1::{Container, NetworkBinding};

/// The load of `arn` counted from scratch over the index of tasks not yet STOPPED, as
/// placement counted it before loads were kept.
fn recount(st: &State, arn: &str) -> InstanceLoad {
    let mut l = InstanceLoad::default();
    for (_, t) in st.active_tasks(arn) {
        let (cpu, memory) = task_reservation(t);
        l.tasks += 1;
        l.cpu += cpu;
        l.memory += memory;
        l.wanted += i64::from(t.desired_status != "STOPPED");
        l.running += i64::from(t.last_status == "RUNNING");
        if let Some(g) = &t.group {
            *l.groups.entry(g.clone()).or_default() += 1;
        }
        for p in st.task_ports(t) {
            *l.ports.entry(p).or_default() += 1;
        }
    }
    l
}

#[tokio::test]
async fn loads_equal_a_recount_after_every_change() {
    let c = controller();
    register_td(
        &c,
        r#"{"family":"web","networkMode":"bridge","containerDefinitions":[{"name":"a","image":"x","memory":64,
            "portMappings":[{"containerPort":80,"hostPort":8080}]}]}"#,
    )
    .await;
    register_td(
        &c,
        r#"{"family":"job","containerDefinitions":[{"name":"a","image":"x","memory":64}]}"#,
    )
    .await;
    let mut st = c.state.lock().await;
    let instances = ["ci-a", "ci-b", "ci-c"]
        .map(|i| format!("arn:aws:ecs:local:0:container-instance/default/{i}"));
    let defs = [
        "arn:aws:ecs:on-prem:000000000000:task-definition/web:1",
        "arn:aws:ecs:on-prem:000000000000:task-definition/job:1",
    ];
    assert!(
        st.find_task_definition(defs[0]).is_ok(),
        "the test's definition ARN must resolve, or no static port is ever counted"
    );
    let mut rng = Lcg(7);
    let mut ports_seen = 0;
    for step in 0..3000 {
        let id = format!("t{}", rng.next(25));
        if rng.next(10) == 0 {
            st.remove_task(&id);
        } else {
            let last = ["PROVISIONING", "PENDING", "RUNNING", "STOPPED"][rng.next(4) as usize];
            let t = Task {
                task_arn: format!("arn:aws:ecs:local:0:task/default/{id}"),
                container_instance_arn: (rng.next(8) != 0)
                    .then(|| instances[rng.next(3) as usize].clone()),
                task_definition_arn: defs[rng.next(2) as usize].into(),
                cpu: Some((rng.next(4) * 128).to_string()),
                memory: Some((64 + rng.next(4) * 64).to_string()),
                group: (rng.next(4) != 0).then(|| format!("family:g{}", rng.next(3))),
                last_status: last.into(),
                desired_status: if last == "STOPPED" || rng.next(3) == 0 {
                    "STOPPED".into()
                } else {
                    "RUNNING".into()
                },
                containers: vec![Container {
                    name: "a".into(),
                    network_bindings: (rng.next(2) == 0)
                        .then(|| NetworkBinding {
                            host_port: Some(32768 + rng.next(3) as i32),
                            protocol: (rng.next(2) == 0).then(|| "udp".to_string()),
                            ..Default::default()
                        })
                        .into_iter()
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            };
            assert_eq!(stopped_since(&t).is_some(), last == "STOPPED");
            st.put_task(id, t);
        }
        for arn in &instances {
            let want = recount(&st, arn);
            ports_seen += want.ports.len();
            assert_eq!(st.load_of(arn), want, "step {step}, instance {arn}");
        }
    }
    assert!(ports_seen > 0, "some step must hold ports");
    assert!(
        st.loads.values().all(|l| l.tasks > 0),
        "an instance with no task keeps no load"
    );
}
