//! What the suite's workloads share: statistics, child processes with a
//! deadline, /proc CPU times, topic deletion, dates.

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The median (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => (s[n / 2 - 1] + s[n / 2]) / 2.0,
    }
}

/// Kafka's percentile of a sorted sample: the element at `floor(p × n)`.
pub fn percentile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    Some(sorted[((p * sorted.len() as f64) as usize).min(sorted.len() - 1)])
}

/// p50, p99, p99.9 and max of latencies given in ns, as figures in ms
/// named "p50 <what>", …, "max <what>" (sorts `lat`).
pub fn latency_figures(lat: &mut [u64], what: &str) -> Vec<crate::Figure> {
    lat.sort_unstable();
    [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999), ("max", 1.0)]
        .into_iter()
        .map(|(name, p)| {
            let ms = percentile(lat, p).map_or(f64::NAN, |ns| ns as f64 / 1e6);
            crate::Figure::new(format!("{name} {what}"), ms, "ms")
        })
        .collect()
}

pub const MIB: f64 = 1024.0 * 1024.0;

/// A child process whose stdout and stderr are collected as it runs.
pub struct Running {
    pub child: Child,
    what: String,
    out: Option<JoinHandle<String>>,
    err: Option<JoinHandle<String>>,
}

/// What a finished child printed.
pub struct Finished {
    pub stdout: String,
    pub stderr: String,
}

fn drain(r: Option<impl Read + Send + 'static>) -> Option<JoinHandle<String>> {
    r.map(|mut r| {
        std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = r.read_to_end(&mut b);
            String::from_utf8_lossy(&b).into_owned()
        })
    })
}

/// The last few lines of `s`, for error messages.
pub fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}

impl Running {
    pub fn spawn(what: &str, cmd: &mut Command) -> Result<Running, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{what}: spawn: {e}"))?;
        let out = drain(child.stdout.take());
        let err = drain(child.stderr.take());
        Ok(Running {
            child,
            what: what.to_string(),
            out,
            err,
        })
    }

    fn collect(&mut self) -> Finished {
        Finished {
            stdout: self
                .out
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
            stderr: self
                .err
                .take()
                .and_then(|h| h.join().ok())
                .unwrap_or_default(),
        }
    }

    /// Waits until it exits (killing it after `timeout`); an error unless it
    /// exited with status 0.
    pub fn wait(mut self, timeout: Duration) -> Result<Finished, String> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(st)) => {
                    let f = self.collect();
                    if st.success() {
                        return Ok(f);
                    }
                    return Err(format!(
                        "{} exited with {st}: {}",
                        self.what,
                        tail(&format!("{}\n{}", f.stdout, f.stderr), 4)
                    ));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    let f = self.collect();
                    return Err(format!(
                        "{} still running after {:.0} s, killed: {}",
                        self.what,
                        timeout.as_secs_f64(),
                        tail(&f.stdout, 2)
                    ));
                }
                Err(e) => return Err(format!("{}: wait: {e}", self.what)),
            }
        }
    }

    /// Kills it and returns what it printed.
    pub fn kill(mut self) -> Finished {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.collect()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `getconf CLK_TCK`, 100 if that fails.
pub fn clk_tck() -> f64 {
    static TCK: OnceLock<f64> = OnceLock::new();
    *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of a process, in seconds, from /proc/<pid>/stat.
pub fn cpu_seconds(pid: u32) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    // The command name (field 2) is in parentheses and may hold spaces;
    // fields 14 and 15 (utime, stime) are the 12th and 13th after it.
    let rest = &stat[stat.rfind(')').ok_or("bad /proc stat")? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, String> {
        f.get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/stat: no field {}", i + 3))
    };
    Ok((ticks(11)? + ticks(12)?) / clk_tck())
}

/// The summed CPU seconds of the cluster's nodes.
pub fn cluster_cpu(c: &crate::support::Cluster) -> Result<f64, String> {
    c.children.iter().map(|ch| cpu_seconds(ch.id())).sum()
}

/// Waits until Metadata lists `n` brokers (60 s at most).
pub fn wait_for_brokers(bootstrap: &str, n: usize) -> Result<(), String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match consumer.fetch_metadata(None, Duration::from_secs(2)) {
            Ok(m) if m.brokers().len() >= n => return Ok(()),
            other if Instant::now() > deadline => {
                return Err(format!(
                    "the {n}-node cluster did not form in 60 s: {}",
                    match other {
                        Ok(m) => format!("{} brokers", m.brokers().len()),
                        Err(e) => e.to_string(),
                    }
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(300)),
        }
    }
}

/// Deletes topics (best effort: the data of earlier runs would only take
/// disk space and page cache).
pub fn delete_topics(bootstrap: &str, names: &[&str]) {
    let res = (|| -> Result<(), String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .create()
            .map_err(|e| e.to_string())?;
        let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let r = rt
            .block_on(admin.delete_topics(names, &opts))
            .map_err(|e| e.to_string())?;
        for t in r {
            t.map_err(|(t, e)| format!("{t}: {e}"))?;
        }
        Ok(())
    })();
    if let Err(e) = res {
        eprintln!("[suite]     note: could not delete {names:?}: {e}");
    }
}

/// `YYYY-MM-DDTHH:MM:SSZ` of seconds since the epoch.
pub fn utc_date(secs: u64) -> String {
    let (days, rem) = ((secs / 86_400) as i64, secs % 86_400);
    let (y, m, d) = runnel::admin::perf::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
