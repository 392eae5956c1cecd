import { type ChildProcess, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFile, rm, stat, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { mulberry32 } from '../../predict/random.ts'
import { installArtifact } from '../install.ts'
import { publishArtifact } from '../publish.ts'
import { buildDeltasFromPrevious } from '../publish-deltas.ts'
import { ArtifactStore } from '../store.ts'
import { makeWorkspace, type Workspace } from './fixtures.ts'
import { type LocalEdge, startLocalEdge, TEST_TOKEN } from './local-edge.ts'

const BIN = join(import.meta.dirname, '..', 'bin', 'deltaport.ts')
const KILLS = 20
let edge: LocalEdge
let ws: Workspace
let v1: Buffer
let v2: Buffer

beforeAll(async () => {
  edge = await startLocalEdge()
  ws = await makeWorkspace(edge.url)
  // A capped link makes a 6 MiB full download take ~1.5 s, so kills land mid-transfer.
  await writeFile(ws.configFile, JSON.stringify({ ...ws.config, bandwidthCapBps: 4_000_000 }))
  v1 = randomBytes(6 * 1024 * 1024)
  v2 = Buffer.concat([v1.subarray(0, 3_000_000), randomBytes(50_000), v1.subarray(3_000_000)])
  for (const [version, bytes] of [
    ['1.0.0', v1],
    ['2.0.0', v2],
  ] as const) {
    const file = join(ws.dir, `${version}.bin`)
    await writeFile(file, bytes)
    const deltas = await buildDeltasFromPrevious(edge.url, 'svc', file, 1)
    await publishArtifact({
      edgeUrl: edge.url,
      token: TEST_TOKEN,
      keyFile: ws.keyFile,
      file,
      name: 'svc',
      version,
      deltas,
    })
  }
  await installArtifact(ws.config, { name: 'svc', target: '1.0.0' })
}, 120_000)
afterAll(async () => {
  await edge?.dispose()
})

function update(full: boolean): ChildProcess {
  const args = [BIN, '--config', ws.configFile, '--json', 'update', 'svc', ...(full ? ['--full'] : [])]
  return spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] })
}

async function finished(child: ChildProcess): Promise<{ code: number | null; stdout: string }> {
  let stdout = ''
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString()
  })
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
  return { code, stdout }
}

async function partialSize(store: ArtifactStore): Promise<number> {
  return stat(store.partialPath('2.0.0')).then(
    (s) => s.size,
    () => 0,
  )
}

/** Whatever `current` points at must be one complete, exact version: never a mix, never half. */
async function currentIsWhole(store: ArtifactStore): Promise<'1.0.0' | '2.0.0'> {
  const bytes = await readFile(join(store.currentLink, 'blob'))
  if (bytes.equals(v1)) return '1.0.0'
  if (bytes.equals(v2)) return '2.0.0'
  throw new Error(`current holds ${bytes.length} bytes matching neither version`)
}

describe('kill -9 during updates', () => {
  it(`leaves an exact old or new version at each of ${KILLS} random kill points, then resumes`, async () => {
    const store = new ArtifactStore(ws.config.installRoot, 'svc')
    const random = mulberry32(20261123)
    const outcomes: string[] = []
    for (let i = 0; i < KILLS; i++) {
      const full = i % 2 === 0
      const child = update(full)
      const exit = finished(child)
      await sleep(50 + random() * (full ? 2200 : 900))
      child.kill('SIGKILL')
      const { code } = await exit
      const current = await currentIsWhole(store)
      outcomes.push(`${full ? 'full' : 'plan'}:${code === null ? 'killed' : 'done'}:${current}`)
      if (current === '2.0.0') {
        // Finished before the kill: put 1.0.0 back and forget 2.0.0 so the next round updates again.
        await store.rollback()
        await rm(store.versionDir('2.0.0'), { recursive: true, force: true })
      }
      expect(await currentIsWhole(store)).toBe('1.0.0')
    }
    // On a quiet machine some updates finish before their kill; most must really be cut mid-flight.
    expect(outcomes.filter((o) => o.includes('killed')).length).toBeGreaterThanOrEqual(KILLS / 4)

    // One more kill well into a full download, then a clean run must resume from the partial file.
    const child = update(true)
    const exit = finished(child)
    // Kill once the partial file holds over 1 MiB (waiting on evidence, not on a clock, on a busy machine).
    for (let waited = 0; (await partialSize(store)) < 1024 * 1024; waited += 20) {
      if (waited > 30_000) throw new Error('the download never started')
      await sleep(20)
    }
    child.kill('SIGKILL')
    await exit
    const resumed = await finished(update(true))
    expect(resumed.code).toBe(0)
    const install = JSON.parse(resumed.stdout).install as { resumedFrom: number; version: string }
    expect(install.version).toBe('2.0.0')
    expect(install.resumedFrom).toBeGreaterThan(0)
    expect(await currentIsWhole(store)).toBe('2.0.0')
    expect((await store.state()).previous).toBe('1.0.0')
    expect(await readFile(join(store.versionDir('1.0.0'), 'blob'))).toHaveLength(v1.length)
  }, 240_000)
})
