//! Prometheus label and metric names: what is valid, and how other names (OTLP attribute
//! keys, JSON fields) are made valid. Shared by the collectors and the query API.

/// Whether `s` is a valid Prometheus metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
pub fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Whether `s` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A name made a valid label name as Prometheus and Loki do for OTLP attributes and parsed
/// fields: characters outside `[a-zA-Z0-9_]` become `_`, a leading digit gets a `_` before
/// it (`http.method` → `http_method`).
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(valid_label_name("__name__"));
        assert!(!valid_label_name("a:b"));
        assert!(!valid_label_name("a-b"));
        assert!(!valid_label_name("1a"));
        assert!(valid_metric_name("a:b_c"));
        assert_eq!(sanitize_label_name("1a.b-c"), "_1a_b_c");
        assert_eq!(sanitize_label_name("http.method"), "http_method");
    }
}
