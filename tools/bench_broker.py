"""Broker throughput with confluent-kafka (librdkafka), for comparing tansu builds.

Produces MESSAGES records of SIZE bytes to a new 3-partition topic with an idempotent
producer (acks=all, as the collector publishes), then reads them all back (partitions
assigned). Prints one JSON line: produce and consume records/s and MB/s. The records are
`x`s, or with --text log-like lines that differ (compressible as logs are); --compression
is the producer's codec (the broker's cost of a compressed produce is measured with it).

    python tools/bench_broker.py --bootstrap 127.0.0.1:9092 [--messages 200000] [--size 300]
        [--text] [--compression none|gzip|snappy|lz4|zstd]
"""

import argparse
import json
import random
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--messages", type=int, default=200_000)
    ap.add_argument("--size", type=int, default=300)
    ap.add_argument("--text", action="store_true", help="log-like lines instead of x's")
    ap.add_argument("--compression", default="none",
                    choices=["none", "gzip", "snappy", "lz4", "zstd"])
    args = ap.parse_args()
    topic = f"bench-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    for f in admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)]).values():
        f.result()

    producer = Producer({
        "bootstrap.servers": args.bootstrap,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "compression.type": args.compression,
        "message.max.bytes": 8 << 20,
    })
    payloads = text_payloads(args.size) if args.text else [b"x" * args.size]
    failed = []
    started = time.monotonic()
    for i in range(args.messages):
        while True:
            try:
                producer.produce(topic, payloads[i % len(payloads)], key=str(i % 1000).encode(),
                                 on_delivery=lambda e, m: e and failed.append(e))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush(120)
    produce_s = time.monotonic() - started
    if failed:
        raise SystemExit(f"{len(failed)} deliveries failed, e.g. {failed[0]}")

    consumer = Consumer({
        "bootstrap.servers": args.bootstrap,
        "group.id": f"bench-{topic}",
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
    })
    # Assigned, not subscribed: the figure is the fetch throughput, not a group join.
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(3)])
    got = 0
    started = time.monotonic()
    deadline = started + 300
    while got < args.messages and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=10_000, timeout=1.0):
            if m.error() is None:
                got += 1
    consume_s = time.monotonic() - started
    consumer.close()
    if got != args.messages:
        raise SystemExit(f"consumed {got} of {args.messages}")
    mb = args.messages * args.size / 1e6
    print(json.dumps({
        "messages": args.messages,
        "size": args.size,
        "text": args.text,
        "compression": args.compression,
        "produce_per_s": round(args.messages / produce_s),
        "produce_mb_per_s": round(mb / produce_s, 1),
        "consume_per_s": round(args.messages / consume_s),
        "consume_mb_per_s": round(mb / consume_s, 1),
    }))


def text_payloads(size, count=64):
    """`count` different payloads of `size` bytes of access-log-like lines (seeded)."""
    rnd = random.Random(1)
    out = []
    for _ in range(count):
        lines = []
        n = 0
        while n < size:
            line = (f"GET /api/v1/items/{rnd.randint(0, 99999)} 200 {rnd.randint(0, 250)}ms "
                    f"user={rnd.randint(0, 999)} service=checkout http.method=GET "
                    f"http.route=/api/v1/items/{{id}} seq={rnd.randint(0, 10**9)}\n")
            lines.append(line)
            n += len(line)
        out.append("".join(lines).encode()[:size])
    return out


if __name__ == "__main__":
    main()
