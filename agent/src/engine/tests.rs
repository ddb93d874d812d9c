//! The task state machine against fakes of the runtime and cgroups (no root needed). The same
//! behaviour is integration-tested on real containerd in `tests/`.

use super::*;
use crate::cgroups::CgroupError;
use crate::runtime::{ContainerState, CreateContainer, ImageConfig, RuntimeError};
use crate::state::{read_json, write_json, AgentState};
use async_trait::async_trait;
use berth_proto::status::{ContainerStatus, TaskStatus};
use berth_proto::v1::{ContainerStateChange, Task, TaskAssignment, TaskDefinition};
use std::collections::HashMap;
use tokio::sync::watch;

/// A fake container: its state and the exit status its waiters watch for.
type FakeContainer = (ContainerState, watch::Sender<Option<u32>>);
/// A task cgroup as created: task id, cpu units, MiB.
type CreatedCgroup = (String, Option<i64>, Option<i64>);

/// What an injected fault does to a call (youki's test double, per call).
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// The next n calls fail with this gRPC code (containerd's answer).
    Fail(u32, tonic::Code),
    /// Every call answers this state (`state` only): e.g. containerd's UNKNOWN.
    Answer(u32, ContainerState),
    /// The call never returns.
    Hang,
    /// The call takes this long (virtual time), then goes on as usual.
    Delay(Duration),
}

/// Faults by operation, optionally only for containers whose ID ends with a suffix.
#[derive(Default)]
struct Faults(Mutex<Vec<(&'static str, Option<&'static str>, Fault)>>);

impl Faults {
    fn inject(&self, op: &'static str, only: Option<&'static str>, fault: Fault) {
        self.0.lock().unwrap().push((op, only, fault));
    }

    /// The fault this call meets, consuming one of a counted fault.
    fn take(&self, op: &str, id: &str) -> Option<Fault> {
        let mut faults = self.0.lock().unwrap();
        let i = faults
            .iter()
            .position(|(o, only, _)| *o == op && only.is_none_or(|s| id.ends_with(s)))?;
        let fault = faults[i].2;
        match fault {
            Fault::Fail(n, code) => {
                if n <= 1 {
                    faults.remove(i);
                } else {
                    faults[i].2 = Fault::Fail(n - 1, code);
                }
            }
            Fault::Answer(n, s) => {
                if n <= 1 {
                    faults.remove(i);
                } else {
                    faults[i].2 = Fault::Answer(n - 1, s);
                }
            }
            Fault::Hang | Fault::Delay(_) => {}
        }
        Some(fault)
    }
}

#[derive(Default)]
struct FakeRuntime {
    containers: Mutex<HashMap<String, FakeContainer>>,
    /// Signals delivered, in order: (container, signal, virtual time).
    kills: Mutex<Vec<(String, u32, tokio::time::Instant)>>,
    /// Every call made: (operation, container, virtual time).
    calls: Mutex<Vec<(&'static str, String, tokio::time::Instant)>>,
    faults: Faults,
    ignore_sigterm: bool,
    /// A container (by name suffix) that exits with this status as soon as it starts.
    exit_on_start: Option<(&'static str, u32)>,
    /// What `list` finds (containers with Berth's labels, e.g. left by a lost data dir).
    listed: Vec<crate::runtime::LabelledContainer>,
    /// The environment of each container created, by container ID.
    envs: Mutex<HashMap<String, Vec<String>>>,
    /// The spec of each container created, by container ID.
    specs: Mutex<HashMap<String, oci_spec::runtime::Spec>>,
    /// Issue 9: the exit status of exec processes (health checks), by container ID; 0 if unset.
    exec_exit: Mutex<HashMap<String, u32>>,
}

impl FakeRuntime {
    fn exit(&self, id: &str, code: u32) {
        if let Some((state, tx)) = self.containers.lock().unwrap().get_mut(id) {
            *state = ContainerState::Stopped(code);
            tx.send_replace(Some(code));
        }
    }

    /// Puts a container in a state, as found after an agent restart.
    fn put(&self, id: &str, state: ContainerState) {
        let code = match state {
            ContainerState::Stopped(c) => Some(c),
            _ => None,
        };
        self.containers
            .lock()
            .unwrap()
            .insert(id.into(), (state, watch::channel(code).0));
    }

    fn state_of(&self, id: &str) -> Option<ContainerState> {
        self.containers.lock().unwrap().get(id).map(|c| c.0)
    }

    fn count(&self, op: &str, suffix: &str) -> usize {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(o, id, _)| *o == op && id.ends_with(suffix))
            .count()
    }

    /// Records the call, then applies its fault: an error, an answer, or never returning.
    async fn call(
        &self,
        op: &'static str,
        id: &str,
    ) -> Result<Option<ContainerState>, RuntimeError> {
        self.calls
            .lock()
            .unwrap()
            .push((op, id.into(), tokio::time::Instant::now()));
        match self.faults.take(op, id) {
            None => Ok(None),
            Some(Fault::Fail(_, code)) => Err(RuntimeError::Call {
                op,
                id: id.into(),
                source: tonic::Status::new(code, "injected"),
            }),
            Some(Fault::Answer(_, s)) => Ok(Some(s)),
            Some(Fault::Hang) => std::future::pending().await,
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
        }
    }
}

#[async_trait]
impl Runtime for FakeRuntime {
    async fn image(&self, reference: &str) -> Result<ImageConfig, RuntimeError> {
        self.call("image", reference).await?;
        if reference.contains("missing") {
            return Err(RuntimeError::ImageNotFound(reference.into()));
        }
        Ok(ImageConfig {
            name: reference.into(),
            cmd: vec!["sh".into()],
            // An image built with `STOPSIGNAL SIGQUIT` (tests name it so).
            stop_signal: if reference.contains("stopsignal-quit") {
                "SIGQUIT".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
    }
    async fn create(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        self.call("create", &c.id).await?;
        let env = c
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.env().clone())
            .unwrap_or_default();
        self.envs.lock().unwrap().insert(c.id.clone(), env);
        self.specs
            .lock()
            .unwrap()
            .insert(c.id.clone(), c.spec.clone());
        // Real runtime calls are I/O: other tasks (waiters) run meanwhile.
        tokio::task::yield_now().await;
        self.containers
            .lock()
            .unwrap()
            .entry(c.id.clone())
            .or_insert_with(|| (ContainerState::Created, watch::channel(None).0));
        Ok(())
    }
    async fn start(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        self.call("start", &c.id).await?;
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
        self.call("wait", id).await?;
        let not_found = || RuntimeError::Call {
            op: "wait",
            id: id.into(),
            source: tonic::Status::not_found("no such task"),
        };
        let mut rx = match self.containers.lock().unwrap().get(id) {
            Some((_, tx)) => tx.subscribe(),
            None => return Err(not_found()),
        };
        loop {
            if let Some(code) = *rx.borrow_and_update() {
                return Ok(code);
            }
            if rx.changed().await.is_err() {
                return Err(not_found());
            }
        }
    }
    async fn kill(&self, id: &str, signal: u32) -> Result<(), RuntimeError> {
        self.call("kill", id).await?;
        self.kills
            .lock()
            .unwrap()
            .push((id.into(), signal, tokio::time::Instant::now()));
        if signal == 9 || !self.ignore_sigterm {
            let running = matches!(self.state_of(id), Some(ContainerState::Running));
            if running {
                self.exit(id, 128 + signal);
            }
        }
        Ok(())
    }
    async fn state(&self, id: &str) -> Result<ContainerState, RuntimeError> {
        if let Some(s) = self.call("state", id).await? {
            return Ok(s);
        }
        Ok(self.state_of(id).unwrap_or(ContainerState::Missing))
    }
    async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("delete", id).await?;
        if matches!(self.state_of(id), Some(ContainerState::Running)) {
            // As containerd: a running task cannot be deleted.
            return Err(RuntimeError::Call {
                op: "delete",
                id: id.into(),
                source: tonic::Status::failed_precondition("task must be stopped"),
            });
        }
        self.containers.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list(
        &self,
        _cluster: &str,
    ) -> Result<Vec<crate::runtime::LabelledContainer>, RuntimeError> {
        Ok(self.listed.clone())
    }

    async fn exec(
        &self,
        id: &str,
        _spec: &crate::runtime::ExecSpec,
    ) -> Result<crate::runtime::ExecIo, RuntimeError> {
        self.call("exec", id).await?;
        Ok(crate::runtime::ExecIo {
            stdin: None,
            stdout: Box::pin(tokio::io::empty()),
            stderr: Some(Box::pin(tokio::io::empty())),
        })
    }

    async fn exec_wait(&self, id: &str, _exec_id: &str) -> Result<u32, RuntimeError> {
        Ok(self.exec_exit.lock().unwrap().get(id).copied().unwrap_or(0))
    }

    async fn exec_delete(&self, _id: &str, _exec_id: &str) -> Result<(), RuntimeError> {
        Ok(())
    }

    async fn init_pid(&self, id: &str) -> Result<u32, RuntimeError> {
        self.call("init_pid", id).await?;
        // A PID of its own per container, a new one at each restart; 0 without a process.
        Ok(match self.state_of(id) {
            Some(ContainerState::Running) => {
                10_000
                    + id.bytes().map(u32::from).sum::<u32>() * 10
                    + self.count("restart", id) as u32
            }
            _ => 0,
        })
    }

    async fn restart(&self, c: &CreateContainer) -> Result<(), RuntimeError> {
        self.call("restart", &c.id).await?;
        let mut containers = self.containers.lock().unwrap();
        let Some((state, tx)) = containers.get_mut(&c.id) else {
            return Err(RuntimeError::Call {
                op: "restart",
                id: c.id.clone(),
                source: tonic::Status::not_found("no such container"),
            });
        };
        *state = ContainerState::Running;
        tx.send_replace(None);
        Ok(())
    }
    async fn delete_process(&self, id: &str) -> Result<(), RuntimeError> {
        self.call("delete_process", id).await?;
        if matches!(self.state_of(id), Some(ContainerState::Running)) {
            return Err(RuntimeError::Call {
                op: "delete process",
                id: id.into(),
                source: tonic::Status::failed_precondition("task must be stopped"),
            });
        }
        // As containerd: the container stays, with no process (Missing to `state`), until
        // the cleanup wait has passed.
        if let Some((state, _)) = self.containers.lock().unwrap().get_mut(id) {
            *state = ContainerState::Missing;
        }
        Ok(())
    }
}

#[derive(Default)]
struct FakeCgroups {
    created: Mutex<Vec<CreatedCgroup>>,
    removed: Mutex<Vec<String>>,
    /// Containers the kernel OOM-killed.
    oom: Mutex<Vec<String>>,
    /// Faults by operation ("create_task", "remove_task"); `Fail(n, _)` fails n calls, `Hang`
    /// blocks the calling thread until the harness is dropped.
    faults: Faults,
    hung: Arc<(Mutex<bool>, std::sync::Condvar)>,
}

impl FakeCgroups {
    fn fault(&self, op: &'static str, task_id: &str) -> Result<(), CgroupError> {
        match self.faults.take(op, task_id) {
            None | Some(Fault::Answer(..)) | Some(Fault::Delay(_)) => Ok(()),
            Some(Fault::Fail(..)) => Err(CgroupError::test(op)),
            Some(Fault::Hang) => {
                let (released, cv) = &*self.hung;
                let mut r = released.lock().unwrap();
                while !*r {
                    r = cv.wait(r).unwrap();
                }
                Err(CgroupError::test(op))
            }
        }
    }
}

impl Cgroups for FakeCgroups {
    fn create_task(
        &self,
        task_id: &str,
        l: &crate::cgroups::TaskLimits,
    ) -> Result<(), CgroupError> {
        self.fault("create_task", task_id)?;
        self.created
            .lock()
            .unwrap()
            .push((task_id.into(), l.cpu_units, l.memory_mib));
        Ok(())
    }
    fn container_path(&self, task_id: &str, container: &str) -> String {
        format!("/test/{task_id}/{container}")
    }
    fn oom_kills(&self, _task_id: &str, container: &str) -> u64 {
        self.oom
            .lock()
            .unwrap()
            .iter()
            .filter(|c| *c == container)
            .count() as u64
    }
    fn remove_task(&self, task_id: &str) -> Result<(), CgroupError> {
        self.fault("remove_task", task_id)?;
        self.removed.lock().unwrap().push(task_id.into());
        Ok(())
    }
}

/// A task network made of records: what the engine asked, in order, and what it handed over.
/// Names follow the common rules (berth-<id>, berth-<id>-<n>); addresses 172.30.0.5 (awsvpc)
/// and 172.31.0.<2+n> (bridge); dynamic ports from 49153.
#[derive(Default)]
struct FakeNetwork {
    /// Every call: (operation, task id, deletes the runtime had seen by then).
    calls: Mutex<Vec<(&'static str, String, usize)>>,
    /// What recover was given.
    recovered: Mutex<Vec<TaskNetworkState>>,
    /// Every set_ingress's rules.
    ingress: Mutex<Vec<Vec<crate::network::IngressRule>>>,
    /// Faults by operation ("allocate", "setup", "set_ingress", "teardown").
    faults: Faults,
    /// The runtime, to tell whether cleanup (container deletes) had begun at a call.
    runtime: std::sync::OnceLock<Arc<FakeRuntime>>,
    /// The data dir, to tell whether the task record held the allocation at setup.
    data_dir: std::sync::OnceLock<DataDir>,
    /// At each setup: whether the record on disk named the allocation being set up.
    on_disk_at_setup: Mutex<Vec<bool>>,
}

use crate::network::{
    Binding, Interface, Mode, Namespace, NetworkError, NetworkPlan, TaskNetworkState,
};

impl FakeNetwork {
    fn record(&self, op: &'static str, task: &str) -> Result<(), NetworkError> {
        let deletes = self
            .runtime
            .get()
            .map(|r| r.count("delete", ""))
            .unwrap_or(0);
        self.calls.lock().unwrap().push((op, task.into(), deletes));
        match self.faults.take(op, task) {
            Some(Fault::Fail(..)) => Err(NetworkError::Invalid(format!("injected {op} failure"))),
            _ => Ok(()),
        }
    }

    fn ops(&self, task: &str) -> Vec<&'static str> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, t, _)| t == task)
            .map(|(o, _, _)| *o)
            .collect()
    }

    /// The deletes the runtime had seen when `op` was called for `task`.
    fn deletes_at(&self, op: &str, task: &str) -> Option<usize> {
        self.calls
            .lock()
            .unwrap()
            .iter()
            .find(|(o, t, _)| *o == op && t == task)
            .map(|(_, _, d)| *d)
    }
}

fn iface(address: std::net::Ipv4Addr, link: &str) -> Option<Interface> {
    Some(Interface {
        address,
        prefix: 16,
        gateway: None,
        mac: None,
        host_link: Some(link.into()),
    })
}

#[async_trait]
impl crate::network::Network for FakeNetwork {
    fn subnets(&self) -> Vec<crate::network::SubnetConfig> {
        Vec::new()
    }
    fn allocate(&self, plan: &NetworkPlan) -> Result<TaskNetworkState, NetworkError> {
        self.record("allocate", &plan.task_id)?;
        let id = &plan.task_id;
        let mut namespaces = std::collections::BTreeMap::new();
        match plan.mode {
            Mode::Host => {}
            Mode::None => {
                namespaces.insert(
                    String::new(),
                    Namespace {
                        name: format!("berth-{id}"),
                        interface: None,
                    },
                );
            }
            Mode::Awsvpc => {
                namespaces.insert(
                    String::new(),
                    Namespace {
                        name: format!("berth-{id}"),
                        interface: iface(std::net::Ipv4Addr::new(172, 30, 0, 5), "bvfeedfacecafe"),
                    },
                );
            }
            Mode::Bridge => {
                for (i, c) in plan.containers.iter().enumerate() {
                    namespaces.insert(
                        c.clone(),
                        Namespace {
                            name: format!("berth-{id}-{i}"),
                            interface: iface(
                                std::net::Ipv4Addr::new(172, 31, 0, 2 + i as u8),
                                &format!("bv{i:012}"),
                            ),
                        },
                    );
                }
            }
        }
        let mut dynamic = 49153;
        let bindings = plan
            .ports
            .iter()
            .map(|p| Binding {
                container: p.container.clone(),
                container_port: p.container_port,
                host_port: p.host_port.unwrap_or_else(|| {
                    dynamic += 1;
                    dynamic - 1
                }),
                protocol: p.protocol,
                bind_ip: std::net::Ipv4Addr::UNSPECIFIED,
            })
            .collect();
        Ok(TaskNetworkState {
            task_id: id.clone(),
            mode: plan.mode,
            namespaces,
            bindings,
            awsvpc: plan.awsvpc.clone(),
            network: plan.awsvpc.as_ref().map(|a| a.subnet.clone()),
        })
    }
    fn release(&self, state: &TaskNetworkState) {
        let _ = self.record("release", &state.task_id);
    }
    async fn setup(&self, state: &mut TaskNetworkState) -> Result<(), NetworkError> {
        let on_disk = self.data_dir.get().is_some_and(|d| {
            read_json::<TaskRecord>(&d.task(&state.task_id))
                .ok()
                .flatten()
                .and_then(|r| r.network)
                .is_some_and(|n| n == *state)
        });
        self.on_disk_at_setup.lock().unwrap().push(on_disk);
        self.record("setup", &state.task_id)?;
        for n in state.namespaces.values_mut() {
            if let Some(i) = &mut n.interface {
                i.mac = Some("02:42:ac:1e:00:05".into());
            }
        }
        Ok(())
    }
    async fn set_ingress(
        &self,
        state: &TaskNetworkState,
        rules: &[crate::network::IngressRule],
    ) -> Result<(), NetworkError> {
        self.ingress.lock().unwrap().push(rules.to_vec());
        self.record("set_ingress", &state.task_id)
    }
    async fn teardown(&self, state: &TaskNetworkState) -> Result<(), NetworkError> {
        self.record("teardown", &state.task_id)
    }
    async fn recover(&self, held: &[TaskNetworkState]) -> Result<Vec<String>, NetworkError> {
        self.record("recover", "")?;
        self.recovered.lock().unwrap().extend(held.iter().cloned());
        Ok(Vec::new())
    }
}

struct Harness {
    engine: Engine<FakeRuntime, FakeCgroups>,
    runtime: Arc<FakeRuntime>,
    cgroups: Arc<FakeCgroups>,
    network: Arc<FakeNetwork>,
    reporter: Arc<Reporter>,
    dir: std::path::PathBuf,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Release any cgroup call hung on purpose, so the runtime can shut down.
        let (released, cv) = &*self.cgroups.hung;
        *released.lock().unwrap() = true;
        cv.notify_all();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness(runtime: FakeRuntime) -> Harness {
    harness_with(runtime, FakeCgroups::default(), Vec::new())
}

/// An engine over the fakes, started on a data dir that holds `records` (an agent restart).
fn harness_with(runtime: FakeRuntime, cgroups: FakeCgroups, records: Vec<TaskRecord>) -> Harness {
    harness_timed(runtime, cgroups, records, Timeouts::default())
}

fn harness_timed(
    runtime: FakeRuntime,
    cgroups: FakeCgroups,
    records: Vec<TaskRecord>,
    timeouts: Timeouts,
) -> Harness {
    harness_full(
        runtime,
        cgroups,
        records,
        timeouts,
        Arc::new(crate::secrets::NoSecrets),
    )
}

fn harness_full(
    runtime: FakeRuntime,
    cgroups: FakeCgroups,
    records: Vec<TaskRecord>,
    timeouts: Timeouts,
    secrets: Arc<dyn crate::secrets::SecretSource>,
) -> Harness {
    harness_net(
        runtime,
        cgroups,
        FakeNetwork::default(),
        records,
        timeouts,
        secrets,
    )
}

fn harness_net(
    runtime: FakeRuntime,
    cgroups: FakeCgroups,
    network: FakeNetwork,
    records: Vec<TaskRecord>,
    timeouts: Timeouts,
    secrets: Arc<dyn crate::secrets::SecretSource>,
) -> Harness {
    let dir = std::env::temp_dir().join(format!("berth-engine-{}", uuid::Uuid::new_v4().simple()));
    harness_in(
        runtime,
        cgroups,
        network,
        records,
        timeouts,
        secrets,
        dir,
        cleanup::DEFAULT_WAIT,
    )
}

/// An engine over the fakes on the data dir `dir` (which may hold state of an earlier engine),
/// with a cleanup wait.
#[allow(clippy::too_many_arguments)]
fn harness_in(
    runtime: FakeRuntime,
    cgroups: FakeCgroups,
    network: FakeNetwork,
    records: Vec<TaskRecord>,
    timeouts: Timeouts,
    secrets: Arc<dyn crate::secrets::SecretSource>,
    dir: std::path::PathBuf,
    task_cleanup_wait: Duration,
) -> Harness {
    let data = DataDir(dir.clone());
    for rec in &records {
        write_json(&data.task(&task_id(&rec.task.task_arn)), rec).unwrap();
    }
    let reporter = Arc::new(Reporter::new(data.clone(), AgentState::default()));
    let runtime = Arc::new(runtime);
    let cgroups = Arc::new(cgroups);
    let network = Arc::new(network);
    let _ = network.runtime.set(runtime.clone());
    let _ = network.data_dir.set(data.clone());
    let engine = Engine::start(
        runtime.clone(),
        cgroups.clone(),
        network.clone(),
        reporter.clone(),
        EngineConfig {
            data_dir: data,
            cluster: "c".into(),
            stop_timeout: Duration::from_secs(30),
            timeouts,
            security: Default::default(),
            secrets,
            boot_id: Some(BOOT.into()),
            fallback_dns: vec![std::net::Ipv4Addr::new(9, 9, 9, 9)],
            task_cleanup_wait,
            metadata: None,
            logs: None,
            images: Default::default(),
            volumes: Default::default(),
        },
    )
    .unwrap();
    Harness {
        engine,
        runtime,
        cgroups,
        network,
        reporter,
        dir,
    }
}

const ARN: &str = "arn:aws:ecs:on-prem:000000000000:task/c/0123456789abcdef0123456789abcdef";
const ID: &str = "0123456789abcdef0123456789abcdef";
/// The boot id the harness's engine runs in.
const BOOT: &str = "6a1c9e1e-0000-4000-8000-000000000001";

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
            network: None,
        }],
        ..Default::default()
    }
}

const TWO: &str = r#"{"family":"f","revision":1,"networkMode":"none","cpu":"512","memory":"256","containerDefinitions":[
  {"name":"main","image":"i","essential":true},{"name":"side","image":"i","essential":false}]}"#;

/// Waits (on report events) until the outbox holds a report matching `f`.
async fn reported(h: &Harness, f: impl Fn(&TaskStateChange) -> bool) -> TaskStateChange {
    let mut rx = h.reporter.subscribe();
    loop {
        if let Some(c) = h.reporter.history().into_iter().find(|c| f(c)) {
            return c;
        }
        tokio::time::timeout(Duration::from_secs(600), rx.changed())
            .await
            .expect("no report")
            .unwrap();
    }
}

/// Every container the fake runtime holds has no process (deleted, or kept for the cleanup
/// wait with its process removed).
fn no_process_left(h: &Harness) -> bool {
    h.runtime
        .containers
        .lock()
        .unwrap()
        .values()
        .all(|(s, _)| *s == ContainerState::Missing)
}

fn container<'a>(c: &'a TaskStateChange, name: &str) -> &'a berth_proto::v1::ContainerStateChange {
    c.containers.iter().find(|x| x.name == name).unwrap()
}

fn all_reports(h: &Harness) -> Vec<TaskStateChange> {
    h.reporter
        .history()
        .into_iter()
        .filter(|c| c.task_arn == ARN)
        .collect()
}

/// Every consecutive pair of the task's reports moves forward (or stays), for the task and for
/// each container; and a STOPPED task is reported once, last.
fn assert_forward_only(h: &Harness) {
    let reports = all_reports(h);
    for pair in reports.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        let (sa, sb) = (
            TaskStatus::parse(&a.last_status).unwrap(),
            TaskStatus::parse(&b.last_status).unwrap(),
        );
        assert!(sa <= sb, "task went from {sa} to {sb}");
        assert!(sa != TaskStatus::Stopped, "a report after STOPPED");
        for cb in &b.containers {
            let ca = container(a, &cb.name);
            let (xa, xb) = (
                ContainerStatus::parse(&ca.last_status).unwrap(),
                ContainerStatus::parse(&cb.last_status).unwrap(),
            );
            assert!(xa <= xb, "container {} went from {xa} to {xb}", cb.name);
        }
    }
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
    assert!(no_process_left(&h));
    let order: Vec<String> = all_reports(&h)
        .iter()
        .map(|c| c.last_status.clone())
        .collect();
    // The outbox keeps the latest state per task, so an intermediate status may be superseded
    // before it is written; what is reported only moves forward and ends STOPPED.
    assert_eq!(
        order.last().map(String::as_str),
        Some("STOPPED"),
        "{order:?}"
    );
    assert_forward_only(&h);
}

#[tokio::test(start_paused = true)]
async fn sigkill_exactly_at_stop_timeout() {
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
    // Paused time makes the deadline exact: not early, not late.
    assert_eq!(kills[1].2 - kills[0].2, Duration::from_secs(7));
    assert_eq!(kills.len(), 2);
    assert_forward_only(&h);
}

/// The image's STOPSIGNAL is the stop signal (SIGKILL still follows at stopTimeout); an image
/// without one gets SIGTERM.
#[tokio::test(start_paused = true)]
async fn the_images_stopsignal_is_sent_first() {
    let h = harness(FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    });
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"quits","image":"stopsignal-quit","stopTimeout":5},
  {"name":"terms","image":"plain","stopTimeout":5}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    reported(&h, |c| c.last_status == "STOPPED").await;
    let kills = h.runtime.kills.lock().unwrap().clone();
    let first = |name: &str| {
        kills
            .iter()
            .find(|(id, _, _)| id.ends_with(name))
            .map(|k| k.1)
    };
    assert_eq!(first("quits"), Some(3), "SIGQUIT from the image: {kills:?}");
    assert_eq!(first("terms"), Some(15), "SIGTERM by default: {kills:?}");
}

#[test]
fn signal_names_and_numbers() {
    use super::task::signal_number;
    assert_eq!(signal_number("SIGQUIT"), 3);
    assert_eq!(signal_number("quit"), 3);
    assert_eq!(
        signal_number("SIGRTMIN+3"),
        15,
        "unknown names fall back to SIGTERM"
    );
    assert_eq!(signal_number("2"), 2);
    assert_eq!(signal_number(""), 15);
    assert_eq!(signal_number("SIGUSR1"), 10);
}

#[tokio::test(start_paused = true)]
async fn start_failures_are_reported_as_ecs_names_them() {
    let one = |mode: &str, image: &str| {
        format!(
            r#"{{"family":"f","revision":1,"networkMode":"{mode}","containerDefinitions":[{{"name":"main","image":"{image}"}}]}}"#
        )
    };
    let failing_start = || {
        let r = FakeRuntime::default();
        r.faults
            .inject("start", None, Fault::Fail(1, tonic::Code::Unknown));
        r
    };
    let cases = [
        (
            failing_start(),
            one("none", "i"),
            "CannotStartContainerError: injected",
        ),
        (
            FakeRuntime::default(),
            one("none", "missing"),
            "CannotPullContainerError",
        ),
        (
            FakeRuntime::default(),
            one("awsvpc", "i"),
            "ContainerNetworkingError: awsvpc task without a network configuration",
        ),
        (
            FakeRuntime::default(),
            one("nat", "i"),
            "ContainerNetworkingError: network mode nat is not one of awsvpc, bridge, host, none",
        ),
    ];
    for (runtime, td, reason) in cases {
        let h = harness(runtime);
        h.engine.apply_desired(&assignment("RUNNING", &td));
        let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
        assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
        let got = stopped.stopped_reason.clone().unwrap_or_default();
        assert!(got.starts_with(reason), "{td}: {got}");
        assert_eq!(container(&stopped, "main").exit_code, None);
        assert_forward_only(&h);
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
        ..Default::default()
    });
    let unknown = reported(&h, |c| c.unknown_to_controller).await;
    assert_eq!(unknown.last_status, "RUNNING");
    // Give the actor every chance to act on it (paused time runs all tasks to idle first).
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(
        h.runtime.kills.lock().unwrap().is_empty(),
        "stopped without confirmation"
    );
    assert!(all_reports(&h).iter().all(|c| c.last_status != "STOPPING"));
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
        ..Default::default()
    });
    assert_eq!(h.engine.task_count(), 0);
    h.reporter.flush().await;
    assert!(!h.dir.join("tasks").join(format!("{ID}.json")).exists());
}

const THREE: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i"},{"name":"side","image":"i","essential":false},{"name":"third","image":"i","essential":false}]}"#;

#[tokio::test(start_paused = true)]
async fn an_exit_during_start_up_is_not_lost() {
    let h = harness(FakeRuntime {
        exit_on_start: Some(("main", 0)),
        ..Default::default()
    });
    h.engine.apply_desired(&assignment("RUNNING", THREE));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(0));
    assert_forward_only(&h);
}

/// Item 1: a stop right behind the start leaves no container PENDING and the task reaches
/// STOPPED with its cgroup removed.
#[tokio::test(start_paused = true)]
async fn a_stop_while_starting_stops_never_started_containers() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", THREE));
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", THREE)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("UserInitiated"));
    for c in &stopped.containers {
        assert_eq!(c.last_status, "STOPPED", "{}", c.name);
        assert_eq!(c.exit_code, None, "{} never ran", c.name);
    }
    assert_eq!(h.runtime.count("start", ""), 0);
    assert!(no_process_left(&h));
    if !h.cgroups.created.lock().unwrap().is_empty() {
        assert_eq!(
            h.cgroups.removed.lock().unwrap().as_slice(),
            [ID.to_string()]
        );
    }
    assert_forward_only(&h);
}

/// Item 1 against item 2: a stop arriving while a container's start is in flight in containerd
/// (which goes on with it whether or not the caller waits) stops the running sibling at once,
/// lets the start end, and then stops that container too: it is never reported STOPPED while
/// its process may be about to run, and it is not left behind.
#[tokio::test(start_paused = true)]
async fn a_stop_during_a_start_in_flight_stops_what_that_start_made() {
    let rt = FakeRuntime::default();
    rt.faults
        .inject("start", Some("side"), Fault::Delay(Duration::from_secs(5)));
    let h = harness(rt);
    h.engine.apply_desired(&assignment("RUNNING", THREE));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.runtime.count("start", "side"),
        1,
        "side's start is in flight"
    );
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", THREE)
    });
    let stopping = reported(&h, |c| c.last_status == "STOPPING").await;
    assert_eq!(container(&stopping, "side").last_status, "PENDING");
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let kills = h.runtime.kills.lock().unwrap().clone();
    let main_kill = kills.iter().find(|k| k.0.ends_with("main")).unwrap();
    assert_eq!(
        main_kill.2, asked,
        "the running sibling is signalled at once"
    );
    let side_kill = kills.iter().find(|k| k.0.ends_with("side")).unwrap();
    assert!(
        side_kill.2 >= asked + Duration::from_secs(4),
        "side is signalled once its start ended"
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(143));
    assert_eq!(container(&stopped, "side").exit_code, Some(143));
    assert_eq!(container(&stopped, "third").exit_code, None);
    assert_eq!(h.runtime.count("create", "third"), 0);
    assert!(no_process_left(&h));
    assert_forward_only(&h);
}

/// Item 3: one container's start hanging in containerd delays neither the stop request nor
/// another container's SIGKILL deadline: the running sibling that ignores SIGTERM is killed
/// exactly at its stopTimeout while the start is still in flight.
#[tokio::test(start_paused = true)]
async fn a_hung_start_delays_no_sibling_sigkill() {
    let rt = FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    };
    rt.faults.inject("start", Some("side"), Fault::Hang);
    let h = harness(rt);
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"main","image":"i","stopTimeout":7},{"name":"side","image":"i","essential":false}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        h.runtime.count("start", "side"),
        1,
        "side's start is in flight"
    );
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    reported(&h, |c| c.last_status == "STOPPING").await;
    let killed = reported(&h, |c| {
        c.containers
            .iter()
            .any(|x| x.name == "main" && x.exit_code == Some(137))
    })
    .await;
    assert_eq!(
        container(&killed, "side").last_status,
        "PENDING",
        "side's start still hangs"
    );
    let kills = h.runtime.kills.lock().unwrap().clone();
    let main: Vec<_> = kills.iter().filter(|k| k.0.ends_with("main")).collect();
    assert_eq!((main[0].1, main[0].2), (15, asked), "SIGTERM at once");
    assert_eq!(
        (main[1].1, main[1].2),
        (9, asked + Duration::from_secs(7)),
        "SIGKILL exactly at stopTimeout"
    );
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(container(&stopped, "side").exit_code, None);
    assert_forward_only(&h);
}

/// A desired status the contract does not define (a newer controller) is not acted on: a new
/// task is neither started nor reported STOPPED, a running one is not stopped.
#[tokio::test(start_paused = true)]
async fn an_unknown_desired_status_changes_nothing() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("DRAINING", TWO));
    h.reporter.flush().await;
    assert!(all_reports(&h).is_empty(), "{:?}", all_reports(&h));
    assert_eq!(h.runtime.count("create", ""), 0);
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPED", TWO)
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    h.reporter.flush().await;
    assert!(h.runtime.kills.lock().unwrap().is_empty());
    assert!(all_reports(&h)
        .iter()
        .all(|c| c.last_status == "RUNNING" || c.last_status == "PENDING"));
}

/// Item 1, mid-way: the stop arrives after the first container started; the rest never start.
#[tokio::test(start_paused = true)]
async fn a_stop_after_the_first_container_started_stops_the_rest_as_never_started() {
    let rt = FakeRuntime::default();
    // The second container's create hangs: the stop must not wait for it.
    rt.faults.inject("create", Some("side"), Fault::Hang);
    let h = harness(rt);
    h.engine.apply_desired(&assignment("RUNNING", THREE));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.runtime.count("start", "main"), 1);
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", THREE)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert!(
        tokio::time::Instant::now() - asked < Duration::from_secs(1),
        "the stop waited for a hung create"
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(143));
    assert_eq!(container(&stopped, "side").exit_code, None);
    assert_eq!(container(&stopped, "third").last_status, "STOPPED");
    assert_eq!(h.runtime.count("create", "third"), 0);
    assert_eq!(
        h.cgroups.removed.lock().unwrap().as_slice(),
        [ID.to_string()]
    );
    assert_forward_only(&h);
}

/// Item 3: one container's hung kill call neither delays another container's SIGKILL nor
/// keeps the task from stopping; the hung one is given up on with TaskStateError, only after
/// its SIGKILL retries, and the task stays STOPPING (resources counted) until then.
#[tokio::test(start_paused = true)]
async fn a_hung_kill_delays_no_other_container_and_is_given_up_after_bounded_retries() {
    let rt = FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    };
    rt.faults.inject("kill", Some("side"), Fault::Hang);
    let h = harness(rt);
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"main","image":"i","stopTimeout":7},{"name":"side","image":"i","essential":false,"stopTimeout":2}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let kills = h.runtime.kills.lock().unwrap().clone();
    let main = format!("{ID}-main");
    let main_kills: Vec<_> = kills.iter().filter(|k| k.0 == main).collect();
    assert_eq!(main_kills[0].2 - asked, Duration::ZERO, "SIGTERM at once");
    assert_eq!(
        (main_kills[1].1, main_kills[1].2 - asked),
        (9, Duration::from_secs(7))
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(137));
    let side = container(&stopped, "side");
    assert_eq!(side.exit_code, None, "no exit code is invented");
    assert_eq!(side.reason.as_deref(), Some(task::TASK_STATE_ERROR));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some(task::TASK_STATE_ERROR)
    );
    assert_eq!(stopped.stop_code.as_deref(), Some("UserInitiated"));
    // 1 stop signal + MAX_SIGKILLS before giving up, and cleanup's own SIGKILLs after.
    assert!(h.runtime.count("kill", "side") > 1 + task::MAX_SIGKILLS as usize);
    let reports = all_reports(&h);
    let stopping_until = reports.len() - 1;
    assert!(reports[..stopping_until]
        .iter()
        .all(|c| c.last_status != "STOPPED"));
    assert_forward_only(&h);
}

/// Item 3: a start call that hangs times out; the task fails to start and stops.
#[tokio::test(start_paused = true)]
async fn a_hung_start_times_out_and_the_task_stops() {
    let rt = FakeRuntime::default();
    rt.faults.inject("start", None, Fault::Hang);
    let h = harness(rt);
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    let reason = stopped.stopped_reason.unwrap_or_default();
    assert!(reason.starts_with("CannotStartContainerError"), "{reason}");
    assert!(reason.contains("no answer within"), "{reason}");
    assert!(no_process_left(&h));
    assert_forward_only(&h);
}

/// Item 3: a cgroup call that never returns is bounded too (real threads, so real time).
#[tokio::test]
async fn a_hung_cgroup_create_fails_the_start_within_its_timeout() {
    let cg = FakeCgroups::default();
    cg.faults.inject("create_task", None, Fault::Hang);
    let timeouts = Timeouts {
        cgroup: Duration::from_millis(200),
        ..Timeouts::default()
    };
    let h = harness_timed(FakeRuntime::default(), cg, Vec::new(), timeouts);
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    let stopped = tokio::time::timeout(
        Duration::from_secs(20),
        reported(&h, |c| c.last_status == "STOPPED"),
    )
    .await
    .expect("the hung cgroup call blocked the task");
    let reason = stopped.stopped_reason.unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError: cgroup create: no answer"),
        "{reason}"
    );
    assert_eq!(h.runtime.count("create", ""), 0);
}

/// Item 2: delete fails twice, then succeeds: STOPPED is reported only after it succeeded.
#[tokio::test(start_paused = true)]
async fn failed_cleanup_is_retried_before_stopped_is_reported() {
    let rt = FakeRuntime::default();
    rt.faults.inject(
        "delete_process",
        Some("main"),
        Fault::Fail(2, tonic::Code::Unavailable),
    );
    let cg = FakeCgroups::default();
    cg.faults
        .inject("remove_task", None, Fault::Fail(1, tonic::Code::Unknown));
    let h = harness_with(rt, cg, Vec::new());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.runtime.exit(&format!("{ID}-main"), 0);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("delete_process", "main"), 3);
    assert!(no_process_left(&h));
    assert_eq!(
        h.cgroups.removed.lock().unwrap().as_slice(),
        [ID.to_string()]
    );
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("Essential container in task exited"),
        "a cleanup that succeeded in the end is no TaskStateError"
    );
    assert_forward_only(&h);
}

/// Item 2: a cleanup that never succeeds ends, after bounded retries, in STOPPED with
/// TaskStateError (the processes are verified gone: containerd says they exited).
#[tokio::test(start_paused = true)]
async fn cleanup_that_keeps_failing_ends_in_task_state_error() {
    let rt = FakeRuntime::default();
    rt.faults.inject(
        "delete_process",
        Some("main"),
        Fault::Fail(1000, tonic::Code::Internal),
    );
    let h = harness(rt);
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.runtime.exit(&format!("{ID}-main"), 0);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        h.runtime.count("delete_process", "main"),
        task::CLEANUP_ATTEMPTS as usize
    );
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some(task::TASK_STATE_ERROR)
    );
    assert_eq!(container(&stopped, "main").exit_code, Some(0));
    assert_forward_only(&h);
}

/// Item 2: the OOM reason comes from the cgroup, with containerd's exit code.
#[tokio::test(start_paused = true)]
async fn an_oom_kill_is_reported_with_ecs_reason() {
    let cg = FakeCgroups::default();
    cg.oom.lock().unwrap().push("main".into());
    let h = harness_with(FakeRuntime::default(), cg, Vec::new());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.runtime.exit(&format!("{ID}-main"), 137);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let main = container(&stopped, "main");
    assert_eq!(main.reason.as_deref(), Some(task::OOM_REASON));
    assert_eq!(main.exit_code, Some(137));
    assert_eq!(container(&stopped, "side").reason, None);
}

/// Item 2: while containerd restarts, `wait` and `state` fail; the watcher retries and reports
/// the exit code containerd gives afterwards, never an invented one.
#[tokio::test(start_paused = true)]
async fn the_watcher_retries_while_containerd_restarts() {
    let rt = FakeRuntime::default();
    rt.faults.inject(
        "wait",
        Some("main"),
        Fault::Fail(3, tonic::Code::Unavailable),
    );
    rt.faults.inject(
        "state",
        Some("main"),
        Fault::Fail(2, tonic::Code::Unavailable),
    );
    rt.faults.inject(
        "state",
        Some("main"),
        Fault::Answer(1, ContainerState::Unknown),
    );
    let h = harness(rt);
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(h.runtime.count("wait", "main") >= 4, "the watcher gave up");
    assert!(all_reports(&h)
        .iter()
        .all(|c| c.last_status == "PENDING" || c.last_status == "RUNNING"));
    h.runtime.exit(&format!("{ID}-main"), 42);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(container(&stopped, "main").exit_code, Some(42));
    assert_forward_only(&h);
}

/// Item 2: a container containerd no longer has is stopped with a reason and no exit code.
#[tokio::test(start_paused = true)]
async fn a_vanished_container_gets_a_reason_and_no_exit_code() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    // Gone behind the agent's back: its waiters see NotFound.
    h.runtime
        .containers
        .lock()
        .unwrap()
        .remove(&format!("{ID}-main"));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let main = container(&stopped, "main");
    assert_eq!(main.exit_code, None);
    assert_eq!(main.reason.as_deref(), Some(task::VANISHED));
    assert_forward_only(&h);
}

/// A task record as persisted before an agent restart: the task at `task_status`, each
/// container (name, status, has a runtime id).
fn record(task_status: &str, containers: &[(&str, &str, bool)], stopping: bool) -> TaskRecord {
    let a = assignment("RUNNING", THREE);
    let t = &a.tasks[0];
    TaskRecord {
        task: t.task.clone().unwrap(),
        definition: t.task_definition.clone().unwrap(),
        desired_status: if stopping { "STOPPED" } else { "RUNNING" }.into(),
        state: TaskStateChange {
            task_arn: ARN.into(),
            last_status: task_status.into(),
            stop_code: stopping.then(|| "UserInitiated".into()),
            stopped_reason: stopping.then(|| "by test".into()),
            containers: containers
                .iter()
                .map(|(n, s, has_id)| ContainerStateChange {
                    name: n.to_string(),
                    last_status: s.to_string(),
                    runtime_id: has_id.then(|| format!("{ID}-{n}")),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        stop_signals: Default::default(),
        oom_kills_before: Default::default(),
        namespace_holders: Default::default(),
        boot_id: Some(BOOT.into()),
        task_network: None,
        network: None,
        network_set_up: false,
        network_released: false,
    }
}

fn cid(name: &str) -> String {
    format!("{ID}-{name}")
}

/// Recovery, every branch of `recover()` at once: running (kept, watched), exited while the
/// agent was down (its exit code), created (started as a fresh start would), missing after
/// RUNNING (stopped, no exit code), and state() failing or UNKNOWN (asked again, not "gone").
#[tokio::test(start_paused = true)]
async fn recovery_takes_each_container_as_containerd_has_it() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Running);
    rt.put(&cid("side"), ContainerState::Stopped(7));
    rt.put(&cid("third"), ContainerState::Created);
    rt.faults.inject(
        "state",
        Some("main"),
        Fault::Fail(2, tonic::Code::Unavailable),
    );
    rt.faults.inject(
        "state",
        Some("main"),
        Fault::Answer(2, ContainerState::Unknown),
    );
    let rec = record(
        "PENDING",
        &[
            ("main", "RUNNING", true),
            ("side", "RUNNING", true),
            ("third", "PENDING", true),
        ],
        false,
    );
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(container(&running, "main").last_status, "RUNNING");
    assert_eq!(container(&running, "third").last_status, "RUNNING");
    assert_eq!(h.runtime.count("start", "third"), 1, "created → started");
    assert_eq!(h.runtime.count("start", "main"), 0, "not restarted");
    assert!(
        h.runtime.count("state", "main") >= 5,
        "asked until it answered"
    );
    let side = reported(&h, |c| container(c, "side").last_status == "STOPPED").await;
    assert_eq!(container(&side, "side").exit_code, Some(7));
    // The watch was set up: main's exit is seen.
    h.runtime.exit(&cid("main"), 3);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(container(&stopped, "main").exit_code, Some(3));
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert_forward_only(&h);
}

/// Recovery: a container recorded RUNNING that containerd no longer has is STOPPED with a
/// reason and no exit code; a PENDING one never created is created and started.
#[tokio::test(start_paused = true)]
async fn recovery_of_missing_containers() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Running);
    let rec = record(
        "PENDING",
        &[
            ("main", "RUNNING", true),
            ("side", "RUNNING", true),
            ("third", "PENDING", true),
        ],
        false,
    );
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let running = reported(&h, |c| {
        c.last_status == "RUNNING" && container(c, "side").last_status == "STOPPED"
    })
    .await;
    let side = container(&running, "side");
    assert_eq!(
        (side.last_status.as_str(), side.exit_code),
        ("STOPPED", None)
    );
    assert_eq!(side.reason.as_deref(), Some(task::VANISHED));
    assert_eq!(container(&running, "third").last_status, "RUNNING");
    assert_eq!(h.runtime.count("create", "third"), 1);
    assert_forward_only(&h);
}

/// Recovery after a reboot: containers recorded RUNNING whose process is gone (containerd keeps
/// the container, not its task) are STOPPED with a reason saying they did not survive the
/// reboot, and so is the task; a record from the same boot gets the vanished reason instead
/// (`recovery_of_missing_containers`), and so does a record kept before boot ids were.
#[tokio::test(start_paused = true)]
async fn a_reboot_is_named_in_the_reason_of_containers_that_did_not_survive_it() {
    for (then, container_reason, task_reason) in [
        (
            Some("6a1c9e1e-0000-4000-8000-000000000000"),
            task::REBOOTED,
            task::HOST_REBOOTED,
        ),
        (Some(BOOT), task::VANISHED, task::ESSENTIAL_EXITED),
        (None, task::VANISHED, task::ESSENTIAL_EXITED),
    ] {
        let rt = FakeRuntime::default();
        for name in ["main", "side", "third"] {
            rt.put(&cid(name), ContainerState::Created);
        }
        let mut rec = record(
            "RUNNING",
            &[
                ("main", "RUNNING", true),
                ("side", "RUNNING", true),
                ("third", "RUNNING", true),
            ],
            false,
        );
        rec.boot_id = then.map(String::from);
        let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
        let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
        for name in ["main", "side", "third"] {
            let c = container(&stopped, name);
            assert_eq!(
                (c.exit_code, c.reason.as_deref()),
                (None, Some(container_reason)),
                "{then:?} {name}"
            );
        }
        assert_eq!(
            stopped.stopped_reason.as_deref(),
            Some(task_reason),
            "{then:?}"
        );
        assert_eq!(
            stopped.stop_code.as_deref(),
            Some("EssentialContainerExited")
        );
        assert_forward_only(&h);
    }
}

/// After a reboot, a task recovered PENDING starts its other containers in the new boot: the
/// record takes this boot's id, only the container that was running before the reboot gets the
/// reboot reason, and a container started in this boot that vanishes later is VANISHED.
#[tokio::test(start_paused = true)]
async fn containers_started_after_a_reboot_belong_to_the_new_boot() {
    let rt = FakeRuntime::default();
    rt.put(&cid("side"), ContainerState::Created);
    let mut rec = record(
        "PENDING",
        &[
            ("main", "PENDING", false),
            ("side", "RUNNING", true),
            ("third", "PENDING", false),
        ],
        false,
    );
    rec.boot_id = Some("6a1c9e1e-0000-4000-8000-000000000000".into());
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let running = reported(&h, |c| {
        c.last_status == "RUNNING" && container(c, "side").last_status == "STOPPED"
    })
    .await;
    assert_eq!(
        container(&running, "side").reason.as_deref(),
        Some(task::REBOOTED)
    );
    let saved: TaskRecord = read_json(&DataDir(h.dir.clone()).task(ID))
        .unwrap()
        .unwrap();
    assert_eq!(saved.boot_id.as_deref(), Some(BOOT));
    h.runtime.containers.lock().unwrap().remove(&cid("third"));
    let third = reported(&h, |c| container(c, "third").last_status == "STOPPED").await;
    assert_eq!(
        container(&third, "third").reason.as_deref(),
        Some(task::VANISHED)
    );
    assert_forward_only(&h);
}

/// Recovery: a container recorded RUNNING that containerd holds as created, with no process,
/// is STOPPED without an exit code (not left unwatched until the SIGKILL retries give up), and
/// what is left of it is deleted.
#[tokio::test(start_paused = true)]
async fn recovery_of_a_started_container_found_only_created() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Created);
    let rec = record("RUNNING", &[("main", "RUNNING", true)], false);
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let main = container(&stopped, "main");
    assert_eq!(
        (main.last_status.as_str(), main.exit_code),
        ("STOPPED", None)
    );
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    assert!(
        h.runtime.kills.lock().unwrap().is_empty(),
        "nothing to kill"
    );
    assert!(no_process_left(&h), "deleted");
    assert_forward_only(&h);
}

/// Recovery of a task that was STOPPING: a created container is stopped as never started (not
/// started), a running one is signalled again, and the task reaches STOPPED.
#[tokio::test(start_paused = true)]
async fn recovery_of_a_stopping_task_stops_created_containers_without_starting_them() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Running);
    rt.put(&cid("third"), ContainerState::Created);
    let rec = record(
        "STOPPING",
        &[
            ("main", "RUNNING", true),
            ("side", "STOPPED", true),
            ("third", "PENDING", true),
        ],
        true,
    );
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("start", ""), 0);
    assert_eq!(container(&stopped, "main").exit_code, Some(143));
    let third = container(&stopped, "third");
    assert_eq!(
        (third.last_status.as_str(), third.exit_code),
        ("STOPPED", None)
    );
    assert_eq!(stopped.stop_code.as_deref(), Some("UserInitiated"));
    assert!(no_process_left(&h));
    assert_forward_only(&h);
}

/// Recovery: an essential container found created whose start fails stops the task as a fresh
/// start would (TaskFailedToStart), and the running sibling is stopped.
#[tokio::test(start_paused = true)]
async fn recovery_applies_the_start_rules_to_created_containers() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Created);
    rt.put(&cid("side"), ContainerState::Running);
    rt.faults
        .inject("start", Some("main"), Fault::Fail(1, tonic::Code::Unknown));
    let rec = record(
        "PENDING",
        &[
            ("main", "PENDING", true),
            ("side", "RUNNING", true),
            ("third", "PENDING", false),
        ],
        false,
    );
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    let main = container(&stopped, "main");
    assert!(main
        .reason
        .as_deref()
        .unwrap_or("")
        .starts_with("CannotStartContainerError"));
    assert_eq!(main.exit_code, None);
    assert_eq!(container(&stopped, "side").exit_code, Some(143));
    assert_forward_only(&h);
}

/// Item 3: a failed SIGKILL is sent again with back-off (1 s, 2 s, …) until it works; the exit
/// code is containerd's and there is no TaskStateError; the failed signal shows as ECS's
/// CannotStopContainerError on the container.
#[tokio::test(start_paused = true)]
async fn a_failed_sigkill_is_retried_with_back_off() {
    let rt = FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    };
    // The stop signal and the first two SIGKILLs fail.
    rt.faults.inject(
        "kill",
        Some("main"),
        Fault::Fail(3, tonic::Code::Unavailable),
    );
    let h = harness(rt);
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[{"name":"main","image":"i","stopTimeout":2}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let kills = h.runtime.kills.lock().unwrap().clone();
    assert_eq!(kills.len(), 1, "only the third SIGKILL got through");
    assert_eq!(kills[0].1, 9);
    assert_eq!(kills[0].2 - asked, Duration::from_secs(2 + 1 + 2));
    assert_eq!(h.runtime.count("kill", "main"), 4);
    let main = container(&stopped, "main");
    assert_eq!(
        (main.exit_code, main.reason.as_deref()),
        (Some(137), Some("CannotStopContainerError: injected"))
    );
    assert_eq!(stopped.stopped_reason.as_deref(), Some("by test"));
    assert_forward_only(&h);
}

#[tokio::test(start_paused = true)]
async fn every_session_start_re_reports_tasks_the_desired_set_does_not_name() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let unknown = |h: &Harness| {
        h.reporter
            .history()
            .iter()
            .filter(|c| c.unknown_to_controller)
            .count()
    };
    let empty = |seq| DesiredTasks {
        seq,
        tasks: vec![],
        ..Default::default()
    };
    h.engine.apply_desired(&empty(2));
    let first = reported(&h, |c| c.unknown_to_controller).await;
    // With what a controller that has no record of it needs to adopt it.
    assert_eq!(container(&first, "main").image.as_deref(), Some("i"));
    h.reporter.ack(first.seq);
    // Within a session: once.
    h.engine.apply_desired(&empty(3));
    h.reporter.flush().await;
    assert_eq!(unknown(&h), 1);
    // A new session (the controller may have restarted): again.
    h.engine.new_session();
    h.engine.apply_desired(&empty(1));
    h.reporter.flush().await;
    assert_eq!(unknown(&h), 2);
    assert!(h.runtime.kills.lock().unwrap().is_empty());
}

/// Link protocol 2 (issue 12): a partial set changes only what it names; a task it does not
/// name keeps its assignment (not reported, not stopped), and only `removed` takes one out.
#[tokio::test(start_paused = true)]
async fn a_partial_set_reports_only_what_it_removes() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let unknown = |h: &Harness| {
        h.reporter
            .history()
            .iter()
            .filter(|c| c.unknown_to_controller)
            .count()
    };
    // A partial set naming nothing of it (another task's change, say) leaves it alone.
    let partial = |seq, removed: Vec<String>| DesiredTasks {
        seq,
        partial: true,
        removed,
        ..Default::default()
    };
    h.engine.apply_desired(&partial(2, vec![]));
    h.engine.apply_desired(&partial(
        3,
        vec!["arn:aws:ecs:on-prem:0:task/c/other".into()],
    ));
    h.reporter.flush().await;
    assert_eq!(
        unknown(&h),
        0,
        "a task a partial set does not name was reported"
    );
    assert_eq!(h.engine.task_count(), 1);
    // Removed from the set while it runs: reported unknown_to_controller, once, never stopped.
    h.engine.apply_desired(&partial(4, vec![ARN.into()]));
    let first = reported(&h, |c| c.unknown_to_controller).await;
    assert_eq!(first.last_status, "RUNNING");
    h.engine.apply_desired(&partial(5, vec![ARN.into()]));
    h.engine.apply_desired(&partial(6, vec![]));
    h.reporter.flush().await;
    assert_eq!(unknown(&h), 1);
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert!(h.runtime.kills.lock().unwrap().is_empty());
}

/// Link protocol 2 (issue 12): a partial set that names a stop acts on it; one whose `removed`
/// names a STOPPED task makes the agent forget it; a partial set not naming it does not.
#[tokio::test(start_paused = true)]
async fn a_partial_set_that_removes_a_stopped_task_forgets_it() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let mut stop = assignment("STOPPED", TWO);
    stop.seq = 2;
    stop.partial = true;
    stop.tasks[0].task_definition = None;
    h.engine.apply_desired(&stop);
    reported(&h, |c| c.last_status == "STOPPED").await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 3,
        partial: true,
        removed: vec!["arn:aws:ecs:on-prem:0:task/c/other".into()],
        ..Default::default()
    });
    assert_eq!(h.engine.task_count(), 1, "forgotten without being removed");
    h.engine.apply_desired(&DesiredTasks {
        seq: 4,
        partial: true,
        removed: vec![ARN.into()],
        ..Default::default()
    });
    assert_eq!(h.engine.task_count(), 0);
    h.reporter.flush().await;
    assert!(!h.dir.join("tasks").join(format!("{ID}.json")).exists());
}

/// A task's containers left running with no task record (a lost data dir).
fn left_running(h: &Harness) {
    for name in ["main", "side"] {
        h.runtime.containers.lock().unwrap().insert(
            format!("{ID}-{name}"),
            (ContainerState::Running, watch::channel(None).0),
        );
    }
}

fn labelled(name: &str) -> crate::runtime::LabelledContainer {
    crate::runtime::LabelledContainer {
        id: format!("{ID}-{name}"),
        labels: [
            ("com.amazonaws.ecs.cluster", "c"),
            ("com.amazonaws.ecs.task-arn", ARN),
            ("com.amazonaws.ecs.container-name", name),
            ("com.amazonaws.ecs.task-definition-family", "f"),
            ("com.amazonaws.ecs.task-definition-version", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
        state: ContainerState::Running,
    }
}

#[tokio::test(start_paused = true)]
async fn containers_no_record_holds_are_reported_then_inspected_not_restarted() {
    let h = harness(FakeRuntime {
        listed: vec![labelled("main"), labelled("side")],
        ..Default::default()
    });
    left_running(&h);
    assert_eq!(h.engine.report_unrecorded().await.unwrap(), 1);
    let unknown = reported(&h, |c| c.unknown_to_controller).await;
    assert_eq!(unknown.last_status, "RUNNING");
    assert!(unknown
        .task_definition_arn
        .as_deref()
        .is_some_and(|a| a.ends_with("task-definition/f:1")));
    // Re-reported at every session start while the controller does not name it.
    h.engine.new_session();
    h.engine.apply_desired(&DesiredTasks {
        seq: 1,
        tasks: vec![],
        ..Default::default()
    });
    h.reporter.flush().await;
    assert_eq!(
        h.reporter
            .history()
            .iter()
            .filter(|c| c.unknown_to_controller)
            .count(),
        2
    );
    // The controller adopts it (names it RUNNING): its containers are watched, not recreated.
    let mut d = assignment("RUNNING", TWO);
    d.tasks[0].task.as_mut().unwrap().last_status = "RUNNING".into();
    h.engine.apply_desired(&d);
    reported(&h, |c| {
        c.last_status == "RUNNING" && !c.unknown_to_controller
    })
    .await;
    assert!(h.cgroups.created.lock().unwrap().is_empty(), "started anew");
    h.runtime.exit(&format!("{ID}-main"), 7);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(container(&stopped, "main").exit_code, Some(7));
}

#[tokio::test(start_paused = true)]
async fn a_running_task_the_agent_has_no_record_of_is_inspected_not_assumed() {
    let h = harness(FakeRuntime::default());
    // The controller says RUNNING; no record here and no container in containerd.
    let mut d = assignment("RUNNING", TWO);
    d.tasks[0].task.as_mut().unwrap().last_status = "RUNNING".into();
    for c in &mut d.tasks[0].task.as_mut().unwrap().containers {
        c.last_status = "RUNNING".into();
    }
    h.engine.apply_desired(&d);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert!(container(&stopped, "main")
        .reason
        .as_deref()
        .is_some_and(|r| r.starts_with("CannotInspectContainerError")));
    assert!(h.cgroups.created.lock().unwrap().is_empty(), "started anew");
}

/// A fake secret source: answers from a table, or fails every call; counts the calls.
#[derive(Debug, Default)]
struct FakeSecrets {
    values: Vec<crate::secrets::TaskSecret>,
    registry: Vec<crate::secrets::RegistryCredential>,
    fail: Option<&'static str>,
    calls: Mutex<u32>,
}

#[async_trait]
impl crate::secrets::SecretSource for FakeSecrets {
    async fn task_secrets(
        &self,
        task_arn: &str,
    ) -> Result<crate::secrets::TaskSecrets, crate::secrets::SecretError> {
        assert_eq!(task_arn, ARN);
        *self.calls.lock().unwrap() += 1;
        match self.fail {
            Some(why) => Err(crate::secrets::SecretError::Refused(why.into())),
            None => Ok(crate::secrets::TaskSecrets {
                env: self.values.clone(),
                registry: self.registry.clone(),
            }),
        }
    }
}

const PLAIN: &str = "pl41ntext-never-on-disk";

const WITH_SECRETS: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","essential":true,
   "environment":[{"name":"DB_PASSWORD","value":"from-environment"},{"name":"KEEP","value":"k"}],
   "secrets":[{"name":"DB_PASSWORD","valueFrom":"arn:aws:secretsmanager:us-east-1:1:secret:db"},
              {"name":"API_KEY","valueFrom":"/prod/api-key"}]},
  {"name":"side","image":"i","essential":false}]}"#;

fn secret(container: &str, name: &str, value: &str) -> crate::secrets::TaskSecret {
    crate::secrets::TaskSecret {
        container: container.into(),
        name: name.into(),
        value: value.into(),
    }
}

/// Every byte under the data dir, file by file.
fn data_dir_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out
}

/// Secrets reach the environment of their container only, override `environment` entries of
/// the same name, and are written nowhere in the data dir (the record keeps the references).
#[tokio::test(start_paused = true)]
async fn secrets_are_injected_override_environment_and_are_never_persisted() {
    let source = Arc::new(FakeSecrets {
        values: vec![
            secret("main", "DB_PASSWORD", PLAIN),
            secret("main", "API_KEY", "key-value-123"),
        ],
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        Vec::new(),
        Timeouts::default(),
        source.clone(),
    );
    h.engine.apply_desired(&assignment("RUNNING", WITH_SECRETS));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.reporter.flush().await;
    assert_eq!(*source.calls.lock().unwrap(), 1);
    let envs = h.runtime.envs.lock().unwrap().clone();
    let main = &envs[&cid("main")];
    assert!(main.contains(&format!("DB_PASSWORD={PLAIN}")), "{main:?}");
    assert!(!main.iter().any(|e| e == "DB_PASSWORD=from-environment"));
    assert!(main.contains(&"API_KEY=key-value-123".to_string()));
    assert!(main.contains(&"KEEP=k".to_string()));
    assert!(!envs[&cid("side")].iter().any(|e| e.contains(PLAIN)));
    let files = data_dir_files(&h.dir);
    assert!(!files.is_empty());
    for (path, bytes) in files {
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains(PLAIN), "{} holds the secret", path.display());
        assert!(!text.contains("key-value-123"), "{}", path.display());
    }
    let rec =
        std::fs::read_to_string(h.dir.join("tasks").join(format!("{ID}.json"))).unwrap_or_default();
    assert!(
        rec.contains("/prod/api-key"),
        "the record keeps the references: {rec}"
    );
}

/// A task without secrets never asks; one whose secrets cannot be had stops with ECS's
/// ResourceInitializationError and creates no container.
#[tokio::test(start_paused = true)]
async fn unavailable_secrets_stop_the_task_before_any_container_is_created() {
    let source = Arc::new(FakeSecrets {
        fail: Some(
            "container main: secret DB_PASSWORD (arn:…:secret:db): secret db does not exist",
        ),
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        Vec::new(),
        Timeouts::default(),
        source.clone(),
    );
    h.engine.apply_desired(&assignment("RUNNING", WITH_SECRETS));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    let reason = stopped.stopped_reason.unwrap_or_default();
    assert!(
        reason.starts_with(
            "ResourceInitializationError: unable to pull secrets or registry auth: container main: secret DB_PASSWORD"
        ),
        "{reason}"
    );
    assert_eq!(h.runtime.count("create", ""), 0);
    assert_eq!(h.runtime.count("image", ""), 0);
    assert_forward_only(&h);

    let quiet = Arc::new(FakeSecrets {
        fail: Some("must not be asked"),
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        Vec::new(),
        Timeouts::default(),
        quiet.clone(),
    );
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(*quiet.calls.lock().unwrap(), 0);
}

const WITH_REGISTRY_CREDENTIALS: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"reg.example/app:1","essential":true,
   "repositoryCredentials":{"credentialsParameter":"arn:aws:secretsmanager:us-east-1:1:secret:reg"}},
  {"name":"side","image":"i","essential":false}]}"#;

/// Issue 11: a task with no `secrets` but a container with repositoryCredentials asks the
/// link (its credentials are for the pull), writes the password nowhere in the data dir, and
/// stops with ECS's ResourceInitializationError when they cannot be had.
#[tokio::test(start_paused = true)]
async fn repository_credentials_alone_make_the_task_ask_for_them() {
    let source = Arc::new(FakeSecrets {
        registry: vec![crate::secrets::RegistryCredential {
            container: "main".into(),
            username: "robot".into(),
            password: PLAIN.into(),
        }],
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        Vec::new(),
        Timeouts::default(),
        source.clone(),
    );
    h.engine
        .apply_desired(&assignment("RUNNING", WITH_REGISTRY_CREDENTIALS));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.reporter.flush().await;
    assert_eq!(*source.calls.lock().unwrap(), 1);
    for (path, bytes) in data_dir_files(&h.dir) {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains(PLAIN),
            "{} holds the password",
            path.display()
        );
    }
    let envs = h.runtime.envs.lock().unwrap().clone();
    assert!(!envs.values().flatten().any(|e| e.contains(PLAIN)));

    let refused = Arc::new(FakeSecrets {
        fail: Some("container main: repositoryCredentials.credentialsParameter arn:aws:secretsmanager:us-east-1:1:secret:reg: secret reg does not exist"),
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        Vec::new(),
        Timeouts::default(),
        refused.clone(),
    );
    h.engine
        .apply_desired(&assignment("RUNNING", WITH_REGISTRY_CREDENTIALS));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let reason = stopped.stopped_reason.unwrap_or_default();
    assert!(
        reason.starts_with("ResourceInitializationError: unable to pull secrets or registry auth: container main: repositoryCredentials"),
        "{reason}"
    );
    assert_eq!(h.runtime.count("image", ""), 0, "no pull without them");
}

/// After an agent restart, a container still to create gets its secrets asked again (they were
/// never written down).
#[tokio::test(start_paused = true)]
async fn after_a_restart_secrets_are_asked_again_for_containers_still_to_create() {
    let a = assignment("RUNNING", WITH_SECRETS);
    let t = &a.tasks[0];
    let rec = TaskRecord {
        task: t.task.clone().unwrap(),
        definition: t.task_definition.clone().unwrap(),
        desired_status: "RUNNING".into(),
        state: TaskStateChange {
            task_arn: ARN.into(),
            last_status: "PENDING".into(),
            containers: ["main", "side"]
                .iter()
                .map(|n| ContainerStateChange {
                    name: n.to_string(),
                    last_status: "PENDING".into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        },
        stop_signals: Default::default(),
        oom_kills_before: Default::default(),
        namespace_holders: Default::default(),
        boot_id: None,
        task_network: None,
        network: None,
        network_set_up: false,
        network_released: false,
    };
    let source = Arc::new(FakeSecrets {
        values: vec![secret("main", "DB_PASSWORD", PLAIN)],
        ..Default::default()
    });
    let h = harness_full(
        FakeRuntime::default(),
        FakeCgroups::default(),
        vec![rec],
        Timeouts::default(),
        source.clone(),
    );
    reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(*source.calls.lock().unwrap(), 1);
    let envs = h.runtime.envs.lock().unwrap().clone();
    assert!(envs[&cid("main")].contains(&format!("DB_PASSWORD={PLAIN}")));
}

// ---- Task networks (issue 8) ----

const BRIDGE: &str = r#"{"family":"f","revision":1,"containerDefinitions":[
  {"name":"main","image":"i","portMappings":[{"containerPort":80,"hostPort":8080},{"containerPort":53,"protocol":"udp"}]},
  {"name":"side","image":"i","essential":false,"hostname":"sidecar"}]}"#;

const AWSVPC: &str = r#"{"family":"f","revision":1,"networkMode":"awsvpc","containerDefinitions":[
  {"name":"main","image":"i","portMappings":[{"containerPort":80}]},{"name":"side","image":"i","essential":false}]}"#;

fn rule(port: i32, cidr: &str) -> berth_proto::v1::IngressRule {
    berth_proto::v1::IngressRule {
        protocol: "tcp".into(),
        from_port: port,
        to_port: port,
        cidr: cidr.into(),
    }
}

fn task_network(rules: Vec<berth_proto::v1::IngressRule>) -> berth_proto::v1::TaskNetwork {
    berth_proto::v1::TaskNetwork {
        subnet: "subnet-local".into(),
        private_ipv4_address: None,
        assign_public_ip: false,
        security_groups: vec!["sg-0123456789abcdef0".into()],
        ingress: rules,
    }
}

fn with_network(mut d: DesiredTasks, n: berth_proto::v1::TaskNetwork) -> DesiredTasks {
    d.tasks[0].network = Some(n);
    d
}

fn netns_of(h: &Harness, name: &str) -> Option<String> {
    let specs = h.runtime.specs.lock().unwrap();
    let spec = specs.get(&cid(name)).expect("container created");
    spec.linux()
        .as_ref()
        .unwrap()
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        .and_then(|n| n.path().as_ref().map(|p| p.display().to_string()))
}

fn mount_source(h: &Harness, name: &str, dest: &str) -> Option<String> {
    let specs = h.runtime.specs.lock().unwrap();
    specs
        .get(&cid(name))?
        .mounts()
        .as_ref()?
        .iter()
        .find_map(|m| {
            (m.destination().display().to_string() == dest)
                .then(|| m.source().as_ref().unwrap().display().to_string())
        })
}

/// A bridge task (no networkMode: ECS's default) runs with each container in its own
/// namespace, its /etc files generated, and its published ports in the reports; the network is
/// torn down and released when the containers have stopped, before their cleanup.
#[tokio::test(start_paused = true)]
async fn a_bridge_task_runs_in_its_namespaces_and_reports_its_bindings() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", BRIDGE));
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(
        netns_of(&h, "main").as_deref(),
        Some(&*format!("/run/netns/berth-{ID}-0"))
    );
    assert_eq!(
        netns_of(&h, "side").as_deref(),
        Some(&*format!("/run/netns/berth-{ID}-1"))
    );
    let b = &container(&running, "main").network_bindings;
    assert_eq!(b.len(), 2, "{b:?}");
    assert!(b.contains(&berth_proto::v1::NetworkBinding {
        bind_ip: Some("0.0.0.0".into()),
        container_port: Some(80),
        host_port: Some(8080),
        protocol: Some("tcp".into()),
        ..Default::default()
    }));
    assert!(b.contains(&berth_proto::v1::NetworkBinding {
        bind_ip: Some("0.0.0.0".into()),
        container_port: Some(53),
        host_port: Some(49153),
        protocol: Some("udp".into()),
        ..Default::default()
    }));
    assert!(container(&running, "side").network_bindings.is_empty());
    assert!(running.attachments.is_empty());
    // /etc files: own address → hostname (the definition's, else the container id prefix).
    let hosts = mount_source(&h, "side", "/etc/hosts").expect("hosts mounted");
    assert_eq!(
        hosts,
        h.dir
            .join(format!("tasks/{ID}/etc/side/hosts"))
            .display()
            .to_string()
    );
    let content = std::fs::read_to_string(&hosts).unwrap();
    assert!(content.contains("172.31.0.3\tsidecar\n"), "{content}");
    let main_hosts =
        std::fs::read_to_string(mount_source(&h, "main", "/etc/hosts").unwrap()).unwrap();
    assert!(
        main_hosts.contains(&format!("172.31.0.2\t{}\n", &ID[..12])),
        "{main_hosts}"
    );
    assert!(mount_source(&h, "main", "/etc/resolv.conf").is_some());
    assert!(mount_source(&h, "main", "/etc/hostname").is_some());
    assert_eq!(h.network.ops(ID), ["allocate", "setup"]);
    // The allocation was on disk before anything of it was made.
    assert_eq!(*h.network.on_disk_at_setup.lock().unwrap(), [true]);

    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", BRIDGE)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        h.network.ops(ID),
        ["allocate", "setup", "teardown", "release"]
    );
    // At STOPPED, not after the cleanup: no container had been deleted yet.
    assert_eq!(h.network.deletes_at("teardown", ID), Some(0));
    // Bindings stay on the stopped task, as DescribeTasks shows them.
    assert_eq!(container(&stopped, "main").network_bindings.len(), 2);
    assert!(
        h.dir.join(format!("tasks/{ID}")).exists(),
        "the task's /etc files stay for the cleanup wait"
    );
    assert_forward_only(&h);
}

/// An awsvpc task: one namespace for all containers, its interface in the reports and its
/// ElasticNetworkInterface attachment ATTACHED, then DELETED once torn down; the reports come
/// from the record, so they survive a restart.
#[tokio::test(start_paused = true)]
async fn an_awsvpc_task_shares_one_namespace_and_reports_its_attachment() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&with_network(
        assignment("RUNNING", AWSVPC),
        task_network(vec![rule(80, "0.0.0.0/0")]),
    ));
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    let ns = format!("/run/netns/berth-{ID}");
    assert_eq!(netns_of(&h, "main").as_deref(), Some(&*ns));
    assert_eq!(netns_of(&h, "side").as_deref(), Some(&*ns));
    let attachment_id = "01234567-89ab-cdef-0123-456789abcdef";
    for c in ["main", "side"] {
        assert_eq!(
            container(&running, c).network_interfaces,
            vec![berth_proto::v1::NetworkInterface {
                attachment_id: Some(attachment_id.into()),
                private_ipv4_address: Some("172.30.0.5".into()),
                ipv6_address: None,
            }]
        );
    }
    assert!(container(&running, "main").network_bindings.is_empty());
    assert_eq!(running.attachments.len(), 1);
    let a = &running.attachments[0];
    assert_eq!(
        (a.id.as_str(), a.r#type.as_str(), a.status.as_str()),
        (attachment_id, "ElasticNetworkInterface", "ATTACHED")
    );
    let details: Vec<(&str, &str)> = a
        .details
        .iter()
        .map(|d| (d.name.as_str(), d.value.as_str()))
        .collect();
    assert_eq!(
        details,
        [
            ("subnetId", "subnet-local"),
            ("networkInterfaceId", "eni-0123456789abcdef0"),
            ("macAddress", "02:42:ac:1e:00:05"),
            ("privateIPv4Address", "172.30.0.5"),
            ("privateDnsName", "ip-172-30-0-5"),
        ]
    );
    let hosts = std::fs::read_to_string(mount_source(&h, "side", "/etc/hosts").unwrap()).unwrap();
    assert!(hosts.contains("172.30.0.5\t"), "{hosts}");
    // The record holds what the reports show.
    h.reporter.flush().await;
    let rec: TaskRecord = read_json(&h.dir.join(format!("tasks/{ID}.json")))
        .unwrap()
        .unwrap();
    assert_eq!(report_of(&rec).attachments, running.attachments);

    h.runtime.exit(&cid("main"), 0);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.attachments[0].status, "DELETED");
    assert_eq!(
        container(&stopped, "main").network_interfaces[0]
            .private_ipv4_address
            .as_deref(),
        Some("172.30.0.5")
    );
    assert_eq!(h.network.deletes_at("teardown", ID), Some(0));
    assert_eq!(
        h.network.ops(ID),
        ["allocate", "setup", "teardown", "release"]
    );
}

/// A setup failure stops the task with ContainerNetworkingError (never left PENDING) and
/// removes what was made; no container is created.
#[tokio::test(start_paused = true)]
async fn a_network_setup_failure_stops_the_task_and_removes_its_network() {
    let net = FakeNetwork::default();
    net.faults
        .inject("setup", None, Fault::Fail(1, tonic::Code::Unknown));
    let h = harness_net(
        FakeRuntime::default(),
        FakeCgroups::default(),
        net,
        Vec::new(),
        Timeouts::default(),
        Arc::new(crate::secrets::NoSecrets),
    );
    h.engine.apply_desired(&assignment("RUNNING", BRIDGE));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    assert_eq!(
        stopped.stopped_reason.as_deref(),
        Some("ContainerNetworkingError: injected setup failure")
    );
    assert_eq!(
        h.network.ops(ID),
        ["allocate", "setup", "teardown", "release"]
    );
    assert_eq!(h.runtime.count("create", ""), 0);
    assert!(container(&stopped, "main").network_bindings.is_empty());
    assert_forward_only(&h);
}

/// awsvpc needs the controller's part of the network: without it the task is refused, naming
/// what is missing, and nothing is allocated.
#[tokio::test(start_paused = true)]
async fn an_awsvpc_task_without_a_task_network_is_refused() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", AWSVPC));
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let reason = stopped.stopped_reason.unwrap_or_default();
    assert!(
        reason.starts_with("ContainerNetworkingError: awsvpc task without a network configuration"),
        "{reason}"
    );
    assert!(h.network.ops(ID).is_empty());
}

/// New ingress rules for a running awsvpc task are applied; the same rules again are not; a
/// failure does not stop the task and is tried again at the next change.
#[tokio::test(start_paused = true)]
async fn new_ingress_rules_are_applied_to_a_running_awsvpc_task() {
    let net = FakeNetwork::default();
    let h = harness_net(
        FakeRuntime::default(),
        FakeCgroups::default(),
        net,
        Vec::new(),
        Timeouts::default(),
        Arc::new(crate::secrets::NoSecrets),
    );
    let first = task_network(vec![rule(80, "0.0.0.0/0")]);
    h.engine
        .apply_desired(&with_network(assignment("RUNNING", AWSVPC), first.clone()));
    reported(&h, |c| c.last_status == "RUNNING").await;
    // The same network again: nothing to do.
    h.engine
        .apply_desired(&with_network(assignment("RUNNING", AWSVPC), first));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.network.ingress.lock().unwrap().is_empty());

    h.network
        .faults
        .inject("set_ingress", None, Fault::Fail(1, tonic::Code::Unknown));
    let second = task_network(vec![rule(443, "10.0.0.0/8")]);
    h.engine
        .apply_desired(&with_network(assignment("RUNNING", AWSVPC), second.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(h.network.ingress.lock().unwrap().len(), 1);
    assert!(all_reports(&h).iter().all(|c| c.last_status != "STOPPING"));

    let third = task_network(vec![rule(443, "10.0.0.0/8"), rule(22, "10.1.0.0/16")]);
    h.engine
        .apply_desired(&with_network(assignment("RUNNING", AWSVPC), third));
    tokio::time::sleep(Duration::from_secs(1)).await;
    let applied = h.network.ingress.lock().unwrap().clone();
    assert_eq!(applied.len(), 2);
    assert_eq!(
        applied[1].iter().map(|r| r.from_port).collect::<Vec<_>>(),
        [22, 443]
    );
    h.reporter.flush().await;
    let rec: TaskRecord = read_json(&h.dir.join(format!("tasks/{ID}.json")))
        .unwrap()
        .unwrap();
    assert_eq!(rec.network.unwrap().awsvpc.unwrap().ingress, applied[1]);
    assert_eq!(rec.task_network.unwrap().ingress.len(), 2);
}

/// At start the network gets the states of the records still held before any actor runs; a
/// task found STOPPED with its network up is torn down and released, and one whose containers
/// exited while the agent was down is torn down when it reaches STOPPED.
#[tokio::test(start_paused = true)]
async fn recovery_gives_held_states_and_tears_down_what_stopped_while_down() {
    let net_of = |task: &str| TaskNetworkState {
        task_id: task.into(),
        mode: Mode::None,
        namespaces: [(
            String::new(),
            Namespace {
                name: format!("berth-{task}"),
                interface: None,
            },
        )]
        .into(),
        bindings: Vec::new(),
        awsvpc: None,
        network: None,
    };
    // Exited while the agent was down.
    let mut exited = record(
        "RUNNING",
        &[
            ("main", "RUNNING", true),
            ("side", "RUNNING", true),
            ("third", "RUNNING", true),
        ],
        false,
    );
    exited.network = Some(net_of(ID));
    exited.network_set_up = true;
    // STOPPED, its network still up (the agent stopped before the teardown).
    let other_id = "fedcba9876543210fedcba9876543210";
    let mut stopped = record(
        "STOPPED",
        &[
            ("main", "STOPPED", true),
            ("side", "STOPPED", true),
            ("third", "STOPPED", true),
        ],
        true,
    );
    stopped.task.task_arn = ARN.replace(ID, other_id);
    stopped.state.task_arn = stopped.task.task_arn.clone();
    stopped.network = Some(net_of(other_id));
    stopped.network_set_up = true;
    // Released long ago: not held.
    let gone_id = "00000000000000000000000000000000";
    let mut released = stopped.clone();
    released.task.task_arn = ARN.replace(ID, gone_id);
    released.state.task_arn = released.task.task_arn.clone();
    released.network = Some(net_of(gone_id));
    released.network_released = true;

    let rt = FakeRuntime::default();
    for n in ["main", "side", "third"] {
        rt.put(&cid(n), ContainerState::Stopped(0));
    }
    let h = harness_with(rt, FakeCgroups::default(), vec![exited, stopped, released]);
    reported(&h, |c| c.task_arn == ARN && c.last_status == "STOPPED").await;
    h.reporter.flush().await;
    let mut held: Vec<String> = h
        .network
        .recovered
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.task_id.clone())
        .collect();
    held.sort();
    assert_eq!(held, [ID, other_id]);
    // recover came first, before any other call.
    assert_eq!(h.network.calls.lock().unwrap()[0].0, "recover");
    assert_eq!(h.network.ops(other_id), ["teardown", "release"]);
    assert_eq!(h.network.ops(ID), ["teardown", "release"]);
    assert!(h.network.ops(gone_id).is_empty());
    let rec: TaskRecord = read_json(&h.dir.join(format!("tasks/{other_id}.json")))
        .unwrap()
        .unwrap();
    assert!(rec.network_released);
}

// ---- Issue 9: health checks in the actor ----

const CHECKED: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","healthCheck":{"command":["CMD","true"],"interval":5,"retries":2}},
  {"name":"side","image":"i","essential":false,"healthCheck":{"command":["CMD-SHELL","true"],"interval":5,"retries":1}},
  {"name":"plain","image":"i"}]}"#;

fn health_of(c: &TaskStateChange, name: &str) -> Option<String> {
    container(c, name).health_status.clone()
}

/// Containers with a check start UNKNOWN and go HEALTHY; the task's health comes from its
/// essential containers with a check only (a failing non-essential one does not count, an
/// essential one without a check neither); an UNHEALTHY essential container does not stop the
/// task; the checkers stop with the task.
#[tokio::test(start_paused = true)]
async fn health_checks_decide_container_and_task_health() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", CHECKED));
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(health_of(&running, "main").as_deref(), Some("UNKNOWN"));
    assert_eq!(health_of(&running, "plain"), None, "no check, no health");
    assert_eq!(running.health_status.as_deref(), Some("UNKNOWN"));
    let healthy = reported(&h, |c| {
        health_of(c, "main").as_deref() == Some("HEALTHY")
            && health_of(c, "side").as_deref() == Some("HEALTHY")
    })
    .await;
    assert_eq!(healthy.health_status.as_deref(), Some("HEALTHY"));
    assert!(container(&healthy, "main").health_checked_at.is_some());

    h.runtime.exec_exit.lock().unwrap().insert(cid("side"), 1);
    let side_down = reported(&h, |c| health_of(c, "side").as_deref() == Some("UNHEALTHY")).await;
    assert_eq!(
        side_down.health_status.as_deref(),
        Some("HEALTHY"),
        "side is not essential"
    );

    h.runtime.exec_exit.lock().unwrap().insert(cid("main"), 1);
    let down = reported(&h, |c| health_of(c, "main").as_deref() == Some("UNHEALTHY")).await;
    assert_eq!(down.health_status.as_deref(), Some("UNHEALTHY"));
    assert_eq!(
        down.last_status, "RUNNING",
        "an unhealthy container is not stopped"
    );
    // Recovers with one success.
    h.runtime.exec_exit.lock().unwrap().insert(cid("main"), 0);
    reported(&h, |c| {
        c.health_status.as_deref() == Some("HEALTHY")
            && health_of(c, "main").as_deref() == Some("HEALTHY")
    })
    .await;

    h.engine.apply_desired(&assignment("STOPPED", CHECKED));
    reported(&h, |c| c.last_status == "STOPPED").await;
    let checks = h.runtime.count("exec", "");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        h.runtime.count("exec", ""),
        checks,
        "checks after the task stopped"
    );
}

/// After an agent restart the checker of a running container starts again, from the recorded
/// health.
#[tokio::test(start_paused = true)]
async fn health_checks_resume_after_recovery() {
    let rt = FakeRuntime::default();
    rt.put(&cid("main"), ContainerState::Running);
    let a = assignment("RUNNING", CHECKED);
    let t = &a.tasks[0];
    let mut rec = record("RUNNING", &[("main", "RUNNING", true)], false);
    rec.definition = t.task_definition.clone().unwrap();
    rec.definition.container_definitions.truncate(1);
    rec.state.containers[0].health_status = Some("HEALTHY".into());
    rt.exec_exit.lock().unwrap().insert(cid("main"), 1);
    let h = harness_with(rt, FakeCgroups::default(), vec![rec]);
    // Two failures (retries 2) after the restart: UNHEALTHY, never UNKNOWN in between.
    let down = reported(&h, |c| health_of(c, "main").as_deref() == Some("UNHEALTHY")).await;
    assert_eq!(down.health_status.as_deref(), Some("UNHEALTHY"));
    assert!(h.runtime.count("exec", "main") >= 2);
    assert!(all_reports(&h)
        .iter()
        .all(|c| health_of(c, "main").as_deref() != Some("UNKNOWN")));
}

// ---- Issue 9: dependsOn, reverse stop order, restartPolicy, cleanup wait ----

/// Sends an event to the task's actor, as a health checker or a watcher would.
fn send(h: &Harness, ev: Event) {
    let entries = h.engine.shared.entries.lock().unwrap();
    let tx = entries.get(ID).and_then(|e| e.tx.clone()).expect("actor");
    tx.send(ev).unwrap();
}

/// When the fake runtime was first asked to do `op` for the container `name`.
fn first_call(h: &Harness, op: &str, name: &str) -> Option<tokio::time::Instant> {
    h.runtime
        .calls
        .lock()
        .unwrap()
        .iter()
        .find(|(o, id, _)| *o == op && id.ends_with(&format!("-{name}")))
        .map(|(_, _, t)| *t)
}

/// The position in the call log of the first `op` for `name`.
fn call_index(h: &Harness, op: &str, name: &str) -> Option<usize> {
    h.runtime
        .calls
        .lock()
        .unwrap()
        .iter()
        .position(|(o, id, _)| *o == op && id.ends_with(&format!("-{name}")))
}

/// init (SUCCESS) and db (START) before app; db and init are independent.
const ORDERED: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"app","image":"i","dependsOn":[{"containerName":"init","condition":"SUCCESS"},{"containerName":"db","condition":"START"}]},
  {"name":"init","image":"i","essential":false},
  {"name":"db","image":"i","essential":false}]}"#;

#[tokio::test(start_paused = true)]
async fn depends_on_starts_a_container_only_once_its_dependencies_are_met() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", ORDERED));
    // Both dependencies start without waiting for each other; app waits.
    let r = reported(&h, |c| {
        c.containers
            .iter()
            .filter(|x| x.name != "app" && x.last_status == "RUNNING")
            .count()
            == 2
    })
    .await;
    assert_eq!(container(&r, "app").last_status, "PENDING");
    assert!(container(&r, "init").started_at.is_some());
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(h.runtime.count("create", "app"), 0, "app waits for init");
    let last = all_reports(&h).pop().unwrap();
    assert_eq!(last.last_status, "PENDING");
    h.runtime.exit(&format!("{ID}-init"), 0);
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(container(&running, "app").last_status, "RUNNING");
    assert_eq!(container(&running, "init").exit_code, Some(0));
    assert!(container(&running, "init").finished_at.is_some());
    assert!(call_index(&h, "start", "app") > call_index(&h, "start", "db"));
    assert!(
        first_call(&h, "start", "app").unwrap()
            >= first_call(&h, "start", "init").unwrap() + Duration::from_secs(30)
    );
    assert_forward_only(&h);
}

#[tokio::test(start_paused = true)]
async fn a_success_dependency_exiting_non_zero_stops_the_task_with_task_dependency_error() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", ORDERED));
    reported(&h, |c| container(c, "init").last_status == "RUNNING").await;
    h.runtime.exit(&format!("{ID}-init"), 1);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    let reason = stopped.stopped_reason.clone().unwrap();
    assert!(reason.starts_with("TaskDependencyError: "), "{reason}");
    assert!(
        reason.contains("[init: SUCCESS]") && reason.contains("[app]"),
        "{reason}"
    );
    assert!(reason.contains("exit code 1"), "{reason}");
    let app = container(&stopped, "app");
    assert_eq!(
        (app.exit_code, app.reason.as_deref()),
        (None, Some(reason.as_str()))
    );
    assert!(app.started_at.is_none());
    assert_eq!(h.runtime.count("create", "app"), 0);
    // db, started, got its stop signal.
    assert_eq!(container(&stopped, "db").exit_code, Some(143));
    assert_forward_only(&h);
}

#[tokio::test(start_paused = true)]
async fn complete_is_met_by_any_exit_code() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"app","image":"i","dependsOn":[{"containerName":"init","condition":"COMPLETE"}]},
      {"name":"init","image":"i","essential":false}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| container(c, "init").last_status == "RUNNING").await;
    assert_eq!(h.runtime.count("create", "app"), 0);
    h.runtime.exit(&format!("{ID}-init"), 3);
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(container(&running, "app").last_status, "RUNNING");
    assert_eq!(container(&running, "init").exit_code, Some(3));
}

#[tokio::test(start_paused = true)]
async fn start_is_met_by_a_started_container_and_links_imply_it() {
    let td = r#"{"family":"f","revision":1,"networkMode":"bridge","containerDefinitions":[
      {"name":"app","image":"i","links":["db:database"]},
      {"name":"web","image":"i","dependsOn":[{"containerName":"app","condition":"START"}]},
      {"name":"db","image":"i"}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let (db, app, web) = (
        call_index(&h, "start", "db").unwrap(),
        call_index(&h, "start", "app").unwrap(),
        call_index(&h, "start", "web").unwrap(),
    );
    assert!(db < app && app < web, "db {db}, app {app}, web {web}");
}

const HEALTHY_DEP: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"app","image":"i","dependsOn":[{"containerName":"db","condition":"HEALTHY"}]},
  {"name":"db","image":"i","startTimeout":20,"healthCheck":{"command":["CMD","true"]}}]}"#;

#[tokio::test(start_paused = true)]
async fn healthy_waits_for_the_health_check() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", HEALTHY_DEP));
    reported(&h, |c| container(c, "db").last_status == "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(
        &h,
        Event::Health {
            name: "db".into(),
            run: 1,
            status: berth_proto::status::HealthStatus::Unhealthy,
            output: "not yet".into(),
        },
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(h.runtime.count("create", "app"), 0, "UNHEALTHY is not met");
    send(
        &h,
        Event::Health {
            name: "db".into(),
            run: 1,
            status: berth_proto::status::HealthStatus::Healthy,
            output: "ok".into(),
        },
    );
    let running = reported(&h, |c| c.last_status == "RUNNING").await;
    assert_eq!(container(&running, "app").last_status, "RUNNING");
    assert_eq!(
        container(&running, "db").health_status.as_deref(),
        Some("HEALTHY")
    );
}

#[tokio::test(start_paused = true)]
async fn a_dependency_past_its_start_timeout_stops_the_task() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", HEALTHY_DEP));
    reported(&h, |c| container(c, "db").last_status == "RUNNING").await;
    let started = first_call(&h, "start", "db").unwrap();
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let stopping = h
        .runtime
        .kills
        .lock()
        .unwrap()
        .first()
        .map(|k| k.2)
        .unwrap();
    assert_eq!(
        stopping - started,
        Duration::from_secs(20),
        "db's startTimeout"
    );
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    let reason = stopped.stopped_reason.clone().unwrap();
    assert!(reason.starts_with("TaskDependencyError: "), "{reason}");
    assert!(
        reason.contains("[db: HEALTHY]") && reason.contains("timed out"),
        "{reason}"
    );
    assert_eq!(
        container(&stopped, "app").reason.as_deref(),
        Some(reason.as_str())
    );
    assert_eq!(h.runtime.count("create", "app"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_healthy_dependency_that_exits_stops_the_task() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"app","image":"i","dependsOn":[{"containerName":"db","condition":"HEALTHY"}]},
      {"name":"db","image":"i","essential":false,"healthCheck":{"command":["CMD","true"]}}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| container(c, "db").last_status == "RUNNING").await;
    h.runtime.exit(&format!("{ID}-db"), 0);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let reason = stopped.stopped_reason.unwrap();
    assert!(
        reason.starts_with("TaskDependencyError: ") && reason.contains("[db: HEALTHY]"),
        "{reason}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_stop_while_waiting_for_dependencies_stops_at_once() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", ORDERED));
    reported(&h, |c| container(c, "init").last_status == "RUNNING").await;
    let asked = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", ORDERED)
    });
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(stopped.stop_code.as_deref(), Some("UserInitiated"));
    assert_eq!(tokio::time::Instant::now(), asked, "no wait");
    assert_eq!(container(&stopped, "app").exit_code, None);
}

#[tokio::test(start_paused = true)]
async fn the_stop_runs_in_reverse_dependency_order() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"app","image":"i","stopTimeout":5,"dependsOn":[{"containerName":"db","condition":"START"}]},
      {"name":"db","image":"i","stopTimeout":7},
      {"name":"other","image":"i","stopTimeout":3}]}"#;
    let h = harness(FakeRuntime {
        ignore_sigterm: true,
        ..Default::default()
    });
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let t0 = tokio::time::Instant::now();
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", td)
    });
    reported(&h, |c| c.last_status == "STOPPED").await;
    let kills: Vec<(String, u32, Duration)> = h
        .runtime
        .kills
        .lock()
        .unwrap()
        .iter()
        .map(|(id, s, t)| {
            (
                id.trim_start_matches(&format!("{ID}-")).to_string(),
                *s,
                *t - t0,
            )
        })
        .collect();
    let at = |name: &str, sig: u32| {
        kills
            .iter()
            .find(|k| k.0 == name && k.1 == sig)
            .map(|k| k.2)
            .unwrap_or_else(|| panic!("no signal {sig} to {name}: {kills:?}"))
    };
    // app and other first; db only once app (SIGKILLed at its stopTimeout) has exited.
    assert_eq!(at("app", 15), Duration::ZERO);
    assert_eq!(at("other", 15), Duration::ZERO);
    assert_eq!(at("app", 9), Duration::from_secs(5));
    assert_eq!(at("db", 15), Duration::from_secs(5));
    assert_eq!(at("db", 9), Duration::from_secs(5 + 7));
}

const RESTARTING: &str = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","restartPolicy":{"enabled":true,"ignoredExitCodes":[2],"restartAttemptPeriod":60}}]}"#;

#[tokio::test(start_paused = true)]
async fn restart_policy_restarts_in_place_within_its_bounds() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let main = format!("{ID}-main");
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.runtime.exit(&main, 1);
    let r = reported(&h, |c| container(c, "main").restart_count == 1).await;
    let c = container(&r, "main");
    assert_eq!((c.last_status.as_str(), c.exit_code), ("RUNNING", None));
    assert!(c.finished_at.is_some() && c.started_at.is_some());
    assert_eq!(h.runtime.count("restart", "main"), 1);
    assert_eq!(
        h.runtime.count("create", "main"),
        1,
        "in place, not created again"
    );
    // Persisted: an agent restart keeps the count.
    h.reporter.flush().await;
    let rec: TaskRecord = read_json(&h.dir.join("tasks").join(format!("{ID}.json")))
        .unwrap()
        .unwrap();
    assert_eq!(rec.state.containers[0].restart_count, 1);
    // Again, but sooner than restartAttemptPeriod after the restart: not restarted, and the
    // essential-container rule applies.
    tokio::time::sleep(Duration::from_secs(59)).await;
    h.runtime.exit(&main, 1);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("restart", "main"), 1);
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
    let c = container(&stopped, "main");
    assert_eq!((c.exit_code, c.restart_count), (Some(1), 1));
    assert_forward_only(&h);
}

/// ECS's Health.statusSince: healthCheckedAt moves when the status changes, not when only the
/// check's output does (the output shown is the last check's).
#[tokio::test(start_paused = true)]
async fn health_checked_at_moves_with_the_status_only() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","healthCheck":{"command":["CMD","true"],"interval":300}}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let health = |status, output: &str| Event::Health {
        name: "main".into(),
        run: 1,
        status,
        output: output.into(),
    };
    use berth_proto::status::HealthStatus::{Healthy, Unhealthy};
    let output_is = |o: &'static str| {
        move |c: &TaskStateChange| container(c, "main").health_output.as_deref() == Some(o)
    };
    send(&h, health(Healthy, "one"));
    let first = reported(&h, output_is("one")).await;
    let since = container(&first, "main").health_checked_at;
    assert!(since.is_some());
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&h, health(Healthy, "two"));
    let second = reported(&h, output_is("two")).await;
    assert_eq!(container(&second, "main").health_checked_at, since);
    send(&h, health(Unhealthy, "three"));
    let third = reported(&h, output_is("three")).await;
    assert_ne!(container(&third, "main").health_checked_at, since);
}

/// As ECS (RestartTracker.RecordRestart before the start), a restart is counted, and the health
/// of the run before dropped, before the new process runs: reported while the restart is still
/// under way, so the restarted process reads its own RestartCount and Health from the metadata
/// endpoint.
#[tokio::test(start_paused = true)]
async fn a_restart_is_counted_before_the_new_process_runs() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","restartPolicy":{"enabled":true,"restartAttemptPeriod":60},
   "healthCheck":{"command":["CMD","true"],"interval":5}}]}"#;
    let h = harness(FakeRuntime::default());
    h.runtime.faults.inject(
        "restart",
        Some("-main"),
        Fault::Delay(Duration::from_secs(10)),
    );
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| health_of(c, "main").as_deref() == Some("HEALTHY")).await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.runtime.exit(&format!("{ID}-main"), 1);
    let counted = reported(&h, |c| container(c, "main").restart_count == 1).await;
    let asked = first_call(&h, "restart", "main").expect("restarted");
    assert!(
        tokio::time::Instant::now() < asked + Duration::from_secs(10),
        "counted only once the restart was done"
    );
    assert_eq!(health_of(&counted, "main").as_deref(), Some("UNKNOWN"));
    assert_eq!(container(&counted, "main").last_status, "RUNNING");
    // Once it runs again, its checks go on.
    reported(&h, |c| {
        container(c, "main").restart_count == 1
            && health_of(c, "main").as_deref() == Some("HEALTHY")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn restart_policy_waits_its_period_after_the_first_start_too_and_ignores_codes() {
    // Sooner than the period after the first start: not restarted.
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    h.runtime.exit(&format!("{ID}-main"), 1);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("restart", "main"), 0);
    assert_eq!(container(&stopped, "main").exit_code, Some(1));
    drop(h);
    // An ignored exit code: not restarted, however long it ran.
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    h.runtime.exit(&format!("{ID}-main"), 2);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("restart", "main"), 0);
    assert_eq!(container(&stopped, "main").exit_code, Some(2));
    // Not while the task stops: a stop's SIGTERM exit is no restart.
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    tokio::time::sleep(Duration::from_secs(600)).await;
    h.engine.apply_desired(&DesiredTasks {
        seq: 2,
        ..assignment("STOPPED", RESTARTING)
    });
    reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(h.runtime.count("restart", "main"), 0);
}

fn cleanup_harness(dir: std::path::PathBuf, runtime: FakeRuntime, wait: Duration) -> Harness {
    harness_in(
        runtime,
        FakeCgroups::default(),
        FakeNetwork::default(),
        Vec::new(),
        Timeouts::default(),
        Arc::new(crate::secrets::NoSecrets),
        dir,
        wait,
    )
}

#[tokio::test(start_paused = true)]
async fn a_stopped_tasks_containers_files_and_logs_go_after_the_cleanup_wait() {
    let dir = std::env::temp_dir().join(format!("berth-engine-{}", uuid::Uuid::new_v4().simple()));
    let h = cleanup_harness(
        dir.clone(),
        FakeRuntime::default(),
        Duration::from_secs(600),
    );
    h.engine.apply_desired(&assignment("RUNNING", TWO));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let logs = dir.join("logs").join(ID);
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::write(logs.join("main.log"), "hello\n").unwrap();
    let t0 = tokio::time::Instant::now();
    h.runtime.exit(&format!("{ID}-main"), 0);
    reported(&h, |c| c.last_status == "STOPPED").await;
    // At once: processes (and the cgroup, the network); kept: containers, files, logs.
    assert!(no_process_left(&h));
    assert_eq!(h.runtime.containers.lock().unwrap().len(), 2);
    assert_eq!(h.runtime.count("delete", ""), 0);
    assert_eq!(h.cgroups.removed.lock().unwrap().len(), 1);
    assert!(dir.join("tasks").join(ID).exists() && logs.exists());
    let entry = cleanup::path(&DataDir(dir.clone()), ID);
    assert!(entry.exists(), "the removal is persisted");
    // The controller forgets the task: its record goes, the removal does not.
    h.engine.apply_desired(&DesiredTasks {
        seq: 3,
        tasks: vec![],
        ..Default::default()
    });
    assert_eq!(h.engine.task_count(), 0);
    tokio::time::sleep_until(t0 + Duration::from_secs(599)).await;
    assert_eq!(h.runtime.containers.lock().unwrap().len(), 2);
    tokio::time::sleep_until(t0 + Duration::from_secs(601)).await;
    for _ in 0..50 {
        if !entry.exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.runtime.containers.lock().unwrap().is_empty());
    assert_eq!(h.runtime.count("delete", ""), 2);
    assert!(!dir.join("tasks").join(ID).exists(), "task files");
    assert!(!logs.exists(), "log files");
    assert!(!entry.exists());
}

#[tokio::test(start_paused = true)]
async fn an_agent_start_removes_overdue_cleanups_and_keeps_the_others_scheduled() {
    let dir = std::env::temp_dir().join(format!("berth-engine-{}", uuid::Uuid::new_v4().simple()));
    let data = DataDir(dir.clone());
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let other = "fedcba9876543210fedcba9876543210";
    let other_arn = format!("arn:aws:ecs:on-prem:000000000000:task/c/{other}");
    for (id, arn, due) in [
        (ID, ARN.to_string(), now_ms - 1000),
        (other, other_arn.clone(), now_ms + 3_600_000),
    ] {
        write_json(
            &cleanup::path(&data, id),
            &cleanup::Cleanup {
                task_arn: arn,
                task_id: id.into(),
                due_unix_ms: due,
                containers: vec![format!("{id}-main")],
            },
        )
        .unwrap();
        std::fs::create_dir_all(data.task_files(id)).unwrap();
    }
    let mut listed = labelled("main");
    listed.id = format!("{other}-main");
    listed.state = ContainerState::Missing;
    listed
        .labels
        .insert(crate::runtime::TASK_ARN_LABEL.into(), other_arn.clone());
    let rt = FakeRuntime {
        listed: vec![listed],
        ..Default::default()
    };
    rt.put(&format!("{ID}-main"), ContainerState::Missing);
    rt.put(&format!("{other}-main"), ContainerState::Missing);
    let h = cleanup_harness(dir.clone(), rt, cleanup::DEFAULT_WAIT);
    // The pending one is known: not reported as containers with no record.
    assert_eq!(h.engine.report_unrecorded().await.unwrap(), 0);
    for _ in 0..50 {
        if h.runtime.count("delete", "") > 0 && !cleanup::path(&data, ID).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        h.runtime.state_of(&format!("{ID}-main")).is_none(),
        "overdue: removed at start"
    );
    assert!(!data.task_files(ID).exists());
    assert!(!cleanup::path(&data, ID).exists());
    assert!(
        h.runtime.state_of(&format!("{other}-main")).is_some(),
        "not due yet"
    );
    assert!(data.task_files(other).exists() && cleanup::path(&data, other).exists());
    tokio::time::sleep(Duration::from_secs(3601)).await;
    for _ in 0..50 {
        if !cleanup::path(&data, other).exists() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(h.runtime.state_of(&format!("{other}-main")).is_none());
    assert!(!data.task_files(other).exists());
}

/// Issue 9 (volumes): a volume the agent cannot make stops the task with
/// ResourceInitializationError before any container is created.
#[tokio::test]
async fn a_refused_volume_stops_the_task_before_any_container_is_created() {
    let h = harness(FakeRuntime::default());
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"main","image":"i","mountPoints":[{"sourceVolume":"h","containerPath":"/h"}]}],
      "volumes":[{"name":"h","host":{"sourcePath":"/srv/data"}}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    // RUNNING too, so that a task that does start fails here at once.
    let stopped = reported(&h, |c| {
        matches!(c.last_status.as_str(), "RUNNING" | "STOPPED")
    })
    .await;
    let reason = "ResourceInitializationError: volume h: host path /srv/data is not under --allowed-host-paths (BERTH_ALLOWED_HOST_PATHS)";
    assert_eq!(stopped.stopped_reason.as_deref(), Some(reason));
    assert_eq!(stopped.stop_code.as_deref(), Some("TaskFailedToStart"));
    assert_eq!(container(&stopped, "main").reason.as_deref(), Some(reason));
    assert_eq!(h.runtime.count("create", ""), 0);
}

/// Issue 9 (volumes): a task volume is bind-mounted into each container that names it and
/// removed with the task's containers once the cleanup wait has passed.
#[tokio::test]
async fn task_volumes_are_bind_mounted_and_removed_with_the_task() {
    let dir = std::env::temp_dir().join(format!("berth-engine-{}", uuid::Uuid::new_v4().simple()));
    let h = cleanup_harness(dir, FakeRuntime::default(), Duration::from_secs(2));
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
      {"name":"main","image":"i","mountPoints":[{"sourceVolume":"v","containerPath":"/data"}]},
      {"name":"side","image":"i","essential":false,"volumesFrom":[{"sourceContainer":"main","readOnly":true}]}],
      "volumes":[{"name":"v"}]}"#;
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let dir = h.dir.join("volumes").join(ID).join("v");
    assert!(dir.is_dir());
    let source = dir.display().to_string();
    assert_eq!(mount_source(&h, "main", "/data"), Some(source.clone()));
    assert_eq!(mount_source(&h, "side", "/data"), Some(source));
    let side_ro = h.runtime.specs.lock().unwrap()[&cid("side")]
        .mounts()
        .as_ref()
        .unwrap()
        .iter()
        .any(|m| {
            m.destination() == std::path::Path::new("/data")
                && m.options()
                    .as_ref()
                    .is_some_and(|o| o.contains(&"ro".to_string()))
        });
    assert!(side_ro, "volumesFrom readOnly mounts read-only");
    h.runtime.exit(&cid("main"), 0);
    reported(&h, |c| c.last_status == "STOPPED").await;
    assert!(
        h.dir.join("volumes").join(ID).exists(),
        "kept for the cleanup wait"
    );
    let removed = async {
        while h.dir.join("volumes").join(ID).exists() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), removed)
        .await
        .expect("removed with the task after the cleanup wait");
}

/// The cgroup's OOM-kill counter covers every run of a container restarted in place: a run
/// is OOM-killed only when the counter grew during it. An OOM kill restarted past is not the
/// reason of a later, ordinary exit.
#[tokio::test(start_paused = true)]
async fn an_oom_kill_restarted_past_is_not_the_reason_of_a_later_exit() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let main = format!("{ID}-main");
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.cgroups.oom.lock().unwrap().push("main".into());
    h.runtime.exit(&main, 137);
    reported(&h, |c| container(c, "main").restart_count == 1).await;
    // Persisted with the record: a restarted agent compares with the same count.
    h.reporter.flush().await;
    let rec: TaskRecord = read_json(&h.dir.join("tasks").join(format!("{ID}.json")))
        .unwrap()
        .unwrap();
    assert_eq!(rec.oom_kills_before.get("main"), Some(&1));
    // Sooner than the period: not restarted; an ordinary exit, no OOM since the restart.
    tokio::time::sleep(Duration::from_secs(10)).await;
    h.runtime.exit(&main, 1);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let c = container(&stopped, "main");
    assert_eq!((c.exit_code, c.reason.as_deref()), (Some(1), None));
}

/// A restart (restartPolicy) that fails leaves the container stopped with ECS's
/// CannotStartContainerError and the runtime's message, not a bare exit code.
#[tokio::test(start_paused = true)]
async fn a_failed_restart_is_the_containers_reason() {
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", RESTARTING));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.runtime.faults.inject(
        "restart",
        Some("-main"),
        Fault::Fail(1, tonic::Code::Unknown),
    );
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.runtime.exit(&format!("{ID}-main"), 1);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    let c = container(&stopped, "main");
    assert_eq!(c.exit_code, Some(1));
    assert!(
        c.reason
            .as_deref()
            .is_some_and(|r| r.starts_with("CannotStartContainerError: ")),
        "{:?}",
        c.reason
    );
    assert_eq!(
        stopped.stop_code.as_deref(),
        Some("EssentialContainerExited")
    );
}

/// A result of a health checker that is no longer the container's (one sent while the old
/// process died, taken off the channel after the restart) is dropped.
#[tokio::test(start_paused = true)]
async fn a_replaced_checkers_result_is_dropped() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","containerDefinitions":[
  {"name":"main","image":"i","healthCheck":{"command":["CMD","true"],"interval":300}}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    let health = |run, status, output: &str| Event::Health {
        name: "main".into(),
        run,
        status,
        output: output.into(),
    };
    use berth_proto::status::HealthStatus::{Healthy, Unhealthy};
    let output_is = |o: &'static str| {
        move |c: &TaskStateChange| container(c, "main").health_output.as_deref() == Some(o)
    };
    send(&h, health(1, Unhealthy, "current"));
    let current = reported(&h, output_is("current")).await;
    let since = container(&current, "main").health_checked_at;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // Had the stale HEALTHY been applied, the status would have changed twice by "after".
    send(&h, health(7, Healthy, "stale"));
    tokio::time::sleep(Duration::from_secs(5)).await;
    send(&h, health(1, Unhealthy, "after"));
    let after = reported(&h, output_is("after")).await;
    assert_eq!(health_of(&after, "main").as_deref(), Some("UNHEALTHY"));
    assert_eq!(
        container(&after, "main").health_checked_at,
        since,
        "a stale result was applied"
    );
}

/// pidMode task: a container restarted in place rejoins the namespaces it joined at its start
/// only while the container holding them still runs; once that one exited (its PID namespace
/// is gone, its PID may be reused), the restart is refused with ECS's
/// CannotStartContainerError instead of joining whatever process has that PID now.
#[tokio::test(start_paused = true)]
async fn a_restart_rejoins_the_task_namespaces_only_while_their_holder_runs() {
    let td = r#"{"family":"f","revision":1,"networkMode":"none","pidMode":"task","containerDefinitions":[
  {"name":"holder","image":"i","essential":false},
  {"name":"joiner","image":"i","restartPolicy":{"enabled":true,"restartAttemptPeriod":60}}]}"#;
    let h = harness(FakeRuntime::default());
    h.engine.apply_desired(&assignment("RUNNING", td));
    reported(&h, |c| c.last_status == "RUNNING").await;
    h.reporter.flush().await;
    let rec: TaskRecord = read_json(&h.dir.join("tasks").join(format!("{ID}.json")))
        .unwrap()
        .unwrap();
    assert!(
        rec.namespace_holders.contains_key("joiner"),
        "{:?}",
        rec.namespace_holders
    );
    assert!(!rec.namespace_holders.contains_key("holder"));
    // The holder runs: the restart goes on.
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.runtime.exit(&format!("{ID}-joiner"), 1);
    reported(&h, |c| container(c, "joiner").restart_count == 1).await;
    assert_eq!(h.runtime.count("restart", "joiner"), 1);
    // The holder exits; then the joiner (the kernel ends a PID namespace's processes).
    h.runtime.exit(&format!("{ID}-holder"), 0);
    reported(&h, |c| container(c, "holder").last_status == "STOPPED").await;
    tokio::time::sleep(Duration::from_secs(61)).await;
    h.runtime.exit(&format!("{ID}-joiner"), 137);
    let stopped = reported(&h, |c| c.last_status == "STOPPED").await;
    assert_eq!(
        h.runtime.count("restart", "joiner"),
        1,
        "not restarted again"
    );
    let reason = container(&stopped, "joiner")
        .reason
        .clone()
        .unwrap_or_default();
    assert!(
        reason.starts_with("CannotStartContainerError: ") && reason.contains("namespaces"),
        "{reason}"
    );
}
