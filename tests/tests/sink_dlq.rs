//! A message the sink cannot decode goes to `obs.dlq` with where it came from and why, and
//! the rest of its partition is still stored.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use obs_e2e::{Stack, wait_for};
use obs_schemas::Topic;
use obs_schemas::records::{DeadLetter, LogBatch, LogRecord};
use obs_schemas::wire::Codec;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
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

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", stack.broker.bootstrap())
        .set("group.id", "dlq-reader")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[Topic::Dlq.name()]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
        .await
        .expect("a DLQ message")
        .unwrap();
    let letter: DeadLetter = codec.decode(msg.payload().unwrap()).await.unwrap();
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
    assert_eq!(msg.key(), Some(&b"k"[..]));
}
