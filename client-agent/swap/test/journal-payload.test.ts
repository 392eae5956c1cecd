import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { JournalRecord } from '../../../schemas/swap.ts'
import { MAX_RECORD_REST_BYTES, PayloadDecoder } from '../journal-payload.ts'

/**
 * A frame's payload decoded in pieces (journal-payload.ts) must mean exactly what `JSON.parse` and the
 * record schema make of it whole: recovery decodes large frames that way, and `parseJournal` (and any
 * reader following docs/formats/swap-journal.md) whole.
 */
function whole(payload: Buffer): { record: JournalRecord | null; body: Buffer | null } {
  try {
    const parsed = JournalRecord.safeParse(JSON.parse(payload.toString('utf8')))
    if (!parsed.success) return { record: null, body: null }
    const record = parsed.data
    if (record.t !== 'w') return { record, body: null }
    return { record: { ...record, body: '' }, body: Buffer.from(record.body, 'base64') }
  } catch {
    return { record: null, body: null }
  }
}

function inPieces(payload: Buffer, cuts: number[], into: Buffer | null) {
  const decoder = new PayloadDecoder(into)
  let at = 0
  for (const cut of [...cuts].sort((a, b) => a - b)) {
    decoder.feed(payload.subarray(at, Math.max(at, cut)))
    at = Math.max(at, cut)
  }
  decoder.feed(payload.subarray(at))
  return { decoded: decoder.finish(), written: decoder.written }
}

const body64 = Buffer.from('a body of some bytes, not a multiple of three!').toString('base64')
const write = (body: string, rest = '') =>
  `{"t":"w","id":7,"client":"c","method":"POST","path":"/p","headers":[["a","{\\"body\\":1}"]],${rest}"body":"${body}","at":1}`

const cases: string[] = [
  write(body64),
  write(''),
  write('QQ=='),
  write('QUI='),
  // Escapes that stand for base64 characters are base64 characters.
  write(body64.replace(/\//g, '\\/').replace(/A/g, '\\u0041')),
  write(`${body64.slice(0, 8)}\\n${body64.slice(8)}`),
  write('QQ'),
  write('Q==='),
  write('QQ==QQ=='),
  write('QQ=A'),
  write('Zm9v!mFy'),
  write('Zm9v\u00e9mFy'),
  write(`Zm9v\\x00mFy`),
  write(`Zm9v\\u00zzmFy`),
  write('Zm9v\tmFy'),
  `{"t":"w","id":7,"client":"c","method":"POST","path":"/p","headers":[],"body":12,"at":1}`,
  // Duplicate keys: the last one counts, whatever the first one was.
  write(body64, `"body":"!!",`),
  write('!!', `"body":"${body64}",`),
  // Invalid JSON in an earlier one makes the whole payload invalid, though the last one is good.
  write(body64, '"body":"QQ\tQQ",'),
  write(body64, '"body":"QQ\\qQ",'),
  write(body64).replace('"body"', '"bo\\u0064y"'),
  // A nested `body` is not the record's.
  `{"t":"w","id":7,"client":"c","method":"POST","path":"/p","headers":[],"x":{"body":"!"},"body":"${body64}","at":1}`,
  `{"t":"w","id":7,"client":"c","method":"POST","path":"/p","headers":[],"at":1}`,
  `{"t":"d","id":3,"status":200}`,
  `{"t":"d","id":3,"status":200,"body":"not base64!"}`,
  `{"t":"d","id":3,"status":200,"body":"\\q"}`,
  write(body64).slice(0, -3),
  `${write(body64)}x`,
  `[${write(body64)}]`,
  `"${body64}"`,
  '',
]

describe('swap journal: a payload decoded in pieces', () => {
  it('means what the whole payload means, cut anywhere', () => {
    for (const text of cases) {
      const payload = Buffer.from(text)
      const expected = whole(payload)
      fc.assert(
        fc.property(fc.array(fc.nat({ max: payload.length }), { maxLength: 6 }), (cuts) => {
          const into = Buffer.alloc(Math.floor((payload.length * 3) / 4))
          const { decoded, written } = inPieces(payload, cuts, into)
          expect(decoded.record, text).toEqual(expected.record)
          if (expected.body) {
            expect('size' in decoded && decoded.size).toBe(expected.body.length)
            expect(into.subarray(0, written).equals(expected.body), text).toBe(true)
          }
        }),
        { numRuns: 40 },
      )
    }
  })

  it('finds the same record in random writes, cut anywhere', () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 300 }),
        fc.string({ maxLength: 20 }),
        fc.array(fc.tuple(fc.string({ maxLength: 12 }), fc.string({ maxLength: 12 })), { maxLength: 4 }),
        fc.array(fc.nat({ max: 600 }), { maxLength: 8 }),
        (bytes, client, headers, cuts) => {
          const payload = Buffer.from(
            JSON.stringify({
              t: 'w',
              id: 1,
              client,
              method: 'PUT',
              path: '/x',
              headers,
              body: Buffer.from(bytes).toString('base64'),
              at: 2,
            }),
          )
          const into = Buffer.alloc(payload.length)
          const { decoded, written } = inPieces(payload, cuts, into)
          expect(decoded.record).toEqual(whole(payload).record)
          expect(into.subarray(0, written).equals(Buffer.from(bytes))).toBe(true)
        },
      ),
      { numRuns: 300 },
    )
  })

  it('takes a frame whose JSON besides the body is over its bound for no record', () => {
    const pad = 'x'.repeat(MAX_RECORD_REST_BYTES)
    const payload = Buffer.from(write(body64, `"pad":"${pad}",`))
    // Whole, it parses (an unknown key is ignored); in pieces it is no record, and the bound says so.
    expect(whole(payload).record).not.toBeNull()
    expect(inPieces(payload, [1024 * 1024], null).decoded.record).toBeNull()
  })
})
