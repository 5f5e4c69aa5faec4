//! Inputs the fuzzer (scripts/fuzz.sh) found; each must give a typed result, never a panic.
//! Run 1: scan headers naming Huffman tables above 3 indexed past the table array.
use thumbnail_engine::render;

#[test]
fn fuzz_findings_do_not_panic() {
    let dir = format!("{}/tests/fixtures/fuzz", env!("CARGO_MANIFEST_DIR"));
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for o in thumbnail_engine::fuzzing::option_sets() {
            if let Err(e) = render(&bytes, &o, &thumbnail_engine::fuzzing::limits()) {
                assert!(e.is_bad_input(), "{e}");
            }
        }
        n += 1;
    }
    assert!(n >= 3);
}
