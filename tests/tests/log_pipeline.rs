//! A log pipeline between the collector and storage (`[logs] pipelines_file`): a corpus
//! with planted PII (cards with and without valid Luhn digits, e-mails, IPv4/6, SSNs, a
//! JWT, a bearer token) pushed through Loki's API for tenant acme's `shop` service, and a
//! JSON line from a log agent on `obs.logs.raw` (it goes through the pipeline too). Nothing
//! planted is found anywhere in `otel_logs` (every column of every row, as text), no
//! look-alike was touched, hashes are HMAC-SHA256 with the configured key (worked out here
//! independently), equal inputs hash equally, parsed fields equal the expected rows exactly,
//! a health check is dropped, an audit record is routed (redacted) to its own topic and
//! not stored, a record that is not JSON goes to `obs.dlq` naming the stage, and another
//! service's records are not touched.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use obs_e2e::{Stack, http, repo_root};
use serde_json::json;
use sha2::Sha256;

const KEY: &str = "e2e-redaction-key";

/// `[<kind>:<16 hex digits of HMAC-SHA256(KEY, value)>]`, as the pipeline should write it.
fn hashed(kind: &str, value: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(value.as_bytes());
    format!(
        "[{kind}:{}]",
        hex::encode(&mac.finalize().into_bytes()[..8])
    )
}

fn attrs<M: FromIterator<(String, String)>>(pairs: &[(&str, String)]) -> M {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn pii_is_redacted_before_storage_and_parsed_fields_are_exact() {
    let file = repo_root().join("tests/logs/pii_pipeline.toml");
    let stack = Stack::start_with(&[
        ("OBS_LOGS__PIPELINES_FILE", file.to_str().unwrap()),
        ("OBS_LOGS__REDACT_KEY", KEY),
    ])
    .await
    .unwrap();
    let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
    let shop_lines = [
        json!({"level": "info", "path": "/pay", "user": "ann@example.com",
               "card": "4111 1111 1111 1111", "order_id": "4111111111111112",
               "msg": "paid from 10.1.2.3"})
        .to_string(),
        json!({"level": "warn", "path": "/pay", "user": "ann@example.com",
               "card": "5500-0055-5555-5559", "order_id": "5500005555555559",
               "msg": "retry from 2001:db8::1 at 12:30:45"})
        .to_string(),
        json!({"level": "error", "path": "/login", "user": "bob@example.org",
               "ssn": "123-45-6789", "not_ssn": "000-12-3456",
               "auth": "Bearer abc.DEF-123_x=",
               "msg": format!("token {jwt} rejected, client 1.2.3.4.5")})
        .to_string(),
        json!({"level": "debug", "path": "/x",
               "msg": "amex 378282246310005 and order 378282246310006"})
        .to_string(),
        json!({"level": "info", "path": "/healthz"}).to_string(),
        json!({"level": "info", "path": "/audit", "user": "ann@example.com", "action": "refund"})
            .to_string(),
        "not json at all".to_string(),
    ];
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let values: Vec<_> = shop_lines
        .iter()
        .enumerate()
        .map(|(i, l)| json!([(now - 60_000_000_000 + i as i64).to_string(), l]))
        .collect();
    let body = json!({"streams": [
        {"stream": {"service_name": "shop"}, "values": values},
        {"stream": {"service_name": "other"},
         "values": [[now.to_string(), "carol@example.net paid with 4111 1111 1111 1111"]]}
    ]});
    let r = http(30)
        .post(format!("{}/loki/api/v1/push", stack.collector_url()))
        .header("X-Scope-OrgID", "acme")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    // A JSON line from a log agent on obs.logs.raw goes through the same pipeline.
    let raw_line = json!({
        "tenant": "acme",
        "service": "shop",
        "timestamp": (now - 50_000_000_000).to_string(),
        "message": json!({"level": "warn", "path": "/raw", "user": "dan@example.com"}).to_string(),
    })
    .to_string();
    let producer: rdkafka::producer::FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            rdkafka::producer::FutureRecord::<(), _>::to(obs_schemas::Topic::LogsRaw.name())
                .partition(1)
                .payload(raw_line.as_str()),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    // Five shop records stored (the health check dropped, the audit record routed, the
    // non-JSON line failed, the raw line stored once), and the other service's one.
    stack
        .wait_log_count(
            "Tenant = 'acme' AND ServiceName = 'shop'",
            5,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    stack
        .wait_log_count(
            "Tenant = 'acme' AND ServiceName = 'other'",
            1,
            Duration::from_secs(30),
        )
        .await
        .unwrap();

    let db = stack.db();
    let secrets = [
        "ann@example.com",
        "dan@example.com",
        "bob@example.org",
        "4111 1111 1111 1111",
        "5500-0055-5555-5559",
        "378282246310005",
        "10.1.2.3",
        "2001:db8::1",
        "123-45-6789",
        "abc.DEF-123_x=",
        jwt,
    ];
    // Every column of every shop row, as text.
    let rows_holding = |text: &str| {
        db.query(
            "SELECT count() FROM otel_logs WHERE ServiceName = 'shop' \
             AND position(formatRow('TabSeparated', *), ?) > 0",
        )
        .bind(text)
        .fetch_one::<u64>()
    };
    for s in secrets {
        assert_eq!(rows_holding(s).await.unwrap(), 0, "{s:?} is stored");
    }
    for look_alike in [
        "4111111111111112",
        "5500005555555559",
        "000-12-3456",
        "12:30:45",
        "1.2.3.4.5",
        "378282246310006",
    ] {
        assert!(
            rows_holding(look_alike).await.unwrap() > 0,
            "{look_alike:?} was redacted"
        );
    }

    // The parsed, shaped and hashed rows, exactly, in time order.
    let rows: Vec<(String, u32, String)> = db
        .query(
            "SELECT SeverityText, toUInt32(SeverityNumber), toJSONString(LogAttributes) \
             FROM otel_logs WHERE ServiceName = 'shop' ORDER BY Timestamp",
        )
        .fetch_all()
        .await
        .unwrap();
    let ann = hashed("email", "ann@example.com");
    let mut want = vec![
        (
            "INFO".to_string(),
            9u32,
            attrs(&[
                ("card", hashed("card", "4111 1111 1111 1111")),
                ("msg", format!("paid from {}", hashed("ipv4", "10.1.2.3"))),
                ("order_id", "4111111111111112".into()),
                ("path", "/pay".into()),
                ("user", ann.clone()),
            ]),
        ),
        (
            "WARN".into(),
            13,
            attrs(&[
                ("card", hashed("card", "5500-0055-5555-5559")),
                (
                    "msg",
                    format!("retry from {} at 12:30:45", hashed("ipv6", "2001:db8::1")),
                ),
                ("order_id", "5500005555555559".into()),
                ("path", "/pay".into()),
                ("user", ann.clone()),
            ]),
        ),
        (
            "ERROR".into(),
            17,
            attrs(&[
                (
                    "auth",
                    format!("Bearer {}", hashed("bearer", "abc.DEF-123_x=")),
                ),
                (
                    "msg",
                    format!("token {} rejected, client 1.2.3.4.5", hashed("jwt", jwt)),
                ),
                ("not_ssn", "000-12-3456".into()),
                ("path", "/login".into()),
                ("ssn", hashed("ssn", "123-45-6789")),
                ("user", hashed("email", "bob@example.org")),
            ]),
        ),
        (
            "DEBUG".into(),
            5,
            attrs(&[
                (
                    "msg",
                    format!(
                        "amex {} and order 378282246310006",
                        hashed("card", "378282246310005")
                    ),
                ),
                ("path", "/x".into()),
            ]),
        ),
    ];
    want.push((
        "WARN".into(),
        13,
        attrs(&[
            ("path", "/raw".into()),
            ("user", hashed("email", "dan@example.com")),
        ]),
    ));
    let got: Vec<(String, u32, BTreeMap<String, String>)> = rows
        .into_iter()
        .map(|(t, n, a)| (t, n, serde_json::from_str(&a).unwrap()))
        .collect();
    assert_eq!(got, want);

    // Another service's record is not selected by the pipeline: stored as sent.
    let other: String = db
        .query("SELECT Body FROM otel_logs WHERE ServiceName = 'other'")
        .fetch_one()
        .await
        .unwrap();
    assert_eq!(other, "carol@example.net paid with 4111 1111 1111 1111");

    // The line that is not JSON went to obs.dlq, naming the pipeline, stage and reason.
    let letters = stack
        .dead_letters(Duration::from_secs(30), Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0].1;
    assert_eq!(letter.topic, "obs.logs.ingest");
    assert!(
        letter
            .error
            .starts_with("log pipeline \"shop\", stage 1 (json): body is not JSON"),
        "{}",
        letter.error
    );
    let failed: serde_json::Value =
        serde_json::from_slice(letter.value.as_deref().unwrap()).unwrap();
    assert_eq!(failed["body"], "not json at all");

    // The audit record went to acme.audit (obs.logs's schema, redacted), not to storage.
    let routed: Vec<(Option<Vec<u8>>, obs_schemas::records::LogBatch)> = stack
        .read_topic(
            "acme.audit",
            Duration::from_secs(30),
            Duration::from_secs(2),
        )
        .await
        .unwrap();
    let records: Vec<_> = routed.into_iter().flat_map(|(_, b)| b.records).collect();
    assert_eq!(records.len(), 1, "{records:?}");
    let audit = &records[0];
    assert_eq!(
        (audit.tenant.as_str(), audit.service.as_str()),
        ("acme", "shop")
    );
    assert_eq!(
        audit.attrs,
        attrs(&[
            ("action", "refund".into()),
            ("level", "info".into()),
            ("path", "/audit".into()),
            ("user", ann.clone()),
        ])
    );
    // Everything the pipeline published to obs.logs is stored by now.
    stack.wait_sink_caught_up("otel_logs").await.unwrap();
    assert_eq!(
        rows_holding("refund").await.unwrap(),
        0,
        "routed records are not stored"
    );
}
