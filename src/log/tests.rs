//! Log tests on real files in temporary directories.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context};
use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

use super::*;
use crate::protocol::build;

type TestResult = anyhow::Result<()>;

fn record(i: i64, timestamp: i64, value_len: usize) -> Record {
    build::record(
        i,
        timestamp,
        Some(Bytes::from(format!("k{i}"))),
        Some(Bytes::from(vec![b'a' + (i % 26) as u8; value_len])),
    )
}

/// One batch of records with the given timestamps.
fn batch_with(timestamps: &[i64], value_len: usize, compression: Compression) -> Vec<u8> {
    let records: Vec<Record> = timestamps
        .iter()
        .enumerate()
        .map(|(i, ts)| record(i as i64, *ts, value_len))
        .collect();
    build::encode(&records, compression)
        .expect("encode")
        .to_vec()
}

fn batch(records: usize, value_len: usize) -> Vec<u8> {
    let ts: Vec<i64> = (0..records as i64).map(|i| 1_000 + i).collect();
    batch_with(&ts, value_len, Compression::None)
}

fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        segment_ms: 1 << 40,
        index_interval_bytes: 256,
        max_batch_bytes: 1 << 20,
        segment_index_bytes: 1 << 20,
    }
}

fn segment_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    v.retain(|p| p.extension().is_some_and(|e| e == "log"));
    v.sort();
    Ok(v)
}

/// The bytes the log should hold for `input` appended at `base` with `epoch`.
fn stamped(input: &[u8], base: i64, epoch: i32) -> Vec<u8> {
    let mut out = input.to_vec();
    let mut next = base;
    let positions: Vec<(usize, i64)> = batch::batches(input)
        .map(|b| b.map(|b| (b.position, b.header.offset_count())))
        .collect::<Result<_, _>>()
        .expect("whole batches");
    for (at, n) in positions {
        batch::set_base_offset(&mut out[at..], next);
        batch::set_partition_leader_epoch(&mut out[at..], epoch);
        next += n;
    }
    out
}

/// Reads the whole log from its start, checking that reads chain.
fn read_all(log: &Log) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut offset = log.start_offset();
    while offset < log.end_offset() {
        let r = log.read(offset, 700, i64::MAX)?;
        ensure!(!r.records.is_empty(), "empty read at {offset}");
        ensure!(r.next_offset > offset, "read at {offset} did not advance");
        out.extend_from_slice(&r.records);
        offset = r.next_offset;
    }
    Ok(out)
}

/// Appends `count` batches of 1..=4 records; returns what the log must hold.
fn fill(log: &Log, count: usize, epoch: i32) -> anyhow::Result<Vec<u8>> {
    let mut expected = Vec::new();
    for i in 0..count {
        let b = batch(1 + i % 4, 40 + (i * 7) % 90);
        let info = log.append(&b, epoch, 0)?;
        expected.extend(stamped(&b, info.first_offset, epoch));
    }
    Ok(expected)
}

#[test]
fn round_trip_across_segment_rolls() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    let mut expected = Vec::new();
    let mut next = 0;
    for i in 0..60 {
        let n = 1 + i % 5;
        let b = batch(n, 30 + i * 3);
        let info = log.append(&b, 7, 0)?;
        assert_eq!(info.first_offset, next);
        assert_eq!(info.last_offset, next + n as i64 - 1);
        next += n as i64;
        expected.extend(stamped(&b, info.first_offset, 7));
    }
    assert_eq!(log.end_offset(), next);
    assert!(
        segment_files(dir.path())?.len() >= 4,
        "expected several segments"
    );
    assert_eq!(read_all(&log)?, expected);
    for b in batch::batches(&read_all(&log)?) {
        let b = b?;
        assert_eq!(b.header.partition_leader_epoch, 7);
        batch::validate_batch(&b, usize::MAX)?;
    }
    Ok(())
}

#[test]
fn a_read_inside_a_batch_returns_the_whole_batch() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig::default())?;
    log.append(&batch(10, 5), 0, 0)?;
    let b = batch(5, 5);
    let info = log.append(&b, 0, 0)?;
    assert_eq!((info.first_offset, info.last_offset), (10, 14));
    log.append(&batch(3, 5), 0, 0)?;
    let r = log.read(12, 1, i64::MAX)?;
    assert_eq!(r.first_offset, Some(10));
    assert_eq!(r.next_offset, 15);
    assert_eq!(&r.records[..], &stamped(&b, 10, 0)[..]);
    Ok(())
}

#[test]
fn max_bytes_returns_whole_batches_and_at_least_one() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig::default())?;
    let b = batch(4, 200);
    let size = b.len();
    for _ in 0..5 {
        log.append(&b, 0, 0)?;
    }
    // KIP-74: a batch larger than max_bytes still comes back, alone.
    let r = log.read(0, 1, i64::MAX)?;
    assert_eq!(r.records.len(), size);
    assert_eq!(r.next_offset, 4);
    let r = log.read(0, 2 * size + size / 2, i64::MAX)?;
    assert_eq!(r.records.len(), 2 * size);
    assert_eq!(r.next_offset, 8);
    let r = log.read(4, 3 * size, i64::MAX)?;
    assert_eq!((r.first_offset, r.records.len()), (Some(4), 3 * size));
    let r = log.read(0, usize::MAX, i64::MAX)?;
    assert_eq!(r.records.len(), 5 * size);
    Ok(())
}

#[test]
fn upper_bound_hides_batches_at_or_above_it() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig::default())?;
    let b = batch(3, 10);
    for _ in 0..3 {
        log.append(&b, 0, 0)?; // offsets 0-2, 3-5, 6-8
    }
    let r = log.read(0, 1 << 20, 6)?;
    assert_eq!(r.records.len(), 2 * b.len());
    assert_eq!(r.next_offset, 6);
    // A batch straddling the bound is not returned.
    let r = log.read(0, 1 << 20, 5)?;
    assert_eq!(r.records.len(), b.len());
    let r = log.read(4, 1 << 20, 5)?;
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 4);
    let r = log.read(6, 1 << 20, 6)?;
    assert!(r.records.is_empty());
    assert_eq!(r.log_end_offset, 9);
    Ok(())
}

#[test]
fn offsets_out_of_range() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), LogConfig::default())?;
    let r = log.read(0, 100, i64::MAX)?;
    assert!(r.records.is_empty());
    log.append(&batch(2, 10), 0, 0)?;
    for bad in [-1, 3, i64::MAX] {
        match log.read(bad, 100, i64::MAX) {
            Err(Error::OffsetOutOfRange { offset, start, end }) => {
                assert_eq!((offset, start, end), (bad, 0, 2))
            }
            other => panic!("read at {bad}: {other:?}"),
        }
    }
    let r = log.read(2, 100, i64::MAX)?;
    assert!(r.records.is_empty());
    assert_eq!(r.next_offset, 2);
    Ok(())
}

#[test]
fn reopen_after_close_keeps_offsets_and_bytes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let expected;
    {
        let log = Log::open(dir.path(), small_config())?;
        expected = fill(&log, 40, 3)?;
        log.close()?;
        assert!(dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        assert!(matches!(
            log.append(&batch(1, 1), 3, 0),
            Err(Error::Closed(_))
        ));
    }
    let end;
    {
        let log = Log::open(dir.path(), small_config())?;
        assert!(!dir.path().join(CLEAN_SHUTDOWN_FILE).exists());
        end = log.end_offset();
        assert_eq!(log.flushed_offset(), end);
        assert_eq!(read_all(&log)?, expected);
        let info = log.append(&batch(2, 10), 4, 0)?;
        assert_eq!(info.first_offset, end);
        log.flush()?;
        // Dropped without close: the next open recovers.
    }
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(log.end_offset(), end + 2);
    let all = read_all(&log)?;
    assert_eq!(&all[..expected.len()], &expected[..]);
    Ok(())
}

/// Builds a flushed log of several segments, drops it without closing, lets
/// `damage` edit the last segment file, and reopens.
fn reopen_after_damage(
    damage: impl FnOnce(&Path, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<(tempfile::TempDir, Vec<u8>, Vec<i64>)> {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let expected = fill(&log, 30, 1)?;
    log.flush()?;
    let ends: Vec<i64> = {
        // Offsets after each whole batch, to check where recovery lands.
        let mut v = Vec::new();
        for b in batch::batches(&expected) {
            v.push(b?.header.last_offset() + 1);
        }
        v
    };
    drop(log);
    let files = segment_files(dir.path())?;
    let last = files.last().context("no segment")?;
    let content = fs::read(last)?;
    damage(last, &content)?;
    Ok((dir, expected, ends))
}

fn check_recovered(dir: &Path, expected: &[u8], want_end: i64) -> TestResult {
    let log = Log::open(dir, small_config())?;
    assert_eq!(log.end_offset(), want_end);
    let all = read_all(&log)?;
    assert_eq!(&all[..], &expected[..all.len()]);
    // Appends continue right after the last whole batch, and survive.
    let b = batch(3, 20);
    let info = log.append(&b, 2, 0)?;
    assert_eq!(info.first_offset, want_end);
    log.close()?;
    let log = Log::open(dir, small_config())?;
    assert_eq!(log.end_offset(), want_end + 3);
    let r = log.read(want_end, 1 << 20, i64::MAX)?;
    assert_eq!(&r.records[..], &stamped(&b, want_end, 2)[..]);
    Ok(())
}

#[test]
fn torn_tail_mid_batch_is_cut_to_the_last_whole_batch() -> TestResult {
    let (dir, expected, ends) = reopen_after_damage(|path, content| {
        let f = OpenOptions::new().write(true).open(path)?;
        f.set_len(content.len() as u64 - 5)?;
        Ok(())
    })?;
    check_recovered(dir.path(), &expected, ends[ends.len() - 2])
}

#[test]
fn garbage_after_the_last_batch_is_dropped() -> TestResult {
    for garbage in [vec![0u8; 3], vec![0u8; 100], vec![0xffu8; 64 * 1024]] {
        let (dir, expected, ends) = reopen_after_damage(|path, _| {
            let mut f = OpenOptions::new().append(true).open(path)?;
            f.write_all(&garbage)?;
            Ok(())
        })?;
        check_recovered(dir.path(), &expected, *ends.last().context("no batch")?)?;
    }
    Ok(())
}

#[test]
fn a_flipped_byte_in_the_last_batch_fails_its_crc() -> TestResult {
    let (dir, expected, ends) = reopen_after_damage(|path, content| {
        let mut c = content.to_vec();
        let at = c.len() - 3;
        c[at] ^= 0x01;
        fs::write(path, c)?;
        Ok(())
    })?;
    check_recovered(dir.path(), &expected, ends[ends.len() - 2])
}

#[test]
fn hostile_batch_length_on_disk_is_cut_without_allocating() -> TestResult {
    let (dir, expected, ends) = reopen_after_damage(|path, _| {
        let mut f = OpenOptions::new().append(true).open(path)?;
        let mut fake = vec![0u8; HEADER_LEN];
        fake[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        fake[16] = 2;
        f.write_all(&fake)?;
        Ok(())
    })?;
    check_recovered(dir.path(), &expected, *ends.last().context("no batch")?)
}

#[test]
fn missing_or_garbled_indexes_are_rebuilt() -> TestResult {
    let dir = tempfile::tempdir()?;
    let (expected, probes) = {
        let log = Log::open(dir.path(), small_config())?;
        let expected = fill(&log, 40, 0)?;
        let probes: Vec<_> = (0..log.end_offset())
            .step_by(7)
            .map(|o| log.read(o, 1, i64::MAX))
            .collect::<Result<_>>()?;
        log.close()?;
        (expected, probes)
    };
    let mut index_files = Vec::new();
    for e in fs::read_dir(dir.path())? {
        let p = e?.path();
        if p.extension()
            .is_some_and(|x| x == "index" || x == "timeindex")
        {
            index_files.push(p);
        }
    }
    index_files.sort();
    ensure!(index_files.len() >= 4, "expected index files");
    fs::remove_file(&index_files[0])?;
    fs::write(&index_files[1], [0xab; 24])?;
    fs::write(&index_files[2], [0x01; 5])?;
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(read_all(&log)?, expected);
    for p in probes {
        let offset = p.first_offset.context("probe")?;
        assert_eq!(log.read(offset, 1, i64::MAX)?, p);
    }
    assert!(fs::metadata(&index_files[0])?.len() > 0, "index rebuilt");
    Ok(())
}

/// Brute force over every record of the log: the oracle for timestamp queries.
fn all_records(log: &Log) -> anyhow::Result<Vec<(i64, i64)>> {
    let mut buf = Bytes::from(read_all(log)?);
    let mut out = Vec::new();
    for set in RecordBatchDecoder::decode_all(&mut buf)? {
        out.extend(set.records.iter().map(|r| (r.offset, r.timestamp)));
    }
    Ok(out)
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(log.offset_for_timestamp(0)?, None);
    assert_eq!(log.max_timestamp()?, None);
    let codecs = [
        Compression::None,
        Compression::Zstd,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Snappy,
    ];
    // Mostly increasing timestamps with jitter, including a late batch with
    // old timestamps and repeated values, as real producers send.
    let mut seed = 12345u64;
    let mut base = 10_000i64;
    for i in 0..50 {
        let n = 1 + i % 6;
        let ts: Vec<i64> = (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                base += (seed >> 60) as i64; // 0..15, repeats included
                base - ((seed >> 40) % 4) as i64
            })
            .collect();
        let ts = if i == 30 {
            vec![10_050, 10_020, 10_090]
        } else {
            ts
        };
        log.append(&batch_with(&ts, 20, codecs[i % codecs.len()]), 0, 0)?;
    }
    assert!(segment_files(dir.path())?.len() >= 3);
    let records = all_records(&log)?;
    let max_ts = records.iter().map(|r| r.1).max().context("records")?;
    for target in (9_990..max_ts + 3)
        .step_by(3)
        .chain([i64::MIN, 10_021, 10_050])
    {
        let want = records
            .iter()
            .find(|r| r.1 >= target)
            .map(|&(offset, timestamp)| TimestampOffset { timestamp, offset });
        assert_eq!(log.offset_for_timestamp(target)?, want, "target {target}");
    }
    let want_max = records
        .iter()
        .find(|r| r.1 == max_ts)
        .map(|&(offset, timestamp)| TimestampOffset { timestamp, offset });
    assert_eq!(log.max_timestamp()?, want_max);

    // The same answers after a clean reopen (time indexes from disk) and an
    // unclean one (rebuilt).
    log.close()?;
    drop(log);
    for _ in 0..2 {
        let log = Log::open(dir.path(), small_config())?;
        for target in (9_990..max_ts + 3).step_by(5) {
            let want = records
                .iter()
                .find(|r| r.1 >= target)
                .map(|&(offset, timestamp)| TimestampOffset { timestamp, offset });
            assert_eq!(log.offset_for_timestamp(target)?, want, "target {target}");
        }
        assert_eq!(log.max_timestamp()?, want_max);
    }
    Ok(())
}

#[test]
fn truncate_to_drops_the_tail_durably() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let expected = fill(&log, 40, 5)?;
    let segments_before = segment_files(dir.path())?.len();
    let headers: Vec<BatchHeader> = batch::batches(&expected)
        .map(|b| b.map(|b| b.header))
        .collect::<Result<_, _>>()?;
    // Truncate into the middle of a batch in an early segment.
    let victim = headers[8];
    let cut = victim.base_offset + i64::from(victim.last_offset_delta.min(1));
    log.truncate_to(cut)?;
    assert_eq!(log.end_offset(), victim.base_offset);
    assert!(log.flushed_offset() <= victim.base_offset);
    assert!(segment_files(dir.path())?.len() < segments_before);
    let kept: usize = headers[..8].iter().map(|h| h.size()).sum();
    assert_eq!(read_all(&log)?, expected[..kept].to_vec());
    assert!(log.read(victim.base_offset + 1, 100, i64::MAX).is_err());
    assert_eq!(
        log.offset_for_timestamp(i64::MIN)?.map(|t| t.offset),
        Some(0)
    );
    // Appends continue at the new end, with a new epoch, and survive a crash.
    let b = batch(2, 10);
    let info = log.append(&b, 6, 0)?;
    assert_eq!(info.first_offset, victim.base_offset);
    log.flush()?;
    drop(log);
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(log.end_offset(), victim.base_offset + 2);
    let mut want = expected[..kept].to_vec();
    want.extend(stamped(&b, victim.base_offset, 6));
    assert_eq!(read_all(&log)?, want);
    // Past the end: nothing happens. To the start: empty log at that offset.
    log.truncate_to(1_000)?;
    assert_eq!(log.end_offset(), victim.base_offset + 2);
    log.truncate_to(0)?;
    assert_eq!((log.start_offset(), log.end_offset()), (0, 0));
    assert_eq!(segment_files(dir.path())?.len(), 1);
    assert_eq!(log.append(&b, 7, 0)?.first_offset, 0);
    Ok(())
}

#[test]
fn segments_roll_by_age() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        segment_ms: 1_000,
        ..LogConfig::default()
    };
    let log = Log::open(dir.path(), config)?;
    log.append(&batch(1, 10), 0, 5_000)?;
    log.append(&batch(1, 10), 0, 5_900)?;
    assert_eq!(segment_files(dir.path())?.len(), 1);
    log.append(&batch(1, 10), 0, 6_001)?;
    assert_eq!(segment_files(dir.path())?.len(), 2);
    assert_eq!(read_all(&log)?.len(), 3 * batch(1, 10).len());
    Ok(())
}

#[test]
fn concurrent_appends_share_flushes() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Arc::new(Log::open(dir.path(), small_config())?);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let log = log.clone();
            std::thread::spawn(move || -> anyhow::Result<Vec<(i64, i64)>> {
                let mut mine = Vec::new();
                for i in 0..100 {
                    let b = batch(1 + (t + i) % 3, 50);
                    let info = log.append(&b, 0, 0)?;
                    let flushed = log.flush()?;
                    ensure!(
                        flushed > info.last_offset,
                        "flush returned {flushed} before {}",
                        info.last_offset
                    );
                    ensure!(log.flushed_offset() >= flushed);
                    mine.push((info.first_offset, info.last_offset));
                }
                Ok(mine)
            })
        })
        .collect();
    let mut ranges = Vec::new();
    for t in threads {
        ranges.extend(t.join().map_err(|_| anyhow::anyhow!("thread panicked"))??);
    }
    ranges.sort_unstable();
    let mut next = 0;
    for (first, last) in &ranges {
        assert_eq!(*first, next, "offsets must be contiguous and unique");
        next = last + 1;
    }
    assert_eq!(log.end_offset(), next);
    assert_eq!(log.flushed_offset(), next);
    assert_eq!(log.flush()?, next);
    // Every acknowledged append is there after a crash.
    drop(log);
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(log.end_offset(), next);
    Ok(())
}

#[test]
fn log_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Log>();
}

#[test]
fn delete_removes_the_directory() -> TestResult {
    let parent = tempfile::tempdir()?;
    let dir = parent.path().join("topic-0");
    let log = Log::open(&dir, LogConfig::default())?;
    log.append(&batch(1, 1), 0, 0)?;
    log.delete()?;
    assert!(!dir.exists());
    Ok(())
}

#[test]
fn config_and_input_are_checked() -> TestResult {
    let dir = tempfile::tempdir()?;
    let bad = LogConfig {
        segment_bytes: 1 << 33,
        ..LogConfig::default()
    };
    assert!(matches!(Log::open(dir.path(), bad), Err(Error::Config(_))));
    let log = Log::open(dir.path(), LogConfig::default())?;
    assert!(matches!(log.append(&[], 0, 0), Err(Error::Batch(_))));
    let b = batch(2, 1);
    assert!(matches!(
        log.append(&b[..b.len() - 1], 0, 0),
        Err(Error::Batch(batch::Error::Corrupt(_)))
    ));
    assert_eq!(log.end_offset(), 0);
    Ok(())
}

#[test]
fn a_recovery_gives_back_an_epoch_the_checkpoint_lost() -> TestResult {
    let dir = tempfile::tempdir()?;
    let epoch_file = dir.path().join("leader-epoch-checkpoint");
    let log = Log::open(dir.path(), small_config())?;
    fill(&log, 10, 5)?;
    log.flush()?;
    let before = fs::read_to_string(&epoch_file)?;
    // Taking epoch 6 writes the checkpoint (without fsync); the flush that
    // makes a record of epoch 6 durable makes the checkpoint durable too.
    log.begin_epoch(6)?;
    let six_starts = log.end_offset();
    log.append(&batch(2, 10), 6, 0)?;
    log.flush()?;
    let after = fs::read_to_string(&epoch_file)?;
    assert!(after.contains(&format!("6 {six_starts}")), "{after}");
    // A crash of the machine that lost the checkpoint's last write but
    // kept the batches: the recovery assigns epoch 6 from them.
    drop(log);
    fs::write(&epoch_file, before)?;
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(log.latest_epoch(), Some(6));
    assert_eq!(log.end_offset_for_epoch(5)?, (5, six_starts));
    assert!(fs::read_to_string(&epoch_file)?.contains(&format!("6 {six_starts}")));
    Ok(())
}

// ------------------------------------------------ retention, compaction --

/// One batch of `keys` records (key `k{key % keys_mod}`), value `tag`.
fn keyed_batch(
    first_key: usize,
    n: usize,
    keys_mod: usize,
    tag: &str,
    codec: Compression,
) -> Vec<u8> {
    let records: Vec<Record> = (0..n)
        .map(|i| {
            let k = (first_key + i) % keys_mod;
            build::record(
                i as i64,
                5_000,
                Some(Bytes::from(format!("key{k}"))),
                Some(Bytes::from(format!("{tag}-{k}"))),
            )
        })
        .collect();
    build::encode(&records, codec).expect("encode").to_vec()
}

/// (offset, key, value) of every record in the log, read as a consumer would.
fn keyed_records(log: &Log) -> anyhow::Result<Vec<(i64, String, Option<String>)>> {
    let mut out = Vec::new();
    let mut at = log.start_offset();
    while at < log.end_offset() {
        let r = log.read(at, 1 << 20, i64::MAX)?;
        if r.records.is_empty() {
            break;
        }
        for b in batch::batches(&r.records) {
            let mut buf = Bytes::copy_from_slice(b?.bytes);
            for rec in RecordBatchDecoder::decode(&mut buf)?.records {
                if rec.offset >= at {
                    out.push((
                        rec.offset,
                        String::from_utf8_lossy(rec.key.as_deref().unwrap_or_default())
                            .into_owned(),
                        rec.value.map(|v| String::from_utf8_lossy(&v).into_owned()),
                    ));
                }
            }
        }
        at = r.next_offset;
    }
    Ok(out)
}

fn clean_opts(hw: i64) -> cleaner::CleanOptions {
    cleaner::CleanOptions {
        now_ms: 10_000,
        high_watermark: hw,
        min_compaction_lag_ms: 0,
        delete_retention_ms: 1_000_000,
        map_bytes: 1 << 20,
    }
}

#[test]
fn cleaning_keeps_the_latest_record_per_key_and_survives_a_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let codecs = [
        Compression::None,
        Compression::Gzip,
        Compression::Zstd,
        Compression::Lz4,
    ];
    for round in 0..12 {
        log.append(
            &keyed_batch(0, 8, 8, &format!("r{round}"), codecs[round % 4]),
            0,
            5_000,
        )?;
    }
    // The last round sits in the active segment, which is never cleaned.
    log.append(&keyed_batch(0, 1, 100, "last", Compression::None), 0, 5_000)?;
    log.flush()?;
    let before = keyed_records(&log)?;
    let end = log.end_offset();
    let stats = log.clean(log.cleaner_checkpoint(), &clean_opts(end), &mut |_| {})?;
    ensure!(
        stats.records_removed > 0 && stats.segments_rewritten > 0,
        "{stats:?}"
    );
    let check = |log: &Log| -> TestResult {
        let after = keyed_records(log)?;
        ensure!(
            after.windows(2).all(|w| w[0].0 < w[1].0),
            "offsets increase"
        );
        // Each key once, with its last value before the active segment, at
        // the offset it had.
        let mut latest = std::collections::BTreeMap::new();
        for (o, k, v) in &before {
            if *o < stats.end_dirty {
                latest.insert(k.clone(), (*o, v.clone()));
            }
        }
        for (o, k, v) in &after {
            if *o >= stats.end_dirty {
                continue;
            }
            ensure!(
                latest.get(k) == Some(&(*o, v.clone())),
                "{k} at {o}: {v:?}, latest {:?}, {stats:?}",
                latest.get(k)
            );
        }
        let kept = after.iter().filter(|(o, ..)| *o < stats.end_dirty).count();
        ensure!(
            kept == latest.len(),
            "{kept} records for {} keys",
            latest.len()
        );
        ensure!(log.end_offset() == end && log.start_offset() == 0);
        Ok(())
    };
    check(&log)?;
    log.close()?;
    drop(log);
    let log = Log::open(dir.path(), small_config())?;
    check(&log)?;
    // A second pass finds nothing dirty.
    let again = log.clean(log.cleaner_checkpoint(), &clean_opts(end), &mut |_| {})?;
    ensure!(again.records_removed == 0, "{again:?}");
    Ok(())
}

#[test]
fn a_moved_log_start_survives_a_crash_and_an_emptied_first_segment_stays() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    for round in 0..10 {
        log.append(
            &keyed_batch(0, 8, 8, &format!("r{round}"), Compression::None),
            0,
            5_000,
        )?;
    }
    log.flush()?;
    let end = log.end_offset();
    let d = log.advance_start(30)?;
    ensure!(d.start == 30 && log.start_offset() == 30, "{d:?}");
    ensure!(matches!(
        log.read(10, 1024, end),
        Err(Error::OffsetOutOfRange { .. })
    ));
    // A crash: no clean close.
    drop(log);
    let log = Log::open(dir.path(), small_config())?;
    ensure!(
        log.start_offset() == 30,
        "start after reopen {}",
        log.start_offset()
    );
    ensure!(log.read(30, 1 << 20, end)?.first_offset.is_some());
    // Never past the end, never back.
    ensure!(log.advance_start(10)?.start == 30);
    Ok(())
}

#[test]
fn a_full_offset_index_rolls_the_segment() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = LogConfig {
        segment_bytes: 1 << 30,
        index_interval_bytes: 0,
        // Two entries of 8 bytes.
        segment_index_bytes: 16,
        ..small_config()
    };
    let log = Log::open(dir.path(), config)?;
    for _ in 0..6 {
        log.append(&batch(1, 10), 0, 1_000)?;
    }
    let segments = segment_files(dir.path())?.len();
    ensure!(segments >= 3, "{segments} segments");
    Ok(())
}

/// Every file in the log's directory with its length, sorted.
fn dir_listing(dir: &Path) -> anyhow::Result<Vec<(String, u64)>> {
    let mut v = Vec::new();
    for e in fs::read_dir(dir)? {
        let e = e?;
        v.push((
            e.file_name().to_string_lossy().into_owned(),
            e.metadata()?.len(),
        ));
    }
    v.sort();
    Ok(v)
}

/// Start, end, (bytes, segments), epochs, every byte.
type Observed = (i64, i64, (u64, usize), Vec<(i32, i64)>, Vec<u8>);

/// What a caller can see of a log: offsets, sizes, epochs, every byte.
fn observed(log: &Log) -> anyhow::Result<Observed> {
    Ok((
        log.start_offset(),
        log.end_offset(),
        log.size_and_segments()?,
        log.epoch_entries(),
        read_all(log)?,
    ))
}

/// The log's files and its observable state are exactly as before a
/// failed append; the next append lands where the failed one would have;
/// and a crash then (no clean close) recovers exactly what was appended.
fn check_failed_append_left_no_trace(
    dir: &Path,
    log: Log,
    mut expected: Vec<u8>,
    before: Observed,
    files_before: Vec<(String, u64)>,
) -> TestResult {
    assert_eq!(observed(&log)?, before, "state after the failed append");
    let files_after: Vec<(String, u64)> = dir_listing(dir)?
        .into_iter()
        .filter(|(n, _)| n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex"))
        .collect();
    let segment_files_before: Vec<(String, u64)> = files_before
        .into_iter()
        .filter(|(n, _)| n.ends_with(".log") || n.ends_with(".index") || n.ends_with(".timeindex"))
        .collect();
    assert_eq!(
        files_after, segment_files_before,
        "segment files after the failed append"
    );
    let end = log.end_offset();
    let b = batch(2, 50);
    let info = log.append(&b, 1, 0)?;
    assert_eq!(info.first_offset, end);
    expected.extend(stamped(&b, end, 1));
    assert_eq!(read_all(&log)?, expected);
    log.flush()?;
    drop(log);
    let log = Log::open(dir, small_config())?;
    assert_eq!(log.end_offset(), end + 2);
    assert_eq!(read_all(&log)?, expected, "recovered after a crash");
    Ok(())
}

#[test]
fn a_write_that_fails_part_way_is_cut_back() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let expected = fill(&log, 5, 1)?;
    let before = observed(&log)?;
    let files = dir_listing(dir.path())?;
    // 100 bytes of a batch reach the file, then the disk is full.
    faults::arm(dir.path(), |a| a.write = Some(100));
    let err = log
        .append(&batch(3, 60), 1, 0)
        .expect_err("the write fails");
    assert!(err.is_storage(), "{err}");
    check_failed_append_left_no_trace(dir.path(), log, expected, before, files)
}

#[test]
fn a_failed_write_that_cannot_be_cut_is_cut_by_the_next_append() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let expected = fill(&log, 3, 1)?;
    let before = observed(&log)?;
    let (size_before, _) = log.size_and_segments()?;
    // The whole batch reaches the file; the write still fails (its
    // length), and so does the cut.
    faults::arm(dir.path(), |a| {
        a.write = Some(usize::MAX);
        a.cut = true;
    });
    assert!(log.append(&batch(2, 40), 1, 0).is_err());
    let active_len = log.exclusive()?.active.file_len();
    assert!(
        active_len > size_before,
        "the failed batch is still in the file"
    );
    // Nothing reads it...
    assert_eq!(observed(&log)?, before);
    // ...and the next append writes over it.
    let end = log.end_offset();
    let b = batch(1, 10);
    let mut expected = expected;
    assert_eq!(log.append(&b, 1, 0)?.first_offset, end);
    expected.extend(stamped(&b, end, 1));
    {
        let g = log.exclusive()?;
        assert_eq!(g.active.file_len(), g.active.size, "no stale bytes");
    }
    log.flush()?;
    drop(log);
    let log = Log::open(dir.path(), small_config())?;
    assert_eq!(read_all(&log)?, expected);
    Ok(())
}

#[test]
fn a_failed_replica_append_forgets_the_epoch_it_brought() -> TestResult {
    let dir = tempfile::tempdir()?;
    let leader_dir = tempfile::tempdir()?;
    let leader = Log::open(leader_dir.path(), small_config())?;
    fill(&leader, 2, 1)?;
    let follower = Log::open(dir.path(), small_config())?;
    let first = leader.read(0, 1 << 20, i64::MAX)?;
    follower.append_replica(&first.records, 0)?;
    let expected = read_all(&follower)?;
    // The leader moves to epoch 4 and writes; the follower's copy fails.
    let end = leader.end_offset();
    let b = batch(2, 30);
    leader.append(&b, 4, 0)?;
    let more = leader.read(end, 1 << 20, i64::MAX)?;
    let before = observed(&follower)?;
    let files = dir_listing(dir.path())?;
    faults::arm(dir.path(), |a| a.write = Some(0));
    assert!(follower.append_replica(&more.records, 0).is_err());
    assert_eq!(follower.epoch_entries(), before.3, "epoch 4 wrote nothing");
    assert_eq!(observed(&follower)?, before);
    assert_eq!(dir_listing(dir.path())?.len(), files.len());
    // Retried, it goes in with its epoch.
    follower.append_replica(&more.records, 0)?;
    assert_eq!(follower.epoch_entries().last(), Some(&(4, end)));
    let mut expected = expected;
    expected.extend(stamped(&b, end, 4));
    assert_eq!(read_all(&follower)?, expected);
    Ok(())
}

#[test]
fn a_roll_that_cannot_create_its_segment_changes_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    // Fill the first segment to just under segment.bytes (2048).
    let mut expected = Vec::new();
    while log.size_and_segments()?.0 < 1700 {
        let b = batch(1, 100);
        let info = log.append(&b, 1, 0)?;
        expected.extend(stamped(&b, info.first_offset, 1));
    }
    assert_eq!(log.size_and_segments()?.1, 1);
    let before = observed(&log)?;
    let files = dir_listing(dir.path())?;
    faults::arm(dir.path(), |a| a.create = true);
    let err = log
        .append(&batch(4, 100), 1, 0)
        .expect_err("the roll fails");
    assert!(err.is_storage(), "{err}");
    assert_eq!(log.size_and_segments()?.1, 1, "still one segment");
    assert_eq!(
        segment_files(dir.path())?.len(),
        1,
        "no half-made segment left"
    );
    check_failed_append_left_no_trace(dir.path(), log, expected, before, files)
}

#[test]
fn a_failed_fsync_is_never_retried_into_durability() -> TestResult {
    let dir = tempfile::tempdir()?;
    let log = Log::open(dir.path(), small_config())?;
    let expected = fill(&log, 3, 1)?;
    log.flush()?;
    let durable = log.flushed_offset();
    fill(&log, 2, 1)?;
    faults::arm(dir.path(), |a| a.fsync = true);
    let err = log.flush().expect_err("the fsync fails");
    assert!(err.is_storage(), "{err}");
    // A second fsync might succeed and prove nothing: it is not tried.
    assert!(matches!(log.flush(), Err(Error::FsyncFailed(_))));
    assert_eq!(log.flushed_offset(), durable);
    let refused = log.append(&batch(1, 10), 1, 0).expect_err("no more writes");
    assert!(matches!(refused, Error::FsyncFailed(_)) && refused.is_storage());
    // Reads of what was written go on.
    assert_eq!(&read_all(&log)?[..expected.len()], &expected[..]);
    Ok(())
}
