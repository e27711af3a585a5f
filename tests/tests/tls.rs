//! TLS end to end, against a CA the test makes. Every listener of `obs up` serves TLS
//! (`[tls]`), ClickHouse is reached over HTTPS and the broker over TLS with SASL/SCRAM
//! (`[kafka] security_protocol = "sasl_ssl"`, `sasl_*`), all verified against the test CA
//! (`[tls] ca_file`, `[kafka] ssl_ca_file`). Real clients write with authentication over TLS: Prometheus
//! 2.42's remote write with `authorization` and `tls_config`, the OpenTelemetry Python SDK
//! over OTLP/HTTPS and OTLP/gRPC with TLS. A renewed certificate is served without a
//! restart; a broken one is refused and the previous one stays in service.

use std::process::Command;
use std::time::Duration;

use obs_e2e::prometheus::Prometheus;
use obs_e2e::tls::TestCa;
use obs_e2e::{KAFKA_USER, Stack, hash_secret, run_python_sender, wait_for};
use obs_runtime::config::KafkaConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use serde_json::Value;

const INTERNAL: &str = "internal-token";
const ACME: &str = "acme-token";

/// `[auth]`: obs's own client and an acme credential that writes and reads.
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
name = "acme"
token_sha256 = "{}"
tenants = ["acme"]
access = ["read", "write"]
"#,
        hash_secret(INTERNAL),
        hash_secret(ACME)
    )
}

/// The subject of the certificate `port` serves, as `openssl s_client` (verifying it
/// against `ca`) prints it; `None` if the handshake or the verification failed.
fn served_subject(port: u16, ca: &TestCa) -> Option<String> {
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
        .arg("-CAfile")
        .arg(ca.ca_file())
        .args(["-verify_return_error", "-brief"])
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    // -brief reports on stderr: "Peer certificate: CN = obs".
    let text = String::from_utf8_lossy(&out.stderr).to_string();
    text.lines()
        .find_map(|l| l.strip_prefix("Peer certificate: "))
        .map(|s| s.trim().to_string())
}

/// A metric's value summed over its series in a `/metrics` page.
fn metric(page: &str, name_and_labels: &str) -> f64 {
    page.lines()
        .filter(|l| l.starts_with(name_and_labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_hop_speaks_tls_and_a_renewed_certificate_is_served_without_a_restart() {
    let ca = TestCa::new().unwrap();
    let mut file = tempfile::NamedTempFile::new().unwrap();
    std::io::Write::write_all(&mut file, config().as_bytes()).unwrap();
    let stack = Stack::start_tls(&ca, &[("OBS_CONFIG", file.path().to_str().unwrap())])
        .await
        .unwrap();
    let (collector, query) = (
        stack.url_of(stack.ports.collector),
        stack.url_of(stack.ports.query),
    );
    let client = stack.client().clone();

    // Only TLS is spoken, and only with a certificate the CA signed for 127.0.0.1.
    let plain = format!("http://127.0.0.1:{}/healthz", stack.ports.collector);
    assert!(
        obs_e2e::http(5).get(&plain).send().await.is_err(),
        "plain HTTP must not be answered on a TLS listener"
    );
    let system_roots_only = obs_e2e::http(5)
        .get(format!("{collector}/healthz"))
        .send()
        .await;
    assert!(
        system_roots_only.is_err(),
        "a client not trusting the test CA must fail the handshake"
    );
    for port in [
        stack.ports.collector,
        stack.ports.otlp_http,
        stack.ports.zipkin,
        stack.ports.otlp_grpc,
        stack.ports.query,
        stack.ports.registry,
        stack.ports.sink,
        stack.ports.processor,
    ] {
        assert_eq!(
            served_subject(port, &ca).as_deref(),
            Some("CN = obs"),
            "port {port}"
        );
    }

    // The broker answers only TLS clients that log in with the right password.
    let kafka = |protocol: &str, password: &str| KafkaConfig {
        brokers: stack.broker.bootstrap(),
        security_protocol: protocol.into(),
        ssl_ca_file: ca.ca_file().display().to_string(),
        sasl_mechanism: "SCRAM-SHA-256".into(),
        sasl_username: KAFKA_USER.0.into(),
        sasl_password: password.into(),
        ..KafkaConfig::default()
    };
    for (cfg, answers) in [
        (kafka("sasl_ssl", KAFKA_USER.1), true),
        (kafka("sasl_ssl", "wrong-password"), false),
        (kafka("ssl", ""), false),
        (kafka("sasl_plaintext", KAFKA_USER.1), false),
    ] {
        let what = format!("{} with {:?}", cfg.security_protocol, cfg.sasl_password);
        let got = tokio::task::spawn_blocking(move || {
            let client: BaseConsumer = obs_runtime::kafka::client_config(&cfg).create()?;
            client
                .fetch_metadata(Some("obs.logs"), Duration::from_secs(5))
                .map(|m| m.topics().len())
        })
        .await
        .unwrap();
        assert_eq!(got.is_ok(), answers, "{what}: {got:?}");
    }

    // The OpenTelemetry SDK over OTLP/HTTPS and OTLP/gRPC with TLS, authenticated.
    let logs = format!("{}/v1/logs", stack.url_of(stack.ports.otlp_http));
    let grpc = stack.url_of(stack.ports.otlp_grpc);
    for (protocol, endpoint, run) in [
        ("otlp-http", logs.as_str(), "tls-http"),
        ("otlp-grpc", grpc.as_str(), "tls-grpc"),
    ] {
        let sent: Vec<Value> = run_python_sender(
            "send_otlp_logs.py",
            &[
                "--endpoint",
                endpoint,
                "--run-id",
                run,
                "--count",
                "5",
                "--protocol",
                protocol,
                "--header",
                &format!("authorization=Bearer {ACME}"),
                "--ca",
                ca.ca_file().to_str().unwrap(),
            ],
        );
        assert_eq!(sent.len(), 5, "{protocol}");
    }

    // Prometheus 2.42 remote write with `authorization` and `tls_config`.
    let prom_config = obs_e2e::prometheus::self_scrape_remote_write(
        &format!("{collector}/api/v1/write"),
        &format!(
            "    authorization:\n      type: Bearer\n      credentials: {ACME}\n    tls_config:\n      ca_file: {}\n",
            ca.ca_file().display()
        ),
    );
    let data = stack.dir().join("prom-data");
    let _prom = Prometheus::start(stack.dir(), "prometheus", &prom_config, &data)
        .await
        .unwrap();

    // Everything went collector → broker (TLS) → sink → ClickHouse (HTTPS) and reads back
    // through the query API (HTTPS), with the acme credential.
    let auth = format!("Bearer {ACME}");
    wait_for(
        "the SDK's 10 records through LogQL over HTTPS",
        Duration::from_secs(90),
        || {
            let (client, url, auth) = (
                client.clone(),
                format!("{query}/loki/api/v1/query_range"),
                auth.clone(),
            );
            async move {
                let (start, end) = ((now_s() - 3600).to_string(), (now_s() + 60).to_string());
                let params = [
                    ("query", r#"{service_name="sdk-test-svc"}"#),
                    ("start", &start),
                    ("end", &end),
                    ("limit", "100"),
                ];
                let v = read_json(&client, &url, &auth, &params).await?;
                let total: usize = v["data"]["result"]
                    .as_array()?
                    .iter()
                    .filter_map(|s| s["values"].as_array().map(Vec::len))
                    .sum();
                (total == 10).then_some(())
            }
        },
    )
    .await
    .unwrap();
    let prom_log = stack.dir().join("prometheus.log");
    wait_for(
        "Prometheus's own build info through PromQL over HTTPS",
        Duration::from_secs(90),
        || {
            let (client, url, auth) = (
                client.clone(),
                format!("{query}/api/v1/query"),
                auth.clone(),
            );
            async move {
                let params = [("query", "prometheus_build_info")];
                let v = read_json(&client, &url, &auth, &params).await?;
                let r = &v["data"]["result"][0];
                // Debian's build reports "2.42.0+ds".
                let version = r["metric"]["version"].as_str()?;
                (version.starts_with("2.42.0") && r["value"][1] == "1").then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| {
        let log = std::fs::read_to_string(&prom_log).unwrap_or_default();
        let obs: Vec<String> = stack
            .obs_log()
            .lines()
            .filter(|l| !l.contains("librdkafka"))
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .map(String::from)
            .collect();
        panic!(
            "{e}\n--- Prometheus ---\n{log}\n--- obs ---\n{}",
            obs.join("\n")
        )
    });
    // The query API reaches the processor's rules API over HTTPS too.
    let rules = client
        .get(format!("{query}/api/v1/rules"))
        .header("Authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(rules.status(), 200, "{}", rules.text().await.unwrap());

    // A renewed certificate is served within the reload interval, without a restart.
    let served = stack_cert_files(&stack);
    let renewed = ca.issue("obs-renewed").unwrap();
    std::fs::copy(&renewed.key, &served.1).unwrap();
    std::fs::copy(&renewed.cert, &served.0).unwrap();
    let ca_ref = &ca;
    for port in [
        stack.ports.collector,
        stack.ports.otlp_grpc,
        stack.ports.query,
    ] {
        wait_for(
            &format!("port {port} to serve the renewed certificate"),
            Duration::from_secs(30),
            || async move {
                (served_subject(port, ca_ref).as_deref() == Some("CN = obs-renewed")).then_some(())
            },
        )
        .await
        .unwrap();
    }
    let sent: Vec<Value> = run_python_sender(
        "send_otlp_logs.py",
        &[
            "--endpoint",
            &grpc,
            "--run-id",
            "tls-renewed",
            "--count",
            "1",
            "--protocol",
            "otlp-grpc",
            "--header",
            &format!("authorization=Bearer {ACME}"),
            "--ca",
            ca.ca_file().to_str().unwrap(),
        ],
    );
    assert_eq!(sent.len(), 1);

    // A key that does not match the certificate is refused; the renewed one stays.
    let metrics_url = format!("{collector}/metrics");
    let failed = r#"obs_tls_reloads_total{result="failed"}"#;
    let before = metric(
        &client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        failed,
    );
    let other = ca.issue("obs-other").unwrap();
    std::fs::copy(&other.key, &served.1).unwrap();
    wait_for(
        "the mismatched key to be refused",
        Duration::from_secs(30),
        || {
            let (client, url) = (client.clone(), metrics_url.clone());
            async move {
                let page = client.get(&url).send().await.ok()?.text().await.ok()?;
                (metric(&page, failed) > before).then_some(())
            }
        },
    )
    .await
    .unwrap();
    assert_eq!(
        served_subject(stack.ports.collector, &ca).as_deref(),
        Some("CN = obs-renewed")
    );
    let health = client
        .get(format!("{collector}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
}

/// The certificate and key files `obs up` serves, as the stack configured them.
fn stack_cert_files(stack: &Stack) -> (String, String) {
    let get = |k: &str| {
        stack
            .env()
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    (get("OBS_TLS__CERT_FILE"), get("OBS_TLS__KEY_FILE"))
}

/// A query API answer as JSON (`None` when it cannot be read yet).
async fn read_json(
    client: &reqwest::Client,
    url: &str,
    authorization: &str,
    params: &[(&str, &str)],
) -> Option<Value> {
    let resp = client
        .get(url)
        .header("Authorization", authorization)
        .query(params)
        .send()
        .await
        .ok()?;
    resp.json().await.ok()
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}
