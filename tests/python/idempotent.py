#!/usr/bin/env python3
"""kafka-python's idempotent producer against a runnel broker: create a
topic with 3 partitions, produce PER_PARTITION records to each with
enable_idempotence=True and acks='all' (several batches in flight), then
read everything back: every acknowledged record exactly once, at its
acknowledged offset, in send order.

Usage: idempotent.py BOOTSTRAP TOPIC PER_PARTITION [PARTITIONS PACE_MS]
  (exit 0 and "OK" on success). With PARTITIONS, the topic already exists
  (the caller made it, e.g. replicated) and sends are paced: PACE_MS after
  every 10 records, so that the caller can kill brokers meanwhile.
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

PARTITIONS = 3
PACE_MS = 0


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def main():
    global PARTITIONS, PACE_MS
    if len(sys.argv) not in (4, 6):
        fail("usage: idempotent.py BOOTSTRAP TOPIC PER_PARTITION [PARTITIONS PACE_MS]")
    bootstrap, topic, per_partition = sys.argv[1], sys.argv[2], int(sys.argv[3])

    if len(sys.argv) == 6:
        PARTITIONS, PACE_MS = int(sys.argv[4]), int(sys.argv[5])
    else:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
        admin.create_topics({topic: {"num_partitions": PARTITIONS, "replication_factor": 1}})
        admin.close()
    deadline = time.time() + 30
    while True:
        probe = KafkaConsumer(bootstrap_servers=bootstrap)
        try:
            parts = probe.partitions_for_topic(topic)
        finally:
            probe.close()
        if parts and len(parts) == PARTITIONS:
            break
        if time.time() > deadline:
            fail("topic %s not visible with %d partitions: %r" % (topic, PARTITIONS, parts))
        time.sleep(0.2)

    producer = KafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True, acks="all",
                             linger_ms=2, batch_size=2048,
                             max_in_flight_requests_per_connection=5,
                             request_timeout_ms=5000, retry_backoff_ms=100,
                             reconnect_backoff_ms=50, reconnect_backoff_max_ms=1000,
                             metadata_max_age_ms=2000, delivery_timeout_ms=180000)
    futures = []
    for i in range(per_partition):
        for p in range(PARTITIONS):
            value = ("idem-%d-%06d" % (p, i)).encode()
            futures.append((p, value, producer.send(topic, value=value, partition=p)))
        if PACE_MS and i % 10 == 9:
            time.sleep(PACE_MS / 1000.0)
    print("all %d records handed to the producer" % (PARTITIONS * per_partition), flush=True)
    producer.flush(180)
    acked = {p: [] for p in range(PARTITIONS)}
    for p, value, fut in futures:
        try:
            md = fut.get(timeout=180)
        except Exception as e:
            fail("send of %r: %s: %s" % (value, type(e).__name__, e))
        if md.partition != p:
            fail("%r acked on partition %d, sent to %d" % (value, md.partition, p))
        acked[p].append((md.offset, value))
    producer.close()
    for p in range(PARTITIONS):
        offsets = [o for o, _ in acked[p]]
        if offsets != list(range(per_partition)):
            bad = next(i for i, o in enumerate(offsets) if o != i) if offsets else 0
            fail("partition %d: acked offsets not 0..%d in send order; #%d is %r"
                 % (p, per_partition, bad, offsets[bad:bad + 3]))
    print("produced %d records with enable_idempotence=True, all acked in order"
          % (PARTITIONS * per_partition), flush=True)

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + 120
    while sum(len(v) for v in got.values()) < PARTITIONS * per_partition:
        if time.time() > deadline:
            fail("read %r records per partition within 120 s" % {p: len(v) for p, v in got.items()})
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                got[tp.partition].append((r.offset, r.value))
    # Anything beyond what was sent would be a duplicate.
    end = consumer.end_offsets(tps)
    consumer.close()
    for p in range(PARTITIONS):
        if end[TopicPartition(topic, p)] != per_partition:
            fail("end offset of partition %d is %r, %d records were sent"
                 % (p, end[TopicPartition(topic, p)], per_partition))
        if got[p] != acked[p]:
            for a, b in zip(got[p], acked[p]):
                if a != b:
                    fail("partition %d: read %r, acked %r" % (p, a, b))
            fail("partition %d: read %d records, acked %d" % (p, len(got[p]), len(acked[p])))
        values = [v for _, v in got[p]]
        if len(set(values)) != len(values):
            fail("partition %d: a value is there twice" % p)
    print("read back %d records, each exactly once at its acked offset"
          % (PARTITIONS * per_partition), flush=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
