import { createExecutionContext, waitOnExecutionContext } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it } from 'vitest'
import { buildChunkIndex, encodeChunkIndex } from '../../delta/chunking/chunk-index.ts'
import { applyDelta } from '../../delta/index.ts'
import { demandRows, plannerStub, publishDep } from '../../durable-objects/test/shard-helpers.ts'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { type SignedManifest, SignedManifest as SignedManifestSchema } from '../../schemas/manifest.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { RuntimeConfig } from '../../schemas/runtime-config.ts'
import { ShardPlan } from '../../schemas/shards.ts'
import { app } from '../app.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { lockKey } from '../publish/lazy-delta.ts'
import { pruneStorage } from '../retention/prune.ts'
import { STORAGE_RETRY_AFTER_SECONDS } from '../storage/guarded-bucket.ts'
import { keys } from '../storage/keys.ts'
import { clearZonePlanCache } from '../storage/zone-replicas.ts'
import { deltaRefOf, publishWithDeltas, unframe } from './delta-helpers.ts'
import { type FaultPlan, FaultyR2 } from './faulty-r2.ts'
import { auth, bytesOf, envelopeFor, publishSingle, sha256, startPublish } from './publish-helpers.ts'

/**
 * R2 faults injected under the real Hono app (FaultyR2 around the real binding): every storage fault
 * is a 503 problem+json with Retry-After, nothing is half-written (checked on the real bucket after
 * the faulty run), and the edge keeps working: the same requests succeed right after.
 */

interface Sent {
  response: Response
  bytes: Uint8Array
}

interface Step {
  path: string
  init: () => RequestInit
  expect: number
}

/** Step 1 of every publish: POST the signed envelope. */
function announceStep(base: string, envelope: unknown): Step {
  return {
    path: base,
    init: () => ({
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify(envelope),
    }),
    expect: 201,
  }
}

async function send(bucket: R2Bucket, path: string, init: RequestInit = {}): Promise<Sent> {
  const ctx = createExecutionContext()
  const response = await app.fetch(
    new Request(`https://edge.test${path}`, init),
    { ...env, ARTIFACTS: bucket },
    ctx,
  )
  const bytes = new Uint8Array(await response.arrayBuffer())
  await waitOnExecutionContext(ctx)
  return { response, bytes }
}

/** A storage fault as the edge must report it (a HEAD answer carries the headers only). */
function expectStorageProblem(sent: Sent, context: string, head = false): void {
  const { response, bytes } = sent
  const text = new TextDecoder().decode(bytes)
  expect(response.status, `${context}: ${text}`).toBe(503)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  expect(response.headers.get('retry-after')).toBe(String(STORAGE_RETRY_AFTER_SECONDS))
  if (head) return
  const problem = ProblemDetails.parse(JSON.parse(text))
  expect(problem.type).toBe('https://deltaport.dev/problems/storage-unavailable')
}

/** Runs steps in order; stops at the first that does not answer its expected status. */
async function runFlow(
  bucket: R2Bucket,
  steps: Step[],
): Promise<{ failed: number | null; last: Sent | null }> {
  let last: Sent | null = null
  for (const [i, step] of steps.entries()) {
    last = await send(bucket, step.path, step.init())
    if (last.response.status !== step.expect) return { failed: i, last }
  }
  return { failed: null, last }
}

/** How many R2 calls a flow makes when nothing fails (run on a throwaway artifact of the same shape). */
async function callsOf(steps: Step[]): Promise<number> {
  const counting = new FaultyR2(env.ARTIFACTS, {})
  const { failed, last } = await runFlow(counting, steps)
  expect(failed, last ? new TextDecoder().decode(last.bytes) : '').toBeNull()
  return counting.log.length
}

/**
 * The store invariants, on the real bucket: the index lists only versions whose manifest, blob, listed
 * deltas and chunk index are all stored and match; its channels and latestSerial agree with it; and no
 * version outside the index is readable through the app (no half-commit, no staging leftover).
 */
async function assertConsistent(name: string): Promise<void> {
  const bucket = env.ARTIFACTS
  const indexObject = await bucket.get(keys.index(name))
  const index = indexObject ? ArtifactIndex.parse(await indexObject.json()) : null
  const listed = new Set(index?.versions.map((v) => v.version) ?? [])
  for (const entry of index?.versions ?? []) {
    const object = await bucket.get(keys.manifest(name, entry.version))
    expect(object, `${name}@${entry.version} manifest`).not.toBeNull()
    const manifest = SignedManifestSchema.parse(await object?.json()).signed
    expect(manifest).toMatchObject({ serial: entry.serial, size: entry.size, sha256: entry.sha256 })
    expect((await bucket.head(keys.blob(name, entry.version)))?.size, `${name}@${entry.version} blob`).toBe(
      entry.size,
    )
    for (const ref of manifest.deltas) {
      const head = await bucket.head(keys.delta(name, ref.from, entry.version, ref.method))
      expect(head?.customMetadata?.payloadSha256, `delta ${ref.from} → ${entry.version}`).toBe(ref.sha256)
    }
    if (manifest.chunkIndex) {
      expect((await bucket.head(keys.chunks(name, entry.version)))?.size).toBe(manifest.chunkIndex.size)
    }
  }
  if (index) {
    for (const version of Object.values(index.channels)) expect(listed.has(version)).toBe(true)
    expect(index.latestSerial).toBe(Math.max(...index.versions.map((v) => v.serial)))
  }
  const stored = await bucket.list({ prefix: `artifacts/${name}/` })
  const pending = await bucket.list({ prefix: `pending/${name}/` })
  const versions = new Set(
    [...stored.objects, ...pending.objects]
      .map((o) => o.key.split('/').at(-2) ?? '')
      .filter((v) => v !== name && v !== ''),
  )
  for (const version of versions) {
    if (listed.has(version)) continue
    for (const what of ['manifest', 'blob']) {
      const read = await send(bucket, `/v1/artifacts/${name}/${version}/${what}`)
      expect(read.response.status, `${name}@${version} ${what} is not published`).toBe(404)
    }
  }
}

/** The staged publish of `version` with one delta from 1.0.0 and a chunk index, as steps. */
async function stagedPublishSteps(name: string, version: string, serial: number, body: Uint8Array) {
  const delta = { from: '1.0.0', method: 'vcdiff' as const, bytes: bytesOf(3000, serial + 100) }
  const index = encodeChunkIndex(await buildChunkIndex(body))
  const envelope = await envelopeFor(name, version, body, {
    serial,
    deltas: [await deltaRefOf(delta)],
    chunkIndex: { size: index.length, sha256: await sha256(index), chunkCount: (index.length - 36) / 20 },
  })
  const base = `/v1/publish/${name}/${version}`
  const put = (bytes: Uint8Array) => () => ({
    method: 'PUT',
    headers: { ...auth, 'content-length': String(bytes.length) },
    body: bytes,
  })
  const steps: Step[] = [
    announceStep(base, envelope),
    { path: `${base}/deltas/1.0.0/vcdiff`, init: put(delta.bytes), expect: 201 },
    { path: `${base}/chunks`, init: put(index), expect: 201 },
    { path: `${base}/blob`, init: put(body), expect: 201 },
  ]
  return { steps, envelope }
}

/** The multipart publish of `version` (one part), as steps; the upload id is read from step 2. */
async function multipartSteps(name: string, version: string, serial: number, body: Uint8Array) {
  const envelope = await envelopeFor(name, version, body, { serial })
  const base = `/v1/publish/${name}/${version}`
  let uploadId = ''
  let part: unknown = null
  const steps: Step[] = [
    announceStep(base, envelope),
    { path: `${base}/uploads`, init: () => ({ method: 'POST', headers: auth }), expect: 201 },
  ]
  // Paths depend on the upload id, so these steps are built lazily from the previous answers.
  const rest = {
    part: () => ({
      path: `${base}/uploads/${encodeURIComponent(uploadId)}/parts/1`,
      init: () => ({ method: 'PUT', headers: { ...auth, 'content-length': String(body.length) }, body }),
      expect: 200,
    }),
    complete: () => ({
      path: `${base}/uploads/${encodeURIComponent(uploadId)}/complete`,
      init: () => ({
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ parts: [part] }),
      }),
      expect: 201,
    }),
  }
  async function run(bucket: R2Bucket): Promise<{ failed: number | null; last: Sent | null }> {
    const first = await runFlow(bucket, steps)
    if (first.failed !== null || !first.last) return first
    uploadId = (JSON.parse(new TextDecoder().decode(first.last.bytes)) as { uploadId: string }).uploadId
    const partSent = await runFlow(bucket, [rest.part()])
    if (partSent.failed !== null || !partSent.last) return { failed: 2, last: partSent.last }
    part = JSON.parse(new TextDecoder().decode(partSent.last.bytes))
    const done = await runFlow(bucket, [rest.complete()])
    return done.failed === null ? done : { failed: 3, last: done.last }
  }
  return { run, envelope }
}

async function expectPublishedBytes(envelope: SignedManifest, body: Uint8Array): Promise<void> {
  const { name, version } = envelope.signed
  const blob = await send(env.ARTIFACTS, `/v1/artifacts/${name}/${version}/blob`)
  expect(blob.response.status).toBe(200)
  expect(await sha256(blob.bytes)).toBe(await sha256(body))
}

describe('R2 faults on the publish path', () => {
  it('every single failing call of a staged publish → 503, nothing half-written, a retry publishes', async () => {
    const body = bytesOf(40_000, 5)
    await publishSingle('r2probe', '1.0.0', bytesOf(40_000, 4), 1)
    const total = await callsOf((await stagedPublishSteps('r2probe', '1.1.0', 2, body)).steps)
    expect(total).toBeGreaterThan(10)
    for (let call = 1; call <= total; call++) {
      const name = `r2stage-${call}`
      await publishSingle(name, '1.0.0', bytesOf(40_000, 4), 1)
      const { steps, envelope } = await stagedPublishSteps(name, '1.1.0', 2, body)
      const faulty = new FaultyR2(env.ARTIFACTS, { failCalls: [call] })
      const { failed, last } = await runFlow(faulty, steps)
      expect(faulty.faults, `call ${call}`).toBe(1)
      if (failed !== null && last) expectStorageProblem(last, `call ${call} (${faulty.log[call - 1]?.op})`)
      await assertConsistent(name)
      // The edge stays up and the maintainer's retry of the whole publish succeeds.
      if (failed !== null) expect((await runFlow(env.ARTIFACTS, steps)).failed).toBeNull()
      await assertConsistent(name)
      await expectPublishedBytes(envelope, body)
    }
  })

  it('every single failing call of a multipart publish → 503, nothing half-written, a retry publishes', async () => {
    const body = bytesOf(70_000, 6)
    const total = await (async () => {
      const probe = await multipartSteps('r2mprobe', '1.0.0', 1, body)
      const counting = new FaultyR2(env.ARTIFACTS, {})
      expect((await probe.run(counting)).failed).toBeNull()
      return counting.log.length
    })()
    for (let call = 1; call <= total; call++) {
      const name = `r2multi-${call}`
      const flow = await multipartSteps(name, '1.0.0', 1, body)
      const faulty = new FaultyR2(env.ARTIFACTS, { failCalls: [call] })
      const { failed, last } = await flow.run(faulty)
      expect(faulty.faults, `call ${call}`).toBe(1)
      if (failed !== null && last) expectStorageProblem(last, `call ${call} (${faulty.log[call - 1]?.op})`)
      await assertConsistent(name)
      if (failed !== null) expect((await flow.run(env.ARTIFACTS)).failed).toBeNull()
      await assertConsistent(name)
      await expectPublishedBytes(flow.envelope, body)
    }
  })

  it('random faults (seeded) over many publishes: only 503s, consistent store, retries converge', async () => {
    for (const seed of [1, 2, 3, 4]) {
      const name = `r2chaos-${seed}`
      const faulty = new FaultyR2(env.ARTIFACTS, { rate: 0.15, seed })
      await publishSingle(name, '1.0.0', bytesOf(20_000, seed), 1)
      const bodies = [2, 3, 4].map((serial) => bytesOf(20_000 + serial, seed * 10 + serial))
      const flows = await Promise.all(
        bodies.map((body, i) => stagedPublishSteps(name, `1.${i + 1}.0`, i + 2, body)),
      )
      for (const flow of flows) {
        const { failed, last } = await runFlow(faulty, flow.steps)
        if (failed !== null && last) expectStorageProblem(last, `seed ${seed}`)
        // Several faults may hit one request here (the index re-read that guards a commit among
        // them), so only the invariant the index guarantees is checked until the retry.
        if (failed !== null) expect((await runFlow(env.ARTIFACTS, flow.steps)).failed).toBeNull()
      }
      expect(faulty.faults).toBeGreaterThan(0)
      await assertConsistent(name)
      for (const [i, flow] of flows.entries())
        await expectPublishedBytes(flow.envelope, bodies[i] as Uint8Array)
    }
  })
})

describe('R2 request errors', () => {
  it('an upload R2 does not know is a 404 problem on abort, and the staged manifest stays', async () => {
    await startPublish(await envelopeFor('r2abort', '1.0.0', bytesOf(100, 1)))
    const noSuchUpload = new FaultyR2(env.ARTIFACTS, {
      failNth: { abortMultipartUpload: [1] },
      error: (op) => new Error(`${op}: The specified multipart upload does not exist. (10024)`),
    })
    const sent = await send(noSuchUpload, '/v1/publish/r2abort/1.0.0/uploads/some-upload', {
      method: 'DELETE',
      headers: auth,
    })
    expect(sent.response.status).toBe(404)
    expect(sent.response.headers.get('content-type')).toBe('application/problem+json')
    expect(await env.ARTIFACTS.head('pending/r2abort/1.0.0/manifest.json')).not.toBeNull()
  })
})

describe('damaged stored documents', () => {
  it('a stored index, manifest or root that is not JSON (or not its shape) is a 500 naming it', async () => {
    await publishSingle('damaged', '1.0.0', bytesOf(100, 7))
    const manifestKey = keys.manifest('damaged', '1.0.0')
    const cases = [
      { key: keys.index('damaged'), path: '/v1/artifacts/damaged', what: 'index' },
      { key: manifestKey, path: '/v1/artifacts/damaged/1.0.0/manifest', what: 'manifest' },
      { key: keys.root(1), path: '/v1/roots/1', what: 'root' },
    ]
    for (const { key, path, what } of cases) {
      for (const damage of ['{"truncat', '{"name": 7}']) {
        await env.ARTIFACTS.put(key, damage)
        const { response, bytes } = await send(env.ARTIFACTS, path)
        expect(response.status, `${path} with ${damage}`).toBe(500)
        expect(response.headers.get('content-type')).toBe('application/problem+json')
        const problem = ProblemDetails.parse(JSON.parse(new TextDecoder().decode(bytes)))
        expect(problem.detail).toBe(`stored ${what} ${key} is corrupt`)
      }
      await env.ARTIFACTS.delete(key)
    }
  })
})

describe('R2 faults on the read path', () => {
  it('every single failing call of each read route → 503 problem, then the same read succeeds', async () => {
    const v1 = bytesOf(30_000, 21)
    const v2 = v1.slice()
    v2.set(bytesOf(500, 22), 10_000)
    await publishSingle('r2read', '1.0.0', v1, 1)
    await publishWithDeltas('r2read', '1.1.0', v2, 2, [
      { from: '1.0.0', method: 'vcdiff', bytes: bytesOf(1000, 23) },
    ])
    const planBody = JSON.stringify({
      name: 'r2read',
      installed: '1.0.0',
      target: 'stable',
      capabilities: { methods: ['vcdiff'], chunkSync: true },
    })
    // A distinct Range per attempt keeps the Workers cache from answering instead of R2.
    const reads: Array<{ label: string; path: string; init: (n: number) => RequestInit; ok: number }> = [
      { label: 'index', path: '/v1/artifacts/r2read', init: () => ({}), ok: 200 },
      { label: 'manifest', path: '/v1/artifacts/r2read/1.1.0/manifest', init: () => ({}), ok: 200 },
      {
        label: 'blob range',
        path: '/v1/artifacts/r2read/1.1.0/blob',
        init: (n) => ({ headers: { range: `bytes=${n}-${n + 99}` } }),
        ok: 206,
      },
      {
        label: 'blob HEAD',
        path: '/v1/artifacts/r2read/1.1.0/blob',
        init: () => ({ method: 'HEAD' }),
        ok: 200,
      },
      {
        label: 'chunks',
        path: '/v1/artifacts/r2read/1.1.0/chunks',
        init: (n) => ({ headers: { range: `bytes=${n}-` } }),
        ok: 206,
      },
      {
        label: 'delta',
        path: '/v1/deltas/r2read/1.0.0/1.1.0',
        init: (n) => ({ headers: { range: `bytes=${n}-` } }),
        ok: 206,
      },
      {
        label: 'plan',
        path: '/v1/plan',
        init: () => ({ method: 'POST', headers: { 'content-type': 'application/json' }, body: planBody }),
        ok: 200,
      },
    ]
    let attempt = 0
    for (const read of reads) {
      const counting = new FaultyR2(env.ARTIFACTS, {})
      const clean = await send(counting, read.path, read.init(++attempt))
      expect(clean.response.status, read.label).toBe(read.ok)
      expect(counting.log.length, read.label).toBeGreaterThan(0)
      for (let call = 1; call <= counting.log.length; call++) {
        const faulty = new FaultyR2(env.ARTIFACTS, { failCalls: [call] })
        const init = read.init(++attempt)
        const sent = await send(faulty, read.path, init)
        expectStorageProblem(sent, `${read.label} call ${call}`, init.method === 'HEAD')
        expect(faulty.faults).toBe(1)
        const again = await send(env.ARTIFACTS, read.path, read.init(++attempt))
        expect(again.response.status, `${read.label} after the fault`).toBe(read.ok)
      }
    }
    await assertConsistent('r2read')
  })

  it('a fault after the body started cuts the response (no hang, no bad cache entry); the next read is whole', async () => {
    const body = bytesOf(200_000, 71)
    const envelope = await publishSingle('r2cut', '1.0.0', body)
    const faulty = new FaultyR2(env.ARTIFACTS, {
      cutBodies: (key) => key.endsWith('/blob'),
      cutBodyAfter: 50_000,
    })
    for (const range of [undefined, 'bytes=1000-150000']) {
      const init = range ? { headers: { range } } : {}
      const ctx = createExecutionContext()
      const response = await app.fetch(
        new Request('https://edge.test/v1/artifacts/r2cut/1.0.0/blob', init),
        { ...env, ARTIFACTS: faulty },
        ctx,
      )
      expect([200, 206]).toContain(response.status)
      // The declared length is the whole object/range; the stream fails short of it.
      const read = await response.arrayBuffer().then(
        (bytes) => bytes.byteLength,
        () => -1,
      )
      await waitOnExecutionContext(ctx).catch(() => undefined)
      expect(read).not.toBe(Number(response.headers.get('content-length')))
      const again = await send(env.ARTIFACTS, '/v1/artifacts/r2cut/1.0.0/blob', init)
      expect(again.response.headers.get('x-deltaport-cache')).not.toBe('hit')
      const expected = range ? body.subarray(1000, 150_001) : body
      expect(again.bytes.length).toBe(expected.length)
      expect(await sha256(again.bytes)).toBe(await sha256(expected))
    }
    expect(envelope.signed.size).toBe(body.length)
  })

  it('lazy delta generation: each failing call → 503 (never a stuck lock or a half-stored delta)', async () => {
    const v1 = bytesOf(20_000, 31)
    const v2 = v1.slice()
    v2.set(bytesOf(800, 32), 5000)
    const path = (name: string) => `/v1/deltas/${name}/1.0.0/1.1.0`
    await publishSingle('r2lazyprobe', '1.0.0', v1, 1)
    await publishSingle('r2lazyprobe', '1.1.0', v2, 2)
    const counting = new FaultyR2(env.ARTIFACTS, {})
    expect((await send(counting, path('r2lazyprobe'))).response.status).toBe(200)
    const total = counting.log.length
    for (let call = 1; call <= total; call++) {
      const name = `r2lazy-${call}`
      await publishSingle(name, '1.0.0', v1, 1)
      await publishSingle(name, '1.1.0', v2, 2)
      const faulty = new FaultyR2(env.ARTIFACTS, { failCalls: [call] })
      const sent = await send(faulty, path(name))
      const op = faulty.log[call - 1]?.op
      // The lock's cleanup is retried and best effort: a fault there does not fail the request.
      if (sent.response.status !== 200) expectStorageProblem(sent, `call ${call} (${op})`)
      expect(await env.ARTIFACTS.head(lockKey(name, '1.0.0', '1.1.0', 'vcdiff'))).toBeNull()
      const good = await send(env.ARTIFACTS, path(name))
      expect(good.response.status, `after call ${call}`).toBe(200)
      expect(await sha256(applyDelta(v1, await unframe(good.bytes)))).toBe(await sha256(v2))
    }
  })
})

describe('R2 faults in a zone replica bucket', () => {
  afterEach(async () => {
    await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
    clearRuntimeConfigCache()
    clearZonePlanCache()
  })

  it('a failing replica read falls back to the primary, which holds everything', async () => {
    await env.CONFIG.put(
      RUNTIME_CONFIG_KEY,
      JSON.stringify({
        zones: { metricsFlushMs: 0, planCacheMs: 0, prefetchThresholds: [1], maxWarmPerZone: 0 },
      }),
    )
    clearRuntimeConfigCache()
    clearZonePlanCache()
    const { body } = await publishDep('r2zone', 12_000, 61)
    await plannerStub().recordDemand(demandRows('r2zone@1.0.0', 'weur', 6, Date.now()))
    await plannerStub().replan()
    const plan = ShardPlan.parse(await plannerStub().plan())
    expect(plan.entries.find((e) => e.id === 'r2zone@1.0.0')?.active).toContain('weur')
    const replica = new FaultyR2(env.ZONE_WEUR, { rate: 1 })
    for (const [i, range] of ['bytes=0-99', 'bytes=500-999', 'bytes=-10'].entries()) {
      const ctx = createExecutionContext()
      const response = await app.fetch(
        new Request('https://edge.test/v1/artifacts/r2zone/1.0.0/blob', {
          cf: { continent: 'EU' },
          headers: { range },
        }),
        { ...env, ZONE_WEUR: replica },
        ctx,
      )
      const bytes = new Uint8Array(await response.arrayBuffer())
      await waitOnExecutionContext(ctx)
      expect(response.status, `${range}: ${new TextDecoder().decode(bytes).slice(0, 200)}`).toBe(206)
      const [start = 0, end = 0] = (
        /bytes (\d+)-(\d+)/.exec(response.headers.get('content-range') ?? '') ?? []
      )
        .slice(1)
        .map(Number)
      expect(bytes).toEqual(body.slice(start, end + 1))
      expect(replica.faults).toBeGreaterThan(i)
    }
  })
})

describe('R2 faults in retention', () => {
  it('a pass broken by faults leaves every published version whole; the next pass completes', async () => {
    const name = 'r2ret'
    await publishSingle(name, '1.0.0', bytesOf(10_000, 51), 1)
    await publishWithDeltas(name, '1.1.0', bytesOf(10_000, 52), 2, [
      { from: '1.0.0', method: 'vcdiff', bytes: bytesOf(900, 53) },
    ])
    await publishWithDeltas(name, '1.2.0', bytesOf(10_000, 54), 3, [
      { from: '1.1.0', method: 'vcdiff', bytes: bytesOf(900, 55) },
    ])
    const config = RuntimeConfig.parse({ delta: { retainDeltasDays: 1 } })
    const later = Date.now() + 3 * 86_400_000
    let broken = 0
    for (const seed of [1, 2, 3, 4, 5, 6]) {
      const plan: FaultPlan = { rate: 0.3, seed }
      const faulty = new FaultyR2(env.ARTIFACTS, plan)
      const outcome = await pruneStorage(faulty, config, later).then(
        () => 'done',
        (error: unknown) => String(error),
      )
      if (faulty.faults > 0) {
        expect(outcome).toContain('(10001)')
        broken++
      }
      // Retention under storage: 'both' deletes only old deltas into non-heads, never a version.
      await assertConsistentExceptPrunedDeltas(name)
    }
    expect(broken).toBeGreaterThan(0)
    const report = await pruneStorage(env.ARTIFACTS, config, later)
    expect(report.artifacts).toBeGreaterThan(0)
    expect(await env.ARTIFACTS.head(keys.delta(name, '1.0.0', '1.1.0', 'vcdiff'))).toBeNull()
    expect(await env.ARTIFACTS.head(keys.delta(name, '1.1.0', '1.2.0', 'vcdiff'))).not.toBeNull()
    const head = await send(env.ARTIFACTS, `/v1/deltas/${name}/1.1.0/1.2.0`)
    expect(head.response.status).toBe(200)
  })
})

/** assertConsistent for after retention: deltas into versions that are not channel heads may be gone. */
async function assertConsistentExceptPrunedDeltas(name: string): Promise<void> {
  const indexObject = await env.ARTIFACTS.get(keys.index(name))
  const index = ArtifactIndex.parse(await indexObject?.json())
  const heads = new Set(Object.values(index.channels))
  for (const entry of index.versions) {
    expect(await env.ARTIFACTS.head(keys.manifest(name, entry.version))).not.toBeNull()
    expect((await env.ARTIFACTS.head(keys.blob(name, entry.version)))?.size).toBe(entry.size)
    if (!heads.has(entry.version)) continue
    const manifest = SignedManifestSchema.parse(
      await (await env.ARTIFACTS.get(keys.manifest(name, entry.version)))?.json(),
    )
    for (const ref of manifest.signed.deltas) {
      expect(await env.ARTIFACTS.head(keys.delta(name, ref.from, entry.version, ref.method))).not.toBeNull()
    }
  }
}
