//! Images (issue 11): pulling from OCI registries ([`registry`]), ECS's pull behaviours,
//! coalescing, progress, and image cleanup.

pub mod auth;
mod http;
pub mod reference;
pub mod registry;
