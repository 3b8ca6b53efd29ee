// The dashboard in headless Chromium against a real relay's admin listener:
// the page loads with the token from the URL fragment, lists a route created
// after it loaded, and its counters and chart move when traffic flows; a token
// that cannot be sent brings the form back; a token given twice polls once.
import { existsSync } from 'node:fs';
import { chromium } from 'playwright-core';
import t from 'tap';
import { testAgent } from '../helpers/agent.js';
import { tempDir } from '../helpers/fs.js';
import { get, testServer } from '../helpers/http.js';
import { freePort } from '../helpers/net.js';
import { type Teardownable, testRelay } from '../helpers/relay.js';

const CHROMIUM = '/usr/bin/chromium';

// The page functions below run in the browser; the tests compile without the
// DOM library, so declare the little of it they use.
interface PageElement {
  textContent: string | null;
  hidden: boolean;
  dataset: Record<string, string | undefined>;
}
declare function addEventListener(type: string, listener: () => void): void;
declare const location: { hash: string };
declare class MutationObserver {
  constructor(callback: () => void);
  observe(target: never, options: { childList: boolean }): void;
}
declare const document: {
  getElementById(id: string): PageElement | null;
  querySelector(selector: string): PageElement | null;
};
// Base64-like, as `openssl rand -base64` makes: "+" must survive the URL fragment.
const TOKEN = 'dashboard+admin/token+0123456789==';

/** Headless Chromium with a fresh profile, closed at teardown. */
async function launch(t: Teardownable) {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is not installed (Debian package chromium)`);
  const profile = await tempDir(t, 'burrow-chromium-');
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  t.teardown(() => browser.close());
  return browser;
}

t.test('dashboard shows new routes and live traffic', async (t) => {
  const tcpPort = await freePort();
  const relay = await testRelay(t, {
    admin: { host: '127.0.0.1', port: 0 },
    adminToken: TOKEN,
    tcp: { host: '127.0.0.1', ports: [tcpPort] },
  });
  const base = `http://127.0.0.1:${relay.adminAddress!.port}`;
  const browser = await launch(t);
  const pageErrors: string[] = [];
  const open = async () => {
    const p = await browser.newPage();
    p.on('pageerror', (err) => pageErrors.push(err.message));
    return p;
  };
  const login = await open();

  // Without a token the page asks for one.
  await login.goto(`${base}/`);
  await login.waitForSelector('#login:not([hidden])');
  t.match(await login.textContent('#login-message'), /admin token/);

  // A wrong token: the API refuses and the page says so.
  await login.fill('#token', 'wrong-token-wrong-token');
  await login.click('#login button');
  await login.waitForFunction(() =>
    /refused|Bearer/.test(document.getElementById('login-message')!.textContent ?? ''),
  );
  t.equal(await login.isVisible('#main'), false);
  await login.close();

  // The token in the URL fragment: never sent to the server, removed from the address bar.
  const page = await open();
  await page.goto(`${base}/#token=${TOKEN}`);
  await page.waitForSelector('#main:not([hidden])');
  t.equal(new URL(page.url()).hash, '', 'the token left the address bar');
  await page.waitForFunction(() => document.querySelector('#routes tbody')!.textContent!.includes('none'));

  // A route created while the page is open appears.
  const backend = await testServer(t, (req, res) => {
    req.resume();
    res.end('x'.repeat(2048));
  });
  await testAgent(
    t,
    relay,
    [
      { id: 'dash', hostnames: ['dash.dashboard.test'], target: backend.url },
      { id: 'dash-db', hostnames: [], ports: [tcpPort], target: 'tcp://127.0.0.1:9' },
    ],
    { sub: 'dash-tenant' },
  );
  await page.waitForFunction(() =>
    document.querySelector('#routes tbody')!.textContent!.includes('dash.dashboard.test'),
  );
  await page.waitForFunction(
    (port) =>
      document.querySelector('#routes tbody')!.textContent!.includes(`TCP port ${port}dash-tenantdash-db`),
    tcpPort,
  );
  await page.waitForFunction(() =>
    document.querySelector('#agents tbody')!.textContent!.includes('dash-tenant'),
  );
  t.equal(await page.textContent('#agent-count'), '1');

  // Traffic: the totals and the requests/s chart move.
  const before = Number(await page.textContent('#total-requests'));
  for (let i = 0; i < 20; i++)
    t.equal((await get(relay.httpAddress.port, 'dash.dashboard.test')).status, 200);
  await get(relay.httpAddress.port, 'nowhere.dashboard.test');
  await page.waitForFunction(
    (n) => Number(document.getElementById('total-requests')!.textContent) >= n,
    before + 21,
  );
  await page.waitForFunction(() => Number(document.getElementById('chart-requests')!.dataset['peak']) > 0);
  await page.waitForFunction(() => Number(document.getElementById('chart-bytes')!.dataset['peak']) > 0);
  const points = await page.getAttribute('#chart-requests polyline', 'points');
  t.ok(points && points.split(' ').length >= 1, 'the chart has points');
  await page.waitForFunction(() =>
    document.querySelector('#errors tbody')!.textContent!.includes('unknown_host'),
  );
  t.same(pageErrors, [], 'no script errors in the page');
});

t.test('a token no request can carry sends the page back to the form', async (t) => {
  const relay = await testRelay(t, { admin: { host: '127.0.0.1', port: 0 }, adminToken: TOKEN });
  const browser = await launch(t);
  const page = await browser.newPage();
  await page.goto(`http://127.0.0.1:${relay.adminAddress!.port}/`);
  await page.waitForSelector('#login:not([hidden])');
  // Pasted with typographic quotes: not a character an HTTP header may hold.
  await page.fill('#token', `\u201c${TOKEN}\u201d`);
  await page.click('#login button');
  await page.waitForFunction(
    () =>
      !document.getElementById('login')!.hidden ||
      /unreachable/.test(document.getElementById('status')!.textContent ?? ''),
  );
  t.equal(await page.isVisible('#login'), true, 'the form is back');
  t.match(await page.textContent('#login-message'), /printable/);
  t.notMatch(await page.textContent('#status'), /unreachable/);
});

t.test('a token given again while a poll is in flight leaves one polling loop', async (t) => {
  const relay = await testRelay(t, { admin: { host: '127.0.0.1', port: 0 }, adminToken: TOKEN });
  const browser = await launch(t);
  const page = await browser.newPage();
  // The page's fetch counts /api/stats calls and holds every call until released; #status
  // changes to "updated …" are counted as each poll completes.
  await page.addInitScript(() => {
    const w = globalThis as unknown as Record<string, unknown> & { fetch: typeof fetch };
    const realFetch = w.fetch.bind(globalThis);
    w['statsCalls'] = 0;
    w['pollsDone'] = 0;
    w['held'] = new Promise((resolve) => (w['release'] = resolve));
    w.fetch = async (input, init) => {
      if (String(input).includes('/api/stats')) w['statsCalls'] = (w['statsCalls'] as number) + 1;
      await w['held'];
      return realFetch(input, init);
    };
    addEventListener('DOMContentLoaded', () => {
      const status = document.getElementById('status') as unknown as object;
      new MutationObserver(() => {
        if ((status as PageElement).textContent?.startsWith('updated'))
          w['pollsDone'] = (w['pollsDone'] as number) + 1;
      }).observe(status as never, { childList: true });
    });
  });
  await page.clock.install();
  await page.goto(`http://127.0.0.1:${relay.adminAddress!.port}/#token=${TOKEN}`);
  const read = (name: string) => page.evaluate((n) => (globalThis as Record<string, unknown>)[n], name);
  await page.waitForFunction(() => (globalThis as Record<string, unknown>)['statsCalls'] === 1);

  // The token arrives again (a second bookmark, say) while the first poll waits for the relay.
  await page.evaluate((token) => {
    location.hash = `token=${token}`;
  }, TOKEN);
  await page.waitForFunction(() => (globalThis as Record<string, unknown>)['statsCalls'] === 2);
  await page.evaluate(() => ((globalThis as Record<string, unknown>)['release'] as () => void)());
  await page.waitForFunction(() => (globalThis as Record<string, unknown>)['pollsDone'] === 2);

  // One poll period later the page asks once, not once per start.
  await page.clock.runFor(1000);
  t.equal(await read('statsCalls'), 3, 'one /api/stats per period');
  // The next period starts when this poll has its answers.
  await page.waitForFunction(() => (globalThis as Record<string, unknown>)['pollsDone'] === 3);
  await page.clock.runFor(1000);
  t.equal(await read('statsCalls'), 4, 'and still one in the next');
  t.equal(await page.isVisible('#main'), true);
});
