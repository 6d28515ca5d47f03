//! The checker of a chaos run: reads a history (see `history.rs`) and
//! reports what the clients saw that Kafka's guarantees forbid, in Jepsen's
//! queue vocabulary. It is a pure function of the history; it never talks to
//! a broker.
//!
//! A position is (topic, partition, offset). Acks and polls both say which
//! value is at a position. Anomalies, with what one count is:
//!
//! * `inconsistent_offsets`: one position seen with two different values,
//!   across acks and polls of any clients. One per position.
//! * `duplicate`: one value seen at two different positions. One per value.
//! * `lost_write`: a value acked at offset o, never polled by anyone, though
//!   some poll on its partition read an offset greater than o. One per value.
//! * `unseen`: acked, never polled, and no poll read past its offset, so it is
//!   not known to be lost. The suite's final drain should make it zero; one
//!   per value.
//! * `aborted_read`: a value whose delivery failed as definitely not
//!   persisted (`persisted: not`), yet was polled or acked. One per failure.
//! * `poll_skip`: within one consumer session (client, session) and
//!   partition, consecutive polls at offsets a then b, where some value is
//!   known (from any ack or poll) at an offset strictly between a and b.
//!   Offsets may have gaps in Kafka, so only known offsets count as skipped.
//!   One per pair of polls.
//! * `nonmonotonic_poll`: within one consumer session and partition, a poll
//!   at an offset not above the previous poll's. One per pair of polls.
//! * `commit_backwards`: per (group, topic, partition), the successful commits
//!   ordered by `t`: one whose offset is below the highest earlier successful
//!   commit. One per commit.
//!
//! An ack may come without an offset: librdkafka reports offset -1001
//! (`RD_KAFKA_OFFSET_INVALID`) when the broker answered a retried batch with
//! DUPLICATE_SEQUENCE_NUMBER, which it takes as delivered without learning
//! where (rdkafka_request.c), or when a response carries no offset. Such an
//! ack (any negative offset) counts as acknowledged, for `lost_write` and
//! `unseen`, but names no position: it takes no part in
//! `inconsistent_offsets`, `duplicate` or `poll_skip`. Never polled, it is
//! `unseen` (with no offset, no poll is known to have read past it).
//!
//! "Consecutive" is the order of the history file, which is the order in
//! which each client wrote its events. Each kind keeps up to
//! [`MAX_EXAMPLES`] examples, the earliest in the history.
//!
//! Availability: the run, from the smallest to the largest `t` of any event,
//! is cut into 1 s windows (the last may be shorter); availability is the
//! fraction of windows holding at least one ack. The longest produce outage
//! is the longest gap between consecutive acks, by `t`.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::json;

use crate::history::{Event, Persisted, Phase};

/// Examples kept per anomaly kind; the counts are exact.
pub const MAX_EXAMPLES: usize = 10;

/// librdkafka's "offset unknown" (`RD_KAFKA_OFFSET_INVALID`), what an ack
/// carries when librdkafka did not learn the offset.
pub const OFFSET_UNKNOWN: i64 = -1001;

/// Whether an ack's offset is a position in the log (see the module doc).
fn known_offset(offset: i64) -> bool {
    offset >= 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnomalyKind {
    LostWrite,
    Duplicate,
    InconsistentOffsets,
    AbortedRead,
    PollSkip,
    NonmonotonicPoll,
    CommitBackwards,
    Unseen,
}

impl AnomalyKind {
    /// In the order of the summary table.
    pub const ALL: [AnomalyKind; 8] = [
        AnomalyKind::LostWrite,
        AnomalyKind::Duplicate,
        AnomalyKind::InconsistentOffsets,
        AnomalyKind::AbortedRead,
        AnomalyKind::PollSkip,
        AnomalyKind::NonmonotonicPoll,
        AnomalyKind::CommitBackwards,
        AnomalyKind::Unseen,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AnomalyKind::LostWrite => "lost_write",
            AnomalyKind::Duplicate => "duplicate",
            AnomalyKind::InconsistentOffsets => "inconsistent_offsets",
            AnomalyKind::AbortedRead => "aborted_read",
            AnomalyKind::PollSkip => "poll_skip",
            AnomalyKind::NonmonotonicPoll => "nonmonotonic_poll",
            AnomalyKind::CommitBackwards => "commit_backwards",
            AnomalyKind::Unseen => "unseen",
        }
    }
}

/// The anomalies of one kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Anomalies {
    pub count: u64,
    /// Human-readable, naming the topic-partition, offsets, values and
    /// clients involved.
    pub examples: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Operations {
    pub sends: u64,
    pub acks: u64,
    pub fails_not_persisted: u64,
    pub fails_possibly_persisted: u64,
    pub polls: u64,
    pub commits_ok: u64,
    pub commits_failed: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Availability {
    /// 1 s windows in the run; zero only for an empty history.
    pub windows: u64,
    pub windows_with_ack: u64,
    /// None with fewer than two acks.
    pub longest_outage: Option<Outage>,
}

impl Availability {
    /// The fraction of windows with an ack; 0 for an empty history.
    pub fn fraction(&self) -> f64 {
        if self.windows == 0 {
            return 0.0;
        }
        self.windows_with_ack as f64 / self.windows as f64
    }
}

/// A gap between two consecutive acks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Outage {
    /// The `t` of the ack before the gap.
    pub start_t: u64,
    pub ms: u64,
}

#[derive(Debug, Clone, Default)]
pub struct Report {
    pub operations: Operations,
    /// Fault name to the number of times it started.
    pub faults: BTreeMap<String, u64>,
    pub availability: Availability,
    /// Indexed by `AnomalyKind as usize`.
    anomalies: [Anomalies; 8],
}

impl Report {
    pub fn anomalies(&self, kind: AnomalyKind) -> &Anomalies {
        &self.anomalies[kind as usize]
    }

    /// All anomalies, `unseen` included.
    pub fn anomalies_total(&self) -> u64 {
        self.anomalies.iter().map(|a| a.count).sum()
    }

    /// No anomaly of any kind, `unseen` included: a run whose final drain
    /// left acked values unread has not shown that they survived.
    pub fn is_valid(&self) -> bool {
        self.anomalies_total() == 0
    }

    /// Builds the example only while there is room for it, so that a
    /// systematic failure over millions of events stays cheap.
    fn record(&mut self, kind: AnomalyKind, example: impl FnOnce() -> String) {
        let anomalies = &mut self.anomalies[kind as usize];
        anomalies.count += 1;
        if anomalies.examples.len() < MAX_EXAMPLES {
            anomalies.examples.push(example());
        }
    }

    /// The summary table, followed by the examples of every anomaly seen.
    pub fn table(&self) -> String {
        let o = &self.operations;
        let mut rows = vec![
            row(
                "operations",
                &format!(
                    "sends {}  acks {}  fails {} (not {}, possibly {})  polls {}  \
                     commits {} ok / {} failed",
                    o.sends,
                    o.acks,
                    o.fails_not_persisted + o.fails_possibly_persisted,
                    o.fails_not_persisted,
                    o.fails_possibly_persisted,
                    o.polls,
                    o.commits_ok,
                    o.commits_failed,
                ),
            ),
            row("faults", &self.faults_text()),
            row("anomalies", &self.anomaly_counts_text()),
            row("availability", &self.availability_text()),
        ];
        let mut label = "examples";
        for kind in AnomalyKind::ALL {
            for example in &self.anomalies(kind).examples {
                rows.push(row(label, &format!("{}: {example}", kind.name())));
                label = "";
            }
        }
        rows.join("\n")
    }

    fn faults_text(&self) -> String {
        if self.faults.is_empty() {
            return "none".to_string();
        }
        let faults: Vec<String> = self
            .faults
            .iter()
            .map(|(name, starts)| format!("{name} {starts}"))
            .collect();
        faults.join("  ")
    }

    fn anomaly_counts_text(&self) -> String {
        let counts: Vec<String> = AnomalyKind::ALL
            .iter()
            .map(|&kind| format!("{} {}", kind.name(), self.anomalies(kind).count))
            .collect();
        counts.join("  ")
    }

    fn availability_text(&self) -> String {
        let a = &self.availability;
        let outage = match a.longest_outage {
            Some(o) => format!("{} ms at t={:.1} s", o.ms, o.start_t as f64 / 1000.0),
            None => "unknown (fewer than 2 acks)".to_string(),
        };
        format!(
            "{:.1}% of 1 s windows ({}/{}); longest produce outage {outage}",
            a.fraction() * 100.0,
            a.windows_with_ack,
            a.windows,
        )
    }

    /// The whole report, for the run's result file.
    pub fn to_json(&self) -> serde_json::Value {
        let anomalies: serde_json::Map<String, serde_json::Value> = AnomalyKind::ALL
            .iter()
            .map(|&kind| (kind.name().to_string(), json!(self.anomalies(kind))))
            .collect();
        let a = &self.availability;
        json!({
            "valid": self.is_valid(),
            "operations": self.operations,
            "faults": self.faults,
            "anomalies": anomalies,
            "availability": {
                "windows": a.windows,
                "windows_with_ack": a.windows_with_ack,
                "fraction": a.fraction(),
                "longest_outage": a.longest_outage,
            },
        })
    }
}

/// One line of the table: "availability" is the longest label.
fn row(label: &str, body: &str) -> String {
    format!("{label:<13}{body}")
}

/// Checks a whole history, in the order it was written; see the module
/// comment for what each anomaly means.
pub fn check(events: &[Event]) -> Report {
    let index = Index::build(events);
    let mut report = Report {
        operations: count_operations(events),
        faults: count_faults(events),
        availability: availability(events),
        ..Report::default()
    };
    inconsistent_offsets(&index, &mut report);
    duplicates(&index, &mut report);
    unpolled_acks(events, &index, &mut report);
    aborted_reads(events, &index, &mut report);
    poll_order(events, &index, &mut report);
    commits_backwards(events, &mut report);
    report
}

type Tp<'a> = (&'a str, i32);
type Pos<'a> = (&'a str, i32, i64);

/// Who saw a value at a position: an ack (the producer) or a poll.
#[derive(Clone, Copy)]
struct Seen<'a> {
    by: &'static str,
    client: &'a str,
}

impl std::fmt::Display for Seen<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} by {}", self.by, self.client)
    }
}

/// The first sighting of something, and the first that differs from it.
/// Nearly always there is only the first; keeping no list keeps millions of
/// entries small.
struct Sightings<'a, T> {
    first: (T, Seen<'a>),
    second: Option<(T, Seen<'a>)>,
}

impl<'a, T: PartialEq> Sightings<'a, T> {
    /// True when this is the first sighting that differs from the first.
    fn add(&mut self, what: T, seen: Seen<'a>) -> bool {
        if self.second.is_some() || what == self.first.0 {
            return false;
        }
        self.second = Some((what, seen));
        true
    }
}

/// What the acks and polls of the whole history say, for the passes that
/// need all of it.
#[derive(Default)]
struct Index<'a> {
    /// The values seen at each position.
    values_at: HashMap<Pos<'a>, Sightings<'a, &'a str>>,
    /// The positions at which each value was seen.
    positions_of: HashMap<&'a str, Sightings<'a, Pos<'a>>>,
    /// Positions with a second value, in the order it appeared.
    inconsistent: Vec<Pos<'a>>,
    /// Values with a second position, in the order it appeared.
    duplicated: Vec<&'a str>,
    polled: HashSet<&'a str>,
    max_polled: HashMap<Tp<'a>, i64>,
    /// The offsets with a known value, sorted, per partition.
    known: HashMap<Tp<'a>, Vec<i64>>,
}

impl<'a> Index<'a> {
    fn build(events: &'a [Event]) -> Index<'a> {
        let mut index = Index::default();
        for event in events {
            match event {
                Event::Ack {
                    client,
                    topic,
                    partition,
                    value,
                    offset,
                    ..
                } if known_offset(*offset) => {
                    let seen = Seen { by: "ack", client };
                    index.observe((topic, *partition, *offset), value, seen);
                }
                Event::Poll {
                    client,
                    topic,
                    partition,
                    offset,
                    value,
                    ..
                } => {
                    index.polled.insert(value);
                    let reached = index
                        .max_polled
                        .entry((topic, *partition))
                        .or_insert(*offset);
                    *reached = (*reached).max(*offset);
                    let seen = Seen { by: "poll", client };
                    index.observe((topic, *partition, *offset), value, seen);
                }
                // An ack at an unknown offset is acknowledged (see
                // `unpolled_acks`) but names no position.
                _ => {}
            }
        }
        for &(topic, partition, offset) in index.values_at.keys() {
            index
                .known
                .entry((topic, partition))
                .or_default()
                .push(offset);
        }
        for offsets in index.known.values_mut() {
            offsets.sort_unstable();
        }
        index
    }

    fn observe(&mut self, pos: Pos<'a>, value: &'a str, seen: Seen<'a>) {
        match self.values_at.entry(pos) {
            Entry::Occupied(mut e) => {
                if e.get_mut().add(value, seen) {
                    self.inconsistent.push(pos);
                }
            }
            Entry::Vacant(e) => {
                e.insert(Sightings {
                    first: (value, seen),
                    second: None,
                });
            }
        }
        match self.positions_of.entry(value) {
            Entry::Occupied(mut e) => {
                if e.get_mut().add(pos, seen) {
                    self.duplicated.push(value);
                }
            }
            Entry::Vacant(e) => {
                e.insert(Sightings {
                    first: (pos, seen),
                    second: None,
                });
            }
        }
    }

    /// The known offsets strictly between `a` and `b` on `tp`: the first
    /// and how many.
    fn skipped(&self, tp: Tp<'a>, a: i64, b: i64) -> Option<(i64, usize)> {
        let known = self.known.get(&tp)?;
        let from = known.partition_point(|&o| o <= a);
        let to = known.partition_point(|&o| o < b);
        (to > from).then(|| (known[from], to - from))
    }

    fn value_at(&self, pos: Pos<'a>) -> &'a str {
        self.values_at.get(&pos).map_or("?", |s| s.first.0)
    }
}

/// "topic-partition offset o", as Kafka names partitions.
fn at((topic, partition, offset): Pos) -> String {
    format!("{topic}-{partition} offset {offset}")
}

fn inconsistent_offsets(index: &Index, report: &mut Report) {
    for &pos in &index.inconsistent {
        let Some(Sightings {
            first: (v1, seen1),
            second: Some((v2, seen2)),
        }) = index.values_at.get(&pos)
        else {
            continue;
        };
        report.record(AnomalyKind::InconsistentOffsets, || {
            format!("{}: {v1:?} ({seen1}) and {v2:?} ({seen2})", at(pos))
        });
    }
}

fn duplicates(index: &Index, report: &mut Report) {
    for &value in &index.duplicated {
        let Some(Sightings {
            first: (p1, seen1),
            second: Some((p2, seen2)),
        }) = index.positions_of.get(value)
        else {
            continue;
        };
        report.record(AnomalyKind::Duplicate, || {
            format!(
                "{value:?} at {} ({seen1}) and {} ({seen2})",
                at(*p1),
                at(*p2)
            )
        });
    }
}

/// Lost writes and unseen values: acked values that no poll returned.
fn unpolled_acks(events: &[Event], index: &Index, report: &mut Report) {
    let mut reported = HashSet::new();
    for event in events {
        let Event::Ack {
            client,
            topic,
            partition,
            value,
            offset,
            ..
        } = event
        else {
            continue;
        };
        if index.polled.contains(value.as_str()) || !reported.insert(value.as_str()) {
            continue;
        }
        if !known_offset(*offset) {
            report.record(AnomalyKind::Unseen, || {
                format!(
                    "{value:?} acked by {client} on {topic}-{partition} at an unknown offset \
                     ({offset}), never polled"
                )
            });
            continue;
        }
        let acked = || {
            let pos = at((topic, *partition, *offset));
            format!("{value:?} acked by {client} at {pos}, never polled")
        };
        match index.max_polled.get(&(topic.as_str(), *partition)) {
            Some(&reached) if reached > *offset => report.record(AnomalyKind::LostWrite, || {
                format!("{}, though polls reached offset {reached}", acked())
            }),
            Some(&reached) => report.record(AnomalyKind::Unseen, || {
                format!("{}; polls reached only offset {reached}", acked())
            }),
            None => report.record(AnomalyKind::Unseen, || {
                format!("{}; no polls on {topic}-{partition}", acked())
            }),
        }
    }
}

fn aborted_reads(events: &[Event], index: &Index, report: &mut Report) {
    for event in events {
        let Event::Fail {
            client,
            value,
            error,
            persisted: Persisted::Not,
            ..
        } = event
        else {
            continue;
        };
        let Some(sightings) = index.positions_of.get(value.as_str()) else {
            continue;
        };
        let (pos, seen) = sightings.first;
        report.record(AnomalyKind::AbortedRead, || {
            format!(
                "{value:?} failed as not persisted ({client}: {error}), yet seen at {} ({seen})",
                at(pos)
            )
        });
    }
}

/// Poll skips and nonmonotonic polls: consecutive polls of one consumer
/// session on one partition.
fn poll_order(events: &[Event], index: &Index, report: &mut Report) {
    let mut last: HashMap<(&str, u64, &str, i32), i64> = HashMap::new();
    for event in events {
        let Event::Poll {
            client,
            session,
            topic,
            partition,
            offset: b,
            ..
        } = event
        else {
            continue;
        };
        let key = (client.as_str(), *session, topic.as_str(), *partition);
        let Some(a) = last.insert(key, *b) else {
            continue;
        };
        let polls =
            || format!("{client} session {session} on {topic}-{partition}: offset {a} then {b}");
        if *b <= a {
            report.record(AnomalyKind::NonmonotonicPoll, polls);
        } else if let Some((first, n)) = index.skipped((topic, *partition), a, *b) {
            let value = index.value_at((topic, *partition, first));
            report.record(AnomalyKind::PollSkip, || match n {
                1 => format!("{}, skipping known offset {first} ({value:?})", polls()),
                _ => format!(
                    "{}, skipping {n} known offsets from {first} ({value:?})",
                    polls()
                ),
            });
        }
    }
}

/// A successful commit, for ordering by `t`.
struct OkCommit<'a> {
    t: u64,
    client: &'a str,
    group: &'a str,
    topic: &'a str,
    partition: i32,
    offset: i64,
}

fn commits_backwards(events: &[Event], report: &mut Report) {
    let mut commits: Vec<OkCommit> = events
        .iter()
        .filter_map(|event| match event {
            Event::Commit {
                t,
                client,
                group,
                topic,
                partition,
                offset,
                ok: true,
                ..
            } => Some(OkCommit {
                t: *t,
                client,
                group,
                topic,
                partition: *partition,
                offset: *offset,
            }),
            _ => None,
        })
        .collect();
    // Stable: commits with the same `t` keep the order of the history.
    commits.sort_by_key(|c| c.t);
    let mut highest: HashMap<(&str, &str, i32), OkCommit> = HashMap::new();
    for commit in commits {
        let key = (commit.group, commit.topic, commit.partition);
        match highest.entry(key) {
            Entry::Vacant(e) => {
                e.insert(commit);
            }
            Entry::Occupied(mut e) => {
                let top = e.get();
                if commit.offset < top.offset {
                    report.record(AnomalyKind::CommitBackwards, || {
                        format!(
                            "group {} on {}-{}: {} committed {} at t={} ms after {} committed {} at t={} ms",
                            commit.group,
                            commit.topic,
                            commit.partition,
                            commit.client,
                            commit.offset,
                            commit.t,
                            top.client,
                            top.offset,
                            top.t,
                        )
                    });
                } else if commit.offset > top.offset {
                    e.insert(commit);
                }
            }
        }
    }
}

fn count_operations(events: &[Event]) -> Operations {
    let mut ops = Operations::default();
    for event in events {
        match event {
            Event::Send { .. } => ops.sends += 1,
            Event::Ack { .. } => ops.acks += 1,
            Event::Fail {
                persisted: Persisted::Not,
                ..
            } => ops.fails_not_persisted += 1,
            Event::Fail {
                persisted: Persisted::Possibly,
                ..
            } => ops.fails_possibly_persisted += 1,
            Event::Poll { .. } => ops.polls += 1,
            Event::Commit { ok: true, .. } => ops.commits_ok += 1,
            Event::Commit { ok: false, .. } => ops.commits_failed += 1,
            Event::Assign { .. } | Event::Fault { .. } => {}
        }
    }
    ops
}

fn count_faults(events: &[Event]) -> BTreeMap<String, u64> {
    let mut faults = BTreeMap::new();
    for event in events {
        if let Event::Fault {
            name,
            phase: Phase::Start,
            ..
        } = event
        {
            *faults.entry(name.clone()).or_insert(0) += 1;
        }
    }
    faults
}

fn availability(events: &[Event]) -> Availability {
    let (Some(first), Some(last)) = (
        events.iter().map(Event::t).min(),
        events.iter().map(Event::t).max(),
    ) else {
        return Availability::default();
    };
    let windows = (last - first).div_ceil(1000).max(1);
    let mut acks: Vec<u64> = events
        .iter()
        .filter_map(|event| match event {
            Event::Ack { t, .. } => Some(*t),
            _ => None,
        })
        .collect();
    acks.sort_unstable();
    // The last window takes the instant at its end: a run of exactly 2 s
    // has two windows, not a third that is one instant long.
    let mut with_ack: Vec<u64> = acks
        .iter()
        .map(|t| ((t - first) / 1000).min(windows - 1))
        .collect();
    with_ack.dedup();
    let longest_outage = acks
        .windows(2)
        .map(|pair| Outage {
            start_t: pair[0],
            ms: pair[1] - pair[0],
        })
        // The first of equally long gaps.
        .min_by_key(|outage| std::cmp::Reverse(outage.ms));
    Availability {
        windows,
        windows_with_ack: with_ack.len() as u64,
        longest_outage,
    }
}
