import { rm } from 'node:fs/promises'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runDaemon } from '../daemon/daemon.ts'
import { makeWorkspace, type Workspace } from './fixtures.ts'

/**
 * The daemon facing an edge that answers the prefetch poll with nonsense timing: a broken edge clock,
 * or a device clock far behind the edge's. The daemon must neither spin nor go to sleep for good.
 */

let server: Server
let ws: Workspace
let polls = 0
let validUntil = ''
/** Seconds of Retry-After on a 429 answer to the poll; null answers the poll normally. */
let refuseFor: number | null = null

beforeAll(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume()
    if (req.url?.startsWith('/v1/prefetch')) {
      polls++
      if (refuseFor !== null) {
        res.writeHead(429, { 'content-type': 'application/problem+json', 'retry-after': String(refuseFor) })
        res.end('{"type":"about:blank#too-many-requests","title":"too many requests","status":429}')
        return
      }
      res.writeHead(200, { 'content-type': 'application/json' })
      res.end(
        JSON.stringify({
          clientId: 'client-hostile-edge',
          generatedAt: new Date().toISOString(),
          validUntil,
          items: [],
        }),
      )
      return
    }
    // Telemetry and anything else: accepted, nothing to say.
    res
      .writeHead(202, { 'content-type': 'application/json' })
      .end('{"region":"x","accepted":0,"duplicate":false}')
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  ws = await makeWorkspace(`http://127.0.0.1:${(server.address() as AddressInfo).port}`)
})

afterAll(async () => {
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await rm(ws.dir, { recursive: true, force: true })
})

async function runFor(
  ms: number,
  intervalSeconds = 1,
): Promise<{ polls: number; nextPollAt: Date[]; errors: Error[] }> {
  polls = 0
  const nextPollAt: Date[] = []
  const errors: Error[] = []
  const controller = new AbortController()
  const done = runDaemon(
    { ...ws.config, idleLoadPerCore: 1000 },
    {
      signal: controller.signal,
      intervalSeconds,
      onCycle: (_result, next) => {
        if (next !== null) nextPollAt.push(next)
      },
      onError: (error, next) => {
        errors.push(error)
        if (next !== null) nextPollAt.push(next)
      },
    },
  )
  await new Promise((resolve) => setTimeout(resolve, ms))
  controller.abort()
  await done
  return { polls, nextPollAt, errors }
}

describe('daemon against an edge with nonsense validUntil', () => {
  it('does not spin on a validUntil years ahead (timer overflow), and waits at most an hour', async () => {
    validUntil = '9999-12-31T23:59:59.000Z'
    const started = Date.now()
    const { polls: seen, nextPollAt } = await runFor(1500)
    // Node fires timers longer than 2^31 - 1 ms at once: without a bound this was hundreds of polls.
    expect(seen).toBe(1)
    expect(nextPollAt).toHaveLength(1)
    expect(nextPollAt[0]?.getTime()).toBeLessThanOrEqual(started + 3_600_000 + 5000)
  })

  it('still polls on its own interval when validUntil is in the past', async () => {
    validUntil = '2000-01-01T00:00:00.000Z'
    const { polls: seen } = await runFor(2500)
    expect(seen).toBeGreaterThanOrEqual(2)
    expect(seen).toBeLessThanOrEqual(4)
  })
})

describe('daemon interval', () => {
  it('an interval past the timer limit (--interval 3000000) waits a week, not zero', async () => {
    validUntil = new Date(Date.now() + 30_000).toISOString()
    const started = Date.now()
    const { polls: seen, nextPollAt } = await runFor(1500, 3_000_000)
    expect(seen).toBe(1)
    expect(nextPollAt[0]?.getTime()).toBeGreaterThan(started + 6 * 86_400_000)
    expect(nextPollAt[0]?.getTime()).toBeLessThanOrEqual(started + 7 * 86_400_000 + 5000)
  })
})

describe('daemon against a rate-limited edge', () => {
  it('waits the Retry-After of a 429 poll instead of its shorter interval', async () => {
    refuseFor = 120
    try {
      const started = Date.now()
      const { polls: seen, nextPollAt, errors } = await runFor(2500)
      // A 1 s interval would have polled two or three times by now.
      expect(seen).toBe(1)
      expect(errors[0]?.message).toContain('HTTP 429')
      expect(nextPollAt[0]?.getTime()).toBeGreaterThanOrEqual(started + 120_000)
      expect(nextPollAt[0]?.getTime()).toBeLessThanOrEqual(started + 125_000)
    } finally {
      refuseFor = null
    }
  })
})
