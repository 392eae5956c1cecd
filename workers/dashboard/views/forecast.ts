import { html } from 'hono/html'
import type { ForecastView, ZoneForecastView } from '../sections/forecast.ts'
import { lineChart } from './charts.ts'
import type { Html } from './layout.ts'

const hhmm = (ms: number) => `${new Date(ms).toISOString().slice(11, 16)} UTC`

function zoneChart(z: ZoneForecastView): Html {
  const actual = z.points.flatMap((p) => (p.actual === null ? [] : [{ x: p.hour, y: p.actual }]))
  const forecast = z.points.flatMap((p) => (p.predicted === null ? [] : [{ x: p.hour, y: p.predicted }]))
  return html`<div data-forecast-zone="${z.zone}"><h3>${z.zone} <span class="muted">sMAPE ${z.smape === null ? '– (no scored hour yet)' : `${z.smape.toFixed(1)} % over ${z.evaluatedHours} h`}</span></h3>
${lineChart(
  [
    { label: 'actual requests/h', color: '#2563eb', points: actual },
    { label: 'forecast requests/h', color: '#f59e0b', dashed: true, points: forecast },
  ],
  { title: `${z.zone}: forecast vs actual requests per hour`, xLabel: hhmm, width: 420 },
)}</div>`
}

export function forecastView(view: ForecastView): Html {
  if (view.zones.length === 0) return html`<p class="muted">No zones configured.</p>`
  return html`<p class="muted">Actual: blob requests served per hour, last ${view.windowHours} h. Forecast: the planner's one-step forecast for each hour (scored, or pending for the hour under way).</p><div class="charts">${view.zones.map(zoneChart)}</div>`
}
