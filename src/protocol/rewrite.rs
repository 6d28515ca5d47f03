//! Stored batches the broker itself changes: the records of a batch with
//! their keys (for the log cleaner and for a compacted topic's key check),
//! a batch rebuilt with fewer records or another codec, and a stored
//! batch's checks.
//!
//! A rebuilt batch keeps its base offset, its last offset delta, its base
//! timestamp, its producer fields and its attributes (bar the codec when
//! asked), so the records it keeps are copied byte for byte: their offset
//! and timestamp deltas still hold. Offsets may then have gaps, as in
//! Kafka's compacted logs; the producer's sequence state (base sequence +
//! last offset delta) is unchanged.

use std::ops::{ControlFlow, Range};

use bytes::{BufMut, BytesMut};
use kafka_protocol::compression::{self as codec, Compressor};

use super::batch::{
    compute_crc, parse_header, read_varint, read_varlong, BatchHeader, Compression, Error, Result,
    TimestampType, HEADER_LEN,
};
use super::decompress::{decompress, MAX_DECOMPRESSED};

/// One record of a stored batch, as spans of the batch's (decompressed)
/// records section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// The whole record, its length prefix included.
    pub span: Range<usize>,
    pub offset: i64,
    pub timestamp: i64,
    /// `None`: a null key.
    pub key: Option<Range<usize>>,
    /// A null value: a tombstone in a compacted topic.
    pub tombstone: bool,
    /// `None`: a null value (a tombstone).
    pub value: Option<Range<usize>>,
}

/// The records section of a batch in plain bytes, and its records.
pub struct Records {
    pub header: BatchHeader,
    pub plain: Vec<u8>,
    pub records: Vec<StoredRecord>,
}

impl Records {
    pub fn key(&self, r: &StoredRecord) -> Option<&[u8]> {
        r.key.clone().map(|k| &self.plain[k])
    }

    pub fn value(&self, r: &StoredRecord) -> Option<&[u8]> {
        r.value.clone().map(|v| &self.plain[v])
    }
}

/// Reads every record of a whole stored `batch` (decompressing within
/// `MAX_DECOMPRESSED`). Offset deltas must increase and stay within the
/// last offset delta; a cleaned batch has gaps.
pub fn records(batch: &[u8]) -> Result<Records> {
    let h = parse_header(batch)?;
    if h.size() > batch.len() {
        return Err(Error::Corrupt(format!(
            "batch claims {} bytes but only {} are present",
            h.size(),
            batch.len()
        )));
    }
    let payload = &batch[HEADER_LEN..h.size()];
    let compression = h
        .compression()
        .ok_or(Error::UnsupportedCompression(h.compression_id()))?;
    let plain = if compression == Compression::None {
        payload.to_vec()
    } else {
        decompress(payload, compression, MAX_DECOMPRESSED)
            .map_err(|e| Error::Corrupt(format!("cannot decompress the records: {e}")))?
    };
    let log_append = h.timestamp_type() == TimestampType::LogAppend;
    let mut out = Vec::new();
    walk(&plain, &h, |r| {
        out.push(StoredRecord {
            offset: h.base_offset + i64::from(r.offset_delta),
            timestamp: if log_append {
                h.max_timestamp
            } else {
                h.base_timestamp.wrapping_add(r.timestamp_delta)
            },
            ..r.record
        });
        ControlFlow::Continue(())
    })?;
    Ok(Records {
        header: h,
        plain,
        records: out,
    })
}

struct Walked {
    record: StoredRecord,
    offset_delta: i32,
    timestamp_delta: i64,
}

/// Walks the `records_count` records that must fill `plain`.
fn walk(plain: &[u8], h: &BatchHeader, mut f: impl FnMut(Walked) -> ControlFlow<()>) -> Result<()> {
    let count = h.records_count;
    if count < 0 || (count as usize).saturating_mul(7) > plain.len() {
        return Err(Error::InvalidRecord(format!(
            "{count} records cannot fit in {} bytes",
            plain.len()
        )));
    }
    let mut pos = 0usize;
    let mut last_delta = -1i64;
    for index in 0..count {
        let bad = |what: &str| Error::Corrupt(format!("record {index}: {what}"));
        let mut rest = &plain[pos..];
        let before = rest.len();
        let len = read_varint(&mut rest).ok_or_else(|| bad("bad length varint"))?;
        let len = usize::try_from(len).map_err(|_| bad("negative length"))?;
        let prefix = before - rest.len();
        if len > rest.len() || len == 0 {
            return Err(bad("length beyond the records section"));
        }
        let start = pos;
        let body_at = pos + prefix;
        let end = body_at + len;
        let mut body = &plain[body_at + 1..end]; // attributes, unused in v2
        let timestamp_delta = read_varlong(&mut body).ok_or_else(|| bad("bad timestamp delta"))?;
        let offset_delta = read_varint(&mut body).ok_or_else(|| bad("bad offset delta"))?;
        if i64::from(offset_delta) <= last_delta || offset_delta > h.last_offset_delta {
            return Err(Error::InvalidRecord(format!(
                "record {index} has offset delta {offset_delta} after {last_delta} (last {})",
                h.last_offset_delta
            )));
        }
        last_delta = i64::from(offset_delta);
        let key_len = read_varint(&mut body).ok_or_else(|| bad("bad key length"))?;
        let key = if key_len < 0 {
            None
        } else {
            let k = key_len as usize;
            if k > body.len() {
                return Err(bad("key beyond the record"));
            }
            let at = end - body.len();
            body = &body[k..];
            Some(at..at + k)
        };
        let value_len = read_varint(&mut body).ok_or_else(|| bad("bad value length"))?;
        if value_len >= 0 && value_len as usize > body.len() {
            return Err(bad("value beyond the record"));
        }
        let value = (value_len >= 0).then(|| {
            let at = end - body.len();
            at..at + value_len as usize
        });
        if f(Walked {
            record: StoredRecord {
                span: start..end,
                offset: 0,
                timestamp: 0,
                key,
                tombstone: value_len < 0,
                value,
            },
            offset_delta,
            timestamp_delta,
        })
        .is_break()
        {
            return Ok(());
        }
        pos = end;
    }
    if pos != plain.len() {
        return Err(Error::InvalidRecord(format!(
            "{} bytes left after the {count} records the header announces",
            plain.len() - pos
        )));
    }
    Ok(())
}

/// Checks a stored batch: its CRC, and for an uncompressed one that its
/// records fill it with increasing offset deltas. Unlike a produced batch,
/// it may hold gaps or no record at all (what the cleaner leaves).
pub fn validate_stored(batch: &[u8]) -> Result<()> {
    let h = parse_header(batch)?;
    if h.size() > batch.len() {
        return Err(Error::Corrupt("batch truncated".into()));
    }
    let bytes = &batch[..h.size()];
    let computed = compute_crc(bytes);
    if computed != h.crc {
        return Err(Error::Corrupt(format!(
            "CRC mismatch: stored {:#010x}, computed {computed:#010x}",
            h.crc
        )));
    }
    if h.records_count < 0 || i64::from(h.last_offset_delta) < i64::from(h.records_count) - 1 {
        return Err(Error::InvalidRecord(format!(
            "records count {} with last offset delta {}",
            h.records_count, h.last_offset_delta
        )));
    }
    if h.compression() == Some(Compression::None) {
        walk(&bytes[HEADER_LEN..], &h, |_| ControlFlow::Continue(()))?;
    }
    Ok(())
}

/// A copy of `original`'s header with the records `keep` (spans of
/// `plain`, in order) compressed with `compression`: a cleaned batch, or a
/// batch recompressed to the topic's codec.
pub fn rebuild(
    original: &BatchHeader,
    plain: &[u8],
    keep: &[Range<usize>],
    compression: Compression,
) -> Result<Vec<u8>> {
    let mut records = BytesMut::with_capacity(keep.iter().map(|r| r.len()).sum());
    for r in keep {
        records.put_slice(&plain[r.clone()]);
    }
    let mut payload = BytesMut::new();
    let compressed = match compression {
        Compression::None => {
            payload = records;
            Ok(())
        }
        Compression::Gzip => codec::Gzip::compress(&mut payload, |b| {
            b.put_slice(&records);
            Ok(())
        }),
        Compression::Snappy => codec::Snappy::compress(&mut payload, |b| {
            b.put_slice(&records);
            Ok(())
        }),
        Compression::Lz4 => codec::Lz4::compress(&mut payload, |b| {
            b.put_slice(&records);
            Ok(())
        }),
        Compression::Zstd => codec::Zstd::compress(&mut payload, |b| {
            b.put_slice(&records);
            Ok(())
        }),
    };
    compressed.map_err(|e| Error::Corrupt(format!("cannot compress the records: {e:#}")))?;
    let total = HEADER_LEN + payload.len();
    let batch_length = i32::try_from(total - 12)
        .map_err(|_| Error::InvalidRecord("rebuilt batch too large".into()))?;
    let codec_id: i16 = match compression {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
    };
    let attributes = (original.attributes & !0x07) | codec_id;
    let mut out = Vec::with_capacity(total);
    out.put_i64(original.base_offset);
    out.put_i32(batch_length);
    out.put_i32(original.partition_leader_epoch);
    out.put_i8(original.magic);
    out.put_u32(0); // crc, below
    out.put_i16(attributes);
    out.put_i32(original.last_offset_delta);
    out.put_i64(original.base_timestamp);
    out.put_i64(original.max_timestamp);
    out.put_i64(original.producer_id);
    out.put_i16(original.producer_epoch);
    out.put_i32(original.base_sequence);
    out.put_i32(keep.len() as i32);
    out.put_slice(&payload);
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(out)
}

/// Sets a whole batch's `maxTimestamp` (and so its CRC).
pub fn set_max_timestamp(batch: &mut [u8], max_timestamp: i64) -> Result<()> {
    let h = parse_header(batch)?;
    if h.size() > batch.len() {
        return Err(Error::Corrupt("batch truncated".into()));
    }
    batch[35..43].copy_from_slice(&max_timestamp.to_be_bytes());
    let crc = compute_crc(&batch[..h.size()]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

/// Stamps a whole batch with the broker's clock (`message.timestamp.type
/// = LogAppendTime`): the timestamp-type bit and `maxTimestamp`, then the
/// CRC, as Kafka does; records keep their deltas, which readers ignore.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) -> Result<()> {
    let h = parse_header(batch)?;
    if h.size() > batch.len() {
        return Err(Error::Corrupt("batch truncated".into()));
    }
    let attributes = h.attributes | 0x08;
    batch[21..23].copy_from_slice(&attributes.to_be_bytes());
    batch[35..43].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(&batch[..h.size()]);
    batch[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::build;
    use bytes::Bytes;
    use kafka_protocol::records::{Record, RecordBatchDecoder};

    fn batch_of(codec: Compression) -> Bytes {
        let mut records: Vec<Record> = (0..6)
            .map(|i| {
                let value = (i != 3).then(|| Bytes::from(format!("value-{i}")));
                build::idempotent_record(
                    9,
                    1,
                    100,
                    i,
                    1_000 + i,
                    Some(Bytes::from(format!("k{}", i % 3))),
                    value,
                )
            })
            .collect();
        records[2].headers.insert(
            kafka_protocol::protocol::StrBytes::from_static_str("h"),
            Some(Bytes::from("x")),
        );
        let mut b = build::encode(&records, codec).unwrap().to_vec();
        crate::protocol::batch::set_base_offset(&mut b, 500);
        Bytes::from(b)
    }

    #[test]
    fn records_are_read_and_rebuilt_with_gaps_for_every_codec() {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let b = batch_of(codec);
            let r = records(&b).unwrap();
            assert_eq!(r.records.len(), 6);
            assert_eq!(r.records[4].offset, 504);
            assert_eq!(r.records[4].timestamp, 1_004);
            assert_eq!(r.key(&r.records[4]), Some(&b"k1"[..]));
            assert!(r.records[3].tombstone && !r.records[2].tombstone);
            // Keep offsets 502 (with its header), 503 (the tombstone) and 505.
            let keep: Vec<_> = [2, 3, 5]
                .iter()
                .map(|&i| r.records[i].span.clone())
                .collect();
            let rebuilt = rebuild(&r.header, &r.plain, &keep, codec).unwrap();
            validate_stored(&rebuilt).unwrap();
            let h = parse_header(&rebuilt).unwrap();
            assert_eq!(
                (h.base_offset, h.last_offset_delta, h.records_count),
                (500, 5, 3)
            );
            assert_eq!(
                (h.producer_id, h.producer_epoch, h.base_sequence),
                (9, 1, 100)
            );
            assert_eq!(h.compression(), Some(codec));
            // A stock decoder reads it: offsets and headers survive.
            let mut buf = Bytes::from(rebuilt);
            let set = RecordBatchDecoder::decode(&mut buf).unwrap();
            let offsets: Vec<i64> = set.records.iter().map(|r| r.offset).collect();
            assert_eq!(offsets, [502, 503, 505], "{codec:?}");
            assert_eq!(set.records[0].headers.len(), 1);
            assert!(set.records[1].value.is_none());
            assert_eq!(set.records[2].value.as_deref(), Some(&b"value-5"[..]));
        }
    }

    #[test]
    fn an_empty_rebuilt_batch_keeps_the_producer_fields_and_validates() {
        let b = batch_of(Compression::None);
        let r = records(&b).unwrap();
        let empty = rebuild(&r.header, &r.plain, &[], Compression::None).unwrap();
        validate_stored(&empty).unwrap();
        let h = parse_header(&empty).unwrap();
        assert_eq!(
            (h.records_count, h.last_offset_delta, h.base_sequence),
            (0, 5, 100)
        );
        let mut bad = empty.clone();
        bad[30] ^= 1;
        assert!(validate_stored(&bad).is_err());
    }

    #[test]
    fn log_append_time_stamps_the_batch_and_keeps_it_valid() {
        let mut b = batch_of(Compression::Lz4).to_vec();
        stamp_log_append_time(&mut b, 77_000).unwrap();
        validate_stored(&b).unwrap();
        let r = records(&b).unwrap();
        assert_eq!(r.header.timestamp_type(), TimestampType::LogAppend);
        assert!(r.records.iter().all(|x| x.timestamp == 77_000));
    }

    #[test]
    fn recompression_changes_only_the_codec() {
        let b = batch_of(Compression::None);
        let r = records(&b).unwrap();
        let all: Vec<_> = r.records.iter().map(|x| x.span.clone()).collect();
        let z = rebuild(&r.header, &r.plain, &all, Compression::Zstd).unwrap();
        let again = records(&z).unwrap();
        assert_eq!(again.plain, r.plain);
        assert_eq!(again.records, r.records);
    }
}
