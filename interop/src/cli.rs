//! Command line interface.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "moqt-interop",
    about = "MoQT draft-18 interop client (raw QUIC, ALPN moqt-18) built on Cloudflare's moq-transport 0.17",
    long_about = "MoQT draft-18 interop client (raw QUIC, ALPN moqt-18) built only on Cloudflare's \
                  moq-transport 0.17 crate. Prints progress on stderr and exactly one JSON object \
                  on one line on stdout; exits non-zero when that object has \"ok\":false."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Publish a namespace (PUBLISH_NAMESPACE, or direct PUBLISH) and serve its tracks.
    Pub(PubArgs),
    /// Subscribe to tracks and verify what arrives.
    Sub(SubArgs),
    /// Send one standalone FETCH and report what came back.
    Fetch(FetchArgs),
    /// SUBSCRIBE_NAMESPACE and report the namespaces (and PUBLISHed tracks) announced.
    SubNamespace(SubNamespaceArgs),
}

impl Command {
    pub fn name(&self) -> &'static str {
        match self {
            Command::Pub(_) => "pub",
            Command::Sub(_) => "sub",
            Command::Fetch(_) => "fetch",
            Command::SubNamespace(_) => "sub-namespace",
        }
    }
}

/// Connection options shared by every subcommand.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// Relay address, `IPv4:PORT` or `[IPv6]:PORT`.
    #[arg(long)]
    pub server: SocketAddr,
    /// PEM file with the CA or self-signed certificate to trust.
    #[arg(long)]
    pub ca: PathBuf,
    /// TLS server name (SNI) to verify the certificate against.
    #[arg(long, default_value = "localhost")]
    pub server_name: String,
    /// Optional connection path sent in the SETUP PATH parameter (e.g. `/moq`).
    #[arg(long)]
    pub path: Option<String>,
    /// Hand moq-transport the connection through
    /// `web_transport_quinn::Session::raw` instead of the built-in direct
    /// adapter. That wrapper maps every stream and connection error code into
    /// the WebTransport HTTP/3 code space, so codes differ on the wire and a
    /// peer's plain MoQT RESET_STREAM code ends the whole moq-transport session.
    #[arg(long)]
    pub wtq_raw: bool,
    /// Reach the relay over WebTransport (HTTP/3, ALPN `h3`) as browsers do:
    /// web-transport-quinn sends an extended CONNECT for
    /// `https://SERVER_NAME:PORT/PATH` offering the `moqt-18` subprotocol,
    /// and the MoQT session runs inside the WebTransport session.
    #[arg(long, conflicts_with = "wtq_raw")]
    pub webtransport: bool,
    /// Bound for every wait (connect, request responses, first subscription, ...).
    #[arg(long, default_value_t = 30_000)]
    pub timeout_ms: u64,
    /// Authorization token (a JWT for fastrelay) sent in SETUP as an
    /// AUTHORIZATION TOKEN option, USE_VALUE, Token Type 0; repeatable.
    #[arg(long)]
    pub auth_token: Vec<String>,
}

/// The namespace and the tracks in it that `pub` serves or `sub` takes.
#[derive(Args, Debug, Clone)]
pub struct TrackNames {
    /// Track namespace, `/`-separated (e.g. `live/cam1`).
    #[arg(long)]
    pub namespace: String,
    /// Track name; repeat for several tracks.
    #[arg(long = "track", required = true)]
    pub tracks: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubMode {
    /// One subgroup stream per group (subgroup 0).
    SubgroupPerGroup,
    /// Every object on its own subgroup stream (subgroup id = object id).
    SubgroupPerObject,
    /// K subgroup streams per group; objects round-robin over them.
    SubgroupsPerGroup(u64),
    /// Every object as an OBJECT_DATAGRAM.
    Datagram,
}

impl PubMode {
    pub fn label(&self) -> String {
        match self {
            PubMode::SubgroupPerGroup => "subgroup-per-group".into(),
            PubMode::SubgroupPerObject => "subgroup-per-object".into(),
            PubMode::SubgroupsPerGroup(k) => format!("subgroups-per-group:{k}"),
            PubMode::Datagram => "datagram".into(),
        }
    }
}

fn parse_mode(s: &str) -> Result<PubMode, String> {
    match s {
        "subgroup-per-group" => Ok(PubMode::SubgroupPerGroup),
        "subgroup-per-object" => Ok(PubMode::SubgroupPerObject),
        "datagram" => Ok(PubMode::Datagram),
        other => {
            if let Some(k) = other.strip_prefix("subgroups-per-group:") {
                let k: u64 = k
                    .parse()
                    .map_err(|_| format!("bad subgroup count in {other:?}"))?;
                if k == 0 {
                    return Err("subgroups-per-group needs K >= 1".into());
                }
                Ok(PubMode::SubgroupsPerGroup(k))
            } else {
                Err(format!(
                    "unknown mode {other:?} (subgroup-per-group | subgroup-per-object | \
                     subgroups-per-group:K | datagram)"
                ))
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum StartWhen {
    /// Start producing a track when its first subscription (or PUBLISH_OK) arrives.
    Subscribed,
    /// Start producing every track right after setup.
    Immediately,
}

#[derive(Args, Debug)]
pub struct PubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub names: TrackNames,
    /// Groups per track (0 = until --duration-ms).
    #[arg(long, default_value_t = 10)]
    pub groups: u64,
    /// Objects per group.
    #[arg(long, default_value_t = 10)]
    pub objects_per_group: u64,
    /// Object payload size in bytes (clamped to at least 28, the checked header).
    #[arg(long, default_value_t = 100)]
    pub object_size: usize,
    /// Objects per second per track, paced evenly (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    pub rate_objects_per_s: f64,
    /// `TRACK=R`: objects per second of one track (overrides
    /// --rate-objects-per-s for it); repeatable.
    #[arg(long)]
    pub track_rate: Vec<String>,
    /// subgroup-per-group | subgroup-per-object | subgroups-per-group:K | datagram
    #[arg(long, default_value = "subgroup-per-group", value_parser = parse_mode)]
    pub mode: PubMode,
    /// Publisher priority of every subgroup / datagram.
    #[arg(long, default_value_t = 128)]
    pub publisher_priority: u8,
    /// Add two object extension headers with known values to every object.
    #[arg(long)]
    pub extensions: bool,
    /// When to start producing a track.
    #[arg(long, value_enum, default_value_t = StartWhen::Subscribed)]
    pub start_when: StartWhen,
    /// Push each track with a direct PUBLISH instead of PUBLISH_NAMESPACE.
    #[arg(long)]
    pub direct_publish: bool,
    /// Keep the session open this long after the last object was produced.
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Keep tracks open (no PUBLISH_DONE) until the linger ends, so late
    /// subscribers still attach to a live track.
    #[arg(long)]
    pub hold_tracks: bool,
    /// Stop producing after this long (needed with --groups 0).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Text payloads `<group>/<object>;` instead of the checked layout,
    /// for subscribers of other projects that print what they receive.
    #[arg(long)]
    pub text_payloads: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GroupOrderArg {
    Ascending,
    Descending,
    Publisher,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FilterArg {
    /// Largest Object (0x2).
    Latest,
    /// Next Group Start (0x1).
    NextGroup,
    /// Absolute Start (0x3) at {G, O}.
    Absolute(u64, u64),
    /// Absolute Range (0x4) from {G, 0} to end group E.
    Range(u64, u64),
}

impl FilterArg {
    pub fn label(&self) -> String {
        match self {
            FilterArg::Latest => "latest".into(),
            FilterArg::NextGroup => "next-group".into(),
            FilterArg::Absolute(g, o) => format!("absolute:{g}:{o}"),
            FilterArg::Range(g, e) => format!("range:{g}:{e}"),
        }
    }
}

fn parse_filter(s: &str) -> Result<FilterArg, String> {
    match s {
        "latest" | "largest" => return Ok(FilterArg::Latest),
        "next-group" => return Ok(FilterArg::NextGroup),
        _ => {}
    }
    if let Some(rest) = s.strip_prefix("absolute:") {
        let (g, o) = match rest.split_once(':') {
            Some((g, o)) => (g, o),
            None => (rest, "0"),
        };
        let g = g.parse().map_err(|_| format!("bad group in {s:?}"))?;
        let o = o.parse().map_err(|_| format!("bad object in {s:?}"))?;
        return Ok(FilterArg::Absolute(g, o));
    }
    if let Some(rest) = s.strip_prefix("range:") {
        let (g, e) = rest
            .split_once(':')
            .ok_or_else(|| format!("range filter needs range:START:END, got {s:?}"))?;
        let g = g.parse().map_err(|_| format!("bad start group in {s:?}"))?;
        let e = e.parse().map_err(|_| format!("bad end group in {s:?}"))?;
        return Ok(FilterArg::Range(g, e));
    }
    Err(format!(
        "unknown filter {s:?} (latest | next-group | absolute:G[:O] | range:G:E)"
    ))
}

#[derive(Args, Debug)]
pub struct SubArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub names: TrackNames,
    /// Subscriber priority: `P` for every track, or `TRACK=P`; repeatable.
    #[arg(long = "priority")]
    pub priority: Vec<String>,
    /// Requested group order (omitted = publisher's).
    #[arg(long, value_enum)]
    pub group_order: Option<GroupOrderArg>,
    /// Subscription filter: latest | next-group | absolute:G[:O] | range:G:E
    /// (omitted = no SUBSCRIPTION_FILTER parameter).
    #[arg(long, value_parser = parse_filter)]
    pub filter: Option<FilterArg>,
    /// Send RENDEZVOUS_TIMEOUT (ms): ask the relay to hold the SUBSCRIBE
    /// until a publisher of the track appears.
    #[arg(long)]
    pub rendezvous_ms: Option<u64>,
    /// Send DELIVERY_TIMEOUT (ms) with the SUBSCRIBE.
    #[arg(long)]
    pub delivery_timeout_ms: Option<u64>,
    /// Authorization token sent in every SUBSCRIBE (AUTHORIZATION TOKEN
    /// parameter, USE_VALUE, Token Type 0).
    #[arg(long)]
    pub subscribe_token: Option<String>,
    /// Stop after this long (success unless something else failed).
    #[arg(long)]
    pub duration_ms: Option<u64>,
    /// Stop as soon as this many distinct objects arrived over all tracks;
    /// fewer at the end is a failure.
    #[arg(long)]
    pub expect_objects: Option<u64>,
    /// Retry a refused SUBSCRIBE every 200 ms for up to this long.
    #[arg(long, default_value_t = 0)]
    pub retry_ms: u64,
    /// On stop, UNSUBSCRIBE each track before closing. moq-transport 0.17
    /// sends the UNSUBSCRIBE message (type 0xA) on the request stream for
    /// this. Without the flag the client just closes the connection.
    #[arg(long)]
    pub unsubscribe: bool,
    /// Objects per group the publisher sends; when given a group only counts
    /// as complete with all of them, otherwise with no hole from object 0.
    #[arg(long)]
    pub objects_per_group: Option<u64>,
    /// The publisher is another project's: count its objects but do not
    /// check their layout; the first ones are reported as text
    /// (`payload_examples`).
    #[arg(long)]
    pub foreign_payloads: bool,
}

#[derive(Args, Debug)]
pub struct FetchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Track namespace, `/`-separated.
    #[arg(long)]
    pub namespace: String,
    /// Track name.
    #[arg(long)]
    pub track: String,
    /// Start Location `G:O`.
    #[arg(long)]
    pub start: String,
    /// End Location `G:O`, sent as-is: per draft-18 it is the last object
    /// plus one, and `G:0` means all of group G.
    #[arg(long)]
    pub end: String,
    /// Requested group order of the response.
    #[arg(long, value_enum)]
    pub group_order: Option<GroupOrderArg>,
    /// Subscriber priority of the FETCH.
    #[arg(long)]
    pub priority: Option<u8>,
}

#[derive(Args, Debug)]
pub struct SubNamespaceArgs {
    #[command(flatten)]
    pub common: Common,
    /// Namespace prefix, `/`-separated (empty = everything).
    #[arg(long)]
    pub prefix: String,
    /// How long to collect announcements.
    #[arg(long, default_value_t = 2_000)]
    pub duration_ms: u64,
    /// Stop early once this many distinct namespaces were announced; fewer
    /// by the end is a failure.
    #[arg(long)]
    pub expect: Option<usize>,
}
