//! `berth ec2`'s customisation of the aws CLI: authorize-security-group-ingress and
//! revoke-security-group-ingress take `--protocol`, `--port` (`N` or `N-M`), `--cidr` and
//! `--source-group` beside `--ip-permissions`, and build one IpPermissions entry from them
//! (aws's `customizations/ec2/secgroupsimplify`).

use super::CliError;
use clap::{Arg, ArgAction, Command};
use serde_json::{json, Map, Value};

/// The operations with the simple flags.
const SIMPLIFIED: &[&str] = &[
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
];

const FLAGS: &[(&str, &str)] = &[
    (
        "protocol",
        "tcp, udp, icmp or all (or a protocol number; -1 = all)",
    ),
    ("port", "A port or range N-M (ICMP: type-code; -1 = all)"),
    ("cidr", "The IPv4 CIDR traffic is allowed from"),
    (
        "source-group",
        "The group (sg-… id or name) whose members traffic is allowed from",
    ),
];

/// `sub` with the simple flags when `api` takes them.
pub fn args(api: &str, mut sub: Command) -> Command {
    if SIMPLIFIED.contains(&api) {
        for (name, help) in FLAGS {
            sub = sub.arg(
                Arg::new(format!("simple-{name}"))
                    .long(*name)
                    .action(ArgAction::Set)
                    .allow_negative_numbers(true)
                    .value_name("VALUE")
                    .help(*help),
            );
        }
    }
    sub
}

/// A `--port` value: `N`, `N-M` or `-1`.
fn port_range(text: &str) -> Result<(i64, i64), CliError> {
    let bad = || {
        CliError::Usage(format!(
            "argument --port: port parameter should be of the form <from[-to]> (e.g. 22 or 22-25), got '{text}'"
        ))
    };
    let int = |s: &str| s.trim().parse::<i64>().map_err(|_| bad());
    if text.trim() == "-1" {
        return Ok((-1, -1));
    }
    // An ICMP type-code may be "8--1" (type 8, any code).
    match text.trim().split_once('-') {
        None => int(text).map(|p| (p, p)),
        Some((a, b)) => Ok((int(a)?, int(b)?)),
    }
}

/// Folds the simple flags of `api`, if given, into `request` as one IpPermissions entry.
pub fn simplify(api: &str, m: &clap::ArgMatches, request: &mut Value) -> Result<(), CliError> {
    if !SIMPLIFIED.contains(&api) {
        return Ok(());
    }
    let get = |name: &str| m.get_one::<String>(&format!("simple-{name}")).cloned();
    let (protocol, port, cidr, source) = (
        get("protocol"),
        get("port"),
        get("cidr"),
        get("source-group"),
    );
    if protocol.is_none() && port.is_none() && cidr.is_none() && source.is_none() {
        return Ok(());
    }
    let Some(req) = request.as_object_mut() else {
        return Ok(());
    };
    if req.contains_key("IpPermissions") {
        return Err(CliError::Usage(
            "Mixing the --ip-permissions option with the simple, scalar options (--protocol, --port, --cidr, --source-group) is not allowed.".into(),
        ));
    }
    let Some(protocol) = protocol else {
        return Err(CliError::Usage(
            "the following arguments are required: --protocol (with --port, --cidr or --source-group)".into(),
        ));
    };
    let protocol = if protocol.eq_ignore_ascii_case("all") {
        "-1".to_string()
    } else {
        protocol
    };
    let mut perm = Map::new();
    perm.insert("IpProtocol".into(), json!(protocol));
    if let Some(p) = port {
        let (from, to) = port_range(&p)?;
        perm.insert("FromPort".into(), json!(from));
        perm.insert("ToPort".into(), json!(to));
    }
    if let Some(c) = cidr {
        perm.insert("IpRanges".into(), json!([{ "CidrIp": c }]));
    }
    if let Some(g) = source {
        let key = if g.starts_with("sg-") {
            "GroupId"
        } else {
            "GroupName"
        };
        perm.insert("UserIdGroupPairs".into(), json!([{ key: g }]));
    }
    req.insert(
        "IpPermissions".into(),
        Value::Array(vec![Value::Object(perm)]),
    );
    Ok(())
}

/// DescribeSecurityGroups' output as aws prints it: EC2 answers empty lists where protobuf's
/// JSON leaves them out (`"IpPermissions": []`, and `IpRanges` / `UserIdGroupPairs` of each
/// permission).
pub fn render_security_groups(bytes: &[u8]) -> Result<Value, String> {
    let mut v = super::table::render::<berth_proto::v1::DescribeSecurityGroupsResponse>(bytes)?;
    let lists = |o: &mut Map<String, Value>, keys: &[&str]| {
        for k in keys {
            o.entry(k.to_string()).or_insert_with(|| json!([]));
        }
    };
    if let Some(groups) = v.get_mut("SecurityGroups").and_then(Value::as_array_mut) {
        for g in groups.iter_mut().filter_map(Value::as_object_mut) {
            lists(g, &["IpPermissions", "IpPermissionsEgress"]);
            for key in ["IpPermissions", "IpPermissionsEgress"] {
                if let Some(perms) = g.get_mut(key).and_then(Value::as_array_mut) {
                    for p in perms.iter_mut().filter_map(Value::as_object_mut) {
                        lists(p, &["IpRanges", "UserIdGroupPairs"]);
                    }
                }
            }
        }
    } else if let Some(o) = v.as_object_mut() {
        lists(o, &["SecurityGroups"]);
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn simplified(args: &[&str]) -> Result<Value, CliError> {
        let cmd = args_cmd();
        let m = cmd
            .try_get_matches_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap();
        let mut v = json!({});
        simplify("AuthorizeSecurityGroupIngress", &m, &mut v)?;
        Ok(v)
    }

    fn args_cmd() -> Command {
        args("AuthorizeSecurityGroupIngress", Command::new("x"))
    }

    #[test]
    fn simple_flags_make_one_ip_permission() {
        assert_eq!(
            simplified(&["--protocol", "tcp", "--port", "22", "--cidr", "10.0.0.0/8"]).unwrap(),
            json!({"IpPermissions":[{"IpProtocol":"tcp","FromPort":22,"ToPort":22,
                "IpRanges":[{"CidrIp":"10.0.0.0/8"}]}]})
        );
        assert_eq!(
            simplified(&[
                "--protocol",
                "udp",
                "--port",
                "1000-2000",
                "--source-group",
                "sg-0123"
            ])
            .unwrap(),
            json!({"IpPermissions":[{"IpProtocol":"udp","FromPort":1000,"ToPort":2000,
                "UserIdGroupPairs":[{"GroupId":"sg-0123"}]}]})
        );
        assert_eq!(
            simplified(&["--protocol", "all", "--source-group", "web"]).unwrap(),
            json!({"IpPermissions":[{"IpProtocol":"-1","UserIdGroupPairs":[{"GroupName":"web"}]}]})
        );
        assert_eq!(
            simplified(&["--protocol", "icmp", "--port", "-1", "--cidr", "0.0.0.0/0"]).unwrap()
                ["IpPermissions"][0]["FromPort"],
            json!(-1)
        );
        assert_eq!(simplified(&[]).unwrap(), json!({}));
    }

    #[test]
    fn bad_simple_flags_are_refused_by_name() {
        let e = simplified(&["--port", "22", "--cidr", "10.0.0.0/8"]).unwrap_err();
        assert!(e.to_string().contains("--protocol"), "{e}");
        let e = simplified(&["--protocol", "tcp", "--port", "x-y"]).unwrap_err();
        assert!(e.to_string().contains("argument --port"), "{e}");
        let m = args_cmd()
            .try_get_matches_from(["x", "--protocol", "tcp"])
            .unwrap();
        let mut v = json!({"IpPermissions": []});
        let e = simplify("AuthorizeSecurityGroupIngress", &m, &mut v).unwrap_err();
        assert!(e.to_string().contains("Mixing the --ip-permissions"), "{e}");
    }
}
