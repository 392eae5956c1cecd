import { env, exports } from 'cloudflare:workers'
import { expect } from 'vitest'
import { ArtifactIndex, versionEntry } from '../../schemas/artifact-index.ts'
import type { ArtifactManifest, SignedManifest } from '../../schemas/manifest.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { ED25519, type Envelope, signEnvelope } from '../../schemas/signed-envelope.ts'
import { Problem } from '../http/problem.ts'
import { toHex } from '../publish/verify-object.ts'
import { deleteAll, listAll } from '../retention/bucket-walk.ts'
import { commitVersion } from '../storage/artifact-store.ts'
import { InterceptedBucket, type R2Op } from '../storage/intercepted-bucket.ts'
import { keys } from '../storage/keys.ts'

export const TOKEN = 'test-publish-token'
export const auth = { authorization: `Bearer ${TOKEN}` }

export function call(path: string, init: RequestInit = {}): Promise<Response> {
  return exports.default.fetch(new Request(`https://edge.test${path}`, init))
}

export async function sha256(bytes: Uint8Array): Promise<string> {
  return toHex(new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)))
}

export function bytesOf(length: number, seed = 1): Uint8Array {
  const out = new Uint8Array(length)
  let x = seed
  for (let i = 0; i < length; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    out[i] = x >>> 24
  }
  return out
}

/**
 * An envelope for edge tests. The edge checks signatures only when MAINTAINER_KEYS is set, which the
 * edge tests leave blank (maintainer-keys.test.ts sets it); agents always check them against pinned
 * keys. So a syntactically valid signature is all these tests need.
 */
export async function envelopeFor(
  name: string,
  version: string,
  body: Uint8Array,
  overrides: Partial<ArtifactManifest> = {},
): Promise<SignedManifest> {
  const now = new Date()
  return {
    signed: {
      schemaVersion: 1,
      name,
      version,
      size: body.length,
      sha256: await sha256(body),
      mediaType: 'application/octet-stream',
      dependencies: [],
      channels: ['stable'],
      createdAt: now.toISOString(),
      expires: new Date(now.getTime() + 86_400_000).toISOString(),
      serial: 1,
      chunkIndex: null,
      deltas: [],
      ...overrides,
    },
    signatures: [{ keyid: 'a'.repeat(64), sig: btoa('x'.repeat(64)) }],
  }
}

export async function startPublish(envelope: SignedManifest): Promise<Response> {
  const { name, version } = envelope.signed
  return call(`/v1/publish/${encodeURIComponent(name)}/${version}`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify(envelope),
  })
}

export async function publishSingle(
  name: string,
  version: string,
  body: Uint8Array,
  serial = 1,
  overrides: Partial<ArtifactManifest> = {},
) {
  const envelope = await envelopeFor(name, version, body, { serial, ...overrides })
  const started = await startPublish(envelope)
  if (started.status !== 201) throw new Error(`start failed: ${started.status} ${await started.text()}`)
  const put = await call(`/v1/publish/${encodeURIComponent(name)}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body,
  })
  if (put.status !== 201) throw new Error(`put failed: ${put.status} ${await put.text()}`)
  return envelope
}

/** An Ed25519 key pair for tests that sign: raw public key (base64), its keyid, the private CryptoKey. */
export interface TestKey {
  keyid: string
  publicKey: string
  privateKey: CryptoKey
}

export const base64 = (bytes: Uint8Array) => btoa(String.fromCharCode(...bytes))

/** `body` with one signature by each of `signers`, as `--key a --key b` signs it. */
export async function signedByAll<Body>(body: Body, signers: readonly TestKey[]): Promise<Envelope<Body>> {
  const signatures = []
  for (const key of signers)
    signatures.push(...(await signEnvelope(body, key.keyid, key.privateKey)).signatures)
  return { signed: body, signatures }
}

export async function newTestKey(): Promise<TestKey> {
  const pair = (await crypto.subtle.generateKey(ED25519, true, ['sign', 'verify'])) as CryptoKeyPair
  const raw = new Uint8Array((await crypto.subtle.exportKey('raw', pair.publicKey)) as ArrayBuffer)
  return { keyid: await sha256(raw), publicKey: base64(raw), privateKey: pair.privateKey }
}

/** Expects a problem+json answer of `status` whose type is `slug`, and returns it. */
export async function expectProblem(
  response: Response,
  status: number,
  slug: string,
): Promise<ProblemDetails> {
  expect(response.status, await response.clone().text()).toBe(status)
  expect(response.headers.get('content-type')).toBe('application/problem+json')
  const problem = ProblemDetails.parse(await response.json())
  expect(problem.type).toBe(`https://deltaport.dev/problems/${slug}`)
  return problem
}

/** Deletes every stored root: the chain is global, so root tests start without one. */
export async function clearRoots(): Promise<void> {
  const stored: string[] = []
  for await (const object of listAll(env.ARTIFACTS, 'roots/')) stored.push(object.key)
  await deleteAll(env.ARTIFACTS, stored)
}

/**
 * A PUT of the blob whose body arrives in two halves: the second only once `release` is called (which
 * resolves to the answer, also `response`). For uploads overtaken while their body is on its way.
 */
export function slowPut(name: string, version: string, body: Uint8Array) {
  const { readable, writable } = new FixedLengthStream(body.length)
  const writer = writable.getWriter()
  const half = Math.floor(body.length / 2)
  void writer.write(body.slice(0, half))
  const response = call(`/v1/publish/${name}/${version}/blob`, {
    method: 'PUT',
    headers: { ...auth, 'content-length': String(body.length) },
    body: readable,
  })
  return {
    response,
    async release() {
      await writer.write(body.slice(half))
      await writer.close()
      return response
    },
  }
}

/**
 * An ARTIFACTS whose first `op` on `key` stalls until released: before the call runs, or (`afterCall`)
 * once it ran, as a response that is slow to come back. Stops a request at one R2 call so another can
 * run in between (`atGate` resolves when it got there).
 */
export function stalledAt(op: R2Op, key: string, afterCall = false) {
  let reached: () => void = () => undefined
  const atGate = new Promise<void>((resolve) => {
    reached = resolve
  })
  let open: () => void = () => undefined
  const gate = new Promise<void>((resolve) => {
    open = resolve
  })
  let passed = false
  const bucket = new InterceptedBucket(env.ARTIFACTS, async (called, target, run) => {
    if (called !== op || target !== key || passed) return run()
    passed = true
    if (!afterCall) {
      reached()
      await gate
      return run()
    }
    const result = await run()
    reached()
    await gate
    return result
  })
  return { bucket, atGate, release: () => open() }
}

/**
 * Commits `envelope` as a commit holding its staged manifest does (the upload's last step): 'committed',
 * the status of a refusal, or the error a storage fault threw.
 */
export function commitThrough(bucket: R2Bucket, envelope: SignedManifest, now = Date.now()) {
  return commitVersion(bucket, envelope.signed, JSON.stringify(envelope), now, true).then(
    () => 'committed' as const,
    (error: unknown) => (error instanceof Problem ? error.status : error),
  )
}

/** The manifest served for a version and the index entry it was listed with. */
export async function servedAndListed(name: string, version: string) {
  const served = await call(`/v1/artifacts/${name}/${version}/manifest`)
  const text = served.status === 200 ? await served.text() : null
  const index = await env.ARTIFACTS.get(keys.index(name))
  const entry = index ? versionEntry(ArtifactIndex.parse(await index.json()), version) : undefined
  return { status: served.status, text, entry }
}
