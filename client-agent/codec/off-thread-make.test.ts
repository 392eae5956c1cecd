import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../../delta/errors.ts'
import { createDelta, createDeltaAsync } from '../../delta/index.ts'
import { AgentError } from '../errors.ts'
import { editedTextGzip, expectSameBytes } from '../test/fixtures.ts'
import { nativeDeflateEngine } from './native-deflate.ts'
import { makeDeltaOffThread } from './off-thread-make.ts'

let dir: string

/** `bytes` with one byte in every `step` flipped: a pair approx (and VCDIFF) find almost all of. */
function edited(bytes: Uint8Array, step: number): Uint8Array {
  const copy = new Uint8Array(bytes)
  for (let i = 0; i < copy.length; i += step) copy[i] = (copy[i] ?? 0) ^ 0xff
  return copy
}

async function written(name: string, bytes: Uint8Array): Promise<string> {
  const path = join(dir, name)
  await writeFile(path, bytes)
  return path
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-off-thread-make-'))
})

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('makeDeltaOffThread', () => {
  it('makes the very delta createDelta makes on this thread, from paths and from bytes', async () => {
    const source = randomBytes(2 * 1024 * 1024)
    const target = edited(source, 4096)
    const here = createDelta(source, target, { deflateEngine: nativeDeflateEngine })
    const there = await makeDeltaOffThread({
      source: { path: await written('a.bin', source) },
      target: { path: await written('b.bin', target) },
    })
    expect(there.method).toBe(here.method)
    expect(there.targetSize).toBe(target.length)
    expectSameBytes(there.delta, here.delta)
    expect(there.candidates.map((c) => [c.method, c.size, c.skipped])).toEqual(
      here.candidates.map((c) => [c.method, c.size, c.skipped]),
    )

    // An archive pair, handed over as bytes (the publisher's way): createDeltaAsync's archive delta.
    const { before, after } = editedTextGzip()
    const expected = await createDeltaAsync(before, after, { deflateEngine: nativeDeflateEngine })
    expect(expected.method).toBe('archive')
    const fromBytes = await makeDeltaOffThread({
      source: { bytes: new Uint8Array(before) },
      target: { bytes: new Uint8Array(after) },
    })
    expect(fromBytes.method).toBe('archive')
    expectSameBytes(fromBytes.delta, expected.delta)
  }, 60_000)

  it("keeps the codec's and the file system's errors typed", async () => {
    const plain = await written('plain.bin', randomBytes(64 * 1024))
    const failed = await makeDeltaOffThread({
      source: { path: plain },
      target: { path: plain },
      methods: ['archive'],
    }).catch((error: unknown) => error)
    expect(failed).toBeInstanceOf(DeltaFormatError)
    expect(failed).toMatchObject({ code: 'no-method' })

    const missing = await makeDeltaOffThread({
      source: { path: join(dir, 'nowhere') },
      target: { path: plain },
    }).catch((error: unknown) => error)
    expect(missing).toBeInstanceOf(AgentError)
    expect(missing).toMatchObject({ code: 'io' })
  }, 30_000)

  it('an abort ends a long make at once, the worker stopped', async () => {
    // 32 MB with an edit every 4 KiB: approx alone takes ≈28 s on it here.
    const source = randomBytes(32 * 1024 * 1024)
    const controller = new AbortController()
    const making = makeDeltaOffThread(
      { source: { bytes: source }, target: { bytes: edited(source, 4096) }, methods: ['approx'] },
      controller.signal,
    ).catch((error: unknown) => error)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    const reason = new Error('stop')
    const aborted = performance.now()
    controller.abort(reason)
    expect(await making).toBe(reason)
    // Resolved only once worker.terminate() has: the thread is gone, not left running to the end.
    expect(performance.now() - aborted).toBeLessThan(1000)
  }, 60_000)
})
