//! Tests that attach files to their results.
//!
//! - `binary` attaches `blob.bin`, [`BLOB_LEN`] bytes where byte `i` is
//!   `(i % 251) ^ (i >> 8)` (every byte value, no repeating page), and
//!   `notes.txt`, a line of UTF-8 text; it passes.
//! - `fails_with_log` attaches `server.log` and fails: the log is what
//!   someone reading the failure wants.
//! - `refused` asks for what the runner must refuse (a path as a name, a
//!   name used twice, more bytes than the plan's `attachment_limit`: param
//!   `over_bytes`, 5 MiB by default, over the default 4 MiB) and passes when
//!   each is refused with a reason.

use ensemble_sdk::prelude::*;

const OVER_BYTES: Param<usize> =
    Param::new("over_bytes", "bytes `refused` attaches, over the plan's attachment_limit").default("5242880");

/// The length of `blob.bin`.
pub const BLOB_LEN: usize = 300_000;

/// Byte `i` of `blob.bin`.
fn blob_byte(i: usize) -> u8 {
    ((i % 251) ^ (i >> 8)) as u8
}

fn binary() -> TestResult {
    let blob: Vec<u8> = (0..BLOB_LEN).map(blob_byte).collect();
    attach::bytes("blob.bin", &blob)?;
    attach::text("notes.txt", "attached by the attachments suite ✓\n")?;
    Ok(())
}

fn fails_with_log() -> TestResult {
    attach::text("server.log", "GET /health 200\nGET /keys/1 500 internal error\n")?;
    Err(fail("the server answered 500 (see server.log)"))
}

/// `attempt` must be refused with a reason that contains `says`.
fn expect_refused(what: &str, attempt: Result<(), attach::AttachError>, says: &str) -> TestResult {
    match attempt {
        Ok(()) => Err(fail(format!("{what} was accepted"))),
        Err(e) if e.0.contains(says) => {
            log::info(format!("{what} refused: {e}"));
            Ok(())
        }
        Err(e) => Err(fail(format!("{what} was refused for another reason: {e}"))),
    }
}

fn refused() -> TestResult {
    expect_refused("a path", attach::text("../escape.txt", "x"), "path separators")?;
    attach::text("once.txt", "first")?;
    expect_refused("a name used twice", attach::text("once.txt", "second"), "already attached")?;
    let over = OVER_BYTES.get()?;
    expect_refused("too many bytes", attach::bytes("big.bin", &vec![0; over]), "attachment_limit")?;
    Ok(())
}

ensemble_sdk::suite! {
    params(OVER_BYTES),
    binary,
    fails_with_log,
    refused,
}
