//! The element types the kernels store activations in: f32, and bf16 for what only a bf16
//! convolution or batch normalization reads in bf16 training.

use half::bf16;

/// The element type an activation is stored in, read as f32: f32, or bf16 (what DenseNet's
/// concatenations hold in bf16 training, [`super::concat`]). The bf16 read is a shift, which
/// keeps every row's loop SIMD code.
pub trait Stored: Copy + Send + Sync {
    /// The value as f32 (exact).
    fn value(self) -> f32;
    /// The value rounded to bf16 as [`round_to_bf16`] rounds (a bf16 as it is).
    fn to_bf16(self) -> bf16;
}

impl Stored for f32 {
    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
    #[inline(always)]
    fn to_bf16(self) -> bf16 {
        round_to_bf16(self)
    }
}

impl Stored for bf16 {
    #[inline(always)]
    fn value(self) -> f32 {
        f32::from_bits(u32::from(self.to_bits()) << 16)
    }
    #[inline(always)]
    fn to_bf16(self) -> bf16 {
        self
    }
}

/// `v` rounded to the nearest bf16, ties to even, NaN kept NaN (as oneDNN's conversion and
/// `half`'s), without branches so that a row's loop stays SIMD code.
#[inline(always)]
pub fn round_to_bf16(v: f32) -> bf16 {
    let bits = v.to_bits();
    let rounded = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    let quiet_nan = (bits >> 16) as u16 | 0x40;
    bf16::from_bits(if v.is_nan() { quiet_nan } else { rounded })
}
