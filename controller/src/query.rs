//! ECS's cluster query language: the expressions of `memberOf` placement constraints and of
//! `list-container-instances --filter`, parsed once and evaluated over a plain [`Target`] (what a
//! container instance shows), so it is unit-tested without a controller.
//!
//! `subject operator [argument]`, combined with `&&`/`and`, `||`/`or`, `!`/`not` and
//! parentheses (`and` binds tighter than `or`). Subjects: `attribute:NAME`, `ec2InstanceId`,
//! `registeredAt`, `runningTasksCount`, `agentConnected`, `agentVersion`, `task:group`.
//! Operators: `==`/`equals`, `!=`/`not_equals`, `>`/`greater_than`, `>=`/`greater_than_equal`,
//! `<`/`less_than`, `<=`/`less_than_equal`, `exists`, `!exists`/`not_exists`, `in`,
//! `!in`/`not_in` (argument `[a, b]`), `=~`/`matches`, `!~`/`not_matches` (a regular expression
//! that must match the whole value, as Java's `Pattern.matches` in ECS). Anything else is
//! refused by name.

use regex::Regex;
use std::collections::{BTreeMap, BTreeSet};

/// The longest expression ECS accepts.
pub const MAX_EXPRESSION_LENGTH: usize = 2000;

/// Why an expression does not parse; names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, QueryError> {
    Err(QueryError(m.into()))
}

/// What an expression is evaluated against: one container instance.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// Attribute name → value (`None` for a valueless attribute such as a capability).
    pub attributes: BTreeMap<String, Option<String>>,
    /// The host's instance id (Berth: its hostname).
    pub ec2_instance_id: Option<String>,
    /// Registration time, seconds since the epoch.
    pub registered_at: Option<i64>,
    /// Tasks on the instance not yet STOPPED (ECS's runningTasksCount, pending ones included
    /// for placement).
    pub running_tasks_count: i64,
    /// Whether its agent is connected.
    pub agent_connected: bool,
    /// Its agent's version.
    pub agent_version: Option<String>,
    /// Task groups of its tasks not yet STOPPED, with how many tasks each.
    pub task_groups: BTreeMap<String, i64>,
}

/// What an expression tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// `attribute:NAME`
    Attribute(String),
    /// `ec2InstanceId`
    Ec2InstanceId,
    /// `registeredAt`
    RegisteredAt,
    /// `runningTasksCount`
    RunningTasksCount,
    /// `agentConnected`
    AgentConnected,
    /// `agentVersion`
    AgentVersion,
    /// `task:group`
    TaskGroup,
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `exists`
    Exists,
    /// `!exists`
    NotExists,
    /// `in`
    In,
    /// `!in`
    NotIn,
    /// `=~`
    Matches,
    /// `!~`
    NotMatches,
}

/// A parsed expression.
#[derive(Debug, Clone)]
pub enum Expr {
    /// Both.
    And(Box<Expr>, Box<Expr>),
    /// Either.
    Or(Box<Expr>, Box<Expr>),
    /// Not.
    Not(Box<Expr>),
    /// `subject operator [argument]`.
    Cmp {
        /// What is tested.
        subject: Subject,
        /// How.
        op: Op,
        /// Against what.
        arg: Arg,
    },
}

/// An operator's argument.
#[derive(Debug, Clone)]
pub enum Arg {
    /// `exists` / `!exists`.
    None,
    /// A literal value.
    Value(String),
    /// `[a, b, ...]`.
    List(Vec<String>),
    /// A pattern, anchored at both ends.
    Pattern(Regex),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    And,
    Or,
    Not,
    Op(Op),
    Word(String),
}

fn lex(s: &str) -> Result<Vec<Tok>, QueryError> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let special = |c: char| c.is_whitespace() || "()[],=!<>&|\"'".contains(c);
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let two = |t: Tok, out: &mut Vec<Tok>, i: &mut usize| {
            out.push(t);
            *i += 2;
        };
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1
            }
            '[' => {
                out.push(Tok::LBracket);
                i += 1
            }
            ']' => {
                out.push(Tok::RBracket);
                i += 1
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1
            }
            '&' if next == Some('&') => two(Tok::And, &mut out, &mut i),
            '|' if next == Some('|') => two(Tok::Or, &mut out, &mut i),
            '=' if next == Some('=') => two(Tok::Op(Op::Eq), &mut out, &mut i),
            '=' if next == Some('~') => two(Tok::Op(Op::Matches), &mut out, &mut i),
            '!' if next == Some('=') => two(Tok::Op(Op::Ne), &mut out, &mut i),
            '!' if next == Some('~') => two(Tok::Op(Op::NotMatches), &mut out, &mut i),
            '>' if next == Some('=') => two(Tok::Op(Op::Ge), &mut out, &mut i),
            '<' if next == Some('=') => two(Tok::Op(Op::Le), &mut out, &mut i),
            '>' => {
                out.push(Tok::Op(Op::Gt));
                i += 1
            }
            '<' => {
                out.push(Tok::Op(Op::Lt));
                i += 1
            }
            '!' => {
                let rest: String = chars[i + 1..].iter().collect();
                let word_ends = |w: &str| {
                    rest.starts_with(w) && rest[w.len()..].chars().next().is_none_or(special)
                };
                if word_ends("exists") {
                    out.push(Tok::Op(Op::NotExists));
                    i += 1 + "exists".len();
                } else if word_ends("in") {
                    out.push(Tok::Op(Op::NotIn));
                    i += 1 + "in".len();
                } else {
                    out.push(Tok::Not);
                    i += 1;
                }
            }
            '"' | '\'' => {
                let end = chars[i + 1..]
                    .iter()
                    .position(|&x| x == c)
                    .ok_or_else(|| QueryError(format!("unterminated quote {c} at {i}")))?;
                out.push(Tok::Word(chars[i + 1..i + 1 + end].iter().collect()));
                i += end + 2;
            }
            c if special(c) => return err(format!("unexpected '{c}' at position {i}")),
            _ => {
                let start = i;
                while i < chars.len() && !special(chars[i]) {
                    i += 1;
                }
                let w: String = chars[start..i].iter().collect();
                out.push(match w.as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    "equals" => Tok::Op(Op::Eq),
                    "not_equals" => Tok::Op(Op::Ne),
                    "greater_than" => Tok::Op(Op::Gt),
                    "greater_than_equal" => Tok::Op(Op::Ge),
                    "less_than" => Tok::Op(Op::Lt),
                    "less_than_equal" => Tok::Op(Op::Le),
                    "exists" => Tok::Op(Op::Exists),
                    "not_exists" => Tok::Op(Op::NotExists),
                    "in" => Tok::Op(Op::In),
                    "not_in" => Tok::Op(Op::NotIn),
                    "matches" => Tok::Op(Op::Matches),
                    "not_matches" => Tok::Op(Op::NotMatches),
                    _ => Tok::Word(w),
                });
            }
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
    fn or(&mut self) -> Result<Expr, QueryError> {
        let mut e = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.bump();
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, QueryError> {
        let mut e = self.unary()?;
        while self.peek() == Some(&Tok::And) {
            self.bump();
            e = Expr::And(Box::new(e), Box::new(self.unary()?));
        }
        Ok(e)
    }
    fn unary(&mut self) -> Result<Expr, QueryError> {
        match self.bump() {
            Some(Tok::Not) => Ok(Expr::Not(Box::new(self.unary()?))),
            Some(Tok::LParen) => {
                let e = self.or()?;
                match self.bump() {
                    Some(Tok::RParen) => Ok(e),
                    _ => err("missing ')'"),
                }
            }
            Some(Tok::Word(w)) => self.cmp(&w),
            Some(t) => err(format!("expected a subject, found {}", show(&t))),
            None => err("expected a subject, found the end of the expression"),
        }
    }
    fn cmp(&mut self, subject: &str) -> Result<Expr, QueryError> {
        let subject = parse_subject(subject)?;
        let op = match self.bump() {
            Some(Tok::Op(op)) => op,
            Some(t) => return err(format!("expected an operator, found {}", show(&t))),
            None => return err("expected an operator, found the end of the expression"),
        };
        check_op(&subject, op)?;
        let arg = match op {
            Op::Exists | Op::NotExists => Arg::None,
            Op::In | Op::NotIn => {
                if self.bump() != Some(Tok::LBracket) {
                    return err("in / !in take a list: [value1, value2, ...]");
                }
                let mut items = Vec::new();
                loop {
                    match self.bump() {
                        Some(Tok::Word(w)) => items.push(w),
                        Some(Tok::RBracket) if items.is_empty() => break,
                        _ => return err("a list holds values separated by ',' and ends with ']'"),
                    }
                    match self.bump() {
                        Some(Tok::Comma) => continue,
                        Some(Tok::RBracket) => break,
                        _ => return err("a list holds values separated by ',' and ends with ']'"),
                    }
                }
                for v in &items {
                    check_value(&subject, v)?;
                }
                Arg::List(items)
            }
            Op::Matches | Op::NotMatches => match self.bump() {
                Some(Tok::Word(p)) => Arg::Pattern(
                    Regex::new(&format!("^(?:{p})$"))
                        .map_err(|e| QueryError(format!("pattern '{p}': {e}")))?,
                ),
                _ => return err("=~ / !~ take a pattern"),
            },
            _ => match self.bump() {
                Some(Tok::Word(v)) => {
                    check_value(&subject, &v)?;
                    Arg::Value(v)
                }
                _ => return err("the operator needs a value"),
            },
        };
        Ok(Expr::Cmp { subject, op, arg })
    }
}

fn show(t: &Tok) -> String {
    match t {
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Comma => "','".into(),
        Tok::And => "'and'".into(),
        Tok::Or => "'or'".into(),
        Tok::Not => "'not'".into(),
        Tok::Op(o) => format!("operator {o:?}"),
        Tok::Word(w) => format!("'{w}'"),
    }
}

fn parse_subject(s: &str) -> Result<Subject, QueryError> {
    if let Some(name) = s.strip_prefix("attribute:") {
        if name.is_empty() {
            return err("attribute: needs a name (attribute:NAME)");
        }
        return Ok(Subject::Attribute(name.to_string()));
    }
    Ok(match s {
        "ec2InstanceId" => Subject::Ec2InstanceId,
        "registeredAt" => Subject::RegisteredAt,
        "runningTasksCount" => Subject::RunningTasksCount,
        "agentConnected" => Subject::AgentConnected,
        "agentVersion" => Subject::AgentVersion,
        "task:group" => Subject::TaskGroup,
        other => {
            return err(format!(
                "unknown subject '{other}' (Berth supports attribute:NAME, ec2InstanceId, registeredAt, runningTasksCount, agentConnected, agentVersion, task:group)"
            ))
        }
    })
}

/// The operators ECS documents for each subject.
fn check_op(subject: &Subject, op: Op) -> Result<(), QueryError> {
    use Op::*;
    let ok = match subject {
        Subject::Attribute(_) => true,
        Subject::Ec2InstanceId | Subject::AgentConnected | Subject::TaskGroup => {
            matches!(op, Eq | Ne | In | NotIn | Matches | NotMatches)
        }
        Subject::RegisteredAt | Subject::RunningTasksCount | Subject::AgentVersion => {
            matches!(op, Eq | Ne | Gt | Ge | Lt | Le)
        }
    };
    if ok {
        Ok(())
    } else {
        err(format!(
            "operator {op:?} is not valid for subject {subject:?}"
        ))
    }
}

fn check_value(subject: &Subject, v: &str) -> Result<(), QueryError> {
    match subject {
        Subject::RegisteredAt => parse_date(v).map(|_| ()),
        Subject::RunningTasksCount => v
            .parse::<i64>()
            .map(|_| ())
            .map_err(|_| QueryError(format!("runningTasksCount: '{v}' is not an integer"))),
        Subject::AgentConnected if v != "true" && v != "false" => {
            err(format!("agentConnected: '{v}' is not true or false"))
        }
        _ => Ok(()),
    }
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// A registeredAt value: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM:SSZ` or with a `±HH:MM` offset; years
/// 1-9999, offsets up to 23:59.
pub fn parse_date(v: &str) -> Result<i64, QueryError> {
    let bad = || {
        QueryError(format!(
            "registeredAt: '{v}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)"
        ))
    };
    // Digits only: no signs, so every part is bounded below by 0 and above by the checks that
    // follow (no arithmetic overflow on huge years or offsets).
    let num = |s: &str| {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let (date, time) = match v.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (v, None),
    };
    let parts: Vec<&str> = date.split('-').collect();
    let [y, m, d] = parts.as_slice() else {
        return Err(bad());
    };
    let (y, m, d) = (num(y)?, num(m)?, num(d)?);
    if !(1..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, d) * 86400;
    if let Some(t) = time {
        let (clock, offset) = if let Some(c) = t.strip_suffix('Z') {
            (c, 0)
        } else if let Some(i) = t.rfind(['+', '-']) {
            let (c, o) = t.split_at(i);
            let sign = if o.starts_with('-') { -1 } else { 1 };
            let (oh, om) = o[1..].split_once(':').ok_or_else(bad)?;
            let (oh, om) = (num(oh)?, num(om)?);
            if oh > 23 || om > 59 {
                return Err(bad());
            }
            (c, sign * (oh * 3600 + om * 60))
        } else {
            return Err(bad());
        };
        let hms: Vec<&str> = clock.split(':').collect();
        let [h, mi, s] = hms.as_slice() else {
            return Err(bad());
        };
        let (h, mi, s) = (num(h)?, num(mi)?, num(s)?);
        if h > 23 || mi > 59 || s > 60 {
            return Err(bad());
        }
        secs += h * 3600 + mi * 60 + s - offset;
    }
    Ok(secs)
}

/// Parses an expression.
pub fn parse(expression: &str) -> Result<Expr, QueryError> {
    if expression.len() > MAX_EXPRESSION_LENGTH {
        return err(format!(
            "the expression is longer than {MAX_EXPRESSION_LENGTH} characters"
        ));
    }
    let toks = lex(expression)?;
    if toks.is_empty() {
        return err("the expression is empty");
    }
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    match p.bump() {
        None => Ok(e),
        Some(t) => err(format!(
            "unexpected {} after a complete expression",
            show(&t)
        )),
    }
}

fn compare<T: PartialOrd>(a: T, op: Op, b: T) -> bool {
    match op {
        Op::Eq => a == b,
        Op::Ne => a != b,
        Op::Gt => a > b,
        Op::Ge => a >= b,
        Op::Lt => a < b,
        Op::Le => a <= b,
        _ => false,
    }
}

/// Dotted version numbers compare numerically part by part ("1.10.0" > "1.9.2").
fn version_key(v: &str) -> Vec<u64> {
    v.trim_start_matches('v')
        .split(['.', '-'])
        .map(|p| p.parse().unwrap_or(0))
        .collect()
}

/// One value against a value, list or pattern.
fn test_value(value: Option<&str>, op: Op, arg: &Arg) -> bool {
    match (op, arg) {
        (Op::In, Arg::List(l)) => value.is_some_and(|v| l.iter().any(|x| x == v)),
        (Op::NotIn, Arg::List(l)) => !value.is_some_and(|v| l.iter().any(|x| x == v)),
        (Op::Matches, Arg::Pattern(p)) => value.is_some_and(|v| p.is_match(v)),
        (Op::NotMatches, Arg::Pattern(p)) => !value.is_some_and(|v| p.is_match(v)),
        (Op::Eq, Arg::Value(x)) => value == Some(x.as_str()),
        (Op::Ne, Arg::Value(x)) => value != Some(x.as_str()),
        (op, Arg::Value(x)) => value.is_some_and(|v| match (v.parse::<f64>(), x.parse::<f64>()) {
            (Ok(a), Ok(b)) => compare(a, op, b),
            _ => compare(v, op, x.as_str()),
        }),
        _ => false,
    }
}

impl Expr {
    /// Whether `t` satisfies the expression.
    pub fn matches(&self, t: &Target) -> bool {
        match self {
            Expr::And(a, b) => a.matches(t) && b.matches(t),
            Expr::Or(a, b) => a.matches(t) || b.matches(t),
            Expr::Not(a) => !a.matches(t),
            Expr::Cmp { subject, op, arg } => {
                match subject {
                    Subject::Attribute(name) => match op {
                        Op::Exists => t.attributes.contains_key(name),
                        Op::NotExists => !t.attributes.contains_key(name),
                        _ => {
                            test_value(t.attributes.get(name).and_then(|v| v.as_deref()), *op, arg)
                        }
                    },
                    Subject::Ec2InstanceId => test_value(t.ec2_instance_id.as_deref(), *op, arg),
                    Subject::AgentConnected => test_value(
                        Some(if t.agent_connected { "true" } else { "false" }),
                        *op,
                        arg,
                    ),
                    Subject::TaskGroup => {
                        // Positive operators: some task's group satisfies it; negative ones:
                        // none does.
                        let positive = match op {
                            Op::Ne => Op::Eq,
                            Op::NotIn => Op::In,
                            Op::NotMatches => Op::Matches,
                            o => *o,
                        };
                        let any = t
                            .task_groups
                            .keys()
                            .any(|g| test_value(Some(g), positive, arg));
                        if positive == *op {
                            any
                        } else {
                            !any
                        }
                    }
                    Subject::RegisteredAt => match (t.registered_at, arg) {
                        (Some(at), Arg::Value(v)) => {
                            parse_date(v).is_ok_and(|x| compare(at, *op, x))
                        }
                        _ => false,
                    },
                    Subject::RunningTasksCount => match arg {
                        Arg::Value(v) => v
                            .parse::<i64>()
                            .is_ok_and(|x| compare(t.running_tasks_count, *op, x)),
                        _ => false,
                    },
                    Subject::AgentVersion => match (&t.agent_version, arg) {
                        (Some(have), Arg::Value(v)) => {
                            compare(version_key(have), *op, version_key(v))
                        }
                        _ => false,
                    },
                }
            }
        }
    }
}

/// The attribute names an expression mentions (for error details).
pub fn attribute_names(e: &Expr) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(e: &Expr, out: &mut BTreeSet<String>) {
        match e {
            Expr::And(a, b) | Expr::Or(a, b) => {
                walk(a, out);
                walk(b, out);
            }
            Expr::Not(a) => walk(a, out),
            Expr::Cmp {
                subject: Subject::Attribute(n),
                ..
            } => {
                out.insert(n.clone());
            }
            Expr::Cmp { .. } => {}
        }
    }
    walk(e, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> Target {
        let mut t = Target {
            ec2_instance_id: Some("host-a".into()),
            registered_at: Some(parse_date("2024-05-01T12:00:00Z").unwrap()),
            running_tasks_count: 3,
            agent_connected: true,
            agent_version: Some("0.10.2".into()),
            ..Default::default()
        };
        t.attributes
            .insert("ecs.instance-type".into(), Some("t2.micro".into()));
        t.attributes
            .insert("ecs.availability-zone".into(), Some("us-east-1a".into()));
        t.attributes.insert("stack".into(), Some("prod".into()));
        t.attributes.insert(
            "com.amazonaws.ecs.capability.privileged-container".into(),
            None,
        );
        t.task_groups.insert("family:web".into(), 2);
        t
    }

    fn m(e: &str) -> bool {
        parse(e)
            .unwrap_or_else(|x| panic!("{e}: {x}"))
            .matches(&target())
    }

    #[test]
    fn attribute_operators() {
        assert!(m("attribute:stack == prod"));
        assert!(m("attribute:stack equals prod"));
        assert!(!m("attribute:stack == dev"));
        assert!(m("attribute:stack != dev"));
        assert!(m("attribute:missing != dev"), "absent is not equal");
        assert!(m(
            "attribute:com.amazonaws.ecs.capability.privileged-container exists"
        ));
        assert!(m("attribute:missing !exists"));
        assert!(m("attribute:missing not_exists"));
        assert!(!m("attribute:stack !exists"));
        assert!(m(
            "attribute:ecs.availability-zone in [us-east-1a, us-east-1b]"
        ));
        assert!(!m(
            "attribute:ecs.availability-zone !in [us-east-1a,us-east-1b]"
        ));
        assert!(!m("attribute:missing in [a]"));
        assert!(m("attribute:ecs.instance-type =~ t2.*"));
        assert!(!m("attribute:ecs.instance-type =~ t3.*"));
        assert!(
            !m("attribute:ecs.instance-type =~ t2"),
            "the whole value must match"
        );
        assert!(m("attribute:ecs.instance-type !~ g2.*"));
        assert!(m("attribute:stack == 'prod'"));
    }

    #[test]
    fn fields_compare_by_their_kind() {
        assert!(m("ec2InstanceId == host-a"));
        assert!(m("ec2InstanceId in [host-b, host-a]"));
        assert!(m("ec2InstanceId =~ host-.*"));
        assert!(m("runningTasksCount > 2"));
        assert!(m("runningTasksCount <= 3"));
        assert!(!m("runningTasksCount < 3"));
        assert!(m("registeredAt >= 2024-05-01"));
        assert!(m("registeredAt < 2024-05-01T13:00:00Z"));
        assert!(m("registeredAt > 2024-05-01T13:00:00+02:00"));
        assert!(m("agentConnected == true"));
        assert!(m("agentVersion > 0.9.9"), "versions compare numerically");
        assert!(m("task:group == family:web"));
        assert!(m("task:group != family:db"));
        assert!(!m("task:group != family:web"));
        assert!(m("task:group =~ family:.*"));
    }

    #[test]
    fn boolean_operators_and_precedence() {
        assert!(m("attribute:stack == prod && runningTasksCount > 1"));
        assert!(m("attribute:stack == dev or attribute:stack == prod"));
        assert!(!m("not attribute:stack == prod"));
        assert!(m("!(attribute:stack == dev)"));
        // and binds tighter than or: true || (false && false).
        assert!(m(
            "attribute:stack == prod || attribute:stack == dev && runningTasksCount > 9"
        ));
        assert!(!m(
            "(attribute:stack == prod || attribute:stack == dev) && runningTasksCount > 9"
        ));
    }

    #[test]
    fn what_is_not_supported_is_refused_by_name() {
        for (e, names) in [
            ("instanceType == t2.micro", "instanceType"),
            ("attribute:a ==", "needs a value"),
            ("attribute:a", "operator"),
            ("attribute:a == b c", "'c'"),
            ("(attribute:a == b", "')'"),
            ("runningTasksCount > many", "many"),
            ("runningTasksCount =~ 1.*", "not valid"),
            ("registeredAt > yesterday", "yesterday"),
            ("ec2InstanceId > a", "not valid"),
            ("attribute:a in [b, c", "']'"),
            ("attribute:a =~ (", "pattern"),
            ("", "empty"),
        ] {
            let e2 = parse(e).unwrap_err();
            assert!(e2.0.contains(names), "{e}: {e2}");
        }
        assert!(parse(&"a".repeat(2001)).is_err());
    }

    #[test]
    fn dates_are_seconds_since_the_epoch() {
        assert_eq!(parse_date("1970-01-01").unwrap(), 0);
        assert_eq!(parse_date("2000-03-01T00:00:00Z").unwrap(), 951868800);
        assert_eq!(parse_date("2000-03-01T01:00:00+01:00").unwrap(), 951868800);
        assert_eq!(
            parse_date("9999-12-31T23:59:59-23:59").unwrap(),
            253402387139
        );
    }

    /// Huge years and offsets are refused as dates, never overflowed (a panic in debug builds,
    /// a wrapped, wrong instant in release ones); so are signs inside the parts.
    #[test]
    fn out_of_range_dates_are_refused_not_overflowed() {
        for v in [
            "99999999999999-01-01",
            "9223372036854775807-01-01",
            "10000-01-01",
            "0000-01-01",
            "2024-01-01T00:00:00+99999999999999:00",
            "2024-01-01T00:00:00+00:9223372036854775807",
            "2024-01-01T00:00:00+24:00",
            "2024-01-01T-1:00:00Z",
            "+2024-01-01",
        ] {
            let e = parse_date(v).unwrap_err();
            assert!(e.0.starts_with("registeredAt:"), "{v}: {e}");
            let e = parse(&format!("registeredAt > {v}")).unwrap_err();
            assert!(e.0.contains("registeredAt"), "{v}: {e}");
        }
    }
}
