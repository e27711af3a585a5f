//! The `pattern` parser: `<name>` captures and literal text between them, matched as Loki
//! matches it (a leading literal must start the line; each capture ends at the first
//! occurrence of the literal after it; a literal not found ends matching, the capture
//! before it taking the rest of the line; the line may go on after the last literal).

/// One piece of a pattern.
#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    /// `None` for `<_>`.
    Capture(Option<String>),
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    parts: Vec<Part>,
}

impl Pattern {
    /// Compiles `p`, refusing patterns without a named capture or with two captures in a row.
    pub fn new(p: &str) -> Result<Pattern, String> {
        let mut parts: Vec<Part> = Vec::new();
        let mut rest = p;
        let mut literal = String::new();
        while !rest.is_empty() {
            if let Some(name) = capture_at(rest) {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                if matches!(parts.last(), Some(Part::Capture(_))) {
                    return Err(format!(
                        "invalid pattern {p:?}: consecutive captures are not allowed"
                    ));
                }
                rest = &rest[name.len() + 2..];
                parts.push(Part::Capture((name != "_").then(|| name.to_string())));
                continue;
            }
            let c = rest.chars().next().expect("not empty");
            literal.push(c);
            rest = &rest[c.len_utf8()..];
        }
        if !literal.is_empty() {
            parts.push(Part::Literal(literal));
        }
        if !parts.iter().any(|x| matches!(x, Part::Capture(Some(_)))) {
            return Err(format!(
                "invalid pattern {p:?}: at least one named capture is required"
            ));
        }
        Ok(Pattern { parts })
    }

    /// The named captures of `line`, in pattern order (empty when the line does not match).
    pub fn captures<'l>(&self, line: &'l str) -> Vec<(&str, &'l str)> {
        let mut out = Vec::new();
        let mut rest = line;
        let mut parts = self.parts.as_slice();
        if let Some(Part::Literal(l)) = parts.first() {
            if !rest.starts_with(l.as_str()) {
                return out;
            }
            rest = &rest[l.len()..];
            parts = &parts[1..];
        }
        while let Some(Part::Capture(name)) = parts.first() {
            let Some(Part::Literal(l)) = parts.get(1) else {
                if let Some(n) = name {
                    out.push((n.as_str(), rest));
                }
                return out;
            };
            match rest.find(l.as_str()) {
                None => {
                    if let Some(n) = name {
                        out.push((n.as_str(), rest));
                    }
                    return out;
                }
                Some(i) => {
                    if let Some(n) = name {
                        out.push((n.as_str(), &rest[..i]));
                    }
                    rest = &rest[i + l.len()..];
                    parts = &parts[2..];
                }
            }
        }
        out
    }
}

/// The name of a `<name>` capture at the start of `s`.
fn capture_at(s: &str) -> Option<&str> {
    let inner = s.strip_prefix('<')?;
    let end = inner.find('>')?;
    let name = &inner[..end];
    obs_runtime::labels::valid_label_name(name).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_as_loki_matches_them() {
        let p = Pattern::new(r#"<ip> - - "<method> <path> <_>" <status> <size> <dur>ms"#).unwrap();
        assert_eq!(
            p.captures(r#"10.0.1.7 - - "GET /api/users HTTP/1.1" 404 123 88ms"#),
            vec![
                ("ip", "10.0.1.7"),
                ("method", "GET"),
                ("path", "/api/users"),
                ("status", "404"),
                ("size", "123"),
                ("dur", "88")
            ]
        );
        // A literal that is missing ends matching; the capture before it takes the rest.
        assert_eq!(
            p.captures(r#"1.2.3.4 - - "oops"#),
            vec![("ip", "1.2.3.4"), ("method", "oops")]
        );
        assert_eq!(
            p.captures("1.2.3.4 - - oops"),
            vec![("ip", "1.2.3.4 - - oops")]
        );
        let lead = Pattern::new("level=<level> <_>").unwrap();
        assert_eq!(lead.captures("level=info msg"), vec![("level", "info")]);
        assert!(lead.captures("msg level=info").is_empty());
        assert!(Pattern::new("<a><b>").is_err());
        assert!(Pattern::new("no captures <_>").is_err());
        assert_eq!(
            Pattern::new("a <x").unwrap_err(),
            "invalid pattern \"a <x\": at least one named capture is required"
        );
    }
}
