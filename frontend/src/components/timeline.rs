//! One lane per machine on the run's shared timeline. Event times are the
//! coordinator's clock (each machine's own clock corrected by its measured
//! offset), so bars on different lanes line up.

use std::collections::BTreeMap;

use yew::prelude::*;

use crate::format::{duration_ms, plural};
use crate::state::RunView;

#[derive(Properties)]
pub struct Props {
    pub view: UseReducerHandle<RunView>,
    /// Bumped on every change of `view` (cheaper to compare than the view).
    pub version: u64,
    /// Clock offset text per machine.
    pub clocks: BTreeMap<String, String>,
    /// What is wrong with a machine now (its connection closed), per machine.
    #[prop_or_default]
    pub alerts: BTreeMap<String, String>,
    pub on_select: Callback<usize>,
    /// A bucket of many tests was chosen: its description and its tests.
    pub on_block: Callback<(String, Vec<usize>)>,
}

impl PartialEq for Props {
    fn eq(&self, o: &Self) -> bool {
        self.version == o.version
            && self.clocks == o.clocks
            && self.alerts == o.alerts
            && self.on_select == o.on_select
            && self.on_block == o.on_block
    }
}

#[component]
pub fn Timeline(props: &Props) -> Html {
    let view = &*props.view;
    let (t0, t1) = view.span();
    let total_ms = ((t1 - t0) / 1000) as u64;
    let ticks = (0..=4).map(|k| {
        let left = k as f64 * 25.0;
        html! { <span class="tick" style={format!("left:{left}%")}>{duration_ms(total_ms * k / 4)}</span> }
    });
    let frac = |t: i64| ((t - t0) as f64 / (t1 - t0) as f64 * 100.0).clamp(0.0, 100.0);
    let lanes = view.lanes.iter().map(|lane| {
        // One track per shard: parts that share a machine run side by side.
        let tracks = lane.shards.iter().map(|shard| {
            let bars = view.bars(&view.shard_rows(lane, shard.shard)).into_iter().map(|b| {
                let style = format!(
                    "left:min({:.3}%,calc(100% - 3px));width:max({:.3}%,3px)",
                    b.from * 100.0,
                    (b.to - b.from) * 100.0
                );
                match b.row {
                    Some(i) => {
                        let on_select = props.on_select.clone();
                        html! {
                            // Out of the tab order: the test table reaches every test by keyboard.
                            <button type="button" class={classes!("bar", b.class)} {style} title={b.title.clone()} tabindex="-1"
                                aria-label={b.title} onclick={Callback::from(move |_| on_select.emit(i))}></button>
                        }
                    }
                    None => {
                        // A bucket: it opens the table filtered to its tests.
                        let on_block = props.on_block.clone();
                        let at = |f: f64| duration_ms((total_ms as f64 * f) as u64);
                        let what = format!(
                            "{} on {}, {}–{}",
                            plural(b.rows.len(), "test"),
                            lane.machine,
                            at(b.from),
                            at(b.to)
                        );
                        let rows = b.rows;
                        html! {
                            <button type="button" class={classes!("bar", "bucket", b.class)} {style} tabindex="-1"
                                title={format!("{} (show them in the table)", b.title)} aria-label={what.clone()}
                                onclick={Callback::from(move |_| on_block.emit((what.clone(), rows.clone())))}></button>
                        }
                    }
                }
            });
            let marks = lane.marks.iter().filter_map(|&k| view.sync.get(k)).filter(|s| s.shard == shard.shard).map(|s| {
                html! {
                    <span class={classes!("mark", s.failed.then_some("failed"), s.fault.then_some("fault"))} style={format!("left:{:.3}%", frac(s.at_us))}
                        title={format!("{}: {}", s.role, s.text)} data-fault={s.fault.then(|| s.text.clone())}></span>
                }
            });
            // What the track's empty stretches were: before its first test
            // (waiting for its turn or a machine, fetching and compiling its
            // suite) and after its last.
            let times = view.shard_times.get(&shard.shard).copied();
            let ready = times.map_or(t1, |(r, _)| r);
            let before = (ready > t0).then(|| {
                let what = if times.is_some() {
                    format!("before its first test: placed, fetched and compiled its suite ({})", duration_ms(((ready - t0) / 1000) as u64))
                } else {
                    "not started yet: waiting for its turn or a machine, or fetching and compiling its suite".to_string()
                };
                html! { <span class="phase before" style={format!("left:0;width:{:.3}%", frac(ready))} title={what}></span> }
            });
            let after = times.and_then(|(_, done)| done).filter(|d| *d < t1).map(|d| {
                html! { <span class="phase after" style={format!("left:{:.3}%;width:{:.3}%", frac(d), 100.0 - frac(d))} title="finished"></span> }
            });
            let name = if shard.role == shard.suite { shard.role.clone() } else { format!("{} ({})", shard.role, shard.suite) };
            html! {
                <div class="track-row" data-role={shard.role.clone()}>
                    <span class="track-name" title={name.clone()}>
                        {name.clone()}
                        if view.started_us.is_some() && view.finished.is_none() {
                            <span class={classes!("shard-state", view.shard_state(shard.shard))} data-shard-state={view.shard_state(shard.shard)}>
                                {view.shard_state(shard.shard)}
                            </span>
                        }
                    </span>
                    <div class="track" role="group" aria-label={format!("{name} on {}", lane.machine)}>
                        { for before }
                        { for after }
                        { for bars }
                        { for marks }
                    </div>
                </div>
            }
        });
        html! {
            <div class="lane" data-machine={lane.machine.clone()}>
                <div class="lane-head">
                    <strong class="lane-machine">{lane.machine.clone()}</strong>
                    if let Some(c) = props.clocks.get(&lane.machine) {
                        <span class="lane-clock" title="clock offset to the coordinator">{format!("clock {c}")}</span>
                    }
                    <span class="lane-count">{plural(lane.rows.len(), "test")}</span>
                    if let Some(alert) = props.alerts.get(&lane.machine) {
                        <span class="lane-alert" role="status">{alert.clone()}</span>
                    }
                </div>
                { for tracks }
                { for lane.errors.iter().map(|e| html! { <p class="lane-error">{e.clone()}</p> }) }
            </div>
        }
    });
    html! {
        <section class="timeline" aria-labelledby="timeline-title">
            <h2 id="timeline-title">{"Timeline"}</h2>
            if view.lanes.is_empty() {
                <p class="muted">{"Waiting for the first events…"}</p>
            } else {
                <div class="axis-row"><span class="track-name"></span><div class="axis">{ for ticks }</div></div>
                { for lanes }
                <p class="legend">
                    <span class="key passed"></span>{"passed "}
                    <span class="key failed"></span>{"failed "}
                    <span class="key lost"></span>{"lost with its machine "}
                    <span class="key running"></span>{"running "}
                    <span class="key skipped"></span>{"skipped or cancelled "}
                    <span class="key mark-key"></span>{"sync or service event "}
                    <span class="key fault-key"></span>{"fault "}
                    <span class="key phase-key"></span>{"before the first test"}
                </p>
            }
        </section>
    }
}
