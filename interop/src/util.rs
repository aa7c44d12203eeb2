//! Small helpers shared by the subcommands.

use anyhow::{bail, Context};
use moq_transport::coding::{Location, TrackNamespace};
use moq_transport::message::{GroupOrder, RequestErrorCode};
use moq_transport::serve::ServeError;
use serde_json::{json, Value};

use crate::capture;
use crate::cli::GroupOrderArg;

/// Parse a `/`-separated namespace; every field must be non-empty.
pub fn parse_namespace(s: &str) -> anyhow::Result<TrackNamespace> {
    let trimmed = s.trim_matches('/');
    if trimmed.is_empty() {
        bail!("namespace must have at least one field");
    }
    if trimmed.split('/').any(str::is_empty) {
        bail!("namespace {s:?} has an empty field");
    }
    Ok(TrackNamespace::from_utf8_path(trimmed))
}

/// Render a namespace as `a/b/c` (the library's Display adds a leading `/`).
pub fn ns_string(ns: &TrackNamespace) -> String {
    ns.fields
        .iter()
        .map(|f| String::from_utf8_lossy(&f.value).into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Parse `G:O`.
pub fn parse_location(s: &str) -> anyhow::Result<Location> {
    let (g, o) = s
        .split_once(':')
        .with_context(|| format!("location {s:?} must be GROUP:OBJECT"))?;
    let g = g.parse().with_context(|| format!("bad group in {s:?}"))?;
    let o = o.parse().with_context(|| format!("bad object in {s:?}"))?;
    Ok(Location::new(g, o))
}

pub fn group_order(arg: GroupOrderArg) -> GroupOrder {
    match arg {
        GroupOrderArg::Ascending => GroupOrder::Ascending,
        GroupOrderArg::Descending => GroupOrder::Descending,
        GroupOrderArg::Publisher => GroupOrder::Publisher,
    }
}

/// Best-effort wire code for a refusal the library reports as a `ServeError`.
pub fn code_from_serve_error(err: &ServeError) -> Option<u64> {
    Some(match err {
        ServeError::Closed(code) => *code,
        ServeError::NotFound | ServeError::NotFoundWithId(..) => {
            RequestErrorCode::DoesNotExist as u64
        }
        ServeError::Timeout => RequestErrorCode::Timeout as u64,
        ServeError::Duplicate => RequestErrorCode::DuplicateSubscription as u64,
        ServeError::NotImplemented(_) | ServeError::NotImplementedWithId(..) => {
            RequestErrorCode::NotSupported as u64
        }
        ServeError::Internal(_) | ServeError::InternalWithId(..) => {
            RequestErrorCode::InternalError as u64
        }
        _ => return None,
    })
}

/// JSON description of a refused request: the REQUEST_ERROR as received when
/// the library logged it, otherwise what the library's error says.
pub fn refusal_json(request_id: Option<u64>, err: &ServeError) -> Value {
    if let Some(rec) = request_id.and_then(capture::request_error) {
        return json!({
            "request_id": rec.request_id,
            "code": rec.code,
            "code_hex": format!("{:#x}", rec.code),
            "reason": rec.reason,
            "retry_interval": rec.retry_interval,
            "library_error": err.to_string(),
        });
    }
    let code = code_from_serve_error(err);
    json!({
        "request_id": request_id,
        "code": code,
        "code_hex": code.map(|c| format!("{c:#x}")),
        "reason": Value::Null,
        "library_error": err.to_string(),
    })
}

/// Latency summary in milliseconds from microsecond samples.
pub fn latency_json(samples: &mut [u64]) -> Value {
    if samples.is_empty() {
        return json!({ "samples": 0, "p50": Value::Null, "p99": Value::Null, "max": Value::Null, "min": Value::Null });
    }
    samples.sort_unstable();
    let pick = |q: f64| {
        let idx = ((samples.len() as f64 - 1.0) * q).round() as usize;
        samples[idx.min(samples.len() - 1)] as f64 / 1000.0
    };
    json!({
        "samples": samples.len(),
        "p50": pick(0.50),
        "p99": pick(0.99),
        "max": samples[samples.len() - 1] as f64 / 1000.0,
        "min": samples[0] as f64 / 1000.0,
    })
}

pub fn ms_since(start: std::time::Instant) -> u64 {
    start.elapsed().as_millis() as u64
}
