// Screenshot of an MLflow experiment's runs table, parent rows expanded, in headless Chromium.
// Usage: node ui_screenshot.mjs URL OUT.png   (run by bench/ui_screenshot.sh)
// Fails (exit 1) on a page error, a console error, or a table that never shows a child run.
import { chromium } from "playwright-core";

const [url, out] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"],
});
const page = await browser.newPage({ viewport: { width: 1900, height: 800 } });
const errors = [];
page.on("pageerror", (e) => errors.push(`pageerror: ${e.message}`));
page.on("console", (m) => { if (m.type() === "error") errors.push(`console: ${m.text()}`); });
await page.goto(url, { waitUntil: "domcontentloaded" });
await page.waitForSelector(".ag-row", { timeout: 30000 });
// Expand each parent row (the icon button before its name) so its variants show under it.
for (const expander of await page.$$("[col-id='attributes.`Run Name`'] button[data-component-id*='runnamecellrenderer']")) {
  await expander.click();
}
await page.waitForFunction(() => document.body.innerText.includes(" · "), null, { timeout: 30000 });
await page.waitForTimeout(1000);
await page.screenshot({ path: out, fullPage: false });
await browser.close();
// MLflow's UI asks the server for optional features this store lacks; those 404s are not ours.
const real = errors.filter((e) => !/404|Failed to load resource/.test(e));
if (real.length) { console.error(real.join("\n")); process.exit(1); }
console.log(`wrote ${out}`);
