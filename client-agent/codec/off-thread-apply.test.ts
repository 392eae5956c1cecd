import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { gzipSync } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { DeltaFormatError } from '../../delta/errors.ts'
import { applyDeltaStream, createDelta } from '../../delta/index.ts'
import type { ByteSink } from '../../delta/io.ts'
import { AgentError } from '../errors.ts'
import { closingAll, openFileReader, openFileSource } from '../fs/file-io.ts'
import { editedTextGzip, expectSameBytes, longestStall, patchedCode } from '../test/fixtures.ts'
import { nativeDeflateEngine } from './native-deflate.ts'
import { applyDeltaFileOffThread } from './off-thread-apply.ts'

/** A sink that keeps what it is given, in order. */
function collecting(): ByteSink & { bytes(): Uint8Array; writes: number } {
  const chunks: Uint8Array[] = []
  return {
    writes: 0,
    async write(chunk) {
      this.writes++
      chunks.push(chunk.slice())
    },
    bytes: () => Buffer.concat(chunks),
  }
}

let dir: string
let sourcePath: string
let source: Uint8Array
let target: Uint8Array
let archiveDeltaPath: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'deltaport-off-thread-'))
  ;({ before: source, after: target } = editedTextGzip())
  const made = createDelta(source, target, { deflateEngine: nativeDeflateEngine })
  expect(made.method).toBe('archive')
  sourcePath = join(dir, 'source.gz')
  archiveDeltaPath = join(dir, 'archive.delta')
  await writeFile(sourcePath, source)
  await writeFile(archiveDeltaPath, made.delta)
}, 60_000)

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true })
})

describe('applyDeltaFileOffThread', () => {
  it('rebuilds the exact target while this thread keeps turning, where applying here stalls it', async () => {
    const here = collecting()
    const stalledHere = await longestStall(async () => {
      await closingAll(async (own) => {
        const reader = own(await openFileReader(sourcePath))
        await applyDeltaStream(reader, own(await openFileSource(archiveDeltaPath)), here, {
          deflateEngine: nativeDeflateEngine,
        })
      })
    })
    expectSameBytes(here.bytes(), target)

    const sink = collecting()
    let method: string | undefined
    const stalledOffThread = await longestStall(async () => {
      method = await applyDeltaFileOffThread({ sourcePath, deltaPath: archiveDeltaPath }, sink)
    })
    expect(method).toBe('archive')
    expectSameBytes(sink.bytes(), target)
    // The premise (this pair does stall a thread that applies it), then the point, as a ratio measured
    // in one run: times move with the machine's load, the gap between the two does not close.
    expect(stalledHere).toBeGreaterThan(60)
    expect(stalledOffThread * 4).toBeLessThan(stalledHere)
  }, 60_000)

  it('applies byte-level deltas too, and reports the method the delta used', async () => {
    const small = new TextEncoder().encode('a small file that changes in one word '.repeat(400))
    const edited = new TextEncoder().encode(
      'a small file that changes in one word '.repeat(200) +
        'a small file that changed in one word '.repeat(200),
    )
    const made = createDelta(small, edited)
    await writeFile(join(dir, 'small'), small)
    await writeFile(join(dir, 'small.delta'), made.delta)
    const sink = collecting()
    const method = await applyDeltaFileOffThread(
      {
        sourcePath: join(dir, 'small'),
        deltaPath: join(dir, 'small.delta'),
        archive: { maxExpandedBytes: 1 },
      },
      sink,
    )
    expect(method).toBe(made.method)
    expectSameBytes(sink.bytes(), edited)
  })

  it('leaves the codec its own memory: output chunks that are views into Node buffers arrive intact', async () => {
    // Native deflate output comes back in Node Buffers; transferring one's memory instead of a copy
    // detached buffers the codec still used, and this rebuild came out short.
    const { text, edited } = patchedCode()
    const from = gzipSync(text, { level: 9 })
    const to = gzipSync(edited, { level: 9 })
    const made = createDelta(from, to, { deflateEngine: nativeDeflateEngine })
    expect(made.method).toBe('archive')
    await writeFile(join(dir, 'code.gz'), from)
    await writeFile(join(dir, 'code.delta'), made.delta)
    const sink = collecting()
    await applyDeltaFileOffThread(
      { sourcePath: join(dir, 'code.gz'), deltaPath: join(dir, 'code.delta') },
      sink,
    )
    expectSameBytes(sink.bytes(), to)
  })

  it('passes the archive limits on: a limit the delta exceeds fails as the codec reports it', async () => {
    const error = await applyDeltaFileOffThread(
      { sourcePath, deltaPath: archiveDeltaPath, archive: { maxExpandedBytes: 1024 * 1024 } },
      collecting(),
    ).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(DeltaFormatError)
  })

  it('fails a bad delta with the codec’s typed error, and a missing file as an io error', async () => {
    const garbage = join(dir, 'garbage.delta')
    await writeFile(garbage, new Uint8Array([0x44, 0x50, 0x41, 0x52, 1, 2, 3, 4, 5, 6, 7, 8]))
    const bad = await applyDeltaFileOffThread({ sourcePath, deltaPath: garbage }, collecting()).catch(
      (e: unknown) => e,
    )
    expect(bad).toBeInstanceOf(DeltaFormatError)

    const missing = await applyDeltaFileOffThread(
      { sourcePath: join(dir, 'no-such-file'), deltaPath: archiveDeltaPath },
      collecting(),
    ).catch((e: unknown) => e)
    expect(missing).toBeInstanceOf(AgentError)
    expect(missing).toMatchObject({ code: 'io', message: expect.stringContaining('no-such-file') })
  })

  it('stops at the first write the sink refuses, with the sink’s error', async () => {
    let writes = 0
    const refusing: ByteSink = {
      write: async () => {
        writes++
        throw new AgentError('integrity-mismatch', 'more than the signed size')
      },
    }
    const error = await applyDeltaFileOffThread({ sourcePath, deltaPath: archiveDeltaPath }, refusing).catch(
      (e: unknown) => e,
    )
    expect(error).toMatchObject({ name: 'AgentError', code: 'integrity-mismatch' })
    expect(writes).toBe(1)
  })

  it('stops the worker when the signal aborts', async () => {
    const controller = new AbortController()
    const reason = new Error('update cancelled')
    let writes = 0
    // Cancelled while the first chunk is being written: the worker must not produce another.
    const cancelling: ByteSink = {
      write: async () => {
        writes++
        controller.abort(reason)
      },
    }
    const applying = applyDeltaFileOffThread(
      { sourcePath, deltaPath: archiveDeltaPath },
      cancelling,
      controller.signal,
    )
    await expect(applying).rejects.toBe(reason)
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(writes).toBe(1)

    const sink = collecting()

    const already = AbortSignal.abort(reason)
    await expect(
      applyDeltaFileOffThread({ sourcePath, deltaPath: archiveDeltaPath }, sink, already),
    ).rejects.toBe(reason)
  })
})
