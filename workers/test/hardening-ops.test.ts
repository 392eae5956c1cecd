import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { describe, expect, it } from 'vitest'
import { ProblemDetails } from '../../schemas/problem.ts'
import { callApp } from './delta-helpers.ts'
import { FaultyR2 } from './faulty-r2.ts'
import { auth, bytesOf, call, publishSingle, TOKEN } from './publish-helpers.ts'

/**
 * Hostile input on the operator-facing areas added with issue 9: rollouts (public check and outcomes,
 * maintainer control), shard admin, and the dashboard's two tokens and session cookie. Same rule as
 * everywhere: a problem+json 4xx/5xx, never a 500, and no power leaking from one credential to another.
 */

async function expectProblem(response: Response, statuses: number[], context: string): Promise<void> {
  const text = await response.text()
  expect(statuses, `${context}: ${response.status} ${text.slice(0, 300)}`).toContain(response.status)
  expect(response.headers.get('content-type'), context).toBe('application/problem+json')
  expect(ProblemDetails.parse(JSON.parse(text)).status).toBe(response.status)
}

async function gzip(bytes: Uint8Array): Promise<Uint8Array> {
  const stream = new Blob([bytes]).stream().pipeThrough(new CompressionStream('gzip'))
  return new Uint8Array(await new Response(stream).arrayBuffer())
}

const outcome = (client: string, version = '1.0.0') =>
  JSON.stringify({ client, version, outcome: 'installed' })

const postOutcome = (name: string, body: string | Uint8Array, headers: Record<string, string> = {}) =>
  call(`/v1/rollouts/${name}/stable/outcomes`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  })

async function startRollout(name: string, version: string): Promise<Response> {
  return call(`/v1/rollouts/${name}/stable/start`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ version, stages: [{ percent: 100, durationMs: 60_000 }] }),
  })
}

describe('rollouts under hostile input', () => {
  it('answers bad parameters, unknown rollouts and malformed or oversized outcome bodies with problems', async () => {
    for (const path of [
      '/v1/rollouts/app/stable',
      '/v1/rollouts/app/stable?client=short',
      '/v1/rollouts/app/stable?client=bad%20client%20id!',
      '/v1/rollouts/..%2F..%2Fx/stable?client=client-0001',
      '/v1/rollouts/app/UPPER?client=client-0001',
      `/v1/rollouts/app/${'c'.repeat(100)}?client=client-0001`,
    ]) {
      await expectProblem(await call(path), [400], path)
    }
    await expectProblem(
      await call('/v1/rollouts/norollout/stable?client=client-0001'),
      [404],
      'unknown rollout',
    )
    for (const [label, body] of [
      ['truncated', '{"client":'],
      ['wrong types', '{"client":1,"version":[],"outcome":null}'],
      ['unknown outcome', JSON.stringify({ client: 'client-0001', version: '1.0.0', outcome: 'pwned' })],
      [
        'error class injection',
        JSON.stringify({ ...JSON.parse(outcome('client-0001')), errorClass: '<script>' }),
      ],
      ['nested', `${'['.repeat(5000)}${']'.repeat(5000)}`],
    ] as const) {
      await expectProblem(await postOutcome('norollout', body), [400], label)
    }
    await expectProblem(await postOutcome('norollout', ' '.repeat(17 * 1024)), [413], 'oversized')
    const bomb = await gzip(new Uint8Array(4 * 1024 * 1024).fill(0x20))
    await expectProblem(
      await postOutcome('norollout', bomb, { 'content-encoding': 'gzip' }),
      [413],
      'gzip bomb',
    )
    await expectProblem(
      await postOutcome('norollout', outcome('client-0001'), { 'content-encoding': 'br' }),
      [415],
      'br',
    )
    await expectProblem(await postOutcome('norollout', outcome('client-0001')), [404], 'no rollout')
  })

  it('a probe of a rollout nobody started writes nothing: no object storage per invented name', async () => {
    // Names and channels are the client's choice and each pair is its own object: if asking about one
    // wrote its tables, every made-up pair would leave an object with storage behind, without bound.
    const tables = (name: string, channel: string) =>
      runInDurableObject(
        env.ROLLOUT_COORDINATOR.get(env.ROLLOUT_COORDINATOR.idFromName(`${name}/${channel}`)),
        (_instance, state) =>
          state.storage.sql
            .exec<{ name: string }>("SELECT name FROM sqlite_master WHERE type = 'table'")
            .toArray(),
      )
    await expectProblem(await call('/v1/rollouts/invented-1/nightly?client=client-0001'), [404], 'check')
    await expectProblem(
      await call('/v1/rollouts/invented-2/nightly/outcomes', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: outcome('client-0001'),
      }),
      [404],
      'outcome',
    )
    expect(await tables('invented-1', 'nightly')).toEqual([])
    expect(await tables('invented-2', 'nightly')).toEqual([])

    // A started rollout keeps working as before.
    await publishSingle('realrollout', '1.0.0', bytesOf(300, 3), 1)
    expect((await startRollout('realrollout', '1.0.0')).status).toBe(201)
    expect((await call('/v1/rollouts/realrollout/stable?client=client-0001')).status).toBe(200)
    expect((await postOutcome('realrollout', outcome('client-0001'))).status).toBe(202)
    expect((await tables('realrollout', 'stable')).length).toBeGreaterThan(0)
  })

  it('refuses bad rollout specs, unpublished versions, and rate-limits one client flooding outcomes', async () => {
    await publishSingle('rollflood', '1.0.0', bytesOf(500, 1), 1)
    const bad = async (spec: unknown, statuses: number[], label: string) =>
      expectProblem(
        await call('/v1/rollouts/rollflood/stable/start', {
          method: 'POST',
          headers: { ...auth, 'content-type': 'application/json' },
          body: JSON.stringify(spec),
        }),
        statuses,
        label,
      )
    await bad(
      {
        version: '1.0.0',
        stages: [
          { percent: 50, durationMs: 1000 },
          { percent: 10, durationMs: 1000 },
        ],
      },
      [400],
      'decreasing',
    )
    await bad({ version: '1.0.0', stages: [] }, [400], 'no stages')
    await bad({ version: '1.0.0', stages: [{ percent: 100, durationMs: 1 }] }, [400], 'stage too short')
    await bad(
      {
        version: '1.0.0',
        startAt: new Date(Date.now() + 800 * 86_400_000).toISOString(),
        stages: [{ percent: 100, durationMs: 1000 }],
      },
      [422],
      'two years ahead',
    )
    await bad(
      { version: '9.9.9', stages: [{ percent: 100, durationMs: 1000 }] },
      [404],
      'unpublished version',
    )
    expect((await startRollout('rollflood', '1.0.0')).status).toBe(201)
    await expectProblem(
      await postOutcome('rollflood', outcome('client-0001', '0.0.1')),
      [409],
      'other version',
    )

    const statuses: number[] = []
    let retryAfter: string | null = null
    for (let i = 0; i < 15; i++) {
      const response = await postOutcome('rollflood', outcome('flooding-client-1'))
      statuses.push(response.status)
      if (response.status === 429) {
        retryAfter ??= response.headers.get('retry-after')
        await expectProblem(response, [429], `outcome ${i}`)
      } else await response.body?.cancel()
    }
    expect(statuses.filter((s) => s === 202).length).toBeGreaterThan(0)
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0)
    expect(Number(retryAfter)).toBeGreaterThan(0)
    // The flood does not lock out another client.
    expect((await postOutcome('rollflood', outcome('quiet-client-1'))).status).toBe(202)
  })

  it('a storage fault while starting a rollout is a 503 problem, and the start then succeeds', async () => {
    await publishSingle('rollfault', '1.0.0', bytesOf(500, 2), 1)
    const faulty = new FaultyR2(env.ARTIFACTS, { failNth: { get: [1] } })
    const { response, bytes } = await callApp(
      '/v1/rollouts/rollfault/stable/start',
      {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ version: '1.0.0', stages: [{ percent: 100, durationMs: 60_000 }] }),
      },
      { ...env, ARTIFACTS: faulty },
    )
    expect(response.status, new TextDecoder().decode(bytes)).toBe(503)
    expect(response.headers.get('retry-after')).not.toBeNull()
    expect(faulty.faults).toBe(1)
    expect((await startRollout('rollfault', '1.0.0')).status).toBe(201)
  })
})

describe('shard admin under hostile input', () => {
  it('validates its queries after authentication', async () => {
    for (const path of [
      '/v1/shards/metrics?window=abc',
      '/v1/shards/metrics?window=0',
      '/v1/shards/metrics?window=99999',
      '/v1/shards/migrations?limit=-1',
      '/v1/shards/migrations?limit=1e9',
    ]) {
      await expectProblem(await call(path, { headers: auth }), [400], path)
    }
  })
})

describe('the dashboard renders hostile text inert', () => {
  it('a maintainer-written abort reason with markup never reaches the operator page as markup', async () => {
    await publishSingle('dashxss', '1.0.0', bytesOf(300, 3), 1)
    expect((await startRollout('dashxss', '1.0.0')).status).toBe(201)
    const reason = '<script>alert(1)</script><img src=x onerror=alert(2)>'
    const aborted = await call('/v1/rollouts/dashxss/stable/abort', {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ reason }),
    })
    expect(aborted.status).toBe(200)
    const page = await call('/dashboard', { headers: { authorization: `Bearer ${env.OPERATOR_TOKEN}` } })
    expect(page.status).toBe(200)
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'")
    const text = await page.text()
    expect(text).toContain('dashxss')
    expect(text).not.toContain('<script>alert')
    expect(text).not.toContain('<img src=x')
    // The rollout is on the page (the reason itself may or may not be shown; never as markup).
    expect(text).toContain('aborted')
  })
})

describe('the dashboard keeps its credential to itself', () => {
  const operator = { authorization: `Bearer ${env.OPERATOR_TOKEN}` }

  it('the two tokens are not interchangeable', async () => {
    await expectProblem(await call('/dashboard', { headers: auth }), [401], 'publish token on the dashboard')
    await expectProblem(
      await call('/v1/publish/dash/1.0.0', {
        method: 'POST',
        headers: { ...operator, 'content-type': 'application/json' },
        body: '{}',
      }),
      [401],
      'operator token on publish',
    )
    await expectProblem(await call('/v1/config', { headers: operator }), [401], 'operator token on config')
    expect(TOKEN).not.toBe(env.OPERATOR_TOKEN)
  })

  it('a dashboard session cookie grants nothing on the API, and cross-site logins are refused', async () => {
    const login = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://edge.test' },
      body: `token=${encodeURIComponent(env.OPERATOR_TOKEN)}`,
      redirect: 'manual',
    })
    expect(login.status).toBe(303)
    const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0] ?? ''
    expect(cookie).toContain('=')
    expect((await call('/dashboard', { headers: { cookie } })).status).toBe(200)
    await expectProblem(
      await call('/v1/rollouts/x1/stable/status', { headers: { cookie } }),
      [401],
      'session cookie on a maintainer route',
    )
    const forged = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://evil.example' },
      body: `token=${encodeURIComponent(env.OPERATOR_TOKEN)}`,
      redirect: 'manual',
    })
    expect(forged.status).toBe(403)
    expect(forged.headers.get('set-cookie')).toBeNull()
    const oversized = await call('/dashboard/login', {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://edge.test' },
      body: `token=${'a'.repeat(10_000)}`,
    })
    expect([401, 413]).toContain(oversized.status)
    expect(oversized.headers.get('set-cookie')).toBeNull()
    await oversized.body?.cancel()
  })
})

/**
 * A Durable Object namespace whose stubs fail every call the way the platform fails them (an error
 * flagged `overloaded` or `retryable`, or a plain one), for fault injection like FaultyR2.
 */
function failingNamespace<T extends object>(
  ns: T,
  flags: { overloaded?: boolean; retryable?: boolean },
  message = 'Durable Object is overloaded. Requests queued for too long.',
): T {
  const fail = async () => {
    throw Object.assign(new Error(message), flags)
  }
  return new Proxy(ns, {
    get(target, property) {
      if (property === 'get') return () => new Proxy({}, { get: () => fail })
      const value: unknown = Reflect.get(target, property, target)
      return typeof value === 'function' ? value.bind(target) : value
    },
  })
}

describe('Durable Object faults', () => {
  const telemetry = () => ({
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-deltaport-region': 'dofault' },
    body: JSON.stringify({
      clientId: 'do-fault-client',
      batchSeq: 0,
      sentAt: new Date().toISOString(),
      events: [{ artifact: 'app', version: '1.0.0', at: new Date().toISOString() }],
    }),
  })

  it('an overloaded or retryable aggregator or coordinator is a 503 problem with Retry-After', async () => {
    for (const flags of [{ overloaded: true }, { retryable: true }]) {
      const cases: Array<[string, string, RequestInit, Env]> = [
        [
          'telemetry',
          '/v1/telemetry',
          telemetry(),
          { ...env, REGION_AGGREGATOR: failingNamespace(env.REGION_AGGREGATOR, flags) },
        ],
        [
          'prefetch',
          '/v1/prefetch?client=do-fault-client&region=dofault',
          {},
          { ...env, REGION_AGGREGATOR: failingNamespace(env.REGION_AGGREGATOR, flags) },
        ],
        [
          'rollout check',
          '/v1/rollouts/app/stable?client=do-fault-client',
          {},
          { ...env, ROLLOUT_COORDINATOR: failingNamespace(env.ROLLOUT_COORDINATOR, flags) },
        ],
        [
          'shard plan',
          '/v1/shards',
          {},
          { ...env, SHARD_PLANNER: failingNamespace(env.SHARD_PLANNER, flags) },
        ],
      ]
      for (const [label, path, init, bindings] of cases) {
        const { response, bytes } = await callApp(path, init, bindings)
        const context = `${label} ${JSON.stringify(flags)}: ${new TextDecoder().decode(bytes).slice(0, 200)}`
        expect(response.status, context).toBe(503)
        expect(response.headers.get('retry-after'), context).toBe('2')
        expect(response.headers.get('content-type')).toBe('application/problem+json')
      }
    }
    // An R2 fault inside the object (its own binding) arrives as the RPC error's message.
    const r2Inside = failingNamespace(
      env.REGION_AGGREGATOR,
      {},
      'get: We encountered an internal error. (10001)',
    )
    const { response } = await callApp(
      '/v1/prefetch?client=do-fault-client&region=dofault',
      {},
      {
        ...env,
        REGION_AGGREGATOR: r2Inside,
      },
    )
    expect(response.status).toBe(503)
    // The real bindings still answer.
    expect((await callApp('/v1/telemetry', telemetry())).response.status).toBe(202)
  })

  it('an unflagged failure stays a 500 problem+json (a bug, not a reason to retry)', async () => {
    const { response, bytes } = await callApp('/v1/telemetry', telemetry(), {
      ...env,
      REGION_AGGREGATOR: failingNamespace(env.REGION_AGGREGATOR, {}),
    })
    expect(response.status).toBe(500)
    expect(response.headers.get('retry-after')).toBeNull()
    expect(ProblemDetails.parse(JSON.parse(new TextDecoder().decode(bytes))).status).toBe(500)
  })
})
