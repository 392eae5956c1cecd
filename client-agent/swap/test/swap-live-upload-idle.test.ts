import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { sleep } from '../service-process.ts'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { cleanup, rawConnection, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A body the proxy forwards as it arrives (no swap holds it) has the same idle bound as a held one,
 * `bodyIdleTimeoutMs`: a client that sends its headers and part of a body and then goes silent used
 * to keep its connection, the service's request and a request in progress (which a stop waits for)
 * until Node's 300 s requestTimeout. A service that reads slowly is not such a client.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * A service that logs each request's arrival (arrived.log) and, once its body is whole, its length
 * (complete.log), then answers with that length. It starts reading a body after `readAfterMs`.
 */
async function service(dir: string, readAfterMs: number): Promise<string> {
  const file = join(dir, 'service.mjs')
  await writeFile(
    file,
    `import { createServer } from 'node:http'
import { appendFileSync } from 'node:fs'
const log = (name, line) => appendFileSync(process.env.DELTAPORT_DATA_DIR + '/' + name, line + '\\n')
const server = createServer((req, res) => {
  log('arrived.log', req.url)
  let size = 0
  req.pause()
  setTimeout(() => req.resume(), req.url === '/health' ? 0 : ${readAfterMs})
  req.on('data', (chunk) => { size += chunk.length })
  req.on('end', () => {
    log('complete.log', req.url + ' ' + size)
    res.end(String(size))
  })
})
process.on('SIGTERM', () => process.exit(0))
server.listen(Number(process.env.PORT), '127.0.0.1')
`,
  )
  return file
}

async function lines(dir: string, name: string): Promise<string[]> {
  return (await readFile(join(dir, 'data', name), 'utf8').catch(() => '')).split('\n').filter(Boolean)
}

describe('swap proxy: a body forwarded live', () => {
  it('gets 408 and its connection closed when it stalls, and no longer holds a stop until stopTimeoutMs', async () => {
    const dir = await tempDir('deltaport-swap-live-idle-')
    const events: SupervisorEvent[] = []
    // A stop that waited for the stalled upload would take the 20 s of stopTimeoutMs.
    const supervisor = await supervise(
      dir,
      await service(dir, 0),
      { bodyIdleTimeoutMs: 500, stopTimeoutMs: 20_000 },
      events,
    )
    supervisors.push(supervisor)
    const upload = rawConnection(supervisor.publicPort)
    upload.send('POST /upload HTTP/1.1\r\nHost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n0123456789')
    // The service has the request (and the first bytes); then the client goes silent.
    const deadline = Date.now() + 20_000
    while (!(await lines(dir, 'arrived.log')).includes('/upload') && Date.now() < deadline) await sleep(10)
    expect(await lines(dir, 'arrived.log')).toContain('/upload')

    const stopping = Date.now()
    await within(supervisor.stop(), 25_000, 'the stop')
    expect(Date.now() - stopping).toBeLessThan(5000)
    const answer = await upload.receive(/^HTTP\/1\.1 408 [\s\S]*\r\n0\r\n\r\n$/, 5000)
    expect(answer).toMatch(/\r\nconnection: close\r\n/i)
    expect(answer).toContain('no byte of the body arrived for 500 ms')
    await waitFor(() => upload.ended, 5000)
    // The service never got a whole body to act on.
    expect((await lines(dir, 'complete.log')).filter((l) => l.startsWith('/upload'))).toEqual([])
  }, 60_000)

  it('does not count the time the service holds the body back (it reads after 1.5 s)', async () => {
    const dir = await tempDir('deltaport-swap-live-slow-reader-')
    const supervisor = await supervise(dir, await service(dir, 1500), { bodyIdleTimeoutMs: 300 }, [])
    supervisors.push(supervisor)
    // Far more than the loopback sockets buffer: the client is held back too, and sends nothing meanwhile.
    const body = Buffer.alloc(64 * 1024 * 1024, 7)
    const answer = await within(
      fetch(`http://127.0.0.1:${supervisor.publicPort}/big`, { method: 'PUT', body }),
      30_000,
      'the upload',
    )
    expect(answer.status).toBe(200)
    expect(await answer.text()).toBe(String(body.length))
    await supervisor.stop()
  }, 60_000)
})
