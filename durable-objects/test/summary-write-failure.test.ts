import { evictDurableObject, runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { artifactCount, nextUses } from '../../predict/index.ts'
import { TelemetryReceipt } from '../../schemas/aggregation.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import type { RegionAggregator } from '../region-aggregator.ts'
import { batchOf, postTelemetry } from './helpers.ts'

const regionStub = (region: string) => env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))

/**
 * A telemetry batch bumps the RegionAggregator's in-memory indexes in place, then writes the changes in
 * one transaction with the client row; when that write fails the indexes are reloaded from storage, so
 * memory never holds counts that were not stored (ADR 0006, "a telemetry batch bounds only what it
 * touched"). The failure here is real SQLite refusing a write inside the object's own storage: a trigger
 * that aborts one client's row (or one artifact's), the same error path as a constraint or size limit
 * the platform enforces (local workerd enforces no row size limit, see row-limits.ts).
 */
describe('RegionAggregator: a failed summary write', () => {
  const T = Date.UTC(2030, 0, 1)

  async function failingWrite(region: string, trigger: string, doomed: Parameters<typeof batchOf>[2]) {
    const stub = regionStub(region)
    const ingest = (instance: RegionAggregator, clientId: string, seq: number, artifacts: typeof doomed) =>
      instance.ingest({ region, batch: batchOf(clientId, seq, artifacts), ratePerMinute: 60 })
    let before: Awaited<ReturnType<RegionAggregator['snapshot']>> | undefined
    await runInDurableObject(stub, async (instance: RegionAggregator, state) => {
      // Enough names that the failed batch's evictions touch what is stored (cap 4 artifacts).
      await instance.configure({ maxArtifacts: 4, maxSegments: 4 })
      expect(
        await ingest(instance, 'client-ok', 1, ['app', 'lib', { artifact: 'lib', segment: 'bin/x' }, 'tool']),
      ).toMatchObject({ status: 'accepted' })
      before = await instance.snapshot(T)
      state.storage.sql.exec(trigger)
      await expect(ingest(instance, 'client-doomed', 1, doomed)).rejects.toThrow(/injected/)
      // Memory is what storage holds: the batch is not counted, nothing it evicted is gone.
      expect(await instance.snapshot(T)).toEqual(before)
      state.storage.sql.exec('DROP TRIGGER refuse')
    })
    // A fresh instance loads the same rows.
    await evictDurableObject(stub)
    expect(await stub.snapshot(T)).toEqual(before)
    return { stub, before }
  }

  it('reloads the indexes from storage when the client row cannot be written', async () => {
    const { stub } = await failingWrite(
      'wf-client',
      `CREATE TRIGGER refuse BEFORE INSERT ON clients WHEN NEW.client_id = 'client-doomed'
         BEGIN SELECT RAISE(ABORT, 'injected: client row refused'); END`,
      ['app', 'new-1', 'new-2', { artifact: 'new-3', segment: 'bin/y' }, 'new-4'],
    )
    // The same client's next batch is taken as new (its sequence number was never stored) and counts once.
    await runInDurableObject(stub, async (instance: RegionAggregator) => {
      expect(
        await instance.ingest({
          region: 'wf-client',
          batch: batchOf('client-doomed', 1, ['app']),
          ratePerMinute: 60,
        }),
      ).toMatchObject({ status: 'accepted' })
      const { summary, population } = await instance.snapshot()
      expect(population).toBe(2)
      expect(artifactCount(summary, 'app', summary.updatedAt)).toBeCloseTo(2, 2)
      expect(summary.artifacts.some((a) => a.artifact.startsWith('new-'))).toBe(false)
    })
  })

  it('reloads the indexes from storage when an artifact row cannot be written', async () => {
    const { stub, before } = await failingWrite(
      'wf-artifact',
      `CREATE TRIGGER refuse BEFORE INSERT ON artifacts WHEN NEW.artifact = 'poison'
         BEGIN SELECT RAISE(ABORT, 'injected: artifact row refused'); END`,
      ['app', 'lib', 'poison'],
    )
    expect(nextUses(before?.summary ?? (await stub.snapshot(T)).summary, 'lib', T).map((n) => n.to)).toEqual([
      'tool',
    ])
  })

  it('answers the agent 500 problem+json, and the same batch sent again is counted once', async () => {
    const stub = regionStub('wf-http')
    const batch = batchOf('client-retry', 5, ['app', 'lib'])
    expect((await postTelemetry('wf-http', batchOf('client-first', 1, ['app']))).status).toBe(202)
    const before = await stub.snapshot(T)
    await runInDurableObject(stub, (_instance: RegionAggregator, state) => {
      state.storage.sql.exec(`CREATE TRIGGER refuse BEFORE INSERT ON clients WHEN NEW.client_id LIKE '%client-retry'
        BEGIN SELECT RAISE(ABORT, 'injected: client row refused'); END`)
    })
    const failed = await postTelemetry('wf-http', batch)
    expect(failed.status).toBe(500)
    expect(failed.headers.get('content-type')).toContain('application/problem+json')
    expect(ProblemDetails.parse(await failed.json()).type).toContain('internal')
    expect(await stub.snapshot(T)).toEqual(before)

    await runInDurableObject(stub, (_instance: RegionAggregator, state) => {
      state.storage.sql.exec('DROP TRIGGER refuse')
    })
    // The agent retries the batch as it was: not a replay (its sequence number was never stored).
    const retried = await postTelemetry('wf-http', batch)
    expect(retried.status).toBe(202)
    expect(TelemetryReceipt.parse(await retried.json())).toMatchObject({ accepted: 2, duplicate: false })
    const { summary, population } = await stub.snapshot()
    expect(population).toBe(2)
    expect(artifactCount(summary, 'app', summary.updatedAt)).toBeCloseTo(2, 2)
    expect(artifactCount(summary, 'lib', summary.updatedAt)).toBeCloseTo(1, 2)
  })
})
