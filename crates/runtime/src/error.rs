//! The runtime's errors. Each says what failed and, where there is one, what to do about it.

use crate::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    #[error("stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error(
        "stream {stream} was weakened: {settings}. Refusing to run: records could be lost. Restore the contract's settings with `cnctl streams ensure` (as the bootstrap user) and start again"
    )]
    StreamWeakened { stream: String, settings: String },
    #[error("consumer {consumer}: {message}")]
    Consumer { consumer: String, message: String },
    #[error("publish to {subject} failed: {message}")]
    Publish { subject: String, message: String },
    #[error("proof chain {subject}: {message}")]
    Proof { subject: String, message: String },
    #[error("proof chain {subject}: {message}; inspect it with `cnctl proof verify`")]
    ProofCorrupt { subject: String, message: String },
    #[error(
        "another process is appending to the proof chain {subject}: every running instance of an agent needs its own --instance"
    )]
    ProofChainContended { subject: String },
    #[error("state store {path}: {message}")]
    Store { path: String, message: String },
    #[error(
        "state store {path} is already open in another process: is another instance with the same --instance and --data-dir running?"
    )]
    StoreInUse { path: String },
    #[error(transparent)]
    Encode(#[from] bus_schema::codec::EncodeError),
    #[error("status endpoint: {0}")]
    Service(String),
    #[error("stopped before start-up finished")]
    ShuttingDown,
}

impl RuntimeError {
    /// Errors after which an agent must stop rather than retry: its proof chain is being
    /// written by someone else, its state file is unusable, or the chain's last record is
    /// unreadable, or a stream it relies on was weakened.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            RuntimeError::ProofChainContended { .. }
                | RuntimeError::Store { .. }
                | RuntimeError::StoreInUse { .. }
                | RuntimeError::ProofCorrupt { .. }
                | RuntimeError::StreamWeakened { .. }
        )
    }
}
