import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { bitwiseCrc32, CRC32 } from '../../../delta/test/doc-reader.ts'
import type { JournalRecord } from '../../../schemas/swap.ts'
import { parseJournal, SwapJournal } from '../journal.ts'

/**
 * An independent reader of docs/formats/swap-journal.md: it decodes a journal our SwapJournal wrote using
 * only the document (frame layout, CRC-32 parameters, the recovery rule, the record rules) and must agree
 * with parseJournal. When the document and the code drift, it fails.
 */

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

const docCrc32 = (bytes: Uint8Array) => bitwiseCrc32(bytes, CRC32)

const MAX = 128 * 1024 * 1024

interface DocRecord {
  t: string
  id: number
  [key: string]: unknown
}

/** A minimal record check from the "Records" section: enough to tell records from foreign frames. */
function docRecord(value: unknown): DocRecord | null {
  if (typeof value !== 'object' || value === null) return null
  const r = value as Record<string, unknown>
  const id = r.id
  if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) return null
  if (r.t === 'd') {
    const status = r.status
    return typeof status === 'number' && Number.isInteger(status) && status >= 100 && status <= 599
      ? { t: 'd', id, status }
      : null
  }
  if (r.t !== 'w') return null
  const okString = (v: unknown, min: number, max: number) =>
    typeof v === 'string' && v.length >= min && v.length <= max
  const headers = r.headers
  if (
    !okString(r.client, 0, 128) ||
    typeof r.method !== 'string' ||
    !/^[A-Z]{1,16}$/.test(r.method) ||
    !okString(r.path, 1, 8192) ||
    !Array.isArray(headers) ||
    headers.length > 128 ||
    !headers.every(
      (h: unknown) => Array.isArray(h) && h.length === 2 && okString(h[0], 0, 256) && okString(h[1], 0, 8192),
    ) ||
    !okString(r.body, 0, 96 * 1024 * 1024) ||
    // Standard base64: the alphabet, `=` padding only at the end, a multiple of four characters.
    !/^[A-Za-z0-9+/]*={0,2}$/.test(r.body as string) ||
    (r.body as string).length % 4 !== 0 ||
    typeof r.at !== 'number' ||
    !Number.isInteger(r.at) ||
    r.at < 0
  )
    return null
  return { t: 'w', id, client: r.client, method: r.method, path: r.path, headers, body: r.body, at: r.at }
}

function docRead(file: Uint8Array) {
  const view = new DataView(file.buffer, file.byteOffset, file.byteLength)
  const writes = new Map<number, DocRecord>()
  let offset = 0
  let lastId = 0
  let skipped = 0
  while (offset + 8 <= file.length) {
    const length = view.getUint32(offset, true)
    const crc = view.getUint32(offset + 4, true)
    if (length > MAX || offset + 8 + length > file.length) break
    const payload = file.subarray(offset + 8, offset + 8 + length)
    if (docCrc32(payload) !== crc) break
    offset += 8 + length
    let record: DocRecord | null = null
    try {
      record = docRecord(JSON.parse(new TextDecoder().decode(payload)))
    } catch {}
    if (!record) {
      skipped++
      continue
    }
    lastId = Math.max(lastId, record.id)
    if (record.t === 'w') writes.set(record.id, record)
    else writes.delete(record.id)
  }
  return {
    pending: [...writes.values()],
    lastId,
    validBytes: offset,
    tornBytes: file.length - offset,
    skipped,
  }
}

/** A frame as the document lays it out, for writing foreign and damaged frames. */
function docFrame(payload: Uint8Array, crc = docCrc32(payload)): Uint8Array {
  const out = new Uint8Array(8 + payload.length)
  const v = new DataView(out.buffer)
  v.setUint32(0, payload.length, true)
  v.setUint32(4, crc, true)
  out.set(payload, 8)
  return out
}

const w = (id: number, client: string, extra: object = {}): JournalRecord => ({
  t: 'w',
  id,
  client,
  method: 'POST',
  path: `/orders/${id}`,
  headers: [
    ['content-type', 'application/json'],
    ['x-client-id', client],
  ],
  body: Buffer.from(`{"n":${id},"é":"ü"}`).toString('base64'),
  at: 1_764_000_000_000 + id,
  ...extra,
})

describe('docs/formats/swap-journal.md describes the journal SwapJournal writes', () => {
  it('an independent reader recovers what parseJournal recovers', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-doc-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const journal = new SwapJournal(path)
    await journal.open()
    await Promise.all([journal.append(w(1, 'a')), journal.append(w(2, 'b')), journal.append(w(3, 'a'))])
    await journal.append({ t: 'd', id: 2, status: 201 })
    await journal.append({ t: 'd', id: 9, status: 499 }) // no `w` record: harmless
    await journal.append(w(4, '', { headers: [] }))
    // Over 64 KiB, so the length field's width matters.
    await journal.append(w(10, 'big', { body: Buffer.alloc(70_000, 7).toString('base64') }))
    await journal.close()
    const written = new Uint8Array(await readFile(path))
    const foreign = [
      docFrame(new TextEncoder().encode('not json')),
      docFrame(new TextEncoder().encode('{"t":"x","id":100}')),
      docFrame(new TextEncoder().encode('{"t":"d","id":7,"status":600}')),
      docFrame(new TextEncoder().encode(JSON.stringify(w(8, 'c', { method: 'post' })))),
      docFrame(new TextEncoder().encode(JSON.stringify({ ...w(5, 'c'), future: 'ignored' }))),
      docFrame(new Uint8Array(0)),
    ]
    const tornCrc = docFrame(new TextEncoder().encode(JSON.stringify(w(6, 'a'))), 12345)
    const image = new Uint8Array(Buffer.concat([written, ...foreign, tornCrc, docFrame(new Uint8Array(3))]))
    const doc = docRead(image)
    const ours = parseJournal(image)
    expect(doc).toEqual(ours)
    expect(doc.pending.map((r) => r.id)).toEqual([1, 3, 4, 10, 5])
    expect(doc.skipped).toBe(5)
    expect(doc.tornBytes).toBe(tornCrc.length + 11)

    // A torn tail: a frame claiming more than 128 MiB, or more bytes than the file has, ends the journal.
    for (const tail of [
      Uint8Array.of(1, 0, 0, 8, 0, 0, 0, 0),
      docFrame(new Uint8Array(10)).subarray(0, 12),
    ]) {
      const torn = new Uint8Array(Buffer.concat([written, tail]))
      expect(docRead(torn)).toEqual(parseJournal(torn))
      expect(parseJournal(torn).validBytes).toBe(written.length)
      // open() reads the file frame by frame, not as one image: it must agree too.
      await writeFile(path, torn)
      const j = new SwapJournal(path)
      const { pending, ...rest } = await j.open()
      await j.close()
      const { pending: docPending, ...docRest } = docRead(torn)
      expect(rest).toEqual(docRest)
      expect(pending.map(({ size: _s, location: _l, ...write }) => write)).toEqual(docPending)
    }

    // Recovery truncates the file at the last whole frame; appends continue after it.
    await writeFile(path, image)
    const reopened = new SwapJournal(path)
    const { pending, ...recovered } = await reopened.open()
    const { pending: docPending, ...docRest } = doc
    expect(recovered).toEqual(docRest)
    expect(pending.map(({ size: _s, location: _l, ...write }) => write)).toEqual(docPending)
    expect(pending.map((r) => r.id)).toEqual([1, 3, 4, 10, 5])
    await reopened.close()
    expect((await readFile(path)).length).toBe(doc.validBytes)
  })

  it('hand-written frames: a repeated id replaces the first record in its place; ids continue above any record read', () => {
    const frame = (r: object) => docFrame(new TextEncoder().encode(JSON.stringify(r)))
    const image = new Uint8Array(
      Buffer.concat([
        frame(w(1, 'a')),
        frame(w(2, 'b')),
        frame({ ...w(1, 'a'), path: '/orders/1-again' }),
        frame({ t: 'd', id: 7, status: 499 }),
      ]),
    )
    const ours = parseJournal(image)
    expect(ours).toEqual(docRead(image))
    expect(ours.pending.map((r) => [r.id, r.path])).toEqual([
      [1, '/orders/1-again'],
      [2, '/orders/2'],
    ])
    expect(ours.lastId).toBe(7)
    expect(ours.validBytes).toBe(image.length)
  })
})
