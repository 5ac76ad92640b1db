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
    if let (Ok(history), Ok(path)) = (window.history(), location.pathname()) {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&path));
    }
    Some(token)
}

/// The `token` parameter of a query string (`?a=1&token=T`), decoded.
pub fn token_in_query(search: &str) -> Option<String> {
    search
        .trim_start_matches('?')
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="))
        .and_then(ensemble_protocol::api::decode)
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::token_in_query;

    #[test]
    fn a_token_is_read_from_the_query() {
        assert_eq!(token_in_query("?token=abc").as_deref(), Some("abc"));
        assert_eq!(token_in_query("?x=1&token=a%20b").as_deref(), Some("a b"));
        assert_eq!(token_in_query("?x=1"), None);
        assert_eq!(token_in_query("?token="), None);
    }
}
