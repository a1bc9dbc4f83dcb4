// turnkit playground: one page, no build step, talking to the server's Genkit-protocol routes
// (GET agents, POST agents/NAME [streamed], agents/NAME/getSnapshot, agents/NAME/abort).
"use strict";

// The agents' routes: beside the page (served at <app>/ui/), or where `?api=` says (e.g. `/api/`).
// Only a path on this page's own server: a link must not point the page (and what is typed into
// it) at another site. API_REFUSED says why a given `?api=` was not used.
const API_ASKED = new URLSearchParams(window.location.search).get("api");
const API_PARSED = (() => {
  try { return new URL(API_ASKED ?? "..", window.location.href); } catch { return null; }
})();
const API_REFUSED = API_PARSED?.origin === window.location.origin
  ? null
  : `?api= must be a path on this server (such as /api/), not ${JSON.stringify(API_ASKED)}`;
const API = API_REFUSED === null ? API_PARSED : new URL("..", window.location.href);
const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined) node.textContent = text;
  return node;
};
const pretty = (value) => JSON.stringify(value ?? null, null, 2);

const chat = {
  agents: [],
  agent: null, // {name, metadata, description}
  sessionId: null,
  snapshotId: null,
  clientState: null, // client-managed agents: the state the server sent back last
  custom: null,
  artifacts: new Map(),
  busy: false,
  task: null, // {snapshotId, timer}
};

const serverManaged = () => chat.agent?.metadata?.stateManagement !== "client";

// --- JSON Patch (RFC 6902), for custom-state updates ------------------------------------------

function pointer(path) {
  if (path === "") return [];
  return path.slice(1).split("/").map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

function applyPatch(doc, ops) {
  let root = structuredClone(doc);
  for (const op of ops) {
    const keys = pointer(op.path);
    const read = (ks) => ks.reduce((node, k) => (node == null ? undefined : node[k]), root);
    const write = (ks, value, insert) => {
      if (ks.length === 0) { root = value; return; }
      const parent = read(ks.slice(0, -1));
      const key = ks[ks.length - 1];
      if (Array.isArray(parent)) {
        const i = key === "-" ? parent.length : Number(key);
        if (insert) parent.splice(i, 0, value); else parent[i] = value;
      } else parent[key] = value;
    };
    const remove = (ks) => {
      const parent = read(ks.slice(0, -1));
      const key = ks[ks.length - 1];
      const value = parent[key];
      if (Array.isArray(parent)) parent.splice(Number(key), 1); else delete parent[key];
      return value;
    };
    if (op.op === "add") write(keys, structuredClone(op.value), true);
    else if (op.op === "replace") write(keys, structuredClone(op.value), false);
    else if (op.op === "remove") remove(keys);
    else if (op.op === "move") write(keys, remove(pointer(op.from)), true);
    else if (op.op === "copy") write(keys, structuredClone(read(pointer(op.from))), true);
  }
  return root;
}

// --- requests ---------------------------------------------------------------------------------

async function postJson(path, body) {
  const response = await fetch(new URL(path, API), {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const payload = await response.json();
  if (!response.ok || payload.error) throw new Error(errorText(payload.error ?? { message: response.statusText }));
  return payload.result;
}

const errorText = (error) => `${error.status ?? "ERROR"}: ${error.message}`;

function init() {
  if (!serverManaged()) return chat.clientState ? { state: chat.clientState } : {};
  if (chat.snapshotId) return { snapshotId: chat.snapshotId };
  return {};
}

// One streamed turn: frames `data: {"message": chunk}` ... then `{"result": output}` or `{"error": ...}`.
async function streamTurn(data) {
  const response = await fetch(new URL(`agents/${encodeURIComponent(chat.agent.name)}`, API), {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify({ data, init: init() }),
  });
  if (!response.ok) {
    const payload = await response.json().catch(() => ({ error: { message: response.statusText } }));
    throw new Error(errorText(payload.error));
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  let output = null;
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value ?? new Uint8Array(), { stream: !done });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const line = frame.split("\n").find((l) => l.startsWith("data: "));
      if (!line) continue;
      const payload = JSON.parse(line.slice(6));
      if (payload.message) onChunk(payload.message);
      else if (payload.result) output = payload.result;
      else if (payload.error) throw new Error(errorText(payload.error));
    }
    if (done) break;
  }
  if (!output) throw new Error("the stream ended without a result");
  return output;
}

// --- rendering --------------------------------------------------------------------------------

let current = null; // the model message being streamed: {node, text, reasoning, tools: Map}

function modelBubble() {
  const node = el("div", "msg model");
  $("log").append(node);
  return { node, text: null, reasoning: null, tools: new Map() };
}

function addUser(text) {
  $("log").append(el("div", "msg user", text));
  current = null;
}

function appendText(kind, text) {
  current ??= modelBubble();
  if (kind === "reasoning") {
    if (!current.reasoning) { current.reasoning = el("div", "reasoning"); current.node.append(current.reasoning); }
    current.reasoning.textContent += text;
  } else {
    if (!current.text) { current.text = el("span", "text"); current.node.append(current.text); }
    current.text.textContent += text;
  }
  scroll();
}

const toolKey = (request) => request.ref ?? `${request.name}:${JSON.stringify(request.input)}`;

function showToolRequest(part) {
  current ??= modelBubble();
  const request = part.toolRequest;
  if (request.partial) return;
  const key = toolKey(request);
  let tool = current.tools.get(key);
  if (!tool) {
    const node = el("div", "tool");
    node.dataset.tool = request.name;
    node.append(el("span", "name", `${request.name}`), " ", el("code", "input", JSON.stringify(request.input)));
    current.node.append(node);
    current.text = null; // later text goes below the tool call
    tool = { node, request, part };
    current.tools.set(key, tool);
  }
  if (part.metadata?.interrupt) showInterrupt(tool, part);
  scroll();
}

function showInterrupt(tool, part) {
  if (tool.node.querySelector(".interrupt")) return;
  const box = el("div", "interrupt");
  const data = part.metadata.interrupt;
  box.append(el("div", "question", data === true ? "The tool asks for approval." : `Approval needed: ${JSON.stringify(data)}`));
  const approve = el("button", "approve", "Approve");
  const deny = el("button", "deny", "Deny");
  approve.type = deny.type = "button";
  approve.onclick = () => answerInterrupt(tool, part, true);
  deny.onclick = () => answerInterrupt(tool, part, false);
  box.append(approve, deny);
  tool.node.append(box);
}

function showToolResponse(part) {
  const response = part.toolResponse;
  const bubbles = [...$("log").querySelectorAll(".msg.model")];
  for (const tool of bubbles.flatMap((b) => [...b.querySelectorAll(".tool")]).reverse()) {
    if (tool.dataset.tool !== response.name || tool.querySelector(".output")) continue;
    const denied = response.output && response.output.approved === false;
    tool.append(el("div", denied ? "output denied" : "output", `→ ${JSON.stringify(response.output)}`));
    tool.querySelector(".interrupt")?.remove();
    break;
  }
  current = null; // the model's next words start a new bubble, after the tool results
  scroll();
}

function renderState() {
  $("state").textContent = pretty(chat.custom);
  const list = $("artifacts");
  list.replaceChildren();
  if (chat.artifacts.size === 0) list.append(el("li", "empty", "none"));
  for (const [name, artifact] of chat.artifacts) {
    const text = (artifact.parts ?? []).map((p) => p.text ?? JSON.stringify(p)).join(" ");
    const item = el("li", "artifact");
    item.append(el("strong", null, name), `: ${text}`);
    list.append(item);
  }
  $("ids").textContent = [chat.sessionId && `session ${chat.sessionId}`, chat.snapshotId && `snapshot ${chat.snapshotId}`]
    .filter(Boolean).join(" · ");
}

function onChunk(chunk) {
  const model = chunk.modelChunk;
  if (model) {
    for (const part of model.content ?? []) {
      if (part.toolResponse) showToolResponse(part);
      else if (model.role === "tool") continue;
      else if (part.text) appendText("text", part.text);
      else if (part.reasoning) appendText("reasoning", part.reasoning);
      else if (part.toolRequest) showToolRequest(part);
    }
  }
  if (chunk.customPatch) { chat.custom = applyPatch(chat.custom, chunk.customPatch); renderState(); }
  if (chunk.artifact) { chat.artifacts.set(chunk.artifact.name ?? `#${chat.artifacts.size + 1}`, chunk.artifact); renderState(); }
}

function renderHistory(state) {
  $("log").replaceChildren();
  current = null;
  for (const message of state?.messages ?? []) {
    if (message.role === "user") addUser(message.content.map((p) => p.text ?? "").join(""));
    else if (message.role === "model") {
      current = modelBubble();
      for (const part of message.content) {
        if (part.text) appendText("text", part.text);
        else if (part.reasoning) appendText("reasoning", part.reasoning);
        else if (part.toolRequest) showToolRequest(part);
      }
    } else if (message.role === "tool") message.content.filter((p) => p.toolResponse).forEach(showToolResponse);
  }
  chat.custom = state?.custom ?? null;
  chat.artifacts = new Map((state?.artifacts ?? []).map((a, i) => [a.name ?? `#${i + 1}`, a]));
  renderState();
}

const scroll = () => { $("log").scrollTop = $("log").scrollHeight; };

function setBusy(busy) {
  chat.busy = busy;
  $("status").dataset.status = busy ? "streaming" : "idle";
  $("status").textContent = busy ? "streaming…" : "idle";
  for (const id of ["send", "send-detached", "agent", "new-chat"]) $(id).disabled = busy;
  $("send-detached").disabled = busy || !serverManaged();
}

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message ?? "";
}

// --- turns --------------------------------------------------------------------------------------

async function runTurn(data) {
  setBusy(true);
  showError(null);
  try {
    const output = await streamTurn(data);
    finishTurn(output);
  } catch (error) {
    showError(String(error.message ?? error));
  } finally {
    setBusy(false);
    current = null;
  }
}

function finishTurn(output) {
  chat.sessionId = output.sessionId ?? chat.sessionId;
  if (output.snapshotId) chat.snapshotId = output.snapshotId;
  if (output.state) {
    chat.clientState = output.state;
    chat.custom = output.state.custom ?? null;
    chat.artifacts = new Map((output.state.artifacts ?? []).map((a, i) => [a.name ?? `#${i + 1}`, a]));
  }
  for (const part of output.message?.content ?? []) {
    if (part.toolRequest && part.metadata?.interrupt) showToolRequest(part); // interrupts not yet shown
  }
  if (output.finishReason === "failed" && output.error) showError(errorText(output.error));
  if (output.finishReason === "aborted") showError("The turn was aborted.");
  renderState();
  refreshSnapshots();
}

function send(detached) {
  const text = $("input").value.trim();
  if (!text || chat.busy) return;
  $("input").value = "";
  addUser(text);
  const message = { role: "user", content: [{ text }] };
  if (detached) startDetached(message);
  else runTurn({ message });
}

function answerInterrupt(tool, part, approved) {
  if (chat.busy) return;
  const request = part.toolRequest;
  const resume = approved
    ? { restart: [{ toolRequest: { name: request.name, ref: request.ref, input: request.input }, metadata: { resumed: { approved: true } } }] }
    : { respond: [{ toolResponse: { name: request.name, ref: request.ref, output: { approved: false, reason: "denied in the playground" } } }] };
  tool.node.querySelector(".interrupt")?.remove();
  current = null;
  runTurn({ resume });
}

// --- background turns -------------------------------------------------------------------------

async function startDetached(message) {
  setBusy(true);
  showError(null);
  try {
    const output = await postJson(`agents/${encodeURIComponent(chat.agent.name)}`, { data: { message, detach: true }, init: init() });
    chat.sessionId = output.sessionId ?? chat.sessionId;
    chat.task = { snapshotId: output.snapshotId };
    $("task-panel").hidden = false;
    $("task-snapshot").textContent = output.snapshotId;
    $("task-status").textContent = "pending";
    $("abort").disabled = false;
    pollTask();
  } catch (error) {
    showError(String(error.message ?? error));
    setBusy(false);
  }
}

async function pollTask() {
  const task = chat.task;
  if (!task) return;
  try {
    const snap = await postJson(`agents/${encodeURIComponent(chat.agent.name)}/getSnapshot`, { data: { snapshotId: task.snapshotId } });
    $("task-status").textContent = snap.status ?? "completed";
    if (snap.status === "pending") { task.timer = setTimeout(pollTask, 300); return; }
    chat.task = null;
    $("abort").disabled = true;
    if (snap.status === "completed") { chat.snapshotId = snap.snapshotId; renderHistory(snap.state); }
    else if (snap.error) showError(errorText(snap.error));
    refreshSnapshots();
  } catch (error) {
    showError(String(error.message ?? error));
  }
  setBusy(false);
}

async function abortTask() {
  if (!chat.task) return;
  try {
    const result = await postJson(`agents/${encodeURIComponent(chat.agent.name)}/abort`, { data: { snapshotId: chat.task.snapshotId } });
    $("task-status").textContent = `aborting (was ${result.status})`;
  } catch (error) {
    showError(String(error.message ?? error));
  }
}

// --- snapshots ----------------------------------------------------------------------------------

async function refreshSnapshots() {
  const list = $("snapshots");
  $("snapshots-panel").hidden = !serverManaged();
  if (!serverManaged() || !chat.snapshotId) { list.replaceChildren(el("li", "empty", "none yet")); return; }
  const chain = [];
  let id = chat.snapshotId;
  try {
    while (id && chain.length < 100) { // this branch, newest first, following parents
      const snap = await postJson(`agents/${encodeURIComponent(chat.agent.name)}/getSnapshot`, { data: { snapshotId: id } });
      chain.push(snap);
      id = snap.parentId;
    }
  } catch (error) {
    showError(String(error.message ?? error));
  }
  list.replaceChildren();
  for (const snap of chain) {
    const users = (snap.state?.messages ?? []).filter((m) => m.role === "user");
    const last = users.length ? users[users.length - 1].content.map((p) => p.text ?? "").join("") : "(start)";
    const item = el("li", snap.snapshotId === chat.snapshotId ? "snapshot current" : "snapshot");
    item.dataset.snapshot = snap.snapshotId;
    item.append(el("div", "label", `after “${last}”`));
    item.append(el("div", "meta", `${snap.status ?? "completed"} · ${snap.finishReason ?? ""} · ${snap.snapshotId.slice(0, 8)}`));
    if (snap.snapshotId !== chat.snapshotId && (snap.status ?? "completed") === "completed") {
      const branch = el("button", "small branch", "branch from here");
      branch.type = "button";
      branch.onclick = () => branchFrom(snap);
      item.append(branch);
    }
    list.append(item);
  }
}

function branchFrom(snap) {
  if (chat.busy) return;
  chat.snapshotId = snap.snapshotId;
  renderHistory(snap.state);
  refreshSnapshots();
}

// --- agents ---------------------------------------------------------------------------------------

function newChat() {
  chat.agent = chat.agents.find((a) => a.name === $("agent").value) ?? chat.agents[0] ?? null;
  Object.assign(chat, { sessionId: null, snapshotId: null, clientState: null, custom: null, artifacts: new Map(), task: null });
  $("log").replaceChildren();
  $("task-panel").hidden = true;
  $("agent-kind").textContent = serverManaged() ? "server-managed" : "client-managed";
  $("agent-description").textContent = chat.agent?.description ?? "";
  showError(null);
  renderState();
  refreshSnapshots();
  setBusy(false);
}

async function loadAgents() {
  if (API_REFUSED !== null) { showError(API_REFUSED); return; }
  const response = await fetch(new URL("agents", API));
  const payload = await response.json();
  if (!response.ok) { showError(errorText(payload.error)); return; }
  chat.agents = payload.agents;
  const wanted = new URLSearchParams(window.location.search).get("agent");
  for (const agent of chat.agents) $("agent").append(new Option(agent.name, agent.name, false, agent.name === wanted));
  if (chat.agents.length === 0) showError("This server serves no agents.");
  newChat();
}

$("composer").addEventListener("submit", (event) => { event.preventDefault(); send(false); });
$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); send(false); }
});
$("send-detached").addEventListener("click", () => send(true));
$("agent").addEventListener("change", newChat);
$("new-chat").addEventListener("click", newChat);
$("abort").addEventListener("click", abortTask);
$("refresh-snapshots").addEventListener("click", refreshSnapshots);
loadAgents();
