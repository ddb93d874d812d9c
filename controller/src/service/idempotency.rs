//! RunTask's clientToken: a retried RunTask with the same token and the same request answers the
//! first call's tasks and starts nothing; the same token with another request is ECS's
//! ConflictException. The answer is stored (`runtoken/TOKEN`) in the transaction that stores
//! the tasks, so it survives a controller restart, and it leaves the store only once every task
//! it started has (see `retention.rs`).

use super::{now, put, State};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::v1::*;

pub(crate) const RUN_TOKEN_PREFIX: &str = "runtoken/";

/// ECS's rule: up to 64 characters, each in the range 33–126.
fn validate_token(token: &str) -> Result<(), EcsError> {
    if token.is_empty() || token.len() > 64 || !token.bytes().all(|b| (33..=126).contains(&b)) {
        return Err(EcsError::invalid(
            "clientToken: must be 1 to 64 characters in the range 33-126 (printable ASCII, no spaces)",
        ));
    }
    Ok(())
}

impl State {
    /// The answer to a RunTask whose clientToken was seen before: the first call's tasks as
    /// they are now, and its failures. `None` when the request has no token or a new one.
    pub(crate) fn replay_run_task(
        &self,
        req: &RunTaskRequest,
    ) -> Result<Option<RunTaskResponse>, EcsError> {
        let Some(token) = req.client_token.as_deref() else {
            return Ok(None);
        };
        validate_token(token)?;
        let Some(first) = self.run_tokens.get(token) else {
            return Ok(None);
        };
        if first.request.as_ref() != Some(req) {
            return Err(EcsError::Conflict {
                token: token.to_string(),
                task_arns: first.task_arns.clone(),
            });
        }
        let tasks = first
            .task_arns
            .iter()
            .filter_map(|arn| super::tasks::task_id(arn).and_then(|id| self.tasks.get(id)))
            .cloned()
            .collect();
        Ok(Some(RunTaskResponse {
            tasks,
            failures: first.failures.clone(),
        }))
    }

    /// The record of a RunTask with a clientToken, and its store write, to commit with the
    /// tasks; `None` without a token.
    pub(crate) fn run_token_record(
        req: &RunTaskRequest,
        out: &RunTaskResponse,
        placed: impl IntoIterator<Item = String>,
    ) -> Option<(Write, RunTaskTokenRecord)> {
        let token = req.client_token.clone()?;
        let record = RunTaskTokenRecord {
            client_token: token.clone(),
            request: Some(req.clone()),
            task_arns: placed.into_iter().collect(),
            failures: out.failures.clone(),
            created_at: Some(now()),
        };
        Some((put(format!("{RUN_TOKEN_PREFIX}{token}"), &record), record))
    }

    /// Remembers a committed token record.
    pub(crate) fn remember_run_token(&mut self, record: RunTaskTokenRecord) {
        self.run_tokens.insert(record.client_token.clone(), record);
    }
}
