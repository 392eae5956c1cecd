import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { forgetDeviceSessions } from '../devices/session.ts'
import { installArtifact, ROLLBACK_EDGE_STALL_MS } from '../install.ts'
import { pendingEnrollment } from '../rollout/client-id.ts'
import { rollbackAndReport } from '../rollout/update-gate.ts'
import { type FaultProxy, startFaultProxy } from './fault-proxy.ts'
import { writeArtifact } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * A rollback waits ROLLBACK_EDGE_STALL_MS (5 s) for each answer from the edge, not the usual 30 s: the
 * owner reaches for it when something is already wrong, often with the network too. The device's
 * enrollment, still pending when the rollback reports to the rollout (it needs the id to report under),
 * waited the usual 30 s for the edge's answer. Enrollment tests live in their own file (the edge allows
 * 30 enrollments a minute per address).
 */
const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  forgetDeviceSessions()
  await proxy?.close()
  proxy = undefined
})

describe('a rollback on a device whose enrollment is pending', () => {
  it('waits the rollback stall for the enrollment answer, not the usual 30 s', async () => {
    const name = 'rb-enroll-stall'
    // The enrollment request gets no answer at all (the connection stays open); the rest reaches the
    // real edge through the proxy.
    proxy = await startFaultProxy(suite.edge.url, (request) =>
      request.path.endsWith('/v1/devices/enroll') ? { kind: 'stall-headers' } : undefined,
    )
    const plain: AgentConfig = {
      ...suite.ws.config,
      edgeUrl: proxy.url,
      installRoot: join(suite.ws.dir, `store-${name}`),
    }
    for (const [i, version] of ['1.0.0', '1.1.0'].entries()) {
      const file = await writeArtifact(suite.ws.dir, `${name}-${version}.bin`, 10_000 + i)
      await suite.publish(file.path, name, version)
      await installArtifact(plain, { name, target: version })
    }
    // Configured to enroll from now on; never enrolled yet.
    const device: AgentConfig = { ...plain, enrollmentCode: `dpe1_${'S'.repeat(32)}` }
    const rolled = await rollbackAndReport(device, name, { allowRevoked: true })
    expect(rolled).toMatchObject({ from: '1.1.0', to: '1.0.0' })
    // The enrollment was tried, and given up after the rollback's stall, not the usual 30 s.
    expect(proxy.seen().filter((r) => r.path.endsWith('/v1/devices/enroll'))).toHaveLength(1)
    expect(await pendingEnrollment(device)).toContain(`no answer within ${ROLLBACK_EDGE_STALL_MS} ms`)
  }, 60_000)
})
