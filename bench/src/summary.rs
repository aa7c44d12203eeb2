//! `--runs N`: the median and the spread (min–max) of each key figure per
//! row label and subscriber count, and the xdp/socket ratio as the median
//! of the ratios of the pairs run back to back.

use serde_json::{json, Value};

/// The key figures: name in the summary, path in a run's JSON.
pub const FIGURES: [(&str, &[&str]); 9] = [
    ("delivered_packets_per_s", &["delivered_packets_per_s"]),
    (
        "delivered_packets_per_relay_cpu_s",
        &["delivered_packets_per_relay_cpu_s"],
    ),
    (
        "delivered_packets_per_core_busy_s",
        &["delivered_packets_per_core_busy_s"],
    ),
    ("ns_per_delivered_packet", &["ns_per_delivered_packet"]),
    ("ns_per_delivered_object", &["ns_per_delivered_object"]),
    (
        "ns_per_delivered_packet_core_busy",
        &["ns_per_delivered_packet_core_busy"],
    ),
    ("latency_p50_us", &["latency", "p50_us"]),
    ("latency_p99_us", &["latency", "p99_us"]),
    ("missing_objects", &["subscriber_side", "missing_objects"]),
];

/// A JSON number as f64, NaN when absent or not a number (for tables).
pub fn number(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

/// A figure of a run (`None` if absent or not a finite number).
pub fn figure(run: &Value, path: &[&str]) -> Option<f64> {
    path.iter()
        .try_fold(run, |v, k| v.get(*k))
        .and_then(Value::as_f64)
        .filter(|x| x.is_finite())
}

/// Median, min and max of the finite values (`None` if there are none).
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((median, v[0], v[n - 1]))
}

fn spread_json(values: &[f64]) -> Value {
    match spread(values) {
        Some((median, min, max)) => {
            json!({ "median": median, "min": min, "max": max, "n": values.len() })
        }
        None => Value::Null,
    }
}

fn ok(r: &Value) -> bool {
    r.get("error").is_none()
}

/// Per (label, subscribers): the spread of every key figure over the runs.
pub fn groups(runs: &[Value]) -> Vec<Value> {
    let mut keys: Vec<(Value, Value)> = Vec::new();
    for r in runs.iter().filter(|r| ok(r)) {
        let k = (r["label"].clone(), r["subscribers"].clone());
        if !keys.contains(&k) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .map(|(label, subs)| {
            let rs: Vec<&Value> = runs
                .iter()
                .filter(|r| ok(r) && r["label"] == label && r["subscribers"] == subs)
                .collect();
            let mut figures = serde_json::Map::new();
            for (name, path) in FIGURES {
                let v: Vec<f64> = rs.iter().filter_map(|r| figure(r, path)).collect();
                figures.insert(name.into(), spread_json(&v));
            }
            json!({
                "label": label,
                "subscribers": subs,
                "runs": rs.len(),
                "figures": figures,
            })
        })
        .collect()
}

/// The pairs of an xdp and a socket run with the same run number and
/// subscriber count.
pub fn pairs(runs: &[Value]) -> Vec<(&Value, &Value)> {
    let mut out = Vec::new();
    for x in runs.iter().filter(|r| ok(r) && r["backend"] == "xdp") {
        if let Some(s) = runs.iter().find(|r| {
            ok(r)
                && r["backend"] == "socket"
                && r["run"] == x["run"]
                && r["subscribers"] == x["subscribers"]
        }) {
            out.push((x, s));
        }
    }
    out
}

/// xdp/socket per subscriber count: the median and min–max of the
/// per-pair ratios of every key figure.
pub fn ratios(runs: &[Value]) -> Vec<Value> {
    let pairs = pairs(runs);
    let mut counts: Vec<Value> = Vec::new();
    for (x, _) in &pairs {
        if !counts.contains(&x["subscribers"]) {
            counts.push(x["subscribers"].clone());
        }
    }
    counts
        .into_iter()
        .map(|subs| {
            let ps: Vec<&(&Value, &Value)> = pairs
                .iter()
                .filter(|(x, _)| x["subscribers"] == subs)
                .collect();
            let mut figures = serde_json::Map::new();
            for (name, path) in FIGURES {
                let v: Vec<f64> = ps
                    .iter()
                    .filter_map(|(x, s)| Some(figure(x, path)? / figure(s, path)?))
                    .filter(|q| q.is_finite())
                    .collect();
                figures.insert(name.into(), spread_json(&v));
            }
            json!({ "subscribers": subs, "pairs": ps.len(), "figures": figures })
        })
        .collect()
}

/// `median [min–max]` with `digits` decimals, `-` when absent.
pub fn cell(v: &Value, digits: usize) -> String {
    match (v["median"].as_f64(), v["min"].as_f64(), v["max"].as_f64()) {
        (Some(m), Some(lo), Some(hi)) if v["n"].as_u64().unwrap_or(0) > 1 => {
            format!("{m:.digits$} [{lo:.digits$}–{hi:.digits$}]")
        }
        (Some(m), _, _) => format!("{m:.digits$}"),
        _ => "-".into(),
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// Prints the summary tables: per row label the median [min–max] of the
/// key figures, then the xdp/socket ratios.
pub fn print(groups: &[Value], ratios: &[Value]) {
    let cols: [(&str, &str); 9] = [
        ("delivered_packets_per_s", "deliv pkts/s"),
        ("delivered_packets_per_relay_cpu_s", "pkts/CPU-s"),
        ("delivered_packets_per_core_busy_s", "pkts/core-s"),
        ("ns_per_delivered_packet", "ns/pkt CPU"),
        ("ns_per_delivered_object", "ns/obj CPU"),
        ("ns_per_delivered_packet_core_busy", "ns/pkt core"),
        ("latency_p50_us", "p50 us"),
        ("latency_p99_us", "p99 us"),
        ("missing_objects", "missing objs"),
    ];
    let mut rows: Vec<Vec<String>> = vec![["run", "subs", "n"]
        .iter()
        .map(|s| s.to_string())
        .chain(cols.iter().map(|(_, h)| h.to_string()))
        .collect()];
    for g in groups {
        let mut row = vec![text(&g["label"]), text(&g["subscribers"]), text(&g["runs"])];
        row.extend(cols.iter().map(|(k, _)| cell(&g["figures"][*k], 0)));
        rows.push(row);
    }
    for r in ratios {
        let mut row = vec![
            "xdp/socket".to_string(),
            text(&r["subscribers"]),
            text(&r["pairs"]),
        ];
        row.extend(cols.iter().map(|(k, _)| cell(&r["figures"][*k], 2)));
        rows.push(row);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    println!();
    println!("summary: median [min–max] over the runs (n = runs; for xdp/socket, pairs run back to back)");
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, w))| {
                let pad = w - cell.chars().count();
                if c == 0 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        println!("{}", line.join("  "));
    }
}

/// Relay CPU per delivered object of every row label against the XDP
/// backend's, per subscriber count (medians over the runs): how many times
/// more CPU another relay (or the socket backend) spends on an object.
pub fn per_object_vs_xdp(groups: &[Value]) -> Vec<Value> {
    let median = |g: &Value| g["figures"]["ns_per_delivered_object"]["median"].as_f64();
    let mut out = Vec::new();
    for x in groups.iter().filter(|g| g["label"] == "xdp") {
        let Some(xdp_ns) = median(x) else { continue };
        for g in groups
            .iter()
            .filter(|g| g["label"] != "xdp" && g["subscribers"] == x["subscribers"])
        {
            let Some(ns) = median(g) else { continue };
            let label = g["label"].as_str().unwrap_or("?");
            out.push(json!({
                "label": label,
                "subscribers": x["subscribers"],
                "ns_per_delivered_object": ns,
                "xdp_ns_per_delivered_object": xdp_ns,
                "times_xdp": ns / xdp_ns,
                "text": format!(
                    "relay CPU per delivered object, {} subscribers: {label} {:.0} ns, xdp {:.0} ns: {label} spends {:.2}x the XDP backend's",
                    x["subscribers"], ns, xdp_ns, ns / xdp_ns
                ),
            }));
        }
    }
    out
}

/// For a sweep: per row label, each subscriber count's median relay ns per
/// delivered packet relative to the count `reference` (the bound
/// is stated against 100 subscribers). Labels without that count are left
/// out.
pub fn sweep_growth(groups: &[Value], reference: u64) -> Vec<Value> {
    let median = |g: &Value| g["figures"]["ns_per_delivered_packet"]["median"].as_f64();
    let mut labels: Vec<&Value> = Vec::new();
    for g in groups {
        if !labels.contains(&&g["label"]) {
            labels.push(&g["label"]);
        }
    }
    let mut out = Vec::new();
    for label in labels {
        let mine: Vec<&Value> = groups.iter().filter(|g| &g["label"] == label).collect();
        let Some(base) = mine
            .iter()
            .find(|g| g["subscribers"].as_u64() == Some(reference))
            .and_then(|g| median(g))
        else {
            continue;
        };
        let mut points: Vec<(u64, f64, f64)> = mine
            .iter()
            .filter_map(|g| Some((g["subscribers"].as_u64()?, median(g)?)))
            .map(|(s, ns)| (s, ns, ns / base))
            .collect();
        points.sort_by_key(|p| p.0);
        let name = label.as_str().unwrap_or("?");
        let text = points
            .iter()
            .map(|(s, ns, r)| format!("{s}: {ns:.0} ns ({r:.2})"))
            .collect::<Vec<_>>()
            .join(", ");
        out.push(json!({
            "label": label,
            "reference_subscribers": reference,
            "points": points.iter().map(|(s, ns, r)| json!({
                "subscribers": s, "ns_per_delivered_packet": ns, "relative": r,
            })).collect::<Vec<_>>(),
            "worst_relative": points.iter().map(|p| p.2).fold(f64::NAN, f64::max),
            "text": format!("{name}: median relay ns per delivered packet (relative to {reference} subscribers): {text}"),
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(backend: &str, run: u64, pps: f64, ns: f64) -> Value {
        json!({
            "label": backend, "backend": backend, "run": run, "subscribers": 10,
            "delivered_packets_per_s": pps, "ns_per_delivered_packet": ns,
            "latency": { "p50_us": 100, "p99_us": 200 },
            "subscriber_side": { "missing_objects": 0 },
            "delivered_packets_per_core_busy_s": null,
        })
    }

    #[test]
    fn sweep_growth_is_relative_to_the_reference_count() {
        let g = |label: &str, subs: u64, ns: f64| {
            json!({ "label": label, "subscribers": subs,
                "figures": { "ns_per_delivered_packet": { "median": ns } } })
        };
        let groups = [
            g("xdp", 10, 4000.0),
            g("xdp", 100, 3200.0),
            g("xdp", 1000, 3600.0),
            g("other", 10, 9.0),
        ];
        let out = sweep_growth(&groups, 100);
        assert_eq!(
            out.len(),
            1,
            "a label without the reference count is left out"
        );
        assert_eq!(out[0]["points"][0]["relative"], 1.25);
        assert_eq!(out[0]["points"][2]["relative"], 1.125);
        assert_eq!(out[0]["worst_relative"], 1.25);
    }

    #[test]
    fn medians_and_spreads() {
        assert_eq!(spread(&[3.0, 1.0, 2.0]), Some((2.0, 1.0, 3.0)));
        assert_eq!(spread(&[4.0, 1.0, 2.0, 3.0]), Some((2.5, 1.0, 4.0)));
        assert_eq!(spread(&[f64::NAN]), None);
        assert_eq!(spread(&[]), None);
    }

    #[test]
    fn groups_and_pair_ratios() {
        let runs = vec![
            run("xdp", 1, 100.0, 10.0),
            run("socket", 1, 100.0, 20.0),
            run("xdp", 2, 120.0, 12.0),
            run("socket", 2, 100.0, 15.0),
            json!({ "label": "xdp", "backend": "xdp", "run": 3, "subscribers": 10, "error": "x" }),
        ];
        let g = groups(&runs);
        assert_eq!(g.len(), 2);
        assert_eq!(g[0]["label"], "xdp");
        assert_eq!(g[0]["runs"], 2);
        assert_eq!(g[0]["figures"]["ns_per_delivered_packet"]["median"], 11.0);
        assert_eq!(
            g[0]["figures"]["delivered_packets_per_core_busy_s"],
            Value::Null
        );
        let r = ratios(&runs);
        assert_eq!(r.len(), 1);
        assert_eq!(r[0]["pairs"], 2);
        let ns = &r[0]["figures"]["ns_per_delivered_packet"];
        assert_eq!(ns["min"], 0.5);
        assert_eq!(ns["max"], 0.8);
        assert!((ns["median"].as_f64().unwrap() - 0.65).abs() < 1e-12);
        assert_eq!(cell(ns, 2), "0.65 [0.50–0.80]");
    }

    #[test]
    fn per_object_against_xdp() {
        let g = |label: &str, ns: f64| {
            json!({ "label": label, "subscribers": 100,
                    "figures": { "ns_per_delivered_object": { "median": ns } } })
        };
        let out = per_object_vs_xdp(&[
            g("xdp", 4000.0),
            g("socket", 8000.0),
            g("moq-relay", 40000.0),
        ]);
        let times: Vec<(String, f64)> = out
            .iter()
            .map(|v| {
                (
                    v["label"].as_str().unwrap().to_string(),
                    v["times_xdp"].as_f64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            times,
            [("socket".to_string(), 2.0), ("moq-relay".to_string(), 10.0)]
        );
    }
}
