import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, readdir, readFile, readlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { run } from '../cli.ts'

/**
 * `delta make|apply` in this process, so its file handles are this process's: each failure must
 * close what the command opened (a handle left to the garbage collector keeps a deleted delta's disk
 * space, and the process's descriptors, until a collection that may never come).
 */
const FD_DIR = '/proc/self/fd'
let dir: string
let source: string
let target: string
let delta: string

/** The files of this test's folder that this process holds open (Linux's /proc). */
async function openFiles(): Promise<string[]> {
  const fds = await readdir(FD_DIR)
  const paths = await Promise.all(fds.map((fd) => readlink(join(FD_DIR, fd)).catch(() => '')))
  return paths.filter((path) => path.startsWith(dir)).sort()
}

/** What `command` left open that was not open before it (each test on its own). */
async function leftOpenBy(command: () => Promise<unknown>): Promise<string[]> {
  const before = await openFiles()
  await command()
  const after = await openFiles()
  for (const path of before) after.splice(after.indexOf(path), 1)
  return after
}

/** The CLI's exit status (it prints one JSON line per command). */
const cli = (args: string[]): Promise<number> => run(['--json', ...args])

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-handles-'))
  source = join(dir, 'source.bin')
  target = join(dir, 'target.bin')
  delta = join(dir, 'delta.vcdiff')
  // Unrelated random files: the delta is about the target's size, several of the reader's chunks.
  await writeFile(source, randomBytes(1 << 20))
  await writeFile(target, randomBytes(1 << 20))
  expect(await cli(['delta', 'make', '--method', 'vcdiff', source, target, delta])).toBe(0)
})

describe.skipIf(!existsSync(FD_DIR))('delta make and apply release their files however they end', () => {
  it('apply of a delta that turns out damaged closes the delta and the source', async () => {
    const damaged = join(dir, 'damaged.vcdiff')
    const bytes = await readFile(delta)
    // The first window's header, past the file header: the decoder gives up at the first chunk, with
    // most of the delta never read.
    bytes.fill(0xff, 6, 40)
    await writeFile(damaged, bytes)
    const apply = () => cli(['delta', 'apply', source, damaged, join(dir, 'out-damaged')])
    expect(await leftOpenBy(async () => expect(await apply()).toBe(8))).toEqual([])
  })

  it('apply whose output cannot be created closes the source', async () => {
    const apply = () => cli(['delta', 'apply', source, delta, join(dir, 'no-such-dir', 'out')])
    expect(await leftOpenBy(async () => expect(await apply()).toBe(10))).toEqual([])
  })

  it('make --stream whose output cannot be created closes both inputs', async () => {
    const out = join(dir, 'no-such-dir', 'delta')
    const make = () => cli(['delta', 'make', '--stream', source, target, out])
    expect(await leftOpenBy(async () => expect(await make()).toBe(10))).toEqual([])
  })

  it('a successful apply leaves nothing open either', async () => {
    const apply = () => cli(['delta', 'apply', source, delta, join(dir, 'out-good')])
    expect(await leftOpenBy(async () => expect(await apply()).toBe(0))).toEqual([])
  })
})
