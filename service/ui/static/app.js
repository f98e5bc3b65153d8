// The Retail Pulse dashboard: jobs, one job, the service, and a submit form.
// Everything from the service is shown with textContent, never parsed as HTML.

import { ApiError, LiveFeed, api, authInfo, download, forgetKey, rememberKey, storedKey } from "./api.js";
import { parseCsv, visitsFromRows } from "./csv.js";

const STATUSES = ["ongoing", "completed", "failed", "cancelled"];
const MAX_STORE_ERRORS_SHOWN = 200;
const REFRESH_AT_MOST_EVERY = 1000;
const STATS_EVERY = 5000;
const NUMERIC = ["#", "Size", "Perimeter"];

const main = document.getElementById("main");
const live = document.getElementById("live");
const forgetButton = document.getElementById("forget-key");
const feed = new LiveFeed();
let disposeView = () => {};
let keyRequired = false;

// -- small DOM helpers -------------------------------------------------------------

/** An element with attributes (or properties, for on* handlers) and children (text or nodes). */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) element.addEventListener(name.slice(2), value);
    else if (name === "text") element.textContent = value;
    else if (value === true) element.setAttribute(name, "");
    else element.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

const SVG = "http://www.w3.org/2000/svg";
function s(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/**
 * Make ``container``'s children look like ``nodes``, changing in place what has the same
 * shape: a refresh every second must not take the focus from a link or button, nor reset
 * a scrolled table. An element whose tag or id differs is replaced (with its listeners).
 */
function update(container, ...nodes) {
  const fresh = container.cloneNode(false);
  fresh.append(...nodes.flat().filter((node) => node !== null && node !== undefined));
  patchChildren(container, fresh);
}

function patchChildren(current, fresh) {
  const before = [...current.childNodes];
  const after = [...fresh.childNodes];
  if (before.length !== after.length) {
    current.replaceChildren(...after);
    return;
  }
  before.forEach((node, index) => patch(node, after[index]));
}

function patch(current, fresh) {
  if (current.nodeType === Node.TEXT_NODE && fresh.nodeType === Node.TEXT_NODE) {
    if (current.data !== fresh.data) current.data = fresh.data;
    return;
  }
  const same = current.nodeType === Node.ELEMENT_NODE && current.nodeName === fresh.nodeName;
  if (!same || current.id !== fresh.id) {
    current.replaceWith(fresh);
    return;
  }
  for (const { name } of [...current.attributes]) {
    if (!fresh.hasAttribute(name)) current.removeAttribute(name);
  }
  for (const { name, value } of [...fresh.attributes]) {
    if (current.getAttribute(name) !== value) current.setAttribute(name, value);
  }
  patchChildren(current, fresh);
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}`, text: status });
}

function number(value) {
  return Number(value).toLocaleString("en");
}

function progressOf(job, label) {
  const { total, done, failed } = job.progress;
  const text = `${number(done)} / ${number(total)}${failed ? ` (${number(failed)} failed)` : ""}`;
  return h(
    "div",
    { class: "progress" },
    h("progress", {
      max: Math.max(total, 1),
      value: done,
      "aria-label": `${label}: ${done} of ${total} images settled, ${failed} failed`,
    }),
    h("span", { class: "progress-text", text }),
  );
}

function seconds(job, now = Date.now()) {
  const start = Date.parse(job.created_at);
  const end = job.finished_at ? Date.parse(job.finished_at) : now;
  return Math.max(0, (end - start) / 1000);
}

function span(secondsValue) {
  if (secondsValue < 10) return `${secondsValue.toFixed(1)} s`;
  const value = Math.round(secondsValue);
  if (value < 60) return `${value} s`;
  if (value < 3600) return `${Math.floor(value / 60)} min ${value % 60} s`;
  if (value < 86400) return `${Math.floor(value / 3600)} h ${Math.floor((value % 3600) / 60)} min`;
  return `${Math.floor(value / 86400)} d ${Math.floor((value % 86400) / 3600)} h`;
}

function age(job, now = Date.now()) {
  const elapsed = Math.max(0, (now - Date.parse(job.created_at)) / 1000);
  // Whole seconds: an age that ticks in tenths would redraw the list for nothing.
  return `${elapsed < 60 ? `${Math.floor(elapsed)} s` : span(elapsed)} ago`;
}

function rate(job, now = Date.now()) {
  const elapsed = seconds(job, now);
  return elapsed > 0 ? (job.progress.done / elapsed).toFixed(1) : "–";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "–";
}

function tableWrap(label, table) {
  // Focusable, so a keyboard can scroll a wide table on a narrow screen.
  return h("div", { class: "table-wrap", role: "region", "aria-label": label, tabindex: 0 }, table);
}

function messageLine() {
  return h("p", { class: "message", role: "status" });
}

function say(element, text, kind = "") {
  element.textContent = text;
  element.className = `message ${kind}`.trim();
}

function problem(error) {
  if (error instanceof ApiError) return error.message;
  return `the service could not be reached (${error.message})`;
}

/** Calls ``run`` at most once per ``every`` ms, however often it is asked to. */
function throttled(run, every = REFRESH_AT_MOST_EVERY) {
  let last = 0;
  let timer = null;
  return function ask() {
    if (timer) return;
    const wait = Math.max(0, last + every - Date.now());
    timer = setTimeout(() => {
      timer = null;
      last = Date.now();
      run();
    }, wait);
  };
}

function heading(text, ...extra) {
  const title = h("h1", { tabindex: -1 }, text, ...extra);
  return title;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
  const title = main.querySelector("h1");
  if (title) title.focus({ preventScroll: true });
}

// -- the jobs view -------------------------------------------------------------------

function jobsView(params) {
  const status = STATUSES.includes(params.get("status")) ? params.get("status") : "";
  const limit = ["20", "50", "100"].includes(params.get("limit")) ? params.get("limit") : "20";
  const cursors = [null]; // the `before` of each page shown so far
  let jobs = [];
  let next = null;
  let disposed = false;

  const statusSelect = h(
    "select",
    { id: "status-filter", onchange: () => go({ status: statusSelect.value, limit }) },
    h("option", { value: "", text: "all" }),
    STATUSES.map((value) => h("option", { value, text: value, selected: value === status })),
  );
  const limitSelect = h(
    "select",
    { id: "jobs-limit", onchange: () => go({ status, limit: limitSelect.value }) },
    ["20", "50", "100"].map((value) => h("option", { value, text: value, selected: value === limit })),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { id: "jobs", class: "cards" },
    h("caption", { class: "visually-hidden", text: "Recent jobs, newest first" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", { scope: "col", text: "Job" }),
        h("th", { scope: "col", text: "Status" }),
        h("th", { scope: "col", text: "Progress" }),
        h("th", { scope: "col", text: "Age" }),
        h("th", { scope: "col", class: "num", text: "Duration" }),
        h("th", { scope: "col", class: "num", text: "Images/s" }),
      ),
    ),
    body,
  );
  const newer = h("button", { type: "button", class: "quiet", onclick: () => page(-1) }, "Newer");
  const older = h("button", { type: "button", class: "quiet", onclick: () => page(1) }, "Older");
  const where = h("span", { "aria-live": "polite" });
  const message = messageLine();

  show(
    heading("Jobs"),
    h(
      "form",
      { class: "controls", onsubmit: (event) => event.preventDefault() },
      h("label", { for: "status-filter" }, "Status"),
      statusSelect,
      h("label", { for: "jobs-limit" }, "Per page"),
      limitSelect,
    ),
    message,
    tableWrap("Jobs", table),
    h("nav", { class: "pager", "aria-label": "Job pages" }, newer, where, older),
  );

  function go(query) {
    const search = new URLSearchParams();
    if (query.status) search.set("status", query.status);
    if (query.limit !== "20") search.set("limit", query.limit);
    const suffix = search.toString();
    location.hash = `#/jobs${suffix ? `?${suffix}` : ""}`;
  }

  function page(direction) {
    if (direction > 0 && next !== null) cursors.push(next);
    if (direction < 0 && cursors.length > 1) cursors.pop();
    load();
  }

  function row(job) {
    const label = `Job ${job.job_id}`;
    return h(
      "tr",
      { "data-job": job.job_id, class: job.status === "failed" ? "failed" : undefined },
      h(
        "th",
        { scope: "row", class: "nowrap", "data-label": "Job" },
        h("a", { href: `#/jobs/${job.job_id}`, text: label }),
      ),
      h("td", { "data-label": "Status" }, statusBadge(job.status)),
      h("td", { "data-label": "Progress" }, progressOf(job, label)),
      h("td", { class: "nowrap", "data-label": "Age", title: when(job.created_at), text: age(job) }),
      h("td", { class: "num", "data-label": "Duration", text: span(seconds(job)) }),
      h("td", { class: "num", "data-label": "Images/s", text: rate(job) }),
    );
  }

  function render() {
    if (!jobs.length) {
      const text = status ? `No ${status} jobs.` : "No jobs yet.";
      update(body, h("tr", {}, h("td", { colspan: 6, class: "empty", text })));
    } else {
      update(body, ...jobs.map(row));
    }
    newer.disabled = cursors.length === 1;
    older.disabled = next === null;
    where.textContent = `Page ${cursors.length}`;
  }

  async function load() {
    const query = new URLSearchParams({ limit });
    if (status) query.set("status", status);
    const before = cursors[cursors.length - 1];
    if (before !== null) query.set("before", before);
    try {
      const answer = await api(`/api/jobs?${query}`);
      if (disposed) return;
      jobs = answer.jobs;
      next = answer.next_before;
      say(message, "");
      render();
    } catch (error) {
      if (!disposed) say(message, `Cannot list jobs: ${problem(error)}`, "error");
    }
  }

  const refresh = throttled(load);
  const unsubscribe = feed.subscribe(({ type, data }) => {
    if (type === "tick") {
      // Polling: the first page may gain jobs, and listed ongoing jobs move.
      if (cursors.length === 1 || jobs.some((job) => job.status === "ongoing")) refresh();
    } else if (type === "resync") {
      refresh();
    } else if (type === "progress") {
      const job = jobs.find((candidate) => candidate.job_id === data.job_id);
      if (job) {
        job.progress = { total: data.total, done: data.done, failed: data.failed };
        render();
      } else if (cursors.length === 1) {
        refresh(); // a new job
      }
    } else if (type === "done") {
      refresh();
    }
  });
  // Ages and rates of ongoing jobs move with the clock, without asking the service.
  const clock = setInterval(() => {
    if (jobs.some((job) => job.status === "ongoing")) render();
  }, 1000);
  load();
  return () => {
    disposed = true;
    unsubscribe();
    clearInterval(clock);
  };
}

// -- the job view ---------------------------------------------------------------------

function jobView(jobId, params) {
  let failedOnly = params.get("failed") === "true";
  let limit = ["10", "25", "50", "100"].includes(params.get("limit")) ? params.get("limit") : "25";
  let offsets = [0]; // where each page shown so far began
  let detail = null;
  let disposed = false;
  let cancelArmed = null;

  const title = heading(`Job ${jobId}`);
  const badge = h("span");
  title.append(badge);
  const facts = h("dl", { class: "facts", id: "job-summary" });
  const message = messageLine();
  const actions = h("div", { class: "actions" });
  const storeSection = h("section", { "aria-labelledby": "stores-title" });
  const failedBox = h("input", {
    type: "checkbox",
    id: "failed-only",
    checked: failedOnly,
    onchange: () => {
      failedOnly = failedBox.checked;
      offsets = [0];
      loadPage();
    },
  });
  const limitSelect = h(
    "select",
    {
      id: "images-limit",
      onchange: () => {
        limit = limitSelect.value;
        offsets = [0];
        loadPage();
      },
    },
    ["10", "25", "50", "100"].map((value) => h("option", { value, text: value, selected: value === limit })),
  );
  const body = h("tbody");
  const table = h(
    "table",
    { id: "images", class: "cards" },
    h("caption", { class: "visually-hidden", text: "Per-image results in submission order" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["#", "Store", "Store name", "Visit time", "URL", "Size", "Perimeter", "Error", "State"].map((name) =>
          h("th", { scope: "col", class: NUMERIC.includes(name) ? "num" : undefined, text: name }),
        ),
      ),
    ),
    body,
  );
  const previous = h("button", { type: "button", class: "quiet", onclick: () => turn(-1) }, "Previous");
  const nextButton = h("button", { type: "button", class: "quiet", onclick: () => turn(1) }, "Next");
  const where = h("span", { id: "images-where", "aria-live": "polite" });

  show(
    title,
    facts,
    actions,
    message,
    storeSection,
    h("h2", { id: "images-title", text: "Images" }),
    h(
      "form",
      { class: "controls", onsubmit: (event) => event.preventDefault() },
      h("label", { for: "failed-only" }, failedBox, "Failed images only"),
      h("label", { for: "images-limit" }, "Per page"),
      limitSelect,
    ),
    tableWrap("Images", table),
    h("nav", { class: "pager", "aria-label": "Image pages" }, previous, where, nextButton),
  );

  function fact(name, value) {
    return [h("dt", { text: name }), h("dd", {}, value)];
  }

  function renderSummary() {
    const job = detail;
    update(badge, statusBadge(job.status));
    update(
      facts,
      ...fact("Status", job.status),
      ...fact("Progress", progressOf(job, `Job ${job.job_id}`)),
      ...fact("Created", when(job.created_at)),
      ...fact("Finished", job.finished_at ? when(job.finished_at) : "not yet"),
      ...fact("Duration", span(seconds(job))),
      ...fact("Images per second", rate(job)),
    );
    renderActions();
    renderStores();
  }

  function renderActions() {
    const csvPath = `/api/jobs/${jobId}/results?format=csv`;
    const filename = `job-${jobId}-results.csv`;
    // A plain link cannot carry the key: with one, the file comes through fetch and a Blob.
    const exporter = storedKey()
      ? h(
          "button",
          { type: "button", class: "quiet", id: "export-csv", onclick: () => exportCsv(csvPath, filename) },
          "Export CSV",
        )
      : h("a", { href: csvPath, download: filename, id: "export-csv" }, "Export CSV");
    const buttons = [exporter];
    if (detail.status === "ongoing") {
      const label = cancelArmed ? "Confirm cancel" : "Cancel job";
      buttons.push(h("button", { type: "button", class: "danger", id: "cancel-job", onclick: cancel }, label));
    }
    if (detail.status === "failed") {
      buttons.push(h("button", { type: "button", id: "retry-job", onclick: retry }, "Retry failed images"));
    }
    update(actions, ...buttons);
  }

  function renderStores() {
    const errors = detail.error || [];
    const parts = [h("h2", { id: "stores-title", text: "Failed stores" })];
    if (!errors.length) {
      const text =
        detail.status === "ongoing"
          ? "Listed when the job ends. Meanwhile, “Failed images only” below shows each failure " +
            "as it happens."
          : "None: every store's images were measured.";
      parts.push(h("p", { class: "empty", text }));
    } else {
      const shown = errors.slice(0, MAX_STORE_ERRORS_SHOWN);
      const rows = shown.map((entry) =>
        h(
          "tr",
          {},
          h("th", { scope: "row", text: entry.store_id }),
          h("td", { class: "error", text: entry.error }),
        ),
      );
      parts.push(
        tableWrap(
          "Failed stores",
          h(
            "table",
            { id: "failed-stores" },
            h("caption", {
              text: `${number(errors.length)} store${errors.length === 1 ? "" : "s"} with failed images`,
            }),
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", { scope: "col", text: "Store" }),
                h("th", { scope: "col", text: "Reason (its first failed image)" }),
              ),
            ),
            h("tbody", {}, rows),
          ),
        ),
      );
      if (errors.length > shown.length) {
        const more = number(errors.length - shown.length);
        parts.push(h("p", { class: "empty", text: `And ${more} more: the CSV export has them all.` }));
      }
    }
    update(storeSection, ...parts);
  }

  function renderImages() {
    const rows = detail.results;
    if (!rows.length) {
      const text = failedOnly ? "No failed images here." : "No images on this page.";
      update(body, h("tr", {}, h("td", { colspan: 9, class: "empty", text })));
    } else {
      update(
        body,
        ...rows.map((image) =>
          h(
            "tr",
            { class: image.error ? "failed" : undefined, "data-index": image.index },
            h("td", { class: "num", "data-label": "#", text: image.index + 1 }),
            h("td", { class: "nowrap", "data-label": "Store", text: image.store_id }),
            h("td", { "data-label": "Store name", text: image.store_name ?? "–" }),
            h("td", { class: "nowrap", "data-label": "Visit time", text: image.visit_time }),
            h("td", { class: "url", "data-label": "URL", text: image.url }),
            h("td", {
              class: "num",
              "data-label": "Size",
              text: image.width == null ? "–" : `${image.width} × ${image.height}`,
            }),
            h("td", { class: "num", "data-label": "Perimeter", text: image.perimeter ?? "–" }),
            h("td", { class: "error", "data-label": "Error", text: image.error ?? "" }),
            h("td", { class: "nowrap", "data-label": "State", text: image.state ?? "" }),
          ),
        ),
      );
    }
    const offset = offsets[offsets.length - 1];
    previous.disabled = offsets.length === 1;
    nextButton.disabled = detail.next_offset === null;
    const total = detail.progress.total;
    if (failedOnly) {
      const first = rows.length ? rows[0].index + 1 : offset + 1;
      where.textContent = rows.length
        ? `Failed images from #${number(first)} (of ${number(detail.progress.failed)} failed)`
        : `No failed images from #${number(first)}`;
    } else {
      where.textContent = rows.length
        ? `Images ${number(offset + 1)}–${number(offset + rows.length)} of ${number(total)}`
        : `Nothing past image ${number(Math.min(offset, total))} of ${number(total)}`;
    }
  }

  function turn(direction) {
    if (direction > 0 && detail && detail.next_offset !== null) offsets.push(detail.next_offset);
    if (direction < 0 && offsets.length > 1) offsets.pop();
    loadPage();
  }

  async function loadPage() {
    const query = new URLSearchParams({ offset: offsets[offsets.length - 1], limit });
    if (failedOnly) query.set("failed", "true");
    try {
      const answer = await api(`/api/jobs/${jobId}?${query}`);
      if (disposed) return;
      detail = answer;
      renderSummary();
      renderImages();
    } catch (error) {
      if (disposed) return;
      say(message, `Cannot read job ${jobId}: ${problem(error)}`, "error");
    }
  }

  async function exportCsv(path, filename) {
    say(message, "Preparing the CSV…");
    try {
      await download(path, filename);
      say(message, `Saved ${filename}.`, "ok");
    } catch (error) {
      say(message, `Export failed: ${problem(error)}`, "error");
    }
  }

  async function cancel() {
    // Two presses: a stray click must not stop a 100,000-image job.
    if (!cancelArmed) {
      cancelArmed = setTimeout(() => {
        cancelArmed = null;
        if (detail) renderActions();
      }, 5000);
      renderActions();
      document.getElementById("cancel-job")?.focus();
      return;
    }
    clearTimeout(cancelArmed);
    cancelArmed = null;
    try {
      await api(`/api/jobs/${jobId}/cancel`, { method: "POST" });
      say(message, "Cancelled: no new image of this job starts.", "ok");
    } catch (error) {
      say(message, `Cancel refused: ${problem(error)}`, "error");
    }
    loadPage();
  }

  async function retry() {
    try {
      const answer = await api(`/api/jobs/${jobId}/retry`, { method: "POST" });
      say(message, `Retrying ${number(answer.queued)} failed images.`, "ok");
    } catch (error) {
      say(message, `Retry refused: ${problem(error)}`, "error");
    }
    loadPage();
  }

  const refresh = throttled(loadPage);
  const unsubscribe = feed.subscribe(({ type, data }) => {
    if (type === "tick" || type === "resync") {
      if (!detail || detail.status === "ongoing") refresh();
    } else if ((type === "progress" || type === "done") && data.job_id === jobId) {
      if (type === "progress" && detail) {
        detail.progress = { total: data.total, done: data.done, failed: data.failed };
        renderSummary();
      }
      refresh();
    }
  });
  const clock = setInterval(() => {
    if (detail && detail.status === "ongoing") renderSummary();
  }, 1000);
  loadPage();
  return () => {
    disposed = true;
    unsubscribe();
    clearInterval(clock);
    clearTimeout(cancelArmed);
  };
}

// -- the service view -------------------------------------------------------------------

/** The throughput chart as inline SVG, drawn at the pixel size it is shown at. */
function chart(points, width) {
  const height = 200;
  const left = 44;
  const bottom = 22;
  const top = 10;
  const plotWidth = width - left - 8;
  const plotHeight = height - top - bottom;
  const values = points.map(([, value]) => value);
  const highest = Math.max(1, ...values);
  const scale = niceCeiling(highest);
  const x = (index) => left + (plotWidth * index) / Math.max(points.length - 1, 1);
  const y = (value) => top + plotHeight - (plotHeight * value) / scale;
  const latest = values.length ? values[values.length - 1] : 0;
  const svg = s("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    id: "throughput-chart",
    "aria-label":
      `Images per second over the last five minutes; latest ${latest}, ` +
      `highest ${Math.max(0, ...values)}`,
  });
  for (const fraction of [0, 0.5, 1]) {
    const level = y(scale * fraction);
    svg.append(s("line", { class: "chart-grid", x1: left, x2: width - 8, y1: level, y2: level }));
    const label = String(+(scale * fraction).toFixed(1));
    svg.append(s("text", { class: "chart-label", x: left - 6, y: level + 4, "text-anchor": "end" }, label));
  }
  svg.append(s("text", { class: "chart-label", x: left, y: height - 4 }, "5 min ago"));
  svg.append(s("text", { class: "chart-label", x: width - 8, y: height - 4, "text-anchor": "end" }, "now"));
  if (points.length) {
    const line = points.map(([, value], index) => `${x(index).toFixed(1)},${y(value).toFixed(1)}`).join(" ");
    const base = `${x(points.length - 1).toFixed(1)},${y(0)} ${x(0).toFixed(1)},${y(0)}`;
    svg.append(s("polygon", { class: "chart-area", points: `${line} ${base}` }));
    svg.append(s("polyline", { class: "chart-line", points: line }));
  }
  return svg;
}

function niceCeiling(value) {
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function serviceView() {
  let disposed = false;
  const message = messageLine();
  const tiles = h("dl", { class: "tiles", id: "service-tiles" });
  const figure = h("figure", { class: "chart" });
  const failures = h("section", { "aria-labelledby": "failures-title" });

  show(
    heading("Service"),
    message,
    tiles,
    h("h2", { text: "Images per second, last five minutes" }),
    figure,
    failures,
  );

  function tile(name, value, kind) {
    const classes = `tile ${kind || ""}`.trim();
    return h("div", { class: classes }, h("dt", { text: name }), h("dd", { text: value }));
  }

  let last = null;

  function render(stats) {
    last = stats;
    const points = stats.images_per_second;
    const latest = points.length ? points[points.length - 1][1] : 0;
    update(
      tiles,
      tile("Readiness", stats.ready ? "ready" : "not ready", stats.ready ? "good" : "bad"),
      tile("Replicas", number(stats.replicas)),
      tile("Images/s (last 5 s)", String(latest)),
      tile("In flight", number(stats.in_flight)),
      tile("Queued", number(stats.queued)),
      tile("Pending", number(stats.pending)),
    );
    const caption = stats.ready ? "" : `Not ready: ${stats.reason || "no reason given"}. `;
    const whose = stats.replicas === 1 ? "this replica" : `summed over ${stats.replicas} replicas`;
    const average = points.length ? points.reduce((sum, [, value]) => sum + value, 0) / points.length : 0;
    update(
      figure,
      chart(points, Math.max(280, Math.floor(figure.clientWidth || 600))),
      h("figcaption", {
        text: `${caption}One point per 5 seconds, ${whose}; average ${average.toFixed(1)} images/s.`,
      }),
    );
    const kinds = Object.entries(stats.failures_by_kind).sort((a, b) => b[1] - a[1]);
    const parts = [h("h2", { id: "failures-title", text: "Failures by kind, last five minutes" })];
    if (!kinds.length) {
      parts.push(h("p", { class: "empty", text: "No failed images." }));
    } else {
      parts.push(
        tableWrap(
          "Failures by kind",
          h(
            "table",
            { id: "failures" },
            h(
              "thead",
              {},
              h(
                "tr",
                {},
                h("th", { scope: "col", text: "Kind" }),
                h("th", { scope: "col", class: "num", text: "Failed images" }),
              ),
            ),
            h(
              "tbody",
              {},
              kinds.map(([kind, count]) =>
                h("tr", {}, h("th", { scope: "row", text: kind }), h("td", { class: "num", text: number(count) })),
              ),
            ),
          ),
        ),
      );
    }
    update(failures, ...parts);
  }

  async function load() {
    try {
      const stats = await api("/api/stats");
      if (disposed) return;
      say(message, "");
      render(stats);
    } catch (error) {
      if (!disposed) say(message, `Cannot read the service's figures: ${problem(error)}`, "error");
    }
  }

  const timer = setInterval(() => {
    if (!document.hidden) load();
  }, STATS_EVERY);
  // Redrawn at the new width (no request): text in the chart keeps its size.
  const resized = throttled(() => {
    if (last && !disposed) render(last);
  }, 200);
  window.addEventListener("resize", resized);
  load();
  return () => {
    disposed = true;
    clearInterval(timer);
    window.removeEventListener("resize", resized);
  };
}

// -- the submit form ------------------------------------------------------------------

function submitView() {
  const text = h("textarea", {
    id: "job-json",
    rows: 14,
    spellcheck: "false",
    "aria-describedby": "job-json-help",
    placeholder:
      '{"count": 1, "visits": [{"store_id": "S00339218", "image_url": ["https://…"], ' +
      '"visit_time": "2026-11-29T10:00:00Z"}]}',
  });
  const file = h("input", {
    type: "file",
    id: "job-csv",
    accept: ".csv,text/csv",
    "aria-describedby": "job-csv-help",
    onchange: readCsv,
  });
  const note = h("p", { class: "message", role: "status", id: "submit-note" });
  const errors = h("div", { role: "alert", id: "submit-errors", class: "error-text" });
  const button = h("button", { type: "submit", id: "submit-job" }, "Submit job");

  show(
    heading("Submit a job"),
    h(
      "form",
      { class: "stack", id: "submit-form", onsubmit: send },
      h("label", { for: "job-csv" }, "From a CSV file"),
      h("p", {
        id: "job-csv-help",
        class: "empty",
        text:
          "Columns store_id, image_url, visit_time: one image per row; rows of the same store " +
          "and visit time make one visit. It fills in the JSON below.",
      }),
      file,
      h("label", { for: "job-json" }, "Job JSON"),
      h("p", {
        id: "job-json-help",
        class: "empty",
        text: 'As POST /api/submit takes it: {"count": n, "visits": [...]}.',
      }),
      text,
      h("div", { class: "actions" }, button),
      note,
      errors,
    ),
  );

  async function readCsv() {
    errors.replaceChildren();
    const chosen = file.files && file.files[0];
    if (!chosen) return;
    try {
      const rows = parseCsv(await chosen.text());
      const visits = visitsFromRows(rows);
      const images = visits.reduce((sum, visit) => sum + visit.image_url.length, 0);
      // One visit a line: readable, and still small for 100,000 images.
      const lines = visits.map((visit) => `  ${JSON.stringify(visit)}`).join(",\n");
      text.value = `{"count": ${visits.length}, "visits": [\n${lines}\n]}`;
      say(note, `${chosen.name}: ${number(visits.length)} visits, ${number(images)} images.`, "ok");
    } catch (error) {
      say(note, "");
      errors.replaceChildren(h("p", { text: `${chosen.name}: ${error.message}` }));
    }
  }

  async function send(event) {
    event.preventDefault();
    errors.replaceChildren();
    let body;
    try {
      body = JSON.parse(text.value);
    } catch (error) {
      errors.replaceChildren(h("p", { text: `The job is not valid JSON: ${error.message}` }));
      text.focus();
      return;
    }
    button.disabled = true;
    say(note, "Submitting…");
    try {
      const created = await api("/api/submit", { method: "POST", body });
      location.hash = `#/jobs/${created.job_id}`;
    } catch (error) {
      say(note, "");
      const lines = [h("p", { text: `Refused: ${problem(error)}` })];
      if (error instanceof ApiError && error.details && typeof error.details === "object") {
        lines.push(h("pre", { text: JSON.stringify(error.details, null, 2) }));
      }
      errors.replaceChildren(...lines);
    } finally {
      button.disabled = false;
    }
  }

  return () => {};
}

// -- the key gate ---------------------------------------------------------------------

function keyGate(reason) {
  return new Promise((resolve) => {
    const input = h("input", { type: "password", id: "api-key", autocomplete: "off", required: true });
    const error = h("p", { role: "alert", class: "error-text", text: reason || "" });
    const form = h(
      "form",
      {
        id: "key-form",
        onsubmit: async (event) => {
          event.preventDefault();
          const key = input.value.trim();
          if (!key) return;
          try {
            const answer = await authInfo(key);
            if (answer.key_required && !answer.key_valid) {
              error.textContent = "That key was refused.";
              input.select();
              return;
            }
          } catch (failure) {
            error.textContent = `Cannot check the key: ${problem(failure)}`;
            return;
          }
          rememberKey(key);
          resolve();
        },
      },
      h("label", { for: "api-key" }, "API key"),
      input,
      h("button", { type: "submit" }, "Use this key"),
      error,
    );
    show(
      h(
        "section",
        { class: "gate" },
        heading("API key needed"),
        h("p", {
          text:
            "This service asks for an API key. It is kept for this browser tab only " +
            "(sessionStorage) and sent in a header with every call.",
        }),
        form,
      ),
    );
    input.focus();
  });
}

async function ensureKey() {
  const auth = await authInfo(null);
  keyRequired = auth.key_required;
  if (!keyRequired) return;
  const key = storedKey();
  if (key) {
    const checked = await authInfo(key);
    if (checked.key_valid) return;
    forgetKey();
    await keyGate("The saved key was refused; enter it again.");
    return;
  }
  await keyGate();
}

// -- routing --------------------------------------------------------------------------

function route() {
  disposeView();
  const [path, search = ""] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(search);
  const parts = path.split("/").filter(Boolean);
  let view = "jobs";
  if (parts[0] === "jobs" && /^[1-9][0-9]{0,17}$/.test(parts[1] || "")) {
    view = "job";
    disposeView = jobView(Number(parts[1]), params);
  } else if (parts[0] === "service") {
    view = "service";
    disposeView = serviceView();
  } else if (parts[0] === "submit") {
    view = "submit";
    disposeView = submitView();
  } else {
    disposeView = jobsView(params);
  }
  for (const link of document.querySelectorAll("nav a[data-view]")) {
    const current = link.dataset.view === view || (view === "job" && link.dataset.view === "jobs");
    if (current) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const titles = { jobs: "Jobs", job: `Job ${parts[1]}`, service: "Service", submit: "Submit" };
  document.title = `${titles[view]} · Retail Pulse`;
}

function showMode(mode) {
  live.textContent = {
    stream: "Live: event stream",
    polling: "Live: polling every second",
    off: "Not connected",
  }[mode];
}

async function start() {
  try {
    await ensureKey();
  } catch (error) {
    const text = `Cannot reach the service: ${problem(error)}`;
    show(heading("Retail Pulse"), h("p", { class: "error-text", text }));
    return;
  }
  forgetButton.hidden = !keyRequired;
  forgetButton.addEventListener("click", async () => {
    forgetKey();
    feed.stop();
    disposeView();
    disposeView = () => {};
    forgetButton.hidden = true;
    await keyGate("Key forgotten.");
    forgetButton.hidden = false;
    feed.start();
    route();
  });
  feed.subscribe(({ type, data }) => {
    if (type === "mode") showMode(data);
  });
  window.addEventListener("hashchange", route);
  route();
  feed.start();
}

start();
