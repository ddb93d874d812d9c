//! The aws CLI's shorthand syntax for structure-valued parameters:
//! `key=value,key2=[a,b],key3={k=v}`. Produces JSON for the request decoder.

use serde_json::{Map, Value};

/// Structure fields that are booleans in the model: shorthand gives every value as text.
const BOOLEAN_KEYS: [&str; 9] = [
    "essential",
    "readOnly",
    "autoprovision",
    "disableNetworking",
    "privileged",
    "readonlyRootFilesystem",
    "interactive",
    "pseudoTerminal",
    "enabled",
];

/// A shorthand parse error, naming where it went wrong.
#[derive(Debug, thiserror::Error)]
#[error("Error parsing parameter: {message} at position {pos} of '{input}'")]
pub struct ShorthandError {
    message: String,
    pos: usize,
    input: String,
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
    input: &'a str,
}

impl<'a> Parser<'a> {
    fn err(&self, message: impl Into<String>) -> ShorthandError {
        ShorthandError {
            message: message.into(),
            pos: self.pos,
            input: self.input.to_string(),
        }
    }

    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && self.s[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    /// key=value pairs until `end` (None: end of input).
    fn object(&mut self, end: Option<u8>) -> Result<Map<String, Value>, ShorthandError> {
        let mut map = Map::new();
        loop {
            self.skip_ws();
            if self.peek() == end {
                break;
            }
            let key = self.word(b"=")?;
            if key.is_empty() {
                return Err(self.err("expected a key"));
            }
            self.skip_ws();
            if self.peek() != Some(b'=') {
                return Err(self.err(format!("expected '=' after key '{key}'")));
            }
            self.pos += 1;
            let mut value = self.value()?;
            if BOOLEAN_KEYS.contains(&key.as_str()) {
                if let Value::String(s) = &value {
                    match s.to_ascii_lowercase().as_str() {
                        "true" => value = Value::Bool(true),
                        "false" => value = Value::Bool(false),
                        _ => {}
                    }
                }
            }
            map.insert(key, value);
            self.skip_ws();
            match self.peek() {
                Some(b',') => self.pos += 1,
                c if c == end => break,
                _ => return Err(self.err("expected ',' between key=value pairs")),
            }
        }
        Ok(map)
    }

    fn value(&mut self) -> Result<Value, ShorthandError> {
        self.skip_ws();
        match self.peek() {
            Some(b'[') => {
                self.pos += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_ws();
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                        break;
                    }
                    items.push(self.value()?);
                    self.skip_ws();
                    match self.peek() {
                        Some(b',') => self.pos += 1,
                        Some(b']') => {}
                        _ => return Err(self.err("expected ',' or ']' in a list")),
                    }
                }
                Ok(Value::Array(items))
            }
            Some(b'{') => {
                self.pos += 1;
                let map = self.object(Some(b'}'))?;
                if self.peek() != Some(b'}') {
                    return Err(self.err("expected '}'"));
                }
                self.pos += 1;
                Ok(Value::Object(map))
            }
            _ => Ok(Value::String(self.word(b",]}")?)),
        }
    }

    /// A bare or quoted word, ending before any of `stops`.
    fn word(&mut self, stops: &[u8]) -> Result<String, ShorthandError> {
        self.skip_ws();
        if let Some(q @ (b'"' | b'\'')) = self.peek() {
            self.pos += 1;
            let start = self.pos;
            while self.pos < self.s.len() && self.s[self.pos] != q {
                self.pos += 1;
            }
            if self.pos >= self.s.len() {
                return Err(self.err("unterminated quote"));
            }
            let w = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
            self.pos += 1;
            return Ok(w);
        }
        let start = self.pos;
        while self.pos < self.s.len() && !stops.contains(&self.s[self.pos]) {
            self.pos += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.pos])
            .trim()
            .to_string())
    }
}

/// Parses one structure in shorthand syntax.
pub fn parse(input: &str) -> Result<Value, ShorthandError> {
    let mut p = Parser {
        s: input.as_bytes(),
        pos: 0,
        input,
    };
    let map = p.object(None)?;
    Ok(Value::Object(map))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_guides_forms() {
        assert_eq!(
            parse("key=Environment,value=Production").unwrap(),
            json!({"key": "Environment", "value": "Production"})
        );
        assert_eq!(
            parse("awsvpcConfiguration={\n    subnets=[subnet-abc123,subnet-def456],\n    securityGroups=[sg-12345678],\n    assignPublicIp=ENABLED\n  }").unwrap(),
            json!({"awsvpcConfiguration": {"subnets": ["subnet-abc123", "subnet-def456"], "securityGroups": ["sg-12345678"], "assignPublicIp": "ENABLED"}})
        );
        assert_eq!(
            parse("name=x,essential=false").unwrap(),
            json!({"name": "x", "essential": false})
        );
    }

    #[test]
    fn rejects_broken_input() {
        assert!(parse("key").is_err());
        assert!(parse("a={b=c").is_err());
        assert!(parse("a=[b,c").is_err());
    }
}
