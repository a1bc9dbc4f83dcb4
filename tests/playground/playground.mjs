// The playground page in a real headless Chromium (Debian's, through playwright-core):
// usage `node playground.mjs BASE_URL CHROMIUM SCREENSHOT.png`.
//
// It chats with the server-managed agent (streamed text, a tool call with custom state, an
// artifact, an interrupt approved), branches from an earlier snapshot, runs a turn in the
// background and aborts it, denies an interrupt of the client-managed agent, and takes a
// screenshot. It prints one JSON object of what the page showed, checked by tests/test_playground.py.

import { chromium } from "playwright-core";

const [base, executablePath, screenshot] = process.argv.slice(2);
const TIMEOUT = 15_000;
const seen = {};
const consoleErrors = [];

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 860 } });
  page.setDefaultTimeout(TIMEOUT);
  page.on("console", (m) => { if (m.type() === "error" && !page.url().includes("?api=")) consoleErrors.push(m.text()); });
  page.on("pageerror", (e) => consoleErrors.push(String(e)));
  const external = [];
  page.on("request", (r) => { if (!r.url().startsWith(base)) external.push(r.url()); });

  await page.goto(`${base}/ui`);
  await page.waitForFunction(() => document.querySelectorAll("#agent option").length > 0);
  seen.agents = await page.$$eval("#agent option", (os) => os.map((o) => o.value));
  await page.selectOption("#agent", "chat");
  seen.kind = await page.textContent("#agent-kind");

  const idle = () => page.waitForSelector('#status[data-status="idle"]');
  const lastModelText = () => page.$$eval(".msg.model", (ms) => ms.at(-1)?.querySelector(".text:last-of-type")?.textContent ?? "");
  async function say(text) {
    await page.fill("#input", text);
    await page.press("#input", "Enter");
    await page.waitForSelector('#status[data-status="streaming"]', { timeout: 2000 }).catch(() => {});
    await idle();
  }

  // Streamed text: count the distinct texts the answer showed while it streamed in.
  await page.evaluate(() => {
    window.__texts = new Set();
    new MutationObserver(() => {
      const t = document.querySelector(".msg.model:last-of-type .text");
      if (t) window.__texts.add(t.textContent);
    }).observe(document.getElementById("log"), { subtree: true, childList: true, characterData: true });
  });
  await say("slow hello there");
  seen.hello = await lastModelText();
  seen.helloTexts = await page.evaluate(() => [...window.__texts]);

  await say("state happy");
  seen.stateTool = await page.$eval('.tool[data-tool="set_mood"] .output', (e) => e.textContent);
  seen.state = JSON.parse(await page.textContent("#state"));

  await say("artifact notes");
  seen.artifacts = await page.$$eval("#artifacts li", (ls) => ls.map((l) => l.textContent));

  await say("approve launch");
  seen.question = await page.textContent('.tool[data-tool="approve_action"] .interrupt');
  await page.screenshot({ path: screenshot, fullPage: false }); // the approval waiting, state and artifacts beside it
  await page.click('.tool[data-tool="approve_action"] button.approve');
  await idle();
  seen.approvedOutput = await page.$eval('.tool[data-tool="approve_action"] .output', (e) => e.textContent);
  seen.afterApproval = await lastModelText();
  await page.waitForFunction(() => document.querySelectorAll("#snapshots li.snapshot").length >= 5);

  // Branch from the snapshot after the first turn, and continue from there.
  seen.snapshots = await page.$$eval("#snapshots li.snapshot .label", (ls) => ls.map((l) => l.textContent));
  await page.click('#snapshots li.snapshot:has-text("after “slow hello there”") button.branch');
  seen.branchedLog = await page.$$eval("#log .msg", (ms) => ms.map((m) => m.textContent));
  seen.branchedState = JSON.parse(await page.textContent("#state"));
  await say("again");
  seen.afterBranch = await lastModelText();
  await page.waitForFunction(() => document.querySelector("#snapshots li.current .label")?.textContent.includes("again"));
  seen.branchSnapshots = await page.$$eval("#snapshots li.snapshot .label", (ls) => ls.map((l) => l.textContent));

  // A background turn, aborted.
  await page.fill("#input", "block");
  await page.click("#send-detached");
  await page.waitForSelector("#task-panel:not([hidden])");
  await page.waitForFunction(() => document.getElementById("task-snapshot").textContent.length > 0);
  seen.taskBefore = await page.textContent("#task-status");
  await page.click("#abort");
  await page.waitForFunction(() => document.getElementById("task-status").textContent === "aborted");
  seen.taskAfter = await page.textContent("#task-status");
  await idle();

  // The client-managed agent: an interrupt denied.
  await page.selectOption("#agent", "stateless");
  seen.statelessKind = await page.textContent("#agent-kind");
  seen.detachDisabled = await page.$eval("#send-detached", (b) => b.disabled);
  await say("hello");
  await say("approve deploy");
  await page.click('.tool[data-tool="approve_action"] button.deny');
  await idle();
  seen.deniedOutput = await page.$eval('.tool[data-tool="approve_action"] .output', (e) => e.textContent);
  seen.afterDenial = await lastModelText();
  await say("count");
  seen.statelessCount = await lastModelText();
  seen.error = await page.$eval("#error", (e) => (e.hidden ? null : e.textContent));
  seen.external = external;

  // `?api=` points the page at agents served under another path.
  await page.goto(`${base}/ui/?api=/elsewhere/`);
  await page.waitForSelector("#error:not([hidden])");
  seen.elsewhereError = await page.textContent("#error");
  // ... but only under this server: another origin is refused, and nothing is fetched from it.
  await page.goto(`${base}/ui/?api=${encodeURIComponent("http://example.invalid/api/")}`);
  await page.waitForSelector("#error:not([hidden])");
  seen.otherOriginError = await page.textContent("#error");
  seen.externalAfterOtherOrigin = external.length;
} finally {
  await browser.close();
}
seen.consoleErrors = consoleErrors;
process.stdout.write(JSON.stringify(seen));
