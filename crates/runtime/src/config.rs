//! Runtime configuration: flags, each with an environment variable, validated at start.
//!
//! Every agent flattens [`RuntimeArgs`] into its own clap parser. Bad configuration is
//! reported in one clear message and the process exits with 64 (`EX_USAGE`), so a supervisor
//! can tell "fix your config" from "the agent crashed".

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use async_nats::ServerAddr;
use bus_schema::InstanceId;
pub use bus_schema::{DurationError, parse_duration};

pub use crate::connect::Credentials;
pub use crate::telemetry::LogFormat;
use clap::{Args, Parser};

/// Exit code for invalid configuration (sysexits `EX_USAGE`).
pub const EXIT_CONFIG: u8 = 64;
/// Exit code for a runtime failure after a valid start.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code when the bus is not set up as the contract says (a weakened stream): 78, as
/// sysexits' `EX_CONFIG`.
pub const EXIT_BUS_CONFIG: u8 = 78;

/// How to reach NATS: shared by every agent and by cnctl. The flags are global: in cnctl they go
/// before or after a subcommand alike (`cnctl publish --nats-url … metric` and `cnctl publish
/// metric --nats-url …`).
#[derive(Debug, Clone, Args)]
pub struct NatsArgs {
    /// NATS server URL(s), comma-separated (nats://host:port).
    #[arg(long = "nats-url", global = true, help_heading = "Connection", env = "NATS_URL", default_value = "nats://127.0.0.1:4222", value_delimiter = ',', value_parser = parse_server)]
    pub url: Vec<ServerAddr>,

    /// NATS user name (with --nats-password or --nats-password-file).
    #[arg(long = "nats-user", global = true, help_heading = "Connection", env = "NATS_USER")]
    pub user: Option<String>,

    /// NATS password.
    #[arg(
        long = "nats-password",
        global = true,
        help_heading = "Connection",
        env = "NATS_PASSWORD",
        hide_env_values = true,
        conflicts_with = "password_file"
    )]
    pub password: Option<String>,

    /// File holding the NATS password (first line), e.g. a Docker secret.
    #[arg(
        long = "nats-password-file",
        global = true,
        help_heading = "Connection",
        env = "NATS_PASSWORD_FILE"
    )]
    pub password_file: Option<PathBuf>,
}

/// Flags shared by every agent.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    #[command(flatten)]
    pub nats: NatsArgs,

    /// Directory for this agent's local state (redb).
    #[arg(long, env = "CN_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// This instance's id, unique per agent: it names the proof chain and the state file.
    #[arg(long, env = "CN_INSTANCE", default_value = "0")]
    pub instance: InstanceId,

    /// Log format.
    #[arg(long, env = "CN_LOG_FORMAT", value_enum, default_value = "plain")]
    pub log_format: LogFormat,

    /// Log level: error, warn, info, debug or trace, optionally per target (info,async_nats=warn).
    #[arg(long, env = "CN_LOG", default_value = "info,async_nats=warn")]
    pub log: String,

    /// How long to finish in-flight work and drain after SIGINT/SIGTERM (e.g. 10s, 500ms).
    #[arg(long, env = "CN_SHUTDOWN_GRACE", default_value = "10s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Interval between heartbeats on cn.heartbeat.{agent}.{instance}.
    #[arg(long, env = "CN_HEARTBEAT_INTERVAL", default_value = "5s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,

    /// Attempts to handle an input before it is rejected as poison (event_rejected).
    #[arg(long, env = "CN_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,

    /// How long the server waits for an ack before redelivering an input.
    #[arg(long, env = "CN_ACK_WAIT", default_value = "30s", value_parser = parse_duration)]
    pub ack_wait: Duration,

    /// Run as one of several instances of this agent, each owning a share of the service
    /// partitions (leases on CN_LEASES); --instance names this instance and must differ from
    /// the others'. Instances that may take over each other's partitions share --data-dir.
    #[arg(long, env = "CN_PARTITIONED", help_heading = "Scaling out")]
    pub partitioned: bool,

    /// With --partitioned: how long a partition's lease holds without being written again. An
    /// instance that dies has its partitions taken over this long after its last write.
    #[arg(long, env = "CN_LEASE_TTL", default_value = "6s", value_parser = parse_duration, help_heading = "Scaling out")]
    pub lease_ttl: Duration,

    /// Largest accepted input payload, in bytes.
    #[arg(long, env = "CN_MAX_PAYLOAD", default_value_t = 65536, value_parser = clap::value_parser!(u64).range(1024..=8 * 1024 * 1024))]
    pub max_payload: u64,
}

/// A configuration problem: a `--nats-url` clap cannot take, or one found after parsing (files,
/// directories).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{input:?} is not a NATS URL such as nats://127.0.0.1:4222 ({source})")]
    NatsUrl { input: String, source: std::io::Error },
    #[error("cannot read --nats-password-file {path}: {source}")]
    PasswordFile { path: PathBuf, source: std::io::Error },
    #[error("--nats-password-file {path} is empty")]
    EmptyPasswordFile { path: PathBuf },
    #[error("--nats-user is set but neither --nats-password nor --nats-password-file is")]
    MissingPassword,
    /// Checked here rather than by clap: the flags are global, and clap does not see a
    /// `--nats-user` given before a subcommand when it checks a password given after it.
    #[error("--nats-password or --nats-password-file is set but --nats-user is not")]
    MissingUser,
    #[error("cannot use --data-dir {path}: {source}")]
    DataDir { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    LogFilter(#[from] crate::telemetry::LogFilterError),
    #[error("{0}")]
    Partitioning(String),
}

impl NatsArgs {
    /// Reads the password, if any, from wherever it was given.
    pub fn credentials(&self) -> Result<Option<Credentials>, ConfigError> {
        let Some(user) = self.user.clone() else {
            return match (&self.password, &self.password_file) {
                (None, None) => Ok(None),
                _ => Err(ConfigError::MissingUser),
            };
        };
        let password = match (&self.password, &self.password_file) {
            (Some(p), _) => p.clone(),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::PasswordFile { path: path.clone(), source })?;
                let first = text.lines().next().unwrap_or_default().trim().to_owned();
                if first.is_empty() {
                    return Err(ConfigError::EmptyPasswordFile { path: path.clone() });
                }
                first
            }
            (None, None) => return Err(ConfigError::MissingPassword),
        };
        Ok(Some(Credentials { user, password }))
    }

    /// The server URLs as given, for messages.
    pub fn urls(&self) -> String {
        self.url.iter().map(|u| u.clone().into_inner().to_string()).collect::<Vec<_>>().join(",")
    }

    /// Connects as configured (see [`crate::connect::connect`]).
    pub async fn connect(
        &self,
        name: &str,
        inbox_prefix: Option<&str>,
        first: crate::connect::FirstConnect,
    ) -> Result<async_nats::Client, crate::RuntimeError> {
        let credentials = self.credentials()?;
        crate::connect::connect(name, &self.url, credentials.as_ref(), inbox_prefix, first)
            .await
            .map_err(|e| {
                let hint = connect_hint(e.kind(), credentials.as_ref().map(|c| c.user.as_str()));
                crate::RuntimeError::Connect(format!("{} ({e}); {hint}", self.urls()))
            })
    }
}

/// What to do about a failed connection, by its cause: a refused password is not a fleet that
/// is down.
fn connect_hint(kind: async_nats::ConnectErrorKind, user: Option<&str>) -> String {
    use async_nats::ConnectErrorKind as K;
    match (kind, user) {
        (K::AuthorizationViolation | K::Authentication, Some(user)) => format!(
            "the server refused user {user:?} with this password: check --nats-user / NATS_USER and --nats-password-file / NATS_PASSWORD_FILE (scripts/up writes each user's password to $CN_DATA_DIR/creds/<user>.password)"
        ),
        (K::AuthorizationViolation | K::Authentication, None) => "the server wants a user and password: set --nats-user / NATS_USER and --nats-password-file / NATS_PASSWORD_FILE".to_owned(),
        (K::Io | K::TimedOut | K::MaxReconnects | K::Dns, _) => {
            "nothing answers there: is the fleet up (scripts/up)? set --nats-url / NATS_URL".to_owned()
        }
        _ => "set --nats-url / NATS_URL".to_owned(),
    }
}

impl RuntimeArgs {
    /// Creates the data directory if needed and checks it is writable.
    pub fn prepare_data_dir(&self) -> Result<(), ConfigError> {
        let err = |source| ConfigError::DataDir { path: self.data_dir.clone(), source };
        std::fs::create_dir_all(&self.data_dir).map_err(err)?;
        // Several agents may share a data dir and start together: one probe file each.
        let probe = self.data_dir.join(format!(".write-test-{}", std::process::id()));
        std::fs::write(&probe, b"ok").map_err(err)?;
        std::fs::remove_file(&probe).map_err(err)
    }

    /// Every check that needs the filesystem, run once at start.
    pub fn validate(&self) -> Result<(), ConfigError> {
        crate::telemetry::parse_filter(&self.log)?;
        if self.partitioned {
            let name = self.instance.as_str();
            if name
                .strip_prefix('p')
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ConfigError::Partitioning(format!(
                    "--instance {name}: with --partitioned, p0, p1, … name the partitions' proof chains; name the instance otherwise (a, b, or the host's name)"
                )));
            }
            if self.lease_ttl < Duration::from_secs(2) {
                return Err(ConfigError::Partitioning(format!(
                    "--lease-ttl {}ms is too short: leases are written every second, so at least 2s",
                    self.lease_ttl.as_millis()
                )));
            }
        }
        self.prepare_data_dir()?;
        self.nats.credentials().map(drop)
    }
}

/// Parses the command line; on a usage error prints clap's message and exits with 64
/// (`--help` and `--version` exit 0 as usual).
pub fn parse_args<T: Parser>() -> T {
    match T::try_parse() {
        Ok(args) => args,
        Err(e) => {
            let code = if e.use_stderr() { i32::from(EXIT_CONFIG) } else { 0 };
            // Printing can only fail if stdout/stderr are closed; exit with the code regardless.
            let _ = e.print();
            std::process::exit(code);
        }
    }
}

/// Reports a configuration error the same way clap does and returns exit code 64.
pub fn config_failure(program: &str, err: &dyn std::fmt::Display) -> ExitCode {
    eprintln!("error: {err}\n\nFor more information, try '{program} --help'.");
    ExitCode::from(EXIT_CONFIG)
}

fn parse_server(s: &str) -> Result<ServerAddr, ConfigError> {
    s.trim()
        .parse::<ServerAddr>()
        .map_err(|source| ConfigError::NatsUrl { input: s.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct TestCli {
        #[command(flatten)]
        runtime: RuntimeArgs,
    }

    fn parse(args: &[&str]) -> Result<RuntimeArgs, clap::Error> {
        TestCli::try_parse_from(std::iter::once("agent").chain(args.iter().copied()))
            .map(|c| c.runtime)
    }

    #[test]
    fn defaults_are_sensible() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.instance.as_str(), "0");
        assert_eq!(a.shutdown_grace, Duration::from_secs(10));
        assert_eq!(a.max_attempts, 5);
        assert_eq!(a.log_format, LogFormat::Plain);
        assert!(a.nats.credentials().unwrap().is_none());
    }

    #[test]
    fn durations_accept_units_and_reject_nonsense() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").unwrap_err().to_string().contains("unknown unit"));
    }

    #[test]
    fn invalid_values_are_usage_errors_that_explain() {
        let err = parse(&["--instance", "Node.1"]).unwrap_err();
        assert!(err.use_stderr());
        assert!(err.to_string().contains("has 'N' at position 0"), "{err}");
        let err = parse(&["--log-format", "xml"]).unwrap_err();
        assert!(err.to_string().contains("possible values: json, plain"), "{err}");
        let err = parse(&["--max-attempts", "0"]).unwrap_err();
        assert!(err.to_string().contains("--max-attempts"), "{err}");
        // A password without a user is refused when the credentials are read (validate),
        // where a user given on another level of cnctl's subcommands is seen too.
        let alone = parse(&["--nats-password", "x"]).unwrap();
        assert!(matches!(alone.nats.credentials(), Err(ConfigError::MissingUser)));
        assert!(alone.validate().is_err());
        let err = parse(&["--nats-url", "nats://[::1"]).unwrap_err();
        assert!(err.to_string().contains("is not a NATS URL such as"), "{err}");
    }

    #[test]
    fn password_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\n").unwrap();
        let a = parse(&["--nats-user", "executor", "--nats-password-file", file.to_str().unwrap()])
            .unwrap();
        let c = a.nats.credentials().unwrap().unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("executor", "s3cret"));
        assert!(!format!("{c:?}").contains("s3cret"));
        let missing =
            parse(&["--nats-user", "x", "--nats-password-file", "/nonexistent/pw"]).unwrap();
        assert!(matches!(missing.nats.credentials(), Err(ConfigError::PasswordFile { .. })));
        assert!(matches!(
            parse(&["--nats-user", "x"]).unwrap().nats.credentials(),
            Err(ConfigError::MissingPassword)
        ));
        assert!(matches!(
            parse(&["--nats-password-file", file.to_str().unwrap()]).unwrap().nats.credentials(),
            Err(ConfigError::MissingUser)
        ));
    }

    #[test]
    fn an_unwritable_data_dir_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let a = parse(&["--data-dir", file.join("sub").to_str().unwrap()]).unwrap();
        assert!(matches!(a.prepare_data_dir(), Err(ConfigError::DataDir { .. })));
    }
}
