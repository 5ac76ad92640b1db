//! One lane per machine on the run's shared timeline. Event times are the
//! coordinator's clock (each machine's own clock corrected by its measured
//! offset), so bars on different lanes line up.

use std::collections::BTreeMap;

use yew::prelude::*;

use crate::format::duration_ms;
use crate::state::RunView;

#[derive(Properties)]
pub struct Props {
    pub view: UseReducerHandle<RunView>,
    /// Bumped on every change of `view` (cheaper to compare than the view).
    pub version: u64,
    /// Clock offset text per machine.
    pub clocks: BTreeMap<String, String>,
    pub on_select: Callback<usize>,
}

impl PartialEq for Props {
    fn eq(&self, o: &Self) -> bool {
        self.version == o.version && self.clocks == o.clocks && self.on_select == o.on_select
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
    let lanes = view.lanes.iter().map(|lane| {
        let bars = view.bars(lane).into_iter().map(|b| {
            let style = format!("left:{:.3}%;width:max({:.3}%,3px)", b.from * 100.0, (b.to - b.from) * 100.0);
            match b.row {
                Some(i) => {
                    let on_select = props.on_select.clone();
                    html! {
                        <button type="button" class={classes!("bar", b.class)} {style} title={b.title.clone()}
                            aria-label={b.title} onclick={Callback::from(move |_| on_select.emit(i))}></button>
                    }
                }
                None => html! { <span class={classes!("bar", b.class)} {style} title={b.title}></span> },
            }
        });
        let marks = lane.marks.iter().filter_map(|&k| view.sync.get(k)).map(|s| {
            let left = ((s.at_us - t0) as f64 / (t1 - t0) as f64 * 100.0).clamp(0.0, 100.0);
            html! {
                <span class={classes!("mark", s.failed.then_some("failed"))} style={format!("left:{left:.3}%")}
                    title={format!("{}: {}", s.role, s.text)}></span>
            }
        });
        let roles: Vec<String> = lane
            .shards
            .iter()
            .map(|s| if s.role == s.suite { s.role.clone() } else { format!("{} ({})", s.role, s.suite) })
            .collect();
        html! {
            <div class="lane" data-machine={lane.machine.clone()}>
                <div class="lane-head">
                    <strong class="lane-machine">{lane.machine.clone()}</strong>
                    <span class="lane-roles">{roles.join(", ")}</span>
                    if let Some(c) = props.clocks.get(&lane.machine) {
                        <span class="lane-clock" title="clock offset to the coordinator">{format!("clock {c}")}</span>
                    }
                    <span class="lane-count">{format!("{} tests", lane.rows.len())}</span>
                </div>
                <div class="track" role="group" aria-label={format!("tests on {}", lane.machine)}>
                    { for bars }
                    { for marks }
                </div>
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
                <div class="axis">{ for ticks }</div>
                { for lanes }
                <p class="legend">
                    <span class="key passed"></span>{"passed "}
                    <span class="key failed"></span>{"failed "}
                    <span class="key running"></span>{"running "}
                    <span class="key skipped"></span>{"skipped "}
                    <span class="key mark-key"></span>{"sync event"}
                </p>
            }
        </section>
    }
}
