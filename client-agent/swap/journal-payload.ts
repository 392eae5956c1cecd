import { crc32 } from 'node:zlib'
import { JournalRecord, MAX_JOURNAL_BODY_CHARS } from '../../schemas/swap.ts'

/**
 * What a record may take besides its body's text: a write's other fields are at most about 7 MiB of JSON
 * even with every character escaped (128 headers of 256 + 8192 characters, a path of 8192). A frame whose
 * JSON apart from the top-level `body` string is larger cannot be a record, and is not one to either
 * reader (docs/formats/swap-journal.md).
 */
export const MAX_RECORD_REST_BYTES = 8 * 1024 * 1024

const QUOTE = 0x22
const BACKSLASH = 0x5c
/** 1: a base64 character (RFC 4648 §4 alphabet); 2: `=`. */
const BASE64 = new Uint8Array(256)
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/')
  BASE64[c.charCodeAt(0)] = 1
BASE64[0x3d] = 2
const SIMPLE_ESCAPES: Record<number, number> = {
  34: 0x22,
  92: 0x5c,
  47: 0x2f,
  98: 0x08,
  102: 0x0c,
  110: 0x0a,
  114: 0x0d,
  116: 0x09,
}

interface BodyText {
  chars: number
  pad: number
  /** A character outside standard base64, or `=` before the end. */
  bad: boolean
  /** Decoded bytes written to `into`. */
  written: number
}

export type DecodedPayload =
  | { crc: number; record: null }
  | { crc: number; record: Exclude<JournalRecord, { t: 'w' }> }
  /** A write: `body` is '' and its decoded bytes are `size` (written to `into` when one was given). */
  | { crc: number; record: Extract<JournalRecord, { t: 'w' }>; size: number }

/**
 * Decodes one frame's payload fed in pieces of any size, so a frame never has to be in memory whole: its
 * CRC-32, and its record read from the JSON with the top-level `body` string taken out (that text is only
 * counted and checked as standard base64, and decoded into `into` when given). The result is exactly what
 * `JSON.parse` and the `JournalRecord` schema make of the whole payload, except that a payload whose JSON
 * apart from the body is over `MAX_RECORD_REST_BYTES` is no record.
 */
export class PayloadDecoder {
  private crc = 0
  private readonly rest: Buffer[] = []
  private restBytes = 0
  /** Not a record whatever follows: invalid JSON inside a body string, or too much besides the body. */
  private broken = false
  private depth = 0
  private inString = false
  private escaped = false
  /** Expecting a top-level key (after `{` or `,` at depth 1). */
  private expectKey = false
  /** Raw bytes of the top-level key being read (null: none, or too long to be `body`). */
  private key: number[] | null = null
  private keyIsBody = false
  /** After `"body":` at depth 1, before its value. */
  private bodyNext = false
  private inBody = false
  /** The escape under way in the body: '' right after the backslash, then 'u' and the hex digits read. */
  private bodyEscape: string | null = null
  private current: BodyText | null = null
  private carry = ''
  /** The last top-level `body` string (null: none, or the last `body` was not a string). */
  private body: BodyText | null = null
  private readonly into: Buffer | null

  /** `into`: where the body's bytes go, at least 3/4 of the payload's length. */
  constructor(into: Buffer | null = null) {
    this.into = into
  }

  feed(chunk: Buffer): void {
    this.crc = crc32(chunk, this.crc)
    let from = 0
    let i = 0
    while (i < chunk.length) {
      if (this.inBody) {
        i = this.bodyBytes(chunk, i)
        // The closing quote (when the body ended) goes to the rest, with what follows.
        from = this.inBody ? i : i - 1
        continue
      }
      const c = chunk[i]!
      i += 1
      if (this.inString) {
        if (this.escaped) this.escaped = false
        else if (c === BACKSLASH) this.escaped = true
        else if (c === QUOTE) {
          this.inString = false
          if (this.key) this.keyIsBody = isBodyKey(this.key)
          this.key = null
          this.expectKey = false
          continue
        }
        if (this.key) {
          this.key.push(c)
          if (this.key.length > 32) this.key = null
        }
        continue
      }
      if (c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d) continue
      if (this.bodyNext) {
        this.bodyNext = false
        if (c === QUOTE) {
          this.keep(chunk, from, i)
          from = i
          this.inBody = true
          this.current = { chars: 0, pad: 0, bad: false, written: 0 }
          this.carry = ''
          continue
        }
        // Not a string: it stays in the rest, where the schema refuses it.
      }
      if (c === QUOTE) {
        this.inString = true
        this.key = this.depth === 1 && this.expectKey ? [] : null
        if (!this.key) this.keyIsBody = false
      } else if (c === 0x7b || c === 0x5b) {
        this.depth += 1
        if (this.depth === 1) this.expectKey = c === 0x7b
      } else if (c === 0x7d || c === 0x5d) this.depth -= 1
      else if (this.depth === 1 && c === 0x2c) this.expectKey = true
      else if (this.depth === 1 && c === 0x3a) {
        this.bodyNext = this.keyIsBody
        this.keyIsBody = false
      }
    }
    if (!this.inBody) this.keep(chunk, from, chunk.length)
  }

  /** The payload's CRC and record, once every piece was fed. */
  finish(): DecodedPayload {
    const crc = this.crc
    if (this.broken || this.inString || this.inBody) return { crc, record: null }
    let record: JournalRecord
    try {
      const parsed = JournalRecord.safeParse(JSON.parse(Buffer.concat(this.rest).toString('utf8')))
      if (!parsed.success) return { crc, record: null }
      record = parsed.data
    } catch {
      return { crc, record: null }
    }
    if (record.t !== 'w') return { crc, record }
    const body = this.body
    if (!body || body.bad || body.chars > MAX_JOURNAL_BODY_CHARS || body.chars % 4 !== 0)
      return { crc, record: null }
    return { crc, record, size: (body.chars / 4) * 3 - body.pad }
  }

  private keep(chunk: Buffer, from: number, to: number): void {
    if (to <= from || this.broken) return
    this.restBytes += to - from
    if (this.restBytes > MAX_RECORD_REST_BYTES) {
      this.broken = true
      this.rest.length = 0
      return
    }
    // Copied: the reader reuses its buffer for the next piece.
    this.rest.push(Buffer.from(chunk.subarray(from, to)))
  }

  /** Body text from `i`; returns where to go on: past the body's closing quote, or the chunk's end. */
  private bodyBytes(chunk: Buffer, i: number): number {
    const body = this.current!
    let run = i
    while (i < chunk.length) {
      // Fast path: the plain base64 characters up to the next quote or backslash, matched natively. It
      // stops at the first other character (padding, or one that makes the body bad), which the byte
      // loop below takes; from there on (padding seen, or bad) the byte loop takes the rest, so each
      // byte is looked at a bounded number of times.
      if (this.bodyEscape === null && body.pad === 0 && !body.bad) {
        const plain = plainPrefix(chunk, i)
        if (plain > 0) {
          body.chars += plain
          i += plain
          continue
        }
      }
      const c = chunk[i]!
      if (this.bodyEscape !== null) {
        i += 1
        run = i
        this.escapeByte(body, c)
        continue
      }
      if (c === QUOTE || c === BACKSLASH) {
        this.decode(chunk, run, i)
        if (c === QUOTE) {
          this.inBody = false
          this.flushCarry(body)
          this.body = body
          return i + 1
        }
        this.bodyEscape = ''
        i += 1
        run = i
        continue
      }
      this.bodyChar(body, c)
      i += 1
    }
    this.decode(chunk, run, i)
    return i
  }

  private escapeByte(body: BodyText, c: number): void {
    const sofar = this.bodyEscape!
    if (sofar === '') {
      if (c === 0x75) {
        this.bodyEscape = 'u'
        return
      }
      this.bodyEscape = null
      const char = SIMPLE_ESCAPES[c]
      if (char === undefined) this.broken = true
      else this.escapedChar(body, char)
      return
    }
    const hex = sofar + String.fromCharCode(c)
    if (!/^u[0-9a-fA-F]*$/.test(hex)) {
      this.bodyEscape = null
      this.broken = true
    } else if (hex.length === 5) {
      this.bodyEscape = null
      this.escapedChar(body, Number.parseInt(hex.slice(1), 16))
    } else this.bodyEscape = hex
  }

  private escapedChar(body: BodyText, code: number): void {
    if (code > 0xff || BASE64[code] === 0) {
      body.bad = true
      return
    }
    this.bodyChar(body, code)
    if (!body.bad && this.into) this.carry += String.fromCharCode(code)
  }

  /** One character of the body's text (raw, or what an escape stands for). */
  private bodyChar(body: BodyText, c: number): void {
    body.chars += 1
    const kind = BASE64[c]
    // A raw control character makes the JSON invalid, not only the body.
    if (c < 0x20) this.broken = true
    if (kind === 1 && body.pad === 0) return
    if (kind === 2 && body.pad < 2) {
      body.pad += 1
      return
    }
    body.bad = true
  }

  /** Decodes the raw base64 in `chunk[from, to)` (with what an escape left) into `into`. */
  private decode(chunk: Buffer, from: number, to: number): void {
    const body = this.current!
    if (!this.into || body.bad || to <= from) return
    const text = this.carry + chunk.toString('latin1', from, to)
    const whole = text.length - (text.length % 4)
    body.written += this.into.write(text.slice(0, whole), body.written, 'base64')
    this.carry = text.slice(whole)
  }

  private flushCarry(body: BodyText): void {
    if (!this.into || body.bad || this.carry === '') return
    body.written += this.into.write(this.carry, body.written, 'base64')
    this.carry = ''
  }

  /** Bytes written to `into` for the last body. */
  get written(): number {
    return this.body?.written ?? 0
  }
}

/** Base64 characters without padding, from `lastIndex`. */
const PLAIN = /[A-Za-z0-9+/]*/y

/** How far the fast path looks at once: a short window keeps each step's cost bounded (escapes, `=`). */
const PLAIN_WINDOW = 1024

/** How many plain base64 characters `chunk` holds from `i` on (at most `PLAIN_WINDOW`). */
function plainPrefix(chunk: Buffer, i: number): number {
  PLAIN.lastIndex = 0
  return PLAIN.exec(chunk.toString('latin1', i, Math.min(chunk.length, i + PLAIN_WINDOW)))?.[0].length ?? 0
}

/** Whether a top-level key's raw bytes (between its quotes) say `body`, escapes included. */
function isBodyKey(raw: number[]): boolean {
  try {
    return JSON.parse(`"${Buffer.from(raw).toString('latin1')}"`) === 'body'
  } catch {
    return false
  }
}
