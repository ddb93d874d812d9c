//! Security groups (issue 8), EC2-shaped (ec2.proto): each cluster is a VPC with a `default`
//! group whose members accept traffic from each other; a task that names no group gets it.
//! The rules of a task's groups, source groups resolved to their members' addresses, reach its
//! agent in TaskAssignment.network.ingress.
//!
//! A group's rules are kept flattened (`SecurityGroupRecord.rules`, one per CIDR or source
//! group, each with its `sgr-` id); the EC2 view (`IpPermissions`) is rebuilt from them on every
//! change, grouped by protocol and port range as EC2 prints it.

use super::{put, Controller, State};
use crate::error::EcsError;
use crate::store::Write;
use berth_proto::status::TaskStatus;
use berth_proto::v1::{
    AuthorizeSecurityGroupIngressResponse, CreateSecurityGroupRequest, CreateSecurityGroupResponse,
    DeleteSecurityGroupRequest, DeleteSecurityGroupResponse, DescribeSecurityGroupsRequest,
    DescribeSecurityGroupsResponse, IngressRule, IpPermission, IpRange,
    RevokeSecurityGroupIngressResponse, SecurityGroup, SecurityGroupIngressRequest,
    SecurityGroupRecord, SecurityGroupRule, Task, TaskNetworkRecord, UserIdGroupPair,
};
use std::collections::BTreeSet;

/// Key prefix of [`berth_proto::v1::SecurityGroupRecord`]s.
pub(crate) const SECURITY_GROUP_PREFIX: &str = "sg/";

/// The name of each VPC's (cluster's) own group.
pub(crate) const DEFAULT_GROUP: &str = "default";
/// The description EC2 gives a VPC's default group.
const DEFAULT_DESCRIPTION: &str = "default VPC security group";
/// ECS's limit of security groups in an awsvpcConfiguration.
pub(crate) const MAX_TASK_GROUPS: usize = 5;
/// DescribeSecurityGroups' MaxResults range, as EC2's.
const MAX_RESULTS: std::ops::RangeInclusive<i32> = 5..=1000;

/// EC2's error codes, as the aws CLI prints them.
pub mod code {
    /// A required parameter is missing.
    pub const MISSING_PARAMETER: &str = "MissingParameter";
    /// A parameter's value is not valid.
    pub const INVALID_PARAMETER_VALUE: &str = "InvalidParameterValue";
    /// Parameters that cannot be given together.
    pub const INVALID_PARAMETER_COMBINATION: &str = "InvalidParameterCombination";
    /// No such VPC (in Berth: cluster).
    pub const INVALID_VPC_NOT_FOUND: &str = "InvalidVpcID.NotFound";
    /// No VpcId given and no `default` cluster.
    pub const VPC_ID_NOT_SPECIFIED: &str = "VPCIdNotSpecified";
    /// No such group.
    pub const INVALID_GROUP_NOT_FOUND: &str = "InvalidGroup.NotFound";
    /// A group id that is not `sg-…`.
    pub const INVALID_GROUP_ID_MALFORMED: &str = "InvalidGroupId.Malformed";
    /// A group of that name exists in the VPC.
    pub const INVALID_GROUP_DUPLICATE: &str = "InvalidGroup.Duplicate";
    /// The `default` group cannot be deleted.
    pub const CANNOT_DELETE: &str = "CannotDelete";
    /// The group is in use (by a task or another group's rule).
    pub const DEPENDENCY_VIOLATION: &str = "DependencyViolation";
    /// The rule exists already.
    pub const INVALID_PERMISSION_DUPLICATE: &str = "InvalidPermission.Duplicate";
    /// The rule to revoke does not exist.
    pub const INVALID_PERMISSION_NOT_FOUND: &str = "InvalidPermission.NotFound";
    /// A NextToken this controller did not give.
    pub const INVALID_NEXT_TOKEN: &str = "InvalidNextToken";
    /// A filter name Berth does not know.
    pub const INVALID_FILTER: &str = "InvalidParameterValue";
}

fn ec2(code: &'static str, message: impl Into<String>) -> EcsError {
    EcsError::Ec2 {
        code,
        message: message.into(),
    }
}

/// `prefix` and 17 random lowercase hex digits, as EC2's ids.
fn new_ec2_id(prefix: &str) -> String {
    format!("{prefix}{}", &super::new_id()[..17])
}

/// Where a rule lets traffic in from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    /// An IPv4 CIDR.
    Cidr(String),
    /// The members of a group (its id).
    Group(String),
}

/// One ingress rule, normalised: protocol `tcp`, `udp`, `icmp` or `-1`; ports -1 for `-1`
/// (ICMP: type and code, -1 for any).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    protocol: String,
    from: i32,
    to: i32,
    source: Source,
}

impl Rule {
    fn of(r: &SecurityGroupRule) -> Rule {
        Rule {
            protocol: r.ip_protocol.clone(),
            from: r.from_port,
            to: r.to_port,
            source: match (&r.referenced_group_id, &r.cidr_ipv4) {
                (Some(g), _) => Source::Group(g.clone()),
                (None, c) => Source::Cidr(c.clone().unwrap_or_default()),
            },
        }
    }

    fn to_record(&self, id: String, group_id: &str) -> SecurityGroupRule {
        let (cidr_ipv4, referenced_group_id) = match &self.source {
            Source::Cidr(c) => (Some(c.clone()), None),
            Source::Group(g) => (None, Some(g.clone())),
        };
        SecurityGroupRule {
            security_group_rule_id: id,
            group_id: group_id.to_string(),
            is_egress: false,
            ip_protocol: self.protocol.clone(),
            from_port: self.from,
            to_port: self.to,
            cidr_ipv4,
            referenced_group_id,
        }
    }

    /// EC2's words for a rule in InvalidPermission messages.
    fn describe(&self) -> String {
        let peer = match &self.source {
            Source::Cidr(c) | Source::Group(c) => c,
        };
        match self.protocol.as_str() {
            "-1" => format!("peer: {peer}, ALL, ALLOW"),
            p => format!(
                "peer: {peer}, {}, from port: {}, to port: {}, ALLOW",
                p.to_ascii_uppercase(),
                self.from,
                self.to
            ),
        }
    }
}

/// A protocol as EC2 takes it (name, number, -1), normalised; Berth enforces tcp, udp, icmp
/// and all.
fn protocol(p: &str) -> Result<String, EcsError> {
    match p.to_ascii_lowercase().as_str() {
        "tcp" | "6" => Ok("tcp".into()),
        "udp" | "17" => Ok("udp".into()),
        "icmp" | "1" => Ok("icmp".into()),
        "-1" | "all" => Ok("-1".into()),
        _ => Err(ec2(
            code::INVALID_PARAMETER_VALUE,
            format!("Invalid value '{p}' for IP protocol. Unknown protocol (Berth supports tcp, udp, icmp and -1 for all, or 6, 17 and 1)."),
        )),
    }
}

/// The port range of a rule of `protocol` (normalised), checked as EC2 checks it.
fn ports(protocol: &str, from: Option<i32>, to: Option<i32>) -> Result<(i32, i32), EcsError> {
    let bad = |m: String| ec2(code::INVALID_PARAMETER_VALUE, m);
    match protocol {
        "-1" => Ok((-1, -1)),
        "icmp" => {
            let (t, c) = (from.unwrap_or(-1), to.unwrap_or(-1));
            for (what, v) in [("type", t), ("code", c)] {
                if !(-1..=255).contains(&v) {
                    return Err(bad(format!(
                        "Invalid value '{v}' for ICMP {what}: must be -1 (any) or 0-255"
                    )));
                }
            }
            if t == -1 && c != -1 {
                return Err(bad(format!(
                    "Invalid value '{c}' for ICMP code: with ICMP type -1 (any) the code must be -1"
                )));
            }
            Ok((t, c))
        }
        _ => {
            let (Some(f), Some(t)) = (from, to) else {
                return Err(bad(
                    "Invalid value for portRange. Must specify both from and to ports with TCP/UDP."
                        .into(),
                ));
            };
            for v in [f, t] {
                if !(0..=65535).contains(&v) {
                    return Err(bad(format!(
                        "Invalid value for portRange. Port {v} is not between 0 and 65535."
                    )));
                }
            }
            if f > t {
                return Err(bad(format!(
                    "Invalid value for portRange. FromPort {f} is greater than ToPort {t}."
                )));
            }
            Ok((f, t))
        }
    }
}

/// An IPv4 CIDR `a.b.c.d/n` with no bits set beyond the prefix.
fn cidr(text: &str) -> Result<String, EcsError> {
    let bad = || {
        ec2(
            code::INVALID_PARAMETER_VALUE,
            format!("Value ({text}) for parameter cidrIp is invalid. This is not a valid CIDR block (an IPv4 a.b.c.d/n, no address bits beyond the prefix)."),
        )
    };
    let (addr, len_text) = text.split_once('/').ok_or_else(bad)?;
    let addr: std::net::Ipv4Addr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len_text.parse().map_err(|_| bad())?;
    // "/8" only: not "/08" or "/+8".
    if len > 32 || len.to_string() != len_text {
        return Err(bad());
    }
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    if u32::from(addr) & !mask != 0 {
        return Err(bad());
    }
    Ok(text.to_string())
}

/// The EC2 view of flattened rules: one IpPermission per protocol and port range, in the order
/// of their first rule.
fn permissions(rules: &[SecurityGroupRule]) -> Vec<IpPermission> {
    let mut out: Vec<IpPermission> = Vec::new();
    for r in rules {
        let (from, to) = if r.ip_protocol == "-1" {
            (None, None)
        } else {
            (Some(r.from_port), Some(r.to_port))
        };
        let at = match out
            .iter()
            .position(|p| p.ip_protocol == r.ip_protocol && p.from_port == from && p.to_port == to)
        {
            Some(i) => i,
            None => {
                out.push(IpPermission {
                    ip_protocol: r.ip_protocol.clone(),
                    from_port: from,
                    to_port: to,
                    ..Default::default()
                });
                out.len() - 1
            }
        };
        if let Some(c) = &r.cidr_ipv4 {
            out[at].ip_ranges.push(IpRange {
                cidr_ip: c.clone(),
                description: None,
            });
        }
        if let Some(g) = &r.referenced_group_id {
            out[at].user_id_group_pairs.push(UserIdGroupPair {
                group_id: Some(g.clone()),
                user_id: Some(berth_proto::arn::ACCOUNT.into()),
                ..Default::default()
            });
        }
    }
    out
}

/// EC2's egress of a new group: everything, anywhere.
fn open_egress() -> Vec<IpPermission> {
    vec![IpPermission {
        ip_protocol: "-1".into(),
        ip_ranges: vec![IpRange {
            cidr_ip: "0.0.0.0/0".into(),
            description: None,
        }],
        ..Default::default()
    }]
}

/// A new group of `vpc` (cluster name) with no ingress.
fn new_group(vpc: &str, name: &str, description: &str) -> SecurityGroupRecord {
    SecurityGroupRecord {
        security_group: Some(SecurityGroup {
            group_id: new_ec2_id("sg-"),
            group_name: name.into(),
            description: description.into(),
            ip_permissions: Vec::new(),
            ip_permissions_egress: open_egress(),
            vpc_id: vpc.into(),
            owner_id: berth_proto::arn::ACCOUNT.into(),
            tags: Vec::new(),
        }),
        rules: Vec::new(),
    }
}

fn group_of(r: &SecurityGroupRecord) -> &SecurityGroup {
    static EMPTY: std::sync::OnceLock<SecurityGroup> = std::sync::OnceLock::new();
    r.security_group
        .as_ref()
        .unwrap_or_else(|| EMPTY.get_or_init(SecurityGroup::default))
}

pub(crate) fn group_key(id: &str) -> String {
    format!("{SECURITY_GROUP_PREFIX}{id}")
}

/// The store write of a group record.
pub(crate) fn group_write(r: &SecurityGroupRecord) -> Write {
    put(group_key(&group_of(r).group_id), r)
}

/// A group name or description as EC2 allows them in a VPC: 1–255 of a-z, A-Z, 0-9, spaces
/// and ._-:/()#,@[]+=&;{}!$*
fn check_text(param: &str, v: &str) -> Result<(), EcsError> {
    if v.is_empty() {
        return Err(ec2(
            code::MISSING_PARAMETER,
            format!("The request must contain the parameter {param}"),
        ));
    }
    if v.chars().count() > 255 {
        return Err(ec2(
            code::INVALID_PARAMETER_VALUE,
            format!("Value ({v}) for parameter {param} is invalid. Length exceeds maximum of 255 characters."),
        ));
    }
    if let Some(c) = v
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || " ._-:/()#,@[]+=&;{}!$*".contains(*c)))
    {
        return Err(ec2(
            code::INVALID_PARAMETER_VALUE,
            format!("Value ({v}) for parameter {param} is invalid. Character '{c}' is not allowed (a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{{}}!$*)."),
        ));
    }
    Ok(())
}

/// An EC2 filter value with `*` and `?` wildcards.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

fn is_stopped(t: &Task) -> bool {
    TaskStatus::parse(&t.last_status) == Ok(TaskStatus::Stopped)
}

impl State {
    /// Default groups for the ACTIVE clusters among `clusters` that have none yet (not yet
    /// inserted: the caller commits them first).
    pub(crate) fn missing_default_groups<'a>(
        &self,
        clusters: impl IntoIterator<Item = &'a str>,
    ) -> Vec<SecurityGroupRecord> {
        clusters
            .into_iter()
            .filter(|c| self.group_by_name(c, DEFAULT_GROUP).is_none())
            .map(|c| {
                let mut r = new_group(c, DEFAULT_GROUP, DEFAULT_DESCRIPTION);
                let id = group_of(&r).group_id.clone();
                // Its members accept all traffic from each other.
                r.rules = vec![Rule {
                    protocol: "-1".into(),
                    from: -1,
                    to: -1,
                    source: Source::Group(id.clone()),
                }
                .to_record(new_ec2_id("sgr-"), &id)];
                if let Some(g) = r.security_group.as_mut() {
                    g.ip_permissions = permissions(&r.rules);
                }
                r
            })
            .collect()
    }

    /// Puts a group (committed already) in the view.
    pub(crate) fn insert_group(&mut self, r: SecurityGroupRecord) {
        self.security_groups
            .insert(group_of(&r).group_id.clone(), r);
    }

    fn group_by_name(&self, vpc: &str, name: &str) -> Option<&SecurityGroupRecord> {
        self.security_groups.values().find(|r| {
            let g = group_of(r);
            g.vpc_id == vpc && g.group_name == name
        })
    }

    /// A group by id: InvalidGroupId.Malformed or InvalidGroup.NotFound naming it.
    fn group_by_id(&self, id: &str) -> Result<&SecurityGroupRecord, EcsError> {
        if !id.starts_with("sg-") {
            return Err(ec2(
                code::INVALID_GROUP_ID_MALFORMED,
                format!("Invalid id: \"{id}\" (expecting \"sg-...\")"),
            ));
        }
        self.security_groups.get(id).ok_or_else(|| {
            ec2(
                code::INVALID_GROUP_NOT_FOUND,
                format!("The security group '{id}' does not exist"),
            )
        })
    }

    /// A group by name in the default VPC (cluster `default`), as EC2 resolves GroupName.
    fn group_in_default_vpc(&self, name: &str) -> Result<&SecurityGroupRecord, EcsError> {
        self.group_by_name(super::DEFAULT_CLUSTER, name)
            .ok_or_else(|| {
                ec2(
                    code::INVALID_GROUP_NOT_FOUND,
                    format!(
                        "The security group '{name}' does not exist in default VPC '{}'",
                        super::DEFAULT_CLUSTER
                    ),
                )
            })
    }

    /// The group a request names by id or (default VPC) name.
    fn named_group(&self, id: Option<&str>, name: Option<&str>) -> Result<String, EcsError> {
        let id = id.filter(|s| !s.is_empty());
        let name = name.filter(|s| !s.is_empty());
        let r = match (id, name) {
            (Some(_), Some(_)) => {
                return Err(ec2(
                    code::INVALID_PARAMETER_COMBINATION,
                    "The parameter groupName cannot be used with the parameter groupId",
                ))
            }
            (Some(id), None) => self.group_by_id(id)?,
            (None, Some(name)) => self.group_in_default_vpc(name)?,
            (None, None) => {
                return Err(ec2(
                    code::MISSING_PARAMETER,
                    "The request must contain the parameter groupName or groupId",
                ))
            }
        };
        Ok(group_of(r).group_id.clone())
    }

    /// A source group of a rule of a group in `vpc`: by id or by name, in the same VPC.
    fn source_group(
        &self,
        vpc: &str,
        id: Option<&str>,
        name: Option<&str>,
    ) -> Result<String, EcsError> {
        let not_found = |what: &str| {
            ec2(
                code::INVALID_GROUP_NOT_FOUND,
                format!("The security group '{what}' does not exist in VPC '{vpc}'"),
            )
        };
        match (id.filter(|s| !s.is_empty()), name.filter(|s| !s.is_empty())) {
            (Some(id), _) => {
                let r = self.group_by_id(id)?;
                if group_of(r).vpc_id != vpc {
                    return Err(not_found(id));
                }
                Ok(id.to_string())
            }
            (None, Some(name)) => self
                .group_by_name(vpc, name)
                .map(|r| group_of(r).group_id.clone())
                .ok_or_else(|| not_found(name)),
            (None, None) => Err(ec2(
                code::MISSING_PARAMETER,
                "A UserIdGroupPair must contain GroupId or GroupName",
            )),
        }
    }

    /// The rules an Authorize/Revoke request names for a group of `vpc`, checked and
    /// normalised, in request order.
    fn requested_rules(
        &self,
        vpc: &str,
        req: &SecurityGroupIngressRequest,
    ) -> Result<Vec<Rule>, EcsError> {
        let shorthand = req.ip_protocol.is_some()
            || req.from_port.is_some()
            || req.to_port.is_some()
            || req.cidr_ip.is_some()
            || req.source_security_group_name.is_some();
        if shorthand && !req.ip_permissions.is_empty() {
            return Err(ec2(
                code::INVALID_PARAMETER_COMBINATION,
                "The parameter IpPermissions cannot be used with IpProtocol, FromPort, ToPort, CidrIp or SourceSecurityGroupName",
            ));
        }
        if shorthand {
            let p = protocol(req.ip_protocol.as_deref().ok_or_else(|| {
                ec2(
                    code::MISSING_PARAMETER,
                    "The request must contain the parameter IpProtocol",
                )
            })?)?;
            let (from, to) = ports(&p, req.from_port, req.to_port)?;
            let source = match (&req.cidr_ip, &req.source_security_group_name) {
                (Some(_), Some(_)) => {
                    return Err(ec2(
                        code::INVALID_PARAMETER_COMBINATION,
                        "The parameter CidrIp cannot be used with the parameter SourceSecurityGroupName",
                    ))
                }
                (Some(c), None) => Source::Cidr(cidr(c)?),
                (None, Some(n)) => Source::Group(self.source_group(vpc, None, Some(n))?),
                (None, None) => {
                    return Err(ec2(
                        code::MISSING_PARAMETER,
                        "The request must contain the parameter CidrIp or SourceSecurityGroupName",
                    ))
                }
            };
            return Ok(vec![Rule {
                protocol: p,
                from,
                to,
                source,
            }]);
        }
        if req.ip_permissions.is_empty() {
            return Err(ec2(
                code::MISSING_PARAMETER,
                "The request must contain the parameter IpPermissions",
            ));
        }
        let mut out = Vec::new();
        for perm in &req.ip_permissions {
            if perm.ip_protocol.is_empty() {
                return Err(ec2(
                    code::MISSING_PARAMETER,
                    "The request must contain the parameter IpPermissions.IpProtocol",
                ));
            }
            let p = protocol(&perm.ip_protocol)?;
            let (from, to) = ports(&p, perm.from_port, perm.to_port)?;
            if perm.ip_ranges.is_empty() && perm.user_id_group_pairs.is_empty() {
                return Err(ec2(
                    code::MISSING_PARAMETER,
                    format!("The IpPermission of protocol '{}' names no source: give IpRanges or UserIdGroupPairs", perm.ip_protocol),
                ));
            }
            let rule = |source| Rule {
                protocol: p.clone(),
                from,
                to,
                source,
            };
            for r in &perm.ip_ranges {
                out.push(rule(Source::Cidr(cidr(&r.cidr_ip)?)));
            }
            for g in &perm.user_id_group_pairs {
                out.push(rule(Source::Group(self.source_group(
                    vpc,
                    g.group_id.as_deref(),
                    g.group_name.as_deref(),
                )?)));
            }
        }
        Ok(out)
    }

    /// awsvpcConfiguration.securityGroups of a RunTask in `cluster_name`, checked: the group
    /// ids (duplicates collapsed, at most 5), or the cluster's `default` group when none is
    /// given. A group that does not exist in the cluster is an InvalidParameterException
    /// naming it.
    pub(crate) fn resolve_security_groups(
        &self,
        cluster_name: &str,
        given: &[String],
    ) -> Result<Vec<String>, EcsError> {
        if given.is_empty() {
            return self
                .group_by_name(cluster_name, DEFAULT_GROUP)
                .map(|r| vec![group_of(r).group_id.clone()])
                .ok_or_else(|| {
                    EcsError::invalid(format!(
                        "awsvpcConfiguration.securityGroups: none given and cluster '{cluster_name}' has no default security group"
                    ))
                });
        }
        let mut out: Vec<String> = Vec::new();
        for id in given {
            if !out.contains(id) {
                out.push(id.clone());
            }
        }
        if out.len() > MAX_TASK_GROUPS {
            return Err(EcsError::invalid(format!(
                "awsvpcConfiguration.securityGroups: at most {MAX_TASK_GROUPS} security groups are allowed, got {}",
                out.len()
            )));
        }
        for id in &out {
            let found = self
                .security_groups
                .get(id)
                .is_some_and(|r| group_of(r).vpc_id == cluster_name);
            if !found {
                return Err(EcsError::invalid(format!(
                    "Error retrieving security group information for [{id}]: The security group '{id}' does not exist"
                )));
            }
        }
        Ok(out)
    }

    /// The container instance ARN a task runs on.
    fn instance_of(&self, task_arn: &str) -> Option<String> {
        let id = super::tasks::task_id(task_arn)?;
        self.tasks
            .get(id)
            .and_then(|t| t.container_instance_arn.clone())
    }

    /// Whether a member task's address means that task from instance `here`: always on a LAN
    /// subnet (the controller allocated it, unique cluster-wide), only on the same instance on a
    /// bridge subnet (each agent allocates its own, unique on its host).
    fn reachable_member(&self, here: &Option<String>, member: &str) -> bool {
        let lan = self
            .task_networks
            .get(member)
            .is_some_and(|n| n.private_ipv4_address.is_some());
        lan || (here.is_some()
            && self
                .tasks
                .get(member)
                .is_some_and(|t| t.container_instance_arn == *here))
    }

    /// The ids of the tasks (not STOPPED) that are members of group `id`.
    fn members(&self, id: &str) -> impl Iterator<Item = &str> + '_ {
        let id = id.to_string();
        self.task_networks
            .iter()
            .filter(move |(_, n)| n.security_groups.contains(&id))
            .filter(|(task, _)| self.tasks.get(*task).is_some_and(|t| !is_stopped(t)))
            .map(|(task, _)| task.as_str())
    }

    /// The ingress a task's groups allow, source groups resolved to the private addresses of
    /// their members (tasks not STOPPED; members with no address yet are left out), sorted and
    /// without duplicates.
    pub(crate) fn task_ingress(&self, net: &TaskNetworkRecord) -> Vec<IngressRule> {
        let mut out: BTreeSet<(String, i32, i32, String)> = BTreeSet::new();
        let here = self.instance_of(&net.task_arn);
        for g in &net.security_groups {
            let Some(r) = self.security_groups.get(g) else {
                continue;
            };
            for rule in &r.rules {
                let rule = Rule::of(rule);
                let (protocol, from, to) = match rule.protocol.as_str() {
                    "tcp" | "udp" => (rule.protocol.clone(), rule.from, rule.to),
                    "icmp" => ("icmp".to_string(), 0, 65535),
                    _ => ("all".to_string(), 0, 65535),
                };
                match &rule.source {
                    Source::Cidr(c) => {
                        out.insert((protocol, from, to, c.clone()));
                    }
                    Source::Group(sg) => {
                        for member in self.members(sg) {
                            // A bridge subnet's addresses are unique only on their own host
                            // (each agent allocates its own): a member there is reachable, and
                            // so admitted, only from its own host. LAN addresses are the
                            // controller's, unique cluster-wide.
                            if !self.reachable_member(&here, member) {
                                continue;
                            }
                            if let Some(a) = self.task_private_ipv4(member) {
                                out.insert((protocol.clone(), from, to, format!("{a}/32")));
                            }
                        }
                    }
                }
            }
        }
        out.into_iter()
            .map(|(protocol, from_port, to_port, cidr)| IngressRule {
                protocol,
                from_port,
                to_port,
                cidr,
            })
            .collect()
    }

    /// The container instances (ids) whose awsvpc tasks' ingress may change when the members
    /// or rules of groups in `cluster_arn` change: those running awsvpc tasks of the cluster
    /// that are not STOPPED. The controller wakes them so their desired tasks carry the new
    /// rules.
    pub(crate) fn security_group_dependents(&self, cluster_arn: &str) -> Vec<String> {
        let mut out = BTreeSet::new();
        for task in self.task_networks.keys() {
            let Some(t) = self.tasks.get(task) else {
                continue;
            };
            if t.cluster_arn != cluster_arn || is_stopped(t) {
                continue;
            }
            if let Some(id) = t
                .container_instance_arn
                .as_deref()
                .and_then(|a| berth_proto::arn::short_id("container-instance", a))
            {
                out.insert(id.to_string());
            }
        }
        out.into_iter().collect()
    }

    /// Why group `id` cannot be deleted, if it cannot.
    fn dependency(&self, id: &str) -> Option<EcsError> {
        let violation = || {
            ec2(
                code::DEPENDENCY_VIOLATION,
                format!("resource {id} has a dependent object"),
            )
        };
        if self.members(id).next().is_some() {
            return Some(violation());
        }
        let referenced = self.security_groups.iter().any(|(other, r)| {
            other != id
                && r.rules
                    .iter()
                    .any(|x| x.referenced_group_id.as_deref() == Some(id))
        });
        referenced.then(violation)
    }
}

impl Controller {
    /// Wakes the instances running awsvpc tasks of `vpc` (a cluster name): their tasks'
    /// ingress is computed again.
    async fn wake_dependents(&self, vpc: &str) {
        let st = self.state.lock().await;
        for i in st.security_group_dependents(&berth_proto::arn::cluster(vpc)) {
            self.fleet.notify(&i);
        }
    }

    /// CreateSecurityGroup: a group with no ingress and open egress in a cluster (VpcId; the
    /// `default` cluster when absent).
    pub async fn create_security_group(
        &self,
        req: CreateSecurityGroupRequest,
    ) -> Result<CreateSecurityGroupResponse, EcsError> {
        check_text("GroupName", &req.group_name)?;
        check_text("GroupDescription", &req.description)?;
        if req.group_name.starts_with("sg-") {
            return Err(ec2(
                code::INVALID_PARAMETER_VALUE,
                "Group names may not be in the format sg-*.",
            ));
        }
        if req.group_name == DEFAULT_GROUP {
            return Err(ec2(
                code::INVALID_PARAMETER_VALUE,
                "Cannot use reserved security group name: default",
            ));
        }
        let mut st = self.state.lock().await;
        let vpc = match req.vpc_id.as_deref().filter(|v| !v.is_empty()) {
            Some(v) => {
                if st.active_cluster(v).is_err() {
                    return Err(ec2(
                        code::INVALID_VPC_NOT_FOUND,
                        format!("The vpc ID '{v}' does not exist"),
                    ));
                }
                v.to_string()
            }
            None => {
                if st.active_cluster(super::DEFAULT_CLUSTER).is_err() {
                    return Err(ec2(
                        code::VPC_ID_NOT_SPECIFIED,
                        "No default VPC for this user (Berth's default VPC is the cluster 'default'; create it or give --vpc-id CLUSTER)",
                    ));
                }
                super::DEFAULT_CLUSTER.to_string()
            }
        };
        if st.group_by_name(&vpc, &req.group_name).is_some() {
            return Err(ec2(
                code::INVALID_GROUP_DUPLICATE,
                format!(
                    "The security group '{}' already exists for VPC '{vpc}'",
                    req.group_name
                ),
            ));
        }
        let mut writes = Vec::new();
        // A cluster that predates security groups gets its default group with the first.
        let defaults = st.missing_default_groups([vpc.as_str()]);
        writes.extend(defaults.iter().map(group_write));
        let r = new_group(&vpc, &req.group_name, &req.description);
        let id = group_of(&r).group_id.clone();
        writes.push(put(group_key(&id), &r));
        self.commit(writes)?;
        for d in defaults {
            st.insert_group(d);
        }
        st.insert_group(r);
        Ok(CreateSecurityGroupResponse { group_id: id })
    }

    /// DescribeSecurityGroups: by GroupIds, GroupNames (default VPC) and Filters, by id, a page
    /// at a time.
    pub async fn describe_security_groups(
        &self,
        req: DescribeSecurityGroupsRequest,
    ) -> Result<DescribeSecurityGroupsResponse, EcsError> {
        let page = match req.max_results {
            None => None,
            Some(n) if MAX_RESULTS.contains(&n) => Some(n as usize),
            Some(n) => {
                return Err(ec2(
                    code::INVALID_PARAMETER_VALUE,
                    format!(
                        "Value ( {n} ) for parameter maxResults is invalid. Parameter must be between {} and {}.",
                        MAX_RESULTS.start(),
                        MAX_RESULTS.end()
                    ),
                ))
            }
        };
        if page.is_some() && !req.group_ids.is_empty() {
            return Err(ec2(
                code::INVALID_PARAMETER_COMBINATION,
                "The parameter groupIds cannot be used with the parameter maxResults",
            ));
        }
        for f in &req.filters {
            if !["group-id", "group-name", "vpc-id", "description"].contains(&f.name.as_str()) {
                return Err(ec2(
                    code::INVALID_FILTER,
                    format!("The filter '{}' is invalid (Berth filters on group-id, group-name, vpc-id and description)", f.name),
                ));
            }
        }
        let st = self.state.lock().await;
        let mut wanted: Option<BTreeSet<String>> = None;
        if !req.group_ids.is_empty() || !req.group_names.is_empty() {
            let mut set = BTreeSet::new();
            for id in &req.group_ids {
                set.insert(group_of(st.group_by_id(id)?).group_id.clone());
            }
            for name in &req.group_names {
                set.insert(group_of(st.group_in_default_vpc(name)?).group_id.clone());
            }
            wanted = Some(set);
        }
        let after = match req.next_token.as_deref().filter(|t| !t.is_empty()) {
            None => None,
            Some(t) => match t.strip_prefix("sgt.") {
                Some(id) if id.starts_with("sg-") => Some(id.to_string()),
                _ => {
                    return Err(ec2(
                        code::INVALID_NEXT_TOKEN,
                        format!("The token '{t}' is invalid."),
                    ))
                }
            },
        };
        let matches = |g: &SecurityGroup| {
            req.filters.iter().all(|f| {
                let v = match f.name.as_str() {
                    "group-id" => &g.group_id,
                    "group-name" => &g.group_name,
                    "vpc-id" => &g.vpc_id,
                    _ => &g.description,
                };
                f.values.iter().any(|p| glob(p, v))
            })
        };
        let mut groups: Vec<SecurityGroup> = st
            .security_groups
            .iter()
            .filter(|(id, _)| wanted.as_ref().is_none_or(|w| w.contains(*id)))
            .filter(|(id, _)| after.as_ref().is_none_or(|a| *id > a))
            .map(|(_, r)| group_of(r))
            .filter(|g| matches(g))
            .cloned()
            .collect();
        let mut next_token = None;
        if let Some(n) = page {
            if groups.len() > n {
                groups.truncate(n);
                next_token = groups.last().map(|g| format!("sgt.{}", g.group_id));
            }
        }
        Ok(DescribeSecurityGroupsResponse {
            security_groups: groups,
            next_token,
        })
    }

    /// DeleteSecurityGroup: by id or (default VPC) name; not `default`, not while a task not
    /// STOPPED is a member or another group's rule names it.
    pub async fn delete_security_group(
        &self,
        req: DeleteSecurityGroupRequest,
    ) -> Result<DeleteSecurityGroupResponse, EcsError> {
        let (vpc, id) = {
            let mut st = self.state.lock().await;
            let id = st.named_group(req.group_id.as_deref(), req.group_name.as_deref())?;
            let g = group_of(&st.security_groups[&id]).clone();
            if g.group_name == DEFAULT_GROUP {
                return Err(ec2(
                    code::CANNOT_DELETE,
                    format!(
                        "the specified group: \"{id}\" name: \"{DEFAULT_GROUP}\" cannot be deleted by a user"
                    ),
                ));
            }
            if let Some(e) = st.dependency(&id) {
                return Err(e);
            }
            self.commit(vec![Write::Delete(group_key(&id))])?;
            st.security_groups.remove(&id);
            (g.vpc_id, id)
        };
        self.wake_dependents(&vpc).await;
        Ok(DeleteSecurityGroupResponse {
            r#return: true,
            group_id: id,
        })
    }

    /// AuthorizeSecurityGroupIngress: adds rules (all or none); one that exists already is
    /// InvalidPermission.Duplicate.
    pub async fn authorize_security_group_ingress(
        &self,
        req: SecurityGroupIngressRequest,
    ) -> Result<AuthorizeSecurityGroupIngressResponse, EcsError> {
        let (vpc, added) = {
            let mut st = self.state.lock().await;
            let id = st.named_group(req.group_id.as_deref(), req.group_name.as_deref())?;
            let mut r = st.security_groups[&id].clone();
            let vpc = group_of(&r).vpc_id.clone();
            let rules = st.requested_rules(&vpc, &req)?;
            let mut have: BTreeSet<Rule> = r.rules.iter().map(Rule::of).collect();
            let mut added = Vec::new();
            for rule in rules {
                if !have.insert(rule.clone()) {
                    return Err(ec2(
                        code::INVALID_PERMISSION_DUPLICATE,
                        format!("the specified rule \"{}\" already exists", rule.describe()),
                    ));
                }
                added.push(rule.to_record(new_ec2_id("sgr-"), &id));
            }
            r.rules.extend(added.iter().cloned());
            if let Some(g) = r.security_group.as_mut() {
                g.ip_permissions = permissions(&r.rules);
            }
            self.commit(vec![put(group_key(&id), &r)])?;
            st.security_groups.insert(id, r);
            (vpc, added)
        };
        self.wake_dependents(&vpc).await;
        Ok(AuthorizeSecurityGroupIngressResponse {
            r#return: true,
            security_group_rules: added,
        })
    }

    /// RevokeSecurityGroupIngress: removes rules (all or none); one that does not exist is
    /// InvalidPermission.NotFound.
    pub async fn revoke_security_group_ingress(
        &self,
        req: SecurityGroupIngressRequest,
    ) -> Result<RevokeSecurityGroupIngressResponse, EcsError> {
        let vpc = {
            let mut st = self.state.lock().await;
            let id = st.named_group(req.group_id.as_deref(), req.group_name.as_deref())?;
            let mut r = st.security_groups[&id].clone();
            let vpc = group_of(&r).vpc_id.clone();
            let rules = st.requested_rules(&vpc, &req)?;
            for rule in &rules {
                let Some(at) = r.rules.iter().position(|x| Rule::of(x) == *rule) else {
                    return Err(ec2(
                        code::INVALID_PERMISSION_NOT_FOUND,
                        format!(
                            "The specified rule \"{}\" does not exist in this security group.",
                            rule.describe()
                        ),
                    ));
                };
                r.rules.remove(at);
            }
            if let Some(g) = r.security_group.as_mut() {
                g.ip_permissions = permissions(&r.rules);
            }
            self.commit(vec![put(group_key(&id), &r)])?;
            st.security_groups.insert(id, r);
            vpc
        };
        self.wake_dependents(&vpc).await;
        Ok(RevokeSecurityGroupIngressResponse { r#return: true })
    }
}

#[cfg(test)]
mod tests;
