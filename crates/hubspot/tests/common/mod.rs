//! What the HubSpot adapter's tests share: a sandbox on loopback and adapters pointed at it.

#![allow(dead_code)] // each test binary uses its own part of this module

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use unisync_core::{AdapterFactory, ConnectionConfig, CredentialStore, SourceAdapter};
use unisync_hubspot::HubspotFactory;
use unisync_hubspot::sandbox::HubspotSandbox;

/// Enough that the pacer never holds the tests back unless a test sets a limit.
pub const TEST_REQUESTS_PER_10S: u64 = 10_000;

/// A fake HubSpot on 127.0.0.1, any port, with `demo_records` contacts.
pub async fn sandbox(demo_records: usize) -> HubspotSandbox {
    let listen: SocketAddr = "127.0.0.1:0".parse().unwrap();
    HubspotSandbox::start(listen, demo_records).await.unwrap()
}

/// A connection table for the sandbox, with `extra` settings and in-memory secrets.
pub fn connection(
    sandbox: &HubspotSandbox,
    extra: Value,
    secrets: &[(&str, String)],
) -> ConnectionConfig {
    let mut settings = json!({
        "base_url": sandbox.base_url(),
        "requests_per_10s": TEST_REQUESTS_PER_10S,
    });
    settings
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    ConnectionConfig::new(
        "hubspot-test",
        "hubspot",
        settings.as_object().unwrap().clone(),
    )
    .with_inline_secrets(secrets.iter().map(|(key, value)| (*key, value.clone())))
}

/// An adapter using the sandbox's static private-app token.
pub fn token_adapter(sandbox: &HubspotSandbox) -> Arc<dyn SourceAdapter> {
    token_adapter_with(sandbox, json!({}))
}

/// An adapter using the sandbox's static private-app token, with `extra` settings.
pub fn token_adapter_with(sandbox: &HubspotSandbox, extra: Value) -> Arc<dyn SourceAdapter> {
    let config = connection(sandbox, extra, &[("access_token", sandbox.access_token())]);
    HubspotFactory
        .build(&config, Arc::new(MemoryCredentials::default()))
        .unwrap()
}

/// Polls `condition` every 20 ms until it holds; panics with `what` after 10 seconds.
pub async fn eventually<F: Future<Output = bool>>(what: &str, mut condition: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A stand-in server on 127.0.0.1 that reads each request whole and answers it with the raw
/// HTTP `answer`, or with nothing at all (`None`: it closes the connection), for failures
/// the sandbox does not imitate.
pub async fn canned_server(answer: Option<String>) -> SocketAddr {
    serve(move |_| answer.clone()).await
}

/// A stand-in server on 127.0.0.1 that answers each request with the raw HTTP answer of the
/// first route whose path part its request line contains (a bare 404 when none does), for
/// answers the sandbox does not give; and the request lines it received, in order.
pub async fn routed_server(
    routes: Vec<(&'static str, String)>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    let addr = serve(move |request_line| {
        log.lock().unwrap().push(request_line.to_string());
        let answer = routes
            .iter()
            .find(|(part, _)| request_line.contains(part))
            .map(|(_, answer)| answer.clone());
        Some(answer.unwrap_or_else(|| http_answer("404 Not Found", "Not Found")))
    })
    .await;
    (addr, received)
}

/// Serves loopback connections, answering each request (by its request line) with what
/// `answer` says, or closing the connection on `None`.
async fn serve(answer: impl Fn(&str) -> Option<String> + Send + Sync + 'static) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let answer = Arc::new(answer);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let request_line = read_request(&mut stream).await;
                if let Some(answer) = answer(&request_line) {
                    let _ = stream.write_all(answer.as_bytes()).await;
                }
            });
        }
    });
    addr
}

/// A raw HTTP/1.1 answer with a JSON (or any) body.
pub fn http_answer(status_line: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status_line}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Reads one request: its head, then as many body bytes as its `content-length` says.
/// Answers its request line (empty when the client went away first).
async fn read_request(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match stream.read(&mut buffer).await {
            Ok(0) | Err(_) => return String::new(),
            Ok(read) => received.extend_from_slice(&buffer[..read]),
        }
        let Some(head_end) = received.windows(4).position(|window| window == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length").then_some(value)
            })
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0);
        if received.len() >= head_end + 4 + length {
            return head.lines().next().unwrap_or_default().to_string();
        }
    }
}

/// An adapter using the sandbox's OAuth app, keeping refresh tokens in `store`.
pub fn oauth_adapter(
    sandbox: &HubspotSandbox,
    store: Arc<MemoryCredentials>,
) -> Arc<dyn SourceAdapter> {
    let oauth = sandbox.oauth_credentials();
    let config = connection(
        sandbox,
        json!({}),
        &[
            ("client_id", oauth.client_id),
            ("client_secret", oauth.client_secret),
            ("refresh_token", oauth.refresh_token),
        ],
    );
    HubspotFactory.build(&config, store).unwrap()
}

/// A [`CredentialStore`] in memory.
#[derive(Default)]
pub struct MemoryCredentials {
    values: Mutex<BTreeMap<String, String>>,
}

impl CredentialStore for MemoryCredentials {
    fn load(&self, key: &str) -> Option<String> {
        self.values.lock().unwrap().get(key).cloned()
    }

    fn save(&self, key: &str, value: &str) -> Result<(), String> {
        self.values
            .lock()
            .unwrap()
            .insert(key.to_string(), value.to_string());
        Ok(())
    }
}
