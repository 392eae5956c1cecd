import { html } from 'hono/html'
import type { ShardsView, ZoneShardView } from '../sections/shards.ts'
import { ratioBar } from './charts.ts'
import { formatBytes, formatCount, formatPercent, formatTime } from './format.ts'
import type { Html } from './layout.ts'

/** Planned bytes against the zone's capacity; before the first plan there is neither (not "0 B of 0 B"). */
function usage(z: ZoneShardView, planned: boolean): Html {
  if (!planned) return html`<span class="muted">no plan yet</span>`
  const used = z.capacityBytes > 0 ? z.plannedBytes / z.capacityBytes : null
  return html`${ratioBar(used, `${formatBytes(z.plannedBytes)} of ${formatBytes(z.capacityBytes)}`, '#7c3aed', 80)} <span class="muted">${formatBytes(z.plannedBytes)} / ${formatBytes(z.capacityBytes)}</span>`
}

function zone(z: ZoneShardView, planned: boolean): Html {
  return html`<tr data-zone="${z.zone}">
<td><strong>${z.zone}</strong></td>
<td>${usage(z, planned)}</td>
<td>${z.entries.length === 0 ? html`<span class="muted">none</span>` : z.entries.map((e) => html`<span class="pill" title="${formatCount(e.demand)} req/h forecast">${e.id}${e.active ? '' : ' (copying)'}</span>`)}${z.moreEntries > 0 ? html` <span class="muted">+${z.moreEntries} more</span>` : ''}</td>
<td class="num">${z.metrics === null ? '–' : formatCount(z.metrics.requests)}</td>
<td class="num">${z.metrics === null ? '–' : formatPercent(z.metrics.hitRatio)}</td>
<td class="num">${z.metrics?.smape == null ? '–' : `${z.metrics.smape.toFixed(1)} %`}</td>
</tr>`
}

export function shardsView(view: ShardsView): Html {
  const plan = view.plan
  return html`${
    plan === null
      ? html`<p class="muted">No shard plan yet: the planner runs every <code>zones.replanIntervalMs</code> (default 1 h) and has not run yet; <code>POST /v1/shards/replan</code> with the maintainer token runs it now.</p>`
      : html`<p>Plan <strong id="shard-plan-version">v${plan.version}</strong> from ${formatTime(plan.createdAt)}, horizon ${plan.horizonHours} h, prefetch threshold ${formatCount(plan.prefetchThreshold)} req/h.</p>`
  }
<table><thead><tr><th>zone</th><th>planned / capacity</th><th>dependencies (replicas)</th><th class="num">requests 24 h</th><th class="num">zone hit ratio</th><th class="num">sMAPE</th></tr></thead>
<tbody>${view.zones.map((z) => zone(z, plan !== null))}</tbody></table>
<p class="muted">Migrations: ${view.migrations.pending} pending, ${view.migrations.active} active, ${view.migrations.failed} failed.${view.underReplicated.length > 0 ? html` <span class="warn">Under-replicated: ${view.underReplicated.join(', ')}</span>` : ''}</p>`
}
