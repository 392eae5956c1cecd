import { gfInv, gfMul } from './gf256.ts'

/**
 * Coding matrices. Parity row i, data column j holds the Cauchy entry 1/(x_i + y_j) with y_j = j and
 * x_i = 255 - i. Every square submatrix of a Cauchy matrix is invertible, so stacking it under the
 * identity gives a systematic code where any k of the k+m blocks determine the data. Because the
 * entries depend only on (i, j), the matrix for a short final group (k' < k data blocks) is just the
 * first k' columns — no virtual zero blocks are needed.
 */

export const MAX_TOTAL_BLOCKS = 256

export function parityCoefficient(parityRow: number, dataCol: number): number {
  return gfInv((255 - parityRow) ^ dataCol)
}

/** Row `r` of the systematic generator [I_k ; C]: identity for r < k, Cauchy for parity rows. */
export function generatorRow(r: number, k: number): Uint8Array {
  const row = new Uint8Array(k)
  if (r < k) row[r] = 1
  else for (let j = 0; j < k; j++) row[j] = parityCoefficient(r - k, j)
  return row
}

/** Gauss-Jordan inverse of a square matrix given as rows; throws if singular (never for our codes). */
export function invert(rows: Uint8Array[]): Uint8Array[] {
  const n = rows.length
  const a = rows.map((r) => r.slice())
  const inv = rows.map((_, i) => {
    const r = new Uint8Array(n)
    r[i] = 1
    return r
  })
  for (let col = 0; col < n; col++) {
    let pivot = col
    while (pivot < n && a[pivot]![col] === 0) pivot++
    if (pivot === n) throw new RangeError('singular matrix')
    if (pivot !== col) {
      ;[a[col], a[pivot]] = [a[pivot]!, a[col]!]
      ;[inv[col], inv[pivot]] = [inv[pivot]!, inv[col]!]
    }
    const ac = a[col]!
    const ic = inv[col]!
    const scale = gfInv(ac[col]!)
    for (let j = 0; j < n; j++) {
      ac[j] = gfMul(ac[j]!, scale)
      ic[j] = gfMul(ic[j]!, scale)
    }
    for (let r = 0; r < n; r++) {
      const f = a[r]![col]!
      if (r === col || f === 0) continue
      const ar = a[r]!
      const ir = inv[r]!
      for (let j = 0; j < n; j++) {
        ar[j]! ^= gfMul(f, ac[j]!)
        ir[j]! ^= gfMul(f, ic[j]!)
      }
    }
  }
  return inv
}
