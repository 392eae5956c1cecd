import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { installArtifact } from '../install.ts'
import { deltaUpdate } from './delta-update.ts'
import type { FaultProxy } from './fault-proxy.ts'
import { expectSameBytes } from './fixtures.ts'
import { useEdgeWorkspace } from './local-edge.ts'

/**
 * The plans of one update share one transfer bound (transferGraceSeconds plus the target's full size at
 * transferMinRateBps), re-plans included: each re-plan had a fresh bound, so up to 4 plans took up to 4
 * bounds before the full download took its own. Through the fault proxy in front of the real edge.
 */
const suite = useEdgeWorkspace()

let proxy: FaultProxy | undefined
afterEach(async () => {
  await proxy?.close()
  proxy = undefined
})

describe("an update's plans", () => {
  it('share one bound: a re-plan gets what is left of it, and the full download follows when it is spent', async () => {
    const name = 'pb-replans'
    // Every delta plan is slow, then stale: the stream's first range (block 0, its metadata) trickles
    // in over about 1.5 s, and its data ranges are answered 404 (what a plan named is gone since: the
    // agent asks for a new plan, which names the same stream). Faulted by range, not by arrival.
    const { config, v2Bytes, store } = await deltaUpdate(
      suite,
      name,
      (_n, request) =>
        request.range?.startsWith('bytes=0-')
          ? { kind: 'trickle', trickleMs: 10, bytes: 250 }
          : { kind: 'other-path', path: `/v1/deltas/${name}/9.9.8/9.9.9` },
      (started) => {
        proxy = started
      },
    )
    // 700 kB at 233 334 B/s is 3 s, plus 1 s of grace: a bound of 4 s for all the plans together, where
    // each of the 3 delta plans alone takes about 1.5 s (well within a fresh bound of its own).
    const result = await installArtifact(
      { ...config, transferMinRateBps: 233_334, transferGraceSeconds: 1 },
      { name },
    )
    expect(result).toMatchObject({ version: '1.1.0', method: 'full' })
    const stale = result.fallbacks.filter((f) => /^delta: .*404/.test(f))
    const spent = result.fallbacks.filter((f) =>
      /not done within 4 s .*for all of the update's plans/.test(f),
    )
    // The bound ran out during the plans (a fresh bound per plan let all 3 delta plans finish as stale,
    // and none was cut), and fewer plans were followed than 4 attempts allow.
    expect(spent).toHaveLength(1)
    expect(stale.length).toBeLessThanOrEqual(2)
    expect(result.fallbacks[0]).toMatch(/^chunk-sync: expected 206/)
    expectSameBytes(await readFile(join(store.currentLink, 'blob')), v2Bytes)
  }, 60_000)
})
