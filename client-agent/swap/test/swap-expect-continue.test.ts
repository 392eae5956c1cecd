import { afterAll, describe, expect, it } from 'vitest'
import { cleanup, harness, rawConnection, within } from './harness.ts'

/**
 * `Expect: 100-continue` during a swap: a held write that the headers alone condemn (too large, no
 * `requiredHeader`) is refused without a 100 Continue, so the client never uploads its body; a fit one
 * gets its 100 and is held as usual. Raw sockets, so every interim response the proxy sends is seen.
 */
afterAll(cleanup)

const head = (path: string, headers: Record<string, string>) =>
  `POST ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${Object.entries(headers)
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')}\r\n`

describe('buffered swap: Expect: 100-continue', () => {
  it('refuses an oversized or unauthorised held write without a 100 Continue, and holds a fit one', async () => {
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 1500 }], {
      maxBodyBytes: 1000,
      requiredHeader: 'authorization',
    })
    // Live (no swap): the 100 comes at once and the service answers.
    const live = rawConnection(h.port)
    const liveBody = JSON.stringify({ seq: 1 })
    live.send(
      head('/write', {
        'x-client-id': 'live',
        'content-length': String(liveBody.length),
        expect: '100-continue',
      }),
    )
    await live.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
    live.send(liveBody)
    expect(await live.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK[\s\S]*"version":"1\.0\.0"/)
    live.close()

    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')

    const big = rawConnection(h.port)
    big.send(
      head('/write', {
        'x-client-id': 'big',
        authorization: 'Bearer t',
        'content-length': '2000000',
        expect: '100-continue',
      }),
    )
    const bigText = await big.receive(/\r\n\r\n\{[^}]*\}/, 20_000, true)
    expect(bigText).toMatch(/^HTTP\/1\.1 413 /)
    expect(bigText).not.toMatch(/100 Continue/)

    const anonymous = rawConnection(h.port)
    anonymous.send(head('/write', { 'x-client-id': 'anon', 'content-length': '12', expect: '100-continue' }))
    const anonText = await anonymous.receive(/\r\n\r\n\{[^}]*\}/, 20_000, true)
    expect(anonText).toMatch(/^HTTP\/1\.1 401 /)
    expect(anonText).not.toMatch(/100 Continue/)

    // A fit write is asked for its body, held, and answered by the new version.
    const fit = rawConnection(h.port)
    const fitBody = JSON.stringify({ seq: 1 })
    fit.send(
      head('/write', {
        'x-client-id': 'fit',
        authorization: 'Bearer t',
        'content-length': String(fitBody.length),
        expect: '100-continue',
      }),
    )
    await fit.receive(/^HTTP\/1\.1 100 Continue\r\n\r\n/)
    fit.send(fitBody)
    expect((await within(swap, 20_000, 'the swap')).outcome).toBe('installed')
    expect(await fit.receive(/"applied":true/)).toMatch(/HTTP\/1\.1 200 OK[\s\S]*"version":"2\.0\.0"/)
    for (const c of [big, anonymous, fit]) c.close()
    expect((await h.log()).filter((l) => l.client === 'fit').map((l) => [l.seq, l.version])).toEqual([
      [1, '2.0.0'],
    ])
  }, 60_000)
})
