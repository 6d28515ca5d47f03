//! A full disk (issue 16, the fault suite's "disk full"): a broker whose
//! log directory runs out of space refuses produces with
//! KAFKA_STORAGE_ERROR (56), stays up, keeps serving reads of what it
//! acknowledged, and takes writes again once there is room, with offsets
//! carrying on where they stopped.
//!
//! The log directory is a small tmpfs mounted for the test (it needs root,
//! as the fault suite does); the metadata log lives elsewhere, as Kafka
//! users often keep it.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{produce_request, produce_result, Node, RawConn};
use kafka_protocol::records::{Compression, Record};
use runnel::protocol::build;

const TOPIC: &str = "full";
/// KAFKA_STORAGE_ERROR.
const STORAGE_ERROR: i16 = 56;

/// A tmpfs of `mb` MiB at a new directory, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(mb: u64) -> Tmpfs {
        let dir = tempfile::Builder::new()
            .prefix("runnel-tmpfs.")
            .tempdir()
            .expect("temp dir");
        run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={mb}m"),
                "tmpfs",
                path(&dir),
            ],
        );
        Tmpfs { dir }
    }

    fn resize(&self, mb: u64) {
        run(
            "mount",
            &["-o", &format!("remount,size={mb}m"), path(&self.dir)],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("utf-8 temp path")
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().expect("run {cmd}");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One uncompressed batch of 64 records of 4 KiB.
fn batch(n: u64) -> Bytes {
    let records: Vec<Record> = (0..64)
        .map(|i| {
            let key = format!("{n:08}-{i:02}");
            let value = "x".repeat(4096);
            // Now: records from 2023 would fall to 7-day time retention.
            build::record(
                i,
                runnel::now_ms(),
                Some(Bytes::from(key)),
                Some(Bytes::from(value)),
            )
        })
        .collect();
    build::encode(&records, Compression::None).expect("encode batch")
}

fn produce(conn: &mut RawConn, n: u64) -> (i16, i64) {
    let req = produce_request(TOPIC, 0, batch(n), 5_000);
    let resp = conn.roundtrip(8, 5, &req).expect("produce answered");
    produce_result(&resp)
}

#[test]
fn a_full_log_dir_refuses_writes_keeps_what_it_has_and_recovers() {
    let logs = Tmpfs::mount(8);
    let meta = tempfile::tempdir().expect("metadata dir");
    let mut node = Node::start(&[
        ("log.dirs", path(&logs.dir)),
        ("metadata.log.dir", path(&meta)),
        ("log.segment.bytes", "1048576"),
    ]);
    common::topics::raw_create_and_wait(&node, TOPIC);
    let mut conn = RawConn::connect(&node.bootstrap()).expect("connect");
    conn.stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("read timeout");

    // Fill it: 256 KiB per batch into 8 MiB.
    let mut acked = Vec::new();
    let mut n = 0;
    let refused = loop {
        n += 1;
        assert!(n < 100, "8 MiB never filled up: {acked:?}");
        match produce(&mut conn, n) {
            (0, offset) => acked.push((n, offset)),
            (code, _) => break code,
        }
    };
    step!(
        "{} batches acknowledged, then error {refused} (batch {n})",
        acked.len()
    );
    assert_eq!(refused, STORAGE_ERROR, "a full disk is KAFKA_STORAGE_ERROR");
    // Refused again, and the node is still up and answering.
    assert_eq!(produce(&mut conn, n).0, STORAGE_ERROR);
    node.assert_alive("after the disk filled up");

    // Everything acknowledged reads back.
    let last = acked.last().expect("something was acknowledged").1 + 63;
    let read = common::partition::consume_all(&node.bootstrap(), TOPIC, 0, last + 1);
    assert_eq!(read.len() as i64, last + 1, "records below {last}");
    for (batch_no, offset) in &acked {
        let (at, key) = &read[*offset as usize];
        assert_eq!(*at, *offset);
        assert_eq!(*key, format!("{batch_no:08}-00"), "offset {offset}");
    }

    // Room again: writes resume, at the next offset.
    logs.resize(32);
    let started = Instant::now();
    let resumed = loop {
        match produce(&mut conn, n) {
            (0, offset) => break offset,
            (code, _) => {
                assert_eq!(code, STORAGE_ERROR);
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "writes did not resume with room on the disk"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    step!("with room again, batch {n} acknowledged at offset {resumed}");
    assert_eq!(resumed, last + 1, "offsets carry on where they stopped");

    // And it all survives a restart.
    node.restart();
    let read = common::partition::consume_all(&node.bootstrap(), TOPIC, 0, resumed + 64);
    assert_eq!(read.len() as i64, resumed + 64);
}
