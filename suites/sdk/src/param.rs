//! Declared parameters: [`Param`], a typed handle on one plan param that
//! the suite also declares (suite ABI 0.2 `describe`), so Ensemble checks a
//! plan's params before anything runs and the editor shows them.
//!
//! A declaration is a `const`; list the suite's in [`suite!`](crate::suite)
//! with `params(...)`, and read one in a test with [`Param::get`]:
//!
//! ```
//! use std::time::Duration;
//! use ensemble_sdk::prelude::*;
//!
//! const KEYS: Param<u64> = Param::new("keys", "entries the store holds").default("100");
//! const GREETING: Param<String> = Param::new("greeting", "the greeting to expect").required();
//! const WAIT: Param<Duration> = Param::new("wait", "how long every wait may take").default("30s");
//!
//! fn counts() -> TestResult {
//!     let keys = KEYS.get()?; // 100 unless the plan entry sets `keys`
//!     check!(keys > 0);
//!     Ok(())
//! }
//!
//! ensemble_sdk::suite! {
//!     params(KEYS, GREETING, WAIT),
//!     counts,
//! }
//! # fn main() {
//! assert_eq!(ENSEMBLE_SUITE.params().len(), 3);
//! # }
//! ```
//!
//! A param is one of: required (a plan entry must set it), with a default
//! (written as text, as a plan would), or neither ([`Param::get_opt`] reads
//! it as an `Option`). Its type is the Rust type's [`ParamValue::TYPE`]:
//! text, integer, float, boolean or duration.

use std::marker::PhantomData;
use std::time::Duration;

use crate::Failure;
use crate::bindings::ensemble::suite::types::ParamType;

/// A Rust type a param's text reads as.
pub trait ParamValue: Sized {
    /// How the runner checks the text before the run.
    const TYPE: ParamType;
    /// Reads the text; the error says what was expected.
    fn parse(text: &str) -> Result<Self, String>;
}

impl ParamValue for String {
    const TYPE: ParamType = ParamType::String;
    fn parse(text: &str) -> Result<Self, String> {
        Ok(text.to_owned())
    }
}

impl ParamValue for bool {
    const TYPE: ParamType = ParamType::Boolean;
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "true" => Ok(true),
            "false" => Ok(false),
            _ => Err("not true or false".into()),
        }
    }
}

macro_rules! numbers {
    ($kind:ident: $($t:ty),*) => {$(
        impl ParamValue for $t {
            const TYPE: ParamType = ParamType::$kind;
            fn parse(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|e| format!("not a valid {}: {e}", stringify!($t)))
            }
        }
    )*};
}
numbers!(Integer: i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
numbers!(Float: f32, f64);

impl ParamValue for Duration {
    const TYPE: ParamType = ParamType::Duration;
    fn parse(text: &str) -> Result<Self, String> {
        parse_duration(text)
    }
}

/// Reads `250ms`, `30s`, `2m`, `1h 30m`, `1m30s`: whole numbers each
/// followed by a unit (ns, us, ms, s, m, h, d and their long forms) — the
/// grammar of the suite ABI's `duration` param type, which the runner
/// checks plans against (`suites/duration-vectors.txt` holds the cases
/// every reader is tested with).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad =
        |why: &str| format!("{text:?} is not a duration ({why}); write e.g. \"30s\", \"2m\" or \"250ms\"");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(bad("it is empty"));
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad("a number must come first"));
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad("the number is too large"))?;
        rest = rest[digits..].trim_start();
        let unit_len = rest.find(|c: char| !c.is_alphabetic()).unwrap_or(rest.len());
        let nanos_per: u64 = match &rest[..unit_len] {
            "ns" | "nsec" | "nanos" => 1,
            "us" | "µs" | "usec" | "micros" => 1_000,
            "ms" | "msec" | "millis" => 1_000_000,
            "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
            "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
            "h" | "hr" | "hrs" | "hour" | "hours" => 3_600_000_000_000,
            "d" | "day" | "days" => 86_400_000_000_000,
            "" => return Err(bad("a unit must follow every number")),
            _ => return Err(bad("unknown unit")),
        };
        let part = n.checked_mul(nanos_per).ok_or_else(|| bad("it is too long"))?;
        total = total.checked_add(Duration::from_nanos(part)).ok_or_else(|| bad("it is too long"))?;
        rest = rest[unit_len..].trim_start();
    }
    Ok(total)
}

/// What a declaration says, whatever its type: what `describe` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParamDecl {
    /// The key a plan entry sets under `params`.
    pub name: &'static str,
    /// How its text is read.
    pub kind: ParamType,
    /// Whether a plan entry must set it.
    pub required: bool,
    /// The text used when the entry does not set it.
    pub default: Option<&'static str>,
    /// One line for people.
    pub help: &'static str,
}

/// A declared param of type `T`; see the [module docs](self).
#[derive(Debug)]
pub struct Param<T> {
    decl: ParamDecl,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Param<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Param<T> {}

impl<T: ParamValue> Param<T> {
    /// A param named `name`, neither required nor defaulted, with one line
    /// of help.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            decl: ParamDecl { name, kind: T::TYPE, required: false, default: None, help },
            value: PhantomData,
        }
    }

    /// A plan entry must set it (the plan is rejected before the run if not).
    pub const fn required(mut self) -> Self {
        self.decl.required = true;
        self.decl.default = None;
        self
    }

    /// The value used when the entry does not set it, as a plan would write
    /// it (`"100"`, `"true"`, `"30s"`).
    pub const fn default(mut self, text: &'static str) -> Self {
        self.decl.default = Some(text);
        self.decl.required = false;
        self
    }

    /// The declaration, as `describe` reports it.
    pub const fn decl(&self) -> ParamDecl {
        self.decl
    }

    /// The entry's value, else the default; a failure naming the param when
    /// it is not set and has no default, or does not read as a `T`.
    pub fn get(&self) -> Result<T, Failure> {
        self.get_opt()?
            .ok_or_else(|| Failure::fail(format!("parameter `{}` is required but not set", self.decl.name)))
    }

    /// The entry's value, else the default, else `None`; a failure naming
    /// the param when its text does not read as a `T`.
    pub fn get_opt(&self) -> Result<Option<T>, Failure> {
        let name = self.decl.name;
        let text = crate::param(name).or_else(|| self.decl.default.map(str::to_owned));
        text.map(|text| {
            T::parse(&text).map_err(|why| Failure::fail(format!("parameter `{name}` = {text:?}: {why}")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_every_reader_reads_them() {
        let vectors = include_str!("../../duration-vectors.txt");
        for line in vectors.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (text, want) = line.split_once(" => ").expect("TEXT => NANOS or error");
            let got = parse_duration(text.trim_matches('"'));
            match want.trim() {
                "error" => assert!(got.is_err(), "{text} reads as {got:?}"),
                nanos => assert_eq!(got, Ok(Duration::from_nanos(nanos.parse().unwrap())), "{text}"),
            }
        }
    }

    #[test]
    fn durations_read_as_plans_write_them() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2 minutes"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").unwrap_err().contains("a unit must follow"));
        assert!(
            parse_duration("").is_err()
                && parse_duration("ms").is_err()
                && parse_duration("3 fortnights").is_err()
        );
    }

    #[test]
    fn declarations_say_what_describe_reports() {
        const KEYS: Param<u64> = Param::new("keys", "entries").default("100");
        const NAME: Param<String> = Param::new("name", "who").required();
        assert_eq!(
            KEYS.decl(),
            ParamDecl {
                name: "keys",
                kind: ParamType::Integer,
                required: false,
                default: Some("100"),
                help: "entries"
            }
        );
        assert!(NAME.decl().required && NAME.decl().default.is_none());
        assert_eq!(<f64 as ParamValue>::parse("0.5"), Ok(0.5));
        assert!(<bool as ParamValue>::parse("yes").is_err());
    }
}
