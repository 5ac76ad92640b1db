//! The browser app's files: named by their hash, sent compressed as the
//! browser takes them (brotli, gzip) and byte for byte the same once
//! decompressed, kept for good by browsers — a reload transfers none of
//! them — while the page itself is revalidated by its ETag; the first load
//! transfers at most 400 KB.

use std::io::Read;

use ensemble_tests::browser::Browser;
use ensemble_tests::start_server;

const TOKEN: &str = "assets-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_are_hashed_compressed_and_cached_and_a_reload_fetches_none() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), &dir.path().join("data"), TOKEN, &[]);
    let client = server.client().with_token(None);
    let get = |path: String, headers: Vec<(&'static str, String)>| {
        let mut req = client.request(reqwest::Method::GET, &path);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let header = |h: &str| resp.headers().get(h).map(|v| v.to_str().unwrap().to_string());
            let (encoding, cache, etag) =
                (header("content-encoding"), header("cache-control"), header("etag"));
            (status, encoding, cache, etag, resp.bytes().await.unwrap().to_vec())
        }
    };

    let (status, _, cache, index_etag, page) = get("/".into(), vec![]).await;
    assert_eq!((status, cache.as_deref()), (200, Some("no-cache")));
    let page = String::from_utf8(page).unwrap();
    let names: Vec<String> =
        page.split("/assets/").skip(1).map(|rest| rest.split('"').next().unwrap().to_string()).collect();
    assert_eq!(names.len(), 3, "the script, the wasm and the style: {page}");
    assert!(
        names.iter().any(|n| n.starts_with("ensemble_frontend_bg-") && n.ends_with(".wasm")),
        "{names:?}"
    );
    let (status, ..) = get("/".into(), vec![("if-none-match", index_etag.unwrap())]).await;
    assert_eq!(status, 304, "the page is revalidated by its ETag");

    for name in &names {
        let path = format!("/assets/{name}");
        let (status, encoding, cache, _, raw) = get(path.clone(), vec![]).await;
        assert_eq!((status, encoding), (200, None), "{name}: nothing asked, nothing compressed");
        assert_eq!(cache.as_deref(), Some("public, max-age=31536000, immutable"), "{name}");
        let (_, encoding, _, etag, br) =
            get(path.clone(), vec![("accept-encoding", "gzip, br".into())]).await;
        assert_eq!(encoding.as_deref(), Some("br"), "{name}");
        let mut unbr = Vec::new();
        brotli::Decompressor::new(&br[..], 4096).read_to_end(&mut unbr).unwrap();
        assert_eq!(unbr, raw, "{name}: brotli");
        assert!(br.len() * 2 < raw.len(), "{name}: {} of {} bytes", br.len(), raw.len());
        let (_, encoding, _, _, gz) = get(path.clone(), vec![("accept-encoding", "gzip".into())]).await;
        assert_eq!(encoding.as_deref(), Some("gzip"), "{name}");
        let mut ungz = Vec::new();
        flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut ungz).unwrap();
        assert_eq!(ungz, raw, "{name}: gzip");
        let (status, _, _, _, body) =
            get(path, vec![("accept-encoding", "br".into()), ("if-none-match", etag.unwrap())]).await;
        assert_eq!((status, body.len()), (304, 0), "{name}");
        eprintln!("{name}: {} bytes, {} as brotli, {} as gzip", raw.len(), br.len(), gz.len());
    }
    let (status, ..) = get("/assets/ensemble_frontend.js".into(), vec![]).await;
    assert_eq!(status, 404, "only hashed names");

    // In a browser: the first load fetches the files, a reload none of them.
    let browser = Browser::start().await.unwrap();
    let b = &browser;
    let steps = async {
        b.goto(&format!("{}/?token={TOKEN}", server.url)).await?;
        b.wait_css("nav").await?;
        let fetched = "return performance.getEntriesByType('resource')\
            .filter((e) => e.name.includes('/assets/')).map((e) => [e.name, e.transferSize])";
        let first = b.execute(fetched, vec![]).await?;
        let first = first.as_array().cloned().unwrap_or_default();
        anyhow::ensure!(first.len() >= 2, "the first load fetched the app: {first:?}");
        anyhow::ensure!(first.iter().all(|e| e[1].as_u64().unwrap_or(0) > 0), "{first:?}");
        // The whole app, page included, in at most 400 KB over the wire.
        let page =
            b.execute("return performance.getEntriesByType('navigation')[0].transferSize", vec![]).await?;
        let total = page.as_u64().unwrap_or(0) + first.iter().filter_map(|e| e[1].as_u64()).sum::<u64>();
        eprintln!("first load: {total} bytes transferred");
        anyhow::ensure!(total <= 400 * 1024, "the first load transferred {total} bytes: {first:?}");
        b.execute("location.reload()", vec![]).await?;
        // The reloaded page, once its app is up.
        let reloaded = "return performance.getEntriesByType('navigation')[0].type === 'reload' \
            && document.querySelector('nav') !== null";
        b.wait_until("the reloaded app", async |c| {
            Ok(c.execute(reloaded, vec![]).await?.as_bool().unwrap_or(false).then_some(()))
        })
        .await?;
        let again = b.execute(fetched, vec![]).await?;
        let again = again.as_array().cloned().unwrap_or_default();
        anyhow::ensure!(again.len() >= 2, "the reload used the app's files: {again:?}");
        anyhow::ensure!(again.iter().all(|e| e[1] == serde_json::json!(0)), "a reload fetched: {again:?}");
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        panic!("{e:#}\n{}", browser.diagnostics().await);
    }
    browser.close().await.unwrap();
}
