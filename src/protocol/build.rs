//! Building RecordBatch v2 bytes to send: the console producer's batches,
//! and those that tests and benchmarks produce. kafka-protocol's encoder
//! starts a new batch wherever `offset - sequence` changes, so each record
//! here gets the sequence that keeps one batch: `index - 1` for a plain
//! record (a base sequence of -1: no idempotence), `base + index` for an
//! idempotent producer's; `lone_record` keeps -1 and so a batch per record.

use bytes::{Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};

/// The encoder refused the records.
#[derive(Debug, thiserror::Error)]
#[error("cannot encode the record batch: {0}")]
pub struct EncodeError(pub String);

/// A plain record at position `index` of its batch.
pub fn record(index: i64, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: index,
        sequence: (index as i32).wrapping_sub(1),
        timestamp,
        key,
        value,
        headers: Default::default(),
    }
}

/// A plain record that `encode` puts in a batch of its own: its sequence is
/// -1 whatever its `index`, so `offset - sequence` changes from one such
/// record to the next. A list of them encodes as one batch per record
/// (base offsets 0, 1, ...), as a client that does not batch sends them.
pub fn lone_record(index: i64, timestamp: i64, key: Option<Bytes>, value: Option<Bytes>) -> Record {
    let mut r = record(index, timestamp, key, value);
    r.sequence = -1;
    r
}

/// An idempotent producer's record at position `index` of a batch whose
/// first record has sequence `base_sequence`.
pub fn idempotent_record(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    index: i64,
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
) -> Record {
    Record {
        producer_id,
        producer_epoch,
        sequence: base_sequence.wrapping_add(index as i32),
        ..record(index, timestamp, key, value)
    }
}

/// Encodes `records` as one RecordBatch v2.
pub fn encode(records: &[Record], compression: Compression) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        records,
        &RecordEncodeOptions {
            version: 2,
            compression,
        },
    )
    .map_err(|e| EncodeError(format!("{e:#}")))?;
    Ok(buf.freeze())
}

/// A plain batch of `values` (no keys) with timestamps from `timestamp`.
pub fn values_batch(timestamp: i64, values: &[&[u8]]) -> Bytes {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            record(
                i as i64,
                timestamp + i as i64,
                None,
                Some(Bytes::copy_from_slice(v)),
            )
        })
        .collect();
    encode(&records, Compression::None).expect("plain records always encode")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::batch;

    #[test]
    fn plain_and_idempotent_records_make_one_batch_each() {
        let plain: Vec<Record> = (0..5)
            .map(|i| record(i, 100 + i, None, Some(Bytes::from("v"))))
            .collect();
        let b = encode(&plain, Compression::None).unwrap();
        let s = batch::validate_batches(&b, 1 << 20).unwrap();
        assert_eq!((s.batch_count, s.record_count), (1, 5));
        assert_eq!(s.first.producer_id, -1);
        assert_eq!(s.first.base_sequence, -1);

        let idem: Vec<Record> = (0..3)
            .map(|i| idempotent_record(7, 2, 40, i, 100, None, Some(Bytes::from("v"))))
            .collect();
        let b = encode(&idem, Compression::Zstd).unwrap();
        let s = batch::validate_batches(&b, 1 << 20).unwrap();
        assert_eq!((s.batch_count, s.record_count), (1, 3));
        assert_eq!(
            (
                s.first.producer_id,
                s.first.producer_epoch,
                s.first.base_sequence
            ),
            (7, 2, 40)
        );
        assert_eq!(s.last.last_offset_delta, 2);

        let lone: Vec<Record> = (0..3)
            .map(|i| lone_record(i, 100 + i, None, Some(Bytes::from("v"))))
            .collect();
        let s = batch::validate_batches(&encode(&lone, Compression::None).unwrap(), 1 << 20);
        let s = s.unwrap();
        let seqs = (s.first.base_sequence, s.last.base_sequence);
        assert_eq!((s.batch_count, s.record_count, seqs), (3, 3, (-1, -1)));
        assert_eq!(lone[0], record(0, 100, None, Some(Bytes::from("v"))));

        let b = values_batch(1, &[b"a", b"b"]);
        assert_eq!(
            batch::validate_batches(&b, 1 << 20).unwrap().record_count,
            2
        );
    }
}
