#!/usr/bin/env python3
"""kafka-python against a runnel broker: create a topic, produce keyed
records with headers, read them back with KafkaConsumer + assign +
seek_to_beginning, and compare. kafka-python has its own protocol code, so
this is a second, independent client implementation.

Two producers: one with enable_idempotence=False (plain produce), then one
with the library's defaults, which in kafka-python 3.x means idempotence
(InitProducerId + sequence numbers) against any broker >= 0.11.

Usage: roundtrip.py BOOTSTRAP   (exit 0 and "OK" on success)
"""
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

PARTITIONS = 3
PER_PARTITION = 20


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def create_topic(bootstrap, topic):
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
    print("created %s with %d partitions" % (topic, PARTITIONS), flush=True)


def produce(bootstrap, topic, **producer_config):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                             **producer_config)
    sent = {p: [] for p in range(PARTITIONS)}
    futures = []
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            key = ("py-%d-%d" % (p, i)).encode()
            value = bytes([p, i, 0, 255]) + ("value %d/%d" % (p, i)).encode() * (i + 1)
            headers = [("idx", str(i).encode()), ("bin", bytes([0, 1, 2, 255]))]
            futures.append((p, key, value, headers, producer.send(
                topic, key=key, value=value, headers=headers, partition=p)))
    producer.flush(30)
    for p, key, value, headers, fut in futures:
        md = fut.get(timeout=30)
        if md.partition != p:
            fail("record %r acked on partition %d, sent to %d" % (key, md.partition, p))
        sent[p].append((md.offset, key, value, headers))
    producer.close()
    for p in range(PARTITIONS):
        offsets = [o for o, _, _, _ in sent[p]]
        if offsets != list(range(PER_PARTITION)):
            fail("partition %d acked offsets %r" % (p, offsets))
    print("produced %d records, all acked" % (PARTITIONS * PER_PARTITION), flush=True)
    return sent


def consume_and_compare(bootstrap, topic, sent):
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                             enable_auto_commit=False, auto_offset_reset="none")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + 30
    while sum(len(v) for v in got.values()) < PARTITIONS * PER_PARTITION:
        if time.time() > deadline:
            fail("read %r records per partition within 30 s" % {p: len(v) for p, v in got.items()})
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                got[tp.partition].append((r.offset, r.key, r.value, list(r.headers)))
    end = consumer.end_offsets(tps)
    consumer.close()
    for p in range(PARTITIONS):
        if end[TopicPartition(topic, p)] != PER_PARTITION:
            fail("end offset of partition %d: %r" % (p, end[TopicPartition(topic, p)]))
        if got[p] != sent[p]:
            for a, b in zip(got[p], sent[p]):
                if a != b:
                    fail("partition %d: read %r, wrote %r" % (p, a, b))
            fail("partition %d: read %d records, wrote %d" % (p, len(got[p]), len(sent[p])))
    print("read back %d records byte-for-byte" % (PARTITIONS * PER_PARTITION), flush=True)


def main():
    if len(sys.argv) != 2:
        fail("usage: roundtrip.py BOOTSTRAP")
    bootstrap = sys.argv[1]
    for topic, config, what in [
        ("kpy-plain", {"enable_idempotence": False}, "non-idempotent producer"),
        ("kpy-default", {}, "producer with kafka-python's defaults (idempotent)"),
    ]:
        print("== %s" % what, flush=True)
        create_topic(bootstrap, topic)
        try:
            sent = produce(bootstrap, topic, **config)
        except Exception as e:  # report which phase broke, then fail
            fail("%s: %s: %s" % (what, type(e).__name__, e))
        consume_and_compare(bootstrap, topic, sent)
    print("OK", flush=True)


if __name__ == "__main__":
    main()
