import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings } from '../../../schemas/swap.ts'
import { Supervisor, type SupervisorEvent } from '../supervisor.ts'
import { cleanup, rawConnection, tempDir, waitFor, within } from './harness.ts'

/**
 * HTTP upgrades through the swap proxy: a plain `Upgrade: x-test` echo protocol over raw sockets (a
 * WebSocket handshake works the same way). Tunnels go to the process that serves reads, survive a swap
 * for the old process's stop grace, and are closed after it.
 */
afterAll(cleanup)

/** A service that speaks x-test after a 101: every chunk comes back prefixed with its version. */
async function echoService(dir: string, version: string, delayMs: number): Promise<string> {
  const file = join(dir, `upgrade-${version}.mjs`)
  await writeFile(
    file,
    `import { createServer } from 'node:http'
const version = ${JSON.stringify(version)}
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => res.end(JSON.stringify({ version, upgrade: req.headers.upgrade ?? null })))
})
server.on('upgrade', (req, socket) => {
  if (req.headers.upgrade !== 'x-test') return socket.end('HTTP/1.1 400 Bad Request\\r\\ncontent-length: 0\\r\\n\\r\\n')
  socket.write('HTTP/1.1 101 Switching Protocols\\r\\nupgrade: x-test\\r\\nconnection: Upgrade\\r\\nx-seen-for: ' + req.headers['x-forwarded-for'] + '\\r\\n\\r\\n')
  socket.on('data', (d) => socket.write(version + ':' + d.toString()))
  socket.on('error', () => undefined)
})
process.on('SIGTERM', () => process.exit(0))
setTimeout(() => server.listen(Number(process.env.PORT), '127.0.0.1'), ${delayMs})
`,
  )
  return file
}

const handshake = 'GET /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\nUpgrade: x-test\r\n\r\n'

describe('buffered swap: upgraded connections', () => {
  it('tunnels upgrades to the serving process, and closes the old one’s tunnels only after a grace', async () => {
    const dir = await tempDir('deltaport-swap-upgrade-')
    const events: Array<SupervisorEvent & { at: number }> = []
    const supervisor = await Supervisor.start({
      command: [process.execPath, '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      settings: SwapSettings.parse({
        prepare: { kind: 'none' },
        flush: { kind: 'none' },
        stopTimeoutMs: 1500,
        probationMs: 200,
      }),
      initial: { version: '1.0.0', artifactPath: await echoService(dir, '1.0.0', 0) },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
      onEvent: (e) => events.push({ ...e, at: Date.now() }),
    })
    try {
      const port = supervisor.publicPort
      const first = rawConnection(port)
      let closedAt = 0
      first.socket.once('close', () => {
        closedAt = Date.now()
      })
      first.send(handshake)
      expect(await first.receive(/\r\n\r\n/)).toMatch(/^HTTP\/1\.1 101 Switching Protocols\r\n/)
      expect(first.text).toMatch(/x-seen-for: 127\.0\.0\.1\r\n/)
      first.send('ping')
      await first.receive(/1\.0\.0:ping/)

      const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: await echoService(dir, '2.0.0', 800) })
      await waitFor(() => events.some((e) => e.type === 'buffering'), 20_000)
      // While writes are held, an upgrade is a read: it goes to the old process at once.
      const during = rawConnection(port)
      during.send(handshake)
      await during.receive(/^HTTP\/1\.1 101 /)
      during.send('held?')
      await during.receive(/1\.0\.0:held\?/)

      await waitFor(() => events.some((e) => e.type === 'switched'), 20_000)
      const switchedAt = events.find((e) => e.type === 'switched')!.at
      // After the switch, new tunnels reach the new version; the old ones still work (their grace).
      const after = rawConnection(port)
      after.send(handshake)
      await after.receive(/^HTTP\/1\.1 101 /)
      after.send('new')
      await after.receive(/2\.0\.0:new/)
      first.send('still')
      await first.receive(/1\.0\.0:still/)

      expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
      await waitFor(() => first.ended && during.ended && closedAt > 0, 10_000)
      // Closed by the old process's stop, not before its grace (stopTimeoutMs 1500, minus slack).
      expect(closedAt - switchedAt).toBeGreaterThanOrEqual(1200)
      // The new version's tunnel is untouched.
      expect(after.ended).toBe(false)
      after.send('again')
      await after.receive(/2\.0\.0:again/)
      for (const c of [first, during, after]) c.close()
    } finally {
      await supervisor.stop()
    }
  }, 60_000)
})
