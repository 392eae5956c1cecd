import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { beforeAll, describe, expect, it } from 'vitest'
import { writeArtifact } from './fixtures.ts'

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-signals-'))
  // Unrelated 32 MB files: the delta is as big as the target, so applying it takes a while.
  await writeArtifact(dir, 'source', 32 * 1024 * 1024)
  await writeArtifact(dir, 'target', 32 * 1024 * 1024)
  const made = spawnSync(
    process.execPath,
    [BIN, 'delta', 'make', '--method', 'vcdiff', 'source', 'target', 'd'],
    {
      cwd: dir,
    },
  )
  expect(made.status).toBe(0)
}, 60_000)

/**
 * Runs `deltaport delta …` writing `out` (which holds "old" before), sends `signal` as soon as the
 * temp output appears beside it, and returns how the process ended and what is left in the folder.
 */
async function stopMidway(args: string[], out: string, signal: NodeJS.Signals) {
  await writeFile(join(dir, out), 'old')
  const child = spawn(process.execPath, [BIN, 'delta', ...args], { cwd: dir, stdio: 'ignore' })
  const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  let sent = false
  for (let i = 0; i < 20_000 && !sent && child.exitCode === null; i++) {
    if ((await readdir(dir)).some((entry) => entry.startsWith(`.${out}.`))) {
      child.kill(signal)
      sent = true
    } else await sleep(1)
  }
  const [code, killedBy] = await exited
  expect(sent, 'the temp output appeared while the command ran').toBe(true)
  return { code, killedBy, left: await readdir(dir), content: await readFile(join(dir, out), 'utf8') }
}

describe('deltaport delta stopped by a signal', () => {
  it('apply: SIGTERM removes the temp output, exits 143 and leaves the destination as it was', async () => {
    const ended = await stopMidway(['apply', 'source', 'd', 'out'], 'out', 'SIGTERM')
    expect(ended).toMatchObject({ code: 143, killedBy: null, content: 'old' })
    expect(ended.left.sort()).toEqual(['d', 'out', 'source', 'target'])
  }, 60_000)

  it('make --stream: SIGINT removes the temp output and exits 130', async () => {
    const ended = await stopMidway(['make', '--stream', 'source', 'target', 'made'], 'made', 'SIGINT')
    expect(ended).toMatchObject({ code: 130, killedBy: null, content: 'old' })
    expect(ended.left.sort()).toEqual(['d', 'made', 'out', 'source', 'target'])
  }, 60_000)
})
