// The Java Kafka client (Apache kafka-clients 3.9.1, the reference client)
// against a running broker: AdminClient, producer and consumer as a Java
// user drives them, one named check at a time.
//
// Usage: java -cp CLASSES:JARS RunnelCheck BOOTSTRAP REPLICATION_FACTOR [BROKERS]
//   BOOTSTRAP           bootstrap.servers, e.g. 127.0.0.1:9092,127.0.0.1:9093
//   REPLICATION_FACTOR  for the topics the checks create (1 for one node)
//   BROKERS             how many brokers describeCluster must list (default:
//                       the replication factor)
//
// Prints one line per check, "PASS name (ms)" (with " -- note" when there is
// something worth reading) or "FAIL name: reason", then a "SUMMARY" line, and
// exits 1 if any check failed (2 on bad arguments). Each check gives up after
// 30 s and the whole run after 200 s, so that a hung broker fails the run
// instead of hanging it. Topic and group names are unique per run. The jars
// come from tests/java/fetch-jars.sh; tests/java_client.rs compiles and runs
// this file against one node and against a 3-node cluster.
//
// There is no SLF4J binding on the classpath: the client logs nothing (SLF4J
// prints one NOP warning on stderr), so failures are reported through the
// exceptions the client throws.

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collection;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.Properties;
import java.util.Set;
import java.util.TreeMap;
import java.util.UUID;
import java.util.concurrent.Callable;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.function.Predicate;
import java.util.stream.Collectors;

import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AlterConfigOp;
import org.apache.kafka.clients.admin.Config;
import org.apache.kafka.clients.admin.ConfigEntry;
import org.apache.kafka.clients.admin.ConsumerGroupDescription;
import org.apache.kafka.clients.admin.ConsumerGroupListing;
import org.apache.kafka.clients.admin.CreateTopicsResult;
import org.apache.kafka.clients.admin.DescribeClusterResult;
import org.apache.kafka.clients.admin.ListOffsetsResult.ListOffsetsResultInfo;
import org.apache.kafka.clients.admin.MemberDescription;
import org.apache.kafka.clients.admin.NewPartitions;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.admin.TopicDescription;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.clients.consumer.OffsetAndTimestamp;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.clients.producer.RecordMetadata;
import org.apache.kafka.common.ConsumerGroupState;
import org.apache.kafka.common.Metric;
import org.apache.kafka.common.MetricName;
import org.apache.kafka.common.Node;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.TopicPartitionInfo;
import org.apache.kafka.common.Uuid;
import org.apache.kafka.common.config.ConfigResource;
import org.apache.kafka.common.errors.TopicExistsException;
import org.apache.kafka.common.errors.UnknownTopicOrPartitionException;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.TimestampType;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.ByteArraySerializer;

public final class RunnelCheck {
    /** How long one check may run before it is reported as hung. */
    static final long CHECK_TIMEOUT_MS = 30_000;
    /** How long the whole run may take; later checks are then not run. */
    static final long RUN_BUDGET_MS = 200_000;
    /** How long a check waits for something that settles (metadata, ISR, group state). */
    static final long SETTLE_MS = 15_000;
    /** The longest initTransactions() may take to refuse a transactional id. */
    static final long TXN_FAIL_FAST_MS = 2_000;

    /** A check's body: throws to fail, returns a note (or null) to pass. */
    interface Body {
        String run() throws Exception;
    }

    /** A named check that runs only if the checks it needs passed. */
    record Check(String name, List<String> needs, Body body) {}

    /** A check's own verdict (as opposed to an exception from the client). */
    static final class CheckFailed extends RuntimeException {
        private static final long serialVersionUID = 1L;

        CheckFailed(String message) {
            super(message);
        }
    }

    final String bootstrap;
    final int rf;
    final int brokers;
    /** Unique per run, so that reruns against one broker do not collide. */
    final String runId;
    /** Grown by create_partitions; produce_* write here, delete_topics removes all three. */
    final String topic;
    /** One partition of records with known timestamps, for the offset lookups. */
    final String tsTopic;
    /** One partition for the consumer group. */
    final String groupTopic;
    final String group;
    final Admin admin;

    // State that later checks build on.
    /** The timestamps of tsTopic's records, at offsets 0, 1, ... */
    long[] tsTimestamps;
    /** Records produced to groupTopic (partition 0, offsets 0..GROUP_RECORDS-1). */
    static final int GROUP_RECORDS = 20;
    /** How many of them the first group member consumes and commits. */
    static final int GROUP_COMMITTED = 7;
    /** What alter_consumer_group_offsets moves the committed offset to. */
    static final int GROUP_ALTERED = 3;
    /** The second member of the group, left running for the group checks. */
    KafkaConsumer<byte[], byte[]> activeMember;

    RunnelCheck(String bootstrap, int rf, int brokers) {
        this.bootstrap = bootstrap;
        this.rf = rf;
        this.brokers = brokers;
        this.runId = Long.toString(System.currentTimeMillis(), 36) + "-"
                + UUID.randomUUID().toString().substring(0, 6);
        this.topic = "java-check-" + runId;
        this.tsTopic = "java-check-ts-" + runId;
        this.groupTopic = "java-check-group-" + runId;
        this.group = "java-check-group-" + runId;
        this.admin = Admin.create(adminProps());
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 2 || args.length > 3) {
            System.err.println("usage: RunnelCheck BOOTSTRAP REPLICATION_FACTOR [BROKERS]");
            System.exit(2);
        }
        int rf = Integer.parseInt(args[1]);
        int brokers = args.length == 3 ? Integer.parseInt(args[2]) : rf;
        RunnelCheck c = new RunnelCheck(args[0], rf, brokers);
        System.out.printf("run %s against %s: replication factor %d, %d broker(s), kafka-clients %s%n",
                c.runId, c.bootstrap, rf, brokers, org.apache.kafka.common.utils.AppInfoParser.getVersion());
        int failed = c.runAll(c.checks());
        // Client threads (and any check thread that timed out) must not keep
        // the JVM alive.
        System.exit(failed == 0 ? 0 : 1);
    }

    /** The checks, in the order they run. */
    List<Check> checks() {
        List<Check> list = new ArrayList<>();
        list.add(new Check("describe_cluster", List.of(), this::describeCluster));
        list.add(new Check("create_topics", List.of(), this::createTopics));
        list.add(new Check("list_topics", List.of("create_topics"), this::listTopics));
        list.add(new Check("describe_topics", List.of("create_topics"), this::describeTopics));
        list.add(new Check("create_partitions", List.of("create_topics"), this::createPartitions));
        list.add(new Check("list_offsets", List.of("create_topics"), this::listOffsets));
        list.add(new Check("produce_defaults", List.of("create_topics"), this::produceDefaults));
        for (String codec : List.of("none", "gzip", "snappy", "lz4", "zstd")) {
            list.add(new Check("produce_codec_" + codec, List.of("create_topics"), () -> produceCodec(codec)));
        }
        list.add(new Check("consumer_group_commit_resume", List.of("create_topics"), this::groupCommitResume));
        list.add(new Check("consumer_seek_to_beginning", List.of("consumer_group_commit_resume"),
                this::seekToBeginning));
        list.add(new Check("consumer_offsets_for_times", List.of("list_offsets"), this::consumerOffsetsForTimes));
        list.add(new Check("list_consumer_groups", List.of("consumer_group_commit_resume"), this::listGroups));
        list.add(new Check("describe_consumer_groups", List.of("consumer_group_commit_resume"),
                this::describeGroup));
        list.add(new Check("list_consumer_group_offsets", List.of("consumer_group_commit_resume"),
                this::listGroupOffsets));
        list.add(new Check("alter_consumer_group_offsets", List.of("list_consumer_group_offsets"),
                this::alterGroupOffsets));
        list.add(new Check("delete_consumer_groups", List.of("consumer_group_commit_resume"), this::deleteGroup));
        list.add(new Check("describe_configs", List.of("create_topics"), this::describeConfigs));
        list.add(new Check("incremental_alter_configs", List.of("create_topics"), this::incrementalAlterConfigs));
        list.add(new Check("transactional_producer_fails_fast", List.of(), this::transactionalFailsFast));
        list.add(new Check("delete_topics", List.of("create_topics"), this::deleteTopics));
        return list;
    }

    /** Runs the checks one at a time, each bounded; returns how many failed. */
    int runAll(List<Check> checks) {
        ExecutorService pool = Executors.newCachedThreadPool(r -> {
            Thread t = new Thread(r, "check");
            t.setDaemon(true);
            return t;
        });
        long runStart = System.nanoTime();
        Set<String> failed = new HashSet<>();
        List<String> failedInOrder = new ArrayList<>();
        for (Check check : checks) {
            String reason = null;
            String note = null;
            long start = System.nanoTime();
            List<String> missing = check.needs().stream().filter(failed::contains).toList();
            if (!missing.isEmpty()) {
                reason = "not run: needs " + String.join(", ", missing) + ", which failed";
            } else if (ms(runStart) > RUN_BUDGET_MS) {
                reason = "not run: the run's " + RUN_BUDGET_MS / 1000 + " s budget is spent";
            } else {
                Future<String> f = pool.submit(check.body()::run);
                try {
                    note = f.get(CHECK_TIMEOUT_MS, TimeUnit.MILLISECONDS);
                } catch (TimeoutException e) {
                    f.cancel(true);
                    reason = "timed out after " + CHECK_TIMEOUT_MS / 1000 + " s";
                } catch (ExecutionException e) {
                    reason = describe(e.getCause());
                } catch (InterruptedException e) {
                    reason = "interrupted";
                }
            }
            if (reason == null) {
                System.out.println("PASS " + check.name() + " (" + ms(start) + " ms)"
                        + (note == null ? "" : " -- " + note));
            } else {
                failed.add(check.name());
                failedInOrder.add(check.name());
                System.out.println("FAIL " + check.name() + ": " + reason);
            }
            System.out.flush();
        }
        closeQuietly(activeMember);
        admin.close(Duration.ofSeconds(5));
        System.out.println("SUMMARY " + checks.size() + " checks, " + (checks.size() - failed.size())
                + " passed, " + failed.size() + " failed"
                + (failed.isEmpty() ? "" : ": " + String.join(" ", failedInOrder))
                + " (" + ms(runStart) + " ms)");
        System.out.flush();
        return failed.size();
    }

    // ------------------------------------------------------------ clients --

    Properties common(String clientId) {
        Properties p = new Properties();
        p.put("bootstrap.servers", bootstrap);
        p.put("client.id", clientId + "-" + runId);
        p.put("request.timeout.ms", "10000");
        return p;
    }

    Properties adminProps() {
        Properties p = common("check-admin");
        p.put("default.api.timeout.ms", "20000");
        return p;
    }

    /** A producer with the client's defaults (idempotent, acks=all) plus `extra`. */
    KafkaProducer<byte[], byte[]> producer(Map<String, String> extra) {
        Properties p = common("check-producer");
        p.put("key.serializer", ByteArraySerializer.class.getName());
        p.put("value.serializer", ByteArraySerializer.class.getName());
        p.put("delivery.timeout.ms", "25000");
        p.put("max.block.ms", "15000");
        p.putAll(extra);
        return new KafkaProducer<>(p);
    }

    /** A consumer; in `group` if not null, else for assign() only. */
    KafkaConsumer<byte[], byte[]> consumer(String group) {
        Properties p = common("check-consumer");
        p.put("key.deserializer", ByteArrayDeserializer.class.getName());
        p.put("value.deserializer", ByteArrayDeserializer.class.getName());
        p.put("enable.auto.commit", "false");
        p.put("auto.offset.reset", "earliest");
        p.put("default.api.timeout.ms", "20000");
        if (group != null) {
            p.put("group.id", group);
        }
        return new KafkaConsumer<>(p);
    }

    // ------------------------------------------------------- admin checks --

    String describeCluster() throws Exception {
        return eventually("describeCluster to list " + brokers + " broker(s)", () -> {
            DescribeClusterResult r = admin.describeCluster();
            String clusterId = r.clusterId().get();
            Collection<Node> nodes = r.nodes().get();
            Node controller = r.controller().get();
            check(clusterId != null && !clusterId.isEmpty(), "cluster id is " + clusterId);
            check(nodes.size() == brokers, "nodes " + nodes + ", expected " + brokers);
            check(controller != null && controller.id() >= 0, "no controller: " + controller);
            Set<String> boot = Set.of(bootstrap.split(","));
            for (Node n : nodes) {
                check(boot.contains(n.host() + ":" + n.port()),
                        "node " + n + " is not at a bootstrap address " + boot);
            }
            return "cluster id " + clusterId + ", controller " + controller.id() + ", nodes "
                    + nodes.stream().map(Node::id).sorted().toList();
        });
    }

    String createTopics() throws Exception {
        List<NewTopic> topics = List.of(new NewTopic(topic, 3, (short) rf),
                new NewTopic(tsTopic, 1, (short) rf), new NewTopic(groupTopic, 1, (short) rf));
        CreateTopicsResult r = admin.createTopics(topics);
        r.all().get();
        for (NewTopic t : topics) {
            int parts = r.numPartitions(t.name()).get();
            int got = r.replicationFactor(t.name()).get();
            Uuid id = r.topicId(t.name()).get();
            check(parts == t.numPartitions(), t.name() + ": " + parts + " partitions, expected " + t.numPartitions());
            check(got == rf, t.name() + ": replication factor " + got + ", expected " + rf);
            check(id != null && !id.equals(Uuid.ZERO_UUID), t.name() + ": topic id " + id);
        }
        // Creating it again is refused with TOPIC_ALREADY_EXISTS.
        try {
            admin.createTopics(List.of(new NewTopic(topic, 3, (short) rf))).all().get();
            throw new CheckFailed("creating " + topic + " a second time succeeded");
        } catch (ExecutionException e) {
            check(e.getCause() instanceof TopicExistsException,
                    "creating it again: " + describe(e.getCause()) + ", expected TopicExistsException");
        }
        return "3 topics; the second create got TopicExistsException";
    }

    String listTopics() throws Exception {
        return eventually("listTopics to show the new topics", () -> {
            Set<String> names = admin.listTopics().names().get();
            for (String t : List.of(topic, tsTopic, groupTopic)) {
                check(names.contains(t), t + " not in listTopics " + names);
            }
            return names.size() + " topics listed";
        });
    }

    /** Every partition of `t` (`partitions` of them) has a leader and rf replicas, all in sync. */
    String assertTopicHealthy(String t, int partitions) throws Exception {
        return eventually(t + " to have " + partitions + " partitions with ISR size " + rf, () -> {
            TopicDescription d = admin.describeTopics(List.of(t)).allTopicNames().get().get(t);
            check(d.partitions().size() == partitions,
                    d.partitions().size() + " partitions, expected " + partitions);
            check(d.topicId() != null && !d.topicId().equals(Uuid.ZERO_UUID), "topic id " + d.topicId());
            for (TopicPartitionInfo p : d.partitions()) {
                check(p.leader() != null && !p.leader().isEmpty(), "partition " + p.partition() + " has no leader");
                check(p.replicas().size() == rf, "partition " + p.partition() + " replicas " + p.replicas());
                check(p.isr().size() == rf, "partition " + p.partition() + " ISR " + p.isr());
            }
            return d.partitions().stream()
                    .map(p -> p.partition() + ":leader " + p.leader().id() + " isr " + p.isr().size())
                    .collect(Collectors.joining(", "));
        });
    }

    String describeTopics() throws Exception {
        return assertTopicHealthy(topic, 3);
    }

    String createPartitions() throws Exception {
        admin.createPartitions(Map.of(topic, NewPartitions.increaseTo(5))).all().get();
        return "grew 3 -> 5: " + assertTopicHealthy(topic, 5);
    }

    String listOffsets() throws Exception {
        // Ten records an hour ago, a second apart, in several batches (a
        // flush after every fourth), so that a lookup lands inside a batch.
        long base = System.currentTimeMillis() - 3_600_000L;
        int n = 10;
        tsTimestamps = new long[n];
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of("linger.ms", "20"))) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < n; i++) {
                tsTimestamps[i] = base + i * 1000L;
                sent.add(p.send(new ProducerRecord<>(tsTopic, 0, tsTimestamps[i],
                        bytes("ts-" + i), bytes("at " + tsTimestamps[i]))));
                if (i % 4 == 3) {
                    p.flush();
                }
            }
            p.flush();
            for (int i = 0; i < n; i++) {
                long offset = sent.get(i).get().offset();
                check(offset == i, "record " + i + " got offset " + offset);
            }
        }
        TopicPartition tp = new TopicPartition(tsTopic, 0);
        expectOffset(tp, OffsetSpec.earliest(), "earliest", 0, -1);
        expectOffset(tp, OffsetSpec.latest(), "latest", n, -1);
        // The first offset whose timestamp is >= t.
        expectOffset(tp, OffsetSpec.forTimestamp(base - 60_000), "before the first", 0, tsTimestamps[0]);
        expectOffset(tp, OffsetSpec.forTimestamp(tsTimestamps[3]), "exactly the 4th", 3, tsTimestamps[3]);
        expectOffset(tp, OffsetSpec.forTimestamp(tsTimestamps[3] + 1), "just after the 4th", 4, tsTimestamps[4]);
        expectOffset(tp, OffsetSpec.forTimestamp(tsTimestamps[n - 1]), "the last", n - 1, tsTimestamps[n - 1]);
        // After every record: no offset (-1), as Kafka answers.
        expectOffset(tp, OffsetSpec.forTimestamp(tsTimestamps[n - 1] + 1), "after the last", -1, -1);
        return "earliest 0, latest " + n + ", 5 timestamp lookups";
    }

    void expectOffset(TopicPartition tp, OffsetSpec spec, String what, long offset, long timestamp)
            throws Exception {
        ListOffsetsResultInfo info = admin.listOffsets(Map.of(tp, spec)).partitionResult(tp).get();
        check(info.offset() == offset, "listOffsets " + what + ": offset " + info.offset() + ", expected " + offset);
        if (timestamp >= 0) {
            check(info.timestamp() == timestamp,
                    "listOffsets " + what + ": timestamp " + info.timestamp() + ", expected " + timestamp);
        }
    }

    // ---------------------------------------------------- produce checks --

    String produceDefaults() throws Exception {
        // Keys (one null), values (one null, one empty, one binary), headers
        // (repeated keys, a null value), explicit increasing timestamps.
        long base = System.currentTimeMillis() - 60_000;
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        for (int i = 0; i < 30; i++) {
            byte[] key = i == 5 ? null : bytes("key-" + (i % 7));
            byte[] value = switch (i) {
                case 6 -> null;
                case 7 -> new byte[0];
                case 8 -> binary(300);
                default -> bytes("value-" + i);
            };
            List<Header> headers = new ArrayList<>();
            if (i % 2 == 0) {
                headers.add(new RecordHeader("trace", bytes("t-" + i)));
                headers.add(new RecordHeader("dup", bytes("1")));
                headers.add(new RecordHeader("dup", bytes("2")));
                headers.add(new RecordHeader("nothing", (byte[]) null));
            }
            records.add(new ProducerRecord<>(topic, null, base + i * 10L, key, value, headers));
        }
        return roundTrip(Map.of(), records, false);
    }

    String produceCodec(String codec) throws Exception {
        // Compressible values, many per batch (linger), so that each batch is
        // a real compressed multi-record batch.
        long base = System.currentTimeMillis() - 30_000;
        List<ProducerRecord<byte[], byte[]>> records = new ArrayList<>();
        String filler = ("runnel " + codec + " ").repeat(60);
        for (int i = 0; i < 200; i++) {
            List<Header> headers = List.of(new RecordHeader("codec", bytes(codec)),
                    new RecordHeader("i", bytes(Integer.toString(i))));
            records.add(new ProducerRecord<>(topic, null, base + i, bytes(codec + "-" + (i % 10)),
                    bytes(i + " " + filler), headers));
        }
        return roundTrip(Map.of("compression.type", codec, "linger.ms", "50", "batch.size", "65536"),
                records, !codec.equals("none"));
    }

    /**
     * Sends `records` with a producer configured with `extra`, then reads
     * each back at the partition and offset its ack named, comparing key,
     * value, headers, timestamp and timestamp type exactly.
     */
    String roundTrip(Map<String, String> extra, List<ProducerRecord<byte[], byte[]>> records,
            boolean expectCompressed) throws Exception {
        List<RecordMetadata> acks = new ArrayList<>();
        String ratio;
        try (KafkaProducer<byte[], byte[]> p = producer(extra)) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (ProducerRecord<byte[], byte[]> r : records) {
                sent.add(p.send(r));
            }
            p.flush();
            for (Future<RecordMetadata> f : sent) {
                acks.add(f.get());
            }
            Object rate = metric(p, "producer-metrics", "compression-rate-avg");
            ratio = rate instanceof Double d && !d.isNaN() ? String.format("%.2f", d) : String.valueOf(rate);
            if (expectCompressed && rate instanceof Double d && !d.isNaN()) {
                check(d < 0.9, "compression-rate-avg " + d + ": the batches were not compressed");
            }
        }
        // (partition, offset) -> the record sent there.
        Map<TopicPartition, Map<Long, ProducerRecord<byte[], byte[]>>> expected = new LinkedHashMap<>();
        for (int i = 0; i < records.size(); i++) {
            RecordMetadata md = acks.get(i);
            ProducerRecord<byte[], byte[]> r = records.get(i);
            check(md.timestamp() == r.timestamp(),
                    "ack of record " + i + " has timestamp " + md.timestamp() + ", sent " + r.timestamp());
            ProducerRecord<byte[], byte[]> dup = expected
                    .computeIfAbsent(new TopicPartition(md.topic(), md.partition()), k -> new TreeMap<>())
                    .put(md.offset(), r);
            check(dup == null, "two records acknowledged at " + md.partition() + "/" + md.offset());
        }
        int seen = 0;
        try (KafkaConsumer<byte[], byte[]> c = consumer(null)) {
            c.assign(expected.keySet());
            for (var e : expected.entrySet()) {
                c.seek(e.getKey(), ((TreeMap<Long, ?>) e.getValue()).firstKey());
            }
            Map<TopicPartition, Map<Long, ProducerRecord<byte[], byte[]>>> pending = new LinkedHashMap<>();
            expected.forEach((tp, m) -> pending.put(tp, new TreeMap<>(m)));
            long deadline = System.currentTimeMillis() + SETTLE_MS;
            while (pending.values().stream().anyMatch(m -> !m.isEmpty())) {
                check(System.currentTimeMillis() < deadline, "after " + SETTLE_MS + " ms still missing "
                        + pending.entrySet().stream().filter(e -> !e.getValue().isEmpty())
                                .map(e -> e.getKey() + " offsets " + e.getValue().keySet()).toList());
                for (ConsumerRecord<byte[], byte[]> got : c.poll(Duration.ofMillis(200))) {
                    TopicPartition tp = new TopicPartition(got.topic(), got.partition());
                    ProducerRecord<byte[], byte[]> want = pending.getOrDefault(tp, Map.of()).remove(got.offset());
                    if (want != null) {
                        compare(want, got);
                        seen++;
                    }
                }
            }
        }
        return records.size() + " records on " + expected.size() + " partition(s) read back exactly ("
                + seen + " compared), compression-rate-avg " + ratio;
    }

    static void compare(ProducerRecord<byte[], byte[]> want, ConsumerRecord<byte[], byte[]> got) {
        String at = "record at " + got.partition() + "/" + got.offset() + ": ";
        check(Arrays.equals(want.key(), got.key()), at + "key " + show(got.key()) + ", sent " + show(want.key()));
        check(Arrays.equals(want.value(), got.value()),
                at + "value " + show(got.value()) + ", sent " + show(want.value()));
        check(got.timestamp() == want.timestamp(),
                at + "timestamp " + got.timestamp() + ", sent " + want.timestamp());
        check(got.timestampType() == TimestampType.CREATE_TIME, at + "timestamp type " + got.timestampType());
        List<String> wantH = headerList(want.headers());
        List<String> gotH = headerList(got.headers());
        check(wantH.equals(gotH), at + "headers " + gotH + ", sent " + wantH);
    }

    static List<String> headerList(Iterable<Header> headers) {
        List<String> out = new ArrayList<>();
        for (Header h : headers) {
            out.add(h.key() + "=" + show(h.value()));
        }
        return out;
    }

    // --------------------------------------------------- consumer checks --

    String groupCommitResume() throws Exception {
        TopicPartition tp = new TopicPartition(groupTopic, 0);
        try (KafkaProducer<byte[], byte[]> p = producer(Map.of())) {
            for (int i = 0; i < GROUP_RECORDS; i++) {
                p.send(new ProducerRecord<>(groupTopic, 0, bytes("k-" + i), bytes("g-" + i)));
            }
            p.flush();
        }
        // The first member takes GROUP_COMMITTED records, commits after the
        // last of them, and leaves.
        try (KafkaConsumer<byte[], byte[]> first = consumer(group)) {
            first.subscribe(List.of(groupTopic));
            List<ConsumerRecord<byte[], byte[]>> got = pollUntil(first, l -> l.size() >= GROUP_COMMITTED);
            for (int i = 0; i < GROUP_COMMITTED; i++) {
                check(got.get(i).offset() == i, "first member's record " + i + " is at offset " + got.get(i).offset());
                check(str(got.get(i).value()).equals("g-" + i), "offset " + i + " holds " + show(got.get(i).value()));
            }
            first.commitSync(Map.of(tp, new OffsetAndMetadata(GROUP_COMMITTED, "runnel-check")));
            OffsetAndMetadata committed = first.committed(Set.of(tp)).get(tp);
            check(committed != null && committed.offset() == GROUP_COMMITTED,
                    "committed() after commitSync: " + committed);
        }
        // A new member of the group resumes exactly there.
        activeMember = consumer(group);
        activeMember.subscribe(List.of(groupTopic));
        List<ConsumerRecord<byte[], byte[]>> got = pollUntil(activeMember, l -> !l.isEmpty());
        ConsumerRecord<byte[], byte[]> r = got.get(0);
        check(r.offset() == GROUP_COMMITTED && str(r.value()).equals("g-" + GROUP_COMMITTED),
                "the new member started at offset " + r.offset() + " (" + show(r.value()) + "), committed "
                        + GROUP_COMMITTED);
        return "committed " + GROUP_COMMITTED + ", the next member resumed at offset " + r.offset();
    }

    String seekToBeginning() throws Exception {
        KafkaConsumer<byte[], byte[]> c = activeMember;
        TopicPartition tp = new TopicPartition(groupTopic, 0);
        check(c.assignment().equals(Set.of(tp)), "the member's assignment is " + c.assignment());
        c.seekToBeginning(Set.of(tp));
        long pos = c.position(tp);
        check(pos == 0, "position after seekToBeginning is " + pos);
        List<ConsumerRecord<byte[], byte[]>> got = pollUntil(c, l -> !l.isEmpty());
        ConsumerRecord<byte[], byte[]> r = got.get(0);
        check(r.offset() == 0 && str(r.value()).equals("g-0"),
                "after seekToBeginning the first record is at " + r.offset() + " (" + show(r.value()) + ")");
        return "read offset 0 again";
    }

    String consumerOffsetsForTimes() throws Exception {
        TopicPartition tp = new TopicPartition(tsTopic, 0);
        long[] ts = tsTimestamps;
        int n = ts.length;
        try (KafkaConsumer<byte[], byte[]> c = consumer(null)) {
            Duration t = Duration.ofSeconds(20);
            long begin = c.beginningOffsets(List.of(tp), t).get(tp);
            long end = c.endOffsets(List.of(tp), t).get(tp);
            check(begin == 0 && end == n, "beginningOffsets " + begin + ", endOffsets " + end + ", expected 0 and " + n);
            long[][] cases = {{ts[0] - 60_000, 0}, {ts[3], 3}, {ts[3] + 1, 4}, {ts[n - 1], n - 1}};
            for (long[] k : cases) {
                OffsetAndTimestamp ot = c.offsetsForTimes(Map.of(tp, k[0]), t).get(tp);
                check(ot != null && ot.offset() == k[1] && ot.timestamp() == ts[(int) k[1]],
                        "offsetsForTimes(" + k[0] + ") = " + ot + ", expected offset " + k[1]);
            }
            OffsetAndTimestamp none = c.offsetsForTimes(Map.of(tp, ts[n - 1] + 1), t).get(tp);
            check(none == null, "offsetsForTimes after the last record = " + none + ", expected null");
        }
        return "beginning 0, end " + n + ", 5 timestamp lookups";
    }

    // ---------------------------------------------- consumer group admin --

    String listGroups() throws Exception {
        return eventually("listConsumerGroups to show " + group, () -> {
            Collection<ConsumerGroupListing> all = admin.listConsumerGroups().all().get();
            ConsumerGroupListing mine = all.stream().filter(g -> g.groupId().equals(group)).findFirst()
                    .orElseThrow(() -> new CheckFailed(group + " not in "
                            + all.stream().map(ConsumerGroupListing::groupId).toList()));
            return "listed, state " + mine.state().map(Object::toString).orElse("(none)");
        });
    }

    String describeGroup() throws Exception {
        TopicPartition tp = new TopicPartition(groupTopic, 0);
        return eventually(group + " to be Stable with one member", () -> {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
            check(d.state() == ConsumerGroupState.STABLE, "state " + d.state());
            check(!d.isSimpleConsumerGroup(), "a simple consumer group");
            check(d.members().size() == 1, "members " + d.members());
            MemberDescription m = d.members().iterator().next();
            check(m.assignment().topicPartitions().equals(Set.of(tp)), "member assignment " + m.assignment());
            check(d.coordinator() != null && d.coordinator().id() >= 0, "coordinator " + d.coordinator());
            check(d.partitionAssignor() != null && !d.partitionAssignor().isEmpty(),
                    "assignor '" + d.partitionAssignor() + "'");
            return "Stable, member " + m.clientId() + " assigned " + tp + ", assignor " + d.partitionAssignor()
                    + ", coordinator " + d.coordinator().id();
        });
    }

    String listGroupOffsets() throws Exception {
        // The group empties (the member commits nothing on close: auto-commit is off).
        KafkaConsumer<byte[], byte[]> c = activeMember;
        activeMember = null;
        c.close(Duration.ofSeconds(10));
        TopicPartition tp = new TopicPartition(groupTopic, 0);
        Map<TopicPartition, OffsetAndMetadata> offsets =
                admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get();
        OffsetAndMetadata o = offsets.get(tp);
        check(offsets.size() == 1 && o != null, "offsets " + offsets);
        check(o.offset() == GROUP_COMMITTED && "runnel-check".equals(o.metadata()),
                "offset " + o + ", committed " + GROUP_COMMITTED + " with metadata runnel-check");
        return tp + " at " + o.offset() + " (metadata " + o.metadata() + ")";
    }

    String alterGroupOffsets() throws Exception {
        String state = eventually(group + " to be Empty", () -> {
            ConsumerGroupDescription d = admin.describeConsumerGroups(List.of(group)).describedGroups().get(group).get();
            check(d.state() == ConsumerGroupState.EMPTY && d.members().isEmpty(),
                    "state " + d.state() + ", members " + d.members());
            return d.state().toString();
        });
        TopicPartition tp = new TopicPartition(groupTopic, 0);
        admin.alterConsumerGroupOffsets(group, Map.of(tp, new OffsetAndMetadata(GROUP_ALTERED))).all().get();
        OffsetAndMetadata o = admin.listConsumerGroupOffsets(group).partitionsToOffsetAndMetadata().get().get(tp);
        check(o != null && o.offset() == GROUP_ALTERED, "after altering to " + GROUP_ALTERED + ": " + o);
        return "group " + state + ", moved " + GROUP_COMMITTED + " -> " + o.offset();
    }

    String deleteGroup() throws Exception {
        // In case the checks before did not get to close it.
        closeQuietly(activeMember);
        activeMember = null;
        admin.deleteConsumerGroups(List.of(group)).all().get();
        return eventually(group + " to leave listConsumerGroups", () -> {
            Collection<ConsumerGroupListing> all = admin.listConsumerGroups().all().get();
            check(all.stream().noneMatch(g -> g.groupId().equals(group)), group + " still listed");
            return "deleted";
        });
    }

    // ----------------------------------------------------- config checks --

    String describeConfigs() throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        Config cfg = admin.describeConfigs(List.of(res)).all().get().get(res);
        check(cfg != null, "no config for " + topic);
        ConfigEntry cleanup = cfg.get("cleanup.policy");
        ConfigEntry retention = cfg.get("retention.ms");
        check(cleanup != null && "delete".equals(cleanup.value()), "cleanup.policy " + cleanup);
        check(retention != null && retention.value() != null && retention.value().matches("-?[0-9]+"),
                "retention.ms " + retention);
        return cfg.entries().size() + " entries; cleanup.policy=" + cleanup.value() + " (" + cleanup.source()
                + "), retention.ms=" + retention.value() + " (" + retention.source() + ")";
    }

    String incrementalAlterConfigs() throws Exception {
        ConfigResource res = new ConfigResource(ConfigResource.Type.TOPIC, topic);
        String value = "3600000";
        admin.incrementalAlterConfigs(Map.of(res,
                List.of(new AlterConfigOp(new ConfigEntry("retention.ms", value), AlterConfigOp.OpType.SET))))
                .all().get();
        return eventually("describeConfigs to show retention.ms=" + value, () -> {
            ConfigEntry e = admin.describeConfigs(List.of(res)).all().get().get(res).get("retention.ms");
            check(e != null && value.equals(e.value()) && e.source() == ConfigEntry.ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    "retention.ms " + e);
            return "retention.ms=" + e.value() + " (" + e.source() + ")";
        });
    }

    // ------------------------------------------------------ transactions --

    /**
     * The broker has no transactions: a transactional producer must be told
     * so, and quickly, rather than retry until max.block.ms (set to 10 s so
     * that a hang is told apart from a fast refusal).
     */
    String transactionalFailsFast() throws Exception {
        KafkaProducer<byte[], byte[]> p = producer(
                Map.of("transactional.id", "java-check-tx-" + runId, "max.block.ms", "10000"));
        long start = System.nanoTime();
        try {
            p.initTransactions();
            throw new CheckFailed("initTransactions() returned normally after " + ms(start)
                    + " ms, but the broker has no transactions");
        } catch (CheckFailed e) {
            throw e;
        } catch (Exception e) {
            long took = ms(start);
            check(took <= TXN_FAIL_FAST_MS, "initTransactions() threw only after " + took + " ms (limit "
                    + TXN_FAIL_FAST_MS + " ms): " + describe(e));
            return "threw after " + took + " ms: " + describe(e);
        } finally {
            p.close(Duration.ofSeconds(2));
        }
    }

    // ------------------------------------------------------------ topics --

    String deleteTopics() throws Exception {
        List<String> mine = List.of(topic, tsTopic, groupTopic);
        admin.deleteTopics(mine).all().get();
        return eventually("the deleted topics to leave listTopics", () -> {
            Set<String> names = admin.listTopics().names().get();
            List<String> left = mine.stream().filter(names::contains).toList();
            check(left.isEmpty(), "still listed: " + left);
            try {
                admin.describeTopics(List.of(topic)).allTopicNames().get();
                throw new CheckFailed("describeTopics still describes " + topic);
            } catch (ExecutionException e) {
                check(e.getCause() instanceof UnknownTopicOrPartitionException,
                        "describeTopics of a deleted topic: " + describe(e.getCause()));
            }
            return "3 topics deleted";
        });
    }

    // ----------------------------------------------------------- helpers --

    static void check(boolean ok, String failure) {
        if (!ok) {
            throw new CheckFailed(failure);
        }
    }

    /**
     * Runs `f` until it returns without throwing, for up to SETTLE_MS (for
     * what settles after a change: metadata on every broker, ISR, group
     * state); rethrows its last failure.
     */
    static <T> T eventually(String what, Callable<T> f) throws Exception {
        long deadline = System.currentTimeMillis() + SETTLE_MS;
        while (true) {
            try {
                return f.call();
            } catch (Exception e) {
                if (System.currentTimeMillis() >= deadline) {
                    throw new CheckFailed("waited " + SETTLE_MS + " ms for " + what + ": " + describe(e));
                }
                Thread.sleep(200);
            }
        }
    }

    /** Polls until `done` holds of everything polled so far, for up to SETTLE_MS. */
    static List<ConsumerRecord<byte[], byte[]>> pollUntil(KafkaConsumer<byte[], byte[]> c,
            Predicate<List<ConsumerRecord<byte[], byte[]>>> done) {
        List<ConsumerRecord<byte[], byte[]>> got = new ArrayList<>();
        long deadline = System.currentTimeMillis() + SETTLE_MS;
        while (!done.test(got)) {
            check(System.currentTimeMillis() < deadline,
                    "polled " + got.size() + " record(s) in " + SETTLE_MS + " ms (assignment " + c.assignment() + ")");
            c.poll(Duration.ofMillis(200)).forEach(got::add);
        }
        return got;
    }

    static Object metric(KafkaProducer<?, ?> p, String group, String name) {
        for (Map.Entry<MetricName, ? extends Metric> e : p.metrics().entrySet()) {
            if (e.getKey().group().equals(group) && e.getKey().name().equals(name)) {
                return e.getValue().metricValue();
            }
        }
        return null;
    }

    /** An exception and its causes, one "Type: message" each, for a FAIL line. */
    static String describe(Throwable e) {
        List<String> parts = new ArrayList<>();
        for (Throwable t = e; t != null && parts.size() < 4; t = t.getCause()) {
            if (t instanceof ExecutionException && t.getCause() != null) {
                continue;
            }
            String s = t instanceof CheckFailed ? t.getMessage() : t.getClass().getSimpleName() + ": " + t.getMessage();
            if (parts.isEmpty() || !parts.get(parts.size() - 1).contains(Objects.toString(t.getMessage()))) {
                parts.add(s);
            }
            if (t.getCause() == t) {
                break;
            }
        }
        return String.join(" <- ", parts);
    }

    static void closeQuietly(KafkaConsumer<?, ?> c) {
        if (c != null) {
            try {
                c.close(Duration.ofSeconds(5));
            } catch (Exception ignored) {
                // Closing after a failed check: nothing more to report.
            }
        }
    }

    static long ms(long startNanos) {
        return (System.nanoTime() - startNanos) / 1_000_000;
    }

    static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    static String str(byte[] b) {
        return b == null ? "null" : new String(b, StandardCharsets.UTF_8);
    }

    /** Every byte value, repeated to `len` bytes. */
    static byte[] binary(int len) {
        byte[] b = new byte[len];
        for (int i = 0; i < len; i++) {
            b[i] = (byte) i;
        }
        return b;
    }

    /** A short printable form of a key, value or header value. */
    static String show(byte[] b) {
        if (b == null) {
            return "null";
        }
        String s = new String(b, StandardCharsets.UTF_8);
        boolean printable = s.chars().allMatch(ch -> ch >= 0x20 && ch < 0x7f);
        String shown = printable ? "\"" + s + "\"" : b.length + " bytes";
        return shown.length() > 60 ? shown.substring(0, 57) + "...(" + b.length + " bytes)" : shown;
    }
}
