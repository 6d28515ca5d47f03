//! The HTTP listener as an operator uses it: scrape `/metrics` on three
//! nodes while a real client (librdkafka) produces and a group commits,
//! and watch the series move with the cluster: bytes in grow, a killed
//! follower makes its leader's partitions under-replicated until it
//! rejoins, a killed active controller hands the gauge to another node,
//! and `/ready` is 503 until a node has registered. Every series the
//! nodes expose is in `runnel::metrics::CATALOGUE` (the README's list).

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::cluster::Cluster;
use common::partition::{others, wait_full_isr};
use common::producer::{BgProducer, Spec};
use common::topics::create_replicated;
use common::{eventually, free_port};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const WITHIN: Duration = Duration::from_secs(60);

/// One sample: metric name, its labels as written (`a="x",b="y"`), value.
type Sample = (String, String, f64);

/// GET `path` from `addr`: (status, body).
fn get(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn scrape(addr: &str) -> Vec<Sample> {
    let (status, body) = get(addr, "/metrics").expect("scrape /metrics");
    assert_eq!(status, 200, "/metrics on {addr}: {body}");
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            Some((name.to_string(), labels.to_string(), value.parse().ok()?))
        })
        .collect()
}

/// The sum of `name`'s samples whose labels contain every one of `with`
/// (`topic="x"`); None if there is none.
fn value(samples: &[Sample], name: &str, with: &[&str]) -> Option<f64> {
    let matching: Vec<f64> = samples
        .iter()
        .filter(|(n, labels, _)| n == name && with.iter().all(|w| labels.contains(w)))
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// The catalogue name a sample belongs to (histograms expose
/// `_bucket`, `_sum` and `_count`).
fn base_name(name: &str) -> &str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix) {
            if runnel::metrics::CATALOGUE
                .iter()
                .any(|(n, k, _, _)| *n == base && *k == runnel::metrics::Kind::Histogram)
            {
                return base;
            }
        }
    }
    name
}

struct Http {
    ports: Vec<u16>,
}

impl Http {
    fn addr(&self, id: i32) -> String {
        format!("127.0.0.1:{}", self.ports[id as usize - 1])
    }
    fn scrape(&self, id: i32) -> Vec<Sample> {
        scrape(&self.addr(id))
    }
    fn ready(&self, id: i32) -> Option<(u16, String)> {
        get(&self.addr(id), "/ready").ok()
    }
}

#[test]
fn metrics_move_with_the_cluster_and_ready_follows_registration() {
    let http = Http {
        ports: (0..3).map(|_| free_port()).collect(),
    };
    let ports = http.ports.clone();
    let mut c =
        Cluster::start_with_node_overrides(3, &["replica.lag.time.max.ms=3000"], &move |id| {
            vec![format!(
                "metrics.listener=127.0.0.1:{}",
                ports[id as usize - 1]
            )]
        });
    for id in 1..=3 {
        eventually(WITHIN, "every node ready", || {
            (http.ready(id)?.0 == 200).then_some(())
        });
        let (status, body) = get(&http.addr(id), "/health").unwrap();
        assert_eq!((status, body.trim()), (200, "ok"));
    }
    let (status, _) = get(&http.addr(1), "/nothing").unwrap();
    assert_eq!(status, 404);

    step!("a real client produces acks=-1 to an RF=3 topic");
    create_replicated(&c, "watched", 1);
    let st = wait_full_isr(&c, "watched", 0, WITHIN);
    let leader = st.leader;
    let producer = BgProducer::start(&c.bootstrap_all(), Spec::continuous("watched", "m"));
    producer.wait_more_acks(200, WITHIN, "first acks");
    let first = http.scrape(leader);
    let bytes_in = |s: &[Sample]| value(s, "runnel_topic_bytes_in_total", &["topic=\"watched\""]);
    let before = bytes_in(&first).expect("bytes in for the topic on its leader");
    producer.wait_more_acks(200, WITHIN, "more acks");
    let grown = eventually(WITHIN, "bytes in to grow", || {
        let now = bytes_in(&http.scrape(leader))?;
        (now > before).then_some(now)
    });
    step!("runnel_topic_bytes_in_total on the leader: {before} then {grown}");
    let s = http.scrape(leader);
    for (name, with) in [
        ("runnel_topic_messages_in_total", vec!["topic=\"watched\""]),
        ("runnel_requests_total", vec!["api=\"Produce\""]),
        (
            "runnel_request_duration_seconds_count",
            vec!["api=\"Produce\""],
        ),
        (
            "runnel_request_duration_seconds_bucket",
            vec!["api=\"Metadata\"", "le=\"+Inf\""],
        ),
        ("runnel_log_fsync_duration_seconds_count", vec![]),
        ("runnel_connections", vec!["listener=\"PLAINTEXT\""]),
        ("runnel_leader_partitions", vec![]),
        ("runnel_raft_term", vec![]),
        ("runnel_raft_commit_index", vec![]),
        ("runnel_metadata_applied_index", vec![]),
        ("runnel_brokers", vec!["state=\"unfenced\""]),
    ] {
        let v = value(&s, name, &with).unwrap_or_else(|| panic!("{name} {with:?} missing"));
        assert!(v > 0.0, "{name} {with:?} = {v}");
    }
    assert_eq!(
        value(&s, "runnel_brokers", &["state=\"unfenced\""]),
        Some(3.0)
    );
    assert_eq!(
        value(&s, "runnel_under_replicated_partitions", &[]),
        Some(0.0)
    );
    eventually(WITHIN, "log size of the partition", || {
        let s = http.scrape(leader);
        let size = value(&s, "runnel_log_size_bytes", &["topic=\"watched\""])?;
        (size > 0.0 && value(&s, "runnel_log_segments", &["topic=\"watched\""])? >= 1.0)
            .then_some(())
    });

    step!("a group commits offset 5: the leader reports its lag");
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", c.bootstrap_all())
        .set("group.id", "lagging")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset("watched", 0, Offset::Offset(5))
        .unwrap();
    consumer
        .commit(&tpl, rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
    let lag_labels = ["group=\"lagging\"", "topic=\"watched\"", "partition=\"0\""];
    let lag = eventually(WITHIN, "group lag on the leader", || {
        value(
            &http.scrape(leader),
            "runnel_group_lag_records",
            &lag_labels,
        )
    });
    assert!(
        lag >= 395.0,
        "lag {lag}: 400 and more were acked past offset 5"
    );

    step!("every exposed series is in the catalogue");
    let mut unknown = BTreeSet::new();
    for id in 1..=3 {
        for (name, _, _) in http.scrape(id) {
            let base = base_name(&name);
            if !runnel::metrics::CATALOGUE
                .iter()
                .any(|(n, _, _, _)| *n == base)
            {
                unknown.insert(name);
            }
        }
    }
    assert!(unknown.is_empty(), "not in metrics::CATALOGUE: {unknown:?}");

    let follower = others(&c, &[leader])[0];
    step!("kill -9 follower {follower}: leader {leader} reports an under-replicated partition");
    c.kill9(follower);
    eventually(WITHIN, "under-replicated to reach 1", || {
        (value(
            &http.scrape(leader),
            "runnel_under_replicated_partitions",
            &[],
        )? >= 1.0)
            .then_some(())
    });
    // Whether the leader's shrink (replica.lag.time.max.ms) or the
    // controller's fencing (broker.session.timeout.ms) takes the follower
    // out of the ISR first is a race; only the leader's counts as a shrink.
    // Its return is always the leader's expansion.
    let expands_before = value(
        &http.scrape(leader),
        "runnel_isr_changes_total",
        &["kind=\"expand\""],
    )
    .unwrap_or(0.0);
    c.restart(follower);
    eventually(WITHIN, "under-replicated back to 0", || {
        (value(
            &http.scrape(leader),
            "runnel_under_replicated_partitions",
            &[],
        )? == 0.0)
            .then_some(())
    });
    eventually(WITHIN, "an ISR expansion counted", || {
        let now = value(
            &http.scrape(leader),
            "runnel_isr_changes_total",
            &["kind=\"expand\""],
        )?;
        (now > expands_before).then_some(())
    });
    let report = producer.finish();
    assert!(
        report.failed.is_empty(),
        "failed: {:?}",
        &report.failed[..report.failed.len().min(5)]
    );

    step!("kill -9 the active controller: the gauge moves to another node");
    let active = |id: i32| value(&http.scrape(id), "runnel_controller_active", &[]);
    let controller = eventually(WITHIN, "one active controller", || {
        let on: Vec<i32> = (1..=3).filter(|&id| active(id) == Some(1.0)).collect();
        (on.len() == 1).then(|| on[0])
    });
    let term = value(&http.scrape(controller), "runnel_raft_term", &[]).unwrap();
    c.kill9(controller);
    let rest = others(&c, &[controller]);
    let next = eventually(WITHIN, "another active controller", || {
        rest.iter().copied().find(|&id| active(id) == Some(1.0))
    });
    let new_term = value(&http.scrape(next), "runnel_raft_term", &[]).unwrap();
    assert!(new_term > term, "term {term} then {new_term}");
    step!("node {next} is the active controller in term {new_term} (was {controller} in {term})");
    let changes = value(&http.scrape(next), "runnel_raft_leader_changes_total", &[]);
    assert!(
        changes >= Some(2.0),
        "leader changes seen by {next}: {changes:?}"
    );
    c.restart(controller);

    step!("/ready is 503 on a node that cannot register, 200 once it has");
    for id in 1..=3 {
        c.kill9(id);
    }
    c.node_mut(1).spawn();
    let (status, why) = eventually(WITHIN, "node 1 to answer /health", || {
        let (h, _) = get(&http.addr(1), "/health").ok()?;
        (h == 200).then(|| http.ready(1)).flatten()
    });
    assert_eq!(status, 503, "/ready with no quorum: {why}");
    step!("node 1 alone: /ready {status} {}", why.trim());
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(http.ready(1).map(|r| r.0), Some(503), "still no quorum");
    c.node_mut(2).spawn();
    eventually(WITHIN, "node 1 ready once a quorum is back", || {
        (http.ready(1)?.0 == 200).then_some(())
    });
}

/// The README's metrics list is the catalogue: every metric named there.
#[test]
fn readme_lists_every_metric() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("read README.md");
    let missing: Vec<&str> = runnel::metrics::CATALOGUE
        .iter()
        .map(|(n, _, _, _)| *n)
        .filter(|n| !readme.contains(&format!("`{n}`")))
        .collect();
    assert!(missing.is_empty(), "not in the README: {missing:?}");
}
