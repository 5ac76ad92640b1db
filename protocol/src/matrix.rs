//! A run's outcomes across profiles: a row per test (its role and name), a
//! column per machine profile (with the os/arch of the machine that ran it),
//! for the roles that ran on more than one profile — a cross-platform plan's
//! suites. The tests whose outcome differs between profiles come first: they
//! are what such a run is for. The browser app and the CLI's summary both
//! build it here, from `run-started`'s shards and the tests' outcomes.

use std::collections::{BTreeMap, HashMap};

use crate::event::ShardInfo;
use crate::outcome::Outcome;

/// A profile's column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub profile: String,
    /// The OS and CPU kind of the machines that ran the profile's shards
    /// (`linux/aarch64`); several when its machines differ.
    pub platform: String,
}

/// A test's outcomes, one cell per column (`None`: it did not run there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub role: String,
    pub test: String,
    pub cells: Vec<Option<Outcome>>,
    /// Its outcomes are not the same on every profile its role ran on, or
    /// it did not run on one whose shards have finished. A cancelled test,
    /// or one not finished yet, decides nothing.
    pub differs: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Matrix {
    pub columns: Vec<Column>,
    /// Tests that differ first; otherwise in the order they first finished.
    pub rows: Vec<Row>,
}

/// Whether some role of `shards` runs on more than one profile (a
/// cross-platform plan's suites): then a run has a matrix to show.
pub fn compares_profiles(shards: &[ShardInfo]) -> bool {
    let mut first: HashMap<&str, &str> = HashMap::new();
    shards.iter().any(|s| *first.entry(&s.shard.role).or_insert(&s.profile) != s.profile)
}

impl Matrix {
    /// The matrix of a run whose shards are `shards` and whose tests ended
    /// as `results` (shard number, test name, outcome; a later result of the
    /// same test replaces an earlier one); `finished` says whether a shard
    /// has ended (until then a test missing there may still come). Empty
    /// (no columns) when no role ran on two or more profiles: there is
    /// nothing to compare.
    pub fn build<'a>(
        shards: &[ShardInfo],
        results: impl IntoIterator<Item = (u32, &'a str, Outcome)>,
        finished: impl Fn(u32) -> bool,
    ) -> Matrix {
        // Which profiles each role ran on, in the order of the shards.
        let mut profiles_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for s in shards {
            let list = profiles_of.entry(s.shard.role.as_str()).or_default();
            if !list.contains(&s.profile.as_str()) {
                list.push(&s.profile);
            }
        }
        let compared = |role: &str| profiles_of.get(role).is_some_and(|p| p.len() > 1);
        let mut columns: Vec<Column> = Vec::new();
        let mut column_of: HashMap<&str, usize> = HashMap::new();
        for s in shards.iter().filter(|s| compared(&s.shard.role)) {
            // Runs stored before machines said their os/arch have neither.
            let platform = if s.os.is_empty() && s.arch.is_empty() {
                "unknown".to_string()
            } else {
                format!("{}/{}", s.os, s.arch)
            };
            match column_of.get(s.profile.as_str()) {
                Some(&c) => {
                    let col = &mut columns[c];
                    if !col.platform.split(", ").any(|p| p == platform) {
                        col.platform = format!("{}, {platform}", col.platform);
                    }
                }
                None => {
                    column_of.insert(&s.profile, columns.len());
                    columns.push(Column { profile: s.profile.clone(), platform });
                }
            }
        }
        if columns.is_empty() {
            return Matrix::default();
        }
        let shard_of: HashMap<u32, &ShardInfo> = shards.iter().map(|s| (s.shard.shard, s)).collect();
        // Instances of a role on one profile share a cell: it shows the
        // worst of their outcomes.
        let mut cells: HashMap<(usize, usize), Outcome> = HashMap::new();
        let mut latest: BTreeMap<(u32, &str), Outcome> = BTreeMap::new();
        let mut order: Vec<(&str, &'a str)> = Vec::new();
        let mut index: HashMap<(&str, &'a str), usize> = HashMap::new();
        for (shard, test, outcome) in results {
            let Some(info) = shard_of.get(&shard).filter(|s| compared(&s.shard.role)) else { continue };
            latest.insert((shard, test), outcome);
            let role = info.shard.role.as_str();
            if let std::collections::hash_map::Entry::Vacant(slot) = index.entry((role, test)) {
                slot.insert(order.len());
                order.push((role, test));
            }
        }
        for ((shard, test), outcome) in latest {
            let info = shard_of[&shard];
            let c = column_of[info.profile.as_str()];
            let slot = cells.entry((index[&(info.shard.role.as_str(), test)], c)).or_insert(outcome);
            if rank(outcome) > rank(*slot) {
                *slot = outcome;
            }
        }
        // Whether every shard of a role on a profile has ended.
        let ended = |role: &str, profile: &str| {
            shards
                .iter()
                .filter(|s| s.shard.role == role && s.profile == profile)
                .all(|s| finished(s.shard.shard))
        };
        let mut rows: Vec<Row> = order
            .iter()
            .enumerate()
            .map(|(i, (role, test))| {
                let cells: Vec<Option<Outcome>> =
                    (0..columns.len()).map(|c| cells.get(&(i, c)).copied()).collect();
                let mut seen: Option<Outcome> = None;
                let mut differs = false;
                for p in &profiles_of[role] {
                    match cells[column_of[p]] {
                        Some(Outcome::Cancelled) => {}
                        Some(o) => {
                            differs |= seen.is_some_and(|s| s != o);
                            seen = Some(o);
                        }
                        None => differs |= ended(role, p),
                    }
                }
                Row { role: role.to_string(), test: test.to_string(), cells, differs }
            })
            .collect();
        rows.sort_by_key(|r| !r.differs);
        Matrix { columns, rows }
    }

    /// How many tests differ between profiles.
    pub fn differing(&self) -> usize {
        self.rows.iter().filter(|r| r.differs).count()
    }
}

/// Which outcome a cell of several instances shows: the worst (each its
/// own rank, so the cell does not depend on the order results came in).
fn rank(o: Outcome) -> u8 {
    match o {
        Outcome::Skipped => 0,
        Outcome::Cancelled => 1,
        Outcome::Passed => 2,
        Outcome::Flaky => 3,
        Outcome::Lost => 4,
        Outcome::Crashed => 5,
        Outcome::TimedOut => 6,
        Outcome::Failed => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::ShardRef;

    fn shard(n: u32, role: &str, profile: &str, os: &str, arch: &str) -> ShardInfo {
        ShardInfo {
            shard: ShardRef {
                shard: n,
                machine: format!("m{n}"),
                role: role.into(),
                suite: role.into(),
                instance: 0,
            },
            profile: profile.into(),
            suite_sha256: String::new(),
            entry: 0,
            instance_count: 1,
            split: false,
            os: os.into(),
            arch: arch.into(),
            service: None,
        }
    }

    #[test]
    fn differences_come_first_and_single_profile_roles_are_left_out() {
        let shards = [
            shard(0, "lib", "x86", "linux", "x86_64"),
            shard(1, "lib", "arm", "linux", "aarch64"),
            shard(2, "lib", "win", "windows", "x86_64"),
            // A role on one profile only: nothing to compare.
            shard(3, "solo", "x86", "linux", "x86_64"),
        ];
        let results = [
            (0, "same", Outcome::Passed),
            (1, "same", Outcome::Passed),
            (2, "same", Outcome::Passed),
            (0, "endian", Outcome::Passed),
            (1, "endian", Outcome::Failed),
            (2, "endian", Outcome::Passed),
            (0, "only_here", Outcome::Passed),
            (3, "alone", Outcome::Failed),
            // A retry's result replaces the first.
            (2, "same", Outcome::Flaky),
            (2, "same", Outcome::Passed),
        ];
        let m = Matrix::build(&shards, results, |_| true);
        let names: Vec<&str> = m.columns.iter().map(|c| c.profile.as_str()).collect();
        assert_eq!(names, ["x86", "arm", "win"]);
        assert_eq!(m.columns[1].platform, "linux/aarch64");
        let rows: Vec<(&str, bool)> = m.rows.iter().map(|r| (r.test.as_str(), r.differs)).collect();
        assert_eq!(rows, [("endian", true), ("only_here", true), ("same", false)]);
        assert_eq!(m.rows[0].cells, [Some(Outcome::Passed), Some(Outcome::Failed), Some(Outcome::Passed)]);
        assert_eq!(m.rows[1].cells, [Some(Outcome::Passed), None, None], "not run there is a difference");
        assert_eq!(m.differing(), 2);
    }

    #[test]
    fn a_run_on_one_profile_has_no_matrix() {
        let shards = [shard(0, "a", "p", "linux", "x86_64"), shard(1, "b", "q", "linux", "x86_64")];
        let m = Matrix::build(&shards, [(0, "t", Outcome::Passed), (1, "t", Outcome::Failed)], |_| true);
        assert!(m.columns.is_empty() && m.rows.is_empty(), "{m:?}");
    }

    /// Two instances of `lib` on profile x86 (shards 0 and 2), one on arm (1).
    fn two_instances_and_one() -> [ShardInfo; 3] {
        let mut second = shard(2, "lib", "x86", "linux", "x86_64");
        second.shard.instance = 1;
        [shard(0, "lib", "x86", "linux", "x86_64"), second, shard(1, "lib", "arm", "linux", "aarch64")]
    }

    #[test]
    fn instances_on_one_profile_show_their_worst() {
        let shards = two_instances_and_one();
        let m = Matrix::build(
            &shards,
            [(0, "t", Outcome::Passed), (2, "t", Outcome::TimedOut), (1, "t", Outcome::Passed)],
            |_| true,
        );
        assert_eq!(m.rows[0].cells, [Some(Outcome::TimedOut), Some(Outcome::Passed)]);
        assert!(m.rows[0].differs);
    }

    #[test]
    fn unfinished_and_cancelled_tests_decide_nothing() {
        let shards = [shard(0, "lib", "x86", "linux", "x86_64"), shard(1, "lib", "arm", "", "")];
        let results =
            [(0, "done_here", Outcome::Passed), (0, "cut", Outcome::Passed), (1, "cut", Outcome::Cancelled)];
        // The arm shard still runs: a test not there yet is no difference.
        let live = Matrix::build(&shards, results, |s| s == 0);
        assert_eq!(live.differing(), 0, "{live:?}");
        assert_eq!(live.columns[1].platform, "unknown");
        // Once it ended without it, it is one; a cancelled one never is.
        let done = Matrix::build(&shards, results, |_| true);
        let differs: Vec<(&str, bool)> = done.rows.iter().map(|r| (r.test.as_str(), r.differs)).collect();
        assert_eq!(differs, [("done_here", true), ("cut", false)]);
    }

    #[test]
    fn a_cell_does_not_depend_on_the_order_results_came_in() {
        let shards = two_instances_and_one();
        let a = [(0, "t", Outcome::Failed), (2, "t", Outcome::TimedOut), (1, "t", Outcome::Passed)];
        let b = [(2, "t", Outcome::TimedOut), (0, "t", Outcome::Failed), (1, "t", Outcome::Passed)];
        assert_eq!(Matrix::build(&shards, a, |_| true), Matrix::build(&shards, b, |_| true));
    }
}
