import { expect, it } from 'vitest'
import { fuzzArchive } from './fuzz.ts'

it('mutated archive deltas yield the target or a DeltaFormatError, nothing else', async () => {
  const report = await fuzzArchive(2)
  console.log(
    `archive fuzz: ${report.seeds} seeds, ${report.iterations} iterations, ${report.rejected} rejected, ${report.accepted} accepted`,
  )
  expect(report.failures).toEqual([])
  expect(report.seeds).toBe(7)
  expect(report.iterations).toBeGreaterThan(20)
})
