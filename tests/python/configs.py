#!/usr/bin/env python3
"""Topic and broker configs through two independent admin clients:
kafka-python's KafkaAdminClient (describe_configs / alter_configs, its
own protocol code) and confluent-kafka's AdminClient (describe_configs /
incremental_alter_configs, librdkafka). Each change made by one client is
read back by both.

Usage: configs.py BOOTSTRAP TOPIC BROKER_ID   (exit 0 and "OK" on success)
"""
import sys
import time

from kafka import KafkaAdminClient
from kafka.admin import ConfigResource as KPResource, ConfigResourceType as KPType, ConfigSourceType, NewTopic

from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry,
                                   ConfigResource, ConfigSource, ResourceType)


def fail(msg):
    print("FAIL: " + msg, flush=True)
    sys.exit(1)


def kp_configs(admin, rtype, name):
    """{name: (value, source number)} from kafka-python 3's describe_configs."""
    got = admin.describe_configs([KPResource(rtype, name)], config_filter="all")
    entries = got["topic" if rtype == KPType.TOPIC else "broker"][name]
    return {k: (v.get("value"), int(ConfigSourceType[v["config_source"]]))
            for k, v in entries.items()}


def ck_configs(admin, rtype, name):
    res = ConfigResource(rtype, name)
    got = admin.describe_configs([res])[res].result(timeout=30)
    return {k: (v.value, v.source) for k, v in got.items()}


def main():
    bootstrap, topic, broker = sys.argv[1], sys.argv[2], sys.argv[3]
    kp = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30000)
    ck = AdminClient({"bootstrap.servers": bootstrap})

    kp.create_topics([NewTopic(topic, 1, 1, topic_configs={"retention.ms": "3600000"})])
    time.sleep(0.5)

    # A topic override shows as DYNAMIC_TOPIC_CONFIG (1) to both clients.
    got = kp_configs(kp, KPType.TOPIC, topic)
    if got.get("retention.ms") != ("3600000", 1):
        fail("kafka-python sees retention.ms %r" % (got.get("retention.ms"),))
    if got.get("cleanup.policy", (None,))[0] != "delete":
        fail("kafka-python sees cleanup.policy %r" % (got.get("cleanup.policy"),))
    got = ck_configs(ck, ResourceType.TOPIC, topic)
    if got["retention.ms"] != ("3600000", ConfigSource.DYNAMIC_TOPIC_CONFIG.value):
        fail("confluent-kafka sees retention.ms %r" % (got["retention.ms"],))
    # An old client (DescribeConfigs v0, kafka-python pinned to 0.11).
    old = KafkaAdminClient(bootstrap_servers=bootstrap, api_version=(0, 11),
                           request_timeout_ms=30000)
    e = old.describe_configs([KPResource(KPType.TOPIC, topic)], config_filter="all")["topic"][topic]
    if e["retention.ms"].get("value") != "3600000" or "is_default" not in e["retention.ms"]:
        fail("DescribeConfigs v0 answered %r" % (e.get("retention.ms"),))
    old.close()
    print("describe: both clients see the override, and so does DescribeConfigs v0", flush=True)

    # kafka-python alter_configs (the legacy API) replaces every override.
    kp.alter_configs([KPResource(KPType.TOPIC, topic,
                                 configs={"segment.bytes": "1048576", "cleanup.policy": "compact"})],
                     incremental=False, raise_on_unknown=False)
    got = ck_configs(ck, ResourceType.TOPIC, topic)
    if got["segment.bytes"][0] != "1048576" or got["cleanup.policy"][0] != "compact":
        fail("after alter_configs confluent-kafka sees %r %r" % (got["segment.bytes"], got["cleanup.policy"]))
    # (kafka-python sends the other overrides along, as the legacy API
    # replaces them all.)
    print("alter_configs (legacy AlterConfigs): applied", flush=True)

    # confluent-kafka incremental_alter_configs: SET, APPEND, DELETE.
    res = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "7200000", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.APPEND),
        ConfigEntry("segment.bytes", None, incremental_operation=AlterConfigOpType.DELETE),
    ])
    ck.incremental_alter_configs([res])[res].result(timeout=30)
    got = kp_configs(kp, KPType.TOPIC, topic)
    if got["retention.ms"] != ("7200000", 1):
        fail("after incremental SET kafka-python sees retention.ms %r" % (got["retention.ms"],))
    if sorted(got["cleanup.policy"][0].split(",")) != ["compact", "delete"]:
        fail("after APPEND cleanup.policy is %r" % (got["cleanup.policy"],))
    if got["segment.bytes"][1] == 1:
        fail("after DELETE segment.bytes is still an override: %r" % (got["segment.bytes"],))
    print("incremental_alter_configs: SET, APPEND, DELETE", flush=True)

    # A bad value is refused, naming the key, and nothing of the request changes.
    bad = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "1", incremental_operation=AlterConfigOpType.SET),
        ConfigEntry("min.insync.replicas", "zero", incremental_operation=AlterConfigOpType.SET),
    ])
    try:
        ck.incremental_alter_configs([bad])[bad].result(timeout=30)
        fail("a bad min.insync.replicas was accepted")
    except Exception as e:  # KafkaException(INVALID_CONFIG)
        if "min.insync.replicas" not in str(e):
            fail("the refusal does not name the key: %s" % e)
    if kp_configs(kp, KPType.TOPIC, topic)["retention.ms"][0] != "7200000":
        fail("a refused request changed retention.ms")
    print("bad value refused with the key named: nothing changed", flush=True)

    # Broker configs: one broker's, and the cluster default.
    b = ConfigResource(ResourceType.BROKER, broker, incremental_configs=[
        ConfigEntry("log.retention.ms", "5400000", incremental_operation=AlterConfigOpType.SET)])
    ck.incremental_alter_configs([b])[b].result(timeout=30)
    got = ck_configs(ck, ResourceType.BROKER, broker)
    if got["log.retention.ms"] != ("5400000", ConfigSource.DYNAMIC_BROKER_CONFIG.value):
        fail("broker %s log.retention.ms is %r" % (broker, got["log.retention.ms"]))
    kp.alter_configs([KPResource(KPType.BROKER, broker, configs={"log.retention.ms": "5400000",
                                                              "log.segment.bytes": "2097152"})],
                     incremental=False, raise_on_unknown=False)
    got = kp_configs(kp, KPType.BROKER, broker)
    if got["log.segment.bytes"] != ("2097152", 2):
        fail("kafka-python sees broker log.segment.bytes %r" % (got["log.segment.bytes"],))
    if got["log.retention.ms"] != ("5400000", 2):
        fail("kafka-python sees broker log.retention.ms %r" % (got["log.retention.ms"],))
    if got["node.id"][0] != broker:
        fail("broker node.id is %r" % (got["node.id"],))
    # Neither client sends the cluster-wide default (an empty broker name);
    # `runnel configs --entity-default` does (tests/configs.rs).
    got = ck_configs(ck, ResourceType.BROKER, broker)
    if got["log.cleaner.threads"] != ("1", ConfigSource.DEFAULT_CONFIG.value):
        fail("log.cleaner.threads is %r" % (got["log.cleaner.threads"],))
    print("broker configs: set by both clients and read back", flush=True)

    kp.close()
    print("OK", flush=True)


main()
