//! `ensemble demo`: a whole distributed setup on this host, in one command.
//!
//! Starts `ensemble serve` and two `ensemble runner` processes (labels
//! `tier=server` and `tier=client`), builds and uploads the example suites,
//! stores the distributed demo plan — a real server (`ensemble-kv`, native,
//! started as the plan's service by the server machine's runner) tested
//! over TCP by a client on the other machine, which pauses and restarts it
//! mid-test — and the sync example (kv-server and kv-client), and prints
//! the URL and the commands to try. Ctrl-C stops it all.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use ensemble_client::Client;

/// The demo plan, found from the working directory or the source tree.
fn demo_plan_path() -> PathBuf {
    let rel = Path::new("suites/plans/demo-distributed.toml");
    if rel.is_file() {
        return rel.to_path_buf();
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

/// The polyglot plan (a Rust server, Python and JavaScript clients), stored
/// too when this host has the Python and JavaScript component tools.
fn polyglot_plan_path() -> PathBuf {
    demo_plan_path().with_file_name("polyglot.toml")
}

/// The demo's server under test with a Rust and a Python client, stored
/// too when this host has componentize-py.
fn kv_polyglot_plan_path() -> PathBuf {
    demo_plan_path().with_file_name("kv-polyglot.toml")
}

/// The sync example: two suites meeting through the coordinator's sync.
fn sync_plan_path() -> PathBuf {
    demo_plan_path().with_file_name("kv-sync.toml")
}

/// The directory of `ensemble-kv`, the demo's server under test: beside
/// this binary, where the workspace's build puts it; built there first
/// when the demo runs through cargo (`cargo run` builds only `ensemble`).
fn kv_server_dir(exe: &Path) -> anyhow::Result<PathBuf> {
    let dir = exe.parent().context("the ensemble binary has no directory")?.to_path_buf();
    let kv = dir.join(format!("ensemble-kv{}", std::env::consts::EXE_SUFFIX));
    if kv.is_file() {
        return Ok(dir);
    }
    let Some(cargo) = std::env::var_os("CARGO") else {
        bail!(
            "the demo's server under test, {}, is missing: build it with `cargo build -p ensemble-kv` \
             (the same profile as this binary)",
            kv.display()
        );
    };
    println!("Building ensemble-kv, the demo's server under test…");
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "ensemble-kv"]);
    // Not as the package `cargo run` ran (its variables would make build
    // scripts rerun, and the next build rebuild them).
    ensemble_build_support::clean_cargo_env(&mut build);
    if dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    let status = build.status().context("running cargo to build ensemble-kv")?;
    if !status.success() || !kv.is_file() {
        bail!("building ensemble-kv failed ({status}); its error is above");
    }
    Ok(dir)
}

/// Example suites (crates under `suites/examples`) added to the catalog
/// besides the demo plan's own.
const CATALOG: [&str; 3] = ["basics", "hello-command", "many-tests"];

/// Children killed when the demo ends, however it ends: the last started
/// first, so the runners are gone before their coordinator (and do not
/// complain of losing it).
struct Children(Vec<(&'static str, Child)>);

impl Drop for Children {
    fn drop(&mut self) {
        for (_, c) in self.0.iter_mut().rev() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Children {
    /// Resolves when one of the children has exited, naming it: during
    /// setup, that is the demo failing (the child said why on stderr).
    async fn first_exit(&mut self) -> anyhow::Error {
        loop {
            for (name, child) in self.0.iter_mut() {
                match child.try_wait() {
                    Ok(Some(status)) => {
                        return anyhow::anyhow!(
                            "{name} stopped before the demo was up ({status}); its error is above"
                        );
                    }
                    Ok(None) => {}
                    Err(e) => return anyhow::anyhow!("watching {name}: {e}"),
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}

/// The demo's own data directory, removed when the demo ends, however it
/// ends (declared before the children, so they are gone first).
struct Scratch(Option<PathBuf>);

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Ports tried after the asked one when it is taken.
const PORT_TRIES: u16 = 20;

/// `listen`, or when its port is taken the next free one (a port of 0 is
/// any free port already).
fn free_address(listen: std::net::SocketAddr) -> anyhow::Result<std::net::SocketAddr> {
    let mut addr = listen;
    for _ in 0..=PORT_TRIES {
        match std::net::TcpListener::bind(addr) {
            Ok(_) => {
                if addr != listen {
                    println!("Port {} is taken: the demo uses {} instead.", listen.port(), addr.port());
                }
                return Ok(addr);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && addr.port() != 0 => {
                addr.set_port(addr.port().checked_add(1).unwrap_or(0));
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {addr}")),
        }
    }
    bail!(
        "ports {} to {} are all taken: pick another address with --listen HOST:PORT (or port 0 for any)",
        listen.port(),
        addr.port() - 1
    )
}

/// What the setup made: where it listens, the token and the stored plan.
struct Up {
    url: String,
    token: String,
    plan_name: String,
    plan_id: String,
    plan_path: PathBuf,
    /// The polyglot plan's id, or why it was not stored.
    polyglot: Result<String, String>,
    /// The kv-polyglot plan's id, or why it was not stored (the same tools).
    kv_polyglot: Result<String, String>,
}

pub async fn demo(listen: std::net::SocketAddr, data_dir: Option<PathBuf>) -> anyhow::Result<i32> {
    let mut scratch = Scratch(None);
    let mut children = Children(Vec::new());
    // Ctrl-C (or SIGTERM, SIGHUP) while it starts stops it as cleanly as
    // once it is up: children gone, scratch data removed.
    let up = {
        let setup = set_up(listen, data_dir, &mut scratch, &mut children);
        tokio::select! {
            up = setup => Some(up?),
            _ = crate::signals::wait_for_signal() => None,
        }
    };
    if let Some(up) = &up {
        print_banner(up);
        crate::signals::wait_for_signal().await;
    }
    let before = if up.is_some() { "" } else { " before it was up" };
    println!("Stopping the demo{before}: runner-client, runner-server, then the coordinator…");
    drop(children);
    drop(scratch);
    println!("Stopped.");
    Ok(ensemble_protocol::exit::SUCCESS)
}

async fn set_up(
    listen: std::net::SocketAddr,
    data_dir: Option<PathBuf>,
    scratch: &mut Scratch,
    children: &mut Children,
) -> anyhow::Result<Up> {
    let exe = std::env::current_exe().context("finding the ensemble binary")?;
    let listen = free_address(listen)?;
    let data_dir = match data_dir {
        Some(d) => d,
        None => scratch.0.insert(tempfile_dir()?).clone(),
    };
    let (token, _) = crate::secret::kept_secret(&data_dir, "token")?;
    let (join_token, _) = crate::secret::kept_secret(&data_dir, "join-token")?;
    println!("Starting the coordinator on {listen} (data in {})…", data_dir.display());
    let mut server = Command::new(&exe)
        .args(["serve", "--listen", &listen.to_string(), "--data-dir"])
        .arg(&data_dir)
        .args(["--name", "coordinator"])
        .env("ENSEMBLE_TOKEN", &token)
        .env("ENSEMBLE_JOIN_TOKEN", &join_token)
        .stdout(Stdio::piped())
        .spawn()
        .context("starting ensemble serve")?;
    let stdout = server.stdout.take().context("server stdout")?;
    children.0.push(("the coordinator", server));
    let mut out = BufReader::new(stdout);
    let first = tokio::task::spawn_blocking(move || {
        let mut first = String::new();
        let read = out.read_line(&mut first);
        // Keep reading what the server prints, so it never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        read.map(|_| first)
    })
    .await??;
    let Some(url) = first.trim().strip_prefix("ensemble serve: listening on ").map(str::to_string) else {
        bail!("ensemble serve did not start (its error is above)");
    };
    // The server machine may start ensemble-kv (found on its PATH); both
    // may reach the run's services (kv-polyglot's restarting client shares
    // the server's machine).
    let kv_dir = kv_server_dir(&exe)?;
    let path = std::env::join_paths(
        std::iter::once(kv_dir).chain(std::env::var_os("PATH").iter().flat_map(std::env::split_paths)),
    )?;
    println!("Starting two runners: runner-server (tier=server) and runner-client (tier=client)…");
    for (name, tier, grant) in [
        ("runner-server", "server", &["--allow-exec", "ensemble-kv", "--allow-net", "service:*"][..]),
        ("runner-client", "client", &["--allow-net", "service:*"][..]),
    ] {
        let child = Command::new(&exe)
            .args(["runner", "--join", &url, "--name", name, "--label", &format!("tier={tier}")])
            .args(grant)
            .env("ENSEMBLE_JOIN_TOKEN", &join_token)
            .env("PATH", &path)
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting runner {name}"))?;
        children.0.push((name, child));
    }
    let client = Client::new(&url, Some(token.clone()), ensemble_client::tls_config(None)?)?;
    let machines = tokio::select! {
        machines = client.wait_machines(3, std::time::Duration::from_secs(60)) => machines?,
        exited = children.first_exit() => return Err(exited),
    };
    let online = machines.iter().filter(|m| m.state.is_connected()).count();
    if online < 3 {
        bail!("only {online} of 3 machines came online");
    }

    println!("Building the example suites and storing the demo plan…");
    let path = demo_plan_path();
    let file = crate::prepare::resolve(&path).await?;
    let plan = file.upload(&client).await?;
    let examples = path.parent().map(Path::to_path_buf).unwrap_or_default().join("../examples");
    let plan_id = client.create_plan(&plan).await?.id;
    let sync_example = crate::prepare::resolve(&sync_plan_path()).await?.upload(&client).await?;
    client.create_plan(&sync_example).await?;
    // The polyglot plan needs componentize-py, esbuild and componentize-js:
    // without them the demo goes on, saying what to install.
    let polyglot = match crate::prepare::resolve(&polyglot_plan_path()).await {
        Ok(file) => {
            let plan = file.upload(&client).await?;
            Ok(client.create_plan(&plan).await?.id)
        }
        Err(e) => Err(e.to_string()),
    };
    let kv_polyglot = match crate::prepare::resolve(&kv_polyglot_plan_path()).await {
        Ok(file) => {
            let plan = file.upload(&client).await?;
            Ok(client.create_plan(&plan).await?.id)
        }
        Err(e) => Err(e.to_string()),
    };
    // More suites in the catalog, to build plans of one's own in the browser.
    for name in CATALOG {
        let crate_dir = examples.join(name);
        let suite = tokio::task::spawn_blocking(move || crate::suites::resolve(&crate_dir))
            .await?
            .map_err(|e| anyhow::anyhow!("building the example suite {name}: {e}"))?;
        client.ensure_suite(&suite.name, &suite.sha256, &suite.bytes).await?;
    }
    Ok(Up { url, token, plan_name: plan.name, plan_id, plan_path: path, polyglot, kv_polyglot })
}

fn print_banner(up: &Up) {
    let Up { url, token, plan_name, plan_id, plan_path, polyglot, kv_polyglot } = up;
    println!();
    println!("Ensemble demo is up: {url}");
    println!(
        "  machines: coordinator (the server itself), runner-server (tier=server), runner-client (tier=client)"
    );
    println!(
        "  plan:     {plan_name:?} stored as {plan_id} — a real server (ensemble-kv) on runner-server, \
         tested over TCP from runner-client, paused and restarted mid-test"
    );
    match kv_polyglot {
        Ok(id) => println!(
            "  plan:     \"kv-polyglot\" stored as {id} — the same server, restarted by a Rust client while \
             Python (TCP) and JavaScript (HTTP) clients read back across it"
        ),
        Err(why) => println!(
            "  (the \"kv-polyglot\" plan is not stored: {}; `cargo xtask test` installs the suite tools)",
            why.lines().last().unwrap_or_default().trim()
        ),
    }
    println!("  plan:     \"kv-sync\" — kv-server and kv-client meeting through sync, on different machines");
    match polyglot {
        Ok(id) => println!(
            "  plan:     \"polyglot\" stored as {id} — the Rust kv-server with Python and JavaScript clients"
        ),
        Err(why) => println!(
            "  (the \"polyglot\" plan is not stored: {}; `cargo xtask test` installs the suite tools)",
            why.lines().last().unwrap_or_default().trim()
        ),
    }
    println!();
    println!("  suites:   kv-tcp-client, kv-server, kv-client, {}", CATALOG.join(", "));
    println!();
    let open = format!("{url}/?token={}", ensemble_protocol::api::encode(token));
    println!("  token:    {token}");
    println!();
    println!("Open {open} in a browser: run the plan, watch it live, or build a plan of your own.");
    println!("Or from a terminal:");
    println!("  export ENSEMBLE_TOKEN={token}");
    println!("  {} run {} --server {url}", crate::cli::invocation(), plan_path.display());
    println!(
        "  curl -s -H \"Authorization: Bearer $ENSEMBLE_TOKEN\" -H 'Content-Type: application/json' \\\n       -X POST {url}/api/runs -d '{{\"plan_id\":\"{plan_id}\"}}'"
    );
    println!("  curl -s -H \"Authorization: Bearer $ENSEMBLE_TOKEN\" {url}/api/machines");
    println!();
    println!("Press Ctrl-C to stop the demo.");
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("ensemble-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
