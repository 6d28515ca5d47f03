//! Group commit of small metadata writes (offset commits, and the ISR
//! changes of a broker's leaders: after a restart of a broker with
//! thousands of partitions each of them proposes one). Proposals that
//! arrive while a batch is in flight wait for it, then go together as one
//! `MetadataCommand::Batch` entry, so that one Raft entry, with its fsyncs
//! and round trips, carries many commits and the commit rate grows with the
//! number of consumers instead of being bound by one entry each. With no
//! batch in flight a proposal goes at once, alone: batching adds no wait at
//! low rates.
//!
//! One batch is in flight at a time and proposals join batches in the order
//! they were handed over, so two commits of the same group apply in that
//! order (a later commit never loses to an earlier one). A `barrier` waits
//! for everything handed over before it: an OffsetFetch reads after the
//! commits a client sent before it, as Kafka, which serves one request of
//! a connection at a time, guarantees.

use tokio::sync::{mpsc, oneshot};

use super::records::{MetadataCommand, MetadataResponse};
use super::{Controller, Error, Result};

/// The most commands in one entry (an entry is read and replicated whole).
const MAX_BATCH: usize = 512;

struct Pending {
    /// None: a barrier, answered once everything before it is.
    cmd: Option<MetadataCommand>,
    reply: oneshot::Sender<Result<MetadataResponse>>,
}

/// Hands proposals to the batching task; cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::UnboundedSender<Pending>,
}

/// A proposal handed to the batcher: awaiting it gives its own answer.
pub struct Proposed(oneshot::Receiver<Result<MetadataResponse>>);

impl Proposed {
    pub async fn answer(self) -> Result<MetadataResponse> {
        self.0
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("the metadata batcher stopped".into())))
    }
}

impl Batcher {
    /// Starts the batching task, which proposes through `controller` for
    /// as long as a `Batcher` lives.
    pub fn start(controller: Controller) -> Batcher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(controller, rx));
        Batcher { tx }
    }

    /// Queues `cmd`, which must be a command that `MetadataImage::apply`
    /// takes in a batch (`CommitOffsets`, `AlterPartition`). The queue position is taken
    /// now, before the returned handle is awaited.
    pub fn propose(&self, cmd: MetadataCommand) -> Proposed {
        self.queue(Some(cmd))
    }

    /// Returns once every proposal handed over before it has its answer.
    pub async fn barrier(&self) {
        let _ = self.queue(None).answer().await;
    }

    fn queue(&self, cmd: Option<MetadataCommand>) -> Proposed {
        let (reply, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError(p)) = self.tx.send(Pending { cmd, reply }) {
            let _ = p.reply.send(Err(Error::Unavailable(
                "the metadata batcher stopped".into(),
            )));
        }
        Proposed(rx)
    }
}

async fn run(controller: Controller, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let mut barriers = Vec::new();
        let mut cmds = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for p in batch {
            match p.cmd {
                Some(cmd) => {
                    cmds.push(cmd);
                    replies.push(p.reply);
                }
                None => barriers.push(p.reply),
            }
        }
        propose(&controller, cmds, replies).await;
        for b in barriers {
            let _ = b.send(Ok(MetadataResponse::Ok));
        }
    }
}

/// Proposes `cmds` (alone if one, else as a batch) and answers each.
async fn propose(
    controller: &Controller,
    mut cmds: Vec<MetadataCommand>,
    mut replies: Vec<oneshot::Sender<Result<MetadataResponse>>>,
) {
    let count = cmds.len();
    if count <= 1 {
        if let (Some(cmd), Some(reply)) = (cmds.pop(), replies.pop()) {
            let _ = reply.send(controller.propose(cmd).await);
        }
        return;
    }
    match controller.propose(MetadataCommand::Batch(cmds)).await {
        Ok(MetadataResponse::Batch(answers)) if answers.len() == count => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(other) => {
            let msg = format!("a batch of {count} commands was answered with {other:?}");
            tracing::error!("{msg}");
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(msg.clone())));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(Error::Unavailable(msg.clone())));
            }
        }
    }
}
