//! Builds the small C++ shim over oneDNN's convolutions (`src/kernels/onednn/shim.cpp`) and
//! links oneDNN, Debian's `libdnnl-dev`. Without it the build stops with one line saying what
//! to install.

use std::path::Path;

fn main() {
    let shim = "src/kernels/onednn/shim.cpp";
    println!("cargo:rerun-if-changed={shim}");
    println!("cargo:rerun-if-changed=src/kernels/onednn/shim.h");
    println!("cargo:rerun-if-env-changed=DNNL_INCLUDE_DIR");
    let include = std::env::var("DNNL_INCLUDE_DIR").unwrap_or_else(|_| "/usr/include".into());
    if !Path::new(&include).join("oneapi/dnnl/dnnl.hpp").is_file() {
        eprintln!(
            "error: deepcnn needs oneDNN (no oneapi/dnnl/dnnl.hpp in {include}): install it with \
             `apt-get install -y libdnnl-dev`, or set DNNL_INCLUDE_DIR"
        );
        std::process::exit(1);
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(2)
        .include(&include)
        .file(shim)
        .warnings(false)
        .compile("deepcnn_onednn_shim");
    println!("cargo:rustc-link-lib=dnnl");
}
