//! What a simulation reports: nccl-tests-style rows (time, algbw, busbw per
//! algorithm, the planner's choice, the simulated best), their JSON, and SVG charts.

use super::Outcome;
use crate::config::{Algorithm, Collective};
use std::fmt::Write;

/// nccl-tests' bus bandwidth factor for `coll` on `n` ranks.
pub fn bus_factor(coll: Collective, n: usize) -> f64 {
    let nf = n as f64;
    match coll {
        Collective::AllReduce => 2.0 * (nf - 1.0) / nf,
        Collective::AllGather | Collective::ReduceScatter | Collective::AllToAll => (nf - 1.0) / nf,
        _ => 1.0,
    }
}

/// One size: every algorithm's simulated time, the planner's pick and the best.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// The collective.
    pub collective: String,
    /// Ranks.
    pub nranks: usize,
    /// Bytes (nccl-tests' size).
    pub size: usize,
    /// Per algorithm: its name and outcome, or why it could not be simulated.
    pub results: Vec<(String, Result<Outcome, String>)>,
    /// The planner's choice.
    pub planner: String,
    /// The algorithm the simulation found fastest.
    pub best: Option<String>,
    /// Simulated time of the planner's choice over the best's (1 = the planner is right).
    pub planner_over_best: Option<f64>,
    /// CPU seconds each simulated algorithm took (not in the JSON: it varies).
    #[serde(skip)]
    pub cpu: Vec<(String, f64)>,
}

impl Row {
    pub(crate) fn new(
        coll: Collective,
        nranks: usize,
        size: usize,
        results: Vec<(Algorithm, Result<Outcome, String>)>,
        planner: Algorithm,
    ) -> Row {
        let time = |a: Algorithm| {
            results
                .iter()
                .find(|(x, _)| *x == a)
                .and_then(|(_, r)| r.as_ref().ok())
                .map(|o| o.seconds)
        };
        let best = results
            .iter()
            .filter_map(|(a, r)| r.as_ref().ok().map(|o| (*a, o.seconds)))
            .fold(None, |acc: Option<(Algorithm, f64)>, x| match acc {
                Some(b) if b.1 <= x.1 => Some(b),
                _ => Some(x),
            });
        let ratio = match (best, time(planner)) {
            (Some((_, b)), Some(p)) if b > 0.0 => Some(p / b),
            _ => None,
        };
        Row {
            collective: coll.name().into(),
            nranks,
            size,
            results: results
                .into_iter()
                .map(|(a, r)| (a.name().to_string(), r))
                .collect(),
            planner: planner.name().into(),
            best: best.map(|b| b.0.name().to_string()),
            planner_over_best: ratio,
            cpu: Vec::new(),
        }
    }

    /// Seconds of `algo`, if simulated.
    pub fn seconds(&self, algo: Algorithm) -> Option<f64> {
        self.results
            .iter()
            .find(|(a, _)| a == algo.name())
            .and_then(|(_, r)| r.as_ref().ok())
            .map(|o| o.seconds)
    }

    /// Bus bandwidth of `algo` in GB/s, if simulated.
    pub fn busbw(&self, algo: Algorithm) -> Option<f64> {
        let coll = Collective::parse(&self.collective)?;
        self.seconds(algo)
            .map(|s| self.size as f64 / s / 1e9 * bus_factor(coll, self.nranks))
    }

    /// The table's header lines for these algorithms.
    pub fn header(algos: &[Algorithm]) -> String {
        let mut a = format!("#{:>11}  {:>12}", "size", "count");
        let mut b = format!("#{:>11}  {:>12}", "(B)", "(elements)");
        for x in algos {
            let _ = write!(a, "  {:>28}", format!("--- {} ---", x.name()));
            let _ = write!(b, "  {:>10}  {:>7}  {:>7}", "time(us)", "algbw", "busbw");
        }
        let _ = write!(a, "  {:>8}  {:>8}  {:>8}", "planner", "best", "plan/best");
        format!("{a}\n{b}")
    }

    /// One table line.
    pub fn format(&self) -> String {
        let coll = Collective::parse(&self.collective).unwrap_or(Collective::AllReduce);
        let mut s = format!("{:>12}  {:>12}", self.size, self.size / 4);
        for (_, r) in &self.results {
            match r {
                Ok(o) => {
                    let algbw = self.size as f64 / o.seconds / 1e9;
                    let _ = write!(
                        s,
                        "  {:>10.1}  {:>7.2}  {:>7.2}",
                        o.seconds * 1e6,
                        algbw,
                        algbw * bus_factor(coll, self.nranks)
                    );
                }
                Err(_) => {
                    let _ = write!(s, "  {:>10}  {:>7}  {:>7}", "N/A", "N/A", "N/A");
                }
            }
        }
        let _ = write!(
            s,
            "  {:>8}  {:>8}  {:>9}",
            self.planner,
            self.best.as_deref().unwrap_or("-"),
            self.planner_over_best
                .map_or("-".into(), |r| format!("{r:.2}"))
        );
        s
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub name: String,
    /// (x, y) points; x is drawn on a log2 scale.
    pub points: Vec<(f64, f64)>,
}

/// An SVG line chart: x on a log2 scale (rank counts), y linear from 0.
pub fn chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, l, r, t, b) = (640.0, 400.0, 70.0, 150.0, 40.0, 50.0);
    let pts = series.iter().flat_map(|s| s.points.iter());
    let xmin = pts
        .clone()
        .map(|p| p.0)
        .fold(f64::INFINITY, f64::min)
        .max(1.0);
    let xmax = pts.clone().map(|p| p.0).fold(0.0, f64::max).max(xmin * 2.0);
    let ymax = nice(pts.map(|p| p.1).fold(0.0, f64::max));
    let (lx0, lx1) = (xmin.log2(), xmax.log2());
    let px = |x: f64| l + (x.log2() - lx0) / (lx1 - lx0) * (w - l - r);
    let py = |y: f64| h - b - y / ymax * (h - t - b);
    let colors = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e"];
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>\n",
        (w - r + l) / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>\n\
         <line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>",
        h - b,
        w - r,
        h - b,
        h - b
    );
    let mut x = 2f64.powi(xmin.log2().ceil() as i32);
    while x <= xmax * 1.0001 {
        let _ = writeln!(
            s,
            "<line x1=\"{0:.1}\" y1=\"{1}\" x2=\"{0:.1}\" y2=\"{2}\" stroke=\"#ddd\"/>\
             <text x=\"{0:.1}\" y=\"{3}\" text-anchor=\"middle\">{4}</text>",
            px(x),
            t,
            h - b,
            h - b + 16.0,
            x
        );
        x *= 2.0;
    }
    for i in 0..=5 {
        let y = ymax * i as f64 / 5.0;
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{0:.1}\" x2=\"{1}\" y2=\"{0:.1}\" stroke=\"#ddd\"/>\
             <text x=\"{2}\" y=\"{3:.1}\" text-anchor=\"end\">{4}</text>",
            py(y),
            w - r,
            l - 6.0,
            py(y) + 4.0,
            fmt_tick(y)
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>",
        (w - r + l) / 2.0,
        h - 12.0,
        escape(x_label),
        (h - b + t) / 2.0,
        (h - b + t) / 2.0,
        escape(y_label)
    );
    for (i, se) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = se
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in &se.points {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>",
                px(x),
                py(y)
            );
        }
        let ly = t + 20.0 * i as f64 + 10.0;
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"{1}\" x2=\"{2}\" y2=\"{1}\" stroke=\"{c}\" stroke-width=\"2\"/>\
             <text x=\"{3}\" y=\"{4}\">{5}</text>",
            w - r + 10.0,
            ly,
            w - r + 30.0,
            w - r + 36.0,
            ly + 4.0,
            escape(&se.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// A round upper bound for an axis.
fn nice(y: f64) -> f64 {
    if y <= 0.0 || !y.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(y.log10().floor());
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if y <= m * p {
            return m * p;
        }
    }
    10.0 * p
}

fn fmt_tick(y: f64) -> String {
    if y == 0.0 {
        "0".into()
    } else if y >= 10.0 {
        format!("{y:.0}")
    } else if y >= 0.1 {
        format!("{y:.2}")
    } else {
        format!("{y:.1e}")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
