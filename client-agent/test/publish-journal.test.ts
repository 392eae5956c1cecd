/**
 * The attempt journal (publish-journal.ts) on real files with real processes: an entry is given up only
 * when its run is gone, so a publish still running in another terminal keeps its attempt (its 409
 * stands), and entries of another publish are never touched.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, writeFile } from 'node:fs/promises'
import { hostname, tmpdir } from 'node:os'
import { join } from 'node:path'
import { describe, expect, it } from 'vitest'
import { AttemptJournal } from '../publish-journal.ts'

const EDGE = 'http://127.0.0.1:1'
const attempt = (digit: string) => digit.repeat(64)

/** The pid of a process that ran and ended. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', ''], { stdio: 'ignore' })
  await once(child, 'exit')
  if (child.pid === undefined) throw new Error('no pid')
  return child.pid
}

/** Writes the entry another run would have left, as that run's file. */
async function leftBy(dir: string, pid: number, host = hostname()): Promise<void> {
  // The run's file name is its journal's prefix and its pid: made by a journal of that run.
  const own = new AttemptJournal(dir, EDGE, 'app', '1.0.0')
  await own.record(attempt('a'))
  const [file] = (await readdir(dir)).filter((f) => f.endsWith(`-${process.pid}.json`))
  if (!file) throw new Error('no entry written')
  const other = join(dir, file.replace(`-${process.pid}.json`, `-${pid}.json`))
  await writeFile(
    other,
    JSON.stringify({ edgeUrl: EDGE, name: 'app', version: '1.0.0', attempt: attempt('b'), pid, host }),
  )
  await own.clear()
}

describe('the publish attempt journal', () => {
  it("gives up a dead run's attempt, never a live one's or another host's", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-'))
    const journal = new AttemptJournal(dir, EDGE, 'app', '1.0.0')
    expect(await journal.leftovers()).toEqual([])

    // The test runner's parent is alive: a publish under way in another terminal.
    await leftBy(dir, process.ppid)
    expect(await journal.leftovers()).toEqual([])
    // Another host sharing the directory: its pids say nothing here.
    const dead = await deadPid()
    await leftBy(dir, dead, `${hostname()}-elsewhere`)
    expect(await journal.leftovers()).toEqual([])

    await leftBy(dir, dead)
    const [found, ...more] = await journal.leftovers()
    expect(more).toEqual([])
    expect(found?.entry).toMatchObject({ pid: dead, attempt: attempt('b') })
    await found?.remove()
    expect(await journal.leftovers()).toEqual([])
    // The live run's entry is still there.
    expect((await readdir(dir)).some((f) => f.endsWith(`-${process.ppid}.json`))).toBe(true)
  })

  it("never counts another publish's entries, and clears only its own", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'deltaport-journal-'))
    const mine = new AttemptJournal(dir, EDGE, 'app', '1.0.0')
    const otherVersion = new AttemptJournal(dir, EDGE, 'app', '1.0.1')
    await otherVersion.record(attempt('c'))
    await mine.record(attempt('d'))
    // Its own run's entry is never a leftover (the run is alive: it is this one).
    expect(await mine.leftovers()).toEqual([])
    await mine.clear()
    expect(await readdir(dir)).toHaveLength(1)
  })
})
