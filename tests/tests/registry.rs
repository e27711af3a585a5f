//! The schema registry over its REST API: plain HTTP in Confluent's shapes, the
//! `schema_registry_converter` client, compatibility enforcement and durable ids.

use std::process::Command;
use std::time::Duration;

use apache_avro::types::Value;
use obs_e2e::{Proc, free_port, obs_bin, wait_for};
use schema_registry_converter::async_impl::avro::{AvroDecoder, AvroEncoder};
use schema_registry_converter::async_impl::schema_registry::SrSettings;
use schema_registry_converter::schema_registry_common::{
    SchemaType, SubjectNameStrategy, SuppliedSchema,
};
use serde_json::{Value as Json, json};

const V1: &str =
    r#"{"type":"record","name":"Order","namespace":"t","fields":[{"name":"id","type":"string"}]}"#;
const V2: &str = r#"{"type":"record","name":"Order","namespace":"t","fields":[{"name":"id","type":"string"},{"name":"qty","type":"int","default":1}]}"#;
const INCOMPATIBLE: &str =
    r#"{"type":"record","name":"Order","namespace":"t","fields":[{"name":"id","type":"long"}]}"#;

struct Registry {
    url: String,
    port: u16,
    _proc: Proc,
}

async fn start(dir: &std::path::Path, port: u16) -> Registry {
    let mut cmd = Command::new(obs_bin());
    cmd.arg("registry")
        .env("OBS_REGISTRY__LISTEN", format!("127.0.0.1:{port}"))
        .env("OBS_REGISTRY__DATA_DIR", dir.join("registry"));
    let proc = Proc::spawn("registry", cmd, dir).unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let probe = format!("{url}/subjects");
    wait_for("registry", Duration::from_secs(30), || {
        let probe = probe.clone();
        async move {
            obs_e2e::http(5)
                .get(&probe)
                .send()
                .await
                .ok()
                .filter(|r| r.status().is_success())
                .map(|_| ())
        }
    })
    .await
    .unwrap();
    Registry {
        url,
        port,
        _proc: proc,
    }
}

async fn call(method: reqwest::Method, url: String, body: Option<Json>) -> (u16, Json) {
    let mut req = obs_e2e::http(30)
        .request(method, url)
        .header("Accept", "application/vnd.schemaregistry.v1+json");
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/vnd.schemaregistry.v1+json")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    assert_eq!(
        resp.headers()["content-type"],
        "application/vnd.schemaregistry.v1+json"
    );
    (status, resp.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_api_in_confluent_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), free_port()).await;
    let u = &r.url;
    use reqwest::Method as M;

    assert_eq!(
        call(
            M::POST,
            format!("{u}/subjects/orders-value/versions"),
            Some(json!({"schema": V1}))
        )
        .await,
        (200, json!({"id": 1}))
    );
    // Registering the same schema again is idempotent.
    assert_eq!(
        call(
            M::POST,
            format!("{u}/subjects/orders-value/versions"),
            Some(json!({"schema": V1, "schemaType": "AVRO"}))
        )
        .await,
        (200, json!({"id": 1}))
    );
    assert_eq!(
        call(
            M::POST,
            format!("{u}/subjects/orders-value/versions"),
            Some(json!({"schema": V2}))
        )
        .await,
        (200, json!({"id": 2}))
    );

    assert_eq!(
        call(M::GET, format!("{u}/subjects"), None).await,
        (200, json!(["orders-value"]))
    );
    assert_eq!(
        call(M::GET, format!("{u}/subjects/orders-value/versions"), None).await,
        (200, json!([1, 2]))
    );
    assert_eq!(
        call(
            M::GET,
            format!("{u}/subjects/orders-value/versions/latest"),
            None
        )
        .await,
        (
            200,
            json!({"subject": "orders-value", "version": 2, "id": 2, "schema": V2})
        )
    );
    assert_eq!(
        call(M::GET, format!("{u}/schemas/ids/1"), None).await,
        (200, json!({"schema": V1}))
    );
    assert_eq!(
        call(M::GET, format!("{u}/schemas/ids/2/versions"), None).await,
        (200, json!([{"subject": "orders-value", "version": 2}]))
    );
    assert_eq!(
        call(
            M::POST,
            format!("{u}/subjects/orders-value"),
            Some(json!({"schema": V1}))
        )
        .await,
        (
            200,
            json!({"subject": "orders-value", "version": 1, "id": 1, "schema": V1})
        )
    );

    // Compatibility: checked, then enforced with Confluent's error code.
    assert_eq!(
        call(
            M::POST,
            format!("{u}/compatibility/subjects/orders-value/versions/latest"),
            Some(json!({"schema": INCOMPATIBLE}))
        )
        .await,
        (200, json!({"is_compatible": false}))
    );
    assert_eq!(
        call(
            M::POST,
            format!("{u}/compatibility/subjects/orders-value/versions/latest"),
            Some(json!({"schema": V2}))
        )
        .await,
        (200, json!({"is_compatible": true}))
    );
    let (status, err) = call(
        M::POST,
        format!("{u}/subjects/orders-value/versions"),
        Some(json!({"schema": INCOMPATIBLE})),
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(err["error_code"], 409);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .starts_with("Schema being registered is incompatible with an earlier schema"),
        "{err}"
    );
    assert_eq!(
        call(M::GET, format!("{u}/subjects/orders-value/versions"), None)
            .await
            .1,
        json!([1, 2])
    );

    // Errors for what does not exist or does not parse.
    let (status, err) = call(M::GET, format!("{u}/subjects/nope/versions"), None).await;
    assert_eq!((status, err["error_code"].as_i64()), (404, Some(40401)));
    let (status, err) = call(
        M::GET,
        format!("{u}/subjects/orders-value/versions/9"),
        None,
    )
    .await;
    assert_eq!((status, err["error_code"].as_i64()), (404, Some(40402)));
    let (status, err) = call(M::GET, format!("{u}/schemas/ids/99"), None).await;
    assert_eq!((status, err["error_code"].as_i64()), (404, Some(40403)));
    let (status, err) = call(
        M::POST,
        format!("{u}/subjects/x/versions"),
        Some(json!({"schema": "{\"type\": \"recrd\"}"})),
    )
    .await;
    assert_eq!((status, err["error_code"].as_i64()), (422, Some(42201)));
    let (status, err) = call(
        M::POST,
        format!("{u}/subjects/x/versions"),
        Some(json!({"schema": "{}", "schemaType": "PROTOBUF"})),
    )
    .await;
    assert_eq!((status, err["error_code"].as_i64()), (422, Some(42201)));
    assert!(err["message"].as_str().unwrap().contains("only AVRO"));

    // Config: global default BACKWARD; NONE on the subject lets the incompatible one in.
    assert_eq!(
        call(M::GET, format!("{u}/config"), None).await,
        (200, json!({"compatibilityLevel": "BACKWARD"}))
    );
    let (status, err) = call(M::GET, format!("{u}/config/orders-value"), None).await;
    assert_eq!((status, err["error_code"].as_i64()), (404, Some(40408)));
    assert_eq!(
        call(
            M::PUT,
            format!("{u}/config/orders-value"),
            Some(json!({"compatibility": "NONE"}))
        )
        .await,
        (200, json!({"compatibility": "NONE"}))
    );
    let (status, err) = call(
        M::PUT,
        format!("{u}/config"),
        Some(json!({"compatibility": "SIDEWAYS"})),
    )
    .await;
    assert_eq!((status, err["error_code"].as_i64()), (422, Some(42203)));
    assert_eq!(
        call(
            M::POST,
            format!("{u}/subjects/orders-value/versions"),
            Some(json!({"schema": INCOMPATIBLE}))
        )
        .await,
        (200, json!({"id": 3}))
    );

    assert_eq!(
        call(M::DELETE, format!("{u}/subjects/orders-value"), None).await,
        (200, json!([1, 2, 3]))
    );
    assert_eq!(
        call(M::GET, format!("{u}/subjects"), None).await,
        (200, json!([]))
    );
    // Ids outlive a deleted subject.
    assert_eq!(
        call(M::GET, format!("{u}/schemas/ids/3"), None).await,
        (200, json!({"schema": INCOMPATIBLE}))
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn schema_registry_converter_round_trips_and_ids_survive_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let r = start(dir.path(), port).await;
    let settings = SrSettings::new(r.url.clone());
    let encoder = AvroEncoder::new(settings.clone());
    let strategy = |schema: &str| {
        SubjectNameStrategy::TopicNameStrategyWithSchema(
            "orders".into(),
            false,
            SuppliedSchema::new(None, SchemaType::Avro, schema.to_string()),
        )
    };
    let v1 = encoder
        .encode(vec![("id", Value::String("o-1".into()))], strategy(V1))
        .await
        .unwrap();
    assert_eq!(&v1[..5], &[0, 0, 0, 0, 1], "magic byte then schema id 1");
    // The converter caches one schema per subject, so a new version needs a new encoder
    // (as a new producer release would have).
    let v2 = AvroEncoder::new(settings.clone())
        .encode(
            vec![("id", Value::String("o-2".into())), ("qty", Value::Int(5))],
            strategy(V2),
        )
        .await
        .unwrap();
    assert_eq!(&v2[..5], &[0, 0, 0, 0, 2]);
    // An incompatible schema is refused through the client too.
    let err = AvroEncoder::new(settings.clone())
        .encode(vec![("id", Value::Long(1))], strategy(INCOMPATIBLE))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("409") || err.to_string().contains("incompatible"),
        "{err}"
    );

    // Our pipeline's own codec works against the same registry (the obs.logs subject).
    let codec = obs_schemas::wire::Codec::new(&r.url);
    let batch = obs_schemas::records::LogBatch {
        records: vec![obs_schemas::records::LogRecord {
            body: "hi".into(),
            service: "s".into(),
            ..Default::default()
        }],
    };
    let bytes = codec
        .encode(obs_schemas::Topic::Logs, &batch)
        .await
        .unwrap();
    assert_eq!(obs_schemas::wire::schema_id(&bytes), Some(3));
    let back: obs_schemas::records::LogBatch = codec.decode(&bytes).await.unwrap();
    assert_eq!(back, batch);

    // Restart on the same storage: ids, versions and data stay decodable.
    drop(r);
    let r = start(dir.path(), port).await;
    let decoder = AvroDecoder::new(SrSettings::new(r.url.clone()));
    let decoded = decoder.decode(Some(&v2)).await.unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![
            ("id".into(), Value::String("o-2".into())),
            ("qty".into(), Value::Int(5))
        ])
    );
    let decoded = decoder.decode(Some(&v1)).await.unwrap();
    assert_eq!(
        decoded.value,
        Value::Record(vec![("id".into(), Value::String("o-1".into()))])
    );
    let (status, versions) = call(
        reqwest::Method::GET,
        format!("{}/subjects/orders-value/versions", r.url),
        None,
    )
    .await;
    assert_eq!((status, versions), (200, json!([1, 2])));
    let (_, latest) = call(
        reqwest::Method::GET,
        format!("{}/subjects/obs.logs-value/versions/latest", r.url),
        None,
    )
    .await;
    assert_eq!(latest["id"], 3);
    // A new schema after the restart gets the next id, never a reused one.
    let (status, id) = call(
        reqwest::Method::POST,
        format!("{}/subjects/other-value/versions", r.url),
        Some(json!({"schema": "\"string\""})),
    )
    .await;
    assert_eq!((status, id), (200, json!({"id": 4})));
    assert_eq!(r.port, port);
}
