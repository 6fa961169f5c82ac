//! Logins and the authorization guard on a real `vigil run` recording the test-bed camera: a tenant matrix over
//! EVERY route of `guard::ROUTES` (clients never reach another's cameras; out-of-scope answers exactly like
//! unknown), CSRF on state-changing routes, an odd-input and path-traversal corpus against every route with a
//! path or query parameter, brute force slowed then refused, and no password, token or cookie in the logs.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use support::*;
use vigil::web::guard::{Access, PUBLIC, ROUTES};

const PASSWORDS: &[(&str, &str, &[&str])] = &[
    ("root", "admin-pass-0123", &["--role", "admin"]),
    ("devin", "dev-pass-456789", &["--role", "dev"]),
    (
        "alice",
        "alice-pass-1234",
        &["--role", "client", "--camera", "cam1"],
    ),
    (
        "bob",
        "bob-pass-567890",
        &["--role", "client", "--factory", "factory-b"],
    ),
];

struct Node {
    vigil: Vigil,
    config: std::path::PathBuf,
    data: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _cam: Option<Camera>,
}

/// A node with cam1 (factory-a) and cam2 (factory-b), logins on, the users of [`PASSWORDS`].
fn node(extra_auth: &str, with_camera: bool) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    std::fs::write(assets.join("hls.min.js"), "/* hls.js stand-in */").unwrap();
    let cam = with_camera.then(|| Camera::start(2));
    let urls: Vec<(&str, String)> = match &cam {
        Some(c) => vec![("cam1", c.url(1)), ("cam2", c.url(2))],
        None => vec![],
    };
    let mut body = config_with_auth(&data, &urls, "")
        .replace(
            "[http]\n",
            &format!("[http]\nassets_dir = \"{}\"\n", assets.display()),
        )
        .replace(
            "[auth]\nenabled = true\n",
            &format!("[auth]\nenabled = true\n{extra_auth}"),
        );
    // cam2 belongs to another factory.
    if let Some(i) = body.rfind("factory_id = \"factory-a\"") {
        if with_camera {
            body.replace_range(i..i + 24, "factory_id = \"factory-b\"");
        }
    }
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, body).unwrap();
    for (name, pw, args) in PASSWORDS {
        let mut a = vec!["user", "add", name, "--password-stdin"];
        a.extend_from_slice(args);
        vigil_cli(&config, &a, &format!("{pw}\n"));
    }
    let vigil = Vigil::start_logging(&config, "debug,notify=warn,h2=info,hyper=info");
    Node {
        vigil,
        config,
        data,
        _dir: dir,
        _cam: cam,
    }
}

/// How a request authenticates.
#[derive(Clone, Debug)]
enum Who {
    Anonymous,
    Cookie { cookie: String, csrf: String },
    Bearer(String),
}

fn login(addr: &str, user: &str, pw: &str) -> Result<Who, Response> {
    let body = serde_json::json!({ "username": user, "password": pw }).to_string();
    let r = http(
        addr,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    if r.status != 200 {
        return Err(r);
    }
    let set = r.header("set-cookie").expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(set.contains(attr), "cookie without {attr}: {set}");
    }
    assert!(!set.contains("Secure"), "no TLS here: {set}");
    let cookie = set.split(';').next().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    Ok(Who::Cookie {
        cookie,
        csrf: v["csrf"].as_str().unwrap().to_string(),
    })
}

fn request(addr: &str, who: &Who, method: &str, path: &str, csrf: bool) -> Response {
    let mut headers: Vec<(&str, String)> = Vec::new();
    match who {
        Who::Anonymous => {}
        Who::Cookie {
            cookie,
            csrf: token,
        } => {
            headers.push(("Cookie", cookie.clone()));
            if csrf {
                headers.push(("X-CSRF-Token", token.clone()));
            }
        }
        Who::Bearer(t) => headers.push(("Authorization", format!("Bearer {t}"))),
    }
    let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http(addr, method, path, &h, b"")
}

fn rfc3339(t: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A well-formed CID given to segment `id` (this node has no IPFS: the IPFS proxy route serves a segment it
/// holds from disk, which is what the matrix needs).
fn fake_cid(id: i64) -> String {
    format!("bafkrei{:0>52}", id)
}

/// The concrete URL of a route pattern for `camera` (its newest segment for `{file}`).
fn url_of(pattern: &str, camera: &str, segment: i64) -> String {
    let now = std::time::SystemTime::now();
    let from = rfc3339(now - Duration::from_secs(600));
    let to = rfc3339(now + Duration::from_secs(60));
    let file = if pattern.ends_with("/ipfs/{file}") {
        format!("{}.ts", fake_cid(segment))
    } else {
        format!("{segment}.ts")
    };
    let path = pattern
        .replace("{camera}", camera)
        .replace("{file}", &file)
        .replace("{rendition}", "low");
    if path.ends_with(".m3u8") && !path.ends_with("/live.m3u8") && !path.ends_with("/day.m3u8")
        || path.ends_with("/download")
        || path.ends_with("/index.json")
    {
        format!("{path}?from={from}&to={to}")
    } else if path == "/assets/{file}" || path.starts_with("/assets/") {
        "/assets/hls.min.js".to_string()
    } else {
        path
    }
}

#[test]
fn every_route_refuses_strangers_and_keeps_clients_to_their_own_cameras() {
    let mut n = node("", true);
    let addr = n.vigil.addr.clone();
    let catalog = catalog(&n.data);
    wait_until("a segment of each camera", Duration::from_secs(30), || {
        catalog.count(Some("cam1")).unwrap() > 0 && catalog.count(Some("cam2")).unwrap() > 0
    });
    let seg = |cam: &str| catalog.all(cam).unwrap().last().unwrap().id;
    let segs: HashMap<&str, i64> = [("cam1", seg("cam1")), ("cam2", seg("cam2"))].into();
    for id in segs.values() {
        catalog
            .mark(vigil::catalog::Stage::Pin, *id, Some(&fake_cid(*id)))
            .unwrap();
    }
    // A transcoded rendition ("low") of each camera's newest segment, for the master and variant routes.
    for (cam, id) in &segs {
        let s = catalog
            .all(cam)
            .unwrap()
            .into_iter()
            .find(|s| s.id == *id)
            .unwrap();
        catalog
            .put_variant(&vigil::index::VariantDoc {
                id: format!("{cam}/{}/{}/low", s.session, s.seq),
                variant_of: format!("{cam}/{}/{}", s.session, s.seq),
                source_cid: fake_cid(*id),
                rendition: "low".into(),
                width: 320,
                height: 180,
                video_kbps: 200,
                cid: fake_cid(*id + 1_000_000),
                factory_id: s.factory.clone(),
                device_id: cam.to_string(),
                session: s.session.clone(),
                seq: s.seq,
                start_ms: s.start_ms,
                end_ms: s.start_ms + s.duration_ms,
                duration_ms: s.duration_ms,
                bytes: s.bytes,
                job_id: "j".into(),
                node_id: "test".into(),
            })
            .unwrap();
    }

    let mut whos: Vec<(&str, Who)> = vec![("anonymous", Who::Anonymous)];
    for (name, pw, _) in PASSWORDS {
        whos.push((name, login(&addr, name, pw).unwrap()));
    }
    let token = vigil_cli(&n.config, &["token", "add", "alice", "--label", "test"], "");
    let token = token.split_whitespace().last().unwrap().to_string();
    assert!(token.starts_with("vgl_"), "{token}");
    // The running node picks the new token up within a second.
    wait_until("the token to work", Duration::from_secs(5), || {
        request(&addr, &Who::Bearer(token.clone()), "GET", "/api/me", false).status == 200
    });
    whos.push(("alice-token", Who::Bearer(token.clone())));
    whos.push((
        "forged-token",
        Who::Bearer(format!("vgl_{}", "A".repeat(43))),
    ));

    // Who may see which camera.
    let sees = |who: &str, cam: &str| match who {
        "root" | "devin" => true,
        "alice" | "alice-token" => cam == "cam1",
        "bob" => cam == "cam2",
        _ => false,
    };
    let role = |who: &str| match who {
        "root" => Some("admin"),
        "devin" => Some("dev"),
        "alice" | "alice-token" | "bob" => Some("client"),
        _ => None,
    };
    let mut checked = 0;
    for (method, pattern, access) in ROUTES {
        if *pattern == "/api/logout" {
            continue; // ends the session: checked below
        }
        let cams: &[&str] = if pattern.contains("{camera}") {
            &["cam1", "cam2"]
        } else {
            &["-"]
        };
        for cam in cams {
            let path = url_of(pattern, cam, segs.get(cam).copied().unwrap_or(0));
            for (who_name, who) in &whos {
                let r = request(&addr, who, method, &path, true);
                let status = r.status;
                let expect: &[u16] = match (access, role(who_name)) {
                    (Access::Public, _) if *method == "POST" => &[400], // /api/login with no body
                    (Access::Public, _) => &[200],
                    // No login: Prometheus' scrape from the box itself (tests/metrics.rs tests the token).
                    (Access::Metrics, _) => &[200],
                    (_, None) if *pattern == "/" => &[302],
                    (_, None) => &[401],
                    (Access::User, Some(_)) => &[200],
                    (Access::Staff, Some("admin" | "dev")) => &[200],
                    (Access::Staff, Some(_)) => &[403],
                    (Access::Admin, Some("admin")) => &[200],
                    (Access::Admin, Some(_)) => &[403],
                    (Access::Camera, Some(_)) if sees(who_name, cam) => &[200],
                    (Access::Camera, Some(_)) => &[404],
                };
                assert!(
                    expect.contains(&status),
                    "{who_name} {method} {path}: {status} (expected {expect:?}): {}",
                    r.text()
                );
                if *access == Access::Camera && status == 404 {
                    // Exactly what an unknown camera gets.
                    let unknown =
                        request(&addr, &whos[1].1, method, &path.replace(cam, "cam7"), true);
                    assert_eq!(unknown.status, 404);
                    assert_eq!(
                        r.text(),
                        unknown.text().replace("cam7", cam),
                        "{who_name} {path}"
                    );
                }
                if status == 401 {
                    assert!(r.text().contains("login required"), "{}", r.text());
                }
                if status == 302 {
                    assert_eq!(r.header("location").as_deref(), Some("/login?next=%2F"));
                }
                checked += 1;
            }
            // Any other method on a guarded route: still refused to strangers (the guard comes first).
            if !matches!(access, Access::Public | Access::Metrics) {
                let r = request(
                    &addr,
                    &Who::Anonymous,
                    "DELETE",
                    &url_of(pattern, cam, 1),
                    false,
                );
                assert_eq!(r.status, 401, "anonymous DELETE {pattern}");
            }
        }
    }
    // Clients list only their cameras.
    for (who_name, who) in &whos[1..5] {
        let r = request(&addr, who, "GET", "/api/cameras", false);
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let ids: Vec<&str> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        let want: Vec<&str> = ["cam1", "cam2"]
            .into_iter()
            .filter(|c| sees(who_name, c))
            .collect();
        assert_eq!(ids, want, "{who_name}");
    }

    // CSRF: a cookie-authenticated POST needs the session's token and a same-origin Origin.
    let alice = whos.iter().find(|(n, _)| *n == "alice").unwrap().1.clone();
    let Who::Cookie { cookie, csrf } = &alice else {
        unreachable!()
    };
    assert_eq!(
        request(&addr, &alice, "POST", "/api/logout", false).status,
        403
    );
    let cross = http(
        &addr,
        "POST",
        "/api/logout",
        &[
            ("Cookie", cookie),
            ("X-CSRF-Token", csrf),
            ("Origin", "http://evil.example"),
        ],
        b"",
    );
    assert_eq!(cross.status, 403, "{}", cross.text());
    assert_eq!(request(&addr, &alice, "GET", "/api/me", false).status, 200);
    let out = request(&addr, &alice, "POST", "/api/logout", true);
    assert_eq!(out.status, 204);
    assert!(
        out.header("set-cookie")
            .unwrap()
            .contains("vigil_session=;")
    );
    assert_eq!(request(&addr, &alice, "GET", "/api/me", false).status, 401);
    assert_eq!(
        request(&addr, &alice, "GET", "/cameras/cam1/live.m3u8", false).status,
        401
    );

    // A removed user's token and sessions stop working at once.
    vigil_cli(&n.config, &["user", "remove", "bob"], "");
    let bob = whos.iter().find(|(n, _)| *n == "bob").unwrap().1.clone();
    wait_until("bob's session to end", Duration::from_secs(5), || {
        request(&addr, &bob, "GET", "/api/me", false).status == 401
    });

    // The audit log has the logins and the logout.
    let r = request(&addr, &whos[1].1, "GET", "/api/audit?limit=50", false);
    let events: Vec<String> = serde_json::from_slice::<serde_json::Value>(&r.body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {}",
                e["event"].as_str().unwrap(),
                e["user"].as_str().unwrap_or("-")
            )
        })
        .collect();
    for e in [
        "login root",
        "login alice",
        "logout alice",
        "user_removed bob",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} not in {events:?}");
    }

    // No secret in the debug log.
    let log = n.vigil.log();
    for (_, pw, _) in PASSWORDS {
        assert!(!log.contains(pw), "a password is in the log");
    }
    assert!(!log.contains(&token), "the token is in the log");
    assert!(
        !log.contains(cookie.split('=').nth(1).unwrap()),
        "a cookie is in the log"
    );
    figure(
        "auth",
        &format!(
            "tenant matrix: {checked} requests over {} routes × {} identities",
            ROUTES.len(),
            whos.len()
        ),
    );
    n.vigil.stop();
}

#[test]
fn odd_input_gets_a_clear_4xx_and_never_escapes_the_data_folder() {
    let mut n = node("", true);
    let addr = n.vigil.addr.clone();
    let catalog = catalog(&n.data);
    wait_until("a segment", Duration::from_secs(30), || {
        catalog.count(Some("cam1")).unwrap() > 0
    });
    let root = login(&addr, "root", "admin-pass-0123").unwrap();
    let alice = login(&addr, "alice", "alice-pass-1234").unwrap();
    let key = std::fs::read(n.data.join("auth.key")).unwrap();
    let long = "a".repeat(5000);
    let corpus: Vec<String> = vec![
        "/cameras/..%2F..%2Fetc/live.m3u8".into(),
        "/cameras/%2e%2e/live.m3u8".into(),
        "/cameras/cam1/segments/..%2F..%2Fcatalog.sqlite".into(),
        "/cameras/cam1/segments/%2e%2e%2fauth.key".into(),
        "/cameras/cam1/segments/..%5c..%5cauth.key".into(),
        "/cameras/cam1/segments/1%00.ts".into(),
        "/cameras/cam1/segments/-1.ts".into(),
        "/cameras/cam1/segments/99999999999999999999999999.ts".into(),
        "/cameras/cam1/segments/%F0%9F%98%80.ts".into(),
        format!("/cameras/{long}/live.m3u8"),
        "/cameras/c%C3%A4m/live.m3u8".into(),
        "/cameras/cam1%00/live.m3u8".into(),
        "/cameras/cam1/day.m3u8?date=2026-02-30".into(),
        "/cameras/cam1/day.m3u8?date=%00".into(),
        "/cameras/cam1/day.m3u8?date=99999-01-01".into(),
        "/cameras/cam1/day.m3u8?date=-0001-01-01".into(),
        "/cameras/cam1/spans?date=2026-13-01".into(),
        format!("/cameras/cam1/spans?date={long}"),
        "/cameras/cam1/vod.m3u8?from=0000-01-01T00:00:00Z&to=9999-12-31T23:59:59Z".into(),
        "/cameras/cam1/vod.m3u8?from=garbage&to=2026-01-01T00:00:00Z".into(),
        "/cameras/cam1/vod.m3u8?from=2026-01-02T00:00:00Z&to=2026-01-01T00:00:00Z".into(),
        "/cameras/cam1/vod.m3u8".into(),
        "/cameras/cam1/download?from=1970-01-01T00:00:00Z&to=2262-01-01T00:00:00Z".into(),
        "/cameras/cam1/download?from=%E2%80%AE&to=x".into(),
        "/assets/..%2F..%2Fdata%2Fcatalog.sqlite".into(),
        "/assets/%2e%2e/vigil.toml".into(),
        "/assets/../../vigil.toml".into(),
        "/api/audit?limit=-1".into(),
        "/api/audit?limit=99999999999999999999".into(),
        "/cameras/cam1/live.m3u8/..%2f..%2fapi%2faudit".into(),
    ];
    let mut answers = HashMap::new();
    for path in &corpus {
        for (who, w) in [("root", &root), ("alice", &alice)] {
            let r = request(&addr, w, "GET", path, false);
            assert!(
                (400..500).contains(&r.status)
                    || (r.status == 200 && path.starts_with("/api/audit")),
                "{who} GET {path}: {} {}",
                r.status,
                r.text()
            );
            assert!(
                !r.body.windows(key.len()).any(|w| w == key.as_slice()),
                "{path} leaked the key"
            );
            assert!(
                !r.text().contains("SQLite format"),
                "{path} leaked the catalog"
            );
            assert!(!r.text().contains("[auth]"), "{path} leaked the config");
            *answers.entry(r.status).or_insert(0) += 1;
        }
    }
    // A client never learns about cam2 through odd spellings either.
    for path in [
        "/cameras/cam2/live.m3u8",
        "/cameras/cam2/segments/1.ts",
        "/cameras/%63am2/live.m3u8",
    ] {
        assert_eq!(
            request(&addr, &alice, "GET", path, false).status,
            404,
            "{path}"
        );
    }
    // A malformed login.
    for body in [&b"{"[..], b"{\"username\": 1}", b"null", &[0xff, 0xfe][..]] {
        let r = http(
            &addr,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body,
        );
        assert_eq!(r.status, 400, "{}", r.text());
    }
    let huge = format!(
        "{{\"username\":\"alice\",\"password\":\"{}\"}}",
        "x".repeat(100_000)
    );
    let r = http(
        &addr,
        "POST",
        "/api/login",
        &[("Content-Type", "application/json")],
        huge.as_bytes(),
    );
    assert!((400..500).contains(&r.status), "{}", r.status);
    // The node is still fine.
    assert_eq!(http_get(&addr, "/healthz").status, 200);
    figure(
        "auth",
        &format!(
            "odd-input corpus: {} requests, answers {answers:?}, 0 escapes, no 5xx",
            corpus.len() * 2
        ),
    );
    n.vigil.stop();
}

#[test]
fn brute_force_is_slowed_then_refused_and_passwords_stay_out_of_the_logs() {
    let mut n = node(
        "slow_after_failures = 3\nlock_after_failures = 6\nlock_address_after_failures = 8\n",
        false,
    );
    let addr = n.vigil.addr.clone();
    let mut times = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..8 {
        let t = Instant::now();
        let r = login(&addr, "alice", &format!("guess-number-{i}")).unwrap_err();
        times.push(t.elapsed());
        statuses.push(r.status);
        if r.status == 429 {
            assert!(r.header("retry-after").unwrap().parse::<u64>().unwrap() > 0);
        }
    }
    assert_eq!(
        statuses,
        [401, 401, 401, 401, 401, 401, 429, 429],
        "{times:?}"
    );
    // Quick at first (argon2 only), then a second more per failure.
    assert!(times[0] < Duration::from_millis(900), "{times:?}");
    assert!(times[4] >= Duration::from_secs(2), "{times:?}");
    // Refused even with the right password now.
    assert_eq!(
        login(&addr, "alice", "alice-pass-1234").unwrap_err().status,
        429
    );
    // Another user from the same address still gets in (an office shares an address)…
    assert!(login(&addr, "devin", "dev-pass-456789").is_ok());
    // …until the address itself has failed 8 times (alice's 6, then these two).
    assert_eq!(login(&addr, "nobody", "x").unwrap_err().status, 401);
    assert_eq!(login(&addr, "nobody2", "x").unwrap_err().status, 401);
    assert_eq!(
        login(&addr, "root", "admin-pass-0123").unwrap_err().status,
        429
    );
    // The audit log (read from the catalog: no admin can log in from here now) has every failure.
    let c = catalog(&n.data);
    let fails = wait_until("the audit lines", Duration::from_secs(5), || {
        c.audit_log(100)
            .unwrap()
            .iter()
            .filter(|e| e.event == "login_failed")
            .count()
            == 8
    });
    let _ = fails;
    let log = n.vigil.log();
    for i in 0..8 {
        assert!(
            !log.contains(&format!("guess-number-{i}")),
            "a guess is in the log"
        );
    }
    assert!(!log.contains("alice-pass-1234"));
    assert!(log.contains("login_failed"), "failures are logged");
    figure(
        "auth",
        &format!(
            "brute force: answers {statuses:?} in {:?}",
            times
                .iter()
                .map(|t| format!("{:.2}s", t.as_secs_f64()))
                .collect::<Vec<_>>()
        ),
    );
    n.vigil.stop();
}

#[test]
fn public_paths_are_only_the_documented_ones() {
    let public: Vec<&str> = ROUTES
        .iter()
        .filter(|(_, _, a)| *a == Access::Public)
        .map(|(_, p, _)| *p)
        .collect();
    for p in PUBLIC {
        assert!(public.contains(p), "{p}");
    }
    assert_eq!(public.len(), PUBLIC.len() + 1, "{public:?} (+ /assets/)");
}
