//! Kafka's default partitioner hash: the 32-bit murmur2 variant of the Java
//! client's `Utils.murmur2`, so that a keyed record lands on the partition a
//! Java (or librdkafka `murmur2_random`) producer would pick.

/// `Utils.murmur2` from the Java client, bit for bit (including its seed and
/// its little-endian reading of each 4-byte block).
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java computes with wrapping `int` arithmetic; u32 wrapping ops give the
    // same bits, and `>>>` is a logical shift on u32.
    let mut h: u32 = SEED ^ (data.len() as u32);
    let mut blocks = data.chunks_exact(4);
    for block in &mut blocks {
        let mut k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = blocks.remainder();
    if tail.len() >= 3 {
        h ^= u32::from(tail[2]) << 16;
    }
    if tail.len() >= 2 {
        h ^= u32::from(tail[1]) << 8;
    }
    if !tail.is_empty() {
        h ^= u32::from(tail[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition Kafka's default partitioner picks for a keyed record:
/// `toPositive(murmur2(key)) % numPartitions`.
pub fn partition_for_key(key: &[u8], num_partitions: i32) -> i32 {
    debug_assert!(num_partitions > 0);
    (murmur2(key) & 0x7fff_ffff) % num_partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cases of Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn matches_kafka_utils_test() {
        let cases: &[(&[u8], i32)] = &[
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (input, expected) in cases {
            assert_eq!(
                murmur2(input),
                *expected,
                "{}",
                String::from_utf8_lossy(input)
            );
        }
    }

    /// Values published alongside other Kafka-compatible clients (taken
    /// from the Java implementation), covering every tail length.
    #[test]
    fn matches_java_for_all_tail_lengths() {
        let cases: &[(&[u8], i32)] = &[
            (b"1", -1_993_445_489),
            (b"12", 126_087_238),
            (b"123", -267_702_483),
            (b"1234", -1_614_185_708),
            (b"12345", -1_188_365_604),
        ];
        for (input, expected) in cases {
            assert_eq!(murmur2(input), *expected);
        }
    }

    #[test]
    fn partition_is_non_negative_and_in_range() {
        // murmur2("21") is negative: toPositive must mask, not negate.
        let p = partition_for_key(b"21", 7);
        assert_eq!(p, (-973_932_308i32 & 0x7fff_ffff) % 7);
        for key in [&b"a"[..], b"foobar", b"", b"\xff\xfe"] {
            let p = partition_for_key(key, 3);
            assert!((0..3).contains(&p));
        }
    }
}
