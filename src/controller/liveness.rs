//! Broker liveness: heartbeats, fencing and unfencing, decided by the active
//! controller.
//!
//! Heartbeats are not Raft entries: the leader keeps when it last heard from
//! each broker in memory, and writes a `FenceBroker` record only when a
//! broker has been silent for longer than `broker.session.timeout.ms`, and an
//! `UnfenceBroker` once it heartbeats again having applied the metadata up to
//! its own fencing. A newly elected leader starts every broker's clock
//! afresh, so an election never fences brokers that were heard by the old
//! leader.

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

#[derive(Clone, Copy, Debug)]
struct Seen {
    epoch: i64,
    at: Instant,
    applied: u64,
}

#[derive(Debug, Default)]
pub struct Liveness {
    seen: Mutex<HashMap<i32, Seen>>,
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

    /// Forgets everything: a new leader gives every broker a full session.
    pub fn reset(&self, image: &MetadataImage, now: Instant) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.clear();
        for b in image.brokers.values() {
            seen.insert(
                b.id,
                Seen {
                    epoch: b.epoch,
                    at: now,
                    applied: 0,
                },
            );
        }
    }

    /// The fence and unfence records the leader should write now.
    pub fn decide(
        &self,
        image: &MetadataImage,
        session: Duration,
        now: Instant,
    ) -> Vec<MetadataCommand> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for b in image.brokers.values() {
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
            if !b.fenced && silent {
                out.push(MetadataCommand::FenceBroker {
                    id: b.id,
                    epoch: b.epoch,
                });
            } else if b.fenced && !silent && s.applied >= b.fenced_at {
                out.push(MetadataCommand::UnfenceBroker {
                    id: b.id,
                    epoch: b.epoch,
                });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::image::BrokerRegistration;

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
            },
        );
        img
    }

    #[test]
    fn silence_fences_and_a_caught_up_heartbeat_unfences() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let session = Duration::from_secs(3);
        let live = image(false, 0);
        l.reset(&live, t0);
        assert!(l
            .decide(&live, session, t0 + Duration::from_secs(2))
            .is_empty());
        assert_eq!(
            l.decide(&live, session, t0 + Duration::from_secs(4)),
            vec![MetadataCommand::FenceBroker { id: 1, epoch: 10 }]
        );
        let fenced = image(true, 50);
        // Heard again, but it has not applied its own fencing yet.
        l.record(
            &Heartbeat {
                broker_id: 1,
                broker_epoch: 10,
                applied: 49,
            },
            t0 + Duration::from_secs(5),
        );
        assert!(l
            .decide(&fenced, session, t0 + Duration::from_secs(5))
            .is_empty());
        l.record(
            &Heartbeat {
                broker_id: 1,
                broker_epoch: 10,
                applied: 50,
            },
            t0 + Duration::from_secs(6),
        );
        assert_eq!(
            l.decide(&fenced, session, t0 + Duration::from_secs(6)),
            vec![MetadataCommand::UnfenceBroker { id: 1, epoch: 10 }]
        );
    }

    #[test]
    fn a_heartbeat_from_an_old_incarnation_does_not_keep_a_broker_alive() {
        let l = Liveness::default();
        let t0 = Instant::now();
        let session = Duration::from_secs(3);
        let live = image(false, 0);
        let old = Heartbeat {
            broker_id: 1,
            broker_epoch: 9,
            applied: 0,
        };
        l.record(&old, t0);
        // The new registration (epoch 10) gets a whole session for its
        // first heartbeat: a restarted broker is not fenced on arrival.
        assert!(l.decide(&live, session, t0).is_empty());
        l.record(&old, t0 + Duration::from_secs(2));
        assert!(l
            .decide(&live, session, t0 + Duration::from_millis(2500))
            .is_empty());
        assert_eq!(
            l.decide(&live, session, t0 + Duration::from_secs(4)),
            vec![MetadataCommand::FenceBroker { id: 1, epoch: 10 }]
        );
    }
}
