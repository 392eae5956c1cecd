import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { openFileReader } from './file-io.ts'

it('reads more than 2 GiB in one call (Node reads at most 2^31 - 1 bytes at a time)', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-file-io-'))
  try {
    // Sparse: nothing on disk. An archive apply reads its whole source like this.
    const path = join(dir, 'big')
    await writeFile(path, '')
    const size = 2 ** 31 + 4096
    await truncate(path, size)
    const reader = await openFileReader(path)
    try {
      const into = new Uint8Array(size)
      into[size - 1] = 1
      expect(await reader.readInto?.(0, into)).toBe(size)
      expect(into[size - 1]).toBe(0)
    } finally {
      await reader.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}, 60_000)

it('fails a read with an io error naming the file when it shrank after opening; a read past its end is short', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'deltaport-file-io-'))
  try {
    const path = join(dir, 'shrinks')
    await writeFile(path, new Uint8Array(1000).fill(7))
    const reader = await openFileReader(path)
    try {
      // As opened: a read reaching past the end returns what there is.
      expect((await reader.read(900, 200)).length).toBe(100)
      await truncate(path, 500)
      for (const [offset, length] of [
        [0, 1000],
        [600, 100],
      ] as const) {
        const failure = await reader.read(offset, length).catch((error: unknown) => error)
        expect(failure).toBeInstanceOf(AgentError)
        expect(failure).toMatchObject({
          code: 'io',
          message: expect.stringContaining(`${path} changed while it was read`),
        })
      }
    } finally {
      await reader.close()
    }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
