import { describe, expect, it } from 'vitest'
import { InstalledParam, MAX_INSTALLED_PARAM, MAX_INSTALLED_PARAM_CHARS } from '../../schemas/aggregation.ts'
import type { PrefetchItem, PrefetchQueue } from '../../schemas/prefetch.ts'
import { installedSlices, MAX_INSTALLED_SLICE_CHARS, mergeSliceQueues } from './installed-slices.ts'

const refs = (n: number, name: (i: number) => string) =>
  Array.from({ length: n }, (_, i) => ({ name: name(i), version: '1.0.0' }))

describe('installedSlices', () => {
  it('covers every installed artifact once, in slices the edge accepts', () => {
    const installed = [
      ...refs(300, (i) => `a${i}`),
      ...refs(200, (i) => `@scope${i}/${'n'.repeat(100)}`),
      ...refs(150, (i) => `l${i}`.padEnd(128, 'x')),
    ]
    const slices = installedSlices(installed)
    expect(slices.flat().sort()).toEqual(installed.map((r) => `${r.name}@${r.version}`).sort())
    for (const slice of slices) {
      expect(slice.length).toBeLessThanOrEqual(MAX_INSTALLED_PARAM)
      const value = slice.join(',')
      expect(encodeURIComponent(value).length).toBeLessThanOrEqual(MAX_INSTALLED_SLICE_CHARS)
      expect(value.length).toBeLessThanOrEqual(MAX_INSTALLED_PARAM_CHARS)
      // What the edge parses it with.
      expect(InstalledParam.safeParse(value).success).toBe(true)
    }
  })

  it('sends one list when all fit, and none when nothing is installed', () => {
    expect(installedSlices(refs(MAX_INSTALLED_PARAM, (i) => `a${i}`))).toHaveLength(1)
    expect(installedSlices(refs(MAX_INSTALLED_PARAM + 1, (i) => `a${i}`))).toHaveLength(2)
    expect(installedSlices([])).toEqual([[]])
  })
})

function item(name: string, version: string, expectedValue: number, kind: 'delta' | 'full'): PrefetchItem {
  return {
    name,
    version,
    probability: 0.9,
    confidence: 1,
    expectedValue,
    plan: { kind, url: `/x/${name}`, size: 10, sha256: 'a'.repeat(64) },
  }
}

function queue(items: PrefetchItem[], validUntil: string): PrefetchQueue {
  return { clientId: 'c', generatedAt: '2026-11-26T00:00:00.000Z', validUntil, items }
}

describe('mergeSliceQueues', () => {
  it("takes an installed artifact's plan from the slice that reported it, the rest once, by value", () => {
    const merged = mergeSliceQueues([
      {
        slice: ['a@1.0.0'],
        // This slice never heard of b: it can only offer the whole artifact.
        queue: queue(
          [item('a', '1.1.0', 5, 'delta'), item('b', '2.1.0', 9, 'full'), item('dep', '1.0.0', 1, 'full')],
          '2026-11-26T00:01:00.000Z',
        ),
      },
      {
        slice: ['b@2.0.0'],
        queue: queue(
          [item('b', '2.1.0', 7, 'delta'), item('dep', '1.0.0', 1, 'full')],
          '2026-11-26T00:05:00.000Z',
        ),
      },
    ])
    expect(merged.items.map((i) => `${i.name}@${i.version}:${i.plan.kind}`)).toEqual([
      'b@2.1.0:delta',
      'a@1.1.0:delta',
      'dep@1.0.0:full',
    ])
    expect(merged.validUntil).toBe('2026-11-26T00:05:00.000Z')
  })

  it('leaves a single queue as the edge sent it', () => {
    const only = queue(
      [item('a', '1.1.0', 1, 'full'), item('b', '1.0.0', 9, 'full')],
      '2026-11-26T00:01:00.000Z',
    )
    expect(mergeSliceQueues([{ slice: [], queue: only }])).toBe(only)
  })
})
