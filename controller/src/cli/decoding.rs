//! From the command line to a checked request, with no network: the flags of an operation are
//! the fields of its request message (`fooBar` is `--foo-bar`), their values are typed by the
//! model, and the whole request is walked against the model before anything is sent. So every
//! bad input — a malformed value, a missing `file://`, an unknown key, a bad `--query` or
//! `--output` — is refused here, in one line, with the aws CLI's exit code 252.

use base64::Engine as _;
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{Map, Value};

use super::model::{model, Field, Kind, Msg};
use super::output::{self, Format};
use super::table::{self, Operation, Waiter, INPUT_TOKEN, LIMIT_KEY, SERVICES, WAITERS};
use super::{shorthand, CliError, DEFAULT_ENDPOINT};

/// What the command line asks for.
pub enum Action {
    /// Print this (`--help`, `--version`).
    Print(String),
    /// Call an operation.
    Call(Call),
    /// Print a skeleton of the operation's input or output; nothing is sent.
    Skeleton {
        /// The operation.
        op: &'static Operation,
        /// Which skeleton.
        kind: SkeletonKind,
    },
    /// `ecs execute-command`: a session in a container (`cli::exec`).
    ExecuteCommand(super::exec::ExecArgs),
    /// `logs tail`: a group's recent events, and with --follow the new ones (`cli::tail`).
    Tail(super::tail::TailArgs),
    /// `ecs run-task --wait`: run, then follow the tasks until RUNNING (`cli::follow`).
    RunTaskWait {
        /// The checked RunTask request.
        request: Value,
        /// `--wait-timeout`.
        timeout: std::time::Duration,
    },
    /// Poll until a waiter's condition holds.
    Wait {
        /// The waiter.
        waiter: &'static Waiter,
        /// The polled operation's request.
        request: Value,
    },
}

/// `--generate-cli-skeleton`'s argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkeletonKind {
    /// The request, as JSON for `--cli-input-json`.
    Input,
    /// The request, as YAML for `--cli-input-yaml`.
    YamlInput,
    /// A sample response, printed in the `--output` format.
    Output,
}

/// A call of an operation.
pub struct Call {
    /// The operation.
    pub op: &'static Operation,
    /// The checked request JSON (keys as the model spells them).
    pub request: Value,
    /// How pages are followed.
    pub paging: Paging,
}

/// The aws CLI's paging options of a paginated operation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Paging {
    /// Follow `nextToken` (false with `--no-paginate`, or when the request sets `nextToken`
    /// or `maxResults` itself, as the aws CLI does).
    pub paginate: bool,
    /// `--max-items`.
    pub max_items: Option<usize>,
    /// `--starting-token`.
    pub starting: Option<ResumeToken>,
    /// `--page-size`: sent as `maxResults`.
    pub page_size: Option<i64>,
}

/// Where a paged listing resumes: the aws CLI's `NextToken`, base64 of
/// `{"nextToken": ..., "boto_truncate_amount": N}` (botocore's TokenEncoder).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResumeToken {
    /// The service's token of the page to ask for (none: the first page).
    pub next_token: Option<String>,
    /// How many items of that page were already printed.
    pub truncate: usize,
}

impl ResumeToken {
    /// The encoded token, as botocore writes it.
    pub fn encode(&self) -> String {
        let token = match &self.next_token {
            Some(t) => Value::String(t.clone()).to_string(),
            None => "null".to_string(),
        };
        let json = if self.truncate > 0 {
            format!(
                "{{\"{INPUT_TOKEN}\": {token}, \"boto_truncate_amount\": {}}}",
                self.truncate
            )
        } else {
            format!("{{\"{INPUT_TOKEN}\": {token}}}")
        };
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    /// Decodes a `--starting-token`.
    pub fn decode(text: &str) -> Result<ResumeToken, CliError> {
        let bad =
            |why: String| CliError::Usage(format!("Bad value for --starting-token {text}: {why}"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map_err(|e| bad(e.to_string()))?;
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        let obj = v
            .as_object()
            .ok_or_else(|| bad("not a token object".into()))?;
        for k in obj.keys() {
            if k != INPUT_TOKEN && k != "boto_truncate_amount" {
                return Err(bad(format!("unknown key '{k}'")));
            }
        }
        let next_token = match obj.get(INPUT_TOKEN) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => return Err(bad(format!("{INPUT_TOKEN} is {other}"))),
        };
        let truncate = match obj.get("boto_truncate_amount") {
            None => 0,
            Some(n) => n
                .as_u64()
                .ok_or_else(|| bad(format!("boto_truncate_amount is {n}")))?
                as usize,
        };
        Ok(ResumeToken {
            next_token,
            truncate,
        })
    }
}

/// The global options.
pub struct Globals {
    /// `--output`.
    pub output: Format,
    /// `--query`, compiled.
    pub query: Option<jmespath::Expression<'static>>,
    /// `--endpoint-url`, else BERTH_ENDPOINT, else the default.
    pub endpoint: String,
    /// `--debug`.
    pub debug: bool,
    /// `--profile`, `--region`, `--no-sign-request`: how calls are signed.
    pub signing: super::signing::SigningOptions,
    /// `--ca-bundle`, else BERTH_CA_BUNDLE: the CA an https endpoint is checked against.
    pub ca_bundle: Option<std::path::PathBuf>,
}

/// A parsed and checked command line.
pub struct Invocation {
    /// The global options.
    pub globals: Globals,
    /// What to do.
    pub action: Action,
}

fn input_message(api: &str) -> &'static Msg {
    let m = model();
    m.rpc(api)
        .and_then(|r| m.message(&r.input))
        .unwrap_or_else(|| panic!("{api} has a row but no rpc in the model (see table tests)"))
}

/// The model's fields of an operation's request that are flags. The pagination fields of a
/// paginated operation stay flags (hidden), as in the aws CLI.
fn field_args(mut sub: Command, msg: &Msg, hidden: &[&str]) -> Command {
    for f in &msg.fields {
        let id = f.json.clone();
        let flag = f.flag();
        let hide = hidden.contains(&f.json.as_str());
        let shape = match &f.kind {
            Kind::Str => "string",
            Kind::Timestamp => "timestamp",
            Kind::Int => "integer",
            Kind::Float => "number",
            Kind::Bool => "boolean",
            Kind::Message(_) => "structure: JSON or shorthand",
            Kind::Map(_) => "map: JSON or shorthand",
        };
        let help = if f.list {
            format!("{} (list of {shape}; words, commas or a JSON list)", f.json)
        } else {
            format!("{} ({shape})", f.json)
        };
        sub = match (&f.kind, f.list) {
            (Kind::Bool, false) => sub
                .arg(
                    Arg::new(id.clone())
                        .long(flag.clone())
                        .action(ArgAction::SetTrue)
                        .help(format!("{} = true", f.json))
                        .hide(hide),
                )
                .arg(
                    Arg::new(format!("no-{id}"))
                        .long(format!("no-{flag}"))
                        .action(ArgAction::SetTrue)
                        .conflicts_with(id)
                        .help(format!("{} = false", f.json))
                        .hide(hide),
                ),
            (_, true) => sub.arg(
                Arg::new(id)
                    .long(flag)
                    .num_args(1..)
                    .action(ArgAction::Append)
                    .allow_negative_numbers(f.kind == Kind::Int || f.kind == Kind::Float)
                    .value_name("VALUE")
                    .help(help)
                    .hide(hide),
            ),
            // As in the aws CLI (argparse), a value does not start with '-' (but a number may
            // be negative), so a forgotten value never swallows the next flag.
            _ => sub.arg(
                Arg::new(id)
                    .long(flag)
                    .action(ArgAction::Set)
                    .allow_negative_numbers(f.kind == Kind::Int || f.kind == Kind::Float)
                    .value_name("VALUE")
                    .help(help)
                    .hide(hide),
            ),
        };
    }
    sub.arg(
        Arg::new("cli-input-json")
            .long("cli-input-json")
            .conflicts_with("cli-input-yaml")
            .help("The request as JSON (or file://PATH); flags given too override its keys"),
    )
    .arg(
        Arg::new("cli-input-yaml")
            .long("cli-input-yaml")
            .help("The request as YAML (or file://PATH); flags given too override its keys"),
    )
}

/// The subcommands of one operation: its request's fields as flags, and the aws CLI's
/// skeleton and paging options.
fn operation_command(op: &Operation) -> Command {
    let msg = input_message(op.api);
    let hidden: Vec<&str> = match op.pages {
        Some(p) => vec![INPUT_TOKEN, p.limit_key],
        None => Vec::new(),
    };
    let mut sub = field_args(
        super::follow::args(
            op.api,
            super::ec2::args(op.api, Command::new(op.cli_name()).infer_long_args(true)),
        ),
        msg,
        &hidden,
    )
    .arg(
        Arg::new("generate-cli-skeleton")
            .long("generate-cli-skeleton")
            .num_args(0..=1)
            .default_missing_value("input")
            .value_parser(["input", "output", "yaml-input"])
            .help("Print a skeleton of the request (input, yaml-input) or of the response (output); nothing is sent"),
    );
    if op.pages.is_some() {
        sub = sub
            .arg(
                Arg::new("starting-token")
                    .long("starting-token")
                    .help("Where to resume: the NextToken of an earlier truncated output"),
            )
            .arg(
                Arg::new("page-size")
                    .long("page-size")
                    .help("The size of each page asked for (maxResults)"),
            )
            .arg(
                Arg::new("max-items")
                    .long("max-items")
                    .help("The most items to print; a NextToken is printed to resume"),
            );
    }
    sub
}

/// The clap command tree, built from the operation table and the model.
pub fn command() -> Command {
    let mut services: Vec<Command> = SERVICES
        .iter()
        .map(|s| Command::new(s.cli).about(s.about).subcommand_required(true))
        .collect();
    for op in table::all_operations() {
        let at = SERVICES
            .iter()
            .position(|s| s.cli == op.service.cli)
            .unwrap_or(0);
        let svc = std::mem::replace(&mut services[at], Command::new("placeholder"));
        services[at] = svc.subcommand(operation_command(op));
    }
    let mut ecs = services.remove(0);
    let mut wait = Command::new("wait")
        .about("Wait until a condition holds, as `aws ecs wait`")
        .subcommand_required(true);
    for w in WAITERS {
        let msg = input_message(w.operation);
        wait = wait.subcommand(field_args(
            Command::new(w.cli).infer_long_args(true).about(w.about),
            msg,
            &[],
        ));
    }
    for (name, _) in table::WAITERS_NOT_BUILT {
        wait = wait.subcommand(
            Command::new(*name)
                .about("Not available: services are not built yet")
                .arg(
                    Arg::new("args")
                        .num_args(0..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true),
                ),
        );
    }
    ecs = ecs.subcommand(wait).subcommand(super::exec::command());
    let services: Vec<Command> = services
        .into_iter()
        .map(|s| {
            if s.get_name() == table::LOGS.cli {
                s.subcommand(super::tail::command())
            } else {
                s
            }
        })
        .collect();
    Command::new("berth")
        .about("Berth's command line: `berth ecs ...` works as `aws ecs ...` does")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .infer_long_args(true)
        .arg(global(
            "endpoint-url",
            "The controller's URL [env: BERTH_ENDPOINT] [default: http://127.0.0.1:7480]",
        ))
        .arg(global(
            "output",
            "json (default), text, table, yaml or yaml-stream",
        ))
        .arg(global("query", "A JMESPath query applied to the response"))
        .arg(global(
            "region",
            "The region of the signature's scope [env: BERTH_DEFAULT_REGION] [default: on-prem]",
        ))
        .arg(global(
            "profile",
            "The profile of the credentials file to sign with [env: BERTH_PROFILE]",
        ))
        .arg(global_flag(
            "no-sign-request",
            "Send the calls unsigned (a controller with --auth off accepts them)",
        ))
        .arg(global_flag(
            "no-cli-pager",
            "Accepted for aws CLI compatibility; berth never pages its output",
        ))
        .arg(global_flag(
            "no-paginate",
            "One call: do not follow nextToken (the response's nextToken is printed)",
        ))
        .arg(global_flag(
            "debug",
            "Print each request and response on stderr",
        ))
        .arg(global(
            "ca-bundle",
            "PEM file of the CA to trust for an https endpoint (the controller's DATA_DIR/ca.pem) [env: BERTH_CA_BUNDLE]",
        ))
        .subcommand(ecs)
        .subcommands(services)
}

fn global(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .global(true)
        .action(ArgAction::Set)
        .help(help)
}

fn global_flag(name: &'static str, help: &'static str) -> Arg {
    Arg::new(name)
        .long(name)
        .global(true)
        .action(ArgAction::SetTrue)
        .help(help)
}

/// Parses and checks a whole command line. Nothing here touches the network.
pub fn parse(args: Vec<String>) -> Result<Invocation, CliError> {
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) if !e.use_stderr() => {
            return Ok(Invocation {
                globals: default_globals(),
                action: Action::Print(e.render().to_string()),
            })
        }
        Err(e) => return Err(CliError::Usage(first_line(&e.render().to_string()))),
    };
    let globals = Globals {
        output: matches
            .get_one::<String>("output")
            .map(|s| s.parse())
            .transpose()
            .map_err(CliError::Usage)?
            .unwrap_or(Format::Json),
        // Every argument is checked before anything is sent (a bad query must not run a task).
        query: matches
            .get_one::<String>("query")
            .map(|q| output::compile_query(q))
            .transpose()
            .map_err(CliError::Usage)?,
        endpoint: matches
            .get_one::<String>("endpoint-url")
            .cloned()
            .or_else(|| std::env::var("BERTH_ENDPOINT").ok())
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
        debug: matches.get_flag("debug"),
        signing: super::signing::SigningOptions {
            profile: matches.get_one::<String>("profile").cloned(),
            region: matches.get_one::<String>("region").cloned(),
            no_sign_request: matches.get_flag("no-sign-request"),
        },
        ca_bundle: matches
            .get_one::<String>("ca-bundle")
            .cloned()
            .or_else(|| std::env::var("BERTH_CA_BUNDLE").ok())
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from),
    };
    let usage = || {
        CliError::Usage(
            "usage: berth ecs|ssm|secretsmanager|iam|ec2|logs OPERATION [--flags]".into(),
        )
    };
    let Some((service, svc)) = matches.subcommand() else {
        return Err(usage());
    };
    let Some((name, m)) = svc.subcommand() else {
        return Err(usage());
    };
    if service == "ecs" && name == super::exec::CLI_NAME {
        return Ok(Invocation {
            globals,
            action: Action::ExecuteCommand(super::exec::args(m)?),
        });
    }
    if service == table::LOGS.cli && name == super::tail::CLI_NAME {
        return Ok(Invocation {
            globals,
            action: Action::Tail(super::tail::args(m)?),
        });
    }
    if service == table::LOGS.cli && name == "start-live-tail" {
        return Err(CliError::Usage(
            "berth logs start-live-tail: StartLiveTail is a stream; follow a group with `berth logs tail GROUP --follow`".into(),
        ));
    }
    if service == "ecs" && name == "wait" {
        let Some((w, wm)) = m.subcommand() else {
            return Err(usage());
        };
        if let Some((_, why)) = table::WAITERS_NOT_BUILT.iter().find(|(n, _)| *n == w) {
            return Err(CliError::Usage(format!("berth ecs wait {w}: {why}")));
        }
        let waiter = WAITERS.iter().find(|x| x.cli == w).ok_or_else(usage)?;
        let request = request_json(input_message(waiter.operation), wm)?;
        let op = table::by_api(waiter.operation).ok_or_else(usage)?;
        check(op, &request, from_input(wm))?;
        return Ok(Invocation {
            globals,
            action: Action::Wait { waiter, request },
        });
    }
    let op = table::by_cli_name(service, name).ok_or_else(usage)?;
    if let Some(kind) = m.get_one::<String>("generate-cli-skeleton") {
        let kind = match kind.as_str() {
            "output" => SkeletonKind::Output,
            "yaml-input" => SkeletonKind::YamlInput,
            _ => SkeletonKind::Input,
        };
        // `output` checks the inputs, as the aws CLI does; `input` ignores them.
        if kind == SkeletonKind::Output {
            check(op, &request_json(input_message(op.api), m)?, from_input(m))?;
        }
        return Ok(Invocation {
            globals,
            action: Action::Skeleton { op, kind },
        });
    }
    let mut request = request_json(input_message(op.api), m)?;
    super::ec2::simplify(op.api, m, &mut request)?;
    check(op, &request, from_input(m))?;
    if let Some(timeout) = super::follow::wait_of(op.api, m)? {
        return Ok(Invocation {
            globals,
            action: Action::RunTaskWait { request, timeout },
        });
    }
    let paging = paging(op, m, &matches, &request)?;
    Ok(Invocation {
        globals,
        action: Action::Call(Call {
            op,
            request,
            paging,
        }),
    })
}

fn default_globals() -> Globals {
    Globals {
        output: Format::Json,
        query: None,
        endpoint: DEFAULT_ENDPOINT.to_string(),
        debug: false,
        signing: Default::default(),
        ca_bundle: None,
    }
}

/// clap's first line (`error: unexpected argument '--x' found`): one line per error.
fn first_line(rendered: &str) -> String {
    rendered
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("invalid arguments")
        .trim()
        .to_string()
}

fn paging(
    op: &Operation,
    m: &ArgMatches,
    top: &ArgMatches,
    request: &Value,
) -> Result<Paging, CliError> {
    if op.pages.is_none() {
        return Ok(Paging::default());
    }
    let int = |flag: &str| -> Result<Option<i64>, CliError> {
        m.get_one::<String>(flag)
            .map(|s| {
                s.trim().parse::<i64>().map_err(|_| {
                    CliError::Usage(format!("argument --{flag}: invalid int value: '{s}'"))
                })
            })
            .transpose()
    };
    let max_items = match int("max-items")? {
        Some(n) if n < 1 => {
            return Err(CliError::Usage(format!(
                "argument --max-items: must be at least 1, got {n}"
            )))
        }
        n => n.map(|n| n as usize),
    };
    let page_size = match int("page-size")? {
        Some(n) if n < 1 => {
            return Err(CliError::Usage(format!(
                "argument --page-size: must be at least 1, got {n}"
            )))
        }
        n => n,
    };
    let starting = m
        .get_one::<String>("starting-token")
        .map(|t| ResumeToken::decode(t))
        .transpose()?;
    let limit_key = op.pages.map_or(LIMIT_KEY, |p| p.limit_key);
    let own_tokens = request.get(INPUT_TOKEN).is_some() || request.get(limit_key).is_some();
    let no_paginate = top.get_flag("no-paginate");
    let paging_flags = max_items.is_some() || starting.is_some() || page_size.is_some();
    if paging_flags && (no_paginate || own_tokens) {
        let why = if no_paginate {
            "--no-paginate"
        } else {
            "--next-token, --max-results or --limit (which make one call)"
        };
        return Err(CliError::Usage(format!(
            "--max-items, --starting-token and --page-size page through results; they cannot be combined with {why}"
        )));
    }
    Ok(Paging {
        paginate: !no_paginate && !own_tokens,
        max_items,
        starting,
        page_size,
    })
}

/// Checks that the request has the members the model requires (as the aws CLI does, before
/// anything is sent) and decodes into the operation's message (numbers in range, ...).
///
/// As in the aws CLI, a member missing from flags alone is a missing argument
/// (`the following arguments are required: --task-definition`); with `--cli-input-json` or
/// `--cli-input-yaml` it is a missing parameter of the input
/// (`Missing required parameter in input: "taskDefinition"`).
pub fn check(op: &Operation, request: &Value, from_input: bool) -> Result<(), CliError> {
    let missing: Vec<&str> = table::required(op.api)
        .iter()
        .copied()
        .filter(|key| request.get(*key).is_none_or(Value::is_null))
        .collect();
    if !missing.is_empty() {
        return Err(CliError::Usage(if from_input {
            let named: Vec<String> = missing.iter().map(|k| format!("\"{k}\"")).collect();
            format!(
                "Parameter validation failed: Missing required parameter in input: {}",
                named.join(", ")
            )
        } else {
            let flags: Vec<String> = missing.iter().map(|k| format!("--{}", kebab(k))).collect();
            format!("the following arguments are required: {}", flags.join(", "))
        }));
    }
    (op.decode)(request.clone())
        .map(|_| ())
        .map_err(|e| CliError::Usage(format!("Parameter validation failed for {}: {e}", op.api)))
}

/// Whether the request came (partly) from `--cli-input-json` / `--cli-input-yaml`.
fn from_input(m: &ArgMatches) -> bool {
    m.get_one::<String>("cli-input-json").is_some()
        || m.get_one::<String>("cli-input-yaml").is_some()
}

/// A request member's flag name: `taskDefinition` → `task-definition`.
fn kebab(key: &str) -> String {
    let mut out = String::new();
    for (i, c) in key.chars().enumerate() {
        // AWS's PascalCase keys (`ActivationId`) start upper case: no leading dash.
        if c.is_ascii_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

/// Reads a parameter value: `file://PATH` (and `fileb://PATH`) is the file's text.
fn read_value(flag: &str, text: &str) -> Result<String, CliError> {
    let path = text
        .strip_prefix("file://")
        .or_else(|| text.strip_prefix("fileb://"));
    match path {
        Some(path) => std::fs::read_to_string(path).map_err(|e| {
            CliError::Usage(format!(
                "Error parsing parameter '--{flag}': Unable to load paramfile {text}: {e}"
            ))
        }),
        None => Ok(text.to_string()),
    }
}

fn parse_json(flag: &str, text: &str) -> Result<Value, CliError> {
    serde_json::from_str(text).map_err(|e| {
        CliError::Usage(format!(
            "Error parsing parameter '--{flag}': Invalid JSON: {e}"
        ))
    })
}

fn parse_shorthand(flag: &str, text: &str) -> Result<Value, CliError> {
    shorthand::parse(text)
        .map_err(|e| CliError::Usage(format!("Error parsing parameter '--{flag}': {e}")))
}

/// Builds the request JSON of an operation whose input is `msg` from `--cli-input-json` /
/// `--cli-input-yaml` and the flags (a flag overrides the document's key), walked against
/// the model.
pub fn request_json(msg: &Msg, m: &ArgMatches) -> Result<Value, CliError> {
    let doc = if let Some(t) = m.get_one::<String>("cli-input-json") {
        Some((
            "cli-input-json",
            parse_json("cli-input-json", &read_value("cli-input-json", t)?)?,
        ))
    } else if let Some(t) = m.get_one::<String>("cli-input-yaml") {
        let text = read_value("cli-input-yaml", t)?;
        let v: Value = serde_norway::from_str(&text).map_err(|e| {
            CliError::Usage(format!(
                "Error parsing parameter '--cli-input-yaml': Invalid YAML: {}",
                e.to_string().replace('\n', " ")
            ))
        })?;
        Some(("cli-input-yaml", v))
    } else {
        None
    };
    let mut req = match doc {
        Some((_, v @ Value::Object(_))) => match normalize(v, msg, "", false)? {
            Value::Object(map) => map,
            _ => Map::new(),
        },
        Some((flag, other)) => {
            return Err(CliError::Usage(format!(
                "Error parsing parameter '--{flag}': the input must be an object of the request's parameters, got {}",
                type_name(&other)
            )))
        }
        None => Map::new(),
    };
    for f in &msg.fields {
        if let Some(v) = flag_value(f, m)? {
            req.insert(f.json.clone(), v);
        }
    }
    Ok(Value::Object(req))
}

fn flag_value(f: &Field, m: &ArgMatches) -> Result<Option<Value>, CliError> {
    let id = f.json.as_str();
    let flag = f.flag();
    let path = f.json.as_str();
    if f.kind == Kind::Bool && !f.list {
        if m.get_flag(id) {
            return Ok(Some(Value::Bool(true)));
        }
        if m.get_flag(&format!("no-{id}")) {
            return Ok(Some(Value::Bool(false)));
        }
        return Ok(None);
    }
    if !f.list {
        let Some(text) = m.get_one::<String>(id) else {
            return Ok(None);
        };
        let text = read_value(&flag, text)?;
        return match &f.kind {
            Kind::Message(_) | Kind::Map(_) => {
                let (v, typed_text) = if text.trim_start().starts_with('{') {
                    (parse_json(&flag, &text)?, false)
                } else {
                    (parse_shorthand(&flag, &text)?, true)
                };
                value(v, &f.kind, false, path, typed_text)
            }
            kind => value(Value::String(text), kind, false, path, true),
        };
    }
    let Some(words) = m.get_many::<String>(id) else {
        return Ok(None);
    };
    let words: Vec<String> = words
        .map(|w| read_value(&flag, w))
        .collect::<Result<_, _>>()?;
    if let [one] = words.as_slice() {
        if one.trim_start().starts_with('[') {
            return value(parse_json(&flag, one)?, &f.kind, true, path, false);
        }
    }
    let mut items = Vec::new();
    for w in &words {
        match &f.kind {
            Kind::Message(_) | Kind::Map(_) => {
                let (v, typed_text) = if w.trim_start().starts_with('{') {
                    (parse_json(&flag, w)?, false)
                } else {
                    (parse_shorthand(&flag, w)?, true)
                };
                let at = format!("{path}[{}]", items.len());
                items.extend(value(v, &f.kind, false, &at, typed_text)?);
            }
            kind => {
                for item in split_commas(w) {
                    let at = format!("{path}[{}]", items.len());
                    items.extend(value(Value::String(item), kind, false, &at, true)?);
                }
            }
        }
    }
    Ok(Some(Value::Array(items)))
}

/// Splits a list flag's word on commas not escaped as `\,`.
fn split_commas(w: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = w.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&',') => {
                cur.push(',');
                chars.next();
            }
            ',' => out.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

fn kind_name(kind: &Kind, list: bool) -> &'static str {
    if list {
        return "list";
    }
    match kind {
        Kind::Str | Kind::Timestamp => "string",
        Kind::Int => "integer",
        Kind::Float => "number",
        Kind::Bool => "boolean",
        Kind::Message(_) | Kind::Map(_) => "object",
    }
}

fn invalid(path: &str, v: &Value, kind: &Kind, list: bool) -> CliError {
    let shown = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    CliError::Usage(format!(
        "Parameter validation failed: Invalid type for parameter {path}, value: {shown}, type: {}, valid types: {}",
        type_name(v),
        kind_name(kind, list)
    ))
}

/// Walks `v` against the message `msg`: keys that differ from a field's JSON name only in
/// letter case take the model's spelling; any other key is an error naming it with its path.
/// `text`: the values came from shorthand, so text is typed by the model (`true`, `60`) and a
/// single value stands for a one-item list. Keys inside user maps are never touched.
pub fn normalize(v: Value, msg: &Msg, path: &str, text: bool) -> Result<Value, CliError> {
    let Value::Object(obj) = v else {
        return Err(invalid(path, &v, &Kind::Message(msg.name.clone()), false));
    };
    let mut out = Map::new();
    let mut given: Map<String, Value> = Map::new();
    for (key, val) in obj {
        let field = msg.field(&key).or_else(|| {
            msg.fields
                .iter()
                .find(|f| f.json.eq_ignore_ascii_case(&key))
        });
        let Some(f) = field else {
            let names: Vec<&str> = msg.fields.iter().map(|f| f.json.as_str()).collect();
            let place = if path.is_empty() { "input" } else { path };
            return Err(CliError::Usage(format!(
                "Parameter validation failed: Unknown parameter in {place}: \"{key}\", must be one of: {}",
                names.join(", ")
            )));
        };
        let at = if path.is_empty() {
            f.json.clone()
        } else {
            format!("{path}.{}", f.json)
        };
        if let Some(Value::String(first)) = given.get(&f.json) {
            return Err(CliError::Usage(format!(
                "Parameter validation failed: \"{first}\" and \"{key}\" are both the parameter {at}"
            )));
        }
        given.insert(f.json.clone(), Value::String(key.clone()));
        if let Some(v) = value(val, &f.kind, f.list, &at, text)? {
            out.insert(f.json.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

/// A timestamp as the aws CLI takes it (ISO 8601 with or without a zone — without one it is
/// UTC —, a date alone, or seconds since the epoch), as the RFC 3339 the contract's JSON wants.
fn timestamp(text: &str) -> Option<Value> {
    let t = text.trim();
    if let Ok(secs) = t.parse::<f64>() {
        return epoch(secs);
    }
    let num = |s: &str| -> Option<i64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (date, rest) = t.split_at(t.find(['T', 't', ' ']).unwrap_or(t.len()));
    let mut d = date.splitn(3, '-');
    let (y, mo, day) = (num(d.next()?)?, num(d.next()?)?, num(d.next()?)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) {
        return None;
    }
    let rest = rest.get(1..).unwrap_or("");
    // The zone: Z, ±HH:MM or ±HHMM at the end.
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (c, z) = rest.split_at(at);
        let sign = if z.starts_with('-') { -1 } else { 1 };
        let digits: String = z[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 {
            return None;
        }
        let (h, m) = (num(&digits[..2])?, num(&digits[2..])?);
        (c, sign * (h * 3600 + m * 60))
    } else {
        (rest, 0)
    };
    let mut secs_of_day = 0i64;
    let mut nanos = 0i32;
    if !clock.is_empty() {
        let mut parts = clock.splitn(3, ':');
        let h = num(parts.next()?)?;
        let m = num(parts.next()?)?;
        let (sec, frac) = match parts.next() {
            Some(sf) => match sf.split_once('.') {
                Some((s, f)) => (num(s)?, f),
                None => (num(sf)?, ""),
            },
            None => (0, ""),
        };
        if h > 23 || m > 59 || sec > 60 {
            return None;
        }
        if !frac.is_empty() {
            let f: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            nanos = num(&f)? as i32;
        }
        secs_of_day = h * 3600 + m * 60 + sec;
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let (y2, m2) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * m2 + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let seconds = days * 86_400 + secs_of_day - offset;
    serde_json::to_value(berth_proto::Timestamp { seconds, nanos }).ok()
}

/// Seconds since the epoch as the contract's RFC 3339 timestamp.
fn epoch(secs: f64) -> Option<Value> {
    if !secs.is_finite() {
        return None;
    }
    let whole = secs.floor();
    let nanos = ((secs - whole) * 1e9).round() as i32;
    serde_json::to_value(berth_proto::Timestamp {
        seconds: whole as i64,
        nanos: nanos.min(999_999_999),
    })
    .ok()
}

/// Types one value by the model; `None` for a JSON null (an absent parameter).
fn value(
    v: Value,
    kind: &Kind,
    list: bool,
    path: &str,
    text: bool,
) -> Result<Option<Value>, CliError> {
    if v.is_null() {
        return Ok(None);
    }
    if list {
        let items = match v {
            Value::Array(items) => items,
            // aws's shorthand takes one value where a list is expected.
            other if text => vec![other],
            other => return Err(invalid(path, &other, kind, true)),
        };
        let mut out = Vec::new();
        for (i, item) in items.into_iter().enumerate() {
            out.extend(value(item, kind, false, &format!("{path}[{i}]"), text)?);
        }
        return Ok(Some(Value::Array(out)));
    }
    let bad = |v: &Value| invalid(path, v, kind, false);
    let typed = match (kind, v) {
        (Kind::Str, v @ Value::String(_)) => v,
        (Kind::Timestamp, Value::String(t)) => match timestamp(&t) {
            Some(v) => v,
            None => return Err(bad(&Value::String(t))),
        },
        (Kind::Timestamp, Value::Number(n)) => match n.as_f64().and_then(epoch) {
            Some(v) => v,
            None => return Err(bad(&Value::Number(n))),
        },
        (Kind::Int, Value::Number(n)) if n.is_i64() || n.is_u64() => Value::Number(n),
        (Kind::Int, Value::String(s)) if text => match s.trim().parse::<i64>() {
            Ok(n) => Value::from(n),
            Err(_) => return Err(bad(&Value::String(s))),
        },
        (Kind::Float, v @ Value::Number(_)) => v,
        (Kind::Float, Value::String(s)) if text => match s.trim().parse::<f64>() {
            Ok(n) => Value::from(n),
            Err(_) => return Err(bad(&Value::String(s))),
        },
        (Kind::Bool, v @ Value::Bool(_)) => v,
        (Kind::Bool, Value::String(s)) if text && s.eq_ignore_ascii_case("true") => {
            Value::Bool(true)
        }
        (Kind::Bool, Value::String(s)) if text && s.eq_ignore_ascii_case("false") => {
            Value::Bool(false)
        }
        (Kind::Message(name), v @ Value::Object(_)) => {
            let msg = model()
                .message(name)
                .unwrap_or_else(|| panic!("the model names {name} but lacks it"));
            normalize(v, msg, path, text)?
        }
        (Kind::Map(vk), Value::Object(map)) => {
            let mut out = Map::new();
            for (k, item) in map {
                // The user's own key, verbatim.
                let at = format!("{path}.{k}");
                if let Some(item) = value(item, vk, false, &at, text)? {
                    out.insert(k, item);
                }
            }
            Value::Object(out)
        }
        (_, v) => return Err(bad(&v)),
    };
    Ok(Some(typed))
}

/// The skeleton of a message, as the aws CLI's `--generate-cli-skeleton` builds it: every
/// field, strings empty (`names`: the field's name, for a sample output), numbers 0, booleans
/// true, one item per list, `KeyName` per map.
pub fn skeleton(msg_name: &str, names: bool) -> Value {
    fn msg(name: &str, names: bool, stack: &mut Vec<String>) -> Value {
        let mut out = Map::new();
        if stack.iter().any(|s| s == name) {
            return Value::Object(out);
        }
        let Some(m) = model().message(name) else {
            return Value::Object(out);
        };
        stack.push(name.to_string());
        for f in &m.fields {
            let one = item(&f.kind, &f.json, names, stack);
            out.insert(
                f.json.clone(),
                if f.list { Value::Array(vec![one]) } else { one },
            );
        }
        stack.pop();
        Value::Object(out)
    }
    fn item(kind: &Kind, field: &str, names: bool, stack: &mut Vec<String>) -> Value {
        match kind {
            Kind::Str => Value::String(if names {
                field.to_string()
            } else {
                String::new()
            }),
            Kind::Timestamp => Value::String("1970-01-01T00:00:00Z".into()),
            Kind::Int => Value::from(0),
            Kind::Float => Value::from(0.0),
            Kind::Bool => Value::Bool(true),
            Kind::Message(m) => msg(m, names, stack),
            Kind::Map(v) => {
                let mut map = Map::new();
                map.insert("KeyName".into(), item(v, field, names, stack));
                Value::Object(map)
            }
        }
    }
    msg(msg_name, names, &mut Vec::new())
}

#[cfg(test)]
mod tests;
