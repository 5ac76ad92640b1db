//! A labelled form field with its hint and inline error.

use yew::prelude::*;

#[derive(Properties, PartialEq)]
pub struct Props {
    /// The id of the control inside (the label points at it; the error is `{id}-error`).
    pub id: AttrValue,
    pub label: AttrValue,
    #[prop_or_default]
    pub hint: Option<AttrValue>,
    #[prop_or_default]
    pub error: Option<String>,
    #[prop_or_default]
    pub children: Html,
}

#[component]
pub fn Field(props: &Props) -> Html {
    html! {
        <div class={classes!("field", props.error.is_some().then_some("invalid"))}>
            <label for={props.id.clone()}>{props.label.clone()}</label>
            {props.children.clone()}
            if let Some(h) = &props.hint {
                <small class="hint">{h.clone()}</small>
            }
            if let Some(e) = &props.error {
                <small class="field-error" id={format!("{}-error", props.id)} role="alert">{e.clone()}</small>
            }
        </div>
    }
}

/// `aria-invalid` and `aria-describedby` for a control with an error.
pub fn aria_error(id: &str, error: &Option<String>) -> (AttrValue, Option<AttrValue>) {
    match error {
        Some(_) => ("true".into(), Some(format!("{id}-error").into())),
        None => ("false".into(), None),
    }
}
