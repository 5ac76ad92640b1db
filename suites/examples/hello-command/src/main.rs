//! A plain WASI command as a suite: one test, which passes when `main`
//! returns (exit code 0).

fn main() {
    println!("hello from a WASI command suite");
}
