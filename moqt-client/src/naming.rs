//! Namespaces and track names from '/'-separated paths.

use anyhow::anyhow;
use bytes::Bytes;
use moqt::{FullTrackName, TrackNamespace};

/// Parse "a/b/c" into a namespace (fields split on '/').
pub fn namespace_from_path(path: &str) -> anyhow::Result<TrackNamespace> {
    let fields: Vec<Bytes> = path
        .split('/')
        .filter(|f| !f.is_empty())
        .map(|f| Bytes::copy_from_slice(f.as_bytes()))
        .collect();
    TrackNamespace::new(fields).map_err(|e| anyhow!("invalid namespace {path:?}: {e}"))
}

/// Namespace path plus track name as a full track name.
pub fn track_name(namespace: &str, track: &str) -> anyhow::Result<FullTrackName> {
    FullTrackName::new(
        namespace_from_path(namespace)?,
        Bytes::copy_from_slice(track.as_bytes()),
    )
    .map_err(|e| anyhow!("invalid track name {namespace}/{track}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_on_slashes() {
        let ns = namespace_from_path("/live//room/").unwrap();
        assert_eq!(ns, namespace_from_path("live/room").unwrap());
        let name = track_name("live/room", "video").unwrap();
        assert_eq!(
            name.to_serialized(),
            track_name("live/room/", "video").unwrap().to_serialized()
        );
    }
}
