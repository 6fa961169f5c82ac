//! The control plane on a real RabbitMQ (a private broker per test, loopback only) with real vigil, ffmpeg and
//! the simulated camera: `vigil ctl` adds, changes and removes cameras at run time, the state survives a
//! restart, redeliveries are applied once, a corpus of bad commands is refused with reasons and dead-lettered
//! without changing anything or leaking a secret, and a broker restart mid-stream loses no command and applies
//! none twice. Needs `testbed/install.sh` (rabbitmq, ffmpeg, camera); FAILS without.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use support::bed::Bed;
use support::browser::{browser_check, node_modules};
use support::rabbitmq::{Broker, drain};
use support::*;
use vigil::control::command::{Draft, Key, Private};

const SECRET: &str = "Sup3rSecretPw";

struct Node {
    _dir: tempfile::TempDir,
    config: PathBuf,
    data: PathBuf,
    key: PathBuf,
}

fn node(broker: &Broker, extra: &str) -> Node {
    node_with(broker, &[], "", extra)
}

/// A node recording `cameras`, with `top` (tables before [control]) and `extra` (keys of [control]).
fn node_with(broker: &Broker, cameras: &[(&str, String)], top: &str, extra: &str) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("fleet.key");
    let out = Command::new(VIGIL)
        .args(["ctl", "keygen"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = config(
        &data,
        cameras,
        &format!(
            "{top}[control]\namqp_url = \"{}\"\nkey_file = \"{}\"\nheartbeat_seconds = 1\n{extra}",
            broker.url(),
            key.display()
        ),
    );
    let config = dir.path().join("vigil.toml");
    std::fs::write(&config, text).unwrap();
    Node {
        _dir: dir,
        config,
        data,
        key,
    }
}

/// `vigil ctl ARGS --config CONFIG` with `stdin`: exit code and what it printed.
fn ctl(config: &Path, args: &[&str], stdin: &str) -> (i32, String) {
    let all: Vec<&str> = std::iter::once("ctl").chain(args.iter().copied()).collect();
    vigil_try(config, &all, stdin)
}

fn reply(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not a reply ({e}): {text}"))
}

fn segments(data: &Path, cam: &str) -> usize {
    catalog(data)
        .count(Some(cam))
        .map(|n| n as usize)
        .unwrap_or(0)
}

fn connected(v: &mut Vigil, broker: &Broker) {
    if v.find_line("control plane connected", Duration::from_secs(30))
        .is_none()
    {
        panic!(
            "the node did not connect within 30 s; its log:\n{}\nthe broker's:\n{}",
            v.log(),
            broker.log()
        );
    }
}

fn add_camera(n: &Node, cam: &Camera, id: &str, mount: usize) -> (i32, String) {
    // The simulator's URL with its credentials taken out: they go in the private part.
    let url = cam.url(mount).replace(&format!("user:{SECRET}@"), "");
    ctl(
        &n.config,
        &[
            "camera",
            "add",
            "--node",
            "test",
            "--id",
            id,
            "--factory",
            "factory-a",
            "--url",
            &url,
            "--username",
            "user",
            "--password-stdin",
        ],
        &format!("{SECRET}\n"),
    )
}

#[test]
fn commands_add_change_and_remove_cameras_and_the_state_survives_a_restart() {
    let broker = Broker::start();
    let cam = Camera::start_with(2, &["--auth", &format!("user:{SECRET}")]);
    let n = node(&broker, "");
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    assert_eq!(v.get("/api/cameras").text(), "[]");

    // camera.add → it records within seconds.
    let t0 = Instant::now();
    let (code, out) = add_camera(&n, &cam, "cam1", 1);
    assert_eq!(code, 0, "{out}");
    let r = reply(&out);
    assert_eq!(r["ok"], true, "{out}");
    let round_trip = t0.elapsed();
    let first = wait_until(
        "cam1's first finished segment",
        Duration::from_secs(30),
        || segments(&n.data, "cam1") >= 1,
    );
    figure(
        "control",
        &format!(
            "camera.add by command: reply after {} ms, first finished segment {:.1} s after sending",
            round_trip.as_millis(),
            (round_trip + first).as_secs_f64()
        ),
    );
    assert!(v.get("/api/cameras").text().contains("\"cam1\""));
    let m = v.get("/metrics").text();
    assert!(m.contains("vigil_link_up{link=\"amqp\"} 1"), "{m}");
    assert!(
        m.contains("vigil_control_commands_total{result=\"ok\"} 1"),
        "{m}"
    );
    assert_eq!(ffmpeg_under(&n.data.join("cam1")).len(), 1);

    // The same signed command again (a redelivery): answered from memory, applied once.
    let key = Key::load(&n.key).unwrap();
    let mut public = serde_json::Map::new();
    public.insert(
        "camera".into(),
        serde_json::json!({"id": "cam2", "factory_id": "factory-a",
            "url": cam.url(2).replace(&format!("user:{SECRET}@"), "")}),
    );
    let mut private = Private::default();
    private.insert("username", "user");
    private.insert("password", SECRET);
    let draft = Draft {
        id: "add-cam2-once".into(),
        kind: "camera.add".into(),
        node: "test".into(),
        issued_at: chrono::Utc::now().to_rfc3339(),
        public,
        private,
    };
    let signed = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(signed.path(), draft.sign(&key)).unwrap();
    let path = signed.path().to_str().unwrap();
    let (code, out) = ctl(&n.config, &["send", "--raw", "--node", "test", path], "");
    assert_eq!(
        (code, reply(&out)["duplicate"].clone()),
        (0, false.into()),
        "{out}"
    );
    let (code, out) = ctl(&n.config, &["send", "--raw", "--node", "test", path], "");
    let r = reply(&out);
    assert_eq!(
        (code, r["ok"].clone(), r["duplicate"].clone()),
        (0, true.into(), true.into()),
        "{out}"
    );
    wait_until("cam2 recording", Duration::from_secs(30), || {
        segments(&n.data, "cam2") >= 1
    });
    assert_eq!(ffmpeg_under(&n.data.join("cam2")).len(), 1, "applied once");

    // camera.update restarts it with the new settings: a new session folder, one ffmpeg.
    let before = sessions(&n.data, "cam2").len();
    let (code, out) = ctl(
        &n.config,
        &[
            "camera",
            "update",
            "--node",
            "test",
            "--id",
            "cam2",
            "--factory",
            "factory-a",
            "--url",
            &cam.url(2),
            "--username",
            "user",
            "--password-stdin",
            "--segment-seconds",
            "4",
        ],
        &format!("{SECRET}\n"),
    );
    assert_eq!(code, 0, "{out}");
    wait_until(
        "cam2 recording in a new session",
        Duration::from_secs(30),
        || {
            sessions(&n.data, "cam2").len() > before
                && ffmpeg_under(&n.data.join("cam2")).len() == 1
        },
    );

    // camera.add of a camera that exists: the same settings are "recorded already" (a resend is harmless),
    // other settings a conflict (camera.update changes them); nothing changes either way.
    let (code, out) = add_camera(&n, &cam, "cam1", 1);
    assert_eq!((code, reply(&out)["ok"].clone()), (0, true.into()), "{out}");
    assert!(
        out.contains("recorded with these settings already"),
        "{out}"
    );
    let (code, out) = ctl(
        &n.config,
        &[
            "camera",
            "add",
            "--node",
            "test",
            "--id",
            "cam1",
            "--factory",
            "factory-b",
            "--url",
            &cam.url(1),
        ],
        "",
    );
    assert_eq!(
        (code, reply(&out)["reason"].clone()),
        (1, "conflict".into()),
        "{out}"
    );
    assert_eq!(ffmpeg_under(&n.data.join("cam1")).len(), 1);

    // camera.remove → ffmpeg gone, the footage stays served.
    let before = segments(&n.data, "cam1");
    let (code, out) = ctl(
        &n.config,
        &["camera", "remove", "--node", "test", "--id", "cam1"],
        "",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        ffmpeg_under(&n.data.join("cam1")).is_empty(),
        "no ffmpeg left"
    );
    let after = segments(&n.data, "cam1");
    assert!(after >= before, "{before} → {after}");
    let day = v.get("/cameras/cam1/day.m3u8");
    assert_eq!(day.status, 200, "{}", day.text());
    assert!(day.text().contains(".ts"), "{}", day.text());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(segments(&n.data, "cam1"), after, "cam1 no longer records");

    // node.status answers with the node's cameras.
    let status = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(status.path(), r#"{"kind": "node.status", "node": "test"}"#).unwrap();
    let (code, out) = ctl(&n.config, &["send", status.path().to_str().unwrap()], "");
    assert_eq!(code, 0, "{out}");
    let s = reply(&out);
    let cams: Vec<(String, bool)> = s["result"]["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["recorded_here"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        cams,
        [("cam1".to_string(), false), ("cam2".to_string(), true)],
        "{out}"
    );

    // Heartbeats: `vigil ctl status` lists the node and its cameras.
    let (code, out) = ctl(&n.config, &["status", "--wait", "3"], "");
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("test  version") && out.contains("cam2"),
        "{out}"
    );

    // A restart keeps what commands did: cam2 records, cam1 does not, and cam1's footage is still served.
    v.stop();
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    let cam2_before = segments(&n.data, "cam2");
    wait_until(
        "cam2 recording after the restart",
        Duration::from_secs(30),
        || segments(&n.data, "cam2") > cam2_before,
    );
    assert!(ffmpeg_under(&n.data.join("cam1")).is_empty());
    assert_eq!(v.get("/cameras/cam1/day.m3u8").status, 200);

    // No secret in the log, in a reply or in the status.
    let log = v.log();
    assert!(
        !log.contains(SECRET),
        "the camera password leaked into the log"
    );
    assert!(!out.contains(SECRET) && !s.to_string().contains(SECRET));
    v.stop();
    let all: String = [v.seen.join("\n")].concat();
    assert!(!all.contains(SECRET));
}

#[test]
fn bad_commands_are_refused_with_a_reason_dead_lettered_and_change_nothing() {
    let broker = Broker::start();
    let n = node(&broker, "");
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    let key = Key::load(&n.key).unwrap();
    let other = Key::from_file_bytes(&[b'k'; 32]).unwrap();
    let now = chrono::Utc::now();
    let draft = |id: &str, kind: &str, node: &str, public: serde_json::Value| {
        let mut private = Private::default();
        private.insert("password", SECRET);
        Draft {
            id: id.into(),
            kind: kind.into(),
            node: node.into(),
            issued_at: now.to_rfc3339(),
            public: public.as_object().cloned().unwrap_or_default(),
            private,
        }
    };
    let cam = |id: &str| serde_json::json!({"camera": {"id": id, "factory_id": "f", "url": "rtsp://127.0.0.1:9/x"}});
    let mut corpus: Vec<(&str, Vec<u8>, &str)> = Vec::new();
    corpus.push(("malformed", b"{\"kind\": ".to_vec(), "malformed"));
    corpus.push(("not an object", b"[\"camera.add\"]".to_vec(), "malformed"));
    let mut unsigned: serde_json::Value =
        serde_json::from_slice(&draft("u1", "camera.add", "test", cam("c1")).sign(&key)).unwrap();
    unsigned.as_object_mut().unwrap().remove("signature");
    corpus.push((
        "unsigned",
        serde_json::to_vec(&unsigned).unwrap(),
        "unsigned",
    ));
    corpus.push((
        "forged (another key)",
        draft("f1", "camera.add", "test", cam("c2")).sign(&other),
        "forged",
    ));
    let mut tampered: serde_json::Value =
        serde_json::from_slice(&draft("f2", "camera.add", "test", cam("c3")).sign(&key)).unwrap();
    tampered["public"]["camera"]["url"] = "rtsp://198.51.100.7/steal".into();
    corpus.push(("tampered", serde_json::to_vec(&tampered).unwrap(), "forged"));
    let mut old = draft("r1", "camera.add", "test", cam("c4"));
    old.issued_at = (now - chrono::Duration::minutes(30)).to_rfc3339();
    corpus.push(("replayed (30 min old)", old.sign(&key), "stale"));
    corpus.push((
        "wrong node",
        draft("w1", "camera.add", "elsewhere", cam("c5")).sign(&key),
        "wrong_node",
    ));
    corpus.push((
        "unknown kind",
        draft("k1", "camera.explode", "test", cam("c6")).sign(&key),
        "unknown_kind",
    ));
    let mut big = draft("o1", "camera.add", "test", cam("c7"));
    big.public.insert("pad".into(), "x".repeat(70_000).into());
    corpus.push(("oversize", big.sign(&key), "oversize"));
    corpus.push((
        "invalid camera id",
        draft("i1", "camera.add", "test", cam("../etc")).sign(&key),
        "invalid",
    ));
    corpus.push((
        "credentials in the public URL",
        draft(
            "i2",
            "camera.add",
            "test",
            serde_json::json!({"camera": {"id": "c8", "factory_id": "f",
                "url": format!("rtsp://admin:{SECRET}@127.0.0.1:9/x")}}),
        )
        .sign(&key),
        "invalid",
    ));
    corpus.push((
        "remove an unknown camera",
        Draft {
            private: Private::default(),
            ..draft(
                "x1",
                "camera.remove",
                "test",
                serde_json::json!({"camera_id": "ghost"}),
            )
        }
        .sign(&key),
        "conflict",
    ));
    let mut applied = 0;
    for (name, body, want) in &corpus {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), body).unwrap();
        let (code, out) = ctl(
            &n.config,
            &[
                "send",
                "--raw",
                "--node",
                "test",
                f.path().to_str().unwrap(),
            ],
            "",
        );
        let r = reply(&out);
        if r["ok"] == true {
            applied += 1;
        }
        assert_eq!(code, 1, "{name}: {out}");
        assert_eq!(r["reason"], *want, "{name}: {out}");
        assert!(
            !r["detail"].as_str().unwrap_or("").is_empty(),
            "{name}: {out}"
        );
        assert!(
            !out.contains(SECRET),
            "{name}: the reply shows the secret: {out}"
        );
    }
    assert_eq!(applied, 0);
    assert_eq!(v.get("/api/cameras").text(), "[]", "nothing changed");
    // Every refused command is in the dead-letter queue, with RabbitMQ's x-death saying where it came from.
    let dead = drain(&broker.url(), "vigil.dead");
    assert_eq!(
        dead.len(),
        corpus.len(),
        "{:?}",
        dead.iter().map(|d| d.1.clone()).collect::<Vec<_>>()
    );
    for (body, headers) in &dead {
        assert!(
            headers.contains("x-first-death-queue=vigil.node.test")
                && headers.contains("x-first-death-reason=rejected"),
            "{headers}"
        );
        assert!(corpus.iter().any(|(_, b, _)| b == body));
    }
    v.stop();
    let log = v.seen.join("\n");
    assert!(!log.contains(SECRET), "a secret reached the log");
    let refused = log.matches("command refused").count();
    assert_eq!(refused, corpus.len(), "{log}");
    figure(
        "control",
        &format!(
            "bad commands: {} sent, 0 applied, {} dead-lettered, each answered with its reason",
            corpus.len(),
            dead.len()
        ),
    );
}

/// Publish `bodies` to `node`'s queue as persistent messages, each confirmed by the broker (so they are in the
/// durable queue before anything else happens), optionally with a reply queue.
async fn publish_confirmed(
    ch: &lapin::Channel,
    node: &str,
    bodies: &[(String, Vec<u8>)],
    reply_to: Option<&str>,
) {
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    for (id, body) in bodies {
        let mut props = lapin::BasicProperties::default()
            .with_delivery_mode(2)
            .with_correlation_id(id.as_str().into());
        if let Some(r) = reply_to {
            props = props.with_reply_to(r.into());
        }
        ch.basic_publish(
            "vigil.control".into(),
            node.into(),
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
}

fn signed(key: &Key, id: &str, kind: &str, public: serde_json::Value) -> Vec<u8> {
    Draft {
        id: id.into(),
        kind: kind.into(),
        node: "test".into(),
        issued_at: chrono::Utc::now().to_rfc3339(),
        public: public.as_object().cloned().unwrap_or_default(),
        private: Private::default(),
    }
    .sign(key)
}

#[test]
fn a_broker_restart_mid_stream_loses_no_command_and_applies_none_twice() {
    let mut broker = Broker::start();
    let n = node(&broker, "");
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    let key = Key::load(&n.key).unwrap();
    // Cameras nobody answers for (port 9 is closed): applying them is real (a supervisor each), recording is
    // not the point here.
    let commands: Vec<(String, Vec<u8>)> = (0..8)
        .map(|i| {
            let id = format!("restart-{i}");
            let body = signed(
                &key,
                &id,
                "camera.add",
                serde_json::json!({"camera": {"id": format!("c{i}"), "factory_id": "f", "url": "rtsp://127.0.0.1:9/x"}}),
            );
            (id, body)
        })
        .collect();
    rt().block_on(async {
        let conn =
            lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let ch = conn.create_channel().await.unwrap();
        publish_confirmed(&ch, "test", &commands, None).await;
        let _ = conn.close(200, "done".into()).await;
    });
    // The broker goes down while the node works through them (the node shows the link down), and comes back
    // with its data.
    broker.stop();
    wait_until("the AMQP link shown down", Duration::from_secs(30), || {
        v.get("/metrics")
            .text()
            .contains("vigil_link_up{link=\"amqp\"} 0")
    });
    broker.start_again();
    let c = catalog(&n.data);
    let back = Instant::now();
    let all_applied = || {
        commands
            .iter()
            .all(|(id, _)| c.command_outcome(id).unwrap().is_some_and(|o| o.ok))
    };
    while !all_applied() {
        assert!(
            back.elapsed() < Duration::from_secs(90),
            "not every command applied within 90 s of the broker's return; vigil:\n{}\nbroker:\n{}",
            v.log(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = back.elapsed();
    let cameras: serde_json::Value = serde_json::from_str(&v.get("/api/cameras").text()).unwrap();
    assert_eq!(cameras.as_array().unwrap().len(), 8, "{cameras}");
    v.stop();
    let log = v.seen.join("\n");
    assert!(
        log.matches("control plane connected").count() >= 2,
        "it reconnected: {log}"
    );
    for (id, _) in &commands {
        let applied = log
            .lines()
            .filter(|l| {
                l.contains("command applied")
                    && l.contains(&format!("command={id} "))
                    && l.contains("duplicate=false")
            })
            .count();
        assert_eq!(applied, 1, "{id} applied {applied} times:\n{log}");
    }
    let redelivered = log.matches("duplicate=true").count();
    figure(
        "control",
        &format!(
            "broker restarted with 8 commands queued: all applied exactly once {:.1} s after it was back ({redelivered} redelivery answered from memory)",
            took.as_secs_f64()
        ),
    );
}

#[test]
fn command_round_trip_figures() {
    use futures_util::StreamExt;
    use lapin::options::{BasicConsumeOptions, QueueDeclareOptions};
    let broker = Broker::start();
    let n = node(&broker, "");
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    let key = Key::load(&n.key).unwrap();
    let mut rtts: Vec<Duration> = rt().block_on(async {
        let conn = lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let q = ch
            .queue_declare("".into(), QueueDeclareOptions { exclusive: true, ..Default::default() }, Default::default())
            .await
            .unwrap();
        let mut replies = ch
            .basic_consume(q.name().clone(), "t".into(), BasicConsumeOptions { no_ack: true, ..Default::default() }, Default::default())
            .await
            .unwrap();
        let mut out = Vec::new();
        // Alternately node.status (checked, answered with the status) and camera.update of a camera that is
        // not there (checked, refused, remembered in the catalog, dead-lettered).
        for i in 0..200 {
            let (kind, public) = if i % 2 == 0 {
                ("node.status", serde_json::json!({}))
            } else {
                ("camera.update", serde_json::json!({"camera": {"id": "nope", "factory_id": "f", "url": "rtsp://127.0.0.1:9/x"}}))
            };
            let id = format!("rtt-{i}");
            let t = Instant::now();
            publish_confirmed(&ch, "test", &[(id.clone(), signed(&key, &id, kind, public))], Some(q.name().as_str())).await;
            loop {
                let d = tokio::time::timeout(Duration::from_secs(10), replies.next()).await.unwrap().unwrap().unwrap();
                if d.properties.correlation_id().as_ref().map(|c| c.as_str()) == Some(id.as_str()) {
                    break;
                }
            }
            out.push(t.elapsed());
        }
        let _ = conn.close(200, "done".into()).await;
        out
    });
    rtts.sort();
    let p = |q: f64| rtts[((rtts.len() as f64 * q) as usize).min(rtts.len() - 1)];
    assert!(p(0.5) < Duration::from_secs(5));
    figure(
        "control",
        &format!(
            "command round trip (publish confirmed → checked → applied or refused → reply), debug build, 200 commands: p50 {:.1} ms, p99 {:.1} ms",
            p(0.5).as_secs_f64() * 1000.0,
            p(0.99).as_secs_f64() * 1000.0
        ),
    );
    v.stop();
}

/// Width and height of the first video stream of `file`.
fn video_size(file: &Path) -> (u32, u32) {
    let out = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // mpegts lists the stream under its program too: the first line is enough.
    let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut it = first
        .trim()
        .split(',')
        .map(|v| v.parse::<u32>().unwrap_or(0));
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

fn send_json(n: &Node, body: serde_json::Value) -> (i32, serde_json::Value) {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), body.to_string()).unwrap();
    let (code, out) = ctl(&n.config, &["send", f.path().to_str().unwrap()], "");
    (code, reply(&out))
}

fn metric(v: &Vigil, name: &str) -> Option<f64> {
    v.get("/metrics")
        .text()
        .lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|x| x.parse().ok())
}

#[test]
fn a_transcoder_job_makes_renditions_that_play_in_chromium_and_roles_switch_at_run_time() {
    let broker = Broker::start();
    let bed = Bed::start(&["ipfs-a"]);
    let cam = Camera::start(1);
    let modules = node_modules();
    let n = node_with(
        &broker,
        &[("cam1", cam.url(1))],
        &format!("[ipfs]\napi = \"{}\"\ntimeout_seconds = 20\n", bed.ipfs_a),
        "",
    );
    // The player's hls.js.
    let text = std::fs::read_to_string(&n.config).unwrap().replace(
        "[http]\n",
        &format!(
            "[http]\nassets_dir = \"{}\"\n",
            modules.join("hls.js/dist").display()
        ),
    );
    std::fs::write(&n.config, text).unwrap();
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    // Job events arrive on the events exchange.
    // (A named queue outlives this connection: read later with another.)
    rt().block_on(async {
        use lapin::options::{QueueBindOptions, QueueDeclareOptions};
        let conn =
            lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let ch = conn.create_channel().await.unwrap();
        ch.queue_declare(
            "test-events".into(),
            QueueDeclareOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        ch.queue_bind(
            "test-events".into(),
            "vigil.events".into(),
            "job.#".into(),
            QueueBindOptions::default(),
            Default::default(),
        )
        .await
        .unwrap();
        let _ = conn.close(200, "done".into()).await;
    });
    let c = catalog(&n.data);
    wait_until(
        "cam1 recording and distributed",
        Duration::from_secs(40),
        || c.count(Some("cam1")).unwrap() >= 1,
    );
    let ladder = serde_json::json!([
        {"name": "low", "width": 160, "height": 90, "video_kbps": 150},
        {"name": "mid", "width": 240, "height": 136, "video_kbps": 300},
    ]);
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "job.start", "node": "test",
        "public": {"job_id": "j1", "camera": "cam1", "ladder": ladder}}),
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(metric(&v, "vigil_control_active_jobs"), Some(1.0));
    let started = Instant::now();
    wait_until(
        "three transcoded segments in both renditions",
        Duration::from_secs(90),
        || {
            let vs = c.variants("cam1", 0, i64::MAX).unwrap();
            ["low", "mid"]
                .iter()
                .all(|r| vs.iter().filter(|v| v.rendition == *r).count() >= 3)
        },
    );
    let vs = c.variants("cam1", 0, i64::MAX).unwrap();
    let first = vs.iter().map(|v| v.start_ms).min().unwrap();
    figure(
        "control",
        &format!(
            "transcoder job (2 renditions of a 320x180 camera, debug build): 3 segments of each ready {:.1} s after job.start",
            started.elapsed().as_secs_f64()
        ),
    );
    // ffprobe reads every variant at its requested size; each is pinned on the IPFS node.
    for want in [("low", 160, 90), ("mid", 240, 136)] {
        let files: Vec<_> = c
            .variant_files(&vs.iter().find(|v| v.rendition == want.0).unwrap().cid)
            .unwrap();
        let path = n.data.join(files[0].1.as_ref().unwrap());
        assert_eq!(video_size(&path), (want.1, want.2), "{}", path.display());
    }
    let pinned = rt().block_on(async {
        let k = kubo(&bed.ipfs_a);
        let mut all = true;
        for v in &vs {
            all &= k.pin_ls(&v.cid).await.unwrap();
        }
        all
    });
    assert!(pinned, "every variant is pinned");
    // The master playlist lists the source and both renditions; Chromium plays it through the player.
    let from = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(first).unwrap();
    let to = chrono::Utc::now();
    let q = format!(
        "from={}&to={}",
        from.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        to.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    let master = v.get(&format!("/cameras/cam1/master.m3u8?{q}")).text();
    assert!(
        master.contains("RESOLUTION=240x136") && master.contains("RESOLUTION=160x90"),
        "{master}"
    );
    assert!(
        master.contains("variants/low/vod.m3u8?") && master.contains("\nvod.m3u8?"),
        "{master}"
    );
    let low = v.get(&format!("/cameras/cam1/variants/low/vod.m3u8?{q}"));
    assert_eq!(low.status, 200, "{}", low.text());
    let seg = low
        .text()
        .lines()
        .find(|l| l.ends_with(".ts"))
        .unwrap()
        .to_string();
    let seg = seg
        .strip_prefix("../../")
        .expect("variant URIs point at the camera's IPFS proxy");
    let via_proxy = v.get(&format!("/cameras/cam1/{seg}"));
    assert_eq!(via_proxy.status, 200);
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://{}/?camera=cam1&mode=vod&{q}&renditions=1", v.addr);
    let played = browser_check(&url, 3, &dir.path().join("master.png"), &modules);
    figure(
        "control",
        &format!(
            "Chromium plays the master playlist (source + 2 renditions): {}",
            played
                .lines()
                .filter(|l| l.contains("currentTime advance"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );

    // node.configure: the transcoder role off stops its child and refuses jobs; capture off stops ffmpeg.
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "node.configure", "node": "test",
        "public": {"roles": ["transcoder"]}}),
    );
    assert_eq!(code, 0, "{r}");
    wait_until(
        "ffmpeg stopped with the capture role",
        Duration::from_secs(15),
        || ffmpeg_under(&n.data.join("cam1")).is_empty(),
    );
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "node.configure", "node": "test",
        "public": {"roles": ["capture", "teleport"]}}),
    );
    assert_eq!((code, r["reason"].clone()), (1, "invalid".into()), "{r}");
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "node.configure", "node": "test",
        "public": {"roles": ["capture", "storage"]}}),
    );
    assert_eq!(
        (code, r["reason"].clone()),
        (1, "unsupported".into()),
        "{r}"
    );
    // The roles are kept across a restart: still no capture.
    v.stop();
    let mut v = Vigil::start(&n.config);
    connected(&mut v, &broker);
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        ffmpeg_under(&n.data.join("cam1")).is_empty(),
        "capture stays off after a restart"
    );
    assert_eq!(
        metric(&v, "vigil_control_active_jobs"),
        Some(1.0),
        "the job survives the restart"
    );
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "node.configure", "node": "test",
        "public": {"roles": ["capture"]}}),
    );
    assert_eq!(code, 0, "{r}");
    wait_until(
        "ffmpeg back with the capture role",
        Duration::from_secs(15),
        || ffmpeg_under(&n.data.join("cam1")).len() == 1,
    );
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "job.start", "node": "test",
        "public": {"job_id": "j2", "camera": "cam1", "ladder": [{"name": "low", "width": 160, "height": 90, "video_kbps": 150}]}}),
    );
    assert_eq!(
        (code, r["reason"].clone()),
        (1, "unsupported".into()),
        "{r}"
    );
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "node.configure", "node": "test",
        "public": {"roles": ["capture", "transcoder"]}}),
    );
    assert_eq!(code, 0, "{r}");
    let (code, r) = send_json(
        &n,
        serde_json::json!({"kind": "job.stop", "node": "test", "public": {"job_id": "j1"}}),
    );
    assert_eq!(code, 0, "{r}");
    assert_eq!(metric(&v, "vigil_control_active_jobs"), Some(0.0));
    // job.started and job.stopped were published.
    let got = rt().block_on(async {
        use lapin::options::BasicGetOptions;
        let conn =
            lapin::Connection::connect(&broker.url(), lapin::ConnectionProperties::default())
                .await
                .unwrap();
        let ch = conn.create_channel().await.unwrap();
        let mut kinds = Vec::new();
        while let Some(m) = ch
            .basic_get("test-events".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            let e: serde_json::Value = serde_json::from_slice(&m.delivery.data).unwrap();
            kinds.push(format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["job"]["job_id"].as_str().unwrap_or("")
            ));
        }
        kinds
    });
    assert_eq!(got, ["job.started j1", "job.stopped j1"]);
    v.stop();
}
