/**
 * Signed prefetch plans end to end (ADR 0034, amended 2026-11-26): an edge with INDEX_SIGNING_KEY signs
 * each queue for the client it planned it for; a daemon that pins the key acts only on a fresh queue
 * signed for itself, covering exactly what it lists. A tampered queue, one replayed from another device,
 * an unsigned or an expired one fails the poll with `untrusted-index` before anything is fetched.
 */
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import type { AgentConfig } from '../config.ts'
import { runDaemon, runDaemonCycle } from '../daemon/daemon.ts'
import { StagingArea } from '../daemon/staging.ts'
import { createEnrollmentCode } from '../devices/codes.ts'
import { forgetDeviceSessions } from '../devices/session.ts'
import { EdgeClient } from '../edge-client.ts'
import { installArtifact } from '../install.ts'
import { agentClientId } from '../rollout/client-id.ts'
import { generateKeyPair } from '../signing.ts'
import { TelemetryQueue } from '../telemetry/queue.ts'
import { agentFailure, writeArtifact } from './fixtures.ts'
import { TEST_OPERATOR_TOKEN, useEdgeWorkspace } from './local-edge.ts'

const edgeKey = await generateKeyPair()
const suite = useEdgeWorkspace({ INDEX_SIGNING_KEY: edgeKey.privateKey })
const idle = () => 0

// Each test is a fresh process as far as enrollment memos go.
afterEach(() => forgetDeviceSessions())

function device(id: string, pinned = true): AgentConfig {
  return {
    ...suite.ws.config,
    installRoot: join(suite.ws.dir, `store-${id}`),
    indexKeys: pinned ? [{ keyid: edgeKey.keyid, publicKey: edgeKey.publicKey }] : [],
  }
}

/** name@1.0.0 installed on `config`, name@1.1.0 published: the device's queue names 1.1.0. */
async function behindHead(config: AgentConfig, name: string): Promise<void> {
  const v1 = await writeArtifact(suite.ws.dir, `${name}-1.bin`, 8_000)
  const v2 = await writeArtifact(suite.ws.dir, `${name}-2.bin`, 9_000)
  await suite.publish(v1.path, name, '1.0.0')
  await installArtifact(config, { name })
  await suite.publish(v2.path, name, '1.1.0')
}

/**
 * A fetch that answers prefetch polls with `rewrite` of what the edge sent (a cache, a mirror or a
 * meddling path), passes the rest, and records every other path asked for.
 */
function rewritingQueue(rewrite: (queue: Record<string, unknown>) => Promise<unknown> | unknown) {
  const asked: string[] = []
  const fetchImpl: typeof fetch = async (input, init) => {
    const path = new URL(input instanceof Request ? input.url : String(input)).pathname
    const response = await fetch(input, init)
    if (path !== '/v1/prefetch') {
      asked.push(path)
      return response
    }
    return Response.json(await rewrite((await response.json()) as Record<string, unknown>))
  }
  return { fetchImpl, asked }
}

/** The queue the edge plans for `client` with `installed`, statement included. */
async function queueOf(client: string, installed: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${suite.edge.url}/v1/prefetch?client=${client}&installed=${installed}`)
  expect(response.status).toBe(200)
  return (await response.json()) as Record<string, unknown>
}

/** Runs one cycle through `rewrite`, expects the poll refused naming `why`, and nothing fetched. */
async function expectRefused(
  config: AgentConfig,
  rewrite: Parameters<typeof rewritingQueue>[0],
  why: string,
  now?: () => Date,
): Promise<void> {
  const path = rewritingQueue(rewrite)
  const refused = await agentFailure(
    runDaemonCycle(config, { loadSampler: idle, fetchImpl: path.fetchImpl, ...(now ? { now } : {}) }),
  )
  expect(refused.code).toBe('untrusted-index')
  expect(refused.message).toContain('the prefetch plan')
  expect(refused.message).toContain(why)
  // Refused before acting: no index, manifest or byte of any item was asked for.
  expect(path.asked.filter((p) => p.startsWith('/v1/artifacts/'))).toEqual([])
  expect(await new StagingArea(config.installRoot).list()).toEqual([])
}

describe('signed prefetch plans on the device', () => {
  it("stages from a queue signed for it; refuses a tampered, another device's, an unsigned or an expired one", async () => {
    const config = device('pinned')
    await behindHead(config, 'psig')

    // Another device's genuine queue for the same artifact: signed, fresh, but not this device's.
    const otherDevice = await queueOf('other-device-0001', 'psig@1.0.0')
    expect((otherDevice.statement as { signed: { client: string } }).signed.client).toBe('other-device-0001')
    await expectRefused(config, () => otherDevice, 'was made for another device (other-device-0001')

    // The edge's own queue for this device with its items' plans pointed elsewhere: the signature stays.
    await expectRefused(
      config,
      (queue) => ({
        ...queue,
        items: (queue.items as Array<{ plan: object }>).map((i) => ({
          ...i,
          plan: { ...i.plan, url: '/v1/artifacts/psig/1.0.0/blob' },
        })),
      }),
      'differs from what its statement covers',
    )

    // Stripped of its statement (or an edge that does not sign plans yet).
    await expectRefused(
      config,
      ({ statement: _, ...queue }) => queue,
      'carries no signed statement, and indexKeys requires one',
    )

    // The edge's own, read more than an hour later (a cache or replay): past its lifetime.
    const later = () => new Date(Date.now() + 3600_000 + 60_000)
    await expectRefused(config, (queue) => queue, 'is stale: its statement expired at', later)

    // The long-running daemon logs the refusal as a failed poll and carries on.
    const errors: string[] = []
    const stop = new AbortController()
    const path = rewritingQueue(() => otherDevice)
    await runDaemon(config, {
      signal: stop.signal,
      loadSampler: idle,
      fetchImpl: path.fetchImpl,
      intervalSeconds: 3600,
      onError: (error) => {
        errors.push(error.message)
        stop.abort()
      },
    })
    expect(errors).toEqual([expect.stringContaining('was made for another device')])

    // The queue as the edge signed it for this device is taken, and its item staged.
    expect((await queueOf(await agentClientId(config), 'psig@1.0.0')).statement).toBeDefined()
    const cycle = await runDaemonCycle(config, { loadSampler: idle })
    expect(cycle.failures).toEqual([])
    expect(cycle.staged).toContainEqual(expect.objectContaining({ name: 'psig', version: '1.1.0' }))
  })

  it('a device without indexKeys takes the queue as sent, signed or not (as before)', async () => {
    const config = device('unpinned', false)
    await behindHead(config, 'punsig')
    const path = rewritingQueue(({ statement: _, ...queue }) => queue)
    const cycle = await runDaemonCycle(config, { loadSampler: idle, fetchImpl: path.fetchImpl })
    expect(cycle.staged).toContainEqual(expect.objectContaining({ name: 'punsig', version: '1.1.0' }))
  })

  it('an enrolled device takes the queue signed for its device id, not one for the id it polls with', async () => {
    const code = await createEnrollmentCode(new EdgeClient(suite.edge.url), TEST_OPERATOR_TOKEN, {
      label: 'prefetch-signed',
      maxDevices: 2,
    })
    const config = { ...device('enrolled'), enrollmentCode: code.code }
    await behindHead(config, 'penr')
    const deviceId = await agentClientId(config)
    const telemetryId = await new TelemetryQueue(config.installRoot).clientId()
    expect(deviceId).not.toBe(telemetryId)

    // The anonymous queue of the id it polls with (`client=`) is signed, but for a client that is not
    // this device: the edge plans an enrolled device's queue under its device id.
    const anonymous = await queueOf(telemetryId, 'penr@1.0.0')
    await expectRefused(
      config,
      () => anonymous,
      `was made for another device (${telemetryId}, not ${deviceId})`,
    )

    const cycle = await runDaemonCycle(config, { loadSampler: idle })
    expect(cycle.failures).toEqual([])
    expect(cycle.staged).toContainEqual(expect.objectContaining({ name: 'penr', version: '1.1.0' }))
  })
})
