//! The `runnel` command line: `serve` (like kafka-server-start.sh),
//! `format` (like kafka-storage.sh format), `random-uuid`, and the admin
//! subcommands that mirror Kafka's scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use runnel::broker::{meta, Broker};
use runnel::config::Config;
use runnel::controller::image::Endpoint;
use runnel::controller::records::{MetadataCommand, MetadataResponse};
use runnel::controller::{Controller, ControllerConfig};
use runnel::server::{self, Ctx};

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "A replicated, Kafka-compatible message broker"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Start a node (broker, controller or both) from a server.properties file.
    Serve {
        /// A server.properties-style file; without one, a single node on 127.0.0.1:9092 with data in ./data.
        file: Option<PathBuf>,
        /// Set a configuration key, overriding the file (repeatable).
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
    },
    /// Prepare the data directories of a node for a cluster (like kafka-storage.sh format).
    Format {
        /// The cluster id, as printed by `runnel random-uuid`.
        #[arg(long, short = 't')]
        cluster_id: String,
        /// The same configuration file `serve` reads.
        file: Option<PathBuf>,
        /// Kafka-style alternative to the positional file.
        #[arg(long = "config", short = 'c', conflicts_with = "file")]
        config: Option<PathBuf>,
        #[arg(long = "override", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Leave directories that are already formatted for this cluster and node as they are.
        #[arg(long, short = 'g')]
        ignore_formatted: bool,
    },
    /// Print a new random cluster id.
    RandomUuid,
    #[command(flatten)]
    Admin(runnel::admin::cli::AdminCommand),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    runnel::telemetry::init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command.unwrap_or(Command::Serve {
        file: None,
        overrides: vec![],
    }) {
        Command::Serve { file, overrides } => {
            let config = Config::load(file.as_deref(), &overrides)?;
            rt.block_on(serve(Arc::new(config)))
        }
        Command::Format {
            cluster_id,
            file,
            config,
            overrides,
            ignore_formatted,
        } => {
            let config = Config::load(file.or(config).as_deref(), &overrides)?;
            rt.block_on(format(&config, &cluster_id, ignore_formatted))
        }
        Command::RandomUuid => {
            println!("{}", meta::random_cluster_id());
            Ok(())
        }
        Command::Admin(cmd) => rt.block_on(runnel::admin::cli::run(cmd)),
    }
}

fn all_dirs(config: &Config) -> Vec<PathBuf> {
    let mut dirs = config.log_dirs.clone();
    if !dirs.contains(&config.metadata_log_dir) {
        dirs.push(config.metadata_log_dir.clone());
    }
    dirs
}

fn controller_config(config: &Config) -> ControllerConfig {
    let controller_listener = config
        .listeners
        .iter()
        .find(|l| config.controller_listener_names.contains(&l.name));
    let voters: BTreeMap<u64, String> = if config.quorum_voters.is_empty() {
        let addr = controller_listener
            .map(|l| format!("{}:{}", l.host, l.port))
            .unwrap_or_default();
        BTreeMap::from([(config.node_id as u64, addr)])
    } else {
        config
            .quorum_voters
            .iter()
            .map(|v| (v.id as u64, format!("{}:{}", v.host, v.port)))
            .collect()
    };
    ControllerConfig {
        node_id: config.node_id as u64,
        dir: config.metadata_log_dir.join("__cluster_metadata-0"),
        voters,
    }
}

async fn format(config: &Config, cluster_id: &str, ignore_formatted: bool) -> anyhow::Result<()> {
    meta::format(
        &all_dirs(config),
        cluster_id,
        config.node_id,
        ignore_formatted,
    )?;
    if config.roles.controller {
        let controller = Controller::start(controller_config(config)).await?;
        if !controller.is_initialized().await? {
            controller.bootstrap(cluster_id).await?;
        }
        controller.shutdown().await?;
    }
    for d in all_dirs(config) {
        println!("Formatting {} with cluster id {cluster_id}", d.display());
    }
    Ok(())
}

async fn serve(config: Arc<Config>) -> anyhow::Result<()> {
    let started = Instant::now();
    runnel::metrics::install(config.metrics_listener)?;
    if !config.roles.controller {
        bail!("a broker-only node (process.roles=broker) needs a controller quorum, which arrives with cluster support; use process.roles=broker,controller");
    }
    let single = config.is_single_node();
    let fresh_id = config
        .cluster_id
        .clone()
        .unwrap_or_else(meta::random_cluster_id);
    let cluster_id = meta::ensure(
        &all_dirs(&config),
        config.node_id,
        single.then_some(fresh_id.as_str()),
    )?;

    let controller = Controller::start(controller_config(&config))
        .await
        .context("starting the controller")?;
    if single {
        // Idempotent; also completes a bootstrap a crash interrupted
        // between initialising Raft and recording the cluster id.
        controller
            .bootstrap(&cluster_id)
            .await
            .context("bootstrapping the one-node quorum")?;
    }
    let image_cluster = controller.image().cluster_id.clone();
    if !image_cluster.is_empty() && image_cluster != cluster_id {
        bail!("the metadata log belongs to cluster {image_cluster}, but meta.properties says {cluster_id}");
    }

    // Open the partitions this node already holds before serving anything.
    let broker = Broker::new(config.clone());
    broker.apply_image(&controller.image()).await;
    tokio::spawn(broker.clone().follow(controller.subscribe()));
    register(&config, &controller).await?;

    let ctx = Arc::new(Ctx {
        config: config.clone(),
        broker: broker.clone(),
        controller: controller.clone(),
        groups: runnel::group::Coordinator::start(config.group_initial_rebalance_delay_ms),
    });
    let (stop, _) = tokio::sync::broadcast::channel(1);
    let mut listeners = Vec::new();
    for l in config.client_listeners() {
        let addr = l.bind_addr();
        let socket = server::bind(&addr)
            .await
            .with_context(|| format!("cannot listen on {addr} (listener {})", l.name))?;
        tracing::info!(listener = %l.name, %addr, "listening for Kafka clients");
        listeners.push(tokio::spawn(server::serve(
            ctx.clone(),
            socket,
            stop.subscribe(),
        )));
    }
    tracing::info!(
        node_id = config.node_id,
        %cluster_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Runnel started"
    );

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(());
    for l in listeners {
        let _ = l.await;
    }
    broker.shutdown().await;
    controller.shutdown().await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

/// Registers this broker with the controller: (id, incarnation, endpoints).
async fn register(config: &Config, controller: &Controller) -> anyhow::Result<()> {
    let endpoints: Vec<Endpoint> = config
        .advertised_listeners
        .iter()
        .map(|l| Endpoint {
            listener: l.name.clone(),
            host: if l.host.is_empty() {
                "localhost".into()
            } else {
                l.host.clone()
            },
            port: l.port,
            security_protocol: config
                .security_protocol_map
                .get(&l.name)
                .cloned()
                .unwrap_or_else(|| "PLAINTEXT".into()),
        })
        .collect();
    let cmd = MetadataCommand::RegisterBroker {
        id: config.node_id,
        incarnation_id: uuid::Uuid::new_v4(),
        endpoints,
        rack: config.rack.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match controller.propose(cmd.clone()).await {
            Ok(MetadataResponse::BrokerRegistered { broker_epoch }) => {
                tracing::info!(broker_epoch, "registered with the controller");
                return Ok(());
            }
            Ok(other) => bail!("broker registration refused: {other:?}"),
            Err(e) if Instant::now() < deadline => {
                tracing::info!(error = %e, "waiting for the controller quorum to register");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("registering with the controller"),
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot listen for SIGTERM");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
