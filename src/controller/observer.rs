//! The metadata stream: how a node that is not a voter (a broker-only
//! node, `process.roles=broker`) follows the committed metadata.
//!
//! Any voter serves the FollowMetadata RPC from what it has applied: the
//! whole image first when the observer is new or asks for entries the
//! voter's log no longer holds (purged behind a snapshot), then every
//! committed command with its Raft log index, in log order, as it is
//! applied. The observer applies them with `MetadataImage::apply`, as the
//! state machine does, so both images are identical at the same index.
//!
//! The observer remembers the index it last applied; when its stream
//! breaks (the voter died, restarted or was partitioned) it asks the next
//! voter for what comes after that index, so a reconnect resumes and does
//! not restart. It also moves on when the voter goes quiet (no keepalive:
//! paused or hung) or has known no leader for a while (cut off from the
//! quorum, so its stream may be stale). Voters also tell observers who the
//! active controller is, which is how an observer knows where to send
//! proposals and heartbeats.
//!
//! Nothing here writes: an observer's proposals go to the active
//! controller through `Controller::propose`.

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use openraft::BasicNode;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

use super::image::MetadataImage;
use super::records::MetadataCommand;
use super::store::{CommittedLog, CommittedRead};
use super::{Controller, TypeConfig};
use crate::rpc::{self, Channels};

/// Commands read from the log per stream message, at most.
const BATCH: u64 = 500;
/// Pause before trying the next voter after a whole round failed.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);
/// A voter that does not answer the stream request within this is skipped.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);
/// A voter that has known no leader for this long is likely cut off from
/// the quorum (an election takes about a second): its stream may be
/// stale, so the observer moves on to another voter.
const LEADERLESS_LIMIT: Duration = Duration::from_secs(3);

/// A voter repeats its `Leader` item this often when it has nothing else
/// to send, so that an observer can tell a quiet stream from a hung voter.
const KEEPALIVE: Duration = Duration::from_secs(1);
/// An observer that hears nothing for this long (a paused or hung voter,
/// a dead network path) moves on to another voter.
const STALL_LIMIT: Duration = Duration::from_secs(4);

/// Why a stream from one voter ended.
enum Failure {
    /// It could not be opened (the voter is down or not a voter).
    Open(String),
    /// It was open and broke, or went stale.
    Broken(String),
}

/// What an observer asks a voter for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowRequest {
    /// The observer's node id, for the voter's logs.
    pub observer: i32,
    /// The index of the last command the observer applied; 0 for a new
    /// observer, which gets the whole image first.
    pub after: u64,
}

/// One message of the metadata stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StreamItem {
    /// The voter's whole image; the observer replaces its own with it. Its
    /// `last_applied` is where the following commands continue.
    Snapshot(Box<MetadataImage>),
    /// Committed commands with their Raft log indexes, ascending, each
    /// after the observer's last applied index.
    Commands(Vec<(u64, MetadataCommand)>),
    /// The voter's view of the active controller (None: an election is on).
    /// Sent first, on every change, and as a keepalive when the stream is
    /// otherwise quiet.
    Leader(Option<u64>),
}

/// Serves one observer from this voter until the observer goes away, the
/// controller stops, or the log cannot be read. Runs as its own task,
/// feeding `tx`.
pub(super) async fn feed(
    controller: Controller,
    raft: openraft::Raft<TypeConfig>,
    log: CommittedLog,
    req: FollowRequest,
    tx: mpsc::Sender<StreamItem>,
) {
    let mut images = controller.subscribe();
    // Server metrics change with the term, role or leader only (not with
    // every replication ack, as the full metrics do).
    let mut metrics = raft.server_metrics();
    let mut stream = Feed {
        log,
        observer: req.observer,
        tx,
        sent: req.after,
        need_image: req.after == 0,
    };
    let mut leader = metrics.borrow_and_update().current_leader;
    if stream.tx.send(StreamItem::Leader(leader)).await.is_err() {
        return;
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    keepalive.reset();
    loop {
        let image = images.borrow_and_update().clone();
        if stream.catch_up(&image).await.is_break() {
            return;
        }
        tokio::select! {
            changed = images.changed() => if changed.is_err() { return },
            changed = metrics.changed() => {
                if changed.is_err() {
                    return;
                }
                let now = metrics.borrow_and_update().current_leader;
                if now != leader {
                    leader = now;
                    if stream.tx.send(StreamItem::Leader(leader)).await.is_err() {
                        return;
                    }
                }
            }
            _ = keepalive.tick() => {
                if stream.tx.send(StreamItem::Leader(leader)).await.is_err() {
                    return;
                }
            }
            _ = stream.tx.closed() => return,
        }
    }
}

/// The voter's side of one observer's stream.
struct Feed {
    log: CommittedLog,
    observer: i32,
    tx: mpsc::Sender<StreamItem>,
    /// Everything up to this index has been sent.
    sent: u64,
    need_image: bool,
}

impl Feed {
    /// Sends what the observer lacks of `image`: the whole of it if the
    /// observer needs that, then the commands after `sent`. Breaks when the
    /// observer is gone or the log cannot be read.
    async fn catch_up(&mut self, image: &MetadataImage) -> ControlFlow<()> {
        if self.need_image {
            self.sent = image.last_applied;
            self.need_image = false;
            tracing::info!(
                observer = self.observer,
                index = self.sent,
                "metadata stream: sending the whole image"
            );
            if self
                .tx
                .send(StreamItem::Snapshot(Box::new(image.clone())))
                .await
                .is_err()
            {
                return ControlFlow::Break(());
            }
        }
        // A voter behind the observer (just restarted, say) sends nothing
        // until it has applied past what the observer has.
        while self.sent < image.last_applied {
            let sent = self.sent;
            let upto = image.last_applied.min(sent + BATCH);
            let read = {
                let log = self.log.clone();
                tokio::task::spawn_blocking(move || log.read(sent, upto).map_err(Box::new)).await
            };
            let item = match read {
                Ok(Ok(CommittedRead::Commands(cmds))) => {
                    self.sent = upto;
                    if cmds.is_empty() {
                        continue;
                    }
                    StreamItem::Commands(cmds)
                }
                Ok(Ok(CommittedRead::Purged)) => {
                    tracing::info!(
                        observer = self.observer,
                        after = sent,
                        index = image.last_applied,
                        "metadata stream: entries after the observer's index are purged; \
                         sending the whole image"
                    );
                    self.sent = image.last_applied;
                    StreamItem::Snapshot(Box::new(image.clone()))
                }
                Ok(Err(e)) => {
                    tracing::warn!(observer = self.observer, error = %e, "metadata stream: cannot read the log");
                    return ControlFlow::Break(());
                }
                Err(e) => {
                    tracing::warn!(observer = self.observer, error = %e, "metadata stream: log reader failed");
                    return ControlFlow::Break(());
                }
            };
            if self.tx.send(item).await.is_err() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }
}

/// The observer's side: follows the stream from one voter after another,
/// publishing each new image and the active controller, until `stop`.
pub(super) async fn follow(
    node_id: u64,
    voters: BTreeMap<u64, BasicNode>,
    channels: Channels,
    publish: watch::Sender<Arc<MetadataImage>>,
    leader: watch::Sender<Option<u64>>,
    mut stop: watch::Receiver<bool>,
) {
    let order: Vec<(u64, String)> = voters.iter().map(|(id, n)| (*id, n.addr.clone())).collect();
    // Spread observers over the voters.
    let mut next = node_id as usize % order.len().max(1);
    let mut failures_in_a_row = 0usize;
    // After a whole round of voters could not be reached, say so once,
    // not on every attempt.
    let mut quiet = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let (voter, addr) = order[next % order.len()].clone();
        next += 1;
        let session = follow_one(node_id, voter, &addr, &channels, &publish, &leader);
        let outcome = tokio::select! {
            r = session => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        // Whoever leads, this voter no longer tells us; the next one will.
        leader.send_if_modified(|l| {
            let was = *l;
            if was == Some(voter) {
                *l = None;
            }
            was != *l
        });
        match outcome {
            Ok(()) => {
                tracing::info!(
                    controller = voter,
                    "the controller ended the metadata stream; trying the next one"
                );
                failures_in_a_row = 0;
                quiet = false;
            }
            Err(Failure::Broken(e)) => {
                tracing::warn!(controller = voter, %addr, error = %e, "metadata stream broken; trying the next controller");
                failures_in_a_row = 1;
                quiet = false;
            }
            Err(Failure::Open(e)) => {
                if quiet {
                    tracing::debug!(controller = voter, %addr, error = %e, "cannot open the metadata stream");
                } else {
                    tracing::warn!(controller = voter, %addr, error = %e, "cannot open the metadata stream; trying the next controller");
                }
                failures_in_a_row += 1;
            }
        }
        if failures_in_a_row >= order.len() {
            if !quiet {
                tracing::warn!(
                    "no controller serves the metadata stream; retrying every {RECONNECT_PAUSE:?}"
                );
            }
            quiet = true;
            failures_in_a_row = 0;
            tokio::select! {
                _ = tokio::time::sleep(RECONNECT_PAUSE) => {}
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }
}

/// One stream from `voter`. Returns Ok when the voter ended it cleanly
/// (it is shutting down), Err when it could not be opened, broke, or the
/// voter knew no leader for `LEADERLESS_LIMIT`.
async fn follow_one(
    node_id: u64,
    voter: u64,
    addr: &str,
    channels: &Channels,
    publish: &watch::Sender<Arc<MetadataImage>>,
    leader: &watch::Sender<Option<u64>>,
) -> Result<(), Failure> {
    let after = publish.borrow().last_applied;
    let mut stream = open_stream(node_id, addr, channels, after).await?;
    tracing::info!(
        controller = voter,
        %addr,
        after,
        "following the metadata stream"
    );
    let mut following = Following {
        voter,
        publish,
        leader,
        first_commands: after > 0,
        leaderless_since: None,
    };
    loop {
        let Some(item) = following.next_item(&mut stream).await? else {
            return Ok(());
        };
        match item {
            StreamItem::Leader(l) => following.leader_is(l),
            StreamItem::Snapshot(image) => following.install_image(*image)?,
            StreamItem::Commands(cmds) => following.apply_commands(&cmds),
        }
    }
}

/// Asks the voter at `addr` for the stream of what follows `after`.
async fn open_stream(
    node_id: u64,
    addr: &str,
    channels: &Channels,
    after: u64,
) -> Result<tonic::Streaming<rpc::pb::Envelope>, Failure> {
    let mut client = channels
        .client(addr)
        .map_err(|e| Failure::Open(e.to_string()))?;
    let req = FollowRequest {
        observer: node_id as i32,
        after,
    };
    let payload = rpc::encode("follow request", &req).map_err(|e| Failure::Open(e.to_string()))?;
    let stream = tokio::time::timeout(
        OPEN_TIMEOUT,
        client.follow_metadata(rpc::pb::Envelope { payload }),
    )
    .await
    .map_err(|_| Failure::Open(format!("no answer within {OPEN_TIMEOUT:?}")))?
    .map_err(|s| Failure::Open(format!("{:?}: {}", s.code(), s.message())))?
    .into_inner();
    Ok(stream)
}

/// The observer's side of one open stream.
struct Following<'a> {
    voter: u64,
    publish: &'a watch::Sender<Arc<MetadataImage>>,
    leader: &'a watch::Sender<Option<u64>>,
    /// On a resumed stream, until the first commands arrive: those are
    /// counted and logged as the resume.
    first_commands: bool,
    /// Since when the voter has been saying it knows no leader.
    leaderless_since: Option<tokio::time::Instant>,
}

impl Following<'_> {
    /// The next item; `None` when the voter ended the stream. Fails when the
    /// stream broke, went quiet for `STALL_LIMIT`, or has been leaderless for
    /// `LEADERLESS_LIMIT`.
    async fn next_item(
        &self,
        stream: &mut tonic::Streaming<rpc::pb::Envelope>,
    ) -> Result<Option<StreamItem>, Failure> {
        let voter = self.voter;
        let stalled = tokio::time::Instant::now() + STALL_LIMIT;
        let deadline = match self.leaderless_since {
            Some(since) => stalled.min(since + LEADERLESS_LIMIT),
            None => stalled,
        };
        let received = match tokio::time::timeout_at(deadline, stream.message()).await {
            Ok(r) => r,
            Err(_) if deadline < stalled => {
                return Err(Failure::Broken(format!(
                    "controller {voter} has known no leader for {LEADERLESS_LIMIT:?}"
                )))
            }
            Err(_) => {
                return Err(Failure::Broken(format!(
                    "nothing from controller {voter} for {STALL_LIMIT:?}"
                )))
            }
        };
        let msg = match received {
            Ok(Some(msg)) => msg,
            Ok(None) => return Ok(None),
            Err(s) => return Err(Failure::Broken(format!("{:?}: {}", s.code(), s.message()))),
        };
        let item: StreamItem = rpc::decode("metadata stream item", &msg.payload)
            .map_err(|e| Failure::Broken(e.to_string()))?;
        Ok(Some(item))
    }

    /// The voter's view of the active controller, published as ours.
    fn leader_is(&mut self, l: Option<u64>) {
        self.leaderless_since = match (l, self.leaderless_since) {
            (Some(_), _) => None,
            (None, Some(since)) => Some(since),
            (None, None) => Some(tokio::time::Instant::now()),
        };
        self.leader.send_if_modified(|cur| {
            let changed = *cur != l;
            *cur = l;
            changed
        });
    }

    /// Replaces the published image with the voter's, unless it is behind.
    fn install_image(&mut self, image: MetadataImage) -> Result<(), Failure> {
        let index = image.last_applied;
        let mine = self.publish.borrow().last_applied;
        if index < mine {
            return Err(Failure::Broken(format!(
                "the controller sent an image at index {index}, behind this node's {mine}"
            )));
        }
        tracing::info!(
            controller = self.voter,
            index,
            "installed the metadata image from the stream"
        );
        metrics::counter!("runnel_metadata_stream_snapshots_total").increment(1);
        self.first_commands = false;
        self.publish.send_replace(Arc::new(image));
        metrics::gauge!("runnel_metadata_applied_index").set(index as f64);
        Ok(())
    }

    /// Applies the commands not applied yet and publishes the new image.
    fn apply_commands(&mut self, cmds: &[(u64, MetadataCommand)]) {
        let mut image = (**self.publish.borrow()).clone();
        let before = image.last_applied;
        for (index, cmd) in cmds {
            if *index <= image.last_applied {
                continue;
            }
            image.apply(*index, cmd);
        }
        if image.last_applied == before {
            return;
        }
        if self.first_commands {
            self.first_commands = false;
            metrics::counter!("runnel_metadata_stream_resumes_total").increment(1);
            tracing::info!(
                controller = self.voter,
                after = before,
                next = cmds.first().map_or(0, |c| c.0),
                "resumed the metadata stream"
            );
        }
        let index = image.last_applied;
        self.publish.send_replace(Arc::new(image));
        metrics::gauge!("runnel_metadata_applied_index").set(index as f64);
    }
}
