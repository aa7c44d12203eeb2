//! TLS 1.3 and QUIC transport configuration for the relay's endpoint.
//!
//! Packet protection is always on; the cipher suites are TLS 1.3 only with
//! AES-128-GCM first (the cheapest seal on x86 with AES-NI), from aws-lc-rs.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::Context;
use quinn_proto::{
    crypto::rustls::{QuicClientConfig, QuicServerConfig},
    AckFrequencyConfig, ClientConfig, EndpointConfig, MtuDiscoveryConfig, ServerConfig,
    TransportConfig, VarInt,
};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer};

/// A certificate chain and its private key.
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
    /// PEM of the leaf certificate (for clients that pin it).
    pub cert_pem: String,
}

impl Identity {
    pub fn from_pem_files(cert: &Path, key: &Path) -> anyhow::Result<Self> {
        let cert_pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading certificate {}", cert.display()))?;
        let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("parsing certificate PEM {}", cert.display()))?;
        if chain.is_empty() {
            anyhow::bail!("{} holds no certificate", cert.display());
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .with_context(|| format!("reading private key PEM {}", key.display()))?;
        Ok(Self {
            chain,
            key,
            cert_pem,
        })
    }

    /// A fresh self-signed certificate for `names` (testing and demos).
    pub fn self_signed(names: &[&str]) -> anyhow::Result<Self> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let certified = rcgen::generate_simple_self_signed(names)
            .context("generating a self-signed certificate")?;
        let cert_pem = certified.cert.pem();
        let key = PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
        Ok(Self {
            chain: vec![certified.cert.der().clone()],
            key,
            cert_pem,
        })
    }
}

/// Longest validity (not_after - not_before) of [`Identity::self_signed_short`]:
/// browsers accept a certificate by `serverCertificateHashes` only when it
/// is valid for at most 14 days; 10 leaves room for clock skew.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(10 * 24 * 3600);
/// How far back a self-signed certificate's validity starts, so a peer
/// whose clock is a little behind still accepts it.
pub const SELF_SIGNED_BACKDATE: Duration = Duration::from_secs(3600);

/// What a short-lived self-signed certificate is, for clients that pin it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SelfSignedInfo {
    /// SHA-256 of the DER certificate (WebTransport's
    /// `serverCertificateHashes`).
    pub sha256: [u8; 32],
    /// Validity, as seconds since the UNIX epoch.
    pub not_before: u64,
    pub not_after: u64,
}

impl SelfSignedInfo {
    /// The hash as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Identity {
    /// A self-signed ECDSA P-256 certificate for `names` (DNS names or IP
    /// addresses) valid from a little before `now` (at most
    /// [`SELF_SIGNED_BACKDATE`]) for `validity` (10 s to 14 days: browsers
    /// pin a hash only of certificates valid at most 14 days).
    pub fn self_signed_short(
        names: &[String],
        now: std::time::SystemTime,
        validity: Duration,
    ) -> anyhow::Result<(Self, SelfSignedInfo)> {
        let since_epoch = now
            .duration_since(std::time::UNIX_EPOCH)
            .context("the clock is before 1970")?;
        if validity > Duration::from_secs(14 * 24 * 3600) || validity.as_secs() < 10 {
            anyhow::bail!("a self-signed certificate's validity must be 10 s to 14 days");
        }
        // Whole seconds: X.509 times carry no fractions. Short validities
        // (tests of renewal) are backdated by a tenth of them.
        let backdate = SELF_SIGNED_BACKDATE.min(validity / 10).as_secs();
        let not_before = since_epoch.as_secs().saturating_sub(backdate);
        let not_after = not_before + validity.as_secs();
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let mut params = rcgen::CertificateParams::new(names.to_vec())
            .context("self-signed certificate names")?;
        params.not_before = epoch + Duration::from_secs(not_before);
        params.not_after = epoch + Duration::from_secs(not_after);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fastrelay self-signed");
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .context("generating a P-256 key")?;
        let cert = params
            .self_signed(&key_pair)
            .context("signing the self-signed certificate")?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, cert.der());
        let mut sha256 = [0u8; 32];
        sha256.copy_from_slice(digest.as_ref());
        let identity = Self {
            chain: vec![cert.der().clone()],
            key: PrivateKeyDer::Pkcs8(key_pair.serialize_der().into()),
            cert_pem: cert.pem(),
        };
        Ok((
            identity,
            SelfSignedInfo {
                sha256,
                not_before,
                not_after,
            },
        ))
    }
}

/// The crypto provider every fastrelay endpoint uses: aws-lc-rs, TLS 1.3
/// suites, AES-128-GCM preferred.
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::aws_lc_rs::{self, cipher_suite};
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..aws_lc_rs::default_provider()
    })
}

/// A TLS 1.3 client configuration with fastrelay's provider that trusts
/// `roots` and offers `alpn`: for test and load clients of the relay.
pub fn client_crypto(
    roots: rustls::RootCertStore,
    alpn: &[u8],
) -> anyhow::Result<rustls::ClientConfig> {
    let mut tls = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 configuration")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![alpn.to_vec()];
    Ok(tls)
}

/// The certificates of a PEM file as trust anchors (e.g. an upstream
/// relay's `--write-cert` output, or a CA bundle).
pub fn roots_from_pem_file(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.with_context(|| format!("parsing certificate PEM {}", path.display()))?;
        roots
            .add(cert)
            .with_context(|| format!("unusable certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        anyhow::bail!("{} holds no certificate", path.display());
    }
    Ok(roots)
}

/// Keep-alive of a relay's links to upstream relays: an idle link (no
/// subscription through it) stays up, and a dead upstream is noticed
/// within [`LINK_IDLE_TIMEOUT`].
pub const LINK_KEEP_ALIVE: Duration = Duration::from_secs(2);
/// Idle timeout of a relay's links to upstream relays.
pub const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The QUIC client configuration of a relay's links to upstream relays:
/// trusts `roots`, offers `alpn`, and has the relay's own transport limits
/// (the receive window must match the session's receive bound) with a
/// keep-alive.
pub fn link_client_config(
    roots: rustls::RootCertStore,
    alpn: &[u8],
    limits: &TransportLimits,
) -> anyhow::Result<ClientConfig> {
    let tls = client_crypto(roots, alpn)?;
    let crypto = QuicClientConfig::try_from(tls).context("QUIC needs TLS 1.3 with AES-128-GCM")?;
    let mut client = ClientConfig::new(Arc::new(crypto));
    let mut transport = transport_config(limits);
    transport
        .keep_alive_interval(Some(LINK_KEEP_ALIVE))
        .max_idle_timeout(Some(
            LINK_IDLE_TIMEOUT
                .try_into()
                .expect("idle timeout fits a VarInt"),
        ));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// Limits and MTU of the relay's QUIC connections.
#[derive(Debug, Clone)]
pub struct TransportLimits {
    /// Largest UDP payload the path can carry (interface MTU minus IP and UDP headers).
    pub max_udp_payload: u16,
    pub max_bidi_streams: u32,
    pub max_uni_streams: u32,
    pub idle_timeout: Duration,
    /// Connection-level receive window (bytes the peer may send beyond what
    /// the application has read): the bound on what quinn-proto buffers for
    /// one connection. The relay shrinks it at run time by what its session
    /// holds, so it is the connection's whole receive bound.
    pub receive_window: u64,
    /// Per-stream receive window (at most `receive_window`).
    pub stream_receive_window: u64,
}

impl Default for TransportLimits {
    fn default() -> Self {
        Self {
            max_udp_payload: 1452, // 1500-byte MTU, IPv6 + UDP headers
            max_bidi_streams: 256,
            max_uni_streams: 1024,
            idle_timeout: Duration::from_secs(30),
            receive_window: 32 << 20,
            stream_receive_window: 1 << 20,
        }
    }
}

/// The server configuration every worker accepts connections with, which
/// the control plane may replace while they run (a certificate reloaded on
/// SIGHUP). Workers check the generation, one atomic load per loop
/// iteration, and take the lock only when it changed: new handshakes get
/// the new configuration, established connections keep their keys.
pub struct SharedServerConfig {
    generation: AtomicU64,
    current: Mutex<Arc<ServerConfig>>,
}

impl SharedServerConfig {
    pub fn new(config: Arc<ServerConfig>) -> Self {
        Self {
            generation: AtomicU64::new(0),
            current: Mutex::new(config),
        }
    }

    /// Installs `config` for every handshake from now on.
    pub fn replace(&self, config: Arc<ServerConfig>) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        *current = config;
        // Bumped under the lock, so a reader that sees the new generation
        // and then locks finds the new configuration.
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// How many times the configuration was replaced.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The configuration in force and its generation.
    pub fn current(&self) -> (Arc<ServerConfig>, u64) {
        let current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        (current.clone(), self.generation())
    }
}

impl From<ServerConfig> for SharedServerConfig {
    fn from(config: ServerConfig) -> Self {
        Self::new(Arc::new(config))
    }
}

pub fn server_config(
    identity: Identity,
    alpn: &[&[u8]],
    limits: &TransportLimits,
) -> anyhow::Result<ServerConfig> {
    let mut tls = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .context("TLS 1.3 configuration")?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)
        .context("certificate and key do not match or are unsupported")?;
    tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).context("QUIC needs TLS 1.3 with AES-128-GCM")?;
    let mut server = ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(limits)));
    Ok(server)
}

pub fn transport_config(limits: &TransportLimits) -> TransportConfig {
    let mut transport = TransportConfig::default();
    transport
        .max_concurrent_bidi_streams(limits.max_bidi_streams.into())
        .max_concurrent_uni_streams(limits.max_uni_streams.into())
        .max_idle_timeout(Some(
            limits
                .idle_timeout
                .try_into()
                .expect("idle timeout fits a VarInt"),
        ))
        .receive_window(VarInt::from_u64(limits.receive_window).unwrap_or(VarInt::MAX))
        .stream_receive_window(
            VarInt::from_u64(limits.stream_receive_window.min(limits.receive_window))
                .unwrap_or(VarInt::MAX),
        )
        .datagram_receive_buffer_size(Some(1 << 20))
        .datagram_send_buffer_size(1 << 20);
    let mut mtu = MtuDiscoveryConfig::default();
    mtu.upper_bound(limits.max_udp_payload.max(1200));
    transport.mtu_discovery_config(Some(mtu));
    // Ask peers that support the ACK frequency extension to acknowledge
    // every ACK_ELICITING_THRESHOLD+1 packets (or after ACK_MAX_DELAY)
    // instead of every second one: a relay fanning out mostly receives
    // ACKs, and each costs a decryption, a pass of loss detection and a
    // wake-up. Peers without the extension keep acknowledging as usual.
    let mut acks = AckFrequencyConfig::default();
    acks.ack_eliciting_threshold(ACK_ELICITING_THRESHOLD.into())
        .max_ack_delay(Some(ACK_MAX_DELAY));
    transport.ack_frequency_config(Some(acks));
    transport
}

/// Ack-eliciting packets a peer may receive before it must acknowledge:
/// an ACK per 8 packets, fewer than a fresh connection's initial window
/// (10 packets), so a new subscriber's first window is never held up
/// waiting for an ACK.
const ACK_ELICITING_THRESHOLD: u32 = 7;
/// Longest a peer may hold back an ACK: QUIC's default (RFC 9000 §18.2),
/// so loss detection and the PTO see the delay they would without the
/// extension.
const ACK_MAX_DELAY: Duration = Duration::from_millis(25);

pub fn endpoint_config() -> EndpointConfig {
    EndpointConfig::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_self_signed_certificates_fit_browser_pinning() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let names = ["localhost".to_string(), "198.18.0.1".to_string()];
        let (identity, info) =
            Identity::self_signed_short(&names, now, SELF_SIGNED_VALIDITY).unwrap();
        assert_eq!(
            info.not_before,
            1_800_000_000 - SELF_SIGNED_BACKDATE.as_secs()
        );
        assert!(info.not_after - info.not_before <= 14 * 24 * 3600);
        let der = identity.chain[0].as_ref();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der);
        assert_eq!(digest.as_ref(), info.sha256);
        assert_eq!(info.sha256_hex().len(), 64);
        // The P-256 curve OID (1.2.840.10045.3.1.7) names the key.
        let p256 = [0x06, 0x08, 0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07];
        assert!(der.windows(p256.len()).any(|w| w == p256));
        // The IP address is an iPAddress SAN (tag 0x87, 4 bytes).
        assert!(der.windows(6).any(|w| w == [0x87, 4, 198, 18, 0, 1]));
        // Two generations differ, and rustls takes the key.
        let (_, again) = Identity::self_signed_short(&names, now, SELF_SIGNED_VALIDITY).unwrap();
        assert_ne!(again.sha256, info.sha256);
        server_config(identity, &[b"x"], &TransportLimits::default()).unwrap();
    }
}
