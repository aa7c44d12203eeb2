//! What a peer can make the relay hold, as command-line flags: each bound
//! in one place, validated together, and turned into the configurations of
//! the layers that enforce it (transport, session, engine, worker).
//! docs/limits.md is the operator's table of the same bounds.

use anyhow::{ensure, Result};
use dataplane::{tls::TransportLimits, worker::Admission};
use moqt::session::{SessionConfig, DEFAULT_MAX_BUFFERED_BYTES};
use relay::{engine::EngineConfig, quic::MIN_RECEIVE_WINDOW};

/// Largest control or request message (its length field is 16 bits).
const MAX_MESSAGE: usize = 64 * 1024;
/// Memory of one open stream's state besides its data (quinn-proto's
/// receive state, the session's decoder, the driver's maps): measured at
/// about 2 KiB (1 000 streams with 1 KiB each raised the relay's RSS by
/// 2 MiB). Reserved out of the connection's bound for every stream the
/// peer may open.
const STREAM_STATE_BYTES: usize = 2 * 1024;
/// Default of --max-object-size.
const DEFAULT_MAX_OBJECT: usize = 8 << 20;
/// Default of --cut-through.
const DEFAULT_CUT_THROUGH: usize = 16 << 10;

#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Memory one connection's receive side may cost the relay (bytes; K,
    /// M, G suffixes): the state of every stream the peer may open is
    /// reserved out of it, an eighth is left for allocation slack, and
    /// the rest is the data budget shared by the QUIC receive window and
    /// the incomplete objects and messages. Beyond the budget the peer's
    /// streams holding the most are stopped with EXCESSIVE_LOAD.
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_MAX_BUFFERED_BYTES)]
    pub max_connection_buffer: usize,
    /// Largest object payload accepted on an incoming stream; an object
    /// declaring more stops its stream with EXCESSIVE_LOAD. With
    /// --cut-through 0 objects are buffered whole, and this may be at most
    /// half of the data budget (see --max-connection-buffer).
    #[arg(long, value_parser = parse_size, default_value_t = DEFAULT_MAX_OBJECT)]
    pub max_object_size: usize,
    /// Cut-through forwarding: an object longer than this is forwarded in
    /// parts of at least this size while it streams in, instead of after
    /// its last byte arrived; a stream then holds at most about this much.
    /// 0 forwards every object whole. At most half of the data budget.
    #[arg(long = "cut-through", value_parser = parse_size, default_value_t = DEFAULT_CUT_THROUGH)]
    pub cut_through: usize,
    /// QUIC receive window of one stream.
    #[arg(long, value_parser = parse_size, default_value_t = 1 << 20)]
    pub max_stream_window: usize,
    /// Unidirectional streams a peer may have open at once (subgroups).
    #[arg(long, default_value_t = 1024)]
    pub max_uni_streams: u32,
    /// Bidirectional streams a peer may have open at once (requests).
    #[arg(long, default_value_t = 256)]
    pub max_bidi_streams: u32,
    /// Cache of one track (recent groups, for late joins and FETCH).
    #[arg(long, value_parser = parse_size, default_value_t = 8 << 20)]
    pub cache_per_track: usize,
    /// Caches of all tracks of one worker together; beyond it the oldest
    /// groups of the largest caches go. The process holds at most this
    /// times the number of workers.
    #[arg(long, value_parser = parse_size, default_value_t = 256 << 20)]
    pub cache_per_worker: usize,
    /// Caches of all workers together: each worker gets an equal share
    /// (or --cache-per-worker if that is smaller). Default: no bound
    /// beyond --cache-per-worker times the number of workers.
    #[arg(long, value_parser = parse_size)]
    pub cache_per_process: Option<usize>,
    /// Objects held for tracks whose SUBSCRIBE_OK has not arrived yet (an
    /// object may overtake it on another stream), over all publishers of
    /// a worker; when full, the publisher holding the most loses its
    /// oldest.
    #[arg(long, default_value_t = relay::early::DEFAULT_EARLY_MAX_ENTRIES)]
    pub max_early_objects: usize,
    /// Bytes of such objects, over all publishers of a worker.
    #[arg(long, value_parser = parse_size, default_value_t = relay::early::DEFAULT_EARLY_MAX_BYTES)]
    pub max_early_bytes: usize,
    /// Tracks relayed by one worker; further subscriptions get
    /// EXCESSIVE_LOAD.
    #[arg(long, default_value_t = 4096)]
    pub max_tracks: usize,
    /// Subscriptions of one session (waiting ones included).
    #[arg(long, default_value_t = 1024)]
    pub max_subscriptions: usize,
    /// Connections of one worker, any state; further ones are refused.
    #[arg(long, default_value_t = 10_000)]
    pub max_connections: usize,
    /// Handshakes in progress on one worker; further Initials are refused.
    #[arg(long, default_value_t = 1024)]
    pub max_handshakes: usize,
    /// With this many handshakes in progress on a worker, clients whose
    /// address is not validated get a Retry first.
    #[arg(long, default_value_t = 64)]
    pub retry_above_handshakes: usize,
}

impl LimitArgs {
    /// What the data of one connection may hold: the bound minus the
    /// reserved stream state and an eighth for allocation slack (with
    /// large buffers mmapped, see `pin_malloc_thresholds`, 1 000 stopped
    /// streams cost about 1.5 MiB beyond the data they held).
    pub fn data_budget(&self) -> usize {
        let streams = (self.max_uni_streams as usize + self.max_bidi_streams as usize)
            .saturating_mul(STREAM_STATE_BYTES);
        self.max_connection_buffer
            .saturating_sub(streams)
            .saturating_sub(self.max_connection_buffer / 8)
    }

    /// Checks the bounds against each other; errors name the flags.
    pub fn validate(&self) -> Result<()> {
        ensure!(
            self.max_object_size >= 1024,
            "--max-object-size must be at least 1K"
        );
        let budget = self.data_budget();
        ensure!(
            self.cut_through <= budget / 2,
            "--cut-through ({}) must be at most half of the data budget of \
             --max-connection-buffer ({budget} of {})",
            self.cut_through,
            self.max_connection_buffer
        );
        ensure!(
            self.cut_through > 0 || self.max_object_size <= budget / 2,
            "--max-object-size ({}) must be at most half of the data budget of \
             --max-connection-buffer ({budget} of {}, after the state of {} streams) when \
             --cut-through is 0: an object is then buffered whole, its buffer growing a \
             quarter at a time",
            self.max_object_size,
            self.max_connection_buffer,
            self.max_uni_streams as usize + self.max_bidi_streams as usize
        );
        let messages = (self.max_bidi_streams as usize + 2) * MAX_MESSAGE;
        ensure!(
            budget >= messages,
            "--max-connection-buffer ({}, a data budget of {budget}) must hold an incomplete \
             message on every request stream: at least ({} bidi streams + 2) x 64K = {messages}",
            self.max_connection_buffer,
            self.max_bidi_streams
        );
        ensure!(
            self.max_stream_window >= 1024 && self.max_stream_window <= self.max_connection_buffer,
            "--max-stream-window must be between 1K and --max-connection-buffer"
        );
        ensure!(
            self.max_uni_streams >= 1 && self.max_bidi_streams >= 1,
            "--max-uni-streams and --max-bidi-streams must be at least 1"
        );
        ensure!(
            self.cache_per_track <= self.cache_per_worker,
            "--cache-per-track ({}) must not exceed --cache-per-worker ({})",
            self.cache_per_track,
            self.cache_per_worker
        );
        ensure!(
            self.max_early_objects >= 1 && self.max_early_bytes >= 1024,
            "--max-early-objects must be at least 1 and --max-early-bytes at least 1K"
        );
        ensure!(
            self.max_tracks >= 1 && self.max_subscriptions >= 1,
            "--max-tracks and --max-subscriptions must be at least 1"
        );
        ensure!(
            self.max_connections >= 1 && self.max_handshakes >= 1,
            "--max-connections and --max-handshakes must be at least 1"
        );
        Ok(())
    }

    pub fn session(&self) -> SessionConfig {
        SessionConfig {
            max_object_size: self.max_object_size,
            max_buffered_bytes: self.data_budget(),
            cut_through_bytes: (self.cut_through > 0).then_some(self.cut_through),
            ..SessionConfig::default()
        }
    }

    /// The transport's limits; `max_udp_payload` comes from the interface.
    pub fn transport(&self, max_udp_payload: u16) -> TransportLimits {
        TransportLimits {
            max_udp_payload,
            max_bidi_streams: self.max_bidi_streams,
            max_uni_streams: self.max_uni_streams,
            // The relay shrinks it by what its session holds (never below
            // MIN_RECEIVE_WINDOW), so together they stay within the bound.
            receive_window: self.data_budget() as u64,
            stream_receive_window: (self.max_stream_window as u64).max(MIN_RECEIVE_WINDOW),
            ..TransportLimits::default()
        }
    }

    /// The engine of one of `workers` workers.
    pub fn engine(&self, workers: usize) -> Result<EngineConfig> {
        let share = self
            .cache_per_process
            .map_or(usize::MAX, |total| total / workers.max(1));
        ensure!(
            share >= self.cache_per_track,
            "--cache-per-process ({}) must give each of the {workers} workers at least \
             --cache-per-track ({})",
            self.cache_per_process.unwrap_or_default(),
            self.cache_per_track
        );
        Ok(EngineConfig {
            cache_bytes_per_track: self.cache_per_track,
            cache_bytes_total: self.cache_per_worker.min(share),
            max_tracks: self.max_tracks,
            max_subscriptions_per_session: self.max_subscriptions,
            early_max_entries: self.max_early_objects,
            early_max_bytes: self.max_early_bytes,
            ..EngineConfig::default()
        })
    }

    pub fn admission(&self) -> Admission {
        Admission {
            max_connections: self.max_connections,
            retry_above_handshakes: self.retry_above_handshakes,
            max_handshakes: self.max_handshakes,
        }
    }
}

/// A byte count: digits with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (digits, shift) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 30),
        _ => (s, 0),
    };
    let n: usize = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (bytes, or a number with K, M or G)"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        limits: LimitArgs,
    }

    fn limits(args: &[&str]) -> LimitArgs {
        Cli::try_parse_from(std::iter::once("x").chain(args.iter().copied()))
            .unwrap()
            .limits
    }

    #[test]
    fn sizes_take_suffixes_and_refuse_garbage() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("16K"), Ok(16 << 10));
        assert_eq!(parse_size("32M"), Ok(32 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }

    #[test]
    fn defaults_are_consistent_and_reach_every_layer() {
        let l = limits(&[]);
        l.validate().unwrap();
        // 32 MiB less 1 280 streams' state and an eighth.
        assert_eq!(l.data_budget(), (32 << 20) - 1280 * 2048 - (4 << 20));
        assert_eq!(l.session().max_buffered_bytes, l.data_budget());
        assert_eq!(l.transport(1452).receive_window, l.data_budget() as u64);
        assert_eq!(l.engine(4).unwrap().cache_bytes_total, 256 << 20);
        let split = limits(&["--cache-per-process", "512M"]);
        assert_eq!(split.engine(4).unwrap().cache_bytes_total, 128 << 20);
        assert_eq!(split.engine(1).unwrap().cache_bytes_total, 256 << 20);
        let e = limits(&["--cache-per-process", "16M"])
            .engine(4)
            .unwrap_err();
        assert!(e.to_string().contains("--cache-per-process"), "{e}");
        let early = limits(&["--max-early-objects", "10", "--max-early-bytes", "64K"]);
        let engine = early.engine(1).unwrap();
        assert_eq!(
            (engine.early_max_entries, engine.early_max_bytes),
            (10, 64 << 10)
        );
        assert_eq!(l.admission().max_connections, 10_000);
        assert_eq!(l.session().cut_through_bytes, Some(16 << 10));
        assert_eq!(
            limits(&["--cut-through", "0"]).session().cut_through_bytes,
            None
        );
    }

    #[test]
    fn inconsistent_bounds_name_their_flags() {
        // Objects larger than a connection's budget flow through in parts;
        // buffered whole they cannot.
        limits(&["--max-object-size", "20M"]).validate().unwrap();
        let e = limits(&["--max-object-size", "20M", "--cut-through", "0"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--max-object-size"), "{e}");
        let e = limits(&["--cut-through", "20M"]).validate().unwrap_err();
        assert!(e.to_string().contains("--cut-through"), "{e}");
        let e = limits(&["--max-connection-buffer", "4M"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("--max-connection-buffer"), "{e}");
        let e = limits(&["--cache-per-track", "1G"]).validate().unwrap_err();
        assert!(e.to_string().contains("--cache-per-worker"), "{e}");
    }
}
