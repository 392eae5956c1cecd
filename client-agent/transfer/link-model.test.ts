import { describe, expect, it } from 'vitest'
import { RangeController } from './controller.ts'
import { fairShares, fixedStrategy, PROFILES, simulateDownload } from './link-model.ts'

const MiB = 1024 * 1024

describe('fairShares', () => {
  it('gives capped flows their cap and splits the rest evenly', () => {
    expect(fairShares(10, [1, 100, 100])).toEqual([1, 4.5, 4.5])
    expect(fairShares(12, [100, 100], 1)).toEqual([4, 4])
  })
})

describe('simulateDownload', () => {
  it('is deterministic for a seed', () => {
    const run = (seed: number) => simulateDownload(8 * MiB, fixedStrategy(MiB, 4), PROFILES['4g'], seed)
    expect(run(7)).toEqual(run(7))
    expect(run(7).completionMs).not.toBe(run(8).completionMs)
  })

  it('takes about totalBytes / bandwidth on a LAN with large ranges', () => {
    const total = 32 * MiB
    const ideal = (total * 8) / PROFILES.lan.bandwidthBitsPerSec / 1e-3
    const result = simulateDownload(total, fixedStrategy(8 * MiB, 1), PROFILES.lan, 1)
    expect(result.completionMs).toBeGreaterThan(ideal)
    expect(result.completionMs).toBeLessThan(ideal * 1.1)
    expect(result).toMatchObject({ requests: 4, retries: 0, connectionsOpened: 1 })
  })

  it('pays per-request latency with small ranges and retries failed ranges', () => {
    const lan = simulateDownload(4 * MiB, fixedStrategy(64 * 1024, 1), PROFILES.lan, 1)
    expect(lan.requests).toBe(64)
    // Each request waits at least RTT + edge overhead (2 ms) before its bytes flow.
    expect(lan.completionMs).toBeGreaterThan(64 * 2)

    const sat = simulateDownload(16 * MiB, fixedStrategy(8 * MiB, 1), PROFILES.satellite, 3)
    expect(sat.requests).toBe(2 + sat.retries)
  })

  it('lets the controller keep up with the best of a few fixed plans', () => {
    for (const profile of [PROFILES.lan, PROFILES['4g']]) {
      const ctl = simulateDownload(
        16 * MiB,
        new RangeController({ blockSize: 4096 }),
        profile,
        1,
      ).completionMs
      const fixed = [fixedStrategy(MiB, 4), fixedStrategy(8 * MiB, 4), fixedStrategy(8 * MiB, 1)].map(
        (s) => simulateDownload(16 * MiB, s, profile, 1).completionMs,
      )
      expect(ctl).toBeLessThan(Math.min(...fixed) * 1.25)
    }
  })
})
