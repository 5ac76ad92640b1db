//! `ensemble run PLAN` without a server: an in-process coordinator and one
//! in-process machine per profile instance, so a distributed plan runs whole
//! on one host with its sync working across the shards.
//!
//! Machines are wired to the coordinator with the same message types a
//! WebSocket carries; only the channel differs.

use std::collections::BTreeMap;
use std::sync::Arc;

use ensemble_protocol::plan::Plan;
use ensemble_protocol::wire::MachineInfo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::agent::{Agent, MemorySuites, local_facts};
use crate::coordinator::{self, Inbound, MachineLink, RunResult, SuiteRef};
use crate::report::Reporter;
use crate::sandbox::Sandbox;
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
            });
        }
    }
    out
}

/// Runs a plan on in-process machines, feeding `reporters`.
pub async fn run(
    plan: &Plan,
    suites: &[LocalSuite],
    sandbox: Arc<Sandbox>,
    reporters: &mut [Box<dyn Reporter>],
) -> anyhow::Result<RunResult> {
    let store = Arc::new(MemorySuites::default());
    for s in suites {
        store.insert(s.sha256.clone(), s.bytes.clone());
    }
    let shards_hint = plan.entries.len() * plan.profiles.len().max(1);
    let infos = local_machines(plan, shards_hint);
    let shutdown = CancellationToken::new();
    let (in_tx, mut in_rx) = mpsc::unbounded_channel();
    let mut links = Vec::new();
    let mut tasks = Vec::new();
    for (index, info) in infos.into_iter().enumerate() {
        let (to_tx, to_rx) = mpsc::unbounded_channel();
        let (from_tx, mut from_rx) = mpsc::unbounded_channel();
        let agent = Arc::new(Agent::new(info.clone(), sandbox.clone(), store.clone()));
        tasks.push(tokio::spawn(agent.serve(to_rx, from_tx, shutdown.child_token())));
        // Tag each machine's messages with its index on the shared inbound
        // channel; in-process machines share the coordinator's clock.
        let in_tx = in_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(msg) = from_rx.recv().await {
                if in_tx.send(Inbound::Message { machine: index, msg, clock_offset_us: 0 }).is_err() {
                    break;
                }
            }
        }));
        links.push(MachineLink { info, port: Arc::new(to_tx) });
    }
    drop(in_tx);
    let refs: Vec<SuiteRef> =
        suites.iter().map(|s| SuiteRef { name: s.name.clone(), sha256: s.sha256.clone() }).collect();
    let result =
        coordinator::run_plan(coordinator::new_run_id(), plan, &refs, &links, &mut in_rx, reporters).await;
    shutdown.cancel();
    drop(links);
    for t in tasks {
        let _ = t.await;
    }
    Ok(result?)
}
