/**
 * The status page that `GET /` of the HTTP handler serves: one self-contained HTML document
 * (inline CSS and script, no external resource, no build step) that reads `status` and
 * `status/events` relative to its own address, so it works under any base path or proxy prefix.
 *
 * The page's source is ASCII (entities in the markup, `\u` escapes in the script): a transpiler
 * may rewrite other characters of a template literal as `\u` escapes, which String.raw would
 * then keep as text.
 *
 * Everything it shows is put in with `textContent`, never as markup, so stream names and error
 * messages cannot inject anything; the handler serves it with a Content-Security-Policy that
 * allows only its own nonce'd script and style and requests to its own origin.
 *
 * @module
 */

/** The page, with `nonce` on its inline script and style (the CSP names it). */
export function statusPage(nonce: string): string {
  return String.raw`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>impel status</title>
<style nonce="${nonce}">
:root { --ok: #1a7f37; --degraded: #9a6700; --failing: #cf222e; --muted: #57606a; --line: #d0d7de; --bg: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2328; background: #fff; }
header { display: flex; gap: 12px; align-items: center; padding: 8px 16px; border-bottom: 1px solid var(--line); background: var(--bg); position: sticky; top: 0; z-index: 1; }
header h1 { font-size: 16px; margin: 0; }
.spacer { flex: 1; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px; font-weight: 600; color: #fff; background: var(--muted); }
.badge.ok, .badge.running { background: var(--ok); }
.badge.degraded { background: var(--degraded); }
.badge.failing, .badge.faulted { background: var(--failing); }
.badge.stopped { background: var(--muted); }
button { font: inherit; padding: 2px 10px; border: 1px solid var(--line); border-radius: 6px; background: #fff; cursor: pointer; }
button:hover { background: var(--bg); }
button:disabled { cursor: not-allowed; color: var(--muted); }
#token-form { padding: 8px 16px; border-bottom: 1px solid var(--line); background: #fff8c5; }
#token-form input { font: inherit; width: 22em; }
#notice { padding: 0 16px; }
#notice:not(:empty) { padding: 8px 16px; border-bottom: 1px solid var(--line); }
#notice.error { background: #ffebe9; }
#notice.info { background: #ddf4ff; }
main { padding: 8px 16px 32px; }
section.card { border: 1px solid var(--line); border-radius: 8px; margin: 12px 0; padding: 8px 12px 12px; }
section.card h2 { font-size: 15px; margin: 4px 0 8px; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }
ul.reasons { margin: 0 0 8px; padding-left: 18px; }
ul.reasons li.failing { color: var(--failing); }
ul.reasons li.degraded { color: var(--degraded); }
.kpis { display: flex; flex-wrap: wrap; gap: 6px 18px; margin: 6px 0 10px; }
.kpi { min-width: 92px; }
.kpi .v { font-size: 18px; font-weight: 600; font-variant-numeric: tabular-nums; }
.kpi .l { font-size: 11px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: 12px; margin-bottom: 8px; }
.chart { border: 1px solid var(--line); border-radius: 6px; padding: 4px 6px; }
.chart .title { font-size: 12px; color: var(--muted); display: flex; gap: 10px; flex-wrap: wrap; }
.chart svg { width: 100%; height: 90px; display: block; }
.swatch { display: inline-block; width: 10px; height: 3px; vertical-align: middle; margin-right: 3px; }
table { border-collapse: collapse; width: 100%; margin: 6px 0 10px; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 3px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th.num { text-align: right; }
th { font-size: 11px; color: var(--muted); text-transform: uppercase; font-weight: 600; }
td.num { text-align: right; }
td.err { color: var(--failing); font-family: ui-monospace, monospace; font-size: 12px; word-break: break-word; }
h3 { font-size: 13px; margin: 10px 0 0; }
.empty { color: var(--muted); font-style: italic; }
</style>
</head>
<body>
<header>
  <h1>impel</h1>
  <span id="health" class="badge" data-field="health">&#x2026;</span>
  <span id="conn" class="muted" data-field="connection">connecting&#x2026;</span>
  <span id="updated" class="muted" data-field="updated"></span>
  <span class="spacer"></span>
  <button id="token-button" type="button">Token&#x2026;</button>
</header>
<div id="token-form" hidden>
  <form id="token-entry">
    <label>Bearer token <input id="token-input" type="password" autocomplete="off" spellcheck="false"></label>
    <button type="submit">Use</button>
    <button type="button" id="token-forget">Forget</button>
    <span class="muted">Kept in this page's memory only: reloading the page forgets it.</span>
  </form>
</div>
<div id="notice" role="status" data-field="notice"></div>
<main id="pipelines"><p class="empty">Loading&#x2026;</p></main>
<script nonce="${nonce}">
"use strict";
(function () {
  var path = location.pathname;
  var base = path.charAt(path.length - 1) === "/" ? path : path + "/";
  var token = null;
  var snapshot = null;
  var history = {};
  var KEEP_MS = 10 * 60 * 1000;
  var generation = 0;
  var stopTransport = function () {};

  function byId(id) { return document.getElementById(id); }
  function el(tag, props, children) {
    var e = document.createElement(tag);
    if (props) for (var k in props) {
      if (k === "text") e.textContent = props[k];
      else if (k === "cls") e.className = props[k];
      else if (k === "onclick") e.addEventListener("click", props[k]);
      else if (props[k] !== undefined && props[k] !== null && props[k] !== false) e.setAttribute(k, props[k]);
    }
    if (children) children.forEach(function (c) { if (c) e.appendChild(c); });
    return e;
  }
  function num(n) { return n === null || n === undefined ? "\u2013" : Number(n).toLocaleString("en-US"); }
  function pos(p) { return p === null || p === undefined ? "\u2013" : String(p); }
  function ms(v) {
    if (v === null || v === undefined) return "\u2013";
    if (v < 10) return v.toFixed(2) + " ms";
    if (v < 1000) return Math.round(v) + " ms";
    var s = v / 1000;
    if (s < 120) return s.toFixed(1) + " s";
    var m = s / 60;
    return m < 120 ? m.toFixed(1) + " min" : (m / 60).toFixed(1) + " h";
  }
  function perSecond(s, k) { return s[k] / (s.ms / 1000); }
  function rateText(v) { return v >= 100 ? num(Math.round(v)) : v.toFixed(1); }

  function notice(text, kind) {
    var n = byId("notice");
    n.textContent = text || "";
    n.className = text ? kind || "info" : "";
  }
  function setConnection(text) { byId("conn").textContent = text; }
  function authHeaders(extra) {
    var h = extra || {};
    if (token) h.authorization = "Bearer " + token;
    return h;
  }

  function merge(group, samples, at, full) {
    var list = full || !history[group] ? [] : history[group];
    var last = list.length ? list[list.length - 1].at : 0;
    samples.forEach(function (s) { if (s.at > last) { list.push(s); last = s.at; } });
    while (list.length && list[0].at < at - KEEP_MS) list.shift();
    history[group] = list;
  }
  function apply(snap, full) {
    snapshot = snap;
    snap.pipelines.forEach(function (p) { merge(p.group, p.history, snap.at, full); });
    render();
  }

  // ---- transports: Server-Sent Events, an event stream read by fetch (with the token), polling
  function start() {
    stopTransport();
    var mine = ++generation;
    fetch(base + "status", { headers: authHeaders() }).then(function (r) {
      if (mine !== generation) return;
      if (r.status === 401) { askToken("Reading the status needs the token."); setConnection("waiting for the token"); return; }
      if (!r.ok) throw new Error("HTTP " + r.status);
      return r.json().then(function (snap) {
        if (mine !== generation) return;
        apply(snap, true);
        if (!snap.protectReads && typeof EventSource === "function") sse(mine);
        else if (token && typeof ReadableStream === "function") streamed(mine);
        else poll(mine, "");
      });
    }).catch(function (e) {
      if (mine !== generation) return;
      setConnection("offline (" + e.message + "), retrying\u2026");
      var t = setTimeout(start, 3000);
      stopTransport = function () { clearTimeout(t); };
    });
  }

  function sse(mine) {
    var received = false;
    var es = new EventSource(base + "status/events");
    stopTransport = function () { es.close(); };
    setConnection("live: Server-Sent Events");
    es.addEventListener("snapshot", function (ev) {
      received = true;
      setConnection("live: Server-Sent Events");
      apply(JSON.parse(ev.data), false);
    });
    es.addEventListener("failure", function (ev) { notice("The status could not be read: " + JSON.parse(ev.data).error, "error"); });
    es.onerror = function () {
      if (mine !== generation) return;
      if (!received || es.readyState === 2) { es.close(); poll(mine, " (Server-Sent Events unavailable)"); }
      else setConnection("reconnecting\u2026");
    };
  }

  function streamed(mine) {
    var controller = new AbortController();
    stopTransport = function () { controller.abort(); };
    setConnection("live: event stream");
    fetch(base + "status/events", { headers: authHeaders(), signal: controller.signal }).then(function (r) {
      if (r.status === 401) { askToken("The token was refused."); throw new Error("HTTP 401"); }
      if (!r.ok || !r.body) throw new Error("HTTP " + r.status);
      var reader = r.body.getReader();
      var decoder = new TextDecoder();
      var buffer = "";
      function read() {
        return reader.read().then(function (x) {
          if (x.done) throw new Error("closed");
          buffer += decoder.decode(x.value, { stream: true });
          var i;
          while ((i = buffer.indexOf("\n\n")) >= 0) {
            var block = buffer.slice(0, i);
            buffer = buffer.slice(i + 2);
            var event = "message", data = [];
            block.split("\n").forEach(function (line) {
              if (line.indexOf("event:") === 0) event = line.slice(6).trim();
              else if (line.indexOf("data:") === 0) data.push(line.slice(5).replace(/^ /, ""));
            });
            if (event === "snapshot" && mine === generation) apply(JSON.parse(data.join("\n")), false);
          }
          return read();
        });
      }
      return read();
    }).catch(function () {
      if (mine === generation && !controller.signal.aborted) poll(mine, " (event stream unavailable)");
    });
  }

  function poll(mine, why) {
    var interval = snapshot ? snapshot.intervalMs : 1000;
    var timer;
    var stopped = false;
    stopTransport = function () { stopped = true; clearTimeout(timer); };
    setConnection("polling every " + (interval / 1000) + " s" + why);
    function tick() {
      var since = snapshot ? snapshot.at - 10000 : 0;
      fetch(base + "status?since=" + since, { headers: authHeaders() }).then(function (r) {
        if (r.status === 401) { askToken("Reading the status needs the token."); stopped = true; return; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json().then(function (snap) { if (mine === generation) apply(snap, false); });
      }).catch(function (e) { setConnection("polling: " + e.message); }).then(function () {
        if (!stopped && mine === generation) timer = setTimeout(tick, interval);
      });
    }
    tick();
  }

  // ---- token and actions
  function askToken(why) {
    byId("token-form").hidden = false;
    byId("token-input").focus();
    if (why) notice(why + " Enter the bearer token.", "error");
  }
  byId("token-button").addEventListener("click", function () {
    var f = byId("token-form");
    f.hidden = !f.hidden;
    if (!f.hidden) byId("token-input").focus();
  });
  byId("token-entry").addEventListener("submit", function (e) {
    e.preventDefault();
    var value = byId("token-input").value.trim();
    byId("token-input").value = "";
    token = value || null;
    byId("token-form").hidden = true;
    byId("token-button").textContent = token ? "Token \u2713" : "Token\u2026";
    notice(token ? "Token set (in memory only)." : "", "info");
    start();
  });
  byId("token-forget").addEventListener("click", function () {
    token = null;
    byId("token-form").hidden = true;
    byId("token-button").textContent = "Token\u2026";
    notice("Token forgotten.", "info");
    start();
  });

  function send(method, path, body, what) {
    return fetch(base + path, {
      method: method,
      headers: authHeaders({ "content-type": "application/json" }),
      body: JSON.stringify(body),
    }).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (answer) {
        if (r.ok) { notice(what + ": done (" + r.status + ").", "info"); return { ok: true, answer: answer }; }
        var error = answer.error || { code: "HTTP" + r.status, message: "" };
        notice(what + ": refused (" + r.status + " " + error.code + "): " + error.message, "error");
        if (r.status === 401) askToken("");
        return { ok: false, status: r.status, code: error.code };
      });
    }, function (e) { notice(what + ": failed: " + e.message, "error"); return { ok: false }; });
  }
  function resetCheckpoint(group, tranche) {
    var position = prompt("Reset the checkpoint of " + group + " / " + tranche + " to: start, tail, or a position", "start");
    if (position === null) return;
    position = position.trim();
    if (!confirm("Reset the checkpoint of " + group + " / " + tranche + " to " + position + "? The pipeline reads from there when it next starts.")) return;
    var route = "pipelines/" + encodeURIComponent(group) + "/checkpoints/" + encodeURIComponent(tranche);
    var what = "Reset of " + group + " / " + tranche;
    send("PUT", route, { position: position }, what).then(function (r) {
      if (!r.ok && r.code === "PipelineRunning" && confirm(group + " is running: its own commits may undo the reset. Reset anyway?")) {
        send("PUT", route, { position: position, force: true }, what);
      }
    });
  }
  function release(group, p) {
    if (!confirm("Release " + p.stream + " of " + group + "? Its " + p.events + " parked events are handled again, then it resumes.")) return;
    send("POST", "pipelines/" + encodeURIComponent(group) + "/parked/" + encodeURIComponent(p.stream) + "/release",
      { by: "status page" }, "Release of " + p.stream);
  }

  // ---- rendering
  var SVG = "http://www.w3.org/2000/svg";
  function chart(title, samples, series, format) {
    var w = 600, h = 90;
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    svg.setAttribute("preserveAspectRatio", "none");
    var end = samples.length ? samples[samples.length - 1].at : 0;
    var startAt = samples.length ? Math.max(samples[0].at, end - KEEP_MS) : 0;
    var span = Math.max(1, end - startAt);
    var max = 0;
    series.forEach(function (s) { samples.forEach(function (x) { var v = s.value(x); if (v !== null && v > max) max = v; }); });
    var top = max > 0 ? max * 1.1 : 1;
    var grid = document.createElementNS(SVG, "path");
    grid.setAttribute("d", "M0 " + (h - 0.5) + " H" + w + " M0 " + (h / 2) + " H" + w);
    grid.setAttribute("stroke", "#d0d7de");
    grid.setAttribute("stroke-dasharray", "3 3");
    grid.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(grid);
    series.forEach(function (s) {
      var points = [];
      samples.forEach(function (x) {
        var v = s.value(x);
        if (v === null) return;
        points.push(((x.at - startAt) / span * w).toFixed(1) + "," + (h - v / top * (h - 4)).toFixed(1));
      });
      if (points.length === 1) points.push(w + "," + points[0].split(",")[1]);
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", points.join(" "));
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", s.color);
      line.setAttribute("stroke-width", "1.5");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(line);
    });
    var legend = series.map(function (s) {
      var swatch = el("span", { cls: "swatch" });
      swatch.style.background = s.color; // through the CSSOM: the CSP refuses style attributes
      return el("span", null, [swatch, document.createTextNode(s.label)]);
    });
    var minutes = samples.length > 1 ? ms(end - startAt) : "\u2013";
    return el("div", { cls: "chart" }, [
      el("div", { cls: "title" }, [el("strong", { text: title })].concat(legend).concat([
        el("span", { cls: "muted", text: "max " + format(max) + " over " + minutes }),
      ])),
      svg,
    ]);
  }
  function kpi(label, value, field) {
    return el("div", { cls: "kpi" }, [el("div", { cls: "v", text: value, "data-field": field }), el("div", { cls: "l", text: label })]);
  }
  function table(heads, rows, empty) {
    if (!rows.length) return el("p", { cls: "empty", text: empty });
    // A heading ending in "#" heads a column of numbers, aligned right like them.
    return el("table", null, [
      el("thead", null, [el("tr", null, heads.map(function (hd) {
        var numeric = hd.charAt(hd.length - 1) === "#";
        return el("th", { text: numeric ? hd.slice(0, -1) : hd, cls: numeric ? "num" : null });
      }))]),
      el("tbody", null, rows),
    ]);
  }
  function td(text, cls) { return el("td", { text: text, cls: cls }); }
  function actionButton(label, enabled, why, handler) {
    var b = el("button", { type: "button", text: label, title: enabled ? null : why, disabled: enabled ? null : "disabled" });
    if (enabled) b.addEventListener("click", handler);
    return b;
  }

  function card(p) {
    var samples = history[p.group] || [];
    var last = samples.length ? samples[samples.length - 1] : null;
    var c = p.counters || {};
    var actions = snapshot.actions;
    var noToken = "the handler was created without a token: actions are disabled";
    var reasons = p.health.reasons.map(function (r) { return el("li", { cls: r.status, text: r.kind + ": " + r.message }); });
    var usedReadAhead = p.tranches.reduce(function (n, t) { return n + t.readAhead; }, 0);

    var streamRows = [];
    var shown = {};
    // A stream retried while failing is busy too: shown once, in its most urgent state.
    [["stuck", p.stuck], ["failing", p.failing], ["busy", p.busy]].forEach(function (pair) {
      pair[1].forEach(function (s) {
        if (shown[s.stream]) return;
        shown[s.stream] = true;
        streamRows.push(el("tr", { "data-state": pair[0], "data-stream": s.stream }, [
          td(pair[0]), td(s.stream), td(ms(s.ageMs), "num"), td(num(s.attempts), "num"), td(s.error || "", "err"),
        ]));
      });
    });
    var trancheRows = p.tranches.map(function (t) {
      return el("tr", { "data-tranche": t.tranche }, [
        td(t.tranche), td(pos(t.readPosition), "num"), td(pos(t.completed), "num"), td(pos(t.committed), "num"),
        td(pos(t.head), "num"), td(num(t.lag), "num"), td(num(t.readAhead) + " / " + num(p.maxReadAhead), "num"),
        td(t.isTail ? "yes" : "no"), td(t.commitFailures ? t.commitFailures + " \u00d7 " + (t.commitError || "") : "", "err"),
        el("td", null, [p.checkpoints ? actionButton("Reset\u2026", actions, noToken, function () { resetCheckpoint(p.group, t.tranche); }) : null]),
      ]);
    });
    var parkedRows = p.parked.oldest.map(function (x) {
      return el("tr", { "data-stream": x.stream }, [
        td(x.stream), td(num(x.events), "num"), td(ms(x.ageMs), "num"), td(num(x.attempts), "num"), td(x.state), td(x.error, "err"),
        el("td", null, [p.parkStores > 0 && x.state === "parked" ? actionButton("Release\u2026", actions, noToken, function () { release(p.group, x); }) : null]),
      ]);
    });

    return el("section", { cls: "card", "data-group": p.group }, [
      el("h2", null, [
        el("span", { text: p.group }),
        el("span", { cls: "muted", text: "from " + p.source }),
        el("span", { cls: "badge " + p.state, text: p.state, "data-field": "state" }),
        el("span", { cls: "badge " + p.health.status, text: p.health.status, "data-field": "pipeline-health" }),
      ]),
      p.fault ? el("p", { cls: "err", text: "fault: " + p.fault }) : null,
      p.error ? el("p", { cls: "err", text: p.error }) : null,
      reasons.length ? el("ul", { cls: "reasons", "data-field": "reasons" }, reasons) : null,
      el("div", { cls: "kpis" }, [
        kpi("handled / s", last ? rateText(perSecond(last, "handled")) : "\u2013", "handled-rate"),
        kpi("events in / s", last ? rateText(perSecond(last, "events")) : "\u2013", "events-rate"),
        kpi("failed calls / s", last ? rateText(perSecond(last, "failures")) : "\u2013", "failures-rate"),
        kpi("latency p50", last && last.latency ? ms(last.latency.p50) : "\u2013", "p50"),
        kpi("latency p99", last && last.latency ? ms(last.latency.p99) : "\u2013", "p99"),
        kpi("handled", num(c.handled), "handled"),
        kpi("events in", num(c.events), "events"),
        kpi("failed calls", num(c.failures), "failures"),
        kpi("buffered", num(p.bufferedEvents), "buffered"),
        kpi("streams", num(p.streams), "streams"),
        kpi("read-ahead", num(usedReadAhead) + " / " + num(p.maxReadAhead), "read-ahead"),
        kpi("parked", num(p.parked.streams), "parked"),
      ]),
      el("div", { cls: "charts" }, [
        chart("Throughput / s", samples, [
          { label: "handled", color: "#0969da", value: function (x) { return perSecond(x, "handled"); } },
          { label: "in", color: "#8250df", value: function (x) { return perSecond(x, "events"); } },
          { label: "failed calls", color: "#cf222e", value: function (x) { return perSecond(x, "failures"); } },
        ], rateText),
        chart("Handler latency", samples, [
          { label: "p50", color: "#1a7f37", value: function (x) { return x.latency ? x.latency.p50 : null; } },
          { label: "p99", color: "#bc4c00", value: function (x) { return x.latency ? x.latency.p99 : null; } },
        ], ms),
      ]),
      el("h3", { text: "Tranches" }),
      table(["tranche", "read#", "completed#", "committed#", "head#", "lag#", "read-ahead#", "tail", "commit failures", ""], trancheRows, "No tranche read yet."),
      el("h3", { text: "Streams busy, failing, stuck (" + num(p.states.active || 0) + " active, " + num(p.states.failing || 0) + " failing, " + num(p.states.stuck || 0) + " stuck)" }),
      table(["state", "stream", "age#", "attempts#", "last error"], streamRows, "None."),
      el("h3", { text: "Parked (" + num(p.parked.streams) + " streams, " + num(p.parked.events) + " events)" }),
      p.parked.storeFailing ? el("p", { cls: "err", text: "park store failing: " + p.parked.storeFailing.error }) : null,
      table(["stream", "events#", "age#", "attempts#", "state", "error", ""], parkedRows, "None."),
    ]);
  }

  function render() {
    var h = byId("health");
    h.textContent = snapshot.health;
    h.className = "badge " + snapshot.health;
    byId("updated").textContent = "updated " + new Date(snapshot.at).toLocaleTimeString();
    var main = byId("pipelines");
    var cards = snapshot.pipelines.map(card);
    main.replaceChildren.apply(main, cards.length ? cards : [el("p", { cls: "empty", text: "No pipeline is registered." })]);
  }

  start();
})();
</script>
</body>
</html>
`;
}
