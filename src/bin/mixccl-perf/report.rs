//! What rank 0 prints and writes: nccl-tests' table (same columns and widths),
//! its summary lines, and the JSON report. Pure formatting; no communication.

use crate::args::{Args, Step};
use crate::copybound::CopyBound;
use mixccl::{DataType, ReduceOp};

/// One phase (out-of-place or in-place) of one row, aggregated over ranks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Phase {
    /// Time per call in microseconds (the slowest rank's mean).
    pub time_us: f64,
    /// size / time, in GB/s (10^9 bytes).
    pub algbw_gbps: f64,
    /// algbw times the collective's bus factor.
    pub busbw_gbps: f64,
    /// Wrong elements summed over ranks; None when checking is off.
    pub wrong: Option<u64>,
}

impl Phase {
    /// The phase of a call moving `size_bytes` in `seconds`.
    pub fn new(size_bytes: usize, seconds: f64, bus_factor: f64, wrong: Option<u64>) -> Phase {
        let algbw_gbps = if seconds > 0.0 {
            size_bytes as f64 / seconds / 1e9
        } else {
            0.0
        };
        Phase {
            time_us: seconds * 1e6,
            algbw_gbps,
            busbw_gbps: algbw_gbps * bus_factor,
            wrong,
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Size column in bytes.
    pub size: usize,
    /// Per-rank count column.
    pub count: usize,
    /// Element type.
    pub dtype: DataType,
    /// The op, for collectives that reduce.
    pub redop: Option<ReduceOp>,
    /// The root, for collectives that have one.
    pub root: Option<usize>,
    /// Out-of-place measurement.
    pub out_of_place: Phase,
    /// In-place measurement; None where the collective has no in-place form.
    pub in_place: Option<Phase>,
}

impl Row {
    /// Wrong elements over both phases.
    pub fn wrong(&self) -> u64 {
        self.out_of_place.wrong.unwrap_or(0) + self.in_place.and_then(|p| p.wrong).unwrap_or(0)
    }

    fn redop_name(&self) -> &'static str {
        self.redop.map_or("none", ReduceOp::name)
    }

    fn root_value(&self) -> i64 {
        self.root.map_or(-1, |r| r as i64)
    }
}

/// nccl-tests' time column: two decimals below 10 ms, none above, 7 wide.
pub fn format_time(us: f64) -> String {
    if us < 1e4 {
        format!("{us:7.2}")
    } else {
        format!("{us:7.0}")
    }
}

/// C's `%g`: six significant digits, trailing zeros dropped, exponent form outside
/// 1e-4..1e6. nccl-tests prints the average bus bandwidth this way.
pub fn format_g(x: f64) -> String {
    fn strip(s: &str) -> &str {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.')
        } else {
            s
        }
    }
    if x == 0.0 || !x.is_finite() {
        return if x == 0.0 { "0".into() } else { x.to_string() };
    }
    let sci = format!("{x:.5e}");
    let (mantissa, exp) = sci.split_once('e').expect("exponent form has an e");
    let exp: i32 = exp.parse().expect("exponent is an integer");
    if !(-4..6).contains(&exp) {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", strip(mantissa), exp.abs())
    } else {
        strip(&format!("{x:.*}", (5 - exp) as usize)).to_string()
    }
}

fn phase_cells(p: Option<&Phase>) -> String {
    match p {
        Some(p) => {
            let wrong = p.wrong.map_or("N/A".to_string(), |w| w.to_string());
            format!(
                "  {}  {:6.2}  {:6.2}  {wrong:>5}",
                format_time(p.time_us),
                p.algbw_gbps,
                p.busbw_gbps
            )
        }
        None => format!("  {:>7}  {:>6}  {:>6}  {:>5}", "N/A", "N/A", "N/A", "N/A"),
    }
}

/// One table line: `%12li  %12li  %8s  %6s  %6i` then per phase `  %7s  %6.2f  %6.2f  %5s`.
pub fn format_row(r: &Row) -> String {
    format!(
        "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}{}{}",
        r.size,
        r.count,
        r.dtype.name(),
        r.redop_name(),
        r.root_value(),
        phase_cells(Some(&r.out_of_place)),
        phase_cells(r.in_place.as_ref()),
    )
}

fn step_text(step: Step) -> String {
    match step {
        Step::Factor(f) => format!("{f}(factor)"),
        Step::Bytes(b) => format!("{b}(bytes)"),
    }
}

/// The lines before the first row: parameters, then the column heads.
pub fn header(args: &Args, nranks: usize) -> String {
    let cols = |a: [&str; 5], p: [&str; 4]| {
        let phase = format!("  {:>7}  {:>6}  {:>6} {:>6}", p[0], p[1], p[2], p[3]);
        let line = format!(
            "{:>12}  {:>12}  {:>8}  {:>6}  {:>6}{phase}{phase}",
            a[0], a[1], a[2], a[3], a[4]
        );
        format!("#{}", &line[1..]).trim_end().to_string()
    };
    [
        format!(
            "# mixccl-perf {}: nranks {nranks}, minBytes {}, maxBytes {}, step: {}, warmup iters: {}, iters: {}, check: {}, memory: {}",
            args.collective,
            args.min_bytes,
            args.max_bytes,
            step_text(args.step),
            args.warmup,
            args.iters,
            u8::from(args.check),
            args.device.map_or("host", |v| v.name()),
        ),
        "#".to_string(),
        format!("{:<52}{:^32}{:^32}", "#", "out-of-place", "in-place")
            .trim_end()
            .to_string(),
        cols(
            ["size", "count", "type", "redop", "root"],
            ["time", "algbw", "busbw", "#wrong"],
        ),
        cols(
            ["(B)", "(elements)", "", "", ""],
            ["(us)", "(GB/s)", "(GB/s)", ""],
        ),
    ]
    .join("\n")
}

/// Mean of every busbw printed (both phases).
pub fn avg_busbw(rows: &[Row]) -> f64 {
    let bw: Vec<f64> = rows
        .iter()
        .flat_map(|r| std::iter::once(r.out_of_place).chain(r.in_place))
        .map(|p| p.busbw_gbps)
        .collect();
    if bw.is_empty() {
        0.0
    } else {
        bw.iter().sum::<f64>() / bw.len() as f64
    }
}

/// The lines after the last row.
pub fn summary(rows: &[Row]) -> String {
    let wrong: u64 = rows.iter().map(Row::wrong).sum();
    format!(
        "# {:<20} : {wrong} {}\n# {:<20} : {}\n#",
        "Out of bounds values",
        if wrong == 0 { "OK" } else { "FAILED" },
        "Avg bus bandwidth",
        format_g(avg_busbw(rows)),
    )
}

/// One line naming a row with wrong results, for stderr.
pub fn describe_wrong(collective: &str, r: &Row) -> String {
    let w = |p: Option<&Phase>| {
        p.and_then(|p| p.wrong)
            .map_or("N/A".into(), |w| w.to_string())
    };
    format!(
        "{collective} size {} count {} {} {} root {}: {} wrong out-of-place, {} wrong in-place",
        r.size,
        r.count,
        r.dtype.name(),
        r.redop_name(),
        r.root_value(),
        w(Some(&r.out_of_place)),
        w(r.in_place.as_ref()),
    )
}

fn phase_json(p: &Phase, bound: Option<&CopyBound>) -> serde_json::Value {
    serde_json::json!({
        "time_us": p.time_us,
        "algbw_gbps": p.algbw_gbps,
        "busbw_gbps": p.busbw_gbps,
        "copy_fraction": bound.map(|b| b.fraction(p.busbw_gbps)),
        "wrong": p.wrong,
    })
}

/// The JSON report: parameters, one object per row, and the summary; with the copy
/// bound where it was measured (each phase's busbw as a fraction of it).
pub fn json(
    args: &Args,
    nranks: usize,
    rows: &[Row],
    bound: Option<&CopyBound>,
) -> serde_json::Value {
    let objects: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "size": r.size,
                "count": r.count,
                "type": r.dtype.name(),
                "redop": r.redop_name(),
                "root": r.root_value(),
                "out_of_place": phase_json(&r.out_of_place, bound),
                "in_place": r.in_place.as_ref().map(|p| phase_json(p, bound)),
            })
        })
        .collect();
    serde_json::json!({
        "collective": args.collective.name(),
        "nranks": nranks,
        "min_bytes": args.min_bytes,
        "max_bytes": args.max_bytes,
        "iters": args.iters,
        "warmup": args.warmup,
        "check": args.check,
        "rows": objects,
        "out_of_bounds": rows.iter().map(Row::wrong).sum::<u64>(),
        "avg_busbw_gbps": avg_busbw(rows),
        "copy_rate_gbps": bound.map(|b| b.rate_gbps),
        "copy_threads": bound.map(|b| b.threads),
        "copy_bound_busbw_gbps": bound.map(CopyBound::busbw_gbps),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::{parse, Command};
    use mixccl::Collective;

    fn row(in_place: bool, wrong: Option<u64>) -> Row {
        Row {
            size: 8,
            count: 2,
            dtype: DataType::F32,
            redop: Some(ReduceOp::Sum),
            root: None,
            out_of_place: Phase {
                time_us: 17.9,
                algbw_gbps: 0.0,
                busbw_gbps: 0.0,
                wrong,
            },
            in_place: in_place.then_some(Phase {
                time_us: 17.56,
                algbw_gbps: 0.0,
                busbw_gbps: 0.0,
                wrong,
            }),
        }
    }

    #[test]
    fn rows_match_nccl_tests_layout() {
        assert_eq!(
            format_row(&row(true, Some(0))),
            "           8             2     float     sum      -1    17.90    0.00    0.00      0    17.56    0.00    0.00      0"
        );
        let mut r = row(false, None);
        r.redop = None;
        r.root = Some(3);
        r.dtype = DataType::BF16;
        r.size = 33554432;
        r.count = 16777216;
        r.out_of_place.time_us = 123456.7;
        r.out_of_place.algbw_gbps = 271.8;
        assert_eq!(
            format_row(&r),
            "    33554432      16777216  bfloat16    none       3   123457  271.80    0.00    N/A      N/A     N/A     N/A    N/A"
        );
    }

    #[test]
    fn header_columns_line_up_with_rows() {
        let Ok(Command::Run(args)) = parse(&["allreduce".to_string()]) else {
            panic!("parse failed")
        };
        let h = header(&args, 4);
        let lines: Vec<&str> = h.lines().collect();
        assert!(lines[0].starts_with("# mixccl-perf allreduce: nranks 4,"));
        assert!(lines[0].contains("iters: 20") && lines[0].contains("check: 1"));
        assert_eq!(
            lines[3],
            "#       size         count      type   redop    root     time   algbw   busbw #wrong     time   algbw   busbw #wrong"
        );
        assert_eq!(
            lines[4],
            "#        (B)    (elements)                               (us)  (GB/s)  (GB/s)            (us)  (GB/s)  (GB/s)"
        );
        let row = format_row(&row(true, Some(0)));
        // Every column head ends where its values end.
        for (i, c) in lines[3].char_indices().skip(1) {
            if c != ' ' && lines[3][i + 1..].starts_with(' ') {
                assert_ne!(row.as_bytes()[i], b' ', "column ending at {i}");
            }
        }
    }

    #[test]
    fn phase_bandwidths() {
        let p = Phase::new(1_000_000_000, 0.5, 1.5, Some(0));
        assert_eq!(
            (p.time_us, p.algbw_gbps, p.busbw_gbps),
            (500_000.0, 2.0, 3.0)
        );
        assert_eq!(Phase::new(8, 0.0, 1.0, None).algbw_gbps, 0.0);
    }

    #[test]
    fn times_and_g_format() {
        assert_eq!(format_time(17.9), "  17.90");
        assert_eq!(format_time(9999.99), "9999.99");
        assert_eq!(format_time(12345.6), "  12346");
        assert_eq!(format_g(0.0), "0");
        assert_eq!(format_g(0.12345), "0.12345");
        assert_eq!(format_g(12.5), "12.5");
        assert_eq!(format_g(1.0 / 3.0), "0.333333");
        assert_eq!(format_g(123456789.0), "1.23457e+08");
        assert_eq!(format_g(0.00001234), "1.234e-05");
        assert_eq!(format_g(100000.0), "100000");
    }

    #[test]
    fn summary_and_average() {
        let mut a = row(true, Some(0));
        a.out_of_place.busbw_gbps = 1.0;
        a.in_place.as_mut().unwrap().busbw_gbps = 2.0;
        let mut b = row(false, Some(3));
        b.out_of_place.busbw_gbps = 3.0;
        assert_eq!(avg_busbw(&[a.clone(), b.clone()]), 2.0);
        assert_eq!(
            summary(&[a.clone()]),
            "# Out of bounds values : 0 OK\n# Avg bus bandwidth    : 1.5\n#"
        );
        assert!(summary(&[a, b.clone()]).starts_with("# Out of bounds values : 3 FAILED"));
        assert!(
            describe_wrong("allreduce", &b).contains("3 wrong out-of-place, N/A wrong in-place")
        );
    }

    #[test]
    fn json_has_parameters_and_rows() {
        let Ok(Command::Run(args)) = parse(&["sendrecv".into(), "-c".into(), "0".into()]) else {
            panic!("parse failed")
        };
        assert_eq!(args.collective, Collective::SendRecv);
        let v = json(&args, 2, &[row(false, None)], None);
        assert_eq!(v["collective"], "sendrecv");
        assert_eq!(v["nranks"], 2);
        assert_eq!(v["check"], false);
        assert_eq!(v["rows"][0]["type"], "float");
        assert_eq!(v["rows"][0]["root"], -1);
        assert_eq!(v["rows"][0]["out_of_place"]["time_us"], 17.9);
        assert!(v["rows"][0]["out_of_place"]["wrong"].is_null());
        assert!(v["rows"][0]["in_place"].is_null());
    }
}
