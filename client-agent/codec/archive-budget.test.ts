import { describe, expect, it } from 'vitest'
import {
  APPLY_BYTES_PER_EXPANDED_BYTE,
  APPLY_FIXED_BYTES,
  archiveLimitsFor,
  deviceArchiveLimits,
} from './archive-budget.ts'

const MiB = 1024 * 1024

describe('archive apply budget', () => {
  it('lets an archive expand as far as the memory left after the fixed cost allows', () => {
    expect(archiveLimitsFor(0).maxExpandedBytes).toBe(0)
    expect(archiveLimitsFor(APPLY_FIXED_BYTES).maxExpandedBytes).toBe(0)
    expect(archiveLimitsFor(APPLY_FIXED_BYTES + 60 * MiB).maxExpandedBytes).toBe(
      Math.floor((60 * MiB) / APPLY_BYTES_PER_EXPANDED_BYTE),
    )
    // typescript's 23 MB tar (measured +115 MiB) needs a device with about 164 MiB to spare.
    expect(archiveLimitsFor(164 * MiB).maxExpandedBytes).toBeGreaterThan(22_971_392)
    expect(archiveLimitsFor(150 * MiB).maxExpandedBytes).toBeLessThan(22_971_392)
  })

  it('never raises the codec ceiling of 1 GiB, and a configured cap only lowers it', () => {
    expect(archiveLimitsFor(64 * 1024 * MiB)).toEqual({
      maxExpandedBytes: 1024 * MiB,
      maxTargetBytes: 1024 * MiB,
      // The container's tables are held to what the expanded limit pays for (delta/archive/limits.ts).
      maxTableEntries: (1024 * MiB) / 16,
    })
    // The host's free memory moves between calls; any machine running these tests has far more than this.
    expect(deviceArchiveLimits(APPLY_FIXED_BYTES + 6 * MiB).maxExpandedBytes).toBe(MiB)
    expect(deviceArchiveLimits().maxExpandedBytes).toBeGreaterThan(MiB)
  })
})
