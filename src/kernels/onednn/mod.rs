//! oneDNN's convolutions (Debian's `libdnnl-dev`, the library PyTorch's CPU convolutions use),
//! behind a safe interface. `shim.cpp` holds the oneDNN calls: primitives cached per pass and
//! geometry, oneDNN's own blocked layouts inside, plain NCHW (or NHWC) and OIHW buffers at the boundary. This
//! file checks every buffer's length against the geometry, which the C side cannot.

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicBool, Ordering};

use half::bf16;

use super::conv::ConvGeometry;
use super::layout::Layout;

mod ffi {
    use std::ffi::{c_char, c_int};

    /// A geometry as the shim reads it (`DCNN_GEOMETRY_LEN` in shim.h): n, c_in, h, w, c_out,
    /// kh, kw, stride_h, stride_w, pad_h, pad_w, bf16, nhwc.
    pub type Geometry = [c_int; 13];

    extern "C" {
        pub fn dcnn_conv2d_forward(
            x: *const f32,
            w: *const f32,
            b: *const f32,
            y: *mut f32,
            x_bf16: *mut u16,
            g: *const c_int,
        ) -> c_int;
        pub fn dcnn_conv2d_backward_data(w: *const f32, dy: *const f32, dx: *mut f32, g: *const c_int) -> c_int;
        pub fn dcnn_conv2d_backward_weights(
            x: *const f32,
            dy: *const f32,
            dw: *mut f32,
            db: *mut f32,
            g: *const c_int,
        ) -> c_int;
        pub fn dcnn_conv2d_backward(
            x: *const f32,
            x_bf16: *const u16,
            w: *const f32,
            dy: *const f32,
            dx: *mut f32,
            dw: *mut f32,
            db: *mut f32,
            g: *const c_int,
        ) -> c_int;
        pub fn dcnn_last_error() -> *const c_char;
        pub fn dcnn_conv2d_impl(pass: c_int, g: *const c_int) -> *const c_char;
        pub fn dcnn_gemm_seconds(n: c_int, bf16: c_int, reps: c_int, best: *mut f64) -> c_int;
        /// oneDNN's own: the instruction set it dispatches to (`dnnl_cpu_isa_t`), which
        /// `DNNL_MAX_CPU_ISA` can lower.
        pub fn dnnl_get_effective_cpu_isa() -> c_int;
    }
}

/// Why oneDNN did not compute a convolution (the caller then uses deepcnn's own).
#[derive(Debug, Clone, thiserror::Error)]
#[error("oneDNN: {0}")]
pub struct OneDnnError(String);

impl OneDnnError {
    /// Whether oneDNN, or the shim around it, ran out of memory (oneDNN's status 1,
    /// `dnnl_out_of_memory`, or C++'s `std::bad_alloc`).
    pub fn is_out_of_memory(&self) -> bool {
        self.0.contains("oneDNN status 1:") || self.0.contains("bad_alloc")
    }
}

static DISABLED: AtomicBool = AtomicBool::new(false);
static BF16: AtomicBool = AtomicBool::new(false);

/// Convolutions in bf16 with f32 accumulation (`--precision bf16`) from now on, in the whole
/// process, or in f32 again. Everything else (weights, Adam, batch normalization, the loss)
/// stays f32.
pub fn set_bf16(on: bool) {
    BF16.store(on, Ordering::Relaxed);
}

pub fn is_bf16() -> bool {
    BF16.load(Ordering::Relaxed)
}

/// Uses deepcnn's im2col + GEMM convolutions instead of oneDNN's from now on (or oneDNN's
/// again), in the whole process: the A/B of `deepcnn bench --burn-ops onednn`.
pub fn set_enabled(enabled: bool) {
    DISABLED.store(!enabled, Ordering::Relaxed);
}

pub fn is_enabled() -> bool {
    !DISABLED.load(Ordering::Relaxed)
}

/// Whether oneDNN runs its AVX-512 kernels here (the CPU has AVX-512 and `DNNL_MAX_CPU_ISA`
/// does not forbid it).
pub fn has_avx512() -> bool {
    /// `dnnl_cpu_isa_avx512_core`: a bit mask that holds those of the ISAs below it.
    const AVX512_CORE: c_int = 0x27;
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: a query without arguments.
    *HAS.get_or_init(|| unsafe { ffi::dnnl_get_effective_cpu_isa() } & AVX512_CORE == AVX512_CORE)
}

/// The implementations oneDNN picks for a small bf16 convolution's three passes, without
/// switching the process to bf16: whether this CPU (and `DNNL_MAX_CPU_ISA`) has bf16 kernels.
pub fn bf16_implementations() -> Result<[String; 3], OneDnnError> {
    let probe =
        ConvGeometry { batch: 2, c_in: 16, h: 8, w: 8, c_out: 16, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1] };
    implementations(&probe, true, Layout::Nchw)
}

/// Whether oneDNN has bf16 convolution kernels here, not only its slow reference code.
pub fn has_bf16_kernels() -> bool {
    bf16_implementations().is_ok_and(|names| names.iter().all(|n| !n.starts_with("ref")))
}

/// Whether oneDNN has fast kernels (not its reference code, nor im2col + GEMM) for convolutions
/// of channels-last inputs here, in the process's precision.
pub fn has_channels_last_kernels() -> bool {
    static HAS: [std::sync::OnceLock<bool>; 2] = [const { std::sync::OnceLock::new() }; 2];
    let bf16 = is_bf16();
    *HAS[usize::from(bf16)].get_or_init(|| {
        let probe =
            ConvGeometry { batch: 2, c_in: 32, h: 8, w: 8, c_out: 16, kh: 3, kw: 3, stride: [1, 1], padding: [1, 1] };
        implementations(&probe, bf16, Layout::ChannelsLast)
            .is_ok_and(|names| names.iter().all(|n| !n.starts_with("ref") && !n.starts_with("gemm")))
    })
}

/// GFLOP/s of oneDNN's n×n×n matrix product on all its threads, in fp32 or with bf16 inputs
/// (f32 output), best of `reps` runs: the machine's peak for this kind of work.
pub fn gemm_gflops(n: usize, bf16: bool, reps: usize) -> Result<f64, OneDnnError> {
    let size = |v: usize| c_int::try_from(v).map_err(|_| OneDnnError(format!("a size of {v} is too large")));
    let mut seconds = 0.0f64;
    // SAFETY: the shim writes one f64 through the pointer, which outlives the call.
    status(unsafe { ffi::dcnn_gemm_seconds(size(n)?, c_int::from(bf16), size(reps)?, &mut seconds) })?;
    Ok(2.0 * (n as f64).powi(3) / seconds / 1e9)
}

/// The shim's geometry arguments, each checked to fit a C int, the precision, and the layout
/// of the activations (X, Y and their gradients).
fn dims(g: &ConvGeometry, bf16: bool, layout: Layout) -> Result<ffi::Geometry, OneDnnError> {
    let all = [g.batch, g.c_in, g.h, g.w, g.c_out, g.kh, g.kw, g.stride[0], g.stride[1], g.padding[0], g.padding[1]];
    let mut out = [0; 13];
    for (o, v) in out.iter_mut().zip(all) {
        *o = c_int::try_from(v).map_err(|_| OneDnnError(format!("a size of {v} is too large")))?;
    }
    out[11] = c_int::from(bf16);
    out[12] = c_int::from(layout == Layout::ChannelsLast);
    Ok(out)
}

fn check_len(what: &str, got: usize, want: usize) -> Result<(), OneDnnError> {
    if got == want {
        Ok(())
    } else {
        Err(OneDnnError(format!("{what} has {got} values, the geometry needs {want}")))
    }
}

fn status(code: c_int) -> Result<(), OneDnnError> {
    if code == 0 {
        return Ok(());
    }
    // SAFETY: the shim returns a NUL-terminated string that lives until this thread's next
    // failing call; it is copied at once.
    let message = unsafe { CStr::from_ptr(ffi::dcnn_last_error()) }.to_string_lossy().into_owned();
    Err(OneDnnError(message))
}

/// A buffer of `len` floats that `shim_call` fills, without zeroing it first: the shim writes
/// every element of its outputs, and zeroing them was 3–5% of a ResNet-18 or DenseNet step.
/// The buffer becomes a `Vec` only once the shim has said it succeeded.
fn filled_by_shim(len: usize, shim_call: impl FnOnce(*mut f32) -> c_int) -> Result<Vec<f32>, OneDnnError> {
    let mut buffer = Vec::with_capacity(len);
    status(shim_call(buffer.as_mut_ptr()))?;
    // SAFETY: the capacity is `len`, and on success the shim has written all `len` elements.
    unsafe { buffer.set_len(len) };
    Ok(buffer)
}

fn weight_len(g: &ConvGeometry) -> usize {
    g.c_out * g.c_in * g.kh * g.kw
}

/// Y = conv(X, W) + b: X N×Cin×H×W, W Cout×Cin×kh×kw, b Cout, Y N×Cout×H'×W', in the
/// process's precision ([`set_bf16`]).
pub fn forward(x: &[f32], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Result<Vec<f32>, OneDnnError> {
    forward_in(x, weight, bias, g, is_bf16(), Layout::Nchw)
}

/// [`forward`], in bf16 (inputs rounded to bf16, f32 accumulation) or f32, with X and Y in
/// `layout`.
pub fn forward_in(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &ConvGeometry,
    bf16: bool,
    layout: Layout,
) -> Result<Vec<f32>, OneDnnError> {
    let d = dims(g, bf16, layout)?;
    check_len("the input", x.len(), g.batch * g.c_in * g.h * g.w)?;
    check_len("the weight", weight.len(), weight_len(g))?;
    check_len("the bias", bias.len(), g.c_out)?;
    // SAFETY: every buffer has the length the geometry gives it (checked above), which is all
    // the shim reads or writes.
    filled_by_shim(g.batch * g.c_out * g.out_h() * g.out_w(), |y| unsafe {
        ffi::dcnn_conv2d_forward(x.as_ptr(), weight.as_ptr(), bias.as_ptr(), y, std::ptr::null_mut(), d.as_ptr())
    })
}

/// [`forward_in`] in bf16 with channels-last X and Y, which also gives the bf16 copy of X the
/// convolution read (N×H×W×Cin): what [`backward_from_kept_input`] needs of X, at half the
/// memory and without converting X again.
pub fn forward_keeping_input(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    g: &ConvGeometry,
) -> Result<(Vec<f32>, Vec<bf16>), OneDnnError> {
    let d = dims(g, true, Layout::ChannelsLast)?;
    check_len("the input", x.len(), g.batch * g.c_in * g.h * g.w)?;
    check_len("the weight", weight.len(), weight_len(g))?;
    check_len("the bias", bias.len(), g.c_out)?;
    let mut kept: Vec<bf16> = Vec::with_capacity(x.len());
    // SAFETY: as in `forward_in`; `kept` has room for x.len() values, all of which the shim
    // writes on success (bf16 is a u16).
    let y = filled_by_shim(g.batch * g.c_out * g.out_h() * g.out_w(), |y| unsafe {
        let kept = kept.as_mut_ptr().cast::<u16>();
        ffi::dcnn_conv2d_forward(x.as_ptr(), weight.as_ptr(), bias.as_ptr(), y, kept, d.as_ptr())
    })?;
    // SAFETY: the call succeeded, so all x.len() values were written.
    unsafe { kept.set_len(x.len()) };
    Ok((y, kept))
}

/// [`forward_in`] in bf16 with channels-last X and Y from X already in bf16 (N×H×W×Cin): no
/// conversion at all; the backward reads the same X ([`backward_from_kept_input`]).
pub fn forward_from_bf16(x: &[bf16], weight: &[f32], bias: &[f32], g: &ConvGeometry) -> Result<Vec<f32>, OneDnnError> {
    let d = dims(g, true, Layout::ChannelsLast)?;
    check_len("the input", x.len(), g.batch * g.c_in * g.h * g.w)?;
    check_len("the weight", weight.len(), weight_len(g))?;
    check_len("the bias", bias.len(), g.c_out)?;
    // SAFETY: as in `forward_in` (bf16 is a u16; the shim only reads x).
    filled_by_shim(g.batch * g.c_out * g.out_h() * g.out_w(), |y| unsafe {
        let x = x.as_ptr().cast::<u16>().cast_mut();
        ffi::dcnn_conv2d_forward(std::ptr::null(), weight.as_ptr(), bias.as_ptr(), y, x, d.as_ptr())
    })
}

/// ∂X of [`forward`], given W and ∂Y, both activations in `layout`, in bf16 or f32 (one pass
/// of [`backward_in`]).
pub fn backward_data_in(
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    bf16: bool,
    layout: Layout,
) -> Result<Vec<f32>, OneDnnError> {
    let d = dims(g, bf16, layout)?;
    check_len("the weight", weight.len(), weight_len(g))?;
    check_len("the output gradient", dy.len(), g.batch * g.c_out * g.out_h() * g.out_w())?;
    // SAFETY: as in `forward_in`.
    filled_by_shim(g.batch * g.c_in * g.h * g.w, |dx| unsafe {
        ffi::dcnn_conv2d_backward_data(weight.as_ptr(), dy.as_ptr(), dx, d.as_ptr())
    })
}

/// ∂W and ∂b of [`forward`], given X and ∂Y in `layout`, in bf16 or f32 (one pass of
/// [`backward_in`]).
pub fn backward_weights_in(
    x: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    bf16: bool,
    layout: Layout,
) -> Result<(Vec<f32>, Vec<f32>), OneDnnError> {
    let d = dims(g, bf16, layout)?;
    check_len("the input", x.len(), g.batch * g.c_in * g.h * g.w)?;
    check_len("the output gradient", dy.len(), g.batch * g.c_out * g.out_h() * g.out_w())?;
    let mut db = vec![0.0f32; g.c_out];
    // SAFETY: as in `forward_in`.
    let dw = filled_by_shim(weight_len(g), |dw| unsafe {
        ffi::dcnn_conv2d_backward_weights(x.as_ptr(), dy.as_ptr(), dw, db.as_mut_ptr(), d.as_ptr())
    })?;
    Ok((dw, db))
}

/// Both backward passes of [`forward`]: ∂X where `input_grad`, ∂W and ∂b, in bf16 or f32,
/// from X and ∂Y, the activations all in `layout`, with ∂Y brought into oneDNN's layout once
/// for both.
#[allow(clippy::type_complexity)]
pub fn backward_in(
    x: &[f32],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
    bf16: bool,
    layout: Layout,
) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>), OneDnnError> {
    backward_of(Input::F32(x), weight, dy, g, input_grad, bf16, layout)
}

/// [`backward_in`] in bf16 with channels-last activations, from the copy of X that
/// [`forward_keeping_input`] kept.
#[allow(clippy::type_complexity)]
pub fn backward_from_kept_input(
    x: &[bf16],
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>), OneDnnError> {
    backward_of(Input::KeptBf16(x), weight, dy, g, input_grad, true, Layout::ChannelsLast)
}

/// X as a backward pass gets it.
#[derive(Clone, Copy)]
enum Input<'a> {
    F32(&'a [f32]),
    KeptBf16(&'a [bf16]),
}

#[allow(clippy::type_complexity)]
fn backward_of(
    x: Input,
    weight: &[f32],
    dy: &[f32],
    g: &ConvGeometry,
    input_grad: bool,
    bf16: bool,
    layout: Layout,
) -> Result<(Option<Vec<f32>>, Vec<f32>, Vec<f32>), OneDnnError> {
    let d = dims(g, bf16, layout)?;
    let (x_f32, x_bf16, x_len) = match x {
        Input::F32(x) => (x.as_ptr(), std::ptr::null(), x.len()),
        Input::KeptBf16(x) => (std::ptr::null(), x.as_ptr().cast::<u16>(), x.len()),
    };
    check_len("the input", x_len, g.batch * g.c_in * g.h * g.w)?;
    check_len("the weight", weight.len(), weight_len(g))?;
    check_len("the output gradient", dy.len(), g.batch * g.c_out * g.out_h() * g.out_w())?;
    let mut dx: Vec<f32> = Vec::with_capacity(if input_grad { x_len } else { 0 });
    let dx_ptr = if input_grad { dx.as_mut_ptr() } else { std::ptr::null_mut() };
    let mut db = vec![0.0f32; g.c_out];
    // SAFETY: as in `forward_in`; dx, when asked for, has room for x_len values, all of
    // which the shim writes on success.
    let dw = filled_by_shim(weight_len(g), |dw| unsafe {
        ffi::dcnn_conv2d_backward(x_f32, x_bf16, weight.as_ptr(), dy.as_ptr(), dx_ptr, dw, db.as_mut_ptr(), d.as_ptr())
    })?;
    let dx = input_grad.then(|| {
        // SAFETY: the call succeeded, so all x_len values were written.
        unsafe { dx.set_len(x_len) };
        dx
    });
    Ok((dx, dw, db))
}

/// The implementation oneDNN chose for each pass of `g` (forward, ∂X, ∂W) in bf16 or f32 with
/// the activations in `layout`, e.g. `jit:avx512_core`, for logs and checks.
pub fn implementations(g: &ConvGeometry, bf16: bool, layout: Layout) -> Result<[String; 3], OneDnnError> {
    let d = dims(g, bf16, layout)?;
    let name = |pass: c_int| -> Result<String, OneDnnError> {
        // SAFETY: the shim returns NULL or a NUL-terminated string that lives as long as the
        // process.
        let p: *const c_char = unsafe { ffi::dcnn_conv2d_impl(pass, d.as_ptr()) };
        if p.is_null() {
            status(-1)?;
        }
        Ok(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    };
    Ok([name(0)?, name(1)?, name(2)?])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::conv;
    use crate::test_util::{max_diff, pattern as values};
    use Layout::Nchw as N;

    fn geometry(
        batch: usize,
        c_in: usize,
        h: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
    ) -> ConvGeometry {
        ConvGeometry { batch, c_in, h, w: h + 1, c_out, kh: k, kw: k, stride: [stride; 2], padding: [pad; 2] }
    }

    /// Every pass agrees with deepcnn's own im2col + GEMM convolution (itself tested against
    /// the definition) to float rounding, on the networks' kinds of layer.
    #[test]
    fn every_pass_matches_deepcnns_own_convolution() {
        for g in [
            geometry(2, 3, 7, 4, 3, 1, 1),
            geometry(3, 5, 9, 6, 3, 2, 1),
            geometry(2, 1, 28, 64, 7, 2, 3),
            geometry(2, 64, 7, 128, 1, 2, 0),
            geometry(2, 16, 5, 8, 5, 1, 2),
        ] {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(weight_len(&g), 2);
            let b = values(g.c_out, 3);
            let dy = values(g.batch * g.c_out * g.out_h() * g.out_w(), 4);
            let want_y = conv::gemm_forward(&x, &w, &b, &g);
            let (want_dx, want_dw, want_db) = conv::gemm_backward(&x, &w, &dy, &g);
            assert!(max_diff(&forward_in(&x, &w, &b, &g, false, N).unwrap(), &want_y) < 1e-4, "{g:?}");
            assert!(max_diff(&backward_data_in(&w, &dy, &g, false, N).unwrap(), &want_dx) < 1e-4, "{g:?}");
            let (dw, db) = backward_weights_in(&x, &dy, &g, false, N).unwrap();
            assert!(max_diff(&dw, &want_dw) < 1e-3 && max_diff(&db, &want_db) < 1e-3, "{g:?}");
            // The same inputs give the same bits (at a fixed thread count).
            assert_eq!(backward_weights_in(&x, &dy, &g, false, N).unwrap().0, dw);
        }
    }

    /// All activations channels-last (oneDNN's NHWC kernels, no reorder) give the NCHW passes'
    /// values, in f32 and bf16.
    #[test]
    fn channels_last_activations_give_the_same_passes() {
        use crate::kernels::layout::{to_channels_last, to_nchw};
        let bf16_too = has_bf16_kernels();
        for g in [geometry(2, 32, 7, 16, 3, 1, 1), geometry(3, 16, 9, 32, 3, 2, 1), geometry(2, 24, 6, 12, 1, 1, 0)] {
            let (s, s_out) = (g.h * g.w, g.out_h() * g.out_w());
            let x = values(g.batch * g.c_in * s, 1);
            let (w, b) = (values(weight_len(&g), 2), values(g.c_out, 3));
            let dy = values(g.batch * g.c_out * s_out, 4);
            let (x_last, dy_last) =
                (to_channels_last(&x, g.batch, g.c_in, s), to_channels_last(&dy, g.batch, g.c_out, s_out));
            for bf16 in [false, true].into_iter().filter(|&b| !b || bf16_too) {
                let what = format!("{g:?} bf16 {bf16}");
                let y = forward_in(&x_last, &w, &b, &g, bf16, Layout::ChannelsLast).unwrap();
                let y = to_nchw(&y, g.batch, g.c_out, s_out);
                assert!(max_diff(&y, &forward_in(&x, &w, &b, &g, bf16, N).unwrap()) < 1e-4, "{what}: Y");
                let (dx, dw, db) = backward_in(&x_last, &w, &dy_last, &g, true, bf16, Layout::ChannelsLast).unwrap();
                let (want_dx, want_dw, want_db) = backward_in(&x, &w, &dy, &g, true, bf16, N).unwrap();
                let dx = to_nchw(&dx.unwrap(), g.batch, g.c_in, s);
                assert!(max_diff(&dx, &want_dx.unwrap()) < 1e-4, "{what}: ∂X");
                assert!(max_diff(&dw, &want_dw) < 1e-3 && max_diff(&db, &want_db) < 1e-3, "{what}: ∂W, ∂b");
            }
        }
        let names = implementations(&geometry(2, 32, 7, 16, 3, 1, 1), false, Layout::ChannelsLast).unwrap();
        assert!(names.iter().all(|n| !n.is_empty()), "{names:?}");
    }

    /// The bf16 copy of X the forward keeps is X rounded to bf16, and the passes from it (or
    /// from X given in bf16) give the bits of the passes from X itself (the same rounding,
    /// done once instead of two or three times).
    #[test]
    fn the_kept_bf16_input_gives_the_same_bits() {
        if !has_bf16_kernels() {
            return;
        }
        for g in [geometry(2, 32, 7, 16, 3, 1, 1), geometry(3, 16, 9, 32, 3, 2, 1), geometry(2, 24, 6, 12, 1, 1, 0)] {
            let last = Layout::ChannelsLast;
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let (w, b) = (values(weight_len(&g), 2), values(g.c_out, 3));
            let dy = values(g.batch * g.c_out * g.out_h() * g.out_w(), 4);
            let (y, kept) = forward_keeping_input(&x, &w, &b, &g).unwrap();
            assert_eq!(y, forward_in(&x, &w, &b, &g, true, last).unwrap(), "{g:?}: Y");
            assert_eq!(forward_from_bf16(&kept, &w, &b, &g).unwrap(), y, "{g:?}: Y from bf16 X");
            assert!(kept.iter().zip(&x).all(|(k, &v)| *k == bf16::from_f32(v)), "{g:?}: the kept X");
            for input_grad in [true, false] {
                let want = backward_in(&x, &w, &dy, &g, input_grad, true, last).unwrap();
                assert_eq!(backward_from_kept_input(&kept, &w, &dy, &g, input_grad).unwrap(), want, "{g:?}");
            }
        }
        // The f32 path has no bf16 copy to keep: refused, not computed wrongly.
        let g = geometry(2, 32, 7, 16, 3, 1, 1);
        let kept = vec![bf16::ZERO; g.batch * g.c_in * g.h * g.w];
        let dy = vec![0.0; g.batch * g.c_out * g.out_h() * g.out_w()];
        let refused =
            backward_of(Input::KeptBf16(&kept), &values(weight_len(&g), 2), &dy, &g, true, false, Layout::Nchw);
        assert!(refused.is_err_and(|e| e.to_string().contains("bf16 copy")));
    }

    /// Both passes in one call (∂Y reordered once) give the bits of the passes one by one.
    #[test]
    fn both_backward_passes_at_once_equal_the_passes_one_by_one() {
        let bf16_too = has_bf16_kernels();
        for g in [geometry(2, 32, 7, 16, 3, 1, 1), geometry(3, 16, 9, 32, 3, 2, 1), geometry(2, 1, 28, 64, 7, 2, 3)] {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(weight_len(&g), 2);
            let dy = values(g.batch * g.c_out * g.out_h() * g.out_w(), 4);
            for bf16 in [false, true].into_iter().filter(|&b| !b || bf16_too) {
                let (dx, dw, db) = backward_in(&x, &w, &dy, &g, true, bf16, N).unwrap();
                assert_eq!(dx.unwrap(), backward_data_in(&w, &dy, &g, bf16, N).unwrap(), "{g:?} bf16 {bf16}: ∂X");
                assert_eq!((dw.clone(), db.clone()), backward_weights_in(&x, &dy, &g, bf16, N).unwrap(), "{g:?}: ∂W");
                let (no_dx, dw2, db2) = backward_in(&x, &w, &dy, &g, false, bf16, N).unwrap();
                assert!(no_dx.is_none() && dw2 == dw && db2 == db, "{g:?} bf16 {bf16}: without ∂X");
            }
        }
    }

    /// A 1×1 convolution's weight gradient in bf16 with channels-last activations (a matrix
    /// product in the shim) is the f32 one to bf16's rounding, the same bits again, and the
    /// same with or without ∂X, from X in f32 or its kept bf16 copy.
    #[test]
    fn a_one_by_one_weight_gradient_in_bf16_is_the_f32_one_rounded() {
        if !has_bf16_kernels() {
            return;
        }
        let last = Layout::ChannelsLast;
        for g in [geometry(3, 24, 6, 12, 1, 1, 0), geometry(2, 40, 5, 20, 1, 1, 0)] {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let (w, b) = (values(weight_len(&g), 2), values(g.c_out, 3));
            let dy = values(g.batch * g.c_out * g.h * g.w, 4);
            let names = implementations(&g, true, last).unwrap();
            assert!(names[2].starts_with("matmul:"), "{g:?}: the weight gradient is {}", names[2]);
            assert!(!implementations(&g, true, Layout::Nchw).unwrap()[2].starts_with("matmul:"));
            let (dw, db) = backward_weights_in(&x, &dy, &g, true, last).unwrap();
            let (dw32, db32) = backward_weights_in(&x, &dy, &g, false, last).unwrap();
            let l = (g.batch * g.h * g.w) as f32;
            let (diff, diff_b) = (max_diff(&dw, &dw32), max_diff(&db, &db32));
            assert!(diff > 0.0 && diff < l * 2f32.powi(-7), "{g:?}: ∂W {diff}");
            assert!(diff_b < l * 2f32.powi(-7), "{g:?}: ∂b {diff_b}");
            assert_eq!(backward_weights_in(&x, &dy, &g, true, last).unwrap(), (dw.clone(), db.clone()), "{g:?}: again");
            let (_, kept) = forward_keeping_input(&x, &w, &b, &g).unwrap();
            for input_grad in [true, false] {
                let (_, dw_kept, db_kept) = backward_from_kept_input(&kept, &w, &dy, &g, input_grad).unwrap();
                assert_eq!((dw_kept, db_kept), (dw.clone(), db.clone()), "{g:?}: from the kept X, ∂X {input_grad}");
            }
        }
    }

    /// Where a tap of the kernel never meets the image (a 1×1 image under a 3×3 kernel with
    /// stride 2), its weight gradient is 0, not whatever the memory held: oneDNN's bf16 AMX
    /// kernel sums parts of them from its scratchpad that it never writes, so the scratchpad
    /// must start at zero. The heap is dirtied first so that stale values would show.
    #[test]
    fn taps_that_never_meet_the_image_get_a_zero_weight_gradient() {
        let bf16_too = has_bf16_kernels();
        for (c_out, bf16) in [(20, false), (24, true)].into_iter().filter(|&(_, b)| !b || bf16_too) {
            // A geometry of this test alone, so that its buffers are made here.
            let g =
                ConvGeometry { batch: 3, c_in: 8, h: 1, w: 1, c_out, kh: 3, kw: 3, stride: [2, 2], padding: [1, 1] };
            for _ in 0..8 {
                drop(std::hint::black_box(vec![1e30f32; 1 << 16]));
            }
            let x = values(g.batch * g.c_in, 1);
            let dy = values(g.batch * g.c_out, 4);
            let (dw, _) = backward_weights_in(&x, &dy, &g, bf16, N).unwrap();
            let off_tap: Vec<f32> = dw.iter().enumerate().filter(|(i, _)| i % 9 != 4).map(|(_, &v)| v).collect();
            assert!(off_tap.iter().all(|&v| v == 0.0), "bf16 {bf16}: {:?}", &off_tap[..8]);
        }
    }

    #[test]
    fn buffers_that_do_not_fit_the_geometry_are_refused() {
        let g = geometry(1, 2, 4, 3, 3, 1, 1);
        let e = forward(&[0.0; 5], &values(weight_len(&g), 0), &[0.0; 3], &g).unwrap_err().to_string();
        assert!(e.contains("the input has 5 values, the geometry needs 40"), "{e}");
        let huge = ConvGeometry { batch: 1 << 40, ..g };
        assert!(forward(&[], &[], &[], &huge).unwrap_err().to_string().contains("too large"));
    }

    #[test]
    fn out_of_memory_is_told_from_other_failures() {
        let oom = OneDnnError("dcnn_conv2d_forward: oneDNN status 1: could not create a memory object".into());
        let bad_alloc = OneDnnError("dcnn_conv2d_forward: std::bad_alloc".into());
        let other = OneDnnError("dcnn_conv2d_forward: oneDNN status 3: could not create a primitive".into());
        assert!(oom.is_out_of_memory() && bad_alloc.is_out_of_memory() && !other.is_out_of_memory());
    }

    #[test]
    fn names_its_implementations() {
        let names = implementations(&geometry(2, 64, 7, 64, 3, 1, 1), false, N).unwrap();
        assert!(names.iter().all(|n| !n.is_empty()), "{names:?}");
    }

    /// In bf16 each pass is the f32 convolution of the inputs rounded to bf16 (8 significant
    /// bits), accumulated in f32: within bf16's rounding of f32, and not equal to f32.
    #[test]
    fn bf16_passes_are_the_f32_passes_to_bf16_rounding() {
        if !has_bf16_kernels() {
            eprintln!("skipped: this CPU has no bf16 convolution kernels (AVX512_BF16 or AMX)");
            return;
        }
        for g in [geometry(4, 16, 9, 32, 3, 1, 1), geometry(2, 1, 28, 64, 7, 2, 3), geometry(2, 64, 7, 128, 1, 2, 0)] {
            let x = values(g.batch * g.c_in * g.h * g.w, 1);
            let w = values(weight_len(&g), 2);
            let b = values(g.c_out, 3);
            let dy = values(g.batch * g.c_out * g.out_h() * g.out_w(), 4);
            // A sum of K products of values below 1, each rounded to 2^-8 relative: K·2^-7.
            let k = (g.c_in * g.kh * g.kw) as f32;
            let tolerance = k * 2f32.powi(-7);
            let pairs = [
                (forward_in(&x, &w, &b, &g, true, N).unwrap(), forward_in(&x, &w, &b, &g, false, N).unwrap()),
                (backward_data_in(&w, &dy, &g, true, N).unwrap(), backward_data_in(&w, &dy, &g, false, N).unwrap()),
            ];
            for (bf16, f32) in &pairs {
                let diff = max_diff(bf16, f32);
                assert!(diff < tolerance && diff > 0.0, "{g:?}: {diff} (tolerance {tolerance})");
            }
            let (dw16, _) = backward_weights_in(&x, &dy, &g, true, N).unwrap();
            let (dw32, _) = backward_weights_in(&x, &dy, &g, false, N).unwrap();
            let l = (g.batch * g.out_h() * g.out_w()) as f32;
            let diff = max_diff(&dw16, &dw32);
            assert!(diff < l * 2f32.powi(-7) && diff > 0.0, "{g:?}: ∂W {diff}");
        }
    }
}
