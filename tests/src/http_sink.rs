//! An HTTP endpoint of the test's own on a free port (an OTLP collector, a webhook receiver):
//! it keeps every request, and answers `200 {}` — or, for the first `fail_first` requests,
//! `503`, to inject failures.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request received.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request line and headers, as sent.
    pub head: String,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn path(&self) -> &str {
        self.head.split(' ').nth(1).unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
        })
    }
}

/// The endpoint; it stops with the test process.
#[derive(Debug, Clone)]
pub struct HttpSink {
    pub addr: String,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl HttpSink {
    /// Answers every request `200 {}`.
    pub fn start() -> std::io::Result<Self> {
        Self::failing_first(0)
    }

    /// Answers the first `n` requests `503 Service Unavailable`, then `200 {}`.
    pub fn failing_first(n: usize) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let kept = requests.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let failing = kept.lock().map(|r| r.len() < n).unwrap_or(false);
                if let Some(request) = answer(tcp, if failing { 503 } else { 200 }) {
                    if let Ok(mut r) = kept.lock() {
                        r.push(request);
                    }
                }
            }
        });
        Ok(Self { addr, requests })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Every request so far.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Reads one request (head and `Content-Length` body) and answers it with `status`.
fn answer(tcp: TcpStream, status: u16) -> Option<Request> {
    tcp.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let mut reader = BufReader::new(tcp);
    let mut head = String::new();
    loop {
        let before = head.len();
        reader.read_line(&mut head).ok()?;
        if head.len() == before || head.ends_with("\r\n\r\n") {
            break;
        }
    }
    let length = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:")?.trim().parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let reason = if status == 200 { "OK" } else { "Service Unavailable" };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    reader.get_mut().write_all(response.as_bytes()).ok()?;
    Some(Request { head, body, status })
}
