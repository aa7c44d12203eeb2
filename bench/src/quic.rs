//! Client-side QUIC setup shared by every fastrelay client.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context;

/// Server name the relay's self-signed certificate carries.
pub const RELAY_SERVER_NAME: &str = "fastrelay";

/// A quinn client endpoint that trusts the certificate(s) in `ca_pem` and
/// speaks `alpn`. With `SSLKEYLOGFILE` set, TLS secrets are logged there so a
/// capture can be decrypted (the packet-number proof needs that).
pub fn client_endpoint(
    bind: SocketAddr,
    ca_pem: &Path,
    alpn: &[u8],
) -> anyhow::Result<quinn::Endpoint> {
    let config = client_config(ca_pem, alpn)?;
    let mut endpoint =
        quinn::Endpoint::client(bind).with_context(|| format!("binding client socket {bind}"))?;
    endpoint.set_default_client_config(config);
    Ok(endpoint)
}

/// The client configuration [`client_endpoint`] installs, for callers that
/// build their endpoint on a socket of their own.
pub fn client_config(ca_pem: &Path, alpn: &[u8]) -> anyhow::Result<quinn::ClientConfig> {
    let roots = dataplane::tls::roots_from_pem_file(ca_pem)?;
    let mut tls = dataplane::tls::client_crypto(roots, alpn)?;
    tls.key_log = Arc::new(rustls::KeyLogFile::new());
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport
        .max_idle_timeout(Some(Duration::from_secs(30).try_into().unwrap()))
        .datagram_receive_buffer_size(Some(1 << 20));
    config.transport_config(Arc::new(transport));
    Ok(config)
}

/// The unspecified address of the server's family, port 0.
pub fn any_addr_for(server: SocketAddr) -> SocketAddr {
    if server.is_ipv4() {
        "0.0.0.0:0".parse().unwrap()
    } else {
        "[::]:0".parse().unwrap()
    }
}
