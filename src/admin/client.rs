//! A Kafka client over a bootstrap list: learns brokers and partition leaders
//! from Metadata, keeps one connection per broker, and sends each partition's
//! request to its leader. Partitions that fail with a "leader moved / topic
//! not ready" error are retried a few times after a metadata refresh.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bytes::Bytes;
use futures::future::join_all;
use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::delete_topics_request::DeleteTopicState;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, FetchRequest, FetchResponse,
    ListOffsetsRequest, MetadataRequest, MetadataResponse, ProduceRequest, TopicName,
};
use kafka_protocol::protocol::{Message, Request, StrBytes};
use kafka_protocol::records::{Compression, Record};
use uuid::Uuid;

use super::conn::{ConnOptions, Connection};
use super::{Error, Result};
use crate::protocol::build::encode;

/// NOT_CONTROLLER: an admin request reached a node that is not (or no
/// longer) the controller.
const NOT_CONTROLLER: i16 = 41;
/// NOT_ENOUGH_REPLICAS: retriable for produce, the ISR may grow back.
const NOT_ENOUGH_REPLICAS: i16 = 19;
/// LEADER_NOT_AVAILABLE, used for partitions whose leader is unknown.
const LEADER_NOT_AVAILABLE: i16 = 5;

/// How to reach the cluster and how hard to try.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// host:port entries, tried in order.
    pub bootstrap: Vec<String>,
    pub conn: ConnOptions,
    /// Rounds of metadata refresh + retry for partitions whose leader moved.
    pub retries: u32,
    pub retry_backoff: Duration,
}

impl ClientConfig {
    /// Parses Kafka's `--bootstrap-server` syntax: comma-separated host:port.
    pub fn from_bootstrap(servers: &str) -> Result<Self> {
        let bootstrap = parse_bootstrap(servers)?;
        Ok(ClientConfig {
            bootstrap,
            conn: ConnOptions::default(),
            retries: 5,
            retry_backoff: Duration::from_millis(100),
        })
    }
}

/// Splits and validates a comma-separated bootstrap list.
pub fn parse_bootstrap(servers: &str) -> Result<Vec<String>> {
    let list: Vec<String> = servers
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    if list.is_empty() {
        return Err(Error::InvalidAddress(servers.to_owned()));
    }
    for entry in &list {
        let valid = entry
            .rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(Error::InvalidAddress(entry.clone()));
        }
    }
    Ok(list)
}

/// A broker as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerInfo {
    pub id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// host:port, with IPv6 literals bracketed so the result parses back.
    pub fn addr(&self) -> String {
        if self.host.contains(':') && !self.host.starts_with('[') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// One partition as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PartitionInfo {
    pub partition: i32,
    /// None when the partition has no leader (-1 on the wire).
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub error_code: i16,
}

/// One topic as Metadata describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub id: Uuid,
    pub is_internal: bool,
    pub error_code: i16,
    /// Sorted by partition id.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    pub fn partition(&self, id: i32) -> Option<&PartitionInfo> {
        self.partitions.iter().find(|p| p.partition == id)
    }
}

/// A topic to create.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    /// -1 lets the broker apply `num.partitions`.
    pub partitions: i32,
    /// -1 lets the broker apply `default.replication.factor`.
    pub replication_factor: i16,
    pub configs: Vec<(String, String)>,
}

pub use crate::protocol::offset_spec::OffsetSpec;

/// What ListOffsets found for one partition; `offset` is None when no
/// record matches (Kafka's -1 "unknown offset").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListedOffset {
    pub offset: Option<i64>,
    pub timestamp: i64,
}

/// One partition's slice of a fetch response.
#[derive(Clone, Debug)]
pub struct FetchedPartition {
    pub partition: i32,
    pub error_code: i16,
    pub high_watermark: i64,
    pub log_start_offset: i64,
    pub records: Option<Bytes>,
}

/// Per-partition fetch parameters.
#[derive(Clone, Copy, Debug)]
pub struct FetchLimits {
    pub max_wait_ms: i32,
    pub min_bytes: i32,
    pub max_bytes: i32,
    pub partition_max_bytes: i32,
}

impl Default for FetchLimits {
    fn default() -> Self {
        // Kafka consumer defaults: fetch.max.wait.ms, fetch.min.bytes,
        // fetch.max.bytes, max.partition.fetch.bytes.
        FetchLimits {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
        }
    }
}

/// The client. Not `Sync`-shared: the CLI drives one at a time.
#[derive(Debug)]
pub struct Client {
    config: ClientConfig,
    brokers: BTreeMap<i32, BrokerInfo>,
    controller_id: Option<i32>,
    cluster_id: Option<String>,
    /// Keyed by host:port so bootstrap and broker connections share.
    conns: HashMap<String, Connection>,
    topics: HashMap<String, TopicInfo>,
}

impl Client {
    /// Connects to the first reachable bootstrap server and loads the broker
    /// list.
    pub async fn connect(config: ClientConfig) -> Result<Self> {
        let mut client = Client {
            config,
            brokers: BTreeMap::new(),
            controller_id: None,
            cluster_id: None,
            conns: HashMap::new(),
            topics: HashMap::new(),
        };
        client.metadata(Some(&[]), false).await?;
        Ok(client)
    }

    /// The cluster id of the last Metadata response.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// DescribeQuorum from the active controller. Only the quorum leader
    /// knows its followers' progress, so a NOT_LEADER_OR_FOLLOWER answer
    /// (the leader moved) refreshes Metadata and asks again.
    pub async fn describe_quorum(
        &mut self,
    ) -> Result<kafka_protocol::messages::describe_quorum_response::PartitionData> {
        use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
        use kafka_protocol::messages::DescribeQuorumRequest;
        let req = DescribeQuorumRequest::default().with_topics(vec![TopicData::default()
            .with_topic_name(TopicName::from(StrBytes::from_static_str(
                "__cluster_metadata",
            )))
            .with_partitions(vec![PartitionData::default()])]);
        let mut last = None;
        for attempt in 0..5 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                self.metadata(Some(&[]), false).await?;
            }
            let resp = self.send_controller(&req).await?;
            if resp.error_code != 0 {
                return Err(Error::Kafka {
                    code: resp.error_code,
                    message: resp.error_message.map(|m| m.to_string()),
                });
            }
            let part = resp
                .topics
                .into_iter()
                .flat_map(|t| t.partitions)
                .next()
                .ok_or_else(|| Error::Metadata("DescribeQuorum answered no partition".into()))?;
            if part.error_code == 0 {
                return Ok(part);
            }
            last = Some(Error::Kafka {
                code: part.error_code,
                message: part.error_message.map(|m| m.to_string()),
            });
        }
        Err(last.unwrap_or_else(|| Error::Metadata("no quorum leader".into())))
    }

    /// The brokers of the last Metadata response, by id.
    pub fn brokers(&self) -> &BTreeMap<i32, BrokerInfo> {
        &self.brokers
    }

    /// The cached description of `topic`, if Metadata returned it.
    pub fn topic(&self, topic: &str) -> Option<&TopicInfo> {
        self.topics.get(topic)
    }

    /// A connection to broker `id`, opened (and negotiated) if needed.
    pub async fn broker_connection(&mut self, id: i32) -> Result<&mut Connection> {
        let addr = self
            .brokers
            .get(&id)
            .map(BrokerInfo::addr)
            .ok_or(Error::UnknownBroker(id))?;
        self.conn_to(&addr).await
    }

    async fn conn_to(&mut self, addr: &str) -> Result<&mut Connection> {
        let usable = self.conns.get(addr).is_some_and(Connection::is_usable);
        if !usable {
            let conn = Connection::connect(addr, &self.config.conn).await?;
            self.conns.insert(addr.to_owned(), conn);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| Error::NoBrokerReachable(addr.to_owned()))
    }

    /// The address of some reachable node: an open connection if there is
    /// one, else the known brokers, else the bootstrap list.
    async fn any_addr(&mut self) -> Result<String> {
        if let Some(addr) = self
            .conns
            .iter()
            .find(|(_, c)| c.is_usable())
            .map(|(a, _)| a.clone())
        {
            return Ok(addr);
        }
        let mut candidates: Vec<String> = self.brokers.values().map(BrokerInfo::addr).collect();
        candidates.extend(self.config.bootstrap.iter().cloned());
        let mut last_error = None;
        for addr in candidates {
            match self.conn_to(&addr).await {
                Ok(_) => return Ok(addr),
                Err(e) => {
                    tracing::debug!(%addr, error = %e, "node unreachable");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| Error::NoBrokerReachable(self.config.bootstrap.join(","))))
    }

    /// Sends `req` to any node, moving on to the next one on transport
    /// errors.
    pub(crate) async fn send_any<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        let mut last = None;
        for _ in 0..=self.config.retries {
            let addr = self.any_addr().await?;
            let conn = self.conn_to(&addr).await?;
            match conn.send(req).await {
                Ok(r) => return Ok(r),
                Err(e) if e.needs_metadata_refresh() => {
                    tracing::debug!(%addr, error = %e, "request failed, trying another node");
                    self.conns.remove(&addr);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::NoBrokerReachable(self.config.bootstrap.join(","))))
    }

    /// Sends an admin request to the controller (brokers forward in KRaft,
    /// but the controller id is where Kafka's admin client goes first).
    async fn send_controller<R: Request>(&mut self, req: &R) -> Result<R::Response> {
        if let Some(id) = self
            .controller_id
            .filter(|id| self.brokers.contains_key(id))
        {
            match self.broker_connection(id).await {
                Ok(conn) => match conn.send(req).await {
                    Ok(r) => return Ok(r),
                    Err(e) if e.needs_metadata_refresh() => {
                        tracing::debug!(controller = id, error = %e, "controller unreachable");
                    }
                    Err(e) => return Err(e),
                },
                Err(e) => tracing::debug!(controller = id, error = %e, "controller unreachable"),
            }
        }
        self.send_any(req).await
    }

    /// Sends Metadata for `topics` (None = all topics) and refreshes the
    /// broker list and the topic cache from the answer.
    pub async fn metadata(
        &mut self,
        topics: Option<&[String]>,
        allow_auto_create: bool,
    ) -> Result<Vec<TopicInfo>> {
        let req = MetadataRequest::default()
            .with_topics(topics.map(|names| {
                names
                    .iter()
                    .map(|n| {
                        MetadataRequestTopic::default()
                            .with_name(Some(TopicName::from(StrBytes::from_string(n.clone()))))
                    })
                    .collect()
            }))
            .with_allow_auto_topic_creation(allow_auto_create);
        let response = self.send_any(&req).await?;
        let infos = self.apply_metadata(response, topics.is_none());
        Ok(infos)
    }

    fn apply_metadata(&mut self, response: MetadataResponse, all_topics: bool) -> Vec<TopicInfo> {
        let brokers: BTreeMap<i32, BrokerInfo> = response
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerInfo {
                        id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        // An empty broker list would strand us; keep the old one then.
        if !brokers.is_empty() {
            self.brokers = brokers;
        }
        self.controller_id = Some(response.controller_id.0).filter(|id| *id >= 0);
        self.cluster_id = response.cluster_id.as_ref().map(|c| c.to_string());
        if all_topics {
            self.topics.clear();
        }
        let mut infos = Vec::with_capacity(response.topics.len());
        for t in response.topics {
            let name = t.name.as_ref().map(|n| n.to_string()).unwrap_or_default();
            let mut partitions: Vec<PartitionInfo> = t
                .partitions
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.partition_index,
                    leader: Some(p.leader_id.0).filter(|l| *l >= 0),
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|r| r.0).collect(),
                    isr: p.isr_nodes.iter().map(|r| r.0).collect(),
                    error_code: p.error_code,
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            let info = TopicInfo {
                name: name.clone(),
                id: t.topic_id,
                is_internal: t.is_internal,
                error_code: t.error_code,
                partitions,
            };
            if info.error_code == 0 {
                self.topics.insert(name, info.clone());
            } else {
                self.topics.remove(&name);
            }
            infos.push(info);
        }
        infos
    }

    /// The cached topic, refreshing metadata once if it is missing.
    pub async fn topic_info(&mut self, topic: &str, allow_auto_create: bool) -> Result<TopicInfo> {
        if let Some(info) = self.topics.get(topic) {
            return Ok(info.clone());
        }
        let infos = self
            .metadata(Some(&[topic.to_owned()]), allow_auto_create)
            .await?;
        match infos.into_iter().find(|t| t.name == topic) {
            Some(t) if t.error_code == 0 => Ok(t),
            Some(t) => Err(Error::kafka(t.error_code, None)),
            None => Err(Error::kafka(3, None)),
        }
    }

    /// Partitions grouped by their current leader; leaderless or unknown
    /// partitions come back separately.
    fn group_by_leader(
        &self,
        topic: &str,
        partitions: &[i32],
    ) -> (BTreeMap<i32, Vec<i32>>, Vec<i32>) {
        let mut groups: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for &p in partitions {
            let leader = self
                .topics
                .get(topic)
                .and_then(|t| t.partition(p))
                .and_then(|p| p.leader)
                .filter(|l| self.brokers.contains_key(l));
            match leader {
                Some(l) => groups.entry(l).or_default().push(p),
                None => leaderless.push(p),
            }
        }
        (groups, leaderless)
    }

    async fn refresh_before_retry(&mut self, topic: &str, attempt: u32) {
        tokio::time::sleep(self.config.retry_backoff * attempt).await;
        if let Err(e) = self.metadata(Some(&[topic.to_owned()]), false).await {
            tracing::debug!(topic, error = %e, "metadata refresh failed");
        }
    }

    /// ListOffsets for `partitions` of `topic`, each sent to its leader.
    pub async fn list_offsets(
        &mut self,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<BTreeMap<i32, Result<ListedOffset>>> {
        self.topic_info(topic, false).await?;
        let mut results = BTreeMap::new();
        let mut pending = partitions.to_vec();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                self.refresh_before_retry(topic, attempt).await;
            }
            let (groups, leaderless) = self.group_by_leader(topic, &pending);
            let mut retry = Vec::new();
            for p in leaderless {
                results.insert(p, Err(Error::kafka(LEADER_NOT_AVAILABLE, None)));
                retry.push(p);
            }
            for (leader, parts) in groups {
                match self.list_offsets_at(leader, topic, &parts, spec).await {
                    Ok(found) => {
                        for (p, r) in found {
                            if matches!(&r, Err(e) if e.needs_metadata_refresh()) {
                                retry.push(p);
                            }
                            results.insert(p, r);
                        }
                    }
                    Err(e) if e.needs_metadata_refresh() => {
                        self.drop_broker_connection(leader);
                        for p in parts {
                            results.insert(p, Err(Error::Metadata(e.to_string())));
                            retry.push(p);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                break;
            }
            pending = retry;
        }
        Ok(results)
    }

    async fn list_offsets_at(
        &mut self,
        leader: i32,
        topic: &str,
        partitions: &[i32],
        spec: OffsetSpec,
    ) -> Result<Vec<(i32, Result<ListedOffset>)>> {
        let conn = self.broker_connection(leader).await?;
        let version = conn.usable_version(
            ListOffsetsRequest::KEY,
            spec.min_version().max(ListOffsetsRequest::VERSIONS.min),
            ListOffsetsRequest::VERSIONS.max,
        )?;
        let req = ListOffsetsRequest::default()
            // -1: an ordinary consumer, not a follower broker.
            .with_replica_id((-1).into())
            .with_isolation_level(0)
            .with_timeout_ms(30_000)
            .with_topics(vec![ListOffsetsTopic::default()
                .with_name(TopicName::from(StrBytes::from_string(topic.to_owned())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| {
                            ListOffsetsPartition::default()
                                .with_partition_index(p)
                                .with_current_leader_epoch(-1)
                                .with_timestamp(spec.wire())
                        })
                        .collect(),
                )]);
        let resp = conn.send_version(&req, version).await?;
        let mut out = Vec::new();
        for t in resp.topics {
            if t.name.as_str() != topic {
                continue;
            }
            for p in t.partitions {
                let r = if p.error_code != 0 {
                    Err(Error::kafka(p.error_code, None))
                } else {
                    Ok(ListedOffset {
                        offset: Some(p.offset).filter(|o| *o >= 0),
                        timestamp: p.timestamp,
                    })
                };
                out.push((p.partition_index, r));
            }
        }
        for &p in partitions {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((
                    p,
                    Err(Error::Metadata(format!(
                        "ListOffsets response has no entry for {topic}-{p}"
                    ))),
                ));
            }
        }
        Ok(out)
    }

    fn drop_broker_connection(&mut self, id: i32) {
        if let Some(addr) = self.brokers.get(&id).map(BrokerInfo::addr) {
            self.conns.remove(&addr);
        }
    }

    /// Produces one batch per partition, each to its leader. Returns the
    /// base offset per partition (None with acks=0, where brokers don't
    /// answer).
    pub async fn produce(
        &mut self,
        topic: &str,
        batches: &BTreeMap<i32, Vec<Record>>,
        acks: i16,
        compression: Compression,
    ) -> Result<BTreeMap<i32, Result<Option<i64>>>> {
        let encoded: BTreeMap<i32, Bytes> = batches
            .iter()
            .map(|(&p, records)| {
                Ok((
                    p,
                    encode(records, compression).map_err(|e| Error::InvalidBatch(e.0))?,
                ))
            })
            .collect::<Result<_>>()?;
        let mut results = BTreeMap::new();
        let mut pending: Vec<i32> = encoded.keys().copied().collect();
        for attempt in 0..=self.config.retries {
            if attempt > 0 {
                self.refresh_before_retry(topic, attempt).await;
            }
            let (groups, leaderless) = self.group_by_leader(topic, &pending);
            let mut retry = Vec::new();
            for p in leaderless {
                results.insert(p, Err(Error::kafka(LEADER_NOT_AVAILABLE, None)));
                retry.push(p);
            }
            for (leader, parts) in groups {
                match self.produce_at(leader, topic, &parts, &encoded, acks).await {
                    Ok(done) => {
                        for (p, r) in done {
                            let again = matches!(&r, Err(e) if e.needs_metadata_refresh()
                                || e.code() == Some(NOT_ENOUGH_REPLICAS));
                            if again {
                                retry.push(p);
                            }
                            results.insert(p, r);
                        }
                    }
                    Err(e) if e.needs_metadata_refresh() => {
                        self.drop_broker_connection(leader);
                        for p in parts {
                            results.insert(p, Err(Error::Metadata(e.to_string())));
                            retry.push(p);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                break;
            }
            pending = retry;
        }
        Ok(results)
    }

    async fn produce_at(
        &mut self,
        leader: i32,
        topic: &str,
        partitions: &[i32],
        encoded: &BTreeMap<i32, Bytes>,
        acks: i16,
    ) -> Result<Vec<(i32, Result<Option<i64>>)>> {
        let topic_id = self.topics.get(topic).map(|t| t.id).unwrap_or_default();
        let conn = self.broker_connection(leader).await?;
        // Produce v13 names topics by id only; without a known id stay below.
        let max = if topic_id.is_nil() {
            12
        } else {
            ProduceRequest::VERSIONS.max
        };
        let version =
            conn.usable_version(ProduceRequest::KEY, ProduceRequest::VERSIONS.min, max)?;
        let req = ProduceRequest::default()
            .with_acks(acks)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default()
                .with_name(TopicName::from(StrBytes::from_string(topic.to_owned())))
                .with_topic_id(topic_id)
                .with_partition_data(
                    partitions
                        .iter()
                        .filter_map(|p| encoded.get(p).map(|b| (p, b)))
                        .map(|(&p, b)| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(b.clone()))
                        })
                        .collect(),
                )]);
        if acks == 0 {
            conn.send_without_response(&req, version).await?;
            return Ok(partitions.iter().map(|&p| (p, Ok(None))).collect());
        }
        let resp = conn.send_version(&req, version).await?;
        let mut out = Vec::new();
        for t in resp.responses {
            for p in t.partition_responses {
                let r = if p.error_code != 0 {
                    Err(Error::kafka(
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.as_str()),
                    ))
                } else {
                    Ok(Some(p.base_offset))
                };
                out.push((p.index, r));
            }
        }
        for &p in partitions {
            if !out.iter().any(|(q, _)| *q == p) {
                out.push((
                    p,
                    Err(Error::Metadata(format!(
                        "Produce response has no entry for {topic}-{p}"
                    ))),
                ));
            }
        }
        Ok(out)
    }

    /// Fetches `positions` (partition, offset) of `topic` from each listed
    /// leader concurrently. Per broker, the result is either its partitions
    /// or the transport error that hit it.
    pub async fn fetch(
        &mut self,
        topic: &str,
        by_leader: &BTreeMap<i32, Vec<(i32, i64)>>,
        limits: FetchLimits,
    ) -> Vec<(i32, Result<Vec<FetchedPartition>>)> {
        let topic_id = self.topics.get(topic).map(|t| t.id).unwrap_or_default();
        let mut out = Vec::new();
        // Take each leader's connection out of the map so the requests can
        // run at once; they go back in afterwards.
        let mut taken = Vec::new();
        for (&leader, positions) in by_leader {
            let addr = match self.brokers.get(&leader) {
                Some(b) => b.addr(),
                None => {
                    out.push((leader, Err(Error::UnknownBroker(leader))));
                    continue;
                }
            };
            if let Err(e) = self.conn_to(&addr).await {
                out.push((leader, Err(e)));
                continue;
            }
            match self.conns.remove(&addr) {
                Some(conn) => taken.push((leader, addr, conn, positions.clone())),
                None => out.push((leader, Err(Error::NoBrokerReachable(addr)))),
            }
        }
        let results = join_all(
            taken
                .into_iter()
                .map(|(leader, addr, mut conn, positions)| {
                    let topic = topic.to_owned();
                    async move {
                        let r = fetch_on(&mut conn, &topic, topic_id, &positions, limits).await;
                        (leader, addr, conn, r)
                    }
                }),
        )
        .await;
        for (leader, addr, conn, r) in results {
            if conn.is_usable() {
                self.conns.insert(addr, conn);
            }
            out.push((leader, r));
        }
        out
    }

    /// Leader of each partition from the cache (None if unknown).
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<i32> {
        self.topics
            .get(topic)
            .and_then(|t| t.partition(partition))
            .and_then(|p| p.leader)
    }

    /// CreateTopics, sent to the controller. One result per topic.
    pub async fn create_topics(
        &mut self,
        topics: &[NewTopic],
    ) -> Result<Vec<(String, Result<()>)>> {
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(
                topics
                    .iter()
                    .map(|t| {
                        CreatableTopic::default()
                            .with_name(TopicName::from(StrBytes::from_string(t.name.clone())))
                            .with_num_partitions(t.partitions)
                            .with_replication_factor(t.replication_factor)
                            .with_configs(
                                t.configs
                                    .iter()
                                    .map(|(k, v)| {
                                        CreatableTopicConfig::default()
                                            .with_name(StrBytes::from_string(k.clone()))
                                            .with_value(Some(StrBytes::from_string(v.clone())))
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            );
        let resp = self
            .send_controller_retrying(&req, |r: &_| {
                let r: &kafka_protocol::messages::CreateTopicsResponse = r;
                r.topics.iter().any(|t| t.error_code == NOT_CONTROLLER)
            })
            .await?;
        Ok(topics
            .iter()
            .map(|t| {
                let r = match resp.topics.iter().find(|r| r.name.as_str() == t.name) {
                    Some(r) if r.error_code == 0 => Ok(()),
                    Some(r) => Err(Error::kafka(
                        r.error_code,
                        r.error_message.as_ref().map(|m| m.as_str()),
                    )),
                    None => Err(Error::Metadata(format!(
                        "CreateTopics response has no entry for {}",
                        t.name
                    ))),
                };
                (t.name.clone(), r)
            })
            .collect())
    }

    /// DeleteTopics by name, sent to the controller.
    pub async fn delete_topics(&mut self, names: &[String]) -> Result<Vec<(String, Result<()>)>> {
        let req = DeleteTopicsRequest::default()
            .with_timeout_ms(30_000)
            // v0-5 take names, v6 takes (name, id) states; set both.
            .with_topic_names(
                names
                    .iter()
                    .map(|n| TopicName::from(StrBytes::from_string(n.clone())))
                    .collect(),
            )
            .with_topics(
                names
                    .iter()
                    .map(|n| {
                        DeleteTopicState::default()
                            .with_name(Some(TopicName::from(StrBytes::from_string(n.clone()))))
                    })
                    .collect(),
            );
        let resp = self
            .send_controller_retrying(
                &req,
                |r: &kafka_protocol::messages::DeleteTopicsResponse| {
                    r.responses.iter().any(|t| t.error_code == NOT_CONTROLLER)
                },
            )
            .await?;
        Ok(names
            .iter()
            .map(|n| {
                let found = resp
                    .responses
                    .iter()
                    .find(|r| r.name.as_ref().is_some_and(|m| m.as_str() == n));
                let r = match found {
                    Some(r) if r.error_code == 0 => Ok(()),
                    Some(r) => Err(Error::kafka(
                        r.error_code,
                        r.error_message.as_ref().map(|m| m.as_str()),
                    )),
                    None => Err(Error::Metadata(format!(
                        "DeleteTopics response has no entry for {n}"
                    ))),
                };
                (n.clone(), r)
            })
            .collect())
    }

    /// CreatePartitions: grow `topic` to `count` partitions.
    pub async fn create_partitions(&mut self, topic: &str, count: i32) -> Result<()> {
        let req = CreatePartitionsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![CreatePartitionsTopic::default()
                .with_name(TopicName::from(StrBytes::from_string(topic.to_owned())))
                .with_count(count)
                .with_assignments(None)]);
        let resp = self
            .send_controller_retrying(
                &req,
                |r: &kafka_protocol::messages::CreatePartitionsResponse| {
                    r.results.iter().any(|t| t.error_code == NOT_CONTROLLER)
                },
            )
            .await?;
        match resp.results.iter().find(|r| r.name.as_str() == topic) {
            Some(r) if r.error_code == 0 => Ok(()),
            Some(r) => Err(Error::kafka(
                r.error_code,
                r.error_message.as_ref().map(|m| m.as_str()),
            )),
            None => Err(Error::Metadata(format!(
                "CreatePartitions response has no entry for {topic}"
            ))),
        }
    }

    /// Sends to the controller; if the answer says NOT_CONTROLLER, refreshes
    /// metadata (the controller moved) and tries again.
    async fn send_controller_retrying<R: Request>(
        &mut self,
        req: &R,
        not_controller: impl Fn(&R::Response) -> bool,
    ) -> Result<R::Response> {
        let mut attempt = 0;
        loop {
            let resp = self.send_controller(req).await?;
            if !not_controller(&resp) || attempt >= self.config.retries {
                return Ok(resp);
            }
            attempt += 1;
            tokio::time::sleep(self.config.retry_backoff * attempt).await;
            self.metadata(Some(&[]), false).await?;
        }
    }
}

async fn fetch_on(
    conn: &mut Connection,
    topic: &str,
    topic_id: Uuid,
    positions: &[(i32, i64)],
    limits: FetchLimits,
) -> Result<Vec<FetchedPartition>> {
    // Fetch v13+ names topics by id only; without a known id stay below.
    let max = if topic_id.is_nil() {
        12
    } else {
        FetchRequest::VERSIONS.max
    };
    let version = conn.usable_version(FetchRequest::KEY, FetchRequest::VERSIONS.min, max)?;
    let req = FetchRequest::default()
        .with_replica_id((-1).into())
        .with_max_wait_ms(limits.max_wait_ms)
        .with_min_bytes(limits.min_bytes)
        .with_max_bytes(limits.max_bytes)
        .with_isolation_level(0)
        // No fetch session (KIP-227): session 0 with epoch -1 asks for a
        // full, sessionless fetch every time.
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName::from(StrBytes::from_string(topic.to_owned())))
            .with_topic_id(topic_id)
            .with_partitions(
                positions
                    .iter()
                    .map(|&(p, offset)| {
                        FetchPartition::default()
                            .with_partition(p)
                            .with_fetch_offset(offset)
                            .with_current_leader_epoch(-1)
                            .with_log_start_offset(-1)
                            .with_partition_max_bytes(limits.partition_max_bytes)
                    })
                    .collect(),
            )]);
    let resp: FetchResponse = conn.send_version(&req, version).await?;
    if resp.error_code != 0 {
        return Err(Error::kafka(resp.error_code, None));
    }
    let mut out = Vec::new();
    for t in resp.responses {
        for p in t.partitions {
            out.push(FetchedPartition {
                partition: p.partition_index,
                error_code: p.error_code,
                high_watermark: p.high_watermark,
                log_start_offset: p.log_start_offset,
                records: p.records,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::build::record;
    use kafka_protocol::records::RecordBatchDecoder;

    #[test]
    fn bootstrap_list_is_validated() {
        assert_eq!(
            parse_bootstrap("a:1, b:2").unwrap(),
            vec!["a:1".to_owned(), "b:2".to_owned()]
        );
        assert!(parse_bootstrap("").is_err());
        assert!(parse_bootstrap("localhost").is_err());
        assert!(parse_bootstrap("localhost:notaport").is_err());
        assert!(parse_bootstrap(":9092").is_err());
        assert_eq!(parse_bootstrap("[::1]:9092").unwrap(), vec!["[::1]:9092"]);
    }

    #[test]
    fn ipv6_broker_address_is_bracketed() {
        let b = BrokerInfo {
            id: 1,
            host: "::1".into(),
            port: 9092,
            rack: None,
        };
        assert_eq!(b.addr(), "[::1]:9092");
    }

    #[test]
    fn records_of_one_call_share_one_batch_with_no_sequence() {
        let records: Vec<Record> = (0..5)
            .map(|i| record(i, 1000 + i, None, Some(Bytes::from(format!("v{i}")))))
            .collect();
        let bytes = encode(&records, Compression::None).unwrap();
        let infos = RecordBatchDecoder::decode_batch_info(&mut bytes.clone()).unwrap();
        assert_eq!(infos.len(), 1, "all records in one batch");
        assert_eq!(infos[0].record_count, 5);
        assert_eq!(infos[0].base_sequence, -1);
        assert_eq!(infos[0].producer_id, -1);
        let set = RecordBatchDecoder::decode(&mut bytes.clone()).unwrap();
        let values: Vec<_> = set
            .records
            .iter()
            .map(|r| r.value.clone().unwrap())
            .collect();
        assert_eq!(values[4], Bytes::from("v4"));
    }

    #[test]
    fn offset_spec_sentinels() {
        assert_eq!(OffsetSpec::from_i64(-1), Some(OffsetSpec::Latest));
        assert_eq!(OffsetSpec::from_i64(-2), Some(OffsetSpec::Earliest));
        assert_eq!(OffsetSpec::from_i64(-3), Some(OffsetSpec::MaxTimestamp));
        assert_eq!(OffsetSpec::from_i64(12), Some(OffsetSpec::Timestamp(12)));
        assert_eq!(OffsetSpec::from_i64(-9), None);
        assert_eq!(OffsetSpec::MaxTimestamp.min_version(), 7);
    }
}
