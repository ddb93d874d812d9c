//! Security groups (issue 8), EC2-shaped (ec2.proto): each cluster is a VPC with a `default`
//! group whose members accept traffic from each other; a task that names no group gets it.
//! The rules of a task's groups, source groups resolved to their members' addresses, reach its
//! agent in TaskAssignment.network.ingress.

use super::State;
use crate::error::EcsError;
use berth_proto::v1::{IngressRule, TaskNetworkRecord};

/// Key prefix of [`berth_proto::v1::SecurityGroupRecord`]s.
pub(crate) const SECURITY_GROUP_PREFIX: &str = "sg/";

#[allow(dead_code)] // Used as the networking work lands (issue 8).
impl State {
    /// awsvpcConfiguration.securityGroups of a RunTask in `cluster_name`, checked: the group
    /// ids, or the cluster's `default` group when none is given. A group that does not exist in
    /// the cluster is an InvalidParameterException naming it. (Stub until the security-group
    /// work lands: passes the ids through.)
    pub(crate) fn resolve_security_groups(
        &self,
        _cluster_name: &str,
        given: &[String],
    ) -> Result<Vec<String>, EcsError> {
        Ok(given.to_vec())
    }

    /// The ingress a task's groups allow, source groups resolved to the private addresses of
    /// their members (tasks not STOPPED). (Stub: none.)
    pub(crate) fn task_ingress(&self, _net: &TaskNetworkRecord) -> Vec<IngressRule> {
        Vec::new()
    }

    /// The container instances (ids) whose awsvpc tasks' ingress may change when the members
    /// or rules of groups in `cluster_arn` change: the controller wakes them so their desired
    /// tasks carry the new rules. (Stub: none.)
    pub(crate) fn security_group_dependents(&self, _cluster_arn: &str) -> Vec<String> {
        Vec::new()
    }
}
