//! berth-controller: owns clusters, task definitions, tasks and container instances; places
//! tasks on instances and tells each instance's agent what to run. It never touches containers
//! itself: agents do.
//!
//! Layout: [`service`] is the plain service layer (ECS semantics), [`store`] persists it,
//! [`scheduler`] places tasks, [`fleet`] tracks agent sessions, [`api`] adapts it all to gRPC,
//! and [`cli`] is the `berth` command line.

pub mod api;
pub mod cli;
pub mod error;
pub mod fleet;
pub mod logs;
pub mod query;
pub mod scheduler;
pub mod security;
pub mod service;
pub mod store;
#[cfg(test)]
mod test_rng;
