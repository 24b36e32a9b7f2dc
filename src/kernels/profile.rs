//! Time spent in each of deepcnn's kernels, collected while profiling is switched on (by
//! `deepcnn bench --profile`); switched off, a kernel pays one relaxed atomic load.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Kernel;

/// Which pass of a kernel ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Pass {
    /// Training-mode forward.
    Forward,
    /// Forward with fixed statistics (batch normalization in evaluation mode).
    Evaluation,
    Backward,
    /// The optimizer's update.
    Update,
}

/// A kernel's pass as the profile prints it, e.g. "conv2d backward".
pub fn label(kernel: Kernel, pass: Pass) -> String {
    let pass = match pass {
        Pass::Forward => "forward",
        Pass::Evaluation => "forward (evaluation)",
        Pass::Backward => "backward",
        Pass::Update => "update",
    };
    format!("{} {pass}", kernel.name())
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static TIMES: Mutex<BTreeMap<(Kernel, Pass), (Duration, u64)>> = Mutex::new(BTreeMap::new());

/// Starts (or stops) collecting kernel times.
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Runs `f`, adding its wall-clock time to `kernel`'s `pass` when profiling is on.
pub(crate) fn timed<T>(kernel: Kernel, pass: Pass, f: impl FnOnce() -> T) -> T {
    if !ENABLED.load(Ordering::Relaxed) {
        return f();
    }
    let start = Instant::now();
    let out = f();
    let mut times = TIMES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = times.entry((kernel, pass)).or_default();
    entry.0 += start.elapsed();
    entry.1 += 1;
    out
}

/// Each kernel pass's total time and number of calls since the last `take`, which resets them.
pub fn take() -> BTreeMap<(Kernel, Pass), (Duration, u64)> {
    std::mem::take(&mut *TIMES.lock().unwrap_or_else(|e| e.into_inner()))
}

/// Floating-point operations of the convolutions computed so far (multiply and add counted
/// apart), always counted: one relaxed atomic add per pass.
static CONV_FLOPS: AtomicU64 = AtomicU64::new(0);

pub(crate) fn count_conv_flops(flops: u64) {
    CONV_FLOPS.fetch_add(flops, Ordering::Relaxed);
}

/// The convolutions' operations since the process started; differences give a step's.
pub fn conv_flops() -> u64 {
    CONV_FLOPS.load(Ordering::Relaxed)
}
