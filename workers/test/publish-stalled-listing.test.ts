import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { pruneStorage } from '../retention/prune.ts'
import { COMMIT_ABANDONED_AFTER_MS } from '../storage/artifact-store.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { injectedFault } from './faulty-r2.ts'
import { bytesOf, commitThrough, envelopeFor, servedAndListed, stalledAt } from './publish-helpers.ts'

/**
 * The two-fault case ADR 0022 left open (amended 2026-11-26, "a listed version whose commit died after
 * a late index update"): commit A stalls between its claim check and its index write, attempt B takes
 * the version over (replacing A's claim, and withdrawing its own when its index update fails), A's
 * index write lands and A dies before putting its manifest back. The index lists A's serial; the key
 * holds B's marked claim, or nothing. Real R2 (the edge project's bindings) throughout.
 */

const later = () => Date.now() + COMMIT_ABANDONED_AFTER_MS + 1000

/**
 * Commit A: stalls just before its index write until released; with `dies`, nothing it does after
 * that write reaches R2 (the worker running it died), so it cannot put its manifest back.
 */
function stalledCommit(name: string, dies: boolean) {
  const index = keys.index(name)
  const stalled = stalledAt('put', index)
  let dead = false
  const bucket = new InterceptedBucket(stalled.bucket, async (op, target, run) => {
    if (dead) throw injectedFault(op, target)
    const result = await run()
    if (dies && op === 'put' && target === index) dead = true
    return result
  })
  return { ...stalled, bucket }
}

/** Commit B's bucket: its index write fails (a storage fault), so it withdraws its own claim. */
function indexWriteFails(name: string) {
  return new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
    if (op === 'put' && target === keys.index(name)) throw injectedFault(op, target)
    return run()
  })
}

const config = RuntimeConfig.parse({})

// The tests of this file share one bucket, and a retention pass looks at all of it: reports are checked
// for the test's own key only.

describe('a stalled commit whose late index write lists its version (ADR 0022, amended 2026-11-26)', () => {
  it('puts its manifest back when the other attempt withdrew its own claim meanwhile', async () => {
    const body = bytesOf(1100, 31)
    const first = await envelopeFor('latelist1', '1.0.0', body, { serial: 1 })
    const second = await envelopeFor('latelist1', '1.0.0', body, { serial: 2 })
    const a = stalledCommit('latelist1', false)
    const committingA = commitThrough(a.bucket, first)
    await a.atGate
    // B replaces A's claim, its index write fails, it withdraws its claim: the key is empty.
    expect(await commitThrough(indexWriteFails('latelist1'), second, later())).toBeInstanceOf(Error)
    expect(await env.ARTIFACTS.head(keys.manifest('latelist1', '1.0.0'))).toBeNull()
    a.release()
    expect(await committingA).toBe('committed')
    const end = await servedAndListed('latelist1', '1.0.0')
    expect(end.entry?.serial).toBe(1)
    expect(end.status).toBe(200)
    expect(end.text).toBe(JSON.stringify(first))
  })

  it('and dies before putting it back over the other attempt’s claim is restored by retention', async () => {
    const body = bytesOf(1200, 32)
    const first = await envelopeFor('latelist2', '1.0.0', body, { serial: 1 })
    const second = await envelopeFor('latelist2', '1.0.0', body, { serial: 2 })
    const a = stalledCommit('latelist2', true)
    const committingA = commitThrough(a.bucket, first)
    await a.atGate
    const b = stalledAt('put', keys.index('latelist2'))
    const committingB = commitThrough(b.bucket, second, later())
    await b.atGate
    a.release()
    // A's index write landed; A died before its repair (its commit reports success, best effort).
    expect(await committingA).toBe('committed')
    b.release()
    expect(await committingB).toBe(409)
    // Listed with A's serial, the key holds B's marked claim: unservable (never B's manifest), and said
    // to be repaired (503), not a 404 that would contradict the index.
    const broken = await servedAndListed('latelist2', '1.0.0')
    expect(broken.entry?.serial).toBe(1)
    expect(broken.status).toBe(503)

    const report = await pruneStorage(env.ARTIFACTS, config, Date.now())
    const key = keys.manifest('latelist2', '1.0.0')
    expect(report.manifestsRestored).toContain(key)
    expect(report.manifestsUnservable).not.toContain(key)
    const end = await servedAndListed('latelist2', '1.0.0')
    expect(end.status).toBe(200)
    expect(end.text).toBe(JSON.stringify(first))
    // Put back as published (unmarked): served without an index read from now on.
    expect((await env.ARTIFACTS.head(key))?.customMetadata).toEqual({})
    const again = await pruneStorage(env.ARTIFACTS, config, Date.now())
    expect(again.manifestsRestored).not.toContain(key)
    expect(again.manifestsUnservable).not.toContain(key)
  })

  it('and dies after the other attempt withdrew its claim is restored by retention', async () => {
    const body = bytesOf(1300, 33)
    const first = await envelopeFor('latelist3', '1.0.0', body, { serial: 1 })
    const second = await envelopeFor('latelist3', '1.0.0', body, { serial: 2 })
    const a = stalledCommit('latelist3', true)
    const committingA = commitThrough(a.bucket, first)
    await a.atGate
    expect(await commitThrough(indexWriteFails('latelist3'), second, later())).toBeInstanceOf(Error)
    a.release()
    expect(await committingA).toBe('committed')
    const key = keys.manifest('latelist3', '1.0.0')
    expect(await env.ARTIFACTS.head(key)).toBeNull()
    expect((await servedAndListed('latelist3', '1.0.0')).status).toBe(503)

    const report = await pruneStorage(env.ARTIFACTS, config, Date.now())
    expect(report.manifestsRestored).toContain(key)
    const end = await servedAndListed('latelist3', '1.0.0')
    expect(end.status).toBe(200)
    expect(end.text).toBe(JSON.stringify(first))
  })

  it('with nothing to restore from is reported, and the other attempt’s claim is never served', async () => {
    const body = bytesOf(1400, 34)
    const listedOne = await envelopeFor('latelist4', '1.0.0', body, { serial: 1 })
    const claim = await envelopeFor('latelist4', '1.0.0', body, { serial: 2 })
    // What the case leaves when the kept claim is gone too (an earlier release took over, which keeps
    // none): the index lists serial 1, the key holds serial 2's claim, marked.
    expect(await commitThrough(env.ARTIFACTS, listedOne)).toBe('committed')
    const key = keys.manifest('latelist4', '1.0.0')
    await env.ARTIFACTS.put(key, JSON.stringify(claim), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    // A kept claim of the same sha256 under another serial does not match the entry either.
    await env.ARTIFACTS.put(keys.displacedClaim('latelist4', '1.0.0', 'b'.repeat(64)), JSON.stringify(claim))
    const report = await pruneStorage(env.ARTIFACTS, config, Date.now())
    expect(report.manifestsRestored).not.toContain(key)
    expect(report.manifestsUnservable).toContain(key)
    expect((await env.ARTIFACTS.get(key))?.customMetadata).toEqual({ state: 'committing' })
    expect((await servedAndListed('latelist4', '1.0.0')).status).toBe(503)
  })
})
