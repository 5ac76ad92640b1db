//! The plans: list, create, open, run, duplicate, export and import TOML, delete.

use ensemble_protocol::api::StoredPlan;
use yew::prelude::*;
use yew_router::prelude::*;

use crate::components::download::Download;
use crate::dom::{file_text, picked_files};
use crate::format::local_time;
use crate::hooks::{failure_text, use_session};
use crate::routes::Route;
use crate::state::editor::copy_name;

#[component]
pub fn PlansPage() -> Html {
    let session = use_session();
    let navigator = use_navigator().expect("inside the router");
    let plans = use_state(|| None::<Vec<StoredPlan>>);
    let banner = use_state(|| None::<(bool, String)>);
    let reload = use_state(|| 0u32);

    use_effect_with(*reload, {
        let session = session.clone();
        let plans = plans.clone();
        let banner = banner.clone();
        move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                match session.api.plans().await {
                    Ok(mut p) => {
                        p.sort_by_key(|p| std::cmp::Reverse(p.updated_us));
                        plans.set(Some(p));
                    }
                    Err(e) => banner.set(Some((false, failure_text(&session, e)))),
                }
            });
        }
    });

    // Every action: call the API, say how it went, reload the list.
    let act = {
        let session = session.clone();
        let banner = banner.clone();
        let reload = reload.clone();
        move |work: std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<String, crate::services::ApiFailure>>>,
        >| {
            let session = session.clone();
            let banner = banner.clone();
            let reload = reload.clone();
            // A new action: the last one's message no longer stands.
            banner.set(None);
            wasm_bindgen_futures::spawn_local(async move {
                match work.await {
                    Ok(msg) => banner.set(Some((true, msg))),
                    Err(e) => banner.set(Some((false, failure_text(&session, e)))),
                }
                reload.set(*reload + 1);
            });
        }
    };

    let on_import = {
        let session = session.clone();
        let act = act.clone();
        Callback::from(move |e: Event| {
            for file in picked_files(&e) {
                let api = session.api.clone();
                act(Box::pin(async move {
                    let name = file.name();
                    let text = file_text(&file).await.map_err(crate::services::ApiFailure::Network)?;
                    let stored = api.import_plan(text).await.map_err(|e| match e {
                        crate::services::ApiFailure::Server { status, mut error } => {
                            error.error.message = format!("{name}: {}", error.message());
                            crate::services::ApiFailure::Server { status, error }
                        }
                        other => other,
                    })?;
                    // Suites named by path run from `ensemble run` only:
                    // say so now, not when the plan fails to run.
                    let paths: Vec<String> = stored
                        .plan
                        .entries
                        .iter()
                        .filter(|e| ensemble_protocol::api::suite_sha(&e.suite).is_none())
                        .map(|e| e.suite.clone())
                        .collect();
                    if paths.is_empty() {
                        Ok(format!("Imported {name} as plan {:?}", stored.plan.name))
                    } else {
                        Ok(format!(
                            "Imported {name} as plan {:?}, but it names {} by path ({}): this server cannot run or schedule it until each names a suite it has. Open the plan to pick them from the catalog or upload them.",
                            stored.plan.name,
                            crate::format::plural(paths.len(), "suite"),
                            paths.join(", ")
                        ))
                    }
                }));
            }
        })
    };

    let rows = plans.as_ref().map(|list| {
        let names: Vec<String> = list.iter().map(|p| p.plan.name.clone()).collect();
        list.iter()
            .map(|p| {
                let id = p.id.clone();
                let run = {
                    let api = session.api.clone();
                    let navigator = navigator.clone();
                    let banner = banner.clone();
                    let session = session.clone();
                    let id = id.clone();
                    Callback::from(move |_| {
                        let api = api.clone();
                        let navigator = navigator.clone();
                        let banner = banner.clone();
                        let session = session.clone();
                        let id = id.clone();
                        banner.set(None);
                        wasm_bindgen_futures::spawn_local(async move {
                            match api.start_run(&id).await {
                                Ok(run) => navigator.push(&Route::Run { id: run }),
                                Err(e) => banner.set(Some((false, failure_text(&session, e)))),
                            }
                        });
                    })
                };
                let duplicate = {
                    let api = session.api.clone();
                    let act = act.clone();
                    let mut copy = p.plan.clone();
                    let existing: Vec<&str> = names.iter().map(String::as_str).collect();
                    copy.name = copy_name(&copy.name, &existing);
                    Callback::from(move |_| {
                        let api = api.clone();
                        let copy = copy.clone();
                        act(Box::pin(async move {
                            let stored = api.save_plan(None, &copy).await?;
                            Ok(format!("Created {:?}", stored.plan.name))
                        }));
                    })
                };
                let delete = {
                    let api = session.api.clone();
                    let act = act.clone();
                    let id = id.clone();
                    let name = p.plan.name.clone();
                    Callback::from(move |_| {
                        let sure = crate::dom::confirm(&format!("Delete the plan {name:?}?"));
                        if !sure {
                            return;
                        }
                        let api = api.clone();
                        let id = id.clone();
                        let name = name.clone();
                        act(Box::pin(async move {
                            api.delete_plan(&id).await?;
                            Ok(format!("Deleted {name:?}"))
                        }));
                    })
                };
                let export = ensemble_protocol::api::routes::plan_toml(&id);
                let file = format!("{}.toml", p.plan.name.replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-"));
                html! {
                    <tr key={id.clone()} data-plan={p.plan.name.clone()}>
                        <td>
                            <Link<Route> to={Route::Plan { id: id.clone() }}>{p.plan.name.clone()}</Link<Route>>
                            if !p.plan.description.is_empty() {
                                <small class="plan-description muted">{p.plan.description.clone()}</small>
                            }
                        </td>
                        <td data-label="Type">{p.plan.kind.to_string()}</td>
                        <td class="num" data-label="Suites">{p.plan.entries.len()}</td>
                        <td class="num" data-label="Profiles">{p.plan.profiles.len()}</td>
                        <td data-label="Updated">{local_time(p.updated_us)}</td>
                        <td class="actions">
                            <button type="button" class="primary small" onclick={run} aria-label={format!("Run {}", p.plan.name)}>{"Run"}</button>
                            <button type="button" class="small" onclick={duplicate} aria-label={format!("Duplicate {}", p.plan.name)}>{"Duplicate"}</button>
                            <Download class="button small" path={export} name={file} label={format!("Export {} as TOML", p.plan.name)}>{"Export TOML"}</Download>
                            <button type="button" class="small danger" onclick={delete} aria-label={format!("Delete {}", p.plan.name)}>{"Delete"}</button>
                        </td>
                    </tr>
                }
            })
            .collect::<Html>()
    });

    html! {
        <section class="page">
            <div class="page-head">
                <h1>{"Test plans"}</h1>
                <div class="actions">
                    <Link<Route> to={Route::NewPlan} classes="button primary" >{"New plan"}</Link<Route>>
                    // The input first: its focus ring shows on the label after it.
                    <input id="import-toml" class="visually-hidden" type="file" accept=".toml" multiple=true onchange={on_import} />
                    <label class="button" for="import-toml">{"Import TOML…"}</label>
                </div>
            </div>
            if let Some((ok, msg)) = &*banner {
                <p class={classes!("banner", if *ok { "ok" } else { "error" })} role="status">{msg.clone()}</p>
            }
            {match rows {
                None => html! { <p class="muted">{"Loading…"}</p> },
                Some(rows) if plans.as_ref().is_some_and(|p| p.is_empty()) => {
                    let _ = rows;
                    html! { <p class="empty">{"No plans yet. Create one with "}<strong>{"New plan"}</strong>{", or import a TOML plan."}</p> }
                }
                Some(rows) => html! {
                    <table class="list" id="plans">
                        <thead><tr><th scope="col">{"Name"}</th><th scope="col">{"Type"}</th><th scope="col">{"Suites"}</th><th scope="col">{"Profiles"}</th><th scope="col">{"Updated"}</th><th scope="col"><span class="visually-hidden">{"Actions"}</span></th></tr></thead>
                        <tbody>{rows}</tbody>
                    </table>
                },
            }}
        </section>
    }
}
