import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { repairListedManifests } from '../retention/stalled-commits.ts'
import { readIndex } from '../storage/artifact-store.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { bytesOf, call, envelopeFor, expectProblem, publishSingle, sha256 } from './publish-helpers.ts'

/**
 * A version the index lists whose manifest is not servable (ADR 0022, amended 2026-11-26): the two-fault
 * case left its final key empty or holding another attempt's marked claim until retention restores it.
 * The edge says so (503 + Retry-After), not 404, which a client that just read the index would take for
 * a permanent error. Real R2 throughout; publish-stalled-listing.test.ts makes the state the real way.
 */
describe('a listed version whose manifest is not servable', () => {
  it('answers 503 manifest-being-repaired with Retry-After until retention restores it', async () => {
    const body = bytesOf(1500, 61)
    const envelope = await publishSingle('repairing1', '1.0.0', body)
    const raw = JSON.stringify(envelope)
    const key = keys.manifest('repairing1', '1.0.0')
    // What a commit that died in the two-fault case leaves: the index lists it, the key is empty, and
    // the claim it was made from is kept aside.
    await env.ARTIFACTS.delete(key)
    await env.ARTIFACTS.put(
      keys.displacedClaim('repairing1', '1.0.0', await sha256(new TextEncoder().encode(raw))),
      raw,
    )

    const missing = await call('/v1/artifacts/repairing1/1.0.0/manifest')
    expect(missing.headers.get('retry-after')).toBe('2')
    expect(missing.headers.get('cache-control')).toBe('no-store')
    const problem = await expectProblem(missing, 503, 'manifest-being-repaired')
    expect(problem.detail).toContain('repairing1@1.0.0 is listed')
    // What is found through the manifest says the same.
    await expectProblem(await call('/v1/artifacts/repairing1/1.0.0/blob'), 503, 'manifest-being-repaired')

    // Another attempt's marked claim at the key: still not servable, still 503 (never that claim).
    const claim = await envelopeFor('repairing1', '1.0.0', body, { serial: 7 })
    await env.ARTIFACTS.put(key, JSON.stringify(claim), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    await expectProblem(await call('/v1/artifacts/repairing1/1.0.0/manifest'), 503, 'manifest-being-repaired')

    const found = await readIndex(env.ARTIFACTS, 'repairing1')
    if (!found) throw new Error('no index')
    const repairs = await repairListedManifests(env.ARTIFACTS, found.index, new Set())
    expect(repairs.restored).toEqual([key])
    const served = await call('/v1/artifacts/repairing1/1.0.0/manifest')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(raw)
  })

  it('stays a 404 for a version the index does not list, marked manifest of a commit underway or not', async () => {
    const body = bytesOf(1600, 62)
    await publishSingle('repairing2', '1.0.0', body)
    await expectProblem(await call('/v1/artifacts/repairing2/2.0.0/manifest'), 404, 'not-found')
    // A commit between its claim and its index write: not published yet, so not found.
    const underway = await envelopeFor('repairing2', '2.0.0', body, { serial: 2 })
    await env.ARTIFACTS.put(keys.manifest('repairing2', '2.0.0'), JSON.stringify(underway), {
      httpMetadata: { contentType: 'application/json' },
      customMetadata: { state: 'committing' },
    })
    await expectProblem(await call('/v1/artifacts/repairing2/2.0.0/manifest'), 404, 'not-found')
    await expectProblem(await call('/v1/artifacts/repairing-none/1.0.0/manifest'), 404, 'not-found')
  })

  it('costs a servable manifest no index read: one R2 call, as before', async () => {
    await publishSingle('repairing3', '1.0.0', bytesOf(1700, 63))
    const calls: string[] = []
    const counting = new InterceptedBucket(env.ARTIFACTS, (op, key, run) => {
      calls.push(`${op} ${key}`)
      return run()
    })
    const { response } = await callApp(
      '/v1/artifacts/repairing3/1.0.0/manifest',
      {},
      { ...env, ARTIFACTS: counting },
    )
    expect(response.status).toBe(200)
    expect(calls).toEqual([`get ${keys.manifest('repairing3', '1.0.0')}`])
  })
})
