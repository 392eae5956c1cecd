import { html } from 'hono/html'
import type { ArtifactRow, ArtifactsView, VersionRow } from '../sections/artifacts.ts'
import { savingBars } from './charts.ts'
import { formatBytes, formatPercent, formatTime } from './format.ts'
import type { Html } from './layout.ts'

function versionRow(v: VersionRow): Html {
  const d = v.bestDelta
  return html`<tr>
<td>${v.version} <span class="muted">#${v.serial}</span>${v.yanked ? html` <span class="bad" data-yanked title="${v.yanked.reason}">yanked ${formatTime(v.yanked.at)}${v.yanked.signed ? ' (signed: devices move back)' : ' (unsigned: devices warned)'}: ${v.yanked.reason}</span>` : ''}</td>
<td>${v.channels.map((ch) => html`<span class="pill">${ch}</span>`)}</td>
<td class="num">${formatBytes(v.fullBytes)}</td>
<td class="num">${d === null ? html`<span class="muted">no delta</span>` : html`${formatBytes(d.bytes)} <span class="muted">from ${d.from} (${d.method})</span>`}</td>
<td class="num ${v.savedRatio !== null && v.savedRatio > 0 ? 'good' : ''}">${formatPercent(v.savedRatio)}</td>
<td>${d === null ? '' : savingBars(v.fullBytes, d.bytes, `full ${formatBytes(v.fullBytes)} vs delta ${formatBytes(d.bytes)}`)}</td>
<td class="muted">${formatTime(v.createdAt)}</td>
</tr>`
}

function artifactBlock(a: ArtifactRow): Html {
  return html`<h3>${a.name} <span class="muted">${a.versionCount} version${a.versionCount === 1 ? '' : 's'}</span> ${a.channels.map((c) => html`<span class="pill">${c.channel} → ${c.version}</span>`)}</h3>
<table data-artifact="${a.name}">
<thead><tr><th>version</th><th>channels</th><th class="num">full</th><th class="num">best delta</th><th class="num">saved</th><th></th><th>published</th></tr></thead>
<tbody>${a.versions.map(versionRow)}</tbody>
</table>${a.versionCount > a.versions.length ? html`<p class="muted">Showing the newest ${a.versions.length}.</p>` : ''}`
}

export function artifactsView(view: ArtifactsView): Html {
  const failures = view.failed.map(
    (f) => html`<p class="error" data-failed-artifact="${f.name}">${f.name}: ${f.error}</p>`,
  )
  if (view.artifacts.length === 0)
    return html`${failures}<p class="muted">${view.failed.length > 0 ? 'No readable artifact.' : 'Nothing published yet.'}</p>`
  const t = view.totals
  const saved = t.fullBytes > 0 ? 1 - t.deltaBytes / t.fullBytes : null
  return html`<div class="kpi">
<div><strong>${view.artifacts.length}${view.truncated ? '+' : ''}</strong>artifacts</div>
<div><strong>${t.versionsWithDelta}</strong>versions with a delta</div>
<div><strong>${formatBytes(t.fullBytes)} → ${formatBytes(t.deltaBytes)}</strong>full vs delta bytes</div>
<div><strong class="good">${formatPercent(saved)}</strong>saved by deltas</div>
</div>
${failures}
${view.artifacts.map(artifactBlock)}
${view.truncated ? html`<p class="muted">More artifacts exist than are shown.</p>` : ''}`
}
