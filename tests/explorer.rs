//! The backprop explorer (docs/backprop.md §18): the page is written with the crate's numbers, and
//! in a real headless browser (Debian's Chromium) it loads without a script error and shows those
//! numbers. `.ci/run` installs Chromium and sets `BACKPROP_REQUIRE_BROWSER=1`, so CI always runs
//! the browser half; elsewhere, without Chromium, the test says how to install it.

#[allow(dead_code)]
#[path = "../examples/explorer/main.rs"]
mod explorer;

/// The value of `attr` on the element with `id` in the dumped DOM.
fn attribute(dom: &str, id: &str, attr: &str) -> Option<String> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_start = dom[..at].rfind('<')?;
    let tag = &dom[tag_start..tag_start + dom[tag_start..].find('>')?];
    let key = format!("{attr}=\"");
    let v = &tag[tag.find(&key)? + key.len()..];
    Some(v[..v.find('"')?].to_string())
}

#[test]
fn the_page_holds_the_crates_numbers() {
    let data = explorer::record();
    let steps = data["steps"].as_array().unwrap();
    assert_eq!(steps.len(), explorer::STEPS);
    // Training works: the loss falls well below its start.
    let loss = |k: usize| steps[k]["loss"].as_f64().unwrap();
    assert!(loss(explorer::STEPS - 1) < 0.5 * loss(0), "{} → {}", loss(0), loss(explorer::STEPS - 1));
    let page = explorer::page(&data);
    assert!(!page.contains("/*DATA*/"), "the data is in place");
    for external in ["<script src", "<link", "@import", "url(http"] {
        assert!(!page.contains(external), "the page loads nothing from elsewhere: {external}");
    }
}

#[test]
fn a_headless_browser_shows_the_crates_numbers_without_errors() {
    let Some(browser) = explorer::chromium() else {
        if std::env::var_os("BACKPROP_REQUIRE_BROWSER").is_some() {
            panic!("BACKPROP_REQUIRE_BROWSER is set but no chromium was found");
        }
        eprintln!(
            "SKIPPED the browser half of the explorer test: no chromium. Install it with \
             `apt-get install chromium` (Debian) or point BACKPROP_CHROMIUM at a Chromium binary."
        );
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("index.html");
    explorer::write_page(&page).unwrap();
    let (dom, stderr) = explorer::headless(&browser, &page, "", &["--dump-dom"]).expect("chromium runs");
    let status = dom.split("data-status=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("missing");
    assert_eq!(status, "ok", "the page's script reported: {status}\n{stderr}");
    let console: Vec<&str> =
        stderr.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect();
    assert!(console.is_empty(), "console messages from the page: {console:?}");
    // Step 0 as the page shows it, against the crate's record.
    let data = explorer::record();
    let step = &data["steps"][0];
    let shown = |id: &str, attr: &str| -> f64 {
        attribute(&dom, id, attr).unwrap_or_else(|| panic!("no {attr} on #{id}")).parse().unwrap()
    };
    assert_eq!(shown("loss", "data-value"), step["loss"].as_f64().unwrap());
    for j in 0..4 {
        for i in 0..2 {
            let id = format!("w1-{j}-{i}");
            assert_eq!(shown(&id, "data-value"), step["w1"][2 * j + i].as_f64().unwrap(), "{id}");
            assert_eq!(shown(&id, "data-grad"), step["dw1"][2 * j + i].as_f64().unwrap(), "{id}");
        }
        assert_eq!(shown(&format!("h-{j}"), "data-value"), step["probe"]["h"][j].as_f64().unwrap());
        assert_eq!(shown(&format!("h-{j}-grad"), "data-value"), step["probe"]["dh"][j].as_f64().unwrap());
    }
    assert_eq!(shown("z", "data-value"), step["probe"]["z2"][0].as_f64().unwrap());

    // Opened at a later step (page.html#step=60), it shows that step's loss.
    let (dom, _) = explorer::headless(&browser, &page, "step=60", &["--dump-dom"]).expect("chromium runs");
    let loss_60: f64 = attribute(&dom, "loss", "data-value").unwrap().parse().unwrap();
    assert_eq!(loss_60, data["steps"][60]["loss"].as_f64().unwrap());
}
