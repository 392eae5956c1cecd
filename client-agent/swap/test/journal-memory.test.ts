import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapJournal } from '../journal.ts'
import { runJournalChild } from './journal-child.ts'

/**
 * Recovery reads the journal frame by frame and keeps only the bodies that fit `memoryBytes`: a restart
 * with a large backlog owed must not hold the whole file (let alone its bodies twice) in memory.
 */
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

const BODY = 768 * 1024
const WRITES = 64
const MEMORY = 2 * 1024 * 1024

describe('swap journal: recovery memory', () => {
  it('recovers a 64 MiB journal with memory rising by well under its size, every body intact', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-memory-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const writer = new SwapJournal(path)
    await writer.open()
    for (let id = 1; id <= WRITES; id++) {
      await writer.append({
        t: 'w',
        id,
        client: `c${id % 3}`,
        method: 'POST',
        path: `/${id}`,
        headers: [],
        body: Buffer.alloc(BODY, id % 251).toString('base64'),
        at: id,
      })
      // Some settled along the way: recovery must still skip them.
      if (id % 8 === 0) await writer.append({ t: 'd', id: id - 1, status: 200 })
    }
    await writer.close()
    const size = (await stat(path)).size
    expect(size).toBeGreaterThan(64 * 1024 * 1024)

    const { code, out } = await runJournalChild(
      'journal-memory-child.ts',
      [path, String(MEMORY), String(BODY)],
      {
        exposeGc: true,
      },
    )
    expect(code).toBe(0)
    const report = JSON.parse(out) as {
      count: number
      ok: boolean
      stats: { writes: number; bytes: number; memoryBytes: number }
      growth: number
    }
    expect(report.count).toBe(WRITES - WRITES / 8)
    // Every body came back whole (the validator checks each one's bytes), two of them kept in memory.
    expect(report.ok).toBe(true)
    expect(report.stats).toMatchObject({
      writes: report.count,
      bytes: report.count * BODY,
      memoryBytes: 2 * BODY,
    })
    // Generous: a few frames and the kept bodies (as base64 and as bytes), not the file.
    expect(report.growth).toBeLessThan(size / 4)
  }, 60_000)
})
