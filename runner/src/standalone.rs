//! `ensemble run PLAN` without a server: the coordinator's [`Dispatcher`]
//! with one in-process machine per profile instance, so a distributed plan
//! runs whole on one host with its sync working across the shards.
//!
//! Machines are wired to the dispatcher through the same [`Link`] and
//! message types a remote runner's WebSocket carries; only the channel
//! differs. Every task started here ends before [`run`] returns.
//!
//! [`Link`]: crate::agent::link::Link

use std::collections::BTreeMap;
use std::sync::Arc;

use ensemble_protocol::plan::Plan;
use ensemble_protocol::wire::MachineInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agent::link::pump_in_process;
use crate::agent::{Agent, MemorySuites, local_facts};
use crate::coordinator::matching::{self, Unplaced};
use crate::coordinator::{Dispatcher, Inbound, MachineLink, RunResult, SuiteRef, new_run_id};
use crate::report::Reporter;
use crate::sandbox::{HostPolicy, Sandbox};
use crate::suites::LocalSuite;

/// The machines a plan gets when it runs alone: one per profile instance,
/// named after the profile, carrying the profile's labels (and this host's
/// `os`/`arch` where the profile does not say).
pub fn local_machines(plan: &Plan, shards_hint: usize) -> Vec<MachineInfo> {
    let facts = local_facts();
    let mut out = Vec::new();
    for p in &plan.profiles {
        for i in 0..p.count {
            let name = match (&p.machine, p.count) {
                (Some(m), _) => m.clone(),
                (None, 1) => p.name.clone(),
                (None, _) => format!("{}-{}", p.name, i + 1),
            };
            let mut labels: BTreeMap<String, String> =
                [("os".to_string(), facts.os.clone()), ("arch".to_string(), facts.arch.clone())].into();
            labels.extend(p.labels.clone());
            out.push(MachineInfo {
                name,
                labels,
                // Parallel parts may wait on each other: never queue them.
                slots: shards_hint.max(1) as u32,
                facts: facts.clone(),
                // A standalone run starts what its own plan says.
                allow_exec: vec!["*".to_string()],
            });
        }
    }
    out
}

/// Runs a plan on in-process machines, feeding `reporters`; entry `i`'s
/// suite uses sync when `uses_sync[i]`; a `duration:K/N` partition
/// balances by `durations`. Fails only when the plan cannot be placed.
pub async fn run(
    plan: &Plan,
    suites: &[LocalSuite],
    uses_sync: &[bool],
    durations: &ensemble_protocol::filter::SharedDurations,
    sandbox: Arc<Sandbox>,
    reporters: Vec<Box<dyn Reporter>>,
) -> Result<RunResult, Unplaced> {
    let store = Arc::new(MemorySuites::default());
    for s in suites {
        store.insert(s.sha256.clone(), s.bytes.clone());
    }
    let shards_hint = plan.entries.len() * plan.profiles.len().max(1);
    let infos = local_machines(plan, shards_hint);
    let names: Vec<String> = suites.iter().map(|s| s.name.clone()).collect();
    let shards = matching::place(plan, &names, uses_sync, &infos, &[])?;

    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    let mut links = Vec::new();
    crate::services::die_together();
    for (index, info) in infos.into_iter().enumerate() {
        let (to_tx, to_rx) = mpsc::unbounded_channel();
        let (agent_in_tx, agent_in_rx) = mpsc::unbounded_channel();
        let (agent_out_tx, agent_out_rx) = mpsc::unbounded_channel();
        let host = crate::services::Host {
            allow_exec: crate::services::AllowExec::open(),
            advertise: "127.0.0.1".into(),
            owner: None,
        };
        let agent = Arc::new(
            Agent::new(info.clone(), sandbox.clone(), store.clone(), HostPolicy::open()).with_services(host),
        );
        let backlog = agent.backlog();
        tasks.spawn(agent.serve(agent_in_rx, agent_out_tx, shutdown.child_token()));
        // In-process machines share the coordinator's clock.
        let in_tx = in_tx.clone();
        tasks.spawn(pump_in_process(agent_out_rx, agent_in_tx, to_rx, backlog, move |msg| {
            in_tx.send(Inbound::Message { machine: index, msg, clock_offset_us: 0, intake: None }).is_ok()
        }));
        links.push(MachineLink { info, port: Arc::new(to_tx) });
    }
    drop(in_tx);
    let refs = suites
        .iter()
        .zip(uses_sync.iter().chain(std::iter::repeat(&false)))
        .map(|(s, &uses_sync)| SuiteRef { name: s.name.clone(), sha256: s.sha256.clone(), uses_sync })
        .collect();
    let dispatcher =
        Dispatcher::new(new_run_id(), plan, refs, links, shards, reporters).with_durations(durations);
    let result = dispatcher.run(&mut in_rx).await;
    // The dispatcher is gone, and with it the machines' ports: each pump
    // closes its agent's inbox and the agents wind down.
    shutdown.cancel();
    tasks.close();
    tasks.wait().await;
    Ok(result)
}
