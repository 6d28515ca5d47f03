//! The `runnel` command line: `serve` (like kafka-server-start.sh),
//! `format` (like kafka-storage.sh format), `random-uuid`, and the admin
//! subcommands that mirror Kafka's scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use runnel::broker::{meta, Broker};
use runnel::config::Config;
use runnel::controller::liveness::{Heartbeat, HeartbeatReply};
use runnel::controller::records::Endpoint;
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
            .map(|v| {
                // The address becomes a URI authority: IPv6 needs brackets.
                let host = if v.host.contains(':') {
                    format!("[{}]", v.host)
                } else {
                    v.host.clone()
                };
                (v.id as u64, format!("{host}:{}", v.port))
            })
            .collect()
    };
    ControllerConfig {
        snapshot_interval: config.metadata_snapshot_interval_records,
        retained_after_snapshot: config.metadata_log_retained_records,
        ..ControllerConfig::new(
            config.node_id as u64,
            config.metadata_log_dir.join("__cluster_metadata-0"),
            voters,
        )
    }
}

async fn format(config: &Config, cluster_id: &str, ignore_formatted: bool) -> anyhow::Result<()> {
    meta::format(
        &all_dirs(config),
        cluster_id,
        config.node_id,
        ignore_formatted,
    )?;
    // A broker-only node keeps no metadata of its own (it follows the
    // controllers' stream), so meta.properties is all it needs.
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

    // In a quorum the peers must reach this node's Raft from its first
    // vote on, so the CONTROLLER listener is bound before Raft starts. A
    // broker-only node binds it too: followers of its partitions fetch
    // from it there.
    let rpc_socket = if single {
        None
    } else {
        Some(bind_controller_listener(&config).await?)
    };
    let controller = if config.roles.controller {
        Controller::start(controller_config(&config))
            .await
            .context("starting the controller")?
    } else {
        // A broker that is not a voter: no Raft, no metadata log; it
        // follows the committed metadata streamed by the voters.
        Controller::observe(config.node_id as u64, controller_config(&config).voters)
            .context("following the controller quorum")?
    };
    let (rpc_stop, rpc_stopped) = tokio::sync::oneshot::channel::<()>();
    let broker_slot: runnel::broker::grpc::BrokerSlot = Arc::default();
    let rpc_server = rpc_socket.map(|socket| {
        tokio::spawn(runnel::broker::grpc::serve(
            controller.clone(),
            broker_slot.clone(),
            socket,
            async move {
                let _ = rpc_stopped.await;
            },
        ))
    });
    if single {
        // Idempotent; also completes a bootstrap a crash interrupted
        // between initialising Raft and recording the cluster id.
        controller
            .bootstrap(&cluster_id)
            .await
            .context("bootstrapping the one-node quorum")?;
    } else {
        // `runnel format` initialised Raft; this only repeats it if a crash
        // came between writing meta.properties and that (the same voter
        // set on every node, which openraft allows).
        if controller.is_voter() {
            controller
                .initialize()
                .await
                .context("initialising the controller quorum")?;
        }
        until_quorum("check the cluster id", || {
            controller.ensure_cluster_id(&cluster_id)
        })
        .await?;
    }
    let image_cluster = controller.image().cluster_id.clone();
    if !image_cluster.is_empty() && image_cluster != cluster_id {
        bail!("the metadata log belongs to cluster {image_cluster}, but meta.properties says {cluster_id}");
    }

    if !config.roles.broker {
        // A controller-only node: a voter (and, when elected, the active
        // controller that fences brokers and balances leaders), with no
        // Kafka listener and no partitions.
        controller.start_fencing(Duration::from_millis(config.broker_session_timeout_ms));
        if config.auto_leader_rebalance_enable {
            controller.start_leader_rebalance(Duration::from_millis(
                config.leader_imbalance_check_interval_ms,
            ));
        }
        tracing::info!(
            node_id = config.node_id,
            %cluster_id,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Runnel controller started"
        );
        wait_for_signal().await;
        tracing::info!("shutting down");
        controller.shutdown().await?;
        if let Some(server) = rpc_server {
            let _ = rpc_stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(3), server).await;
        }
        tracing::info!("shut down cleanly");
        return Ok(());
    }

    // Open the partitions this node already holds before serving anything.
    let broker = Broker::new(config.clone());
    broker.apply_image(&controller.image()).await;
    let _ = broker_slot.set(broker.clone());
    tokio::spawn(broker.clone().follow(controller.subscribe()));
    tokio::spawn(broker.clone().maintain_isr(controller.clone()));
    broker.start_replica_fetchers(
        peer_resolver(&config, controller.clone()),
        runnel::rpc::Channels::default(),
    );
    // A node of a quorum waits for the quorum as long as it takes, like a
    // Kafka broker waiting for its controllers.
    let register_deadline = single.then(|| Instant::now() + Duration::from_secs(30));
    let broker_epoch = Arc::new(AtomicI64::new(
        register(&config, &controller, register_deadline).await?,
    ));
    controller.start_fencing(Duration::from_millis(config.broker_session_timeout_ms));
    if config.auto_leader_rebalance_enable {
        controller.start_leader_rebalance(Duration::from_millis(
            config.leader_imbalance_check_interval_ms,
        ));
    }
    tokio::spawn(heartbeats(
        config.clone(),
        controller.clone(),
        broker.clone(),
        broker_epoch.clone(),
    ));

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
    // Controlled shutdown: tell the controller first, so that this broker
    // is fenced (and its partitions can move) before it goes.
    let fence = MetadataCommand::FenceBroker {
        id: config.node_id,
        epoch: broker_epoch.load(Ordering::Acquire),
    };
    match tokio::time::timeout(Duration::from_secs(5), controller.propose(fence)).await {
        Ok(Ok(_)) => tracing::info!("fenced by the controller for shutdown"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "controlled shutdown: could not reach the controller")
        }
        Err(_) => tracing::warn!("controlled shutdown: the controller did not answer within 5 s"),
    }
    let _ = stop.send(());
    for l in listeners {
        let _ = l.await;
    }
    broker.shutdown().await;
    controller.shutdown().await?;
    if let Some(server) = rpc_server {
        let _ = rpc_stop.send(());
        match tokio::time::timeout(Duration::from_secs(3), server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "controller gRPC server failed"),
            Ok(Err(e)) => tracing::warn!(error = %e, "controller gRPC server task failed"),
            Err(_) => tracing::warn!("controller gRPC server did not stop within 3s"),
        }
    }
    tracing::info!("shut down cleanly");
    Ok(())
}

/// How this node finds a peer's node-to-node address: its
/// `controller.quorum.voters` entry (a voter), else its registered
/// controller-listener endpoint (a broker-only node).
fn peer_resolver(
    config: &Config,
    controller: Controller,
) -> runnel::replication::follower::Resolver {
    let voters = controller_config(config).voters;
    let names = config.controller_listener_names.clone();
    Arc::new(move |id: i32| {
        if let Some(addr) = voters.get(&(id as u64)) {
            return Some(addr.clone());
        }
        let image = controller.image();
        let b = image.brokers.get(&id)?;
        let e = b.endpoints.iter().find(|e| names.contains(&e.listener))?;
        // The address becomes a URI authority: IPv6 needs brackets.
        Some(if e.host.contains(':') {
            format!("[{}]:{}", e.host, e.port)
        } else {
            format!("{}:{}", e.host, e.port)
        })
    })
}

/// Binds the listener `controller.listener.names` names, for the gRPC
/// server that peers reach at this node's `controller.quorum.voters` entry.
async fn bind_controller_listener(config: &Config) -> anyhow::Result<tokio::net::TcpListener> {
    let Some(l) = config
        .listeners
        .iter()
        .find(|l| config.controller_listener_names.contains(&l.name))
    else {
        bail!(
            "controller.quorum.voters is set, but listeners has no controller listener (one named {}), e.g. CONTROLLER://host:9093",
            config.controller_listener_names.join(" or ")
        );
    };
    if let Some(me) = config.quorum_voters.iter().find(|v| v.id == config.node_id) {
        if me.port != l.port {
            tracing::warn!(listener = %l.name, port = l.port, voter_port = me.port, "the controller listener's port differs from this node's controller.quorum.voters entry; peers will not reach it");
        }
    }
    let addr = l.bind_addr();
    let socket = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (listener {})", l.name))?;
    tracing::info!(listener = %l.name, %addr, "listening for controller RPCs");
    Ok(socket)
}

/// Retries `op` for as long as the controller quorum is unavailable (no
/// leader, no majority), logging each wait; any other error ends it.
async fn until_quorum<F, Fut, T>(what: &str, mut op: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = runnel::controller::Result<T>>,
{
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e @ runnel::controller::Error::Unavailable(_)) => {
                tracing::info!(error = %e, "waiting for the controller quorum to {what}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot {what}")),
        }
    }
}

/// Registers this broker with the controller: (id, incarnation, endpoints).
/// Retries until `deadline`, or for as long as it takes without one.
async fn register(
    config: &Config,
    controller: &Controller,
    deadline: Option<Instant>,
) -> anyhow::Result<i64> {
    // Peers reach this node's replication service on its controller
    // listener: register it too unless it is advertised already. Kafka
    // clients never see it (Metadata picks the client's own listener).
    let controller_listener = config.listeners.iter().find(|l| {
        config.controller_listener_names.contains(&l.name)
            && !config.advertised_listeners.iter().any(|a| a.name == l.name)
    });
    let endpoints: Vec<Endpoint> = config
        .advertised_listeners
        .iter()
        .chain(controller_listener)
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
    loop {
        match controller.propose(cmd.clone()).await {
            Ok(MetadataResponse::BrokerRegistered { broker_epoch }) => {
                tracing::info!(broker_epoch, "registered with the controller");
                return Ok(broker_epoch);
            }
            Ok(other) => bail!("broker registration refused: {other:?}"),
            Err(e) if deadline.is_none_or(|d| Instant::now() < d) => {
                tracing::info!(error = %e, "waiting for the controller quorum to register");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => return Err(e).context("registering with the controller"),
        }
    }
}

/// Heartbeats to the active controller every `broker.heartbeat.interval.ms`
/// for as long as the node runs; registers again if the controller no
/// longer knows this incarnation.
async fn heartbeats(
    config: Arc<Config>,
    controller: Controller,
    broker: Arc<Broker>,
    shared_epoch: Arc<AtomicI64>,
) {
    let mut epoch = shared_epoch.load(Ordering::Acquire);
    let mut tick =
        tokio::time::interval(Duration::from_millis(config.broker_heartbeat_interval_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut fenced = false;
    loop {
        tick.tick().await;
        let hb = Heartbeat {
            broker_id: config.node_id,
            broker_epoch: epoch,
            applied: broker.applied_index(),
        };
        match controller.heartbeat(hb).await {
            Ok(HeartbeatReply::Ok { fenced: now_fenced }) => {
                if now_fenced != fenced {
                    tracing::info!(fenced = now_fenced, "broker fencing changed");
                    fenced = now_fenced;
                }
            }
            Ok(HeartbeatReply::StaleEpoch) => {
                tracing::warn!(
                    epoch,
                    "the controller no longer knows this registration; registering again"
                );
                match register(
                    &config,
                    &controller,
                    Some(Instant::now() + Duration::from_secs(10)),
                )
                .await
                {
                    Ok(e) => {
                        epoch = e;
                        shared_epoch.store(e, Ordering::Release);
                    }
                    Err(e) => tracing::warn!(error = %e, "registering again failed"),
                }
            }
            Ok(HeartbeatReply::NotLeader { .. }) => {
                tracing::debug!("no controller leader for the heartbeat")
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
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
