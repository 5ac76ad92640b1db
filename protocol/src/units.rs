//! Human-friendly durations ("30s", "1m 30s", "250ms") and byte sizes
//! ("256MiB", "1.5 GB", 4096) as they appear in plan files.
//!
//! Both serialize back to the same human form so that a plan exported as TOML
//! reads like the one a person wrote.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written as text in plans: `"30s"`, `"2m"`, `"1h 30m"`, `"500ms"`.
/// At most [`HumanDuration::MAX`]: every duration a plan sets becomes a
/// deadline (now + it), which must not overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// The longest duration a plan may write: 366 days.
    pub const MAX: HumanDuration = HumanDuration::from_secs(366 * 24 * 3600);

    pub const fn from_secs(secs: u64) -> Self {
        Self(Duration::from_secs(secs))
    }
    pub fn as_millis_u64(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let d = humantime::parse_duration(s.trim())
            .map(HumanDuration)
            .map_err(|e| format!("invalid duration {s:?} ({e}); write e.g. \"30s\", \"2m\" or \"500ms\""))?;
        if d > Self::MAX {
            return Err(format!("duration {s:?} is longer than the longest allowed, {}", Self::MAX));
        }
        Ok(d)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"30s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Err(E::custom("a bare number is ambiguous here; write the unit, e.g. \"30s\""))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(v as i64)
            }
        }
        d.deserialize_any(V)
    }
}

/// The units of a param's duration text, in nanoseconds (see
/// [`param_duration`]).
const PARAM_UNITS: [(&[&str], u64); 7] = [
    (&["ns", "nsec", "nanos"], 1),
    (&["us", "µs", "usec", "micros"], 1_000),
    (&["ms", "msec", "millis"], 1_000_000),
    (&["s", "sec", "secs", "second", "seconds"], 1_000_000_000),
    (&["m", "min", "mins", "minute", "minutes"], 60_000_000_000),
    (&["h", "hr", "hrs", "hour", "hours"], 3_600_000_000_000),
    (&["d", "day", "days"], 86_400_000_000_000),
];

/// Reads a param of the suite ABI's `duration` type: whole numbers each
/// followed by a unit (`250ms`, `30s`, `1h 30m`, `1m30s`). Narrower than
/// plan settings' durations on purpose: it is the grammar every SDK reads
/// (`suites/duration-vectors.txt`), so a value the plan check accepts is
/// one the suite can read.
pub fn param_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut parts = 0;
    let mut rest = text.trim();
    while !rest.is_empty() {
        let number_end =
            rest.char_indices().find(|(_, c)| !c.is_ascii_digit()).map_or(rest.len(), |(i, _)| i);
        let number: u64 = rest.get(..number_end)?.parse().ok()?;
        let after = rest[number_end..].trim_start();
        let unit_end = after.char_indices().find(|(_, c)| !c.is_alphabetic()).map_or(after.len(), |(i, _)| i);
        let per = PARAM_UNITS.iter().find(|(names, _)| names.contains(&&after[..unit_end]))?.1;
        total = total.checked_add(number.checked_mul(per)?)?;
        parts += 1;
        rest = after[unit_end..].trim_start();
    }
    (parts > 0).then(|| Duration::from_nanos(total))
}

#[cfg(test)]
mod param_duration_tests {
    #[test]
    fn param_durations_read_as_every_sdk_reads_them() {
        let vectors = include_str!("../../suites/duration-vectors.txt");
        for line in vectors.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
            let (text, want) = line.split_once(" => ").expect("TEXT => NANOS or error");
            let got = super::param_duration(text.trim_matches('"'));
            match want.trim() {
                "error" => assert_eq!(got, None, "{text}"),
                nanos => assert_eq!(got, Some(super::Duration::from_nanos(nanos.parse().unwrap())), "{text}"),
            }
        }
    }
}

/// A byte size written as text (`"256MiB"`, `"1GB"`, `"512 KiB"`) or as a
/// plain number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const UNITS: &[(&str, u64)] = &[
    ("b", 1),
    ("kb", 1_000),
    ("kib", 1 << 10),
    ("k", 1 << 10),
    ("mb", 1_000_000),
    ("mib", 1 << 20),
    ("m", 1 << 20),
    ("gb", 1_000_000_000),
    ("gib", 1 << 30),
    ("g", 1 << 30),
];

impl ByteSize {
    pub const fn mib(n: u64) -> Self {
        Self(n << 20)
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        for (unit, size) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if n >= size && n.is_multiple_of(size) {
                return write!(f, "{}{unit}", n / size);
            }
        }
        write!(f, "{n}B")
    }
}

impl std::str::FromStr for ByteSize {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("invalid size {s:?}; write e.g. \"256MiB\", \"1GiB\" or a number of bytes");
        let t = s.trim();
        let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let mult = if unit.is_empty() {
            1
        } else {
            UNITS.iter().find(|(u, _)| *u == unit).map(|(_, m)| *m).ok_or_else(bad)?
        };
        if num.contains('.') {
            let v: f64 = num.parse().map_err(|_| bad())?;
            let bytes = v * mult as f64;
            if !(0.0..1.8e19).contains(&bytes) {
                return Err(bad());
            }
            Ok(ByteSize(bytes as u64))
        } else {
            let v: u64 = num.parse().map_err(|_| bad())?;
            v.checked_mul(mult).map(ByteSize).ok_or_else(bad)
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as \"256MiB\" or a number of bytes")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(ByteSize(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v).map(ByteSize).map_err(|_| E::custom("a size cannot be negative"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_and_print() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap(), ByteSize::mib(256));
        assert_eq!("1 GiB".parse::<ByteSize>().unwrap().0, 1 << 30);
        assert_eq!("1.5KiB".parse::<ByteSize>().unwrap().0, 1536);
        assert_eq!("4096".parse::<ByteSize>().unwrap().0, 4096);
        assert_eq!(ByteSize::mib(256).to_string(), "256MiB");
        assert_eq!(ByteSize(1000).to_string(), "1000B");
        assert!("12 parsecs".parse::<ByteSize>().unwrap_err().contains("12 parsecs"));
    }

    #[test]
    fn durations_parse_and_print() {
        let d: HumanDuration = "1m 30s".parse().unwrap();
        assert_eq!(d.0, Duration::from_secs(90));
        assert_eq!(d.to_string(), "1m 30s");
        assert!("30x".parse::<HumanDuration>().unwrap_err().contains("30x"));
        // Past the bound, or past what humantime holds: refused, never a
        // deadline that overflows.
        assert_eq!("366d".parse::<HumanDuration>().unwrap(), HumanDuration::MAX);
        for huge in ["367d", "300000000000y", "18446744073709551615s"] {
            let err = huge.parse::<HumanDuration>().unwrap_err();
            assert!(err.contains(huge), "{err}");
        }
    }
}
