//! Container ordering as ECS defines it (dependsOn, and links, which imply START): when a
//! container may start, when one of its dependencies can no longer be met (the task then stops
//! with "TaskDependencyError: …"), and the reverse order of the stop.
//!
//! Facts from ECS's agent (agent/engine/dependencygraph): START is met once the dependency's
//! process started; COMPLETE once it exited (any code); SUCCESS once it exited 0; HEALTHY once
//! its health is HEALTHY. A dependency that stopped without having started can meet nothing, a
//! SUCCESS dependency that exited non-zero never will. The `startTimeout` that bounds the wait is
//! the *dependency's*, counted from its start, and applies to COMPLETE, SUCCESS and HEALTHY
//! only; without one the wait is unbounded. At the stop, a container gets its stop signal only
//! once every container depending on it has stopped.

use berth_proto::status::ContainerStatus;
use berth_proto::v1::{ContainerDefinition, ContainerStateChange};
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// One container's dependency on another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// The container depended on.
    pub container: String,
    /// START, COMPLETE, SUCCESS or HEALTHY (as written).
    pub condition: String,
}

/// The containers a container's `links` name (`name` or `name:alias`): they start first, as a
/// START dependency would have them.
pub fn link_targets(d: &ContainerDefinition) -> Vec<String> {
    d.links
        .iter()
        .map(|l| crate::network::files::parse_link(l).0.to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

/// A container's dependencies: its `dependsOn`, then its links as START dependencies (a link to
/// a container already named in `dependsOn` adds nothing).
pub fn dependencies(d: &ContainerDefinition) -> Vec<Dependency> {
    let mut out: Vec<Dependency> = d
        .depends_on
        .iter()
        .map(|x| Dependency {
            container: x.container_name.clone(),
            condition: x.condition.to_ascii_uppercase(),
        })
        .collect();
    for name in link_targets(d) {
        if !out.iter().any(|x| x.container == name) {
            out.push(Dependency {
                container: name,
                condition: "START".into(),
            });
        }
    }
    out
}

/// Whether `dependent` depends on `on` (dependsOn or links).
pub fn depends_on(dependent: &ContainerDefinition, on: &str) -> bool {
    dependencies(dependent).iter().any(|x| x.container == on)
}

/// Where a container's dependencies stand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// All met: it may start.
    Met,
    /// Some not met yet; re-check at the earliest timeout, if any, or at the next event.
    Wait(Option<Instant>),
    /// One can no longer be met: why, in ECS's words (without the "TaskDependencyError: ").
    Never(String),
}

/// What the verdict needs to know of the task's containers.
pub struct View<'a> {
    /// The task's container definitions.
    pub defs: &'a [ContainerDefinition],
    /// Their states.
    pub states: &'a [ContainerStateChange],
    /// When each container's process last started (this agent's clock).
    pub started: &'a HashMap<String, Instant>,
    /// Now.
    pub now: Instant,
}

fn status(c: &ContainerStateChange) -> ContainerStatus {
    ContainerStatus::parse(&c.last_status).unwrap_or(ContainerStatus::Pending)
}

/// Whether `target` may start now, must wait, or never can.
pub fn verdict(target: &ContainerDefinition, v: &View<'_>) -> Verdict {
    let mut wait = false;
    let mut deadline: Option<Instant> = None;
    let t = &target.name;
    for dep in dependencies(target) {
        let name = &dep.container;
        let cond = dep.condition.as_str();
        let which = format!("[{name}: {cond}] for target [{t}]");
        let (Some(def), Some(state)) = (
            v.defs.iter().find(|d| &d.name == name),
            v.states.iter().find(|c| &c.name == name),
        ) else {
            return Verdict::Never(format!(
                "dependency graph: container ordering dependency {which} does not exist"
            ));
        };
        let st = status(state);
        let ran = state.started_at.is_some() || state.exit_code.is_some();
        if st == ContainerStatus::Stopped && !ran {
            return Verdict::Never(format!(
                "dependency graph: failed to resolve container ordering dependency {which} because dependency will never start"
            ));
        }
        let met = match cond {
            "START" => st >= ContainerStatus::Running,
            "COMPLETE" => match (st, state.exit_code) {
                (ContainerStatus::Stopped, Some(_)) => true,
                (ContainerStatus::Stopped, None) => {
                    return Verdict::Never(format!(
                        "dependency graph: failed to resolve container ordering dependency {which} as dependency stopped without an exit code"
                    ))
                }
                _ => false,
            },
            "SUCCESS" => match (st, state.exit_code) {
                (ContainerStatus::Stopped, Some(0)) => true,
                (ContainerStatus::Stopped, code) => {
                    let code = code.map_or("none".to_string(), |c| c.to_string());
                    return Verdict::Never(format!(
                        "dependency graph: failed to resolve container ordering dependency {which} as dependency did not exit successfully (exit code {code})"
                    ));
                }
                _ => false,
            },
            "HEALTHY" => {
                if def.health_check.is_none() {
                    return Verdict::Never(format!(
                        "dependency graph: failed to resolve container ordering dependency {which} as dependency has no healthCheck"
                    ));
                }
                if st == ContainerStatus::Stopped {
                    return Verdict::Never(format!(
                        "dependency graph: failed to resolve container ordering dependency {which} as dependency stopped before it was healthy"
                    ));
                }
                st == ContainerStatus::Running && state.health_status.as_deref() == Some("HEALTHY")
            }
            other => {
                return Verdict::Never(format!(
                    "dependency graph: container ordering dependency [{name}] for target [{t}] has an unknown condition {other:?}"
                ))
            }
        };
        if met {
            continue;
        }
        wait = true;
        // ECS: the dependency's own startTimeout, from its start, for all but START.
        let timeout = def
            .start_timeout
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64));
        if let (Some(timeout), Some(since), true) = (timeout, v.started.get(name), cond != "START")
        {
            let due = *since + timeout;
            if v.now >= due {
                return Verdict::Never(format!(
                    "dependency graph: container ordering dependency {which} has timed out (startTimeout {}s)",
                    timeout.as_secs()
                ));
            }
            deadline = Some(deadline.map_or(due, |d: Instant| d.min(due)));
        }
    }
    if wait {
        Verdict::Wait(deadline)
    } else {
        Verdict::Met
    }
}

/// Whether `name` may get its stop signal: every container depending on it has stopped.
pub fn may_stop(name: &str, defs: &[ContainerDefinition], states: &[ContainerStateChange]) -> bool {
    defs.iter().filter(|d| depends_on(d, name)).all(|d| {
        states
            .iter()
            .find(|c| c.name == d.name)
            .is_none_or(|c| status(c) == ContainerStatus::Stopped)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn def(json: &str) -> ContainerDefinition {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn links_are_start_dependencies() {
        let d = def(
            r#"{"name":"app","image":"i","links":["db:database","cache"],
                "dependsOn":[{"containerName":"cache","condition":"HEALTHY"}]}"#,
        );
        assert_eq!(link_targets(&d), vec!["db", "cache"]);
        let deps = dependencies(&d);
        assert_eq!(
            deps,
            vec![
                Dependency {
                    container: "cache".into(),
                    condition: "HEALTHY".into()
                },
                Dependency {
                    container: "db".into(),
                    condition: "START".into()
                },
            ]
        );
    }
}
