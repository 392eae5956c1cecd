import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { sleep } from '../service-process.ts'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, rawConnection, serviceFile, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * Chunked trailers are not forwarded (README "Running a service: buffered swap"; ADR 0009, amended):
 * neither a client's request trailers to the service nor the service's answer trailers to the client,
 * live or held (the journal has no field for them). The bodies pass whole. This pins that behaviour: a
 * change to it must change the documentation too.
 */
afterAll(cleanup)

const CHUNKED_WITH_TRAILER =
  'POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nx-client-id: t1\r\ntransfer-encoding: chunked\r\n' +
  'trailer: x-client-sum\r\n\r\n5\r\nhello\r\n0\r\nx-client-sum: 42\r\n\r\n'

describe('buffered swap: chunked trailers', () => {
  it('forwards neither request nor answer trailers, live or held, and passes the bodies whole', async () => {
    const dir = await tempDir('deltaport-swap-trailers-')
    // /echo answers chunked with a trailer of its own and says which request trailers it saw.
    const service = (version: string, startupDelayMs: number) =>
      serviceFile(join(dir, `svc-${version}.mjs`), {
        onEnd: `if (req.url === '/health') return res.end('ok')
    res.writeHead(200, { 'x-version': ${JSON.stringify(version)}, trailer: 'x-sum' })
    res.write('seen:' + JSON.stringify(req.trailers) + ';')
    res.addTrailers({ 'x-sum': 'from-service' })
    res.end()`,
        startupDelayMs,
      })
    const events: SupervisorEvent[] = []
    const none = { kind: 'none' } as const
    const supervisor = await supervise(dir, await service('1.0.0', 0), { prepare: none, flush: none }, events)
    try {
      const live = rawConnection(supervisor.publicPort)
      live.send(CHUNKED_WITH_TRAILER)
      await live.receive(/seen:\{.*\};/)
      // The end of the message (and any trailer) follows the last chunk at once.
      await sleep(300)
      expect(live.text).toMatch(/^HTTP\/1\.1 200 [\s\S]*x-version: 1\.0\.0/)
      expect(live.text).toContain('seen:{};')
      expect(live.text).not.toMatch(/x-sum/i)
      live.close()

      const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: await service('2.0.0', 800) })
      await waitFor(() => events.some((e) => e.type === 'buffering'), 20_000)
      const held = rawConnection(supervisor.publicPort)
      held.send(CHUNKED_WITH_TRAILER)
      expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
      await held.receive(/seen:\{.*\};/)
      await sleep(300)
      expect(held.text).toMatch(/^HTTP\/1\.1 200 [\s\S]*x-version: 2\.0\.0/)
      expect(held.text).toContain('seen:{};')
      expect(held.text).not.toMatch(/x-sum/i)
      held.close()
    } finally {
      await supervisor.stop()
    }
  }, 60_000)
})
