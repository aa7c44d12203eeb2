//! The admin listener (`--admin ADDR`): a small HTTP/1.1 server on its own
//! thread, for scrapers and health checks, never on the workers' path.
//!
//! - `GET /metrics`: Prometheus text format 0.0.4 ([`crate::metrics`]);
//! - `GET /health`: `200 ok` while every worker runs and the relay is not
//!   draining, `503` with the reason otherwise;
//! - `GET /` and its assets: the watch/publish web page ([`crate::web`]);
//! - `GET /session.json`: what the page needs to connect (not cached);
//! - other paths 404, other methods 405.
//!
//! One request per connection (`Connection: close`), served one connection
//! at a time: a request head is at most [`MAX_REQUEST_BYTES`] and must
//! arrive within [`IO_TIMEOUT`], so a slow or hostile client holds the
//! listener for at most a few seconds and costs the relay nothing. Errors
//! here are logged; the relay keeps serving whatever happens to this thread.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs},
    sync::Arc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

use crate::{
    metrics,
    snapshot::{Snapshot, Sources},
    web,
};

/// Largest request head read (request line and headers); longer is refused.
pub const MAX_REQUEST_BYTES: usize = 8 * 1024;
/// How long a client may take to send its whole request head, and to
/// take each write of the answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed accept (out of descriptors...), so the thread does
/// not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// `--admin`: `host:port`, `[v6]:port`, or a bare port on 127.0.0.1.
pub fn parse_addr(spec: &str) -> anyhow::Result<SocketAddr> {
    let spec = spec.trim();
    if let Ok(port) = spec.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    if let Ok(addr) = spec.parse::<SocketAddr>() {
        return Ok(addr);
    }
    spec.to_socket_addrs()
        .with_context(|| format!("--admin {spec:?}: expected host:port or a port number"))?
        .next()
        .with_context(|| format!("--admin {spec:?}: the host has no address"))
}

/// Binds the admin address: a failure is a startup error. `relay_port` is
/// refused as the admin port, to keep the two apart in firewall rules and
/// in operators' heads (the relay's is UDP, this TCP).
pub fn bind(addr: SocketAddr, relay_port: u16) -> anyhow::Result<TcpListener> {
    if addr.port() == relay_port {
        bail!(
            "--admin {addr}: the admin listener needs a port other than the relay's own ({relay_port})"
        );
    }
    TcpListener::bind(addr).with_context(|| format!("binding the admin listener on {addr} (TCP)"))
}

/// Serves `listener` on a thread of its own until the process ends.
pub fn spawn(listener: TcpListener, sources: Arc<Sources>) -> anyhow::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("fastrelay-admin".into())
        .spawn(move || serve(listener, &sources))
        .context("spawning the admin thread")
}

fn serve(listener: TcpListener, sources: &Sources) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = handle(stream, sources) {
                    tracing::debug!(error = %e, "admin request failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin listener: accept failed");
                std::thread::sleep(ACCEPT_BACKOFF);
            }
        }
    }
}

/// An answer: status line, content type, body.
struct Response {
    status: &'static str,
    content_type: &'static str,
    body: String,
    allow: bool,
    /// `Cache-Control: no-store` (answers that change, e.g. the
    /// certificate hash after a renewal).
    no_store: bool,
}

impl Response {
    fn text(status: &'static str, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            allow: false,
            no_store: true,
        }
    }
}

fn handle(mut stream: TcpStream, sources: &Sources) -> anyhow::Result<()> {
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut reader = Deadline {
        stream: &stream,
        until: Instant::now() + IO_TIMEOUT,
    };
    let response = match read_head(&mut reader) {
        Ok(head) => route(&head, sources),
        Err(HeadError::TooLarge) => Response::text(
            "431 Request Header Fields Too Large",
            format!("request head over {MAX_REQUEST_BYTES} bytes\n"),
        ),
        Err(HeadError::Malformed) => Response::text("400 Bad Request", "malformed request\n"),
        Err(HeadError::Io(e)) => return Err(e).context("reading the request"),
    };
    let mut out = format!(
        "HTTP/1.1 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    if response.allow {
        out.push_str("Allow: GET\r\n");
    }
    if response.no_store {
        out.push_str("Cache-Control: no-store\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&response.body);
    stream
        .write_all(out.as_bytes())
        .context("writing the response")?;
    let _ = stream.shutdown(std::net::Shutdown::Both);
    Ok(())
}

/// Reads from a stream until a deadline for all reads together, so a
/// client sending a byte at a time cannot hold the listener for long.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut stream = self.stream;
        stream.read(buf)
    }
}

#[derive(Debug)]
enum HeadError {
    TooLarge,
    Malformed,
    Io(std::io::Error),
}

/// The request line (method, target), once the whole head has arrived.
#[derive(Debug, PartialEq, Eq)]
struct Head {
    method: String,
    target: String,
}

/// Reads up to the blank line that ends the head, at most
/// [`MAX_REQUEST_BYTES`]. A body (GET has none) is not read.
fn read_head(stream: &mut impl Read) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            return parse_head(&buf[..end]);
        }
        if buf.len() >= MAX_REQUEST_BYTES {
            return Err(HeadError::TooLarge);
        }
        let room = (MAX_REQUEST_BYTES - buf.len()).min(chunk.len());
        let n = stream.read(&mut chunk[..room]).map_err(HeadError::Io)?;
        if n == 0 {
            return Err(HeadError::Malformed);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// End of the head: CRLF CRLF (or bare LF LF, which some tools send).
fn find_end(buf: &[u8]) -> Option<usize> {
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n");
    let lf = buf.windows(2).position(|w| w == b"\n\n");
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn parse_head(head: &[u8]) -> Result<Head, HeadError> {
    let text = std::str::from_utf8(head).map_err(|_| HeadError::Malformed)?;
    let line = text.lines().next().ok_or(HeadError::Malformed)?;
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed);
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Err(HeadError::Malformed);
    }
    Ok(Head {
        method: method.to_string(),
        target: target.to_string(),
    })
}

fn route(head: &Head, sources: &Sources) -> Response {
    let path = head.target.split('?').next().unwrap_or_default();
    let page = web::asset(path);
    if page.is_none() && !matches!(path, "/metrics" | "/health" | "/session.json") {
        return Response::text("404 Not Found", "not found: try /, /metrics or /health\n");
    }
    if head.method != "GET" {
        return Response {
            allow: true,
            ..Response::text("405 Method Not Allowed", "only GET\n")
        };
    }
    if let Some(asset) = page {
        // The page's files change only with the binary: no `no-store`.
        return Response {
            content_type: asset.content_type,
            no_store: false,
            ..Response::text("200 OK", asset.body)
        };
    }
    if path == "/session.json" {
        return Response {
            content_type: "application/json",
            ..Response::text("200 OK", sources.web.session_json())
        };
    }
    let snapshot = Snapshot::take(sources);
    match path {
        "/metrics" => Response {
            content_type: metrics::CONTENT_TYPE,
            ..Response::text("200 OK", metrics::render(&snapshot))
        },
        _ => match snapshot.health() {
            Ok(()) => Response::text("200 OK", "ok\n"),
            Err(reason) => Response::text("503 Service Unavailable", format!("{reason}\n")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_addresses() {
        assert_eq!(
            parse_addr("9100").unwrap(),
            "127.0.0.1:9100".parse().unwrap()
        );
        assert_eq!(
            parse_addr("0.0.0.0:80").unwrap(),
            "0.0.0.0:80".parse().unwrap()
        );
        assert_eq!(parse_addr("[::1]:9").unwrap(), "[::1]:9".parse().unwrap());
        assert!(parse_addr("nonsense").is_err());
        assert!(parse_addr("70000").is_err());
        let err = bind("127.0.0.1:4433".parse().unwrap(), 4433).unwrap_err();
        assert!(err.to_string().contains("relay's own"), "{err}");
    }

    /// Sends `request` to `addr`, returns the whole answer (the server
    /// closes) and how long it took.
    fn exchange(addr: SocketAddr, request: &[u8]) -> (String, Duration) {
        let start = Instant::now();
        let mut c = TcpStream::connect(addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(request).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        (out, start.elapsed())
    }

    #[test]
    fn loopback_requests_are_answered_and_bad_ones_bounded() {
        let listener = bind("127.0.0.1:0".parse().unwrap(), 4433).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sources = Sources {
            workers: Vec::new(),
            stop: stop.clone(),
            xdp: Arc::default(),
            started: Instant::now(),
            auth: None,
            web: Arc::new(web::WebInfo::new(4433)),
        };
        sources.web.set_certificate_hashes(vec!["00".repeat(32)]);
        spawn(listener, Arc::new(sources)).unwrap();

        let (ok, _) = exchange(addr, b"GET /health HTTP/1.1\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.contains("Connection: close\r\n") && ok.ends_with("\r\n\r\nok\n"));
        let (m, _) = exchange(addr, b"GET /metrics?x HTTP/1.0\r\n\r\n");
        assert!(m.contains("version=0.0.4") && m.contains("# TYPE fastrelay_draining gauge"));
        let (page, _) = exchange(addr, b"GET / HTTP/1.1\r\n\r\n");
        assert!(
            page.contains("Content-Type: text/html; charset=utf-8\r\n"),
            "{page}"
        );
        assert!(!page.contains("no-store") && page.contains("/app.js"));
        let (js, _) = exchange(addr, b"GET /moqt.js HTTP/1.1\r\n\r\n");
        assert!(js.contains("Content-Type: text/javascript; charset=utf-8\r\n"));
        let (session, _) = exchange(addr, b"GET /session.json HTTP/1.1\r\n\r\n");
        assert!(
            session.contains("Content-Type: application/json\r\n"),
            "{session}"
        );
        assert!(session.contains("Cache-Control: no-store\r\n"));
        let body: serde_json::Value =
            serde_json::from_str(session.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["port"], 4433);
        assert_eq!(body["certificate_sha256"][0], "00".repeat(32));
        let (nf, _) = exchange(addr, b"GET /x HTTP/1.1\r\n\r\n");
        assert!(nf.starts_with("HTTP/1.1 404 "), "{nf}");
        let (na, _) = exchange(addr, b"DELETE /health HTTP/1.1\r\n\r\n");
        assert!(na.starts_with("HTTP/1.1 405 ") && na.contains("Allow: GET\r\n"));
        let (bad, _) = exchange(addr, b"hello\r\n\r\n");
        assert!(bad.starts_with("HTTP/1.1 400 "), "{bad}");
        // Exactly the bound and no end: all of it read, so the close that
        // follows the answer is not a reset.
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_REQUEST_BYTES, b'a');
        let (large, _) = exchange(addr, &big);
        assert!(large.starts_with("HTTP/1.1 431 "), "{large}");
        // A head that never ends: dropped at the deadline, unanswered.
        let (slow, took) = exchange(addr, b"GET /health HTTP/1.1\r\n");
        assert!(slow.is_empty(), "{slow}");
        assert!(took >= IO_TIMEOUT && took < IO_TIMEOUT * 3, "{took:?}");
        // Still serving, and now telling that the relay drains.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let (draining, _) = exchange(addr, b"GET /health HTTP/1.1\r\n\r\n");
        assert!(draining.starts_with("HTTP/1.1 503 ") && draining.contains("draining"));
    }

    #[test]
    fn request_heads() {
        let head = |s: &str| read_head(&mut s.as_bytes());
        assert_eq!(
            head("GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\n\r\n").unwrap(),
            Head {
                method: "GET".into(),
                target: "/metrics?x=1".into()
            }
        );
        assert!(matches!(head("GET /x\r\n\r\n"), Err(HeadError::Malformed)));
        assert!(matches!(
            head("GET /x HTTP/1.1\r\n"),
            Err(HeadError::Malformed)
        ));
        let big = format!(
            "GET / HTTP/1.1\r\nX: {}\r\n\r\n",
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert!(matches!(head(&big), Err(HeadError::TooLarge)));
    }
}
