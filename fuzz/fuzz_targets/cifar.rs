//! Fuzz target: `graft::fuzz::cifar` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = graft::fuzz::cifar(data);
});
