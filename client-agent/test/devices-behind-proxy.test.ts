/**
 * An edge behind a rewriting proxy: the agent's edgeUrl carries a path, and the device routes follow it.
 * A file of its own (its own local edge): devices.test.ts enrolls close to the edge's 30-a-minute limit
 * per address, and one more enrollment there would crowd out a later one.
 */
import { describe, expect, it } from 'vitest'
import { createEnrollmentCode } from '../devices/codes.ts'
import { deviceFetch } from '../devices/device-fetch.ts'
import { forgetDeviceSessions } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { flushTelemetry } from '../telemetry/uploader.ts'
import { makeWorkspace } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const suite = useEdgeWorkspace()

describe('a device whose edge sits behind a path prefix', () => {
  it('sends its credential there (a rewriting proxy)', async () => {
    forgetDeviceSessions()
    const { code } = await createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, {
      label: 'behind-proxy',
      maxDevices: 1,
    })
    const ws = await makeWorkspace(suite.edge.url)
    const device = {
      ...suite.ws.config,
      installRoot: ws.config.installRoot,
      enrollmentCode: code,
      edgeUrl: `${suite.edge.url}/deltaport`,
    }
    // The proxy: strips its prefix and forwards to the real edge; records what reached it.
    const reports: (string | null)[] = []
    const proxy: typeof fetch = (input, init) => {
      const url = String(input instanceof Request ? input.url : input).replace('/deltaport/v1/', '/v1/')
      if (url.endsWith('/v1/telemetry')) reports.push(new Headers(init?.headers).get('authorization'))
      return fetch(url, init)
    }
    const queue = new TelemetryQueue(device.installRoot)
    await queue.record([{ artifact: 'dev-app', at: new Date().toISOString(), count: 1, kind: 'use' }])
    const flushed = await flushTelemetry(queue, device.edgeUrl, { fetchImpl: deviceFetch(device, proxy) })
    expect(flushed).toMatchObject({ events: 1 })
    expect(reports).toHaveLength(1)
    expect(reports[0]).toMatch(/^Device /)
  })
})
