//! The `runnel` command line: `serve` (like kafka-server-start.sh),
//! `format` (like kafka-storage.sh format), `random-uuid`, and the admin
//! subcommands that mirror Kafka's scripts.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use runnel::broker::lifecycle::{self, Registration};
use runnel::broker::{meta, Broker};
use runnel::config::Config;
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

/// Where `runnel serve` with no file serves `/metrics`, `/health` and
/// `/ready` unless `metrics.listener` says otherwise.
const DEFAULT_METRICS_LISTENER: &str = "127.0.0.1:9644";

fn main() -> anyhow::Result<()> {
    use runnel::telemetry::{self, Format};
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command.unwrap_or(Command::Serve {
        file: None,
        overrides: vec![],
    }) {
        Command::Serve { file, overrides } => {
            let config = Config::load(file.as_deref(), &overrides)?;
            let format = Format::parse(&config.log_format).unwrap_or(Format::Text);
            telemetry::init(Format::from_env_or(format));
            config.log_ignored_keys();
            // The zero-setup node serves its metrics on loopback by default;
            // with a file (or an explicit key) it is the file's choice.
            let metrics = match config.metrics_listener {
                Some(addr) => Some(MetricsListener::Configured(addr)),
                None if file.is_none()
                    && !overrides
                        .iter()
                        .any(|o| o.trim_start().starts_with("metrics.listener")) =>
                {
                    Some(MetricsListener::Default(DEFAULT_METRICS_LISTENER.parse()?))
                }
                None => None,
            };
            rt.block_on(serve(Arc::new(config), metrics))
        }
        cmd => {
            // `format` starts Raft only to write the first entries; its
            // votes to peers that are not up yet are no news.
            let filter = match cmd {
                Command::Format { .. } => "info,openraft=off",
                _ => telemetry::DEFAULT_FILTER,
            };
            telemetry::init_with(Format::from_env_or(Format::Text), filter);
            rt.block_on(run(cmd))
        }
    }
}

/// The commands other than `serve`.
async fn run(cmd: Command) -> anyhow::Result<()> {
    match cmd {
        Command::Serve { .. } => unreachable!("serve is run by main"),
        Command::Format {
            cluster_id,
            file,
            config,
            overrides,
            ignore_formatted,
        } => {
            let config = Config::load(file.or(config).as_deref(), &overrides)?;
            config.log_ignored_keys();
            format(&config, &cluster_id, ignore_formatted).await
        }
        Command::RandomUuid => {
            println!("{}", meta::random_cluster_id());
            Ok(())
        }
        Command::Admin(cmd) => runnel::admin::cli::run(cmd).await,
    }
}

/// Where the HTTP listener goes: a configured address must bind (or
/// startup fails, naming it); the default is skipped with a warning when
/// taken (another node on this machine has it).
enum MetricsListener {
    Configured(std::net::SocketAddr),
    Default(std::net::SocketAddr),
}

/// Installs the metrics recorder and starts the HTTP listener.
async fn start_metrics(
    listener: Option<MetricsListener>,
    readiness: Arc<runnel::metrics::Readiness>,
) -> anyhow::Result<()> {
    let handle = runnel::metrics::install_recorder()?;
    match listener {
        None => {}
        Some(MetricsListener::Configured(addr)) => {
            runnel::metrics::serve_http(addr, handle, readiness)
                .await
                .context("metrics.listener")?;
        }
        Some(MetricsListener::Default(addr)) => {
            if let Err(e) = runnel::metrics::serve_http(addr, handle, readiness).await {
                tracing::warn!(error = %e, "no metrics listener (set metrics.listener to choose one)");
            }
        }
    }
    Ok(())
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
        election_timeout_ms: config.controller_quorum_election_timeout_ms,
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

async fn serve(config: Arc<Config>, metrics: Option<MetricsListener>) -> anyhow::Result<()> {
    let started = Instant::now();
    raise_open_file_limit();
    // Up before anything waits for the quorum: /health answers at once,
    // /ready says "starting" until the node serves.
    let readiness = Arc::new(runnel::metrics::Readiness::default());
    start_metrics(metrics, readiness.clone()).await?;
    format_from_env(&config).await?;
    let cluster_id = ensure_cluster_id(&config)?;
    let quorum = Quorum::start(&config, &cluster_id).await?;
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if !config.roles.broker {
        readiness.set(ready_check(&config, &quorum.controller, &stopping));
        return serve_controller_only(&config, quorum, &cluster_id, started, &stopping).await;
    }

    // One batcher for the node's small metadata writes: offset commits and
    // its leaders' ISR changes.
    let batcher = runnel::controller::batcher::Batcher::start(quorum.controller.clone());
    let (broker, registration) = start_broker(&config, &quorum, &batcher).await?;
    let listeners = Listeners::start(
        &config,
        Ctx {
            config: config.clone(),
            listener: String::new(),
            broker: broker.clone(),
            controller: quorum.controller.clone(),
            groups: runnel::group::Coordinator::start(config.group_initial_rebalance_delay_ms),
            batcher,
            listing: Default::default(),
        },
    )
    .await?;
    readiness.set(ready_check(&config, &quorum.controller, &stopping));
    tracing::info!(
        node_id = config.node_id,
        %cluster_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Runnel started"
    );

    wait_for_signal().await;
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down");
    // In this order:
    // 1. Controlled shutdown: fenced first (having stopped heartbeating
    //    and following, see fence_for_shutdown), this broker's leaderships
    //    and ISR places move while it still answers, so clients are told
    //    NOT_LEADER_OR_FOLLOWER and go to the new leaders, and acks=-1
    //    produces waiting on partitions it led end with that answer
    //    instead of waiting out their timeout.
    // 2. The Kafka listeners stop reading, answer every request already
    //    read, and close (bounded by server::SHUTDOWN_GRACE). After 1 no
    //    request has a leadership of this broker's to wait for.
    // 3. The partitions close, now that no client request is appending to
    //    them (or, unless the grace ran out, reading from them).
    // 4. The controller, then the gRPC server: peers reach this node's Raft
    //    voter (and its replication service) until the controller is down.
    registration.fence_for_shutdown().await;
    listeners.drain().await;
    broker.shutdown().await;
    quorum.shutdown().await
}

/// The environment variable that formats a node on its first start, as in
/// the Apache Kafka container image.
const CLUSTER_ID_ENV: &str = "CLUSTER_ID";

/// With `CLUSTER_ID` set, formats the node's unformatted directories with
/// it (as `runnel format --ignore-formatted` would) before it starts: a
/// container's first start. Directories formatted for another cluster are
/// still refused by `ensure_cluster_id`.
async fn format_from_env(config: &Config) -> anyhow::Result<()> {
    let Some(id) = std::env::var(CLUSTER_ID_ENV).ok().filter(|s| !s.is_empty()) else {
        return Ok(());
    };
    let mut unformatted = false;
    for d in all_dirs(config) {
        unformatted |= meta::read(&d)?.is_none();
    }
    if unformatted && !config.is_single_node() {
        tracing::info!(cluster_id = %id, "formatting the data directories from {CLUSTER_ID_ENV}");
        format(config, &id, true).await?;
    }
    Ok(())
}

/// The cluster id in meta.properties of every data directory; a single
/// node formats its directories with one (`cluster.id`, else a new one)
/// on its first start.
fn ensure_cluster_id(config: &Config) -> anyhow::Result<String> {
    let fresh_id = config
        .cluster_id
        .clone()
        .or_else(|| std::env::var(CLUSTER_ID_ENV).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(meta::random_cluster_id);
    Ok(meta::ensure(
        &all_dirs(config),
        config.node_id,
        config.is_single_node().then_some(fresh_id.as_str()),
    )?)
}

/// A controller-only node: a voter (and, when elected, the active
/// controller that fences brokers and balances leaders), with no Kafka
/// listener and no partitions.
/// Raises the soft limit on open files to the hard limit, as a JVM does
/// for Kafka: every segment of every partition holds its log file open,
/// so a broker with thousands of partitions needs more than a shell's
/// default of 1,024. Logs the limit it runs with.
fn raise_open_file_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            lim.rlim_cur = before;
        }
    }
    tracing::info!(
        limit = lim.rlim_cur,
        before,
        "open-file limit (each partition holds one file per segment open)"
    );
}

/// What `/ready` checks once the node is up: not shutting down, a Raft
/// leader known, and, on a broker, this broker registered and unfenced in
/// the metadata it has applied (the controller unfences a broker that
/// heartbeats, and this broker has applied that record).
fn ready_check(
    config: &Config,
    controller: &Controller,
    stopping: &Arc<std::sync::atomic::AtomicBool>,
) -> impl Fn() -> Result<(), String> + Send + Sync + 'static {
    let (controller, stopping) = (controller.clone(), stopping.clone());
    let (node_id, broker) = (config.node_id, config.roles.broker);
    move || {
        if stopping.load(std::sync::atomic::Ordering::Relaxed) {
            return Err("shutting down".into());
        }
        if controller.leader_id().is_none() {
            return Err("no active controller".into());
        }
        if broker {
            match controller.image().brokers.get(&node_id) {
                None => return Err("not registered".into()),
                Some(b) if b.fenced => return Err("fenced".into()),
                Some(_) => {}
            }
        }
        Ok(())
    }
}

async fn serve_controller_only(
    config: &Config,
    quorum: Quorum,
    cluster_id: &str,
    started: Instant,
    stopping: &std::sync::atomic::AtomicBool,
) -> anyhow::Result<()> {
    start_controller_duties(config, &quorum.controller);
    tracing::info!(
        node_id = config.node_id,
        %cluster_id,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "Runnel controller started"
    );
    wait_for_signal().await;
    stopping.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!("shutting down");
    quorum.shutdown().await
}

/// The node's side of the controller quorum: the controller (a voter, or
/// an observer on a broker-only node) and the gRPC server on the
/// CONTROLLER listener that carries Raft, broker RPCs and replication.
struct Quorum {
    controller: Controller,
    /// Where the gRPC server finds the broker, once there is one.
    broker_slot: runnel::broker::grpc::BrokerSlot,
    /// None on a single node, which has no peers.
    rpc: Option<RpcServer>,
}

struct RpcServer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Quorum {
    /// Starts the controller and the gRPC server, and joins the quorum:
    /// bootstraps a single node, or checks the cluster id with the quorum.
    async fn start(config: &Config, cluster_id: &str) -> anyhow::Result<Quorum> {
        let single = config.is_single_node();
        // In a quorum the peers must reach this node's Raft from its first
        // vote on, so the CONTROLLER listener is bound before Raft starts.
        // A broker-only node binds it too: followers of its partitions
        // fetch from it there.
        let rpc_socket = if single {
            None
        } else {
            Some(bind_controller_listener(config).await?)
        };
        let controller = if config.roles.controller {
            Controller::start(controller_config(config))
                .await
                .context("starting the controller")?
        } else {
            // A broker that is not a voter: no Raft, no metadata log; it
            // follows the committed metadata streamed by the voters.
            Controller::observe(config.node_id as u64, controller_config(config).voters)
                .context("following the controller quorum")?
        };
        let broker_slot = runnel::broker::grpc::BrokerSlot::default();
        let rpc = rpc_socket.map(|socket| {
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let task = tokio::spawn(runnel::broker::grpc::serve(
                controller.clone(),
                broker_slot.clone(),
                socket,
                async move {
                    let _ = stopped.await;
                },
            ));
            RpcServer { stop, task }
        });
        let quorum = Quorum {
            controller,
            broker_slot,
            rpc,
        };
        quorum.join(single, cluster_id).await?;
        Ok(quorum)
    }

    async fn join(&self, single: bool, cluster_id: &str) -> anyhow::Result<()> {
        let controller = &self.controller;
        if single {
            // Idempotent; also completes a bootstrap a crash interrupted
            // between initialising Raft and recording the cluster id.
            controller
                .bootstrap(cluster_id)
                .await
                .context("bootstrapping the one-node quorum")?;
        } else {
            // `runnel format` initialised Raft; this only repeats it if a
            // crash came between writing meta.properties and that (the same
            // voter set on every node, which openraft allows).
            if controller.is_voter() {
                controller
                    .initialize()
                    .await
                    .context("initialising the controller quorum")?;
            }
            lifecycle::until_quorum("check the cluster id", || {
                controller.ensure_cluster_id(cluster_id)
            })
            .await?;
        }
        let image_cluster = controller.image().cluster_id.clone();
        if !image_cluster.is_empty() && image_cluster != cluster_id {
            bail!("the metadata log belongs to cluster {image_cluster}, but meta.properties says {cluster_id}");
        }
        Ok(())
    }

    /// Stops the controller, then the gRPC server (waiting 3 s at most),
    /// and logs the clean end.
    async fn shutdown(self) -> anyhow::Result<()> {
        self.controller.shutdown().await?;
        if let Some(rpc) = self.rpc {
            let _ = rpc.stop.send(());
            match tokio::time::timeout(Duration::from_secs(3), rpc.task).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::warn!(error = %e, "controller gRPC server failed"),
                Ok(Err(e)) => tracing::warn!(error = %e, "controller gRPC server task failed"),
                Err(_) => tracing::warn!("controller gRPC server did not stop within 3s"),
            }
        }
        tracing::info!("shut down cleanly");
        Ok(())
    }
}

/// What the active controller does besides Raft: fence silent brokers and,
/// if enabled, move leaderships back to preferred replicas. Every voter
/// runs them; they act only while it leads.
fn start_controller_duties(config: &Config, controller: &Controller) {
    controller.start_fencing(
        Duration::from_millis(config.broker_session_timeout_ms),
        Duration::from_millis(config.broker_session_grace_ms),
    );
    if config.auto_leader_rebalance_enable {
        controller.start_leader_rebalance(Duration::from_millis(
            config.leader_imbalance_check_interval_ms,
        ));
    }
}

/// Opens the partitions this node already holds, follows the metadata, and
/// registers with the controller (heartbeating from then on); starts the
/// controller's duties once registered.
async fn start_broker(
    config: &Arc<Config>,
    quorum: &Quorum,
    batcher: &runnel::controller::batcher::Batcher,
) -> anyhow::Result<(Arc<Broker>, Registration)> {
    let controller = &quorum.controller;
    // Open the partitions this node already holds before serving anything.
    let broker = Broker::new(config.clone());
    broker.apply_image(&controller.image()).await;
    let _ = quorum.broker_slot.set(broker.clone());
    tokio::spawn(broker.clone().follow(controller.subscribe()));
    tokio::spawn(broker.clone().maintain_isr(batcher.clone()));
    tokio::spawn(broker.clone().enforce_retention());
    tokio::spawn(broker.clone().run_cleaner());
    broker.start_replica_fetchers(
        peer_resolver(config, controller.clone()),
        runnel::rpc::Channels::default(),
    );
    // A node of a quorum waits for the quorum as long as it takes, like a
    // Kafka broker waiting for its controllers.
    let register_deadline = config
        .is_single_node()
        .then(|| Instant::now() + Duration::from_secs(30));
    let registration = Registration::start(
        config.clone(),
        controller.clone(),
        broker.clone(),
        register_deadline,
    )
    .await?;
    start_controller_duties(config, controller);
    Ok((broker, registration))
}

/// The Kafka listeners (`listeners` minus the controller's), and the
/// signal that stops them.
struct Listeners {
    stop: tokio::sync::broadcast::Sender<()>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Listeners {
    /// Binds every client listener (a port clash fails startup) and serves it.
    async fn start(config: &Config, ctx: Ctx) -> anyhow::Result<Listeners> {
        let (stop, _) = tokio::sync::broadcast::channel(1);
        let mut tasks = Vec::new();
        for l in config.client_listeners() {
            let addr = l.bind_addr();
            let socket = server::bind(&addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (listener {})", l.name))?;
            let tls = match config.tls.get(&l.name) {
                Some(settings) => {
                    let acceptor = runnel::security::tls::Acceptor::new(settings.clone())?;
                    acceptor.watch();
                    Some(acceptor)
                }
                None => None,
            };
            let protocol = config
                .listener_protocols
                .get(&l.name)
                .copied()
                .unwrap_or(runnel::security::SecurityProtocol::Plaintext);
            tracing::info!(listener = %l.name, %addr, %protocol, "listening for Kafka clients");
            let ctx = Arc::new(Ctx {
                listener: l.name.clone(),
                ..ctx.clone()
            });
            tasks.push(tokio::spawn(server::serve(
                ctx,
                socket,
                tls,
                stop.subscribe(),
            )));
        }
        Ok(Listeners { stop, tasks })
    }

    /// Stops accepting and reading; returns once every connection has
    /// answered what it read and closed (see `server::serve`).
    async fn drain(self) {
        let _ = self.stop.send(());
        for t in self.tasks {
            let _ = t.await;
        }
    }
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
