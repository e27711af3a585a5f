//! The `json` and `logfmt` parsers: a line → labels, as Loki extracts them (nested JSON
//! keys joined with `_`, label names sanitised, empty values skipped), and their forms
//! with fields (`| json status="response.status"`).

pub use obs_runtime::labels::sanitize_label_name as sanitize;

/// The labels of a JSON object line, or `Err` when the line is not a JSON object.
pub fn json(line: &str) -> Result<Vec<(String, String)>, String> {
    let v: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(o) = v else {
        return Err("the line is not a JSON object".into());
    };
    let mut out = Vec::new();
    flatten("", &o, &mut out);
    Ok(out)
}

fn flatten(
    prefix: &str,
    o: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<(String, String)>,
) {
    use serde_json::Value;
    for (k, v) in o {
        let key = if prefix.is_empty() {
            sanitize(k)
        } else {
            format!("{prefix}_{}", sanitize(k))
        };
        match v {
            Value::Object(inner) => flatten(&key, inner, out),
            Value::String(s) => out.push((key, s.clone())),
            Value::Number(n) => out.push((key, n.to_string())),
            Value::Bool(b) => out.push((key, b.to_string())),
            Value::Null | Value::Array(_) => {}
        }
    }
}

/// The `key=value` pairs of a logfmt line (keys as written; standalone keys and empty
/// values skipped); on a syntax error, the pairs before it and the error.
pub fn logfmt(line: &str) -> (Vec<(String, String)>, Option<String>) {
    let b = line.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] <= b' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' {
            if b[i] == b'"' {
                return (
                    out,
                    Some(format!(
                        "logfmt syntax error at pos {}: unexpected '\"'",
                        i + 1
                    )),
                );
            }
            i += 1;
        }
        if i == start {
            return (
                out,
                Some(format!(
                    "logfmt syntax error at pos {}: unexpected '='",
                    i + 1
                )),
            );
        }
        let key = &line[start..i];
        if i >= b.len() || b[i] != b'=' {
            continue;
        }
        i += 1;
        let value = if i < b.len() && b[i] == b'"' {
            match quoted(line, i) {
                Ok((v, next)) => {
                    i = next;
                    v
                }
                Err(e) => return (out, Some(e)),
            }
        } else {
            let vs = i;
            while i < b.len() && b[i] > b' ' {
                if b[i] == b'"' || b[i] == b'=' {
                    return (
                        out,
                        Some(format!(
                            "logfmt syntax error at pos {}: unexpected '{}'",
                            i + 1,
                            b[i] as char
                        )),
                    );
                }
                i += 1;
            }
            line[vs..i].to_string()
        };
        if !value.is_empty() {
            out.push((key.to_string(), value));
        }
    }
    (out, None)
}

/// A double-quoted logfmt value starting at `start`: its text and the offset after it.
fn quoted(line: &str, start: usize) -> Result<(String, usize), String> {
    let mut out = String::new();
    let mut chars = line[start + 1..].char_indices();
    while let Some((k, c)) = chars.next() {
        match c {
            '"' => return Ok((out, start + 1 + k + 1)),
            '\\' => match chars.next().map(|(_, e)| e) {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(e @ ('"' | '\\' | '/')) => out.push(e),
                Some(e) => return Err(format!("logfmt syntax error: invalid escape \\{e}")),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(format!(
        "logfmt syntax error at pos {}: unterminated quoted value",
        line.len() + 1
    ))
}

/// One step of a JSON path.
#[derive(Debug, Clone, PartialEq)]
enum PathStep {
    Key(String),
    Index(usize),
}

/// A field of `| json label="a.b[0][\"c d\"]"`.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonPath(Vec<PathStep>);

impl JsonPath {
    /// Parses `a.b`, `a[0]`, `a["key"]`, `[0]`.
    pub fn parse(expr: &str) -> Result<JsonPath, String> {
        let bad = || format!("invalid JSON path {expr:?}");
        let mut steps = Vec::new();
        let mut chars = expr.chars().peekable();
        let mut key = String::new();
        while let Some(c) = chars.next() {
            match c {
                '.' => {
                    if !key.is_empty() {
                        steps.push(PathStep::Key(std::mem::take(&mut key)));
                    }
                }
                '[' => {
                    if !key.is_empty() {
                        steps.push(PathStep::Key(std::mem::take(&mut key)));
                    }
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        let mut k = String::new();
                        loop {
                            match chars.next().ok_or_else(bad)? {
                                '"' => break,
                                '\\' => k.push(chars.next().ok_or_else(bad)?),
                                x => k.push(x),
                            }
                        }
                        steps.push(PathStep::Key(k));
                    } else {
                        let mut n = String::new();
                        while chars.peek().is_some_and(char::is_ascii_digit) {
                            n.push(chars.next().expect("peeked"));
                        }
                        steps.push(PathStep::Index(n.parse().map_err(|_| bad())?));
                    }
                    if chars.next() != Some(']') {
                        return Err(bad());
                    }
                }
                c => key.push(c),
            }
        }
        if !key.is_empty() {
            steps.push(PathStep::Key(key));
        }
        if steps.is_empty() {
            return Err(bad());
        }
        Ok(JsonPath(steps))
    }
}

/// The values at `paths` in a JSON line (strings as they are, numbers and booleans as
/// written, objects and arrays as JSON; missing ones empty), or `Err` when the line is
/// not JSON.
pub fn json_fields(line: &str, paths: &[JsonPath]) -> Result<Vec<String>, String> {
    use serde_json::Value;
    let v: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    Ok(paths
        .iter()
        .map(|p| {
            let mut at = Some(&v);
            for step in &p.0 {
                at = match (at, step) {
                    (Some(Value::Object(o)), PathStep::Key(k)) => o.get(k),
                    (Some(Value::Array(a)), PathStep::Index(i)) => a.get(*i),
                    _ => None,
                };
            }
            match at {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn json_flattens_and_refuses_non_objects() {
        let got = json(r#"{"status":500,"user":{"id":7,"tier":"pro"},"ok":true,"tags":["a"],"a.b":"x","n":null}"#).unwrap();
        assert_eq!(
            got,
            pairs(&[
                ("a_b", "x"),
                ("ok", "true"),
                ("status", "500"),
                ("user_id", "7"),
                ("user_tier", "pro")
            ])
        );
        assert!(json("GET /x 200").is_err());
        assert!(json("[1]").is_err());
    }

    #[test]
    fn logfmt_pairs_and_errors() {
        let (got, err) =
            logfmt(r#"level=info msg="job \"x\" done" standalone empty= duration=12ms"#);
        assert_eq!(
            got,
            pairs(&[
                ("level", "info"),
                ("msg", "job \"x\" done"),
                ("duration", "12ms")
            ])
        );
        assert_eq!(err, None);
        let (got, err) = logfmt(r#"a=1 {"level":"x"}"#);
        assert_eq!(got, pairs(&[("a", "1")]));
        assert!(err.unwrap().contains("unexpected '\"'"));
        assert!(logfmt(r#"a="open"#).1.is_some());
        assert_eq!(sanitize("1a.b-c"), "_1a_b_c");
    }

    #[test]
    fn json_paths() {
        let paths: Vec<JsonPath> = ["user.id", "tags[1]", r#"a["b.c"]"#, "user", "missing.x"]
            .iter()
            .map(|p| JsonPath::parse(p).unwrap())
            .collect();
        let got = json_fields(
            r#"{"user":{"id":7},"tags":["x","y"],"a":{"b.c":true}}"#,
            &paths,
        )
        .unwrap();
        assert_eq!(got, ["7", "y", "true", r#"{"id":7}"#, ""]);
        assert!(json_fields("nope", &paths).is_err());
        assert!(JsonPath::parse("a[x]").is_err());
        assert!(JsonPath::parse("").is_err());
    }
}
