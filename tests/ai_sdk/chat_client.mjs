// The Vercel AI SDK's chat transport (npm `ai`, pinned in package.json) against turnkit's
// `POST /agents/NAME/uiMessageStream`: usage `node chat_client.mjs BASE_URL`.
//
// Each scenario calls `DefaultChatTransport.sendMessages` (what `useChat` does), reads the UI
// message chunks it yields, and builds the assistant message with the SDK's own
// `readUIMessageStream` (which rejects chunks out of protocol order). It prints one JSON object:
// {version, results: {scenario: {ok, value | error}}}, checked by tests/test_ai_sdk.py.

import { readFileSync } from "node:fs";
import { DefaultChatTransport, readUIMessageStream } from "ai";

const base = process.argv[2];
const version = JSON.parse(readFileSync(new URL("./node_modules/ai/package.json", import.meta.url))).version;
let counter = 0;
const newId = (prefix) => `${prefix}-${process.pid}-${++counter}`;
const user = (text) => ({ id: newId("u"), role: "user", parts: [{ type: "text", text }] });

// One request: the raw chunks, the assistant message the SDK built from them, the response headers.
async function send(agent, chatId, messages, { abortAfter, body, continues } = {}) {
  const seen = { headers: null };
  const controller = new AbortController();
  const transport = new DefaultChatTransport({
    api: `${base}/agents/${agent}/uiMessageStream`,
    body,
    fetch: async (url, init) => {
      const response = await fetch(url, init);
      seen.headers = Object.fromEntries(response.headers.entries());
      return response;
    },
  });
  const stream = await transport.sendMessages({
    trigger: "submit-message",
    chatId,
    messageId: undefined,
    messages,
    abortSignal: controller.signal,
  });
  const [raw, forMessage] = stream.tee();
  const chunks = [];
  const errors = [];
  const reading = (async () => {
    const reader = raw.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return;
      chunks.push(structuredClone(value)); // the SDK may change the objects it shares later
      if (abortAfter && value.type === abortAfter) controller.abort();
    }
  })();
  let message = null;
  let thrown = null;
  try {
    for await (const snapshot of readUIMessageStream({
      message: continues,
      stream: forMessage,
      onError: (e) => errors.push(String(e?.message ?? e)),
    })) {
      message = snapshot;
    }
    await reading;
  } catch (e) {
    thrown = String(e?.name ?? "Error");
  }
  return { chunks, types: chunks.map((c) => c.type), message, errors, thrown, headers: seen.headers };
}

// What `addToolApprovalResponse` does to the chat's message, done by hand (no Chat object here).
function answerApproval(message, approved, reason) {
  return {
    ...message,
    parts: message.parts.map((p) =>
      p.state === "approval-requested" ? { ...p, state: "approval-responded", approval: { ...p.approval, approved, reason } } : p,
    ),
  };
}

const textOf = (message) => (message?.parts ?? []).filter((p) => p.type === "text").map((p) => p.text).join("");

const scenarios = {
  // Several turns of a server-managed agent: the chat id is the session; only the new message counts.
  async server_turns() {
    const chatId = newId("chat");
    const u1 = user("hello");
    const first = await send("chat", chatId, [u1]);
    const u2 = user("hello again");
    const second = await send("chat", chatId, [u1, first.message, u2]);
    // The server's history stands: a client that sends only the new message gets turn 3.
    const third = await send("chat", chatId, [user("just this")]);
    return { first, second, third, texts: [first, second, third].map((r) => textOf(r.message)) };
  },

  async reasoning() {
    return send("chat", newId("chat"), [user("think tides")]);
  },

  async tool_and_state() {
    const chatId = newId("chat");
    const u1 = user("state happy");
    const first = await send("chat", chatId, [u1]);
    const second = await send("chat", chatId, [u1, first.message, user("state calm")]);
    return { first, second };
  },

  async artifact() {
    return send("chat", newId("chat"), [user("artifact summary")]);
  },

  async interrupt_approve() {
    const chatId = newId("chat");
    const u1 = user("approve launch");
    const asked = await send("chat", chatId, [u1]);
    const answered = answerApproval(asked.message, true);
    const resumed = await send("chat", chatId, [u1, answered], { continues: answered });
    const after = await send("chat", chatId, [u1, resumed.message, user("and then")]);
    return { asked, resumed, after };
  },

  async interrupt_deny() {
    const chatId = newId("chat");
    const u1 = user("approve nuke");
    const asked = await send("chat", chatId, [u1]);
    const answered = answerApproval(asked.message, false, "too risky");
    const resumed = await send("chat", chatId, [u1, answered], { continues: answered });
    return { asked, resumed };
  },

  async abort() {
    const chatId = newId("chat");
    const u1 = user("block");
    const started = Date.now();
    const aborted = await send("chat", chatId, [u1], { abortAfter: "start" });
    const abortedMs = Date.now() - started;
    // The next turn of the session needs its lease: it gets it at once only if the aborted turn
    // stopped on the server (the blocking model would hold it for 30 s).
    const nextStarted = Date.now();
    const next = await send("chat", chatId, [user("still there?")]);
    const nextMs = Date.now() - nextStarted;
    return { aborted, abortedMs, next, nextMs, text: textOf(next.message) };
  },

  async failure() {
    return send("chat", newId("chat"), [user("fail now")]);
  },

  // A client-managed agent: the history, custom state and artifacts travel in `messages`.
  async client_managed() {
    const chatId = newId("chat");
    const u1 = user("hello");
    const first = await send("stateless", chatId, [u1]);
    const u2 = user("state sad");
    const second = await send("stateless", chatId, [u1, first.message, u2]);
    const u3 = user("state glad");
    const third = await send("stateless", chatId, [u1, first.message, u2, second.message, u3]);
    const u4 = user("approve deploy");
    const history = [u1, first.message, u2, second.message, u3, third.message, u4];
    const asked = await send("stateless", chatId, history);
    const answered = answerApproval(asked.message, true);
    const resumed = await send("stateless", chatId, [...history, answered], { continues: answered });
    const u5 = user("count");
    const fifth = await send("stateless", chatId, [...history, resumed.message, u5]);
    return { first, second, third, asked, resumed, fifth, texts: [first, fifth].map((r) => textOf(r.message)) };
  },

  // `useChat({resume: true})` asks for a stream still running: turnkit's end with their request.
  async reconnect() {
    const transport = new DefaultChatTransport({ api: `${base}/agents/chat/uiMessageStream` });
    const stream = await transport.reconnectToStream({ chatId: newId("chat") });
    return { stream };
  },

  async bad_request() {
    try {
      await send("chat", newId("chat"), []);
      return { threw: false };
    } catch (e) {
      return { threw: true, message: String(e?.message ?? e) };
    }
  },
};

const results = {};
for (const [name, run] of Object.entries(scenarios)) {
  try {
    results[name] = { ok: true, value: await run() };
  } catch (e) {
    results[name] = { ok: false, error: { message: String(e?.message ?? e), stack: String(e?.stack ?? "") } };
  }
}
process.stdout.write(JSON.stringify({ version, results }));
