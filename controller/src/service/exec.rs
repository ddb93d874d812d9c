//! ExecuteCommand's service half: which task, container and agent a session runs in, ECS's
//! refusals, the command line split into arguments, and the ExecuteCommandAgent each container
//! of an exec-enabled task shows in DescribeTasks. Streaming and routing are the adapters'
//! (`api/exec.rs`, `fleet::exec`).

use super::{cluster_name, Controller};
use crate::error::EcsError;
use berth_proto::arn;
use berth_proto::status::{ContainerStatus, TaskStatus};
use berth_proto::v1::{ManagedAgent, Task};

/// ECS's refusal of a task run without enableExecuteCommand (or whose agent is not running),
/// word for word (curly apostrophe included).
pub const NOT_ENABLED: &str = "The execute command failed because execute command was not enabled when the task was run or the execute command agent isn\u{2019}t running. Wait and try again or run a new task with execute command enabled and try again.";

/// The name ECS gives the managed agent that serves ExecuteCommand.
pub const EXECUTE_COMMAND_AGENT: &str = "ExecuteCommandAgent";

/// Where a session runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecTarget {
    /// The task's cluster.
    pub cluster_arn: String,
    /// The task.
    pub task_arn: String,
    /// The container's name.
    pub container_name: String,
    /// The container's ARN.
    pub container_arn: String,
    /// The container instance (id) whose agent runs the task.
    pub instance_id: String,
}

impl Controller {
    /// The task and container ExecuteCommand would run in, or ECS's refusal: unknown cluster
    /// or task, a task run without enableExecuteCommand, a task or container not RUNNING, an
    /// unknown container, a container left out of a task of several.
    pub async fn exec_target(
        &self,
        cluster: &str,
        task: &str,
        container: Option<&str>,
    ) -> Result<ExecTarget, EcsError> {
        let name = cluster_name(Some(cluster).filter(|c| !c.is_empty()))?;
        if task.is_empty() {
            return Err(EcsError::invalid("task: is required"));
        }
        let st = self.state.lock().await;
        let cluster_arn = st.active_cluster(&name)?.cluster_arn.clone();
        let t = st
            .cluster_task(&cluster_arn, task)
            .ok_or_else(|| EcsError::invalid("The referenced task was not found."))?;
        target(t, container)
    }
}

/// The checks of [`Controller::exec_target`] on a found task.
fn target(t: &Task, container: Option<&str>) -> Result<ExecTarget, EcsError> {
    if t.enable_execute_command != Some(true)
        || TaskStatus::parse(&t.last_status) != Ok(TaskStatus::Running)
        || TaskStatus::parse(&t.desired_status) != Ok(TaskStatus::Running)
    {
        return Err(EcsError::invalid(NOT_ENABLED));
    }
    let c = match container.filter(|c| !c.is_empty()) {
        Some(name) => t
            .containers
            .iter()
            .find(|c| c.name == name || c.container_arn == name)
            .ok_or_else(|| {
                EcsError::invalid(format!(
                    "The container {name} does not exist in the task {}.",
                    t.task_arn
                ))
            })?,
        None => match t.containers.as_slice() {
            [only] => only,
            _ => {
                return Err(EcsError::invalid(
                    "container: the task has more than one container; name the one to run the command in",
                ))
            }
        },
    };
    if ContainerStatus::parse(&c.last_status) != Ok(ContainerStatus::Running) {
        return Err(EcsError::invalid(NOT_ENABLED));
    }
    let instance_id = t
        .container_instance_arn
        .as_deref()
        .and_then(|a| arn::short_id("container-instance", a))
        .ok_or_else(|| EcsError::invalid(NOT_ENABLED))?;
    Ok(ExecTarget {
        cluster_arn: t.cluster_arn.clone(),
        task_arn: t.task_arn.clone(),
        container_name: c.name.clone(),
        container_arn: c.container_arn.clone(),
        instance_id: instance_id.to_string(),
    })
}

/// Sets each container's managedAgents as ECS shows them for a task run with
/// enableExecuteCommand: the ExecuteCommandAgent, RUNNING while its container runs (Berth's
/// agent serves exec itself; there is no agent process in the container), STOPPED after.
pub(crate) fn set_managed_agents(task: &mut Task) {
    if task.enable_execute_command != Some(true) {
        return;
    }
    let started = task.started_at;
    for c in &mut task.containers {
        let status = match ContainerStatus::parse(&c.last_status) {
            Ok(ContainerStatus::Running) => "RUNNING",
            Ok(ContainerStatus::Stopped) => "STOPPED",
            _ => "PENDING",
        };
        let agent = ManagedAgent {
            last_started_at: started.filter(|_| status != "PENDING"),
            name: Some(EXECUTE_COMMAND_AGENT.into()),
            reason: None,
            last_status: Some(status.into()),
        };
        c.managed_agents
            .retain(|a| a.name.as_deref() != Some(EXECUTE_COMMAND_AGENT));
        c.managed_agents.push(agent);
    }
}

/// Why a command line cannot be split.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Nothing to run.
    #[error("command: is empty")]
    Empty,
    /// A quote is not closed.
    #[error("command: unterminated {0} quote")]
    Unterminated(&'static str),
}

/// Splits `command` into arguments as a POSIX shell splits words (single and double quotes,
/// backslash escapes); nothing else of a shell applies: `--command "/bin/sh -c 'echo $HOME'"`
/// runs a shell that expands it.
pub fn split_command(command: &str) -> Result<Vec<String>, CommandError> {
    let mut args = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = command.chars();
    while let Some(ch) = chars.next() {
        match ch {
            c if c.is_whitespace() => {
                if let Some(w) = word.take() {
                    args.push(w);
                }
            }
            '\'' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err(CommandError::Unterminated("single")),
                    }
                }
            }
            '"' => {
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => w.push(c),
                            Some(c) => {
                                w.push('\\');
                                w.push(c);
                            }
                            None => return Err(CommandError::Unterminated("double")),
                        },
                        Some(c) => w.push(c),
                        None => return Err(CommandError::Unterminated("double")),
                    }
                }
            }
            '\\' => {
                let w = word.get_or_insert_with(String::new);
                if let Some(c) = chars.next() {
                    w.push(c);
                }
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        args.push(w);
    }
    if args.is_empty() {
        return Err(CommandError::Empty);
    }
    Ok(args)
}

/// A new session id as ECS names them: `ecs-execute-command-` and 17 hex digits.
pub fn new_session_id() -> String {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    format!("ecs-execute-command-{}", &hex[..17])
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::v1::Container;

    fn task(enabled: Option<bool>, status: &str, containers: &[(&str, &str)]) -> Task {
        Task {
            task_arn: "arn:aws:ecs:on-prem:000000000000:task/default/t1".into(),
            cluster_arn: "arn:aws:ecs:on-prem:000000000000:cluster/default".into(),
            container_instance_arn: Some(
                "arn:aws:ecs:on-prem:000000000000:container-instance/default/i1".into(),
            ),
            last_status: status.into(),
            desired_status: "RUNNING".into(),
            enable_execute_command: enabled,
            containers: containers
                .iter()
                .map(|(n, s)| Container {
                    name: n.to_string(),
                    container_arn: format!("arn:c/{n}"),
                    last_status: s.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_task_without_enable_execute_command_is_refused_with_ecs_words() {
        for enabled in [None, Some(false)] {
            let e = target(&task(enabled, "RUNNING", &[("a", "RUNNING")]), Some("a")).unwrap_err();
            assert_eq!(e.exception_name(), "InvalidParameterException");
            assert_eq!(e.to_string(), NOT_ENABLED);
        }
    }

    #[test]
    fn only_a_running_task_and_container_take_a_session() {
        let t = target(&task(Some(true), "RUNNING", &[("a", "RUNNING")]), None).unwrap();
        assert_eq!(t.container_name, "a");
        assert_eq!(t.instance_id, "i1");
        for (ts, cs) in [
            ("PENDING", "PENDING"),
            ("STOPPED", "STOPPED"),
            ("RUNNING", "STOPPED"),
        ] {
            let e = target(&task(Some(true), ts, &[("a", cs)]), Some("a")).unwrap_err();
            assert_eq!(e.to_string(), NOT_ENABLED, "{ts}/{cs}");
        }
        let mut stopping = task(Some(true), "RUNNING", &[("a", "RUNNING")]);
        stopping.desired_status = "STOPPED".into();
        assert!(target(&stopping, Some("a")).is_err());
    }

    #[test]
    fn the_container_is_named_unless_the_task_has_one() {
        let t = task(Some(true), "RUNNING", &[("a", "RUNNING"), ("b", "RUNNING")]);
        assert_eq!(target(&t, Some("b")).unwrap().container_name, "b");
        let e = target(&t, None).unwrap_err();
        assert!(e.to_string().contains("more than one container"), "{e}");
        let e = target(&t, Some("nope")).unwrap_err();
        assert_eq!(e.exception_name(), "InvalidParameterException");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[test]
    fn managed_agents_show_for_exec_enabled_tasks_only() {
        let mut t = task(Some(true), "RUNNING", &[("a", "RUNNING")]);
        set_managed_agents(&mut t);
        set_managed_agents(&mut t);
        assert_eq!(t.containers[0].managed_agents.len(), 1);
        let a = &t.containers[0].managed_agents[0];
        assert_eq!(a.name.as_deref(), Some("ExecuteCommandAgent"));
        assert_eq!(a.last_status.as_deref(), Some("RUNNING"));
        let mut t = task(None, "RUNNING", &[("a", "RUNNING")]);
        set_managed_agents(&mut t);
        assert!(t.containers[0].managed_agents.is_empty());
    }

    #[test]
    fn commands_split_as_a_shell_splits_words() {
        let s = |c: &str| split_command(c).unwrap();
        assert_eq!(s("/bin/sh"), ["/bin/sh"]);
        assert_eq!(s("  id  -u "), ["id", "-u"]);
        assert_eq!(
            s(r#"/bin/sh -c 'echo $HOME; exit 3'"#),
            ["/bin/sh", "-c", "echo $HOME; exit 3"]
        );
        assert_eq!(s(r#"echo "a \"b\" c" d\ e"#), ["echo", r#"a "b" c"#, "d e"]);
        assert_eq!(s("echo ''"), ["echo", ""]);
        assert_eq!(split_command("  "), Err(CommandError::Empty));
        assert_eq!(
            split_command("echo 'x"),
            Err(CommandError::Unterminated("single"))
        );
    }

    #[test]
    fn session_ids_look_like_ecs_ones() {
        let id = new_session_id();
        let hex = id.strip_prefix("ecs-execute-command-").unwrap();
        assert_eq!(hex.len(), 17);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
