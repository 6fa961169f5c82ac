// browser-lib.mjs — what testbed/browser-check.mjs and testbed/ui-check.mjs share: Debian's Chromium with the
// flags this machine needs (no background networking: the closed network refuses it), and playwright-core from
// ui/'s lockfile ($VIGIL_UI_NODE_MODULES, else testbed/npm-cache.sh, which installs it outside the clone).

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
export const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--autoplay-policy=no-user-gesture-required',
];

// Playwright's `chromium`, or `usage(message)` (which exits) when Chromium or playwright-core is missing.
export function loadChromium(usage) {
  if (!existsSync(CHROMIUM)) usage(`${CHROMIUM} missing: run testbed/install-browser.sh`);
  let nm = process.env.VIGIL_UI_NODE_MODULES;
  if (!nm) {
    try {
      nm = execFileSync(join(here, 'npm-cache.sh'), { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    } catch {
      usage('testbed/npm-cache.sh failed: cannot find playwright-core');
    }
  }
  try {
    return createRequire(join(nm, 'noop.js'))('playwright-core').chromium;
  } catch (e) {
    usage(`cannot load playwright-core from ${nm}: ${e.message}`);
  }
  return null;
}
