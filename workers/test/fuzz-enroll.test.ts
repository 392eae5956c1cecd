import fc from 'fast-check'
import { beforeAll, describe, expect, it } from 'vitest'
import { operatorAuth } from './dashboard-helpers.ts'
import {
  buildRequest,
  fetchDocument,
  fixedExamples,
  type Operation,
  operationsOf,
  type RequestSpec,
  requestArbitrary,
  sendAndCheck,
} from './fuzz-helpers.ts'
import { call } from './publish-helpers.ts'

/**
 * The fuzz of workers/test/fuzz-routes.test.ts for POST /v1/devices/enroll, on its own: the edge takes
 * at most 30 enrollments a minute per address (ENROLL_RATE_LIMITER), so this file sends fewer than that.
 * Half the bodies carry a real enrollment code with hostile other fields, so they reach the registry.
 */

const RUNS = 24
const seedFromEnv = Number(import.meta.env.VITE_EDGE_FUZZ_SEED)
const SEED = Number.isFinite(seedFromEnv) && seedFromEnv !== 0 ? seedFromEnv : Date.now() % 2 ** 31

let doc: Record<string, unknown>
let enroll: Operation
let code: string

beforeAll(async () => {
  doc = await fetchDocument()
  const found = operationsOf(doc).find((o) => o.operationId === 'enrollDevice')
  if (!found) throw new Error('POST /v1/devices/enroll is not in the OpenAPI document')
  enroll = found
  const created = await call('/v1/devices/enrollment-codes', {
    method: 'POST',
    headers: { ...operatorAuth, 'content-type': 'application/json' },
    body: JSON.stringify({ label: 'fuzz-enroll', maxDevices: 3 }),
  })
  expect(created.status).toBe(201)
  code = String(((await created.json()) as { code: string }).code)
})

const HOSTILE = [
  undefined,
  null,
  '',
  'x'.repeat(65),
  'host\u0000name',
  'dpc1.x.y',
  'a'.repeat(161),
  7,
  [],
  {},
]

describe('POST /v1/devices/enroll under fuzzing', () => {
  it('answers hostile enrollments with a problem+json 4xx, never a 5xx or a hang', async () => {
    const withRealCode = fc
      .record({ deviceName: fc.constantFrom(...HOSTILE), credential: fc.constantFrom(...HOSTILE) })
      .map((fields) => ({ kind: 'json' as const, value: { code, ...fields } }))
    const arbitrary = fc
      .tuple(requestArbitrary(doc, enroll), fc.boolean(), withRealCode)
      .map(([spec, real, body]): RequestSpec => (real ? { ...spec, body } : spec))
    const answered: number[] = []
    await fc
      .assert(
        fc.asyncProperty(arbitrary, async (spec) => {
          answered.push(await sendAndCheck(enroll, await buildRequest(enroll, spec, {})))
        }),
        {
          numRuns: RUNS,
          seed: SEED,
          endOnFailure: true,
          examples: fixedExamples(enroll).map((spec) => [spec]),
        },
      )
      .catch((error: unknown) => {
        const cause = error instanceof Error && error.cause ? `\ncaused by: ${String(error.cause)}` : ''
        throw new Error(`POST /v1/devices/enroll (VITE_EDGE_FUZZ_SEED=${SEED}): ${String(error)}${cause}`)
      })
    expect(answered.length).toBe(RUNS)
    expect(answered.filter((s) => s === 429)).toEqual([])
  })
})
