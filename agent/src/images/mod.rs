//! Images (issue 11): pulling from OCI registries ([`registry`]), ECS's pull behaviours,
//! coalescing, progress, and image cleanup.

pub mod registry;
