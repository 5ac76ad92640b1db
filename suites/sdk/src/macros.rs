//! The `check…!` assertion macros and the `suite!` declaration macro.
//!
//! The check macros return early with `Err(Failure)` instead of panicking, so
//! a failed check reads as a test failure with a message rather than a trap.
//! They expand to `return Err(From::from(failure))`, so they work in any
//! function whose error type converts from [`Failure`](crate::Failure).

/// Fails the test unless `cond` holds.
///
/// `check!(cond)` fails with the condition's source text;
/// `check!(cond, "format {}", args)` fails with the formatted message.
///
/// ```
/// use ensemble_sdk::prelude::*;
///
/// fn positive(n: i32) -> TestResult {
///     check!(n > 0);
///     check!(n < 100, "{n} is too large");
///     Ok(())
/// }
///
/// assert!(positive(5).is_ok());
/// assert_eq!(positive(-1).unwrap_err().message().lines().next(), Some("check failed: n > 0"));
/// assert!(positive(500).unwrap_err().message().starts_with("500 is too large"));
/// ```
#[macro_export]
macro_rules! check {
    ($cond:expr $(,)?) => {
        if !$cond {
            return ::core::result::Result::Err(::core::convert::From::from($crate::Failure::fail(
                ::std::format!(
                    "check failed: {}\n  at {}:{}",
                    ::core::stringify!($cond),
                    ::core::file!(),
                    ::core::line!()
                ),
            )));
        }
    };
    ($cond:expr, $($arg:tt)+) => {
        if !$cond {
            return ::core::result::Result::Err(::core::convert::From::from($crate::Failure::fail(
                ::std::format!(
                    "{}\n  check: {}\n  at {}:{}",
                    ::std::format!($($arg)+),
                    ::core::stringify!($cond),
                    ::core::file!(),
                    ::core::line!()
                ),
            )));
        }
    };
}

/// Fails the test unless `left == right`, showing both values with `Debug`.
///
/// An optional format string and arguments after the two values are put in
/// front of the message.
///
/// ```
/// use ensemble_sdk::prelude::*;
///
/// fn sums() -> TestResult {
///     check_eq!(2 + 2, 5, "arithmetic");
///     Ok(())
/// }
///
/// let message = sums().unwrap_err().into_message();
/// assert!(message.starts_with("arithmetic: check_eq failed: 2 + 2 == 5"));
/// assert!(message.contains("left: 4"));
/// assert!(message.contains("right: 5"));
/// ```
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr $(,)?) => {
        $crate::__check_cmp!(==, "check_eq", $left, $right, "")
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        $crate::__check_cmp!(==, "check_eq", $left, $right, ::std::format!("{}: ", ::std::format!($($arg)+)))
    };
}

/// Fails the test if `left == right`, showing both values with `Debug`.
///
/// An optional format string and arguments after the two values are put in
/// front of the message.
///
/// ```
/// use ensemble_sdk::prelude::*;
///
/// fn differs() -> TestResult {
///     check_ne!("a", "a");
///     Ok(())
/// }
///
/// assert!(differs().unwrap_err().message().starts_with("check_ne failed: \"a\" != \"a\""));
/// ```
#[macro_export]
macro_rules! check_ne {
    ($left:expr, $right:expr $(,)?) => {
        $crate::__check_cmp!(!=, "check_ne", $left, $right, "")
    };
    ($left:expr, $right:expr, $($arg:tt)+) => {
        $crate::__check_cmp!(!=, "check_ne", $left, $right, ::std::format!("{}: ", ::std::format!($($arg)+)))
    };
}

/// Shared body of `check_eq!` and `check_ne!`.
#[doc(hidden)]
#[macro_export]
macro_rules! __check_cmp {
    ($op:tt, $name:literal, $left:expr, $right:expr, $prefix:expr) => {
        match (&$left, &$right) {
            (left, right) => {
                if !(*left $op *right) {
                    return ::core::result::Result::Err(::core::convert::From::from(
                        $crate::Failure::fail(::std::format!(
                            "{}{} failed: {} {} {}\n   left: {:?}\n  right: {:?}\n  at {}:{}",
                            $prefix,
                            $name,
                            ::core::stringify!($left),
                            ::core::stringify!($op),
                            ::core::stringify!($right),
                            left,
                            right,
                            ::core::file!(),
                            ::core::line!()
                        )),
                    ));
                }
            }
        }
    };
}

/// Declares the crate's suite: its tests, in the order they run, and their
/// attributes. Invoke it once per crate, at module level.
///
/// Each entry is a path to a function returning [`TestResult`](crate::TestResult),
/// `()` or any `Result<(), E>` whose `E` converts into [`Failure`](crate::Failure),
/// preceded by any of these attributes:
///
/// - `#[ignore]`: listed but not run unless asked for; reported as skipped,
/// - `#[tags("a", "b")]`: free-form tags,
/// - `#[timeout_ms(N)]`: overrides the plan's test timeout,
/// - `#[name("…")]`: the test name, instead of the path as written,
/// - doc comments, which are ignored.
///
/// The params the suite reads come first, as `params(A, B),` naming
/// [`Param`](crate::Param) constants: Ensemble checks plans against them
/// before anything runs (a missing required param, an unknown one, a value
/// of the wrong type) and the editor shows them. A suite without `params`
/// declares that it reads none.
///
/// The macro defines `ENSEMBLE_SUITE`, a [`Suite`](crate::Suite) static in the
/// invoking module (handy for native unit tests of the list), implements the
/// generated `tests::Guest` trait from it and, on `wasm32`, exports it.
///
/// ```
/// use ensemble_sdk::prelude::*;
///
/// mod server {
///     use ensemble_sdk::prelude::*;
///     pub fn ready() -> TestResult { Ok(()) }
/// }
/// fn quick() {}
///
/// ensemble_sdk::suite! {
///     /// Doc comments are fine.
///     server::ready,
///     #[ignore] #[tags("slow")] #[timeout_ms(60_000)] #[name("quick-but-ignored")] quick,
/// }
///
/// # fn main() {
/// let names: Vec<_> = ENSEMBLE_SUITE.tests().iter().map(|t| t.name()).collect();
/// assert_eq!(names, ["server::ready", "quick-but-ignored"]);
/// assert!(ENSEMBLE_SUITE.run("server::ready").is_ok());
/// # }
/// ```
///
/// Mistakes are compile errors: a duplicate test name,
///
/// ```compile_fail,E0080
/// fn twice() {}
/// ensemble_sdk::suite! { twice, twice }
/// # fn main() {}
/// ```
///
/// or an unknown attribute.
///
/// ```compile_fail
/// fn flaky() {}
/// ensemble_sdk::suite! { #[retries(3)] flaky }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! suite {
    (params($($param:path),* $(,)?), $($tests:tt)*) => {
        $crate::__suite!([$($param.decl()),*] $($tests)*);
    };
    ($($tests:tt)*) => {
        $crate::__suite!([] $($tests)*);
    };
}

/// The body of [`suite!`], with the params' declarations first.
#[doc(hidden)]
#[macro_export]
macro_rules! __suite {
    ([$($decl:expr),*] $( $( #[ $($attr:tt)* ] )* $first:ident $(:: $rest:ident)* ),* $(,)?) => {
        /// The tests of this crate's suite, as declared with `ensemble_sdk::suite!`.
        #[allow(dead_code)]
        pub(crate) static ENSEMBLE_SUITE: $crate::Suite = {
            const __ENSEMBLE_TESTS: &[$crate::TestCase] = &[
            $(
                $crate::__test_case!(
                    @attrs
                    ($crate::TestCase::new(
                        ::core::concat!(::core::stringify!($first) $(, "::", ::core::stringify!($rest))*),
                        {
                            fn ensemble_test() -> $crate::TestResult {
                                $crate::IntoTestResult::into_test_result($first $(:: $rest)* ())
                            }
                            ensemble_test
                        },
                    ))
                    $( [ $($attr)* ] )*
                )
            ),*
            ];
            // Sorted hashes of the names: a test is found in log n steps.
            static __ENSEMBLE_INDEX: [(u64, usize); __ENSEMBLE_TESTS.len()] = $crate::Suite::__index(__ENSEMBLE_TESTS);
            $crate::Suite::__indexed(__ENSEMBLE_TESTS, &__ENSEMBLE_INDEX).with_params(&[$($decl),*])
        };

        // The export is FFI glue (`export_name`, `link_section`, `unsafe`):
        // allowed here so that suites may `#![deny(unsafe_code)]`.
        #[allow(unsafe_code)]
        const _: () = {
            #[allow(dead_code)]
            struct EnsembleSuite;

            impl $crate::bindings::exports::ensemble::suite::tests::Guest for EnsembleSuite {
                fn list() -> ::std::vec::Vec<$crate::bindings::exports::ensemble::suite::tests::TestInfo> {
                    ENSEMBLE_SUITE.__wit_list()
                }

                fn describe() -> $crate::bindings::ensemble::suite::types::SuiteInfo {
                    ENSEMBLE_SUITE.__wit_describe()
                }

                fn run(
                    name: ::std::string::String,
                ) -> $crate::bindings::exports::ensemble::suite::tests::TestResult {
                    ENSEMBLE_SUITE.__wit_run(&name)
                }
            }

            // Natively there is nothing to export to; the export is a wasm
            // symbol plus a custom section describing the component type.
            #[cfg(target_arch = "wasm32")]
            $crate::bindings::__export_suite!(EnsembleSuite with_types_in $crate::bindings);
        };
    };
}

/// Applies the attributes of one `suite!` entry to its [`TestCase`](crate::TestCase).
#[doc(hidden)]
#[macro_export]
macro_rules! __test_case {
    (@attrs ($case:expr)) => {
        $case
    };
    (@attrs ($case:expr) [ignore] $($rest:tt)*) => {
        $crate::__test_case!(@attrs ($case.ignore()) $($rest)*)
    };
    (@attrs ($case:expr) [tags($($tag:expr),* $(,)?)] $($rest:tt)*) => {
        $crate::__test_case!(@attrs ($case.with_tags(&[$($tag),*])) $($rest)*)
    };
    (@attrs ($case:expr) [timeout_ms($ms:expr)] $($rest:tt)*) => {
        $crate::__test_case!(@attrs ($case.with_timeout_ms($ms)) $($rest)*)
    };
    (@attrs ($case:expr) [name($name:expr)] $($rest:tt)*) => {
        $crate::__test_case!(@attrs ($case.with_name($name)) $($rest)*)
    };
    (@attrs ($case:expr) [doc $($doc:tt)*] $($rest:tt)*) => {
        $crate::__test_case!(@attrs ($case) $($rest)*)
    };
    (@attrs ($case:expr) [$($other:tt)*] $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "unknown test attribute `#[",
            ::core::stringify!($($other)*),
            "]`; expected #[ignore], #[tags(\"…\")], #[timeout_ms(…)] or #[name(\"…\")]"
        ))
    };
}
