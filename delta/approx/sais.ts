/**
 * Suffix array construction by induced sorting (SA-IS, Nong–Zhang–Chan 2009): linear time, and the only
 * memory beyond the output is one type byte per position plus two bucket tables per recursion level,
 * because the reduced problem lives inside the upper half of the output array.
 *
 * The sentinel (a character smaller than every other, at position n) is virtual: it is never stored, and
 * the one place it matters (the first L-type suffix it induces) is handled explicitly in `induce`.
 */

type Text = Uint8Array | Int32Array

/** Returns SA with SA[r] = start of the r-th smallest suffix of `text` (shorter prefix sorts first). */
export function suffixArray(text: Uint8Array): Int32Array {
  const sa = new Int32Array(text.length)
  if (text.length === 1) sa[0] = 0
  else if (text.length > 1) sais(text, sa, text.length, 256)
  return sa
}

function bucketStarts(counts: Int32Array, bkt: Int32Array): void {
  let sum = 0
  for (let c = 0; c < counts.length; c++) {
    bkt[c] = sum
    sum += counts[c]!
  }
}

function bucketEnds(counts: Int32Array, bkt: Int32Array): void {
  let sum = 0
  for (let c = 0; c < counts.length; c++) {
    sum += counts[c]!
    bkt[c] = sum
  }
}

/** S-type = 1. Position n-1 is L-type because the virtual sentinel after it is smaller. */
function classify(s: Text, n: number): Uint8Array {
  const sType = new Uint8Array(n)
  for (let i = n - 2; i >= 0; i--) {
    const a = s[i]!
    const b = s[i + 1]!
    sType[i] = a < b || (a === b && sType[i + 1] === 1) ? 1 : 0
  }
  return sType
}

function isLms(sType: Uint8Array, i: number): boolean {
  return i > 0 && sType[i] === 1 && sType[i - 1] === 0
}

/** Given LMS suffixes at their bucket ends (the rest -1), sorts every suffix. */
function induce(s: Text, sa: Int32Array, sType: Uint8Array, counts: Int32Array, bkt: Int32Array, n: number) {
  bucketStarts(counts, bkt)
  // The sentinel suffix sorts first and induces n-1, which is always L-type.
  sa[bkt[s[n - 1]!]!++] = n - 1
  for (let i = 0; i < n; i++) {
    const j = sa[i]! - 1
    if (j >= 0 && sType[j] === 0) sa[bkt[s[j]!]!++] = j
  }
  bucketEnds(counts, bkt)
  for (let i = n - 1; i >= 0; i--) {
    const j = sa[i]! - 1
    if (j >= 0 && sType[j] === 1) sa[--bkt[s[j]!]!] = j
  }
}

/** Whether the LMS substrings starting at a and b (a ≠ b) are identical in characters and types. */
function sameLmsSubstring(s: Text, sType: Uint8Array, n: number, a: number, b: number): boolean {
  for (let d = 0; ; d++) {
    // Only one substring can run into the unique sentinel, so reaching it means they differ.
    if (a + d === n || b + d === n) return false
    if (s[a + d] !== s[b + d] || sType[a + d] !== sType[b + d]) return false
    if (d > 0) {
      const endA = isLms(sType, a + d)
      const endB = isLms(sType, b + d)
      if (endA || endB) return endA && endB
    }
  }
}

function sais(s: Text, sa: Int32Array, n: number, k: number): void {
  const sType = classify(s, n)
  const counts = new Int32Array(k)
  for (let i = 0; i < n; i++) counts[s[i]!]!++
  const bkt = new Int32Array(k)

  // Stage 1: sort LMS substrings by one round of induced sorting from arbitrarily ordered LMS seeds.
  sa.fill(-1)
  bucketEnds(counts, bkt)
  for (let i = 1; i < n; i++) if (isLms(sType, i)) sa[--bkt[s[i]!]!] = i
  induce(s, sa, sType, counts, bkt, n)

  let n1 = 0
  for (let i = 0; i < n; i++) {
    const p = sa[i]!
    if (isLms(sType, p)) sa[n1++] = p
  }

  // Name each LMS substring by rank; LMS positions are ≥ 2 apart and n1 ≤ n/2, so slot n1 + p/2 is free
  // and unique per position.
  sa.fill(-1, n1, n)
  let names = 0
  let prev = -1
  for (let i = 0; i < n1; i++) {
    const p = sa[i]!
    if (prev < 0 || !sameLmsSubstring(s, sType, n, prev, p)) names++
    prev = p
    sa[n1 + (p >> 1)] = names - 1
  }
  // Pack the names (in text order) into the top n1 slots: that is the reduced string.
  for (let i = n - 1, j = n - 1; i >= n1; i--) {
    const v = sa[i]!
    if (v >= 0) sa[j--] = v
  }

  // Stage 2: sort the LMS suffixes, recursing only when two LMS substrings share a name.
  const s1 = sa.subarray(n - n1, n)
  const sa1 = sa.subarray(0, n1)
  if (names < n1) sais(s1, sa1, n1, names)
  else for (let i = 0; i < n1; i++) sa1[s1[i]!] = i

  // Stage 3: map reduced ranks back to positions, seed them in order at bucket ends, induce everything.
  for (let i = 1, j = 0; i < n; i++) if (isLms(sType, i)) s1[j++] = i
  for (let i = 0; i < n1; i++) sa1[i] = s1[sa1[i]!]!
  sa.fill(-1, n1, n)
  bucketEnds(counts, bkt)
  for (let i = n1 - 1; i >= 0; i--) {
    const p = sa[i]!
    sa[i] = -1
    sa[--bkt[s[p]!]!] = p
  }
  induce(s, sa, sType, counts, bkt, n)
}
