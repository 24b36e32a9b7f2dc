//! Training-time data augmentation on the raw pixels (before any resize), like torchvision's
//! `RandomCrop(28, padding=p)` and `RandomHorizontalFlip()`.

use rand::rngs::StdRng;
use rand::Rng;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Augment {
    /// Random crop back to the original size after zero-padding each side by this many pixels;
    /// 0 turns it off.
    pub crop_padding: usize,
    /// Mirror left-right with probability 1/2.
    pub flip: bool,
}

impl Augment {
    pub fn is_off(&self) -> bool {
        self.crop_padding == 0 && !self.flip
    }

    /// One randomly cropped and/or flipped copy of the `h`×`w` image `pixels`.
    pub fn apply(&self, pixels: &[u8], h: usize, w: usize, rng: &mut StdRng) -> Vec<u8> {
        let p = self.crop_padding as i64;
        // Offsets of the crop window inside the padded image, relative to the original.
        let (dy, dx) = if p > 0 { (rng.random_range(-p..=p), rng.random_range(-p..=p)) } else { (0, 0) };
        let flip = self.flip && rng.random_bool(0.5);
        let mut out = vec![0u8; h * w];
        for y in 0..h {
            for x in 0..w {
                let (sy, sx) = (y as i64 + dy, x as i64 + dx);
                if (0..h as i64).contains(&sy) && (0..w as i64).contains(&sx) {
                    let x_out = if flip { w - 1 - x } else { x };
                    out[y * w + x_out] = pixels[sy as usize * w + sx as usize];
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn off_is_the_identity_and_flip_mirrors() {
        let img: Vec<u8> = (0..12).collect();
        let mut rng = StdRng::seed_from_u64(0);
        assert_eq!(Augment::default().apply(&img, 3, 4, &mut rng), img);
        let flip = Augment { crop_padding: 0, flip: true };
        let outs: Vec<Vec<u8>> = (0..32).map(|_| flip.apply(&img, 3, 4, &mut rng)).collect();
        let mirrored: Vec<u8> = vec![3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8];
        assert!(outs.iter().all(|o| *o == img || *o == mirrored));
        assert!(outs.contains(&img) && outs.contains(&mirrored), "both outcomes occur in 32 draws");
    }

    #[test]
    fn crop_shifts_the_image_and_fills_with_zeros() {
        let img = vec![1u8; 16];
        let crop = Augment { crop_padding: 2, flip: false };
        let mut rng = StdRng::seed_from_u64(1);
        let mut saw_shift = false;
        for _ in 0..50 {
            let out = crop.apply(&img, 4, 4, &mut rng);
            let ones = out.iter().filter(|&&v| v == 1).count();
            // A shift of at most 2 in each direction keeps at least a 2×2 corner.
            assert!((4..=16).contains(&ones), "{out:?}");
            assert!(out.iter().all(|&v| v == 0 || v == 1));
            saw_shift |= ones < 16;
        }
        assert!(saw_shift);
    }
}
