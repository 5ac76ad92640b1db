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
//! mistaken copy or restore): each file ends with a trailer naming the
//! suite it is for and the length and CRC-32 of the artifact before it,
//! checked before the artifact is loaded — wasmtime trusts an artifact's
//! code, so a truncated, altered or swapped file must never reach it. One
//! that fails the check is removed and the suite compiled again. (The
//! check finds damage, it is not a seal: whoever may write this directory
//! may as well replace the runner's own binary, so the directory is the
//! operator's to keep private. So a checksum does what a sha256 did, at
//! several times its speed.)
//!
//! The artifact comes first so that wasmtime maps the file as it is (on
//! Unix) instead of copying it: it reads an artifact by the offsets in its
//! header, and the trailer after it is not among them. Files are never
//! written in place (a new one is renamed over the old), so a mapped file
//! does not change under a running suite. Reading the 35 MB artifact of a
//! Python suite, hashing it with sha256 and copying it into wasmtime's
//! memory took 72 ms; checking and mapping it takes ~20 ms.
//!
//! The directory is bounded ([`trim`]): every suite a machine ever ran or
//! precompiled leaves its compiled code here (and a joined runner the
//! suite's bytes, under `suites/`), and a CI that uploads a new build of a
//! suite at every commit would otherwise fill the disk. Past the bound the
//! least recently used go first; each load marks its file used.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use wasmtime::Engine;
use wasmtime::component::Component;

/// A directory of compiled artifacts for one engine configuration.
#[derive(Clone, Debug)]
pub struct ArtifactCache {
    dir: PathBuf,
    fingerprint: String,
    max_size: u64,
}

impl ArtifactCache {
    /// The cache in `dir` for `engine`'s artifacts, bounded to `max_size`
    /// bytes with whatever else [`trim`] counts there.
    pub fn new(dir: impl Into<PathBuf>, engine: &Engine, max_size: u64) -> Self {
        // DefaultHasher::new() uses fixed keys: stable for one build of the binary,
        // which is all a cache key needs (the wasmtime version is part of it too).
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let fingerprint = format!("wasmtime{}-{:016x}", super::WASMTIME_VERSION, h.finish());
        Self { dir: dir.into(), fingerprint, max_size }
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
        let checked = std::fs::File::open(&path).map_err(Problem::Unreadable).and_then(|mut file| {
            let len = file.metadata().map_err(Problem::Unreadable)?.len();
            check(&mut file, len, sha256)
        });
        match checked {
            Ok(_) => {}
            Err(Problem::Unreadable(e)) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(Problem::Unreadable(e)) => {
                tracing::warn!(path = %path.display(), "the cached compiled suite cannot be read ({e}); compiling again");
                let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
                return None;
            }
            Err(Problem::Older) => {
                tracing::debug!(path = %path.display(), "the cached compiled suite is of an older format; compiling again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
            Err(Problem::Damaged(why)) => {
                tracing::warn!(path = %path.display(), "the cached compiled suite is damaged ({why}); compiling again");
                let _ = std::fs::remove_file(&path);
                return None;
            }
        }
        match deserialize(engine, &path) {
            Ok(c) => {
                touch(&path);
                Some(c)
            }
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

    /// Marks the artifact of suite `sha256` used now (wanted again: [`trim`]
    /// removes it after the ones used before it).
    pub fn touch(&self, sha256: &str) {
        touch(&self.path(sha256));
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
    /// engine's configuration) as the one of suite `sha256`, with its trailer.
    pub fn store_artifact(&self, sha256: &str, artifact: &[u8]) {
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            std::fs::create_dir_all(&self.dir)?;
            let tmp = tempfile_in(&self.dir)?;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(artifact)?;
            file.write_all(&trailer(sha256, artifact))?;
            drop(file);
            std::fs::rename(&tmp, self.path(sha256))
        };
        match write() {
            Ok(()) => {
                trim(&self.dir, self.max_size, Some(&self.path(sha256)));
            }
            Err(e) => tracing::warn!(dir = %self.dir.display(), "could not cache a compiled suite: {e}"),
        }
    }
}

/// What a cache directory holds at most by default: compiled suites and a
/// joined runner's fetched suites together (`--cache-max-size`).
pub const DEFAULT_MAX_SIZE: u64 = 4 << 30;

/// A temporary file not written to for this long is a leftover of a writer
/// that ended before renaming it (one being written is newer).
const STALE: Duration = Duration::from_secs(3600);

/// What [`trim`] removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Trimmed {
    /// Cached files removed to stay within the bound, and their bytes.
    pub files: usize,
    pub bytes: u64,
    /// Leftover temporary files removed.
    pub leftovers: usize,
    /// Bytes the cached files kept take.
    pub kept: u64,
}

/// Keeps the cache directory `root` within `max` bytes: counts the compiled
/// suites in it (`*.cwasm`, of any engine version) and the fetched suites
/// in `root/suites` (`*.wasm`) and, while they take more, removes the one
/// used least recently (by its modification time: a load sets it) — never
/// `keep`, the file just stored, even alone over the bound. Also removes
/// the temporary files of writers that ended before renaming them. Nothing
/// else in `root` is looked at (a machine's identity lives there). A file
/// that cannot be removed (in use, on some systems) is skipped; another
/// process may trim at the same time, and a file it removed first is gone
/// either way. Whoever loses a file to it compiles or fetches it again.
pub fn trim(root: &Path, max: u64, keep: Option<&Path>) -> Trimmed {
    let mut done = Trimmed::default();
    let now = SystemTime::now();
    let mut cached = Vec::new();
    for (dir, ext, temp) in [(root.to_path_buf(), "cwasm", ".tmp-"), (root.join("suites"), "wasm", ".")] {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let Ok(meta) = entry.metadata() else { continue };
            if !meta.is_file() {
                continue;
            }
            let modified = meta.modified().unwrap_or(now);
            let path = entry.path();
            if name.starts_with(temp) || name.starts_with(".compiled-") {
                let stale = now.duration_since(modified).is_ok_and(|age| age > STALE);
                if stale && std::fs::remove_file(&path).is_ok() {
                    done.leftovers += 1;
                }
            } else if path.extension().is_some_and(|e| e == ext) {
                cached.push((modified, path, meta.len()));
            }
        }
    }
    done.kept = cached.iter().map(|(_, _, len)| len).sum();
    // The least recently used first.
    cached.sort();
    for (_, path, len) in cached {
        if done.kept <= max {
            break;
        }
        if keep == Some(path.as_path()) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {
                done.files += 1;
                done.bytes += len;
                done.kept -= len;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => done.kept -= len,
            Err(e) => {
                tracing::debug!(path = %path.display(), "the cache keeps a file it could not remove: {e}")
            }
        }
    }
    if done.files > 0 {
        tracing::info!(
            dir = %root.display(),
            removed = done.files,
            freed = done.bytes,
            kept = done.kept,
            "the cache was over its bound ({max} bytes): removed the suites used least recently"
        );
    }
    done
}

/// Marks the cached file `path` used now. Best effort: a file that cannot
/// be marked is only removed sooner.
pub fn touch(path: &Path) {
    let _ = std::fs::File::options().write(true).open(path).and_then(|f| f.set_modified(SystemTime::now()));
}

/// Loads the checked artifact at the start of `path`: mapped as it is on
/// Unix, read where it cannot be mapped and on other systems (Windows
/// cannot rename a file over one that is mapped, which storing an artifact
/// again does).
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: `deserialize_file` and `deserialize` trust their bytes to be
    // an artifact produced by `Component::serialize` of a compatible
    // engine. Only this cache writes these files (the directory is private
    // to the runner's user), never in place, and the trailer checked just
    // now shows the file holds the artifact it stored for this suite, whole,
    // under a fingerprint of the engine's configuration; wasmtime
    // additionally checks the artifact's own header and rejects artifacts
    // of another version or configuration.
    #[cfg(unix)]
    {
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, path) } {
            Ok(component) => return Ok(component),
            // E.g. a directory on a filesystem mounted `noexec`: its pages
            // cannot be made executable where they are.
            Err(e) => {
                tracing::debug!(path = %path.display(), "mapping the cached artifact failed ({e:#}); reading it")
            }
        }
    }
    let mut file = std::fs::read(path)?;
    file.truncate(file.len().saturating_sub(TRAILER));
    #[allow(unsafe_code)]
    unsafe {
        Component::deserialize(engine, file)
    }
}

/// What a cache file ends with (and its format's version).
const MAGIC: &[u8; 8] = b"ENSCWA02";
/// What a cache file of the format before started with.
const OLDER_MAGIC: &[u8; 8] = b"ENSCWA01";
/// The trailer: the suite's sha256 (hex, 64 bytes), the artifact's length
/// (8 bytes) and CRC-32 (4 bytes), little-endian, then the magic.
const TRAILER: usize = 64 + 8 + 4 + 8;

/// The suite's sha256 as the trailer keeps it (64 bytes).
fn trailer_name(sha256: &str) -> [u8; 64] {
    let mut name = [b'0'; 64];
    let bytes = sha256.as_bytes();
    let n = bytes.len().min(64);
    name[..n].copy_from_slice(&bytes[..n]);
    name
}

/// The trailer of `artifact`, suite `sha256`'s.
fn trailer(sha256: &str, artifact: &[u8]) -> [u8; TRAILER] {
    let mut out = [0u8; TRAILER];
    out[..64].copy_from_slice(&trailer_name(sha256));
    out[64..72].copy_from_slice(&(artifact.len() as u64).to_le_bytes());
    out[72..76].copy_from_slice(&crc32fast::hash(artifact).to_le_bytes());
    out[76..].copy_from_slice(MAGIC);
    out
}

/// Why a cache file is not loaded.
#[derive(Debug)]
enum Problem {
    Unreadable(std::io::Error),
    /// Written by an older version, in the format before this one.
    Older,
    /// The reason, completing "the cached compiled suite is damaged (…)".
    Damaged(String),
}

/// Checks cache file `file` of `len` bytes, suite `sha256`'s: its trailer
/// and that the artifact before it is whole. The artifact's length.
fn check(file: &mut (impl std::io::Read + std::io::Seek), len: u64, sha256: &str) -> Result<u64, Problem> {
    use std::io::SeekFrom;
    let io = Problem::Unreadable;
    if len < TRAILER as u64 {
        return Err(Problem::Damaged(format!("{len} bytes, shorter than its trailer")));
    }
    let mut end = [0u8; TRAILER];
    file.seek(SeekFrom::Start(len - TRAILER as u64)).map_err(io)?;
    file.read_exact(&mut end).map_err(io)?;
    if &end[76..] != MAGIC {
        let mut start = [0u8; 8];
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        file.read_exact(&mut start).map_err(io)?;
        return Err(if &start == OLDER_MAGIC {
            Problem::Older
        } else {
            Problem::Damaged("it does not end as a cache file of this version".into())
        });
    }
    if end[..64] != trailer_name(sha256) {
        return Err(Problem::Damaged("it is the artifact of another suite".into()));
    }
    let artifact = u64::from_le_bytes(end[64..72].try_into().expect("8 bytes"));
    if artifact != len - TRAILER as u64 {
        return Err(Problem::Damaged(format!(
            "its artifact is {} bytes where its trailer says {artifact} (truncated or altered)",
            len - TRAILER as u64
        )));
    }
    let mut crc = crc32fast::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = artifact;
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        file.read_exact(&mut buf[..n]).map_err(io)?;
        crc.update(&buf[..n]);
        left -= n as u64;
    }
    if crc.finalize().to_le_bytes() != end[72..76] {
        return Err(Problem::Damaged("its artifact does not match its checksum (altered)".into()));
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

    /// `check` of the bytes `file`.
    fn checked(file: &[u8], sha256: &str) -> Result<u64, Problem> {
        check(&mut std::io::Cursor::new(file), file.len() as u64, sha256)
    }

    fn damage(r: Result<u64, Problem>) -> String {
        match r {
            Err(Problem::Damaged(why)) => why,
            other => panic!("expected damage, got {other:?}"),
        }
    }

    #[test]
    fn only_the_artifact_stored_for_the_suite_whole_passes_the_check() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::new(dir.path(), &engine, DEFAULT_MAX_SIZE);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let artifact = vec![7u8; (3 << 20) + 5];
        cache.store_artifact(&a, &artifact);
        let file = std::fs::read(cache.path(&a)).unwrap();
        assert_eq!(&file[..artifact.len()], &artifact[..], "the artifact comes first, as it is");
        assert_eq!(checked(&file, &a).unwrap(), artifact.len() as u64);
        assert!(damage(checked(&file, &b)).contains("another suite"));
        let cut = [&file[..100], &file[file.len() - TRAILER..]].concat();
        assert!(damage(checked(&cut, &a)).contains("truncated"));
        assert!(damage(checked(&file[..file.len() - 1], &a)).contains("this version"));
        assert!(damage(checked(&file[..20], &a)).contains("shorter"));
        for at in [0, artifact.len() / 2, artifact.len() - 1] {
            let mut altered = file.clone();
            altered[at] ^= 1;
            assert!(damage(checked(&altered, &a)).contains("altered"), "a bit flipped at {at}");
        }
        // The format before this one: a header, then the artifact.
        let older = [OLDER_MAGIC.as_slice(), &[0u8; 200]].concat();
        assert!(matches!(checked(&older, &a), Err(Problem::Older)));
        // A bare artifact (the format before that).
        let bare = [b"\x7fELF".as_slice(), &[0u8; 200]].concat();
        assert!(damage(checked(&bare, &a)).contains("this version"));
    }

    #[test]
    fn a_stored_component_loads_from_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::new(dir.path(), &engine, DEFAULT_MAX_SIZE);
        let component = Component::new(&engine, wat::parse_str("(component)").unwrap()).unwrap();
        let a = "a".repeat(64);
        assert!(cache.load(&engine, &a).is_none(), "nothing stored yet");
        cache.store(&a, &component);
        assert!(cache.holds(&a));
        assert!(cache.load(&engine, &a).is_some());
        // Damaged: removed, and nothing loads.
        let path = cache.path(&a);
        let mut file = std::fs::read(&path).unwrap();
        file[10] ^= 0xff;
        std::fs::write(&path, file).unwrap();
        assert!(cache.load(&engine, &a).is_none());
        assert!(!cache.holds(&a), "the damaged file is removed");
    }

    /// Writes `len` bytes at `path`, last used `age` ago.
    fn file(path: &Path, len: usize, age: Duration) -> PathBuf {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![1u8; len]).unwrap();
        let f = std::fs::File::options().write(true).open(path).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        path.to_path_buf()
    }

    #[test]
    fn trimming_removes_the_least_recently_used_suites_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let min = |m: u64| Duration::from_secs(60 * m);
        // Compiled suites (two engine versions) and fetched suites, oldest first.
        let old_engine = file(&root.join("a-wasmtime40.0.0-1.cwasm"), 400, min(50));
        let fetched_old = file(&root.join("suites/b.wasm"), 300, min(40));
        let compiled = file(&root.join("c-wasmtime48.0.8-2.cwasm"), 200, min(30));
        let fetched = file(&root.join("suites/c.wasm"), 100, min(20));
        // Not the cache's to count or remove, however old or large.
        let identity = file(&root.join("identities/me@http://x"), 5000, min(600));
        let other = file(&root.join("notes.txt"), 5000, min(600));
        let nested = file(&root.join("suites/deeper/d.wasm"), 5000, min(600));
        // Leftovers of writers that ended: an hour old goes, a fresh one is being written.
        let leftovers = [
            file(&root.join(".tmp-1-0"), 50, min(90)),
            file(&root.join(".compiled-x"), 50, min(61)),
            file(&root.join("suites/.b.7"), 50, min(70)),
        ];
        let writing = file(&root.join(".tmp-2-0"), 50, min(1));

        let all = 1000;
        assert_eq!(trim(root, all, None), Trimmed { leftovers: 3, kept: all, ..Trimmed::default() });
        assert!(leftovers.iter().all(|p| !p.exists()) && writing.exists());

        // 500 bytes may stay: the two used least recently go, the rest stay.
        assert_eq!(trim(root, 500, None), Trimmed { files: 2, bytes: 700, kept: 300, ..Trimmed::default() });
        assert!(!old_engine.exists() && !fetched_old.exists() && compiled.exists() && fetched.exists());

        // A load marks its file used: the other one is the older now.
        touch(&compiled);
        assert_eq!(trim(root, 250, None), Trimmed { files: 1, bytes: 100, kept: 200, ..Trimmed::default() });
        assert!(compiled.exists() && !fetched.exists());

        // The file just stored stays, even alone over the bound.
        let stored = file(&root.join("e-wasmtime48.0.8-2.cwasm"), 900, min(0));
        assert_eq!(
            trim(root, 100, Some(&stored)),
            Trimmed { files: 1, bytes: 200, kept: 900, ..Trimmed::default() }
        );
        assert!(stored.exists() && !compiled.exists());
        for kept in [&identity, &other, &nested, &writing] {
            assert!(kept.exists(), "{} was not the cache's", kept.display());
        }
        // A cache directory that is not there yet is within any bound.
        assert_eq!(trim(&root.join("none"), 0, None), Trimmed::default());
    }

    #[test]
    fn storing_an_artifact_keeps_the_directory_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::default();
        let cache = ArtifactCache::new(dir.path(), &engine, 10_000);
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        cache.store_artifact(&a, &[7u8; 6000]);
        assert!(cache.holds(&a));
        cache.store_artifact(&b, &[8u8; 6000]);
        assert!(cache.holds(&b) && !cache.holds(&a), "the older artifact made room for the new one");
    }
}
