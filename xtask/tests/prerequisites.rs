//! Where the test command cannot install what the tests need, it stops
//! before building anything, printing the one `apt-get install` line to
//! run, with exit code 2: checked as a user who is not root and has no
//! `sudo`, on a `PATH` where the Debian tools are missing.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::process::Command;

#[test]
fn without_root_or_sudo_it_prints_the_install_line_and_stops_before_building() {
    let temp = TempDir::new();
    let dir = temp.0.clone();
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    // apt-get is there (a Debian machine), the tools and sudo are not.
    for tool in ["apt-get", "id"] {
        let real =
            ["/usr/bin", "/bin"].iter().map(|d| std::path::Path::new(d).join(tool)).find(|p| p.exists());
        symlink(real.unwrap_or_else(|| panic!("{tool} is not on this machine")), bin.join(tool)).unwrap();
    }
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let xtask = env!("CARGO_BIN_EXE_xtask");
    let root = Command::new("id").arg("-u").output().unwrap();
    let mut command = if String::from_utf8_lossy(&root.stdout).trim() == "0" {
        // As nobody (root could install).
        let setpriv =
            ["/usr/bin/setpriv", "/bin/setpriv"].into_iter().find(|p| std::path::Path::new(p).exists());
        let mut c = Command::new(setpriv.expect("setpriv (util-linux) to run as another user"));
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", xtask]);
        c
    } else {
        Command::new(xtask)
    };
    let out = command.arg("test").env_clear().env("PATH", &bin).env("HOME", &dir).output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(2), "{said}");
    let line =
        said.lines().map(str::trim).find(|l| l.starts_with("apt-get install -y --no-install-recommends "));
    let line = line.unwrap_or_else(|| panic!("no install line in:\n{said}"));
    for package in ["chromium", "chromium-driver", "qemu-user", "redis-server", "buildah", "systemd", "npm"] {
        assert!(line.split_whitespace().any(|w| w == package), "{package} in {line}");
    }
    assert!(!said.contains("cargo test"), "it went on to build:\n{said}");
    assert!(!said.contains("Rust targets"), "it went on past the packages:\n{said}");
}

/// A fresh directory under the system's temporary one, removed on drop
/// (a failing assertion too).
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("xtask-prereq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
