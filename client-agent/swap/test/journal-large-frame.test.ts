import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapJournal } from '../journal.ts'
import { runJournalChild } from './journal-child.ts'

/**
 * A frame may hold up to 96 MiB of base64 (a 72 MiB body: more than `maxBodyBytes` allows today, 64 MiB,
 * but a journal is read by whatever agent comes next). Recovery, the replay's read-back and a
 * compaction go through it in pieces: none of them may need the frame in memory whole (let alone as
 * text and as a parsed string besides). Only the replay needs the body itself, once, as bytes.
 */
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

const MiB = 1024 * 1024
const LARGE = 72 * MiB

describe('swap journal: a frame of about 100 MB', () => {
  it('is recovered, read back and compacted with memory bounded by a window, the body once', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-large-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const writer = new SwapJournal(path)
    await writer.open()
    const small = (id: number) => ({
      t: 'w' as const,
      id,
      client: 'c',
      method: 'POST',
      path: `/${id}`,
      headers: [],
      body: Buffer.alloc(1000, id).toString('base64'),
      at: id,
    })
    await writer.append(small(1))
    await writer.append({ ...small(2), path: '/large', body: Buffer.alloc(LARGE, 7).toString('base64') })
    await writer.append(small(3))
    await writer.close()
    const size = (await stat(path)).size
    expect(size).toBeGreaterThan(96 * MiB)

    const { code, out } = await runJournalChild('journal-large-frame-child.ts', [path, String(2 * MiB)], {
      exposeGc: true,
    })
    expect(code).toBe(0)
    const report = JSON.parse(out) as {
      pending: Array<{ id: number; size: number; inMemory: boolean }>
      ok: boolean
      okAfterCompaction: boolean
      growth: { open: number; send: number; compact: number }
    }
    expect(report.pending).toEqual([
      { id: 1, size: 1000, inMemory: true },
      { id: 2, size: LARGE, inMemory: false },
      { id: 3, size: 1000, inMemory: true },
    ])
    // All 72 MiB came back, each byte right, before and after the compaction moved the frame.
    expect(report.ok).toBe(true)
    expect(report.okAfterCompaction).toBe(true)
    console.log(
      'memory growth (MiB):',
      JSON.stringify(report.growth, (_, v) => (typeof v === 'number' ? +(v / MiB).toFixed(1) : v)),
    )
    // Recovery and compaction: a few read windows, not the ~96 MiB frame.
    expect(report.growth.open).toBeLessThan(8 * MiB)
    expect(report.growth.compact).toBeLessThan(8 * MiB)
    // The replay's read: the body's bytes (which it sends), and not the frame's text or string besides.
    expect(report.growth.send).toBeLessThan(LARGE + 8 * MiB)
  }, 120_000)
})
