/**
 * CRC-32 (IEEE 802.3, the zip/gzip polynomial), slicing-by-16 over 32-bit word loads: sixteen
 * independent table lookups per 16 bytes and a quarter of the loads of a byte loop, ≈1.2 GB/s in V8
 * (slicing-by-4 over bytes managed ≈0.6), which matters because apply checks a 120 MB source and target.
 * Word loads need a little-endian host (every platform we run on); elsewhere the byte loop runs.
 * Incremental: feed `crc32Update` chunk by chunk, starting from 0.
 *
 * A host may lend a faster implementation of the same function (`adoptCrc32`): Node's zlib.crc32 uses
 * carry-less multiplication and runs ≈4× faster, which is a quarter of a 120 MB binary's apply time.
 * docs/decisions/0020-host-checksum-and-inflate.md says why that is a process-wide switch, not a parameter.
 */

const TABLES = buildTables()
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

function buildTables(): Int32Array {
  const t = new Int32Array(16 * 256)
  for (let i = 0; i < 256; i++) {
    let c = i
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1
    t[i] = c
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 16; s++) {
      const prev = t[(s - 1) * 256 + i]!
      t[s * 256 + i] = t[prev & 0xff]! ^ (prev >>> 8)
    }
  }
  return t
}

/** A CRC-32 continued over `chunk` from `crc`, the value returned for the bytes before it (0 for none). */
export type Crc32Update = (crc: number, chunk: Uint8Array) => number

let adopted: Crc32Update | null = null

/** Continues `crc` (the value returned for the bytes before `chunk`; 0 for none) over `chunk`. */
export function crc32Update(crc: number, chunk: Uint8Array): number {
  return adopted === null ? softwareCrc32Update(crc, chunk) : adopted(crc, chunk)
}

export function crc32(bytes: Uint8Array): number {
  return crc32Update(0, bytes)
}

/**
 * Routes every CRC-32 in the codec through `impl` from now on, if it agrees with ours on a set of
 * checks (known values, continuation across pieces, unaligned views, empty input); returns whether it
 * was adopted. An implementation that disagrees anywhere is refused and ours stays in use.
 */
export function adoptCrc32(impl: Crc32Update): boolean {
  if (!agreesWithSoftware(impl)) return false
  adopted = impl
  return true
}

/** Back to the pure TypeScript implementation (tests; a host that wants to measure both). */
export function useSoftwareCrc32(): void {
  adopted = null
}

function agreesWithSoftware(impl: Crc32Update): boolean {
  // 70,003 pseudo-random bytes, four per step: this runs once per process, cold (interpreted), where
  // a step per byte cost a few ms and tens of ms on a loaded machine. Only ours is compared with
  // `impl` on them, so their exact values (and the platform's byte order) do not matter.
  const words = new Uint32Array(17_501)
  let seed = 0x9e3779b9
  for (let i = 0; i < words.length; i++) {
    seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0
    words[i] = seed ^ (seed >>> 16)
  }
  const sample = new Uint8Array(words.buffer, 0, 70_003)
  // One pass of ours (it runs cold here); every check below must reach the same value.
  const whole = softwareCrc32Update(0, sample)
  try {
    return (
      impl(0, new TextEncoder().encode('123456789')) === 0xcbf43926 &&
      impl(0, new Uint8Array(0)) === 0 &&
      impl(0xdeadbeef, new Uint8Array(0)) === 0xdeadbeef &&
      impl(0, sample) === whole &&
      // Continued from a running value, over an unaligned view reaching past 64 KiB.
      impl(impl(0, sample.subarray(0, 3)), sample.subarray(3)) === whole
    )
  } catch {
    return false
  }
}

/**
 * A first call on a large chunk starts with a small one: V8 optimises the word loop while it runs
 * (on-stack replacement), and code after the loop that has never run by then has no type feedback,
 * so every later call deoptimised on its way out. Once one short call has run to the end, it does not.
 */
let warmed = false

/** The pure TypeScript CRC-32, whatever has been adopted. */
export function softwareCrc32Update(crc: number, chunk: Uint8Array): number {
  if (!warmed && chunk.length > 4096) {
    warmed = true
    return softwareCrc32Update(softwareCrc32Update(crc, chunk.subarray(0, 4096)), chunk.subarray(4096))
  }
  const t = TABLES
  let c = ~crc
  let i = 0
  const n = chunk.length
  // Bytes up to the first 4-byte aligned address, then whole 16-byte groups as words.
  const lead = Math.min(n, (4 - (chunk.byteOffset & 3)) & 3)
  for (; i < lead; i++) c = t[(c ^ chunk[i]!) & 0xff]! ^ (c >>> 8)
  const groups = (n - i) >>> 4
  if (LITTLE_ENDIAN && groups > 0) {
    const w = new Int32Array(chunk.buffer, chunk.byteOffset + i, groups * 4)
    for (let k = 0; k < w.length; k += 4) {
      const a = c ^ w[k]!
      const b = w[k + 1]!
      const d = w[k + 2]!
      const e = w[k + 3]!
      c =
        t[3840 + (a & 0xff)]! ^
        t[3584 + ((a >>> 8) & 0xff)]! ^
        t[3328 + ((a >>> 16) & 0xff)]! ^
        t[3072 + (a >>> 24)]! ^
        t[2816 + (b & 0xff)]! ^
        t[2560 + ((b >>> 8) & 0xff)]! ^
        t[2304 + ((b >>> 16) & 0xff)]! ^
        t[2048 + (b >>> 24)]! ^
        t[1792 + (d & 0xff)]! ^
        t[1536 + ((d >>> 8) & 0xff)]! ^
        t[1280 + ((d >>> 16) & 0xff)]! ^
        t[1024 + (d >>> 24)]! ^
        t[768 + (e & 0xff)]! ^
        t[512 + ((e >>> 8) & 0xff)]! ^
        t[256 + ((e >>> 16) & 0xff)]! ^
        t[e >>> 24]!
    }
    i += groups * 16
  }
  for (; i < n; i++) c = t[(c ^ chunk[i]!) & 0xff]! ^ (c >>> 8)
  return ~c >>> 0
}
