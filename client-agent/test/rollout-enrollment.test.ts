import { readFile, rm, writeFile } from 'node:fs/promises'
import { afterEach, describe, expect, it } from 'vitest'
import { cohortPosition } from '../../durable-objects/rollout-schedule.ts'
import type { AgentConfig } from '../config.ts'
import { createEnrollmentCode } from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { deviceSession, forgetDeviceSessions } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { controlRollout } from '../rollout/client.ts'
import { rolloutGate } from '../rollout/update-gate.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { makeWorkspace, writeArtifact } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, TEST_TOKEN, useEdgeWorkspace } from './local-edge.ts'

/**
 * A device's rollout cohort is a hash of the client id it asks with (ADR 0010); once enrolled that is
 * its device id (ADR 0026), before that the random id of its telemetry spool. A device configured to
 * enroll must not take a rollout under the id it is about to give up: it would be "in" now and "out"
 * once enrolled, with its later reports refused as from a client the rollout never admitted.
 */

const suite = useEdgeWorkspace()

afterEach(() => {
  forgetDeviceSessions()
})

/** Enrollment requests fail like a dropped connection while `down()`; the rest reaches the real edge. */
function enrollmentDown(down: () => boolean): typeof fetch {
  return (input, init) =>
    String(input).endsWith('/v1/devices/enroll') && down()
      ? Promise.reject(new TypeError('fetch failed'))
      : fetch(input, init)
}

async function newDevice(): Promise<AgentConfig> {
  const { code } = await createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, {
    label: 'cohort-across-enrollment',
    maxDevices: 2,
  })
  const ws = await makeWorkspace(suite.edge.url)
  return { ...suite.ws.config, installRoot: ws.config.installRoot, enrollmentCode: code }
}

describe('a rollout cohort across enrollment', () => {
  it('a device that could not enroll yet is held, not admitted under the id enrollment replaces', async () => {
    const device = await newDevice()
    const telemetryId = await new TelemetryQueue(device.installRoot).clientId()
    // Learn the device id the edge gives this device, then put the device back to "not enrolled yet"
    // (the credential kept aside is what a successful enrollment later writes).
    const store = new DeviceCredentialStore(device.installRoot)
    const deviceId = (await deviceSession(device)?.current())?.deviceId
    expect(deviceId).toBeDefined()
    const credentialFile = await readFile(store.credentialPath, 'utf8')
    await rm(store.credentialPath)
    forgetDeviceSessions()

    // A release whose 50 % cohort has the telemetry id in and the device id out.
    const name = 'cohort-flip'
    let version = ''
    for (let patch = 0; patch < 1000 && version === ''; patch++) {
      const candidate = `1.0.${patch}`
      if (
        cohortPosition(name, candidate, telemetryId) < 0.5 &&
        cohortPosition(name, candidate, deviceId ?? '') >= 0.5
      )
        version = candidate
    }
    expect(version).not.toBe('')
    const art = await writeArtifact(suite.ws.dir, 'cohort-flip.bin', 2000)
    await suite.publish(art.path, name, version)
    await controlRollout(new EdgeClient(suite.edge.url), TEST_TOKEN, name, 'stable', 'start', {
      version,
      stages: [
        { percent: 50, durationMs: 3_600_000 },
        { percent: 100, durationMs: 3_600_000 },
      ],
    })

    // The edge does place the two ids on either side of the stage.
    const asks = async (client: string) =>
      (
        (await (await fetch(`${suite.edge.url}/v1/rollouts/${name}/stable?client=${client}`)).json()) as {
          in: boolean
        }
      ).in
    expect(await asks(telemetryId)).toBe(true)
    expect(await asks(deviceId ?? '')).toBe(false)

    // Enrollment does not get through this time: the device waits rather than join under its old id.
    let down = true
    const fetchImpl = enrollmentDown(() => down)
    const before = await rolloutGate(device, name, undefined, fetchImpl)
    expect(before.kind).toBe('held')
    expect(before.kind === 'held' ? before.message : '').toContain('not enrolled yet')

    // Enrolled (as its device id): out at this stage, as it was all along; nothing went in and out.
    await writeFile(store.credentialPath, credentialFile, { mode: 0o600 })
    forgetDeviceSessions()
    down = false
    const after = await rolloutGate(device, name, undefined, fetchImpl)
    expect(after.kind).toBe('held')
    expect(after.check?.in).toBe(false)
  })

  it('a device whose code the edge refused for good is not kept waiting: its telemetry id is its id', async () => {
    const device = { ...(await newDevice()), enrollmentCode: `dpe1_${'R'.repeat(32)}` }
    const art = await writeArtifact(suite.ws.dir, 'cohort-refused.bin', 2000)
    await suite.publish(art.path, 'cohort-refused', '1.0.0')
    await controlRollout(new EdgeClient(suite.edge.url), TEST_TOKEN, 'cohort-refused', 'stable', 'start', {
      version: '1.0.0',
      stages: [{ percent: 100, durationMs: 3_600_000 }],
    })
    // The unknown code is refused (403) and remembered: no enrollment is pending, the device goes in.
    const gate = await rolloutGate(device, 'cohort-refused', undefined)
    expect(gate.kind).toBe('in')
    expect(await new DeviceCredentialStore(device.installRoot).refusal()).toMatchObject({ status: 403 })
  })
})
