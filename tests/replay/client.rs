//! The client that `probe`, `experiment --endpoint` and `bench overhead --endpoint` share, against fake
//! servers nobody here controls: every answer is bounded, and a server that never answers is given up on
//! within the timeout, each with a short error.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use serde_json::json;
use stoplab::client::{Client, ClientOptions, MAX_ANSWER, MAX_LINE};

/// A server on a free loopback port that reads one request and hands the connection to `answer`.
fn fake(answer: impl FnOnce(TcpStream) + Send + 'static) -> (String, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let thread = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        // The whole request (head and body), so closing never resets a connection with unread bytes.
        let mut request = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&request);
            if let Some(head) = text.find("\r\n\r\n") {
                let length = text[..head]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                    })
                    .unwrap_or(0);
                if request.len() >= head + 4 + length {
                    break;
                }
            }
        }
        answer(conn);
    });
    (url, thread)
}

fn client(url: &str, timeout: Duration) -> Client {
    Client::new(ClientOptions {
        url: url.into(),
        api_key: None,
        model: None,
        timeout,
        retries: 0,
    })
    .unwrap()
}

#[test]
fn an_endless_stream_line_is_an_error_after_the_line_limit() {
    let (url, server) = fake(|mut c| {
        let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: ");
        let chunk = vec![b'a'; 64 * 1024];
        // Twice the limit, then hold the line open: the client must not wait for its end.
        for _ in 0..(2 * MAX_LINE / chunk.len()) {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
        std::thread::sleep(Duration::from_secs(2));
    });
    let err = client(&url, Duration::from_secs(30))
        .post("/v1/completions", &json!({"stream": true}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("longer than 1 MiB"), "{err}");
    assert!(
        err.len() < 400,
        "the error quotes a clip, not the line: {} bytes",
        err.len()
    );
    server.join().unwrap();
}

#[test]
fn a_body_beyond_the_answer_limit_is_an_error() {
    let (url, server) = fake(|mut c| {
        let _ = c.write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n[",
        );
        let chunk = vec![b' '; 1 << 20];
        for _ in 0..=(MAX_ANSWER >> 20) {
            if c.write_all(&chunk).is_err() {
                return;
            }
        }
        // Close gracefully: the client reads what was sent before it sees the end.
        let _ = c.shutdown(std::net::Shutdown::Write);
        let _ = c.read_to_end(&mut Vec::new());
    });
    let err = client(&url, Duration::from_secs(30))
        .post("/v1/completions", &json!({}))
        .unwrap_err()
        .to_string();
    assert!(err.contains("larger than 64 MiB"), "{err}");
    server.join().unwrap();
}

#[test]
fn a_server_that_never_answers_is_given_up_on_at_the_timeout() {
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let (url, server) = fake(move |c| {
        // Holds the connection, silent, until the client has given up (or 60 s).
        let _ = wait.recv_timeout(Duration::from_secs(60));
        drop(c);
    });
    let start = Instant::now();
    let err = client(&url, Duration::from_secs(1))
        .post("/v1/completions", &json!({}))
        .unwrap_err()
        .to_string();
    // A 1 s timeout: given up on long before the server would have let go (a wide margin, not a timing).
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "gave up after {:?}: {err}",
        start.elapsed()
    );
    done.send(()).unwrap();
    server.join().unwrap();
}
