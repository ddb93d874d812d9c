//! The engine's side of task networks: the [`NetworkPlan`] a task asks for, the link's
//! TaskNetwork parsed, what reports show of a task's network (networkBindings,
//! networkInterfaces, the ElasticNetworkInterface attachment), and the recovery at start.

use super::{task_id, Shared};
use crate::cgroups::Cgroups;
use crate::network::{
    AwsvpcPlan, IngressRule, Mode, NetworkError, NetworkPlan, PortRequest, Protocol, RuleProtocol,
    TaskNetworkState,
};
use crate::runtime::Runtime;
use crate::state::TaskRecord;
use berth_proto::v1::{
    Attachment, KeyValuePair, NetworkBinding, NetworkInterface, TaskNetwork, TaskStateChange,
};
use std::net::Ipv4Addr;
use std::time::Duration;
use tracing::{error, info, warn, Instrument};

/// The attachment type of an awsvpc task's interface.
pub const ENI: &str = "ElasticNetworkInterface";

/// The mode of a task definition's networkMode ("" is bridge, ECS's default).
pub fn mode_of(network_mode: &str) -> Result<Mode, NetworkError> {
    Mode::parse(network_mode).ok_or_else(|| {
        NetworkError::Invalid(format!(
            "network mode {network_mode} is not one of awsvpc, bridge, host, none"
        ))
    })
}

fn port(container: &str, what: &str, v: i32) -> Result<u16, NetworkError> {
    u16::try_from(v).ok().filter(|p| *p > 0).ok_or_else(|| {
        NetworkError::Invalid(format!(
            "container {container}: {what} {v} is not a port (1-65535)"
        ))
    })
}

/// What a task asks of the network: every portMapping (hostPort = containerPort in host mode)
/// and, for awsvpc, the controller's part from the assignment.
pub fn plan(rec: &TaskRecord, mode: Mode) -> Result<NetworkPlan, NetworkError> {
    let defs = &rec.definition.container_definitions;
    let mut ports = Vec::new();
    for d in defs {
        if d.disable_networking == Some(true) && !d.port_mappings.is_empty() {
            return Err(NetworkError::Invalid(format!(
                "container {}: portMappings cannot be published with disableNetworking",
                d.name
            )));
        }
        for pm in &d.port_mappings {
            let Some(cp) = pm.container_port else {
                return Err(NetworkError::Invalid(format!(
                    "container {}: a portMapping has no containerPort",
                    d.name
                )));
            };
            let container_port = port(&d.name, "containerPort", cp)?;
            let host_port = match pm.host_port {
                None | Some(0) => None,
                Some(h) => Some(port(&d.name, "hostPort", h)?),
            };
            let protocol = Protocol::parse(pm.protocol.as_deref()).ok_or_else(|| {
                NetworkError::Invalid(format!(
                    "container {}: portMapping protocol {} is not tcp or udp",
                    d.name,
                    pm.protocol.as_deref().unwrap_or_default()
                ))
            })?;
            ports.push(PortRequest {
                container: d.name.clone(),
                container_port,
                host_port: match mode {
                    Mode::Host => Some(host_port.unwrap_or(container_port)),
                    _ => host_port,
                },
                protocol,
            });
        }
    }
    let awsvpc = match mode {
        Mode::Awsvpc => Some(awsvpc_plan(rec.task_network.as_ref().ok_or_else(|| {
            NetworkError::Invalid(
                "awsvpc task without a network configuration from the controller (no subnet assigned)"
                    .into(),
            )
        })?)?),
        _ => None,
    };
    Ok(NetworkPlan {
        task_id: task_id(&rec.task.task_arn),
        mode,
        // disableNetworking: no interface; runc gives it a namespace with loopback only.
        containers: defs
            .iter()
            .filter(|d| d.disable_networking != Some(true))
            .map(|d| d.name.clone())
            .collect(),
        ports,
        awsvpc,
    })
}

/// The link's TaskNetwork as the network takes it.
pub fn awsvpc_plan(n: &TaskNetwork) -> Result<AwsvpcPlan, NetworkError> {
    if n.subnet.is_empty() {
        return Err(NetworkError::Invalid(
            "awsvpc task network names no subnet".into(),
        ));
    }
    let address = match n.private_ipv4_address.as_deref() {
        None | Some("") => None,
        Some(a) => Some(a.parse::<Ipv4Addr>().map_err(|_| {
            NetworkError::Invalid(format!("private IPv4 address {a} is not an IPv4 address"))
        })?),
    };
    Ok(AwsvpcPlan {
        subnet: n.subnet.clone(),
        address,
        assign_public_ip: n.assign_public_ip,
        security_groups: n.security_groups.clone(),
        ingress: ingress(&n.ingress)?,
    })
}

/// The link's ingress rules, parsed (sorted, so equal sets compare equal).
pub fn ingress(rules: &[berth_proto::v1::IngressRule]) -> Result<Vec<IngressRule>, NetworkError> {
    let mut out = Vec::with_capacity(rules.len());
    for r in rules {
        let bad = |what: String| NetworkError::Invalid(format!("ingress rule {r:?}: {what}"));
        let protocol = match r.protocol.to_ascii_lowercase().as_str() {
            "tcp" | "6" => RuleProtocol::Tcp,
            "udp" | "17" => RuleProtocol::Udp,
            "icmp" | "1" => RuleProtocol::Icmp,
            "all" | "-1" => RuleProtocol::All,
            p => return Err(bad(format!("protocol {p} is not tcp, udp, icmp or all"))),
        };
        let (from_port, to_port) = match protocol {
            RuleProtocol::Tcp | RuleProtocol::Udp => {
                let from = u16::try_from(r.from_port)
                    .map_err(|_| bad(format!("fromPort {} is not a port", r.from_port)))?;
                let to = u16::try_from(r.to_port)
                    .map_err(|_| bad(format!("toPort {} is not a port", r.to_port)))?;
                if from > to {
                    return Err(bad(format!("fromPort {from} is above toPort {to}")));
                }
                (from, to)
            }
            RuleProtocol::Icmp | RuleProtocol::All => (0, 65535),
        };
        let (addr, prefix) = r.cidr.split_once('/').unwrap_or((&r.cidr, "32"));
        let source = addr
            .parse::<Ipv4Addr>()
            .map_err(|_| bad(format!("source {} is not an IPv4 CIDR", r.cidr)))?;
        let prefix = prefix
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= 32)
            .ok_or_else(|| bad(format!("source {} has no prefix length 0-32", r.cidr)))?;
        out.push(IngressRule {
            protocol,
            from_port,
            to_port,
            source,
            prefix,
        });
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The id of the task's ENI attachment: the one the controller made (in the task it
/// assigned), else the task id in UUID form.
fn attachment_id(rec: &TaskRecord) -> String {
    if let Some(a) = rec.task.attachments.iter().find(|a| a.r#type == ENI) {
        return a.id.clone();
    }
    let id = task_id(&rec.task.task_arn);
    if id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()) {
        format!(
            "{}-{}-{}-{}-{}",
            &id[..8],
            &id[8..12],
            &id[12..16],
            &id[16..20],
            &id[20..]
        )
    } else {
        id
    }
}

/// `ip-a-b-c-d`, as EC2 names an address.
pub fn private_dns_name(a: Ipv4Addr) -> String {
    let o = a.octets();
    format!("ip-{}-{}-{}-{}", o[0], o[1], o[2], o[3])
}

/// Adds what a report shows of the task's network once it is set up: each container's
/// networkBindings (bridge, host) or networkInterfaces (awsvpc), and the awsvpc task's
/// ElasticNetworkInterface attachment (ATTACHED, DELETED once torn down).
pub fn decorate(rec: &TaskRecord, s: &mut TaskStateChange) {
    let Some(net) = rec.network.as_ref().filter(|_| rec.network_set_up) else {
        return;
    };
    match net.mode {
        Mode::Bridge | Mode::Host => {
            for c in &mut s.containers {
                c.network_bindings = net
                    .bindings
                    .iter()
                    .filter(|b| b.container == c.name)
                    .map(|b| NetworkBinding {
                        bind_ip: Some(b.bind_ip.to_string()),
                        container_port: Some(b.container_port.into()),
                        host_port: Some(b.host_port.into()),
                        protocol: Some(b.protocol.as_str().into()),
                        ..Default::default()
                    })
                    .collect();
            }
        }
        Mode::Awsvpc => {
            let Some(iface) = net.namespaces.get("").and_then(|n| n.interface.as_ref()) else {
                return;
            };
            let attachment = attachment_id(rec);
            for c in &mut s.containers {
                c.network_interfaces = vec![NetworkInterface {
                    attachment_id: Some(attachment.clone()),
                    private_ipv4_address: Some(iface.address.to_string()),
                    ipv6_address: None,
                }];
            }
            let id = task_id(&rec.task.task_arn);
            // ECS's form (eni- and 17 hex digits), unique per task: the host-side link's name is
            // not (a LAN task's is its parent's, the same for every task on the host).
            let eni = format!("eni-{}", id.get(..17).unwrap_or(&id));
            let kv = |name: &str, value: String| KeyValuePair {
                name: name.into(),
                value,
            };
            let mut details = vec![
                kv(
                    "subnetId",
                    net.awsvpc
                        .as_ref()
                        .map(|a| a.subnet.clone())
                        .or_else(|| net.network.clone())
                        .unwrap_or_default(),
                ),
                kv("networkInterfaceId", eni),
            ];
            if let Some(mac) = &iface.mac {
                details.push(kv("macAddress", mac.clone()));
            }
            details.push(kv("privateIPv4Address", iface.address.to_string()));
            details.push(kv("privateDnsName", private_dns_name(iface.address)));
            s.attachments = vec![Attachment {
                id: attachment,
                r#type: ENI.into(),
                status: if rec.network_released {
                    "DELETED"
                } else {
                    "ATTACHED"
                }
                .into(),
                details,
            }];
        }
        Mode::None => {}
    }
}

/// Tears a task's network down (bounded by the network timeout) and, once it is gone,
/// releases its addresses and ports.
pub(crate) async fn teardown<R: Runtime, C: Cgroups>(
    shared: &Shared<R, C>,
    state: &TaskNetworkState,
) -> Result<(), NetworkError> {
    let after = shared.config.timeouts.network;
    match tokio::time::timeout(after, shared.network.teardown(state)).await {
        Ok(Ok(())) => {
            shared.network.release(state);
            Ok(())
        }
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NetworkError::Timeout {
            step: "tearing down the task's network",
            after,
        }),
    }
}

/// At start, before any actor touches the network: gives it the states still held, then tears
/// down and releases the network of the tasks that were found STOPPED with theirs up.
pub(crate) async fn recover<R: Runtime, C: Cgroups>(
    shared: &Shared<R, C>,
    held: &[TaskNetworkState],
    stopped: Vec<TaskRecord>,
) {
    let after = shared.config.timeouts.network;
    match tokio::time::timeout(after, shared.network.recover(held)).await {
        Ok(Ok(removed)) if removed.is_empty() => {}
        Ok(Ok(removed)) => info!(?removed, "removed network objects no task record names"),
        Ok(Err(e)) => error!(error = %e, "network recovery failed; what no task names may be left"),
        Err(_) => error!(?after, "network recovery did not finish in time"),
    }
    for mut rec in stopped {
        let id = task_id(&rec.task.task_arn);
        let span = tracing::info_span!("task", task = %id);
        async {
            let Some(state) = rec.network.clone() else {
                return;
            };
            match teardown(shared, &state).await {
                Ok(()) => {
                    info!("network of a task stopped while the agent was down removed");
                    rec.network_released = true;
                    shared.publish_if_held(&rec);
                }
                Err(e) => {
                    warn!(error = %e, "cannot remove the network of a stopped task; tried again at the next start")
                }
            }
        }
        .instrument(span)
        .await;
    }
}

/// Back-off between teardown attempts.
pub const TEARDOWN_BACKOFF: Duration = Duration::from_millis(500);
/// Teardown attempts when a task stops before the agent leaves it to the next start.
pub const TEARDOWN_ATTEMPTS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingress_rules_parse_and_name_what_is_wrong() {
        let r = |p: &str, f: i32, t: i32, c: &str| berth_proto::v1::IngressRule {
            protocol: p.into(),
            from_port: f,
            to_port: t,
            cidr: c.into(),
        };
        let got = ingress(&[r("tcp", 80, 80, "10.0.0.0/8"), r("-1", -1, -1, "1.2.3.4")]).unwrap();
        assert_eq!(got.len(), 2);
        assert!(got.contains(&IngressRule {
            protocol: RuleProtocol::All,
            from_port: 0,
            to_port: 65535,
            source: Ipv4Addr::new(1, 2, 3, 4),
            prefix: 32
        }));
        for (bad, word) in [
            (r("gre", 0, 0, "1.2.3.4/32"), "gre"),
            (r("tcp", 90, 80, "1.2.3.4/32"), "fromPort 90"),
            (r("tcp", 80, 80, "1.2.3/32"), "1.2.3/32"),
            (r("tcp", 80, 80, "1.2.3.4/33"), "prefix"),
        ] {
            let e = ingress(&[bad]).unwrap_err().to_string();
            assert!(e.contains(word), "{e}");
        }
    }

    #[test]
    fn private_dns_names_are_ec2s() {
        assert_eq!(
            private_dns_name(Ipv4Addr::new(172, 30, 0, 5)),
            "ip-172-30-0-5"
        );
    }
}
