//! A real nats-server for one test: random port, temporary store, scenario config.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use tempfile::TempDir;

/// A running nats-server, killed on drop.
#[derive(Debug)]
pub struct NatsServer {
    child: Option<Child>,
    dir: TempDir,
    port: u16,
    setup: Setup,
}

/// What a scenario adds to the base config (JetStream on a random port).
#[derive(Debug, Clone, Default)]
pub struct Setup {
    /// Appended to the config file.
    pub extra_config: String,
    /// Files written next to the config (for `include`).
    pub files: Vec<(String, String)>,
    /// Environment of the server process (for `$VAR` references in the config).
    pub env: Vec<(String, String)>,
}

impl NatsServer {
    /// A server with JetStream, no authorization and the contract's streams, as the bootstrap
    /// step (`cnctl streams ensure`) leaves them.
    pub fn start() -> anyhow::Result<Self> {
        let server = Self::bare()?;
        let url = server.url();
        // Its own thread and runtime, so that both sync and async tests can call this.
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let client = async_nats::connect(url).await?;
                agent_runtime::streams::ensure_streams(&async_nats::jetstream::new(client)).await?;
                anyhow::Ok(())
            })
        })
        .join()
        .map_err(|_| anyhow::anyhow!("the stream bootstrap thread panicked"))??;
        Ok(server)
    }

    /// A server with JetStream, no authorization and no streams yet.
    pub fn bare() -> anyhow::Result<Self> {
        Self::start_with(Setup::default())
    }

    /// A server with JetStream plus a scenario's config, files and environment.
    pub fn start_with(setup: Setup) -> anyhow::Result<Self> {
        let dir =
            tempfile::Builder::new().prefix("cn-nats-").tempdir().context("creating a temp dir")?;
        for (name, contents) in &setup.files {
            std::fs::write(dir.path().join(name), contents)?;
        }
        let mut server = Self { child: None, dir, port: 0, setup };
        server.launch()?;
        Ok(server)
    }

    /// The binary: `$NATS_SERVER`, else `nats-server` on PATH, else Debian's `/usr/sbin/nats-server`.
    fn binary() -> anyhow::Result<PathBuf> {
        if let Some(p) = std::env::var_os("NATS_SERVER") {
            return Ok(PathBuf::from(p));
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        let candidates = std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")]);
        for dir in candidates {
            let p = dir.join("nats-server");
            if p.is_file() {
                return Ok(p);
            }
        }
        bail!(
            "nats-server not found: install it (apt-get install -y nats-server) or set NATS_SERVER; scripts/test does this for you"
        )
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let ports_dir = self.dir.path().join("ports");
        let _ = std::fs::remove_dir_all(&ports_dir);
        std::fs::create_dir_all(&ports_dir)?;
        let listen = if self.port == 0 { "-1".to_owned() } else { self.port.to_string() };
        let conf = format!(
            "listen: \"127.0.0.1:{listen}\"\nports_file_dir: \"{ports}\"\nmax_payload: 1MB\njetstream {{\n  store_dir: \"{store}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}\n{extra}\n",
            ports = ports_dir.display(),
            store = self.dir.path().join("js").display(),
            extra = self.setup.extra_config,
        );
        let conf_path = self.dir.path().join("server.conf");
        std::fs::write(&conf_path, conf)?;
        let log = std::fs::File::create(self.dir.path().join("server.log"))?;
        let child = Command::new(Self::binary()?)
            .arg("-c")
            .arg(&conf_path)
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawning nats-server")?;
        self.child = Some(child);
        self.port = self.wait_for_port(&ports_dir)?;
        Ok(())
    }

    fn wait_for_port(&mut self, ports_dir: &Path) -> anyhow::Result<u16> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    bail!("nats-server exited with {status}:\n{}", self.log());
                }
            }
            for entry in std::fs::read_dir(ports_dir)?.flatten() {
                let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
                let parsed: serde_json::Value = match serde_json::from_str(&text) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let url = parsed["nats"][0].as_str().unwrap_or_default();
                if let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok()) {
                    return Ok(port);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!("nats-server did not report its port within 10s:\n{}", self.log())
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// Kills the server (SIGKILL), keeping its store.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills and starts the server again on the same port with the same store.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.launch()
    }

    /// A client without credentials.
    pub async fn client(&self) -> anyhow::Result<async_nats::Client> {
        async_nats::connect(self.url()).await.context("connecting to the test nats-server")
    }
}

/// `n` servers on loopback, each with JetStream and its own store, with routes between them:
/// a JetStream cluster, for replicated streams and for losing a server.
#[derive(Debug)]
pub struct NatsCluster {
    pub servers: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the servers (named `cn-1` … `cn-n`, cluster `cn`) with a scenario's config each;
    /// returns once each accepts clients (JetStream elects its meta leader a moment later).
    pub fn start_with(n: usize, setup: Setup) -> anyhow::Result<Self> {
        // Route ports known before any server starts: free now, taken by the servers next.
        let ports = (0..n)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
                Ok(listener.local_addr()?.port())
            })
            .collect::<anyhow::Result<Vec<u16>>>()?;
        let routes: Vec<String> =
            ports.iter().map(|p| format!("\"nats-route://127.0.0.1:{p}\"")).collect();
        let mut servers = Vec::with_capacity(n);
        for (i, port) in ports.iter().enumerate() {
            let mut node = setup.clone();
            node.extra_config = format!(
                "server_name: \"cn-{}\"\ncluster {{\n  name: \"cn\"\n  listen: \"127.0.0.1:{port}\"\n  routes: [{}]\n}}\n{}",
                i + 1,
                routes.join(", "),
                setup.extra_config
            );
            servers.push(NatsServer::start_with(node)?);
        }
        Ok(Self { servers })
    }

    /// Every server's client URL, comma-separated.
    pub fn url(&self) -> String {
        self.servers.iter().map(NatsServer::url).collect::<Vec<_>>().join(",")
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}
