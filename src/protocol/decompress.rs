//! Bounded decompression of a record batch's `records` section, for every
//! codec Kafka defines. Both the broker (walking a stored batch, e.g. for
//! ListOffsets by timestamp) and the CLI consumer inflate through here.
//!
//! kafka-protocol's own decompressors inflate without limit, and its raw
//! snappy path allocates whatever length the data claims, so a few KiB off
//! the wire could make us allocate gigabytes. This module must never hold
//! more than `limit` bytes of output (plus one probe byte), and must check a
//! length claimed by the data (raw snappy) before allocating for it.

use std::io::{self, Read};

use kafka_protocol::records::Compression;

/// Largest decompressed `records` section accepted, broker and CLI alike.
///
/// Kafka bounds the *compressed* batch by `message.max.bytes` (1 MiB by
/// default) and nothing bounds its inflated size. Producers fill a batch up to
/// `batch.size` after compression (the Java client) or before it (librdkafka,
/// 1 MB), so a 1 MiB batch of text or JSON rarely inflates past 10–20 MiB;
/// 64 MiB leaves room for well-compressed large batches while keeping the
/// worst case one inflated batch per walk, not the ~1000:1 (gzip) or more
/// (zstd) a bomb achieves. It is a constant rather than a multiple of
/// `message.max.bytes` because the broker-side caller (the log's timestamp
/// lookup) has no config at hand, and threading it through for this would
/// couple the log to the server's config.
pub const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// xerial snappy-java stream header, as Kafka's Java client writes it:
/// 8 magic bytes, then a 4-byte version and a 4-byte compatible version.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Why a payload could not be decompressed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The output would exceed the caller's limit; nothing beyond the limit
    /// was allocated.
    #[error("{codec} data decompresses to more than {limit} bytes")]
    TooLarge { codec: &'static str, limit: usize },
    /// Truncated or invalid compressed data.
    #[error("corrupt {codec} data: {source}")]
    Corrupt {
        codec: &'static str,
        #[source]
        source: io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Kafka's name for a codec (`compression.type`).
fn codec_name(codec: Compression) -> &'static str {
    match codec {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Decompresses a batch's records section, refusing more than `limit` bytes
/// of output. `Compression::None` returns a copy of `input` (callers that
/// hold the payload as `Bytes` pass it through instead).
pub fn decompress(input: &[u8], codec: Compression, limit: usize) -> Result<Vec<u8>> {
    let name = codec_name(codec);
    let corrupt = |source: io::Error| Error::Corrupt {
        codec: name,
        source,
    };
    match codec {
        Compression::None => Ok(input.to_vec()),
        Compression::Gzip => read_bounded(&mut flate2::read::GzDecoder::new(input), name, limit),
        Compression::Lz4 => {
            let mut decoder = lz4::Decoder::new(input).map_err(corrupt)?;
            let out = read_bounded(&mut decoder, name, limit)?;
            // The lz4 decoder reports a frame cut short as a clean end of
            // stream; only `finish` tells whether the end mark was seen.
            if decoder.finish().1.is_err() {
                return Err(corrupt(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "truncated lz4 frame",
                )));
            }
            Ok(out)
        }
        Compression::Zstd => read_bounded(
            &mut zstd::stream::read::Decoder::new(input).map_err(corrupt)?,
            name,
            limit,
        ),
        Compression::Snappy => snappy(input, limit),
    }
}

/// Reads at most `limit + 1` bytes: the extra byte tells "exactly at the
/// limit" from "over it" without ever holding more.
fn read_bounded<R: Read>(reader: &mut R, codec: &'static str, limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|source| Error::Corrupt { codec, source })?;
    if out.len() > limit {
        return Err(Error::TooLarge { codec, limit });
    }
    Ok(out)
}

fn snappy_corrupt(detail: impl std::fmt::Display) -> Error {
    Error::Corrupt {
        codec: "snappy",
        source: io::Error::new(io::ErrorKind::InvalidData, detail.to_string()),
    }
}

/// Kafka's snappy: the xerial block stream (u32 length + raw snappy block,
/// repeated) when the magic is present, else one raw snappy block, as
/// snappy-java's `SnappyInputStream` reads it.
fn snappy(input: &[u8], limit: usize) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    if !input.starts_with(XERIAL_MAGIC) {
        raw_snappy_block(input, limit, &mut out)?;
        return Ok(out);
    }
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .ok_or_else(|| snappy_corrupt("truncated snappy stream header"))?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| snappy_corrupt("truncated snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| snappy_corrupt("truncated snappy block"))?;
        raw_snappy_block(block, limit, &mut out)?;
        rest = &tail[len..];
    }
    Ok(out)
}

fn raw_snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<()> {
    let len = snap::raw::decompress_len(block)
        .map_err(|e| snappy_corrupt(format!("invalid snappy block: {e}")))?;
    // The length is a claim from the wire: check it before allocating.
    if out.len().saturating_add(len) > limit {
        return Err(Error::TooLarge {
            codec: "snappy",
            limit,
        });
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| snappy_corrupt(format!("corrupt snappy block: {e}")))?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn zstd(data: &[u8]) -> Vec<u8> {
        zstd::stream::encode_all(data, 3).unwrap()
    }

    fn lz4(data: &[u8]) -> Vec<u8> {
        let mut e = lz4::EncoderBuilder::new().build(Vec::new()).unwrap();
        e.write_all(data).unwrap();
        let (out, res) = e.finish();
        res.unwrap();
        out
    }

    fn raw_snappy(data: &[u8]) -> Vec<u8> {
        snap::raw::Encoder::new().compress_vec(data).unwrap()
    }

    /// The xerial stream Kafka's Java client writes: header, then one
    /// length-prefixed raw block per (at most) 32 KiB of input.
    fn xerial(data: &[u8]) -> Vec<u8> {
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in data.chunks(32 * 1024) {
            let block = raw_snappy(chunk);
            framed.extend_from_slice(&(block.len() as u32).to_be_bytes());
            framed.extend_from_slice(&block);
        }
        framed
    }

    fn pack(codec: Compression, data: &[u8]) -> Vec<u8> {
        match codec {
            Compression::None => data.to_vec(),
            Compression::Gzip => gzip(data),
            Compression::Snappy => xerial(data),
            Compression::Lz4 => lz4(data),
            Compression::Zstd => zstd(data),
        }
    }

    const ALL: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample() -> Vec<u8> {
        (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect()
    }

    #[test]
    fn every_codec_round_trips() {
        let data = sample();
        for codec in ALL {
            let out = decompress(&pack(codec, &data), codec, 1 << 20).unwrap();
            assert_eq!(out, data, "{codec:?}");
            // Empty input to the encoder round-trips too.
            let out = decompress(&pack(codec, b""), codec, 1 << 20).unwrap();
            assert!(out.is_empty(), "{codec:?}");
        }
        // Raw (non-xerial) snappy, as librdkafka writes it.
        let out = decompress(&raw_snappy(&data), Compression::Snappy, 1 << 20).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn inflates_within_the_limit() {
        let data = vec![7u8; 10_000];
        let out = decompress(&gzip(&data), Compression::Gzip, 10_000).unwrap();
        assert_eq!(&out[..], &data[..]);
        assert_eq!(
            decompress(&zstd(&data), Compression::Zstd, 10_000)
                .unwrap()
                .len(),
            10_000
        );
    }

    #[test]
    fn exactly_at_the_limit_is_accepted_one_over_is_refused() {
        let data = sample();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = pack(codec, &data);
            assert_eq!(
                decompress(&packed, codec, data.len()).unwrap().len(),
                data.len(),
                "{codec:?}"
            );
            match decompress(&packed, codec, data.len() - 1) {
                Err(Error::TooLarge { limit, .. }) => assert_eq!(limit, data.len() - 1),
                other => panic!("{codec:?}: {other:?}"),
            }
        }
        match decompress(&raw_snappy(&data), Compression::Snappy, data.len() - 1) {
            Err(Error::TooLarge { .. }) => {}
            other => panic!("raw snappy: {other:?}"),
        }
    }

    #[test]
    fn refuses_a_bomb() {
        // 10 MB of zeros compresses to a few KB.
        let data = vec![0u8; 10_000_000];
        for codec in [
            Compression::Gzip,
            Compression::Zstd,
            Compression::Lz4,
            Compression::Snappy,
        ] {
            let packed = pack(codec, &data);
            assert!(packed.len() < 1_000_000, "{codec:?}: {}", packed.len());
            let err = decompress(&packed, codec, 1_000_000).unwrap_err();
            assert!(matches!(err, Error::TooLarge { .. }), "{codec:?}: {err:?}");
            assert!(err.to_string().contains("more than 1000000 bytes"), "{err}");
            assert!(err.to_string().contains(codec_name(codec)), "{err}");
        }
        // One raw snappy block holding all of it.
        let err = decompress(&raw_snappy(&data), Compression::Snappy, 1_000_000).unwrap_err();
        assert!(err.to_string().contains("more than 1000000 bytes"), "{err}");
    }

    #[test]
    fn snappy_length_claim_is_checked_before_allocating() {
        // A raw snappy block whose header varint claims ~4 GiB.
        let lying = [0xff, 0xff, 0xff, 0xff, 0x0f, 0x00];
        let err = decompress(&lying, Compression::Snappy, MAX_DECOMPRESSED).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
        // The same claim inside a xerial stream, after a legitimate block:
        // the check counts what was already inflated.
        let mut framed = xerial(&[1u8; 1000]);
        framed.extend_from_slice(&(lying.len() as u32).to_be_bytes());
        framed.extend_from_slice(&lying);
        let err = decompress(&framed, Compression::Snappy, MAX_DECOMPRESSED).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
        // Two honest blocks that together pass the limit.
        let two = xerial(&[5u8; 64 * 1024]);
        assert!(matches!(
            decompress(&two, Compression::Snappy, 40 * 1024),
            Err(Error::TooLarge { .. })
        ));
    }

    #[test]
    fn snappy_xerial_and_raw() {
        let data = b"hello hello hello hello".repeat(50);
        let raw = raw_snappy(&data);
        assert_eq!(
            &decompress(&raw, Compression::Snappy, 1 << 20).unwrap()[..],
            &data[..]
        );
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in [&raw[..], &raw[..]] {
            framed.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            framed.extend_from_slice(chunk);
        }
        let out = decompress(&framed, Compression::Snappy, 1 << 20).unwrap();
        assert_eq!(out.len(), 2 * data.len());
    }

    #[test]
    fn garbage_and_truncation_are_corrupt_not_panics() {
        let data = sample();
        for codec in [
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
            Compression::Zstd,
        ] {
            let packed = pack(codec, &data);
            for input in [
                &packed[..packed.len() / 2],
                &packed[..3],
                // Not any codec's magic; as raw snappy, a 4-byte claim
                // followed by a copy from before the start.
                &[0x04, 0xde, 0xad, 0xbe, 0xef, 0x00, 0x11][..],
            ] {
                match decompress(input, codec, 1 << 20) {
                    Err(Error::Corrupt { codec: c, .. }) => assert_eq!(c, codec_name(codec)),
                    other => panic!("{codec:?} on {} bytes: {other:?}", input.len()),
                }
            }
        }
        // A xerial header with a block length past the end.
        let mut framed = xerial(b"abc");
        framed.truncate(XERIAL_HEADER_LEN + 2);
        assert!(matches!(
            decompress(&framed, Compression::Snappy, 1 << 20),
            Err(Error::Corrupt { .. })
        ));
    }
}
