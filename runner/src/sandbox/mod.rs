//! The wasmtime sandbox that runs suites.
//!
//! One [`Sandbox`] per process owns the engine (pooling allocator, epoch
//! interruption driven by a 10 ms ticker thread), the linker of the suite world
//! and the compiled-artifact cache. [`Sandbox::load`] turns suite bytes into a
//! [`LoadedSuite`]: compiled once per process (and cached on disk across
//! processes), kind detected (suite world, libtest harness or plain command),
//! pre-instantiated. Every test then runs in a fresh instance with its own
//! store, memory limit, captured output and timeout.
//!
//! Compiling is tiered ([`Tier`]): a large suite the cache does not hold is
//! first compiled by wasmtime's baseline compiler (Winch: one pass, several
//! times faster than Cranelift, slower code) so its tests start at once,
//! and by Cranelift in the background; the optimized code replaces the
//! baseline code between two instances, and only it is kept in the cache.
//!
//! Invariants: a guest can never take the runner down — traps, timeouts and
//! limit hits all end as a [`TestRun`]; and a guest sees only what its
//! [`Grants`] allow.

pub mod cache;
pub mod caps;
mod command;
pub mod compile;
mod host;
mod limits;
mod net;
pub mod output;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ensemble_protocol::Outcome;
use ensemble_protocol::api::{ParamMeta, ParamType, SuiteMeta, TestMeta};
use ensemble_protocol::units::HumanDuration;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

pub use cache::ArtifactCache;
pub use caps::{Grants, HostPolicy};
pub use host::SyncPort;
use host::{HostState, v01, v02, v03};
use limits::MemoryLimiter;
use output::Capture;

/// The suite ABI this runner builds for (the WIT package version).
pub const SUITE_WORLD: &str = "ensemble:suite/tests@0.3.0";

/// The suite ABI versions this runner runs: a suite built for any patch
/// release of one of these (`0.1.x`, `0.2.x`, `0.3.x`) links, as semver allows.
pub const SUITE_ABIS: [&str; 3] = ["0.1", "0.2", "0.3"];

/// The interface every suite exports, before its version.
const TESTS_EXPORT: &str = "ensemble:suite/tests@";

/// The wasmtime release this runner embeds (pinned in the workspace manifest).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// How often the engine's epoch advances; the granularity of timeouts.
const TICK: Duration = Duration::from_millis(10);
/// A guest that ignores cancellation is trapped this long after its deadline.
const HARD_STOP_GRACE: Duration = Duration::from_secs(2);

/// A suite's compiled code: which compiler made it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tier {
    /// Winch, wasmtime's baseline compiler: a suite's first minutes.
    Baseline,
    /// Cranelift, wasmtime's optimizing compiler: the code a suite keeps.
    Optimized,
}

impl Tier {
    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Baseline => "baseline",
            Tier::Optimized => "optimized",
        }
    }

    pub fn parse(s: &str) -> Option<Tier> {
        [Tier::Baseline, Tier::Optimized].into_iter().find(|t| t.as_str() == s)
    }
}

/// What [`Sandbox::precompile`] did with a suite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precompiled {
    /// Compiled now, into the disk cache.
    Compiled,
    /// Already compiled (in memory or on disk).
    Cached,
    /// Nothing: no disk cache or no compile process here.
    Skipped,
}

impl Precompiled {
    pub fn as_str(self) -> &'static str {
        match self {
            Precompiled::Compiled => "compiled",
            Precompiled::Cached => "cached",
            Precompiled::Skipped => "skipped",
        }
    }
}

/// Which compilers a sandbox uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Tiers {
    /// A large suite (1 MiB or more) that the cache does not hold
    /// optimized: baseline first, optimized in the background. Smaller
    /// ones, and cached ones, go straight to the optimized tier.
    #[default]
    Tiered,
    /// Optimized only: every new suite waits for Cranelift, and runs its
    /// fastest from its first test.
    Optimized,
    /// Baseline only, never optimized: the quickest start, for one-off
    /// runs of large suites, and to compare the tiers (a suite the baseline
    /// compiler declines is compiled optimized).
    Baseline,
}

/// The smallest suite compiled on the baseline tier first: below it,
/// Cranelift takes well under a second (a 200 KB Rust suite ~70 ms) and
/// a second compile would cost more than it saves.
pub const TIER_ABOVE: usize = 1 << 20;

/// Why a suite could not be loaded or listed.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("{0}")]
    Invalid(String),
    #[error("listing the tests failed: {0}")]
    List(String),
    #[error("describing the suite (its tests and params) failed: {0}")]
    Describe(String),
    #[error("{0}")]
    Internal(String),
}

/// What kind of program a suite is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SuiteKind {
    /// Exports `ensemble:suite/tests`.
    Suite,
    /// A WASI command that is a Rust libtest harness.
    Libtest,
    /// Any other WASI command: one test, exit code 0 passes.
    Command,
}

impl SuiteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SuiteKind::Suite => "ensemble suite",
            SuiteKind::Libtest => "libtest harness (WASI command)",
            SuiteKind::Command => "WASI command",
        }
    }
}

/// A test as listed by a suite.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    pub name: String,
    pub tags: Vec<String>,
    pub ignored: bool,
    pub timeout: Option<Duration>,
}

/// Everything a test instance may see of the run, plus its limits.
pub struct TestEnv {
    pub run_id: String,
    pub role: String,
    pub instance: u32,
    pub instance_count: u32,
    pub machine: String,
    pub params: BTreeMap<String, String>,
    pub grants: Grants,
    pub memory_limit: u64,
    pub output_limit: u64,
    /// Bytes one test attempt may attach.
    pub attachment_limit: u64,
    pub test_timeout: Duration,
    pub barrier_timeout_ms: u64,
    pub sync: Arc<dyn SyncPort>,
}

/// The result of running one test once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRun {
    pub outcome: Outcome,
    pub message: Option<String>,
    pub output: String,
    pub duration: Duration,
}

/// Sizing of the engine.
#[derive(Clone, Debug)]
pub struct SandboxOptions {
    /// Where compiled artifacts are cached; `None` disables the disk cache.
    pub cache_dir: Option<std::path::PathBuf>,
    /// The most the cache directory holds (see [`cache::trim`]).
    pub cache_max_size: u64,
    /// Test instances that may be alive at once (pool size), besides the
    /// spare lanes (see [`Sandbox::spare_lanes`]), which add their own.
    pub max_instances: u32,
    /// The largest memory limit a plan may set.
    pub max_memory: u64,
    /// Compile new suites in a child process within this budget; `None`
    /// compiles in this process, with no bound (for tests and tools that
    /// only load suites they trust).
    pub compile: Option<compile::CompileBudget>,
    /// Which compilers to use ([`Tiers::Tiered`] by default).
    pub tiers: Tiers,
    /// The smallest suite tiered ([`TIER_ABOVE`] by default).
    pub tier_above: usize,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        Self {
            cache_dir: Some(ArtifactCache::default_dir()),
            cache_max_size: cache::DEFAULT_MAX_SIZE,
            max_instances: 64,
            max_memory: 4 << 30,
            compile: None,
            tiers: Tiers::default(),
            tier_above: TIER_ABOVE,
        }
    }
}

/// The engine configuration every compile and load of a tier uses; the
/// pool of instances is added by [`Sandbox::new`] (it does not change what
/// is compiled, so a child compiling without one makes artifacts this
/// engine loads).
pub(crate) fn engine_config(tier: Tier) -> Config {
    let mut config = Config::new();
    config.epoch_interruption(true).wasm_backtrace_details(wasmtime::WasmBacktraceDetails::Enable);
    if tier == Tier::Baseline {
        // Winch compiles the functions; Cranelift still makes the
        // trampolines between host and guest, one per function the guest
        // can call indirectly (thousands in an interpreter): unoptimized,
        // with the one-pass register allocator, the 19 MB Python suite
        // compiles in 1.2 s instead of 1.7 s (Cranelift alone: 6.3 s).
        config
            .strategy(wasmtime::Strategy::Winch)
            .cranelift_opt_level(wasmtime::OptLevel::None)
            .cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
    }
    config
}

/// Bytes of a linear memory kept resident between the instances of a
/// pool slot, reset in place (tables: a sixteenth).
const KEEP_RESIDENT: usize = 1 << 20;

/// The longest help text and default a declared param may have: "one
/// line", and a value a person reads in a list of params.
const MAX_HELP: usize = 1024;

/// The most tests a suite may list: every listed test is stored, sent in
/// events and shown (a suite of 10,000 tests lists in a few ms).
pub const MAX_TESTS: usize = 100_000;
/// The longest test name, in bytes: it is in every event of the test.
pub const MAX_TEST_NAME: usize = 1024;
/// The most tags one test may have, and the longest tag.
pub const MAX_TAGS: usize = 32;
pub const MAX_TAG: usize = 128;
/// The most bytes of names and tags a suite's whole list may hold: what a
/// shard-started event, the stored metadata and `/inspect` carry.
pub const MAX_LISTED_BYTES: usize = 8 << 20;

/// Suites kept loaded in memory besides those in use.
pub const MAX_LOADED: usize = 32;

/// One compiler's engine, with its linker and artifact cache.
struct Engines {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<ArtifactCache>,
}

impl Engines {
    fn new(tier: Tier, max_instances: u32, opts: &SandboxOptions) -> anyhow::Result<Engines> {
        let engine = Engine::new(&pooled(engine_config(tier), max_instances, opts.max_memory))?;
        let linker = suite_linker(&engine)?;
        let cache = opts.cache_dir.as_ref().map(|dir| ArtifactCache::new(dir, &engine, opts.cache_max_size));
        Ok(Engines { engine, linker, cache })
    }
}

/// The per-process engines, linkers and caches.
pub struct Sandbox {
    /// The optimized tier: every suite ends here.
    optimized: Engines,
    /// The baseline tier, made when a suite first needs it (a process that
    /// never sees a large new suite does not pay for a second engine);
    /// `None` inside where this machine has no baseline compiler.
    baseline: std::sync::OnceLock<Option<Engines>>,
    /// The engines whose epochs the ticker thread advances.
    ticking: Arc<Mutex<Vec<wasmtime::EngineWeak>>>,
    max_instances: u32,
    opts: SandboxOptions,
    tiers: Tiers,
    tier_above: usize,
    loaded: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Arc<LoadedSuite>>>>>,
    ticker: Arc<AtomicBool>,
    spare: Arc<tokio::sync::Semaphore>,
    budget: Option<compile::CompileBudget>,
    /// Compiles in child processes at once: one per core (each uses them
    /// all, and holds up to its memory budget).
    compiling: tokio::sync::Semaphore,
    /// Background compiles to the optimized tier at once: one.
    optimizing: tokio::sync::Semaphore,
    /// Background compiles to the optimized tier under way or waiting.
    pending: tokio::sync::watch::Sender<usize>,
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
}

impl Sandbox {
    /// Loads a suite and lists its tests: the one inspection behind
    /// `ensemble suite inspect` and the server's suite uploads.
    pub async fn inspect(self: &Arc<Self>, bytes: Arc<Vec<u8>>, name: &str) -> Result<SuiteMeta, SuiteError> {
        let suite = self.load(bytes).await?;
        let env = Arc::new(TestEnv::inspection(name));
        let Described { tests, params } = suite.describe(&env).await?;
        Ok(SuiteMeta {
            sha256: suite.sha256.clone(),
            name: name.to_string(),
            size: suite.size as u64,
            kind: suite.kind().as_str().to_string(),
            tests: tests
                .into_iter()
                .map(|t| TestMeta {
                    name: t.name,
                    tags: t.tags,
                    ignored: t.ignored,
                    timeout_ms: t.timeout.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
                })
                .collect(),
            imports: suite.imports.clone(),
            exports: suite.exports.clone(),
            uploaded_us: crate::time::now_us(),
            params,
            abi: suite.abi().map(str::to_string),
        })
    }
}

/// Cores beyond the first: the spare lanes (see [`Sandbox::spare_lanes`]).
fn spare_cores() -> usize {
    crate::cores().saturating_sub(1)
}

/// `config` with the pool of instances every sandbox engine has.
fn pooled(mut config: Config, max_instances: u32, max_memory: u64) -> Config {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(max_instances)
        .total_core_instances(max_instances * 8)
        .max_core_instances_per_component(32)
        .total_memories(max_instances * 2)
        .max_memories_per_component(4)
        .total_tables(max_instances * 8)
        .max_tables_per_component(16)
        .total_stacks(max_instances)
        .max_memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        .max_unused_warm_slots(8)
        // A fresh instance per test reuses a warm slot: reset what the
        // last test dirtied in place (found with PAGEMAP_SCAN where the
        // kernel has it, Linux 6.7+) instead of unmapping it. Unmapping
        // cost a TLB shootdown on every core and a page fault per page
        // on the next test: half the time of a trivial test on 2 cores.
        .linear_memory_keep_resident(KEEP_RESIDENT)
        .table_keep_resident(KEEP_RESIDENT / 16)
        .pagemap_scan(wasmtime::Enabled::Auto)
        .decommit_batch_size(8);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    config
}

/// The linker of the suite world and WASI for `engine`.
fn suite_linker(engine: &Engine) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    // Name lookups answer granted names only; sockets are bounded (`net`).
    net::add_to_linker(&mut linker)?;
    // Outgoing HTTP for every suite, each request checked against the
    // entry's net grants (`caps::HttpGate`).
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    v01::Suite::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    v02::Suite::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    v03::Suite::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Hex sha256 of suite bytes: the suite's identity everywhere.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Sandbox {
    pub fn new(opts: SandboxOptions) -> anyhow::Result<Sandbox> {
        let spare = spare_cores();
        let max_instances = opts.max_instances.saturating_add(spare as u32);
        let optimized = Engines::new(Tier::Optimized, max_instances, &opts)?;
        let ticker = Arc::new(AtomicBool::new(false));
        let ticking = Arc::new(Mutex::new(vec![optimized.engine.weak()]));
        let (stop, engines) = (ticker.clone(), ticking.clone());
        std::thread::Builder::new().name("ensemble-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                let alive: Vec<Engine> =
                    engines.lock().expect("ticking lock").iter().filter_map(|e| e.upgrade()).collect();
                if alive.is_empty() {
                    break;
                }
                alive.iter().for_each(Engine::increment_epoch);
            }
        })?;
        let spare = Arc::new(tokio::sync::Semaphore::new(spare));
        let compiling = tokio::sync::Semaphore::new(spare_cores() + 1);
        Ok(Sandbox {
            optimized,
            baseline: std::sync::OnceLock::new(),
            ticking,
            max_instances,
            tiers: opts.tiers,
            tier_above: opts.tier_above,
            loaded: Mutex::default(),
            ticker,
            spare,
            budget: opts.compile.clone(),
            compiling,
            optimizing: tokio::sync::Semaphore::new(1),
            pending: tokio::sync::watch::Sender::new(0),
            opts,
        })
    }

    /// The process's spare lanes: one per core beyond the first. A shard
    /// always runs one test at a time; one whose tests are independent (its
    /// suite does not use sync) runs more at once while it holds spare lanes,
    /// so a lone shard uses every core and many shards share them. The pool
    /// has an instance for each spare lane besides `max_instances`.
    pub fn spare_lanes(&self) -> Arc<tokio::sync::Semaphore> {
        self.spare.clone()
    }

    /// How many suites are loaded in memory now (see [`MAX_LOADED`]).
    pub fn loaded_count(&self) -> usize {
        self.loaded.lock().expect("sandbox lock").len()
    }

    /// Compiles (or loads from cache) and pre-instantiates a suite. Each sha256
    /// is compiled at most once at a time, even when asked concurrently. At
    /// most [`MAX_LOADED`] suites stay loaded beyond those in use: past it,
    /// those nobody holds are forgotten (the disk cache brings them back
    /// quickly), so a long-lived process does not keep every suite it ever saw.
    ///
    /// A large suite not cached optimized is returned on the baseline tier
    /// and optimized in the background (see [`Tiers`]); its tests switch
    /// to the optimized code as it is ready ([`LoadedSuite::settled`]).
    pub async fn load(self: &Arc<Self>, bytes: Arc<Vec<u8>>) -> Result<Arc<LoadedSuite>, SuiteError> {
        let sha = sha256_hex(&bytes);
        let cell = {
            let mut loaded = self.loaded.lock().expect("sandbox lock");
            if !loaded.contains_key(&sha) && loaded.len() >= MAX_LOADED {
                // Held elsewhere: a load in flight holds its cell, a running
                // shard its suite.
                loaded.retain(|_, cell| {
                    Arc::strong_count(cell) > 1 || cell.get().is_some_and(|s| Arc::strong_count(s) > 1)
                });
            }
            loaded.entry(sha.clone()).or_default().clone()
        };
        let this = self.clone();
        cell.get_or_try_init(|| async move {
            if let Some(component) = this.cached(Tier::Optimized, &sha).await? {
                return this.loaded_suite(component, Tier::Optimized, bytes, sha).await;
            }
            let baseline_first = this.tiers != Tiers::Optimized
                && (this.tiers == Tiers::Baseline || bytes.len() >= this.tier_above)
                && this.baseline().is_some();
            if baseline_first {
                let began = Instant::now();
                match this.compiled(Tier::Baseline, &bytes, &sha, false).await {
                    Ok(component) => {
                        let suite = this.loaded_suite(component, Tier::Baseline, bytes.clone(), sha).await?;
                        if this.tiers == Tiers::Tiered {
                            tracing::info!(suite = %suite.sha256, took = ?began.elapsed(), "compiled on the baseline tier; optimizing in the background");
                            this.optimize_later(&suite, bytes);
                        } else {
                            suite.settled.send_replace(true);
                        }
                        return Ok(suite);
                    }
                    // Winch declines some proposals (GC, tail calls,
                    // exceptions, ...): Cranelift compiles those, or says
                    // what is wrong with the suite.
                    Err(e) => tracing::debug!(suite = %sha, "the baseline compiler declined the suite ({e}); compiling it optimized"),
                }
            }
            let component = this.compiled(Tier::Optimized, &bytes, &sha, false).await?;
            this.loaded_suite(component, Tier::Optimized, bytes, sha).await
        })
        .await
        .cloned()
    }

    fn engines(&self, tier: Tier) -> &Engines {
        match tier {
            Tier::Baseline => self.baseline().unwrap_or(&self.optimized),
            Tier::Optimized => &self.optimized,
        }
    }

    /// The baseline tier's engines, made on first use; `None` where this
    /// machine has no baseline compiler (Winch runs on x86-64 and aarch64):
    /// the optimized tier then does it all.
    fn baseline(&self) -> Option<&Engines> {
        self.baseline
            .get_or_init(|| {
                let made = Engines::new(Tier::Baseline, self.max_instances, &self.opts)
                    .inspect_err(|e| tracing::debug!("no baseline compiler on this machine: {e:#}"))
                    .ok()?;
                self.ticking.lock().expect("ticking lock").push(made.engine.weak());
                Some(made)
            })
            .as_ref()
    }

    /// The component of `tier` from the disk cache, if it holds one.
    async fn cached(self: &Arc<Self>, tier: Tier, sha: &str) -> Result<Option<Component>, SuiteError> {
        let (this, sha) = (self.clone(), sha.to_string());
        tokio::task::spawn_blocking(move || {
            let engines = this.engines(tier);
            engines.cache.as_ref().and_then(|c| c.load(&engines.engine, &sha))
        })
        .await
        .map_err(|e| SuiteError::Internal(format!("reading the compiled suite panicked: {e}")))
    }

    /// The suite compiled for `tier`: from the cache, or compiled in a
    /// child process within the budget (`idle`: at the lowest priority),
    /// or in this process when there is no budget or no child can start.
    async fn compiled(
        self: &Arc<Self>,
        tier: Tier,
        bytes: &Arc<Vec<u8>>,
        sha: &str,
        idle: bool,
    ) -> Result<Component, SuiteError> {
        if let Some(component) = self.cached(tier, sha).await? {
            return Ok(component);
        }
        check_header(bytes)?;
        if let Some(budget) = &self.budget
            && let Some(component) = self.compile_within(budget, tier, bytes, sha, idle).await?
        {
            return Ok(component);
        }
        let (this, bytes, sha) = (self.clone(), bytes.clone(), sha.to_string());
        tokio::task::spawn_blocking(move || this.compile(tier, &bytes, &sha))
            .await
            .map_err(|e| SuiteError::Internal(format!("compiling the suite panicked: {e}")))?
    }

    /// Links and pre-instantiates a compiled component as a new suite.
    async fn loaded_suite(
        self: &Arc<Self>,
        component: Component,
        tier: Tier,
        bytes: Arc<Vec<u8>>,
        sha: String,
    ) -> Result<Arc<LoadedSuite>, SuiteError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let (pre, imports, exports) = this.link(component, tier, &bytes)?;
            Ok(Arc::new(LoadedSuite {
                sha256: sha,
                size: bytes.len(),
                imports,
                exports,
                code: std::sync::RwLock::new(Arc::new(Code { pre, tier })),
                settled: tokio::sync::watch::Sender::new(tier == Tier::Optimized),
                loaded_on: tier,
            }))
        })
        .await
        .map_err(|e| SuiteError::Internal(format!("loading the suite panicked: {e}")))?
    }

    /// Compiles `suite` optimized in the background (one such compile at a
    /// time, at the lowest priority), swaps the code in and drops the
    /// baseline artifact from the cache. If that fails, the suite keeps its
    /// baseline code (it runs the same, slower).
    fn optimize_later(self: &Arc<Self>, suite: &Arc<LoadedSuite>, bytes: Arc<Vec<u8>>) {
        let (this, suite) = (self.clone(), suite.clone());
        self.pending.send_modify(|n| *n += 1);
        tokio::spawn(async move {
            let began = Instant::now();
            let optimized = async {
                let _turn =
                    this.optimizing.acquire().await.map_err(|e| SuiteError::Internal(e.to_string()))?;
                let component = this.compiled(Tier::Optimized, &bytes, &suite.sha256, true).await?;
                let this = this.clone();
                let bytes = bytes.clone();
                tokio::task::spawn_blocking(move || this.link(component, Tier::Optimized, &bytes))
                    .await
                    .map_err(|e| SuiteError::Internal(format!("loading the suite panicked: {e}")))?
            }
            .await;
            match optimized {
                Ok((pre, _, _)) => {
                    *suite.code.write().expect("suite code lock") =
                        Arc::new(Code { pre, tier: Tier::Optimized });
                    if let Some(cache) = this.baseline().and_then(|b| b.cache.as_ref()) {
                        cache.remove(&suite.sha256);
                    }
                    tracing::info!(suite = %suite.sha256, took = ?began.elapsed(), "optimized: the suite's next instances run Cranelift's code");
                }
                Err(e) => {
                    tracing::warn!(suite = %suite.sha256, "the suite keeps its baseline code: optimizing it failed: {e}")
                }
            }
            suite.settled.send_replace(true);
            this.pending.send_modify(|n| *n -= 1);
        });
    }

    /// How many engines this sandbox has made: 1, or 2 once a suite
    /// needed the baseline tier.
    pub fn engines_made(&self) -> usize {
        1 + usize::from(self.baseline.get().is_some_and(Option::is_some))
    }

    /// How many suites are being optimized in the background now.
    pub fn optimizing(&self) -> usize {
        *self.pending.borrow()
    }

    /// Waits until no suite is being optimized in the background: what a
    /// process that is about to exit does so that the cache holds the
    /// optimized code for the next (each compile within its budget).
    pub async fn optimized(&self) {
        let mut pending = self.pending.subscribe();
        let _ = pending.wait_for(|n| *n == 0).await;
    }

    /// Compiles a suite into the disk cache ahead of its runs, so that its
    /// first run loads compiled code instead of compiling it: at the lowest
    /// CPU priority, in a child process within the compile budget, one at
    /// a time (it takes its turn with the tiers' background compiles, so
    /// a suite's optimized code is never compiled twice). Nothing is loaded
    /// in memory. The tier is the one a run would end on: optimized, or
    /// the baseline when this sandbox runs on it alone.
    ///
    /// Does nothing ([`Precompiled::Skipped`]) where it could not help: no
    /// disk cache, or no child process to compile in (compiling in this
    /// process would not be at a low priority, nor stoppable).
    pub async fn precompile(self: &Arc<Self>, bytes: Arc<Vec<u8>>) -> Result<Precompiled, SuiteError> {
        let sha = sha256_hex(&bytes);
        let tier = self.precompiled_tier();
        let (Some(budget), Some(cache)) = (&self.budget, &self.engines(tier).cache) else {
            return Ok(Precompiled::Skipped);
        };
        if self.is_precompiled(&sha) {
            // Wanted again: the cache keeps it over the ones not asked for since.
            cache.touch(&sha);
            return Ok(Precompiled::Cached);
        }
        let _turn = self.optimizing.acquire().await.map_err(|e| SuiteError::Internal(e.to_string()))?;
        // A run may have compiled it while this waited for its turn.
        if cache.holds(&sha) {
            cache.touch(&sha);
            return Ok(Precompiled::Cached);
        }
        check_header(&bytes)?;
        Ok(match self.compile_within(budget, tier, &bytes, &sha, true).await? {
            Some(_) => Precompiled::Compiled,
            None => Precompiled::Skipped,
        })
    }

    /// The tier [`Sandbox::precompile`] compiles for.
    fn precompiled_tier(&self) -> Tier {
        if self.tiers == Tiers::Baseline && self.baseline().is_some() {
            Tier::Baseline
        } else {
            Tier::Optimized
        }
    }

    /// Whether suite `sha` is compiled as [`Sandbox::precompile`] would
    /// leave it: loaded in memory on that tier, or in its disk cache.
    pub fn is_precompiled(&self, sha: &str) -> bool {
        let tier = self.precompiled_tier();
        let loaded = self.loaded.lock().expect("sandbox lock").get(sha).and_then(|c| c.get().cloned());
        loaded.is_some_and(|s| s.code.read().expect("suite code lock").tier == tier)
            || self.engines(tier).cache.as_ref().is_some_and(|c| c.holds(sha))
    }

    /// Compiles for `tier` in a child process within `budget` (see
    /// [`compile`]), into the tier's disk cache when there is one; `None`
    /// when no child can be started here (the caller compiles in this
    /// process).
    async fn compile_within(
        &self,
        budget: &compile::CompileBudget,
        tier: Tier,
        bytes: &[u8],
        sha: &str,
        idle: bool,
    ) -> Result<Option<Component>, SuiteError> {
        let engines = self.engines(tier);
        let staging = match &engines.cache {
            Some(cache) => cache.dir().to_path_buf(),
            None => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&staging)
            .map_err(|e| SuiteError::Internal(format!("creating {}: {e}", staging.display())))?;
        let out = tempfile::Builder::new()
            .prefix(".compiled-")
            .tempfile_in(&staging)
            .map_err(|e| {
                SuiteError::Internal(format!("staging a compiled suite in {}: {e}", staging.display()))
            })?
            .into_temp_path();
        // A background compile does not hold up the new suites' turns.
        let _turn = if idle {
            None
        } else {
            Some(self.compiling.acquire().await.map_err(|e| SuiteError::Internal(e.to_string()))?)
        };
        if !budget.compile(bytes, &out, tier, idle).await? {
            return Ok(None);
        }
        let artifact = std::fs::read(&out)
            .map_err(|e| SuiteError::Internal(format!("reading the compiled suite: {e}")))?;
        // SAFETY: the artifact was written just now by `Component::serialize`
        // in this binary's compile command, with this tier's engine
        // configuration (`engine_config`); wasmtime checks its header and
        // configuration again. Loaded from memory: a system that cannot map
        // the file (Wine) still loads it.
        #[allow(unsafe_code)]
        let loaded = unsafe { Component::deserialize(&engines.engine, &artifact) };
        let component =
            loaded.map_err(|e| SuiteError::Internal(format!("loading the compiled suite: {e:#}")))?;
        if let Some(cache) = &engines.cache {
            cache.store_artifact(sha, &artifact);
        }
        Ok(Some(component))
    }

    /// Compiles for `tier` in this process (no bound), into the disk cache.
    fn compile(&self, tier: Tier, bytes: &[u8], sha: &str) -> Result<Component, SuiteError> {
        let engines = self.engines(tier);
        let component = Component::new(&engines.engine, bytes)
            .map_err(|e| SuiteError::Invalid(format!("not a valid WebAssembly component: {e:#}")))?;
        if let Some(cache) = &engines.cache {
            cache.store(sha, &component);
        }
        Ok(component)
    }

    /// Links a component compiled for `tier`: its pre-instantiated kind,
    /// imports and exports.
    fn link(
        &self,
        component: Component,
        tier: Tier,
        bytes: &[u8],
    ) -> Result<(KindPre, Vec<String>, Vec<String>), SuiteError> {
        let Engines { engine, linker, .. } = self.engines(tier);
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
        // The version first: a suite of an ABI this runner does not run
        // also imports interfaces of that version, which would not link.
        let tests_export = exports.iter().find_map(|e| e.strip_prefix(TESTS_EXPORT));
        let abi = match tests_export {
            Some(version) => Some(abi_of(version).ok_or_else(|| {
                SuiteError::Invalid(format!(
                    "the suite was built for suite ABI {version}; this runner (ensemble {}) runs suite ABI {}: \
                     build the suite against a WIT this runner knows, or update the runner",
                    env!("CARGO_PKG_VERSION"),
                    listed(&SUITE_ABIS, "and"),
                ))
            })?),
            None => None,
        };
        let pre = linker.instantiate_pre(&component).map_err(|e| {
            SuiteError::Invalid(format!(
                "the suite needs imports that Ensemble does not provide ({e:#}); a suite may import \
                 ensemble:suite/{{context,sync,log,attach,services}} of suite ABI {} and WASI 0.2 (imports: {})",
                listed(&SUITE_ABIS, "or"),
                imports.join(", ")
            ))
        })?;
        let kind_pre = if let (Some(version), Some(abi)) = (tests_export, abi) {
            let wrong_shape = |e: wasmtime::Error| {
                SuiteError::Invalid(format!(
                    "the suite exports {TESTS_EXPORT}{version} with the wrong shape: {e:#}"
                ))
            };
            KindPre::Suite(match abi {
                "0.1" => SuiteAbi::V01(v01::SuitePre::new(pre).map_err(wrong_shape)?),
                "0.2" => SuiteAbi::V02(v02::SuitePre::new(pre).map_err(wrong_shape)?),
                _ => SuiteAbi::V03(v03::SuitePre::new(pre).map_err(wrong_shape)?),
            })
        } else if exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2")) {
            let pre = wasmtime_wasi::p2::bindings::CommandPre::new(pre).map_err(|e| {
                SuiteError::Invalid(format!("the component exports wasi:cli/run with the wrong shape: {e:#}"))
            })?;
            if command::looks_like_libtest(bytes) { KindPre::Libtest(pre) } else { KindPre::Command(pre) }
        } else {
            return Err(SuiteError::Invalid(format!(
                "the component is not a suite: it exports neither {SUITE_WORLD} nor wasi:cli/run (exports: {})",
                if exports.is_empty() { "none".to_string() } else { exports.join(", ") }
            )));
        };
        Ok((kind_pre, imports, exports))
    }
}

/// Refuses bytes that are not a component, saying what they are instead.
fn check_header(bytes: &[u8]) -> Result<(), SuiteError> {
    if !bytes.starts_with(b"\0asm") {
        return Err(SuiteError::Invalid("not a WebAssembly file (it does not start with \\0asm)".into()));
    }
    if bytes.get(4..8) == Some(&[1, 0, 0, 0]) {
        return Err(SuiteError::Invalid(
            "this is a core WebAssembly module, not a component; build the suite for \
             wasm32-wasip2 (or wrap the module with `wasm-tools component new`)"
                .into(),
        ));
    }
    Ok(())
}

/// `a, b and c`: a list for a sentence.
fn listed(items: &[&str], conjunction: &str) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} {conjunction} {last}", rest.join(", ")),
    }
}

/// The `major.minor` of a suite ABI version this runner runs, if it does.
fn abi_of(version: &str) -> Option<&'static str> {
    let mut parts = version.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    SUITE_ABIS.into_iter().find(|abi| abi.split_once('.') == Some((major, minor)))
}

/// Whether a suite's list of tests stays within what is stored, sent in
/// one event and shown: [`MAX_TESTS`], [`MAX_TEST_NAME`], [`MAX_TAGS`],
/// [`MAX_TAG`], [`MAX_LISTED_BYTES`]. Guests hand the list over, so it is
/// checked here, where it enters. The error completes "the suite lists …".
fn check_listed(tests: &[TestCase]) -> Result<(), String> {
    if tests.len() > MAX_TESTS {
        return Err(format!("{} tests, more than the {MAX_TESTS} a suite may list", tests.len()));
    }
    let mut total = 0usize;
    let mut names = std::collections::HashSet::with_capacity(tests.len());
    for t in tests {
        let shown: String = t.name.chars().take(64).collect();
        // A name is a test's identity in every event, report and rerun.
        if !names.insert(t.name.as_str()) {
            return Err(format!("the test `{shown}` twice"));
        }
        if t.name.len() > MAX_TEST_NAME {
            return Err(format!(
                "a test whose name is {} bytes long (`{shown}…`), over the limit of {MAX_TEST_NAME}",
                t.name.len()
            ));
        }
        if t.tags.len() > MAX_TAGS {
            return Err(format!("the test `{shown}` with {} tags, more than {MAX_TAGS}", t.tags.len()));
        }
        if let Some(tag) = t.tags.iter().find(|tag| tag.len() > MAX_TAG) {
            return Err(format!(
                "the test `{shown}` with a tag of {} bytes, over the limit of {MAX_TAG}",
                tag.len()
            ));
        }
        total += t.name.len() + t.tags.iter().map(String::len).sum::<usize>();
        if total > MAX_LISTED_BYTES {
            return Err(format!(
                "tests whose names and tags add up to more than {}",
                ensemble_protocol::units::ByteSize(MAX_LISTED_BYTES as u64)
            ));
        }
    }
    Ok(())
}

/// Whether declared params make sense, and stay within what a plan entry
/// can set: the declarations are stored, sent to browsers and shown, so a
/// hostile suite cannot make them huge. The error completes "the suite
/// declares …".
fn check_declared(params: &[ParamMeta]) -> Result<(), String> {
    use ensemble_protocol::plan::{MAX_KEY, MAX_PARAMS};
    if params.len() > MAX_PARAMS {
        return Err(format!("{} params, more than the {MAX_PARAMS} a plan entry may set", params.len()));
    }
    let mut seen = std::collections::HashSet::new();
    for p in params {
        let shown: String = p.name.chars().take(MAX_KEY).collect();
        let bad = if p.name.trim().is_empty() {
            "a param without a name".to_string()
        } else if p.name.len() > MAX_KEY {
            format!("the param `{shown}…`, whose name is longer than {MAX_KEY} bytes")
        } else if p.help.len() > MAX_HELP {
            format!("the param `{shown}` with a help text longer than {MAX_HELP} bytes")
        } else if p.default.as_ref().is_some_and(|d| d.len() > MAX_HELP) {
            format!("the param `{shown}` with a default longer than {MAX_HELP} bytes")
        } else if !seen.insert(p.name.as_str()) {
            format!("the param `{shown}` twice")
        } else if p.required && p.default.is_some() {
            format!("the param `{shown}` as required and with a default")
        } else if let Some(Err(why)) = p.default.as_deref().map(|d| p.kind.check(d)) {
            format!("the param `{shown}` with a default that does not fit its type: {why}")
        } else {
            continue;
        };
        return Err(bad);
    }
    Ok(())
}

/// What a suite says about itself ([`LoadedSuite::describe`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Described {
    pub tests: Vec<TestCase>,
    /// `None` when the suite cannot say (ABI 0.1, WASI commands).
    pub params: Option<Vec<ParamMeta>>,
}

/// One ABI version's `test-info` as a [`TestCase`].
macro_rules! test_case {
    ($t:expr) => {{
        let t = $t;
        TestCase {
            name: t.name,
            tags: t.tags,
            ignored: t.ignored,
            // A suite's own number: never past what a plan may write.
            timeout: t.timeout_ms.map(|ms| Duration::from_millis(ms).min(HumanDuration::MAX.0)),
        }
    }};
}

/// One ABI version's `test-result` as an outcome and its message.
macro_rules! verdict {
    ($abi:ident, $r:expr) => {{
        use $abi::exports::ensemble::suite::tests::TestResult as R;
        match $r {
            R::Pass => (Outcome::Passed, None),
            R::Fail(m) => (Outcome::Failed, Some(m)),
            R::Skip(r) => (Outcome::Skipped, Some(r)),
        }
    }};
}

impl SuiteAbi {
    async fn list(&self, store: &mut Store<HostState>) -> wasmtime::Result<Vec<TestCase>> {
        // The versions' generated types differ; the calls read the same.
        macro_rules! list {
            ($pre:expr) => {{
                let suite = $pre.instantiate_async(&mut *store).await?;
                let listed = suite.ensemble_suite_tests().call_list(&mut *store).await?;
                listed.into_iter().map(|t| test_case!(t)).collect()
            }};
        }
        Ok(match self {
            SuiteAbi::V01(pre) => list!(pre),
            SuiteAbi::V02(pre) => list!(pre),
            SuiteAbi::V03(pre) => list!(pre),
        })
    }

    /// The tests and params of a suite of ABI 0.2 or later, which describe
    /// themselves (older ones cannot say; see [`LoadedSuite::describe`]).
    async fn describe(
        &self,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<(Vec<TestCase>, Vec<ParamMeta>)> {
        macro_rules! describe {
            ($abi:ident, $pre:expr) => {{
                use $abi::ensemble::suite::types::ParamType as T;
                let suite = $pre.instantiate_async(&mut *store).await?;
                let info = suite.ensemble_suite_tests().call_describe(&mut *store).await?;
                let params = info
                    .params
                    .into_iter()
                    .map(|p| ParamMeta {
                        name: p.name,
                        kind: match p.type_ {
                            T::String => ParamType::String,
                            T::Integer => ParamType::Integer,
                            T::Float => ParamType::Float,
                            T::Boolean => ParamType::Boolean,
                            T::Duration => ParamType::Duration,
                        },
                        required: p.required,
                        default: p.default,
                        help: p.help,
                    })
                    .collect();
                (info.tests.into_iter().map(|t| test_case!(t)).collect(), params)
            }};
        }
        Ok(match self {
            SuiteAbi::V01(_) => (self.list(store).await?, Vec::new()),
            SuiteAbi::V02(pre) => describe!(v02, pre),
            SuiteAbi::V03(pre) => describe!(v03, pre),
        })
    }

    async fn run(
        &self,
        store: &mut Store<HostState>,
        name: &str,
    ) -> wasmtime::Result<(Outcome, Option<String>)> {
        let began = Instant::now();
        Ok(match self {
            SuiteAbi::V01(pre) => {
                let suite = pre.instantiate_async(&mut *store).await?;
                crate::metrics::metrics().instantiate.observe(began.elapsed().as_secs_f64());
                verdict!(v01, suite.ensemble_suite_tests().call_run(&mut *store, name).await?)
            }
            SuiteAbi::V02(pre) => {
                let suite = pre.instantiate_async(&mut *store).await?;
                crate::metrics::metrics().instantiate.observe(began.elapsed().as_secs_f64());
                verdict!(v02, suite.ensemble_suite_tests().call_run(&mut *store, name).await?)
            }
            SuiteAbi::V03(pre) => {
                let suite = pre.instantiate_async(&mut *store).await?;
                crate::metrics::metrics().instantiate.observe(began.elapsed().as_secs_f64());
                verdict!(v03, suite.ensemble_suite_tests().call_run(&mut *store, name).await?)
            }
        })
    }
}

/// A suite-world component, by the ABI version it was built for.
enum SuiteAbi {
    V01(v01::SuitePre<HostState>),
    V02(v02::SuitePre<HostState>),
    V03(v03::SuitePre<HostState>),
}

enum KindPre {
    Suite(SuiteAbi),
    Libtest(wasmtime_wasi::p2::bindings::CommandPre<HostState>),
    Command(wasmtime_wasi::p2::bindings::CommandPre<HostState>),
}

/// A compiled, pre-instantiated suite, ready to list and run tests.
pub struct LoadedSuite {
    pub sha256: String,
    pub size: usize,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// The code new instances run: baseline until the optimized code
    /// replaces it (an instance keeps the code it started with).
    code: std::sync::RwLock<Arc<Code>>,
    /// Whether the code is final (optimized, or no optimizing under way).
    settled: tokio::sync::watch::Sender<bool>,
    /// The tier it was loaded on.
    loaded_on: Tier,
}

/// A suite's code of one tier, pre-instantiated.
struct Code {
    pre: KindPre,
    tier: Tier,
}

impl Code {
    fn engine(&self) -> &Engine {
        match &self.pre {
            KindPre::Suite(SuiteAbi::V01(p)) => p.engine(),
            KindPre::Suite(SuiteAbi::V02(p)) => p.engine(),
            KindPre::Suite(SuiteAbi::V03(p)) => p.engine(),
            KindPre::Libtest(p) | KindPre::Command(p) => p.engine(),
        }
    }
}

/// What one instance did, before it is judged.
enum Finished<T> {
    Returned(T),
    Trapped(wasmtime::Error),
    TimedOut,
}

impl LoadedSuite {
    /// The code new instances run now.
    fn code(&self) -> Arc<Code> {
        self.code.read().expect("suite code lock").clone()
    }

    /// Which compiler made the code new instances run now.
    pub fn tier(&self) -> Tier {
        self.code().tier
    }

    /// Which compiler made the code it was loaded with.
    pub fn loaded_on(&self) -> Tier {
        self.loaded_on
    }

    /// The suite's final tier, once any optimizing in the background has
    /// ended (at once when none is under way).
    pub async fn settled(&self) -> Tier {
        let mut settled = self.settled.subscribe();
        let _ = settled.wait_for(|done| *done).await;
        self.tier()
    }

    pub fn kind(&self) -> SuiteKind {
        match self.code().pre {
            KindPre::Suite(_) => SuiteKind::Suite,
            KindPre::Libtest(_) => SuiteKind::Libtest,
            KindPre::Command(_) => SuiteKind::Command,
        }
    }

    /// The suite ABI (`major.minor`) a suite-world component was built for.
    pub fn abi(&self) -> Option<&'static str> {
        match self.code().pre {
            KindPre::Suite(SuiteAbi::V01(_)) => Some("0.1"),
            KindPre::Suite(SuiteAbi::V02(_)) => Some("0.2"),
            KindPre::Suite(SuiteAbi::V03(_)) => Some("0.3"),
            _ => None,
        }
    }

    /// A fresh store for one instance of `code`, with its limits and
    /// captured output.
    fn store(
        code: &Code,
        env: &Arc<TestEnv>,
        test: &str,
        args: &[String],
        timeout: Duration,
    ) -> (Store<HostState>, Capture) {
        let capture = Capture::new(usize::try_from(env.output_limit).unwrap_or(usize::MAX));
        let state = HostState {
            wasi: env.grants.wasi_ctx(&capture, args),
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(env.memory_limit),
            env: env.clone(),
            test: test.to_string(),
            attached: Default::default(),
            spent: Default::default(),
            http: wasmtime_wasi_http::WasiHttpCtx::new(),
            http_gate: env.grants.http_gate(&capture),
            sockets: 0,
        };
        let mut store = Store::new(code.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // Yield to tokio at every tick so that the test's timeout (and a
        // cancelled run) can drop the call even in a busy loop; trap as a last
        // resort if the future is somehow not dropped.
        let now = Instant::now();
        let hard_stop = now.checked_add(timeout + HARD_STOP_GRACE).unwrap_or(now + HumanDuration::MAX.0);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() > hard_stop { UpdateDeadline::Interrupt } else { UpdateDeadline::Yield(1) })
        });
        store.set_epoch_deadline(1);
        (store, capture)
    }

    /// Runs `body` in a fresh instance under the timeout.
    async fn within<T, F>(store: &mut Store<HostState>, timeout: Duration, body: F) -> Finished<T>
    where
        F: AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<T>,
    {
        match tokio::time::timeout(timeout, body(store)).await {
            Err(_) => Finished::TimedOut,
            Ok(Ok(v)) => Finished::Returned(v),
            Ok(Err(e)) => Finished::Trapped(e),
        }
    }

    /// Lists the suite's tests (in a fresh instance of their own), checked
    /// against the bounds of [`check_listed`].
    pub async fn list(&self, env: &Arc<TestEnv>) -> Result<Vec<TestCase>, SuiteError> {
        let tests = self.list_unchecked(env).await?;
        check_listed(&tests).map_err(|bad| SuiteError::List(format!("the suite lists {bad}")))?;
        Ok(tests)
    }

    async fn list_unchecked(&self, env: &Arc<TestEnv>) -> Result<Vec<TestCase>, SuiteError> {
        let timeout = env.test_timeout;
        let code = self.code();
        match &code.pre {
            KindPre::Suite(abi) => {
                let (mut store, capture) = Self::store(&code, env, "", &[], timeout);
                let listed = Self::within(&mut store, timeout, async |store| abi.list(store).await).await;
                Self::listed(listed, &capture, timeout)
            }
            KindPre::Libtest(pre) => command::list_libtest(&code, pre, env).await,
            KindPre::Command(_) => Ok(vec![TestCase {
                name: command::COMMAND_TEST.to_string(),
                tags: vec![],
                ignored: false,
                timeout: None,
            }]),
        }
    }

    /// What the suite says about itself, in a fresh instance of its own:
    /// its tests and, from suites of ABI 0.2 on, the params it reads
    /// (checked: named, each once, a required one without a default).
    pub async fn describe(&self, env: &Arc<TestEnv>) -> Result<Described, SuiteError> {
        let code = self.code();
        let abi = match &code.pre {
            KindPre::Suite(abi @ (SuiteAbi::V02(_) | SuiteAbi::V03(_))) => abi,
            _ => return Ok(Described { tests: self.list(env).await?, params: None }),
        };
        let timeout = env.test_timeout;
        let (mut store, capture) = Self::store(&code, env, "", &[], timeout);
        let described = Self::within(&mut store, timeout, async |store| abi.describe(store).await).await;
        let (tests, params) = match described {
            Finished::Returned(both) => both,
            Finished::Trapped(e) => {
                return Err(SuiteError::Describe(
                    capture.panic_message().unwrap_or_else(|| format!("{e:#}")),
                ));
            }
            Finished::TimedOut => return Err(SuiteError::Describe(format!("timed out after {timeout:?}"))),
        };
        check_listed(&tests).map_err(|bad| SuiteError::Describe(format!("the suite lists {bad}")))?;
        check_declared(&params).map_err(|bad| SuiteError::Describe(format!("the suite declares {bad}")))?;
        Ok(Described { tests, params: Some(params) })
    }

    fn listed(
        listed: Finished<Vec<TestCase>>,
        capture: &Capture,
        timeout: Duration,
    ) -> Result<Vec<TestCase>, SuiteError> {
        match listed {
            Finished::Returned(list) => Ok(list),
            Finished::Trapped(e) => {
                Err(SuiteError::List(capture.panic_message().unwrap_or_else(|| format!("{e:#}"))))
            }
            Finished::TimedOut => Err(SuiteError::List(format!("timed out after {timeout:?}"))),
        }
    }

    /// Runs one test in a fresh instance.
    pub async fn run(&self, test: &TestCase, env: &Arc<TestEnv>) -> TestRun {
        let timeout = test.timeout.unwrap_or(env.test_timeout);
        let started = Instant::now();
        let code = self.code();
        let (outcome, message, capture, store) = match &code.pre {
            KindPre::Suite(abi) => {
                let (mut store, capture) = Self::store(&code, env, &test.name, &[], timeout);
                let done =
                    Self::within(&mut store, timeout, async |store| abi.run(store, &test.name).await).await;
                let (o, m) = match done {
                    Finished::Returned(verdict) => verdict,
                    other => judge_abnormal(other, &store, &capture, timeout),
                };
                (o, m, capture, store)
            }
            KindPre::Libtest(pre) | KindPre::Command(pre) => {
                let args = command::args_for(self.kind(), test);
                let (mut store, capture) = Self::store(&code, env, &test.name, &args, timeout);
                let done = Self::within(&mut store, timeout, async |store| {
                    let began = Instant::now();
                    let cmd = pre.instantiate_async(&mut *store).await?;
                    crate::metrics::metrics().instantiate.observe(began.elapsed().as_secs_f64());
                    cmd.wasi_cli_run().call_run(&mut *store).await
                })
                .await;
                let (o, m) = match done {
                    Finished::Returned(status) => {
                        command::judge_exit(self.kind(), if status.is_ok() { 0 } else { 1 }, &capture)
                    }
                    Finished::Trapped(e) if e.downcast_ref::<wasmtime_wasi::I32Exit>().is_some() => {
                        let code = e.downcast_ref::<wasmtime_wasi::I32Exit>().map_or(1, |x| x.0);
                        command::judge_exit(self.kind(), code, &capture)
                    }
                    other => judge_abnormal(other, &store, &capture, timeout),
                };
                (o, m, capture, store)
            }
        };
        let duration = started.elapsed();
        crate::metrics::metrics().test_duration.observe(duration.as_secs_f64());
        // The instance is torn down (its pool slot reset) after the tasks
        // already waiting to run had their turn: when a barrier releases
        // many parties of this machine, every one resumes before any of
        // those that finished cleans up.
        tokio::task::yield_now().await;
        drop(store);
        TestRun { outcome, message, output: capture.text(), duration }
    }
}

/// Turns a trap or a timeout into an outcome and a message a person can act on.
fn judge_abnormal<T>(
    done: Finished<T>,
    store: &Store<HostState>,
    capture: &Capture,
    timeout: Duration,
) -> (Outcome, Option<String>) {
    match done {
        Finished::TimedOut => {
            (Outcome::TimedOut, Some(format!("timed out after {}", humantime::format_duration(timeout))))
        }
        Finished::Trapped(e) => {
            if let Some(msg) = store.data().limiter.message() {
                return (Outcome::Crashed, Some(msg));
            }
            if let Some(panic) = capture.panic_message() {
                return (Outcome::Failed, Some(panic));
            }
            let chain = format!("{e:#}");
            let what = match e.downcast_ref::<wasmtime::Trap>() {
                Some(wasmtime::Trap::StackOverflow) => {
                    "stack overflow: the test recursed too deeply (wasm call stack exhausted)".to_string()
                }
                // Rust and C keep their stack in linear memory, growing down from
                // its start: overflowing it wraps to an address near 4 GiB.
                Some(wasmtime::Trap::MemoryOutOfBounds)
                    if chain.contains("memory fault at wasm address 0xfff") =>
                {
                    "stack overflow: the suite's stack (in linear memory) overflowed; unbounded recursion?"
                        .to_string()
                }
                Some(wasmtime::Trap::Interrupt) => {
                    return (
                        Outcome::TimedOut,
                        Some(format!(
                            "timed out after {} (interrupted)",
                            humantime::format_duration(timeout)
                        )),
                    );
                }
                Some(trap) => format!("the instance trapped: {trap}"),
                None => format!("the instance failed: {}", e.root_cause()),
            };
            let backtrace =
                e.downcast_ref::<wasmtime::WasmBacktrace>().map(|b| format!("\n{b}")).unwrap_or_default();
            (Outcome::Crashed, Some(format!("{what}{backtrace}")))
        }
        Finished::Returned(_) => unreachable!("judge_abnormal is only called for traps and timeouts"),
    }
}

/// A sync port for contexts outside a run (inspecting a suite): every sync
/// call fails with a clear message, logs are dropped.
struct NoRun;

#[async_trait::async_trait]
impl SyncPort for NoRun {
    async fn call(&self, _: ensemble_protocol::wire::SyncCall) -> ensemble_protocol::wire::SyncReply {
        ensemble_protocol::wire::SyncReply::Error {
            kind: ensemble_protocol::wire::SyncFailure::Invalid,
            message: "sync is only available inside a run".into(),
        }
    }
    fn log(&self, _: &str, _: &str, _: &str) {}
    fn attach(&self, _: &str, _: &str, _: Vec<u8>) {}
}

impl TestEnv {
    /// The environment used to list a suite's tests outside any run.
    pub fn inspection(role: &str) -> TestEnv {
        TestEnv {
            run_id: String::new(),
            role: role.to_string(),
            instance: 0,
            instance_count: 1,
            machine: String::new(),
            params: BTreeMap::new(),
            grants: Grants::default(),
            memory_limit: 256 << 20,
            output_limit: 1 << 20,
            attachment_limit: 0,
            test_timeout: Duration::from_secs(30),
            barrier_timeout_ms: 1,
            sync: Arc::new(NoRun),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str) -> ParamMeta {
        ParamMeta {
            name: name.into(),
            kind: ParamType::Integer,
            required: false,
            default: None,
            help: String::new(),
        }
    }

    fn case(name: String, tags: Vec<String>) -> TestCase {
        TestCase { name, tags, ignored: false, timeout: None }
    }

    #[test]
    fn listings_are_bounded_where_they_enter() {
        let fine: Vec<TestCase> = (0..1000).map(|i| case(format!("t{i}"), vec!["slow".into()])).collect();
        assert_eq!(check_listed(&fine), Ok(()));
        let huge_name = [case("n".repeat(70 << 20), vec![])];
        let err = check_listed(&huge_name).unwrap_err();
        assert!(err.contains("73400320 bytes long") && err.contains("over the limit of 1024"), "{err}");
        assert!(err.len() < 300, "the error does not repeat the name");
        let many: Vec<TestCase> = (0..450_000).map(|i| case(format!("t{i}"), vec![])).collect();
        assert!(check_listed(&many).unwrap_err().starts_with("450000 tests, more than the 100000"));
        let tags = [case("t".into(), vec!["x".into(); 33])];
        assert!(check_listed(&tags).unwrap_err().contains("33 tags"));
        let tag = [case("t".into(), vec!["x".repeat(129)])];
        assert!(check_listed(&tag).unwrap_err().contains("tag of 129 bytes"));
        let heavy: Vec<TestCase> = (0..10_000).map(|i| case(format!("{i:01000}"), vec![])).collect();
        assert!(check_listed(&heavy).unwrap_err().contains("add up to more than 8MiB"));
        let twice = [case("a".into(), vec![]), case("b".into(), vec![]), case("a".into(), vec![])];
        assert_eq!(check_listed(&twice).unwrap_err(), "the test `a` twice");
    }

    #[test]
    fn declarations_are_sane_and_bounded() {
        assert_eq!(check_declared(&[param("keys"), param("clients")]), Ok(()));
        let with = |f: fn(&mut ParamMeta)| {
            let mut p = param("keys");
            f(&mut p);
            check_declared(&[p]).unwrap_err()
        };
        assert_eq!(with(|p| p.name = " ".into()), "a param without a name");
        assert!(with(|p| p.name = "k".repeat(65)).contains("longer than 64 bytes"));
        assert!(with(|p| p.help = "h".repeat(1025)).contains("help text longer than 1024 bytes"));
        assert!(with(|p| p.default = Some("1".repeat(1025))).contains("default longer than 1024 bytes"));
        assert_eq!(
            with(|p| {
                p.required = true;
                p.default = Some("1".into())
            }),
            "the param `keys` as required and with a default"
        );
        assert!(
            with(|p| p.default = Some("many".into()))
                .contains("does not fit its type: \"many\" is not an integer")
        );
        assert_eq!(check_declared(&[param("a"), param("a")]).unwrap_err(), "the param `a` twice");
        let many: Vec<ParamMeta> = (0..257).map(|i| param(&format!("p{i}"))).collect();
        assert!(check_declared(&many).unwrap_err().starts_with("257 params, more than the 256"));
    }
}
