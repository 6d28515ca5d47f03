//! The Java client, Apache kafka-clients 3.9.1 (the reference client),
//! against one node and against a 3-node cluster. `tests/java/RunnelCheck.java`
//! drives AdminClient, producer and consumer through named checks: the
//! cluster, topics and partitions, offsets by time, the producer's defaults
//! (idempotent, acks=all) and every codec read back exactly, a consumer
//! group that commits and resumes, the group admin API, topic configs, and a
//! transactional producer that must be refused fast. It prints a PASS or
//! FAIL line per check; this test fetches its jars
//! (`tests/java/fetch-jars.sh`, cached in `/var/tmp/runnel-java-jars`),
//! compiles it once, runs it with each check's line in the step log, and
//! fails if any check failed.
//!
//! Needs java and javac 17 (Debian `openjdk-17-jdk-headless`) and pip, for
//! the first fetch of the jars. Run with its step log:
//! `cargo test --release --test java_client -- --nocapture`.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::cluster::Cluster;
use common::Node;

/// How long one run of RunnelCheck may take before its JVM is killed. The
/// program bounds itself (30 s a check, 200 s a run); this catches a JVM
/// that hangs anyway.
const RUN_TIMEOUT: Duration = Duration::from_secs(240);
/// How long fetching the jars (a 92 MB wheel on the first run) may take.
const FETCH_TIMEOUT_SECS: &str = "300";
/// How long javac may take.
const JAVAC_TIMEOUT_SECS: &str = "120";

/// RunnelCheck compiled: the classpath to run it with.
struct JavaCheck {
    classpath: String,
}

/// Fetches the jars and compiles RunnelCheck, once per test process; panics
/// with what is missing if that is not possible.
fn java_check() -> &'static JavaCheck {
    static ONCE: OnceLock<Result<JavaCheck, String>> = OnceLock::new();
    match ONCE.get_or_init(prepare) {
        Ok(java) => java,
        Err(e) => panic!("{e}"),
    }
}

fn prepare() -> Result<JavaCheck, String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/java");
    for tool in ["java", "javac"] {
        let major = jdk_major(tool)?;
        if major < 17 {
            return Err(format!(
                "{tool} is version {major}; RunnelCheck needs Java 17 or later \
                 (Debian: apt-get install openjdk-17-jdk-headless)"
            ));
        }
    }

    step!("tests/java/fetch-jars.sh (kafka-clients 3.9.1 and its codec jars)");
    let out = Command::new("timeout")
        .args([FETCH_TIMEOUT_SECS, "bash", &format!("{dir}/fetch-jars.sh")])
        .output()
        .map_err(|e| format!("run fetch-jars.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tests/java/fetch-jars.sh failed: {}",
            common::output_text(&out)
        ));
    }
    let jars = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if jars.is_empty() {
        return Err("tests/java/fetch-jars.sh printed no classpath".to_string());
    }

    // Compiled afresh by each test process, into the target's tmp dir (it
    // goes with `cargo clean`).
    let classes = Path::new(env!("CARGO_TARGET_TMPDIR")).join("java_client/classes");
    let _ = std::fs::remove_dir_all(&classes);
    std::fs::create_dir_all(&classes).map_err(|e| format!("create {}: {e}", classes.display()))?;
    step!("javac RunnelCheck.java -> {}", classes.display());
    let out = Command::new("timeout")
        .arg(JAVAC_TIMEOUT_SECS)
        .arg("javac")
        .arg("-Xlint:all")
        .arg("-d")
        .arg(&classes)
        .args(["-cp", &jars])
        .arg(format!("{dir}/RunnelCheck.java"))
        .output()
        .map_err(|e| format!("run javac: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "javac RunnelCheck.java failed: {}",
            common::output_text(&out)
        ));
    }
    Ok(JavaCheck {
        classpath: format!("{}:{jars}", classes.display()),
    })
}

/// The major version `tool -version` reports ("openjdk version \"17.0.15\"",
/// "javac 17.0.15"), or why there is none.
fn jdk_major(tool: &str) -> Result<u32, String> {
    let missing = || {
        format!(
            "{tool} is not installed or does not run; this test needs a JDK 17 \
             (Debian: apt-get install openjdk-17-jdk-headless)"
        )
    };
    let out = Command::new(tool)
        .arg("-version")
        .output()
        .map_err(|_| missing())?;
    if !out.status.success() {
        return Err(format!("{}\n{}", missing(), common::output_text(&out)));
    }
    // java prints its version on stderr, javac (since 9) on stdout.
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    text.split(|c: char| !c.is_ascii_digit() && c != '.')
        .find_map(|w| w.split('.').next()?.parse::<u32>().ok())
        .ok_or_else(|| format!("{tool} -version printed no version: {text}"))
}

/// One line RunnelCheck printed for a check.
struct CheckLine {
    name: String,
    passed: bool,
    /// After the name: "(12 ms) -- note" or the failure's reason.
    detail: String,
}

impl CheckLine {
    fn parse(line: &str) -> Option<CheckLine> {
        if let Some(rest) = line.strip_prefix("PASS ") {
            let (name, detail) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(CheckLine {
                name: name.to_string(),
                passed: true,
                detail: detail.to_string(),
            })
        } else if let Some(rest) = line.strip_prefix("FAIL ") {
            let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
            Some(CheckLine {
                name: name.to_string(),
                passed: false,
                detail: detail.to_string(),
            })
        } else {
            None
        }
    }
}

/// What one run of RunnelCheck did.
struct Run {
    /// None if it was killed at RUN_TIMEOUT.
    status: Option<ExitStatus>,
    stdout: Vec<String>,
    stderr: String,
    took: Duration,
}

/// Runs RunnelCheck against `bootstrap`, echoing each line it prints into the
/// step log as it comes, and kills it after RUN_TIMEOUT.
fn run_java(java: &JavaCheck, bootstrap: &str, rf: usize, brokers: usize) -> Run {
    let start = Instant::now();
    step!("java RunnelCheck {bootstrap} {rf} {brokers}");
    let mut child = Command::new("java")
        // A short-lived client on a small machine: start fast, stay small.
        .args(["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-Xmx256m"])
        .args(["-cp", &java.classpath, "RunnelCheck", bootstrap])
        .arg(rf.to_string())
        .arg(brokers.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn java: {e}"));

    // Lines of stdout through a channel (so that waiting on them is
    // bounded); stderr collected whole (SLF4J's NOP warning, or a crash).
    let (tx, rx) = mpsc::channel::<String>();
    let stdout = child.stdout.take().expect("stdout");
    let out_reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut stderr_pipe = child.stderr.take().expect("stderr");
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let deadline = start + RUN_TIMEOUT;
    let mut stdout_lines = Vec::new();
    let mut killed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                uncaptured(&format!("java | {line}"));
                stdout_lines.push(line);
            }
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                step!("RunnelCheck still running after {RUN_TIMEOUT:?}: killing the JVM");
                let _ = child.kill();
                killed = true;
                break;
            }
        }
    }
    let status = child.wait().expect("wait for java");
    // After a kill the pipes close with the process.
    let _ = out_reader.join();
    stdout_lines.extend(rx.try_iter());
    let stderr = err_reader.join().unwrap_or_default();
    for line in stderr.lines() {
        step!("java stderr | {line}");
    }
    Run {
        status: (!killed).then_some(status),
        stdout: stdout_lines,
        stderr,
        took: start.elapsed(),
    }
}

/// Writes a step line straight to the process's stderr, past the test
/// harness's capture (which only takes `print!`/`eprint!`), so that each
/// Java check's PASS/FAIL line is in the CI log even when the test passes.
fn uncaptured(msg: &str) {
    use std::io::Write;
    let line = format!("[{}] {msg}\n", common::elapsed());
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// Runs RunnelCheck and asserts that it ran to the end and every check
/// passed; reports each failure (and the transactional check either way)
/// first.
fn assert_all_checks_pass(label: &str, bootstrap: &str, rf: usize, brokers: usize) {
    let java = java_check();
    let run = run_java(java, bootstrap, rf, brokers);
    let checks: Vec<CheckLine> = run
        .stdout
        .iter()
        .filter_map(|l| CheckLine::parse(l))
        .collect();
    let failed: Vec<&CheckLine> = checks.iter().filter(|c| !c.passed).collect();
    uncaptured(&format!(
        "{label}: {} of {} checks passed in {:.1?}",
        checks.len() - failed.len(),
        checks.len(),
        run.took
    ));
    if let Some(txn) = checks
        .iter()
        .find(|c| c.name == "transactional_producer_fails_fast")
    {
        let verdict = if txn.passed { "PASS" } else { "FAIL:" };
        step!(
            "{label}: transactional_producer_fails_fast {verdict} {}",
            txn.detail
        );
    }
    for c in &failed {
        step!("{label}: FAIL {}: {}", c.name, c.detail);
    }

    let output = || {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            run.stdout.join("\n"),
            run.stderr
        )
    };
    let Some(status) = run.status else {
        panic!(
            "{label}: RunnelCheck did not finish within {RUN_TIMEOUT:?}\n{}",
            output()
        );
    };
    let summary = run.stdout.iter().find(|l| l.starts_with("SUMMARY "));
    assert!(
        summary.is_some(),
        "{label}: RunnelCheck stopped before its summary ({status})\n{}",
        output()
    );
    assert!(
        failed.is_empty(),
        "{label}: the Java client failed {} check(s): {}\n{}",
        failed.len(),
        failed
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        failed
            .iter()
            .map(|c| format!("FAIL {}: {}", c.name, c.detail))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        status.success(),
        "{label}: RunnelCheck exited with {status} though no check failed\n{}",
        output()
    );
}

#[test]
fn java_client_against_one_node() {
    let _serial = common::serial();
    // A missing JDK fails here, before any broker starts.
    java_check();
    let node = Node::start(&[]);
    assert_all_checks_pass("one node", &node.bootstrap(), 1, 1);
}

#[test]
fn java_client_against_three_nodes() {
    let _serial = common::serial();
    java_check();
    let c = Cluster::start(3);
    assert_all_checks_pass("three nodes", &c.bootstrap_all(), 3, 3);
}
