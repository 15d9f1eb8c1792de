//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`;
//! `scripts/test` installs them): enough of the W3C WebDriver protocol for a test to load a
//! page, wait for what it shows, type, click, and take a screenshot.
//!
//! `CHROMEDRIVER` and `CHROMIUM` name the binaries when they are not on PATH.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::scenario::http_request;

/// The key WebDriver's W3C protocol names an element reference with.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

fn which(var: &str, names: &[&str]) -> anyhow::Result<PathBuf> {
    if let Ok(p) = std::env::var(var) {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/bin")]) {
        for name in names {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    bail!(
        "{} not found: install Debian's chromium and chromium-driver (scripts/test does: apt-get install -y chromium chromium-driver) or set {var}",
        names[0]
    )
}

/// A chromedriver process and one headless browser session; both end when dropped.
#[derive(Debug)]
pub struct Browser {
    driver: Child,
    addr: String,
    session: String,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and a headless Chromium session of `width`×`height`.
    pub fn start(width: u32, height: u32) -> anyhow::Result<Self> {
        let chromedriver = which("CHROMEDRIVER", &["chromedriver"])?;
        let chromium = which("CHROMIUM", &["chromium", "chromium-browser", "google-chrome"])?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", chromedriver.display()))?;
        let profile = tempfile::tempdir()?;
        let mut browser = Self {
            driver,
            addr: format!("127.0.0.1:{port}"),
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while browser.call("GET", "/status", None).is_err() {
            if Instant::now() > deadline {
                bail!("chromedriver did not answer on {} within 20 s", browser.addr);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let args = [
            "--headless=new".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", browser._profile.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let session = browser.call("POST", "/session", Some(&caps))?;
        browser.session = session["sessionId"]
            .as_str()
            .with_context(|| format!("no session id in {session}"))?
            .to_owned();
        Ok(browser)
    }

    /// One WebDriver command: its `value`, or the driver's error.
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> anyhow::Result<Value> {
        let empty = json!({});
        let body = body.or((method == "POST").then_some(&empty));
        let response = http_request(&self.addr, method, path, &[], body)?;
        let (head, rest) = response.split_once("\r\n\r\n").context("no HTTP head")?;
        let text = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
            dechunk(rest)
        } else {
            rest.to_owned()
        };
        let v: Value = serde_json::from_str(&text)
            .with_context(|| format!("{method} {path}: not JSON: {text:.300}"))?;
        if let Some(error) = v["value"]["error"].as_str() {
            bail!("{method} {path}: {error}: {}", v["value"]["message"]);
        }
        Ok(v["value"].clone())
    }

    fn session_call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        self.call(method, &format!("/session/{}{path}", self.session), body)
    }

    pub fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.session_call("POST", "/url", Some(&json!({"url": url}))).map(drop)
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page: its result.
    pub fn eval(&self, script: &str, args: Value) -> anyhow::Result<Value> {
        self.session_call("POST", "/execute/sync", Some(&json!({"script": script, "args": args})))
    }

    /// Polls `script` until it returns something other than null or false.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> anyhow::Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.eval(script, json!([]))?;
            if !(v.is_null() || v == json!(false)) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("the page did not show {what} within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The first element matching the CSS `selector`.
    pub fn find(&self, selector: &str) -> anyhow::Result<String> {
        let v = self.session_call(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": selector})),
        )?;
        v[ELEMENT].as_str().map(str::to_owned).with_context(|| format!("no element in {v}"))
    }

    pub fn type_into(&self, selector: &str, text: &str) -> anyhow::Result<()> {
        let el = self.find(selector)?;
        self.session_call("POST", &format!("/element/{el}/value"), Some(&json!({"text": text})))
            .map(drop)
    }

    pub fn click(&self, selector: &str) -> anyhow::Result<()> {
        let el = self.find(selector)?;
        self.session_call("POST", &format!("/element/{el}/click"), None).map(drop)
    }

    /// A PNG of the whole window.
    pub fn screenshot(&self) -> anyhow::Result<Vec<u8>> {
        use base64::Engine as _;
        let v = self.session_call("GET", "/screenshot", None)?;
        let b64 = v.as_str().context("no screenshot")?;
        Ok(base64::engine::general_purpose::STANDARD.decode(b64)?)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self.call("DELETE", &format!("/session/{}", self.session), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The body of a `Transfer-Encoding: chunked` response.
fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, tail)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else { break };
        if n == 0 || tail.len() < n {
            break;
        }
        out.push_str(&tail[..n]);
        rest = tail[n..].trim_start_matches("\r\n");
    }
    out
}

/// Where tests put what a person should look at afterwards (screenshots): `target/test-output`.
pub fn output_dir() -> anyhow::Result<PathBuf> {
    let dir = crate::fleet::bin_dir()?.parent().context("no target dir")?.join("test-output");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
