//! The table of tests behind [`suite!`](crate::suite): [`TestCase`] and
//! [`Suite`].
//!
//! Both are built in a `static` at compile time, so a duplicate test name is
//! a compile error rather than a surprise at run time.

use crate::bindings::exports::ensemble::suite::tests as wit;
use crate::param::ParamDecl;
use crate::{FailureKind, TestResult, fail};

/// One test of a suite: its name, attributes and function.
///
/// Usually built by [`suite!`](crate::suite); the builder methods are `const`
/// so that the whole table is a `static`.
#[derive(Debug, Clone, Copy)]
pub struct TestCase {
    name: &'static str,
    tags: &'static [&'static str],
    ignored: bool,
    timeout_ms: Option<u64>,
    func: fn() -> TestResult,
}

impl TestCase {
    /// A test named `name` running `func`, without tags or timeout, not ignored.
    pub const fn new(name: &'static str, func: fn() -> TestResult) -> Self {
        Self { name, tags: &[], ignored: false, timeout_ms: None, func }
    }

    /// Marks the test as ignored: listed, but run only when asked for.
    pub const fn ignore(mut self) -> Self {
        self.ignored = true;
        self
    }

    /// Sets the test's tags.
    pub const fn with_tags(mut self, tags: &'static [&'static str]) -> Self {
        self.tags = tags;
        self
    }

    /// Overrides the plan's test timeout for this test, in milliseconds.
    pub const fn with_timeout_ms(mut self, timeout_ms: u64) -> Self {
        self.timeout_ms = Some(timeout_ms);
        self
    }

    /// Renames the test.
    pub const fn with_name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// The test's name, unique within its suite.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// The test's tags.
    pub const fn tags(&self) -> &'static [&'static str] {
        self.tags
    }

    /// Whether the test is ignored unless asked for.
    pub const fn is_ignored(&self) -> bool {
        self.ignored
    }

    /// The test's own timeout, in milliseconds, if it has one.
    pub const fn timeout_ms(&self) -> Option<u64> {
        self.timeout_ms
    }

    /// Runs the test in the current instance.
    pub fn run(&self) -> TestResult {
        (self.func)()
    }
}

/// All tests of a suite, in the order they run.
#[derive(Debug, Clone, Copy)]
pub struct Suite {
    tests: &'static [TestCase],
    params: &'static [ParamDecl],
    /// The names' hashes, sorted, each with its test's index: what [`find`]
    /// searches in log n steps (a fresh instance per test finds its one test
    /// in every instance). Empty where the suite was made without one
    /// ([`Suite::new`]): then `find` reads the list.
    ///
    /// [`find`]: Suite::find
    index: &'static [(u64, usize)],
}

impl Suite {
    /// A suite of `tests`.
    ///
    /// # Panics
    ///
    /// If two tests share a name. In a `static` (as [`suite!`](crate::suite)
    /// uses it) that is a compile-time error.
    pub const fn new<const N: usize>(tests: &'static [TestCase; N]) -> Self {
        let _ = Self::__index::<N>(tests);
        Self { tests, params: &[], index: &[] }
    }

    /// The names' hashes of `tests` (`N` of them), sorted, each with its
    /// test's index: for [`Suite::__indexed`], which [`suite!`](crate::suite)
    /// keeps in a `static` of its own.
    ///
    /// # Panics
    ///
    /// If two tests share a name, or `tests` is not `N` long.
    #[doc(hidden)]
    pub const fn __index<const N: usize>(tests: &[TestCase]) -> [(u64, usize); N] {
        assert!(tests.len() == N, "the index is as long as the list");
        // Sorted, a name and its twin are neighbours: n·log n steps of
        // const evaluation. Comparing every pair took so many that rustc
        // stopped compiling a suite of 1,000 tests ("constant evaluation is
        // taking a long time").
        let mut keys = [(0u64, 0usize); N];
        let mut i = 0;
        while i < N {
            keys[i] = (fnv1a(tests[i].name), i);
            i += 1;
        }
        heapsort(&mut keys);
        let mut i = 0;
        while i < N {
            // Different names may share a hash: compare within the run.
            let mut j = i + 1;
            while j < N && keys[j].0 == keys[i].0 {
                if str_eq(tests[keys[i].1].name, tests[keys[j].1].name) {
                    panic!("two tests of the suite have the same name");
                }
                j += 1;
            }
            i += 1;
        }
        keys
    }

    /// `tests` with their `index` from [`Suite::__index`] (what
    /// [`suite!`](crate::suite) declares).
    #[doc(hidden)]
    pub const fn __indexed(tests: &'static [TestCase], index: &'static [(u64, usize)]) -> Self {
        assert!(index.len() == tests.len(), "the index is as long as the list");
        Self { tests, params: &[], index }
    }

    /// The suite with the params it reads declared (see [`Param`](crate::Param)).
    ///
    /// # Panics
    ///
    /// If two params share a name (at compile time in a `static`).
    pub const fn with_params(mut self, params: &'static [ParamDecl]) -> Self {
        let mut i = 0;
        while i < params.len() {
            let mut j = i + 1;
            while j < params.len() {
                if str_eq(params[i].name, params[j].name) {
                    panic!("two params of the suite have the same name");
                }
                j += 1;
            }
            i += 1;
        }
        self.params = params;
        self
    }

    /// The declared params, in declaration order.
    pub const fn params(&self) -> &'static [ParamDecl] {
        self.params
    }

    /// The tests, in declaration order.
    pub const fn tests(&self) -> &'static [TestCase] {
        self.tests
    }

    /// The test called `name`, if any.
    pub fn find(&self, name: &str) -> Option<&'static TestCase> {
        if self.index.is_empty() {
            return self.tests.iter().find(|test| test.name == name);
        }
        let hash = fnv1a(name);
        // The first key of `hash`, then its run (names that share a hash).
        let first = self.index.partition_point(|&(h, _)| h < hash);
        self.index[first..]
            .iter()
            .take_while(|&&(h, _)| h == hash)
            .map(|&(_, i)| &self.tests[i])
            .find(|test| test.name == name)
    }

    /// Runs the test called `name` in the current instance; an unknown name
    /// fails.
    pub fn run(&self, name: &str) -> TestResult {
        match self.find(name) {
            Some(test) => test.run(),
            None => {
                let known: Vec<&str> = self.tests.iter().map(|test| test.name).collect();
                Err(fail(format!("no test named `{name}` in this suite (it has: {})", known.join(", "))))
            }
        }
    }

    /// The list in the ABI's terms (`tests.list`).
    #[doc(hidden)]
    pub fn __wit_list(&self) -> Vec<wit::TestInfo> {
        self.tests
            .iter()
            .map(|test| wit::TestInfo {
                name: test.name.to_owned(),
                tags: test.tags.iter().map(|tag| (*tag).to_owned()).collect(),
                ignored: test.ignored,
                timeout_ms: test.timeout_ms,
            })
            .collect()
    }

    /// The tests and params in the ABI's terms (`tests.describe`).
    #[doc(hidden)]
    pub fn __wit_describe(&self) -> crate::bindings::ensemble::suite::types::SuiteInfo {
        use crate::bindings::ensemble::suite::types::{ParamInfo, SuiteInfo};
        SuiteInfo {
            tests: self.__wit_list(),
            params: self
                .params
                .iter()
                .map(|p| ParamInfo {
                    name: p.name.to_owned(),
                    type_: p.kind,
                    required: p.required,
                    default: p.default.map(str::to_owned),
                    help: p.help.to_owned(),
                })
                .collect(),
        }
    }

    /// Runs a test in the ABI's terms (`tests.run`).
    #[doc(hidden)]
    pub fn __wit_run(&self, name: &str) -> wit::TestResult {
        to_wit(self.run(name))
    }
}

/// Maps a [`TestResult`] to the ABI's `test-result`.
fn to_wit(result: TestResult) -> wit::TestResult {
    match result {
        Ok(()) => wit::TestResult::Pass,
        Err(failure) => match failure.kind() {
            FailureKind::Fail => wit::TestResult::Fail(failure.into_message()),
            FailureKind::Skip => wit::TestResult::Skip(failure.into_message()),
        },
    }
}

/// `a == b`, usable in `const fn` (where `PartialEq` is not).
/// FNV-1a, 64 bits: a hash that `const` code can compute.
const fn fnv1a(s: &str) -> u64 {
    let bytes = s.as_bytes();
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// Sorts `keys` by their first field, in place, in `const` code (where the
/// slice methods are not `const`).
const fn heapsort(keys: &mut [(u64, usize)]) {
    let n = keys.len();
    let mut start = n / 2;
    while start > 0 {
        start -= 1;
        sift_down(keys, start, n);
    }
    let mut end = n;
    while end > 1 {
        end -= 1;
        keys.swap(0, end);
        sift_down(keys, 0, end);
    }
}

/// Moves `keys[root]` down the max-heap `keys[..end]` to its place.
const fn sift_down(keys: &mut [(u64, usize)], mut root: usize, end: usize) {
    loop {
        let mut child = 2 * root + 1;
        if child >= end {
            return;
        }
        if child + 1 < end && keys[child + 1].0 > keys[child].0 {
            child += 1;
        }
        if keys[root].0 >= keys[child].0 {
            return;
        }
        keys.swap(root, child);
        root = child;
    }
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check, check_eq, check_ne, skip};

    fn passes() -> TestResult {
        check!(1 < 2);
        check_eq!("a".repeat(2), "aa");
        check_ne!(1, 2, "numbers");
        Ok(())
    }

    fn fails() -> TestResult {
        check_eq!(vec![1, 2], vec![1, 3], "vectors of {}", "ints");
        Ok(())
    }

    fn skips() -> TestResult {
        Err(skip("not here"))
    }

    fn unit() {}

    fn io_error() -> std::io::Result<()> {
        Err(std::io::Error::other("disk on fire"))
    }

    mod nested {
        pub fn inner() -> crate::TestResult {
            Ok(())
        }
    }

    crate::suite! {
        passes,
        #[ignore] fails,
        /// A doc comment.
        #[tags("net", "slow")] #[timeout_ms(2_000)] skips,
        unit,
        #[name("io-error")] io_error,
        nested::inner,
    }

    #[test]
    fn lists_tests_with_attributes() {
        let list = ENSEMBLE_SUITE.__wit_list();
        let names: Vec<&str> = list.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["passes", "fails", "skips", "unit", "io-error", "nested::inner"]);
        assert!(!list[0].ignored && list[1].ignored);
        assert_eq!(list[2].tags, ["net", "slow"]);
        assert_eq!(list[2].timeout_ms, Some(2000));
        assert_eq!(list[0].timeout_ms, None);
    }

    #[test]
    fn runs_tests_by_name() {
        assert!(matches!(ENSEMBLE_SUITE.__wit_run("passes"), wit::TestResult::Pass));
        assert!(matches!(ENSEMBLE_SUITE.__wit_run("unit"), wit::TestResult::Pass));
        assert!(matches!(ENSEMBLE_SUITE.__wit_run("nested::inner"), wit::TestResult::Pass));
        match ENSEMBLE_SUITE.__wit_run("fails") {
            wit::TestResult::Fail(message) => {
                assert!(
                    message.starts_with("vectors of ints: check_eq failed: vec![1, 2] == vec![1, 3]"),
                    "{message}"
                );
                assert!(message.contains("left: [1, 2]"), "{message}");
                assert!(message.contains("right: [1, 3]"), "{message}");
            }
            other => panic!("expected a failure, got {other:?}"),
        }
        match ENSEMBLE_SUITE.__wit_run("skips") {
            wit::TestResult::Skip(reason) => assert_eq!(reason, "not here"),
            other => panic!("expected a skip, got {other:?}"),
        }
        match ENSEMBLE_SUITE.__wit_run("io-error") {
            wit::TestResult::Fail(message) => assert_eq!(message, "disk on fire"),
            other => panic!("expected a failure, got {other:?}"),
        }
    }

    #[test]
    fn unknown_test_fails_naming_it() {
        let failure = ENSEMBLE_SUITE.run("nope").unwrap_err();
        assert!(!failure.is_skip());
        assert!(failure.message().starts_with("no test named `nope`"), "{}", failure.message());
        assert!(failure.message().contains("passes, fails"));
    }

    #[test]
    fn heapsort_sorts_by_hash_keeping_indices() {
        let mut keys = [(5, 0), (1, 1), (9, 2), (1, 3), (0, 4), (7, 5)];
        heapsort(&mut keys);
        let hashes: Vec<u64> = keys.iter().map(|k| k.0).collect();
        assert_eq!(hashes, [0, 1, 1, 5, 7, 9]);
        let mut indices: Vec<usize> = keys.iter().map(|k| k.1).collect();
        indices.sort();
        assert_eq!(indices, [0, 1, 2, 3, 4, 5]);
    }

    fn noop() -> TestResult {
        Ok(())
    }

    #[test]
    fn a_name_twice_panics_wherever_it_is() {
        static ONCE: [TestCase; 3] =
            [TestCase::new("a", noop), TestCase::new("b", noop), TestCase::new("c", noop)];
        assert_eq!(Suite::new(&ONCE).tests().len(), 3);
        static TWICE: [TestCase; 4] = [
            TestCase::new("c", noop),
            TestCase::new("a", noop),
            TestCase::new("b", noop),
            TestCase::new("a", noop),
        ];
        let panicked = std::panic::catch_unwind(|| Suite::new(&TWICE)).unwrap_err();
        assert_eq!(panicked.downcast_ref::<&str>(), Some(&"two tests of the suite have the same name"));
    }

    #[test]
    fn the_index_finds_every_test_and_only_those() {
        let tests: Vec<TestCase> =
            (0..300).map(|i| TestCase::new(String::leak(format!("t{}::case", i * 7)), noop)).collect();
        let tests: &'static [TestCase] = tests.leak();
        let index: &'static [(u64, usize)] = Box::leak(Box::new(Suite::__index::<300>(tests)));
        let suite = Suite::__indexed(tests, index);
        for test in tests {
            assert_eq!(suite.find(test.name()).map(TestCase::name), Some(test.name()));
        }
        for unknown in ["t1::case", "", "t0::cas", "t0::casee"] {
            assert!(suite.find(unknown).is_none(), "{unknown}");
        }
        // Names that share a hash sit in one run, compared name by name.
        static ABC: [TestCase; 3] =
            [TestCase::new("a", noop), TestCase::new("b", noop), TestCase::new("c", noop)];
        let h = fnv1a("c");
        let shared: &'static [(u64, usize)] = Box::leak(Box::new([(h, 0), (h, 1), (h, 2)]));
        let suite = Suite::__indexed(&ABC, shared);
        assert_eq!(suite.find("c").map(TestCase::name), Some("c"));
        assert!(suite.find("b").is_none(), "b's own hash is not in this index");
    }

    #[test]
    fn str_eq_compares_bytes() {
        assert!(str_eq("abc", "abc"));
        assert!(!str_eq("abc", "abd"));
        assert!(!str_eq("ab", "abc"));
    }
}
