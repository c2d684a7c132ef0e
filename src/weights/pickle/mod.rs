//! Restricted unpickler: turns the pickle inside a PyTorch file into an inert value tree, and
//! finds the state dict's tensors in it. It never executes anything.
//!
//! Python's `pickle.load` imports and calls whatever the file names, so a `.pth` file can run
//! arbitrary code (`os.system`, `builtins.eval`, ...). This VM instead resolves `GLOBAL` /
//! `STACK_GLOBAL` against a short allow-list (tensor rebuild functions, storage and dtype
//! names, `OrderedDict`) and refuses the file on anything else. `REDUCE` on an allowed name is
//! *interpreted* (`_rebuild_tensor_v2(...)` becomes a [`TensorRef`]), never called.
//!
//! Values live in an arena and the stack/memo hold indices into it. That mirrors Python's
//! reference semantics (a memoized dict that is filled later is the same dict everywhere) and
//! makes `BINGET`/`DUP` O(1), so a hostile pickle cannot blow up memory by re-fetching a large
//! memo entry over and over: memory stays proportional to the number of opcodes.

mod globals;
mod state_dict;
#[cfg(test)]
mod tests;
mod value;
mod vm;

pub(crate) use value::{Entry, Value, kind};
pub(crate) use vm::unpickle;
