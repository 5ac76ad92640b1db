//! One thousand trivial `#[test]`s, `d0::d0::d0` to `d9::d9::d9`: each adds
//! two numbers. The same crate is the suite (`cargo test --target
//! wasm32-wasip2 --no-run`, every test in a fresh instance) and, natively, the
//! baseline of `runner/benches/vs_cargo.rs` (`cargo test --release`, threads
//! in one process; `cargo nextest run --release`, a process per test).

/// Adds two numbers (what every test checks).
pub fn add(a: u64, b: u64) -> u64 {
    a + b
}

/// Modules `d0`..`d9`, each holding what `$inner` expands to.
#[cfg(test)]
macro_rules! ten {
    ($inner:ident) => {
        ten!(@ $inner; d0 d1 d2 d3 d4 d5 d6 d7 d8 d9);
    };
    (@ $inner:ident; $($m:ident)*) => {
        $(mod $m {
            $inner!();
        })*
    };
}

/// Ten trivial tests, `d0`..`d9`.
#[cfg(test)]
macro_rules! tests {
    () => {
        tests!(@ d0 d1 d2 d3 d4 d5 d6 d7 d8 d9);
    };
    (@ $($name:ident)*) => {
        $(#[test]
        fn $name() {
            assert_eq!(crate::add(2, 2), 4);
        })*
    };
}

#[cfg(test)]
macro_rules! hundred {
    () => {
        ten!(tests);
    };
}

#[cfg(test)]
ten!(hundred);
