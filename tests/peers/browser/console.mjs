// Drives the quarantine console in Debian's headless Chromium (playwright-core, no browser
// download), as a reviewer would: sign in, search by subject and by attachment name, open a
// message, deliver two, delete one, open an HTML message full of traps, and try what a
// reviewer without the right may not do. Every check that only the browser can see is made
// here (a failed one exits non-zero with the reason); the mail side (what arrived, what is
// left) is checked by the Rust test that runs this.
//
// usage: node console.mjs <console base URL> <reviewer token> <list-only token> <screenshot dir>
import { chromium } from 'playwright-core';

const [base, reviewerToken, listOnlyToken, shots] = process.argv.slice(2);
const origin = new URL(base).origin;

let page;
async function fail(what) {
  console.error(`FAILED: ${what}`);
  if (page) console.error(`at ${page.url()}:\n${await page.content().catch(() => '')}`);
  process.exit(1);
}
function check(ok, what) {
  if (!ok) throw new Error(what);
}
process.on('uncaughtException', (e) => fail(e.stack ?? e));
process.on('unhandledRejection', (e) => fail(e.stack ?? e));

const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  headless: true,
  // As root Chromium needs --no-sandbox; the rest keeps it off the network it does not have.
  args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
         '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 860 } });
page = await context.newPage();
const elsewhere = [];
page.on('request', (r) => { if (!r.url().startsWith(origin)) elsewhere.push(r.url()); });
const dialogs = [];
page.on('dialog', async (d) => { dialogs.push(d.message()); await d.dismiss(); });
const report = {};

async function signIn(token) {
  await page.goto(`${base}/console/`);
  check(page.url().endsWith('/console/login'), `signed out, /console/ leads to the login page (at ${page.url()})`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForURL(`${base}/console/`);
}

async function rowSubjects() {
  return page.locator('table.held tbody td[data-label=Subject]').allInnerTexts();
}

async function search(q, field) {
  await page.getByLabel('Search', { exact: true }).fill(q);
  await page.getByLabel('In', { exact: true }).selectOption(field);
  await page.getByRole('button', { name: 'Search' }).click();
  await page.waitForLoadState();
  return rowSubjects();
}

// A wrong token: refused, still on the login page.
await page.goto(`${base}/console/login`);
await page.getByLabel('Token').fill('not-a-token');
await page.getByRole('button', { name: 'Sign in' }).click();
check((await page.locator('.error').innerText()).includes('not accepted'), 'a wrong token is refused');

await signIn(reviewerToken);
const cookies = await context.cookies();
const session = cookies.find((c) => c.name === '__Host-postern-console');
check(session && session.httpOnly && session.secure && session.sameSite === 'Lax', `session cookie flags: ${JSON.stringify(session)}`);
report.listed = await rowSubjects();
await page.screenshot({ path: `${shots}/console-list.png`, fullPage: true });

report.bySubject = await search('invoice', 'subject');
report.byAttachment = await search('budget', 'attachment');

// Keyboard: the message's link is reachable and opens with Enter.
await page.getByRole('link', { name: 'Quarterly report' }).focus();
await page.keyboard.press('Enter');
await page.waitForURL(/\/console\/m\//);
report.detailHeaders = await page.locator('table.headers th[scope=row]').allInnerTexts();
report.detailSubject = await page.locator('h1').innerText();
report.attachments = await page.locator('table.attachments td[data-label=Name]').allInnerTexts();
await page.screenshot({ path: `${shots}/console-detail.png`, fullPage: true });

// Deliver two, with the confirmation step.
await page.goto(`${base}/console/`);
await page.getByRole('checkbox', { name: 'Select “Quarterly report”' }).check();
await page.getByRole('checkbox', { name: 'Select “Invoice 4411”' }).check();
await page.getByRole('button', { name: 'Deliver selected' }).click();
report.confirmDeliver = await page.locator('main').innerText();
await page.getByRole('button', { name: 'Deliver', exact: true }).click();
report.delivered = await page.locator('table.results td[data-label=Result]').allInnerTexts();

// Delete one.
await page.goto(`${base}/console/`);
await page.getByRole('checkbox', { name: 'Select “Lunch plans”' }).check();
await page.getByRole('button', { name: 'Delete selected' }).click();
await page.getByRole('button', { name: 'Delete', exact: true }).click();
report.deleted = await page.locator('table.results td[data-label=Result]').allInnerTexts();
await page.goto(`${base}/console/`);
report.left = await rowSubjects();

// The HTML message full of traps: nothing runs, nothing is fetched.
await page.getByRole('link', { name: 'Unsafe HTML' }).click();
await page.waitForURL(/\/console\/m\//);
await page.waitForLoadState('networkidle');
report.unsafe = await page.evaluate(() => ({
  pwned: window.__pwned === true,
  scripts: document.querySelectorAll('.html-body script').length,
  handlers: [...document.querySelectorAll('.html-body *')].flatMap((e) => [...e.attributes].map((a) => a.name)).filter((n) => n.startsWith('on')),
  imageSources: [...document.querySelectorAll('.html-body img')].map((i) => i.getAttribute('src')),
  links: [...document.querySelectorAll('.html-body a')].map((a) => a.getAttribute('href')),
  text: document.querySelector('.html-body')?.innerText ?? '',
}));
// A click on what was the javascript: link does nothing either.
const jsLink = page.locator('.html-body a', { hasText: 'click me' });
if (await jsLink.count()) await jsLink.click();
report.unsafe.pwnedAfterClick = await page.evaluate(() => window.__pwned === true);
report.dialogs = dialogs;
report.elsewhere = elsewhere;

// Sign out; a reviewer who may only list gets 403 on a message.
await page.getByRole('button', { name: 'Sign out' }).click();
await page.waitForURL(`${base}/console/login`);
await signIn(listOnlyToken);
const href = await page.getByRole('link', { name: 'Unsafe HTML' }).getAttribute('href');
const forbidden = await page.goto(`${base}${href}`);
report.listOnlyStatus = forbidden.status();
report.listOnlyText = await page.locator('main').innerText();

// Small screens: the list reflows into cards, nothing scrolls sideways.
await page.setViewportSize({ width: 390, height: 844 });
await page.goto(`${base}/console/`);
report.phoneOverflow = await page.evaluate(() => document.documentElement.scrollWidth > window.innerWidth + 1);

await browser.close();
console.log(JSON.stringify(report));
