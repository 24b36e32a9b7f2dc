//! Reading results back from the device in groups. Each read makes the host wait for the
//! device; on a GPU a read per step (or per evaluation batch) would stall every one of them,
//! since the host could not queue the next while the GPU works. The training loop and
//! evaluation keep their results on the device and read [`READ_BACK_EVERY`] at a time.

use burn::prelude::*;

/// How many steps (or evaluation batches) are read back together.
pub(crate) const READ_BACK_EVERY: usize = 16;

/// Results still on the device: per step, a one-element float tensor (a mean loss) and an int
/// tensor of any length (a count, or a batch's predictions).
pub(crate) type Unread = Vec<(Tensor<1>, Tensor<1, Int>)>;

/// The values of `unread`, in order, with one wait for the device per kind of tensor; empties
/// `unread`.
pub(crate) fn read_back(unread: &mut Unread) -> Vec<(f64, Vec<i64>)> {
    if unread.is_empty() {
        return Vec::new();
    }
    let lens: Vec<usize> = unread.iter().map(|(_, ints)| ints.dims()[0]).collect();
    let (floats, ints): (Vec<_>, Vec<_>) = std::mem::take(unread).into_iter().unzip();
    let floats = Tensor::cat(floats, 0).into_data().convert::<f64>();
    let floats = floats.try_to_vec::<f64>().expect("float tensor converted to f64");
    let ints = Tensor::cat(ints, 0).into_data().convert::<i64>();
    let mut ints = ints.try_to_vec::<i64>().expect("int tensor converted to i64").into_iter();
    floats.into_iter().zip(lens).map(|(value, n)| (value, ints.by_ref().take(n).collect())).collect()
}
