import { afterAll, describe, expect, it } from 'vitest'
import type { SwapSettingsInput } from '../../../schemas/swap.ts'
import { cleanup, harness, rawConnection, within } from './harness.ts'

/**
 * The buffer's bounds (`maxBufferBytes`, `maxBufferedWrites`) hold for bodies still arriving too: a
 * write admitted from its headers keeps its room while its body uploads, so concurrent slow uploads
 * cannot together be admitted past the cap (every one of them saw an empty buffer) and then all be held.
 * And a body that stalls gives that room back after `bodyIdleTimeoutMs`, one that trickles below
 * `bodyMinRate` after its window, not Node's 300 s requestTimeout.
 */
afterAll(cleanup)

const head = (headers: Record<string, string>) =>
  `POST /write HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`

/** A sample-service write of exactly `size` bytes. */
const bodyOf = (seq: number, size: number) => {
  const bare = JSON.stringify({ seq, data: '' })
  return JSON.stringify({ seq, data: 'x'.repeat(size - bare.length) })
}

describe('buffered swap: bounds while bodies are still arriving', () => {
  it('counts an admitted upload against maxBufferBytes until it is held', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 1500 }], {
      maxBufferBytes: 1000,
      maxBodyBytes: 900,
      // Only the hard cap refuses.
      defaultTier: { name: 'all', weight: 1, shedAt: 1 },
    })
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')

    // The first upload is admitted (its 100 Continue says so) and its body has not arrived yet.
    const first = rawConnection(h.port)
    const firstBody = bodyOf(1, 700)
    first.send(head({ 'x-client-id': 'a', 'content-length': '700', expect: '100-continue' }))
    await first.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)

    // 700 + 700 bytes would pass the 1000-byte cap: the second is refused before it uploads.
    const second = rawConnection(h.port)
    second.send(head({ 'x-client-id': 'b', 'content-length': '700', expect: '100-continue' }))
    const secondText = await second.receive(/\r\n\r\n\{[^}]*\}/, 20_000, true)
    expect(secondText).toMatch(/^HTTP\/1\.1 503 /)
    expect(secondText).toMatch(/retry-after: \d+/i)
    expect(secondText).not.toMatch(/100 Continue/)

    first.send(firstBody)
    expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
    expect(await first.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK[\s\S]*"version":"2\.0\.0"/)
    for (const c of [first, second]) c.close()
    expect((await h.log()).map((l) => l.client)).toEqual(['a'])
  }, 60_000)

  it('keeps room for the largest body while a chunked upload arrives, then holds its real size', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 1500 }], {
      maxBufferBytes: 1000,
      maxBodyBytes: 600,
      defaultTier: { name: 'all', weight: 1, shedAt: 1 },
    })
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const chunked = { 'transfer-encoding': 'chunked', expect: '100-continue' }
    const first = rawConnection(h.port)
    first.send(head({ 'x-client-id': 'a', ...chunked }))
    await first.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
    // Its size is unknown: 600 bytes are kept for it, so another chunked upload does not fit.
    const second = rawConnection(h.port)
    second.send(head({ 'x-client-id': 'b', ...chunked }))
    const secondText = await second.receive(/\r\n\r\n\{[^}]*\}/, 20_000, true)
    expect(secondText).toMatch(/^HTTP\/1\.1 503 /)
    expect(secondText).not.toMatch(/100 Continue/)

    const body = bodyOf(1, 20)
    first.send(`${body.length.toString(16)}\r\n${body}\r\n0\r\n\r\n`)
    await h.until(() => h.supervisor.counters.held === 1)
    // Held at its real 20 bytes: a write of 600 fits beside it.
    const third = rawConnection(h.port)
    third.send(head({ 'x-client-id': 'c', 'content-length': '600', expect: '100-continue' }))
    await third.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
    third.send(bodyOf(1, 600))
    expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
    expect(await first.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK/)
    expect(await third.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK/)
    for (const c of [first, second, third]) c.close()
    expect((await h.log()).map((l) => l.client).sort()).toEqual(['a', 'c'])
  }, 60_000)

  it('answers a body that stalls with 408 after bodyIdleTimeoutMs and gives its room back at once', async () => {
    const { h, swap, slow } = await admitSlowUpload({})
    // Sends 10 of its 700 bytes, then nothing.
    slow.send(bodyOf(1, 700).slice(0, 10))
    const stallStart = Date.now()
    // Its room is held meanwhile: another 700-byte write does not fit.
    const starved = rawConnection(h.port)
    starved.send(head({ 'x-client-id': 'b', 'content-length': '700', expect: '100-continue' }))
    expect(await starved.receive(/\r\n\r\n\{[^}]*\}/, 20_000, true)).toMatch(/^HTTP\/1\.1 503 /)
    // After the bound, not Node's 300 s requestTimeout.
    const answer = await slow.receive(/"detail":"[^"]*"\}/, 10_000)
    expect(Date.now() - stallStart).toBeGreaterThanOrEqual(900)
    expect(answer).toMatch(/HTTP\/1\.1 408 [\s\S]*content-type: application\/problem\+json/i)
    expect(answer).toMatch(/connection: close/i)
    expect(answer).toMatch(/"status":408/)
    starved.close()
    await expectRoomFreed(h, swap, slow)
  }, 60_000)

  it('answers a body that trickles below bodyMinRate with 408 and gives its room back', async () => {
    const { h, swap, slow } = await admitSlowUpload({ bodyMinRate: { bytesPerSecond: 100, windowMs: 1000 } })
    // A byte every 300 ms: never idle for bodyIdleTimeoutMs, far below 100 bytes/s.
    const body = bodyOf(1, 700)
    let sent = 0
    const drip = setInterval(() => slow.send(body.slice(sent, ++sent)), 300)
    const answer = await slow.receive(/"detail":"[^"]*"\}/, 10_000).finally(() => clearInterval(drip))
    expect(answer).toMatch(/HTTP\/1\.1 408 [\s\S]*slower than 100 bytes\/s/)
    await expectRoomFreed(h, swap, slow)
  }, 60_000)
})

/**
 * A swap whose buffer has room for one 700-byte write (bodies idle for 1 s at most), and client `a`'s
 * 700-byte upload admitted into it, its body not yet sent.
 */
async function admitSlowUpload(settings: SwapSettingsInput) {
  const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 4000 }], {
    maxBufferBytes: 1000,
    maxBodyBytes: 900,
    bodyIdleTimeoutMs: 1000,
    defaultTier: { name: 'all', weight: 1, shedAt: 1 },
    ...settings,
  })
  const swap = h.swapTo('2.0.0')
  await h.until((e) => e.type === 'buffering')
  const slow = rawConnection(h.port)
  slow.send(head({ 'x-client-id': 'a', 'content-length': '700', expect: '100-continue' }))
  await slow.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
  return { h, swap, slow }
}

/** Once the slow upload was refused, a write of its size is admitted, and only that is applied by 2.0.0. */
async function expectRoomFreed(
  h: Awaited<ReturnType<typeof harness>>,
  swap: Promise<{ outcome: string }>,
  slow: ReturnType<typeof rawConnection>,
) {
  const next = rawConnection(h.port)
  next.send(head({ 'x-client-id': 'c', 'content-length': '700', expect: '100-continue' }))
  await next.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
  next.send(bodyOf(1, 700))
  expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
  expect(await next.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK[\s\S]*"version":"2\.0\.0"/)
  for (const c of [slow, next]) c.close()
  expect((await h.log()).map((l) => l.client)).toEqual(['c'])
}
