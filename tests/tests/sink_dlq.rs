//! A message the sink cannot decode goes to `obs.dlq` with where it came from and why, and
//! the rest of its partition is still stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::{Stack, wait_for};
use obs_schemas::Topic;
use obs_schemas::records::{LogBatch, LogRecord};
use obs_schemas::wire::Codec;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};

#[tokio::test(flavor = "multi_thread")]
async fn undecodable_message_goes_to_the_dlq_and_the_partition_moves_on() {
    let stack = Stack::start().await.unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .create()
        .unwrap();
    // Everything to partition 0: garbage first, then a valid batch behind it.
    let garbage = b"\x00\x00\x00\x7fnot avro".to_vec();
    let delivered = producer
        .send(
            FutureRecord::to(Topic::Logs.name())
                .partition(0)
                .key("k")
                .payload(&garbage),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    let (partition, bad_offset) = (delivered.partition, delivered.offset);
    assert_eq!(partition, 0);
    let marker = format!(
        "after-poison-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let codec = Codec::new(&format!("http://127.0.0.1:{}", stack.ports.registry));
    let good = LogBatch {
        records: vec![LogRecord {
            timestamp_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as i64,
            body: marker.clone(),
            service: "dlq-test".into(),
            tenant: "default".into(),
            ..Default::default()
        }],
    };
    let bytes = codec.encode(Topic::Logs, &good).await.unwrap();
    producer
        .send(
            FutureRecord::to(Topic::Logs.name())
                .partition(0)
                .key("k")
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .unwrap();

    let db = stack.db();
    wait_for(
        "the record behind the poison message",
        Duration::from_secs(60),
        || {
            let (db, marker) = (db.clone(), marker.clone());
            async move {
                let n: u64 = db
                    .query("SELECT count() FROM otel_logs WHERE Body = ?")
                    .bind(marker)
                    .fetch_one()
                    .await
                    .ok()?;
                (n == 1).then_some(())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));

    let letters = stack
        .dead_letters(Duration::from_secs(60), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "exactly the one undecodable message");
    let (kafka_key, letter) = &letters[0];
    assert_eq!(
        (letter.topic.as_str(), letter.partition, letter.offset),
        ("obs.logs", 0, bad_offset)
    );
    assert_eq!(letter.value.as_deref(), Some(&garbage[..]));
    assert_eq!(letter.key.as_deref(), Some(&b"k"[..]));
    assert_eq!(letter.stage, "sink:otel_logs");
    assert!(
        letter.error.starts_with("malformed record"),
        "{}",
        letter.error
    );
    assert_eq!(kafka_key.as_deref(), Some(&b"k"[..]));
}

#[tokio::test(flavor = "multi_thread")]
async fn row_clickhouse_refuses_goes_to_the_dlq_and_the_rest_is_stored() {
    let stack = Stack::start().await.unwrap();
    let db = stack.db();
    // A constraint the table enforces: the stand-in for any value ClickHouse refuses.
    db.query("ALTER TABLE otel_logs ADD CONSTRAINT no_poison CHECK Body != 'poison'")
        .execute()
        .await
        .unwrap();
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .create()
        .unwrap();
    let codec = Codec::new(&format!("http://127.0.0.1:{}", stack.ports.registry));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64;
    let record = |body: &str, i: i64| LogRecord {
        timestamp_ns: now + i,
        body: body.into(),
        service: "constraint-test".into(),
        tenant: "default".into(),
        ..Default::default()
    };
    // Three messages on partition 1: fine, one poison row among four, fine.
    let messages = [
        vec![record("m0-a", 0), record("m0-b", 1)],
        vec![
            record("m1-a", 2),
            record("poison", 3),
            record("m1-c", 4),
            record("m1-d", 5),
        ],
        vec![record("m2-a", 6)],
    ];
    let mut offsets = vec![];
    for records in messages {
        let bytes = codec
            .encode(Topic::Logs, &LogBatch { records })
            .await
            .unwrap();
        let d = producer
            .send(
                FutureRecord::to(Topic::Logs.name())
                    .partition(1)
                    .key("k")
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        offsets.push(d.offset);
    }
    let bodies: Vec<String> = wait_for("the 6 good rows", Duration::from_secs(60), || {
        let db = db.clone();
        async move {
            let b: Vec<String> = db
                .query("SELECT Body FROM otel_logs WHERE ServiceName = 'constraint-test' ORDER BY Timestamp")
                .fetch_all()
                .await
                .ok()?;
            (b.len() >= 6).then_some(b)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", stack.obs_log()));
    assert_eq!(bodies, ["m0-a", "m0-b", "m1-a", "m1-c", "m1-d", "m2-a"]);

    // Exactly one letter: nothing else was refused.
    let letters = stack
        .dead_letters(Duration::from_secs(60), Duration::from_secs(3))
        .await
        .unwrap();
    assert_eq!(letters.len(), 1, "exactly the refused row");
    let (_, letter) = &letters[0];
    assert_eq!(
        (letter.topic.as_str(), letter.partition, letter.offset),
        ("obs.logs", 1, offsets[1])
    );
    assert_eq!(letter.stage, "sink:otel_logs");
    assert!(
        letter
            .error
            .starts_with("ClickHouse refused row 1 of the message")
            && letter.error.contains("no_poison"),
        "{}",
        letter.error
    );
    let row: serde_json::Value = serde_json::from_slice(letter.value.as_deref().unwrap()).unwrap();
    assert_eq!(row["Body"], "poison");
}
