#!/usr/bin/env python3
"""kafka-python 3.0.12 (the pip one) pinned with api_version to an old Kafka
release, against a runnel broker. With api_version set, kafka-python sends
no ApiVersions request and takes its request versions from its table for
that release (kafka/protocol/broker_version_data.py):

    api_version  Produce (magic)  Fetch  ListOffsets  Metadata  OffsetCommit  OffsetFetch  JoinGroup
    0.9          v1 (0)           v1     v0           v0        v2            v1           v0
    0.10.0       v2 (1)           v2     v0           v1        v2            v1           v0
    0.10.2       v2 (1)           v3     v1           v2        v2            v2           v1
    0.11         v3 (2)           v5     v2           v4        v3            v3           v2
    1.0          v5 (2)           v6     v2           v5        v3            v3           v2

(0.11 and 1.0 also default to idempotence: InitProducerId v0.)

Checks: produce keys, values (and timestamps from 0.10 on) with acks=-1;
fetch them back with an assigned consumer and compare; offsets_for_times
(from 0.10.1 on); a consumer group that commits part of the topic and a new
member that resumes at the commit; and mixed with librdkafka
(confluent_kafka): what the pinned producer wrote is read by a librdkafka
consumer, and what librdkafka wrote is read by the pinned consumer. Topics
are created with confluent_kafka's AdminClient (setup, not under test).

Each check prints "PASS name" or "FAIL name: error"; exit status 1 if any
failed.

Usage: legacy_api_versions.py BOOTSTRAP API_VERSION   (e.g. 0.9, 0.10.0, 0.10.2, 0.11, 1.0)
"""
import logging
import sys
import time
import uuid

from checks import FAILURES, check, expect, failed, note, passed

import kafka
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
import confluent_kafka
from confluent_kafka.admin import AdminClient, NewTopic

PARTITIONS = 2
PER_PARTITION = 10
COMMIT_AT = 6
TIMEOUT = 30

BOOTSTRAP = None
API = None          # the pinned api_version tuple
LABEL = None        # as given on the command line
HAS_TS = False      # message format v1 or v2: records carry timestamps


def payload(tag, p, i):
    return bytes([0, p, i, 0xFF, 0xFE]) + (" %s %s value %d/%d " % (tag, LABEL, p, i)).encode() + b"z" * (i * 7)


def key_of(tag, p, i):
    return ("%s-%d-%d" % (tag, p, i)).encode()


def client_id():
    return "legacy-kafka-python-%s" % LABEL


# ------------------------------------------------------------------ setup --

def create_topics(names):
    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    fs = admin.create_topics([NewTopic(n, num_partitions=PARTITIONS, replication_factor=1) for n in names],
                             operation_timeout=TIMEOUT)
    for n, f in fs.items():
        f.result(timeout=TIMEOUT)
    deadline = time.time() + 20
    while True:
        md = admin.list_topics(timeout=10)
        ready = all(n in md.topics and md.topics[n].error is None and len(md.topics[n].partitions) == PARTITIONS
                    and all(p.leader >= 0 for p in md.topics[n].partitions.values()) for n in names)
        if ready:
            return
        expect(time.time() < deadline, "topics %r not visible with %d led partitions after 20s" % (names, PARTITIONS))
        time.sleep(0.2)


# --------------------------------------------------------- produce/fetch --

def produce_old(topic, tag, t0, partitions):
    """Produces with the pinned producer; returns the expected records per partition."""
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, api_version=API, acks=-1, linger_ms=5,
                             request_timeout_ms=TIMEOUT * 1000, client_id=client_id())
    futures = []
    for p in partitions:
        for i in range(PER_PARTITION):
            kwargs = {"timestamp_ms": t0 + 1000 * i} if HAS_TS else {}
            futures.append((p, i, producer.send(topic, key=key_of(tag, p, i), value=payload(tag, p, i),
                                                partition=p, **kwargs)))
    producer.flush(TIMEOUT)
    try:
        for p, i, fut in futures:
            md = fut.get(timeout=TIMEOUT)
            expect(md.partition == p and md.offset == i,
                   "record %d/%d acked at partition %d offset %d, want offset %d" % (p, i, md.partition, md.offset, i))
            if HAS_TS:
                expect(md.timestamp == t0 + 1000 * i,
                       "record %d/%d acked with timestamp %r, want %d" % (p, i, md.timestamp, t0 + 1000 * i))
    finally:
        producer.close(TIMEOUT)


def compare(got, tag, p, first, t0):
    """got: (offset, key, value, timestamp) of partition p, expected from offset `first` on."""
    for n, (offset, key, value, ts) in enumerate(got):
        i = first + n
        expect(offset == i, "partition %d: record %d at offset %d, want %d" % (p, n, offset, i))
        expect(key == key_of(tag, p, i), "partition %d offset %d: key %r, want %r" % (p, i, key, key_of(tag, p, i)))
        expect(value == payload(tag, p, i),
               "partition %d offset %d: value %r, want %r" % (p, i, value, payload(tag, p, i)))
        if HAS_TS and t0 is not None:
            expect(ts == t0 + 1000 * i, "partition %d offset %d: timestamp %r, want %d" % (p, i, ts, t0 + 1000 * i))


def poll_until(consumer, done, what):
    """Polls the kafka-python consumer until done(got) or TIMEOUT; got is per
    partition a list of (offset, key, value, timestamp)."""
    got = {}
    deadline = time.time() + TIMEOUT
    while not done(got):
        if time.time() > deadline:
            raise AssertionError("%s: not done within %ds; got offsets %r" % (
                what, TIMEOUT, {p: [r[0] for r in rs] for p, rs in got.items()}))
        for tp, records in consumer.poll(timeout_ms=500).items():
            got.setdefault(tp.partition, []).extend((r.offset, r.key, r.value, r.timestamp) for r in records)
    return got


def fetch_old(topic, partitions, n):
    """Reads n records from each partition from the beginning with the pinned consumer."""
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, api_version=API, enable_auto_commit=False,
                             request_timeout_ms=TIMEOUT * 1000 + 5000, client_id=client_id())
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return poll_until(consumer, lambda g: all(len(g.get(p, [])) >= n for p in partitions),
                          "assign + seek_to_beginning")
    finally:
        consumer.close()


def fetch_back(topic, t0):
    got = fetch_old(topic, range(PARTITIONS), PER_PARTITION)
    for p in range(PARTITIONS):
        compare(got[p][:PER_PARTITION], "old", p, 0, t0)


def offsets_for_times(topic, t0):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, api_version=API, enable_auto_commit=False, client_id=client_id())
    errs = []
    try:
        for t, want in ((t0 - 60000, 0), (t0 + 5000, 5), (t0 + 5500, 6), (t0 + 1000 * PER_PARTITION, None)):
            for p in range(PARTITIONS):
                tp = TopicPartition(topic, p)
                got = consumer.offsets_for_times({tp: t}, timeout_ms=TIMEOUT * 1000)[tp]
                got_offset = got.offset if got is not None else None
                if got_offset != want:
                    errs.append("partition %d t0%+dms: %r, want offset %r" % (p, t - t0, got, want))
    finally:
        consumer.close()
    expect(not errs, "offsets_for_times (ListOffsets by timestamp): " + "; ".join(errs))


# ----------------------------------------------------------------- group --

def group_consumer(topic, group, reset):
    return KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, api_version=API, group_id=group,
                         auto_offset_reset=reset, enable_auto_commit=False,
                         request_timeout_ms=TIMEOUT * 1000 + 5000, client_id=client_id())


def group_commit(topic, group, t0):
    consumer = group_consumer(topic, group, "earliest")
    try:
        got = poll_until(consumer, lambda g: all(g.get(p) and g[p][-1][0] >= COMMIT_AT - 1 for p in range(PARTITIONS)),
                         "the first group member")
        for p in range(PARTITIONS):
            compare(got[p][:COMMIT_AT], "old", p, 0, t0)
        offsets = {TopicPartition(topic, p): OffsetAndMetadata(COMMIT_AT, "", -1) for p in range(PARTITIONS)}
        consumer.commit(offsets)
        for tp in offsets:
            c = consumer.committed(tp)
            expect(c == COMMIT_AT, "committed(%s) = %r after commit, want %d" % (tp, c, COMMIT_AT))
    finally:
        consumer.close(autocommit=False)


def group_resume(topic, group, t0):
    # auto_offset_reset=latest: a member that found no commit would start
    # past every record and never finish.
    consumer = group_consumer(topic, group, "latest")
    try:
        got = poll_until(consumer,
                         lambda g: all(g.get(p) and g[p][-1][0] >= PER_PARTITION - 1 for p in range(PARTITIONS)),
                         "the resuming group member")
    finally:
        consumer.close(autocommit=False)
    for p in range(PARTITIONS):
        expect(got[p][0][0] == COMMIT_AT, "partition %d: the new member started at offset %d, want the committed %d" % (
            p, got[p][0][0], COMMIT_AT))
        compare(got[p], "old", p, COMMIT_AT, t0)


# ----------------------------------------------------------------- mixed --

def old_to_librdkafka(topic, t0):
    """The pinned producer writes partition 0; a librdkafka consumer reads it."""
    produce_old(topic, "old", t0, [0])
    c = confluent_kafka.Consumer({"bootstrap.servers": BOOTSTRAP, "group.id": "unused-" + topic,
                                  "enable.auto.commit": False, "client.id": "legacy-mixed-librdkafka"})
    got = []
    try:
        c.assign([confluent_kafka.TopicPartition(topic, 0, 0)])
        deadline = time.time() + TIMEOUT
        while len(got) < PER_PARTITION:
            expect(time.time() < deadline, "librdkafka consumer: %d of %d records within %ds" % (
                len(got), PER_PARTITION, TIMEOUT))
            m = c.poll(0.5)
            if m is None:
                continue
            expect(m.error() is None, "librdkafka consumer error: %s" % m.error())
            ts_type, ts = m.timestamp()
            got.append((m.offset(), m.key(), m.value(), ts))
    finally:
        c.close()
    compare(got, "old", 0, 0, t0)


def librdkafka_to_old(topic, t0):
    """librdkafka writes partition 1; the pinned consumer reads it."""
    p = confluent_kafka.Producer({"bootstrap.servers": BOOTSTRAP, "acks": "all", "linger.ms": 5,
                                  "client.id": "legacy-mixed-librdkafka"})
    reports = []
    for i in range(PER_PARTITION):
        p.produce(topic, key=key_of("rdk", 1, i), value=payload("rdk", 1, i), partition=1,
                  timestamp=t0 + 1000 * i, on_delivery=lambda err, msg: reports.append((err, msg)))
    left = p.flush(TIMEOUT)
    expect(left == 0, "librdkafka producer: %d records not delivered within %ds" % (left, TIMEOUT))
    errs = [str(err) for err, _ in reports if err is not None]
    expect(not errs, "librdkafka producer errors: %s" % errs)
    got = fetch_old(topic, [1], PER_PARTITION)
    # Timestamps exist only if the pinned consumer's format has them.
    compare(got[1][:PER_PARTITION], "rdk", 1, 0, t0)


def parse_version(s):
    v = tuple(int(x) for x in s.split("."))
    return v


def main():
    global BOOTSTRAP, API, LABEL, HAS_TS
    if len(sys.argv) != 3:
        print(__doc__)
        sys.exit(2)
    BOOTSTRAP, LABEL = sys.argv[1], sys.argv[2]
    API = parse_version(LABEL)
    HAS_TS = API >= (0, 10)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="[kafka-python] %(levelname)s %(name)s: %(message)s")
    print("kafka-python %s pinned api_version=%s, confluent_kafka %s (librdkafka %s), bootstrap %s" % (
        kafka.__version__, API, confluent_kafka.__version__, confluent_kafka.libversion()[0], BOOTSTRAP), flush=True)
    if API < (0, 9):
        print("FAIL args: api_version must be >= 0.9 (group coordination)", flush=True)
        sys.exit(2)

    run = uuid.uuid4().hex[:8]
    tag = LABEL.replace(".", "_")
    topic = "legacy-kp-%s-%s" % (tag, run)
    mixed = topic + "-mixed"
    group = topic + "-group"
    t0 = int(time.time() * 1000) - 3600 * 1000

    if check("setup-create-topics", lambda: create_topics([topic, mixed])) is None:
        sys.exit(1)

    if check("produce-acks-all", lambda: produce_old(topic, "old", t0, range(PARTITIONS))) is not None:
        check("fetch-back", lambda: fetch_back(topic, t0))
        if API >= (0, 10, 1):
            check("offsets-for-times", lambda: offsets_for_times(topic, t0))
        else:
            note("offsets-for-times skipped: kafka-python needs api_version >= 0.10.1 for it")
        if check("group-consume-commit", lambda: group_commit(topic, group, t0)) is not None:
            check("group-resume-at-commit", lambda: group_resume(topic, group, t0))
    check("mixed-old-producer-librdkafka-consumer", lambda: old_to_librdkafka(mixed, t0))
    check("mixed-librdkafka-producer-old-consumer", lambda: librdkafka_to_old(mixed, t0))

    if FAILURES:
        print("FAILED %d: %s" % (len(FAILURES), " ".join(FAILURES)), flush=True)
        sys.exit(1)
    print("ALL PASS", flush=True)


if __name__ == "__main__":
    main()
