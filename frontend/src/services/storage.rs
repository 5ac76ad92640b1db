//! The access token, kept in the browser's local storage.

const KEY: &str = "ensemble.token";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok().flatten()
}

pub fn load_token() -> Option<String> {
    storage()?.get_item(KEY).ok().flatten().filter(|t| !t.is_empty())
}

pub fn save_token(token: &str) {
    if let Some(s) = storage() {
        let _ = s.set_item(KEY, token);
    }
}

pub fn forget_token() {
    if let Some(s) = storage() {
        let _ = s.remove_item(KEY);
    }
}

/// A token handed over in the page's address (`?token=T`, as `ensemble
/// serve` and `ensemble demo` print it): kept like a typed one, and taken out
/// of the address bar so it is not bookmarked or shared by accident.
pub fn take_token_from_url() -> Option<String> {
    let window = web_sys::window()?;
    let location = window.location();
    let search = location.search().ok()?;
    let token = token_in_query(&search)?;
    save_token(&token);
    // The rest of the address stays (a link to a test of a run).
    let rest: Vec<(String, String)> =
        query_pairs(&search).into_iter().filter(|(k, _)| k != "token").collect();
    replace_query(&rest);
    Some(token)
}

/// The decoded `key=value` pairs of a query string (`?a=1&b=x%20y`).
pub fn query_pairs(search: &str) -> Vec<(String, String)> {
    search
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((ensemble_protocol::api::decode(k)?, ensemble_protocol::api::decode(v)?))
        })
        .collect()
}

/// The page's query parameters now.
pub fn page_query() -> Vec<(String, String)> {
    web_sys::window().and_then(|w| w.location().search().ok()).map(|s| query_pairs(&s)).unwrap_or_default()
}

/// One parameter of the page's query now.
pub fn page_param(key: &str) -> Option<String> {
    page_query().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Sets (`Some`) or removes (`None`) parameters of the page's query, the
/// others kept (no new history entry): what a link to the page shows.
pub fn set_query(changes: &[(&str, Option<String>)]) {
    let mut pairs: Vec<(String, String)> =
        page_query().into_iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).collect();
    pairs.extend(changes.iter().filter_map(|(k, v)| v.clone().map(|v| (k.to_string(), v))));
    replace_query(&pairs);
}

/// Replaces the page's query with `pairs` (no new history entry).
pub fn replace_query(pairs: &[(String, String)]) {
    use ensemble_protocol::api::encode;
    let Some(window) = web_sys::window() else { return };
    let Ok(path) = window.location().pathname() else { return };
    let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
    let url = if query.is_empty() { path } else { format!("{path}?{}", query.join("&")) };
    if let Ok(history) = window.history() {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&url));
    }
}

/// The `token` parameter of a query string (`?a=1&token=T`), decoded.
pub fn token_in_query(search: &str) -> Option<String> {
    query_pairs(search).into_iter().find(|(k, _)| k == "token").map(|(_, t)| t).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::{query_pairs, token_in_query};

    #[test]
    fn query_pairs_are_decoded() {
        let pairs = query_pairs("?test=a%2Fb&role=server&x");
        let want = [("test", "a/b"), ("role", "server"), ("x", "")];
        assert_eq!(pairs, want.map(|(k, v)| (k.to_string(), v.to_string())));
        assert!(query_pairs("").is_empty());
    }

    #[test]
    fn a_token_is_read_from_the_query() {
        assert_eq!(token_in_query("?token=abc").as_deref(), Some("abc"));
        assert_eq!(token_in_query("?x=1&token=a%20b").as_deref(), Some("a b"));
        assert_eq!(token_in_query("?x=1"), None);
        assert_eq!(token_in_query("?token="), None);
    }
}
