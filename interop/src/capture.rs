//! Tracing setup, plus a layer that keeps moq-transport's control-message log
//! events.
//!
//! moq-transport turns a received REQUEST_ERROR into a `ServeError` that keeps
//! neither the reason phrase nor, for several codes, the code itself (e.g.
//! DOES_NOT_EXIST becomes a generic "Track not found" with a fresh UUID). The
//! library does log every received control message with its fields on the
//! `moq_transport::control` target, so the exact code and reason are recovered
//! from there, keyed by request ID.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use serde::Serialize;
use tracing::field::{Field, Visit};
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;

const CONTROL_TARGET: &str = "moq_transport::control";
/// Where moq-transport logs data streams it failed to receive.
const SESSION_TARGET: &str = "moq_transport::session";
const MAX_ERRORS: usize = 10_000;

/// A REQUEST_ERROR as received on the wire.
#[derive(Clone, Debug, Serialize)]
pub struct RequestErrorRecord {
    pub request_id: u64,
    pub code: u64,
    pub retry_interval: u64,
    /// Reason phrase as the library logged it. moq-transport redacts words
    /// containing `/` or `?` (shown as `[redacted]`).
    pub reason: String,
}

#[derive(Default)]
struct Captured {
    errors: Vec<RequestErrorRecord>,
    /// Count of received control messages by type.
    received: BTreeMap<String, u64>,
    /// Data streams moq-transport failed to receive, by cause
    /// (`RESET_STREAM 0x5`, ...).
    stream_failures: BTreeMap<String, u64>,
}

static CAPTURED: Mutex<Option<Captured>> = Mutex::new(None);

fn with_captured<R>(f: impl FnOnce(&mut Captured) -> R) -> R {
    let mut guard = CAPTURED.lock().unwrap_or_else(|p| p.into_inner());
    f(guard.get_or_insert_with(Captured::default))
}

/// The last REQUEST_ERROR received for `request_id`, if any.
pub fn request_error(request_id: u64) -> Option<RequestErrorRecord> {
    with_captured(|c| {
        c.errors
            .iter()
            .rev()
            .find(|e| e.request_id == request_id)
            .cloned()
    })
}

/// Every REQUEST_ERROR received so far.
pub fn all_request_errors() -> Vec<RequestErrorRecord> {
    with_captured(|c| c.errors.clone())
}

/// Received data streams that failed, counted by cause.
pub fn stream_failures() -> BTreeMap<String, u64> {
    with_captured(|c| c.stream_failures.clone())
}

/// Received control messages, counted by type.
pub fn received_counts() -> BTreeMap<String, u64> {
    with_captured(|c| c.received.clone())
}

#[derive(Default)]
struct ControlVisitor {
    direction: Option<String>,
    msg_type: Option<String>,
    request_id: Option<u64>,
    error_code: Option<u64>,
    retry_interval: Option<u64>,
    reason: Option<String>,
    message: Option<String>,
    error: Option<String>,
}

impl Visit for ControlVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "direction" => self.direction = Some(value.to_string()),
            "msg_type" => self.msg_type = Some(value.to_string()),
            "reason" => self.reason = Some(value.to_string()),
            "error" => self.error = Some(value.to_string()),
            _ => {}
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        match field.name() {
            "request_id" => self.request_id = Some(value),
            "error_code" => self.error_code = Some(value),
            "retry_interval" => self.retry_interval = Some(value),
            _ => {}
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if let Ok(v) = u64::try_from(value) {
            self.record_u64(field, v);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        match field.name() {
            "reason" => self.reason = Some(unquote(&format!("{value:?}"))),
            "direction" => self.direction = Some(unquote(&format!("{value:?}"))),
            "msg_type" => self.msg_type = Some(unquote(&format!("{value:?}"))),
            "message" => self.message = Some(format!("{value:?}")),
            "error" => self.error = Some(unquote(&format!("{value:?}"))),
            _ => {}
        }
    }
}

/// Undo the `{:?}` quoting the library applies to reason phrases.
fn unquote(s: &str) -> String {
    let Some(inner) = s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) else {
        return s.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `RESET_STREAM 0x5` for a reset, otherwise the error text.
fn stream_failure_cause(error: &str) -> String {
    if let Some(rest) = error.split("RESET_STREAM: ").nth(1) {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(code) = digits.parse::<u64>() {
            return format!("RESET_STREAM {code:#x}");
        }
    }
    error.chars().take(120).collect()
}

struct CaptureLayer;

impl<S: tracing::Subscriber> Layer<S> for CaptureLayer {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let target = event.metadata().target();
        if target == SESSION_TARGET {
            let mut v = ControlVisitor::default();
            event.record(&mut v);
            if v.message.as_deref() == Some("failed to serve stream") {
                let cause = stream_failure_cause(v.error.as_deref().unwrap_or(""));
                with_captured(|c| *c.stream_failures.entry(cause).or_default() += 1);
            }
            return;
        }
        if target != CONTROL_TARGET {
            return;
        }
        let mut v = ControlVisitor::default();
        event.record(&mut v);
        if v.direction.as_deref() != Some("recv") {
            return;
        }
        let Some(msg_type) = v.msg_type else { return };
        with_captured(|c| {
            *c.received.entry(msg_type.clone()).or_default() += 1;
            if msg_type == "REQUEST_ERROR" && c.errors.len() < MAX_ERRORS {
                c.errors.push(RequestErrorRecord {
                    request_id: v.request_id.unwrap_or(u64::MAX),
                    code: v.error_code.unwrap_or(u64::MAX),
                    retry_interval: v.retry_interval.unwrap_or(0),
                    reason: v.reason.unwrap_or_default(),
                });
            }
        });
    }
}

/// stderr logging (RUST_LOG, default `warn`) plus the control-message capture.
pub fn init_tracing() {
    let env = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(true)
        .with_filter(env);
    let capture = CaptureLayer.with_filter(
        Targets::new()
            .with_target(CONTROL_TARGET, tracing::Level::DEBUG)
            .with_target(SESSION_TARGET, tracing::Level::WARN),
    );
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(capture)
        .try_init();
}
