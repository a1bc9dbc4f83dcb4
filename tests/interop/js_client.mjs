// Genkit's JavaScript remoteAgent() (npm genkit@1.42.0, `genkit/beta/client`) driving a server
// that speaks the agent protocol: turnkit's in the test suite, or Genkit's own as a reference.
//
//   node js_client.mjs BASE_URL [SCENARIO ...]
//
// BASE_URL serves the agents of app.py at BASE_URL/agents/chat (server-managed) and
// BASE_URL/agents/stateless (client-managed). Each scenario runs with its own chat and a time
// limit; the script prints one JSON object on stdout:
//   {"client": "genkit-js", "version": "1.42.0", "results": {NAME: {"ok": true, "value": ...} |
//    {"ok": false, "error": {"name", "message", "status", "stack"}}}}
// With no SCENARIO every scenario runs.

import { readFileSync } from 'node:fs';
import { AgentError, remoteAgent } from 'genkit/beta/client';

const SCENARIO_TIMEOUT_MS = 20000;
const POLL_MS = 50;

const base = process.argv[2];
if (!base) {
  console.error('usage: node js_client.mjs BASE_URL [SCENARIO ...]');
  process.exit(2);
}
const server = () => remoteAgent({ url: `${base}/agents/chat` });
const client = () => remoteAgent({ url: `${base}/agents/stateless` });

function describeError(e) {
  if (!(e instanceof Error)) return { name: typeof e, message: String(e) };
  return {
    name: e.name,
    isAgentError: e instanceof AgentError,
    message: e.message,
    status: e.status,
    snapshotId: e.snapshotId,
    finishReason: e.response?.finishReason,
    stack: e.stack?.split('\n').slice(0, 4).join('\n'),
  };
}

async function settle(promise) {
  try {
    return { ok: true, value: await promise };
  } catch (e) {
    return { ok: false, error: describeError(e) };
  }
}

function summary(res) {
  return {
    text: res.text,
    finishReason: res.finishReason,
    snapshotId: res.snapshotId,
    sessionId: res.sessionId,
    state: res.state,
    artifacts: res.artifacts,
    interrupts: res.interrupts.map((i) => ({ name: i.name, ref: i.ref, input: i.input })),
  };
}

function snap(s) {
  if (!s) return s ?? null;
  return {
    snapshotId: s.snapshotId,
    sessionId: s.sessionId,
    parentId: s.parentId,
    status: s.status,
    finishReason: s.finishReason,
    createdAt: s.createdAt,
    hasError: s.error !== undefined,
    messages: (s.state?.messages ?? []).map((m) => m.role),
    lastText: (s.state?.messages ?? []).at(-1)?.content?.map((p) => p.text ?? '').join(''),
    custom: s.state?.custom,
  };
}

async function collect(turn) {
  const chunks = [];
  for await (const c of turn.stream) {
    chunks.push({
      kinds: Object.keys(c.raw),
      text: c.text,
      accumulatedText: c.accumulatedText,
      toolRequests: c.toolRequests.map((p) => p.toolRequest.name),
      artifact: c.artifact ?? null,
      custom: c.custom ?? null,
      patch: c.raw.customPatch ?? null,
    });
  }
  return chunks;
}

const scenarios = {
  async send() {
    const chat = server().chat();
    const first = await chat.send('hello there');
    const second = await chat.send('again');
    return {
      first: summary(first),
      second: summary(second),
      chatSnapshotId: chat.snapshotId,
      chatSessionId: chat.sessionId,
      roles: chat.messages.map((m) => m.role),
    };
  },

  async stream() {
    const chat = server().chat();
    const turn = chat.sendStream('please stream these words');
    const chunks = await collect(turn);
    const res = await turn.response;
    return { chunks, response: summary(res) };
  },

  async state() {
    const chat = server().chat();
    const turn = chat.sendStream('state calm');
    const chunks = await collect(turn);
    const first = await turn.response;
    const afterFirst = chat.state;
    const secondTurn = chat.sendStream('state excited');
    const secondChunks = await collect(secondTurn);
    const second = await secondTurn.response;
    return {
      patches: chunks.filter((c) => c.patch).map((c) => c.patch),
      customs: chunks.filter((c) => c.patch).map((c) => c.custom),
      secondPatches: secondChunks.filter((c) => c.patch).map((c) => c.patch),
      first: summary(first),
      afterFirst,
      second: summary(second),
      afterSecond: chat.state,
    };
  },

  async artifacts() {
    const chat = server().chat();
    const turn = chat.sendStream('artifact summary');
    const chunks = await collect(turn);
    const first = await turn.response;
    const afterFirst = structuredClone(chat.artifacts);
    const second = await chat.send('artifact summary');
    const afterSecond = structuredClone(chat.artifacts);
    const third = await chat.send('artifact appendix');
    return {
      streamed: chunks.filter((c) => c.artifact).map((c) => c.artifact),
      first: summary(first),
      afterFirst,
      second: summary(second),
      afterSecond,
      third: summary(third),
      afterThird: chat.artifacts,
    };
  },

  async interrupt_respond() {
    const chat = server().chat();
    const first = await chat.send('approve deploy');
    const interrupt = first.interrupts[0];
    const answered = await chat.resume({ respond: [interrupt.respond({ approved: true, by: 'js' })] });
    const next = await chat.send('after approval');
    return { first: summary(first), answered: summary(answered), next: summary(next) };
  },

  async interrupt_restart() {
    const chat = server().chat();
    const first = await chat.send('approve rollback');
    const restarted = await chat.resume({ restart: [first.interrupts[0].restart()] });
    return { first: summary(first), restarted: summary(restarted) };
  },

  async failure() {
    const chat = server().chat();
    const ok = await chat.send('hello');
    const sent = await settle(chat.send('fail now'));
    const turn = chat.sendStream('fail streaming');
    const streamed = await settle(collect(turn));
    const response = await settle(turn.response);
    const recovered = await chat.send('recover');
    return {
      ok: summary(ok),
      send: sent.ok ? { unexpected: summary(sent.value) } : sent.error,
      stream: streamed.ok ? { chunks: streamed.value } : streamed.error,
      response: response.ok ? { unexpected: summary(response.value) } : response.error,
      recovered: summary(recovered),
      chatSnapshotId: chat.snapshotId,
    };
  },

  async detach() {
    const chat = server().chat();
    const first = await chat.send('hello');
    const task = await chat.detach('sleep 0.3');
    const detachedAt = chat.snapshotId;
    const polled = [];
    for await (const s of task.poll({ intervalMs: POLL_MS })) polled.push(snap(s));
    const after = await chat.send('after detach');
    const blocked = await chat.detach('block');
    const pendingBefore = snap(await server().getSnapshot(blocked.snapshotId));
    const abortedFrom = await blocked.abort();
    const final = snap(await blocked.wait({ intervalMs: POLL_MS }));
    const abortAgain = await blocked.abort();
    const bySession = snap(await server().getSnapshot({ sessionId: chat.sessionId }));
    return {
      first: summary(first),
      taskSnapshotId: task.snapshotId,
      detachedAt,
      polled,
      after: summary(after),
      blockedSnapshotId: blocked.snapshotId,
      pendingBefore,
      abortedFrom,
      final,
      abortAgain,
      bySession,
    };
  },

  async load_chat() {
    const agent = server();
    const chat = agent.chat();
    const one = await chat.send('one');
    const two = await chat.send('two');
    const bySession = await agent.loadChat({ sessionId: chat.sessionId });
    const loadedSession = {
      snapshotId: bySession.snapshotId,
      sessionId: bySession.sessionId,
      roles: bySession.messages.map((m) => m.role),
    };
    const three = await bySession.send('three');
    const bySnapshot = await agent.loadChat({ snapshotId: one.snapshotId });
    const loadedSnapshot = {
      snapshotId: bySnapshot.snapshotId,
      sessionId: bySnapshot.sessionId,
      roles: bySnapshot.messages.map((m) => m.role),
    };
    const branch = await bySnapshot.send('branch');
    const branchSnap = snap(await agent.getSnapshot(branch.snapshotId));
    const missing = await settle(agent.loadChat({ snapshotId: 'no-such-snapshot' }));
    return {
      one: summary(one),
      two: summary(two),
      loadedSession,
      three: summary(three),
      loadedSnapshot,
      branch: summary(branch),
      branchSnap,
      missing: missing.ok ? { unexpected: missing.value } : missing.error,
    };
  },

  async get_snapshot() {
    const agent = server();
    const chat = agent.chat();
    const one = await chat.send('one');
    const two = await chat.send('state calm');
    const byId = snap(await agent.getSnapshot(two.snapshotId));
    const byObject = snap(await agent.getSnapshot({ snapshotId: one.snapshotId }));
    const bySession = snap(await agent.getSnapshot({ sessionId: chat.sessionId }));
    const missing = await settle(agent.getSnapshot('no-such-snapshot'));
    return {
      one: summary(one),
      two: summary(two),
      byId,
      byObject,
      bySession,
      missing: missing.ok ? { value: missing.value ?? null } : missing.error,
    };
  },

  async abort_foreground() {
    const agent = server();
    const chat = agent.chat();
    const first = await chat.send('hello');
    const controller = new AbortController();
    const turn = chat.sendStream('block', { abortSignal: controller.signal });
    setTimeout(() => controller.abort(), 300);
    const chunks = await collect(turn);
    const aborted = await turn.response;
    // The server must notice the closed stream and stop the turn: nothing of it is kept.
    await new Promise((resolve) => setTimeout(resolve, 200));
    const head = snap(await agent.getSnapshot({ sessionId: chat.sessionId }));
    const after = await chat.send('after abort');
    return { first: summary(first), chunks, aborted: summary(aborted), head, after: summary(after) };
  },

  async errors() {
    const agent = server();
    const attempt = async (fn) => {
      const r = await settle(fn());
      return r.ok ? { unexpected: r.value?.finishReason ?? r.value ?? null } : r.error;
    };
    const unknownSnapshot = await attempt(() => agent.chat({ snapshotId: 'no-such-snapshot' }).send('hi'));
    const stateToServer = await attempt(() => agent.chat({ state: { custom: { a: 1 } } }).send('hi'));
    const sessionToClient = await attempt(() => client().chat({ sessionId: 'some-session' }).send('hi'));
    const chat = agent.chat();
    await chat.send('hi');
    const task = await chat.detach('block');
    await task.abort();
    await task.wait({ intervalMs: POLL_MS });
    const resumeAborted = await attempt(() => chat.send('again'));
    const paused = agent.chat();
    await paused.send('approve x');
    const badRespond = await attempt(() =>
      paused.resume({ respond: [{ toolResponse: { name: 'approve_action', ref: 'nope', output: 1 } }] }),
    );
    const changedRestart = await attempt(() =>
      paused.resume({
        restart: [{ toolRequest: { name: 'approve_action', ref: 'approve-1', input: { action: 'y' } } }],
      }),
    );
    return { unknownSnapshot, stateToServer, sessionToClient, resumeAborted, badRespond, changedRestart };
  },

  async client_managed() {
    const chat = client().chat();
    const turn = chat.sendStream('state calm');
    const chunks = await collect(turn);
    const first = await turn.response;
    const afterFirst = { state: chat.state, roles: chat.messages.map((m) => m.role) };
    const second = await chat.send('hello');
    const third = await chat.send('artifact notes');
    return {
      patches: chunks.filter((c) => c.patch).map((c) => c.patch),
      first: summary(first),
      afterFirst,
      second: summary(second),
      third: summary(third),
      final: { state: chat.state, roles: chat.messages.map((m) => m.role), artifacts: chat.artifacts },
      snapshotId: chat.snapshotId ?? null,
      sessionId: chat.sessionId ?? null,
    };
  },
};

function withTimeout(name, promise) {
  let timer;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`scenario ${name} did not finish within ${SCENARIO_TIMEOUT_MS} ms`)),
      SCENARIO_TIMEOUT_MS,
    );
  });
  return Promise.race([promise, limit]).finally(() => clearTimeout(timer));
}

const wanted = process.argv.slice(3);
const names = wanted.length ? wanted : Object.keys(scenarios);
const results = {};
for (const name of names) {
  const fn = scenarios[name];
  if (!fn) {
    results[name] = { ok: false, error: { name: 'UnknownScenario', message: `no scenario ${name}` } };
    continue;
  }
  const started = Date.now();
  results[name] = await settle(withTimeout(name, fn()));
  results[name].ms = Date.now() - started;
}
const pkg = JSON.parse(readFileSync(new URL('./node_modules/genkit/package.json', import.meta.url), 'utf8'));
process.stdout.write(JSON.stringify({ client: 'genkit-js', version: pkg.version, node: process.version, results }) + '\n');
// A scenario that timed out may leave a request open: do not wait for it.
process.exit(0);
