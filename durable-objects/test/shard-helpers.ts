import { env } from 'cloudflare:workers'
import type { DemandRow } from '../../schemas/shards.ts'
import { auth, bytesOf, call, envelopeFor, startPublish } from '../../workers/test/publish-helpers.ts'

export const HOUR = 3_600_000

export function plannerStub(name = 'global') {
  return env.SHARD_PLANNER.get(env.SHARD_PLANNER.idFromName(name))
}

/** Publishes `name@1.0.0` with `bytes` bytes and declared dependencies; returns its envelope. */
export async function publishDep(name: string, size: number, seed: number, dependencies: string[] = []) {
  const body = bytesOf(size, seed)
  const envelope = await envelopeFor(name, '1.0.0', body, {
    dependencies: dependencies.map((d) => ({ name: d, range: '^1.0.0' })),
  })
  const started = await startPublish(envelope)
  if (started.status !== 201) throw new Error(`start failed: ${started.status}`)
  const put = await call(`/v1/publish/${encodeURIComponent(name)}/1.0.0/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
  if (put.status !== 201) throw new Error(`put failed: ${put.status} ${await put.text()}`)
  return { envelope, body }
}

/**
 * `days` of hourly demand for `entry` in `zone` ending at the hour before `now`: a daily cycle around
 * `perHour` (never below zero), so the forecast has something seasonal to find.
 */
export function demandRows(entry: string, zone: string, perHour: number, now: number, days = 3): DemandRow[] {
  const end = Math.floor(now / HOUR) * HOUR
  const rows: DemandRow[] = []
  for (let h = days * 24; h >= 1; h--) {
    const hour = end - h * HOUR
    // Phase relative to now, so the series (and the forecasts built on it) do not depend on the wall clock.
    const phase = (2 * Math.PI * (h % 24)) / 24
    const requests = Math.max(0, Math.round(perHour * (1 + 0.3 * Math.sin(phase))))
    rows.push({ hour, zone, entry, requests, bytes: requests * 1000 })
  }
  return rows
}
