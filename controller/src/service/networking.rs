//! Task networking on the controller (issue 8): awsvpcConfiguration checked and recorded
//! (`tasknet/ID`), subnets matched to the instances that report them, LAN addresses allocated
//! cluster-wide, host ports accounted per instance, and what agents report (network bindings,
//! the ENI attachment, network interfaces) merged into the task.

use super::State;

/// Key prefix of [`berth_proto::v1::TaskNetworkRecord`]s.
pub(crate) const TASK_NETWORK_PREFIX: &str = "tasknet/";

#[allow(dead_code)] // Used as the networking work lands (issue 8).
impl State {
    /// The private IPv4 address of an awsvpc task, once known: the one the controller allocated
    /// (LAN subnets) or the one its agent reported in the ENI attachment (bridge subnets).
    pub(crate) fn task_private_ipv4(&self, task_id: &str) -> Option<String> {
        if let Some(a) = self
            .task_networks
            .get(task_id)
            .and_then(|n| n.private_ipv4_address.clone())
        {
            return Some(a);
        }
        self.tasks.get(task_id).and_then(|t| {
            t.attachments
                .iter()
                .filter(|a| a.r#type == "ElasticNetworkInterface")
                .flat_map(|a| a.details.iter())
                .find(|d| d.name == "privateIPv4Address")
                .map(|d| d.value.clone())
        })
    }
}
