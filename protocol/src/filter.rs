//! Test selection: the one parser and matcher of filter expressions, used
//! by `ensemble run -E`, a plan entry's `filter` and the plan editor.
//!
//! ```text
//! expr     = or
//! or       = and  { ("or" | "|") and }
//! and      = not  { ("and" | "&") not }
//! not      = ("not" | "!") not | atom
//! atom     = "(" expr ")" | "all()" | "none()" | field "(" matcher ")"
//! field    = "test" | "tag" | "role" | "suite" | "profile"
//! matcher  = "=" text      exactly text
//!          | "~" text      contains text
//!          | "/" regex "/" matches the regular expression (anywhere)
//!          | text          test(): contains; the others: exactly
//! ```
//!
//! `text` runs to the closing parenthesis, trimmed; a regex may hold
//! parentheses and `\/`. `not` binds tighter than `and`, `and` than `or`.
//!
//! Bounds: an expression is at most [`MAX_FILTER_LEN`] bytes and nests
//! `(` and `not` at most [`MAX_FILTER_DEPTH`] deep; chains of `and`/`or`
//! are kept flat, so no input makes the parser, the matcher or a drop
//! recurse deeper than that (a filter comes from plans, i.e. from outside).

use std::fmt;

/// What a test is, for matching.
#[derive(Clone, Copy, Debug)]
pub struct TestFacts<'a> {
    pub test: &'a str,
    pub tags: &'a [String],
    pub role: &'a str,
    pub suite: &'a str,
    pub profile: &'a str,
}

/// A parsed filter expression.
#[derive(Clone, Debug)]
pub struct Filter {
    source: String,
    expr: Expr,
}

impl PartialEq for Filter {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// The longest filter expression taken, in bytes.
pub const MAX_FILTER_LEN: usize = 16 * 1024;
/// How deep `(` and `not` may nest in a filter expression.
pub const MAX_FILTER_DEPTH: usize = 32;

/// A parsed expression. `And`/`Or` hold every operand of a chain at one
/// level, so the tree is only as deep as the source's nesting.
#[derive(Clone, Debug)]
enum Expr {
    All,
    None,
    Is(Field, Matcher),
    Not(Box<Expr>),
    And(Vec<Expr>),
    Or(Vec<Expr>),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Test,
    Tag,
    Role,
    Suite,
    Profile,
}

impl Field {
    const ALL: [(&'static str, Field); 5] = [
        ("test", Field::Test),
        ("tag", Field::Tag),
        ("role", Field::Role),
        ("suite", Field::Suite),
        ("profile", Field::Profile),
    ];
}

#[derive(Clone, Debug)]
enum Matcher {
    Exact(String),
    Contains(String),
    Regex(regex_lite::Regex),
}

impl Matcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            Matcher::Exact(t) => s == t,
            Matcher::Contains(t) => s.contains(t.as_str()),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

/// Why an expression does not parse: where (a 1-based column, in
/// characters) and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FilterError {
    pub column: usize,
    pub message: String,
    expression: String,
}

impl std::error::Error for FilterError {}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pad = " ".repeat(self.column - 1);
        write!(f, "at column {}: {}\n  {}\n  {pad}^", self.column, self.message, self.expression)
    }
}

impl Filter {
    /// Parses `source`; see the module's grammar.
    pub fn parse(source: &str) -> Result<Filter, FilterError> {
        if source.len() > MAX_FILTER_LEN {
            return Err(FilterError {
                column: 1,
                message: format!(
                    "the expression is {} bytes long, over the limit of {MAX_FILTER_LEN}",
                    source.len()
                ),
                // Not repeated whole in the message: it is what is too long.
                expression: source.chars().take(80).collect(),
            });
        }
        let mut p = Parser { src: source, pos: 0, depth: 0 };
        let expr = p.or()?;
        p.skip_space();
        if p.pos < source.len() {
            return Err(p.error(p.pos, "expected `and`, `or` or the end of the expression"));
        }
        Ok(Filter { source: source.to_string(), expr })
    }

    /// Whether the test these facts describe is selected.
    pub fn matches(&self, facts: &TestFacts) -> bool {
        eval(&self.expr, facts)
    }

    /// The expression as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Either filter (`(a) or (b)`).
    pub fn or(&self, other: &Filter) -> Filter {
        Filter {
            source: format!("({}) or ({})", self.source, other.source),
            expr: Expr::Or(vec![self.expr.clone(), other.expr.clone()]),
        }
    }

    /// Both filters at once (`(a) and (b)`).
    pub fn and(&self, other: &Filter) -> Filter {
        Filter {
            source: format!("({}) and ({})", self.source, other.source),
            expr: Expr::And(vec![self.expr.clone(), other.expr.clone()]),
        }
    }
}

fn eval(e: &Expr, f: &TestFacts) -> bool {
    match e {
        Expr::All => true,
        Expr::None => false,
        Expr::Is(field, m) => match field {
            Field::Test => m.matches(f.test),
            Field::Tag => f.tags.iter().any(|t| m.matches(t)),
            Field::Role => m.matches(f.role),
            Field::Suite => m.matches(f.suite),
            Field::Profile => m.matches(f.profile),
        },
        Expr::Not(e) => !eval(e, f),
        Expr::And(all) => all.iter().all(|e| eval(e, f)),
        Expr::Or(any) => any.iter().any(|e| eval(e, f)),
    }
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset.
    pos: usize,
    /// How many `(` and `not` enclose the current position.
    depth: usize,
}

impl Parser<'_> {
    fn error(&self, at: usize, message: impl Into<String>) -> FilterError {
        FilterError {
            column: self.src[..at.min(self.src.len())].chars().count() + 1,
            message: message.into(),
            expression: self.src.to_string(),
        }
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.src.len() - trimmed.len();
    }

    /// Takes `word` if it comes next as a whole word (or symbol).
    fn eat(&mut self, word: &str) -> bool {
        self.skip_space();
        let rest = self.rest();
        if !rest.starts_with(word) {
            return false;
        }
        let alphabetic = word.chars().all(|c| c.is_ascii_alphabetic());
        let next = rest[word.len()..].chars().next();
        if alphabetic && next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
            return false;
        }
        self.pos += word.len();
        true
    }

    fn or(&mut self) -> Result<Expr, FilterError> {
        let mut any = vec![self.and()?];
        while self.eat("or") || self.eat("|") {
            any.push(self.and()?);
        }
        Ok(if any.len() == 1 { any.pop().expect("one") } else { Expr::Or(any) })
    }

    fn and(&mut self) -> Result<Expr, FilterError> {
        let mut all = vec![self.not()?];
        while self.eat("and") || self.eat("&") {
            all.push(self.not()?);
        }
        Ok(if all.len() == 1 { all.pop().expect("one") } else { Expr::And(all) })
    }

    /// One level deeper (a `(` or a `not` at byte `at`), refused past
    /// [`MAX_FILTER_DEPTH`].
    fn enter(&mut self, at: usize) -> Result<(), FilterError> {
        self.depth += 1;
        if self.depth > MAX_FILTER_DEPTH {
            return Err(self.error(
                at,
                format!("`(` and `not` nest more than {MAX_FILTER_DEPTH} deep here; write it flatter"),
            ));
        }
        Ok(())
    }

    fn not(&mut self) -> Result<Expr, FilterError> {
        self.skip_space();
        let at = self.pos;
        if self.eat("not") || self.eat("!") {
            self.enter(at)?;
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Expr, FilterError> {
        self.skip_space();
        let start = self.pos;
        if self.eat("(") {
            self.enter(start)?;
            let inner = self.or()?;
            self.depth -= 1;
            if !self.eat(")") {
                return Err(
                    self.error(self.pos, format!("expected `)` to close the `(` at column {}", start + 1))
                );
            }
            return Ok(inner);
        }
        let word: String =
            self.rest().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        if word.is_empty() {
            let what = if self.rest().is_empty() {
                "the end".to_string()
            } else {
                format!("{:?}", &self.rest()[..1])
            };
            return Err(self.error(
                start,
                format!("expected a predicate (test, tag, role, suite, profile, all or none), `not` or `(`, found {what}"),
            ));
        }
        self.pos += word.len();
        self.skip_space();
        if !self.rest().starts_with('(') {
            return Err(self.error(self.pos, format!("expected `(` after `{word}`")));
        }
        self.pos += 1;
        match word.as_str() {
            "all" | "none" => {
                if !self.eat(")") {
                    return Err(self.error(self.pos, format!("`{word}()` takes nothing: expected `)`")));
                }
                return Ok(if word == "all" { Expr::All } else { Expr::None });
            }
            _ => {}
        }
        let Some(&(_, field)) = Field::ALL.iter().find(|(name, _)| *name == word) else {
            return Err(self.error(
                start,
                format!("unknown predicate `{word}`: expected test, tag, role, suite, profile, all or none"),
            ));
        };
        let matcher = self.matcher(field)?;
        Ok(Expr::Is(field, matcher))
    }

    /// The argument of `field(`, through its closing `)`.
    fn matcher(&mut self, field: Field) -> Result<Matcher, FilterError> {
        self.skip_space();
        let start = self.pos;
        if self.rest().starts_with('/') {
            // A regex, to its unescaped closing slash.
            let body_start = self.pos + 1;
            let mut escaped = false;
            let mut end = None;
            for (i, c) in self.src[body_start..].char_indices() {
                match c {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '/' => {
                        end = Some(body_start + i);
                        break;
                    }
                    _ => {}
                }
            }
            let Some(end) = end else {
                return Err(self.error(start, "the regex has no closing `/`"));
            };
            let pattern = self.src[body_start..end].replace("\\/", "/");
            let regex = regex_lite::Regex::new(&pattern).map_err(|e| {
                self.error(start, format!("not a valid regex: {}", first_line(&e.to_string())))
            })?;
            self.pos = end + 1;
            if !self.eat(")") {
                return Err(self.error(self.pos, "expected `)` after the regex"));
            }
            return Ok(Matcher::Regex(regex));
        }
        let Some(len) = self.rest().find(')') else {
            return Err(self.error(self.src.len(), "expected `)`"));
        };
        let raw = &self.src[self.pos..self.pos + len];
        self.pos += len + 1;
        let (text, matcher): (&str, fn(String) -> Matcher) = if let Some(t) = raw.trim().strip_prefix('=') {
            (t, Matcher::Exact)
        } else if let Some(t) = raw.trim().strip_prefix('~') {
            (t, Matcher::Contains)
        } else if field == Field::Test {
            (raw, Matcher::Contains)
        } else {
            (raw, Matcher::Exact)
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(
                self.error(start, "expected something to match (a name, `=name`, `~part` or `/regex/`)")
            );
        }
        Ok(matcher(text.to_string()))
    }
}

fn first_line(s: &str) -> &str {
    s.lines().find(|l| !l.trim().is_empty()).unwrap_or(s).trim()
}

/// Which tests run with respect to `#[ignore]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum RunIgnored {
    /// Tests not marked ignored (ignored ones are reported skipped).
    #[default]
    Default,
    /// Only the tests marked ignored.
    Only,
    /// Every test, ignored or not.
    All,
}

impl RunIgnored {
    pub fn is_default(&self) -> bool {
        *self == RunIgnored::Default
    }
}

impl std::str::FromStr for RunIgnored {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(RunIgnored::Default),
            "only" => Ok(RunIgnored::Only),
            "all" => Ok(RunIgnored::All),
            other => Err(format!("{other:?}: expected default, only or all")),
        }
    }
}

/// One of N parts of a run's tests, for N CI jobs that each run one:
/// `count:K/N` deals each role's selected tests round-robin in listed
/// order, `hash:K/N` places each by a stable hash of its role and name,
/// `duration:K/N` balances each role's tests by their recorded durations
/// (longest first, each to the part with the least so far; by count when
/// none are recorded). The parts are disjoint and together cover every
/// selected test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Partition {
    pub kind: PartitionKind,
    /// 1-based: which part.
    pub index: u32,
    pub total: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartitionKind {
    Count,
    Hash,
    Duration,
}

impl std::str::FromStr for Partition {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let expected = "write it as count:K/N, hash:K/N or duration:K/N, with 1 <= K <= N";
        let (kind, part) = s.split_once(':').ok_or_else(|| format!("{s:?}: {expected}"))?;
        let kind = match kind {
            "count" => PartitionKind::Count,
            "hash" => PartitionKind::Hash,
            "duration" => PartitionKind::Duration,
            other => return Err(format!("{s:?}: no partition kind {other:?}; {expected}")),
        };
        let (k, n) = part.split_once('/').ok_or_else(|| format!("{s:?}: {expected}"))?;
        let (Ok(index), Ok(total)) = (k.trim().parse::<u32>(), n.trim().parse::<u32>()) else {
            return Err(format!("{s:?}: {expected}"));
        };
        if index == 0 || index > total {
            return Err(format!("{s:?}: part {index} of {total} does not exist; {expected}"));
        }

        Ok(Partition { kind, index, total })
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            PartitionKind::Count => "count",
            PartitionKind::Hash => "hash",
            PartitionKind::Duration => "duration",
        };
        write!(f, "{kind}:{}/{}", self.index, self.total)
    }
}

impl From<Partition> for String {
    fn from(p: Partition) -> String {
        p.to_string()
    }
}

impl TryFrom<String> for Partition {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl Partition {
    /// The part (1-based) a stable hash of `key` falls in (FNV-1a: the same
    /// on every machine and in every version).
    pub fn part_of(key: &[&str], total: u32) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for (i, piece) in key.iter().enumerate() {
            if i > 0 {
                // A byte no UTF-8 text holds between the pieces.
                h = (h ^ 0xff).wrapping_mul(0x0100_0000_01b3);
            }
            for b in piece.bytes() {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        (h % u64::from(total.max(1))) as u32 + 1
    }
}

/// Which of its suite's tests a shard runs, as the coordinator hands it
/// to a machine (from the plan entry's `filter` and the plan's settings).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Selection {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    /// Exactly these tests (the plan entry's `tests`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<std::collections::BTreeSet<String>>,
    #[serde(default, skip_serializing_if = "RunIgnored::is_default")]
    pub run_ignored: RunIgnored,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub show_filtered: bool,
    /// The shard's profile, for `profile()`.
    #[serde(default)]
    pub profile: String,
    /// The part of the run's tests this run takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<Partition>,
    /// Every test of the shard belongs to another part (its tests wait for
    /// other roles' and so stay whole, in the part the coordinator chose).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub other_part: bool,
    /// Recorded durations (ms) of the role's tests, for `duration:K/N`
    /// and `split`: one copy shared by every shard of the role.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "shared_durations")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<std::collections::BTreeMap<String, u64>>))]
    pub durations: Option<std::sync::Arc<RoleDurations>>,
    /// The entry's tests are divided among its machines (`split =
    /// "tests"`): this shard's share, as a `duration` part (by count when
    /// no durations are recorded), after any partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Partition>,
}

/// Recorded test durations in milliseconds, by role, then test: what
/// `duration:K/N` partitions balance (`ensemble durations` writes them).
pub type Durations = std::collections::BTreeMap<String, RoleDurations>;

/// One role's recorded test durations in milliseconds, by test.
pub type RoleDurations = std::collections::BTreeMap<String, u64>;

/// [`Durations`] as a run holds them: each role's once, shared by every
/// shard of the role.
pub type SharedDurations = std::collections::BTreeMap<String, std::sync::Arc<RoleDurations>>;

/// `durations`, each role's made shareable (moved, not copied).
pub fn shared(durations: Durations) -> SharedDurations {
    durations.into_iter().map(|(role, d)| (role, std::sync::Arc::new(d))).collect()
}

/// A role's durations as a JSON object, shared in memory (serde's own
/// impl for `Arc` is behind a feature every crate of the build would then
/// be rebuilt with).
mod shared_durations {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RoleDurations;

    pub fn serialize<S: Serializer>(d: &Option<Arc<RoleDurations>>, s: S) -> Result<S::Ok, S::Error> {
        d.as_deref().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<RoleDurations>>, D::Error> {
        Option::<RoleDurations>::deserialize(d).map(|o| o.map(Arc::new))
    }
}

/// The part (1-based) of each of `tests`, balanced by `durations`:
/// longest first (then by name), each to the part with the least time so
/// far (then the lowest). A test with no recorded duration counts as the
/// mean of those recorded (1 ms when none is).
pub fn balance(tests: &[&str], durations: &std::collections::BTreeMap<String, u64>, parts: u32) -> Vec<u32> {
    use std::cmp::Reverse;
    let known: Vec<u64> = tests.iter().filter_map(|t| durations.get(*t).copied()).collect();
    let total = known.iter().fold(0u64, |sum, d| sum.saturating_add(*d));
    let mean = if known.is_empty() { 1 } else { (total / known.len() as u64).max(1) };
    let cost = |t: &str| durations.get(t).copied().unwrap_or(mean).max(1);
    let mut order: Vec<usize> = (0..tests.len()).collect();
    order.sort_by(|&a, &b| cost(tests[b]).cmp(&cost(tests[a])).then_with(|| tests[a].cmp(tests[b])));
    // Parts past the number of tests stay empty (an empty part is least
    // loaded and lowest first): only those that can get a test are kept,
    // least loaded (then lowest) on top.
    let kept = (parts.max(1) as usize).min(tests.len().max(1));
    let mut load: std::collections::BinaryHeap<Reverse<(u64, u32)>> =
        (0..kept as u32).map(|p| Reverse((0, p))).collect();
    let mut part = vec![0u32; tests.len()];
    for i in order {
        let Reverse((l, least)) = load.pop().expect("at least one part");
        load.push(Reverse((l.saturating_add(cost(tests[i])), least)));
        part[i] = least + 1;
    }
    part
}

/// What becomes of one listed test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Run,
    /// Selected, but marked ignored: reported skipped ("ignored").
    Ignored,
    /// Left out by the filter or by `run_ignored = "only"`.
    FilteredOut,
}

/// A [`Selection`] with its filter parsed, ready to decide.
pub struct Selector {
    durations: Option<std::sync::Arc<RoleDurations>>,
    split: Option<Partition>,
    filter: Option<Filter>,
    tests: Option<std::collections::BTreeSet<String>>,
    run_ignored: RunIgnored,
    partition: Option<Partition>,
    other_part: bool,
    pub profile: String,
}

impl Selection {
    pub fn selector(&self) -> Result<Selector, FilterError> {
        Ok(Selector {
            durations: self.durations.clone(),
            split: self.split,
            filter: self.filter.as_deref().map(Filter::parse).transpose()?,
            tests: self.tests.clone(),
            run_ignored: self.run_ignored,
            partition: self.partition,
            other_part: self.other_part,
            profile: self.profile.clone(),
        })
    }
}

/// One listed test, as [`Selector::decide_all`] takes it.
pub struct Listed<'a> {
    pub facts: TestFacts<'a>,
    pub ignored: bool,
}

impl Selector {
    /// Whether a test the facts describe runs, and whether it is marked
    /// ignored, before partitioning.
    pub fn decide(&self, facts: &TestFacts, ignored: bool) -> Decision {
        if self.other_part
            || self.tests.as_ref().is_some_and(|t| !t.contains(facts.test))
            || self.filter.as_ref().is_some_and(|f| !f.matches(facts))
        {
            return Decision::FilteredOut;
        }
        match (self.run_ignored, ignored) {
            (RunIgnored::Default, true) => Decision::Ignored,
            (RunIgnored::Only, false) => Decision::FilteredOut,
            _ => Decision::Run,
        }
    }

    /// What becomes of each of a shard's listed tests, in order: the
    /// filter and `run_ignored`, then the partition among the selected,
    /// then the entry's split among what its part keeps.
    pub fn decide_all(&self, tests: &[Listed]) -> Vec<Decision> {
        let mut decisions: Vec<Decision> = tests.iter().map(|t| self.decide(&t.facts, t.ignored)).collect();
        for p in [self.partition, self.split].into_iter().flatten() {
            let chosen: Vec<usize> =
                (0..tests.len()).filter(|&i| decisions[i] != Decision::FilteredOut).collect();
            let parts = self.parts(p, chosen.iter().map(|&i| &tests[i].facts));
            for (i, part) in chosen.into_iter().zip(parts) {
                if part != p.index {
                    decisions[i] = Decision::FilteredOut;
                }
            }
        }
        decisions
    }

    /// The part of each of `tests` under `p`.
    fn parts<'a>(&self, p: Partition, tests: impl Iterator<Item = &'a TestFacts<'a>>) -> Vec<u32> {
        let tests: Vec<&TestFacts> = tests.collect();
        match (p.kind, &self.durations) {
            (PartitionKind::Hash, _) => {
                tests.iter().map(|t| Partition::part_of(&[t.role, t.test], p.total)).collect()
            }
            (PartitionKind::Duration, Some(durations)) if !durations.is_empty() => {
                let names: Vec<&str> = tests.iter().map(|t| t.test).collect();
                balance(&names, durations, p.total)
            }
            // Count, and durations with nothing recorded: round-robin.
            _ => (0..tests.len()).map(|n| n as u32 % p.total + 1).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn facts<'a>(test: &'a str, tags: &'a [String], role: &'a str) -> TestFacts<'a> {
        TestFacts { test, tags, role, suite: "kv-server", profile: "server-box" }
    }

    fn selected(expr: &str, test: &str, tags: &[&str], role: &str) -> bool {
        let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
        Filter::parse(expr).unwrap_or_else(|e| panic!("{expr}: {e}")).matches(&facts(test, &tags, role))
    }

    #[test]
    fn deep_or_long_input_is_refused_with_its_place_never_a_crash() {
        // Nesting past the bound: refused where it goes too deep.
        for deep in ["(".repeat(1_500), "!".repeat(10_000), "not ".repeat(3_000), "( not ".repeat(40)] {
            let err = Filter::parse(&deep).unwrap_err();
            assert!(err.message.contains("nest more than 32 deep"), "{}", err.message);
            assert!(err.column > 1 && err.column <= 200, "column {}", err.column);
        }
        // Exactly at the bound: taken.
        let at_bound = format!("{}all(){}", "(".repeat(MAX_FILTER_DEPTH), ")".repeat(MAX_FILTER_DEPTH));
        assert!(Filter::parse(&at_bound).is_ok());
        // A long flat chain parses, matches and drops without recursion.
        let chain = vec!["test(a)"; 1_000].join(" and ");
        let f = Filter::parse(&chain).unwrap();
        assert!(f.matches(&facts("a", &[], "r")));
        assert!(!f.matches(&facts("b", &[], "r")));
        let either = vec!["tag(x)"; 1_000].join(" | ") + " | test(b)";
        assert!(Filter::parse(&either).unwrap().matches(&facts("b", &[], "r")));
        // Too long as a whole: refused, saying the size, not echoing it all.
        let err = Filter::parse(&"test(a) and ".repeat(2_000)).unwrap_err();
        assert!(err.message.contains("over the limit of 16384"), "{}", err.message);
        assert!(err.to_string().len() < 400);
    }

    #[test]
    fn expressions_select_what_they_say() {
        for (expr, test, tags, role, want) in [
            ("test(put)", "puts_keys", &[][..], "server", true),
            ("test(=puts_keys)", "puts_keys", &[], "server", true),
            ("test(=puts)", "puts_keys", &[], "server", false),
            ("test(/^p.*s$/)", "puts_keys", &[], "server", true),
            ("test(/^(a|b)/)", "puts_keys", &[], "server", false),
            ("test(/a\\/b/)", "a/b", &[], "server", true),
            ("tag(slow)", "t", &["slow", "net"], "server", true),
            ("tag(slo)", "t", &["slow"], "server", false),
            ("tag(~slo)", "t", &["slow"], "server", true),
            ("role(server) and not tag(slow)", "t", &["slow"], "server", false),
            ("role(client) or tag(slow)", "t", &["slow"], "server", true),
            ("not role(client) & !tag(slow) | test(t)", "t", &["slow"], "server", true),
            ("not (role(server) or tag(x))", "t", &[], "server", false),
            ("suite(kv-server) and profile(server-box)", "t", &[], "server", true),
            ("suite(/kv/) and profile(~box)", "t", &[], "server", true),
            ("all()", "t", &[], "server", true),
            ("none() or all() and none()", "t", &[], "server", false),
            ("  test( put )  ", "puts", &[], "server", true),
            ("test(or)", "order", &[], "server", true),
            ("tags(x) ", "t", &["x"], "server", false),
        ] {
            if expr.starts_with("tags") {
                assert!(Filter::parse(expr).is_err());
                continue;
            }
            assert_eq!(selected(expr, test, tags, role), want, "{expr} on {test} {tags:?} {role}");
        }
    }

    #[test]
    fn a_bad_expression_says_where_and_what() {
        for (expr, column, says) in [
            ("test(a) an tag(b)", 9, "expected `and`, `or` or the end"),
            ("tset(a)", 1, "unknown predicate `tset`"),
            ("test a", 6, "expected `(` after `test`"),
            ("test(a", 7, "expected `)`"),
            ("(test(a)", 9, "expected `)` to close the `(` at column 1"),
            ("test(/a(/)", 6, "not a valid regex"),
            ("test(/a)", 6, "no closing `/`"),
            ("test()", 6, "expected something to match"),
            ("test(a) and", 12, "found the end"),
            ("", 1, "found the end"),
            ("all(x)", 5, "`all()` takes nothing"),
        ] {
            let e = Filter::parse(expr).expect_err(expr);
            assert_eq!(e.column, column, "{expr}: {e}");
            assert!(e.message.contains(says), "{expr}: {e}");
            let shown = e.to_string();
            assert!(shown.ends_with(&format!("{}^", " ".repeat(column - 1))), "{shown}");
        }
    }

    #[test]
    fn run_ignored_decides_with_the_filter() {
        let tags = Vec::new();
        let f = facts("t", &tags, "server");
        let decide = |filter: Option<&str>, run_ignored, ignored| {
            let selection =
                Selection { filter: filter.map(String::from), run_ignored, ..Selection::default() };
            selection.selector().unwrap().decide(&f, ignored)
        };
        use Decision::*;
        use RunIgnored as R;
        for (filter, run_ignored, ignored, want) in [
            (None, R::Default, false, Run),
            (None, R::Default, true, Ignored),
            (None, R::Only, false, FilteredOut),
            (None, R::Only, true, Run),
            (None, R::All, true, Run),
            (None, R::All, false, Run),
            (Some("test(x)"), R::All, true, FilteredOut),
            (Some("test(t)"), R::Default, true, Ignored),
        ] {
            assert_eq!(decide(filter, run_ignored, ignored), want, "{filter:?} {run_ignored:?} {ignored}");
        }
        let bad = Selection { filter: Some("test(".into()), ..Selection::default() };
        assert!(bad.selector().is_err());
    }

    #[test]
    fn partitions_are_disjoint_and_cover_every_selected_test() {
        let names: Vec<String> = (0..97).map(|i| format!("t{i}")).collect();
        let tags = vec!["slow".to_string()];
        for kind in ["count", "hash"] {
            for total in [1, 2, 3, 7] {
                let mut seen = std::collections::BTreeMap::new();
                for index in 1..=total {
                    let partition: Partition = format!("{kind}:{index}/{total}").parse().unwrap();
                    let selection = Selection {
                        filter: Some("not test(=t5)".into()),
                        partition: Some(partition),
                        ..Selection::default()
                    };
                    let listed: Vec<Listed> = names
                        .iter()
                        .map(|n| Listed { facts: facts(n, &tags, "server"), ignored: false })
                        .collect();
                    let decisions = selection.selector().unwrap().decide_all(&listed);
                    for (n, d) in names.iter().zip(decisions) {
                        if d == Decision::Run {
                            assert!(seen.insert(n.clone(), index).is_none(), "{n} twice ({kind} {total})");
                        }
                    }
                    if kind == "count" {
                        let mine = seen.values().filter(|&&i| i == index).count();
                        assert!(mine.abs_diff(96 / total as usize) <= 1, "{kind}:{index}/{total} has {mine}");
                    }
                }
                assert_eq!(seen.len(), 96, "{kind}/{total}: every selected test in one part");
                assert!(!seen.contains_key("t5"));
            }
        }
        // The same test lands in the same part every time, everywhere.
        assert_eq!(Partition::part_of(&["server", "t1"], 3), Partition::part_of(&["server", "t1"], 3));
        assert_ne!(
            (1..=20).map(|i| Partition::part_of(&["r", &format!("t{i}")], 4)).collect::<BTreeSet<_>>().len(),
            1
        );
    }

    #[test]
    fn duration_parts_balance_longest_first() {
        let durations: std::collections::BTreeMap<String, u64> =
            [("a", 90), ("b", 50), ("c", 40), ("d", 30), ("e", 20), ("f", 10)]
                .into_iter()
                .map(|(t, d)| (t.to_string(), d))
                .collect();
        let tests = ["a", "b", "c", "d", "e", "f", "new"];
        let parts = balance(&tests, &durations, 2);
        let load = |k: u32| -> u64 {
            tests
                .iter()
                .zip(&parts)
                .filter(|(_, p)| **p == k)
                .map(|(t, _)| durations.get(*t).copied().unwrap_or(40))
                .sum()
        };
        // 280 in all (the new test counts as the mean, 40): 140 each.
        assert_eq!((load(1), load(2)), (140, 140), "{parts:?}");
        assert_eq!(balance(&tests, &durations, 2), parts, "the same every time");
        // As a partition: disjoint, complete, and by count with no durations.
        for durations in [Some(std::sync::Arc::new(durations.clone())), None] {
            let mut seen = BTreeSet::new();
            for index in 1..=3 {
                let selection = Selection {
                    partition: Some(Partition { kind: PartitionKind::Duration, index, total: 3 }),
                    durations: durations.clone(),
                    ..Selection::default()
                };
                let tags = Vec::new();
                let listed: Vec<Listed> = tests
                    .iter()
                    .map(|t| Listed { facts: facts(t, &tags, "server"), ignored: false })
                    .collect();
                for (t, d) in tests.iter().zip(selection.selector().unwrap().decide_all(&listed)) {
                    if d == Decision::Run {
                        assert!(seen.insert(*t), "{t} twice");
                    }
                }
            }
            assert_eq!(seen.len(), tests.len());
        }
    }

    #[test]
    fn balancing_into_more_parts_than_tests_costs_no_more_than_the_tests() {
        let durations: std::collections::BTreeMap<String, u64> =
            [("a".to_string(), u64::MAX), ("b".to_string(), u64::MAX)].into();
        // Four billion parts, three tests: each test its own part, at once.
        assert_eq!(balance(&["a", "b", "c"], &durations, u32::MAX), [1, 2, 3]);
    }

    #[test]
    fn partitions_parse_and_say_what_is_wrong() {
        let p: Partition = "hash:2/3".parse().unwrap();
        assert_eq!((p.kind, p.index, p.total), (PartitionKind::Hash, 2, 3));
        assert_eq!(p.to_string(), "hash:2/3");
        for (bad, says) in [
            ("hash:0/3", "part 0 of 3 does not exist"),
            ("count:4/3", "part 4 of 3 does not exist"),
            ("slice:1/2", "no partition kind \"slice\""),
            ("count:1", "count:K/N, hash:K/N or duration:K/N"),
            ("1/2", "count:K/N, hash:K/N or duration:K/N"),
        ] {
            let e = bad.parse::<Partition>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn filters_combine_with_and() {
        let a = Filter::parse("role(server)").unwrap();
        let b = Filter::parse("tag(slow) or test(x)").unwrap();
        let both = a.and(&b);
        assert_eq!(both.source(), "(role(server)) and (tag(slow) or test(x))");
        let tags = vec!["slow".to_string()];
        assert!(both.matches(&facts("t", &tags, "server")));
        assert!(!both.matches(&facts("t", &tags, "client")));
        assert_eq!(Filter::parse(both.source()).unwrap(), both);
    }
}
