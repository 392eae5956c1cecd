import { html } from 'hono/html'
import { MAX_ARTIFACTS } from '../sections/artifacts.ts'
import { MAX_ROLLOUTS_PROBED, type RolloutsView, type RolloutView } from '../sections/rollouts.ts'
import { ratioBar } from './charts.ts'
import { formatPercent, formatTime } from './format.ts'
import type { Html } from './layout.ts'

const STATE_CLASS: Record<string, string> = {
  running: 'good',
  completed: 'good',
  scheduled: 'muted',
  paused: 'warn',
  halted: 'bad',
  aborted: 'bad',
}

function rollout(r: RolloutView): Html {
  const overRate = r.overall.failureRate > r.maxFailureRate
  return html`<h3>${r.name} <span class="pill">${r.channel}</span> → ${r.version}
<span class="${STATE_CLASS[r.state] ?? ''}" data-state="${r.state}">${r.state}</span></h3>
<div class="kpi">
<div><strong>${r.currentStage === null ? '–' : `${r.currentStage + 1} / ${r.stageCount}`}</strong>stage</div>
<div><strong>${formatPercent(r.currentPercent / 100, 0)}</strong>of clients admitted</div>
<div><strong class="${overRate ? 'bad' : ''}">${formatPercent(r.overall.failureRate)}</strong>failure rate (limit ${formatPercent(r.maxFailureRate)}, ${r.overall.reported} reports)</div>
<div><strong>${formatTime(r.nextChangeAt)}</strong>next change</div>
</div>
${r.haltedReason === null ? '' : html`<p class="bad">Halted: ${r.haltedReason}</p>`}
${r.stateReason === null ? '' : html`<p class="${STATE_CLASS[r.state] ?? ''}" data-reason>${r.state === 'paused' ? 'Paused' : 'Aborted'}: ${r.stateReason}</p>`}
<table data-rollout="${r.name}/${r.channel}"><thead><tr><th>stage</th><th class="num">cohort</th><th>started</th><th class="num">reported</th><th class="num">installed</th><th class="num">failures</th><th class="num">failure rate</th><th>decision</th></tr></thead><tbody>
${r.stages.map(
  (
    s,
  ) => html`<tr><td>${s.stage + 1}${r.currentStage === s.stage ? html` <span class="pill">current</span>` : ''}</td>
<td class="num">${ratioBar(s.percent / 100, `cohort ${s.percent} %`, '#2563eb', 80)} ${formatPercent(s.percent / 100, 0)}</td>
<td class="muted">${formatTime(s.startedAt)}</td><td class="num">${s.reported}</td><td class="num">${s.installed}</td>
<td class="num">${s.failures}</td><td class="num ${s.failureRate > r.maxFailureRate ? 'bad' : ''}">${formatPercent(s.failureRate)}</td><td>${s.decision}</td></tr>`,
)}
</tbody></table>
${r.errorClasses.length === 0 ? '' : html`<p class="muted">Error classes: ${r.errorClasses.map((e) => html`<span class="pill">${e.errorClass} × ${e.count}</span>`)}</p>`}`
}

/** Said whenever the probe bound left channels unasked: "no rollouts" must not read as "none exist". */
function unchecked(view: RolloutsView): Html | string {
  const parts = [
    ...(view.unchecked > 0
      ? [`${view.unchecked} artifact channel${view.unchecked === 1 ? ' was' : 's were'} not checked`]
      : []),
    ...(view.moreArtifacts ? ['artifacts beyond those listed above were not checked'] : []),
  ]
  if (parts.length === 0) return ''
  return html`<p class="warn" id="rollouts-unchecked">${parts.join('; ')} (the page asks at most ${MAX_ROLLOUTS_PROBED} artifact channels, of the first ${MAX_ARTIFACTS} artifacts): a rollout there is not shown.</p>`
}

export function rolloutsView(view: RolloutsView): Html {
  if (view.rollouts.length === 0)
    return html`<p class="muted">No rollouts (${view.probed} artifact channel${view.probed === 1 ? '' : 's'} checked).</p>${unchecked(view)}`
  return html`${view.rollouts.map(rollout)}${unchecked(view)}`
}
