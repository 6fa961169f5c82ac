#!/usr/bin/env node
// ui-check.mjs — end-to-end check of vigil's viewer in headless Chromium, as a user would use it: log in, see
// the cameras, watch live, scrub back, switch cameras, replay a range, log out.
//
// Usage: node testbed/ui-check.mjs BASE_URL USER PASSWORD EXPECT_CAMERAS SHOT.png [REPLAY_FROM REPLAY_TO]
//        e.g. node testbed/ui-check.mjs http://127.0.0.1:8000 alice secret cam1,cam2 /tmp/ui.png \
//                  2026-11-22T10:00:00Z 2026-11-22T10:01:00Z
//        EXPECT_CAMERAS: comma-separated camera ids the user must see, exactly (order does not matter).
// Needs: the same as browser-check.mjs: Debian's Chromium at /usr/bin/chromium (testbed/install-browser.sh) and
//        playwright-core from ui/'s lockfile ($VIGIL_UI_NODE_MODULES or testbed/npm-cache.sh).
// Env:   VIGIL_UI_TIMEOUT   seconds each step may wait (default 30)
//        VIGIL_UI_PHONE     set: run as a mid-range phone on 4G (390x844 touch, CPU 4x slower, 9 Mbit/s, 85 ms)
//        VIGIL_UI_REPLAY_CAMERA  camera of step 6 (default: the first camera, the one shown after login)
//        CHROMIUM           browser binary (default /usr/bin/chromium)
//
// Steps (each prints "[ui-check] ok ..." or "[ui-check] figure ..."; the first failure prints
// "[ui-check] FAIL: ..." and exits 1; bad usage or a missing prerequisite exits 2):
//   1. BASE_URL/ must land on /login; the form is filled by its labels and sent with Enter; figure
//      login_to_first_frame_s = from Enter to the first live frame (the video's currentTime advancing).
//   2. the camera list equals EXPECT_CAMERAS.
//   3. live plays: currentTime advances >= 3 s, window.vigil.fatal stays null; figure live_delay_s.
//   4. scrub back to 3 min ago (or the day's first footage + 5 s when the day has less) with
//      window.vigil.seekToWall; figure scrub_to_first_frame_s; window.vigil.wallTime() within 10 s of the target
//      and playback advances there (hls.js must not jump back to the live edge).
//   5. with two or more cameras: switch to another one with its card; it plays; figure switch_to_first_frame_s.
//   6. with REPLAY_FROM/TO: open #camera=<first camera>&mode=replay&from=..&to=.. ; it plays to the end or >= 8 s, without a
//      fatal hls.js error; figure replay_to_first_frame_s; the Download link answers 200 with an attachment; a
//      range with no footage says "No footage in this range".
//   7. screenshot to SHOT.png; Log out; /api/me then answers 401.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { CHROMIUM, FLAGS, loadChromium } from './browser-lib.mjs';

const [base, user, password, expectArg, shot, replayFrom, replayTo] = process.argv.slice(2);
const STEP_S = Number(process.env.VIGIL_UI_TIMEOUT || 30);

const log = (msg) => console.log(`[ui-check] ${msg}`);
const ok = (msg) => log(`ok ${msg}`);
const figure = (name, value) => log(`figure ${name}=${value}`);
function usage(msg) {
  console.error(`[ui-check] ERROR: ${msg}`);
  console.error('usage: node testbed/ui-check.mjs BASE_URL USER PASSWORD EXPECT_CAMERAS SHOT.png [REPLAY_FROM REPLAY_TO]');
  process.exit(2);
}
class Failure extends Error {}
const fail = (msg) => { throw new Failure(msg); };

if (!base || !user || password === undefined || expectArg === undefined || !shot) usage('BASE_URL USER PASSWORD EXPECT_CAMERAS SHOT.png are required');
let origin;
try { origin = new URL(base).origin; } catch { usage(`not a URL: ${base}`); }
const expectCameras = expectArg.split(',').map((s) => s.trim()).filter(Boolean).sort();
if ((replayFrom && !replayTo) || (replayFrom && (Number.isNaN(Date.parse(replayFrom)) || Number.isNaN(Date.parse(replayTo))))) {
  usage('REPLAY_FROM and REPLAY_TO must both be RFC 3339 times');
}

const chromium = loadChromium(usage);

const sec = (ms) => (ms / 1000).toFixed(2);
const userDataDir = mkdtempSync(join(tmpdir(), 'vigil-ui-check-'));
let context;
let page;
let passed = false;
const pageErrors = [];
const consoleErrors = [];
const httpErrors = [];

// What the page's player shows right now.
const sample = () => page.evaluate(() => {
  const v = document.querySelector('video');
  const vg = window.vigil;
  let wall = null;
  try { wall = vg && vg.wallTime ? vg.wallTime() : null; } catch (e) { wall = `wallTime threw: ${e.message}`; }
  return {
    t: v ? v.currentTime : null, ready: v ? v.readyState : 0, w: v ? v.videoWidth : 0, paused: v ? v.paused : true,
    seeking: v ? v.seeking : false, ended: v ? v.ended : false,
    fatal: vg ? vg.fatal : 'window.vigil missing', camera: vg ? vg.camera : null, mode: vg ? vg.mode : null,
    wall, now: Date.now(), status: document.getElementById('status')?.textContent ?? '',
  };
});

// Poll `sample()` every 100 ms until `done(s)` is true; fails on a fatal hls.js error or after `seconds`.
async function until(what, seconds, done) {
  const deadline = Date.now() + seconds * 1000;
  let s;
  while (Date.now() < deadline) {
    s = await sample();
    if (s.fatal) fail(`${what}: fatal hls.js error ${JSON.stringify(s.fatal)} (page says: ${s.status || '-'})`);
    if (done(s)) return s;
    await page.waitForTimeout(100);
  }
  fail(`${what}: not within ${seconds} s (video t=${s?.t}, readyState ${s?.ready}, paused ${s?.paused}, ` +
       `wall ${fmt(s?.wall)}, camera ${s?.camera}, mode ${s?.mode}; page says: ${s?.status || '-'})`);
}
const fmt = (ms) => (typeof ms === 'number' ? new Date(ms).toISOString() : String(ms));

// The first frame: a decoded picture, and then currentTime moving on from it. Returns the sample it moved in.
async function firstFrame(what, seconds, extra = () => true) {
  let start = null;
  return until(what, seconds, (s) => {
    if (!(s.ready >= 2 && s.w > 0 && !s.seeking && extra(s))) return false;
    if (start === null) { start = s.t; return false; }
    return s.t > start + 0.05;
  });
}

// Playback of at least `advance` s of currentTime (or the end of a finished playlist).
async function plays(what, advance, seconds, { allowEnd = false } = {}) {
  const first = await sample();
  return until(what, seconds, (s) => s.t - first.t >= advance || (allowEnd && s.ended));
}

try {
  // VIGIL_UI_PHONE=1: a mid-range phone on 4G: 390x844 touch screen, CPU 4x slower, 9 Mbit/s down, 85 ms RTT.
  const phone = !!process.env.VIGIL_UI_PHONE;
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM, headless: true, args: FLAGS,
    ...(phone
      ? { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 3 }
      : { viewport: { width: 1280, height: 900 } }),
  });
  page = context.pages()[0] || (await context.newPage());
  if (phone) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    await cdp.send('Network.emulateNetworkConditions', {
      offline: false, latency: 85, downloadThroughput: (9e6 / 8), uploadThroughput: (3e6 / 8),
    });
    await cdp.send('Emulation.setCPUThrottlingRate', { rate: 4 });
    log('phone profile: 390x844, CPU 4x slower, 9/3 Mbit/s, 85 ms RTT');
  }
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('response', (r) => { if (r.status() >= 400) httpErrors.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`); });

  // 1. Log in.
  const resp = await page.goto(`${origin}/`, { waitUntil: 'domcontentloaded', timeout: STEP_S * 1000 });
  const landed = new URL(page.url());
  if (landed.pathname !== '/login') fail(`GET / did not land on /login but on ${landed.pathname}${landed.search} (HTTP ${resp?.status()})`);
  if (!resp || !resp.ok()) fail(`/login answered HTTP ${resp ? resp.status() : 'nothing'}`);
  ok(`GET / went to ${landed.pathname}${landed.search}`);
  const userBox = page.getByLabel('User name');
  const passBox = page.getByLabel('Password', { exact: true });
  await userBox.click();
  await page.keyboard.type(user);
  await passBox.click();
  await page.keyboard.type(password);
  const tSubmit = Date.now();
  await page.keyboard.press('Enter');
  try {
    await page.waitForURL((u) => u.pathname === '/', { timeout: STEP_S * 1000 });
  } catch {
    const msg = await page.locator('#message').textContent().catch(() => '');
    fail(`login did not reach / (still at ${page.url()}; the page says: ${msg || '-'})`);
  }
  await page.waitForFunction(() => window.vigil && typeof window.vigil.seekToWall === 'function', null, { timeout: STEP_S * 1000 });
  const live1 = await firstFrame('first live frame after login', STEP_S);
  figure('login_to_first_frame_s', sec(Date.now() - tSubmit));
  if (live1.mode !== 'live') fail(`after login the player is in mode ${live1.mode}, not live`);
  const who = (await page.locator('#who').textContent()) || '';
  if (!who.includes(user)) fail(`the header does not name the user ${user} (it says "${who}")`);
  ok(`logged in as ${user} (header: "${who.trim()}")`);

  // 2. The camera list.
  await page.waitForFunction(() => document.querySelectorAll('#cameras button[data-id]').length > 0, null, { timeout: STEP_S * 1000 })
    .catch(() => fail('no camera card appeared'));
  const seen = (await page.$$eval('#cameras button[data-id]', (bs) => bs.map((b) => b.dataset.id))).sort();
  if (JSON.stringify(seen) !== JSON.stringify(expectCameras)) fail(`cameras listed: ${seen.join(',') || '(none)'}; expected ${expectCameras.join(',') || '(none)'}`);
  ok(`cameras listed: ${seen.join(',')}`);
  const firstCam = live1.camera;

  // 3. Live plays.
  const l3 = await plays(`live playback of ${firstCam}`, 3, STEP_S);
  if (typeof l3.wall !== 'number') fail(`window.vigil.wallTime() gave ${JSON.stringify(l3.wall)} while playing live`);
  figure('live_delay_s', sec(l3.now - l3.wall));
  ok(`live ${firstCam} plays (currentTime ${l3.t.toFixed(1)} s, playhead at ${fmt(l3.wall)})`);

  // 4. Scrub back 3 minutes (or to the day's first footage + 5 s).
  const day = await page.evaluate(() => window.vigil.state.day && { ...window.vigil.state.day });
  if (!day || !Array.isArray(day.spans) || !day.spans.length) fail(`the timeline has no recorded spans for today (${JSON.stringify(day)})`);
  log(`${firstCam} today (${day.date}${day.derived ? ', spans from the playlist: /spans failed' : ''}): ${day.spans.length} span(s) ` +
      `${day.spans.slice(0, 4).map((s) => `${fmt(s.start_ms)}..${fmt(s.end_ms)}`).join(', ')}${day.spans.length > 4 ? ', …' : ''}; ` +
      `${day.joins.length} join(s)`);
  let target = Math.max(Date.now() - 180_000, day.spans[0].start_ms + 5000);
  // In a gap the player plays the next recorded moment: expect that.
  const holding = day.spans.find((s) => target >= s.start_ms && target < s.end_ms);
  const expected = holding ? target : (day.spans.find((s) => s.start_ms > target)?.start_ms ?? target);
  const liveWall = l3.wall;
  const tScrub = Date.now();
  const moved = await page.evaluate((t) => window.vigil.seekToWall(t), target);
  if (!moved) fail(`seekToWall(${fmt(target)}) refused`);
  const s4 = await firstFrame(`first frame at ${fmt(expected)}`, STEP_S,
    (s) => typeof s.wall === 'number' && Math.abs(s.wall - expected) < 10_000 + (s.now - tScrub));
  figure('scrub_to_first_frame_s', sec(Date.now() - tScrub));
  if (Math.abs(s4.wall - expected) > 10_000 + (s4.now - tScrub)) fail(`after the scrub the playhead is at ${fmt(s4.wall)}, expected ${fmt(expected)}`);
  ok(`scrubbed from ${fmt(liveWall)} to ${fmt(s4.wall)} (target ${fmt(target)}${expected !== target ? `, next footage ${fmt(expected)}` : ''})`);
  const s4b = await plays('playback after the scrub', 3, STEP_S);
  const drift = s4b.wall - expected - (s4b.now - tScrub);
  if (Math.abs(s4b.wall - expected) > 10_000 + (s4b.now - tScrub)) {
    fail(`3 s after the scrub the playhead is at ${fmt(s4b.wall)}, ${sec(s4b.wall - expected)} s from the target: it did not stay there (jumped to live?)`);
  }
  ok(`plays at the scrubbed time (playhead ${fmt(s4b.wall)}, ${sec(drift)} s off a wall clock started at the target)`);

  // 5. Another camera.
  const other = seen.find((c) => c !== firstCam);
  if (other) {
    const tSwitch = Date.now();
    await page.locator(`#cameras button[data-id="${other}"]`).click();
    await firstFrame(`first frame of ${other}`, STEP_S, (s) => s.camera === other);
    figure('switch_to_first_frame_s', sec(Date.now() - tSwitch));
    const s5 = await plays(`playback of ${other}`, 3, STEP_S);
    if (s5.camera !== other || s5.mode !== 'live') fail(`after the switch the player shows ${s5.camera} in mode ${s5.mode}`);
    const pressed = await page.locator(`#cameras button[data-id="${other}"]`).getAttribute('aria-pressed');
    if (pressed !== 'true') fail(`the card of ${other} is not marked selected (aria-pressed=${pressed})`);
    ok(`switched to ${other}: plays live (playhead ${fmt(s5.wall)})`);
  } else {
    ok('one camera: no switch to check');
  }

  // 6. Replay a range.
  if (replayFrom) {
    const cam = process.env.VIGIL_UI_REPLAY_CAMERA || firstCam;
    const hash = `#camera=${cam}&mode=replay&from=${replayFrom}&to=${replayTo}`;
    const tReplay = Date.now();
    await page.evaluate((h) => { location.hash = h; }, hash);
    await page.waitForFunction(() => window.vigil.mode === 'replay', null, { timeout: STEP_S * 1000 })
      .catch(() => fail(`opening ${hash} did not switch to replay`));
    const from = Date.parse(replayFrom), to = Date.parse(replayTo);
    await firstFrame('first replay frame', STEP_S, (s) => typeof s.wall === 'number' && s.wall >= from - 15_000 && s.wall <= to + 5000);
    figure('replay_to_first_frame_s', sec(Date.now() - tReplay));
    const want = Math.min(8, (to - from) / 1000 - 1);
    const s6 = await plays(`replay of ${replayFrom}..${replayTo}`, want, STEP_S + (to - from) / 1000, { allowEnd: true });
    if (typeof s6.wall !== 'number' || s6.wall < from - 15_000 || s6.wall > to + 5000) {
      fail(`during the replay the playhead is at ${fmt(s6.wall)}, outside ${replayFrom}..${replayTo}`);
    }
    const url = new URL(page.url());
    if (url.hash !== hash && decodeURIComponent(url.hash) !== decodeURIComponent(hash)) {
      log(`note: the address holds ${url.hash} (opened as ${hash})`);
    }
    ok(`replay ${cam} ${replayFrom}..${replayTo} plays (${s6.ended ? 'to the end' : `${want.toFixed(0)} s`}, playhead ${fmt(s6.wall)})`);

    const href = await page.locator('#download').getAttribute('href');
    if (!href || !href.includes(`/cameras/${encodeURIComponent(cam)}/download?from=`)) fail(`the Download link is ${href}`);
    const dl = await page.evaluate(async (h) => {
      const c = new AbortController();
      const r = await fetch(h, { signal: c.signal });
      const out = { status: r.status, type: r.headers.get('content-type'), disposition: r.headers.get('content-disposition') };
      if (!r.ok) out.body = await r.text(); else c.abort();
      return out;
    }, href);
    if (dl.status !== 200 || !/attachment/i.test(dl.disposition || '')) {
      fail(`Download ${href} answered ${dl.status} (${dl.type}; ${dl.disposition}) ${dl.body || ''}`);
    }
    ok(`Download link answers 200 (${dl.type}; ${dl.disposition})`);

    // A range without footage says so.
    await page.evaluate((c) => { location.hash = `#camera=${c}&mode=replay&from=2001-01-01T00:00:00Z&to=2001-01-01T00:05:00Z`; }, cam);
    await page.waitForFunction(() => /No footage in this range/.test(document.getElementById('status').textContent), null, { timeout: STEP_S * 1000 })
      .catch(async () => fail(`a range without footage does not say "No footage in this range" (page says: ${await page.locator('#status').textContent()})`));
    ok('a range without footage says "No footage in this range"');
  }

  // 7. Screenshot, log out.
  mkdirSync(dirname(resolve(shot)), { recursive: true });
  if (replayFrom) { // the screenshot shows something playing
    await page.evaluate((h) => { location.hash = h; }, `#camera=${firstCam}&mode=live`);
    await firstFrame('live again before the screenshot', STEP_S, (s) => s.mode === 'live' && s.camera === firstCam).catch(() => {});
  }
  await page.screenshot({ path: shot });
  ok(`screenshot ${shot}`);
  await page.getByRole('button', { name: 'Log out' }).click();
  await page.waitForURL((u) => u.pathname === '/login', { timeout: STEP_S * 1000 })
    .catch(() => fail(`Log out did not go to /login (at ${page.url()})`));
  const me = await page.evaluate(() => fetch('/api/me', { credentials: 'same-origin' }).then((r) => r.status));
  if (me !== 401) fail(`after Log out GET /api/me answered ${me}, not 401`);
  ok('logged out: /api/me answers 401');

  if (pageErrors.length) fail(`JavaScript errors on the page: ${pageErrors.slice(0, 5).join(' | ')}`);
  passed = true;
} catch (e) {
  console.error(`[ui-check] FAIL: ${e instanceof Failure ? e.message : String(e.stack || e.message).split('\n').slice(0, 3).join(' / ')}`);
  if (page && !passed) {
    const failShot = resolve(shot).replace(/(\.png)?$/, '-fail.png');
    try { mkdirSync(dirname(failShot), { recursive: true }); await page.screenshot({ path: failShot }); log(`screenshot of the failure: ${failShot}`); } catch { /* no page */ }
  }
} finally {
  if (httpErrors.length) log(`HTTP errors seen by the page: ${httpErrors.length}: ${[...new Set(httpErrors)].slice(0, 8).join('; ')}`);
  if (consoleErrors.length) log(`console errors: ${consoleErrors.length}: ${[...new Set(consoleErrors)].slice(0, 5).join(' | ')}`);
  if (pageErrors.length) log(`page errors: ${pageErrors.slice(0, 5).join(' | ')}`);
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
if (passed) log('PASS');
process.exit(passed ? 0 : 1);
