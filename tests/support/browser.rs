//! Headless Chromium for tests: ui/'s node_modules and the node scripts under testbed/ (browser-check.mjs,
//! ui-check.mjs) that drive Debian's Chromium with playwright-core. Needs Chromium
//! (testbed/install-browser.sh) and Node; FAILS without them.

use std::path::PathBuf;
use std::process::Command;

use super::repo;

/// ui/'s node_modules (hls.js, playwright-core): `VIGIL_UI_NODE_MODULES`, else the cache testbed/npm-cache.sh
/// fills.
pub fn node_modules() -> PathBuf {
    if let Some(p) = std::env::var_os("VIGIL_UI_NODE_MODULES") {
        return PathBuf::from(p);
    }
    let out = Command::new("bash")
        .arg(repo().join("testbed/npm-cache.sh"))
        .output()
        .expect("run testbed/npm-cache.sh");
    assert!(
        out.status.success(),
        "testbed/npm-cache.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .expect("a path")
            .trim(),
    )
}

/// testbed/browser-check.mjs on `url`: hls.js must play `advance_s` seconds; panics with its output if not.
pub fn browser_check(
    url: &str,
    advance_s: u32,
    shot: &std::path::Path,
    modules: &std::path::Path,
) -> String {
    browser_check_at(url, advance_s, 1, 45, shot, modules)
}

/// [`browser_check`] at the video's playback `rate`, within `timeout_s` seconds of wall clock.
pub fn browser_check_at(
    url: &str,
    advance_s: u32,
    rate: u32,
    timeout_s: u32,
    shot: &std::path::Path,
    modules: &std::path::Path,
) -> String {
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium is required: run testbed/install-browser.sh"
    );
    let (ok, text) = node_script(
        "browser-check.mjs",
        &[url.into(), shot.into()],
        modules,
        &[
            ("VIGIL_BROWSER_ADVANCE", &advance_s.to_string()),
            ("VIGIL_BROWSER_TIMEOUT", &timeout_s.to_string()),
            ("VIGIL_BROWSER_RATE", &rate.to_string()),
        ],
    );
    assert!(ok, "browser check of {url} failed:\n{text}");
    text
}

/// Runs `node testbed/<script> ARGS` with ui/'s node_modules; (success, stdout and stderr).
pub fn node_script(
    script: &str,
    args: &[std::ffi::OsString],
    modules: &std::path::Path,
    env: &[(&str, &str)],
) -> (bool, String) {
    let out = Command::new("node")
        .arg(repo().join("testbed").join(script))
        .args(args)
        .env("VIGIL_UI_NODE_MODULES", modules)
        .envs(env.iter().copied())
        .output()
        .expect("node is required");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
