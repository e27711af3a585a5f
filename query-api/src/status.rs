//! `GET /status`: one page for people, as Prometheus has its status pages: whether the
//! stages answer their scrapes, what comes in per signal, how far behind each sink is, what
//! is stored and dead-lettered, and links to the APIs. The numbers are PromQL over the
//! pipeline's own scraped metrics (job `obs`, the tenant of the request), so the page and
//! Grafana's pipeline dashboard agree. Server-rendered HTML that reloads itself every 10 s.

use std::fmt::Write;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use obs_promql::Grid;
use obs_promql::value::format_value;

use crate::prom::store::{self, Limits};
use crate::server::ApiState;

/// A table of the page: its title, the PromQL instant query, the label that names each
/// row, and the unit shown after the numbers.
struct Section {
    title: &'static str,
    query: &'static str,
    row_label: &'static str,
    unit: &'static str,
}

const SECTIONS: &[Section] = &[
    Section {
        title: "Scrape targets up",
        query: "sum by (job) (up)",
        row_label: "job",
        unit: "",
    },
    Section {
        title: "Records accepted, by signal",
        query: "sum by (signal) (rate(obs_collector_records_total[1m]))",
        row_label: "signal",
        unit: "/s",
    },
    Section {
        title: "Requests refused, by reason",
        query: "sum by (reason) (rate(obs_collector_rejected_total[5m]))",
        row_label: "reason",
        unit: "/s",
    },
    Section {
        title: "Consumer lag, by sink table",
        query: "max by (table) (obs_sink_consumer_lag)",
        row_label: "table",
        unit: " messages",
    },
    Section {
        title: "Rows stored, by table",
        query: "sum by (table) (rate(obs_sink_rows_total[1m]))",
        row_label: "table",
        unit: "/s",
    },
    Section {
        title: "Dead letters, by table",
        query: "sum by (table) (increase(obs_sink_dlq_total[1h]))",
        row_label: "table",
        unit: " in 1h",
    },
    Section {
        title: "Rule evaluations",
        query: "sum(rate(obs_rule_evaluations_total[1m]))",
        row_label: "",
        unit: "/s",
    },
];

/// The APIs the query API serves, linked from the page.
const LINKS: &[(&str, &str)] = &[
    ("/api/v1/query?query=up", "Prometheus API (PromQL)"),
    ("/api/v1/rules", "rules"),
    ("/api/v1/alerts", "alerts"),
    ("/loki/api/v1/labels", "Loki API (LogQL)"),
    ("/api/services", "Jaeger API (traces)"),
    ("/api/echo", "Tempo API"),
    ("/api/v1/sql?query=SELECT%201", "SQL"),
    ("/metrics", "this process's metrics"),
];

/// `GET /status`.
pub async fn page(State(state): State<ApiState>, headers: HeaderMap) -> Response {
    let tenant = match crate::tenant::tenant(&headers) {
        Ok(t) => t,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    let limits = crate::prom::limits_with(&state, Vec::new());
    let mut body = String::new();
    for section in SECTIONS {
        let rows = rows(&state, &tenant, section, now, &limits).await;
        render_section(&mut body, section, rows);
    }
    let html = format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"10\">\
         <title>obs status</title><style>{STYLE}</style></head><body>\
         <h1>obs status</h1><p class=\"meta\">tenant <b>{}</b> · version {} · numbers from the pipeline's own \
         metrics (job <code>obs</code>), refreshed every 10 s</p>{body}<h2>APIs</h2><ul>{}</ul></body></html>\n",
        escape(&tenant),
        env!("CARGO_PKG_VERSION"),
        LINKS
            .iter()
            .map(|(href, name)| format!(
                "<li><a href=\"{href}\">{name}</a> <code>{href}</code></li>"
            ))
            .collect::<String>()
    );
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

const STYLE: &str = "body{font-family:sans-serif;margin:2em;color:#222}\
    table{border-collapse:collapse;margin-bottom:1.5em;min-width:24em}\
    td,th{border:1px solid #ccc;padding:.3em .8em;text-align:left}\
    td.n{text-align:right;font-variant-numeric:tabular-nums}\
    h2{font-size:1.1em;margin-bottom:.3em}.meta{color:#666}.err{color:#b00}";

/// The section's rows (row name, value) at `now`, or why there are none.
async fn rows(
    state: &ApiState,
    tenant: &str,
    section: &Section,
    now: i64,
    limits: &Limits,
) -> Result<Vec<(String, f64)>, String> {
    let expr = obs_promql::parse(section.query)?;
    let grid = Grid {
        start: now,
        end: now,
        step: 1,
    };
    let (value, _) = store::evaluate(Some(state.database()), tenant, &expr, grid, limits)
        .await
        .map_err(|e| match e {
            obs_promql::EvalError::Execution(m) | obs_promql::EvalError::Storage(m) => m,
        })?;
    Ok(match value {
        obs_promql::Value::Vector(series) => series
            .into_iter()
            .filter_map(|s| {
                let v = s.points.first().copied().flatten()?;
                let name = s
                    .labels
                    .get(section.row_label)
                    .cloned()
                    .unwrap_or_else(|| "all".into());
                Some((name, v))
            })
            .collect(),
        obs_promql::Value::Scalar(points) => points
            .first()
            .map(|&v| vec![("all".into(), v)])
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}

fn render_section(out: &mut String, section: &Section, rows: Result<Vec<(String, f64)>, String>) {
    let _ = write!(
        out,
        "<h2>{}</h2><table data-query=\"{}\">",
        section.title,
        escape(section.query)
    );
    match rows {
        Err(e) => {
            let _ = write!(out, "<tr><td class=\"err\">{}</td></tr>", escape(&e));
        }
        Ok(rows) if rows.is_empty() => out.push_str("<tr><td>none</td></tr>"),
        Ok(rows) => {
            for (name, v) in rows {
                let _ = write!(
                    out,
                    "<tr><td>{}</td><td class=\"n\" data-value=\"{}\">{}{}</td></tr>",
                    escape(&name),
                    format_value(v),
                    rounded(v),
                    section.unit
                );
            }
        }
    }
    out.push_str("</table>");
}

/// A number for reading: three significant digits, no exponent for everyday sizes.
fn rounded(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format_value(v);
    }
    let digits = (2 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    format!("{v:.digits$}")
}

/// Text for HTML: `&`, `<`, `>`, `"` and `'` escaped.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_numbers_rounded() {
        let mut out = String::new();
        render_section(
            &mut out,
            &SECTIONS[1],
            Ok(vec![("<script>alert('x')</script>".into(), 12.3456)]),
        );
        assert!(
            out.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{out}"
        );
        assert!(!out.contains("<script>"));
        assert!(out.contains("data-value=\"12.3456\">12.3/s"), "{out}");
        assert_eq!(rounded(0.012345), "0.0123");
        assert_eq!(rounded(1234.6), "1235");
        assert_eq!(rounded(0.0), "0");
    }

    #[test]
    fn every_section_query_parses() {
        for s in SECTIONS {
            obs_promql::parse(s.query).unwrap_or_else(|e| panic!("{}: {e}", s.title));
        }
    }
}
