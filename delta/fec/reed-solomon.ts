import { check, DeltaFormatError } from '../errors.ts'
import { mulAddInto } from './gf256.ts'
import { generatorRow, invert, MAX_TOTAL_BLOCKS, parityCoefficient } from './matrix.ts'

/**
 * Systematic Reed-Solomon erasure code over GF(2^8): data blocks travel unchanged, m parity blocks
 * follow, and any k of the k+m blocks rebuild the data. Erasures only — corruption must be caught by
 * the caller's checksums and passed in as `null`.
 */

function checkShape(k: number, m: number): void {
  check(Number.isInteger(k) && k >= 1, 'fec.bad-params', `k must be a positive integer, got ${k}`)
  check(Number.isInteger(m) && m >= 0, 'fec.bad-params', `m must be a non-negative integer, got ${m}`)
  check(k + m <= MAX_TOTAL_BLOCKS, 'fec.bad-params', `k + m must be <= ${MAX_TOTAL_BLOCKS}, got ${k + m}`)
}

/** Computes m parity blocks for equally sized data blocks. */
export function encodeParity(dataBlocks: readonly Uint8Array[], m: number): Uint8Array[] {
  const k = dataBlocks.length
  checkShape(k, m)
  const size = dataBlocks[0]!.length
  for (const b of dataBlocks) check(b.length === size, 'fec.bad-params', 'data blocks differ in length')
  const parity: Uint8Array[] = []
  for (let i = 0; i < m; i++) {
    const p = new Uint8Array(size)
    for (let j = 0; j < k; j++) mulAddInto(p, dataBlocks[j]!, parityCoefficient(i, j))
    parity.push(p)
  }
  return parity
}

/**
 * Rebuilds the k data blocks from `blocks` (data then parity, k+m entries, `null` for erasures).
 * Present data blocks are returned as-is; only missing ones are computed.
 */
export function reconstruct(blocks: readonly (Uint8Array | null)[], k: number, m: number): Uint8Array[] {
  checkShape(k, m)
  check(blocks.length === k + m, 'fec.bad-params', `expected ${k + m} blocks, got ${blocks.length}`)
  const present: number[] = []
  let size = -1
  for (let r = 0; r < k + m; r++) {
    const b = blocks[r]
    if (!b) continue
    if (size < 0) size = b.length
    check(b.length === size, 'fec.bad-params', 'blocks differ in length')
    present.push(r)
  }
  const missing = k + m - present.length
  if (present.length < k) {
    throw new DeltaFormatError(
      'fec.too-many-erasures',
      `${missing} of ${k + m} blocks missing; at most ${m} can be rebuilt`,
    )
  }
  const missingData: number[] = []
  for (let j = 0; j < k; j++) if (!blocks[j]) missingData.push(j)
  const out = blocks.slice(0, k) as (Uint8Array | null)[]
  if (missingData.length === 0) return out as Uint8Array[]

  // Prefer data rows (identity) so the decode matrix is as sparse as possible.
  const use = present.slice(0, k)
  const decode = invert(use.map((r) => generatorRow(r, k)))
  for (const j of missingData) {
    const rebuilt = new Uint8Array(size)
    const coeffs = decode[j]!
    for (let t = 0; t < k; t++) mulAddInto(rebuilt, blocks[use[t]!]!, coeffs[t]!)
    out[j] = rebuilt
  }
  return out as Uint8Array[]
}
