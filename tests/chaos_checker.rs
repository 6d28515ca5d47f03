//! The chaos suite's history format and checker (`tests/chaos/history.rs`,
//! `tests/chaos/checker.rs`), on crafted histories, without brokers:
//!
//! * a clean history, with the gaps, rebalances, re-reads, failed commits and
//!   possibly-persisted failures that a real run has, shows no anomaly;
//! * each anomaly kind, alone in a history, is reported as exactly that kind,
//!   naming the values and offsets involved, and nothing else is;
//! * availability windows and the longest produce outage;
//! * a history survives the JSON-lines writer and reader, also with clients
//!   writing concurrently, and a bad line is an error naming it.

#[path = "chaos/history.rs"]
mod history;

#[path = "chaos/checker.rs"]
mod checker;

use checker::{
    check, AnomalyKind, Availability, Operations, Outage, Report, MAX_EXAMPLES, OFFSET_UNKNOWN,
};
use history::{Event, Persisted, Phase, Writer};

const TOPIC: &str = "t";

fn send(t: u64, client: &str, partition: i32, value: &str) -> Event {
    Event::Send {
        t,
        client: client.into(),
        topic: TOPIC.into(),
        partition,
        value: value.into(),
    }
}

fn ack(t: u64, client: &str, partition: i32, value: &str, offset: i64) -> Event {
    Event::Ack {
        t,
        client: client.into(),
        topic: TOPIC.into(),
        partition,
        value: value.into(),
        offset,
    }
}

fn fail(t: u64, client: &str, value: &str, persisted: Persisted) -> Event {
    let error = match persisted {
        Persisted::Not => "Broker: Message size too large",
        Persisted::Possibly => "Local: Message timed out",
    };
    Event::Fail {
        t,
        client: client.into(),
        topic: TOPIC.into(),
        partition: 0,
        value: value.into(),
        error: error.into(),
        persisted,
    }
}

fn assign(t: u64, client: &str, session: u64, partitions: &[i32]) -> Event {
    Event::Assign {
        t,
        client: client.into(),
        session,
        partitions: partitions.iter().map(|&p| (TOPIC.into(), p)).collect(),
    }
}

fn poll(t: u64, client: &str, session: u64, partition: i32, offset: i64, value: &str) -> Event {
    Event::Poll {
        t,
        client: client.into(),
        session,
        topic: TOPIC.into(),
        partition,
        offset,
        value: value.into(),
    }
}

fn commit(t: u64, client: &str, group: &str, offset: i64, ok: bool) -> Event {
    Event::Commit {
        t,
        client: client.into(),
        group: group.into(),
        topic: TOPIC.into(),
        partition: 0,
        offset,
        ok,
        error: (!ok).then(|| "Broker: Not coordinator".into()),
    }
}

fn fault(t: u64, name: &str, phase: Phase) -> Event {
    Event::Fault {
        t,
        client: "nemesis".into(),
        name: name.into(),
        detail: "n2".into(),
        phase,
    }
}

/// p1 sends `values` and has them acked at offsets 0, 1, ... of partition 0.
fn produced(values: &[&str]) -> Vec<Event> {
    let mut events = Vec::new();
    for (offset, value) in values.iter().enumerate() {
        let t = 10 * offset as u64;
        events.push(send(t, "p1", 0, value));
        events.push(ack(t + 5, "p1", 0, value, offset as i64));
    }
    events
}

/// `kind` has exactly `examples` (in this order) and no other kind has any.
fn assert_only(report: &Report, kind: AnomalyKind, examples: &[&str]) {
    for other in AnomalyKind::ALL {
        let anomalies = report.anomalies(other);
        if other == kind {
            assert_eq!(anomalies.examples, examples, "{}", report.table());
            assert_eq!(anomalies.count, examples.len() as u64);
        } else {
            assert_eq!(anomalies.count, 0, "{}", report.table());
        }
    }
    assert!(!report.is_valid());
    assert_eq!(report.anomalies_total(), examples.len() as u64);
}

#[test]
fn a_clean_history_has_no_anomalies() {
    let mut events = vec![fault(0, "kill_random", Phase::Start)];
    events.extend([
        send(100, "p1", 0, "v0"),
        send(110, "p1", 0, "v1"),
        send(120, "p1", 0, "v2"),
        send(130, "p1", 1, "w0"),
        ack(200, "p1", 0, "v0", 0),
        ack(210, "p1", 0, "v1", 1),
        // Offset 2 is a transaction marker or a compacted record: a gap.
        ack(220, "p1", 0, "v2", 3),
        // Offset 0 of another partition holds another value.
        ack(230, "p1", 1, "w0", 0),
        // A possibly persisted value may be read; a failed one need not be.
        send(300, "p1", 0, "v3"),
        fail(400, "p1", "v3", Persisted::Possibly),
        send(410, "p1", 0, "v4"),
        fail(420, "p1", "v4", Persisted::Not),
        fault(500, "kill_random", Phase::End),
        assign(600, "c1", 1, &[0, 1]),
        poll(610, "c1", 1, 0, 0, "v0"),
        poll(620, "c1", 1, 1, 0, "w0"),
        poll(630, "c1", 1, 0, 1, "v1"),
        poll(640, "c1", 1, 0, 3, "v2"),
        poll(650, "c1", 1, 0, 4, "v3"),
        commit(700, "c1", "g1", 2, true),
        commit(710, "c1", "g1", 4, true),
        fault(800, "pause", Phase::Start),
        // Refused, so it moves nothing back.
        commit(810, "c1", "g1", 1, false),
        fault(900, "pause", Phase::End),
        // A rebalance: the new session starts again from the commit.
        assign(1000, "c1", 2, &[0]),
        poll(1010, "c1", 2, 0, 1, "v1"),
        poll(1020, "c1", 2, 0, 3, "v2"),
        commit(1030, "c1", "g1", 4, true),
        commit(1040, "c1", "g1", 5, true),
    ]);
    let report = check(&events);

    assert!(report.is_valid(), "{}", report.table());
    assert_eq!(report.anomalies_total(), 0);
    assert_eq!(
        report.operations,
        Operations {
            sends: 6,
            acks: 4,
            fails_not_persisted: 1,
            fails_possibly_persisted: 1,
            polls: 7,
            commits_ok: 4,
            commits_failed: 1,
        }
    );
    assert_eq!(
        report.faults,
        [("kill_random".to_string(), 1), ("pause".to_string(), 1)].into()
    );
    assert_eq!(
        report.table(),
        "operations   sends 6  acks 4  fails 2 (not 1, possibly 1)  polls 7  commits 4 ok / 1 failed\n\
         faults       kill_random 1  pause 1\n\
         anomalies    lost_write 0  duplicate 0  inconsistent_offsets 0  aborted_read 0  \
         poll_skip 0  nonmonotonic_poll 0  commit_backwards 0  unseen 0\n\
         availability 50.0% of 1 s windows (1/2); longest produce outage 10 ms at t=0.2 s"
    );
    let json = report.to_json();
    assert_eq!(json["valid"], true);
    assert_eq!(json["operations"]["polls"], 7);
    assert_eq!(json["anomalies"]["unseen"]["count"], 0);
}

#[test]
fn an_acked_value_polled_past_but_never_polled_is_a_lost_write() {
    let mut events = produced(&["v0", "v1", "v2"]);
    // Two sessions, so that going from 0 to 2 is not a skip within one.
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    events.push(poll(200, "c1", 2, 0, 2, "v2"));
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::LostWrite,
        &[r#""v1" acked by p1 at t-0 offset 1, never polled, though polls reached offset 2"#],
    );
    let json = report.to_json();
    assert_eq!(json["valid"], false);
    assert_eq!(json["anomalies"]["lost_write"]["count"], 1);
    assert!(report.table().contains("lost_write 1  duplicate 0"));
    assert!(report
        .table()
        .contains("\nexamples     lost_write: \"v1\" acked by p1 at t-0 offset 1"));
}

#[test]
fn an_acked_value_no_poll_reached_is_unseen_not_lost() {
    let mut events = produced(&["v0", "v1"]);
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::Unseen,
        &[r#""v1" acked by p1 at t-0 offset 1, never polled; polls reached only offset 0"#],
    );
}

#[test]
fn an_ack_at_an_unknown_offset_is_acknowledged_but_names_no_position() {
    // librdkafka acks a retried batch that the broker calls a duplicate
    // sequence with offset -1001: two such acks on one partition are not
    // two values at one position, and the value polled at its real offset
    // is not at two positions.
    let mut events = produced(&["v0", "v1"]);
    events.push(send(30, "p1", 0, "v2"));
    events.push(ack(35, "p1", 0, "v2", OFFSET_UNKNOWN));
    events.push(send(40, "p1", 0, "v3"));
    events.push(ack(45, "p1", 0, "v3", OFFSET_UNKNOWN));
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    events.push(poll(110, "c1", 1, 0, 1, "v1"));
    events.push(poll(120, "c1", 1, 0, 2, "v2"));
    events.push(poll(130, "c1", 1, 0, 3, "v3"));
    let report = check(&events);
    assert!(report.is_valid(), "{}", report.table());
    assert_eq!(report.operations.acks, 4);

    // Still acknowledged: never polled, it is unseen, however far the
    // polls went (with no offset, nothing is known to be past it).
    let mut events = produced(&["v0", "v1"]);
    events.push(send(30, "p1", 0, "v2"));
    events.push(ack(35, "p1", 0, "v2", OFFSET_UNKNOWN));
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    events.push(poll(110, "c1", 1, 0, 1, "v1"));
    let report = check(&events);
    assert_only(
        &report,
        AnomalyKind::Unseen,
        &[r#""v2" acked by p1 on t-0 at an unknown offset (-1001), never polled"#],
    );
}

#[test]
fn counts_are_exact_and_examples_are_the_first_ten() {
    let events: Vec<Event> = (0..15)
        .map(|i| ack(i, "p1", 1, &format!("w{i}"), i as i64))
        .collect();
    let report = check(&events);

    let unseen = report.anomalies(AnomalyKind::Unseen);
    assert_eq!(unseen.count, 15);
    assert_eq!(unseen.examples.len(), MAX_EXAMPLES);
    assert_eq!(
        unseen.examples[0],
        r#""w0" acked by p1 at t-1 offset 0, never polled; no polls on t-1"#
    );
    assert!(unseen.examples[9].starts_with(r#""w9" acked"#));
}

#[test]
fn a_value_at_two_offsets_is_a_duplicate() {
    let mut events = produced(&["v0", "v1"]);
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    events.push(poll(110, "c1", 1, 0, 1, "v1"));
    events.push(poll(120, "c1", 1, 0, 2, "v0"));
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::Duplicate,
        &[r#""v0" at t-0 offset 0 (ack by p1) and t-0 offset 2 (poll by c1)"#],
    );
}

#[test]
fn two_values_at_one_offset_are_inconsistent_offsets() {
    let events = vec![
        send(0, "p1", 0, "v0"),
        send(1, "p1", 0, "v1"),
        send(2, "p2", 0, "v2"),
        ack(10, "p1", 0, "v0", 0),
        ack(11, "p1", 0, "v1", 1),
        ack(12, "p2", 0, "v2", 1),
        poll(100, "c1", 1, 0, 0, "v0"),
        poll(110, "c1", 1, 0, 1, "v1"),
        poll(120, "c2", 1, 0, 0, "v0"),
        poll(130, "c2", 1, 0, 1, "v2"),
    ];
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::InconsistentOffsets,
        &[r#"t-0 offset 1: "v1" (ack by p1) and "v2" (ack by p2)"#],
    );
}

#[test]
fn a_value_that_failed_as_not_persisted_but_was_seen_is_an_aborted_read() {
    let events = vec![
        send(0, "p1", 0, "v0"),
        fail(10, "p1", "v0", Persisted::Not),
        // Possibly persisted: reading it is fine.
        send(20, "p1", 0, "v1"),
        fail(30, "p1", "v1", Persisted::Possibly),
        // Acked by another producer's delivery report.
        send(40, "p1", 0, "v2"),
        fail(50, "p1", "v2", Persisted::Not),
        ack(60, "p2", 0, "v2", 2),
        poll(100, "c1", 1, 0, 0, "v0"),
        poll(110, "c1", 1, 0, 1, "v1"),
        poll(120, "c1", 1, 0, 2, "v2"),
    ];
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::AbortedRead,
        &[
            r#""v0" failed as not persisted (p1: Broker: Message size too large), yet seen at t-0 offset 0 (poll by c1)"#,
            r#""v2" failed as not persisted (p1: Broker: Message size too large), yet seen at t-0 offset 2 (ack by p2)"#,
        ],
    );
}

#[test]
fn jumping_over_a_known_offset_within_a_session_is_a_poll_skip() {
    let mut events = produced(&["v0", "v1", "v2", "v3"]);
    for (offset, value) in ["v0", "v1", "v2", "v3"].iter().enumerate() {
        events.push(poll(100, "c2", 1, 0, offset as i64, value));
    }
    events.push(poll(200, "c1", 1, 0, 0, "v0"));
    events.push(poll(210, "c1", 1, 0, 2, "v2"));
    events.push(poll(300, "c3", 1, 0, 0, "v0"));
    events.push(poll(310, "c3", 1, 0, 3, "v3"));
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::PollSkip,
        &[
            r#"c1 session 1 on t-0: offset 0 then 2, skipping known offset 1 ("v1")"#,
            r#"c3 session 1 on t-0: offset 0 then 3, skipping 2 known offsets from 1 ("v1")"#,
        ],
    );
}

#[test]
fn going_back_or_standing_still_within_a_session_is_a_nonmonotonic_poll() {
    let mut events = produced(&["v0", "v1"]);
    events.push(poll(100, "c1", 1, 0, 0, "v0"));
    events.push(poll(110, "c1", 1, 0, 1, "v1"));
    events.push(poll(120, "c1", 1, 0, 0, "v0"));
    events.push(poll(130, "c1", 1, 0, 1, "v1"));
    events.push(poll(200, "c2", 1, 0, 0, "v0"));
    events.push(poll(210, "c2", 1, 0, 0, "v0"));
    // A new session may start anywhere.
    events.push(poll(300, "c2", 2, 0, 0, "v0"));
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::NonmonotonicPoll,
        &[
            "c1 session 1 on t-0: offset 1 then 0",
            "c2 session 1 on t-0: offset 0 then 0",
        ],
    );
}

#[test]
fn a_successful_commit_below_an_earlier_one_is_commit_backwards() {
    let events = vec![
        commit(100, "c1", "g1", 5, true),
        commit(200, "c2", "g1", 3, true),
        // Refused: not a commit at all.
        commit(300, "c1", "g1", 1, false),
        // Another group has its own offsets.
        commit(300, "c3", "g2", 1, true),
        // Written late, but it happened first: ordered by t.
        commit(50, "c1", "g1", 2, true),
    ];
    let report = check(&events);

    assert_only(
        &report,
        AnomalyKind::CommitBackwards,
        &["group g1 on t-0: c2 committed 3 at t=200 ms after c1 committed 5 at t=100 ms"],
    );
}

#[test]
fn availability_is_the_share_of_one_second_windows_with_an_ack() {
    let events = vec![
        fault(0, "partition", Phase::Start),
        ack(100, "p1", 1, "w0", 0),
        ack(300, "p1", 1, "w1", 1),
        ack(2500, "p1", 1, "w2", 2),
        ack(2600, "p1", 1, "w3", 3),
        send(3999, "p1", 1, "w4"),
    ];
    let report = check(&events);

    assert_eq!(
        report.availability,
        Availability {
            windows: 4,
            windows_with_ack: 2,
            longest_outage: Some(Outage {
                start_t: 300,
                ms: 2200
            }),
        }
    );
    assert!(report.table().contains(
        "\navailability 50.0% of 1 s windows (2/4); longest produce outage 2200 ms at t=0.3 s"
    ));
    assert_eq!(report.to_json()["availability"]["fraction"], 0.5);
    assert_eq!(
        report.to_json()["availability"]["longest_outage"]["ms"],
        2200
    );

    // The end of the run belongs to the last window, not to a new one.
    let exact = check(&[send(0, "p1", 0, "v0"), ack(2000, "p1", 0, "v0", 0)]);
    assert_eq!(exact.availability.windows, 2);
    assert_eq!(exact.availability.windows_with_ack, 1);
    assert_eq!(exact.availability.longest_outage, None);

    let empty = check(&[]);
    assert_eq!(empty.availability, Availability::default());
    assert_eq!(empty.availability.fraction(), 0.0);
    assert!(empty.is_valid());
}

/// One event of every kind and variant.
fn every_kind() -> Vec<Event> {
    vec![
        fault(0, "kill_random", Phase::Start),
        send(1, "p1", 0, "v0"),
        ack(2, "p1", 0, "v0", 0),
        send(3, "p1", 0, "v1"),
        fail(4, "p1", "v1", Persisted::Not),
        send(5, "p1", 0, "v2"),
        fail(6, "p1", "v2", Persisted::Possibly),
        assign(7, "c1", 1, &[0, 1]),
        poll(8, "c1", 1, 0, 0, "v0"),
        commit(9, "c1", "g1", 1, true),
        commit(10, "c1", "g1", 1, false),
        fault(11, "kill_random", Phase::End),
    ]
}

#[test]
fn a_history_round_trips_through_json_lines() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    let events = every_kind();
    let writer = Writer::create(&path).expect("create history");
    for event in &events {
        writer.write(event).expect("write event");
    }
    writer.flush().expect("flush history");
    drop(writer);

    assert_eq!(history::read(&path).expect("read history"), events);
    // The format that other tools read.
    let text = std::fs::read_to_string(&path).expect("read text");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len());
    assert_eq!(
        lines[2],
        r#"{"kind":"ack","t":2,"client":"p1","topic":"t","partition":0,"value":"v0","offset":0}"#
    );
    assert!(lines[4].contains(r#""persisted":"not""#), "{}", lines[4]);
    assert!(
        lines[7].contains(r#""partitions":[["t",0],["t",1]]"#),
        "{}",
        lines[7]
    );
    assert!(lines[10].contains(r#""ok":false,"error":"Broker: Not coordinator""#));
    assert!(lines[11].contains(r#""client":"nemesis","name":"kill_random""#));
}

#[test]
fn concurrent_clients_write_whole_lines_and_drop_flushes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    let writer = Writer::create(&path).expect("create history");
    std::thread::scope(|scope| {
        for c in 0..4 {
            let writer = &writer;
            scope.spawn(move || {
                for i in 0..500 {
                    let event = poll(i, &format!("c{c}"), 1, 0, i as i64, &format!("c{c}-{i}"));
                    writer.write(&event).expect("write event");
                }
            });
        }
    });
    drop(writer);

    let events = history::read(&path).expect("read history");
    assert_eq!(events.len(), 2000);
    // Each client's events in its own order.
    for c in 0..4 {
        let client = format!("c{c}");
        let times: Vec<u64> = events
            .iter()
            .filter(|e| matches!(e, Event::Poll { client: name, .. } if *name == client))
            .map(Event::t)
            .collect();
        assert_eq!(times, (0..500).collect::<Vec<u64>>());
    }
}

#[test]
fn a_bad_line_is_an_error_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("history.jsonl");
    let good = serde_json::to_string(&send(0, "p1", 0, "v0")).expect("encode");
    for bad in [
        "{\"kind\":\"ack\",\"t\":1",
        r#"{"kind":"teleport","t":1}"#,
        "",
    ] {
        std::fs::write(&path, format!("{good}\n{bad}\n{good}\n")).expect("write file");
        let error = history::read(&path).expect_err(bad);
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidData);
        let message = error.to_string();
        assert!(message.contains("history.jsonl: line 2: "), "{message}");
    }
}
