//! Runtime selection of vector instructions for the kernels' plain loops. The crate is built
//! for the baseline x86-64 CPU (SSE2, 4 lanes); [`vectorized`] runs a loop from a copy compiled
//! for AVX-512 (16 lanes) or AVX2 and FMA (8 lanes), the widest this CPU has. Only mul and add
//! are written in the loops, Rust fuses neither into FMA nor reorders a sum on its own, so every
//! copy computes the same bits.

/// Whether this CPU has AVX2 and FMA (the check is cached by the standard library).
#[inline(always)]
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma");
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Whether the loops may use AVX-512 (F, BW, DQ, VL): the CPU has it and `DNNL_MAX_CPU_ISA`
/// does not cap oneDNN below it, so that a run "as an AVX2-only CPU" is one throughout.
#[inline(always)]
pub fn avx512_available() -> bool {
    // Each check is cached where it is made (the standard library's, `has_avx512`'s).
    #[cfg(target_arch = "x86_64")]
    return is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vl")
        && available()
        && super::onednn::has_avx512();
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Runs `body` compiled for AVX-512 or for AVX2 and FMA where the CPU has them, as it is
/// elsewhere. `body` should be an `#[inline(always)]` closure, so that it is compiled into the
/// copy that calls it.
#[inline(always)]
pub fn vectorized<R>(body: impl FnOnce() -> R) -> R {
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_available() {
            // SAFETY: the CPU has the features `run_avx512` is compiled for.
            return unsafe { run_avx512(body) };
        }
        if available() {
            // SAFETY: the CPU has the features `run_avx2` is compiled for.
            return unsafe { run_avx2(body) };
        }
    }
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
fn run_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn run_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;
    use crate::kernels::activation::logistic;

    /// What the kernels' loops do: an elementwise function with the sigmoid's exponential,
    /// and a sum in 8 fixed lanes.
    #[inline(always)]
    fn kernel_like(x: &[f32]) -> (Vec<u32>, u32) {
        let y: Vec<f32> = x.iter().map(|&v| logistic(v * 1.5 + 0.25)).collect();
        let mut lanes = [0.0f32; 8];
        for chunk in y.chunks_exact(8) {
            for l in 0..8 {
                lanes[l] += chunk[l] * chunk[l] - 0.5;
            }
        }
        (y.iter().map(|v| v.to_bits()).collect(), lanes.iter().sum::<f32>().to_bits())
    }

    #[test]
    fn every_copy_computes_the_same_bits() {
        let mut x: Vec<f32> = (0..4099).map(|i| ((i * 7919 % 20011) as f32 - 10005.0) / 97.0).collect();
        x.extend([0.0, -0.0, f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 88.0, -104.0, 1e-30]);
        let plain = kernel_like(&x);
        // SAFETY: each copy runs only where the CPU has the features it is compiled for.
        let copies = [
            (
                "AVX2",
                available().then(|| unsafe {
                    run_avx2(
                        #[inline(always)]
                        || kernel_like(&x),
                    )
                }),
            ),
            (
                "AVX-512",
                avx512_available().then(|| unsafe {
                    run_avx512(
                        #[inline(always)]
                        || kernel_like(&x),
                    )
                }),
            ),
        ];
        for (name, bits) in copies {
            if let Some(bits) = bits {
                assert_eq!(bits, plain, "{name} copy");
            }
        }
    }
}
