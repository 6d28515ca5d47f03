//! `console-consumer`: reads one topic (all partitions, or one) without a
//! consumer group, from the start or the end or a given offset, and prints
//! records the way Kafka's `DefaultMessageFormatter` does.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder, TimestampType};

use super::client::{Client, FetchLimits, FetchedPartition, OffsetSpec};
use super::{is_metadata_error, Error, Result};
use crate::protocol::decompress::{decompress, MAX_DECOMPRESSED};

/// OFFSET_OUT_OF_RANGE: the position fell off either end of the log.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// Size of the v2 RecordBatch header up to and including the record count.
const BATCH_HEADER_LEN: usize = 61;
/// `batch_length` counts from the partition leader epoch (offset 12).
const BATCH_LENGTH_BASE: usize = 12;
/// Smallest possible encoded record: seven one-byte varints.
const MIN_RECORD_LEN: usize = 7;

/// Where to start reading a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StartAt {
    Earliest,
    Latest,
    Offset(i64),
}

/// What to consume and when to stop.
#[derive(Clone, Debug)]
pub(crate) struct ConsumeOptions {
    pub topic: String,
    pub partition: Option<i32>,
    pub start: StartAt,
    /// Where to go when a position is out of range (auto.offset.reset).
    pub reset_to_earliest: bool,
    pub max_messages: Option<u64>,
    pub timeout: Option<Duration>,
}

/// One record as handed to the formatter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConsumedRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp: i64,
    pub timestamp_type: TimestampType,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<(String, Option<Bytes>)>,
}

/// Kafka's `DefaultMessageFormatter` and its properties.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Formatter {
    pub print_timestamp: bool,
    pub print_key: bool,
    pub print_value: bool,
    pub print_partition: bool,
    pub print_offset: bool,
    pub print_headers: bool,
    pub key_separator: Vec<u8>,
    pub line_separator: Vec<u8>,
    pub headers_separator: Vec<u8>,
    pub null_literal: Vec<u8>,
}

impl Default for Formatter {
    fn default() -> Self {
        Formatter {
            print_timestamp: false,
            print_key: false,
            print_value: true,
            print_partition: false,
            print_offset: false,
            print_headers: false,
            key_separator: b"\t".to_vec(),
            line_separator: b"\n".to_vec(),
            headers_separator: b",".to_vec(),
            null_literal: b"null".to_vec(),
        }
    }
}

impl Formatter {
    /// Applies `--property` pairs. Unknown keys are ignored, as Kafka does
    /// (they may be meant for a deserializer).
    pub fn from_properties(props: &[(String, String)]) -> Self {
        let mut f = Formatter::default();
        // Kafka: value.trim().equalsIgnoreCase("true").
        let flag = |v: &str| v.trim().eq_ignore_ascii_case("true");
        for (k, v) in props {
            match k.as_str() {
                "print.timestamp" => f.print_timestamp = flag(v),
                "print.key" => f.print_key = flag(v),
                "print.value" => f.print_value = flag(v),
                "print.partition" => f.print_partition = flag(v),
                "print.offset" => f.print_offset = flag(v),
                "print.headers" => f.print_headers = flag(v),
                "key.separator" => f.key_separator = v.as_bytes().to_vec(),
                "line.separator" => f.line_separator = v.as_bytes().to_vec(),
                "headers.separator" => f.headers_separator = v.as_bytes().to_vec(),
                "null.literal" => f.null_literal = v.as_bytes().to_vec(),
                _ => {}
            }
        }
        f
    }

    /// Writes one record; field order and separators as Kafka's formatter.
    pub fn write(&self, out: &mut dyn Write, r: &ConsumedRecord) -> std::io::Result<()> {
        let sep = |out: &mut dyn Write, more: bool| -> std::io::Result<()> {
            out.write_all(if more {
                &self.key_separator
            } else {
                &self.line_separator
            })
        };
        if self.print_timestamp {
            let kind = match r.timestamp_type {
                TimestampType::Creation => "CreateTime",
                TimestampType::LogAppend => "LogAppendTime",
            };
            if r.timestamp < 0 {
                out.write_all(b"NO_TIMESTAMP")?;
            } else {
                write!(out, "{kind}:{}", r.timestamp)?;
            }
            sep(
                out,
                self.print_partition
                    || self.print_offset
                    || self.print_headers
                    || self.print_key
                    || self.print_value,
            )?;
        }
        if self.print_partition {
            write!(out, "Partition:{}", r.partition)?;
            sep(
                out,
                self.print_offset || self.print_headers || self.print_key || self.print_value,
            )?;
        }
        if self.print_offset {
            write!(out, "Offset:{}", r.offset)?;
            sep(
                out,
                self.print_headers || self.print_key || self.print_value,
            )?;
        }
        if self.print_headers {
            if r.headers.is_empty() {
                out.write_all(b"NO_HEADERS")?;
            }
            for (i, (k, v)) in r.headers.iter().enumerate() {
                if i > 0 {
                    out.write_all(&self.headers_separator)?;
                }
                write!(out, "{k}:")?;
                out.write_all(v.as_deref().unwrap_or(&self.null_literal))?;
            }
            sep(out, self.print_key || self.print_value)?;
        }
        if self.print_key {
            out.write_all(r.key.as_deref().unwrap_or(&self.null_literal))?;
            sep(out, self.print_value)?;
        }
        if self.print_value {
            out.write_all(r.value.as_deref().unwrap_or(&self.null_literal))?;
            out.write_all(&self.line_separator)?;
        }
        Ok(())
    }
}

/// What one partition's fetched bytes held.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decoded {
    /// Records at or after the requested offset, in order.
    pub records: Vec<ConsumedRecord>,
    /// The offset after the last complete batch, if there was one.
    pub next_offset: Option<i64>,
    /// True if bytes were present but not one complete batch: the batch is
    /// larger than the partition fetch limit.
    pub incomplete_only: bool,
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Splits a partition's `records` bytes into batches and decodes them,
/// dropping records before `from` (a batch can start before the fetch
/// offset) and control records. A trailing partial batch, which a broker
/// may send when it cuts at the size limit, is ignored.
pub(crate) fn decode_records(partition: i32, data: &Bytes, from: i64) -> Result<Decoded> {
    let mut out = Decoded::default();
    let mut pos = 0usize;
    while data.len() - pos >= BATCH_HEADER_LEN {
        let b = &data[pos..];
        let base_offset = be_i64(b, 0);
        let batch_length = be_i32(b, 8);
        let magic = b[16] as i8;
        if magic != 2 {
            return Err(Error::InvalidBatch(format!(
                "message format v{magic} at offset {base_offset} is not supported"
            )));
        }
        let length = usize::try_from(batch_length)
            .ok()
            .filter(|l| *l >= BATCH_HEADER_LEN - BATCH_LENGTH_BASE)
            .ok_or_else(|| {
                Error::InvalidBatch(format!(
                    "batch at offset {base_offset} has invalid length {batch_length}"
                ))
            })?;
        let total = BATCH_LENGTH_BASE + length;
        if total > b.len() {
            break; // partial batch at the end of the response
        }
        let attributes = i16::from_be_bytes([b[21], b[22]]);
        let last_offset_delta = be_i32(b, 23);
        let record_count = be_i32(b, 57);
        let compressed = attributes & 0x7 != 0;
        let records_len = total - BATCH_HEADER_LEN;
        // kafka-protocol reserves room for `record_count` records up front,
        // so the count must fit the bytes that hold them: checked here for
        // plain batches, after (bounded) decompression for compressed ones.
        let claimed = usize::try_from(record_count).unwrap_or(usize::MAX);
        let count_fits = |len: usize| claimed.saturating_mul(MIN_RECORD_LEN) <= len;
        let lying_count = |len: usize| {
            format!("batch at offset {base_offset} claims {record_count} records in {len} bytes")
        };
        if !compressed && !count_fits(records_len) {
            return Err(Error::InvalidBatch(lying_count(records_len)));
        }
        let mut batch = data.slice(pos..pos + total);
        pos += total;
        let next = base_offset
            .checked_add(i64::from(last_offset_delta))
            .and_then(|o| o.checked_add(1))
            .ok_or_else(|| Error::InvalidBatch(format!("offset overflow at {base_offset}")))?;
        out.next_offset = Some(out.next_offset.map_or(next, |n: i64| n.max(next)));
        let is_control = attributes & (1 << 5) != 0;
        if is_control {
            continue;
        }
        let set = RecordBatchDecoder::decode_with_custom_compression(
            &mut batch,
            Some(|data: &mut Bytes, codec| {
                if codec == Compression::None {
                    return Ok(std::mem::take(data));
                }
                let plain = decompress(data, codec, MAX_DECOMPRESSED)
                    .context("cannot decompress the records")?;
                let plain = Bytes::from(plain);
                if !count_fits(plain.len()) {
                    anyhow::bail!(lying_count(plain.len()));
                }
                Ok(plain)
            }),
        )
        .map_err(|e| Error::InvalidBatch(format!("at offset {base_offset}: {e:#}")))?;
        for r in set.records {
            if r.offset < from || r.control {
                continue;
            }
            out.records.push(ConsumedRecord {
                partition,
                offset: r.offset,
                timestamp: r.timestamp,
                timestamp_type: r.timestamp_type,
                key: r.key,
                value: r.value,
                headers: r
                    .headers
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
            });
        }
    }
    out.incomplete_only = out.next_offset.is_none() && !data.is_empty();
    Ok(out)
}

/// Runs the consumer until `max_messages`, the idle timeout, Ctrl-C, or a
/// closed stdout. Returns how many records were printed; the caller
/// reports the count.
pub(crate) async fn consume(
    client: &mut Client,
    opts: &ConsumeOptions,
    formatter: &Formatter,
    out: &mut dyn Write,
) -> Result<u64> {
    let count = Cell::new(0u64);
    let run = consume_loop(client, opts, formatter, out, &count);
    tokio::select! {
        r = run => r.map(|()| count.get()),
        _ = tokio::signal::ctrl_c() => Ok(count.get()),
    }
}

async fn consume_loop(
    client: &mut Client,
    opts: &ConsumeOptions,
    formatter: &Formatter,
    out: &mut dyn Write,
    count: &Cell<u64>,
) -> Result<()> {
    // The idle timeout counts from here, so waiting for the topic uses it up.
    let started = Instant::now();
    let Some(partitions) = wait_for_partitions(client, opts, started).await? else {
        return Ok(());
    };
    let positions = start_positions(client, opts, &partitions).await?;
    let mut fetcher = Fetcher {
        client,
        opts,
        formatter,
        out,
        count,
        partitions,
        positions,
        partition_limits: BTreeMap::new(),
        last_activity: started,
        backoff_ms: 0,
    };
    fetcher.run().await
}

/// True once the idle timeout has passed since `since`.
fn timed_out(opts: &ConsumeOptions, since: Instant) -> bool {
    opts.timeout.is_some_and(|t| since.elapsed() > t)
}

/// Waits for the topic (and partition) to exist, as Kafka's consumer does.
/// Returns the partitions to read, or `None` if the idle timeout ran out.
async fn wait_for_partitions(
    client: &mut Client,
    opts: &ConsumeOptions,
    started: Instant,
) -> Result<Option<Vec<i32>>> {
    let topic = &opts.topic;
    loop {
        match client
            .metadata(Some(std::slice::from_ref(topic)), false)
            .await
        {
            Ok(infos) => {
                if let Some(t) = infos
                    .into_iter()
                    .find(|t| &t.name == topic && t.error_code == 0)
                {
                    let ids: Vec<i32> = t
                        .partitions
                        .iter()
                        .map(|p| p.partition)
                        .filter(|p| opts.partition.is_none_or(|want| want == *p))
                        .collect();
                    if !ids.is_empty() {
                        return Ok(Some(ids));
                    }
                }
            }
            Err(e) if e.needs_metadata_refresh() => {
                tracing::debug!(error = %e, "metadata failed");
            }
            Err(e) => return Err(e),
        }
        if timed_out(opts, started) {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Each partition's first offset to fetch, from `opts.start`.
async fn start_positions(
    client: &mut Client,
    opts: &ConsumeOptions,
    partitions: &[i32],
) -> Result<BTreeMap<i32, i64>> {
    let mut positions = BTreeMap::new();
    match opts.start {
        StartAt::Offset(o) => {
            for &p in partitions {
                positions.insert(p, o);
            }
        }
        StartAt::Earliest | StartAt::Latest => {
            let spec = if opts.start == StartAt::Earliest {
                OffsetSpec::Earliest
            } else {
                OffsetSpec::Latest
            };
            reset_positions(client, &opts.topic, partitions, spec, &mut positions).await?;
        }
    }
    Ok(positions)
}

/// The fetch loop and what it carries from one round to the next.
struct Fetcher<'a> {
    client: &'a mut Client,
    opts: &'a ConsumeOptions,
    formatter: &'a Formatter,
    out: &'a mut dyn Write,
    count: &'a Cell<u64>,
    partitions: Vec<i32>,
    /// The next offset to fetch, per partition.
    positions: BTreeMap<i32, i64>,
    /// Partition limits raised for batches too large for the default.
    partition_limits: BTreeMap<i32, i32>,
    /// When the last record was printed: the idle timeout counts from it.
    last_activity: Instant,
    backoff_ms: u64,
}

/// What one round of fetches left for the loop to do.
#[derive(Default)]
struct Round {
    need_refresh: bool,
    /// Partitions whose position was out of range.
    resets: Vec<i32>,
}

/// What one fetched partition asks of the loop.
enum PartitionOutcome {
    Read,
    OutOfRange,
    NeedsRefresh,
    StdoutClosed,
}

impl Fetcher<'_> {
    async fn run(&mut self) -> Result<()> {
        loop {
            if self.reached_max() || timed_out(self.opts, self.last_activity) {
                return Ok(());
            }
            if self.backoff_ms > 0 {
                tokio::time::sleep(Duration::from_millis(self.backoff_ms)).await;
            }
            let Some(round) = self.fetch_round().await? else {
                return Ok(());
            };
            if self.out.flush().is_err() {
                eprintln!("Unable to write to standard out, closing consumer.");
                return Ok(());
            }
            if !round.resets.is_empty() {
                let spec = if self.opts.reset_to_earliest {
                    OffsetSpec::Earliest
                } else {
                    OffsetSpec::Latest
                };
                let topic = &self.opts.topic;
                reset_positions(self.client, topic, &round.resets, spec, &mut self.positions)
                    .await?;
            }
            self.refresh_if_needed(round.need_refresh).await;
        }
    }

    fn reached_max(&self) -> bool {
        self.opts
            .max_messages
            .is_some_and(|m| self.count.get() >= m)
    }

    /// One Fetch per leader, and what came back applied. `None` once stdout
    /// is closed.
    async fn fetch_round(&mut self) -> Result<Option<Round>> {
        let (by_leader, need_refresh) = self.group_by_leader();
        let mut round = Round {
            need_refresh,
            ..Round::default()
        };
        let limits = self.limits();
        let fetched = self
            .client
            .fetch(&self.opts.topic, &by_leader, limits)
            .await;
        for (leader, result) in fetched {
            let parts = match result {
                Ok(parts) => parts,
                Err(e) if e.needs_metadata_refresh() => {
                    tracing::debug!(leader, error = %e, "fetch failed");
                    round.need_refresh = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for fp in parts {
                let partition = fp.partition;
                match self.take_partition(fp)? {
                    PartitionOutcome::Read => {}
                    PartitionOutcome::OutOfRange => round.resets.push(partition),
                    PartitionOutcome::NeedsRefresh => round.need_refresh = true,
                    PartitionOutcome::StdoutClosed => return Ok(None),
                }
            }
        }
        Ok(Some(round))
    }

    /// The partitions to fetch, grouped by leader, and whether some have no
    /// known leader (so metadata needs a refresh).
    fn group_by_leader(&self) -> (BTreeMap<i32, Vec<(i32, i64)>>, bool) {
        let mut by_leader: BTreeMap<i32, Vec<(i32, i64)>> = BTreeMap::new();
        let mut need_refresh = false;
        for (&p, &offset) in &self.positions {
            match self.client.leader_of(&self.opts.topic, p) {
                Some(l) if self.client.brokers().contains_key(&l) => {
                    by_leader.entry(l).or_default().push((p, offset))
                }
                _ => need_refresh = true,
            }
        }
        (by_leader, need_refresh)
    }

    fn limits(&self) -> FetchLimits {
        let defaults = FetchLimits::default();
        // One partition limit per request: the largest any partition needs.
        let partition_max_bytes = self
            .partitions
            .iter()
            .filter_map(|p| self.partition_limits.get(p))
            .copied()
            .max()
            .unwrap_or(defaults.partition_max_bytes);
        let max_wait_ms = self
            .opts
            .timeout
            .map(|t| t.as_millis().min(defaults.max_wait_ms as u128) as i32)
            .unwrap_or(defaults.max_wait_ms);
        FetchLimits {
            max_wait_ms,
            partition_max_bytes,
            ..defaults
        }
    }

    /// Prints one fetched partition's records and moves its position on.
    fn take_partition(&mut self, fp: FetchedPartition) -> Result<PartitionOutcome> {
        let Some(&position) = self.positions.get(&fp.partition) else {
            return Ok(PartitionOutcome::Read);
        };
        match fp.error_code {
            0 => {}
            OFFSET_OUT_OF_RANGE => return Ok(PartitionOutcome::OutOfRange),
            code if is_metadata_error(code) => return Ok(PartitionOutcome::NeedsRefresh),
            code => return Err(Error::kafka(code, None)),
        }
        let Some(data) = fp.records.as_ref().filter(|d| !d.is_empty()) else {
            return Ok(PartitionOutcome::Read);
        };
        let decoded = decode_records(fp.partition, data, position)?;
        if decoded.incomplete_only {
            let defaults = FetchLimits::default();
            let limit = self
                .partition_limits
                .entry(fp.partition)
                .or_insert(defaults.partition_max_bytes);
            *limit = limit.saturating_mul(2).min(defaults.max_bytes);
        }
        for r in &decoded.records {
            if self.reached_max() {
                break;
            }
            if self.formatter.write(self.out, r).is_err() {
                eprintln!("Unable to write to standard out, closing consumer.");
                return Ok(PartitionOutcome::StdoutClosed);
            }
            self.count.set(self.count.get() + 1);
            self.last_activity = Instant::now();
        }
        if let Some(next) = decoded.next_offset {
            self.positions.insert(fp.partition, next.max(position));
        }
        Ok(PartitionOutcome::Read)
    }

    /// Backs off and refreshes metadata after a round that needed it; resets
    /// the backoff after one that did not.
    async fn refresh_if_needed(&mut self, need_refresh: bool) {
        if need_refresh {
            self.backoff_ms = (self.backoff_ms * 2).clamp(100, 1000);
            if let Err(e) = self
                .client
                .metadata(Some(std::slice::from_ref(&self.opts.topic)), false)
                .await
            {
                tracing::debug!(error = %e, "metadata refresh failed");
            }
        } else {
            self.backoff_ms = 0;
        }
    }
}

async fn reset_positions(
    client: &mut Client,
    topic: &str,
    partitions: &[i32],
    spec: OffsetSpec,
    positions: &mut BTreeMap<i32, i64>,
) -> Result<()> {
    for (p, r) in client.list_offsets(topic, partitions, spec).await? {
        let listed = r?;
        positions.insert(p, listed.offset.unwrap_or(0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::build::{encode, record};

    fn rec(offset: i64, key: Option<&str>, value: Option<&str>) -> ConsumedRecord {
        ConsumedRecord {
            partition: 2,
            offset,
            timestamp: 1234,
            timestamp_type: TimestampType::Creation,
            key: key.map(|k| Bytes::from(k.to_owned())),
            value: value.map(|v| Bytes::from(v.to_owned())),
            headers: vec![],
        }
    }

    fn render(f: &Formatter, r: &ConsumedRecord) -> String {
        let mut out = Vec::new();
        f.write(&mut out, r).unwrap();
        String::from_utf8(out).unwrap()
    }

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn default_prints_value_only() {
        let f = Formatter::default();
        assert_eq!(render(&f, &rec(0, Some("k"), Some("v"))), "v\n");
        assert_eq!(render(&f, &rec(0, None, None)), "null\n");
    }

    #[test]
    fn key_with_custom_separator() {
        let f =
            Formatter::from_properties(&props(&[("print.key", "true"), ("key.separator", ":")]));
        assert_eq!(render(&f, &rec(0, Some("k"), Some("v"))), "k:v\n");
        assert_eq!(render(&f, &rec(0, None, Some("v"))), "null:v\n");
    }

    #[test]
    fn all_fields_in_kafka_order() {
        let f = Formatter::from_properties(&props(&[
            ("print.timestamp", "TRUE "),
            ("print.partition", "true"),
            ("print.offset", "true"),
            ("print.headers", "true"),
            ("print.key", "true"),
        ]));
        let mut r = rec(7, Some("k"), Some("v"));
        assert_eq!(
            render(&f, &r),
            "CreateTime:1234\tPartition:2\tOffset:7\tNO_HEADERS\tk\tv\n"
        );
        r.headers = vec![("h1".into(), Some(Bytes::from("x"))), ("h2".into(), None)];
        assert_eq!(
            render(&f, &r),
            "CreateTime:1234\tPartition:2\tOffset:7\th1:x,h2:null\tk\tv\n"
        );
    }

    #[test]
    fn without_value_the_last_field_ends_the_line() {
        let f =
            Formatter::from_properties(&props(&[("print.key", "true"), ("print.value", "false")]));
        assert_eq!(render(&f, &rec(0, Some("k"), Some("v"))), "k\n");
    }

    fn batch(base: i64, values: &[&str]) -> Bytes {
        let records: Vec<_> = values
            .iter()
            .enumerate()
            .map(|(i, v)| record(base + i as i64, 1, None, Some(Bytes::from(v.to_string()))))
            .collect();
        encode(&records, Compression::None).unwrap()
    }

    #[test]
    fn decode_skips_records_before_the_fetch_offset() {
        let mut data = batch(10, &["a", "b", "c"]).to_vec();
        data.extend_from_slice(&batch(13, &["d"]));
        let d = decode_records(0, &Bytes::from(data), 11).unwrap();
        let values: Vec<_> = d.records.iter().map(|r| r.value.clone().unwrap()).collect();
        assert_eq!(values, vec!["b", "c", "d"]);
        assert_eq!(d.records[0].offset, 11);
        assert_eq!(d.next_offset, Some(14));
        assert!(!d.incomplete_only);
    }

    #[test]
    fn decode_ignores_a_trailing_partial_batch() {
        let mut data = batch(0, &["a"]).to_vec();
        let second = batch(1, &["b", "c"]);
        data.extend_from_slice(&second[..second.len() - 3]);
        let d = decode_records(0, &Bytes::from(data), 0).unwrap();
        assert_eq!(d.records.len(), 1);
        assert_eq!(d.next_offset, Some(1));

        let only_partial = second.slice(..second.len() - 3);
        let d = decode_records(0, &only_partial, 1).unwrap();
        assert!(d.records.is_empty());
        assert!(d.incomplete_only);
        assert_eq!(d.next_offset, None);
    }

    #[test]
    fn decode_refuses_a_lying_record_count() {
        let mut data = batch(0, &["a"]).to_vec();
        data[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&data[21..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_records(0, &Bytes::from(data), 0).unwrap_err();
        assert!(
            err.to_string().contains("claims 2147483647 records"),
            "{err}"
        );
    }

    #[test]
    fn decode_refuses_a_lying_record_count_in_a_compressed_batch() {
        let records = vec![record(0, 1, None, Some(Bytes::from("v")))];
        let mut data = encode(&records, Compression::Gzip).unwrap().to_vec();
        data[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        // Keep the CRC valid so that only the count is wrong.
        let crc = crc32c::crc32c(&data[21..]);
        data[17..21].copy_from_slice(&crc.to_be_bytes());
        let err = decode_records(0, &Bytes::from(data), 0).unwrap_err();
        assert!(
            err.to_string().contains("claims 2147483647 records"),
            "{err}"
        );
    }

    #[test]
    fn decode_detects_corruption() {
        let mut data = batch(0, &["hello"]).to_vec();
        let last = data.len() - 2;
        data[last] ^= 0xff;
        assert!(decode_records(0, &Bytes::from(data), 0).is_err());
    }

    #[test]
    fn decode_reads_compressed_batches() {
        let records: Vec<_> = (0..3)
            .map(|i| {
                record(
                    i,
                    1,
                    Some(Bytes::from("k")),
                    Some(Bytes::from(format!("v{i}"))),
                )
            })
            .collect();
        for c in [
            Compression::Gzip,
            Compression::Lz4,
            Compression::Zstd,
            Compression::Snappy,
        ] {
            let data = encode(&records, c).unwrap();
            let d = decode_records(0, &data, 0).unwrap();
            assert_eq!(d.records.len(), 3, "{c:?}");
            assert_eq!(d.records[2].value.as_deref(), Some(&b"v2"[..]));
        }
    }
}
