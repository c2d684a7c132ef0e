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

mod activation;
mod add;
mod conv;
mod layout;
mod norm;
mod optim;
mod pool;
mod shared;

pub use activation::GraftActivation;
pub use add::GraftAdd;
pub use conv::GraftConv;
pub use layout::GraftLayout;
pub use norm::GraftNorm;
pub use optim::GraftOptim;
pub use pool::GraftPool;
