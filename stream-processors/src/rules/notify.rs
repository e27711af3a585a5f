//! Alerts to Alertmanager over its v2 API (`POST /api/v2/alerts`), to every configured
//! Alertmanager, as Prometheus's notifier sends them: labels (external labels added),
//! annotations, `startsAt`, `endsAt`, `generatorURL`. Sending never holds up evaluation:
//! each batch is sent in the background; a failure is logged and counted, and the alert is
//! sent again at the next resend as in Prometheus.

use std::time::Duration;

use serde::Serialize;

use super::engine::Notification;

/// Sends notifications to the configured Alertmanagers.
#[derive(Clone)]
pub struct Notifier {
    urls: Vec<String>,
    client: reqwest::Client,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert<'a> {
    labels: &'a obs_promql::Labels,
    annotations: &'a obs_promql::Labels,
    starts_at: String,
    ends_at: String,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The v2 API body for `alerts`.
pub fn body(alerts: &[Notification]) -> serde_json::Value {
    let postable: Vec<PostableAlert> = alerts
        .iter()
        .map(|a| PostableAlert {
            labels: &a.labels,
            annotations: &a.annotations,
            starts_at: rfc3339(a.starts_at),
            ends_at: rfc3339(a.ends_at),
            generator_url: &a.generator_url,
        })
        .collect();
    serde_json::to_value(postable).expect("alerts serialise")
}

impl Notifier {
    /// A notifier for the Alertmanagers at `urls` (base URLs).
    pub fn new(urls: &[String]) -> Notifier {
        Notifier {
            urls: urls
                .iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            client: obs_runtime::tls::http_client()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Sends `alerts` to every Alertmanager in the background.
    pub fn send(&self, alerts: Vec<Notification>) {
        if self.urls.is_empty() || alerts.is_empty() {
            return;
        }
        let body = body(&alerts);
        for url in &self.urls {
            let (client, url, body) = (
                self.client.clone(),
                format!("{url}/api/v2/alerts"),
                body.clone(),
            );
            let n = alerts.len() as u64;
            tokio::spawn(async move {
                let outcome = match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status().is_success() => "sent",
                    Ok(r) => {
                        tracing::warn!(%url, status = %r.status(), "Alertmanager refused alerts");
                        "refused"
                    }
                    Err(e) => {
                        tracing::warn!(%url, error = %e, "Alertmanager unreachable");
                        "unreachable"
                    }
                };
                metrics::counter!("obs_alerts_sent_total", "outcome" => outcome).increment(n);
            });
        }
    }
}
