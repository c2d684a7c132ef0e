//! Fuzz target: `graft::fuzz::text_table` (see src/fuzz.rs).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = graft::fuzz::text_table(data);
});
