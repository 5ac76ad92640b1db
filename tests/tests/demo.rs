//! The README's promise: `ensemble run suites/plans/demo.toml --junit … --json …`
//! passes on a fresh clone, with the kv-server and kv-client roles running on
//! two machines and coordinating through sync.

use ensemble_protocol::event::SyncOp;
use ensemble_protocol::{Event, EventKind, Outcome};
use ensemble_tests::ensemble;

#[test]
fn the_demo_plan_passes_with_both_roles_coordinating() {
    let dir = tempfile::tempdir().unwrap();
    let (junit, json) = (dir.path().join("out.xml"), dir.path().join("out.jsonl"));
    let out = ensemble(
        &[
            "run",
            "suites/plans/demo.toml",
            "--junit",
            junit.to_str().unwrap(),
            "--json",
            json.to_str().unwrap(),
        ],
        dir.path(),
    );
    let shown = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("PASSED: 6 test(s)"), "{shown}");

    let events: Vec<Event> =
        std::fs::read_to_string(&json).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mut machines = std::collections::BTreeMap::new();
    for e in &events {
        if let EventKind::TestFinished { shard, outcome, .. } = &e.kind {
            assert_eq!(*outcome, Outcome::Passed, "{e:?}");
            machines.insert(shard.role.clone(), shard.machine.clone());
        }
    }
    assert_eq!(machines.len(), 2, "both roles ran: {machines:?}");
    assert_ne!(machines["server"], machines["client"], "the roles ran on different machines");
    let ops: Vec<&SyncOp> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::Sync { op, .. } => Some(op),
            _ => None,
        })
        .collect();
    assert!(
        ops.iter().any(|op| matches!(op, SyncOp::BarrierReleased { state, .. } if state == "server-ready")),
        "{ops:?}"
    );
    assert!(
        ops.iter().any(|op| matches!(op, SyncOp::Publish { topic, .. } if topic == "kv/verdict")),
        "{ops:?}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(xml.contains("tests=\"6\" failures=\"0\" errors=\"0\""), "{xml}");
    assert_eq!(xml.matches("<testsuite ").count(), 2, "a testsuite per shard: {xml}");
}
