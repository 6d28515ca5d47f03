//! Old real clients against one node (issue 15): each speaks request versions
//! that Kafka 4.0 dropped (KIP-896) and that our users' clients still send.
//!
//! * Sarama 1.22.1 (Go, Debian's golang-github-shopify-sarama-dev) with
//!   `Config.Version` 2.2.0, 0.11.0 and 0.10.2: `tests/go/sarama_check`.
//! * kafka-python 2.0.2 (Debian's python3-kafka, system `/usr/bin/python3`),
//!   unpinned: `tests/python/legacy_kafka_python2.py`.
//! * kafka-python 3.0.12 (pip) pinned with `api_version` 0.9, 0.10.0,
//!   0.10.2, 0.11 and 1.0, mixed with librdkafka (confluent_kafka):
//!   `tests/python/legacy_api_versions.py`.
//!
//! Each program runs its checks (admin, produce + fetch back, offsets by
//! time, a consumer group that commits and a new member that resumes at the
//! commit), prints `PASS name` / `FAIL name: error` per check, and exits
//! non-zero if any failed. The test prints the program's whole output, then
//! the broker's warnings and errors, and fails naming the failed checks.
//! Every program is killed after `RUN_TIMEOUT`.
//!
//! `make deps` installs the clients: golang-go, the Sarama package and
//! python3-kafka with apt; kafka-python 3.0.12 and confluent-kafka with pip.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::Node;

/// Bound on one client program (each bounds its own checks below this).
const RUN_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on building the Go program.
const BUILD_TIMEOUT: Duration = Duration::from_secs(300);

/// Where Debian's golang-*-dev packages put their sources (a GOPATH).
const DEBIAN_GOPATH: &str = "/usr/share/gocode";
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

// ---------------------------------------------------------------- running --

struct Outcome {
    success: bool,
    timed_out: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

/// Runs `cmd` with its output piped (read on threads, so that a chatty
/// program cannot fill a pipe and stall), killed after `timeout`.
fn run_bounded(cmd: &mut Command, timeout: Duration) -> Outcome {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let reader = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = reader(Box::new(child.stdout.take().expect("stdout")));
    let err = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = start + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            timed_out = true;
            let _ = child.kill();
            break child.wait().expect("wait after kill");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Outcome {
        success: status.success() && !timed_out,
        timed_out,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        took: start.elapsed(),
    }
}

/// Prints a client's output into the test log, then asserts that it passed
/// every check; on failure the message names the failed checks and quotes
/// the broker's warnings and errors.
fn report(name: &str, node: &Node, outcome: &Outcome) {
    eprintln!(
        "===== {name}: stdout ({:.1}s) =====\n{}",
        outcome.took.as_secs_f64(),
        outcome.stdout
    );
    if !outcome.stderr.trim().is_empty() {
        eprintln!("===== {name}: stderr =====\n{}", outcome.stderr);
    }
    let passed: Vec<&str> = outcome
        .stdout
        .lines()
        .filter_map(|l| l.strip_prefix("PASS "))
        .collect();
    let failed: Vec<&str> = outcome
        .stdout
        .lines()
        .filter(|l| l.starts_with("FAIL "))
        .collect();
    let broker = broker_complaints(&node.log_since_start());
    eprintln!(
        "===== {name}: {} passed: {} =====",
        passed.len(),
        passed.join(", ")
    );
    if !failed.is_empty() {
        eprintln!(
            "===== {name}: {} failed =====\n{}",
            failed.len(),
            failed.join("\n")
        );
    }
    if !broker.is_empty() {
        eprintln!("===== broker warnings and errors =====\n{broker}");
    }
    let all_pass = outcome.stdout.lines().any(|l| l == "ALL PASS");
    if outcome.timed_out || !outcome.success || !failed.is_empty() || !all_pass {
        let why = if outcome.timed_out {
            format!("killed after {RUN_TIMEOUT:?}")
        } else if failed.is_empty() {
            "it exited without ALL PASS (output above)".to_string()
        } else {
            format!("{} check(s) failed:\n{}", failed.len(), failed.join("\n"))
        };
        panic!("{name}: {why}\n(broker warnings and errors above; the program's output above)");
    }
    step!("{name}: every check passed ({})", passed.join(", "));
}

/// The broker's log lines worth showing next to a client failure.
fn broker_complaints(log: &str) -> String {
    let mut seen = std::collections::HashSet::new();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| {
            let low = l.to_ascii_lowercase();
            low.contains("warn")
                || low.contains("error")
                || low.contains("not supported")
                || low.contains("unsupported")
        })
        .filter(|l| seen.insert(strip_time(l).to_string()))
        .collect();
    let from = lines.len().saturating_sub(60);
    lines[from..].join("\n")
}

/// A log line without its leading timestamp, to fold repeats.
fn strip_time(line: &str) -> &str {
    line.split_once(' ').map(|(_, rest)| rest).unwrap_or(line)
}

// ----------------------------------------------------------------- Sarama --

/// Builds `tests/go/sarama_check` once per test process, in GOPATH mode
/// against Debian's Sarama; returns the binary.
fn sarama_check() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let built = BIN.get_or_init(|| {
        if Command::new("go").arg("version").output().is_err() {
            return Err("go is not installed: `make deps` installs it (apt-get install golang-go)".into());
        }
        let sarama = Path::new(DEBIAN_GOPATH).join("src/github.com/Shopify/sarama");
        if !sarama.join("sarama.go").exists() {
            return Err(format!(
                "Sarama is not at {}: `make deps` installs it (apt-get install golang-github-shopify-sarama-dev)",
                sarama.display()
            ));
        }
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("old_clients");
        std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let bin = dir.join("sarama_check");
        let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/go/sarama_check");
        step!("go build {src} (GOPATH mode, Debian's Sarama) -> {}", bin.display());
        let out = run_bounded(
            Command::new("go")
                .args(["build", "-o"])
                .arg(&bin)
                .arg(".")
                .current_dir(src)
                .env("GO111MODULE", "off")
                .env("GOPATH", DEBIAN_GOPATH)
                .env("GOCACHE", dir.join("gocache"))
                .env("GOFLAGS", "")
                .env("GOPROXY", "off"),
            BUILD_TIMEOUT,
        );
        if !out.success {
            return Err(format!(
                "go build of {src} failed (timed out: {}):\n{}\n{}",
                out.timed_out, out.stdout, out.stderr
            ));
        }
        Ok(bin)
    });
    match built {
        Ok(bin) => bin,
        Err(e) => panic!("{e}"),
    }
}

fn sarama(version: &str) {
    let bin = sarama_check();
    let node = Node::start(&[]);
    let topic = format!("sarama-{}", version.replace('.', "_"));
    step!("sarama_check -version {version} -topic {topic}");
    let outcome = run_bounded(
        Command::new(bin).args([
            "-brokers",
            &node.bootstrap(),
            "-version",
            version,
            "-topic",
            &topic,
            "-check",
            "all",
        ]),
        RUN_TIMEOUT,
    );
    report(&format!("Sarama 1.22.1 at {version}"), &node, &outcome);
}

#[test]
fn sarama_v2_2_0() {
    sarama("2.2.0");
}

#[test]
fn sarama_v0_11_0() {
    sarama("0.11.0");
}

#[test]
fn sarama_v0_10_2() {
    sarama("0.10.2");
}

// ------------------------------------------------------ kafka-python 2.0.2 --

#[test]
fn kafka_python_2_0_2() {
    let probe = Command::new(SYSTEM_PYTHON)
        .args([
            "-c",
            "import kafka, sys; sys.exit(kafka.__version__ != '2.0.2')",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "{SYSTEM_PYTHON} with kafka-python 2.0.2 is needed: `make deps` installs it (apt-get install python3-kafka)"
        ),
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/legacy_kafka_python2.py"
    );
    let node = Node::start(&[]);
    step!("{SYSTEM_PYTHON} {script} {}", node.bootstrap());
    let outcome = run_bounded(
        Command::new(SYSTEM_PYTHON)
            .arg(script)
            .arg(node.bootstrap())
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        RUN_TIMEOUT,
    );
    report("kafka-python 2.0.2", &node, &outcome);
}

// ------------------------------------- kafka-python 3.0.12 pinned versions --

fn kafka_python_pinned(api_version: &str) {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import kafka, confluent_kafka, sys; sys.exit(kafka.__version__ != '3.0.12')",
        ])
        .output();
    match probe {
        Ok(o) if o.status.success() => {}
        _ => panic!(
            "python3 (on PATH) with kafka-python 3.0.12 and confluent-kafka is needed: `make deps` installs them \
             (pip install kafka-python==3.0.12 confluent-kafka)"
        ),
    }
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/legacy_api_versions.py"
    );
    let node = Node::start(&[]);
    step!("python3 {script} {} {api_version}", node.bootstrap());
    let outcome = run_bounded(
        Command::new("python3")
            .arg(script)
            .arg(node.bootstrap())
            .arg(api_version)
            .env("PYTHONDONTWRITEBYTECODE", "1"),
        RUN_TIMEOUT,
    );
    report(
        &format!("kafka-python 3.0.12 api_version={api_version}"),
        &node,
        &outcome,
    );
}

#[test]
fn kafka_python_pinned_0_9() {
    kafka_python_pinned("0.9");
}

#[test]
fn kafka_python_pinned_0_10_0() {
    kafka_python_pinned("0.10.0");
}

#[test]
fn kafka_python_pinned_0_10_2() {
    kafka_python_pinned("0.10.2");
}

#[test]
fn kafka_python_pinned_0_11() {
    kafka_python_pinned("0.11");
}

#[test]
fn kafka_python_pinned_1_0() {
    kafka_python_pinned("1.0");
}
