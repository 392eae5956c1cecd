import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { SwapJournal } from '../journal.ts'
import { runJournalChild } from './journal-child.ts'

/**
 * A write(2) to a regular file may write only part of what it was given (a full disk, a file size
 * limit) and report so. An append must then not be claimed durable, and the part written must not stay
 * in the file: recovery stops at the first torn frame, so every record appended behind it would be lost.
 * A real short write: the child runs under `ulimit -f 64` (64 KiB), and its second frame crosses it.
 */
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('swap journal: a write cut short', () => {
  it('rejects the append, cuts the part written off, and the appends after it are recovered', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-short-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const { code, out } = await runJournalChild('journal-short-write-child.ts', [path], {
      fileSizeLimited: true,
    })
    expect(code).toBe(0)
    const outcome = JSON.parse(out) as Record<string, string>
    // The frame of write 2 (about 80 KB of base64) does not fit the 64 KiB limit after write 1's.
    expect(outcome['1']).toBe('durable')
    expect(outcome['2']).toMatch(/^rejected/)
    // Nothing of write 2 is left, so write 3 went where write 2 had begun.
    expect(outcome['3']).toBe('durable')
    const journal = new SwapJournal(path)
    const recovered = await journal.open()
    await journal.close()
    expect(recovered.tornBytes).toBe(0)
    expect(recovered.pending.map((w) => [w.id, w.size])).toEqual([
      [1, 10_000],
      [3, 1_000],
    ])
  })
})
