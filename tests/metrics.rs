//! Observability on real parts: a real Prometheus (Debian's 2.42) scrapes a running vigil that records the
//! simulated camera into a real js-ipfs node and SecantusDB; every PromQL expression of the dashboards and
//! the alert rules is evaluated against it; killing ffmpeg moves the restart counter with the right labels;
//! stopping the IPFS node flips its link gauge, grows the backlog and fires the dependency alert; filling the
//! disk fires the disk-low alert. Also: `promtool check rules` / `promtool test rules`, the dashboards'
//! shape, and who may read `/metrics`. Needs `testbed/install.sh` (prometheus, ipfs, mongo); FAILS without.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use support::bed::Bed;
use support::prometheus::{PROMTOOL, Prometheus};
use support::*;

fn dashboards() -> PathBuf {
    repo().join("dashboards")
}

fn dashboard_files() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dashboards())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    v.sort();
    v
}

/// Every PromQL expression of a dashboard: panel targets (rows' nested panels too) and the metric selectors
/// of its `label_values(…)` variables, with the template variables replaced as Grafana would.
fn dashboard_exprs(path: &Path) -> Vec<(String, String)> {
    let d: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    fn panels(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for p in v.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                out.push((
                    p["title"].as_str().unwrap_or("?").to_string(),
                    t["expr"].as_str().unwrap().to_string(),
                ));
            }
            panels(&p["panels"], out);
        }
    }
    panels(&d["panels"], &mut out);
    for var in d["templating"]["list"].as_array().unwrap() {
        if let Some(q) = var["definition"].as_str()
            && let Some(inner) = q.strip_prefix("label_values(")
        {
            let selector = inner.rsplit_once(',').unwrap().0;
            out.push((format!("variable {}", var["name"]), selector.to_string()));
        }
    }
    out.into_iter()
        .map(|(t, e)| {
            (
                t,
                e.replace("$instance", ".*")
                    .replace("$camera", "cam1")
                    .replace("$__rate_interval", "30s"),
            )
        })
        .collect()
}

/// The `expr` of every rule in dashboards/alerts.yml (the file's own layout: `expr: …` or `expr: |` + lines).
fn rule_exprs(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut name = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim();
        if let Some(n) = t.strip_prefix("- alert: ") {
            name = n.to_string();
        } else if let Some(e) = t.strip_prefix("expr: ") {
            if e == "|" {
                let indent = lines.peek().map_or(0, |l| l.len() - l.trim_start().len());
                let mut expr = String::new();
                while let Some(l) = lines.peek() {
                    if l.trim().is_empty() || l.len() - l.trim_start().len() < indent {
                        break;
                    }
                    expr += l.trim();
                    expr += " ";
                    lines.next();
                }
                out.push((name.clone(), expr.trim().to_string()));
            } else {
                out.push((name.clone(), e.to_string()));
            }
        }
    }
    out
}

#[test]
fn the_alert_rules_pass_promtool_and_their_unit_tests() {
    assert!(
        Path::new(PROMTOOL).exists(),
        "{PROMTOOL} missing: run testbed/install.sh prometheus"
    );
    let check = Command::new(PROMTOOL)
        .args(["check", "rules", "alerts.yml"])
        .current_dir(dashboards())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&check.stdout).into_owned();
    assert!(check.status.success(), "promtool check rules: {said}");
    let rules = rule_exprs(&std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap());
    assert!(
        said.contains(&format!("SUCCESS: {} rules found", rules.len())),
        "{said}"
    );
    let test = Command::new(PROMTOOL)
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(dashboards())
        .output()
        .unwrap();
    assert!(
        test.status.success(),
        "promtool test rules: {}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );
    // Every alert has a firing case in the unit tests and a section in docs/operations.md.
    let tests = std::fs::read_to_string(dashboards().join("alerts.test.yml")).unwrap();
    let ops = std::fs::read_to_string(repo().join("docs/operations.md")).unwrap();
    for (alert, _) in &rules {
        let fires = tests
            .split("alertname: ")
            .skip(1)
            .any(|rest| rest.starts_with(alert.as_str()) && rest.contains("exp_alerts:"));
        assert!(fires, "alerts.test.yml never expects {alert} to fire");
        assert!(
            ops.contains(&format!("### {alert}")),
            "docs/operations.md has no section for {alert}"
        );
    }
    // The four alert kinds the issue names, at least.
    for needed in [
        "VigilCameraNotRecording",
        "VigilRestartStorm",
        "VigilBacklogGrowing",
        "VigilDependencyDown",
        "VigilDiskLow",
        "VigilMirrorLagging",
        "VigilFootageLost",
    ] {
        assert!(rules.iter().any(|(a, _)| a == needed), "{needed} missing");
    }
}

#[test]
fn the_dashboards_are_importable_grafana_json() {
    let files = dashboard_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["camera.json", "fleet.json", "pipeline.json", "storage.json"]
    );
    let mut uids = Vec::new();
    for f in &files {
        let d: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let name = f.display();
        assert!(
            d["title"].as_str().unwrap().starts_with("vigil — "),
            "{name}"
        );
        assert!(d["schemaVersion"].as_u64().unwrap() >= 36, "{name}");
        uids.push(d["uid"].as_str().unwrap().to_string());
        // The data source is a variable, so the file imports into any Grafana as it is.
        let vars = d["templating"]["list"].as_array().unwrap();
        assert!(
            vars.iter()
                .any(|v| v["name"] == "datasource" && v["type"] == "datasource"),
            "{name}"
        );
        let mut ids = std::collections::HashSet::new();
        let mut n = 0;
        for p in d["panels"].as_array().unwrap() {
            assert!(
                ids.insert(p["id"].as_u64().unwrap()),
                "{name}: duplicate panel id"
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{name}: {p}"
            );
            if p["type"] == "row" {
                continue;
            }
            n += 1;
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
            assert!(
                !p["description"].as_str().unwrap_or("").is_empty(),
                "{name}: {}",
                p["title"]
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {}", p["title"]);
            for t in targets {
                assert!(
                    t["refId"].is_string() && t["expr"].is_string(),
                    "{name}: {t}"
                );
            }
        }
        assert!(n >= 6, "{name}: {n} panels");
    }
    uids.sort();
    uids.dedup();
    assert_eq!(uids.len(), files.len(), "dashboard uids are unique");
}

#[test]
fn metrics_answer_a_token_or_the_box_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let token = "0123456789abcdef0123";
    let path = dir.path().join("vigil.toml");
    std::fs::write(
        &path,
        config(
            &data,
            &[],
            &format!("[metrics]\nbearer_token = \"{token}\"\n"),
        ),
    )
    .unwrap();
    let mut v = Vigil::start(&path);
    let get = |headers: &[(&str, &str)]| http(&v.addr, "GET", "/metrics", headers, b"");
    let r = get(&[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("bearer_token"), "{}", r.text());
    assert_eq!(
        get(&[("Authorization", "Bearer wrong-token-wrong-token")]).status,
        401
    );
    let ok = get(&[("Authorization", &format!("Bearer {token}"))]);
    assert_eq!(ok.status, 200);
    assert_eq!(
        ok.header("content-type").as_deref(),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    assert!(ok.text().contains("vigil_build_info{version=\""));
    // With a token, a proxied scrape is fine too (the token is the credential).
    assert_eq!(
        get(&[
            ("Authorization", &format!("Bearer {token}")),
            ("X-Forwarded-For", "203.0.113.9")
        ])
        .status,
        200
    );
    v.stop();

    // Without a token: the box itself only; a request through a proxy (nginx in front) is refused.
    std::fs::write(&path, config(&data, &[], "")).unwrap();
    let mut v = Vigil::start(&path);
    let r = http_get(&v.addr, "/metrics");
    assert_eq!(r.status, 200, "{}", r.text());
    let text = r.text();
    assert!(text.ends_with("# EOF\n"));
    for header in ["X-Forwarded-For", "X-Real-IP", "Forwarded"] {
        let r = http(&v.addr, "GET", "/metrics", &[(header, "203.0.113.9")], b"");
        assert_eq!(r.status, 403, "{header}: {}", r.text());
    }
    // The request counter saw those refusals, by route and status.
    let text = http_get(&v.addr, "/metrics").text();
    assert!(
        text.contains(
            "vigil_http_requests_total{route=\"/metrics\",method=\"GET\",status=\"403\"} 3"
        ),
        "{text}"
    );
    v.stop();

    // Off: not served at all.
    std::fs::write(&path, config(&data, &[], "[metrics]\nenabled = false\n")).unwrap();
    let mut v = Vigil::start(&path);
    assert_eq!(http_get(&v.addr, "/metrics").status, 404);
    v.stop();
}

/// Waits until Prometheus evaluates `expr` to a non-empty result (each value checked by `ok`).
fn wait_prom(p: &Prometheus, what: &str, within: Duration, expr: &str, ok: impl Fn(f64) -> bool) {
    let t0 = Instant::now();
    loop {
        let v = p.values(expr);
        if !v.is_empty() && v.iter().all(|x| ok(*x)) {
            return;
        }
        assert!(
            t0.elapsed() < within,
            "{what}: {expr} = {v:?} after {within:?}\nPrometheus log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn wait_firing(p: &Prometheus, alert: &str, within: Duration) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        if let Some(a) = p.firing(alert).into_iter().next() {
            return a;
        }
        assert!(
            t0.elapsed() < within,
            "{alert} not firing after {within:?}\nPrometheus log:\n{}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_sees_restarts_outages_and_a_full_disk_and_every_expression_evaluates() {
    let bed = Bed::start(&["ipfs-a", "ipfs-b", "mongo"]);
    let fs = Tmpfs::mount(64);
    let cam = Camera::start(1);
    let data = fs.path().join("data");
    let path = fs.path().join("vigil.toml");
    let index = format!(
        "[index]\nmongodb_uri = \"{}\"\ndatabase = \"vigil_metrics\"\n",
        bed.mongo
    );
    std::fs::write(
        &path,
        config(
            &data,
            &[("cam1", cam.url(1))],
            &format!(
                "[ipfs]\napi = \"{}\"\n{index}[retention]\nmin_free = \"50%\"\ncheck_seconds = 1\n",
                bed.ipfs_a
            ),
        ),
    )
    .unwrap();
    // A mirror of cam1 on the second IPFS node, so that the mirror's panels have data too.
    let mirror_dir = tempfile::tempdir().unwrap();
    let mirror_path = mirror_dir.path().join("vigil.toml");
    std::fs::write(
        &mirror_path,
        config(
            &mirror_dir.path().join("data"),
            &[],
            &format!(
                "[ipfs]\napi = \"{}\"\n{index}[[remote_cameras]]\nid = \"cam1\"\nfactory_id = \"factory-a\"\n",
                bed.ipfs_b
            ),
        )
        .replace("node_id = \"test\"", "node_id = \"mirror\""),
    )
    .unwrap();
    let mut mirror = Vigil::start(&mirror_path);
    let mut vigil = Vigil::start(&path);
    // The rules as shipped, with every `for:` cut to 0 s so that alerts fire within a test's time (their
    // durations are covered by promtool's unit tests).
    let rules_text = std::fs::read_to_string(dashboards().join("alerts.yml")).unwrap();
    let fast: String = rules_text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("for: ") {
                let indent = l.len() - l.trim_start().len();
                format!("{}for: 0s", " ".repeat(indent))
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let rules = fs.path().join("alerts.yml");
    std::fs::write(&rules, fast).unwrap();
    let prom = Prometheus::start(&[&vigil.addr, &mirror.addr], Some(&rules));
    let origin = format!("instance=\"{}\"", vigil.addr);
    let at_mirror = format!("instance=\"{}\"", mirror.addr);

    wait_prom(
        &prom,
        "both nodes scraped",
        Duration::from_secs(30),
        "count(up{job=\"vigil\"} == 1)",
        |v| v == 2.0,
    );
    wait_prom(
        &prom,
        "segments recorded and published",
        Duration::from_secs(60),
        &format!("vigil_segments_total{{stage=\"published\",{origin}}}"),
        |v| v >= 2.0,
    );
    wait_prom(
        &prom,
        "the camera recording",
        Duration::from_secs(10),
        "vigil_camera_state{camera=\"cam1\",state=\"recording\"}",
        |v| v == 1.0,
    );
    wait_prom(
        &prom,
        "links up",
        Duration::from_secs(10),
        "vigil_link_up",
        |v| v == 1.0,
    );
    assert_eq!(
        prom.query(&format!("vigil_link_up{{{origin}}}")).len(),
        2,
        "ipfs and mongodb"
    );
    wait_prom(
        &prom,
        "the mirror holding copies",
        Duration::from_secs(60),
        &format!("vigil_segments_total{{stage=\"mirrored\",{at_mirror}}}"),
        |v| v >= 2.0,
    );

    // 1. ffmpeg killed: the restart counter of root/cameras/cam1's ffmpeg, reason "exited", moves; the
    // footage lost across the session join is counted once recording resumes.
    let restarts = &format!(
        "vigil_supervisor_restarts_total{{supervisor=\"root/cameras/cam1\",child=\"ffmpeg\",reason=\"exited\",{origin}}}"
    );
    assert!(prom.values(restarts).is_empty(), "no restart yet");
    let ffmpeg = ffmpeg_under(&data);
    assert_eq!(ffmpeg.len(), 1, "{ffmpeg:?}");
    kill(Pid::from_raw(ffmpeg[0].0), Signal::SIGKILL).unwrap();
    wait_prom(
        &prom,
        "the restart counted",
        Duration::from_secs(20),
        restarts,
        |v| v == 1.0,
    );
    wait_prom(
        &prom,
        "the gap counted as lost footage",
        Duration::from_secs(30),
        "vigil_footage_lost_seconds_total{camera=\"cam1\"}",
        |v| v > 0.0,
    );
    let other_reasons = prom.query(&format!(
        "vigil_supervisor_restarts_total{{reason!=\"exited\",{origin}}}"
    ));
    assert!(other_reasons.is_empty(), "{other_reasons:?}");

    // 2. The IPFS node stops: its link gauge flips, the pin backlog grows, the dependency alert fires;
    // recording goes on. Back up: the backlog drains.
    bed.down(&["ipfs-a"]);
    wait_prom(
        &prom,
        "the IPFS link down",
        Duration::from_secs(20),
        &format!("vigil_link_up{{link=\"ipfs\",{origin}}}"),
        |v| v == 0.0,
    );
    let backlog = &format!("vigil_pipeline_backlog_segments{{stage=\"pin\",{origin}}}");
    wait_prom(
        &prom,
        "a pin backlog",
        Duration::from_secs(30),
        backlog,
        |v| v >= 2.0,
    );
    let first = prom.values(backlog)[0];
    wait_prom(
        &prom,
        "the backlog growing",
        Duration::from_secs(30),
        backlog,
        |v| v >= first + 2.0,
    );
    assert_eq!(
        prom.values("vigil_camera_state{camera=\"cam1\",state=\"recording\"}"),
        vec![1.0],
        "recording goes on"
    );
    let alert = wait_firing(&prom, "VigilDependencyDown", Duration::from_secs(20));
    assert_eq!(alert["labels"]["link"], "ipfs", "{alert}");
    assert_eq!(alert["labels"]["instance"], vigil.addr.as_str(), "{alert}");
    assert_eq!(alert["labels"]["severity"], "critical", "{alert}");
    // (up.sh also restarts node B if it lost its API meanwhile, and reconnects the two)
    bed.up(&["ipfs-a", "ipfs-b"]);
    wait_prom(
        &prom,
        "the IPFS link up again",
        Duration::from_secs(30),
        "vigil_link_up{link=\"ipfs\"}",
        |v| v == 1.0,
    );
    wait_prom(
        &prom,
        "the backlog drained",
        Duration::from_secs(60),
        backlog,
        |v| v == 0.0,
    );

    // 3. Another writer fills the disk to below retention's floor (min_free 50 % here, so that deleting every
    // segment cannot bring it back; above the 1 % critical floor): the disk-low alert fires.
    let (free, total) = vigil::retention::disk_space(fs.path()).unwrap();
    let leave = total * 30 / 100;
    let filler = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; (free - leave) as usize]).unwrap();
    wait_prom(
        &prom,
        "free space under the floor",
        Duration::from_secs(20),
        &format!(
            "vigil_disk_free_bytes{{{origin}}} / vigil_disk_size_bytes < vigil_retention_min_free_ratio"
        ),
        |_| true,
    );
    let alert = wait_firing(&prom, "VigilDiskLow", Duration::from_secs(20));
    assert_eq!(alert["labels"]["instance"], vigil.addr.as_str(), "{alert}");
    assert_eq!(alert["labels"]["severity"], "warning", "{alert}");
    assert!(prom.firing("VigilDiskCritical").is_empty());
    std::fs::remove_file(&filler).unwrap();
    wait_prom(
        &prom,
        "retention deleted footage while the disk was low",
        Duration::from_secs(20),
        &format!("sum(vigil_retention_deleted_segments_total{{{origin}}})"),
        |v| v > 0.0,
    );

    // 4. Every expression of the dashboards and the rules evaluates without error; the dashboards' panels
    // have data, except escalations (none happened) and filters that are empty on a healthy node.
    let mut checked = 0;
    for f in dashboard_files() {
        for (title, expr) in dashboard_exprs(&f) {
            let r = prom
                .try_query(&expr)
                .unwrap_or_else(|e| panic!("{}: {title}: {expr}: {e}", f.display()));
            let may_be_empty = ["escalations", "== 0"].iter().any(|k| expr.contains(k));
            assert!(
                may_be_empty || !r.is_empty(),
                "{}: panel {title:?}: no data for {expr}\nup: {:?}\nscrape samples: {:?}\n{}",
                f.display(),
                prom.query("up[20s]"),
                prom.query("scrape_duration_seconds[20s]"),
                http_get(&vigil.addr, "/metrics").text()
            );
            checked += 1;
        }
    }
    for (alert, expr) in rule_exprs(&rules_text) {
        prom.try_query(&expr)
            .unwrap_or_else(|e| panic!("alert {alert}: {expr}: {e}"));
        checked += 1;
    }
    assert!(checked > 45, "{checked} expressions");
    figure(
        "metrics",
        &format!(
            "{checked} PromQL expressions of dashboards/ evaluated against a real Prometheus scraping vigil"
        ),
    );
    drop(prom);
    mirror.stop();
    vigil.stop();
}
