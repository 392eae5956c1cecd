import { runDurableObjectAlarm, runInDurableObject } from 'cloudflare:test'
import { describe, expect, it } from 'vitest'
import { OutcomeReceipt, RolloutCheck, RolloutStatus } from '../../schemas/rollout.ts'
import { bytesOf, publishSingle } from '../../workers/test/publish-helpers.ts'
import {
  checkClient,
  clientsBetween,
  control,
  coordinatorStub,
  HOUR,
  reportOutcome,
  rolloutStatus,
  startRollout,
} from './rollout-helpers.ts'

const STAGES = [
  { percent: 1, durationMs: HOUR },
  { percent: 10, durationMs: HOUR },
  { percent: 50, durationMs: HOUR },
  { percent: 100, durationMs: HOUR },
]

/** Two stages: 10 % of clients for an hour, then everyone. */
const TEN_THEN_ALL = [
  { percent: 10, durationMs: HOUR },
  { percent: 100, durationMs: HOUR },
]

async function check(name: string, client: string): Promise<RolloutCheck> {
  const res = await checkClient(name, client)
  expect(res.status).toBe(200)
  return RolloutCheck.parse(await res.json())
}

async function report(name: string, client: string, outcome: string, version = '1.0.0') {
  return reportOutcome(name, {
    client,
    version,
    outcome,
    errorClass: outcome === 'installed' ? undefined : 'health-check',
  })
}

describe('RolloutCoordinator stages', () => {
  it('advances 1 → 10 → 50 → 100 % on real alarms; earlier cohorts stay in', async () => {
    await publishSingle('ro-adv', '1.0.0', bytesOf(100, 1))
    const started = await startRollout('ro-adv', { version: '1.0.0', stages: STAGES })
    expect(started.status).toBe(201)
    const first = RolloutStatus.parse(await started.json())
    expect(first).toMatchObject({ state: 'running', currentStage: 0, currentPercent: 1 })
    const stageStart = Date.parse(first.progress[0]?.startedAt ?? '')
    expect(Date.parse(first.nextChangeAt ?? '')).toBe(stageStart + HOUR)

    const [early] = clientsBetween('ro-adv', '1.0.0', 0, 0.01)
    const [middle] = clientsBetween('ro-adv', '1.0.0', 0.1, 0.5)
    const [late] = clientsBetween('ro-adv', '1.0.0', 0.5, 1)
    const e = early ?? ''
    const m = middle ?? ''
    const l = late ?? ''
    expect(await check('ro-adv', e)).toMatchObject({
      in: true,
      version: '1.0.0',
      stage: 0,
      stageExpectedAt: null,
    })
    const waiting = await check('ro-adv', m)
    expect(waiting).toMatchObject({ in: false, version: null, stage: 2, targetVersion: '1.0.0' })
    expect(Date.parse(waiting.stageExpectedAt ?? '')).toBe(stageStart + 2 * HOUR)

    expect(await runDurableObjectAlarm(coordinatorStub('ro-adv'))).toBe(true)
    expect((await rolloutStatus('ro-adv')).currentPercent).toBe(10)
    expect((await check('ro-adv', m)).in).toBe(false)
    expect(await runDurableObjectAlarm(coordinatorStub('ro-adv'))).toBe(true)
    expect((await check('ro-adv', m)).in).toBe(true)
    expect((await check('ro-adv', e)).in).toBe(true)
    expect((await check('ro-adv', l)).in).toBe(false)
    expect(await runDurableObjectAlarm(coordinatorStub('ro-adv'))).toBe(true)
    expect((await check('ro-adv', l)).in).toBe(true)
    // After the last stage's duration the rollout completes and no alarm is left.
    expect(await runDurableObjectAlarm(coordinatorStub('ro-adv'))).toBe(true)
    const done = await rolloutStatus('ro-adv')
    expect(done.state).toBe('completed')
    expect(done.nextChangeAt).toBeNull()
    expect(done.history.map((h) => h.event)).toEqual([
      'scheduled',
      'stage',
      'stage',
      'stage',
      'stage',
      'completed',
    ])
    expect(await runDurableObjectAlarm(coordinatorStub('ro-adv'))).toBe(false)
  })

  it('waits for a future start time, then starts on the alarm', async () => {
    await publishSingle('ro-later', '1.0.0', bytesOf(100, 2))
    const startAt = new Date(Date.now() + 2 * HOUR).toISOString()
    const res = await startRollout('ro-later', { version: '1.0.0', startAt, stages: STAGES })
    expect(RolloutStatus.parse(await res.json())).toMatchObject({ state: 'scheduled', currentStage: null })
    const [someone] = clientsBetween('ro-later', '1.0.0', 0, 0.01)
    const before = await check('ro-later', someone ?? '')
    expect(before).toMatchObject({ in: false, stage: 0 })
    expect(before.stageExpectedAt).toBe(new Date(Date.parse(startAt)).toISOString())
    expect(await runDurableObjectAlarm(coordinatorStub('ro-later'))).toBe(true)
    expect(await check('ro-later', someone ?? '')).toMatchObject({ in: true, state: 'running' })
  })

  it('pauses (no alarm, admitted clients stay in), resumes with the time left, aborts for good', async () => {
    await publishSingle('ro-pause', '1.0.0', bytesOf(100, 3))
    await startRollout('ro-pause', {
      version: '1.0.0',
      stages: TEN_THEN_ALL,
    })
    const [inside] = clientsBetween('ro-pause', '1.0.0', 0, 0.1)
    const [outside] = clientsBetween('ro-pause', '1.0.0', 0.1, 1)
    const paused = await control('ro-pause', 'pause', { reason: 'looking at crash reports' })
    expect(paused.status).toBe(200)
    const pausedStatus = RolloutStatus.parse(await paused.json())
    expect(pausedStatus).toMatchObject({ state: 'paused', nextChangeAt: null })
    // The status says what resume gives back: (about) the hour the stage had left.
    expect(pausedStatus.pausedRemainingMs).toBeGreaterThan(HOUR - 60_000)
    expect(pausedStatus.pausedRemainingMs).toBeLessThanOrEqual(HOUR)
    expect(await runDurableObjectAlarm(coordinatorStub('ro-pause'))).toBe(false)
    expect(await check('ro-pause', inside ?? '')).toMatchObject({ in: true })
    expect(await check('ro-pause', outside ?? '')).toMatchObject({ in: false, stageExpectedAt: null })
    expect((await control('ro-pause', 'pause')).status).toBe(409)

    const resumed = RolloutStatus.parse(await (await control('ro-pause', 'resume')).json())
    expect(resumed).toMatchObject({ state: 'running', pausedRemainingMs: null })
    // The stage keeps (about) the hour it had left.
    expect(Date.parse(resumed.nextChangeAt ?? '') - Date.now()).toBeGreaterThan(HOUR - 60_000)
    expect(await runDurableObjectAlarm(coordinatorStub('ro-pause'))).toBe(true)
    expect(await check('ro-pause', outside ?? '')).toMatchObject({ in: true })

    const aborted = RolloutStatus.parse(
      await (await control('ro-pause', 'abort', { reason: 'bad build' })).json(),
    )
    expect(aborted.state).toBe('aborted')
    expect(aborted.history.at(-1)).toMatchObject({ event: 'aborted', detail: 'bad build' })
    expect(await check('ro-pause', inside ?? '')).toMatchObject({ in: false, version: null })
    expect(await runDurableObjectAlarm(coordinatorStub('ro-pause'))).toBe(false)
    expect((await control('ro-pause', 'resume')).status).toBe(409)
    expect((await control('ro-pause', 'abort')).status).toBe(409)
    // A new rollout replaces the aborted one (and its outcomes).
    expect(
      (await startRollout('ro-pause', { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }] }))
        .status,
    ).toBe(201)
  })
})

describe('RolloutCoordinator failure halts (Wilson interval)', () => {
  const ALL = [{ percent: 100, durationMs: HOUR }]

  it('does not halt on 1 failure of 2, nor on 2 of 8 (25 % raw, interval still reaches below 10 %)', async () => {
    await publishSingle('ro-wilson', '1.0.0', bytesOf(100, 4))
    await startRollout('ro-wilson', { version: '1.0.0', stages: ALL, maxFailureRate: 0.1, minSample: 5 })
    const clients = clientsBetween('ro-wilson', '1.0.0', 0, 1, 9)
    const id = (i: number) => clients[i] ?? ''
    expect((await report('ro-wilson', id(0), 'installed')).status).toBe(202)
    expect((await report('ro-wilson', id(1), 'failed')).status).toBe(202)
    let s = await rolloutStatus('ro-wilson')
    expect(s.state).toBe('running')
    expect(s.overall).toMatchObject({ total: 2, failures: 1, decision: 'insufficient-data' })

    for (let i = 2; i < 7; i++) await report('ro-wilson', id(i), 'installed')
    await report('ro-wilson', id(7), 'rolled-back')
    s = await rolloutStatus('ro-wilson')
    expect(s.overall).toMatchObject({ total: 8, failures: 2, failureRate: 0.25, decision: 'continue' })
    expect(s.overall.interval.lower).toBeLessThan(0.1)
    expect(s.state).toBe('running')

    // One more failure: 3 of 9, the lower bound (~12 %) passes 10 %: halted.
    const receipt = OutcomeReceipt.parse(await (await report('ro-wilson', id(8), 'failed')).json())
    expect(receipt).toMatchObject({ counted: true, state: 'halted' })
    s = await rolloutStatus('ro-wilson')
    expect(s.state).toBe('halted')
    expect(s.haltedReason).toMatch(/^stage 0 cohort: 3 of 9 failed; 95 % Wilson interval \[12\.\d %/)
    expect(s.progress[0]?.stats).toMatchObject({ total: 9, failures: 3, decision: 'halt' })
    expect(s.errorClasses).toEqual([{ errorClass: 'health-check', count: 3 }])
    expect(s.history.at(-1)).toMatchObject({ event: 'halted', stage: 0 })
    expect(s.nextChangeAt).toBeNull()
    expect(await runDurableObjectAlarm(coordinatorStub('ro-wilson'))).toBe(false)
    expect(await check('ro-wilson', id(0))).toMatchObject({ in: false, version: null, state: 'halted' })
    expect((await control('ro-wilson', 'resume')).status).toBe(409)
  })

  it('never halts on one failing device, even under a limit one failure of the sample exceeds', async () => {
    await publishSingle('ro-lone', '1.0.0', bytesOf(100, 7))
    // 1 failure of 5: the Wilson lower bound is 3.6 %, above a 1 % limit; still one device's word.
    await startRollout('ro-lone', { version: '1.0.0', stages: ALL, maxFailureRate: 0.01, minSample: 5 })
    const clients = clientsBetween('ro-lone', '1.0.0', 0, 1, 6)
    const id = (i: number) => clients[i] ?? ''
    for (let i = 0; i < 4; i++) await report('ro-lone', id(i), 'installed')
    const lone = OutcomeReceipt.parse(await (await report('ro-lone', id(4), 'failed')).json())
    expect(lone).toMatchObject({ counted: true, state: 'running' })
    const s = await rolloutStatus('ro-lone')
    expect(s.overall).toMatchObject({ total: 5, failures: 1, decision: 'continue' })
    expect(s.overall.interval.lower).toBeGreaterThan(0.01)
    // A second failing device is evidence: halted.
    const second = OutcomeReceipt.parse(await (await report('ro-lone', id(5), 'rolled-back')).json())
    expect(second).toMatchObject({ counted: true, state: 'halted' })
  })

  it('counts one client once (latest outcome wins) and rate-limits it', async () => {
    await publishSingle('ro-dedup', '1.0.0', bytesOf(100, 5))
    await startRollout('ro-dedup', { version: '1.0.0', stages: ALL, maxFailureRate: 0.01, minSample: 5 })
    const [noisy] = clientsBetween('ro-dedup', '1.0.0', 0, 1)
    const receipts: boolean[] = []
    for (let i = 0; i < 5; i++) {
      const res = await report('ro-dedup', noisy ?? '', 'failed')
      expect(res.status).toBe(202)
      receipts.push(OutcomeReceipt.parse(await res.json()).counted)
    }
    expect(receipts).toEqual([true, false, false, false, false])
    // installed after failed: the latest outcome replaces the earlier one.
    expect((await report('ro-dedup', noisy ?? '', 'installed')).status).toBe(202)
    const limited = await report('ro-dedup', noisy ?? '', 'failed')
    expect(limited.status).toBe(429)
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
    const s = await rolloutStatus('ro-dedup')
    expect(s.state).toBe('running')
    expect(s.overall).toMatchObject({
      total: 1,
      failures: 0,
      counts: { installed: 1, failed: 0, 'rolled-back': 0 },
    })
  })

  it('refuses outcomes from clients not admitted yet and for another version', async () => {
    await publishSingle('ro-gate', '1.0.0', bytesOf(100, 6))
    await startRollout('ro-gate', {
      version: '1.0.0',
      stages: TEN_THEN_ALL,
    })
    const [outside] = clientsBetween('ro-gate', '1.0.0', 0.1, 1)
    const [inside] = clientsBetween('ro-gate', '1.0.0', 0, 0.1)
    expect((await report('ro-gate', outside ?? '', 'failed')).status).toBe(409)
    expect((await report('ro-gate', inside ?? '', 'failed', '9.9.9')).status).toBe(409)
    const ok = OutcomeReceipt.parse(await (await report('ro-gate', inside ?? '', 'installed')).json())
    expect(ok).toEqual({ counted: true, stage: 0, state: 'running' })
    expect((await rolloutStatus('ro-gate')).progress.map((p) => p.stats.total)).toEqual([1, 0])
  })
})

describe('RolloutCoordinator yank marks', () => {
  it('parses the version the yank route names before it stores a mark', async () => {
    const stub = coordinatorStub('ro-yank-input')
    const rejection = async (call: Promise<unknown>) => {
      try {
        await call
        return null
      } catch (error) {
        return String(error)
      }
    }
    expect(await rejection(stub.abortVersion('not-a-version', 'yanked'))).toMatch(/ZodError/)
    expect(await rejection(stub.abortVersion(`1.0.0-${'x'.repeat(100_000)}`, 'yanked'))).toMatch(/ZodError/)
    expect(await rejection(stub.restoreVersion('1.0', 0))).toMatch(/ZodError/)
    // Nothing was stored: the object made no tables (a start makes them).
    const tables = await runInDurableObject(stub, (_instance, state) =>
      state.storage.sql.exec("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").toArray(),
    )
    expect(tables).toHaveLength(0)
  })
})
