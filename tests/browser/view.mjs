// Loads flowshard's live view in headless Chromium (Playwright) while traffic flows and checks
// that the ingest rate, the top talkers and an injected alert appear; saves a screenshot.
// Usage: node tests/browser/view.mjs URL SCREENSHOT.png   (playwright-core on NODE_PATH)
import { createRequire } from 'module';
const require = createRequire(import.meta.url);
const { chromium } = require('playwright-core');
const [url, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const page = await browser.newPage({ viewport: { width: 1440, height: 900 } });
await page.goto(url);
const result = {};
// ingest rate becomes a positive number
await page.waitForFunction(() => {
  const t = document.getElementById('rate').textContent; return t !== '–' && parseFloat(t) > 0;
}, null, { timeout: 30000 });
result.rate = await page.textContent('#rate');
// top talkers fill in
await page.waitForFunction(() => document.querySelectorAll('#top-dst_ip tr').length > 3, null, { timeout: 30000 });
result.top_dst = await page.$$eval('#top-dst_ip tr td:first-child', tds => tds.map(t => t.textContent));
// an injected alert appears (the DDoS victim or the scanner)
await page.waitForFunction(() => /10\.0\.0\.4|198\.51\.100\.66/.test(document.getElementById('alerts').textContent), null, { timeout: 60000 });
result.alerts = await page.$$eval('#alerts li', lis => lis.map(l => l.textContent));
// explore another dimension: its top keys, then the series of the first one
await page.waitForFunction(() => [...document.querySelectorAll('#xdim option')].some(o => o.value === 'dst_port'), null, { timeout: 30000 });
await page.selectOption('#xdim', 'dst_port');
await page.waitForFunction(() => /\/(tcp|udp)/.test(document.querySelector('#xtop tr[data-key]')?.dataset.key || ''), null, { timeout: 30000 });
const key = await page.getAttribute('#xtop tr[data-key]', 'data-key');
await page.click('#xtop tr[data-key]');
await page.waitForFunction(k => document.getElementById('xkey').textContent.includes('dst_port ' + k), key, { timeout: 30000 });
result.explore = await page.textContent('#xkey');
await page.screenshot({ path: shot, fullPage: true });
await browser.close();
console.log(JSON.stringify(result));
