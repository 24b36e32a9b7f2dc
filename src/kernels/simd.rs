//! Runtime selection of AVX2 for the kernels' plain loops. The crate is built for the
//! baseline x86-64 CPU (SSE2, 4 lanes); where the CPU has AVX2 and FMA the loops run from a copy
//! compiled for them (8 lanes). Only mul and add are written in the loops and Rust does not fuse
//! them into FMA on its own, so both copies compute the same bits.

/// Whether this CPU has AVX2 and FMA (the check is cached by the standard library).
#[inline(always)]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `body` compiled for AVX2 and FMA where the CPU has them, as it is elsewhere.
#[inline(always)]
pub fn avx2<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2,fma")]
        fn run<R>(body: impl FnOnce() -> R) -> R {
            body()
        }
        if available() {
            // SAFETY: the CPU has the features `run` is compiled for.
            return unsafe { run(body) };
        }
    }
    body()
}
