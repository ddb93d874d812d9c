//! The aws CLI's shorthand syntax for structure-valued parameters, by its grammar
//! (`key=value,key2=[a,b],key3={k=v}`, `command=sleep,60` as a list, `\,` escapes, quotes,
//! `key@=file://PATH`). Values come out as text, lists and objects: the request model types them
//! afterwards (booleans, numbers, a single value where a list is expected).

use serde_json::{Map, Value};

/// A shorthand parse error: what was expected, what was found and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Expected: '{expected}', received: '{received}' at position {pos} of input: {input}")]
pub struct ShorthandError {
    expected: String,
    received: String,
    pos: usize,
    input: String,
}

struct Parser<'a> {
    s: Vec<char>,
    pos: usize,
    input: &'a str,
    paramfile: bool,
}

// The aws CLI's character classes: a value starts with a START char; the first value of a
// key may then hold '=', '[' and '{'; later values of a comma list may hold ']' and '}' but not
// '=' (so `a=b,c=d` reads as two keys, `a=b,c` as a list).
fn is_start(c: char) -> bool {
    !(c.is_whitespace() || matches!(c, '"' | '\'' | ',' | '=' | '[' | '{') || c < ' ')
}
fn is_first_follow(c: char) -> bool {
    c.is_whitespace() || !(matches!(c, '"' | '\'' | ',' | ']' | '}') || c < ' ')
}
fn is_second_follow(c: char) -> bool {
    c.is_whitespace() || !(matches!(c, '"' | '\'' | ',' | '=') || c < ' ')
}

impl Parser<'_> {
    fn cur(&self) -> Option<char> {
        self.s.get(self.pos).copied()
    }

    fn err(&self, expected: impl Into<String>) -> ShorthandError {
        ShorthandError {
            expected: expected.into(),
            received: self.cur().map_or("EOF".to_string(), String::from),
            pos: self.pos,
            input: self.input.to_string(),
        }
    }

    fn ws(&mut self) {
        while self.cur().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn expect(&mut self, c: char, ws: bool) -> Result<(), ShorthandError> {
        if ws {
            self.ws();
        }
        if self.cur() != Some(c) {
            return Err(self.err(c));
        }
        self.pos += 1;
        if ws {
            self.ws();
        }
        Ok(())
    }

    fn parameter(&mut self) -> Result<Map<String, Value>, ShorthandError> {
        let mut params = Map::new();
        let (k, v) = self.keyval()?;
        params.insert(k, v);
        while self.pos < self.s.len() {
            self.expect(',', true)?;
            let at = self.pos;
            let (k, v) = self.keyval()?;
            if params.contains_key(&k) {
                return Err(ShorthandError {
                    expected: format!("a key other than '{k}' (it is given twice)"),
                    received: k,
                    pos: at,
                    input: self.input.to_string(),
                });
            }
            params.insert(k, v);
        }
        Ok(params)
    }

    fn key(&mut self) -> String {
        let start = self.pos;
        while self
            .cur()
            .is_some_and(|c| c.is_ascii_alphanumeric() || "-_.#/:".contains(c))
        {
            self.pos += 1;
        }
        self.s[start..self.pos].iter().collect()
    }

    /// `key=` or `key@=` (the value is a file's text): the key, the `=` consumed.
    fn key_equals(&mut self) -> Result<String, ShorthandError> {
        let key = self.key();
        self.ws();
        self.paramfile = false;
        if self.cur() == Some('@') {
            self.pos += 1;
            self.paramfile = true;
        }
        self.expect('=', true)?;
        Ok(key)
    }

    fn keyval(&mut self) -> Result<(String, Value), ShorthandError> {
        let key = self.key_equals()?;
        Ok((key, self.values()?))
    }

    fn values(&mut self) -> Result<Value, ShorthandError> {
        match self.cur() {
            None => Ok(Value::String(String::new())),
            Some('[') => self.explicit_list(),
            Some('{') => self.hash_literal(),
            Some(_) => self.csv_value(),
        }
    }

    fn csv_value(&mut self) -> Result<Value, ShorthandError> {
        let first = self.first_value()?;
        self.ws();
        if self.cur() != Some(',') {
            return Ok(Value::String(first));
        }
        self.expect(',', true)?;
        let mut list = vec![first.clone()];
        loop {
            let before = self.pos;
            match self.second_value() {
                Ok(v) => {
                    self.ws();
                    if self.cur().is_none() {
                        list.push(v);
                        break;
                    }
                    if self.cur() == Some(',') {
                        self.expect(',', true)?;
                        list.push(v);
                        continue;
                    }
                    // `a=b,c=d`: `c` was a key; go back to the comma before it.
                    self.backtrack(before);
                    break;
                }
                Err(e) => {
                    if self.cur().is_none() {
                        return Err(e);
                    }
                    self.backtrack(before);
                    break;
                }
            }
        }
        if list.len() == 1 {
            return Ok(Value::String(first));
        }
        Ok(Value::Array(list.into_iter().map(Value::String).collect()))
    }

    fn backtrack(&mut self, from: usize) {
        self.pos = from;
        while self.pos > 0 && self.s[self.pos] != ',' {
            self.pos -= 1;
        }
    }

    fn explicit_list(&mut self) -> Result<Value, ShorthandError> {
        self.expect('[', true)?;
        let mut items = Vec::new();
        while self.cur() != Some(']') {
            if self.cur().is_none() {
                return Err(self.err(']'));
            }
            items.push(self.explicit_value()?);
            self.ws();
            if self.cur() != Some(']') {
                self.expect(',', false)?;
                self.ws();
            }
        }
        self.expect(']', false)?;
        Ok(Value::Array(items))
    }

    fn hash_literal(&mut self) -> Result<Value, ShorthandError> {
        self.expect('{', true)?;
        let mut map = Map::new();
        while self.cur() != Some('}') {
            if self.cur().is_none() {
                return Err(self.err('}'));
            }
            let key = self.key_equals()?;
            let v = self.explicit_value()?;
            self.ws();
            if self.cur() != Some('}') {
                self.expect(',', false)?;
                self.ws();
            }
            map.insert(key, v);
        }
        self.expect('}', false)?;
        Ok(Value::Object(map))
    }

    fn explicit_value(&mut self) -> Result<Value, ShorthandError> {
        match self.cur() {
            Some('[') => self.explicit_list(),
            Some('{') => self.hash_literal(),
            _ => Ok(Value::String(self.first_value()?)),
        }
    }

    fn first_value(&mut self) -> Result<String, ShorthandError> {
        match self.cur() {
            Some(q @ ('\'' | '"')) => self.quoted(q),
            _ => Ok(self.word(is_first_follow).unwrap_or_default()),
        }
        .and_then(|v| self.resolve(v))
    }

    fn second_value(&mut self) -> Result<String, ShorthandError> {
        match self.cur() {
            Some(q @ ('\'' | '"')) => self.quoted(q),
            _ => self
                .word(is_second_follow)
                .ok_or_else(|| self.err("<second>")),
        }
        .and_then(|v| self.resolve(v))
    }

    /// A bare word: a start char (or `\,`), then follow chars (or `\,`); `\,` is a comma and
    /// trailing blanks are dropped.
    fn word(&mut self, follow: fn(char) -> bool) -> Option<String> {
        let start = self.pos;
        let escaped =
            |p: &Self, at: usize| p.s.get(at) == Some(&'\\') && p.s.get(at + 1) == Some(&',');
        if escaped(self, self.pos) {
            self.pos += 2;
        } else if self.cur().is_some_and(is_start) {
            self.pos += 1;
        } else {
            return None;
        }
        loop {
            if escaped(self, self.pos) {
                self.pos += 2;
            } else if self.cur().is_some_and(follow) {
                self.pos += 1;
            } else {
                break;
            }
        }
        let w: String = self.s[start..self.pos].iter().collect();
        Some(w.replace("\\,", ",").trim_end().to_string())
    }

    fn quoted(&mut self, q: char) -> Result<String, ShorthandError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.cur() {
                None => {
                    self.pos = start;
                    return Err(self.err(format!("<{q} quoted>")));
                }
                Some('\\') if self.s.get(self.pos + 1) == Some(&q) => self.pos += 2,
                Some(c) if c == q => break,
                Some(_) => self.pos += 1,
            }
        }
        let inner: String = self.s[start + 1..self.pos].iter().collect();
        self.pos += 1;
        Ok(inner
            .replace(&format!("\\{q}"), &q.to_string())
            .replace("\\\\", "\\"))
    }

    /// `key@=file://PATH` reads the value from the file.
    fn resolve(&self, v: String) -> Result<String, ShorthandError> {
        if !self.paramfile {
            return Ok(v);
        }
        match v.strip_prefix("file://") {
            Some(path) => std::fs::read_to_string(path).map_err(|e| ShorthandError {
                expected: format!("a readable file ({e})"),
                received: v.clone(),
                pos: self.pos,
                input: self.input.to_string(),
            }),
            None => Ok(v),
        }
    }
}

/// Parses one value in shorthand syntax: `key=value` pairs.
pub fn parse(input: &str) -> Result<Value, ShorthandError> {
    let mut p = Parser {
        s: input.chars().collect(),
        pos: 0,
        input,
        paramfile: false,
    };
    p.ws();
    Ok(Value::Object(p.parameter()?))
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
    }

    #[test]
    fn a_comma_list_runs_until_the_next_key() {
        // aws's own examples: `foo=a,b,c=d` is foo=[a,b] and c=d.
        assert_eq!(
            parse("name=app,command=sleep,60").unwrap(),
            json!({"name": "app", "command": ["sleep", "60"]})
        );
        assert_eq!(
            parse("foo=a,b,c=d,e=f").unwrap(),
            json!({"foo": ["a", "b"], "c": "d", "e": "f"})
        );
        assert_eq!(parse("a=b").unwrap(), json!({"a": "b"}));
    }

    #[test]
    fn escapes_quotes_and_nesting() {
        assert_eq!(
            parse(r"name=x,value=a\,b").unwrap(),
            json!({"name": "x", "value": "a,b"})
        );
        assert_eq!(
            parse(r#"name='a,b=c',value="say \"hi\"""#).unwrap(),
            json!({"name": "a,b=c", "value": "say \"hi\""})
        );
        assert_eq!(
            parse("containerOverrides=[{name=a,command=[sh,-c,'echo x']},{name=b}]").unwrap(),
            json!({"containerOverrides": [{"name": "a", "command": ["sh", "-c", "echo x"]}, {"name": "b"}]})
        );
        // A first value may hold '=' (an environment value, a URL query).
        assert_eq!(
            parse("name=URL,value=http://x/?a=b").unwrap(),
            json!({"name": "URL", "value": "http://x/?a=b"})
        );
        assert_eq!(parse("a=").unwrap(), json!({"a": ""}));
    }

    #[test]
    fn rejects_broken_input_naming_the_position() {
        let e = parse("key").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Expected: '=', received: 'EOF' at position 3 of input: key"
        );
        assert!(parse("a={b=c").is_err());
        assert!(parse("a=[b,c").is_err());
        assert!(parse("a='open").is_err());
        assert!(parse("a=b,a=c").unwrap_err().to_string().contains("twice"));
    }

    /// Inputs and what aws-cli's own ShorthandParser makes of them (None: a syntax error).
    #[test]
    fn agrees_with_the_aws_cli_parser() {
        let cases: &[(&str, Option<Value>)] = &[
            (
                r#"name=app,command=sleep,60"#,
                Some(json!({"name": "app", "command": ["sleep", "60"]})),
            ),
            (
                r#"foo=a,b,c=d,e=f"#,
                Some(json!({"foo": ["a", "b"], "c": "d", "e": "f"})),
            ),
            (
                r#"name=x,value=a\,b"#,
                Some(json!({"name": "x", "value": "a,b"})),
            ),
            (
                r#"name='a,b=c',value="say \"hi\"""#,
                Some(json!({"name": "a,b=c", "value": "say \"hi\""})),
            ),
            (
                r#"containerOverrides=[{name=a,command=[sh,-c,'echo x']},{name=b}]"#,
                Some(
                    json!({"containerOverrides": [{"name": "a", "command": ["sh", "-c", "echo x"]}, {"name": "b"}]}),
                ),
            ),
            (
                r#"name=URL,value=http://x/?a=b"#,
                Some(json!({"name": "URL", "value": "http://x/?a=b"})),
            ),
            (r#"a="#, Some(json!({"a": ""}))),
            (r#"a=b, c=d"#, Some(json!({"a": "b", "c": "d"}))),
            (
                r#"a=[b, c], d={e=f, g=[h]}"#,
                Some(json!({"a": ["b", "c"], "d": {"e": "f", "g": ["h"]}})),
            ),
            (r#"a=b,c"#, Some(json!({"a": ["b", "c"]}))),
            (r#"a={b=c,d}"#, None),
            (r#"a=b c,d"#, Some(json!({"a": ["b c", "d"]}))),
            (r#"key"#, None),
            (r#"a=b,,c=d"#, Some(json!({"a": "b", "c": "d"}))),
            (r#"a=b,c,"#, None),
        ];
        for (input, want) in cases {
            let got = parse(input).ok();
            assert_eq!(&got, want, "{input}");
        }
    }
}
