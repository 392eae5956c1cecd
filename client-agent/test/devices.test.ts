import { execFile } from 'node:child_process'
import { createHmac } from 'node:crypto'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { type AddressInfo, createServer } from 'node:net'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import {
  DeviceInfo,
  DeviceList,
  EnrollmentCodeCreated,
  EnrollmentCodeInfo,
  StoredDeviceCredential,
} from '../../schemas/devices.ts'
import { RolloutStatus } from '../../schemas/rollout.ts'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import {
  createEnrollmentCode,
  listDevices,
  listEnrollmentCodes,
  revokeDevice,
  revokeEnrollmentCode,
} from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import {
  forgetDeviceSessions,
  RENEW_FRACTION,
  RENEW_RETRY_MS,
  renewalTime,
  setDeviceSessionClock,
} from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { controlRollout } from '../rollout/client.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { installWithinRollout, rolloutGate } from '../rollout/update-gate.ts'
import type { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { countingFetch, queueOneEvent } from './devices-harness.ts'
import { makeWorkspace, writeArtifact } from './fixtures.ts'
import {
  LOCAL_EDGE_DEVICE_SECRET,
  LOCAL_EDGE_RETIRED_DEVICE_SECRET,
  TEST_OPERATOR_TOKEN,
  TEST_TOKEN,
  useEdgeWorkspace,
} from './local-edge.ts'

const suite = useEdgeWorkspace()
const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

afterEach(() => {
  // Each test is a fresh process as far as enrollment memos go.
  forgetDeviceSessions()
  setDeviceSessionClock(null)
})

/** A new device: its own install root, trusting the suite's maintainer key, with `enrollmentCode`. */
async function newDevice(enrollmentCode: string): Promise<AgentConfig> {
  const ws = await makeWorkspace(suite.edge.url)
  return { ...suite.ws.config, installRoot: ws.config.installRoot, enrollmentCode }
}

async function newCode(
  label: string,
  maxDevices: number,
  extra: { credentialDays?: number } = {},
): Promise<EnrollmentCodeCreated> {
  return createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, {
    label,
    maxDevices,
    ...extra,
  })
}

/**
 * A credential as workers/devices/credential.ts signs it, for times the edge would not pick now; with
 * the local edge's signing key unless another is given.
 */
function signLikeTheEdge(
  deviceId: string,
  codeId: string,
  issuedAt: number,
  expiresAt: number,
  key = LOCAL_EDGE_DEVICE_SECRET,
): string {
  const body = ['dp1', deviceId, codeId, issuedAt, expiresAt].join('.')
  return `${body}.${createHmac('sha256', key).update(body).digest('base64url')}`
}

/**
 * Stores, in place of the device's credential, the same device's as the edge would have signed it two
 * days ago with one day to live: expired for real. Returns it and when it was issued (epoch seconds).
 */
async function storeExpiredCredential(
  store: DeviceCredentialStore,
  stored: StoredDeviceCredential,
): Promise<{ expired: string; issuedAt: number }> {
  const issuedAt = Math.floor(Date.now() / 1000) - 2 * 86_400
  const expired = signLikeTheEdge(stored.deviceId, stored.codeId, issuedAt, issuedAt + 86_400)
  await writeFile(
    store.credentialPath,
    JSON.stringify({
      ...stored,
      credential: expired,
      expiresAt: new Date((issuedAt + 86_400) * 1000).toISOString(),
    }),
  )
  return { expired, issuedAt }
}

/** The edge's record of one device (operator view). */
async function edgeRecordOf(deviceId: string, codeId: string): Promise<DeviceInfo | undefined> {
  const page = await listDevices(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, { code: codeId })
  return page.devices.find((d) => d.deviceId === deviceId)
}

/**
 * After a revocation, in a fresh process: the next report is refused as revoked after exactly one
 * renewal attempt, and the report stays queued. Returns the counting fetch for later checks.
 */
async function expectNextReportRefused(device: AgentConfig, queue: TelemetryQueue) {
  forgetDeviceSessions()
  await queueOneEvent(device)
  const counting = countingFetch()
  await expect(
    flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) }),
  ).rejects.toThrow(/revoked/)
  expect(counting.enrollments()).toBe(1)
  expect((await queue.load()).events).toHaveLength(1)
  return counting
}

describe('deltaport devices code (operator CLI)', () => {
  it('creates, lists and revokes codes with the operator token; the maintainer token is refused', async () => {
    const cli = async (args: string[], token: string) => {
      try {
        const { stdout } = await run(
          process.execPath,
          [BIN, '--json', '--config', suite.ws.configFile, ...args],
          {
            env: { ...process.env, DELTAPORT_OPERATOR_TOKEN: token },
          },
        )
        return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> }
      } catch (error) {
        const e = error as { code: number; stdout: string }
        return { code: e.code, json: JSON.parse(e.stdout) as Record<string, unknown> }
      }
    }
    const created = await cli(
      ['devices', 'code', 'create', '--label', 'factory-A', '--max', '500'],
      TEST_OPERATOR_TOKEN,
    )
    expect(created.code).toBe(0)
    const code = EnrollmentCodeCreated.parse(created.json.enrollmentCode)
    expect(code.info).toMatchObject({ label: 'factory-A', maxDevices: 500, enrolled: 0 })
    const listed = await cli(['devices', 'code', 'list'], TEST_OPERATOR_TOKEN)
    expect(JSON.stringify(listed.json)).toContain(code.info.id)
    expect(JSON.stringify(listed.json)).not.toContain(code.code)
    const refused = await cli(['devices', 'code', 'list'], TEST_TOKEN)
    expect(refused.code).toBe(5)
    const revoked = await cli(['devices', 'code', 'revoke', code.info.id], TEST_OPERATOR_TOKEN)
    expect(EnrollmentCodeInfo.parse(revoked.json.enrollmentCode).revokedAt).not.toBeNull()
    expect((await cli(['devices', 'code', 'revoke', 'nope'], TEST_OPERATOR_TOKEN)).code).toBe(2)
    // The edge's field errors reach the operator, not just "HTTP 400: invalid json".
    const long = await cli(
      ['devices', 'code', 'create', '--label', 'x'.repeat(65), '--max', '5'],
      TEST_OPERATOR_TOKEN,
    )
    expect(long.code).toBe(5)
    expect((long.json.error as { message: string }).message).toMatch(/HTTP 400: .*label: .*64/)
  })
})

describe('deltaport devices enroll (device CLI)', () => {
  /** `deltaport --json devices enroll` with `config` written to its own file. */
  async function enrollCli(config: AgentConfig): Promise<{ code: number; json: Record<string, unknown> }> {
    const file = join(config.installRoot, '..', 'enroll.deltaport.json')
    await writeFile(file, JSON.stringify(config))
    try {
      const { stdout } = await run(process.execPath, [BIN, '--json', '--config', file, 'devices', 'enroll'])
      return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> }
    } catch (error) {
      const e = error as { code: number; stdout: string }
      return { code: e.code, json: JSON.parse(e.stdout) as Record<string, unknown> }
    }
  }

  it('exits by what went wrong: 4 when the edge is out of reach, 5 only when the edge refuses', async () => {
    // README's exit codes: 4 network, 5 edge rejected. An edge out of reach was reported as a refusal.
    const closed = createServer()
    await new Promise<void>((done) => closed.listen(0, '127.0.0.1', done))
    const { port } = closed.address() as AddressInfo
    await new Promise<void>((done) => closed.close(() => done()))
    const code = await newCode('enroll-cli', 2)
    const offline = await enrollCli({ ...(await newDevice(code.code)), edgeUrl: `http://127.0.0.1:${port}` })
    expect(offline.code).toBe(4)
    expect(offline.json.error).toMatchObject({ code: 'network' })

    const unknown = await enrollCli(await newDevice(`dpe1_${'Q'.repeat(32)}`))
    expect(unknown.code).toBe(5)
    expect(unknown.json.error).toMatchObject({ code: 'edge-rejected' })

    const enrolled = await enrollCli(await newDevice(code.code))
    expect(enrolled.code).toBe(0)
    expect(enrolled.json.device).toMatchObject({ codeId: code.info.id })
  })
})

describe('deltaport devices list|revoke (operator CLI)', () => {
  it('lists devices (per code) and revokes one with the operator token', async () => {
    const cli = async (args: string[], token = TEST_OPERATOR_TOKEN) => {
      try {
        const { stdout } = await run(
          process.execPath,
          [BIN, '--json', '--config', suite.ws.configFile, ...args],
          { env: { ...process.env, DELTAPORT_OPERATOR_TOKEN: token } },
        )
        return { code: 0, json: JSON.parse(stdout) as Record<string, unknown> }
      } catch (error) {
        const e = error as { code: number; stdout: string }
        return { code: e.code, json: JSON.parse(e.stdout || '{}') as Record<string, unknown> }
      }
    }
    const { code, info } = await newCode('cli-devices', 3)
    const first = await newDevice(code)
    const second = await newDevice(code)
    await flushTelemetry(await queueOneEvent(first), suite.edge.url, { fetchImpl: deviceFetch(first) })
    await flushTelemetry(await queueOneEvent(second), suite.edge.url, { fetchImpl: deviceFetch(second) })
    const ids = await Promise.all(
      [first, second].map(async (d) => (await new DeviceCredentialStore(d.installRoot).read())?.deviceId),
    )
    const listed = await cli(['devices', 'list', '--code', info.id])
    expect(listed.code).toBe(0)
    const page = DeviceList.parse(listed.json)
    expect(page.devices.map((d) => d.deviceId).sort()).toEqual([...ids].sort())
    expect(page.next).toBeNull()
    // One per page: --limit 1 stops after one and says where to go on.
    const limited = DeviceList.parse((await cli(['devices', 'list', '--code', info.id, '--limit', '1'])).json)
    expect(limited.devices).toHaveLength(1)
    expect(limited.next).toBe(limited.devices[0]?.deviceId)
    const target = ids[0] ?? ''
    const revoked = await cli(['devices', 'revoke', target])
    expect(revoked.code).toBe(0)
    expect(DeviceInfo.parse(revoked.json.device)).toMatchObject({ deviceId: target, codeId: info.id })
    expect((await edgeRecordOf(target, info.id))?.revokedAt).not.toBeNull()
    expect((await edgeRecordOf(ids[1] ?? '', info.id))?.revokedAt).toBeNull()
    expect((await cli(['devices', 'list'], TEST_TOKEN)).code).toBe(5)
    expect((await cli(['devices', 'revoke', target], TEST_TOKEN)).code).toBe(5)
    expect((await cli(['devices', 'revoke', 'nope'])).code).toBe(2)
    expect((await cli(['devices', 'revoke', `d${'N'.repeat(20)}`])).code).toBe(6)
    expect((await cli(['devices', 'list', '--code', 'nope'])).code).toBe(2)
  })
})

describe('agent enrollment against the real edge', () => {
  it('enrolls once on first need, stores the credential 0600 and reports as its device id', async () => {
    const { code, info } = await newCode('agent-e2e', 5)
    const device = await newDevice(code)
    const counting = countingFetch()
    const queue = await queueOneEvent(device)
    const flushed = await flushTelemetry(queue, suite.edge.url, {
      fetchImpl: deviceFetch(device, counting.fetchImpl),
    })
    expect(flushed).toMatchObject({ batches: 1, events: 1 })
    const store = new DeviceCredentialStore(device.installRoot)
    const stored = StoredDeviceCredential.parse(JSON.parse(await readFile(store.credentialPath, 'utf8')))
    expect(stored.codeId).toBe(info.id)
    expect((await stat(store.credentialPath)).mode & 0o777).toBe(0o600)
    expect(await agentClientId(device)).toBe(stored.deviceId)
    // Later reports (and a new process) reuse the stored credential: no second enrollment.
    await queueOneEvent(device)
    forgetDeviceSessions()
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) })
    expect(counting.enrollments()).toBe(1)
    const codes = await listEnrollmentCodes(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN)
    expect(codes.find((c) => c.id === info.id)?.enrolled).toBe(1)
  })

  it('an enrolled device in a rollout is one sample under its device id, whatever the outcome body says', async () => {
    const art = await writeArtifact(suite.ws.dir, 'devroll.bin', 2000)
    await suite.publish(art.path, 'devroll', '1.0.0')
    await controlRollout(new EdgeClient(suite.edge.url), TEST_TOKEN, 'devroll', 'stable', 'start', {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: 3_600_000 }],
    })
    const { code } = await newCode('rollout-fleet', 2)
    const device = await newDevice(code)
    const gate = await rolloutGate(device, 'devroll', undefined)
    expect(gate.kind).toBe('in')
    if (gate.kind !== 'in') return
    const { report } = await installWithinRollout(device, 'devroll', gate, () =>
      installArtifact(device, { name: 'devroll', target: gate.version }),
    )
    expect(report).toMatchObject({ reported: true })
    // A hand-made report from the same device under an invented client id still counts as that device.
    const credential = await new DeviceCredentialStore(device.installRoot).read()
    const forged = await fetch(`${suite.edge.url}/v1/rollouts/devroll/stable/outcomes`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Device ${credential?.credential}` },
      body: JSON.stringify({ client: 'someone-else-entirely', version: '1.0.0', outcome: 'failed' }),
    })
    expect(forged.status).toBe(202)
    const status = await controlRollout(
      new EdgeClient(suite.edge.url),
      TEST_TOKEN,
      'devroll',
      'stable',
      'status',
    )
    expect(RolloutStatus.parse(status).overall).toMatchObject({ total: 1, failures: 1 })
  })

  it('the daemon sends the credential on its telemetry flush and prefetch poll, nowhere else', async () => {
    const { code } = await newCode('daemon-fleet', 2)
    const device = await newDevice(code)
    await queueOneEvent(device)
    const seen: { path: string; device: boolean }[] = []
    const recording: typeof fetch = (input, init) => {
      const path = new URL(String(input)).pathname
      const authorization = new Headers(init?.headers).get('authorization') ?? ''
      seen.push({ path, device: authorization.startsWith('Device dp1.') })
      return fetch(input, init)
    }
    const cycle = await runDaemonCycle(device, {
      loadSampler: () => 0,
      flushTelemetry: true,
      fetchImpl: recording,
    })
    expect(cycle.telemetry).toEqual({ events: 1 })
    expect(seen.find((r) => r.path === '/v1/telemetry')?.device).toBe(true)
    expect(seen.find((r) => r.path === '/v1/prefetch')?.device).toBe(true)
    expect(
      seen.filter((r) => r.device).every((r) => ['/v1/telemetry', '/v1/prefetch'].includes(r.path)),
    ).toBe(true)
  })

  it('re-enrolls once when the edge does not recognise its credential', async () => {
    const { code } = await newCode('reenroll', 5)
    const device = await newDevice(code)
    const queue = await queueOneEvent(device)
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    const store = new DeviceCredentialStore(device.installRoot)
    const before = StoredDeviceCredential.parse(await store.read())
    // A credential whose MAC the edge rejects (as after a DEVICE_TOKEN_SECRET rotation).
    const mac = before.credential.slice(-43)
    const garbled = `${before.credential.slice(0, -43)}${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`
    await writeFile(store.credentialPath, JSON.stringify({ ...before, credential: garbled }))
    forgetDeviceSessions()
    await queueOneEvent(device)
    const counting = countingFetch()
    const flushed = await flushTelemetry(queue, suite.edge.url, {
      fetchImpl: deviceFetch(device, counting.fetchImpl),
    })
    expect(flushed.events).toBe(1)
    expect(counting.enrollments()).toBe(1)
    expect((await store.read())?.credential).not.toBe(garbled)
  })

  it('keeps reports queued and installs working once its code is revoked, and stops asking', async () => {
    const { code, info } = await newCode('revoked-fleet', 5)
    const device = await newDevice(code)
    const queue = await queueOneEvent(device)
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    await revokeEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, info.id)
    const counting = await expectNextReportRefused(device, queue)
    const refusal = await new DeviceCredentialStore(device.installRoot).refusal()
    expect(refusal?.detail).toContain('revoked')
    // A later process does not ask the edge again for a code it refused: it reports anonymously,
    // which this edge (devices.requireCredential "off") still accepts.
    forgetDeviceSessions()
    const anonymous = await flushTelemetry(queue, suite.edge.url, {
      fetchImpl: deviceFetch(device, counting.fetchImpl),
    })
    expect(anonymous.events).toBe(1)
    expect(counting.enrollments()).toBe(1)
    // Installing never depends on enrollment.
    const art = await writeArtifact(suite.ws.dir, 'devrev.bin', 1500)
    await suite.publish(art.path, 'devrev', '1.0.0')
    expect((await installArtifact(device, { name: 'devrev' })).version).toBe('1.0.0')
  })

  it('a code the edge does not know leaves the agent anonymous, not broken', async () => {
    const device = await newDevice(`dpe1_${'Q'.repeat(32)}`)
    const queue = await queueOneEvent(device)
    const flushed = await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    expect(flushed.events).toBe(1)
    expect(await new DeviceCredentialStore(device.installRoot).read()).toBeNull()
    expect(await agentClientId(device)).toBe(await queue.clientId())
  })

  it('bounds a code: the device beyond maxDevices stays anonymous', async () => {
    const { code, info } = await newCode('tiny', 1)
    const first = await newDevice(code)
    const second = await newDevice(code)
    await flushTelemetry(await queueOneEvent(first), suite.edge.url, { fetchImpl: deviceFetch(first) })
    forgetDeviceSessions()
    await flushTelemetry(await queueOneEvent(second), suite.edge.url, { fetchImpl: deviceFetch(second) })
    expect(await new DeviceCredentialStore(first.installRoot).read()).not.toBeNull()
    expect(await new DeviceCredentialStore(second.installRoot).read()).toBeNull()
    expect((await new DeviceCredentialStore(second.installRoot).refusal())?.status).toBe(409)
    const codes = await listEnrollmentCodes(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN)
    expect(codes.find((c) => c.id === info.id)?.enrolled).toBe(1)
  })
})

describe('proactive renewal', () => {
  it('renews in the last 20 % of the lifetime under the same device id, once per period at most', async () => {
    const { code, info } = await newCode('renew-early', 5, { credentialDays: 10 })
    const device = await newDevice(code)
    const counting = countingFetch()
    const flush = async () =>
      flushTelemetry(await queueOneEvent(device), suite.edge.url, {
        fetchImpl: deviceFetch(device, counting.fetchImpl),
      })
    await flush()
    expect(counting.enrollments()).toBe(1)
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())
    const expiresAt = Date.parse(first.expiresAt)
    const lifetime = 10 * 86_400_000
    expect(renewalTime(first)).toBe(expiresAt - lifetime * RENEW_FRACTION)
    // Halfway through its life (a new process): the credential is sent as it is.
    forgetDeviceSessions()
    setDeviceSessionClock(() => expiresAt - lifetime / 2)
    await flush()
    expect(counting.enrollments()).toBe(1)
    expect(await store.read()).toEqual(first)
    // Inside the last fifth: renewed before the report, same device id, new credential on disk.
    let now = expiresAt - lifetime * 0.1
    setDeviceSessionClock(() => now)
    const flushed = await flush()
    expect(flushed.events).toBe(1)
    expect(counting.enrollments()).toBe(2)
    // (Within the same second the edge signs the very same credential again: the record tells.)
    const second = StoredDeviceCredential.parse(await store.read())
    expect(second.deviceId).toBe(first.deviceId)
    const record = await edgeRecordOf(first.deviceId, info.id)
    expect(record?.renewedAt).not.toBeNull()
    expect(record?.credentialExpiresAt).toBe(second.expiresAt)
    expect(
      (await listEnrollmentCodes(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN)).find(
        (c) => c.id === info.id,
      )?.enrolled,
    ).toBe(1)
    // The fake clock runs 9 days ahead of the edge's, so even the fresh credential looks due: still no
    // loop — nothing more until RENEW_RETRY_MS has passed, then one more.
    for (let i = 0; i < 3; i++) await flush()
    expect(counting.enrollments()).toBe(2)
    now += RENEW_RETRY_MS + 1
    await flush()
    expect(counting.enrollments()).toBe(3)
  })

  it('keeps sending the valid credential while the edge cannot renew it, asking once per period', async () => {
    const { code, info } = await newCode('renew-offline', 5, { credentialDays: 10 })
    const device = await newDevice(code)
    let down = false
    const counting = countingFetch({ unreachable: () => down })
    const flush = async () =>
      flushTelemetry(await queueOneEvent(device), suite.edge.url, {
        fetchImpl: deviceFetch(device, counting.fetchImpl),
      })
    await flush()
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())
    down = true
    let now = Date.parse(first.expiresAt) - 86_400_000
    setDeviceSessionClock(() => now)
    forgetDeviceSessions()
    for (let i = 0; i < 3; i++) expect((await flush()).events).toBe(1)
    expect(counting.enrollments()).toBe(2)
    expect(await store.read()).toEqual(first)
    expect((await edgeRecordOf(first.deviceId, info.id))?.renewedAt).toBeNull()
    now += RENEW_RETRY_MS + 1
    await flush()
    expect(counting.enrollments()).toBe(3)
    down = false
    now += RENEW_RETRY_MS + 1
    await flush()
    expect(counting.enrollments()).toBe(4)
    expect(StoredDeviceCredential.parse(await store.read()).deviceId).toBe(first.deviceId)
    expect((await edgeRecordOf(first.deviceId, info.id))?.renewedAt).not.toBeNull()
  })

  it('renews at once, keeping its device id, when the edge says its key is being rotated out', async () => {
    const { code, info } = await newCode('renew-rotated', 5)
    const device = await newDevice(code)
    const queue = await queueOneEvent(device)
    const counting = countingFetch()
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) })
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())
    // The device's credential as the edge signed it before the rotation: valid for most of a year, under
    // the key that is now second in the edge's DEVICE_TOKEN_SECRET (local-edge.ts).
    const issuedAt = Math.floor(Date.now() / 1000) - 86_400
    const expiresAt = issuedAt + 365 * 86_400
    const old = signLikeTheEdge(
      first.deviceId,
      first.codeId,
      issuedAt,
      expiresAt,
      LOCAL_EDGE_RETIRED_DEVICE_SECRET,
    )
    await writeFile(
      store.credentialPath,
      JSON.stringify({ ...first, credential: old, expiresAt: new Date(expiresAt * 1000).toISOString() }),
    )
    forgetDeviceSessions()
    const renewHeaders: (string | null)[] = []
    const recording: typeof fetch = async (input, init) => {
      const response = await counting.fetchImpl(input, init)
      if (String(input).endsWith('/v1/telemetry'))
        renewHeaders.push(response.headers.get('x-deltaport-credential'))
      return response
    }
    const fetchImpl = deviceFetch(device, recording)
    // Sent as it is (it is accepted), answered with a request to renew...
    await queueOneEvent(device)
    expect((await flushTelemetry(queue, suite.edge.url, { fetchImpl })).events).toBe(1)
    expect(StoredDeviceCredential.parse(await store.read()).credential).toBe(old)
    // ...which the next report does first: same device, a credential under the signing key.
    await queueOneEvent(device)
    expect((await flushTelemetry(queue, suite.edge.url, { fetchImpl })).events).toBe(1)
    expect(renewHeaders).toEqual(['renew', null])
    const renewed = StoredDeviceCredential.parse(await store.read())
    expect(renewed.deviceId).toBe(first.deviceId)
    const [, , , issued, expires] = renewed.credential.split('.')
    expect(renewed.credential).toBe(
      signLikeTheEdge(
        renewed.deviceId,
        renewed.codeId,
        Number(issued),
        Number(expires),
        LOCAL_EDGE_DEVICE_SECRET,
      ),
    )
    expect(counting.enrollments()).toBe(2)
    expect((await edgeRecordOf(first.deviceId, info.id))?.renewedAt).not.toBeNull()
  })

  it('renews an expired credential before sending it rather than after a 401', async () => {
    const { code, info } = await newCode('renew-expired', 5, { credentialDays: 1 })
    const device = await newDevice(code)
    const queue = await queueOneEvent(device)
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())
    const { expired } = await storeExpiredCredential(store, first)
    const refused = await fetch(`${suite.edge.url}/v1/prefetch?client=renew-expired-01`, {
      headers: { authorization: `Device ${expired}` },
    })
    expect(refused.status).toBe(401)
    await refused.body?.cancel()
    forgetDeviceSessions()
    await queueOneEvent(device)
    const statuses: number[] = []
    const recording: typeof fetch = async (input, init) => {
      const response = await fetch(input, init)
      if (String(input).endsWith('/v1/telemetry')) statuses.push(response.status)
      return response
    }
    const flushed = await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, recording) })
    expect(flushed.events).toBe(1)
    expect(statuses).toEqual([202])
    const renewed = StoredDeviceCredential.parse(await store.read())
    expect(renewed.deviceId).toBe(first.deviceId)
    expect(Date.parse(renewed.expiresAt)).toBeGreaterThan(Date.now())
    expect((await edgeRecordOf(first.deviceId, info.id))?.renewedAt).not.toBeNull()
  })
})

describe('a renewal that does not get through', () => {
  it('keeps the refused credential to renew it later: same device id, no second slot', async () => {
    const { code, info } = await newCode('renew-after-401', 5, { credentialDays: 1 })
    const device = await newDevice(code)
    const queue = await queueOneEvent(device)
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())
    // Expired by the edge's clock, while the device's clock (stuck two days back, no RTC) thinks it
    // fresh: the edge's 401 is the first the agent hears of it.
    const { issuedAt } = await storeExpiredCredential(store, first)
    let now = issuedAt * 1000 + 60_000
    setDeviceSessionClock(() => now)
    forgetDeviceSessions()
    let down = true
    const counting = countingFetch({ unreachable: () => down })
    const fetchImpl = deviceFetch(device, counting.fetchImpl)
    await queueOneEvent(device)
    // The renewal after the 401 does not get through: the report stays queued.
    await expect(flushTelemetry(queue, suite.edge.url, { fetchImpl })).rejects.toThrow(/expired/)
    expect(counting.enrollments()).toBe(1)
    // Later in the same process, the edge reachable again: renewed, not enrolled afresh.
    down = false
    now += 10 * 60_000 + 1
    expect((await flushTelemetry(queue, suite.edge.url, { fetchImpl })).events).toBeGreaterThan(0)
    expect(counting.enrollments()).toBe(2)
    expect(StoredDeviceCredential.parse(await store.read()).deviceId).toBe(first.deviceId)

    // The same after a restart: the credential the edge refused is still on disk to be renewed.
    await storeExpiredCredential(store, first)
    forgetDeviceSessions()
    down = true
    await queueOneEvent(device)
    await expect(
      flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) }),
    ).rejects.toThrow(/expired/)
    forgetDeviceSessions()
    setDeviceSessionClock(null)
    down = false
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) })
    expect(StoredDeviceCredential.parse(await store.read()).deviceId).toBe(first.deviceId)
    const codes = await listEnrollmentCodes(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN)
    expect(codes.find((c) => c.id === info.id)?.enrolled).toBe(1)
  })
})

describe('per-device revocation', () => {
  it('a revoked device is refused, cannot renew, reports anonymously, and enrolls afresh only with a new code', async () => {
    const { code, info } = await newCode('revoke-device', 5)
    const device = await newDevice(code)
    const sibling = await newDevice(code)
    const queue = await queueOneEvent(device)
    await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device) })
    forgetDeviceSessions()
    await flushTelemetry(await queueOneEvent(sibling), suite.edge.url, { fetchImpl: deviceFetch(sibling) })
    const store = new DeviceCredentialStore(device.installRoot)
    const mine = StoredDeviceCredential.parse(await store.read())
    const revoked = await revokeDevice(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, mine.deviceId)
    expect(revoked.revokedAt).not.toBeNull()
    // The next report: 401 device-credential-revoked, one renewal attempt (refused), reports kept.
    const counting = await expectNextReportRefused(device, queue)
    expect((await store.refusal())?.detail).toContain(`device ${mine.deviceId} was revoked`)
    expect(await store.read()).toBeNull()
    // Its sibling is untouched, and the code enrolled nobody new for it.
    forgetDeviceSessions()
    const siblingFlush = await flushTelemetry(await queueOneEvent(sibling), suite.edge.url, {
      fetchImpl: deviceFetch(sibling, counting.fetchImpl),
    })
    expect(siblingFlush.events).toBe(1)
    expect(counting.enrollments()).toBe(1)
    const codes = await listEnrollmentCodes(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN)
    expect(codes.find((c) => c.id === info.id)?.enrolled).toBe(2)
    // A later process does not ask again: anonymous reports (this edge still accepts them).
    forgetDeviceSessions()
    expect(
      (await flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) }))
        .events,
    ).toBe(1)
    expect(counting.enrollments()).toBe(1)
    // The operator hands it a new code: a fresh enrollment, a new device id, a slot of that code.
    const fresh = await newCode('revoke-device-new', 1)
    const moved = { ...device, enrollmentCode: fresh.code }
    forgetDeviceSessions()
    await flushTelemetry(await queueOneEvent(moved), suite.edge.url, {
      fetchImpl: deviceFetch(moved, counting.fetchImpl),
    })
    const after = StoredDeviceCredential.parse(await store.read())
    expect(after.codeId).toBe(fresh.info.id)
    expect(after.deviceId).not.toBe(mine.deviceId)
    expect(await store.refusal()).toBeNull()
  })
})
