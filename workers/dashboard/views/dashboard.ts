import { html } from 'hono/html'
import type { DashboardData } from '../page-data.ts'
import { artifactsView } from './artifacts.ts'
import { card } from './card.ts'
import { configView } from './config.ts'
import { forecastView } from './forecast.ts'
import { formatTime } from './format.ts'
import { type Html, layout } from './layout.ts'
import { hotArtifactsView, prefetchView } from './regions.ts'
import { rolloutsView } from './rollouts.ts'
import { shardsView } from './shards.ts'

export function dashboardPage(data: DashboardData): Html {
  return layout(
    'deltaport · dashboard',
    html`<header><h1>deltaport edge dashboard</h1><span class="muted">generated ${formatTime(data.generatedAt)}</span>
<form method="post" action="/dashboard/logout"><button type="submit">Sign out</button></form></header>
<main>
${card('artifacts', 'Artifacts, versions and delta savings', data.artifacts, artifactsView, { wide: true })}
${card('rollouts', 'Rollouts', data.rollouts, rolloutsView, { wide: true })}
${card('hot', 'Hot artifacts per region', data.hotArtifacts, hotArtifactsView)}
${card('prefetch', 'Prefetch hit ratio', data.prefetch, prefetchView)}
${card('shards', 'Shard map per zone', data.shards, shardsView, { wide: true })}
${card('forecast', 'Forecast vs actual demand', data.forecast, forecastView, { wide: true })}
${card('config', 'Runtime config', data.config, configView, { wide: true })}
</main>`,
  )
}
