//! Fuzz target: `graft::fuzz::tokenizer` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = graft::fuzz::tokenizer(data);
});
