import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { SupervisorEvent } from '../supervisor.ts'
import { cleanup, rawConnection, serviceFile, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A held write answered with a status that has no body (204 No Content, 304 Not Modified) reaches its
 * client as the service sent it: no `Content-Length: 0` made up by the proxy (RFC 9110 §8.6 forbids it
 * on a 204; on a 304 it would claim the selected representation is empty), exactly as a live answer.
 */
afterAll(cleanup)

describe('buffered swap: answers without a body', () => {
  it('passes a replayed 204 and 304 on without a made-up Content-Length', async () => {
    const dir = await tempDir('deltaport-swap-bodiless-')
    // PUT /item answers 204; POST /cached answers 304 with the representation's length, 1234.
    const service = (version: string, startupDelayMs: number) =>
      serviceFile(join(dir, `svc-${version}.mjs`), {
        onEnd: `if (req.url === '/health') return res.end('ok')
    if (req.url === '/item') return res.writeHead(204, { 'x-version': ${JSON.stringify(version)} }).end()
    if (req.url === '/cached') return res.writeHead(304, { 'content-length': '1234', etag: '"v1"' }).end()
    res.writeHead(404).end()`,
        startupDelayMs,
      })
    const events: SupervisorEvent[] = []
    // The service has no prepare or flush endpoint.
    const none = { kind: 'none' } as const
    const supervisor = await supervise(dir, await service('1.0.0', 0), { prepare: none, flush: none }, events)
    try {
      const request = (method: string, path: string) =>
        `${method} ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 2\r\n\r\n{}`
      // Live, for comparison: node's own 204 says nothing about a length.
      const live = rawConnection(supervisor.publicPort)
      live.send(request('PUT', '/item'))
      expect(await live.receive(/\r\n\r\n/)).not.toMatch(/content-length/i)
      live.close()

      const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: await service('2.0.0', 800) })
      await waitFor(() => events.some((e) => e.type === 'buffering'), 20_000)
      const held = rawConnection(supervisor.publicPort)
      held.send(request('PUT', '/item'))
      const cached = rawConnection(supervisor.publicPort)
      cached.send(request('POST', '/cached'))
      expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
      const heldText = await held.receive(/\r\n\r\n/)
      expect(heldText).toMatch(/^HTTP\/1\.1 204 [\s\S]*x-version: 2\.0\.0/)
      expect(heldText).not.toMatch(/content-length/i)
      const cachedText = await cached.receive(/\r\n\r\n/)
      expect(cachedText).toMatch(/^HTTP\/1\.1 304 /)
      expect(cachedText).toMatch(/content-length: 1234\r\n/i)
      // The connections stay usable: nothing was left unread on them.
      held.send('GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n')
      expect(await held.receive(/\r\n\r\nok$/)).toMatch(/HTTP\/1\.1 200 /)
      for (const c of [held, cached]) c.close()
    } finally {
      await supervisor.stop()
    }
  }, 60_000)
})
