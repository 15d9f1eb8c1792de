//! One logging setup for every agent: `plain` for people, `json` for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line, for log shippers.
    Json,
    /// Human-readable lines.
    Plain,
}

/// A `--log` filter that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("invalid --log {value:?}: {problem}")]
pub struct LogFilterError {
    pub value: String,
    pub problem: String,
}

/// Parses a filter such as `info` or `info,async_nats=warn`.
pub fn parse_filter(spec: &str) -> Result<Targets, LogFilterError> {
    spec.parse::<Targets>()
        .map_err(|e| LogFilterError { value: spec.to_owned(), problem: e.to_string() })
}

/// Installs the global subscriber. Call once, at the top of `main`; later calls are ignored
/// (tests start many agents in one process).
pub fn init(format: LogFormat, filter: &str) -> Result<(), LogFilterError> {
    let targets = parse_filter(filter)?;
    let registry = tracing_subscriber::registry().with(targets);
    // try_init fails only when a subscriber is already installed, which is fine.
    let _ = match format {
        LogFormat::Json => registry
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Plain => {
            let ansi = std::io::stderr().is_terminal();
            registry
                .with(tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
                .try_init()
        }
    };
    Ok(())
}
