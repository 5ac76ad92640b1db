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

/// Focuses the first element matching `selector` (made focusable by script
/// when it is not a control, e.g. a heading).
pub fn focus_first(selector: &str) {
    use wasm_bindgen::JsCast;
    let element = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.query_selector(selector).ok().flatten())
        .and_then(|e| e.dyn_into::<web_sys::HtmlElement>().ok());
    if let Some(e) = element {
        if !e.has_attribute("tabindex") && e.tab_index() < 0 {
            let _ = e.set_attribute("tabindex", "-1");
        }
        let _ = e.focus();
    }
}

/// Scrolls the first element matching `selector` into view, as little as
/// it takes (it keeps the focus where it is).
pub fn scroll_into_view(selector: &str) {
    let element =
        web_sys::window().and_then(|w| w.document()).and_then(|d| d.query_selector(selector).ok().flatten());
    let Some(e) = element else { return };
    let options = js_sys::Object::new();
    let _ = js_sys::Reflect::set(&options, &"block".into(), &"nearest".into());
    if let Ok(f) = js_sys::Reflect::get(&e, &"scrollIntoView".into())
        && let Ok(f) = wasm_bindgen::JsCast::dyn_into::<js_sys::Function>(f)
    {
        let _ = f.call1(&e, &options);
    }
}

/// Whether the page is laid out for a phone (the stylesheet's
/// `max-width: 700px`).
pub fn is_phone() -> bool {
    web_sys::window()
        .and_then(|w| w.match_media("(max-width: 700px)").ok().flatten())
        .is_some_and(|m| m.matches())
}

/// Saves `bytes` as a download named `name` (through an object URL that
/// lives only for the click).
pub fn save_file(bytes: &[u8], name: &str) -> Result<(), String> {
    use wasm_bindgen::JsCast;
    let fail = |what: &str, e: wasm_bindgen::JsValue| format!("{what}: {e:?}");
    let array = js_sys::Uint8Array::from(bytes);
    let parts = js_sys::Array::of1(&array);
    let blob = web_sys::Blob::new_with_u8_array_sequence(&parts).map_err(|e| fail("making the file", e))?;
    let url = web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| fail("making its address", e))?;
    let document = web_sys::window().and_then(|w| w.document()).ok_or("no document")?;
    let link = document
        .create_element("a")
        .map_err(|e| fail("making a link", e))?
        .dyn_into::<web_sys::HtmlAnchorElement>()
        .map_err(|_| "not a link".to_string())?;
    link.set_href(&url);
    link.set_download(name);
    link.click();
    let _ = web_sys::Url::revoke_object_url(&url);
    Ok(())
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

/// While it lives, leaving the page asks first: the browser's own prompt
/// before a reload, a close or another address, and `question` before the
/// app follows a link away (a download link leaves nothing). Dropped, it
/// asks no more.
pub struct LeaveGuard {
    unload: wasm_bindgen::closure::Closure<dyn FnMut(web_sys::Event)>,
    click: wasm_bindgen::closure::Closure<dyn FnMut(web_sys::Event)>,
}

impl LeaveGuard {
    pub fn install(question: &'static str) -> Option<LeaveGuard> {
        use wasm_bindgen::JsCast;
        use wasm_bindgen::closure::Closure;
        let window = web_sys::window()?;
        let document = window.document()?;
        let unload = Closure::<dyn FnMut(web_sys::Event)>::new(|e: web_sys::Event| {
            e.prevent_default();
            // Older browsers show the prompt only for a return value.
            let _ = js_sys::Reflect::set(&e, &"returnValue".into(), &"".into());
        });
        let click = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            let link = e
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .and_then(|el| el.closest("a[href]").ok().flatten());
            let Some(link) = link else { return };
            let stays = link.has_attribute("download")
                || link.get_attribute("href").is_some_and(|h| h.starts_with('#'));
            if !stays && !confirm(question) {
                e.prevent_default();
                e.stop_immediate_propagation();
            }
        });
        window.add_event_listener_with_callback("beforeunload", unload.as_ref().unchecked_ref()).ok()?;
        // Capturing: before the router's own handler on the link.
        document
            .add_event_listener_with_callback_and_bool("click", click.as_ref().unchecked_ref(), true)
            .ok()?;
        Some(LeaveGuard { unload, click })
    }
}

impl Drop for LeaveGuard {
    fn drop(&mut self) {
        use wasm_bindgen::JsCast;
        if let Some(window) = web_sys::window() {
            let _ = window
                .remove_event_listener_with_callback("beforeunload", self.unload.as_ref().unchecked_ref());
            if let Some(document) = window.document() {
                let _ = document.remove_event_listener_with_callback_and_bool(
                    "click",
                    self.click.as_ref().unchecked_ref(),
                    true,
                );
            }
        }
    }
}
