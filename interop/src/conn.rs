//! Raw-QUIC connection (ALPN `moqt-18`) and the moq-transport session on top.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use moq_transport::session::{Publisher, Session, Subscriber, Transport};
use quinn::VarInt;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use tokio::sync::{mpsc, watch};
use web_transport_quinn as wtq;

use crate::cli::Common;

pub const ALPN: &[u8] = b"moqt-18";
/// HTTP/3, for WebTransport (`--webtransport`).
pub const H3_ALPN: &[u8] = b"h3";
const DATAGRAM_SEND_BUFFER: usize = 64 << 20;
const UDP_SOCKET_BUFFER: usize = 8 << 20;

/// A connected MoQT session.
pub struct Conn {
    pub publisher: Publisher,
    pub subscriber: Subscriber,
    pub quic: quinn::Connection,
    endpoint: quinn::Endpoint,
    /// `Some(outcome)` once `Session::run` returned.
    pub session_end: watch::Receiver<Option<String>>,
    /// A copy of every datagram received, when tapping was requested.
    pub datagrams: Option<mpsc::UnboundedReceiver<Bytes>>,
    pub max_datagram_size: usize,
    sent_datagrams: Arc<AtomicU64>,
    closing: Arc<AtomicBool>,
}

impl Conn {
    /// Resolves when the MoQT session ended; yields how.
    pub async fn ended(&self) -> String {
        let mut rx = self.session_end.clone();
        loop {
            if let Some(outcome) = rx.borrow_and_update().clone() {
                return outcome;
            }
            if rx.changed().await.is_err() {
                return "session task gone".into();
            }
        }
    }

    /// The session outcome if it already ended.
    pub fn end_outcome(&self) -> Option<String> {
        self.session_end.borrow().clone()
    }

    /// Wait (bounded) until QUIC has transmitted every queued datagram.
    pub async fn drain_datagrams(&self, max_wait: Duration) {
        drain_datagrams(&self.quic, max_wait).await;
    }

    /// Close the QUIC connection and give the close frame a moment to leave.
    pub async fn close(&self, code: u32, reason: &str) {
        self.closing.store(true, Ordering::Release);
        self.quic.close(VarInt::from_u32(code), reason.as_bytes());
        // Long enough for CONNECTION_CLOSE to leave; not the whole drain period.
        let _ = tokio::time::timeout(Duration::from_millis(200), self.endpoint.wait_idle()).await;
    }

    /// Datagrams moq-transport handed to QUIC for sending.
    pub fn sent_datagrams(&self) -> u64 {
        self.sent_datagrams.load(Ordering::Relaxed)
    }

    /// Why the QUIC connection closed, if it did.
    pub fn close_reason(&self) -> Option<String> {
        self.quic.close_reason().map(|r| r.to_string())
    }
}

/// Wait (bounded) until `quic` has transmitted every queued datagram: closing
/// the connection discards whatever is still queued, and frames queued after
/// the datagrams (e.g. a STOP_SENDING) can overtake them.
pub async fn drain_datagrams(quic: &quinn::Connection, max_wait: Duration) {
    let deadline = tokio::time::Instant::now() + max_wait;
    // quinn reports the configured size minus queued bytes minus one
    // datagram's bookkeeping, so "empty" is slightly below the size.
    while quic.datagram_send_buffer_space() + 1024 < DATAGRAM_SEND_BUFFER
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Transport adapter handing moq-transport the quinn session through
/// `web_transport_quinn::Session::raw` unchanged, except that it keeps a copy
/// of every received datagram and counts the ones sent (`--wtq-raw`).
///
/// moq-transport delivers received datagrams to the application through a
/// latest-value watch, so a reader that is not scheduled between two
/// datagrams silently misses one. Counting from this tap (and decoding with
/// the library's own `data::Datagram`) gives exact per-datagram accounting.
#[derive(Clone)]
struct TapSession {
    inner: web_transport_quinn::Session,
    tap: Option<mpsc::UnboundedSender<Bytes>>,
    sent: Arc<AtomicU64>,
}

impl web_transport_trait::Session for TapSession {
    type SendStream = web_transport_quinn::SendStream;
    type RecvStream = web_transport_quinn::RecvStream;
    type Error = web_transport_quinn::SessionError;

    async fn accept_uni(&self) -> Result<Self::RecvStream, Self::Error> {
        self.inner.accept_uni().await
    }

    async fn accept_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        self.inner.accept_bi().await
    }

    async fn open_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        self.inner.open_bi().await
    }

    async fn open_uni(&self) -> Result<Self::SendStream, Self::Error> {
        self.inner.open_uni().await
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), Self::Error> {
        self.inner.send_datagram(payload)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, Self::Error> {
        let datagram = self.inner.read_datagram().await?;
        if let Some(tap) = &self.tap {
            let _ = tap.send(datagram.clone());
        }
        Ok(datagram)
    }

    fn max_datagram_size(&self) -> usize {
        self.inner.max_datagram_size()
    }

    fn close(&self, code: u32, reason: &str) {
        self.inner.close(code, reason.as_bytes());
    }

    async fn closed(&self) -> Self::Error {
        self.inner.closed().await
    }
}

// ---------------------------------------------------------------------------
// Direct raw-QUIC adapter (the default).
//
// `web_transport_quinn::Session::raw` reuses its WebTransport stream types,
// which translate every RESET_STREAM / STOP_SENDING / CONNECTION_CLOSE code
// to and from the HTTP/3 WebTransport code space (0x52e4a40fa8db + ...).
// Over raw QUIC that is wrong both ways: codes this client sends arrive
// mangled, and a peer's plain MoQT code (e.g. RESET_STREAM CANCELLED = 1)
// becomes `InvalidReset`, which moq-transport takes as fatal for the whole
// session. This adapter talks to quinn directly and passes codes through,
// still producing web-transport-quinn's error types so moq-transport
// classifies errors exactly as it does for its own backend.
// ---------------------------------------------------------------------------

fn session_err(err: quinn::ConnectionError) -> wtq::SessionError {
    if let quinn::ConnectionError::ApplicationClosed(close) = &err {
        if let Ok(code) = u32::try_from(close.error_code.into_inner()) {
            return wtq::WebTransportError::Closed(
                code,
                String::from_utf8_lossy(&close.reason).into_owned(),
            )
            .into();
        }
    }
    wtq::SessionError::ConnectionError(err)
}

fn read_err(err: quinn::ReadError) -> wtq::ReadError {
    match err {
        quinn::ReadError::Reset(code) => match u32::try_from(code.into_inner()) {
            Ok(code) => wtq::ReadError::Reset(code),
            Err(_) => wtq::ReadError::InvalidReset(code),
        },
        quinn::ReadError::ConnectionLost(e) => wtq::ReadError::SessionError(session_err(e)),
        quinn::ReadError::IllegalOrderedRead => wtq::ReadError::IllegalOrderedRead,
        quinn::ReadError::ClosedStream | quinn::ReadError::ZeroRttRejected => {
            wtq::ReadError::ClosedStream
        }
    }
}

fn write_err(err: quinn::WriteError) -> wtq::WriteError {
    match err {
        quinn::WriteError::Stopped(code) => match u32::try_from(code.into_inner()) {
            Ok(code) => wtq::WriteError::Stopped(code),
            Err(_) => wtq::WriteError::InvalidStopped(code),
        },
        quinn::WriteError::ConnectionLost(e) => wtq::WriteError::SessionError(session_err(e)),
        quinn::WriteError::ClosedStream | quinn::WriteError::ZeroRttRejected => {
            wtq::WriteError::ClosedStream
        }
    }
}

#[derive(Clone)]
struct DirectQuic {
    conn: quinn::Connection,
    tap: Option<mpsc::UnboundedSender<Bytes>>,
    sent: Arc<AtomicU64>,
}

struct DirectSend(quinn::SendStream);
struct DirectRecv(quinn::RecvStream);

impl web_transport_trait::SendStream for DirectSend {
    type Error = wtq::WriteError;

    async fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        self.0.write(buf).await.map_err(write_err)
    }

    async fn write_chunk(&mut self, chunk: Bytes) -> Result<(), Self::Error> {
        self.0.write_chunk(chunk).await.map_err(write_err)
    }

    fn set_priority(&mut self, order: u8) {
        // Same mapping as web-transport-quinn.
        let _ = self.0.set_priority(order.into());
    }

    fn finish(&mut self) -> Result<(), Self::Error> {
        self.0.finish().map_err(|_| wtq::WriteError::ClosedStream)
    }

    fn reset(&mut self, code: u32) {
        let _ = self.0.reset(VarInt::from_u32(code));
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        match self.0.stopped().await {
            Ok(None) => Ok(()),
            Ok(Some(code)) => Err(write_err(quinn::WriteError::Stopped(code))),
            Err(quinn::StoppedError::ConnectionLost(e)) => {
                Err(wtq::WriteError::SessionError(session_err(e)))
            }
            Err(quinn::StoppedError::ZeroRttRejected) => Err(wtq::WriteError::ClosedStream),
        }
    }
}

impl web_transport_trait::RecvStream for DirectRecv {
    type Error = wtq::ReadError;

    async fn read(&mut self, dst: &mut [u8]) -> Result<Option<usize>, Self::Error> {
        self.0.read(dst).await.map_err(read_err)
    }

    async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, Self::Error> {
        self.0
            .read_chunk(max, true)
            .await
            .map(|chunk| chunk.map(|c| c.bytes))
            .map_err(read_err)
    }

    fn stop(&mut self, code: u32) {
        let _ = self.0.stop(VarInt::from_u32(code));
    }

    async fn closed(&mut self) -> Result<(), Self::Error> {
        match self.0.received_reset().await {
            Ok(_) => Ok(()),
            Err(quinn::ResetError::ConnectionLost(e)) => {
                Err(wtq::ReadError::SessionError(session_err(e)))
            }
            Err(quinn::ResetError::ZeroRttRejected) => Err(wtq::ReadError::ClosedStream),
        }
    }
}

impl web_transport_trait::Session for DirectQuic {
    type SendStream = DirectSend;
    type RecvStream = DirectRecv;
    type Error = wtq::SessionError;

    async fn accept_uni(&self) -> Result<Self::RecvStream, Self::Error> {
        self.conn
            .accept_uni()
            .await
            .map(DirectRecv)
            .map_err(session_err)
    }

    async fn accept_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        self.conn
            .accept_bi()
            .await
            .map(|(s, r)| (DirectSend(s), DirectRecv(r)))
            .map_err(session_err)
    }

    async fn open_bi(&self) -> Result<(Self::SendStream, Self::RecvStream), Self::Error> {
        self.conn
            .open_bi()
            .await
            .map(|(s, r)| (DirectSend(s), DirectRecv(r)))
            .map_err(session_err)
    }

    async fn open_uni(&self) -> Result<Self::SendStream, Self::Error> {
        self.conn
            .open_uni()
            .await
            .map(DirectSend)
            .map_err(session_err)
    }

    fn send_datagram(&self, payload: Bytes) -> Result<(), Self::Error> {
        self.conn
            .send_datagram(payload)
            .map_err(wtq::SessionError::SendDatagramError)?;
        self.sent.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn recv_datagram(&self) -> Result<Bytes, Self::Error> {
        let datagram = self.conn.read_datagram().await.map_err(session_err)?;
        if let Some(tap) = &self.tap {
            let _ = tap.send(datagram.clone());
        }
        Ok(datagram)
    }

    fn max_datagram_size(&self) -> usize {
        self.conn.max_datagram_size().unwrap_or(0)
    }

    fn close(&self, code: u32, reason: &str) {
        self.conn.close(VarInt::from_u32(code), reason.as_bytes());
    }

    async fn closed(&self) -> Self::Error {
        session_err(self.conn.closed().await)
    }
}

fn client_config(common: &Common) -> anyhow::Result<quinn::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(&common.ca)
        .with_context(|| format!("reading CA file {}", common.ca.display()))?;
    let mut added = 0;
    for cert in certs {
        let cert = cert.with_context(|| format!("parsing PEM in {}", common.ca.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("adding certificate from {}", common.ca.display()))?;
        added += 1;
    }
    if added == 0 {
        bail!("no certificate found in {}", common.ca.display());
    }

    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 config")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![if common.webtransport { H3_ALPN } else { ALPN }.to_vec()];
    // Writes TLS secrets to $SSLKEYLOGFILE when it is set; a no-op otherwise.
    tls.key_log = Arc::new(rustls::KeyLogFile::new());

    let quic_tls =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls).context("QUIC client TLS config")?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic_tls));

    let mut transport = quinn::TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(VarInt::from_u32(4_096))
        .max_concurrent_uni_streams(VarInt::from_u32(65_536))
        .stream_receive_window(VarInt::from_u32(16 << 20))
        .receive_window(VarInt::from_u32(1 << 30))
        .send_window(1 << 30)
        .datagram_receive_buffer_size(Some(64 << 20))
        .datagram_send_buffer_size(DATAGRAM_SEND_BUFFER)
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(
            Duration::from_secs(60).try_into().context("idle timeout")?,
        ));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// A client endpoint whose UDP socket has large kernel buffers, so bursts
/// (datagrams above all) are not dropped by this host before QUIC sees them.
fn client_endpoint(bind: SocketAddr) -> std::io::Result<quinn::Endpoint> {
    let domain = socket2::Domain::for_address(bind);
    let socket = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    if bind.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    let _ = socket.set_recv_buffer_size(UDP_SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(UDP_SOCKET_BUFFER);
    socket.bind(&bind.into())?;
    let runtime = quinn::default_runtime()
        .ok_or_else(|| std::io::Error::other("no async runtime for quinn"))?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        None,
        socket.into(),
        runtime,
    )
}

/// Connect, run SETUP, and start `Session::run` in the background.
pub async fn connect(common: &Common, tap_datagrams: bool) -> anyhow::Result<Conn> {
    let timeout = Duration::from_millis(common.timeout_ms);
    let config = client_config(common)?;
    let bind: SocketAddr = if common.server.is_ipv6() {
        "[::]:0".parse()?
    } else {
        "0.0.0.0:0".parse()?
    };
    let mut endpoint = client_endpoint(bind).context("binding the QUIC client socket")?;
    endpoint.set_default_client_config(config);

    let alpn_wanted = if common.webtransport { H3_ALPN } else { ALPN };
    eprintln!(
        "connecting to {} (sni {}, alpn {})",
        common.server,
        common.server_name,
        String::from_utf8_lossy(alpn_wanted)
    );
    let connecting = endpoint
        .connect(common.server, &common.server_name)
        .context("starting the QUIC handshake")?;
    let quic = tokio::time::timeout(timeout, connecting)
        .await
        .context("QUIC handshake timed out")?
        .context("QUIC handshake failed")?;
    let alpn = quic
        .handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol);
    if alpn.as_deref() != Some(alpn_wanted) {
        bail!(
            "server negotiated ALPN {:?}, expected {}",
            alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            String::from_utf8_lossy(alpn_wanted)
        );
    }

    let path = match &common.path {
        Some(p) if p.starts_with('/') => p.clone(),
        Some(p) => format!("/{p}"),
        None => "/".to_string(),
    };
    let host = if common.server_name.contains(':') {
        format!("[{}]", common.server_name)
    } else {
        common.server_name.clone()
    };
    let url = url::Url::parse(&format!("moqt://{host}:{}{path}", common.server.port()))
        .context("building the session URL")?;

    // On WebTransport each datagram also carries its session's quarter stream ID.
    let max_datagram_size = quic
        .max_datagram_size()
        .unwrap_or(0)
        .saturating_sub(if common.webtransport { 8 } else { 0 });
    let sent_datagrams = Arc::new(AtomicU64::new(0));
    let (tap, datagrams) = if tap_datagrams {
        let (tx, rx) = mpsc::unbounded_channel();
        (Some(tx), Some(rx))
    } else {
        (None, None)
    };
    let session = if common.webtransport {
        // The same URL with the https scheme (spec §3.1.3).
        let https = url::Url::parse(&format!("https://{host}:{}{path}", common.server.port()))
            .context("building the WebTransport URL")?;
        let request = wtq::proto::ConnectRequest::new(https.clone()).with_protocol("moqt-18");
        let wt = tokio::time::timeout(timeout, wtq::Session::connect(quic.clone(), request))
            .await
            .context("WebTransport CONNECT timed out")?
            .context("WebTransport CONNECT failed")?;
        eprintln!(
            "WebTransport session established (subprotocol {:?})",
            wt.response().protocol
        );
        moq_transport::session::transport::Session::new(
            TapSession {
                inner: wt,
                tap,
                sent: sent_datagrams.clone(),
            },
            https,
        )
    } else if common.wtq_raw {
        let raw = web_transport_quinn::Session::raw(
            quic.clone(),
            url.clone(),
            web_transport_quinn::proto::ConnectResponse::default(),
        );
        moq_transport::session::transport::Session::new(
            TapSession {
                inner: raw,
                tap,
                sent: sent_datagrams.clone(),
            },
            url,
        )
    } else {
        moq_transport::session::transport::Session::new(
            DirectQuic {
                conn: quic.clone(),
                tap,
                sent: sent_datagrams.clone(),
            },
            url,
        )
    };

    let (session, publisher, subscriber) = tokio::time::timeout(timeout, {
        // Token Type 0: negotiated out of band (§15.6), as fastrelay expects.
        let tokens = common
            .auth_token
            .iter()
            .map(|t| moq_transport::setup::AuthorizationToken::new(0, t.clone().into_bytes()))
            .collect();
        let transport = if common.webtransport {
            Transport::WebTransport
        } else {
            Transport::RawQuic
        };
        Session::connect_with_tokens(session, None, transport, tokens)
    })
    .await
    .context("MoQT SETUP timed out")?
    .context("MoQT SETUP failed")?;
    eprintln!("MoQT session established");

    let (end_tx, end_rx) = watch::channel(None);
    let closing = Arc::new(AtomicBool::new(false));
    let closing_seen = closing.clone();
    tokio::spawn(async move {
        let outcome = match session.run().await {
            Ok(()) => "session ended".to_string(),
            Err(err) => format!("session error: {err}"),
        };
        if !closing_seen.load(Ordering::Acquire) {
            eprintln!("moq session: {outcome}");
        }
        let _ = end_tx.send(Some(outcome));
    });

    Ok(Conn {
        publisher,
        subscriber,
        quic,
        endpoint,
        session_end: end_rx,
        datagrams,
        max_datagram_size,
        sent_datagrams,
        closing,
    })
}
