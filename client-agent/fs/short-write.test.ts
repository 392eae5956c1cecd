import { readdir, rm } from 'node:fs/promises'
import { join } from 'node:path'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { AgentError } from '../errors.ts'
import { mountTmpfs } from '../test/tmpfs.ts'
import { openAtomicFileSink } from './file-io.ts'

/**
 * A disk with room for part of a chunk stores that part and says so (a short write), without an error;
 * only the next write fails with ENOSPC. A real small disk (tmpfs, root only; skipped otherwise).
 */
const { mountPoint, mounted, remove } = await mountTmpfs('deltaport-short-write-', '64k')
afterAll(remove)
afterEach(async () => {
  for (const entry of await readdir(mountPoint)) await rm(join(mountPoint, entry), { force: true })
})

describe.skipIf(!mounted)('a write the disk only has room for part of', () => {
  it('is no-space from the atomic sink, never a file silently missing the rest of the chunk', async () => {
    const sink = await openAtomicFileSink(join(mountPoint, 'out'))
    // Larger than the whole disk: the kernel stores 64 KiB of it and reports the count.
    const written = sink.write(new Uint8Array(100_000).fill(7))
    const error = await written.then(
      () => null,
      (e: unknown) => e,
    )
    await sink.discard()
    expect(error).toBeInstanceOf(AgentError)
    expect(error).toMatchObject({ code: 'no-space' })
    expect((error as AgentError).message).toContain(join(mountPoint, 'out'))
  })
})
