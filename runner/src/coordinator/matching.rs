//! Plan → shards: which suite instance runs on which machine.
//!
//! A profile selects machines by labels (all must match) or by name, and takes
//! `count` of them. A distributed plan places each entry on its profile's
//! machines; a cross-platform plan places every entry on every profile (or on
//! the entry's own profile when it names one). A plan that cannot be placed is
//! refused before anything runs, with an explanation naming the profile, its
//! labels and the machines online with theirs.

use std::collections::BTreeMap;

use ensemble_protocol::event::ShardRef;
use ensemble_protocol::plan::{Plan, PlanType, Profile};
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
}

/// Why a plan cannot be placed on the machines at hand.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct Unsatisfiable(pub String);

/// Picks `count` machines for each profile, spreading load: among matching
/// machines, those given the fewest shards so far come first.
pub fn place(
    plan: &Plan,
    suite_names: &[String],
    machines: &[MachineInfo],
) -> Result<Vec<ShardPlan>, Unsatisfiable> {
    let mut load = vec![0usize; machines.len()];
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
        candidates.sort_by_key(|&i| (load[i], i));
        candidates.truncate(profile.count as usize);
        for &i in &candidates {
            load[i] += 1;
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
        return Err(Unsatisfiable(format!("the plan cannot be placed: {}; {online}", problems.join("; "))));
    }
    let mut shards = Vec::new();
    for (entry_index, entry) in plan.entries.iter().enumerate() {
        let profiles: Vec<&Profile> = match (&entry.profile, plan.kind) {
            (Some(p), _) => plan.profile(p).into_iter().collect(),
            (None, PlanType::CrossPlatform) => plan.profiles.iter().collect(),
            (None, PlanType::Distributed) => vec![],
        };
        let targets: Vec<(&Profile, usize)> =
            profiles.iter().flat_map(|p| chosen[p.name.as_str()].iter().map(move |&m| (*p, m))).collect();
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
            });
        }
    }
    Ok(shards)
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
    fn distributed_entries_go_to_their_profiles() {
        let plan = Plan::from_toml(PLAN).unwrap();
        let ms = [machine("l1", "linux"), machine("w1", "windows"), machine("w2", "windows")];
        let names = ["server".to_string(), "client".to_string()];
        let shards = place(&plan, &names, &ms).unwrap();
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
        let err = place(&plan, &["s".into(), "c".into()], &ms).unwrap_err();
        assert_eq!(
            err.0,
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
        let shards = place(&plan, &["s".into(), "c".into()], &ms).unwrap();
        assert_eq!(shards.len(), 6);
        assert!(shards.iter().filter(|s| s.entry == 0).all(|s| s.instance_count == 3));
    }
}
