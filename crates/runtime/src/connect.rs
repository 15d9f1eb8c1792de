//! The one way agents connect to NATS.
//!
//! Named connections (visible in `nats server report connections`), credentials when
//! configured, reconnect forever, and every connection event logged. Slow-consumer drops and
//! permission violations reach a client only as asynchronous events, so they are logged at
//! `error` with the words an operator will search for.

use std::time::Duration;

use async_nats::{Client, ConnectOptions, Event, ServerAddr, ServerError};
use tracing::{error, info, warn};

/// The NATS password, from the flag, the variable or the file.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// What to do when the first connection fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstConnect {
    /// Keep trying in the background and return the client at once: an agent started before
    /// its NATS server waits for it instead of exiting.
    Wait,
    /// Fail at once with the error (a CLI should say so, not hang).
    FailFast,
}

/// Connects with the given name and credentials; reconnects forever once connected. Replies
/// arrive under `inbox_prefix` when given (an agent's own, so its NATS user needs no
/// `allow_responses` and sees no one else's replies), else under `_INBOX`.
pub async fn connect(
    name: &str,
    servers: &[ServerAddr],
    credentials: Option<&Credentials>,
    inbox_prefix: Option<&str>,
    first: FirstConnect,
) -> Result<Client, async_nats::ConnectError> {
    let mut options = ConnectOptions::new()
        .name(name)
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .reconnect_delay_callback(reconnect_delay)
        .event_callback(move |event| async move { log_event(&event) });
    if first == FirstConnect::Wait {
        options = options.retry_on_initial_connect();
    }
    if let Some(c) = credentials {
        options = options.user_and_password(c.user.clone(), c.password.clone());
    }
    if let Some(prefix) = inbox_prefix {
        options = options.custom_inbox_prefix(prefix);
    }
    options.connect(servers).await
}

/// 0 ms, then doubling from 100 ms up to 5 s.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts == 0 {
        return Duration::ZERO;
    }
    let exp = u32::try_from(attempts.min(16)).unwrap_or(16);
    Duration::from_millis(100u64.saturating_mul(1u64 << exp.min(6))).min(Duration::from_secs(5))
}

fn log_event(event: &Event) {
    match event {
        Event::Connected => info!("connected to NATS"),
        Event::Disconnected => warn!("disconnected from NATS; reconnecting"),
        Event::LameDuckMode => warn!("NATS server entered lame duck mode; it will shut down soon"),
        Event::Draining => info!("draining the NATS connection"),
        Event::Closed => info!("NATS connection closed"),
        Event::SlowConsumer(sid) => error!(
            subscription = sid,
            "SLOW CONSUMER: messages for subscription {sid} were dropped because this agent did not keep up"
        ),
        Event::ServerError(ServerError::AuthorizationViolation) => error!(
            "AUTHORIZATION VIOLATION: the NATS server rejected this agent's credentials (check --nats-user and the password)"
        ),
        Event::ServerError(ServerError::SlowConsumer(sid)) => {
            error!(
                subscription = sid,
                "SLOW CONSUMER reported by the server for subscription {sid}"
            )
        }
        Event::ServerError(ServerError::Other(msg)) => {
            if msg.to_ascii_lowercase().contains("permissions violation") {
                error!(server_message = %msg, "PERMISSION VIOLATION: {msg}");
            } else {
                error!(server_message = %msg, "NATS server error: {msg}");
            }
        }
        // While the server is unreachable every reconnect attempt reports an IO error.
        Event::ClientError(e) => warn!(error = %e, "cannot reach NATS ({e}); retrying"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_backs_off_and_caps() {
        assert_eq!(reconnect_delay(0), Duration::ZERO);
        assert_eq!(reconnect_delay(1), Duration::from_millis(200));
        assert_eq!(reconnect_delay(100), Duration::from_secs(5));
    }
}
