//! The memory limit of one test instance.
//!
//! Unlike a plain `StoreLimits`, this limiter fails the growth with an error
//! that says what happened ("memory limit of 64MiB exceeded …"), which traps
//! the guest at the offending `memory.grow` and becomes the test's message.

use ensemble_protocol::units::ByteSize;
use wasmtime::ResourceLimiter;

pub struct MemoryLimiter {
    limit: usize,
    /// The growth that was refused, if any.
    pub exceeded: Option<usize>,
}

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        Self { limit: usize::try_from(limit).unwrap_or(usize::MAX), exceeded: None }
    }

    pub fn message(&self) -> Option<String> {
        self.exceeded.map(|desired| {
            format!(
                "memory limit of {} exceeded: the suite tried to grow its linear memory to {}",
                ByteSize(self.limit as u64),
                ByteSize(desired as u64)
            )
        })
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.exceeded = Some(desired);
            let msg = self.message().unwrap_or_default();
            return Err(wasmtime::Error::msg(msg));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; a million is far past any real suite.
        Ok(desired <= 1_000_000)
    }
}
