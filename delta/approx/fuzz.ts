/**
 * Time-boxed fuzzer for the DPAX decoder: builds valid deltas from random and mutated pairs, checks they
 * round-trip, then corrupts them (and feeds noise) and checks the decoder only ever returns the right
 * target or throws DeltaFormatError. Pure, so `npm run fuzz` and the unit test share it.
 */
import { DeltaFormatError } from '../errors.ts'
import { randomKnownCopies } from '../fuzz-input.ts'
import { collectingSink, concatBytes, readerFromBytes, sourceFromBytes } from '../io.ts'
import { applyApproxDelta } from './apply.ts'
import { applyApproxDeltaStream } from './apply-stream.ts'
import { writeU32 } from './bytes.ts'
import { crc32 } from './crc32.ts'
import { createApproxDelta } from './encode.ts'
import { HEADER_SIZE } from './format.ts'

export interface FuzzReport {
  iterations: number
  /** Corrupted inputs the decoder rejected with DeltaFormatError. */
  rejected: number
  /** Corrupted inputs that still decoded (to the correct target, or the check would have thrown). */
  survived: number
}

/** Small deterministic PRNG (mulberry32) so a failing seed can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

type Rand = () => number

const int = (r: Rand, n: number) => Math.floor(r() * n)

function randomBytes(r: Rand, n: number, alphabet: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = int(r, alphabet)
  return b
}

/** A target that resembles the source: replaced, inserted and deleted runs plus "relocated" fields. */
export function mutatePair(r: Rand, source: Uint8Array): Uint8Array {
  let t: Uint8Array = source.slice()
  const edits = int(r, 6)
  for (let e = 0; e < edits; e++) {
    const at = int(r, t.length + 1)
    const len = int(r, 40)
    const kind = int(r, 4)
    if (kind === 0) t = concatBytes([t.subarray(0, at), randomBytes(r, len, 256), t.subarray(at)])
    else if (kind === 1) t = concatBytes([t.subarray(0, at), t.subarray(Math.min(t.length, at + len))])
    else if (kind === 2) t.set(randomBytes(r, Math.min(len, t.length - at), 256), at)
    else for (let i = at; i + 4 <= t.length && i < at + len * 8; i += 8) t[i] = (t[i]! + 16) & 0xff
  }
  return t
}

function corrupt(r: Rand, delta: Uint8Array): Uint8Array {
  const kind = int(r, 6)
  if (kind === 0) return delta.subarray(0, int(r, delta.length))
  if (kind === 1) return concatBytes([delta, randomBytes(r, 1 + int(r, 8), 256)])
  const d = delta.slice()
  const flips = 1 + int(r, 4)
  for (let i = 0; i < flips && d.length > 0; i++) {
    // Half the time aim past the header, where the header checksum does not already catch everything.
    const lo = kind === 2 && d.length > HEADER_SIZE ? HEADER_SIZE : 0
    const at = lo + int(r, d.length - lo)
    d[at] = kind === 3 ? int(r, 256) : d[at]! ^ (1 << int(r, 8))
  }
  // Re-seal the header so corrupted header fields reach the deeper checks.
  if (kind >= 4 && d.length >= HEADER_SIZE)
    writeU32(d, HEADER_SIZE - 4, crc32(d.subarray(0, HEADER_SIZE - 4)))
  return d
}

function expectOutcome(run: () => Uint8Array, target: Uint8Array, what: string): boolean {
  let out: Uint8Array
  try {
    out = run()
  } catch (e) {
    if (e instanceof DeltaFormatError) return false
    throw new Error(`${what}: decoder threw a non-format error: ${String(e)}`)
  }
  if (out.length !== target.length || out.some((v, i) => v !== target[i])) {
    throw new Error(`${what}: decoder accepted a corrupted delta and produced a wrong target`)
  }
  return true
}

async function expectOutcomeStream(source: Uint8Array, delta: Uint8Array, target: Uint8Array, r: Rand) {
  const sink = collectingSink()
  try {
    await applyApproxDeltaStream(readerFromBytes(source), sourceFromBytes(delta, 1 + int(r, 97)), sink)
  } catch (e) {
    if (e instanceof DeltaFormatError) return false
    throw new Error(`stream: decoder threw a non-format error: ${String(e)}`)
  }
  const out = sink.bytes()
  if (out.length !== target.length || out.some((v, i) => v !== target[i])) {
    throw new Error('stream: decoder accepted a corrupted delta and produced a wrong target')
  }
  return true
}

export async function fuzzApprox(seconds: number, seed = Date.now()): Promise<FuzzReport> {
  const r = prng(seed)
  const report: FuzzReport = { iterations: 0, rejected: 0, survived: 0 }
  const deadline = Date.now() + seconds * 1000
  while (Date.now() < deadline) {
    report.iterations++
    const source = randomBytes(r, int(r, 600), r() < 0.5 ? 4 : 256)
    const target = r() < 0.8 ? mutatePair(r, source) : randomBytes(r, int(r, 300), 256)
    // Known-copy hints, right and wrong, now and then: the encoder must check them before it copies.
    const hints = r() < 0.2 ? { knownCopies: randomKnownCopies(r, source.length, target.length) } : {}
    const delta = createApproxDelta(source, target, { blockSize: 1 + int(r, 200), ...hints })
    const fail = (what: string) =>
      new Error(`fuzzApprox seed ${seed} iteration ${report.iterations}: ${what}`)
    if (!expectOutcome(() => applyApproxDelta(source, delta), target, 'valid'))
      throw fail('valid delta rejected')

    const bad = r() < 0.1 ? randomBytes(r, int(r, 200), 256) : corrupt(r, delta)
    try {
      const ok =
        r() < 0.25
          ? await expectOutcomeStream(source, bad, target, r)
          : expectOutcome(() => applyApproxDelta(source, bad, { maxTargetSize: 1 << 20 }), target, 'memory')
      if (ok) report.survived++
      else report.rejected++
    } catch (e) {
      throw fail(String(e))
    }
  }
  return report
}
