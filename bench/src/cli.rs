//! Command-line pieces shared by the bench binaries' MoQT clients.

use std::{net::SocketAddr, path::PathBuf};

use moqt::FullTrackName;
use moqt_client::track_name;

/// Which relay a MoQT client talks to and which track it uses.
#[derive(clap::Args, Clone, Debug)]
pub struct TrackTarget {
    /// Relay address.
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM certificate to trust.
    #[arg(long)]
    pub ca: PathBuf,
    /// Track namespace, fields separated by '/', e.g. live/room.
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub track: String,
    /// Authorization token (JWT, `fastrelay token`) sent in SETUP;
    /// repeatable.
    #[arg(long)]
    pub token: Vec<String>,
}

impl TrackTarget {
    /// The full track name of `--namespace` and `--track`.
    pub fn full_track_name(&self) -> anyhow::Result<FullTrackName> {
        track_name(&self.namespace, &self.track)
    }
}
