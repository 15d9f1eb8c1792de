//! The console binary (`cn-console`) on a free port, against a [`Fleet`].

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::fleet::{Fleet, binary};

/// A running console; killed when dropped.
#[derive(Debug)]
pub struct Console {
    child: Child,
    /// host:port it serves on.
    pub addr: String,
}

impl Console {
    /// Starts it as NATS user `user` with `args` (e.g. `--allow-decisions`) and `env`, and
    /// waits for its `console: http://…` line.
    pub fn start(
        fleet: &Fleet,
        user: &str,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let mut child = Command::new(binary("cn-console")?)
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("NATS_URL", fleet.server.url())
            .env("NATS_USER", user)
            .env("NATS_PASSWORD_FILE", fleet.password_file(user))
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("console: http://")
            .with_context(|| format!("the console printed {line:?}, not its address"))?
            .to_owned();
        Ok(Self { child, addr })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
