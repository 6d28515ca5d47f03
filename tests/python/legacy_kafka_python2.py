#!/usr/bin/python3
"""kafka-python 2.0.2 (Debian's python3-kafka, for the system /usr/bin/python3:
what the Kafka-in-Vagrant lab installs) against a runnel broker.

kafka-python 2.0.2 guesses the broker release from the ApiVersions answer
and picks its request versions from that guess, so this exercises what an
old but unpinned client sends: admin (CreateTopics, Metadata,
DescribeConfigs, DeleteTopics), produce with acks=all, keys, values and
timestamps, a consumer that assigns and reads from the beginning, a consumer
group that commits part of the topic, a new member of the group resuming at
the commit, and offsets_for_times.

Each check prints "PASS name" or "FAIL name: error"; exit status 1 if any
failed (2 if this is not kafka-python 2.0.2).

Usage: /usr/bin/python3 legacy_kafka_python2.py BOOTSTRAP
"""
import logging
import sys
import time
import uuid

from checks import FAILURES, check, expect, failed, note, passed

import kafka
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewTopic
from kafka.structs import OffsetAndMetadata

PARTITIONS = 2
PER_PARTITION = 10
COMMIT_AT = 6
TIMEOUT = 30

BOOTSTRAP = None


def payload(p, i):
    return bytes([0, p, i, 0xFF, 0xFE]) + (" kafka-python 2.0.2 value %d/%d " % (p, i)).encode() + b"y" * (i * 7)


def key_of(p, i):
    return ("kp2-%d-%d" % (p, i)).encode()


# ------------------------------------------------------------------ admin --

def wait_for_topic(admin, topic, partitions):
    deadline = time.time() + 20
    last = None
    while time.time() < deadline:
        md = admin.describe_topics([topic])
        last = md
        if md and md[0]["error_code"] == 0 and len(md[0]["partitions"]) == partitions and all(
                p["leader"] >= 0 for p in md[0]["partitions"]):
            return
        time.sleep(0.2)
    raise AssertionError("topic %s not visible with %d led partitions after 20s: %r" % (topic, partitions, last))


def admin_checks(topic, scratch):
    admin = check("admin-connect", lambda: KafkaAdminClient(
        bootstrap_servers=BOOTSTRAP, request_timeout_ms=TIMEOUT * 1000,
        client_id="legacy-kafka-python2"))
    if admin is None:
        return False
    note("kafka-python 2.0.2 guessed the broker as api_version %s" % (admin.config["api_version"],))

    def create():
        resp = admin.create_topics([NewTopic(topic, PARTITIONS, 1), NewTopic(scratch, 1, 1)],
                                   timeout_ms=TIMEOUT * 1000)
        errs = [tuple(t) for t in resp.topic_errors if t[1] != 0]
        expect(not errs, "CreateTopics v%d answered errors %r" % (resp.API_VERSION, errs))
        wait_for_topic(admin, topic, PARTITIONS)
        wait_for_topic(admin, scratch, 1)
    created = check("admin-create-topics", create) is not None

    def list_topics():
        names = admin.list_topics()
        expect(topic in names and scratch in names, "list_topics() = %r lacks %s or %s" % (names, topic, scratch))
    check("admin-list-topics", list_topics)

    def describe_configs():
        resps = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
        expect(len(resps) == 1, "describe_configs answered %d responses" % len(resps))
        resp = resps[0]
        res = [r for r in resp.resources if r[3] == topic]
        expect(len(res) == 1, "DescribeConfigs v%d has no resource %s: %r" % (resp.API_VERSION, topic, resp.resources))
        error_code, error_message, _rtype, _name, entries = res[0][:5]
        expect(error_code == 0, "DescribeConfigs(%s): error %d %s" % (topic, error_code, error_message))
        configs = {e[0]: e[1] for e in entries}
        for want in ("retention.ms", "cleanup.policy", "segment.bytes"):
            expect(want in configs, "DescribeConfigs(%s) lacks %s among %d entries" % (topic, want, len(configs)))
        expect(configs["cleanup.policy"] == "delete", "cleanup.policy = %r" % configs["cleanup.policy"])
    check("admin-describe-configs", describe_configs)

    def delete():
        resp = admin.delete_topics([scratch], timeout_ms=TIMEOUT * 1000)
        errs = [t for t in resp.topic_error_codes if t[1] != 0]
        expect(not errs, "DeleteTopics v%d answered errors %r" % (resp.API_VERSION, errs))
        deadline = time.time() + 20
        while scratch in admin.list_topics():
            expect(time.time() < deadline, "%s still listed 20s after DeleteTopics" % scratch)
            time.sleep(0.2)
    check("admin-delete-topics", delete)
    admin.close()
    return created


# --------------------------------------------------------------- produce --

def produce(topic, t0):
    producer = KafkaProducer(bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=5,
                             client_id="legacy-kafka-python2")
    note("producer api_version %s" % (producer.config["api_version"],))
    futures = []
    for p in range(PARTITIONS):
        for i in range(PER_PARTITION):
            futures.append((p, i, producer.send(topic, key=key_of(p, i), value=payload(p, i),
                                                partition=p, timestamp_ms=t0 + 1000 * i)))
    producer.flush(TIMEOUT)
    for p, i, fut in futures:
        md = fut.get(timeout=TIMEOUT)
        expect(md.partition == p and md.offset == i,
               "record %d/%d acked at partition %d offset %d, want offset %d" % (p, i, md.partition, md.offset, i))
        expect(md.timestamp == t0 + 1000 * i,
               "record %d/%d acked with timestamp %r, want %d (CreateTime)" % (p, i, md.timestamp, t0 + 1000 * i))
    producer.close(TIMEOUT)


def compare(got, p, first, t0):
    """got: ConsumerRecords of partition p, expected from offset `first` on."""
    for n, r in enumerate(got):
        i = first + n
        expect(r.offset == i, "partition %d: record %d at offset %d, want %d" % (p, n, r.offset, i))
        expect(r.key == key_of(p, i), "partition %d offset %d: key %r, want %r" % (p, i, r.key, key_of(p, i)))
        expect(r.value == payload(p, i), "partition %d offset %d: value %r, want %r" % (p, i, r.value, payload(p, i)))
        expect(r.timestamp == t0 + 1000 * i and r.timestamp_type == 0,
               "partition %d offset %d: timestamp %r type %r, want %d CreateTime(0)" % (
                   p, i, r.timestamp, r.timestamp_type, t0 + 1000 * i))


def poll_until(consumer, done, what):
    """Polls, collecting records per partition, until done(got) or TIMEOUT."""
    got = {p: [] for p in range(PARTITIONS)}
    deadline = time.time() + TIMEOUT
    while not done(got):
        if time.time() > deadline:
            raise AssertionError("%s: not done within %ds; got offsets %r" % (
                what, TIMEOUT, {p: [r.offset for r in rs] for p, rs in got.items()}))
        for tp, records in consumer.poll(timeout_ms=500).items():
            got[tp.partition].extend(records)
    return got


def consume_assigned(topic, t0):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False,
                             client_id="legacy-kafka-python2")
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got = poll_until(consumer, lambda g: all(len(g[p]) >= PER_PARTITION for p in g), "assign + seek_to_beginning")
    consumer.close()
    for p in range(PARTITIONS):
        compare(got[p][:PER_PARTITION], p, 0, t0)


def offsets_for_times(topic, t0):
    consumer = KafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, client_id="legacy-kafka-python2")
    errs = []
    for t, want in ((t0 - 60000, 0), (t0 + 5000, 5), (t0 + 5500, 6), (t0 + 1000 * PER_PARTITION, None)):
        for p in range(PARTITIONS):
            tp = TopicPartition(topic, p)
            got = consumer.offsets_for_times({tp: t})[tp]
            got_offset = got.offset if got is not None else None
            if got_offset != want:
                errs.append("partition %d t0%+dms: %r, want offset %r" % (p, t - t0, got, want))
    consumer.close()
    expect(not errs, "offsets_for_times (ListOffsets by timestamp): " + "; ".join(errs))


# ----------------------------------------------------------------- group --

def group_commit(topic, group, t0):
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             client_id="legacy-kafka-python2")
    got = poll_until(consumer, lambda g: all(g[p] and g[p][-1].offset >= COMMIT_AT - 1 for p in g),
                     "the first group member")
    for p in range(PARTITIONS):
        compare(got[p][:COMMIT_AT], p, 0, t0)
    offsets = {TopicPartition(topic, p): OffsetAndMetadata(COMMIT_AT, "") for p in range(PARTITIONS)}
    consumer.commit(offsets)
    for tp in offsets:
        c = consumer.committed(tp)
        expect(c == COMMIT_AT, "committed(%s) = %r after commit, want %d" % (tp, c, COMMIT_AT))
    consumer.close(autocommit=False)


def group_resume(topic, group, t0):
    # auto_offset_reset=latest: a member that found no commit would start
    # past every record and never finish.
    consumer = KafkaConsumer(topic, bootstrap_servers=BOOTSTRAP, group_id=group,
                             auto_offset_reset="latest", enable_auto_commit=False,
                             client_id="legacy-kafka-python2")
    got = poll_until(consumer, lambda g: all(g[p] and g[p][-1].offset >= PER_PARTITION - 1 for p in g),
                     "the resuming group member")
    consumer.close(autocommit=False)
    for p in range(PARTITIONS):
        expect(got[p][0].offset == COMMIT_AT,
               "partition %d: the new member started at offset %d, want the committed %d" % (
                   p, got[p][0].offset, COMMIT_AT))
        compare(got[p], p, COMMIT_AT, t0)


def main():
    global BOOTSTRAP
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    BOOTSTRAP = sys.argv[1]
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                        format="[kafka-python] %(levelname)s %(name)s: %(message)s")
    print("kafka-python %s on %s, bootstrap %s" % (kafka.__version__, sys.executable, BOOTSTRAP), flush=True)
    if kafka.__version__ != "2.0.2":
        print("FAIL version: kafka.__version__ is %s, not 2.0.2: run this with /usr/bin/python3 "
              "and Debian's python3-kafka (make deps installs it)" % kafka.__version__, flush=True)
        sys.exit(2)
    passed("version")

    run = uuid.uuid4().hex[:8]
    topic = "legacy-kp2-" + run
    scratch = topic + "-scratch"
    group = topic + "-group"
    t0 = int(time.time() * 1000) - 3600 * 1000

    if not admin_checks(topic, scratch):
        note("the topic was not created; the later checks cannot run")
    elif check("produce-acks-all", lambda: produce(topic, t0)) is not None:
        check("consume-assign-from-beginning", lambda: consume_assigned(topic, t0))
        check("offsets-for-times", lambda: offsets_for_times(topic, t0))
        if check("group-consume-commit", lambda: group_commit(topic, group, t0)) is not None:
            check("group-resume-at-commit", lambda: group_resume(topic, group, t0))

    if FAILURES:
        print("FAILED %d: %s" % (len(FAILURES), " ".join(FAILURES)), flush=True)
        sys.exit(1)
    print("ALL PASS", flush=True)


if __name__ == "__main__":
    main()
