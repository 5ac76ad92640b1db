//! Log lines that a peer can cause, at a bounded rate.
//!
//! Anything a remote party triggers at will (a refused token, a malformed
//! frame, a connection over the cap) is logged through a [`Throttle`]: at
//! most so many lines a minute per call site, and the next line that gets
//! through says how many were left out. A flood of bad requests then grows
//! the log by a few kilobytes a minute, not by what the flood sends.

use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);

/// A per-call-site budget of log lines: `static T: Throttle = Throttle::per_minute(20);`.
pub struct Throttle {
    per_window: u32,
    state: Mutex<State>,
}

struct State {
    window_start: Option<Instant>,
    logged: u32,
    skipped: u64,
}

impl Throttle {
    pub const fn per_minute(lines: u32) -> Throttle {
        Throttle { per_window: lines, state: Mutex::new(State { window_start: None, logged: 0, skipped: 0 }) }
    }

    /// `Some(lines left out since the last one logged)` when this line may be
    /// logged, `None` when it is over the budget.
    pub fn allow(&self) -> Option<u64> {
        self.allow_at(Instant::now())
    }

    fn allow_at(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if s.window_start.is_none_or(|start| now.duration_since(start) >= WINDOW) {
            s.window_start = Some(now);
            s.logged = 0;
        }
        if s.logged >= self.per_window {
            s.skipped += 1;
            return None;
        }
        s.logged += 1;
        Some(std::mem::take(&mut s.skipped))
    }
}

/// `tracing::$level!` through a [`Throttle`] declared in place: at most
/// `$n` lines a minute from this call site, each with `skipped` (the lines
/// left out before it). `throttled!(warn, 20, ?peer, "refused: {why}")`.
#[macro_export]
macro_rules! throttled {
    ($level:ident, $n:expr, $($arg:tt)+) => {{
        static THROTTLE: $crate::throttle::Throttle = $crate::throttle::Throttle::per_minute($n);
        if let Some(skipped) = THROTTLE.allow() {
            tracing::$level!(skipped, $($arg)+);
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_budget_and_the_next_window_says_how_much_was_left_out() {
        let t = Throttle::per_minute(3);
        let start = Instant::now();
        let allowed: Vec<_> = (0..1000).map(|_| t.allow_at(start)).collect();
        assert_eq!(allowed.iter().filter(|a| a.is_some()).count(), 3);
        assert_eq!(allowed[..3], [Some(0), Some(0), Some(0)]);
        assert_eq!(
            t.allow_at(start + WINDOW),
            Some(997),
            "the first line of the next minute counts the rest"
        );
        assert_eq!(t.allow_at(start + WINDOW), Some(0));
    }
}
