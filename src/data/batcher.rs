//! Turning examples into tensors: pixels to f32 in [0, 1], shape N×1×H×W, optionally resized
//! bilinearly (half-pixel centres, as torchvision's `Resize` on a tensor), and a seeded shuffle.

use burn::prelude::*;
use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use rand::seq::SliceRandom;
use rand::{rngs::StdRng, SeedableRng};

use super::{Augment, Dataset};

/// A batch ready for the network.
#[derive(Debug, Clone)]
pub struct Batch {
    /// N×C×S×S, values in [0, 1].
    pub images: Tensor<4>,
    /// N class indices.
    pub labels: Tensor<1, Int>,
}

/// Builds batches from a data set on one device.
#[derive(Debug, Clone)]
pub struct Batcher {
    pub resize: Option<usize>,
    pub device: Device,
}

impl Batcher {
    pub fn new(resize: Option<usize>, device: &Device) -> Self {
        Self { resize, device: device.clone() }
    }

    /// The examples at `indices`, in that order.
    pub fn batch(&self, data: &Dataset, indices: &[usize]) -> Batch {
        let pixels: Vec<u8> = indices.iter().flat_map(|&i| data.image(i).iter().copied()).collect();
        self.batch_of_pixels(data, indices, pixels)
    }

    /// Like [`batch`](Self::batch), each image randomly augmented with draws from `rng`.
    pub fn augmented_batch(&self, data: &Dataset, indices: &[usize], augment: Augment, rng: &mut StdRng) -> Batch {
        let [h, w] = data.image_size();
        let shape = [data.channels(), h, w];
        let pixels: Vec<u8> = indices.iter().flat_map(|&i| augment.apply(data.image(i), shape, rng)).collect();
        self.batch_of_pixels(data, indices, pixels)
    }

    fn batch_of_pixels(&self, data: &Dataset, indices: &[usize], pixels: Vec<u8>) -> Batch {
        let [h, w] = data.image_size();
        let pixels: Vec<f32> = pixels.into_iter().map(|p| p as f32 / 255.0).collect();
        let labels: Vec<i64> = indices.iter().map(|&i| data.label(i) as i64).collect();
        let images =
            Tensor::<4>::from_data(TensorData::new(pixels, [indices.len(), data.channels(), h, w]), &self.device);
        let images = match self.resize {
            Some(s) if [s, s] != [h, w] => resize(images, s),
            _ => images,
        };
        let labels = Tensor::<1, Int>::from_data(TensorData::new(labels, [indices.len()]), &self.device);
        Batch { images, labels }
    }

    /// Consecutive batches of `batch_size` over `order` (the last one may be smaller).
    pub fn batches<'a>(
        &'a self,
        data: &'a Dataset,
        order: &'a [usize],
        batch_size: usize,
    ) -> impl Iterator<Item = Batch> + 'a {
        order.chunks(batch_size).map(move |chunk| self.batch(data, chunk))
    }

    /// Like [`batches`](Self::batches), augmented with a random stream that depends only on
    /// `seed`, so an epoch's augmented batches can be reproduced (and resumed) exactly.
    pub fn augmented_batches<'a>(
        &'a self,
        data: &'a Dataset,
        order: &'a [usize],
        batch_size: usize,
        augment: Augment,
        seed: u64,
    ) -> impl Iterator<Item = Batch> + 'a {
        let mut rng = StdRng::seed_from_u64(seed);
        order.chunks(batch_size).map(move |chunk| {
            if augment.is_off() {
                self.batch(data, chunk)
            } else {
                self.augmented_batch(data, chunk, augment, &mut rng)
            }
        })
    }
}

/// Bilinear resize of N×C×H×W images to N×C×S×S.
pub fn resize(images: Tensor<4>, size: usize) -> Tensor<4> {
    let mut options = InterpolateOptions::new(InterpolateMode::Bilinear).with_output_size([size, size]);
    options.align_corners = false;
    interpolate(images, options)
}

/// 0..n in a random order that depends only on `seed`.
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut StdRng::seed_from_u64(seed));
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pixels_are_scaled_and_shaped() {
        let data = Dataset::from_parts(2, 2, vec![0, 255, 51, 102, 1, 2, 3, 4], vec![3, 7]).unwrap();
        let b = Batcher::new(None, &Device::flex()).batch(&data, &[1, 0]);
        assert_eq!(b.images.dims(), [2, 1, 2, 2]);
        let px = b.images.into_data().try_to_vec::<f32>().unwrap();
        assert_eq!(&px[4..], &[0.0, 1.0, 0.2, 0.4]);
        assert_eq!(b.labels.into_data().convert::<i64>().try_to_vec::<i64>().unwrap(), vec![7, 3]);
    }

    #[test]
    fn resize_uses_half_pixel_bilinear() {
        // 2×2 → 4×4 with half-pixel centres: the first row of [[0, 1], [0, 1]] becomes
        // [0, 0.25, 0.75, 1] (PyTorch's `interpolate(..., align_corners=False)` gives the same).
        let data = Dataset::from_parts(2, 2, vec![0, 255, 0, 255], vec![0]).unwrap();
        let b = Batcher::new(Some(4), &Device::flex()).batch(&data, &[0]);
        assert_eq!(b.images.dims(), [1, 1, 4, 4]);
        let px = b.images.into_data().try_to_vec::<f32>().unwrap();
        for (got, want) in px[..4].iter().zip([0.0, 0.25, 0.75, 1.0]) {
            assert!((got - want).abs() < 1e-6, "{:?}", &px[..4]);
        }
    }

    #[test]
    fn shuffle_is_a_seeded_permutation() {
        let a = shuffled(100, 7);
        assert_eq!(a, shuffled(100, 7));
        assert_ne!(a, shuffled(100, 8));
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
