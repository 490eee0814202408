//! Per-operation figures of a scenario run: count, bytes, latency percentiles
//! and errors, and the table `loadtest run` prints.

use std::{cell::RefCell, fmt::Write as _, time::Duration};

use crate::{
    report::{num, table},
    workloads::{mb_per_s, percentile_ms},
};

/// One operation's raw record (latencies in µs, unsorted).
#[derive(Default, Debug, Clone)]
pub struct OpRecord {
    pub latencies_us: Vec<u32>,
    pub bytes: u64,
    pub errors: u64,
    /// The first error's message, to show what went wrong.
    pub first_error: Option<String>,
}

/// Every operation of one scenario run, in the order first seen.
#[derive(Default)]
pub struct Recorder {
    ops: RefCell<Vec<(String, OpRecord)>>,
}

impl Recorder {
    fn with<R>(&self, op: &str, f: impl FnOnce(&mut OpRecord) -> R) -> R {
        let mut ops = self.ops.borrow_mut();
        let i = match ops.iter().position(|(n, _)| n == op) {
            Some(i) => i,
            None => {
                ops.push((op.to_string(), OpRecord::default()));
                ops.len() - 1
            }
        };
        f(&mut ops[i].1)
    }

    pub fn ok(&self, op: &str, took: Duration, bytes: u64) {
        self.with(op, |r| {
            r.latencies_us
                .push(took.as_micros().min(u32::MAX as u128) as u32);
            r.bytes += bytes;
        });
    }

    pub fn error(&self, op: &str, e: &anyhow::Error) {
        self.with(op, |r| {
            r.errors += 1;
            r.first_error.get_or_insert_with(|| format!("{e:#}"));
        });
    }

    /// `op: first error` for every operation that failed.
    pub fn error_summary(&self) -> String {
        let ops = self.ops.borrow();
        let failed: Vec<String> = ops
            .iter()
            .filter(|(_, r)| r.errors > 0)
            .map(|(n, r)| format!("{n}: {}", r.first_error.as_deref().unwrap_or("?")))
            .collect();
        failed.join("; ")
    }

    pub fn total_ops(&self) -> u64 {
        let ops = self.ops.borrow();
        ops.iter().map(|(_, r)| r.latencies_us.len() as u64).sum()
    }

    pub fn total_errors(&self) -> u64 {
        self.ops.borrow().iter().map(|(_, r)| r.errors).sum()
    }

    pub fn finish(self, scenario: &str, elapsed: Duration, clients: usize) -> ScenarioResult {
        ScenarioResult {
            scenario: scenario.to_string(),
            clients,
            elapsed,
            ops: self
                .ops
                .into_inner()
                .into_iter()
                .map(|(name, r)| OpSummary::from_record(name, r, elapsed))
                .collect(),
        }
    }
}

/// One operation's figures over a run.
#[derive(Clone, Debug, PartialEq)]
pub struct OpSummary {
    pub op: String,
    pub count: u64,
    pub errors: u64,
    pub ops_per_s: f64,
    pub mb_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub first_error: Option<String>,
}

impl OpSummary {
    pub fn from_record(op: String, mut r: OpRecord, elapsed: Duration) -> OpSummary {
        r.latencies_us.sort_unstable();
        let l = &r.latencies_us;
        OpSummary {
            op,
            count: l.len() as u64,
            errors: r.errors,
            ops_per_s: l.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            mb_per_s: mb_per_s(r.bytes, elapsed),
            p50_ms: percentile_ms(l, 0.50),
            p90_ms: percentile_ms(l, 0.90),
            p99_ms: percentile_ms(l, 0.99),
            max_ms: percentile_ms(l, 1.0),
            first_error: r.first_error,
        }
    }
}

/// A scenario's run against one registry.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    pub scenario: String,
    pub clients: usize,
    /// From the first client's start until the last one finished.
    pub elapsed: Duration,
    pub ops: Vec<OpSummary>,
}

impl ScenarioResult {
    pub fn errors(&self) -> u64 {
        self.ops.iter().map(|o| o.errors).sum()
    }

    pub fn ops_per_s(&self) -> f64 {
        self.ops.iter().map(|o| o.ops_per_s).sum()
    }

    pub fn mb_per_s(&self) -> f64 {
        self.ops.iter().map(|o| o.mb_per_s).sum()
    }

    pub fn op(&self, name: &str) -> Option<&OpSummary> {
        self.ops.iter().find(|o| o.op == name)
    }

    /// The table for one registry: one row per operation and a total.
    pub fn render(&self) -> String {
        let mut rows: Vec<Vec<String>> = vec![[
            "operation",
            "ops",
            "ops/s",
            "MB/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "errors",
        ]
        .map(String::from)
        .to_vec()];
        for o in &self.ops {
            rows.push(vec![
                format!("  {}", o.op),
                o.count.to_string(),
                num(Some(o.ops_per_s)),
                mb(o.mb_per_s),
                num(Some(o.p50_ms)),
                num(Some(o.p90_ms)),
                num(Some(o.p99_ms)),
                num(Some(o.max_ms)),
                o.errors.to_string(),
            ]);
        }
        let count: u64 = self.ops.iter().map(|o| o.count).sum();
        rows.push(vec![
            "  all".into(),
            count.to_string(),
            num(Some(self.ops_per_s())),
            mb(self.mb_per_s()),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            self.errors().to_string(),
        ]);
        let mut out = format!(
            "{}: {} clients, {:.1} s (MB = 10^6 bytes)\n",
            self.scenario,
            self.clients,
            self.elapsed.as_secs_f64()
        );
        out.push_str(&table(&rows));
        for o in self.ops.iter().filter(|o| o.errors > 0) {
            let _ = writeln!(
                out,
                "  first error in {}: {}",
                o.op,
                o.first_error.as_deref().unwrap_or("?")
            );
        }
        out
    }
}

/// MB/s, or "-" for operations that move no payload.
pub fn mb(v: f64) -> String {
    if v > 0.0 {
        num(Some(v))
    } else {
        "-".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_percentiles_and_rates() {
        let rec = Recorder::default();
        for ms in 1..=100u64 {
            rec.ok("blob GET", Duration::from_millis(ms), 1_000_000);
        }
        rec.error("blob GET", &anyhow::anyhow!("boom"));
        rec.error("blob GET", &anyhow::anyhow!("second"));
        rec.ok("manifest GET", Duration::from_millis(3), 0);
        assert_eq!(rec.total_ops(), 101);
        assert_eq!(rec.total_errors(), 2);
        let r = rec.finish("hot-pull", Duration::from_secs(10), 4);
        let g = r.op("blob GET").unwrap();
        assert_eq!(g.count, 100);
        assert_eq!(
            (g.p50_ms, g.p90_ms, g.p99_ms, g.max_ms),
            (50.0, 90.0, 99.0, 100.0)
        );
        assert_eq!(g.ops_per_s, 10.0);
        assert_eq!(g.mb_per_s, 10.0);
        assert_eq!(g.first_error.as_deref(), Some("boom"));
        assert_eq!(r.errors(), 2);
        assert_eq!(r.ops_per_s(), 10.1);
        // First-seen order is kept.
        assert_eq!(r.ops[1].op, "manifest GET");
        let text = r.render();
        assert!(text.starts_with("hot-pull: 4 clients, 10.0 s"), "{text}");
        assert!(text.contains("first error in blob GET: boom"), "{text}");
        let m = text.lines().find(|l| l.contains("manifest GET")).unwrap();
        assert!(m.contains(" - "), "no payload shows as '-': {m}");
    }

    #[test]
    fn empty_operation_has_zero_percentiles() {
        let s = OpSummary::from_record("x".into(), OpRecord::default(), Duration::from_secs(1));
        assert_eq!((s.count, s.p99_ms, s.ops_per_s), (0, 0.0, 0.0));
    }
}
