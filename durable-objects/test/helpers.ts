import type { TelemetryBatch } from '../../schemas/telemetry.ts'
import { call } from '../../workers/test/publish-helpers.ts'

/** A batch of `artifacts` used in order, one minute apart, ending now. */
export function batchOf(
  clientId: string,
  batchSeq: number,
  artifacts: readonly (string | { artifact: string; count?: number; segment?: string; version?: string })[],
): TelemetryBatch {
  const now = Date.now()
  return {
    clientId,
    batchSeq,
    sentAt: new Date(now).toISOString(),
    events: artifacts.map((a, i) => {
      const e = typeof a === 'string' ? { artifact: a } : a
      return {
        count: 1,
        kind: 'use' as const,
        ...e,
        at: new Date(now - (artifacts.length - i) * 60_000).toISOString(),
      }
    }),
  }
}

export function postTelemetry(region: string, body: unknown): Promise<Response> {
  return call('/v1/telemetry', {
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-deltaport-region': region },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  })
}
