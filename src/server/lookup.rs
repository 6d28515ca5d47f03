//! Lookups the handlers share: a partition's leader replica here, whether
//! this broker coordinates a group, how clients reach a broker, which node
//! clients see as the controller. Each answers with the Kafka error a
//! client should get, so that no handler imports another.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;

use super::{error_code, Ctx};
use crate::controller::image::{BrokerRegistration, MetadataImage, TopicImage};
use crate::controller::records::FenceCause;
use crate::group::coordinator_for;
use crate::replication::Partition;

/// The partition's leader replica on this broker, or the error a client
/// should see: `unknown` for a topic or partition that does not exist,
/// NOT_LEADER_OR_FOLLOWER when another broker leads it.
pub async fn leader_replica(
    ctx: &Ctx,
    topic: Option<&TopicImage>,
    index: i32,
    unknown: ResponseError,
) -> Result<Arc<Partition>, ResponseError> {
    let Some(t) = topic else { return Err(unknown) };
    if index < 0 || index as usize >= t.partitions.len() {
        return Err(ResponseError::UnknownTopicOrPartition);
    }
    ctx.broker
        .leader_partition(t.id, index)
        .await
        .ok_or(ResponseError::NotLeaderOrFollower)
}

/// The leader replica, for a client that believes the leader epoch is
/// `current_leader_epoch` (KIP-320; -1: it does not say): FENCED_LEADER_EPOCH
/// when that is older than ours, UNKNOWN_LEADER_EPOCH when newer.
pub async fn leader_replica_in_epoch(
    ctx: &Ctx,
    topic: Option<&TopicImage>,
    index: i32,
    unknown: ResponseError,
    current_leader_epoch: i32,
) -> Result<Arc<Partition>, ResponseError> {
    let p = leader_replica(ctx, topic, index, unknown).await?;
    match error_code::leader_epoch(current_leader_epoch, p.leader_epoch()) {
        Some(e) => Err(e),
        None => Ok(p),
    }
}

/// None when this broker coordinates `group`, which it then holds (loaded
/// from the group's Raft record if it just took the group over); else the
/// error to answer.
pub fn not_coordinator(ctx: &Ctx, group: &str) -> Option<ResponseError> {
    let image = ctx.controller.image();
    match coordinator_for(&image, group) {
        Some(id) if id == ctx.config.node_id => {
            ctx.groups.load(&image, group);
            None
        }
        Some(_) => Some(ResponseError::NotCoordinator),
        None => Some(ResponseError::CoordinatorNotAvailable),
    }
}

/// The host and port a broker advertises on the listener this request came
/// in on (as Kafka answers: a client on `INTERNAL` gets every broker's
/// `INTERNAL` address); falls back to its first endpoint.
pub fn broker_endpoint(ctx: &Ctx, b: &BrokerRegistration) -> Option<(String, i32)> {
    b.endpoints
        .iter()
        .find(|e| e.listener == ctx.listener)
        .or(b.endpoints.first())
        .map(|e| (e.host.clone(), e.port as i32))
}

/// How long Metadata keeps listing a broker to a producer's connection
/// after it was fenced for a closed session (a killed process) or its
/// controlled shutdown: long enough for the producer to see its
/// partitions' new leaders while the broker is still listed.
///
/// Why: librdkafka (2.12) decommissions a broker the moment a Metadata
/// answer leaves it out. When that same answer also moves the broker's
/// partitions to new leaders, the decommission runs first and parks the
/// partitions on librdkafka's internal broker until a later refresh, about
/// 1 s after a leader's kill. Listing the fenced broker a little longer
/// splits the one answer into two: first the new leaders, later the
/// broker's removal, with nothing left on it.
///
/// Only to producers' connections (those that have sent a Produce): a
/// consumer whose ListOffsets waits in the fenced broker's queue would get
/// its answer, once that broker is back, as an outdated one, and librdkafka
/// then starts the partition again from the logical offset it was assigned
/// at (offset 0 for `OFFSET_BEGINNING`). Dropping the broker at once, as
/// Kafka does, makes librdkafka fail that request instead.
///
/// Only for those causes: a broker fenced for silence (a SIGSTOP, a
/// network cut) still holds its clients' connections open, and an
/// idempotent producer's request in flight on it would wait for its
/// request timeout while the broker stays listed, where its removal fails
/// that request at once (measured: no ack within 60 s, against 8 s).
pub const FENCED_LISTING: Duration = Duration::from_secs(3);

/// Whether a fence of `cause` lets the broker linger (see [`FENCED_LISTING`]).
fn lingers(cause: Option<FenceCause>) -> bool {
    matches!(cause, Some(FenceCause::SessionLost | FenceCause::Shutdown))
}

/// Which brokers a Metadata answer lists: the unfenced ones, and, to a
/// producer's connection, for [`FENCED_LISTING`] after this node first saw
/// it fenced, a broker that was unfenced in the same registration (epoch)
/// before and was fenced for a closed session or its shutdown. A broker
/// that registers again (a restart) is fenced in a new epoch until it has
/// caught up, and is not listed until then, as Kafka answers.
#[derive(Default)]
pub struct Listing {
    seen: Mutex<HashMap<i32, Seen>>,
}

#[derive(Clone, Copy)]
struct Seen {
    epoch: i64,
    /// When this node first saw that epoch fenced; `None` while unfenced.
    fenced_since: Option<Instant>,
}

impl Listing {
    /// The brokers of `image` to list, as of `now`, in the image's order;
    /// `lingering`: whether recently fenced ones may be listed.
    pub fn listed<'a>(
        &self,
        image: &'a MetadataImage,
        now: Instant,
        lingering: bool,
    ) -> Vec<&'a BrokerRegistration> {
        let mut seen = self.seen.lock().expect("listing lock");
        seen.retain(|id, _| image.brokers.contains_key(id));
        image
            .brokers
            .values()
            .filter(|b| {
                if !b.fenced {
                    seen.insert(
                        b.id,
                        Seen {
                            epoch: b.epoch,
                            fenced_since: None,
                        },
                    );
                    return true;
                }
                match seen.get_mut(&b.id) {
                    Some(s) if s.epoch == b.epoch && lingers(b.fence_cause) => {
                        let since = *s.fenced_since.get_or_insert(now);
                        lingering && now.duration_since(since) < FENCED_LISTING
                    }
                    _ => false,
                }
            })
            .collect()
    }
}

/// Who leads a partition as the metadata image says (KIP-951): (leader id,
/// leader epoch), for a NOT_LEADER_OR_FOLLOWER or FENCED_LEADER_EPOCH answer
/// to carry, so that a client redirects without a Metadata round trip.
/// `None` when the partition is unknown or has no leader.
pub fn current_leader(topic: Option<&TopicImage>, index: i32) -> Option<(i32, i32)> {
    let p = topic?.partitions.get(usize::try_from(index).ok()?)?;
    (p.leader >= 0).then_some((p.leader, p.leader_epoch))
}

/// The endpoints of `ids` (deduplicated, in order) on this request's
/// listener, for a response's `node_endpoints` (KIP-951): (id, host, port,
/// rack). Unknown or fenced brokers are left out.
pub fn node_endpoints(
    ctx: &Ctx,
    ids: impl IntoIterator<Item = i32>,
) -> Vec<(i32, String, i32, Option<String>)> {
    let image = ctx.controller.image();
    let mut ids: Vec<i32> = ids.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| {
            let b = image.brokers.get(&id).filter(|b| !b.fenced)?;
            let (host, port) = broker_endpoint(ctx, b)?;
            Some((id, host, port, b.rack.clone()))
        })
        .collect()
}

/// The active controller as clients see it: the Raft leader's node id when
/// that node is also a live broker; otherwise (a controller-only leader,
/// which clients cannot reach) this broker, which forwards admin requests
/// to the active controller, as KRaft brokers answer.
pub fn controller_id(ctx: &Ctx) -> i32 {
    let Some(leader) = ctx.controller.leader_id().map(|id| id as i32) else {
        return -1;
    };
    let image = ctx.controller.image();
    if image.brokers.get(&leader).is_some_and(|b| !b.fenced) {
        leader
    } else {
        ctx.config.node_id
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Fenced for a lost session, when fenced.
    fn broker(id: i32, epoch: i64, fenced: bool) -> BrokerRegistration {
        registration(id, epoch, fenced, fenced.then_some(FenceCause::SessionLost))
    }

    /// Fenced for `cause` (`None`: a record that does not say).
    fn fenced_for(id: i32, epoch: i64, cause: Option<FenceCause>) -> BrokerRegistration {
        registration(id, epoch, true, cause)
    }

    fn registration(
        id: i32,
        epoch: i64,
        fenced: bool,
        cause: Option<FenceCause>,
    ) -> BrokerRegistration {
        BrokerRegistration {
            id,
            incarnation_id: uuid::Uuid::nil(),
            epoch,
            endpoints: Vec::new(),
            rack: None,
            fenced,
            fenced_at: 0,
            coordinator: !fenced,
            fence_cause: cause,
        }
    }

    fn image(brokers: &[BrokerRegistration]) -> MetadataImage {
        let map: BTreeMap<i32, BrokerRegistration> =
            brokers.iter().map(|b| (b.id, b.clone())).collect();
        MetadataImage {
            brokers: Arc::new(map),
            ..Default::default()
        }
    }

    fn ids(listed: Vec<&BrokerRegistration>) -> Vec<i32> {
        listed.into_iter().map(|b| b.id).collect()
    }

    #[test]
    fn a_fenced_broker_stays_listed_for_a_while_in_the_same_epoch() {
        let listing = Listing::default();
        let t0 = Instant::now();
        let up = image(&[broker(1, 10, false), broker(2, 20, false)]);
        assert_eq!(ids(listing.listed(&up, t0, true)), [1, 2]);
        // Broker 2 is fenced: still listed until FENCED_LISTING after this
        // node first saw it fenced, then not.
        let down = image(&[broker(1, 10, false), broker(2, 20, true)]);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(ids(listing.listed(&down, t1, true)), [1, 2]);
        assert_eq!(
            ids(listing.listed(&down, t1 + FENCED_LISTING / 2, true)),
            [1, 2]
        );
        assert_eq!(ids(listing.listed(&down, t1 + FENCED_LISTING, true)), [1]);
    }

    #[test]
    fn only_producers_connections_see_a_fenced_broker() {
        let listing = Listing::default();
        let t0 = Instant::now();
        let up = image(&[broker(1, 10, false), broker(2, 20, false)]);
        assert_eq!(ids(listing.listed(&up, t0, false)), [1, 2]);
        let down = image(&[broker(1, 10, false), broker(2, 20, true)]);
        assert_eq!(ids(listing.listed(&down, t0, false)), [1]);
        assert_eq!(ids(listing.listed(&down, t0, true)), [1, 2]);
    }

    #[test]
    fn a_broker_fenced_for_silence_is_dropped_at_once() {
        let listing = Listing::default();
        let t0 = Instant::now();
        let up = image(&[broker(1, 10, false), broker(2, 20, false)]);
        assert_eq!(ids(listing.listed(&up, t0, true)), [1, 2]);
        let silent = image(&[
            broker(1, 10, false),
            fenced_for(2, 20, Some(FenceCause::Silent)),
        ]);
        assert_eq!(ids(listing.listed(&silent, t0, true)), [1]);
        let old = image(&[broker(1, 10, false), broker(2, 20, false)]);
        listing.listed(&old, t0, true);
        let unknown = image(&[broker(1, 10, false), fenced_for(2, 20, None)]);
        assert_eq!(ids(listing.listed(&unknown, t0, true)), [1]);
        // A controlled shutdown lingers like a killed process.
        listing.listed(&old, t0, true);
        let shut = image(&[
            broker(1, 10, false),
            fenced_for(2, 20, Some(FenceCause::Shutdown)),
        ]);
        assert_eq!(ids(listing.listed(&shut, t0, true)), [1, 2]);
    }

    #[test]
    fn a_registration_that_was_never_unfenced_is_not_listed() {
        let listing = Listing::default();
        let t0 = Instant::now();
        assert_eq!(
            ids(listing.listed(&image(&[broker(1, 10, false)]), t0, true)),
            [1]
        );
        // Broker 1 restarts: a new epoch, fenced until it has caught up.
        let back = image(&[broker(1, 11, true), broker(2, 20, true)]);
        assert!(listing.listed(&back, t0, true).is_empty());
        let caught_up = image(&[broker(1, 11, false)]);
        assert_eq!(ids(listing.listed(&caught_up, t0, true)), [1]);
    }
}
