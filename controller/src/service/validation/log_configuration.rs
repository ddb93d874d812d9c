//! `containerDefinitions[].logConfiguration` at registration (issue 10): the drivers Berth runs
//! (awslogs, json-file, syslog, none) with the options Docker and ECS accept for each, checked
//! by value; any other driver or option is refused naming it (ClientException), so a definition
//! never registers with a log setting the agent would have to ignore.

use crate::error::EcsError;
use berth_proto::v1::LogConfiguration;

/// The drivers Berth runs.
pub const LOG_DRIVERS: &[&str] = &["awslogs", "json-file", "syslog", "none"];

/// syslog's facilities, as Docker names them.
const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];

fn refuse(msg: String) -> EcsError {
    EcsError::Client(msg)
}

/// A Docker size: digits with an optional unit (b, k, m, g; kb, mb, gb), e.g. `10m`.
fn is_size(v: &str) -> bool {
    let lower = v.to_ascii_lowercase();
    let digits = lower.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &lower[digits.len()..];
    !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && [
            "", "b", "k", "m", "g", "kb", "mb", "gb", "kib", "mib", "gib",
        ]
        .contains(&unit)
        && digits.parse::<u64>().is_ok_and(|n| n > 0)
}

fn is_bool(v: &str) -> bool {
    matches!(v, "true" | "false")
}

/// Checks container `i`'s logConfiguration.
pub fn validate(i: usize, container: &str, l: &LogConfiguration) -> Result<(), EcsError> {
    let at = format!("containerDefinitions[{i}].logConfiguration");
    let driver = l.log_driver.as_str();
    // The options are the agent's own list (berth_proto::log_config), so nothing registers
    // that the agent would not apply.
    let own: &[&str] = match berth_proto::log_config::options_of(driver) {
        Some(own) => own,
        None if driver.is_empty() => {
            return Err(refuse(format!(
                "{at}.logDriver: is required for container '{container}'; one of {}",
                LOG_DRIVERS.join(", ")
            )))
        }
        None => {
            return Err(refuse(format!(
                "{at}.logDriver: '{driver}' of container '{container}' is not supported by Berth; use one of {}",
                LOG_DRIVERS.join(", ")
            )))
        }
    };
    let accepted = |name: &str| own.contains(&name);
    let list = || own.join(", ");
    let mut unknown: Vec<&str> = l
        .options
        .keys()
        .map(String::as_str)
        .filter(|k| !accepted(k))
        .collect();
    unknown.sort_unstable();
    if !unknown.is_empty() {
        let what = if driver == "none" {
            "the none log driver takes no options".to_string()
        } else {
            format!("the {driver} log driver's options are {}", list())
        };
        return Err(refuse(format!(
            "{at}.options: {} of container '{container}' {} not an option of the {driver} log driver; {what}",
            unknown.iter().map(|k| format!("'{k}'")).collect::<Vec<_>>().join(", "),
            if unknown.len() == 1 { "is" } else { "are" },
        )));
    }
    // A secret option is an option's value read from a secret: it must name an option of the
    // driver, and not one also given in options.
    for (j, s) in l.secret_options.iter().enumerate() {
        if !accepted(&s.name) {
            return Err(refuse(format!(
                "{at}.secretOptions[{j}].name: '{}' of container '{container}' is not an option of the {driver} log driver{}",
                s.name,
                if driver == "none" { String::new() } else { format!(" ({})", list()) }
            )));
        }
        if l.options.contains_key(&s.name) {
            return Err(refuse(format!(
                "{at}.secretOptions[{j}].name: '{}' of container '{container}' is also given in options",
                s.name
            )));
        }
    }
    let opt = |k: &str| l.options.get(k).map(String::as_str);
    let bad = |k: &str, v: &str, rule: &str| {
        refuse(format!(
            "{at}.options.{k}: '{v}' of container '{container}' {rule}"
        ))
    };
    match opt("mode") {
        None | Some("blocking") | Some("non-blocking") => {}
        Some(v) => return Err(bad("mode", v, "is not one of blocking, non-blocking")),
    }
    if let Some(v) = opt("max-buffer-size") {
        if opt("mode") != Some("non-blocking") {
            return Err(bad(
                "max-buffer-size",
                v,
                "needs mode non-blocking (the buffer holds what a blocking container would wait for)",
            ));
        }
        if !is_size(v) {
            return Err(bad(
                "max-buffer-size",
                v,
                "is not a size (digits and a unit: 4m, 512k)",
            ));
        }
    }
    match driver {
        "awslogs" => {
            let secret = |k: &str| l.secret_options.iter().any(|s| s.name == k);
            match opt("awslogs-group") {
                Some(g) => crate::logs::check_log_group_name(g).map_err(|_| {
                    bad(
                        "awslogs-group",
                        g,
                        "is not a log group name (1 to 512 of A-Z a-z 0-9 . - _ / #)",
                    )
                })?,
                None if secret("awslogs-group") => {}
                None => {
                    return Err(refuse(format!(
                        "{at}.options: awslogs-group is required by the awslogs log driver (container '{container}')"
                    )))
                }
            }
            if let Some(v) = opt("awslogs-create-group") {
                if !is_bool(v) {
                    return Err(bad("awslogs-create-group", v, "is not true or false"));
                }
            }
            if let Some(p) = opt("awslogs-stream-prefix") {
                if p.is_empty() || p.contains([':', '*']) {
                    return Err(bad(
                        "awslogs-stream-prefix",
                        p,
                        "is not a log stream name prefix (not empty, no ':' or '*')",
                    ));
                }
            }
            if opt("awslogs-datetime-format").is_some()
                && opt("awslogs-multiline-pattern").is_some()
            {
                return Err(refuse(format!(
                    "{at}.options: awslogs-datetime-format and awslogs-multiline-pattern of container '{container}' cannot both be set (each says where an event starts)"
                )));
            }
            if let Some(v) = opt("awslogs-datetime-format") {
                if v.is_empty() {
                    return Err(bad("awslogs-datetime-format", v, "is empty"));
                }
            }
            if let Some(v) = opt("awslogs-multiline-pattern") {
                if let Err(e) = regex::Regex::new(v) {
                    return Err(bad(
                        "awslogs-multiline-pattern",
                        v,
                        &format!("is not a regular expression: {e}"),
                    ));
                }
            }
        }
        "json-file" => {
            if let Some(v) = opt("max-size") {
                if v != "-1" && !is_size(v) {
                    return Err(bad(
                        "max-size",
                        v,
                        "is not a size (digits and a unit: 10m, 512k; -1: unlimited)",
                    ));
                }
            }
            if let Some(v) = opt("max-file") {
                if !v.parse::<u32>().is_ok_and(|n| n >= 1) {
                    return Err(bad("max-file", v, "is not a number of files of at least 1"));
                }
                if opt("max-size").is_none_or(|s| s == "-1") && v != "1" {
                    return Err(bad(
                        "max-file",
                        v,
                        "needs max-size (files rotate when they reach it)",
                    ));
                }
            }
        }
        "syslog" => {
            if let Some(v) = opt("syslog-address") {
                check_syslog_address(v).map_err(|why| bad("syslog-address", v, &why))?;
            }
            if let Some(v) = opt("syslog-facility") {
                if !FACILITIES.contains(&v) {
                    return Err(bad(
                        "syslog-facility",
                        v,
                        &format!("is not one of {}", FACILITIES.join(", ")),
                    ));
                }
            }
            if let Some(v) = opt("syslog-format") {
                if !["rfc5424", "rfc5424micro", "rfc3164"].contains(&v) {
                    return Err(bad(
                        "syslog-format",
                        v,
                        "is not one of rfc5424, rfc5424micro, rfc3164",
                    ));
                }
            }
            for k in ["labels-regex", "env-regex"] {
                if let Some(v) = opt(k) {
                    if let Err(e) = regex::Regex::new(v) {
                        return Err(bad(k, v, &format!("is not a regular expression: {e}")));
                    }
                }
            }
        }
        _ => {}
    }
    // What registers is what the agent applies: the agent's own parser must take it too (the
    // checks above name the option and the rule first; this catches the rest, such as an
    // awslogs-datetime-format that is no regular expression once its directives are replaced).
    if l.secret_options.is_empty() {
        berth_proto::log_config::parse(Some(l))
            .map_err(|e| refuse(format!("{at}: {e} (container '{container}')")))?;
    }
    Ok(())
}

/// syslog-address: `udp://host:port`, `tcp://host:port` (port optional: 514) or
/// `unix:///path`.
fn check_syslog_address(v: &str) -> Result<(), String> {
    let Some((scheme, rest)) = v.split_once("://") else {
        return Err("is not a URL (udp://host:port, tcp://host:port or unix:///path)".into());
    };
    match scheme {
        "udp" | "tcp" => {
            let host = match rest.rsplit_once(':') {
                Some((h, port)) if !h.ends_with(':') || h.starts_with('[') => {
                    if !port.parse::<u16>().is_ok_and(|p| p > 0) {
                        return Err(format!("has no valid port ('{port}')"));
                    }
                    h
                }
                _ => rest,
            };
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || host.contains('/') {
                return Err("names no host".into());
            }
            Ok(())
        }
        "unix" => {
            if rest.starts_with('/') {
                Ok(())
            } else {
                Err("is not an absolute socket path (unix:///run/syslog.sock)".into())
            }
        }
        other => Err(format!(
            "uses '{other}', which Berth's syslog driver does not speak; use udp://, tcp:// or unix://"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(json: &str) -> Result<(), EcsError> {
        let l: LogConfiguration = serde_json::from_str(json).unwrap();
        validate(0, "app", &l)
    }

    fn refused(json: &str, needle: &str) {
        let e = check(json).expect_err(json);
        assert_eq!(e.exception_name(), "ClientException", "{json}");
        let m = e.to_string();
        assert!(
            m.starts_with("containerDefinitions[0].logConfiguration") && m.contains(needle),
            "{json}: {m}"
        );
    }

    #[test]
    fn the_four_drivers_with_their_options_register() {
        for ok in [
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"/ecs/app","awslogs-region":"us-east-1","awslogs-stream-prefix":"web","awslogs-create-group":"true","awslogs-multiline-pattern":"^\\d{4}-","mode":"non-blocking","max-buffer-size":"25m"}}"#,
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-datetime-format":"%Y-%m-%d","mode":"blocking"}}"#,
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-datetime-format":"\\[%b %d, %Y %H:%M:%S%L\\]"}}"#,
            r#"{"logDriver":"json-file","options":{"max-size":"10m","max-file":"3","mode":"non-blocking","max-buffer-size":"1m"}}"#,
            r#"{"logDriver":"json-file"}"#,
            r#"{"logDriver":"syslog","options":{"syslog-address":"udp://127.0.0.1:514","tag":"app","syslog-facility":"local0","syslog-format":"rfc5424"}}"#,
            r#"{"logDriver":"syslog","options":{"syslog-address":"tcp://logs.internal"}}"#,
            r#"{"logDriver":"syslog","options":{"syslog-address":"unix:///dev/log"}}"#,
            r#"{"logDriver":"none"}"#,
            r#"{"logDriver":"awslogs","options":{"awslogs-stream-prefix":"p"},"secretOptions":[{"name":"awslogs-group","valueFrom":"/log/group"}]}"#,
        ] {
            check(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn other_drivers_and_unknown_options_are_refused_by_name() {
        refused(r#"{"logDriver":"splunk"}"#, "logDriver: 'splunk' of container 'app' is not supported by Berth; use one of awslogs, json-file, syslog, none");
        refused(r#"{"logDriver":""}"#, "logDriver: is required");
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-stream":"s","splunk-token":"t"}}"#,
            "options: 'awslogs-stream', 'splunk-token' of container 'app' are not an option of the awslogs log driver",
        );
        refused(
            r#"{"logDriver":"none","options":{"tag":"x"}}"#,
            "the none log driver takes no options",
        );
        refused(
            r#"{"logDriver":"json-file","options":{"syslog-address":"udp://x:1"}}"#,
            "'syslog-address'",
        );
        // Docker's options the agent does not apply: refused, never registered and ignored.
        refused(
            r#"{"logDriver":"json-file","options":{"max-size":"10m","compress":"true","labels":"a"}}"#,
            "'compress', 'labels' of container 'app' are not an option of the json-file log driver",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-tls-cert":"/c.pem"}}"#,
            "'syslog-tls-cert' of container 'app' is not an option of the syslog log driver",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-format":"rfc3339"}}"#,
            "syslog-format: 'rfc3339'",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-datetime-format":"%Y["}}"#,
            "awslogs-datetime-format",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g"},"secretOptions":[{"name":"splunk-token","valueFrom":"/t"}]}"#,
            "secretOptions[0].name: 'splunk-token'",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g"},"secretOptions":[{"name":"awslogs-group","valueFrom":"/t"}]}"#,
            "also given in options",
        );
    }

    #[test]
    fn option_values_are_checked() {
        refused(
            r#"{"logDriver":"awslogs","options":{}}"#,
            "awslogs-group is required",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"bad group"}}"#,
            "options.awslogs-group: 'bad group'",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-create-group":"yes"}}"#,
            "awslogs-create-group: 'yes'",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-datetime-format":"%Y","awslogs-multiline-pattern":"^x"}}"#,
            "cannot both be set",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-multiline-pattern":"("}}"#,
            "not a regular expression",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","mode":"fast"}}"#,
            "mode: 'fast'",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","max-buffer-size":"4m"}}"#,
            "needs mode non-blocking",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","mode":"non-blocking","max-buffer-size":"lots"}}"#,
            "is not a size",
        );
        refused(
            r#"{"logDriver":"awslogs","options":{"awslogs-group":"g","awslogs-stream-prefix":"a:b"}}"#,
            "awslogs-stream-prefix",
        );
        refused(
            r#"{"logDriver":"json-file","options":{"max-size":"ten"}}"#,
            "max-size: 'ten'",
        );
        refused(
            r#"{"logDriver":"json-file","options":{"max-size":"10m","max-file":"0"}}"#,
            "max-file: '0'",
        );
        refused(
            r#"{"logDriver":"json-file","options":{"max-file":"3"}}"#,
            "needs max-size",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-address":"tcp+tls://h:1"}}"#,
            "'tcp+tls'",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-address":"udp://h:99999"}}"#,
            "no valid port",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-address":"unix://relative"}}"#,
            "absolute socket path",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-address":"localhost"}}"#,
            "not a URL",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-facility":"local9"}}"#,
            "syslog-facility: 'local9'",
        );
        refused(
            r#"{"logDriver":"syslog","options":{"syslog-format":"json"}}"#,
            "syslog-format: 'json'",
        );
    }
}
