//! The message formats before RecordBatch: the magic 0 and magic 1
//! "message sets" of Kafka 0.8 to 0.10, which Produce v0-2 carry and Fetch
//! v0-3 return. The log stores only v2 batches, so a produced message set is
//! converted up to one batch on the way in ([`up_convert`]), and stored
//! batches are converted down for an old fetcher ([`down_convert`]), as
//! Kafka's `LogValidator` and `RecordsUtil.downConvert` do.
//!
//! One entry of a message set (big-endian), from Kafka's `LegacyRecord`:
//!
//! ```text
//! offset i64, size i32 (bytes after this field),
//! crc u32 (CRC-32 of magic..end), magic i8, attributes i8,
//! timestamp i64 (magic 1 only), key (i32 length, -1 null), value (same)
//! ```
//!
//! Attributes: bits 0-2 the codec (0 none, 1 gzip, 2 snappy, 3 lz4), bit 3
//! (magic 1) LogAppendTime. A compressed message, the "wrapper", holds a whole
//! message set of uncompressed messages in its value; a compressed message
//! inside one is refused, as Kafka refuses it. Everything inflated is bounded
//! by [`MAX_DECOMPRESSED`] per request partition, and nothing is allocated
//! from a length before it is checked against the bytes present.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::records::{Compression, Record};

use super::batch::{self, Error, Result};
use super::build;
use super::decompress::{decompress, MAX_DECOMPRESSED};
use super::rewrite;

pub const MAGIC_V0: i8 = 0;
pub const MAGIC_V1: i8 = 1;

/// Offset and size, before each message.
const ENTRY_OVERHEAD: usize = 12;
/// Where the magic byte sits, in a message set entry and in a v2 batch alike.
const MAGIC_AT: usize = 16;
const TIMESTAMP_TYPE_BIT: i8 = 1 << 3;

/// The smallest message of a magic: crc, magic, attributes, (timestamp),
/// key length, value length.
fn min_message_len(magic: i8) -> usize {
    4 + 1 + 1 + if magic == MAGIC_V1 { 8 } else { 0 } + 4 + 4
}

/// Whether a partition's records are a legacy message set rather than v2
/// batches: the magic byte is at the same place in both layouts.
pub fn is_message_set(records: &[u8]) -> bool {
    records.len() > MAGIC_AT && matches!(records[MAGIC_AT] as i8, MAGIC_V0 | MAGIC_V1)
}

/// The magic an old Fetch version reads: v0-1 magic 0, v2-3 magic 1.
pub fn fetch_magic(version: i16) -> i8 {
    if version < 2 {
        MAGIC_V0
    } else {
        MAGIC_V1
    }
}

/// One message of a message set, borrowed from the set's bytes.
#[derive(Debug, Clone, Copy)]
struct Message<'a> {
    offset: i64,
    magic: i8,
    attributes: i8,
    /// -1 for magic 0, which has none.
    timestamp: i64,
    key: Option<&'a [u8]>,
    value: Option<&'a [u8]>,
}

fn codec_of(attributes: i8) -> Result<Compression> {
    match attributes & 0x7 {
        0 => Ok(Compression::None),
        1 => Ok(Compression::Gzip),
        2 => Ok(Compression::Snappy),
        3 => Ok(Compression::Lz4),
        // zstd (4) never existed for magic 0 and 1.
        id => Err(Error::UnsupportedCompression(i16::from(id))),
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = flate2::Crc::new();
    crc.update(bytes);
    crc.sum()
}

fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

/// Reads a length-prefixed key or value at `*at`.
fn read_bytes<'a>(msg: &'a [u8], at: &mut usize, what: &str) -> Result<Option<&'a [u8]>> {
    if msg.len() - *at < 4 {
        return Err(Error::Corrupt(format!(
            "message truncated before its {what}"
        )));
    }
    let len = be_i32(msg, *at);
    *at += 4;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    if len > msg.len() - *at {
        return Err(Error::Corrupt(format!(
            "{what} of {len} bytes beyond the message's {} bytes",
            msg.len()
        )));
    }
    let out = &msg[*at..*at + len];
    *at += len;
    Ok(Some(out))
}

/// Calls `f` with each message of a set, after checking its size, magic and
/// CRC. A set that ends inside an entry is corrupt: producers send whole
/// messages.
fn each_message<'a>(buf: &'a [u8], mut f: impl FnMut(Message<'a>) -> Result<()>) -> Result<()> {
    let mut pos = 0usize;
    while pos < buf.len() {
        let rest = &buf[pos..];
        let corrupt = |what: String| Error::Corrupt(format!("message at byte {pos}: {what}"));
        if rest.len() < ENTRY_OVERHEAD {
            return Err(corrupt(format!(
                "{} bytes left, an entry header takes {ENTRY_OVERHEAD}",
                rest.len()
            )));
        }
        let offset = be_i64(rest, 0);
        let size = be_i32(rest, 8);
        let size = usize::try_from(size).map_err(|_| corrupt(format!("negative size {size}")))?;
        if size > rest.len() - ENTRY_OVERHEAD {
            return Err(corrupt(format!(
                "size {size} beyond the {} bytes left (truncated message set)",
                rest.len() - ENTRY_OVERHEAD
            )));
        }
        let msg = &rest[ENTRY_OVERHEAD..ENTRY_OVERHEAD + size];
        if msg.len() < min_message_len(MAGIC_V0) {
            return Err(corrupt(format!("{size} bytes is too short for a message")));
        }
        let magic = msg[4] as i8;
        if magic != MAGIC_V0 && magic != MAGIC_V1 {
            return Err(corrupt(format!("magic {magic} in a message set")));
        }
        if msg.len() < min_message_len(magic) {
            return Err(corrupt(format!(
                "{size} bytes is too short for a magic {magic} message"
            )));
        }
        let stored = u32::from_be_bytes([msg[0], msg[1], msg[2], msg[3]]);
        let computed = crc32(&msg[4..]);
        if stored != computed {
            return Err(corrupt(format!(
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let attributes = msg[5] as i8;
        let mut at = 6;
        let timestamp = if magic == MAGIC_V1 {
            at += 8;
            be_i64(msg, 6)
        } else {
            -1
        };
        let key = read_bytes(msg, &mut at, "key").map_err(|e| corrupt(e.to_string()))?;
        let value = read_bytes(msg, &mut at, "value").map_err(|e| corrupt(e.to_string()))?;
        if at != msg.len() {
            return Err(corrupt(format!("{} bytes after the value", msg.len() - at)));
        }
        f(Message {
            offset,
            magic,
            attributes,
            timestamp,
            key,
            value,
        })?;
        pos += ENTRY_OVERHEAD + size;
    }
    Ok(())
}

/// What a produced message set became.
#[derive(Debug)]
pub struct UpConverted {
    /// One v2 batch holding every message, in order.
    pub batch: Bytes,
    /// The magic of the messages (one per set).
    pub magic: i8,
    /// The codec of the set's compressed messages, which the batch keeps.
    pub compression: Compression,
}

/// Converts a produced message set to one v2 batch, as Kafka's
/// `LogValidator` does for a magic 0 or 1 append: keys, values and (magic 1)
/// timestamps are kept, magic 0 messages get no timestamp (-1), offsets are
/// the broker's to assign. Compressed messages are inflated (together at
/// most [`MAX_DECOMPRESSED`] bytes) and their messages recompressed into the
/// batch with the same codec.
pub fn up_convert(buf: &[u8]) -> Result<UpConverted> {
    let mut records: Vec<Record> = Vec::new();
    let mut magic = None;
    let mut compression = None;
    let mut budget = MAX_DECOMPRESSED;
    let push = |records: &mut Vec<Record>, m: &Message<'_>| {
        let index = records.len() as i64;
        records.push(build::record(
            index,
            m.timestamp,
            m.key.map(Bytes::copy_from_slice),
            m.value.map(Bytes::copy_from_slice),
        ));
    };
    each_message(buf, |m| {
        match magic {
            None => magic = Some(m.magic),
            Some(x) if x != m.magic => {
                return Err(Error::InvalidRecord(format!(
                    "message set mixes magic {x} and magic {}",
                    m.magic
                )))
            }
            Some(_) => {}
        }
        let codec = codec_of(m.attributes)?;
        if codec == Compression::None {
            push(&mut records, &m);
            return Ok(());
        }
        compression.get_or_insert(codec);
        let Some(value) = m.value else {
            return Err(Error::InvalidRecord(format!(
                "compressed message at offset {} has no value",
                m.offset
            )));
        };
        let fixed;
        let value = if codec == Compression::Lz4 && m.magic == MAGIC_V0 {
            fixed = lz4_fix_header_checksum(value);
            &fixed[..]
        } else {
            value
        };
        let inner = decompress(value, codec, budget).map_err(|e| {
            Error::Corrupt(format!(
                "cannot decompress the message at offset {}: {e}",
                m.offset
            ))
        })?;
        budget -= inner.len().min(budget);
        if inner.is_empty() {
            return Err(Error::InvalidRecord(format!(
                "compressed message at offset {} holds no messages",
                m.offset
            )));
        }
        each_message(&inner, |i| {
            if codec_of(i.attributes)? != Compression::None {
                return Err(Error::InvalidRecord(
                    "a compressed message inside a compressed message".into(),
                ));
            }
            if i.magic != m.magic {
                return Err(Error::InvalidRecord(format!(
                    "inner message of magic {} in a magic {} wrapper",
                    i.magic, m.magic
                )));
            }
            push(&mut records, &i);
            Ok(())
        })
    })?;
    let Some(magic) = magic else {
        return Err(Error::InvalidRecord("empty message set".into()));
    };
    let compression = compression.unwrap_or(Compression::None);
    let batch =
        build::encode(&records, compression).map_err(|e| Error::InvalidRecord(e.to_string()))?;
    Ok(UpConverted {
        batch,
        magic,
        compression,
    })
}

/// Kafka before 0.10 wrote the lz4 frame descriptor's checksum over the
/// frame's magic number too (KAFKA-3160), and magic 0 messages keep that
/// mistake (clients write it on purpose). The checksum is recomputed here
/// so that the frame decodes; a frame too short to hold a descriptor is
/// left for the decoder to refuse.
fn lz4_fix_header_checksum(frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    if out.len() < 7 {
        return out;
    }
    let flg = out[4];
    let len = 2 + if flg & 0x08 != 0 { 8 } else { 0 } + if flg & 0x01 != 0 { 4 } else { 0 };
    if out.len() <= 4 + len {
        return out;
    }
    let hc = (xxh32(&out[4..4 + len]) >> 8) as u8;
    out[4 + len] = hc;
    out
}

/// XXH32 with seed 0 of fewer than 16 bytes (an lz4 frame descriptor).
fn xxh32(input: &[u8]) -> u32 {
    const P1: u32 = 2_654_435_761;
    const P2: u32 = 2_246_822_519;
    const P3: u32 = 3_266_489_917;
    const P4: u32 = 668_265_263;
    const P5: u32 = 374_761_393;
    debug_assert!(input.len() < 16);
    let mut h = P5.wrapping_add(input.len() as u32);
    let mut words = input.chunks_exact(4);
    for w in &mut words {
        let v = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        h = h
            .wrapping_add(v.wrapping_mul(P3))
            .rotate_left(17)
            .wrapping_mul(P4);
    }
    for &b in words.remainder() {
        h = h
            .wrapping_add(u32::from(b).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 15;
    h = h.wrapping_mul(P2);
    h ^= h >> 13;
    h = h.wrapping_mul(P3);
    h ^ (h >> 16)
}

/// Appends one uncompressed message entry.
fn put_message(
    out: &mut BytesMut,
    magic: i8,
    offset: i64,
    attributes: i8,
    timestamp: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
) {
    let size = min_message_len(magic) + key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len);
    out.reserve(ENTRY_OVERHEAD + size);
    out.put_i64(offset);
    out.put_i32(size as i32);
    let crc_at = out.len();
    out.put_u32(0);
    let from = out.len();
    out.put_i8(magic);
    out.put_i8(attributes);
    if magic == MAGIC_V1 {
        out.put_i64(timestamp);
    }
    for part in [key, value] {
        match part {
            Some(b) => {
                out.put_i32(b.len() as i32);
                out.put_slice(b);
            }
            None => out.put_i32(-1),
        }
    }
    let crc = crc32(&out[from..]);
    out[crc_at..crc_at + 4].copy_from_slice(&crc.to_be_bytes());
}

/// Stored v2 batches rewritten as an uncompressed message set of `magic`
/// for Fetch v0-3, as Kafka's down-conversion does: each message keeps its
/// offset, key, value and (magic 1) timestamp and timestamp type; headers
/// are dropped (the old formats have none), control batches left out, and
/// records before `from_offset` skipped (a batch can start before it).
///
/// The output stops before the message that would take it past
/// `max_bytes`, but always holds the first one so that a client makes
/// progress (Kafka returns at least one message too). A batch cut short at
/// the end of `batches` ends the conversion, as it ends a v2 fetch.
pub fn down_convert(
    batches: &[u8],
    magic: i8,
    from_offset: i64,
    max_bytes: usize,
) -> Result<Bytes> {
    let mut out = BytesMut::new();
    for (n, b) in batch::batches(batches).enumerate() {
        let b = match b {
            Ok(b) => b,
            Err(_) if n > 0 => break,
            Err(e) => return Err(e),
        };
        if b.header.is_control() {
            continue;
        }
        let set = rewrite::records(b.bytes)?;
        let log_append = set.header.timestamp_type() == batch::TimestampType::LogAppend;
        let attributes = if magic == MAGIC_V1 && log_append {
            TIMESTAMP_TYPE_BIT
        } else {
            0
        };
        for r in &set.records {
            if r.offset < from_offset {
                continue;
            }
            let (key, value) = (set.key(r), set.value(r));
            let size = ENTRY_OVERHEAD
                + min_message_len(magic)
                + key.map_or(0, <[u8]>::len)
                + value.map_or(0, <[u8]>::len);
            if !out.is_empty() && out.len() + size > max_bytes {
                return Ok(out.freeze());
            }
            put_message(
                &mut out,
                magic,
                r.offset,
                attributes,
                r.timestamp,
                key,
                value,
            );
        }
    }
    Ok(out.freeze())
}

/// One message to [`encode`]: timestamp (ignored by magic 0), key, value.
pub type Plain<'a> = (i64, Option<&'a [u8]>, Option<&'a [u8]>);

/// Builds a message set as an old producer sends it: uncompressed messages
/// with offsets 0.., or for a codec one wrapper message holding them,
/// compressed (relative inner offsets, the wrapper at the last, as Kafka
/// 0.10's producer writes them). For tests, benchmarks and hand-built
/// requests; gzip, snappy (xerial framing) and lz4 (frame format).
pub fn encode(magic: i8, compression: Compression, messages: &[Plain<'_>]) -> Result<Bytes> {
    let mut plain = BytesMut::new();
    for (i, (ts, k, v)) in messages.iter().enumerate() {
        put_message(&mut plain, magic, i as i64, 0, *ts, *k, *v);
    }
    if compression == Compression::None {
        return Ok(plain.freeze());
    }
    let compressed = compress(&plain, compression)?;
    let attributes = match compression {
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        _ => return Err(Error::UnsupportedCompression(4)),
    };
    let max_ts = messages.iter().map(|m| m.0).max().unwrap_or(-1);
    let mut out = BytesMut::new();
    put_message(
        &mut out,
        magic,
        messages.len().saturating_sub(1) as i64,
        attributes,
        max_ts,
        None,
        Some(&compressed),
    );
    Ok(out.freeze())
}

fn compress(plain: &[u8], codec: Compression) -> Result<Vec<u8>> {
    use std::io::Write;
    let failed = |e: std::io::Error| Error::Corrupt(format!("cannot compress: {e}"));
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).map_err(failed)?;
            e.finish().map_err(failed)
        }
        Compression::Snappy => {
            // xerial snappy-java framing, as Kafka's Java producer writes:
            // header, then blocks of (length i32, raw snappy).
            let mut out = b"\x82SNAPPY\x00".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for chunk in plain.chunks(32 * 1024) {
                let block = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .map_err(|e| Error::Corrupt(format!("cannot compress: {e}")))?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .build(Vec::new())
                .map_err(failed)?;
            e.write_all(plain).map_err(failed)?;
            let (out, r) = e.finish();
            r.map_err(failed)?;
            Ok(out)
        }
        Compression::None => Ok(plain.to_vec()),
        Compression::Zstd => Err(Error::UnsupportedCompression(4)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (timestamp, key, value), owned.
    type Owned = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

    fn sample() -> Vec<Owned> {
        (0..5)
            .map(|i| {
                (
                    1_700_000_000_000 + i,
                    (i != 2).then(|| format!("k{i}").into_bytes()),
                    (i != 4).then(|| format!("value-{i}").into_bytes()),
                )
            })
            .collect()
    }

    fn plain(s: &[Owned]) -> Vec<Plain<'_>> {
        s.iter()
            .map(|(t, k, v)| (*t, k.as_deref(), v.as_deref()))
            .collect()
    }

    #[test]
    fn up_and_down_conversion_keep_keys_values_and_timestamps() {
        let s = sample();
        for magic in [MAGIC_V0, MAGIC_V1] {
            for codec in [
                Compression::None,
                Compression::Gzip,
                Compression::Snappy,
                Compression::Lz4,
            ] {
                let set = encode(magic, codec, &plain(&s)).unwrap();
                assert!(is_message_set(&set));
                let up = up_convert(&set).unwrap();
                assert_eq!((up.magic, up.compression), (magic, codec));
                let mut b = up.batch.to_vec();
                batch::set_base_offset(&mut b, 40);
                let summary = batch::validate_batches(&b, 1 << 20).unwrap();
                assert_eq!(summary.record_count, 5);
                let stored = rewrite::records(&b).unwrap();
                for (r, (t, k, v)) in stored.records.iter().zip(&s) {
                    assert_eq!(stored.key(r), k.as_deref());
                    assert_eq!(stored.value(r), v.as_deref());
                    let want = if magic == MAGIC_V0 { -1 } else { *t };
                    assert_eq!(r.timestamp, want, "magic {magic} {codec:?}");
                }
                // And back down, to both old magics, from offset 41.
                for to in [MAGIC_V0, MAGIC_V1] {
                    let down = down_convert(&b, to, 41, 1 << 20).unwrap();
                    let mut got = Vec::new();
                    each_message(&down, |m| {
                        assert_eq!(m.magic, to);
                        assert_eq!(codec_of(m.attributes).unwrap(), Compression::None);
                        got.push((m.offset, m.timestamp, m.key.map(<[u8]>::to_vec)));
                        Ok(())
                    })
                    .unwrap();
                    let want: Vec<_> = s[1..]
                        .iter()
                        .enumerate()
                        .map(|(i, (t, k, _))| {
                            let ts = if to == MAGIC_V1 && magic == MAGIC_V1 {
                                *t
                            } else {
                                -1
                            };
                            (41 + i as i64, ts, k.clone())
                        })
                        .collect();
                    assert_eq!(got, want, "magic {magic} {codec:?} -> {to}");
                }
            }
        }
    }

    #[test]
    fn magic_0_lz4_with_kafka_0_8s_header_checksum_is_read() {
        let s = sample();
        let set = encode(MAGIC_V0, Compression::Lz4, &plain(&s)).unwrap();
        // The wrapper's value starts after offset, size, crc, magic,
        // attributes, key (-1) and the value's length: byte 26. Its frame
        // descriptor checksum (FLG, BD, HC) is at 4 + 2.
        let mut broken = set.to_vec();
        let hc = 26 + 6;
        assert_eq!(
            broken[hc],
            (xxh32(&broken[26 + 4..26 + 6]) >> 8) as u8,
            "xxh32 agrees with liblz4"
        );
        broken[hc] = broken[hc].wrapping_add(1);
        let crc = crc32(&broken[16..]);
        broken[12..16].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(up_convert(&broken).unwrap().compression, Compression::Lz4);
        // Magic 1 frames must carry the right checksum.
        let set = encode(MAGIC_V1, Compression::Lz4, &plain(&s)).unwrap();
        let mut broken = set.to_vec();
        let hc = 34 + 6;
        broken[hc] = broken[hc].wrapping_add(1);
        let crc = crc32(&broken[16..]);
        broken[12..16].copy_from_slice(&crc.to_be_bytes());
        assert!(up_convert(&broken).is_err());
    }

    #[test]
    fn down_conversion_is_bounded_but_keeps_the_first_message() {
        let big = vec![b'x'; 1000];
        let s: Vec<Plain<'_>> = (0..10).map(|i| (i, None, Some(&big[..]))).collect();
        let up = up_convert(&encode(MAGIC_V1, Compression::None, &s).unwrap()).unwrap();
        let down = down_convert(&up.batch, MAGIC_V1, 0, 2500).unwrap();
        let mut n = 0;
        each_message(&down, |_| {
            n += 1;
            Ok(())
        })
        .unwrap();
        assert_eq!(n, 2);
        let down = down_convert(&up.batch, MAGIC_V1, 0, 10).unwrap();
        assert!(!down.is_empty());
    }

    #[test]
    fn hostile_message_sets_are_clean_errors() {
        let s = sample();
        let good = encode(MAGIC_V1, Compression::None, &plain(&s)).unwrap();
        // A flipped bit in a value: CRC mismatch.
        let mut bad = good.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(up_convert(&bad), Err(Error::Corrupt(m)) if m.contains("CRC")));
        // Truncated in the middle of the last message.
        assert!(
            matches!(up_convert(&good[..good.len() - 3]), Err(Error::Corrupt(m)) if m.contains("truncated"))
        );
        // A size of 2^31-1.
        let mut huge = good[..12].to_vec();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        huge.extend_from_slice(&[0; 20]);
        assert!(matches!(up_convert(&huge), Err(Error::Corrupt(_))));
        // A key length of 2^31-1 inside a message whose CRC is right.
        let mut out = BytesMut::new();
        put_message(&mut out, MAGIC_V0, 0, 0, -1, Some(b"k"), None);
        let mut m = out.to_vec();
        m[12 + 6..12 + 10].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32(&m[16..]);
        m[12..16].copy_from_slice(&crc.to_be_bytes());
        assert!(matches!(up_convert(&m), Err(Error::Corrupt(_))));
        // Nested compression: a gzip wrapper around a gzip wrapper.
        let inner = encode(MAGIC_V1, Compression::Gzip, &plain(&s)).unwrap();
        let compressed = compress(&inner, Compression::Gzip).unwrap();
        let mut outer = BytesMut::new();
        put_message(&mut outer, MAGIC_V1, 0, 1, 0, None, Some(&compressed));
        assert!(matches!(up_convert(&outer), Err(Error::InvalidRecord(m)) if m.contains("inside")));
        // A compression bomb: a wrapper inflating past the bound.
        let zeros = vec![0u8; MAX_DECOMPRESSED + 1024];
        let bomb = compress(&zeros, Compression::Gzip).unwrap();
        let mut w = BytesMut::new();
        put_message(&mut w, MAGIC_V1, 0, 1, 0, None, Some(&bomb));
        assert!(matches!(up_convert(&w), Err(Error::Corrupt(m)) if m.contains("decompress")));
        // zstd (4) never existed for magic 0-1; 5-7 are undefined.
        let mut z = BytesMut::new();
        put_message(&mut z, MAGIC_V1, 0, 4, 0, None, Some(b"x"));
        assert!(matches!(
            up_convert(&z),
            Err(Error::UnsupportedCompression(4))
        ));
        assert!(matches!(up_convert(&[]), Err(Error::InvalidRecord(_))));
    }
}
