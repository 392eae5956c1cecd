/**
 * Hostile input for the fuzzers (delta/*\/fuzz.ts, scripts/fuzz.ts) and the hardening tests: a seeded
 * generator, random bytes and damaged copies of valid encodings (plus realistic text for codec tests).
 * Seeded so a failing case replays exactly.
 */
import { concatBytes } from './io.ts'
import type { KnownCopy } from './known-copies.ts'

/** Small deterministic PRNG (xorshift32) so a failing seed can be replayed exactly. */
export function rng(seed: number): () => number {
  let s = seed | 0 || 0x9e3779b9
  return () => {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    return (s >>> 0) / 0x100000000
  }
}

export function randomBytes(r: () => number, n: number): Uint8Array {
  const out = new Uint8Array(n)
  for (let i = 0; i < n; i++) out[i] = Math.floor(r() * 256)
  return out
}

/**
 * A damaged copy: bit flips, a truncation, random bytes appended, a run overwritten, or an aligned 32-bit
 * field stomped with a value that provokes huge allocations or off-by-one bounds (0, 2^32 − 1, 2^31 − 1, 2^20).
 */
export function mutateBytes(r: () => number, input: Uint8Array): Uint8Array {
  const kind = Math.floor(r() * 5)
  const out = input.slice()
  if (kind === 0) {
    for (let i = 0, n = 1 + Math.floor(r() * 4); i < n && out.length > 0; i++) {
      const at = Math.floor(r() * out.length)
      out[at] = (out[at] ?? 0) ^ (1 << Math.floor(r() * 8))
    }
    return out
  }
  if (kind === 1) return out.subarray(0, Math.floor(r() * out.length))
  if (kind === 2) {
    const grown = new Uint8Array(out.length + 1 + Math.floor(r() * 64))
    grown.set(out)
    grown.set(randomBytes(r, grown.length - out.length), out.length)
    return grown
  }
  if (kind === 3) {
    const at = Math.floor(r() * out.length)
    out.set(randomBytes(r, Math.min(16, out.length - at)), at)
    return out
  }
  if (out.length < 4) return out
  const at = Math.min(Math.floor(r() * (out.length - 3)) & ~3, out.length - 4)
  const value = [0, 0xffffffff, 0x7fffffff, 1 << 20][Math.floor(r() * 4)] ?? 0
  new DataView(out.buffer, out.byteOffset, out.length).setUint32(at, value, true)
  return out
}

/**
 * Deterministic source-code-like text (short lines, a small vocabulary, numbers): compresses and
 * deflates like real JavaScript, so recompression and deflate-engine tests see realistic streams.
 */
export function sourceLikeText(seed: number, size: number): Uint8Array {
  let s = seed >>> 0
  const out: string[] = []
  let len = 0
  while (len < size) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    const line = `export const v${s % 977} = compute(${s % 31}, '${(s >>> 12).toString(36)}')\n`
    out.push(line)
    len += line.length
  }
  return new TextEncoder().encode(out.join('')).subarray(0, size)
}

/**
 * Source-like text with incompressible stretches in between (an archive holding code and images):
 * zlib stores those stretches in stored blocks, whose choice depends on the state of its window.
 */
export function textWithStoredStretches(seed: number): Uint8Array {
  const r = rng(seed)
  return concatBytes([
    sourceLikeText(seed + 1, 150_000),
    randomBytes(r, 90_000),
    sourceLikeText(seed + 2, 120_000),
    randomBytes(r, 70_000),
  ])
}

/**
 * Known-copy hints (known-copies.ts) for a pair, right and wrong alike: the same stretch at the same
 * offset (right where the target is a lightly edited source), random stretches (wrong, overlapping,
 * out of bounds). Differs must check every hint, so any mix still makes a delta that applies exactly.
 */
export function randomKnownCopies(r: () => number, sourceLength: number, targetLength: number): KnownCopy[] {
  const copies: KnownCopy[] = []
  for (let n = 1 + Math.floor(r() * 4); n > 0; n--) {
    const target = Math.floor(r() * (targetLength + 8))
    const length = 1 + Math.floor(r() * Math.max(1, targetLength - target + 8))
    const source = r() < 0.5 ? target : Math.floor(r() * (sourceLength + 8)) - (r() < 0.05 ? 16 : 0)
    copies.push({ target, source, length })
  }
  return copies
}
