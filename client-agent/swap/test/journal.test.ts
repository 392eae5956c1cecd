import { mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import fc from 'fast-check'
import { afterAll, describe, expect, it } from 'vitest'
import type { JournalWrite } from '../../../schemas/swap.ts'
import { MAX_RECORD_BYTES, parseJournal, SwapJournal } from '../journal.ts'

const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})
async function tempJournal(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-'))
  dirs.push(dir)
  return join(dir, 'swap.journal')
}

const write = (id: number, client = 'c1', body = 'hello'): JournalWrite => ({
  t: 'w',
  id,
  client,
  method: 'POST',
  path: '/write',
  headers: [['x-client-id', client]],
  body: Buffer.from(body).toString('base64'),
  at: 1000 + id,
})

describe('swap journal', () => {
  it('recovers pending writes in order, skipping those marked done', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    expect((await j.open()).pending).toEqual([])
    await Promise.all([j.append(write(1)), j.append(write(2, 'c2')), j.append(write(3))])
    await j.append({ t: 'd', id: 2, status: 200 })
    await j.close()
    const again = new SwapJournal(path)
    const recovered = await again.open()
    expect(recovered.pending.map((w) => w.id)).toEqual([1, 3])
    expect(recovered.lastId).toBe(3)
    expect(recovered.tornBytes).toBe(0)
    await again.close()
  })

  it('keeps a write appended while it is being reset, where its append said it is', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    await j.append(write(1))
    await j.append({ t: 'd', id: 1, status: 200 })
    // Nothing is owed, so the supervisor resets it; meanwhile a crashed service's restart holds a write.
    const reset = j.compact()
    const late = j.append(write(2, 'late', 'late body'))
    await Promise.all([reset, late])
    expect(Buffer.from((await j.readWrite(await late)).body, 'base64').toString()).toBe('late body')
    await j.close()
    const again = new SwapJournal(path)
    expect((await again.open()).pending.map((w) => w.id)).toEqual([2])
    await again.close()
  })

  it('compacts to the writes still owed when some are held, and moves their locations with them', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    const at = new Map<number, Awaited<ReturnType<SwapJournal['append']>>>()
    for (let id = 1; id <= 6; id++) at.set(id, await j.append(write(id, `c${id % 2}`, `body ${id}`)))
    // 1, 3, 5 answered; 2 is held; 4 was sent and never answered (it may have been applied: still owed);
    // 6 is held too; 7 arrives while the swap ends (appended beside the compaction).
    for (const id of [1, 3, 5]) await j.append({ t: 'd', id, status: 200 })
    const before = (await stat(path)).size
    await Promise.all([j.compact(), j.append(write(7, 'late', 'late body'))])
    const image = await readFile(path)
    expect(image.length).toBeLessThan(before)
    // Exactly the owed writes' frames, nothing settled.
    expect(parseJournal(image)).toMatchObject({ validBytes: image.length, tornBytes: 0, skipped: 0 })
    expect(parseJournal(image).pending.map((w) => w.id)).toEqual([2, 4, 6, 7])
    for (const id of [2, 4, 6]) {
      expect(Buffer.from((await j.readWrite(at.get(id)!)).body, 'base64').toString()).toBe(`body ${id}`)
    }
    // Appends go on after the copy, and settle what it holds.
    await j.append({ t: 'd', id: 2, status: 200 })
    await j.close()
    // A copy a crash left before its rename: the journal is untouched by it, and it is removed.
    await writeFile(`${path}.compact`, Buffer.alloc(4096, 1))
    const again = new SwapJournal(path)
    expect((await again.open()).pending.map((w) => w.id)).toEqual([4, 6, 7])
    await expect(stat(`${path}.compact`)).rejects.toThrow()
    await again.close()
    const settled = new SwapJournal(path)
    await settled.open()
    for (const id of [4, 6, 7]) await settled.append({ t: 'd', id, status: 200 })
    await settled.compact()
    // Nothing owed: only the settled record with the highest id stays, so ids go on above it after a
    // restart (a write replayed as 7 is never followed by a new write numbered 7).
    const left = await readFile(path)
    expect(parseJournal(left)).toMatchObject({ pending: [], lastId: 7 })
    expect(left.length).toBeLessThan(64)
    await settled.close()
    const restarted = new SwapJournal(path)
    expect(await restarted.open()).toMatchObject({ pending: [], lastId: 7 })
    await restarted.compact()
    expect(await readFile(path)).toEqual(left)
    await restarted.close()
  })

  it('keeps its ids above every write it held, across a compaction that kept only lower ones', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    // 2 was sent and never answered (owed, maybe applied); 3..5 were replayed with their ids
    // (x-deltaport-replay) and settled. The swap ends, the journal keeps only 2, and the agent dies.
    for (let id = 2; id <= 5; id++) await j.append(write(id))
    for (const id of [3, 4, 5]) await j.append({ t: 'd', id, status: 201 })
    await j.compact()
    await j.close()
    const again = new SwapJournal(path)
    const recovered = await again.open()
    expect(recovered.pending.map((w) => w.id)).toEqual([2])
    // New writes must not reuse 3..5: a service that recognises repeats by the replay id already has
    // them, and would drop a new write as a repeat.
    expect(recovered.lastId).toBe(5)
    await again.close()
  })

  it('reads a record back from the location its append returned', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    await j.append(write(1, 'a', 'first'))
    const at = await j.append(write(2, 'b', 'second body'))
    expect(Buffer.from((await j.readWrite(at)).body, 'base64').toString()).toBe('second body')
    await j.close()
  })

  it('ignores a record torn mid-write on restart, cuts it off, and keeps appending after the last whole one', async () => {
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    await j.append(write(1))
    await j.append(write(2))
    await j.close()
    const whole = (await stat(path)).size
    // Cut the second record in half: a crash in the middle of its write.
    await truncate(path, whole - 20)
    const reopened = new SwapJournal(path)
    const recovered = await reopened.open()
    expect(recovered.pending.map((w) => w.id)).toEqual([1])
    expect(recovered.tornBytes).toBeGreaterThan(0)
    expect((await stat(path)).size).toBe(recovered.validBytes)
    await reopened.append(write(5))
    await reopened.close()
    const final = new SwapJournal(path)
    expect((await final.open()).pending.map((w) => w.id)).toEqual([1, 5])
    await final.close()
  })

  it('stops at a corrupt checksum or a hostile length, and skips whole frames that are not records', () => {
    const frame = (payload: Buffer, length = payload.length, crcDelta = 0) => {
      const header = Buffer.alloc(8)
      header.writeUInt32LE(length, 0)
      header.writeUInt32LE((crc(payload) + crcDelta) >>> 0, 4)
      return Buffer.concat([header, payload])
    }
    const good = frame(Buffer.from(JSON.stringify(write(1))))
    const badCrc = frame(Buffer.from(JSON.stringify(write(2))), undefined, 1)
    expect(parseJournal(Buffer.concat([good, badCrc, good])).pending.map((w) => w.id)).toEqual([1])
    const huge = frame(Buffer.from('{}'), MAX_RECORD_BYTES + 1)
    expect(parseJournal(Buffer.concat([good, huge])).validBytes).toBe(good.length)
    // Whole frames that hold no valid record are skipped, and the good records after them still count.
    const notRecord = frame(Buffer.from(JSON.stringify({ t: 'x', id: 1 })))
    const notJson = frame(Buffer.from('{"t":"w",'))
    const good2 = frame(Buffer.from(JSON.stringify(write(2))))
    const mixed = parseJournal(Buffer.concat([good, notRecord, notJson, good2]))
    expect(mixed.pending.map((w) => w.id)).toEqual([1, 2])
    expect(mixed).toMatchObject({ skipped: 2, tornBytes: 0 })
  })

  it('never throws on arbitrary bytes, and a prefix of a valid journal decodes to a prefix of its records', async () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => {
        const r = parseJournal(bytes)
        expect(r.validBytes + r.tornBytes).toBe(bytes.length)
      }),
      { numRuns: 300 },
    )
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    for (let i = 1; i <= 6; i++) await j.append(write(i, `c${i % 2}`, 'x'.repeat(i * 10)))
    await j.close()
    const image = await readFile(path)
    fc.assert(
      fc.property(fc.integer({ min: 0, max: image.length }), (cut) => {
        const ids = parseJournal(image.subarray(0, cut)).pending.map((w) => w.id)
        expect(ids).toEqual(Array.from({ length: ids.length }, (_, i) => i + 1))
      }),
      { numRuns: 200 },
    )
  })

  it('open() reads the file frame by frame to the same result as parseJournal, cut anywhere', async () => {
    // Frames around the 1 MiB read window: small ones, ones straddling its edge and ones larger than it.
    const path = await tempJournal()
    const j = new SwapJournal(path)
    await j.open()
    const sizes = [10, 700_000, 500_000, 30, 1_200_000, 90_000, 5, 800_000, 2_000_000, 40]
    for (const [i, n] of sizes.entries()) {
      await j.append(write(i + 1, `c${i % 3}`, String.fromCharCode(97 + i).repeat(n)))
      if (i % 4 === 3) await j.append({ t: 'd', id: i, status: 200 })
    }
    await j.close()
    const image = await readFile(path)
    const cuts = [image.length, image.length - 1, 1_048_576, 1_048_580, 3_000_000, 4_000_001, 7]
    for (let k = 0; k < 8; k++) cuts.push(Math.floor(Math.random() * image.length))
    for (const cut of cuts) {
      const torn = image.subarray(0, cut)
      await writeFile(path, torn)
      const reader = new SwapJournal(path)
      const { pending, ...rest } = await reader.open()
      const { pending: expected, ...expectedRest } = parseJournal(torn)
      expect(rest, `cut at ${cut}`).toEqual(expectedRest)
      expect(pending.map(({ size: _s, location: _l, ...w }) => w)).toEqual(expected)
      expect(pending.map((w) => w.size)).toEqual(expected.map((w) => Buffer.from(w.body, 'base64').length))
      expect((await stat(path)).size).toBe(rest.validBytes)
      await reader.close()
    }
  })

  it('opens a file of garbage as an empty journal instead of crashing', async () => {
    const path = await tempJournal()
    await writeFile(path, Buffer.from('this is not a journal at all, just text'))
    const j = new SwapJournal(path)
    const r = await j.open()
    expect(r.pending).toEqual([])
    expect((await stat(path)).size).toBe(0)
    await j.close()
  })
})

function crc(payload: Buffer): number {
  // The same CRC-32 the journal uses (zlib's), computed independently of the module under test.
  let c = 0xffffffff
  for (const byte of payload) {
    c ^= byte
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0xedb88320 : c >>> 1
  }
  return (c ^ 0xffffffff) >>> 0
}
