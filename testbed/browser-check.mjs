#!/usr/bin/env node
// browser-check.mjs — headless Chromium check that vigil's player page really plays video.
//
// Usage: node testbed/browser-check.mjs URL SCREENSHOT.png [USER PASSWORD]
//        e.g. node testbed/browser-check.mjs 'http://127.0.0.1:8000/?camera=cam1' /tmp/vigil-demo.png alice secret
// Needs: Debian's Chromium at /usr/bin/chromium (testbed/install-browser.sh) and playwright-core from ui/'s
//        lockfile, found in $VIGIL_UI_NODE_MODULES or else through testbed/npm-cache.sh (which installs it
//        into the cache outside the clone on first use).
// Env:   VIGIL_BROWSER_USER, VIGIL_BROWSER_PASSWORD  the login, when not given as arguments
//        VIGIL_BROWSER_TIMEOUT  seconds to wait for playback (default 30)
//        VIGIL_BROWSER_ADVANCE  seconds of playback required (default 4)
//        VIGIL_BROWSER_RATE     the video's playbackRate (default 1; e.g. 8 to play a long VOD across all its
//                               joins within the timeout)
//        CHROMIUM               browser binary (default /usr/bin/chromium)
//
// Opens URL; if vigil sends the browser to its login page (/login?next=...), logs in there with USER and PASSWORD
// (typed into the form, which then returns to URL) and fails clearly without them. Then waits (up to 30 s) until the <video> element's currentTime has advanced by at least 4 s of
// playback, checks that the page's window.vigil.fatal (the player's last fatal hls.js error) is null, takes a
// screenshot, prints the figures (time to first frame, currentTime advance, non-fatal hls.js errors from
// window.vigil.errors) and exits 0 on success, 1 on failure, 2 on bad usage or a missing prerequisite.

import { mkdtempSync, rmSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { CHROMIUM, FLAGS, loadChromium } from './browser-lib.mjs';

const [url, shot, argUser, argPassword] = process.argv.slice(2);
const USER = argUser ?? process.env.VIGIL_BROWSER_USER;
const PASSWORD = argPassword ?? process.env.VIGIL_BROWSER_PASSWORD;
const TIMEOUT_S = Number(process.env.VIGIL_BROWSER_TIMEOUT || 30);
const ADVANCE_S = Number(process.env.VIGIL_BROWSER_ADVANCE || 4);
const RATE = Number(process.env.VIGIL_BROWSER_RATE || 1);

const log = (msg) => console.log(`[browser-check] ${msg}`);
function usage(msg) {
  console.error(`[browser-check] ERROR: ${msg}`);
  console.error('usage: node testbed/browser-check.mjs URL SCREENSHOT.png [USER PASSWORD]');
  process.exit(2);
}

if (!url || !shot) usage('URL and SCREENSHOT path are required');
try { new URL(url); } catch { usage(`not a URL: ${url}`); }

const chromium = loadChromium(usage);

const userDataDir = mkdtempSync(join(tmpdir(), 'vigil-browser-check-'));
let context;
let ok = false;
const t0 = Date.now();
const sec = (ms) => (ms / 1000).toFixed(1);
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: FLAGS,
    viewport: { width: 1024, height: 768 },
  });
  const page = context.pages()[0] || (await context.newPage());
  const consoleErrors = [];
  const httpErrors = [];
  page.on('console', (m) => {
    if (m.type() !== 'error') return;
    const where = m.location()?.url;
    consoleErrors.push(where ? `${m.text()} (${where})` : m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on('response', (r) => { if (r.status() >= 400) httpErrors.push(`${r.status()} ${r.url()}`); });
  page.on('requestfailed', (r) => httpErrors.push(`failed ${r.url()}: ${r.failure()?.errorText}`));

  const resp = await page.goto(url, { waitUntil: 'domcontentloaded', timeout: TIMEOUT_S * 1000 });
  if (!resp || !resp.ok()) throw new Error(`GET ${url} answered ${resp ? resp.status() : 'nothing'}`);
  if (new URL(page.url()).pathname === '/login') {
    // vigil wants a login first; its form returns to the page asked for (?next=).
    if (!USER || PASSWORD === undefined) {
      throw new Error(`${url} asks for a login (${page.url()}): give USER PASSWORD or VIGIL_BROWSER_USER/VIGIL_BROWSER_PASSWORD`);
    }
    await page.getByLabel('User name').fill(USER);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    const tLogin = Date.now();
    await page.getByLabel('Password', { exact: true }).press('Enter');
    try {
      await page.waitForURL((u) => u.pathname !== '/login', { timeout: TIMEOUT_S * 1000, waitUntil: 'domcontentloaded' });
    } catch {
      const msg = await page.locator('#message').textContent().catch(() => '');
      throw new Error(`login as ${USER} failed (the login page says: ${msg || '-'})`);
    }
    log(`logged in as ${USER} in ${sec(Date.now() - tLogin)} s; now at ${page.url()}`);
  }
  const tLoaded = Date.now();
  await page.waitForSelector('video', { state: 'attached', timeout: 10_000 });

  // Poll the video: the first frame is when readyState >= 2 (HAVE_CURRENT_DATA) and the decoder reports a
  // frame size; playback counts from the first currentTime seen after that.
  let tFirstFrame = null;
  let startTime = null;
  let startBuffered = null;
  let last = null;
  const deadline = tLoaded + TIMEOUT_S * 1000;
  while (Date.now() < deadline) {
    last = await page.evaluate((rate) => {
      const v = document.querySelector('video');
      if (v.playbackRate !== rate) v.playbackRate = rate;
      const q = v.getVideoPlaybackQuality ? v.getVideoPlaybackQuality() : {};
      return {
        t: v.currentTime, ready: v.readyState, paused: v.paused, w: v.videoWidth, h: v.videoHeight,
        frames: q.totalVideoFrames ?? null, dropped: q.droppedVideoFrames ?? null,
        buffered: v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0,
        fatal: window.vigil ? window.vigil.fatal : 'window.vigil missing',
        status: document.getElementById('status')?.textContent ?? '',
      };
    }, RATE);
    if (last.fatal) break;
    if (tFirstFrame === null && last.ready >= 2 && last.w > 0) {
      tFirstFrame = Date.now();
      startTime = last.t;
      startBuffered = last.buffered;
    }
    if (startTime !== null && last.t - startTime >= ADVANCE_S) break;
    await page.waitForTimeout(200);
  }
  const tEnd = Date.now();
  const vigil = await page.evaluate(() => window.vigil ?? null);
  mkdirSync(dirname(resolve(shot)), { recursive: true });
  await page.screenshot({ path: shot });
  const shotAt = new Date().toTimeString().slice(0, 8);

  const advance = startTime === null ? 0 : last.t - startTime;
  const errors = vigil ? vigil.errors : [];
  const counts = {};
  for (const e of errors) counts[e] = (counts[e] || 0) + 1;
  log(`url: ${url}`);
  log(`page loaded (DOMContentLoaded) after ${sec(tLoaded - t0)} s (browser start included)`);
  log(`time to first frame: ${tFirstFrame === null ? 'NEVER' : `${sec(tFirstFrame - tLoaded)} s after page load`}`);
  log(`currentTime advance: ${advance.toFixed(2)} s of playback in ${tFirstFrame === null ? '-' : sec(tEnd - tFirstFrame)} s wall clock` +
      (RATE !== 1 ? ` at playbackRate ${RATE}` : '') +
      ` (currentTime ${startTime === null ? '-' : startTime.toFixed(2)} -> ${last ? last.t.toFixed(2) : '-'})`);
  if (last) {
    log(`video: ${last.w}x${last.h}, readyState ${last.ready}, paused ${last.paused}, decoded frames ${last.frames},` +
        ` dropped ${last.dropped}, buffered to ${last.buffered.toFixed(2)} s`);
    if (startBuffered !== null) {
      // A live stream keeps growing: the buffered end moves on as new segments arrive. Playback alone can come
      // from the ~8 s already buffered, so this figure is what shows the recording is still live.
      log(`buffered end advance: ${(last.buffered - startBuffered).toFixed(2)} s (${startBuffered.toFixed(2)} -> ${last.buffered.toFixed(2)})` +
          `${last.buffered - startBuffered < (last.t - startTime) / 2 ? '  WARNING: little new media arrived while playing (camera frozen / not recording?)' : ''}`);
    }
    log(`page status line: ${last.status}`);
  }
  log(`window.vigil.fatal: ${vigil ? JSON.stringify(vigil.fatal) : 'window.vigil missing'}`);
  log(`non-fatal hls.js errors: ${errors.length}${errors.length ? ` ${JSON.stringify(counts)}` : ''}`);
  if (httpErrors.length) log(`HTTP errors seen by the page: ${httpErrors.length}: ${httpErrors.slice(0, 5).join('; ')}`);
  if (consoleErrors.length) log(`console errors: ${consoleErrors.length}: ${consoleErrors.slice(0, 5).join(' | ')}`);
  log(`screenshot: ${shot} (taken at ${shotAt} local time: compare with the clock in the picture for the live delay)`);

  const problems = [];
  if (!vigil) problems.push('window.vigil is missing (not vigil\'s player page?)');
  else if (vigil.fatal !== null) problems.push(`fatal hls.js error: ${vigil.fatal}`);
  if (tFirstFrame === null) problems.push(`no video frame within ${TIMEOUT_S} s`);
  else if (advance < ADVANCE_S) problems.push(`currentTime advanced only ${advance.toFixed(2)} s (< ${ADVANCE_S} s) within ${TIMEOUT_S} s`);
  if (problems.length) {
    for (const p of problems) console.error(`[browser-check] FAIL: ${p}`);
  } else {
    ok = true;
    log('PASS');
  }
} catch (e) {
  console.error(`[browser-check] FAIL: ${String(e.message).split('\n')[0]}`);
} finally {
  if (context) await context.close().catch(() => {});
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(ok ? 0 : 1);
