//! `obs slo generate`: a small SLO spec becomes a Prometheus rule file with the SLI
//! recording rules and the multiwindow, multi-burn-rate alerts of the Google SRE workbook
//! (chapter "Alerting on SLOs"), or Sloth's variant of them.
//!
//! The spec names a service and its SLOs; each SLO gives its objective (percent), its
//! period, and either `error_query` + `total_query` or `good_query` + `total_query`, PromQL
//! with `{{.window}}` where the range goes (`rate(x[{{.window}}])`, as Sloth writes it).
//!
//! Burn-rate alerts fire when the error budget is being spent so fast that a fraction of
//! the period's budget goes in a long window, confirmed by a short window (1/12 of it) so
//! that the alert stops soon after the burn does. Fractions (the workbook's numbers for a
//! 30-day period, scaled for other periods):
//!
//! | variant  | severity | budget spent | long window | short window | burn rate (30d) |
//! |----------|----------|--------------|-------------|--------------|-----------------|
//! | workbook | page     | 2%           | 1h          | 5m           | 14.4            |
//! | workbook | page     | 5%           | 6h          | 30m          | 6               |
//! | workbook | ticket   | 10%          | 3d          | 6h           | 1               |
//! | sloth    | page     | as workbook  |             |              |                 |
//! | sloth    | ticket   | 10%          | 1d          | 2h           | 3               |
//! | sloth    | ticket   | 10%          | 3d          | 6h           | 1               |

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::file;

/// An SLO spec file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The service the SLOs are about (a label on every generated series).
    pub service: String,
    /// Labels added to every generated rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `workbook` (default) or `sloth`: which ticket windows.
    #[serde(default)]
    pub variant: Variant,
    /// The SLOs.
    pub slos: Vec<Slo>,
}

/// Which multiwindow, multi-burn-rate set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// The SRE workbook's table 5-8: pages at 2%/1h and 5%/6h, a ticket at 10%/3d.
    #[default]
    Workbook,
    /// Sloth's: the workbook's pages, tickets at 10%/1d and 10%/3d.
    Sloth,
}

/// One SLO.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Its name (a label on every generated series).
    pub name: String,
    /// Objective in percent, e.g. 99.9.
    pub objective: f64,
    /// The period the objective holds over (Prometheus duration, default 30d).
    #[serde(default)]
    pub period: Option<String>,
    /// Bad events over `{{.window}}`.
    #[serde(default)]
    pub error_query: Option<String>,
    /// Good events over `{{.window}}`.
    #[serde(default)]
    pub good_query: Option<String>,
    /// All events over `{{.window}}`.
    pub total_query: String,
    /// Labels of the page alerts (default `severity: page`).
    #[serde(default)]
    pub page_labels: Option<BTreeMap<String, String>>,
    /// Labels of the ticket alerts (default `severity: ticket`).
    #[serde(default)]
    pub ticket_labels: Option<BTreeMap<String, String>>,
}

#[derive(Serialize)]
struct OutFile {
    groups: Vec<OutGroup>,
}

#[derive(Serialize)]
struct OutGroup {
    name: String,
    rules: Vec<OutRule>,
}

#[derive(Serialize)]
struct OutRule {
    #[serde(skip_serializing_if = "Option::is_none")]
    record: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<String>,
    expr: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    annotations: BTreeMap<String, String>,
}

/// A burn-rate alert: spending `budget_fraction` of the period's budget within `long`,
/// confirmed over `short`.
struct Window {
    severity: &'static str,
    budget_fraction: f64,
    long: &'static str,
    short: &'static str,
}

fn windows(v: Variant) -> Vec<Window> {
    let mut w = vec![
        Window {
            severity: "page",
            budget_fraction: 0.02,
            long: "1h",
            short: "5m",
        },
        Window {
            severity: "page",
            budget_fraction: 0.05,
            long: "6h",
            short: "30m",
        },
    ];
    match v {
        Variant::Workbook => w.push(Window {
            severity: "ticket",
            budget_fraction: 0.10,
            long: "3d",
            short: "6h",
        }),
        Variant::Sloth => {
            w.push(Window {
                severity: "ticket",
                budget_fraction: 0.10,
                long: "1d",
                short: "2h",
            });
            w.push(Window {
                severity: "ticket",
                budget_fraction: 0.10,
                long: "3d",
                short: "6h",
            });
        }
    }
    w
}

fn secs(d: &str) -> Result<f64, String> {
    file::parse_duration(d).map(|d: Duration| d.as_secs_f64())
}

/// A number for a generated expression: 12 significant digits, so that decimal inputs
/// come out as written (1 - 0.999 is 0.001, not 0.0009999999999998899).
fn num(v: f64) -> String {
    let rounded: f64 = format!("{v:.11e}").parse().unwrap_or(v);
    format!("{rounded}")
}

fn selector(labels: &BTreeMap<String, String>) -> String {
    let inner: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v).expect("string")))
        .collect();
    format!("{{{}}}", inner.join(", "))
}

/// The rule file for `spec`, as YAML; errors name the SLO and what is wrong.
pub fn generate(spec: &Spec) -> Result<String, String> {
    if spec.slos.is_empty() {
        return Err("the spec has no slos".into());
    }
    let mut groups = Vec::new();
    for slo in &spec.slos {
        let named = |m: String| format!("slo {:?}: {m}", slo.name);
        if !(slo.objective > 0.0 && slo.objective < 100.0) {
            return Err(named(format!(
                "objective {} is not a percentage between 0 and 100 (exclusive)",
                slo.objective
            )));
        }
        let period = slo.period.clone().unwrap_or_else(|| "30d".into());
        let period_s = secs(&period).map_err(|e| named(format!("period: {e}")))?;
        let (bad, total) = match (&slo.error_query, &slo.good_query) {
            (Some(e), None) => (e.clone(), false),
            (None, Some(g)) => (g.clone(), true),
            _ => {
                return Err(named(
                    "give exactly one of error_query and good_query (with total_query)".into(),
                ));
            }
        };
        for (what, q) in [
            ("error_query/good_query", &bad),
            ("total_query", &slo.total_query),
        ] {
            if !q.contains("{{.window}}") {
                return Err(named(format!(
                    "{what} has no {{{{.window}}}} where the range goes (e.g. rate(x[{{{{.window}}}}]))"
                )));
            }
        }
        let budget = 1.0 - slo.objective / 100.0;
        let mut ids = spec.labels.clone();
        ids.insert("slo_service".into(), spec.service.clone());
        ids.insert("slo_name".into(), slo.name.clone());
        let ws = windows(spec.variant);
        let mut needed: Vec<&str> = ws.iter().flat_map(|w| [w.short, w.long]).collect();
        needed.sort_by(|a, b| secs(a).unwrap_or(0.0).total_cmp(&secs(b).unwrap_or(0.0)));
        needed.dedup();

        let mut recordings = Vec::new();
        for w in &needed {
            let at = |q: &str| q.replace("{{.window}}", w);
            let expr = if total {
                format!("1 - (({}) / ({}))", at(&bad), at(&slo.total_query))
            } else {
                format!("({}) / ({})", at(&bad), at(&slo.total_query))
            };
            let mut labels = ids.clone();
            labels.insert("slo_window".into(), w.to_string());
            recordings.push(OutRule {
                record: Some(format!("slo:sli_error:ratio_rate{w}")),
                alert: None,
                expr,
                labels,
                annotations: BTreeMap::new(),
            });
        }
        let sel = selector(&ids);
        let mut labels = ids.clone();
        labels.insert("slo_window".into(), period.clone());
        recordings.push(OutRule {
            record: Some(format!("slo:sli_error:ratio_rate{period}")),
            alert: None,
            expr: format!("avg_over_time(slo:sli_error:ratio_rate5m{sel}[{period}])"),
            labels,
            annotations: BTreeMap::new(),
        });
        recordings.push(OutRule {
            record: Some("slo:objective:ratio".into()),
            alert: None,
            expr: num(slo.objective / 100.0),
            labels: ids.clone(),
            annotations: BTreeMap::new(),
        });
        recordings.push(OutRule {
            record: Some("slo:error_budget:ratio".into()),
            alert: None,
            expr: num(budget),
            labels: ids.clone(),
            annotations: BTreeMap::new(),
        });
        recordings.push(OutRule {
            record: Some("slo:period_error_budget_remaining:ratio".into()),
            alert: None,
            expr: format!(
                "1 - (slo:sli_error:ratio_rate{period}{sel} / ignoring(slo_window) slo:error_budget:ratio{sel})"
            ),
            labels: ids.clone(),
            annotations: BTreeMap::new(),
        });

        let mut alerts = Vec::new();
        for severity in ["page", "ticket"] {
            let mine: Vec<&Window> = ws.iter().filter(|w| w.severity == severity).collect();
            let clauses: Vec<String> = mine
                .iter()
                .map(|w| {
                    let factor = w.budget_fraction * period_s / secs(w.long).unwrap_or(1.0);
                    let threshold = num(factor * budget);
                    format!(
                        "(max by (slo_service, slo_name) (slo:sli_error:ratio_rate{short}{sel} > {threshold}) and max by (slo_service, slo_name) (slo:sli_error:ratio_rate{long}{sel} > {threshold}))",
                        short = w.short,
                        long = w.long,
                    )
                })
                .collect();
            let mut labels = ids.clone();
            let custom = if severity == "page" {
                &slo.page_labels
            } else {
                &slo.ticket_labels
            };
            match custom {
                Some(l) => labels.extend(l.clone()),
                None => {
                    labels.insert("severity".into(), severity.into());
                }
            }
            let windows_text: Vec<String> = mine
                .iter()
                .map(|w| format!("{}% of the budget in {}", w.budget_fraction * 100.0, w.long))
                .collect();
            alerts.push(OutRule {
                record: None,
                alert: Some("ErrorBudgetBurn".into()),
                expr: clauses.join(" or "),
                labels,
                annotations: BTreeMap::from([
                    (
                        "summary".to_string(),
                        format!(
                            "{} SLO {} is burning its error budget too fast",
                            spec.service, slo.name
                        ),
                    ),
                    (
                        "description".to_string(),
                        format!(
                            "Objective {}% over {period}; {severity} when spending {} (confirmed over a window 1/12 as long). Error ratio over the short window: {{{{ $value | humanizePercentage }}}}.",
                            num(slo.objective),
                            windows_text.join(" or ")
                        ),
                    ),
                ]),
            });
        }
        let base = format!("slo-{}-{}", spec.service, slo.name);
        groups.push(OutGroup {
            name: format!("{base}-recordings"),
            rules: recordings,
        });
        groups.push(OutGroup {
            name: format!("{base}-alerts"),
            rules: alerts,
        });
    }
    let header = format!(
        "# Generated by `obs slo generate` ({} multiwindow, multi-burn-rate alerts). Do not edit: edit the spec.\n",
        match spec.variant {
            Variant::Workbook => "Google SRE workbook",
            Variant::Sloth => "Sloth's",
        }
    );
    let yaml = serde_yaml_ng::to_string(&OutFile { groups }).map_err(|e| e.to_string())?;
    // What is generated must load here too.
    file::parse("generated", &yaml).map_err(|e| e.join("\n"))?;
    Ok(header + &yaml)
}

/// Reads a spec.
pub fn parse_spec(name: &str, text: &str) -> Result<Spec, String> {
    serde_yaml_ng::from_str(text).map_err(|e| format!("{name}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
service: checkout
slos:
  - name: availability
    objective: 99.9
    error_query: sum(rate(http_requests_total{job="checkout",code=~"5.."}[{{.window}}]))
    total_query: sum(rate(http_requests_total{job="checkout"}[{{.window}}]))
"#;

    #[test]
    fn the_workbook_thresholds_for_a_30_day_period() {
        let out = generate(&parse_spec("s", SPEC).unwrap()).unwrap();
        // 14.4 x 0.001, 6 x 0.001 and 1 x 0.001 (float products as PromQL reads them).
        for threshold in ["0.0144", "0.006", "0.001"] {
            assert!(
                out.contains(&format!("> {threshold})")),
                "{threshold}: {out}"
            );
        }
        assert!(
            out.contains("expr: '0.999'") && out.contains("expr: '0.001'"),
            "{out}"
        );
        assert!(out.contains("slo:sli_error:ratio_rate5m"));
        assert!(out.contains("slo:sli_error:ratio_rate3d"));
        assert!(
            !out.contains("ratio_rate1d"),
            "the workbook has no 1d window"
        );
        let sloth = SPEC.replace("service: checkout", "service: checkout\nvariant: sloth");
        let out = generate(&parse_spec("s", &sloth).unwrap()).unwrap();
        assert!(out.contains("slo:sli_error:ratio_rate1d"));
    }

    #[test]
    fn bad_specs_are_named() {
        let bad = SPEC.replace("99.9", "100");
        let e = generate(&parse_spec("s", &bad).unwrap()).unwrap_err();
        assert!(e.contains("slo \"availability\": objective 100"), "{e}");
        let bad = SPEC.replace("[{{.window}}]))\n    total", "[5m]))\n    total");
        let e = generate(&parse_spec("s", &bad).unwrap()).unwrap_err();
        assert!(e.contains("has no {{.window}}"), "{e}");
        assert!(parse_spec("s", "service: x\nslos: []\nextra: 1").is_err());
    }
}
