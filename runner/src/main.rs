//! The `ensemble` binary: all logic lives in the `ensemble_runner` library.

fn main() {
    bounded_heap();
    #[cfg(unix)]
    raise_open_files();
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

/// A server holds up to 1,024 connections besides its files: the soft limit
/// of open files (often 1,024) is raised to the hard one.
#[cfg(unix)]
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            eprintln!("ensemble: could not raise the limit of open files: {e}");
        }
    }
}
