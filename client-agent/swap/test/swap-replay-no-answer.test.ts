import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import type { Supervisor, SupervisorEvent } from '../supervisor.ts'
import { cleanup, journalWith, serviceFile, supervise, tempDir, waitFor, within } from './harness.ts'

/**
 * A held write replayed into the version that serves, which then never answers it. A live request gets
 * 504 after `serviceAnswerTimeoutMs` (swap-pool-bounds.test.ts); a replayed one held its client and a
 * replay lane (there are `replayConcurrency` of them) for as long as the service ran. Real service
 * processes; one replay lane, so a write stuck in it would visibly hold every other one.
 */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  await cleanup()
})

/**
 * 1.0.0 never answers POST /hang (counting those it got and how many of their connections closed) and
 * logs every other write to applied.log. 2.0.0 listens only once `data/go` exists, then fails its health
 * check, so the writes held meanwhile go back to 1.0.0: the serving version's replay.
 */
async function hangingService(dir: string): Promise<string> {
  return serviceFile(join(dir, 'service.mjs'), {
    imports: "import { appendFileSync, existsSync } from 'node:fs'",
    setup: `const version = process.env.DELTAPORT_VERSION
const data = process.env.DELTAPORT_DATA_DIR
const stats = { hung: 0, hungClosed: 0 }
if (version === '2.0.0') while (!existsSync(data + '/go')) await new Promise((resolve) => setTimeout(resolve, 20))`,
    onEnd: `if (req.url === '/health') return version === '2.0.0' ? res.writeHead(500).end() : res.end('ok')
if (req.url === '/stats') return res.end(JSON.stringify(stats))
if (req.method === 'POST' && req.url === '/hang') {
  stats.hung += 1
  req.socket.once('close', () => { stats.hungClosed += 1 })
  return
}
if (req.method === 'POST') {
  appendFileSync(data + '/applied.log', req.headers['x-client-id'] + ' ' + req.url + ' ' + version + '\\n')
  return res.end('applied by ' + version)
}
res.end('ok ' + version)`,
  })
}

const write = (port: number, client: string, path: string) =>
  fetch(`http://127.0.0.1:${port}${path}`, {
    method: 'POST',
    headers: { 'x-client-id': client },
    body: '{}',
  }).then(async (res) => ({
    status: res.status,
    type: res.headers.get('content-type'),
    body: await res.text(),
  }))

const stats = async (port: number) =>
  (await (await fetch(`http://127.0.0.1:${port}/stats`)).json()) as { hung: number; hungClosed: number }

/** The service's stats once the hung connection has closed (or what they are after 5 s). */
async function closedOnce(port: number): Promise<{ hung: number; hungClosed: number }> {
  const deadline = Date.now() + 5000
  for (;;) {
    const seen = await stats(port)
    if (seen.hungClosed >= 1 || Date.now() > deadline) return seen
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

describe('buffered swap: a replayed write the serving version never answers', () => {
  it('answers it 504 after serviceAnswerTimeoutMs, closes its connection, and replays the rest', async () => {
    const dir = await tempDir('deltaport-swap-replay-no-answer-')
    const events: SupervisorEvent[] = []
    const supervisor = await supervise(
      dir,
      await hangingService(dir),
      { serviceAnswerTimeoutMs: 1000, replayConcurrency: 1, unhealthyGraceMs: 200 },
      events,
    )
    supervisors.push(supervisor)
    const port = supervisor.publicPort

    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: join(dir, 'service.mjs') })
    await waitFor(() => events.some((e) => e.type === 'buffering'), 20_000)
    // Held in this order: client a's hung write, a's next write behind it, then client b's.
    const hung = write(port, 'a', '/hang')
    await waitFor(() => supervisor.counters.held >= 1, 10_000)
    const behind = write(port, 'a', '/w')
    await waitFor(() => supervisor.counters.held >= 2, 10_000)
    const other = write(port, 'b', '/w')
    await waitFor(() => supervisor.counters.held >= 3, 10_000)
    await writeFile(join(dir, 'data', 'go'), '')

    // Before, the hung write was never answered, and nothing behind it in the lane ever was.
    const answer = await within(hung, 15_000, 'the hung write')
    expect(answer.status).toBe(504)
    expect(answer.type).toBe('application/problem+json')
    expect(JSON.parse(answer.body)).toEqual({
      title: 'the service did not answer',
      status: 504,
      detail:
        'no answer from the service within 1000 ms to this write, held during an update and replayed; it was sent whole and may have been applied',
    })
    expect(await within(behind, 10_000, 'the write behind it')).toMatchObject({
      status: 200,
      body: 'applied by 1.0.0',
    })
    expect(await within(other, 10_000, 'the other client’s write')).toMatchObject({
      status: 200,
      body: 'applied by 1.0.0',
    })
    expect(await within(swap, 10_000, 'the swap')).toMatchObject({
      outcome: 'rolled-back',
      errorClass: 'health-check',
      serving: '1.0.0',
    })
    // Sent once (never again into the hung service), and its connection closed: the lane's slot is free.
    expect(await closedOnce(port)).toEqual({ hung: 1, hungClosed: 1 })
    expect(events).toContainEqual({
      type: 'error',
      message:
        'write 1 replayed into 1.0.0 got no answer within 1000 ms; answered 504 (it may have been applied), not sent again',
    })
    // Settled: nothing is left owed to a later replay, so the next start does not send it again.
    expect(supervisor.counters.writes).toBe(0)
  }, 60_000)

  it('does not let a journaled write the service never answers hold the start', async () => {
    const dir = await tempDir('deltaport-swap-replay-no-answer-start-')
    // An agent killed while it held these; the first one hangs the service.
    await journalWith(dir, [
      { id: 1, client: 'c1', path: '/hang' },
      { id: 2, client: 'c1', path: '/w' },
    ])
    const events: SupervisorEvent[] = []
    // Before, the start waited for the first write's answer for ever and never opened its port.
    const supervisor = await within(
      supervise(
        dir,
        await hangingService(dir),
        { serviceAnswerTimeoutMs: 1000, replayConcurrency: 1 },
        events,
      ),
      15_000,
      'the start',
    )
    supervisors.push(supervisor)
    expect(events).toContainEqual(expect.objectContaining({ type: 'started', recovered: 2 }))
    expect(await readFile(join(dir, 'data', 'applied.log'), 'utf8')).toBe('c1 /w 1.0.0\n')
    expect(await closedOnce(supervisor.publicPort)).toEqual({ hung: 1, hungClosed: 1 })
  }, 60_000)
})
