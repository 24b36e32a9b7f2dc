//! Where the tensors live: the CPU (burn's `flex` backend, with deepcnn's kernels) or, in a
//! build with the `vulkan` cargo feature, a GPU through burn's Vulkan backend (burn's own
//! operations, fused and autotuned by CubeCL). Training, evaluation and prediction give the same
//! results on both, to float rounding.

use std::fmt;

use burn::prelude::*;

/// The `--device` of the commands that compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ComputeDevice {
    /// The CPU, on all its cores.
    #[default]
    Cpu,
    /// The first GPU that Vulkan finds (needs a build with `--features vulkan`).
    Vulkan,
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ComputeDevice::Cpu => "cpu",
            ComputeDevice::Vulkan => "vulkan",
        })
    }
}

/// The `--precision` of the commands that compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Precision {
    /// Everything in f32.
    #[default]
    Fp32,
    /// Convolutions read bf16 inputs and accumulate in f32 (mixed precision, as PyTorch's
    /// autocast); weights, Adam's state, batch normalization's arithmetic and statistics and the
    /// loss stay f32, and so do checkpoints; DenseNet's concatenations are kept in bf16. On the
    /// CPU, where it has bf16 instructions (AVX512_BF16 or AMX).
    Bf16,
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Precision::Fp32 => "fp32",
            Precision::Bf16 => "bf16",
        })
    }
}

impl Precision {
    /// Computes in this precision from now on, in the whole process; refuses bf16 where it
    /// cannot run fast: on the GPU, or on a CPU (or a `DNNL_MAX_CPU_ISA`) for which oneDNN has
    /// no bf16 convolution kernel (it would fall back to its slow reference code).
    pub fn apply(self, device: ComputeDevice) -> Result<(), DeviceError> {
        use crate::kernels::onednn;
        onednn::set_bf16(self == Precision::Bf16);
        if self == Precision::Fp32 {
            return Ok(());
        }
        if device != ComputeDevice::Cpu {
            onednn::set_bf16(false);
            return Err(DeviceError::Bf16NotHere(
                "--precision bf16 is for the CPU (oneDNN's bf16 convolutions)".into(),
            ));
        }
        match onednn::bf16_implementations() {
            Ok(names) if names.iter().all(|n| !n.starts_with("ref")) => Ok(()),
            result => {
                onednn::set_bf16(false);
                let found = match result {
                    Ok(names) => format!("only its reference code ({})", names.join(", ")),
                    Err(e) => e.to_string(),
                };
                Err(DeviceError::Bf16NotHere(format!(
                    "this CPU has no bf16 convolution kernels in oneDNN ({found}); bf16 needs AVX512_BF16 or AMX \
                     (this CPU's flags: {}{})",
                    bf16_flags(),
                    std::env::var("DNNL_MAX_CPU_ISA")
                        .map(|isa| format!("; DNNL_MAX_CPU_ISA={isa}"))
                        .unwrap_or_default()
                )))
            }
        }
    }
}

/// The CPU's bf16 flags from /proc/cpuinfo, or "none".
fn bf16_flags() -> String {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("flags"))
        .map(|l| l.split_whitespace().filter(|f| matches!(*f, "avx512_bf16" | "amx_bf16")).collect())
        .unwrap_or_default();
    if flags.is_empty() {
        "none".into()
    } else {
        flags.join(", ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("{0}")]
    Bf16NotHere(String),
    #[error(
        "this deepcnn was built without Vulkan support; build it with `cargo build --release --features vulkan` \
         to use --device vulkan"
    )]
    NotBuilt,
    #[error(
        "no usable Vulkan device: {0} (is a Vulkan driver installed? `vulkaninfo --summary` lists what Vulkan sees)"
    )]
    Unavailable(String),
}

impl ComputeDevice {
    /// Whether this build can use the device at all.
    pub fn is_built(self) -> bool {
        match self {
            ComputeDevice::Cpu => true,
            ComputeDevice::Vulkan => cfg!(feature = "vulkan"),
        }
    }

    /// The burn device, checked to work: for Vulkan, a tensor makes the round trip to the GPU
    /// and back, so a missing driver is reported here rather than as a panic mid-training.
    pub fn open(self) -> Result<Device, DeviceError> {
        match self {
            ComputeDevice::Cpu => Ok(Device::flex()),
            ComputeDevice::Vulkan => open_vulkan(),
        }
    }
}

#[cfg(feature = "vulkan")]
fn open_vulkan() -> Result<Device, DeviceError> {
    use std::panic;

    // wgpu reports a missing adapter by panicking in the runtime's set-up; catch it once here,
    // without the default hook's backtrace, and turn it into an error.
    let hook = panic::take_hook();
    panic::set_hook(Box::new(|_| {}));
    let probe = panic::catch_unwind(|| {
        let device = Device::vulkan(burn::tensor::DeviceKind::DefaultDevice);
        let back = Tensor::<1>::from_floats([1.0, 2.0], &device).sum().into_scalar::<f32>();
        (device, back)
    });
    panic::set_hook(hook);
    match probe {
        Ok((device, back)) if back == 3.0 => Ok(device),
        Ok((_, back)) => Err(DeviceError::Unavailable(format!("a test sum came back as {back}, not 3"))),
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the Vulkan runtime failed to start".into());
            Err(DeviceError::Unavailable(message))
        }
    }
}

/// What a GPU device is, for benchmark reports: its name, the float types burn can compute in
/// on it, and the tensor-core (cooperative matrix) shapes CubeCL found, as
/// `a·b→accumulator m×n×k`. Why it matters: PyTorch's fp32 convolutions run in TF32 on the
/// tensor cores, while on Vulkan only the types listed here reach them. `None` for the CPU.
#[cfg(feature = "vulkan")]
pub fn describe_gpu(device: &Device) -> Option<String> {
    use burn::backend::DispatchDevice;
    use burn::tensor::FloatDType;

    let DispatchDevice::Cube(cube) = device.as_dispatch() else {
        return None;
    };
    let client = cube.client();
    let properties = client.properties();
    let name = &properties.identity.name;
    let floats: Vec<&str> = [(FloatDType::F16, "f16"), (FloatDType::BF16, "bf16"), (FloatDType::F32, "f32")]
        .into_iter()
        .filter(|(dtype, _)| device.supports_dtype(*dtype))
        .map(|(_, name)| name)
        .collect();
    let cmma: Vec<String> = properties
        .features
        .matmul
        .cmma
        .iter()
        .map(|c| format!("{}·{}→{} {}×{}×{}", c.a_type, c.b_type, c.cd_type, c.m, c.n, c.k))
        .collect();
    let cmma = if cmma.is_empty() { "none".to_string() } else { cmma.join(", ") };
    Some(format!("{name}; float types {}; cooperative matrices {cmma}", floats.join(", ")))
}

/// What a GPU device is (see the Vulkan build's version); this build has no GPU.
#[cfg(not(feature = "vulkan"))]
pub fn describe_gpu(_device: &Device) -> Option<String> {
    None
}

#[cfg(not(feature = "vulkan"))]
fn open_vulkan() -> Result<Device, DeviceError> {
    Err(DeviceError::NotBuilt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cpu_is_always_there() {
        let device = ComputeDevice::Cpu.open().unwrap();
        assert_eq!(Tensor::<1>::from_floats([1.0, 2.0], &device).sum().into_scalar::<f32>(), 3.0);
    }

    #[test]
    fn the_cpu_is_not_described_as_a_gpu() {
        assert_eq!(describe_gpu(&Device::flex()), None);
    }

    #[cfg(not(feature = "vulkan"))]
    #[test]
    fn vulkan_without_the_feature_says_how_to_build_it() {
        assert!(!ComputeDevice::Vulkan.is_built());
        let err = ComputeDevice::Vulkan.open().unwrap_err().to_string();
        assert!(err.contains("--features vulkan"), "{err}");
    }
}
