//! Reading values out of DOM events, and asking the person.

use web_sys::{HtmlInputElement, HtmlSelectElement, HtmlTextAreaElement};
use yew::prelude::*;

pub fn input_value(e: &InputEvent) -> String {
    e.target_unchecked_into::<HtmlInputElement>().value()
}

pub fn textarea_value(e: &InputEvent) -> String {
    e.target_unchecked_into::<HtmlTextAreaElement>().value()
}

pub fn select_value(e: &Event) -> String {
    e.target_unchecked_into::<HtmlSelectElement>().value()
}

/// Asks `question` with the browser's confirm dialog; false without one.
pub fn confirm(question: &str) -> bool {
    web_sys::window().and_then(|w| w.confirm_with_message(question).ok()).unwrap_or(false)
}

/// The browser's timezone (an IANA name), or UTC when it does not say.
pub fn time_zone() -> String {
    let format = js_sys::Intl::DateTimeFormat::new(&js_sys::Array::new(), &js_sys::Object::new());
    js_sys::Reflect::get(&format.resolved_options(), &"timeZone".into())
        .ok()
        .and_then(|z| z.as_string())
        .filter(|z| !z.is_empty())
        .unwrap_or_else(|| "UTC".to_string())
}

pub fn checked(e: &Event) -> bool {
    e.target_unchecked_into::<HtmlInputElement>().checked()
}

/// The files of a file input's change event.
pub fn picked_files(e: &Event) -> Vec<web_sys::File> {
    let input = e.target_unchecked_into::<HtmlInputElement>();
    let files = files_of(input.files());
    input.set_value(""); // picking the same file again fires again
    files
}

/// The files dropped on an element.
pub fn dropped_files(e: &DragEvent) -> Vec<web_sys::File> {
    files_of(e.data_transfer().and_then(|dt| dt.files()))
}

fn files_of(list: Option<web_sys::FileList>) -> Vec<web_sys::File> {
    let Some(list) = list else { return Vec::new() };
    (0..list.length()).filter_map(|i| list.get(i)).collect()
}

/// Reads a file's text.
pub async fn file_text(file: &web_sys::File) -> Result<String, String> {
    let text = wasm_bindgen_futures::JsFuture::from(file.text()).await.map_err(|e| format!("{e:?}"))?;
    text.as_string().ok_or_else(|| "the file is not text".to_string())
}
