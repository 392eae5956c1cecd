import { execFile } from 'node:child_process'
import { readFile, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { afterEach, describe, expect, it } from 'vitest'
import { EnrollmentCodeCreated, EnrollmentCodeInfo, StoredDeviceCredential } from '../../schemas/devices.ts'
import { RolloutStatus } from '../../schemas/rollout.ts'
import type { AgentConfig } from '../config.ts'
import { runDaemonCycle } from '../daemon/daemon.ts'
import { createEnrollmentCode, listEnrollmentCodes, revokeEnrollmentCode } from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { forgetDeviceSessions } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { controlRollout } from '../rollout/client.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { installWithinRollout, rolloutGate } from '../rollout/update-gate.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { makeWorkspace, writeArtifact } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()
const run = promisify(execFile)
const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')

afterEach(() => {
  // Each test is a fresh process as far as enrollment memos go.
  forgetDeviceSessions()
})

/** A new device: its own install root, trusting the suite's maintainer key, with `enrollmentCode`. */
async function newDevice(enrollmentCode: string): Promise<AgentConfig> {
  const ws = await makeWorkspace(suite.edge.url)
  return { ...suite.ws.config, installRoot: ws.config.installRoot, enrollmentCode }
}

async function newCode(label: string, maxDevices: number): Promise<EnrollmentCodeCreated> {
  return createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, { label, maxDevices })
}

async function queueOneEvent(config: AgentConfig, artifact = 'dev-app'): Promise<TelemetryQueue> {
  const queue = new TelemetryQueue(config.installRoot)
  await queue.record([{ artifact, at: new Date().toISOString(), count: 1, kind: 'use' }])
  return queue
}

/** Counts enrollment requests: each should happen only when the agent needs one. */
function countingFetch(): { fetchImpl: typeof fetch; enrollments: () => number } {
  let enrollments = 0
  return {
    fetchImpl: (input, init) => {
      if (String(input).endsWith('/v1/devices/enroll')) enrollments++
      return fetch(input, init)
    },
    enrollments: () => enrollments,
  }
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
    forgetDeviceSessions()
    await queueOneEvent(device)
    const counting = countingFetch()
    await expect(
      flushTelemetry(queue, suite.edge.url, { fetchImpl: deviceFetch(device, counting.fetchImpl) }),
    ).rejects.toThrow(/revoked/)
    expect((await queue.load()).events).toHaveLength(1)
    expect(counting.enrollments()).toBe(1)
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
