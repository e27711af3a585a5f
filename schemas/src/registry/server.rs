//! HTTP routes of the registry, in Confluent's paths, JSON shapes and error codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::compat::CompatibilityLevel;
use super::store::{RegistryError, SchemaStore, VersionRef};

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";

type Shared = Arc<SchemaStore>;
type Params = Query<HashMap<String, String>>;

/// A JSON answer with Confluent's content type.
struct Reply(StatusCode, Value);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (
            self.0,
            [(header::CONTENT_TYPE, CONTENT_TYPE)],
            self.1.to_string(),
        )
            .into_response()
    }
}

impl From<RegistryError> for Reply {
    fn from(e: RegistryError) -> Self {
        let (status, code) = e.codes();
        Reply(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            json!({"error_code": code, "message": e.to_string()}),
        )
    }
}

type Result<T = Reply> = std::result::Result<T, Reply>;

fn ok(v: Value) -> Result {
    Ok(Reply(StatusCode::OK, v))
}

#[derive(Deserialize)]
struct SchemaRequest {
    schema: String,
    #[serde(rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<Value>,
}

fn schema_request(body: &Bytes) -> Result<SchemaRequest> {
    let req: SchemaRequest = serde_json::from_slice(body).map_err(|e| {
        Reply(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"error_code": 422, "message": format!("Unrecognized request body: {e}")}),
        )
    })?;
    if let Some(t) = &req.schema_type
        && !t.eq_ignore_ascii_case("AVRO")
    {
        return Err(RegistryError::InvalidSchema(format!(
            "schemaType {t} is not supported by this registry; only AVRO is"
        ))
        .into());
    }
    if !req.references.is_empty() {
        return Err(RegistryError::InvalidSchema(
            "schema references are not supported by this registry".into(),
        )
        .into());
    }
    Ok(req)
}

fn flag(params: &HashMap<String, String>, name: &str) -> bool {
    params.get(name).is_some_and(|v| v == "true")
}

fn version_json(v: super::store::RegisteredVersion) -> Value {
    json!({"subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema})
}

async fn register(State(s): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Result {
    let req = schema_request(&body)?;
    ok(json!({"id": s.register(&subject, &req.schema)?}))
}

async fn lookup(State(s): State<Shared>, Path(subject): Path<String>, body: Bytes) -> Result {
    let req = schema_request(&body)?;
    ok(version_json(s.lookup(&subject, &req.schema)?))
}

async fn subjects(State(s): State<Shared>, Query(p): Params) -> Result {
    ok(json!(s.subjects(flag(&p, "deleted"))))
}

async fn versions(State(s): State<Shared>, Path(subject): Path<String>) -> Result {
    ok(json!(s.versions(&subject)?))
}

async fn version(State(s): State<Shared>, Path((subject, v)): Path<(String, String)>) -> Result {
    ok(version_json(s.version(&subject, VersionRef::parse(&v)?)?))
}

async fn version_schema(
    State(s): State<Shared>,
    Path((subject, v)): Path<(String, String)>,
) -> Result {
    let found = s.version(&subject, VersionRef::parse(&v)?)?;
    ok(serde_json::from_str(&found.schema).unwrap_or(Value::String(found.schema)))
}

async fn delete_subject(
    State(s): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result {
    ok(json!(s.delete_subject(&subject, flag(&p, "permanent"))?))
}

async fn delete_version(
    State(s): State<Shared>,
    Path((subject, v)): Path<(String, String)>,
    Query(p): Params,
) -> Result {
    ok(json!(s.delete_version(
        &subject,
        VersionRef::parse(&v)?,
        flag(&p, "permanent")
    )?))
}

fn id_param(id: &str) -> Result<u32> {
    id.parse()
        .map_err(|_| RegistryError::SchemaNotFound(format!("Schema {id} not found")).into())
}

async fn schema_by_id(State(s): State<Shared>, Path(id): Path<String>) -> Result {
    ok(json!({"schema": s.schema_by_id(id_param(&id)?)?}))
}

async fn raw_schema_by_id(State(s): State<Shared>, Path(id): Path<String>) -> Result {
    let text = s.schema_by_id(id_param(&id)?)?;
    ok(serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn id_versions(State(s): State<Shared>, Path(id): Path<String>) -> Result {
    let list = s.versions_of_id(id_param(&id)?)?;
    ok(json!(
        list.into_iter()
            .map(|(subject, version)| json!({"subject": subject, "version": version}))
            .collect::<Vec<_>>()
    ))
}

async fn id_subjects(State(s): State<Shared>, Path(id): Path<String>) -> Result {
    let mut list: Vec<String> = s
        .versions_of_id(id_param(&id)?)?
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    list.dedup();
    ok(json!(list))
}

async fn compatibility(
    State(s): State<Shared>,
    Path((subject, v)): Path<(String, String)>,
    Query(p): Params,
    body: Bytes,
) -> Result {
    let req = schema_request(&body)?;
    compat_reply(
        s.check(&subject, &req.schema, Some(VersionRef::parse(&v)?))?,
        flag(&p, "verbose"),
    )
}

async fn compatibility_all(
    State(s): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
    body: Bytes,
) -> Result {
    let req = schema_request(&body)?;
    compat_reply(s.check(&subject, &req.schema, None)?, flag(&p, "verbose"))
}

fn compat_reply(problems: Vec<String>, verbose: bool) -> Result {
    if verbose {
        ok(json!({"is_compatible": problems.is_empty(), "messages": problems}))
    } else {
        ok(json!({"is_compatible": problems.is_empty()}))
    }
}

fn level_from_body(body: &Bytes) -> Result<CompatibilityLevel> {
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let name = v.get("compatibility").and_then(Value::as_str).unwrap_or("");
    CompatibilityLevel::parse(name)
        .ok_or_else(|| RegistryError::InvalidCompatibilityLevel(name.to_string()).into())
}

async fn get_global_config(State(s): State<Shared>) -> Result {
    ok(json!({"compatibilityLevel": s.config(None)?.as_str()}))
}

async fn put_global_config(State(s): State<Shared>, body: Bytes) -> Result {
    let level = level_from_body(&body)?;
    s.set_config(None, Some(level))?;
    ok(json!({"compatibility": level.as_str()}))
}

async fn get_subject_config(
    State(s): State<Shared>,
    Path(subject): Path<String>,
    Query(p): Params,
) -> Result {
    let level = match s.config(Some(&subject)) {
        Err(RegistryError::SubjectConfigNotFound(_)) if flag(&p, "defaultToGlobal") => {
            s.config(None)?
        }
        other => other?,
    };
    ok(json!({"compatibilityLevel": level.as_str()}))
}

async fn put_subject_config(
    State(s): State<Shared>,
    Path(subject): Path<String>,
    body: Bytes,
) -> Result {
    let level = level_from_body(&body)?;
    s.set_config(Some(&subject), Some(level))?;
    ok(json!({"compatibility": level.as_str()}))
}

async fn delete_subject_config(State(s): State<Shared>, Path(subject): Path<String>) -> Result {
    let level = s.config(Some(&subject))?;
    s.set_config(Some(&subject), None)?;
    ok(json!({"compatibilityLevel": level.as_str()}))
}

/// The registry's routes, mounted at the root as Confluent serves them.
pub fn router(store: Arc<SchemaStore>) -> Router {
    Router::new()
        .route("/", get(|| async { ok(json!({})) }))
        .route("/schemas/types", get(|| async { ok(json!(["AVRO"])) }))
        .route("/mode", get(|| async { ok(json!({"mode": "READWRITE"})) }))
        .route("/subjects", get(subjects))
        .route("/subjects/{subject}", post(lookup).delete(delete_subject))
        .route("/subjects/{subject}/versions", get(versions).post(register))
        .route(
            "/subjects/{subject}/versions/{version}",
            get(version).delete(delete_version),
        )
        .route(
            "/subjects/{subject}/versions/{version}/schema",
            get(version_schema),
        )
        .route("/schemas/ids/{id}", get(schema_by_id))
        .route("/schemas/ids/{id}/schema", get(raw_schema_by_id))
        .route("/schemas/ids/{id}/versions", get(id_versions))
        .route("/schemas/ids/{id}/subjects", get(id_subjects))
        .route(
            "/compatibility/subjects/{subject}/versions/{version}",
            post(compatibility),
        )
        .route(
            "/compatibility/subjects/{subject}/versions",
            post(compatibility_all),
        )
        .route("/config", get(get_global_config).put(put_global_config))
        .route(
            "/config/{subject}",
            get(get_subject_config)
                .put(put_subject_config)
                .delete(delete_subject_config),
        )
        .with_state(store)
}
