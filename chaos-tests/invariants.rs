//! The design's invariants, checked after a scenario from what is on disk and in the catalog (vigil stopped):
//! every byte ffmpeg wrote is catalogued (2, 7), no segment was overwritten or catalogued twice (1, 2), every
//! session join is marked in the playlist with a correct DISCONTINUITY-SEQUENCE and the playlist parses as RFC
//! 8216 (3).

use std::collections::{HashMap, HashSet};
use std::path::Path;

/// What the capture invariants found for one camera.
#[derive(Debug, Default)]
pub struct CaptureReport {
    /// Session folders.
    pub sessions: usize,
    /// `EXT-X-DISCONTINUITY` tags in the camera's VOD of everything it recorded.
    pub joins: usize,
    /// Bytes of `.ts` files in session folders that the catalog does not list.
    pub uncatalogued_bytes: u64,
    /// Catalogued segments whose file is not the size the catalog recorded (overwritten or cut).
    pub overwritten: usize,
    /// Catalogue rows for a (session, seq) or a file that another row has too.
    pub duplicated: usize,
    /// Footage lost at each join: the gap between a session's last segment's end and the next one's start (s),
    /// sorted.
    pub gaps_s: Vec<f64>,
    /// Everything wrong, in words.
    pub problems: Vec<String>,
}

impl CaptureReport {
    /// Panics with every problem unless the camera's footage is whole.
    pub fn assert_clean(&self) {
        assert!(
            self.problems.is_empty()
                && self.uncatalogued_bytes == 0
                && self.overwritten == 0
                && self.duplicated == 0,
            "invariants broken: {self:#?}"
        );
    }
}

/// Check camera `cam`'s footage under `data` (vigil stopped).
pub fn capture(data: &Path, cam: &str) -> CaptureReport {
    let mut r = CaptureReport::default();
    let catalog = super::support::catalog(data);
    let rows = catalog.all(cam).unwrap();
    let folders = vigil::capture::session::list(&data.join(cam));
    r.sessions = folders.len();
    // Catalogued: each file there, at its catalogued size, once.
    let mut keys = HashSet::new();
    let mut paths = HashSet::new();
    for row in &rows {
        if !keys.insert((row.session.clone(), row.seq)) || !paths.insert(row.path.clone()) {
            r.duplicated += 1;
            r.problems.push(format!(
                "{} ({} #{}) catalogued twice",
                row.path, row.session, row.seq
            ));
        }
        match std::fs::metadata(data.join(&row.path)) {
            Ok(m) if m.len() as i64 == row.bytes => {}
            Ok(m) => {
                r.overwritten += 1;
                r.problems.push(format!(
                    "{}: {} bytes on disk, {} catalogued",
                    row.path,
                    m.len(),
                    row.bytes
                ));
            }
            Err(e) => r.problems.push(format!("{}: catalogued but {e}", row.path)),
        }
    }
    // On disk: every segment file ffmpeg wrote is in the catalog.
    for (_, folder) in &folders {
        for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.extension().is_none_or(|e| e != "ts") {
                continue;
            }
            let rel = p.strip_prefix(data).unwrap().to_string_lossy().into_owned();
            if !paths.contains(&rel) {
                let len = entry.metadata().map_or(0, |m| m.len());
                r.uncatalogued_bytes += len;
                r.problems
                    .push(format!("{rel}: {len} bytes written, not catalogued"));
            }
        }
    }
    // Joins: the VOD of everything is valid HLS with one discontinuity per session change.
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let text = vigil::playlists::vod(
            &catalog,
            cam,
            first.start_ms,
            last.start_ms + last.duration_ms,
            true,
            4,
            vigil::playlists::Uris::Ids,
        )
        .unwrap();
        match m3u8_rs::parse_media_playlist_res(text.as_bytes()) {
            Ok(pl) => {
                r.joins = pl.segments.iter().filter(|s| s.discontinuity).count();
                if pl.segments.len() != rows.len() {
                    r.problems.push(format!(
                        "the VOD lists {} segments, the catalog {}",
                        pl.segments.len(),
                        rows.len()
                    ));
                }
                if pl.discontinuity_sequence != 0 {
                    r.problems.push(format!(
                        "a VOD from the first segment has DISCONTINUITY-SEQUENCE {}",
                        pl.discontinuity_sequence
                    ));
                }
                let longest = pl
                    .segments
                    .iter()
                    .map(|s| s.duration)
                    .fold(0.0_f32, f32::max);
                if (pl.target_duration as f32) < longest.round() {
                    r.problems.push(format!(
                        "TARGETDURATION {} below an EXTINF of {longest}",
                        pl.target_duration
                    ));
                }
            }
            Err(e) => r.problems.push(format!("the VOD does not parse: {e}")),
        }
        // Where sessions meet, and the footage lost there.
        let mut by_session: HashMap<&str, (i64, i64)> = HashMap::new();
        for row in &rows {
            let e = by_session
                .entry(&row.session)
                .or_insert((row.start_ms, row.start_ms + row.duration_ms));
            e.0 = e.0.min(row.start_ms);
            e.1 = e.1.max(row.start_ms + row.duration_ms);
        }
        let mut spans: Vec<(i64, i64)> = by_session.into_values().collect();
        spans.sort();
        r.gaps_s = spans
            .windows(2)
            .map(|w| (w[1].0 - w[0].1).max(0) as f64 / 1000.0)
            .collect();
        r.gaps_s.sort_by(f64::total_cmp);
        let with_footage = spans.len();
        if r.joins + 1 != with_footage {
            r.problems.push(format!(
                "{with_footage} sessions with footage but {} joins marked",
                r.joins
            ));
        }
    }
    r
}

/// A logged-in browser session on a vigil (cookie), for the scope invariant.
pub struct Login {
    addr: String,
    cookie: String,
}

impl Login {
    /// Log in as `user`; panics unless vigil accepts.
    pub fn new(addr: &str, user: &str, password: &str) -> Login {
        let body = serde_json::json!({ "username": user, "password": password }).to_string();
        let r = super::support::http(
            addr,
            "POST",
            "/api/login",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        );
        assert_eq!(r.status, 200, "login as {user}: {}", r.text());
        let cookie = r.header("set-cookie").expect("a session cookie");
        Login {
            addr: addr.to_string(),
            cookie: cookie.split(';').next().unwrap().to_string(),
        }
    }

    pub fn get(&self, path: &str) -> super::support::Response {
        super::support::http(&self.addr, "GET", path, &[("Cookie", &self.cookie)], b"")
    }

    /// The state `/api/cameras` shows for camera `id` ("?" if it is not listed).
    pub fn state_of(&self, id: &str) -> String {
        let api: serde_json::Value = serde_json::from_slice(&self.get("/api/cameras").body)
            .expect("/api/cameras answers JSON");
        api.as_array()
            .into_iter()
            .flatten()
            .find(|c| c["id"] == id)
            .and_then(|c| c["state"].as_str())
            .unwrap_or("?")
            .to_string()
    }
}

/// A playlist's segment URIs as paths on the node (relative ones resolved against the camera's folder).
fn segment_paths(cam: &str, playlist: &str) -> Vec<String> {
    super::support::playlist_uris(playlist)
        .into_iter()
        .map(|u| {
            if u.starts_with('/') {
                u
            } else {
                format!("/cameras/{cam}/{u}")
            }
        })
        .collect()
}

/// No footage outside its owner's scope: `tenant` (a client allowed only `own`) lists and plays its camera,
/// and gets none of `others`' playlists or segments (their segment paths as `admin` sees them), by any route.
/// Returns what was wrong, in words.
pub fn scope(tenant: &Login, admin: &Login, own: &str, others: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    let listed: Vec<String> =
        serde_json::from_slice::<serde_json::Value>(&tenant.get("/api/cameras").body)
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c["id"].as_str().map(str::to_string))
            .collect();
    if listed != [own] {
        problems.push(format!(
            "the client's /api/cameras lists {listed:?}, not just {own}"
        ));
    }
    let live = tenant.get(&format!("/cameras/{own}/live.m3u8"));
    match segment_paths(own, &live.text()).first() {
        Some(seg) if live.status == 200 => {
            let r = tenant.get(seg);
            if r.status != 200 {
                problems.push(format!(
                    "the client cannot play its own {seg}: {}",
                    r.status
                ));
            }
        }
        _ => problems.push(format!("the client's own live playlist: {}", live.status)),
    }
    let now = chrono::Utc::now();
    let day = now.format("%Y-%m-%d");
    let from =
        (now - chrono::Duration::hours(1)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    for other in others {
        let mut paths = vec![
            format!("/cameras/{other}/live.m3u8"),
            format!("/cameras/{other}/day.m3u8?date={day}"),
            format!("/cameras/{other}/vod.m3u8?from={from}&to={to}"),
            format!("/cameras/{other}/index.json"),
        ];
        let theirs = admin.get(&format!("/cameras/{other}/live.m3u8"));
        paths.extend(segment_paths(other, &theirs.text()).into_iter().take(2));
        for p in paths {
            let r = tenant.get(&p);
            if r.status == 200 || !(400..500).contains(&r.status) {
                problems.push(format!("the client got {p}: {}", r.status));
            }
        }
    }
    problems
}
