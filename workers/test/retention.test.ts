import { createExecutionContext, createScheduledController, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import type { SignedManifest } from '../../schemas/manifest.ts'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import worker from '../index.ts'
import { readPending, stagePending } from '../publish/pending-manifest.ts'
import { pruneLeftovers } from '../retention/leftovers.ts'
import { pruneStorage } from '../retention/prune.ts'
import { resolveStalledCommits } from '../retention/stalled-commits.ts'
import { InterceptedBucket } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'
import { takeClaim } from '../storage/r2-claim.ts'
import { publishWithDeltas } from './delta-helpers.ts'
import { auth, bytesOf, call, envelopeFor, publishSingle, startPublish } from './publish-helpers.ts'

const DAY = 86_400_000
const delta = (from: string, seed: number) => ({
  from,
  method: 'vcdiff' as const,
  bytes: bytesOf(2000, seed),
})

async function publishThree(name: string) {
  await publishSingle(name, '1.0.0', bytesOf(20_000, 1), 1)
  await publishWithDeltas(name, '1.1.0', bytesOf(20_000, 2), 2, [delta('1.0.0', 3)])
  await publishWithDeltas(name, '1.2.0', bytesOf(20_000, 4), 3, [delta('1.1.0', 5), delta('1.0.0', 6)])
}

const exists = async (key: string) => (await env.ARTIFACTS.head(key)) !== null

describe('storage retention', () => {
  it('prunes old deltas except into channel heads, and old blobs only under deltas-preferred', async () => {
    await publishThree('ret')
    const both = RuntimeConfig.parse({ delta: { retainDeltasDays: 1, keepFullVersions: 1 } })
    const fresh = await pruneStorage(env.ARTIFACTS, both, Date.now())
    expect(fresh.deltasDeleted).toEqual([])

    const aged = await pruneStorage(env.ARTIFACTS, both, Date.now() + 2 * DAY)
    expect(aged.deltasDeleted).toEqual([keys.delta('ret', '1.0.0', '1.1.0', 'vcdiff')])
    expect(aged.blobsDeleted).toEqual([])
    expect(await exists(keys.delta('ret', '1.1.0', '1.2.0', 'vcdiff'))).toBe(true)
    expect(await exists(keys.blob('ret', '1.0.0'))).toBe(true)

    const preferred = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 1 } })
    const pruned = await pruneStorage(env.ARTIFACTS, preferred, Date.now())
    // 1.1.0 is kept as the head's fallback: a yank of 1.2.0 makes it the head of stable.
    expect(pruned.blobsDeleted).toEqual([keys.blob('ret', '1.0.0')])
    expect(await exists(keys.blob('ret', '1.2.0'))).toBe(true)
    expect(await exists(keys.blob('ret', '1.1.0'))).toBe(true)
    // Manifests stay, so updating into the head by delta still works.
    expect((await call('/v1/deltas/ret/1.0.0/1.2.0')).status).toBe(200)
    // The planner no longer offers what is gone: 1.0.0 lost its blob, and no delta leads to it.
    const plan = (installed: string | null, target: string) =>
      call('/v1/plan', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'ret',
          installed,
          target,
          capabilities: { methods: ['vcdiff'], chunkSync: true },
        }),
      })
    const stored = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred' } })
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify(stored))
    clearRuntimeConfigCache()
    expect((await plan(null, '1.0.0')).status).toBe(404)
    expect(await (await plan('1.0.0', '1.2.0')).json()).toMatchObject({ strategy: 'delta' })
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('sweeps what faulted deletes and dead requests left behind, once nothing can use it', async () => {
    const staging = 'pending/orphan/1.0.0/blob-0123456789abcdef0123456789abcdef'
    const staged = keys.pendingManifest('orphan', '1.0.0')
    const lock = 'locks/deltas/orphan/1.0.0/1.1.0/vcdiff'
    const refusal = 'lazy-failed/deltas/orphan/1.0.0/1.1.0/archive'
    const displaced = keys.displacedClaim('orphan', '1.0.0', '0123456789abcdef'.repeat(4))
    for (const key of [staging, staged, lock, refusal, displaced]) await env.ARTIFACTS.put(key, 'x')
    await publishSingle('orphan-kept', '1.0.0', bytesOf(1000, 7), 1)
    const config = RuntimeConfig.parse({ delta: { retainDeltasDays: 3 } })

    expect((await pruneStorage(env.ARTIFACTS, config, Date.now())).leftoversDeleted).toEqual([])
    const dayLater = await pruneStorage(env.ARTIFACTS, config, Date.now() + 2 * DAY)
    expect(dayLater.leftoversDeleted.sort()).toEqual([lock, staging].sort())
    // A staged publish is kept for a week (its CLI might still be uploading), a refusal as long as deltas.
    expect(await exists(staged)).toBe(true)
    expect(await exists(refusal)).toBe(true)
    // A claim a takeover displaced is kept as long as a staged publish (any stalled commit is dead by then).
    expect(await exists(displaced)).toBe(true)
    const weekLater = await pruneStorage(env.ARTIFACTS, config, Date.now() + 8 * DAY)
    expect(weekLater.leftoversDeleted.sort()).toEqual([displaced, refusal, staged].sort())
    // Published versions are not leftovers.
    expect(await exists(keys.manifest('orphan-kept', '1.0.0'))).toBe(true)
    expect(await exists(keys.blob('orphan-kept', '1.0.0'))).toBe(true)
  })

  it('keeps a week-old staged publish that a CLI restaged between the listing and the sweep', async () => {
    const body = bytesOf(900, 31)
    expect((await startPublish(await envelopeFor('restaged', '1.0.0', body))).status).toBe(201)
    const key = keys.pendingManifest('restaged', '1.0.0')
    const weekLater = Date.now() + 8 * DAY
    // The listing saw the week-old staged manifest; before the sweep reaches it, a CLI stages the version
    // again (the old attempt counts as abandoned by then, so stagePending replaces it).
    const rerun = await envelopeFor('restaged', '1.0.0', body, { serial: 2 })
    let restaged = false
    const racing = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
      if (!restaged && op !== 'list' && (target === key || op === 'delete')) {
        restaged = true
        expect(await stagePending(env.ARTIFACTS, rerun, JSON.stringify(rerun), weekLater)).toBe('staged')
      }
      return run()
    })
    const swept = await pruneLeftovers(racing, 3, weekLater)
    expect(restaged).toBe(true)
    expect(swept).not.toContain(key)
    const kept = await readPending(env.ARTIFACTS, 'restaged', '1.0.0')
    expect(kept?.envelope.signed.serial).toBe(2)
    expect(kept?.state).toBe('staged')
    // A week-old staged publish nobody touched is still swept.
    expect(await pruneLeftovers(env.ARTIFACTS, 3, Date.now() + 16 * DAY)).toContain(key)
    expect(await exists(key)).toBe(false)
  })

  it('keeps a day-old lock that a request took over between the listing and the sweep', async () => {
    const key = 'locks/deltas/lock-race/1.0.0/1.1.0/vcdiff'
    expect(await takeClaim(env.ARTIFACTS, key, 60_000)).not.toBeNull()
    const dayLater = Date.now() + 2 * DAY
    // The listing saw the day-old claim; before the sweep reaches it, a request finds it stale and takes
    // it over to generate the delta.
    let takenOver: string | null = null
    const racing = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
      if (takenOver === null && op !== 'list' && (target === key || op === 'delete')) {
        takenOver = await takeClaim(env.ARTIFACTS, key, 60_000, dayLater)
        expect(takenOver).not.toBeNull()
      }
      return run()
    })
    const swept = await pruneLeftovers(racing, 3, dayLater)
    expect(takenOver).not.toBeNull()
    expect(swept).not.toContain(key)
    expect((await env.ARTIFACTS.head(key))?.etag).toBe(takenOver)
    // A day-old claim nobody touched is still swept.
    expect(await pruneLeftovers(env.ARTIFACTS, 3, dayLater + 2 * DAY)).toContain(key)
    expect(await exists(key)).toBe(false)
  })

  it('plans never name a blob pruned under deltas-preferred after the operator switched back to both', async () => {
    await publishThree('switched')
    const preferred = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 1 } })
    await pruneStorage(env.ARTIFACTS, preferred, Date.now())
    expect(await exists(keys.blob('switched', '1.0.0'))).toBe(false)
    // `both` keeps every blob from now on; the ones pruned before stay gone.
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ delta: { storage: 'both' } }))
    clearRuntimeConfigCache()
    const planned = await call('/v1/plan', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'switched',
        installed: null,
        target: '1.0.0',
        capabilities: { methods: ['vcdiff'], chunkSync: true },
      }),
    })
    // Nothing reaches 1.0.0 from nothing: a clear 404, not a full plan whose blob answers 404.
    expect(planned.status).toBe(404)
    expect(await planned.text()).toContain('no longer stored in full')
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })

  it('keeps, under deltas-preferred, the blob a yank of a channel head falls back to', async () => {
    // A channel whose versions are not the newest overall (a stable line while beta moves on): the
    // version stable falls back to is far outside the newest keepFullVersions.
    await publishSingle('yanked-head', '1.0.0', bytesOf(1200, 41), 1)
    await publishSingle('yanked-head', '1.1.0', bytesOf(1200, 42), 2)
    await publishSingle('yanked-head', '1.2.0', bytesOf(1200, 43), 3)
    for (const [serial, version] of ['2.0.0', '2.1.0'].entries()) {
      const body = bytesOf(1200, 44 + serial)
      const beta = await envelopeFor('yanked-head', version, body, { serial: 4 + serial, channels: ['beta'] })
      expect((await startPublish(beta)).status).toBe(201)
      const put = await call(`/v1/publish/yanked-head/${version}/blob`, {
        method: 'PUT',
        headers: { ...auth, 'content-length': String(body.length) },
        body,
      })
      expect(put.status).toBe(201)
    }
    const preferred = RuntimeConfig.parse({ delta: { storage: 'deltas-preferred', keepFullVersions: 1 } })
    const pruned = await pruneStorage(env.ARTIFACTS, preferred, Date.now())
    // Heads stable 1.2.0 and beta 2.1.0 stay, and what each falls back to: 1.1.0 and 2.0.0.
    expect(pruned.blobsDeleted).toEqual([keys.blob('yanked-head', '1.0.0')])
    const yank = await call('/v1/publish/yanked-head/1.2.0/yank', {
      method: 'PUT',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ reason: 'bad build' }),
    })
    expect(yank.status).toBe(200)
    expect(((await yank.json()) as { channels: Record<string, string> }).channels.stable).toBe('1.1.0')
    // The new head installs fresh, and devices on the yanked version can retreat to it.
    for (const installed of [null, '1.2.0']) {
      const planned = await call('/v1/plan', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          name: 'yanked-head',
          installed,
          target: '1.1.0',
          capabilities: { methods: ['vcdiff'], chunkSync: false },
        }),
      })
      expect(planned.status).toBe(200)
    }
    expect((await call('/v1/artifacts/yanked-head/1.1.0/blob')).status).toBe(200)
  })

  it('runs from the cron trigger with the config in force', async () => {
    await publishThree('cron')
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({ delta: { storage: 'deltas-preferred', keepFullVersions: 2 } }),
    )
    clearRuntimeConfigCache()
    const ctx = createExecutionContext()
    await worker.scheduled(
      createScheduledController({ scheduledTime: Date.now(), cron: '17 3 * * *' }),
      env,
      ctx,
    )
    await waitOnExecutionContext(ctx)
    expect(await exists(keys.blob('cron', '1.0.0'))).toBe(false)
    expect(await exists(keys.blob('cron', '1.1.0'))).toBe(true)
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
  })
})

/** Writes `envelope` at its final manifest key marked committing, as a commit that died left it. */
async function leaveMarked(envelope: SignedManifest) {
  const { name, version } = envelope.signed
  await env.ARTIFACTS.put(keys.manifest(name, version), JSON.stringify(envelope), {
    httpMetadata: { contentType: 'application/json' },
    customMetadata: { state: 'committing' },
  })
}

describe('manifests dead commits left marked committing (ADR 0022)', () => {
  it("are withdrawn when unpublished and unmarked when published, after a staged publish's grace", async () => {
    // A first publish whose commit died between its manifest and index writes: no index at all, its
    // staged manifest still held for the commit.
    const dead = await envelopeFor('stalled-new', '1.0.0', bytesOf(800, 21))
    await leaveMarked(dead)
    await env.ARTIFACTS.put(keys.pendingManifest('stalled-new', '1.0.0'), JSON.stringify(dead), {
      customMetadata: { state: 'committing' },
    })
    // A published version whose commit died after its index update, only before unmarking.
    const published = await publishSingle('stalled-listed', '1.0.0', bytesOf(800, 22), 1)
    await leaveMarked(published)
    const withdrawn = keys.manifest('stalled-new', '1.0.0')
    const unmarked = keys.manifest('stalled-listed', '1.0.0')
    const config = RuntimeConfig.parse({})

    const within = await pruneStorage(env.ARTIFACTS, config, Date.now() + 6 * DAY)
    expect(within.manifestsWithdrawn).toEqual([])
    expect(within.manifestsUnmarked).toEqual([])
    expect(await exists(withdrawn)).toBe(true)

    const after = await pruneStorage(env.ARTIFACTS, config, Date.now() + 8 * DAY)
    expect(after.manifestsWithdrawn).toEqual([withdrawn])
    expect(after.manifestsUnmarked).toEqual([unmarked])
    expect(await exists(withdrawn)).toBe(false)
    expect(after.leftoversDeleted).toContain(keys.pendingManifest('stalled-new', '1.0.0'))
    // The published one is never deleted: still there, same bytes, no marker, still served.
    const kept = await env.ARTIFACTS.get(unmarked)
    expect(kept?.customMetadata).toEqual({})
    expect(await kept?.json()).toEqual(published)
    expect(await (await call('/v1/artifacts/stalled-listed/1.0.0/manifest')).json()).toEqual(published)
    // The version the dead commit left is free for a publish of another manifest at once.
    const rerun = await envelopeFor('stalled-new', '1.0.0', bytesOf(800, 23), { serial: 2 })
    expect((await startPublish(rerun)).status).toBe(201)
  })

  it('are left alone while a younger staged publish of the version exists (a rerun may be committing)', async () => {
    const dead = await envelopeFor('stalled-rerun', '1.0.0', bytesOf(800, 24))
    await leaveMarked(dead)
    // The rerun staged the same manifest again just now; its commit will find the key already written.
    expect((await startPublish(dead)).status).toBe(201)
    const key = keys.manifest('stalled-rerun', '1.0.0')
    // The dead commit's manifest is a week and more old (R2 cannot back-date a put, so the listing
    // entry is).
    const listed = { key, uploaded: new Date(Date.now() - 8 * DAY) }
    const resolved = await resolveStalledCommits(env.ARTIFACTS, [listed], Date.now())
    expect(resolved).toEqual({ unmarked: [], withdrawn: [] })
    expect((await env.ARTIFACTS.head(key))?.customMetadata).toEqual({ state: 'committing' })
    // Once the staged publish is as old as the dead commit's manifest, the manifest goes.
    const later = await resolveStalledCommits(env.ARTIFACTS, [listed], Date.now() + 8 * DAY)
    expect(later.withdrawn).toEqual([key])
  })

  it('are put back when a rerun of the same manifest commits just before the delete', async () => {
    const body = bytesOf(800, 25)
    const dead = await envelopeFor('stalled-raced', '1.0.0', body)
    await leaveMarked(dead)
    const key = keys.manifest('stalled-raced', '1.0.0')
    // R2 has no conditional delete: the rerun stages, uploads and commits after the sweep found no
    // staged publish, and its claim finds the same manifest at the key and writes nothing.
    const racing = new InterceptedBucket(env.ARTIFACTS, async (op, target, run) => {
      if (op === 'delete' && target === key) {
        expect((await startPublish(dead)).status).toBe(201)
        const put = await call('/v1/publish/stalled-raced/1.0.0/blob', {
          method: 'PUT',
          headers: { ...auth, 'content-length': String(body.length) },
          body,
        })
        expect(put.status).toBe(201)
      }
      return run()
    })
    const listed = { key, uploaded: new Date(Date.now() - 8 * DAY) }
    const resolved = await resolveStalledCommits(racing, [listed], Date.now())
    expect(resolved).toEqual({ unmarked: [], withdrawn: [] })
    // Published by the rerun, so its manifest must be there and served.
    expect(await (await call('/v1/artifacts/stalled-raced/1.0.0/manifest')).json()).toEqual(dead)
  })

  it("are left unserved when the index lists the version with another manifest (a takeover's dead claim)", async () => {
    const body = bytesOf(800, 26)
    const published = await publishSingle('stalled-other', '1.0.0', body, 1)
    // The claim of an attempt that took over a stalled commit, whose late index update listed serial 1.
    const claim = await envelopeFor('stalled-other', '1.0.0', body, { serial: 2 })
    expect(claim.signed.sha256).toBe(published.signed.sha256)
    await leaveMarked(claim)
    const key = keys.manifest('stalled-other', '1.0.0')
    const listed = { key, uploaded: new Date(Date.now() - 8 * DAY) }
    const resolved = await resolveStalledCommits(env.ARTIFACTS, [listed], Date.now())
    expect(resolved).toEqual({ unmarked: [], withdrawn: [] })
    expect((await env.ARTIFACTS.head(key))?.customMetadata).toEqual({ state: 'committing' })
    // Listed, so said to be under repair (503), never served with the other attempt's manifest.
    expect((await call('/v1/artifacts/stalled-other/1.0.0/manifest')).status).toBe(503)
  })
})
