import { expect, it } from 'vitest'
import { decodeContainer } from './container.ts'
import { fuzzArchive, seedCases } from './fuzz.ts'

it('mutated archive deltas yield the target or a DeltaFormatError, nothing else', async () => {
  const report = await fuzzArchive(2)
  console.log(
    `archive fuzz: ${report.seeds} seeds, ${report.iterations} iterations, ${report.rejected} rejected, ${report.accepted} accepted`,
  )
  expect(report.failures).toEqual([])
  expect(report.seeds).toBe(10)
  expect(report.iterations).toBeGreaterThan(20)
})

it('the seed deltas hold every segment kind, spliced ones in both block forms, gzip and zip', () => {
  // Mutations of valid deltas reach the structures these hold; random bytes never would.
  const seen = new Set<string>()
  for (const { delta } of seedCases()) {
    const c = decodeContainer(delta, { maxTargetBytes: 1 << 20, maxExpandedBytes: 4 << 20 })
    seen.add(`${c.sourceKind}/${c.differId}`)
    for (const s of c.segments) {
      seen.add(s.kind === 'spliced' ? `spliced:${s.blocks === 'zlib' ? 'zlib' : 'recorded'}` : s.kind)
      if (s.kind === 'spliced') seen.add(`${c.sourceKind}:spliced`)
    }
  }
  expect([...seen].sort()).toEqual(
    [
      'deflate',
      'gzip/approx',
      'gzip/vcdiff',
      'gzip:spliced',
      'literal',
      'reblocked',
      'spliced:recorded',
      'spliced:zlib',
      'tokens',
      'zip/vcdiff',
      'zip:spliced',
    ].sort(),
  )
})
