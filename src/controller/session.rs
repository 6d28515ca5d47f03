//! Broker sessions: the stream each broker holds open to the active
//! controller, whose end tells the controller at once that a broker died
//! (see `liveness` for what it decides from that).
//!
//! The leader serves a session for as long as it leads: it says `Open`
//! every `SESSION_KEEPALIVE`, reports the stream's end to `Liveness`, and
//! ends the stream with `NotLeader` when it loses the leadership, so that
//! the broker opens its session with the new leader straight away. A broker
//! on the leader's own node holds its session in process: the two die
//! together.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::StreamExt;

use super::liveness::{SessionItem, SessionOpen, SESSION_KEEPALIVE};
use super::{Controller, Error, Result};
use crate::rpc;

/// How long `open` waits for the leader to answer.
const OPEN_TIMEOUT: Duration = Duration::from_secs(2);

/// A session as the broker holds it.
pub enum Session {
    /// With this node's own controller, the leader.
    Local(mpsc::Receiver<SessionItem>),
    Remote(Box<tonic::Streaming<rpc::pb::Envelope>>),
}

impl Session {
    /// The leader's next word; None when the stream ended or broke.
    pub async fn next(&mut self) -> Option<SessionItem> {
        match self {
            Session::Local(rx) => rx.recv().await,
            Session::Remote(stream) => match stream.next().await? {
                Ok(env) => rpc::decode("session item", &env.payload).ok(),
                Err(status) => {
                    tracing::debug!(error = %status.message(), "broker session broke");
                    None
                }
            },
        }
    }
}

impl Controller {
    /// Opens `open`'s session with the leader as this node knows it:
    /// returns the leader's id and the stream. `Unavailable` when no
    /// leader is known or it cannot be reached.
    pub async fn open_session(&self, open: SessionOpen) -> Result<(u64, Session)> {
        let leader = self
            .leader_id()
            .ok_or_else(|| Error::Unavailable("no controller leader is known".into()))?;
        if leader == self.inner.node_id {
            return Ok((leader, Session::Local(self.serve_session(open))));
        }
        let mut client = self.controller_client(leader)?;
        let payload =
            rpc::encode("session open", &open).map_err(|e| Error::Unavailable(e.to_string()))?;
        let stream = tokio::time::timeout(
            OPEN_TIMEOUT,
            client.broker_session(rpc::pb::Envelope { payload }),
        )
        .await
        .map_err(|_| Error::Unavailable(format!("controller {leader} did not open a session")))?
        .map_err(|s| {
            Error::Unavailable(format!("session with controller {leader}: {}", s.message()))
        })?
        .into_inner();
        Ok((leader, Session::Remote(Box::new(stream))))
    }

    /// Serves a broker's session if this node leads (else the stream says
    /// who does, and ends).
    pub fn serve_session(&self, open: SessionOpen) -> mpsc::Receiver<SessionItem> {
        let (tx, rx) = mpsc::channel(4);
        let refuse = |item: SessionItem| {
            let _ = tx.try_send(item);
        };
        let Some(voter) = self.voter() else {
            refuse(SessionItem::NotLeader {
                leader: self.leader_id(),
            });
            return rx;
        };
        if !self.is_leader() {
            refuse(SessionItem::NotLeader {
                leader: self.leader_id(),
            });
            return rx;
        }
        let current = self
            .image()
            .brokers
            .get(&open.broker_id)
            .is_some_and(|b| b.epoch == open.broker_epoch);
        if !current {
            refuse(SessionItem::StaleEpoch);
            return rx;
        }
        let token = voter.liveness.session_opened(&open);
        tracing::debug!(
            broker = open.broker_id,
            broker_epoch = open.broker_epoch,
            "broker session opened"
        );
        let this = self.clone();
        tokio::spawn(async move {
            let Some(voter) = this.voter() else { return };
            let me = this.inner.node_id;
            let mut metrics = voter.raft.metrics();
            let mut keepalive = tokio::time::interval(SESSION_KEEPALIVE);
            loop {
                tokio::select! {
                    _ = tx.closed() => {
                        voter.liveness.session_closed(open.broker_id, token, std::time::Instant::now());
                        tracing::info!(broker = open.broker_id, broker_epoch = open.broker_epoch, "broker session ended");
                        return;
                    }
                    leader = async {
                        metrics
                            .wait_for(|m| m.current_leader != Some(me))
                            .await
                            .ok()
                            .and_then(|m| m.current_leader)
                    } => {
                        voter.liveness.session_closed(open.broker_id, token, std::time::Instant::now());
                        let _ = tx.send(SessionItem::NotLeader { leader }).await;
                        return;
                    }
                    _ = keepalive.tick() => {
                        if tx.send(SessionItem::Open).await.is_err() {
                            continue; // `closed` reports it.
                        }
                    }
                }
            }
        });
        rx
    }
}
