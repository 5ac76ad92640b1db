//! Writes the 1,000 tests, `d0::d0::d0` to `d9::d9::d9`, and their
//! `ensemble_sdk::suite!` list into `$OUT_DIR/thousand.rs`: the list names
//! every test, which a macro alone cannot produce for another macro.

use std::fmt::Write;

fn main() {
    let digits: Vec<String> = (0..10).map(|d| format!("d{d}")).collect();
    let mut modules = String::new();
    let mut list = String::new();
    for a in &digits {
        writeln!(modules, "pub mod {a} {{").unwrap();
        for b in &digits {
            writeln!(modules, "    pub mod {b} {{").unwrap();
            for c in &digits {
                writeln!(modules, "        pub fn {c}() {{ assert_eq!(crate::add(2, 2), 4); }}").unwrap();
                writeln!(list, "    {a}::{b}::{c},").unwrap();
            }
            writeln!(modules, "    }}").unwrap();
        }
        writeln!(modules, "}}").unwrap();
    }
    let text = format!("{modules}\nensemble_sdk::suite! {{\n{list}}}\n");
    let out = std::path::PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("thousand.rs"), text).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed=build.rs");
}
