//! Kafka RecordBatch v2 (magic 2): a read-only view of the 61-byte header,
//! validation of the `records` field of a Produce request, in-place rewrites of
//! the two fields the broker owns (base offset, partition leader epoch), and a
//! walk over the records of one batch (decompressing if needed, within
//! [`MAX_DECOMPRESSED`] bytes).
//!
//! Everything here works on borrowed bytes and never sizes an allocation from
//! a length read off the wire before checking it against the bytes present.
//! It knows nothing of tokio or of the log; `server` maps [`Error`] variants to
//! Kafka error codes.
//!
//! Layout (big-endian), from Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! baseOffset i64 @0, batchLength i32 @8 (bytes after this field),
//! partitionLeaderEpoch i32 @12, magic i8 @16, crc u32 @17 (CRC-32C of @21..end),
//! attributes i16 @21, lastOffsetDelta i32 @23, baseTimestamp i64 @27,
//! maxTimestamp i64 @35, producerId i64 @43, producerEpoch i16 @51,
//! baseSequence i32 @53, recordsCount i32 @57, records @61..
//! ```

use std::ops::ControlFlow;

pub use kafka_protocol::records::{Compression, TimestampType};

use super::decompress::{decompress, MAX_DECOMPRESSED};

/// Bytes before `batchLength` counts: base offset (8) and batch length (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header, records start here.
pub const HEADER_LEN: usize = 61;
/// Smallest legal `batchLength`: a header with no records.
pub const MIN_BATCH_LENGTH: i32 = (HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only batch format we accept (Kafka 0.11+, KIP-98).
pub const MAGIC_V2: i8 = 2;

const BASE_OFFSET_AT: usize = 0;
const BATCH_LENGTH_AT: usize = 8;
const LEADER_EPOCH_AT: usize = 12;
const MAGIC_AT: usize = 16;
const CRC_AT: usize = 17;
/// The CRC covers everything from the attributes to the end of the batch, so
/// the base offset and the leader epoch can be rewritten without recomputing it.
const CRC_FROM: usize = 21;

/// The smallest encoding of a record: length, attributes, timestamp delta,
/// offset delta, key length, value length, header count, one byte each.
const MIN_RECORD_LEN: usize = 7;

/// Why a batch was refused. Each variant maps to one Kafka error code (the
/// mapping lives in `server`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad lengths, truncated data, CRC mismatch: CORRUPT_MESSAGE (2).
    #[error("corrupt record batch: {0}")]
    Corrupt(String),
    /// A batch larger than `message.max.bytes`: MESSAGE_TOO_LARGE (10).
    #[error(
        "record batch at byte {position} is {size} bytes, larger than the limit of {max} bytes"
    )]
    TooLarge {
        position: usize,
        size: usize,
        max: usize,
    },
    /// Magic 0 or 1 (or garbage): UNSUPPORTED_FOR_MESSAGE_FORMAT (43).
    #[error("unsupported record batch magic {0} (only magic 2 is supported)")]
    UnsupportedMagic(i8),
    /// Compression codec id 5..=7: UNSUPPORTED_COMPRESSION_TYPE (76).
    #[error("unsupported compression codec id {0}")]
    UnsupportedCompression(i16),
    /// Record count and offset deltas disagree, no records: INVALID_RECORD (87).
    #[error("invalid record batch: {0}")]
    InvalidRecord(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The fixed fields of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    /// First offset of the batch; the broker assigns it on append.
    pub base_offset: i64,
    /// Bytes after this field, i.e. the batch is `12 + batch_length` bytes.
    pub batch_length: i32,
    /// Leader epoch when the batch was appended (KIP-101); the broker sets it.
    pub partition_leader_epoch: i32,
    pub magic: i8,
    /// CRC-32C of the bytes from the attributes to the end of the batch.
    pub crc: u32,
    /// Bits 0-2 compression, 3 timestamp type, 4 transactional, 5 control.
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    /// Idempotent / transactional producer (KIP-98); -1 when not used.
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl BatchHeader {
    /// Offset of the last record in the batch.
    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Number of offsets the batch occupies (`lastOffsetDelta + 1`).
    pub fn offset_count(&self) -> i64 {
        i64::from(self.last_offset_delta) + 1
    }

    /// Whole batch size in bytes, including base offset and length fields.
    /// Only meaningful once `batch_length` was checked (>= 49), as
    /// [`parse_header`] does.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    pub fn compression_id(&self) -> i16 {
        self.attributes & 0x7
    }

    /// The compression codec, or `None` for ids Kafka does not define (5..=7).
    pub fn compression(&self) -> Option<Compression> {
        match self.compression_id() {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes & (1 << 3) != 0 {
            TimestampType::LogAppend
        } else {
            TimestampType::Creation
        }
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & (1 << 4) != 0
    }

    /// Control batches carry transaction markers, not user records.
    pub fn is_control(&self) -> bool {
        self.attributes & (1 << 5) != 0
    }
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    i32::from_be_bytes(a)
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(a)
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}

/// Reads the header at the start of `buf`. Checks that the header itself is
/// present, that the magic is 2 and that `batchLength` is at least a header;
/// it does not check that the rest of the batch is present, nor the CRC.
pub fn parse_header(buf: &[u8]) -> Result<BatchHeader> {
    if buf.len() <= MAGIC_AT {
        return Err(Error::Corrupt(format!(
            "truncated batch header: {} bytes, need {HEADER_LEN}",
            buf.len()
        )));
    }
    let magic = buf[MAGIC_AT] as i8;
    if magic != MAGIC_V2 {
        return Err(Error::UnsupportedMagic(magic));
    }
    let batch_length = be_i32(buf, BATCH_LENGTH_AT);
    if batch_length < MIN_BATCH_LENGTH {
        return Err(Error::Corrupt(format!(
            "batch length {batch_length} is smaller than the {MIN_BATCH_LENGTH}-byte header"
        )));
    }
    if buf.len() < HEADER_LEN {
        return Err(Error::Corrupt(format!(
            "truncated batch header: {} bytes, need {HEADER_LEN}",
            buf.len()
        )));
    }
    Ok(BatchHeader {
        base_offset: be_i64(buf, BASE_OFFSET_AT),
        batch_length,
        partition_leader_epoch: be_i32(buf, LEADER_EPOCH_AT),
        magic,
        crc: be_u32(buf, CRC_AT),
        attributes: be_i16(buf, 21),
        last_offset_delta: be_i32(buf, 23),
        base_timestamp: be_i64(buf, 27),
        max_timestamp: be_i64(buf, 35),
        producer_id: be_i64(buf, 43),
        producer_epoch: be_i16(buf, 51),
        base_sequence: be_i32(buf, 53),
        records_count: be_i32(buf, 57),
    })
}

/// Rewrites the base offset of the batch at the start of `batch`. Not covered
/// by the CRC. Does nothing if `batch` is shorter than a header field.
pub fn set_base_offset(batch: &mut [u8], offset: i64) {
    if let Some(field) = batch.get_mut(BASE_OFFSET_AT..BASE_OFFSET_AT + 8) {
        field.copy_from_slice(&offset.to_be_bytes());
    }
}

/// Rewrites the partition leader epoch of the batch at the start of `batch`.
/// Not covered by the CRC.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    if let Some(field) = batch.get_mut(LEADER_EPOCH_AT..LEADER_EPOCH_AT + 4) {
        field.copy_from_slice(&epoch.to_be_bytes());
    }
}

/// CRC-32C as stored in the header.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(batch.get(CRC_FROM..).unwrap_or_default())
}

/// One batch inside a buffer of concatenated batches.
#[derive(Debug, Clone, Copy)]
pub struct BatchRef<'a> {
    pub header: BatchHeader,
    /// Byte position of the batch in the buffer it was found in.
    pub position: usize,
    /// The whole batch, header included.
    pub bytes: &'a [u8],
}

/// Iterates over the whole batches of a buffer, checking each header and that
/// the batch is entirely present (not the CRC). After the first error it
/// yields nothing more.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

/// Iterates over the batches in `buf`; see [`Batches`].
pub fn batches(buf: &[u8]) -> Batches<'_> {
    Batches {
        buf,
        pos: 0,
        failed: false,
    }
}

impl<'a> Batches<'a> {
    /// Bytes consumed by the batches yielded so far.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = Result<BatchRef<'a>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let rest = &self.buf[self.pos..];
        let item = parse_header(rest)
            .map_err(|e| at_position(e, self.pos))
            .and_then(|header| {
                let size = header.size();
                if size > rest.len() {
                    return Err(Error::Corrupt(format!(
                        "batch at byte {} claims {size} bytes but only {} are present",
                        self.pos,
                        rest.len()
                    )));
                }
                Ok(BatchRef {
                    header,
                    position: self.pos,
                    bytes: &rest[..size],
                })
            });
        match &item {
            Ok(b) => self.pos += b.bytes.len(),
            Err(_) => self.failed = true,
        }
        Some(item)
    }
}

fn at_position(e: Error, pos: usize) -> Error {
    match e {
        Error::Corrupt(m) => Error::Corrupt(format!("batch at byte {pos}: {m}")),
        Error::InvalidRecord(m) => Error::InvalidRecord(format!("batch at byte {pos}: {m}")),
        other => other,
    }
}

/// What [`validate_batches`] learnt about a Produce request's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchesSummary {
    pub batch_count: usize,
    /// Sum of `recordsCount`.
    pub record_count: i64,
    /// Sum of `lastOffsetDelta + 1`: how many offsets an append consumes.
    pub offset_count: i64,
    /// Largest `maxTimestamp` over the batches.
    pub max_timestamp: i64,
    pub first: BatchHeader,
    pub last: BatchHeader,
}

/// Validates the `records` field of one partition in a Produce request: one
/// or more whole v2 batches, nothing else. Checks each batch's length, CRC,
/// size against `max_batch_bytes`, record count against `lastOffsetDelta`,
/// and for uncompressed batches that the records fill the batch exactly.
pub fn validate_batches(buf: &[u8], max_batch_bytes: usize) -> Result<BatchesSummary> {
    if buf.is_empty() {
        return Err(Error::InvalidRecord("no record batches".into()));
    }
    let mut first = None;
    let mut last = None;
    let mut batch_count = 0usize;
    let mut record_count = 0i64;
    let mut offset_count = 0i64;
    let mut max_timestamp = i64::MIN;
    for batch in batches(buf) {
        let batch = batch?;
        validate_batch(&batch, max_batch_bytes)?;
        let h = batch.header;
        batch_count += 1;
        record_count += i64::from(h.records_count);
        offset_count += h.offset_count();
        max_timestamp = max_timestamp.max(h.max_timestamp);
        first.get_or_insert(h);
        last = Some(h);
    }
    match (first, last) {
        (Some(first), Some(last)) => Ok(BatchesSummary {
            batch_count,
            record_count,
            offset_count,
            max_timestamp,
            first,
            last,
        }),
        _ => Err(Error::InvalidRecord("no record batches".into())),
    }
}

/// Checks one batch found by [`batches`] (so its header and length are sane).
pub fn validate_batch(batch: &BatchRef<'_>, max_batch_bytes: usize) -> Result<()> {
    let h = &batch.header;
    let pos = batch.position;
    if batch.bytes.len() > max_batch_bytes {
        return Err(Error::TooLarge {
            position: pos,
            size: batch.bytes.len(),
            max: max_batch_bytes,
        });
    }
    let computed = compute_crc(batch.bytes);
    if computed != h.crc {
        return Err(Error::Corrupt(format!(
            "batch at byte {pos}: CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            h.crc
        )));
    }
    if h.records_count < 1 {
        return Err(Error::InvalidRecord(format!(
            "batch at byte {pos} has records count {}",
            h.records_count
        )));
    }
    if i64::from(h.last_offset_delta) != i64::from(h.records_count) - 1 {
        return Err(Error::InvalidRecord(format!(
            "batch at byte {pos}: last offset delta {} does not match records count {}",
            h.last_offset_delta, h.records_count
        )));
    }
    let Some(compression) = h.compression() else {
        return Err(Error::UnsupportedCompression(h.compression_id()));
    };
    if compression == Compression::None {
        // Walking the records is cheap when they are not compressed, and it
        // guarantees readers (and RecordBatchDecoder) a count that matches
        // the bytes. Compressed payloads are only walked when read.
        let payload = &batch.bytes[HEADER_LEN..];
        if (h.records_count as usize).saturating_mul(MIN_RECORD_LEN) > payload.len() {
            return Err(Error::InvalidRecord(format!(
                "batch at byte {pos} claims {} records in {} bytes",
                h.records_count,
                payload.len()
            )));
        }
        walk_records(payload, h.records_count, |_| ControlFlow::Continue(()))
            .map_err(|e| at_position(e, pos))?;
    }
    Ok(())
}

/// Offset and timestamp of one record, as [`for_each_record`] reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordPosition {
    pub offset: i64,
    pub timestamp: i64,
}

/// Calls `f` with the offset and timestamp of each record of a whole batch, in
/// order, until it returns `Break`. Decompresses the payload if needed. For
/// LogAppendTime batches every record carries the batch's `maxTimestamp`.
///
/// A compressed payload is inflated into memory, at most [`MAX_DECOMPRESSED`]
/// bytes of it: a batch that inflates to more (a compression bomb stored by
/// Produce, which does not inflate) is [`Error::Corrupt`], and nothing past the
/// bound is allocated. The bound is a constant rather than a parameter so that
/// the log, which calls this for timestamp lookups, needs no config for it.
///
/// This reads only the record prefix (length, attributes, deltas) rather than
/// using `RecordBatchDecoder`, which reserves `recordsCount` records up front.
pub fn for_each_record(
    batch: &[u8],
    mut f: impl FnMut(RecordPosition) -> ControlFlow<()>,
) -> Result<()> {
    let h = parse_header(batch)?;
    if h.size() > batch.len() {
        return Err(Error::Corrupt(format!(
            "batch claims {} bytes but only {} are present",
            h.size(),
            batch.len()
        )));
    }
    let payload = &batch[HEADER_LEN..h.size()];
    let log_append = h.timestamp_type() == TimestampType::LogAppend;
    let visit = |r: RawRecord| {
        f(RecordPosition {
            offset: h.base_offset + i64::from(r.offset_delta),
            timestamp: if log_append {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(r.timestamp_delta)
            },
        })
    };
    let compression = h
        .compression()
        .ok_or(Error::UnsupportedCompression(h.compression_id()))?;
    if compression == Compression::None {
        return walk_records(payload, h.records_count, visit);
    }
    let plain = decompress(payload, compression, MAX_DECOMPRESSED)
        .map_err(|e| Error::Corrupt(format!("cannot decompress the records: {e}")))?;
    walk_records(&plain, h.records_count, visit)
}

struct RawRecord {
    timestamp_delta: i64,
    offset_delta: i32,
}

/// Walks exactly `count` records that must fill `payload`; each record's
/// offset delta must be its index (Kafka's `validateRecord`).
fn walk_records(
    payload: &[u8],
    count: i32,
    mut f: impl FnMut(RawRecord) -> ControlFlow<()>,
) -> Result<()> {
    let mut rest = payload;
    for index in 0..count {
        let len = read_varint(&mut rest)
            .ok_or_else(|| Error::Corrupt(format!("record {index}: bad length varint")))?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Corrupt(format!("record {index}: negative length {len}")))?;
        if len > rest.len() {
            return Err(Error::Corrupt(format!(
                "record {index}: length {len} exceeds the {} bytes left",
                rest.len()
            )));
        }
        let (mut body, tail) = rest.split_at(len);
        rest = tail;
        if body.is_empty() {
            return Err(Error::Corrupt(format!("record {index}: empty record")));
        }
        body = &body[1..]; // attributes, unused in v2
        let timestamp_delta = read_varlong(&mut body)
            .ok_or_else(|| Error::Corrupt(format!("record {index}: bad timestamp delta")))?;
        let offset_delta = read_varint(&mut body)
            .ok_or_else(|| Error::Corrupt(format!("record {index}: bad offset delta")))?;
        if offset_delta != index {
            return Err(Error::InvalidRecord(format!(
                "record {index} has offset delta {offset_delta}"
            )));
        }
        if f(RawRecord {
            timestamp_delta,
            offset_delta,
        })
        .is_break()
        {
            return Ok(());
        }
    }
    if !rest.is_empty() {
        return Err(Error::InvalidRecord(format!(
            "{} bytes left after the {count} records the header announces",
            rest.len()
        )));
    }
    Ok(())
}

/// Zigzag varint (protobuf style) as Kafka records use; `None` on truncation
/// or overlong encodings.
pub(crate) fn read_varlong(buf: &mut &[u8]) -> Option<i64> {
    let mut raw = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        raw |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((raw >> 1) as i64 ^ -((raw & 1) as i64));
        }
    }
    None
}

pub(crate) fn read_varint(buf: &mut &[u8]) -> Option<i32> {
    let v = read_varlong(buf)?;
    i32::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use kafka_protocol::records::{Record, RecordBatchDecoder};

    pub(crate) fn record(offset: i64, timestamp: i64, value: &[u8]) -> Record {
        crate::protocol::build::record(
            offset,
            timestamp,
            Some(Bytes::from(format!("key-{offset}"))),
            Some(Bytes::copy_from_slice(value)),
        )
    }

    fn encode(records: &[Record], compression: Compression) -> Vec<u8> {
        crate::protocol::build::encode(records, compression)
            .expect("encode")
            .to_vec()
    }

    fn batch(n: i64, ts0: i64, compression: Compression) -> Vec<u8> {
        let recs: Vec<Record> = (0..n)
            .map(|i| record(i, ts0 + i * 10, format!("value {i}").as_bytes()))
            .collect();
        encode(&recs, compression)
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn header_fields_match_the_encoder() {
        for c in ALL {
            let b = batch(5, 1_000, c);
            let h = parse_header(&b).expect("header");
            assert_eq!(h.base_offset, 0);
            assert_eq!(h.size(), b.len());
            assert_eq!(h.magic, 2);
            assert_eq!(h.records_count, 5);
            assert_eq!(h.last_offset_delta, 4);
            assert_eq!(h.last_offset(), 4);
            assert_eq!(h.base_timestamp, 1_000);
            assert_eq!(h.max_timestamp, 1_040);
            assert_eq!(h.compression(), Some(c));
            assert!(!h.is_control());
            assert!(!h.is_transactional());
            assert_eq!(h.crc, compute_crc(&b));
        }
    }

    #[test]
    fn validates_several_batches_of_every_codec() {
        let mut buf = Vec::new();
        for (i, c) in ALL.into_iter().enumerate() {
            buf.extend(batch(i as i64 + 1, 100 * i as i64, c));
        }
        let s = validate_batches(&buf, 1 << 20).expect("valid");
        assert_eq!(s.batch_count, 5);
        assert_eq!(s.record_count, 1 + 2 + 3 + 4 + 5);
        assert_eq!(s.offset_count, 15);
        assert_eq!(s.max_timestamp, 400 + 40);
        assert_eq!(s.first.records_count, 1);
        assert_eq!(s.last.records_count, 5);
        assert_eq!(s.last.compression(), Some(Compression::Zstd));
    }

    #[test]
    fn flipped_byte_is_a_crc_mismatch() {
        let good = batch(3, 0, Compression::Lz4);
        for at in [21, 30, HEADER_LEN, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            match validate_batches(&b, 1 << 20) {
                Err(Error::Corrupt(m)) => assert!(m.contains("CRC mismatch"), "{m}"),
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        // The base offset and leader epoch are outside the CRC.
        let mut b = good.clone();
        set_base_offset(&mut b, 77);
        set_partition_leader_epoch(&mut b, 9);
        validate_batches(&b, 1 << 20).expect("still valid");
        let h = parse_header(&b).expect("header");
        assert_eq!((h.base_offset, h.partition_leader_epoch), (77, 9));
        assert_eq!(h.last_offset(), 79);
    }

    #[test]
    fn truncated_buffers_are_corrupt() {
        let mut two = batch(3, 0, Compression::None);
        let first_len = two.len();
        two.extend(batch(2, 0, Compression::None));
        for cut in [
            1,
            10,
            16,
            17,
            40,
            60,
            first_len - 1,
            first_len + 5,
            two.len() - 1,
        ] {
            match validate_batches(&two[..cut], 1 << 20) {
                Err(Error::Corrupt(_)) => {}
                other => panic!("cut at {cut}: {other:?}"),
            }
        }
        // Trailing garbage after whole batches.
        let mut b = batch(1, 0, Compression::None);
        b.extend_from_slice(&[0u8; 5]);
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(Error::Corrupt(_))
        ));
    }

    #[test]
    fn hostile_batch_lengths_are_refused_without_allocating() {
        for len in [i32::MAX, -1, i32::MIN, 0, MIN_BATCH_LENGTH - 1] {
            let mut b = batch(2, 0, Compression::None);
            b[8..12].copy_from_slice(&len.to_be_bytes());
            match validate_batches(&b, usize::MAX) {
                Err(Error::Corrupt(m)) => assert!(m.contains("batch"), "{m}"),
                other => panic!("length {len}: {other:?}"),
            }
        }
    }

    #[test]
    fn hostile_record_counts_are_refused() {
        // A record count claiming 2^31-1 records, with a correct CRC.
        let mut b = batch(2, 0, Compression::None);
        b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(
            validate_batches(&b, 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        // The same lie inside a compressed batch: walking the records fails
        // cleanly instead of reserving two billion entries.
        let mut z = batch(2, 0, Compression::Zstd);
        z[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        assert!(matches!(
            for_each_record(&z, |_| ControlFlow::Continue(())),
            Err(Error::Corrupt(_))
        ));
    }

    /// `b` with its records section replaced by `payload`, length and CRC fixed.
    fn with_payload(b: &[u8], payload: &[u8]) -> Vec<u8> {
        let mut out = b[..HEADER_LEN].to_vec();
        out.extend_from_slice(payload);
        let len = i32::try_from(out.len() - LOG_OVERHEAD).expect("fits");
        out[8..12].copy_from_slice(&len.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    #[test]
    fn a_compression_bomb_is_corrupt_not_an_allocation() {
        use std::io::Write;
        // One record's worth of header, then zeros inflating just past the
        // bound, streamed into the encoder so the test holds only the output.
        let mut z = zstd::stream::write::Encoder::new(Vec::new(), 1).expect("zstd");
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..MAX_DECOMPRESSED / zeros.len() {
            z.write_all(&zeros).expect("write");
        }
        z.write_all(&[0]).expect("write");
        let packed = z.finish().expect("finish");
        assert!(packed.len() < 64 * 1024, "{}", packed.len());
        let bomb = with_payload(&batch(1, 0, Compression::Zstd), &packed);
        // Produce does not inflate, so the batch is valid as far as it goes.
        validate_batches(&bomb, 1 << 20).expect("stored as is");
        match for_each_record(&bomb, |_| ControlFlow::Continue(())) {
            Err(Error::Corrupt(m)) => assert!(
                m.contains(&format!("more than {MAX_DECOMPRESSED} bytes")),
                "{m}"
            ),
            other => panic!("{other:?}"),
        }
        // Garbage in place of the compressed records is Corrupt as well.
        for c in [Compression::Gzip, Compression::Snappy, Compression::Lz4] {
            let junk = with_payload(&batch(1, 0, c), &[0x04, 0xde, 0xad, 0xbe, 0xef]);
            assert!(
                matches!(
                    for_each_record(&junk, |_| ControlFlow::Continue(())),
                    Err(Error::Corrupt(_))
                ),
                "{c:?}"
            );
        }
    }

    #[test]
    fn too_large_magic_count_and_codec_errors() {
        let b = batch(4, 0, Compression::None);
        assert_eq!(
            validate_batches(&b, b.len() - 1),
            Err(Error::TooLarge {
                position: 0,
                size: b.len(),
                max: b.len() - 1
            })
        );
        validate_batches(&b, b.len()).expect("exactly at the limit");

        let mut v1 = b.clone();
        v1[16] = 1;
        assert_eq!(
            validate_batches(&v1, 1 << 20),
            Err(Error::UnsupportedMagic(1))
        );

        let with_crc = |mut b: Vec<u8>| {
            let crc = compute_crc(&b);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            b
        };
        let mut delta = b.clone();
        delta[23..27].copy_from_slice(&2i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&with_crc(delta), 1 << 20),
            Err(Error::InvalidRecord(m)) if m.contains("last offset delta 2")
        ));
        let mut empty = b.clone();
        empty[57..61].copy_from_slice(&0i32.to_be_bytes());
        assert!(matches!(
            validate_batches(&with_crc(empty), 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
        let mut codec = b.clone();
        codec[22] |= 0x7;
        assert_eq!(
            validate_batches(&with_crc(codec), 1 << 20),
            Err(Error::UnsupportedCompression(7))
        );
        assert!(matches!(
            validate_batches(&[], 1 << 20),
            Err(Error::InvalidRecord(_))
        ));
    }

    #[test]
    fn iterator_yields_positions_and_stops_after_an_error() {
        let a = batch(1, 0, Compression::None);
        let b = batch(2, 0, Compression::Gzip);
        let mut buf = [a.clone(), b.clone()].concat();
        let found: Vec<_> = batches(&buf)
            .map(|r| r.map(|b| (b.position, b.bytes.len())))
            .collect::<Result<_>>()
            .expect("whole");
        assert_eq!(found, vec![(0, a.len()), (a.len(), b.len())]);
        buf.extend_from_slice(&[1, 2, 3]);
        let mut it = batches(&buf);
        assert!(it.next().is_some_and(|r| r.is_ok()));
        assert!(it.next().is_some_and(|r| r.is_ok()));
        assert!(it.next().is_some_and(|r| r.is_err()));
        assert!(it.next().is_none());
    }

    #[test]
    fn record_walk_agrees_with_record_batch_decoder() {
        for c in ALL {
            let mut b = batch(7, 5_000, c);
            set_base_offset(&mut b, 1_000);
            let mut seen = Vec::new();
            for_each_record(&b, |r| {
                seen.push((r.offset, r.timestamp));
                ControlFlow::Continue(())
            })
            .expect("walk");
            let decoded = RecordBatchDecoder::decode(&mut Bytes::from(b.clone())).expect("decode");
            let expected: Vec<_> = decoded
                .records
                .iter()
                .map(|r| (r.offset, r.timestamp))
                .collect();
            assert_eq!(seen, expected, "{c:?}");
            assert_eq!(seen.len(), 7);
            // Stops early on Break.
            let mut n = 0;
            for_each_record(&b, |_| {
                n += 1;
                if n == 3 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .expect("walk");
            assert_eq!(n, 3);
        }
    }

    #[test]
    fn varints_round_trip_and_reject_truncation() {
        for v in [0i64, 1, -1, 63, -64, 64, 300, -300, i64::MAX, i64::MIN] {
            let mut zz = ((v << 1) ^ (v >> 63)) as u64;
            let mut enc = Vec::new();
            loop {
                let byte = (zz & 0x7f) as u8;
                zz >>= 7;
                if zz == 0 {
                    enc.push(byte);
                    break;
                }
                enc.push(byte | 0x80);
            }
            let mut s = enc.as_slice();
            assert_eq!(read_varlong(&mut s), Some(v));
            assert!(s.is_empty());
            let mut short = &enc[..enc.len() - 1];
            if !short.is_empty() {
                assert_eq!(read_varlong(&mut short), None);
            }
        }
        let mut overlong: &[u8] = &[0xff; 11];
        assert_eq!(read_varlong(&mut overlong), None);
    }
}
