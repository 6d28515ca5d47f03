//! Request versions older than `kafka-protocol` decodes (Kafka 4 dropped
//! them, KIP-896), coded by hand so that old clients keep working: the
//! versions Kafka 3.9 still served, for the APIs Runnel has.
//!
//! Where an old request is a newer one with fields missing, its bytes are
//! completed and decoded as that version; otherwise it is read here into the
//! newer type. Handlers see the old version in `Request::version` and fill
//! in the newer response type; its old layout is written here.
//!
//! | API | old | decoded as | old response layout |
//! |---|---|---|---|
//! | Produce | 0-2 | 3 (null transactional id) | 0: no throttle; 0-1: no log append time |
//! | Fetch | 0-3 | 4 (max bytes, isolation level) | no LSO, aborted txns; 0: no throttle |
//! | ListOffsets | 0 | read here (`max_num_offsets` dropped) | an `offsets` array per partition |
//! | OffsetCommit | 0-1 | read here | v2's |
//! | OffsetFetch | 0 | 1 | v1's |
//! | CreateTopics | 0-1 | 2 (v0: validate_only false) | 0: no message; no throttle |
//! | DeleteTopics | 0 | 1 | no throttle |
//! | OffsetForLeaderEpoch | 0-1 | read here | 0: no epoch; no throttle |
//! | DescribeConfigs | 0 | 1 (no synonyms) | `is_default`, no synonyms |
//!
//! The records of Produce v0-2 and Fetch v0-3 are message sets, converted by
//! the handlers (`protocol::message_set`), not here.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    ApiKey, CreateTopicsRequest, DeleteTopicsRequest, DescribeConfigsRequest, FetchRequest,
    ListOffsetsRequest, OffsetCommitRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest,
    ProduceRequest, RequestKind, ResponseKind,
};
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};

/// Whether `version` of `api` is coded here.
pub fn is_hand_coded(api: ApiKey, version: i16) -> bool {
    let oldest_decoded = match api {
        ApiKey::Produce => 3,
        ApiKey::Fetch => 4,
        ApiKey::ListOffsets | ApiKey::OffsetFetch | ApiKey::DeleteTopics => 1,
        ApiKey::DescribeConfigs => 1,
        ApiKey::OffsetCommit | ApiKey::CreateTopics | ApiKey::OffsetForLeaderEpoch => 2,
        _ => 0,
    };
    (0..oldest_decoded).contains(&version)
}

/// Reads the plain (non-flexible) types of an old request, checking every
/// length and count against the bytes left before using it.
struct Reader<'a> {
    buf: &'a mut Bytes,
}

impl Reader<'_> {
    fn need(&self, n: usize, what: &str) -> anyhow::Result<()> {
        if self.buf.remaining() < n {
            anyhow::bail!("truncated at {what}: {} bytes left", self.buf.remaining());
        }
        Ok(())
    }

    fn i16(&mut self, what: &str) -> anyhow::Result<i16> {
        self.need(2, what)?;
        Ok(self.buf.get_i16())
    }

    fn i32(&mut self, what: &str) -> anyhow::Result<i32> {
        self.need(4, what)?;
        Ok(self.buf.get_i32())
    }

    fn i64(&mut self, what: &str) -> anyhow::Result<i64> {
        self.need(8, what)?;
        Ok(self.buf.get_i64())
    }

    fn nullable_string(&mut self, what: &str) -> anyhow::Result<Option<StrBytes>> {
        let len = self.i16(what)?;
        if len < 0 {
            return Ok(None);
        }
        self.need(len as usize, what)?;
        let raw = self.buf.split_to(len as usize);
        let s = StrBytes::from_utf8(raw).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
        Ok(Some(s))
    }

    fn string(&mut self, what: &str) -> anyhow::Result<StrBytes> {
        self.nullable_string(what)?
            .ok_or_else(|| anyhow::anyhow!("{what} is null"))
    }

    /// An array's count, each element taking at least `min_size` bytes.
    fn count(&mut self, min_size: usize, what: &str) -> anyhow::Result<usize> {
        let n = self.i32(what)?;
        let n = usize::try_from(n).map_err(|_| anyhow::anyhow!("{what}: count {n}"))?;
        if n.saturating_mul(min_size) > self.buf.remaining() {
            anyhow::bail!(
                "{what}: {n} entries cannot fit in {} bytes",
                self.buf.remaining()
            );
        }
        Ok(n)
    }
}

/// `body` with `insert` put in at byte `at`, decoded as `version` of `T`.
fn decode_completed<T: Decodable>(
    body: &mut Bytes,
    at: usize,
    insert: &[u8],
    version: i16,
) -> anyhow::Result<T> {
    if body.len() < at {
        anyhow::bail!("request of {} bytes is truncated", body.len());
    }
    let mut full = BytesMut::with_capacity(body.len() + insert.len());
    full.put_slice(&body[..at]);
    full.put_slice(insert);
    full.put_slice(&body[at..]);
    body.advance(body.len());
    T::decode(&mut full.freeze(), version)
}

/// Decodes the body of a hand-coded version; `None` for any other.
pub fn decode(api: ApiKey, version: i16, body: &mut Bytes) -> Option<anyhow::Result<RequestKind>> {
    if !is_hand_coded(api, version) {
        return None;
    }
    let end = body.len();
    Some(match api {
        // Before v3 there is no transactional id: a null one.
        ApiKey::Produce => {
            decode_completed::<ProduceRequest>(body, 0, &[0xff, 0xff], 3).map(RequestKind::Produce)
        }
        // replica_id, max_wait_ms, min_bytes, then v3's max_bytes (v0-2: no
        // limit, as Kafka reads them) and v4's isolation level.
        ApiKey::Fetch => {
            let mut insert = Vec::new();
            let at = if version < 3 {
                insert.extend_from_slice(&i32::MAX.to_be_bytes());
                12
            } else {
                16
            };
            insert.push(0);
            decode_completed::<FetchRequest>(body, at, &insert, 4).map(RequestKind::Fetch)
        }
        ApiKey::ListOffsets => list_offsets_v0(body).map(RequestKind::ListOffsets),
        ApiKey::OffsetCommit => offset_commit(body, version).map(RequestKind::OffsetCommit),
        // v0 read offsets from ZooKeeper, v1 from Kafka: the same layout.
        ApiKey::OffsetFetch => OffsetFetchRequest::decode(body, 1).map(RequestKind::OffsetFetch),
        // v0 has no validate_only, at the end; v1 is v2's request.
        ApiKey::CreateTopics => {
            let tail: &[u8] = if version == 0 { &[0] } else { &[] };
            decode_completed::<CreateTopicsRequest>(body, end, tail, 2)
                .map(RequestKind::CreateTopics)
        }
        ApiKey::DeleteTopics => DeleteTopicsRequest::decode(body, 1).map(RequestKind::DeleteTopics),
        ApiKey::OffsetForLeaderEpoch => {
            offset_for_leader_epoch(body).map(RequestKind::OffsetForLeaderEpoch)
        }
        // DescribeConfigs v0 is v1 without the trailing include_synonyms.
        ApiKey::DescribeConfigs => decode_completed::<DescribeConfigsRequest>(body, end, &[0], 1)
            .map(RequestKind::DescribeConfigs),
        _ => Err(anyhow::anyhow!("{api:?} v{version} is not coded here")),
    })
}

/// ListOffsets v0: replica_id, topics [name, partitions [partition,
/// timestamp, max_num_offsets]]. Runnel answers with at most one offset, so
/// `max_num_offsets` is read and dropped.
fn list_offsets_v0(body: &mut Bytes) -> anyhow::Result<ListOffsetsRequest> {
    let mut r = Reader { buf: body };
    let replica_id = r.i32("replica_id")?;
    let n = r.count(6, "topics")?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string("topic name")?;
        let m = r.count(16, "partitions")?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let partition_index = r.i32("partition")?;
            let timestamp = r.i64("timestamp")?;
            let _max_num_offsets = r.i32("max_num_offsets")?;
            partitions.push(
                ListOffsetsPartition::default()
                    .with_partition_index(partition_index)
                    .with_current_leader_epoch(-1)
                    .with_timestamp(timestamp),
            );
        }
        topics.push(
            ListOffsetsTopic::default()
                .with_name(name.into())
                .with_partitions(partitions),
        );
    }
    Ok(ListOffsetsRequest::default()
        .with_replica_id(replica_id.into())
        .with_topics(topics))
}

/// OffsetCommit v0: group_id, topics [name, partitions [index, offset,
/// metadata]]. v1 adds generation_id and member_id after the group, and a
/// commit_timestamp per partition (which Kafka 3.9 ignored as well: a commit
/// expires by the broker's retention).
fn offset_commit(body: &mut Bytes, version: i16) -> anyhow::Result<OffsetCommitRequest> {
    let mut r = Reader { buf: body };
    let group_id = r.string("group_id")?;
    let (generation, member_id) = if version >= 1 {
        (r.i32("generation_id")?, r.string("member_id")?)
    } else {
        // A v0 commit is a simple (standalone) one.
        (-1, StrBytes::default())
    };
    let n = r.count(6, "topics")?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string("topic name")?;
        let min = if version >= 1 { 22 } else { 14 };
        let m = r.count(min, "partitions")?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let index = r.i32("partition")?;
            let offset = r.i64("committed_offset")?;
            if version >= 1 {
                let _commit_timestamp = r.i64("commit_timestamp")?;
            }
            let metadata = r.nullable_string("committed_metadata")?;
            partitions.push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(index)
                    .with_committed_offset(offset)
                    .with_committed_leader_epoch(-1)
                    .with_committed_metadata(metadata),
            );
        }
        topics.push(
            OffsetCommitRequestTopic::default()
                .with_name(name.into())
                .with_partitions(partitions),
        );
    }
    Ok(OffsetCommitRequest::default()
        .with_group_id(group_id.into())
        .with_generation_id_or_member_epoch(generation)
        .with_member_id(member_id)
        .with_retention_time_ms(-1)
        .with_topics(topics))
}

/// OffsetForLeaderEpoch v0-1: topics [name, partitions [partition,
/// leader_epoch]]; v2 added current_leader_epoch (unknown here: -1) and v3
/// the replica id (before v3 only followers sent it; -2 is Kafka's
/// "debugging" id, which a leader serves like a consumer's -1).
fn offset_for_leader_epoch(body: &mut Bytes) -> anyhow::Result<OffsetForLeaderEpochRequest> {
    let mut r = Reader { buf: body };
    let n = r.count(6, "topics")?;
    let mut topics = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string("topic name")?;
        let m = r.count(8, "partitions")?;
        let mut partitions = Vec::with_capacity(m);
        for _ in 0..m {
            let partition = r.i32("partition")?;
            let leader_epoch = r.i32("leader_epoch")?;
            partitions.push(
                OffsetForLeaderPartition::default()
                    .with_partition(partition)
                    .with_current_leader_epoch(-1)
                    .with_leader_epoch(leader_epoch),
            );
        }
        topics.push(
            OffsetForLeaderTopic::default()
                .with_topic(name.into())
                .with_partitions(partitions),
        );
    }
    Ok(OffsetForLeaderEpochRequest::default()
        .with_replica_id((-2).into())
        .with_topics(topics))
}

fn put_string(buf: &mut BytesMut, s: &str) -> anyhow::Result<()> {
    let len = i16::try_from(s.len()).map_err(|_| anyhow::anyhow!("string too long"))?;
    buf.put_i16(len);
    buf.put_slice(s.as_bytes());
    Ok(())
}

fn put_nullable(buf: &mut BytesMut, s: Option<&str>) -> anyhow::Result<()> {
    match s {
        Some(s) => put_string(buf, s),
        None => {
            buf.put_i16(-1);
            Ok(())
        }
    }
}

fn put_count(buf: &mut BytesMut, n: usize) -> anyhow::Result<()> {
    buf.put_i32(i32::try_from(n).map_err(|_| anyhow::anyhow!("array of {n} entries"))?);
    Ok(())
}

/// Encodes the body of a hand-coded version; `None` for any other.
pub fn encode(
    api: ApiKey,
    version: i16,
    body: &ResponseKind,
    buf: &mut BytesMut,
) -> Option<anyhow::Result<()>> {
    if !is_hand_coded(api, version) {
        return None;
    }
    Some(encode_old(version, body, buf))
}

fn encode_old(version: i16, body: &ResponseKind, buf: &mut BytesMut) -> anyhow::Result<()> {
    match body {
        ResponseKind::Produce(r) => {
            put_count(buf, r.responses.len())?;
            for t in &r.responses {
                put_string(buf, &t.name)?;
                put_count(buf, t.partition_responses.len())?;
                for p in &t.partition_responses {
                    buf.put_i32(p.index);
                    buf.put_i16(p.error_code);
                    buf.put_i64(p.base_offset);
                    if version >= 2 {
                        buf.put_i64(p.log_append_time_ms);
                    }
                }
            }
            if version >= 1 {
                buf.put_i32(r.throttle_time_ms);
            }
        }
        ResponseKind::Fetch(r) => {
            if version >= 1 {
                buf.put_i32(r.throttle_time_ms);
            }
            put_count(buf, r.responses.len())?;
            for t in &r.responses {
                put_string(buf, &t.topic)?;
                put_count(buf, t.partitions.len())?;
                for p in &t.partitions {
                    buf.put_i32(p.partition_index);
                    buf.put_i16(p.error_code);
                    buf.put_i64(p.high_watermark);
                    let records = p.records.as_deref().unwrap_or_default();
                    put_count(buf, records.len())?;
                    buf.put_slice(records);
                }
            }
        }
        ResponseKind::ListOffsets(r) => {
            put_count(buf, r.topics.len())?;
            for t in &r.topics {
                put_string(buf, &t.name)?;
                put_count(buf, t.partitions.len())?;
                for p in &t.partitions {
                    buf.put_i32(p.partition_index);
                    buf.put_i16(p.error_code);
                    // v0's `offsets`: the one offset found, or none.
                    if p.error_code == 0 && p.offset >= 0 {
                        buf.put_i32(1);
                        buf.put_i64(p.offset);
                    } else {
                        buf.put_i32(0);
                    }
                }
            }
        }
        ResponseKind::OffsetCommit(r) => r.encode(buf, 2)?,
        ResponseKind::OffsetFetch(r) => r.encode(buf, 1)?,
        ResponseKind::CreateTopics(r) => {
            put_count(buf, r.topics.len())?;
            for t in &r.topics {
                put_string(buf, &t.name)?;
                buf.put_i16(t.error_code);
                if version >= 1 {
                    put_nullable(buf, t.error_message.as_deref())?;
                }
            }
        }
        ResponseKind::DeleteTopics(r) => {
            put_count(buf, r.responses.len())?;
            for t in &r.responses {
                put_nullable(buf, t.name.as_ref().map(|n| n.as_str()))?;
                buf.put_i16(t.error_code);
            }
        }
        ResponseKind::OffsetForLeaderEpoch(r) => {
            put_count(buf, r.topics.len())?;
            for t in &r.topics {
                put_string(buf, &t.topic)?;
                put_count(buf, t.partitions.len())?;
                for p in &t.partitions {
                    buf.put_i16(p.error_code);
                    buf.put_i32(p.partition);
                    if version >= 1 {
                        buf.put_i32(p.leader_epoch);
                    }
                    buf.put_i64(p.end_offset);
                }
            }
        }
        ResponseKind::DescribeConfigs(r) => {
            buf.put_i32(r.throttle_time_ms);
            put_count(buf, r.results.len())?;
            for res in &r.results {
                buf.put_i16(res.error_code);
                put_nullable(buf, res.error_message.as_deref().filter(|m| !m.is_empty()))?;
                buf.put_i8(res.resource_type);
                put_string(buf, &res.resource_name)?;
                put_count(buf, res.configs.len())?;
                for c in &res.configs {
                    put_string(buf, &c.name)?;
                    put_nullable(buf, c.value.as_deref())?;
                    buf.put_i8(i8::from(c.read_only));
                    // DEFAULT_CONFIG (5) is v0's is_default.
                    buf.put_i8(i8::from(c.config_source == 5));
                    buf.put_i8(i8::from(c.is_sensitive));
                }
            }
        }
        _ => anyhow::bail!("no old layout for this response"),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::describe_configs_response::{
        DescribeConfigsResourceResult, DescribeConfigsResult,
    };
    use kafka_protocol::messages::DescribeConfigsResponse;
    use kafka_protocol::protocol::StrBytes;

    /// A byte-level builder for old request bodies, as the old clients
    /// write them.
    #[derive(Default)]
    struct W(BytesMut);

    impl W {
        fn i16(mut self, v: i16) -> Self {
            self.0.put_i16(v);
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.put_i32(v);
            self
        }
        fn i64(mut self, v: i64) -> Self {
            self.0.put_i64(v);
            self
        }
        fn s(mut self, v: &str) -> Self {
            self.0.put_i16(v.len() as i16);
            self.0.put_slice(v.as_bytes());
            self
        }
        fn bytes(mut self, v: &[u8]) -> Self {
            self.0.put_i32(v.len() as i32);
            self.0.put_slice(v);
            self
        }
        fn done(self) -> Bytes {
            self.0.freeze()
        }
    }

    fn decoded(api: ApiKey, version: i16, mut body: Bytes) -> RequestKind {
        let r = decode(api, version, &mut body)
            .unwrap_or_else(|| panic!("{api:?} v{version} not hand-coded"))
            .unwrap_or_else(|e| panic!("{api:?} v{version}: {e:#}"));
        assert!(body.is_empty(), "{api:?} v{version} left bytes");
        r
    }

    fn encoded(api: ApiKey, version: i16, body: ResponseKind) -> Vec<u8> {
        let mut buf = BytesMut::new();
        encode(api, version, &body, &mut buf).unwrap().unwrap();
        buf.to_vec()
    }

    #[test]
    fn produce_v0_to_v2_requests_and_responses() {
        use kafka_protocol::messages::produce_response::{
            PartitionProduceResponse, TopicProduceResponse,
        };
        use kafka_protocol::messages::ProduceResponse;
        let set = crate::protocol::message_set::encode(
            0,
            kafka_protocol::records::Compression::Gzip,
            &[(0, Some(b"k"), Some(b"v"))],
        )
        .unwrap();
        for v in 0..=2 {
            let body = W::default()
                .i16(-1)
                .i32(1500)
                .i32(1)
                .s("t")
                .i32(1)
                .i32(0)
                .bytes(&set)
                .done();
            let RequestKind::Produce(p) = decoded(ApiKey::Produce, v, body) else {
                panic!()
            };
            assert_eq!((p.acks, p.timeout_ms, p.transactional_id), (-1, 1500, None));
            assert_eq!(p.topic_data[0].name.as_str(), "t");
            assert_eq!(
                p.topic_data[0].partition_data[0].records.as_deref(),
                Some(&set[..])
            );

            let resp = ResponseKind::Produce(
                ProduceResponse::default()
                    .with_throttle_time_ms(7)
                    .with_responses(vec![TopicProduceResponse::default()
                        .with_name(StrBytes::from_static_str("t").into())
                        .with_partition_responses(vec![PartitionProduceResponse::default()
                            .with_index(0)
                            .with_base_offset(42)
                            .with_log_append_time_ms(99)])]),
            );
            let mut want = W::default().i32(1).s("t").i32(1).i32(0).i16(0).i64(42);
            if v >= 2 {
                want = want.i64(99);
            }
            if v >= 1 {
                want = want.i32(7);
            }
            assert_eq!(
                encoded(ApiKey::Produce, v, resp),
                want.done().to_vec(),
                "v{v}"
            );
        }
    }

    #[test]
    fn fetch_v0_to_v3_requests_and_responses() {
        use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
        use kafka_protocol::messages::FetchResponse;
        for v in 0..=3 {
            let mut w = W::default().i32(-1).i32(500).i32(1);
            if v == 3 {
                w = w.i32(1 << 20);
            }
            let body = w.i32(1).s("t").i32(1).i32(2).i64(10).i32(4096).done();
            let RequestKind::Fetch(f) = decoded(ApiKey::Fetch, v, body) else {
                panic!()
            };
            assert_eq!((f.replica_id.0, f.max_wait_ms, f.min_bytes), (-1, 500, 1));
            let max = if v == 3 { 1 << 20 } else { i32::MAX };
            assert_eq!((f.max_bytes, f.isolation_level), (max, 0));
            let p = &f.topics[0].partitions[0];
            assert_eq!(
                (p.partition, p.fetch_offset, p.partition_max_bytes),
                (2, 10, 4096)
            );

            let resp = ResponseKind::Fetch(
                FetchResponse::default()
                    .with_throttle_time_ms(3)
                    .with_responses(vec![FetchableTopicResponse::default()
                        .with_topic(StrBytes::from_static_str("t").into())
                        .with_partitions(vec![PartitionData::default()
                            .with_partition_index(2)
                            .with_high_watermark(11)
                            .with_records(Some(Bytes::from_static(b"abc")))])]),
            );
            let mut want = W::default();
            if v >= 1 {
                want = want.i32(3);
            }
            let want = want
                .i32(1)
                .s("t")
                .i32(1)
                .i32(2)
                .i16(0)
                .i64(11)
                .bytes(b"abc");
            assert_eq!(
                encoded(ApiKey::Fetch, v, resp),
                want.done().to_vec(),
                "v{v}"
            );
        }
    }

    #[test]
    fn list_offsets_v0_has_an_offsets_array() {
        use kafka_protocol::messages::list_offsets_response::{
            ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
        };
        use kafka_protocol::messages::ListOffsetsResponse;
        let body = W::default()
            .i32(-1)
            .i32(1)
            .s("t")
            .i32(2)
            .i32(0)
            .i64(-1)
            .i32(1)
            .i32(1)
            .i64(-2)
            .i32(10)
            .done();
        let RequestKind::ListOffsets(l) = decoded(ApiKey::ListOffsets, 0, body) else {
            panic!()
        };
        let ts: Vec<_> = l.topics[0].partitions.iter().map(|p| p.timestamp).collect();
        assert_eq!(ts, [-1, -2]);
        let resp = ResponseKind::ListOffsets(ListOffsetsResponse::default().with_topics(vec![
            ListOffsetsTopicResponse::default()
                .with_name(StrBytes::from_static_str("t").into())
                .with_partitions(vec![
                    ListOffsetsPartitionResponse::default().with_offset(5),
                    ListOffsetsPartitionResponse::default()
                        .with_partition_index(1)
                        .with_error_code(3)
                        .with_offset(-1),
                ]),
        ]));
        let want = W::default()
            .i32(1)
            .s("t")
            .i32(2)
            .i32(0)
            .i16(0)
            .i32(1)
            .i64(5)
            .i32(1)
            .i16(3)
            .i32(0)
            .done();
        assert_eq!(encoded(ApiKey::ListOffsets, 0, resp), want.to_vec());
        // A hostile count is an error, not an allocation.
        let mut bad = W::default().i32(-1).i32(i32::MAX).done();
        assert!(decode(ApiKey::ListOffsets, 0, &mut bad).unwrap().is_err());
    }

    #[test]
    fn offset_commit_v0_and_v1_read_into_the_current_request() {
        let v0 = W::default()
            .s("g")
            .i32(1)
            .s("t")
            .i32(1)
            .i32(0)
            .i64(17)
            .s("meta")
            .done();
        let RequestKind::OffsetCommit(c) = decoded(ApiKey::OffsetCommit, 0, v0) else {
            panic!()
        };
        assert_eq!(c.group_id.as_str(), "g");
        assert_eq!(
            (c.generation_id_or_member_epoch, c.member_id.as_str()),
            (-1, "")
        );
        let p = &c.topics[0].partitions[0];
        assert_eq!(
            (p.committed_offset, p.committed_metadata.as_deref()),
            (17, Some("meta"))
        );

        let v1 = W::default()
            .s("g")
            .i32(4)
            .s("m-1")
            .i32(1)
            .s("t")
            .i32(1)
            .i32(0)
            .i64(18)
            .i64(123_456)
            .i16(-1)
            .done();
        let RequestKind::OffsetCommit(c) = decoded(ApiKey::OffsetCommit, 1, v1) else {
            panic!()
        };
        assert_eq!(
            (c.generation_id_or_member_epoch, c.member_id.as_str()),
            (4, "m-1")
        );
        let p = &c.topics[0].partitions[0];
        assert_eq!(
            (p.committed_offset, p.committed_metadata.as_deref()),
            (18, None)
        );
    }

    #[test]
    fn create_delete_topics_and_offset_for_leader_epoch_old_layouts() {
        use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
        use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
        use kafka_protocol::messages::offset_for_leader_epoch_response::{
            EpochEndOffset, OffsetForLeaderTopicResult,
        };
        use kafka_protocol::messages::{
            CreateTopicsResponse, DeleteTopicsResponse, OffsetForLeaderEpochResponse,
        };
        // CreateTopics v0: topics [name, partitions, rf, assignments, configs], timeout.
        let v0 = W::default()
            .i32(1)
            .s("t")
            .i32(3)
            .i16(1)
            .i32(0)
            .i32(1)
            .s("retention.ms")
            .s("1000")
            .i32(5000)
            .done();
        let RequestKind::CreateTopics(c) = decoded(ApiKey::CreateTopics, 0, v0.clone()) else {
            panic!()
        };
        assert_eq!(
            (c.topics[0].num_partitions, c.timeout_ms, c.validate_only),
            (3, 5000, false)
        );
        let mut v1 = BytesMut::from(&v0[..]);
        v1.put_i8(1);
        let RequestKind::CreateTopics(c) = decoded(ApiKey::CreateTopics, 1, v1.freeze()) else {
            panic!()
        };
        assert!(c.validate_only);
        let resp = || {
            ResponseKind::CreateTopics(CreateTopicsResponse::default().with_topics(vec![
                CreatableTopicResult::default()
                    .with_name(StrBytes::from_static_str("t").into())
                    .with_error_code(36)
                    .with_error_message(Some(StrBytes::from_static_str("exists"))),
            ]))
        };
        let v0_resp = W::default().i32(1).s("t").i16(36).done();
        assert_eq!(encoded(ApiKey::CreateTopics, 0, resp()), v0_resp.to_vec());
        let v1_resp = W::default().i32(1).s("t").i16(36).s("exists").done();
        assert_eq!(encoded(ApiKey::CreateTopics, 1, resp()), v1_resp.to_vec());

        let RequestKind::DeleteTopics(d) = decoded(
            ApiKey::DeleteTopics,
            0,
            W::default().i32(1).s("t").i32(100).done(),
        ) else {
            panic!()
        };
        assert_eq!((d.topic_names[0].as_str(), d.timeout_ms), ("t", 100));
        let resp = ResponseKind::DeleteTopics(DeleteTopicsResponse::default().with_responses(
            vec![DeletableTopicResult::default()
                .with_name(Some(StrBytes::from_static_str("t").into()))
                .with_error_code(3)],
        ));
        let want = W::default().i32(1).s("t").i16(3).done();
        assert_eq!(encoded(ApiKey::DeleteTopics, 0, resp), want.to_vec());

        let body = W::default().i32(1).s("t").i32(1).i32(0).i32(2).done();
        let RequestKind::OffsetForLeaderEpoch(o) = decoded(ApiKey::OffsetForLeaderEpoch, 1, body)
        else {
            panic!()
        };
        let p = &o.topics[0].partitions[0];
        assert_eq!(
            (p.partition, p.current_leader_epoch, p.leader_epoch),
            (0, -1, 2)
        );
        let resp = || {
            ResponseKind::OffsetForLeaderEpoch(OffsetForLeaderEpochResponse::default().with_topics(
                vec![OffsetForLeaderTopicResult::default()
                    .with_topic(StrBytes::from_static_str("t").into())
                    .with_partitions(vec![EpochEndOffset::default()
                        .with_leader_epoch(2)
                        .with_end_offset(50)])],
            ))
        };
        let v0 = W::default()
            .i32(1)
            .s("t")
            .i32(1)
            .i16(0)
            .i32(0)
            .i64(50)
            .done();
        assert_eq!(
            encoded(ApiKey::OffsetForLeaderEpoch, 0, resp()),
            v0.to_vec()
        );
        let v1 = W::default()
            .i32(1)
            .s("t")
            .i32(1)
            .i16(0)
            .i32(0)
            .i32(2)
            .i64(50)
            .done();
        assert_eq!(
            encoded(ApiKey::OffsetForLeaderEpoch, 1, resp()),
            v1.to_vec()
        );
    }

    #[test]
    fn truncated_old_requests_are_errors() {
        for (api, v) in [
            (ApiKey::Produce, 0),
            (ApiKey::Fetch, 0),
            (ApiKey::Fetch, 3),
            (ApiKey::ListOffsets, 0),
            (ApiKey::OffsetCommit, 0),
            (ApiKey::OffsetCommit, 1),
            (ApiKey::OffsetFetch, 0),
            (ApiKey::CreateTopics, 0),
            (ApiKey::DeleteTopics, 0),
            (ApiKey::OffsetForLeaderEpoch, 0),
        ] {
            let mut body = Bytes::from_static(&[0, 0, 0, 1, 0]);
            let r = decode(api, v, &mut body).expect("hand-coded");
            assert!(r.is_err(), "{api:?} v{v} decoded a truncated body");
        }
    }

    #[test]
    fn describe_configs_v0_round_trips_in_its_own_layout() {
        // resources: [ (2, "t", null) ]
        let mut req = BytesMut::new();
        req.put_i32(1);
        req.put_i8(2);
        req.put_i16(1);
        req.put_slice(b"t");
        req.put_i32(-1);
        let mut req = req.freeze();
        let Some(Ok(RequestKind::DescribeConfigs(d))) =
            decode(ApiKey::DescribeConfigs, 0, &mut req)
        else {
            panic!("v0 request did not decode");
        };
        assert_eq!(d.resources.len(), 1);
        assert_eq!(d.resources[0].resource_name.as_str(), "t");
        assert!(!d.include_synonyms && d.resources[0].configuration_keys.is_none());

        let resp =
            ResponseKind::DescribeConfigs(DescribeConfigsResponse::default().with_results(vec![
            DescribeConfigsResult::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("t"))
                .with_configs(vec![DescribeConfigsResourceResult::default()
                    .with_name(StrBytes::from_static_str("retention.ms"))
                    .with_value(Some(StrBytes::from_static_str("1000")))
                    .with_config_source(1)]),
        ]));
        let mut buf = BytesMut::new();
        encode(ApiKey::DescribeConfigs, 0, &resp, &mut buf)
            .unwrap()
            .unwrap();
        let mut b = buf.freeze();
        assert_eq!(b.get_i32(), 0); // throttle
        assert_eq!(b.get_i32(), 1); // results
        assert_eq!(b.get_i16(), 0); // error
        assert_eq!(b.get_i16(), -1); // no message
        assert_eq!(b.get_i8(), 2);
        assert_eq!(b.get_i16(), 1);
        b.advance(1);
        assert_eq!(b.get_i32(), 1); // configs
        assert_eq!(b.get_i16(), 12);
        b.advance(12);
        assert_eq!(b.get_i16(), 4);
        b.advance(4);
        assert_eq!((b.get_i8(), b.get_i8(), b.get_i8()), (0, 0, 0)); // read-only, default, sensitive
        assert!(b.is_empty());
        assert!(decode(ApiKey::DescribeConfigs, 1, &mut Bytes::new()).is_none());
    }
}
