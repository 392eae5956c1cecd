import { html, raw } from 'hono/html'
import type { HtmlEscapedString } from 'hono/utils/html'

export type Html = HtmlEscapedString | Promise<HtmlEscapedString>

/**
 * Inline CSS only: the page loads nothing else (no scripts, fonts, images or stylesheets), which the
 * Content-Security-Policy set by the route enforces.
 */
const STYLE = raw(`
:root { color-scheme: light; --fg: #1d2430; --muted: #5d6b7e; --line: #dfe3ea; --bg: #f6f7f9;
  --card: #fff; --accent: #2563eb; --good: #15803d; --bad: #b91c1c; --warn: #b45309; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg);
  background: var(--bg); }
header { display: flex; align-items: center; justify-content: space-between; padding: 12px 24px;
  background: #111827; color: #f9fafb; }
header h1 { font-size: 18px; margin: 0; }
header form { margin: 0; }
main { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 16px; padding: 16px 24px; }
section.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 14px 16px;
  min-width: 0; }
section.wide { grid-column: 1 / -1; }
section.card h2 { font-size: 15px; margin: 0 0 10px; }
h3 { font-size: 13px; margin: 12px 0 6px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line); vertical-align: top; }
th { color: var(--muted); font-weight: 600; font-size: 12px; }
td.num, th.num { text-align: right; }
.muted { color: var(--muted); }
.good { color: var(--good); }
.bad { color: var(--bad); }
.warn { color: var(--warn); }
.error { color: var(--bad); background: #fef2f2; border: 1px solid #fecaca; padding: 8px 10px; border-radius: 6px; }
.pill { display: inline-block; padding: 0 6px; border-radius: 9px; background: #eef2ff; color: #3730a3;
  font-size: 12px; margin-right: 4px; }
.kpi { display: flex; gap: 24px; flex-wrap: wrap; margin-bottom: 8px; }
.kpi div { font-size: 12px; color: var(--muted); }
.kpi strong { display: block; font-size: 20px; color: var(--fg); }
.charts { display: flex; flex-wrap: wrap; gap: 8px 24px; }
pre { background: #f3f4f6; padding: 8px; border-radius: 6px; overflow: auto; max-height: 320px; font-size: 12px; }
svg text { font: 11px system-ui, sans-serif; fill: var(--muted); }
button, input { font: inherit; }
.login { max-width: 360px; margin: 12vh auto; background: var(--card); border: 1px solid var(--line);
  border-radius: 8px; padding: 24px; }
.login input { width: 100%; padding: 8px; margin: 6px 0 12px; border: 1px solid var(--line); border-radius: 6px; }
.login button, header button { padding: 6px 14px; border: 0; border-radius: 6px; background: var(--accent);
  color: #fff; cursor: pointer; }
`)

export function layout(title: string, body: Html): Html {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>${title}</title>
<style>${STYLE}</style>
</head>
<body>
${body}
</body>
</html>`
}
