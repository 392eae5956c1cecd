import type { ZoneMetrics } from '../../schemas/shards.ts'
import { call } from './publish-helpers.ts'

/** vitest.config.ts binds OPERATOR_TOKEN to this (TEST_OPERATOR_TOKEN there). */
export const OPERATOR_TOKEN = 'test-operator-token'
export const operatorAuth = { authorization: `Bearer ${OPERATOR_TOKEN}` }

/** GET /dashboard as an operator; fails the test unless the page rendered. */
export async function dashboardHtml(headers: Record<string, string> = operatorAuth): Promise<string> {
  const response = await call('/dashboard', { headers: { accept: 'text/html', ...headers } })
  const text = await response.text()
  if (response.status !== 200) throw new Error(`dashboard: ${response.status} ${text.slice(0, 300)}`)
  return text
}

/** The HTML of one section of the page (by its id), so assertions cannot match another section. */
export function sectionOf(page: string, id: string): string {
  const start = page.indexOf(`<section class="card`)
  const marker = page.indexOf(`id="${id}"`, start)
  if (marker < 0) throw new Error(`no section ${id}`)
  const open = page.lastIndexOf('<section', marker)
  const close = page.indexOf('</section>', marker)
  return page.slice(open, close)
}

/** A zone's planner metrics with nothing served yet; `overrides` sets what a test looks at. */
export function quietZone(zone: string, overrides: Partial<ZoneMetrics> = {}): ZoneMetrics {
  return {
    zone,
    requests: 0,
    hits: 0,
    hitRatio: 0,
    crossZoneFetches: 0,
    bytesServed: 0,
    crossZoneBytes: 0,
    bytesMoved: 0,
    warmFillBytes: 0,
    meanLatencyMs: 0,
    smape: null,
    evaluatedHours: 0,
    refits: 0,
    ...overrides,
  }
}
