// sarama_check runs Sarama 1.22.1 (Debian's golang-github-shopify-sarama-dev)
// against a broker with Config.Version pinned to an old Kafka release, which
// fixes the request versions Sarama sends:
//
//	version   Produce        Fetch  Metadata  CreateTopics DeleteTopics ListOffsets OffsetCommit OffsetFetch
//	2.2.0     v3 (batch v2)  v4     v5        v2           v1           v1          v1           v1
//	0.11.0    v3 (batch v2)  v4     v1        v1           v1           v1          v1           v1
//	0.10.2    v2 (msg v1)    v3     v1        v0           v0           v1          v1           v1
//
// DescribeConfigs is always v0 (ListTopics sends it), JoinGroup v1,
// SyncGroup/Heartbeat/LeaveGroup v0, FindCoordinator v0.
//
// Each check prints "PASS name" or "FAIL name: error"; the exit status is 1
// if any failed. Checks run in order (admin, produce, offsets, group) and a
// failing check does not stop the later ones unless they cannot run at all.
//
// Usage: sarama_check -brokers 127.0.0.1:9092 -version 2.2.0 -topic t [-check all|admin,produce,offsets,group]
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/Shopify/sarama"
)

const (
	partitions   = 2
	perPartition = 10
	// The consumer group commits this many records per partition, and a new
	// member must resume at exactly this offset.
	commitAt = 6
	// One check's bound; the whole program's is in main.
	checkTimeout = 30 * time.Second
)

var (
	brokers  []string
	version  sarama.KafkaVersion
	topic    string
	failures []string
	// What the produce check wrote, per partition, for the later checks.
	produced = map[int32][]rec{}
	// The base timestamp of the produced records (ms), record i at t0+1000*i.
	t0 int64
	// Whether this version carries timestamps (message format v1 or v2).
	hasTimestamps bool
)

type rec struct {
	offset int64
	key    []byte
	value  []byte
	ts     int64 // ms; 0 when the version has no timestamps
}

func pass(name string) { fmt.Printf("PASS %s\n", name) }

func fail(name string, format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	fmt.Printf("FAIL %s: %s\n", name, msg)
	failures = append(failures, name)
}

func note(format string, args ...interface{}) {
	fmt.Printf("NOTE %s\n", fmt.Sprintf(format, args...))
}

// bounded runs f with a deadline; a hung Sarama call becomes a FAIL.
func bounded(name string, d time.Duration, f func() error) bool {
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		if err != nil {
			fail(name, "%v", err)
			return false
		}
		pass(name)
		return true
	case <-time.After(d):
		fail(name, "timed out after %v", d)
		return false
	}
}

func config() *sarama.Config {
	c := sarama.NewConfig()
	c.Version = version
	c.ClientID = "sarama-check-" + version.String()
	return c
}

func main() {
	brokersFlag := flag.String("brokers", "127.0.0.1:9092", "comma-separated bootstrap brokers")
	versionFlag := flag.String("version", "2.2.0", "Kafka version Sarama speaks (Config.Version), e.g. 2.2.0, 0.11.0, 0.10.2 (or 0.10.2.0)")
	topicFlag := flag.String("topic", "sarama-check", "topic to create and use")
	checkFlag := flag.String("check", "all", "comma-separated checks: admin, produce, offsets, group (or all)")
	quiet := flag.Bool("quiet", false, "do not print Sarama's own log")
	flag.Parse()

	brokers = strings.Split(*brokersFlag, ",")
	topic = *topicFlag
	// Sarama spells 0.x releases with four parts (0.10.2.0); accept 0.10.2.
	vs := *versionFlag
	if strings.HasPrefix(vs, "0.") && strings.Count(vs, ".") == 2 {
		vs += ".0"
	}
	v, err := sarama.ParseKafkaVersion(vs)
	if err != nil {
		fmt.Printf("FAIL args: %v\n", err)
		os.Exit(2)
	}
	version = v
	hasTimestamps = version.IsAtLeast(sarama.V0_10_0_0)
	if !*quiet {
		sarama.Logger = log.New(os.Stderr, "[sarama] ", log.Ltime|log.Lmicroseconds)
	}
	checks := map[string]bool{}
	for _, c := range strings.Split(*checkFlag, ",") {
		checks[strings.TrimSpace(c)] = true
	}
	all := checks["all"]

	// The whole program's bound, below the test's kill timeout, so that the
	// output says which check was running.
	go func() {
		time.Sleep(110 * time.Second)
		fmt.Printf("FAIL overall: sarama_check did not finish within 110s\n")
		os.Exit(1)
	}()

	fmt.Printf("sarama 1.22.1, Config.Version %s, brokers %v, topic %s\n", version, brokers, topic)

	if all || checks["admin"] {
		checkAdmin()
	}
	if all || checks["produce"] {
		checkProduce()
	}
	if all || checks["offsets"] {
		checkOffsets()
	}
	if all || checks["group"] {
		checkGroup()
	}

	if len(failures) > 0 {
		fmt.Printf("FAILED %d: %s\n", len(failures), strings.Join(failures, " "))
		os.Exit(1)
	}
	fmt.Println("ALL PASS")
}

// ----------------------------------------------------------------- admin --

func checkAdmin() {
	if !version.IsAtLeast(sarama.V0_10_1_0) {
		note("admin skipped: CreateTopics needs >= 0.10.1 in Sarama")
		return
	}
	// DescribeConfigs (ListTopics, DescribeConfig) needs 0.11: below it
	// Sarama refuses to send it (ErrUnsupportedVersion from the client
	// itself, requiredVersion V0_11_0_0), as a real 0.10 broker has none.
	describeConfigs := version.IsAtLeast(sarama.V0_11_0_0)
	if !describeConfigs {
		note("at %s ClusterAdmin sends CreateTopics v0 and DeleteTopics v0; admin-list-topics and admin-describe-config are skipped: "+
			"Sarama will not send DescribeConfigs below 0.11.0 (client-side ErrUnsupportedVersion); topics are listed from the client's metadata instead", version)
	}
	var admin sarama.ClusterAdmin
	if !bounded("admin-connect", checkTimeout, func() error {
		a, err := sarama.NewClusterAdmin(brokers, config())
		admin = a
		return err
	}) {
		return
	}
	defer admin.Close()

	bounded("admin-create-topic", checkTimeout, func() error {
		err := admin.CreateTopic(topic, &sarama.TopicDetail{NumPartitions: partitions, ReplicationFactor: 1}, false)
		if err != nil {
			return fmt.Errorf("CreateTopic(%s, %d partitions): %v", topic, partitions, err)
		}
		return waitForTopic(admin, topic, partitions)
	})

	if describeConfigs {
		bounded("admin-list-topics", checkTimeout, func() error {
			topics, err := admin.ListTopics()
			if err != nil {
				return fmt.Errorf("ListTopics (Metadata v0 + DescribeConfigs v0): %v", err)
			}
			d, ok := topics[topic]
			if !ok {
				return fmt.Errorf("ListTopics does not have %s: %v", topic, keys(topics))
			}
			if d.NumPartitions != partitions || d.ReplicationFactor != 1 {
				return fmt.Errorf("ListTopics[%s] = %d partitions, replication factor %d; want %d, 1", topic, d.NumPartitions, d.ReplicationFactor, partitions)
			}
			if d.ConfigEntries == nil {
				return fmt.Errorf("ListTopics[%s] has no config entries at all (DescribeConfigs answered nothing for it)", topic)
			}
			return nil
		})
	} else {
		bounded("admin-list-topics-metadata", checkTimeout, func() error {
			client, err := sarama.NewClient(brokers, config())
			if err != nil {
				return fmt.Errorf("NewClient: %v", err)
			}
			defer client.Close()
			if err := client.RefreshMetadata(); err != nil {
				return fmt.Errorf("RefreshMetadata (all topics, Metadata v1): %v", err)
			}
			topics, err := client.Topics()
			if err != nil {
				return fmt.Errorf("Topics: %v", err)
			}
			found := false
			for _, t := range topics {
				found = found || t == topic
			}
			if !found {
				return fmt.Errorf("the all-topics metadata does not have %s: %v", topic, topics)
			}
			ps, err := client.Partitions(topic)
			if err != nil || len(ps) != partitions {
				return fmt.Errorf("Partitions(%s) = %v (%v), want %d", topic, ps, err, partitions)
			}
			return nil
		})
	}

	bounded("admin-describe-topics", checkTimeout, func() error {
		md, err := admin.DescribeTopics([]string{topic})
		if err != nil {
			return fmt.Errorf("DescribeTopics: %v", err)
		}
		if len(md) != 1 || md[0].Name != topic {
			return fmt.Errorf("DescribeTopics(%s) answered %d topics", topic, len(md))
		}
		if md[0].Err != sarama.ErrNoError {
			return fmt.Errorf("DescribeTopics(%s): %v", topic, md[0].Err)
		}
		if len(md[0].Partitions) != partitions {
			return fmt.Errorf("DescribeTopics(%s): %d partitions, want %d", topic, len(md[0].Partitions), partitions)
		}
		for _, p := range md[0].Partitions {
			if p.Err != sarama.ErrNoError || p.Leader < 0 || len(p.Replicas) != 1 {
				return fmt.Errorf("DescribeTopics(%s) partition %d: err %v leader %d replicas %v", topic, p.ID, p.Err, p.Leader, p.Replicas)
			}
		}
		return nil
	})

	if describeConfigs {
		bounded("admin-describe-config", checkTimeout, func() error {
			entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: topic})
			if err != nil {
				return fmt.Errorf("DescribeConfig(topic %s) (DescribeConfigs v0): %v", topic, err)
			}
			names := map[string]string{}
			for _, e := range entries {
				names[e.Name] = e.Value
			}
			for _, want := range []string{"retention.ms", "cleanup.policy", "segment.bytes"} {
				if _, ok := names[want]; !ok {
					return fmt.Errorf("DescribeConfig(topic %s) has no %s among %d entries", topic, want, len(entries))
				}
			}
			if names["cleanup.policy"] != "delete" {
				return fmt.Errorf("cleanup.policy = %q, want delete", names["cleanup.policy"])
			}
			return nil
		})
	}

	scratch := topic + "-scratch"
	bounded("admin-delete-topic", checkTimeout, func() error {
		if err := admin.CreateTopic(scratch, &sarama.TopicDetail{NumPartitions: 1, ReplicationFactor: 1}, false); err != nil {
			return fmt.Errorf("CreateTopic(%s): %v", scratch, err)
		}
		if err := waitForTopic(admin, scratch, 1); err != nil {
			return err
		}
		if err := admin.DeleteTopic(scratch); err != nil {
			return fmt.Errorf("DeleteTopic(%s): %v", scratch, err)
		}
		// Look through the all-topics metadata: Metadata v0-v3 for one
		// named topic would auto-create it again, as Kafka does.
		client, err := sarama.NewClient(brokers, config())
		if err != nil {
			return fmt.Errorf("NewClient: %v", err)
		}
		defer client.Close()
		deadline := time.Now().Add(20 * time.Second)
		for {
			err := client.RefreshMetadata()
			topics, _ := client.Topics()
			still := false
			for _, t := range topics {
				still = still || t == scratch
			}
			if err == nil && !still {
				return nil
			}
			if time.Now().After(deadline) {
				if err != nil {
					return fmt.Errorf("after DeleteTopic, RefreshMetadata: %v", err)
				}
				return fmt.Errorf("after DeleteTopic, %s is still listed after 20s", scratch)
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
}

func waitForTopic(admin sarama.ClusterAdmin, name string, n int) error {
	deadline := time.Now().Add(20 * time.Second)
	for {
		md, err := admin.DescribeTopics([]string{name})
		if err == nil && len(md) == 1 && md[0].Err == sarama.ErrNoError && len(md[0].Partitions) == n {
			ok := true
			for _, p := range md[0].Partitions {
				ok = ok && p.Leader >= 0 && p.Err == sarama.ErrNoError
			}
			if ok {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("topic %s not visible with %d led partitions after 20s (last: %v %v)", name, n, md, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func keys(m map[string]sarama.TopicDetail) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// --------------------------------------------------------------- produce --

func payload(p int32, i int) []byte {
	return append([]byte{0, byte(p), byte(i), 0xff, 0xfe}, []byte(fmt.Sprintf(" sarama %s value %d/%d ", version, p, i)+strings.Repeat("x", i*7))...)
}

func checkProduce() {
	client, err := sarama.NewClient(brokers, config())
	if err != nil {
		fail("produce", "NewClient: %v", err)
		return
	}
	defer client.Close()

	now := time.Now()
	t0 = now.Add(-time.Hour).UnixNano() / int64(time.Millisecond)

	ok := bounded("produce-sync-acks-all", checkTimeout, func() error {
		pc := config()
		pc.Producer.RequiredAcks = sarama.WaitForAll
		pc.Producer.Return.Successes = true
		pc.Producer.Partitioner = sarama.NewManualPartitioner
		producer, err := sarama.NewSyncProducer(brokers, pc)
		if err != nil {
			return fmt.Errorf("NewSyncProducer: %v", err)
		}
		defer producer.Close()
		var msgs []*sarama.ProducerMessage
		for p := int32(0); p < partitions; p++ {
			for i := 0; i < perPartition; i++ {
				m := &sarama.ProducerMessage{
					Topic:     topic,
					Partition: p,
					Key:       sarama.ByteEncoder([]byte(fmt.Sprintf("k-%d-%d", p, i))),
					Value:     sarama.ByteEncoder(payload(p, i)),
				}
				if hasTimestamps {
					m.Timestamp = time.Unix(0, (t0+int64(i)*1000)*int64(time.Millisecond))
				}
				msgs = append(msgs, m)
			}
		}
		// The first record of each partition alone (a batch of one), the
		// rest in one SendMessages call (batches of several records).
		for p := 0; p < partitions; p++ {
			m := msgs[p*perPartition]
			if _, _, err := producer.SendMessage(m); err != nil {
				return fmt.Errorf("SendMessage(partition %d, first record): %v", p, err)
			}
		}
		var rest []*sarama.ProducerMessage
		for idx, m := range msgs {
			if idx%perPartition != 0 {
				rest = append(rest, m)
			}
		}
		if err := producer.SendMessages(rest); err != nil {
			if errs, ok := err.(sarama.ProducerErrors); ok && len(errs) > 0 {
				return fmt.Errorf("SendMessages: %d of %d failed, first: %v", len(errs), len(rest), errs[0].Err)
			}
			return fmt.Errorf("SendMessages: %v", err)
		}
		for idx, m := range msgs {
			p, i := int32(idx/perPartition), idx%perPartition
			if m.Partition != p {
				return fmt.Errorf("record %d/%d went to partition %d", p, i, m.Partition)
			}
			if m.Offset != int64(i) {
				return fmt.Errorf("record %d/%d got offset %d, want %d (a fresh topic, sent in order)", p, i, m.Offset, i)
			}
			r := rec{offset: m.Offset, key: []byte(fmt.Sprintf("k-%d-%d", p, i)), value: payload(p, i)}
			if hasTimestamps {
				r.ts = t0 + int64(i)*1000
			}
			produced[p] = append(produced[p], r)
		}
		return nil
	})
	if !ok {
		produced = map[int32][]rec{}
		return
	}

	bounded("consume-partition-from-oldest", checkTimeout, func() error {
		consumer, err := sarama.NewConsumerFromClient(client)
		if err != nil {
			return fmt.Errorf("NewConsumer: %v", err)
		}
		defer consumer.Close()
		for p := int32(0); p < partitions; p++ {
			pc, err := consumer.ConsumePartition(topic, p, sarama.OffsetOldest)
			if err != nil {
				return fmt.Errorf("ConsumePartition(%d, oldest): %v", p, err)
			}
			got, err := take(pc, perPartition, 20*time.Second)
			pc.AsyncClose()
			if err != nil {
				return fmt.Errorf("partition %d: %v", p, err)
			}
			if err := compare(p, got, produced[p]); err != nil {
				return err
			}
		}
		return nil
	})
}

// take reads n messages from a partition consumer.
func take(pc sarama.PartitionConsumer, n int, d time.Duration) ([]*sarama.ConsumerMessage, error) {
	var got []*sarama.ConsumerMessage
	timeout := time.After(d)
	for len(got) < n {
		select {
		case m := <-pc.Messages():
			got = append(got, m)
		case e := <-pc.Errors():
			return got, fmt.Errorf("after %d of %d messages: %v", len(got), n, e.Err)
		case <-timeout:
			return got, fmt.Errorf("only %d of %d messages within %v", len(got), n, d)
		}
	}
	return got, nil
}

func compare(p int32, got []*sarama.ConsumerMessage, want []rec) error {
	if len(got) < len(want) {
		return fmt.Errorf("partition %d: %d messages, want %d", p, len(got), len(want))
	}
	for i, w := range want {
		g := got[i]
		if g.Partition != p || g.Offset != w.offset {
			return fmt.Errorf("partition %d message %d: at partition %d offset %d, want offset %d", p, i, g.Partition, g.Offset, w.offset)
		}
		if !bytes.Equal(g.Key, w.key) {
			return fmt.Errorf("partition %d offset %d: key %q, want %q", p, g.Offset, g.Key, w.key)
		}
		if !bytes.Equal(g.Value, w.value) {
			return fmt.Errorf("partition %d offset %d: value %q, want %q", p, g.Offset, g.Value, w.value)
		}
		if hasTimestamps {
			ts := g.Timestamp.UnixNano() / int64(time.Millisecond)
			if g.Timestamp.IsZero() {
				ts = -1
			}
			if ts != w.ts {
				return fmt.Errorf("partition %d offset %d: timestamp %d, want %d (CreateTime as produced)", p, g.Offset, ts, w.ts)
			}
		}
	}
	return nil
}

// --------------------------------------------------------------- offsets --

func checkOffsets() {
	if len(produced[0]) != perPartition {
		fail("offsets-by-timestamp", "nothing produced (the produce check failed)")
		return
	}
	client, err := sarama.NewClient(brokers, config())
	if err != nil {
		fail("offsets", "NewClient: %v", err)
		return
	}
	defer client.Close()

	bounded("offsets-oldest-newest", checkTimeout, func() error {
		for p := int32(0); p < partitions; p++ {
			oldest, err := client.GetOffset(topic, p, sarama.OffsetOldest)
			if err != nil {
				return fmt.Errorf("GetOffset(%d, oldest): %v", p, err)
			}
			newest, err := client.GetOffset(topic, p, sarama.OffsetNewest)
			if err != nil {
				return fmt.Errorf("GetOffset(%d, newest): %v", p, err)
			}
			if oldest != 0 || newest != perPartition {
				return fmt.Errorf("partition %d: oldest %d newest %d, want 0 %d", p, oldest, newest, perPartition)
			}
		}
		return nil
	})

	if !hasTimestamps {
		note("offsets-by-timestamp skipped: %s has no timestamps", version)
		return
	}
	// Record i has timestamp t0+1000*i; the first with timestamp >= t.
	cases := []struct {
		t    int64
		want int64
		what string
	}{
		{t0 - 60000, 0, "before every record"},
		{t0, 0, "the first record's timestamp"},
		{t0 + 5000, 5, "record 5's timestamp exactly"},
		{t0 + 5500, 6, "between records 5 and 6"},
		{t0 + 1000*(perPartition-1), perPartition - 1, "the last record's timestamp"},
		{t0 + 1000*perPartition, -1, "after every record (Kafka answers offset -1)"},
	}
	bounded("offsets-by-timestamp", checkTimeout, func() error {
		var errs []string
		for p := int32(0); p < partitions; p++ {
			for _, c := range cases {
				got, err := client.GetOffset(topic, p, c.t)
				if err != nil {
					errs = append(errs, fmt.Sprintf("partition %d t0%+dms (%s): %v", p, c.t-t0, c.what, err))
				} else if got != c.want {
					errs = append(errs, fmt.Sprintf("partition %d t0%+dms (%s): offset %d, want %d", p, c.t-t0, c.what, got, c.want))
				}
			}
		}
		if len(errs) > 0 {
			return fmt.Errorf("GetOffset by timestamp (ListOffsets v1): %s", strings.Join(errs, "; "))
		}
		return nil
	})
}

// ----------------------------------------------------------------- group --

// groupHandler collects what one member of the group consumed. In "commit"
// mode it marks records below commitAt and signals when every partition
// reached commitAt-1; in "resume" mode it signals when every partition
// delivered its last record.
type groupHandler struct {
	commit bool
	mu     sync.Mutex
	first  map[int32]*sarama.ConsumerMessage
	last   map[int32]int64
	got    map[int32][]*sarama.ConsumerMessage
	done   chan struct{}
	once   sync.Once
	claims map[string][]int32
}

func newHandler(commit bool) *groupHandler {
	return &groupHandler{
		commit: commit,
		first:  map[int32]*sarama.ConsumerMessage{},
		last:   map[int32]int64{},
		got:    map[int32][]*sarama.ConsumerMessage{},
		done:   make(chan struct{}),
	}
}

func (h *groupHandler) Setup(s sarama.ConsumerGroupSession) error {
	h.mu.Lock()
	h.claims = s.Claims()
	h.mu.Unlock()
	fmt.Printf("  group member %s generation %d claims %v\n", s.MemberID(), s.GenerationID(), s.Claims())
	return nil
}

func (h *groupHandler) Cleanup(sarama.ConsumerGroupSession) error { return nil }

func (h *groupHandler) ConsumeClaim(s sarama.ConsumerGroupSession, c sarama.ConsumerGroupClaim) error {
	for m := range c.Messages() {
		h.mu.Lock()
		if _, ok := h.first[m.Partition]; !ok {
			h.first[m.Partition] = m
		}
		h.last[m.Partition] = m.Offset
		h.got[m.Partition] = append(h.got[m.Partition], m)
		if h.commit && m.Offset < commitAt {
			s.MarkMessage(m, "")
		}
		complete := len(h.first) == partitions
		for p := int32(0); p < partitions && complete; p++ {
			if h.commit {
				complete = h.last[p] >= commitAt-1
			} else {
				complete = h.last[p] >= perPartition-1
			}
		}
		h.mu.Unlock()
		if complete {
			h.once.Do(func() { close(h.done) })
		}
	}
	return nil
}

// runMember joins the group, waits for the handler to finish, then leaves
// (which commits the marked offsets one last time).
func runMember(name, group string, initial int64, h *groupHandler) error {
	gc := config()
	gc.Consumer.Offsets.Initial = initial
	cg, err := sarama.NewConsumerGroup(brokers, group, gc)
	if err != nil {
		return fmt.Errorf("NewConsumerGroup: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	consumed := make(chan error, 1)
	go func() {
		for {
			err := cg.Consume(ctx, []string{topic}, h)
			if err != nil || ctx.Err() != nil {
				consumed <- err
				return
			}
		}
	}()
	var result error
	select {
	case <-h.done:
	case err := <-consumed:
		result = fmt.Errorf("Consume: %v", err)
	case <-time.After(25 * time.Second):
		h.mu.Lock()
		result = fmt.Errorf("%s did not get its records within 25s: claims %v, last offsets %v", name, h.claims, h.last)
		h.mu.Unlock()
	}
	cancel()
	if result == nil {
		select {
		case err := <-consumed:
			if err != nil {
				result = fmt.Errorf("Consume at session end: %v", err)
			}
		case <-time.After(15 * time.Second):
			result = fmt.Errorf("the session did not end within 15s of cancel")
		}
	}
	if err := cg.Close(); err != nil && result == nil {
		result = fmt.Errorf("ConsumerGroup.Close (LeaveGroup, final commit): %v", err)
	}
	return result
}

func checkGroup() {
	if !version.IsAtLeast(sarama.V0_10_2_0) {
		note("group skipped: Sarama's ConsumerGroup needs >= 0.10.2")
		return
	}
	if len(produced[0]) != perPartition {
		fail("group-consume-commit", "nothing produced (the produce check failed)")
		return
	}
	group := topic + "-group"
	first := newHandler(true)
	ok := bounded("group-consume-commit", 50*time.Second, func() error {
		// No committed offset yet: start at the oldest record (the default,
		// OffsetNewest, would skip what the produce check wrote).
		if err := runMember("the first member", group, sarama.OffsetOldest, first); err != nil {
			return err
		}
		for p := int32(0); p < partitions; p++ {
			got := first.got[p]
			n := len(got)
			if n > commitAt {
				n = commitAt
			}
			if err := compare(p, got[:n], produced[p][:commitAt]); err != nil {
				return err
			}
		}
		return nil
	})
	if !ok {
		return
	}

	if version.IsAtLeast(sarama.V0_10_0_0) {
		bounded("group-committed-offsets", checkTimeout, func() error {
			admin, err := sarama.NewClusterAdmin(brokers, config())
			if err != nil {
				return fmt.Errorf("NewClusterAdmin: %v", err)
			}
			defer admin.Close()
			resp, err := admin.ListConsumerGroupOffsets(group, map[string][]int32{topic: {0, 1}})
			if err != nil {
				return fmt.Errorf("ListConsumerGroupOffsets (OffsetFetch v1): %v", err)
			}
			for p := int32(0); p < partitions; p++ {
				b := resp.GetBlock(topic, p)
				if b == nil {
					return fmt.Errorf("no committed offset for partition %d", p)
				}
				if b.Err != sarama.ErrNoError || b.Offset != commitAt {
					return fmt.Errorf("partition %d: committed offset %d (err %v), want %d", p, b.Offset, b.Err, commitAt)
				}
			}
			return nil
		})
	}

	bounded("group-resume-at-commit", 50*time.Second, func() error {
		// The default OffsetNewest: a member that found no commit would
		// start past every record and never finish.
		h := newHandler(false)
		if err := runMember("the resuming member", group, sarama.OffsetNewest, h); err != nil {
			return err
		}
		for p := int32(0); p < partitions; p++ {
			f := h.first[p]
			if f.Offset != commitAt {
				return fmt.Errorf("partition %d: the new member started at offset %d, want the committed %d", p, f.Offset, commitAt)
			}
			if err := compare(p, h.got[p], produced[p][commitAt:]); err != nil {
				return err
			}
		}
		return nil
	})
}
