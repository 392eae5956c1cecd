import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { deltaUpdate as sharedDeltaUpdate } from './delta-update.ts'
import type { Fault, FaultProxy } from './fault-proxy.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The ranges of a delta stream (update/stream-fetch.ts) through a fault proxy in front of the real
 * edge: a range the edge answers 503 or 429 is asked again after the agent's back-off (retryWaitMs:
 * 250 ms doubling, jittered to 50–100 %, at least the edge's Retry-After), not at once, and no other
 * range goes out meanwhile.
 */

const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

const deltaUpdate = (name: string, deltaFault: (n: number) => Fault | undefined) =>
  sharedDeltaUpdate(suite, name, deltaFault, (started) => {
    proxy = started
  })

describe('a delta-stream range the edge answers 503', () => {
  it('is asked again after the back-off, doubling, and nothing else is asked meanwhile', async () => {
    // The probe (block 0) once, then the first range of blocks twice in a row; no Retry-After.
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate('sr-503', (n) =>
      n === 1 || n === 3 || n === 4 ? { kind: 'unavailable' } : undefined,
    )
    const result = await installArtifact(config, { name: 'sr-503' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    expect(result.fallbacks).toEqual([expect.stringMatching(/^chunk-sync: expected 206/)])
    const asked = deltaRequests()
    expect(asked.length).toBeGreaterThanOrEqual(5)
    // Each failed range is the very next one asked: the back-off holds every range back.
    expect(asked[1]?.range).toBe(asked[0]?.range)
    expect(asked[3]?.range).toBe(asked[2]?.range)
    expect(asked[4]?.range).toBe(asked[2]?.range)
    // 500 ms after a first failure, 1 s after a second, each jittered to 50–100 %.
    expect(asked[1]!.at - asked[0]!.at).toBeGreaterThanOrEqual(240)
    expect(asked[3]!.at - asked[2]!.at).toBeGreaterThanOrEqual(240)
    expect(asked[4]!.at - asked[3]!.at).toBeGreaterThanOrEqual(490)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it("waits the answer's Retry-After when it is longer than the back-off", async () => {
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate('sr-503-after', (n) =>
      n === 2 ? { kind: 'unavailable', retryAfter: '2' } : undefined,
    )
    const result = await installArtifact(config, { name: 'sr-503-after' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'delta' })
    const asked = deltaRequests()
    expect(asked[2]?.range).toBe(asked[1]?.range)
    expect(asked[2]!.at - asked[1]!.at).toBeGreaterThanOrEqual(1_990)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })

  it('falls back to the next plan at once when the edge asks for more than 30 s', async () => {
    const started = performance.now()
    const { config, v2Bytes, deltaRequests, store } = await deltaUpdate('sr-503-long', (n) =>
      n === 2 ? { kind: 'unavailable', retryAfter: '120' } : undefined,
    )
    const result = await installArtifact(config, { name: 'sr-503-long' })
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    expect(result.fallbacks).toEqual([
      expect.stringMatching(/^chunk-sync: expected 206/),
      expect.stringMatching(/^delta: .*HTTP 503/),
    ])
    expect(deltaRequests()).toHaveLength(2)
    expect(performance.now() - started).toBeLessThan(30_000)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  })
})
