// Re-enrollment in a long-running process, in a file of its own: the edge allows 30 enrollments a
// minute per address, and every file here starts its own edge.
import { afterEach, describe, expect, it } from 'vitest'
import { StoredDeviceCredential } from '../../schemas/devices.ts'
import { createEnrollmentCode } from '../devices/codes.ts'
import { DeviceCredentialStore } from '../devices/credential-store.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { forgetDeviceSessions, RENEW_RETRY_MS, setDeviceSessionClock } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { countingFetch, queueOneEvent } from './devices-harness.ts'
import { makeWorkspace } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

afterEach(() => {
  forgetDeviceSessions()
  setDeviceSessionClock(null)
})

/** `dp1.<id>.<code>.<iat>.<exp>.<mac>` with one MAC character changed: the edge refuses it as invalid. */
function garbled(credential: string): string {
  const mac = credential.slice(-43)
  return `${credential.slice(0, -43)}${mac[0] === 'A' ? 'B' : 'A'}${mac.slice(1)}`
}

describe('re-enrollment in a long-running process', () => {
  it('recovers from a second refusal of its credential after RENEW_RETRY_MS, never in a loop', async () => {
    const { code } = await createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, {
      label: 'reenroll-twice',
      maxDevices: 5,
    })
    const ws = await makeWorkspace(suite.edge.url)
    const device = { ...suite.ws.config, installRoot: ws.config.installRoot, enrollmentCode: code }
    let now = Date.now()
    setDeviceSessionClock(() => now)
    // The edge refusing the credential the device sends (as after a DEVICE_TOKEN_SECRET rotation):
    // the next `refusals` device requests carry a credential whose MAC does not verify.
    let refusals = 0
    const counting = countingFetch()
    const refusing: typeof fetch = (input, init) => {
      const headers = new Headers(init?.headers)
      const authorization = headers.get('authorization')
      if (refusals > 0 && authorization?.startsWith('Device ')) {
        refusals--
        headers.set('authorization', `Device ${garbled(authorization.slice('Device '.length))}`)
        return counting.fetchImpl(input, { ...init, headers })
      }
      return counting.fetchImpl(input, init)
    }
    // One process (one session) throughout: no forgetDeviceSessions between reports.
    const report = async () =>
      flushTelemetry(await queueOneEvent(device), suite.edge.url, {
        fetchImpl: deviceFetch(device, refusing),
      })
    expect((await report()).events).toBe(1)
    expect(counting.enrollments()).toBe(1)
    const store = new DeviceCredentialStore(device.installRoot)
    const first = StoredDeviceCredential.parse(await store.read())

    refusals = 1
    expect((await report()).events).toBe(1)
    expect(counting.enrollments()).toBe(2)

    // Refused again within the period: no second enrollment (a refusing edge is not asked in a loop).
    now += RENEW_RETRY_MS / 2
    refusals = 1
    await expect(report()).rejects.toThrow(/credential/)
    expect(counting.enrollments()).toBe(2)

    // Once the period is over (a second secret rotation, say): the same process re-enrolls, keeping
    // its device id.
    now += RENEW_RETRY_MS / 2 + 1
    refusals = 1
    expect((await report()).events).toBe(2)
    expect(counting.enrollments()).toBe(3)
    expect(StoredDeviceCredential.parse(await store.read()).deviceId).toBe(first.deviceId)
  })
})
