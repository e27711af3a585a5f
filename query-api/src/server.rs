//! The query API's listener and shared state.

use std::sync::Arc;

use axum::Router;
use axum::routing::get;
use obs_runtime::auth::{Access, Dialect};
use obs_runtime::config::{Config, QueryConfig};
use obs_runtime::{clickhouse as ch, ops};

use crate::sql;

/// What every handler shares.
#[derive(Clone)]
pub struct ApiState {
    /// Client for the pipeline's database.
    pub client: clickhouse::Client,
    /// Limits and listener.
    pub cfg: Arc<QueryConfig>,
    /// How trace searches find traces.
    pub search_index: crate::traces::SearchIndex,
    /// Resolutions (ms) of the rollups in `metrics_rollups` (none when the rollup
    /// processor is off).
    pub rollup_resolutions_ms: Arc<Vec<i64>>,
    /// Range-query answers kept between requests (`None`: `results_cache_max_bytes` = 0).
    pub results_cache: Option<Arc<crate::prom::results_cache::ResultsCache>>,
    /// Labels of the series PromQL queries have read, by fingerprint.
    pub series_labels: Arc<crate::prom::series_labels::SeriesLabels>,
}

impl ApiState {
    /// The database as PromQL reads it.
    pub fn database(&self) -> crate::prom::store::Database {
        crate::prom::store::Database {
            client: self.client.clone(),
            labels: self.series_labels.clone(),
        }
    }
}

/// The API's routes.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/api/v1/sql", get(sql::get).post(sql::post))
        .route("/status", get(crate::status::page))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/status") }),
        )
        .merge(crate::prom::routes())
        .merge(crate::logql::routes())
        .merge(crate::traces::routes())
        .merge(crate::errors::routes())
        .with_state(state)
}

/// Serves the query API until a shutdown is asked for.
pub async fn run(cfg: Config, ready: ops::Readiness) -> anyhow::Result<()> {
    let state = ApiState {
        client: ch::client(&cfg.clickhouse),
        cfg: Arc::new(cfg.query.clone()),
        search_index: crate::traces::SearchIndex::new(&cfg),
        rollup_resolutions_ms: Arc::new(if cfg.rollups.enabled {
            cfg.rollups
                .resolutions_ms
                .iter()
                .map(|&r| r as i64)
                .collect()
        } else {
            Vec::new()
        }),
        results_cache: (cfg.query.results_cache_max_bytes > 0).then(|| {
            Arc::new(crate::prom::results_cache::ResultsCache::new(
                cfg.query.results_cache_max_bytes,
                cfg.query.results_cache_freshness_secs as i64 * 1000,
            ))
        }),
        series_labels: Arc::new(crate::prom::series_labels::SeriesLabels::new(
            cfg.query.series_labels_cache_entries,
        )),
    };
    if let Some(cache) = &state.results_cache {
        cache.clone().spawn_late_write_reader(state.client.clone());
    }
    let app = router(state).merge(ops::router(ready.clone()));
    ready.set(true);
    let guard = ops::guard(&cfg, Dialect::Query, Some(Access::Read))?;
    ops::serve(&cfg.query.listen, app, "query API", &guard).await
}
