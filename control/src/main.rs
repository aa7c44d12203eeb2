//! `fastrelay`: the relay's control plane. It sets up the dataplane (XDP
//! program, AF_XDP sockets or a kernel UDP socket), starts one pinned worker
//! per queue, keeps next-hop tables fresh, and tears everything down on
//! SIGINT/SIGTERM.

mod admin;
mod auth;
mod caps;
mod check;
mod config;
mod iface;
mod limits;
mod metrics;
mod netlink;
mod pass;
mod run;
mod selfsigned;
mod snapshot;
mod upstream;
mod web;
mod xdp;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};
use dataplane::worker::IdleMode;

#[derive(Parser)]
#[command(
    name = "fastrelay",
    version,
    about = "Media-over-QUIC relay with a kernel-bypass (AF_XDP) dataplane"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay on one interface until SIGINT/SIGTERM.
    Run(Box<RunArgs>),
    /// Print a signed authorization token (JWT) for publishers and
    /// subscribers of a relay run with --auth-key (docs/auth.md).
    Token(auth::TokenArgs),
    /// Check a config file for `run --config` as `run` would, without
    /// starting anything: print a summary and exit 0, or print
    /// "FILE:LINE: key `X`: reason" and exit 1.
    CheckConfig {
        /// The TOML file (keys: the long flags of `run`).
        file: PathBuf,
    },
    /// Attach the XDP program with no relay port (it passes every packet)
    /// until SIGINT/SIGTERM. A veth receives in native mode only when its
    /// peer has an XDP program too: this is that program, for test
    /// topologies with several queues (see docs/dataplane.md).
    XdpPass {
        #[arg(long)]
        iface: String,
        #[arg(long, value_enum, default_value_t = xdp::XdpMode::Drv)]
        xdp_mode: xdp::XdpMode,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// XDP redirects the relay port into AF_XDP sockets, one per queue.
    Xdp,
    /// A kernel UDP socket: for hosts without XDP, and the benchmark baseline.
    Socket,
}

/// `--idle`: the names [`IdleMode`] parses, each listed with a line of help.
fn idle_parser() -> impl clap::builder::TypedValueParser<Value = IdleMode> {
    use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
    let help = |mode| match mode {
        IdleMode::Busy => "Spin without pause: lowest latency, one full core per worker",
        IdleMode::Adaptive => "Spin briefly, then sleep in poll() until traffic or a timer",
        IdleMode::Block => "Sleep in poll() whenever there is nothing to do: least CPU",
    };
    PossibleValuesParser::new(IdleMode::ALL.map(|m| PossibleValue::new(m.name()).help(help(m))))
        .try_map(|name| name.parse::<IdleMode>())
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Read options from this TOML file: keys are the long flags of `run`
    /// (`port = 4433`, `self-signed = true`, lists for repeatable flags);
    /// flags on the command line override it (docs/configuration.md).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Interface that carries the relay's traffic.
    #[arg(long)]
    pub iface: String,
    /// UDP port of the relay.
    #[arg(long, default_value_t = 4433)]
    pub port: u16,
    /// NIC queues to serve: `all` or a comma-separated list such as `0,1`.
    #[arg(long, default_value = "all")]
    pub queues: String,
    /// Cores for the workers, in the order of --queues (XDP) or of the
    /// workers (socket), e.g. `2,3`; default: worker i on core i.
    #[arg(long)]
    pub cores: Option<String>,
    /// Workers of the socket backend, one SO_REUSEPORT socket each (the
    /// kernel spreads flows over them). The XDP backend runs one worker
    /// per queue instead.
    #[arg(long)]
    pub workers: Option<usize>,
    #[arg(long, value_enum, default_value_t = Backend::Xdp)]
    pub backend: Backend,
    /// XDP attach mode; `auto` means native on physical NICs, generic on virtual devices.
    #[arg(long, value_enum, default_value_t = xdp::XdpMode::Auto)]
    pub xdp_mode: xdp::XdpMode,
    /// Force AF_XDP copy mode even where the driver offers zero-copy.
    #[arg(long)]
    pub xdp_copy: bool,
    /// Certificate chain (PEM); read again, with --key, on SIGHUP.
    #[arg(long, requires = "key", conflicts_with = "self_signed")]
    pub cert: Option<PathBuf>,
    /// Private key (PEM) for --cert.
    #[arg(long, requires = "cert", conflicts_with = "self_signed")]
    pub key: Option<PathBuf>,
    /// Generate a self-signed certificate (testing, demos, browsers that
    /// pin its SHA-256 hash): ECDSA P-256 for the interface's addresses,
    /// `localhost` and `fastrelay`, renewed before it expires.
    #[arg(long)]
    pub self_signed: bool,
    /// Validity of the --self-signed certificate in seconds (browsers pin a
    /// hash only for certificates valid at most 14 days); a new one is made
    /// when a third of it is left.
    #[arg(long, default_value_t = 864_000, value_parser = clap::value_parser!(u64).range(30..=1_209_600))]
    pub self_signed_validity_s: u64,
    /// Write the certificate in use (PEM) to this file, so that clients can trust it.
    #[arg(long)]
    pub write_cert: Option<PathBuf>,
    #[arg(long, value_parser = idle_parser(), default_value_t = IdleMode::Adaptive)]
    pub idle: IdleMode,
    /// Log worker statistics every N seconds and print them as a JSON line
    /// (`"event":"stats"`, with what the relay holds and its RSS) on
    /// stdout (0: only the final report at exit).
    #[arg(long, default_value_t = 0)]
    pub stats_interval: u64,
    /// Delivery timeout of subscriptions that give none (ms): objects that
    /// waited longer for a congested subscriber are not sent.
    #[arg(long, default_value_t = relay::shed::DEFAULT_DELIVERY_TIMEOUT.as_millis() as u64)]
    pub delivery_timeout_ms: u64,
    /// Most bytes waiting in the relay for one subscriber connection;
    /// beyond it, its lowest-priority subgroups are dropped.
    #[arg(long, default_value_t = relay::shed::DEFAULT_MAX_BACKLOG_BYTES)]
    pub max_backlog_bytes: usize,
    /// On SIGTERM/SIGINT: how long sessions keep being served after the
    /// relay's GOAWAY (its timeout) before their subscriptions end with
    /// PUBLISH_DONE (GOING_AWAY), their streams are finished and the
    /// connections close (ms).
    #[arg(long, default_value_t = 2000)]
    pub drain_ms: u64,
    /// Serve Prometheus `/metrics` and `/health` over HTTP on this TCP
    /// address (`host:port`, or a bare port on 127.0.0.1); off without it.
    #[arg(long, value_name = "ADDR")]
    pub admin: Option<String>,
    /// Upstream relay, `moqt://host:port[/path]` (the path goes in the
    /// SETUP's PATH): tracks whose namespace no local publisher serves are
    /// subscribed there. Repeatable; the first one that is up is used.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstream: Vec<String>,
    /// Certificates (PEM) trusted for --upstream relays, e.g. the
    /// upstream's --write-cert output.
    #[arg(long, value_name = "FILE")]
    pub upstream_ca: Option<PathBuf>,
    /// Name the upstream relays' certificates are checked against
    /// (default: the URL's host).
    #[arg(long, value_name = "NAME")]
    pub upstream_server_name: Option<String>,
    /// File holding a JWT the --upstream relays accept (their
    /// --auth-key), presented in every link's SETUP; read at start.
    #[arg(long, value_name = "FILE")]
    pub upstream_token_file: Option<PathBuf>,
    #[command(flatten)]
    pub limits: limits::LimitArgs,
    #[command(flatten)]
    pub auth: auth::AuthArgs,
}

fn main() -> ExitCode {
    pin_malloc_thresholds();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FASTRELAY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let (cli, origin) = match config::parse(std::env::args_os().collect()) {
        Ok(parsed) => parsed,
        Err(config::ParseError::Clap(e)) => e.exit(),
        Err(config::ParseError::File(message)) => {
            eprintln!("fastrelay: error: {message}");
            return ExitCode::from(2);
        }
    };
    let result = match cli.command {
        Command::Run(args) => {
            check::before_run(&args, origin.as_ref()).and_then(|()| run::run(*args))
        }
        Command::Token(args) => auth::token(&args),
        Command::CheckConfig { file } => return check::check_config(&file),
        Command::XdpPass { iface, xdp_mode } => pass::run(&iface, xdp_mode),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fastrelay: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Allocations of 128 KiB and more (large incomplete objects, cache
/// entries of big objects) get their own mappings, returned to the kernel
/// when freed. glibc otherwise raises this threshold after each such free
/// and serves later ones from the heap, where a peer's stopped streams
/// leave freed memory the process keeps: resident memory would then stay
/// above what the per-connection bounds promise.
fn pin_malloc_thresholds() {
    // SAFETY: mallopt only sets allocator parameters; called before any
    // thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}
