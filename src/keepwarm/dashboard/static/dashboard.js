// keepwarm dashboard: draws the charts as inline SVG from data the server put in the page, keeps them
// live, and sends the few JSON requests the playground and the versions diff make. No dependencies.
"use strict";
(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#d9480f", "#1c7ed6", "#2f9e44", "#ae3ec9", "#f59f00", "#0ca678", "#e64980", "#495057"];
  const H = 190, PAD = { left: 58, right: 10, top: 10, bottom: 24 };
  const csrf = document.body.dataset.csrf;

  const $ = (selector, root = document) => root.querySelector(selector);
  const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

  function svg(name, attrs, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }

  function html(name, attrs, text) {
    const node = document.createElement(name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function compact(v) {
    const a = Math.abs(v);
    if (a >= 1e6) return (v / 1e6).toFixed(a >= 1e7 ? 0 : 1) + "M";
    if (a >= 1e3) return (v / 1e3).toFixed(a >= 1e4 ? 0 : 1) + "k";
    if (a >= 10 || v === 0) return v.toFixed(0);
    if (a >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }

  function format(v, unit) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "–";
    if (v === 0) return "0" + (unit && unit !== "/s" && unit !== "$" ? " " + unit : "");
    if (unit === "%") return v.toFixed(v < 10 ? 1 : 0) + " %";
    if (unit === "ms") return (v < 10 ? v.toFixed(2) : v < 100 ? v.toFixed(1) : v.toFixed(0)) + " ms";
    if (unit === "$") return "$" + (v >= 1 ? v.toFixed(2) : v.toPrecision(2));
    return compact(v) + (unit || "");
  }

  function niceMax(max) {
    if (!(max > 0)) return 1;
    const power = Math.pow(10, Math.floor(Math.log10(max)));
    return [1, 2, 2.5, 5, 10].map((m) => m * power).find((m) => m >= max) || 10 * power;
  }

  // every chart's last drawing, redone when the window changes size
  const redraws = new Map();
  window.addEventListener("resize", () => redraws.forEach((draw) => draw()));

  function pageData() {
    const node = $("#page-data");
    return node ? JSON.parse(node.textContent) : null;
  }

  // Size the SVG to its box, one unit per CSS pixel, so text stays legible at any width; returns the width.
  function frame(root) {
    root.replaceChildren();
    const width = Math.max(240, Math.round(root.getBoundingClientRect().width) || 480);
    root.setAttribute("viewBox", `0 0 ${width} ${H}`);
    return width;
  }

  // y axis with three grid lines; returns the value -> y mapping
  function yAxis(root, W, max, unit) {
    const top = niceMax(max);
    const y = (v) => PAD.top + (H - PAD.top - PAD.bottom) * (1 - v / top);
    for (const f of [0, 0.5, 1]) {
      svg("line", { class: "grid", x1: PAD.left, x2: W - PAD.right, y1: y(top * f), y2: y(top * f) }, root);
      svg("text", { class: "axis", x: PAD.left - 6, y: y(top * f) + 3, "text-anchor": "end" }, root).textContent =
        format(top * f, unit === "/s" ? "" : unit);
    }
    return y;
  }

  function clock(t) {
    return new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
  }

  function legend(figure, entries, unit) {
    const box = $(".legend", figure);
    box.replaceChildren(...entries.map(([name, color, value]) => {
      const item = html("span", { "data-name": name });
      const swatch = html("i");
      swatch.style.background = color;
      item.append(swatch, name + " ", html("b", {}, format(value, unit)));
      return item;
    }));
  }

  function empty(root, W, message) {
    svg("text", { class: "empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, root).textContent = message;
  }

  // -- line charts (the overview) -------------------------------------------------------------------

  function lineChart(figure, t, lines) {
    redraws.set(figure, () => lineChart(figure, t, lines));
    const root = $("svg", figure);
    const unit = figure.dataset.unit;
    const W = frame(root);
    const names = Object.keys(lines || {});
    const values = names.flatMap((name) => lines[name]).filter((v) => v !== null && Number.isFinite(v));
    figure.dataset.points = String(values.length);
    figure.dataset.max = String(values.length ? Math.max(...values) : 0);
    if (!values.length) {
      empty(root, W, t.length ? "nothing measured yet" : "collecting the first samples…");
      legend(figure, [], unit);
      return;
    }
    const y = yAxis(root, W, Math.max(...values), unit);
    const first = t[0], last = t[t.length - 1];
    const x = (time) => PAD.left + (W - PAD.left - PAD.right) * (last > first ? (time - first) / (last - first) : 1);
    for (const [position, anchor] of [[first, "start"], [last, "end"]]) {
      svg("text", { class: "axis", x: x(position), y: H - 6, "text-anchor": anchor }, root).textContent = clock(position);
    }
    const colors = Object.fromEntries(names.map((name, i) => [name, COLORS[i % COLORS.length]]));
    for (const name of names) {
      let d = "", drawing = false;
      lines[name].forEach((v, i) => {
        if (v === null || !Number.isFinite(v)) { drawing = false; return; }
        d += `${drawing ? "L" : "M"}${x(t[i]).toFixed(1)},${y(v).toFixed(1)}`;
        drawing = true;
      });
      if (d.indexOf("L") < 0 && d) d += `h2`; // a single point still shows
      svg("path", { class: "line", d, stroke: colors[name], "data-name": name }, root);
    }
    const latest = (name, upTo) => {
      for (let i = upTo; i >= 0; i--) if (lines[name][i] !== null) return lines[name][i];
      return null;
    };
    const show = (index) => legend(figure, names.map((n) => [n, colors[n], latest(n, index)]), unit);
    show(t.length - 1);
    const cursor = svg("line", { class: "cursor", y1: PAD.top, y2: H - PAD.bottom, visibility: "hidden" }, root);
    root.onmousemove = (event) => {
      const box = root.getBoundingClientRect();
      const at = first + ((event.clientX - box.left) * (W / box.width) - PAD.left) / (W - PAD.left - PAD.right) * (last - first);
      let index = 0;
      t.forEach((time, i) => { if (Math.abs(time - at) < Math.abs(t[index] - at)) index = i; });
      cursor.setAttribute("x1", x(t[index])); cursor.setAttribute("x2", x(t[index]));
      cursor.setAttribute("visibility", "visible");
      show(index);
    };
    root.onmouseleave = () => { cursor.setAttribute("visibility", "hidden"); show(t.length - 1); };
  }

  function appendSeries(data, fresh) {
    const known = data.t.length, added = fresh.t.length;
    if (!added) return;
    data.t.push(...fresh.t);
    for (const [chart, lines] of Object.entries(fresh.charts)) {
      const target = data.charts[chart] || (data.charts[chart] = {});
      for (const name of new Set([...Object.keys(target), ...Object.keys(lines)])) {
        if (!target[name]) target[name] = new Array(known).fill(null);
        target[name].push(...(lines[name] || new Array(added).fill(null)));
      }
    }
    const oldest = data.t[data.t.length - 1] - data.window;
    let drop = 0;
    while (drop < data.t.length && data.t[drop] < oldest) drop++;
    if (drop) {
      data.t.splice(0, drop);
      for (const lines of Object.values(data.charts)) for (const line of Object.values(lines)) line.splice(0, drop);
    }
  }

  function overview() {
    const live = $("#live");
    if (!live) return;
    const data = pageData();
    const status = $("#live-status");
    const draw = () => $$("[data-chart]", live).forEach((figure) => lineChart(figure, data.t, data.charts[figure.dataset.chart]));
    draw();
    const poll = async () => {
      try {
        const after = data.t.length ? data.t[data.t.length - 1] : "";
        const response = await fetch(`${live.dataset.source}?after=${after}`, { headers: { accept: "application/json" } });
        if (response.status === 401) { location.reload(); return; }
        if (response.ok) {
          appendSeries(data, await response.json());
          draw();
          status.textContent = `live · updated ${clock(Date.now() / 1000)}`;
        }
      } catch (error) {
        status.textContent = "the server is not answering; retrying";
      }
      setTimeout(poll, data.interval * 1000);
    };
    setTimeout(poll, data.interval * 1000);
  }

  // -- bar charts (usage per day, the cosine histogram) ---------------------------------------------

  function barChart(figure, labels, series, unit, options = {}) {
    redraws.set(figure, () => barChart(figure, labels, series, unit, options));
    const root = $("svg", figure);
    const W = frame(root);
    const names = Object.keys(series);
    const totals = labels.map((_, i) => names.reduce((sum, name) => sum + series[name][i], 0));
    figure.dataset.points = String(totals.filter((v) => v > 0).length);
    if (!totals.some((v) => v > 0)) {
      empty(root, W, "nothing in this range");
      legend(figure, [], unit);
      return;
    }
    const y = yAxis(root, W, Math.max(...totals), unit);
    const slot = (W - PAD.left - PAD.right) / labels.length;
    const width = Math.max(1, slot * 0.8);
    const colors = Object.fromEntries(names.map((name, i) => [name, COLORS[i % COLORS.length]]));
    labels.forEach((label, i) => {
      let base = 0;
      for (const name of names) {
        const v = series[name][i];
        if (!v) continue;
        const rect = svg("rect", {
          x: (PAD.left + slot * i + (slot - width) / 2).toFixed(1), y: y(base + v).toFixed(1), width: width.toFixed(1),
          height: Math.max(0.5, y(base) - y(base + v)).toFixed(1), fill: colors[name], "data-name": name, "data-value": v,
        }, root);
        svg("title", {}, rect).textContent = `${label} · ${name}: ${format(v, unit)}`;
        base += v;
      }
    });
    const ticks = labels.length > 2 ? [0, Math.floor(labels.length / 2), labels.length - 1] : labels.map((_, i) => i);
    for (const i of ticks) {
      const anchor = i === 0 && ticks.length > 1 ? "start" : i === labels.length - 1 && i > 0 ? "end" : "middle";
      const at = anchor === "start" ? PAD.left + slot * i : anchor === "end" ? PAD.left + slot * (i + 1) : PAD.left + slot * (i + 0.5);
      svg("text", { class: "axis", x: at, y: H - 6, "text-anchor": anchor }, root).textContent =
        options.tick ? options.tick(i) : labels[i];
    }
    if (options.marker !== undefined) {
      const mx = PAD.left + (W - PAD.left - PAD.right) * options.marker;
      svg("line", { class: "threshold", x1: mx, x2: mx, y1: PAD.top, y2: H - PAD.bottom }, root);
    }
    legend(figure, names.map((n) => [n, colors[n], series[n].reduce((a, b) => a + b, 0)]), unit);
  }

  function usage() {
    const figures = $$("[data-bars]");
    if (!figures.length) return;
    const data = pageData();
    const units = { tokens: "", requests: "", cost: "$" };
    for (const figure of figures) {
      const measure = figure.dataset.bars;
      barChart(figure, data.days, data.daily[measure], units[measure], { tick: (i) => data.days[i].slice(5) });
    }
  }

  // -- batch jobs: refresh the rows while the page is open -------------------------------------------

  function batches() {
    const rows = $("tbody[data-refresh]");
    if (!rows) return;
    const refresh = async () => {
      try {
        const response = await fetch(rows.dataset.refresh, { headers: { accept: "text/html" } });
        if (response.redirected || response.status === 401) { location.reload(); return; }
        if (response.ok) rows.innerHTML = await response.text();
      } catch (error) { /* the next refresh tries again */ }
      setTimeout(refresh, $("tr[data-active]", rows) ? 1000 : 5000);
    };
    setTimeout(refresh, $("tr[data-active]", rows) ? 1000 : 5000);
  }

  // -- JSON requests (playground, versions diff) ---------------------------------------------------

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: { "content-type": "application/json", "x-csrf-token": csrf, accept: "application/json" },
      body: JSON.stringify(body),
    });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error((answer.error && answer.error.message) || `HTTP ${response.status}`);
    return answer;
  }

  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function playground() {
    const form = $("#playground");
    if (!form) return;
    const status = $("#playground-status");
    const inputs = () => {
      const texts = form.texts.value.split("\n").map((t) => t.trim()).filter(Boolean);
      const query = form.query.value.trim();
      return { model: form.model.value, texts, query, input: query ? [query, ...texts] : texts };
    };
    const code = () => {
      const { model, input } = inputs();
      const api = `${location.origin}/v1`;
      const open = !!$(".who .warn");
      const request = JSON.stringify({ model, input });
      $("#code-curl").textContent =
        `curl -s ${api}/embeddings \\\n${open ? "" : "  -H \"Authorization: Bearer $KEEPWARM_API_KEY\" \\\n"}` +
        `  -H 'content-type: application/json' \\\n  -d ${shellQuote(request)}`;
      $("#code-python").textContent =
        (open ? "" : "import os\n") + "from openai import OpenAI\n\n" +
        `client = OpenAI(base_url="${api}", api_key=${open ? '"unused"' : 'os.environ["KEEPWARM_API_KEY"]'})\n` +
        `response = client.embeddings.create(\n    model=${JSON.stringify(model)},\n    input=${JSON.stringify(input, null, 4).replace(/\n/g, "\n    ")},\n)\n` +
        "vectors = [item.embedding for item in response.data]";
    };
    form.addEventListener("input", code);
    code();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const { model, texts, query } = inputs();
      const button = $("button[type=submit]", form);
      button.disabled = true;
      status.textContent = "embedding…";
      try {
        const result = await post(form.dataset.source, { model, texts, query });
        heatmap(result.inputs, result.matrix, !!result.ranking);
        ranking(result, texts);
        status.textContent = `${result.inputs.length} texts, ${result.tokens} tokens, version ${result.model_version}`;
        $("#playground-result").hidden = false;
      } catch (error) {
        status.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  function heatmap(texts, matrix, withQuery) {
    const table = $("#heatmap");
    const low = Math.min(0, ...matrix.flat());
    const head = html("tr");
    head.append(html("th"), ...texts.map((_, i) => html("th", {}, withQuery && i === 0 ? "Q" : String(withQuery ? i : i + 1))));
    const rows = matrix.map((row, i) => {
      const line = html("tr");
      const label = withQuery && i === 0 ? "Q" : String(withQuery ? i : i + 1);
      line.append(html("th", { class: "text", title: texts[i] }, `${label}. ${texts[i]}`));
      row.forEach((value, j) => {
        const cell = html("td", { "data-row": i, "data-col": j, "data-value": value, title: `${value.toFixed(4)}` }, value.toFixed(2));
        const strength = (value - low) / (1 - low || 1);
        cell.style.background = `hsl(21, 88%, ${(97 - 55 * strength).toFixed(0)}%)`;
        cell.style.color = strength > 0.6 ? "#fff" : "#1d2330";
        line.append(cell);
      });
      return line;
    });
    table.replaceChildren(head, ...rows);
  }

  function ranking(result, texts) {
    const list = $("#ranking");
    list.replaceChildren(...(result.ranking || []).map(({ index, score }) => {
      const item = html("li", { "data-index": index, "data-score": score });
      item.append(html("span", { class: "score" }, score.toFixed(4)), texts[index]);
      return item;
    }));
    $("#no-query").hidden = !!result.ranking;
  }

  function versionsDiff() {
    const form = $("#diff");
    if (!form) return;
    form.sample_file.addEventListener("change", async () => {
      const file = form.sample_file.files[0];
      if (file) form.sample.value = await file.text();
    });
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const verdict = $("#verdict");
      const button = $("button[type=submit]", form);
      button.disabled = true;
      $("#diff-result").hidden = false;
      verdict.className = "verdict";
      delete verdict.dataset.interchangeable;
      verdict.textContent = "embedding with both versions…";
      try {
        const result = await post(form.dataset.source, { first: form.first.value, second: form.second.value, sample: form.sample.value });
        const figures = result.histogram
          ? ` Mean cosine ${result.mean_cosine.toFixed(6)}, minimum ${result.min_cosine.toFixed(6)} over ${result.texts} texts (${result.source}).`
          : ` ${result.reason}.`;
        verdict.className = `verdict ${result.interchangeable ? "same" : "different"}`;
        verdict.dataset.interchangeable = String(result.interchangeable);
        verdict.textContent = `${result.first} → ${result.second}: ${result.advice}.${figures}`;
        const figure = $("#chart-diff");
        figure.hidden = !result.histogram;
        if (result.histogram) {
          const { edges, counts, threshold } = result.histogram;
          const labels = counts.map((_, i) => `${edges[i].toFixed(4)}–${edges[i + 1].toFixed(4)}`);
          const low = edges[0], span = edges[edges.length - 1] - low;
          barChart(figure, labels, { texts: counts }, "", {
            // first and last ticks sit on the outer edges, the middle one in its bin
            tick: (i) => (i === 0 ? low : i === counts.length - 1 ? edges[i + 1] : (edges[i] + edges[i + 1]) / 2).toFixed(4),
            marker: (threshold - low) / span,
          });
        }
      } catch (error) {
        verdict.className = "verdict different";
        verdict.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
  }

  // -- small things every page has -------------------------------------------------------------------

  function copyButtons() {
    document.addEventListener("click", async (event) => {
      const button = event.target.closest("[data-copy]");
      if (!button) return;
      const text = $(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
      } catch (error) {
        const range = document.createRange();
        range.selectNodeContents($(button.dataset.copy));
        getSelection().removeAllRanges();
        getSelection().addRange(range);
        document.execCommand("copy");
      }
      const label = button.textContent;
      button.textContent = "Copied";
      setTimeout(() => { button.textContent = label; }, 1500);
    });
  }

  function confirmations() {
    document.addEventListener("submit", (event) => {
      const message = event.target.dataset && event.target.dataset.confirm;
      if (message && !confirm(message)) event.preventDefault();
    });
  }

  copyButtons();
  confirmations();
  overview();
  usage();
  batches();
  playground();
  versionsDiff();
})();
