import { appendFile, mkdtemp, readFile, rm } from 'node:fs/promises'
import { request } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapSettings, type SwapSettingsInput } from '../../../schemas/swap.ts'
import { buildSampleService } from '../../sample-service/build.ts'
import { SwapJournal } from '../journal.ts'
import { sleep } from '../service-process.ts'
import { Supervisor, type SupervisorEvent } from '../supervisor.ts'
import type { SwapOutcome } from '../update-source.ts'
import { journalSettled } from './harness.ts'

const dirs: string[] = []
/** Supervisors still running when the file ends (a timed-out test) are stopped so no service is left behind. */
const supervisors: Supervisor[] = []
afterAll(async () => {
  for (const s of supervisors) await s.stop().catch(() => undefined)
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

/** A supervisor on v1 with a slow-starting v2 ready, so a swap stays in its buffering phase ~1.5 s. */
async function setup(input: SwapSettingsInput) {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-behaviour-'))
  dirs.push(dir)
  const v1 = await buildSampleService(join(dir, 'v1.js'), { version: '1.0.0' })
  const v2 = await buildSampleService(join(dir, 'v2.js'), { version: '2.0.0', startupDelayMs: 1500 })
  const events: SupervisorEvent[] = []
  const outcomes: SwapOutcome[] = []
  const supervisor = await Supervisor.start({
    command: [process.execPath, '--no-warnings', '{artifact}'],
    runDir: join(dir, 'run'),
    dataDir: join(dir, 'data'),
    settings: SwapSettings.parse(input),
    initial: { version: '1.0.0', artifactPath: v1 },
    host: '127.0.0.1',
    port: 0,
    stdio: 'ignore',
    onEvent: (e) => events.push(e),
    reporter: { report: async (o) => void outcomes.push(o) },
  })
  supervisors.push(supervisor)
  const url = `http://127.0.0.1:${supervisor.publicPort}`
  const swapping = async () => {
    const swap = supervisor.swapTo({ version: '2.0.0', artifactPath: v2 })
    while (!events.some((e) => e.type === 'buffering')) await sleep(10)
    // Wrapped: an async function returning the bare promise would make the caller wait for the swap.
    return { swap }
  }
  const log = async () =>
    (await readFile(join(dir, 'data', 'writes.log'), 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { client: string; seq: number; version: string })
  return { supervisor, url, swapping, log, outcomes }
}

const write = (url: string, client: string, seq: number, headers: Record<string, string> = {}) =>
  fetch(`${url}/write`, {
    method: 'POST',
    headers: { 'x-client-id': client, authorization: 'Bearer t', ...headers },
    body: JSON.stringify({ seq }),
  })

/** A chunked upload (no Content-Length), so the cap has to be enforced while reading. */
function chunkedWrite(url: string, bytes: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(`${url}/write`, {
      method: 'POST',
      headers: { 'x-client-id': 'chunky', authorization: 'Bearer t', 'transfer-encoding': 'chunked' },
    })
    req.on('response', (res) => {
      res.resume()
      resolve(res.statusCode ?? 0)
    })
    req.on('error', reject)
    for (let sent = 0; sent < bytes; sent += 1024) req.write(Buffer.alloc(1024, 1))
    req.end()
  })
}

describe('buffered swap: behaviour during the swap', () => {
  it('reads go to the old process, bad writes are refused at once, good ones get the new version’s answer', async () => {
    const { supervisor, url, swapping, log, outcomes } = await setup({
      requiredHeader: 'authorization',
      maxBodyBytes: 4096,
    })
    try {
      const { swap } = await swapping()
      const held = write(url, 'w', 1)
      let heldAnswered = false
      void held.then(() => {
        heldAnswered = true
      })
      const read = await fetch(`${url}/health`)
      expect(await read.json()).toEqual({ version: '1.0.0' })
      const noAuth = await fetch(`${url}/write`, {
        method: 'POST',
        headers: { 'x-client-id': 'x' },
        body: '{"seq":1}',
      })
      expect(noAuth.status).toBe(401)
      const oversized = await fetch(`${url}/write`, {
        method: 'POST',
        headers: { 'x-client-id': 'big', authorization: 't' },
        body: 'x'.repeat(5000),
      })
      expect(oversized.status).toBe(413)
      expect(await chunkedWrite(url, 64 * 1024)).toBe(413)
      // Requests the journal could not record within its limits are refused up front, not held.
      const manyHeaders = Object.fromEntries(Array.from({ length: 140 }, (_, i) => [`x-h${i}`, 'v']))
      expect((await write(url, 'hdr', 1, manyHeaders)).status).toBe(431)
      const longUrl = await fetch(`${url}/write?pad=${'p'.repeat(9000)}`, {
        method: 'POST',
        headers: { 'x-client-id': 'url', authorization: 't' },
        body: '{"seq":1}',
      })
      expect(longUrl.status).toBe(414)
      // All of those were answered while the swap was still holding writes.
      expect(heldAnswered).toBe(false)
      const answer = await held
      expect(answer.status).toBe(200)
      expect(await answer.json()).toMatchObject({ version: '2.0.0', applied: true })
      expect((await swap).outcome).toBe('installed')
      expect(outcomes).toEqual([{ version: '2.0.0', previous: '1.0.0', outcome: 'installed' }])
      expect((await log()).filter((l) => l.client === 'w')).toEqual([
        expect.objectContaining({ seq: 1, version: '2.0.0' }),
      ])
    } finally {
      await supervisor.stop()
    }
  })

  it('refuses with 503 + Retry-After under buffer pressure by tier, and replays by priority', async () => {
    const { supervisor, url, swapping, log } = await setup({
      // The other hook kinds: prepare by signal (the sample service handles SIGUSR2), no flush hook.
      prepare: { kind: 'signal', signal: 'SIGUSR2' },
      flush: { kind: 'none' },
      maxBufferedWrites: 4,
      replayConcurrency: 1,
      tiers: [{ name: 'gold', weight: 4, clients: ['gold-1'], shedAt: 1, retryFactor: 0.5 }],
      defaultTier: { name: 'bronze', weight: 1, shedAt: 0.5, retryFactor: 2 },
    })
    try {
      const { swap } = await swapping()
      const bronze = write(url, 'bronze-1', 1)
      await sleep(50)
      const bronzeRefused = await write(url, 'bronze-2', 1)
      expect(bronzeRefused.status).toBe(503)
      const bronzeWait = Number(bronzeRefused.headers.get('retry-after'))
      expect(bronzeWait).toBeGreaterThanOrEqual(1)
      // Retrying before the Retry-After is refused again, without touching the buffer.
      const tooSoon = await write(url, 'bronze-2', 1)
      expect(tooSoon.status).toBe(503)
      expect(Number(tooSoon.headers.get('retry-after'))).toBeLessThanOrEqual(bronzeWait)
      // Gold still gets in at the same fill, arriving after the bronze write.
      const gold = write(url, 'gold-1', 1)
      await sleep(50)
      const gold2 = write(url, 'gold-1', 2)
      await sleep(50)
      const full = await write(url, 'gold-other', 1, { 'x-client-id': 'gold-1' })
      expect(full.status).toBe(503)
      const answers = await Promise.all([bronze, gold, gold2])
      expect(answers.map((a) => a.status)).toEqual([200, 200, 200])
      expect((await swap).outcome).toBe('installed')
      // Gold (weight 4) replayed before bronze although bronze arrived first; each client in order.
      const order = (await log()).map((l) => `${l.client}#${l.seq}`)
      expect(order).toEqual(['gold-1#1', 'gold-1#2', 'bronze-1#1'])
    } finally {
      await supervisor.stop()
    }
  })

  it('on start, replays a journal whose last record was torn by a crash, and ignores the torn tail', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-swap-torn-'))
    dirs.push(dir)
    const journal = new SwapJournal(join(dir, 'run', 'swap.journal'))
    await journal.open()
    for (let seq = 1; seq <= 3; seq++) {
      await journal.append({
        t: 'w',
        id: seq,
        client: 'torn',
        method: 'POST',
        path: '/write',
        headers: [['x-client-id', 'torn']],
        body: Buffer.from(JSON.stringify({ seq })).toString('base64'),
        at: Date.now(),
      })
    }
    await journal.close()
    // Half of a fourth frame: a length and checksum, then only part of the payload.
    const torn = Buffer.alloc(8 + 10)
    torn.writeUInt32LE(200, 0)
    await appendFile(journal.path, torn)
    const v1 = await buildSampleService(join(dir, 'v1.js'), { version: '1.0.0' })
    const events: SupervisorEvent[] = []
    const supervisor = await Supervisor.start({
      command: [process.execPath, '--no-warnings', '{artifact}'],
      runDir: join(dir, 'run'),
      dataDir: join(dir, 'data'),
      settings: SwapSettings.parse({}),
      initial: { version: '1.0.0', artifactPath: v1 },
      host: '127.0.0.1',
      port: 0,
      stdio: 'ignore',
      onEvent: (e) => events.push(e),
    })
    supervisors.push(supervisor)
    try {
      expect(events).toContainEqual(expect.objectContaining({ type: 'started', recovered: 3 }))
      const log = (await readFile(join(dir, 'data', 'writes.log'), 'utf8')).trim().split('\n')
      expect(log.map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual([1, 2, 3])
      expect(journalSettled(journal.path)).toBe(true)
    } finally {
      await supervisor.stop()
    }
  })
})
