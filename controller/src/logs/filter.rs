//! CloudWatch Logs' filter patterns for unstructured events: terms that must all appear
//! (`ERROR timeout`), quoted phrases (`"connection refused"`), exclusions (`ERROR -retry`) and
//! alternatives (`?ERROR ?WARN`: any of them). Matching is case-sensitive, as CloudWatch's.
//! JSON (`{ $.level = ... }`), space-delimited (`[ip, user, ...]`) and regular-expression
//! (`%...%`) patterns are refused by name rather than matched wrongly.

/// A parsed filter pattern.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterPattern {
    all: Vec<String>,
    none: Vec<String>,
    any: Vec<String>,
}

/// Why a pattern is refused (InvalidParameterException).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Invalid filter pattern {pattern:?}: {why}")]
pub struct PatternError {
    /// The pattern.
    pub pattern: String,
    /// What is wrong.
    pub why: String,
}

impl FilterPattern {
    /// Parses `pattern` (empty: every event matches).
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        let refuse = |why: &str| PatternError {
            pattern: pattern.to_string(),
            why: why.to_string(),
        };
        let t = pattern.trim();
        if t.starts_with('{') {
            return Err(refuse("JSON filter patterns ({ $.field ... }) are not supported by Berth; use terms, \"quoted phrases\", -exclusions and ?alternatives"));
        }
        if t.starts_with('[') {
            return Err(refuse("space-delimited filter patterns ([a, b, ...]) are not supported by Berth; use terms, \"quoted phrases\", -exclusions and ?alternatives"));
        }
        if t.starts_with('%') {
            return Err(refuse("regular-expression filter patterns (%...%) are not supported by Berth; use terms, \"quoted phrases\", -exclusions and ?alternatives"));
        }
        let mut p = FilterPattern::default();
        let mut chars = t.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| c.is_whitespace()) {
                chars.next();
            }
            let Some(&c) = chars.peek() else { break };
            let list = match c {
                '-' => {
                    chars.next();
                    &mut p.none
                }
                '?' => {
                    chars.next();
                    &mut p.any
                }
                _ => &mut p.all,
            };
            let mut term = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                let mut closed = false;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next() {
                            Some(n) => term.push(n),
                            None => break,
                        },
                        '"' => {
                            closed = true;
                            break;
                        }
                        c => term.push(c),
                    }
                }
                if !closed {
                    return Err(refuse("a quoted phrase is not closed"));
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c.is_whitespace() {
                        break;
                    }
                    term.push(c);
                    chars.next();
                }
            }
            if term.is_empty() {
                return Err(refuse("an empty term"));
            }
            list.push(term);
        }
        Ok(p)
    }

    /// Whether `message` matches.
    pub fn matches(&self, message: &str) -> bool {
        self.all.iter().all(|t| message.contains(t.as_str()))
            && !self.none.iter().any(|t| message.contains(t.as_str()))
            && (self.any.is_empty() || self.any.iter().any(|t| message.contains(t.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, msg: &str) -> bool {
        FilterPattern::parse(p).unwrap().matches(msg)
    }

    #[test]
    fn terms_are_anded_and_case_sensitive() {
        assert!(m("", "anything"));
        assert!(m("ERROR", "an ERROR here"));
        assert!(!m("ERROR", "an error here"));
        assert!(m("ERROR timeout", "timeout: ERROR"));
        assert!(!m("ERROR timeout", "ERROR only"));
    }

    #[test]
    fn phrases_exclusions_and_alternatives() {
        assert!(m("\"connection refused\"", "dial: connection refused"));
        assert!(!m("\"connection refused\"", "refused connection"));
        assert!(m("ERROR -retry", "ERROR fatal"));
        assert!(!m("ERROR -retry", "ERROR will retry"));
        assert!(m("?ERROR ?WARN", "WARN disk"));
        assert!(!m("?ERROR ?WARN", "INFO ok"));
        assert!(m("-\"not me\" x", "x y"));
        assert!(!m("-\"not me\" x", "x not me"));
    }

    #[test]
    fn unsupported_and_broken_patterns_are_refused_by_name() {
        let e = FilterPattern::parse("{ $.level = \"x\" }").unwrap_err();
        assert!(e.to_string().contains("JSON filter patterns"), "{e}");
        assert!(FilterPattern::parse("[ip, user]").is_err());
        assert!(FilterPattern::parse("%err.*%").is_err());
        let e = FilterPattern::parse("\"open").unwrap_err();
        assert!(e.to_string().contains("not closed"), "{e}");
        assert!(FilterPattern::parse("-").is_err());
    }
}
