//! Task networking on the controller (issue 8): awsvpcConfiguration checked and recorded
//! (`tasknet/ID`), subnets matched to the instances that report them, LAN addresses allocated
//! cluster-wide, host ports accounted per instance, and what agents report (network bindings,
//! the ENI attachment, network interfaces) merged into the task.

use super::{new_id, State};
use crate::error::EcsError;
use berth_proto::status::TaskStatus;
use berth_proto::v1::{
    Attachment, Attribute, ContainerDefinition, ContainerInstance, KeyValuePair,
    NetworkConfiguration, Resource, Task, TaskNetwork, TaskNetworkRecord,
};
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

/// Key prefix of [`berth_proto::v1::TaskNetworkRecord`]s.
pub(crate) const TASK_NETWORK_PREFIX: &str = "tasknet/";

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

/// The attribute an agent reports for each subnet it has: `berth.subnet.<name>`.
pub(crate) const SUBNET_ATTRIBUTE_PREFIX: &str = "berth.subnet.";

/// The ENI attachment's type, as ECS names it.
pub(crate) const ENI_ATTACHMENT: &str = "ElasticNetworkInterface";

/// ECS's message when an awsvpc task is run without a network configuration.
pub(crate) const NETWORK_CONFIGURATION_REQUIRED: &str =
    "Network Configuration must be provided when networkMode 'awsvpc' is specified.";

/// ECS's message when a network configuration is given for another network mode.
pub(crate) const NETWORK_CONFIGURATION_NOT_VALID: &str =
    "Network Configuration is not valid for the given networkMode of this task definition.";

/// At most this many subnets and security groups in an awsvpcConfiguration (ECS).
const MAX_SUBNETS: usize = 16;
const MAX_SECURITY_GROUPS: usize = 5;

/// A checked awsvpcConfiguration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AwsVpc {
    /// The subnets, in the request's order (the first one an instance has is taken).
    pub(crate) subnets: Vec<String>,
    /// The security groups, resolved (the cluster's default when none was given).
    pub(crate) security_groups: Vec<String>,
    /// assignPublicIp ENABLED.
    pub(crate) assign_public_ip: bool,
}

/// A LAN subnet's allocation range, from the attribute value `lan:<cidr>:<first>-<last>`;
/// `None` for a bridge subnet (`bridge:<cidr>`: its agent allocates) or a value that is not
/// a LAN range.
pub(crate) fn lan_range(value: &str) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let rest = value.strip_prefix("lan:")?;
    let (_cidr, range) = rest.rsplit_once(':')?;
    let (first, last) = range.split_once('-')?;
    let (first, last) = (first.parse().ok()?, last.parse().ok()?);
    (first <= last).then_some((first, last))
}

/// A protocol and port a task holds on its host.
pub(crate) type HostPort = (String, i32);

/// The static host ports a task of `network_mode` holds: every containerPort in host mode,
/// every nonzero hostPort in bridge mode, none in awsvpc and none (their own namespace).
pub(crate) fn static_host_ports(
    network_mode: &str,
    containers: &[ContainerDefinition],
) -> BTreeSet<HostPort> {
    let mut out = BTreeSet::new();
    for p in containers.iter().flat_map(|c| c.port_mappings.iter()) {
        let port = match network_mode {
            "host" => p.container_port.or(p.host_port),
            "bridge" | "" => p.host_port,
            _ => None,
        };
        if let Some(port) = port.filter(|p| *p > 0) {
            let proto = p.protocol.clone().unwrap_or_else(|| "tcp".into());
            out.insert((proto, port));
        }
    }
    out
}

/// The ports of a registered PORTS / PORTS_UDP resource.
fn resource_ports(resources: &[Resource], name: &str, proto: &str) -> BTreeSet<HostPort> {
    resources
        .iter()
        .filter(|r| r.name == name)
        .flat_map(|r| r.string_set_value.iter())
        .filter_map(|p| p.trim().parse::<i32>().ok())
        .map(|p| (proto.to_string(), p))
        .collect()
}

/// Whether an instance's attributes (name → value) include subnet `name`.
fn has_subnet(attributes: &[Attribute], name: &str) -> Option<String> {
    let key = format!("{SUBNET_ATTRIBUTE_PREFIX}{name}");
    attributes
        .iter()
        .find(|a| a.name == key)
        .map(|a| a.value.clone().unwrap_or_default())
}

impl State {
    /// The host ports in use on an instance: its reserved PORTS / PORTS_UDP, the static ports
    /// of its tasks not yet STOPPED (from their definitions) and the host ports their agents
    /// reported in networkBindings (dynamic ones included).
    pub(crate) fn ports_in_use(&self, ci: &ContainerInstance) -> BTreeSet<HostPort> {
        let mut used = resource_ports(&ci.registered_resources, "PORTS", "tcp");
        used.extend(resource_ports(&ci.registered_resources, "PORTS_UDP", "udp"));
        // What its tasks hold, kept as they change (`load.rs`).
        if let Some(l) = self.loads.get(&ci.container_instance_arn) {
            used.extend(l.ports.keys().cloned());
        }
        used
    }

    /// RunTask/StartTask's networkConfiguration against the task definition's networkMode:
    /// required for awsvpc, refused for the other modes; subnets 1-16, each configured on an
    /// instance of the cluster; at most 5 security groups, resolved in the cluster;
    /// assignPublicIp ENABLED or DISABLED (default DISABLED).
    pub(crate) fn check_network_configuration(
        &self,
        cluster_name: &str,
        cluster_arn: &str,
        network_mode: &str,
        given: Option<&NetworkConfiguration>,
    ) -> Result<Option<AwsVpc>, EcsError> {
        let vpc = given.and_then(|n| n.awsvpc_configuration.as_ref());
        if network_mode != "awsvpc" {
            if vpc.is_some() {
                return Err(EcsError::invalid(NETWORK_CONFIGURATION_NOT_VALID));
            }
            return Ok(None);
        }
        let Some(vpc) = vpc else {
            return Err(EcsError::invalid(NETWORK_CONFIGURATION_REQUIRED));
        };
        if vpc.subnets.is_empty() {
            return Err(EcsError::invalid("subnets can not be empty."));
        }
        if vpc.subnets.len() > MAX_SUBNETS {
            return Err(EcsError::invalid(format!(
                "awsvpcConfiguration.subnets: at most {MAX_SUBNETS} subnets can be given, {} given",
                vpc.subnets.len()
            )));
        }
        if vpc.security_groups.len() > MAX_SECURITY_GROUPS {
            return Err(EcsError::invalid(format!(
                "awsvpcConfiguration.securityGroups: at most {MAX_SECURITY_GROUPS} security groups can be given, {} given",
                vpc.security_groups.len()
            )));
        }
        let assign_public_ip = match vpc.assign_public_ip.as_deref() {
            None | Some("DISABLED") => false,
            Some("ENABLED") => true,
            Some(other) => {
                return Err(EcsError::invalid(format!(
                    "awsvpcConfiguration.assignPublicIp: '{other}' is not ENABLED or DISABLED"
                )))
            }
        };
        let mut subnets: Vec<String> = Vec::new();
        for s in &vpc.subnets {
            if s.is_empty() {
                return Err(EcsError::invalid(
                    "awsvpcConfiguration.subnets: a subnet name is empty",
                ));
            }
            let known = self.instances.values().any(|r| {
                r.cluster_arn == cluster_arn
                    && r.container_instance
                        .as_ref()
                        .is_some_and(|ci| !super::instances::is_inactive(ci))
                    && has_subnet(&super::instances::attributes(r), s).is_some()
            });
            if !known {
                return Err(EcsError::invalid(format!(
                    "awsvpcConfiguration.subnets: subnet '{s}' is not configured on any container instance of cluster {cluster_name} (agents report their subnets as attribute {SUBNET_ATTRIBUTE_PREFIX}NAME)"
                )));
            }
            if !subnets.contains(s) {
                subnets.push(s.clone());
            }
        }
        let security_groups = self.resolve_security_groups(cluster_name, &vpc.security_groups)?;
        Ok(Some(AwsVpc {
            subnets,
            security_groups,
            assign_public_ip,
        }))
    }

    /// The subnet an awsvpc task takes on an instance: the first of `subnets` it has, with the
    /// attribute's value.
    pub(crate) fn instance_subnet(
        &self,
        instance_id: &str,
        subnets: &[String],
    ) -> Option<(String, String)> {
        let attrs = super::instances::attributes(self.instances.get(instance_id)?);
        subnets
            .iter()
            .find_map(|s| has_subnet(&attrs, s).map(|v| (s.clone(), v)))
    }

    /// The lowest address of `range` no task holds on a subnet named `subnet` (any cluster),
    /// apart from those in `taken` (allocated in the same request). A task holds its address
    /// until it is STOPPED.
    pub(crate) fn free_lan_address(
        &self,
        subnet: &str,
        (first, last): (Ipv4Addr, Ipv4Addr),
        taken: &BTreeSet<Ipv4Addr>,
    ) -> Option<Ipv4Addr> {
        let held: BTreeSet<Ipv4Addr> = self
            .task_networks
            .iter()
            .filter(|(_, n)| n.subnet == subnet)
            .filter(|(id, _)| {
                self.tasks
                    .get(*id)
                    .is_some_and(|t| TaskStatus::parse(&t.last_status) != Ok(TaskStatus::Stopped))
            })
            .filter_map(|(_, n)| n.private_ipv4_address.as_deref()?.parse().ok())
            .collect();
        (u32::from(first)..=u32::from(last))
            .map(Ipv4Addr::from)
            .find(|a| !held.contains(a) && !taken.contains(a))
    }

    /// The network record of a new awsvpc task on `instance_id`: the first of the request's
    /// subnets the instance has, and on a LAN subnet the lowest free address of its range
    /// (cluster-wide, `taken` holding those given to earlier tasks of the same request). A
    /// LAN subnet with no free address left refuses the request, naming the subnet.
    pub(crate) fn task_network_record(
        &self,
        instance_id: &str,
        task_arn: &str,
        vpc: &AwsVpc,
        taken: &mut BTreeSet<Ipv4Addr>,
    ) -> Result<TaskNetworkRecord, EcsError> {
        // Placement only chose instances that have one of the subnets.
        let (subnet, value) = self
            .instance_subnet(instance_id, &vpc.subnets)
            .ok_or_else(|| {
                EcsError::invalid(format!(
                    "awsvpcConfiguration.subnets: container instance {instance_id} has none of {}",
                    vpc.subnets.join(", ")
                ))
            })?;
        let private_ipv4_address = match lan_range(&value) {
            Some(range) => {
                let a = self.free_lan_address(&subnet, range, taken).ok_or_else(|| {
                    EcsError::invalid(format!(
                        "awsvpcConfiguration.subnets: LAN subnet '{subnet}' has no free address left in {}-{}",
                        range.0, range.1
                    ))
                })?;
                taken.insert(a);
                Some(a.to_string())
            }
            None => None,
        };
        Ok(TaskNetworkRecord {
            task_arn: task_arn.to_string(),
            subnet,
            security_groups: vpc.security_groups.clone(),
            assign_public_ip: vpc.assign_public_ip,
            private_ipv4_address,
        })
    }

    /// What the agent of an awsvpc task is told of its network.
    pub(crate) fn task_network(&self, task_id: &str) -> Option<TaskNetwork> {
        let net = self.task_networks.get(task_id)?;
        Some(TaskNetwork {
            subnet: net.subnet.clone(),
            private_ipv4_address: net.private_ipv4_address.clone(),
            assign_public_ip: net.assign_public_ip,
            security_groups: net.security_groups.clone(),
            ingress: self.task_ingress(net),
        })
    }
}

/// The ENI attachment a new awsvpc task carries: PRECREATED, on `subnet`, with the address
/// when the controller allocated it.
pub(crate) fn eni_attachment(subnet: &str, address: Option<&str>) -> Attachment {
    let mut details = vec![KeyValuePair {
        name: "subnetId".into(),
        value: subnet.into(),
    }];
    if let Some(a) = address {
        details.push(KeyValuePair {
            name: "privateIPv4Address".into(),
            value: a.into(),
        });
    }
    Attachment {
        id: new_id(),
        r#type: ENI_ATTACHMENT.into(),
        status: "PRECREATED".into(),
        details,
    }
}

/// The privateIPv4Address of a task's ENI attachment, if known.
pub(crate) fn task_eni_address(task: &Task) -> Option<&str> {
    task.attachments
        .iter()
        .filter(|a| a.r#type == ENI_ATTACHMENT)
        .flat_map(|a| a.details.iter())
        .find(|d| d.name == "privateIPv4Address" && !d.value.is_empty())
        .map(|d| d.value.as_str())
}

/// Whether an awsvpc task's report (merged into `task`) changes the members of its security
/// groups: its address became known (it was not before the report), or it is STOPPED.
pub(crate) fn membership_changed(address_before: Option<&str>, task: &Task) -> bool {
    TaskStatus::parse(&task.last_status) == Ok(TaskStatus::Stopped)
        || (address_before.is_none() && task_eni_address(task).is_some())
}

/// Merges the attachments an agent reports into the task's: the status and the details it
/// gives (a detail already known and not reported is kept); the controller's attachment id
/// stays. An attachment of a type the task has none of is added as reported.
pub(crate) fn merge_attachments(task: &mut Task, reported: &[Attachment]) {
    for r in reported {
        match task.attachments.iter_mut().find(|a| a.r#type == r.r#type) {
            Some(a) => {
                if !r.status.is_empty() {
                    a.status = r.status.clone();
                }
                for d in &r.details {
                    match a.details.iter_mut().find(|x| x.name == d.name) {
                        Some(x) => x.value = d.value.clone(),
                        None => a.details.push(d.clone()),
                    }
                }
            }
            None => task.attachments.push(r.clone()),
        }
    }
}

#[cfg(test)]
#[path = "networking_tests.rs"]
mod tests;
