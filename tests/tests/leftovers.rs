//! A test that starts processes leaves none behind, even when it fails: a
//! server and a shell with children of its own are started by a test that
//! then panics (run here in a process of its own, as `cargo test` would run
//! it); once that process has ended, none of them is alive, and nothing is
//! left in its temporary directory.

use std::process::Command;
use std::time::{Duration, Instant};

use ensemble_tests::{Owned, descendants, start_server};

/// Set in the process that runs the failing test: where it writes the
/// processes it started.
const CHILD: &str = "ENSEMBLE_LEFTOVERS_CHILD";

/// Whether process `pid` is alive (there, and not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

#[test]
fn a_failing_test_leaves_no_process_behind() {
    if let Some(file) = std::env::var_os(CHILD) {
        // The failing test.
        let dir = tempfile::tempdir().unwrap();
        let server = start_server(dir.path(), &dir.path().join("data"), "leftovers", &[]);
        let shell = Owned(Command::new("sh").args(["-c", "sleep 600 & sleep 600 & wait"]).spawn().unwrap());
        let deadline = Instant::now() + Duration::from_secs(30);
        while descendants(shell.id()).len() < 2 {
            assert!(Instant::now() < deadline, "the shell did not start its children");
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut pids = vec![server.proc.child.id(), shell.id()];
        pids.extend(descendants(shell.id()));
        pids.extend(descendants(server.proc.child.id()));
        let list: Vec<String> = pids.iter().map(u32::to_string).collect();
        std::fs::write(&file, list.join(" ")).unwrap();
        panic!("failing on purpose, owning processes {pids:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pids");
    // The failing test's temporary directory (`/tmp` in a `cargo test`).
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "a_failing_test_leaves_no_process_behind", "--nocapture", "--test-threads=1"])
        .env(CHILD, &file)
        .env("TMPDIR", &tmp)
        .output()
        .unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        !out.status.success() && said.contains("failing on purpose"),
        "the test fails on purpose:\n{said}"
    );
    let pids: Vec<u32> =
        std::fs::read_to_string(&file).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(pids.len() >= 4, "a server, a shell and its two children: {pids:?}");
    // Killed processes are reaped by whoever inherits them: a moment.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "left behind by a failing test: {left:?}\n{said}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<_> = std::fs::read_dir(&tmp).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "left in the temporary directory by a failing test: {left:?}\n{said}");
}
