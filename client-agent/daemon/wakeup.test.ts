import { describe, expect, it } from 'vitest'
import { Wakeup } from './wakeup.ts'

describe('Wakeup', () => {
  it('ends a wait under way at once, and a wait with nothing to end it runs its length', async () => {
    const wakeup = new Wakeup()
    const started = performance.now()
    const waiting = wakeup.wait(60_000, new AbortController().signal)
    setTimeout(() => wakeup.wake(), 20)
    expect(await waiting).toBe('woken')
    expect(performance.now() - started).toBeLessThan(10_000)
    expect(await wakeup.wait(30, new AbortController().signal)).toBe('elapsed')
  })

  it('keeps a wake that came between waits (during a cycle) for the next wait, once', async () => {
    const wakeup = new Wakeup()
    wakeup.wake()
    wakeup.wake()
    expect(await wakeup.wait(60_000, new AbortController().signal)).toBe('woken')
    expect(await wakeup.wait(30, new AbortController().signal)).toBe('elapsed')
  })

  it('ends on abort, already aborted or aborted while waiting, and a later wake is kept for the next wait', async () => {
    const wakeup = new Wakeup()
    const stopped = new AbortController()
    stopped.abort()
    expect(await wakeup.wait(60_000, stopped.signal)).toBe('elapsed')
    const stopping = new AbortController()
    const waiting = wakeup.wait(60_000, stopping.signal)
    setTimeout(() => stopping.abort(), 20)
    expect(await waiting).toBe('elapsed')
    wakeup.wake()
    expect(await wakeup.wait(60_000, new AbortController().signal)).toBe('woken')
  })
})
