// stoplab playground: the page talks to the same HTTP API as any client. One trace stream per run
// (POST /v1/stoplab/trace, server-sent events: start, one event per token, finish); the rendered prompt from
// /v1/stoplab/render; the scenarios from /v1/stoplab/scenarios. No framework, no build step, no network
// beyond this server.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  key: sessionStorage.getItem("stoplab-key") || "",
  info: null,
  stopsA: [],
  stopsB: [],
  scenarios: [],
  running: [],
};

// ---------- text helpers ----------

/** The escapes the command line interprets: \n \t \r \\ and \- (anything else is kept as written). */
function unescapeText(s) {
  let out = "";
  for (let i = 0; i < s.length; i++) {
    const c = s[i];
    if (c !== "\\" || i + 1 >= s.length) { out += c; continue; }
    const n = s[++i];
    if (n === "n") out += "\n";
    else if (n === "t") out += "\t";
    else if (n === "r") out += "\r";
    else if (n === "\\") out += "\\";
    else if (n === "-") out += "-";
    else out += "\\" + n;
  }
  return out;
}

/** Text as trace shows it: \n \t \r \\ \" escaped, other control characters as \u{..}. */
function escapeText(s) {
  let out = "";
  for (const c of s) {
    const code = c.codePointAt(0);
    if (c === "\n") out += "\\n";
    else if (c === "\t") out += "\\t";
    else if (c === "\r") out += "\\r";
    else if (c === "\\") out += "\\\\";
    else if (c === "\"") out += "\\\"";
    else if (code < 0x20 || (code >= 0x7f && code < 0xa0)) out += "\\u{" + code.toString(16) + "}";
    else out += c;
  }
  return out;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function percent(p) {
  const x = p * 100;
  if (x >= 9.95) return x.toFixed(0) + "%";
  if (x >= 0.995) return x.toFixed(1) + "%";
  if (x >= 0.01) return x.toFixed(2) + "%";
  return "<0.01%";
}

// ---------- the API ----------

class ApiError extends Error {
  constructor(status, message, param) { super(message); this.status = status; this.param = param; }
}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (state.key) h["Authorization"] = "Bearer " + state.key;
  return h;
}

async function failure(res) {
  let message = res.status + " " + res.statusText, param = null;
  try {
    const body = await res.json();
    if (body && body.error) { message = body.error.message || message; param = body.error.param; }
  } catch (_) { /* not JSON */ }
  if (res.status === 401) {
    $("key-box").hidden = false;
    message += ": type the server's API key at the top of the page";
  }
  return new ApiError(res.status, message, param);
}

async function getJson(path) {
  const res = await fetch(path, { headers: headers() });
  if (!res.ok) throw await failure(res);
  return res.json();
}

async function postJson(path, body, signal) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw await failure(res);
  return res.json();
}

/** Streams server-sent events of a POST; `onEvent` gets each JSON event. */
async function stream(path, body, signal, onEvent) {
  const res = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!res.ok) throw await failure(res);
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const frame = buf.slice(0, at);
      buf = buf.slice(at + 2);
      for (const line of frame.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") return;
        onEvent(JSON.parse(data));
      }
    }
  }
}

// ---------- the form ----------

function renderChips(box, list, redraw) {
  box.replaceChildren();
  list.forEach((s, i) => {
    const label = "\"" + escapeText(s) + "\"";
    box.append(el("span", { class: "chip", role: "listitem" }, label,
      el("button", {
        type: "button", "aria-label": "remove stop " + label, title: "remove",
        onclick: () => { list.splice(i, 1); redraw(); box.closest(".card").querySelector("input[type=text]").focus(); },
      }, "×")));
  });
}

function drawStops() {
  renderChips($("stops"), state.stopsA, drawStops);
  renderChips($("b-stops"), state.stopsB, drawStops);
}

function addStop(input, list) {
  const raw = input.value;
  if (raw === "") return;
  const s = unescapeText(raw);
  if (!list.includes(s)) list.push(s);
  input.value = "";
  drawStops();
}

function addTurn(role, content) {
  const row = el("div", { class: "turn" });
  const select = el("select", { "aria-label": "role" });
  for (const r of ["system", "user", "assistant", "function", "tool"]) select.append(el("option", { value: r, text: r }));
  if (![...select.options].some((o) => o.value === role)) select.append(el("option", { value: role, text: role }));
  select.value = role;
  const text = el("textarea", { rows: 1, "aria-label": "content" });
  text.value = content;
  row.append(select, text, el("button", {
    type: "button", "aria-label": "remove this turn", title: "remove",
    onclick: () => { row.remove(); scheduleRender(); },
  }, "×"));
  select.addEventListener("change", scheduleRender);
  text.addEventListener("input", scheduleRender);
  $("turns").append(row);
  return text;
}

function messages() {
  const list = [...$("turns").querySelectorAll(".turn")].map((row) => ({
    role: row.querySelector("select").value,
    content: row.querySelector("textarea").value,
  }));
  const prompt = $("prompt").value;
  if (prompt !== "" || list.length === 0) list.push({ role: "user", content: prompt });
  return list;
}

/** A field that must hold a number: the value, or an error naming the field. Only the type is checked
 *  here; the server's one validation checks the ranges and names the setting it refuses. */
function number(id, name, opts = {}) {
  const raw = $(id).value.trim();
  if (raw === "") {
    if (opts.optional) return undefined;
    throw new ApiError(0, name + ": is empty; give a number");
  }
  const v = Number(raw);
  if (!Number.isFinite(v) || (opts.integer && !Number.isInteger(v))) {
    throw new ApiError(0, name + ": " + JSON.stringify(raw) + " is not " + (opts.integer ? "a whole number" : "a number"));
  }
  return v;
}

function ids(id, name) {
  const raw = $(id).value.trim();
  if (raw === "") return [];
  return raw.split(/[\s,]+/).filter((x) => x !== "").map((x, i) => {
    if (!/^\d+$/.test(x)) throw new ApiError(0, name + " #" + (i + 1) + ": " + JSON.stringify(x) + " is not a token id");
    return Number(x);
  });
}

function logitBias() {
  const raw = $("logit-bias").value.trim();
  if (raw === "") return [];
  return raw.split(",").map((part) => part.trim()).filter((p) => p !== "").map((part) => {
    const m = /^(\d+)\s*=\s*(-inf|-infinity|[-+]?\d*\.?\d+(?:e[-+]?\d+)?)$/i.exec(part);
    if (!m) throw new ApiError(0, "Logit bias: " + JSON.stringify(part) + " is not ID=BIAS (e.g. 2=-inf)");
    const bias = m[2].toLowerCase().startsWith("-inf") ? "-inf" : Number(m[2]);
    return [Number(m[1]), bias];
  });
}

function optText(id) {
  const v = $(id).value;
  return v === "" ? undefined : unescapeText(v);
}

/** The prompt part of a request: format, its options and the messages. */
function promptBody() {
  return {
    format: $("format").value,
    user_prefix: optText("user-prefix"),
    ai_prefix: optText("ai-prefix"),
    separator: optText("separator"),
    messages: messages(),
  };
}

/** The request for run A (or B: its own stop settings). Throws an ApiError naming a field it cannot read. */
function requestBody(which) {
  const b = promptBody();
  b.natural_stop = $("natural-stop").checked;
  if (which === "B") {
    b.stop = state.stopsB.slice();
    b.stop_token_ids = ids("b-stop-ids", "B's stop token ids");
    b.include_stop = $("b-include-stop").checked;
    b.ignore_eos = $("b-ignore-eos").checked;
  } else {
    b.stop = state.stopsA.slice();
    b.stop_token_ids = ids("stop-ids", "Stop token ids");
    b.include_stop = $("include-stop").checked;
    b.ignore_eos = $("ignore-eos").checked;
  }
  b.min_tokens = number("min-tokens", "Min tokens", { integer: true });
  b.max_tokens = number("max-tokens", "Max tokens", { integer: true });
  b.temperature = number("temperature", "Temperature", {});
  b.seed = number("seed", "Seed", { integer: true });
  b.top_k = number("top-k", "Top k", { integer: true });
  b.top_p = number("top-p", "Top p");
  b.min_p = number("min-p", "Min p");
  const ngram = number("repeat-ngram", "Repetition stop n", { integer: true, optional: true });
  if (ngram !== undefined) {
    b.repetition_stop = { ngram, count: number("repeat-count", "Repetition stop k", { integer: true }) };
  }
  b.logit_bias = logitBias();
  const replay = $("replay").value;
  if (replay !== "") b.replay = unescapeText(replay);
  const perStep = number("tokens-per-step", "Tokens per step", { integer: true, optional: true });
  if (perStep !== undefined && perStep > 1) b.tokens_per_step = perStep;
  else if ($("speculate").checked) b.speculate = "ngram";
  const markers = $("reasoning-markers").value.trim();
  if (markers !== "") b.reasoning_markers = unescapeText(markers);
  if ($("stop-scope").value !== "") b.stop_scope = $("stop-scope").value;
  if ($("end-in-reasoning").value !== "") b.end_in_reasoning = $("end-in-reasoning").value;
  return b;
}

// ---------- the rendered prompt ----------

let renderTimer = null;
let renderSeq = 0;
function scheduleRender() {
  clearTimeout(renderTimer);
  renderTimer = setTimeout(renderPrompt, 200);
}

async function renderPrompt() {
  const seq = ++renderSeq;
  try {
    const r = await postJson("/v1/stoplab/render", promptBody());
    if (seq !== renderSeq) return;
    $("rendered").textContent = r.text;
    $("rendered-count").textContent = "(" + r.tokens + " tokens)";
  } catch (e) {
    if (seq !== renderSeq) return;
    $("rendered").textContent = "";
    $("rendered-count").textContent = "(" + e.message + ")";
  }
}

// ---------- one run: chips, output, finish, chart ----------

class Run {
  constructor(label, body) {
    this.label = label;
    this.body = body;
    this.rows = [];
    this.finish = null;
    this.error = null;
    this.node = $("run-template").content.firstElementChild.cloneNode(true);
    this.node.dataset.run = label;
    this.node.querySelector(".label").textContent = label === "" ? "Generation" : label;
    const stops = body.stop.map((s) => "\"" + escapeText(s) + "\"").join(", ");
    this.node.querySelector(".summary").textContent =
      "stops: " + (stops || "none") + (body.stop_token_ids.length ? "; stop ids " + body.stop_token_ids.join(", ") : "") +
      (body.ignore_eos ? "; end token ignored" : "");
    this.output = this.node.querySelector(".output");
    this.tokens = this.node.querySelector(".tokens");
    this.finishBox = this.node.querySelector(".finish");
    this.chart = this.node.querySelector(".chart");
    this.wire = this.node.querySelector(".wire-list");
    this.stepList = this.node.querySelector(".steps");
    this.chartPending = false;
    this.drawOutput();
  }

  onEvent(ev) {
    if (ev.type === "start") {
      this.start = ev;
      this.reasoning = ev.reasoning || null;
      const r = this.reasoning;
      const where = r && { answer: "the answer", reasoning: "the reasoning", all: "both" }[r.stop_scope];
      this.node.querySelector(".summary").textContent += "; prompt " + ev.prompt_tokens + " tokens" +
        (ev.replay ? "; replayed" : "") +
        (r ? "; reasoning between \"" + escapeText(r.open) + "\" and \"" + escapeText(r.close) +
          "\" (dotted underline), stops armed in " + where + ", end token inside: " + r.end_in_reasoning : "");
    } else if (ev.type === "token") {
      this.rows.push(ev);
      this.tokens.append(this.chip(ev));
      this.addWire(ev, "token #" + ev.index);
      this.drawOutput();
      this.scheduleChart();
      setStatus("generating… " + this.rows.length + " tokens");
    } else if (ev.type === "step") {
      this.markStep(ev);
    } else if (ev.type === "finish") {
      this.addWire(ev, "finish");
      this.finish = ev;
      this.markFinish();
      this.drawOutput();
      this.drawChart();
    } else if (ev.type === "error") {
      this.error = ev.error ? ev.error.message : "the generation failed";
      this.finishBox.replaceChildren(el("p", { class: "error", text: this.error }));
    }
  }

  /** A step of several tokens: its chips shaded as one group, and a line of what was drafted and kept. */
  markStep(ev) {
    const last = ev.first_row + ev.rows - 1;
    for (let i = ev.first_row; i <= last; i++) {
      const chip = this.tokens.children[i];
      if (!chip) continue;
      chip.classList.add("step", ev.index % 2 ? "step-b" : "step-a");
      if (i === ev.first_row) chip.classList.add("step-first");
      chip.dataset.step = ev.index;
    }
    const ids = (xs) => "[" + xs.join(", ") + "]";
    const parts = ["step " + ev.index + ": " + (ev.rows === 1 ? "token #" + ev.first_row :
      ev.rows + " tokens #" + ev.first_row + "–#" + last)];
    parts.push(ev.drafted.length ? "drafted " + ids(ev.drafted) + ", accepted " + ev.accepted : "no draft");
    if (ev.rejected.length) parts.push("rejected " + ids(ev.rejected));
    if (ev.discarded.length) parts.push("discarded after the end " + ids(ev.discarded));
    this.stepList.hidden = false;
    this.stepList.append(el("li", { "data-step": ev.index, text: parts.join("; ") }));
  }

  /** The completions chunks that went out at this step, raw, with what they carry in a line above. */
  addWire(ev, at) {
    for (const c of ev.wire || []) {
      const choice = (c.choices && c.choices[0]) || {};
      const lp = choice.logprobs || {};
      const toks = (lp.tokens || []).map((t) => "\"" + escapeText(t) + "\"").join(" ");
      const head = "after " + at + ": text \"" + escapeText(choice.text || "") + "\", ids [" +
        (choice.token_ids || []).join(", ") + "], logprobs [" + toks + "]" +
        (choice.finish_reason ? ", finish_reason " + choice.finish_reason : "") +
        (choice.withheld_token_ids && choice.withheld_token_ids.length ?
          ", withheld [" + choice.withheld_token_ids.join(", ") + "]" : "");
      this.wire.append(el("li", { "data-at": at },
        el("span", { class: "wire-head", text: head }),
        el("code", { text: "data: " + JSON.stringify(c) })));
    }
  }

  chip(row) {
    const cls = ["tok"];
    if (row.emitted !== "") cls.push("emit");
    if (row.held !== "") cls.push("holding");
    if (row.special) cls.push("special");
    if (row.end_token) cls.push("end");
    // The reasoning: the tokens after the open marker up to the close marker's, both included.
    const inside = row.reasoning === true || row.marker === "closed";
    let region = "";
    if (this.reasoning) {
      const scope = this.reasoning.stop_scope;
      const armed = scope === "all" || (scope === "reasoning") === inside;
      if (inside) cls.push("reasoning");
      if (!armed) cls.push("unarmed");
      region = (inside ? " (reasoning" : " (answer") + (armed ? ", stops armed)" : ", stops not armed)");
    }
    const chip = el("span", {
      class: cls.join(" "), tabindex: "0", role: "listitem", "data-index": row.index, "data-id": row.id,
      "aria-label": "token " + row.index + ": " + (row.special ? row.token : "\"" + row.token_esc + "\"") + region,
    });
    chip.append(el("span", { class: "t", text: row.special ? row.token : row.token_esc || "∅" }));
    const meta = this.meta(row);
    if (meta) chip.append(el("span", { class: "m", text: meta }));
    chip.addEventListener("mouseenter", () => showTip(chip, row, this));
    chip.addEventListener("focus", () => showTip(chip, row, this));
    chip.addEventListener("mouseleave", hideTip);
    chip.addEventListener("blur", hideTip);
    return chip;
  }

  meta(row) {
    if (row.end_token) return row.finish ? "END" : "end (ignored)";
    if (row.held !== "") {
      const h = row.held_for;
      return h ? "holds \"" + row.held_esc + "\" " + h.bytes + "/" + h.of + " of \"" + escapeText(h.stop) + "\""
        : "holds half a character";
    }
    if (row.emitted !== "" && row.emitted_esc !== row.token_esc) return "→ \"" + row.emitted_esc + "\"";
    return row.special ? "special" : "";
  }

  markFinish() {
    const f = this.finish;
    if (f.stop_began_at !== null && f.stop_began_at !== undefined && f.cut !== "") {
      const last = this.rows.length - 1;
      for (let i = f.stop_began_at; i <= last; i++) {
        const chip = this.tokens.children[i];
        if (!chip) continue;
        chip.classList.add("cut");
        chip.append(el("span", { class: "m c", text: i === last ? "✂ stop complete: cut \"" + f.cut_esc + "\"" : "✂ cut" }));
      }
    }
    const lines = f.explain.slice(1);
    this.finishBox.replaceChildren(
      el("p", { class: "head", text: f.describe + " → finish_reason " + f.finish_reason +
        (f.stop_reason === null ? "" : ", stop_reason " + JSON.stringify(f.stop_reason)) }),
      ...lines.map((l) => el("p", { class: "explain", text: l })));
  }

  drawOutput() {
    const text = this.rows.map((r) => r.emitted).join("");
    const parts = [text];
    const last = this.rows[this.rows.length - 1];
    if (this.finish) {
      if (this.finish.cut !== "") parts.push(el("span", { class: "cutout", title: "cut by the stop", text: this.finish.cut }));
      else if (last && last.end_token && !this.body.ignore_eos) parts.push(el("span", { class: "endtok", title: "end token: not in the output", text: last.token }));
    } else if (last && last.held !== "") {
      parts.push(el("span", { class: "pending", title: "held back: may begin a stop", text: last.held }));
    }
    if (this.rows.length === 0 && !this.finish) parts.push(el("span", { class: "status", text: "waiting for the first token…" }));
    this.output.replaceChildren(...parts);
  }

  scheduleChart() {
    if (this.chartPending) return;
    this.chartPending = true;
    requestAnimationFrame(() => { this.chartPending = false; this.drawChart(); });
  }

  drawChart() {
    const probs = this.rows.map((r) => r.p_end);
    if (this.rows.length > 0 && probs.every((p) => p === null || p === undefined)) {
      this.chart.replaceChildren(el("p", { class: "note",
        text: "No probabilities: replayed tokens are written by the replay, not chosen by a model." }));
      return;
    }
    const n = Math.max(probs.length, 1);
    const W = 600, H = 130, left = 34, right = 6, top = 8, bottom = 20;
    const w = (W - left - right) / Math.max(n, 16);
    const y = (p) => top + (H - top - bottom) * (1 - p);
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    svg.setAttribute("role", "img");
    const add = (tag, attrs, text) => {
      const e = document.createElementNS(ns, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      svg.append(e);
      return e;
    };
    add("rect", { class: "bg", x: left, y: top, width: W - left - right, height: H - top - bottom });
    for (const p of [0, 0.5, 1]) {
      add("line", { class: "grid", x1: left, x2: W - right, y1: y(p), y2: y(p) });
      add("text", { x: left - 4, y: y(p) + 3, "text-anchor": "end" }, (p * 100) + "%");
    }
    let peak = null;
    probs.forEach((p, i) => {
      if (p === null || p === undefined) return;
      if (!peak || p > peak.p) peak = { i, p };
      const last = this.finish && i === probs.length - 1;
      const bar = add("rect", {
        class: "bar" + (last ? " last" : ""), x: left + i * w + w * 0.1, width: Math.max(w * 0.8, 1),
        y: y(p), height: Math.max(y(0) - y(p), 0.5), "data-index": i,
      });
      const t = document.createElementNS(ns, "title");
      t.textContent = "token " + i + ": p(end) " + percent(p);
      bar.append(t);
    });
    add("text", { x: left, y: H - 6 }, "token 0");
    add("text", { x: W - right, y: H - 6, "text-anchor": "end" }, "token " + (n - 1));
    const summary = peak ? "p(end) peaked at " + percent(peak.p) + " at token " + peak.i : "no tokens yet";
    svg.setAttribute("aria-label", "Probability of the end token at each step; " + summary);
    this.chart.replaceChildren(svg, el("p", { class: "note", text: summary }));
  }

  markWasted(from) {
    [...this.tokens.children].forEach((chip, i) => chip.classList.toggle("wasted", i >= from));
  }
}

// ---------- the tooltip ----------

function showTip(chip, row, run) {
  const tip = $("tip");
  const hex = row.hex.match(/../g) || [];
  const rows = [
    ["token", "#" + row.index + ", id " + row.id + (row.special ? " (special)" : "") + (row.end_token ? " (end token)" : "")],
    ["bytes", hex.join(" ") + "  " + (row.special ? row.token : "\"" + row.token_esc + "\"")],
  ];
  if (row.p !== null && row.p !== undefined) rows.push(["p", percent(row.p) + " (chosen);  p(end) " + percent(row.p_end)]);
  if (row.emitted !== "") rows.push(["released", "\"" + row.emitted_esc + "\""]);
  if (row.held !== "") {
    const h = row.held_for;
    rows.push(["held back", "\"" + row.held_esc + "\"" + (h ? ": " + h.bytes + " of the " + h.of + " bytes of stop \"" + escapeText(h.stop) + "\"" : ": half a character")]);
  }
  if (run.finish && row.finish) rows.push(["finish", run.finish.describe]);
  const table = el("table", {}, ...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: v }))));
  const parts = [table];
  if (row.top && row.top.length) {
    const alts = el("table", { class: "alts" }, ...row.top.map((t) => el("tr", {},
      el("td", { text: percent(t.p) }), el("td", { text: "id " + t.id }),
      el("td", { text: t.special ? t.token : "\"" + t.token_esc + "\"" }),
      el("td", { text: t.id === row.id ? "← chosen" : "" }))));
    parts.push(el("div", { class: "hint", text: "most likely tokens at this step:" }), alts);
  } else if (row.p === null || row.p === undefined) {
    parts.push(el("div", { class: "hint", text: "replayed: no alternatives (no model chose it)" }));
  }
  tip.replaceChildren(...parts);
  tip.hidden = false;
  state.tipChip = chip;
  placeTip();
  chip.setAttribute("aria-describedby", "tip");
}

/** Puts the details under their chip (again after the generation pane scrolls). */
function placeTip() {
  const tip = $("tip"), chip = state.tipChip;
  if (tip.hidden || !chip) return;
  const r = chip.getBoundingClientRect();
  const width = Math.min(tip.offsetWidth, window.innerWidth - 16);
  const x = Math.max(8, Math.min(r.left, window.innerWidth - width - 8));
  tip.style.left = (x + window.scrollX) + "px";
  tip.style.top = (r.bottom + window.scrollY + 6) + "px";
}

function hideTip() {
  $("tip").hidden = true;
  state.tipChip = null;
}

// ---------- running ----------

function setStatus(s) { $("status").textContent = s; }
function setError(s) { $("error").textContent = s || ""; }

async function runAll() {
  if (state.running.length) return;
  setError("");
  $("wasted").textContent = "";
  $("report").hidden = true;
  let bodies;
  try {
    bodies = $("compare").checked ? [["A", requestBody("A")], ["B", requestBody("B")]] : [["", requestBody("A")]];
  } catch (e) {
    setError(e.message);
    return;
  }
  const runs = bodies.map(([label, body]) => new Run(label, body));
  $("runs").className = "runs" + (runs.length > 1 ? " two" : "");
  $("runs").replaceChildren(...runs.map((r) => r.node));
  $("run").disabled = true;
  $("cancel").disabled = false;
  setStatus("waiting for the model…");
  const controllers = runs.map(() => new AbortController());
  state.running = controllers;
  // B's request goes first: with "A without / B with", the server (one generation at a time) runs the one
  // that stops first, and the run-on then streams beside its finished answer.
  const pending = new Array(runs.length);
  for (const i of [...runs.keys()].reverse()) {
    pending[i] = stream("/v1/stoplab/trace", runs[i].body, controllers[i].signal, (ev) => runs[i].onEvent(ev));
  }
  const results = await Promise.allSettled(pending);
  state.running = [];
  $("run").disabled = false;
  $("cancel").disabled = true;
  let cancelled = false;
  results.forEach((r, i) => {
    if (r.status === "rejected") {
      if (r.reason && r.reason.name === "AbortError") { cancelled = true; return; }
      const who = runs.length > 1 ? runs[i].label + ": " : "";
      setError(($("error").textContent ? $("error").textContent + "\n" : "") + who + r.reason.message);
      runs[i].finishBox.replaceChildren(el("p", { class: "error", text: r.reason.message }));
    }
  });
  if (cancelled) setStatus("stopped: the server cancelled the generation when the page hung up");
  else if (runs.every((r) => r.finish)) setStatus("done: " + runs.map((r) => r.rows.length + " tokens").join(" and "));
  else setStatus("");
  if (runs.length === 2 && runs.every((r) => r.finish)) compare(runs[0], runs[1]);
}

/** The seed's "without / with a stop": where the two runs agree, what the longer one generated after the
 *  shorter one stopped is waste. */
function compare(a, b) {
  const [short, long] = a.rows.length <= b.rows.length ? [a, b] : [b, a];
  let same = 0;
  while (same < short.rows.length && short.rows[same].id === long.rows[same].id) same++;
  const describe = (r) => r.label + " generated " + r.rows.length + " tokens (" + r.finish.describe + ")";
  let text = describe(a) + "; " + describe(b) + ". ";
  if (same < short.rows.length) {
    text += "They part at token " + same + ": the settings changed what was sampled, so the difference is not waste.";
  } else if (long.rows.length === short.rows.length) {
    text += "Both stopped at the same token: nothing wasted.";
  } else {
    const wasted = long.rows.length - short.rows.length;
    text += "They agree token for token until " + short.label + " stopped, so " + long.label + "'s last " + wasted +
      " tokens (" + Math.round(100 * wasted / long.rows.length) + "% of its tokens) are wasted: generated after the stop had already been written.";
    long.markWasted(short.rows.length);
  }
  $("wasted").textContent = text;
}

function cancelAll() {
  for (const c of state.running) c.abort();
}

// ---------- scenarios ----------

function setValue(id, v) { $(id).value = v === undefined || v === null ? "" : String(v); }

function loadScenario(s) {
  $("turns").replaceChildren();
  const msgs = s.messages.slice();
  let prompt = "";
  if (msgs.length && msgs[msgs.length - 1].role === "user") prompt = msgs.pop().content;
  for (const m of msgs) addTurn(m.role, m.content);
  $("prompt").value = prompt;
  $("format").value = s.format;
  setValue("user-prefix", s.user_prefix && escapeText(s.user_prefix));
  setValue("ai-prefix", s.ai_prefix && escapeText(s.ai_prefix));
  setValue("separator", s.separator && escapeText(s.separator));
  $("natural-stop").checked = s.natural_stop;
  state.stopsA = s.stops.slice();
  $("stop-ids").value = s.stop_token_ids.join(", ");
  $("include-stop").checked = s.include_stop;
  $("ignore-eos").checked = s.ignore_eos;
  setValue("min-tokens", s.min_tokens);
  setValue("max-tokens", s.max_tokens);
  setValue("temperature", s.temperature);
  setValue("seed", s.seed);
  setValue("top-k", s.top_k);
  setValue("top-p", s.top_p);
  setValue("min-p", s.min_p);
  setValue("repeat-ngram", s.repetition ? s.repetition.ngram : "");
  setValue("repeat-count", s.repetition ? s.repetition.count : 2);
  $("logit-bias").value = s.logit_bias.map(([id, b]) => id + "=" + b).join(", ");
  $("compare").checked = false;
  $("b-box").hidden = true;
  drawStops();
  scheduleRender();
  setStatus("loaded " + s.name + ": " + s.title);
}

async function loadScenarios() {
  const box = $("scenarios");
  try {
    const r = await getJson("/v1/stoplab/scenarios");
    state.scenarios = r.scenarios;
    box.replaceChildren(...r.scenarios.map((s) => el("button", {
      type: "button", title: s.about, "data-name": s.name,
      onclick: () => {
        loadScenario(s);
        if (state.info && !state.info.weights && $("replay").value === "") {
          $("replay").focus();
          setStatus("loaded " + s.name + ": this server has no weights, so type the text the model should write, then Run");
        } else {
          runAll();
        }
      },
    }, s.name)));
  } catch (e) {
    box.replaceChildren(el("span", { class: "error", text: "scenarios: " + e.message }));
  }
}

// ---------- experiment reports ----------

function openReport(file) {
  const reader = new FileReader();
  reader.onload = () => {
    let json;
    try {
      json = JSON.parse(reader.result);
    } catch (e) {
      setError(file.name + ": not JSON (" + e.message + ")");
      return;
    }
    const problem = reportProblem(json);
    if (problem) {
      setError(file.name + ": not a stoplab experiment report: " + problem +
        " (open the report.json that `stoplab experiment --report DIR` writes, or the output of --json)");
      return;
    }
    setError("");
    showReport(file.name, json);
  };
  reader.onerror = () => setError(file.name + ": could not be read");
  reader.readAsText(file);
}

function reportProblem(json) {
  if (!json || typeof json !== "object" || !Array.isArray(json.scenarios)) return "it has no \"scenarios\" list";
  for (const [i, s] of json.scenarios.entries()) {
    for (const k of ["name", "runs", "tokens_mean", "tokens_max", "answered", "finishes"]) {
      if (!(k in s)) return "scenarios[" + i + "] has no \"" + k + "\"";
    }
  }
  return null;
}

function showReport(name, json) {
  const num = (x, d = 1) => (typeof x === "number" ? x.toFixed(d) : "-");
  const head = ["scenario", "runs", "finish", "tokens mean / max", "answered", "wasted mean / max", "run-on turns"];
  const rows = json.scenarios.map((s) => {
    const finishes = Object.entries(s.finishes).map(([k, n]) => k + "×" + n).join(" ");
    const shipped = state.scenarios.find((x) => x.name === s.name);
    const nameCell = el("td", {}, el("span", { title: s.about || "", text: s.name }));
    if (shipped) nameCell.append(" ", el("button", { type: "button", onclick: () => loadScenario(shipped), text: "load" }));
    return el("tr", {}, nameCell, el("td", { text: s.runs }), el("td", { text: finishes }),
      el("td", { text: num(s.tokens_mean) + " / " + s.tokens_max }), el("td", { text: s.answered + "/" + s.runs }),
      el("td", { text: s.answered > 0 ? num(s.wasted_mean) + " / " + s.wasted_max : "-" }),
      el("td", { text: num(s.run_on_turns_mean) }));
  });
  const table = el("table", { class: "report" },
    el("thead", {}, el("tr", {}, ...head.map((h) => el("th", { scope: "col", text: h })))), el("tbody", {}, ...rows));
  const samples = json.scenarios.filter((s) => s.results && s.results.length).map((s) =>
    el("details", {}, el("summary", { text: s.name + ": first run's output (" + s.results[0].finish_detail + ")" }),
      el("pre", { class: "output", text: s.results[0].text })));
  const meta = el("p", { class: "hint", text: name + ": " + json.scenarios.length + " scenarios" +
    (json.quick ? ", quick run" : "") + (typeof json.wall_s === "number" ? ", " + json.wall_s.toFixed(0) + " s" : "") });
  $("report-body").replaceChildren(meta, el("div", { class: "tablewrap" }, table), wastedChart(json.scenarios), ...samples);
  $("report").hidden = false;
  $("report").scrollIntoView({ block: "nearest" });
}

/** Tokens generated per scenario, the wasted part marked: the experiment's chart, drawn here. */
function wastedChart(scenarios) {
  const ns = "http://www.w3.org/2000/svg";
  const rowH = 18, left = 190, W = 600, H = scenarios.length * rowH + 10;
  const max = Math.max(1, ...scenarios.map((s) => s.tokens_mean || 0));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", "Tokens generated per scenario (mean), the wasted part in red");
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
  };
  scenarios.forEach((s, i) => {
    const y = 4 + i * rowH;
    const total = (W - left - 50) * (s.tokens_mean || 0) / max;
    const wasted = s.answered > 0 ? (W - left - 50) * (s.wasted_mean || 0) / max : 0;
    add("text", { x: left - 6, y: y + 12, "text-anchor": "end" }, s.name);
    add("rect", { class: "bar", x: left, y, width: Math.max(total - wasted, 0), height: rowH - 5 });
    add("rect", { class: "bar last", x: left + total - wasted, y, width: wasted, height: rowH - 5 });
    add("text", { x: left + total + 4, y: y + 12 }, num1(s.tokens_mean));
  });
  return el("div", { class: "chart" }, svg);
}
function num1(x) { return typeof x === "number" ? x.toFixed(1) : "-"; }

// ---------- start ----------

async function loadInfo() {
  try {
    const info = await getJson("/v1/stoplab/info");
    state.info = info;
    $("model").value = info.model;
    $("server").textContent = info.model + " · context " + info.context + " tokens · end tokens " +
      info.end_tokens.map((t) => t.token + " (" + t.id + ")").join(", ") + (info.weights ? "" : " · no weights: replay only");
    $("replay-hint").textContent = info.weights ? "Empty: the model samples." :
      "This server has no weights (--replay-only): every run needs replay text.";
    return true;
  } catch (e) {
    $("server").textContent = "server: " + e.message;
    return false;
  }
}

async function connect() {
  if (await loadInfo()) {
    $("key-box").hidden = !state.key;
    loadScenarios();
    scheduleRender();
  }
}

function init() {
  $("settings").addEventListener("submit", (e) => e.preventDefault());
  $("api-key").value = state.key;
  $("key-save").addEventListener("click", () => {
    state.key = $("api-key").value.trim();
    sessionStorage.setItem("stoplab-key", state.key);
    setError("");
    connect();
  });
  $("api-key").addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); $("key-save").click(); } });
  $("stop-add").addEventListener("click", () => addStop($("stop-input"), state.stopsA));
  $("b-stop-add").addEventListener("click", () => addStop($("b-stop-input"), state.stopsB));
  for (const [input, list] of [["stop-input", () => state.stopsA], ["b-stop-input", () => state.stopsB]]) {
    $(input).addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.ctrlKey && !e.metaKey) { e.preventDefault(); addStop($(input), list()); }
    });
  }
  $("turn-add").addEventListener("click", () => addTurn("user", "").focus());
  $("compare").addEventListener("change", () => {
    $("b-box").hidden = !$("compare").checked;
    if ($("compare").checked && state.stopsB.length === 0) { state.stopsB = state.stopsA.slice(); drawStops(); }
  });
  $("without-with").addEventListener("click", () => {
    state.stopsB = state.stopsA.length ? state.stopsA.slice() : state.stopsB;
    state.stopsA = [];
    $("b-stop-ids").value = $("stop-ids").value;
    $("stop-ids").value = "";
    drawStops();
    runAll();
  });
  for (const id of ["prompt", "format", "user-prefix", "ai-prefix", "separator"]) {
    $(id).addEventListener("input", scheduleRender);
    $(id).addEventListener("change", scheduleRender);
  }
  $("run").addEventListener("click", runAll);
  $("cancel").addEventListener("click", cancelAll);
  $("report-file").addEventListener("change", (e) => { if (e.target.files[0]) openReport(e.target.files[0]); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runAll(); }
    else if (e.key === "Escape") {
      if (!$("tip").hidden) hideTip();
      else if (state.running.length) cancelAll();
    }
  });
  $("results").addEventListener("scroll", placeTip, { passive: true });
  window.addEventListener("scroll", placeTip, { passive: true });
  drawStops();
  connect();
}

init();
