//! What machines attach, checked before it is stored.
//!
//! A machine's runner already holds a suite to the plan's rules when it
//! attaches, but the coordinator trusts no machine with the run as a whole:
//! it checks every attachment event again. The bytes must be there, match
//! their size and sha256, belong to a test the shard is running, carry a
//! plain file name not yet used by that attempt, and stay within the plan's
//! `attachment_limit` (the attempt's [`Budget`], the same rule the runner's
//! host applies). A refused attachment
//! becomes a warning in the test's log, so the run goes on and says why.

use std::collections::HashMap;

use ensemble_protocol::EventKind;
use ensemble_protocol::attachment::{Budget, MAX_PER_RUN};
use ensemble_protocol::units::ByteSize;

use crate::sandbox::sha256_hex;

/// The attachments of each running attempt, by shard and test (a shard
/// whose tests are independent runs several at once).
#[derive(Debug, Default)]
pub struct Attached {
    limit: u64,
    by_attempt: HashMap<u32, HashMap<String, Budget>>,
    /// Bytes the run's attachments took so far, against `run_limit`.
    run_bytes: u64,
    run_limit: u64,
}

impl Attached {
    /// Attempts may attach up to `limit` bytes each.
    pub fn new(limit: u64) -> Attached {
        Attached::with_run_limit(limit, MAX_PER_RUN)
    }

    /// Attempts may attach up to `limit` bytes each, the run `run_limit`.
    pub fn with_run_limit(limit: u64, run_limit: u64) -> Attached {
        Attached { limit, by_attempt: HashMap::new(), run_bytes: 0, run_limit }
    }

    /// An attempt of `test` on `shard` started or ended: its budget goes
    /// (the next attempt's is whole).
    pub fn reset(&mut self, shard: u32, test: &str) {
        if let Some(tests) = self.by_attempt.get_mut(&shard) {
            tests.remove(test);
        }
    }

    /// Takes an attachment event of `shard`, whose running tests are
    /// `running`, into its attempt's budget; or says why it is refused.
    /// Events of other kinds pass.
    pub fn check(&mut self, shard: u32, running: &[String], event: &EventKind) -> Result<(), String> {
        let EventKind::Attachment { test, name, sha256, size, data, .. } = event else { return Ok(()) };
        let Some(data) = data else {
            return Err(format!("the attachment {name:?} came without its bytes"));
        };
        if !running.contains(test) {
            return Err(format!(
                "the attachment {name:?} names the test {test:?}, which this shard is not running"
            ));
        }
        if data.0.len() as u64 != *size {
            return Err(format!("the attachment {name:?} says {size} bytes but carries {}", data.0.len()));
        }
        if sha256_hex(&data.0) != *sha256 {
            return Err(format!("the attachment {name:?} does not match its sha256"));
        }
        if self.run_bytes.saturating_add(*size) > self.run_limit {
            return Err(format!(
                "the attachment {name:?} ({}) would take the run's attachments over the limit of {} a run may keep",
                ByteSize(*size),
                ByteSize(self.run_limit)
            ));
        }
        let budget = self.by_attempt.entry(shard).or_default().entry(test.clone()).or_default();
        budget.admit(name, *size, self.limit)?;
        self.run_bytes += *size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::ShardRef;
    use ensemble_protocol::attachment::{Blob, MAX_PER_TEST};

    /// The running tests of shard 1 in most cases: `t`.
    fn t() -> Vec<String> {
        vec!["t".to_string()]
    }

    fn attachment(test: &str, name: &str, bytes: &[u8]) -> EventKind {
        EventKind::Attachment {
            shard: ShardRef {
                shard: 1,
                machine: "m".into(),
                role: "r".into(),
                suite: "s".into(),
                instance: 0,
            },
            test: test.into(),
            name: name.into(),
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
            data: Some(Blob(bytes.to_vec())),
        }
    }

    #[test]
    fn honest_attachments_pass_within_the_limit_per_attempt() {
        let mut a = Attached::new(10);
        assert_eq!(a.check(1, &t(), &attachment("t", "a.log", b"12345")), Ok(()));
        assert_eq!(a.check(1, &t(), &attachment("t", "b.log", b"12345")), Ok(()));
        let over = a.check(1, &t(), &attachment("t", "c.log", b"1")).unwrap_err();
        assert!(over.contains("11B, over the plan's attachment_limit of 10B"), "{over}");
        // Another shard, and the next attempt, have budgets of their own.
        assert_eq!(a.check(2, &t(), &attachment("t", "c.log", b"1")), Ok(()));
        a.reset(1, "t");
        assert_eq!(a.check(1, &t(), &attachment("t", "a.log", b"12345")), Ok(()));
    }

    #[test]
    fn tests_running_at_once_on_a_shard_have_budgets_of_their_own() {
        let mut a = Attached::new(10);
        let both = ["t".to_string(), "u".to_string()];
        assert_eq!(a.check(1, &both, &attachment("t", "a.log", b"1234567890")), Ok(()));
        assert_eq!(a.check(1, &both, &attachment("u", "a.log", b"1234567890")), Ok(()));
        a.reset(1, "t");
        let why = a.check(1, &both[1..], &attachment("t", "b.log", b"1")).unwrap_err();
        assert!(why.contains("not running"), "{why}");
    }

    #[test]
    fn a_lying_machine_is_refused_with_the_reason() {
        let mut a = Attached::new(1 << 20);
        let refused = |a: &mut Attached, running: &[String], e: EventKind, says: &str| {
            let why = a.check(1, running, &e).unwrap_err();
            assert!(why.contains(says), "{why}");
        };
        refused(&mut a, &t(), attachment("other", "a.log", b"x"), "not running");
        refused(&mut a, &[], attachment("t", "a.log", b"x"), "not running");
        refused(&mut a, &t(), attachment("t", "../a.log", b"x"), "path separators");
        let mut wrong_size = attachment("t", "a.log", b"xyz");
        if let EventKind::Attachment { size, .. } = &mut wrong_size {
            *size = 1;
        }
        refused(&mut a, &t(), wrong_size, "says 1 bytes but carries 3");
        let mut wrong_sha = attachment("t", "a.log", b"xyz");
        if let EventKind::Attachment { sha256, .. } = &mut wrong_sha {
            *sha256 = sha256_hex(b"abc");
        }
        refused(&mut a, &t(), wrong_sha, "does not match its sha256");
        let mut no_bytes = attachment("t", "a.log", b"xyz");
        if let EventKind::Attachment { data, .. } = &mut no_bytes {
            *data = None;
        }
        refused(&mut a, &t(), no_bytes, "without its bytes");
        assert_eq!(a.check(1, &t(), &attachment("t", "a.log", b"x")), Ok(()));
        refused(&mut a, &t(), attachment("t", "a.log", b"y"), "already attached");
        for i in 1..MAX_PER_TEST {
            assert_eq!(a.check(1, &t(), &attachment("t", &format!("{i}.log"), b"x")), Ok(()));
        }
        refused(&mut a, &t(), attachment("t", "last.log", b"x"), "more than 64 attachments");
    }

    #[test]
    fn a_run_keeps_no_more_than_its_run_limit_whatever_its_attempts_do() {
        let mut a = Attached::with_run_limit(10, 25);
        for (shard, test) in [(1, "t"), (2, "t")] {
            assert_eq!(a.check(shard, &t(), &attachment(test, "a.log", b"1234567890")), Ok(()));
        }
        a.reset(1, "t");
        let why = a.check(1, &t(), &attachment("t", "b.log", b"1234567890")).unwrap_err();
        assert!(why.contains("over the limit of 25B a run may keep"), "{why}");
        assert_eq!(a.check(1, &t(), &attachment("t", "c.log", b"12345")), Ok(()), "room is room");
    }

    #[test]
    fn a_zero_limit_refuses_every_attachment() {
        let mut a = Attached::new(0);
        let why = a.check(1, &t(), &attachment("t", "a.log", b"x")).unwrap_err();
        assert!(why.contains("attachment_limit of 0B"), "{why}");
    }
}
