//! Captured stdout and stderr of one test instance.
//!
//! Both streams land in one buffer, interleaved as a terminal would show them,
//! capped at the plan's output limit: bytes past the cap are counted, not kept,
//! so a suite that floods its output cannot exhaust the runner's memory. The
//! tail of stderr is also kept on its own (bounded) so that a panic message
//! can be found even after a flood.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// The start of the line a Rust panic adds, suggesting a variable a
/// sandboxed test cannot be given.
const BACKTRACE_NOTE: &str = "note: run with `RUST_BACKTRACE=";

/// How much of stderr's tail is kept for finding a panic message.
const STDERR_TAIL: usize = 16 * 1024;

#[derive(Default)]
struct Inner {
    kept: Vec<u8>,
    dropped: u64,
    stderr_tail: Vec<u8>,
}

/// The shared capture of one instance; cheap to clone.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Inner>>,
    limit: usize,
}

impl Capture {
    pub fn new(limit: usize) -> Self {
        Self { inner: Arc::default(), limit }
    }

    fn write(&self, buf: &[u8], stderr: bool) {
        let mut inner = self.inner.lock().expect("capture lock");
        let room = self.limit.saturating_sub(inner.kept.len());
        let keep = room.min(buf.len());
        inner.kept.extend_from_slice(&buf[..keep]);
        inner.dropped += (buf.len() - keep) as u64;
        if stderr {
            let tail = &mut inner.stderr_tail;
            tail.extend_from_slice(&buf[buf.len().saturating_sub(STDERR_TAIL)..]);
            if tail.len() > STDERR_TAIL {
                let cut = tail.len() - STDERR_TAIL;
                tail.drain(..cut);
            }
        }
    }

    /// The captured text, with a closing note when some was dropped.
    /// Adds a note of the runner's to the test's stderr (a refused HTTP
    /// request, say), within the same limit as the guest's own output.
    pub fn note(&self, text: &str) {
        self.write(text.as_bytes(), true);
    }

    pub fn text(&self) -> String {
        let inner = self.inner.lock().expect("capture lock");
        let mut text = String::from_utf8_lossy(&inner.kept).into_owned();
        if text.contains(BACKTRACE_NOTE) {
            // A sandboxed test has no environment to set it in: the advice misleads.
            text =
                text.lines().filter(|l| !l.starts_with(BACKTRACE_NOTE)).map(|l| format!("{l}\n")).collect();
        }
        if inner.dropped > 0 {
            if !text.ends_with('\n') && !text.is_empty() {
                text.push('\n');
            }
            text.push_str(&format!(
                "[ensemble: output truncated at {} bytes; {} more bytes dropped]\n",
                self.limit, inner.dropped
            ));
        }
        text
    }

    /// The message of a Rust panic printed to stderr, if there was one:
    /// the text after "panicked at <location>:" up to the "note:" line.
    pub fn panic_message(&self) -> Option<String> {
        let inner = self.inner.lock().expect("capture lock");
        let tail = String::from_utf8_lossy(&inner.stderr_tail);
        let start = tail.rfind("panicked at ")?;
        let rest = &tail[start..];
        let mut lines = rest.lines();
        let first = lines.next()?.trim_end_matches(':');
        let location = first.trim_start_matches("panicked at ").to_string();
        let body: Vec<&str> =
            lines.take_while(|l| !l.starts_with("note: ") && !l.starts_with("stack backtrace")).collect();
        let body = body.join("\n").trim().to_string();
        Some(if body.is_empty() {
            format!("panicked at {location}")
        } else {
            format!("{body} (panicked at {location})")
        })
    }

    /// One side of the capture, to hand to WASI as stdout or stderr.
    pub fn stream(&self, stderr: bool) -> CaptureStream {
        CaptureStream { capture: self.clone(), stderr }
    }
}

/// stdout or stderr of an instance, writing into a [`Capture`].
#[derive(Clone)]
pub struct CaptureStream {
    capture: Capture,
    stderr: bool,
}

impl IsTerminal for CaptureStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CaptureStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for CaptureStream {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.capture.write(buf, self.stderr);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_and_counts_the_rest() {
        let c = Capture::new(10);
        c.write(b"hello ", false);
        c.write(b"world, again", false);
        let text = c.text();
        assert!(text.starts_with("hello worl\n"), "{text}");
        assert!(text.contains("8 more bytes dropped"), "{text}");
    }

    #[test]
    fn finds_the_panic_message_after_a_flood() {
        let c = Capture::new(4);
        c.write(&vec![b'x'; 100_000], true);
        c.write(
            b"\nthread 'main' panicked at src/lib.rs:3:5:\nboom: 42\nnote: run with `RUST_BACKTRACE=1`\n",
            true,
        );
        assert_eq!(c.panic_message().unwrap(), "boom: 42 (panicked at src/lib.rs:3:5)");

        assert_eq!(Capture::new(4).panic_message(), None);
    }

    #[test]
    fn no_backtrace_advice_a_sandboxed_test_cannot_follow() {
        let c = Capture::new(1 << 10);
        c.write(b"before\nthread 'main' panicked at src/lib.rs:3:5:\nboom\n", true);
        c.write(b"note: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n", true);
        c.write(b"after\n", false);
        assert_eq!(c.text(), "before\nthread 'main' panicked at src/lib.rs:3:5:\nboom\nafter\n");
    }
}
