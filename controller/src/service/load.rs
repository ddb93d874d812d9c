//! Issue 12: what each instance's tasks hold, kept as tasks change.
//!
//! Placement needs, for every candidate instance, the CPU and memory its tasks reserve, the host
//! ports they hold, how many want to run and how many tasks of each group it has. Walking every
//! task of every instance for that once per placement batch was 27 % of the placement
//! benchmark's CPU at 40,000 tasks. Instead [`State::put_task`] adds what a task holds to its
//! instance's [`InstanceLoad`] when the task enters the index of tasks not yet STOPPED, and
//! `unindex_task` takes away exactly what was added (kept per task in [`Held`], so a task
//! definition or status that changes later cannot make the two differ).
//!
//! `load_tests::loads_equal_a_recount_after_every_change` replays random task changes and
//! compares every instance's load with a recount from scratch after each one.

use super::instances::task_reservation;
use super::networking::{static_host_ports, HostPort};
use super::State;
use berth_proto::status::TaskStatus;
use berth_proto::v1::Task;
use std::collections::BTreeMap;

/// What the tasks on one instance that are not yet STOPPED hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct InstanceLoad {
    /// How many tasks (the index of tasks not yet STOPPED).
    pub(crate) tasks: i64,
    /// CPU units they reserve.
    pub(crate) cpu: i64,
    /// MiB they reserve.
    pub(crate) memory: i64,
    /// Those whose desired status is not STOPPED (distinctInstance looks at these).
    pub(crate) wanted: i64,
    /// Those whose last status is RUNNING.
    pub(crate) running: i64,
    /// Tasks per group.
    pub(crate) groups: BTreeMap<String, i64>,
    /// Host ports held, with how many tasks hold each (a port two tasks report is freed when
    /// both are gone).
    pub(crate) ports: BTreeMap<HostPort, i64>,
}

/// What one task adds to its instance's load.
#[derive(Debug, Clone)]
pub(crate) struct Held {
    instance: String,
    cpu: i64,
    memory: i64,
    wanted: bool,
    running: bool,
    group: Option<String>,
    ports: Vec<HostPort>,
}

impl State {
    /// The host ports a task holds: its registered definition's static ones (a task's overrides
    /// never change port mappings or the network mode) and those its agent reported.
    pub(crate) fn task_ports(&self, t: &Task) -> Vec<HostPort> {
        let mut out = Vec::new();
        if let Some(td) = self
            .find_task_definition(&t.task_definition_arn)
            .ok()
            .and_then(|r| r.task_definition.as_ref())
        {
            out.extend(static_host_ports(
                &td.network_mode,
                &td.container_definitions,
            ));
        }
        for b in t.containers.iter().flat_map(|c| c.network_bindings.iter()) {
            if let Some(p) = b.host_port.filter(|p| *p > 0) {
                out.push((b.protocol.clone().unwrap_or_else(|| "tcp".into()), p));
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// What `t` holds on its instance (none without an instance).
    fn held(&self, t: &Task) -> Option<Held> {
        let instance = t.container_instance_arn.clone()?;
        let (cpu, memory) = task_reservation(t);
        Some(Held {
            instance,
            cpu,
            memory,
            wanted: t.desired_status != TaskStatus::Stopped.as_str(),
            running: TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Running),
            group: t.group.clone(),
            ports: self.task_ports(t),
        })
    }

    /// Adds what task `id` holds to its instance's load (called by `put_task` when the task
    /// enters the index of tasks not yet STOPPED).
    pub(crate) fn hold(&mut self, id: &str, t: &Task) {
        self.release(id);
        let Some(h) = self.held(t) else { return };
        let l = self.loads.entry(h.instance.clone()).or_default();
        l.tasks += 1;
        l.cpu += h.cpu;
        l.memory += h.memory;
        l.wanted += i64::from(h.wanted);
        l.running += i64::from(h.running);
        if let Some(g) = &h.group {
            *l.groups.entry(g.clone()).or_default() += 1;
        }
        for p in &h.ports {
            *l.ports.entry(p.clone()).or_default() += 1;
        }
        self.held.insert(id.to_string(), h);
    }

    /// Takes away what task `id` added, if anything.
    pub(crate) fn release(&mut self, id: &str) {
        let Some(h) = self.held.remove(id) else {
            return;
        };
        let Some(l) = self.loads.get_mut(&h.instance) else {
            return;
        };
        l.tasks -= 1;
        l.cpu -= h.cpu;
        l.memory -= h.memory;
        l.wanted -= i64::from(h.wanted);
        l.running -= i64::from(h.running);
        if let Some(g) = &h.group {
            if let Some(n) = l.groups.get_mut(g) {
                *n -= 1;
                if *n <= 0 {
                    l.groups.remove(g);
                }
            }
        }
        for p in &h.ports {
            if let Some(n) = l.ports.get_mut(p) {
                *n -= 1;
                if *n <= 0 {
                    l.ports.remove(p);
                }
            }
        }
        if l.tasks <= 0 {
            self.loads.remove(&h.instance);
        }
    }

    /// The load of the instance `arn` (empty when no task is on it).
    #[cfg(test)]
    pub(crate) fn load_of(&self, arn: &str) -> InstanceLoad {
        self.loads.get(arn).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
#[path = "load_tests.rs"]
mod load_tests;
