// GraphiQL in headless Chromium, as a person would use it: open /graphql, put the token in the
// Headers editor, run a query, then a mutation, and read what the result panel renders.
// Usage: GRAPHQL_URL=... GRAPHQL_TOKEN=... CHROMIUM=/usr/bin/chromium ARTIFACTS=dir \
//        node graphiql.mjs '<query>' '<mutation>'
// Prints one JSON document: the rendered result of each operation, the screenshots, the
// requests that tried to leave the machine (blocked) and the page's errors.
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const { GRAPHQL_URL: url, GRAPHQL_TOKEN: token, ARTIFACTS: artifacts } = process.env;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const operations = process.argv.slice(2);
if (!url || !token || !artifacts || operations.length === 0) {
  console.error('GRAPHQL_URL, GRAPHQL_TOKEN, ARTIFACTS and at least one operation are required');
  process.exit(2);
}
const TIMEOUT = 20_000;

const profile = mkdtempSync(join(tmpdir(), 'gql-billing-chromium-'));
mkdirSync(artifacts, { recursive: true });
const context = await chromium.launchPersistentContext(profile, {
  executablePath,
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
  viewport: { width: 1400, height: 900 },
});
const origin = new URL(url).origin;
const blocked = [];
const pageErrors = [];
const report = { results: [], screenshots: [], blocked, pageErrors };
try {
  // The playground must work offline: anything not served by the app is refused and reported.
  await context.route('**/*', (route) => {
    const target = route.request().url();
    if (target.startsWith(origin) || target.startsWith('data:')) return route.continue();
    blocked.push(target);
    return route.abort();
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(TIMEOUT);
  page.on('pageerror', (error) => pageErrors.push(String(error)));

  await page.goto(url, { waitUntil: 'load' });
  await page.locator('.graphiql-query-editor .CodeMirror').waitFor();

  // The Headers tab of the editor tools, below the query editor.
  await page.getByRole('button', { name: 'Headers' }).click();
  const headers = JSON.stringify({ Authorization: `Bearer ${token}` }, null, 2);
  await replaceText(page, '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror', headers);
  // The schema fetched on load had no token (401): fetch it again, and browse the docs.
  await page.getByRole('button', { name: 'Re-fetch GraphQL schema' }).click();
  await page.getByRole('button', { name: 'Show Documentation Explorer' }).click();
  await page.locator('.graphiql-doc-explorer').getByText('Query', { exact: true }).waitFor();
  report.docs = await page.locator('.graphiql-doc-explorer').innerText();

  for (const [index, operation] of operations.entries()) {
    await replaceText(page, '.graphiql-query-editor .CodeMirror', operation);
    // GraphiQL reads the operation's name from the editor a moment after each edit (a person
    // never runs faster than that): wait for it, or it sends the previous operation's name.
    const name = /^\s*(?:query|mutation|subscription)\s+([_A-Za-z]\w*)/.exec(operation)?.[1];
    await page.waitForFunction(
      (expected) =>
        (document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror.operationName ??
          null) === expected,
      name ?? null,
    );
    const before = await resultText(page);
    await page.locator('.graphiql-execute-button').click();
    // The panel shows the answer once its text changes to a GraphQL response.
    await page.waitForFunction(
      (previous) => {
        const text = document.querySelector('.graphiql-response')?.innerText ?? '';
        return text !== previous && /"(data|errors)"/.test(text);
      },
      before,
      { timeout: TIMEOUT },
    );
    report.results.push(await resultText(page));
    const screenshot = join(artifacts, `graphiql-${index + 1}.png`);
    await page.screenshot({ path: screenshot });
    report.screenshots.push(screenshot);
  }
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(report, null, 2));

// Types into a CodeMirror editor as a person would: focus it, select all, type the text
// (inserted as is, so the editor's bracket closing does not double what is typed).
async function replaceText(page, selector, text) {
  const editor = page.locator(selector).first();
  await editor.click();
  await page.keyboard.press('Control+A');
  await page.keyboard.press('Delete');
  await page.keyboard.insertText(text);
  const value = await editor.evaluate((element) => element.CodeMirror.getValue());
  if (value !== text) throw new Error(`the editor holds ${JSON.stringify(value)}`);
}

async function resultText(page) {
  return page.locator('.graphiql-response').innerText();
}
