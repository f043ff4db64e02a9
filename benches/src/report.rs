//! The markdown table and the SVG plot of a run.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde_json::Value;

use crate::stats::summarize;

type Latency = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

/// Operations in the order a reader expects them.
pub const OPS: [&str; 6] = [
    "run /bin/true",
    "create",
    "start",
    "delete",
    "delete --force",
    "exec /bin/true",
];

fn ratio(a: f64, b: Option<f64>) -> String {
    match b {
        Some(b) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    }
}

#[allow(clippy::too_many_arguments)]
pub fn markdown(
    runtimes: &[String],
    latency: &Latency,
    pss: &BTreeMap<String, u64>,
    cli_rss: &BTreeMap<String, u64>,
    scale: &BTreeMap<String, Value>,
    syscalls: &BTreeMap<String, BTreeMap<String, f64>>,
    notes: &[String],
    skipped: &BTreeMap<String, String>,
    host: &BTreeMap<String, String>,
    stamp: &str,
) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Measured {stamp} on {} ({} CPUs, kernel {}, load {}); {}.",
        host.get("cpu").map(String::as_str).unwrap_or("?"),
        host.get("cpus").map(String::as_str).unwrap_or("?"),
        host.get("kernel").map(String::as_str).unwrap_or("?"),
        host.get("loadavg").map(String::as_str).unwrap_or("?"),
        notes.join(", ")
    );
    for (rt, why) in skipped {
        let _ = writeln!(s, "Not measured: {rt} ({why}).");
    }
    let _ = writeln!(s, "\n| operation | runtime | median ms | p90 ms | min–max ms | vs strata-native | vs crun | vs runc |");
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|");
    for op in OPS {
        let Some(by_rt) = latency.get(op) else {
            continue;
        };
        let med = |rt: &str| by_rt.get(rt).and_then(|v| summarize(v)).map(|x| x.median);
        for rt in runtimes {
            let Some(sm) = by_rt.get(rt).and_then(|v| summarize(v)) else {
                continue;
            };
            let _ = writeln!(
                s,
                "| {op} | {rt} | {:.2} | {:.2} | {:.2}–{:.2} | {} | {} | {} |",
                sm.median,
                sm.p90,
                sm.min,
                sm.max,
                ratio(sm.median, med("strata-native")),
                ratio(sm.median, med("crun")),
                ratio(sm.median, med("runc"))
            );
        }
    }
    let _ = writeln!(
        s,
        "\n| runtime | idle container PSS (KiB) | runtime CLI peak RSS (KiB) |"
    );
    let _ = writeln!(s, "|---|---|---|");
    for rt in runtimes {
        let _ = writeln!(
            s,
            "| {rt} | {} | {} |",
            pss.get(rt).copied().unwrap_or(0),
            cli_rss.get(rt).copied().unwrap_or(0)
        );
    }
    let _ = writeln!(
        s,
        "\n| runtime | containers | up, 1 at a time (ms) | down | up, 2 at a time | down | leaks |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for rt in runtimes {
        let Some(v) = scale.get(rt) else { continue };
        let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
        let leaks = v["leaks"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "| {rt} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} |",
            v["containers"],
            f("sequential_up_ms"),
            f("sequential_down_ms"),
            f("two_at_a_time_up_ms"),
            f("two_at_a_time_down_ms"),
            if leaks.is_empty() {
                "none".to_string()
            } else {
                leaks
            }
        );
    }
    let mut cols: Vec<String> = vec!["host".into()];
    cols.extend(runtimes.iter().cloned());
    let _ = writeln!(s, "\n| syscall (ns/op) | {} |", cols.join(" | "));
    let _ = writeln!(s, "|---|{}", "---|".repeat(cols.len()));
    let ops: Vec<String> = syscalls
        .get("host")
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for op in ops {
        let base = syscalls
            .get("strata-native")
            .and_then(|m| m.get(&op))
            .copied();
        let cells: Vec<String> = cols
            .iter()
            .map(|c| match syscalls.get(c).and_then(|m| m.get(&op)) {
                Some(v) if c != "host" && c != "strata-native" => {
                    format!("{v:.0} ({})", ratio(*v, base))
                }
                Some(v) => format!("{v:.0}"),
                None => "–".into(),
            })
            .collect();
        let _ = writeln!(s, "| {op} | {} |", cells.join(" | "));
    }
    s
}

/// Grouped horizontal bars on a log scale (runtimes differ by 1000×): one group per
/// operation, one bar per runtime (median), with the p90 as a whisker. Hand-written SVG: a
/// few dozen rectangles need no plotting library.
pub fn svg(runtimes: &[String], latency: &Latency) -> String {
    let colors = [
        "#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#4a5568",
    ];
    let bar_h = 14.0;
    let label_w = 130.0;
    let plot_w = 520.0;
    let mut rows: Vec<(String, usize, f64, f64)> = Vec::new();
    for op in OPS {
        if let Some(by_rt) = latency.get(op) {
            for (i, rt) in runtimes.iter().enumerate() {
                if let Some(sm) = by_rt.get(rt).and_then(|v| summarize(v)) {
                    rows.push((op.to_string(), i, sm.median, sm.p90));
                }
            }
        }
    }
    // Decades from 0.1 ms up to the largest p90.
    let max = rows.iter().map(|r| r.3).fold(1.0_f64, f64::max);
    let decades = (max.log10().ceil() + 1.0).max(1.0);
    let scale = |v: f64| ((v.max(0.1).log10() + 1.0) / decades * plot_w).max(1.0);
    let groups = OPS.iter().filter(|op| latency.contains_key(**op)).count();
    let height = 40.0
        + groups as f64 * (runtimes.len() as f64 * bar_h + 16.0)
        + 20.0 * runtimes.len() as f64;
    let width = label_w + plot_w + 90.0;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="10" y="18" font-size="13">Container lifecycle latency, median (bar) and p90 (whisker), ms, log scale</text>"#
    );
    for d in 0..=(decades as i32) {
        let v = 10f64.powi(d - 1);
        let x = label_w + scale(v);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="26" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" fill="#888" font-size="9">{v}</text>"##,
            height - 20.0 * runtimes.len() as f64 - 10.0,
            32
        );
    }
    let mut y = 34.0;
    let mut last_op = String::new();
    for (op, i, med, p90) in &rows {
        if *op != last_op {
            y += 6.0;
            let _ = writeln!(s, r#"<text x="10" y="{}">{op}</text>"#, y + bar_h - 3.0);
            last_op = op.clone();
        }
        let c = colors[i % colors.len()];
        let _ = writeln!(
            s,
            r#"<rect x="{label_w}" y="{y}" width="{:.1}" height="{}" fill="{c}"/>"#,
            scale(*med).max(1.0),
            bar_h - 2.0
        );
        let _ = writeln!(
            s,
            r#"<line x1="{:.1}" x2="{:.1}" y1="{}" y2="{}" stroke="black"/>"#,
            label_w + scale(*med),
            label_w + scale(*p90),
            y + bar_h / 2.0 - 1.0,
            y + bar_h / 2.0 - 1.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{}">{med:.1}</text>"#,
            label_w + scale(*p90) + 4.0,
            y + bar_h - 3.0
        );
        y += bar_h;
    }
    y += 14.0;
    for (i, rt) in runtimes.iter().enumerate() {
        let _ = writeln!(
            s,
            r#"<rect x="{label_w}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{rt}</text>"#,
            y,
            colors[i % colors.len()],
            label_w + 18.0,
            y + 10.0
        );
        y += 18.0;
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Vec<String>, Latency) {
        let rts = vec!["strata-native".to_string(), "crun".to_string()];
        let mut l = Latency::new();
        for op in OPS {
            let mut m = BTreeMap::new();
            m.insert("strata-native".into(), vec![4.0, 5.0, 6.0]);
            m.insert("crun".into(), vec![8.0, 10.0, 12.0]);
            l.insert(op.into(), m);
        }
        (rts, l)
    }

    #[test]
    fn table_has_ratios() {
        let (rts, l) = sample();
        let md = markdown(
            &rts,
            &l,
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &BTreeMap::new(),
            &["n".into()],
            &BTreeMap::new(),
            &BTreeMap::new(),
            "now",
        );
        assert!(
            md.contains(
                "| run /bin/true | crun | 10.00 | 12.00 | 8.00–12.00 | 2.00× | 1.00× | – |"
            ),
            "{md}"
        );
    }

    #[test]
    fn svg_is_well_formed() {
        let (rts, l) = sample();
        let svg = svg(&rts, &l);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<rect x=\"130\"").count(), OPS.len() * 2 + 2);
    }
}
