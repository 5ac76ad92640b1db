//! Files a test attaches to its result: the rules every side applies.
//!
//! A suite attaches a named blob to the running test (the suite ABI's
//! `attach` import). The bytes travel once, machine to coordinator, inside
//! the [`EventKind::Attachment`] event ([`Blob`], base64 in JSON); the
//! coordinator checks them against these rules, stores them by sha256 and
//! keeps only the metadata in the event. Readers fetch the bytes by sha256.
//!
//! A name is one file name, safe on every OS the reports are written on
//! (`[[ATTACHMENT|path]]` lines in JUnit point at files): no path separator,
//! none of the characters Windows refuses, no control characters, no leading
//! dot or space, no trailing dot or space.
//!
//! [`EventKind::Attachment`]: crate::EventKind::Attachment

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest attachment name, in bytes.
pub const MAX_NAME_BYTES: usize = 128;
/// The most attachments one test attempt may make.
pub const MAX_PER_TEST: u32 = 64;
/// The largest `attachment_limit` a plan may set: one attachment travels in
/// one machine frame.
pub const MAX_LIMIT: u64 = 32 << 20;
/// The most bytes all of one run's attachments may hold: past it, the
/// coordinator refuses further attachments of the run (with a warning in
/// the test's log) and the run goes on.
pub const MAX_PER_RUN: u64 = 256 << 20;

/// What is wrong with an attachment name, if anything.
pub fn name_problem(name: &str) -> Option<String> {
    const REFUSED: &[char] = &['/', '\\', ':', '*', '?', '"', '<', '>', '|'];
    if name.is_empty() {
        return Some("an attachment name is empty".into());
    }
    if name.len() > MAX_NAME_BYTES {
        return Some(format!(
            "the attachment name {:?}… is {} bytes long; the limit is {MAX_NAME_BYTES}",
            name.chars().take(32).collect::<String>(),
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| c.is_control() || REFUSED.contains(c)) {
        return Some(format!(
            "the attachment name {name:?} holds {c:?}; a name is one file name (no path separators, control characters or any of : * ? \" < > |)"
        ));
    }
    if name.starts_with(['.', ' ']) || name.ends_with(['.', ' ']) {
        return Some(format!(
            "the attachment name {name:?} starts or ends with a dot or a space; name it like a plain file (\"server.log\")"
        ));
    }
    None
}

/// What one test attempt attached so far, and the one rule for the next:
/// a plain file name not used yet, at most [`MAX_PER_TEST`] attachments,
/// at most `limit` bytes in all. The runner's host and the coordinator both
/// hold attempts to it.
#[derive(Clone, Debug, Default)]
pub struct Budget {
    names: std::collections::HashSet<String>,
    bytes: u64,
}

impl Budget {
    /// Takes `name` with `size` bytes into the attempt's budget of `limit`
    /// bytes, or says why not (and takes nothing).
    pub fn admit(&mut self, name: &str, size: u64, limit: u64) -> Result<(), String> {
        use crate::units::ByteSize;
        if let Some(problem) = name_problem(name) {
            return Err(problem);
        }
        if self.names.contains(name) {
            return Err(format!("{name:?} is already attached to this attempt"));
        }
        if self.names.len() as u32 >= MAX_PER_TEST {
            return Err(format!("a test attempt may make no more than {MAX_PER_TEST} attachments"));
        }
        let total = self.bytes.saturating_add(size);
        if total > limit {
            return Err(format!(
                "the attachment {name:?} ({}) would bring this attempt's attachments to {}, over the plan's attachment_limit of {}",
                ByteSize(size),
                ByteSize(total),
                ByteSize(limit)
            ));
        }
        self.bytes = total;
        self.names.insert(name.to_string());
        Ok(())
    }
}

/// The content type an attachment is served with, from its name's
/// extension: a few kinds a browser shows safely; anything else downloads.
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "out" | "err" | "csv" | "md" => "text/plain; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        _ => "application/octet-stream",
    }
}

/// Hex sha256 digits as the store names a blob: 64 lowercase hex digits.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Attachment bytes on the wire: base64 (standard alphabet, padded) in JSON.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Blob(pub Vec<u8>);

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        let text = std::borrow::Cow::<'de, str>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Blob)
            .map_err(|e| serde::de::Error::custom(format!("attachment data is not base64: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_portable_file_names() {
        for good in ["server.log", "screenshot 1.png", "trace-2026_11_28.json", "résumé.txt", "a"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for (bad, says) in [
            ("", "empty"),
            ("../etc/passwd", "path separators"),
            ("a/b", "path separators"),
            ("a\\b", "path separators"),
            ("c:x", "path separators"),
            ("bell\u{7}", "control"),
            ("line\nbreak", "control"),
            (".hidden", "starts or ends"),
            ("..", "starts or ends"),
            ("trailing.", "starts or ends"),
            (" x", "starts or ends"),
        ] {
            let problem = name_problem(bad).unwrap_or_else(|| panic!("{bad:?} was accepted"));
            assert!(problem.contains(says), "{bad:?}: {problem}");
        }
        let long = "x".repeat(MAX_NAME_BYTES + 1);
        assert!(name_problem(&long).unwrap().contains("129 bytes"));
        assert_eq!(name_problem(&"x".repeat(MAX_NAME_BYTES)), None);
    }

    #[test]
    fn only_known_kinds_get_a_shown_content_type() {
        assert_eq!(content_type("a.LOG"), "text/plain; charset=utf-8");
        assert_eq!(content_type("shot.png"), "image/png");
        assert_eq!(content_type("page.html"), "application/octet-stream");
        assert_eq!(content_type("image.svg"), "application/octet-stream");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }

    #[test]
    fn blobs_are_base64_in_json_and_every_byte_survives() {
        let bytes: Vec<u8> = (0..=255u8).chain([0, 0, 255]).collect();
        let json = serde_json::to_string(&Blob(bytes.clone())).unwrap();
        assert!(json.starts_with("\"AAECAwQF"), "{json}");
        assert_eq!(serde_json::from_str::<Blob>(&json).unwrap().0, bytes);
        assert_eq!(serde_json::to_string(&Blob(Vec::new())).unwrap(), "\"\"");
        let err = serde_json::from_str::<Blob>("\"not base64!\"").unwrap_err().to_string();
        assert!(err.contains("not base64"), "{err}");
    }

    #[test]
    fn sha256_names_are_lowercase_hex_of_64() {
        assert!(is_sha256(&"ab".repeat(32)));
        assert!(!is_sha256(&"AB".repeat(32)));
        assert!(!is_sha256("ab"));
        assert!(!is_sha256(&"zz".repeat(32)));
    }
}
