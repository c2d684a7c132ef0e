//! The unpickler on hand-written opcode streams: what it accepts, what it refuses, and its limits.

use std::path::Path;

use super::value::{Pickle, Value};
use super::vm::unpickle;
use crate::error::Result;

fn run(bytes: &[u8]) -> Result<(Pickle, usize)> {
    unpickle(Path::new("t.pkl"), "test", bytes, 0)
}

#[test]
fn ints_and_longs() {
    // LONG1 with the legacy torch magic number (10 bytes).
    let mut b = vec![0x80, 2, 0x8a, 10];
    b.extend_from_slice(&0x1950a86a20f9469cfc6cu128.to_le_bytes()[..10]);
    b.push(b'.');
    let (p, end) = run(&b).unwrap();
    assert_eq!(end, b.len());
    assert!(matches!(p.root(), Value::Int(0x1950a86a20f9469cfc6c)));
    let (p, _) = run(&[0x8a, 1, 0xff, b'.']).unwrap();
    assert!(matches!(p.root(), Value::Int(-1)));
    let (p, _) = run(&[b'J', 0xfe, 0xff, 0xff, 0xff, b'.']).unwrap();
    assert!(matches!(p.root(), Value::Int(-2)));
}

#[test]
fn memo_shares_containers() {
    // d = {}; memo[0] = d; d['a'] = 1; return (memo[0],) → the tuple holds the filled dict.
    let b = [
        b'}', b'q', 0, 0x8c, 1, b'a', b'K', 1, b's', b'h', 0, 0x85, b'.',
    ];
    let (p, _) = run(&b).unwrap();
    let Value::Tuple(t) = p.root() else { panic!() };
    let Value::Dict(d) = p.get(t[0]) else {
        panic!()
    };
    assert_eq!(d.len(), 1);
}

#[test]
fn refuses_globals_not_on_the_allow_list() {
    let e = run(b"\x80\x02cos\nsystem\n.").unwrap_err().to_string();
    assert!(
        e.contains("refusing to load") && e.contains("`os.system`"),
        "{e}"
    );
    let e = run(b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.")
        .unwrap_err()
        .to_string();
    assert!(e.contains("`builtins.eval`"), "{e}");
}

#[test]
fn hostile_lengths_and_memo() {
    // BINUNICODE claiming 4 GB.
    assert!(run(b"X\xff\xff\xff\xff").is_err());
    // LONG_BINGET of a slot never set.
    assert!(run(b"j\xff\xff\xff\xff.").is_err());
    // LONG_BINPUT with a huge slot number must not allocate.
    let (p, _) = run(b"Nr\xff\xff\xff\xff.").unwrap();
    assert!(matches!(p.root(), Value::None));
    // Unknown opcode.
    let e = run(b"\xff").unwrap_err().to_string();
    assert!(e.contains("0xff"), "{e}");
    // EXT1 is a known opcode we refuse.
    let e = run(b"\x82\x01.").unwrap_err().to_string();
    assert!(e.contains("EXT1"), "{e}");
    // Underflow and missing STOP.
    assert!(run(b".").is_err());
    assert!(run(b"(N").is_err());
    assert!(run(b"(.").is_err());
}

#[test]
fn billion_laughs_stays_linear() {
    // Each round: x = (x, x) via DUP/TUPLE2/MEMOIZE; 1000 rounds would be 2^1000 nodes if
    // values were copied.
    let mut b = vec![0x80, 4, b'N'];
    for _ in 0..1000 {
        b.extend_from_slice(&[b'2', 0x86, 0x94]);
    }
    b.push(b'.');
    let (p, _) = run(&b).unwrap();
    assert!(p.values.len() < 2000);
}
