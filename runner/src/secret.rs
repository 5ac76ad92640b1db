//! Secrets: the server's tokens kept under its data dir, the machine
//! identities runners keep, and comparing them in constant time. A leaf:
//! the coordinator, the server and the agent all use it.

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Constant-time token comparison.
pub fn token_ok(expected: &str, given: &str) -> bool {
    use subtle::ConstantTimeEq;
    expected.len() == given.len() && bool::from(expected.as_bytes().ct_eq(given.as_bytes()))
}

/// How long a ticket opens a WebSocket.
pub const TICKET_LIFE: std::time::Duration = std::time::Duration::from_secs(30);
/// The most tickets outstanding at once: past it, the oldest goes.
const MAX_TICKETS: usize = 4096;

/// Short-lived, single-use tickets: what a browser puts in a WebSocket's
/// address in place of the API token (it cannot give a WebSocket a
/// header), so no address the app builds carries the token. A ticket is
/// issued to a caller with the token and opens one connection within
/// [`TICKET_LIFE`].
#[derive(Default)]
pub struct Tickets {
    issued: std::sync::Mutex<std::collections::HashMap<String, std::time::Instant>>,
}

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, std::time::Instant>> {
        self.issued.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new ticket (32 random bytes, hex).
    pub fn issue(&self) -> anyhow::Result<String> {
        let ticket = random_secret()?;
        let now = std::time::Instant::now();
        let mut issued = self.lock();
        issued.retain(|_, at| now.duration_since(*at) < TICKET_LIFE);
        if issued.len() >= MAX_TICKETS
            && let Some(oldest) = issued.iter().min_by_key(|(_, at)| **at).map(|(t, _)| t.clone())
        {
            issued.remove(&oldest);
        }
        issued.insert(ticket.clone(), now);
        Ok(ticket)
    }

    /// Whether `ticket` was issued and is unused and in time; it is used now.
    pub fn redeem(&self, ticket: &str) -> bool {
        self.lock().remove(ticket).is_some_and(|at| at.elapsed() < TICKET_LIFE)
    }
}

/// A secret of the server's when it is given none (its API token, its join
/// token): read from `dir/file`, or made (32 random bytes, hex) and written
/// there, readable by its owner only. Returns the secret and the file.
pub fn kept_secret(dir: &Path, file: &str) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join(file);
    if let Ok(text) = std::fs::read_to_string(&path)
        && !text.trim().is_empty()
    {
        return Ok((text.trim().to_string(), path));
    }
    private_dir(dir)?;
    let secret = random_secret()?;
    write_private(&path, &secret)?;
    Ok((secret, path))
}

/// 32 random bytes, hex.
pub fn random_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for a secret: {e}"))?;
    Ok(hex::encode(bytes))
}

/// Creates `dir` (and its parents) readable by its owner only, when it
/// does not exist yet; an existing directory is left as its owner set it.
pub fn private_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Makes `path` (created empty if missing) readable by its owner only.
pub fn private_file(path: &Path) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path).with_context(|| format!("creating {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("making {} private", path.display()))?;
    }
    drop(file);
    Ok(())
}

/// Writes a file readable by its owner only, whole or not at all: the
/// text goes to a new file beside it, synced, then renamed over it (a
/// crash or a full disk midway leaves the old file, never a cut one).
pub fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
