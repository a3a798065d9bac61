//! Conversions between [`Tensor`] and [`ndarray`] arrays (ndarray 0.17; the crate's default
//! `ndarray` feature).
//!
//! | from | to | how | copies |
//! |---|---|---|---|
//! | `Array<f32, D>` of any dimension (`Array2`, `Array4`, `ArrayD`, …) | `Tensor` | `Tensor::from(a)` | once (one buffer copy when `a` is row-major) |
//! | `ArrayView<f32, D>` (a slice, a transposed view, …) | `Tensor` | `Tensor::from(view)` | once, in logical order |
//! | `Tensor` | `ArrayD<f32>` | `ArrayD::from(t)` | no |
//! | `Tensor` | `Array<f32, D>` of a fixed dimension | `t.into_array::<Ix2>()` | no; an error if the rank differs |
//! | `&Tensor` | `ArrayViewD<f32>` | `t.view()` | no |
//!
//! A `Tensor` is always row-major and contiguous, so an array in another layout (a transposed
//! view, a column-major array, a strided slice) is read element by element in its *logical*
//! order: `Tensor::from(a.t())` is the transpose, not the same memory reinterpreted.
//!
//! The conversions are for *this* `ndarray` (0.17). If your program depends on another version,
//! the compiler says that `From<ArrayBase<…>>` is not implemented (E0277) — two versions are two
//! different crates. Use the one re-exported here, `backprop::ndarray`, and they always match:
//!
//! ```
//! use backprop::Tensor;
//! use backprop::ndarray::{Array2, Ix2, array, s};
//! let a: Array2<f32> = array![[1., 2., 3.], [4., 5., 6.]];
//! let t = Tensor::from(a.view());                 // [2, 3]
//! assert_eq!(t.shape(), &[2, 3]);
//! let column = Tensor::from(a.slice(s![.., 1])); // a strided view: [2., 5.]
//! assert_eq!(column.data(), &[2., 5.]);
//! let transposed = Tensor::from(a.t());           // [3, 2], in logical order
//! assert_eq!(transposed.data(), &[1., 4., 2., 5., 3., 6.]);
//! let back: Array2<f32> = t.clone().into_array::<Ix2>().unwrap();
//! assert_eq!(back, a);
//! assert_eq!(t.view()[[1, 2]], 6.0);
//! ```

use super::Tensor;
use crate::error::{Error, Result};
use ndarray::{Array, ArrayBase, ArrayD, ArrayViewD, Data, Dimension, IxDyn};

impl<S: Data<Elem = f32>, D: Dimension> From<ArrayBase<S, D>> for Tensor {
    /// Any array or view of `f32`, of any dimension, copied in logical (row-major) order.
    ///
    /// # Panics
    /// If the values cannot be allocated (a broadcast view of 2³⁶ values, say): the message
    /// gives the shape and the size, as every constructor's does.
    fn from(a: ArrayBase<S, D>) -> Tensor {
        let shape = a.shape().to_vec();
        let mut data = super::allocate(&shape); // checked, and asked for before the copy
        match a.as_slice() {
            Some(s) => data.extend_from_slice(s), // standard layout: one copy of the buffer
            None => data.extend(a.iter().copied()),
        }
        Tensor { shape, data }
    }
}

impl From<Tensor> for ArrayD<f32> {
    /// # Panics
    /// If `ndarray` cannot hold the shape: an empty tensor whose other axes multiply past
    /// `isize::MAX` (`[0, 2⁶², 4]`), which this crate accepts and `ndarray` does not (see
    /// [`Tensor::into_array`] for an `Err` instead).
    fn from(t: Tensor) -> ArrayD<f32> {
        let shape = t.shape.clone();
        ArrayD::from_shape_vec(IxDyn(&t.shape), t.data)
            .unwrap_or_else(|e| panic!("{}", beyond_ndarray(&shape, e)))
    }
}

/// Why `ndarray` refused a tensor's shape: its data length always matches the shape, so what is
/// left is `ndarray`'s own limit on the product of the non-zero axes.
fn beyond_ndarray(shape: &[usize], e: ndarray::ShapeError) -> String {
    format!(
        "ndarray cannot hold a tensor of shape {shape:?} ({e}): the product of its non-zero axes must stay within isize::MAX, even for an empty array"
    )
}

impl Tensor {
    /// The tensor as an array of a fixed dimension `D` (`Ix1` … `Ix6`), without copying.
    ///
    /// # Errors
    /// [`Error::Shape`] naming both ranks when the tensor's rank is not `D`'s, or when `ndarray`
    /// cannot hold the shape (an empty tensor whose other axes multiply past `isize::MAX`).
    pub fn into_array<D: Dimension>(self) -> Result<Array<f32, D>> {
        let shape = self.shape.clone();
        let array = ArrayD::from_shape_vec(IxDyn(&self.shape), self.data)
            .map_err(|e| Error::shape(beyond_ndarray(&shape, e)))?;
        array.into_dimensionality::<D>().map_err(|_| {
            Error::shape(format!(
                "a tensor of shape {shape:?} (rank {}) is not an array of rank {}",
                shape.len(),
                D::NDIM.map_or("any".to_string(), |n| n.to_string())
            ))
        })
    }

    /// A read-only `ndarray` view of the tensor's data, without copying.
    ///
    /// # Panics
    /// If `ndarray` cannot hold the shape (as `ArrayD::from`).
    pub fn view(&self) -> ArrayViewD<'_, f32> {
        ArrayViewD::from_shape(IxDyn(&self.shape), &self.data)
            .unwrap_or_else(|e| panic!("{}", beyond_ndarray(&self.shape, e)))
    }
}
