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

/**
 * Rows `sql` reads while `work` runs (Durable Object SQL is billed and slowed per row read): every
 * cursor opened meanwhile, summed once `work` is done.
 */
export async function rowsReadDuring(sql: SqlStorage, work: () => unknown): Promise<number> {
  const exec = sql.exec.bind(sql)
  const cursors: SqlStorageCursor<Record<string, SqlStorageValue>>[] = []
  const counting = (query: string, ...bindings: unknown[]) => {
    const cursor = exec(query, ...bindings)
    cursors.push(cursor)
    return cursor
  }
  Object.defineProperty(sql, 'exec', { value: counting, configurable: true })
  try {
    await work()
  } finally {
    Reflect.deleteProperty(sql, 'exec')
  }
  return cursors.reduce((n, c) => n + c.rowsRead, 0)
}
