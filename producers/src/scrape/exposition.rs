//! The Prometheus text format (0.0.4) and OpenMetrics 1.0 text, parsed into samples and
//! family metadata.
//!
//! Written here rather than taken from a crate: the parsers on crates.io handle one of the
//! two formats, or drop exemplars and `# UNIT`; this one is small and tested against
//! node_exporter's and Prometheus's own pages.

use std::collections::BTreeMap;

use obs_schemas::records::Attrs;

use crate::labels::parse_label_set;

/// One exposed sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposed {
    /// Metric name.
    pub name: String,
    /// Labels (without `__name__`).
    pub labels: Attrs,
    /// Value.
    pub value: f64,
    /// Explicit timestamp in ms, if the line has one.
    pub timestamp_ms: Option<i64>,
    /// OpenMetrics exemplar: labels, value, timestamp (ms).
    pub exemplar: Option<(Attrs, f64, Option<i64>)>,
}

/// `# TYPE`, `# HELP` and `# UNIT` of a family.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Family {
    /// counter, gauge, histogram, summary, ...
    pub kind: String,
    /// Help text.
    pub help: String,
    /// Unit (OpenMetrics).
    pub unit: String,
}

/// A parsed page.
#[derive(Debug, Default)]
pub struct Page {
    /// The samples in page order.
    pub samples: Vec<Exposed>,
    /// Families by name.
    pub families: BTreeMap<String, Family>,
}

/// Whether a `Content-Type` is OpenMetrics (timestamps in seconds, exemplars, `# EOF`).
pub fn is_openmetrics(content_type: &str) -> bool {
    content_type
        .to_ascii_lowercase()
        .starts_with("application/openmetrics-text")
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        other => other.parse().ok(),
    }
}

/// Splits `name{labels} rest` / `name rest` into (name, label text or "", rest).
fn split_series(line: &str) -> Option<(&str, &str, &str)> {
    let end_name = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..end_name];
    let rest = &line[end_name..];
    if let Some(r) = rest.strip_prefix('{') {
        let mut in_quotes = false;
        let mut escaped = false;
        for (i, c) in r.char_indices() {
            match c {
                _ if escaped => escaped = false,
                '\\' if in_quotes => escaped = true,
                '"' => in_quotes = !in_quotes,
                '}' if !in_quotes => {
                    return Some((name, &rest[..i + 2], &r[i + 1..]));
                }
                _ => {}
            }
        }
        None
    } else {
        Some((name, "", rest))
    }
}

/// Parses a page; `openmetrics` selects that format's timestamp unit and exemplars.
pub fn parse(text: &str, openmetrics: bool) -> Result<Page, String> {
    let mut page = Page::default();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let at = |what: &str| format!("line {}: {what}: {:?}", n + 1, truncate(line));
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut parts = comment.trim_start().splitn(3, ' ');
            let (kw, name, rest) = (parts.next(), parts.next(), parts.next().unwrap_or(""));
            match (kw, name) {
                (Some("EOF"), _) if openmetrics => break,
                (Some("TYPE"), Some(name)) => {
                    page.families.entry(name.into()).or_default().kind = rest.trim().to_string()
                }
                (Some("HELP"), Some(name)) => {
                    page.families.entry(name.into()).or_default().help =
                        rest.replace("\\n", "\n").replace("\\\\", "\\")
                }
                (Some("UNIT"), Some(name)) => {
                    page.families.entry(name.into()).or_default().unit = rest.trim().to_string()
                }
                _ => {}
            }
            continue;
        }
        let (name, label_text, rest) = split_series(line).ok_or_else(|| at("not a sample"))?;
        let labels = if label_text.is_empty() {
            Attrs::new()
        } else {
            parse_label_set(label_text).map_err(|e| at(&e))?
        };
        let (sample_part, exemplar_part) = match rest.split_once(" # ") {
            Some((s, e)) if openmetrics => (s, Some(e)),
            _ => (rest, None),
        };
        let mut fields = sample_part.split_whitespace();
        let value = fields
            .next()
            .and_then(parse_value)
            .ok_or_else(|| at("bad or missing value"))?;
        let timestamp_ms = match fields.next() {
            None => None,
            Some(t) if openmetrics => Some(
                t.parse::<f64>()
                    .map(|s| (s * 1000.0).round() as i64)
                    .map_err(|_| at("bad timestamp"))?,
            ),
            Some(t) => Some(t.parse::<i64>().map_err(|_| at("bad timestamp"))?),
        };
        let exemplar = match exemplar_part {
            None => None,
            Some(e) => {
                let (_, lt, r) = split_series(&format!("x{}", e.trim()))
                    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
                    .ok_or_else(|| at("bad exemplar"))?;
                let el = parse_label_set(&lt).map_err(|e| at(&e))?;
                let mut f = r.split_whitespace();
                let ev = f
                    .next()
                    .and_then(parse_value)
                    .ok_or_else(|| at("bad exemplar value"))?;
                let et = f
                    .next()
                    .and_then(|t| t.parse::<f64>().ok())
                    .map(|s| (s * 1000.0).round() as i64);
                Some((el, ev, et))
            }
        };
        page.samples.push(Exposed {
            name: name.to_string(),
            labels,
            value,
            timestamp_ms,
            exemplar,
        });
    }
    Ok(page)
}

fn truncate(s: &str) -> String {
    s.chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_format() {
        let page = parse(
            "# HELP node_load1 1m load average.\n# TYPE node_load1 gauge\nnode_load1 0.25\n\
             # TYPE http_requests_total counter\nhttp_requests_total{code=\"200\",path=\"/a \\\"b\\\"\"} 1027 1395066363000\n\
             rpc_duration_seconds{quantile=\"0.99\"} NaN\nbucket{le=\"+Inf\"} +Inf\n",
            false,
        )
        .unwrap();
        assert_eq!(page.samples.len(), 4);
        assert_eq!(page.samples[0].name, "node_load1");
        assert_eq!(page.samples[0].value, 0.25);
        let s = &page.samples[1];
        assert_eq!(s.labels["path"], "/a \"b\"");
        assert_eq!(s.timestamp_ms, Some(1_395_066_363_000));
        assert!(page.samples[2].value.is_nan());
        assert_eq!(page.families["node_load1"].kind, "gauge");
        assert_eq!(page.families["node_load1"].help, "1m load average.");
    }

    #[test]
    fn openmetrics_with_units_exemplars_and_eof() {
        let page = parse(
            "# TYPE req_seconds histogram\n# UNIT req_seconds seconds\n\
             req_seconds_bucket{le=\"0.5\"} 3 # {trace_id=\"abc\"} 0.31 1700000000.5\n\
             req_seconds_count 3 1700000000.25\n# EOF\ngarbage after eof\n",
            true,
        )
        .unwrap();
        assert_eq!(page.samples.len(), 2);
        let (l, v, t) = page.samples[0].exemplar.clone().unwrap();
        assert_eq!(
            (l["trace_id"].as_str(), v, t),
            ("abc", 0.31, Some(1_700_000_000_500))
        );
        assert_eq!(page.samples[1].timestamp_ms, Some(1_700_000_000_250));
        assert_eq!(page.families["req_seconds"].unit, "seconds");
    }

    #[test]
    fn broken_lines_are_named() {
        let e = parse("ok 1\nbroken{a=\"1\" 2\n", false).unwrap_err();
        assert!(e.starts_with("line 2"), "{e}");
        assert!(parse("x abc\n", false).unwrap_err().contains("value"));
    }
}
