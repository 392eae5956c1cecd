import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { cleanup, harness, post, tempDir, within } from './harness.ts'

/**
 * A validator module that never answers (it awaits a server that hangs, say) must not hold the write,
 * its client and the swap for ever: it gets `hookTimeoutMs`, like the service's hooks, and the write is
 * then refused with 503 (not checked, so not called invalid).
 */
afterAll(cleanup)

describe('buffered swap: a validator that never answers', () => {
  it('refuses the write with 503 after hookTimeoutMs, and the swap ends', async () => {
    const dir = await tempDir('deltaport-swap-validator-')
    const validatorModule = join(dir, 'validator.mjs')
    await writeFile(
      validatorModule,
      `export default (req) => (req.client === 'stuck' ? new Promise(() => {}) : true)\n`,
    )
    const h = await harness([{ version: '1.0.0' }, { version: '2.0.0', startupDelayMs: 500 }], {
      validatorModule,
      hookTimeoutMs: 1000,
    })
    const swap = h.swapTo('2.0.0')
    await h.until((e) => e.type === 'buffering')
    const [stuck, fine] = await within(
      Promise.all([post(h.port, 'stuck', 1), post(h.port, 'fine', 1)]),
      15_000,
      'the held writes',
    )
    expect(stuck.status).toBe(503)
    expect(await stuck.json()).toMatchObject({ detail: expect.stringMatching(/validator.*1000 ms/) })
    expect(fine.status).toBe(200)
    expect((await within(swap, 15_000, 'the swap')).outcome).toBe('installed')
    expect((await h.log()).map((l) => l.client)).toEqual(['fine'])
  }, 60_000)
})
