// The compatibility report (rt.report(format="json"), as `gpuport doctor` prints it) as HTML: a summary,
// the limits, the plan per op and the problems. Text goes in as text, never as markup.

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, attrs);
  node.append(...children);
  return node;
}

function table(head, rows, numeric = []) {
  const wrap = el("div", { className: "scroll" });
  const t = el("table");
  t.append(el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", { className: numeric.includes(i) ? "num" : "" }, h)))));
  t.append(el("tbody", {}, ...rows.map((r) => el("tr", {}, ...r.map((c, i) =>
    el("td", { className: numeric.includes(i) ? "num" : "" }, String(c)))))));
  wrap.append(t);
  return wrap;
}

export function renderReport(report) {
  const a = report.adapter || {};
  const adapter = [a.vendor, a.architecture, a.device || a.description].filter(Boolean).join(" / ") || "unknown";
  const summary = el("dl", { id: "doctor-summary" });
  for (const [k, v] of [["backend", report.mode === "auto" ? `auto (${report.backend} or cpu, chosen per op call by measurement)` : report.backend], ["tier", `${report.tier} (device offers ${report.detected_tier})`],
                        ["adapter", adapter + (a.is_fallback ? " (fallback adapter)" : "")],
                        ["platform", report.platform], ["features", (report.features || []).join(", ") || "none"]]) {
    summary.append(el("dt", {}, k), el("dd", {}, String(v)));
  }
  const parts = [summary];
  const limits = Object.entries(report.limits || {});
  if (limits.length) {
    parts.push(el("h3", {}, "Limits"), table(["limit", "value"], limits.map(([k, v]) => [k, Number(v).toLocaleString("en")]), [1]));
  }
  const ops = Object.entries(report.ops || {}).map(([op, o]) => [op, o.strategy, o.backend, o.shader]);
  parts.push(el("h3", {}, "Plan per op"), table(["op", "strategy on the device", "where it runs", "shader"], ops));
  const problems = el("ul", { id: "doctor-problems" });
  for (const p of report.problems || []) {
    problems.append(el("li", { className: p.severity === "info" ? "" : "bad" },
      el("strong", {}, p.severity), ` ${p.code}: ${p.message}. `, el("em", {}, "Recommendation: "), p.recommendation));
  }
  if (!(report.problems || []).length) problems.append(el("li", {}, "None found."));
  parts.push(el("h3", {}, "Problems"), problems);
  const fragment = document.createDocumentFragment();
  fragment.append(...parts);
  return fragment;
}
