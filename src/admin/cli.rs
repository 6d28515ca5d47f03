//! The admin subcommands of the `runnel` binary. Flags, output and exit
//! codes follow the Kafka scripts they mirror, so that scripts written for
//! `kafka-topics.sh` and friends keep working with `runnel topics` etc.
//!
//! `run` prints everything itself. When a command fails in a way the Kafka
//! script reports with its own message and exit status 1, `run` prints that
//! message and exits the process with status 1, so the caller's own error
//! printing cannot change the output scripts parse.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use clap::{ArgGroup, Args, Subcommand};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::records::Compression;

use super::client::{BrokerInfo, Client, ClientConfig, NewTopic};
use super::conn::{BrokerVersions, Connection};
use super::consumer::{self, ConsumeOptions, Formatter, StartAt};
use super::get_offsets;
use super::groups_cli::{self, ConsumerGroupsArgs};
use super::perf::{self, ConsumerPerfArgs, ProducerPerfArgs};
use super::producer::{self, LineReader, ProduceOptions};
use super::topics::{self, TopicsError};

/// Admin subcommands, flattened into the `runnel` command line.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Create, delete, describe, or change a topic (as kafka-topics.sh).
    Topics(TopicsArgs),
    /// Send each line of standard input as a record (as kafka-console-producer.sh).
    ConsoleProducer(ConsoleProducerArgs),
    /// Print records of a topic to standard output (as kafka-console-consumer.sh).
    ConsoleConsumer(ConsoleConsumerArgs),
    /// Print the offsets of topic partitions (as kafka-get-offsets.sh).
    GetOffsets(GetOffsetsArgs),
    /// Print the API versions every broker supports (as kafka-broker-api-versions.sh).
    BrokerApiVersions(BrokerApiVersionsArgs),
    /// Describe the controller quorum (as kafka-metadata-quorum.sh).
    MetadataQuorum(MetadataQuorumArgs),
    /// List, describe, reset or delete consumer groups (as kafka-consumer-groups.sh).
    ConsumerGroups(ConsumerGroupsArgs),
    /// Measure produce throughput and latency (as kafka-producer-perf-test.sh).
    ProducerPerfTest(ProducerPerfArgs),
    /// Measure consume throughput (as kafka-consumer-perf-test.sh).
    ConsumerPerfTest(ConsumerPerfArgs),
    /// Describe or change topic and broker configs (as kafka-configs.sh).
    Configs(super::configs::ConfigsArgs),
    /// Delete records below given offsets (as kafka-delete-records.sh).
    DeleteRecords(super::delete_records::DeleteRecordsArgs),
    /// Ask a node's HTTP listener for /health (or /ready); exit 0 on HTTP 200 (for container healthchecks).
    Healthcheck(super::healthcheck::HealthcheckArgs),
}

/// `kafka-metadata-quorum.sh` options: `--bootstrap-server X describe --status|--replication`.
#[derive(Debug, Args)]
pub struct MetadataQuorumArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    #[command(subcommand)]
    pub action: QuorumAction,
}

#[derive(Debug, Subcommand)]
pub enum QuorumAction {
    /// Describe the metadata quorum.
    #[command(group(ArgGroup::new("what").required(true).args(["status", "replication"])))]
    Describe {
        /// Leader, epoch, high watermark, lag and voters.
        #[arg(long)]
        status: bool,
        /// Each voter's log end offset, lag and timestamps.
        #[arg(long)]
        replication: bool,
    },
}

/// `kafka-topics.sh` options.
#[derive(Debug, Args)]
#[command(group(
    ArgGroup::new("action")
        .required(true)
        .args(["create", "list", "describe", "alter", "delete"])
))]
pub struct TopicsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// Create a new topic.
    #[arg(long)]
    pub create: bool,
    /// List all available topics.
    #[arg(long)]
    pub list: bool,
    /// List details for the given topics.
    #[arg(long)]
    pub describe: bool,
    /// Alter the number of partitions of a topic.
    #[arg(long)]
    pub alter: bool,
    /// Delete a topic.
    #[arg(long)]
    pub delete: bool,
    /// The topic to create, alter, describe or delete; also a regular
    /// expression (commas separate alternatives) except with --create.
    #[arg(long)]
    pub topic: Option<String>,
    /// The number of partitions for the topic being created or altered.
    #[arg(long)]
    pub partitions: Option<i32>,
    /// The replication factor for each partition of the topic being created.
    #[arg(long)]
    pub replication_factor: Option<i32>,
    /// A topic configuration override for the topic being created (repeatable).
    #[arg(long = "config", value_name = "NAME=VALUE")]
    pub config: Vec<String>,
    /// With --create: do nothing if the topic already exists.
    #[arg(long)]
    pub if_not_exists: bool,
    /// With --alter, --delete or --describe: do nothing if the topic does not exist.
    #[arg(long)]
    pub if_exists: bool,
    /// Exclude internal topics when listing or describing.
    #[arg(long)]
    pub exclude_internal: bool,
}

/// `kafka-console-producer.sh` options.
#[derive(Debug, Args)]
pub struct ConsoleProducerArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// The topic to produce to.
    #[arg(long)]
    pub topic: String,
    /// Line reader property: parse.key, key.separator, parse.headers,
    /// headers.delimiter, headers.separator, headers.key.separator,
    /// ignore.error, null.marker (repeatable).
    #[arg(
        long = "property",
        visible_alias = "reader-property",
        value_name = "KEY=VALUE"
    )]
    pub property: Vec<String>,
    /// Producer property: acks, linger.ms, batch.size, compression.type (repeatable).
    #[arg(
        long = "producer-property",
        visible_alias = "command-property",
        value_name = "KEY=VALUE"
    )]
    pub producer_property: Vec<String>,
    /// The required acks of produce requests: all, -1, 0 or 1.
    #[arg(long, value_name = "ACKS", allow_hyphen_values = true)]
    pub request_required_acks: Option<String>,
    /// Send each line synchronously, one request per line.
    #[arg(long)]
    pub sync: bool,
    /// Compression codec: none, gzip, snappy, lz4 or zstd (gzip if given without a value).
    #[arg(long, value_name = "CODEC", num_args = 0..=1, default_missing_value = "gzip")]
    pub compression_codec: Option<String>,
    /// Bytes buffered per partition before a send.
    #[arg(long, value_name = "BYTES")]
    pub batch_size: Option<usize>,
    /// Milliseconds to wait for more lines before sending a batch (linger).
    #[arg(long, value_name = "MS")]
    pub timeout: Option<u64>,
}

/// `kafka-console-consumer.sh` options.
#[derive(Debug, Args)]
pub struct ConsoleConsumerArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// The topic to consume.
    #[arg(long)]
    pub topic: String,
    /// Start with the earliest record rather than the latest.
    #[arg(long)]
    pub from_beginning: bool,
    /// Consume only this partition.
    #[arg(long)]
    pub partition: Option<i32>,
    /// With --partition: earliest, latest, or an offset to start from.
    #[arg(long, allow_hyphen_values = true)]
    pub offset: Option<String>,
    /// Exit after this many records.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_messages: Option<i64>,
    /// Exit when no record arrives for this many milliseconds.
    #[arg(long, value_name = "MS", allow_negative_numbers = true)]
    pub timeout_ms: Option<i64>,
    /// Formatter property: print.key, print.value, print.partition,
    /// print.offset, print.headers, print.timestamp, key.separator,
    /// line.separator, headers.separator, null.literal (repeatable).
    #[arg(
        long = "property",
        visible_alias = "formatter-property",
        value_name = "KEY=VALUE"
    )]
    pub property: Vec<String>,
    /// Consumer property; only auto.offset.reset is used (repeatable).
    #[arg(
        long = "consumer-property",
        visible_alias = "command-property",
        value_name = "KEY=VALUE"
    )]
    pub consumer_property: Vec<String>,
}

/// `kafka-get-offsets.sh` options.
#[derive(Debug, Args)]
pub struct GetOffsetsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
    /// Topic name or regular expression; all topics if absent.
    #[arg(long)]
    pub topic: Option<String>,
    /// Comma-separated partition ids; all partitions if absent.
    #[arg(long, value_name = "IDS")]
    pub partitions: Option<String>,
    /// -1 or latest, -2 or earliest, -3 or max-timestamp, or a timestamp in ms.
    #[arg(long, default_value = "latest", allow_hyphen_values = true)]
    pub time: String,
    /// Leave internal topics out.
    #[arg(long)]
    pub exclude_internal_topics: bool,
}

/// `kafka-broker-api-versions.sh` options.
#[derive(Debug, Args)]
pub struct BrokerApiVersionsArgs {
    /// The Kafka server(s) to connect to, HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "SERVERS")]
    pub bootstrap_server: String,
}

/// Runs one admin subcommand. See the module comment for exit behaviour.
pub async fn run(cmd: AdminCommand) -> anyhow::Result<()> {
    let code = match cmd {
        AdminCommand::Topics(args) => run_topics(args).await,
        AdminCommand::ConsoleProducer(args) => run_producer(args).await,
        AdminCommand::ConsoleConsumer(args) => run_consumer(args).await,
        AdminCommand::GetOffsets(args) => run_get_offsets(args).await,
        AdminCommand::BrokerApiVersions(args) => run_api_versions(args).await,
        AdminCommand::MetadataQuorum(args) => run_metadata_quorum(args).await,
        AdminCommand::ConsumerGroups(args) => groups_cli::run(args).await,
        AdminCommand::Configs(args) => super::configs::run(args).await,
        AdminCommand::DeleteRecords(args) => super::delete_records::run(args).await,
        AdminCommand::Healthcheck(args) => {
            tokio::task::spawn_blocking(move || super::healthcheck::run(args))
                .await
                .unwrap_or(1)
        }
        // librdkafka's calls block: keep them off the async workers.
        AdminCommand::ProducerPerfTest(args) => {
            tokio::task::spawn_blocking(move || perf::run_producer(args))
                .await
                .unwrap_or(1)
        }
        AdminCommand::ConsumerPerfTest(args) => {
            tokio::task::spawn_blocking(move || perf::run_consumer(args))
                .await
                .unwrap_or(1)
        }
    };
    let _ = std::io::stdout().flush();
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

fn client_config(bootstrap: &str, client_id: &str) -> Result<ClientConfig, String> {
    let mut config = ClientConfig::from_bootstrap(bootstrap).map_err(|e| e.to_string())?;
    config.conn.client_id = client_id.to_owned();
    Ok(config)
}

/// Kafka's `parseKeyValueArgs`: split at the first '='; no '=' means an
/// empty value.
pub(crate) fn parse_key_values(items: &[String]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|s| match s.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (s.clone(), String::new()),
        })
        .collect()
}

/// Writes to stdout. A closed pipe (`| head`) quietly drops the rest
/// instead of panicking the way `print!` does.
fn emit(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// An argument error: message on stderr, status 1 (CommandLineUtils).
fn usage_error(message: &str) -> i32 {
    eprintln!("{message}");
    1
}

/// What `TopicCommand` would do with these arguments before connecting.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TopicsPlan {
    Create(NewTopic, bool),
    List,
    Describe,
    Alter(i32),
    Delete,
}

/// Checks option combinations as `TopicCommandOptions.checkArgs` does.
pub(crate) fn plan_topics(args: &TopicsArgs) -> Result<TopicsPlan, String> {
    let only = |allowed: bool, name: &str, with: &str| -> Result<(), String> {
        if allowed {
            Ok(())
        } else {
            Err(format!(
                "Option \"[{name}]\" can't be used with option \"[{with}]\""
            ))
        }
    };
    let action = if args.create {
        "create"
    } else if args.list {
        "list"
    } else if args.describe {
        "describe"
    } else if args.alter {
        "alter"
    } else {
        "delete"
    };
    if args.replication_factor.is_some() {
        only(args.create, "replication-factor", action)?;
    }
    if args.partitions.is_some() {
        only(args.create || args.alter, "partitions", action)?;
    }
    if !args.config.is_empty() {
        only(args.create, "config", action)?;
    }
    if args.if_not_exists {
        only(args.create, "if-not-exists", action)?;
    }
    if args.if_exists {
        only(
            args.alter || args.delete || args.describe,
            "if-exists",
            action,
        )?;
    }
    if (args.create || args.alter || args.delete) && args.topic.is_none() {
        return Err("Missing required argument \"[topic]\"".to_owned());
    }
    if args.create {
        let name = args.topic.clone().unwrap_or_default();
        let partitions = match args.partitions {
            Some(p) if p < 1 => return Err("The partitions must be greater than 0".to_owned()),
            Some(p) => p,
            None => -1,
        };
        let replication_factor = match args.replication_factor {
            Some(r) if !(1..=i32::from(i16::MAX)).contains(&r) => {
                return Err(format!(
                    "The replication factor must be between 1 and {} inclusive",
                    i16::MAX
                ))
            }
            Some(r) => r as i16,
            None => -1,
        };
        let configs = topics::parse_configs(&args.config)?;
        return Ok(TopicsPlan::Create(
            NewTopic {
                name,
                partitions,
                replication_factor,
                configs,
            },
            args.if_not_exists,
        ));
    }
    if args.alter {
        return match args.partitions {
            Some(p) => Ok(TopicsPlan::Alter(p)),
            None => Err("Missing required argument \"[partitions]\"".to_owned()),
        };
    }
    Ok(if args.list {
        TopicsPlan::List
    } else if args.describe {
        TopicsPlan::Describe
    } else {
        TopicsPlan::Delete
    })
}

async fn run_topics(args: TopicsArgs) -> i32 {
    let plan = match plan_topics(&args) {
        Ok(p) => p,
        Err(e) => return usage_error(&e),
    };
    let report = |e: TopicsError| match e {
        TopicsError::Argument(m) => usage_error(&m),
        TopicsError::Command(m) => {
            emit(&format!("Error while executing topic command : {m}\n"));
            1
        }
    };
    let config = match client_config(&args.bootstrap_server, "adminclient-1") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => return report(e.into()),
    };
    let topic = args.topic.as_deref();
    let mut out = String::new();
    let result = match plan {
        TopicsPlan::Create(new_topic, if_not_exists) => {
            topics::create(&mut client, &new_topic, if_not_exists, &mut out).await
        }
        TopicsPlan::List => topics::list(&mut client, topic, args.exclude_internal, &mut out).await,
        TopicsPlan::Describe => {
            topics::describe(
                &mut client,
                topic,
                args.if_exists,
                args.exclude_internal,
                &mut out,
            )
            .await
        }
        TopicsPlan::Alter(p) => {
            topics::alter(&mut client, topic, p, args.if_exists, args.exclude_internal).await
        }
        TopicsPlan::Delete => {
            topics::delete(&mut client, topic, args.if_exists, args.exclude_internal).await
        }
    };
    emit(&out);
    match result {
        Ok(()) => 0,
        Err(e) => report(e),
    }
}

/// Producer settings from flags and `--producer-property`; explicit flags
/// win, as Kafka's `maybeMergeOptions` does.
pub(crate) fn producer_options(args: &ConsoleProducerArgs) -> Result<ProduceOptions, String> {
    let props: BTreeMap<String, String> = parse_key_values(&args.producer_property)
        .into_iter()
        .collect();
    let acks_text = args
        .request_required_acks
        .clone()
        .or_else(|| props.get("acks").cloned())
        .unwrap_or_else(|| "-1".to_owned());
    let acks = match acks_text.trim() {
        "all" | "-1" => -1,
        "0" => 0,
        "1" => 1,
        other => {
            return Err(format!(
                "Invalid value {other} for configuration acks: String must be one of: all, -1, 0, 1"
            ))
        }
    };
    let linger_ms = match (args.timeout, props.get("linger.ms")) {
        (Some(t), _) => t,
        (None, Some(v)) => v
            .trim()
            .parse()
            .map_err(|_| format!("Invalid value {v} for configuration linger.ms"))?,
        // A few ms batches piped input without making typing feel slow.
        (None, None) => 5,
    };
    let batch_size = match (args.batch_size, props.get("batch.size")) {
        (Some(b), _) => b,
        (None, Some(v)) => v
            .trim()
            .parse()
            .map_err(|_| format!("Invalid value {v} for configuration batch.size"))?,
        (None, None) => 16_384,
    };
    let codec = args
        .compression_codec
        .clone()
        .or_else(|| props.get("compression.type").cloned())
        .unwrap_or_else(|| "none".to_owned());
    let compression = match codec.trim() {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => {
            return Err(format!(
                "Invalid value {other} for configuration compression.type: String must be one of: none, gzip, snappy, lz4, zstd"
            ))
        }
    };
    Ok(ProduceOptions {
        topic: args.topic.clone(),
        acks,
        linger: Duration::from_millis(linger_ms),
        batch_size: batch_size.max(1),
        compression,
        sync: args.sync,
    })
}

async fn run_producer(args: ConsoleProducerArgs) -> i32 {
    let opts = match producer_options(&args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    let reader = LineReader::from_properties(&parse_key_values(&args.property));
    let config = match client_config(&args.bootstrap_server, "console-producer") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR {e}");
            return 1;
        }
    };
    match producer::produce(&mut client, &opts, &reader, tokio::io::stdin()).await {
        Ok(_) => 0,
        Err(e) => {
            eprintln!("ERROR {e}");
            1
        }
    }
}

/// Consumer settings, validated as `ConsoleConsumerOptions` does.
pub(crate) fn consumer_options(args: &ConsoleConsumerArgs) -> Result<ConsumeOptions, String> {
    if args.partition.is_some() {
        if args.from_beginning && args.offset.is_some() {
            return Err(
                "Options from-beginning and offset cannot be specified together.".to_owned(),
            );
        }
    } else if args.offset.is_some() {
        return Err("The partition is required when offset is specified.".to_owned());
    }
    let start = match args.offset.as_deref() {
        Some(o) => match o.to_ascii_lowercase().as_str() {
            "earliest" => StartAt::Earliest,
            "latest" => StartAt::Latest,
            _ => match o.parse::<i64>() {
                Ok(n) if n >= 0 => StartAt::Offset(n),
                _ => {
                    return Err(format!(
                        "The provided offset value '{o}' is incorrect. Valid values are 'earliest', 'latest', or a non-negative long."
                    ))
                }
            },
        },
        None if args.from_beginning => StartAt::Earliest,
        None => StartAt::Latest,
    };
    let consumer_props: BTreeMap<String, String> = parse_key_values(&args.consumer_property)
        .into_iter()
        .collect();
    let reset_to_earliest = match consumer_props.get("auto.offset.reset").map(String::as_str) {
        Some("earliest") => true,
        Some("latest") if args.from_beginning => {
            return Err("Can't simultaneously specify --from-beginning and 'auto.offset.reset=latest', please remove one option".to_owned())
        }
        Some("latest") | Some("none") => false,
        Some(other) => {
            return Err(format!(
                "Invalid value {other} for configuration auto.offset.reset: String must be one of: latest, earliest, none"
            ))
        }
        None => args.from_beginning,
    };
    Ok(ConsumeOptions {
        topic: args.topic.clone(),
        partition: args.partition,
        start,
        reset_to_earliest,
        // Kafka: -1 (or anything negative) means no limit.
        max_messages: args.max_messages.and_then(|m| u64::try_from(m).ok()),
        timeout: args
            .timeout_ms
            .and_then(|t| u64::try_from(t).ok())
            .map(Duration::from_millis),
    })
}

async fn run_consumer(args: ConsoleConsumerArgs) -> i32 {
    let opts = match consumer_options(&args) {
        Ok(o) => o,
        Err(e) => return usage_error(&e),
    };
    let formatter = Formatter::from_properties(&parse_key_values(&args.property));
    let config = match client_config(&args.bootstrap_server, "console-consumer") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ERROR Unknown error when running consumer: {e}");
            return 1;
        }
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = consumer::consume(&mut client, &opts, &formatter, &mut out).await;
    let _ = out.flush();
    match result {
        Ok(n) => {
            eprintln!("Processed a total of {n} messages");
            0
        }
        Err(e) => {
            eprintln!("ERROR Error processing message, terminating consumer process: {e}");
            eprintln!("Processed a total of 0 messages");
            1
        }
    }
}

async fn run_get_offsets(args: GetOffsetsArgs) -> i32 {
    let fail = |m: &str| {
        eprintln!("Error occurred: {m}");
        1
    };
    let spec = match get_offsets::parse_time(&args.time) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let partitions = match get_offsets::parse_partitions(args.partitions.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    let config = match client_config(&args.bootstrap_server, "GetOffsetShell") {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let mut client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string()),
    };
    match get_offsets::get_offsets(
        &mut client,
        args.topic.as_deref(),
        &partitions,
        spec,
        args.exclude_internal_topics,
    )
    .await
    {
        Ok(lines) => {
            emit(&lines.iter().map(|l| format!("{l}\n")).collect::<String>());
            0
        }
        Err(e) => fail(&e),
    }
}

/// The APIs Kafka's client knows for a broker listener; the ones a broker
/// does not list are shown as UNSUPPORTED, as `NodeApiVersions` does.
const CLIENT_APIS: &[i16] = &[
    0, 1, 2, 3, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28,
    29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 55,
    57, 60, 61, 64, 65, 66, 68, 69, 71, 72, 74, 75, 80, 81,
];

/// One broker's block of `kafka-broker-api-versions.sh` output.
pub(crate) fn format_api_versions(
    broker: &BrokerInfo,
    versions: &BTreeMap<i16, BrokerVersions>,
) -> String {
    let mut entries: BTreeMap<i16, String> = BTreeMap::new();
    for (&key, v) in versions {
        let range = if v.min == v.max {
            v.min.to_string()
        } else {
            format!("{} to {}", v.min, v.max)
        };
        let text = match ApiKey::try_from(key) {
            Ok(api) => {
                let ours = api.valid_versions();
                let usable = if ours.max < v.min {
                    " [unusable: node too new]".to_owned()
                } else if v.max < ours.min {
                    " [unusable: node too old]".to_owned()
                } else {
                    format!(" [usable: {}]", ours.max.min(v.max))
                };
                format!("{api:?}({key}): {range}{usable}")
            }
            Err(()) => format!("UNKNOWN({key}): {range}"),
        };
        entries.insert(key, text);
    }
    for &key in CLIENT_APIS {
        if let Ok(api) = ApiKey::try_from(key) {
            entries
                .entry(key)
                .or_insert_with(|| format!("{api:?}({key}): UNSUPPORTED"));
        }
    }
    let body = entries.into_values().collect::<Vec<_>>().join(",\n\t");
    format!(
        "{} (id: {} rack: {}) -> (\n\t{body}\n)\n",
        broker.addr(),
        broker.id,
        broker.rack.as_deref().unwrap_or("null")
    )
}

async fn run_metadata_quorum(args: MetadataQuorumArgs) -> i32 {
    let config = match client_config(&args.bootstrap_server, "admin-1") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let described = async {
        let mut client = Client::connect(config).await?;
        let part = client.describe_quorum().await?;
        Ok::<_, super::Error>((client.cluster_id().unwrap_or_default().to_owned(), part))
    }
    .await;
    let (cluster_id, part) = match described {
        Ok(x) => x,
        Err(e) => {
            eprintln!("Error while describing the metadata quorum: {e}");
            return 1;
        }
    };
    let QuorumAction::Describe { status, .. } = args.action;
    if status {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        emit(&super::quorum::format_status(&cluster_id, &part, now));
    } else {
        emit(&super::quorum::format_replication(&part));
    }
    0
}

async fn run_api_versions(args: BrokerApiVersionsArgs) -> i32 {
    let config = match client_config(&args.bootstrap_server, "admin-1") {
        Ok(c) => c,
        Err(e) => return usage_error(&e),
    };
    let conn_opts = config.conn.clone();
    let client = match Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("Error while getting broker api versions: {e}");
            return 1;
        }
    };
    for broker in client.brokers().values() {
        match Connection::connect(&broker.addr(), &conn_opts).await {
            Ok(conn) => emit(&format_api_versions(broker, conn.broker_versions())),
            Err(e) => emit(&format!(
                "{} (id: {} rack: {}) -> ERROR: {e}\n",
                broker.addr(),
                broker.id,
                broker.rack.as_deref().unwrap_or("null")
            )),
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(subcommand)]
        cmd: AdminCommand,
    }

    fn parse(args: &[&str]) -> Result<AdminCommand, clap::Error> {
        let mut full = vec!["runnel"];
        full.extend_from_slice(args);
        TestCli::try_parse_from(full).map(|c| c.cmd)
    }

    fn topics(args: &[&str]) -> TopicsArgs {
        let mut full = vec!["topics", "--bootstrap-server", "localhost:9092"];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            AdminCommand::Topics(t) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn subcommand_names_match_the_kafka_scripts() {
        for name in [
            "topics",
            "console-producer",
            "console-consumer",
            "get-offsets",
            "broker-api-versions",
        ] {
            let err = parse(&[name]).unwrap_err();
            // Missing required flags, not an unknown subcommand.
            assert_ne!(
                err.kind(),
                clap::error::ErrorKind::InvalidSubcommand,
                "{name}"
            );
        }
    }

    #[test]
    fn topics_create_with_configs() {
        let args = topics(&[
            "--create",
            "--topic",
            "t1",
            "--partitions",
            "3",
            "--replication-factor",
            "1",
            "--config",
            "retention.ms=1000",
            "--config",
            "cleanup.policy=compact",
            "--if-not-exists",
        ]);
        assert_eq!(
            plan_topics(&args).unwrap(),
            TopicsPlan::Create(
                NewTopic {
                    name: "t1".into(),
                    partitions: 3,
                    replication_factor: 1,
                    configs: vec![
                        ("retention.ms".into(), "1000".into()),
                        ("cleanup.policy".into(), "compact".into())
                    ],
                },
                true
            )
        );
    }

    #[test]
    fn topics_create_defaults_come_from_the_broker() {
        let args = topics(&["--create", "--topic", "t"]);
        match plan_topics(&args).unwrap() {
            TopicsPlan::Create(t, false) => {
                assert_eq!((t.partitions, t.replication_factor), (-1, -1));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topics_needs_exactly_one_action() {
        assert!(parse(&["topics", "--bootstrap-server", "h:1"]).is_err());
        assert!(parse(&[
            "topics",
            "--bootstrap-server",
            "h:1",
            "--list",
            "--describe"
        ])
        .is_err());
    }

    #[test]
    fn topics_rejects_options_of_other_actions() {
        assert!(plan_topics(&topics(&["--list", "--partitions", "3"])).is_err());
        assert!(plan_topics(&topics(&["--describe", "--if-not-exists"])).is_err());
        assert!(plan_topics(&topics(&["--create", "--topic", "t", "--if-exists"])).is_err());
        assert!(plan_topics(&topics(&[
            "--alter",
            "--topic",
            "t",
            "--replication-factor",
            "2"
        ]))
        .is_err());
        assert_eq!(
            plan_topics(&topics(&["--alter", "--topic", "t"])).unwrap_err(),
            "Missing required argument \"[partitions]\""
        );
        assert_eq!(
            plan_topics(&topics(&["--delete"])).unwrap_err(),
            "Missing required argument \"[topic]\""
        );
        assert_eq!(
            plan_topics(&topics(&["--create", "--topic", "t", "--partitions", "0"])).unwrap_err(),
            "The partitions must be greater than 0"
        );
        assert!(plan_topics(&topics(&["--create", "--topic", "t", "--config", "x"])).is_err());
        assert_eq!(
            plan_topics(&topics(&["--alter", "--topic", "t", "--partitions", "4"])).unwrap(),
            TopicsPlan::Alter(4)
        );
    }

    fn producer(args: &[&str]) -> ConsoleProducerArgs {
        let mut full = vec![
            "console-producer",
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
        ];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            AdminCommand::ConsoleProducer(p) => p,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn producer_acks_and_properties() {
        assert_eq!(producer_options(&producer(&[])).unwrap().acks, -1);
        assert_eq!(
            producer_options(&producer(&["--producer-property", "acks=all"]))
                .unwrap()
                .acks,
            -1
        );
        assert_eq!(
            producer_options(&producer(&["--producer-property", "acks=0"]))
                .unwrap()
                .acks,
            0
        );
        // The explicit flag wins over --producer-property.
        assert_eq!(
            producer_options(&producer(&[
                "--producer-property",
                "acks=0",
                "--request-required-acks",
                "1"
            ]))
            .unwrap()
            .acks,
            1
        );
        assert_eq!(
            producer_options(&producer(&["--request-required-acks", "-1"]))
                .unwrap()
                .acks,
            -1
        );
        assert!(producer_options(&producer(&["--request-required-acks", "2"])).is_err());
        let p = producer(&[
            "--property",
            "parse.key=true",
            "--property",
            "key.separator=:",
        ]);
        let reader = LineReader::from_properties(&parse_key_values(&p.property));
        assert!(reader.parse_key);
        assert_eq!(reader.key_separator, ":");
        let o = producer_options(&producer(&["--compression-codec"])).unwrap();
        assert_eq!(o.compression, Compression::Gzip);
        let o = producer_options(&producer(&["--producer-property", "linger.ms=50"])).unwrap();
        assert_eq!(o.linger, Duration::from_millis(50));
    }

    fn consumer(args: &[&str]) -> ConsoleConsumerArgs {
        let mut full = vec![
            "console-consumer",
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
        ];
        full.extend_from_slice(args);
        match parse(&full).unwrap() {
            AdminCommand::ConsoleConsumer(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn consumer_start_positions() {
        assert_eq!(
            consumer_options(&consumer(&[])).unwrap().start,
            StartAt::Latest
        );
        let o = consumer_options(&consumer(&["--from-beginning", "--max-messages", "3"])).unwrap();
        assert_eq!(o.start, StartAt::Earliest);
        assert_eq!(o.max_messages, Some(3));
        assert!(o.reset_to_earliest);
        let o = consumer_options(&consumer(&["--partition", "1", "--offset", "5"])).unwrap();
        assert_eq!((o.partition, o.start), (Some(1), StartAt::Offset(5)));
        let o = consumer_options(&consumer(&["--partition", "1", "--offset", "EARLIEST"])).unwrap();
        assert_eq!(o.start, StartAt::Earliest);
        assert_eq!(
            consumer_options(&consumer(&["--offset", "5"])).unwrap_err(),
            "The partition is required when offset is specified."
        );
        assert!(consumer_options(&consumer(&[
            "--partition",
            "0",
            "--offset",
            "1",
            "--from-beginning"
        ]))
        .is_err());
        assert!(consumer_options(&consumer(&["--partition", "0", "--offset", "-3"])).is_err());
        let o =
            consumer_options(&consumer(&["--max-messages", "-1", "--timeout-ms", "250"])).unwrap();
        assert_eq!(o.max_messages, None);
        assert_eq!(o.timeout, Some(Duration::from_millis(250)));
    }

    #[test]
    fn get_offsets_accepts_negative_time() {
        let cmd = parse(&[
            "get-offsets",
            "--bootstrap-server",
            "h:1",
            "--topic",
            "t",
            "--time",
            "-2",
            "--partitions",
            "0,1",
        ])
        .unwrap();
        match cmd {
            AdminCommand::GetOffsets(a) => {
                assert_eq!(a.time, "-2");
                assert_eq!(a.partitions.as_deref(), Some("0,1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn key_values_split_at_first_equals() {
        assert_eq!(
            parse_key_values(&["a=b=c".into(), "flag".into()]),
            vec![("a".into(), "b=c".into()), ("flag".into(), String::new())]
        );
    }

    #[test]
    fn api_versions_block_matches_kafka() {
        let broker = BrokerInfo {
            id: 1,
            host: "localhost".into(),
            port: 9092,
            rack: None,
        };
        let versions = BTreeMap::from([
            (0, BrokerVersions { min: 3, max: 11 }),
            (1, BrokerVersions { min: 4, max: 4 }),
            (18, BrokerVersions { min: 0, max: 99 }),
            (999, BrokerVersions { min: 0, max: 1 }),
        ]);
        let text = format_api_versions(&broker, &versions);
        assert!(text.starts_with("localhost:9092 (id: 1 rack: null) -> (\n\tProduce(0): 3 to 11 [usable: 11],\n\tFetch(1): 4 [usable: 4],\n\tListOffsets(2): UNSUPPORTED,\n"), "{text}");
        assert!(
            text.contains("\tApiVersions(18): 0 to 99 [usable: 4],\n"),
            "{text}"
        );
        assert!(text.ends_with(",\n\tUNKNOWN(999): 0 to 1\n)\n"), "{text}");
    }
}
