/** Display formatting shared by the dashboard views (plain strings; escaping happens in the templates). */

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB']

export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '–'
  let value = bytes
  let unit = 0
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024
    unit++
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value >= 100 ? 0 : 1)} ${UNITS[unit]}`
}

/** 0.9412 → "94.1 %"; null → "–". */
export function formatPercent(ratio: number | null, digits = 1): string {
  return ratio === null || !Number.isFinite(ratio) ? '–' : `${(ratio * 100).toFixed(digits)} %`
}

export function formatCount(value: number): string {
  if (!Number.isFinite(value)) return '–'
  return value >= 100 || Number.isInteger(value)
    ? Math.round(value).toLocaleString('en-US')
    : value.toFixed(1)
}

/** ISO or epoch ms → "2026-11-23 22:31 UTC". */
export function formatTime(at: string | number | null | undefined): string {
  if (at === null || at === undefined) return '–'
  const date = new Date(at)
  return Number.isNaN(date.getTime()) ? '–' : `${date.toISOString().slice(0, 16).replace('T', ' ')} UTC`
}
