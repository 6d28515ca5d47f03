//! The failover figures of issue 16, on a three-node loopback cluster
//! (combined broker and controller nodes, replication factor 3,
//! `min.insync.replicas=2`) with the broker settings users get out of the
//! box: the harness's short test sessions are overridden back to 2 s
//! heartbeats and 9 s sessions, and nothing else is tuned; the clients run
//! with librdkafka's defaults (acks=all and idempotence aside).
//!
//! Scenarios (env `SCENARIOS`, a comma list of the short names; default
//! all), each over `RUNS` runs (default 10):
//!
//! * `leader`: kill -9 of a partition's leader under a continuous acks=all
//!   idempotent producer -> the first acknowledgement on that partition of a
//!   write past everything acknowledged there before the kill. Two rows:
//!   leaders that are not the active controller, and the active controller.
//! * `follower`: kill -9 of a follower (neither the partition's leader nor
//!   the active controller) -> the longest gap between acknowledgements on
//!   the partition, from the last one before the kill to 5 s after it.
//! * `returns`: two group members commit every 100 ms; the group's
//!   coordinator is killed, the members commit through the next one, and
//!   the node is restarted -> the longest gap between a member's successful
//!   commits in the 20 s after the restart (when the group moves back), and
//!   the rebalance callbacks in that window.
//! * `controller`: kill -9 of the active controller -> the first
//!   CreateTopics through a survivor that succeeds.
//! * `pause`: SIGSTOP of a partition's leader (not the active controller)
//!   -> the first acknowledgement past what was acknowledged before. Its
//!   producer sets `request.timeout.ms=5000` (librdkafka's default is
//!   30 s): a paused broker closes nothing, so a request sent to it is
//!   retried only once that timeout has passed, and with the default the
//!   figure would be the client's 30 s rather than the broker's failover.
//!
//! Before every run the cluster is whole again: every node runs and is
//! listed by every node, they agree on the active controller, the
//! partitions used have their full ISR (leaders moved back to the
//! preferred replicas, so that each node leads one partition), and acks
//! flow on every partition. Each run prints a line; at the end a Markdown
//! table (also written as JSON to `$FAILOVER_JSON` if set). Then every
//! acknowledged write is read back at its offset: the bench panics if one
//! is missing.
//!
//! The producers are not `common::producer::BgProducer`: the figures need
//! every acknowledgement of one partition, with its time, while the
//! producer runs. They run with librdkafka's defaults, but for acks=all and
//! idempotence (and the pause producer's request timeout).
//!
//! Execution order: leader and follower (one topic and producer), pause
//! (the same topic, its own producer), then returns, then controller; the
//! table lists them in the order.
//!
//! `cargo bench --bench failover`; e.g. `RUNS=2 SCENARIOS=leader,pause`.
//! `FAILOVER_CLIENT_DEBUG=broker,topic,msg` turns on the producers'
//! librdkafka debug log (printed with the step clock).

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::cluster::{metadata_view, Cluster};
use common::partition::{
    consume_all, high_watermark, ids, partition_state, wait_full_isr, wait_state, PState,
};
use common::producer::{key_of, key_of_index, Ack};
use common::topics::create_replicated;
use common::{eventually, RawConn};
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DescribeQuorumRequest, DescribeQuorumResponse,
    ElectLeadersRequest, ElectLeadersResponse, FindCoordinatorRequest, FindCoordinatorResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};
use serde_json::json;

/// The broker defaults (the harness's base settings come first; these
/// win), and the replication the figures are about.
const SETTINGS: &[&str] = &[
    "broker.heartbeat.interval.ms=2000",
    "broker.session.timeout.ms=9000",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];
const SESSION: Duration = Duration::from_secs(9);

const TOPIC: &str = "failover";
const PARTITIONS: i32 = 3;
const GROUP_TOPIC: &str = "failover-group";
const GROUP_PARTITIONS: i32 = 6;
const GROUP: &str = "failover-members";
const MEMBERS: usize = 2;
const COMMIT_EVERY: Duration = Duration::from_millis(100);

/// How long the cluster may take to be whole again between runs.
const WHOLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a run waits for the event it measures before giving up on it.
const FIGURE_TIMEOUT: Duration = Duration::from_secs(60);
const FOLLOWER_WINDOW: Duration = Duration::from_secs(5);
const RETURN_WINDOW: Duration = Duration::from_secs(20);
/// Acks per partition that show writes flow before a run.
const FLOWING: usize = 20;

const SCENARIOS: &[&str] = &["leader", "follower", "returns", "controller", "pause"];

fn main() {
    let runs: usize = std::env::var("RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let chosen: Vec<String> = match std::env::var("SCENARIOS") {
        Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
        _ => SCENARIOS.iter().map(|s| s.to_string()).collect(),
    };
    for s in &chosen {
        assert!(
            SCENARIOS.contains(&s.as_str()),
            "unknown scenario {s:?} in SCENARIOS; known: {SCENARIOS:?}"
        );
    }
    let want = |s: &str| chosen.iter().any(|c| c == s);
    step!("failover bench: {runs} runs of {chosen:?}");

    let mut c = Cluster::start_with(3, SETTINGS);
    let mut rows: Vec<Row> = Vec::new();
    let mut lost: Vec<String> = Vec::new();
    let mut checked: Vec<String> = Vec::new();

    if want("leader") || want("follower") || want("pause") {
        create_replicated(&c, TOPIC, PARTITIONS);
    }
    if want("leader") || want("follower") {
        let feed = Feed::start(&c.bootstrap_all(), TOPIC, PARTITIONS, "f", &[]);
        if want("leader") {
            rows.extend(leader_kills(&mut c, &feed, runs));
        }
        if want("follower") {
            rows.push(follower_kills(&mut c, &feed, runs));
        }
        match check_feed(&mut c, feed) {
            Ok(s) => checked.push(s),
            Err(e) => lost.push(e),
        }
    }
    if want("pause") {
        // A paused broker closes nothing: an idempotent librdkafka
        // producer drains the requests in flight to it before it produces
        // to the new leader, and they end only at the socket timeout (60 s
        // by default), whatever request.timeout.ms says.
        let timeout = [
            ("request.timeout.ms", "5000"),
            ("socket.timeout.ms", "5000"),
        ];
        let feed = Feed::start(&c.bootstrap_all(), TOPIC, PARTITIONS, "s", &timeout);
        rows.push(leader_pauses(&mut c, &feed, runs));
        match check_feed(&mut c, feed) {
            Ok(s) => checked.push(s),
            Err(e) => lost.push(e),
        }
    }
    if want("returns") {
        create_replicated(&c, GROUP_TOPIC, GROUP_PARTITIONS);
        let feed = Feed::start(&c.bootstrap_all(), GROUP_TOPIC, GROUP_PARTITIONS, "g", &[]);
        let members = Members::start(&c.bootstrap_all());
        rows.push(coordinator_returns(&mut c, &feed, &members, runs));
        members.stop();
        match check_feed(&mut c, feed) {
            Ok(s) => checked.push(s),
            Err(e) => lost.push(e),
        }
    }
    if want("controller") {
        rows.push(controller_kills(&mut c, runs));
    }

    rows.sort_by_key(|r| r.order);
    let table = markdown(&rows);
    println!("\nFailover, {runs} runs per scenario (3 nodes, RF 3, min.insync.replicas=2, 9 s broker sessions):\n\n{table}");
    if let Some(path) = std::env::var_os("FAILOVER_JSON") {
        let doc = json!({
            "runs": runs,
            "settings": SETTINGS,
            "rows": rows.iter().map(Row::json).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&doc).expect("json") + "\n";
        std::fs::write(&path, text)
            .unwrap_or_else(|e| panic!("write {}: {e}", path.to_string_lossy()));
        step!("table written to {}", path.to_string_lossy());
    }
    for s in &checked {
        println!("{s}");
    }
    assert!(
        lost.is_empty(),
        "acknowledged writes lost:\n{}",
        lost.join("\n")
    );
}

// ---- the scenarios ----

/// `leader`: RUNS kills of a leader that is not the active controller and
/// RUNS of one that is, alternating.
fn leader_kills(c: &mut Cluster, feed: &Feed, runs: usize) -> Vec<Row> {
    let mut plain = Row::new(
        0,
        "leader",
        "leader kill (not the active controller)",
        "median < 1 s",
    );
    let mut ctl = Row::new(
        1,
        "leader",
        "leader kill (also the active controller)",
        "median < 1 s",
    );
    for run in 1..=runs {
        for (row, is_controller) in [(&mut plain, false), (&mut ctl, true)] {
            let tag = if is_controller {
                format!("leader run {run} (controller)")
            } else {
                format!("leader run {run}")
            };
            let (controller, states) = wait_balanced(c, feed, &tag);
            let Some(p) =
                pick_partition(&states, run, |s| (s.leader == controller) == is_controller)
            else {
                step!("{tag}: skipped: no partition of {TOPIC} is led by {} the active controller {controller} ({states:?})",
                    if is_controller { "" } else { "a node other than" });
                row.notes.push(format!("run {run} skipped: no such leader"));
                continue;
            };
            let leader = states[p as usize].leader;
            let marks = Marks::now(c);
            let killed = Instant::now();
            c.kill9(leader);
            let before = feed.max_offset_on(p);
            let figure = feed.wait_first_past(p, killed, before, FIGURE_TIMEOUT);
            let new = new_leader(c, leader, p);
            let logged = leader_timeline(c, &marks, leader, p);
            match figure {
                Some(ack) => {
                    let ms = ms(ack.at - killed);
                    step!(
                        "{tag}: kill -9 of leader {leader} of {TOPIC}/{p} (active controller {controller}) -> \
                         first ack past offset {before} ({} at {}), new leader {new}: {ms:.0} ms ({logged})",
                        ack.key,
                        ack.offset
                    );
                    if ms > 1000.0 {
                        step!(
                            "{tag}: over 1 s; the nodes logged since the kill:\n{}",
                            marks.explain(c)
                        );
                    }
                    row.values.push(ms);
                }
                None => {
                    step!("{tag}: no ack on {TOPIC}/{p} past offset {before} within {FIGURE_TIMEOUT:?} of the kill ({logged}):\n{}",
                        marks.explain(c));
                    row.timeout(run);
                }
            }
            c.restart(leader);
        }
    }
    plain.judge(|r| r.median() < 1000.0);
    ctl.judge(|r| r.median() < 1000.0);
    vec![plain, ctl]
}

/// `follower`: kill -9 of a follower that is not the active controller;
/// the longest ack gap on the partition around the kill.
fn follower_kills(c: &mut Cluster, feed: &Feed, runs: usize) -> Row {
    let mut row = Row::new(
        2,
        "follower",
        "follower kill: longest ack gap on the partition",
        "< 1 s",
    );
    for run in 1..=runs {
        let tag = format!("follower run {run}");
        let (controller, states) = wait_balanced(c, feed, &tag);
        let p = (run as i32 - 1) % PARTITIONS;
        let st = &states[p as usize];
        let candidates: Vec<i32> = st
            .replicas
            .iter()
            .copied()
            .filter(|&r| r != st.leader && r != controller)
            .collect();
        let Some(&follower) = candidates.get(run % candidates.len().max(1)) else {
            step!("{tag}: skipped: no follower of {TOPIC}/{p} other than the controller ({st:?})");
            row.notes.push(format!("run {run} skipped"));
            continue;
        };
        let marks = Marks::now(c);
        let killed = Instant::now();
        c.kill9(follower);
        let end = killed + FOLLOWER_WINDOW;
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        // The window closes at the first ack after its end, so that a stall
        // across the end counts in full.
        let closing = feed
            .wait_first_past(p, end, -1, FIGURE_TIMEOUT)
            .map(|a| a.at);
        let last_before = feed.last_ack_before(p, killed);
        match (last_before, closing) {
            (Some(from), Some(_)) => {
                let times: Vec<Instant> = std::iter::once(from)
                    .chain(
                        feed.acks_on(p, killed)
                            .iter()
                            .map(|a| a.at)
                            .filter(|&t| t > from),
                    )
                    .take_while(|&t| t <= end)
                    .chain(closing)
                    .collect();
                let (gap, at) = longest_gap(&times);
                let ms = ms(gap);
                step!(
                    "{tag}: kill -9 of follower {follower} of {TOPIC}/{p} (leader {}, controller {controller}): \
                     longest ack gap {ms:.0} ms, from {:+.0} ms to {:+.0} ms of the kill ({} acks in the window; \
                     logged: {follower} fenced {})",
                    st.leader,
                    signed_ms(at, killed),
                    signed_ms(at + gap, killed),
                    times.len(),
                    marks.when(c, &["broker fenced", &format!("broker={follower} ")])
                );
                if ms > 1000.0 {
                    step!(
                        "{tag}: over 1 s; the nodes logged since the kill:\n{}",
                        marks.explain(c)
                    );
                }
                row.values.push(ms);
            }
            _ => {
                step!("{tag}: no ack on {TOPIC}/{p} before the kill or after the window ({last_before:?}, {closing:?}):\n{}",
                    marks.explain(c));
                row.timeout(run);
            }
        }
        c.restart(follower);
    }
    row.judge(|r| r.max() < 1000.0);
    row
}

/// `pause`: SIGSTOP of a leader that is not the active controller, until
/// the partition takes acknowledged writes again; then SIGCONT.
fn leader_pauses(c: &mut Cluster, feed: &Feed, runs: usize) -> Row {
    let target = SESSION + Duration::from_secs(1);
    let mut row = Row::new(
        5,
        "pause",
        "leader SIGSTOP (not the active controller)",
        "< 10 s (9 s session + 1 s)",
    );
    for run in 1..=runs {
        let tag = format!("pause run {run}");
        let (controller, states) = wait_balanced(c, feed, &tag);
        let Some(p) = pick_partition(&states, run, |s| s.leader != controller) else {
            step!("{tag}: skipped: every partition is led by the active controller {controller}");
            row.notes.push(format!("run {run} skipped"));
            continue;
        };
        let leader = states[p as usize].leader;
        let marks = Marks::now(c);
        let stopped = Instant::now();
        c.signal(leader, "STOP");
        let before = feed.max_offset_on(p);
        let figure = feed.wait_first_past(p, stopped, before, FIGURE_TIMEOUT);
        match figure {
            Some(ack) => {
                let took = ack.at - stopped;
                step!(
                    "{tag}: SIGSTOP of leader {leader} of {TOPIC}/{p} (controller {controller}) -> \
                     first ack past offset {before} ({} at {}): {:.0} ms ({})",
                    ack.key,
                    ack.offset,
                    ms(took),
                    leader_timeline(c, &marks, leader, p)
                );
                if took > target {
                    step!(
                        "{tag}: over the target; the nodes logged since SIGSTOP:\n{}",
                        marks.explain(c)
                    );
                }
                row.values.push(ms(took));
            }
            None => {
                step!("{tag}: no ack on {TOPIC}/{p} past offset {before} within {FIGURE_TIMEOUT:?} of SIGSTOP:\n{}",
                    marks.explain(c));
                row.timeout(run);
            }
        }
        c.signal(leader, "CONT");
    }
    row.judge(|r| r.max() < ms(target));
    row
}

/// `returns`: the group's coordinator is killed, the members commit
/// through another broker, the coordinator comes back; the commit gaps and
/// rebalances in the 20 s after it restarts.
fn coordinator_returns(c: &mut Cluster, feed: &Feed, members: &Members, runs: usize) -> Row {
    let mut row = Row::new(
        3,
        "returns",
        "coordinator returns: longest commit gap (20 s after restart)",
        "< 1 s, 0 rebalances",
    );
    let mut rebalances = Vec::new();
    let mut resumed = Vec::new();
    let mut handovers = Vec::new();
    for run in 1..=runs {
        let tag = format!("returns run {run}");
        let (controller, _) = wait_whole(c, GROUP_TOPIC, GROUP_PARTITIONS, Some(feed), &tag);
        members.wait_settled(&tag);
        let coordinator = eventually(WHOLE_TIMEOUT, "the group's coordinator", || {
            coordinator_of(&c.node(1).bootstrap(), GROUP)
        });
        let survivor = ids(c)
            .into_iter()
            .find(|&id| id != coordinator)
            .expect("a survivor");
        let saddr = c.node(survivor).bootstrap();

        let killed = Instant::now();
        c.kill9(coordinator);
        let (mut all_commit, mut gone) = (None, None);
        while all_commit.is_none() || gone.is_none() {
            if killed.elapsed() > FIGURE_TIMEOUT {
                break;
            }
            if all_commit.is_none()
                && (0..MEMBERS).all(|m| members.first_commit_after(m, killed).is_some())
            {
                all_commit = (0..MEMBERS)
                    .filter_map(|m| members.first_commit_after(m, killed))
                    .max();
            }
            if gone.is_none()
                && metadata_view(&saddr).is_ok_and(|v| !v.broker_ids.contains(&coordinator))
            {
                gone = Some(Instant::now());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let next = coordinator_of(&saddr, GROUP);
        let during = members.rebalances_between(killed, Instant::now());
        step!(
            "{tag}: kill -9 of coordinator {coordinator} (controller {controller}): both members committed again \
             after {}, gone from metadata after {}; coordinator now {next:?}; {} rebalance callbacks",
            opt_ms(all_commit, killed),
            opt_ms(gone, killed),
            during.len()
        );
        match all_commit {
            Some(t) => resumed.push(ms(t - killed)),
            None => row.notes.push(format!(
                "run {run}: commits did not resume within {FIGURE_TIMEOUT:?} of the kill"
            )),
        }

        // Watch FindCoordinator while the node comes back.
        let restarted = Instant::now();
        let until = restarted + RETURN_WINDOW;
        let watcher = {
            let saddr = saddr.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<(Instant, Option<i32>)> = Vec::new();
                while Instant::now() < until {
                    let answer = coordinator_of(&saddr, GROUP);
                    if seen.last().map(|s| s.1) != Some(answer) {
                        seen.push((Instant::now(), answer));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                seen
            })
        };
        let marks = Marks::now(c);
        c.restart(coordinator);
        let serving = restarted.elapsed();
        std::thread::sleep(until.saturating_duration_since(Instant::now()));
        let answers = watcher.join().expect("FindCoordinator watcher");
        // Each member's window closes at its first commit after the end.
        let closing = eventually(
            FIGURE_TIMEOUT,
            "a commit from each member after the window",
            || {
                (0..MEMBERS)
                    .map(|m| members.first_commit_after(m, until))
                    .collect::<Option<Vec<_>>>()
            },
        );
        let mut gaps = Vec::new();
        for (m, close) in closing.iter().enumerate() {
            let mut times: Vec<Instant> = members
                .last_commit_before(m, restarted)
                .into_iter()
                .collect();
            times.extend(members.commits_between(m, restarted, until));
            times.push(*close);
            gaps.push(longest_gap(&times));
        }
        let window = members.rebalances_between(restarted, until);
        let handover = answers
            .iter()
            .find(|(_, a)| *a == Some(coordinator))
            .map(|(t, _)| *t);
        let (worst, at) = gaps.iter().copied().max_by_key(|g| g.0).expect("members");
        step!(
            "{tag}: restart of {coordinator} (serving after {:.0} ms): FindCoordinator through {survivor} said {}; \
             handover {}; longest commit gap per member {:?} ms, worst from {:+.0} ms to {:+.0} ms of the restart; \
             {} rebalance callbacks in the window{}",
            ms(serving),
            answers
                .iter()
                .map(|(t, a)| format!("{} at {:+.0} ms", a.map_or("none".into(), |a| a.to_string()), signed_ms(*t, restarted)))
                .collect::<Vec<_>>()
                .join(", "),
            handover.map_or("not seen within the window".to_string(), |t| format!(
                "{:.0} ms after the restart",
                ms(t - restarted)
            )),
            gaps.iter().map(|g| ms(g.0).round()).collect::<Vec<_>>(),
            signed_ms(at, restarted),
            signed_ms(at + worst, restarted),
            window.len(),
            if window.is_empty() {
                String::new()
            } else {
                format!(
                    ": {}",
                    window
                        .iter()
                        .map(|(m, t, what)| format!("member {m} {what} at {:+.0} ms", signed_ms(*t, restarted)))
                        .collect::<Vec<_>>()
                        .join("; ")
                )
            }
        );
        step!(
            "{tag}: the nodes logged since the restart:\n{}",
            marks
                .explain(c)
                .lines()
                .filter(|l| !l.contains("partition role changed") && !l.contains("ISR changed"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        row.values.push(ms(worst));
        rebalances.push(window.len());
        match handover {
            Some(t) => handovers.push(ms(t - restarted)),
            None => row.notes.push(format!(
                "run {run}: no handover back to {coordinator} within 20 s"
            )),
        }
    }
    let total: usize = rebalances.iter().sum();
    row.judge(|r| r.max() < 1000.0 && total == 0);
    row.notes.push(format!(
        "rebalance callbacks in the windows: {total} (per run {rebalances:?})"
    ));
    row.notes.push(if handovers.is_empty() {
        "handover back to the restarted node never seen within the window".to_string()
    } else {
        format!(
            "handover seen in {}/{} runs, median {:.1} s after the restart",
            handovers.len(),
            row.values.len(),
            median(&handovers) / 1000.0
        )
    });
    if !resumed.is_empty() {
        row.notes.push(format!(
            "commits resumed after the coordinator kill: median {:.0} ms, max {:.0} ms",
            median(&resumed),
            max(&resumed)
        ));
    }
    row
}

/// `controller`: kill -9 of the active controller; CreateTopics through a
/// survivor until one succeeds.
fn controller_kills(c: &mut Cluster, runs: usize) -> Row {
    let mut row = Row::new(
        4,
        "controller",
        "controller kill -> CreateTopics succeeds",
        "median < 1 s",
    );
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    for run in 1..=runs {
        let tag = format!("controller run {run}");
        let (controller, _) = wait_whole(c, TOPIC, 0, None, &tag);
        let survivor = ids(c)
            .into_iter()
            .find(|&id| id != controller)
            .expect("a survivor");
        let addr = c.node(survivor).bootstrap();
        let marks = Marks::now(c);
        let killed = Instant::now();
        c.kill9(controller);
        let mut attempt = 0;
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        let done = loop {
            attempt += 1;
            let name = format!("failover-ctl-{run}-{attempt}");
            match create_topic_once(&addr, &name) {
                Ok((0, _)) => break Some(killed.elapsed()),
                Ok((code, msg)) => {
                    *seen
                        .entry(format!("error {code} ({})", msg.unwrap_or_default()))
                        .or_default() += 1
                }
                Err(e) => *seen.entry(format!("io {:?}", e.kind())).or_default() += 1,
            }
            if killed.elapsed() > FIGURE_TIMEOUT {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        match done {
            Some(took) => {
                step!(
                    "{tag}: kill -9 of active controller {controller} -> CreateTopics through {survivor} \
                     succeeded on attempt {attempt}: {:.0} ms; failed attempts: {seen:?} \
                     (logged: new active controller {})",
                    ms(took),
                    marks.when(c, &["controller elected", "active=true"])
                );
                if took > Duration::from_secs(1) {
                    step!(
                        "{tag}: over 1 s; the nodes logged since the kill:\n{}",
                        marks.explain(c)
                    );
                }
                row.values.push(ms(took));
            }
            None => {
                step!(
                    "{tag}: no CreateTopics succeeded within {FIGURE_TIMEOUT:?}: {seen:?}\n{}",
                    marks.explain(c)
                );
                row.timeout(run);
            }
        }
        for (k, n) in seen {
            *errors.entry(k).or_default() += n;
        }
        c.restart(controller);
        eventually(
            WHOLE_TIMEOUT,
            &format!("node {controller} back in the metadata and the quorum"),
            || {
                active_controller(c)?;
                quorum_leader(&c.node(controller).bootstrap())
            },
        );
    }
    row.judge(|r| r.median() < 1000.0);
    if !errors.is_empty() {
        row.notes.push(format!("refused attempts: {errors:?}"));
    }
    row
}

// ---- the cluster between runs ----

/// Waits until the cluster is whole: every node runs, every node lists
/// them all and they agree on the active controller, `partitions` of
/// `topic` have their full ISR, and `feed` gets acks on each. Returns the
/// active controller and the partitions' states.
fn wait_whole(
    c: &mut Cluster,
    topic: &str,
    partitions: i32,
    feed: Option<&Feed>,
    what: &str,
) -> (i32, Vec<PState>) {
    assert_eq!(c.running(), ids(c), "{what}: not every node is running");
    let controller = eventually(
        WHOLE_TIMEOUT,
        &format!("{what}: every node to list every broker and agree on the active controller"),
        || active_controller(c),
    );
    let states = (0..partitions)
        .map(|p| wait_full_isr(c, topic, p, WHOLE_TIMEOUT))
        .collect();
    if let Some(feed) = feed {
        feed.wait_flowing(FLOWING, what);
    }
    (controller, states)
}

/// `wait_whole` for the producer's topic, with each partition led by its
/// preferred replica again (a preferred-leader election if not), so that
/// every node leads one partition.
fn wait_balanced(c: &mut Cluster, feed: &Feed, what: &str) -> (i32, Vec<PState>) {
    let (controller, states) = wait_whole(c, TOPIC, PARTITIONS, Some(feed), what);
    if states.iter().all(|s| s.replicas.first() == Some(&s.leader)) {
        return (controller, states);
    }
    match elect_preferred(&c.node(controller).bootstrap(), TOPIC, PARTITIONS) {
        Ok(results) => step!("{what}: preferred-leader election of {TOPIC}: {results:?}"),
        Err(e) => step!("{what}: preferred-leader election of {TOPIC} failed: {e}"),
    }
    for p in 0..PARTITIONS {
        wait_state(
            c,
            &ids(c),
            TOPIC,
            p,
            WHOLE_TIMEOUT,
            "the preferred replica leading",
            |s| s.replicas.first() == Some(&s.leader),
        );
    }
    wait_whole(c, TOPIC, PARTITIONS, Some(feed), what)
}

/// A partition whose state satisfies `pred`, rotating with the run.
fn pick_partition(states: &[PState], run: usize, pred: impl Fn(&PState) -> bool) -> Option<i32> {
    let fits: Vec<i32> = (0..states.len() as i32)
        .filter(|&p| pred(&states[p as usize]))
        .collect();
    (!fits.is_empty()).then(|| fits[run % fits.len()])
}

/// The active controller, if every node lists every broker and names the
/// same controller, and that node's DescribeQuorum names itself the Raft
/// leader.
fn active_controller(c: &Cluster) -> Option<i32> {
    let all = ids(c);
    let mut named = None;
    for &id in &all {
        let v = c.view(id).ok()?;
        if v.broker_ids != all
            || v.controller_id <= 0
            || named.is_some_and(|n| n != v.controller_id)
        {
            return None;
        }
        named = Some(v.controller_id);
    }
    let named = named?;
    (quorum_leader(&c.node(named).bootstrap())? == named).then_some(named)
}

/// The Raft leader DescribeQuorum through `addr` names.
fn quorum_leader(addr: &str) -> Option<i32> {
    let mut conn = RawConn::connect(addr).ok()?;
    let resp: DescribeQuorumResponse = conn
        .roundtrip(2, 1, &DescribeQuorumRequest::default())
        .ok()?;
    let part = resp.topics.first()?.partitions.first()?;
    (part.error_code == 0 && part.leader_id.0 > 0).then_some(part.leader_id.0)
}

/// Preferred-leader ElectLeaders (v2) of every partition of `topic`:
/// (partition, error code); ELECTION_NOT_NEEDED (84) is fine.
fn elect_preferred(addr: &str, topic: &str, partitions: i32) -> io::Result<Vec<(i32, i16)>> {
    let req = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_timeout_ms(30_000)
        .with_topic_partitions(Some(vec![TopicPartitions::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
            .with_partitions((0..partitions).collect())]));
    let mut conn = RawConn::connect(addr)?;
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(35)))?;
    let resp: ElectLeadersResponse = conn.roundtrip(2, 1, &req)?;
    if resp.error_code != 0 {
        return Err(io::Error::other(format!(
            "ElectLeaders error {}",
            resp.error_code
        )));
    }
    Ok(resp
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (p.partition_id, p.error_code))
        })
        .collect())
}

/// The group's coordinator as FindCoordinator (v3) through `addr` names it.
fn coordinator_of(addr: &str, group: &str) -> Option<i32> {
    let mut conn = RawConn::connect(addr).ok()?;
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(3)))
        .ok()?;
    let req = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let resp: FindCoordinatorResponse = conn.roundtrip(3, 1, &req).ok()?;
    (resp.error_code == 0).then_some(resp.node_id.0)
}

/// One CreateTopics (v4) of a one-partition, replication-factor-1 topic
/// through exactly `addr`: the broker's timeout 5 s, ours 6 s.
fn create_topic_once(addr: &str, name: &str) -> io::Result<(i16, Option<String>)> {
    let mut conn = RawConn::connect(addr)?;
    conn.stream.set_read_timeout(Some(Duration::from_secs(6)))?;
    let req = CreateTopicsRequest::default()
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_string())))
            .with_num_partitions(1)
            .with_replication_factor(1)])
        .with_timeout_ms(5000);
    let resp: CreateTopicsResponse = conn.roundtrip(4, 7, &req)?;
    let t = resp
        .topics
        .first()
        .ok_or_else(|| io::Error::other("CreateTopics answered no topic"))?;
    Ok((
        t.error_code,
        t.error_message.as_ref().map(|m| m.to_string()),
    ))
}

/// The leader of `TOPIC`/`p` as a node other than `dead` sees it now.
fn new_leader(c: &Cluster, dead: i32, p: i32) -> String {
    ids(c)
        .into_iter()
        .filter(|&id| id != dead)
        .find_map(|id| partition_state(&c.node(id).bootstrap(), TOPIC, p).ok())
        .map_or("unknown".into(), |s| {
            format!("{} (epoch {})", s.leader, s.leader_epoch)
        })
}

/// What the nodes log about failover, for a figure over its target.
const EXPLAIN: &[&str] = &[
    "broker session ended",
    "broker fenced",
    "broker unfenced",
    "registered with the controller",
    "no active controller",
    "controller elected",
    "partition role changed",
    "ISR changed",
    "coordinates consumer groups",
    "coordinating these groups",
];

/// Where the nodes' logs end at a moment (a kill, a restart), to read what
/// they logged after it, timed on their clock (UTC time of day).
struct Marks {
    /// Seconds since midnight UTC.
    at: f64,
    ends: Vec<(i32, usize)>,
}

impl Marks {
    fn now(c: &Cluster) -> Marks {
        Marks {
            at: log_clock(),
            ends: c.nodes.iter().map(|n| (n.id, n.log().len())).collect(),
        }
    }

    /// The lines logged since the mark that contain all of `needles`:
    /// (ms after the mark, node, line), in time order.
    fn lines(&self, c: &Cluster, needles: &[&str]) -> Vec<(f64, i32, String)> {
        let mut out = Vec::new();
        for &(id, end) in &self.ends {
            let log = c.node(id).log();
            for l in log.get(end..).unwrap_or_default().lines() {
                if needles.iter().all(|n| l.contains(n)) {
                    let at = line_clock(l).map_or(f64::NAN, |t| {
                        let d = t - self.at;
                        // Across midnight.
                        1000.0 * if d < -43_200.0 { d + 86_400.0 } else { d }
                    });
                    out.push((at, id, l.to_string()));
                }
            }
        }
        out.sort_by(|x, y| x.0.total_cmp(&y.0));
        out
    }

    /// ms after the mark of the first line with all of `needles`.
    fn first(&self, c: &Cluster, needles: &[&str]) -> Option<f64> {
        self.lines(c, needles).first().map(|l| l.0)
    }

    /// "+NNN ms" of `first`, or "not logged".
    fn when(&self, c: &Cluster, needles: &[&str]) -> String {
        self.first(c, needles)
            .map_or("not logged".into(), |t| format!("+{t:.0} ms"))
    }

    /// The `EXPLAIN` lines since the mark, one per line, each with its
    /// time after the mark.
    fn explain(&self, c: &Cluster) -> String {
        let mut all: Vec<(f64, i32, String)> =
            EXPLAIN.iter().flat_map(|n| self.lines(c, &[n])).collect();
        all.sort_by(|x, y| x.0.total_cmp(&y.0));
        all.iter()
            .map(|(t, id, l)| format!("  {t:+7.0} ms node {id}: {l}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Seconds since midnight UTC: the clock of the nodes' log lines.
fn log_clock() -> f64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() % 86_400) as f64 + f64::from(d.subsec_nanos()) / 1e9
}

/// The time of day of a log line "2026-12-02T13:16:50.400292Z  INFO ...".
fn line_clock(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?;
    let time = stamp.split_once('T')?.1.trim_end_matches('Z');
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// What the nodes logged of a leader change of `TOPIC`/`p` after `dead`
/// stopped serving: when `dead` was fenced and when the new leader took
/// over (and when a new controller was elected, if any), after the mark.
fn leader_timeline(c: &Cluster, marks: &Marks, dead: i32, p: i32) -> String {
    let fenced = format!("broker={dead} ");
    let partition = format!("partition={p} ");
    let topic = format!("topic={TOPIC} ");
    let mut s = format!(
        "logged: {dead} fenced {}, new leader {}",
        marks.when(c, &["broker fenced", &fenced]),
        marks.when(
            c,
            &["partition role changed", &topic, &partition, "role=Leader"]
        )
    );
    if let Some(t) = marks.first(c, &["controller elected", "active=true"]) {
        s.push_str(&format!(", new active controller +{t:.0} ms"));
    }
    s
}

// ---- the producer ----

/// A continuous acks=all idempotent producer to every partition of a
/// topic in turn, 2 ms between sends, recording every acknowledgement.
struct Feed {
    topic: String,
    partitions: i32,
    acks: Arc<Mutex<Vec<Ack>>>,
    failed: Arc<Mutex<Vec<(String, String)>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<u64>>,
}

struct Recorder {
    acks: Arc<Mutex<Vec<Ack>>>,
    failed: Arc<Mutex<Vec<(String, String)>>>,
}

impl ClientContext for Recorder {
    /// librdkafka's log, with the step log's clock (its `debug` contexts
    /// when `FAILOVER_CLIENT_DEBUG` names them).
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!(
            "[{}] producer {level:?} {fac}: {log_message}",
            common::elapsed()
        );
    }
}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        // One delivery thread: the acks are recorded in time order.
        let at = Instant::now();
        match result {
            Ok(m) => self.acks.lock().expect("acks").push(Ack {
                key: key_of(m),
                partition: m.partition(),
                offset: m.offset(),
                at,
            }),
            Err((e, m)) => self
                .failed
                .lock()
                .expect("failed")
                .push((key_of(m), e.to_string())),
        }
    }
}

impl Feed {
    /// A producer with librdkafka's defaults but for acks=all, idempotence
    /// and `extra`.
    fn start(
        bootstrap: &str,
        topic: &str,
        partitions: i32,
        prefix: &str,
        extra: &[(&str, &str)],
    ) -> Feed {
        let acks = Arc::new(Mutex::new(Vec::new()));
        let failed = Arc::new(Mutex::new(Vec::new()));
        let mut config = ClientConfig::new();
        if let Ok(contexts) = std::env::var("FAILOVER_CLIENT_DEBUG") {
            config
                .set("debug", contexts)
                .set_log_level(RDKafkaLogLevel::Debug);
        }
        config
            .set("bootstrap.servers", bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true");
        for (key, value) in extra {
            config.set(*key, *value);
        }
        // Otherwise librdkafka's defaults, as users run it.
        let producer: ThreadedProducer<Recorder> = config
            .create_with_context(Recorder {
                acks: Arc::clone(&acks),
                failed: Arc::clone(&failed),
            })
            .expect("create producer");
        step!("producer {prefix}: acks=all, idempotent, to {topic}/0..{partitions}, 2 ms between sends, {extra:?}");
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let (stop, topic, prefix) = (Arc::clone(&stop), topic.to_string(), prefix.to_string());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let key = key_of_index(&prefix, i);
                    let p = (i % partitions as u64) as i32;
                    match producer.send(BaseRecord::to(&topic).partition(p).key(&key).payload(&key))
                    {
                        Ok(()) => {
                            i += 1;
                            std::thread::sleep(Duration::from_millis(2));
                        }
                        // Queue full: let deliveries drain.
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                if let Err(e) = producer.flush(Duration::from_secs(60)) {
                    eprintln!("producer {prefix} flush: {e}");
                }
                i
            })
        };
        Feed {
            topic: topic.to_string(),
            partitions,
            acks,
            failed,
            stop,
            handle: Some(handle),
        }
    }

    /// The acks on `p` that arrived at or after `from`, in time order.
    fn acks_on(&self, p: i32, from: Instant) -> Vec<Ack> {
        let acks = self.acks.lock().expect("acks");
        let mut v: Vec<Ack> = acks
            .iter()
            .rev()
            .take_while(|a| a.at >= from)
            .filter(|a| a.partition == p)
            .cloned()
            .collect();
        v.reverse();
        v
    }

    /// When the last ack on `p` at or before `t` arrived.
    fn last_ack_before(&self, p: i32, t: Instant) -> Option<Instant> {
        let acks = self.acks.lock().expect("acks");
        acks.iter()
            .rev()
            .filter(|a| a.partition == p)
            .find(|a| a.at <= t)
            .map(|a| a.at)
    }

    fn max_offset_on(&self, p: i32) -> i64 {
        let acks = self.acks.lock().expect("acks");
        acks.iter()
            .filter(|a| a.partition == p)
            .map(|a| a.offset)
            .max()
            .unwrap_or(-1)
    }

    /// The first ack on `p` after `t` of an offset above `above`.
    fn first_past(&self, p: i32, t: Instant, above: i64) -> Option<Ack> {
        let acks = self.acks.lock().expect("acks");
        acks.iter()
            .rev()
            .take_while(|a| a.at > t)
            .filter(|a| a.partition == p && a.offset > above)
            .last()
            .cloned()
    }

    /// Waits (up to `within`) for `first_past`.
    fn wait_first_past(&self, p: i32, t: Instant, above: i64, within: Duration) -> Option<Ack> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(a) = self.first_past(p, t, above) {
                return Some(a);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Waits until every partition has had `n` acks from now.
    fn wait_flowing(&self, n: usize, what: &str) {
        let from = Instant::now();
        let deadline = from + WHOLE_TIMEOUT;
        loop {
            let got: Vec<usize> = (0..self.partitions)
                .map(|p| self.acks_on(p, from).len())
                .collect();
            if got.iter().all(|&g| g >= n) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: acks on {} per partition within {WHOLE_TIMEOUT:?}: {got:?}; last failures {:?}",
                self.topic,
                self.failed.lock().expect("failed").iter().rev().take(3).collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops, waits for every delivery report: (acks, failures, sent).
    fn finish(mut self) -> (Vec<Ack>, Vec<(String, String)>, u64) {
        self.stop.store(true, Ordering::SeqCst);
        let sent = self
            .handle
            .take()
            .map(|h| h.join().expect("producer thread"))
            .unwrap_or_default();
        let acks = std::mem::take(&mut *self.acks.lock().expect("acks"));
        let failed = std::mem::take(&mut *self.failed.lock().expect("failed"));
        (acks, failed, sent)
    }
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Stops `feed` and reads every partition back up to its high watermark:
/// a summary, or which acknowledged writes are not at their offset.
fn check_feed(c: &mut Cluster, feed: Feed) -> Result<String, String> {
    let (topic, partitions) = (feed.topic.clone(), feed.partitions);
    let (acks, failed, sent) = feed.finish();
    wait_whole(c, &topic, partitions, None, "the read-back");
    let mut lost = Vec::new();
    for p in 0..partitions {
        let (_, hw) = high_watermark(c, &ids(c), &topic, p);
        let log: HashMap<i64, String> = consume_all(&c.bootstrap_all(), &topic, p, hw)
            .into_iter()
            .collect();
        lost.extend(
            acks.iter()
                .filter(|a| a.partition == p && log.get(&a.offset) != Some(&a.key))
                .map(|a| format!("{}/{p}@{} {} (HW {hw})", topic, a.offset, a.key)),
        );
    }
    let summary = format!(
        "{topic}: {} acknowledged writes of {sent} sent, {} failed; {} not read back at their offsets",
        acks.len(),
        failed.len(),
        lost.len()
    );
    step!("{summary}");
    if lost.is_empty() {
        Ok(summary)
    } else {
        Err(format!("{summary}: {:?}", &lost[..lost.len().min(10)]))
    }
}

// ---- the consumer group ----

#[derive(Default)]
struct GroupLog {
    /// Per member, commits with nothing new to commit.
    empty: Vec<usize>,
    /// Per member, when each successful commit returned.
    commits: Vec<Vec<Instant>>,
    /// Per member, refused commits.
    refused: Vec<usize>,
    /// The last refusal.
    last_refusal: Option<String>,
    /// (member, when, what) of every rebalance callback.
    rebalances: Vec<(usize, Instant, String)>,
}

impl GroupLog {
    /// Records the outcome of member `m`'s commit, which just returned.
    fn commit(&mut self, m: usize, result: KafkaResult<()>) {
        match result {
            Ok(()) => self.commits[m].push(Instant::now()),
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => self.empty[m] += 1,
            Err(e) => {
                self.refused[m] += 1;
                self.last_refusal = Some(format!("member {m}: {e}"));
            }
        }
    }
}

struct MemberCtx {
    id: usize,
    log: Arc<Mutex<GroupLog>>,
}

impl ClientContext for MemberCtx {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        eprintln!(
            "[{}] member {} {level:?} {fac}: {log_message}",
            common::elapsed(),
            self.id
        );
    }
}

impl ConsumerContext for MemberCtx {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let what = match rebalance {
            Rebalance::Assign(tpl) => format!("assign {:?}", partitions_of(tpl)),
            Rebalance::Revoke(tpl) => format!("revoke {:?}", partitions_of(tpl)),
            Rebalance::Error(e) => format!("rebalance error {e}"),
        };
        step!("member {}: {what}", self.id);
        let mut log = self.log.lock().expect("group log");
        log.rebalances.push((self.id, Instant::now(), what));
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<i32> {
    tpl.elements().iter().map(|e| e.partition()).collect()
}

/// Two group members of `GROUP` on `GROUP_TOPIC`, each polling on its own
/// thread and committing its position (synchronously) every 100 ms;
/// librdkafka's default session timeout.
struct Members {
    log: Arc<Mutex<GroupLog>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<u64>>,
}

impl Members {
    fn start(bootstrap: &str) -> Members {
        let log = Arc::new(Mutex::new(GroupLog {
            commits: vec![Vec::new(); MEMBERS],
            empty: vec![0; MEMBERS],
            refused: vec![0; MEMBERS],
            last_refusal: None,
            rebalances: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let threads = (0..MEMBERS)
            .map(|id| {
                let (log, stop, bootstrap) =
                    (Arc::clone(&log), Arc::clone(&stop), bootstrap.to_string());
                std::thread::spawn(move || {
                    let mut config = ClientConfig::new();
                    if let Ok(contexts) = std::env::var("FAILOVER_CLIENT_DEBUG") {
                        config
                            .set("debug", contexts)
                            .set_log_level(RDKafkaLogLevel::Debug);
                    }
                    let cons: BaseConsumer<MemberCtx> = config
                        .set("bootstrap.servers", &bootstrap)
                        .set("group.id", GROUP)
                        .set("client.id", format!("member-{id}"))
                        .set("enable.auto.commit", "false")
                        .set("auto.offset.reset", "earliest")
                        .create_with_context(MemberCtx {
                            id,
                            log: Arc::clone(&log),
                        })
                        .expect("create consumer");
                    cons.subscribe(&[GROUP_TOPIC]).expect("subscribe");
                    let (mut consumed, mut last_commit) = (0u64, Instant::now());
                    while !stop.load(Ordering::SeqCst) {
                        if let Some(Ok(_)) = cons.poll(Duration::from_millis(20)) {
                            consumed += 1;
                        }
                        if last_commit.elapsed() >= COMMIT_EVERY {
                            last_commit = Instant::now();
                            // Synchronous: librdkafka reports an async
                            // manual commit to no callback of this crate.
                            // Waiting for a coordinator blocks here, which
                            // is the gap measured.
                            let result = cons.commit_consumer_state(CommitMode::Sync);
                            log.lock().expect("group log").commit(id, result);
                        }
                    }
                    consumed
                })
            })
            .collect();
        step!("{MEMBERS} members of group {GROUP} on {GROUP_TOPIC}, committing every {COMMIT_EVERY:?}");
        Members { log, stop, threads }
    }

    /// Waits until every member has committed in the last second and no
    /// rebalance callback came for 3 s.
    fn wait_settled(&self, what: &str) {
        let deadline = Instant::now() + WHOLE_TIMEOUT;
        loop {
            let now = Instant::now();
            let log = self.log.lock().expect("group log");
            let committing = log
                .commits
                .iter()
                .all(|c| c.last().is_some_and(|t| now - *t < Duration::from_secs(1)));
            let calm = log
                .rebalances
                .last()
                .is_none_or(|(_, t, _)| now - *t > Duration::from_secs(3));
            if committing && calm {
                return;
            }
            assert!(
                now < deadline,
                "{what}: the members did not settle within {WHOLE_TIMEOUT:?}: commits {:?}, refused {:?} \
                 (last: {:?}), {} rebalance callbacks",
                log.commits.iter().map(Vec::len).collect::<Vec<_>>(),
                log.refused,
                log.last_refusal,
                log.rebalances.len()
            );
            drop(log);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn first_commit_after(&self, m: usize, t: Instant) -> Option<Instant> {
        let log = self.log.lock().expect("group log");
        log.commits[m].iter().copied().find(|&c| c > t)
    }

    fn last_commit_before(&self, m: usize, t: Instant) -> Option<Instant> {
        let log = self.log.lock().expect("group log");
        log.commits[m].iter().rev().copied().find(|&c| c <= t)
    }

    fn commits_between(&self, m: usize, from: Instant, to: Instant) -> Vec<Instant> {
        let log = self.log.lock().expect("group log");
        log.commits[m]
            .iter()
            .copied()
            .filter(|&c| c > from && c <= to)
            .collect()
    }

    fn rebalances_between(&self, from: Instant, to: Instant) -> Vec<(usize, Instant, String)> {
        let log = self.log.lock().expect("group log");
        log.rebalances
            .iter()
            .filter(|(_, t, _)| *t >= from && *t <= to)
            .cloned()
            .collect()
    }

    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        for (id, t) in self.threads.into_iter().enumerate() {
            let consumed = t.join().expect("member thread");
            let log = self.log.lock().expect("group log");
            step!(
                "member {id}: consumed {consumed}, {} commits accepted, {} refused ({:?}), {} with nothing new",
                log.commits[id].len(),
                log.refused[id],
                log.last_refusal,
                log.empty[id]
            );
        }
    }
}

// ---- figures and the table ----

/// One row of the table.
struct Row {
    /// Position in the table.
    order: usize,
    short: &'static str,
    scenario: &'static str,
    target: &'static str,
    values: Vec<f64>,
    notes: Vec<String>,
}

impl Row {
    fn new(order: usize, short: &'static str, scenario: &'static str, target: &'static str) -> Row {
        Row {
            order,
            short,
            scenario,
            target,
            values: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// A run whose event did not come within `FIGURE_TIMEOUT`: counted at
    /// the timeout.
    fn timeout(&mut self, run: usize) {
        self.values.push(ms(FIGURE_TIMEOUT));
        self.notes.push(format!(
            "run {run}: nothing within {FIGURE_TIMEOUT:?} (counted as that)"
        ));
    }

    fn median(&self) -> f64 {
        median(&self.values)
    }

    fn max(&self) -> f64 {
        max(&self.values)
    }

    /// Puts "target met" or "target missed" first in the notes.
    fn judge(&mut self, met: impl Fn(&Row) -> bool) {
        let verdict = if self.values.is_empty() {
            "no runs"
        } else if met(self) {
            "target met"
        } else {
            "target missed"
        };
        self.notes.insert(0, verdict.to_string());
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "scenario": self.scenario,
            "short": self.short,
            "runs": self.values.len(),
            "median_ms": (!self.values.is_empty()).then(|| self.median().round()),
            "max_ms": (!self.values.is_empty()).then(|| self.max().round()),
            "target": self.target,
            "notes": self.notes.join("; "),
            "values_ms": self.values.iter().map(|v| v.round()).collect::<Vec<_>>(),
        })
    }
}

fn markdown(rows: &[Row]) -> String {
    let mut out = String::from(
        "| scenario | runs | median ms | max ms | target | notes |\n|---|---|---|---|---|---|\n",
    );
    for r in rows {
        let (median, max) = if r.values.is_empty() {
            ("-".to_string(), "-".to_string())
        } else {
            (format!("{:.0}", r.median()), format!("{:.0}", r.max()))
        };
        out.push_str(&format!(
            "| {} | {} | {median} | {max} | {} | {} |\n",
            r.scenario,
            r.values.len(),
            r.target,
            r.notes.join("; ")
        ));
    }
    out
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NAN, f64::max)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `t` relative to `origin`, in ms (negative before it).
fn signed_ms(t: Instant, origin: Instant) -> f64 {
    if t >= origin {
        ms(t - origin)
    } else {
        -ms(origin - t)
    }
}

fn opt_ms(t: Option<Instant>, origin: Instant) -> String {
    t.map_or("never (60 s)".to_string(), |t| {
        format!("{:.0} ms", ms(t - origin))
    })
}

/// The longest gap between consecutive `times` (sorted): (gap, its start).
fn longest_gap(times: &[Instant]) -> (Duration, Instant) {
    times
        .windows(2)
        .map(|w| (w[1].saturating_duration_since(w[0]), w[0]))
        .max_by_key(|g| g.0)
        .unwrap_or((
            Duration::ZERO,
            times.first().copied().unwrap_or_else(Instant::now),
        ))
}
