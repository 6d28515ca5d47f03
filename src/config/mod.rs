//! Typed configuration with Kafka's property names, read once at start from a
//! `server.properties`-style file plus `--override key=value` pairs.
//!
//! Every key is validated here: an unknown key, or a value of the wrong type
//! or out of range, stops startup with an error that names the key. Kafka keys
//! that Runnel accepts but does not act on (thread counts, socket buffers…)
//! are listed in [`ACCEPTED_NO_EFFECT`] so that existing files keep working.

pub mod dynamic;
pub mod security;
pub mod topic;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub type Result<T, E = ConfigError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown configuration key '{0}'")]
    UnknownKey(String),
    #[error("invalid value {value:?} for configuration key '{key}': {why}")]
    Invalid {
        key: String,
        value: String,
        why: String,
    },
    #[error("--override expects key=value, got {0:?}")]
    BadOverride(String),
}

fn invalid(key: &str, value: &str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_string(),
        value: value.to_string(),
        why: why.into(),
    }
}

/// One `NAME://host:port` entry of `listeners` / `advertised.listeners`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl Listener {
    /// The address to bind: an empty host means all interfaces, as in Kafka.
    pub fn bind_addr(&self) -> String {
        let host = if self.host.is_empty() {
            "0.0.0.0"
        } else {
            &self.host
        };
        format!("{host}:{}", self.port)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Roles {
    pub broker: bool,
    pub controller: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub id: i32,
    pub host: String,
    pub port: u16,
}

/// Defaults for partition logs; topics may override some of them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogDefaults {
    pub segment_bytes: u64,
    pub roll_ms: i64,
    pub index_interval_bytes: usize,
    pub retention_ms: i64,
    pub retention_bytes: i64,
    /// `log.flush.interval.messages`: `None` (the default) means acks=-1
    /// waits for fsync; set it to opt into Kafka's flush-later behaviour.
    pub flush_interval_messages: Option<u64>,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub node_id: i32,
    pub roles: Roles,
    pub listeners: Vec<Listener>,
    pub advertised_listeners: Vec<Listener>,
    pub controller_listener_names: Vec<String>,
    pub security_protocol_map: BTreeMap<String, String>,
    /// The security protocol of each listener, by name.
    pub listener_protocols: BTreeMap<String, security::SecurityProtocol>,
    /// The TLS settings of each TLS listener, by name.
    pub tls: BTreeMap<String, security::TlsSettings>,
    pub quorum_voters: Vec<Voter>,
    pub log_dirs: Vec<PathBuf>,
    pub metadata_log_dir: PathBuf,
    pub num_partitions: i32,
    pub default_replication_factor: i16,
    pub min_insync_replicas: i32,
    pub auto_create_topics_enable: bool,
    pub delete_topic_enable: bool,
    pub message_max_bytes: usize,
    pub socket_request_max_bytes: usize,
    pub max_connections: usize,
    pub log: LogDefaults,
    pub rack: Option<String>,
    pub metrics_listener: Option<SocketAddr>,
    /// `log.format`: `text` or `json`.
    pub log_format: String,
    pub cluster_id: Option<String>,
    pub broker_heartbeat_interval_ms: u64,
    pub broker_session_timeout_ms: u64,
    /// `broker.session.grace.ms`: see `controller::liveness`.
    pub broker_session_grace_ms: u64,
    pub controller_quorum_election_timeout_ms: u64,
    /// How long a new group waits for more members before its first rebalance.
    pub group_initial_rebalance_delay_ms: u64,
    /// Committed offsets of a group that has been Empty this long (or,
    /// for a group that never had members, not committed for this long)
    /// expire (KIP-211); `offsets.retention.minutes` in ms.
    pub offsets_retention_ms: i64,
    /// How often each coordinator looks for expired offsets.
    pub offsets_retention_check_interval_ms: u64,
    /// A follower that has not caught up for this long leaves the ISR.
    pub replica_lag_time_max_ms: u64,
    /// How long a leader holds a follower's fetch open waiting for data.
    pub replica_fetch_wait_max_ms: u64,
    /// Bytes a follower fetches per partition, and per fetch in all.
    pub replica_fetch_max_bytes: usize,
    pub replica_fetch_response_max_bytes: usize,
    /// Broker default of the topic key: elect a leader outside the ISR
    /// (losing data) rather than leave a partition offline.
    pub unclean_leader_election_enable: bool,
    /// Move leadership back to preferred leaders every
    /// `leader.imbalance.check.interval.seconds`.
    pub auto_leader_rebalance_enable: bool,
    /// Controller metadata log: committed records between snapshots, and
    /// records kept behind the latest snapshot.
    pub metadata_snapshot_interval_records: u64,
    pub metadata_log_retained_records: u64,
    /// A producer id idle this long is forgotten by every partition.
    pub producer_id_expiration_ms: u64,
    pub leader_imbalance_check_interval_ms: u64,
    /// How often the retention task looks for segments to delete.
    pub log_retention_check_interval_ms: u64,
    /// Whether this broker runs the log cleaner (compaction) at all.
    pub log_cleaner_enable: bool,
    /// Every key as given (after overrides), for DescribeConfigs.
    pub raw: BTreeMap<String, String>,
}

/// Kafka broker keys that are accepted for compatibility and have no effect.
pub const ACCEPTED_NO_EFFECT: &[&str] = &[
    "num.network.threads",
    "num.io.threads",
    "num.recovery.threads.per.data.dir",
    "socket.send.buffer.bytes",
    "socket.receive.buffer.bytes",
    "offsets.topic.replication.factor",
    "offsets.topic.num.partitions",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "inter.broker.listener.name",
    "queued.max.requests",
    "background.threads",
    // Any imbalance is corrected at the next check.
    "leader.imbalance.per.broker.percentage",
];

/// How `Config::from_map` reads a key: most keys are a number (no lower
/// than the bound given), a boolean or a text into one field.
enum Read {
    I16(i16, fn(&mut Config) -> &mut i16),
    I32(i32, fn(&mut Config) -> &mut i32),
    I64(i64, fn(&mut Config) -> &mut i64),
    U64(u64, fn(&mut Config) -> &mut u64),
    Usize(usize, fn(&mut Config) -> &mut usize),
    /// Empty means `None`.
    OptU64(u64, fn(&mut Config) -> &mut Option<u64>),
    Bool(fn(&mut Config) -> &mut bool),
    /// Trimmed; empty means `None`.
    Text(fn(&mut Config) -> &mut Option<String>),
    /// Any other value of one key: `(config, key, value)`.
    Field(fn(&mut Config, &str, &str) -> Result<()>),
    /// Reads this key and the `InStep` keys after it together, and checks
    /// them against each other and against the fields read before.
    Step(fn(&mut Config, &Props) -> Result<()>),
    /// Read by the nearest `Step` above.
    InStep,
    /// Known, but nothing reads it (yet).
    Unread,
}

use Read::{Bool, Field, InStep, OptU64, Step, Text, Unread, Usize, I16, I32, I64, U64};

/// Every key Runnel reads, with its default, in the order `from_map` reads
/// them (so that of several bad values, the first here is the one reported).
/// Absent from here and from `ACCEPTED_NO_EFFECT` means unknown.
#[rustfmt::skip]
const KEYS: &[(&str, &str, Read)] = &[
    ("node.id", "1", I32(0, |c| &mut c.node_id)),
    ("process.roles", "broker,controller", Field(|c, k, v| parse_roles(k, v).map(|r| c.roles = r))),
    ("listeners", "PLAINTEXT://127.0.0.1:9092", Step(listeners)),
    ("controller.listener.names", "CONTROLLER", InStep),
    (
        "listener.security.protocol.map",
        "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SSL:SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,SASL_SSL:SASL_SSL",
        InStep,
    ),
    ("advertised.listeners", "", Step(advertised_listeners)),
    ("controller.quorum.voters", "", Step(quorum_voters)),
    ("log.dirs", "", Step(log_dirs)),
    ("log.dir", "./data", InStep),
    ("metadata.log.dir", "", InStep),
    ("log.roll.ms", "", Step(log_roll)),
    ("log.roll.hours", "168", InStep),
    ("log.retention.ms", "", Step(log_retention)),
    ("log.retention.minutes", "", InStep),
    ("log.retention.hours", "168", InStep),
    ("message.max.bytes", "1048588", Usize(0, |c| &mut c.message_max_bytes)),
    ("log.segment.bytes", "1073741824", U64(14, |c| &mut c.log.segment_bytes)),
    ("metrics.listener", "", Field(|c, k, v| metrics_addr(k, v).map(|a| c.metrics_listener = a))),
    ("log.format", "text", Field(log_format)),
    ("num.partitions", "1", I32(1, |c| &mut c.num_partitions)),
    ("default.replication.factor", "1", I16(1, |c| &mut c.default_replication_factor)),
    ("min.insync.replicas", "1", I32(1, |c| &mut c.min_insync_replicas)),
    ("auto.create.topics.enable", "true", Bool(|c| &mut c.auto_create_topics_enable)),
    ("delete.topic.enable", "true", Bool(|c| &mut c.delete_topic_enable)),
    ("socket.request.max.bytes", "104857600", Usize(1, |c| &mut c.socket_request_max_bytes)),
    ("max.connections", "10000", Usize(1, |c| &mut c.max_connections)),
    ("log.index.interval.bytes", "4096", Usize(0, |c| &mut c.log.index_interval_bytes)),
    ("log.retention.bytes", "-1", I64(-1, |c| &mut c.log.retention_bytes)),
    ("log.flush.interval.messages", "", OptU64(1, |c| &mut c.log.flush_interval_messages)),
    ("log.retention.check.interval.ms", "300000",
        U64(1, |c| &mut c.log_retention_check_interval_ms)),
    ("log.cleaner.enable", "true", Bool(|c| &mut c.log_cleaner_enable)),
    ("broker.rack", "", Text(|c| &mut c.rack)),
    ("cluster.id", "", Text(|c| &mut c.cluster_id)),
    ("broker.heartbeat.interval.ms", "2000", U64(10, |c| &mut c.broker_heartbeat_interval_ms)),
    ("broker.session.timeout.ms", "9000", U64(100, |c| &mut c.broker_session_timeout_ms)),
    // Runnel's own: how long a broker whose session stream ended (its
    // process died, or the connection dropped) has to open a new one.
    // Kafka's key; Runnel's default is 300, not 1000 (see
    // controller::DEFAULT_ELECTION_TIMEOUT_MS).
    ("controller.quorum.election.timeout.ms", "300",
        U64(40, |c| &mut c.controller_quorum_election_timeout_ms)),
    ("broker.session.grace.ms", "250", U64(0, |c| &mut c.broker_session_grace_ms)),
    ("group.initial.rebalance.delay.ms", "3000",
        U64(0, |c| &mut c.group_initial_rebalance_delay_ms)),
    // Kafka's defaults: seven days, checked every ten minutes.
    ("offsets.retention.minutes", "10080", Field(|c, k, v| {
        c.offsets_retention_ms = num::<i64>(k, v, 1)?.saturating_mul(60_000);
        Ok(())
    })),
    ("offsets.retention.check.interval.ms", "600000",
        U64(1, |c| &mut c.offsets_retention_check_interval_ms)),
    ("replica.lag.time.max.ms", "30000", U64(1, |c| &mut c.replica_lag_time_max_ms)),
    ("replica.fetch.wait.max.ms", "500", U64(0, |c| &mut c.replica_fetch_wait_max_ms)),
    // 8 MiB, not Kafka's 1 MiB: a follower fsyncs before each fetch, so
    // fewer, larger fetches keep acks=-1 throughput up.
    ("replica.fetch.max.bytes", "8388608", Usize(1, |c| &mut c.replica_fetch_max_bytes)),
    ("replica.fetch.response.max.bytes", "33554432",
        Usize(1, |c| &mut c.replica_fetch_response_max_bytes)),
    ("unclean.leader.election.enable", "false", Bool(|c| &mut c.unclean_leader_election_enable)),
    ("auto.leader.rebalance.enable", "true", Bool(|c| &mut c.auto_leader_rebalance_enable)),
    ("producer.id.expiration.ms", "86400000", U64(1, |c| &mut c.producer_id_expiration_ms)),
    ("metadata.snapshot.interval.records", "10000",
        U64(1, |c| &mut c.metadata_snapshot_interval_records)),
    ("metadata.log.retained.records", "1000", U64(0, |c| &mut c.metadata_log_retained_records)),
    ("leader.imbalance.check.interval.seconds", "300", Field(|c, k, v| {
        c.leader_imbalance_check_interval_ms = num::<u64>(k, v, 1)?.saturating_mul(1000);
        Ok(())
    })),
    // One fetcher per source broker carries all its partitions.
    ("num.replica.fetchers", "1", Unread),
];

/// Whether Runnel knows this broker key (read, dynamic, or accepted).
pub fn is_known_key(key: &str) -> bool {
    KEYS.iter().any(|(k, _, _)| *k == key)
        || ACCEPTED_NO_EFFECT.contains(&key)
        || topic::by_synonym(key).is_some()
        || dynamic::CLEANER_KEYS.iter().any(|k| k.name == key)
}

/// The keys `runnel serve` reads from its file, with their defaults (empty:
/// none), for DescribeConfigs of a broker.
pub fn static_keys() -> impl Iterator<Item = (&'static str, &'static str)> {
    KEYS.iter().map(|(k, d, _)| (*k, *d))
}

/// Parses Java `.properties` text: `key=value`, `key: value` or `key value`,
/// `#`/`!` comments, and lines continued with a trailing backslash.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_start();
        if pending.is_empty() && (line.is_empty() || line.starts_with('#') || line.starts_with('!'))
        {
            continue;
        }
        if let Some(stripped) = line.strip_suffix('\\') {
            pending.push_str(stripped);
            continue;
        }
        pending.push_str(line);
        let entry = std::mem::take(&mut pending);
        let split = entry.find(['=', ':', ' ', '\t']);
        let (k, v) = match split {
            Some(i) => {
                let v = entry[i + 1..].trim_start();
                let v = v.strip_prefix(['=', ':']).unwrap_or(v);
                (entry[..i].trim(), v.trim())
            }
            None => (entry.trim(), ""),
        };
        if !k.is_empty() {
            out.insert(k.to_string(), v.to_string());
        }
    }
    out
}

/// Parses `NAME://host:port,…`.
pub fn parse_listeners(key: &str, value: &str) -> Result<Vec<Listener>> {
    let mut out: Vec<Listener> = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, rest) = item
            .split_once("://")
            .ok_or_else(|| invalid(key, value, format!("{item:?} is not NAME://host:port")))?;
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid(key, value, format!("{item:?} has no port")))?;
        let port: u16 = port
            .parse()
            .map_err(|_| invalid(key, value, format!("{item:?} has a bad port")))?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = name.to_ascii_uppercase();
        if out.iter().any(|l| l.name == name) {
            return Err(invalid(
                key,
                value,
                format!("listener {name} appears twice"),
            ));
        }
        out.push(Listener {
            name,
            host: host.to_string(),
            port,
        });
    }
    Ok(out)
}

fn parse_voters(value: &str) -> Result<Vec<Voter>> {
    let key = "controller.quorum.voters";
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let bad = || invalid(key, value, format!("{item:?} is not id@host:port"));
        let (id, addr) = item.split_once('@').ok_or_else(bad)?;
        let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
        out.push(Voter {
            id: id.parse().map_err(|_| bad())?,
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port: port.parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// Every known key's value: as given, else its default.
struct Props(BTreeMap<String, String>);

impl Props {
    fn get(&self, key: &str) -> &str {
        self.0.get(key).map(String::as_str).unwrap_or("")
    }

    fn num<T>(&self, key: &str, min: T) -> Result<T>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        num(key, self.get(key), min)
    }

    fn opt_num<T>(&self, key: &str, min: T) -> Result<Option<T>>
    where
        T: std::str::FromStr + PartialOrd + std::fmt::Display,
    {
        opt_num(key, self.get(key), min)
    }
}

fn num<T>(key: &str, v: &str, min: T) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    let n: T = v
        .trim()
        .parse()
        .map_err(|_| invalid(key, v, "not a number in range"))?;
    if n < min {
        return Err(invalid(key, v, format!("must be at least {min}")));
    }
    Ok(n)
}

/// Empty means `None`.
fn opt_num<T>(key: &str, v: &str, min: T) -> Result<Option<T>>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display,
{
    if v.trim().is_empty() {
        Ok(None)
    } else {
        num(key, v, min).map(Some)
    }
}

fn boolean(key: &str, v: &str) -> Result<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(invalid(key, v, "expected true or false")),
    }
}

/// Empty means `None`.
fn nonempty(v: &str) -> Option<String> {
    let v = v.trim();
    (!v.is_empty()).then(|| v.to_string())
}

impl Config {
    /// Reads `file` (if any), applies `overrides` (`key=value`), validates.
    pub fn load(file: Option<&Path>, overrides: &[String]) -> Result<Config> {
        let mut given = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                parse_properties(&text)
            }
            None => BTreeMap::new(),
        };
        for o in overrides {
            let (k, v) = o
                .split_once('=')
                .ok_or_else(|| ConfigError::BadOverride(o.clone()))?;
            given.insert(k.trim().to_string(), v.trim().to_string());
        }
        Config::from_map(given)
    }

    pub fn from_map(given: BTreeMap<String, String>) -> Result<Config> {
        for (key, value) in &given {
            if KEYS.iter().any(|(k, _, _)| k == key) {
                continue;
            }
            // The broker keys that supply topic defaults, and the
            // cleaner's: typed by the topic key they stand for.
            if let Ok(kind) = dynamic::dynamic_broker_kind(key) {
                topic::check(key, kind, value).map_err(|e| invalid(key, value, e.0))?;
                continue;
            }
            if ACCEPTED_NO_EFFECT.contains(&key.as_str()) {
                continue; // see `log_ignored_keys`
            }
            // TLS keys, plain or for one listener (checked with the
            // listeners).
            if security::SSL_KEYS.iter().any(|(k, _)| k == key)
                || security::listener_key_parts(key).is_some()
            {
                continue;
            }
            return Err(ConfigError::UnknownKey(key.clone()));
        }
        let mut all: BTreeMap<String, String> = KEYS
            .iter()
            .map(|(k, v, _)| (k.to_string(), v.to_string()))
            .collect();
        all.extend(given.clone());
        let p = Props(all);

        let mut c = Config::unread(given);
        for (key, _, read) in KEYS {
            let v = p.get(key);
            match read {
                I16(min, f) => *f(&mut c) = num(key, v, *min)?,
                I32(min, f) => *f(&mut c) = num(key, v, *min)?,
                I64(min, f) => *f(&mut c) = num(key, v, *min)?,
                U64(min, f) => *f(&mut c) = num(key, v, *min)?,
                Usize(min, f) => *f(&mut c) = num(key, v, *min)?,
                OptU64(min, f) => *f(&mut c) = opt_num(key, v, *min)?,
                Bool(f) => *f(&mut c) = boolean(key, v)?,
                Text(f) => *f(&mut c) = nonempty(v),
                Field(set) => set(&mut c, key, v)?,
                Step(step) => step(&mut c, &p)?,
                InStep | Unread => {}
            }
        }
        Ok(c)
    }

    /// Every field zero or empty, before `from_map` reads the keys into it;
    /// `raw` is the one field it does not read from `KEYS`.
    fn unread(raw: BTreeMap<String, String>) -> Config {
        Config {
            node_id: 0,
            roles: Roles {
                broker: false,
                controller: false,
            },
            listeners: Vec::new(),
            advertised_listeners: Vec::new(),
            controller_listener_names: Vec::new(),
            security_protocol_map: BTreeMap::new(),
            listener_protocols: BTreeMap::new(),
            tls: BTreeMap::new(),
            quorum_voters: Vec::new(),
            log_dirs: Vec::new(),
            metadata_log_dir: PathBuf::new(),
            num_partitions: 0,
            default_replication_factor: 0,
            min_insync_replicas: 0,
            auto_create_topics_enable: false,
            delete_topic_enable: false,
            message_max_bytes: 0,
            socket_request_max_bytes: 0,
            max_connections: 0,
            log: LogDefaults {
                segment_bytes: 0,
                roll_ms: 0,
                index_interval_bytes: 0,
                retention_ms: 0,
                retention_bytes: 0,
                flush_interval_messages: None,
            },
            rack: None,
            metrics_listener: None,
            log_format: String::new(),
            cluster_id: None,
            broker_heartbeat_interval_ms: 0,
            broker_session_timeout_ms: 0,
            broker_session_grace_ms: 0,
            controller_quorum_election_timeout_ms: 0,
            group_initial_rebalance_delay_ms: 0,
            offsets_retention_ms: 0,
            offsets_retention_check_interval_ms: 0,
            replica_lag_time_max_ms: 0,
            replica_fetch_wait_max_ms: 0,
            replica_fetch_max_bytes: 0,
            replica_fetch_response_max_bytes: 0,
            unclean_leader_election_enable: false,
            auto_leader_rebalance_enable: false,
            metadata_snapshot_interval_records: 0,
            metadata_log_retained_records: 0,
            producer_id_expiration_ms: 0,
            leader_imbalance_check_interval_ms: 0,
            log_retention_check_interval_ms: 0,
            log_cleaner_enable: false,
            raw,
        }
    }

    /// The listeners clients connect to (every listener but the controller's).
    pub fn client_listeners(&self) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(|l| !self.controller_listener_names.contains(&l.name))
    }

    /// Logs each key given that Runnel accepts and ignores (Kafka's thread
    /// counts, socket buffers…); once logging is set up.
    pub fn log_ignored_keys(&self) {
        for key in self.raw.keys() {
            if ACCEPTED_NO_EFFECT.contains(&key.as_str()) {
                tracing::warn!(key = %key, "configuration key accepted for compatibility; it has no effect in Runnel");
            }
        }
    }

    /// A node with no `controller.quorum.voters` is a one-node cluster.
    pub fn is_single_node(&self) -> bool {
        self.quorum_voters.is_empty()
    }
}

// The keys read together (`Read::Step`), and the parsers of single values
// that `KEYS` uses.

fn parse_roles(key: &str, value: &str) -> Result<Roles> {
    let mut roles = Roles {
        broker: false,
        controller: false,
    };
    for r in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match r {
            "broker" => roles.broker = true,
            "controller" => roles.controller = true,
            other => {
                return Err(invalid(
                    key,
                    value,
                    format!("unknown role {other:?}; use broker, controller or both"),
                ))
            }
        }
    }
    if !roles.broker && !roles.controller {
        return Err(invalid(key, value, "names no role"));
    }
    Ok(roles)
}

/// `log.format`: `text` or `json`.
fn log_format(c: &mut Config, key: &str, value: &str) -> Result<()> {
    match value.trim().to_ascii_lowercase().as_str() {
        v @ ("text" | "json") => {
            c.log_format = v.to_string();
            Ok(())
        }
        _ => Err(invalid(key, value, "expected text or json")),
    }
}

fn metrics_addr(key: &str, value: &str) -> Result<Option<SocketAddr>> {
    match value.trim() {
        "" => Ok(None),
        v => Ok(Some(v.trim_start_matches("http://").parse().map_err(
            |_| invalid(key, v, "expected host:port, e.g. 127.0.0.1:9308"),
        )?)),
    }
}

/// `listener.security.protocol.map`: `NAME:PROTOCOL,…`, names upper-cased.
fn parse_protocol_map(key: &str, value: &str) -> Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for item in value.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (l, proto) = item
            .split_once(':')
            .ok_or_else(|| invalid(key, value, format!("{item:?} is not NAME:PROTOCOL")))?;
        map.insert(
            l.trim().to_ascii_uppercase(),
            proto.trim().to_ascii_uppercase(),
        );
    }
    Ok(map)
}

/// `listeners`, `controller.listener.names` and
/// `listener.security.protocol.map`: every listener speaks PLAINTEXT, and
/// a broker (`roles`, read before) has a listener for clients.
fn listeners(c: &mut Config, p: &Props) -> Result<()> {
    c.listeners = parse_listeners("listeners", p.get("listeners"))?;
    c.controller_listener_names = p
        .get("controller.listener.names")
        .split(',')
        .map(|s| s.trim().to_ascii_uppercase())
        .filter(|s| !s.is_empty())
        .collect();
    let map_key = "listener.security.protocol.map";
    c.security_protocol_map = parse_protocol_map(map_key, p.get(map_key))?;
    use security::SecurityProtocol;
    for l in &c.listeners {
        // A listener named after a protocol (SSL://, SASL_SSL://) needs no
        // map entry.
        let protocol = match c.security_protocol_map.get(&l.name) {
            Some(name) => SecurityProtocol::parse(name).ok_or_else(|| {
                invalid(
                    map_key,
                    p.get(map_key),
                    format!("unknown security protocol {name} for listener {}", l.name),
                )
            })?,
            None => SecurityProtocol::parse(&l.name).ok_or_else(|| {
                invalid(
                    map_key,
                    p.get(map_key),
                    format!("no security protocol for listener {}", l.name),
                )
            })?,
        };
        let controller = c.controller_listener_names.contains(&l.name);
        if protocol.is_sasl() || (controller && protocol != SecurityProtocol::Plaintext) {
            return Err(invalid(
                "listeners",
                p.get("listeners"),
                format!(
                    "listener {} uses {protocol}, which Runnel does not support yet{}",
                    l.name,
                    if controller {
                        " on the controller listener"
                    } else {
                        ""
                    }
                ),
            ));
        }
        if protocol.is_tls() {
            let settings = security::tls_settings(&l.name, &|k| p.0.get(k).cloned())?;
            c.tls.insert(l.name.clone(), settings);
        }
        c.listener_protocols.insert(l.name.clone(), protocol);
    }
    // `listener.name.<name>.ssl.*` for a listener that is not there is a
    // mistake (a typo in the name) rather than a key to ignore.
    for key in p.0.keys() {
        if let Some((name, _)) = security::listener_key_parts(key) {
            if !c.tls.contains_key(&name) {
                return Err(invalid(
                    key,
                    p.get(key),
                    format!("there is no TLS listener named {name} in listeners"),
                ));
            }
        }
    }
    if c.roles.broker && c.client_listeners().next().is_none() {
        return Err(invalid(
            "listeners",
            p.get("listeners"),
            "a broker needs at least one listener that is not a controller listener",
        ));
    }
    Ok(())
}

/// `advertised.listeners`: the client listeners when empty, else each
/// named in `listeners`.
fn advertised_listeners(c: &mut Config, p: &Props) -> Result<()> {
    let key = "advertised.listeners";
    c.advertised_listeners = if p.get(key).trim().is_empty() {
        c.client_listeners().cloned().collect()
    } else {
        let adv = parse_listeners(key, p.get(key))?;
        for a in &adv {
            if !c.listeners.iter().any(|l| l.name == a.name) {
                return Err(invalid(
                    key,
                    p.get(key),
                    format!("listener {} is not in listeners", a.name),
                ));
            }
        }
        adv
    };
    Ok(())
}

/// `controller.quorum.voters`, against `node.id` and `process.roles`: a
/// controller of a quorum is one of its voters, a broker-only node is not
/// and needs them.
fn quorum_voters(c: &mut Config, p: &Props) -> Result<()> {
    let key = "controller.quorum.voters";
    let voters = parse_voters(p.get(key))?;
    let node_id = c.node_id;
    if c.roles.controller && !voters.is_empty() && !voters.iter().any(|v| v.id == node_id) {
        return Err(invalid(
            key,
            p.get(key),
            format!("this node (node.id={node_id}) has the controller role but is not a voter"),
        ));
    }
    if !c.roles.controller {
        // A broker-only node follows the quorum; it needs to know where
        // the voters are, and is not one of them.
        if voters.is_empty() {
            return Err(invalid(
                key,
                p.get(key),
                "a broker-only node (process.roles=broker) needs the controller voters, \
                 e.g. 1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093",
            ));
        }
        if voters.iter().any(|v| v.id == node_id) {
            return Err(invalid(
                key,
                p.get(key),
                format!(
                    "this node (node.id={node_id}) is listed as a voter, but process.roles \
                     has no controller role; a broker-only node is not a voter"
                ),
            ));
        }
    }
    c.quorum_voters = voters;
    Ok(())
}

/// `log.dirs` (else `log.dir`), and `metadata.log.dir` (else the first
/// log dir).
fn log_dirs(c: &mut Config, p: &Props) -> Result<()> {
    let dirs_v = if p.get("log.dirs").trim().is_empty() {
        p.get("log.dir").to_string()
    } else {
        p.get("log.dirs").to_string()
    };
    c.log_dirs = dirs_v
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if c.log_dirs.is_empty() {
        return Err(invalid("log.dirs", &dirs_v, "names no directory"));
    }
    c.metadata_log_dir = if p.get("metadata.log.dir").trim().is_empty() {
        c.log_dirs[0].clone()
    } else {
        PathBuf::from(p.get("metadata.log.dir").trim())
    };
    Ok(())
}

/// `log.roll.ms`, else `log.roll.hours` (not read when the first is set).
fn log_roll(c: &mut Config, p: &Props) -> Result<()> {
    c.log.roll_ms = match p.opt_num::<i64>("log.roll.ms", 1)? {
        Some(ms) => ms,
        None => p.num::<i64>("log.roll.hours", 1)? * 3_600_000,
    };
    Ok(())
}

/// `log.retention.ms`, else `.minutes`, else `.hours`, each read only if
/// those before are empty; any negative value means forever (-1).
fn log_retention(c: &mut Config, p: &Props) -> Result<()> {
    c.log.retention_ms = if let Some(ms) = p.opt_num::<i64>("log.retention.ms", -1)? {
        ms
    } else if let Some(m) = p.opt_num::<i64>("log.retention.minutes", -1)? {
        if m < 0 {
            -1
        } else {
            m * 60_000
        }
    } else {
        let h = p.num::<i64>("log.retention.hours", -1)?;
        if h < 0 {
            -1
        } else {
            h * 3_600_000
        }
    };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[&str]) -> Result<Config> {
        let ov: Vec<String> = pairs.iter().map(|s| s.to_string()).collect();
        Config::load(None, &ov)
    }

    #[test]
    fn defaults_are_a_single_node_on_9092() {
        let c = load(&[]).unwrap();
        assert_eq!(c.node_id, 1);
        assert!(c.roles.broker && c.roles.controller);
        assert_eq!(c.advertised_listeners[0].bind_addr(), "127.0.0.1:9092");
        assert_eq!(c.log_dirs, vec![PathBuf::from("./data")]);
        assert!(c.is_single_node());
        assert_eq!(c.message_max_bytes, 1048588);
        assert_eq!(c.log.retention_ms, 168 * 3_600_000);
    }

    #[test]
    fn properties_syntax() {
        let m = parse_properties(
            "# comment\n! also\nnode.id=3\nlog.dirs : /a,\\\n   /b\nnum.partitions 4\n\n",
        );
        assert_eq!(m["node.id"], "3");
        assert_eq!(m["log.dirs"], "/a,/b");
        assert_eq!(m["num.partitions"], "4");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load(&["no.such.key=1"]).unwrap_err().to_string();
        assert!(e.contains("'no.such.key'"), "{e}");
        let e = load(&["num.partitions=zero"]).unwrap_err().to_string();
        assert!(e.contains("'num.partitions'"), "{e}");
        let e = load(&["num.partitions=0"]).unwrap_err().to_string();
        assert!(e.contains("at least 1"), "{e}");
        let e = load(&["listeners=PLAINTEXT//x:1"]).unwrap_err().to_string();
        assert!(e.contains("'listeners'"), "{e}");
        let e = load(&["auto.create.topics.enable=yes"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("'auto.create.topics.enable'"), "{e}");
        assert!(matches!(load(&["oops"]), Err(ConfigError::BadOverride(_))));
    }

    #[test]
    fn kafka_style_cluster_file() {
        let c = load(&[
            "node.id=2",
            "listeners=PLAINTEXT://10.0.0.2:9092,CONTROLLER://10.0.0.2:9093",
            "controller.quorum.voters=1@10.0.0.1:9093,2@10.0.0.2:9093,3@10.0.0.3:9093",
            "log.dirs=/var/lib/runnel",
            "num.network.threads=3",
        ])
        .unwrap();
        assert_eq!(c.quorum_voters.len(), 3);
        assert_eq!(c.advertised_listeners.len(), 1);
        assert_eq!(c.advertised_listeners[0].name, "PLAINTEXT");
        assert!(!c.is_single_node());
        let e = load(&["node.id=4", "controller.quorum.voters=1@h:1"]).unwrap_err();
        assert!(e.to_string().contains("not a voter"));
    }

    #[test]
    fn a_broker_only_node_needs_the_voters_and_is_not_one() {
        let broker = [
            "node.id=4",
            "process.roles=broker",
            "listeners=PLAINTEXT://10.0.0.4:9092,CONTROLLER://10.0.0.4:9093",
        ];
        let c =
            load(&[&broker[..], &["controller.quorum.voters=1@h:1,2@h:2,3@h:3"]].concat()).unwrap();
        assert!(c.roles.broker && !c.roles.controller);
        assert!(!c.is_single_node());

        let e = load(&broker).unwrap_err().to_string();
        assert!(e.contains("'controller.quorum.voters'"), "{e}");
        assert!(e.contains("needs the controller voters"), "{e}");

        let e = load(&[&broker[..], &["controller.quorum.voters=1@h:1,4@h:4"]].concat())
            .unwrap_err()
            .to_string();
        assert!(e.contains("'controller.quorum.voters'"), "{e}");
        assert!(e.contains("node.id=4"), "{e}");
        assert!(e.contains("not a voter"), "{e}");
    }

    #[test]
    fn tls_listeners_read_their_settings_and_bad_ones_name_the_key() {
        let c = load(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093",
            "listener.name.ssl.ssl.keystore.location=/etc/runnel/server.pem",
        ])
        .unwrap();
        assert_eq!(c.listener_protocols["SSL"], security::SecurityProtocol::Ssl);
        assert_eq!(
            c.listener_protocols["PLAINTEXT"],
            security::SecurityProtocol::Plaintext
        );
        assert_eq!(c.tls.len(), 1);
        assert_eq!(c.tls["SSL"].client_auth, security::ClientAuth::None);

        // A listener named after a protocol needs no map entry.
        let c = load(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,SECURE://127.0.0.1:9093",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SECURE:SSL",
            "ssl.keystore.location=/a.pem",
        ])
        .unwrap();
        assert_eq!(
            c.listener_protocols["SECURE"],
            security::SecurityProtocol::Ssl
        );

        let e = load(&["listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ssl.keystore.location"), "{e}");
        let e = load(&[
            "listeners=PLAINTEXT://127.0.0.1:9092,SSL://127.0.0.1:9093",
            "ssl.keystore.location=/a.pem",
            "listener.name.sll.ssl.keystore.location=/b.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("'listener.name.sll.ssl.keystore.location'") && e.contains("SLL"),
            "{e}"
        );
        let e = load(&["listeners=PLAINTEXT://127.0.0.1:9092,SASL_SSL://127.0.0.1:9094"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("SASL_SSL") && e.contains("not support yet"),
            "{e}"
        );
        let e = load(&["listeners=PLAINTEXT://127.0.0.1:9092,ODD://127.0.0.1:9094"])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("'listener.security.protocol.map'") && e.contains("ODD"),
            "{e}"
        );
    }
}
