//! Where the time goes, op by op: while `record` runs a closure, every op
//! of `ops` (forward and backward) and the optimizer step leave a span:
//! name, shape, wall time, FLOPs (the ops that do arithmetic at scale:
//! convolution, linear, attention) and bytes moved (inputs read plus
//! outputs written, once each). `table` groups the spans per op and shape;
//! `chrome_trace` writes them as Chrome trace events (Perfetto opens it).
//!
//! Timing: ops on the CPU are synchronous, so a span is the op's wall
//! time. On a device a span waits for the device at its end (like
//! CUDA_LAUNCH_BLOCKING), so kernels do not overlap the host while
//! profiling; ops inside an open graph capture leave no span (they do not
//! run then).

use crate::tensor::{DType, Tensor};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// One op's run.
#[derive(Clone, Debug)]
pub struct Span {
    pub name: &'static str,
    /// The shape of the op's first input.
    pub shape: Vec<usize>,
    /// Microseconds since the first span of the process.
    pub start_us: f64,
    pub dur_us: f64,
    /// The process's CPU time (all threads) during the span: over `dur_us`,
    /// how many cores the op kept busy on the CPU backend.
    pub cpu_us: f64,
    pub flops: f64,
    pub bytes: f64,
}

static RECORDING: AtomicBool = AtomicBool::new(false);
static SPANS: Mutex<Vec<Span>> = Mutex::new(Vec::new());
static ORIGIN: OnceLock<Instant> = OnceLock::new();

/// The bytes of an op's outputs.
pub trait Outputs {
    fn bytes(&self) -> f64;
}

impl Outputs for Tensor {
    fn bytes(&self) -> f64 {
        let size = if self.is_cuda() {
            self.dtype().size()
        } else {
            DType::F32.size()
        };
        (self.numel() * size) as f64
    }
}

impl<T: Outputs> Outputs for Option<T> {
    fn bytes(&self) -> f64 {
        self.as_ref().map_or(0.0, T::bytes)
    }
}

impl<T: Outputs> Outputs for Vec<T> {
    fn bytes(&self) -> f64 {
        self.iter().map(T::bytes).sum()
    }
}

impl<A: Outputs, B: Outputs> Outputs for (A, B) {
    fn bytes(&self) -> f64 {
        self.0.bytes() + self.1.bytes()
    }
}

impl<A: Outputs, B: Outputs, C: Outputs> Outputs for (A, B, C) {
    fn bytes(&self) -> f64 {
        self.0.bytes() + self.1.bytes() + self.2.bytes()
    }
}

impl Outputs for () {
    fn bytes(&self) -> f64 {
        0.0
    }
}

impl Outputs for bool {
    fn bytes(&self) -> f64 {
        0.0
    }
}

impl<T: Outputs, E> Outputs for std::result::Result<T, E> {
    fn bytes(&self) -> f64 {
        self.as_ref().map_or(0.0, T::bytes)
    }
}

impl Outputs for crate::cpu::norm::NormStats {
    fn bytes(&self) -> f64 {
        ((self.mean.len() + self.rstd.len()) * 4) as f64
    }
}

impl Outputs for crate::cpu::attention::AttentionProbs {
    fn bytes(&self) -> f64 {
        (self.values() * 4) as f64
    }
}

/// Runs one op (`f`), leaving a span when recording.
pub fn span<T: Outputs>(
    name: &'static str,
    inputs: &[&Tensor],
    flops: f64,
    f: impl FnOnce() -> T,
) -> T {
    if !RECORDING.load(Ordering::Relaxed) {
        return f();
    }
    let on_device = inputs.iter().any(|t| t.is_cuda());
    if on_device && crate::cuda::capturing() {
        return f();
    }
    let origin = *ORIGIN.get_or_init(Instant::now);
    let (start, cpu_start) = (Instant::now(), process_cpu_us());
    let out = f();
    if on_device {
        // A failure is kept by the device and reported by the caller.
        let _ = crate::cuda::gpu().map(|g| g.synchronize());
    }
    let (end, cpu_end) = (Instant::now(), process_cpu_us());
    let span = Span {
        name,
        shape: inputs
            .first()
            .map(|t| t.shape().to_vec())
            .unwrap_or_default(),
        start_us: (start - origin).as_secs_f64() * 1e6,
        dur_us: (end - start).as_secs_f64() * 1e6,
        cpu_us: cpu_end - cpu_start,
        flops,
        bytes: inputs.iter().map(|t| t.bytes()).sum::<f64>() + out.bytes(),
    };
    SPANS.lock().expect("profile lock").push(span);
    out
}

/// CPU time used so far by every thread of this process, in microseconds.
fn process_cpu_us() -> f64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) };
    match status {
        0 => t.tv_sec as f64 * 1e6 + t.tv_nsec as f64 / 1e3,
        _ => f64::NAN,
    }
}

/// Runs `f` with recording on; returns its result and the spans it left.
pub fn record<T>(f: impl FnOnce() -> T) -> (T, Vec<Span>) {
    SPANS.lock().expect("profile lock").clear();
    RECORDING.store(true, Ordering::Relaxed);
    let out = f();
    RECORDING.store(false, Ordering::Relaxed);
    (
        out,
        std::mem::take(&mut *SPANS.lock().expect("profile lock")),
    )
}

/// FLOPs of a convolution producing `y` from `cin` channels with a k x k
/// kernel (a multiply-add is 2).
pub fn conv_flops(y: &[usize], cin: usize, k: usize) -> f64 {
    2.0 * y.iter().product::<usize>() as f64 * (cin * k * k) as f64
}

/// The per-op table: one row per (op, shape), the most expensive first,
/// then the total; `wall_seconds` is the whole run's (ops plus what lies
/// between them).
pub fn table(title: &str, spans: &[Span], wall_seconds: f64) -> String {
    // One row per (op, shape): calls, and the spans' sums.
    struct Row<'a> {
        name: &'static str,
        shape: &'a [usize],
        calls: usize,
        us: f64,
        cpu_us: f64,
        flops: f64,
        bytes: f64,
    }
    let mut rows: Vec<Row> = Vec::new();
    for s in spans {
        match rows
            .iter_mut()
            .find(|r| r.name == s.name && r.shape == s.shape)
        {
            Some(r) => {
                r.calls += 1;
                r.us += s.dur_us;
                r.cpu_us += s.cpu_us;
                r.flops += s.flops;
                r.bytes += s.bytes;
            }
            None => rows.push(Row {
                name: s.name,
                shape: &s.shape,
                calls: 1,
                us: s.dur_us,
                cpu_us: s.cpu_us,
                flops: s.flops,
                bytes: s.bytes,
            }),
        }
    }
    rows.sort_by(|a, b| b.us.total_cmp(&a.us));
    let op_us: f64 = rows.iter().map(|r| r.us).sum();
    let op_cpu_us: f64 = rows.iter().map(|r| r.cpu_us).sum();
    let mut out = format!(
        "{title}: {:.3} s wall, {:.3} s in {} op calls ({:.1}%), {:.2} cores busy in them\n\n\
         | op | shape (first input) | calls | total ms | share | cores | GFLOP | GFLOP/s | GB/s |\n\
         | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n",
        wall_seconds,
        op_us / 1e6,
        spans.len(),
        100.0 * op_us / 1e6 / wall_seconds.max(1e-12),
        op_cpu_us / op_us.max(1e-12)
    );
    for Row {
        name,
        shape,
        calls,
        us,
        cpu_us,
        flops,
        bytes,
    } in &rows
    {
        let secs = us / 1e6;
        let rate = |x: f64| if secs > 0.0 { x / secs / 1e9 } else { 0.0 };
        let gflop = if *flops > 0.0 {
            (
                format!("{:.2}", flops / 1e9),
                format!("{:.1}", rate(*flops)),
            )
        } else {
            ("-".into(), "-".into())
        };
        out += &format!(
            "| {name} | {shape:?} | {calls} | {:.2} | {:.1}% | {:.2} | {} | {} | {:.2} |\n",
            us / 1e3,
            100.0 * secs / wall_seconds.max(1e-12),
            cpu_us / us.max(1e-12),
            gflop.0,
            gflop.1,
            rate(*bytes)
        );
    }
    out
}

/// Chrome trace JSON (the "traceEvents" form): one complete event per
/// span, one thread per section (e.g. "restore", "train step").
pub fn chrome_trace(sections: &[(&str, &[Span])]) -> String {
    let mut events = Vec::new();
    for (tid, (section, spans)) in sections.iter().enumerate() {
        events.push(serde_json::json!({
            "name": "thread_name", "ph": "M", "ts": 0, "dur": 0, "pid": 1, "tid": tid + 1,
            "args": { "name": section },
        }));
        for s in spans.iter() {
            events.push(serde_json::json!({
                "name": s.name,
                "cat": "op",
                "ph": "X",
                "ts": s.start_us,
                "dur": s.dur_us,
                "pid": 1,
                "tid": tid + 1,
                "args": { "shape": format!("{:?}", s.shape), "flops": s.flops, "bytes": s.bytes },
            }));
        }
    }
    serde_json::json!({ "traceEvents": events, "displayTimeUnit": "ms" }).to_string()
}
