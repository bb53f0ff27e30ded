// The search page: a thin face over the HTTP API (/v1). Every text from the server or the user is inserted as
// text nodes (textContent), never parsed as HTML.
"use strict";

const KEY_STORAGE = "matsearch-api-key";
const SVG = "http://www.w3.org/2000/svg";
const STOPWORDS = new Set(["the", "and", "for", "are", "was", "what", "which", "with", "from", "that", "this",
  "how", "why", "who", "when", "where", "does", "into", "its", "their", "there", "been", "have", "has", "not"]);
const compact = new Intl.NumberFormat("en", { notation: "compact", maximumSignificantDigits: 3 });

const $ = (id) => document.getElementById(id);
let collectionInfo = null;  // GET /v1/collections/{name} of the selected collection
let lastAnswer = null;      // the last search's answer, marked on the frontier plot
let searchesStarted = 0;    // an answer that arrives after a later search started is dropped

// -- elements ---------------------------------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);  // strings become text nodes
  return node;
}

function svgEl(tag, attributes = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  node.append(...children);
  return node;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", isError);
}

// -- the API ----------------------------------------------------------------------------------------------

async function api(path, body) {
  const headers = { Accept: "application/json" };
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method: body === undefined ? "GET" : "POST", headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) $("key-box").open = true;
    throw new Error(`${response.status}: ${describeDetail(data.detail) || response.statusText}`);
  }
  return data;
}

function describeDetail(detail) {
  if (Array.isArray(detail)) return detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  return typeof detail === "string" ? detail : "";
}

// -- collections and the effort control -------------------------------------------------------------------

async function loadCollections() {
  const select = $("collection");
  const previous = select.value;
  const { collections } = await api("/v1/collections");
  select.replaceChildren(...collections.map((c) =>
    el("option", { value: c.name }, `${c.name} (${compact.format(c.count)} items)`)));
  if (!collections.length) {
    setStatus("No collections on this server yet.");
    return;
  }
  if (collections.some((c) => c.name === previous)) select.value = previous;
  await selectCollection();
}

async function selectCollection() {
  const name = $("collection").value;
  collectionInfo = null;
  lastAnswer = null;
  showResults([], []);  // nothing from the collection shown before
  $("run").replaceChildren();
  $("stages").tBodies[0].replaceChildren();
  try {
    collectionInfo = await api(`/v1/collections/${encodeURIComponent(name)}`);
  } catch (error) {
    setStatus(`Could not read collection ${name}: ${error.message}`, true);
  }
  const calibration = collectionInfo && collectionInfo.calibration;
  const stale = calibration && calibration.stale;
  const calibrated = Boolean(collectionInfo && collectionInfo.frontier && collectionInfo.frontier.length && !stale);
  $("recall").disabled = !calibrated;
  $("recall-note").textContent = calibrated
    ? "The cheapest calibrated plan that reaches this recall@k against exact search serves the query."
    : `${stale ? `Calibration is stale (${stale})` : "Not calibrated"}: searches run the default plan `
      + "(run `matsearch tune` on the collection to choose by recall).";
  drawFrontier();
  if ($("query").value.trim()) await runSearch();
}

function showRecall() {
  $("recall-value").textContent = Number($("recall").value).toFixed(2);
}

// -- searching --------------------------------------------------------------------------------------------

async function runSearch() {
  const query = $("query").value.trim();
  const name = $("collection").value;
  if (!query || !name) return;
  const live = collectionInfo ? collectionInfo.count : Infinity;  // a search may not ask for more than there are
  const request = { query, k: Math.max(1, Math.min(Number($("k").value) || 10, live)) };
  if ($("mode").value) request.mode = $("mode").value;
  if (!$("recall").disabled) request.target_recall = Number($("recall").value);
  const searchNumber = ++searchesStarted;
  setStatus("Searching…");
  try {
    const answer = await api(`/v1/collections/${encodeURIComponent(name)}/search`, request);
    if (searchNumber !== searchesStarted) return;
    lastAnswer = answer;
    showResults(answer.results, queryTerms(query));
    showRun(answer);
    drawFrontier();
    setStatus(`${answer.results.length} results in ${answer.took_ms.toFixed(1)} ms.`);
  } catch (error) {
    if (searchNumber === searchesStarted) setStatus(error.message, true);
  }
}

function queryTerms(query) {
  const words = query.toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  const stems = words.filter((w) => w.length > 2 && !STOPWORDS.has(w))
    .map((w) => (w.length > 4 && w.endsWith("s") ? w.slice(0, -1) : w));
  return [...new Set(stems)];
}

function highlighted(text, terms) {
  // The text as text nodes, with every word that starts with a query term in a <mark>.
  const fragment = document.createDocumentFragment();
  if (!terms.length) {
    fragment.append(text);
    return fragment;
  }
  const pattern = new RegExp(`(?<![\\p{L}\\p{N}])(?:${terms.join("|")})[\\p{L}\\p{N}]*`, "giu");
  let start = 0;
  for (const match of text.matchAll(pattern)) {
    fragment.append(text.slice(start, match.index), el("mark", {}, match[0]));
    start = match.index + match[0].length;
  }
  fragment.append(text.slice(start));
  return fragment;
}

function showResults(results, terms) {
  $("results").replaceChildren(...results.map((hit, index) => {
    const item = el("li", { class: "hit" },
      el("div", { class: "hit-head" },
        el("span", { class: "hit-id" }, String(hit.id)),
        el("span", { class: "score" }, `score ${Number(hit.score).toFixed(4)}`)),
      el("p", { class: "text clamped", id: `text-${index}` },
        highlighted(hit.text == null ? "(no text)" : String(hit.text), terms)),
      el("button", { type: "button", class: "more", "aria-expanded": "false", "aria-controls": `text-${index}` },
        "Show all"));
    if (hit.metadata && Object.keys(hit.metadata).length) {
      item.append(el("dl", { class: "metadata" }, ...Object.entries(hit.metadata).flatMap(([key, value]) =>
        [el("dt", {}, key), el("dd", {}, typeof value === "string" ? value : JSON.stringify(value))])));
    }
    return item;
  }));
}

function showRun(answer) {
  const cost = answer.cost || {};
  const facts = [
    ["plan", answer.plan],
    ["target", answer.target || "none"],
    ["mode", answer.mode || ""],
    ["multiply-adds", compact.format(cost.multiply_adds || 0)],
    ["bytes read", compact.format(cost.bytes_read || 0)],
    ["lists probed", cost.lists_probed ? compact.format(cost.lists_probed) : "none"],
    ["time", `${answer.took_ms.toFixed(2)} ms (search ${((cost.seconds || 0) * 1e3).toFixed(2)} ms)`],
  ];
  $("run").replaceChildren(...facts.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, String(value))]));
  const candidates = cost.candidates || [];
  const seconds = cost.stage_seconds || [];
  const names = cost.stages && cost.stages.length === candidates.length ? cost.stages : [];
  $("stages").tBodies[0].replaceChildren(...candidates.map((kept, i) => el("tr", {},
    el("th", { scope: "row" }, names[i] || String(i + 1)), el("td", {}, compact.format(kept)),
    el("td", {}, seconds[i] === undefined ? "" : (seconds[i] * 1e3).toFixed(3)))));
}

// -- the frontier plot ------------------------------------------------------------------------------------

function drawFrontier() {
  const figure = $("frontier");
  const frontier = (collectionInfo && collectionInfo.frontier) || [];
  if (!frontier.length) {
    figure.replaceChildren(el("p", { class: "note" }, "No frontier: this collection is not calibrated."));
    return;
  }
  // the frontier is Pareto in recall and time (calibration's ms per query), so it is drawn against time
  const x = (p) => Math.max(p.ms, 1e-6);
  const points = [...frontier].sort((a, b) => x(a) - x(b));
  const [width, height, left, right, top, bottom] = [340, 220, 46, 22, 10, 40];
  const [lo, hi] = [Math.log10(x(points[0])), Math.log10(x(points[points.length - 1]))];
  const span = hi - lo || 1;
  const minRecall = Math.min(0.8, Math.floor(Math.min(...points.map((p) => p.recall)) * 20) / 20);
  const px = (p) => left + ((Math.log10(x(p)) - lo) / span) * (width - left - right);
  const py = (recall) => top + ((1 - recall) / (1 - minRecall)) * (height - top - bottom);
  const used = lastAnswer ? new Set(String(lastAnswer.plan).split(/[\s(),;]+/)) : new Set();
  const target = Number($("recall").value);

  const plot = svgEl("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "frontier-caption" },
    svgEl("line", { class: "axis", x1: left, y1: height - bottom, x2: width - right, y2: height - bottom }),
    svgEl("line", { class: "axis", x1: left, y1: top, x2: left, y2: height - bottom }),
    svgEl("line", { class: "target", x1: left, y1: py(target), x2: width - right, y2: py(target) }),
    svgEl("polyline", { class: "curve", points: points.map((p) => `${px(p)},${py(p.recall)}`).join(" ") }),
    ...recallTicks(minRecall).map((r) => svgEl("text", { class: "tick", x: left - 6, y: py(r) + 4, "text-anchor": "end" },
      r.toFixed(2))),
    ...costTicks(lo, hi).map((power) => svgEl("text", {
      class: "tick", x: left + ((power - lo) / span) * (width - left - right), y: height - bottom + 14,
      "text-anchor": "middle" }, formatMs(10 ** power))),
    svgEl("text", { class: "label", x: (left + width - right) / 2, y: height - 6, "text-anchor": "middle" },
      "ms per query, one at a time (log)"),
    ...points.map((p) => svgEl("circle", {
      class: used.has(p.plan) ? "point used" : "point", cx: px(p), cy: py(p.recall), r: used.has(p.plan) ? 6 : 3.5 },
      svgEl("title", {}, `${p.plan}: recall ${p.recall.toFixed(3)}, ${compact.format(p.cost)} multiply-adds, `
        + `${Number(p.ms).toFixed(3)} ms`))));
  const usedPoint = points.find((p) => used.has(p.plan));
  const caption = el("figcaption", { id: "frontier-caption" },
    "Calibrated plans: recall@k against time per query; the dashed line is the recall target"
    + (usedPoint ? `, the large point the plan the last search ran (${usedPoint.plan}).` : "."));
  figure.replaceChildren(plot, caption);
}

function formatMs(ms) {
  return ms >= 1 ? compact.format(ms) : String(Number(ms.toPrecision(2)));
}

function recallTicks(minRecall) {
  const ticks = [];
  for (let r = 1; r >= minRecall - 1e-9; r -= 0.05) ticks.push(r);
  return ticks;
}

function costTicks(lo, hi) {
  // log10 of the 1-2-5 steps inside [lo, hi] (powers of ten alone where the range spans several)
  const steps = hi - lo > 2 ? [1] : [1, 2, 5];
  const ticks = [];
  for (let power = Math.floor(lo); power <= Math.ceil(hi); power += 1) {
    for (const step of steps) {
      const tick = power + Math.log10(step);
      if (tick >= lo - 1e-9 && tick <= hi + 1e-9) ticks.push(tick);
    }
  }
  return ticks.length > 1 ? ticks : [lo, (lo + hi) / 2, hi];  // under a decade: the ends and the middle
}

function toggleText(event) {
  const button = event.target.closest("button.more");
  if (!button) return;
  const open = button.getAttribute("aria-expanded") !== "true";
  button.setAttribute("aria-expanded", String(open));
  button.textContent = open ? "Show less" : "Show all";
  $(button.getAttribute("aria-controls")).classList.toggle("clamped", !open);
}

// -- wiring -----------------------------------------------------------------------------------------------

function start() {
  const keyInput = $("api-key");
  keyInput.value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    if (keyInput.value) sessionStorage.setItem(KEY_STORAGE, keyInput.value);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadCollections().catch((error) => setStatus(error.message, true));
  });
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runSearch();
  });
  $("collection").addEventListener("change", selectCollection);
  $("results").addEventListener("click", toggleText);
  $("recall").addEventListener("input", () => { showRecall(); drawFrontier(); });
  $("recall").addEventListener("change", runSearch);
  showRecall();
  loadCollections().catch((error) => setStatus(`Could not list collections: ${error.message}`, true));
}

start();
