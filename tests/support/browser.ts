import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Browser, chromium } from 'playwright-core';

/** Debian's Chromium (installed by .ci/run). */
export const CHROMIUM = process.env.HISTOFED_CHROMIUM ?? '/usr/bin/chromium';
export const hasChromium = existsSync(CHROMIUM);

/** CI sets CI=true: there a missing browser must fail the browser tests, not skip them. */
export const inCi = (process.env.CI ?? '') !== '' && !/^(0|false)$/i.test(process.env.CI ?? '');

/** `it` for a browser test: skipped where Chromium is absent, except in CI, where the test runs and fails saying why. */
export const itWithChromium: jest.It = hasChromium || inCi ? it : it.skip;
/** `describe` for a file of browser tests, with the same rule. */
export const describeWithChromium: jest.Describe = hasChromium || inCi ? describe : describe.skip;

/** Where the browser tests leave their screenshots (CI leaves them there too); HISTOFED_SCREENSHOT_DIR overrides. */
export const SCREENSHOT_DIR = process.env.HISTOFED_SCREENSHOT_DIR ?? join(__dirname, '..', 'artifacts', 'dashboard');

export function launchChromium(): Promise<Browser> {
  if (!hasChromium) {
    return Promise.reject(new Error(`Chromium is missing at ${CHROMIUM} (CI=${process.env.CI ?? ''}): install Debian's chromium (apt-get install chromium; .ci/run does) or set HISTOFED_CHROMIUM`));
  }
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox',
      '--headless',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
}
