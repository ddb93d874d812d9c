//! A container's logConfiguration (issue 10): the one parser of drivers and options, used by the
//! controller at registration (which refuses what it cannot parse, naming the option) and by the
//! agent that applies it, so a definition never registers with a setting the agent would refuse
//! or ignore.

use crate::v1::LogConfiguration;

/// `mode` (awslogs and syslog).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The container is never slowed; past the spool bound the oldest events are dropped.
    NonBlocking,
    /// Past the spool bound the agent stops draining the container's pipes (it blocks).
    Blocking,
}

/// The awslogs driver's options.
#[derive(Debug, Clone, PartialEq)]
pub struct Awslogs {
    /// awslogs-group.
    pub group: String,
    /// awslogs-stream-prefix.
    pub stream_prefix: Option<String>,
    /// awslogs-create-group.
    pub create_group: bool,
    /// awslogs-region (recorded, no effect).
    pub region: Option<String>,
    /// awslogs-multiline-pattern: a line matching it starts an event (a regex, kept as text).
    pub multiline_pattern: Option<String>,
    /// awslogs-datetime-format: a line starting with such a date starts an event.
    pub datetime_format: Option<String>,
    /// mode.
    pub mode: Mode,
    /// max-buffer-size in bytes (accepted; the spool on disk takes the place of Docker's
    /// in-memory ring, bounded by the agent's spool bound).
    pub max_buffer_size: Option<u64>,
}

impl Awslogs {
    /// The log stream's name: `prefix/container-name/task-id` with a prefix (as ECS names
    /// it), else the container's runtime id (as Docker's awslogs driver does).
    pub fn stream_name(&self, container: &str, task_id: &str, runtime_id: &str) -> String {
        match &self.stream_prefix {
            Some(p) => format!("{p}/{container}/{task_id}"),
            None => runtime_id.to_string(),
        }
    }
}

/// The json-file driver's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonFile {
    /// max-size in bytes (`None`: never rotated).
    pub max_size: Option<u64>,
    /// max-file: how many files are kept, the current one included (at least 1).
    pub max_file: u32,
}

/// Where the syslog driver sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyslogAddress {
    /// udp://host:port
    Udp(String),
    /// tcp://host:port
    Tcp(String),
    /// unix:///path (a datagram socket, or a stream one)
    Unix(std::path::PathBuf),
}

/// syslog-format: how each message is written (Docker's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyslogFormat {
    /// RFC 5424 with a millisecond timestamp (the default, and `rfc5424`).
    Rfc5424,
    /// `rfc5424micro`: RFC 5424 with a microsecond timestamp.
    Rfc5424Micro,
    /// `rfc3164`: the BSD format, `<PRI>Mmm dd hh:mm:ss HOSTNAME TAG[PID]: MSG`, which
    /// receivers of the traditional local format (rsyslog's /dev/log) parse.
    Rfc3164,
}

/// The syslog driver's options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syslog {
    /// syslog-address (`None`: the local /dev/log).
    pub address: SyslogAddress,
    /// syslog-facility as its number (daemon, 3, by default).
    pub facility: u8,
    /// tag (the container's runtime id's first 12 characters by default).
    pub tag: Option<String>,
    /// syslog-format.
    pub format: SyslogFormat,
    /// mode: blocking holds the container back while the destination does not take its
    /// lines and the spool is at its bound.
    pub mode: Mode,
}

/// A container's log driver.
#[derive(Debug, Clone, PartialEq)]
pub enum Driver {
    /// No logConfiguration: the spool files are the container's output, kept until cleanup.
    Local,
    /// `none`: nothing kept beyond what the spool needs.
    None,
    /// `awslogs`: shipped to the controller.
    Awslogs(Awslogs),
    /// `json-file`: Docker's line format in local files.
    JsonFile(JsonFile),
    /// `syslog`: RFC 5424 messages.
    Syslog(Syslog),
}

/// A logConfiguration the agent cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("logConfiguration: {0}")]
pub struct ConfigError(pub String);

/// Parses a size as Docker writes it: `10m`, `512k`, `1g`, or bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

const FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "", "", "", "", "local0", "local1", "local2", "local3", "local4", "local5", "local6",
    "local7",
];

fn facility(s: &str) -> Option<u8> {
    if let Ok(n) = s.parse::<u8>() {
        return (n < 24).then_some(n);
    }
    FACILITIES
        .iter()
        .position(|f| !f.is_empty() && *f == s)
        .map(|p| p as u8)
}

fn address(s: &str) -> Option<SyslogAddress> {
    let (scheme, rest) = s.split_once("://")?;
    match scheme {
        "udp" => Some(SyslogAddress::Udp(with_port(rest))),
        "tcp" => Some(SyslogAddress::Tcp(with_port(rest))),
        "unix" | "unixgram" => Some(SyslogAddress::Unix(rest.into())),
        _ => None,
    }
}

/// Docker's default syslog port when none is given.
fn with_port(hostport: &str) -> String {
    if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        hostport.to_string()
    } else {
        format!("{hostport}:514")
    }
}

/// How a container's writes wait for its driver: Docker's `mode` and `max-buffer-size`, options of
/// every driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// `mode` (non-blocking by default, as ECS has had since June 2025).
    pub mode: Mode,
    /// `max-buffer-size` in bytes (non-blocking only): what may wait undelivered before the
    /// oldest is dropped; without it the agent's spool bound.
    pub max_buffer_size: Option<u64>,
}

/// A logConfiguration's [`Delivery`]; with no logConfiguration, non-blocking and unbounded here
/// (the agent's own spool bound applies).
pub fn delivery_of(c: &LogConfiguration) -> Result<Delivery, ConfigError> {
    let get = |k: &str| c.options.get(k).map(String::as_str);
    let bad = |k: &str, v: &str, want: &str| ConfigError(format!("{k} {v:?}: {want}"));
    let mode = match get("mode") {
        None | Some("non-blocking") => Mode::NonBlocking,
        Some("blocking") => Mode::Blocking,
        Some(v) => return Err(bad("mode", v, "blocking or non-blocking")),
    };
    let max_buffer_size = match get("max-buffer-size") {
        None => None,
        Some(v) => {
            if mode != Mode::NonBlocking || get("mode").is_none() {
                return Err(bad(
                    "max-buffer-size",
                    v,
                    "needs mode non-blocking (the buffer holds what a blocking container would wait for)",
                ));
            }
            Some(
                parse_size(v)
                    .filter(|n| *n > 0)
                    .ok_or_else(|| bad("max-buffer-size", v, "a size such as 25m"))?,
            )
        }
    };
    Ok(Delivery {
        mode,
        max_buffer_size,
    })
}

/// The options Berth applies for `driver` (Docker's names), `None` for a driver Berth does not
/// run: the one list registration and the agent check options against.
pub fn options_of(driver: &str) -> Option<&'static [&'static str]> {
    Some(match driver {
        "none" => &[],
        "awslogs" => &[
            "awslogs-group",
            "awslogs-stream-prefix",
            "awslogs-region",
            "awslogs-create-group",
            "awslogs-datetime-format",
            "awslogs-multiline-pattern",
            "mode",
            "max-buffer-size",
        ],
        "json-file" => &["max-size", "max-file", "mode", "max-buffer-size"],
        // labels, labels-regex, env and env-regex are accepted and, as in Docker's syslog
        // driver, change nothing that is sent.
        "syslog" => &[
            "syslog-address",
            "syslog-facility",
            "syslog-format",
            "tag",
            "labels",
            "labels-regex",
            "env",
            "env-regex",
            "mode",
            "max-buffer-size",
        ],
        _ => return None,
    })
}

/// Parses a container's logConfiguration.
pub fn parse(c: Option<&LogConfiguration>) -> Result<Driver, ConfigError> {
    let Some(c) = c else {
        return Ok(Driver::Local);
    };
    let opts = &c.options;
    let Some(allowed) = options_of(&c.log_driver) else {
        return Err(ConfigError(format!(
            "log driver {:?} is not supported (awslogs, json-file, syslog or none)",
            c.log_driver
        )));
    };
    let mut unknown: Vec<&str> = opts
        .keys()
        .map(String::as_str)
        .filter(|k| !allowed.contains(k))
        .collect();
    if !unknown.is_empty() {
        unknown.sort_unstable();
        return Err(ConfigError(format!(
            "{} not an option of the {} log driver that Berth applies; its options are {}",
            unknown
                .iter()
                .map(|k| format!("{k:?}"))
                .collect::<Vec<_>>()
                .join(", "),
            c.log_driver,
            if allowed.is_empty() {
                "none".to_string()
            } else {
                allowed.join(", ")
            }
        )));
    }
    let bad = |k: &str, v: &str, want: &str| ConfigError(format!("{k} {v:?}: {want}"));
    let get = |k: &str| opts.get(k).map(String::as_str);
    let Delivery {
        mode,
        max_buffer_size,
    } = delivery_of(c)?;
    Ok(match c.log_driver.as_str() {
        "none" => Driver::None,
        "awslogs" => {
            let group = get("awslogs-group")
                .filter(|g| !g.is_empty())
                .ok_or_else(|| ConfigError("awslogs-group is required".into()))?;
            let create_group = match get("awslogs-create-group") {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => return Err(bad("awslogs-create-group", v, "true or false")),
            };
            if get("awslogs-multiline-pattern").is_some()
                && get("awslogs-datetime-format").is_some()
            {
                return Err(ConfigError(
                    "awslogs-datetime-format and awslogs-multiline-pattern cannot both be set"
                        .into(),
                ));
            }
            let a = Awslogs {
                group: group.to_string(),
                stream_prefix: get("awslogs-stream-prefix").map(String::from),
                create_group,
                region: get("awslogs-region").map(String::from),
                multiline_pattern: get("awslogs-multiline-pattern").map(String::from),
                datetime_format: get("awslogs-datetime-format").map(String::from),
                mode,
                max_buffer_size,
            };
            event_start(&a)?;
            Driver::Awslogs(a)
        }
        "json-file" => {
            let max_size = match get("max-size") {
                None | Some("-1") => None,
                Some(v) => Some(
                    parse_size(v)
                        .filter(|n| *n > 0)
                        .ok_or_else(|| bad("max-size", v, "a positive size such as 10m"))?,
                ),
            };
            let max_file = match get("max-file") {
                None => 1,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| bad("max-file", v, "a whole number of at least 1"))?,
            };
            if max_file > 1 && max_size.is_none() {
                return Err(ConfigError("max-file needs max-size".into()));
            }
            Driver::JsonFile(JsonFile { max_size, max_file })
        }
        "syslog" => Driver::Syslog(Syslog {
            address: match get("syslog-address") {
                None => SyslogAddress::Unix("/dev/log".into()),
                Some(v) => address(v).ok_or_else(|| {
                    bad(
                        "syslog-address",
                        v,
                        "udp://host:port, tcp://host:port or unix:///path",
                    )
                })?,
            },
            facility: match get("syslog-facility") {
                None => 3,
                Some(v) => facility(v).ok_or_else(|| {
                    bad(
                        "syslog-facility",
                        v,
                        "a syslog facility such as daemon or local0",
                    )
                })?,
            },
            tag: get("tag").map(String::from),
            format: match get("syslog-format") {
                None | Some("rfc5424") => SyslogFormat::Rfc5424,
                Some("rfc5424micro") => SyslogFormat::Rfc5424Micro,
                Some("rfc3164") => SyslogFormat::Rfc3164,
                Some(v) => return Err(bad("syslog-format", v, "rfc5424, rfc5424micro or rfc3164")),
            },
            mode,
        }),
        _ => Driver::None,
    })
}

/// What each strftime directive of an awslogs-datetime-format stands for: Docker's awslogs
/// driver's table (its `strftimeToRegex`).
fn strftime_regex(d: char) -> Option<&'static str> {
    Some(match d {
        'a' => r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)",
        'A' => r"(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)",
        'w' => r"[0-6]",
        'd' => r"(?:0[1-9]|[1,2][0-9]|3[0,1])",
        'b' => r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)",
        'B' => {
            r"(?:January|February|March|April|May|June|July|August|September|October|November|December)"
        }
        'm' => r"(?:0[1-9]|1[0-2])",
        'Y' => r"\d{4}",
        'y' => r"\d{2}",
        'H' => r"(?:[0,1][0-9]|2[0-3])",
        'I' => r"(?:0[0-9]|1[0-2])",
        'p' => r"[A,P]M",
        'M' => r"[0-5][0-9]",
        'S' => r"[0-5][0-9]",
        'f' => r"\d{6}",
        'z' => r"[+-]\d{4}",
        'Z' => r"[A-Z]{1,4}T",
        'j' => r"(?:0[0-9][1-9]|[1,2][0-9][0-9]|3[0-5][0-9]|36[0-6])",
        'L' => r"\.\d{3}",
        _ => return None,
    })
}

/// The regular expression of an awslogs-datetime-format, built as Docker's awslogs driver
/// builds it: each `%` and the character after it replaced by its pattern from Docker's table
/// (a directive not in the table by nothing), the rest taken as a regular expression as
/// written (so `\[%b %d, %Y %H:%M:%S\]`, Docker's example, matches `[Jan 31, 2024 12:00:01]`),
/// matched anywhere in the line.
pub fn datetime_regex(format: &str) -> Result<regex::Regex, ConfigError> {
    let mut re = String::with_capacity(format.len() * 4);
    let mut it = format.chars();
    while let Some(c) = it.next() {
        if c != '%' {
            re.push(c);
            continue;
        }
        match it.next() {
            Some(d) => re.push_str(strftime_regex(d).unwrap_or("")),
            // A lone % at the end is not a directive: Docker leaves it as written.
            None => re.push('%'),
        }
    }
    regex::Regex::new(&re)
        .map_err(|e| ConfigError(format!("awslogs-datetime-format {format:?}: {e}")))
}

/// The regular expression a line must match to start an event, from awslogs-multiline-pattern
/// or awslogs-datetime-format; `None` when neither is set (every line is an event).
pub fn event_start(a: &Awslogs) -> Result<Option<regex::Regex>, ConfigError> {
    if let Some(p) = &a.multiline_pattern {
        return regex::Regex::new(p)
            .map(Some)
            .map_err(|e| ConfigError(format!("awslogs-multiline-pattern {p:?}: {e}")));
    }
    a.datetime_format.as_deref().map(datetime_regex).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lc(driver: &str, opts: &[(&str, &str)]) -> LogConfiguration {
        LogConfiguration {
            log_driver: driver.into(),
            options: opts
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            secret_options: vec![],
        }
    }

    #[test]
    fn drivers_and_their_options_parse_and_bad_ones_are_named() {
        assert_eq!(parse(None).unwrap(), Driver::Local);
        assert_eq!(parse(Some(&lc("none", &[]))).unwrap(), Driver::None);
        let Driver::Awslogs(a) = parse(Some(&lc(
            "awslogs",
            &[
                ("awslogs-group", "/ecs/web"),
                ("awslogs-stream-prefix", "web"),
                ("awslogs-create-group", "true"),
                ("mode", "blocking"),
            ],
        )))
        .unwrap() else {
            panic!("awslogs")
        };
        assert!(a.create_group && a.mode == Mode::Blocking);
        assert_eq!(
            a.stream_name("app", "abc123", "abc123-0-app"),
            "web/app/abc123"
        );
        let a = Awslogs {
            stream_prefix: None,
            ..a
        };
        assert_eq!(
            a.stream_name("app", "abc123", "abc123-0-app"),
            "abc123-0-app"
        );
        let e = parse(Some(&lc(
            "awslogs",
            &[("awslogs-group", "g"), ("awslogs-stream", "x")],
        )))
        .unwrap_err();
        assert!(e.to_string().contains("\"awslogs-stream\""), "{e}");
        let e = parse(Some(&lc("fluentd", &[]))).unwrap_err();
        assert!(e.to_string().contains("fluentd"), "{e}");
        assert!(parse(Some(&lc("awslogs", &[]))).is_err());
        assert_eq!(
            parse(Some(&lc(
                "json-file",
                &[("max-size", "10k"), ("max-file", "3")]
            )))
            .unwrap(),
            Driver::JsonFile(JsonFile {
                max_size: Some(10240),
                max_file: 3
            })
        );
        assert_eq!(
            parse(Some(&lc(
                "syslog",
                &[
                    ("syslog-address", "udp://127.0.0.1"),
                    ("syslog-facility", "local0")
                ]
            )))
            .unwrap(),
            Driver::Syslog(Syslog {
                address: SyslogAddress::Udp("127.0.0.1:514".into()),
                facility: 16,
                tag: None,
                format: SyslogFormat::Rfc5424,
                mode: Mode::NonBlocking,
            })
        );
        // Every option the controller accepts for syslog is applied (none is a reason to
        // keep the output in the spool only).
        let c = lc(
            "syslog",
            &[
                ("syslog-address", "unix:///dev/log"),
                ("syslog-format", "rfc3164"),
                ("mode", "blocking"),
                ("labels", "a,b"),
                ("labels-regex", "^a"),
                ("env", "X"),
                ("env-regex", "^X"),
                ("tag", "web"),
            ],
        );
        let d = parse(Some(&c)).unwrap();
        assert_eq!(delivery_of(&c).unwrap().mode, Mode::Blocking);
        assert!(
            matches!(&d, Driver::Syslog(s) if s.format == SyslogFormat::Rfc3164 && s.tag.as_deref() == Some("web"))
        );
        for (k, v) in [
            ("syslog-format", "rfc5425"),
            ("mode", "sometimes"),
            ("max-buffer-size", "lots"),
        ] {
            let e = parse(Some(&lc("syslog", &[(k, v)]))).unwrap_err();
            assert!(e.to_string().contains(k), "{e}");
        }
        assert!(parse(Some(&lc("syslog", &[("syslog-address", "http://x")]))).is_err());
        // Docker's json-file and syslog options Berth does not apply are refused by name.
        for (d, k) in [
            ("json-file", "compress"),
            ("json-file", "labels"),
            ("json-file", "tag"),
            ("syslog", "syslog-tls-ca-cert"),
            ("syslog", "syslog-tls-cert"),
        ] {
            let e = parse(Some(&lc(d, &[(k, "x")]))).unwrap_err().to_string();
            assert!(e.contains(&format!("{k:?}")) && e.contains(d), "{e}");
        }
        assert!(parse(Some(&lc("syslog", &[("syslog-format", "rfc5424")]))).is_ok());
        let e = parse(Some(&lc("syslog", &[("syslog-format", "rfc3339")]))).unwrap_err();
        assert!(e.to_string().contains("rfc3339"), "{e}");
        // mode and max-buffer-size are every driver's.
        let j = lc(
            "json-file",
            &[("mode", "non-blocking"), ("max-buffer-size", "4m")],
        );
        assert!(parse(Some(&j)).is_ok());
        assert_eq!(
            delivery_of(&j).unwrap(),
            Delivery {
                mode: Mode::NonBlocking,
                max_buffer_size: Some(4 << 20)
            }
        );
        assert_eq!(
            delivery_of(&lc("syslog", &[("mode", "blocking")]))
                .unwrap()
                .mode,
            Mode::Blocking
        );
        let e = parse(Some(&lc("json-file", &[("max-buffer-size", "4m")]))).unwrap_err();
        assert!(e.to_string().contains("non-blocking"), "{e}");
        assert!(parse(Some(&lc("syslog", &[("mode", "sometimes")]))).is_err());
    }

    #[test]
    fn multiline_patterns_and_datetime_formats_find_where_an_event_starts() {
        let a = |mp: Option<&str>, df: Option<&str>| Awslogs {
            group: "g".into(),
            stream_prefix: None,
            create_group: false,
            region: None,
            multiline_pattern: mp.map(String::from),
            datetime_format: df.map(String::from),
            mode: Mode::NonBlocking,
            max_buffer_size: None,
        };
        let re = event_start(&a(Some(r"^\[\d+\]"), None)).unwrap().unwrap();
        assert!(re.is_match("[12] hello") && !re.is_match("    continued"));
        let re = event_start(&a(None, Some("%Y-%m-%d %H:%M:%S")))
            .unwrap()
            .unwrap();
        assert!(re.is_match("2024-01-31 12:00:01 hello"));
        assert!(!re.is_match("\tat Foo.bar(Foo.java:1)"));
        // Docker's documented example: the brackets escaped as in a regular expression.
        let re = event_start(&a(None, Some(r"\[%b %d, %Y %H:%M:%S\]")))
            .unwrap()
            .unwrap();
        assert!(re.is_match("[Jan 31, 2024 12:00:01] x"));
        assert!(!re.is_match("Jan 31, 2024 12:00:01 x"));
        // Milliseconds (%L), and Docker's unanchored match.
        let re = event_start(&a(None, Some("%H:%M:%S%L"))).unwrap().unwrap();
        assert!(re.is_match("INFO 12:00:01.123 started"));
        // A directive Docker's table lacks stands for nothing, as in Docker.
        let re = event_start(&a(None, Some("%Y%Q-%m"))).unwrap().unwrap();
        assert!(re.is_match("2024-01"));
        assert!(event_start(&a(None, Some("%Y["))).is_err());
        assert!(event_start(&a(None, None)).unwrap().is_none());
        assert!(event_start(&a(Some("(unclosed"), None)).is_err());
    }
}
