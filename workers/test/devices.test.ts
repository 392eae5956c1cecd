/**
 * Device enrollment (ADR 0026) with real bindings: enrollment codes in the DeviceRegistry Durable Object,
 * credentials verified by the Worker, the device id replacing self-chosen client ids in telemetry,
 * rollout outcomes and prefetch queries, and `devices.requireCredential` in the KV runtime config.
 */
import { runInDurableObject } from 'cloudflare:test'
import { env } from 'cloudflare:workers'
import { afterEach, describe, expect, it } from 'vitest'
import { MAX_LIVE_REVOCATIONS, MAX_RECORDED_DEVICES } from '../../durable-objects/device-table.ts'
import { batchOf, postTelemetry } from '../../durable-objects/test/helpers.ts'
import { reportOutcome, startRollout, statusOf } from '../../durable-objects/test/rollout-helpers.ts'
import {
  CREDENTIAL_RENEW_HEADER,
  DeviceEnrollment,
  DeviceInfo,
  DeviceList,
  EnrollmentCodeCreated,
  EnrollmentCodeInfo,
  EnrollmentCodeList,
  EnrollmentCodeRecord,
} from '../../schemas/devices.ts'
import { ProblemDetails } from '../../schemas/problem.ts'
import { RolloutStatus } from '../../schemas/rollout.ts'
import { app } from '../app.ts'
import {
  clearRuntimeConfigCache,
  RUNTIME_CONFIG_KEY,
  setRuntimeConfigClock,
} from '../config/runtime-config.ts'
import { clearCodeStateCache } from '../devices/authenticate.ts'
import { signCredential } from '../devices/credential.ts'
import { OPERATOR_TOKEN } from './dashboard-helpers.ts'
import { auth, bytesOf, call, publishSingle } from './publish-helpers.ts'

const operator = { authorization: `Bearer ${OPERATOR_TOKEN}` }
const json = { 'content-type': 'application/json' }

async function expectProblem(res: Response, status: number, slug?: string): Promise<ProblemDetails> {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  const problem = ProblemDetails.parse(await res.json())
  if (slug !== undefined) expect(problem.type).toBe(`https://deltaport.dev/problems/${slug}`)
  return problem
}

async function createCode(body: Record<string, unknown>): Promise<EnrollmentCodeCreated> {
  const res = await call('/v1/devices/enrollment-codes', {
    method: 'POST',
    headers: { ...operator, ...json },
    body: JSON.stringify(body),
  })
  expect(res.status).toBe(201)
  return EnrollmentCodeCreated.parse(await res.json())
}

let devicesSeen = 0
/** Each enrollment comes from its own network (a /64 of its own), as devices do, unless the test names one. */
function enroll(body: Record<string, unknown>, address = `2001:db8:${(++devicesSeen).toString(16)}::1`) {
  return call('/v1/devices/enroll', {
    method: 'POST',
    headers: { ...json, 'cf-connecting-ip': address },
    body: JSON.stringify(body),
  })
}

async function enrolled(code: string, extra: Record<string, unknown> = {}): Promise<DeviceEnrollment> {
  const res = await enroll({ code, ...extra })
  expect([200, 201]).toContain(res.status)
  return DeviceEnrollment.parse(await res.json())
}

async function listCodes(): Promise<EnrollmentCodeInfo[]> {
  const res = await call('/v1/devices/enrollment-codes', { headers: operator })
  expect(res.status).toBe(200)
  return EnrollmentCodeList.parse(await res.json()).codes
}

function revoke(id: string): Promise<Response> {
  return call(`/v1/devices/enrollment-codes/${id}/revoke`, { method: 'POST', headers: operator })
}

async function listDevices(query = ''): Promise<DeviceList> {
  const res = await call(`/v1/devices${query}`, { headers: operator })
  expect(res.status).toBe(200)
  expect(res.headers.get('cache-control')).toBe('no-store')
  return DeviceList.parse(await res.json())
}

function revokeDevice(id: string, headers: Record<string, string> = operator): Promise<Response> {
  return call(`/v1/devices/${id}/revoke`, { method: 'POST', headers })
}

/** The expiry a credential carries (`dp1.<device>.<code>.<issuedAt>.<expiresAt>.<mac>`), as ISO. */
const credentialExpiry = (credential: string) =>
  new Date(Number(credential.split('.')[4]) * 1000).toISOString()

const device = (credential: string) => ({ authorization: `Device ${credential}` })

function postDeviceTelemetry(region: string, body: unknown, credential?: string): Promise<Response> {
  return call('/v1/telemetry', {
    method: 'POST',
    headers: {
      ...json,
      'x-deltaport-region': region,
      ...(credential === undefined ? {} : device(credential)),
    },
    body: JSON.stringify(body),
  })
}

const regionStub = (region: string) => env.REGION_AGGREGATOR.get(env.REGION_AGGREGATOR.idFromName(region))
const registry = () => env.DEVICE_REGISTRY.get(env.DEVICE_REGISTRY.idFromName('global'))

async function setRequirement(requireCredential: 'off' | 'reports' | 'all'): Promise<void> {
  await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ devices: { requireCredential } }))
  clearRuntimeConfigCache()
}

/** Runs SQL inside the registry (to set up states the routes cannot reach quickly). */
function registrySql<T>(fn: (sql: SqlStorage) => T): Promise<T> {
  return runInDurableObject(registry(), (_instance, state) => fn(state.storage.sql))
}

afterEach(async () => {
  setRuntimeConfigClock(null)
  await env.CONFIG.delete(RUNTIME_CONFIG_KEY)
  clearRuntimeConfigCache()
  clearCodeStateCache()
})

describe('enrollment codes (operator)', () => {
  it('need the operator token; the maintainer token is not enough', async () => {
    for (const headers of [{}, auth, { authorization: `Bearer ${OPERATOR_TOKEN}x` }]) {
      const res = await call('/v1/devices/enrollment-codes', {
        method: 'POST',
        headers: { ...headers, ...json },
        body: JSON.stringify({ label: 'nope', maxDevices: 1 }),
      })
      await expectProblem(res, 401, 'unauthorized')
    }
    await expectProblem(await call('/v1/devices/enrollment-codes', { headers: auth }), 401)
    await expectProblem(
      await call('/v1/devices/enrollment-codes/cAAAAAAAAAAAA/revoke', { method: 'POST', headers: auth }),
      401,
    )
  })

  it('answers the code once and stores only its hash', async () => {
    const created = await createCode({ label: 'factory-A', maxDevices: 5, expiresDays: 7 })
    expect(created.info).toMatchObject({ label: 'factory-A', maxDevices: 5, enrolled: 0, revokedAt: null })
    const listed = await listCodes()
    expect(listed.find((c) => c.id === created.info.id)?.label).toBe('factory-A')
    expect(JSON.stringify(listed)).not.toContain(created.code)
    const rows = await runInDurableObject(registry(), (_instance, state) =>
      state.storage.sql
        .exec<{ code_hash: string; record: string }>('SELECT code_hash, record FROM codes')
        .toArray(),
    )
    const row = rows.find((r) => EnrollmentCodeRecord.parse(JSON.parse(r.record)).id === created.info.id)
    expect(row?.code_hash).toMatch(/^[0-9a-f]{64}$/)
    expect(JSON.stringify(rows)).not.toContain(created.code)
  })

  it('refuses invalid requests with the fields named', async () => {
    for (const body of [
      { label: '', maxDevices: 1 },
      { label: 'x', maxDevices: 0 },
      { label: 'x', maxDevices: 1, expiresDays: 99999 },
    ]) {
      const res = await call('/v1/devices/enrollment-codes', {
        method: 'POST',
        headers: { ...operator, ...json },
        body: JSON.stringify(body),
      })
      await expectProblem(res, 400)
    }
    await expectProblem(await revoke('not-an-id'), 400)
    await expectProblem(await revoke('cAAAAAAAAAAAA'), 404)
  })
})

describe('POST /v1/devices/enroll', () => {
  it('is bounded by maxDevices; renewing an enrolled device uses no slot', async () => {
    const { code, info } = await createCode({ label: 'bounded', maxDevices: 3 })
    const devices = [
      await enrolled(code),
      await enrolled(code),
      await enrolled(code, { deviceName: 'host-3' }),
    ]
    expect(new Set(devices.map((d) => d.deviceId)).size).toBe(3)
    for (const d of devices) {
      expect(d.codeId).toBe(info.id)
      expect(d.renewed).toBe(false)
    }
    const full = await expectProblem(await enroll({ code }), 409, 'conflict')
    expect(full.detail).toContain('3 devices')
    const renewed = await enrolled(code, { credential: devices[0]?.credential })
    expect(renewed).toMatchObject({ deviceId: devices[0]?.deviceId, renewed: true })
    expect((await listCodes()).find((c) => c.id === info.id)?.enrolled).toBe(3)
  })

  it('refuses new devices after the code expired, but still renews its devices', async () => {
    const { code, info } = await createCode({ label: 'expiring', maxDevices: 10, expiresDays: 1 })
    const first = await enrolled(code)
    await runInDurableObject(registry(), (_instance, state) => {
      const row = state.storage.sql
        .exec<{ record: string }>('SELECT record FROM codes WHERE id = ?', info.id)
        .one()
      const record = EnrollmentCodeRecord.parse(JSON.parse(row.record))
      state.storage.sql.exec(
        'UPDATE codes SET record = ? WHERE id = ?',
        JSON.stringify({ ...record, expiresAt: Date.now() - 1000 }),
        info.id,
      )
    })
    const expired = await expectProblem(await enroll({ code }), 403, 'enrollment-refused')
    expect(expired.detail).toContain('expired')
    expect((await enrolled(code, { credential: first.credential })).deviceId).toBe(first.deviceId)
  })

  it('refuses unknown codes and garbled bodies; a credential of another code renews nothing', async () => {
    await expectProblem(await enroll({ code: `dpe1_${'A'.repeat(32)}` }), 403, 'enrollment-refused')
    await expectProblem(await enroll({ code: 'hello' }), 400)
    await expectProblem(
      await call('/v1/devices/enroll', { method: 'POST', headers: json, body: '{"code":' }),
      400,
    )
    const a = await createCode({ label: 'code-a', maxDevices: 2 })
    const b = await createCode({ label: 'code-b', maxDevices: 2 })
    const fromA = await enrolled(a.code)
    const viaB = await enrolled(b.code, { credential: fromA.credential })
    expect(viaB.renewed).toBe(false)
    expect(viaB.deviceId).not.toBe(fromA.deviceId)
  })

  it('is rate-limited per code', async () => {
    const { code } = await createCode({ label: 'burst', maxDevices: 1000 })
    const statuses: number[] = []
    // The bucket holds 60 and refills one a second, so a slow (loaded) machine may get one more in
    // for each second the burst takes: bounded by the elapsed time, never unlimited.
    const started = Date.now()
    while (statuses.length < 200 && statuses.at(-1) !== 429) {
      const res = await enroll({ code })
      statuses.push(res.status)
      if (res.status === 429) expect(Number(res.headers.get('retry-after'))).toBeGreaterThanOrEqual(1)
      await res.body?.cancel()
    }
    const refilled = Math.ceil((Date.now() - started) / 1000)
    const admitted = statuses.filter((s) => s === 201).length
    expect(admitted).toBeGreaterThanOrEqual(60)
    expect(admitted).toBeLessThanOrEqual(60 + refilled)
    expect(statuses.at(-1)).toBe(429)
    // Another code is not affected.
    const other = await createCode({ label: 'burst-other', maxDevices: 1 })
    expect((await enroll({ code: other.code })).status).toBe(201)
  })

  it('is rate-limited per address before the registry is asked, whatever the code', async () => {
    const { code } = await createCode({ label: 'per-address', maxDevices: 5 })
    const guesser = '203.0.113.7'
    const statuses: number[] = []
    for (let i = 0; i < 31; i++) {
      const res = await enroll({ code: `dpe1_${i.toString().padStart(32, 'G')}` }, guesser)
      statuses.push(res.status)
      await res.body?.cancel()
    }
    // 30 guesses are refused by the registry; the 31st never reaches it.
    expect(statuses.slice(0, 30).every((s) => s === 403)).toBe(true)
    const limited = await enroll({ code }, guesser)
    const problem = await expectProblem(limited, 429, 'too-many-requests')
    expect(problem.detail).toContain('this address')
    expect(limited.headers.get('retry-after')).toBe('60')
    expect(statuses.at(-1)).toBe(429)
    // A device elsewhere enrolls with the same code.
    expect((await enroll({ code }, '203.0.113.8')).status).toBe(201)
  })

  it('counts an IPv6 client by its /64, whichever of its addresses each request comes from', async () => {
    const { code } = await createCode({ label: 'per-network', maxDevices: 5 })
    const host = (i: number) => `2001:db8:ffff:1::${(i + 1).toString(16)}`
    const statuses: number[] = []
    for (let i = 0; i < 31; i++) {
      const res = await enroll({ code: `dpe1_${i.toString().padStart(32, 'H')}` }, host(i))
      statuses.push(res.status)
      await res.body?.cancel()
    }
    expect(statuses.slice(0, 30).every((s) => s === 403)).toBe(true)
    expect(statuses.at(-1)).toBe(429)
    await expectProblem(await enroll({ code }, '2001:db8:ffff:1:abcd:1:2:3'), 429, 'too-many-requests')
    // The next /64 is another network.
    expect((await enroll({ code }, '2001:db8:ffff:2::1')).status).toBe(201)
  })
})

describe('device credentials on reports', () => {
  it('count one device as one client whatever client ids its batches name', async () => {
    const { code } = await createCode({ label: 'one-device', maxDevices: 1 })
    const me = await enrolled(code)
    const first = await postDeviceTelemetry(
      'dev-one',
      batchOf('invented-client-1', 0, ['app-x']),
      me.credential,
    )
    expect(first.status).toBe(202)
    expect(await first.json()).toMatchObject({ accepted: 1, duplicate: false })
    // Same sequence under another invented id: the edge sees the same client, so it is a replay.
    const again = await postDeviceTelemetry(
      'dev-one',
      batchOf('invented-client-2', 0, ['app-x']),
      me.credential,
    )
    expect(await again.json()).toMatchObject({ accepted: 0, duplicate: true, lastSeq: 0 })
    for (let i = 0; i < 5; i++) {
      const res = await postDeviceTelemetry(
        'dev-one',
        batchOf(`invented-client-${i + 10}`, i + 1, ['app-x']),
        me.credential,
      )
      expect(res.status).toBe(202)
    }
    expect((await regionStub('dev-one').snapshot()).population).toBe(1)
    // Anonymous (allowed by default): each invented id is a client of its own — the hole this closes.
    for (let i = 0; i < 3; i++)
      expect((await postTelemetry('anon-many', batchOf(`anonymous-client-${i}`, 0, ['app-x']))).status).toBe(
        202,
      )
    expect((await regionStub('anon-many').snapshot()).population).toBe(3)
  })

  it('refuse forged, garbled, expired and foreign credentials with 401 even when not required', async () => {
    const { code } = await createCode({ label: 'forgery', maxDevices: 1 })
    const real = await enrolled(code)
    const mac = real.credential.slice(-43)
    const flipped = `${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`
    const parts = real.credential.split('.')
    const forged = [
      `${real.credential.slice(0, -43)}${flipped}`,
      // Another device id under the real MAC.
      [parts[0], `d${'Z'.repeat(20)}`, ...parts.slice(2)].join('.'),
      // A later expiry under the real MAC.
      [...parts.slice(0, 4), '99999999999', parts[5]].join('.'),
      await signCredential('not-the-edge-secret', {
        deviceId: real.deviceId,
        codeId: real.codeId,
        issuedAt: 1,
        expiresAt: 99_999_999_999,
      }),
    ]
    for (const credential of forged) {
      const res = await postDeviceTelemetry('dev-forged', batchOf('forger-0001', 0, ['app-y']), credential)
      await expectProblem(res, 401, 'device-credential-invalid')
      expect(res.headers.get('www-authenticate')).toContain('Device')
    }
    for (const header of ['Device', 'Device ', 'Device garbage', `Device ${'x'.repeat(5000)}`]) {
      const res = await call('/v1/telemetry', {
        method: 'POST',
        headers: { ...json, authorization: header },
        body: JSON.stringify(batchOf('forger-0002', 0, ['app-y'])),
      })
      await expectProblem(res, 401, 'device-credential-invalid')
    }
    const expired = await signCredential(env.DEVICE_TOKEN_SECRET, {
      deviceId: real.deviceId,
      codeId: real.codeId,
      issuedAt: 1,
      expiresAt: Math.floor(Date.now() / 1000) - 10,
    })
    await expectProblem(
      await postDeviceTelemetry('dev-forged', batchOf('forger-0003', 0, ['app-y']), expired),
      401,
      'device-credential-expired',
    )
    // A MAC-valid credential naming a code the registry never issued.
    const unknownCode = await signCredential(env.DEVICE_TOKEN_SECRET, {
      deviceId: real.deviceId,
      codeId: 'cUNKNOWNCODE0',
      issuedAt: 1,
      expiresAt: 99_999_999_999,
    })
    await expectProblem(
      await postDeviceTelemetry('dev-forged', batchOf('forger-0004', 0, ['app-y']), unknownCode),
      401,
      'device-credential-invalid',
    )
    expect((await regionStub('dev-forged').snapshot()).population).toBe(0)
    const prefetch = await call('/v1/prefetch?client=forger-0005', { headers: device(forged[0] ?? '') })
    await expectProblem(prefetch, 401, 'device-credential-invalid')
  })

  it('survive a DEVICE_TOKEN_SECRET rotation: a retired key still verifies, and its devices are asked to renew', async () => {
    const { code } = await createCode({ label: 'rotation', maxDevices: 2 })
    const real = await enrolled(code)
    const now = Math.floor(Date.now() / 1000)
    const claims = { deviceId: real.deviceId, codeId: real.codeId, issuedAt: now, expiresAt: now + 3600 }
    const underRetiredKey = await signCredential('the-retired-key', claims)
    // The edge mid-rotation: DEVICE_TOKEN_SECRET holds the signing key, then the one going out.
    const rotating = { ...env, DEVICE_TOKEN_SECRET: `  ${env.DEVICE_TOKEN_SECRET}\n the-retired-key ` }
    const report = (credential: string, bindings: Env) =>
      app.request(
        '/v1/telemetry',
        {
          method: 'POST',
          headers: { ...json, 'x-deltaport-region': 'dev-rotation', ...device(credential) },
          body: JSON.stringify(batchOf(`rotating-${crypto.randomUUID().slice(0, 8)}`, 0, ['app-r'])),
        },
        bindings,
      )

    await expectProblem(await report(underRetiredKey, env), 401, 'device-credential-invalid')
    const accepted = await report(underRetiredKey, rotating)
    expect(accepted.status).toBe(202)
    expect(accepted.headers.get(CREDENTIAL_RENEW_HEADER)).toBe('renew')
    const current = await report(real.credential, rotating)
    expect(current.status).toBe(202)
    expect(current.headers.get(CREDENTIAL_RENEW_HEADER)).toBeNull()

    // Renewal proves the device with the retired key, keeps its id and signs with the first key.
    const renewal = await app.request(
      '/v1/devices/enroll',
      { method: 'POST', headers: json, body: JSON.stringify({ code, credential: underRetiredKey }) },
      rotating,
    )
    expect(renewal.status).toBe(200)
    const renewed = DeviceEnrollment.parse(await renewal.json())
    expect({ deviceId: renewed.deviceId, renewed: renewed.renewed }).toEqual({
      deviceId: real.deviceId,
      renewed: true,
    })
    const afterRotation = await report(renewed.credential, env)
    expect(afterRotation.status).toBe(202)
    expect(afterRotation.headers.get(CREDENTIAL_RENEW_HEADER)).toBeNull()
    expect(await listCodes().then((codes) => codes.find((c) => c.id === real.codeId)?.enrolled)).toBe(1)

    // A secret of nothing but whitespace holds no key: the edge says it is not configured.
    const blank = { ...env, DEVICE_TOKEN_SECRET: ' \t ' }
    await expectProblem(await report(real.credential, blank), 500)
    await expectProblem(
      await app.request(
        '/v1/devices/enroll',
        { method: 'POST', headers: json, body: JSON.stringify({ code }) },
        blank,
      ),
      500,
    )
  })

  it('refuse every device of a revoked code, and its code enrolls nobody any more', async () => {
    const { code, info } = await createCode({ label: 'to-revoke', maxDevices: 5 })
    const me = await enrolled(code)
    expect(
      (await postDeviceTelemetry('dev-revoke', batchOf('whatever-01', 0, ['app-z']), me.credential)).status,
    ).toBe(202)
    const revoked = await revoke(info.id)
    expect(revoked.status).toBe(200)
    expect(EnrollmentCodeInfo.parse(await revoked.json()).revokedAt).not.toBeNull()
    await expectProblem(
      await postDeviceTelemetry('dev-revoke', batchOf('whatever-01', 1, ['app-z']), me.credential),
      401,
      'device-credential-revoked',
    )
    // Another isolate (a cold cache) asks the registry and hears the same.
    clearCodeStateCache()
    await expectProblem(
      await postDeviceTelemetry('dev-revoke', batchOf('whatever-01', 2, ['app-z']), me.credential),
      401,
      'device-credential-revoked',
    )
    await expectProblem(await enroll({ code }), 403, 'enrollment-refused')
    await expectProblem(await enroll({ code, credential: me.credential }), 403, 'enrollment-refused')
  })

  /** `name`@1.0.0 published and rolled out to everyone at once, and a device enrolled with a code of its own. */
  async function enrolledInRollout(name: string, seed: number, label: string) {
    await publishSingle(name, '1.0.0', bytesOf(64, seed))
    const start = await startRollout(name, {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: 3_600_000 }],
      minSample: 5,
      maxFailureRate: 0.01,
    })
    expect(start.status).toBe(201)
    const { code } = await createCode({ label, maxDevices: 1 })
    return enrolled(code)
  }

  it('one device reporting under many client ids is one rollout sample', async () => {
    const me = await enrolledInRollout('dev-roll', 3, 'rollout-device')
    for (let i = 0; i < 8; i++) {
      const res = await call('/v1/rollouts/dev-roll/stable/outcomes', {
        method: 'POST',
        headers: { ...json, ...device(me.credential) },
        body: JSON.stringify({ client: `made-up-client-${i}`, version: '1.0.0', outcome: 'failed' }),
      })
      // The device's token bucket (6 a minute) applies to the device, not to each invented id.
      expect([202, 429]).toContain(res.status)
      await res.body?.cancel()
    }
    const status = RolloutStatus.parse(await (await statusOf('dev-roll')).json())
    expect(status.overall.total).toBe(1)
    expect(status.state).toBe('running')
  })

  it('refuse anonymous reports and prefetch queries that name an enrolled device id, which would act as that device', async () => {
    const me = await enrolledInRollout('dev-spoof', 5, 'spoofed')
    // Anonymous reports are accepted by default (`off`), but not under a device id: the replay guard,
    // the rollout sample and the prefetch rate are the device's, so a batch numbered 2^53 − 1 would
    // have turned every later batch of the real device into a "duplicate", and one outcome its vote.
    const poison = await postTelemetry('dev-spoof', batchOf(me.deviceId, Number.MAX_SAFE_INTEGER, ['app-x']))
    await expectProblem(poison, 401, 'device-credential-required')
    const vote = await call('/v1/rollouts/dev-spoof/stable/outcomes', {
      method: 'POST',
      headers: json,
      body: JSON.stringify({ client: me.deviceId, version: '1.0.0', outcome: 'failed' }),
    })
    await expectProblem(vote, 401, 'device-credential-required')
    const queue = await call(`/v1/prefetch?client=${me.deviceId}`, {
      headers: { 'x-deltaport-region': 'dev-spoof' },
    })
    await expectProblem(queue, 401, 'device-credential-required')

    const real = await postDeviceTelemetry('dev-spoof', batchOf('spool-id-123', 0, ['app-x']), me.credential)
    expect(await real.json()).toMatchObject({ accepted: 1, duplicate: false })
    const status = RolloutStatus.parse(await (await statusOf('dev-spoof')).json())
    expect(status.overall.total).toBe(0)
    // Other anonymous ids are still taken, however they look.
    expect((await postTelemetry('dev-spoof', batchOf('d-not-a-device-id', 0, ['app-x']))).status).toBe(202)
  })
})

describe('devices.requireCredential', () => {
  it('reports: anonymous telemetry and outcomes get 401, prefetch still answers', async () => {
    await setRequirement('reports')
    await expectProblem(
      await postTelemetry('req-reports', batchOf('anon-0001', 0, ['app-q'])),
      401,
      'device-credential-required',
    )
    await expectProblem(
      await reportOutcome('req-none', { client: 'anon-0001', version: '1.0.0', outcome: 'installed' }),
      401,
      'device-credential-required',
    )
    expect((await call('/v1/prefetch?client=anon-0001')).status).toBe(200)
    // A Bearer token is not a device credential.
    const bearer = await call('/v1/telemetry', {
      method: 'POST',
      headers: { ...json, ...auth },
      body: JSON.stringify(batchOf('anon-0002', 0, ['app-q'])),
    })
    await expectProblem(bearer, 401, 'device-credential-required')
    const { code } = await createCode({ label: 'required-mode', maxDevices: 1 })
    const me = await enrolled(code)
    expect(
      (await postDeviceTelemetry('req-reports', batchOf('anon-0001', 0, ['app-q']), me.credential)).status,
    ).toBe(202)
  })

  it('all: prefetch needs a credential too; with one the queue is the device’s', async () => {
    await setRequirement('all')
    await expectProblem(await call('/v1/prefetch?client=anon-0003'), 401, 'device-credential-required')
    const { code } = await createCode({ label: 'all-mode', maxDevices: 1 })
    const me = await enrolled(code)
    const res = await call('/v1/prefetch?client=anon-0003', { headers: device(me.credential) })
    expect(res.status).toBe(200)
    expect(res.headers.get('vary')).toContain('authorization')
  })

  it('off (the default) keeps accepting anonymous reports; a garbled setting keeps the last good one', async () => {
    expect((await postTelemetry('req-off', batchOf('anon-0004', 0, ['app-q']))).status).toBe(202)
    await setRequirement('reports')
    await expectProblem(await postTelemetry('req-off', batchOf('anon-0004', 1, ['app-q'])), 401)
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ devices: { requireCredential: 'sometimes' } }))
    // Same isolate, cache expired: the rejected document leaves the last good one (reports) in force.
    setRuntimeConfigClock(() => Date.now() + 120_000)
    const status = await call('/v1/config', { headers: auth })
    expect(await status.json()).toMatchObject({ inForce: { devices: { requireCredential: 'reports' } } })
    await expectProblem(await postTelemetry('req-off', batchOf('anon-0004', 2, ['app-q'])), 401)
  })
})

describe('enrolled devices (operator)', () => {
  it('need the operator token to be listed or revoked', async () => {
    const { code } = await createCode({ label: 'dev-auth', maxDevices: 1 })
    const me = await enrolled(code)
    for (const headers of [{}, auth, { authorization: `Bearer ${OPERATOR_TOKEN}x` }, device(me.credential)]) {
      await expectProblem(await call('/v1/devices', { headers }), 401, 'unauthorized')
      await expectProblem(await revokeDevice(me.deviceId, headers), 401, 'unauthorized')
    }
    expect(
      (await postDeviceTelemetry('dev-auth', batchOf('whatever-02', 0, ['app-a']), me.credential)).status,
    ).toBe(202)
  })

  it('records each device with its code, enrollment, last renewal and credential expiry; lists per code in pages', async () => {
    const a = await createCode({ label: 'list-a', maxDevices: 3, credentialDays: 10 })
    const b = await createCode({ label: 'list-b', maxDevices: 1 })
    const mine = [await enrolled(a.code), await enrolled(a.code), await enrolled(a.code)]
    const other = await enrolled(b.code)
    const ofA = await listDevices(`?code=${a.info.id}`)
    expect(ofA.next).toBeNull()
    expect(ofA.devices.map((d) => d.deviceId).sort()).toEqual(mine.map((d) => d.deviceId).sort())
    for (const listed of ofA.devices) {
      const issued = mine.find((d) => d.deviceId === listed.deviceId)
      expect(listed).toMatchObject({ codeId: a.info.id, renewedAt: null, revokedAt: null })
      expect(listed.enrolledAt).not.toBeNull()
      expect(listed.credentialExpiresAt).toBe(credentialExpiry(issued?.credential ?? ''))
      expect(listed.credentialExpiresAt).toBe(issued?.expiresAt)
    }
    expect(JSON.stringify(ofA)).not.toContain(other.deviceId)
    // Renewal: same row, renewal time and the new credential's expiry; no new row, no new slot.
    const first = mine[0] as DeviceEnrollment
    const before = ofA.devices.find((d) => d.deviceId === first.deviceId)
    const renewed = await enrolled(a.code, { credential: first.credential })
    expect(renewed.renewed).toBe(true)
    const after = (await listDevices(`?code=${a.info.id}`)).devices
    expect(after).toHaveLength(3)
    const row = after.find((d) => d.deviceId === first.deviceId)
    expect(row?.enrolledAt).toBe(before?.enrolledAt)
    expect(row?.renewedAt).not.toBeNull()
    expect(row?.credentialExpiresAt).toBe(renewed.expiresAt)
    // Pages of two in id order, following `next`.
    const page1 = await listDevices(`?code=${a.info.id}&limit=2`)
    expect(page1.devices).toHaveLength(2)
    expect(page1.next).toBe(page1.devices[1]?.deviceId)
    const page2 = await listDevices(`?code=${a.info.id}&limit=2&after=${page1.next}`)
    expect(page2).toMatchObject({ next: null })
    const paged = [...page1.devices, ...page2.devices].map((d) => d.deviceId)
    expect(paged).toEqual([...paged].sort())
    expect(new Set(paged).size).toBe(3)
    // Without a code: every device, these included.
    const everything: string[] = []
    let cursor: string | null = null
    do {
      const page: DeviceList = await listDevices(`?limit=1000${cursor === null ? '' : `&after=${cursor}`}`)
      everything.push(...page.devices.map((d) => d.deviceId))
      cursor = page.next
    } while (cursor !== null)
    expect(everything).toEqual(expect.arrayContaining([...paged, other.deviceId]))
    for (const query of [
      '?limit=0',
      '?limit=1001',
      '?limit=x',
      '?limit=02',
      '?limit=2e0',
      '?code=nope',
      '?after=nope',
    ])
      await expectProblem(await call(`/v1/devices${query}`, { headers: operator }), 400, 'bad-request')
  })

  it('revoking one device refuses its credential at once here, leaves its code and siblings alone, and it cannot renew', async () => {
    const { code, info } = await createCode({ label: 'revoke-one', maxDevices: 3 })
    const me = await enrolled(code)
    const sibling = await enrolled(code)
    // Warm this isolate's cache of the code (no revoked devices yet).
    expect(
      (await postDeviceTelemetry('dev-revoke-one', batchOf('whatever-03', 0, ['app-b']), me.credential))
        .status,
    ).toBe(202)
    const res = await revokeDevice(me.deviceId)
    expect(res.status).toBe(200)
    const revoked = DeviceInfo.parse(await res.json())
    expect(revoked).toMatchObject({ deviceId: me.deviceId, codeId: info.id })
    expect(revoked.revokedAt).not.toBeNull()
    const refused = await expectProblem(
      await postDeviceTelemetry('dev-revoke-one', batchOf('whatever-03', 1, ['app-b']), me.credential),
      401,
      'device-credential-revoked',
    )
    expect(refused.detail).toContain('device was revoked')
    await expectProblem(
      await call('/v1/prefetch?client=whatever-07', { headers: device(me.credential) }),
      401,
    )
    // A cold cache (another isolate) hears the same from the registry.
    clearCodeStateCache()
    await expectProblem(
      await postDeviceTelemetry('dev-revoke-one', batchOf('whatever-03', 2, ['app-b']), me.credential),
      401,
      'device-credential-revoked',
    )
    expect(
      (await postDeviceTelemetry('dev-revoke-one', batchOf('whatever-04', 0, ['app-b']), sibling.credential))
        .status,
    ).toBe(202)
    // No renewal for a revoked device, and the attempt does not become a fresh enrollment either.
    const renewal = await expectProblem(
      await enroll({ code, credential: me.credential }),
      403,
      'enrollment-refused',
    )
    expect(renewal.detail).toContain(`device ${me.deviceId} was revoked`)
    expect((await listCodes()).find((c) => c.id === info.id)?.enrolled).toBe(2)
    // Revoking again changes nothing; the listing shows the revocation.
    const again = DeviceInfo.parse(await (await revokeDevice(me.deviceId)).json())
    expect(again.revokedAt).toBe(revoked.revokedAt)
    const listed = (await listDevices(`?code=${info.id}`)).devices
    expect(listed.find((d) => d.deviceId === me.deviceId)?.revokedAt).toBe(revoked.revokedAt)
    expect(listed.find((d) => d.deviceId === sibling.deviceId)?.revokedAt).toBeNull()
    // A fresh enrollment (no credential) is a new device on a new slot: the code is the bearer secret.
    const fresh = await enrolled(code)
    expect(fresh).toMatchObject({ renewed: false })
    expect(fresh.deviceId).not.toBe(me.deviceId)
    expect((await listCodes()).find((c) => c.id === info.id)?.enrolled).toBe(3)
    await expectProblem(await revokeDevice(`d${'N'.repeat(20)}`), 404, 'not-found')
    await expectProblem(await revokeDevice('not-a-device'), 400, 'bad-request')
  })

  it('another isolate refuses a revoked device within cacheTtlSeconds, without a registry call per request', async () => {
    await env.CONFIG.put(RUNTIME_CONFIG_KEY, JSON.stringify({ cacheTtlSeconds: 2 }))
    clearRuntimeConfigCache()
    const { code } = await createCode({ label: 'revoke-ttl', maxDevices: 1 })
    const me = await enrolled(code)
    const post = (seq: number) =>
      postDeviceTelemetry('dev-revoke-ttl', batchOf('whatever-05', seq, ['app-c']), me.credential)
    expect((await post(0)).status).toBe(202)
    const cachedAt = Date.now()
    // Revoked elsewhere (straight in the registry): this isolate's cached code state does not know yet.
    const result = await registry().revokeDevice(me.deviceId)
    expect(result.ok).toBe(true)
    const stale = await post(1)
    // Only meaningful while the cache entry is fresh; on a machine this slow the check says nothing.
    if (Date.now() - cachedAt < 1500) expect(stale.status).toBe(202)
    await stale.body?.cancel()
    await new Promise((resolve) => setTimeout(resolve, 2100))
    await expectProblem(await post(2), 401, 'device-credential-revoked')
  })

  it('devices enrolled before devices were recorded are recorded at their next renewal', async () => {
    const { code, info } = await createCode({ label: 'legacy', maxDevices: 2 })
    const old = await enrolled(code)
    // As if it enrolled before this registry kept device rows.
    await registrySql((sql) => {
      sql.exec('DELETE FROM devices WHERE id = ?', old.deviceId)
      sql.exec("UPDATE meta SET value = CAST(value AS INTEGER) - 1 WHERE key = 'recorded-devices'")
    })
    await expectProblem(await revokeDevice(old.deviceId), 404)
    const renewed = await enrolled(code, { credential: old.credential })
    expect(renewed).toMatchObject({ deviceId: old.deviceId, renewed: true })
    const row = (await listDevices(`?code=${info.id}`)).devices.find((d) => d.deviceId === old.deviceId)
    expect(row).toMatchObject({ enrolledAt: null, revokedAt: null, credentialExpiresAt: renewed.expiresAt })
    expect(row?.renewedAt).not.toBeNull()
    expect((await revokeDevice(old.deviceId)).status).toBe(200)
    await expectProblem(
      await postDeviceTelemetry('dev-legacy', batchOf('whatever-06', 0, ['app-d']), renewed.credential),
      401,
      'device-credential-revoked',
    )
    // The legacy credential (issued before the row existed) is refused too: the revocation is per id.
    await expectProblem(
      await postDeviceTelemetry('dev-legacy', batchOf('whatever-06', 1, ['app-d']), old.credential),
      401,
      'device-credential-revoked',
    )
  })

  it('bounds the recorded devices: a full registry enrolls no new device but still renews', async () => {
    const { code } = await createCode({ label: 'registry-full', maxDevices: 5 })
    const me = await enrolled(code)
    const count = () =>
      registrySql((sql) =>
        Number(
          sql.exec<{ value: string }>("SELECT value FROM meta WHERE key = 'recorded-devices'").one().value,
        ),
      )
    const actual = await count()
    expect(actual).toBe(
      await registrySql((sql) => sql.exec<{ n: number }>('SELECT COUNT(*) AS n FROM devices').one().n),
    )
    await registrySql((sql) =>
      sql.exec("UPDATE meta SET value = ? WHERE key = 'recorded-devices'", String(MAX_RECORDED_DEVICES)),
    )
    try {
      const full = await expectProblem(await enroll({ code }), 409, 'conflict')
      expect(full.detail).toContain(`records ${MAX_RECORDED_DEVICES} devices`)
      expect((await enrolled(code, { credential: me.credential })).renewed).toBe(true)
    } finally {
      await registrySql((sql) =>
        sql.exec("UPDATE meta SET value = ? WHERE key = 'recorded-devices'", String(actual)),
      )
    }
    expect((await enroll({ code })).status).toBe(201)
    expect(await count()).toBe(actual + 1)
  })

  it('bounds live revocations edge-wide; revocations whose credentials expired stop counting', async () => {
    const { code, info } = await createCode({ label: 'revocation-cap', maxDevices: 2 })
    const me = await enrolled(code)
    const filler = 'cFILLERFILLER'
    const now = Date.now()
    // MAX_LIVE_REVOCATIONS revoked devices of another code whose credentials are still valid.
    await registrySql((sql) =>
      sql.exec(
        `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?)
         INSERT INTO devices (id, code_id, enrolled_at, renewed_at, credential_expires_at, revoked_at)
         SELECT 'd' || printf('%020d', i), ?, ?, NULL, ?, ? FROM n`,
        MAX_LIVE_REVOCATIONS,
        filler,
        now,
        now + 86_400_000,
        now,
      ),
    )
    try {
      const capped = await expectProblem(await revokeDevice(me.deviceId), 409, 'conflict')
      expect(capped.detail).toContain('revoke their enrollment code instead')
      // The hot path gets only the asked code's revoked devices.
      expect(await registry().credentialState(info.id)).toEqual({ code: 'active', revokedDevices: [] })
      expect((await registry().credentialState(filler)).code).toBe('unknown')
      // Their credentials expired (beyond the skew allowance): nothing of them is live any more.
      await registrySql((sql) =>
        sql.exec('UPDATE devices SET credential_expires_at = ? WHERE code_id = ?', now - 7_200_000, filler),
      )
      expect((await revokeDevice(me.deviceId)).status).toBe(200)
      expect(await registry().credentialState(info.id)).toEqual({
        code: 'active',
        revokedDevices: [me.deviceId],
      })
    } finally {
      await registrySql((sql) => sql.exec('DELETE FROM devices WHERE code_id = ?', filler))
    }
  })
})
