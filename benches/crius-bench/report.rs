//! Measurements and how they are shown: a Markdown table (readable in a terminal and
//! pasted as is into BENCHMARKS.md) and a JSON document with every sample.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::runtime::Runtime;
use crate::Bench;

/// One measured quantity, with samples for each runtime.
pub struct Metric {
    pub name: String,
    pub unit: &'static str,
    /// Samples per runtime, in the order of [`Bench::runtimes`].
    pub samples: Vec<Vec<f64>>,
}

impl Metric {
    pub fn new(name: impl Into<String>, unit: &'static str, runtimes: usize) -> Metric {
        Metric {
            name: name.into(),
            unit,
            samples: vec![Vec::new(); runtimes],
        }
    }

    /// Median of the first runtime (crius) over the second's (the baseline).
    fn ratio(&self) -> Option<f64> {
        match self.samples.as_slice() {
            [ours, baseline, ..] => Some(Summary::of(ours)?.median / Summary::of(baseline)?.median),
            _ => None,
        }
    }
}

/// The results of one scenario.
pub struct Section {
    pub scenario: &'static str,
    pub metrics: Vec<Metric>,
}

struct Summary {
    n: usize,
    min: f64,
    median: f64,
    max: f64,
}

impl Summary {
    fn of(samples: &[f64]) -> Option<Summary> {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Summary {
            n,
            min: sorted[0],
            median,
            max: sorted[n - 1],
        })
    }
}

/// Three significant digits or so, without a wall of decimals.
fn number(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        v if v >= 1.0 => format!("{value:.2}"),
        _ => format!("{value:.3}"),
    }
}

/// One row per metric: min / median / max for each runtime, then the ratio of medians.
pub fn table(runtimes: &[Runtime], sections: &[Section]) -> String {
    let mut header = "| scenario | metric | unit |".to_string();
    let mut rule = "|---|---|---|".to_string();
    for runtime in runtimes {
        header.push_str(&format!(" {} min / median / max (n) |", runtime.name));
        rule.push_str("---|");
    }
    if let [ours, baseline, ..] = runtimes {
        header.push_str(&format!(" {}/{} (median) |", ours.name, baseline.name));
        rule.push_str("---|");
    }
    let mut out = format!("{header}\n{rule}\n");
    for section in sections {
        for metric in &section.metrics {
            out.push_str(&format!(
                "| {} | {} | {} |",
                section.scenario, metric.name, metric.unit
            ));
            for samples in &metric.samples {
                match Summary::of(samples) {
                    Some(s) => out.push_str(&format!(
                        " {} / {} / {} ({}) |",
                        number(s.min),
                        number(s.median),
                        number(s.max),
                        s.n
                    )),
                    None => out.push_str(" - |"),
                }
            }
            if let Some(ratio) = metric.ratio() {
                out.push_str(&format!(" {ratio:.2} |"));
            }
            out.push('\n');
        }
    }
    out
}

/// Everything the table shows plus the raw samples and the run's parameters.
pub fn json(bench: &Bench, sections: &[Section]) -> Value {
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs())
        .unwrap_or_default();
    let runtimes: Vec<Value> = bench
        .runtimes
        .iter()
        .map(|runtime| {
            json!({
                "name": runtime.name,
                "address": runtime.address,
                "version": runtime.version,
                "pid": runtime.pid,
            })
        })
        .collect();
    let metrics: Vec<Value> = sections
        .iter()
        .flat_map(|section| {
            section.metrics.iter().map(|metric| {
                let results: serde_json::Map<String, Value> = bench
                    .runtimes
                    .iter()
                    .zip(&metric.samples)
                    .filter_map(|(runtime, samples)| {
                        let s = Summary::of(samples)?;
                        Some((
                            runtime.name.to_string(),
                            json!({
                                "n": s.n, "min": s.min, "median": s.median, "max": s.max,
                                "samples": samples,
                            }),
                        ))
                    })
                    .collect();
                json!({
                    "scenario": section.scenario,
                    "metric": metric.name,
                    "unit": metric.unit,
                    "results": results,
                    "ratio": metric.ratio(),
                })
            })
        })
        .collect();
    json!({
        "unix_time": unix_time,
        "image": bench.image,
        "iterations": bench.iterations,
        "runtimes": runtimes,
        "metrics": metrics,
    })
}

#[cfg(test)]
mod tests {
    use super::{number, Summary};

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Summary::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((odd.min, odd.median, odd.max), (1.0, 2.0, 3.0));
        let even = Summary::of(&[4.0, 1.0, 3.0, 2.0]).expect("samples");
        assert_eq!(even.median, 2.5);
        assert!(Summary::of(&[]).is_none());
    }

    #[test]
    fn numbers_keep_about_three_digits() {
        assert_eq!(number(1234.4), "1234");
        assert_eq!(number(12.345), "12.3");
        assert_eq!(number(1.2345), "1.23");
        assert_eq!(number(0.12345), "0.123");
    }
}
