//! The broker's life with the controller quorum: register (id,
//! incarnation, endpoints), heartbeat for as long as it runs, registering
//! again if the controller forgets it, and the controlled shutdown that has
//! it fenced before it goes, so that its leaderships move while it still
//! answers its clients.
//!
//! It never touches partitions: what registering or fencing does to them
//! arrives, like every change, as a metadata image (`Broker::follow`).

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::Broker;
use crate::config::Config;
use crate::controller::liveness::{
    Heartbeat, HeartbeatReply, SessionItem, SessionOpen, SESSION_KEEPALIVE,
};
use crate::controller::records::Endpoint;
use crate::controller::records::{FenceCause, MetadataCommand, MetadataResponse};
use crate::controller::{self, Controller};

/// How long a controlled shutdown waits for the controller to fence this
/// broker; past it the broker goes anyway, and is fenced when its session
/// lapses.
pub const FENCE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long registering again (the controller forgot this incarnation) may
/// take before the next heartbeat tries again.
const REREGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// Beyond `replica.fetch.wait.max.ms`, how long a follower fetch already
/// sent may take to come back.
const PARKED_FETCH_MARGIN: Duration = Duration::from_millis(100);
/// The pause between attempts while the quorum is unavailable.
const RETRY: Duration = Duration::from_millis(200);
/// The pause before opening a session again: short against
/// `broker.session.grace.ms`, which a dropped connection must beat.
const SESSION_RETRY: Duration = Duration::from_millis(20);
/// How often a broker with a session checks that its leader still is the
/// one it knows.
const SESSION_LEADER_CHECK: Duration = Duration::from_millis(50);

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The controller answered the registration with something else than
    /// a broker epoch.
    #[error("broker registration refused: {0}")]
    Refused(String),
    /// `what` failed at the controller (for good, or until a deadline).
    #[error("{what}")]
    Controller {
        what: String,
        #[source]
        source: controller::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Retries `op` for as long as the controller quorum is unavailable (no
/// leader, no majority), logging each wait; any other error ends it.
pub async fn until_quorum<F, Fut, T>(what: &str, mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = controller::Result<T>>,
{
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e @ controller::Error::Unavailable(_)) => {
                tracing::info!(error = %e, "waiting for the controller quorum to {what}");
                tokio::time::sleep(RETRY).await;
            }
            Err(source) => {
                return Err(Error::Controller {
                    what: format!("cannot {what}"),
                    source,
                })
            }
        }
    }
}

/// This broker's registration with the controller, kept alive by a
/// heartbeat task until `fence_for_shutdown`.
pub struct Registration {
    config: Arc<Config>,
    controller: Controller,
    /// The current broker epoch: a new one when the heartbeat task had to
    /// register again.
    epoch: Arc<AtomicI64>,
    broker: Arc<Broker>,
    heartbeats: JoinHandle<()>,
    session: JoinHandle<()>,
}

impl Registration {
    /// Registers, retrying until `deadline` (or for as long as it takes
    /// without one), then heartbeats every `broker.heartbeat.interval.ms`.
    pub async fn start(
        config: Arc<Config>,
        controller: Controller,
        broker: Arc<Broker>,
        deadline: Option<Instant>,
    ) -> Result<Registration> {
        let epoch = Arc::new(AtomicI64::new(
            register(&config, &controller, deadline).await?,
        ));
        let heartbeats = tokio::spawn(heartbeats(
            config.clone(),
            controller.clone(),
            broker.clone(),
            epoch.clone(),
        ));
        let session = tokio::spawn(hold_session(
            config.node_id,
            controller.clone(),
            epoch.clone(),
        ));
        Ok(Registration {
            config,
            controller,
            epoch,
            broker,
            heartbeats,
            session,
        })
    }

    /// Controlled shutdown, the first step: stops heartbeating and
    /// replicating as a follower, then has the controller fence this
    /// broker, which moves its leaderships and ISR places to the other
    /// replicas (waiting at most `FENCE_TIMEOUT`). The broker keeps serving
    /// its clients meanwhile and after, until the caller stops it: they are
    /// told NOT_LEADER_OR_FOLLOWER and go to the new leaders.
    pub async fn fence_for_shutdown(self) {
        // Heartbeats stop first. The active controller unfences a broker
        // that heartbeats having applied the metadata up to its fencing
        // (see `controller::liveness`), which would hand leaderships back to
        // it while it drains. The last heartbeat sent reports an index
        // below the fence record, so it cannot.
        self.heartbeats.abort();
        let _ = self.heartbeats.await;
        // Then replication as a follower, and the fence only once no fetch
        // of this broker's can still be parked at a leader (a leader holds
        // one for `replica.fetch.wait.max.ms` at most; a single node has no
        // leader to fetch from). A leader that sees a follower caught up
        // after the fence took it out of the ISR proposes it back, and the
        // refused addition stays pending, its high watermark waiting for a
        // follower that is gone.
        self.broker.stop_following().await;
        if !self.config.is_single_node() {
            tokio::time::sleep(
                Duration::from_millis(self.config.replica_fetch_wait_max_ms) + PARKED_FETCH_MARGIN,
            )
            .await;
        }
        let fence = MetadataCommand::FenceBroker {
            id: self.config.node_id,
            epoch: self.epoch.load(Ordering::Acquire),
            cause: Some(FenceCause::Shutdown),
        };
        match tokio::time::timeout(FENCE_TIMEOUT, self.controller.propose(fence)).await {
            Ok(Ok(MetadataResponse::Ok)) => tracing::info!("fenced by the controller for shutdown"),
            Ok(Ok(other)) => {
                tracing::warn!(answer = ?other, "controlled shutdown: the controller refused the fence")
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "controlled shutdown: could not reach the controller")
            }
            Err(_) => tracing::warn!(
                "controlled shutdown: the controller did not answer within {FENCE_TIMEOUT:?}"
            ),
        }
        // The session last: its end fences too, and must not come before
        // this broker stopped following (see above).
        self.session.abort();
        let _ = self.session.await;
    }
}

/// The endpoints this broker registers: its advertised listeners, and its
/// controller listener unless that is advertised already (peers reach its
/// replication service there; Kafka clients never see it, as Metadata
/// picks the client's own listener).
fn endpoints(config: &Config) -> Vec<Endpoint> {
    let controller_listener = config.listeners.iter().find(|l| {
        config.controller_listener_names.contains(&l.name)
            && !config.advertised_listeners.iter().any(|a| a.name == l.name)
    });
    config
        .advertised_listeners
        .iter()
        .chain(controller_listener)
        .map(|l| Endpoint {
            listener: l.name.clone(),
            host: if l.host.is_empty() {
                "localhost".into()
            } else {
                l.host.clone()
            },
            port: l.port,
            security_protocol: config
                .listener_protocols
                .get(&l.name)
                .map_or("PLAINTEXT", |p| p.as_str())
                .to_string(),
        })
        .collect()
}

/// Registers this broker with the controller, a new incarnation: returns
/// its broker epoch. Retries until `deadline`, or for as long as it takes
/// without one.
pub async fn register(
    config: &Config,
    controller: &Controller,
    deadline: Option<Instant>,
) -> Result<i64> {
    let cmd = MetadataCommand::RegisterBroker {
        id: config.node_id,
        incarnation_id: uuid::Uuid::new_v4(),
        endpoints: endpoints(config),
        rack: config.rack.clone(),
    };
    loop {
        match controller.propose(cmd.clone()).await {
            Ok(MetadataResponse::BrokerRegistered { broker_epoch }) => {
                tracing::info!(broker_epoch, "registered with the controller");
                return Ok(broker_epoch);
            }
            Ok(other) => return Err(Error::Refused(format!("{other:?}"))),
            Err(e) if deadline.is_none_or(|d| Instant::now() < d) => {
                tracing::info!(error = %e, "waiting for the controller quorum to register");
                tokio::time::sleep(RETRY).await;
            }
            Err(source) => {
                return Err(Error::Controller {
                    what: "registering with the controller".into(),
                    source,
                })
            }
        }
    }
}

/// Heartbeats to the active controller every `broker.heartbeat.interval.ms`
/// until aborted; registers again if the controller no longer knows this
/// incarnation, and publishes the new epoch in `shared_epoch`.
async fn heartbeats(
    config: Arc<Config>,
    controller: Controller,
    broker: Arc<Broker>,
    shared_epoch: Arc<AtomicI64>,
) {
    let mut epoch = shared_epoch.load(Ordering::Acquire);
    let mut tick =
        tokio::time::interval(Duration::from_millis(config.broker_heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fenced = false;
    loop {
        tick.tick().await;
        let hb = Heartbeat {
            broker_id: config.node_id,
            broker_epoch: epoch,
            applied: broker.applied_index(),
        };
        match controller.heartbeat(hb).await {
            Ok(HeartbeatReply::Ok { fenced: now_fenced }) => {
                if now_fenced != fenced {
                    tracing::info!(fenced = now_fenced, "broker fencing changed");
                    fenced = now_fenced;
                }
            }
            Ok(HeartbeatReply::StaleEpoch) => {
                tracing::warn!(
                    epoch,
                    "the controller no longer knows this registration; registering again"
                );
                let deadline = Some(Instant::now() + REREGISTER_TIMEOUT);
                match register(&config, &controller, deadline).await {
                    Ok(e) => {
                        epoch = e;
                        shared_epoch.store(e, Ordering::Release);
                    }
                    Err(e) => {
                        let cause = std::error::Error::source(&e)
                            .map(ToString::to_string)
                            .unwrap_or_default();
                        tracing::warn!(error = %e, %cause, "registering again failed")
                    }
                }
            }
            Ok(HeartbeatReply::NotLeader { .. }) => {
                tracing::debug!("no controller leader for the heartbeat")
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

/// Holds this broker's session with the active controller until aborted:
/// opens it, reads the leader's keepalives, and opens it again, at once,
/// when the stream ends, breaks, goes quiet, or the leader changes. The
/// controller fences a broker whose session is gone for longer than
/// `broker.session.grace.ms` (see `controller::liveness`).
async fn hold_session(node_id: i32, controller: Controller, epoch: Arc<AtomicI64>) {
    let quiet_limit = SESSION_KEEPALIVE * 3;
    let mut held_before = false;
    loop {
        let open = SessionOpen {
            broker_id: node_id,
            broker_epoch: epoch.load(Ordering::Acquire),
        };
        match controller.open_session(open).await {
            Ok((leader, mut session)) => {
                let mut check = tokio::time::interval(SESSION_LEADER_CHECK);
                let end = loop {
                    tokio::select! {
                        item = tokio::time::timeout(quiet_limit, session.next()) => match item {
                            Ok(Some(SessionItem::Open)) => {
                                if !held_before {
                                    tracing::info!(controller = leader, "broker session open");
                                    held_before = true;
                                }
                            }
                            Ok(Some(SessionItem::NotLeader { leader: next })) => {
                                break format!("controller {leader} no longer leads (leader: {next:?})")
                            }
                            Ok(Some(SessionItem::StaleEpoch)) => {
                                // The heartbeat task registers again.
                                tokio::time::sleep(RETRY).await;
                                break "the controller does not know this registration".into();
                            }
                            Ok(None) => break format!("the session with controller {leader} ended"),
                            Err(_) => break format!("controller {leader} went quiet for {quiet_limit:?}"),
                        },
                        _ = check.tick() => {
                            if controller.leader_id() != Some(leader) {
                                break format!("controller {leader} no longer leads");
                            }
                        }
                    }
                };
                tracing::debug!(why = %end, "opening the broker session again");
            }
            Err(e) => tracing::debug!(error = %e, "cannot open the broker session yet"),
        }
        tokio::time::sleep(SESSION_RETRY).await;
    }
}
