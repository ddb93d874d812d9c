//! berth-agent: registers its host with the controller as a container instance and runs the
//! tasks the controller assigns it, with containerd + runc inside cgroup limits. It never
//! decides what should run (the controller does) and never stops a task the controller has not
//! confirmed it wants stopped.
//!
//! Layout: [`engine`] (per-task actors and the state machine), [`runtime`] (containerd, images,
//! OCI specs), [`logs`] (container output: capture, spool, events), [`cgroups`], [`session`] (controller link), [`identity`] (the CA it pins and its
//! client certificate), [`state`] (persistence), [`secrets`] (task secrets asked of the
//! controller, kept in memory only), [`stats`], [`metadata`] (the task metadata endpoint
//! v4) and [`volumes`] (task volumes, mount points, environment files).

pub mod cgroups;
pub mod engine;
pub mod exec;
pub mod identity;
pub mod images;
pub mod logs;
pub mod metadata;
pub mod network;
pub mod runtime;
pub mod secrets;
pub mod session;
pub mod state;
pub mod stats;
pub mod volumes;
