//! The on-disk cache of compiled suites.
//!
//! Compiling a component with Cranelift takes from tens of milliseconds to
//! seconds; loading a precompiled artifact takes well under one. Artifacts are
//! keyed by the suite's sha256 plus a fingerprint of this wasmtime version and
//! engine configuration, so a changed engine never loads a stale artifact.
//! Files are written to a temporary name and renamed, so readers never see a
//! half-written artifact, and concurrent writers of one key are harmless.

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

    /// Takes the artifact file `compiled` (of this engine's configuration,
    /// in this directory) as the one of `sha256`; false when it cannot.
    pub fn adopt(&self, compiled: &Path, sha256: &str) -> bool {
        match std::fs::rename(compiled, self.path(sha256)) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), "could not cache a compiled suite: {e}");
                false
            }
        }
    }

    fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{}.cwasm", self.fingerprint))
    }

    /// The cached component, if one was stored and still loads.
    pub fn load(&self, engine: &Engine, sha256: &str) -> Option<Component> {
        let path = self.path(sha256);
        if !path.is_file() {
            return None;
        }
        // SAFETY: `deserialize_file` trusts the file to be an artifact produced by
        // `Component::serialize` of a compatible engine. Only this cache writes
        // files with this name (atomically, via rename), under a fingerprint of
        // the engine's configuration; wasmtime additionally checks the header
        // and rejects artifacts of another version or configuration.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize_file(engine, &path) };
        match loaded {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), "ignoring unusable cached artifact: {e:#}");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Stores a compiled component; failures only cost a recompile later.
    pub fn store(&self, sha256: &str, component: &Component) {
        let write = || -> std::io::Result<()> {
            std::fs::create_dir_all(&self.dir)?;
            let bytes = component.serialize().map_err(std::io::Error::other)?;
            let tmp = tempfile_in(&self.dir)?;
            std::fs::write(&tmp, bytes)?;
            std::fs::rename(&tmp, self.path(sha256))
        };
        if let Err(e) = write() {
            tracing::warn!(dir = %self.dir.display(), "could not cache a compiled suite: {e}");
        }
    }
}

fn tempfile_in(dir: &Path) -> std::io::Result<PathBuf> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(".tmp-{}-{n}", std::process::id())))
}
