//! `runnel healthcheck`: asks a node's HTTP listener (`metrics.listener`)
//! for `/health` or `/ready` and exits 0 on HTTP 200, else 1: for container
//! healthchecks and scripts on machines without curl.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use clap::Args;

/// The answer is bounded: a status line and a short reason.
const MAX_ANSWER: u64 = 64 * 1024;

#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// Ask `/ready` (registered, unfenced, caught up with metadata) instead of `/health`.
    #[arg(long)]
    pub ready: bool,
    /// The node's metrics.listener.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:9644")]
    pub address: String,
    /// Seconds to wait for the answer.
    #[arg(long, default_value_t = 5)]
    pub timeout: u64,
}

pub fn run(args: HealthcheckArgs) -> i32 {
    let path = if args.ready { "/ready" } else { "/health" };
    match get(
        &args.address,
        path,
        Duration::from_secs(args.timeout.max(1)),
    ) {
        Ok((200, body)) => {
            print!("{body}");
            0
        }
        Ok((status, body)) => {
            eprint!("{path}: HTTP {status}: {body}");
            1
        }
        Err(e) => {
            eprintln!("{path}: cannot ask {}: {e}", args.address);
            1
        }
    }
}

/// One HTTP/1.1 GET; the status code and body.
fn get(address: &str, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let addr = address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    s.take(MAX_ANSWER).read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP answer: {head:?}")))?;
    Ok((status, body.to_string()))
}
