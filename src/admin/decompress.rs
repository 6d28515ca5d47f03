//! Decompression of fetched record batches with a bound on the output size.
//! kafka-protocol's own decompressors inflate without limit (and its raw
//! snappy path allocates whatever length the data claims), so a broker —
//! or anything posing as one — could make the CLI allocate gigabytes from a
//! few bytes. This module is handed to `RecordBatchDecoder` instead.

use std::io::Read;

use anyhow::{bail, Context};
use bytes::Bytes;
use kafka_protocol::records::Compression;

/// Largest decompressed batch accepted. Kafka caps a batch at
/// `max.message.bytes` (1 MiB by default) before compression; 64 MiB leaves
/// ample room for well-compressed large batches.
pub(crate) const MAX_DECOMPRESSED: usize = 64 * 1024 * 1024;

/// xerial snappy-java stream header, as Kafka's Java client writes it:
/// 8 magic bytes, then a 4-byte version and a 4-byte compatible version.
const XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;

/// Decompresses a batch's records section, refusing more than `limit` bytes.
pub(crate) fn decompress(
    data: &mut Bytes,
    codec: Compression,
    limit: usize,
) -> anyhow::Result<Bytes> {
    let input = std::mem::take(data);
    match codec {
        Compression::None => Ok(input),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(&input[..]), limit),
        Compression::Lz4 => read_bounded(
            lz4::Decoder::new(&input[..]).context("invalid lz4 frame")?,
            limit,
        ),
        Compression::Zstd => read_bounded(
            zstd::stream::read::Decoder::new(&input[..]).context("invalid zstd frame")?,
            limit,
        ),
        Compression::Snappy => snappy(&input, limit),
    }
}

fn read_bounded<R: Read>(reader: R, limit: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .context("corrupt compressed data")?;
    if out.len() > limit {
        bail!("batch decompresses to more than {limit} bytes");
    }
    Ok(Bytes::from(out))
}

/// Kafka's snappy: the xerial block stream (u32 length + raw snappy block,
/// repeated) when the magic is present, else one raw snappy block, as
/// snappy-java's `SnappyInputStream` reads it.
fn snappy(input: &[u8], limit: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    if !input.starts_with(XERIAL_MAGIC) {
        raw_snappy_block(input, limit, &mut out)?;
        return Ok(Bytes::from(out));
    }
    let mut rest = input
        .get(XERIAL_HEADER_LEN..)
        .context("truncated snappy stream header")?;
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .context("truncated snappy block length")?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail.get(..len).context("truncated snappy block")?;
        raw_snappy_block(block, limit, &mut out)?;
        rest = &tail[len..];
    }
    Ok(Bytes::from(out))
}

fn raw_snappy_block(block: &[u8], limit: usize, out: &mut Vec<u8>) -> anyhow::Result<()> {
    let len = snap::raw::decompress_len(block).context("invalid snappy block")?;
    // The length is a claim from the wire: check it before allocating.
    if out.len().saturating_add(len) > limit {
        bail!("batch decompresses to more than {limit} bytes");
    }
    let start = out.len();
    out.resize(start + len, 0);
    let written = snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .context("corrupt snappy block")?;
    out.truncate(start + written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Bytes {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        Bytes::from(e.finish().unwrap())
    }

    #[test]
    fn inflates_within_the_limit() {
        let data = vec![7u8; 10_000];
        let out = decompress(&mut gzip(&data), Compression::Gzip, 10_000).unwrap();
        assert_eq!(&out[..], &data[..]);
        let z = Bytes::from(zstd::stream::encode_all(&data[..], 3).unwrap());
        assert_eq!(
            decompress(&mut z.clone(), Compression::Zstd, 10_000)
                .unwrap()
                .len(),
            10_000
        );
    }

    #[test]
    fn refuses_a_bomb() {
        // 10 MB of zeros compresses to a few KB.
        let data = vec![0u8; 10_000_000];
        for (codec, packed) in [
            (Compression::Gzip, gzip(&data)),
            (
                Compression::Zstd,
                Bytes::from(zstd::stream::encode_all(&data[..], 3).unwrap()),
            ),
        ] {
            assert!(packed.len() < 100_000);
            let err = decompress(&mut packed.clone(), codec, 1_000_000).unwrap_err();
            assert!(err.to_string().contains("more than 1000000 bytes"), "{err}");
        }
    }

    #[test]
    fn snappy_length_claim_is_checked_before_allocating() {
        // A raw snappy block whose header varint claims ~4 GiB.
        let lying = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x0f, 0x00]);
        let err =
            decompress(&mut lying.clone(), Compression::Snappy, MAX_DECOMPRESSED).unwrap_err();
        assert!(err.to_string().contains("more than"), "{err}");
    }

    #[test]
    fn snappy_xerial_and_raw() {
        let data = b"hello hello hello hello".repeat(50);
        let raw = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            &decompress(&mut Bytes::from(raw.clone()), Compression::Snappy, 1 << 20).unwrap()[..],
            &data[..]
        );
        let mut framed = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for chunk in [&raw[..], &raw[..]] {
            framed.extend_from_slice(&(chunk.len() as u32).to_be_bytes());
            framed.extend_from_slice(chunk);
        }
        let out = decompress(&mut Bytes::from(framed), Compression::Snappy, 1 << 20).unwrap();
        assert_eq!(out.len(), 2 * data.len());
    }
}
