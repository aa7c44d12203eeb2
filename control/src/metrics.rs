//! `/metrics`: a [`Snapshot`] in the Prometheus text exposition format
//! 0.0.4. Every family is documented in docs/metrics.md.

use std::{fmt::Write, time::Duration};

use dataplane::worker::CloseReason;

use crate::snapshot::{Snapshot, WorkerSnapshot};

/// Upper bounds of the relay hop histogram's buckets (seconds).
pub const HOP_BUCKETS: [f64; 17] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// The content type of the format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Names of the cross-worker drop classes (publisher priority ranges).
const CLASS_NAMES: [&str; relay::crossworker::CLASSES] = ["0-63", "64-127", "128-255", "datagram"];

#[derive(Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Writes families: a `# HELP` and `# TYPE` line, then its samples.
struct Writer {
    out: String,
}

type Labels<'a> = &'a [(&'a str, &'a str)];

impl Writer {
    fn family(&mut self, name: &str, kind: Kind, help: &str) {
        let kind = match kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        };
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: Labels<'_>, value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"");
                escape_label(&mut self.out, v);
                self.out.push('"');
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }

    /// A family with one sample per worker, labelled `worker`.
    fn per_worker(
        &mut self,
        name: &str,
        kind: Kind,
        help: &str,
        workers: &[WorkerSnapshot],
        value: impl Fn(&WorkerSnapshot) -> u64,
    ) {
        self.family(name, kind, help);
        for w in workers {
            let q = w.queue.to_string();
            self.sample(name, &[("worker", &q)], value(w) as f64);
        }
    }

    /// A family with one sample per worker and value of a second label.
    fn per_worker_by(
        &mut self,
        name: &str,
        help: &str,
        workers: &[WorkerSnapshot],
        label: &str,
        values: impl Fn(&WorkerSnapshot) -> Vec<(&'static str, u64)>,
    ) {
        self.family(name, Kind::Counter, help);
        for w in workers {
            let q = w.queue.to_string();
            for (v, n) in values(w) {
                self.sample(name, &[("worker", &q), (label, v)], n as f64);
            }
        }
    }
}

fn escape_label(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

fn number(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        // Display never uses an exponent; integers print without a point.
        format!("{v}")
    }
}

/// The exposition of `snap`.
pub fn render(snap: &Snapshot) -> String {
    let mut w = Writer {
        out: String::with_capacity(16 * 1024),
    };
    let ws = &snap.workers;

    w.family(
        "fastrelay_uptime_seconds",
        Kind::Gauge,
        "Seconds since the relay started.",
    );
    w.sample("fastrelay_uptime_seconds", &[], snap.uptime_s);
    if let Some(rss) = snap.rss_bytes {
        w.family(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory of the relay process in bytes.",
        );
        w.sample("process_resident_memory_bytes", &[], rss as f64);
    }
    w.family(
        "fastrelay_draining",
        Kind::Gauge,
        "1 once the relay is shutting down (GOAWAY sent, sessions draining).",
    );
    w.sample("fastrelay_draining", &[], u8::from(snap.draining).into());
    w.per_worker(
        "fastrelay_worker_up",
        Kind::Gauge,
        "1 while the worker thread runs.",
        ws,
        |x| x.running.into(),
    );
    w.per_worker(
        "fastrelay_worker_iterations_total",
        Kind::Counter,
        "Passes of the worker loop.",
        ws,
        |x| x.counts.iterations,
    );

    // Packets.
    w.per_worker(
        "fastrelay_packets_received_total",
        Kind::Counter,
        "UDP datagrams the worker's backend received for the relay port.",
        ws,
        |x| x.counts.rx_packets,
    );
    w.per_worker(
        "fastrelay_packets_sent_total",
        Kind::Counter,
        "UDP datagrams the worker's backend sent.",
        ws,
        |x| x.counts.tx_packets,
    );
    w.per_worker_by(
        "fastrelay_packets_dropped_total",
        "Datagrams dropped by the worker's backend: received frames that were not a UDP datagram for the relay (rx_malformed), datagrams it could not send (tx: no next hop, ring or socket full).",
        ws,
        "reason",
        |x| {
            vec![
                ("rx_malformed", x.counts.rx_dropped_malformed),
                ("tx", x.counts.tx_dropped),
            ]
        },
    );
    w.per_worker_by(
        "fastrelay_handoff_datagrams_total",
        "Datagrams steered between workers to the worker owning their connection.",
        ws,
        "direction",
        |x| {
            vec![
                ("out", x.counts.handed_off_out),
                ("in", x.counts.handed_off_in),
            ]
        },
    );
    w.per_worker(
        "fastrelay_handoff_dropped_total",
        Kind::Counter,
        "Datagrams that could not be handed to their owner (its inbox full).",
        ws,
        |x| x.counts.handoff_dropped,
    );

    // Connections.
    w.per_worker(
        "fastrelay_connections_accepted_total",
        Kind::Counter,
        "QUIC connections accepted.",
        ws,
        |x| x.counts.connections_accepted,
    );
    w.per_worker(
        "fastrelay_connections_refused_total",
        Kind::Counter,
        "Connection attempts refused by admission control (connection limits).",
        ws,
        |x| x.counts.connections_refused,
    );
    w.per_worker(
        "fastrelay_connections_retried_total",
        Kind::Counter,
        "Initials answered with a Retry (address validation under load).",
        ws,
        |x| x.counts.connections_retried,
    );
    w.per_worker(
        "fastrelay_connections_active",
        Kind::Gauge,
        "QUIC connections the worker holds, handshakes included.",
        ws,
        |x| x.counts.connections_active,
    );
    w.per_worker_by(
        "fastrelay_connections_closed_total",
        "QUIC connections gone, by why they ended.",
        ws,
        "reason",
        |x| {
            CloseReason::ALL
                .iter()
                .map(|r| (r.name(), x.counts.connections_closed[*r as usize]))
                .collect()
        },
    );

    // MoQT.
    w.per_worker(
        "fastrelay_moqt_sessions_opened_total",
        Kind::Counter,
        "MoQT sessions started (handshake done on ALPN moqt-18 or h3).",
        ws,
        |x| x.relay.stats.sessions_opened,
    );
    w.per_worker(
        "fastrelay_webtransport_connections_total",
        Kind::Counter,
        "Connections that negotiated ALPN h3 (MoQT inside WebTransport, browsers).",
        ws,
        |x| x.relay.stats.webtransport_sessions,
    );
    w.per_worker(
        "fastrelay_moqt_sessions_closed_by_violation_total",
        Kind::Counter,
        "MoQT sessions the relay closed for a protocol violation.",
        ws,
        |x| x.relay.stats.sessions_closed_by_violation,
    );
    w.per_worker(
        "fastrelay_moqt_sessions_active",
        Kind::Gauge,
        "MoQT sessions the worker's relay serves.",
        ws,
        |x| x.relay.state.connections as u64,
    );
    w.per_worker(
        "fastrelay_tracks",
        Kind::Gauge,
        "Tracks the worker's relay knows (published or subscribed upstream).",
        ws,
        |x| x.relay.state.engine.tracks as u64,
    );
    w.per_worker(
        "fastrelay_subscriptions",
        Kind::Gauge,
        "Downstream subscriptions served (SUBSCRIBE and PUBLISH to subscribers).",
        ws,
        |x| x.relay.state.subscriptions as u64,
    );
    w.per_worker(
        "fastrelay_objects_received_total",
        Kind::Counter,
        "Whole objects received from publishers (subgroup streams and datagrams).",
        ws,
        |x| x.relay.traffic.objects_received,
    );
    w.per_worker(
        "fastrelay_object_bytes_received_total",
        Kind::Counter,
        "Object payload bytes received from publishers.",
        ws,
        |x| x.relay.traffic.bytes_received,
    );
    w.per_worker(
        "fastrelay_objects_sent_total",
        Kind::Counter,
        "Objects written to subscribers (one per object per subscriber).",
        ws,
        |x| x.relay.traffic.objects_sent,
    );
    w.per_worker(
        "fastrelay_object_bytes_sent_total",
        Kind::Counter,
        "Object payload bytes written to subscribers.",
        ws,
        |x| x.relay.traffic.bytes_sent,
    );

    // Shedding.
    w.per_worker_by(
        "fastrelay_subgroups_shed_total",
        "Subgroup streams a congested subscriber lost (reset), by rule.",
        ws,
        "reason",
        |x| {
            vec![
                ("delivery_timeout", x.relay.shed.subgroups_timed_out),
                ("backlog", x.relay.shed.subgroups_over_backlog),
            ]
        },
    );
    w.per_worker_by(
        "fastrelay_objects_shed_total",
        "Objects not sent to a congested subscriber: datagrams dropped, objects of an already shed subgroup skipped.",
        ws,
        "reason",
        |x| {
            vec![
                ("datagram", x.relay.shed.datagrams_dropped),
                ("subgroup_shed", x.relay.shed.objects_skipped),
            ]
        },
    );
    w.per_worker(
        "fastrelay_shed_bytes_total",
        Kind::Counter,
        "Bytes dropped from subscribers' backlogs by shedding.",
        ws,
        |x| x.relay.shed.bytes_dropped,
    );
    w.per_worker(
        "fastrelay_subscriber_backlog_max_bytes",
        Kind::Gauge,
        "Largest backlog one subscriber connection had at a check, since start.",
        ws,
        |x| x.relay.shed.backlog_max,
    );
    w.per_worker(
        "fastrelay_send_backlog_bytes",
        Kind::Gauge,
        "Bytes waiting in the relay for quinn-proto to take them, all connections.",
        ws,
        |x| x.relay.state.send_pending_bytes as u64,
    );
    w.per_worker(
        "fastrelay_receive_buffered_bytes",
        Kind::Gauge,
        "Bytes of incomplete messages and objects the sessions buffer.",
        ws,
        |x| x.relay.state.sessions.buffered_bytes as u64,
    );
    w.per_worker(
        "fastrelay_cache_bytes",
        Kind::Gauge,
        "Bytes of objects in the per-track caches.",
        ws,
        |x| x.relay.state.engine.cache_bytes as u64,
    );

    // Cross-worker.
    w.per_worker_by(
        "fastrelay_cross_worker_objects_total",
        "Objects passed between workers (one per object per destination worker).",
        ws,
        "direction",
        |x| {
            vec![
                ("out", x.cross_worker.objects_out),
                ("in", x.cross_worker.objects_in),
            ]
        },
    );
    w.per_worker_by(
        "fastrelay_cross_worker_dropped_total",
        "Objects and subgroup ends dropped on a full cross-worker queue, by class (publisher priority range, or datagram).",
        ws,
        "class",
        |x| {
            CLASS_NAMES
                .iter()
                .zip(x.cross_worker.dropped)
                .map(|(c, n)| (*c, n))
                .collect()
        },
    );
    w.per_worker_by(
        "fastrelay_cross_worker_control_total",
        "Cross-worker control messages that waited for room (deferred) or were lost.",
        ws,
        "outcome",
        |x| {
            vec![
                ("deferred", x.cross_worker.control_deferred),
                ("lost", x.cross_worker.control_lost),
            ]
        },
    );

    // AF_XDP and the XDP program.
    let xsk: Vec<&WorkerSnapshot> = ws.iter().filter(|x| x.xsk.is_some()).collect();
    if !xsk.is_empty() {
        let name = "fastrelay_xsk_tx_frames_in_flight";
        w.family(
            name,
            Kind::Gauge,
            "TX frames of the worker's AF_XDP socket in the kernel's hands (TX or completion ring), at the worker's last publication.",
        );
        for x in &xsk {
            let q = x.queue.to_string();
            w.sample(name, &[("worker", &q)], x.counts.tx_frames_in_flight as f64);
        }
        let name = "fastrelay_xsk_ring_events_total";
        w.family(
            name,
            Kind::Counter,
            "The kernel's statistics of the worker's AF_XDP socket (XDP_STATISTICS).",
        );
        for x in xsk {
            let s = x.xsk.unwrap_or_default();
            let q = x.queue.to_string();
            for (event, n) in [
                ("rx_dropped", s.rx_dropped),
                ("rx_invalid_descs", s.rx_invalid_descs),
                ("tx_invalid_descs", s.tx_invalid_descs),
                ("rx_ring_full", s.rx_ring_full),
                ("fill_ring_empty", s.rx_fill_ring_empty),
                ("tx_ring_empty", s.tx_ring_empty),
            ] {
                w.sample(name, &[("worker", &q), ("event", event)], n as f64);
            }
        }
    }
    if let Some(c) = snap.xdp {
        let name = "fastrelay_xdp_packets_total";
        w.family(
            name,
            Kind::Counter,
            "Packets the XDP program saw, by verdict: redirected to an AF_XDP socket, passed to the kernel, malformed, relay port without a socket on the queue.",
        );
        for (action, n) in [
            ("redirected", c.redirected),
            ("passed", c.passed),
            ("malformed", c.malformed),
            ("no_socket", c.no_socket),
        ] {
            w.sample(name, &[("action", action)], n as f64);
        }
    }

    if let Some(a) = snap.auth {
        let name = "fastrelay_auth_sessions_total";
        w.family(
            name,
            Kind::Counter,
            "Sessions whose SETUP authorization tokens were checked (--auth-key), by result: admitted, or refused (the session closed).",
        );
        for (result, n) in [
            ("admitted", a.sessions_admitted),
            ("refused", a.sessions_refused),
        ] {
            w.sample(name, &[("result", result)], n as f64);
        }
        let name = "fastrelay_auth_requests_total";
        w.family(
            name,
            Kind::Counter,
            "Publish and subscribe requests checked for authorization, by result: authorized, or refused (REQUEST_ERROR, or the session closed for a token alias).",
        );
        for (result, n) in [
            ("authorized", a.requests_authorized),
            ("refused", a.requests_refused),
        ] {
            w.sample(name, &[("result", result)], n as f64);
        }
    }

    // The relay hop.
    let name = "fastrelay_relay_hop_seconds";
    w.family(
        name,
        Kind::Histogram,
        "Time from the worker iteration that received an object's last byte to the end of its fan-out (see docs/metrics.md).",
    );
    for x in ws {
        let q = x.queue.to_string();
        let bucket = format!("{name}_bucket");
        for le in HOP_BUCKETS {
            let n = x.hop.count_at_most(Duration::from_secs_f64(le));
            w.sample(&bucket, &[("worker", &q), ("le", &number(le))], n as f64);
        }
        let count = x.hop.count() as f64;
        w.sample(&bucket, &[("worker", &q), ("le", "+Inf")], count);
        w.sample(
            &format!("{name}_sum"),
            &[("worker", &q)],
            x.hop.sum().as_secs_f64(),
        );
        w.sample(&format!("{name}_count"), &[("worker", &q)], count);
    }
    w.out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use relay::telemetry::HopHistogram;

    use super::*;
    use crate::{snapshot::XskStats, xdp::XdpCounters};

    fn worker(queue: u32, hops: &[(u64, u64)]) -> WorkerSnapshot {
        let mut hop = HopHistogram::new();
        for &(us, n) in hops {
            hop.record(Duration::from_micros(us), n);
        }
        let mut relay = relay::app::RelayReport::default();
        relay.traffic.objects_received = 10 + u64::from(queue);
        relay.traffic.bytes_received = 1000;
        WorkerSnapshot {
            queue,
            core: queue as usize,
            running: true,
            counts: dataplane::worker::WorkerCounts {
                rx_packets: 5,
                connections_closed: [1; CloseReason::COUNT],
                ..dataplane::worker::WorkerCounts::default()
            },
            cross_worker: relay::crossworker::CrossWorkerCounters::default(),
            relay,
            hop,
            xsk: Some(XskStats::default()),
        }
    }

    /// A parsed exposition: declared families and their types, samples by
    /// name with their labels, in order.
    struct Parsed {
        types: HashMap<String, String>,
        samples: Vec<Sample>,
    }

    /// Name, labels, value.
    type Sample = (String, Vec<(String, String)>, f64);

    /// A strict parser of the subset the relay writes; panics on anything
    /// else, so a malformed line fails the test.
    fn parse(text: &str) -> Parsed {
        let mut types = HashMap::new();
        let mut helps = HashMap::new();
        let mut samples = Vec::new();
        let valid_name = |n: &str| {
            !n.is_empty()
                && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !n.starts_with(|c: char| c.is_ascii_digit())
        };
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has text");
                assert!(valid_name(name) && !help.is_empty(), "{line}");
                assert!(
                    helps.insert(name.to_string(), ()).is_none(),
                    "HELP twice: {line}"
                );
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
                assert!(helps.contains_key(name), "TYPE before HELP: {line}");
                let fresh = types.insert(name.to_string(), kind.to_string()).is_none();
                assert!(fresh, "TYPE twice: {line}");
                continue;
            }
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value: {line}")),
            };
            let (name, labels) = match series.split_once('{') {
                None => (series, vec![]),
                Some((name, rest)) => {
                    let inner = rest.strip_suffix('}').expect("labels close");
                    let labels = inner
                        .split(',')
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').expect("label has a value");
                            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"'));
                            assert!(valid_name(k), "{line}");
                            (k.to_string(), v.expect("quoted label").to_string())
                        })
                        .collect();
                    (name, labels)
                }
            };
            assert!(valid_name(name), "{line}");
            samples.push((name.to_string(), labels, value));
        }
        Parsed { types, samples }
    }

    /// The family a sample belongs to, by the format's suffix rules.
    fn family_of<'a>(types: &'a HashMap<String, String>, name: &str) -> Option<&'a str> {
        if let Some(t) = types.get(name) {
            return (t != "histogram").then_some(t.as_str());
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if types.get(base).map(String::as_str) == Some("histogram") {
                    return Some("histogram");
                }
            }
        }
        None
    }

    #[test]
    fn exposition_is_well_formed_and_histograms_are_consistent() {
        let snap = Snapshot {
            uptime_s: 12.5,
            rss_bytes: Some(4096),
            draining: false,
            xdp: Some(XdpCounters {
                redirected: 7,
                ..XdpCounters::default()
            }),
            workers: vec![
                worker(
                    0,
                    &[(5, 3), (30, 2), (400, 1), (2_000_000, 1), (9_000_000, 2)],
                ),
                worker(1, &[]),
            ],
            auth: Some(relay::auth::AuthCounts {
                sessions_admitted: 3,
                sessions_refused: 1,
                requests_authorized: 9,
                requests_refused: 2,
            }),
        };
        let text = render(&snap);
        let p = parse(&text);
        for (name, labels, _) in &p.samples {
            let kind = family_of(&p.types, name)
                .unwrap_or_else(|| panic!("sample {name} of no declared family"));
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name} lacks _total");
            }
            let mut keys: Vec<_> = labels.iter().map(|(k, _)| k).collect();
            keys.dedup();
            assert_eq!(keys.len(), labels.len(), "repeated label in {name}");
        }
        for (name, kind) in &p.types {
            let present = p
                .samples
                .iter()
                .any(|(n, ..)| n == name || (kind == "histogram" && n.starts_with(name.as_str())));
            assert!(present, "family {name} has no sample");
        }

        // Every worker's hop histogram: buckets in increasing `le`, counts
        // monotone, the +Inf bucket equal to _count, the sum matching.
        let expected = [
            (0, 9u64, 3 * 5 + 2 * 30 + 400 + 2_000_000 + 2 * 9_000_000),
            (1, 0, 0),
        ];
        for (worker, count, sum_us) in expected {
            let q = worker.to_string();
            let q = &q;
            let of_worker = |suffix: &str| {
                p.samples
                    .iter()
                    .filter(move |(n, l, _)| {
                        n == &format!("fastrelay_relay_hop_seconds{suffix}")
                            && l.iter().any(|(k, v)| k == "worker" && v == q)
                    })
                    .collect::<Vec<_>>()
            };
            let buckets = of_worker("_bucket");
            assert_eq!(buckets.len(), HOP_BUCKETS.len() + 1);
            let mut last = (f64::NEG_INFINITY, 0.0);
            for (_, labels, n) in &buckets {
                let le = &labels.iter().find(|(k, _)| k == "le").expect("le").1;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                assert!(le > last.0 && *n >= last.1, "not monotone at le={le}");
                last = (le, *n);
            }
            assert_eq!(last.0, f64::INFINITY, "last bucket is +Inf");
            let total = of_worker("_count")[0].2;
            assert_eq!((last.1, total), (count as f64, count as f64));
            let sum = of_worker("_sum")[0].2;
            assert!((sum - sum_us as f64 / 1e6).abs() < 1e-9, "sum {sum}");
        }
        // The bucket bounds split worker 0's samples where they should.
        let bucket = |le: &str| {
            p.samples
                .iter()
                .find(|(n, l, _)| {
                    n == "fastrelay_relay_hop_seconds_bucket"
                        && l.contains(&("worker".into(), "0".into()))
                        && l.contains(&("le".into(), le.into()))
                })
                .unwrap_or_else(|| panic!("no bucket le={le}"))
                .2
        };
        assert_eq!(bucket("0.00001"), 3.0);
        assert_eq!(bucket("0.0005"), 6.0);
        assert_eq!(bucket("2.5"), 7.0);

        // Labels and values where expected.
        let value = |name: &str, labels: &[(&str, &str)]| {
            p.samples
                .iter()
                .find(|(n, l, _)| {
                    n == name
                        && labels
                            .iter()
                            .all(|(k, v)| l.contains(&(k.to_string(), v.to_string())))
                })
                .unwrap_or_else(|| panic!("no {name} {labels:?}"))
                .2
        };
        assert_eq!(
            value("fastrelay_objects_received_total", &[("worker", "1")]),
            11.0
        );
        assert_eq!(
            value("fastrelay_xdp_packets_total", &[("action", "redirected")]),
            7.0
        );
        assert_eq!(
            value(
                "fastrelay_connections_closed_total",
                &[("worker", "0"), ("reason", "idle_timeout")]
            ),
            1.0
        );
        assert_eq!(value("process_resident_memory_bytes", &[]), 4096.0);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut w = Writer { out: String::new() };
        w.sample("x", &[("a", "q\"b\\c\nd")], 1.0);
        assert_eq!(w.out, "x{a=\"q\\\"b\\\\c\\nd\"} 1\n");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(0.000_025), "0.000025");
    }
}
