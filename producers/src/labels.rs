//! Prometheus label-set text (`{a="b", c="d"}`), as Loki's push protobuf and the
//! exposition formats write it.

use obs_schemas::records::Attrs;

/// Parses `{a="b", c="d"}` (Prometheus label-set text, Go string escapes).
pub fn parse_label_set(text: &str) -> Result<Attrs, String> {
    let t = text.trim();
    let inner = t
        .strip_prefix('{')
        .and_then(|r| r.strip_suffix('}'))
        .ok_or_else(|| format!("labels {text:?} are not {{name=\"value\", ...}}"))?;
    let mut out = Attrs::new();
    let mut chars = inner.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(out);
        }
        let name: String =
            std::iter::from_fn(|| chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_'))
                .collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if name.is_empty() || chars.next() != Some('=') {
            return Err(format!("labels {text:?}: expected name=\"value\""));
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('"') {
            return Err(format!(
                "labels {text:?}: the value of {name} is not quoted"
            ));
        }
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some('t') => value.push('\t'),
                    Some(c) => value.push(c),
                    None => return Err(format!("labels {text:?}: unterminated value")),
                },
                Some(c) => value.push(c),
                None => return Err(format!("labels {text:?}: unterminated value")),
            }
        }
        out.insert(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_text_is_parsed_with_escapes() {
        let l = parse_label_set(r#"{job="api", level="info",msg="a \"q\" \\ b"}"#).unwrap();
        assert_eq!(l["job"], "api");
        assert_eq!(l["level"], "info");
        assert_eq!(l["msg"], r#"a "q" \ b"#);
        assert_eq!(parse_label_set("{}").unwrap().len(), 0);
        assert_eq!(parse_label_set("{a=\"1\",}").unwrap()["a"], "1");
        assert!(parse_label_set(r#"{job=api}"#).is_err());
        assert!(parse_label_set(r#"job="api""#).is_err());
    }
}
