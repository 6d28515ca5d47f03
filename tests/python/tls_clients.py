#!/usr/bin/env python3
"""Real clients over a TLS listener, for tests/tls.rs.

    tls_clients.py CLIENT MODE BOOTSTRAP CA [CERT KEY]

CLIENT: confluent (confluent-kafka, librdkafka) or kafka-python.
MODE:
  roundtrip  produce 20 records with acks=all to a new topic, read them
             back in a consumer group, list topics with the admin client
  refused    the broker must refuse the client (no usable certificate):
             no metadata within 10 s

Prints PASS/FAIL lines; exits 1 on any FAIL.
"""

import sys
import time
import uuid

client, mode, bootstrap, ca = sys.argv[1:5]
cert, key = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else (None, None)
N = 20
failed = False


def check(ok, what):
    global failed
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    failed |= not ok


def confluent():
    from confluent_kafka import Consumer, KafkaException, Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    conf = {
        "bootstrap.servers": bootstrap,
        "security.protocol": "SSL",
        "ssl.ca.location": ca,
    }
    if cert:
        conf["ssl.certificate.location"] = cert
        conf["ssl.key.location"] = key
    admin = AdminClient(conf)
    if mode == "refused":
        try:
            md = admin.list_topics(timeout=10)
            check(False, f"refused: got metadata with {len(md.brokers)} brokers")
        except KafkaException as e:
            check(True, f"refused: {e.args[0].str()}")
        return
    topic = "tls-" + uuid.uuid4().hex[:8]
    fs = admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    fs[topic].result(30)
    check(topic in admin.list_topics(timeout=10).topics, "admin: created and listed a topic")
    acked = []
    p = Producer(dict(conf, acks="all"))
    for i in range(N):
        p.produce(topic, value=f"v{i}".encode(),
                  on_delivery=lambda err, m: acked.append(m) if err is None else print("ERR", err))
    p.flush(30)
    check(len(acked) == N, f"produce: {len(acked)} of {N} acknowledged")
    c = Consumer(dict(conf, **{"group.id": "g-" + topic, "auto.offset.reset": "earliest"}))
    c.subscribe([topic])
    got = []
    deadline = time.time() + 30
    while len(got) < N and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            got.append(m.value().decode())
    c.commit(asynchronous=False)
    c.close()
    check(got == [f"v{i}" for i in range(N)], f"consume in a group: {len(got)} of {N}, in order")


def kafka_python():
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
    from kafka.admin import NewTopic

    conf = dict(bootstrap_servers=bootstrap, security_protocol="SSL", ssl_cafile=ca,
                ssl_check_hostname=True)
    if cert:
        conf.update(ssl_certfile=cert, ssl_keyfile=key)
    if mode == "refused":
        try:
            a = KafkaAdminClient(request_timeout_ms=10000, **conf)
            topics = a.list_topics()
            check(False, f"refused: listed {len(topics)} topics")
        except Exception as e:  # NoBrokersAvailable and the like
            check(True, f"refused: {type(e).__name__}")
        return
    topic = "tls-" + uuid.uuid4().hex[:8]
    a = KafkaAdminClient(**conf)
    a.create_topics([NewTopic(topic, 1, 1)])
    check(topic in a.list_topics(), "admin: created and listed a topic")
    p = KafkaProducer(acks="all", **conf)
    futures = [p.send(topic, f"v{i}".encode()) for i in range(N)]
    p.flush(30)
    acked = [f for f in futures if f.succeeded()]
    check(len(acked) == N, f"produce: {len(acked)} of {N} acknowledged")
    c = KafkaConsumer(topic, group_id="g-" + topic, auto_offset_reset="earliest",
                      enable_auto_commit=False, **conf)
    got = []
    deadline = time.time() + 30
    while len(got) < N and time.time() < deadline:
        for records in c.poll(timeout_ms=1000).values():
            got.extend(r.value.decode() for r in records)
    c.commit()
    c.close()
    check(got == [f"v{i}" for i in range(N)], f"consume in a group: {len(got)} of {N}, in order")


{"confluent": confluent, "kafka-python": kafka_python}[client]()
sys.exit(1 if failed else 0)
