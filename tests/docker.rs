//! The container image and the three-node compose cluster of `deploy/`, as
//! a user runs them (issue 14): the image is built offline from the binary
//! under test with `deploy/docker/build-image.sh` (FROM scratch), the
//! cluster is `deploy/docker-compose.yml` brought up with `docker compose`
//! (or `docker-compose` v1), and a real client (librdkafka) on the host
//! produces acks=all to an RF=3, min.insync.replicas=2 topic through the
//! published ports while the test
//!
//! * A: `docker kill`s the partition's leader, and later `docker start`s it;
//! * B: on a fresh cluster, cuts the leader off the network
//!   (`docker network disconnect`) and later connects it again with the
//!   same address and DNS name.
//!
//! The partition is one whose leader is also the active controller, so that
//! the failure takes both away at once. Just before the failure the
//! followers are paused for a second, so that the old leader holds a tail
//! of records nobody else has (none of them acknowledged: acks=all waits
//! for the ISR); the test checks on disk (`docker cp` of the partition
//! directory) that it does.
//!
//! Each time the producer must go on being acknowledged by a new leader,
//! every acknowledged record must be read back at its acknowledged offset
//! (duplicates are tolerated: the producer is not idempotent), and the old
//! leader must come back into the ISR with its tail cut away: the three
//! replicas' log files must hold the same batches. Its return must not move
//! the partition's leadership (the leader epoch stays that of the new
//! leader, as in Kafka; only the ISR grows). Then a preferred leader
//! election makes the old leader lead again, and reading the partition from
//! it must give exactly what the new leader served.
//!
//! Before that, each cluster is checked for what clients get told: a client
//! on the host is given the EXTERNAL addresses (localhost:published port)
//! and one inside the compose network the INTERNAL ones (nodeN:19092).
//!
//! The two phases run one after the other in one test, so that they do not
//! compete for the machine, and print the image size, the stripped binary's
//! size and the time from `compose up` to the first acknowledged write.
//! Without Docker the test fails, saying so; it is not skipped.
//!
//! `cargo test --release --test docker -- --nocapture`; with
//! `RUNNEL_DOCKER_KEEP=1` a failed run leaves its cluster up.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::cluster::metadata_view;
use common::disk::{batches_on_disk, DiskBatch};
use common::partition::{consume_all, list_latest, partition_state, PState};
use common::producer::{BgProducer, Report, Spec};
use common::{eventually, free_port, output_text, runnel_ok, RawConn};
use kafka_protocol::messages::elect_leaders_request::TopicPartitions;
use kafka_protocol::messages::offset_for_leader_epoch_request::{
    OffsetForLeaderPartition, OffsetForLeaderTopic,
};
use kafka_protocol::messages::{
    BrokerId, ElectLeadersRequest, ElectLeadersResponse, MetadataRequest, MetadataResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

/// The node ids of the compose file.
const NODES: [i32; 3] = [1, 2, 3];
/// The target for the image.
const IMAGE_LIMIT_BYTES: u64 = 40_000_000;
/// From `compose up` until every node's healthcheck (/ready) passes.
const HEALTHY_WITHIN: Duration = Duration::from_secs(120);
/// For a new leader to acknowledge writes after the old one is gone.
const FAILOVER_WITHIN: Duration = Duration::from_secs(60);
/// For a node that is back to rejoin the ISR.
const REJOIN_WITHIN: Duration = Duration::from_secs(90);
/// Any single docker command.
const DOCKER_TIMEOUT_S: u32 = 180;

#[test]
fn compose_cluster_survives_a_killed_and_a_partitioned_leader() {
    let started = Instant::now();
    let docker = Docker::detect();
    let image = Image::build(&docker);
    let kill = phase_kill(&docker, &image);
    let partition = phase_partition(&docker, &image);
    step!(
        "summary: image {} = {} bytes ({:.1} MB), stripped binary {} bytes ({:.1} MB), \
         built in {:.1} s",
        image.tag,
        image.bytes,
        mb(image.bytes),
        image.binary_bytes,
        mb(image.binary_bytes),
        image.build_time.as_secs_f64()
    );
    for (name, t) in [
        (Failure::Kill.name(), &kill),
        (Failure::Partition.name(), &partition),
    ] {
        step!(
            "summary: {name}: compose up -> all healthy {:.1} s, -> first acknowledged write \
             {:.1} s; leader lost -> first new acknowledgement {:.1} s; back -> in the ISR {:.1} s",
            t.up_to_healthy.as_secs_f64(),
            t.up_to_first_ack.as_secs_f64(),
            t.failover.as_secs_f64(),
            t.rejoin.as_secs_f64()
        );
    }
    step!(
        "summary: whole test {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let problems: Vec<&String> = kill.problems.iter().chain(&partition.problems).collect();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// What a phase measured.
struct Timings {
    up_to_healthy: Duration,
    up_to_first_ack: Duration,
    failover: Duration,
    rejoin: Duration,
    /// Checks that failed without stopping the phase.
    problems: Vec<String>,
}

/// How a phase loses the leader.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Failure {
    /// `docker kill`, later `docker start`.
    Kill,
    /// `docker network disconnect`, later `docker network connect` with the
    /// same address and name.
    Partition,
}

impl Failure {
    fn name(self) -> &'static str {
        match self {
            Failure::Kill => "kill",
            Failure::Partition => "network partition",
        }
    }
}

fn phase_kill(docker: &Docker, image: &Image) -> Timings {
    step!("== phase A: docker kill of a partition leader, then docker start");
    phase(docker, image, Failure::Kill)
}

fn phase_partition(docker: &Docker, image: &Image) -> Timings {
    step!("== phase B: a partition leader cut off the network, then connected again");
    phase(docker, image, Failure::Partition)
}

/// One phase on a fresh cluster: acks=all writes from the host go on
/// through the loss of the partition's leader; the old leader, once back,
/// is cut back to the new leader's log and rejoins the ISR; nothing
/// acknowledged is lost.
fn phase(docker: &Docker, image: &Image, failure: Failure) -> Timings {
    let (name, topic) = match failure {
        Failure::Kill => ("kill", "docker-kill"),
        Failure::Partition => ("part", "docker-partition"),
    };
    let mut c = Compose::up(docker, image, name);
    let up_to_healthy = c.wait_healthy(&NODES, HEALTHY_WITHIN, "every node healthy");
    c.check_advertised_addresses();
    let tp = c.create_topic(topic);
    let spec = Spec {
        partitions: vec![tp.p],
        ..Spec::continuous(topic, name)
    };
    let producer = BgProducer::start(&c.bootstrap(), spec);
    producer.wait_more_acks(200, FAILOVER_WITHIN, "acks=all writes from the host");
    let up_to_first_ack = c.first_ack(&producer);

    let st = c.wait_full_isr(&tp, Duration::from_secs(30), "the full ISR");
    let victim = st.leader;
    let followers = others(victim);
    let (network, ip) = c.network_of(victim);
    // A tail that only the leader has, so that there is something to cut
    // back when it returns: its followers are paused for a moment while the
    // producer goes on. None of it can be acknowledged (acks=all waits for
    // the ISR, which still holds the paused followers).
    for &f in &followers {
        docker.ok(&["pause", c.container(f)]);
    }
    step!("paused followers {followers:?} for 1 s; the leader appends on its own");
    std::thread::sleep(Duration::from_secs(1));
    let before = producer.max_acked_offset();
    let t = Instant::now();
    match failure {
        Failure::Kill => {
            docker.ok(&["kill", c.container(victim)]);
            step!(
                "killed node {victim} (the leader, epoch {}) at acknowledged offset {before}",
                st.leader_epoch
            );
        }
        Failure::Partition => {
            docker.ok(&["network", "disconnect", &network, c.container(victim)]);
            step!(
                "disconnected node {victim} (the leader, epoch {}, {ip}) from {network} at \
                 acknowledged offset {before}",
                st.leader_epoch
            );
        }
    }
    for &f in &followers {
        docker.ok(&["unpause", c.container(f)]);
    }
    step!("unpaused followers {followers:?}");
    if failure == Failure::Partition {
        // The published port goes through that network: with the container
        // off it, the host should be refused. Say what actually happens.
        match partition_state(&c.addr(victim), topic, tp.p) {
            Ok(s) => step!(
                "the host still reaches the isolated node on {}: it says {s:?}",
                c.addr(victim)
            ),
            Err(e) => step!(
                "the host cannot reach the isolated node on {}: {e}",
                c.addr(victim)
            ),
        }
    }
    producer.wait_acks_since(t, 200, FAILOVER_WITHIN, "acks from a new leader");
    let new = c.wait_partition(
        &followers,
        &tp,
        Duration::from_secs(30),
        "a new leader without the old one",
        |s| s.leader > 0 && s.leader != victim && !s.isr.contains(&victim),
    );
    let (failover, new_start) = c.failover_time(&producer, t, &tp, st.leader_epoch, &new);
    if failure == Failure::Partition {
        // What the isolated node believes, asked inside its container (its
        // own listener still answers on loopback).
        let own = docker.run_for(
            20,
            &[
                "exec",
                c.container(victim),
                "/usr/local/bin/runnel",
                "topics",
                "--bootstrap-server",
                "127.0.0.1:19092",
                "--describe",
                "--topic",
                topic,
            ],
        );
        step!(
            "the isolated node's own view: {}{}",
            String::from_utf8_lossy(&own.stdout).trim(),
            String::from_utf8_lossy(&own.stderr).trim()
        );
    }
    let old_end = log_end(&c.batches_on_disk(victim, &tp));
    assert!(
        old_end > new_start,
        "node {victim}'s log ends at {old_end} on disk, not past offset {new_start} where \
         node {} started leading: no tail to cut back, the test did not set up what it checks",
        new.leader
    );
    step!(
        "node {victim}'s log on disk ends at {old_end}: offsets {new_start}..{old_end} are \
         its own, the new leader wrote other records there"
    );

    let t = Instant::now();
    match failure {
        Failure::Kill => {
            docker.ok(&["start", c.container(victim)]);
            step!("started node {victim} again (same volume)");
        }
        Failure::Partition => {
            let alias = format!("node{victim}");
            docker.ok(&[
                "network",
                "connect",
                "--ip",
                &ip,
                "--alias",
                &alias,
                &network,
                c.container(victim),
            ]);
            step!("connected node {victim} to {network} again as {alias} ({ip})");
        }
    }
    c.wait_healthy(&[victim], HEALTHY_WITHIN, "the old leader healthy again");
    let back = c.wait_full_isr(&tp, REJOIN_WITHIN, "the old leader back in the ISR");
    // Its return is a follower catching up: the ISR grows (the partition
    // epoch), the leadership stays where it is (the leader epoch), as in
    // Kafka. Checked at the end, so that the rest of the phase still runs.
    let mut problems = Vec::new();
    if (back.leader, back.leader_epoch) != (new.leader, new.leader_epoch) {
        let fencing: Vec<String> = NODES
            .iter()
            .flat_map(|&n| {
                c.logs(n, 100_000)
                    .lines()
                    .filter(|l| l.contains("broker fenc") || l.contains("fencing changed"))
                    .map(|l| format!("node{n}: {}", l.trim()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let problem = format!(
            "{}: when node {victim} came back, {tp}'s leadership moved from node {} epoch {} \
             to node {} epoch {}, though only a follower rejoined. What the nodes logged about \
             fencing:\n{}",
            failure.name(),
            new.leader,
            new.leader_epoch,
            back.leader,
            back.leader_epoch,
            fencing.join("\n")
        );
        step!("PROBLEM: {problem}");
        problems.push(problem);
    }
    let rejoin = t.elapsed();
    step!(
        "node {victim} is back in the ISR {:.1} s after it came back",
        rejoin.as_secs_f64()
    );
    c.show_truncation(victim);
    producer.wait_more_acks(100, FAILOVER_WITHIN, "writes after the rejoin");
    let report = producer.finish();
    let read = c.check_nothing_lost(&tp, &report);
    c.check_replicas_identical(&tp);
    c.check_old_leader_log(&tp, victim, &read);
    Timings {
        up_to_healthy,
        up_to_first_ack,
        failover,
        rejoin,
        problems,
    }
}

fn others(of: i32) -> Vec<i32> {
    NODES.iter().copied().filter(|&n| n != of).collect()
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `docker` on this machine, and how to run compose.
struct Docker {
    /// `["docker", "compose"]` or `["docker-compose"]`.
    compose: Vec<String>,
}

impl Docker {
    /// Docker must be there: this test is never skipped.
    fn detect() -> Docker {
        let info = Command::new("docker")
            .args(["info", "--format", "{{.ServerVersion}}"])
            .output();
        match info {
            Ok(out) if out.status.success() => step!(
                "Docker Engine {}",
                String::from_utf8_lossy(&out.stdout).trim()
            ),
            Ok(out) => panic!(
                "tests/docker.rs needs a running Docker Engine, but `docker info` fails \
                 (start dockerd, or run as a user in the docker group):\n{}",
                output_text(&out)
            ),
            Err(e) => panic!(
                "tests/docker.rs needs Docker (the docker CLI and a running Engine, plus \
                 `docker compose` or docker-compose): cannot run `docker`: {e}"
            ),
        }
        let works = |args: &[&str]| {
            Command::new(args[0])
                .args(&args[1..])
                .output()
                .is_ok_and(|o| o.status.success())
        };
        let compose: Vec<&str> = if works(&["docker", "compose", "version"]) {
            vec!["docker", "compose"]
        } else if works(&["docker-compose", "version"]) {
            vec!["docker-compose"]
        } else {
            panic!(
                "tests/docker.rs needs Docker Compose: neither `docker compose version` nor \
                 `docker-compose version` works"
            )
        };
        step!("compose: {}", compose.join(" "));
        Docker {
            compose: compose.into_iter().map(String::from).collect(),
        }
    }

    /// `docker <args>`, bounded by coreutils `timeout`.
    fn run(&self, args: &[&str]) -> Output {
        self.run_for(DOCKER_TIMEOUT_S, args)
    }

    /// `docker <args>`, killed after `secs` seconds.
    fn run_for(&self, secs: u32, args: &[&str]) -> Output {
        Command::new("timeout")
            .arg(secs.to_string())
            .arg("docker")
            .args(args)
            .output()
            .expect("spawn docker")
    }

    /// `docker <args>`, which must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}",
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The image under test, built from the binary under test; removed when
/// dropped.
struct Image {
    tag: String,
    bytes: u64,
    binary_bytes: u64,
    build_time: Duration,
}

impl Image {
    fn build(docker: &Docker) -> Image {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let script = repo.join("deploy/docker/build-image.sh");
        let binary = env!("CARGO_BIN_EXE_runnel");
        let tag = format!("runnel-test:{}-{}", std::process::id(), common::now_ms());
        step!(
            "building image {tag} from {binary} with {}",
            script.display()
        );
        let t = Instant::now();
        let out = Command::new("timeout")
            .arg("600")
            .arg("bash")
            .arg(&script)
            .arg(binary)
            .arg(&tag)
            .output()
            .expect("spawn build-image.sh");
        let build_time = t.elapsed();
        assert!(
            out.status.success(),
            "build-image.sh {binary} {tag}: {}",
            output_text(&out)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        for line in stdout
            .lines()
            .filter(|l| l.starts_with("building ") || l.contains(" bytes ("))
        {
            step!("build-image.sh: {line}");
        }
        // Removed on drop from here on, whatever fails next.
        let mut image = Image {
            tag,
            bytes: 0,
            binary_bytes: 0,
            build_time,
        };
        image.bytes = docker
            .ok(&["image", "inspect", "-f", "{{.Size}}", &image.tag])
            .trim()
            .parse()
            .expect("image size");
        image.binary_bytes = stdout
            .lines()
            .find_map(|l| l.strip_prefix("stripped binary: "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("build-image.sh prints the stripped binary's size");
        step!(
            "image {}: {} bytes ({:.1} MB), stripped binary {} bytes, built in {:.1} s",
            image.tag,
            image.bytes,
            mb(image.bytes),
            image.binary_bytes,
            build_time.as_secs_f64()
        );
        assert!(
            image.bytes < IMAGE_LIMIT_BYTES,
            "image {} is {} bytes, over the {IMAGE_LIMIT_BYTES} target",
            image.tag,
            image.bytes
        );
        let user = docker.ok(&["image", "inspect", "-f", "{{.Config.User}}", &image.tag]);
        assert_eq!(user.trim(), "runnel", "the image's user");
        image
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        if std::thread::panicking() && keep_on_failure() {
            eprintln!("RUNNEL_DOCKER_KEEP is set: kept image {}", self.tag);
            return;
        }
        let out = Command::new("docker")
            .args(["rmi", "-f", &self.tag])
            .output();
        match out {
            Ok(o) if o.status.success() => eprintln!("removed image {}", self.tag),
            Ok(o) => eprintln!("docker rmi {}: {}", self.tag, output_text(&o)),
            Err(e) => eprintln!("docker rmi {}: {e}", self.tag),
        }
    }
}

/// One `deploy/docker-compose.yml` project on free host ports and its own
/// /24; `down -v` (containers, network, volumes) when dropped, panicking
/// or not.
struct Compose<'a> {
    docker: &'a Docker,
    project: String,
    env: Vec<(String, String)>,
    /// The EXTERNAL listener of node N on the host: `ports[N - 1]`.
    ports: [u16; 3],
    containers: Vec<String>,
    up_at: Instant,
    /// After `create_topic`.
    topic_at: Option<Instant>,
}

impl<'a> Compose<'a> {
    /// `compose up -d`, on other ports and another subnet if the ones
    /// chosen were taken in the meantime.
    fn up(docker: &'a Docker, image: &Image, phase: &str) -> Compose<'a> {
        let project = format!("runnel-docker-{}-{phase}", std::process::id());
        for attempt in 1..=4 {
            let ports = distinct_free_ports();
            let net = free_subnet_prefix(docker, attempt);
            let env = vec![
                ("RUNNEL_IMAGE".to_string(), image.tag.clone()),
                ("NODE1_PORT".to_string(), ports[0].to_string()),
                ("NODE2_PORT".to_string(), ports[1].to_string()),
                ("NODE3_PORT".to_string(), ports[2].to_string()),
                ("RUNNEL_NET_PREFIX".to_string(), net.clone()),
                ("RUNNEL_BIND_IP".to_string(), "127.0.0.1".to_string()),
                ("RUNNEL_EXTERNAL_HOST".to_string(), "localhost".to_string()),
            ];
            let mut c = Compose {
                docker,
                project: project.clone(),
                env,
                ports,
                containers: Vec::new(),
                up_at: Instant::now(),
                topic_at: None,
            };
            step!(
                "{} -p {project} up -d: host ports {ports:?}, network {net}.0/24, image {}",
                docker.compose.join(" "),
                image.tag
            );
            c.up_at = Instant::now();
            let out = c.compose(&["up", "-d"]);
            if out.status.success() {
                c.containers = NODES
                    .iter()
                    .map(|n| {
                        let id = c.compose_ok(&["ps", "-q", &format!("node{n}")]);
                        let id = id.trim().to_string();
                        assert!(!id.is_empty(), "no container for node{n}");
                        id
                    })
                    .collect();
                step!(
                    "up in {:.1} s: containers {:?}",
                    c.up_at.elapsed().as_secs_f64(),
                    c.containers
                        .iter()
                        .map(|id| &id[..12.min(id.len())])
                        .collect::<Vec<_>>()
                );
                return c;
            }
            let text = output_text(&out);
            let taken = ["already allocated", "address already in use", "overlap"]
                .iter()
                .any(|s| text.to_lowercase().contains(s));
            assert!(
                taken && attempt < 4,
                "compose up of {project} failed: {text}"
            );
            step!("compose up failed on a taken port or subnet; again on others: {text}");
            // Drop brings down what was created.
        }
        unreachable!("the last attempt returns or panics")
    }

    /// `compose -p <project> -f deploy/docker-compose.yml <args>` with this
    /// project's environment.
    fn compose(&self, args: &[&str]) -> Output {
        let file = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/docker-compose.yml");
        Command::new("timeout")
            .arg(DOCKER_TIMEOUT_S.to_string())
            .args(&self.docker.compose)
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(file)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("spawn compose")
    }

    fn compose_ok(&self, args: &[&str]) -> String {
        let out = self.compose(args);
        assert!(
            out.status.success(),
            "compose {args:?} of {}: {}",
            self.project,
            output_text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn container(&self, node: i32) -> &str {
        &self.containers[(node - 1) as usize]
    }

    /// Node `node`'s EXTERNAL listener, as the host reaches it.
    fn addr(&self, node: i32) -> String {
        format!("localhost:{}", self.ports[(node - 1) as usize])
    }

    fn bootstrap(&self) -> String {
        NODES
            .iter()
            .map(|&n| self.addr(n))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// (state, health) of node `node`'s container, e.g. ("running",
    /// "healthy").
    fn status(&self, node: i32) -> (String, String) {
        let out = self.docker.ok(&[
            "inspect",
            "-f",
            "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{end}}",
            self.container(node),
        ]);
        let mut it = out.split_whitespace();
        let state = it.next().unwrap_or_default().to_string();
        let health = it.next().unwrap_or_default().to_string();
        (state, health)
    }

    /// The output of the last healthcheck of node `node`.
    fn last_health_check(&self, node: i32) -> String {
        let out = self.docker.run(&[
            "inspect",
            "-f",
            "{{with .State.Health}}{{range .Log}}{{.ExitCode}}: {{.Output}}{{end}}{{end}}",
            self.container(node),
        ]);
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
    }

    fn logs(&self, node: i32, lines: usize) -> String {
        let out = self
            .docker
            .run(&["logs", "--tail", &lines.to_string(), self.container(node)]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// Waits until the containers of `nodes` are running and healthy (the
    /// compose healthcheck: `runnel healthcheck --ready`). Returns the time
    /// since `compose up`.
    fn wait_healthy(&self, nodes: &[i32], within: Duration, what: &str) -> Duration {
        let t = Instant::now();
        let deadline = t + within;
        let mut last: Vec<(String, String)> = Vec::new();
        let mut shown = Instant::now();
        loop {
            let now: Vec<(String, String)> = nodes.iter().map(|&n| self.status(n)).collect();
            if now.iter().all(|(s, h)| s == "running" && h == "healthy") {
                let since_up = self.up_at.elapsed();
                step!(
                    "{what}: nodes {nodes:?} healthy after {:.1} s ({:.1} s since compose up)",
                    t.elapsed().as_secs_f64(),
                    since_up.as_secs_f64()
                );
                return since_up;
            }
            for (&n, (state, _)) in nodes.iter().zip(&now) {
                assert!(
                    state == "running" || state == "created" || state == "restarting",
                    "{what}: node{n}'s container is {state}; its log:\n{}",
                    self.logs(n, 60)
                );
            }
            if now != last || shown.elapsed() > Duration::from_secs(5) {
                step!(
                    "waiting for {what}: {}",
                    nodes
                        .iter()
                        .zip(&now)
                        .map(|(n, (s, h))| format!("node{n} {s} {h}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                last = now;
                shown = Instant::now();
            }
            if Instant::now() > deadline {
                let detail: Vec<String> = nodes
                    .iter()
                    .map(|&n| {
                        format!(
                            "node{n}: last healthchecks: {}\nlog:\n{}",
                            self.last_health_check(n),
                            self.logs(n, 40)
                        )
                    })
                    .collect();
                panic!(
                    "{what}: not healthy within {within:?}: {last:?}\n{}",
                    detail.join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// A client on the host is told the EXTERNAL addresses (localhost and
    /// the published ports), one in the compose network the INTERNAL ones.
    fn check_advertised_addresses(&self) {
        let want: Vec<(i32, String, i32)> = NODES
            .iter()
            .map(|&n| {
                (
                    n,
                    "localhost".to_string(),
                    i32::from(self.ports[(n - 1) as usize]),
                )
            })
            .collect();
        for &n in &NODES {
            let mut conn = RawConn::connect(&self.addr(n))
                .unwrap_or_else(|e| panic!("connect to {} from the host: {e}", self.addr(n)));
            let resp: MetadataResponse = conn
                .roundtrip(9, 1, &MetadataRequest::default().with_topics(Some(vec![])))
                .unwrap_or_else(|e| panic!("Metadata from {}: {e}", self.addr(n)));
            let mut got: Vec<(i32, String, i32)> = resp
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.host.to_string(), b.port))
                .collect();
            got.sort();
            assert_eq!(
                got,
                want,
                "brokers in Metadata from {} (host)",
                self.addr(n)
            );
        }
        step!("host clients are told {want:?}");
        // Inside the network: the CLI in node 1's container, through node 2's
        // INTERNAL listener; it then asks every broker at its address.
        let out = self.docker.ok(&[
            "exec",
            self.container(1),
            "/usr/local/bin/runnel",
            "broker-api-versions",
            "--bootstrap-server",
            "node2:19092",
        ]);
        let mut got: Vec<String> = out
            .lines()
            .filter(|l| l.contains("(id: "))
            .map(|l| l.split(" -> ").next().unwrap_or(l).to_string())
            .collect();
        got.sort();
        let want: Vec<String> = NODES
            .iter()
            .map(|n| format!("node{n}:19092 (id: {n} rack: null)"))
            .collect();
        assert_eq!(
            got, want,
            "brokers that runnel broker-api-versions sees inside the compose network:\n{out}"
        );
        assert!(
            !out.contains("ERROR"),
            "a broker did not answer inside the network:\n{out}"
        );
        step!("clients in the compose network are told {want:?}");
    }

    /// Three partitions, replication factor 3, min.insync.replicas=2,
    /// created from the host with the CLI; waits for the full ISR of each.
    /// Returns the partition the test works on: the one whose leader is also
    /// the active controller (clients are told it as the controller id), so
    /// that losing the leader loses both at once.
    fn create_topic(&mut self, topic: &str) -> Tp {
        let out = runnel_ok(&[
            "topics",
            "--bootstrap-server",
            &self.addr(1),
            "--create",
            "--topic",
            topic,
            "--partitions",
            "3",
            "--replication-factor",
            "3",
            "--config",
            "min.insync.replicas=2",
        ]);
        step!("runnel topics --create: {}", out.trim());
        let leaders: Vec<i32> = (0..3)
            .map(|p| {
                let tp = Tp::new(topic, p);
                self.wait_full_isr(&tp, Duration::from_secs(30), "the full ISR")
                    .leader
            })
            .collect();
        self.topic_at = Some(Instant::now());
        let controller = eventually(
            Duration::from_secs(30),
            "every node naming the same active controller",
            || {
                let ids: Vec<i32> = NODES
                    .iter()
                    .filter_map(|&n| metadata_view(&self.addr(n)).ok())
                    .map(|v| v.controller_id)
                    .collect();
                (ids.len() == NODES.len() && ids.iter().all(|&id| id > 0 && id == ids[0]))
                    .then(|| ids[0])
            },
        );
        let p = leaders.iter().position(|&l| l == controller).unwrap_or(0) as i32;
        step!(
            "partition leaders {leaders:?}, active controller node {controller}: the test works \
             on {topic}/{p} (leader {})",
            leaders[p as usize]
        );
        Tp::new(topic, p)
    }

    /// Prints and returns the time from `compose up` to the producer's
    /// first acknowledgement.
    fn first_ack(&self, producer: &BgProducer) -> Duration {
        let ack = producer
            .first_ack_after(self.up_at, -1)
            .expect("an acknowledgement");
        let d = ack.at.duration_since(self.up_at);
        step!(
            "compose up -> first acknowledged write: {:.1} s (topic ready at {:.1} s)",
            d.as_secs_f64(),
            self.topic_at
                .map_or(0.0, |t| t.duration_since(self.up_at).as_secs_f64())
        );
        d
    }

    /// Waits until every node in `ask` answers Metadata for partition 0 of
    /// `topic` from the host, all agree on leader and epoch, and `pred`
    /// holds.
    fn wait_partition(
        &self,
        ask: &[i32],
        tp: &Tp,
        within: Duration,
        what: &str,
        pred: impl Fn(&PState) -> bool,
    ) -> PState {
        let t = Instant::now();
        let mut shown = Instant::now();
        loop {
            let seen: BTreeMap<i32, Result<PState, String>> = ask
                .iter()
                .map(|&n| {
                    (
                        n,
                        partition_state(&self.addr(n), &tp.topic, tp.p).map_err(|e| e.to_string()),
                    )
                })
                .collect();
            let answers: Vec<&PState> = seen.values().filter_map(|r| r.as_ref().ok()).collect();
            if answers.len() == ask.len()
                && answers.iter().all(|s| {
                    s.leader == answers[0].leader
                        && s.leader_epoch == answers[0].leader_epoch
                        && pred(s)
                })
            {
                let st = answers[0].clone();
                step!(
                    "{what}: {tp} leader {} epoch {}, ISR {:?} (after {:.1} s)",
                    st.leader,
                    st.leader_epoch,
                    st.isr,
                    t.elapsed().as_secs_f64()
                );
                return st;
            }
            if shown.elapsed() > Duration::from_secs(5) {
                step!("still waiting for {what}: {seen:?}");
                shown = Instant::now();
            }
            assert!(
                t.elapsed() < within,
                "timed out after {within:?} waiting for {what} ({tp}); nodes {ask:?} say: \
                 {seen:#?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits until every node says all three replicas of `topic`/0 are in
    /// the ISR.
    fn wait_full_isr(&self, tp: &Tp, within: Duration, what: &str) -> PState {
        self.wait_partition(&NODES, tp, within, what, |s| s.leader > 0 && s.isr == NODES)
    }

    /// How long after `t` (the old leader's loss) the first write the new
    /// leader appended was acknowledged: the first acknowledgement at or past
    /// the offset where the new leader's epoch starts on it (the end of
    /// `old_epoch`, by OffsetForLeaderEpoch). Acknowledgements of lower
    /// offsets that arrive after `t` are the old leader's, still on their way.
    fn failover_time(
        &self,
        producer: &BgProducer,
        t: Instant,
        tp: &Tp,
        old_epoch: i32,
        new: &PState,
    ) -> (Duration, i64) {
        let req = OffsetForLeaderEpochRequest::default()
            .with_replica_id(BrokerId(-1))
            .with_topics(vec![OffsetForLeaderTopic::default()
                .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                .with_partitions(vec![OffsetForLeaderPartition::default()
                    .with_partition(tp.p)
                    .with_current_leader_epoch(new.leader_epoch)
                    .with_leader_epoch(old_epoch)])]);
        let mut conn = RawConn::connect(&self.addr(new.leader)).expect("connect");
        let resp: OffsetForLeaderEpochResponse =
            conn.roundtrip(3, 9, &req).expect("OffsetForLeaderEpoch");
        let p = &resp.topics[0].partitions[0];
        assert_eq!(
            p.error_code, 0,
            "OffsetForLeaderEpoch from node {}: {resp:?}",
            new.leader
        );
        let start = p.end_offset;
        let ack = eventually(
            Duration::from_secs(30),
            "an acknowledgement from the new leader",
            || producer.first_ack_after(t, start - 1),
        );
        let d = ack.at.duration_since(t);
        step!(
            "node {} leads at epoch {} from offset {start}; its first acknowledgement (offset {}) \
             came {:.2} s after the old leader was lost",
            new.leader,
            new.leader_epoch,
            ack.offset,
            d.as_secs_f64()
        );
        (d, start)
    }

    /// Prints what node `node` logged about cutting its log back.
    fn show_truncation(&self, node: i32) {
        let log = self.logs(node, 100_000);
        let lines: Vec<&str> = log.lines().filter(|l| l.contains("truncat")).collect();
        if lines.is_empty() {
            step!("node {node} logged no truncation (it had nothing the new leader lacked)");
        }
        for l in lines.iter().rev().take(5).rev() {
            step!("node {node} logged: {}", l.trim());
        }
    }

    /// The leader of `topic`/0 and its high watermark.
    fn high_watermark(&self, tp: &Tp) -> (i32, i64) {
        let st = self.wait_partition(&NODES, tp, Duration::from_secs(30), "a leader", |s| {
            s.leader > 0
        });
        (st.leader, self.latest(st.leader, tp))
    }

    /// ListOffsets latest (the high watermark) of `topic`/0 from its leader
    /// `node`, retried for a few seconds: a node that Metadata already names
    /// leader may still be taking the leadership up (NOT_LEADER_OR_FOLLOWER).
    fn latest(&self, node: i32, tp: &Tp) -> i64 {
        let mut last = None;
        eventually(
            Duration::from_secs(10),
            &format!("ListOffsets from node {node}"),
            || {
                let got = list_latest(&self.addr(node), &tp.topic, tp.p);
                let hw = match &got {
                    Ok((0, hw)) => Some(*hw),
                    _ => None,
                };
                if hw.is_none() && last.as_ref() != Some(&format!("{got:?}")) {
                    step!("ListOffsets from node {node}: {got:?}; retrying");
                    last = Some(format!("{got:?}"));
                }
                hw
            },
        )
    }

    /// The record batches of `topic`/0 in node `node`'s volume, copied out
    /// with `docker cp` (which works on a stopped container too).
    fn batches_on_disk(&self, node: i32, tp: &Tp) -> Vec<DiskBatch> {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dest = tmp.path().join("partition");
        let src = format!(
            "{}:/var/lib/runnel/data/{}-{}",
            self.container(node),
            tp.topic,
            tp.p
        );
        self.docker.ok(&["cp", &src, &dest.to_string_lossy()]);
        batches_on_disk(&dest)
    }

    /// Waits until the three replicas of `topic`/0 hold the same batches
    /// on disk (offsets, CRC, leader epoch, length), ending at the high
    /// watermark, with no gap from offset 0.
    fn check_replicas_identical(&self, tp: &Tp) {
        let (leader, hw) = self.high_watermark(tp);
        let t = Instant::now();
        loop {
            let logs: BTreeMap<i32, Vec<DiskBatch>> = NODES
                .iter()
                .map(|&n| (n, self.batches_on_disk(n, tp)))
                .collect();
            let lead = &logs[&leader];
            let contiguous = lead.windows(2).all(|w| w[1].base == w[0].last + 1)
                && lead.first().is_none_or(|b| b.base == 0);
            let same = logs.values().all(|l| l == lead);
            if same && contiguous && log_end(lead) == hw {
                step!(
                    "the three replicas hold the same {} batches on disk, offsets 0..{hw}",
                    lead.len()
                );
                return;
            }
            if t.elapsed() > Duration::from_secs(30) {
                let diff: Vec<String> = logs
                    .iter()
                    .map(|(n, l)| {
                        let first = l.iter().zip(lead).position(|(a, b)| a != b);
                        format!(
                            "node {n}: {} batches ending at {}, first difference from the \
                             leader's at batch {first:?}",
                            l.len(),
                            log_end(l)
                        )
                    })
                    .collect();
                panic!(
                    "replicas of {tp} differ on disk (leader {leader}, HW {hw}, leader's \
                     batches contiguous: {contiguous}): {diff:#?}"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Reads the whole partition back from the host and checks that every
    /// acknowledged record is at its acknowledged offset. Returns what was
    /// read.
    fn check_nothing_lost(&self, tp: &Tp, report: &Report) -> Vec<(i64, String)> {
        assert!(
            report.fatal.is_none(),
            "producer fatal error: {:?}",
            report.fatal
        );
        let (leader, hw) = self.high_watermark(tp);
        let max_acked = report.acked.iter().map(|a| a.offset).max().unwrap_or(-1);
        assert!(
            hw > max_acked,
            "high watermark {hw} (leader {leader}) is not above the highest acknowledged \
             offset {max_acked}"
        );
        let read = consume_all(&self.bootstrap(), &tp.topic, tp.p, hw);
        let at: BTreeMap<i64, &str> = read.iter().map(|(o, k)| (*o, k.as_str())).collect();
        assert_eq!(at.len(), read.len(), "an offset was read twice");
        let missing: Vec<String> = report
            .acked
            .iter()
            .filter(|a| at.get(&a.offset) != Some(&a.key.as_str()))
            .map(|a| {
                format!(
                    "{} acknowledged at {}, read there: {:?}",
                    a.key,
                    a.offset,
                    at.get(&a.offset)
                )
            })
            .collect();
        let mut keys: Vec<&str> = read.iter().map(|(_, k)| k.as_str()).collect();
        keys.sort_unstable();
        let records = keys.len();
        keys.dedup();
        step!(
            "read {records} records up to HW {hw} from the host: {} acknowledged, {} failed \
             (not acknowledged), {} duplicates (retried writes)",
            report.acked.len(),
            report.failed.len(),
            records - keys.len()
        );
        assert!(
            missing.is_empty(),
            "{} of {} acknowledged records are not at their offset, e.g. {:?}",
            missing.len(),
            report.acked.len(),
            &missing[..missing.len().min(10)]
        );
        read
    }

    /// Makes `old` (the preferred replica, which led before) the leader
    /// again with a preferred leader election, then reads the partition
    /// from it: it must hold exactly `read`, what the new leader had.
    fn check_old_leader_log(&self, tp: &Tp, old: i32, read: &[(i64, String)]) {
        let st = self.wait_full_isr(tp, Duration::from_secs(30), "the full ISR");
        if st.replicas.first() != Some(&old) {
            step!(
                "node {old} is not {tp}'s preferred replica ({:?}): not comparing its log",
                st.replicas
            );
            return;
        }
        if st.leader != old {
            let req = ElectLeadersRequest::default()
                .with_election_type(0)
                .with_timeout_ms(30_000)
                .with_topic_partitions(Some(vec![TopicPartitions::default()
                    .with_topic(TopicName(StrBytes::from_string(tp.topic.clone())))
                    .with_partitions(vec![tp.p])]));
            let mut conn = RawConn::connect(&self.addr(st.leader)).expect("connect");
            let resp: ElectLeadersResponse = conn.roundtrip(1, 7, &req).expect("ElectLeaders");
            let codes: Vec<(i32, i16, Option<String>)> = resp
                .replica_election_results
                .iter()
                .flat_map(|t| &t.partition_result)
                .map(|p| {
                    (
                        p.partition_id,
                        p.error_code,
                        p.error_message.as_ref().map(|m| m.to_string()),
                    )
                })
                .collect();
            step!(
                "preferred leader election of {tp}: error {}, partitions {codes:?}",
                resp.error_code
            );
            assert!(
                resp.error_code == 0 && codes.iter().all(|(_, c, _)| *c == 0 || *c == 84),
                "ElectLeaders: {resp:?}"
            );
        }
        self.wait_partition(
            &NODES,
            tp,
            Duration::from_secs(30),
            "the old leader leading again",
            |s| s.leader == old,
        );
        let hw = self.latest(old, tp);
        let want_hw = read.last().map_or(0, |(o, _)| o + 1);
        assert_eq!(
            hw, want_hw,
            "node {old}'s high watermark after leading again"
        );
        let again = consume_all(&self.bootstrap(), &tp.topic, tp.p, hw);
        let differ = again
            .iter()
            .zip(read)
            .find(|(a, b)| a != b)
            .map(|(a, b)| format!("node {old} has {a:?} where the new leader had {b:?}"));
        assert!(
            again.len() == read.len() && differ.is_none(),
            "node {old}'s log ({} records) differs from what the new leader served ({}): {differ:?}",
            again.len(),
            read.len()
        );
        step!(
            "node {old}, leading again, serves the same {} records up to {hw}: its log was cut \
             back to the new leader's and caught up",
            again.len()
        );
    }
}

impl Drop for Compose<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.containers.is_empty() {
            let ps = self.compose(&["ps"]);
            eprintln!(
                "compose ps of {}:\n{}",
                self.project,
                String::from_utf8_lossy(&ps.stdout)
            );
            for n in NODES {
                eprintln!("--- node{n} log (tail) ---\n{}", self.logs(n, 40));
            }
        }
        if std::thread::panicking() && keep_on_failure() {
            eprintln!(
                "RUNNEL_DOCKER_KEEP is set: left project {} up; remove it with\n  {} -p {} -f \
                 deploy/docker-compose.yml down -v",
                self.project,
                self.docker.compose.join(" "),
                self.project
            );
            return;
        }
        // A failure may have left followers paused. Then kill: nothing to
        // shut down gracefully, and `down` would wait out each controlled
        // shutdown.
        let _ = self.compose(&["unpause"]);
        let _ = self.compose(&["kill"]);
        let out = self.compose(&["down", "-v", "--remove-orphans", "-t", "1"]);
        if out.status.success() {
            eprintln!("compose down -v of {}: done", self.project);
        } else {
            eprintln!(
                "compose down -v of {} failed: {}",
                self.project,
                output_text(&out)
            );
        }
    }
}

/// The partition a phase works on.
#[derive(Clone, Debug)]
struct Tp {
    topic: String,
    p: i32,
}

impl Tp {
    fn new(topic: &str, p: i32) -> Tp {
        Tp {
            topic: topic.to_string(),
            p,
        }
    }
}

impl std::fmt::Display for Tp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.topic, self.p)
    }
}

/// The offset after the last batch.
fn log_end(batches: &[DiskBatch]) -> i64 {
    batches.last().map_or(0, |b| b.last + 1)
}

/// `RUNNEL_DOCKER_KEEP=1`: a failed run leaves its cluster and image for a
/// look.
fn keep_on_failure() -> bool {
    std::env::var_os("RUNNEL_DOCKER_KEEP").is_some_and(|v| v == "1")
}

/// Three different free loopback ports.
fn distinct_free_ports() -> [u16; 3] {
    loop {
        let p = [free_port(), free_port(), free_port()];
        if p[0] != p[1] && p[1] != p[2] && p[0] != p[2] {
            return p;
        }
    }
}

/// The first three octets of a /24 that no Docker network overlaps:
/// 172.28.X, 172.29.X or 10.229.X, X picked from the process id and the
/// attempt so that concurrent runs tend to differ.
fn free_subnet_prefix(docker: &Docker, attempt: u32) -> String {
    let ids = docker.ok(&["network", "ls", "-q"]);
    let mut taken: Vec<(u32, u32)> = Vec::new();
    for id in ids.split_whitespace() {
        let subnets = docker.run(&[
            "network",
            "inspect",
            "-f",
            "{{range .IPAM.Config}}{{.Subnet}} {{end}}",
            id,
        ]);
        for s in String::from_utf8_lossy(&subnets.stdout).split_whitespace() {
            if let Some(net) = parse_cidr(s) {
                taken.push(net);
            }
        }
    }
    let start = (std::process::id() * 7 + attempt * 13) % 250;
    for base in [[172u32, 28], [172, 29], [10, 229]] {
        for i in 0..250 {
            let x = (start + i) % 250 + 1;
            let ours = (base[0] << 24 | base[1] << 16 | x << 8, 24);
            let overlaps = taken.iter().any(|&(addr, len)| {
                let bits = len.min(ours.1);
                let mask = if bits == 0 {
                    0
                } else {
                    u32::MAX << (32 - bits)
                };
                addr & mask == ours.0 & mask
            });
            if !overlaps {
                return format!("{}.{}.{x}", base[0], base[1]);
            }
        }
    }
    panic!("no free /24 in 172.28/16, 172.29/16 or 10.229/16 for the compose network")
}

/// An IPv4 CIDR as (address, prefix length); None for IPv6 or junk.
fn parse_cidr(s: &str) -> Option<(u32, u32)> {
    let (addr, len) = s.split_once('/')?;
    let addr: std::net::Ipv4Addr = addr.parse().ok()?;
    let len: u32 = len.parse().ok()?;
    (len <= 32).then_some((u32::from(addr), len))
}

impl Compose<'_> {
    /// The network node `node`'s container is on (the project's default
    /// network, whatever compose named it) and its address there.
    fn network_of(&self, node: i32) -> (String, String) {
        let out = self.docker.ok(&[
            "inspect",
            "-f",
            "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{$v.IPAddress}}\n{{end}}",
            self.container(node),
        ]);
        let nets: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(n, ip)| (n.to_string(), ip.to_string()))
            .collect();
        assert_eq!(
            nets.len(),
            1,
            "node{node}'s container is on one network: {out}"
        );
        nets.into_iter().next().expect("one network")
    }
}
