//! Fake agents on loopback sockets that misbehave on purpose: hang, reset the connection, answer
//! garbage or an error status, or answer correctly after a delay. `GET /healthz` always answers
//! 200, so only the exchanges themselves fail.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the agent answers `POST /v1/validate`.
#[derive(Clone, Debug)]
pub enum Behaviour {
    /// Reads the request and never answers (the connection stays open).
    Hang,
    /// Reads the request and resets the connection.
    Reset,
    /// Answers this status and body.
    Answer(u16, &'static str),
    /// Answers `{"result":"success"}` after the delay.
    Slow(Duration),
    /// Cycles through these, one per request.
    Cycle(Vec<Behaviour>),
}

pub struct FakeAgent {
    pub url: String,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeAgent {
    pub async fn start(b: Behaviour) -> FakeAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let behaviour = Arc::new(Mutex::new(b));
        let hits = Arc::new(AtomicUsize::new(0));
        let (b2, h2) = (behaviour.clone(), hits.clone());
        let task = tokio::spawn(async move {
            let held = Arc::new(Mutex::new(Vec::new()));
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let (b, h, held) = (b2.clone(), h2.clone(), held.clone());
                tokio::spawn(async move { serve(sock, b, h, held).await });
            }
        });
        FakeAgent {
            url,
            behaviour,
            hits,
            task,
        }
    }

    /// Validate requests received so far.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, b: Behaviour) {
        *self.behaviour.lock().unwrap() = b;
    }
}

impl Drop for FakeAgent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Reads one request head and body; returns the head, or `None` at end of stream.
async fn read_request(sock: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = sock.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut have = buf.len() - head_end;
    while have < len {
        let n = sock.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        have += n;
    }
    Some(head)
}

async fn respond(sock: &mut TcpStream, status: u16, body: &str) -> bool {
    let text = format!(
        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(text.as_bytes()).await.is_ok()
}

async fn serve(
    mut sock: TcpStream,
    behaviour: Arc<Mutex<Behaviour>>,
    hits: Arc<AtomicUsize>,
    held: Arc<Mutex<Vec<TcpStream>>>,
) {
    while let Some(head) = read_request(&mut sock).await {
        if head.starts_with("GET /healthz") {
            if !respond(&mut sock, 200, "{}").await {
                return;
            }
            continue;
        }
        let n = hits.fetch_add(1, Ordering::SeqCst);
        let mut b = behaviour.lock().unwrap().clone();
        if let Behaviour::Cycle(all) = &b {
            b = all[n % all.len()].clone();
        }
        match b {
            Behaviour::Hang => {
                held.lock().unwrap().push(sock);
                return;
            }
            Behaviour::Reset => {
                let _ = sock.set_zero_linger();
                return;
            }
            Behaviour::Answer(status, body) => {
                if !respond(&mut sock, status, body).await {
                    return;
                }
            }
            Behaviour::Slow(d) => {
                tokio::time::sleep(d).await;
                if !respond(&mut sock, 200, r#"{"result":"success"}"#).await {
                    return;
                }
            }
            Behaviour::Cycle(_) => unreachable!("cycles are flattened above"),
        }
    }
}
