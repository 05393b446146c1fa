//! Redis for the shared-store tests: the machine's server on 127.0.0.1:6379 (`.ci/run` starts it),
//! one random key namespace per test, removed at the end; never FLUSHALL.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// The Redis the tests share.
pub const URL: &str = "redis://127.0.0.1:6379";

/// Whether a Redis answers PING on `port`.
pub fn answers(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 7];
    matches!(s.read(&mut buf), Ok(n) if n >= 5 && &buf[..5] == b"+PONG")
}

/// True when the shared Redis is up. Without it a test is skipped with a message, except under
/// CI (`CI` set), where it fails: `.ci/run` starts Redis first.
pub fn available(test: &str) -> bool {
    if answers(6379) {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: no Redis on 127.0.0.1:6379 (.ci/run starts one)"
    );
    eprintln!("{test}: skipped: no Redis on 127.0.0.1:6379 (start one to run it)");
    false
}

/// A fresh namespace for one test.
pub fn namespace(test: &str) -> String {
    format!("t-{test}-{:012x}", rand::random::<u64>() >> 16)
}

/// Deletes every key of namespace `ns` on the Redis at `url`.
pub async fn cleanup(url: &str, ns: &str) {
    let Ok(client) = redis::Client::open(url) else {
        return;
    };
    let Ok(mut c) = client.get_multiplexed_async_connection().await else {
        return;
    };
    let mut cursor: u64 = 0;
    loop {
        let r: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{{{ns}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut c)
            .await;
        let Ok((next, keys)) = r else { return };
        if !keys.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("DEL").arg(&keys).query_async(&mut c).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
