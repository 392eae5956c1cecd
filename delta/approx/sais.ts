/**
 * Suffix array construction by induced sorting (SA-IS, Nong–Zhang–Chan 2009): linear time, and no memory
 * beyond the output and two bucket tables per recursion level, because the reduced problem lives inside
 * the upper half of the output array.
 *
 * The sentinel (a character smaller than every other, at position n) is virtual: it is never stored; the
 * one suffix it induces (n-1, always L-type) is placed explicitly at the start of each induce pass.
 *
 * Speed comes from three things that keep the output identical (a suffix array is unique):
 * - No L/S type array. Each SA entry carries in its sign whether its predecessor still has to be induced
 *   in the current pass (the trick from Yuta Mori's sais-lite): the inducer knows its own type, so the
 *   predecessor's type follows from one character comparison, and the hot loops touch one random text
 *   position per suffix instead of two (the text byte and its type byte).
 * - LMS substrings are named by comparing lengths first and then characters only: equal characters over
 *   an equal length ending at an LMS position imply equal types.
 * - The whole algorithm exists twice, for the byte text (level 0) and for the Int32 reduced texts. V8
 *   compiles a `Uint8Array | Int32Array` element load as a polymorphic access; measured on a 10 MB
 *   executable the monomorphic copies are ~10 % faster. The copies must stay line-for-line alike.
 */

/** Returns SA with SA[r] = start of the r-th smallest suffix of `text` (shorter prefix sorts first). */
export function suffixArray(text: Uint8Array): Int32Array {
  const sa = new Int32Array(text.length)
  if (text.length === 1) sa[0] = 0
  else if (text.length > 1) saisBytes(text, sa, text.length)
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

/*
 * Sign convention inside the induce passes: a value v ≥ 0 is suffix v whose predecessor v-1 is to be
 * induced by the pass that scans it (0 has none, so 0 doubles as "empty"); ~v marks suffix v whose
 * predecessor belongs to the other pass.
 *
 * Types are never stored: scanning right to left, position i is S-type when s[i] < s[i+1], or when they
 * are equal and i+1 is S-type; the last position is L-type (the virtual sentinel after it is smaller).
 * An LMS position is an S-type position whose left neighbour is L-type.
 */

// ---------------------------------------------------------------------------------------------------
// Level 0: the byte text. Keep in step with the Int32Array copy below.
// ---------------------------------------------------------------------------------------------------

function saisBytes(s: Uint8Array, sa: Int32Array, n: number): void {
  const counts = new Int32Array(256)
  for (let i = 0; i < n; i++) counts[s[i]!]!++
  const bkt = new Int32Array(256)

  // Stage 1: LMS positions at their bucket ends (in arbitrary order), one induce round sorts the LMS substrings.
  sa.fill(0)
  bucketEnds(counts, bkt)
  if (placeLmsBytes(s, sa, bkt, n) > 0) {
    sortLmsSubstringsBytes(s, sa, counts, bkt, n)
    // The LMS positions are exactly the entries left negative, in sorted order.
    let n1 = 0
    for (let i = 0; i < n; i++) {
      const v = sa[i]!
      if (v < 0) sa[n1++] = ~v
    }
    const names = nameLmsBytes(s, sa, n, n1)

    // Stage 2: sort the LMS suffixes, recursing only when two LMS substrings share a name.
    const s1 = sa.subarray(n - n1, n)
    const sa1 = sa.subarray(0, n1)
    if (names < n1) saisInts(s1, sa1, n1, names)
    else for (let i = 0; i < n1; i++) sa1[s1[i]!] = i

    // Stage 3: map reduced ranks back to positions, seed them in order at bucket ends.
    listLmsBytes(s, s1, n)
    for (let i = 0; i < n1; i++) sa1[i] = s1[sa1[i]!]!
    sa.fill(0, n1, n)
    bucketEnds(counts, bkt)
    for (let i = n1 - 1; i >= 0; i--) {
      const p = sa[i]!
      sa[i] = 0
      sa[--bkt[s[p]!]!] = p
    }
  }
  induceBytes(s, sa, counts, bkt, n)
}

/** Puts every LMS position at the end of its bucket (bkt holds the ends); returns how many there are. */
function placeLmsBytes(s: Uint8Array, sa: Int32Array, bkt: Int32Array, n: number): number {
  let m = 0
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) {
      sa[--bkt[next]!] = i + 1
      m++
    }
    next = c
    nextS = isS
  }
  return m
}

/** Writes the LMS positions in text order into `out` (its length is their count). */
function listLmsBytes(s: Uint8Array, out: Int32Array, n: number): void {
  let j = out.length
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) out[--j] = i + 1
    next = c
    nextS = isS
  }
}

/**
 * One induce round from unsorted LMS seeds. Every entry whose job is done is cleared, so afterwards only
 * the LMS positions remain, as negative entries, in LMS-substring order.
 */
function sortLmsSubstringsBytes(
  s: Uint8Array,
  sa: Int32Array,
  counts: Int32Array,
  bkt: Int32Array,
  n: number,
) {
  bucketStarts(counts, bkt)
  const last = n - 1
  sa[bkt[s[last]!]!++] = last > 0 && s[last - 1]! < s[last]! ? ~last : last
  for (let i = 0; i < n; i++) {
    const v = sa[i]!
    if (v > 0) {
      // v's predecessor j is L-type; j's own predecessor is S-type exactly when it is smaller.
      const j = v - 1
      const c = s[j]!
      sa[bkt[c]!++] = j > 0 && s[j - 1]! < c ? ~j : j
      sa[i] = 0
    } else if (v < 0) sa[i] = ~v
  }
  bucketEnds(counts, bkt)
  for (let i = n - 1; i >= 0; i--) {
    const v = sa[i]!
    if (v > 0) {
      // j is S-type; a larger predecessor makes j an LMS position, which stays marked (negative).
      const j = v - 1
      const c = s[j]!
      sa[--bkt[c]!] = j > 0 && s[j - 1]! > c ? ~j : j
      sa[i] = 0
    }
  }
}

/** Given the sorted LMS suffixes at their bucket ends (everything else 0), sorts every suffix. */
function induceBytes(s: Uint8Array, sa: Int32Array, counts: Int32Array, bkt: Int32Array, n: number) {
  bucketStarts(counts, bkt)
  const last = n - 1
  sa[bkt[s[last]!]!++] = last > 0 && s[last - 1]! < s[last]! ? ~last : last
  // L pass: flipping every entry hands the S pass exactly the suffixes whose predecessor is S-type.
  for (let i = 0; i < n; i++) {
    const v = sa[i]!
    sa[i] = ~v
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[bkt[c]!++] = j > 0 && s[j - 1]! < c ? ~j : j
    }
  }
  // S pass: entries it does not process are flipped back, so the array ends up all non-negative.
  bucketEnds(counts, bkt)
  for (let i = n - 1; i >= 0; i--) {
    const v = sa[i]!
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[--bkt[c]!] = j > 0 && s[j - 1]! <= c ? j : ~j
    } else sa[i] = ~v
  }
}

/**
 * Names the n1 sorted LMS substrings in sa[0, n1) by rank and packs the names, in text order, into the
 * top n1 slots: that is the reduced string. Returns the number of distinct names.
 */
function nameLmsBytes(s: Uint8Array, sa: Int32Array, n: number, n1: number): number {
  // LMS positions are ≥ 2 apart and n1 ≤ n/2, so slot n1 + p/2 is free and unique per position. First
  // it holds the length of p's LMS substring, both ends included; the last one runs into the sentinel.
  sa.fill(0, n1, n)
  let nextLms = n
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) {
      sa[n1 + ((i + 1) >> 1)] = nextLms - i
      nextLms = i + 1
    }
    next = c
    nextS = isS
  }
  // Neighbours in sorted order share a name when their lengths and characters agree (then so do their
  // types) and neither contains the unique sentinel.
  let names = 0
  let prev = 0
  let prevLen = 0
  for (let i = 0; i < n1; i++) {
    const p = sa[i]!
    const slot = n1 + (p >> 1)
    const len = sa[slot]!
    let same = len === prevLen && p + len <= n && prev + len <= n
    for (let d = 0; same && d < len; d++) same = s[p + d] === s[prev + d]
    if (!same) names++
    prev = p
    prevLen = len
    sa[slot] = names
  }
  for (let i = n - 1, j = n - 1; i >= n1; i--) {
    const v = sa[i]!
    if (v > 0) sa[j--] = v - 1
  }
  return names
}

// ---------------------------------------------------------------------------------------------------
// Levels ≥ 1: the reduced Int32Array texts over an alphabet of k names. A copy of the code above.
// ---------------------------------------------------------------------------------------------------

function saisInts(s: Int32Array, sa: Int32Array, n: number, k: number): void {
  const counts = new Int32Array(k)
  for (let i = 0; i < n; i++) counts[s[i]!]!++
  const bkt = new Int32Array(k)

  sa.fill(0)
  bucketEnds(counts, bkt)
  if (placeLmsInts(s, sa, bkt, n) > 0) {
    sortLmsSubstringsInts(s, sa, counts, bkt, n)
    let n1 = 0
    for (let i = 0; i < n; i++) {
      const v = sa[i]!
      if (v < 0) sa[n1++] = ~v
    }
    const names = nameLmsInts(s, sa, n, n1)

    const s1 = sa.subarray(n - n1, n)
    const sa1 = sa.subarray(0, n1)
    if (names < n1) saisInts(s1, sa1, n1, names)
    else for (let i = 0; i < n1; i++) sa1[s1[i]!] = i

    listLmsInts(s, s1, n)
    for (let i = 0; i < n1; i++) sa1[i] = s1[sa1[i]!]!
    sa.fill(0, n1, n)
    bucketEnds(counts, bkt)
    for (let i = n1 - 1; i >= 0; i--) {
      const p = sa[i]!
      sa[i] = 0
      sa[--bkt[s[p]!]!] = p
    }
  }
  induceInts(s, sa, counts, bkt, n)
}

function placeLmsInts(s: Int32Array, sa: Int32Array, bkt: Int32Array, n: number): number {
  let m = 0
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) {
      sa[--bkt[next]!] = i + 1
      m++
    }
    next = c
    nextS = isS
  }
  return m
}

function listLmsInts(s: Int32Array, out: Int32Array, n: number): void {
  let j = out.length
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) out[--j] = i + 1
    next = c
    nextS = isS
  }
}

function sortLmsSubstringsInts(
  s: Int32Array,
  sa: Int32Array,
  counts: Int32Array,
  bkt: Int32Array,
  n: number,
) {
  bucketStarts(counts, bkt)
  const last = n - 1
  sa[bkt[s[last]!]!++] = last > 0 && s[last - 1]! < s[last]! ? ~last : last
  for (let i = 0; i < n; i++) {
    const v = sa[i]!
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[bkt[c]!++] = j > 0 && s[j - 1]! < c ? ~j : j
      sa[i] = 0
    } else if (v < 0) sa[i] = ~v
  }
  bucketEnds(counts, bkt)
  for (let i = n - 1; i >= 0; i--) {
    const v = sa[i]!
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[--bkt[c]!] = j > 0 && s[j - 1]! > c ? ~j : j
      sa[i] = 0
    }
  }
}

function induceInts(s: Int32Array, sa: Int32Array, counts: Int32Array, bkt: Int32Array, n: number) {
  bucketStarts(counts, bkt)
  const last = n - 1
  sa[bkt[s[last]!]!++] = last > 0 && s[last - 1]! < s[last]! ? ~last : last
  for (let i = 0; i < n; i++) {
    const v = sa[i]!
    sa[i] = ~v
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[bkt[c]!++] = j > 0 && s[j - 1]! < c ? ~j : j
    }
  }
  bucketEnds(counts, bkt)
  for (let i = n - 1; i >= 0; i--) {
    const v = sa[i]!
    if (v > 0) {
      const j = v - 1
      const c = s[j]!
      sa[--bkt[c]!] = j > 0 && s[j - 1]! <= c ? j : ~j
    } else sa[i] = ~v
  }
}

function nameLmsInts(s: Int32Array, sa: Int32Array, n: number, n1: number): number {
  sa.fill(0, n1, n)
  let nextLms = n
  let next = s[n - 1]!
  let nextS = false
  for (let i = n - 2; i >= 0; i--) {
    const c = s[i]!
    const isS: boolean = c < next || (c === next && nextS)
    if (nextS && !isS) {
      sa[n1 + ((i + 1) >> 1)] = nextLms - i
      nextLms = i + 1
    }
    next = c
    nextS = isS
  }
  let names = 0
  let prev = 0
  let prevLen = 0
  for (let i = 0; i < n1; i++) {
    const p = sa[i]!
    const slot = n1 + (p >> 1)
    const len = sa[slot]!
    let same = len === prevLen && p + len <= n && prev + len <= n
    for (let d = 0; same && d < len; d++) same = s[p + d] === s[prev + d]
    if (!same) names++
    prev = p
    prevLen = len
    sa[slot] = names
  }
  for (let i = n - 1, j = n - 1; i >= n1; i--) {
    const v = sa[i]!
    if (v > 0) sa[j--] = v - 1
  }
  return names
}
