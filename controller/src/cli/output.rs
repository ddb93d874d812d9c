//! Rendering a response as the aws CLI does: `--query` (JMESPath) first, then `--output`
//! json (default), text, table, yaml or yaml-stream, each by the aws CLI's own rules
//! (awscli/formatter.py, text.py and table.py).

use serde_json::Value;

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON, 4-space indented.
    Json,
    /// Tab-separated lines.
    Text,
    /// Titled, nested boxed tables.
    Table,
    /// YAML.
    Yaml,
    /// YAML, one list item per page.
    YamlStream,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(Format::Json),
            "text" => Ok(Format::Text),
            "table" => Ok(Format::Table),
            "yaml" => Ok(Format::Yaml),
            "yaml-stream" => Ok(Format::YamlStream),
            other => Err(format!(
                "argument --output: Invalid choice '{other}', valid choices are: json | text | table | yaml | yaml-stream"
            )),
        }
    }
}

/// Compiles a JMESPath expression: done before any call is sent, so a typo changes nothing.
pub fn compile_query(expr: &str) -> Result<jmespath::Expression<'static>, String> {
    jmespath::compile(expr).map_err(|e| {
        format!(
            "Bad value for --query {expr}: {}",
            e.to_string().replace('\n', " ")
        )
    })
}

/// Applies a compiled JMESPath expression.
pub fn apply_query(
    value: &Value,
    compiled: &jmespath::Expression<'static>,
) -> Result<Value, String> {
    let result = compiled
        .search(value)
        .map_err(|e| format!("--query {compiled}: {}", e.to_string().replace('\n', " ")))?;
    serde_json::to_value(&*result).map_err(|e| format!("--query: {e}"))
}

/// Compiles and applies a JMESPath expression.
pub fn query(value: &Value, expr: &str) -> Result<Value, String> {
    apply_query(value, &compile_query(expr)?)
}

/// Renders a whole response in `format`; `title` (the operation, `DescribeClusters`) heads a
/// table. An empty response (`{}`) prints nothing, as the aws CLI prints nothing for it.
pub fn render(value: &Value, format: Format, title: &str) -> String {
    if value.as_object().is_some_and(|m| m.is_empty()) {
        return String::new();
    }
    match format {
        Format::Json => json(value),
        Format::Text => text(value),
        Format::Table => table(value, title),
        Format::Yaml => yaml(value),
        Format::YamlStream => yaml(&Value::Array(vec![value.clone()])),
    }
}

/// JSON as Python's `json.dump(indent=4, ensure_ascii=False)` writes it.
pub fn json(value: &Value) -> String {
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(value, &mut ser).is_err() {
        return value.to_string();
    }
    let mut s = String::from_utf8_lossy(&buf).into_owned();
    s.push('\n');
    s
}

/// YAML, block style.
pub fn yaml(value: &Value) -> String {
    serde_norway::to_string(value).unwrap_or_else(|_| json(value))
}

/// Python's `str()` of a scalar: `None`, `True`, `False`, numbers, the string itself.
fn py_str(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        // A list or object where a scalar column is: aws prints Python's repr; JSON is the
        // readable equivalent.
        other => other.to_string(),
    }
}

fn is_scalar(v: &Value) -> bool {
    !matches!(v, Value::Array(_) | Value::Object(_))
}

/// `--output text` (awscli/text.py): an object prints its scalar values, tab-separated, in key
/// order, on one line (prefixed by its key in capitals when nested), then its lists and objects;
/// a list of objects prints one line per item with the columns of the sorted union of their
/// scalar keys; a list of scalars prints one `KEY\tvalue` line per item when named, one
/// tab-separated line when bare; an empty list prints nothing.
pub fn text(value: &Value) -> String {
    let mut out = String::new();
    text_item(value, &mut out, None, None);
    out
}

fn text_item(item: &Value, out: &mut String, id: Option<&str>, scalar_keys: Option<&[String]>) {
    match item {
        Value::Object(map) => {
            let mut scalars = Vec::new();
            let mut nested: Vec<(&String, &Value)> = Vec::new();
            match scalar_keys {
                None => {
                    let mut keys: Vec<&String> = map.keys().collect();
                    keys.sort();
                    for k in keys {
                        let v = &map[k];
                        if is_scalar(v) {
                            scalars.push(py_str(v));
                        } else {
                            nested.push((k, v));
                        }
                    }
                }
                Some(keys) => {
                    for k in keys {
                        scalars.push(map.get(k).map(py_str).unwrap_or_default());
                    }
                    let mut rest: Vec<&String> = map.keys().filter(|k| !keys.contains(k)).collect();
                    rest.sort();
                    nested.extend(rest.into_iter().map(|k| (k, &map[k])));
                }
            }
            if !scalars.is_empty() {
                if let Some(id) = id {
                    scalars.insert(0, id.to_uppercase());
                }
                out.push_str(&scalars.join("\t"));
                out.push('\n');
            }
            for (k, v) in nested {
                text_item(v, out, Some(k), None);
            }
        }
        Value::Array(items) => {
            if items.is_empty() {
                return;
            }
            if items.iter().any(Value::is_object) {
                let mut keys: Vec<String> = items
                    .iter()
                    .filter_map(Value::as_object)
                    .flat_map(|m| {
                        m.iter()
                            .filter(|(_, v)| is_scalar(v))
                            .map(|(k, _)| k.clone())
                    })
                    .collect();
                keys.sort();
                keys.dedup();
                for el in items {
                    text_item(el, out, id, Some(&keys));
                }
            } else if items.iter().any(Value::is_array) {
                let scalars: Vec<&Value> = items.iter().filter(|v| is_scalar(v)).collect();
                if !scalars.is_empty() {
                    scalar_list(&scalars, id, out);
                }
                for el in items.iter().filter(|v| !is_scalar(v)) {
                    text_item(el, out, id, None);
                }
            } else {
                let all: Vec<&Value> = items.iter().collect();
                scalar_list(&all, id, out);
            }
        }
        other => {
            out.push_str(&py_str(other));
            out.push('\n');
        }
    }
}

fn scalar_list(items: &[&Value], id: Option<&str>, out: &mut String) {
    match id {
        Some(id) => {
            for v in items {
                out.push_str(&format!("{}\t{}\n", id.to_uppercase(), py_str(v)));
            }
        }
        None => {
            let row: Vec<String> = items.iter().map(|v| py_str(v)).collect();
            out.push_str(&row.join("\t"));
            out.push('\n');
        }
    }
}

/// The width the aws CLI assumes when it cannot ask the terminal (it never can when output is
/// piped); a table wider than this has its one-row sections turned vertical.
const TERMINAL_WIDTH: usize = 80;

#[derive(Default)]
struct Section {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
    indent: usize,
    max_widths: Vec<usize>,
}

impl Section {
    fn update_widths(&mut self, row: &[String]) {
        if self.max_widths.is_empty() {
            self.max_widths = row.iter().map(|s| width(s)).collect();
        } else {
            for (i, el) in row.iter().enumerate() {
                if let Some(w) = self.max_widths.get_mut(i) {
                    *w = (*w).max(width(el));
                }
            }
        }
    }

    fn add_header(&mut self, headers: Vec<String>) {
        self.update_widths(&headers);
        self.headers = headers;
    }

    fn add_row(&mut self, row: Vec<String>) {
        self.update_widths(&row);
        self.rows.push(row);
    }

    /// table.py's calculate_column_widths: widths plus padding, scaled to `max_width` with
    /// Python's rounding, the rounding error spread one column at a time.
    fn column_widths(&self, padding: usize, max_width: Option<usize>) -> Vec<usize> {
        let unscaled: Vec<usize> = self.max_widths.iter().map(|w| w + padding).collect();
        let Some(max_width) = max_width else {
            return unscaled;
        };
        if unscaled.is_empty() {
            return unscaled;
        }
        let total: usize = unscaled.iter().sum();
        let factor = max_width as f64 / total as f64;
        let mut scaled: Vec<i64> = unscaled
            .iter()
            .map(|w| (factor * *w as f64).round_ties_even() as i64)
            .collect();
        let mut off_by: i64 = scaled.iter().sum::<i64>() - max_width as i64;
        while off_by != 0 {
            let order: Vec<usize> = if off_by < 0 {
                (0..scaled.len()).rev().collect()
            } else {
                (0..scaled.len()).collect()
            };
            for i in order {
                if off_by > 0 {
                    scaled[i] -= 1;
                    off_by -= 1;
                } else {
                    scaled[i] += 1;
                    off_by += 1;
                }
                if off_by == 0 {
                    break;
                }
            }
        }
        scaled.into_iter().map(|w| w.max(0) as usize).collect()
    }

    fn total_width(&self, padding: usize, outer: usize) -> usize {
        let total: usize = self
            .column_widths(0, None)
            .iter()
            .map(|w| w + padding)
            .sum::<usize>()
            + 2
            + 2 * outer;
        total.max(width(&self.title) + 2 + 2 * outer)
    }
}

/// Display width; the aws CLI counts East Asian wide characters twice (not done here: ECS
/// names and ARNs are ASCII).
fn width(s: &str) -> usize {
    s.chars().count()
}

fn spaces(n: i64) -> String {
    " ".repeat(n.max(0) as usize)
}

fn center(text: &str, length: usize, left: &str, right: &str) -> String {
    let tl = width(text) as i64;
    let length = length as i64;
    let start = length / 2 - tl / 2 - 1;
    let so_far = width(left) as i64 + start + tl;
    let right_spaces = length - width(right) as i64 - so_far;
    format!(
        "{left}{}{text}{}{right}",
        spaces(start),
        spaces(right_spaces)
    )
}

fn align_left(text: &str, length: usize, left: &str, right: &str) -> String {
    let tl = width(text) as i64;
    let length = length as i64;
    let computed = tl + 2 + width(left) as i64 + width(right) as i64;
    let padding = if length - computed >= 0 { 2 } else { 0 };
    let so_far = width(left) as i64 + padding + tl;
    format!(
        "{left}{}{text}{}{right}",
        spaces(padding),
        spaces(length - so_far - width(right) as i64)
    )
}

struct MultiTable {
    sections: Vec<Section>,
}

impl MultiTable {
    fn current(&mut self) -> &mut Section {
        if self.sections.is_empty() {
            self.sections.push(Section::default());
        }
        let n = self.sections.len() - 1;
        &mut self.sections[n]
    }

    fn new_section(&mut self, title: &str, indent: usize) {
        self.sections.push(Section {
            title: title.to_string(),
            indent,
            ..Section::default()
        });
    }

    fn max_width(&self) -> usize {
        self.sections
            .iter()
            .map(|s| s.total_width(4, s.indent))
            .max()
            .unwrap_or(0)
    }

    fn render(mut self) -> String {
        let mut max_width = self.max_width();
        if max_width > TERMINAL_WIDTH {
            // Every one-row section becomes `header | value` rows.
            for s in &mut self.sections {
                if s.rows.len() == 1 && !s.headers.is_empty() {
                    let mut v = Section {
                        title: std::mem::take(&mut s.title),
                        indent: s.indent,
                        ..Section::default()
                    };
                    let row = std::mem::take(&mut s.rows[0]);
                    for (h, e) in s.headers.iter().zip(row) {
                        v.add_row(vec![h.clone(), e]);
                    }
                    *s = v;
                }
            }
            max_width = self.max_width();
        }
        let mut out = format!("{}\n", "-".repeat(max_width));
        for s in &self.sections {
            let bar = "|".repeat(s.indent);
            let mut line = |text: String| {
                out.push_str(&bar);
                out.push_str(&text);
                out.push_str(&bar);
                out.push('\n');
            };
            let w = max_width - s.indent * 2;
            if !s.title.is_empty() {
                line(center(&s.title, w, "|", "|"));
                if s.headers.is_empty() && s.rows.is_empty() {
                    line(format!("+{}+", "-".repeat(w.saturating_sub(2))));
                }
            }
            let widths = s.column_widths(4, Some(w));
            let rule = |widths: &[usize]| {
                widths
                    .iter()
                    .enumerate()
                    .map(|(i, w)| {
                        if i == 0 {
                            format!("+{}+", "-".repeat(w.saturating_sub(2)))
                        } else {
                            format!("{}+", "-".repeat(w.saturating_sub(1)))
                        }
                    })
                    .collect::<String>()
            };
            if !s.headers.is_empty() {
                line(rule(&widths));
                let cells: String = widths
                    .iter()
                    .zip(&s.headers)
                    .enumerate()
                    .map(|(i, (w, h))| center(h, *w, if i == 0 { "|" } else { "" }, "|"))
                    .collect();
                line(cells);
            }
            if !s.rows.is_empty() && !widths.is_empty() {
                line(rule(&widths));
                for row in &s.rows {
                    let cells: String = widths
                        .iter()
                        .zip(row)
                        .enumerate()
                        .map(|(i, (w, e))| align_left(e, *w, if i == 0 { "|" } else { "" }, "|"))
                        .collect();
                    line(cells);
                }
                line(rule(&widths));
            }
        }
        out
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// The scalar keys and the other keys of an object, each sorted.
fn group_keys(map: &serde_json::Map<String, Value>) -> (Vec<String>, Vec<String>) {
    let mut headers = Vec::new();
    let mut more = Vec::new();
    for (k, v) in map {
        if is_scalar(v) {
            headers.push(k.clone());
        } else {
            more.push(k.clone());
        }
    }
    headers.sort();
    more.sort();
    (headers, more)
}

fn build_table(t: &mut MultiTable, title: Option<&str>, current: &Value, indent: usize) -> bool {
    if !truthy(current) {
        return false;
    }
    if let Some(title) = title {
        t.new_section(title, indent);
    }
    match current {
        Value::Array(items) => {
            if items.first().is_some_and(Value::is_object) {
                // One section for the list: the sorted union of scalar keys as headers, a row
                // per item; an item with nested values repeats the section after its children.
                let mut headers: Vec<String> = Vec::new();
                let mut more: Vec<String> = Vec::new();
                for m in items.iter().filter_map(Value::as_object) {
                    let (h, o) = group_keys(m);
                    headers.extend(h);
                    more.extend(o);
                }
                headers.sort();
                headers.dedup();
                more.sort();
                more.dedup();
                t.current().add_header(headers.clone());
                for (i, el) in items.iter().enumerate() {
                    if i > 0 && !more.is_empty() {
                        t.new_section(title.unwrap_or(""), indent);
                        t.current().add_header(headers.clone());
                    }
                    let row = headers
                        .iter()
                        .map(|h| el.get(h).map(py_str).unwrap_or_default())
                        .collect();
                    t.current().add_row(row);
                    for k in &more {
                        if let Some(v) = el.get(k) {
                            build_table(t, Some(k), v, indent + 1);
                        }
                    }
                }
            } else {
                for item in items {
                    match item {
                        Value::Array(inner) if inner.iter().all(is_scalar) => {
                            t.current().add_row(inner.iter().map(py_str).collect())
                        }
                        Value::Object(m) if m.values().all(is_scalar) => {
                            // Python iterates a dict's keys.
                            t.current().add_row(m.keys().cloned().collect())
                        }
                        v if is_scalar(v) => t.current().add_row(vec![py_str(v)]),
                        v => {
                            build_table(t, None, v, 0);
                        }
                    }
                }
            }
        }
        Value::Object(map) => {
            let (headers, more) = group_keys(map);
            if headers.len() == 1 {
                let h = &headers[0];
                t.current().add_row(vec![h.clone(), py_str(&map[h])]);
            } else if !headers.is_empty() {
                t.current().add_header(headers.clone());
                t.current()
                    .add_row(headers.iter().map(|h| py_str(&map[h])).collect());
            }
            for k in &more {
                build_table(t, Some(k), &map[k], indent + 1);
            }
        }
        _ => {}
    }
    true
}

/// `--output table` (awscli/formatter.py TableFormatter and table.py MultiTable): a section
/// titled with the operation, a header row of an object's sorted scalar keys and its values
/// (a single scalar as `key | value`), each nested list or object a section titled with its
/// key, indented one `|` deeper; a list of objects is one row per item.
pub fn table(value: &Value, title: &str) -> String {
    let mut t = MultiTable {
        sections: Vec::new(),
    };
    if !build_table(&mut t, Some(title), value, 0) {
        return String::new();
    }
    t.render()
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

    /// Outputs derived by hand from awscli/text.py's rules.
    #[test]
    fn text_follows_the_aws_cli() {
        assert_eq!(text(&json!("RUNNING")), "RUNNING\n");
        assert_eq!(text(&json!(["a", "b"])), "a\tb\n");
        // A named list of scalars: one line per item; an empty list: nothing.
        assert_eq!(
            text(&json!({"clusterArns": ["arn:1", "arn:2"], "failures": []})),
            "CLUSTERARNS\tarn:1\nCLUSTERARNS\tarn:2\n"
        );
        // A list of objects: one line per item, columns from the sorted union of scalar keys
        // (a missing key is an empty column), nested values after each item.
        let v = json!({"tasks": [
            {"taskArn": "t1", "lastStatus": "RUNNING", "containers": [{"name": "a", "exitCode": 0}]},
            {"taskArn": "t2", "lastStatus": "STOPPED", "stoppedReason": "done", "essential": true, "cpu": null}
        ]});
        assert_eq!(
            text(&v),
            "TASKS\t\t\tRUNNING\t\tt1\n\
             CONTAINERS\t0\ta\n\
             TASKS\tNone\tTrue\tSTOPPED\tdone\tt2\n"
        );
        // An object's scalars in key order, then its nested values.
        assert_eq!(
            text(
                &json!({"cluster": {"status": "ACTIVE", "clusterName": "c", "tags": [{"key": "k", "value": "v"}]}})
            ),
            "CLUSTER\tc\tACTIVE\nTAGS\tk\tv\n"
        );
        // Lists of lists: the scalars first, then each inner list.
        assert_eq!(text(&json!([["a", "b"], "c"])), "c\na\tb\n");
    }

    /// Tables as aws-cli's table.py draws them (80 columns, no colour): the expected texts were
    /// produced by aws-cli's own MultiTable and TableFormatter._build_table on these inputs
    /// (the last is wider than 80 columns, so its one-row section turns vertical).
    #[test]
    fn table_follows_the_aws_cli() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "DescribeClusters",
                r#"{"clusters": [{"clusterName": "prod", "status": "ACTIVE"}], "failures": []}"#,
                "\
-----------------------------
|     DescribeClusters      |
+---------------------------+
||        clusters         ||
|+--------------+----------+|
||  clusterName | status   ||
|+--------------+----------+|
||  prod        |  ACTIVE  ||
|+--------------+----------+|
",
            ),
            (
                "RegisterTaskDefinition",
                r#"{"taskDefinitionArn": "arn:td"}"#,
                "\
---------------------------------
|    RegisterTaskDefinition     |
+--------------------+----------+
|  taskDefinitionArn |  arn:td  |
+--------------------+----------+
",
            ),
            (
                "ListTasks",
                r#"{"taskArns": ["a1", "a2"]}"#,
                "\
------------
| ListTasks|
+----------+
||taskArns||
|+--------+|
||  a1    ||
||  a2    ||
|+--------+|
",
            ),
            (
                "DescribeTasks",
                r#"{"tasks": [{"taskArn": "t1", "lastStatus": "RUNNING", "containers": [{"name": "a", "exitCode": 0}, {"name": "b"}]}, {"taskArn": "t2", "lastStatus": "STOPPED", "containers": [{"name": "c"}]}], "failures": [{"arn": "x", "reason": "MISSING"}]}"#,
                "\
-----------------------------
|       DescribeTasks       |
+---------------------------+
||        failures         ||
|+--------+----------------+|
||   arn  |    reason      ||
|+--------+----------------+|
||  x     |  MISSING       ||
|+--------+----------------+|
||          tasks          ||
|+-------------+-----------+|
|| lastStatus  |  taskArn  ||
|+-------------+-----------+|
||  RUNNING    |  t1       ||
|+-------------+-----------+|
|||      containers       |||
||+-------------+---------+||
|||  exitCode   |  name   |||
||+-------------+---------+||
|||  0          |  a      |||
|||             |  b      |||
||+-------------+---------+||
||          tasks          ||
|+-------------+-----------+|
|| lastStatus  |  taskArn  ||
|+-------------+-----------+|
||  STOPPED    |  t2       ||
|+-------------+-----------+|
|||      containers       |||
||+-----------------------+||
|||         name          |||
||+-----------------------+||
|||  c                    |||
||+-----------------------+||
",
            ),
            (
                "DescribeTasks",
                r#"{"task": {"taskArn": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", "lastStatus": "RUNNING"}}"#,
                "\
--------------------------------------------------------------------------------------------
|                                       DescribeTasks                                      |
+------------------------------------------------------------------------------------------+
||                                          task                                          ||
|+------------+---------------------------------------------------------------------------+|
||  lastStatus|  RUNNING                                                                  ||
||  taskArn   |  xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx   ||
|+------------+---------------------------------------------------------------------------+|
",
            ),
        ];
        for (title, input, expected) in cases {
            let v: Value = serde_json::from_str(input).unwrap();
            let got = table(&v, title);
            assert_eq!(&got, expected, "{input}\n{got}");
        }
        // Only empty lists: the title alone, as aws draws it.
        assert_eq!(table(&json!({"failures": []}), "X"), "---\n|X|\n+-+\n");
        assert_eq!(table(&json!([]), "X"), "");
    }

    #[test]
    fn yaml_and_an_empty_response() {
        assert_eq!(
            render(&json!({"clusterArns": ["a", "b"]}), Format::Yaml, "X"),
            "clusterArns:\n- a\n- b\n"
        );
        assert_eq!(
            render(&json!({"clusterArns": ["a"]}), Format::YamlStream, "X"),
            "- clusterArns:\n  - a\n"
        );
        assert_eq!(render(&json!({}), Format::Json, "TagResource"), "");
        assert_eq!(
            render(&json!({"a": 1}), Format::Json, "X"),
            "{\n    \"a\": 1\n}\n"
        );
    }
}
