//! The `berth` command line: `berth ecs OPERATION --flags`, the aws CLI's `aws ecs` with the
//! same subcommands, flags, shorthand syntax, paging, waiters, output formats and exit codes.
//!
//! - [`table`]: one row per rpc of the `Ecs` service (and the waiters);
//! - [`model`]: the request/response model, read from the contract's descriptor set;
//! - [`decoding`]: the command line to a checked request, pure (no network), so every bad
//!   input is refused before anything is sent;
//! - [`run`]: the calls (pages, waits) and what is printed;
//! - [`output`] and [`shorthand`]: the aws CLI's output formats and shorthand syntax;
//! - [`ec2`]: `berth ec2`'s simple flags of the security-group rule operations;
//! - [`exec`]: `berth ecs execute-command`, a session in a container over a stream;
//! - [`follow`]: `berth ecs run-task --wait`, the tasks and their image pulls until RUNNING;
//! - [`tail`]: `berth logs tail`, a log group's events as `aws logs tail` prints them;
//! - [`signing`]: credentials found as the aws CLI finds them, and SigV4 signing of each call.
//!
//! The CLI is a client: it shares only the contract (`berth_proto`) with the controller.

pub mod decoding;
pub mod ec2;
pub mod exec;
pub mod follow;
pub mod model;
pub mod output;
pub mod run;
pub mod shorthand;
pub mod signing;
pub mod table;
pub mod tail;

pub use run::run;

/// The endpoint used when neither --endpoint-url nor BERTH_ENDPOINT is given.
pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:7480";

/// A CLI failure with the aws CLI's exit code. Each renders as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad flags or parameter values (exit 252).
    #[error("{0}")]
    Usage(String),
    /// The service answered with an error (exit 254).
    #[error("An error occurred ({exception}) when calling the {api} operation: {message}")]
    Service {
        /// The ECS exception name.
        exception: String,
        /// The API operation.
        api: &'static str,
        /// The service's message.
        message: String,
    },
    /// The controller could not be reached (exit 255).
    #[error("Could not connect to the endpoint URL: \"{0}\"")]
    Connect(String),
    /// A waiter ended in failure or ran out of attempts (exit 255).
    #[error("Waiter {name} failed: {reason}")]
    Waiter {
        /// The waiter (`TasksRunning`).
        name: &'static str,
        /// botocore's reason.
        reason: String,
    },
    /// Anything else that went wrong on the client side (exit 255).
    #[error("{0}")]
    Other(String),
    /// `ecs execute-command`'s remote command exited with this status: the CLI exits with it
    /// and prints nothing more.
    #[error("")]
    Exit(i32),
}

impl CliError {
    /// The process exit code, as the aws CLI uses them.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => 252,
            CliError::Service { .. } => 254,
            CliError::Connect(_) | CliError::Waiter { .. } | CliError::Other(_) => 255,
            CliError::Exit(code) => *code,
        }
    }
}
