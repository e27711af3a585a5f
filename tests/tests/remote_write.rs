//! Prometheus remote write end to end: a real Prometheus 2.42 scrapes itself and remote-writes
//! to the collector; the samples in ClickHouse equal the raw samples Prometheus's own TSDB
//! returns for the same window. Hand-built requests check the refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use clickhouse::Row;
use obs_e2e::prometheus::Prometheus;
use obs_e2e::remote_write::{self, Series};
use obs_e2e::{Stack, http, wait_for};
use obs_producers::remote_write::proto::{Label, Sample, TimeSeries, WriteRequest};
use prost::Message;
use serde::Deserialize;

const TENANT: &str = "rw-test";

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SampleRow {
    metric_name: String,
    fingerprint: i64,
    timestamp_ms: i64,
    value: f64,
}

#[derive(Debug, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SeriesRow {
    fingerprint: i64,
    labels: Vec<(String, String)>,
}

/// Series (labels with `__name__`, as text) → samples (ms, value).
type Samples = BTreeMap<String, Vec<(i64, f64)>>;

fn key(name: &str, labels: impl IntoIterator<Item = (String, String)>) -> String {
    let mut all: BTreeMap<String, String> = labels.into_iter().collect();
    all.insert("__name__".into(), name.into());
    format!("{all:?}")
}

fn same(a: f64, b: f64) -> bool {
    a == b || (a.is_nan() && b.is_nan())
}

/// Raw samples of `{job="prometheus"}` in `[from, to]` from ClickHouse (Prometheus 2.x range
/// selectors include both ends).
async fn stored(stack: &Stack, from_ms: i64, to_ms: i64) -> Option<Samples> {
    let db = stack.db();
    let series: Vec<SeriesRow> = db
        .query("SELECT Fingerprint, Labels FROM metrics_series WHERE Tenant = ?")
        .bind(TENANT)
        .fetch_all()
        .await
        .ok()?;
    let labels: BTreeMap<i64, Vec<(String, String)>> = series
        .into_iter()
        .map(|s| (s.fingerprint, s.labels))
        .collect();
    let rows: Vec<SampleRow> = db
        .query(
            "SELECT MetricName, Fingerprint, TimestampMs, Value FROM metrics_samples \
             WHERE Tenant = ? AND TimestampMs >= ? AND TimestampMs <= ? ORDER BY TimestampMs",
        )
        .bind(TENANT)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all()
        .await
        .ok()?;
    let mut out = Samples::new();
    for r in rows {
        let l = labels.get(&r.fingerprint)?.clone();
        if !l.iter().any(|(k, v)| k == "job" && v == "prometheus") {
            continue;
        }
        // Stale markers are in storage; a range selector does not return them.
        if r.value.to_bits() == 0x7ff0_0000_0000_0002 {
            continue;
        }
        out.entry(key(&r.metric_name, l))
            .or_default()
            .push((r.timestamp_ms, r.value));
    }
    Some(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn prometheus_remote_write_matches_its_own_tsdb() {
    // Debian's Prometheus 2.42 build does not send remote_write `headers` (checked with a
    // plain HTTP server), so the tenant comes from the collector's default.
    // LZ4 bodies to and from ClickHouse, as a remote server gets them: the other tests'
    // stacks are on loopback, where `compression = "auto"` sends them plain.
    let stack = Stack::start_with(&[
        ("OBS_COLLECTOR__DEFAULT_TENANT", TENANT),
        ("OBS_CLICKHOUSE__COMPRESSION", "lz4"),
    ])
    .await
    .unwrap();
    let config = obs_e2e::prometheus::self_scrape_remote_write(
        &format!("{}/api/v1/write", stack.collector_url()),
        "    metadata_config:\n      send: true\n      send_interval: 2s\n",
    );
    let data = stack.dir().join("prom-data");
    let prom = Prometheus::start(stack.dir(), "prometheus", &config, &data)
        .await
        .unwrap();

    // Let a few scrapes reach ClickHouse.
    let db = stack.db();
    wait_for(
        "8 scrapes of up in ClickHouse",
        Duration::from_secs(90),
        || {
            let db = db.clone();
            async move {
                let n: u64 = db
                .query("SELECT count() FROM metrics_samples WHERE Tenant = ? AND MetricName = 'up'")
                .bind(TENANT)
                .fetch_one()
                .await
                .ok()?;
                (n >= 8).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", prom.log_tail(), stack.obs_log()));

    // The newest scrape Prometheus has, and its raw samples over [t - 5 s, t].
    let up = prom.query("up[1m]", now_s()).await.unwrap();
    let t_ms = up[0]["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v[0].as_f64().unwrap() * 1000.0).round() as i64)
        .max()
        .unwrap();
    let raw = prom
        .query(r#"{job="prometheus"}[5s]"#, t_ms as f64 / 1000.0)
        .await
        .unwrap();
    let mut expected = Samples::new();
    for series in &raw {
        let metric = series["metric"].as_object().unwrap();
        let name = metric["__name__"].as_str().unwrap();
        let labels = metric
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()));
        let values = series["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let ts = (v[0].as_f64().unwrap() * 1000.0).round() as i64;
                let val: f64 = v[1].as_str().unwrap().parse().unwrap();
                (ts, val)
            })
            .collect();
        expected.insert(key(name, labels), values);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert!(
        expected.len() > 100 && total > expected.len() * 3,
        "too little to compare: {} series, {total} samples",
        expected.len()
    );

    // ClickHouse must hold exactly these series and samples for the window.
    let equal = |got: &Samples| {
        got.len() == expected.len()
            && got.iter().zip(&expected).all(|((ka, va), (kb, vb))| {
                ka == kb
                    && va.len() == vb.len()
                    && va.iter().zip(vb).all(|(a, b)| a.0 == b.0 && same(a.1, b.1))
            })
    };
    let got = wait_for(
        "ClickHouse to match the TSDB",
        Duration::from_secs(60),
        || {
            let stack = &stack;
            async move { stored(stack, t_ms - 5000, t_ms).await.filter(equal) }
        },
    )
    .await;
    if got.is_err() {
        let got = stored(&stack, t_ms - 5000, t_ms).await.unwrap_or_default();
        let missing: Vec<_> = expected
            .keys()
            .filter(|k| !got.contains_key(*k))
            .take(5)
            .collect();
        let extra: Vec<_> = got
            .keys()
            .filter(|k| !expected.contains_key(*k))
            .take(5)
            .collect();
        let differ: Vec<_> = expected
            .iter()
            .filter(|(k, v)| got.get(*k).is_some_and(|g| g != *v))
            .take(3)
            .map(|(k, v)| (k, v, got.get(k)))
            .collect();
        panic!(
            "ClickHouse differs from Prometheus: {} vs {} series; missing {missing:?}; extra {extra:?}; differing {differ:?}",
            got.len(),
            expected.len()
        );
    }

    // Metadata arrives too, and series carry their family's kind.
    wait_for("metadata and series kinds", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let kind: String = db
                .query("SELECT Kind FROM metrics_metadata FINAL WHERE Tenant = ? AND MetricFamily = 'prometheus_http_requests_total'")
                .bind(TENANT)
                .fetch_one()
                .await
                .ok()?;
            let series_kinds: Vec<String> = db
                .query("SELECT DISTINCT Kind FROM metrics_series FINAL WHERE Tenant = ? AND MetricName = 'prometheus_http_requests_total'")
                .bind(TENANT)
                .fetch_all()
                .await
                .ok()?;
            (kind == "counter" && series_kinds == ["counter"]).then_some(())
        }
    })
    .await
    .unwrap();
}

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A series to send: name, labels, samples `(ms, value)`.
type TestSeries = (String, Vec<(&'static str, String)>, Vec<(i64, f64)>);

fn request(series: Vec<TestSeries>) -> Vec<u8> {
    let series: Vec<Series> = series
        .iter()
        .map(|(name, labels, samples)| Series {
            name,
            labels: labels.clone(),
            samples: samples.clone(),
        })
        .collect();
    remote_write::body(&series)
}

async fn send(stack: &Stack, body: Vec<u8>, content_type: &str) -> (u16, String) {
    let r = http(30)
        .post(format!("{}/api/v1/write", stack.collector_url()))
        .header("Content-Type", content_type)
        .header("Content-Encoding", "snappy")
        .header("X-Scope-OrgID", "rw-hostile")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_remote_write_is_refused_whole_and_the_collector_keeps_serving() {
    let stack = Stack::start_with(&[("OBS_COLLECTOR__MAX_SERIES_PER_TENANT", "50")])
        .await
        .unwrap();
    let now = (now_s() * 1000.0) as i64;
    let pb = "application/x-protobuf";
    let series = |prefix: &str, n: usize, ts: i64| -> Vec<TestSeries> {
        (0..n)
            .map(|i| {
                (
                    "storm_metric".to_string(),
                    vec![("id", format!("{prefix}{i}"))],
                    vec![(ts, i as f64)],
                )
            })
            .collect()
    };

    // A good request: 40 series.
    let (code, body) = send(&stack, request(series("a", 40, now)), pb).await;
    assert_eq!(code, 204, "{body}");

    // Bad snappy, truncated protobuf, remote write 2.0, gzip.
    let (code, body) = send(&stack, b"\xff\xff\xff\xff not snappy".to_vec(), pb).await;
    assert_eq!((code, body.contains("snappy")), (400, true), "{body}");
    let full = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![Label {
                name: "__name__".into(),
                value: "truncated_metric".into(),
            }],
            samples: vec![Sample {
                value: 1.0,
                timestamp: now,
            }],
            ..Default::default()
        }],
        metadata: vec![],
    }
    .encode_to_vec();
    let cut = snap::raw::Encoder::new()
        .compress_vec(&full[..full.len() - 4])
        .unwrap();
    let (code, body) = send(&stack, cut, pb).await;
    assert_eq!((code, body.contains("WriteRequest")), (400, true), "{body}");
    let (code, body) = send(
        &stack,
        request(series("v2-", 1, now)),
        "application/x-protobuf;proto=io.prometheus.write.v2.Request",
    )
    .await;
    assert_eq!(
        (code, body.contains("remote write 1.0")),
        (415, true),
        "{body}"
    );

    // A label storm past the limit of 50: refused whole (none of its 20 series stored).
    let (code, body) = send(&stack, request(series("b", 20, now)), pb).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("series limit"), "{body}");

    // Out of order: older than what was stored, next to a valid new sample: refused whole.
    let mut ooo = series("a", 1, now - 60_000);
    ooo.extend(series("a1-", 1, now + 1000));
    let (code, body) = send(&stack, request(ooo), pb).await;
    assert_eq!(code, 400, "{body}");
    assert!(body.contains("out of order"), "{body}");

    // An identical resend is accepted and not stored twice.
    let (code, body) = send(&stack, request(series("a", 40, now)), pb).await;
    assert_eq!(code, 204, "{body}");

    // The collector still serves; exactly the 40 good samples are stored.
    let (code, body) = send(&stack, request(series("a", 1, now + 2000)), pb).await;
    assert_eq!(code, 204, "{body}");
    let db = stack.db();
    let count = "SELECT count() FROM metrics_samples WHERE Tenant = 'rw-hostile'";
    wait_for("41 samples", Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            let n: u64 = db.query(count).fetch_one().await.ok()?;
            (n >= 41).then_some(())
        }
    })
    .await
    .unwrap();
    // Everything published is stored: a refused series would be there by now.
    stack.wait_sink_caught_up("metrics_samples").await.unwrap();
    let names: Vec<(String, u64)> = db
        .query("SELECT MetricName, count() FROM metrics_samples WHERE Tenant = 'rw-hostile' GROUP BY MetricName")
        .fetch_all()
        .await
        .unwrap();
    assert_eq!(names, vec![("storm_metric".to_string(), 41)]);
    let metrics = stack.collector_metrics().await.unwrap();
    for reason in [
        "series_limit",
        "out_of_order",
        "bad_request",
        "unsupported_media_type",
    ] {
        assert!(
            metrics.contains(&format!(
                "obs_collector_rejected_total{{reason=\"{reason}\"}}"
            )),
            "{reason} not counted in\n{metrics}"
        );
    }
}
