import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { afterAll, describe, expect, it } from 'vitest'
import { parseJournal } from '../journal.ts'
import { sleep } from '../service-process.ts'
import { waitFor } from './harness.ts'
import { bodyOf } from './journal-crash-child.ts'

/**
 * The journal is how a restarted agent knows which held writes are still owed a replay. A writer that
 * appends, settles and compacts (the end of every swap) is killed with SIGKILL at random moments, over
 * and over, on the same file; after each kill the file must hold every write whose record was durable
 * and whose settling had not begun, with its body, and none whose `d` record was durable.
 */
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('swap journal: killed while it compacts', () => {
  it('keeps every write still owed, and nothing settled, across 25 kills at random moments', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-crash-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const durable = new Set<number>()
    const settling = new Set<number>()
    const settled = new Set<number>()
    for (let round = 0; round < 25; round++) {
      const child = spawn(
        process.execPath,
        ['--no-warnings', join(import.meta.dirname, 'journal-crash-child.ts'), path],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      )
      const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
      let lines = 0
      createInterface({ input: child.stdout }).on('line', (line) => {
        lines += 1
        const [kind, n] = line.split(' ')
        const id = Number(n)
        if (kind === 'W') durable.add(id)
        else if (kind === 'D') settling.add(id)
        else if (kind === 'S') settled.add(id)
      })
      // Once it has opened the journal and written, anywhere in its loop.
      await waitFor(() => lines > 0, 20_000)
      await sleep(Math.random() * 300)
      child.kill('SIGKILL')
      await exited
      const image = await readFile(path)
      const pending = parseJournal(image).pending
      const ids = new Set(pending.map((w) => w.id))
      for (const id of durable) if (!settling.has(id)) expect(ids, `write ${id} lost`).toContain(id)
      for (const id of settled) expect(ids, `settled write ${id} kept`).not.toContain(id)
      for (const w of pending) expect(Buffer.from(w.body, 'base64').toString()).toBe(bodyOf(w.id))
    }
    // The writer did its work: many writes, most settled.
    expect(durable.size).toBeGreaterThan(100)
    expect(settled.size).toBeGreaterThan(50)
    // Bounded: the file holds about what is owed, not every round's records.
    expect((await readFile(path)).length).toBeLessThan(8 * 300 * 1024)
  }, 120_000)
})
