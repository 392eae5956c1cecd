import { env } from 'cloudflare:workers'
import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import { ArtifactIndex } from '../../schemas/artifact-index.ts'
import { keys } from '../storage/keys.ts'
import { operatorAuth } from './dashboard-helpers.ts'
import {
  buildRequest,
  fetchDocument,
  fixedExamples,
  type Operation,
  operationsOf,
  requestArbitrary,
  STAGED_BLOB_BYTES,
  sendAndCheck,
  undocumentedAppRoutes,
  type ValidParams,
} from './fuzz-helpers.ts'
import { auth, bytesOf, call, envelopeFor, publishSingle, sha256, startPublish } from './publish-helpers.ts'

/**
 * Property-based fuzzing of every operation in GET /openapi.json (the route registry, which
 * openapi.test.ts holds to the Hono app): hostile path params, queries, headers, bodies, lengths and
 * methods, with and without the right tokens. Every answer must come within a timeout, be no 5xx but a
 * documented 503, and every 4xx a problem+json body that names its status (workers/test/fuzz-helpers.ts).
 * Enrollment (30 a minute per address) is fuzzed on its own in fuzz-enroll.test.ts.
 *
 * Runs are bounded (RUNS per operation); a failure prints fast-check's seed and path, and
 * VITE_EDGE_FUZZ_SEED=<seed> in the environment replays it.
 */

const RUNS = Number(import.meta.env.VITE_EDGE_FUZZ_RUNS) || 40
const ENROLL = 'enrollDevice'
const seedFromEnv = Number(import.meta.env.VITE_EDGE_FUZZ_SEED)
const SEED = Number.isFinite(seedFromEnv) && seedFromEnv !== 0 ? seedFromEnv : Date.now() % 2 ** 31

const NAME = 'fuzz-app'
const OLD = bytesOf(4096, 3)
const NEW = bytesOf(4096, 4)

let doc: Record<string, unknown>
let operations: Operation[]
const valid: ValidParams = {
  name: [NAME],
  // Published, published, staged (its blob not yet uploaded), unknown.
  version: ['1.0.0', '1.1.0', '1.2.0', '9.9.9'],
  from: ['1.0.0', '1.1.0'],
  to: ['1.1.0', '1.0.0'],
  method: ['vcdiff', 'bsdiff', 'approx', 'archive'],
  channel: ['stable', 'beta'],
  part: ['1', '2', '10000'],
  attempt: ['0'.repeat(64)],
  uploadId: ['not-an-issued-upload'],
  id: ['cAAAAAAAAAAAA'],
  deviceId: [`d${'A'.repeat(20)}`],
}

beforeAll(async () => {
  doc = await fetchDocument()
  operations = operationsOf(doc)
  // Valid state, so requests get past 404s into the handlers' deeper checks: two published versions
  // (a delta pair), a staged third with a multipart upload open, and an enrollment code.
  await publishSingle(NAME, '1.0.0', OLD, 1)
  await publishSingle(NAME, '1.1.0', NEW, 2)
  const staged = await startPublish(
    await envelopeFor(NAME, '1.2.0', bytesOf(STAGED_BLOB_BYTES, 5), { serial: 3 }),
  )
  expect(staged.status).toBe(201)
  const upload = await call(`/v1/publish/${NAME}/1.2.0/uploads`, { method: 'POST', headers: auth })
  if (upload.status === 201)
    valid.uploadId = [String(((await upload.json()) as { uploadId: string }).uploadId)]
  const code = await call('/v1/devices/enrollment-codes', {
    method: 'POST',
    headers: { ...operatorAuth, 'content-type': 'application/json' },
    body: JSON.stringify({ label: 'fuzz', maxDevices: 2 }),
  })
  expect(code.status).toBe(201)
  valid.id = [String(((await code.json()) as { id: string }).id)]
})

describe('fuzzing every documented route', () => {
  it('the document covers every route the app serves (what is fuzzed is what is served)', () => {
    expect(undocumentedAppRoutes(doc)).toEqual([])
    expect(operations.length).toBeGreaterThan(40)
    expect(operations.some((o) => o.operationId === ENROLL)).toBe(true)
  })

  it('answers hostile requests with a problem+json 4xx (or a documented answer), never a 5xx or a hang', {
    timeout: 120_000,
  }, async () => {
    const answered = new Map<number, number>()
    for (const op of operations) {
      if (op.operationId === ENROLL) continue
      await fc
        .assert(
          fc.asyncProperty(requestArbitrary(doc, op), async (spec) => {
            const status = await sendAndCheck(op, await buildRequest(op, spec, valid))
            answered.set(status, (answered.get(status) ?? 0) + 1)
          }),
          {
            numRuns: RUNS,
            seed: SEED,
            endOnFailure: true,
            examples: fixedExamples(op).map((spec) => [spec]),
          },
        )
        .catch((error: unknown) => {
          const cause = error instanceof Error && error.cause ? `\ncaused by: ${String(error.cause)}` : ''
          throw new Error(`${op.method} ${op.path} (VITE_EDGE_FUZZ_SEED=${SEED}): ${String(error)}${cause}`)
        })
    }
    console.log(JSON.stringify({ seed: SEED, answered: [...answered].sort((a, b) => a[0] - b[0]) }))
    // The fuzz reached the handlers, not only the 404 and 401 in front of them.
    const statuses = [...answered.keys()]
    expect(statuses.filter((s) => s < 300).length, JSON.stringify([...answered])).toBeGreaterThan(0)
    expect(statuses).toEqual(expect.arrayContaining([400, 404]))
  })

  it('left the seeded versions as they were published (no partial writes)', async () => {
    const stored = await env.ARTIFACTS.get(keys.index(NAME))
    expect(stored).not.toBeNull()
    const index = ArtifactIndex.parse(await stored?.json())
    expect(index.versions.map((v) => v.version)).toEqual(expect.arrayContaining(['1.0.0', '1.1.0']))
    for (const [version, bytes] of [
      ['1.0.0', OLD],
      ['1.1.0', NEW],
    ] as const) {
      const blob = await call(`/v1/artifacts/${NAME}/${version}/blob`)
      expect(blob.status).toBe(200)
      expect(await sha256(new Uint8Array(await blob.arrayBuffer()))).toBe(await sha256(bytes))
    }
  })
})
