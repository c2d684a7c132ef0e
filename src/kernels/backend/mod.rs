//! graft's kernels plugged into burn through its backend-extension mechanism, one file per op.
//!
//! `#[backend_extension]` generates the routing: a `Tensor` on the `flex` device reaches the
//! `Flex` implementation, a tensor on an autodiff `flex` device reaches the `Autodiff<Flex, C>`
//! one, which records a backward step computed by the same kernels. The tensor data is borrowed
//! as plain `f32` slices (copied only when a view is not contiguous).
//!
//! | file | op |
//! |---|---|
//! | `conv.rs` | dense and depthwise convolution, with bias and a fused activation |
//! | `pool.rs` | max-pooling |
//! | `activation.rs` | ReLU, ReLU6 |
//! | `layout.rs` | the change to channels-last memory order |
//! | `add.rs` | the layout-keeping residual add |
//! | `norm.rs` | training-mode BatchNorm |
//! | `optim.rs` | the fused SGD step |
//! | `gelu.rs`, `layer_norm.rs`, `linear.rs` | the transformer encoder's element-wise, row-wise and dense ops |
//! | `attention.rs` | multi-head attention's probabilities and context |
//! | `dropout.rs` | dropout with a counter-based mask |

mod activation;
mod add;
mod attention;
mod conv;
mod dropout;
mod gelu;
mod layer_norm;
mod layout;
mod linear;
mod norm;
mod optim;
mod pool;
mod shared;

pub use activation::GraftActivation;
pub use add::GraftAdd;
pub use attention::GraftAttention;
pub use conv::GraftConv;
pub use dropout::GraftDropout;
pub use gelu::GraftGelu;
pub use layer_norm::GraftLayerNorm;
pub use layout::GraftLayout;
pub use linear::GraftLinear;
pub use norm::GraftNorm;
pub use optim::GraftOptim;
pub use pool::GraftPool;
