import { check } from '../errors.ts'
import { E } from './errors.ts'

/** Instruction types as numbered in RFC 3284 section 5.5. */
export const NOOP = 0
export const ADD = 1
export const RUN = 2
export const COPY = 3

/**
 * A code table as six parallel 256-entry arrays, which is also the RFC section 7 wire layout
 * (type1, type2, size1, size2, mode1, mode2), so converting to and from bytes is a slice.
 */
export interface CodeTable {
  readonly type1: Uint8Array
  readonly type2: Uint8Array
  readonly size1: Uint8Array
  readonly size2: Uint8Array
  readonly mode1: Uint8Array
  readonly mode2: Uint8Array
  readonly nearSize: number
  readonly sameSize: number
}

export const DEFAULT_NEAR = 4
export const DEFAULT_SAME = 3

function fromString(bytes: Uint8Array, nearSize: number, sameSize: number): CodeTable {
  return {
    type1: bytes.subarray(0, 256),
    type2: bytes.subarray(256, 512),
    size1: bytes.subarray(512, 768),
    size2: bytes.subarray(768, 1024),
    mode1: bytes.subarray(1024, 1280),
    mode2: bytes.subarray(1280, 1536),
    nearSize,
    sameSize,
  }
}

/** Builds the RFC 3284 section 5.6 default table the way the RFC describes it, row by row. */
function buildDefault(): Uint8Array {
  const s = new Uint8Array(1536)
  let i = 0
  const put = (t1: number, s1: number, m1: number, t2: number, s2: number, m2: number) => {
    s[i] = t1
    s[256 + i] = t2
    s[512 + i] = s1
    s[768 + i] = s2
    s[1024 + i] = m1
    s[1280 + i] = m2
    i++
  }
  const modes = 2 + DEFAULT_NEAR + DEFAULT_SAME
  put(RUN, 0, 0, NOOP, 0, 0)
  for (let size = 0; size <= 17; size++) put(ADD, size, 0, NOOP, 0, 0)
  for (let mode = 0; mode < modes; mode++) {
    put(COPY, 0, mode, NOOP, 0, 0)
    for (let size = 4; size <= 18; size++) put(COPY, size, mode, NOOP, 0, 0)
  }
  // ADD+COPY pairs: near/self/here modes get copy sizes 4..6, same-cache modes only size 4.
  for (let mode = 0; mode < modes; mode++) {
    const maxCopy = mode < 2 + DEFAULT_NEAR ? 6 : 4
    for (let add = 1; add <= 4; add++) {
      for (let copy = 4; copy <= maxCopy; copy++) put(ADD, add, 0, COPY, copy, mode)
    }
  }
  for (let mode = 0; mode < modes; mode++) put(COPY, 4, mode, ADD, 1, 0)
  return s
}

/** The default table's 1536-byte string: also the source for decoding an embedded custom table. */
export const DEFAULT_TABLE_STRING: Uint8Array = buildDefault()
export const DEFAULT_TABLE: CodeTable = fromString(DEFAULT_TABLE_STRING, DEFAULT_NEAR, DEFAULT_SAME)

/**
 * Validates a decoded custom table so the instruction loop can trust it. Sizes need no check (a
 * size of 0 just means "read it from the stream"), but types and modes index into fixed tables.
 */
export function tableFromString(bytes: Uint8Array, nearSize: number, sameSize: number): CodeTable {
  check(bytes.length === 1536, E.codeTable, 'vcdiff: custom code table must decode to 1536 bytes')
  const modes = 2 + nearSize + sameSize
  check(modes <= 256, E.codeTable, 'vcdiff: custom code table declares too many address modes')
  const t = fromString(bytes.slice(), nearSize, sameSize)
  for (let i = 0; i < 256; i++) {
    check(t.type1[i]! <= COPY && t.type2[i]! <= COPY, E.codeTable, `vcdiff: code ${i} has unknown type`)
    check(t.mode1[i]! < modes && t.mode2[i]! < modes, E.codeTable, `vcdiff: code ${i} has bad mode`)
  }
  return t
}

/**
 * Reverse lookups for the encoder. Only the default table is ever written, so these are plain
 * arrays indexed by size and mode rather than a general search.
 */
export interface OpcodeMap {
  /** opcode for a lone ADD of this size (0 = use the size-0 form with an explicit size). */
  addSingle: Int16Array
  /** [mode * 19 + size] for a lone COPY, -1 when only the explicit-size form exists. */
  copySingle: Int16Array
  /** [(mode * 5 + addSize) * 19 + copySize] for ADD+COPY pairs, -1 when absent. */
  addCopy: Int16Array
  /** [mode] for COPY(4)+ADD(1) pairs, -1 when absent. */
  copyAdd: Int16Array
  /** [mode] opcode of the size-0 COPY form. */
  copyExplicit: Int16Array
  addExplicit: number
  run: number
}

function buildOpcodeMap(t: CodeTable): OpcodeMap {
  const modes = 2 + t.nearSize + t.sameSize
  const m: OpcodeMap = {
    addSingle: new Int16Array(19).fill(-1),
    copySingle: new Int16Array(modes * 19).fill(-1),
    addCopy: new Int16Array(modes * 5 * 19).fill(-1),
    copyAdd: new Int16Array(modes).fill(-1),
    copyExplicit: new Int16Array(modes).fill(-1),
    addExplicit: -1,
    run: -1,
  }
  for (let op = 0; op < 256; op++) {
    const t1 = t.type1[op]!
    const t2 = t.type2[op]!
    const s1 = t.size1[op]!
    const s2 = t.size2[op]!
    const m1 = t.mode1[op]!
    const m2 = t.mode2[op]!
    if (t2 === NOOP) {
      if (t1 === RUN && s1 === 0) m.run = op
      else if (t1 === ADD && s1 === 0) m.addExplicit = op
      else if (t1 === ADD && s1 < 19) m.addSingle[s1] = op
      else if (t1 === COPY && s1 === 0) m.copyExplicit[m1] = op
      else if (t1 === COPY && s1 < 19) m.copySingle[m1 * 19 + s1] = op
    } else if (t1 === ADD && t2 === COPY && s1 > 0 && s1 < 5 && s2 > 0 && s2 < 19) {
      m.addCopy[(m2 * 5 + s1) * 19 + s2] = op
    } else if (t1 === COPY && t2 === ADD && s1 === 4 && s2 === 1) {
      m.copyAdd[m1] = op
    }
  }
  return m
}

export const DEFAULT_OPCODES: OpcodeMap = buildOpcodeMap(DEFAULT_TABLE)
