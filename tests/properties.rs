//! Property tests of everything that reads user files: on any bytes, and on valid files with
//! random damage, a reader returns a value or an error, never panics, and what it accepts is
//! usable. (The cargo-fuzz targets in `fuzz/` search the same readers far longer.)

use std::path::Path;
use std::sync::OnceLock;

use burn::prelude::*;
use burn::store::ModuleSnapshot;
use deepcnn::checkpoint::RunRecord;
use deepcnn::data::idx::{decode_bytes, encode_images, encode_labels, gzip, parse_images, parse_labels, IdxImages};
use deepcnn::data::image_file::decode_image;
use deepcnn::interop::export_safetensors;
use deepcnn::interop::pytorch::{import_tensors, TorchFile};
use deepcnn::models::{ModelKind, Network};
use deepcnn::train::TrainConfig;
use proptest::collection::vec;
use proptest::prelude::*;

/// `bytes` with each (position, value) of `damage` written over it.
fn damaged(bytes: &[u8], damage: &[(usize, u8)]) -> Vec<u8> {
    let mut out = bytes.to_vec();
    for &(at, value) in damage {
        if !out.is_empty() {
            let i = at % out.len();
            out[i] = value;
        }
    }
    out
}

fn a_valid_run_json() -> serde_json::Value {
    serde_json::json!({
        "format": 1,
        "deepcnn_version": "0.1.0",
        "config": TrainConfig::new(ModelKind::LeNetBn),
        "epochs_done": 0,
        "model_file": "model-epoch0.bpk",
        "optimizer_file": null,
        "next_epoch": 1,
        "history": [],
    })
}

fn lenet_export() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| export_safetensors(ModelKind::LeNetBn, &Network::new(ModelKind::LeNetBn, &Device::flex()), 28))
}

fn images_png_and_jpeg() -> &'static [(&'static str, Vec<u8>)] {
    static FILES: OnceLock<Vec<(&str, Vec<u8>)>> = OnceLock::new();
    FILES.get_or_init(|| {
        let img = image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([(x * 6) as u8, (y * 8) as u8, 90]));
        let mut files = Vec::new();
        for (name, format) in [("png", image::ImageFormat::Png), ("jpeg", image::ImageFormat::Jpeg)] {
            let mut bytes = std::io::Cursor::new(Vec::new());
            img.write_to(&mut bytes, format).unwrap();
            files.push((name, bytes.into_inner()));
        }
        files
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn the_idx_reader_takes_any_bytes(bytes in vec(any::<u8>(), 0..512), gz in any::<bool>()) {
        let path = Path::new(if gz { "x.gz" } else { "x" });
        // Plain bytes that happen to start like gzip are read as (broken) gzip: an error.
        prop_assume!(gz || !bytes.starts_with(&[0x1f, 0x8b]));
        let input = if gz { gzip(&bytes) } else { bytes };
        let decoded = decode_bytes(input, path).expect("valid gzip or plain bytes");
        if let Ok(images) = parse_images(&decoded, path) {
            prop_assert_eq!(images.pixels.len(), images.count * images.rows * images.cols);
        }
        let _ = parse_labels(&decoded, path);
    }

    #[test]
    fn damaged_idx_files_read_back_whole_or_not_at_all(
        count in 0usize..6, rows in 1usize..6, cols in 1usize..6,
        damage in vec((any::<usize>(), any::<u8>()), 0..4), cut in any::<usize>(), gz in any::<bool>(),
    ) {
        let images = IdxImages { count, rows, cols, pixels: (0..count * rows * cols).map(|v| v as u8).collect() };
        let mut bytes = damaged(&encode_images(&images), &damage);
        bytes.truncate(cut % (bytes.len() + 1));
        let path = Path::new("x");
        let bytes = if gz { decode_bytes(gzip(&bytes), path).unwrap() } else { bytes };
        match parse_images(&bytes, path) {
            Ok(read) => prop_assert_eq!(read.pixels.len(), read.count * read.rows * read.cols),
            Err(e) => prop_assert!(e.to_string().starts_with("x: "), "{}", e),
        }
        // Damaged gzip streams are an error or some bytes, never a panic.
        let _ = decode_bytes(damaged(&gzip(&encode_labels(&[1, 2, 3])), &damage), Path::new("y.gz"));
    }

    #[test]
    fn run_json_with_any_damage_is_refused_or_describes_a_usable_run(damage in vec((any::<usize>(), any::<u8>()), 1..6)) {
        let json = serde_json::to_vec(&a_valid_run_json()).unwrap();
        if let Ok(record) = RunRecord::parse(&damaged(&json, &damage)) {
            prop_assert!(record.config.validate().is_ok());
            prop_assert!(!record.model_file.contains('/'));
        }
    }

    #[test]
    fn run_json_with_any_numbers_is_refused_or_describes_a_usable_run(
        batch_size in any::<u64>(), epochs in any::<u64>(), resize in proptest::option::of(any::<u64>()),
        limit in proptest::option::of(any::<u64>()), lr in any::<f64>(), crop in any::<u64>(), precise_bn in any::<u64>(),
        model in 0usize..5,
    ) {
        let mut json = a_valid_run_json();
        let config = &mut json["config"];
        config["model"] = ModelKind::ALL[model].name().into();
        config["batch_size"] = batch_size.into();
        config["epochs"] = epochs.into();
        config["resize"] = resize.into();
        config["limit"] = limit.into();
        config["lr"] = lr.into();
        config["augment"]["crop_padding"] = crop.into();
        config["precise_bn"] = precise_bn.into();
        if let Ok(record) = RunRecord::parse(&serde_json::to_vec(&json).unwrap()) {
            let c = &record.config;
            prop_assert!(c.batch_size > 0 && c.epochs > 0 && c.lr > 0.0 && c.model.check_input(c.image_size()).is_ok());
        }
    }

    #[test]
    fn damaged_weights_are_refused_or_import_as_finite_numbers(damage in vec((any::<usize>(), any::<u8>()), 1..6)) {
        let bytes = damaged(lenet_export(), &damage);
        let Ok(file) = TorchFile::from_safetensors(&bytes) else { return Ok(()) };
        if let Ok(net) = import_tensors(ModelKind::LeNetBn, file, Path::new("w.safetensors"), &Device::flex()) {
            for t in net.collect(None, None, false) {
                let bytes = t.to_bytes().unwrap();
                prop_assert!(bytes.chunks_exact(4).all(|b| f32::from_le_bytes(b.try_into().unwrap()).is_finite()), "{}", t.name);
            }
        }
    }

    #[test]
    fn damaged_images_are_refused_or_give_28_by_28(damage in vec((any::<usize>(), any::<u8>()), 1..6), which in 0usize..2) {
        let (_, bytes) = &images_png_and_jpeg()[which];
        if let Ok(pixels) = decode_image(&damaged(bytes, &damage), 28, false) {
            prop_assert_eq!(pixels.len(), 28 * 28);
        }
    }

    #[test]
    fn any_bytes_are_refused_as_an_image_or_give_28_by_28(bytes in vec(any::<u8>(), 0..256)) {
        if let Ok(pixels) = decode_image(&bytes, 28, false) {
            prop_assert_eq!(pixels.len(), 28 * 28);
        }
    }
}
