//! The agent link, end to end over gRPC: an in-process controller on 127.0.0.1:0 (the real
//! service over an in-memory store) and a scripted agent speaking the real proto. No root.

use berth_controller::api::agent::AgentApi;
use berth_controller::fleet::Fleet;
use berth_controller::service::Controller;
use berth_controller::store::{memory::MemoryStore, Store};
use berth_proto::link;
use berth_proto::v1::agent_message::Message as ToController;
use berth_proto::v1::controller_message::Message as FromController;
use berth_proto::v1::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tokio_stream::StreamExt;

const WAIT: Duration = Duration::from_secs(10);

struct Server {
    addr: std::net::SocketAddr,
    controller: Arc<Controller>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A controller serving the agent link on a free loopback port, over `store`.
async fn serve(store: Arc<dyn Store>, heartbeat: Duration) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let controller = Arc::new(Controller::load(store, Arc::new(Fleet::default())).unwrap());
    let api = AgentApi::new(controller.clone()).with_heartbeat(heartbeat);
    let ecs = controller.clone();
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(api.into_server())
            // The user-facing API too, for the CLI's side of a scenario.
            .add_service(ecs_server::EcsServer::new(
                berth_controller::api::ecs::EcsApi(ecs),
            ))
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await;
    });
    Server {
        addr,
        controller,
        task,
    }
}

/// A scripted agent session.
struct Agent {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<ControllerMessage>,
    /// Desired sets that arrived while waiting for something else.
    stash: std::collections::VecDeque<DesiredTasks>,
    /// The set converged on so far: the last whole set with the partial ones after it applied
    /// (link protocol 2), as the agent's engine converges.
    set: Vec<TaskAssignment>,
}

fn msg(m: ToController) -> AgentMessage {
    AgentMessage { message: Some(m) }
}

fn hello(instance: &str, epoch: &str) -> AgentHello {
    AgentHello {
        container_instance_arn: instance.into(),
        cluster: "default".into(),
        protocol_version: link::PROTOCOL_VERSION,
        agent_version: "test".into(),
        state_epoch: epoch.into(),
    }
}

async fn client(
    addr: std::net::SocketAddr,
) -> agent_client::AgentClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    link::client(channel)
}

impl Agent {
    async fn open(addr: std::net::SocketAddr, hello: AgentHello) -> Result<Agent, tonic::Status> {
        let (tx, rx) = mpsc::channel(4096);
        tx.send(msg(ToController::Hello(hello))).await.unwrap();
        let rx = client(addr)
            .await
            .session(ReceiverStream::new(rx))
            .await?
            .into_inner();
        let mut a = Agent {
            tx,
            rx,
            stash: Default::default(),
            set: Vec::new(),
        };
        match a.next().await {
            Some(FromController::Hello(h)) => {
                assert_eq!(h.protocol_version, link::PROTOCOL_VERSION)
            }
            other => panic!("expected the controller's hello, got {other:?}"),
        }
        Ok(a)
    }

    /// The next message, heartbeats included; None when the stream ended.
    async fn next(&mut self) -> Option<FromController> {
        match tokio::time::timeout(WAIT, self.rx.next()).await {
            Ok(Some(Ok(m))) => m.message,
            Ok(_) => None,
            Err(_) => panic!("nothing from the controller within {WAIT:?}"),
        }
    }

    /// The next DesiredTasks as it came (whole or partial), acknowledged and converged on.
    async fn desired_message(&mut self) -> DesiredTasks {
        loop {
            let next = match self.stash.pop_front() {
                Some(d) => Some(FromController::DesiredTasks(d)),
                None => self.next().await,
            };
            match next {
                Some(FromController::DesiredTasks(d)) => {
                    self.send(ToController::DesiredTasksAck(d.seq)).await;
                    let arn = |a: &TaskAssignment| a.task.as_ref().unwrap().task_arn.clone();
                    if d.partial {
                        assert!(
                            !d.tasks.is_empty() || !d.removed.is_empty(),
                            "an empty partial set"
                        );
                        for a in &d.tasks {
                            assert!(
                                !d.removed.contains(&arn(a)),
                                "named and removed: {}",
                                arn(a)
                            );
                            match self.set.iter_mut().find(|x| arn(x) == arn(a)) {
                                Some(x) => *x = a.clone(),
                                None => self.set.push(a.clone()),
                            }
                        }
                        self.set.retain(|x| !d.removed.contains(&arn(x)));
                    } else {
                        assert!(d.removed.is_empty(), "a whole set with removals");
                        self.set = d.tasks.clone();
                    }
                    return d;
                }
                Some(_) => {}
                None => panic!("session ended while waiting for desired tasks"),
            }
        }
    }

    /// The set converged on once the next DesiredTasks is applied (what a whole set would say).
    async fn desired(&mut self) -> DesiredTasks {
        let d = self.desired_message().await;
        DesiredTasks {
            seq: d.seq,
            tasks: self.set.clone(),
            ..Default::default()
        }
    }

    /// Waits for a desired set satisfying `f`.
    async fn desired_until(&mut self, f: impl Fn(&DesiredTasks) -> bool) -> DesiredTasks {
        loop {
            let d = self.desired().await;
            if f(&d) {
                return d;
            }
        }
    }

    async fn ack(&mut self, seq: u64) {
        loop {
            match self.next().await {
                Some(FromController::StateChangeAck(s)) if s >= seq => return,
                Some(FromController::DesiredTasks(d)) => self.stash.push_back(d),
                Some(_) => {}
                None => panic!("session ended while waiting for ack {seq}"),
            }
        }
    }

    async fn send(&self, m: ToController) {
        self.tx.send(msg(m)).await.unwrap();
    }

    async fn report(&self, c: TaskStateChange) {
        self.send(ToController::TaskStateChange(c)).await;
    }
}

async fn register(addr: std::net::SocketAddr) -> String {
    let r = client(addr)
        .await
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            total_resources: ["CPU", "MEMORY"]
                .iter()
                .map(|n| Resource {
                    name: n.to_string(),
                    r#type: "INTEGER".into(),
                    integer_value: 1 << 20,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    r.into_inner()
        .container_instance
        .unwrap()
        .container_instance_arn
}

async fn run_task(c: &Controller, td_json: &str, count: i32) -> Vec<Task> {
    let td: RegisterTaskDefinitionRequest = serde_json::from_str(td_json).unwrap();
    let family = td.family.clone();
    c.register_task_definition(td).await.unwrap();
    let req = RunTaskRequest {
        task_definition: family,
        count: Some(count),
        ..Default::default()
    };
    // The agent's DesiredTasksAck may still be on its way: until the controller has it, the
    // instance is no candidate (AGENT).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = c.run_task(req.clone()).await.unwrap();
        let missing = r.failures.iter().any(|f| f.reason == "AGENT");
        if missing && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        assert!(r.failures.is_empty(), "{:?}", r.failures);
        return r.tasks;
    }
}

/// Waits until the controller has taken in the agent's DesiredTasksAck (a placement candidate).
async fn wait_connected(c: &Controller, instance_arn: &str) {
    let id = berth_proto::arn::short_id("container-instance", instance_arn).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !c.fleet().connected(id) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} never connected"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_instance_takes_tasks_only_once_its_agent_has_taken_in_a_desired_set() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let id = berth_proto::arn::short_id("container-instance", &ci)
        .unwrap()
        .to_string();
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    // Connected, but its first desired set not yet acknowledged: no candidate.
    let td: RegisterTaskDefinitionRequest = serde_json::from_str(WEB).unwrap();
    s.controller.register_task_definition(td).await.unwrap();
    let r = s
        .controller
        .run_task(RunTaskRequest {
            task_definition: "web".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(r.tasks.is_empty());
    assert_eq!(r.failures[0].reason, "AGENT", "{:?}", r.failures);
    assert!(!s.controller.fleet().connected(&id));
    // Once it has taken one in, it is.
    a.desired().await;
    let placed = run_task(&s.controller, WEB, 1).await;
    assert_eq!(placed.len(), 1);
    assert!(s.controller.fleet().connected(&id));
}

const WEB: &str =
    r#"{"family":"web","containerDefinitions":[{"name":"a","image":"busybox","memory":64}]}"#;

fn report(seq: u64, task: &str, status: &str) -> TaskStateChange {
    TaskStateChange {
        seq,
        task_arn: task.into(),
        last_status: status.into(),
        containers: vec![ContainerStateChange {
            name: "a".into(),
            last_status: if status == "STOPPED" {
                "STOPPED"
            } else {
                "RUNNING"
            }
            .into(),
            image: Some("busybox".into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn describe(c: &Controller, task: &str) -> Option<Task> {
    c.describe_tasks(DescribeTasksRequest {
        tasks: vec![task.into()],
        ..Default::default()
    })
    .await
    .unwrap()
    .tasks
    .pop()
}

fn names(d: &DesiredTasks) -> Vec<(String, String)> {
    d.tasks
        .iter()
        .map(|a| {
            (
                a.task.as_ref().unwrap().task_arn.clone(),
                a.desired_status.clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_lost_ack_means_a_resend_that_is_applied_once() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;
    let applied = describe(&s.controller, &task.task_arn).await.unwrap();
    assert_eq!(applied.last_status, "RUNNING");
    // The ack is lost with the connection: the agent reconnects (same epoch) and resends.
    drop(a);
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;
    let again = describe(&s.controller, &task.task_arn).await.unwrap();
    assert_eq!(again.version, applied.version, "a resend was applied twice");
}

#[tokio::test]
async fn a_new_session_replaces_the_old_one() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut old = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    old.desired().await;
    let mut new = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    new.desired().await;
    run_task(&s.controller, WEB, 1).await;
    new.desired_until(|d| d.tasks.len() == 1).await;
    // The replaced session ends without being sent the new task.
    loop {
        match old.next().await {
            Some(FromController::DesiredTasks(d)) => assert!(d.tasks.is_empty()),
            Some(_) => {}
            None => break,
        }
    }
}

#[tokio::test]
async fn an_unknown_task_is_adopted_and_survives_a_controller_restart() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let s = serve(store.clone(), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    // A task definition the controller knows, and a task it has no record of (a controller
    // restored from a backup).
    let td: RegisterTaskDefinitionRequest = serde_json::from_str(WEB).unwrap();
    let td_arn = s
        .controller
        .register_task_definition(td)
        .await
        .unwrap()
        .task_definition
        .unwrap()
        .task_definition_arn;
    let orphan = "arn:aws:ecs:on-prem:000000000000:task/default/0123456789abcdef0123456789abcdef";
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    a.report(TaskStateChange {
        unknown_to_controller: true,
        task_definition_arn: Some(td_arn.clone()),
        ..report(1, orphan, "RUNNING")
    })
    .await;
    a.ack(1).await;
    // Adopted: named RUNNING (not a stop confirmation), visible in ListTasks/DescribeTasks.
    let d = a.desired_until(|d| !d.tasks.is_empty()).await;
    assert_eq!(names(&d), [(orphan.to_string(), "RUNNING".to_string())]);
    let t = describe(&s.controller, orphan).await.expect("adopted task");
    assert_eq!(
        (t.last_status.as_str(), t.desired_status.as_str()),
        ("RUNNING", "RUNNING")
    );
    assert_eq!(t.task_definition_arn, td_arn);
    assert_eq!(t.containers[0].image, "busybox");
    assert_eq!(t.memory.as_deref(), Some("64"));
    // The controller restarts on the same store.
    drop(a);
    drop(s);
    let s = serve(store, link::HEARTBEAT_INTERVAL).await;
    let listed = s
        .controller
        .list_tasks(ListTasksRequest::default())
        .await
        .unwrap()
        .items;
    assert_eq!(listed, [orphan.to_string()]);
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    let d = a.desired().await;
    assert_eq!(names(&d), [(orphan.to_string(), "RUNNING".to_string())]);
    // Only an explicit StopTask stops it.
    s.controller
        .stop_task(StopTaskRequest {
            task: orphan.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    a.desired_until(|d| names(d) == [(orphan.to_string(), "STOPPED".to_string())])
        .await;
    a.report(report(2, orphan, "STOPPED")).await;
    a.desired_until(|d| d.tasks.is_empty()).await;
    assert_eq!(
        describe(&s.controller, orphan).await.unwrap().last_status,
        "STOPPED"
    );
}

#[tokio::test]
async fn a_stop_is_confirmed_after_a_controller_restart_until_the_agent_reports_it() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let s = serve(store.clone(), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;
    s.controller
        .stop_task(StopTaskRequest {
            task: task.task_arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    drop(a);
    drop(s);
    // The tombstone: after the restart the task is still named STOPPED until reported stopped.
    let s = serve(store, link::HEARTBEAT_INTERVAL).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    let d = a.desired().await;
    assert_eq!(names(&d), [(task.task_arn.clone(), "STOPPED".to_string())]);
    a.report(report(2, &task.task_arn, "STOPPED")).await;
    a.desired_until(|d| d.tasks.is_empty()).await;
    // Recorded STOPPED yet reported running (a stale agent state): its stop is confirmed,
    // it is not adopted again.
    a.report(report(3, &task.task_arn, "RUNNING")).await;
    let d = a.desired_until(|d| !d.tasks.is_empty()).await;
    assert_eq!(names(&d), [(task.task_arn.clone(), "STOPPED".to_string())]);
}

#[tokio::test]
async fn seq_going_backwards_is_accepted_in_a_new_epoch() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(5, &task.task_arn, "RUNNING")).await;
    a.ack(5).await;
    // Same epoch (a reconnect): a lower seq is a resend, acknowledged and not applied.
    drop(a);
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    a.report(report(1, &task.task_arn, "STOPPED")).await;
    a.ack(1).await;
    assert_eq!(
        describe(&s.controller, &task.task_arn)
            .await
            .unwrap()
            .last_status,
        "RUNNING"
    );
    drop(a);
    // The agent's numbering restarted (a new process, a state file restored from a snapshot).
    let mut a = Agent::open(s.addr, hello(&ci, "e2")).await.unwrap();
    a.desired().await;
    a.report(report(1, &task.task_arn, "STOPPED")).await;
    a.ack(1).await;
    assert_eq!(
        describe(&s.controller, &task.task_arn)
            .await
            .unwrap()
            .last_status,
        "STOPPED"
    );
}

#[tokio::test]
async fn a_desired_set_over_four_mib_arrives_and_definitions_go_once_per_session() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    // Whole sets: a protocol 1 agent (a v2 one gets the same definitions, in partial sets:
    // a_v2_agent_gets_partial_sets_and_a_v1_agent_whole_ones).
    let v1 = |epoch| AgentHello {
        protocol_version: 1,
        ..hello(&ci, epoch)
    };
    let mut a = Agent::open(s.addr, v1("e1")).await.unwrap();
    a.desired().await;
    // 10 containers × 40 KiB of environment = 400 KiB per definition; 12 tasks ≈ 4.8 MiB.
    let big = "x".repeat(40 * 1024);
    let containers: Vec<String> = (0..10)
        .map(|i| {
            format!(
                r#"{{"name":"c{i}","image":"busybox","memory":8,"environment":[{{"name":"E","value":"{big}"}}]}}"#
            )
        })
        .collect();
    let td = format!(
        r#"{{"family":"big","containerDefinitions":[{}]}}"#,
        containers.join(",")
    );
    let mut tasks = run_task(&s.controller, &td, 10).await;
    tasks.extend(run_task(&s.controller, &td, 2).await);
    let d = a.desired_until(|d| d.tasks.len() == 12).await;
    use prost::Message;
    assert!(
        ControllerMessage {
            message: Some(FromController::DesiredTasks(d.clone()))
        }
        .encoded_len()
            > 4 * 1024 * 1024
    );
    assert!(d.tasks.iter().all(|t| t.task_definition.is_some()));
    // Later sets of the session carry no definition the agent already has.
    s.controller
        .stop_task(StopTaskRequest {
            task: tasks[0].task_arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let d = a
        .desired_until(|d| d.tasks.iter().any(|t| t.desired_status == "STOPPED"))
        .await;
    assert!(d.tasks.iter().all(|t| t.task_definition.is_none()));
    // A new session is a full resync.
    drop(a);
    let mut a = Agent::open(s.addr, v1("e1")).await.unwrap();
    let d = a.desired().await;
    assert_eq!(
        d.tasks
            .iter()
            .filter(|t| t.task_definition.is_some())
            .count(),
        11
    );
}

/// Link protocol 2 (issue 12): after a whole first set, an agent speaking 2 gets only what
/// changed (a new task, a stop, a changed record) and, in `removed`, what the set let go of; an
/// agent speaking 1 keeps getting whole sets.
#[tokio::test]
async fn a_v2_agent_gets_partial_sets_and_a_v1_agent_whole_ones() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    let first = a.desired_message().await;
    assert!(!first.partial && first.tasks.is_empty() && first.removed.is_empty());
    let t1 = run_task(&s.controller, WEB, 1).await.remove(0);
    let d = a.desired_message().await;
    assert!(d.partial && d.removed.is_empty(), "{d:?}");
    assert_eq!(names(&d), [(t1.task_arn.clone(), "RUNNING".to_string())]);
    assert!(d.tasks[0].task_definition.is_some());
    let t2 = run_task(&s.controller, WEB, 1).await.remove(0);
    let d = a.desired_message().await;
    assert!(d.partial && d.removed.is_empty(), "{d:?}");
    assert_eq!(names(&d), [(t2.task_arn.clone(), "RUNNING".to_string())]);
    assert!(d.tasks[0].task_definition.is_some());
    // A stop is one assignment.
    s.controller
        .stop_task(StopTaskRequest {
            task: t1.task_arn.clone(),
            reason: Some("by test".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    let d = a.desired_message().await;
    assert!(d.partial && d.removed.is_empty(), "{d:?}");
    assert_eq!(names(&d), [(t1.task_arn.clone(), "STOPPED".to_string())]);
    assert_eq!(d.tasks[0].stopped_reason.as_deref(), Some("by test"));
    assert!(d.tasks[0].task_definition.is_none());
    // Reported STOPPED: the set lets go of it.
    a.report(report(2, &t1.task_arn, "STOPPED")).await;
    let d = a.desired_message().await;
    assert!(d.partial && d.tasks.is_empty(), "{d:?}");
    assert_eq!(d.removed, std::slice::from_ref(&t1.task_arn));
    assert_eq!(
        names(&DesiredTasks {
            tasks: a.set.clone(),
            ..Default::default()
        }),
        [(t2.task_arn.clone(), "RUNNING".to_string())]
    );
    // A changed record (the agent's report; it wakes no session) goes with the next set,
    // without the definition the session already sent.
    a.report(report(3, &t2.task_arn, "RUNNING")).await;
    a.ack(3).await;
    let t3 = run_task(&s.controller, WEB, 1).await.remove(0);
    let d = a.desired_message().await;
    assert!(d.partial && d.removed.is_empty(), "{d:?}");
    let sent: std::collections::HashMap<_, _> = d
        .tasks
        .iter()
        .map(|t| (t.task.as_ref().unwrap().task_arn.clone(), t))
        .collect();
    assert_eq!(sent.len(), 2, "{:?}", names(&d));
    assert_eq!(
        sent[&t2.task_arn].task.as_ref().unwrap().last_status,
        "RUNNING"
    );
    assert!(sent[&t2.task_arn].task_definition.is_none());
    assert!(sent[&t3.task_arn].task_definition.is_some());
    // A protocol 1 agent (a fleet mid-upgrade) gets whole sets, every time.
    drop(a);
    let mut a = Agent::open(
        s.addr,
        AgentHello {
            protocol_version: 1,
            ..hello(&ci, "e1")
        },
    )
    .await
    .unwrap();
    let sorted = |d: &DesiredTasks| {
        let mut n = names(d);
        n.sort();
        n
    };
    let running = |ts: &[&Task]| {
        let mut n: Vec<_> = ts
            .iter()
            .map(|t| (t.task_arn.clone(), "RUNNING".to_string()))
            .collect();
        n.sort();
        n
    };
    let d = a.desired_message().await;
    assert!(!d.partial && d.removed.is_empty());
    assert_eq!(sorted(&d), running(&[&t2, &t3]));
    let t4 = run_task(&s.controller, WEB, 1).await.remove(0);
    let d = a.desired_message().await;
    assert!(!d.partial && d.removed.is_empty(), "{d:?}");
    assert_eq!(sorted(&d), running(&[&t2, &t3, &t4]));
    a.report(report(4, &t4.task_arn, "STOPPED")).await;
    let d = a.desired_message().await;
    assert!(!d.partial && d.removed.is_empty(), "{d:?}");
    assert_eq!(sorted(&d), running(&[&t2, &t3]));
}

#[tokio::test]
async fn an_agent_outside_the_protocol_window_is_refused_with_one_line() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    for v in [0, link::PROTOCOL_VERSION + 1] {
        let err = Agent::open(
            s.addr,
            AgentHello {
                protocol_version: v,
                ..hello(&ci, "e1")
            },
        )
        .await
        .err()
        .expect("refused");
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert!(
            err.message().contains(&format!("link protocol {v}")) && !err.message().contains('\n'),
            "{}",
            err.message()
        );
    }
}

#[tokio::test]
async fn a_silent_agent_is_dropped_and_heartbeats_flow_both_ways() {
    let s = serve(Arc::new(MemoryStore::default()), Duration::from_millis(300)).await;
    let ci = register(s.addr).await;
    let id = berth_proto::arn::short_id("container-instance", &ci)
        .unwrap()
        .to_string();
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    let first = a.desired().await;
    // The controller sends heartbeats while it has nothing else to say.
    loop {
        if let Some(FromController::Heartbeat(_)) = a.next().await {
            break;
        }
    }
    // An agent that keeps sending heartbeats stays connected past three intervals...
    for _ in 0..12 {
        a.send(ToController::Heartbeat(Heartbeat {})).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(s.controller.fleet().connected(&id));
    // DesiredTasksAck: the controller knows what the agent has taken in.
    assert_eq!(s.controller.fleet().taken_in(&id), Some(first.seq));
    // ...and one that falls silent is dropped within about three intervals.
    let t0 = tokio::time::Instant::now();
    while a.next().await.is_some() {}
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(!s.controller.fleet().connected(&id));
}

#[tokio::test]
async fn a_flooding_agent_that_does_not_read_cannot_deadlock_the_session() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    wait_connected(&s.controller, &ci).await;
    let td: RegisterTaskDefinitionRequest = serde_json::from_str(WEB).unwrap();
    s.controller.register_task_definition(td).await.unwrap();
    // Tasks whose overrides make every desired set ~4 MiB: more than HTTP/2 lets through
    // unread.
    let big = "x".repeat(200 * 1024);
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let r = s
            .controller
            .run_task(RunTaskRequest {
                task_definition: "web".into(),
                count: Some(10),
                overrides: Some(TaskOverride {
                    container_overrides: vec![ContainerOverride {
                        name: "a".into(),
                        environment: vec![KeyValuePair {
                            name: "BIG".into(),
                            value: big.clone(),
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .unwrap();
        tasks.extend(r.tasks);
    }
    // Reports (each acknowledged, each stop changing the desired set) without reading a reply:
    // the controller must keep reading and applying regardless.
    let mut seq = 0;
    for status in ["RUNNING", "STOPPED"] {
        for t in &tasks {
            seq += 1;
            a.report(report(seq, &t.task_arn, status)).await;
        }
    }
    let stopped = || async {
        s.controller
            .list_tasks(ListTasksRequest {
                desired_status: Some("STOPPED".into()),
                ..Default::default()
            })
            .await
            .unwrap()
            .items
            .len()
    };
    let t0 = tokio::time::Instant::now();
    while stopped().await < tasks.len() {
        assert!(t0.elapsed() < WAIT, "the controller stopped reading");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.ack(seq).await;
}

#[tokio::test]
async fn a_task_follows_its_agent_re_registered_under_a_new_arn() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let old = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&old, "e1")).await.unwrap();
    a.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;
    drop(a);
    // The agent lost its identity and registered anew; it still runs the task.
    let new = register(s.addr).await;
    assert_ne!(new, old);
    let mut a = Agent::open(s.addr, hello(&new, "e2")).await.unwrap();
    assert!(a.desired().await.tasks.is_empty());
    a.report(TaskStateChange {
        unknown_to_controller: true,
        ..report(1, &task.task_arn, "RUNNING")
    })
    .await;
    let d = a.desired_until(|d| !d.tasks.is_empty()).await;
    assert_eq!(names(&d), [(task.task_arn.clone(), "RUNNING".to_string())]);
    let t = describe(&s.controller, &task.task_arn).await.unwrap();
    assert_eq!(t.container_instance_arn.as_deref(), Some(new.as_str()));
    assert_eq!(t.started_by, None, "moved, not adopted as a new task");
}

#[tokio::test]
async fn a_session_of_a_superseded_epoch_cannot_apply_reports() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut old = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    old.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    old.desired_until(|d| d.tasks.len() == 1).await;
    // A new agent process connects while the old session is still open.
    let mut new = Agent::open(s.addr, hello(&ci, "e2")).await.unwrap();
    new.desired().await;
    // Whether or not the replaced session still reads, its report is not applied.
    let _ = old
        .tx
        .send(msg(ToController::TaskStateChange(report(
            9,
            &task.task_arn,
            "STOPPED",
        ))))
        .await;
    while old.next().await.is_some() {}
    assert_eq!(
        describe(&s.controller, &task.task_arn)
            .await
            .unwrap()
            .last_status,
        "PROVISIONING"
    );
    new.report(report(1, &task.task_arn, "RUNNING")).await;
    new.ack(1).await;
    assert_eq!(
        describe(&s.controller, &task.task_arn)
            .await
            .unwrap()
            .last_status,
        "RUNNING"
    );
}

/// DeregisterContainerInstance while the agent is connected: refused while a task runs there
/// unless forced; forced, the task is recorded STOPPED (left running, unmanaged), the agent is
/// told over the link and the session ends, and the INACTIVE ARN can neither register nor open
/// a session again. A new registration is a new instance.
#[tokio::test]
async fn a_deregistered_instance_s_agent_is_told_and_its_arn_is_refused_afterwards() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    wait_connected(&s.controller, &ci).await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;

    let dereg = |force| DeregisterContainerInstanceRequest {
        container_instance: ci.clone(),
        force: Some(force),
        ..Default::default()
    };
    let e = s
        .controller
        .deregister_container_instance(dereg(false))
        .await
        .unwrap_err();
    assert_eq!(e.exception_name(), "InvalidParameterException");
    assert!(e.to_string().contains("Found running tasks"), "{e}");
    let out = s
        .controller
        .deregister_container_instance(dereg(true))
        .await
        .unwrap();
    assert_eq!(out.status, "INACTIVE");

    // The agent hears it, then the session ends.
    let told = loop {
        match a.next().await {
            Some(FromController::Deregistered(d)) => break d,
            Some(_) => {}
            None => panic!("the session ended without telling the agent"),
        }
    };
    assert_eq!(told.container_instance_arn, ci);
    while a.next().await.is_some() {}

    // The task is recorded STOPPED, with a reason that says it was left running.
    let t = describe(&s.controller, &task.task_arn).await.unwrap();
    assert_eq!(
        (t.last_status.as_str(), t.desired_status.as_str()),
        ("STOPPED", "STOPPED")
    );
    assert!(
        t.stopped_reason
            .as_deref()
            .unwrap_or_default()
            .contains("left running"),
        "{:?}",
        t.stopped_reason
    );

    // Registering or opening a session under the INACTIVE ARN is refused, marked terminal.
    let refused = client(s.addr)
        .await
        .register_container_instance(RegisterContainerInstanceRequest {
            cluster: "default".into(),
            container_instance_arn: Some(ci.clone()),
            total_resources: ["CPU", "MEMORY"]
                .iter()
                .map(|n| Resource {
                    name: n.to_string(),
                    r#type: "INTEGER".into(),
                    integer_value: 1024,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(link::is_inactive_refusal(&refused), "{refused:?}");
    let refused = Agent::open(s.addr, hello(&ci, "e2")).await.err().unwrap();
    assert!(link::is_inactive_refusal(&refused), "{refused:?}");
    assert!(
        refused.message().contains("INACTIVE"),
        "{}",
        refused.message()
    );

    // A fresh start (no saved ARN) registers a new instance.
    let new = register(s.addr).await;
    assert_ne!(new, ci);
}

/// Issue 6: a task past its stopped-task retention leaves the store only after its agent
/// confirmed it STOPPED; reported again afterwards it is a task the controller has no record of
/// (docs/ARCHITECTURE.md, "Orphans and tombstones"): reported STOPPED it is forgotten, reported
/// running it is adopted, never stopped for being unknown.
#[tokio::test]
async fn a_purged_task_reported_again_follows_the_unknown_task_rules() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    let task = run_task(&s.controller, WEB, 1).await.remove(0);
    a.desired_until(|d| d.tasks.len() == 1).await;
    a.report(report(1, &task.task_arn, "RUNNING")).await;
    a.ack(1).await;
    let far = std::time::SystemTime::now() + Duration::from_secs(100 * 3600);
    let hour = Duration::from_secs(3600);
    // Running, or stopped only as desired: the record stays, however long after.
    s.controller
        .stop_task(StopTaskRequest {
            task: task.task_arn.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    let purged = s.controller.purge_stopped(far, hour).await.unwrap();
    assert_eq!(purged.tasks, 0);
    assert!(describe(&s.controller, &task.task_arn).await.is_some());
    // Confirmed STOPPED: it leaves once its retention has passed.
    a.report(report(2, &task.task_arn, "STOPPED")).await;
    a.ack(2).await;
    a.desired_until(|d| d.tasks.is_empty()).await;
    let purged = s.controller.purge_stopped(far, hour).await.unwrap();
    assert_eq!(purged.tasks, 1);
    assert!(describe(&s.controller, &task.task_arn).await.is_none());
    // Reported STOPPED again (an agent that had not forgotten it): nothing comes back.
    a.report(TaskStateChange {
        unknown_to_controller: true,
        ..report(3, &task.task_arn, "STOPPED")
    })
    .await;
    a.ack(3).await;
    assert!(describe(&s.controller, &task.task_arn).await.is_none());
    // Reported running (a stale agent state whose containers do run): adopted, not stopped.
    a.report(TaskStateChange {
        unknown_to_controller: true,
        task_definition_arn: Some(task.task_definition_arn.clone()),
        ..report(4, &task.task_arn, "RUNNING")
    })
    .await;
    a.ack(4).await;
    let d = a.desired_until(|d| !d.tasks.is_empty()).await;
    assert_eq!(names(&d), [(task.task_arn.clone(), "RUNNING".to_string())]);
    let t = describe(&s.controller, &task.task_arn).await.unwrap();
    assert_eq!(t.started_by.as_deref(), Some("berth:adopted"));
}

/// Issue 11, end to end without root: the agent's pull_progress reaches the controller's
/// memory, DescribePullProgress answers it, and `berth ecs run-task --wait` (the CLI's own
/// code, against the real Ecs service) prints it while the task is PENDING and ends once the
/// agent reports it RUNNING.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_progress_reaches_run_task_wait_until_the_task_runs() {
    let s = serve(Arc::new(MemoryStore::default()), link::HEARTBEAT_INTERVAL).await;
    let ci = register(s.addr).await;
    let mut a = Agent::open(s.addr, hello(&ci, "e1")).await.unwrap();
    a.desired().await;
    wait_connected(&s.controller, &ci).await;
    let td: RegisterTaskDefinitionRequest = serde_json::from_str(WEB).unwrap();
    s.controller.register_task_definition(td).await.unwrap();

    let said = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let url = format!("http://{}", s.addr);
    let lines = said.clone();
    let cli = tokio::spawn(async move {
        let mut conn = berth_controller::cli::run::Connection::open_at(&url, false)
            .await
            .unwrap();
        berth_controller::cli::follow::run_task_and_wait(
            &mut conn,
            serde_json::json!({"taskDefinition": "web"}),
            Duration::from_secs(60),
            Duration::from_millis(20),
            &mut |l| lines.lock().unwrap().push(l.to_string()),
        )
        .await
    });

    let d = a.desired_until(|d| !d.tasks.is_empty()).await;
    let task = names(&d)[0].0.clone();
    let id = task.rsplit('/').next().unwrap()[..8].to_string();
    a.send(ToController::PullProgress(TaskPullProgress {
        task_arn: task.clone(),
        containers: vec![ContainerPullProgress {
            container_name: "a".into(),
            image: "busybox".into(),
            phase: "DOWNLOADING".into(),
            layers_done: 1,
            layers_total: 2,
            bytes_done: 1_000_000,
            bytes_total: 2_000_000,
        }],
    }))
    .await;
    let want = format!("{id}…: a: DOWNLOADING 1/2 layers, 1.0 of 2.0 MB");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !said.lock().unwrap().contains(&want) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the CLI never showed the pull: {:?}",
            said.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let p = s
        .controller
        .describe_pull_progress(DescribePullProgressRequest {
            cluster: None,
            tasks: vec![task.clone()],
        })
        .await
        .unwrap();
    assert_eq!(p.progress[0].containers[0].bytes_done, 1_000_000);

    a.report(report(1, &task, "RUNNING")).await;
    let (json, end) = tokio::time::timeout(WAIT, cli)
        .await
        .expect("the wait ends once the task runs")
        .unwrap()
        .unwrap();
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(json["tasks"][0]["lastStatus"], "RUNNING");
    assert_eq!(json["tasks"][0]["taskArn"], task.as_str());
    let said = said.lock().unwrap().clone();
    assert_eq!(said.last(), Some(&format!("{id}…: RUNNING")), "{said:?}");
}
