import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { FILE_SIZE_LIMIT_BYTES, runJournalChild } from './journal-child.ts'

/**
 * A held write the service has answered, whose `done` record cannot be written (a full disk, here a file
 * size limit): the service applied it, so its client gets the answer all the same. Before, `complete`
 * threw before answering: the client was left waiting, and the replay took the agent's disk error for the
 * version's failure (a new version on probation was rolled back).
 */
const dirs: string[] = []
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true })
})

describe('swap journal: a done record that cannot be written', () => {
  it('still answers the client with the service’s answer', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-done-lost-'))
    dirs.push(dir)
    const path = join(dir, 'swap.journal')
    const { code, out } = await runJournalChild('journal-done-lost-child.ts', [path], {
      fileSizeLimited: true,
    })
    expect(code).toBe(0)
    // The write's record fit, its `done` record did not.
    const size = (await stat(path)).size
    expect(FILE_SIZE_LIMIT_BYTES - size).toBeGreaterThan(0)
    expect(FILE_SIZE_LIMIT_BYTES - size).toBeLessThan(30)
    const report = JSON.parse(out) as {
      completed: string
      heard: Array<{ status: number; body: string }>
      stats: { writes: number; settleFailed: number }
    }
    expect(report.heard).toEqual([{ status: 201, body: 'applied' }])
    expect(report.completed).toBe('resolved')
    expect(report.stats).toMatchObject({ writes: 0, settleFailed: 1 })
  })
})
