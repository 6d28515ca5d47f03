//! RocksDB storage for the controller's Raft group: the log store
//! (`RaftLogStorage`) and the state machine (`RaftStateMachine`) share one
//! database with three column families.
//!
//! * `logs`: key = log index as big-endian u64 (so iteration is in log
//!   order), value = the JSON entry.
//! * `meta`: the vote, the committed log id and the last purged log id.
//! * `sm`: the applied state (last applied log id, last membership, the
//!   metadata image) and the current snapshot (meta and data under separate
//!   keys, written in one batch).
//!
//! Durability: votes and truncations are written with a synced WAL before
//! they are acknowledged. Appended entries are group-committed: `append`
//! writes them unsynced and hands openraft's callback to the log's syncer
//! thread, which syncs the WAL once for every append written before that
//! sync began and only then reports them flushed, so that concurrent
//! proposals (offset commits from many consumers) share one fsync instead
//! of queueing behind one each. The applied state is written
//! unsynced once `PERSIST_EVERY` entries have been applied since it was
//! last written (encoding the whole image after every batch made each
//! offset commit cost as much as the cluster's metadata): it can be rebuilt
//! from the log, which openraft re-applies up to the saved committed index
//! on start. Building
//! or installing a snapshot syncs the WAL, which also makes every earlier
//! applied-state write durable, before openraft may purge the logs the
//! snapshot covers.
//!
//! Nothing here panics on a storage or decoding failure: every error is an
//! openraft `StorageError`, which stops the Raft node instead of letting it
//! run on state it cannot trust.

// openraft's trait methods return its `StorageError` (224 bytes); the
// helpers here return the same type so that `?` needs no conversion.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend,
    RaftLogReader, RaftSnapshotBuilder, SnapshotMeta, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use rocksdb::{
    ColumnFamily, ColumnFamilyDescriptor, Direction, IteratorMode, Options, WriteBatch,
    WriteOptions, DB,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::image::MetadataImage;
use super::records::{MetadataCommand, MetadataResponse};
use super::TypeConfig;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;
type StoredSnapshot = (SnapshotMeta<NodeId, BasicNode>, Vec<u8>);

/// Entries applied between two writes of the applied state; at most this
/// many are applied again on a restart (on top of those since the last
/// snapshot, when the snapshot is newer).
const PERSIST_EVERY: u64 = 1024;

const CF_LOGS: &str = "logs";
const CF_META: &str = "meta";
const CF_SM: &str = "sm";

const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_LAST_PURGED: &[u8] = b"last_purged";
const KEY_APPLIED_STATE: &[u8] = b"applied_state";
const KEY_SNAPSHOT_META: &[u8] = b"snapshot_meta";
const KEY_SNAPSHOT_DATA: &[u8] = b"snapshot_data";

fn storage_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

fn msg_err(subject: ErrorSubject<NodeId>, verb: ErrorVerb, msg: String) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::error(msg)).into()
}

fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

fn sync_writes() -> WriteOptions {
    let mut w = WriteOptions::default();
    w.set_sync(true);
    w
}

fn cf<'a>(db: &'a DB, name: &str) -> StorageResult<&'a ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| {
        msg_err(
            ErrorSubject::Store,
            ErrorVerb::Read,
            format!("column family {name:?} is missing"),
        )
    })
}

/// Opens (creating if needed) the controller database in `dir` and returns
/// the two halves openraft drives. `publish` receives the image after every
/// apply batch and after a snapshot is installed; it is set to the
/// persisted image before this returns.
pub fn open(
    dir: &Path,
    publish: watch::Sender<Arc<MetadataImage>>,
) -> StorageResult<(LogStore, StateMachineStore)> {
    let mut opts = Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let cfs = [CF_LOGS, CF_META, CF_SM]
        .into_iter()
        .map(|name| ColumnFamilyDescriptor::new(name, Options::default()));
    let db = DB::open_cf_descriptors(&opts, dir, cfs)
        .map_err(|e| storage_err(ErrorSubject::Store, ErrorVerb::Read, e))?;
    let (closed, _) = watch::channel(());
    let db = Arc::new(StoreDb { db, closed });
    let sm = StateMachineStore::load(db.clone(), publish)?;
    let syncer = start_syncer(Arc::downgrade(&db));
    Ok((LogStore { db, syncer }, sm))
}

/// Starts the thread that group-commits appended entries (see the module
/// comment); it ends once every sender, so every `LogStore`, is gone, and
/// holds the database only weakly so that it never keeps it open.
fn start_syncer(db: std::sync::Weak<StoreDb>) -> std::sync::mpsc::Sender<LogFlushed<TypeConfig>> {
    let (tx, rx) = std::sync::mpsc::channel::<LogFlushed<TypeConfig>>();
    let spawned = std::thread::Builder::new()
        .name("controller-log-sync".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                // Every callback queued now belongs to an append already
                // written: one sync covers them all.
                let waiting: Vec<_> = std::iter::once(first).chain(rx.try_iter()).collect();
                let synced = match db.upgrade() {
                    Some(db) => db.flush_wal(true).map_err(|e| e.to_string()),
                    None => Err("the controller database is closed".to_string()),
                };
                for callback in waiting {
                    callback.log_io_completed(
                        synced.clone().map_err(|e| std::io::Error::other(e.clone())),
                    );
                }
            }
        });
    if let Err(e) = spawned {
        // Without the thread every append reports an error, which stops
        // the Raft node with a storage error naming it.
        tracing::error!(error = %e, "cannot start the controller log's sync thread");
    }
    tx
}

/// The database, shared by the log store, its readers, the state machine
/// and snapshot builders.
pub struct StoreDb {
    // Field order matters: `db` is closed before `closed` is dropped, which
    // is what wakes those waiting for the close.
    db: DB,
    closed: watch::Sender<()>,
}

impl std::ops::Deref for StoreDb {
    type Target = DB;

    fn deref(&self) -> &DB {
        &self.db
    }
}

/// The Raft log. Cheap to clone: clones share the database, which is how
/// openraft gets its separate log reader.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<StoreDb>,
    /// Where appends leave their callback until a WAL sync covers them.
    syncer: std::sync::mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Lets the owner of the Raft node see when openraft's tasks have
    /// dropped the stores: `changed()` on the receiver fails once the
    /// database is closed and its directory can be opened again.
    pub fn closed(&self) -> watch::Receiver<()> {
        self.db.closed.subscribe()
    }

    /// A read-only view of the committed log for the metadata stream
    /// (`observer`). It holds the database weakly, so that it never keeps
    /// RocksDB open after the Raft node has shut down.
    pub fn committed_log(&self) -> CommittedLog {
        CommittedLog {
            db: Arc::downgrade(&self.db),
        }
    }

    fn get_meta<T: for<'de> Deserialize<'de>>(
        &self,
        key: &[u8],
        subject: ErrorSubject<NodeId>,
    ) -> StorageResult<Option<T>> {
        let bytes = self
            .db
            .get_cf(cf(&self.db, CF_META)?, key)
            .map_err(|e| storage_err(subject.clone(), ErrorVerb::Read, e))?;
        bytes
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| storage_err(subject, ErrorVerb::Read, e))
    }

    /// Writes one meta value; `sync` makes it durable before returning.
    fn put_meta<T: Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<NodeId>,
        sync: bool,
    ) -> StorageResult<()> {
        let bytes = serde_json::to_vec(value)
            .map_err(|e| storage_err(subject.clone(), ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_META)?, key, bytes);
        let opts = if sync {
            sync_writes()
        } else {
            WriteOptions::default()
        };
        self.db
            .write_opt(batch, &opts)
            .map_err(|e| storage_err(subject, ErrorVerb::Write, e))
    }

    fn decode_key(key: &[u8]) -> StorageResult<u64> {
        key_index(key).ok_or_else(|| {
            msg_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                format!("log key of {} bytes, expected 8", key.len()),
            )
        })
    }

    fn decode_entry(key: &[u8], value: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        let index = Self::decode_key(key)?;
        let entry: Entry<TypeConfig> = serde_json::from_slice(value)
            .map_err(|e| storage_err(ErrorSubject::LogIndex(index), ErrorVerb::Read, e))?;
        if entry.log_id.index != index {
            return Err(msg_err(
                ErrorSubject::LogIndex(index),
                ErrorVerb::Read,
                format!(
                    "entry stored under index {index} has log id {}",
                    entry.log_id
                ),
            ));
        }
        Ok(entry)
    }
}

/// What `CommittedLog::read` found.
#[derive(Debug)]
pub enum CommittedRead {
    /// Every command in the range, in log order, with its index (blank
    /// and membership entries advance the index but carry no command).
    Commands(Vec<(u64, MetadataCommand)>),
    /// The start of the range was purged (it lives in a snapshot only).
    Purged,
}

/// Reads committed entries for observers; see `LogStore::committed_log`.
#[derive(Clone)]
pub struct CommittedLog {
    db: std::sync::Weak<StoreDb>,
}

impl CommittedLog {
    /// The commands at indexes `after + 1 ..= upto`, which the caller knows
    /// to be applied (hence committed: they can no longer be truncated).
    /// The range must be contiguous in the log; a hole at its start means
    /// it was purged, anywhere else that the store is damaged.
    pub fn read(&self, after: u64, upto: u64) -> StorageResult<CommittedRead> {
        let closed = || {
            msg_err(
                ErrorSubject::Logs,
                ErrorVerb::Read,
                "the controller store is closed".into(),
            )
        };
        let db = self.db.upgrade().ok_or_else(closed)?;
        let mut commands = Vec::new();
        let mut expect = after + 1;
        let iter = db.iterator_cf(
            cf(&db, CF_LOGS)?,
            IteratorMode::From(&log_key(expect), Direction::Forward),
        );
        for item in iter {
            if expect > upto {
                break;
            }
            let (k, v) = item.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            let index = LogStore::decode_key(&k)?;
            if index != expect {
                if index > expect && expect == after + 1 {
                    return Ok(CommittedRead::Purged);
                }
                return Err(msg_err(
                    ErrorSubject::LogIndex(expect),
                    ErrorVerb::Read,
                    format!("committed entry {expect} is missing (next is {index})"),
                ));
            }
            if let EntryPayload::Normal(cmd) = LogStore::decode_entry(&k, &v)?.payload {
                commands.push((index, cmd));
            }
            expect += 1;
        }
        if expect <= upto {
            if expect == after + 1 {
                return Ok(CommittedRead::Purged);
            }
            return Err(msg_err(
                ErrorSubject::LogIndex(expect),
                ErrorVerb::Read,
                format!("committed entry {expect} is missing (the log ends before it)"),
            ));
        }
        Ok(CommittedRead::Commands(commands))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        };
        let key = log_key(start);
        let iter = self.db.iterator_cf(
            cf(&self.db, CF_LOGS)?,
            IteratorMode::From(&key, Direction::Forward),
        );
        let mut entries = Vec::new();
        for item in iter {
            let (k, v) = item.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
            // Stop before decoding: an entry past the range is none of our
            // business, even a damaged one.
            if !range.contains(&Self::decode_key(&k)?) {
                break;
            }
            entries.push(Self::decode_entry(&k, &v)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> =
            self.get_meta(KEY_LAST_PURGED, ErrorSubject::Store)?;
        let last = self
            .db
            .iterator_cf(cf(&self.db, CF_LOGS)?, IteratorMode::End)
            .next();
        let last_log_id = match last {
            Some(item) => {
                let (k, v) =
                    item.map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
                Some(Self::decode_entry(&k, &v)?.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.put_meta(KEY_VOTE, vote, ErrorSubject::Vote, true)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.get_meta(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.put_meta(KEY_COMMITTED, &committed, ErrorSubject::Store, true)
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        Ok(self
            .get_meta::<Option<LogId<NodeId>>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let logs = cf(&self.db, CF_LOGS)?;
        let mut batch = WriteBatch::default();
        for entry in entries {
            let bytes = serde_json::to_vec(&entry)
                .map_err(|e| storage_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, e))?;
            batch.put_cf(logs, log_key(entry.log_id.index), bytes);
        }
        // Raft may count this node towards a quorum once the callback fires,
        // so the entries must be on disk by then: the syncer fires it after
        // a WAL sync that began after this write.
        // On error the callback is dropped: the returned error already stops
        // the node.
        self.db
            .write(batch)
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if let Err(std::sync::mpsc::SendError(callback)) = self.syncer.send(callback) {
            callback.log_io_completed(Err(std::io::Error::other(
                "the controller log's sync thread is not running",
            )));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        tracing::debug!(%log_id, "truncating controller log");
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            cf(&self.db, CF_LOGS)?,
            log_key(log_id.index),
            log_key(u64::MAX),
        );
        batch.delete_cf(cf(&self.db, CF_LOGS)?, log_key(u64::MAX));
        // A truncated entry that came back after a crash could be taken for
        // a committed one; make the deletion durable.
        self.db
            .write_opt(batch, &sync_writes())
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        tracing::debug!(%log_id, "purging controller log");
        // Record the purge point before deleting, so that a crash in between
        // leaves entries openraft ignores rather than a gap it cannot explain.
        self.put_meta(KEY_LAST_PURGED, &log_id, ErrorSubject::Store, false)?;
        let end = log_id.index.saturating_add(1);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(cf(&self.db, CF_LOGS)?, log_key(0), log_key(end));
        self.db
            .write(batch)
            .map_err(|e| storage_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// What the state machine persists after every apply batch.
#[derive(Clone, Debug, Default)]
struct AppliedState {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    image: Arc<MetadataImage>,
}

/// The stored form of `AppliedState` (serde's `Arc` support needs its `rc`
/// feature; borrowing avoids it and a copy of the image).
#[derive(Serialize)]
struct AppliedStateRef<'a> {
    last_applied: &'a Option<LogId<NodeId>>,
    last_membership: &'a StoredMembership<NodeId, BasicNode>,
    image: &'a MetadataImage,
}

#[derive(Deserialize)]
struct AppliedStateOwned {
    last_applied: Option<LogId<NodeId>>,
    last_membership: StoredMembership<NodeId, BasicNode>,
    image: MetadataImage,
}

impl AppliedState {
    fn encode(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(&AppliedStateRef {
            last_applied: &self.last_applied,
            last_membership: &self.last_membership,
            image: &self.image,
        })
    }

    fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        let s: AppliedStateOwned = serde_json::from_slice(bytes)?;
        Ok(Self {
            last_applied: s.last_applied,
            last_membership: s.last_membership,
            image: Arc::new(s.image),
        })
    }
}

/// The body of a snapshot: the image and the membership it was taken at.
#[derive(Serialize, Deserialize)]
struct SnapshotBody {
    image: MetadataImage,
    last_membership: StoredMembership<NodeId, BasicNode>,
}

/// The controller state machine: applies committed commands to the metadata
/// image and publishes each new image to subscribers.
pub struct StateMachineStore {
    db: Arc<StoreDb>,
    state: AppliedState,
    publish: watch::Sender<Arc<MetadataImage>>,
    /// Entries applied since the applied state was last written.
    unpersisted: u64,
}

impl StateMachineStore {
    fn load(db: Arc<StoreDb>, publish: watch::Sender<Arc<MetadataImage>>) -> StorageResult<Self> {
        let sm = cf(&db, CF_SM)?;
        let read = |e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e);
        let mut state: AppliedState = match db.get_cf(sm, KEY_APPLIED_STATE).map_err(read)? {
            Some(bytes) => AppliedState::decode(&bytes)
                .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Read, e))?,
            None => AppliedState::default(),
        };
        // The applied state is written unsynced and the snapshot synced, so
        // after a crash the snapshot can be the newer of the two.
        let mut this = Self {
            db: db.clone(),
            state: AppliedState::default(),
            publish,
            unpersisted: 0,
        };
        if let Some((meta, data)) = this.read_snapshot()? {
            if meta.last_log_id > state.last_applied {
                let body = decode_snapshot(&meta, &data)?;
                state = AppliedState {
                    last_applied: meta.last_log_id,
                    last_membership: meta.last_membership,
                    image: Arc::new(body.image),
                };
            }
        }
        this.state = state;
        this.publish.send_replace(this.state.image.clone());
        Ok(this)
    }

    /// Unsynced: the log can rebuild it (see the module comment).
    fn persist_state(&self) -> StorageResult<()> {
        let bytes = self
            .state
            .encode()
            .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_SM)?, KEY_APPLIED_STATE, bytes);
        self.db
            .write(batch)
            .map_err(|e| storage_err(ErrorSubject::StateMachine, ErrorVerb::Write, e))
    }

    fn read_snapshot(&self) -> StorageResult<Option<StoredSnapshot>> {
        let sm = cf(&self.db, CF_SM)?;
        let read = |e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e);
        let Some(meta) = self.db.get_cf(sm, KEY_SNAPSHOT_META).map_err(read)? else {
            return Ok(None);
        };
        let meta: SnapshotMeta<NodeId, BasicNode> = serde_json::from_slice(&meta)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?;
        let data = self
            .db
            .get_cf(sm, KEY_SNAPSHOT_DATA)
            .map_err(read)?
            .ok_or_else(|| {
                msg_err(
                    ErrorSubject::Snapshot(Some(meta.signature())),
                    ErrorVerb::Read,
                    "snapshot meta without data".into(),
                )
            })?;
        Ok(Some((meta, data)))
    }
}

fn decode_snapshot(
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
) -> StorageResult<SnapshotBody> {
    serde_json::from_slice(data).map_err(|e| {
        storage_err(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Read,
            e,
        )
    })
}

/// Stores a snapshot (meta and data in one batch, synced). With `state`
/// the applied state goes into the same batch: installing a snapshot
/// replaces both at once.
fn write_snapshot(
    db: &DB,
    meta: &SnapshotMeta<NodeId, BasicNode>,
    data: &[u8],
    state: Option<&AppliedState>,
) -> StorageResult<()> {
    let err = |e| {
        storage_err(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            e,
        )
    };
    let meta_bytes = serde_json::to_vec(meta).map_err(|e| {
        storage_err(
            ErrorSubject::Snapshot(Some(meta.signature())),
            ErrorVerb::Write,
            e,
        )
    })?;
    let sm = cf(db, CF_SM)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(sm, KEY_SNAPSHOT_META, meta_bytes);
    batch.put_cf(sm, KEY_SNAPSHOT_DATA, data);
    if let Some(state) = state {
        let bytes = state.encode().map_err(|e| {
            storage_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                e,
            )
        })?;
        batch.put_cf(sm, KEY_APPLIED_STATE, bytes);
    }
    db.write_opt(batch, &sync_writes()).map_err(err)
}

/// Builds a snapshot from the state as it was when openraft asked for the
/// builder; applying may continue meanwhile.
pub struct SnapshotBuilder {
    db: Arc<StoreDb>,
    state: AppliedState,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let body = SnapshotBody {
            image: (*self.state.image).clone(),
            last_membership: self.state.last_membership.clone(),
        };
        let data = serde_json::to_vec(&body)
            .map_err(|e| storage_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
        // Unique across restarts too: a receiver resumes a chunked transfer
        // only for the same id.
        let nonce = uuid::Uuid::new_v4().simple();
        let snapshot_id = match &self.state.last_applied {
            Some(id) => format!("{}-{}-{nonce}", id.leader_id, id.index),
            None => format!("--{nonce}"),
        };
        let meta = SnapshotMeta {
            last_log_id: self.state.last_applied,
            last_membership: self.state.last_membership.clone(),
            snapshot_id,
        };
        write_snapshot(&self.db, &meta, &data, None)?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "built controller snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        self.get_snapshot_builder().await.build_snapshot().await
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.state.last_applied, self.state.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<MetadataResponse>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries = entries.into_iter();
        let mut responses = Vec::with_capacity(entries.size_hint().0);
        let mut image_changed = false;
        for entry in entries {
            self.unpersisted += 1;
            self.state.last_applied = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => MetadataResponse::Ok,
                EntryPayload::Normal(cmd) => {
                    image_changed = true;
                    Arc::make_mut(&mut self.state.image).apply(entry.log_id.index, &cmd)
                }
                EntryPayload::Membership(membership) => {
                    self.state.last_membership =
                        StoredMembership::new(Some(entry.log_id), membership);
                    MetadataResponse::Ok
                }
            };
            responses.push(response);
        }
        if self.unpersisted >= PERSIST_EVERY {
            self.persist_state()?;
            self.unpersisted = 0;
        }
        if image_changed {
            self.publish.send_replace(self.state.image.clone());
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            state: self.state.clone(),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let body = decode_snapshot(meta, &data)?;
        let state = AppliedState {
            last_applied: meta.last_log_id,
            last_membership: meta.last_membership.clone(),
            image: Arc::new(body.image),
        };
        write_snapshot(&self.db, meta, &data, Some(&state))?;
        tracing::info!(snapshot = %meta, bytes = data.len(), "installed controller snapshot");
        self.state = state;
        self.unpersisted = 0;
        self.publish.send_replace(self.state.image.clone());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}
