//! The run's tests: a filtered table that renders only the rows in view, so
//! a 10,000-test run scrolls smoothly.

use yew::prelude::*;

use crate::format::duration_ms;
use crate::state::RunView;

/// Height of one row in pixels (the stylesheet agrees: `.tests td`)...
pub const ROW_HEIGHT: usize = 32;
/// ...and on a phone, where a row is a tap target.
pub const PHONE_ROW_HEIGHT: usize = 40;
/// Height of the scrolling area in rows.
const VISIBLE: usize = 14;
/// Rows rendered beyond the visible ones, above and below.
const OVERSCAN: usize = 8;

#[derive(Properties)]
pub struct Props {
    pub view: UseReducerHandle<RunView>,
    pub version: u64,
    /// Row indices to show, in order (already filtered).
    pub rows: std::rc::Rc<Vec<usize>>,
    pub selected: Option<usize>,
    pub on_select: Callback<usize>,
    /// (role, test) of the plan's tests that were flaky in recent runs.
    pub flaky: std::rc::Rc<std::collections::HashSet<(String, String)>>,
}

impl PartialEq for Props {
    fn eq(&self, o: &Self) -> bool {
        self.version == o.version
            && std::rc::Rc::ptr_eq(&self.rows, &o.rows)
            && std::rc::Rc::ptr_eq(&self.flaky, &o.flaky)
            && self.selected == o.selected
            && self.on_select == o.on_select
    }
}

#[component]
pub fn TestTable(props: &Props) -> Html {
    let scroll = use_state(|| 0usize);
    let onscroll = {
        let scroll = scroll.clone();
        Callback::from(move |e: Event| {
            let el: web_sys::Element = e.target_unchecked_into();
            scroll.set(el.scroll_top().max(0) as usize);
        })
    };
    let row_height = if crate::dom::is_phone() { PHONE_ROW_HEIGHT } else { ROW_HEIGHT };
    let n = props.rows.len();
    let first = (*scroll / row_height).saturating_sub(OVERSCAN).min(n);
    let last = (first + VISIBLE + 2 * OVERSCAN).min(n);
    let view = &*props.view;
    let rows = props.rows[first..last].iter().map(|&i| {
        let r = &view.rows[i];
        let on_select = props.on_select.clone();
        let selected = props.selected == Some(i);
        let flaky = props.flaky.contains(&(r.shard.role.clone(), r.test.clone()));
        html! {
            <tr key={i} class={classes!(r.status.class(), selected.then_some("selected"))} data-test={r.test.clone()}
                data-flaky={flaky.then_some("true")}>
                <td class="name">
                    <button type="button" class="linkish" title={r.test.clone()} aria-pressed={if selected { "true" } else { "false" }}
                        onclick={Callback::from(move |_| on_select.emit(i))}>{r.test.clone()}</button>
                    if flaky {
                        <span class="flaky-mark" title="This test flipped between passing and failing, or passed only on a retry, in the plan's recent runs">{"flaky"}</span>
                    }
                </td>
                <td><span class={classes!("status", r.status.class())}>{r.status.class()}</span></td>
                <td class="num">{r.duration_ms.map(duration_ms).unwrap_or_default()}</td>
                // Cut to the column's width: the full name on hover and in the detail pane.
                <td title={r.shard.machine.clone()}>{r.shard.machine.clone()}</td>
                <td title={r.shard.role.clone()}>{r.shard.role.clone()}</td>
            </tr>
        }
    });
    let above = first * row_height;
    let below = (n - last) * row_height;
    html! {
        <div class="tests-scroll" id="tests-scroll" {onscroll} style={format!("max-height:{}px", (VISIBLE + 1) * row_height)} tabindex="0" aria-label="tests">
            <table class="tests" id="tests">
                <thead><tr><th scope="col">{"Test"}</th><th scope="col">{"Status"}</th><th scope="col">{"Duration"}</th><th scope="col">{"Machine"}</th><th scope="col">{"Role"}</th></tr></thead>
                <tbody>
                    if above > 0 { <tr class="spacer" aria-hidden="true"><td colspan="5" style={format!("height:{above}px")}></td></tr> }
                    { for rows }
                    if below > 0 { <tr class="spacer" aria-hidden="true"><td colspan="5" style={format!("height:{below}px")}></td></tr> }
                </tbody>
            </table>
            if n == 0 { <p class="muted">{"No tests match."}</p> }
        </div>
    }
}
