//! A minimal HTTP/1.1 GET for tests of the relay's admin listener, made
//! from inside a network namespace (on a thread that enters it), so that no
//! tool outside the workspace is needed.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

/// Largest response read; a relay's `/metrics` is a few tens of KiB.
const MAX_RESPONSE: u64 = 4 * 1024 * 1024;

/// What came back: the status code, the headers (names lowercased), the body.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `METHOD path` to `addr` from network namespace `ns`, each step within
/// `timeout`; the answer is read to the end (the server closes).
pub fn http_get(
    ns: &str,
    addr: SocketAddr,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, String> {
    let (ns, method, path) = (ns.to_string(), method.to_string(), path.to_string());
    std::thread::spawn(move || {
        super::impair::enter(&ns)?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout)
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_read_timeout(Some(timeout))
            .and_then(|()| stream.set_write_timeout(Some(timeout)))
            .map_err(|e| e.to_string())?;
        let request =
            format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        stream
            .write_all(request.as_bytes())
            .map_err(|e| format!("sending the request: {e}"))?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE)
            .read_to_end(&mut raw)
            .map_err(|e| format!("reading the response: {e}"))?;
        parse(&raw)
    })
    .join()
    .map_err(|_| "the HTTP thread panicked".to_string())?
}

fn parse(raw: &[u8]) -> Result<HttpResponse, String> {
    let text = std::str::from_utf8(raw).map_err(|_| "response is not UTF-8".to_string())?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no end of headers in {text:?}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| status_line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let response = HttpResponse {
        status,
        headers,
        body: body.to_string(),
    };
    if let Some(len) = response.header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if len != response.body.len() {
            return Err(format!(
                "Content-Length {len} but {} body bytes",
                response.body.len()
            ));
        }
    }
    Ok(response)
}
