//! Plan → shards: which suite instance runs on which machine.
//!
//! A profile selects machines by labels (all must match) or by name, and takes
//! `count` of them. A distributed plan places each entry on its profile's
//! machines; a cross-platform plan places every entry on every profile (or on
//! the entry's own profile when it names one). A plan that cannot be placed is
//! refused before anything runs, with an explanation naming the profile, its
//! labels and the machines online with theirs.
//!
//! Slots: a machine runs at most its `slots` shards at once and queues the
//! rest. Shards whose suites use sync (import `ensemble:suite/sync`) wait for
//! each other, so in a parallel plan every one of them must run at once: a
//! machine may be given no more of them than it has slots ([`Unplaced::Never`]
//! when it never could, [`Unplaced::Busy`] when other runs hold the slots).
//! Among matching machines, placement prefers those with the most free slots.

use std::collections::{BTreeMap, BTreeSet};

use ensemble_protocol::event::ShardRef;
use ensemble_protocol::plan::{Execution, Plan, PlanType, Profile};
use ensemble_protocol::wire::MachineInfo;

/// One shard to dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardPlan {
    pub shard: ShardRef,
    /// Index of the plan entry it comes from (the sequential order).
    pub entry: usize,
    pub profile: String,
    pub machine_index: usize,
    pub instance_count: u32,
    /// Its suite uses sync: it must not wait in a machine's queue while
    /// others wait for it.
    pub coordinates: bool,
    /// Set for an instance of the plan's service of this index (`entry` is
    /// then meaningless): it runs beside the entries, in no slot.
    pub service: Option<usize>,
}

/// What a machine is doing for other runs now.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Busy {
    /// Shards assigned to it and not done (running or queued there).
    pub shards: u32,
    /// The runs they belong to.
    pub runs: BTreeSet<String>,
}

/// Why a plan cannot be placed on the machines at hand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Unplaced {
    /// These machines could never run it as it is (too few machines match,
    /// or too few slots for the parts that must run at once).
    #[error("{0}")]
    Never(String),
    /// They could, once other runs free the slots it needs.
    #[error("{0}")]
    Busy(String),
}

impl Unplaced {
    pub fn message(&self) -> &str {
        match self {
            Unplaced::Never(m) | Unplaced::Busy(m) => m,
        }
    }
}

/// The profiles an entry's instances are placed on.
pub(crate) fn entry_profiles<'p>(plan: &'p Plan, entry: &ensemble_protocol::plan::Entry) -> Vec<&'p Profile> {
    match (&entry.profile, plan.kind) {
        (Some(p), _) => plan.profile(p).into_iter().collect(),
        (None, PlanType::CrossPlatform) => plan.profiles.iter().collect(),
        (None, PlanType::Distributed) => vec![],
    }
}

/// The suites (sha256, each once, in entry order) of `plan`'s entries that
/// a machine like `machine` could be given: those placed on a profile it
/// matches. Entries that do not name a stored suite by hash have none.
pub fn suites_for<'p>(plan: &'p Plan, machine: &MachineInfo) -> Vec<&'p str> {
    let mut suites: Vec<&str> = Vec::new();
    for entry in &plan.entries {
        if let Some(sha) = ensemble_protocol::plan::suite_sha(&entry.suite)
            && !suites.contains(&sha)
            && entry_profiles(plan, entry).iter().any(|p| p.matches(machine))
        {
            suites.push(sha);
        }
    }
    suites
}

/// Places `plan` (entry `i`'s suite named `suite_names[i]`, using sync when
/// `uses_sync[i]`) on `machines`, of which `busy[i]` says what machine `i`
/// does for other runs (missing: nothing). Picks `count` machines per
/// profile, those with the most free slots first, then those given the
/// fewest shards so far.
pub fn place(
    plan: &Plan,
    suite_names: &[String],
    uses_sync: &[bool],
    machines: &[MachineInfo],
    busy: &[Busy],
) -> Result<Vec<ShardPlan>, Unplaced> {
    let parallel = plan.settings.execution == Execution::Parallel;
    let coordinates = |i: usize| parallel && uses_sync.get(i).copied().unwrap_or(false);
    let busy_of = |m: usize| busy.get(m).map_or(0, |b| b.shards);
    // Shards each of a profile's machines gets, and how many coordinate.
    let mut per_machine: BTreeMap<&str, (u32, u32)> = BTreeMap::new();
    for (i, entry) in plan.entries.iter().enumerate() {
        for p in entry_profiles(plan, entry) {
            let w = per_machine.entry(&p.name).or_default();
            w.0 += 1;
            w.1 += u32::from(coordinates(i));
        }
    }
    let mut load = vec![0u32; machines.len()];
    let mut sync_load = vec![0u32; machines.len()];
    let mut chosen: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut problems = Vec::new();
    for profile in &plan.profiles {
        let mut candidates: Vec<usize> =
            (0..machines.len()).filter(|&i| profile.matches(&machines[i])).collect();
        if candidates.len() < profile.count as usize {
            problems.push(format!(
                "profile {:?} needs {} machine(s) with {} but {} match",
                profile.name,
                profile.count,
                profile.describe(),
                candidates.len()
            ));
            continue;
        }
        let free = |i: usize| machines[i].slots.max(1).saturating_sub(busy_of(i) + sync_load[i]);
        candidates.sort_by_key(|&i| (std::cmp::Reverse(free(i)), load[i], i));
        candidates.truncate(profile.count as usize);
        let (shards, syncing) = per_machine.get(profile.name.as_str()).copied().unwrap_or_default();
        for &i in &candidates {
            load[i] += shards;
            sync_load[i] += syncing;
        }
        chosen.insert(&profile.name, candidates);
    }
    if !problems.is_empty() {
        let online = if machines.is_empty() {
            "no machines are online".to_string()
        } else {
            let list: Vec<String> = machines
                .iter()
                .map(|m| {
                    let labels: Vec<String> = m.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    format!("{} ({})", m.name, labels.join(", "))
                })
                .collect();
            format!("machines online: {}", list.join("; "))
        };
        return Err(Unplaced::Never(format!("the plan cannot be placed: {}; {online}", problems.join("; "))));
    }
    exec_problems(plan, machines, &chosen)?;
    check_slots(machines, busy, &chosen, &sync_load)?;
    let mut shards = Vec::new();
    for (entry_index, entry) in plan.entries.iter().enumerate() {
        let targets: Vec<(&Profile, usize)> = entry_profiles(plan, entry)
            .into_iter()
            .flat_map(|p| chosen[p.name.as_str()].iter().map(move |&m| (p, m)))
            .collect();
        let count = targets.len() as u32;
        for (instance, (profile, m)) in targets.into_iter().enumerate() {
            shards.push(ShardPlan {
                shard: ShardRef {
                    shard: shards.len() as u32 + 1,
                    machine: machines[m].name.clone(),
                    role: entry.role_name(),
                    suite: suite_names[entry_index].clone(),
                    instance: instance as u32,
                },
                entry: entry_index,
                profile: profile.name.clone(),
                machine_index: m,
                instance_count: count,
                coordinates: coordinates(entry_index),
                service: None,
            });
        }
    }
    for (index, service) in plan.services.iter().enumerate() {
        let Some(ms) = chosen.get(service.profile.as_str()) else { continue };
        let count = ms.len() as u32;
        for (instance, &m) in ms.iter().enumerate() {
            shards.push(ShardPlan {
                shard: ShardRef {
                    shard: shards.len() as u32 + 1,
                    machine: machines[m].name.clone(),
                    role: format!("{}{}", ensemble_protocol::service::GRANT_PREFIX, service.name),
                    suite: service.command.first().cloned().unwrap_or_default(),
                    instance: instance as u32,
                },
                entry: usize::MAX,
                profile: service.profile.clone(),
                machine_index: m,
                instance_count: count,
                coordinates: false,
                service: Some(index),
            });
        }
    }
    Ok(shards)
}

/// Refuses a placement that puts a service on a machine whose operator does
/// not let it start the service's program (`--allow-exec`), naming both and
/// the flag.
fn exec_problems(
    plan: &Plan,
    machines: &[MachineInfo],
    chosen: &BTreeMap<&str, Vec<usize>>,
) -> Result<(), Unplaced> {
    let mut problems = Vec::new();
    for (i, service) in plan.services.iter().enumerate() {
        let Some(program) = service.command.first() else { continue };
        for &m in chosen.get(service.profile.as_str()).into_iter().flatten() {
            if !ensemble_protocol::service::exec_allowed(&machines[m].allow_exec, program) {
                problems.push(format!(
                    "services[{i}] ({}) starts {program} on machine {}, which does not allow it \
                     (its operator can allow it with `ensemble runner --allow-exec {program}`)",
                    service.name, machines[m].name
                ));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Unplaced::Never(format!("the plan cannot run: {}", problems.join("; "))))
    }
}

/// Every coordinating shard must get a slot at once: refuses a placement
/// that gives a machine more of them than it has slots, and holds one back
/// while other runs' shards fill the slots it needs.
fn check_slots(
    machines: &[MachineInfo],
    busy: &[Busy],
    chosen: &BTreeMap<&str, Vec<usize>>,
    sync_load: &[u32],
) -> Result<(), Unplaced> {
    let total: u32 = sync_load.iter().sum();
    let profiles_of = |m: usize| -> String {
        let names: Vec<&str> = chosen.iter().filter(|(_, ms)| ms.contains(&m)).map(|(p, _)| *p).collect();
        names.join(", ")
    };
    let short: Vec<usize> =
        (0..machines.len()).filter(|&m| sync_load[m] > machines[m].slots.max(1)).collect();
    if !short.is_empty() {
        let list: Vec<String> = short
            .iter()
            .map(|&m| {
                format!(
                    "{} (profile {}) has {} slot(s) for {} of them",
                    machines[m].name,
                    profiles_of(m),
                    machines[m].slots.max(1),
                    sync_load[m]
                )
            })
            .collect();
        let most = short.iter().map(|&m| sync_load[m]).max().unwrap_or(0);
        let profiles: BTreeSet<String> = short.iter().map(|&m| profiles_of(m)).collect();
        let profiles: Vec<String> = profiles.into_iter().collect();
        return Err(Unplaced::Never(format!(
            "the plan cannot run: in a parallel plan the {total} shards of suites that use sync wait for each \
             other, so all of them must run at once, but {}; start those runners with more slots \
             (`ensemble runner --slots {most}` or more), give profile {} more machines (and a higher count), \
             or place fewer coordinating entries on them",
            list.join(", "),
            profiles.join(" / "),
        )));
    }
    let waiting: Vec<String> = (0..machines.len())
        .filter(|&m| sync_load[m] > 0)
        .filter_map(|m| {
            let b = busy.get(m)?;
            let free = machines[m].slots.max(1).saturating_sub(b.shards);
            (sync_load[m] > free).then(|| {
                let runs: Vec<&str> = b.runs.iter().map(String::as_str).collect();
                format!(
                    "{} needs {} free slot(s) and has {free} of {} ({} busy with {})",
                    machines[m].name,
                    sync_load[m],
                    machines[m].slots.max(1),
                    b.shards,
                    if runs.is_empty() { "other runs".to_string() } else { runs.join(", ") }
                )
            })
        })
        .collect();
    if waiting.is_empty() {
        Ok(())
    } else {
        Err(Unplaced::Busy(format!("slots busy with other runs: {}", waiting.join("; "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ensemble_protocol::wire::Facts;

    fn machine(name: &str, os: &str) -> MachineInfo {
        MachineInfo {
            name: name.into(),
            labels: [("os".to_string(), os.to_string())].into(),
            slots: 1,
            facts: Facts::default(),
            allow_exec: Vec::new(),
        }
    }

    const PLAN: &str = r#"
name = "p"
[[profiles]]
name = "servers"
labels = { os = "linux" }
[[profiles]]
name = "clients"
labels = { os = "windows" }
count = 2
[[entries]]
suite = "server.wasm"
profile = "servers"
[[entries]]
suite = "client.wasm"
profile = "clients"
"#;

    #[test]
    fn a_machine_precompiles_the_suites_of_the_entries_it_could_be_given() {
        let (a, b) = ("a".repeat(64), "b".repeat(64));
        let toml = format!(
            "name = \"p\"\ntype = \"cross-platform\"\n\
             [[profiles]]\nname = \"servers\"\nlabels = {{ os = \"linux\" }}\n\
             [[profiles]]\nname = \"clients\"\nlabels = {{ os = \"windows\" }}\n\
             [[entries]]\nsuite = \"sha256:{a}\"\nprofile = \"servers\"\n\
             [[entries]]\nsuite = \"sha256:{a}\"\nrole = \"again\"\nprofile = \"servers\"\n\
             [[entries]]\nsuite = \"sha256:{b}\"\n\
             [[entries]]\nsuite = \"client.wasm\"\nprofile = \"clients\"\n"
        );
        let plan = Plan::from_toml(&toml).unwrap();
        // An entry of its own profile, twice (named once), and an entry on
        // every profile; not a suite given by path, nor a profile it does
        // not match.
        assert_eq!(suites_for(&plan, &machine("l1", "linux")), [a.as_str(), b.as_str()]);
        assert_eq!(suites_for(&plan, &machine("w1", "windows")), [b.as_str()]);
        assert!(suites_for(&plan, &machine("m1", "macos")).is_empty());
    }

    #[test]
    fn distributed_entries_go_to_their_profiles() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let ms = [machine("l1", "linux"), machine("w1", "windows"), machine("w2", "windows")];
        let names = ["server".to_string(), "client".to_string()];
        let shards = place(&plan, &names, &[], &ms, &[]).unwrap();
        let got: Vec<_> = shards
            .iter()
            .map(|s| (s.shard.role.as_str(), s.shard.machine.as_str(), s.shard.instance))
            .collect();
        assert_eq!(got, [("server", "l1", 0), ("client", "w1", 0), ("client", "w2", 1)]);
        assert_eq!(shards[2].instance_count, 2);
    }

    #[test]
    fn unsatisfiable_plans_explain_themselves() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let ms = [machine("l1", "linux"), machine("w1", "windows")];
        let err = place(&plan, &["s".into(), "c".into()], &[], &ms, &[]).unwrap_err();
        assert_eq!(
            err.message(),
            "the plan cannot be placed: profile \"clients\" needs 2 machine(s) with os=windows but 1 match; \
             machines online: l1 (os=linux); w1 (os=windows)"
        );
    }

    #[test]
    fn cross_platform_runs_every_entry_on_every_profile() {
        let text = PLAN
            .replace("name = \"p\"", "name = \"p\"\ntype = \"cross-platform\"")
            .replace("profile = \"clients\"\n", "");
        let plan = Plan::from_toml(&text.replace("profile = \"servers\"\n", "")).unwrap();
        let ms = [machine("l1", "linux"), machine("w1", "windows"), machine("w2", "windows")];
        let shards = place(&plan, &["s".into(), "c".into()], &[], &ms, &[]).unwrap();
        assert_eq!(shards.len(), 6);
        assert!(shards.iter().filter(|s| s.entry == 0).all(|s| s.instance_count == 3));
    }

    /// 25 roles of a suite that uses sync on a profile of 4 machines: 100
    /// parties that must all run at once.
    fn parties(roles: usize) -> (Plan, Vec<String>, Vec<bool>) {
        let mut text =
            "name = \"parties\"\n[[profiles]]\nname = \"peers\"\nlabels = { os = \"linux\" }\ncount = 4\n"
                .to_string();
        for r in 0..roles {
            text += &format!("[[entries]]\nsuite = \"p.wasm\"\nrole = \"r{r}\"\nprofile = \"peers\"\n");
        }
        (Plan::from_toml(&text).unwrap(), vec!["p".to_string(); roles], vec![true; roles])
    }

    fn with_slots(name: &str, slots: u32) -> MachineInfo {
        MachineInfo { slots, ..machine(name, "linux") }
    }

    #[test]
    fn coordinating_shards_need_a_slot_each_at_once() {
        let (plan, names, sync) = parties(25);
        let small: Vec<MachineInfo> = ["a", "b", "c", "d"].iter().map(|n| with_slots(n, 2)).collect();
        let Err(Unplaced::Never(why)) = place(&plan, &names, &sync, &small, &[]) else {
            panic!("100 parties on 8 slots must be refused")
        };
        for part in
            ["100 shards", "a (profile peers) has 2 slot(s) for 25 of them", "--slots 25", "profile peers"]
        {
            assert!(why.contains(part), "{part:?} missing from: {why}");
        }
        let big: Vec<MachineInfo> = ["a", "b", "c", "d"].iter().map(|n| with_slots(n, 25)).collect();
        let shards = place(&plan, &names, &sync, &big, &[]).unwrap();
        assert_eq!(shards.len(), 100);
        assert!(shards.iter().all(|s| s.coordinates));

        // The same plan without sync queues instead: placed as before.
        let shards = place(&plan, &names, &[], &small, &[]).unwrap();
        assert_eq!(shards.len(), 100);
        // Sequential plans run one entry at a time: each needs 1 slot.
        let mut seq = plan.clone();
        seq.settings.execution = Execution::Sequential;
        assert!(place(&seq, &names, &sync, &small, &[]).unwrap().iter().all(|s| !s.coordinates));
    }

    #[test]
    fn busy_slots_hold_a_run_back_and_free_machines_come_first() {
        let (plan, names, sync) = parties(2);
        let mut plan = plan;
        plan.profiles[0].count = 1;
        let ms = [with_slots("a", 2), with_slots("b", 2)];
        let busy_a = Busy { shards: 1, runs: ["run-1".to_string()].into() };
        // a is half busy: b, free, is chosen.
        let shards = place(&plan, &names, &sync, &ms, std::slice::from_ref(&busy_a)).unwrap();
        assert!(shards.iter().all(|s| s.shard.machine == "b"));
        // Both half busy: it waits, and says for what.
        let both = [busy_a.clone(), Busy { shards: 2, runs: ["run-2".to_string()].into() }];
        let Err(Unplaced::Busy(why)) = place(&plan, &names, &sync, &ms, &both) else { panic!("must wait") };
        assert_eq!(
            why,
            "slots busy with other runs: a needs 2 free slot(s) and has 1 of 2 (1 busy with run-1)"
        );
        // Without sync nothing waits.
        assert!(place(&plan, &names, &[], &ms, &both).is_ok());
    }
}
