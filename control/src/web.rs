//! The watch/publish web page (`web/` at the top of the repository),
//! embedded in the binary and served by the admin listener at `/`, with
//! `/session.json` telling the page where and how to connect: the relay's
//! UDP port and, with `--self-signed`, the SHA-256 hash of the certificate
//! in use (for WebTransport's `serverCertificateHashes`).

use std::sync::Mutex;

/// One embedded file: path, content type, body.
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static str,
}

/// The page's files. `/` is `index.html`.
pub const ASSETS: [Asset; 5] = [
    Asset {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        body: include_str!("../../web/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/app.js"),
    },
    Asset {
        path: "/moqt.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/moqt.js"),
    },
    Asset {
        path: "/payload.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_str!("../../web/payload.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_str!("../../web/style.css"),
    },
];

/// The embedded file served at `path`, if any.
pub fn asset(path: &str) -> Option<&'static Asset> {
    let path = if path == "/" { "/index.html" } else { path };
    ASSETS.iter().find(|a| a.path == path)
}

/// What `/session.json` tells the page; the hashes change when a
/// self-signed certificate is renewed.
pub struct WebInfo {
    port: u16,
    hashes: Mutex<Vec<String>>,
}

impl WebInfo {
    pub fn new(port: u16) -> Self {
        Self {
            port,
            hashes: Mutex::default(),
        }
    }

    /// The hex SHA-256 hashes of the self-signed certificate(s) in use.
    pub fn set_certificate_hashes(&self, hashes: Vec<String>) {
        if let Ok(mut h) = self.hashes.lock() {
            *h = hashes;
        }
    }

    /// The body of `/session.json`.
    pub fn session_json(&self) -> String {
        let hashes = self.hashes.lock().map(|h| h.clone()).unwrap_or_default();
        serde_json::json!({
            "port": self.port,
            "protocols": ["moqt-18"],
            "certificate_sha256": hashes,
        })
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_and_session() {
        assert!(asset("/").unwrap().body.contains("<script type=\"module\""));
        assert_eq!(
            asset("/app.js").unwrap().content_type,
            "text/javascript; charset=utf-8"
        );
        assert!(asset("/nope.js").is_none());
        // Every module the page imports is served.
        for a in &ASSETS {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.split('"').nth(1).unwrap();
                assert!(asset(from.trim_start_matches('.')).is_some(), "{from}");
            }
        }
        let info = WebInfo::new(4433);
        let v: serde_json::Value = serde_json::from_str(&info.session_json()).unwrap();
        assert_eq!(v["port"], 4433);
        assert_eq!(v["certificate_sha256"].as_array().unwrap().len(), 0);
        info.set_certificate_hashes(vec!["ab".repeat(32)]);
        let v: serde_json::Value = serde_json::from_str(&info.session_json()).unwrap();
        assert_eq!(v["certificate_sha256"][0], "ab".repeat(32));
    }
}
