//! The history of a chaos run: every client operation and every fault, as
//! JSON lines, one event per line, in the order the events were written.
//!
//! Each line is an object with a `kind` and the fields of that kind. All
//! events carry `t` (milliseconds since the run started) and `client` (`p1`
//! for a producer, `c2` for a consumer, `r1` for a reader, `nemesis` for
//! faults):
//!
//! * `send {topic, partition, value}`: a producer handed `value` to rdkafka.
//!   Values are unique across the run.
//! * `ack {topic, partition, value, offset}`: its delivery report succeeded.
//! * `fail {topic, partition, value, error, persisted}`: its delivery report
//!   failed; `persisted` is rdkafka's message status, `not` (definitely not
//!   written) or `possibly`.
//! * `assign {session, partitions}`: a consumer's assignment changed, as
//!   `[[topic, partition], ...]`. `session` increments on every assignment
//!   change and on every consumer restart, so a consumer session is
//!   `(client, session)`.
//! * `poll {session, topic, partition, offset, value}`: one record read.
//! * `commit {group, topic, partition, offset, ok, error}`: a commit of the
//!   next offset to read; `ok` means the broker acknowledged it.
//! * `fault {name, detail, phase}`: the nemesis started or ended a fault.
//!
//! A line is written whole under one lock, so the lines of concurrent clients
//! never interleave, and the order of one client's lines is the order of its
//! operations. The checker relies on that order (see `checker.rs`).

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    Send {
        t: u64,
        client: String,
        topic: String,
        partition: i32,
        value: String,
    },
    Ack {
        t: u64,
        client: String,
        topic: String,
        partition: i32,
        value: String,
        offset: i64,
    },
    Fail {
        t: u64,
        client: String,
        topic: String,
        partition: i32,
        value: String,
        error: String,
        persisted: Persisted,
    },
    Assign {
        t: u64,
        client: String,
        session: u64,
        partitions: Vec<(String, i32)>,
    },
    Poll {
        t: u64,
        client: String,
        session: u64,
        topic: String,
        partition: i32,
        offset: i64,
        value: String,
    },
    Commit {
        t: u64,
        client: String,
        group: String,
        topic: String,
        partition: i32,
        offset: i64,
        ok: bool,
        error: Option<String>,
    },
    Fault {
        t: u64,
        client: String,
        name: String,
        detail: String,
        phase: Phase,
    },
}

impl Event {
    /// Milliseconds since the run started.
    pub fn t(&self) -> u64 {
        match self {
            Event::Send { t, .. }
            | Event::Ack { t, .. }
            | Event::Fail { t, .. }
            | Event::Assign { t, .. }
            | Event::Poll { t, .. }
            | Event::Commit { t, .. }
            | Event::Fault { t, .. } => *t,
        }
    }
}

/// Whether a failed message may have been written anyway (rdkafka's
/// `rd_kafka_message_status`): a timeout after the request left is
/// `possibly`, so only `not` is a definite failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Persisted {
    Not,
    Possibly,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Start,
    End,
}

/// Appends events to a history file; shared by every client of a run.
pub struct Writer {
    out: Mutex<BufWriter<File>>,
}

impl Writer {
    /// Creates (or truncates) the file at `path`.
    pub fn create(path: impl AsRef<Path>) -> io::Result<Writer> {
        let file = File::create(path)?;
        Ok(Writer {
            out: Mutex::new(BufWriter::new(file)),
        })
    }

    /// Appends one line. The event is encoded before taking the lock, so
    /// that clients contend only for the copy into the buffer.
    pub fn write(&self, event: &Event) -> io::Result<()> {
        let mut line = serde_json::to_vec(event)?;
        line.push(b'\n');
        self.lock().write_all(&line)
    }

    /// Writes the buffered lines to the file. Dropping the writer flushes
    /// too, but cannot report an error; call this at the end of a run.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().flush()
    }

    /// A client that panicked while holding the lock left at worst a partial
    /// line in the buffer; the other clients' events are still worth
    /// recording, so a poisoned lock is used anyway.
    fn lock(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        self.out.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        let _ = self.lock().flush();
    }
}

/// Reads a whole history. A line that is not an event is an `InvalidData`
/// error naming the file and the line number (from 1); so is a line that
/// cannot be read, with the kind of its cause.
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<Event>> {
    let path = path.as_ref();
    let at_line = |number: usize, kind: io::ErrorKind, cause: &dyn std::fmt::Display| {
        io::Error::new(kind, format!("{}: line {number}: {cause}", path.display()))
    };
    let mut events = Vec::new();
    for (index, line) in BufReader::new(File::open(path)?).lines().enumerate() {
        let line = line.map_err(|e| at_line(index + 1, e.kind(), &e))?;
        let event = serde_json::from_str(&line)
            .map_err(|e| at_line(index + 1, io::ErrorKind::InvalidData, &e))?;
        events.push(event);
    }
    Ok(events)
}
