//! PyTorch `state_dict` ↔ deepcnn network, with the keys and layouts each network's file
//! declares ([`crate::models::torch_names`]).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use burn::prelude::*;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::pytorch::PytorchReader;
use burn::store::ModuleSnapshot;
use burn::tensor::{Bytes, DType};
use safetensors::{Dtype, SafeTensors};

use crate::models::torch_names::{TorchLayout, TorchName};
use crate::models::{ModelKind, Network};

#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", .path.display())]
pub struct InteropError {
    pub path: PathBuf,
    pub reason: String,
}

/// The PyTorch key of the deepcnn tensor at burn `path` in a `kind` network (each network's
/// file declares them: [`crate::models::NetworkSpec::torch_name`]).
pub fn torch_key(kind: ModelKind, path: &str) -> Option<String> {
    kind.torch_name(path).map(|name| name.key)
}

/// The PyTorch key and layout of the tensor at `path`: every tensor of a network has one.
fn torch_name(kind: ModelKind, path: &str) -> TorchName {
    kind.torch_name(path).unwrap_or_else(|| panic!("{kind} declares no PyTorch name for {path}"))
}

/// A tensor as read from a PyTorch file: its shape, and its values as f32 where it holds
/// floating-point numbers (f64, f32, f16 and bf16 are converted), or the name of its type.
struct TorchTensor {
    shape: Vec<usize>,
    values: Result<Vec<f32>, String>,
}

/// What deepcnn writes into the metadata of a `.safetensors` export, and reads back on import.
pub const METADATA_MODEL: &str = "deepcnn.model";
pub const METADATA_IMAGE_SIZE: &str = "deepcnn.image_size";

/// A PyTorch file's tensors and, for a deepcnn export, the network and image size it records.
pub struct TorchFile {
    tensors: BTreeMap<String, TorchTensor>,
    /// `deepcnn.model` from the metadata, if present.
    pub model: Option<String>,
    /// `deepcnn.image_size` from the metadata, if present.
    pub image_size: Option<String>,
}

impl TorchFile {
    /// Reads a `.safetensors` file or a PyTorch `.pt`/`.pth` state_dict.
    pub fn read(path: &Path) -> Result<Self, InteropError> {
        let error = |reason: String| InteropError { path: path.to_path_buf(), reason };
        let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
        let mut tensors = BTreeMap::new();
        if is_safetensors {
            let bytes = std::fs::read(path).map_err(|e| error(format!("cannot read: {e}")))?;
            return Self::from_safetensors(&bytes).map_err(error);
        } else {
            let reader =
                PytorchReader::new(path).map_err(|e| error(format!("not a readable PyTorch state_dict: {e}")))?;
            for (name, t) in reader.tensors() {
                use burn::store::pytorch_reader::DType as T;
                let bytes = t.read().map_err(|e| error(format!("`{name}`: {e}")))?;
                let values = match t.dtype() {
                    T::F64 => Ok(f64s(&bytes)),
                    T::F32 => Ok(f32s(&bytes)),
                    T::F16 => Ok(f16s(&bytes)),
                    T::BF16 => Ok(bf16s(&bytes)),
                    other => Err(format!("{other:?}").to_lowercase()),
                };
                tensors.insert(name.clone(), TorchTensor { shape: t.shape().to_vec(), values });
            }
        }
        Ok(TorchFile { tensors, model: None, image_size: None })
    }

    /// Reads the bytes of a `.safetensors` file; the error says what is wrong with them.
    pub fn from_safetensors(bytes: &[u8]) -> Result<Self, String> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| format!("not a readable safetensors file: {e}"))?;
        let (_, metadata) =
            SafeTensors::read_metadata(bytes).map_err(|e| format!("not a readable safetensors file: {e}"))?;
        let info = metadata.metadata().as_ref();
        let recorded = |key: &str| info.and_then(|info| info.get(key).cloned());
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let values = match view.dtype() {
                Dtype::F64 => Ok(f64s(view.data())),
                Dtype::F32 => Ok(f32s(view.data())),
                Dtype::F16 => Ok(f16s(view.data())),
                Dtype::BF16 => Ok(bf16s(view.data())),
                other => Err(format!("{other:?}").to_lowercase()),
            };
            tensors.insert(name, TorchTensor { shape: view.shape().to_vec(), values });
        }
        Ok(TorchFile { tensors, model: recorded(METADATA_MODEL), image_size: recorded(METADATA_IMAGE_SIZE) })
    }
}

/// Loads a PyTorch `state_dict` of the book's `kind` network into a deepcnn network on
/// `device`. Every key must be there with the right shape and finite values, and no float key
/// may be left over.
pub fn import_state_dict(kind: ModelKind, path: &Path, device: &Device) -> Result<Network, InteropError> {
    import_tensors(kind, TorchFile::read(path)?, path, device)
}

/// [`import_state_dict`] of a file already read.
pub fn import_tensors(kind: ModelKind, file: TorchFile, path: &Path, device: &Device) -> Result<Network, InteropError> {
    let error = |reason: String| InteropError { path: path.to_path_buf(), reason };
    let mut torch = file.tensors;
    let mut model = Network::new(kind, device);
    let mut tensors = Vec::new();
    for target in model.collect(None, None, false) {
        let TorchName { key, layout } = torch_name(kind, &target.name);
        let source = torch.remove(&key).ok_or_else(|| error(format!("no `{key}`: not a {kind} state_dict")))?;
        let want: Vec<usize> = target.shape.to_vec();
        let expected_torch_shape = layout.torch_shape(&want);
        if source.shape != expected_torch_shape {
            return Err(error(format!(
                "`{key}` has shape {:?}, a {kind} needs {expected_torch_shape:?}",
                source.shape
            )));
        }
        let values = source
            .values
            .map_err(|dtype| error(format!("`{key}` holds {dtype} values; a weight must be floating-point")))?;
        if values.len() != want.iter().product::<usize>() {
            return Err(error(format!("`{key}` has {} values for its shape {:?}", values.len(), source.shape)));
        }
        if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
            return Err(error(format!("`{key}` holds {bad}: a network's weights must be finite numbers")));
        }
        if key.ends_with("running_var") || key.ends_with("moving_var") {
            if let Some(bad) = values.iter().find(|v| **v < 0.0) {
                return Err(error(format!("`{key}` holds {bad}: a variance cannot be negative")));
            }
        }
        let values = match layout {
            TorchLayout::Transposed => transpose(&values, want[1], want[0]),
            _ => values,
        };
        let bytes = Bytes::from_elems(values);
        tensors.push(PackTensor::new(target.name.clone(), DType::F32, want, None, bytes));
    }
    // Only floating-point entries are weights; integer ones (BN's `num_batches_tracked`) are not.
    if let Some(extra) = torch.iter().find(|(_, t)| t.values.is_ok()).map(|(k, _)| k) {
        return Err(error(format!("unexpected `{extra}`: not a {kind} state_dict")));
    }
    let result = model.apply(tensors, None, None, false);
    if !result.errors.is_empty() || !result.missing.is_empty() {
        return Err(error(format!("could not apply the weights: {:?} {:?}", result.errors, result.missing)));
    }
    Ok(model)
}

/// Little-endian f32 values.
fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()
}

/// Little-endian f16 values, as f32.
fn f16s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// Little-endian bf16 values, as f32.
fn bf16s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect()
}

/// Little-endian f64 values, as f32.
fn f64s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(8).map(|b| f64::from_le_bytes(b.try_into().unwrap()) as f32).collect()
}

/// `rows`×`cols` row-major values, transposed.
fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; values.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = values[r * cols + c];
        }
    }
    out
}

/// The network's weights as a safetensors file with the book's PyTorch keys and layouts, which
/// `model.load_state_dict(safetensors.torch.load_file(path))` accepts. PyTorch's built-in BN
/// also has a `num_batches_tracked` counter, which only matters with `momentum=None`; it is
/// written as 0. The metadata records the network and the image size it was trained at, which
/// `import` reads back.
pub fn export_safetensors(kind: ModelKind, model: &Network, image_size: usize) -> Vec<u8> {
    let mut entries: Vec<(String, Vec<usize>, Vec<u8>, Dtype)> = Vec::new();
    let mut builtin_bns = BTreeSet::new();
    for t in model.valid().collect(None, None, false) {
        let TorchName { key, layout } = torch_name(kind, &t.name);
        let shape: Vec<usize> = t.shape.to_vec();
        let bytes = t.to_bytes().expect("tensor bytes").to_vec();
        let torch_shape = layout.torch_shape(&shape);
        let bytes = match layout {
            TorchLayout::Transposed => {
                transpose(&f32s(&bytes), shape[0], shape[1]).iter().flat_map(|v| v.to_le_bytes()).collect()
            }
            _ => bytes,
        };
        if key.ends_with(".running_mean") {
            builtin_bns.insert(key.trim_end_matches("running_mean").to_string());
        }
        entries.push((key, torch_shape, bytes, Dtype::F32));
    }
    for prefix in builtin_bns {
        entries.push((format!("{prefix}num_batches_tracked"), vec![], 0i64.to_le_bytes().to_vec(), Dtype::I64));
    }
    let views: HashMap<String, safetensors::tensor::TensorView> = entries
        .iter()
        .map(|(k, shape, bytes, dtype)| {
            (
                k.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).expect("consistent tensor view"),
            )
        })
        .collect();
    let metadata = HashMap::from([
        (METADATA_MODEL.to_string(), kind.name().to_string()),
        (METADATA_IMAGE_SIZE.to_string(), image_size.to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).expect("serializing to memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_books_pytorch_modules() {
        let cases = [
            (ModelKind::LeNet, "LeNet.conv2.weight", "3.weight"),
            (ModelKind::LeNet, "LeNet.fc3.bias", "11.bias"),
            (ModelKind::LeNetBn, "LeNet.norm1.Builtin.gamma", "1.weight"),
            (ModelKind::LeNetBn, "LeNet.norm4.Builtin.running_var", "13.running_var"),
            (ModelKind::LeNetBnScratch, "LeNet.norm3.Scratch.moving_mean", "10.moving_mean"),
            (ModelKind::LeNetBnScratch, "LeNet.fc1.weight", "9.weight"),
            (ModelKind::ResNet18, "ResNet18.stem.bn.beta", "1.bias"),
            (ModelKind::ResNet18, "ResNet18.stages.0.residuals.0.conv1.weight", "resnet_block1.0.conv1.weight"),
            (ModelKind::ResNet18, "ResNet18.stages.3.residuals.0.conv3.bias", "resnet_block4.0.conv3.bias"),
            (ModelKind::ResNet18, "ResNet18.stages.1.residuals.1.bn2.running_mean", "resnet_block2.1.bn2.running_mean"),
            (ModelKind::ResNet18, "ResNet18.head.fc.weight", "fc.1.weight"),
            (ModelKind::DenseNet, "DenseNet.dense_blocks.2.net.3.bn.gamma", "DenseBlosk_2.net.3.0.weight"),
            (ModelKind::DenseNet, "DenseNet.dense_blocks.0.net.1.conv.weight", "DenseBlosk_0.net.1.2.weight"),
            (ModelKind::DenseNet, "DenseNet.transitions.1.conv.bias", "transition_block_1.2.bias"),
            (ModelKind::DenseNet, "DenseNet.bn.running_var", "BN.running_var"),
        ];
        for (kind, path, key) in cases {
            assert_eq!(torch_key(kind, path).as_deref(), Some(key), "{kind} {path}");
        }
    }

    #[test]
    fn every_tensor_of_every_network_has_a_distinct_pytorch_name() {
        for kind in ModelKind::ALL {
            let net = Network::new(kind, &Device::flex());
            let names: Vec<String> = net.collect(None, None, false).into_iter().map(|t| t.name).collect();
            let keys: BTreeSet<String> =
                names.iter().map(|n| torch_key(kind, n).unwrap_or_else(|| panic!("{n}"))).collect();
            assert_eq!(keys.len(), names.len(), "{kind}: two tensors share a PyTorch key");
        }
    }

    #[test]
    fn export_then_import_gives_the_same_network() {
        let d = Device::flex();
        let dir = tempfile::tempdir().unwrap();
        for kind in [ModelKind::LeNetBnScratch, ModelKind::LeNetBn] {
            let net = Network::new(kind, &d);
            let path = dir.path().join(format!("{kind}.safetensors"));
            std::fs::write(&path, export_safetensors(kind, &net, 28)).unwrap();
            let back = import_state_dict(kind, &path, &d).unwrap();
            let x = Tensor::<4>::random([2, 1, 28, 28], burn::tensor::Distribution::Default, &d);
            let (a, b) = (net.forward(x.clone()).into_data(), back.forward(x).into_data());
            a.assert_approx_eq::<f32>(&b, burn::tensor::Tolerance::absolute(1e-6));
            // A lenet-bn file is not a lenet-bn-scratch one.
            let other = if kind == ModelKind::LeNetBn { ModelKind::LeNetBnScratch } else { ModelKind::LeNetBn };
            let e = import_state_dict(other, &path, &d).unwrap_err().to_string();
            assert!(e.contains("not a") && e.contains(other.name()), "{e}");
        }
    }
}
