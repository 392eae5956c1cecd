/**
 * The "puffed" form of a deflate stream (named after Chrome's Puffin, which does the same): its tokens
 * and block structure as plain bytes, so the inner differ can diff them and the client can re-encode
 * the exact compressed bytes (delta/deflate/encode.ts) without searching for matches again. Archive
 * deltas use it for streams that no zlib setting reproduces (GNU gzip, other deflaters); the format is
 * in docs/formats/archive-delta.md ("Token segments").
 *
 * Layout, block after block:
 *   descriptor u8      bits 0-1 block type (0 stored, 1 fixed, 2 dynamic), bit 2 final,
 *                      bit 3 an explicit dynamic header follows; other bits zero
 *   tokens varint      number of tokens in the block
 *   [header]           varint bit length, then ceil(bits / 8) bytes (only with bit 3)
 *   tokens             literal runs: u8 n - 1 (0..127) then n literal bytes;
 *                      matches: u8 0x80 | (distance - 1) >> 8, u8 (distance - 1) & 0xff, u8 length - 3
 * Literals travel as bytes and matches in a fixed three-byte form, so unchanged content keeps producing
 * the same bytes and the differ finds it.
 */

import {
  BLOCK_DYNAMIC,
  BLOCK_FIXED,
  BLOCK_STORED,
  type Block,
  type DeflateParse,
} from '../deflate/parse-types.ts'
import { check } from '../errors.ts'
import { ByteReader } from './bytes.ts'

const E = 'archive-puff'
const HAS_HEADER = 8
const MAX_RUN = 128
/** A dynamic header is at most 5+5+4 + 19*3 + 320 codes of up to 7+7 bits: well under 700 bytes. */
const MAX_HEADER_BITS = 8 * 1024

type TokenStream = Pick<DeflateParse, 'tokens' | 'blocks'>

function varintSize(v: number): number {
  let n = 1
  while (v >= 0x80) {
    v = Math.floor(v / 128)
    n++
  }
  return n
}

function putVarint(out: Uint8Array, at: number, v: number): number {
  while (v >= 0x80) {
    out[at++] = (v % 128) | 0x80
    v = Math.floor(v / 128)
  }
  out[at++] = v
  return at
}

/** Bytes the tokens [start, end) take in puffed form. */
function tokensSize(tokens: Uint32Array, start: number, end: number): number {
  let size = 0
  let run = 0
  for (let i = start; i < end; i++) {
    if (tokens[i]! > 255) {
      size += 3
      run = 0
    } else {
      if (run === 0) size++
      size++
      run = run === MAX_RUN - 1 ? 0 : run + 1
    }
  }
  return size
}

/** A block's descriptor byte (see the layout above; the container's reblocked segments use it too). */
export function blockDescriptor(b: Block): number {
  return b.type | (b.final ? 4 : 0) | (b.header ? HAS_HEADER : 0)
}

/**
 * Reads a block's descriptor, token count and optional header (everything but its tokens) from
 * untrusted bytes; `block(end)` makes the Block once the caller knows where its tokens end.
 */
export function readBlockHead(r: ByteReader): { count: number; block: (end: number) => Block } {
  const d = r.u8('block descriptor')
  const type = d & 3
  check((d & ~15) === 0 && type !== 3, r.code, `bad block descriptor ${d}`)
  const count = r.varint('block token count')
  let header: Block['header']
  if (d & HAS_HEADER) {
    check(type === BLOCK_DYNAMIC, r.code, 'header on a block that is not dynamic')
    const bitLength = r.varint('header bit length')
    check(bitLength > 0 && bitLength <= MAX_HEADER_BITS, r.code, 'header bit length out of range')
    header = { bitLength, bytes: r.take(Math.ceil(bitLength / 8), 'header') }
  }
  const blockType = type === BLOCK_STORED ? BLOCK_STORED : type === BLOCK_FIXED ? BLOCK_FIXED : BLOCK_DYNAMIC
  const final = (d & 4) !== 0
  return { count, block: (end) => ({ type: blockType, final, end, ...(header ? { header } : {}) }) }
}

export function puff(stream: TokenStream): Uint8Array {
  const { tokens, blocks } = stream
  let size = 0
  let start = 0
  for (const b of blocks) {
    size += 1 + varintSize(b.end - start) + tokensSize(tokens, start, b.end)
    if (b.header) size += varintSize(b.header.bitLength) + b.header.bytes.length
    start = b.end
  }
  const out = new Uint8Array(size)
  let at = 0
  start = 0
  for (const b of blocks) {
    out[at++] = blockDescriptor(b)
    at = putVarint(out, at, b.end - start)
    if (b.header) {
      at = putVarint(out, at, b.header.bitLength)
      out.set(b.header.bytes, at)
      at += b.header.bytes.length
    }
    let runAt = -1
    for (let i = start; i < b.end; i++) {
      const t = tokens[i]!
      if (t > 255) {
        const distance = (t & 0xffff) - 1
        out[at++] = 0x80 | (distance >>> 8)
        out[at++] = distance & 0xff
        out[at++] = (t >>> 16) - 3
        runAt = -1
        continue
      }
      if (runAt < 0 || out[runAt] === MAX_RUN - 1) {
        runAt = at
        out[at++] = 0
      } else out[runAt]!++
      out[at++] = t
    }
    start = b.end
  }
  return out
}

/**
 * Decodes a puffed stream (untrusted: it comes out of an inner delta). Every count is checked against
 * the bytes that would have to carry it before anything is allocated, so the token array is never
 * larger than the input; token values are in range by construction. Whether the tokens make a valid
 * stream (distances within the output, a final last block) is the encoder's check.
 */
export function unpuff(bytes: Uint8Array): TokenStream {
  const r = new ByteReader(bytes, E)
  const blocks: Block[] = []
  // Pass 1: block descriptors and counts; each token needs at least one byte.
  let total = 0
  const ends: number[] = []
  while (r.remaining > 0) {
    const head = readBlockHead(r)
    check(head.count <= r.remaining, E, 'block token count exceeds the puffed stream')
    total += head.count
    ends.push(r.pos)
    blocks.push(head.block(total))
    // Skip this block's tokens to reach the next descriptor.
    let left = head.count
    while (left > 0) {
      const tag = r.u8('token')
      if (tag & 0x80) {
        r.take(2, 'match')
        left--
      } else {
        const n = tag + 1
        check(n <= left, E, 'literal run crosses the end of its block')
        r.take(n, 'literals')
        left -= n
      }
    }
  }
  // Pass 2: the tokens themselves (the layout was validated above).
  const tokens = new Uint32Array(total)
  let k = 0
  let at = 0
  for (let bi = 0; bi < blocks.length; bi++) {
    const b = blocks[bi]!
    at = ends[bi]!
    while (k < b.end) {
      const tag = bytes[at++]!
      if (tag & 0x80) {
        const distance = (((tag & 0x7f) << 8) | bytes[at]!) + 1
        const length = bytes[at + 1]! + 3
        tokens[k++] = (length << 16) | distance
        at += 2
      } else {
        for (let n = tag + 1; n > 0; n--) tokens[k++] = bytes[at++]!
      }
    }
  }
  return { tokens, blocks }
}
