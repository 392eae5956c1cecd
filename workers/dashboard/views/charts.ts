import { html } from 'hono/html'
import type { Html } from './layout.ts'

/** Inline SVG charts: numbers are computed here, every label goes through the escaping template. */

const round = (n: number) => Math.round(n * 10) / 10

/** A horizontal bar filled to `ratio` (0–1), e.g. cohort progress or a saving. */
export function ratioBar(ratio: number | null, label: string, color = '#2563eb', width = 160): Html {
  const r = ratio === null || !Number.isFinite(ratio) ? 0 : Math.max(0, Math.min(1, ratio))
  return html`<svg width="${width}" height="12" role="img" aria-label="${label}"><title>${label}</title><rect width="${width}" height="12" rx="3" fill="#e5e7eb"></rect><rect width="${round(width * r)}" height="12" rx="3" fill="${color}"></rect></svg>`
}

/** Full bytes vs delta bytes as two bars on one scale. */
export function savingBars(fullBytes: number, deltaBytes: number, label: string, width = 160): Html {
  const scale = fullBytes > 0 ? width / Math.max(fullBytes, deltaBytes) : 0
  return html`<svg width="${width}" height="18" role="img" aria-label="${label}"><title>${label}</title><rect y="0" width="${round(fullBytes * scale)}" height="8" fill="#9ca3af"></rect><rect y="10" width="${Math.max(1, round(deltaBytes * scale))}" height="8" fill="#15803d"></rect></svg>`
}

export interface Series {
  label: string
  color: string
  /** Dashed line (e.g. a forecast). */
  dashed?: boolean
  points: ReadonlyArray<{ x: number; y: number }>
}

/**
 * A line chart of several series on shared axes (x: epoch ms or an index; y ≥ 0), with a legend.
 * `xLabel` formats the two x-axis end labels.
 */
export function lineChart(
  series: readonly Series[],
  options: { title: string; width?: number; height?: number; xLabel?: (x: number) => string },
): Html {
  const width = options.width ?? 520
  const height = options.height ?? 180
  const pad = { left: 44, right: 10, top: 10, bottom: 34 }
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y))
  if (all.length === 0) return html`<p class="muted">No data points yet.</p>`
  const xMin = Math.min(...all.map((p) => p.x))
  const xMax = Math.max(...all.map((p) => p.x))
  // Counts: an all-zero series still gets a 0–1 axis rather than a hair-thin one.
  const yMax = Math.max(1, ...all.map((p) => p.y))
  const sx = (x: number) =>
    pad.left + (xMax === xMin ? 0.5 : (x - xMin) / (xMax - xMin)) * (width - pad.left - pad.right)
  const sy = (y: number) => pad.top + (1 - Math.max(0, y) / yMax) * (height - pad.top - pad.bottom)
  const xLabel = options.xLabel ?? ((x: number) => String(x))
  const lines = series.map((s) => {
    const pts = s.points
      .filter((p) => Number.isFinite(p.x) && Number.isFinite(p.y))
      .map((p) => `${round(sx(p.x))},${round(sy(p.y))}`)
      .join(' ')
    const dots = s.points.length === 1 ? s.points : []
    return html`<polyline fill="none" stroke="${s.color}" stroke-width="2" ${s.dashed ? html`stroke-dasharray="5 4"` : ''} points="${pts}"><title>${s.label}</title></polyline>${dots.map((p) => html`<circle cx="${round(sx(p.x))}" cy="${round(sy(p.y))}" r="3" fill="${s.color}"></circle>`)}`
  })
  const legend = series.map(
    (s, i) =>
      html`<g transform="translate(${pad.left + i * 150},${height - 8})"><line x1="0" y1="-4" x2="18" y2="-4" stroke="${s.color}" stroke-width="2" ${s.dashed ? html`stroke-dasharray="5 4"` : ''}></line><text x="22" y="0">${s.label}</text></g>`,
  )
  const bottom = height - pad.bottom
  return html`<svg width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${options.title}"><title>${options.title}</title><line x1="${pad.left}" y1="${bottom}" x2="${width - pad.right}" y2="${bottom}" stroke="#d1d5db"></line><line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${bottom}" stroke="#d1d5db"></line><text x="${pad.left - 4}" y="${pad.top + 8}" text-anchor="end">${formatAxis(yMax)}</text><text x="${pad.left - 4}" y="${bottom}" text-anchor="end">0</text><text x="${pad.left}" y="${bottom + 13}">${xLabel(xMin)}</text><text x="${width - pad.right}" y="${bottom + 13}" text-anchor="end">${xLabel(xMax)}</text>${lines}${legend}</svg>`
}

function formatAxis(value: number): string {
  if (value >= 1e6) return `${(value / 1e6).toFixed(1)}M`
  if (value >= 1e3) return `${(value / 1e3).toFixed(1)}k`
  return value >= 10 ? value.toFixed(0) : value.toFixed(2)
}
