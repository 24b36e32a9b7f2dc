//! Weights to and from PyTorch: the book's networks under the module names of its PyTorch
//! code (`bench/book_pytorch.py`).

pub mod onnx;
pub mod pytorch;

pub use onnx::export_onnx;
pub use pytorch::{export_safetensors, import_state_dict, torch_key, InteropError};
