import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect, it } from 'vitest'
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
