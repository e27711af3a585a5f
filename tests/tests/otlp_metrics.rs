//! OTLP metrics end to end with the OpenTelemetry Python SDK's exporter: every exported data
//! point is in `metrics_samples` exactly once, under the Prometheus names and labels the
//! collector documents (resource → job/instance and target_info, scope labels, sanitised
//! attributes), cumulative and delta temporality alike.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clickhouse::Row;
use obs_e2e::{Stack, run_python_sender, wait_for};
use serde::Deserialize;
use serde_json::Value;

/// Series (name + labels as text) → samples (ms, value).
type Samples = BTreeMap<String, Vec<(i64, f64)>>;

fn key(name: &str, labels: &BTreeMap<String, String>) -> String {
    format!("{name}{labels:?}")
}

fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn le(v: f64) -> String {
    if v.is_infinite() {
        "+Inf".into()
    } else {
        format!("{v}")
    }
}

/// What the collector must have stored for the exported points.
fn expected(lines: &[Value], run_id: &str) -> Samples {
    let mut out = Samples::new();
    let mut totals: BTreeMap<String, f64> = BTreeMap::new();
    let mut push = |out: &mut Samples,
                    name: String,
                    labels: BTreeMap<String, String>,
                    ts: i64,
                    v: f64,
                    delta: bool| {
        let k = key(&name, &labels);
        let v = if delta {
            let t = totals.entry(k.clone()).or_insert(0.0);
            *t += v;
            *t
        } else {
            v
        };
        out.entry(k).or_default().push((ts, v));
    };
    for l in lines {
        let mut labels: BTreeMap<String, String> = BTreeMap::from([
            ("job".into(), "sdk-metrics-svc".into()),
            ("instance".into(), run_id.into()),
            ("otel_scope_name".into(), "obs.e2e.metrics".into()),
            ("otel_scope_version".into(), "0.9".into()),
        ]);
        for (k, v) in l["attributes"].as_object().unwrap() {
            labels.insert(sanitize(k), v.as_str().unwrap().to_string());
        }
        let name = sanitize(l["name"].as_str().unwrap());
        let ts = (l["time_unix_nano"].as_u64().unwrap() / 1_000_000) as i64;
        let delta = l["delta"].as_bool().unwrap_or(false);
        match l["kind"].as_str().unwrap() {
            "Sum" => {
                let name = if l["monotonic"].as_bool().unwrap() {
                    format!("{name}_total")
                } else {
                    name
                };
                push(
                    &mut out,
                    name,
                    labels,
                    ts,
                    l["value"].as_f64().unwrap(),
                    delta,
                );
            }
            "Gauge" => push(
                &mut out,
                name,
                labels,
                ts,
                l["value"].as_f64().unwrap(),
                false,
            ),
            "Histogram" => {
                let bounds: Vec<f64> = l["explicit_bounds"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|b| b.as_f64().unwrap())
                    .collect();
                let counts: Vec<f64> = l["bucket_counts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_f64().unwrap())
                    .collect();
                let mut cumulative = 0.0;
                for (b, c) in bounds.iter().copied().chain([f64::INFINITY]).zip(counts) {
                    cumulative += c;
                    let mut bl = labels.clone();
                    bl.insert("le".into(), le(b));
                    push(
                        &mut out,
                        format!("{name}_bucket"),
                        bl,
                        ts,
                        cumulative,
                        delta,
                    );
                }
                push(
                    &mut out,
                    format!("{name}_count"),
                    labels.clone(),
                    ts,
                    l["count"].as_f64().unwrap(),
                    delta,
                );
                push(
                    &mut out,
                    format!("{name}_sum"),
                    labels,
                    ts,
                    l["sum"].as_f64().unwrap(),
                    delta,
                );
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    out
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Stored {
    metric_name: String,
    labels: Vec<(String, String)>,
    timestamp_ms: i64,
    value: f64,
}

async fn stored(stack: &Stack, run_id: &str) -> Option<Samples> {
    let rows: Vec<Stored> = stack
        .db()
        .query(
            "SELECT s.MetricName AS MetricName, r.Labels AS Labels, s.TimestampMs AS TimestampMs, s.Value AS Value \
             FROM metrics_samples AS s \
             INNER JOIN (SELECT DISTINCT Fingerprint, Labels FROM metrics_series WHERE Labels['instance'] = ?) AS r \
             ON s.Fingerprint = r.Fingerprint \
             WHERE s.MetricName != 'target_info' ORDER BY TimestampMs",
        )
        .bind(run_id)
        .fetch_all()
        .await
        .ok()?;
    let mut out = Samples::new();
    for r in rows {
        let labels: BTreeMap<String, String> = r.labels.into_iter().collect();
        out.entry(key(&r.metric_name, &labels))
            .or_default()
            .push((r.timestamp_ms, r.value));
    }
    Some(out)
}

async fn sdk_metrics_arrive_exactly_once(protocol: &str, temporality: &str) {
    let stack = Stack::start().await.unwrap();
    let run_id = format!(
        "metrics-{temporality}-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let endpoint = match protocol {
        "otlp-http" => format!("http://127.0.0.1:{}/v1/metrics", stack.ports.otlp_http),
        _ => format!("127.0.0.1:{}", stack.ports.otlp_grpc),
    };
    let lines: Vec<Value> = run_python_sender(
        "send_otlp_metrics.py",
        &[
            "--endpoint",
            &endpoint,
            "--run-id",
            &run_id,
            "--protocol",
            protocol,
            "--temporality",
            temporality,
        ],
    );
    let want = expected(&lines, &run_id);
    let total: usize = want.values().map(Vec::len).sum();
    assert!(
        want.len() >= 20 && total >= 40,
        "{} series, {total} samples",
        want.len()
    );

    let got = wait_for("every exported point", Duration::from_secs(60), || {
        let (stack, run_id) = (&stack, run_id.clone());
        async move {
            let got = stored(stack, &run_id).await?;
            (got.values().map(Vec::len).sum::<usize>() >= total).then_some(got)
        }
    })
    .await;
    let got = match got {
        Ok(g) => g,
        Err(e) => {
            let got = stored(&stack, &run_id).await.unwrap_or_default();
            let missing: Vec<_> = want
                .iter()
                .filter(|(k, v)| got.get(*k) != Some(v))
                .take(4)
                .collect();
            panic!(
                "{e}: {} of {total} stored; differing: {missing:?}; stored for them: {:?}\n{}",
                got.values().map(Vec::len).sum::<usize>(),
                missing.iter().map(|(k, _)| got.get(*k)).collect::<Vec<_>>(),
                stack.obs_log()
            );
        }
    };
    assert_eq!(got, want);

    // The resource is a target_info series; families carry type, help and unit (their
    // own sinks, so polled).
    let db = stack.db();
    let (env, meta) = wait_for("target_info and metadata", Duration::from_secs(60), || {
        let (db, run_id) = (db.clone(), run_id.clone());
        async move {
            let env: String = db
                .query("SELECT Labels['deployment_environment'] FROM metrics_series WHERE MetricName = 'target_info' AND Labels['instance'] = ? LIMIT 1")
                .bind(&run_id)
                .fetch_one()
                .await
                .ok()?;
            let meta: (String, String, String) = db
                .query("SELECT Kind, Help, Unit FROM metrics_metadata FINAL WHERE MetricFamily = 'orders_total'")
                .fetch_one()
                .await
                .ok()?;
            Some((env, meta))
        }
    })
    .await
    .unwrap();
    assert_eq!(env, "e2e");
    assert_eq!(
        meta,
        ("counter".into(), "Orders placed.".into(), "{order}".into())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_cumulative_metrics_over_http() {
    sdk_metrics_arrive_exactly_once("otlp-http", "cumulative").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_delta_metrics_over_http_are_stored_cumulative() {
    sdk_metrics_arrive_exactly_once("otlp-http", "delta").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_sdk_cumulative_metrics_over_grpc() {
    sdk_metrics_arrive_exactly_once("otlp-grpc", "cumulative").await;
}
