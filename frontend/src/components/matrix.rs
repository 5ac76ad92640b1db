//! A cross-platform run's outcomes as a matrix: a row per test, a column per
//! profile (with the os/arch of its machines), the tests whose outcome
//! differs between profiles first. A cell opens that test on that profile.

use std::rc::Rc;

use ensemble_protocol::matrix::Matrix;
use yew::prelude::*;

use crate::state::run::Show;

/// Rows drawn at most (the differing ones come first).
const SHOWN: usize = 200;

#[derive(Properties, PartialEq)]
pub struct Props {
    pub matrix: Rc<Matrix>,
    /// A cell was picked: (role, test, profile).
    pub on_pick: Callback<(String, String, String)>,
    /// The tests the summary's chips pick: rows with such an outcome on
    /// some profile.
    #[prop_or(Show::All)]
    pub show: Show,
}

#[component]
pub fn MatrixView(props: &Props) -> Html {
    let m = &*props.matrix;
    let differing = m.differing();
    let summary = if differing == 0 {
        format!("All {} finished tests have the same outcome on every profile.", m.rows.len())
    } else {
        format!(
            "{differing} of {} finished tests differ between profiles; they are listed first.",
            m.rows.len()
        )
    };
    let picked: Vec<&ensemble_protocol::matrix::Row> = m
        .rows
        .iter()
        .filter(|r| props.show == Show::All || r.cells.iter().flatten().any(|o| props.show.keeps_outcome(*o)))
        .collect();
    let hidden = m.rows.len() - picked.len();
    let rows = picked.iter().take(SHOWN).map(|row| {
        let cells = m.columns.iter().zip(&row.cells).map(|(col, cell)| match cell {
            Some(o) => {
                let pick = {
                    let on_pick = props.on_pick.clone();
                    let key = (row.role.clone(), row.test.clone(), col.profile.clone());
                    Callback::from(move |_| on_pick.emit(key.clone()))
                };
                html! {
                    <td data-profile={col.profile.clone()} data-label={col.profile.clone()}>
                        <button type="button" class={classes!("status", o.as_str())} onclick={pick}
                            aria-label={format!("{} on {}: {}", row.test, col.profile, o.as_str())}>{o.as_str()}</button>
                    </td>
                }
            }
            None => html! { <td data-profile={col.profile.clone()} data-label={col.profile.clone()} class="muted" title="not run on this profile">{"—"}</td> },
        });
        html! {
            <tr class={classes!(row.differs.then_some("differs"))} data-test={row.test.clone()} data-role={row.role.clone()}>
                <th scope="row" title={format!("{} {}", row.role, row.test)}>
                    <span class="muted">{format!("{} ", row.role)}</span>{row.test.clone()}
                </th>
                { for cells }
            </tr>
        }
    });
    html! {
        <section class="matrix-panel" aria-labelledby="matrix-title" id="matrix-panel">
            <h2 id="matrix-title">{format!("Across {} profiles", m.columns.len())}</h2>
            <p id="matrix-summary" class={classes!((differing > 0).then_some("differs"))}>{summary}</p>
            <div class="matrix-scroll" tabindex="0" aria-label="outcomes across profiles">
                <table class="matrix" id="matrix">
                    <thead>
                        <tr>
                            <th scope="col">{"Test"}</th>
                            { for m.columns.iter().map(|c| html! {
                                <th scope="col" data-profile={c.profile.clone()}>{c.profile.clone()}<br /><small class="muted">{c.platform.clone()}</small></th>
                            }) }
                        </tr>
                    </thead>
                    <tbody>{ for rows }</tbody>
                </table>
            </div>
            if hidden > 0 {
                <p class="muted" id="matrix-filtered">{format!("Only the {} tests ({} more are not: pick \"all\" to see them).", props.show.name(), hidden)}</p>
            }
            if picked.len() > SHOWN {
                <p class="muted">{format!("{} more tests not listed here (the table below has every test).", picked.len() - SHOWN)}</p>
            }
        </section>
    }
}
