//! The `ensemble` binary: all logic lives in the `ensemble_runner` library.

fn main() {
    bounded_heap();
    std::process::exit(ensemble_runner::cli::main());
}

/// glibc's malloc raises its mmap threshold to the size of any large block
/// freed (up to 32 MiB), after which large blocks (a test's output, an event
/// replayed to many watchers) come from the heap arenas and stay resident
/// after they are freed. A fixed threshold keeps them mapped and returned to
/// the system when freed, so the server's memory follows what it holds.
#[allow(unsafe_code)] // the one call below, into the C library
fn bounded_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator setting; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}
