//! A scripted HTTP server on loopback, for answers no Salesforce org gives on demand (a token
//! endpoint echoing secrets, a proxy's `Retry-After`, a connection dropped after the request
//! arrived). Each connection carries one request and its scripted reply.

use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the stub does with a request.
pub enum Reply {
    /// Answers with this status, extra headers and JSON (or other) body.
    Answer {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: String,
    },
    /// Reads the request whole, then closes the connection without a word.
    HangUp,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Reply::Answer {
            status,
            headers: Vec::new(),
            body: body.into(),
        }
    }
}

/// A running stub; dropping it stops the server.
pub struct Stub {
    url: String,
    server: tokio::task::JoinHandle<()>,
}

impl Stub {
    /// Serves `reply(path, url)` for each request, `url` being the stub's own base URL.
    pub async fn start(reply: impl Fn(&str, &str) -> Reply + Send + Sync + 'static) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let reply = Arc::new(reply);
        let base = url.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let reply = reply.clone();
                let base = base.clone();
                tokio::spawn(async move { serve(stream, |path| reply(path, &base)).await });
            }
        });
        Stub { url, server }
    }

    /// `http://ADDR`: the login URL, and the instance URL when the stub hands out itself.
    pub fn url(&self) -> String {
        self.url.clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// A token answer granting a session on `instance_url`.
pub fn session_on(instance_url: &str) -> Reply {
    Reply::json(
        200,
        serde_json::json!({
            "access_token": "00DSTUB!session",
            "instance_url": instance_url,
            "token_type": "Bearer",
        })
        .to_string(),
    )
}

async fn serve(mut stream: TcpStream, reply: impl Fn(&str) -> Reply) {
    let Some(path) = read_request(&mut stream).await else {
        return;
    };
    match reply(&path) {
        Reply::HangUp => {}
        Reply::Answer {
            status,
            headers,
            body,
        } => {
            let mut answer = format!(
                "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                body.len()
            );
            for (name, value) in headers {
                answer.push_str(&format!("{name}: {value}\r\n"));
            }
            answer.push_str("\r\n");
            answer.push_str(&body);
            let _ = stream.write_all(answer.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    }
}

/// Reads one request whole (head and `content-length` body); answers its path.
async fn read_request(stream: &mut TcpStream) -> Option<String> {
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        received.extend_from_slice(&chunk[..read]);
        if let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&received[..head_end]).to_string();
    let body_len: usize = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    while received.len() < head_end + body_len {
        let read = stream.read(&mut chunk).await.ok().filter(|n| *n > 0)?;
        received.extend_from_slice(&chunk[..read]);
    }
    let target = head.split_whitespace().nth(1)?;
    Some(target.split('?').next().unwrap_or(target).to_string())
}
