//! A plain Rust crate whose ordinary `#[test]`s form a suite.
//!
//! `cargo test --target wasm32-wasip2 --no-run` builds the libtest harness as
//! a WASI command component; the runner lists its tests with `--list` and runs
//! each with `--exact NAME` in a fresh instance.
//!
//! | test | expected |
//! |---|---|
//! | `tests::adds` | passes |
//! | `tests::greets` | passes |
//! | `tests::fails_assert_eq` | fails (`assert_eq!`) |
//! | `tests::ignored` | ignored |
//! | `tests::panics_as_expected` | `#[should_panic]`: libtest ignores it when it runs on wasm (no unwinding), so it is skipped, with that reason |

/// Adds two numbers.
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// A greeting for `name`.
pub fn greet(name: &str) -> String {
    format!("hello, {name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds() {
        assert_eq!(add(2, 2), 4);
    }

    #[test]
    fn greets() {
        assert_eq!(greet("wasm"), "hello, wasm");
    }

    #[test]
    fn fails_assert_eq() {
        assert_eq!(add(2, 2), 5, "fails on purpose");
    }

    #[test]
    #[ignore = "demonstrates an ignored test"]
    fn ignored() {}

    #[test]
    #[should_panic(expected = "on purpose")]
    fn panics_as_expected() {
        panic!("on purpose");
    }
}
