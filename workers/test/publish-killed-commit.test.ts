import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ProblemDetails } from '../../schemas/problem.ts'
import {
  attemptOf,
  PENDING_ABANDONED_AFTER_MS,
  readPending,
  stagePending,
} from '../publish/pending-manifest.ts'
import { COMMIT_ABANDONED_AFTER_MS } from '../storage/artifact-store.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { callApp } from './delta-helpers.ts'
import { injectedFault } from './faulty-r2.ts'
import { auth, bytesOf, call, envelopeFor, startPublish } from './publish-helpers.ts'

/**
 * A Worker invocation cut off (CPU limit, deploy, crash) in the middle of a commit: after it held the
 * staged manifest for its commit and claimed the final manifest key, before its index write landed. No
 * cleanup of the commit runs (no withdrawal, no hold given back): every R2 call from the index write on
 * fails, as nothing more reaches R2 from a dead isolate.
 */
function killedAtIndexWrite(name: string) {
  let dead = false
  return new InterceptedBucket(env.ARTIFACTS, async (op, key, run) => {
    if (op === 'put' && key === keys.index(name)) dead = true
    if (dead) throw injectedFault(op, key)
    return run()
  })
}

describe('a commit whose Worker was cut off between its claim and its index write', () => {
  it('holds the version only as long as a commit counts as alive: the rerun of the publish lands', async () => {
    const body = bytesOf(5000, 41)
    const first = await envelopeFor('killed', '1.0.0', body, { serial: 1 })
    expect((await startPublish(first)).status).toBe(201)
    const cut = await callApp(
      '/v1/publish/killed/1.0.0/blob',
      { method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body },
      { ...env, ARTIFACTS: killedAtIndexWrite('killed') },
    )
    expect(cut.response.status).toBe(503)
    // What the dead commit left: its staged manifest held for commit, its claim at the final key.
    expect((await readPending(env.ARTIFACTS, 'killed', '1.0.0'))?.state).toBe('committing')
    expect((await env.ARTIFACTS.head(keys.manifest('killed', '1.0.0')))?.customMetadata?.state).toBe(
      'committing',
    )
    // The CLI gives its attempt up at once; refused, since the commit may still be running.
    const giveUp = await call(`/v1/publish/killed/1.0.0/attempts/${await attemptOf(JSON.stringify(first))}`, {
      method: 'DELETE',
      headers: auth,
    })
    expect(giveUp.status).toBe(409)
    // While the commit may be alive, a rerun (signed again: another envelope) is told when to retry:
    // once the commit counts as dead, not once a whole upload would count as abandoned.
    const rerun = await envelopeFor('killed', '1.0.0', body, {
      serial: 1,
      expires: new Date(Date.now() + 2 * 86_400_000).toISOString(),
    })
    const busy = await startPublish(rerun)
    expect(busy.status).toBe(409)
    const detail = ProblemDetails.parse(await busy.json()).detail ?? ''
    const held = await readPending(env.ARTIFACTS, 'killed', '1.0.0')
    const freeAt = new Date((held?.uploaded.getTime() ?? 0) + COMMIT_ABANDONED_AFTER_MS).toISOString()
    expect(detail).toContain(freeAt)
    // Past COMMIT_ABANDONED_AFTER_MS (well before PENDING_ABANDONED_AFTER_MS) the rerun stages…
    const later = Date.now() + COMMIT_ABANDONED_AFTER_MS + 1000
    expect(later).toBeLessThan(Date.now() + PENDING_ABANDONED_AFTER_MS)
    expect(await stagePending(env.ARTIFACTS, rerun, JSON.stringify(rerun), later)).toBe('staged')
    // …and its upload (the same bytes, already in the slot) commits over the dead commit's claim.
    const put = await call('/v1/publish/killed/1.0.0/blob', {
      method: 'PUT',
      headers: { ...auth, 'content-length': String(body.length) },
      body,
    })
    expect(put.status).toBe(201)
    const served = await call('/v1/artifacts/killed/1.0.0/manifest')
    expect(served.status).toBe(200)
    expect(await served.text()).toBe(JSON.stringify(rerun))
  })
})
