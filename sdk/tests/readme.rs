//! The README's Rust example is the one `sdk/examples/readme.rs` compiles.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failure

mod common;

fn trimmed(lines: &[&str]) -> Vec<String> {
    lines.iter().map(|l| l.trim().to_string()).collect()
}

#[test]
fn readme_example_is_the_compiled_one() {
    let root = common::root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("```rust\n")
        .expect("README has a ```rust block")
        + 8;
    let len = readme[start..].find("```").unwrap();
    let shown: Vec<&str> = readme[start..start + len].lines().collect();
    let example = std::fs::read_to_string(root.join("sdk/examples/readme.rs")).unwrap();
    let lines: Vec<&str> = example.lines().collect();
    let begin = lines
        .iter()
        .position(|l| l.trim() == "// README begin")
        .unwrap();
    let end = lines
        .iter()
        .position(|l| l.trim() == "// README end")
        .unwrap();
    assert_eq!(
        trimmed(&shown),
        trimmed(&lines[begin + 1..end]),
        "README.md's Rust example differs from sdk/examples/readme.rs"
    );
}
