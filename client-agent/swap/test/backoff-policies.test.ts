import { describe, expect, it } from 'vitest'
import { CrashHistory } from '../crash-history.ts'
import { DeferredSwaps } from '../deferred-swaps.ts'

describe('DeferredSwaps', () => {
  const deferred = () => new DeferredSwaps({ deferRetryMs: 30_000, deferRetryMaxMs: 100_000 })

  it('doubles the wait per deferral of a version up to the cap, and refuses it only while it waits', () => {
    const swaps = deferred()
    expect(swaps.defer('2.0.0', 0)).toEqual({ attempt: 1, inMs: 30_000 })
    expect(swaps.defer('2.0.0', 0)).toEqual({ attempt: 2, inMs: 60_000 })
    expect(swaps.defer('2.0.0', 1_000)).toEqual({ attempt: 3, inMs: 100_000 })
    expect(swaps.waiting(100_999)).toEqual(['2.0.0'])
    expect(swaps.waiting(101_000)).toEqual([])
    expect(swaps.list()).toEqual([{ version: '2.0.0', attempt: 3, retryAt: 101_000 }])
    // Each version backs off on its own; one that ran to an outcome starts over.
    expect(swaps.defer('2.1.0', 0)).toEqual({ attempt: 1, inMs: 30_000 })
    swaps.forget('2.0.0')
    expect(swaps.defer('2.0.0', 0)).toEqual({ attempt: 1, inMs: 30_000 })
  })

  it('says why, that the version is not held against, and the whole policy', () => {
    const swaps = deferred()
    const line = swaps.describe(
      '2.0.0',
      { errorClass: 'drain', detail: 'timed out' },
      swaps.defer('2.0.0', 0),
    )
    expect(line).toBe(
      'swap to 2.0.0 deferred (drain): timed out; not held against 2.0.0, retried in 30 s (attempt 1; the wait doubles from 30 s up to 100 s)',
    )
  })

  it('keeps the 64 newest deferrals: versions passed over by a newer release do not pile up', () => {
    const swaps = deferred()
    for (let i = 0; i < 1000; i++) swaps.defer(`1.0.${i}`, 0)
    const kept = swaps.list(0).map((d) => d.version)
    expect(kept).toHaveLength(64)
    expect(kept[0]).toBe('1.0.936')
    expect(kept.at(-1)).toBe('1.0.999')
  })

  it('waits no longer than deferRetryMaxMs after the wall clock went back', () => {
    const swaps = deferred()
    swaps.defer('2.0.0', 30 * 86_400_000)
    // The clock is stepped back 30 days: the version is offered again within the cap, not in 30 days.
    expect(swaps.waiting(1_000)).toEqual(['2.0.0'])
    expect(swaps.list(1_000)).toEqual([{ version: '2.0.0', attempt: 1, retryAt: 101_000 }])
    expect(swaps.waiting(101_000)).toEqual([])
  })

  it('stays finite after very many deferrals', () => {
    const swaps = deferred()
    let last = { attempt: 0, inMs: 0 }
    for (let i = 0; i < 5_000; i++) last = swaps.defer('2.0.0', 0)
    expect(last).toEqual({ attempt: 5_000, inMs: 100_000 })
  })
})

describe('CrashHistory', () => {
  const settings = {
    crashLoopExits: 3,
    crashLoopWindowMs: 60_000,
    restartBackoffMs: 200,
    restartBackoffMaxMs: 30_000,
  }

  it('doubles the restart delay with recent exits and failed attempts, up to the cap', () => {
    const history = new CrashHistory(settings)
    expect(history.restartDelay(0)).toBe(200)
    history.noteExit('1.0.0', 0)
    expect(history.restartDelay(0)).toBe(200)
    expect(history.restartDelay(1)).toBe(400)
    history.noteExit('1.0.0', 1_000)
    history.noteExit('1.0.0', 2_000)
    expect(history.restartDelay(0)).toBe(800)
    expect(history.restartDelay(40)).toBe(30_000)
    // Exits older than the window no longer count.
    history.noteExit('1.0.0', 61_500)
    expect(history.restartDelay(0)).toBe(400)
  })

  it('forgets the exits of a version once another one exits', () => {
    const history = new CrashHistory(settings)
    for (const t of [0, 1, 2]) history.noteExit('1.0.0', t)
    history.noteExit('1.1.0', 3)
    expect(history.restartDelay(0)).toBe(200)
    expect(history.loopingSince(0, 3)).toBe(false)
  })

  it('calls it a crash loop at crashLoopExits exits since the switch, within the window only', () => {
    const history = new CrashHistory(settings)
    history.noteExit('2.0.0', 500) // before the switch at 1 000: not counted
    history.noteExit('2.0.0', 1_500)
    history.noteExit('2.0.0', 2_000)
    expect(history.loopingSince(1_000, 2_000)).toBe(false)
    history.noteExit('2.0.0', 2_500)
    expect(history.loopingSince(1_000, 2_500)).toBe(true)
    expect(history.loopingSince(1_000, 61_001)).toBe(false)
  })
})
