//! The task state machine against fakes of the runtime and cgroups (no root needed). The same
//! behaviour is integration-tested on real containerd in `tests/`.

use super::*;
use crate::cgroups::CgroupError;
use crate::runtime::{ContainerState, CreateContainer, ImageConfig, RuntimeError};
use crate::state::AgentState;
use async_trait::async_trait;
use berth_proto::v1::{Task, TaskAssignment, TaskDefinition};
use std::collections::HashMap;
use tokio::sync::watch;

/// A fake container: its state and the exit status its waiters watch for.
type FakeContainer = (ContainerState, watch::Sender<Option<u32>>);
/// A task cgroup as created: task id, cpu units, MiB.
type CreatedCgroup = (String, Option<i64>, Option<i64>);

#[derive(Default)]
struct FakeRuntime {
    containers: Mutex<HashMap<String, FakeContainer>>,
    /// Signals sent, in order: (container, signal, virtual time).
    kills: Mutex<Vec<(String, u32, tokio::time::Instant)>>,
    ignore_sigterm: bool,
    fail_start: bool,
    /// A container (by name suffix) that exits with this status as soon as it starts.
    exit_on_start: Option<(&'static str, u32)>,
}

impl FakeRuntime {
    fn exit(&self, id: &str, code: u32) {
        if let Some((state, tx)) = self.containers.lock().unwrap().get_mut(id) {
            *state = ContainerState::Stopped(code);
            tx.send_replace(Some(code));
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        if reference.contains("missing") {
            return Err(RuntimeError::ImageNotFound(reference.into()));
        }
        Ok(ImageConfig {
            name: reference.into(),
            cmd: vec!["sh".into()],
            ..Default::default()
        })
    }
    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        // Real runtime calls are I/O: other tasks (waiters) run meanwhile.
        tokio::task::yield_now().await;
        self.containers.lock().unwrap().insert(
            c.id.clone(),
            (ContainerState::Created, watch::channel(None).0),
        );
        Ok(())
    }
    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        if self.fail_start {
            return Err(RuntimeError::Call {
                op: "start",
                id: c.id.clone(),
                message: "exec: \"nope\": not found".into(),
            });
        }
        if let Some((state, _)) = self.containers.lock().unwrap().get_mut(&c.id) {
            *state = ContainerState::Running;
        }
        if let Some((name, code)) = self.exit_on_start {
            if c.id.ends_with(name) {
                self.exit(&c.id, code);
                // Let its waiter deliver the exit while later containers are still starting.
                tokio::task::yield_now().await;
            }
        }
        Ok(())
    }
    async fn wait(&self, id: &str) -> Result<u32, RuntimeError> {
        let mut rx = match self.containers.lock().unwrap().get(id) {
            Some((_, tx)) => tx.subscribe(),
            None => {
                return Err(RuntimeError::Call {
                    op: "wait",
                    id: id.into(),
                    message: "not found".into(),
                })
            }
        };
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Err(RuntimeError::Call {
                    op: "wait",
                    id: id.into(),
                    message: "gone".into(),
                });
            }
        }
    }
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.kills
            .lock()
            .unwrap()
            .push((id.into(), signal, tokio::time::Instant::now()));
        if signal == 9 || !self.ignore_sigterm {
            self.exit(id, 128 + signal);
        }
        Ok(())
    }
    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        Ok(self
            .containers
            .lock()
            .unwrap()
            .get(id)
            .map(|c| c.0)
            .unwrap_or(ContainerState::Missing))
    }
    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
}

#[derive(Default)]
struct FakeCgroups {
    created: Mutex<Vec<CreatedCgroup>>,
    removed: Mutex<Vec<String>>,
}

impl Cgroups for FakeCgroups {
    fn create_task(
        &self,
        task_id: &str,
        l: &crate::cgroups::TaskLimits,
    ) -> Result<(), CgroupError> {
        self.created
            .lock()
            .unwrap()
            .push((task_id.into(), l.cpu_units, l.memory_mib));
        Ok(())
    }
    fn container_path(&self, task_id: &str, container: &str) -> String {
        format!("/test/{task_id}/{container}")
    }
    fn oom_killed(&self, _task_id: &str, _container: &str) -> bool {
        false
    }
    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError> {
        self.removed.lock().unwrap().push(task_id.into());
        Ok(())
    }
}

struct Harness {
    engine: Engine<FakeRuntime, FakeCgroups>,
    runtime: Arc<FakeRuntime>,
    cgroups: Arc<FakeCgroups>,
    reporter: Arc<Reporter>,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(runtime: FakeRuntime) -> Harness {
    let dir = std::env::temp_dir().join(format!("berth-engine-{}", uuid::Uuid::new_v4().simple()));
    let data = DataDir(dir.clone());
    let reporter = Arc::new(Reporter::new(data.clone(), AgentState::default()));
    let runtime = Arc::new(runtime);
    let cgroups = Arc::new(FakeCgroups::default());
    let engine = Engine::start(
        runtime.clone(),
        cgroups.clone(),
        reporter.clone(),
        EngineConfig {
            data_dir: data,
            cluster: "c".into(),
            stop_timeout: Duration::from_secs(30),
            security: Default::default(),
        },
    )
    .unwrap();
    Harness {
        engine,
        runtime,
        cgroups,
        reporter,
        dir,
    }
}

const ARN: &str = "arn:aws:ecs:on-prem:000000000000:task/c/0123456789abcdef0123456789abcdef";
const ID: &str = "0123456789abcdef0123456789abcdef";

fn assignment(desired: &str, td: &str) -> DesiredTasks {
    let td: TaskDefinition = serde_json::from_str(td).unwrap();
    let task = Task {
        task_arn: ARN.into(),
        last_status: "PROVISIONING".into(),
        containers: td
            .container_definitions
            .iter()
            .map(|c| berth_proto::v1::Container {
                name: c.name.clone(),
                last_status: "PENDING".into(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    DesiredTasks {
        seq: 1,
        tasks: vec![TaskAssignment {
            task: Some(task),
            task_definition: Some(td),
            desired_status: desired.into(),
            stopped_reason: Some("by test".into()),
            stop_code: Some("UserInitiated".into()),
        }],
    }
}

const TWO: &str = r#"{"family":"f","revision":1,"networkMode":"none","cpu":"512","memory":"256","containerDefinitions":[
  {"name":"main","image":"i","essential":true},{"name":"side","image":"i","essential":false}]}"#;

/// Waits (on report events) until the outbox holds a report matching `f`.
async fn reported(h: &Harness, f: impl Fn(&TaskStateChange) -> bool) -> TaskStateChange {
    let mut rx = h.reporter.subscribe();
    loop {
        if let Some(c) = h.reporter.pending_after(0).into_iter().find(|c| f(c)) {
            return c;
        }
        tokio::time::timeout(Duration::from_secs(600), rx.changed())
            .await
            .expect("no report")
            .unwrap();
    }
}

fn container<'a>(c: &'a TaskStateChange, name: &str) -> &'a berth_proto::v1::ContainerStateChange {
    c.containers.iter().find(|x| x.name == name).unwrap()
}

#[tokio::test(start_paused = true)]
async fn essential_exit_stops_siblings_and_cleans_up() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert!(running.started_at.is_some() && running.pull_started_at.is_some());
    assert_eq!(
        h.cgroups.created.lock().unwrap()[0],
        (ID.to_string(), Some(512), Some(256))
    );
    h.runtime.exit(&format!("{ID}-main"), 3);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Essential container in task exited")
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(3));
    assert_eq!(container(&stopped, "side").exit_code, Some(143));
    assert_eq!(h.runtime.kills.lock().unwrap()[0].1, 15);
    assert_eq!(
        h.cgroups.removed.lock().unwrap().as_slice(),
        [ID.to_string()]
    );
    assert!(h.runtime.containers.lock().unwrap().is_empty());
    // Statuses in the outbox never go backwards.
    let order: Vec<String> = h
        .reporter
        .pending_after(0)
        .iter()
        .map(|c| c.last_status.clone())
        .collect();
    let pos = |s: &str| order.iter().position(|x| x == s).unwrap();
    assert!(
        pos("PENDING") < pos("RUNNING")
            && pos("RUNNING") < pos("STOPPING")
            && pos("STOPPING") < pos("STOPPED")
    );
}

#[tokio::test(start_paused = true)]
async fn sigkill_only_after_stop_timeout() {
    let h = harness(FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    });
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[{"name":"main","image":"i","stopTimeout":7}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("UserInitiated"));
    assert_eq!(stopped.stopped_reason.as_deref(), Some("by test"));
    assert_eq!(container(&stopped, "main").exit_code, Some(137));
    let kills = h.runtime.kills.lock().unwrap().clone();
    assert_eq!((kills[0].1, kills[1].1), (15, 9));
    assert!(kills[1].2 - kills[0].2 >= Duration::from_secs(7));
}

#[tokio::test(start_paused = true)]
async fn start_failures_are_reported_as_ecs_names_them() {
    let one = |mode: &str, image: &str| {
        format!(
            r#"{{"family":"f","revision":1,"networkMode":"{mode}","containerDefinitions":[{{"name":"main","image":"{image}"}}]}}"#
        )
    };
    let cases = [
        (
            FakeRuntime {
                fail_start: true,
                ..Default::default()
            },
            one("none", "i"),
            "CannotStartContainerError: exec",
        ),
        (
            FakeRuntime::default(),
            one("none", "missing"),
            "CannotPullContainerError",
        ),
        (
            FakeRuntime::default(),
            one("awsvpc", "i"),
            "ContainerNetworkingError",
        ),
    ];
    for (runtime, td, reason) in cases {
        let h = harness(runtime);
        h.engine.apply_desired(&assignment("RUNNING", &td));
        let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
        assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
        let got = stopped.stopped_reason.unwrap_or_default();
        assert!(got.starts_with(reason), "{td}: {got}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_task_missing_from_the_desired_set_is_reported_not_stopped() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        tasks: vec![],
    });
    let unknown = reported(&h, |c| c.unknown_to_controller).await;
    assert_eq!(unknown.last_status, "RUNNING");
    assert!(
        h.runtime.kills.lock().unwrap().is_empty(),
        "stopped without confirmation"
    );
    // The confirmation: named with desired STOPPED.
    h.engine.apply_desired(&DesiredTasks {
        seq: 3,
        ..assignment("STOPPED", TWO)
    });
    reported(&h, |c| c.last_status == "STOPPED").await;
    // Once the controller no longer lists it, the agent forgets it.
    h.engine.apply_desired(&DesiredTasks {
        seq: 4,
        tasks: vec![],
    });
    assert_eq!(h.engine.task_count(), 0);
    assert!(!h.dir.join("tasks").join(format!("{ID}.json")).exists());
}

#[tokio::test(start_paused = true)]
async fn reports_survive_until_acknowledged() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    let on_disk: AgentState = crate::state::read_json(&h.dir.join("agent.json"))
        .unwrap()
        .unwrap();
    assert!(on_disk.outbox.iter().any(|c| c.seq == running.seq));
    h.reporter.ack(running.seq).unwrap();
    assert!(h
        .reporter
        .pending_after(0)
        .iter()
        .all(|c| c.seq > running.seq));
    let on_disk: AgentState = crate::state::read_json(&h.dir.join("agent.json"))
        .unwrap()
        .unwrap();
    assert!(on_disk.outbox.iter().all(|c| c.seq > running.seq));
    assert!(on_disk.next_seq > running.seq);
}

#[tokio::test(start_paused = true)]
async fn an_exit_during_start_up_is_not_lost() {
    let h = harness(FakeRuntime {
        exit_on_start: Some(("main", 0)),
        ..Default::default()
    });
    let three = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"main","image":"i"},{"name":"side","image":"i","essential":false},{"name":"third","image":"i","essential":false}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", three));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(0));
}
