import { html } from 'hono/html'
import type { ConfigView } from '../sections/config.ts'
import { formatTime } from './format.ts'
import type { Html } from './layout.ts'

const SOURCE_LABELS: Record<ConfigView['source'], string> = {
  kv: 'KV document (CONFIG/runtime)',
  'last-good': 'last good document (CONFIG/runtime:last-good): the current one is rejected',
  defaults: 'built-in defaults',
}

export function configView(view: ConfigView): Html {
  const rejected = view.lastRejected
  return html`<p>Source: <strong id="config-source">${SOURCE_LABELS[view.source]}</strong></p>
<h3>Last rejected document</h3>
${
  rejected === null
    ? html`<p class="muted" id="config-rejected">None since this isolate started.</p>`
    : html`<div id="config-rejected"><p class="bad">Rejected at ${formatTime(rejected.at)}; the config below stayed in force.</p>
<table><thead><tr><th>path</th><th>problem</th></tr></thead><tbody>${rejected.issues.map((i) => html`<tr><td><code>${i.path || '(document)'}</code></td><td>${i.message}</td></tr>`)}</tbody></table></div>`
}
<h3>Ignored values</h3>
${
  view.warnings.length === 0
    ? html`<p class="muted" id="config-warnings">None: every value of the config in force takes effect.</p>`
    : html`<div id="config-warnings"><p class="bad">The config below is in force, but the edge ignores or overrides these values of it.</p>
<table><thead><tr><th>path</th><th>why</th></tr></thead><tbody>${view.warnings.map((w) => html`<tr><td><code>${w.path}</code></td><td>${w.message}</td></tr>`)}</tbody></table></div>`
}
<h3>In force</h3>
<pre id="config-in-force">${view.inForceJson}</pre>`
}
