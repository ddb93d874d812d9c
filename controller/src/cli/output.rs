//! Rendering a response as the aws CLI does: `--query` (JMESPath) first, then `--output`
//! json (default), text or table.

use serde_json::Value;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Pretty JSON, 4-space indented.
    Json,
    /// Tab-separated values.
    Text,
    /// A boxed table.
    Table,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "table" => Ok(Format::Table),
            other => Err(format!(
                "argument --output: Invalid choice, valid choices are: json | text | table (got '{other}')"
            )),
        }
    }
}

/// Compiles a JMESPath expression: done before any call is sent, so a typo changes nothing.
pub fn compile_query(expr: &str) -> Result<jmespath::Expression<'static>, String> {
    jmespath::compile(expr).map_err(|e| format!("Bad value for --query {expr}: {e}"))
}

/// Applies a compiled JMESPath expression.
pub fn apply_query(
    value: &Value,
    compiled: &jmespath::Expression<'static>,
) -> Result<Value, String> {
    let result = compiled
        .search(value)
        .map_err(|e| format!("--query {compiled}: {e}"))?;
    serde_json::to_value(&*result).map_err(|e| format!("--query: {e}"))
}

/// Compiles and applies a JMESPath expression.
pub fn query(value: &Value, expr: &str) -> Result<Value, String> {
    apply_query(value, &compile_query(expr)?)
}

/// Renders `value` in `format`; `title` heads a table.
pub fn render(value: &Value, format: Format, title: &str) -> String {
    match format {
        Format::Json => {
            let mut buf = Vec::new();
            let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
            if serde::Serialize::serialize(value, &mut ser).is_err() {
                return value.to_string();
            }
            String::from_utf8_lossy(&buf).into_owned()
        }
        Format::Text => {
            let mut lines = Vec::new();
            text(value, None, &mut lines);
            lines.join("\n")
        }
        Format::Table => table(value, title),
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => Some("None".into()),
        Value::Bool(b) => Some(if *b { "True".into() } else { "False".into() }),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn text(v: &Value, name: Option<&str>, out: &mut Vec<String>) {
    match v {
        Value::Array(items) if items.iter().all(|i| scalar(i).is_some()) => {
            let row: Vec<String> = items.iter().filter_map(scalar).collect();
            match name {
                Some(n) => out.push(format!("{}\t{}", n.to_ascii_uppercase(), row.join("\t"))),
                None => out.push(row.join("\t")),
            }
        }
        Value::Array(items) => items.iter().for_each(|i| text(i, name, out)),
        Value::Object(map) => {
            let row: Vec<String> = map.values().filter_map(scalar).collect();
            if !row.is_empty() {
                match name {
                    Some(n) => out.push(format!("{}\t{}", n.to_ascii_uppercase(), row.join("\t"))),
                    None => out.push(row.join("\t")),
                }
            }
            for (k, child) in map.iter().filter(|(_, c)| scalar(c).is_none()) {
                text(child, Some(k), out);
            }
        }
        other => out.push(scalar(other).unwrap_or_default()),
    }
}

fn flatten(v: &Value, path: String, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, c) in map {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(c, p, rows);
            }
        }
        Value::Array(items) => {
            for (i, c) in items.iter().enumerate() {
                flatten(c, format!("{path}[{i}]"), rows);
            }
        }
        other => rows.push((path, scalar(other).unwrap_or_default())),
    }
}

fn table(v: &Value, title: &str) -> String {
    let mut rows = Vec::new();
    flatten(v, String::new(), &mut rows);
    let kw = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    let vw = rows
        .iter()
        .map(|(_, v)| v.chars().count())
        .max()
        .unwrap_or(0);
    let width = (kw + vw + 5).max(title.chars().count() + 4);
    let vw = width - kw - 5;
    let line = "-".repeat(width);
    let mut out = vec![
        line.clone(),
        format!("|{:^w$}|", title, w = width - 2),
        line.clone(),
    ];
    for (k, val) in rows {
        out.push(format!("| {k:<kw$} | {val:<vw$}|"));
    }
    out.push(line);
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn query_picks_a_field() {
        let v = json!({"tasks": [{"stoppedReason": "Essential container in task exited"}]});
        assert_eq!(
            query(&v, "tasks[0].stoppedReason").unwrap(),
            json!("Essential container in task exited")
        );
    }

    #[test]
    fn text_prints_scalars_bare() {
        assert_eq!(render(&json!("RUNNING"), Format::Text, "x"), "RUNNING");
        assert_eq!(render(&json!(["a", "b"]), Format::Text, "x"), "a\tb");
    }
}
