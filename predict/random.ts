/**
 * Seeded randomness for predict/. Nothing here reads Math.random: simulations, tests and the bandit in
 * stats.ts take an `Rng` parameter so a run can be replayed exactly from its seed.
 */

/** A uniform source on [0, 1), like Math.random but injectable. */
export type Rng = () => number

/**
 * mulberry32: 32 bits of state, one multiply-xorshift round per draw. Not cryptographic; chosen because it
 * is tiny, fast under Math.imul and passes the statistical checks our simulations need.
 */
export function mulberry32(seed: number): Rng {
  let state = seed >>> 0
  return () => {
    state = (state + 0x6d2b79f5) >>> 0
    let t = state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Standard normal draw by Box-Muller; `1 - rng()` keeps the log argument in (0, 1]. */
export function normal(rng: Rng, mean = 0, std = 1): number {
  const u = 1 - rng()
  const v = rng()
  return mean + std * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v)
}
