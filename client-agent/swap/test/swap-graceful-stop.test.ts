import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings } from '../../../schemas/swap.ts'
import { buildSampleService } from '../../sample-service/build.ts'
import { Supervisor } from '../supervisor.ts'
import { cleanup, harness, rawConnection, spawnAgent, tempDir, waitFor, within } from './harness.ts'

/**
 * What a stop (SIGTERM to `deltaport run`) does to the public connections: no new ones; a request in
 * flight on a keep-alive connection is answered with `Connection: close` and its connection closed; an
 * idle one is closed at once; and the stop does not wait out `stopTimeoutMs` when nothing is left.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop()
  await cleanup()
})

/** Waits for `conn`'s answer (matching `pattern`): a 200 saying `Connection: close`, then the connection ends. */
async function answeredThenClosed(conn: ReturnType<typeof rawConnection>, pattern: RegExp): Promise<void> {
  const answer = await conn.receive(pattern)
  expect(answer).toMatch(/^HTTP\/1\.1 200 /)
  expect(answer).toMatch(/\r\nconnection: close\r\n/i)
  await waitFor(
    () => conn.ended,
    10_000,
    () => 'the answered connection was left open',
  )
}

/** A service whose GET /slow answers after `slowMs`; anything else at once. */
async function slowService(dir: string, slowMs: number): Promise<string> {
  const file = join(dir, 'slow.mjs')
  await writeFile(
    file,
    `import { createServer } from 'node:http'
const server = createServer((req, res) => {
  req.resume()
  req.on('end', () => setTimeout(() => res.end(req.url), req.url === '/slow' ? ${slowMs} : 0))
})
process.on('SIGTERM', () => { server.close(); server.closeIdleConnections(); setTimeout(() => process.exit(0), 50) })
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
  )
  return file
}

const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n`

describe('stopping the swap proxy', () => {
  it('finishes in-flight keep-alive requests with Connection: close, closes idle ones, then returns', async () => {
    const dir = await tempDir('deltaport-swap-stop-')
    const supervisor = await Supervisor.start({
      command: [process.execPath, '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      // A stop that waited for this would be obvious; so would one that cut the slow request.
      settings: SwapSettings.parse({ stopTimeoutMs: 60_000 }),
      initial: { version: '1.0.0', artifactPath: await slowService(dir, 1500) },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
    })
    supervisors.push(supervisor)
    const port = supervisor.publicPort
    // An idle keep-alive connection: one request answered, the connection left open.
    const idle = rawConnection(port)
    idle.send(get('/fast'))
    await idle.receive(/\r\n\r\n\/fast$/)
    expect(idle.text).toMatch(/\r\nconnection: keep-alive\r\n/i)
    // A keep-alive connection whose request is still with the service.
    const busy = rawConnection(port)
    busy.send(get('/slow'))
    await waitFor(() => supervisor.counters.forwarded >= 2, 10_000)

    // Idle too, but its next request is on its way as the stop begins: answered, not reset.
    const onItsWay = rawConnection(port)
    onItsWay.send(get('/fast'))
    await onItsWay.receive(/\r\n\r\n\/fast$/)

    const stopped = supervisor.stop()
    onItsWay.send(get('/fast?again'))
    const again = await onItsWay.receive(/\/fast\?again$/, 10_000, true)
    const second = again.slice(again.lastIndexOf('HTTP/1.1 '))
    expect(second).toMatch(/^HTTP\/1\.1 200 /)
    expect(second).toMatch(/\r\nconnection: close\r\n/i)
    await within(
      waitFor(() => idle.ended, 10_000),
      15_000,
      'closing the idle connection',
    )
    expect(busy.ended).toBe(false)
    // No new connections.
    await expect(fetch(`http://127.0.0.1:${port}/fast`)).rejects.toThrow()
    await answeredThenClosed(busy, /\r\n\r\n\/slow$/)
    // Everything was answered: the stop does not wait out stopTimeoutMs.
    await within(stopped, 20_000, 'the stop')
    expect(idle.text).not.toMatch(/HTTP\/1\.1 \d+[\s\S]*HTTP\/1\.1/)
  })

  it('during a swap: closes idle connections at once, and answers held writes with Connection: close', async () => {
    // v2 takes 3 s to listen: the stop comes while writes are held.
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 3000 }], {
      stopTimeoutMs: 60_000,
    })
    const idle = rawConnection(h.port)
    idle.send(get('/health'))
    await idle.receive(/"version":"1\.0\.0"/)
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const body = JSON.stringify({ seq: 1 })
    const held = rawConnection(h.port)
    held.send(
      `POST /write HTTP/1.1\r\nHost: 127.0.0.1\r\nx-client-id: held\r\ncontent-length: ${body.length}\r\n\r\n${body}`,
    )
    await waitFor(() => h.supervisor.counters.held >= 1, 10_000)

    const stopped = h.supervisor.stop()
    await within(
      waitFor(() => idle.ended, 10_000),
      15_000,
      'closing the idle connection',
    )
    // The stop ends the swap (v2's health wait with it), and 1.0.0, which kept serving, takes the write.
    expect(await swap).toMatchObject({ outcome: 'stopped', errorClass: 'health-check', serving: '1.0.0' })
    await answeredThenClosed(held, /"version":"1\.0\.0","applied":true/)
    await within(stopped, 30_000, 'the stop')
  })

  it('lets the agent exit on its own right after a quick stop, without waiting out stopTimeoutMs', async () => {
    const dir = await tempDir('deltaport-swap-exit-')
    const artifact = await buildSampleService(join(dir, 'v1.js'), { version: '1.0.0' })
    // What `deltaport run` does on SIGTERM, in a process of its own: its exit is what is measured.
    const agent = await spawnAgent(
      dir,
      artifact,
      { stopTimeoutMs: 120000 },
      `await fetch('http://127.0.0.1:' + supervisor.publicPort + '/health')
await supervisor.stop()
console.log('stopped')
`,
    )
    let output = ''
    agent.stdout.on('data', (c: Buffer) => {
      output += c.toString()
    })
    try {
      // Nothing was in flight: far less than the 120 s of stopTimeoutMs, even on a busy machine.
      const [code] = await within(once(agent, 'exit'), 45_000, 'the agent process exiting')
      expect(code).toBe(0)
      expect(output.trim()).toBe('stopped')
    } finally {
      agent.kill('SIGKILL')
    }
  })
})
