//! `/api/v1/rules` and `/api/v1/alerts` with Prometheus's shapes (what Grafana's alert
//! list and rule views read), served by the processor from its live state, per tenant
//! (`X-Scope-OrgID`). The query API forwards these two paths here.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::alerting::{Alert, State as AlertState};
use super::expand::go_exp;
use super::group::{Group, Kind};

/// The groups as the API shows them, per tenant, refreshed after every round.
#[derive(Clone, Default)]
pub struct RulesView {
    inner: Arc<RwLock<ViewInner>>,
}

#[derive(Default)]
struct ViewInner {
    /// Fresh groups, for tenants not evaluated yet, in load order.
    templates: Vec<(String, Value)>,
    /// Per tenant, per group key.
    tenants: BTreeMap<String, BTreeMap<String, Value>>,
    default_tenant: String,
}

fn rfc3339(ms: Option<i64>) -> String {
    match ms.and_then(chrono::DateTime::from_timestamp_millis) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => "0001-01-01T00:00:00Z".into(),
    }
}

fn alert_json(a: &Alert) -> Value {
    json!({
        "labels": a.labels,
        "annotations": a.annotations,
        "state": a.state.as_str(),
        "activeAt": rfc3339(Some(a.active_at)),
        "value": go_exp(a.value, 'e'),
    })
}

/// A group as `/api/v1/rules` shows it.
pub fn group_json(g: &Group) -> Value {
    let rules: Vec<Value> = g
        .rules
        .iter()
        .map(|r| {
            let health = match (&r.last_error, r.last_eval_ms) {
                (_, None) => "unknown",
                (Some(_), _) => "err",
                (None, _) => "ok",
            };
            let mut v = match &r.kind {
                Kind::Recording { record, labels } => json!({
                    "name": record,
                    "labels": labels,
                    "type": "recording",
                }),
                Kind::Alerting(a) => {
                    let active: Vec<&Alert> = a
                        .active
                        .values()
                        .filter(|x| x.state != AlertState::Inactive)
                        .collect();
                    let state = a
                        .active
                        .values()
                        .map(|x| x.state)
                        .max()
                        .unwrap_or(AlertState::Inactive);
                    json!({
                        "name": a.name,
                        "state": state.as_str(),
                        "duration": a.hold_ms as f64 / 1000.0,
                        "keepFiringFor": a.keep_firing_ms as f64 / 1000.0,
                        "labels": a.labels,
                        "annotations": a.annotations,
                        "alerts": active.into_iter().map(alert_json).collect::<Vec<_>>(),
                        "type": "alerting",
                    })
                }
            };
            let o = v.as_object_mut().expect("object");
            o.insert("query".into(), json!(r.query));
            o.insert("health".into(), json!(health));
            o.insert(
                "lastError".into(),
                json!(r.last_error.clone().unwrap_or_default()),
            );
            o.insert("evaluationTime".into(), json!(r.last_duration_s));
            o.insert("lastEvaluation".into(), json!(rfc3339(r.last_eval_ms)));
            v
        })
        .collect();
    let last = g.rules.iter().filter_map(|r| r.last_eval_ms).max();
    json!({
        "name": g.name,
        "file": g.file,
        "rules": rules,
        "interval": g.interval_ms as f64 / 1000.0,
        "limit": g.limit,
        "evaluationTime": g.rules.iter().map(|r| r.last_duration_s).sum::<f64>(),
        "lastEvaluation": rfc3339(last),
    })
}

impl RulesView {
    /// Shows `templates` (the loaded groups) for tenants not evaluated yet; requests without
    /// a tenant header are for `default_tenant`.
    pub fn load(&self, templates: &[Group], default_tenant: &str) {
        let mut inner = self.inner.write().expect("view lock");
        inner.templates = templates.iter().map(|g| (g.key(), group_json(g))).collect();
        inner.default_tenant = default_tenant.to_string();
    }

    /// Records a group's state after an evaluation.
    pub fn update(&self, tenant: &str, g: &Group) {
        let mut inner = self.inner.write().expect("view lock");
        inner
            .tenants
            .entry(tenant.to_string())
            .or_default()
            .insert(g.key(), group_json(g));
    }

    fn groups(&self, tenant: &str) -> Vec<Value> {
        let inner = self.inner.read().expect("view lock");
        let evaluated = inner.tenants.get(tenant);
        inner
            .templates
            .iter()
            .map(|(key, fresh)| evaluated.and_then(|t| t.get(key)).unwrap_or(fresh).clone())
            .collect()
    }

    /// The routes.
    pub fn routes(&self) -> Router {
        Router::new()
            .route("/api/v1/rules", get(rules))
            .route("/api/v1/alerts", get(alerts))
            .with_state(self.clone())
    }
}

fn error(status: StatusCode, kind: &str, message: String) -> Response {
    (
        status,
        axum::Json(json!({"status": "error", "errorType": kind, "error": message})),
    )
        .into_response()
}

/// The request's tenant, or the reason it is refused.
fn tenant_of(view: &RulesView, headers: &HeaderMap) -> Result<String, String> {
    let default = view.inner.read().expect("view lock").default_tenant.clone();
    obs_runtime::tenant::tenant(headers, &default)
}

async fn rules(
    State(view): State<RulesView>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let tenant = match tenant_of(&view, &headers) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let kind = params
        .iter()
        .find(|(k, _)| k == "type")
        .map(|(_, v)| v.as_str());
    let keep = match kind {
        None | Some("") => None,
        Some("alert") => Some("alerting"),
        Some("record") => Some("recording"),
        Some(other) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_data",
                format!("unsupported type {other:?}: use alert or record"),
            );
        }
    };
    let mut groups = view.groups(&tenant);
    if let Some(keep) = keep {
        for g in &mut groups {
            if let Some(rules) = g["rules"].as_array_mut() {
                rules.retain(|r| r["type"] == keep);
            }
        }
        groups.retain(|g| g["rules"].as_array().is_some_and(|r| !r.is_empty()));
    }
    axum::Json(json!({"status": "success", "data": {"groups": groups}})).into_response()
}

async fn alerts(State(view): State<RulesView>, headers: HeaderMap) -> Response {
    let tenant = match tenant_of(&view, &headers) {
        Ok(t) => t,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_data", e),
    };
    let alerts: Vec<Value> = view
        .groups(&tenant)
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .flat_map(|r| r["alerts"].as_array().cloned().unwrap_or_default())
        .collect();
    axum::Json(json!({"status": "success", "data": {"alerts": alerts}})).into_response()
}
