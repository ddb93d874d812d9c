//! Task secrets: the values of a task's `secrets` and its containers' `repositoryCredentials`
//! (issue 11), asked of the controller (the link's GetTaskSecrets) each time the agent creates
//! the task's containers. They live only in memory, long enough to build the containers'
//! environment and pull their images: never in the data dir (a task record keeps the
//! references only), never in a log line (no `Debug` prints a value or a password). After a
//! restart the agent asks again.

use async_trait::async_trait;
use berth_proto::v1::GetTaskSecretsRequest;
use std::time::Duration;
use tokio::sync::watch;
use tonic::transport::Channel;

/// One secret's value for one container's environment.
#[derive(Clone, PartialEq, Eq)]
pub struct TaskSecret {
    /// The container it is for.
    pub container: String,
    /// The environment variable (the container definition's `secrets[].name`).
    pub name: String,
    /// The value: never logged, never persisted.
    pub value: String,
}

impl std::fmt::Debug for TaskSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TaskSecret({}/{}=<redacted>)", self.container, self.name)
    }
}

/// A container's registry credentials (its `repositoryCredentials`, resolved by the
/// controller): for its image pull only.
#[derive(Clone, PartialEq, Eq)]
pub struct RegistryCredential {
    /// The container they are for.
    pub container: String,
    /// The registry username.
    pub username: String,
    /// The registry password: never logged, never persisted.
    pub password: String,
}

impl std::fmt::Debug for RegistryCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RegistryCredential({}: {}:<redacted>)",
            self.container, self.username
        )
    }
}

/// What GetTaskSecrets gives for one task: the environment secrets and the registry
/// credentials of its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskSecrets {
    /// The values of the containers' `secrets`.
    pub env: Vec<TaskSecret>,
    /// The containers' `repositoryCredentials`, resolved.
    pub registry: Vec<RegistryCredential>,
}

impl TaskSecrets {
    /// The (username, password) the image of `container` is pulled with, if it has
    /// `repositoryCredentials`.
    pub fn registry_for(&self, container: &str) -> Option<(&str, &str)> {
        self.registry
            .iter()
            .find(|r| r.container == container)
            .map(|r| (r.username.as_str(), r.password.as_str()))
    }
}

impl From<berth_proto::v1::GetTaskSecretsResponse> for TaskSecrets {
    fn from(r: berth_proto::v1::GetTaskSecretsResponse) -> Self {
        TaskSecrets {
            env: r
                .secrets
                .into_iter()
                .map(|s| TaskSecret {
                    container: s.container_name,
                    name: s.name,
                    value: s.value,
                })
                .collect(),
            registry: r
                .registry_credentials
                .into_iter()
                .map(|c| RegistryCredential {
                    container: c.container_name,
                    username: c.username,
                    password: c.password,
                })
                .collect(),
        }
    }
}

/// Why a task's secrets could not be had. The message never holds a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The controller refused or could not resolve them (its message names the secret).
    #[error("{0}")]
    Refused(String),
    /// No answer from the controller in time.
    #[error("the controller did not answer within {} s", .0.as_secs())]
    Unreachable(Duration),
}

/// Where an engine gets a task's secrets from.
#[async_trait]
pub trait SecretSource: std::fmt::Debug + Send + Sync + 'static {
    /// The values of every secret and the registry credentials of the task's containers.
    async fn task_secrets(&self, task_arn: &str) -> Result<TaskSecrets, SecretError>;
}

/// The secrets of the link: GetTaskSecrets on the session's current channel. The session sets
/// the channel when it connects; a call waits for one (and retries a transport failure on the
/// next) until `timeout`.
#[derive(Debug)]
pub struct LinkSecrets {
    channel: watch::Sender<Option<Channel>>,
    timeout: Duration,
}

impl LinkSecrets {
    /// A source that gives up after `timeout` without an answer.
    pub fn new(timeout: Duration) -> Self {
        Self {
            channel: watch::Sender::new(None),
            timeout,
        }
    }

    /// The link is up on `channel`.
    pub fn connected(&self, channel: Channel) {
        self.channel.send_replace(Some(channel));
    }

    /// The link is down.
    pub fn disconnected(&self) {
        self.channel.send_replace(None);
    }
}

#[async_trait]
impl SecretSource for LinkSecrets {
    async fn task_secrets(&self, task_arn: &str) -> Result<TaskSecrets, SecretError> {
        let mut rx = self.channel.subscribe();
        let ask = async {
            loop {
                let channel = match rx.wait_for(Option::is_some).await {
                    Ok(c) => c.clone(),
                    // The sender lives as long as `self`.
                    Err(_) => return Err(SecretError::Unreachable(self.timeout)),
                };
                rx.mark_unchanged();
                let Some(channel) = channel else { continue };
                let mut client = berth_proto::link::client(channel);
                match client
                    .get_task_secrets(GetTaskSecretsRequest {
                        task_arn: task_arn.to_string(),
                    })
                    .await
                {
                    Ok(r) => return Ok(r.into_inner().into()),
                    Err(s) if s.code() == tonic::Code::Unavailable => {
                        // The link broke: wait for the session to reconnect.
                        if rx.changed().await.is_err() {
                            return Err(SecretError::Unreachable(self.timeout));
                        }
                    }
                    Err(s) => return Err(SecretError::Refused(s.message().to_string())),
                }
            }
        };
        tokio::time::timeout(self.timeout, ask)
            .await
            .unwrap_or(Err(SecretError::Unreachable(self.timeout)))
    }
}

/// A source for engines that never run tasks with secrets (tests of other parts).
#[derive(Debug, Default)]
pub struct NoSecrets;

#[async_trait]
impl SecretSource for NoSecrets {
    async fn task_secrets(&self, _: &str) -> Result<TaskSecrets, SecretError> {
        Err(SecretError::Refused(
            "this agent has no link to ask for secrets".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_a_link_the_ask_gives_up_after_its_timeout() {
        let s = LinkSecrets::new(Duration::from_secs(60));
        let started = tokio::time::Instant::now();
        let e = s.task_secrets("arn:t").await.unwrap_err();
        assert!(matches!(e, SecretError::Unreachable(_)), "{e}");
        assert_eq!(started.elapsed(), Duration::from_secs(60));
        assert!(e.to_string().contains("60 s"), "{e}");
    }

    #[test]
    fn a_secret_s_debug_form_hides_its_value() {
        let s = TaskSecret {
            container: "web".into(),
            name: "DB".into(),
            value: "hunter2".into(),
        };
        let shown = format!("{s:?} {:?}", vec![s.clone()]);
        assert!(
            !shown.contains("hunter2") && shown.contains("web/DB"),
            "{shown}"
        );
    }

    #[test]
    fn registry_credentials_are_found_by_container_and_their_password_is_hidden() {
        let got: TaskSecrets = berth_proto::v1::GetTaskSecretsResponse {
            secrets: vec![berth_proto::v1::SecretValue {
                container_name: "web".into(),
                name: "DB".into(),
                value: "db-value".into(),
            }],
            registry_credentials: vec![berth_proto::v1::RegistryCredentials {
                container_name: "web".into(),
                username: "robot".into(),
                password: "hunter2".into(),
            }],
        }
        .into();
        assert_eq!(got.registry_for("web"), Some(("robot", "hunter2")));
        assert_eq!(got.registry_for("side"), None);
        assert_eq!(got.env.len(), 1);
        let shown = format!("{got:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("db-value") && shown.contains("robot"),
            "{shown}"
        );
    }
}
