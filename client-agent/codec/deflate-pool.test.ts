import { spawn } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { gzip } from 'pako'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  createArchiveDelta,
  type DeflateEngine,
  type DeflateParams,
  type ReferenceJob,
} from '../../delta/archive/index.ts'
import { deflateWhole } from '../../delta/archive/recompress.ts'
import { DeltaFormatError } from '../../delta/errors.ts'
import { sourceLikeText } from '../../delta/fuzz-input.ts'
import { applyDeltaStream } from '../../delta/index.ts'
import { collectingSink, readerFromBytes, sourceFromBytes } from '../../delta/io.ts'
import { DeflatePool, IDLE_MS } from './deflate-pool.ts'
import { nativeDeflateEngine, referenceThreads } from './native-deflate.ts'

const CLASSIC: DeflateParams = { level: 9, memLevel: 8, windowBits: 15, strategy: 0, legacyHash: true }
const CHROMIUM: DeflateParams = { ...CLASSIC, legacyHash: false }
const LEVEL6: DeflateParams = { ...CLASSIC, level: 6 }

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-deflate-pool-'))
})
afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

/** A GNU-gzip-like pair: classic hash, level 9, a dozen local edits, so its gaps only pako reproduces. */
function classicPair(): { source: Uint8Array; target: Uint8Array; delta: Uint8Array } {
  const content = sourceLikeText(11, 700_000)
  const changed = content.slice()
  for (let k = 1; k <= 12; k++) changed.set(new TextEncoder().encode(`/* edit ${k} */`), k * 50_000)
  const source = gzip(content, { level: 9, legacyHash: true })
  const target = gzip(changed, { level: 9, legacyHash: true })
  const made = createArchiveDelta(source, target, { splice: 'always', deflateEngine: nativeDeflateEngine })
  if (!('delta' in made)) throw new Error(made.notApplicable)
  expect(made.details.spliced).toBe(1)
  return { source, target, delta: made.delta }
}

describe('DeflatePool', () => {
  it("gives the reference's bytes for every job, shared by its threads and this one", async () => {
    const pool = new DeflatePool(2)
    const text = sourceLikeText(3, 2_000_000)
    // Neighbouring jobs view one buffer, as a spliced stream's gaps do; one job has a buffer of its own.
    const jobs = Array.from({ length: 40 }, (_, k) => ({
      dictionary: k === 0 ? new Uint8Array(0) : text.subarray(k * 45_000, k * 45_000 + 32_768),
      input:
        k === 7 ? text.slice(0, 30_000) : text.subarray(k * 45_000 + 32_768, k * 45_000 + 40_000 + k * 100),
    }))
    try {
      pool.warm()
      expect(pool.threadCount).toBe(2)
      // Let the threads start, so they take their share.
      await new Promise((resolve) => setTimeout(resolve, 500))
      for (const params of [CLASSIC, CHROMIUM, LEVEL6]) {
        const got = await pool.deflate(jobs, params)
        expect(got).toEqual(jobs.map((j) => deflateWhole(j.input, params, j.dictionary)))
      }
      expect(await pool.deflate([], CLASSIC)).toEqual([])
      expect(pool.jobsOnThreads).toBeGreaterThan(0)
      // The caller's memory was copied, not moved.
      expect(jobs[3]!.input.length).toBe(7_532)
    } finally {
      await pool.close()
    }
    expect(pool.threadCount).toBe(0)
  })

  it("rejects with the reference's own error, and goes on working", async () => {
    const pool = new DeflatePool(1)
    const input = sourceLikeText(4, 10_000)
    const refused = { ...CLASSIC, memLevel: 42 }
    let expected: unknown
    try {
      deflateWhole(input, refused)
    } catch (error) {
      expected = error
    }
    expect(expected).toBeInstanceOf(Error)
    const jobs = Array.from({ length: 6 }, () => ({ input, dictionary: new Uint8Array(0) }))
    try {
      await expect(pool.deflate(jobs, refused)).rejects.toThrow((expected as Error).message)
      expect(await pool.deflate(jobs, CLASSIC)).toEqual(jobs.map(() => deflateWhole(input, CLASSIC)))
    } finally {
      await pool.close()
    }
  })

  it('rejects a batch whose thread dies holding a job, naming the worker', async () => {
    const dying = join(dir, 'dying-worker.mjs')
    await writeFile(
      dying,
      "import { parentPort } from 'node:worker_threads'\n" +
        "parentPort.on('message', ({ claims }) => { Atomics.store(claims, 0, 1); process.exit(3) })\n",
    )
    const pool = new DeflatePool(1, pathToFileURL(dying))
    // Enough work for this thread (a second of pako at level 9) that the thread gets the batch and takes job 0.
    const text = sourceLikeText(5, 100_000)
    const jobs = Array.from({ length: 100 }, () => ({ input: text, dictionary: new Uint8Array(0) }))
    try {
      pool.warm()
      await expect(pool.deflate(jobs, CLASSIC)).rejects.toThrow('the deflate worker exited (code 3)')
      expect(pool.threadCount).toBe(0)
    } finally {
      await pool.close()
    }
  })
})

/** The native engine with its reference restarts on `pool`, whatever the machine's load says. */
function engineOn(pool: DeflatePool): DeflateEngine & { shared: number } {
  const engine = {
    ...nativeDeflateEngine,
    shared: 0,
    deflateReferenceShared: (jobs: readonly ReferenceJob[], params: DeflateParams) => {
      engine.shared += jobs.length
      return pool.deflate(jobs, params)
    },
    warmReference: () => pool.warm(),
  }
  return engine
}

describe('referenceThreads', () => {
  it('takes the cores that look free, leaving one to the applying thread, at most three', () => {
    expect(referenceThreads(0, 2)).toBe(1)
    expect(referenceThreads(1, 2)).toBe(1) // the applying process's own load
    expect(referenceThreads(1.6, 2)).toBe(0)
    expect(referenceThreads(17, 2)).toBe(0)
    expect(referenceThreads(0.3, 4)).toBe(3)
    expect(referenceThreads(2, 4)).toBe(2)
    expect(referenceThreads(0, 16)).toBe(3)
    expect(referenceThreads(0, 1)).toBe(0)
  })
})

describe("the native engine's reference restarts", () => {
  it('rebuild a classic-hash spliced stream exactly, with gaps deflated on worker threads', async () => {
    const { source, target, delta } = classicPair()
    const pool = new DeflatePool(1)
    const counting = engineOn(pool)
    const sink = collectingSink()
    await applyDeltaStream(readerFromBytes(source), sourceFromBytes(delta), sink, { deflateEngine: counting })
    expect(sink.bytes()).toEqual(target)
    expect(counting.shared).toBeGreaterThan(0)
    await pool.close()
    // A wrong source is still refused before anything is deflated.
    const wrong = source.slice()
    wrong[wrong.length - 9]! ^= 1
    await expect(
      applyDeltaStream(readerFromBytes(wrong), sourceFromBytes(delta), collectingSink(), {
        deflateEngine: nativeDeflateEngine,
      }),
    ).rejects.toThrow(DeltaFormatError)
  })

  it('leave nothing running: a process that applied such a delta exits as soon as it is done', async () => {
    const { source, target, delta } = classicPair()
    await writeFile(join(dir, 'source.gz'), source)
    await writeFile(join(dir, 'delta'), delta)
    const script = join(dir, 'apply.mjs')
    const here = (path: string) => JSON.stringify(new URL(path, import.meta.url).href)
    await writeFile(
      script,
      `import { readFileSync, writeFileSync } from 'node:fs'
import { nativeDeflateEngine } from ${here('./native-deflate.ts')}
import { DeflatePool } from ${here('./deflate-pool.ts')}
import { applyDeltaStream } from ${here('../../delta/index.ts')}
import { collectingSink, readerFromBytes, sourceFromBytes } from ${here('../../delta/io.ts')}
const pool = new DeflatePool(1)
const engine = { ...nativeDeflateEngine, deflateReferenceShared: (j, p) => pool.deflate(j, p), warmReference: () => pool.warm() }
const sink = collectingSink()
await applyDeltaStream(readerFromBytes(readFileSync(${JSON.stringify(join(dir, 'source.gz'))})),
  sourceFromBytes(readFileSync(${JSON.stringify(join(dir, 'delta'))})), sink, { deflateEngine: engine })
if (pool.threadCount !== 1) throw new Error('the pool has no thread')
writeFileSync(${JSON.stringify(join(dir, 'out'))}, sink.bytes())
console.log('applied')
`,
    )
    const child = spawn(process.execPath, [script], { stdio: ['ignore', 'pipe', 'inherit'] })
    let appliedAt = 0
    child.stdout.on('data', (d: Buffer) => {
      if (d.toString().includes('applied')) appliedAt = performance.now()
    })
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve))
    const lingered = performance.now() - appliedAt
    expect(code).toBe(0)
    expect(appliedAt).toBeGreaterThan(0)
    expect(new Uint8Array(await readFile(join(dir, 'out')))).toEqual(target)
    // Idle threads are unref'd: the process does not wait for the pool's idle timer to stop them.
    expect(lingered).toBeLessThan(IDLE_MS / 2)
  })
})
