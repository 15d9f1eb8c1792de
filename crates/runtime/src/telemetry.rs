//! One logging setup for every agent: `plain` for people, `json` for log shippers.

use std::io::IsTerminal;

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{ConfigError, LogFormat};

/// Parses a filter such as `info` or `info,async_nats=warn`.
pub fn parse_filter(spec: &str) -> Result<Targets, ConfigError> {
    spec.parse::<Targets>()
        .map_err(|e| ConfigError::LogFilter { value: spec.to_owned(), problem: e.to_string() })
}

/// Installs the global subscriber. Call once, at the top of `main`; later calls are ignored
/// (tests start many agents in one process).
pub fn init(format: LogFormat, filter: &str) -> Result<(), ConfigError> {
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
