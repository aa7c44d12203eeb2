//! The bench's report of `--profile`: every run's perf profile pooled per
//! row label, and the cost-split table printed from it.

use serde_json::Value;

use crate::{
    profile::{Profile, BUCKETS},
    summary::{self, number as f},
};

/// The profiles of every run of each label, pooled.
pub fn pooled(runs: &[Value]) -> Vec<Value> {
    let mut labels: Vec<Value> = Vec::new();
    for r in runs {
        if r["profile"]["samples"].is_u64() && !labels.contains(&r["label"]) {
            labels.push(r["label"].clone());
        }
    }
    labels
        .into_iter()
        .map(|label| {
            let rs: Vec<&Value> = runs
                .iter()
                .filter(|r| r["label"] == label && r["profile"]["samples"].is_u64())
                .collect();
            let mut pooled = Profile::default();
            for r in &rs {
                pooled.add(&Profile::from_json(&r["profile"]));
            }
            let ns: Vec<f64> = rs
                .iter()
                .filter_map(|r| summary::figure(r, &["ns_per_delivered_packet"]))
                .collect();
            let ns = summary::spread(&ns).map(|s| s.0).unwrap_or(f64::NAN);
            let mut v = pooled.json(ns);
            v["label"] = label;
            v["runs"] = rs.len().into();
            v["ns_per_delivered_packet_median"] = ns.into();
            v
        })
        .collect()
}

/// Prints the pooled profiles' cost split and top frames per label.
pub fn print(p: &[Value]) {
    if p.is_empty() {
        return;
    }
    println!();
    println!("cost split (perf samples of the relay; % of samples, and that share of relay CPU ns per delivered packet):");
    let mut header = format!("{:<22}", "bucket");
    for l in p {
        header.push_str(&format!(" {:>19}", l["label"].as_str().unwrap_or("?")));
    }
    println!("{header}");
    for (i, name) in BUCKETS.iter().enumerate() {
        let mut line = format!("{name:<22}");
        for l in p {
            let b = &l["buckets"][i];
            line.push_str(&format!(
                " {:>7.1} % {:>6.0} ns",
                f(&b["share"]) * 100.0,
                f(&b["ns_per_delivered_packet"])
            ));
        }
        println!("{line}");
    }
    let mut line = format!("{:<22}", "samples (shallow)");
    for l in p {
        line.push_str(&format!(
            " {:>19}",
            format!("{} ({})", l["samples"], l["shallow_stacks"])
        ));
    }
    println!("{line}");
    for l in p {
        let top = |key: &str, n: usize| -> String {
            let top: Vec<String> = l[key]
                .as_array()
                .into_iter()
                .flatten()
                .take(n)
                .map(|o| {
                    let frame = o["frame"].as_str().unwrap_or("?");
                    // Type and function are enough here.
                    let parts: Vec<&str> = frame.rsplitn(3, "::").collect();
                    let short = match parts.as_slice() {
                        [f, t, _] | [f, t] => {
                            // "<X as Trait>" loses its unmatched ">".
                            let t = if t.matches('>').count() > t.matches('<').count() {
                                t.strip_suffix('>').unwrap_or(t)
                            } else {
                                t
                            };
                            format!("{t}::{f}")
                        }
                        _ => frame.to_string(),
                    };
                    format!("{short} {:.1} %", f(&o["share"]) * 100.0)
                })
                .collect();
            top.join(", ")
        };
        let label = l["label"].as_str().unwrap_or("?");
        println!("  {label}: by frame: {}", top("by_marker", 6));
        println!(
            "  {label}: loop/other by innermost dataplane frame: {}",
            top("loop_other_by_frame", 4)
        );
    }
}
