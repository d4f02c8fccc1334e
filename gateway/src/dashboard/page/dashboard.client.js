// The dashboard page: follows /dashboard/events (one `state` event per second, merged from every
// gateway replica by the admin app, see ../tier.ts) and draws it. Plain browser JavaScript, served
// as it is: no build step. Charts are uPlot (https://github.com/leeoniya/uPlot).

(() => {
  /** @type {Map<string, {card: HTMLElement, seconds: Map<number, number[]>, traffic: any, latency: any}>} */
  const routes = new Map();
  let latest = null;
  let configDigest = null;

  // For the console (and the browser tests): the charts and the last state received.
  window.dashboard = {
    charts: routes,
    get latest() {
      return latest;
    },
  };

  // ---- small DOM helpers (text only: nothing received is ever parsed as HTML) -------------------

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== undefined && v !== null && v !== false) el.setAttribute(k, String(v));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

  function ago(epochMs) {
    if (epochMs === null || epochMs === undefined) return "never";
    const s = Math.max(0, Math.round((Date.now() - epochMs) / 1000));
    if (s < 60) return `${s} s ago`;
    if (s < 3600) return `${Math.floor(s / 60)} min ago`;
    if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
    return `${Math.floor(s / 86400)} d ago`;
  }

  function duration(seconds) {
    if (seconds < 60) return `${seconds} s`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)} min`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ${Math.floor((seconds % 3600) / 60)} min`;
    return `${Math.floor(seconds / 86400)} d ${Math.floor((seconds % 86400) / 3600)} h`;
  }

  const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? `${v.toFixed(2)} ms` : `${Math.round(v)} ms`);
  const rate = (v) => (v < 10 ? v.toFixed(1) : String(Math.round(v)));
  const clock = (epochMs) => (epochMs ? new Date(epochMs).toLocaleTimeString() : "");

  // ---- connection --------------------------------------------------------------------------------

  function setConnection(state, text) {
    const el = $("connection");
    el.dataset.state = state;
    el.querySelector(".text").textContent = text;
  }

  const events = new EventSource("/dashboard/events");
  events.addEventListener("open", () => setConnection("live", "live"));
  // EventSource retries by itself after a dropped connection, but gives up for good when an
  // answer is not a stream (401: the session is no longer accepted, e.g. a new ADMIN_TOKEN).
  events.addEventListener("error", () =>
    events.readyState === EventSource.CLOSED
      ? setConnection("lost", "disconnected: the gateway refused the event stream (signed out?) — reload the page")
      : setConnection("lost", "connection lost, retrying…"),
  );
  events.addEventListener("state", (e) => {
    latest = JSON.parse(/** @type {MessageEvent} */ (e).data);
    render(latest);
    setConnection("live", `live · merged by ${latest.servedBy} at ${clock(latest.at)}`);
  });

  function render(tier) {
    renderGateways(tier);
    renderRoutes(tier);
    renderUpstreams(tier);
    renderConfig(tier);
  }

  // ---- gateways ----------------------------------------------------------------------------------

  function renderGateways(tier) {
    const reachable = tier.gateways.filter((g) => g.reachable).length;
    $("gateway-count").textContent = `${reachable} of ${tier.gateways.length} reachable`;
    const peersError = $("peers-error");
    peersError.hidden = !tier.peersError;
    peersError.textContent = tier.peersError || "";
    const silent = $("silent-peers");
    silent.hidden = tier.silentPeers.length === 0;
    // Spare addresses a rolling replace moves a gateway to: idle on a steady tier, not a failure.
    silent.textContent = `Idle spare addresses (a rolling replace moves a gateway there): ${tier.silentPeers.map((p) => p.url).join(", ")}`;
    const rows = tier.gateways.map((g) => {
      const info = g.info || {};
      const state = !g.reachable ? "unreachable" : info.ready ? "up" : "draining";
      const limiter = g.limiter;
      const config = g.config;
      return h(
        "tr",
        { "data-gateway": info.instance || g.url, "data-state": state },
        h(
          "td",
          {},
          h("strong", {}, info.instance || g.url),
          g.self ? h("span", { class: "muted" }, " (this page)") : null,
          g.url ? h("div", { class: "muted" }, g.url) : null,
        ),
        h(
          "td",
          { title: g.error || "" },
          h("span", { class: "badge", "data-state": state }, state),
          g.error
            ? h("div", { class: "muted" }, g.error, g.lastSeenAt ? ` · last seen ${ago(g.lastSeenAt)}` : "")
            : null,
        ),
        h("td", {}, info.version || "–"),
        h("td", {}, info.uptimeS !== undefined ? duration(info.uptimeS) : "–"),
        h("td", { class: "num" }, rate(g.rps)),
        h(
          "td",
          {},
          limiter
            ? h("span", { class: "badge", "data-state": limiter.mode, "data-limiter": limiter.mode }, limiter.mode)
            : "–",
          limiter?.redis ? h("span", { class: "muted" }, ` ${limiter.redis}`) : null,
          limiter && limiter.mode !== "memory"
            ? h("div", { class: "muted" }, `fallback ${limiter.fallback}, ${limiter.replicas} replica(s)`)
            : null,
        ),
        h(
          "td",
          {},
          config ? h("code", { title: config.file }, config.digest) : "–",
          config ? h("div", { class: "muted" }, `loaded ${ago(config.loadedAt)}`) : null,
        ),
        h(
          "td",
          { class: "wrap" },
          config ? (config.lastReloadAt ? `${ago(config.lastReloadAt)} (${config.reloads})` : "none since start") : "–",
          config?.lastError
            ? h(
                "div",
                { class: "badge", "data-state": "unhealthy", title: config.lastError.message },
                `rejected ${ago(config.lastError.at)}`,
              )
            : null,
        ),
      );
    });
    $("gateways")
      .querySelector("tbody")
      .replaceChildren(...rows);
  }

  // ---- routes ------------------------------------------------------------------------------------

  /** The charts never span less than this, so a quiet minute still reads as one. */
  const MIN_SPAN_SECONDS = 60;
  const COLORS = { requests: "#2563eb", errors: "#dc2626", denied: "#d97706", p50: "#1f9d55", p99: "#7c3aed" };

  function renderRoutes(tier) {
    const container = $("routes");
    const names = new Set(tier.routes.map((r) => r.name));
    for (const [name, route] of routes) {
      if (names.has(name)) continue;
      route.traffic.destroy();
      route.latency.destroy();
      route.card.remove();
      routes.delete(name);
    }
    for (const r of tier.routes) {
      let route = routes.get(r.name);
      if (!route) {
        route = createRoute(r);
        routes.set(r.name, route);
        container.append(route.card);
      }
      // Seconds keyed by epoch second: later events overwrite the seconds they resend.
      for (let k = 0; k < r.requests.length; k++)
        route.seconds.set(r.from + k, [r.requests[k], r.errors[k], r.denied[k], r.p50[k], r.p99[k]]);
    }
    // Cards in the config's order (a reload may add a route before others, or reorder them).
    const order = tier.routes.map((r) => routes.get(r.name).card);
    if (order.some((card, i) => container.children[i] !== card)) container.replaceChildren(...order);
    // All charts share one time axis: from the first second anything happened (at least the last
    // minute, at most the whole window), so a young tier is not a flat line with a spike at the end.
    const last = Math.max(0, ...tier.routes.map((r) => r.from + r.requests.length - 1));
    const oldest = last - tier.windowSeconds + 1;
    let first = last - MIN_SPAN_SECONDS + 1;
    for (const route of routes.values()) {
      for (const [t, s] of route.seconds) {
        if (t < oldest) route.seconds.delete(t);
        else if (t < first && (s[0] > 0 || s[2] > 0)) first = t;
      }
    }
    for (const r of tier.routes) updateRoute(routes.get(r.name), r, first, last);
  }

  function figure(label, key) {
    return h(
      "div",
      { class: "figure", "data-figure": key },
      h("span", { class: "value" }, "–"),
      h("span", { class: "label" }, label),
    );
  }

  /** The route's definition in a line: a reload may change it under the same name. */
  function whereText(r) {
    const limit = r.rateLimit ? ` · limit ${r.rateLimit}` : "";
    return `${r.methods.join(" ")} ${r.path}${r.match === "prefix" ? "*" : ""} → ${r.upstream}${limit}`;
  }

  function createRoute(r) {
    const trafficEl = h("div", { class: "chart", "data-chart": "traffic" });
    const latencyEl = h("div", { class: "chart", "data-chart": "latency" });
    const card = h(
      "article",
      { class: "route", "data-route": r.name },
      h("h3", {}, r.name),
      h("p", { class: "where" }, whereText(r)),
      h(
        "div",
        { class: "figures" },
        figure("req/s", "rps"),
        figure("errors", "errors"),
        figure("p50", "p50"),
        figure("p99", "p99"),
        figure("denied/s", "denied"),
      ),
      trafficEl,
      latencyEl,
    );
    const width = () => Math.max(300, card.clientWidth - 24 || 440);
    const time = { time: true };
    const traffic = new uPlot(
      {
        width: width(),
        height: 120,
        scales: { x: time, y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { size: 48 }],
        legend: { live: false },
        series: [
          {},
          { label: "req/s", stroke: COLORS.requests, width: 1.5 },
          { label: "5xx/s", stroke: COLORS.errors, width: 1.5 },
          { label: "denied/s", stroke: COLORS.denied, width: 1.5 },
        ],
      },
      [[], [], [], []],
      trafficEl,
    );
    const latency = new uPlot(
      {
        width: width(),
        height: 120,
        // Log scale: a p99 spike of seconds must not flatten a p50 of a millisecond.
        scales: {
          x: time,
          y: {
            distr: 3,
            log: 10,
            range: (_u, min, max) => uPlot.rangeLog(min > 0 ? min : 0.1, max > 0 ? max : 1, 10, true),
          },
        },
        axes: [{}, { size: 48 }],
        legend: { live: false },
        series: [
          {},
          { label: "p50 ms", stroke: COLORS.p50, width: 1.5 },
          { label: "p99 ms", stroke: COLORS.p99, width: 1.5 },
        ],
      },
      [[], [], []],
      latencyEl,
    );
    const route = { card, seconds: new Map(), traffic, latency };
    new ResizeObserver(() => {
      traffic.setSize({ width: width(), height: 120 });
      latency.setSize({ width: width(), height: 120 });
    }).observe(card);
    return route;
  }

  function updateRoute(route, r, first, last) {
    const xs = [];
    const series = [[], [], [], [], []];
    for (let t = first; t <= last; t++) {
      const s = route.seconds.get(t);
      xs.push(t);
      for (let i = 0; i < 5; i++) series[i].push(s ? s[i] : null);
    }
    route.traffic.setData([xs, series[0], series[1], series[2]]);
    route.latency.setData([xs, series[3], series[4]]);

    const where = route.card.querySelector(".where");
    const text = whereText(r);
    if (where.textContent !== text) where.textContent = text;

    const sum = r.summary;
    const set = (key, text, alert) => {
      const el = route.card.querySelector(`[data-figure="${key}"]`);
      el.querySelector(".value").textContent = text;
      el.dataset.alert = String(Boolean(alert));
    };
    set("rps", rate(sum.rps));
    set(
      "errors",
      sum.errorRatio === null ? "–" : `${(sum.errorRatio * 100).toFixed(sum.errorRatio < 0.1 ? 1 : 0)}%`,
      sum.errorRatio > 0,
    );
    set("p50", ms(sum.p50));
    set("p99", ms(sum.p99));
    set("denied", rate(sum.deniedPerS), sum.deniedPerS > 0);
    // What the charts show, summed, for a quick look in the inspector (and the tests).
    route.card.dataset.requestsTotal = String(series[0].reduce((a, b) => a + (b || 0), 0));
    route.card.dataset.deniedTotal = String(series[2].reduce((a, b) => a + (b || 0), 0));
  }

  // ---- upstreams ---------------------------------------------------------------------------------

  function renderUpstreams(tier) {
    const gatewaysSeeing = tier.gateways.filter((g) => g.reachable).length;
    const blocks = tier.upstreams.map((u) =>
      h(
        "div",
        { class: "upstream", "data-upstream": u.name },
        h("h3", {}, `${u.name} `, h("span", { class: "muted" }, `${u.protocol} · ${u.endpoints.length} endpoint(s)`)),
        ...(u.canaries ?? []).map((c) =>
          h(
            "p",
            { class: "canary", "data-canary-state": c.state, "data-canary-weight": String(c.weight) },
            h(
              "span",
              { class: "badge", "data-state": c.state === "aborted" ? "unhealthy" : "healthy" },
              `canary ${c.version}`,
            ),
            ` ${c.gateway}: ${c.state}, ${c.weight}%${c.step ? ` (step ${c.step}/${c.steps.length})` : ""}`,
            c.last ? h("span", { class: "muted" }, ` — ${c.last}`) : null,
          ),
        ),
        h(
          "table",
          {},
          h(
            "thead",
            {},
            h(
              "tr",
              {},
              ...[
                "endpoint",
                "version",
                "state",
                "per gateway",
                "health",
                "breaker",
                "ejected",
                "in flight",
                "latency EWMA",
                "last ejected",
                "last readmitted",
              ].map((t) => h("th", { class: t === "in flight" || t === "latency EWMA" ? "num" : "" }, t)),
            ),
          ),
          h("tbody", {}, ...u.endpoints.map((e) => endpointRow(e, gatewaysSeeing))),
        ),
      ),
    );
    $("upstreams").replaceChildren(...blocks);
  }

  function endpointRow(e, gatewaysSeeing) {
    const views = e.views;
    const count = (pred) => views.filter(pred).length;
    const of = (n) => `${n}/${views.length}`;
    const unhealthy = count((v) => v.health === "unhealthy");
    const open = count((v) => v.breaker === "open");
    const halfOpen = count((v) => v.breaker === "half-open");
    const ejected = count((v) => v.ejected);
    const max = (key) => views.reduce((m, v) => (v[key] !== null && (m === null || v[key] > m) ? v[key] : m), null);
    const lastEjectedAt = max("lastEjectedAt");
    const lastReadmittedAt = max("lastReadmittedAt");
    const inflight = views.reduce((n, v) => n + v.inflight, 0);
    const ewmas = views.map((v) => v.ewmaMs);
    const breaker = open ? `open ${of(open)}` : halfOpen ? `half-open ${of(halfOpen)}` : "closed";
    return h(
      "tr",
      {
        "data-endpoint": e.address,
        "data-state": e.summary,
        "data-gateways": views.length,
        "data-unhealthy": unhealthy,
        "data-breaker-open": open,
        "data-ejected": ejected,
        "data-last-ejected": lastEjectedAt ?? "",
        "data-last-readmitted": lastReadmittedAt ?? "",
      },
      h("td", {}, h("code", {}, e.address)),
      h("td", {}, [...new Set(views.map((v) => v.version).filter(Boolean))].join(", ") || "–"),
      h("td", {}, h("span", { class: "badge", "data-state": e.summary }, e.summary)),
      h(
        "td",
        {},
        h(
          "span",
          { class: "views" },
          ...views.map((v) =>
            h("span", {
              class: "view",
              "data-state": viewState(v),
              title: `${v.gateway}: ${viewState(v)}, ${v.inflight} in flight, EWMA ${ms(v.ewmaMs)}`,
            }),
          ),
        ),
        views.length < gatewaysSeeing
          ? h("span", { class: "muted" }, ` unknown to ${gatewaysSeeing - views.length}`)
          : null,
      ),
      h(
        "td",
        {},
        unhealthy
          ? `unhealthy ${of(unhealthy)}`
          : count((v) => v.health === "healthy") === views.length
            ? "healthy"
            : count((v) => v.health === "off") === views.length
              ? "checks off"
              : "checking",
      ),
      h("td", {}, breaker),
      h(
        "td",
        {},
        ejected ? `yes ${of(ejected)}` : "no",
        h("span", { class: "muted" }, ` · ${views.reduce((n, v) => n + v.ejections, 0)} total`),
      ),
      h("td", { class: "num" }, inflight),
      h(
        "td",
        { class: "num" },
        ewmas.length ? `${ms(Math.min(...ewmas))}${views.length > 1 ? ` – ${ms(Math.max(...ewmas))}` : ""}` : "–",
      ),
      h("td", { title: clock(lastEjectedAt) }, ago(lastEjectedAt)),
      h("td", { title: clock(lastReadmittedAt) }, ago(lastReadmittedAt)),
    );
  }

  function viewState(v) {
    if (v.health === "unhealthy") return "unhealthy";
    if (v.ejected) return "ejected";
    if (v.breaker !== "closed") return v.breaker;
    return v.health === "unknown" ? "unknown" : "healthy";
  }

  // ---- config ------------------------------------------------------------------------------------

  function renderConfig(tier) {
    const self = tier.gateways.find((g) => g.self) || tier.gateways.find((g) => g.reachable);
    const config = self?.config;
    $("config-file").textContent = config ? config.file : "";
    const digests = new Set(tier.gateways.filter((g) => g.config).map((g) => g.config.digest));
    const errors = tier.gateways
      .filter((g) => g.config?.lastError)
      .map(
        (g) =>
          `${g.info ? g.info.instance : g.url}: last reload rejected ${ago(g.config.lastError.at)}; the previous config keeps serving.\n${g.config.lastError.message}`,
      );
    if (digests.size > 1) errors.unshift(`The gateways run different configs: ${[...digests].join(", ")}.`);
    const box = $("reload-error");
    box.hidden = errors.length === 0;
    box.textContent = errors.join("\n\n");
    $("config-served-by").textContent = tier.servedBy;
    $("config-digest").textContent = config ? config.digest : "";
    if (config && config.digest !== configDigest) {
      configDigest = config.digest;
      fetch("/dashboard/config-source")
        .then((res) => (res.ok ? res.text() : Promise.reject(new Error(`${res.status}`))))
        .then((text) => ($("config-source").querySelector("code").textContent = text))
        .catch(() => (configDigest = null));
    }
  }
})();
