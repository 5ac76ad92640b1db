//! This machine's wall clock, the one reading every part stamps events
//! with (a leaf: anything may use it).

/// Microseconds since the Unix epoch on this machine's clock.
pub fn now_us() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}
