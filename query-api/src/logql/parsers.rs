//! The `json` and `logfmt` parsers: a line → labels, as Loki extracts them (nested JSON
//! keys joined with `_`, label names sanitised, empty values skipped).

/// A label name made valid: characters outside `[a-zA-Z0-9_]` become `_`, and a leading
/// digit gets a `_` before it.
pub fn sanitize(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

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

/// The `key=value` pairs of a logfmt line (standalone keys and empty values skipped); on
/// a syntax error, the pairs before it and the error.
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
        let key = sanitize(key);
        if !value.is_empty() && !key.is_empty() {
            out.push((key, value));
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
}
