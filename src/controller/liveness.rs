//! Broker liveness: heartbeats, sessions, fencing and unfencing, decided by
//! the active controller.
//!
//! Neither heartbeats nor sessions are Raft entries: the leader keeps in
//! memory when it last heard from each broker and whether the broker holds a
//! session with it, and writes a `FenceBroker` record when
//!
//! * the broker's session ended (the stream it holds open to the leader,
//!   see `BrokerSession` in proto/runnel.proto) and no new one opened within
//!   `broker.session.grace.ms`: a killed process's kernel resets its
//!   connections, so a dead broker is fenced within the grace period, and a
//!   connection that merely dropped is opened again well within it;
//! * or the broker has been silent for longer than
//!   `broker.session.timeout.ms`, the backstop for what closes nothing: a
//!   paused process, a network partition.
//!
//! It writes an `UnfenceBroker` once the broker holds a session again and
//! heartbeats having applied the metadata up to its own fencing.
//!
//! A newly elected leader knows none of the sessions the old one held. It
//! gives every broker a full heartbeat session and the grace period to open
//! a session with it (live brokers do so as soon as they hear of the new
//! leader), so a broker that died with the old leader is fenced a grace
//! period after the election, not a session timeout after it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::image::MetadataImage;
use super::records::MetadataCommand;

/// A broker's heartbeat, as carried to the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker_id: i32,
    pub broker_epoch: i64,
    /// The metadata log index the broker has applied.
    pub applied: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    Ok {
        fenced: bool,
    },
    /// The broker's registration is older than the one the image holds (it
    /// restarted, or is a stale process): it must register again.
    StaleEpoch,
    NotLeader {
        leader: Option<u64>,
    },
}

/// What a broker sends to open its session with the leader.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionOpen {
    pub broker_id: i32,
    pub broker_epoch: i64,
}

/// What the leader sends down a session stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SessionItem {
    /// The session is open (the first item), or still is (every
    /// `SESSION_KEEPALIVE` after).
    Open,
    /// This node does not lead (any more): the broker opens its session
    /// with `leader`. The stream ends after it.
    NotLeader { leader: Option<u64> },
    /// The registration is not the one the image holds; the stream ends.
    StaleEpoch,
}

/// How often the leader says an open session still is, so that a broker
/// notices a leader that went quiet without closing (paused, cut off).
pub const SESSION_KEEPALIVE: Duration = Duration::from_secs(1);

/// One broker's session with this leader.
#[derive(Clone, Copy, Debug)]
struct Session {
    epoch: i64,
    /// Tells this session from the one before it when an old stream's end
    /// is reported after a new stream opened.
    token: u64,
    open: bool,
    /// While not open: since when (closed, or expected since an election
    /// or a registration).
    since: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    epoch: i64,
    at: Instant,
    applied: u64,
}

#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<i32, Seen>>,
    sessions: Mutex<HashMap<i32, Session>>,
    next_token: std::sync::atomic::AtomicU64,
}

pub use super::records::FenceCause;

/// A decision of the leader's: the record to write (a fence carries why).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub command: MetadataCommand,
}

impl Liveness {
    pub fn record(&self, hb: &Heartbeat, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        // An older incarnation's heartbeat never keeps a newer one alive.
        if seen
            .get(&hb.broker_id)
            .is_some_and(|s| s.epoch > hb.broker_epoch)
        {
            return;
        }
        seen.insert(
            hb.broker_id,
            Seen {
                epoch: hb.broker_epoch,
                at: now,
                applied: hb.applied,
            },
        );
    }

    /// Every broker heard from since this node took over, with the
    /// metadata index it last reported and when: (id, applied, heard at).
    pub fn seen(&self) -> Vec<(i32, u64, Instant)> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = seen.iter().map(|(id, s)| (*id, s.applied, s.at)).collect();
        out.sort_unstable_by_key(|(id, ..)| *id);
        out
    }

    /// A broker opened its session (the caller checked its epoch against
    /// the image): returns the token that `session_closed` names it by.
    pub fn session_opened(&self, open: &SessionOpen) -> u64 {
        let token = self
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        sessions.insert(
            open.broker_id,
            Session {
                epoch: open.broker_epoch,
                token,
                open: true,
                since: Instant::now(),
            },
        );
        token
    }

    /// The session `token` of `broker` ended at `now`: unless another one
    /// opens within the grace period, the broker is fenced.
    pub fn session_closed(&self, broker: i32, token: u64, now: Instant) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = sessions.get_mut(&broker) {
            if s.token == token && s.open {
                s.open = false;
                s.since = now;
            }
        }
    }

    /// Forgets what an earlier leadership knew: a new leader gives every
    /// broker a full heartbeat session, and the grace period to open a
    /// session with it unless it holds one already. (A session's stream
    /// ends, and reports it, when this node stops leading, so an open
    /// session is always one of this leadership.)
    pub fn reset(&self, image: &MetadataImage, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        seen.clear();
        // Sessions opened with this node since it was elected, before its
        // fencing loop noticed, are live: only the others are forgotten.
        sessions.retain(|_, s| s.open);
        for b in image.brokers.values() {
            seen.insert(
                b.id,
                Seen {
                    epoch: b.epoch,
                    at: now,
                    applied: 0,
                },
            );
            sessions
                .entry(b.id)
                .or_insert_with(|| waiting_session(b.epoch, now));
        }
    }

    /// The fence and unfence records the leader should write now: `session`
    /// is `broker.session.timeout.ms`, `grace` `broker.session.grace.ms`.
    pub fn decide(
        &self,
        image: &MetadataImage,
        session: Duration,
        grace: Duration,
        now: Instant,
    ) -> Vec<Decision> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for b in image.brokers.values() {
            // A registration this leader has no session for (new since the
            // reset, or a restarted broker's new epoch) has the grace
            // period to open one, as after an election.
            let sess = sessions
                .entry(b.id)
                .or_insert_with(|| waiting_session(b.epoch, now));
            if sess.epoch < b.epoch {
                *sess = waiting_session(b.epoch, now);
            }
            let sess = *sess;
            let lost = !sess.open && now.saturating_duration_since(sess.since) >= grace;
            // A broker registered since the last reset starts its session now.
            let s = seen.entry(b.id).or_insert(Seen {
                epoch: b.epoch,
                at: now,
                applied: 0,
            });
            // A registration newer than the last heartbeat (a restarted
            // broker) starts its session now: fencing it before its first
            // heartbeat could arrive would move its leaderships and ISR
            // places for nothing.
            if s.epoch != b.epoch {
                *s = Seen {
                    epoch: b.epoch,
                    at: now,
                    applied: 0,
                };
            }
            let s = *s;
            let silent = now.saturating_duration_since(s.at) > session;
            if !b.fenced && (silent || lost) {
                out.push(Decision {
                    command: MetadataCommand::FenceBroker {
                        id: b.id,
                        epoch: b.epoch,
                        cause: Some(if lost {
                            FenceCause::SessionLost
                        } else {
                            FenceCause::Silent
                        }),
                    },
                });
            } else if b.fenced
                && !silent
                && sess.open
                && sess.epoch == b.epoch
                && s.applied >= b.fenced_at
            {
                out.push(Decision {
                    command: MetadataCommand::UnfenceBroker {
                        id: b.id,
                        epoch: b.epoch,
                    },
                });
            } else if !b.fenced && !b.coordinator && sess.open && image.in_every_isr(b.id) {
                out.push(Decision {
                    command: MetadataCommand::AdmitCoordinator {
                        id: b.id,
                        epoch: b.epoch,
                    },
                });
            }
        }
        out
    }
}

/// A registration expected to open its session within the grace period
/// from `now`.
fn waiting_session(epoch: i64, now: Instant) -> Session {
    Session {
        epoch,
        token: u64::MAX,
        open: false,
        since: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::BrokerRegistration;

    const SESSION: Duration = Duration::from_secs(3);
    const GRACE: Duration = Duration::from_millis(500);

    fn image(fenced: bool, fenced_at: u64) -> MetadataImage {
        let mut img = MetadataImage::default();
        std::sync::Arc::make_mut(&mut img.brokers).insert(
            1,
            BrokerRegistration {
                id: 1,
                incarnation_id: uuid::Uuid::nil(),
                epoch: 10,
                endpoints: vec![],
                rack: None,
                fenced,
                fenced_at,
                coordinator: true,
                fence_cause: None,
            },
        );
        img
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn commands(l: &Liveness, img: &MetadataImage, now: Instant) -> Vec<MetadataCommand> {
        l.decide(img, SESSION, GRACE, now)
            .into_iter()
            .map(|d| d.command)
            .collect()
    }

    fn heartbeat(l: &Liveness, epoch: i64, applied: u64, at: Instant) {
        l.record(
            &Heartbeat {
                broker_id: 1,
                broker_epoch: epoch,
                applied,
            },
            at,
        );
    }

    fn open(l: &Liveness) -> u64 {
        l.session_opened(&SessionOpen {
            broker_id: 1,
            broker_epoch: 10,
        })
    }

    const SILENT: MetadataCommand = MetadataCommand::FenceBroker {
        id: 1,
        epoch: 10,
        cause: Some(FenceCause::Silent),
    };
    const LOST: MetadataCommand = MetadataCommand::FenceBroker {
        id: 1,
        epoch: 10,
        cause: Some(FenceCause::SessionLost),
    };
    const UNFENCE: MetadataCommand = MetadataCommand::UnfenceBroker { id: 1, epoch: 10 };

    #[test]
    fn silence_fences_and_a_caught_up_heartbeat_unfences() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let live = image(false, 0);
        l.reset(&live, t0);
        open(&l);
        assert!(commands(&l, &live, t0 + ms(2000)).is_empty());
        let d = l.decide(&live, SESSION, GRACE, t0 + ms(4000));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].command, SILENT);
        let fenced = image(true, 50);
        // Heard again, but it has not applied its own fencing yet.
        heartbeat(&l, 10, 49, t0 + ms(5000));
        assert!(commands(&l, &fenced, t0 + ms(5000)).is_empty());
        heartbeat(&l, 10, 50, t0 + ms(6000));
        assert_eq!(commands(&l, &fenced, t0 + ms(6000)), vec![UNFENCE]);
    }

    #[test]
    fn a_heartbeat_from_an_old_incarnation_does_not_keep_a_broker_alive() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let live = image(false, 0);
        heartbeat(&l, 9, 0, t0);
        open(&l);
        // The new registration (epoch 10) gets a whole session for its
        // first heartbeat: a restarted broker is not fenced on arrival.
        assert!(commands(&l, &live, t0).is_empty());
        heartbeat(&l, 9, 0, t0 + ms(2000));
        assert!(commands(&l, &live, t0 + ms(2500)).is_empty());
        assert_eq!(commands(&l, &live, t0 + ms(4000)), vec![SILENT]);
    }

    #[test]
    fn a_lost_session_fences_after_the_grace_period_despite_heartbeats() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let live = image(false, 0);
        l.reset(&live, t0);
        let token = open(&l);
        heartbeat(&l, 10, 0, t0);
        l.session_closed(1, token, t0 + ms(100));
        assert!(commands(&l, &live, t0 + ms(599)).is_empty());
        let d = l.decide(&live, SESSION, GRACE, t0 + ms(600));
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].command, LOST);
        // Fenced, heartbeating and caught up, but with no session: it stays
        // fenced until it opens one.
        let fenced = image(true, 50);
        heartbeat(&l, 10, 50, t0 + ms(700));
        assert!(commands(&l, &fenced, t0 + ms(700)).is_empty());
        open(&l);
        assert_eq!(commands(&l, &fenced, t0 + ms(800)), vec![UNFENCE]);
    }

    #[test]
    fn a_session_opened_again_within_the_grace_period_is_not_fenced() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let live = image(false, 0);
        l.reset(&live, t0);
        let first = open(&l);
        l.session_closed(1, first, t0 + ms(100));
        let second = open(&l);
        // The first stream's end reported late does not close the second.
        l.session_closed(1, first, t0 + ms(200));
        assert!(commands(&l, &live, t0 + ms(2000)).is_empty());
        l.session_closed(1, second, t0 + ms(2100));
        assert_eq!(commands(&l, &live, t0 + ms(2600)), vec![LOST]);
    }

    #[test]
    fn a_broker_coordinates_groups_once_it_holds_a_session_and_is_in_every_isr() {
        use crate::controller::image::{PartitionImage, TopicImage};
        let l = Liveness::default();
        let t0 = Instant::now();
        let mut img = image(false, 0);
        std::sync::Arc::make_mut(&mut img.brokers)
            .get_mut(&1)
            .expect("broker 1")
            .coordinator = false;
        let topic = |isr: Vec<i32>| {
            std::sync::Arc::new(TopicImage {
                name: "t".into(),
                id: uuid::Uuid::nil(),
                configs: Default::default(),
                partitions: vec![PartitionImage {
                    replicas: vec![2, 1],
                    leader: 2,
                    leader_epoch: 0,
                    isr,
                    partition_epoch: 0,
                }],
            })
        };
        std::sync::Arc::make_mut(&mut img.topics).insert("t".into(), topic(vec![2]));
        l.reset(&img, t0);
        open(&l);
        // Still catching up on t-0: not yet.
        assert!(commands(&l, &img, t0 + ms(100)).is_empty());
        std::sync::Arc::make_mut(&mut img.topics).insert("t".into(), topic(vec![2, 1]));
        assert_eq!(
            commands(&l, &img, t0 + ms(200)),
            vec![MetadataCommand::AdmitCoordinator { id: 1, epoch: 10 }]
        );
    }

    #[test]
    fn a_new_leader_fences_a_broker_that_opens_no_session_within_the_grace_period() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let live = image(false, 0);
        l.reset(&live, t0);
        assert!(commands(&l, &live, t0 + ms(499)).is_empty());
        assert_eq!(commands(&l, &live, t0 + ms(500)), vec![LOST]);
        // One that does open in time stays.
        let l = Liveness::default();
        l.reset(&live, t0);
        open(&l);
        assert!(commands(&l, &live, t0 + ms(2000)).is_empty());
        // One that opened before the fencing loop noticed the election
        // keeps its session through the reset.
        let l = Liveness::default();
        open(&l);
        l.reset(&live, t0);
        assert!(commands(&l, &live, t0 + ms(2000)).is_empty());
    }
}
