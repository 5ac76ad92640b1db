//! The on-disk cache of compiled suites.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled artifact takes well under one. Artifacts are
//! keyed by the suite's sha256 plus a fingerprint of this wasmtime version and
//! engine configuration, so a changed engine never loads a stale artifact.
//! Files are written to a temporary name and renamed, so readers never see a
//! half-written artifact, and concurrent writers of one key are harmless.
//!
//! A cache on disk can still be damaged (a full disk, a crash mid-copy, a
//! mistaken copy or restore): each file starts with a header naming the
//! suite it is for and the sha256 of the artifact after it, checked before
//! the artifact is loaded — wasmtime trusts an artifact's code, so a
//! truncated, altered or swapped file must never reach it. One that fails
//! the check is removed and the suite compiled again. (The check is not a
//! seal: whoever may write this directory may as well replace the runner's
//! own binary, so the directory is the operator's to keep private.)

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled artifacts for one engine configuration.
#[derive(Clone, Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    fingerprint: String,
}

impl ArtifactCache {
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine) -> Self {
        // DefaultHasher::new() uses fixed keys: stable for one build of the binary,
        // which is all a cache key needs (the wasmtime version is part of it too).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("wasmtime{}-{:016x}", super::WASMTIME_VERSION, h.finish());
        Self { dir: dir.into(), fingerprint }
    }

    /// The default location: the platform's cache directory for ensemble
    /// (`$XDG_CACHE_HOME/ensemble` or `~/.cache/ensemble` on Linux,
    /// `~/Library/Caches/ensemble` on macOS, `%LOCALAPPDATA%\ensemble\cache`
    /// on Windows), `compiled` in it.
    pub fn default_dir() -> PathBuf {
        if let Some(dir) = std::env::var_os("ENSEMBLE_CACHE_DIR") {
            return PathBuf::from(dir);
        }
        directories::ProjectDirs::from("", "", "ensemble")
            .map(|d| d.cache_dir().to_path_buf())
            .unwrap_or_else(|| std::env::temp_dir().join("ensemble"))
            .join("compiled")
    }

    /// The directory the artifacts are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// The cached component of suite `sha256`, if one was stored whole and
    /// still loads; a damaged one is removed (the caller compiles again).
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        let file = match std::fs::read(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), "the cached compiled suite cannot be read ({e}); compiling again");
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                return None;
            }
        };
        let artifact = match checked(&file, sha256) {
            Ok(artifact) => artifact,
            Err(why) => {
                tracing::warn!(path = %path.display(), "the cached compiled suite is damaged ({why}); compiling again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        };
        // SAFETY: `deserialize` trusts its bytes to be an artifact produced by
        // `Component::serialize` of a compatible engine. Only this cache
        // writes these files (the directory is private to the runner's
        // user), and the header checked just now shows these are the bytes
        // it stored for this suite, undamaged, under a fingerprint of the
        // engine's configuration; wasmtime additionally checks the artifact's
        // own header and rejects artifacts of another version or configuration.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(engine, artifact) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Whether an artifact of suite `sha256` is stored (not checked: that
    /// is [`ArtifactCache::load`]'s, which compiles again if it is damaged).
    pub fn holds(&self, sha256: &str) -> bool {
        self.path(sha256).is_file()
    }

    /// Forgets the artifact of suite `sha256` (superseded by another tier's).
    pub fn remove(&self, sha256: &str) {
        let _ = std::fs::remove_file(self.path(sha256));
    }

    /// Stores a compiled component; failures only cost a recompile later.
    pub fn store(&self, sha256: &str, component: &Component) {
        match component.serialize() {
            Ok(artifact) => self.store_artifact(sha256, &artifact),
            Err(e) => tracing::warn!("could not serialize a compiled suite: {e:#}"),
        }
    }

    /// Stores the artifact `artifact` (`Component::serialize` of this
    /// engine's configuration) as the one of suite `sha256`, with its header.
    pub fn store_artifact(&self, sha256: &str, artifact: &[u8]) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let tmp = tempfile_in(&self.dir)?;
            let mut file = Vec::with_capacity(HEADER + artifact.len());
            file.extend_from_slice(MAGIC);
            file.extend_from_slice(&header_name(sha256));
            file.extend_from_slice(&sha2::Sha256::digest(artifact));
            file.extend_from_slice(artifact);
            std::fs::write(&tmp, file)?;
            std::fs::rename(&tmp, self.path(sha256))
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), "could not cache a compiled suite: {e}");
        }
    }
}

use sha2::Digest;

/// What a cache file starts with (and its format's version).
const MAGIC: &[u8; 8] = b"ENSCWA01";
/// The header: the magic, the suite's sha256 (hex, 64 bytes), the
/// artifact's sha256 (32 bytes).
const HEADER: usize = 8 + 64 + 32;

/// The suite's sha256 as the header keeps it (64 bytes).
fn header_name(sha256: &str) -> [u8; 64] {
    let mut name = [b'0'; 64];
    let bytes = sha256.as_bytes();
    let n = bytes.len().min(64);
    name[..n].copy_from_slice(&bytes[..n]);
    name
}

/// The artifact in cache file `file` of suite `sha256`, or why it is not
/// usable.
fn checked<'a>(file: &'a [u8], sha256: &str) -> Result<&'a [u8], String> {
    if file.len() < HEADER {
        return Err(format!("{} bytes, shorter than its header", file.len()));
    }
    if &file[..8] != MAGIC {
        return Err("it does not start as a cache file of this version".into());
    }
    if file[8..72] != header_name(sha256) {
        return Err("it is the artifact of another suite".into());
    }
    let artifact = &file[HEADER..];
    if sha2::Sha256::digest(artifact).as_slice() != &file[72..HEADER] {
        return Err("its artifact does not hash to what its header says (truncated or altered)".into());
    }
    Ok(artifact)
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".tmp-{}-{n}", std::process::id())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_artifact_stored_for_the_suite_whole_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::new(dir.path(), &engine);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        cache.store_artifact(&a, b"artifact of a");
        let file = std::fs::read(cache.path(&a)).unwrap();
        assert_eq!(checked(&file, &a).unwrap(), b"artifact of a");
        assert!(checked(&file, &b).unwrap_err().contains("another suite"));
        assert!(checked(&file[..file.len() - 1], &a).unwrap_err().contains("truncated"));
        assert!(checked(&file[..20], &a).unwrap_err().contains("shorter"));
        let mut altered = file.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(checked(&altered, &a).unwrap_err().contains("altered"));
        // A headerless artifact (the format before this one).
        let old = [b"\x7fELF".as_slice(), &[0u8; 200]].concat();
        assert!(checked(&old, &a).unwrap_err().contains("this version"));
    }
}
