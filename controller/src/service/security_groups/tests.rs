//! Security groups: EC2's rules and errors, the default group of every cluster, a task's
//! ingress with source groups resolved to member addresses, and the instances woken.

use super::super::test_support::controller;
use super::super::*;
use super::*;
use crate::store::memory::MemoryStore;
use berth_proto::v1::*;

async fn cluster(c: &Controller, name: &str) {
    c.create_cluster(CreateClusterRequest {
        cluster_name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

async fn create(c: &Controller, vpc: Option<&str>, name: &str) -> Result<String, EcsError> {
    c.create_security_group(CreateSecurityGroupRequest {
        group_name: name.into(),
        description: format!("{name} group"),
        vpc_id: vpc.map(str::to_string),
    })
    .await
    .map(|r| r.group_id)
}

fn code_of(e: &EcsError) -> &'static str {
    e.exception_name()
}

async fn describe(c: &Controller, ids: &[&str]) -> Vec<SecurityGroup> {
    c.describe_security_groups(DescribeSecurityGroupsRequest {
        group_ids: ids.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    })
    .await
    .unwrap()
    .security_groups
}

async fn default_id(c: &Controller, cluster: &str) -> String {
    let st = c.state.lock().await;
    group_of(st.group_by_name(cluster, DEFAULT_GROUP).unwrap())
        .group_id
        .clone()
}

fn tcp(group: &str, port: i32, cidr: &str) -> SecurityGroupIngressRequest {
    SecurityGroupIngressRequest {
        group_id: Some(group.into()),
        ip_protocol: Some("tcp".into()),
        from_port: Some(port),
        to_port: Some(port),
        cidr_ip: Some(cidr.into()),
        ..Default::default()
    }
}

fn perms(group: &str, json: &str) -> SecurityGroupIngressRequest {
    SecurityGroupIngressRequest {
        group_id: Some(group.into()),
        ip_permissions: serde_json::from_str(json).unwrap(),
        ..Default::default()
    }
}

/// A new cluster comes with its `default` group: all traffic from its own members, open egress.
#[tokio::test]
async fn each_cluster_gets_a_default_group_that_admits_its_members() {
    let c = controller();
    cluster(&c, "default").await;
    cluster(&c, "prod").await;
    let d = default_id(&c, "prod").await;
    assert!(d.starts_with("sg-") && d.len() == 20, "{d}");
    assert!(d[3..].chars().all(|x| x.is_ascii_hexdigit()));
    let g = &describe(&c, &[&d]).await[0];
    assert_eq!(g.group_name, "default");
    assert_eq!(g.vpc_id, "prod");
    assert_eq!(g.description, "default VPC security group");
    assert_eq!(g.ip_permissions.len(), 1);
    assert_eq!(g.ip_permissions[0].ip_protocol, "-1");
    assert_eq!(
        g.ip_permissions[0].user_id_group_pairs[0]
            .group_id
            .as_deref(),
        Some(d.as_str())
    );
    assert_eq!(g.ip_permissions_egress[0].ip_ranges[0].cidr_ip, "0.0.0.0/0");
    // Creating the cluster again keeps the one group.
    cluster(&c, "prod").await;
    assert_eq!(default_id(&c, "prod").await, d);
    let all = c
        .describe_security_groups(Default::default())
        .await
        .unwrap()
        .security_groups;
    assert_eq!(all.len(), 2);
}

/// A cluster stored before security groups existed gets its default group when the
/// controller loads, committed (a second load finds the same one).
#[tokio::test]
async fn a_cluster_that_predates_groups_gets_its_default_at_load() {
    let store: Arc<dyn Store> = Arc::new(MemoryStore::default());
    let c = Cluster {
        cluster_arn: berth_proto::arn::cluster("old"),
        cluster_name: "old".into(),
        status: "ACTIVE".into(),
        ..Default::default()
    };
    store
        .commit(vec![put(format!("{CLUSTER_PREFIX}old"), &c)])
        .unwrap();
    let first = Controller::load(store.clone(), Arc::new(Fleet::default())).unwrap();
    let id = default_id(&first, "old").await;
    let again = Controller::load(store, Arc::new(Fleet::default())).unwrap();
    assert_eq!(default_id(&again, "old").await, id);
    assert_eq!(again.state.lock().await.security_groups.len(), 1);
}

/// CreateSecurityGroup's rules, each refused with EC2's error and nothing made.
#[tokio::test]
async fn create_follows_ec2s_rules() {
    let c = controller();
    // No default cluster: no default VPC.
    let e = create(&c, None, "web").await.unwrap_err();
    assert_eq!(code_of(&e), "VPCIdNotSpecified");
    cluster(&c, "default").await;
    cluster(&c, "prod").await;
    let web = create(&c, None, "web").await.unwrap();
    assert!(web.starts_with("sg-") && web.len() == 20);
    let g = &describe(&c, &[&web]).await[0];
    assert_eq!(g.vpc_id, "default");
    assert!(g.ip_permissions.is_empty());
    assert_eq!(g.ip_permissions_egress[0].ip_protocol, "-1");
    // The same name in another VPC is another group; in the same one, a duplicate.
    create(&c, Some("prod"), "web").await.unwrap();
    let e = create(&c, Some("prod"), "web").await.unwrap_err();
    assert_eq!(code_of(&e), "InvalidGroup.Duplicate");
    assert!(
        e.to_string()
            .contains("'web' already exists for VPC 'prod'"),
        "{e}"
    );
    let e = create(&c, Some("nope"), "web").await.unwrap_err();
    assert_eq!(code_of(&e), "InvalidVpcID.NotFound");
    assert!(e.to_string().contains("'nope'"), "{e}");
    for (name, code) in [
        ("sg-web", "InvalidParameterValue"),
        ("default", "InvalidParameterValue"),
        ("", "MissingParameter"),
        ("é", "InvalidParameterValue"),
    ] {
        let e = create(&c, None, name).await.unwrap_err();
        assert_eq!(code_of(&e), code, "{name}: {e}");
    }
    let long = "a".repeat(256);
    let e = create(&c, None, &long).await.unwrap_err();
    assert!(
        e.to_string().contains("Length exceeds maximum of 255"),
        "{e}"
    );
    c.create_security_group(CreateSecurityGroupRequest {
        group_name: "b".repeat(255),
        description: "d".repeat(255),
        vpc_id: None,
    })
    .await
    .unwrap();
    let e = c
        .create_security_group(CreateSecurityGroupRequest {
            group_name: "x".into(),
            description: String::new(),
            vpc_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "MissingParameter");
    let e = c
        .create_security_group(CreateSecurityGroupRequest {
            group_name: "x".into(),
            description: "d".repeat(256),
            vpc_id: None,
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidParameterValue");
    // 2 defaults, web twice, the 255-char one.
    assert_eq!(c.state.lock().await.security_groups.len(), 5);
}

/// DescribeSecurityGroups by ids, names (default VPC), filters and pages.
#[tokio::test]
async fn describe_by_ids_names_filters_and_pages() {
    let c = controller();
    cluster(&c, "default").await;
    cluster(&c, "prod").await;
    let web = create(&c, None, "web").await.unwrap();
    let db = create(&c, Some("prod"), "db").await.unwrap();
    let e = c
        .describe_security_groups(DescribeSecurityGroupsRequest {
            group_ids: vec![web.clone(), "sg-00000000000000000".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidGroup.NotFound");
    assert_eq!(
        e.to_string(),
        "The security group 'sg-00000000000000000' does not exist"
    );
    let e = c
        .describe_security_groups(DescribeSecurityGroupsRequest {
            group_ids: vec!["web".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidGroupId.Malformed");
    let names = |n: &[&str]| DescribeSecurityGroupsRequest {
        group_names: n.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let found = c.describe_security_groups(names(&["web"])).await.unwrap();
    assert_eq!(found.security_groups[0].group_id, web);
    // Names are looked up in the default VPC only.
    let e = c
        .describe_security_groups(names(&["db"]))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidGroup.NotFound");
    assert!(e.to_string().contains("default VPC"), "{e}");
    let filtered = |f: &[(&str, &[&str])]| DescribeSecurityGroupsRequest {
        filters: f
            .iter()
            .map(|(n, v)| Ec2Filter {
                name: n.to_string(),
                values: v.iter().map(|s| s.to_string()).collect(),
            })
            .collect(),
        ..Default::default()
    };
    let ids = |r: DescribeSecurityGroupsResponse| -> Vec<String> {
        r.security_groups.into_iter().map(|g| g.group_id).collect()
    };
    let prod_default = default_id(&c, "prod").await;
    let mut want = vec![db.clone(), prod_default.clone()];
    want.sort();
    assert_eq!(
        ids(c
            .describe_security_groups(filtered(&[("vpc-id", &["prod"])]))
            .await
            .unwrap()),
        want
    );
    assert_eq!(
        ids(c
            .describe_security_groups(filtered(&[("vpc-id", &["prod"]), ("group-name", &["d?"])]))
            .await
            .unwrap()),
        vec![db.clone()]
    );
    assert_eq!(
        ids(c
            .describe_security_groups(filtered(&[("description", &["web*"])]))
            .await
            .unwrap()),
        vec![web.clone()]
    );
    assert_eq!(
        ids(c
            .describe_security_groups(filtered(&[("group-id", &[web.as_str()])]))
            .await
            .unwrap()),
        vec![web.clone()]
    );
    let e = c
        .describe_security_groups(filtered(&[("owner-id", &["x"])]))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidParameterValue");
    // Pages of 5: 7 groups in all.
    for i in 0..3 {
        create(&c, None, &format!("g{i}")).await.unwrap();
    }
    let mut seen = Vec::new();
    let mut token = None;
    loop {
        let r = c
            .describe_security_groups(DescribeSecurityGroupsRequest {
                max_results: Some(5),
                next_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(r.security_groups.len() <= 5);
        seen.extend(r.security_groups.into_iter().map(|g| g.group_id));
        token = r.next_token;
        if token.is_none() {
            break;
        }
    }
    assert_eq!(seen.len(), 7);
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted, seen);
    for bad in [Some(4), Some(1001)] {
        let e = c
            .describe_security_groups(DescribeSecurityGroupsRequest {
                max_results: bad,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), "InvalidParameterValue");
    }
    let e = c
        .describe_security_groups(DescribeSecurityGroupsRequest {
            max_results: Some(5),
            group_ids: vec![web.clone()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidParameterCombination");
    let e = c
        .describe_security_groups(DescribeSecurityGroupsRequest {
            next_token: Some("garbage".into()),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidNextToken");
}

/// Authorize and Revoke: the shorthand and IpPermissions, EC2's checks, duplicates, rules that
/// do not exist, sgr- ids, and the IpPermissions view grouped by protocol and ports.
#[tokio::test]
async fn authorize_and_revoke_follow_ec2s_rules() {
    let c = controller();
    cluster(&c, "default").await;
    let web = create(&c, None, "web").await.unwrap();
    let lb = create(&c, None, "lb").await.unwrap();
    let r = c
        .authorize_security_group_ingress(tcp(&web, 80, "10.0.0.0/8"))
        .await
        .unwrap();
    assert!(r.r#return);
    assert_eq!(r.security_group_rules.len(), 1);
    let rule = &r.security_group_rules[0];
    assert!(rule.security_group_rule_id.starts_with("sgr-"));
    assert_eq!(rule.security_group_rule_id.len(), 21);
    assert_eq!(rule.group_id, web);
    assert_eq!(rule.cidr_ipv4.as_deref(), Some("10.0.0.0/8"));
    assert_eq!((rule.from_port, rule.to_port), (80, 80));
    let e = c
        .authorize_security_group_ingress(tcp(&web, 80, "10.0.0.0/8"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidPermission.Duplicate");
    assert!(
        e.to_string()
            .contains("peer: 10.0.0.0/8, TCP, from port: 80, to port: 80, ALLOW"),
        "{e}"
    );
    // IpPermissions: numbers for protocols, a CIDR and a source group (by id and by name).
    let r = c
        .authorize_security_group_ingress(perms(
            &web,
            r#"[{"IpProtocol":"6","FromPort":80,"ToPort":80,"IpRanges":[{"CidrIp":"192.168.1.0/24"}],
                 "UserIdGroupPairs":[{"GroupId":"LB"}]},
                {"IpProtocol":"17","FromPort":53,"ToPort":53,"UserIdGroupPairs":[{"GroupName":"lb"}]},
                {"IpProtocol":"icmp","FromPort":-1,"ToPort":-1,"IpRanges":[{"CidrIp":"0.0.0.0/0"}]}]"#
                .replace("LB", &lb)
                .as_str(),
        ))
        .await
        .unwrap();
    assert_eq!(r.security_group_rules.len(), 4);
    assert_eq!(
        r.security_group_rules[1].referenced_group_id.as_deref(),
        Some(lb.as_str())
    );
    assert_eq!(r.security_group_rules[2].ip_protocol, "udp");
    let g = &describe(&c, &[&web]).await[0];
    // tcp 80 carries both CIDRs and the group; udp 53; icmp.
    assert_eq!(g.ip_permissions.len(), 3, "{:?}", g.ip_permissions);
    let p80 = &g.ip_permissions[0];
    assert_eq!(
        (p80.ip_protocol.as_str(), p80.from_port, p80.to_port),
        ("tcp", Some(80), Some(80))
    );
    assert_eq!(p80.ip_ranges.len(), 2);
    assert_eq!(
        p80.user_id_group_pairs[0].group_id.as_deref(),
        Some(lb.as_str())
    );
    // Bad input is refused by name; nothing changes.
    for (req, code, words) in [
        (
            perms(
                &web,
                r#"[{"IpProtocol":"gre","IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "gre",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"tcp","FromPort":1,"ToPort":70000,"IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "70000",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"tcp","FromPort":90,"ToPort":80,"IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "greater",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"tcp","IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "both from and to",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"icmp","FromPort":300,"ToPort":-1,"IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "ICMP type",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"icmp","FromPort":-1,"ToPort":3,"IpRanges":[{"CidrIp":"1.0.0.0/8"}]}]"#,
            ),
            "InvalidParameterValue",
            "ICMP code",
        ),
        (
            perms(&web, r#"[{"IpProtocol":"tcp","FromPort":1,"ToPort":2}]"#),
            "MissingParameter",
            "IpRanges",
        ),
        (
            perms(
                &web,
                r#"[{"IpProtocol":"-1","UserIdGroupPairs":[{"GroupId":"sg-00000000000000000"}]}]"#,
            ),
            "InvalidGroup.NotFound",
            "sg-00000000000000000",
        ),
        (
            tcp(&web, 22, "10.0.0.1/8"),
            "InvalidParameterValue",
            "10.0.0.1/8",
        ),
        (
            tcp(&web, 22, "10.0.0/8"),
            "InvalidParameterValue",
            "10.0.0/8",
        ),
        (
            tcp(&web, 22, "10.0.0.0/33"),
            "InvalidParameterValue",
            "10.0.0.0/33",
        ),
        (
            tcp(&web, 22, "10.0.0.0"),
            "InvalidParameterValue",
            "10.0.0.0",
        ),
        (
            tcp("sg-00000000000000000", 22, "10.0.0.0/8"),
            "InvalidGroup.NotFound",
            "sg-00000000000000000",
        ),
        (
            SecurityGroupIngressRequest {
                group_id: Some(web.clone()),
                ..Default::default()
            },
            "MissingParameter",
            "IpPermissions",
        ),
        (
            SecurityGroupIngressRequest {
                ip_protocol: Some("tcp".into()),
                ..tcp(&web, 1, "1.0.0.0/8")
            }
            .clone_with_perms(),
            "InvalidParameterCombination",
            "IpPermissions",
        ),
        (
            SecurityGroupIngressRequest {
                source_security_group_name: Some("lb".into()),
                ..tcp(&web, 1, "1.0.0.0/8")
            },
            "InvalidParameterCombination",
            "CidrIp",
        ),
        (
            SecurityGroupIngressRequest {
                group_id: None,
                ..tcp(&web, 1, "1.0.0.0/8")
            },
            "MissingParameter",
            "groupId",
        ),
    ] {
        let e = c.authorize_security_group_ingress(req).await.unwrap_err();
        assert_eq!(code_of(&e), code, "{e}");
        assert!(e.to_string().contains(words), "{words}: {e}");
    }
    assert_eq!(describe(&c, &[&web]).await[0], *g);
    // Shorthand by group name with a source group name; -1 has no ports.
    c.authorize_security_group_ingress(SecurityGroupIngressRequest {
        group_name: Some("web".into()),
        ip_protocol: Some("-1".into()),
        source_security_group_name: Some("lb".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let g = &describe(&c, &[&web]).await[0];
    let all = g
        .ip_permissions
        .iter()
        .find(|p| p.ip_protocol == "-1")
        .unwrap();
    assert_eq!((all.from_port, all.to_port), (None, None));
    // Revoke: a rule that does not exist, then each form.
    let e = c
        .revoke_security_group_ingress(tcp(&web, 81, "10.0.0.0/8"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidPermission.NotFound");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(
        c.revoke_security_group_ingress(tcp(&web, 80, "10.0.0.0/8"))
            .await
            .unwrap()
            .r#return
    );
    c.revoke_security_group_ingress(perms(
        &web,
        r#"[{"IpProtocol":"tcp","FromPort":80,"ToPort":80,"IpRanges":[{"CidrIp":"192.168.1.0/24"}],
             "UserIdGroupPairs":[{"GroupId":"LB"}]},
            {"IpProtocol":"udp","FromPort":53,"ToPort":53,"UserIdGroupPairs":[{"GroupName":"lb"}]},
            {"IpProtocol":"1","FromPort":-1,"ToPort":-1,"IpRanges":[{"CidrIp":"0.0.0.0/0"}]},
            {"IpProtocol":"-1","UserIdGroupPairs":[{"GroupId":"LB"}]}]"#
            .replace("LB", &lb)
            .as_str(),
    ))
    .await
    .unwrap();
    assert!(describe(&c, &[&web]).await[0].ip_permissions.is_empty());
    // A revoke of several where one does not exist removes none.
    c.authorize_security_group_ingress(tcp(&web, 22, "10.0.0.0/8"))
        .await
        .unwrap();
    let e = c
        .revoke_security_group_ingress(perms(
            &web,
            r#"[{"IpProtocol":"tcp","FromPort":22,"ToPort":22,"IpRanges":[{"CidrIp":"10.0.0.0/8"},{"CidrIp":"11.0.0.0/8"}]}]"#,
        ))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidPermission.NotFound");
    assert_eq!(describe(&c, &[&web]).await[0].ip_permissions.len(), 1);
}

trait WithPerms {
    fn clone_with_perms(self) -> Self;
}
impl WithPerms for SecurityGroupIngressRequest {
    /// The request with IpPermissions beside its shorthand.
    fn clone_with_perms(mut self) -> Self {
        self.ip_permissions = vec![IpPermission {
            ip_protocol: "tcp".into(),
            ..Default::default()
        }];
        self
    }
}

/// A task (not STOPPED) of `cluster` on `instance`, in `groups`, with `address`.
fn member(
    st: &mut State,
    cluster: &str,
    task: &str,
    instance: &str,
    status: &str,
    groups: &[&str],
    address: Option<&str>,
) {
    st.put_task(
        task.into(),
        Task {
            task_arn: berth_proto::arn::task(cluster, task),
            cluster_arn: berth_proto::arn::cluster(cluster),
            container_instance_arn: Some(berth_proto::arn::container_instance(cluster, instance)),
            last_status: status.into(),
            desired_status: "RUNNING".into(),
            ..Default::default()
        },
    );
    st.task_networks.insert(
        task.into(),
        TaskNetworkRecord {
            task_arn: berth_proto::arn::task(cluster, task),
            subnet: "subnet-local".into(),
            security_groups: groups.iter().map(|s| s.to_string()).collect(),
            assign_public_ip: false,
            private_ipv4_address: address.map(str::to_string),
        },
    );
}

fn rule(p: &str, from: i32, to: i32, cidr: &str) -> IngressRule {
    IngressRule {
        protocol: p.into(),
        from_port: from,
        to_port: to,
        cidr: cidr.into(),
    }
}

/// A task's ingress: the union of its groups' rules, source groups expanded to the /32 of
/// every member with an address that is not STOPPED, sorted, without duplicates.
#[tokio::test]
async fn task_ingress_expands_source_groups_to_member_addresses() {
    let c = controller();
    cluster(&c, "default").await;
    let web = create(&c, None, "web").await.unwrap();
    let lb = create(&c, None, "lb").await.unwrap();
    let dflt = default_id(&c, "default").await;
    c.authorize_security_group_ingress(perms(
        &web,
        r#"[{"IpProtocol":"tcp","FromPort":8080,"ToPort":8081,"UserIdGroupPairs":[{"GroupId":"LB"}],
             "IpRanges":[{"CidrIp":"10.0.0.0/8"}]},
            {"IpProtocol":"udp","FromPort":53,"ToPort":53,"IpRanges":[{"CidrIp":"10.0.0.0/8"}]},
            {"IpProtocol":"icmp","FromPort":8,"ToPort":0,"IpRanges":[{"CidrIp":"0.0.0.0/0"}]}]"#
            .replace("LB", &lb)
            .as_str(),
    ))
    .await
    .unwrap();
    let mut st = c.state.lock().await;
    member(
        &mut st,
        "default",
        "t-web",
        "i1",
        "RUNNING",
        &[&web, &dflt],
        Some("172.30.0.2"),
    );
    member(
        &mut st,
        "default",
        "t-lb1",
        "i1",
        "RUNNING",
        &[&lb],
        Some("172.30.0.3"),
    );
    member(
        &mut st,
        "default",
        "t-lb2",
        "i2",
        "PENDING",
        &[&lb, &dflt],
        Some("172.30.0.4"),
    );
    member(
        &mut st,
        "default",
        "t-lb3",
        "i2",
        "PROVISIONING",
        &[&lb],
        None,
    );
    member(
        &mut st,
        "default",
        "t-lb4",
        "i3",
        "STOPPED",
        &[&lb],
        Some("172.30.0.5"),
    );
    let net = st.task_networks["t-web"].clone();
    let got = st.task_ingress(&net);
    assert_eq!(
        got,
        vec![
            rule("all", 0, 65535, "172.30.0.2/32"),
            rule("all", 0, 65535, "172.30.0.4/32"),
            rule("icmp", 0, 65535, "0.0.0.0/0"),
            rule("tcp", 8080, 8081, "10.0.0.0/8"),
            rule("tcp", 8080, 8081, "172.30.0.3/32"),
            rule("tcp", 8080, 8081, "172.30.0.4/32"),
            rule("udp", 53, 53, "10.0.0.0/8"),
        ]
    );
    // The same answer every time (deterministic), and a task with no groups has none.
    assert_eq!(st.task_ingress(&net), got);
    let mut none = net.clone();
    none.security_groups.clear();
    assert!(st.task_ingress(&none).is_empty());
    // The address an agent reported in the ENI attachment counts too (a bridge subnet's: from
    // a task on the same host).
    let mut t = st.tasks["t-lb3"].clone();
    t.container_instance_arn = Some(berth_proto::arn::container_instance("default", "i1"));
    t.attachments.push(Attachment {
        r#type: "ElasticNetworkInterface".into(),
        details: vec![KeyValuePair {
            name: "privateIPv4Address".into(),
            value: "172.30.0.9".into(),
        }],
        ..Default::default()
    });
    st.put_task("t-lb3".into(), t);
    assert!(st
        .task_ingress(&net)
        .contains(&rule("tcp", 8080, 8081, "172.30.0.9/32")));
}

/// RunTask's groups: none → the cluster's default; ids checked in the cluster (ECS's
/// message), duplicates collapsed, at most 5.
#[tokio::test]
async fn resolve_security_groups_checks_the_cluster() {
    let c = controller();
    cluster(&c, "default").await;
    cluster(&c, "prod").await;
    let web = create(&c, None, "web").await.unwrap();
    let db = create(&c, Some("prod"), "db").await.unwrap();
    let st = c.state.lock().await;
    let dflt = group_of(st.group_by_name("default", "default").unwrap())
        .group_id
        .clone();
    assert_eq!(
        st.resolve_security_groups("default", &[]).unwrap(),
        vec![dflt.clone()]
    );
    assert_eq!(
        st.resolve_security_groups("default", &[web.clone(), dflt.clone(), web.clone()])
            .unwrap(),
        vec![web.clone(), dflt.clone()]
    );
    let e = st
        .resolve_security_groups("default", std::slice::from_ref(&db))
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidParameterException");
    assert_eq!(
        e.to_string(),
        format!("Error retrieving security group information for [{db}]: The security group '{db}' does not exist")
    );
    let e = st
        .resolve_security_groups("default", &["sg-00000000000000000".into()])
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("'sg-00000000000000000' does not exist"),
        "{e}"
    );
    drop(st);
    let mut six = Vec::new();
    for i in 0..6 {
        six.push(create(&c, None, &format!("g{i}")).await.unwrap());
    }
    let st = c.state.lock().await;
    assert_eq!(
        st.resolve_security_groups("default", &six[..5])
            .unwrap()
            .len(),
        5
    );
    let e = st.resolve_security_groups("default", &six).unwrap_err();
    assert!(e.to_string().contains("at most 5"), "{e}");
    let e = st.resolve_security_groups("nope", &[]).unwrap_err();
    assert_eq!(code_of(&e), "InvalidParameterException");
}

/// The instances to wake: those running awsvpc tasks (not STOPPED) of the cluster.
#[tokio::test]
async fn dependents_are_the_instances_of_the_clusters_awsvpc_tasks() {
    let c = controller();
    cluster(&c, "default").await;
    cluster(&c, "prod").await;
    let mut st = c.state.lock().await;
    member(&mut st, "default", "a", "i2", "RUNNING", &[], None);
    member(&mut st, "default", "b", "i1", "PENDING", &[], None);
    member(&mut st, "default", "c", "i1", "RUNNING", &[], None);
    member(&mut st, "default", "d", "i3", "STOPPED", &[], None);
    member(&mut st, "prod", "e", "i4", "RUNNING", &[], None);
    // A task with no network record (bridge mode) does not count.
    st.put_task(
        "f".into(),
        Task {
            cluster_arn: berth_proto::arn::cluster("default"),
            container_instance_arn: Some(berth_proto::arn::container_instance("default", "i5")),
            last_status: "RUNNING".into(),
            ..Default::default()
        },
    );
    assert_eq!(
        st.security_group_dependents(&berth_proto::arn::cluster("default")),
        vec!["i1".to_string(), "i2".to_string()]
    );
    assert_eq!(
        st.security_group_dependents(&berth_proto::arn::cluster("prod")),
        vec!["i4".to_string()]
    );
}

/// Delete: by id or name; `default` cannot be; a group with a member task not STOPPED or named
/// by another group's rule cannot be; then it can.
#[tokio::test]
async fn delete_refuses_default_and_groups_in_use() {
    let c = controller();
    cluster(&c, "default").await;
    let web = create(&c, None, "web").await.unwrap();
    let lb = create(&c, None, "lb").await.unwrap();
    let dflt = default_id(&c, "default").await;
    let del = |id: Option<&str>, name: Option<&str>| DeleteSecurityGroupRequest {
        group_id: id.map(str::to_string),
        group_name: name.map(str::to_string),
    };
    let e = c
        .delete_security_group(del(Some(&dflt), None))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "CannotDelete");
    assert_eq!(
        e.to_string(),
        format!("the specified group: \"{dflt}\" name: \"default\" cannot be deleted by a user")
    );
    let e = c.delete_security_group(del(None, None)).await.unwrap_err();
    assert_eq!(code_of(&e), "MissingParameter");
    let e = c
        .delete_security_group(del(Some("sg-00000000000000000"), None))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "InvalidGroup.NotFound");
    // In use by a running task.
    member(
        &mut *c.state.lock().await,
        "default",
        "t1",
        "i1",
        "RUNNING",
        &[&web],
        None,
    );
    let e = c
        .delete_security_group(del(Some(&web), None))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "DependencyViolation");
    assert_eq!(
        e.to_string(),
        format!("resource {web} has a dependent object")
    );
    // A STOPPED member does not hold it; a rule of another group does.
    {
        let mut st = c.state.lock().await;
        let mut t = st.tasks["t1"].clone();
        t.last_status = "STOPPED".into();
        st.put_task("t1".into(), t);
    }
    c.authorize_security_group_ingress(SecurityGroupIngressRequest {
        group_id: Some(lb.clone()),
        ip_permissions: vec![IpPermission {
            ip_protocol: "-1".into(),
            user_id_group_pairs: vec![UserIdGroupPair {
                group_id: Some(web.clone()),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let e = c
        .delete_security_group(del(None, Some("web")))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), "DependencyViolation");
    // lb references only web: it goes; then web, by name.
    let r = c.delete_security_group(del(Some(&lb), None)).await.unwrap();
    assert!(r.r#return);
    assert_eq!(r.group_id, lb);
    c.delete_security_group(del(None, Some("web")))
        .await
        .unwrap();
    let left = c
        .describe_security_groups(Default::default())
        .await
        .unwrap();
    assert_eq!(left.security_groups.len(), 1);
    // Gone from the store too.
    let again = c.state.lock().await.security_groups.len();
    assert_eq!(again, 1);
    assert!(c
        .store
        .scan(SECURITY_GROUP_PREFIX)
        .unwrap()
        .iter()
        .all(|(k, _)| *k != group_key(&web)));
}

/// Authorize, Revoke and Delete wake the instances whose awsvpc tasks' rules may change.
#[tokio::test]
async fn rule_changes_wake_the_dependent_instances() {
    let c = controller();
    cluster(&c, "default").await;
    let web = create(&c, None, "web").await.unwrap();
    let gone = create(&c, None, "gone").await.unwrap();
    member(
        &mut *c.state.lock().await,
        "default",
        "t1",
        "i1",
        "RUNNING",
        &[&web],
        None,
    );
    let session = c.fleet().attach("i1");
    let woken = || async {
        tokio::time::timeout(
            std::time::Duration::from_secs(5),
            session.changed.notified(),
        )
        .await
        .is_ok()
    };
    c.authorize_security_group_ingress(tcp(&web, 80, "10.0.0.0/8"))
        .await
        .unwrap();
    assert!(woken().await, "authorize");
    c.revoke_security_group_ingress(tcp(&web, 80, "10.0.0.0/8"))
        .await
        .unwrap();
    assert!(woken().await, "revoke");
    c.delete_security_group(DeleteSecurityGroupRequest {
        group_id: Some(gone),
        group_name: None,
    })
    .await
    .unwrap();
    assert!(woken().await, "delete");
}

#[test]
fn glob_matches_ec2_wildcards() {
    assert!(glob("web*", "web-1"));
    assert!(glob("*", ""));
    assert!(glob("w?b", "web"));
    assert!(!glob("w?b", "weeb"));
    assert!(glob("*-1", "web-1"));
    assert!(!glob("web", "web-1"));
}

/// A member on a bridge subnet (its agent's address, reported in the ENI attachment) is admitted
/// only on its own host: another host's bridge subnet may hold the same address for another task.
#[tokio::test]
async fn bridge_subnet_members_are_admitted_only_on_their_own_host() {
    let c = controller();
    cluster(&c, "default").await;
    let web = create(&c, None, "web").await.unwrap();
    let lb = create(&c, None, "lb").await.unwrap();
    c.authorize_security_group_ingress(perms(
        &web,
        r#"[{"IpProtocol":"tcp","FromPort":80,"ToPort":80,"UserIdGroupPairs":[{"GroupId":"LB"}]}]"#
            .replace("LB", &lb)
            .as_str(),
    ))
    .await
    .unwrap();
    let mut st = c.state.lock().await;
    for (task, instance, groups, address) in [
        ("t-web", "i1", vec![web.as_str()], "172.30.0.2"),
        ("t-near", "i1", vec![lb.as_str()], "172.30.0.3"),
        ("t-far", "i2", vec![lb.as_str()], "172.30.0.4"),
    ] {
        member(&mut st, "default", task, instance, "RUNNING", &groups, None);
        let t = st.tasks.get_mut(task).unwrap();
        t.attachments.push(berth_proto::v1::Attachment {
            id: "a".into(),
            r#type: "ElasticNetworkInterface".into(),
            status: "ATTACHED".into(),
            details: vec![berth_proto::v1::KeyValuePair {
                name: "privateIPv4Address".into(),
                value: address.into(),
            }],
        });
    }
    let net = st.task_networks["t-web"].clone();
    assert_eq!(
        st.task_ingress(&net),
        vec![rule("tcp", 80, 80, "172.30.0.3/32")],
        "the member on another host's bridge subnet is left out"
    );
}
