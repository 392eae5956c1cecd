import { describe, expect, it } from 'vitest'
import { nelderMead } from './optimize.ts'

describe('nelderMead', () => {
  it('finds an interior minimum', () => {
    const f = (x: readonly number[]) =>
      (x[0]! - 0.3) ** 2 + 10 * (x[1]! - 0.7) ** 2 + (x[0]! - 0.3) * (x[1]! - 0.7)
    const m = nelderMead(f, [0.9, 0.1], { lower: [0, 0], upper: [1, 1] })
    expect(m.x[0]).toBeCloseTo(0.3, 3)
    expect(m.x[1]).toBeCloseTo(0.7, 3)
  })

  it('stays inside the box and lands on the edge when the minimum is outside', () => {
    const seen: number[][] = []
    const f = (x: readonly number[]) => {
      seen.push([...x])
      return (x[0]! + 2) ** 2 + (x[1]! - 0.5) ** 2
    }
    const m = nelderMead(f, [0.5, 0.5], { lower: [0, 0], upper: [1, 1] })
    expect(m.x[0]).toBeCloseTo(0, 6)
    expect(m.x[1]).toBeCloseTo(0.5, 3)
    for (const x of seen) for (const v of x) expect(v >= 0 && v <= 1).toBe(true)
  })

  it('treats a non-finite objective as worst instead of failing', () => {
    const f = (x: readonly number[]) => (x[0]! > 0.8 ? Number.NaN : (x[0]! - 0.5) ** 2)
    expect(nelderMead(f, [0.9], { lower: [0], upper: [1] }).x[0]).toBeCloseTo(0.5, 3)
  })
})
