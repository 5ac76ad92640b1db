//! The data of the kv demo, shared by `kv-server` and `kv-client`: a
//! deterministic key/value generator and the snapshot the server publishes.
//!
//! Both roles generate the same `n` entries from nothing but `n`, so the client
//! can check the server's snapshot without ever seeing the whole store. The
//! snapshot is a small line format (no serde, to keep the suites small):
//!
//! ```text
//! count 100
//! checksum 9f3c2a1b00d4e5f6
//! sample key-00000 3a4f…
//! sample key-00050 …
//! sample key-00099 …
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// The topic the server publishes its snapshot to.
pub const STATE_TOPIC: &str = "kv/state";
/// The topic each client publishes its verdict to.
pub const VERDICT_TOPIC: &str = "kv/verdict";
/// The state the server signals once its snapshot is published.
pub const SERVER_READY: &str = "server-ready";
/// The state each client signals once its verdict is published.
pub const CLIENT_DONE: &str = "client-done";
/// Verdicts of clients that found the snapshot correct start with this.
pub const VERDICT_OK: &str = "ok";

/// The key of entry `i`.
pub fn key(i: u64) -> String {
    format!("key-{i:05}")
}

/// The value of entry `i`: a hex hash of `i` (splitmix64).
pub fn value(i: u64) -> String {
    let mut z = i.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    format!("{:016x}", z ^ (z >> 31))
}

/// An in-memory key/value store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Store {
    entries: BTreeMap<String, String>,
}

impl Store {
    /// The store holding entries `0..n` of the generator.
    pub fn generate(n: u64) -> Self {
        let mut store = Self::default();
        for i in 0..n {
            store.put(key(i), value(i));
        }
        store
    }

    /// Sets `key` to `value`, returning the previous value.
    pub fn put(&mut self, key: String, value: String) -> Option<String> {
        self.entries.insert(key, value)
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries.get(key).map(String::as_str)
    }

    /// Removes `key`, returning its value.
    pub fn delete(&mut self, key: &str) -> Option<String> {
        self.entries.remove(key)
    }

    /// How many entries the store holds.
    pub fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// FNV-1a (64 bit) over `key=value\n` of every entry, in key order.
    pub fn checksum(&self) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325_u64;
        for (key, value) in &self.entries {
            for byte in key.bytes().chain([b'=']).chain(value.bytes()).chain([b'\n']) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// The snapshot of this store: count, checksum and a few sample entries.
    pub fn snapshot(&self) -> Snapshot {
        let n = self.len();
        let mut indices = vec![0, n / 2, n.saturating_sub(1)];
        indices.dedup();
        let samples = indices
            .into_iter()
            .filter_map(|i| {
                let key = key(i);
                self.get(&key).map(|value| (key, value.to_owned()))
            })
            .collect();
        Snapshot { count: n, checksum: self.checksum(), samples }
    }
}

/// What the server publishes about its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Number of entries.
    pub count: u64,
    /// [`Store::checksum`] of the entries.
    pub checksum: u64,
    /// A few `(key, value)` entries.
    pub samples: Vec<(String, String)>,
}

impl Snapshot {
    /// The snapshot in its line format.
    pub fn encode(&self) -> String {
        let mut out = format!("count {}\nchecksum {:016x}\n", self.count, self.checksum);
        for (key, value) in &self.samples {
            let _ = writeln!(out, "sample {key} {value}");
        }
        out
    }

    /// Parses the line format; the error says which line is wrong.
    pub fn decode(text: &str) -> Result<Self, String> {
        let mut count = None;
        let mut checksum = None;
        let mut samples = Vec::new();
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("count"), Some(n), None, None) => {
                    count = Some(n.parse().map_err(|e| format!("bad count {n:?}: {e}"))?);
                }
                (Some("checksum"), Some(hex), None, None) => {
                    checksum =
                        Some(u64::from_str_radix(hex, 16).map_err(|e| format!("bad checksum {hex:?}: {e}"))?);
                }
                (Some("sample"), Some(key), Some(value), None) => {
                    samples.push((key.to_owned(), value.to_owned()));
                }
                _ => return Err(format!("unexpected line {line:?}")),
            }
        }
        Ok(Self {
            count: count.ok_or("no count line")?,
            checksum: checksum.ok_or("no checksum line")?,
            samples,
        })
    }

    /// Checks this snapshot against the generator for `expected_count`
    /// entries; the error lists every mismatch.
    pub fn verify(&self, expected_count: u64) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.count != expected_count {
            problems.push(format!("count is {} but {expected_count} was expected", self.count));
        }
        let expected_checksum = Store::generate(expected_count).checksum();
        if self.checksum != expected_checksum {
            problems.push(format!(
                "checksum is {:016x} but {expected_checksum:016x} was expected",
                self.checksum
            ));
        }
        for (sample_key, actual) in &self.samples {
            let index = sample_key.strip_prefix("key-").and_then(|i| i.parse::<u64>().ok());
            match index {
                Some(i) if i < expected_count && *actual == value(i) => {}
                Some(i) if i < expected_count => {
                    problems.push(format!("sample {sample_key} is {actual} but {} was expected", value(i)))
                }
                _ => problems.push(format!("sample key {sample_key:?} is not generated")),
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_round_trip_and_verify() {
        let snapshot = Store::generate(100).snapshot();
        assert_eq!(snapshot.samples.len(), 3);
        let decoded = Snapshot::decode(&snapshot.encode()).unwrap();
        assert_eq!(decoded, snapshot);
        assert_eq!(decoded.verify(100), Ok(()));
        assert!(decoded.verify(99).unwrap_err().contains("count is 100"));
    }
}
