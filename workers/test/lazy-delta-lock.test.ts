import { env } from 'cloudflare:workers'
import { describe, expect, it, vi } from 'vitest'
import { lockKey } from '../publish/lazy-delta.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { bytesOf, publishSingle, stalledAt } from './publish-helpers.ts'

describe('lazy delta generation lock', () => {
  it('a generation that ran past the lock staleness leaves the lock that took its place alone', async () => {
    const name = 'lazy-owner'
    const v1 = bytesOf(60_000, 51)
    const v2 = v1.slice()
    v2.set(bytesOf(2000, 52), 30_000)
    await publishSingle(name, '1.0.0', v1, 1)
    await publishSingle(name, '1.1.0', v2, 2)
    const path = `/v1/deltas/${name}/1.0.0/1.1.0`
    const lock = lockKey(name, '1.0.0', '1.1.0', 'vcdiff')

    // A takes the lock and stalls at its first blob read...
    const a = stalledAt('get', keys.blob(name, '1.0.0'))
    const first = callApp(path, {}, { ...env, ARTIFACTS: a.bucket })
    await a.atGate
    const aLock = await env.ARTIFACTS.head(lock)
    expect(aLock).not.toBeNull()

    // ...for over a minute: B finds A's lock stale, takes it over and stalls at its own first blob read.
    const now = Date.now()
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => now + 120_000)
    const b = stalledAt('get', keys.blob(name, '1.0.0'))
    let second: ReturnType<typeof callApp>
    try {
      second = callApp(path, {}, { ...env, ARTIFACTS: b.bucket })
      await b.atGate
    } finally {
      clock.mockRestore()
    }
    const bLock = await env.ARTIFACTS.head(lock)
    expect(bLock?.etag).toBeDefined()
    expect(bLock?.etag).not.toBe(aLock?.etag)

    // A finishes: its cleanup must not delete B's lock, or a third request would generate alongside B.
    a.release()
    const made = await first
    expect(made.response.status).toBe(200)
    expect(made.response.headers.get('x-deltaport-generated')).toBe('lazy')
    expect((await env.ARTIFACTS.head(lock))?.etag).toBe(bLock?.etag)

    // B finishes and deletes its own lock.
    b.release()
    const again = await second
    expect(again.response.status).toBe(200)
    expect(await env.ARTIFACTS.head(lock)).toBeNull()
  })
})
