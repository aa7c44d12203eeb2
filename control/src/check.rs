//! What `fastrelay run` checks before it touches the host, and
//! `fastrelay check-config FILE`, which runs those checks (and reads the
//! files the options name) without starting anything.

use std::{ffi::OsString, path::Path, process::ExitCode};

use anyhow::{ensure, Context};
use clap::ValueEnum;
use dataplane::tls::{self, Identity};

use crate::{
    config::{self, Origin, ParseError},
    iface::InterfaceInfo,
    run, Backend, Command, RunArgs,
};

/// The checks of `run`'s options against each other: they need neither
/// the interface nor the files. Errors name the flags.
pub fn static_checks(args: &RunArgs) -> anyhow::Result<()> {
    args.limits.validate()?;
    let workers = match args.backend {
        Backend::Xdp => {
            ensure!(
                args.workers.is_none(),
                "--workers is for --backend socket; the XDP backend runs one worker per queue (--queues)"
            );
            // Queue numbers are checked against the interface at start.
            (args.queues != "all")
                .then(|| run::parse_queues(&args.queues, u32::MAX).map(|q| q.len()))
                .transpose()?
        }
        Backend::Socket => {
            let workers = args.workers.unwrap_or(1);
            ensure!(
                (1..=dataplane::cid::MAX_WORKERS).contains(&workers),
                "--workers must be 1..={}",
                dataplane::cid::MAX_WORKERS
            );
            Some(workers)
        }
    };
    if let Some(spec) = &args.cores {
        match workers {
            Some(n) => {
                run::parse_cores(Some(spec), n, usize::MAX)?;
            }
            None => {
                for part in spec.split(',') {
                    part.trim()
                        .parse::<usize>()
                        .with_context(|| format!("--cores: {part:?} is not a core number"))?;
                }
            }
        }
    }
    if let Some(n) = workers {
        args.limits.engine(n)?;
    }
    ensure!(
        args.delivery_timeout_ms >= 1,
        "--delivery-timeout-ms must be at least 1"
    );
    ensure!(
        args.self_signed || (args.cert.is_some() && args.key.is_some()),
        "give --cert and --key, or --self-signed"
    );
    Ok(())
}

/// What `run` checks first: [`static_checks`], with errors placed at the
/// file's key when the options came from a config file.
pub fn before_run(args: &RunArgs, origin: Option<&Origin>) -> anyhow::Result<()> {
    let Some(origin) = origin else {
        return static_checks(args);
    };
    let used: Vec<&str> = origin.placed.iter().map(|p| p.key.as_str()).collect();
    tracing::info!(
        file = %origin.path.display(),
        keys = ?used,
        overridden_by_command_line = ?origin.overridden,
        "config file read"
    );
    static_checks(args).map_err(|e| anyhow::anyhow!(origin.locate(&e)))
}

/// The files the options name: the certificate and key parse and belong
/// together (the TLS configuration `run` builds accepts them), and the
/// directory of --write-cert exists.
fn file_checks(args: &RunArgs) -> anyhow::Result<()> {
    if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
        // dataplane's messages say which of the two failed; the flag in
        // front lets the error point at that key.
        let identity = Identity::from_pem_files(cert, key).map_err(|e| {
            let flag = if format!("{e:#}").contains("private key") {
                "--key"
            } else {
                "--cert"
            };
            e.context(flag)
        })?;
        tls::server_config(
            identity,
            &relay::router::ALPNS,
            &args.limits.transport(1200),
        )
        .with_context(|| {
            format!(
                "--cert {} with --key {}: not a usable TLS identity",
                cert.display(),
                key.display()
            )
        })?;
    }
    // The authorization keys load (each error names its --auth-key).
    args.auth.authorizer()?;
    crate::upstream::check(
        &args.upstream,
        args.upstream_ca.as_deref(),
        args.upstream_token_file.as_deref(),
    )?;
    if let Some(path) = &args.write_cert {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        ensure!(
            dir.is_dir(),
            "--write-cert {}: directory {} does not exist",
            path.display(),
            dir.display()
        );
    }
    Ok(())
}

/// What depends on the host the check runs on (the relay may be meant
/// for another): reported as notes, not errors.
fn host_notes(args: &RunArgs) -> Vec<String> {
    let mut notes = Vec::new();
    let cores = core_affinity::get_core_ids()
        .unwrap_or_default()
        .len()
        .max(1);
    let mut on_host = |e: anyhow::Error| notes.push(format!("{e:#} (on this host)"));
    let queues = match InterfaceInfo::lookup(&args.iface) {
        Err(e) => {
            on_host(e);
            None
        }
        Ok(info) => Some(info.rx_queues),
    };
    // Without the interface, `queues = "all"` leaves the count open.
    let workers = match args.backend {
        Backend::Socket => Some(args.workers.unwrap_or(1)),
        Backend::Xdp => match (queues, args.queues.as_str()) {
            (Some(n), spec) => run::parse_queues(spec, n)
                .map_err(&mut on_host)
                .ok()
                .map(|q| q.len()),
            (None, "all") => None,
            (None, spec) => run::parse_queues(spec, u32::MAX).ok().map(|q| q.len()),
        },
    };
    if let Some(n) = workers {
        if let Err(e) = run::parse_cores(args.cores.as_deref(), n, cores) {
            on_host(e);
        }
        if let Err(e) = args.limits.engine(n) {
            on_host(e);
        }
    }
    if args.backend == Backend::Xdp {
        if let Err(e) = crate::caps::check_xdp() {
            notes.push(format!("{e} (this check's own process)"));
        }
    }
    notes
}

/// `fastrelay check-config FILE`: exit 0 with a summary on stdout when
/// `run --config FILE` would accept the file, else `FILE:LINE: key `X`:
/// reason` on stderr and exit 1.
pub fn check_config(file: &Path) -> ExitCode {
    let argv: Vec<OsString> = vec![
        "fastrelay".into(),
        "run".into(),
        "--config".into(),
        file.into(),
    ];
    let (args, origin) = match config::parse(argv) {
        Ok((
            crate::Cli {
                command: Command::Run(args),
            },
            Some(origin),
        )) => (args, origin),
        Ok(_) => unreachable!("a run command line with --config"),
        Err(e) => {
            match e {
                ParseError::File(m) => eprintln!("{m}"),
                ParseError::Clap(e) => eprintln!("{}: {e}", file.display()),
            }
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = static_checks(&args).and_then(|()| file_checks(&args)) {
        eprintln!("{}", origin.locate(&e));
        return ExitCode::FAILURE;
    }
    println!("{}", summary(&args, &origin));
    for note in host_notes(&args) {
        println!("note: {note}");
    }
    ExitCode::SUCCESS
}

fn summary(args: &RunArgs, origin: &Origin) -> String {
    let keys: Vec<&str> = origin.placed.iter().map(|p| p.key.as_str()).collect();
    let workers = match args.backend {
        Backend::Xdp => format!("queues {}", args.queues),
        Backend::Socket => format!("{} worker(s)", args.workers.unwrap_or(1)),
    };
    let tls = match &args.cert {
        Some(cert) => format!("certificate {}", cert.display()),
        None => "self-signed certificate".to_owned(),
    };
    let backend = args.backend.to_possible_value();
    format!(
        "{}: ok ({} key(s) set: {}; the other options have their defaults)\n\
         relay: backend {} on {} port {}, {workers}, idle {}, {tls}, \
         --max-connection-buffer {}, --max-connections {} per worker",
        origin.path.display(),
        keys.len(),
        keys.join(", "),
        backend.as_ref().map_or("?", |v| v.get_name()),
        args.iface,
        args.port,
        args.idle.name(),
        args.limits.max_connection_buffer,
        args.limits.max_connections,
    )
}
