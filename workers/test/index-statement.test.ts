/**
 * INDEX_SIGNING_KEY (ADR 0032): with a key, every index answer carries a short-lived statement that
 * devices can check against the key's public half; blank sends indexes unsigned; a malformed key is
 * the operator's mistake (500), never an unsigned answer. Real Ed25519 keys and real R2/KV in workerd.
 */
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it } from 'vitest'
import { control, HOUR, rolloutPath, startRollout } from '../../durable-objects/test/rollout-helpers.ts'
import type { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { digestWithoutStatement, indexDigest, ServedIndex } from '../../schemas/index-statement.ts'
import { ServedPrefetchQueue } from '../../schemas/prefetch.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { ServedRolloutCheck } from '../../schemas/rollout-statement.ts'
import { ED25519, keyIdOf, verifyEnvelope } from '../../schemas/signed-envelope.ts'
import { app } from '../app.ts'
import { clearRuntimeConfigCache, RUNTIME_CONFIG_KEY } from '../config/runtime-config.ts'
import { keys } from '../storage/keys.ts'
import { base64, bytesOf, publishSingle } from './publish-helpers.ts'

async function edgeKey() {
  const pair = (await crypto.subtle.generateKey(ED25519, true, ['sign', 'verify'])) as CryptoKeyPair
  const raw = new Uint8Array((await crypto.subtle.exportKey('raw', pair.publicKey)) as ArrayBuffer)
  const pkcs8 = new Uint8Array((await crypto.subtle.exportKey('pkcs8', pair.privateKey)) as ArrayBuffer)
  return { privateKey: base64(pkcs8), trusted: { keyid: await keyIdOf(raw), publicKey: base64(raw) } }
}

const stored: ArtifactIndex = {
  name: 'signed-ix',
  latestSerial: 2,
  versions: [
    {
      version: '1.0.0',
      serial: 1,
      size: 10,
      sha256: 'a'.repeat(64),
      createdAt: '2026-11-01T00:00:00.000Z',
      channels: [],
      yanked: { at: '2026-11-02T00:00:00.000Z', reason: 'broken build' },
    },
    {
      version: '1.1.0',
      serial: 2,
      size: 12,
      sha256: 'b'.repeat(64),
      createdAt: '2026-11-03T00:00:00.000Z',
      channels: ['stable'],
    },
  ],
  channels: { stable: '1.1.0' },
}
await env.ARTIFACTS.put(keys.index(stored.name), JSON.stringify(stored))

const getIndex = (key: string) =>
  app.request(`/v1/artifacts/${stored.name}`, {}, { ...env, INDEX_SIGNING_KEY: key })

afterEach(async () => {
  await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
  clearRuntimeConfigCache()
})

describe('signed index statements at the edge', () => {
  it('signs each index it serves: the exact index, its serial, valid for a day by default', async () => {
    const key = await edgeKey()
    const before = Date.now()
    const response = await getIndex(key.privateKey)
    expect(response.status).toBe(200)
    const json = (await response.json()) as Record<string, unknown>
    const { statement, ...index } = ServedIndex.parse(json)
    expect(index).toEqual(stored)
    expect(statement).toBeDefined()
    expect(statement!.signatures.map((s) => s.keyid)).toEqual([key.trusted.keyid])
    expect(await verifyEnvelope(statement!, [key.trusted])).toBe(true)
    expect(await verifyEnvelope(statement!, [(await edgeKey()).trusted])).toBe(false)
    const said = statement!.signed
    expect(said).toMatchObject({ _type: 'deltaport/index', name: stored.name, latestSerial: 2 })
    expect(said.indexSha256).toBe(await indexDigest(json))
    const issued = Date.parse(said.issuedAt)
    expect(issued).toBeGreaterThanOrEqual(before - 1000)
    expect(Date.parse(said.expires) - issued).toBe(24 * 3600 * 1000)
    // Any change to what was served changes the digest the signature covers.
    expect(await indexDigest({ ...json, channels: { stable: '1.0.0' } })).not.toBe(said.indexSha256)
  })

  it('takes the lifetime from the runtime config', async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ index: { statementTtlSeconds: 600 } }))
    clearRuntimeConfigCache()
    const { statement } = ServedIndex.parse(await (await getIndex((await edgeKey()).privateKey)).json())
    expect(Date.parse(statement!.signed.expires) - Date.parse(statement!.signed.issuedAt)).toBe(600_000)
  })

  it('serves the index unsigned when the key is blank', async () => {
    const json = (await (await getIndex('  ')).json()) as Record<string, unknown>
    expect('statement' in json).toBe(false)
    expect(ServedIndex.parse(json)).toEqual(stored)
  })

  it('answers 500 naming the setting, never an unsigned index, when the key is malformed', async () => {
    const { publicKey } = (await edgeKey()).trusted
    for (const malformed of ['not base64!', btoa('thirty-two bytes of nothing.....'), publicKey]) {
      const response = await getIndex(malformed)
      expect(response.status).toBe(500)
      expect(ProblemDetails.parse(await response.json()).detail).toContain('INDEX_SIGNING_KEY')
    }
  })
})

describe('signed rollout answers at the edge (ADR 0034)', () => {
  const ROLLOUT = 'signed-ro'
  const checkAs = (client: string, key: string) =>
    app.request(`${rolloutPath(ROLLOUT)}?client=${client}`, {}, { ...env, INDEX_SIGNING_KEY: key })

  it('signs each answer for the client that asked, covering exactly that answer', async () => {
    await publishSingle(ROLLOUT, '1.0.0', bytesOf(40, 31))
    const spec = { version: '1.0.0', stages: [{ percent: 100, durationMs: HOUR }] }
    expect((await startRollout(ROLLOUT, spec)).status).toBe(201)
    const key = await edgeKey()
    const response = await checkAs('client-signed-1', key.privateKey)
    expect(response.status).toBe(200)
    const json = (await response.json()) as Record<string, unknown>
    const { statement, ...check } = ServedRolloutCheck.parse(json)
    expect(check).toMatchObject({ name: ROLLOUT, channel: 'stable', in: true, version: '1.0.0' })
    expect(await verifyEnvelope(statement!, [key.trusted])).toBe(true)
    const said = statement!.signed
    expect(said).toMatchObject({
      _type: 'deltaport/rollout-check',
      name: ROLLOUT,
      channel: 'stable',
      client: 'client-signed-1',
      checkSha256: await digestWithoutStatement(json),
    })
    // An "in" answer moves the device: valid an hour, not the index statement's day, so one collected
    // now and replayed after an abort cannot move the device to the aborted version a day long.
    expect(Date.parse(said.expires) - Date.parse(said.issuedAt)).toBe(3600 * 1000)
    // A "not yet" would be a different answer, so it cannot reuse this signature.
    expect(await digestWithoutStatement({ ...json, in: false, version: null })).not.toBe(said.checkSha256)
    // Blank key: the answer goes out as before, unsigned; a malformed one never does.
    expect('statement' in ((await (await checkAs('client-signed-1', '')).json()) as object)).toBe(false)
    const malformed = await checkAs('client-signed-1', 'not base64!')
    expect(malformed.status).toBe(500)
    expect(ProblemDetails.parse(await malformed.json()).detail).toContain('INDEX_SIGNING_KEY')

    // Aborted, the answer holds the device: that one keeps the index statement's lifetime.
    expect((await control(ROLLOUT, 'abort')).status).toBe(200)
    const held = ServedRolloutCheck.parse(await (await checkAs('client-signed-1', key.privateKey)).json())
    expect(held).toMatchObject({ in: false, state: 'aborted' })
    const heldSaid = held.statement!.signed
    expect(Date.parse(heldSaid.expires) - Date.parse(heldSaid.issuedAt)).toBe(24 * 3600 * 1000)
  })
})

describe('signed prefetch plans at the edge (ADR 0034, amended 2026-11-26)', () => {
  const ART = 'signed-pf'
  const REGION = 'pf-signed'
  const planFor = (client: string, key: string) =>
    app.request(
      `/v1/prefetch?client=${client}&region=${REGION}&installed=${ART}@0.9.0`,
      {},
      { ...env, INDEX_SIGNING_KEY: key },
    )

  it('signs each queue for the client and region it was planned for, covering every item', async () => {
    const published = await publishSingle(ART, '1.0.0', bytesOf(600, 41))
    const key = await edgeKey()
    const response = await planFor('client-pf-signed-1', key.privateKey)
    expect(response.status).toBe(200)
    const json = (await response.json()) as Record<string, unknown>
    const { statement, ...queue } = ServedPrefetchQueue.parse(json)
    // The older installed version makes the head a scheduled update: the queue has an item to bind.
    expect(queue.items.map((i) => `${i.name}@${i.version}`)).toContain(`${ART}@1.0.0`)
    expect(queue.items.find((i) => i.name === ART)?.plan.sha256).toBe(published.signed.sha256)
    expect(statement).toBeDefined()
    expect(await verifyEnvelope(statement!, [key.trusted])).toBe(true)
    expect(await verifyEnvelope(statement!, [(await edgeKey()).trusted])).toBe(false)
    const said = statement!.signed
    expect(said).toMatchObject({
      _type: 'deltaport/prefetch-plan',
      client: 'client-pf-signed-1',
      region: REGION,
      queueSha256: await digestWithoutStatement(json),
    })
    // Valid an hour at most (MAX_PLAN_TTL_SECONDS), not the index statement's day.
    expect(Date.parse(said.expires) - Date.parse(said.issuedAt)).toBe(3600 * 1000)
    // Another item, version or plan is another queue: the signature does not carry over.
    const items = queue.items.map((i) => (i.name === ART ? { ...i, version: '0.9.1' } : i))
    expect(await digestWithoutStatement({ ...json, items })).not.toBe(said.queueSha256)

    // Each client's queue is signed for that client; a repeat answered from the cache is signed too.
    const other = ServedPrefetchQueue.parse(
      await (await planFor('client-pf-signed-2', key.privateKey)).json(),
    )
    expect(other.statement!.signed.client).toBe('client-pf-signed-2')
    const repeat = (await (await planFor('client-pf-signed-1', key.privateKey)).json()) as Record<
      string,
      unknown
    >
    const repeated = ServedPrefetchQueue.parse(repeat).statement!.signed
    expect(repeated).toMatchObject({
      client: 'client-pf-signed-1',
      queueSha256: await digestWithoutStatement(repeat),
    })

    // Blank key: unsigned, as before; a malformed one answers 500, never an unsigned queue.
    expect('statement' in ((await (await planFor('client-pf-signed-3', '')).json()) as object)).toBe(false)
    const malformed = await planFor('client-pf-signed-4', 'not base64!')
    expect(malformed.status).toBe(500)
    expect(ProblemDetails.parse(await malformed.json()).detail).toContain('INDEX_SIGNING_KEY')
  })
})
