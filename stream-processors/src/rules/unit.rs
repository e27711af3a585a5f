//! `obs rules test`: Prometheus rule unit-test files (`promtool test rules`) run through
//! this engine. The loop is promtool's (`cmd/promtool/unittest.go`): input series are
//! loaded up to each evaluation time, every group is evaluated at every
//! `evaluation_interval` from 0 to the largest `eval_time`, firing alerts are compared at
//! the evaluation that covers each alert test's `eval_time`, and `promql_expr_test`s are
//! instant queries over what was loaded and recorded. A rule that fails ends its test
//! group, as in promtool.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use obs_promql::{Labels, stale_nan};
use serde::Deserialize;

use super::alerting::State;
use super::file;
use super::group::{Env, Group, Kind, query};
use super::series_notation::{self, Point};
use super::store::{AppendError, Shared};

/// A unit-test file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    rule_files: Vec<String>,
    #[serde(default, deserialize_with = "duration")]
    evaluation_interval: Option<Duration>,
    #[serde(default)]
    group_eval_order: Vec<String>,
    #[serde(default)]
    tests: Vec<TestGroup>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestGroup {
    #[serde(default, deserialize_with = "duration")]
    interval: Option<Duration>,
    #[serde(default)]
    input_series: Vec<InputSeries>,
    #[serde(default)]
    alert_rule_test: Vec<AlertTest>,
    #[serde(default)]
    promql_expr_test: Vec<ExprTest>,
    #[serde(default)]
    external_labels: BTreeMap<String, String>,
    #[serde(default)]
    external_url: String,
    #[serde(default)]
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct InputSeries {
    series: String,
    values: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AlertTest {
    #[serde(default, deserialize_with = "duration")]
    eval_time: Option<Duration>,
    #[serde(default)]
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<ExpAlert>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpAlert {
    #[serde(default)]
    exp_labels: BTreeMap<String, String>,
    #[serde(default)]
    exp_annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExprTest {
    expr: String,
    #[serde(default, deserialize_with = "duration")]
    eval_time: Option<Duration>,
    #[serde(default)]
    exp_samples: Vec<ExpSample>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpSample {
    #[serde(default)]
    labels: String,
    value: f64,
}

/// A Prometheus duration written as a string or a bare number (`eval_time: 0`).
fn duration<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        S(String),
        N(u64),
    }
    let raw: Option<Raw> = Option::deserialize(d)?;
    match raw {
        None => Ok(None),
        Some(Raw::N(0)) => Ok(Some(Duration::ZERO)),
        Some(Raw::N(n)) => Err(serde::de::Error::custom(format!(
            "not a valid duration string: \"{n}\""
        ))),
        Some(Raw::S(s)) => file::parse_duration(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// The outcome of one file: `Ok` or the failures, each as promtool words it.
pub type FileResult = Result<(), Vec<String>>;

/// Runs the unit-test file at `path`.
pub fn run_file(path: &Path) -> FileResult {
    let text =
        std::fs::read_to_string(path).map_err(|e| vec![format!("{}: {e}", path.display())])?;
    let tf: TestFile = serde_yaml_ng::from_str(&text).map_err(|e| vec![e.to_string()])?;
    let base = path.parent().unwrap_or(Path::new("."));
    let rule_files = resolve(base, &tf.rule_files)?;
    let interval_ms = tf
        .evaluation_interval
        .filter(|d| !d.is_zero())
        .map_or(60_000, |d| d.as_millis() as i64);
    let mut order = BTreeMap::new();
    for (i, g) in tf.group_eval_order.iter().enumerate() {
        if order.insert(g.clone(), i).is_some() {
            return Err(vec![format!(
                "group name repeated in evaluation order: {g}"
            )]);
        }
    }
    let mut errs = Vec::new();
    for tg in &tf.tests {
        errs.extend(run_group(tg, interval_ms, &order, &rule_files));
    }
    if errs.is_empty() { Ok(()) } else { Err(errs) }
}

fn resolve(base: &Path, files: &[String]) -> Result<Vec<PathBuf>, Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let p = if Path::new(f).is_absolute() {
            PathBuf::from(f)
        } else {
            base.join(f)
        };
        let pattern = p.to_string_lossy().to_string();
        let matches: Vec<PathBuf> = glob::glob(&pattern)
            .map_err(|e| vec![format!("{pattern}: {e}")])?
            .filter_map(Result::ok)
            .collect();
        if matches.is_empty() {
            eprintln!("  WARNING: no file match pattern {pattern}");
        }
        out.extend(matches);
    }
    Ok(out)
}

fn load_groups(
    files: &[PathBuf],
    env: &Env,
    order: &BTreeMap<String, usize>,
) -> Result<Vec<Group>, Vec<String>> {
    let mut groups = super::group::load(files, env)?;
    groups.sort_by_key(|g| order.get(&g.name).copied().unwrap_or(0));
    Ok(groups)
}

/// The input series' samples in time order.
fn input_samples(tg: &TestGroup) -> Result<Vec<(i64, Labels, f64)>, String> {
    let step = tg.interval.map_or(0, |d| d.as_millis() as i64);
    let mut out = Vec::new();
    for s in &tg.input_series {
        let labels = series_notation::labels(&s.series)?;
        for (i, p) in series_notation::expand(&s.values)?.into_iter().enumerate() {
            let t = i as i64 * step;
            match p {
                Point::Value(v) => out.push((t, labels.clone(), v)),
                Point::Stale => out.push((t, labels.clone(), stale_nan())),
                Point::Missing => {}
            }
        }
    }
    out.sort_by_key(|(t, _, _)| *t);
    Ok(out)
}

fn run_group(
    tg: &TestGroup,
    interval_ms: i64,
    order: &BTreeMap<String, usize>,
    files: &[PathBuf],
) -> Vec<String> {
    let env = Env {
        external_labels: tg.external_labels.clone().into_iter().collect(),
        external_url: tg.external_url.clone(),
        default_interval_ms: tg.interval.map_or(0, |d| d.as_millis() as i64),
    };
    let samples = match input_samples(tg) {
        Ok(s) => s,
        Err(e) => return vec![e],
    };
    let mut groups = match load_groups(files, &env, order) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let ms = |d: &Option<Duration>| d.map_or(0, |d| d.as_millis() as i64);
    let test_name = if tg.name.is_empty() {
        String::new()
    } else {
        format!("    name: {},\n", tg.name)
    };
    let mut alert_tests: BTreeMap<i64, Vec<&AlertTest>> = BTreeMap::new();
    for a in &tg.alert_rule_test {
        if a.alertname.is_empty() {
            let in_group = if tg.name.is_empty() {
                String::new()
            } else {
                format!(" (in TestGroup {})", tg.name)
            };
            return vec![format!(
                "an item under alert_rule_test misses required attribute alertname at eval_time {}{in_group}",
                model_duration(ms(&a.eval_time))
            )];
        }
        alert_tests.entry(ms(&a.eval_time)).or_default().push(a);
    }
    let max_t = tg
        .alert_rule_test
        .iter()
        .map(|a| ms(&a.eval_time))
        .chain(tg.promql_expr_test.iter().map(|e| ms(&e.eval_time)))
        .max()
        .unwrap_or(0);

    let store = Shared::default();
    let mut errs = Vec::new();
    let mut loaded = 0;
    let mut ts = 0;
    while ts <= max_t {
        let upto = samples[loaded..].partition_point(|(t, _, _)| *t <= ts) + loaded;
        store.with(|s| {
            for (t, l, v) in &samples[loaded..upto] {
                // The first value at a time wins, as in promtool's loader.
                if let Err(AppendError::OutOfOrder) = s.append(l, *t, *v) {
                    errs.push(format!("out of order sample for {l:?} at {t}"));
                }
            }
        });
        loaded = upto;
        let mut eval_errs = Vec::new();
        for g in &mut groups {
            for e in g.eval(ts, &store, &env).errors {
                eval_errs.push(format!(
                    "    rule: {}, time: {}, err: {}",
                    e.rule,
                    go_duration(ts),
                    e.error
                ));
            }
        }
        if !eval_errs.is_empty() {
            errs.extend(eval_errs);
            return errs;
        }
        for (&t, tests) in alert_tests.range(ts..ts + interval_ms) {
            for test in tests {
                let mut got: Vec<(Labels, Labels)> = groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .filter_map(|r| match &r.kind {
                        Kind::Alerting(a) if a.name == test.alertname => Some(a),
                        _ => None,
                    })
                    .flat_map(|a| a.alerts_in(State::Firing))
                    .map(|a| (a.labels.clone(), a.annotations.clone()))
                    .collect();
                let mut exp: Vec<(Labels, Labels)> = test
                    .exp_alerts
                    .iter()
                    .map(|e| {
                        let mut l: Labels = e.exp_labels.clone().into_iter().collect();
                        l.insert("alertname".into(), test.alertname.clone());
                        (l, e.exp_annotations.clone().into_iter().collect())
                    })
                    .collect();
                got.sort();
                exp.sort();
                if got != exp {
                    errs.push(format!(
                        "{test_name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        test.alertname,
                        model_duration(t),
                        alerts_string(&exp),
                        alerts_string(&got)
                    ));
                }
            }
        }
        ts += interval_ms;
    }

    for test in &tg.promql_expr_test {
        let at = ms(&test.eval_time);
        let when = model_duration(at);
        let got = obs_promql::parse(&test.expr).and_then(|e| query(&store, &e, at, interval_ms));
        let mut got = match got {
            Ok(g) => g,
            Err(e) => {
                errs.push(format!("    expr: {:?}, time: {when}, err: {e}", test.expr));
                continue;
            }
        };
        let mut exp = Vec::new();
        let mut bad = None;
        for s in &test.exp_samples {
            let labels = if s.labels.trim() == "{}" || s.labels.trim().is_empty() {
                Ok(Labels::new())
            } else {
                series_notation::labels(&s.labels)
            };
            match labels {
                Ok(l) => exp.push((l, s.value)),
                Err(e) => {
                    bad = Some(format!(
                        "    expr: {:?}, time: {when}, err: labels {:?}: {e}",
                        test.expr, s.labels
                    ));
                    break;
                }
            }
        }
        if let Some(b) = bad {
            errs.push(b);
            continue;
        }
        got.sort_by(|a, b| a.0.cmp(&b.0));
        exp.sort_by(|a, b| a.0.cmp(&b.0));
        // Values compare as Go's reflect.DeepEqual compares floats (NaN never equal).
        let same =
            got.len() == exp.len() && got.iter().zip(&exp).all(|(g, e)| g.0 == e.0 && g.1 == e.1);
        if !same {
            errs.push(format!(
                "    expr: {:?}, time: {when},\n        exp: {}\n        got: {}",
                test.expr,
                samples_string(&exp),
                samples_string(&got)
            ));
        }
    }
    errs
}

/// Labels as Prometheus prints them: `{a="1", b="2"}`.
pub fn labels_string(l: &Labels) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in l.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}={v:?}");
    }
    s.push('}');
    s
}

fn alerts_string(a: &[(Labels, Labels)]) -> String {
    if a.is_empty() {
        return "[]".into();
    }
    let items: Vec<String> = a
        .iter()
        .enumerate()
        .map(|(i, (l, an))| {
            format!(
                "{i}:\n              Labels:{}\n              Annotations:{}",
                labels_string(l),
                labels_string(an)
            )
        })
        .collect();
    format!(
        "[\n            {}\n            ]",
        items.join(",\n            ")
    )
}

fn samples_string(s: &[(Labels, f64)]) -> String {
    if s.is_empty() {
        return "nil".into();
    }
    s.iter()
        .map(|(l, v)| format!("{} {}", labels_string(l), super::expand::go_exp(*v, 'E')))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A time since 0 as Go's `time.Duration` prints it (`1m0s`).
fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let (h, m, s, rem) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    let secs = if rem == 0 {
        format!("{s}s")
    } else {
        format!("{s}.{}s", format!("{rem:03}").trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

/// A duration as Prometheus's `model.Duration` prints it (`5m`, `1h30m`, `0s`).
fn model_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    let mut rest = ms;
    for (unit, size) in file::DURATION_UNITS {
        let size = size as i64;
        if rest >= size {
            let _ = write!(out, "{}{unit}", rest / size);
            rest %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_go_and_prometheus_print_them() {
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(3_900_000), "1h5m0s");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(model_duration(300_000), "5m");
        assert_eq!(model_duration(5_400_000), "1h30m");
        assert_eq!(super::super::expand::go_exp(3.0, 'E'), "3E+00");
        assert_eq!(super::super::expand::go_exp(0.25, 'e'), "2.5e-01");
    }
}
