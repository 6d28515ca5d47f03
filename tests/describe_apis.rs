//! The describe APIs that tools call besides Metadata, over raw requests
//! against one node: DescribeTopicPartitions (75), which Kafka 3.7+ tools
//! and the Java AdminClient use, paged by its partition limit and cursor;
//! DescribeLogDirs (35), which UIs use for disk usage.

mod common;

use kafka_protocol::messages::describe_log_dirs_request::DescribableLogDirTopic;
use kafka_protocol::messages::describe_topic_partitions_request::{Cursor, TopicRequest};
use kafka_protocol::messages::{
    DescribeLogDirsRequest, DescribeLogDirsResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use runnel::protocol::build;

use common::topics::raw_create_topic;
use common::{eventually, Node, RawConn};

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// One topic of an answer: (name, error code, partition indexes).
type Listed = (String, i16, Vec<i32>);

/// The topics of an answer, and its cursor (topic, partition).
fn pages(r: &DescribeTopicPartitionsResponse) -> (Vec<Listed>, Option<(String, i32)>) {
    let topics = r
        .topics
        .iter()
        .map(|t| {
            (
                t.name.as_ref().map(|n| n.to_string()).unwrap_or_default(),
                t.error_code,
                t.partitions.iter().map(|p| p.partition_index).collect(),
            )
        })
        .collect();
    let cursor = r
        .next_cursor
        .as_ref()
        .map(|c| (c.topic_name.to_string(), c.partition_index));
    (topics, cursor)
}

#[test]
fn describe_topic_partitions_pages_and_describe_log_dirs_sizes() {
    let node = Node::start(&[("num.partitions", "3")]);
    for t in ["alpha", "beta"] {
        let (code, msg, _) = raw_create_topic(&node.bootstrap(), t, 3).expect("CreateTopics");
        assert_eq!(code, 0, "{t}: {msg:?}");
    }
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    eventually(
        std::time::Duration::from_secs(30),
        "both topics led",
        || {
            let r: DescribeTopicPartitionsResponse = conn
                .roundtrip(
                    0,
                    1,
                    &DescribeTopicPartitionsRequest::default().with_response_partition_limit(100),
                )
                .ok()?;
            let led = r
                .topics
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.leader_id.0 == node.id && p.isr_nodes.len() == 1)
                .count();
            (led == 6).then_some(())
        },
    );

    step!("every topic, 4 partitions per answer: alpha 0-2 and beta 0, then beta 1-2");
    let r: DescribeTopicPartitionsResponse = conn
        .roundtrip(
            0,
            2,
            &DescribeTopicPartitionsRequest::default().with_response_partition_limit(4),
        )
        .expect("DescribeTopicPartitions");
    let (topics, cursor) = pages(&r);
    assert_eq!(
        topics,
        [
            ("alpha".to_string(), 0, vec![0, 1, 2]),
            ("beta".to_string(), 0, vec![0])
        ]
    );
    assert_eq!(cursor, Some(("beta".to_string(), 1)));
    assert_eq!(r.topics[0].partitions[0].replica_nodes.len(), 1);
    assert!(!r.topics[0].topic_id.is_nil());
    let r: DescribeTopicPartitionsResponse = conn
        .roundtrip(
            0,
            3,
            &DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(4)
                .with_cursor(Some(
                    Cursor::default()
                        .with_topic_name(name("beta"))
                        .with_partition_index(1),
                )),
        )
        .expect("DescribeTopicPartitions");
    assert_eq!(pages(&r), (vec![("beta".to_string(), 0, vec![1, 2])], None));

    step!("named topics, one unknown: UNKNOWN_TOPIC_OR_PARTITION (3) for it");
    let r: DescribeTopicPartitionsResponse = conn
        .roundtrip(
            0,
            4,
            &DescribeTopicPartitionsRequest::default()
                .with_response_partition_limit(2000)
                .with_topics(vec![
                    TopicRequest::default().with_name(name("nope")),
                    TopicRequest::default().with_name(name("beta")),
                ]),
        )
        .expect("DescribeTopicPartitions");
    assert_eq!(
        pages(&r).0,
        [
            ("beta".to_string(), 0, vec![0, 1, 2]),
            ("nope".to_string(), 3, vec![])
        ]
    );

    step!("DescribeLogDirs v4 after 50 KB to beta/1: its size, the disk's size");
    let batch = build::values_batch(1_700_000_000_000, &[&[b'x'; 50_000][..]]);
    let (code, _) =
        common::raw_produce(&node.bootstrap(), 9, "beta", 1, batch, 10_000).expect("produce");
    assert_eq!(code, 0);
    let r: DescribeLogDirsResponse = conn
        .roundtrip(4, 5, &DescribeLogDirsRequest::default().with_topics(None))
        .expect("DescribeLogDirs");
    assert_eq!(r.results.len(), 1, "one log dir: {r:?}");
    let dir = &r.results[0];
    assert_eq!(dir.error_code, 0);
    assert_eq!(
        std::path::Path::new(dir.log_dir.as_str()),
        node.data_dir(),
        "log dir"
    );
    assert!(dir.total_bytes > 0 && dir.usable_bytes > 0 && dir.usable_bytes <= dir.total_bytes);
    let sizes: Vec<(String, i32, i64)> = dir
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index, p.partition_size))
        })
        .collect();
    assert_eq!(sizes.len(), 6, "{sizes:?}");
    let beta1 = sizes
        .iter()
        .find(|(t, p, _)| t == "beta" && *p == 1)
        .unwrap();
    assert!(beta1.2 >= 50_000, "beta/1 holds the 50 KB: {sizes:?}");
    assert!(sizes
        .iter()
        .all(|(t, p, s)| (t == "beta" && *p == 1) || *s < 50_000));

    step!("DescribeLogDirs of one partition");
    let r: DescribeLogDirsResponse = conn
        .roundtrip(
            1,
            6,
            &DescribeLogDirsRequest::default().with_topics(Some(vec![
                DescribableLogDirTopic::default()
                    .with_topic(name("alpha"))
                    .with_partitions(vec![2]),
            ])),
        )
        .expect("DescribeLogDirs");
    let listed: Vec<_> = r.results[0]
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .map(move |p| (t.name.to_string(), p.partition_index))
        })
        .collect();
    assert_eq!(listed, [("alpha".to_string(), 2)]);
}
