//! A run's state (queued, running, passed, failed, cancelled, interrupted) as the
//! word and badge the run list and the run view show.

use ensemble_protocol::api::RunState;
use yew::prelude::*;

/// The state's word, also its CSS class.
pub fn state_name(s: RunState) -> &'static str {
    match s {
        RunState::Queued => "queued",
        RunState::Running => "running",
        RunState::Passed => "passed",
        RunState::Failed => "failed",
        RunState::Cancelled => "cancelled",
        RunState::Interrupted => "interrupted",
    }
}

#[derive(Properties, PartialEq)]
pub struct Props {
    pub state: RunState,
    #[prop_or_default]
    pub id: Option<AttrValue>,
    /// Announce changes to screen readers (a live run's state).
    #[prop_or_default]
    pub live: bool,
}

#[component]
pub fn StateBadge(props: &Props) -> Html {
    let name = state_name(props.state);
    html! {
        <span class={classes!("state", name)} id={props.id.clone()} aria-live={props.live.then_some("polite")}>{name}</span>
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_has_its_word() {
        let words = [
            RunState::Queued,
            RunState::Running,
            RunState::Passed,
            RunState::Failed,
            RunState::Cancelled,
            RunState::Interrupted,
        ]
        .map(state_name);
        assert_eq!(words, ["queued", "running", "passed", "failed", "cancelled", "interrupted"]);
    }
}
