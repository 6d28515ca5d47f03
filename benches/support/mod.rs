//! What the benchmarks share: free ports, a loopback cluster of real
//! `runnel serve` processes, and topic creation through librdkafka's admin
//! client.

#![allow(dead_code)] // Each bench uses a different subset.

pub mod acks;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Nodes that are each broker and controller voter; killed on drop.
pub struct Cluster {
    pub children: Vec<Child>,
    pub bootstrap: String,
    /// Each node's `serve` arguments, to start it again.
    args: Vec<Vec<String>>,
}

impl Cluster {
    /// Kills every node with SIGKILL and starts them all again.
    pub fn kill_and_restart(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children = self.args.iter().map(|a| serve(a)).collect();
    }
}

/// Starts one node; its log goes to `$BENCH_LOG_DIR/<node.id>.log` when
/// that is set (appended, so a restart keeps the earlier lines), else
/// nowhere.
fn serve(args: &[String]) -> Child {
    let stderr = match std::env::var_os("BENCH_LOG_DIR") {
        Some(dir) => {
            let id = args
                .iter()
                .find_map(|a| a.strip_prefix("node.id="))
                .unwrap_or("node");
            let path = Path::new(&dir).join(format!("{id}.log"));
            std::fs::create_dir_all(&dir).expect("BENCH_LOG_DIR");
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .expect("node log file");
            Stdio::from(f)
        }
        None => Stdio::null(),
    };
    Command::new(env!("CARGO_BIN_EXE_runnel"))
        .arg("serve")
        .args(args)
        .stderr(stderr)
        .spawn()
        .expect("spawn runnel")
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Formats and starts `n` nodes in `root`, each with `overrides`
/// (`key=value`) and those of the `CLUSTER_OVERRIDES` variable
/// (space-separated).
pub fn start_cluster(root: &Path, n: usize, overrides: &[&str]) -> Cluster {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let voters = ports
        .iter()
        .enumerate()
        .map(|(i, (_, c))| format!("{}@127.0.0.1:{c}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    let from_env = std::env::var("CLUSTER_OVERRIDES").unwrap_or_default();
    let args = |i: usize| -> Vec<String> {
        let (k, c) = ports[i];
        [
            format!("node.id={}", i + 1),
            "process.roles=broker,controller".to_string(),
            format!("listeners=PLAINTEXT://127.0.0.1:{k},CONTROLLER://127.0.0.1:{c}"),
            format!("controller.quorum.voters={voters}"),
            format!("log.dirs={}", root.join(format!("n{}", i + 1)).display()),
        ]
        .into_iter()
        .chain(overrides.iter().map(|s| s.to_string()))
        .chain(from_env.split_whitespace().map(str::to_string))
        .flat_map(|kv| ["--override".to_string(), kv])
        .collect()
    };
    for i in 0..n {
        let st = Command::new(env!("CARGO_BIN_EXE_runnel"))
            .args(["format", "--cluster-id", "bench"])
            .args(args(i))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("runnel format");
        assert!(st.success(), "format failed");
    }
    let args: Vec<Vec<String>> = (0..n).map(args).collect();
    let children = args.iter().map(|a| serve(a)).collect();
    let bootstrap = ports
        .iter()
        .map(|(k, _)| format!("127.0.0.1:{k}"))
        .collect::<Vec<_>>()
        .join(",");
    Cluster {
        children,
        bootstrap,
        args,
    }
}

/// Creates a topic, retrying while the cluster is still forming.
pub fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    rf: i32,
    configs: &[(&str, &str)],
) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin");
    let topic = || {
        configs.iter().fold(
            NewTopic::new(name, partitions, TopicReplication::Fixed(rf)),
            |t, (k, v)| t.set(k, v),
        )
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let res = rt.block_on(admin.create_topics(&[topic()], &AdminOptions::new()));
        match res {
            Ok(r) if r.iter().all(|r| r.is_ok()) => return,
            other if Instant::now() > deadline => panic!("cannot create {name}: {other:?}"),
            _ => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}
