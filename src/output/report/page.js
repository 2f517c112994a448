// memspy's HTML report: reads the data memspy wrote into the page (see src/output/report.rs
// for its layout) and draws the summary, the memory chart, the flamegraph and the line table.
// Every text from the recording goes into the document as text (textContent, attribute
// values), never as markup.
"use strict";
(function () {
  const D = JSON.parse(document.getElementById("memspy-data").textContent);
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const k of kids) e.append(k instanceof Node ? k : String(k));
    return e;
  }
  function sv(tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // ---- numbers as people read them
  function fmtBytes(v) {
    const sign = v < 0 ? "-" : "";
    let a = Math.abs(v);
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let u = 0;
    while (a >= 1024 && u < units.length - 1) { a /= 1024; u++; }
    return sign + (u === 0 ? Math.round(a) : a.toFixed(1)) + " " + units[u];
  }
  function fmtTime(us) {
    const a = Math.abs(us);
    if (a < 1000) return Math.round(us) + " µs";
    if (a < 1e6) return (us / 1e3).toFixed(1) + " ms";
    if (a < 600e6) return (us / 1e6).toFixed(2) + " s";
    return (us / 60e6).toFixed(1) + " min";
  }
  function fmtCount(n) { return Math.round(n).toLocaleString("en-US"); }
  function fmtSeconds(ms) { return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + " s"; }
  function pct(v, total) { return total > 0 ? (100 * v / total).toFixed(1) + "%" : "–"; }

  const METRICS = [
    { id: "wall", title: "Wall time", memory: false },
    { id: "cpu", title: "CPU time", memory: false },
    { id: "growth", title: "Memory growth", memory: true },
    { id: "retained", title: "Memory retained", memory: true },
    { id: "freed", title: "Memory freed", memory: true },
  ];
  const metricOf = (id) => METRICS.find((m) => m.id === id);
  const fmtValue = (metric, v) => (metricOf(metric).memory ? fmtBytes(v) : fmtTime(v));

  // ---- the data
  const F = D.functions; // [qualname, short file, full file, first line]
  const N = D.nodes; // parent, function, line: three numbers per node
  const nodeParent = (n) => N[3 * n];
  const nodeFn = (n) => N[3 * n + 1];
  const nodeLine = (n) => N[3 * n + 2];
  const P = D.processes;
  const B = D.buckets;
  const bucketUs = D.bucket_us;
  const durationMs = Math.max(1, D.info.duration_s * 1000);
  const kBefore = D.pseudo.indexOf("[memory from before the recording]");
  const kShutdown = D.pseudo.indexOf("[interpreter shutdown]");
  // Every process gets a "memory from before" site: a window can make one appear.
  const beforeSite = new Map();
  D.sites.forEach((s, i) => { if (s[1] === -(kBefore + 1)) beforeSite.set(s[0], i); });
  for (let p = 0; p < P.length; p++) {
    if (!beforeSite.has(p)) {
      beforeSite.set(p, D.sites.length);
      D.sites.push([p, -(kBefore + 1)]);
      D.time.push([]); D.mem.push([]); D.chunks.push([]);
    }
  }
  const S = D.sites.length;

  // ---- state: what the views show
  const state = {
    metric: "wall",
    process: "all", // "all" (merged), "each" (one tree per process) or a process index
    window: D.window ? [D.window[0], D.window[1]] : [0, B - 1],
    zoom: [], // path of keys from the root
    search: "",
    fn: null, // the function of the line table (page function index)
    fnChosen: false, // picked by a click (else the top function of the view)
  };

  // Values of every site for a metric over the window of buckets [a, b].
  const cache = new Map();
  function siteValues(metric, a, b) {
    const key = metric + ":" + a + ":" + b;
    if (cache.has(key)) return cache.get(key);
    const out = new Float64Array(S);
    if (metric === "wall" || metric === "cpu") {
      const c = metric === "wall" ? 1 : 2;
      for (let s = 0; s < S; s++) {
        const t = D.time[s];
        let sum = 0;
        for (let i = 0; i < t.length; i += 3) if (t[i] >= a && t[i] <= b) sum += t[i + c];
        out[s] = sum;
      }
    } else if (metric === "growth" || metric === "freed") {
      const c = metric === "growth" ? 1 : 2;
      for (let s = 0; s < S; s++) {
        const m = D.mem[s];
        let sum = 0;
        for (let i = 0; i < m.length; i += 3) if (m[i] >= a && m[i] <= b) sum += m[i + c];
        out[s] = sum;
      }
    } else {
      // Retained: the window's growth still held at its end (see analysis/timeline.rs).
      const freed = siteValues("freed", a, b);
      const unmatched = new Float64Array(P.length);
      for (let s = 0; s < S; s++) {
        const [p, node] = D.sites[s];
        if (node === -(kShutdown + 1)) out[s] -= freed[s];
        else unmatched[p] += freed[s];
        const ch = D.chunks[s];
        for (let i = 0; i < ch.length;) {
          const made = ch[i], grown = ch[i + 1], n = ch[i + 2];
          let cancelled = 0;
          for (let k = 0; k < n; k++) {
            const at = ch[i + 3 + 2 * k];
            if (at <= b) cancelled += ch[i + 4 + 2 * k];
          }
          if (made >= a && made <= b) {
            out[s] += grown - cancelled;
            unmatched[p] -= cancelled;
          }
          i += 3 + 2 * n;
        }
      }
      for (let p = 0; p < P.length; p++) {
        if (unmatched[p] > 0.5) out[beforeSite.get(p)] -= unmatched[p];
      }
    }
    cache.set(key, out);
    return out;
  }

  const inView = (s) => {
    const p = D.sites[s][0];
    return typeof state.process !== "number" || state.process === p;
  };

  // ---- names
  const fnLabel = (f) => F[f][0] + " (" + F[f][1] + ")";
  function fnTitle(f) {
    const [q, , full, first] = F[f];
    return q + "\n" + full + (first > 0 ? ":" + first : "");
  }
  const shortName = (f) => F[f][0];

  // ---- the flamegraph's tree for the view
  function buildTree(values) {
    const root = { key: "root", label: "all", title: "everything in view", value: 0, children: new Map(), fn: null };
    const child = (node, key, make) => {
      let c = node.children.get(key);
      if (!c) { c = make(); c.key = key; c.value = 0; c.children = new Map(); node.children.set(key, c); }
      return c;
    };
    const path = [];
    for (let s = 0; s < S; s++) {
      const v = values[s];
      if (!(v > 0) || !inView(s)) continue;
      const [p, node] = D.sites[s];
      let at = root;
      root.value += v;
      if (state.process === "each") {
        at = child(at, "p" + p, () => ({ label: P[p].name, title: P[p].name + "\n" + P[p].command, fn: null }));
        at.value += v;
      }
      if (node < 0) {
        const label = D.pseudo[-node - 1];
        at = child(at, "x" + (-node - 1), () => ({ label, title: label, fn: null }));
        at.value += v;
        continue;
      }
      path.length = 0;
      for (let n = node; n >= 0; n = nodeParent(n)) path.push(nodeFn(n));
      for (let i = path.length - 1; i >= 0; i--) {
        const f = path[i];
        at = child(at, "f" + f, () => ({ label: fnLabel(f), title: fnTitle(f), fn: f }));
        at.value += v;
      }
    }
    return root;
  }

  function colour(node, metric) {
    let h = 0;
    const s = node.label;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    const r = (h % 1000) / 1000;
    if (node.fn === null) return "hsl(210, 8%, " + (72 + r * 10) + "%)";
    if (metricOf(metric).memory) return "hsl(" + (175 + r * 50) + ", 55%, " + (62 + (h % 7) * 2) + "%)";
    return "hsl(" + (8 + r * 45) + ", 85%, " + (58 + (h % 7) * 2) + "%)";
  }

  const matches = (node) => {
    if (!state.search || node.fn === null) return false;
    const q = state.search.toLowerCase();
    const [name, short, full] = F[node.fn];
    return name.toLowerCase().includes(q) || full.toLowerCase().includes(q) || short.toLowerCase().includes(q);
  };

  function renderFlame() {
    const [a, b] = state.window;
    const values = siteValues(state.metric, a, b);
    const tree = buildTree(values);
    // The zoomed node (the path may not exist any more in another view: go as deep as it does).
    let top = tree;
    const crumbs = [tree];
    for (const k of state.zoom) {
      const c = top.children.get(k);
      if (!c) break;
      top = c;
      crumbs.push(c);
    }
    const box = $("flame");
    box.replaceChildren();
    const width = Math.max(300, box.clientWidth - 2);
    const rowH = 18;
    const rows = [];
    let matched = 0;
    const layout = (node, x, w, depth, faded) => {
      if (w < 1 && depth > 0) return;
      const m = matches(node);
      if (m) matched += node.value;
      rows.push({ node, x, w, depth, faded, m });
      const kids = [...node.children.values()].sort((p, q) => q.value - p.value || (p.label < q.label ? -1 : 1));
      let cx = x;
      for (const k of kids) {
        const kw = node.value > 0 ? (w * k.value) / node.value : 0;
        layout(k, cx, kw, depth + 1, faded);
        cx += kw;
      }
    };
    layout(top, 0, width, 0, false);
    const depth = rows.reduce((d, r) => Math.max(d, r.depth), 0);
    const svg = sv("svg", { width, height: (depth + 1) * rowH, "aria-label": "flamegraph" });
    for (const r of rows) {
      const g = sv("g");
      const t = r.node.title + "\n" + fmtValue(state.metric, r.node.value) + " (" + pct(r.node.value, tree.value) + " of the view)";
      g.append(sv("title", {}, t));
      const rect = sv("rect", { x: r.x.toFixed(2), y: r.depth * rowH, width: Math.max(0.4, r.w).toFixed(2), height: rowH - 1, fill: colour(r.node, state.metric) });
      if (r.m) rect.setAttribute("class", "match");
      g.append(rect);
      const chars = Math.floor((r.w - 6) / 6.6);
      if (chars >= 3) {
        const label = r.node.label.length > chars ? r.node.label.slice(0, chars - 1) + "…" : r.node.label;
        g.append(sv("text", { x: (r.x + 3).toFixed(1), y: r.depth * rowH + 13 }, label));
      }
      const node = r.node;
      g.addEventListener("click", () => {
        if (node === top && crumbs.length > 1) {
          state.zoom = crumbs.slice(1, -1).map((c) => c.key);
        } else if (node !== tree) {
          const keys = [];
          // The path from the root to this node: the zoom path, then down to it.
          const find = (n, trail) => {
            if (n === node) { keys.push(...trail); return true; }
            for (const [k, c] of n.children) if (find(c, trail.concat([k]))) return true;
            return false;
          };
          find(top, state.zoom.slice(0, crumbs.length - 1));
          state.zoom = keys;
        } else {
          state.zoom = [];
        }
        if (node.fn !== null) { state.fn = node.fn; state.fnChosen = true; }
        render();
      });
      g.addEventListener("mousemove", () => {
        $("hover").textContent = node.label + " — " + fmtValue(state.metric, node.value) + " (" + pct(node.value, tree.value) + ")" + (node.fn !== null ? " — " + F[node.fn][2] : "");
      });
      svg.append(g);
    }
    box.append(svg);
    box.dataset.total = String(Math.round(tree.value));
    box.dataset.metric = state.metric;
    box.dataset.process = String(state.process);
    box.dataset.window = a + "-" + b;
    box.dataset.frames = String(rows.length);
    // Breadcrumbs of the zoom.
    const cr = $("crumbs");
    cr.replaceChildren();
    if (crumbs.length > 1) {
      crumbs.forEach((c, i) => {
        cr.append(el("button", { type: "button", title: c.title, onclick: () => { state.zoom = crumbs.slice(1, i + 1).map((x) => x.key); render(); } }, i === 0 ? "all" : shortLabel(c)));
      });
    }
    const info = [];
    const m = metricOf(state.metric);
    info.push(m.title + " in view: " + fmtValue(state.metric, tree.value));
    if (state.metric === "retained") {
      // Negative retained memory (frees of memory grown before the window, and what the
      // interpreter released at shutdown) is said, not drawn.
      const negative = new Map();
      for (let s = 0; s < S; s++) {
        if (!inView(s) || !(values[s] < 0)) continue;
        const node = D.sites[s][1];
        const label = node < 0 ? D.pseudo[-node - 1] : "frees of other code";
        negative.set(label, (negative.get(label) || 0) - values[s]);
      }
      for (const [label, v] of negative) info.push(label + ": " + fmtBytes(v) + " released (not drawn)");
    }
    if (state.search) info.push("search matches " + pct(matched, tree.value) + " (" + fmtValue(state.metric, matched) + ")");
    if (tree.value === 0) info.push(m.memory ? "no memory of this kind in the window" : "no samples in the window");
    $("flame-info").textContent = info.join(" · ");
    return tree;
  }
  const shortLabel = (n) => (n.fn !== null ? shortName(n.fn) : n.label);

  // ---- the line table of one function
  function renderLines(tree) {
    const [a, b] = state.window;
    if (!state.fnChosen) {
      // The function with the largest own value in view.
      const values = siteValues(state.metric, a, b);
      const own = new Map();
      for (let s = 0; s < S; s++) {
        const node = D.sites[s][1];
        if (node < 0 || !inView(s) || !(values[s] > 0)) continue;
        const f = nodeFn(node);
        own.set(f, (own.get(f) || 0) + values[s]);
      }
      let best = null;
      for (const [f, v] of own) if (best === null || v > own.get(best)) best = f;
      state.fn = best;
    }
    const box = $("line-table");
    box.replaceChildren();
    const f = state.fn;
    if (f === null) {
      $("lines-title").textContent = "Lines";
      $("lines-hint").textContent = "No Python function in view.";
      return;
    }
    $("lines-title").textContent = "Lines of " + F[f][0];
    $("lines-hint").textContent = F[f][2] + " — each line with what it and the calls it makes were given" +
      (typeof state.process === "number" ? ", in " + P[state.process].name : ", in every process in view") + ".";
    const cols = ["wall", "cpu", "growth", "freed", "retained"];
    const per = new Map(); // line -> totals per column
    const own = new Map(); // line -> own value of the chosen metric
    const vals = cols.map((c) => siteValues(c, a, b));
    const seen = new Set();
    for (let s = 0; s < S; s++) {
      const node = D.sites[s][1];
      if (node < 0 || !inView(s)) continue;
      seen.clear();
      let leaf = true;
      for (let n = node; n >= 0; n = nodeParent(n), leaf = false) {
        if (nodeFn(n) !== f) continue;
        const line = nodeLine(n);
        if (leaf) own.set(line, (own.get(line) || 0) + vals[cols.indexOf(state.metric)][s]);
        if (seen.has(line)) continue;
        seen.add(line);
        let row = per.get(line);
        if (!row) { row = [0, 0, 0, 0, 0]; per.set(line, row); }
        for (let c = 0; c < cols.length; c++) row[c] += vals[c][s];
      }
    }
    const src = D.sources[String(f)];
    const lines = new Set(per.keys());
    if (src) for (let i = 0; i < src.lines.length; i++) lines.add(src.first + i);
    const sorted = [...lines].filter((l) => l > 0).sort((x, y) => x - y);
    const table = el("table");
    const head = el("tr", {}, el("th", {}, "line"));
    const names = { wall: "wall time", cpu: "CPU", growth: "growth", freed: "freed", retained: "retained" };
    for (const c of cols) head.append(el("th", { title: "the line and the calls it makes" }, names[c]));
    head.append(el("th", { title: "on the line itself, " + metricOf(state.metric).title.toLowerCase() }, "own"));
    head.append(el("th", { class: "src" }, src ? "source" : "source (not in this page)"));
    table.append(head);
    const ci = cols.indexOf(state.metric);
    let max = 0;
    for (const r of per.values()) max = Math.max(max, r[ci]);
    for (const line of sorted) {
      const r = per.get(line);
      const tr = el("tr", { "data-line": line });
      if (r) tr.classList.add("sampled");
      if (r && max > 0 && r[ci] >= 0.2 * max && r[ci] > 0) tr.classList.add("hot");
      tr.append(el("td", { class: "no" }, line));
      cols.forEach((c, k) => {
        const v = r ? r[k] : 0;
        tr.append(el("td", { class: v === 0 ? "zero" : "" }, v === 0 ? "·" : fmtValue(c, v)));
      });
      const o = own.get(line) || 0;
      tr.append(el("td", { class: o === 0 ? "zero" : "" }, o === 0 ? "·" : fmtValue(state.metric, o)));
      const text = src && line >= src.first && line < src.first + src.lines.length ? src.lines[line - src.first] : "";
      tr.append(el("td", { class: "src" }, text));
      table.append(tr);
    }
    box.append(table);
  }

  // ---- the memory chart
  const COLOURS = ["#2d6cdf", "#e8710a", "#1e8e3e", "#d01884", "#9334e6", "#12a4af", "#b06000", "#5f6368", "#c5221f", "#188038"];
  const procColour = (p) => COLOURS[p % COLOURS.length];
  const chart = { width: 0, left: 70, right: 16, top: 10, height: 250, bottom: 28 };
  const xOf = (ms) => chart.left + (ms / durationMs) * (chart.width - chart.left - chart.right);
  const msOf = (x) => Math.min(durationMs, Math.max(0, ((x - chart.left) / (chart.width - chart.left - chart.right)) * durationMs));
  const bucketOfMs = (ms) => Math.min(B - 1, Math.max(0, Math.floor((ms * 1000) / bucketUs)));
  const msOfBucket = (b) => (b * bucketUs) / 1000;

  function renderChart() {
    const box = $("chart");
    box.replaceChildren();
    chart.width = Math.max(400, box.clientWidth);
    const plotH = chart.height - chart.top - chart.bottom;
    let maxV = 1;
    for (const v of D.total.v) maxV = Math.max(maxV, v);
    for (const s of D.series) for (const v of s.v) maxV = Math.max(maxV, v);
    maxV *= 1.05;
    const yOf = (v) => chart.top + plotH - (v / maxV) * plotH;
    const svg = sv("svg", { width: chart.width, height: chart.height, id: "chart-svg" });
    // Grid and axes.
    for (let i = 0; i <= 4; i++) {
      const v = (maxV / 4) * i;
      const y = yOf(v);
      svg.append(sv("line", { x1: chart.left, x2: chart.width - chart.right, y1: y, y2: y, stroke: "#e6e9ee" }));
      svg.append(sv("text", { x: chart.left - 6, y: y + 4, "text-anchor": "end", "font-size": 11, fill: "#5b6473" }, fmtBytes(v)));
    }
    const ticks = 8;
    for (let i = 0; i <= ticks; i++) {
      const ms = (durationMs / ticks) * i;
      svg.append(sv("text", { x: xOf(ms), y: chart.height - 8, "text-anchor": "middle", "font-size": 11, fill: "#5b6473" }, fmtSeconds(ms)));
    }
    // The window.
    const [a, b] = state.window;
    if (a > 0 || b < B - 1) {
      const x0 = xOf(msOfBucket(a)), x1 = xOf(Math.min(durationMs, msOfBucket(b + 1)));
      svg.append(sv("rect", { x: x0, y: chart.top, width: Math.max(1, x1 - x0), height: plotH, fill: "#2d6cdf", opacity: 0.1, id: "chart-window" }));
    }
    if (D.startup_end !== null && D.startup_end !== undefined) {
      const x = xOf(msOfBucket(D.startup_end));
      svg.append(sv("line", { x1: x, x2: x, y1: chart.top, y2: chart.top + plotH, stroke: "#9aa0a6", "stroke-dasharray": "2 3" }));
      svg.append(sv("text", { x: x + 3, y: chart.top + 10, "font-size": 10, fill: "#80868b" }, "start-up ends"));
    }
    const line = (s, attrs) => {
      if (!s.t.length) return;
      let d = "";
      for (let i = 0; i < s.t.length; i++) {
        d += (i ? "L" : "M") + xOf(s.t[i]).toFixed(1) + " " + yOf(s.v[i]).toFixed(1);
        // A step chart: the value holds until the next reading.
        if (i + 1 < s.t.length) d += "L" + xOf(s.t[i + 1]).toFixed(1) + " " + yOf(s.v[i]).toFixed(1);
      }
      svg.append(sv("path", Object.assign({ d, fill: "none" }, attrs)));
    };
    if (P.length > 1) line(D.total, { stroke: "#202124", "stroke-width": 1.5, "stroke-dasharray": "5 3" });
    D.series.forEach((s, p) => {
      const chosen = typeof state.process !== "number" || state.process === p;
      line(s, { stroke: procColour(p), "stroke-width": chosen ? 2 : 1, opacity: chosen ? 1 : 0.3, "data-process": p });
    });
    // Where a process crossed a `record --trigger-*` limit.
    for (const t of D.triggers || []) {
      const x = xOf(t.t_ms);
      const mark = sv("line", { x1: x, x2: x, y1: chart.top, y2: chart.top + plotH, stroke: "#c81e1e", "stroke-width": 1.5, class: "trigger" });
      mark.append(sv("title", {}, P[t.process].name + " crossed --trigger-" + t.reason + " " + fmtBytes(t.limit) + " at " + fmtBytes(t.bytes) + " (" + fmtSeconds(t.t_ms) + ")"));
      svg.append(mark);
      svg.append(sv("text", { x: x + 3, y: chart.top + 22, "font-size": 10, fill: "#c81e1e" }, "trigger"));
    }
    const cursor = sv("line", { y1: chart.top, y2: chart.top + plotH, stroke: "#202124", "stroke-width": 0.5, visibility: "hidden" });
    svg.append(cursor);
    const drag = sv("rect", { y: chart.top, height: plotH, fill: "#2d6cdf", opacity: 0.18, visibility: "hidden" });
    svg.append(drag);
    let from = null;
    const xIn = (ev) => ev.clientX - svg.getBoundingClientRect().left;
    svg.addEventListener("mousedown", (ev) => { from = xIn(ev); ev.preventDefault(); });
    svg.addEventListener("mousemove", (ev) => {
      const x = xIn(ev);
      cursor.setAttribute("x1", x); cursor.setAttribute("x2", x); cursor.setAttribute("visibility", "visible");
      $("hover").textContent = "at " + fmtSeconds(msOf(x)) + ": " + memoryAt(msOf(x));
      if (from !== null) {
        drag.setAttribute("x", Math.min(from, x)); drag.setAttribute("width", Math.abs(x - from)); drag.setAttribute("visibility", "visible");
      }
    });
    const finish = (ev) => {
      if (from === null) return;
      const x = xIn(ev);
      const x0 = Math.min(from, x), x1 = Math.max(from, x);
      from = null;
      if (x1 - x0 < 3) { drag.setAttribute("visibility", "hidden"); return; }
      setWindow(bucketOfMs(msOf(x0)), bucketOfMs(msOf(x1)));
    };
    svg.addEventListener("mouseup", finish);
    svg.addEventListener("mouseleave", (ev) => { cursor.setAttribute("visibility", "hidden"); finish(ev); });
    box.append(svg);
    renderLegend();
    renderMarks();
  }

  function memoryAt(ms) {
    const at = (s) => {
      let v = null;
      for (let i = 0; i < s.t.length && s.t[i] <= ms; i++) v = s.v[i];
      return v;
    };
    const parts = [];
    if (P.length > 1) { const t = at(D.total); if (t !== null) parts.push("total " + fmtBytes(t)); }
    D.series.forEach((s, p) => { const v = at(s); if (v !== null && (P[p].end_ms === null || P[p].end_ms >= ms)) parts.push(P[p].name + " " + fmtBytes(v)); });
    return parts.join(", ") || "no process";
  }

  function renderLegend() {
    const box = $("legend");
    box.replaceChildren();
    if (P.length > 1) {
      box.append(el("span", { title: "the sum of every process", onclick: () => setProcess("all") }, el("i", { style: "background:#202124" }), "total"));
    }
    P.forEach((p, i) => {
      const dim = typeof state.process === "number" && state.process !== i;
      box.append(el("span", { class: dim ? "dim" : "", title: p.command, onclick: () => setProcess(state.process === i ? "all" : i) },
        el("i", { style: "background:" + procColour(i) }), p.name + " — " + (p.ended || "")));
    });
  }

  // Where the top functions ran: one strip per function under the chart.
  function renderMarks() {
    const box = $("marks");
    box.replaceChildren();
    const tops = topFunctions();
    if (!tops.length) return;
    const rowH = 14;
    const svg = sv("svg", { width: chart.width, height: tops.length * rowH + 4 });
    tops.forEach(({ f, why, metric }, k) => {
      const y = 2 + k * rowH;
      const colour = ["#c5221f", "#1e8e3e", "#9334e6", "#e8710a"][k % 4];
      const perBucket = new Float64Array(B);
      for (let s = 0; s < S; s++) {
        const node = D.sites[s][1];
        if (node < 0 || !inView(s)) continue;
        let on = false;
        for (let n = node; n >= 0; n = nodeParent(n)) if (nodeFn(n) === f) { on = true; break; }
        if (!on) continue;
        // Where it ran (CPU) or where it grew memory.
        const cpu = metric === "cpu";
        const t = cpu ? D.time[s] : D.mem[s];
        for (let i = 0; i < t.length; i += 3) perBucket[t[i]] += t[i + (cpu ? 2 : 1)];
      }
      let max = 0;
      for (const v of perBucket) max = Math.max(max, v);
      for (let b = 0; b < B; b++) {
        if (!(perBucket[b] > 0)) continue;
        const x0 = xOf(msOfBucket(b)), x1 = xOf(Math.min(durationMs, msOfBucket(b + 1)));
        svg.append(sv("rect", { x: x0, y, width: Math.max(1, x1 - x0), height: rowH - 4, fill: colour, opacity: (0.25 + 0.75 * perBucket[b] / max).toFixed(2) }));
      }
      const label = sv("text", { x: chart.left - 6, y: y + 9, "text-anchor": "end", "font-size": 10, fill: colour }, shortName(f).slice(0, 11));
      label.append(sv("title", {}, why + (metric === "cpu" ? " (shaded where it ran)" : " (shaded where it grew)") + ": " + fnTitle(f)));
      svg.append(label);
      svg.append(sv("title", {}, "where the top functions ran"));
    });
    box.append(svg);
    box.title = tops.map((t) => t.why + ": " + fnLabel(t.f)).join("\n");
    box.dataset.functions = tops.map((t) => F[t.f][0]).join(",");
  }

  // The top functions of the whole recording: by retained memory, by growth and by CPU.
  function topFunctions() {
    const out = [];
    const add = (metric, why) => {
      const values = siteValues(metric, 0, B - 1);
      const own = new Map();
      for (let s = 0; s < S; s++) {
        const node = D.sites[s][1];
        if (node < 0 || !inView(s) || !(values[s] > 0)) continue;
        own.set(nodeFn(node), (own.get(nodeFn(node)) || 0) + values[s]);
      }
      const ranked = [...own.entries()].sort((x, y) => y[1] - x[1]);
      for (const [f, v] of ranked.slice(0, 2)) {
        if (!out.some((o) => o.f === f) && (!metricOf(metric).memory || v >= 1 << 20)) {
          out.push({ f, why: why + " " + fmtValue(metric, v), metric });
        }
      }
    };
    add("retained", "retained");
    add("growth", "grew");
    add("cpu", "CPU");
    return out.slice(0, 4);
  }

  // ---- summary
  function renderSummary() {
    const i = D.info;
    $("file").textContent = D.name + (i.part ? " (part " + i.part + ")" : "");
    const started = new Date(i.start_unix_ns / 1e6);
    const failed = i.failed.raced + i.failed.exited + i.failed.fatal;
    const facts = [
      ["recorded", isNaN(started) ? "?" : started.toISOString().replace("T", " ").slice(0, 19) + " UTC"],
      ["duration", fmtSeconds(i.duration_s * 1000)],
      ["processes", String(P.length)],
      ["samples", fmtCount(i.samples)],
      ["failed samples", fmtCount(failed) + (failed ? " (raced " + i.failed.raced + ", exited " + i.failed.exited + ", fatal " + i.failed.fatal + ")" : "")],
      ["sampling", (i.blocking ? "blocking" : "non-blocking") + ", " + i.rate_hz + " Hz" + (i.missed_ticks ? ", " + fmtCount(i.missed_ticks) + " ticks missed" : "")],
      ["memory", i.memory.toUpperCase() + ": " + i.sampling],
      ["memspy", i.memspy_version],
    ];
    const box = $("facts");
    box.replaceChildren(...facts.map(([k, v]) => el("div", {}, el("b", {}, k + ": "), v)));
    if (i.damage || !i.complete) box.append(el("div", {}, el("b", {}, "note: "), i.damage || "the recording was not closed cleanly"));
    $("findings").replaceChildren(...D.findings.map((f) => el("li", {}, f)));
    const table = $("processes");
    table.replaceChildren(el("tr", {}, ...["pid", "process", "role", "python", "samples", "memory (min – max)", "ended", "command"].map((h) => el("th", {}, h))));
    P.forEach((p, k) => {
      const info = i.processes[k] || {};
      table.append(el("tr", {},
        el("td", {}, p.pid), el("td", {}, p.name.replace(/ \(pid \d+\)$/, "")), el("td", {}, p.role), el("td", {}, p.python),
        el("td", {}, fmtCount(info.samples || 0)), el("td", {}, fmtBytes(info.rss_min || 0) + " – " + fmtBytes(info.rss_max || 0)),
        el("td", {}, p.ended || ""), el("td", { class: "cmd", title: p.command }, p.command)));
    });
  }

  function renderControls() {
    const m = $("metrics");
    m.replaceChildren(...METRICS.map((x) => el("button", { type: "button", class: x.id === state.metric ? "on" : "", "data-metric": x.id, onclick: () => setMetric(x.id) }, x.title)));
    const sel = $("process");
    if (!sel.options.length) {
      sel.append(el("option", { value: "all" }, "all processes, merged"));
      if (P.length > 1) sel.append(el("option", { value: "each" }, "all processes, side by side"));
      P.forEach((p, k) => sel.append(el("option", { value: String(k) }, p.name)));
      sel.addEventListener("change", () => setProcess(sel.value === "all" || sel.value === "each" ? sel.value : Number(sel.value)));
    }
    sel.value = String(state.process);
    const [a, b] = state.window;
    const whole = a === 0 && b === B - 1;
    $("window-label").textContent = whole
      ? "Whole recording (" + fmtSeconds(durationMs) + ")"
      : "Window " + fmtSeconds(msOfBucket(a)) + " – " + fmtSeconds(Math.min(durationMs, msOfBucket(b + 1))) + " of " + fmtSeconds(durationMs);
    $("whole").disabled = whole;
    $("skip-startup").hidden = D.startup_end === null || D.startup_end === undefined;
  }

  // ---- changes
  function render() {
    renderControls();
    const tree = renderFlame();
    renderLines(tree);
  }
  function setWindow(a, b) {
    a = Math.max(0, Math.min(B - 1, a | 0));
    b = Math.max(a, Math.min(B - 1, b | 0));
    state.window = [a, b];
    renderChart();
    render();
  }
  function setProcess(p) {
    state.process = p;
    state.zoom = [];
    renderChart();
    render();
  }
  function setMetric(m) {
    state.metric = m;
    if (!state.fnChosen) state.fn = null;
    render();
  }

  function start() {
    renderSummary();
    renderChart();
    render();
    $("whole").addEventListener("click", () => setWindow(0, B - 1));
    $("skip-startup").addEventListener("click", () => setWindow(D.startup_end + 1, B - 1));
    let timer = null;
    $("search").addEventListener("input", (ev) => {
      clearTimeout(timer);
      timer = setTimeout(() => { state.search = ev.target.value.trim(); renderFlame(); }, 120);
    });
    let resize = null;
    window.addEventListener("resize", () => {
      clearTimeout(resize);
      resize = setTimeout(() => { renderChart(); renderFlame(); }, 150);
    });
    // For scripts driving the page (memspy's own tests).
    const total = (metric) => {
      const v = siteValues(metric, state.window[0], state.window[1]);
      let t = 0;
      for (let s = 0; s < S; s++) if (inView(s)) t += v[s];
      return t;
    };
    window.memspyReport = { state, setWindow, setProcess, setMetric, total, bucketUs, buckets: B };
    document.body.dataset.ready = "1";
  }

  try {
    start();
  } catch (e) {
    const box = $("error");
    box.hidden = false;
    box.textContent = "The report could not be drawn: " + e;
    throw e;
  }
})();
