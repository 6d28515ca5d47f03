//! Tracing setup: one line per event on stderr, filtered by `RUST_LOG`
//! (default `info,openraft=warn`).
//!
//! * `Format::Text`: human-readable lines, with ANSI colour only when
//!   stderr is a terminal (never in a file or the journal).
//! * `Format::Json`: one JSON object per line (`timestamp`, `level`,
//!   `fields` with the message, `target`, and the span fields), for log
//!   shippers. `log.format=json`, or `RUNNEL_LOG_FORMAT=json`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The environment variable that picks the format, over `log.format`.
pub const FORMAT_ENV: &str = "RUNNEL_LOG_FORMAT";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

impl Format {
    /// `text` or `json`, any case.
    pub fn parse(s: &str) -> Option<Format> {
        match s.trim().to_ascii_lowercase().as_str() {
            "text" => Some(Format::Text),
            "json" => Some(Format::Json),
            _ => None,
        }
    }

    /// `RUNNEL_LOG_FORMAT` if it is set to a format, else `configured`.
    pub fn from_env_or(configured: Format) -> Format {
        std::env::var(FORMAT_ENV)
            .ok()
            .and_then(|v| Format::parse(&v))
            .unwrap_or(configured)
    }
}

/// The filter when `RUST_LOG` is not set.
pub const DEFAULT_FILTER: &str = "info,openraft=warn";

pub fn init(format: Format) {
    init_with(format, DEFAULT_FILTER)
}

/// As `init`, with another filter for when `RUST_LOG` is not set (e.g. a
/// command that starts Raft only to write its first entries, and has no
/// use for its complaints about unreachable peers).
pub fn init_with(format: Format, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        Format::Text => builder
            .with_target(false)
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        Format::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
    };
}
