//! `berth ec2`: security groups through the real binaries (controller only: no root, no
//! containerd, never skipped), as `aws ec2` takes and prints them.

use berth_tests::Cluster;
use serde_json::{json, Value};

fn fails(c: &Cluster, args: &[&str], code: i32) -> String {
    let out = c.berth_service("ec2", args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "berth ec2 {args:?}: {err}");
    err
}

fn group(c: &Cluster, id: &str) -> Value {
    let out = c.service_json("ec2", &["describe-security-groups", "--group-ids", id]);
    out["SecurityGroups"][0].clone()
}

#[test]
fn security_groups_through_the_cli() {
    let c = Cluster::controller_only("ec2");
    let vpc = c.name.clone();
    // The `default` cluster is the default VPC (group names resolve there).
    c.ok(&["create-cluster"]);

    let web = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "web servers",
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(web.starts_with("sg-") && web.len() == 20, "{web}");
    let lb = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "lb",
            "--description",
            "load balancers",
            "--vpc-id",
            "default",
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();
    let other = c.service_json(
        "ec2",
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "same name, other VPC",
            "--vpc-id",
            &vpc,
        ],
    )["GroupId"]
        .as_str()
        .unwrap()
        .to_string();

    // Each flag form: the simple flags, the shorthand and the JSON of --ip-permissions.
    let r = c.service_json(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "10.0.0.0/8",
        ],
    );
    assert_eq!(r["Return"], json!(true));
    let rule = &r["SecurityGroupRules"][0];
    assert!(rule["SecurityGroupRuleId"]
        .as_str()
        .unwrap()
        .starts_with("sgr-"));
    assert_eq!(rule["GroupId"], json!(web));
    assert_eq!(rule["CidrIpv4"], json!("10.0.0.0/8"));
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-name",
            "web",
            "--protocol",
            "udp",
            "--port",
            "5000-5010",
            "--source-group",
            "lb",
        ],
    );
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--ip-permissions",
            "IpProtocol=tcp,FromPort=443,ToPort=443,IpRanges=[{CidrIp=192.168.0.0/16}]",
        ],
    );
    let json_perm = format!(r#"[{{"IpProtocol":"-1","UserIdGroupPairs":[{{"GroupId":"{lb}"}}]}}]"#);
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--ip-permissions",
            &json_perm,
        ],
    );
    // The legacy scalar members of the API work too.
    c.ok_in(
        "ec2",
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--ip-protocol",
            "icmp",
            "--from-port",
            "-1",
            "--to-port",
            "-1",
            "--cidr-ip",
            "0.0.0.0/0",
        ],
    );

    // Describe prints EC2's PascalCase shape.
    let g = group(&c, &web);
    assert_eq!(g["GroupName"], json!("web"));
    assert_eq!(g["Description"], json!("web servers"));
    assert_eq!(g["VpcId"], json!("default"));
    assert_eq!(g["OwnerId"], json!("000000000000"));
    assert_eq!(
        g["IpPermissionsEgress"],
        json!([{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}], "UserIdGroupPairs": []}])
    );
    let perms = g["IpPermissions"].as_array().unwrap();
    assert_eq!(perms.len(), 5, "{g:#}");
    assert_eq!(
        perms[0],
        json!({"IpProtocol": "tcp", "FromPort": 80, "ToPort": 80,
               "IpRanges": [{"CidrIp": "10.0.0.0/8"}], "UserIdGroupPairs": []})
    );
    assert_eq!(
        perms[1],
        json!({"IpProtocol": "udp", "FromPort": 5000, "ToPort": 5010, "IpRanges": [],
               "UserIdGroupPairs": [{"GroupId": lb, "UserId": "000000000000"}]})
    );
    assert_eq!(perms[3]["IpProtocol"], json!("-1"));
    assert!(perms[3].get("FromPort").is_none());
    // --query and --output as the other services.
    let names = c.ok_in(
        "ec2",
        &[
            "describe-security-groups",
            "--filters",
            &format!("Name=vpc-id,Values={vpc}"),
            "--query",
            "SecurityGroups[].GroupName",
            "--output",
            "text",
        ],
    );
    let mut names: Vec<&str> = names.split_whitespace().collect();
    names.sort();
    assert_eq!(names, ["default", "web"]);
    let by_name = c.service_json(
        "ec2",
        &["describe-security-groups", "--group-names", "web", "lb"],
    );
    assert_eq!(by_name["SecurityGroups"].as_array().unwrap().len(), 2);

    // EC2's errors, as the aws CLI prints them.
    let err = fails(
        &c,
        &[
            "describe-security-groups",
            "--group-ids",
            "sg-00000000000000000",
        ],
        254,
    );
    assert!(
        err.contains("An error occurred (InvalidGroup.NotFound) when calling the DescribeSecurityGroups operation: The security group 'sg-00000000000000000' does not exist"),
        "{err}"
    );
    let err = fails(
        &c,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "10.0.0.0/8",
        ],
        254,
    );
    assert!(
        err.contains("An error occurred (InvalidPermission.Duplicate) when calling the AuthorizeSecurityGroupIngress operation: the specified rule \"peer: 10.0.0.0/8, TCP, from port: 80, to port: 80, ALLOW\" already exists"),
        "{err}"
    );
    let err = fails(
        &c,
        &[
            "create-security-group",
            "--group-name",
            "web",
            "--description",
            "again",
        ],
        254,
    );
    assert!(err.contains("(InvalidGroup.Duplicate)"), "{err}");
    let err = fails(
        &c,
        &[
            "create-security-group",
            "--group-name",
            "x",
            "--description",
            "d",
            "--vpc-id",
            "nope",
        ],
        254,
    );
    assert!(err.contains("(InvalidVpcID.NotFound)"), "{err}");
    let err = fails(&c, &["create-security-group", "--group-name", "x"], 252);
    assert!(err.contains("--description"), "{err}");
    let err = fails(
        &c,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--cidr",
            "10.0.0.1/8",
        ],
        254,
    );
    assert!(
        err.contains("(InvalidParameterValue)") && err.contains("10.0.0.1/8"),
        "{err}"
    );
    let err = fails(
        &c,
        &[
            "authorize-security-group-ingress",
            "--group-id",
            &web,
            "--protocol",
            "tcp",
            "--port",
            "22",
            "--ip-permissions",
            "IpProtocol=tcp",
        ],
        252,
    );
    assert!(err.contains("Mixing the --ip-permissions"), "{err}");
    let err = fails(&c, &["delete-security-group", "--group-id", &lb], 254);
    assert!(
        err.contains("An error occurred (DependencyViolation) when calling the DeleteSecurityGroup operation: resource"),
        "{err}"
    );
    let default_id = c.ok_in(
        "ec2",
        &[
            "describe-security-groups",
            "--group-names",
            "default",
            "--query",
            "SecurityGroups[0].GroupId",
            "--output",
            "text",
        ],
    );
    let err = fails(
        &c,
        &["delete-security-group", "--group-id", default_id.trim()],
        254,
    );
    assert!(err.contains("(CannotDelete)"), "{err}");

    // Revoke each form; one that does not exist is refused.
    for args in [
        vec!["--protocol", "tcp", "--port", "80", "--cidr", "10.0.0.0/8"],
        vec![
            "--protocol",
            "udp",
            "--port",
            "5000-5010",
            "--source-group",
            &lb,
        ],
        vec![
            "--ip-permissions",
            "IpProtocol=tcp,FromPort=443,ToPort=443,IpRanges=[{CidrIp=192.168.0.0/16}]",
        ],
        vec!["--ip-permissions", &json_perm],
        vec!["--protocol", "icmp", "--port", "-1", "--cidr", "0.0.0.0/0"],
    ] {
        let mut all = vec!["revoke-security-group-ingress", "--group-id", &web];
        all.extend(args);
        let r = c.service_json("ec2", &all);
        assert_eq!(r["Return"], json!(true), "{all:?}");
    }
    assert_eq!(group(&c, &web)["IpPermissions"], json!([]));
    let err = fails(
        &c,
        &[
            "revoke-security-group-ingress",
            "--group-id",
            &web,
            "--protocol",
            "tcp",
            "--port",
            "80",
            "--cidr",
            "10.0.0.0/8",
        ],
        254,
    );
    assert!(
        err.contains("An error occurred (InvalidPermission.NotFound) when calling the RevokeSecurityGroupIngress operation"),
        "{err}"
    );

    // Delete by id and by name; then they are gone.
    let r = c.service_json("ec2", &["delete-security-group", "--group-id", &lb]);
    assert_eq!(r["Return"], json!(true));
    c.ok_in("ec2", &["delete-security-group", "--group-name", "web"]);
    c.ok_in("ec2", &["delete-security-group", "--group-id", &other]);
    let err = fails(&c, &["describe-security-groups", "--group-ids", &web], 254);
    assert!(
        err.contains(&format!("The security group '{web}' does not exist")),
        "{err}"
    );
    let left = c.service_json("ec2", &["describe-security-groups"]);
    let left: Vec<&str> = left["SecurityGroups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["GroupName"].as_str().unwrap())
        .collect();
    assert_eq!(left, ["default", "default"]);
}
