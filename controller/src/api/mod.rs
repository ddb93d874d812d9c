//! gRPC adapters: each call unpacks the request, calls the service layer and maps errors with
//! `From<EcsError> for Status` (in `error.rs`). No logic lives here.

pub mod agent;
pub mod aws_json;
pub mod ec2;
pub mod ecs;
pub mod exec;
pub mod iam;
pub mod logs;
pub mod secrets_manager;
pub mod ssm;
