//! Authenticated tenants end to end. Credentials in `[auth]` (hashes only) decide who may
//! write and read, and for which tenant; `X-Scope-OrgID` is honoured only within them.
//! Real clients authenticate: Prometheus 2.42's remote write with `authorization`, the
//! OpenTelemetry Python SDK over OTLP/HTTP and OTLP/gRPC with an `Authorization` header.
//! Then every read path (PromQL, labels, series, LogQL, traces, SQL, errors) answers: no
//! credential → 401, a tenant-A credential → only A's data, and 403 for another tenant's
//! header or a write-only credential.

use std::time::Duration;

use base64::Engine;
use obs_e2e::prometheus::Prometheus;
use obs_e2e::{Stack, hash_secret, http, remote_write, run_python_sender, wait_for};
use serde_json::{Value, json};

const INTERNAL: &str = "internal-token";
const ACME_WRITER: &str = "acme-writer-token";
const UMBRELLA: &str = "umbrella-token";
const ACME_USER: (&str, &str) = ("acme", "acme-password");

/// The `[auth]` section: obs's own client, a write-only acme token, a read-only acme user
/// and an umbrella token that reads and writes.
fn config() -> String {
    format!(
        r#"
[auth]
enabled = true
client_token = "{INTERNAL}"

[[auth.credentials]]
name = "obs-internal"
token_sha256 = "{}"
tenants = ["*"]
access = ["read", "write"]

[[auth.credentials]]
name = "acme-writer"
token_sha256 = "{}"
tenants = ["acme"]
access = ["write"]

[[auth.credentials]]
name = "acme-reader"
username = "{}"
password_sha256 = "{}"
tenants = ["acme"]
access = ["read"]

[[auth.credentials]]
name = "umbrella"
token_sha256 = "{}"
tenants = ["umbrella"]
access = ["read", "write"]
"#,
        hash_secret(INTERNAL),
        hash_secret(ACME_WRITER),
        ACME_USER.0,
        hash_secret(ACME_USER.1),
        hash_secret(UMBRELLA),
    )
}

/// Who calls.
#[derive(Clone, Copy, Debug)]
enum Who {
    Nobody,
    Bearer(&'static str),
    AcmeReader,
}

impl Who {
    fn header(self) -> Option<String> {
        match self {
            Who::Nobody => None,
            Who::Bearer(t) => Some(format!("Bearer {t}")),
            Who::AcmeReader => Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(format!("{}:{}", ACME_USER.0, ACME_USER.1))
            )),
        }
    }
}

async fn get(
    url: &str,
    who: Who,
    tenant: Option<&str>,
) -> (u16, String, reqwest::header::HeaderMap) {
    let mut req = http(30).get(url);
    if let Some(h) = who.header() {
        req = req.header("Authorization", h);
    }
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    let headers = resp.headers().clone();
    (resp.status().as_u16(), resp.text().await.unwrap(), headers)
}

async fn post(url: &str, who: Who, tenant: Option<&str>, body: Value) -> (u16, String) {
    let mut req = http(30).post(url).json(&body);
    if let Some(h) = who.header() {
        req = req.header("Authorization", h);
    }
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// An OTLP/JSON logs request of one record, an exception logged at ERROR (an error group).
fn log_request(service: &str, body: &str) -> Value {
    json!({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeLogs": [{"logRecords": [{
            "timeUnixNano": (now_ns() - 60_000_000_000).to_string(),
            "severityText": "ERROR",
            "body": {"stringValue": body},
            "attributes": [
                {"key": "exception.type", "value": {"stringValue": "RuntimeError"}},
                {"key": "exception.message", "value": {"stringValue": body}}
            ]
        }]}]
    }]})
}

/// An OTLP/JSON traces request of one span.
fn span_request(service: &str, trace_id: &str) -> Value {
    let start = now_ns() - 60_000_000_000;
    json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id,
            "spanId": "00f067aa0ba902b7",
            "name": "GET /",
            "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + 5_000_000).to_string()
        }]}]
    }]})
}

#[tokio::test(flavor = "multi_thread")]
async fn credentials_decide_tenants_on_every_listener_and_read_path() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), config()).unwrap();
    let stack = Stack::start_with(&[("OBS_CONFIG", file.path().to_str().unwrap())])
        .await
        .unwrap();
    let collector = stack.collector_url();
    let otlp_http = format!("http://127.0.0.1:{}", stack.ports.otlp_http);

    // --- Writing ---
    // No credential, an unknown one, a reader, another tenant's header: refused, with the
    // OTLP shape on /v1/*.
    let logs = format!("{otlp_http}/v1/logs");
    let (code, body) = post(&logs, Who::Nobody, None, log_request("acme-svc", "x")).await;
    assert_eq!(code, 401, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 16);
    let (code, _) = post(
        &logs,
        Who::Bearer("nope"),
        None,
        log_request("acme-svc", "x"),
    )
    .await;
    assert_eq!(code, 401);
    let (code, body) = post(&logs, Who::AcmeReader, None, log_request("acme-svc", "x")).await;
    assert_eq!(code, 403, "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["code"], 7);
    let (code, body) = post(
        &logs,
        Who::Bearer(ACME_WRITER),
        Some("umbrella"),
        log_request("acme-svc", "x"),
    )
    .await;
    assert_eq!(code, 403, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["message"], "credential \"acme-writer\" may not act for tenant \"umbrella\"",
        "{body}"
    );
    // Loki push and events answer in text.
    let (code, body) = post(
        &format!("{collector}/loki/api/v1/push"),
        Who::Nobody,
        None,
        json!({"streams": []}),
    )
    .await;
    assert_eq!(code, 401);
    assert!(body.starts_with("no credential"), "{body}");

    // Accepted: the tenant comes from the credential.
    let (code, body) = post(
        &logs,
        Who::Bearer(ACME_WRITER),
        None,
        log_request("acme-svc", "acme says hello"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = post(
        &logs,
        Who::Bearer(UMBRELLA),
        Some("umbrella"),
        log_request("umbrella-svc", "umbrella secret"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    let traces = format!("{otlp_http}/v1/traces");
    for (who, service, trace) in [
        (ACME_WRITER, "acme-svc", "5b8efff798038103d269b633813fc60c"),
        (UMBRELLA, "umbrella-svc", "6b8efff798038103d269b633813fc60c"),
    ] {
        let (code, body) = post(
            &traces,
            Who::Bearer(who),
            None,
            span_request(service, trace),
        )
        .await;
        assert_eq!(code, 200, "{body}");
    }
    // Umbrella's metric, by remote write.
    let umbrella_metric = remote_write::Series {
        name: "umbrella_metric",
        labels: vec![("job", "secret".to_string())],
        samples: vec![(now_ns() / 1_000_000 - 30_000, 1.0)],
    };
    let resp = http(30)
        .post(format!("{collector}/api/v1/write"))
        .header("Authorization", format!("Bearer {UMBRELLA}"))
        .header("Content-Encoding", "snappy")
        .header("Content-Type", "application/x-protobuf")
        .header("X-Prometheus-Remote-Write-Version", "0.1.0")
        .body(remote_write::body(&[umbrella_metric]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 204, "{}", resp.text().await.unwrap());

    // The OpenTelemetry SDK over OTLP/HTTP and OTLP/gRPC with the acme writer's token.
    let grpc = format!("http://127.0.0.1:{}", stack.ports.otlp_grpc);
    for (protocol, endpoint, run) in [
        ("otlp-http", logs.as_str(), "sdk-http"),
        ("otlp-grpc", grpc.as_str(), "sdk-grpc"),
    ] {
        let sent: Vec<Value> = run_python_sender(
            "send_otlp_logs.py",
            &[
                "--endpoint",
                endpoint,
                "--run-id",
                run,
                "--count",
                "4",
                "--protocol",
                protocol,
                "--header",
                &format!("authorization=Bearer {ACME_WRITER}"),
            ],
        );
        assert_eq!(sent.len(), 4);
    }

    // Prometheus 2.42 remote write with `authorization` (its own `up`, as acme).
    let prom_config = obs_e2e::prometheus::self_scrape_remote_write(
        &format!("{collector}/api/v1/write"),
        &format!("    authorization:\n      type: Bearer\n      credentials: {ACME_WRITER}\n"),
    );
    let data = stack.dir().join("prom-data");
    let _prom = Prometheus::start(stack.dir(), "prometheus", &prom_config, &data)
        .await
        .unwrap();

    let db = stack.db();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    wait_for("every tenant's records", Duration::from_secs(90), || {
        let (db, seen) = (db.clone(), seen.clone());
        async move {
            let counts: Result<(u64, u64, u64, u64, u64, u64), _> = db
                .query(
                    "SELECT \
                       ifNull((SELECT count() FROM otel_logs WHERE Tenant IN ('acme', 'umbrella') AND ServiceName != 'sdk-test-svc'), 0), \
                       ifNull((SELECT count() FROM otel_logs WHERE Tenant = 'acme' AND ServiceName = 'sdk-test-svc'), 0), \
                       ifNull((SELECT count() FROM otel_traces WHERE Tenant IN ('acme', 'umbrella')), 0) \
                         + ifNull((SELECT count() FROM otel_traces_trace_id_ts WHERE Tenant IN ('acme', 'umbrella')), 0), \
                       ifNull((SELECT count() FROM metrics_samples WHERE Tenant = 'acme' AND MetricName = 'up'), 0), \
                       ifNull((SELECT count() FROM metrics_samples WHERE Tenant = 'umbrella' AND MetricName = 'umbrella_metric'), 0), \
                       ifNull((SELECT uniqExact(Tenant) FROM obs_error_events WHERE Tenant IN ('acme', 'umbrella')), 0)",
                )
                .fetch_one()
                .await;
            *seen.lock().unwrap() = Some(format!("{counts:?}"));
            let counts = counts.ok()?;
            let (logs, sdk, spans, up, umbrella, errors) = counts;
            (logs == 2 && sdk == 8 && spans == 4 && up >= 3 && umbrella == 1 && errors == 2)
                .then_some(())
        }
    })
    .await
    .unwrap_or_else(|e| {
        panic!(
            "{e}: (logs, sdk logs, spans + index rows, up, umbrella samples, error tenants) = {:?}\n{}",
            seen.lock().unwrap(),
            stack.obs_log()
        )
    });
    // Nothing refused was stored, under any tenant.
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    let refused: u64 = db
        .query("SELECT count() FROM otel_logs WHERE Body = 'x'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(refused, 0);

    // --- Reading: every path, every kind of caller ---
    let q = stack.query_url();
    let start = (now_ns() / 1_000_000_000 - 600).to_string();
    let end = (now_ns() / 1_000_000_000 + 60).to_string();
    let names = r#"{__name__=~"up|umbrella_metric"}"#;
    let url = |path: &str, params: &[(&str, &str)]| {
        reqwest::Url::parse_with_params(&format!("{q}{path}"), params)
            .unwrap()
            .to_string()
    };
    let (start_ns, end_ns) = (format!("{start}000000000"), format!("{end}000000000"));
    let checkout = "5b8efff798038103d269b633813fc60c";
    // (URL, what acme's answer holds, umbrella's status and what its answer holds)
    let paths: Vec<(String, &str, u16, &str)> = vec![
        (
            url("/api/v1/query", &[("query", names)]),
            "\"up\"",
            200,
            "umbrella_metric",
        ),
        (
            url(
                "/api/v1/query_range",
                &[
                    ("query", names),
                    ("start", &start),
                    ("end", &end),
                    ("step", "15"),
                ],
            ),
            "\"up\"",
            200,
            "umbrella_metric",
        ),
        (
            url("/api/v1/label/__name__/values", &[]),
            "\"up\"",
            200,
            "umbrella_metric",
        ),
        (url("/api/v1/labels", &[]), "__name__", 200, "__name__"),
        (
            url(
                "/api/v1/series",
                &[("match[]", names), ("start", &start), ("end", &end)],
            ),
            "\"up\"",
            200,
            "umbrella_metric",
        ),
        (
            url(
                "/loki/api/v1/query_range",
                &[
                    ("query", r#"{service_name=~".+"}"#),
                    ("start", &start_ns),
                    ("end", &end_ns),
                    ("limit", "100"),
                ],
            ),
            "acme says hello",
            200,
            "umbrella secret",
        ),
        (url("/api/services", &[]), "acme-svc", 200, "umbrella-svc"),
        (
            url(&format!("/api/traces/{checkout}"), &[]),
            "acme-svc",
            404,
            "",
        ),
        (
            url(
                "/api/v1/sql",
                &[("query", "SELECT Body FROM otel_logs ORDER BY Body")],
            ),
            "acme says hello",
            200,
            "umbrella secret",
        ),
        (url("/api/v1/errors", &[]), "acme-svc", 200, "umbrella-svc"),
    ];
    for (path, acme_holds, umbrella_code, umbrella_holds) in &paths {
        let url = path.as_str();
        let (code, body, headers) = get(url, Who::Nobody, None).await;
        assert_eq!(code, 401, "{path} without a credential: {body}");
        assert!(headers.contains_key("www-authenticate"), "{path}");
        let (code, body, _) = get(url, Who::Bearer(ACME_WRITER), None).await;
        assert_eq!(code, 403, "{path} with a write-only credential: {body}");
        let (code, body, _) = get(url, Who::AcmeReader, Some("umbrella")).await;
        assert_eq!(code, 403, "{path} as acme asking for umbrella: {body}");
        for header in [None, Some("acme")] {
            let (code, body, _) = get(url, Who::AcmeReader, header).await;
            assert_eq!(code, 200, "{path} as acme: {body}");
            assert!(
                body.contains(acme_holds),
                "{path} as acme lacks {acme_holds}: {body}"
            );
            assert!(
                !body.contains("umbrella"),
                "{path} as acme shows umbrella's data: {body}"
            );
        }
        let (code, body, _) = get(url, Who::Bearer(UMBRELLA), None).await;
        assert_eq!(code, *umbrella_code, "{path} as umbrella: {body}");
        assert!(
            body.contains(umbrella_holds),
            "{path} as umbrella lacks {umbrella_holds}: {body}"
        );
        assert!(
            !body.contains("acme"),
            "{path} as umbrella shows acme's data: {body}"
        );
    }
    // Refusal shapes: Prometheus JSON on /api/, text on /loki/.
    let (_, body, _) = get(&format!("{q}/api/v1/labels"), Who::Nobody, None).await;
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["status"].as_str(), v["errorType"].as_str()),
        (Some("error"), Some("unauthorized"))
    );
    let (_, body, _) = get(&format!("{q}/loki/api/v1/labels"), Who::Nobody, None).await;
    assert!(body.starts_with("no credential"), "{body}");

    // --- The registry and the ops endpoints ---
    let registry = format!("http://127.0.0.1:{}", stack.ports.registry);
    let (code, body, _) = get(&format!("{registry}/subjects"), Who::Nobody, None).await;
    assert_eq!(code, 401);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["error_code"],
        40101
    );
    let (code, body, _) = get(&format!("{registry}/subjects"), Who::AcmeReader, None).await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("obs.logs-value"), "{body}");
    let (code, _) = post(
        &format!("{registry}/subjects/x-value/versions"),
        Who::AcmeReader,
        None,
        json!({"schema": "\"string\""}),
    )
    .await;
    assert_eq!(code, 403, "a reader cannot register schemas");
    for port in [
        stack.ports.collector,
        stack.ports.query,
        stack.ports.registry,
        stack.ports.sink,
    ] {
        let (code, body, _) = get(
            &format!("http://127.0.0.1:{port}/metrics"),
            Who::Nobody,
            None,
        )
        .await;
        assert_eq!(code, 200, "/metrics stays open on {port}: {body}");
    }
    let (_, metrics, _) = get(&format!("{q}/metrics"), Who::Nobody, None).await;
    assert!(
        metrics.contains("obs_auth_refused_total{reason=\"unauthenticated\"}")
            && metrics.contains("obs_auth_refused_total{reason=\"forbidden\"}"),
        "{metrics}"
    );

    // `obs auth` makes a token and an entry holding only its SHA-256, which obs accepts.
    let out = stack
        .run_obs(&[
            "auth",
            "--name",
            "ci",
            "--tenants",
            "acme",
            "--access",
            "read",
        ])
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("# obs_"))
        .map(|t| format!("obs_{t}"))
        .unwrap_or_else(|| panic!("no token in {text}"));
    let entry: toml::Table = toml::from_str(&text).unwrap();
    let credential = &entry["auth"]["credentials"][0];
    assert_eq!(
        credential["token_sha256"].as_str(),
        Some(hash_secret(&token).as_str())
    );
    assert_eq!(credential["tenants"][0].as_str(), Some("acme"));
    assert!(!text.contains("password"), "{text}");
}
