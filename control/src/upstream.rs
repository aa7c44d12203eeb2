//! `--upstream URL`: the relays this one subscribes to for namespaces no
//! local publisher serves (relay chaining, docs/chaining.md). Parses the
//! URLs, builds the links' TLS configuration, and keeps the next hops of
//! the upstreams resolved for the AF_XDP backend.

use std::{
    net::{IpAddr, SocketAddr, ToSocketAddrs},
    path::Path,
};

use anyhow::{bail, ensure, Context};
use dataplane::{neighbor::NextHopTable, tls};
use relay::app::{UpstreamConfig, MAX_UPSTREAMS};

use crate::netlink;

/// A parsed `moqt://host:port[/path]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    pub host: String,
    pub port: u16,
    /// `host:port` as written.
    pub authority: String,
    pub path: Option<String>,
}

/// The JWT in `path` (--upstream-token-file), surrounding whitespace
/// removed.
pub fn read_token(path: &Path) -> anyhow::Result<bytes::Bytes> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading --upstream-token-file {}", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("--upstream-token-file {} is empty", path.display());
    }
    Ok(bytes::Bytes::copy_from_slice(token.as_bytes()))
}

/// What can be checked of the upstream options without the host (their
/// names are resolved at start): the URLs, the CA and the token file.
pub fn check(urls: &[String], ca: Option<&Path>, token_file: Option<&Path>) -> anyhow::Result<()> {
    for url in urls {
        parse_url(url).context("--upstream")?;
    }
    if !urls.is_empty() {
        let ca = ca.context("--upstream needs --upstream-ca FILE (PEM)")?;
        tls::roots_from_pem_file(ca).with_context(|| format!("--upstream-ca {}", ca.display()))?;
    }
    if let Some(path) = token_file {
        ensure!(
            !urls.is_empty(),
            "--upstream-token-file is for --upstream relays; none is given"
        );
        read_token(path)?;
    }
    Ok(())
}

pub fn parse_url(url: &str) -> anyhow::Result<UpstreamUrl> {
    let rest = url
        .strip_prefix("moqt://")
        .with_context(|| format!("upstream {url:?}: expected moqt://host:port[/path]"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], Some(rest[i..].to_string())),
        None => (rest, None),
    };
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6
            .split_once("]:")
            .with_context(|| format!("upstream {url:?}: expected [v6-address]:port"))?;
        (host, port)
    } else {
        authority
            .rsplit_once(':')
            .with_context(|| format!("upstream {url:?}: the port is missing (host:port)"))?
    };
    if host.is_empty() {
        bail!("upstream {url:?}: the host is missing");
    }
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .with_context(|| format!("upstream {url:?}: {port:?} is not a UDP port"))?;
    Ok(UpstreamUrl {
        host: host.to_string(),
        port,
        authority: authority.to_string(),
        path: path.filter(|p| p != "/"),
    })
}

/// The links' configurations from the command line; empty without
/// `--upstream`.
pub fn configs(
    urls: &[String],
    ca: Option<&Path>,
    server_name: Option<&str>,
    token_file: Option<&Path>,
    limits: &tls::TransportLimits,
) -> anyhow::Result<Vec<UpstreamConfig>> {
    if urls.is_empty() {
        if token_file.is_some() {
            bail!("--upstream-token-file is for --upstream relays; none is given");
        }
        return Ok(Vec::new());
    }
    let token = token_file.map(read_token).transpose()?;
    if urls.len() > MAX_UPSTREAMS {
        bail!("at most {MAX_UPSTREAMS} --upstream relays");
    }
    let ca = ca.context(
        "--upstream needs --upstream-ca FILE (PEM) to check the upstream relays' certificates",
    )?;
    let roots = tls::roots_from_pem_file(ca)?;
    let client = tls::link_client_config(roots, moqt::ALPN, limits)?;
    let mut out = Vec::new();
    for url in urls {
        let u = parse_url(url)?;
        let remote = (u.host.as_str(), u.port)
            .to_socket_addrs()
            .with_context(|| format!("upstream {url:?}: resolving {}", u.host))?
            .next()
            .with_context(|| format!("upstream {url:?}: {} has no address", u.host))?;
        out.push(UpstreamConfig {
            url: url.clone(),
            remote,
            server_name: server_name.unwrap_or(&u.host).to_string(),
            authority: u.authority,
            path: u.path,
            client: client.clone(),
            token: token.clone(),
        });
    }
    Ok(out)
}

/// For the AF_XDP backend, which writes Ethernet headers itself: the next
/// hop of every upstream whose MAC the kernel does not know yet is nudged
/// into resolution ([`netlink::nudge_neighbor`]); the periodic refresh of
/// the next-hop table then picks the address up. Returns how many were
/// nudged.
pub fn nudge_unresolved(ifindex: u32, table: &NextHopTable, upstreams: &[SocketAddr]) -> usize {
    let mut nudged = 0;
    for remote in upstreams {
        let hop: IpAddr = table.next_hop(remote.ip());
        if table.neighbors.contains_key(&hop) {
            continue;
        }
        match netlink::nudge_neighbor(ifindex, hop) {
            Ok(()) => nudged += 1,
            Err(e) => {
                tracing::warn!(%hop, upstream = %remote, error = %e, "could not start neighbour resolution for an upstream's next hop")
            }
        }
    }
    nudged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("moqt://198.18.0.1:4433").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path),
            ("198.18.0.1", 4433, None)
        );
        let u = parse_url("moqt://origin.example:443/live/x").unwrap();
        assert_eq!(u.authority, "origin.example:443");
        assert_eq!(u.path.as_deref(), Some("/live/x"));
        let u = parse_url("moqt://[fd00::1]:4433/").unwrap();
        assert_eq!((u.host.as_str(), u.path), ("fd00::1", None));
        for bad in [
            "https://a:1",
            "moqt://a",
            "moqt://:1",
            "moqt://a:0",
            "moqt://a:x",
            "moqt://[fd00::1]",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
