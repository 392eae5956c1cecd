import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { versionEntry } from '../../schemas/artifact-index.ts'
import app from '../index.ts'
import { repairListedVersion } from '../retention/stalled-commits.ts'
import { COMMIT_ABANDONED_AFTER_MS, readIndex } from '../storage/artifact-store.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { REPAIR_CLAIM_MS, repairClaimKey } from '../storage/repair-on-read.ts'
import { injectedFault } from './faulty-r2.ts'
import { bytesOf, commitThrough, envelopeFor, publishSingle, sha256, stalledAt } from './publish-helpers.ts'

/**
 * The repair on read (ADR 0022, amended 2026-11-26): a listed version whose manifest is not servable
 * answers 503 `manifest-being-repaired`, and that answer starts the repair of the one version in the
 * background (waitUntil), at most one per version per claim interval, never while a commit of it may
 * still be alive. Real R2 (the edge project's bindings) and the real app throughout; the clock is moved
 * past COMMIT_ABANDONED_AFTER_MS to make a commit dead, as the lazy-delta lock test does.
 */

afterEach(() => {
  vi.restoreAllMocks()
})

/** The edge's clock, moved past the age at which a commit counts as dead. */
function commitsDead() {
  const now = Date.now() + COMMIT_ABANDONED_AFTER_MS + 5000
  vi.spyOn(Date, 'now').mockImplementation(() => now)
}

/** A request to the app in this isolate; `done` settles once its background work (waitUntil) has. */
async function get(path: string, bindings: Env = env) {
  const ctx = createExecutionContext()
  const response = await app.fetch(new Request(`https://edge.test${path}`), bindings, ctx)
  const text = await response.text()
  return { status: response.status, text, done: waitOnExecutionContext(ctx) }
}

/** GETs `path` until it answers 200, a bounded number of times (the background work has no other sign). */
async function servedWithin(path: string, attempts = 50) {
  for (let attempt = 0; attempt < attempts; attempt++) {
    const answer = await get(path)
    await answer.done
    if (answer.status === 200) return answer.text
    await scheduler.wait(20)
  }
  return null
}

/** What the two-fault case leaves (as in manifest-being-repaired.test.ts): listed, key empty, claim kept. */
async function listedWithoutManifest(name: string, seed: number) {
  const envelope = await publishSingle(name, '1.0.0', bytesOf(1500, seed))
  const raw = JSON.stringify(envelope)
  await env.ARTIFACTS.delete(keys.manifest(name, '1.0.0'))
  await env.ARTIFACTS.put(
    keys.displacedClaim(name, '1.0.0', await sha256(new TextEncoder().encode(raw))),
    raw,
  )
  return raw
}

describe('a listed version whose manifest is not servable, repaired on read', () => {
  it('is restored by the first 503 once its commit is dead: the next GET serves it', async () => {
    const raw = await listedWithoutManifest('onread1', 71)
    commitsDead()
    const path = '/v1/artifacts/onread1/1.0.0/manifest'
    const first = await get(path)
    // The request that meets it still answers 503; the repair runs after the answer.
    expect(first.status).toBe(503)
    expect(first.text).toContain('manifest-being-repaired')
    expect(await servedWithin(path)).toBe(raw)
    await first.done
    // Put back as published (unmarked), and the claim marks the interval.
    expect((await env.ARTIFACTS.head(keys.manifest('onread1', '1.0.0')))?.customMetadata).toEqual({})
    expect(await env.ARTIFACTS.head(repairClaimKey('onread1', '1.0.0'))).not.toBeNull()
  })

  it('is repaired by a 503 of a route that finds the version through its manifest (the blob)', async () => {
    const raw = await listedWithoutManifest('onread2', 72)
    commitsDead()
    const blob = await get('/v1/artifacts/onread2/1.0.0/blob')
    expect(blob.status).toBe(503)
    await blob.done
    expect(await servedWithin('/v1/artifacts/onread2/1.0.0/manifest')).toBe(raw)
  })

  it('starts one repair for many concurrent 503s', async () => {
    const raw = await listedWithoutManifest('onread3', 73)
    commitsDead()
    // The repair that gets through stalls where it looks for the kept claim, so every other request meets
    // the 503 (and reaches for the claim) while it runs. Each repair that gets past the claim lists there.
    const prefix = keys.displacedClaims('onread3', '1.0.0')
    const stalled = stalledAt('list', prefix)
    let repairs = 0
    const counting = new InterceptedBucket(stalled.bucket, (op, key, run) => {
      if (op === 'list' && key === prefix) repairs++
      return run()
    })
    const path = '/v1/artifacts/onread3/1.0.0/manifest'
    const crowd = Array.from({ length: 8 }, () => get(path, { ...env, ARTIFACTS: counting }))
    const answers = await Promise.all(crowd)
    expect(answers.map((answer) => answer.status)).toEqual(Array(8).fill(503))
    await stalled.atGate
    // Every request but the repairing one finishes its background work: turned away by the claim.
    let settled = 0
    for (const answer of answers) void answer.done.then(() => settled++)
    for (let attempt = 0; attempt < 200 && settled < 7; attempt++) await scheduler.wait(10)
    expect(settled).toBe(7)
    expect(repairs).toBe(1)
    stalled.release()
    await Promise.all(answers.map((answer) => answer.done))
    expect(repairs).toBe(1)
    expect(await servedWithin(path)).toBe(raw)
  })

  it('leaves a version alone while the commit that listed it may still be alive', async () => {
    // The two-fault case the real way (as publish-stalled-listing.test.ts): commit A stalls before its
    // index write, attempt B takes the version over, A's index write lands; A is alive but not yet past
    // it (it stalls again), so the key holds B's marked claim and the version answers 503.
    const name = 'onread4'
    const body = bytesOf(1200, 74)
    const first = await envelopeFor(name, '1.0.0', body, { serial: 1 })
    const second = await envelopeFor(name, '1.0.0', body, { serial: 2 })
    const index = keys.index(name)
    const beforeIndex = stalledAt('put', index)
    let afterIndex: () => void = () => undefined
    const resumed = new Promise<void>((resolve) => {
      afterIndex = resolve
    })
    let listed: () => void = () => undefined
    const indexWritten = new Promise<void>((resolve) => {
      listed = resolve
    })
    let wrote = false
    const a = new InterceptedBucket(beforeIndex.bucket, async (op, target, run) => {
      if (wrote) await resumed
      const result = await run()
      if (op === 'put' && target === index) {
        wrote = true
        listed()
      }
      return result
    })
    const committingA = commitThrough(a, first)
    await beforeIndex.atGate
    const b = stalledAt('put', index)
    const committingB = commitThrough(b.bucket, second, Date.now() + COMMIT_ABANDONED_AFTER_MS + 1000)
    await b.atGate
    beforeIndex.release()
    await indexWritten
    const key = keys.manifest(name, '1.0.0')
    const claimOfB = await env.ARTIFACTS.head(key)
    expect(claimOfB?.customMetadata).toEqual({ state: 'committing' })

    const path = `/v1/artifacts/${name}/1.0.0/manifest`
    const answer = await get(path)
    expect(answer.status).toBe(503)
    await answer.done
    // Not touched: B's claim is still there, A's envelope was not put back by the read.
    expect((await env.ARTIFACTS.head(key))?.etag).toBe(claimOfB?.etag)

    // A goes on and puts its own manifest back; B's index update is refused.
    afterIndex()
    expect(await committingA).toBe('committed')
    b.release()
    expect(await committingB).toBe(409)
    expect(await servedWithin(path)).toBe(JSON.stringify(first))
  })

  it('leaves a version alone while another attempt’s claim at its key is younger than a dead commit', async () => {
    const raw = await listedWithoutManifest('onread7', 77)
    const key = keys.manifest('onread7', '1.0.0')
    await scheduler.wait(100)
    const claim = await envelopeFor('onread7', '1.0.0', bytesOf(1500, 77), { serial: 9 })
    await env.ARTIFACTS.put(key, JSON.stringify(claim), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    const indexAt = (await env.ARTIFACTS.head(keys.index('onread7')))?.uploaded.getTime() ?? 0
    const claimed = await env.ARTIFACTS.head(key)
    const claimAt = claimed?.uploaded.getTime() ?? 0
    expect(claimAt - indexAt).toBeGreaterThan(20)
    // The clock where the index is past COMMIT_ABANDONED_AFTER_MS and the other attempt's claim is not.
    const clock = vi
      .spyOn(Date, 'now')
      .mockImplementation(() => indexAt + COMMIT_ABANDONED_AFTER_MS + Math.floor((claimAt - indexAt) / 2))
    const path = '/v1/artifacts/onread7/1.0.0/manifest'
    const answer = await get(path)
    expect(answer.status).toBe(503)
    await answer.done
    expect((await env.ARTIFACTS.head(key))?.etag).toBe(claimed?.etag)

    // Once that claim is as old too, and the claim interval is over, the next 503 repairs it.
    const later = claimAt + COMMIT_ABANDONED_AFTER_MS + REPAIR_CLAIM_MS + 1000
    clock.mockImplementation(() => later)
    expect(await servedWithin(path)).toBe(raw)
  })

  it('repairs on the first retry after the commit is dead, even when its last 503 claimed the version', async () => {
    // A 503 less than a claim interval before the commit turns dead takes the claim and leaves the
    // version alone (the commit may be alive). That claim must not hold the repair off for its whole
    // interval: a retry once the commit is COMMIT_ABANDONED_AFTER_MS dead is served (README, ADR 0015).
    const raw = await listedWithoutManifest('onread8', 78)
    const indexAt = (await env.ARTIFACTS.head(keys.index('onread8')))?.uploaded.getTime() ?? 0
    const clock = vi
      .spyOn(Date, 'now')
      .mockImplementation(() => indexAt + COMMIT_ABANDONED_AFTER_MS - REPAIR_CLAIM_MS / 3)
    const path = '/v1/artifacts/onread8/1.0.0/manifest'
    const early = await get(path)
    expect(early.status).toBe(503)
    await early.done
    expect(await env.ARTIFACTS.head(keys.manifest('onread8', '1.0.0'))).toBeNull()
    expect(await env.ARTIFACTS.head(repairClaimKey('onread8', '1.0.0'))).not.toBeNull()

    clock.mockImplementation(() => indexAt + COMMIT_ABANDONED_AFTER_MS + 1000)
    expect(await servedWithin(path, 3)).toBe(raw)
  })

  it('keeps answering 503 and logs once per claim interval what to do when nothing can restore it', async () => {
    await publishSingle('onread5', '1.0.0', bytesOf(1500, 75))
    await env.ARTIFACTS.delete(keys.manifest('onread5', '1.0.0'))
    commitsDead()
    const logged: string[] = []
    const log = console.log
    vi.spyOn(console, 'log').mockImplementation((line: unknown, ...rest: unknown[]) => {
      if (typeof line === 'string' && line.includes('could not be restored')) logged.push(line)
      else log(line, ...rest)
    })
    const path = '/v1/artifacts/onread5/1.0.0/manifest'
    for (let attempt = 0; attempt < 3; attempt++) {
      const answer = await get(path)
      expect(answer.status).toBe(503)
      await answer.done
    }
    expect(logged).toHaveLength(1)
    expect(logged[0]).toContain(keys.manifest('onread5', '1.0.0'))
    expect(logged[0]).toContain('put the signed manifest envelope')
  })

  it('two repairs of one version at once: one restores it, the other finds it servable and logs nothing', async () => {
    // The retention pass and a repair on read (or two on read once a claim went stale) reach the same
    // version together: both find the key empty and the kept claim, both put it back create-only.
    const raw = await listedWithoutManifest('onread9', 79)
    const key = keys.manifest('onread9', '1.0.0')
    const found = await readIndex(env.ARTIFACTS, 'onread9')
    const entry = found ? versionEntry(found.index, '1.0.0') : undefined
    if (entry === undefined) throw new Error('onread9@1.0.0 is not listed')
    // Each repair's put waits until both have reached it, so they race for the key for sure.
    let arrived = 0
    let bothThere: () => void = () => undefined
    const together = new Promise<void>((resolve) => {
      bothThere = resolve
    })
    const racing = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
      if (op === 'put' && target === key && arrived < 2) {
        if (++arrived === 2) bothThere()
        await together
      }
      return run()
    })
    const errors: string[] = []
    const log = console.log
    vi.spyOn(console, 'log').mockImplementation((line: unknown, ...rest: unknown[]) => {
      if (typeof line === 'string' && line.includes('"level":"error"')) errors.push(line)
      else log(line, ...rest)
    })
    const outcomes = await Promise.all([
      repairListedVersion(racing, 'onread9', entry),
      repairListedVersion(racing, 'onread9', entry),
    ])
    expect(arrived).toBe(2)
    expect(outcomes.sort()).toEqual(['restored', 'servable'])
    expect(errors).toEqual([])
    expect(await servedWithin('/v1/artifacts/onread9/1.0.0/manifest')).toBe(raw)
  })

  it('a repair that cannot take its claim (a storage fault) answers 503 all the same', async () => {
    await listedWithoutManifest('onread6', 76)
    commitsDead()
    const claim = repairClaimKey('onread6', '1.0.0')
    const faulty = new InterceptedBucket(env.ARTIFACTS, (op, key, run) => {
      if (key === claim) throw injectedFault(op, key)
      return run()
    })
    const answer = await get('/v1/artifacts/onread6/1.0.0/manifest', { ...env, ARTIFACTS: faulty })
    expect(answer.status).toBe(503)
    await answer.done
    expect(await env.ARTIFACTS.head(keys.manifest('onread6', '1.0.0'))).toBeNull()
  })
})
