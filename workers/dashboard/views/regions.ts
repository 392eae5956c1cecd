import { html } from 'hono/html'
import type { HotArtifactsView, PrefetchView } from '../sections/regions.ts'
import { ratioBar } from './charts.ts'
import { formatCount, formatPercent } from './format.ts'
import type { Html } from './layout.ts'

export function hotArtifactsView(view: HotArtifactsView): Html {
  if (view.regions.length === 0) return html`<p class="muted">No telemetry received yet.</p>`
  return html`${view.regions.map(
    (
      r,
    ) => html`<h3>${r.region} <span class="muted">${formatCount(r.population)} client${r.population === 1 ? '' : 's'}</span></h3>
<table data-region="${r.region}"><thead><tr><th>artifact</th><th class="num">recent uses (decayed)</th><th></th></tr></thead><tbody>
${r.hot.map((a) => html`<tr><td>${a.artifact}</td><td class="num">${formatCount(a.count)}</td><td>${ratioBar((r.hot[0]?.count ?? 0) > 0 ? a.count / (r.hot[0]?.count ?? 1) : 0, `${a.artifact}: ${formatCount(a.count)}`, '#f59e0b', 120)}</td></tr>`)}
</tbody></table>`,
  )}`
}

export function prefetchView(view: PrefetchView): Html {
  if (view.total.deliveries === 0 && view.total.hits === 0)
    return html`<p class="muted">No installs or updates reported yet.</p>`
  return html`<div class="kpi">
<div><strong id="prefetch-ratio">${formatPercent(view.total.ratio)}</strong>prefetch hit ratio</div>
<div><strong>${formatCount(view.total.hits)} / ${formatCount(view.total.deliveries)}</strong>hits / installs + updates</div>
</div>
<table><thead><tr><th>region</th><th class="num">hits</th><th class="num">installs + updates</th><th class="num">ratio</th><th></th></tr></thead><tbody>
${view.regions.map((r) => html`<tr><td>${r.region}</td><td class="num">${formatCount(r.hits)}</td><td class="num">${formatCount(r.deliveries)}</td><td class="num">${formatPercent(r.ratio)}</td><td>${ratioBar(r.ratio, `${r.region}: ${formatPercent(r.ratio)}`, '#15803d', 120)}</td></tr>`)}
</tbody></table>`
}
