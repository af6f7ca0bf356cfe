/**
 * The administrator's dashboard (issue 17) in headless Chromium, on one real federation: a
 * coordinator and two site clients as separate processes (tiny synthetic data), plus a rogue
 * participant whose failure reason carries markup. Everything is done from the page: approve the
 * pending sites, create a run from the form generated from the run-config schema (an invalid value
 * first), start it, watch the rounds chart gain points as they are pushed, read the finished run's
 * confusion matrices and reliability diagram back from the charts and compare them with the API.
 * Screenshots of the main views are left in tests/artifacts/dashboard/ (CI too).
 */
import { createReadStream, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { extract } from 'tar-stream';
import { generateSyntheticBreakHis } from '@histofed/data';
import { loadEnsemble, loadModel, selectBackend } from '@histofed/ml';
import { ProgressEvents, SiteEvents } from '@histofed/protocol';
import { Federation, RogueSite, startFederation } from '@histofed/harness';
import { SCREENSHOT_DIR, describeWithChromium, launchChromium } from './support/browser';

const MARKUP = '<img src=x onerror="window.__xss=1">';

/**
 * The page's globals, for the functions page.waitForFunction runs in the page (this file is
 * compiled without the DOM library; the dashboard's CSP forbids eval, so they cannot be strings).
 */
interface PageNode {
  readonly textContent: string | null;
  readonly children: ArrayLike<PageNode>;
}
declare const document: { querySelectorAll(selector: string): ArrayLike<PageNode> & Iterable<PageNode>; querySelector(selector: string): PageNode | null };
declare const window: { __points: number[]; __loss: Record<string, [number, number][]> };

interface Site {
  siteId: string;
  status: string;
  connected: boolean;
  signKeyFingerprint: string;
}
interface Bin {
  count: number;
  confidence: number | null;
  accuracy: number | null;
}
type Temperature = { stage1: number; subtype?: number };
interface Metrics {
  rounds: { round: number; missing: Record<string, string> }[];
  final: {
    modelsDir: string;
    ensembleMembers: string[];
    memberMetrics: Record<string, Record<string, number>>;
    ensemble: Record<string, number>;
    confusion: Record<string, { images: number; stage1: number[][]; subtype?: number[][] }>;
    calibration: {
      global: {
        temperature: Temperature | null;
        eceBefore: number | null;
        eceAfter: number | null;
        reliabilityBefore: Bin[];
        reliabilityAfter: Bin[];
        validation: { images: number; eceBefore: number | null; eceAfter: number | null };
        perSite: Record<string, { eceBefore: number | null; eceAfter: number | null }>;
      };
      personalized: Record<string, { temperature: Temperature; eceBefore: number | null; eceAfter: number | null }>;
    };
    review: { global: { threshold: number; reviewRate: number; accuracyAll: number; accuracyUnflagged: number | null } | null; personalized: Record<string, { threshold: number; reviewRate: number; accuracyAll: number; accuracyUnflagged: number | null }> };
  };
}

/** Unpacks a tar file into `dir` with tar-stream's parser (regular files and directories only); returns the files' paths. */
async function untar(file: string, dir: string): Promise<string[]> {
  const files: string[] = [];
  const ex = extract();
  const done = (async () => {
    for await (const entry of ex) {
      const target = join(dir, entry.header.name);
      expect(relative(dir, target).startsWith('..')).toBe(false);
      const chunks: Buffer[] = [];
      for await (const c of entry) chunks.push(c as Buffer);
      if (entry.header.type === 'directory') mkdirSync(target, { recursive: true });
      else {
        expect(entry.header.type).toBe('file');
        mkdirSync(dirname(target), { recursive: true });
        writeFileSync(target, Buffer.concat(chunks));
        files.push(entry.header.name);
      }
    }
  })();
  createReadStream(file).pipe(ex as unknown as NodeJS.WritableStream);
  await done;
  return files.sort();
}

/** The regular files under `dir`, relative, sorted. */
function filesUnder(dir: string, rel = ''): string[] {
  return readdirSync(join(dir, rel), { withFileTypes: true })
    .flatMap((e) => (e.isDirectory() ? filesUnder(dir, join(rel, e.name)) : e.isFile() ? [join(rel, e.name)] : []))
    .sort();
}

describeWithChromium('the dashboard, driven from headless Chromium', () => {
  let work: string;
  let fed: Federation;
  let rogue: RogueSite;
  let browser: Browser;
  let page: Page;
  let runId: string;
  const cspViolations: string[] = [];
  const shot = (name: string, fullPage = false) => page.screenshot({ path: join(SCREENSHOT_DIR, `${name}.png`), fullPage });
  const runs = () => fed.admin.request<{ id: string; status: string; config: { name: string } }[]>('GET', '/api/runs');
  /** The chart's data, as the chart holds it (ECharts' option). */
  const seriesData = (chart: string, series: number) =>
    page.evaluate(`(() => { const s = echarts.getInstanceByDom(document.getElementById(${JSON.stringify(chart)})).getOption().series[${series}]; return s ? s.data : null; })()`);

  beforeAll(async () => {
    work = mkdtempSync(join(tmpdir(), 'hf-dashboard-'));
    const data = join(work, 'data');
    await generateSyntheticBreakHis(data, { seed: 11, patientsPerSubtype: 1, imagesPerPatient: 3 });
    // The browser first: where it is missing (in CI) the tests fail at once, with no federation started.
    browser = await launchChromium();
    // Nobody approves the sites: the page does.
    fed = await startFederation({ dataDir: data, workDir: work, sites: 2, seed: 11, approval: 'pending' });
    // A participant whose failure reason is markup (a reason a site controls), and which reports
    // progress like a site: about its own task (accepted) and with an extra field (refused).
    rogue = new RogueSite(fed.url, 'rogue', async (r, task) => {
      const about = { runId: task.config.runId, round: task.config.round, kind: task.kind };
      await r.send('progress', ProgressEvents.progress, { ...about, stage: 'training', epoch: 1, epochs: 1, batch: 1, batches: 2, loss: 0.7 });
      await r.send('progress with a file name', ProgressEvents.progress, { ...about, stage: 'training', file: 'SOB_B_A-14-22549AB-40-001.png' });
      await r.send('failure', SiteEvents.taskFailed, { ...about, reason: `${MARKUP}declined` });
    });
    expect((await rogue.enroll()).status).toBe('pending');
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
    });
    // Every text the sites table showed for a site's task (the progress pushed while it trains), and
    // the layout shifts not caused by the user (the Cumulative Layout Shift's entries).
    await page.addInitScript(`
      window.__shifts = [];
      new PerformanceObserver((list) => list.getEntries().forEach((e) => { if (!e.hadRecentInput) window.__shifts.push(e.value); })).observe({ type: 'layout-shift', buffered: true });
      window.__tasks = [];
      new MutationObserver(() => document.querySelectorAll('td[data-task]').forEach((td) => window.__tasks.push(td.textContent))).observe(document, { subtree: true, childList: true, characterData: true });
    `);
  });

  afterAll(async () => {
    await browser?.close();
    rogue?.close();
    await fed?.stop();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('takes the admin token from the URL fragment into session storage, and out of the address bar', async () => {
    await page.goto(`${fed.url}/#token=${fed.token}`);
    expect(page.url()).toBe(`${fed.url}/`);
    expect(await page.evaluate(`sessionStorage.getItem('histofed-token')`)).toBe(fed.token);
    await page.waitForSelector('#live.on');
    await page.waitForFunction(() => document.querySelectorAll('#sites button[data-act=approve]:not([disabled])').length === 3);
  });

  it('approves the pending sites, each after a confirmation showing its signing-key fingerprint', async () => {
    const api = await fed.admin.request<Site[]>('GET', '/api/sites');
    // Keyboard: the Approve button opens the confirmation, Escape cancels it, nothing changes.
    await page.focus('#sites button[data-act=approve][data-site="site-1"]');
    await page.keyboard.press('Enter');
    await page.waitForSelector('#confirm[open]');
    expect(await page.textContent('#confirm-detail')).toBe(api.find((s) => s.siteId === 'site-1')!.signKeyFingerprint);
    await page.keyboard.press('Escape');
    await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
    expect((await fed.admin.request<Site[]>('GET', '/api/sites')).find((s) => s.siteId === 'site-1')!.status).toBe('pending');
    await shot('sites-pending');
    for (const siteId of ['site-1', 'site-2', 'rogue']) {
      await page.click(`#sites button[data-act=approve][data-site="${siteId}"]`);
      await page.waitForSelector('#confirm[open]');
      expect(await page.textContent('#confirm-text')).toContain(`Approve site ${siteId}?`);
      expect(await page.textContent('#confirm-detail')).toBe(api.find((s) => s.siteId === siteId)!.signKeyFingerprint);
      await page.click('#confirm-ok');
      await page.waitForSelector('#confirm:not([open])', { state: 'attached' });
    }
    expect((await fed.admin.request<Site[]>('GET', '/api/sites')).map((s) => s.status)).toEqual(['approved', 'approved', 'approved']);
    expect((await rogue.hello(4, undefined, 3)).ok).toBe(true);
    // The sites ask again by themselves and are let in; the page is told (pushed, not polled).
    await Promise.all(fed.sites.map((s) => s.waitFor((l) => l.msg === 'connected to coordinator', 60_000, 'the approved site to connect')));
    await page.waitForFunction(() => [...document.querySelectorAll('#sites tbody tr')].filter((tr) => tr.children[3]?.textContent === 'yes').length === 3, null, { timeout: 30_000 });
    // Active learning: each site's labelled images as a number and a bar, its definition on hover.
    await page.waitForFunction(() => [...document.querySelectorAll('#sites td.labelled')].some((td) => td.textContent === '3'));
    const labelled = await page.$$eval('#sites tbody tr', (trs) =>
      trs.map((tr) => { const td = tr.querySelector('td.labelled')!; const m = td.querySelector('meter')!; return [tr.querySelector('td')!.textContent, td.textContent, m.getAttribute('value'), m.getAttribute('max'), td.getAttribute('title')]; }),
    );
    expect(labelled.find((r) => r[0] === 'rogue')).toEqual(['rogue', '3', '3', '4', expect.stringMatching(/^3 images labelled by the site's pathologists through active learning .*4 training images: 75 %/)]);
    expect(labelled.filter((r) => r[0] !== 'rogue').map((r) => [r[1], r[2]])).toEqual([['0', '0'], ['0', '0']]);
    await shot('sites-approved');
  });

  it('creates a run from the form built from the run-config schema: an invalid value is shown at its field and creates nothing', async () => {
    await page.click('#new-run-details summary');
    await page.waitForSelector('#f-rounds');
    // Every option of the schema is offered, with its default.
    const schema = await fed.admin.request<{ properties: Record<string, { default?: unknown }> }>('GET', '/api/runs/config-schema');
    expect(await page.$$eval('#run-form .field', (fs) => fs.map((f) => f.getAttribute('data-field')))).toEqual(Object.keys(schema.properties));
    expect(await page.inputValue('#f-rounds')).toBe(String(schema.properties.rounds.default));
    expect(await page.inputValue('#f-strategy')).toBe('fedavg');

    await page.fill('#f-name', `${MARKUP}run`);
    await page.fill('#f-rounds', '0');
    await page.fill('#f-model', JSON.stringify({ kind: 'small-cnn', imageSize: 24, numClasses: 2, subtypeParents: [0, 0, 0, 0, 1, 1, 1, 1] }));
    await page.click('#run-form button[type=submit]');
    await page.waitForSelector('.field.invalid');
    expect(await page.$$eval('.field.invalid', (fs) => fs.map((f) => f.getAttribute('data-field')))).toEqual(['rounds']);
    expect(await page.textContent('#f-rounds-error')).toMatch(/>=\s*1/);
    expect(await page.getAttribute('#f-rounds', 'aria-invalid')).toBe('true');
    expect(await page.textContent('#form-status')).toMatch(/Not created/);
    expect(await runs()).toEqual([]);
    await shot('run-form-error');

    await page.fill('#f-rounds', '2');
    await page.fill('#f-minSites', '2');
    await page.fill('#f-gatherSeconds', '0');
    await page.click('#run-form button[type=submit]');
    await page.waitForSelector('#runs button[data-start]');
    expect(await page.$$('.field.invalid')).toEqual([]);
    const created = await runs();
    expect(created.map((r) => [r.status, r.config.name])).toEqual([['created', `${MARKUP}run`]]);
    runId = created[0].id;
    // A run that has not finished has no saved models to download.
    const early = await fetch(`${fed.url}/api/runs/${runId}/models.tar`, { headers: { authorization: `Bearer ${fed.token}` } });
    expect([early.status, ((await early.json()) as { message: string }).message]).toEqual([404, expect.stringMatching(/has no saved models/)]);
    await page.click('#new-run-details summary');
  });

  it('starts the run from the page; the rounds chart gains its points live, and each site\'s progress is pushed', async () => {
    expect(await seriesData('chart-central', 0)).toEqual([]);
    // The number of points of the central metrics' first line, recorded in the page whenever it changes.
    await page.evaluate(`
      window.__points = [];
      setInterval(() => {
        const n = echarts.getInstanceByDom(document.getElementById('chart-central')).getOption().series[0].data.length;
        if (window.__points.at(-1) !== n) window.__points.push(n);
      }, 50);
      // The loss chart's lines, the longest each site's line has been.
      window.__loss = {};
      setInterval(() => {
        for (const s of echarts.getInstanceByDom(document.getElementById('chart-loss')).getOption().series) {
          if ((window.__loss[s.name] || []).length < s.data.length) window.__loss[s.name] = s.data;
        }
      }, 50);
    `);
    // From the top of the page (sites, runs, the live round and the first charts in view), the
    // layout shifts not caused by the user are recorded from here on.
    await page.evaluate('window.scrollTo(0, 0); window.__shifts = []');
    await page.click(`#runs button[data-start="${runId}"]`);
    await page.waitForFunction(() => (window.__points.at(-1) ?? 0) >= 1, null, { timeout: 180_000 });
    await shot('run-live');
    await page.waitForFunction(() => /completed/.test(document.querySelector('#runs tbody')?.textContent ?? ''), null, { timeout: 180_000 });
    await page.waitForSelector('#run button[data-download]', { timeout: 30_000 });
    const line = (await seriesData('chart-central', 0)) as [number, number][];
    expect(line.map((p) => p[0])).toEqual([1, 2]);
    // The same page (no reload) went from no point to both rounds' as they were pushed.
    const points = (await page.evaluate('window.__points')) as number[];
    expect(points[0]).toBe(0);
    expect(points.at(-1)).toBe(2);
    expect([...points].sort()).toEqual(points);
    // Nothing in view moved while the updates were pushed (the Cumulative Layout Shift of the run: ~0).
    const shifts = (await page.evaluate('window.__shifts')) as number[];
    expect(shifts.reduce((a, b) => a + b, 0)).toBeLessThan(0.01);
    const tasks = (await page.evaluate('window.__tasks')) as string[];
    expect([...new Set(tasks.map((t) => t.trim()))].filter((t) => /^round 1: training, epoch 1\/1, batch \d+\/\d+, loss \d/.test(t))).not.toEqual([]);
    // The loss within the round: each site's batch losses as they were pushed (the rogue's one report: batch 1, 0.7).
    const loss = (await page.evaluate('window.__loss')) as Record<string, [number, number][]>;
    expect(loss['rogue']).toEqual([[1, 0.7]]);
    for (const siteId of ['site-1', 'site-2']) {
      expect(loss[siteId].length).toBeGreaterThanOrEqual(1);
      for (const [batch, value] of loss[siteId]) expect([Number.isInteger(batch) && batch >= 1, Number.isFinite(value) && value > 0]).toEqual([true, true]);
      expect(loss[siteId].map((p) => p[0])).toEqual([...loss[siteId].map((p) => p[0])].sort((a, b) => a - b));
    }
    // The rogue's progress: accepted about its own task, refused with a field the schema does not know.
    const replies = Object.fromEntries(rogue.replies.map((r) => [r.what, r.ack]));
    expect(replies['progress']).toEqual({ ok: true });
    expect(replies['progress with a file name']).toEqual({ ok: false, error: expect.stringMatching(/^site:progress: .*file/), code: 'invalid-message' });
  });

  it('draws the finished run\'s confusion matrices and reliability diagram with the API\'s numbers', async () => {
    const m = await fed.admin.request<Metrics>('GET', `/api/runs/${runId}/metrics`);
    const confusion = m.final.confusion['ensemble'];
    expect(confusion.stage1).toHaveLength(2);
    expect(confusion.subtype).toHaveLength(8);
    expect(await page.inputValue('#confusion-model')).toBe('ensemble');
    // The chart's data: [predicted, true, count] for every cell.
    const cells = (matrix: number[][]) => matrix.flatMap((row, t) => row.map((v, p) => [p, t, v]));
    expect(await seriesData('chart-confusion-stage1', 0)).toEqual(cells(confusion.stage1));
    expect(await seriesData('chart-confusion-subtype', 0)).toEqual(cells(confusion.subtype!));
    // And what is drawn: each cell's count is a label in the SVG.
    const labels = await page.$$eval('#chart-confusion-stage1 svg text', (ts) => ts.map((t) => t.textContent ?? '').filter((t) => /^\d+$/.test(t)).map(Number));
    expect(labels.sort((a, b) => a - b)).toEqual(confusion.stage1.flat().sort((a, b) => a - b));
    expect(confusion.stage1.flat().reduce((a, b) => a + b, 0)).toBe(confusion.images);
    // The reliability diagram: each non-empty bin at (mean confidence, accuracy), before and after the temperature.
    const bins = (list: Bin[]) => list.filter((b) => b.count > 0).map((b) => [b.confidence, b.accuracy, b.count]);
    const { reliabilityBefore, reliabilityAfter } = m.final.calibration.global;
    expect(bins(reliabilityBefore).length).toBeGreaterThan(0);
    expect(await seriesData('chart-reliability', 1)).toEqual(bins(reliabilityBefore));
    expect(await seriesData('chart-reliability', 2)).toEqual(bins(reliabilityAfter));
    expect(await page.$$('#chart-reliability svg path')).not.toHaveLength(0);
    await shot('run-finished', true);
    // Charts, tooltips and the page's own updates all stay within its CSP.
    await page.hover('#chart-confusion-stage1 svg');
    await page.hover('#chart-central svg');
    expect(cspViolations).toEqual([]);
    // Another model's matrices, picked with the keyboard-reachable select.
    await page.selectOption('#confusion-model', 'global');
    expect(await seriesData('chart-confusion-stage1', 0)).toEqual(cells(m.final.confusion['global'].stage1));
  });

  it('draws the calibration, the review rule and every member\'s central metrics with the API\'s numbers', async () => {
    const { final } = await fed.admin.request<Metrics>('GET', `/api/runs/${runId}/metrics`);
    const { calibration: cal, review } = final;
    const g = cal.global;
    // ECE before and after the temperature: the global model on the test split and the sites' validation images, each personalized model on its own.
    const sites = Object.keys(g.perSite).sort();
    const personalized = Object.keys(cal.personalized).sort();
    const eceRows = [[g.eceBefore, g.eceAfter], [g.validation.eceBefore, g.validation.eceAfter], ...sites.map((s) => [g.perSite[s].eceBefore, g.perSite[s].eceAfter]), ...personalized.map((s) => [cal.personalized[s].eceBefore, cal.personalized[s].eceAfter])]
      .filter(([b, a]) => b !== null || a !== null);
    expect(eceRows.length).toBeGreaterThanOrEqual(2);
    expect(await seriesData('chart-ece', 0)).toEqual(eceRows.map((r) => r[0]));
    expect(await seriesData('chart-ece', 1)).toEqual(eceRows.map((r) => r[1]));
    // The temperatures: the global model's, then each personalized model's.
    expect(g.temperature).not.toBeNull();
    expect(await seriesData('chart-temperature', 0)).toEqual([g.temperature!.stage1, ...personalized.map((s) => cal.personalized[s].temperature.stage1)]);
    // The review rule: the share flagged, the accuracy of all and of the unflagged images.
    const rules = [review.global!, ...Object.keys(review.personalized).sort().map((s) => review.personalized[s])];
    expect(await seriesData('chart-review', 0)).toEqual(rules.map((r) => r.reviewRate));
    expect(await seriesData('chart-review', 1)).toEqual(rules.map((r) => r.accuracyAll));
    expect(await seriesData('chart-review', 2)).toEqual(rules.map((r) => r.accuracyUnflagged));
    expect(await page.textContent('#run')).toContain('Calibration and review rule');
    expect(await page.getAttribute('#run th:text("review threshold")', 'title')).toMatch(/normalized predictive entropy/);
    // Every member's central metrics (final.memberMetrics), then the ensemble.
    expect(Object.keys(final.memberMetrics).sort()).toEqual([...final.ensembleMembers].sort());
    expect(await seriesData('chart-final', 0)).toEqual([...final.ensembleMembers.map((id) => final.memberMetrics[id].balancedAccuracy), final.ensemble.balancedAccuracy]);
    // This run's ensemble is the plain mean: nothing was fitted, and the figure says so.
    expect(await seriesData('chart-ensemble-fit', 0)).toBeNull();
    expect(await page.$$eval('#chart-ensemble-fit svg text', (ts) => ts.map((t) => t.textContent).join(' '))).toMatch(/plain mean/);
  });

  it('offers the finished run\'s models for download: the weights, and the saved models as one tar archive that loads', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#run button[data-download="0"]')]);
    expect(download.suggestedFilename()).toMatch(new RegExp(`^${runId.slice(0, 8)}-global-[0-9a-f]{12}\\.hfw$`));
    // The saved models: fetched by the page with the token in the header, saved from a blob.
    const [archive] = await Promise.all([page.waitForEvent('download'), page.click(`#run button[data-archive="${runId}"]`)]);
    expect(archive.suggestedFilename()).toBe(`histofed-${runId}-models.tar`);
    const tarFile = (await archive.path())!;
    const into = join(work, 'unpacked');
    const listed = await untar(tarFile, into);
    // Every file of the run's model directory, under <run id>/, byte for byte.
    const { final } = await fed.admin.request<Metrics>('GET', `/api/runs/${runId}/metrics`);
    const files = filesUnder(final.modelsDir);
    expect(files).toEqual(expect.arrayContaining(['histofed-ensemble.json', join('global', 'histofed-model.json'), join('global', 'weights.bin')]));
    expect(listed).toEqual(files.map((f) => `${runId}/${f.split('\\').join('/')}`).sort());
    for (const f of files) expect(readFileSync(join(into, runId, f)).equals(readFileSync(join(final.modelsDir, f)))).toBe(true);
    expect(statSync(tarFile).size % 512).toBe(0);
    // ... and the models load from it: a member, and the run directory as the ensemble.
    await selectBackend('cpu');
    const global = await loadModel(join(into, runId, 'global'));
    expect(global.manifest.provenance).toEqual(expect.objectContaining({ kind: 'global', runId }));
    global.model.dispose();
    const ensemble = await loadEnsemble(join(into, runId));
    expect(ensemble.manifest.members).toEqual(final.ensembleMembers);
    for (const m of ensemble.members) m.model.dispose();
  });

  it('draws a fitted combiner from the API: the weighted mean\'s weights per member, stacking\'s start vs fitted NLL per head', async () => {
    // This run's ensemble is the plain mean; the fits' figures are drawn from a report that has one
    // (the page's own request, answered with the real report plus an ensembleFit: no second run).
    const { final } = await fed.admin.request<Metrics>('GET', `/api/runs/${runId}/metrics`);
    const route = `**/api/runs/${runId}/metrics`;
    const showWith = async (ensembleFit: unknown, heading: string) => {
      await page.route(route, async (r) => {
        const res = await r.fetch();
        const body = (await res.json()) as { final: Record<string, unknown> };
        await r.fulfill({ response: res, json: { ...body, final: { ...body.final, ensembleFit } } });
      });
      await page.reload();
      await page.waitForFunction((h) => (document.querySelector('#run')?.textContent ?? '').includes(h), heading);
      await page.unroute(route);
    };
    const members = final.ensembleMembers;
    const weights = Object.fromEntries(members.map((id, i) => [id, i === 0 ? 0.5 : 0.5 / (members.length - 1)]));
    const refused = { rogue: `${MARKUP}no validation images` };
    await showWith(
      { combiner: 'weighted-mean', weights, fittedMembers: [members[0]], candidates: 11, validation: { images: 6, meanNll: 0.69, weightedNll: 0.65 }, centralMean: final.ensemble, sites: { answered: ['site-1', 'site-2'], refused } },
      'Ensemble fit: weighted mean',
    );
    expect(await seriesData('chart-ensemble-fit', 0)).toEqual(members.map((id, i) => (i === 0 ? weights[id] : null)));
    expect(await seriesData('chart-ensemble-fit', 1)).toEqual(members.map((id, i) => (i === 0 ? null : weights[id])));
    expect(((await seriesData('chart-final', 0)) as number[]).at(-1)).toBe(final.ensemble.balancedAccuracy); // the plain mean, for comparison
    expect(await page.textContent('#run')).toContain('validation NLL: mean 0.690 nats → weighted 0.650 nats (6 images, 11 candidate weightings)');
    expect(await page.textContent('#run')).toContain(`rogue: ${MARKUP}no validation images`);
    await showWith(
      { combiner: 'stacking', fittedMembers: members, stacking: { iterations: 20, stage1: { steps: 12, converged: true, images: 6, startNll: 0.7, fittedNll: 0.6, sites: ['site-1', 'site-2'] }, subtype: { steps: 20, converged: false, images: 6, startNll: 1.9, fittedNll: 1.7, sites: ['site-1', 'site-2'] } }, sites: { answered: ['site-1', 'site-2'], refused: {} } },
      'Ensemble fit: stacking',
    );
    expect(await seriesData('chart-ensemble-fit', 0)).toEqual([0.7, 1.9]);
    expect(await seriesData('chart-ensemble-fit', 1)).toEqual([0.6, 1.7]);
    // Back to the run as it is.
    await page.reload();
    await page.waitForSelector(`#run button[data-archive="${runId}"]`);
  });

  it('renders names and reasons with markup as text', async () => {
    const m = await fed.admin.request<Metrics>('GET', `/api/runs/${runId}/metrics`);
    expect(m.rounds[0].missing['rogue']).toContain(MARKUP);
    expect(await page.textContent('#runs tbody')).toContain(`${MARKUP}run`);
    expect(await page.textContent('#run')).toContain(`rogue (no answer): site failed: ${MARKUP}declined`);
    expect(await page.$$('#runs img, #run img, #run-title img')).toEqual([]);
    expect(await page.evaluate('window.__xss')).toBeUndefined();
  });

  it('fits a narrow window: nothing but the tables scrolls sideways', async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.waitForTimeout(300);
    expect(await page.evaluate('document.documentElement.scrollWidth <= window.innerWidth + 1')).toBe(true);
    await shot('narrow', true);
    await page.setViewportSize({ width: 1280, height: 800 });
  });
});
