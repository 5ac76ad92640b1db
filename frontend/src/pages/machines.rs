//! Machines, live: state, labels, facts, clock offset and what each runs;
//! draining one (and undraining it); and how to add one.

use ensemble_protocol::api::MachineState;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::format::{bytes, offset_us};
use crate::hooks::{failure_text, use_session};
use crate::routes::Route;

#[component]
pub fn MachinesPage() -> Html {
    let session = use_session();
    let origin = web_sys::window().and_then(|w| w.location().origin().ok()).unwrap_or_default();
    // Machines hold the join token, not the API token this page has.
    let join = format!("ensemble runner --join {origin} --token JOIN_TOKEN --name NAME --label tier=client");
    let banner = use_state(|| None::<(bool, String)>);
    let mut machines = session.machines.clone();
    machines.sort_by(|a, b| a.info.name.cmp(&b.info.name));
    let rows = machines.iter().map(|m| {
        let state = match m.state {
            MachineState::Online => "online",
            MachineState::Busy => "busy",
            MachineState::Draining => "draining",
            MachineState::Disconnected => "disconnected",
            MachineState::Offline => "offline",
            MachineState::Drained => "drained",
        };
        let drain = {
            let (session, banner, name) = (session.clone(), banner.clone(), m.info.name.clone());
            Callback::from(move |_| {
                let sure = crate::dom::confirm(&format!(
                    "Drain {name:?}? It finishes its shards, takes no new ones, then its runner stops."
                ));
                if !sure {
                    return;
                }
                let (session, banner, name) = (session.clone(), banner.clone(), name.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    banner.set(Some(match session.api.drain_machine(&name).await {
                        Ok(d) => (true, format!("Draining {:?}: {} shard(s) to finish", d.draining, d.running)),
                        Err(e) => (false, failure_text(&session, e)),
                    }));
                });
            })
        };
        let undrain = {
            let (session, banner, name) = (session.clone(), banner.clone(), m.info.name.clone());
            Callback::from(move |_| {
                let (session, banner, name) = (session.clone(), banner.clone(), name.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    banner.set(Some(match session.api.undrain_machine(&name).await {
                        Ok(d) => (true, format!("{:?} takes shards again", d.undrained)),
                        Err(e) => (false, failure_text(&session, e)),
                    }));
                });
            })
        };
        let can_drain = !m.local && matches!(m.state, MachineState::Online | MachineState::Busy);
        let can_undrain = matches!(m.state, MachineState::Draining | MachineState::Drained);
        let f = &m.info.facts;
        html! {
            <tr key={m.info.name.clone()} data-machine={m.info.name.clone()}>
                <th scope="row">{m.info.name.clone()}</th>
                <td data-label="State"><span class={classes!("state", state)}>{state}</span></td>
                <td data-label="Labels">{ for m.info.labels.iter().map(|(k, v)| html! { <span class="chip">{format!("{k}={v}")}</span> }) }</td>
                <td data-label="Facts">{format!("{}/{} · {} CPUs · {}", f.os, f.arch, f.cpus, bytes(f.memory_bytes))}<br />
                    <small class="muted">{format!("ensemble {} · wasmtime {} · {} slot{}", f.ensemble_version, f.wasmtime_version, m.info.slots, if m.info.slots == 1 { "" } else { "s" })}</small></td>
                <td class="num" data-label="Clock offset">{offset_us(m.clock_offset_us, m.clock_uncertainty_us)}</td>
                <td data-label="Running">
                    if m.running.is_empty() { <span class="muted">{"idle"}</span> }
                    { for m.running.iter().map(|r| {
                        let s = &r.shard;
                        html! {
                            <div class="running-shard">
                                {format!("{} ({}) · shard {} · instance {} · ", s.role, s.suite, s.shard, s.instance)}
                                <Link<Route> to={Route::Run { id: r.run.clone() }}>{format!("run {}", r.run)}</Link<Route>>
                            </div>
                        }
                    }) }
                </td>
                <td>
                    if can_drain {
                        <button type="button" class="drain" onclick={drain}
                            title="Finish its shards, take no new ones, then stop its runner">{"Drain"}</button>
                    }
                    if can_undrain {
                        <button type="button" class="undrain" onclick={undrain}
                            title="Give it shards again (a runner that already stopped, at its next start)">{"Undrain"}</button>
                    }
                </td>
            </tr>
        }
    });
    html! {
        <section class="page">
            <div class="page-head"><h1>{"Machines"}</h1></div>
            if let Some((ok, text)) = &*banner {
                <p class={classes!("banner", if *ok { "ok" } else { "error" })} role="status" id="machines-banner">{text.clone()}</p>
            }
            if !session.machines_loaded {
                <p class="muted">{"Loading…"}</p>
            } else if machines.is_empty() {
                <p class="empty">{"No machines have joined yet."}</p>
            } else {
                <table class="list" id="machines">
                    <thead><tr><th scope="col">{"Name"}</th><th scope="col">{"State"}</th><th scope="col">{"Labels"}</th><th scope="col">{"Facts"}</th><th scope="col">{"Clock offset"}</th><th scope="col">{"Running"}</th><th scope="col"><span class="visually-hidden">{"Actions"}</span></th></tr></thead>
                    <tbody>{ for rows }</tbody>
                </table>
            }
            <section class="hint-box" aria-labelledby="join-title">
                <h2 id="join-title">{"Add a machine"}</h2>
                <p>{"On the machine, run (with your own name and labels; plans pick machines by labels):"}</p>
                <pre id="join-command"><code>{join}</code></pre>
                <p class="muted">{"JOIN_TOKEN is the server's join token (ensemble serve --join-token, or the file join-token in its data directory): it lets a machine join and nothing else."}</p>
                <p class="muted">{"Runners dial out to this server, so they need no open port. Then link a profile to them in a "}<Link<Route> to={Route::Plans}>{"plan"}</Link<Route>>{"."}</p>
            </section>
        </section>
    }
}
