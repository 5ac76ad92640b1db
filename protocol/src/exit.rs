//! The `ensemble` process's documented exit codes.

/// Every test passed (skipped and ignored tests do not count against a run).
pub const SUCCESS: i32 = 0;
/// At least one test failed, timed out, crashed or was lost.
pub const TESTS_FAILED: i32 = 1;
/// The plan, a suite or the command line was invalid; nothing ran.
pub const BAD_INPUT: i32 = 2;
/// Ensemble itself failed (I/O, an internal error).
pub const INTERNAL: i32 = 3;
/// The server could not be reached: nothing answers at the address (not
/// started, another port, a firewall) or the network failed; nothing ran.
pub const UNREACHABLE: i32 = 4;
/// Its standard output or error was closed by the reader (`ensemble … |
/// head`): it stopped there, as a process that a closed pipe ends does
/// (128 + SIGPIPE, what a shell reports for `ls | head`'s `ls`).
pub const CLOSED_OUTPUT: i32 = 141;
