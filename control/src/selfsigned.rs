//! `--self-signed`: the relay's own short-lived certificate (browsers pin
//! it by its SHA-256 hash, which WebTransport allows only for ECDSA P-256
//! certificates valid at most 14 days), its names, and its renewal before
//! it expires through the same hand-over a SIGHUP reload uses.

use std::time::{Duration, SystemTime};

use dataplane::tls::{self, Identity};
use serde_json::json;

use crate::{web, RunArgs};

/// The names of a `--self-signed` certificate: the interface's addresses
/// (browsers and clients that connect by address), `localhost`, and
/// `fastrelay` (the name the project's own clients verify).
pub fn names(addrs: &[std::net::IpAddr]) -> Vec<String> {
    let mut names: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    names.push("localhost".into());
    names.push("fastrelay".into());
    names
}

/// A self-signed certificate is replaced once a third of its validity is
/// left, so a browser that fetched its hash has days to connect.
pub fn renewal_due(info: &tls::SelfSignedInfo, now: SystemTime) -> bool {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let left_at_renewal = (info.not_after - info.not_before) / 3;
    now + left_at_renewal >= info.not_after
}

/// Makes a new self-signed certificate with the same names and validity,
/// has `install` hand it to the workers for new handshakes (established
/// connections keep theirs; it also rewrites `--write-cert`), and tells:
/// stdout event `certificate_renewed`, the log, the web page's
/// `/session.json`. On failure the old one stays and the next check tries
/// again.
pub fn renew(
    args: &RunArgs,
    names: &[String],
    info: &mut tls::SelfSignedInfo,
    web: &web::WebInfo,
    install: impl FnOnce(Identity) -> anyhow::Result<()>,
) {
    let validity = Duration::from_secs(args.self_signed_validity_s);
    let made = Identity::self_signed_short(names, SystemTime::now(), validity)
        .and_then(|(identity, new_info)| install(identity).map(|()| new_info));
    match made {
        Ok(new_info) => {
            *info = new_info;
            web.set_certificate_hashes(vec![info.sha256_hex()]);
            announce("certificate_renewed", info);
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "renewing the self-signed certificate failed; keeping the current one");
        }
    }
}

/// The self-signed certificate in use, on stdout (`{"event":EVENT,
/// "sha256":HEX,...}`) and in the log.
pub fn announce(event: &str, info: &tls::SelfSignedInfo) {
    let hash = info.sha256_hex();
    tracing::info!(
        sha256 = %hash,
        not_before = info.not_before,
        not_after = info.not_after,
        "self-signed certificate in use (browsers pin it by this SHA-256 hash)"
    );
    println!(
        "{}",
        json!({
            "event": event,
            "sha256": hash,
            "not_before": info.not_before,
            "not_after": info.not_after,
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_renewal_time() {
        let info = tls::SelfSignedInfo {
            sha256: [0; 32],
            not_before: 1000,
            not_after: 1900,
        };
        let at = |s| std::time::UNIX_EPOCH + Duration::from_secs(s);
        assert!(!renewal_due(&info, at(1000)));
        assert!(!renewal_due(&info, at(1599)));
        assert!(renewal_due(&info, at(1600)));
        let listed = names(&["198.18.0.1".parse().unwrap()]);
        assert_eq!(listed, ["198.18.0.1", "localhost", "fastrelay"]);
    }
}
