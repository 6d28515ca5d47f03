//! Fencing by session (issue 16): a broker's session is the stream it holds
//! open to the active controller. A killed broker's kernel resets it, and
//! the controller fences the broker after `broker.session.grace.ms`, not
//! after `broker.session.timeout.ms` of silence; a connection that only
//! dropped is opened again within the grace period and fences nobody.
//!
//! The clusters here run with a 60 s session timeout, and a 60 s
//! `replica.lag.time.max.ms`, so that whatever moves within the test's
//! 20 s can only have come from the session's end. (How fast it moves is a
//! benchmark's business: `cargo bench --bench failover`.)
//!
//! * A killed follower leaves the ISR and acks=all writes go on; a killed
//!   leader is replaced from the ISR.
//! * A killed active controller that also led a partition is fenced by the
//!   controller elected after it, which never held a session with it.
//! * Resetting every connection to the active controller, ten times, fences
//!   no broker and moves no partition.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::partition::{others, wait_full_isr, wait_state, PState};
use common::producer::{BgProducer, Spec};
use common::topics::create_replicated;

const SETTINGS: &[&str] = &[
    "broker.session.timeout.ms=60000",
    "replica.lag.time.max.ms=60000",
    "default.replication.factor=3",
    "min.insync.replicas=2",
];
/// Far below the 60 s session timeout and replica lag limit.
const MOVED_WITHIN: Duration = Duration::from_secs(20);
const TIMEOUT: Duration = Duration::from_secs(60);
/// What the controller logs when it fences a broker whose session ended.
const SESSION_FENCE: &str = "no session with the active controller for broker.session.grace.ms";

fn controller_of(c: &Cluster, ask: i32) -> i32 {
    c.view(ask).expect("metadata").controller_id
}

fn producer(c: &Cluster, topic: &str, partitions: i32) -> BgProducer {
    BgProducer::start(
        &c.bootstrap_all(),
        Spec {
            partitions: (0..partitions).collect(),
            pause: Duration::from_millis(2),
            ..Spec::continuous(topic, "v")
        },
    )
}

fn state(c: &Cluster, ask: &[i32], topic: &str, p: i32) -> PState {
    wait_state(c, ask, topic, p, TIMEOUT, "an answer", |_| true)
}

fn fenced_logs(c: &Cluster) -> Vec<String> {
    c.nodes
        .iter()
        .flat_map(|n| {
            n.log()
                .lines()
                .filter(|l| l.contains("broker fenced"))
                .map(|l| format!("node {}: {l}", n.id))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn a_killed_follower_and_a_killed_leader_are_fenced_when_their_sessions_end() {
    let _serial = common::serial();
    let topic = "sessions";
    let mut c = Cluster::start_with(3, SETTINGS);
    create_replicated(&c, topic, 1);
    let p = producer(&c, topic, 1);
    p.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the kills");
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);
    let controller = controller_of(&c, st.leader);

    // A follower that is not the active controller.
    let follower = *st
        .isr
        .iter()
        .find(|b| **b != st.leader && **b != controller)
        .expect("a follower besides the controller");
    let rest = others(&c, &[follower]);
    c.kill9(follower);
    let killed = Instant::now();
    let after = wait_state(
        &c,
        &rest,
        topic,
        0,
        MOVED_WITHIN,
        "the killed follower out of the ISR",
        |s| !s.isr.contains(&follower),
    );
    step!(
        "follower {follower} killed; ISR {:?} after {:?}",
        after.isr,
        killed.elapsed()
    );
    p.wait_acks_since(
        killed,
        100,
        MOVED_WITHIN,
        "acks=all with the dead follower out of the ISR",
    );
    let log = c.node(controller).log();
    assert!(
        log.contains(SESSION_FENCE),
        "controller {controller} did not fence {follower} for its session:\n{}",
        c.node(controller).log_tail(30)
    );
    c.restart(follower);
    let st = wait_full_isr(&c, topic, 0, TIMEOUT);

    // Now the leader, if it is not the active controller (else a follower
    // is killed once more: the next test covers the controller).
    let controller = controller_of(&c, st.leader);
    let victim = if st.leader != controller {
        st.leader
    } else {
        *st.isr
            .iter()
            .find(|b| **b != controller)
            .expect("a follower")
    };
    let rest = others(&c, &[victim]);
    c.kill9(victim);
    let killed = Instant::now();
    let after = wait_state(
        &c,
        &rest,
        topic,
        0,
        MOVED_WITHIN,
        "a partition without the killed broker",
        |s| s.leader > 0 && s.leader != victim && !s.isr.contains(&victim),
    );
    step!(
        "broker {victim} (leader {}) killed; leader {} ISR {:?} after {:?}",
        st.leader,
        after.leader,
        after.isr,
        killed.elapsed()
    );
    p.wait_acks_since(killed, 100, MOVED_WITHIN, "acks=all after the kill");
    c.restart(victim);
    wait_full_isr(&c, topic, 0, TIMEOUT);
    let report = p.finish();
    assert!(
        report.fatal.is_none(),
        "producer failed: {:?}",
        report.fatal
    );
}

#[test]
fn a_broker_killed_with_the_active_controller_is_fenced_by_the_next_one() {
    let _serial = common::serial();
    let topic = "with-controller";
    let mut c = Cluster::start_with(3, SETTINGS);
    create_replicated(&c, topic, 3);
    let p = producer(&c, topic, 3);
    p.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the kill");
    let all = others(&c, &[]);
    let states: Vec<PState> = (0..3)
        .map(|i| wait_full_isr(&c, topic, i, TIMEOUT))
        .collect();
    let controller = controller_of(&c, all[0]);
    let Some(led) = states.iter().position(|s| s.leader == controller) else {
        panic!("controller {controller} leads none of {states:?}");
    };
    let rest = others(&c, &[controller]);
    c.kill9(controller);
    let killed = Instant::now();
    let after = wait_state(
        &c,
        &rest,
        topic,
        led as i32,
        MOVED_WITHIN,
        "a new leader for the dead controller's partition",
        |s| s.leader > 0 && s.leader != controller && !s.isr.contains(&controller),
    );
    let next = controller_of(&c, rest[0]);
    step!(
        "controller {controller} (leader of partition {led}) killed; controller {next}, leader {} \
         ISR {:?} after {:?}",
        after.leader,
        after.isr,
        killed.elapsed()
    );
    assert_ne!(next, controller);
    for line in c.node(next).log().lines().filter(|l| {
        l.contains("controller elected") || l.contains("broker fenced") || l.contains("session")
    }) {
        step!("controller {next}: {line}");
    }
    assert!(
        c.node(next).log().contains(SESSION_FENCE),
        "controller {next} did not fence {controller} for want of a session:\n{}",
        c.node(next).log_tail(30)
    );
    p.wait_acks_since(killed, 100, MOVED_WITHIN, "acks=all after the kill");
    c.restart(controller);
    for i in 0..3 {
        wait_full_isr(&c, topic, i, TIMEOUT);
    }
    let report = p.finish();
    assert!(
        report.fatal.is_none(),
        "producer failed: {:?}",
        report.fatal
    );
}

/// Resets every TCP connection to `port` on this host (the kernel's
/// `ss -K`, as a network blip would).
fn reset_connections_to(port: u16) {
    let out = Command::new("ss")
        .args(["-K", "dst", "127.0.0.1", "dport", "=", &format!(":{port}")])
        .output()
        .expect("run ss (iproute2)");
    assert!(
        out.status.success(),
        "ss -K failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn connections_reset_under_a_live_broker_fence_nobody() {
    let _serial = common::serial();
    let topic = "blips";
    let c = Cluster::start_with(3, SETTINGS);
    create_replicated(&c, topic, 1);
    let p = producer(&c, topic, 1);
    p.wait_acks_since(Instant::now(), 200, TIMEOUT, "before the blips");
    let before = wait_full_isr(&c, topic, 0, TIMEOUT);
    let controller = controller_of(&c, before.leader);
    let port = c.node(controller).controller_port;
    for blip in 1..=10 {
        reset_connections_to(port);
        step!("blip {blip}: reset the connections to controller {controller}'s port {port}");
        std::thread::sleep(Duration::from_secs(1));
    }
    // Past the grace period after the last blip.
    std::thread::sleep(Duration::from_secs(2));
    let fenced = fenced_logs(&c);
    assert!(fenced.is_empty(), "brokers were fenced: {fenced:#?}");
    let after = state(&c, &others(&c, &[]), topic, 0);
    assert_eq!(
        (after.leader, after.leader_epoch, &after.isr),
        (before.leader, before.leader_epoch, &before.isr),
        "the partition moved"
    );
    assert_eq!(controller_of(&c, before.leader), controller);
    p.wait_acks_since(Instant::now(), 100, TIMEOUT, "after the blips");
    let report = p.finish();
    assert!(
        report.fatal.is_none(),
        "producer failed: {:?}",
        report.fatal
    );
}
