//! Numbers and times as people read them.

/// `340 ms`, `1.25 s`, `2 min 05 s`.
pub fn duration_ms(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.2} s", ms as f64 / 1000.0),
        _ => format!("{} min {:02} s", ms / 60_000, (ms % 60_000) / 1000),
    }
}

/// `512 B`, `85.3 KiB`, `4.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A clock offset with its uncertainty: `+1.20 ms ± 0.05 ms`.
pub fn offset_us(offset: i64, uncertainty: i64) -> String {
    let ms = |us: i64| format!("{:.2} ms", us as f64 / 1000.0);
    let sign = if offset >= 0 { "+" } else { "-" };
    format!("{sign}{} ± {}", ms(offset.abs()), ms(uncertainty))
}

/// `1 test`, `3 tests`.
pub fn plural(n: usize, word: &str) -> String {
    format!("{n} {word}{}", if n == 1 { "" } else { "s" })
}

/// The first 12 hex digits of a sha256.
pub fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// Microseconds since the epoch as local date and time (browser only).
pub fn local_time(us: i64) -> String {
    #[cfg(target_arch = "wasm32")]
    {
        let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(us as f64 / 1000.0));
        String::from(d.to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        format!("{}s", us / 1_000_000)
    }
}

/// `us` as the time in timezone `zone` (an IANA name), with the zone's
/// name; None when the browser does not know the zone (so it also checks
/// a zone as it is typed).
pub fn time_in_zone(us: i64, zone: &str) -> Option<String> {
    #[cfg(target_arch = "wasm32")]
    {
        use wasm_bindgen::JsCast;
        let options = js_sys::Object::new();
        js_sys::Reflect::set(&options, &"timeZone".into(), &zone.into()).ok()?;
        js_sys::Reflect::set(&options, &"dateStyle".into(), &"medium".into()).ok()?;
        js_sys::Reflect::set(&options, &"timeStyle".into(), &"short".into()).ok()?;
        // Made through Reflect, which catches the RangeError an unknown
        // zone throws.
        let intl = js_sys::Reflect::get(&js_sys::global(), &"Intl".into()).ok()?;
        let class: js_sys::Function =
            js_sys::Reflect::get(&intl, &"DateTimeFormat".into()).ok()?.dyn_into().ok()?;
        let args = js_sys::Array::of2(&wasm_bindgen::JsValue::UNDEFINED, &options);
        let format = js_sys::Reflect::construct(&class, &args).ok()?;
        let date = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(us as f64 / 1000.0));
        let call: js_sys::Function = js_sys::Reflect::get(&format, &"format".into()).ok()?.dyn_into().ok()?;
        let text = call.call1(&format, &date).ok()?.as_string()?;
        Some(format!("{text} {zone}"))
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        Some(format!("{}s {zone}", us / 1_000_000))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_read_well() {
        assert_eq!(duration_ms(340), "340 ms");
        assert_eq!(duration_ms(1250), "1.25 s");
        assert_eq!(duration_ms(125_000), "2 min 05 s");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(87_347), "85.3 KiB");
        assert_eq!(bytes(4 << 20), "4.0 MiB");
        assert_eq!(offset_us(-1200, 50), "-1.20 ms ± 0.05 ms");
        assert_eq!(short_sha("abcdef0123456789"), "abcdef012345");
        assert_eq!((plural(1, "test"), plural(2, "test")), ("1 test".into(), "2 tests".into()));
    }
}
