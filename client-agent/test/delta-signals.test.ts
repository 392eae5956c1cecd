import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { createDelta } from '../../delta/index.ts'
import { nativeDeflateEngine } from '../codec/native-deflate.ts'
import { expectSameBytes, writeArtifact } from './fixtures.ts'

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
let dir: string
let mem: string

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
  // 32 MB with one byte in every 4 KiB changed: approx alone takes ≈28 s on it here.
  // In a folder of their own, so the tests above see theirs unchanged.
  mem = await mkdtemp(join(tmpdir(), 'deltaport-signals-mem-'))
  const plain = randomBytes(32 * 1024 * 1024)
  await writeFile(join(mem, 'plain'), plain)
  for (let i = 0; i < plain.length; i += 4096) plain[i] = (plain[i] ?? 0) ^ 0xff
  await writeFile(join(mem, 'plain-edited'), plain)
}, 60_000)

afterAll(async () => {
  for (const folder of [dir, mem]) if (folder) await rm(folder, { recursive: true, force: true })
})

/** User and system CPU a process has used so far (Linux: /proc/<pid>/stat, in clock ticks of 1/100 s). */
async function cpuSeconds(pid: number | undefined): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')
  // The fields after the command's ")": state is the first, utime and stime the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / 100
}

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

  it('make in memory: SIGINT ends it at once, mid-method, exit 130 and no temp', async () => {
    await writeFile(join(mem, 'inmem'), 'old')
    const child = spawn(
      process.execPath,
      [BIN, 'delta', 'make', '--method', 'approx', 'plain', 'plain-edited', 'inmem'],
      { cwd: mem, stdio: ['ignore', 'pipe', 'pipe'] },
    )
    // What it said, for the failure message should it end before the signal (it takes ≈13 s of CPU).
    let said = ''
    child.stdout.on('data', (chunk: Buffer) => {
      said += chunk.toString()
    })
    child.stderr.on('data', (chunk: Buffer) => {
      said += chunk.toString()
    })
    const exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
    // Started, its files read, and deep in approx: judged by the CPU it has used, not by the clock, so a
    // busy machine does not send the signal while Node is still loading (its default action, no 130).
    let used = await cpuSeconds(child.pid)
    while (used < 2.5 && child.exitCode === null) {
      await sleep(50)
      used = await cpuSeconds(child.pid)
    }
    expect(child.exitCode, `the make was still running (${used} s of CPU): ${said.slice(0, 500)}`).toBeNull()
    const sent = performance.now()
    child.kill('SIGINT')
    const [code, killedBy] = await exited
    expect(performance.now() - sent).toBeLessThan(2000)
    expect({ code, killedBy }).toEqual({ code: 130, killedBy: null })
    expect(await readFile(join(mem, 'inmem'), 'utf8')).toBe('old')
    expect((await readdir(mem)).filter((entry) => entry.startsWith('.inmem.'))).toEqual([])
  }, 60_000)

  it('make in memory, not stopped: the delta the codec makes in process, byte for byte', async () => {
    const source = randomBytes(1024 * 1024)
    const target = Buffer.from(source)
    for (let i = 0; i < target.length; i += 1000) target[i] = (target[i] ?? 0) ^ 0x55
    await writeFile(join(mem, 'small'), source)
    await writeFile(join(mem, 'small-edited'), target)
    const made = spawnSync(process.execPath, [BIN, 'delta', 'make', 'small', 'small-edited', 'small.delta'], {
      cwd: mem,
    })
    expect(made.status).toBe(0)
    const here = createDelta(source, target, { deflateEngine: nativeDeflateEngine })
    expectSameBytes(await readFile(join(mem, 'small.delta')), here.delta)
    expect(made.stdout.toString()).toContain(`via ${here.method}`)
  }, 60_000)

  it('make in memory: a codec error from the worker is the same exit code (usage, 2)', () => {
    const made = spawnSync(
      process.execPath,
      [BIN, 'delta', 'make', '--method', 'archive', 'small', 'small-edited', 'none.delta'],
      { cwd: mem },
    )
    expect(made.status).toBe(2)
    expect(made.stderr.toString()).toContain('choose other --method values')
  }, 60_000)
})
