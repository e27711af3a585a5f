//! JSON events end to end: our event shape and Kubernetes `Event` objects → collector →
//! obs.events → obs_events, exactly the rows expected; bad events refused whole.

use std::time::Duration;

use clickhouse::Row;
use obs_e2e::{Stack, http, recent_whole_second_ns, rfc3339_ms, wait_for};
use serde::Deserialize;

#[derive(Debug, PartialEq, Row, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EventRow {
    timestamp: i64,
    event_id: String,
    tenant: String,
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    severity: String,
    title: String,
    body: String,
    attributes: Vec<(String, String)>,
}

#[tokio::test(flavor = "multi_thread")]
async fn events_and_kubernetes_events_are_stored_as_sent() {
    let stack = Stack::start().await.unwrap();
    let url = format!("{}/api/v1/events", stack.collector_url());
    let t = recent_whole_second_ns();
    let body = serde_json::json!({"events": [
        {"type": "deploy", "source": "ci/shop", "title": "api v2.3.1", "id": "dep-1",
         "timestamp": rfc3339_ms(t + 500_000_000), "severity": "info", "body": "rolled out",
         "attributes": {"version": "2.3.1", "replicas": 3}},
        {"kind": "Event", "apiVersion": "v1", "metadata": {"uid": "k8s-uid-1"},
         "involvedObject": {"kind": "Pod", "namespace": "shop", "name": "api-7"},
         "reason": "BackOff", "message": "Back-off restarting failed container",
         "type": "Warning", "count": 4, "lastTimestamp": rfc3339_ms(t + 60_000_000_000)}
    ]});
    let r = http(30)
        .post(&url)
        .header("X-Scope-OrgID", "team-a")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["accepted"], 2);

    // A batch with one bad event is refused whole, naming it.
    let bad = serde_json::json!([
        {"type": "deploy", "source": "ci", "title": "fine"},
        {"type": "deploy", "source": "ci", "title": "bad", "timestamp": "last tuesday"}
    ]);
    let r = http(30).post(&url).json(&bad).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let err = r.json::<serde_json::Value>().await.unwrap();
    assert!(
        err["error"]
            .as_str()
            .unwrap()
            .starts_with("event #1 has \"timestamp\" \"last tuesday\""),
        "{err}"
    );

    // Everything published is stored (the refused batch's good event would be there by now).
    stack.wait_sink_caught_up("obs_events").await.unwrap();
    let db = stack.db();
    let rows: Vec<EventRow> = wait_for("2 events", Duration::from_secs(30), || {
        let db = db.clone();
        async move {
            let rows: Vec<EventRow> = db
                .query("SELECT Timestamp, EventId, Tenant, Type, Source, Severity, Title, Body, Attributes FROM obs_events ORDER BY Timestamp")
                .fetch_all()
                .await
                .ok()?;
            (rows.len() >= 2).then_some(rows)
        }
    })
    .await
    .unwrap();
    let attrs = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    assert_eq!(
        rows,
        vec![
            EventRow {
                timestamp: t + 500_000_000,
                event_id: "dep-1".into(),
                tenant: "team-a".into(),
                kind: "deploy".into(),
                source: "ci/shop".into(),
                severity: "info".into(),
                title: "api v2.3.1".into(),
                body: "rolled out".into(),
                attributes: attrs(&[("replicas", "3"), ("version", "2.3.1")]),
            },
            EventRow {
                timestamp: t + 60_000_000_000,
                event_id: "k8s-uid-1".into(),
                tenant: "team-a".into(),
                kind: "k8s".into(),
                source: "k8s/shop/Pod/api-7".into(),
                severity: "warning".into(),
                title: "BackOff".into(),
                body: "Back-off restarting failed container".into(),
                attributes: attrs(&[
                    ("k8s.count", "4"),
                    ("k8s.namespace", "shop"),
                    ("k8s.object.kind", "Pod"),
                    ("k8s.object.name", "api-7"),
                    ("k8s.reason", "BackOff"),
                ]),
            },
        ]
    );
}
