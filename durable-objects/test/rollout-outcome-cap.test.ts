import { runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { OutcomeReceipt, RolloutStatus } from '../../schemas/rollout.ts'
import { bytesOf, publishSingle } from '../../workers/test/publish-helpers.ts'
import { MAX_REPORTING_CLIENTS } from '../rollout-coordinator.ts'
import { coordinatorStub, HOUR, reportOutcome, startRollout, statusOf } from './rollout-helpers.ts'

const NAME = 'ro-cap'

async function report(client: string, outcome: 'installed' | 'failed') {
  const res = await reportOutcome(NAME, {
    client,
    version: '1.0.0',
    outcome,
    ...(outcome === 'failed' ? { errorClass: 'health-check' } : {}),
  })
  expect(res.status).toBe(202)
  return OutcomeReceipt.parse(await res.json())
}

/** Rows in the coordinator's outcomes table, and whether `client` has one. */
async function rows(client: string): Promise<{ n: number; has: boolean }> {
  return runInDurableObject(coordinatorStub(NAME), (_instance, state) => ({
    n: state.storage.sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM outcomes').one().n,
    has: state.storage.sql.exec('SELECT 1 FROM outcomes WHERE client_id = ?', client).toArray().length > 0,
  }))
}

describe('RolloutCoordinator outcomes', () => {
  it('keeps at most MAX_REPORTING_CLIENTS reporters: a new one replaces the oldest installed, never a failure', async () => {
    await publishSingle(NAME, '1.0.0', bytesOf(100, 31))
    const started = await startRollout(NAME, {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: HOUR }],
    })
    expect(started.status).toBe(201)
    await report('cap-failed-early', 'failed')
    // Clients that reported `installed` long ago (fresh ids cost nothing unless devices must enroll),
    // filling the table to one below the cap; their tallies are kept in step as report() keeps them.
    const fillers = MAX_REPORTING_CLIENTS - 2
    await runInDurableObject(coordinatorStub(NAME), (_instance, state) => {
      state.storage.sql.exec(
        `WITH RECURSIVE seq(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM seq WHERE i < ?)
         INSERT INTO outcomes (client_id, stage, outcome, error_class, at, tokens, refilled_at)
         SELECT 'filler-' || i, 0, 'installed', NULL, i, 5, i FROM seq`,
        fillers,
      )
      state.storage.sql.exec(
        `INSERT INTO tallies (stage, outcome, n) VALUES (0, 'installed', ?)
         ON CONFLICT (stage, outcome) DO UPDATE SET n = n + excluded.n`,
        fillers,
      )
      // The early failure is older still: the oldest row of all.
      state.storage.sql.exec("UPDATE outcomes SET at = 0 WHERE client_id = 'cap-failed-early'")
    })
    expect((await rows('filler-1')).n).toBe(MAX_REPORTING_CLIENTS - 1)

    // The last free place, then a new reporter at the cap: it takes the oldest installed one's place.
    expect((await report('cap-last', 'installed')).counted).toBe(true)
    expect((await rows('filler-1')).n).toBe(MAX_REPORTING_CLIENTS)
    expect((await report('cap-failed-late', 'failed')).counted).toBe(true)
    const after = await rows('filler-1')
    expect(after).toEqual({ n: MAX_REPORTING_CLIENTS, has: false })
    expect((await rows('filler-2')).has).toBe(true)
    expect((await rows('cap-failed-early')).has).toBe(true)

    // Both failures are counted; the tallies still match the rows.
    const res = await statusOf(NAME)
    expect(res.status).toBe(200)
    const status = RolloutStatus.parse(await res.json())
    expect(status.overall.failures).toBe(2)
    expect(status.overall.total).toBe(MAX_REPORTING_CLIENTS)
  })
})
